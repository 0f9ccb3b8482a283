"""status.json: written by the trainer when a run starts, finishes, fails or is interrupted."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch
from step_faults import raise_at_step, signal_after_step
from tiny_models import TINY_TRAIN

import dreamtext.runstatus as runstatus
import dreamtext.trainer as trainer
from dreamtext.config import resolve_config
from dreamtext.errors import DreamtextError
from dreamtext.runstatus import STATUS, StatusTracker, error_line, read_status, write_status
from dreamtext.trainer import TrainingInterrupted, train

KEYS = {"state", "step", "iters", "started", "updated", "error", "seconds", "gpu_mem_mib", "phase"}
KEYS |= {"stages", "total_seconds", "peak_gpu_mem_mib", "host", "pid", "pid_start", "pid_ns"}
KEYS |= {"boot_id", "folder_inode"}


def tiny_config(tmp_path, model, **overrides):
    merged = {
        **TINY_TRAIN,
        "prompt": "a red sphere",
        "workspace": str(tmp_path / "run"),
        "preview_every": 0,
        "guidance": {"model": str(model), "guidance_scale": 10.0},
        **overrides,
    }
    return resolve_config(merged)


def status(tmp_path):
    return json.loads((tmp_path / "run" / "status.json").read_text())


def test_a_finished_run_says_so_after_its_export(tmp_path, tiny_sd_path, monkeypatch):
    seen_at_export = []
    monkeypatch.setattr(
        trainer, "export_trained", lambda run: seen_at_export.append(status(tmp_path))
    )
    train(tiny_config(tmp_path, tiny_sd_path, iters=3, export=True))
    at_export = [(s["state"], s["phase"], s["step"]) for s in seen_at_export]
    assert at_export == [("running", "export", 3)]
    done = status(tmp_path)
    assert set(done) == KEYS
    assert done["state"] == "finished" and done["step"] == done["iters"] == 3
    assert done["phase"] == "export"
    assert done["error"] is None and done["gpu_mem_mib"] is None and done["seconds"] > 0
    assert datetime.fromisoformat(done["started"]) <= datetime.fromisoformat(done["updated"])


def test_a_run_exporting_longer_than_the_viewers_quiet_time_is_shown_exporting_not_quiet(
    tmp_path, tiny_sd_path, monkeypatch
):
    """The export writes into hidden staging folders and status.json was last written as it
    began: one over 10 minutes (a CPU turntable, a 256^3 mesh) showed "exporting · no change
    for N min" while it worked. Here the quiet time is ½ s and the meshing takes 1 s."""
    from analytic_field import SphereField

    import dreamtext.export as export_module
    import dreamtext.view.workspaces as workspaces
    from dreamtext.view import Catalog, read_run

    monkeypatch.setattr(runstatus, "HEARTBEAT_SECONDS", 0.05)
    monkeypatch.setattr(workspaces, "QUIET_AFTER_S", 0.5)
    meshing, seen = export_module.extract_mesh, []

    def slow_meshing(field, *args, **kwargs):
        time.sleep(1.0)
        seen.append(read_run(Catalog([tmp_path]).find("run")).status)
        return meshing(SphereField(), *args, **kwargs)  # a mesh whatever 3 steps trained

    monkeypatch.setattr(export_module, "extract_mesh", slow_meshing)
    options = {"resolution": 32, "formats": ["ply"], "video": False}
    train(tiny_config(tmp_path, tiny_sd_path, iters=3, export=True, export_options=options))
    [during] = seen
    assert (during["state"], during["phase"], during["activity"]) == (
        "running",
        "export",
        workspaces.PHASE_ACTIVITY["export"],
    )
    assert "quiet_minutes" not in during
    done = status(tmp_path)  # the heartbeat stopped before the run's last write
    assert (done["state"], done["phase"], done["step"]) == ("finished", "export", 3)
    assert (tmp_path / "run" / "mesh" / "mesh.ply").is_file()
    time.sleep(0.2)
    assert status(tmp_path) == done


def test_a_run_taken_over_while_it_exports_stops_and_writes_no_files(
    tmp_path, tiny_sd_path, monkeypatch
):
    """A batch worker whose lock was taken over during its export (no status update there, so
    no guard ran) exported on and swapped its files in over the new holder's. The export's
    heartbeat runs the guards; what one raises stops the export at its next check."""
    from analytic_field import SphereField

    import dreamtext.export as export_module
    from dreamtext.runstatus import RunTakenOver, guard_run

    monkeypatch.setattr(runstatus, "HEARTBEAT_SECONDS", 0.05)
    meshing, exporting = export_module.extract_mesh, []

    def slow_meshing(field, *args, **kwargs):
        exporting.append(1)
        time.sleep(0.5)
        return meshing(SphereField(), *args, **kwargs)

    def lock_lost() -> None:
        if exporting:
            raise RunTakenOver("another worker holds the lock")

    monkeypatch.setattr(export_module, "extract_mesh", slow_meshing)
    options = {"resolution": 32, "formats": ["ply"], "video": False}
    cfg = tiny_config(tmp_path, tiny_sd_path, iters=3, export=True, export_options=options)
    with guard_run(cfg.workspace, lock_lost), pytest.raises(RunTakenOver):
        train(cfg)
    assert status(tmp_path)["state"] == "running"  # left to the new holder
    assert not (tmp_path / "run" / "mesh").exists()
    assert not list((tmp_path / "run").glob(".export-*"))


def test_a_run_says_running_from_its_first_step_and_its_step_advances(
    tmp_path, tiny_sd_path, monkeypatch
):
    seen = []
    real_step = trainer.train_step
    monkeypatch.setattr(
        trainer, "train_step", lambda run: seen.append(status(tmp_path)) or real_step(run)
    )
    train(tiny_config(tmp_path, tiny_sd_path, iters=4, log_every=1))
    assert (seen[0]["state"], seen[0]["step"], seen[0]["iters"]) == ("running", 0, 4)
    assert [s["step"] for s in seen] == [0, 1, 2, 3]  # refreshed at every log line
    assert {(s["state"], s["phase"]) for s in seen} == {("running", "train")}
    seconds = [s["seconds"] for s in seen]
    assert seconds == sorted(seconds) and seconds[-1] > seconds[0]
    assert seen[0]["started"] == seen[-1]["started"]


def test_status_is_written_at_most_once_per_log_line(tmp_path, tiny_sd_path, monkeypatch):
    written = []
    real_write = runstatus.write_status
    monkeypatch.setattr(
        runstatus,
        "write_status",
        lambda ws, s: written.append((s["state"], s["step"])) or real_write(ws, s),
    )
    # logs at 3 and 6 (and the last step, 7); checkpoints at 2, 4, 6 (6 is a log step too)
    train(tiny_config(tmp_path, tiny_sd_path, iters=7, log_every=3, checkpoint_every=2))
    assert written == [
        ("running", 0),
        ("running", 2),
        ("running", 3),
        ("running", 4),
        ("running", 6),
        ("running", 7),
        ("finished", 7),
    ]


def test_a_failing_export_says_failed_in_the_export_phase(tmp_path, tiny_sd_path, monkeypatch):
    def broken_export(run):
        raise RuntimeError("marching cubes found no surface")

    monkeypatch.setattr(trainer, "export_trained", broken_export)
    with pytest.raises(RuntimeError):
        train(tiny_config(tmp_path, tiny_sd_path, iters=2, export=True))
    failed = status(tmp_path)
    assert (failed["state"], failed["phase"], failed["step"]) == ("failed", "export", 2)


def test_a_failing_run_records_the_error_line(tmp_path, tiny_sd_path, monkeypatch):
    raise_at_step(monkeypatch, 1, RuntimeError("CUDA error: device-side assert\nmore detail"))
    with pytest.raises(RuntimeError):
        train(tiny_config(tmp_path, tiny_sd_path, iters=4))
    failed = status(tmp_path)
    assert failed["state"] == "failed" and failed["step"] == 1
    assert failed["error"] == "RuntimeError: CUDA error: device-side assert"


@pytest.mark.parametrize(("checkpoint_every", "saved_step"), [(2, 2), (100, None)])
def test_a_failed_run_records_the_step_a_resume_goes_on_from_beside_the_step_it_failed_at(
    tmp_path, tiny_sd_path, monkeypatch, checkpoint_every, saved_step
):
    """A full disk at step 3 of a run saved at step 2 recorded "failed" at step 3 alone, and the
    viewer showed a step --resume does not start from; "interrupted" records the saved step."""
    import errno

    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "log.jsonl"))
    raise_at_step(monkeypatch, 3, full)
    with pytest.raises(OSError):
        train(tiny_config(tmp_path, tiny_sd_path, iters=6, checkpoint_every=checkpoint_every))
    failed = status(tmp_path)
    assert (failed["state"], failed["step"]) == ("failed", 3)
    assert failed["saved_step"] == saved_step


def status_write_fills_the_disk(monkeypatch, state: str) -> None:
    """Make the atomic write of a ``state`` status.json fail as a full disk refuses its temp file
    (ENOSPC); other states are written."""
    import errno

    real_write = runstatus.write_status

    def full_disk_at(workspace, record):
        if record["state"] == state:
            raise OSError(errno.ENOSPC, "No space left on device", str(workspace))
        real_write(workspace, record)

    monkeypatch.setattr(runstatus, "write_status", full_disk_at)


def test_a_full_disk_that_fails_the_failed_status_too_keeps_the_runs_error(
    tmp_path, tiny_sd_path, monkeypatch
):
    """A full disk fails the run (a log line) and then its "failed" status.json: the status
    write's error replaced the run's, and `dreamtext text` said "No space left on device
    (RUN/status.json); ... or pick a folder you can write (--workspace)", where the run is saved
    at its last checkpoint and the fix is to free space and --resume. The run's error stands."""
    import errno

    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "log.jsonl"))
    raise_at_step(monkeypatch, 3, full)
    status_write_fills_the_disk(monkeypatch, "failed")
    with pytest.raises(OSError) as error:
        train(tiny_config(tmp_path, tiny_sd_path, iters=6, checkpoint_every=2))
    assert error.value.filename == full.filename  # log.jsonl's, not status.json's
    assert error.value.saved_run.step == 2  # the CLI's line: saved at step 2, --resume
    # Written over the old status.json in the space it holds (write_last_status).
    assert status(tmp_path)["state"] == "failed"


def test_a_full_disk_that_refuses_the_failed_status_files_temp_file_still_records_failed(
    tmp_path, tiny_sd_path, monkeypatch
):
    """A disk that fills mid-run refuses every new file, so the "failed" status.json's temp file
    too: status.json stayed "running" and `dreamtext view` showed the run interrupted, "its
    process N is gone (killed)". The failed record is written over status.json in the disk space
    it holds already, so the viewer says failed, with the full disk's line."""
    import errno

    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "log.jsonl"))
    disk_full = []
    real_step = trainer.train_step

    def step_then_fill_the_disk(run):
        if run.step == 3:
            disk_full.append(True)
            raise full
        return real_step(run)

    real_atomic = runstatus.atomic_write_bytes

    def no_new_file_once_full(path, write, before_replace=None):
        if disk_full:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_atomic(path, write, before_replace)

    monkeypatch.setattr(trainer, "train_step", step_then_fill_the_disk)
    monkeypatch.setattr(runstatus, "atomic_write_bytes", no_new_file_once_full)
    with pytest.raises(OSError) as error:
        train(tiny_config(tmp_path, tiny_sd_path, iters=6, checkpoint_every=2))
    assert error.value is full
    record = status(tmp_path)
    assert (record["state"], record["step"]) == ("failed", 3)
    assert "No space left on device" in record["error"]


def _running_then_failed(workspace: Path) -> tuple[dict, dict, bytes]:
    """A running status.json written as runs write it, the failed record that ends it, and that
    record as a run's last status on a full disk writes it in place (write_last_status)."""
    running = {"state": "running", "step": 3, "iters": 6, "phase": "train", "error": None}
    running |= {"updated": "2026-12-07T09:00:00+00:00", "host": "n1", "pid": 123}
    write_status(workspace, running)
    failed = {**running, "state": "failed", "error": "OSError: No space left on device"}
    return running, failed, (json.dumps(failed, separators=(",", ":")) + "\n").encode()


@pytest.mark.parametrize("longer", [False, True], ids=["shorter", "longer"])
def test_a_status_written_in_place_that_fails_half_way_leaves_the_old_one_whole(
    tmp_path, monkeypatch, longer
):
    """A run's last status on a full disk is written over status.json in the space it holds; on
    a copy-on-write file system (btrfs, ZFS) that write allocates too, and may stop half way:
    status.json was left half the new record and half the old, which every reader took for no
    status (the viewer, a batch's rerun). The old record is written back whole, also where the
    new one (a long error line) had run past the old one's end, within the file's blocks."""
    import errno

    running, failed, data = _running_then_failed(tmp_path)
    if longer:
        data = (json.dumps({**failed, "error": "x" * 1500}) + "\n").encode()
        assert len(data) // 2 > (tmp_path / STATUS).stat().st_size
    real_write_whole = runstatus.write_whole
    calls = []

    def half_then_full(write, data, path):
        calls.append(len(data))
        if len(calls) == 1:
            write(memoryview(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write_whole(write, data, path)

    monkeypatch.setattr(runstatus, "write_whole", half_then_full)
    assert not runstatus.overwrite_in_place(tmp_path / "status.json", data)
    assert read_status(tmp_path) == running


def test_a_reader_racing_a_status_written_in_place_reads_it_whole(tmp_path, monkeypatch):
    """A status.json written in place (a run's last status on a full disk) is torn while the
    write is under way: a reader at that moment (a batch, a resume's check: read_status; the
    viewer: read_status_file) read no status. It reads it again until it is whole."""
    import threading

    from dreamtext.view.workspaces import read_status_file

    _, failed, data = _running_then_failed(tmp_path)
    real_write_whole = runstatus.write_whole
    seen = {}
    readers = [
        threading.Thread(target=lambda: seen.update(runs=read_status(tmp_path))),
        threading.Thread(target=lambda: seen.update(view=read_status_file(tmp_path / STATUS))),
    ]

    def in_two_pieces(write, data, path):  # the readers come between them
        half = len(data) // 2
        real_write_whole(write, data[:half], path)
        for reader in readers:
            reader.start()
        time.sleep(0.02)
        real_write_whole(write, data[half:], path)

    monkeypatch.setattr(runstatus, "write_whole", in_two_pieces)
    assert runstatus.overwrite_in_place(tmp_path / STATUS, data)
    for reader in readers:
        reader.join()
    assert seen == {"runs": failed, "view": failed}


@pytest.mark.parametrize("fits", [True, False])
def test_a_ctrl_c_on_a_full_disk_stays_an_interrupt_and_records_it_where_it_fits(
    tmp_path, tiny_sd_path, monkeypatch, fits
):
    """Ctrl-C on a disk that then refuses the "interrupted" status.json: the write's error
    replaced the interrupt (`dreamtext text` said "No space left on device (RUN/status.json);
    ... or pick a folder you can write (--workspace)", exit 2, where the run is saved at the
    step it stopped at) and status.json stayed "running". The interrupt stands; the record is
    written in place where it fits, else status.json stays "running"."""

    status_write_fills_the_disk(monkeypatch, "interrupted")
    signal_after_step(monkeypatch, 2, signal.SIGINT)
    if not fits:
        monkeypatch.setattr(runstatus, "overwrite_in_place", lambda path, data: False)
    with pytest.raises(TrainingInterrupted) as stop:
        train(tiny_config(tmp_path, tiny_sd_path, iters=6, checkpoint_every=100))
    assert stop.value.step == 2
    expected = ("interrupted", 2) if fits else ("running", 2)
    assert (status(tmp_path)["state"], status(tmp_path)["step"]) == expected


def test_an_interrupted_run_says_interrupted_and_a_resume_finishes(
    tmp_path, tiny_sd_path, monkeypatch
):
    real_step = signal_after_step(monkeypatch, 2, signal.SIGTERM)
    with pytest.raises(TrainingInterrupted):
        train(tiny_config(tmp_path, tiny_sd_path, iters=4, checkpoint_every=100))
    assert (status(tmp_path)["state"], status(tmp_path)["step"]) == ("interrupted", 2)
    monkeypatch.setattr(trainer, "train_step", real_step)
    train(tiny_config(tmp_path, tiny_sd_path, iters=4), resume=True)
    assert (status(tmp_path)["state"], status(tmp_path)["step"]) == ("finished", 4)


def _earlier_attempt(workspace, seconds=100.0):
    write_status(workspace, {"state": "interrupted", "step": 10, "iters": 20, "seconds": seconds})


def test_a_resumed_run_adds_its_time_to_its_earlier_attempts(tmp_path):
    _earlier_attempt(tmp_path)
    tracker = StatusTracker(tmp_path, 20, lambda: 10, torch.device("cpu"))  # resumed at step 10
    tracker.write("running")
    assert 100.0 <= read_status(tmp_path)["seconds"] < 110.0


def test_a_run_started_from_step_zero_counts_its_time_from_zero(tmp_path):
    _earlier_attempt(tmp_path)
    tracker = StatusTracker(tmp_path, 20, lambda: 0, torch.device("cpu"))  # --overwrite
    tracker.write("running")
    assert read_status(tmp_path)["seconds"] < 10.0


def test_status_json_names_its_folder_so_a_copy_of_it_is_told_from_it(tmp_path):
    """A copy made while the run runs carries status.json: its folder_inode is the original's
    inode (a copy's folder has another), which the viewer compares with the folder it reads."""
    from dreamtext.processes import copied_folder

    StatusTracker(tmp_path, 20, lambda: 5, torch.device("cpu")).write("running")
    written = read_status(tmp_path)
    assert written["folder_inode"] == tmp_path.stat().st_ino
    copy = tmp_path.parent / f"{tmp_path.name}_copy"
    shutil.copytree(tmp_path, copy)
    assert copied_folder(read_status(copy), copy) is True
    assert copied_folder(written, tmp_path) is False
    assert copied_folder({**written, "host": "elsewhere"}, copy) is None  # another machine's


def test_a_guard_stops_a_run_and_leaves_status_json_to_the_new_holder(
    tmp_path, tiny_sd_path, monkeypatch
):
    steps = []

    def taken_over_at_three():
        steps.append((read_status(tmp_path / "run") or {}).get("step"))
        if len(steps) == 3:
            raise runstatus.RunTakenOver("lock taken over by elsewhere pid 7")

    cfg = tiny_config(tmp_path, tiny_sd_path, iters=6, log_every=1, checkpoint_every=100)
    with (
        runstatus.guard_run(tmp_path / "run", taken_over_at_three),
        pytest.raises(runstatus.RunTakenOver),
    ):
        train(cfg)
    assert steps == [None, 0, 1]  # before the first write, then at the log lines of steps 1, 2
    assert (status(tmp_path)["state"], status(tmp_path)["step"]) == ("running", 1)


def test_a_run_that_cannot_start_writes_nothing(tmp_path):
    cfg = tiny_config(tmp_path, tmp_path / "no_such_model", iters=2)
    with pytest.raises(DreamtextError, match="does not exist"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_read_status_ignores_missing_and_broken_files(tmp_path):
    assert read_status(tmp_path) is None
    (tmp_path / "status.json").write_text("{not json")
    assert read_status(tmp_path) is None


def test_error_line_is_the_message_of_a_user_error():
    assert error_line(DreamtextError("unknown caption 'a cat'; use ...")) == (
        "unknown caption 'a cat'; use ..."
    )
    assert error_line(ValueError()) == "ValueError"


def test_a_stage_that_another_follows_ends_running_in_its_phase(tmp_path):
    """Image→3D's stages before text→3D (sample, describe, descriptor) are tracked too, but their
    end is not the run's: the file says running until the next stage takes over."""
    step = {"n": 0}
    with runstatus.track_status(
        tmp_path, 4, lambda: step["n"], torch.device("cpu"), phase="descriptor", finishes=False
    ):
        assert read_status(tmp_path)["phase"] == "descriptor"
        step["n"] = 4
    done = read_status(tmp_path)
    assert (done["state"], done["phase"], done["step"], done["iters"]) == (
        "running",
        "descriptor",
        4,
        4,
    )
    with pytest.raises(ValueError, match="phase"):
        StatusTracker(tmp_path, 4, lambda: 0, torch.device("cpu"), phase="search")


def _stage(workspace, phase, step, clock=None, peak=None, finishes=False, interrupt=False):
    """One stage's block of ``track_status``; it takes 10 s of ``clock`` and peaks at ``peak``."""
    if clock is not None:
        clock["peak"] = None  # track_status resets CUDA's peak at its start
    with runstatus.track_status(
        workspace, 10, lambda: step, torch.device("cpu"), phase=phase, finishes=finishes
    ):
        if clock is not None:
            clock.update(t=clock["t"] + 10.0, peak=peak)
        if interrupt:
            raise KeyboardInterrupt
    return read_status(workspace)


def test_an_image_runs_status_adds_up_every_stage_and_attempt(tmp_path, monkeypatch):
    """status.json's ``seconds`` and ``gpu_mem_mib`` are the current stage's: the viewer's card
    and batch.jsonl showed an image run's text→3D time alone, not its descriptor's hours."""
    clock = {"t": 0.0, "peak": None}
    monkeypatch.setattr(runstatus.time, "perf_counter", lambda: clock["t"])
    monkeypatch.setattr(runstatus, "peak_gpu_mib", lambda device: clock["peak"])
    _stage(tmp_path, "describe", 0, clock)
    _stage(tmp_path, "descriptor", 0, clock, peak=3000.0)
    with pytest.raises(KeyboardInterrupt):  # interrupted, then resumed at step 6
        _stage(tmp_path, "train", 0, clock, peak=4000.0, interrupt=True)
    done = _stage(tmp_path, "train", 6, clock, peak=2500.0, finishes=True)
    assert done["stages"] == {
        "describe": {"seconds": 10.0, "gpu_mem_mib": None},
        "descriptor": {"seconds": 10.0, "gpu_mem_mib": 3000.0},
        "train": {"seconds": 20.0, "gpu_mem_mib": 4000.0},
    }
    assert (done["state"], done["seconds"], done["gpu_mem_mib"]) == ("finished", 20.0, 2500.0)
    assert (done["total_seconds"], done["peak_gpu_mem_mib"]) == (40.0, 4000.0)


def test_a_stages_peak_is_of_all_its_attempts_not_the_last_two(tmp_path, monkeypatch):
    """The peak carried into a resume was the last attempt's own (``gpu_mem_mib``): a third
    attempt forgot the first's."""
    clock = {"t": 0.0, "peak": None}
    monkeypatch.setattr(runstatus.time, "perf_counter", lambda: clock["t"])
    monkeypatch.setattr(runstatus, "peak_gpu_mib", lambda device: clock["peak"])
    for step, peak in ((0, 1000.0), (3, 500.0)):  # interrupted twice, then resumed at step 6
        with pytest.raises(KeyboardInterrupt):
            _stage(tmp_path, "train", step, clock, peak=peak, interrupt=True)
    done = _stage(tmp_path, "train", 6, clock, peak=400.0, finishes=True)
    assert done["stages"]["train"] == {"seconds": 30.0, "gpu_mem_mib": 1000.0}
    assert (done["gpu_mem_mib"], done["peak_gpu_mem_mib"]) == (400.0, 1000.0)


def test_a_stage_run_again_from_its_start_drops_its_record_and_the_later_ones(tmp_path):
    stages = {
        "describe": {"seconds": 5.0, "gpu_mem_mib": None},
        "descriptor": {"seconds": 300.0, "gpu_mem_mib": 3000.0},
        "train": {"seconds": 900.0, "gpu_mem_mib": 5000.0},
    }
    write_status(tmp_path, {"state": "finished", "step": 10, "iters": 10, "stages": stages})
    again = _stage(tmp_path, "descriptor", 0)  # the descriptor trained again
    assert set(again["stages"]) == {"describe", "descriptor"}
    assert again["stages"]["describe"] == stages["describe"]
    assert again["stages"]["descriptor"]["seconds"] < 10.0
    assert 5.0 <= again["total_seconds"] < 15.0
    assert again["peak_gpu_mem_mib"] is None


def test_a_status_from_before_stages_gives_its_one_stage(tmp_path):
    old = {"state": "interrupted", "step": 4, "iters": 10, "seconds": 50.0, "phase": "export"}
    write_status(tmp_path, {**old, "gpu_mem_mib": 1234.5})
    resumed = _stage(tmp_path, "train", 4, finishes=True)
    assert 50.0 <= resumed["stages"]["train"]["seconds"] == resumed["total_seconds"] < 60.0
    assert resumed["peak_gpu_mem_mib"] == 1234.5
    write_status(tmp_path, {**old, "phase": "descriptor", "stages": "broken"})
    assert set(_stage(tmp_path, "train", 0)["stages"]) == {"descriptor", "train"}


@pytest.fixture
def other_process():
    """A live process of this machine, not this one."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


def test_a_run_another_live_process_is_running_is_refused_before_anything(tmp_path, other_process):
    """The same command typed in a second terminal trained the same workspace twice at once."""
    from dreamtext.processes import HOST

    status = {"state": "running", "step": 7, "iters": 20, "phase": "train"}
    write_status(tmp_path, {**status, "host": HOST, "pid": other_process})
    before = (tmp_path / "status.json").read_bytes()
    with pytest.raises(DreamtextError, match=f"in use: process {other_process} on this machine"):
        trainer.check_workspace(tmp_path, "a red cube", resume=True)
    with (
        pytest.raises(DreamtextError, match="in use"),
        runstatus.track_status(tmp_path, 20, lambda: 7, torch.device("cpu")),
    ):
        pass
    assert (tmp_path / "status.json").read_bytes() == before  # the other run's, untouched
    for other in ({"host": "another-node"}, {"state": "interrupted"}, {"pid": os.getpid()}):
        write_status(tmp_path, {**status, "host": HOST, "pid": other_process, **other})
        _stage(tmp_path, "train", 0, finishes=True)  # not refused


def test_a_second_run_is_refused_while_the_first_still_loads(tmp_path, holder, tiny_sd_path):
    """Two commands started at the same time both passed the status.json check: the first
    writes status.json only once its models are loaded. The workspace lock closes that gap,
    and a run killed without warning leaves no lock behind (the kernel drops it)."""
    from dreamtext.processes import LOCK_NAME

    cfg = tiny_config(tmp_path, tiny_sd_path, iters=1, export=False)
    first = holder(tmp_path / "run")
    with pytest.raises(DreamtextError, match=f"in use: process {first.pid} on this machine"):
        train(cfg)
    assert [p.name for p in (tmp_path / "run").iterdir()] == [LOCK_NAME]  # nothing written
    first.kill()
    first.wait()
    train(cfg)
    assert status(tmp_path)["state"] == "finished"
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_a_claim_nests_and_leaves_no_folder_it_made_empty(tmp_path, holder):
    from dreamtext.processes import LOCK_NAME, claim_workspace

    workspace = tmp_path / "root" / "run"
    with claim_workspace(workspace):
        with claim_workspace(workspace):  # the text stage of an image run
            assert (workspace / LOCK_NAME).is_file()
        assert (workspace / LOCK_NAME).is_file()  # still held by the outer claim
        lock = json.loads((workspace / LOCK_NAME).read_text())
        assert lock["pid"] == os.getpid() and "host" in lock and "pid_start" in lock
    assert not (tmp_path / "root").exists()  # a refused or failed run leaves no workspace
    with claim_workspace(workspace):
        (workspace / "config.json").write_text("{}")
    assert sorted(p.name for p in workspace.iterdir()) == ["config.json"]
    other = holder(workspace)
    with pytest.raises(DreamtextError, match=f"process {other.pid}"), claim_workspace(workspace):
        pass
    assert workspace.is_dir()  # the holder's folder: not removed by the refused claim
    in_the_way = tmp_path / "file"
    in_the_way.write_text("x")
    with claim_workspace(in_the_way / "run"):  # no lock: the workspace checks say what is wrong
        pass
    assert in_the_way.read_text() == "x"


def test_a_run_whose_process_is_gone_is_taken_over(tmp_path):
    from dreamtext.processes import HOST, gone_process

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"state": "running", "step": 7, "iters": 20, "host": HOST, "pid": dead.pid}
    assert gone_process(record) == dead.pid
    assert gone_process({**record, "host": "another-node"}) is None
    write_status(tmp_path, record)
    assert _stage(tmp_path, "train", 7, finishes=True)["pid"] == os.getpid()


@pytest.mark.skipif(
    not os.path.exists("/proc/sys/kernel/random/boot_id"), reason="no boot_id: not Linux"
)
def test_a_run_a_reboot_killed_in_its_export_is_finished_by_dreamtext_export(tmp_path):
    """status.json says running in phase export, written by this host in its earlier boot: the
    reboot ended its process. Taken for a twin machine's (another boot_id) it was left
    running; `dreamtext export` of that step finishes it, as for a SIGKILL. Written since this
    boot (a twin's, which may still be exporting), by the twin's clock or the file system's, it
    is left alone."""
    import uuid
    from datetime import timezone

    from dreamtext.processes import HOST
    from dreamtext.runstatus import finish_cut_export

    boot = float(Path("/proc/stat").read_text().split("btime ")[1].split()[0])  # booted at
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()

    def status_at(seconds):
        updated = datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")
        return {
            "state": "running",
            "phase": "export",
            "step": 3,
            "iters": 3,
            "host": HOST,
            "pid": dead.pid,
            "boot_id": str(uuid.uuid4()),
            "updated": updated,
        }

    twin = tmp_path / "twin"
    write_status(twin, status_at(time.time()))
    assert not finish_cut_export(twin, 3)
    assert read_status(twin)["state"] == "running"
    # A twin whose clock runs behind this one's by more than this machine's uptime: its time is
    # before this boot, but the file system saw status.json written since (its mtime).
    behind = tmp_path / "behind"
    write_status(behind, status_at(boot - 120))
    assert not finish_cut_export(behind, 3)
    assert read_status(behind)["state"] == "running"
    rebooted = tmp_path / "rebooted"
    write_status(rebooted, status_at(boot - 120))
    os.utime(rebooted / "status.json", (boot - 120, boot - 120))  # written then, by both clocks
    assert finish_cut_export(rebooted, 3)
    assert read_status(rebooted)["state"] == "finished"


def test_a_pid_reused_by_another_process_is_not_the_run_s(tmp_path, other_process):
    """After a reboot or a container's restart an unrelated process can get the killed run's pid:
    the workspace looked in use, and the viewer showed the run running."""
    from dreamtext.processes import (
        BOOT_ID,
        HOST,
        PID_NAMESPACE,
        process_start,
        record_alive,
        this_process,
    )

    started = process_start(other_process)
    assert isinstance(started, int)
    assert this_process() == {
        "host": HOST,
        "pid": os.getpid(),
        "pid_start": process_start(os.getpid()),
        "pid_ns": PID_NAMESPACE,
        "boot_id": BOOT_ID,
    }
    record = {"state": "running", "host": HOST, "pid": other_process, "pid_start": started}
    assert record_alive(record) is True
    assert record_alive({**record, "pid_start": None}) is True  # recorded before pid_start
    reused = {**record, "pid_start": started - 1}
    assert record_alive(reused) is False
    write_status(tmp_path, {**reused, "step": 7, "iters": 20, "phase": "train"})
    assert runstatus.running_elsewhere(read_status(tmp_path), tmp_path) is None
    trainer.check_workspace(tmp_path, "a red cube", resume=False)  # not refused


def test_a_killed_run_its_parent_has_not_reaped_yet_is_not_running(tmp_path):
    """A run killed (the OOM killer) under a launcher that had not waited for it yet stayed a
    zombie, which os.kill(pid, 0) finds: its resume was refused as "in use" by a process that
    could not be stopped, and the viewer showed it running."""
    from dreamtext.processes import HOST, process_ended, process_start, record_alive

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {"host": HOST, "pid": child.pid, "pid_start": process_start(child.pid)}
        assert record_alive(record) is True and not process_ended(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not process_ended(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process_ended(child.pid)  # a zombie: not reaped
        assert record_alive(record) is False
        write_status(tmp_path, {**record, "state": "running", "step": 7, "iters": 20})
        assert runstatus.running_elsewhere(read_status(tmp_path), tmp_path) is None
    finally:
        child.kill()
        child.wait()


def test_a_record_of_another_pid_namespace_cannot_be_checked_from_here():
    """A container with its own process ids that kept its host's name: its pid 1 was looked up
    here, found with another start time, and its live lock taken over at once."""
    from dreamtext.processes import PID_NAMESPACE, record_alive, this_process

    if PID_NAMESPACE is None:
        pytest.skip("no /proc/self/ns/pid here")
    mine = this_process()
    assert record_alive(mine) is True
    assert record_alive({**mine, "pid_ns": PID_NAMESPACE + 1}) is None
    assert record_alive({**mine, "pid": 1, "pid_start": -5, "pid_ns": PID_NAMESPACE + 1}) is None
    assert record_alive({key: mine[key] for key in ("host", "pid", "pid_start")}) is True


def test_a_run_folder_is_told_from_a_folder_with_another_tools_config(tmp_path):
    from dreamtext.processes import enclosing_run, is_run_folder

    run, other = tmp_path / "run", tmp_path / "project"
    run.mkdir()
    other.mkdir()
    (run / "status.json").write_text(json.dumps({"state": "finished", "step": 10}))
    (other / "config.json").write_text(json.dumps({"prompt": "a copied run's settings"}))
    (other / "status.json").write_text(json.dumps({"name": "another tool"}))
    (other / "checkpoints").mkdir()  # another tool's (PyTorch Lightning's last.ckpt)
    assert is_run_folder(run) and not is_run_folder(other) and not is_run_folder(tmp_path)
    described = tmp_path / "described"
    (described / "descriptor").mkdir(parents=True)
    (described / "descriptor" / "sentence.json").write_text("{}")
    assert is_run_folder(described)
    assert enclosing_run(run / "mesh" / "deeper") == run
    assert enclosing_run(run) == run and enclosing_run(run, itself=False) is None
    assert enclosing_run(other / "sub") is None


def test_the_run_a_descriptor_folder_lies_in_is_the_image_run_not_the_descriptor(tmp_path):
    """An image run's descriptor/ has a checkpoint of its own, so it is a run folder too; what
    export and view name for a path under it is the image run round it."""
    from dreamtext.processes import enclosing_run, outermost_run

    run = tmp_path / "mug"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"x")
    (run / "descriptor" / "checkpoints").mkdir(parents=True)
    (run / "descriptor" / "checkpoints" / "last.pt").write_bytes(b"x")
    inner = run / "descriptor" / "checkpoints"
    assert enclosing_run(inner, itself=False) == run / "descriptor"
    assert outermost_run(inner) == run
    assert outermost_run(run / "descriptor") == run
    assert outermost_run(run) is None


def test_a_claim_refuses_a_folder_inside_a_run_or_one_that_holds_runs(tmp_path, monkeypatch):
    """``--workspace workspace`` (the folder of runs, or a batch's root) made it one run, which
    the viewer then showed alone; ``--workspace RUN/mesh`` put a run where RUN's export swaps
    its files."""
    from dreamtext.processes import claim_workspace

    monkeypatch.chdir(tmp_path)
    run = Path("root") / "a_red_cube"
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"state": "finished"}))
    before = sorted(str(p) for p in Path("root").rglob("*"))
    with pytest.raises(DreamtextError) as inside, claim_workspace(run / "mesh"):
        pass
    assert str(inside.value) == (
        "root/a_red_cube/mesh is inside the run in root/a_red_cube: a run needs a folder of its "
        "own; pass --workspace a folder outside it"
    )
    with pytest.raises(DreamtextError) as holds, claim_workspace("root"):
        pass
    assert str(holds.value) == (
        "root holds runs (a_red_cube): a run needs a folder of its own; pass --workspace "
        "root/NEW_FOLDER"
    )
    batch_root = Path("sweep")
    batch_root.mkdir()
    (batch_root / "batch.jsonl").write_text("")
    refused = pytest.raises(DreamtextError, match=r"^sweep holds runs \(batch.jsonl\)")
    with refused, claim_workspace(batch_root):
        pass
    assert sorted(str(p) for p in Path("root").rglob("*")) == before  # nothing made
    with claim_workspace(run):  # the run's own folder, and a new one beside it
        pass
    with claim_workspace(Path("root") / "a_blue_cube"):
        pass


@pytest.mark.parametrize(
    "damaged",
    [b"\xff\xfe{", b'{"step": 1' + b"0" * 5000 + b"}", b"[" * 100_000],
    ids=["not-utf8", "a-5001-digit-number", "nested-too-deep"],
)
def test_a_damaged_status_reads_as_none_and_a_damaged_config_is_one_line(tmp_path, damaged):
    """Bytes that are not UTF-8, a number json.loads refuses (ValueError, not a JSON error) and
    nesting deeper than the recursion limit were tracebacks of `text --resume` and `batch`."""
    from dreamtext.config import read_run_config

    (tmp_path / "status.json").write_bytes(damaged)
    (tmp_path / "config.json").write_bytes(damaged)
    assert read_status(tmp_path) is None
    with pytest.raises(DreamtextError, match=r"config.json is unreadable; delete it"):
        read_run_config(tmp_path, "delete it")


def test_a_heartbeat_stops_before_the_blocks_last_status(tmp_path):
    """The heartbeat's thread must not write ``running`` over the ``interrupted`` (or
    ``finished``) that the block's end writes."""
    import time

    with (
        pytest.raises(KeyboardInterrupt),
        runstatus.track_status(
            tmp_path, 0, lambda: 0, torch.device("cpu"), phase="describe", heartbeat=0.01
        ),
    ):
        time.sleep(0.1)
        raise KeyboardInterrupt
    time.sleep(0.1)
    assert read_status(tmp_path)["state"] == "interrupted"


def test_a_heartbeat_stops_once_the_workspace_is_another_workers(tmp_path):
    import time

    class TakenOver(Exception):
        pass

    def taken_over():
        raise TakenOver

    with (
        runstatus.guard_run(tmp_path, taken_over),
        pytest.raises(TakenOver),  # the block's start checks it too
        runstatus.track_status(
            tmp_path, 0, lambda: 0, torch.device("cpu"), phase="describe", heartbeat=0.01
        ),
    ):
        pass
    calls = []

    def taken_over_later():
        calls.append(1)
        if len(calls) > 1:  # the heartbeat's first check
            raise TakenOver

    with (
        runstatus.guard_run(tmp_path, taken_over_later),
        pytest.raises(TakenOver),  # raised in the main thread at the block's end
        runstatus.track_status(
            tmp_path, 0, lambda: 0, torch.device("cpu"), phase="describe", heartbeat=0.01
        ),
    ):
        time.sleep(0.2)
        assert len(calls) == 2  # it stopped at the check that raised


@pytest.mark.parametrize("ending", ["finishes", "interrupted", "fails"])
def test_a_stage_taken_over_during_its_heartbeat_leaves_the_new_holders_status(tmp_path, ending):
    """A batch worker's image run whose workspace another worker took over during its sentence
    search (only the heartbeat's thread checks the lock there) went on searching and then
    wrote its own status.json over the new holder's. The block's end now raises the takeover
    (a run that ends on its own) or passes its own exception on, writing nothing."""
    import time

    checks = []

    def taken_over_later():
        checks.append(1)
        if len(checks) > 1:
            raise runstatus.RunTakenOver("lock taken over by other pid 1")

    raised = {"finishes": runstatus.RunTakenOver, "interrupted": KeyboardInterrupt}
    with (
        runstatus.guard_run(tmp_path, taken_over_later),
        pytest.raises(raised.get(ending, RuntimeError)),
        runstatus.track_status(
            tmp_path, 0, lambda: 0, torch.device("cpu"), phase="describe", heartbeat=0.01
        ),
    ):
        time.sleep(0.2)
        theirs = {**read_status(tmp_path), "pid": 1, "host": "other", "updated": "theirs"}
        runstatus.write_status(tmp_path, theirs)
        if ending == "interrupted":
            raise KeyboardInterrupt
        if ending == "fails":
            raise RuntimeError("CLIP failed")
    assert read_status(tmp_path) == theirs


class _Stopped(Exception):
    """An interrupt that carries a message (as TrainingInterrupted names its checkpoint)."""


def _second_signal_during(state: str, monkeypatch) -> None:
    """A second Ctrl-C / SIGTERM lands inside the status write of ``state``."""
    write = runstatus.write_status

    def signalled(workspace, status):
        if status["state"] == state:
            signal.raise_signal(signal.SIGTERM)
        write(workspace, status)

    monkeypatch.setattr(runstatus, "write_status", signalled)


def test_a_second_signal_during_the_interrupted_write_leaves_it_interrupted(tmp_path, monkeypatch):
    """Two SIGTERMs 1 ms apart: the second cut the 'interrupted' write short, status.json
    stayed 'running' (1 in 8 trials), and its KeyboardInterrupt replaced the first interrupt."""
    from dreamtext.interrupts import sigterm_interrupts

    _second_signal_during("interrupted", monkeypatch)
    raised = None
    with sigterm_interrupts():
        try:
            with runstatus.track_status(tmp_path, 5, lambda: 2, torch.device("cpu"), (_Stopped,)):
                raise _Stopped("interrupted after step 2")
        except BaseException as error:  # a KeyboardInterrupt must not end pytest
            raised = error
    assert type(raised) is _Stopped  # the run's own interrupt, with its message
    assert read_status(tmp_path)["state"] == "interrupted"


def test_a_signal_during_the_finished_write_interrupts_once_it_is_written(tmp_path, monkeypatch):
    from dreamtext.interrupts import sigterm_interrupts

    _second_signal_during("finished", monkeypatch)
    raised = None
    with sigterm_interrupts():
        try:
            with runstatus.track_status(tmp_path, 5, lambda: 5, torch.device("cpu")):
                pass
        except BaseException as error:
            raised = error
    assert isinstance(raised, KeyboardInterrupt)
    assert read_status(tmp_path)["state"] == "finished"


def test_a_second_signal_while_the_heartbeat_ends_leaves_no_late_running(tmp_path):
    """A second SIGTERM cut short the wait for the heartbeat's thread at the block's end; a beat
    under way then wrote 'running' over the block's 'interrupted'."""
    import threading
    import time

    from dreamtext.interrupts import sigterm_interrupts

    in_beat, beat_returned = threading.Event(), threading.Event()

    def beat_under_way():
        if threading.current_thread().name != "dreamtext-status-heartbeat" or in_beat.is_set():
            return
        in_beat.set()
        time.sleep(0.2)  # the main thread is waiting for this beat by now
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)  # the second signal
        deadline = time.monotonic() + 2
        while read_status(tmp_path)["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.01)  # the old code wrote 'interrupted' meanwhile; this beat follows it
        beat_returned.set()

    with sigterm_interrupts(), runstatus.guard_run(tmp_path, beat_under_way):
        try:
            with runstatus.track_status(
                tmp_path, 0, lambda: 0, torch.device("cpu"), heartbeat=0.01
            ):
                in_beat.wait(5)
                raise KeyboardInterrupt  # the first signal
        except KeyboardInterrupt:
            pass
    # The old code left the beat going (and a join cut short marks its thread ended): wait for
    # it to return from the guard and write.
    beat_returned.wait(5)
    time.sleep(0.3)
    assert read_status(tmp_path)["state"] == "interrupted"


def test_a_stage_after_another_counts_its_own_time_not_the_stage_before_its(tmp_path):
    """A text→3D stage past step 0 whose status.json is still the descriptor's (an image run
    between its stages) is no resume of the descriptor: its seconds are its own, and the
    descriptor's stay in its own stages entry."""
    write_status(
        tmp_path,
        {"state": "running", "phase": "descriptor", "step": 10, "iters": 10, "seconds": 100.0},
    )
    tracker = StatusTracker(tmp_path, 20, lambda: 5, torch.device("cpu"))  # text→3D, step 5
    tracker.write("running")
    now = read_status(tmp_path)
    assert now["seconds"] < 10.0
    assert now["stages"]["descriptor"] == {"seconds": 100.0, "gpu_mem_mib": None}
    assert 100.0 <= now["total_seconds"] < 110.0


def test_a_resumed_stage_that_peaks_higher_than_before_records_its_new_peak(tmp_path, monkeypatch):
    clock = {"t": 0.0, "peak": None}
    monkeypatch.setattr(runstatus.time, "perf_counter", lambda: clock["t"])
    monkeypatch.setattr(runstatus, "peak_gpu_mib", lambda device: clock["peak"])
    with pytest.raises(KeyboardInterrupt):
        _stage(tmp_path, "train", 0, clock, peak=1000.0, interrupt=True)
    done = _stage(tmp_path, "train", 6, clock, peak=2000.0, finishes=True)
    assert done["stages"]["train"] == {"seconds": 20.0, "gpu_mem_mib": 2000.0}
    assert (done["gpu_mem_mib"], done["peak_gpu_mem_mib"]) == (2000.0, 2000.0)


def test_a_text_stage_restarted_says_running_in_the_descriptor_with_the_earlier_stages(tmp_path):
    """restart_stage: an image run's text→3D trained again from its start keeps the describe
    and descriptor figures, and says running in the last of them (the descriptor), as between
    two stages of a first run; the old text→3D record is dropped."""
    stages = {
        "describe": {"seconds": 5.0, "gpu_mem_mib": None},
        "descriptor": {"seconds": 300.0, "gpu_mem_mib": 3000.0},
        "train": {"seconds": 900.0, "gpu_mem_mib": 5000.0},
    }
    write_status(tmp_path, {"state": "finished", "step": 10, "iters": 10, "stages": stages})
    runstatus.restart_stage(tmp_path, "train")
    now = read_status(tmp_path)
    assert (now["state"], now["phase"], now["step"]) == ("running", "descriptor", 0)
    assert (now["seconds"], now["gpu_mem_mib"]) == (300.0, 3000.0)
    assert now["stages"] == {"describe": stages["describe"], "descriptor": stages["descriptor"]}
    assert (now["total_seconds"], now["peak_gpu_mem_mib"]) == (305.0, 3000.0)
    # A text→3D run has no stage before its own: its status.json goes.
    write_status(tmp_path, {"state": "finished", "step": 10, "iters": 10, "phase": "export"})
    runstatus.restart_stage(tmp_path, "train")
    assert not (tmp_path / "status.json").exists()


@pytest.mark.parametrize("state", ["finished", "failed", "interrupted"])
def test_an_error_between_stages_leaves_a_status_that_already_ended_as_it_is(tmp_path, state):
    """ends_between_stages rewrites only a ``running`` status of this process: one that ended
    (a stage that recorded its own failure, or the run's finish) keeps its own record."""
    from dreamtext.processes import this_process

    ended = {"state": state, "step": 3, "iters": 3, "error": "its own", **this_process()}
    write_status(tmp_path, ended)
    before = (tmp_path / "status.json").read_bytes()
    with pytest.raises(RuntimeError), runstatus.ends_between_stages(tmp_path):
        raise RuntimeError("after the stage")
    assert (tmp_path / "status.json").read_bytes() == before


@pytest.mark.parametrize(
    "stop", [KeyboardInterrupt(), TrainingInterrupted(4, Path("last.pt"))], ids=["ctrl-c", "saved"]
)
def test_a_stop_between_stages_leaves_interrupted_and_an_error_failed(tmp_path, stop):
    from dreamtext.processes import this_process

    running = {"state": "running", "step": 4, "iters": 9, "error": None, "phase": "descriptor"}
    write_status(tmp_path, {**running, **this_process()})
    with pytest.raises(type(stop)), runstatus.ends_between_stages(tmp_path):
        raise stop
    now = read_status(tmp_path)
    assert (now["state"], now["error"], now["phase"]) == ("interrupted", None, "descriptor")
    write_status(tmp_path, {**running, **this_process()})
    with pytest.raises(OSError), runstatus.ends_between_stages(tmp_path):
        raise OSError(28, "No space left on device")
    now = read_status(tmp_path)
    assert (now["state"], now["error"]) == ("failed", "OSError: [Errno 28] No space left on device")


def test_a_takeover_the_exports_heartbeat_found_stops_it_at_the_blocks_end(tmp_path, monkeypatch):
    """status_heartbeat: a guard that raised in the heartbeat's thread (the workspace is another
    worker's) is raised when the block ends, even where the work in it never asked."""
    monkeypatch.setattr(runstatus, "HEARTBEAT_SECONDS", 0.01)
    taken = runstatus.RunTakenOver("lock taken over by elsewhere pid 1")

    def check():
        if beating["on"]:
            raise taken

    beating = {"on": False}
    with (
        pytest.raises(runstatus.RunTakenOver),
        runstatus.guard_run(tmp_path, check),
        runstatus.track_status(tmp_path, 5, lambda: 5, torch.device("cpu")),
    ):
        beating["on"] = True
        with runstatus.status_heartbeat(tmp_path):
            time.sleep(0.3)  # the export's work, which calls no check itself
    assert read_status(tmp_path)["state"] == "running"  # left to the new holder


@pytest.mark.parametrize("status", [{"state": "finished"}, {"state": "finished", "step": None}])
def test_a_status_without_a_step_is_no_finished_run_and_no_traceback(tmp_path, status):
    """Another tool's status.json, or one edited by hand, naming a state but no step: a batch
    over its folder ended in a KeyError or TypeError traceback before any line ran."""
    from dreamtext.runstatus import run_finished

    (tmp_path / "status.json").write_text(json.dumps(status))
    assert not run_finished(tmp_path, 0)
    assert not run_finished(tmp_path, 10, needs_mesh=True)


def test_saved_step_of_a_checkpoint_without_its_record_is_the_checkpoints_own(tmp_path):
    """A last.pt whose save record is gone (a dreamtext from before the record, a save killed
    between the two files): its step is read from the checkpoint itself, as batch --status
    says 'resumes from step 7' of it, not a bare 'resumes'."""
    from dreamtext.checkpoint import RUN_KEYS, save_checkpoint
    from dreamtext.runfiles import CHECKPOINT_DIR, LAST_STEP_RECORD, recorded_step
    from dreamtext.runstatus import saved_step

    save_checkpoint(tmp_path, {k: {} for k in RUN_KEYS} | {"step": 7})
    assert recorded_step(tmp_path) == saved_step(tmp_path) == 7
    (tmp_path / CHECKPOINT_DIR / LAST_STEP_RECORD).unlink()
    assert recorded_step(tmp_path) is None
    assert saved_step(tmp_path) == 7
