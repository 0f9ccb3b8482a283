"""Resuming and exporting a run whose folder a cluster damaged: an unreadable ``last.pt`` (a full
disk, a copy or sync cut short), step files of a branch the run left, a killed run's lock file."""

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from damage import flip_a_tensor_byte
from tiny_models import TINY_TRAIN

from dreamtext.checkpoint import RUN_KEYS, load_checkpoint, save_checkpoint
from dreamtext.config import resolve_config
from dreamtext.errors import DreamtextError
from dreamtext.export import ExportOptions, export_workspace
from dreamtext.trainer import train


def builtin_config(workspace: Path, **overrides):
    """A tiny run of the built-in prior: a checkpoint every 2 steps, a preview every 2."""
    merged = {
        **TINY_TRAIN,
        "prompt": "a red cube",
        "workspace": str(workspace),
        "guidance": {"model": "builtin:shapes"},
        **overrides,
    }
    return resolve_config(merged)


def files(folder: Path, pattern: str) -> list[str]:
    return sorted(p.name for p in folder.glob(pattern))


def test_an_unreadable_last_pt_resumes_from_the_newest_whole_step_file_to_the_same_run(
    tmp_path, capsys
):
    """A last.pt cut to 1000 bytes (a full disk, an rsync cut short) stopped `--resume` with
    'copy step_… over it'; now the resume goes on from the step file itself, says so in one
    line and in config.json, and trains the lost steps again to the same field."""
    whole = train(builtin_config(tmp_path / "whole", iters=6))
    workspace = train(builtin_config(tmp_path / "split", iters=4))  # last.pt 4, step_000002.pt
    last = workspace / "checkpoints" / "last.pt"
    os.truncate(last, 1000)
    capsys.readouterr()
    train(builtin_config(workspace, iters=6), resume=True)
    step_file = workspace / "checkpoints" / "step_000002.pt"
    assert (
        f"dreamtext: {last} is unreadable (a truncated or damaged file: RuntimeError); resuming "
        f"from {step_file}, the newest whole checkpoint, at step 2: steps 3-4 are lost and "
        "trained again; the unreadable last.pt is removed"
    ) in capsys.readouterr().err.splitlines()
    resumes = json.loads((workspace / "config.json").read_text())["resumes"]
    assert resumes[-1]["step"] == 2
    assert resumes[-1]["fallback"] == {
        "unreadable": "checkpoints/last.pt",
        "why": "a truncated or damaged file: RuntimeError",
        "from": "checkpoints/step_000002.pt",
    }
    ours, theirs = load_checkpoint(last), load_checkpoint(whole / "checkpoints" / "last.pt")
    assert ours["step"] == 6
    assert all(torch.equal(ours["field"][k], theirs["field"][k]) for k in theirs["field"])
    steps = [
        json.loads(line)["step"] for line in (workspace / "log.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_the_unreadable_last_pt_a_resume_left_is_not_kept_as_a_step_file(tmp_path):
    """A damaged last.pt of step 6, left in place by the resume that fell back to step 4, was
    kept by the next save (at step 9) as ``step_000006.pt``, a damaged file of the branch the
    run left, and the whole ``step_000002.pt`` was deleted to keep three checkpoints."""
    from dreamtext.checkpoint import is_whole, step_files

    workspace = train(builtin_config(tmp_path / "run", iters=6))  # last 6, steps 2 and 4
    folder = workspace / "checkpoints"
    flip_a_tensor_byte(folder / "last.pt")
    train(builtin_config(workspace, iters=9, checkpoint_every=100), resume=True)
    assert [(step, is_whole(path, step)) for step, path in step_files(folder)] == [
        (2, True),
        (4, True),
    ]
    assert load_checkpoint(folder / "last.pt")["step"] == 9


def test_a_step_file_that_unpickles_but_does_not_restore_is_passed_over(tmp_path, capsys):
    """Whole means it restores (field, optimiser, renderer, random states, step), not that
    torch.load reads it: a step file whose field does not fit the run is skipped for an older
    one, and named."""
    workspace = train(builtin_config(tmp_path / "run", iters=6))  # last 6, steps 2 and 4
    folder = workspace / "checkpoints"
    os.truncate(folder / "last.pt", 1000)
    damaged = torch.load(folder / "step_000004.pt", weights_only=True)
    damaged["field"] = {name: tensor[:1] for name, tensor in damaged["field"].items()}
    torch.save(damaged, folder / "step_000004.pt")
    capsys.readouterr()
    train(builtin_config(workspace, iters=6), resume=True)
    err = capsys.readouterr().err
    assert "resuming from " + str(folder / "step_000002.pt") in err
    assert "(step_000004.pt unreadable too), at step 2: steps 3-6 are lost" in err
    fallback = json.loads((workspace / "config.json").read_text())["resumes"][-1]["fallback"]
    assert fallback["from"] == "checkpoints/step_000002.pt"
    assert fallback["damaged"] == ["step_000004.pt"]
    assert load_checkpoint(folder / "last.pt")["step"] == 6


def test_no_whole_checkpoint_is_one_line_exit_2_and_the_folder_is_untouched(tmp_path, capsys):
    from dreamtext.cli import main

    workspace = train(builtin_config(tmp_path / "run", iters=2, checkpoint_every=10))
    last = workspace / "checkpoints" / "last.pt"
    os.truncate(last, 1000)
    before = {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()}
    capsys.readouterr()
    code = main(["text", "a red cube", "--workspace", str(workspace), "--resume", "--iters", "4"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"dreamtext: error: cannot resume: {last} is unreadable (a truncated or damaged file: "
        "RuntimeError) and the run has no earlier checkpoint that is whole; train it again from "
        "scratch with --overwrite"
    )
    assert {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()} == before


def roll_back_to_step_2(workspace: Path, capsys) -> list[str]:
    """Copy step 2's file over last.pt (as the README says), resume to step 3; its stderr lines."""
    folder = workspace / "checkpoints"
    shutil.copyfile(folder / "step_000002.pt", folder / "last.pt")
    capsys.readouterr()
    train(builtin_config(workspace, iters=3), resume=True)
    return capsys.readouterr().err.splitlines()


def test_a_resume_removes_the_step_files_and_previews_past_its_step(tmp_path, capsys):
    """A run rolled back (a step file copied over last.pt, as the README says; a fallback) kept
    the later step files of the branch it left: the old step 4 sat beside a last.pt of step 3,
    passed for the newest checkpoint (the one the advice for a damaged last.pt named), and its
    previews for the run's newest."""
    workspace = train(builtin_config(tmp_path / "run", iters=6))
    folder = workspace / "checkpoints"
    assert (
        f"dreamtext: removed step_000004.pt of {folder}: past step 2, which the run goes on from"
    ) in roll_back_to_step_2(workspace, capsys)
    assert files(folder, "*.pt") == ["last.pt", "step_000002.pt"]
    assert files(workspace / "previews", "*.png") == ["final.png", "step_000002.png"]
    assert load_checkpoint(folder / "last.pt")["step"] == 3


def test_a_resume_from_an_earlier_step_removes_the_export_of_the_branch_it_left(tmp_path, capsys):
    """The export of step 4 stayed after a roll back to step 2: the viewer showed it as the run's
    mesh, and once the run reached step 4 again a --no-video export kept the old branch's
    turntable, recorded as of the same step. Files of the user's own in mesh/ and video/ stay."""
    workspace = train(builtin_config(tmp_path / "run", iters=4))
    options = ExportOptions(resolution=24, texture_size=32, frames=60, video_size=16)
    export_workspace(workspace, options)
    assert json.loads((workspace / "mesh" / "mesh.json").read_text())["turntable_step"] == 4
    (workspace / "video" / "notes.txt").write_text("mine")
    assert (
        f"dreamtext: removed the export of step 4 (mesh/, video/) of {workspace}: past step 2, "
        "which the run goes on from; dreamtext export makes it again"
    ) in roll_back_to_step_2(workspace, capsys)
    assert files(workspace / "mesh", "*") == []
    assert files(workspace / "video", "*") == ["notes.txt"]
    # trained to step 4 again: a --no-video export has no turntable to keep
    train(builtin_config(workspace, iters=4), resume=True)
    export_workspace(workspace, dataclasses.replace(options, video=False))
    assert json.loads((workspace / "mesh" / "mesh.json").read_text())["turntable_step"] is None
    assert files(workspace / "video", "*") == ["notes.txt"]


def test_a_resume_from_the_newest_checkpoint_keeps_its_export(tmp_path, capsys):
    """The export of the step a resume goes on from is of the same field: it stays."""
    workspace = train(builtin_config(tmp_path / "run", iters=2))
    export_workspace(workspace, ExportOptions(resolution=24, texture_size=32, video=False))
    before = (workspace / "mesh" / "mesh.glb").read_bytes()
    capsys.readouterr()
    train(builtin_config(workspace, iters=3), resume=True)
    assert "removed the export" not in capsys.readouterr().err
    assert (workspace / "mesh" / "mesh.glb").read_bytes() == before


def run_state(step: int) -> dict:
    return {**{key: {} for key in RUN_KEYS}, "step": step}


def test_the_advice_for_a_damaged_last_pt_names_the_newest_whole_step_file(tmp_path):
    """Not the newest step file: one cut short, or one whose step is not its name's, cannot be
    gone on from."""
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, run_state(step))  # last 6, steps 2 and 4
    folder = tmp_path / "checkpoints"
    os.truncate(folder / "step_000004.pt", 500)
    torch.save(run_state(9), folder / "step_000005.pt")
    (folder / "last.pt").write_bytes(b"half")
    with pytest.raises(DreamtextError) as error:
        load_checkpoint(folder / "last.pt", required=RUN_KEYS)
    assert f"its newest whole checkpoint is {folder / 'step_000002.pt'} (step 2)" in str(
        error.value
    )


def test_export_of_an_unreadable_last_pt_refuses_naming_the_step_file_and_writes_nothing(
    tmp_path, capsys
):
    """An export from an older step would put a mesh of a step the run left beside its
    checkpoints; the line names that step's file, and the resume that trains the lost steps."""
    from dreamtext.cli import main

    workspace = tmp_path / "run"
    save_checkpoint(workspace, run_state(5))
    save_checkpoint(workspace, run_state(10))
    last = workspace / "checkpoints" / "last.pt"
    os.truncate(last, 1000)
    code = main(["export", "--workspace", str(workspace), "--no-video", "--formats", "ply"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    step_file = workspace / "checkpoints" / "step_000005.pt"
    assert err.splitlines()[-1] == (
        f"dreamtext: error: cannot read checkpoint {last} (a truncated or damaged file: "
        f"RuntimeError); its newest whole checkpoint is {step_file} (step 5): resuming the run "
        "(text --resume, or the same image or batch command) goes on from it and trains the "
        "steps after it again; or copy it over last.pt (cp --remove-destination) to use step 5 "
        "as it is"
    )
    assert sorted(p.name for p in workspace.iterdir()) == ["checkpoints"]


def test_export_of_a_damaged_only_checkpoint_says_the_run_cannot_be_exported(tmp_path, capsys):
    """A damaged last.pt with no step file beside it: the export said "delete it to start over",
    a training's advice; it says the run cannot be exported and names the command that trains it
    again in its folder, with its prompt. The run is left as it was."""
    from dreamtext.cli import main

    workspace = tmp_path / "run"
    save_checkpoint(workspace, run_state(5))
    (workspace / "config.json").write_text(json.dumps({"prompt": "a red cube"}))
    last = workspace / "checkpoints" / "last.pt"
    os.truncate(last, 1000)
    before = {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()}
    code = main(["export", "--workspace", str(workspace), "--no-video", "--formats", "ply"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == (
        f"dreamtext: error: cannot export {workspace}: {last} is unreadable (a truncated or "
        "damaged file: RuntimeError) and the run has no earlier checkpoint that is whole; train "
        "it again from scratch: `dreamtext text 'a red cube' --workspace "
        f"{shlex.quote(str(workspace))} "
        "--overwrite` with the flags it was trained with"
    )
    assert {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("name", ["last.pt", "step_000002.pt"])
def test_a_folder_named_as_a_checkpoint_is_named_as_such(tmp_path, capsys, name):
    """A folder in place of last.pt: the export said "last.pt is missing" (without a step file:
    "train first"), a new run or --overwrite stopped with an IsADirectoryError traceback; one in
    place of a step file was the same traceback when a resume's save pruned it. Each says what
    the folder is, and leaves the run as it was."""
    from dreamtext.cli import main

    workspace = train(builtin_config(tmp_path / "run", iters=4))  # last.pt 4, step_000002.pt
    folder = workspace / "checkpoints"
    (folder / name).unlink()
    (folder / name).mkdir()
    line = (
        f"{folder / name} is a folder, not a checkpoint; move it out of {folder} and run the "
        "command again"
    )
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*"))
    for resume, overwrite in ((True, False), (False, False), (False, True)):
        with pytest.raises(DreamtextError) as error:
            train(builtin_config(workspace, iters=6), resume=resume, overwrite=overwrite)
        assert str(error.value) == line
    if name == "last.pt":  # an export reads no step file
        code = main(["export", "--workspace", str(workspace), "--no-video", "--formats", "ply"])
        assert (code, capsys.readouterr().err.strip().splitlines()[-1]) == (
            2,
            f"dreamtext: error: {line}",
        )
    assert sorted(p.relative_to(workspace) for p in workspace.rglob("*")) == before


@pytest.mark.parametrize(
    ("name", "overwrite", "said"),
    [
        ("status.json", False, "is a folder, not a run's status; move it out of"),
        ("config.json", False, "is a folder, not a run config; "),
        ("mesh/mesh.json", True, "is a folder, not a run's file; move it out of"),
    ],
)
def test_a_folder_named_as_a_runs_file_is_named_as_such(tmp_path, name, overwrite, said):
    """A folder in place of status.json was an IsADirectoryError traceback at its first write;
    of config.json, a resume said "no config.json"; of mesh/mesh.json, --overwrite stopped with
    a traceback after removing the files before it. Each is one line, the run left as it was."""
    workspace = train(builtin_config(tmp_path / "run", iters=2))
    (workspace / "mesh").mkdir(exist_ok=True)
    (workspace / name).unlink(missing_ok=True)
    (workspace / name).mkdir()
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*"))
    with pytest.raises(DreamtextError) as error:
        train(builtin_config(workspace, iters=4), resume=not overwrite, overwrite=overwrite)
    assert str(error.value).startswith(f"{workspace / name} {said}")
    assert sorted(p.relative_to(workspace) for p in workspace.rglob("*")) == before


def test_text_resume_names_a_folder_in_place_of_config_json(tmp_path, capsys):
    """`dreamtext text PROMPT --resume` said "nothing to resume: no config.json" where a folder
    of that name stood: the line names it."""
    from dreamtext.cli import main

    workspace = train(builtin_config(tmp_path / "run", iters=2))
    (workspace / "config.json").unlink()
    (workspace / "config.json").mkdir()
    args = ["text", "a red cube", "--model", "builtin:shapes", "--workspace", str(workspace)]
    assert main([*args, "--resume", "--iters", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        f"dreamtext: error: {workspace / 'config.json'} is a folder, not a run config; "
    )


@pytest.mark.parametrize("kind", ["diverse", "image", "dash", "dashed prompt"])
def test_the_export_names_the_command_that_trained_the_run(tmp_path, monkeypatch, capsys, kind):
    """The command that trains the run again, as the export of a damaged only checkpoint names
    it: a `text --diverse` run was told `dreamtext image IMAGE ... (its image)`, an image its
    user never had; a run in a folder that starts with a dash `--workspace -runs/a`, which
    argparse refuses ("expected one argument"); a prompt that starts with a dash goes last, after
    `--` (before it, argparse took it for a flag). An image run's recorded image is named."""
    from dreamtext.cli import main

    monkeypatch.chdir(tmp_path)
    workspace = Path("-runs/a" if kind == "dash" else "run")
    save_checkpoint(workspace, run_state(5))
    config = {"prompt": "-red mug" if kind == "dashed prompt" else "An image of a <descriptor> mug"}
    if kind not in ("dash", "dashed prompt"):
        (workspace / "descriptor").mkdir()
        (workspace / "descriptor" / "sentence.json").write_text("{}")
        config["image_to_3d"] = {"image": "/data/my mug.png"}
    if kind == "diverse":
        config["diverse"] = {"prompt": "a red mug", "seed": 3}
    (workspace / "config.json").write_text(json.dumps(config))
    os.truncate(workspace / "checkpoints" / "last.pt", 1000)
    code = main(["export", f"--workspace={workspace}", "--no-video", "--formats", "ply"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    expected = {
        "diverse": "`dreamtext text 'a red mug' --diverse --seed 3 --workspace run --overwrite`",
        "image": "`dreamtext image '/data/my mug.png' --workspace run --overwrite`",
        "dash": "`dreamtext text 'An image of a <descriptor> mug' --workspace=-runs/a --overwrite`",
        "dashed prompt": "`dreamtext text --workspace run --overwrite -- '-red mug'`",
    }[kind]
    assert err.endswith(f"from scratch: {expected} with the flags it was trained with")


def test_a_killed_runs_lock_file_does_not_hold_the_folder(tmp_path):
    """SIGKILL leaves .dreamtext.lock (its removal is the claim's last act), but the lock is the
    kernel's flock, gone with the process, and its record names a process that is gone: the
    next claim (a --resume, an export's live-run check, a batch) is not refused."""
    from dreamtext.processes import LOCK_NAME, claim_workspace, workspace_holder
    from dreamtext.runstatus import live_run

    workspace = tmp_path / "run"
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; from dreamtext.processes import claim_workspace\n"
            "with claim_workspace(sys.argv[1]): os.kill(os.getpid(), 9)",
            str(workspace),
        ],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert killed.returncode == -9 and (workspace / LOCK_NAME).is_file()
    assert workspace_holder(workspace) is None and live_run(workspace) is None
    with claim_workspace(workspace):
        pass
    assert not (workspace / LOCK_NAME).exists()


def test_a_failing_file_server_is_not_taken_for_a_damaged_last_pt(tmp_path, monkeypatch, capsys):
    """A stale NFS handle or an I/O error reading last.pt says nothing of the file: going on from
    an older step file would replace a whole last.pt at the first save. One line, exit 2, and
    the checkpoints stay as they were."""
    import errno

    from dreamtext.cli import main

    workspace = train(builtin_config(tmp_path / "run", iters=4))  # last 4, step_000002.pt
    folder = workspace / "checkpoints"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    load = torch.load

    def stale(path, *args, **kwargs):
        if Path(path).name == "last.pt":
            raise OSError(errno.ESTALE, "Stale file handle", str(path))
        return load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", stale)
    capsys.readouterr()
    code = main(["text", "a red cube", "--workspace", str(workspace), "--resume", "--iters", "6"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and "resuming from" not in err
    assert err.splitlines()[-1].startswith("dreamtext: error: ")
    assert "Stale file handle" in err and str(folder / "last.pt") in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_missing_last_pt_resumes_from_the_newest_whole_step_file_to_the_same_run(
    tmp_path, capsys
):
    """A last.pt deleted by hand or left out by a copy or sync cut short, beside step files:
    `--resume` said 'nothing to resume … drop --resume', and the new run then deleted the step
    files. Now it goes on from the newest one, as for an unreadable last.pt."""
    whole = train(builtin_config(tmp_path / "whole", iters=6))
    workspace = train(builtin_config(tmp_path / "split", iters=4))  # last.pt 4, step_000002.pt
    last = workspace / "checkpoints" / "last.pt"
    last.unlink()
    capsys.readouterr()
    train(builtin_config(workspace, iters=6), resume=True)
    step_file = workspace / "checkpoints" / "step_000002.pt"
    assert (
        f"dreamtext: {last} is missing; resuming from {step_file}, the newest whole checkpoint, "
        "at step 2: steps 3-4 are lost and trained again"
    ) in capsys.readouterr().err.splitlines()
    resumes = json.loads((workspace / "config.json").read_text())["resumes"]
    assert resumes[-1]["step"] == 2
    assert resumes[-1]["fallback"] == {
        "unreadable": "checkpoints/last.pt",
        "why": "missing",
        "from": "checkpoints/step_000002.pt",
    }
    ours, theirs = load_checkpoint(last), load_checkpoint(whole / "checkpoints" / "last.pt")
    assert ours["step"] == 6
    assert all(torch.equal(ours["field"][k], theirs["field"][k]) for k in theirs["field"])


def test_a_new_run_does_not_delete_the_step_files_of_a_run_whose_last_pt_is_missing(tmp_path):
    """The run can still be resumed from its step files, so typing the training command again
    is refused as for any run with a checkpoint (it deleted them), unless --overwrite."""
    workspace = train(builtin_config(tmp_path / "run", iters=4))
    (workspace / "checkpoints" / "last.pt").unlink()
    before = {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()}
    with pytest.raises(DreamtextError) as error:
        train(builtin_config(workspace, iters=4))
    assert str(error.value) == (  # the step --resume goes on from: its newest whole step file's
        f"{workspace} already holds a run of this prompt at step 2; pass --resume to continue "
        "it, --overwrite to train it again from scratch, or --workspace NEW_FOLDER"
    )
    assert {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()} == before
    train(builtin_config(workspace, iters=2), overwrite=True)
    assert files(workspace / "checkpoints", "*.pt") == ["last.pt"]  # --overwrite replaced it


def test_a_missing_last_pt_without_a_whole_step_file_still_says_drop_resume(tmp_path):
    """Step files that are all damaged hold nothing to go on from or to keep: the resume says
    to start a new run, and that new run is not refused."""
    workspace = train(builtin_config(tmp_path / "run", iters=4))
    folder = workspace / "checkpoints"
    (folder / "last.pt").unlink()
    os.truncate(folder / "step_000002.pt", 1000)
    with pytest.raises(DreamtextError) as error:
        train(builtin_config(workspace, iters=4), resume=True)
    assert str(error.value) == (
        f"nothing to resume in {workspace}: no checkpoints/last.pt; drop --resume to start a "
        "new run"
    )
    train(builtin_config(workspace, iters=2))
    assert load_checkpoint(folder / "last.pt")["step"] == 2


def test_a_batch_line_whose_last_pt_is_missing_resumes_from_its_step_file(tmp_path, capsys):
    """batch resumed a line only when last.pt was a file: with only step files it trained the
    line again from scratch, over them, without a word."""
    from dreamtext.batch import BatchOptions, run_batch

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red cube\n")
    settings = {**TINY_TRAIN, "guidance": {"model": "builtin:shapes"}}
    options = BatchOptions(root=tmp_path / "root")
    run_batch(prompts, {**settings, "iters": 4}, options=options)
    workspace = tmp_path / "root" / "a_red_cube"
    (workspace / "checkpoints" / "last.pt").unlink()
    capsys.readouterr()
    records = run_batch(prompts, {**settings, "iters": 6}, options=options).records
    assert [r["status"] for r in records] == ["finished"]
    assert (
        f"dreamtext: {workspace / 'checkpoints' / 'last.pt'} is missing; resuming from "
        f"{workspace / 'checkpoints' / 'step_000002.pt'}, the newest whole checkpoint, at step "
        "2: steps 3-4 are lost and trained again"
    ) in capsys.readouterr().err.splitlines()
    resumes = json.loads((workspace / "config.json").read_text())["resumes"]
    assert resumes[-1]["fallback"]["from"] == "checkpoints/step_000002.pt"
    steps = [
        json.loads(line)["step"] for line in (workspace / "log.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_export_of_a_missing_last_pt_names_the_step_file_not_train_first(tmp_path, capsys):
    """'train first' sent the user to a new run, which deletes the step files."""
    from dreamtext.cli import main

    workspace = tmp_path / "run"
    save_checkpoint(workspace, run_state(5))
    save_checkpoint(workspace, run_state(10))
    last = workspace / "checkpoints" / "last.pt"
    last.unlink()
    code = main(["export", "--workspace", str(workspace), "--no-video", "--formats", "ply"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    step_file = workspace / "checkpoints" / "step_000005.pt"
    assert err.splitlines()[-1] == (
        f"dreamtext: error: {last} is missing; its newest whole checkpoint is {step_file} "
        "(step 5): resuming the run (text --resume, or the same image or batch command) goes on "
        "from it and trains the steps after it again; or copy it over last.pt "
        "(cp --remove-destination) to use step 5 as it is"
    )
    assert sorted(p.name for p in workspace.iterdir()) == ["checkpoints"]


def test_a_byte_changed_in_a_tensor_of_last_pt_resumes_from_the_newest_whole_step_file(
    tmp_path, capsys
):
    """A bit flipped inside last.pt's tensor data (a disk, NFS, an rsync) loaded without a word
    and the run trained on from garbage; the checksum saved in it tells, and the resume goes on
    from the newest whole step file as for a truncated last.pt, to the same field as a run that
    was never damaged."""
    whole = train(builtin_config(tmp_path / "whole", iters=6))
    workspace = train(builtin_config(tmp_path / "split", iters=4))  # last.pt 4, step_000002.pt
    last = workspace / "checkpoints" / "last.pt"
    flip_a_tensor_byte(last)
    with pytest.raises(DreamtextError, match="already holds a run of this prompt at step 2;"):
        train(builtin_config(workspace, iters=6))  # where --resume goes on from
    capsys.readouterr()
    train(builtin_config(workspace, iters=6), resume=True)
    step_file = workspace / "checkpoints" / "step_000002.pt"
    assert (
        f"dreamtext: {last} is unreadable (a damaged file: its checksum does not match); "
        f"resuming from {step_file}, the newest whole checkpoint, at step 2: steps 3-4 are lost "
        "and trained again; the unreadable last.pt is removed"
    ) in capsys.readouterr().err.splitlines()
    fallback = json.loads((workspace / "config.json").read_text())["resumes"][-1]["fallback"]
    assert fallback == {
        "unreadable": "checkpoints/last.pt",
        "why": "a damaged file: its checksum does not match",
        "from": "checkpoints/step_000002.pt",
    }
    ours, theirs = load_checkpoint(last), load_checkpoint(whole / "checkpoints" / "last.pt")
    assert ours["step"] == 6
    assert all(torch.equal(ours["field"][k], theirs["field"][k]) for k in theirs["field"])


def test_export_of_a_last_pt_with_a_changed_byte_refuses_naming_the_step_file(tmp_path, capsys):
    """An export of a damaged field wrote a mesh of garbage; it refuses as for a truncated
    last.pt, and writes nothing."""
    from dreamtext.cli import main

    workspace = tmp_path / "run"
    table = {"table": torch.arange(10_000, dtype=torch.float32)}
    save_checkpoint(workspace, {**run_state(5), "field": table})
    save_checkpoint(workspace, {**run_state(10), "field": table})
    last = workspace / "checkpoints" / "last.pt"
    flip_a_tensor_byte(last)
    code = main(["export", "--workspace", str(workspace), "--no-video", "--formats", "ply"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    step_file = workspace / "checkpoints" / "step_000005.pt"
    assert err.splitlines()[-1].startswith(
        f"dreamtext: error: cannot read checkpoint {last} (a damaged file: its checksum does not "
        f"match); its newest whole checkpoint is {step_file} (step 5): resuming the run"
    )
    assert sorted(p.name for p in workspace.iterdir()) == ["checkpoints"]


def test_a_finished_run_resumed_to_more_steps_drops_its_old_final_preview(tmp_path, monkeypatch):
    """The final.png of the run's earlier end stayed while it trained on (and for good if it
    was stopped), and the viewer showed it as the newest picture, captioned "final preview"."""
    import dreamtext.trainer as trainer

    workspace = train(builtin_config(tmp_path / "run", iters=2))
    final = workspace / "previews" / "final.png"
    assert final.is_file()
    real_step, seen = trainer.train_step, []

    def watched(run):
        seen.append(final.exists())
        return real_step(run)

    monkeypatch.setattr(trainer, "train_step", watched)
    train(builtin_config(workspace, iters=4), resume=True)
    assert seen == [False, False]
    assert final.is_file()  # the new end's


def test_a_fifo_in_place_of_last_pt_is_named_and_a_folder_in_place_of_a_step_file_exports(
    tmp_path, capsys
):
    """A non-file that is no folder (a FIFO) in place of last.pt is refused as one, where the
    export said "train first"; a folder in place of a step file, which an export does not read,
    leaves the run's export as it was."""
    from dreamtext.cli import main

    workspace = train(builtin_config(tmp_path / "run", iters=4))  # last.pt 4, step_000002.pt
    folder = workspace / "checkpoints"
    (folder / "step_000002.pt").unlink()
    (folder / "step_000002.pt").mkdir()
    export = ["export", "--workspace", str(workspace), "--no-video", "--formats", "ply"]
    assert main(export) == 0
    capsys.readouterr()
    (folder / "last.pt").unlink()
    os.mkfifo(folder / "last.pt")
    assert (main(export), capsys.readouterr().err.strip().splitlines()[-1]) == (
        2,
        f"dreamtext: error: {folder / 'last.pt'} is a FIFO, not a checkpoint; move it out "
        f"of {folder} and run the command again",
    )


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"config.json": '{"prompt": "a red cube"}'}, "`dreamtext text 'a red cube' --workspace "),
        ({"config.json": "[1]"}, "`dreamtext text PROMPT --workspace "),
        ({"config.json": '{"seed": 0}'}, "`dreamtext text PROMPT --workspace "),
        ({"descriptor/sentence.json": "{}"}, "`dreamtext image IMAGE --workspace "),
    ],
)
def test_the_command_that_trains_a_run_again_is_its_own_and_parses(tmp_path, files, expected):
    """An image run is told `image IMAGE` (a `text` command would train another run), a
    config.json without a prompt is PROMPT (a config.json that is no mapping was a traceback),
    and a folder with a space is quoted, so that the command can be typed as it is."""
    import shlex

    from dreamtext.export import retrain_command

    workspace = tmp_path / "my run"
    for name, text in files.items():
        (workspace / name).parent.mkdir(parents=True, exist_ok=True)
        (workspace / name).write_text(text, encoding="utf-8")
    command = retrain_command(workspace)
    assert command.startswith(expected + shlex.quote(str(workspace)) + " --overwrite`")


def _typed_in_bash(command: str) -> list[str]:
    """The words bash makes of ``command`` (backquotes stripped), ``$'...'`` included."""
    said = subprocess.run(
        ["bash", "-c", f"printf '%s\\0' {command.strip('`')}"],
        capture_output=True,
        check=True,
    )
    return os.fsdecode(said.stdout).split("\0")[:-1]


def test_the_commands_that_train_a_run_again_hold_no_control_character_and_parse(tmp_path):
    """export's and batch's commands that train a run again were built twice: export's quoted an
    image path holding ESC as it is ('...<ESC>...', a terminal obeys it, and the line as the CLI
    prints it names another file); batch's wrote a dash folder holding one `--workspace
    $'-runs...'`, which argparse takes for a flag. Both now ``$'...'`` and ``--workspace=``."""
    from dreamtext.batch import Entry, line_command
    from dreamtext.cli import build_parser
    from dreamtext.export import retrain_command

    image = str(tmp_path / "a\x1bmug.png")
    workspace = tmp_path / "mug"
    (workspace / "descriptor").mkdir(parents=True)
    (workspace / "descriptor" / "sentence.json").write_text("{}", encoding="utf-8")
    (workspace / "config.json").write_text(json.dumps({"image_to_3d": {"image": image}}))
    dashed = Path("-runs\x01") / "a_red_cube"
    commands = [
        (retrain_command(workspace), "image", image, workspace),
        (line_command(Entry(1, "a red cube", "text", "a red cube", dashed)), "text", None, dashed),
    ]
    for command, kind, given, folder in commands:
        assert "\x1b" not in command and "\x01" not in command, command
        words = _typed_in_bash(command)
        assert words[:2] == ["dreamtext", kind], words
        args = build_parser().parse_command_line(words[1:])
        assert Path(args.workspace) == folder and args.overwrite
        if given is not None:
            assert args.image == given


@pytest.mark.parametrize(
    ("record", "removed"),
    [({"step": 3}, 3), ({"step": 2}, None), ({"step": True}, None), ([3], None), ("3", None)],
)
def test_only_an_export_of_a_step_past_the_resume_is_removed(tmp_path, record, removed):
    """A resume from step 2 removes an export of step 3 (one step past it is the other branch's
    too); of step 2 it stays, as does one whose mesh.json says no step (a list, a string: a
    file edited by hand is no traceback on every resume)."""
    from dreamtext.export import MESH_OUTPUTS
    from dreamtext.trainer import remove_later_export

    (tmp_path / "mesh").mkdir()
    (tmp_path / "video").mkdir()
    for name in MESH_OUTPUTS:
        (tmp_path / "mesh" / name).write_bytes(b"x")
    (tmp_path / "mesh" / "mesh.json").write_text(json.dumps(record))
    (tmp_path / "video" / "turntable.mp4").write_bytes(b"x")
    assert remove_later_export(tmp_path, 2) == removed
    left = files(tmp_path / "mesh", "*") + files(tmp_path / "video", "*")
    assert left == ([] if removed else [*sorted(MESH_OUTPUTS), "turntable.mp4"])


def test_an_export_of_the_left_branch_cut_before_its_swap_is_finished_then_removed(
    tmp_path, capsys, monkeypatch
):
    """An export of step 4 killed after its files were staged whole (``.export-ready-*``) and
    before the swap: mesh.json still said step 2, so a resume from step 2 kept everything, and
    the next export swapped the left branch's step-4 files in first (its --no-video export then
    kept that branch's turntable). The resume finishes the swap, then removes that export."""
    from dreamtext import export as export_module

    workspace = train(builtin_config(tmp_path / "run", iters=2))
    options = ExportOptions(resolution=24, texture_size=32, frames=60, video_size=16)
    export_workspace(workspace, options)
    train(builtin_config(workspace, iters=4), resume=True)
    with monkeypatch.context() as patched:  # killed once staged: nothing swaps it in
        patched.setattr(export_module, "finish_replacements", lambda *args, **kwargs: None)
        export_workspace(workspace, options)
    assert [p.name[:14] for p in workspace.glob(".export-ready-*")] == [".export-ready-"]
    assert json.loads((workspace / "mesh" / "mesh.json").read_text())["step"] == 2
    assert f"removed the export of step 4 (mesh/, video/) of {workspace}" in "\n".join(
        roll_back_to_step_2(workspace, capsys)
    )
    assert files(workspace, ".export-*") == []
    assert files(workspace / "mesh", "*") == files(workspace / "video", "*") == []
