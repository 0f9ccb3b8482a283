"""How often one training step makes the host wait for the GPU (tests/virtual_cuda.py counts).

On CUDA every read of a GPU tensor on the host (``.item()``, ``bool()``, ``float()``,
``.tolist()``), every data-dependent shape (``nonzero``, a boolean mask) and every blocking copy
up from pageable memory waits for the queued kernels, and keeps the CPU from queueing the next
ones. The trainer and the guidance read the GPU once per step (its numbers and whether its
gradients are finite, in one copy); what is left is the samplers' reads of how many samples they
take (see MOST_SYNCS_PER_STEP): the dense sampler's two, the occupancy marcher's one before its
rounds and two a round (benchmarks/host_syncs.py counts real-sized steps).
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
from benchmark_scripts import load_benchmark
from sync_sites import by_file, march_rounds, sync_sites
from tiny_models import builtin_on_virtual_cuda
from virtual_cuda import virtual_cuda

from dreamtext import trainer
from dreamtext.config import resolve_config
from dreamtext.descriptor import DescriptorOptions, DescriptorTrainer
from dreamtext.field import FieldConfig
from dreamtext.models import StableDiffusionModels
from dreamtext.renderer import RenderConfig, VolumeRenderer
from dreamtext.samplers import OccupancyGrid, RaySamples

# One step of the tiny run, measured: 1 read in trainer.py (read_step_values) and 2 in the dense
# sampler (samplers.py: how many intervals are live, before and after the importance samples;
# `nonzero_static` then finds them without waiting). Before: 5, with 4 in the dense sampler
# (nonzero and three boolean masks); before that 27 (fp32) and 31 (fp16), 18 and 22 of them in
# trainer.py and guidance.py, and 5 host lists copied up: the torch hash grid's corner offsets
# (encoding.py, one a level) and the background colour (field.py).
MOST_SYNCS_PER_STEP = 3
OURS = ("trainer.py", "guidance.py")


def count_one_step(
    tmp_path: Path, fp16: bool, render: dict | None = None
) -> tuple[Counter, Counter, int]:
    """Syncs of the 4th step of a tiny builtin-prior run on virtual CUDA: by kind, by the
    dreamtext line that made them (:func:`sync_sites`), and the occupancy marcher's rounds in
    that step."""
    with virtual_cuda() as mode:
        # the occupancy grid's refresh reads the GPU on its own steps; not this one's
        cfg = resolve_config(
            builtin_on_virtual_cuda(
                tmp_path / "run",
                guidance={"fp16": fp16},
                render={"grid_update_every": 1000, **(render or {})},
            )
        )
        run = trainer.build_run(cfg)
        for _ in range(3):
            trainer.train_step(run)
        mode.syncs.clear()
        with sync_sites(mode) as sites, march_rounds() as rounds:
            record = trainer.train_step(run)
    assert record["step"] == 4 and record["loss"] == pytest.approx(record["loss"])
    return mode.syncs, sites, rounds["rounds"]


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_a_training_step_reads_the_gpu_once_in_the_trainer_and_guidance(tmp_path, fp16):
    syncs, sites, _ = count_one_step(tmp_path, fp16)
    files = by_file(sites)
    assert sum(files[name] for name in OURS) == 1, files
    assert syncs["tolist"] == sum(syncs.values()), syncs  # each a read of several numbers
    assert sum(syncs.values()) <= MOST_SYNCS_PER_STEP, (syncs, files)


def test_a_step_logs_what_it_logged_before(tmp_path):
    """The numbers read in one copy are the ones ``.item()`` gave: float32 values, exactly."""
    with virtual_cuda():
        cfg = resolve_config(builtin_on_virtual_cuda(tmp_path / "run"))
        record = trainer.train_step(trainer.build_run(cfg))
    for key in ("loss", "loss_sds", "loss_entropy", "loss_opacity", "loss_orientation"):
        value = record[key]
        assert isinstance(value, float) and torch.tensor(value).item() == value
        assert float(torch.tensor(value, dtype=torch.float32)) == value  # a float32 exactly
    assert record["skipped"] == 0.0 and "update_skipped" not in record


def test_the_occupancy_marcher_reads_the_gpu_twice_a_round(tmp_path):
    """A marcher's round needs two counts on the host: how many steps it takes (the shape of the
    field query) and, in one read, how many samples it keeps, how many rays march on and the
    next round's span. Before, it read four times a round (the span, and three ``nonzero``)."""
    render = {"sampler": "occupancy", "march_window": 2, "march_window_growth": 1}
    syncs, sites, rounds = count_one_step(tmp_path, fp16=False, render=render)
    files = by_file(sites)
    assert rounds >= 8, rounds  # a window of 2 steps: the rays take many rounds
    # one read before the rounds (the hit rays and the first span), then two a round
    assert files["samplers.py"] == 1 + 2 * rounds, (files, rounds)
    assert syncs["__int__"] == 0 and syncs["item"] == 0, syncs


@pytest.mark.parametrize("name, size", [("default-64", 64), ("fitfusion-256", 256)])
def test_the_benchmark_counts_the_default_field_and_marcher(tmp_path, name, size):
    """benchmarks/host_syncs.py puts the built-in prior's preset (small field, dense sampler,
    32 px) back to the defaults, so that its steps march as a Stable Diffusion run's do."""
    bench = load_benchmark("host_syncs", "host_syncs_benchmark")
    preset, _ = bench.CONFIGS[name]
    cfg = resolve_config(bench.run_config(name, "lambertian", tmp_path / "run"), preset=preset)
    assert (cfg.h, cfg.w, cfg.batch_size) == (size, size, 1)
    assert cfg.render == RenderConfig() and cfg.render.sampler == "occupancy"
    assert cfg.field == dataclasses.replace(FieldConfig(), encoding="torch")
    assert trainer.shading_for_step(1, cfg, torch.Generator()) == "lambertian"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_a_descriptor_step_reads_its_losses_and_its_vectors_largest_value_in_one_copy(
    tiny_sd_path, dtype
):
    """The descriptor's check of its vectors every step (``largest_value``, which stops a
    training whose vectors overflowed) rides on the read of the losses the step made before,
    and so, in fp16, do the scale for the log line and whether the scaler skipped the update
    (the scale before and after it: ``GradScaler.get_scale`` read the scale on its own); the
    loss scaler reads once more on its own (whether the gradients were finite)."""
    with virtual_cuda() as mode:
        models = StableDiffusionModels(str(tiny_sd_path), "cuda", dtype)
        trainer = DescriptorTrainer(models, "a", ["red"], "cube", DescriptorOptions())
        image = torch.ones(1, 3, 8, 8)
        for _ in range(2):
            trainer.train_step(image)
        mode.syncs.clear()
        with sync_sites(mode) as sites:
            record = trainer.train_step(image)
    reads = {kind: n for kind, n in mode.syncs.items() if kind != "to gpu" and n}
    assert reads == ({"tolist": 1} if dtype == torch.float32 else {"tolist": 1, "item": 1})
    assert set(by_file(sites)) == {"descriptor.py"}, sites
    vectors = trainer.placeholders.vectors.detach()
    assert trainer.largest_value == float(vectors.abs().max()) > 0
    assert record["step"] == 3 and "update_skipped" not in record
    assert ("loss_scale" in record) == (dtype == torch.float16)
    assert list(trainer.recent_skips) == [False] * 3


# Each kind of host sync virtual_cuda counts, against what torch's CUDA code does (the module
# docstring of tests/virtual_cuda.py names the functions read): counted where CUDA waits, and
# not where it does not, so a counter that missed a kind or over-counted one would fail here.
def syncs_of(make, act) -> Counter:
    """The syncs ``act(*tensors)`` makes, ``tensors = make()`` built on the virtual GPU first."""
    with virtual_cuda() as mode:
        tensors = make()
        mode.syncs.clear()
        act(*tensors)
        return Counter({kind: n for kind, n in mode.syncs.items() if n})


def gpu_values():
    values = torch.arange(6.0, device="cuda")
    return values, values > 2.5


def set_item(tensor, index, value):
    tensor[index] = value


def test_a_boolean_mask_write_of_a_python_number_is_a_masked_fill_without_a_sync():
    assert syncs_of(gpu_values, lambda t, m: set_item(t, m, 0.0)) == {}
    assert syncs_of(gpu_values, lambda t, m: set_item(t, (Ellipsis, m), 1)) == {}
    assert syncs_of(gpu_values, lambda t, m: set_item(t, m, torch.tensor(2.0))) == {}


def test_a_boolean_mask_write_of_a_gpu_value_syncs_on_its_nonzero():
    assert syncs_of(gpu_values, lambda t, m: set_item(t, m, t.sum())) == {"boolean mask": 1}
    assert syncs_of(gpu_values, lambda t, m: set_item(t, m, t[:3] * 2)) == {"boolean mask": 1}


def test_an_in_place_update_through_a_mask_syncs_twice():
    def add_one(t, m):
        t[m] += 1  # a read (t[m]) and a write of a GPU tensor

    assert syncs_of(gpu_values, add_one) == {"boolean mask": 2}


def test_a_mask_left_on_the_host_syncs_even_for_a_number():
    def host_mask(t, m):
        t[m.cpu()] = 0.0

    assert syncs_of(gpu_values, host_mask) == {"to host": 1, "boolean mask": 1, "to gpu": 1}


def test_index_put_with_a_mask_syncs_unless_it_becomes_a_masked_fill():
    assert syncs_of(gpu_values, lambda t, m: t.index_put_((m,), torch.tensor(1.0))) == {}
    gpu_scalar = syncs_of(gpu_values, lambda t, m: t.index_put_((m,), t.sum()))
    assert gpu_scalar == {"boolean mask": 1}
    accumulated = syncs_of(
        gpu_values, lambda t, m: t.index_put_((m,), torch.tensor(1.0), accumulate=True)
    )
    assert accumulated == {"boolean mask": 1, "to gpu": 1}  # the value copied up first


def test_masked_fill_reads_a_gpu_value_but_not_a_number():
    assert syncs_of(gpu_values, lambda t, m: t.masked_fill_(m, 3.0)) == {}
    assert syncs_of(gpu_values, lambda t, m: t.masked_fill(m, t.max())) == {"item": 1}
    assert syncs_of(gpu_values, lambda t, m: t.masked_scatter_(m, t.flip(0))) == {}


def test_a_zero_dim_gpu_integer_as_an_index_is_read():
    def by_count(t, m):
        return t[m.sum()], t[torch.tensor(1)], t[2]

    assert syncs_of(gpu_values, by_count) == {"item": 1}


def test_host_index_tensors_and_host_values_are_copied_up():
    def host_index(t, m):
        t[torch.tensor([0, 2])] = t[torch.tensor([1, 3])]

    assert syncs_of(gpu_values, host_index) == {"to gpu": 2}

    def host_values(t, m):
        t[m.nonzero_static(size=3)[:, 0]] = torch.ones(3)

    assert syncs_of(gpu_values, host_values) == {"to gpu": 1}


def test_a_host_number_written_through_indices_or_into_one_element_is_copied_up():
    ids = lambda: (torch.arange(6.0, device="cuda"), torch.tensor([1, 4], device="cuda"))  # noqa: E731
    assert syncs_of(ids, lambda t, i: set_item(t, i, 0.0)) == {"to gpu": 1}
    assert syncs_of(ids, lambda t, i: set_item(t, 2, 0.0)) == {"to gpu": 1}
    assert syncs_of(ids, lambda t, i: set_item(t, slice(2, 4), 0.0)) == {}  # a fill_
    assert syncs_of(ids, lambda t, i: set_item(t, (Ellipsis, 2), t[0])) == {}  # on the GPU
    assert syncs_of(ids, lambda t, i: t.index_put_((i,), t.sum())) == {}


def test_filling_a_host_tensor_from_a_gpu_scalar_reads_it():
    assert syncs_of(gpu_values, lambda t, m: torch.zeros(2).fill_(t[0])) == {"item": 1}
    assert syncs_of(gpu_values, lambda t, m: t.fill_(torch.tensor(1.0))) == {}


def test_where_with_a_condition_alone_is_a_nonzero():
    assert syncs_of(gpu_values, lambda t, m: torch.where(m)) == {"nonzero": 1}
    assert syncs_of(gpu_values, lambda t, m: torch.where(m, t, 0.0)) == {}
    assert syncs_of(gpu_values, lambda t, m: m.nonzero_static(size=2)) == {}


def test_comparisons_and_formatting_read_the_gpu():
    assert syncs_of(gpu_values, lambda t, m: torch.equal(t, t)) == {"equal": 1}
    assert syncs_of(gpu_values, lambda t, m: torch.allclose(t, t)) == {"allclose": 1}
    assert syncs_of(gpu_values, lambda t, m: f"{t.sum():.3f}") == {"__format__": 1}


def test_data_dependent_lengths_sync_unless_given():
    counts = lambda: (torch.tensor([2, 0, 1], device="cuda"),)  # noqa: E731
    assert syncs_of(counts, lambda r: torch.repeat_interleave(r)) == {"repeat_interleave": 1}
    assert syncs_of(counts, lambda r: r.repeat_interleave(r, output_size=3)) == {}
    assert syncs_of(counts, lambda r: r.repeat_interleave(2)) == {}
    assert syncs_of(counts, lambda r: r.bincount()) == {"bincount": 1}
    assert syncs_of(counts, lambda r: r.unique_consecutive()) == {"unique_consecutive": 1}


# Bounded renders (previews, a deferred step's image and its replay) split their samples into
# chunks at the per-ray offsets, an [N + 1] read. Samples that fit in one chunk need no read;
# others are read once, however many times they are chunked.
def test_a_deferred_step_reads_its_sample_offsets_once_for_the_image_and_the_replay(tmp_path):
    render = {"backprop": "deferred", "grad_chunk_points": 256, "chunk_points": 256}
    _, sites, _ = count_one_step(tmp_path, fp16=False, render=render)
    assert offset_reads(sites) == 1, sites  # before: 2, one per chunking
    assert by_file(sites)["renderer.py"] == 0 and by_file(sites)["trainer.py"] == 1, sites


def offset_reads(sites: Counter) -> int:
    """The reads of packed sample offsets among ``sites``: the one line that reads them
    (:meth:`RaySamples.host_offsets`)."""
    lines, first = inspect.getsourcelines(RaySamples.host_offsets)
    line = first + next(i for i, text in enumerate(lines) if ".tolist()" in text)
    return sites[f"samplers.py:{line}"]


def preview_sites(tmp_path: Path, render: dict) -> tuple[Counter, int]:
    """Syncs of one preview of the tiny run (before its first grid refresh, so the preview
    refreshes a copy of the grid), by dreamtext line, and the preview's views."""
    with virtual_cuda() as mode:
        cfg = resolve_config(builtin_on_virtual_cuda(tmp_path / "run", render=render))
        run = trainer.build_run(cfg)
        mode.syncs.clear()
        with sync_sites(mode) as sites:
            trainer.save_preview(run, tmp_path / "preview.png")
    return sites, cfg.preview_views


def test_a_preview_whose_samples_fit_in_one_chunk_reads_no_offsets(tmp_path):
    sites, views = preview_sites(tmp_path, {})
    assert views >= 2 and offset_reads(sites) == 0, sites  # before: 2 a view, one a shading
    assert by_file(sites)["renderer.py"] == 0, sites
    # The cameras, drawn on the host, go up without a wait (Poses.to): before, 5 copies.
    assert by_file(sites)["cameras.py"] == 0, sites


def test_a_preview_split_into_chunks_reads_its_offsets_once_a_view(tmp_path):
    sites, views = preview_sites(tmp_path, {"chunk_points": 256})
    assert offset_reads(sites) == views, sites  # before: 2 a view, one a shading


def test_the_chunks_of_samples_that_fit_are_the_samples_as_the_split_would_give_them():
    renderer = VolumeRenderer(RenderConfig(chunk_size=8))
    rays = torch.tensor([0, 0, 1, 3, 3, 3, 5])
    t = torch.arange(7.0)
    samples = RaySamples(rays, t, t + 0.5, num_rays=6)
    ((whole, part, lo, hi),) = renderer.sample_chunks(samples, 2, budget=14)  # 7 samples × 2
    split = samples.rays(0, 6, samples.host_offsets())
    assert (whole, lo, hi) == (range(0, 6), 0, 7)
    for name in ("ray_indices", "t_starts", "t_ends", "num_rays"):
        assert torch.equal(
            torch.as_tensor(getattr(part, name)), torch.as_tensor(getattr(split, name))
        )
    # one query more than the budget: split, at the offsets
    chunks = renderer.sample_chunks(samples, 2, budget=13)
    assert [(c.start, c.stop, a, b) for c, _, a, b in chunks] == [(0, 5, 0, 6), (5, 6, 6, 7)]


class Slope:
    """A field whose density rises along x: σ(x) = 40 x_0 (negative on one side)."""

    bound = 1.0

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return 40.0 * x[:, 0]


@pytest.mark.parametrize("threshold", [0.1, 10.0, 1000.0])
def test_the_occupancy_grids_refresh_keeps_its_threshold_on_the_gpu(threshold):
    """A cell is occupied when g ≥ min(τ, mean(max(g, 0))), as when the mean was read with
    ``.item()``; now no read."""
    with virtual_cuda() as mode:
        grid = OccupancyGrid(8, decay=0.95, threshold=threshold).to("cuda")
        mode.syncs.clear()
        grid.update(Slope(), chunk_points=100)
        assert sum(mode.syncs.values()) == 0, mode.syncs
        density, occupied = grid.density.cpu(), grid.occupied.cpu()
    expected = density >= min(threshold, density.clamp_min(0.0).mean().item())
    assert torch.equal(occupied, expected)
    assert 0 < int(occupied.sum()) < occupied.numel()


@pytest.mark.filterwarnings("ignore:called a synchronizing")  # the warm-up steps
def test_the_sync_debug_mode_files_each_warning_under_the_line_that_synced(tmp_path, monkeypatch):
    """benchmarks/host_syncs.py --sync-debug, as gpu_session.sh's syncdebug check runs it, on the
    CPU with the tiny run: every ``.tolist()`` made to warn as torch's sync debug mode warns of a
    sync, the warnings are filed by the dreamtext line that made them: the step's reads (1 in the
    trainer, 2 in the dense sampler, as virtual CUDA files them) and here the two lists of the
    cameras' angles too (on the host, which on CUDA do not wait); other warnings still show."""
    bench = load_benchmark("host_syncs", "host_syncs_debug")
    tiny = lambda name, shading, workspace, device: builtin_on_virtual_cuda(  # noqa: E731
        workspace, device=device, render={"grid_update_every": 1000}
    )
    monkeypatch.setattr(bench, "run_config", tiny)
    monkeypatch.setitem(bench.CONFIGS, "tiny", (None, 32))
    real_tolist = torch.Tensor.tolist

    def tolist(self):
        warnings.warn(bench.SYNC_WARNING, stacklevel=2)
        return real_tolist(self)

    monkeypatch.setattr(torch.Tensor, "tolist", tolist)
    (step,) = bench.debug_steps("tiny", "albedo", "occupied", steps=1, warmup=3, device="cpu")
    assert step.step == 4 and step.syncs == {"sync debug": 5}
    assert by_file(step.sites) == {"trainer.py": 1 + 2, "samplers.py": 2}, step.sites
    assert all(".tolist()" in bench.site_text(site) for site in step.sites), step.sites
    with pytest.warns(UserWarning, match="another"), bench.sync_warnings(torch.device("cpu")):
        warnings.warn("another warning", stacklevel=1)
