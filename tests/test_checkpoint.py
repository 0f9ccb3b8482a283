"""Checkpoint files (dreamtext.checkpoint): what a user sees when writing or reading one fails."""

import contextlib
import errno
import resource
import signal
from pathlib import Path

import pytest
import torch

from dreamtext.checkpoint import load_checkpoint, save_checkpoint
from dreamtext.errors import DreamtextError


@contextlib.contextmanager
def files_limited_to(size: int):
    """Writes past ``size`` bytes of a file fail (EFBIG), as writes on a full disk do (ENOSPC)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def a_state(step: int) -> dict:
    return {"step": step, "field": {"table": torch.arange(100_000, dtype=torch.float32)}}


def test_a_checkpoint_that_does_not_fit_on_the_disk_is_an_os_error(tmp_path: Path):
    """torch.save writing to the file turned the full disk into a bare RuntimeError ("unexpected
    pos ..."), a traceback; an OSError is the one line "No space left on device; free disk
    space ..." of the CLI."""
    save_checkpoint(tmp_path, a_state(5))
    with files_limited_to(100_000), pytest.raises(OSError) as error:
        save_checkpoint(tmp_path, a_state(10))  # 400 kB
    assert error.value.errno in (errno.EFBIG, errno.ENOSPC)
    folder = tmp_path / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "step_000005.pt"]
    assert load_checkpoint(folder / "last.pt")["step"] == 5  # the last good one stays


def test_a_checkpoint_removes_the_temp_files_of_writes_that_were_killed(tmp_path: Path):
    """SIGKILL during a save (a scheduler's grace period ending, the OOM killer) leaves the
    hidden temp file, as large as a checkpoint; no later save replaced or removed it."""
    import tempfile

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    killed = [
        tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)[1]
        for name in ("last.pt", "step_000005.pt")
    ]
    for path in killed:
        Path(path).write_bytes(b"half a checkpoint")
    (folder / ".notes.tmp").write_bytes(b"not ours")
    save_checkpoint(tmp_path, a_state(10))
    assert sorted(p.name for p in folder.iterdir()) == [".notes.tmp", "last.pt", "step_000010.pt"]


def test_both_checkpoint_files_hold_the_same_state(tmp_path: Path):
    path = save_checkpoint(tmp_path, a_state(7))
    assert path.read_bytes() == (tmp_path / "checkpoints" / "last.pt").read_bytes()
    assert torch.equal(load_checkpoint(path)["field"]["table"], a_state(7)["field"]["table"])


def test_a_checkpoint_without_a_runs_state_is_a_user_error_naming_an_older_one(tmp_path: Path):
    """A file torch can read that is not a run's checkpoint (another tool's, a hand-made one)
    failed the resume and the export with KeyError tracebacks."""
    from dreamtext.checkpoint import RUN_KEYS, load_run

    save_checkpoint(tmp_path, a_state(5))  # step_000005.pt and last.pt
    torch.save({"weights": torch.zeros(3)}, tmp_path / "checkpoints" / "last.pt")
    with pytest.raises(DreamtextError) as error:
        load_checkpoint(tmp_path / "checkpoints" / "last.pt", required=RUN_KEYS)
    message = str(error.value)
    assert "is not a dreamtext run checkpoint (it lacks step, field" in message
    assert message.endswith("step_000005.pt over it to go on from there")
    with pytest.raises(DreamtextError, match="not a dreamtext run checkpoint"):
        load_run(tmp_path)


def test_an_unreadable_last_checkpoint_names_the_step_file_to_go_on_from(tmp_path: Path):
    save_checkpoint(tmp_path, a_state(5))
    save_checkpoint(tmp_path, a_state(10))
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"hello")
    with pytest.raises(DreamtextError) as error:
        load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert str(error.value).endswith("step_000010.pt over it to go on from there")
