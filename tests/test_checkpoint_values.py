"""Checkpoint files: what is kept, removed, checked and rebuilt, each expected value worked out by
hand from the docstrings of dreamtext/checkpoint.py (not read back from its output)."""

import errno
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from tiny_models import TINY_TRAIN

from dreamtext import checkpoint
from dreamtext.checkpoint import (
    append_log_line,
    can_resume,
    checkpoint_step,
    is_whole,
    load_checkpoint,
    load_run,
    newest_whole_step,
    save_checkpoint,
    state_digest,
)
from dreamtext.config import config_to_dict, resolve_config


def a_state(step: int) -> dict:
    return {"step": step, "field": {"table": torch.arange(1000, dtype=torch.float32)}}


def steps_on_disk(folder: Path) -> dict[str, int]:
    return {p.name: checkpoint_step(p) for p in sorted(folder.glob("*.pt"))}


def _run_state(field, renderer, config: dict, field_config: dict) -> dict:
    """A run's checkpoint at step 2 of ``field`` and ``renderer``, with no optimiser or RNG
    state."""
    return {
        "step": 2,
        "field": field.state_dict(),
        "optimizer": {},
        "renderer": renderer.state_dict(),
        "rng": {},
        "config": config,
        "field_config": field_config,
    }


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_checkpoints_have_the_mode_of_an_ordinary_new_file(tmp_path, umask, mode):
    """0o666 less the umask, not mkstemp's private 0o600: a run is shared with others."""
    before = os.umask(umask)
    try:
        save_checkpoint(tmp_path, a_state(1))
    finally:
        os.umask(before)
    folder = tmp_path / "checkpoints"
    assert (folder / "last.pt").stat().st_mode & 0o777 == mode
    assert (folder / "last.step.json").stat().st_mode & 0o777 == mode


def test_a_save_after_a_rollback_keeps_keep_minus_one_older_steps_of_its_own_branch(tmp_path):
    """keep=2: last.pt and one older step file. After step_10 was copied over last.pt, the
    save of step 20 keeps step 10 (the one older step it may keep) and removes the old
    branch's step_000020.pt (a step file of its own step: not the same state)."""
    folder = tmp_path / "checkpoints"
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, a_state(step), keep=3)
    assert steps_on_disk(folder) == {"last.pt": 30, "step_000010.pt": 10, "step_000020.pt": 20}
    shutil.copyfile(folder / "step_000010.pt", folder / "last.pt")
    save_checkpoint(tmp_path, a_state(20), keep=2)
    assert steps_on_disk(folder) == {"last.pt": 20, "step_000010.pt": 10}


def test_the_checksum_covers_shapes_and_every_plain_value():
    flat = {"step": 3, "field": {"t": torch.arange(12.0)}, "config": {"lr": 0.001}}
    digests = {
        state_digest(flat),
        state_digest({**flat, "field": {"t": torch.arange(12.0).reshape(3, 4)}}),
        state_digest({**flat, "step": 4}),
        state_digest({**flat, "config": {"lr": 0.002}}),
    }
    assert len(digests) == 4


def test_the_newest_whole_step_file_is_the_newest_that_loads(tmp_path):
    folder = tmp_path / "checkpoints"
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, a_state(step), keep=3)
    assert newest_whole_step(folder, ()) == (folder / "step_000020.pt", 20)
    os.truncate(folder / "step_000020.pt", 100)
    assert newest_whole_step(folder, ()) == (folder / "step_000010.pt", 10)


def test_a_failing_disk_while_a_step_file_is_checked_is_asked_again(tmp_path, monkeypatch):
    """EIO says nothing of the file: the verdict is not kept for the next asking."""
    save_checkpoint(tmp_path, a_state(10))
    save_checkpoint(tmp_path, a_state(20))
    path = tmp_path / "checkpoints" / "step_000010.pt"
    real_load = torch.load

    def failing(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(checkpoint.torch, "load", failing)
    assert is_whole(path, 10, ()) is False
    monkeypatch.setattr(checkpoint.torch, "load", real_load)
    assert is_whole(path, 10, ()) is True


def test_a_folder_named_last_pt_is_no_run_to_resume(tmp_path):
    (tmp_path / "checkpoints" / "last.pt").mkdir(parents=True)
    assert can_resume(tmp_path) is False


def test_memory_running_out_while_a_checkpoint_loads_is_not_a_damaged_file(tmp_path, monkeypatch):
    """The machine's memory, not the file: a resume must not fall back from a whole last.pt."""
    save_checkpoint(tmp_path, a_state(1))

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(checkpoint.torch, "load", no_memory)
    with pytest.raises(MemoryError):
        load_checkpoint(tmp_path / "checkpoints" / "last.pt")


class _FullAfter:
    """An unbuffered log file whose writes stop fitting after ``room`` bytes (a full disk)."""

    def __init__(self, path: Path, room: int) -> None:
        self.file, self.room = open(path, "r+b", buffering=0), room  # noqa: SIM115

    def write(self, data) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = self.file.write(bytes(data[: self.room]))
        self.room -= written
        return written

    def __getattr__(self, name):
        return getattr(self.file, name)


def test_a_log_line_that_does_not_fit_is_cut_back_off(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"step": 1}\n')
    log = _FullAfter(path, room=5)
    with pytest.raises(OSError) as raised:
        append_log_line(log, path, {"step": 2, "loss": 0.5})
    log.file.close()
    assert raised.value.filename == str(path)
    assert path.read_bytes() == b'{"step": 1}\n'


def test_a_log_line_of_a_nan_or_infinite_loss_is_strict_json(tmp_path):
    """A diverged step's loss was written as Python's ``NaN``, which is not JSON: JavaScript's
    ``JSON.parse``, as any strict JSON reader, refused the whole line."""
    path = tmp_path / "log.jsonl"
    with open(path, "ab", buffering=0) as log:
        append_log_line(log, path, {"step": 3, "loss": math.nan, "w": math.inf, "t": 40.5})

    def strict(constant):
        raise ValueError(f"{constant} is not JSON")

    record = json.loads(path.read_text(), parse_constant=strict)
    assert record == {"step": 3, "loss": None, "w": None, "t": 40.5}


def test_a_hidden_file_not_named_as_a_temp_file_is_kept(tmp_path):
    """Only ``.<name>.XXXXXXXX.tmp`` (mkstemp's eight characters) are a killed write's."""
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / ".last.pt.old.bak").write_bytes(b"a user's copy")
    save_checkpoint(tmp_path, a_state(1))
    assert (folder / ".last.pt.old.bak").exists()


def test_an_older_builtin_checkpoint_is_rebuilt_with_its_presets_settings(tmp_path):
    """A builtin:shapes checkpoint from before ``density_activation``, ``render.sampler`` and
    the ``presets`` record: its field is the preset's (exp density, not the default softplus),
    rendered by the dense sampler that runs of then had."""
    from dreamtext.factory import build_field, build_renderer
    from dreamtext.field import field_config_to_dict

    cfg = resolve_config(
        {**TINY_TRAIN, "prompt": "a red cube", "guidance": {"model": "builtin:shapes"}}
    )
    assert cfg.field.density_activation == "exp"
    field, renderer = build_field(cfg.field, "cpu"), build_renderer(cfg.render, "cpu")
    config = config_to_dict(cfg)
    del config["presets"], config["field"]["density_activation"], config["render"]["sampler"]
    field_config = field_config_to_dict(cfg.field)
    del field_config["density_activation"]
    state = _run_state(field, renderer, config, field_config)
    save_checkpoint(tmp_path, state)
    loaded, loaded_renderer, _ = load_run(tmp_path)
    assert loaded.cfg.density_activation == "exp"
    assert loaded_renderer.cfg.sampler == "dense"


def a_run_state(step: int) -> dict:
    """A state with every key of a run checkpoint (checkpoint.RUN_KEYS), for is_whole."""
    return {key: {} for key in checkpoint.RUN_KEYS} | a_state(step)


def test_last_reads_reads_only_the_step_unless_asked_for_a_whole_file(tmp_path):
    """last_reads: with whole on, a last.pt with a changed byte does not read (a resume goes on
    from an older one); with whole off only its step is read, which a changed byte keeps."""
    from damage import flip_a_tensor_byte

    from dreamtext.checkpoint import last_reads, resume_step

    save_checkpoint(tmp_path, a_run_state(10))
    assert last_reads(tmp_path) and last_reads(tmp_path, whole=False)
    assert resume_step(tmp_path) == 10
    flip_a_tensor_byte(tmp_path / "checkpoints" / "last.pt")
    assert not last_reads(tmp_path)  # damaged, but last.pt is there: a resume is needed
    assert last_reads(tmp_path, whole=False)
    assert resume_step(tmp_path) is None  # no whole checkpoint at all


def test_last_reads_takes_the_step_from_its_save_record_without_loading_the_checkpoint(
    tmp_path, monkeypatch
):
    """With whole off, a last.pt that its save's last.step.json is the record of is not
    unpickled (a batch rerun asks this of every finished line, twice); one the record is not of
    (cut short since: another size) is, and still reads as missing nothing only if it loads."""
    from dreamtext.checkpoint import last_reads

    save_checkpoint(tmp_path, a_run_state(10))
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    assert last_reads(tmp_path, whole=False)
    assert loads == []
    last = tmp_path / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:100])  # cut short: the record is not of it
    assert not last_reads(tmp_path, whole=False)
    assert len(loads) >= 1


def test_last_reads_loads_a_whole_last_pt_though_its_save_record_still_matches(tmp_path):
    """With whole on, last.pt is loaded whole even where its save's record still names it: a
    changed byte in its body (bit rot: same size, same time, same last bytes) is what only a
    full read tells, and the record must not stand in for it."""
    from damage import flip_a_tensor_byte

    from dreamtext.checkpoint import last_reads
    from dreamtext.runfiles import recorded_step

    big = {"field": {"table": torch.arange(200_000, dtype=torch.float32)}}
    save_checkpoint(tmp_path, a_run_state(10) | big)
    last = tmp_path / "checkpoints" / "last.pt"
    before = last.stat()
    assert flip_a_tensor_byte(last) < before.st_size - 65536  # before the bytes the record hashes
    os.utime(last, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert recorded_step(tmp_path) == 10  # the record cannot tell
    assert not last_reads(tmp_path)
    assert last_reads(tmp_path, whole=False)


def test_a_run_whose_checkpoints_were_all_removed_needs_no_resume(tmp_path):
    save_checkpoint(tmp_path, a_run_state(10))
    shutil.rmtree(tmp_path / "checkpoints")
    from dreamtext.checkpoint import last_reads

    assert last_reads(tmp_path) and last_reads(tmp_path, whole=False)


def test_a_resume_after_a_damaged_last_pt_goes_on_from_the_newest_whole_step_file(tmp_path):
    from damage import flip_a_tensor_byte

    from dreamtext.checkpoint import last_reads, resume_step

    for step in (5, 10, 15):
        save_checkpoint(tmp_path, a_run_state(step))  # step 5, step 10, last.pt 15
    flip_a_tensor_byte(tmp_path / "checkpoints" / "last.pt")
    assert resume_step(tmp_path) == 10
    assert not last_reads(tmp_path)


def test_a_verdict_is_kept_only_for_the_keys_it_was_asked_with(tmp_path):
    """A step file with no run's keys is whole as a checkpoint of any kind, not as a run's: the
    verdict of the first asking is not the answer to the second."""
    save_checkpoint(tmp_path, a_state(10))
    save_checkpoint(tmp_path, a_state(20))
    path = tmp_path / "checkpoints" / "step_000010.pt"
    assert is_whole(path, 10, ()) is True
    assert is_whole(path, 10) is False  # checkpoint.RUN_KEYS missing
    assert is_whole(path, 10, ()) is True


def test_a_file_written_over_in_place_with_its_old_time_is_read_again(tmp_path):
    """cp -p (or rsync) over a step file keeps its inode, size and modification time; only its
    change time tells that it was written again."""
    save_checkpoint(tmp_path, a_state(10))
    save_checkpoint(tmp_path, a_state(20))
    path = tmp_path / "checkpoints" / "step_000010.pt"
    assert is_whole(path, 10, ()) is True
    before = os.stat(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # somewhere in the tensor's bytes or the zip's records
    with open(path, "r+b") as file:  # in place: the same inode
        file.write(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(path).st_ino == before.st_ino and os.stat(path).st_size == before.st_size
    assert is_whole(path, 10, ()) is False


def test_a_failing_disk_while_a_checkpoint_loads_is_no_damaged_file(tmp_path, monkeypatch):
    """EIO or a stale NFS handle says nothing of the file, which may be whole: it is raised as
    the OSError it is (the CLI names the fix), not called damaged with an older one to go on
    from (whose first save would replace this one)."""
    from dreamtext.checkpoint import UnreadableCheckpoint

    for step in (10, 20):
        save_checkpoint(tmp_path, a_state(step))

    def failing(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(checkpoint.torch, "load", failing)
    with pytest.raises(OSError) as error:
        load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert not isinstance(error.value, UnreadableCheckpoint)
    assert error.value.errno == errno.EIO


def test_a_damaged_step_file_is_not_advised_to_be_replaced_by_another(tmp_path):
    """Only an unreadable last.pt names the step file to go on from; a step file read by name
    that is damaged is to be deleted."""
    from damage import flip_a_tensor_byte

    from dreamtext.checkpoint import UnreadableCheckpoint

    for step in (5, 10, 15):
        save_checkpoint(tmp_path, a_state(step))
    step_10 = tmp_path / "checkpoints" / "step_000010.pt"
    flip_a_tensor_byte(step_10)
    with pytest.raises(UnreadableCheckpoint) as error:
        load_checkpoint(step_10)
    assert str(error.value).endswith("; delete it to start over")


def test_a_checkpoint_from_before_run_ids_is_of_run_empty_and_none_without_one(tmp_path):
    from dreamtext.checkpoint import checkpoint_run

    save_checkpoint(tmp_path, a_state(10))  # no run_id: an older dreamtext's
    assert checkpoint_run(tmp_path / "checkpoints" / "last.pt") == ""
    save_checkpoint(tmp_path, a_state(20) | {"run_id": "abc123"})
    assert checkpoint_run(tmp_path / "checkpoints" / "last.pt") == "abc123"
    assert checkpoint_run(tmp_path / "checkpoints" / "missing.pt") is None


def test_a_damaged_last_pt_with_every_step_file_damaged_says_train_again(tmp_path):
    """No whole checkpoint to go on from: the one line says to train again (no TypeError from
    naming a step file that does not exist)."""
    from damage import flip_a_tensor_byte

    from dreamtext.checkpoint import RUN_KEYS, UnreadableCheckpoint

    for step in (5, 10):
        save_checkpoint(tmp_path, a_run_state(step))  # step_000005.pt, last.pt of 10
    folder = tmp_path / "checkpoints"
    flip_a_tensor_byte(folder / "last.pt")
    flip_a_tensor_byte(folder / "step_000005.pt")
    with pytest.raises(UnreadableCheckpoint, match="no earlier checkpoint of the run is whole"):
        load_checkpoint(folder / "last.pt", required=RUN_KEYS)


def test_a_step_record_that_cannot_be_written_fails_no_save(tmp_path):
    """last.step.json is a shortcut for the CLI: where it cannot be written (here a folder of
    that name is in the way) the checkpoint is still saved, and no record is believed."""
    from dreamtext.runfiles import recorded_step

    blocker = tmp_path / "checkpoints" / "last.step.json"
    blocker.mkdir(parents=True)
    (blocker / "x").write_text("in the way")
    last = save_checkpoint(tmp_path, a_state(7))
    assert checkpoint_step(last) == 7
    assert recorded_step(tmp_path) is None


def test_a_runs_renderer_comes_back_with_its_trained_occupancy_grid(tmp_path):
    """load_run restores the renderer's state (its occupancy grid) as saved, not a fresh one
    that marks every cell occupied."""
    from dreamtext.factory import build_field, build_renderer
    from dreamtext.field import field_config_to_dict

    cfg = resolve_config(
        {**TINY_TRAIN, "prompt": "a red cube", "guidance": {"model": "builtin:shapes"}}
    )
    field, renderer = build_field(cfg.field, "cpu"), build_renderer(cfg.render, "cpu")
    grid = renderer.state_dict()
    grid["grid.occupied"].view(-1)[::2] = False
    grid["grid.density"].view(-1)[::3] = 2.5
    renderer.load_state_dict(grid)
    state = _run_state(field, renderer, config_to_dict(cfg), field_config_to_dict(cfg.field))
    save_checkpoint(tmp_path, state)
    _, loaded_renderer, _ = load_run(tmp_path)
    loaded = loaded_renderer.state_dict()
    assert int(loaded["grid.occupied"].sum()) == loaded["grid.occupied"].numel() // 2
    assert torch.equal(loaded["grid.density"], grid["grid.density"])


def test_a_checkpoint_folder_that_refuses_new_files_is_named_with_last_pt_not_a_temp_file(
    tmp_path, monkeypatch
):
    """`chattr +i checkpoints` (or a folder made another user's) mid-run: the line named
    ``checkpoints/.last.pt.bxv31027.tmp``, a hidden file the user never saw, made by mkstemp."""
    import tempfile

    def refused(prefix="", suffix="", dir=None):
        name = os.path.join(dir, f"{prefix}bxv31027{suffix}")
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), name)

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(OSError) as raised:
        save_checkpoint(tmp_path, a_state(1))
    assert raised.value.errno == errno.EPERM
    assert raised.value.filename == str(tmp_path / "checkpoints" / "last.pt")


def test_a_full_disk_in_the_copy_of_the_step_it_keeps_names_that_step_file(tmp_path, monkeypatch):
    """Where the file system has no hard links (exFAT, some network shares: ``os.link`` refused),
    the ``last.pt`` being replaced is kept as ``step_XXXXXX.pt`` by a copy. A full disk in that
    copy named ``checkpoints/.step_000001.pt.3f9a0c1e.tmp``, a hidden file the user never saw;
    it names the step file, no part of the copy is left, and last.pt stays step 1's."""
    save_checkpoint(tmp_path, a_state(1))

    def no_hard_links(source, target):
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(source))

    def fills_the_disk(source, target):
        Path(target).write_bytes(b"part of it")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(source))

    monkeypatch.setattr(os, "link", no_hard_links)
    monkeypatch.setattr(shutil, "copyfile", fills_the_disk)
    with pytest.raises(OSError) as raised:
        save_checkpoint(tmp_path, a_state(2))
    folder = tmp_path / "checkpoints"
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.filename == str(folder / "step_000001.pt")
    assert steps_on_disk(folder) == {"last.pt": 1}
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
