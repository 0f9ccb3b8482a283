"""dreamtext.errors' one-line messages, value by value (expected lines written out by hand)."""

import errno
import os
import shutil
from pathlib import Path

import pytest

from dreamtext.errors import (
    ANOTHER_SEED,
    ENVIRONMENT_ERRNOS,
    OVERWRITE,
    OVERWRITE_SAME_SEED,
    DreamtextError,
    StartAgain,
    TrainedRun,
    WorkspaceInUse,
    cause_line,
    check_a_file,
    copy_file,
    file_system_fix,
    shorten,
    trained_run_line,
    what_failed,
)


def test_shorten_keeps_text_that_fits_and_cuts_longer_text_to_width_with_an_ellipsis():
    assert shorten("abcdef", 6) == "abcdef"
    assert shorten("abcdefg", 6) == "abcde…"
    assert len(shorten("firefighter", 5)) == 5


def test_cause_line_is_the_type_and_the_first_line_cut_to_width():
    assert cause_line(RuntimeError("first line\nsecond line")) == "RuntimeError: first line"
    assert cause_line(ValueError("abcdef"), width=3) == "ValueError: abc"
    assert cause_line(KeyError()) == "KeyError: "


def test_cause_line_quotes_the_wrapped_error_of_a_compiler_failure():
    class BackendCompilerFailed(Exception):
        pass

    outer = BackendCompilerFailed("backend='inductor' raised:\nmore")
    outer.inner_exception = RuntimeError("no C compiler\ndetails")
    assert cause_line(outer) == "BackendCompilerFailed: RuntimeError: no C compiler"


def test_what_failed_names_the_file_where_there_is_one():
    full = OSError(errno.ENOSPC, "No space left on device", "W/log.jsonl")
    assert what_failed(full) == "No space left on device (W/log.jsonl)"
    assert what_failed(OSError(errno.EIO, "Input/output error")) == "Input/output error"


def test_file_system_fix_gives_the_errors_own_fix_before_the_other_place():
    full = OSError(errno.ENOSPC, "No space left on device")
    assert file_system_fix(full, "pick another folder") == (
        "free space on that disk (or quota) or pick another folder"
    )
    refused = OSError(errno.EACCES, "Permission denied")
    assert file_system_fix(refused, "pick another folder") == "pick another folder"


def test_a_refused_write_of_either_kind_is_the_machines_state():
    assert {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS} <= ENVIRONMENT_ERRNOS
    assert errno.ENOENT not in ENVIRONMENT_ERRNOS


def test_the_trained_run_line_names_the_step_the_checkpoint_the_fix_and_a_quoted_export():
    trained = TrainedRun(
        step=40, checkpoint=Path("my run/checkpoints/last.pt"), workspace=Path("my run")
    )
    full = OSError(errno.ENOSPC, "No space left on device", "my run/mesh/mesh.glb")
    assert trained_run_line(full, trained) == (
        "No space left on device (my run/mesh/mesh.glb) in the export; the run trained to step "
        "40 and is saved (my run/checkpoints/last.pt): free space on that disk (or quota), then "
        "run `dreamtext export --workspace 'my run'` (or copy the run to a disk with room, or "
        "one you can write, and export it there)"
    )
    refused = OSError(errno.EACCES, "Permission denied")
    unsaved = TrainedRun(step=3, checkpoint=None, workspace=Path("w"))
    line = trained_run_line(refused, unsaved)
    assert line.startswith("Permission denied in the export; the run trained to step 3: ")
    assert "make its folder writable, then run `dreamtext export --workspace w`" in line


def test_workspace_in_use_says_who_holds_it_and_what_to_do():
    error = WorkspaceInUse("runs/a", "process 12 on this machine")
    assert error.situation == "runs/a is in use: process 12 on this machine is running a run in it"
    assert str(error) == (
        "runs/a is in use: process 12 on this machine is running a run in it; wait for it to "
        "end or stop it, or pass --workspace NEW_FOLDER"
    )
    assert error.holder == "process 12 on this machine"


def test_a_non_file_in_a_files_place_is_named_by_what_it_is(tmp_path: Path):
    """A FIFO or a link to nothing in the place of a run's file read "is not a file, not a
    run's file"; each is named."""
    import os

    folder, fifo, link = tmp_path / "log.jsonl", tmp_path / "status.json", tmp_path / "last.pt"
    folder.mkdir()
    os.mkfifo(fifo)
    link.symlink_to(tmp_path / "gone")
    said = {}
    for path in (folder, fifo, link):
        with pytest.raises(DreamtextError) as error:
            check_a_file(path, "a run's file")
        said[path.name] = str(error.value)
    assert said == {
        name: f"{tmp_path / name} is {what}, not a run's file; move it out of {tmp_path} and "
        "run the command again"
        for name, what in [
            ("log.jsonl", "a folder"),
            ("status.json", "a FIFO"),
            ("last.pt", "a link to nothing"),
        ]
    }


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_a_name_with_a_c1_control_character_pastes_as_itself_in_any_locale(tmp_path, locale):
    """shell_word wrote U+0085 (a C1 control, a byte pair in a UTF-8 name) as ``\\u0085``: bash
    under ``LC_ALL=C`` keeps that as six characters, so the pasted command named another
    folder. Its bytes (``\\xc2\\x85``) are the same name in every locale."""
    import os
    import subprocess

    from dreamtext.errors import shell_word

    name = tmp_path / "runs \x85\x1b[2J"
    word = shell_word(name)
    assert word == f"$'{tmp_path}/runs \\xc2\\x85\\x1b[2J'"
    env = {**os.environ, "LC_ALL": locale, "LANG": locale}
    printed = subprocess.run(
        ["bash", "-c", f"printf %s {word}"], env=env, capture_output=True, check=True
    )
    assert printed.stdout == os.fsencode(name)


def test_a_copy_stopped_by_ctrl_c_leaves_no_part_of_its_file(tmp_path, monkeypatch):
    """No part of a failed copy is left at its target, a stop (Ctrl-C, or a scheduler's SIGTERM
    raised as ``KeyboardInterrupt``) mid-copy included: the part would pass for the file."""
    source, target = tmp_path / "albedo.png", tmp_path / "copy.png"
    source.write_bytes(b"x" * 100)

    def stopped_midway(src, dst):
        Path(dst).write_bytes(b"x" * 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "copyfile", stopped_midway)
    with pytest.raises(KeyboardInterrupt):
        copy_file(source, target)
    assert not target.exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="lists open files in /proc")
def test_a_stream_sent_to_devnull_writes_nowhere_and_leaves_no_descriptor_open(tmp_path):
    """``to_devnull`` points the stream's own descriptor at /dev/null; the descriptor it opened
    for that is closed again (a hung-up terminal's stdout and stderr, a broken pipe's note)."""
    from dreamtext.__main__ import to_devnull

    path = tmp_path / "out.txt"
    with path.open("w") as stream:
        before = sorted(os.listdir("/proc/self/fd"))
        to_devnull(stream)
        after = sorted(os.listdir("/proc/self/fd"))
        stream.write("lost")
        stream.flush()
    assert after == before
    assert path.read_text() == ""


SMALLER = "a smaller --lr (this run's is 0.5)"


@pytest.mark.parametrize(
    ("again", "changes", "held", "line"),
    [
        (OVERWRITE, (SMALLER, ANOTHER_SEED), True,
         f"start again with --overwrite and {SMALLER} or another --seed"),
        # A new run where no checkpoint is needs no --overwrite.
        (OVERWRITE, (SMALLER, ANOTHER_SEED), False,
         f"start again with {SMALLER} or another --seed"),
        (OVERWRITE, (), True, "start again with --overwrite"),
        # An image run keeps the seed that trained its descriptor.
        (OVERWRITE_SAME_SEED, (SMALLER, ANOTHER_SEED), True,
         f"start again with --overwrite and {SMALLER}"),
        (OVERWRITE_SAME_SEED, (ANOTHER_SEED,), True, None),
        # A batch's line: its own command, checkpoint or not.
        (StartAgain("`dreamtext text x --workspace r/x --overwrite`"), (ANOTHER_SEED,), False,
         "start again with `dreamtext text x --workspace r/x --overwrite` and another --seed"),
    ],
)  # fmt: skip
def test_start_again_names_the_command_and_the_changes_it_takes(again, changes, held, line):
    assert again.with_changes(*changes, held=held) == line
