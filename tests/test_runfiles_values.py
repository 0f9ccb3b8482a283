"""runfiles' reads and refusals, with the values their docstrings promise."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest

from dreamtext.errors import DreamtextError
from dreamtext.runfiles import check_writable, read_status

as_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or not Path("/proc/self").exists(),
    reason="root passes access() everywhere; the probe is root's check",
)


@as_root
def test_root_is_refused_a_folder_the_file_system_takes_no_new_folders_in():
    """For root, access() passes /proc: the probe asks the file system, and the line names the
    folder that takes none (the folder itself, or the nearest existing one above it)."""
    with pytest.raises(DreamtextError, match=r"^cannot write in /proc: it takes no new files"):
        check_writable(Path("/proc"), "FIX")
    with pytest.raises(
        DreamtextError, match=r"^cannot make /proc/no/such: /proc takes no new folders .*; FIX$"
    ):
        check_writable(Path("/proc/no/such"), "FIX")


@pytest.mark.parametrize("state", ["paused", None, 3])
def test_a_status_of_no_known_state_is_no_status(tmp_path, state):
    (tmp_path / "status.json").write_text(json.dumps({"state": state, "step": 5}))
    assert read_status(tmp_path) is None


def test_a_status_of_a_known_state_is_read(tmp_path):
    (tmp_path / "status.json").write_text(json.dumps({"state": "interrupted", "step": 5}))
    assert read_status(tmp_path) == {"state": "interrupted", "step": 5}


def _status(folder: Path, **process) -> None:
    status = {"state": "running", "phase": "train", "step": 12, **process}
    (folder / "status.json").write_text(json.dumps(status), encoding="utf-8")


def test_a_run_is_refused_only_to_another_live_process_of_this_machine(tmp_path):
    """check_not_running: this very process's own status (a later stage of the same command)
    passes, as does a run of another machine (nothing to ask there); a live process of this
    machine is refused, named with the run's phase and step."""
    import subprocess
    import sys

    from dreamtext.errors import WorkspaceInUse
    from dreamtext.processes import this_process
    from dreamtext.runfiles import check_not_running

    _status(tmp_path, **this_process())
    check_not_running(tmp_path)
    _status(tmp_path, **{**this_process(), "host": "another-node", "pid": 1})
    check_not_running(tmp_path)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _status(tmp_path, **{**this_process(), "pid": other.pid, "pid_start": None})
        with pytest.raises(
            WorkspaceInUse,
            match=re.escape(
                f"process {other.pid} on this machine is running its run (train phase, step 12)"
            ),
        ):
            check_not_running(tmp_path)
    finally:
        other.kill()
        other.wait()


def test_a_copy_of_a_running_run_is_not_refused_for_the_process_running_the_original(tmp_path):
    """A run folder copied (cp -r, rsync) while its run trained carries its status.json
    (running, the live process's record) and its .dreamtext.lock with the same record: a resume
    of the copy was refused 'in use: process N on this machine is running its run', N training
    the original. No one holds the copy's lock, so neither record is taken as the copy's; the
    original, whose lock N holds, is still refused."""
    import fcntl
    import subprocess
    import sys

    from dreamtext.errors import WorkspaceInUse
    from dreamtext.processes import process_start, this_process, workspace_holder
    from dreamtext.runfiles import check_not_running

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {**this_process(), "pid": other.pid, "pid_start": process_start(other.pid)}
        for folder in (tmp_path / "run", tmp_path / "copy"):
            folder.mkdir()
            _status(folder, **record)
            (folder / ".dreamtext.lock").write_text(json.dumps(record))
        check_not_running(tmp_path / "copy")
        assert workspace_holder(tmp_path / "copy") is None
        with open(tmp_path / "run" / ".dreamtext.lock", "a", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # as the live run holds its own
            with pytest.raises(WorkspaceInUse, match=f"process {other.pid} on this machine"):
                check_not_running(tmp_path / "run")
            assert workspace_holder(tmp_path / "run") == other.pid
    finally:
        other.kill()
        other.wait()


def test_a_resume_base_leaves_out_the_records_of_what_ran(tmp_path):
    """read_run_config: config.json without encoding_backend, ran_on, resumes (records, not
    settings) and the stage sections; the settings as recorded."""
    from dreamtext.runfiles import read_run_config

    record = {
        "prompt": "a red cube",
        "iters": 100,
        "encoding_backend": "torch",
        "ran_on": {"device": "cpu"},
        "resumes": [{"step": 50, "changed": {}}],
        "image_to_3d": {"image": "/x/mug.png"},
        "diverse": {"prompt": "a mug", "seed": 3},
    }
    (tmp_path / "config.json").write_text(json.dumps(record), encoding="utf-8")
    assert read_run_config(tmp_path, "FIX") == {"prompt": "a red cube", "iters": 100}


@pytest.mark.parametrize(
    ("recorded", "own_file", "wanted"),
    [
        # The run's own tokens, recorded where the run was made: the moved folder's file.
        ("/old/place/descriptor/learned_embeds.safetensors", True, "OWN"),
        # ... but where the moved folder lacks it, the record stands (its line names it).
        ("/old/place/descriptor/learned_embeds.safetensors", False, "RECORDED"),
        # A user's own tokens file is no run's: kept, though the folder has its own.
        ("/my/tokens/learned_embeds.safetensors", True, "RECORDED"),
        ("/my/tokens/embeds.safetensors", True, "RECORDED"),
    ],
)
def test_a_moved_run_reads_its_own_learned_tokens(tmp_path, recorded, own_file, wanted):
    from dreamtext.runfiles import read_run_config

    workspace = tmp_path / "moved run"
    (workspace / "descriptor").mkdir(parents=True)
    own = workspace / "descriptor" / "learned_embeds.safetensors"
    if own_file:
        own.write_bytes(b"tokens")
    config = {"prompt": "a mug", "guidance": {"textual_inversion": recorded}}
    (workspace / "config.json").write_text(json.dumps(config), encoding="utf-8")
    got = read_run_config(workspace, "FIX")["guidance"]["textual_inversion"]
    assert got == (os.path.abspath(own) if wanted == "OWN" else recorded)


def _config(folder: Path, **fields) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(fields), encoding="utf-8")


def _sentence(folder: Path, **fields) -> None:
    (folder / "descriptor").mkdir(parents=True, exist_ok=True)
    record = json.dumps(fields)
    (folder / "descriptor" / "sentence.json").write_text(record, encoding="utf-8")


def _checkpoint(folder: Path, step: int) -> None:
    """checkpoints/last.pt and the step its save recorded (runfiles.step_record)."""
    from dreamtext.runfiles import step_record

    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    last = folder / "checkpoints" / "last.pt"
    last.write_bytes(b"checkpoint of step %d" % step)
    (folder / "checkpoints" / "last.step.json").write_bytes(step_record(last, step))


def test_stage_sections_are_mappings_only(tmp_path):
    from dreamtext.runfiles import read_stage_sections

    _config(tmp_path, prompt="a mug", image_to_3d="mug.png", diverse=None)
    assert read_stage_sections(tmp_path) == {}
    _config(tmp_path, prompt="a mug", image_to_3d={"image": "/x/mug.png"}, diverse=[1])
    assert read_stage_sections(tmp_path) == {"image_to_3d": {"image": "/x/mug.png"}}


def test_an_earlier_versions_folder_is_taken_only_for_this_run_and_while_the_new_one_is_missing(
    tmp_path,
):
    from dreamtext.runfiles import prompt_workspace

    key = ("text", "café au lait")
    legacy, new = tmp_path / "caf_au_lait", tmp_path / "café_au_lait"
    _config(legacy, prompt="a cup of tea")  # another prompt's run in the folder's name
    assert prompt_workspace(tmp_path, "café au lait", key) == new
    _config(legacy, prompt="café au lait")
    assert prompt_workspace(tmp_path, "café au lait", key) == legacy
    new.mkdir()
    assert prompt_workspace(tmp_path, "café au lait", key) == new


def test_describe_may_go_on_in_its_own_image_runs_folder(tmp_path, monkeypatch):
    """An image→3D run stopped in its describe stage (config.json with its image_to_3d section,
    no sentence yet) is not a text→3D run; its image passed by a relative path is the same."""
    from dreamtext.runfiles import check_describe_workspace

    monkeypatch.chdir(tmp_path)
    image = tmp_path / "mug.png"
    image.write_bytes(b"png")
    workspace = tmp_path / "run"
    _config(workspace, prompt="An image of a mug", image_to_3d={"image": str(image)})
    check_describe_workspace(workspace, "mug.png")
    check_describe_workspace(workspace, image)
    with pytest.raises(DreamtextError, match=r"holds the image→3D run of .*mug.png; pass"):
        check_describe_workspace(workspace, tmp_path / "cup.png")


def test_describe_reads_the_image_of_the_runs_config_before_its_sentence(tmp_path):
    from dreamtext.runfiles import check_describe_workspace

    mug, cup = tmp_path / "mug.png", tmp_path / "cup.png"
    workspace = tmp_path / "run"
    _config(workspace, prompt="An image of a mug", image_to_3d={"image": str(mug)})
    _sentence(workspace, image=str(cup), sentence="An image of a cup")
    check_describe_workspace(workspace, mug)


def test_describe_takes_the_recorded_image_moved_or_copied_elsewhere(tmp_path):
    """describe a.png --workspace W, then a.png moved to b.png: `describe b.png --workspace W`
    was refused as "W holds the sentence of a.png" (a file gone, and the same image), while
    `image b.png --workspace W` went on (same_image). Other bytes are still another image."""
    from dreamtext.runfiles import check_describe_workspace

    first, moved, other = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    workspace = tmp_path / "run"
    _sentence(workspace, image=str(first), sentence="An image of a mug")
    moved.write_bytes(b"the mug")
    other.write_bytes(b"the cup")
    with pytest.raises(DreamtextError, match=r"holds the sentence of .*a\.png; pass"):
        check_describe_workspace(workspace, moved)  # no file a.png, no copy: nothing to compare
    (workspace / "descriptor").mkdir(exist_ok=True)
    (workspace / "descriptor" / "source.png").write_bytes(b"the mug")
    check_describe_workspace(workspace, moved)  # the run's copy's bytes
    (workspace / "descriptor" / "source.png").unlink()
    first.write_bytes(b"the mug")
    check_describe_workspace(workspace, moved)  # the recorded file's bytes
    with pytest.raises(DreamtextError, match=r"holds the sentence of .*a\.png; pass"):
        check_describe_workspace(workspace, other)


@pytest.mark.parametrize("trained", ["sentence", "checkpoint"])
def test_describe_is_refused_once_descriptor_training_has_started(tmp_path, trained):
    """Started: the record names a trained sentence, or descriptor/checkpoints/last.pt is
    there (either alone)."""
    from dreamtext.runfiles import check_describe_workspace

    image = tmp_path / "mug.png"
    extra = {"trained_sentence": "An image of a <mug>"} if trained == "sentence" else {}
    _sentence(tmp_path / "run", image=str(image), sentence="An image of a mug", **extra)
    if trained == "checkpoint":
        _checkpoint(tmp_path / "run" / "descriptor", 3)
    with pytest.raises(DreamtextError, match="whose descriptor training has started"):
        check_describe_workspace(tmp_path / "run", image)


def test_an_image_of_the_same_bytes_as_the_recorded_one_is_that_runs(tmp_path):
    """same_image: a run with no copy yet continues from a file of the recorded image's bytes
    (the image copied elsewhere); another image's bytes are refused."""
    from dreamtext.runfiles import check_image_workspace

    recorded, elsewhere = tmp_path / "mug.png", tmp_path / "copied" / "mug.png"
    recorded.write_bytes(b"the mug")
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"the mug")
    _sentence(tmp_path / "run", image=str(recorded), sentence="An image of a mug")
    assert check_image_workspace(tmp_path / "run", elsewhere) is None
    elsewhere.write_bytes(b"another mug")
    with pytest.raises(DreamtextError, match="holds the image→3D run of"):
        check_image_workspace(tmp_path / "run", elsewhere)


def test_a_missing_image_names_the_runs_copy_only_where_it_is_the_runs_image(tmp_path):
    from dreamtext.runfiles import check_image

    workspace = tmp_path / "run"
    _sentence(workspace, image=str(tmp_path / "mug.png"), sentence="An image of a mug")
    (workspace / "descriptor" / "source.png").write_bytes(b"png")
    with pytest.raises(DreamtextError, match="to continue the run in"):
        check_image(tmp_path / "mug.png", workspace)
    with pytest.raises(DreamtextError) as refused:
        check_image(tmp_path / "cup.png", workspace)
    assert "continue the run" not in str(refused.value)


def test_an_older_image_run_with_learned_tokens_is_no_text_run(tmp_path):
    """A run from before the stage sections: its sentence record and its config's learned
    tokens make it an image→3D run; a config without them is a text→3D run's."""
    from dreamtext.runfiles import check_image_workspace

    image = tmp_path / "mug.png"
    image.write_bytes(b"png")
    workspace = tmp_path / "run"
    _sentence(workspace, image=str(image), sentence="An image of a mug")
    tokens = str(workspace / "descriptor" / "learned_embeds.safetensors")
    _config(workspace, prompt="An image of a <mug>", guidance={"textual_inversion": tokens})
    assert check_image_workspace(workspace, image)["prompt"] == "An image of a <mug>"
    _config(workspace, prompt="a red cube", guidance={})
    with pytest.raises(DreamtextError, match="holds a text→3D run of 'a red cube'"):
        check_image_workspace(workspace, image)


def test_a_step_record_names_a_whole_number_only(tmp_path):
    from dreamtext.runfiles import _file_identity, recorded_step

    _checkpoint(tmp_path, 7)
    assert recorded_step(tmp_path) == 7
    last = tmp_path / "checkpoints" / "last.pt"
    record = {"step": "7", "file": _file_identity(last)}
    (tmp_path / "checkpoints" / "last.step.json").write_text(json.dumps(record))
    assert recorded_step(tmp_path) is None


def test_a_run_at_its_last_step_is_called_finished(tmp_path):
    """held_run_error: step ≥ iters is a finished run, which --resume alone does not train,
    but exports when the mesh is missing: trained with --no-export, or its export at the end cut
    short (a kill), which was called finished and offered more steps only."""
    from dreamtext.runfiles import held_run_error

    _config(tmp_path, prompt="a red cube", iters=100, export=False)
    line = str(held_run_error(tmp_path, 100, None))
    export = f"`dreamtext export --workspace {shlex.quote(str(tmp_path))}` makes it"
    assert (
        f", finished at step 100 with no mesh (--no-export; {export}); pass --resume --iters N "
        "(above 100) to train it further," in line
    )
    _config(tmp_path, prompt="a red cube", iters=100, export=True)
    line = str(held_run_error(tmp_path, 100, None))
    assert f", finished at step 100 with no mesh (export cut short; {export}); pass" in line
    line = str(held_run_error(tmp_path, 100, tmp_path / "config.json"))  # its own, as --config
    assert f"finished at step 100 with no mesh (export cut short; {export}), where" in line
    (tmp_path / "mesh").mkdir()
    (tmp_path / "mesh" / "mesh.glb").write_bytes(b"glTF")
    (tmp_path / "mesh" / "mesh.json").write_text(json.dumps({"step": 100}))
    line = str(held_run_error(tmp_path, 100, None))
    assert ", finished at step 100; pass --resume --iters N (above 100)" in line
    line = str(held_run_error(tmp_path, 99, None))
    assert " at step 99;" in line and "--resume to continue it" in line


def test_a_new_runs_folder_checks(tmp_path):
    """check_new_run_workspace: a run of this prompt with a recorded step is refused without
    --overwrite, passed with it; the prompt is compared up to Unicode normalisation; a folder
    with a lock file is left to the command."""
    import unicodedata

    from dreamtext.runfiles import check_new_run_workspace

    workspace = tmp_path / "run"
    _config(workspace, prompt=unicodedata.normalize("NFC", "café"))
    _checkpoint(workspace, 40)
    nfd = unicodedata.normalize("NFD", "café")
    with pytest.raises(DreamtextError, match="already holds a run of this prompt at step 40"):
        check_new_run_workspace(workspace, nfd, False, None)
    check_new_run_workspace(workspace, nfd, True, None)
    (workspace / ".dreamtext.lock").write_text("{}")
    check_new_run_workspace(workspace, nfd, False, None)


def test_a_new_run_is_refused_a_folder_another_live_process_runs(tmp_path):
    import subprocess
    import sys

    from dreamtext.errors import WorkspaceInUse
    from dreamtext.processes import this_process
    from dreamtext.runfiles import check_new_run_workspace

    workspace = tmp_path / "run"
    _config(workspace, prompt="a red cube")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _status(workspace, **{**this_process(), "pid": other.pid, "pid_start": None})
        with pytest.raises(WorkspaceInUse):
            check_new_run_workspace(workspace, "a red cube", True, None)
    finally:
        other.kill()
        other.wait()


def test_another_prompt_into_a_diverse_run_names_its_command_with_its_seed(tmp_path):
    from dreamtext.runfiles import check_new_run_workspace

    workspace = tmp_path / "run"
    _config(workspace, prompt="An image of a mug", diverse={"prompt": "a mug", "seed": 3})
    with pytest.raises(DreamtextError) as refused:
        check_new_run_workspace(workspace, "a cup", False, None)
    command = f"dreamtext text 'a mug' --diverse --seed 3 --workspace {shlex.quote(str(workspace))}"
    assert f"holds the --diverse run of 'a mug'; `{command}` continues it" in str(refused.value)


def test_a_file_or_a_dangling_link_in_the_workspaces_place_is_named_as_such(tmp_path):
    """check_writable: a file where the folder (or a folder above it) would be is 'a file',
    a link to nowhere is that link, each with the fix at the end."""
    from dreamtext.runfiles import check_writable

    (tmp_path / "afile").write_text("x")
    with pytest.raises(DreamtextError) as refused:
        check_writable(tmp_path / "afile" / "run", "FIX")
    assert str(refused.value) == (
        f"{tmp_path / 'afile' / 'run'} cannot be a folder: {tmp_path / 'afile'} is a file; "
        "move that file away, or FIX"
    )
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(DreamtextError) as refused:
        check_writable(tmp_path / "link", "FIX")
    assert str(refused.value) == (
        f"{tmp_path / 'link'} cannot be a folder: {tmp_path / 'link'} is a link to "
        f"{tmp_path / 'gone'}, which does not exist; make that folder, or FIX"
    )


def test_a_run_whose_image_is_gone_continues_from_a_file_of_its_copys_bytes(tmp_path):
    """same_image: the recorded image deleted, a file of the copy's bytes elsewhere is that run's
    image; a file of other bytes is refused."""
    from dreamtext.runfiles import check_image_workspace

    workspace = tmp_path / "run"
    _sentence(workspace, image=str(tmp_path / "mug.png"), sentence="An image of a mug")
    (workspace / "descriptor" / "source.png").write_bytes(b"the mug")
    moved = tmp_path / "moved.png"
    moved.write_bytes(b"the mug")
    assert check_image_workspace(workspace, moved) is None
    moved.write_bytes(b"a cup")
    with pytest.raises(DreamtextError, match="holds the image→3D run of"):
        check_image_workspace(workspace, moved)


def test_an_image_edited_since_its_run_copied_it_is_refused(tmp_path):
    from dreamtext.runfiles import check_image_workspace

    workspace = tmp_path / "run"
    image = tmp_path / "mug.png"
    image.write_bytes(b"the mug, edited")
    _sentence(workspace, image=str(image), sentence="An image of a mug")
    copy = workspace / "descriptor" / "source.png"
    copy.write_bytes(b"the mug")
    with pytest.raises(DreamtextError) as refused:
        check_image_workspace(workspace, image)
    assert str(refused.value).startswith(
        f"{image} has changed since the run in {workspace} started from it; pass --workspace "
        f"NEW_FOLDER for the new image, or its copy {copy} to continue the run"
    )
    copy.write_bytes(b"the mug, edited")
    assert check_image_workspace(workspace, image) is None


def test_a_text_run_with_its_users_learned_tokens_is_no_image_run(tmp_path):
    """A text→3D run trained with a tokens file (guidance.textual_inversion) but with no sentence
    record and no stage sections is a text run: an image run is refused its folder."""
    from dreamtext.runfiles import check_image_workspace

    image = tmp_path / "mug.png"
    image.write_bytes(b"png")
    workspace = tmp_path / "run"
    _config(workspace, prompt="a <cat> toy", guidance={"textual_inversion": "/my/cat.bin"})
    with pytest.raises(DreamtextError, match="holds a text→3D run of 'a <cat> toy'"):
        check_image_workspace(workspace, image)


@pytest.mark.parametrize("step", [None, True, "7", 7.0])
def test_a_step_record_without_a_whole_step_is_no_record(tmp_path, step):
    """No step, or one that is not an int (a hand-edited `true` read as step 1, said as "at
    step True"): only the checkpoint tells."""
    from dreamtext.runfiles import _file_identity, recorded_step

    _checkpoint(tmp_path, 7)
    last = tmp_path / "checkpoints" / "last.pt"
    record = {"file": _file_identity(last)} | ({} if step is None else {"step": step})
    (tmp_path / "checkpoints" / "last.step.json").write_text(json.dumps(record))
    assert recorded_step(tmp_path) is None


def test_a_new_run_is_refused_a_folder_of_runs(tmp_path):
    """check_new_run_workspace: a folder holding runs (a batch's root) is no run's folder."""
    from dreamtext.runfiles import check_new_run_workspace

    _config(tmp_path / "runs" / "a_red_cube", prompt="a red cube")
    _checkpoint(tmp_path / "runs" / "a_red_cube", 10)
    with pytest.raises(DreamtextError, match=r"holds runs \(a_red_cube\)"):
        check_new_run_workspace(tmp_path / "runs", "a red cube", False, None)


def _recorded_last_pt(workspace):
    """``checkpoints/last.pt`` (70,001 bytes, mtime 1 s) and its step record naming step 7."""
    from dreamtext.runfiles import step_record

    folder = workspace / "checkpoints"
    folder.mkdir()
    last = folder / "last.pt"
    last.write_bytes(b"A" + b"\0" * 70000)
    os.utime(last, ns=(1_000_000_000, 1_000_000_000))
    (folder / "last.step.json").write_bytes(step_record(last, 7))
    return folder, last


def test_a_checkpoint_rewritten_in_place_before_its_tail_is_no_longer_the_recorded_one(tmp_path):
    """_file_identity: the same inode, size and last 64 KiB, but written again (a new
    modification time): the record no longer names last.pt's step."""
    from dreamtext.runfiles import recorded_step

    _, last = _recorded_last_pt(tmp_path)
    assert recorded_step(tmp_path) == 7
    with open(last, "r+b") as file:  # in place: the inode stays
        file.write(b"B")
    os.utime(last, ns=(2_000_000_000, 2_000_000_000))
    assert recorded_step(tmp_path) is None


def test_a_checkpoint_replaced_by_another_file_of_the_same_bytes_and_time_is_not_the_recorded_one(
    tmp_path,
):
    """A new file (another inode) in last.pt's place, of the same size, last 64 KiB and
    modification time (copied with its time kept) but other bytes before them: the record was
    written for the old file."""
    from dreamtext.runfiles import recorded_step

    folder, last = _recorded_last_pt(tmp_path)
    keep = folder / "keep.pt"
    os.link(last, keep)  # the old inode stays alive, so the new file cannot reuse its number
    other = folder / "other.pt"
    other.write_bytes(b"B" + b"\0" * 70000)
    os.utime(other, ns=(1_000_000_000, 1_000_000_000))
    os.replace(other, last)
    assert recorded_step(tmp_path) is None


def test_a_new_files_mode_is_the_ordinary_one_less_the_umask():
    from dreamtext.runfiles import file_mode

    before = os.umask(0o027)
    try:
        assert file_mode() == 0o640
        assert file_mode(0o777) == 0o750
        assert os.umask(0o027) == 0o027  # the umask is left as it was
    finally:
        os.umask(before)


def test_a_held_run_with_no_whole_checkpoint_is_not_told_to_resume(tmp_path):
    """Step None: a checkpoint is there, none loads whole (the trainer's resume_step). The line
    said "pass --resume to continue it", which then refused: nothing to go on from."""
    from dreamtext.runfiles import held_run_error

    _config(tmp_path, prompt="a red cube", iters=100)
    assert str(held_run_error(tmp_path, None, None)) == (
        f"{tmp_path} already holds a run of this prompt, but no checkpoint of it loads whole "
        "(damaged or cut short), so --resume has nothing to go on from; pass --overwrite to train "
        "it again from scratch, or --workspace NEW_FOLDER; if a disk or file server is failing, "
        "run the command again once it is back"
    )
    own = tmp_path / "config.json"
    assert str(held_run_error(tmp_path, None, own)) == (
        f"--config {own} is the record of the run in {tmp_path}, where this command would train, "
        "and no checkpoint of it loads whole; pass --workspace NEW_FOLDER to train it again beside "
        "it, or --overwrite to train it again from scratch; if a disk or file server is failing, "
        "run the command again once it is back"
    )


def test_another_tools_config_json_without_a_prompt_is_no_other_prompts_run(tmp_path):
    from dreamtext.runfiles import check_new_run_workspace

    _config(tmp_path / "run", model="resnet50", epochs=3)
    check_new_run_workspace(tmp_path / "run", "a red cube", False, None)


@pytest.mark.parametrize("name", ["checkpoints", "previews", "descriptor"])
def test_a_file_where_a_run_makes_a_folder_is_refused_before_the_run(tmp_path, name):
    """A file named `previews` in the workspace was a FileExistsError traceback at the run's
    first preview (500 steps in by default, none saved); `checkpoints` at its first checkpoint,
    `descriptor` in describe and image."""
    from PIL import Image

    from dreamtext.runfiles import (
        check_describe_workspace,
        check_image_workspace,
        check_new_run_workspace,
    )
    from dreamtext.trainer import check_workspace

    image = tmp_path / "mug.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    workspace = tmp_path / "run"
    workspace.mkdir()
    (workspace / name).write_text("my notes")
    line = (
        f"{workspace / name} cannot be a folder: {workspace / name} is a file; move that file "
        "away, or pass --workspace a folder you can write"
    )
    checks = [lambda: check_image_workspace(workspace, image)]
    if name == "descriptor":
        checks.append(lambda: check_describe_workspace(workspace, image))
    else:
        checks.append(lambda: check_new_run_workspace(workspace, "a cube", False, None))
        checks.append(lambda: check_workspace(workspace, "a cube", resume=False))
    for check in checks:
        with pytest.raises(DreamtextError) as refused:
            check()
        assert str(refused.value) == line
    assert (workspace / name).read_text() == "my notes"


def _sentence_record(workspace: Path, record: object) -> Path:
    """``workspace`` with ``record`` as its ``descriptor/sentence.json`` (JSON, or text as is)."""
    path = workspace / "descriptor" / "sentence.json"
    path.parent.mkdir(parents=True)
    path.write_text(record if isinstance(record, str) else json.dumps(record))
    return workspace


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"sentence": "An image of a mug", "ran_on": {"clip_revision": "abc123"}}, "abc123"),
        ({"sentence": "An image of a mug", "ran_on": {"clip_revision": None}}, None),
        ({"sentence": "An image of a mug", "ran_on": {"clip_revision": 7}}, None),
        ({"sentence": "An image of a mug", "ran_on": "cpu"}, None),
        ({"sentence": "An image of a mug"}, None),
    ],
)
def test_an_image_runs_clip_revision_is_its_records_commit_or_none(tmp_path, record, expected):
    """A search that found its sentence names the CLIP commit it recorded, and ``None`` where
    that is not a commit (a --clip folder's null, a hand-edited number, a record from before
    it was kept): the run's ran_on holds a string or null, never what the file held."""
    from dreamtext.runfiles import search_clip_revision

    assert search_clip_revision(_sentence_record(tmp_path, record)) == {"clip_revision": expected}


@pytest.mark.parametrize(
    "record", [None, {"options": {"nouns": "nouns.txt"}}, "{not json", "[1, 2]"]
)
def test_a_run_without_a_found_sentence_names_no_clip_revision(tmp_path, record):
    """A text run (no sentence.json), a search record without its sentence, and a sentence.json
    the search refuses (unreadable, not a record): the run's ran_on names no CLIP, and its start
    is not refused for it (the search's own checks say what is wrong with the file)."""
    from dreamtext.runfiles import search_clip_revision

    workspace = tmp_path if record is None else _sentence_record(tmp_path, record)
    assert search_clip_revision(workspace) == {}


@pytest.mark.parametrize("config", ["[1, 2]", '"a red cube"', '{"prompt": 7}', "{not json"])
def test_a_config_json_that_names_no_prompt_holds_no_ones_run(tmp_path, config):
    """run_owner of a folder whose config.json is a list, a string, a prompt of another type
    or not JSON: nobody's run (the run's start says what is wrong with the file)."""
    from dreamtext.runfiles import run_owner

    (tmp_path / "config.json").write_text(config)
    assert run_owner(tmp_path) is None


def test_read_once_gives_each_caller_its_own_status(tmp_path):
    """Within a read_once block, a caller that changes the status it was given changes no
    other caller's (the first read is shared by the block)."""
    from dreamtext.runfiles import read_once

    (tmp_path / "status.json").write_text(json.dumps({"state": "interrupted", "step": 12}))
    with read_once():
        first = read_status(tmp_path)
        first["step"] = 99
        assert read_status(tmp_path) == {"state": "interrupted", "step": 12}
