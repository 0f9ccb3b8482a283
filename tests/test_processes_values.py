"""Values of dreamtext.processes: which process a record names, its locks."""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest


def test_a_process_of_another_user_is_alive(monkeypatch):
    """kill(pid, 0) on another user's process fails with EPERM: it exists."""
    from dreamtext import processes

    def refused(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(processes.os, "kill", refused)
    assert processes.pid_alive(4321) is True


@pytest.mark.skipif(
    not os.path.exists("/proc/uptime"),
    reason="Linux's clock ticks since boot; ps's start, elsewhere: the without_proc tests",
)
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


def test_a_record_whose_pid_is_not_a_number_names_no_process():
    """record_alive: a record naming no process cannot be checked (None). JSON's ``true`` is
    no pid, though Python's bool is an int (and pid 1, which it would be, is always alive)."""
    from dreamtext.processes import HOST, record_alive

    assert record_alive({"host": HOST, "pid": True}) is None
    assert record_alive({"host": HOST, "pid": "123"}) is None
    assert record_alive({"host": HOST}) is None


def test_a_record_of_another_pid_namespace_cannot_be_checked_from_here():
    """A container that kept its host's name has its own pids: a record of another PID
    namespace names no process of ours (None), even where that pid is alive here."""
    import pytest

    from dreamtext.processes import HOST, PID_NAMESPACE, record_alive

    if PID_NAMESPACE is None:
        pytest.skip("no /proc/self/ns/pid here")
    mine = {"host": HOST, "pid": os.getpid()}
    assert record_alive({**mine, "pid_ns": PID_NAMESPACE}) is True
    assert record_alive({**mine, "pid_ns": PID_NAMESPACE + 1}) is None


@pytest.mark.skipif(
    not os.path.exists("/proc/sys/kernel/random/boot_id"), reason="no boot_id: not Linux"
)
def test_a_record_of_another_machine_with_this_ones_name_cannot_be_checked_from_here():
    """Two machines of one name (cloned VMs, containers given one --hostname) both in the
    initial PID namespace, whose inode is the same on every Linux machine: a run of the other
    one on a shared folder, alive there, was "gone" here (the viewer: interrupted, killed; a
    batch broke its lock) because its pid is not alive here. Its boot_id is not this boot's."""
    from dreamtext.processes import (
        BOOT_ID,
        HOST,
        PID_NAMESPACE,
        gone_process,
        on_this_machine,
        record_alive,
        same_process,
        this_process,
    )

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"host": HOST, "pid": dead.pid, "pid_start": 1, "pid_ns": PID_NAMESPACE}
    twin = {**record, "boot_id": str(uuid.uuid4())}  # the other machine's boot
    assert record_alive(twin) is None and gone_process(twin) is None
    assert not on_this_machine(twin)
    # This boot's record, and one from before boot_id was recorded, are judged as before.
    assert record_alive({**record, "boot_id": BOOT_ID}) is False
    assert record_alive(record) is False and gone_process(record) == dead.pid
    mine = this_process()
    assert mine["boot_id"] == BOOT_ID
    assert same_process(mine, {**mine, "boot_id": None}) and same_process(mine, dict(mine))
    assert not same_process({**mine, "boot_id": twin["boot_id"]}, mine)


def _iso(seconds):
    from datetime import datetime, timezone

    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


@pytest.mark.skipif(
    not os.path.exists("/proc/sys/kernel/random/boot_id"), reason="no boot_id: not Linux"
)
def test_a_record_written_before_this_machine_booted_names_a_process_the_reboot_ended():
    """A record of this host with another boot_id was taken for a twin machine's (None): a run
    a reboot killed showed running, then quiet, and never 'interrupted'. Last written before
    this boot, it is of an earlier boot of this machine; written since, it is a twin's."""
    from dreamtext.processes import (
        BOOT_TIME,
        HOST,
        PID_NAMESPACE,
        earlier_boot,
        gone_process,
        record_alive,
    )

    assert BOOT_TIME is not None and time.time() > BOOT_TIME
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"host": HOST, "pid": dead.pid, "pid_start": 1, "pid_ns": PID_NAMESPACE}
    record["boot_id"] = str(uuid.uuid4())
    before = {**record, "updated": _iso(BOOT_TIME - 120)}
    assert earlier_boot(before)
    assert record_alive(before) is False and gone_process(before) == dead.pid
    # Its time given by the caller (a batch lock's mtime), the record's own ignored.
    assert record_alive(record, written=BOOT_TIME - 120) is False
    # A twin that wrote since this boot: another machine, unchecked.
    assert record_alive({**record, "updated": _iso(time.time())}) is None
    # A twin whose last write came before this boot, by less than its interval: not late yet.
    within = time.time() - (BOOT_TIME - 1) + 60
    assert record_alive(record, written=BOOT_TIME - 1, every=within) is None
    # No time (a workspace lock), or one naming no moment (no UTC offset): judged as before.
    assert record_alive(record) is None
    assert record_alive({**record, "updated": "2020-01-01T00:00:00"}) is None
    # Another host's record, and one without boot_id, are not of this machine's earlier boots.
    assert record_alive({**before, "host": "another-node"}) is None
    assert not earlier_boot({**before, "boot_id": None})


def test_a_process_that_ended_but_is_not_reaped_is_gone():
    """A killed run's process that its parent has not waited for (a zombie) still answers
    kill(pid, 0), but it runs no more: record_alive is False and gone_process names it."""
    import pytest

    from dreamtext.processes import HOST, gone_process, process_start, record_alive

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while not _is_zombie(child.pid):
            if time.monotonic() > deadline:
                pytest.skip("no /proc/<pid>/stat state here")
            time.sleep(0.01)
        record = {"host": HOST, "pid": child.pid, "pid_start": process_start(child.pid)}
        assert record_alive(record) is False
        assert gone_process(record) == child.pid
    finally:
        child.wait()


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] == "Z"


def test_a_live_pid_with_another_start_time_is_another_process():
    """A pid is reused after its process ends: the record's process, started at another
    time than the one now holding its pid, is gone (record_alive False, gone_process its pid)."""
    from dreamtext.processes import HOST, gone_process, process_start, record_alive

    pid = os.getpid()
    started = process_start(pid)
    if started is None:
        import pytest

        pytest.skip("no /proc/<pid>/stat here")
    assert record_alive({"host": HOST, "pid": pid, "pid_start": started}) is True
    assert record_alive({"host": HOST, "pid": pid, "pid_start": started + 1}) is False
    assert gone_process({"host": HOST, "pid": pid, "pid_start": started + 1}) == pid


def test_a_process_that_cannot_be_checked_is_not_gone():
    """gone_process names only a process of this machine that no longer exists: None for one
    of another machine, a record without a pid, and a live one."""
    from dreamtext.processes import HOST, gone_process

    assert gone_process({"host": HOST + "-elsewhere", "pid": os.getpid()}) is None
    assert gone_process({"host": HOST}) is None
    assert gone_process(None) is None
    assert gone_process({"host": HOST, "pid": os.getpid()}) is None


def test_a_held_workspace_names_its_holder_and_where_it_runs(tmp_path):
    """The lock's record names the holder: ``process N on this machine`` for one of this host,
    ``process N on HOST`` for another machine's (a shared file system), ``another process``
    for a record without both."""
    import fcntl

    import pytest

    from dreamtext.errors import WorkspaceInUse
    from dreamtext.processes import HOST, LOCK_NAME, claim_workspace

    lock = tmp_path / LOCK_NAME
    cases = [
        ({"host": HOST, "pid": 4242}, "process 4242 on this machine"),
        ({"host": HOST + "-b", "pid": 4242}, f"process 4242 on {HOST}-b"),
        ({"host": HOST + "-b"}, "another process"),
    ]
    for record, holder in cases:
        lock.write_text(json.dumps(record), encoding="utf-8")
        with open(lock, encoding="utf-8") as held:  # another open file: its own flock
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with pytest.raises(WorkspaceInUse) as refused, claim_workspace(tmp_path):
                pass
        assert refused.value.holder == holder


def test_a_run_folder_that_holds_its_own_descriptor_run_is_its_own_folder(tmp_path):
    """An image run's folder holds its describe stage's ``descriptor/`` (a run folder of its
    own): resuming it there is the run's own folder, not a folder of runs."""
    from dreamtext.processes import check_own_folder, claim_workspace

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    (run / "descriptor" / "checkpoints").mkdir(parents=True)
    (run / "descriptor" / "checkpoints" / "last.pt").write_bytes(b"")
    check_own_folder(run)
    with claim_workspace(run):
        assert (run / ".dreamtext.lock").is_file()


def test_a_claim_leaves_no_lock_file_and_removes_the_empty_folders_it_made(tmp_path):
    """claim_workspace: the block's end removes the lock file, and the folders the claim made
    when nothing else was written in them; a folder that was there stays."""
    from dreamtext.processes import LOCK_NAME, claim_workspace

    new = tmp_path / "new" / "ws"
    with claim_workspace(new):
        assert (new / LOCK_NAME).is_file()
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    with claim_workspace(kept):
        (kept / "config.json").write_text("{}", encoding="utf-8")
    assert sorted(p.name for p in kept.iterdir()) == ["config.json"]
    written = tmp_path / "written" / "ws"
    with claim_workspace(written):
        (written / "status.json").write_text("{}", encoding="utf-8")
    assert sorted(p.name for p in written.iterdir()) == ["status.json"]


def test_a_claim_whose_lock_fails_leaves_no_folder_it_made(tmp_path, monkeypatch):
    """A full disk as the lock's record is written: the error goes on, and the folders the
    claim made for the run are removed (a refused run leaves no workspace behind)."""
    import errno

    import pytest

    import dreamtext.processes as processes

    def full(lock):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(processes, "_lock", full)
    with pytest.raises(OSError, match="No space"), processes.claim_workspace(tmp_path / "a" / "b"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_record_says_locked_only_where_its_lock_was_taken(tmp_path, monkeypatch):
    """write_held_record: ``"locked": true`` when the flock was taken, nothing where the system
    has no locks (a reader then asks the process, not the lock)."""
    import dreamtext.processes as processes

    with processes.write_held_record(tmp_path / "a.json", {"stage": "meshing"}):
        assert json.loads((tmp_path / "a.json").read_text()) == {
            "stage": "meshing",
            "locked": True,
        }
    monkeypatch.setattr(processes, "fcntl", None)
    with processes.write_held_record(tmp_path / "b.json", {"stage": "meshing"}):
        assert json.loads((tmp_path / "b.json").read_text()) == {"stage": "meshing"}


def test_another_tools_status_json_makes_no_run_folder(tmp_path):
    """is_run_folder: a status.json counts only as a record with a ``state``; a workspace
    inside a folder with another tool's status.json is its own."""
    from dreamtext.processes import check_own_folder, is_run_folder

    (tmp_path / "status.json").write_text('{"progress": 3}', encoding="utf-8")
    assert not is_run_folder(tmp_path)
    check_own_folder(tmp_path / "ws")
    (tmp_path / "status.json").write_text('{"state": "running"}', encoding="utf-8")
    assert is_run_folder(tmp_path)


def test_a_claim_removes_the_temps_of_its_files_that_a_killed_holder_left(tmp_path):
    """A run killed (SIGKILL) while it wrote config.json, log.jsonl or status.json left its
    hidden temp file at the workspace's root for good: the next holder of the lock (a resume,
    an overwrite) removes them, and nothing else hidden (a user's file, an export's)."""
    from dreamtext.processes import claim_workspace

    ws = tmp_path / "run"
    # Each write killed while the one before is still under way: all three temps are left.
    killed = (
        "import os, signal, sys\n"
        "from dreamtext.checkpoint import atomic_write_bytes\n"
        "from dreamtext.processes import claim_workspace\n"
        "def write(names):\n"
        "    if not names:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    path = os.path.join(sys.argv[1], names[0])\n"
        "    atomic_write_bytes(path, lambda f: (f.write(b'{'), write(names[1:])))\n"
        "with claim_workspace(sys.argv[1]):\n"
        "    write(['config.json', 'log.jsonl', 'status.json'])\n"
    )
    done = subprocess.run([sys.executable, "-c", killed, str(ws)], check=False)
    assert done.returncode == -9
    left = sorted(p.name.split(".")[1] for p in ws.iterdir() if p.name.endswith(".tmp"))
    assert left == ["config", "log", "status"]
    # vim's swap file of an open config.json, a user's dated backups, are no temps of a write:
    # kept too (the pattern took any extension after eight letters or digits)
    others = [
        ".notes",
        ".export-progress.json.0a1b2c3d.tmp",
        ".mesh.json.abcdefgh.tmp",
        ".config.json.swp",
        ".status.json.20261206.bak",
        ".log.jsonl.20261206.old",
    ]
    for name in others:
        (ws / name).write_text("kept", encoding="utf-8")
    with claim_workspace(ws):
        assert sorted(p.name for p in ws.iterdir() if p.name != ".dreamtext.lock") == sorted(others)


def test_a_claim_without_a_lock_removes_no_temps(tmp_path, monkeypatch):
    """Where no lock can be taken (a file system without locks), another process may be
    writing the files: their temps are left as they are."""
    from dreamtext import processes

    def no_locks(handle, operation):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(processes.fcntl, "flock", no_locks)
    temp = tmp_path / ".status.json.abcdefgh.tmp"
    temp.write_text("{", encoding="utf-8")
    with processes.claim_workspace(tmp_path):
        assert temp.is_file()


def test_a_lock_or_record_that_a_full_disk_refuses_names_its_file(tmp_path):
    """A write to an open file that does not fit (a full disk, a quota, here a file-size limit
    of 0) raises an OSError without a file name: the one line said "No space left on device;
    free space on that disk" of a `text` on a full disk, and of an export whose staging record
    could not be written, naming no disk."""
    script = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from dreamtext.processes import claim_workspace, write_held_record\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))\n"
        "for attempt in (lambda: claim_workspace(sys.argv[1]).__enter__(),\n"
        "                lambda: write_held_record(Path(sys.argv[1]) / '.record.json', {})):\n"
        "    try:\n"
        "        attempt()\n"
        "    except OSError as error:\n"
        "        print(error.filename)\n"
    )
    ws = tmp_path / "run"
    ws.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", script, str(ws)], capture_output=True, text=True, check=True
    )
    assert done.stdout.splitlines() == [str(ws / ".dreamtext.lock"), str(ws / ".record.json")]
    assert done.stderr == ""


def test_a_claim_removes_the_temps_an_image_runs_killed_stages_left_in_descriptor(tmp_path):
    """describe and the descriptor training (under the lock too) write sentence.json, the
    source image's copy, learned_embeds.safetensors and log.jsonl in descriptor/: a temp a kill
    left there stayed through the reruns."""
    from dreamtext.processes import claim_workspace

    descriptor = tmp_path / "run" / "descriptor"
    descriptor.mkdir(parents=True)
    killed = [
        ".sentence.json.ysa3wzs9.tmp",
        ".source.png.k2j4x9ab.tmp",
        ".learned_embeds.safetensors.0a1b2c3d.tmp",
        ".log.jsonl.abcdefgh.tmp",
    ]
    for name in [*killed, ".notes", "sentence.json"]:
        (descriptor / name).write_text("{", encoding="utf-8")
    with claim_workspace(tmp_path / "run"):
        assert sorted(p.name for p in descriptor.iterdir()) == [".notes", "sentence.json"]


@pytest.fixture
def without_proc(monkeypatch):
    """This machine as macOS (or a BSD) shows it: no ``/proc`` to read."""
    import builtins

    from dreamtext import processes

    def refusing(real):
        def call(path, *args, **kwargs):
            if isinstance(path, (str, Path)) and str(path).startswith("/proc"):
                raise FileNotFoundError(2, "No such file or directory", str(path))
            return real(path, *args, **kwargs)

        return call

    monkeypatch.setattr(builtins, "open", refusing(builtins.open))
    monkeypatch.setattr(os, "stat", refusing(os.stat))
    monkeypatch.setattr(processes, "PID_NAMESPACE", None)
    monkeypatch.setattr(processes, "_STARTED", {}, raising=False)


def test_without_proc_a_pid_reused_by_another_process_is_not_the_run_s(without_proc, tmp_path):
    """On a Mac, with no /proc, a record had no start time: after a reboot an unrelated process
    that got a killed run's pid made the run's folder "in use" (`text --resume` refused: "wait
    for it to end or stop it", naming a process that was not dreamtext's), and the viewer
    showed the run running. ps's start time (seconds since the epoch) tells them apart."""
    from dreamtext.processes import HOST, process_start, record_alive, this_process
    from dreamtext.runstatus import read_status, running_elsewhere, write_status

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = process_start(child.pid)
        assert isinstance(started, int) and abs(started - time.time()) < 30
        with pytest.MonkeyPatch.context() as travelling:  # a laptop in another time zone
            travelling.setenv("TZ", "America/New_York")
            assert process_start(child.pid) == started
        assert isinstance(this_process()["pid_start"], int)
        record = {"state": "running", "host": HOST, "pid": child.pid, "pid_start": started}
        assert record_alive(record) is True  # a run still training is alive
        reused = {**record, "pid_start": started - 3600}
        assert record_alive(reused) is False
        write_status(tmp_path, {**reused, "step": 7, "iters": 20, "phase": "train"})
        assert running_elsewhere(read_status(tmp_path), tmp_path) is None
    finally:
        child.kill()
        child.wait()


def test_without_proc_a_killed_run_not_yet_reaped_is_gone(without_proc):
    """On a Mac a run killed under a launcher that had not waited for it (a zombie) still
    answers kill(pid, 0): it was taken for a live run. ps's state says Z."""
    from dreamtext.processes import HOST, gone_process, process_ended, process_start

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        record = {"host": HOST, "pid": child.pid, "pid_start": process_start(child.pid)}
        deadline = time.monotonic() + 10
        while not process_ended(child.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gone_process(record) == child.pid
    finally:
        child.wait()


@pytest.mark.parametrize(
    ("line", "ended", "told"),
    [
        ("Ss   Sun Dec  6 20:48:36 2026\n", False, True),
        ("Z+   -\n", True, False),  # a zombie of a terminal's foreground group, as macOS lists it
        ("Zs   Sun Dec  6 20:48:36 2026\n", True, True),
    ],
)
def test_without_proc_ps_s_state_and_start_are_read_as_macos_prints_them(
    without_proc, monkeypatch, line, ended, told
):
    """macOS's ps adds flags to a state (``Z+``: a zombie in the terminal's foreground group,
    ``Zs``: a session leader's) and prints ``-`` for a zombie's start: a killed run started
    from a terminal, not yet reaped, was taken for a live one where only ``Z`` was read. The
    start (``lstart``: ``%c``, asked in the C locale, which a German Mac's would not parse, and
    in UTC) is seconds since the epoch."""
    import calendar
    from types import SimpleNamespace

    asked = []

    def ps(command, **kwargs):
        asked.append((command, kwargs.get("env") or {}))
        return SimpleNamespace(stdout=line, returncode=0)

    monkeypatch.setattr(subprocess, "run", ps)
    from dreamtext.processes import process_ended, process_start

    at = calendar.timegm((2026, 12, 6, 20, 48, 36, 0, 0, 0))
    assert process_ended(4242) is ended
    assert process_start(4242) == (at if told else None)
    command, env = asked[0]
    assert command[0] == "ps" and command[-2:] == ["-p", "4242"]
    assert (env.get("LC_ALL"), env.get("TZ")) == ("C", "UTC0")


def test_this_process_reads_the_start_of_the_process_it_is_in(monkeypatch):
    """The start is read once per process, by pid: a child forked after a first reading (a
    library user's worker) carries its own start in its lock and status.json, not its
    parent's, which would make its record look like a reused pid's (a run taken for gone)."""
    from dreamtext import processes

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mine = processes.this_process()["pid_start"]
        monkeypatch.setattr(os, "getpid", lambda: child.pid)  # as the forked child sees it
        assert processes.this_process()["pid_start"] == processes.process_start(child.pid)
        monkeypatch.undo()
        assert processes.this_process()["pid_start"] == mine
    finally:
        child.kill()
        child.wait()


def test_a_start_that_could_not_be_read_is_read_again(monkeypatch):
    """Where ``ps`` failed once (no ``/proc``: a timeout on a busy laptop), ``this_process``
    kept ``pid_start: null`` for the process's life, so its records could not tell a reused
    pid from the run; the next record reads it again."""
    from dreamtext import processes

    answers = iter([None, 1796588615])
    monkeypatch.setattr(processes, "_STARTED", {})
    monkeypatch.setattr(processes, "process_start", lambda pid: next(answers))
    assert processes.this_process()["pid_start"] is None
    assert processes.this_process()["pid_start"] == 1796588615
    assert processes.this_process()["pid_start"] == 1796588615  # kept: no third reading


def test_without_proc_a_record_is_checked_with_one_ps(without_proc, monkeypatch):
    """On a Mac, checking whether a record's process runs (a lock's, a status.json's: the viewer
    does so for every run it shows) ran ``ps`` twice, once for the state (a zombie) and once for
    the start (a reused pid); one answer holds both."""
    from types import SimpleNamespace

    from dreamtext.processes import HOST, record_alive

    asked = []

    def ps(command, **kwargs):
        asked.append(command)
        return SimpleNamespace(stdout="Ss   Sun Dec  6 20:48:36 2026\n", returncode=0)

    monkeypatch.setattr(subprocess, "run", ps)
    record = {"host": HOST, "pid": os.getpid(), "pid_start": 1796590116}
    assert record_alive(record) is True
    assert len(asked) == 1
    assert record_alive({**record, "pid_start": 1796590116 - 3600}) is False


def refuse_writing(monkeypatch, lock: Path) -> None:
    """Make opening the file at ``lock`` for writing raise ``EACCES`` while it is there, as
    another user's lock file of mode 644 does in a group folder both may write in (one made
    there anew is this user's): the tests run as root, who writes any file."""
    import builtins
    import errno

    from dreamtext import processes

    def opened(file, mode="r", *args, **kwargs):
        if mode != "r" and Path(file) == lock and os.path.exists(lock):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return builtins.open(file, mode, *args, **kwargs)

    monkeypatch.setattr(processes, "open", opened, raising=False)


def test_a_claim_is_refused_while_another_user_holds_a_lock_it_may_not_write(
    tmp_path, monkeypatch, holder
):
    """alice's run (umask 022) in a lab's group folder holds a lock file of mode 644: bob's run
    in the same folder could not open it for writing, ran unlocked beside hers and wrote the
    same checkpoints. It is refused as in use, naming her process."""
    from dreamtext import processes
    from dreamtext.errors import WorkspaceInUse

    workspace = tmp_path / "run"
    theirs = holder(workspace)
    refuse_writing(monkeypatch, workspace / processes.LOCK_NAME)
    in_use = pytest.raises(WorkspaceInUse, match=f"process {theirs.pid} on this machine")
    with in_use, processes.claim_workspace(workspace):
        pass
    assert json.loads((workspace / processes.LOCK_NAME).read_text())["pid"] == theirs.pid


def test_a_claim_replaces_a_lock_another_users_killed_run_left_that_it_may_not_write(
    tmp_path, monkeypatch, holder
):
    """The lock file of another user's run killed without warning (SIGKILL), mode 644: no one
    holds it, so the claim removes it and holds one of its own."""
    from dreamtext import processes

    workspace = tmp_path / "run"
    theirs = holder(workspace)
    theirs.kill()
    theirs.wait()
    lock = workspace / processes.LOCK_NAME
    refuse_writing(monkeypatch, lock)
    with processes.claim_workspace(workspace):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        assert processes.record_held(lock) is True
    assert not lock.exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="a process's owner is read in /proc")
def test_a_workspace_in_use_by_another_users_process_names_that_user(tmp_path, monkeypatch, holder):
    """bob's run in alice's live run's folder said "process 123 on this machine is running a run
    in it; wait for it to end or stop it": bob cannot stop it, and was not told whose it is. The
    tests run as one user: this process plays another one."""
    import pwd

    from dreamtext import processes
    from dreamtext.errors import WorkspaceInUse

    theirs = holder(tmp_path / "run")
    monkeypatch.setattr(os, "geteuid", lambda: os.getuid() + 4242)
    user = pwd.getpwuid(os.getuid()).pw_name
    in_use = pytest.raises(WorkspaceInUse, match=f"{user}'s process {theirs.pid} on this machine")
    with in_use, processes.claim_workspace(tmp_path / "run"):
        pass
    monkeypatch.undo()
    assert processes.process_name(theirs.pid) == f"process {theirs.pid}"  # this user's own


@pytest.mark.parametrize("answer", ["Ss   -\n", "Ss   Sun Dek  6 20:48:36 2026\n"])
def test_without_proc_a_live_process_whose_start_cannot_be_read_is_not_gone(
    without_proc, monkeypatch, answer
):
    """A live process whose start ``ps`` gives in no form read here is not taken for another
    process: its record is alive (what cannot be told is no reused pid)."""
    from types import SimpleNamespace

    from dreamtext.processes import HOST, record_alive

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: SimpleNamespace(stdout=answer))
    assert record_alive({"host": HOST, "pid": os.getpid(), "pid_start": 1796590116}) is True


def test_without_proc_a_start_ps_does_not_answer_is_none(without_proc, monkeypatch):
    """Where ``ps`` does not answer (a timeout on a busy laptop) a start is None, which
    ``this_process`` reads again and a record's check takes for "cannot tell", not a number
    that no process's start matches."""
    from dreamtext.processes import process_start

    def ps(command, **kwargs):
        raise subprocess.TimeoutExpired(command, 10)

    monkeypatch.setattr(subprocess, "run", ps)
    assert process_start(os.getpid()) is None


def test_a_dead_process_still_listed_is_gone(monkeypatch):
    """A process in state X (dead, still listed for a moment) has ended as a zombie has:
    ``os.kill(pid, 0)`` still succeeds on it, but its record is not alive."""
    from dreamtext import processes

    monkeypatch.setattr(processes, "_stat_fields", lambda pid: ["X", *["0"] * 19])
    assert processes.process_ended(os.getpid()) is True
    assert processes.record_alive({"host": processes.HOST, "pid": os.getpid()}) is False


def test_a_process_that_no_longer_exists_has_no_state_nor_start():
    """A pid whose process has ended and been reaped: neither /proc nor ps answers, and that is
    no ended process still listed and no start, not a TypeError."""
    from dreamtext.processes import process_ended, process_start

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert process_ended(child.pid) is False
    assert process_start(child.pid) is None


def test_another_users_unreadable_lock_names_its_file_and_what_to_check(tmp_path, monkeypatch):
    """Another user's lock file of mode 600, left by a killed run of theirs, refused the run as
    in use by "another process" for good, naming neither the file nor whose it is. Simulated:
    opening or reading the lock raises PermissionError, as for that user (chmod 000 does not
    stop root, which this suite may run as)."""
    import builtins
    import errno
    import os
    import pwd

    import pytest

    from dreamtext import processes
    from dreamtext.errors import WorkspaceInUse

    lock = tmp_path / processes.LOCK_NAME
    lock.write_text('{"pid": 4242, "host": "elsewhere"}')
    lock.chmod(0o600)

    def refusing(real):
        def call(path, *args, **kwargs):
            if str(path) == str(lock):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real(path, *args, **kwargs)

        return call

    monkeypatch.setattr(processes, "open", refusing(builtins.open), raising=False)
    monkeypatch.setattr(os, "open", refusing(os.open))
    monkeypatch.setattr(type(lock), "read_text", refusing(type(lock).read_text))
    with pytest.raises(WorkspaceInUse) as refused, processes.claim_workspace(tmp_path):
        pass
    said = str(refused.value)
    me = pwd.getpwuid(os.stat(lock).st_uid).pw_name  # the file's owner, as for the other user
    assert f"{me}'s process (as far as can be told)" in said
    assert f"its lock file {lock} is {me}'s and you may not read it" in said
    assert f"(ps -u {me} -f on each machine" in said and "remove that file" in said
    assert lock.exists()


def test_a_lock_that_is_gone_or_readable_is_no_unreadable_lock(tmp_path):
    """unreadable_lock answers only for a lock this user may not read: one removed meanwhile (its
    run ended) or a readable one is refused, if at all, as any lock in use is, not as another
    user's file to be removed."""
    from dreamtext import processes

    lock = tmp_path / processes.LOCK_NAME
    assert processes.unreadable_lock(lock) is None
    lock.write_text('{"pid": 4242, "host": "elsewhere"}')
    assert processes.unreadable_lock(lock) is None


def test_a_run_whose_status_json_is_torn_by_a_write_in_place_is_still_a_run(tmp_path):
    """A run's last status on a full disk is written over status.json in place
    (runstatus.overwrite_in_place): between its two halves the file is half the new record and
    half the old. A run folder known by its status.json alone (it failed before its first
    checkpoint) read then was no run: ``text --workspace RUN/sub`` was let through, and the
    viewer showed RUN/sub as a run of its own. It is read again until whole."""
    import threading

    from dreamtext.processes import is_run_folder

    run = tmp_path / "run"
    run.mkdir()
    old = json.dumps({"state": "running", "step": 3, "iters": 6, "error": None}, indent=2)
    new = json.dumps({"state": "failed", "step": 3, "iters": 6, "error": "OSError: full"})
    new = (new + " " * (len(old) - len(new))).encode()
    (run / "status.json").write_text(old, encoding="utf-8")
    torn = threading.Event()

    def write_in_two_halves():
        with open(run / "status.json", "r+b") as f:
            f.write(new[: len(new) // 2])
            f.flush()
            torn.set()
            time.sleep(0.06)
            f.write(new[len(new) // 2 :])

    writer = threading.Thread(target=write_in_two_halves)
    writer.start()
    torn.wait()
    seen = is_run_folder(run)
    writer.join()
    assert seen is True


def test_a_workspace_lock_records_when_it_was_taken(tmp_path):
    """The workspace lock's record says when its holder took it (``started``, ISO 8601 with its
    offset, as status.json's times): written once, it carried no time, so a lock that another
    machine's run left held on a file server could not be told from a live one's."""
    from dreamtext import processes

    before = time.time()
    with processes.claim_workspace(tmp_path / "run"):
        record = json.loads((tmp_path / "run" / processes.LOCK_NAME).read_text())
    taken = processes.iso_timestamp(record.get("started"))
    assert taken is not None and int(before) <= taken <= time.time()


def test_a_workspace_held_by_another_machine_says_since_when_and_its_last_status(tmp_path, holder):
    """A run of node7 whose lock the file server keeps while node7 is gone (NFSv3 keeps a lost
    client's locks until it reboots) was refused 'process 4242 on node7 is running a run in it;
    wait for it to end or stop it', with nothing to tell a run that writes its status.json at
    every log line from one that stopped hours ago. The line says when its lock was taken and
    when its status.json was last written (status.json's ``updated``: the run's heartbeat), and
    what to remove once that process is known gone."""
    from datetime import datetime, timedelta, timezone

    from dreamtext import processes
    from dreamtext.errors import WorkspaceInUse

    run = tmp_path / "run"
    holder(run)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    node7 = {"host": "node7", "pid": 4242, "pid_start": 99, "pid_ns": 1, "boot_id": "b7"}
    taken = (now - timedelta(hours=3, minutes=5)).isoformat()
    written = (now - timedelta(minutes=40)).isoformat()
    with open(run / processes.LOCK_NAME, "r+", encoding="utf-8") as f:  # the held file itself
        f.truncate()
        f.write(json.dumps({**node7, "started": taken}))
    status = {"state": "running", "step": 30, "updated": written, **node7}
    (run / "status.json").write_text(json.dumps(status), encoding="utf-8")
    with pytest.raises(WorkspaceInUse) as refused, processes.claim_workspace(run):
        pass
    line = str(refused.value)
    assert refused.value.situation == (
        f"{run} is in use: process 4242 on node7 (lock taken {taken}, 3 h 5 min ago; "
        f"status.json last written {written}, 40 min ago) is running a run in it"
    )
    assert "if that process is gone (node7 down" in line
    assert f"remove {run / processes.LOCK_NAME}; or pass --workspace NEW_FOLDER" in line
    assert refused.value.fix is None  # a batch's skip line tells it as before


def test_a_file_system_type_is_that_of_the_nearest_mount_above(monkeypatch):
    """mountinfo's mount point nearest above the path decides, its spaces written as \\040, and
    of two mounts on one point the later (on top); a network file system is not local."""
    import io

    from dreamtext import processes

    mountinfo = (
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        "40 27 0:50 / /mnt/lab\\040data rw - nfs4 server:/lab rw\n"
        "41 27 0:51 / /scratch rw - ext4 /dev/vdb rw\n"
        "42 41 0:52 / /scratch rw - lustre mds@tcp:/fs rw\n"
    )
    monkeypatch.setattr(processes, "open", lambda *a, **k: io.StringIO(mountinfo), raising=False)
    assert processes.file_system_type("/mnt/lab data/run") == "nfs4"
    assert processes.file_system_type("/mnt/lab") == "ext4"
    assert processes.file_system_type("/scratch/run") == "lustre"
    assert processes.file_system_type("/home/me") == "ext4"
    assert processes.locks_reach_every_writer("/home/me") is True
    assert processes.locks_reach_every_writer("/mnt/lab data/run") is False
