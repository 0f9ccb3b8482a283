"""Which run ``dreamtext export`` without ``--workspace`` takes: dreamtext.latestrun, from the
checkpoint files' names and times."""

import os
import shutil
from pathlib import Path

import pytest

from dreamtext.errors import DreamtextError
from dreamtext.latestrun import newest_run, newest_run_unread, runs_in, step_files
from dreamtext.runfiles import saved_time, step_record


def _file(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"checkpoint")
    os.utime(path, (mtime, mtime))
    return path


def _newest_step(folder: Path):
    """A newest_whole_step where every step file is whole."""
    steps = sorted(folder.glob("step_*.pt"))
    return (steps[-1], int(steps[-1].stem.split("_")[1])) if steps else None


T = 1_700_000_000.0


def test_a_run_of_step_files_only_is_newest_by_its_newest_step_file(tmp_path):
    """Run b lost its last.pt; its newest step file is newer than a's last.pt, its oldest is
    older: b is the newest run."""
    _file(tmp_path / "a" / "checkpoints" / "last.pt", T + 100)
    _file(tmp_path / "b" / "checkpoints" / "step_000010.pt", T + 50)
    _file(tmp_path / "b" / "checkpoints" / "step_000020.pt", T + 200)
    assert newest_run(tmp_path, _newest_step) == tmp_path / "b"
    assert newest_run_unread(tmp_path) is None  # a step file must be read to tell


def _never_read(folder):
    """newest_run's step-file reader for a case that must read none."""
    raise AssertionError(f"read a step file of {folder}")


def test_a_run_with_last_pt_counts_by_it_and_no_step_file_of_it_is_read(tmp_path):
    """A step file newer than its run's last.pt (copied back later) does not make that run
    the newest: a run with last.pt is dated by it, and none of its step files is read."""
    _file(tmp_path / "a" / "checkpoints" / "last.pt", T + 100)
    _file(tmp_path / "a" / "checkpoints" / "step_000010.pt", T + 400)
    _file(tmp_path / "b" / "checkpoints" / "last.pt", T + 300)

    assert newest_run(tmp_path, _never_read) == tmp_path / "b"
    assert newest_run_unread(tmp_path) == tmp_path / "b"


def test_a_folders_runs_are_dated_by_their_newest_checkpoint_file(tmp_path):
    """runs_in: a run's time is that of its newest checkpoint file, last.pt or a step file."""
    _file(tmp_path / "a" / "checkpoints" / "last.pt", T + 300)
    _file(tmp_path / "a" / "checkpoints" / "step_000001.pt", T + 100)
    _file(tmp_path / "b" / "checkpoints" / "last.pt", T + 200)
    _file(tmp_path / "c" / "checkpoints" / "step_000005.pt", T + 250)
    found = sorted(runs_in(tmp_path), reverse=True)
    assert found == [
        (T + 300, tmp_path / "a"),
        (T + 250, tmp_path / "c"),
        (T + 200, tmp_path / "b"),
    ]


def test_no_run_is_a_user_error_naming_the_folder(tmp_path):
    from dreamtext.errors import DreamtextError

    with pytest.raises(DreamtextError, match="no trained run under"):
        newest_run(tmp_path, _newest_step)


def test_a_step_only_run_is_dated_by_its_newest_whole_step_file_not_its_newest_file(tmp_path):
    """Run b lost its last.pt and its newest step file is damaged: b counts by the step file a
    resume goes on from, older than a's last.pt, so a is the newest run."""
    _file(tmp_path / "a" / "checkpoints" / "last.pt", T + 100)
    _file(tmp_path / "b" / "checkpoints" / "step_000010.pt", T + 50)
    _file(tmp_path / "b" / "checkpoints" / "step_000020.pt", T + 200)  # damaged

    def whole_is_step_10(folder):
        return folder / "step_000010.pt", 10

    assert newest_run(tmp_path, whole_is_step_10) == tmp_path / "a"


def test_a_step_only_run_with_no_whole_step_file_is_no_run(tmp_path):
    _file(tmp_path / "a" / "checkpoints" / "last.pt", T + 100)
    _file(tmp_path / "b" / "checkpoints" / "step_000020.pt", T + 200)  # damaged
    assert newest_run(tmp_path, lambda folder: None) == tmp_path / "a"
    with pytest.raises(DreamtextError, match="no trained run under"):
        newest_run(tmp_path / "b", lambda folder: None)


def test_a_descriptors_checkpoints_are_no_run_to_export(tmp_path):
    """An image run's descriptor/checkpoints (beside its sentence.json) holds learned tokens,
    not a run: the newest run is the image run's text stage even where they are newer."""
    _file(tmp_path / "img" / "checkpoints" / "last.pt", T + 100)
    _file(tmp_path / "img" / "descriptor" / "checkpoints" / "last.pt", T + 300)
    _file(tmp_path / "img" / "descriptor" / "checkpoints" / "step_000005.pt", T + 400)
    (tmp_path / "img" / "descriptor" / "sentence.json").write_text("{}")
    assert newest_run(tmp_path, _newest_step) == tmp_path / "img"
    assert runs_in(tmp_path / "img") == []


def test_a_text_run_in_a_folder_named_descriptor_is_a_run(tmp_path):
    """Only checkpoints/ beside a sentence.json in a descriptor/ folder are a descriptor's: the
    text→3D run of the prompt 'descriptor' (workspace/descriptor) is a run like any other."""
    _file(tmp_path / "descriptor" / "checkpoints" / "last.pt", T + 100)
    assert newest_run(tmp_path, _newest_step) == tmp_path / "descriptor"
    assert runs_in(tmp_path) == [(T + 100, tmp_path / "descriptor")]


def test_a_folder_named_last_pt_makes_no_run_newest(tmp_path):
    """A folder at ``b/checkpoints/last.pt`` (newer than a's checkpoint) is no checkpoint, as
    ``checkpoint.can_resume`` says: export without --workspace took b and stopped on it."""
    _file(tmp_path / "a" / "checkpoints" / "last.pt", T + 100)
    folder = tmp_path / "b" / "checkpoints" / "last.pt"
    folder.mkdir(parents=True)
    (tmp_path / "c" / "checkpoints" / "step_000005.pt").mkdir(parents=True)
    os.utime(folder, (T + 300, T + 300))
    assert newest_run(tmp_path, _newest_step) == tmp_path / "a"
    assert newest_run_unread(tmp_path) == tmp_path / "a"


def test_a_step_file_as_old_as_the_newest_last_pt_is_not_read(tmp_path):
    """The docstring: a run without last.pt has its step files read only when one is newer
    than every last.pt. One written the same second as a's last.pt is not newer, so none is
    read and the run with last.pt is the answer, also without reading."""
    _file(tmp_path / "a" / "checkpoints" / "last.pt", T + 100)
    _file(tmp_path / "b" / "checkpoints" / "step_000010.pt", T + 100)

    assert newest_run(tmp_path, _never_read) == tmp_path / "a"
    assert newest_run_unread(tmp_path) == tmp_path / "a"


def test_runs_in_takes_no_folder_named_last_pt_for_a_checkpoint(tmp_path):
    """runs_in lists the runs that hold a checkpoint file: a folder at b/checkpoints/last.pt,
    with no step file beside it, is none, so b is no run to list."""
    _file(tmp_path / "a" / "checkpoints" / "last.pt", T + 100)
    (tmp_path / "b" / "checkpoints" / "last.pt").mkdir(parents=True)
    assert runs_in(tmp_path) == [(T + 100, tmp_path / "a")]


def test_step_files_are_only_names_of_the_whole_step_pattern(tmp_path):
    """step_XXXXXX.pt and nothing more: a step_000009.pt.pt (a copy renamed by hand) is no
    step file, and would otherwise pass for the newest checkpoint, of step 9."""
    two = _file(tmp_path / "step_000002.pt", T)
    _file(tmp_path / "step_000009.pt.pt", T)
    assert step_files(tmp_path) == [(2, two)]


def test_a_sentence_json_beside_a_runs_checkpoints_outside_descriptor_is_still_a_run(tmp_path):
    """Only a descriptor/ folder's checkpoints (beside its sentence.json) are a descriptor's:
    a run whose own folder holds a sentence.json is still a run, listed and exported."""
    _file(tmp_path / "run" / "checkpoints" / "last.pt", T + 100)
    (tmp_path / "run" / "sentence.json").write_text("{}")
    assert newest_run(tmp_path, _newest_step) == tmp_path / "run"
    assert runs_in(tmp_path) == [(T + 100, tmp_path / "run")]


def test_newest_run_unread_finding_no_run_is_none_not_an_error(tmp_path):
    """Its docstring: None where it finds no run (the export says why after its imports)."""
    assert newest_run_unread(tmp_path) is None
    assert newest_run_unread(tmp_path / "missing") is None


def test_a_step_only_run_newer_than_every_last_pt_is_newest_beside_an_older_one(tmp_path):
    """The README: export without --workspace takes the run whose newest checkpoint is the
    most recent, counting a run of step files only by its newest whole one. Of two runs that
    lost their last.pt, one older and one newer than a's last.pt, the newer is the answer: the
    older one being no newer than a's last.pt says nothing of the other."""
    _file(tmp_path / "a" / "checkpoints" / "last.pt", T + 100)
    _file(tmp_path / "b" / "checkpoints" / "step_000010.pt", T + 50)
    _file(tmp_path / "c" / "checkpoints" / "step_000010.pt", T + 200)
    assert newest_run(tmp_path, _newest_step) == tmp_path / "c"


def _saved(run: Path, mtime: float, contents: bytes) -> Path:
    """A run's last.pt saved at ``mtime`` with its save's record (last.step.json)."""
    last = _file(run / "checkpoints" / "last.pt", mtime)
    last.write_bytes(contents)
    os.utime(last, (mtime, mtime))
    (last.parent / "last.step.json").write_bytes(step_record(last, 30))
    return last


def test_a_run_copied_in_with_cp_r_is_dated_by_its_save_not_by_the_copy(tmp_path):
    """Run a, saved at T+100, copied into workspace/ with ``cp -r`` (new inode, the copy's
    time, after b's save at T+300): export without --workspace took the copy as the newest run;
    its checkpoint is still dated by its save's record, so b is. A last.pt replaced by other
    bytes since its record (a step file copied over it) is dated by its own time."""
    old = tmp_path / "cluster" / "a"
    _saved(old, T + 100, b"checkpoint of a")
    _saved(tmp_path / "workspace" / "b", T + 300, b"checkpoint of b")
    shutil.copytree(old, tmp_path / "workspace" / "a", copy_function=shutil.copy)
    copied = tmp_path / "workspace" / "a" / "checkpoints" / "last.pt"
    assert copied.stat().st_mtime > T + 300

    assert newest_run(tmp_path / "workspace", _never_read) == tmp_path / "workspace" / "b"
    assert saved_time(copied) == pytest.approx(T + 100)

    copied.write_bytes(b"checkpoint of step 20")  # cp step_000020.pt last.pt
    assert newest_run(tmp_path / "workspace", _never_read) == tmp_path / "workspace" / "a"
