"""Checkpoint files (dreamtext.checkpoint): what a user sees when writing or reading one fails."""

import contextlib
import errno
import os
import resource
import shutil
import signal
from pathlib import Path

import pytest
import torch

from dreamtext.checkpoint import (
    RUN_KEYS,
    checkpoint_step,
    load_checkpoint,
    resume_step,
    save_checkpoint,
)
from dreamtext.errors import DreamtextError
from dreamtext.runfiles import recorded_step


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
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "last.step.json"]
    assert load_checkpoint(folder / "last.pt")["step"] == 5  # the last good one stays
    assert recorded_step(tmp_path) == 5


def test_a_write_that_does_not_fit_names_its_file(tmp_path: Path):
    """The CLI's line was 'File too large; free disk space …' without the file: an error of
    writing to an open file carries no name."""
    with files_limited_to(100_000), pytest.raises(OSError) as error:
        save_checkpoint(tmp_path, a_state(10))  # 400 kB
    assert error.value.errno in (errno.EFBIG, errno.ENOSPC)
    assert error.value.filename == str(tmp_path / "checkpoints" / "last.pt")


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
    assert sorted(p.name for p in folder.iterdir()) == [".notes.tmp", "last.pt", "last.step.json"]


def steps_on_disk(folder: Path) -> dict[str, int]:
    return {p.name: checkpoint_step(p) for p in sorted(folder.glob("*.pt"))}


def test_the_replaced_last_checkpoint_stays_as_its_step_file_and_nothing_is_kept_twice(
    tmp_path: Path,
):
    """last.pt was a second full copy of the newest step file: 148 MB more in every run."""
    folder = tmp_path / "checkpoints"
    path = save_checkpoint(tmp_path, a_state(7))
    assert path == folder / "last.pt"
    assert torch.equal(load_checkpoint(path)["field"]["table"], a_state(7)["field"]["table"])
    assert steps_on_disk(folder) == {"last.pt": 7}
    save_checkpoint(tmp_path, a_state(7))  # again at the same step (an interrupt after a save)
    assert steps_on_disk(folder) == {"last.pt": 7}
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, a_state(step))
    assert steps_on_disk(folder) == {"last.pt": 30, "step_000010.pt": 10, "step_000020.pt": 20}
    assert not (folder / "last.pt").samefile(folder / "step_000020.pt")
    # copying an older one over last.pt (a rollback) leaves the newer step files whole
    shutil.copyfile(folder / "step_000010.pt", folder / "last.pt")
    assert steps_on_disk(folder) == {"last.pt": 10, "step_000010.pt": 10, "step_000020.pt": 20}
    # the rolled-back run goes on: the old branch's step 20, which would pass for its newest
    # checkpoint (the one to go on from when last.pt is damaged), goes
    save_checkpoint(tmp_path, a_state(15))
    assert steps_on_disk(folder) == {"last.pt": 15, "step_000010.pt": 10}
    save_checkpoint(tmp_path, a_state(20))
    assert steps_on_disk(folder) == {"last.pt": 20, "step_000010.pt": 10, "step_000015.pt": 15}
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("keep", [1, 2])
def test_keep_counts_last_pt_among_the_checkpoints_kept(tmp_path: Path, keep: int):
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, a_state(step), keep=keep)
    expected = {"last.pt": 4} if keep == 1 else {"last.pt": 4, "step_000003.pt": 3}
    assert steps_on_disk(tmp_path / "checkpoints") == expected


def test_a_file_system_without_hard_links_gets_a_copy(tmp_path: Path, monkeypatch):
    def no_links(*args):
        raise PermissionError("hard links are not supported here")

    monkeypatch.setattr(os, "link", no_links)
    save_checkpoint(tmp_path, a_state(1))
    save_checkpoint(tmp_path, a_state(2))
    assert steps_on_disk(tmp_path / "checkpoints") == {"last.pt": 2, "step_000001.pt": 1}


def test_a_checkpoint_without_a_runs_state_is_a_user_error_naming_an_older_one(tmp_path: Path):
    """A file torch can read that is not a run's checkpoint (another tool's, a hand-made one)
    failed the resume and the export with KeyError tracebacks."""
    from dreamtext.checkpoint import RUN_KEYS, load_run

    def a_run_state(step: int) -> dict:
        return {**{key: {} for key in RUN_KEYS}, **a_state(step)}

    save_checkpoint(tmp_path, a_run_state(5))
    save_checkpoint(tmp_path, a_run_state(10))  # step_000005.pt and last.pt (step 10)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "checkpoints" / "last.pt")
    with pytest.raises(DreamtextError) as error:
        load_checkpoint(tmp_path / "checkpoints" / "last.pt", required=RUN_KEYS)
    message = str(error.value)
    assert "is not a dreamtext run checkpoint (it lacks step, field" in message
    step_file = tmp_path / "checkpoints" / "step_000005.pt"
    assert f"its newest whole checkpoint is {step_file} (step 5)" in message
    with pytest.raises(DreamtextError, match="not a dreamtext run checkpoint"):
        load_run(tmp_path)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (PermissionError(errno.EACCES, "Permission denied"), DreamtextError),
        (
            RuntimeError(
                "DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"
            ),
            RuntimeError,
        ),
    ],
    ids=["permission-denied", "out-of-memory"],
)
def test_a_checkpoint_the_machine_cannot_read_is_not_called_damaged(
    tmp_path: Path, monkeypatch, error, expected
):
    """A last.pt this user may not read (another user's run, a restrictive umask), or a load
    that runs out of memory, was 'cannot read checkpoint …; copy step_000005.pt over it' (or
    'delete it to start over'): advice that throws a whole checkpoint away."""
    save_checkpoint(tmp_path, a_state(5))
    save_checkpoint(tmp_path, a_state(10))

    def refuse(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(expected) as raised:
        load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    message = str(raised.value)
    assert "over it" not in message and "delete" not in message
    if expected is DreamtextError:
        assert "Permission denied" in message and "read access" in message


def test_an_unreadable_last_checkpoint_names_the_step_file_to_go_on_from(tmp_path: Path):
    save_checkpoint(tmp_path, a_state(5))
    save_checkpoint(tmp_path, a_state(10))
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"hello")
    with pytest.raises(DreamtextError) as error:
        load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    step_file = tmp_path / "checkpoints" / "step_000005.pt"
    assert f"its newest whole checkpoint is {step_file} (step 5)" in str(error.value)


def test_a_file_where_a_folder_goes_is_named_and_moving_it_is_the_first_fix(tmp_path):
    """`mesh` a file in a run: the line said only 'copy the run to a folder you can write'."""
    from dreamtext.checkpoint import check_writable

    (tmp_path / "mesh").write_text("x")
    with pytest.raises(DreamtextError) as refused:
        check_writable(tmp_path / "mesh", "copy the run elsewhere")
    assert str(refused.value) == (
        f"{tmp_path / 'mesh'} cannot be a folder: {tmp_path / 'mesh'} is a file; move that file "
        "away, or copy the run elsewhere"
    )


def test_a_loaded_checkpoint_is_the_state_saved_without_its_checksum(tmp_path: Path):
    state = {**a_state(5), "config": {"prompt": "a red cube", "lr": 1e-3}}
    loaded = load_checkpoint(save_checkpoint(tmp_path, state))
    assert list(loaded) == list(state)  # the checksum is taken out
    assert torch.equal(loaded["field"]["table"], state["field"]["table"])
    assert loaded["config"] == state["config"]


def test_a_byte_changed_in_a_tensor_is_an_unreadable_checkpoint_naming_a_whole_one(
    tmp_path: Path,
):
    """torch checks none of a tensor's bytes when it loads it: a bit flipped by a disk, a file
    server or a copy loaded as garbage without a word. The checksum saved in the file tells;
    the file is then damaged like a truncated one, and the advice skips step files damaged
    alike."""
    from damage import flip_a_tensor_byte

    from dreamtext.checkpoint import UnreadableCheckpoint

    for step in (5, 10, 15):
        save_checkpoint(tmp_path, a_state(step))  # step 5, step 10, last.pt 15
    folder = tmp_path / "checkpoints"
    flip_a_tensor_byte(folder / "last.pt")
    flip_a_tensor_byte(folder / "step_000010.pt")
    damaged = torch.load(folder / "last.pt", weights_only=True)  # what torch alone sees
    assert not torch.equal(damaged["field"]["table"], a_state(15)["field"]["table"])
    with pytest.raises(UnreadableCheckpoint) as error:
        load_checkpoint(folder / "last.pt")
    assert error.value.why == "a damaged file: its checksum does not match"
    assert str(error.value).startswith(
        f"cannot read checkpoint {folder / 'last.pt'} (a damaged file: its checksum does not "
        f"match); its newest whole checkpoint is {folder / 'step_000005.pt'} (step 5)"
    )


def test_a_checkpoint_saved_without_a_checksum_by_an_older_dreamtext_still_loads(
    tmp_path: Path,
):
    """Checkpoints from before the checksum cannot be checked, and load as they did."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save(a_state(5), folder / "last.pt")
    loaded = load_checkpoint(folder / "last.pt")
    assert loaded["step"] == 5
    assert torch.equal(loaded["field"]["table"], a_state(5)["field"]["table"])


def test_can_resume_reads_a_step_file_once_while_it_stays_the_same(tmp_path: Path, monkeypatch):
    """Where last.pt is missing, whether a run can be resumed is whether a step file loads
    whole, and that read the whole file (148 MB for the default field) at every asking: up to
    four times per batch line. A file that has not changed is not read again; one that has is,
    and the answer follows it."""
    from dreamtext.checkpoint import RUN_KEYS, can_resume

    for step in (5, 10):
        save_checkpoint(tmp_path, {**{key: {} for key in RUN_KEYS}, **a_state(step)})
    folder = tmp_path / "checkpoints"
    (folder / "last.pt").unlink()  # step_000005.pt is left
    reads = []
    load = torch.load

    def counted(path, *args, **kwargs):
        reads.append(Path(path).name)
        return load(path, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted)
    assert [can_resume(tmp_path) for _ in range(4)] == [True] * 4
    assert reads == ["step_000005.pt"]
    os.truncate(folder / "step_000005.pt", 500)
    assert can_resume(tmp_path) is False
    assert reads == ["step_000005.pt"] * 2


def test_a_descriptor_checkpoint_with_a_changed_byte_is_unreadable(tmp_path: Path):
    """The descriptor's token vectors are saved with the same checksum: a damaged file is
    refused, not trained on."""
    from damage import flip_a_tensor_byte

    from dreamtext.checkpoint import UnreadableCheckpoint
    from dreamtext.descriptor import _atomic_torch_save

    path = tmp_path / "descriptor" / "checkpoints" / "last.pt"
    state = {"step": 3, "vectors": torch.randn(2, 1024), "full_prompt": "An image of a <t0>"}
    _atomic_torch_save(state, path)
    assert list(load_checkpoint(path)) == list(state)
    flip_a_tensor_byte(path)
    with pytest.raises(UnreadableCheckpoint, match="its checksum does not match"):
        load_checkpoint(path)


def test_a_save_records_the_step_of_last_pt_for_as_long_as_it_is_that_file(tmp_path: Path):
    """checkpoints/last.step.json: the step the CLI names without torch (recorded_step), the
    same as resume_step reads from the file; a file written over since has no recorded step."""
    folder = tmp_path / "checkpoints"

    def run_state(step: int) -> dict:
        return {key: {} for key in RUN_KEYS} | a_state(step)

    for step in (10, 20):
        save_checkpoint(tmp_path, run_state(step))
        assert recorded_step(tmp_path) == resume_step(tmp_path) == step
    shutil.copyfile(folder / "step_000010.pt", folder / "last.pt")  # a rollback by hand
    assert recorded_step(tmp_path) is None
    assert resume_step(tmp_path) == 10
    save_checkpoint(tmp_path, run_state(15))
    assert recorded_step(tmp_path) == resume_step(tmp_path) == 15


def test_a_folder_in_place_of_a_checkpoint_is_named_as_one(tmp_path):
    """A folder at checkpoints/last.pt, with step files beside it: the resume said "no checkpoint
    at …; train first with `dreamtext text PROMPT`", of a run that had them."""
    folder = tmp_path / "checkpoints" / "last.pt"
    folder.mkdir(parents=True)
    with pytest.raises(DreamtextError) as refusal:
        load_checkpoint(folder)
    assert str(refusal.value) == (
        f"{folder} is a folder, not a checkpoint; move it out of {folder.parent}, and --resume "
        "goes on from the newest step file there"
    )
    with pytest.raises(DreamtextError, match=r"no checkpoint at .*; train first"):
        load_checkpoint(tmp_path / "checkpoints" / "none.pt")


def test_a_checkpoint_that_does_not_fit_in_memory_is_a_memory_error(tmp_path, monkeypatch):
    """The save after a step that ran out of memory ran out too, and torch's writer turned the
    MemoryError into a bare RuntimeError ("unexpected pos ..."), a traceback; a MemoryError is
    the CLI's out-of-memory line. Nothing is written."""
    from dreamtext import checkpoint
    from dreamtext.devices import memory_that_ran_out

    def no_memory(data):
        if len(data) > 100_000:
            raise MemoryError()
        return len(data)

    class Writer(checkpoint._FirstError):
        def __init__(self, file):
            super().__init__(file)
            self.file = type("NoMemory", (), {"write": staticmethod(no_memory)})()

    monkeypatch.setattr(checkpoint, "_FirstError", Writer)
    with pytest.raises(MemoryError) as raised:
        save_checkpoint(tmp_path, a_state(10))  # 400 kB
    assert memory_that_ran_out(raised.value) == "memory"
    assert not any((tmp_path / "checkpoints").iterdir())


@pytest.mark.parametrize("where", ["in the file's write", "as the write begins"])
def test_a_ctrl_c_in_a_checkpoint_write_is_a_keyboard_interrupt(tmp_path, monkeypatch, where):
    """A second Ctrl-C during the save of a stopped run lands in a write of torch.save, whose
    writer turned its KeyboardInterrupt into RuntimeError("unexpected pos ..."): a traceback and
    a 'failed' run where 'interrupted' was due. It stays a KeyboardInterrupt; nothing is
    written."""
    from dreamtext import checkpoint

    writes = []

    def interrupted(data):
        writes.append(len(data))
        if len(writes) == 3:
            raise KeyboardInterrupt
        return len(data)

    class Writer(checkpoint._FirstError):
        def __init__(self, file):
            super().__init__(file)
            self.file = type("Interrupted", (), {"write": staticmethod(interrupted)})()

        def write(self, data):
            if where == "as the write begins" and len(writes) == 2:
                writes.append(len(data))
                raise KeyboardInterrupt
            return super().write(data)

    monkeypatch.setattr(checkpoint, "_FirstError", Writer)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, a_state(10))
    assert len(writes) == 3
    assert not any((tmp_path / "checkpoints").iterdir())


def test_a_checkpoint_is_written_without_a_copy_of_it_in_memory(tmp_path):
    """The save serialised the whole state into memory before writing it: a table of 2^24 rows
    × 16 levels × 4 features with Adam peaked 1.9 GB (the file's size) above the run's steps.
    The file is byte for byte what torch.save writes, and the save's peak memory stays far
    below the file's size."""
    import io

    from dreamtext.checkpoint import with_digest

    state = {"step": 4, "field": {"table": torch.randn(1000)}, "rng": torch.get_rng_state()}
    path = save_checkpoint(tmp_path / "small", state)
    expected = io.BytesIO()
    torch.save(with_digest(state), expected)
    assert path.read_bytes() == expected.getvalue()
    from peak_growth import run_measured

    script = (
        "import sys, torch\n"
        "from dreamtext.checkpoint import save_checkpoint\n"
        "table = torch.ones(50_000_000)\n"  # 200 MB
        "before = rss('VmHWM')\n"
        "save_checkpoint(sys.argv[1], {'step': 1, 'field': {'table': table}})\n"
        "print((rss('VmHWM') - before) // 1024)\n"
    )
    grown = run_measured(script, str(tmp_path / "big"))
    assert int(grown) * 1024 < 50_000_000  # KiB: below a quarter of the 200 MB file


def test_a_whole_checkpoint_the_memory_cannot_map_is_a_memory_error_not_unreadable(tmp_path):
    """Under a `ulimit -v` the system refuses to map a whole checkpoint (ENOMEM), and
    checkpoint_run took it for no run's checkpoint: an export said "cannot read last.pt (not a
    whole checkpoint)" of a whole file, and the save of the next step would not keep the last
    one as a step file. The refusal is a MemoryError, the CLI's out-of-memory line; a whole
    file mapped with memory to spare, and a damaged one, read as before."""
    import subprocess
    import sys

    table = torch.zeros(1_000_000)  # 4 MB: more than the 1 MB of address space left
    path = save_checkpoint(tmp_path, {"step": 7, "field": {"table": table}, "run_id": "r1"})
    script = (
        "import resource, sys, psutil\n"
        "from dreamtext.checkpoint import checkpoint_run, checkpoint_step\n"
        "room = psutil.Process().memory_info().vms + 1_000_000\n"
        "resource.setrlimit(resource.RLIMIT_AS, (room, resource.RLIM_INFINITY))\n"
        "for read in (checkpoint_run, checkpoint_step):\n"
        "    try:\n"
        "        print(read(sys.argv[1]))\n"
        "    except MemoryError as error:\n"
        "        print('MemoryError', error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.splitlines() == [f"MemoryError memory-mapping {path}"] * 2, done.stderr
    from dreamtext.checkpoint import checkpoint_run, checkpoint_step

    assert (checkpoint_run(path), checkpoint_step(path)) == ("r1", 7)
    path.write_bytes(path.read_bytes()[:1000])  # truncated: no run's
    assert (checkpoint_run(path), checkpoint_step(path)) == (None, None)


def test_a_map_refused_for_another_reason_than_memory_is_no_memory_error(tmp_path, monkeypatch):
    """Only ENOMEM ("Cannot allocate memory") is the memory running out: a map the system
    refuses otherwise (a file system without mmap: "No such device") is no readable checkpoint,
    not the CLI's out-of-memory line."""
    from dreamtext import checkpoint
    from dreamtext.checkpoint import checkpoint_run, checkpoint_step

    path = save_checkpoint(tmp_path, {"step": 7, "field": {}, "run_id": "r1"})

    def refused(*args, **kwargs):
        raise RuntimeError(f"unable to mmap 1000 bytes from file <{path}>: No such device (19)")

    monkeypatch.setattr(checkpoint.torch, "load", refused)
    assert (checkpoint_run(path), checkpoint_step(path)) == (None, None)
