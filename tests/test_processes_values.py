"""Values of dreamtext.processes: which process a record names, its locks."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def test_a_process_of_another_user_is_alive(monkeypatch):
    """kill(pid, 0) on another user's process fails with EPERM: it exists."""
    from dreamtext import processes

    def refused(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(processes.os, "kill", refused)
    assert processes.pid_alive(4321) is True


def test_a_process_start_is_its_start_in_clock_ticks_since_boot():
    """/proc/<pid>/stat field 22: this process started after boot and before now, and a
    process started later has a later start."""
    from dreamtext.processes import process_start

    ticks = os.sysconf("SC_CLK_TCK")
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    mine = process_start(os.getpid())
    assert 0 < mine / ticks <= uptime + 1
    time.sleep(0.05)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        assert process_start(child.pid) >= mine
        assert process_start(child.pid) / ticks >= uptime - 1
    finally:
        child.kill()
        child.wait()


def test_no_process_has_pid_zero_or_below():
    from dreamtext.processes import pid_alive

    assert pid_alive(0) is False and pid_alive(-1) is False


def test_one_process_is_one_host_pid_and_start():
    """A pid reused by a later process (containers give each job the same few pids) is not
    the process a record names: same_process compares its start too."""
    from dreamtext.processes import HOST, same_process

    first = {"host": HOST, "pid": 7, "pid_start": 1000}
    assert same_process(first, dict(first))
    assert not same_process(first, {**first, "pid_start": 2000})
    assert not same_process(first, {**first, "host": "elsewhere"})
    assert not same_process({}, {})  # no pid: nobody


def test_a_workspace_this_process_holds_has_no_other_holder(tmp_path):
    from dreamtext.processes import claim_workspace, workspace_holder

    with claim_workspace(tmp_path / "run"):
        assert workspace_holder(tmp_path / "run") is None


def test_a_claim_locks_the_lock_file_that_is_there_not_one_its_last_holder_removed(
    tmp_path, monkeypatch
):
    """The holder before removes the lock file as it ends: where that happened between this
    claim's open and its flock, the claim locks the file now there, which records it."""
    from dreamtext import processes

    real = processes.fcntl.flock
    calls = []

    def flock(handle, operation):
        if not calls:  # the first holder ends just now, removing its file
            os.unlink(tmp_path / "run" / processes.LOCK_NAME)
        calls.append(operation)
        return real(handle, operation)

    monkeypatch.setattr(processes.fcntl, "flock", flock)
    with processes.claim_workspace(tmp_path / "run"):
        lock = tmp_path / "run" / processes.LOCK_NAME
        assert lock.is_file()
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_a_held_record_is_held_until_its_file_is_closed(tmp_path):
    """record_held: the writer's flock (write_held_record) is seen while it holds it."""
    from dreamtext.processes import record_held, write_held_record

    path = tmp_path / ".record.json"
    assert record_held(path) is None  # no such file
    handle = write_held_record(path, {"stage": "meshing"})
    try:
        assert json.loads(path.read_text()) == {"stage": "meshing", "locked": True}
        assert record_held(path) is True
    finally:
        handle.close()
    assert record_held(path) is False


def test_a_files_age_is_seconds_since_its_change_or_zero_when_it_cannot_be_told(tmp_path):
    from dreamtext.processes import file_age

    record = tmp_path / "record.json"
    record.write_text("{}")
    then = time.time() - 100
    os.utime(record, (then, then))
    assert 99 < file_age(record) < 110
    assert file_age(tmp_path / "gone.json") == 0.0  # taken as fresh, never as abandoned
