"""benchmarks/memory_model.py: the replay of allocator events, and one tiny run through it."""

from __future__ import annotations

import pytest
import torch
from benchmark_scripts import load_benchmark
from torch.profiler import ProfilerActivity, profile

from dreamtext import factory, field, models
from dreamtext.errors import DreamtextError


@pytest.fixture(scope="module")
def memory_model():
    return load_benchmark("memory_model", "memory_model")


def test_replayed_events_give_the_most_bytes_alive_at_once(memory_model):
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        a = torch.ones(1 << 20, dtype=torch.uint8)
        b = torch.ones(2 << 20, dtype=torch.uint8)
        del a
        c = torch.ones(1 << 20, dtype=torch.uint8)
        del b, c
    times, alive = memory_model.live_bytes(prof)
    assert times == sorted(times)
    assert max(alive) == 3 << 20  # a and b; c came after a was freed
    assert alive[-1] == 0
    assert memory_model.peak_between(times, alive, times[2], times[2]) == 2 << 20  # a freed


def test_allocations_and_frees_are_read_by_address_in_time_order(memory_model):
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        a = torch.ones(1 << 20, dtype=torch.uint8)
        b = torch.ones(2 << 20, dtype=torch.uint8)
        address_a, address_b = a.data_ptr(), b.data_ptr()
        del a, b
    events = memory_model.allocation_events(prof, 0)
    mine = [e for e in events if e[0] in (address_a, address_b)]
    assert mine == [
        (address_a, 1 << 20),
        (address_b, 2 << 20),
        (address_a, -(1 << 20)),
        (address_b, -(2 << 20)),
    ]
    assert memory_model.allocation_events(prof, 2**63 - 1) == []


def test_the_cpu_run_is_set_up_as_a_half_precision_cuda_run_and_restored(memory_model):
    cpu = torch.device("cpu")
    with memory_model.as_on_cuda():
        assert factory.mixed_precision(None, cpu) == torch.bfloat16
        assert factory.resolve_dtype(None, cpu) == torch.bfloat16
        models.check_precision(torch.bfloat16, cpu)  # allowed while set up
        assert field.CPU_QUERY_PIECE > 1 << 40
        assert field.CPU_NO_GRAD_PIECE > 1 << 40
    assert field.CPU_QUERY_PIECE == 1 << 13
    assert field.CPU_NO_GRAD_PIECE == 1 << 13
    with pytest.raises(DreamtextError, match="needs a CUDA GPU"):
        models.check_precision(torch.bfloat16, cpu)


# A hash table of 2^16 entries a level: the field's 7 MiB outweigh the rest of what the tiny run
# holds resident (U-Net, VAE, occupancy grid, prompts: 5 MiB), so a count that left the field out
# would fall below it. With the default 2^19 table (47 MiB) the test's process peaked at 1.28-1.38
# GB of RSS, with this one at 1.05 GB, for the same assertions.
SMALLER_TABLE = {"log2_hashmap_size": 16}


def test_a_tiny_run_is_counted(memory_model, tiny_sd_path):
    row = memory_model.model_row(
        str(tiny_sd_path), "default", "shaded", 16, 1, field_settings=SMALLER_TABLE
    )
    resident, grow = int(row["resident"]), int(row["grow_steps"])
    # The GPU would hold at least the field; a step allocates at least its Adam state.
    run_field = memory_model.tensor_bytes(field.NeRFField(field.FieldConfig(**SMALLER_TABLE)))
    assert resident >= run_field >> 20 > 0 and grow > 0
    # Each column is rounded to MiB on its own: the peak is the sum's, within the two roundings
    # (12.4 + 175.4 MiB read 12 + 175 against a peak of 188).
    counted = row["bytes"]
    assert int(row["step_peak"]) == round((counted["resident"] + counted["grow_steps"]) / 2**20)
    assert abs(int(row["step_peak"]) - (resident + grow)) <= 1
    assert int(row["run_peak"]) >= int(row["step_peak"])
    assert row["steps"] == 1 and row["px"] == 16
    # The caching allocator reserves at least what is allocated at once; under a limit it
    # needs no more than that reserve, and no less than what is in use at once (64 MiB steps).
    for layout in ("fixed", "expandable"):
        reserved, fits = int(row[f"reserved_{layout}"]), int(row[f"fits_{layout}"])
        assert reserved >= int(row["step_peak"]) - 1
        assert fits % 64 == 0 and int(row["step_peak"]) - 1 <= fits < reserved + 64


def test_guidance_settings_reach_the_counted_run(memory_model, tiny_sd_path, monkeypatch):
    """``--guidance '{"vae_checkpointing": true}'``: the run's models get the setting (what the
    row then counts is the step with it)."""
    seen = []
    real = models.StableDiffusionModels.set_memory_options

    def recording(self, *args, **kwargs):
        seen.append(kwargs["vae_checkpointing"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(models.StableDiffusionModels, "set_memory_options", recording)
    guidance = memory_model.render_settings('{"vae_checkpointing": true}')
    row = memory_model.model_row(
        str(tiny_sd_path),
        "default",
        "albedo",
        16,
        1,
        preview=False,
        guidance=guidance,
        field_settings=SMALLER_TABLE,
    )
    assert seen == [True] and row["steps"] == 1


def test_a_run_from_a_given_field_is_counted_on_that_field(memory_model, tiny_sd_path):
    """``--fitted``: the counted run's field starts from the given parameters and is held
    there. A field whose density is zero everywhere (its density output's bias far below the
    blob's +10) keeps no sample, where the fresh field keeps tens a ray; the row says which
    field it counted."""
    torch.manual_seed(0)
    empty = field.NeRFField(field.FieldConfig(**SMALLER_TABLE)).state_dict()
    empty["output_layer.weight"][0] = 0.0
    empty["output_layer.bias"][0] = -60.0
    kept = {}
    for start in (None, ("empty", empty)):
        row = memory_model.model_row(
            str(tiny_sd_path),
            "default",
            "albedo",
            16,
            2,
            preview=False,
            start=start,
            field_settings=SMALLER_TABLE,
        )
        kept[row["field"]] = float(row["samples"])
    assert kept["fitted empty"] == 0.0 < 10.0 < kept["fresh"]


def test_a_tiny_descriptor_training_is_counted(memory_model, tiny_sd_path, monkeypatch):
    from dreamtext import descriptor

    built = []
    real_init = descriptor.DescriptorTrainer.__init__

    def keep(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(descriptor.DescriptorTrainer, "__init__", keep)
    row = memory_model.descriptor_row(str(tiny_sd_path), 2)
    assert row["steps"] == 2 and row["phase"] == "descriptor"
    counted = row["bytes"]
    (trainer,) = built
    parts = (trainer.models.unet, trainer.models.vae, trainer.text_encoder)
    # Resident: the frozen U-Net and VAE and the trainer's own text encoder, which trains.
    assert counted["resident"] == sum(memory_model.tensor_bytes(part) for part in parts)
    assert counted["grow_steps"] > 0  # the step's activations
    assert counted["grow_run"] >= counted["grow_steps"]  # the preview comes after the steps
    assert int(row["step_peak"]) == round((counted["resident"] + counted["grow_steps"]) / 2**20)
    assert factory.mixed_precision(None, torch.device("cpu")) is None  # patches undone
