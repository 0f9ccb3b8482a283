"""A stop at every point of a run: `dreamtext text` (start-up, each training step, checkpoint
saves, previews, the end of training, the export's every stage) and `dreamtext export` (each of
its stages and the commit of its files) stopped by a SIGTERM sent to this process there (a
Slurm time limit or preemption; the handler the command installed takes it as it would a real
one). Each stop must give one line naming where it stopped and how to go on, exit 130, no
half-written file (an interrupted export leaves the previous mesh or none), a status.json that
says the same as the line, and the command the line names must finish the run with the same
field, previews and mesh as a run never stopped.

A library that catches the stop's ``KeyboardInterrupt`` (trimesh's optional imports, an object's
``__del__``) either swallows it or turns it into an error of its own: both variants are sent at
the points where they were handled wrongly.

The expensive setup is shared: one run never stopped (module scope) is the reference, and the
points after training start from a copy of it (``--resume`` of a run at its last step trains
nothing)."""

import contextlib
import json
import os
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from tiny_models import TINY_TRAIN

from dreamtext import export as export_module
from dreamtext import exportprogress, trainer
from dreamtext.cli import main

ITERS = 3  # no multiple of checkpoint_every: the end of training saves a checkpoint of its own
CONFIG = {
    **TINY_TRAIN,
    "preview_every": 2,
    "checkpoint_every": 2,
    "export": True,
    # GLB and PLY: every stage of the export (UV unwrapping and texture baking for the GLB,
    # vertex colours for the PLY), at a grid and texture a few kB in size.
    "export_options": {
        "resolution": 16,
        "formats": ["glb", "ply"],
        "video": False,
        "texture_size": 16,
        "decimate": 0,
    },
}
# What a run that is never stopped makes, compared byte for byte with the resumed run's.
MADE_FILES = ("mesh/mesh.glb", "mesh/mesh.ply", "previews/step_000002.png", "previews/final.png")


@dataclass
class StopPoint:
    """Where the SIGTERM is sent: ``when`` (before or after) the ``nth`` call of
    ``owner.name`` whose arguments ``matches``. ``library``: how a library the stop lands in
    treats its ``KeyboardInterrupt``: ``None`` (lets it through), ``"swallowed"`` or
    ``"own error"`` (raises a ``RuntimeError`` of its own instead)."""

    owner: object
    name: str
    when: str = "before"
    nth: int = 1
    matches: Callable[..., bool] = field(default=lambda *args, **kwargs: True)
    library: str | None = None


def _stage(name: str) -> Callable[..., bool]:
    """``matches`` for the export stage ``name`` (``ExportProgress.stage(self, name)``)."""
    return lambda progress, stage, *args, **kwargs: stage == name


def _export_phase(workspace, phase=None) -> bool:
    return phase == "export"


def stop_at(monkeypatch: pytest.MonkeyPatch, point: StopPoint) -> list[int]:
    """Send this process a SIGTERM at ``point``; returns the calls seen (``[n]`` once sent)."""
    real = getattr(point.owner, point.name)
    calls = [0]

    def send() -> None:
        if point.library is None:
            signal.raise_signal(signal.SIGTERM)
            return
        try:
            signal.raise_signal(signal.SIGTERM)
        except KeyboardInterrupt:
            if point.library == "own error":
                raise RuntimeError("a library's own error, made of a KeyboardInterrupt") from None

    def wrapper(*args, **kwargs):
        hit = point.matches(*args, **kwargs)
        if hit:
            calls[0] += 1
        if hit and calls[0] == point.nth and point.when == "before":
            send()
        result = real(*args, **kwargs)
        if hit and calls[0] == point.nth and point.when == "after":
            send()
        return result

    monkeypatch.setattr(point.owner, point.name, wrapper)
    return calls


def run_main(argv: list) -> tuple[int, str, str]:
    """``dreamtext ARGV`` in this process: (exit code, stdout, stderr)."""
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as done:
            code = done.code
    return code, out.getvalue(), err.getvalue()


def text_command(config: Path, workspace: Path, *more: str) -> list:
    prompt = ["text", "a red cube", "--model", "builtin:shapes", "--iters", str(ITERS)]
    return [*prompt, "--config", config, "--workspace", workspace, *more]


def field_state(workspace: Path) -> dict[str, torch.Tensor]:
    return torch.load(workspace / "checkpoints" / "last.pt", weights_only=True)["field"]


def identities(folder: Path) -> dict[str, tuple[int, int]]:
    """``{name: (inode, mtime_ns)}`` of the files in ``folder``: an export swaps in new files,
    so the same identities are the same files, untouched."""
    if not folder.is_dir():
        return {}
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


def assert_nothing_half_written(workspace: Path) -> None:
    """No staging folder, temp file or progress record of the stopped work is left."""
    left = [p for p in workspace.rglob("*") if any(part.startswith(".") for part in p.parts[-2:])]
    left += [p for p in workspace.rglob("*.tmp")]
    assert not left, left


def assert_status(workspace: Path, state: str, step: int, phase: str) -> None:
    status = json.loads((workspace / "status.json").read_text())
    assert (status["state"], status["step"], status["phase"]) == (state, step, phase), status


def assert_same_as_never_stopped(workspace: Path, reference: Path) -> None:
    for name in MADE_FILES:
        assert (workspace / name).read_bytes() == (reference / name).read_bytes(), name
    made, never = field_state(workspace), field_state(reference)
    assert made.keys() == never.keys()
    for key in made:
        assert torch.equal(made[key], never[key]), key


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("stop_points") / "tiny.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    return path


@pytest.fixture(scope="module")
def reference(config) -> Path:
    """The run never stopped, exported."""
    workspace = config.parent / "never_stopped"
    code, _out, err = run_main(text_command(config, workspace))
    assert code == 0, err
    assert_status(workspace, "finished", ITERS, "export")
    return workspace


def saved_line(stop: str, step: int, workspace: Path) -> str:
    return (
        f"dreamtext: interrupted {stop}after step {step}; saved "
        f"{workspace / 'checkpoints' / 'last.pt'}; continue with --resume"
    )


# Stops in training: (point, the step saved, the line's "where", status.json's phase).
IN_TRAINING = {
    "before the first step": (StopPoint(trainer, "train_step"), 0, "", "train"),
    "before the last step": (StopPoint(trainer, "train_step", nth=3), 2, "", "train"),
    "in the periodic checkpoint's save": (StopPoint(trainer, "save_checkpoint"), 2, "", "train"),
    "in the step's preview": (StopPoint(trainer, "save_preview"), 2, "", "train"),
    "after the last step": (
        StopPoint(trainer, "train_step", when="after", nth=3),
        3,
        "before the export, ",
        "train",
    ),
    "in the end of training's save": (
        StopPoint(trainer, "save_checkpoint", nth=2),
        3,
        "before the export, ",
        "train",
    ),
}


@pytest.mark.parametrize("where", list(IN_TRAINING))
def test_a_stop_in_training_says_the_step_saved_and_resume_finishes_the_same_run(
    tmp_path, monkeypatch, config, reference, where
):
    point, step, stop, phase = IN_TRAINING[where]
    workspace = tmp_path / "run"
    with monkeypatch.context() as patch:
        calls = stop_at(patch, point)
        code, out, err = run_main(text_command(config, workspace))
    assert calls[0] >= point.nth
    assert (code, out) == (130, ""), err
    assert err.strip().splitlines()[-1] == saved_line(stop, step, workspace)
    assert_status(workspace, "interrupted", step, phase)
    assert not (workspace / "mesh").exists()
    assert_nothing_half_written(workspace)
    code, out, err = run_main(text_command(config, workspace, "--resume"))
    assert (code, out) == (0, f"{workspace}\n"), err
    assert_status(workspace, "finished", ITERS, "export")
    assert_same_as_never_stopped(workspace, reference)


def test_a_stop_while_the_run_starts_names_no_checkpoint_and_the_command_again_runs_it(
    tmp_path, monkeypatch, config, reference
):
    """Before the run is built (its models loaded) nothing of it is written: the line says to
    run the command again, which makes the run the never-stopped one makes."""
    workspace = tmp_path / "run"
    with monkeypatch.context() as patch:
        stop_at(patch, StopPoint(trainer, "build_run"))
        code, out, err = run_main(text_command(config, workspace))
    assert (code, out) == (130, ""), err
    assert err.strip().splitlines()[-1] == (
        "dreamtext text: interrupted; run the same command again, with --resume if the run has "
        "a checkpoint"
    )
    assert not (workspace / "checkpoints").exists() and not (workspace / "status.json").exists()
    code, out, err = run_main(text_command(config, workspace))
    assert code == 0, err
    assert_same_as_never_stopped(workspace, reference)


STAGES = (
    "marching cubes",
    "decimating",
    "measuring the mesh",
    "UV unwrapping",
    "texture baking",
    "vertex colours",
    "writing files",
)
# Stops after training, in a --resume of the trained run (it trains nothing): (point, the
# line's "where", status.json's phase).
AFTER_TRAINING = {
    "in the final preview": (
        StopPoint(trainer, "save_preview"),
        "before the export, ",
        "train",
    ),
    "in the final preview, its error a library's own": (
        StopPoint(trainer, "save_preview", library="own error"),
        "before the export, ",
        "train",
    ),
    "in the final preview, swallowed by a library": (
        StopPoint(trainer, "save_preview", library="swallowed"),
        "before the export, ",
        "train",
    ),
    "after the final preview": (
        StopPoint(trainer, "save_final_preview", when="after"),
        "before the export, ",
        "train",
    ),
    # Between the final preview and the export's own handling: the line said only
    # "dreamtext text: interrupted; ... with --resume if the run has a checkpoint".
    "before the export's phase is recorded": (
        StopPoint(trainer, "update_status", matches=_export_phase),
        "before the export, ",
        "train",
    ),
    "as the export's phase is recorded": (
        StopPoint(trainer, "update_status", when="after", matches=_export_phase),
        "in the export, ",
        "export",
    ),
    **{
        f"in the export's {stage}": (
            StopPoint(exportprogress.ExportProgress, "stage", matches=_stage(stage)),
            "in the export, ",
            "export",
        )
        for stage in STAGES
    },
    "in the export's UV unwrapping, its error a library's own": (
        StopPoint(
            exportprogress.ExportProgress,
            "stage",
            matches=_stage("UV unwrapping"),
            library="own error",
        ),
        "in the export, ",
        "export",
    ),
    "in the export's UV unwrapping, swallowed by a library": (
        StopPoint(
            exportprogress.ExportProgress,
            "stage",
            matches=_stage("UV unwrapping"),
            library="swallowed",
        ),
        "in the export, ",
        "export",
    ),
    "as the export's files are committed": (
        StopPoint(export_module, "write_all_atomically"),
        "in the export, ",
        "export",
    ),
}


@pytest.mark.parametrize("where", list(AFTER_TRAINING))
def test_a_stop_after_training_keeps_the_previous_mesh_and_resume_exports_it(
    tmp_path, monkeypatch, config, reference, where
):
    point, stop, phase = AFTER_TRAINING[where]
    workspace = tmp_path / "run"
    shutil.copytree(reference, workspace)
    previous = identities(workspace / "mesh")
    with monkeypatch.context() as patch:
        calls = stop_at(patch, point)
        code, out, err = run_main(text_command(config, workspace, "--resume"))
    assert calls[0] >= point.nth
    assert (code, out) == (130, ""), err
    assert err.strip().splitlines()[-1] == saved_line(stop, ITERS, workspace)
    assert_status(workspace, "interrupted", ITERS, phase)
    assert identities(workspace / "mesh") == previous
    assert_nothing_half_written(workspace)
    code, out, err = run_main(text_command(config, workspace, "--resume"))
    assert (code, out) == (0, f"{workspace}\n"), err
    assert_status(workspace, "finished", ITERS, "export")
    assert identities(workspace / "mesh").keys() == previous.keys()
    assert_same_as_never_stopped(workspace, reference)


EXPORT_POINTS = {
    "as the run is read": StopPoint(export_module, "read_exported_checkpoint", when="after"),
    **{
        f"in its {stage}": StopPoint(exportprogress.ExportProgress, "stage", matches=_stage(stage))
        for stage in STAGES
    },
    "in its texture baking, swallowed by a library": StopPoint(
        exportprogress.ExportProgress,
        "stage",
        matches=_stage("texture baking"),
        library="swallowed",
    ),
    "as its files are committed": StopPoint(export_module, "write_all_atomically"),
}


@pytest.mark.parametrize("where", list(EXPORT_POINTS))
def test_a_stopped_export_keeps_the_previous_mesh_and_the_command_again_makes_it(
    tmp_path, monkeypatch, reference, where
):
    point = EXPORT_POINTS[where]
    workspace = tmp_path / "run"
    shutil.copytree(reference, workspace)
    previous = identities(workspace / "mesh")
    command = ["export", "--workspace", workspace]
    with monkeypatch.context() as patch:
        calls = stop_at(patch, point)
        code, out, err = run_main(command)
    assert calls[0] >= point.nth
    assert (code, out) == (130, ""), err
    assert err.strip().splitlines()[-1] == (
        "dreamtext export: interrupted; run the same command again"
    )
    assert identities(workspace / "mesh") == previous
    assert_status(workspace, "finished", ITERS, "export")
    assert_nothing_half_written(workspace)
    code, out, err = run_main(command)
    assert code == 0 and out.startswith(f"exported {workspace} (step {ITERS})"), err
    assert identities(workspace / "mesh") != previous
    assert_same_as_never_stopped(workspace, reference)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, tiny_sd_path, tiny_clip_path) -> Callable[[Path], tuple]:
    """``run(folder)``: ``dreamtext image`` of a tiny image into ``folder / "run"`` (2 descriptor
    and 2 text→3D steps of the tiny field, no export), as (exit code, stderr); and the run
    never stopped, made once: ``run.reference``."""
    from test_imageto3d import _cli_image, _image, _options

    def run(folder: Path) -> tuple[int, str]:
        image = _image(folder)
        _options(folder, tiny_clip_path)  # writes the vocabulary files
        err = contextlib.redirect_stderr(buffer := __import__("io").StringIO())
        with err, contextlib.redirect_stdout(__import__("io").StringIO()):
            code = _cli_image(folder, image, tiny_sd_path, tiny_clip_path, "--iters", "2")
        return code, buffer.getvalue()

    reference = tmp_path_factory.mktemp("image_never_stopped")
    code, err = run(reference)
    assert code == 0, err
    run.reference = reference / "run"
    return run


def _imageto3d_module():
    from dreamtext import imageto3d

    return imageto3d


# Stops between the image run's stages, where no stage's own handling records them: (point,
# status.json's phase). A library's error made of the stop was recorded "failed".
BETWEEN_IMAGE_STAGES = {
    "after the sentence search": (
        StopPoint(_imageto3d_module(), "describe", when="after"),
        "describe",
    ),
    "as the descriptor's training starts, its error a library's own": (
        StopPoint(_imageto3d_module(), "train_descriptor", library="own error"),
        "describe",
    ),
    "as the text→3D stage starts, its error a library's own": (
        StopPoint(trainer, "train", library="own error"),
        "descriptor",
    ),
}


@pytest.mark.parametrize("where", list(BETWEEN_IMAGE_STAGES))
def test_a_stop_between_the_image_runs_stages_is_recorded_interrupted_and_the_rerun_finishes(
    tmp_path, monkeypatch, image_run, where
):
    point, phase = BETWEEN_IMAGE_STAGES[where]
    with monkeypatch.context() as patch:
        calls = stop_at(patch, point)
        code, err = image_run(tmp_path)
    workspace = tmp_path / "run"
    assert (code, calls) == (130, [1]), err
    assert err.strip().splitlines()[-1] == (
        "dreamtext image: interrupted; run the same command again to go on (it reuses the "
        "stages that finished)"
    )
    status = json.loads((workspace / "status.json").read_text())
    assert (status["state"], status["phase"]) == ("interrupted", phase), status
    assert_nothing_half_written(workspace)
    code, err = image_run(tmp_path)
    assert code == 0, err
    assert_status(workspace, "finished", 2, "train")
    sentence, never_stopped = (
        json.loads((folder / "descriptor" / "sentence.json").read_text())["trained_sentence"]
        for folder in (workspace, image_run.reference)
    )
    assert sentence == never_stopped
    made, never = field_state(workspace), field_state(image_run.reference)
    assert all(torch.equal(made[key], never[key]) for key in never)


def _batch(folder: Path, config: Path) -> tuple[int, str]:
    """``dreamtext batch prompts.txt`` of two prompts, run in ``folder``: (exit code, stderr)."""
    (folder / "prompts.txt").write_text("a red cube\na blue sphere\n")
    argv = ["batch", "prompts.txt", "--model", "builtin:shapes", "--iters", ITERS, "--no-export"]
    before = Path.cwd()  # contextlib.chdir is Python 3.11's, and 3.10 runs these tests too
    os.chdir(folder)
    try:
        code, _out, err = run_main([*argv, "--config", config])
    finally:
        os.chdir(before)
    return code, err


def _line_records(folder: Path) -> list[tuple[int, str]]:
    lines = (folder / "workspace" / "batch.jsonl").read_text().splitlines()
    return [(record["line"], record["status"]) for record in map(json.loads, lines)]


# Stops in a batch: (point, the line's record, what the batch says of the stopped line).
IN_A_BATCH = {
    "between two lines": (
        StopPoint(trainer, "train", nth=2),
        [(1, "finished"), (2, "interrupted")],
        "batch: prompts.txt: line 2: interrupted before the run's first checkpoint; run the "
        "batch again to start it again",
    ),
    # A library's error made of the stop as the line loads its model: recorded "failed" with
    # a traceback, "0 interrupted" in the summary.
    "as a line's model loads, its error a library's own": (
        StopPoint(trainer, "build_run", library="own error"),
        [(1, "interrupted")],
        "batch: prompts.txt: line 1: interrupted before the run's first checkpoint; run the "
        "batch again to start it again",
    ),
}


@pytest.mark.parametrize("where", list(IN_A_BATCH))
def test_a_stopped_batch_records_the_line_interrupted_and_runs_again_to_its_end(
    tmp_path, monkeypatch, config, where
):
    point, records, said = IN_A_BATCH[where]
    with monkeypatch.context() as patch:
        calls = stop_at(patch, point)
        code, err = _batch(tmp_path, config)
    assert (code, calls[0]) == (130, point.nth), err
    assert said in err.splitlines(), err
    assert "Traceback" not in err
    assert _line_records(tmp_path) == records
    code, err = _batch(tmp_path, config)
    assert code == 0, err
    for prompt in ("a_red_cube", "a_blue_sphere"):
        assert_status(tmp_path / "workspace" / prompt, "finished", ITERS, "train")


def _wait_for(condition: Callable[[], bool], process, timeout: float = 240.0) -> None:
    """Poll ``condition`` every 20 ms until it holds; fail if ``process`` ends first."""
    import time

    end = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < end, "the point to stop at never came"
        time.sleep(0.02)


def _progress_stage(workspace: Path) -> str | None:
    try:
        return json.loads((workspace / exportprogress.PROGRESS_FILE).read_text()).get("stage")
    except (OSError, ValueError):
        return None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_real_signal_in_the_exports_meshing_keeps_the_previous_mesh(tmp_path, reference, signum):
    """`dreamtext export` in a process of its own, sent a real SIGTERM (or Ctrl-C) once its
    progress record says it is meshing (a 128^3 grid: long enough to be caught there)."""
    import os
    import subprocess
    import sys

    workspace = tmp_path / "run"
    shutil.copytree(reference, workspace)
    previous = identities(workspace / "mesh")
    command = [sys.executable, "-m", "dreamtext", "export", "--workspace", str(workspace)]
    command += ["--resolution", "128"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    export = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: _progress_stage(workspace) == "meshing", export)
        export.send_signal(signum)
        out, err = export.communicate(timeout=120)
    finally:
        if export.poll() is None:
            export.kill()
    lines = err.decode().strip().splitlines()
    assert (export.returncode, out) == (130, b""), err
    assert lines[-1] == "dreamtext export: interrupted; run the same command again"
    assert identities(workspace / "mesh") == previous
    assert_status(workspace, "finished", ITERS, "export")
    assert_nothing_half_written(workspace)


def test_a_real_sigterm_in_a_runs_own_export_says_the_run_is_saved_and_resume_exports_it(
    tmp_path, config, reference
):
    """`dreamtext text --resume` of the trained run in a process of its own (it trains nothing
    and exports, on a 128^3 grid), sent a real SIGTERM once its export is meshing."""
    import os
    import subprocess
    import sys

    workspace = tmp_path / "run"
    shutil.copytree(reference, workspace)
    previous = identities(workspace / "mesh")
    finer = tmp_path / "finer.yaml"
    finer.write_text(yaml.safe_dump({"export_options": {"resolution": 128}}))
    command = [sys.executable, "-m", "dreamtext"]
    command += [str(a) for a in text_command(config, workspace, "--resume", "--config", finer)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: _progress_stage(workspace) == "meshing", run)
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert (run.returncode, out) == (130, b""), err
    assert err.decode().strip().splitlines()[-1] == saved_line("in the export, ", ITERS, workspace)
    assert_status(workspace, "interrupted", ITERS, "export")
    assert identities(workspace / "mesh") == previous
    assert_nothing_half_written(workspace)
