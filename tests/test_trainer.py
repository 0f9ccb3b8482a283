"""The SDS trainer on the tiny random Stable Diffusion: workspace contents, resume, interruption."""

import contextlib
import dataclasses
import errno
import fcntl
import importlib.metadata
import json
import math
import os
import re
from pathlib import Path

import pytest
import torch
import yaml
from step_faults import raise_at_step, signal_after_step, weights_overflow_in_step
from test_checkpoint import files_limited_to
from tiny_models import TINY_SIZES, TINY_TRAIN

import dreamtext.trainer as trainer
from dreamtext.cameras import sample_poses
from dreamtext.checkpoint import checkpoint_run, load_checkpoint
from dreamtext.config import TrainConfig, resolve_config
from dreamtext.errors import DreamtextError
from dreamtext.trainer import TrainingInterrupted, light_positions, shading_for_step, train


def tiny_config(tmp_path, model, **overrides):
    merged = {
        **TINY_TRAIN,
        "prompt": "a red sphere",
        "workspace": str(tmp_path / "run"),
        "guidance": {"model": str(model), "guidance_scale": 10.0},
        **overrides,
    }
    return resolve_config(merged)


def field_params(workspace):
    return load_checkpoint(workspace / "checkpoints" / "last.pt")["field"]


def test_a_run_leaves_config_log_previews_and_checkpoints(tmp_path, tiny_sd_path):
    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=4))
    config = json.loads((workspace / "config.json").read_text())
    assert config["prompt"] == "a red sphere" and config["iters"] == 4
    assert config["guidance"]["model"] == str(tiny_sd_path)
    assert config["encoding_backend"] == "torch"
    # What the config's "auto"s became, and what ran them.
    ran_on = config["ran_on"]
    assert ran_on["device"] == "cpu" and ran_on["device_name"].endswith(
        f"CPU, {torch.get_num_threads()} threads"
    )
    assert ran_on["guidance_dtype"] == "float32" and ran_on["field_mlp_dtype"] == "float32"
    assert ran_on["field_compiled"] is False and ran_on["guidance_compiled"] == []
    assert ran_on["model_revision"] is None  # a folder, not a hub id
    assert ran_on["versions"]["torch"] == torch.__version__
    assert ran_on["versions"]["diffusers"] == importlib.metadata.version("diffusers")
    records = [json.loads(line) for line in (workspace / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    assert all(20 <= r["t"] <= 980 for r in records)  # integer timesteps of 1000
    assert (workspace / "previews" / "step_000002.png").is_file()
    assert (workspace / "previews" / "final.png").is_file()
    state = load_checkpoint(workspace / "checkpoints" / "last.pt")
    assert state["step"] == 4
    # last.pt is the newest; the one it replaced keeps its step's name (no second copy of step 4)
    assert load_checkpoint(workspace / "checkpoints" / "step_000002.pt")["step"] == 2
    assert not (workspace / "checkpoints" / "step_000004.pt").exists()


def test_training_changes_the_field(tmp_path, tiny_sd_path):
    start = train(tiny_config(tmp_path / "a", tiny_sd_path, iters=1))
    longer = train(tiny_config(tmp_path / "b", tiny_sd_path, iters=3))
    a, b = field_params(start), field_params(longer)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_resume_equals_an_uninterrupted_run(tmp_path, tiny_sd_path):
    whole = train(tiny_config(tmp_path / "whole", tiny_sd_path, iters=6))
    first = train(tiny_config(tmp_path / "split", tiny_sd_path, iters=3))
    resumed = train(tiny_config(tmp_path / "split", tiny_sd_path, iters=6), resume=True)
    assert resumed == first
    expected, got = field_params(whole), field_params(resumed)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key
    steps = [json.loads(x)["step"] for x in (resumed / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_a_run_with_compiled_mlps_trains_as_the_eager_one(tmp_path, tiny_sd_path, monkeypatch):
    """``render.compile_field`` through the trainer: the factory compiles the field's MLPs
    (traced by ``aot_eager`` here, where Inductor's CUDA code cannot run, and on the CPU, which
    the factory otherwise leaves eager), and shaded steps with a deferred backward, whose replay
    runs the compiled MLPs inside autograd's backward, train what the eager run trains."""
    from dreamtext import factory
    from dreamtext.field import NeRFField

    compile_mlps, compiled, calls = NeRFField.compile_mlps, [], []

    def counted(fn):
        return lambda x: calls.append((x.shape[0], torch.is_grad_enabled())) or fn(x)

    def traced(self, backend="inductor", **kwargs):
        compile_mlps(self, backend="aot_eager", **kwargs)
        self._compiled = {name: counted(fn) for name, fn in self._compiled.items()}
        compiled.append(self)

    monkeypatch.setattr(NeRFField, "compile_mlps", traced)
    monkeypatch.setattr(factory, "COMPILE_DEVICES", ("cuda", "cpu"))
    render = {**TINY_TRAIN["render"], "backprop": "deferred", "grad_chunk_points": 1024}
    render["compile_field"] = False  # "auto", the default, would compile here too
    common = {"iters": 3, "albedo_epochs": 0, "preview_every": 0}
    eager = train(tiny_config(tmp_path / "eager", tiny_sd_path, render=render, **common))
    assert compiled == []
    render["compile_field"] = True
    fast = train(tiny_config(tmp_path / "compiled", tiny_sd_path, render=render, **common))
    assert len(compiled) == 1 and compiled[0].compiled
    assert {grad for _, grad in calls} == {True, False}  # the replay's graph and the image's
    config = json.loads((fast / "config.json").read_text())
    assert config["render"]["compile_field"] is True and config["ran_on"]["field_compiled"] is True
    logs = [
        [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        for run in (eager, fast)
    ]
    assert {r["shading"] for r in logs[0]} - {"albedo"}  # normals ran
    assert all(r.get("backprop") == "deferred" for r in logs[1])
    for want, got in zip(*logs, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    expected, got = field_params(eager), field_params(fast)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-6, msg=key)


def test_a_stop_mid_backward_drops_the_step_and_the_resume_equals_an_uninterrupted_run(
    tmp_path, tiny_sd_path, monkeypatch
):
    """Ctrl-C / SIGTERM inside a step (here between the chunks of a deferred backward, after the
    SDS gradient) ends it there: no update, the checkpoint of the step before, the random states
    of that step, so a resume trains the run an unstopped one would. A stop was honoured only
    after the step, which a step too big to end never reached."""
    import signal

    from dreamtext.renderer import VolumeRenderer

    render = {**TINY_TRAIN["render"], "backprop": "deferred", "grad_chunk_points": 1024}
    chunked = {"render": render, "preview_every": 0}
    whole = train(tiny_config(tmp_path / "whole", tiny_sd_path, iters=4, **chunked))
    real_step, real_composite = trainer.train_step, VolumeRenderer.composite
    armed = []

    def step(run):
        if run.step == 2:
            armed.append(True)
        return real_step(run)

    def composite(self, *args, **kwargs):
        if armed and torch.is_grad_enabled():  # step 3's first chunk of the replay's backward
            armed.clear()
            signal.raise_signal(signal.SIGTERM)
        return real_composite(self, *args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", step)
    monkeypatch.setattr(VolumeRenderer, "composite", composite)
    cfg = tiny_config(tmp_path / "split", tiny_sd_path, iters=4, checkpoint_every=100, **chunked)
    with pytest.raises(TrainingInterrupted, match="interrupted after step 2; saved "):
        train(cfg)
    split = Path(cfg.workspace)
    assert load_checkpoint(split / "checkpoints" / "last.pt")["step"] == 2
    assert json.loads((split / "status.json").read_text())["state"] == "interrupted"
    monkeypatch.setattr(trainer, "train_step", real_step)
    monkeypatch.setattr(VolumeRenderer, "composite", real_composite)
    resumed = train(tiny_config(tmp_path / "split", tiny_sd_path, iters=4, **chunked), resume=True)
    expected, got = field_params(whole), field_params(resumed)
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def assert_interrupted_at(workspace: Path, step: int) -> None:
    """The run in ``workspace`` was interrupted with its checkpoint at ``step``, and its
    status.json says so at that step."""
    status = json.loads((workspace / "status.json").read_text())
    assert load_checkpoint(workspace / "checkpoints" / "last.pt")["step"] == step
    assert (status["state"], status["step"]) == ("interrupted", step)


def test_a_second_ctrl_c_leaves_status_json_at_the_step_of_the_saved_checkpoint(
    tmp_path, monkeypatch
):
    """A second Ctrl-C interrupts at once, before the checkpoint of the step it cut: status.json
    said "interrupted" at step 3, its last.pt at step 2, which the resume goes on from. It records
    the step of the checkpoint on disk."""
    import signal

    # the first: stop after this step; the second: at once
    signal_after_step(monkeypatch, 3, signal.SIGINT, signal.SIGINT)
    cfg = tiny_config(tmp_path, "builtin:shapes", iters=6, checkpoint_every=2, preview_every=0)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    assert_interrupted_at(Path(cfg.workspace), 2)


def test_a_run_typed_again_from_its_config_json_trains_the_same_field(tmp_path, tiny_sd_path):
    """``--config RUN/config.json`` refused the file every run writes: its records of what ran
    (``encoding_backend``, ``ran_on``) were taken for unknown fields."""
    first = train(tiny_config(tmp_path / "first", tiny_sd_path, iters=3))
    again = resolve_config(
        {"prompt": "a red sphere", "workspace": str(tmp_path / "again")},
        config_file=first / "config.json",
    )
    rerun = train(again)
    expected, got = field_params(first), field_params(rerun)
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key

    def losses(workspace):
        lines = (workspace / "log.jsonl").read_text().splitlines()
        return [(r["step"], r["loss"], r["t"]) for r in map(json.loads, lines)]

    assert losses(rerun) == losses(first)


def test_config_json_records_each_resume_and_the_settings_it_changed(tmp_path, tiny_sd_path):
    """``--resume --lr 5e-4`` rewrote config.json with the new lr alone: nothing said that the
    steps before the resume trained with another, so a rerun from config.json was another run."""
    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=2, lr=0.01))
    assert json.loads((workspace / "config.json").read_text())["resumes"] == []
    train(tiny_config(tmp_path, tiny_sd_path, iters=4, lr=0.002), resume=True)
    train(tiny_config(tmp_path, tiny_sd_path, iters=5, lr=0.002), resume=True)
    config = json.loads((workspace / "config.json").read_text())
    assert config["lr"] == 0.002
    assert [{k: r[k] for k in ("step", "changed")} for r in config["resumes"]] == [
        {"step": 2, "changed": {"iters": [2, 4], "lr": [0.01, 0.002]}},
        {"step": 4, "changed": {"iters": [4, 5]}},
    ]
    # A record, not a setting: the file resumes and reruns as before (--config RUN/config.json).
    again = resolve_config(
        {"workspace": str(tmp_path / "again")}, config_file=workspace / "config.json"
    )
    assert again.lr == 0.002
    # A new run in the folder starts with no resumes of the one it replaces.
    train(tiny_config(tmp_path, tiny_sd_path, iters=1), overwrite=True)
    assert json.loads((workspace / "config.json").read_text())["resumes"] == []


def test_each_resume_keeps_what_the_attempt_before_it_ran_on(tmp_path, tiny_sd_path, monkeypatch):
    """config.json's ``ran_on`` was the latest attempt's alone: a run trained on one machine and
    resumed on another said nothing of the first, whose steps the checkpoint holds."""
    hosts = iter(["gpu-node-1", "gpu-node-2", "laptop"])
    monkeypatch.setattr(trainer, "ran_on", lambda run: {"host": next(hosts)})
    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=2))
    train(tiny_config(tmp_path, tiny_sd_path, iters=3), resume=True)
    train(tiny_config(tmp_path, tiny_sd_path, iters=4), resume=True)
    config = json.loads((workspace / "config.json").read_text())
    assert config["ran_on"] == {"host": "laptop"}  # steps 3 to 4
    assert [(r["step"], r["ran_on_before"]) for r in config["resumes"]] == [
        (2, {"host": "gpu-node-1"}),  # steps 0 to 2
        (3, {"host": "gpu-node-2"}),  # steps 2 to 3
    ]
    # A record, not a setting: a rerun from the file takes none of it.
    rerun = {"workspace": str(tmp_path / "b")}
    again = resolve_config(rerun, config_file=workspace / "config.json")
    assert again.iters == 4


def test_sigterm_saves_a_checkpoint_of_the_last_finished_step(tmp_path, tiny_sd_path, monkeypatch):
    import signal

    signal_after_step(monkeypatch, 2, signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as stop:
        train(tiny_config(tmp_path, tiny_sd_path, iters=5, checkpoint_every=100))
    assert stop.value.step == 2
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2


def test_workspace_of_another_prompt_is_refused_without_resume(tmp_path, tiny_sd_path):
    train(tiny_config(tmp_path, tiny_sd_path, iters=1))
    with pytest.raises(DreamtextError, match=r"holds a run of 'a red sphere'.*--resume"):
        train(tiny_config(tmp_path, tiny_sd_path, iters=1, prompt="a blue cube"))


def test_an_overwrite_removes_the_old_checkpoints_before_writing_its_config(
    tmp_path, tiny_sd_path, monkeypatch
):
    """A process killed between the new config.json and the removal left the old checkpoints
    beside the new settings: --resume then continued the old run under them."""
    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=4))

    def killed(run):
        raise KeyboardInterrupt  # the moment the new config.json would be written

    monkeypatch.setattr(trainer, "write_config", killed)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(tmp_path, tiny_sd_path, iters=2, lr=0.5), overwrite=True)
    assert not list((workspace / "checkpoints").glob("*.pt"))
    assert json.loads((workspace / "config.json").read_text())["lr"] != 0.5


def test_a_new_run_of_the_same_prompt_needs_overwrite_and_then_replaces_the_old_one(
    tmp_path, tiny_sd_path
):
    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=4, preview_every=1))
    (workspace / "mesh").mkdir()
    (workspace / "mesh" / "mesh.glb").write_bytes(b"the old run's mesh")
    (workspace / "video").mkdir()
    (workspace / "video" / "turntable.mp4").write_bytes(b"the old run's turntable")
    before = {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()}
    with pytest.raises(DreamtextError) as refused:
        train(tiny_config(tmp_path, tiny_sd_path, iters=2))
    message = str(refused.value)
    assert "already holds a run of this prompt, finished at step 4" in message
    for fix in ("--resume", "--overwrite", "--workspace"):
        assert fix in message
    assert {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()} == before

    train(tiny_config(tmp_path, tiny_sd_path, iters=2), overwrite=True)
    assert load_checkpoint(workspace / "checkpoints" / "last.pt")["step"] == 2
    assert sorted(p.name for p in (workspace / "checkpoints").glob("*.pt")) == ["last.pt"]
    records = [json.loads(line) for line in (workspace / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    # Nothing of the old run is left: its later previews, its mesh, its turntable.
    assert not (workspace / "previews" / "step_000004.png").exists()
    assert not (workspace / "mesh" / "mesh.glb").exists()
    assert not (workspace / "video" / "turntable.mp4").exists()


def test_an_overwrite_leaves_nothing_of_an_export_of_the_old_run_that_a_kill_cut_short(
    tmp_path, tiny_sd_path
):
    """An export killed mid-swap leaves its folders hidden in the run (export.write_all_atomically).
    --overwrite left them, and the new run's first export swapped them in: with --no-video the
    old run's turntable stayed beside the new mesh. A user's own file in them is kept."""
    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=2))
    old_mesh = workspace / ".export-old-mesh"  # cut between mesh/'s two renames
    old_mesh.mkdir()
    (old_mesh / "mesh.glb").write_bytes(b"the old run's mesh")
    (old_mesh / "notes.txt").write_text("mine")
    ready = workspace / ".export-ready-k1ll3d00"  # written whole, not swapped in yet
    (ready / "video").mkdir(parents=True)
    (ready / "video" / "turntable.mp4").write_bytes(b"the old run's turntable")
    (ready / ".record.json").write_text(json.dumps({"folders": ["video"]}))

    train(tiny_config(tmp_path, tiny_sd_path, iters=1), overwrite=True)
    assert not list(workspace.glob(".export-*"))
    assert not (workspace / "mesh" / "mesh.glb").exists()
    assert not (workspace / "video" / "turntable.mp4").exists()
    assert (workspace / "mesh" / "notes.txt").read_text() == "mine"


def test_a_run_keeps_its_id_through_resumes_and_an_overwrite_draws_a_new_one(
    tmp_path, tiny_sd_path
):
    """The id in a run's checkpoints is how an export tells the run it read from a new run of
    the folder (export.export_workspace)."""
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    train(tiny_config(tmp_path, tiny_sd_path, iters=2))
    first = checkpoint_run(last)
    assert re.fullmatch("[0-9a-f]{16}", first)
    train(tiny_config(tmp_path, tiny_sd_path, iters=3), resume=True)
    assert checkpoint_run(last) == first
    train(tiny_config(tmp_path, tiny_sd_path, iters=1), overwrite=True)
    assert checkpoint_run(last) not in (first, None)


def test_a_new_run_clears_the_old_one_under_the_lock_an_export_swaps_under(tmp_path, monkeypatch):
    """An export checks that its run is still in the folder and swaps its files in under the
    folder's lock (export.write_all_atomically). The clearing by a new run took that lock only
    to finish earlier swaps and removed the old run's files after releasing it: an export could
    check, find the old checkpoint, and swap its files in between two of the removals."""
    workspace = tmp_path / "run"
    for name in ("checkpoints/last.pt", "previews/step_000001.png", "mesh/mesh.glb"):
        (workspace / name).parent.mkdir(parents=True, exist_ok=True)
        (workspace / name).write_bytes(b"of the old run")
    locked_at_removal = []
    unlink = Path.unlink

    def recording_unlink(path, *args, **kwargs):
        fd = os.open(workspace, os.O_RDONLY)  # another holder's try, as an export's
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked_at_removal.append(False)
        except BlockingIOError:
            locked_at_removal.append(True)
        finally:
            os.close(fd)
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", recording_unlink)
    trainer.remove_earlier_run(workspace)
    assert not (workspace / "checkpoints" / "last.pt").exists()
    assert len(locked_at_removal) >= 3 and all(locked_at_removal)


def test_the_refusal_names_the_step_resume_continues_from(tmp_path, tiny_sd_path):
    """A run killed without warning (SIGKILL) logged steps after its last checkpoint: its
    status.json says `running` at a later step than the checkpoint --resume continues from."""
    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=2))
    status = json.loads((workspace / "status.json").read_text())
    status.update(state="running", step=5)
    (workspace / "status.json").write_text(json.dumps(status))
    with pytest.raises(DreamtextError, match="a run of this prompt, finished at step 2 with"):
        train(tiny_config(tmp_path, tiny_sd_path, iters=6))


def test_a_run_that_stopped_before_its_first_checkpoint_starts_again(tmp_path, tiny_sd_path):
    workspace = tmp_path / "run"
    workspace.mkdir()
    (workspace / "config.json").write_text(json.dumps({"prompt": "a red sphere"}))
    train(tiny_config(tmp_path, tiny_sd_path, iters=1))
    assert load_checkpoint(workspace / "checkpoints" / "last.pt")["step"] == 1


def test_resume_without_a_checkpoint_is_a_user_error(tmp_path, tiny_sd_path):
    with pytest.raises(DreamtextError, match="nothing to resume"):
        train(tiny_config(tmp_path, tiny_sd_path, iters=2), resume=True)


def test_shading_is_albedo_for_the_first_ten_epochs_then_mixed():
    cfg = resolve_config({"prompt": "x"})
    rng = torch.Generator().manual_seed(0)
    assert {shading_for_step(s, cfg, rng) for s in range(1, 1001)} == {"albedo"}
    later = [shading_for_step(1001, cfg, rng) for _ in range(4000)]
    fractions = {name: later.count(name) / len(later) for name in set(later)}
    assert abs(fractions["albedo"] - 0.2) < 0.03
    assert abs(fractions["textureless"] - 0.4) < 0.03
    assert abs(fractions["lambertian"] - 0.4) < 0.03


def test_default_light_is_standard_gaussian_noise_around_the_camera():
    """Ch. 6.1.4: the light is Gaussian noise around the ray origin; the thesis's code drew it as
    ``rays_o[0] + torch.randn(3)``, i.e. a standard normal (std 1) about the camera."""
    rng = torch.Generator().manual_seed(0)
    poses = sample_poses(20000, generator=torch.Generator().manual_seed(1))
    offsets = light_positions(poses, TrainConfig().light_jitter, rng) - poses.eye
    assert offsets.mean(dim=0).abs().max() < 0.03
    assert torch.allclose(offsets.std(dim=0), torch.ones(3), atol=0.03)


def test_a_workspace_reloads_with_its_own_render_settings_and_occupancy_grid(
    tmp_path, tiny_sd_path
):
    from dreamtext.checkpoint import load_run
    from dreamtext.trainer import build_run

    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=4))
    field, renderer, config = load_run(workspace)
    assert renderer.cfg.num_steps == 16 and renderer.cfg.grid_resolution == 16
    trained = build_run(tiny_config(tmp_path, tiny_sd_path, iters=4), resume=True).renderer
    assert torch.equal(renderer.grid.density, trained.grid.density)
    assert renderer.grid.occupied.float().mean() < 1.0  # trained: some space found empty
    assert config["prompt"] == "a red sphere" and not field.training


@pytest.mark.filterwarnings("ignore:for .*meta parameter")
def test_resume_onto_another_device_keeps_the_random_states_on_the_cpu(
    tmp_path, tiny_sd_path, monkeypatch
):
    """A CUDA resume: ``torch.set_rng_state`` and ``Generator.set_state`` take only CPU byte
    tensors, so a checkpoint mapped onto the run's device could not be restored. The meta
    device stands in for CUDA here (no data, but the same device checks); the optimiser's
    moments still end up beside their parameters."""
    from dreamtext import trainer
    from dreamtext.trainer import build_run

    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=2))
    saved = load_checkpoint(workspace / "checkpoints" / "last.pt")
    monkeypatch.setattr(trainer, "resolve_device", lambda name: torch.device("meta"))
    # The resume's check of the weights renders them, and meta tensors hold no values.
    monkeypatch.setattr(trainer, "weights_render_finite", lambda run: True)
    run = build_run(tiny_config(tmp_path, tiny_sd_path, iters=4), resume=True)
    assert run.step == 2 and run.field.encoding.params.device.type == "meta"
    assert torch.equal(run.cameras_rng.get_state(), saved["rng"]["cameras"])
    moments = [s["exp_avg"] for s in run.optimizer.state.values()]
    assert moments and all(m.device.type == "meta" for m in moments)


def test_a_cuda_resume_restores_the_runs_own_gpu_generator(monkeypatch):
    """Checkpoints keep the run's GPU's generator state; older ones kept one per visible GPU,
    and a resume that sees fewer GPUs (another ``CUDA_VISIBLE_DEVICES``) must not fail on
    them. ``torch.cuda`` is replaced by a recorder: no GPU here."""
    from dreamtext.trainer import restore_cuda_rng

    calls = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d: calls.append((int(s[0]), d)))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    states = [torch.full((4,), i, dtype=torch.uint8) for i in range(2)]
    gpu1, gpu = torch.device("cuda", 1), torch.device("cuda")
    restore_cuda_rng(states[1], gpu1)
    restore_cuda_rng(states, gpu1)  # an older checkpoint, GPU 1 still visible
    restore_cuda_rng(states[:1], gpu1)  # fewer GPUs visible now: nothing to restore
    restore_cuda_rng(states, gpu)  # "cuda": the current device's
    restore_cuda_rng(None, gpu)  # written by a CPU run
    restore_cuda_rng(states[1], torch.device("cpu"))
    assert calls == [(1, gpu1), (1, gpu1), (0, gpu)]


def test_resume_drops_log_records_written_after_the_last_checkpoint(tmp_path, tiny_sd_path):
    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=2))
    with (workspace / "log.jsonl").open("a") as log:  # as if killed at step 3, before a checkpoint
        log.write(json.dumps({"step": 3, "loss": 1.0}) + "\n")
    train(tiny_config(tmp_path, tiny_sd_path, iters=4), resume=True)
    steps = [json.loads(x)["step"] for x in (workspace / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


@pytest.mark.parametrize("tail", ['{"step": 3, "lo', "\0" * 40], ids=["torn", "nul"])
def test_resume_drops_a_torn_last_log_line(tmp_path, tiny_sd_path, tail):
    """A node that died mid-write (power loss, a full disk) can leave half a line or NUL bytes."""
    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=2))
    with (workspace / "log.jsonl").open("a") as log:
        log.write(tail)
    train(tiny_config(tmp_path, tiny_sd_path, iters=3), resume=True)
    steps = [json.loads(x)["step"] for x in (workspace / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_a_log_line_that_does_not_fit_is_the_error_reported_and_leaves_no_torn_line(
    tmp_path, tiny_sd_path, monkeypatch
):
    """The file-size limit (as a full disk) stops a log.jsonl write midway: the buffered rest
    made the file's closing fail again, and that nameless error replaced the first."""
    cfg = tiny_config(tmp_path, tiny_sd_path, iters=8, checkpoint_every=100, preview_every=0)
    log_path = Path(cfg.workspace) / "log.jsonl"
    real_step = trainer.train_step
    limit = contextlib.ExitStack()

    def step_then_fill_the_disk(run):
        record = real_step(run)
        if run.step == 4:  # its line fits only in part
            limit.enter_context(files_limited_to(log_path.stat().st_size + 100))
        return record

    monkeypatch.setattr(trainer, "train_step", step_then_fill_the_disk)
    with limit, pytest.raises(OSError) as raised:
        train(cfg)
    assert (raised.value.errno, raised.value.filename) == (errno.EFBIG, str(log_path))
    lines = log_path.read_bytes().decode().splitlines(keepends=True)
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]  # step 4 did not fit
    assert lines[-1].endswith("\n")


def test_a_bar_written_to_a_file_is_drawn_a_few_times_not_twice_a_step(
    tmp_path, tiny_sd_path, monkeypatch, capsys
):
    """stderr to a file (a SLURM log): tqdm drew the bar at every step and again for its
    postfix, ~2 MB per 10,000 steps."""
    monkeypatch.delenv("DREAMTEXT_PROGRESS_SECONDS", raising=False)
    train(tiny_config(tmp_path, tiny_sd_path, iters=30, preview_every=0, checkpoint_every=100))
    draws = [d for d in capsys.readouterr().err.replace("\n", "\r").split("\r") if "text→3D" in d]
    assert 1 <= len(draws) <= 3  # the last (no line at the start), and one every 30 s
    assert "30/30" in draws[-1] and "loss=" in draws[-1]


# torch's CPU allocator's own words (c10 alloc_cpu.cpp), as a ulimit -v or a full RAM gives them.
CPU_OUT_OF_MEMORY = (
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
    "you tried to allocate 1048576 bytes. Error code 12 (Cannot allocate memory)"
)


@pytest.mark.parametrize(
    ("error", "fixes", "absent"),
    [
        (
            lambda: torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB"),
            ["out of GPU memory after step 2", "--h/--w", "--fp16", "--resume"],
            ["--batch-size"],
        ),
        (
            lambda: RuntimeError(CPU_OUT_OF_MEMORY),
            ["out of memory after step 2", "--h/--w", "--resume", "programs"],
            ["GPU", "--fp16", "--batch-size"],  # a batch of 1 has no smaller one
        ),
        (lambda: MemoryError(), ["out of memory after step 2", "--resume"], ["GPU"]),
    ],
    ids=["gpu", "cpu-allocator", "memory-error"],
)
def test_out_of_memory_saves_the_last_step_and_names_the_fixes(
    tmp_path, tiny_sd_path, monkeypatch, error, fixes, absent
):
    raise_at_step(monkeypatch, 2, error())
    with pytest.raises(DreamtextError) as raised:
        train(tiny_config(tmp_path, tiny_sd_path, iters=5))
    message = str(raised.value)
    assert "\n" not in message
    for fix in fixes:
        assert fix in message
    for fix in absent:
        assert fix not in message
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2


@pytest.mark.parametrize("loss_scaling", [False, True])
def test_nan_gradients_skip_the_update_and_a_run_that_keeps_them_stops(
    tmp_path, tiny_sd_path, monkeypatch, loss_scaling
):
    """From step 3 on every step backpropagates NaN: no update may reach the field (Adam would
    make it NaN for good), and once most steps of the window skip, the run stops with one line
    and a checkpoint, instead of training on for hours. In fp16 the loss scaler is the one that
    skips (and halves its scale)."""
    from dreamtext import trainer
    from dreamtext.guidance import ScoreDistillation

    two = train(tiny_config(tmp_path / "two", tiny_sd_path, iters=2))
    real = ScoreDistillation.sds_loss
    calls = []

    def nan_from_step_3(self, *args, **kwargs):
        loss, info = real(self, *args, **kwargs)
        calls.append(1)
        return (loss * math.nan if len(calls) >= 3 else loss), info

    monkeypatch.setattr(ScoreDistillation, "sds_loss", nan_from_step_3)
    if loss_scaling:
        scaler = lambda dtype, device: torch.amp.GradScaler("cpu", enabled=True)  # noqa: E731
        monkeypatch.setattr(trainer, "fp16_loss_scaler", scaler)
    monkeypatch.setattr(trainer, "DIVERGED_AFTER", 3)
    monkeypatch.setattr(trainer, "DIVERGENCE_WINDOW", 4)
    with pytest.raises(DreamtextError) as error:
        train(tiny_config(tmp_path / "nan", tiny_sd_path, iters=20))
    message = str(error.value)
    assert "\n" not in message
    for part in ("diverged", "in 3 of the 4 steps up to step 5", "--lr", "--resume"):
        assert part in message
    workspace = tmp_path / "nan" / "run"
    state = load_checkpoint(workspace / "checkpoints" / "last.pt")
    assert state["step"] == 5 and state["skipped_updates"] == 3
    for name, value in field_params(two).items():  # steps 3-5 left the field as step 2 did
        assert torch.equal(state["field"][name], value), name
    records = [json.loads(line) for line in (workspace / "log.jsonl").read_text().splitlines()]
    assert [r.get("update_skipped", False) for r in records] == [False, False, True, True, True]
    status = json.loads((workspace / "status.json").read_text())
    assert status["state"] == "failed" and status["error"] == message


def diverged_message(monkeypatch, cfg: TrainConfig) -> str:
    """The line of a run of ``cfg`` stopped as diverged, which it must be, after 3 of 4 steps
    that learned nothing (the window made small: ``DIVERGED_AFTER``, ``DIVERGENCE_WINDOW``)."""
    from dreamtext import trainer

    monkeypatch.setattr(trainer, "DIVERGED_AFTER", 3)
    monkeypatch.setattr(trainer, "DIVERGENCE_WINDOW", 4)
    with pytest.raises(DreamtextError) as error:
        train(cfg)
    return str(error.value)


def test_a_run_whose_guidance_is_never_finite_stops_instead_of_finishing_untrained(
    tmp_path, tiny_sd_path, monkeypatch
):
    """``--guidance 1e308`` (or a model whose fp16 noise prediction overflows) makes every ε̂
    infinite: the guidance skips each step with a zero loss. Those steps were not counted as
    diverged, so such a run finished "trained", exit 0, with the field it started from (the
    built-in prior at --guidance 1e308: "skipped 60 steps with non-finite guidance", state
    finished). It stops as a diverged run does, naming --guidance."""
    cfg = tiny_config(tmp_path, tiny_sd_path, iters=20)
    cfg.guidance.guidance_scale = 1e308  # ε_c + s (ε_c − ε_u) overflows to ±inf
    message = diverged_message(monkeypatch, cfg)
    assert "\n" not in message
    for part in ("diverged", "in 3 of the 3 steps up to step 3", "--guidance", "1e+308"):
        assert part in message, message
    assert "--lr" not in message
    workspace = tmp_path / "run"
    assert load_checkpoint(workspace / "checkpoints" / "last.pt")["step"] == 3
    status = json.loads((workspace / "status.json").read_text())
    assert status["state"] == "failed" and status["error"] == message


def test_a_run_whose_sds_loss_overflows_stops_naming_the_guidance_not_the_lr(
    tmp_path, tiny_sd_path, monkeypatch
):
    """At --guidance 1e38 the tiny model's ε̂ stays finite but ½ Σ w² (ε̂ − ε)² overflows and the
    gradients through the VAE are NaN: the run stopped saying "a smaller --lr (this run's is
    0.001)", the default, where the fix is a smaller --guidance."""
    cfg = tiny_config(tmp_path, tiny_sd_path, iters=20)
    cfg.guidance.guidance_scale = 1e38
    message = diverged_message(monkeypatch, cfg)
    for part in ("diverged", "SDS loss", "in 3 of the 3 steps up to step 3", "--guidance", "1e+38"):
        assert part in message, message
    assert "--lr" not in message, message


def test_a_diverged_runs_line_counts_each_cause_apart(tmp_path, tiny_sd_path, monkeypatch):
    """Steps whose ε̂ was not finite and steps whose gradients were not were all put on the
    larger cause: the built-in prior at --guidance 3e38 said ε̂ was NaN or infinite "in 50 of
    the 50 steps up to step 50", where its log and end line counted 40 of them and 10 of the
    gradients. Here steps 1-2 have no finite ε̂ and step 3 NaN gradients."""
    from dreamtext import trainer
    from dreamtext.guidance import ScoreDistillation

    real, calls = ScoreDistillation.sds_loss, []

    def eps_twice_then_gradients(self, *args, **kwargs):
        loss, info = real(self, *args, **kwargs)
        calls.append(1)
        if len(calls) % 3 == 0:
            return loss * math.nan, info
        info["skipped"] = torch.ones(())
        return loss * 0, info

    monkeypatch.setattr(ScoreDistillation, "sds_loss", eps_twice_then_gradients)
    monkeypatch.setattr(trainer, "DIVERGED_AFTER", 3)
    monkeypatch.setattr(trainer, "DIVERGENCE_WINDOW", 4)
    with pytest.raises(DreamtextError) as error:
        train(tiny_config(tmp_path, tiny_sd_path, iters=20))
    message = str(error.value)
    assert "in 2 of the 3 steps up to step 3, and the gradients in 1 more" in message, message
    assert "--guidance" in message


def renders_nan_from(monkeypatch, first: int, one_pixel: bool = False) -> None:
    """Make every training render from the ``first``-th on NaN, as a field whose weights
    overflowed float32 renders (with ``one_pixel``, only its first pixel's red)."""
    from dreamtext.renderer import VolumeRenderer

    real, calls = VolumeRenderer.render_train, []

    def nan_from_first(self, *args, **kwargs):
        render = real(self, *args, **kwargs)
        calls.append(1)
        if len(calls) >= first:
            rgb = render.outputs["rgb"]
            nan = torch.full_like(rgb, math.nan)
            if one_pixel:
                nan = torch.zeros_like(rgb).flatten().index_fill(0, torch.tensor([0]), math.nan)
            render.outputs["rgb"] = rgb + nan.view_as(rgb)
        return render

    monkeypatch.setattr(VolumeRenderer, "render_train", nan_from_first)


def test_a_run_whose_field_renders_nan_stops_naming_the_lr_not_the_guidance(
    tmp_path, tiny_sd_path, monkeypatch
):
    """A field whose MLP overflowed float32 (the built-in prior at --lr 1e8) renders NaN, which
    makes ε̂ NaN too: the run stopped saying "a smaller --guidance (this run's is 4)", a fix
    that changes nothing. Its renders are counted apart, and the line names --lr."""
    renders_nan_from(monkeypatch, 2)
    cfg = tiny_config(tmp_path, tiny_sd_path, iters=20)
    message = diverged_message(monkeypatch, cfg)
    assert "\n" not in message
    for part in ("diverged", "rendered NaN", "in 3 of the 4 steps up to step 4", "--lr"):
        assert part in message, message
    assert "--guidance" not in message and "continue with" not in message, message
    assert "nothing saved" in message, message  # the weights of step 1 on overflowed
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and status["error"] == message


def diverged_line(monkeypatch, tmp_path: Path, tiny_sd_path, nan_from: int) -> str:
    """The line of a 20-step run (``checkpoint_every: 2``) whose renders are NaN from step
    ``nan_from`` on, stopped as diverged after 3 of 4 such steps."""
    renders_nan_from(monkeypatch, nan_from)
    cfg = tiny_config(tmp_path, tiny_sd_path, iters=20, checkpoint_every=2)
    return diverged_message(monkeypatch, cfg)


def test_a_run_whose_field_renders_nan_keeps_its_last_checkpoint_of_finite_weights(
    tmp_path, tiny_sd_path, monkeypatch
):
    """A field whose weights overflowed (``--resume --lr 1e8`` of a run saved at step 20)
    renders NaN from then on: its checkpoints (every ``checkpoint_every`` steps, and the one the
    diverged run saved) replaced the last.pt of finite weights, which a resume with a smaller
    --lr goes on from, and pruned it (``checkpoint_every: 5``: last.pt, step_000065.pt and
    step_000070.pt all rendered NaN, and a resume at --lr 1e-3 diverged again). They are not
    saved: last.pt stays the checkpoint from before, and the line says so. Here the renders are
    NaN from step 4, so the weights of step 3 on are the overflowed ones."""
    message = diverged_line(monkeypatch, tmp_path, tiny_sd_path, nan_from=4)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    for part in ("in 3 of the 4 steps up to step 6", "overflowed float32 in step 3", str(last)):
        assert part in message, message
    assert "stays the checkpoint of step 2" in message and "--resume" in message, message
    assert load_checkpoint(last)["step"] == 2
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and status["error"] == message


def test_a_render_with_one_nan_pixel_is_the_fields_fault_not_the_guidances(
    tmp_path, tiny_sd_path, monkeypatch
):
    """One NaN pixel makes ε̂ NaN through the encoder: a render is the field's fault as soon as
    any of its pixels is NaN or infinite, and the line names --lr, not --guidance."""
    from dreamtext import trainer

    renders_nan_from(monkeypatch, 2, one_pixel=True)
    monkeypatch.setattr(trainer, "DIVERGED_AFTER", 3)
    monkeypatch.setattr(trainer, "DIVERGENCE_WINDOW", 4)
    with pytest.raises(DreamtextError) as error:
        train(tiny_config(tmp_path, tiny_sd_path, iters=20))
    message = str(error.value)
    for part in ("rendered NaN", "in 3 of the 4 steps up to step 4", "--lr"):
        assert part in message, message
    assert "--guidance" not in message, message


def test_a_nan_render_line_counts_the_steps_of_other_causes_apart(
    tmp_path, tiny_sd_path, monkeypatch
):
    """Step 1's ε̂ is not finite, steps 2-3 render NaN: the line blames the field (2 of the 3
    steps) and names the other step too, as the line of ε̂ and gradients does."""
    from dreamtext import trainer
    from dreamtext.guidance import ScoreDistillation

    real, calls = ScoreDistillation.sds_loss, []

    def first_unguided(self, *args, **kwargs):
        loss, info = real(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            info["skipped"] = torch.ones(())
            return loss * 0, info
        return loss, info

    monkeypatch.setattr(ScoreDistillation, "sds_loss", first_unguided)
    renders_nan_from(monkeypatch, 2)
    monkeypatch.setattr(trainer, "DIVERGED_AFTER", 3)
    monkeypatch.setattr(trainer, "DIVERGENCE_WINDOW", 4)
    with pytest.raises(DreamtextError) as error:
        train(tiny_config(tmp_path, tiny_sd_path, iters=20))
    message = str(error.value)
    expected = "in 2 of the 3 steps up to step 3, and ε̂ or the gradients in 1 more"
    assert expected in message and "nothing saved" in message, message


def test_a_checkpoint_of_the_step_before_the_first_nan_render_is_not_kept_as_finite(
    tmp_path, tiny_sd_path, monkeypatch
):
    """The checkpoint of step 2 holds the weights that render NaN from step 3 on: the update of
    step 2 overflowed them. The line may not call it "the checkpoint from before" to continue
    from, as a resume from it diverges again; it says to start again, and the step it stopped
    at is not saved either: its weights overflowed too."""
    message = diverged_line(monkeypatch, tmp_path, tiny_sd_path, nan_from=3)
    for part in ("in 3 of the 4 steps up to step 5", "holds overflowed weights too", "--overwrite"):
        assert part in message, message
    assert "stays the checkpoint" not in message and "continue from it" not in message, message
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2


def test_a_checkpoint_due_at_a_nan_render_is_saved_at_the_next_finite_step(
    tmp_path, tiny_sd_path, monkeypatch
):
    """A checkpoint due at a step that rendered NaN is not saved then (its weights may have
    overflowed), but at the next step that renders finite, and only then: here step 4 of
    ``checkpoint_every: 4`` renders NaN, step 5 is saved instead, and step 8 as due."""
    from dreamtext.renderer import VolumeRenderer

    real, calls = VolumeRenderer.render_train, []

    def nan_at_step_4(self, *args, **kwargs):
        render = real(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 4:
            render.outputs["rgb"] = render.outputs["rgb"] * math.nan
        return render

    monkeypatch.setattr(VolumeRenderer, "render_train", nan_at_step_4)
    cfg = tiny_config(tmp_path, tiny_sd_path, iters=8, checkpoint_every=4, keep_checkpoints=3)
    workspace = train(cfg)
    steps = {p.name: load_checkpoint(p)["step"] for p in (workspace / "checkpoints").glob("*.pt")}
    assert steps == {"last.pt": 8, "step_000005.pt": 5}


def renders_finite(path: Path) -> bool:
    """Whether the field a checkpoint holds has finite weights and renders finite pixels."""
    from dreamtext.cameras import orbit_poses
    from dreamtext.checkpoint import run_from_state

    field, renderer, _ = run_from_state(load_checkpoint(path))
    with torch.no_grad():
        rgb = renderer.render(field, orbit_poses(1, polar=70.0), 8, 8, perturb=False)["rgb"]
    weights = [value for value in field.state_dict().values() if value.is_floating_point()]
    return bool(torch.isfinite(rgb).all()) and all(torch.isfinite(w).all() for w in weights)


def test_weights_that_overflow_in_a_checkpoint_step_are_not_saved(
    tmp_path, tiny_sd_path, monkeypatch
):
    """The weights overflow in step 4's update, a ``checkpoint_every`` step; the field renders
    NaN only from step 5 on. They were saved as last.pt at step 4 (nothing yet said they were
    bad) and pruned the checkpoint of step 2 (``--resume --lr 1e8`` of the built-in prior with
    ``checkpoint_every: 1``, ``keep_checkpoints: 1``: last.pt of step 56 rendered NaN at every
    pixel, its weights finite, |θ| up to 1e9). The save checks the weights it would write."""
    weights_overflow_in_step(monkeypatch, 4)
    cfg = tiny_config(tmp_path, tiny_sd_path, iters=20, checkpoint_every=2, keep_checkpoints=1)
    message = diverged_message(monkeypatch, cfg)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert "overflowed float32 in step 4" in message, message
    assert f"{last} stays the checkpoint of step 2" in message and "--resume" in message, message
    assert load_checkpoint(last)["step"] == 2 and renders_finite(last)


def test_a_stop_while_the_field_renders_nan_keeps_the_checkpoint_from_before(
    tmp_path, tiny_sd_path, monkeypatch
):
    """Ctrl-C (SIGTERM, SIGHUP) after step 5, whose weights overflowed in step 3: the stop saved
    them as last.pt over the checkpoint of step 2 and said to continue from them with
    --resume. Not saved: the line names the checkpoint kept and a smaller --lr."""
    import signal

    weights_overflow_in_step(monkeypatch, 3)
    signal_after_step(monkeypatch, 5, signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as stop:
        train(tiny_config(tmp_path, tiny_sd_path, iters=20))
    message = str(stop.value)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert message.startswith("interrupted after step 5; not saved"), message
    assert "overflowed float32 in step 3" in message, message
    assert f"{last} stays the checkpoint of step 2" in message, message
    assert "--resume and a smaller --lr (this run's is 0.001)" in message, message
    assert stop.value.checkpoint is None
    assert load_checkpoint(last)["step"] == 2 and renders_finite(last)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "interrupted" and status["step"] == 2


def test_a_stop_of_a_field_that_overflowed_before_its_first_checkpoint_saves_nothing(
    tmp_path, tiny_sd_path, monkeypatch
):
    """Weights that overflowed in step 1, stopped after step 3: nothing good was saved, so the
    line says to start again, not to --resume."""
    import signal

    weights_overflow_in_step(monkeypatch, 1)
    signal_after_step(monkeypatch, 3, signal.SIGTERM)
    with pytest.raises(TrainingInterrupted) as stop:
        train(tiny_config(tmp_path, tiny_sd_path, iters=20))
    message = str(stop.value)
    assert "nothing saved" in message and "start again with a smaller --lr" in message, message
    assert "--resume" not in message, message
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_out_of_memory_while_the_field_renders_nan_keeps_the_checkpoint_from_before(
    tmp_path, tiny_sd_path, monkeypatch
):
    """Out of memory in step 5, the weights overflowed in step 3: the line saved step 4's
    weights, which render NaN, and said to --resume from them."""
    weights_overflow_in_step(monkeypatch, 3)
    raise_at_step(monkeypatch, 4, MemoryError())
    with pytest.raises(DreamtextError) as error:
        train(tiny_config(tmp_path, tiny_sd_path, iters=20))
    message = str(error.value)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert "out of memory after step 4" in message and "not saved" in message, message
    assert f"{last} stays the checkpoint of step 2" in message, message
    assert "a smaller --lr" in message and "--h/--w" in message, message
    assert load_checkpoint(last)["step"] == 2 and renders_finite(last)


def test_a_run_that_ends_with_overflowed_weights_fails_and_keeps_the_checkpoint_from_before(
    tmp_path, tiny_sd_path, monkeypatch
):
    """Weights that overflowed in step 5 of 6, too few steps to count as diverged: the run
    ended "trained", saved them as last.pt and exported a field that renders NaN. It fails
    with one line, keeping the checkpoint of step 4."""
    weights_overflow_in_step(monkeypatch, 5)
    with pytest.raises(DreamtextError) as error:
        train(tiny_config(tmp_path, tiny_sd_path, iters=6))
    message = str(error.value)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert "overflowed float32 in step 5" in message, message
    assert f"{last} stays the checkpoint of step 4" in message, message
    assert load_checkpoint(last)["step"] == 4 and renders_finite(last)
    assert not (tmp_path / "run" / "previews" / "final.png").exists()
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "failed" and status["error"] == message


def test_weights_with_a_nan_may_not_be_saved_whatever_the_check_renders(tmp_path, tiny_sd_path):
    """The save's check renders a few rays, which need not reach a hash-table entry that is
    NaN: the weights themselves are checked too."""
    run = trainer.build_run(tiny_config(tmp_path, tiny_sd_path, iters=2))
    assert trainer.weights_render_finite(run)
    with torch.no_grad():
        run.field.encoding.params[-1] = math.nan
    assert not trainer.weights_render_finite(run)


def overflow_last_checkpoint(workspace: Path) -> None:
    """Make ``workspace``'s last.pt hold weights that overflowed, as a dreamtext from before
    every save checked them saved them (or a copy brought in): each weight times 1e30, finite,
    while the field's MLP overflows float32 and renders NaN (``weights_overflow_in_step``)."""
    from dreamtext.checkpoint import save_checkpoint

    state = load_checkpoint(workspace / "checkpoints" / "last.pt")
    with torch.no_grad():
        for value in state["field"].values():
            if value.is_floating_point():
                value.mul_(1e30)
    save_checkpoint(workspace, state)


def test_a_resume_of_a_checkpoint_of_overflowed_weights_is_refused_naming_a_finite_one(
    tmp_path, tiny_sd_path, monkeypatch
):
    """A last.pt of weights that overflowed was resumed: 50 steps rendered NaN before the run
    stopped as diverged, saying the checkpoint "holds overflowed weights too". It is refused as
    it loads, before any step and with nothing changed, naming the step file of finite weights
    to copy over last.pt, which then resumes."""
    cfg = tiny_config(tmp_path, tiny_sd_path, iters=4, checkpoint_every=2)
    workspace = train(cfg)
    overflow_last_checkpoint(workspace)
    checkpoints = workspace / "checkpoints"
    last, earlier = checkpoints / "last.pt", checkpoints / "step_000002.pt"
    files = {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()}
    steps = []
    real_step = trainer.train_step
    monkeypatch.setattr(trainer, "train_step", lambda run: steps.append(run.step) or real_step(run))
    with pytest.raises(DreamtextError) as error:
        train(tiny_config(tmp_path, tiny_sd_path, iters=20, checkpoint_every=2), resume=True)
    message = str(error.value)
    assert "\n" not in message and steps == []
    for part in (
        f"cannot resume: {last} (step 4) holds weights that overflowed float32",
        f"{earlier} (step 2)",
        f"cp --remove-destination {earlier} {last}",
        "--resume and a smaller --lr (it trained at --lr 0.001)",
    ):
        assert part in message, message
    assert {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()} == files
    earlier.replace(last)  # as the cp it names
    train(tiny_config(tmp_path, tiny_sd_path, iters=3, checkpoint_every=2, lr=5e-4), resume=True)
    assert steps == [2] and renders_finite(last) and load_checkpoint(last)["step"] == 3


def test_a_resume_of_overflowed_weights_with_no_finite_checkpoint_says_to_start_again(
    tmp_path, tiny_sd_path
):
    """Where no step file holds finite weights (``keep_checkpoints: 1``), the line says to
    start again with --overwrite, not to resume."""
    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=2, keep_checkpoints=1))
    overflow_last_checkpoint(workspace)
    with pytest.raises(DreamtextError) as error:
        train(tiny_config(tmp_path, tiny_sd_path, iters=20), resume=True)
    message = str(error.value)
    assert "holds weights that overflowed float32" in message, message
    assert "no earlier checkpoint of the run renders finite pixels" in message, message
    assert "start again with --overwrite and a smaller --lr" in message, message
    assert "cp " not in message and "--resume" not in message, message


def test_a_resumed_run_diverges_at_the_step_the_uninterrupted_one_does(
    tmp_path, tiny_sd_path, monkeypatch
):
    """The divergence window goes on through a resume, as the random states do: a run stopped
    after 2 skipped steps and resumed started it empty, and trained 3 more skipped steps before
    stopping (at step 5, not 3; the built-in prior at --guidance 3e38, stopped at step 46:
    diverged at step 96, not 50). The checkpoint a diverged run saves starts it empty, so that
    its resume with a smaller --guidance is not stopped at its first step."""
    from dreamtext import trainer

    monkeypatch.setattr(trainer, "DIVERGED_AFTER", 3)
    monkeypatch.setattr(trainer, "DIVERGENCE_WINDOW", 4)

    def config(iters, guidance_scale=1e308):
        cfg = tiny_config(tmp_path, tiny_sd_path, iters=iters)
        cfg.guidance.guidance_scale = guidance_scale  # every ε̂ overflows
        return cfg

    train(config(2))  # two skipped steps: not yet diverged
    with pytest.raises(DreamtextError, match="in 3 of the 3 steps up to step 3"):
        train(config(20), resume=True)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert load_checkpoint(last)["step"] == 3
    train(config(6, guidance_scale=10.0), resume=True)  # the fix: it trains on to the end
    assert load_checkpoint(last)["step"] == 6


def test_an_export_too_big_for_the_memory_is_refused_before_the_training(
    tmp_path, tiny_sd_path, monkeypatch
):
    """The export that ends a run is checked against the memory before the run trains (it was
    checked only when the export began, after the training), naming the settings to change."""
    from dreamtext import export

    monkeypatch.setattr(export, "available_memory", lambda: 8 * 10**9)
    cfg = tiny_config(tmp_path, tiny_sd_path, iters=2, export=True)
    cfg.export_options.resolution = 1024  # about 34 GB
    with pytest.raises(DreamtextError) as error:
        train(cfg)
    message = str(error.value)
    for part in ("export_options.resolution 1024", "34.4 GB", "--config", "--no-export"):
        assert part in message
    assert not (tmp_path / "run").exists()
    cfg.export = False  # nothing to check without the export
    assert train(cfg) == tmp_path / "run"


@pytest.mark.parametrize("blocker", ["a folder named mesh.json", "a link to no folder"])
def test_an_export_folder_it_cannot_replace_is_refused_before_the_training(
    tmp_path, tiny_sd_path, blocker
):
    """A folder mesh/mesh.json (a user's notes) or a mesh/ that is a link to no folder, in a
    run resumed with its export on, was found by the export after the training: the run trained,
    its status "failed" in phase export (the link: a FileNotFoundError traceback)."""
    from dreamtext.runfiles import read_status

    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=2))
    if blocker == "a folder named mesh.json":
        (workspace / "mesh" / "mesh.json").mkdir(parents=True)
        line = f"{workspace / 'mesh' / 'mesh.json'} is a folder, not a file of an export"
    else:
        (workspace / "mesh").symlink_to(tmp_path / "gone")
        line = f"{workspace / 'mesh'} cannot be a folder: {workspace / 'mesh'} is a link to"
    cfg = tiny_config(tmp_path, tiny_sd_path, iters=4, export=True)
    cfg.export_options.video = False
    with pytest.raises(DreamtextError) as error:
        train(cfg, resume=True)
    assert str(error.value).startswith(line)
    assert load_checkpoint(workspace / "checkpoints" / "last.pt")["step"] == 2
    assert read_status(workspace)["state"] == "finished"
    cfg.export = False  # nothing to check without the export
    train(cfg, resume=True)
    assert load_checkpoint(workspace / "checkpoints" / "last.pt")["step"] == 4


@pytest.mark.parametrize(
    ("name", "resume"),
    [("log.jsonl", True), ("log.jsonl", False), ("previews/final.png", True)],
)
def test_a_folder_in_place_of_a_log_or_preview_is_refused_and_the_run_kept(
    tmp_path, tiny_sd_path, name, resume
):
    """A folder log.jsonl (a resume truncates and appends to it, a new run removes it) or
    previews/final.png (a resume removes it) was an IsADirectoryError traceback, status.json
    left "failed"."""
    from dreamtext.runfiles import read_status

    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=2))
    folder = workspace / name
    folder.unlink()
    folder.mkdir()
    with pytest.raises(DreamtextError) as error:
        train(tiny_config(tmp_path, tiny_sd_path, iters=4), resume=resume, overwrite=not resume)
    assert str(error.value) == (
        f"{folder} is a folder, not a run's file; move it out of {folder.parent} and run the "
        "command again"
    )
    assert load_checkpoint(workspace / "checkpoints" / "last.pt")["step"] == 2
    assert read_status(workspace)["state"] == "finished"


def test_log_records_say_how_the_render_was_backpropagated(tmp_path, tiny_sd_path):
    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=2))
    records = [json.loads(line) for line in (workspace / "log.jsonl").read_text().splitlines()]
    assert {r["backprop"] for r in records} <= {"direct", "deferred"}
    assert all(r["samples_per_ray"] > 0 for r in records)
    assert all("gpu_mem_mib" not in r for r in records)  # CPU run: no GPU memory to report


@pytest.mark.parametrize("backend", ["triton", "tcnn"])
def test_a_run_trained_on_a_cuda_backend_reloads_on_the_cpu(tmp_path, tiny_sd_path, backend):
    from dreamtext.checkpoint import load_run

    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=1))
    path = workspace / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    state["field_config"]["encoding"] = backend
    state["encoding_backend"] = backend
    torch.save(state, path)
    field, _, _ = load_run(workspace, "cpu")
    assert field.encoding_backend == "torch"
    torch.testing.assert_close(field.encoding.params.detach(), state["field"]["encoding.params"])


@pytest.mark.parametrize("backend", ["triton", "tcnn"])
def test_a_gpu_without_the_runs_backend_reloads_it_with_another(
    tmp_path, tiny_sd_path, backend, monkeypatch
):
    """``dreamtext export`` on a CUDA machine that lacks the backend the run trained with
    (tiny-cuda-nn not installed, Triton failing its self-check) takes ``auto``'s choice instead
    of failing. Here the CPU plays that machine: neither backend can be built on it."""
    from dreamtext import checkpoint
    from dreamtext.checkpoint import load_run

    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=1))
    path = workspace / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    state["field_config"]["encoding"] = backend
    torch.save(state, path)
    monkeypatch.setattr(checkpoint, "is_cuda", lambda device: True)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    field, _, _ = load_run(workspace, "cpu")
    assert field.encoding_backend == "torch"
    torch.testing.assert_close(field.encoding.params.detach(), state["field"]["encoding.params"])


def test_loss_scaling_leaves_the_updates_unchanged(tmp_path, tiny_sd_path, monkeypatch):
    """fp16 runs scale the loss by 2^16 and unscale the gradients before Adam; in float32 that
    is exact, so the trained field must be bit-identical to an unscaled run."""
    from dreamtext import trainer

    plain = train(tiny_config(tmp_path / "plain", tiny_sd_path, iters=3))
    scalers = []

    def enabled(dtype, device):
        scalers.append(torch.amp.GradScaler("cpu", enabled=True))
        return scalers[-1]

    monkeypatch.setattr(trainer, "fp16_loss_scaler", enabled)
    scaled = train(tiny_config(tmp_path / "scaled", tiny_sd_path, iters=3))
    assert scalers and scalers[0].get_scale() == 2.0**16
    expected, got = field_params(plain), field_params(scaled)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    records = [json.loads(line) for line in (scaled / "log.jsonl").read_text().splitlines()]
    assert all(r["loss_scale"] == 2.0**16 for r in records)
    assert load_checkpoint(scaled / "checkpoints" / "last.pt")["loss_scaler"]["scale"] == 2.0**16


def test_checkpoints_from_before_the_sampler_choice_reload_with_the_dense_sampler(
    tmp_path, tiny_sd_path
):
    from dreamtext.checkpoint import load_run

    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=1))
    path = workspace / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    assert load_run(workspace)[1].cfg.sampler == "occupancy"
    del state["config"]["render"]["sampler"]
    torch.save(state, path)
    assert load_run(workspace)[1].cfg.sampler == "dense"
    # Its resume goes on with the sampler its export renders with: the base it resumes from
    # (config.json, without presets or a sampler) took the default marcher.
    from dreamtext.config import read_run_config

    old = read_run_config(workspace, "")
    del old["render"]["sampler"]
    old.pop("presets", None)
    assert resolve_config({}, base=old).render.sampler == "dense"
    del old["render"]  # a record without the section at all: rendered by the dense one too
    assert resolve_config({}, base=old).render.sampler == "dense"


def test_an_fp16_run_trains_shaded_steps_with_loss_scaling(tmp_path, tiny_sd_path, monkeypatch):
    """The ``--fp16`` trainer path (MLP under autocast, GradScaler), run on the CPU: shaded
    steps from the first, finite updates, the scale in the log and checkpoint, and a resume
    that continues it."""
    from dreamtext import factory
    from dreamtext.field import NeRFField

    monkeypatch.setattr(factory, "mixed_precision", lambda cfg, device: torch.float16)
    mlp, dtypes = NeRFField._mlp, set()

    def spying(self, features):
        out = mlp(self, features)
        dtypes.add(out.dtype)
        return out

    monkeypatch.setattr(NeRFField, "_mlp", spying)
    overrides = {"albedo_epochs": 0, "shading_probs": [0.0, 0.5, 0.5]}
    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=4, **overrides))
    records = [json.loads(line) for line in (workspace / "log.jsonl").read_text().splitlines()]
    assert dtypes == {torch.float16}
    assert {r["shading"] for r in records} <= {"textureless", "lambertian"}
    assert all(math.isfinite(r["loss"]) and r["loss_scale"] > 1.0 for r in records)  # scaled
    state = load_checkpoint(workspace / "checkpoints" / "last.pt")
    # The log has the scale each step ran with; the checkpoint the one after the last update,
    # halved where that step's gradients overflowed.
    halved = records[-1].get("update_skipped", False)
    assert state["loss_scaler"]["scale"] == records[-1]["loss_scale"] / (2 if halved else 1)
    assert not all(r.get("update_skipped") for r in records)  # some steps updated the field
    assert all(torch.isfinite(value).all() for value in state["field"].values())
    before = field_params(workspace)["encoding.params"].clone()
    train(tiny_config(tmp_path, tiny_sd_path, iters=6, **overrides), resume=True)
    assert not torch.equal(field_params(workspace)["encoding.params"], before)


def test_a_run_with_a_separate_density_head_records_it_and_reloads(tmp_path, tiny_sd_path):
    """``field.density_head: separate`` (a YAML override) trains, is in config.json and the
    checkpoint, and ``load_run`` rebuilds the same field: same σ and albedo."""
    from tiny_models import TINY_TRAIN

    from dreamtext.checkpoint import load_run

    fields = {**TINY_TRAIN["field"], "density_head": "separate", "density_hidden_dim": 8}
    workspace = train(tiny_config(tmp_path, tiny_sd_path, iters=2, field=fields))
    config = json.loads((workspace / "config.json").read_text())
    assert config["field"]["density_head"] == "separate"
    assert config["field"]["density_hidden_dim"] == 8
    saved = field_params(workspace)
    assert saved["density_net.0.weight"].shape == (8, 8)  # 4 levels × 2 features in
    assert saved["output_layer.weight"].shape[0] == 3
    field, _, _ = load_run(workspace)
    x = torch.rand(64, 3) * 1.6 - 0.8
    with torch.no_grad():
        sigma, albedo = field(x)
        torch.testing.assert_close(field.density(x), sigma)
    assert albedo.shape == (64, 3) and sigma.shape == (64,)
    for name, value in saved.items():
        torch.testing.assert_close(field.state_dict()[name], value, msg=name)


def test_an_older_builtin_run_resumes_with_its_presets_settings_it_did_not_record(tmp_path):
    """A builtin:shapes run whose config.json and checkpoint predate
    ``field.density_activation`` and ``render.recompute_field`` resumed with the defaults
    (softplus, recompute on), not its preset's (exp, off); once the resume took the preset's,
    the checkpoint's lack of them must not read as a change of the field (a refusal)."""
    from dreamtext.config import read_run_config

    cfg = tiny_config(tmp_path, "builtin:shapes", iters=1, preview_every=0)
    assert (cfg.field.density_activation, cfg.render.recompute_field) == ("exp", False)
    workspace = train(cfg)
    path = workspace / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    for config in (state["config"], saved := json.loads((workspace / "config.json").read_text())):
        config.pop("presets", None)
        del config["field"]["density_activation"], config["render"]["recompute_field"]
    torch.save(state, path)
    (workspace / "config.json").write_text(json.dumps(saved))
    again = resolve_config({"iters": 2}, base=read_run_config(workspace, ""))
    assert (again.field.density_activation, again.render.recompute_field) == ("exp", False)
    train(again, resume=True)
    resumed = json.loads((workspace / "config.json").read_text())
    assert resumed["resumes"][-1]["changed"] == {"iters": [1, 2]}
    assert resumed["field"]["density_activation"] == "exp"


def test_the_final_preview_queries_the_field_once_for_both_rows_and_shows_a_bar(
    tmp_path, tiny_sd_path, monkeypatch, capsys
):
    """The final preview (minutes on a CPU after a short run, whose field is fuzzy everywhere)
    sampled and queried every camera twice: once for its albedo row, once more for its
    textureless one. Its field queries are now those of the textureless row alone, and it
    shows a bar of its cameras."""
    from dreamtext.cameras import orbit_poses
    from dreamtext.field import NeRFField

    queries = {"n": 0}
    for name in ("forward", "density"):
        real = getattr(NeRFField, name)

        def counted(self, x, real=real):
            queries["n"] += x.shape[0]
            return real(self, x)

        monkeypatch.setattr(NeRFField, name, counted)
    measured = {}
    real_preview = trainer.save_preview

    def preview(run, path, **kwargs):
        queries["n"] = 0
        real_preview(run, path, **kwargs)
        measured["preview"] = queries["n"]
        cfg, queries["n"] = run.cfg, 0
        radius, fovy = sum(cfg.cameras.radius_range) / 2, sum(cfg.cameras.fovy_range) / 2
        poses = orbit_poses(cfg.preview_views, polar=70.0, radius=radius, fovy=fovy)
        run.renderer.render(run.field, poses, cfg.h, cfg.w, shading="textureless", perturb=False)
        measured["textureless"] = queries["n"]

    monkeypatch.setattr(trainer, "save_preview", preview)
    # 2 steps: past the first refresh of the occupancy grid (preview_renderer)
    train(tiny_config(tmp_path, tiny_sd_path, iters=2, preview_every=0))
    assert measured["preview"] == measured["textureless"] > 0
    assert "preview final.png: 100%" in capsys.readouterr().err


def test_a_run_stopped_before_its_first_grid_refresh_previews_with_a_refreshed_copy(
    tmp_path, tiny_sd_path, monkeypatch
):
    """Before the occupancy grid's first refresh every cell is occupied: a short run's final
    preview marched and queried the whole scene. It now previews through a copy of the renderer
    whose grid is refreshed once; the run's own grid (its checkpoint, its export) and its random
    numbers are left as they were."""
    from dreamtext.field import NeRFField

    render = {**TINY_TRAIN["render"], "grid_update_every": 100}
    cfg = tiny_config(tmp_path, tiny_sd_path, iters=1, preview_every=0, render=render)
    queries = {"n": 0}
    real_forward = NeRFField.forward

    def counted(self, x):
        queries["n"] += x.shape[0]
        return real_forward(self, x)

    monkeypatch.setattr(NeRFField, "forward", counted)
    measured = {}
    real_preview = trainer.save_preview

    def preview(run, path, **kwargs):
        for name, renderer in (("own", run.renderer), ("refreshed", trainer.preview_renderer(run))):
            queries["n"] = 0
            renderer.render_shadings(run.field, sample_poses(2, cfg.cameras), 16, 16, ("albedo",))
            measured[name] = queries["n"]
        measured["rng"] = torch.get_rng_state()
        real_preview(run, path, **kwargs)
        assert torch.equal(torch.get_rng_state(), measured["rng"])
        measured["own_grid"] = run.renderer.grid.occupied.clone()

    monkeypatch.setattr(trainer, "save_preview", preview)
    workspace = train(cfg)
    assert 0 < measured["refreshed"] < measured["own"]
    assert measured["own_grid"].all()  # the run's grid is still the unrefreshed one
    saved = load_checkpoint(workspace / "checkpoints" / "last.pt")["renderer"]
    assert saved["grid.occupied"].all()


def test_a_new_run_whose_box_cameras_leave_its_angle_ranges_says_so_once(
    tmp_path, tiny_sd_path, capsys
):
    """cameras.azimuth_range [0, 180] with the thesis's box_fraction 0.5: a quarter of the
    cameras were behind the object without a word. A new run says so; its resume does not."""
    cameras = {**TINY_TRAIN.get("cameras", {}), "azimuth_range": [0.0, 180.0], "box_fraction": 0.5}
    cfg = tiny_config(tmp_path, tiny_sd_path, iters=1, cameras=cameras)
    train(cfg)
    said = capsys.readouterr().err
    assert said.count("cameras.box_fraction 0.5 draws that share of the cameras") == 1
    again = tiny_config(tmp_path, tiny_sd_path, iters=2, cameras=cameras)
    train(again, resume=True)
    assert "box_fraction" not in capsys.readouterr().err


def test_a_finished_resume_sets_back_what_it_does_not_use_and_keeps_what_it_does():
    """keep_trained_settings: with nothing left to train, lr and a field's learning setting are
    set back to the trained ones (config.json said the run trained at them); the export's
    settings, the device and the field's encoding backend (the field is built with it, and a
    run trained on Triton resumed on a CPU must record torch) are the command's."""
    cfg = TrainConfig(prompt="x", lr=0.5, device="cpu")
    cfg.field.encoding = "torch"
    cfg.field.encoding_lr_scale = 3.0
    cfg.export_options.resolution = 64
    changed = {
        "lr": [0.02, 0.5],
        "field.encoding_lr_scale": [10.0, 3.0],
        "field.encoding": ["triton", "torch"],
        "export_options.resolution": [96, 64],
        "device": ["cuda", "cpu"],
    }
    kept = trainer.keep_trained_settings(cfg, changed)
    assert kept == {
        "field.encoding": ["triton", "torch"],
        "export_options.resolution": [96, 64],
        "device": ["cuda", "cpu"],
    }
    assert (cfg.lr, cfg.field.encoding_lr_scale) == (0.02, 10.0)
    assert (cfg.field.encoding, cfg.export_options.resolution, cfg.device) == ("torch", 64, "cpu")


def test_a_preview_temp_file_a_kill_left_is_removed_at_the_next_preview(
    tmp_path, monkeypatch, capsys
):
    """A kill while a preview was written left its hidden temp file (as large as a strip) in
    previews/ for good; the checkpoints' were removed at the next save, these never."""
    from dreamtext.cli import main

    monkeypatch.chdir(tmp_path)
    Path("tiny.yaml").write_text(yaml.safe_dump(TINY_SIZES))
    run = ["text", "a red cube", "--model", "builtin:shapes", "--no-export", "--workspace", "w"]
    assert main([*run, "--config", "tiny.yaml", "--iters", "1"]) == 0
    previews = tmp_path / "w" / "previews"
    left = [previews / ".step_000500.png.a1b2c3d4.tmp", previews / ".final.png.zz_99xy0.tmp"]
    for path in left:
        path.write_bytes(b"half a png")
    mine = previews / ".notes.txt.a1b2c3d4.tmp"  # not a preview's: left alone
    mine.write_bytes(b"")
    assert main([*run, "--iters", "2", "--resume"]) == 0
    assert not any(path.exists() for path in left)
    assert mine.exists()


def test_the_finiteness_check_of_the_gradients_makes_no_copy_of_them():
    """torch.isfinite(g) made |g| and three masks, 7 B a value of the hash table: 1.1 GB for a
    table of 2^24 rows × 16 levels × 4 features, the peak of an Adan run's step (5.6 GB where
    its update peaks at 5.1). The check now takes each gradient's least and greatest values,
    which say the same: NaN, +inf or -inf anywhere, a parameter without a gradient or an empty
    one."""
    from peak_growth import run_measured

    from dreamtext.trainer import gradients_finite

    params = [torch.zeros(1000, requires_grad=True) for _ in range(2)]
    params += [torch.zeros(0, requires_grad=True), torch.zeros(3, requires_grad=True)]
    optimizer = torch.optim.SGD(params, lr=0.1)
    for value in (math.nan, math.inf, -math.inf, 3e38, -3e38, 0.0):
        for where in (0, 500, 999):
            params[0].grad, params[1].grad = torch.ones(1000), torch.ones(1000)
            params[2].grad = torch.zeros(0)
            params[1].grad[where] = value
            expected = all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
            assert bool(gradients_finite(optimizer, torch.device("cpu"))) == expected
    script = (
        "import torch\n"
        "from dreamtext.trainer import gradients_finite\n"
        "p = torch.zeros(20_000_000, requires_grad=True)\n"  # 80 MB
        "p.grad = torch.ones(20_000_000)\n"
        "optimizer = torch.optim.SGD([p], lr=0.1)\n"
        "gradients_finite(optimizer, torch.device('cpu'))\n"  # torch's first call of each op
        "before = rss('VmRSS')\n"
        "reset_peak()\n"  # VmHWM from here
        "assert bool(gradients_finite(optimizer, torch.device('cpu')))\n"
        "print(rss('VmHWM') - before)\n"
    )
    grown = run_measured(script)
    assert int(grown) < 10_000_000  # isfinite: 140 MB (7 B a value)


def test_a_resumed_run_stopped_twice_before_its_first_save_records_the_restored_step(
    tmp_path, monkeypatch
):
    """status.json's "interrupted" step is that of the checkpoint a rerun goes on from; before a
    resumed run saves one, that is the checkpoint it restored (step 2), not step 0."""
    import signal

    cfg = tiny_config(tmp_path, "builtin:shapes", iters=2, checkpoint_every=10, preview_every=0)
    train(cfg)
    signal_after_step(monkeypatch, 3, signal.SIGINT, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train(dataclasses.replace(cfg, iters=6), resume=True)
    assert_interrupted_at(Path(cfg.workspace), 2)


def test_a_stop_in_the_middle_of_a_step_records_the_step_of_the_checkpoint_it_saves(
    tmp_path, monkeypatch
):
    """A stop mid-step saves the checkpoint of the last whole step (2); status.json said
    "interrupted" at the step of the checkpoint before (none: 0) where it is that one."""
    from dreamtext.interrupts import StepStopped

    raise_at_step(monkeypatch, 2, StepStopped())  # in step 3
    cfg = tiny_config(tmp_path, "builtin:shapes", iters=6, checkpoint_every=10, preview_every=0)
    with pytest.raises(TrainingInterrupted):
        train(cfg)
    assert_interrupted_at(Path(cfg.workspace), 2)


def test_the_last_step_saved_in_the_loop_is_not_written_again_at_the_end(tmp_path, monkeypatch):
    """iters a multiple of checkpoint_every (every default and FitFusion run): the loop's
    checkpoint of the last step is the run's last.pt; the end does not write the same state
    again (a whole checkpoint more: 148 MB of the default field). A resume with nothing to
    train still saves, for the settings it records."""
    saved = []
    real_save = trainer.save_checkpoint

    def counted(workspace, state, keep=3):
        saved.append(int(state["step"]))
        return real_save(workspace, state, keep)

    monkeypatch.setattr(trainer, "save_checkpoint", counted)
    cfg = tiny_config(tmp_path, "builtin:shapes", iters=4, checkpoint_every=2, preview_every=0)
    workspace = train(cfg)
    assert saved == [2, 4]
    assert load_checkpoint(workspace / "checkpoints" / "last.pt")["step"] == 4
    train(dataclasses.replace(cfg, iters=5), resume=True)
    assert saved == [2, 4, 5]
    train(dataclasses.replace(cfg, iters=5), resume=True)
    assert saved == [2, 4, 5, 5]


def test_a_diverged_run_is_told_to_start_again_with_overwrite(tmp_path, tiny_sd_path, monkeypatch):
    """A run whose gradients stayed NaN was told "... or start again with another --seed",
    and one whose weights overflowed "continue from it ..., or start again with another
    --seed": its checkpoint refuses a new run of the same prompt without --overwrite ("already
    holds a run of this prompt"). The line names --overwrite, with which the run starts again."""
    from dreamtext.guidance import ScoreDistillation

    real = ScoreDistillation.sds_loss

    def nan_gradients(self, *args, **kwargs):
        loss, info = real(self, *args, **kwargs)
        return loss * math.nan, info

    with monkeypatch.context() as m:
        m.setattr(ScoreDistillation, "sds_loss", nan_gradients)
        message = diverged_message(m, tiny_config(tmp_path, tiny_sd_path, iters=20))
    assert "the gradients were NaN" in message, message
    assert message.endswith("or start again with --overwrite and another --seed"), message
    again = tiny_config(tmp_path, tiny_sd_path, iters=2, seed=7)
    with pytest.raises(DreamtextError, match="already holds a run of this prompt"):
        train(again)
    train(again, overwrite=True)
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2

    weights_overflow_in_step(monkeypatch, 3)
    raise_at_step(monkeypatch, 4, MemoryError())
    with pytest.raises(DreamtextError) as error:
        train(tiny_config(tmp_path, tiny_sd_path, iters=20), overwrite=True)
    assert "stays the checkpoint of step 2" in str(error.value), error.value
    assert "or start again with --overwrite and another --seed" in str(error.value)

    # Renders NaN from weights the save's check passes: saved, and a resume goes on from them.
    monkeypatch.undo()
    weights_overflow_in_step(monkeypatch, 3)
    monkeypatch.setattr(trainer, "overflowed_step", lambda run: None)
    message = diverged_message(monkeypatch, tiny_config(tmp_path / "nan", tiny_sd_path, iters=20))
    assert "a resume goes on from those weights" in message, message
    assert "start again with --overwrite and a smaller --lr" in message, message
