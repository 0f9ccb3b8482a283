"""benchmarks/sds_step.py: what its rows are configured with."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def sds_step():
    return load_benchmark("sds_step", "sds_step")


@pytest.mark.parametrize("compile", [False, True])
def test_a_row_runs_the_guidance_a_user_would_get_with_those_flags(sds_step, compile):
    cfg = sds_step.run_config("some/model", "fp16", 128, torch.device("cpu"), compile)
    assert (cfg.h, cfg.w) == (128, 128)
    assert cfg.guidance.model == "some/model"
    assert cfg.guidance.fp16 is True
    assert cfg.guidance.compile is compile
    # The trainer rows take the same guidance section.
    assert sds_step.guidance_overrides("m", "bf16", compile) == {
        "model": "m",
        "compile": compile,
        "bf16": True,
    }


def test_a_row_says_compiled_only_where_the_guidance_compiles(sds_step):
    assert sds_step.compile_label(True, torch.device("cuda")) == "on"
    assert sds_step.compile_label(True, torch.device("cpu")) == "ignored (CPU)"
    assert sds_step.compile_label(False, torch.device("cuda")) == "off"
    settings = {"compile_vae": True, "compile_mode": "reduce-overhead"}
    label = sds_step.compile_label(True, torch.device("cuda"), settings)
    assert label == "on; compile_vae=True, compile_mode=reduce-overhead"


def test_rows_take_the_guidance_settings_asked_for(sds_step, monkeypatch):
    """``--guidance`` sets the guidance section of every row, single steps and trainer rows
    alike, over the precision and --compile."""
    settings = {"compile_vae": True, "compile_mode": "reduce-overhead"}
    cfg = sds_step.run_config("m", "fp16", 64, torch.device("cpu"), True, guidance=settings)
    assert (cfg.guidance.compile, cfg.guidance.compile_vae) == (True, True)
    assert (cfg.guidance.compile_mode, cfg.guidance.fp16) == ("reduce-overhead", True)
    records = [{"step": 1, "its": 1.0, "gpu_mem_mib": 9.0, "samples_per_ray": 9.0}]
    train, seen = fake_trainer(records)
    monkeypatch.setattr("dreamtext.trainer.train", train)
    args = trainer_args("guidance", settings, "compile", True)
    row = sds_step.trainer_row("m", "fp16", "default", "albedo", args, torch.device("cpu"))
    assert seen["cfg"].guidance.compile_vae is True
    assert seen["cfg"].guidance.compile_mode == "reduce-overhead"
    assert row["compile"] == "ignored (CPU); compile_vae=True, compile_mode=reduce-overhead"
    parsed = []
    monkeypatch.setattr(sds_step, "measure", lambda *a, **k: parsed.append(k) or [])
    monkeypatch.setattr(sds_step, "model_folder", lambda *a: Path("m"))
    sds_step.main(["--device", "cpu", "--model", "tiny", "--guidance", '{"compile_vae": true}'])
    assert parsed[0]["guidance_settings"] == {"compile_vae": True}


def test_the_compile_flag_is_parsed(sds_step, monkeypatch, capsys):
    seen = {}

    def fake_trainer_row(model, precision, preset, phase, args, device, start):
        seen["compile"] = args.compile
        return {"preset": preset, "phase": phase, "status": "ok"}

    monkeypatch.setattr(sds_step, "trainer_row", fake_trainer_row)
    monkeypatch.setattr(sds_step, "model_folder", lambda name, cache, device: "folder")
    argv = ["--trainer", "--device", "cpu", "--model", "tiny", "--presets", "default", "--compile"]
    assert sds_step.main(argv) == 0
    assert seen["compile"] is True
    header = capsys.readouterr().out
    assert "40 trainer steps a row, it/s over the second half" in header
    assert "median of" not in header


def test_rows_take_the_field_settings_asked_for_and_the_config_defaults_otherwise(
    sds_step, monkeypatch
):
    cpu = torch.device("cpu")
    asked = sds_step.run_config("m", "fp32", 64, cpu, field={"normals": "analytic"})
    assert asked.field.normals == "analytic"
    default = sds_step.run_config("m", "fp32", 64, cpu)
    assert (default.field.normals, default.field.density_head) == ("forward_difference", "shared")
    seen = {}

    def fake_measure(
        model, precision, sizes, shadings, device, repeats, warmup, compile, field, report, **kw
    ):
        seen["field"], seen["fitted"] = field, kw["fitted"]
        return []

    monkeypatch.setattr(sds_step, "measure", fake_measure)
    monkeypatch.setattr(sds_step, "model_folder", lambda name, cache, device: None)
    assert sds_step.main(["--device", "cpu", "--model", "none", "--normals", "analytic"]) == 0
    assert seen["field"] == {"normals": "analytic"}
    argv = ["--device", "cpu", "--model", "none", "--density-head", "separate"]
    assert sds_step.main(argv) == 0
    assert seen["field"] == {"density_head": "separate"} and seen["fitted"] is None
    assert sds_step.main([*argv, "--fitted", "torus"]) == 0
    assert seen["fitted"] == "torus"
    separate = sds_step.run_config("m", "fp32", 64, cpu, field=seen["field"])
    assert separate.field.density_head == "separate"


def test_descriptor_rows_time_the_trainers_steps_on_the_model_asked_for(
    sds_step, tiny_sd_path, monkeypatch, tmp_path, capsys
):
    from dreamtext import descriptor

    steps = []
    real_step = descriptor.DescriptorTrainer.train_step

    def counted(self, image):
        steps.append((self.models.resolution, tuple(image.shape)))
        return real_step(self, image)

    monkeypatch.setattr(descriptor.DescriptorTrainer, "train_step", counted)
    monkeypatch.setattr(sds_step, "model_folder", lambda name, cache, device: str(tiny_sd_path))
    out = tmp_path / "RESULTS.md"
    argv = ["--descriptor", "--device", "cpu", "--model", "tiny", "--repeats", "2"]
    assert sds_step.main([*argv, "--warmup", "1", "--out", str(out)]) == 0
    assert len(steps) == 3  # one warm-up, two timed
    resolution = steps[0][0]
    assert steps[0][1] == (1, 3, resolution, resolution)
    text = out.read_text()
    assert "## Descriptor step — " in text
    name = Path(tiny_sd_path).name
    (row,) = [line for line in text.splitlines() if line.startswith(f"| {name} ")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:3] == [name, "fp32", str(resolution)]
    step_ms, its = float(cells[3]), float(cells[4])
    assert its == pytest.approx(1000.0 / step_ms, rel=0.01)
    assert cells[5].endswith("(RSS)")


def test_descriptor_rows_need_a_model(sds_step, capsys):
    with pytest.raises(SystemExit):
        sds_step.main(["--descriptor", "--device", "cpu", "--model", "none"])
    assert "need a model" in capsys.readouterr().err


def test_trainer_rows_count_the_steps_the_loss_scaler_skipped(sds_step):
    """Each halving of the logged scale is a skipped step; a doubling (growth) is not."""
    assert sds_step.loss_scaler_summary([{"step": 1}, {"step": 2}]) == "off"
    scales = [2.0**15, 2.0**14, 2.0**14, 2.0**15, 2.0**14]
    records = [{"step": i + 1, "loss_scale": s} for i, s in enumerate(scales)]
    assert sds_step.loss_scaler_summary(records) == "3 skipped, scale 16384"
    assert sds_step.loss_scaler_summary([{"loss_scale": 2.0**16}]) == "0 skipped, scale 65536"


def fake_trainer(
    records: list[dict],
    error: Exception | None = None,
    status: dict | None = None,
    compiled: bool = False,
):
    """A stand-in for ``dreamtext.trainer.train`` that writes ``records`` as its log (and
    ``status`` as its status.json, when given), and a config.json whose ``ran_on`` says whether
    the field's MLPs ran ``compiled``."""
    seen = {}

    def train(cfg):
        seen["cfg"] = cfg
        if error is not None:
            raise error
        lines = "".join(json.dumps(r) + "\n" for r in records)
        (Path(cfg.workspace) / "log.jsonl").write_text(lines, encoding="utf-8")
        config = {"ran_on": {"field_compiled": compiled}}
        (Path(cfg.workspace) / "config.json").write_text(json.dumps(config))
        if status is not None:
            (Path(cfg.workspace) / "status.json").write_text(json.dumps(status))

    return train, seen


def test_trainer_rows_show_the_peak_with_the_final_preview(sds_step, monkeypatch):
    """The steps' peak comes from log.jsonl; status.json's, written after the final preview,
    is the whole run's: a preview that needs more memory than a step shows there."""
    records = [{"step": 1, "its": 1.0, "gpu_mem_mib": 900.0, "samples_per_ray": 9.0}]
    cpu = torch.device("cpu")
    for status, shown in (({"gpu_mem_mib": 1400.0}, "1400"), ({"gpu_mem_mib": None}, "-")):
        monkeypatch.setattr("dreamtext.trainer.train", fake_trainer(records, status=status)[0])
        row = sds_step.trainer_row("m", "fp16", "default", "shaded", trainer_args(), cpu)
        assert (row["peak_mib"], row["run_peak_mib"]) == ("900", shown)
    assert "with the final preview" in sds_step.trainer_table([row])


def test_trainer_rows_say_how_the_field_mlps_ran(sds_step, monkeypatch):
    """render.compile_field's default ("auto") compiles the field's MLPs on CUDA unless that
    fails: each row says what its run recorded (config.json's ``ran_on.field_compiled``)."""
    records = [{"step": 1, "its": 1.0, "gpu_mem_mib": 9.0, "samples_per_ray": 9.0}]
    cpu = torch.device("cpu")
    for compiled, shown in ((True, "compiled"), (False, "eager")):
        train = fake_trainer(records, compiled=compiled)[0]
        monkeypatch.setattr("dreamtext.trainer.train", train)
        row = sds_step.trainer_row("m", "fp16", "default", "shaded", trainer_args(), cpu)
        assert row["field_mlps"] == shown
        assert f"| {shown} |" in sds_step.trainer_table([row])
    assert "| field MLPs |" in sds_step.trainer_table([row])


def trainer_args(*extra) -> argparse.Namespace:
    args = argparse.Namespace(
        steps=4,
        compile=False,
        normals=None,
        density_head=None,
        px=None,
        render=None,
        guidance=None,
    )
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        setattr(args, flag, value)
    return args


def test_trainer_rows_take_the_size_asked_for_and_the_steady_rate(sds_step, monkeypatch):
    """``--px`` overrides the preset's render size (FitFusion at 512 px); the steady it/s is
    the second half's steps over its time, recovered from the records' running means."""
    # Steps 1-2 take 10 s (loading, compiling), then 0.5 s each: elapsed 10, 10, 10.5, 11.
    records = [
        {"step": step, "its": step / elapsed, "gpu_mem_mib": mib, "samples_per_ray": 9.0}
        for step, elapsed, mib in [
            (1, 10.0, 100.0),
            (2, 10.0, 300.0),
            (3, 10.5, 200.0),
            (4, 11.0, 250.0),
        ]
    ]
    train, seen = fake_trainer(records)
    monkeypatch.setattr("dreamtext.trainer.train", train)
    cpu = torch.device("cpu")
    row = sds_step.trainer_row("m", "fp32", "fitfusion", "shaded", trainer_args("px", 512), cpu)
    assert (seen["cfg"].h, seen["cfg"].w, row["px"]) == (512, 512, 512)
    assert row["its"] == "2.00" and row["peak_mib"] == "300" and row["status"] == "ok"
    row = sds_step.trainer_row("m", "fp32", "fitfusion", "shaded", trainer_args(), cpu)
    assert seen["cfg"].h == 256 == row["px"]  # the preset's own
    short = {"gpu_mem_mib": 1.0, "samples_per_ray": 9.0}
    two = [{"step": 1, "its": 0.1, **short}, {"step": 2, "its": 2 / 10.5, **short}]
    for log, its in ((two, "2.00"), (two[:1], "0.10")):  # runs too short for a second half
        monkeypatch.setattr("dreamtext.trainer.train", fake_trainer(log)[0])
        row = sds_step.trainer_row("m", "fp32", "default", "shaded", trainer_args(), cpu)
        assert row["its"] == its, len(log)


def test_trainer_rows_take_the_render_settings_asked_for(sds_step, monkeypatch, capsys):
    """``--render`` sets the run's render section over the preset (whether a 256 px step defers
    its backprop, the marcher's window); the row says which it ran with."""
    records = [{"step": 1, "its": 1.0, "gpu_mem_mib": 9.0, "samples_per_ray": 9.0}]
    train, seen = fake_trainer(records)
    monkeypatch.setattr("dreamtext.trainer.train", train)
    cpu = torch.device("cpu")
    row = sds_step.trainer_row("m", "fp16", "fitfusion", "shaded", trainer_args(), cpu)
    assert seen["cfg"].render.grad_chunk_points == 1 << 25
    assert row["render"] == "config defaults"
    settings = {"grad_chunk_points": 1 << 25, "march_window": 64}
    row = sds_step.trainer_row(
        "m", "fp16", "fitfusion", "shaded", trainer_args("render", settings), cpu
    )
    render = seen["cfg"].render
    assert (render.grad_chunk_points, render.march_window) == (1 << 25, 64)
    assert seen["cfg"].h == 256  # the rest of the preset stays
    assert "| grad_chunk_points=33554432, march_window=64 |" in sds_step.trainer_table([row])
    parsed = []
    monkeypatch.setattr(sds_step, "trainer_row", lambda *a: parsed.append(a[4]) or {})
    monkeypatch.setattr(sds_step, "trainer_table", lambda rows: "")
    monkeypatch.setattr(sds_step, "model_folder", lambda *a: Path("m"))
    argv = ["--trainer", "--model", "tiny", "--device", "cpu", "--presets", "default"]
    sds_step.main([*argv, "--render", '{"march_window": 32}', "--steps", "2"])
    assert parsed and parsed[0].render == {"march_window": 32}
    # The table's heading gives the command as a shell runs it again.
    assert """--render '{"march_window": 32}' --steps 2`""" in capsys.readouterr().out
    for bad in ("[32]", "march_window=32"):
        with pytest.raises(SystemExit):
            sds_step.main([*argv, "--render", bad])
        assert "--render" in capsys.readouterr().err


def test_trainer_rows_report_running_out_of_memory_but_not_a_timeout(sds_step, monkeypatch):
    """Out of memory (a user error, as a user's run sees it) is the row's status and the next
    row runs; a SIGTERM from the session's per-check timeout (the trainer's
    TrainingInterrupted) ends the script, as the timeout means it to."""
    from dreamtext.errors import DreamtextError
    from dreamtext.trainer import TrainingInterrupted

    cpu = torch.device("cpu")
    full = DreamtextError("out of GPU memory after step 3; use a smaller --h/--w")
    monkeypatch.setattr("dreamtext.trainer.train", fake_trainer([], full)[0])
    row = sds_step.trainer_row("m", "fp16", "default", "albedo", trainer_args(), cpu)
    assert row["status"] == "out of GPU memory after step 3"
    stopped = TrainingInterrupted(3, Path("last.pt"))
    monkeypatch.setattr("dreamtext.trainer.train", fake_trainer([], stopped)[0])
    with pytest.raises(TrainingInterrupted):
        sds_step.trainer_row("m", "fp16", "default", "albedo", trainer_args(), cpu)


def measure_two_tiny_rows(sds_step) -> tuple[list[dict], list[dict]]:
    """NeRF-only rows at 8 and 12 px of a tiny field, one step each: (rows, rows reported)."""
    reported: list[dict] = []
    field = {"num_levels": 2, "log2_hashmap_size": 8, "hidden_dim": 8, "num_blocks": 1}
    rows = sds_step.measure(
        None,
        "fp32",
        [8, 12],
        ["albedo"],
        torch.device("cpu"),
        1,
        0,
        field_config=field,
        report=reported.append,
    )
    return rows, reported


def test_fitted_rows_start_from_the_fitted_field_and_count_its_samples(
    sds_step, monkeypatch, tmp_path
):
    """``--fitted``: each row's field gets the fitted parameters (here a tiny field whose MLP
    says empty space everywhere but the density blob) and its grid is refreshed for them: fewer
    kept samples a ray than the fresh fog, and the row says which field it ran."""
    from dreamtext.field import FieldConfig, NeRFField

    small = {"num_levels": 2, "log2_hashmap_size": 8, "hidden_dim": 8, "num_blocks": 1}
    asked = []

    def fitted_state(shape, density_head, cache, device):
        asked.append((shape, density_head, cache, device))
        field = NeRFField(FieldConfig(**small))
        with torch.no_grad():
            field.output_layer.bias[0] = -30.0  # raw density far below the blob's +10
        return field.state_dict()

    monkeypatch.setattr(sds_step, "fitted_state", fitted_state)

    def rows(fitted):
        return sds_step.measure(
            None, "fp32", [12], ["lambertian"], torch.device("cpu"), 2, 0,
            field_config=small, fitted=fitted, cache=tmp_path,
        )  # fmt: skip

    fresh, fitted = rows(None)[0], rows("sphere")[0]
    assert asked == [("sphere", "shared", tmp_path, torch.device("cpu"))]
    assert (fresh["field"], fitted["field"]) == ("fresh", "fitted sphere")
    assert fresh["field_mlps"] == fitted["field_mlps"] == "eager"  # on the CPU
    assert 0 <= float(fitted["samples"]) < float(fresh["samples"])
    table = sds_step.markdown_table([fresh, fitted])
    assert "| field MLPs | field |" in table and "samples/ray" in table
    two = sds_step.measure(
        None, "fp32", [8, 12], ["albedo"], torch.device("cpu"), 1, 0,
        field_config=small, fitted="torus", cache=tmp_path,
    )  # fmt: skip
    assert [row["field"] for row in two] == ["fitted torus"] * 2
    assert len(asked) == 2  # fitted once for both rows


def test_each_sds_row_is_reported_as_soon_as_it_is_measured(sds_step):
    """A later row may be cut off by the check's timeout: the earlier ones are out already."""
    rows, reported = measure_two_tiny_rows(sds_step)
    assert reported == rows and [r["render_px"] for r in rows] == [8, 12]
    assert all(r["status"] == "ok" for r in rows)


def test_an_sds_row_that_runs_out_of_memory_is_reported_and_the_next_row_runs(
    sds_step, monkeypatch
):
    real_step = sds_step.one_step

    def one_step(field, renderer, guidance, optimizer, poses, size, *rest):
        if size == 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real_step(field, renderer, guidance, optimizer, poses, size, *rest)

    monkeypatch.setattr(sds_step, "one_step", one_step)
    rows, reported = measure_two_tiny_rows(sds_step)
    assert reported == rows and [r["status"] for r in rows] == ["out of memory", "ok"]
    assert "step_ms" not in rows[0] and float(rows[1]["step_ms"]) > 0


def test_the_gpu_memory_cap_gives_a_run_what_a_smaller_card_would(sds_step, monkeypatch):
    """``--gpu-memory-gib`` sets torch's per-process fraction of the GPU (replaced here: no GPU)."""
    from types import SimpleNamespace

    from dreamtext.errors import DreamtextError

    cuda = torch.device("cuda")  # as main() makes it: no index
    caps = []
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda d: SimpleNamespace(total_memory=140 * 2**30)
    )
    # torch's own check of the device argument: a bare "cuda" raises (as it did on the H200).
    monkeypatch.setattr(
        torch.cuda,
        "set_per_process_memory_fraction",
        lambda f, d: caps.append((f, torch._utils._get_device_index(d))),
    )
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert sds_step.cap_gpu_memory(cuda, 11) == pytest.approx(11 / 140)
    assert caps == [(pytest.approx(11 / 140), 0)]
    sds_step.cap_gpu_memory(torch.device("cuda", 1), 11)
    assert caps[-1][1] == 1
    caps.pop()
    for too_much in (141, 0):
        with pytest.raises(DreamtextError, match=r"this GPU has 140\.0 GiB"):
            sds_step.cap_gpu_memory(cuda, too_much)
    assert len(caps) == 1


def test_the_gpu_memory_cap_needs_cuda(sds_step, capsys):
    with pytest.raises(SystemExit) as done:
        sds_step.main(["--device", "cpu", "--gpu-memory-gib", "11"])
    assert done.value.code == 2
    assert "--gpu-memory-gib needs a CUDA device" in capsys.readouterr().err


def test_cudnn_benchmark_is_off_unless_asked(sds_step, monkeypatch):
    """``--cudnn-benchmark`` turns on cuDNN's autotuner for the run's convolutions (a lever to
    measure for the VAE's fixed 512 px encode); without it the rows run as dreamtext does."""
    seen = []

    def fake_measure(*args, **kwargs):
        seen.append(torch.backends.cudnn.benchmark)
        return []

    monkeypatch.setattr(sds_step, "measure", fake_measure)
    monkeypatch.setattr(sds_step, "model_folder", lambda name, cache, device: None)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    argv = ["--device", "cpu", "--model", "none"]
    assert sds_step.main(argv) == 0
    assert sds_step.main([*argv, "--cudnn-benchmark"]) == 0
    assert seen == [False, True]


def test_a_fitted_trainer_row_trains_from_the_fitted_field_and_keeps_it(
    sds_step, tiny_sd_path, tmp_path
):
    """``--trainer --fitted``: the trainer's field starts from the given parameters, and its
    steps (Adam's included) leave them as they are, so that the random model's guidance cannot
    fog a fitted field again; the trainer's other parts are untouched."""
    from tiny_models import TINY_TRAIN

    from dreamtext import trainer
    from dreamtext.config import resolve_config
    from dreamtext.field import FieldConfig, NeRFField

    torch.manual_seed(7)
    start = NeRFField(FieldConfig(**TINY_TRAIN["field"])).state_dict()
    run = {
        **TINY_TRAIN,
        "prompt": "a red castle",
        "iters": 2,
        "device": "cpu",
        "guidance": {"model": str(tiny_sd_path)},
    }
    cfg = resolve_config({**run, "workspace": str(tmp_path / "fitted")})
    built = []
    build = trainer.build_parts

    def recording_build(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(trainer, "build_parts", recording_build)
        with sds_step.fields_starting_from(("random", start)):
            trainer.train(cfg)
        (parts,) = built
        trained = parts.field.state_dict()
        assert trained.keys() == start.keys()
        for name, value in start.items():
            assert torch.equal(trained[name], value), name
        moments = [
            parts.optimizer.state[p] for g in parts.optimizer.param_groups for p in g["params"]
        ]
        assert all(float(m["step"]) == 2 for m in moments if m), "Adam stepped each step"
        assert any(m and m["exp_avg"].abs().sum() > 0 for m in moments), "with real gradients"
        # Without a start the trainer's field is its own, and it trains.
        built.clear()
        cfg = resolve_config({**run, "workspace": str(tmp_path / "fresh")})
        with sds_step.fields_starting_from(None):
            trainer.train(cfg)
        (fresh,) = built
        changed = fresh.field.state_dict()
        assert any(not torch.equal(changed[n], start[n]) for n in start)
        assert all(g["lr"] > 0 for g in fresh.optimizer.param_groups)


def test_fitted_trainer_rows_start_every_row_from_one_fit(sds_step, monkeypatch, capsys):
    """``--trainer --fitted SHAPE`` fits (or reads) the shape once, for the field the rows'
    config asks for, hands it to every row, and says so in the table; ``--descriptor`` has no
    field to fit and refuses it."""
    fits, starts = [], []
    monkeypatch.setattr(
        sds_step,
        "fitted_state",
        lambda shape, head, cache, device: fits.append((shape, head)) or {"fitted": shape},
    )

    def fake_trainer_row(model, precision, preset, phase, args, device, start):
        starts.append(start)
        label = "fresh" if start is None else f"fitted {start[0]}"
        return {"preset": preset, "phase": phase, "field": label, "status": "ok"}

    monkeypatch.setattr(sds_step, "trainer_row", fake_trainer_row)
    monkeypatch.setattr(sds_step, "model_folder", lambda *a: "folder")
    argv = ["--trainer", "--device", "cpu", "--model", "tiny", "--presets", "default", "fitfusion"]
    assert sds_step.main([*argv, "--fitted", "torus", "--density-head", "separate"]) == 0
    assert fits == [("torus", "separate")]
    assert starts == [("torus", {"fitted": "torus"})] * 4
    out = capsys.readouterr().out
    assert "| field at step 0 |" in out and "| fitted torus |" in out
    starts.clear()
    assert sds_step.main(argv) == 0
    assert starts == [None] * 4 and len(fits) == 1
    with pytest.raises(SystemExit):
        sds_step.main(["--descriptor", "--device", "cpu", "--model", "tiny", "--fitted", "cube"])
    assert "--fitted" in capsys.readouterr().err
