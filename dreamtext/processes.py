"""Which machine and process wrote a record (status.json, batch's locks), whether that
process still runs, and the two locks of a run's folder: the one a run holds on its workspace
while it runs (:func:`claim_workspace`) and the one under which its files are swapped
(:func:`lock_folder`); and a record whose lock says its writer is still there
(:func:`write_held_record`). Imports nothing heavy: ``dreamtext view`` uses it without torch."""

from __future__ import annotations

import calendar
import contextlib
import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from dreamtext.errors import (
    UNREADABLE_JSON,
    DreamtextError,
    WorkspaceInUse,
    naming_the_file,
    shown_path,
)

try:
    import fcntl
    import pwd
except ImportError:  # Windows
    fcntl = pwd = None  # type: ignore[assignment]

# The machine this process runs on, as status.json and batch's locks record it.
HOST = socket.gethostname()
# A record of another machine whose lock is free is taken for a dead writer's only once it is
# this old: where locks do not reach across machines (NFS mounted local_lock=flock, Lustre's
# localflock) a live writer's lock looks free from here, and no export writes its files this long
# (dreamtext.export's staging folders, dreamtext.exportprogress's record).
ELSEWHERE_GRACE_S = 3600.0


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # too large for a pid_t: a garbage record's
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3, the state, first);
    ``None`` where there is no such file (no such process, or not Linux)."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        # The command name (field 2) is in parentheses and may hold spaces: count after it.
        return stat[stat.rindex(")") + 2 :].split()
    except (OSError, ValueError):
        return None


def _ps_fields(pid: int) -> list[str] | None:
    """Where there is no ``/proc`` (macOS, the BSDs): process ``pid``'s state (``ps``'s
    ``stat``, ``Z`` for a zombie) and its start in seconds since the epoch (``lstart``, read
    in UTC: a laptop that changes time zones must not see its own run start at another time;
    ``""`` where not given); ``None`` where ``ps`` does not answer (no such process)."""
    if os.path.exists("/proc/self/stat"):  # Linux: no /proc/<pid>/stat is no such process
        return None
    try:
        answer = subprocess.run(
            ["ps", "-o", "stat=", "-o", "lstart=", "-p", str(int(pid))],
            capture_output=True,
            text=True,
            timeout=10,
            env={**os.environ, "LC_ALL": "C", "TZ": "UTC0"},
            check=False,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    if not answer:
        return None
    try:  # a zombie's state is told without its start
        start = str(calendar.timegm(time.strptime(" ".join(answer[1:6]), "%a %b %d %H:%M:%S %Y")))
    except ValueError:
        start = ""
    return [answer[0], start]


def _state_and_start(pid: int) -> tuple[str, int | None] | None:
    """Process ``pid``'s state and its start (:func:`process_start`), from one reading of
    ``/proc/<pid>/stat`` or one ``ps`` (:func:`_ps_fields`); ``None`` where neither answers."""
    fields = _stat_fields(pid)
    at = 19  # field 22, counted from the state (field 3)
    if fields is None:
        fields, at = _ps_fields(pid), 1
    if not fields:
        return None
    try:
        return fields[0], int(fields[at])
    except (ValueError, IndexError):
        return fields[0], None


def process_start(pid: int) -> int | None:
    """When process ``pid`` started: in clock ticks since boot (``/proc/<pid>/stat``, field
    22), else in seconds since the epoch as ``ps`` gives it (:func:`_ps_fields`); ``None``
    where neither answers (no such process). With the pid it names one process: a pid is
    reused by another process after the first ends (after a reboot, by any other)."""
    return (_state_and_start(pid) or ("", None))[1]


def _ended(state: str) -> bool:
    """Whether a process in ``state`` has ended but is still listed: a zombie (``Z``, killed or
    exited, not yet reaped by its parent) or dead (``X``); ``os.kill(pid, 0)`` succeeds on both."""
    return state[:1] in ("Z", "X")


def process_ended(pid: int) -> bool:
    """Whether process ``pid`` has ended but is still listed (:func:`_ended`)."""
    return _ended((_state_and_start(pid) or ("", None))[0])


def process_stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (``T``: Ctrl-Z in its terminal, SIGSTOP; ``t``: held
    by a debugger), and so holds what it holds until it is continued or killed."""
    return (_state_and_start(pid) or ("", None))[0][:1] in ("T", "t")


def _pid_namespace() -> int | None:
    """The inode of this process's PID namespace (``/proc/self/ns/pid``), ``None`` where there is
    none to read: a container with its own process ids may keep its host's name."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


PID_NAMESPACE = _pid_namespace()


def _boot_id() -> str | None:
    """This boot of this machine's kernel (``/proc/sys/kernel/random/boot_id``, a random UUID
    drawn at each boot), ``None`` where there is none (not Linux). Machines that share a name
    (cloned VMs, containers given one ``--hostname``, cluster nodes named alike) have their own;
    containers of one machine share their kernel's, and ``pid_ns`` tells those apart."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip() or None
    except (OSError, ValueError):
        return None


BOOT_ID = _boot_id()


def _boot_time() -> float | None:
    """When this machine booted, in seconds since the epoch: ``btime`` in ``/proc/stat`` (the
    kernel's own, in whole seconds), ``None`` where there is none (not Linux)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


BOOT_TIME = _boot_time()


def iso_timestamp(value: Any) -> float | None:
    """An ISO 8601 time with its offset (``2026-11-30T10:00:12+00:00``) as a Unix time;
    ``None`` for anything else, a time without an offset included (it names no moment)."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def now_iso() -> str:
    """The current UTC time as ISO 8601 with seconds (``2026-11-30T12:00:00+00:00``), as
    status.json and the workspace lock write their times."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def record_time(record: dict | None) -> float | None:
    """When ``record`` was last written by its own account, in seconds since the epoch: its
    ``updated`` (:func:`iso_timestamp`, as status.json and an export's record write it);
    ``None`` where it has none, or one without an offset."""
    return iso_timestamp((record or {}).get("updated"))


def earlier_boot(record: dict | None, written: float | None = None, every: float = 0.0) -> bool:
    """Whether ``record`` was written on this machine before it last booted: its ``host`` is
    this one's name, its ``boot_id`` another (a reboot draws a new one), and it was last written
    (``written``, seconds since the epoch; default :func:`record_time`) before this boot
    (:data:`BOOT_TIME`) and more than ``every`` seconds ago (how late its writer may rewrite it
    while it lives: an export's ``beat_s``, three of a batch lock's ``refresh_s``).

    A machine of the same name (a twin: a cloned VM, a container given one ``--hostname``) that
    lives writes its records after this boot too; no process of an earlier boot of this one
    does. The edges, each decided by its record's time alone:

    * a record written just before the reboot (a run the reboot killed) is of an earlier boot
      once ``every`` has passed since it was written: at once where the reboot took longer;
      until then it is another machine's (``None``), as a twin's would be;
    * a twin whose last write came before this boot by less than ``every`` is not: it is not late
      yet, and its next write falls after this boot. Once more than ``every`` has passed it is
      taken for gone, as a writer late by its own interval is one that stopped (a twin whose
      clock runs behind this one's by more than the time since this boot looks late too).
      status.json promises no interval (``updated`` changes at each log line, at the pace of
      the steps): with ``every`` 0 a twin's run written before this boot reads as gone until
      its next write, which each new reading (the viewer's polls) then sees.

    ``pid_start`` cannot tell this: it counts clock ticks from its own machine's boot, whose
    time the record does not give. A record without ``boot_id`` or a time, or of this boot, is
    not of an earlier boot (:func:`record_alive` judges it as before)."""
    record = record or {}
    boot = record.get("boot_id")
    if record.get("host") != HOST or boot is None or BOOT_ID is None or boot == BOOT_ID:
        return False
    written = record_time(record) if written is None else written
    if written is None or BOOT_TIME is None:
        return False
    return written < BOOT_TIME and time.time() - written > every


# File systems on this machine's own disks (or memory): every process that writes them runs on
# this kernel, whose flock every reader here sees. Not NFS, SMB, Lustre, GPFS, CephFS, FUSE
# (sshfs), 9p or virtiofs, which other machines write too, where locks may not reach.
LOCAL_FILE_SYSTEMS = frozenset(
    {
        "bcachefs", "btrfs", "exfat", "ext2", "ext3", "ext4", "f2fs", "hfsplus", "jfs", "ntfs",
        "ntfs3", "overlay", "ramfs", "reiserfs", "tmpfs", "vfat", "xfs", "zfs",
    }
)  # fmt: skip


def file_system_type(path: str | Path) -> str | None:
    """The type of the file system ``path`` lies on (``ext4``, ``nfs4``), as
    ``/proc/self/mountinfo`` gives it for the mount point nearest above ``path``'s real path;
    ``None`` where there is no such file (not Linux) or it cannot be read."""
    target = os.path.realpath(path)
    best, kind = "", None
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields, _, rest = line.partition(" - ")
                parts = fields.split()
                if len(parts) < 5 or not rest.split():
                    continue
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), parts[4])
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):  # a later mount over it wins
                    best, kind = point, rest.split()[0]
    except OSError:
        return None
    return kind


def locks_reach_every_writer(path: str | Path) -> bool:
    """Whether every process that may write at ``path`` runs on this machine, so that a lock
    none of them holds is seen free here only where none holds it: ``path`` lies on a local
    file system (:data:`LOCAL_FILE_SYSTEMS`, :func:`file_system_type`). ``False`` where it may
    be another machine's too, or that cannot be told.

    Not told apart: a local file system that this machine serves to others (an NFS export, a
    Samba share), whose clients' locks a local ``flock`` may not see."""
    return file_system_type(path) in LOCAL_FILE_SYSTEMS


def on_this_machine(record: dict | None) -> bool:
    """Whether ``record`` (status.json, a lock, an export's record) was written on this machine,
    in this boot: its ``host`` is this one's name and, where both are known, its ``boot_id`` this
    boot's. A record from before ``boot_id`` was recorded is judged by its name alone."""
    record = record or {}
    if record.get("host") != HOST:
        return False
    boot = record.get("boot_id")
    return boot is None or BOOT_ID is None or boot == BOOT_ID


def folder_inode(folder: str | Path) -> int | None:
    """The inode number of ``folder`` (``st_ino``), which a run's status.json records of its
    workspace (``folder_inode``): a copy of the folder (``cp -r``, ``rsync``, ``tar``) is a new
    folder with another number, a move within its file system (``mv``) keeps it, and a bind
    mount shows the same. ``None`` where the folder cannot be read."""
    try:
        return os.stat(folder).st_ino
    except OSError:
        return None


def copied_folder(record: dict | None, folder: str | Path) -> bool | None:
    """Whether ``folder`` is a copy of the folder whose status.json ``record`` is: the record
    names a folder (``folder_inode``, :func:`folder_inode`) that is not ``folder``. ``None``
    where this cannot be told: a record from before it named its folder, or of another machine
    or boot (:func:`on_this_machine`: a file system mounted over the network, such as sshfs,
    may number a folder differently on each client), or an unreadable folder.

    The number alone, not the device: an NFS or autofs mount given another device number when
    it is mounted again would have made a killed run's own folder a copy of itself."""
    recorded = (record or {}).get("folder_inode")
    if not isinstance(recorded, int) or isinstance(recorded, bool) or not on_this_machine(record):
        return None
    here = folder_inode(folder)
    return None if here is None else here != recorded


def record_alive(
    record: dict | None, written: float | None = None, every: float = 0.0
) -> bool | None:
    """Whether the process ``record`` names (``host``, ``pid`` and, where recorded,
    ``pid_start``: :func:`process_start`, ``pid_ns``: its PID namespace, and ``boot_id``:
    :func:`on_this_machine`) still runs: ``None`` when the record names another machine (one
    with this one's name too: another ``boot_id``), another PID namespace (a container that
    kept its host's name: its pid 1 is not ours) or no process, which cannot be checked from
    here. A record of an earlier boot of this machine (:func:`earlier_boot`, by the time it was
    last written, ``written`` and ``every`` as there) names a process the reboot ended: ``False``.
    A live process with the pid but another start time is another process (the pid was
    reused): the recorded one is gone; so is one that ended and waits to be reaped (a zombie)."""
    pid = (record or {}).get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return None
    if earlier_boot(record, written, every):
        return False
    if not on_this_machine(record):
        return None
    namespace = record.get("pid_ns")
    if namespace is not None and PID_NAMESPACE is not None and namespace != PID_NAMESPACE:
        return None
    if not pid_alive(pid):
        return False
    state, start = _state_and_start(pid) or ("", None)  # one ps where there is no /proc
    if _ended(state):
        return False
    started = record.get("pid_start")
    return started is None or start in (None, started)


def run_alive(status: dict | None, workspace: str | Path) -> bool | None:
    """:func:`record_alive` of a run's ``status.json`` in ``workspace``, asking two more
    witnesses where the record's time alone says a reboot of this machine ended it
    (:func:`earlier_boot`): a twin machine (this one's name, another ``boot_id``) whose clock
    runs behind this one's by more than the time since this boot writes its times before this
    boot too. Then it is another machine's (``None``) where

    * status.json's mtime falls after this boot: the file system's clock (this machine's on a
      local disk, the file server's on NFS) saw it written since; or
    * the workspace's lock is held (:func:`lock_held`), which no process of an earlier boot
      holds (where locks reach across machines; NFS mounted ``local_lock=flock`` they do not).

    Both can only turn a verdict of "gone" into "cannot be checked", never the reverse."""
    alive = record_alive(status)
    if alive is False and earlier_boot(status):
        try:
            written = os.stat(Path(workspace) / "status.json").st_mtime
        except OSError:
            written = None
        seen_since = written is not None and not earlier_boot(status, written)
        if seen_since or lock_held(workspace) is True:
            return None
    return alive


def gone_process(
    record: dict | None, written: float | None = None, every: float = 0.0
) -> int | None:
    """The process id ``record`` (status.json, a batch lock) names when that process ran on this
    machine and no longer exists (:func:`record_alive`, ``written`` and ``every`` as there): a
    run it said was running was killed without warning, or by a reboot. ``None`` when the record
    names another machine, no process, or one that is alive."""
    return record["pid"] if record_alive(record, written, every) is False else None


def remove_stale_temps(folder: Path, names: str, suffix: str = "tmp") -> list[Path]:
    """Remove the temp files that writes into ``folder`` left behind when they were killed
    midway (SIGKILL from the OOM killer or a scheduler's grace period running out, a lost node):
    hidden, never renamed into place, and as large as the file they were to become. ``names``:
    a regular expression of the destinations' names with their extension in
    :func:`dreamtext.checkpoint.atomic_write_bytes`'s ``.<name>.XXXXXXXX.tmp`` (``XXXXXXXX``:
    ``mkstemp``'s eight characters), or without it in ``export.write_all_atomically``'s
    ``.<stem>.XXXXXXXX<suffix>``, whose ``suffix`` (a regular expression of the extension
    without its dot) is then given. Only for folders no other process writes at the same time
    (a run's own workspace, which a ``batch`` lock or the single ``text`` command owns), or for
    files only the holder of a lock writes (:data:`HOLDER_FILES`). A user's hidden file beside
    them (``.status.json.20261206.bak``, vim's ``.config.json.swp``) is not one. Returns what
    it removed."""
    pattern = re.compile(rf"\.(?:{names})\.[a-z0-9_]{{8}}\.(?:{suffix})")
    removed = []
    for candidate in Path(folder).glob(".*"):
        if pattern.fullmatch(candidate.name) and candidate.is_file():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


# The lock file a run holds in its workspace (:func:`claim_workspace`).
LOCK_NAME = ".dreamtext.lock"
# The files of a run's folder that only the holder of its lock writes (each by a rename of a
# temp file: dreamtext.checkpoint.atomic_write_bytes), by folder, as regular expressions for
# :func:`remove_stale_temps`: a temp of one of them that the holder finds as it takes the lock
# is a writer's that was killed. (``dreamtext export``, which runs beside a training run, takes
# the lock to write status.json: dreamtext.runstatus.finish_cut_export.)
HOLDER_FILES = {
    ".": r"config\.json|log\.jsonl|status\.json",
    # An image run's sentence search and descriptor (dreamtext.describe, dreamtext.descriptor).
    "descriptor": r"sentence\.json|source\.[a-z]+|learned_embeds\.safetensors|log\.jsonl",
}
# The workspaces this process holds: real path → [open lock file, claims, folders it made].
_HELD: dict[str, list] = {}


# This process's start (:func:`process_start`), by pid: a forked child is another process.
_STARTED: dict[int, int | None] = {}


def this_process() -> dict:
    """The record of this process (``host``, ``pid``, ``pid_start``, ``pid_ns``, ``boot_id``)
    that status.json and the workspace lock carry (:func:`record_alive` reads it)."""
    pid = os.getpid()
    # Read once (without /proc, each reading runs ps), once known: a ps that failed once (its
    # 10 s timeout on a busy laptop) left the start unknown in every record for the run's life.
    if _STARTED.get(pid) is None:
        _STARTED[pid] = process_start(pid)
    return {
        "host": HOST,
        "pid": pid,
        "pid_start": _STARTED[pid],
        "pid_ns": PID_NAMESPACE,
        "boot_id": BOOT_ID,
    }


def same_process(record: dict | None, other: dict | None) -> bool:
    """Whether ``record`` and ``other`` (status.json, a lock, :func:`this_process`) name one
    process: the same ``host``, ``pid`` and ``pid_start``, a pid given, and the same
    ``boot_id`` where both give one (a record from before it was recorded gives none)."""
    record, other = record or {}, other or {}
    boots = record.get("boot_id"), other.get("boot_id")
    return (
        other.get("pid") is not None
        and all(record.get(key) == other.get(key) for key in ("host", "pid", "pid_start"))
        and (None in boots or boots[0] == boots[1])
    )


def _make_folder(folder: Path) -> list[Path]:
    """Make ``folder`` and its missing parents; return those it made, deepest first."""
    made = []
    for missing in reversed([folder, *folder.parents]):
        if not missing.exists():
            # What checkpoint.check_writable asks, so that a folder it refuses is not made.
            if not os.access(missing.parent, os.W_OK | os.X_OK):
                raise PermissionError(f"cannot write in {missing.parent}")
            missing.mkdir()
            made.append(missing)
    return made[::-1]


def _holder(lock: Path) -> dict:
    """The record in the lock file ``lock`` (its holder's :func:`this_process`), ``{}`` where
    there is none to read: no file, an empty one, or anything else left there (nested past
    the recursion limit, too)."""
    try:
        record = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, *UNREADABLE_JSON):
        return {}
    return record if isinstance(record, dict) else {}


def lock_held(workspace: str | Path) -> bool | None:
    """Whether another process holds ``workspace``'s lock (:func:`claim_workspace`): ``False``
    where this process holds it, or where a shared ``flock`` on its lock file is granted
    (released at once); ``None`` where this cannot be told: no lock file (a run on a file system
    without locks has none), no ``flock`` here or on that file system, an unreadable file. A
    folder copied while its run ran (``cp -r``, ``rsync``, ``tar``) carries that run's lock file
    and ``status.json``, whose live process runs the original folder: no one holds the copy's
    lock."""
    # realpath stats each part of the path: not for a viewer, which holds no workspace.
    held = _HELD.get(os.path.realpath(workspace)) if _HELD else None
    if held is not None and held[0] is not None:
        return False
    if fcntl is None:
        return None
    try:
        handle = open(Path(workspace) / LOCK_NAME, "rb")  # noqa: SIM115 (flock needs the handle)
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:  # no locks on this file system
            return None
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def workspace_holder(workspace: str | Path) -> int | None:
    """The pid of another live process of this machine that holds ``workspace``'s lock
    (:func:`claim_workspace`), read from the record in its lock file; ``None`` when none does
    (or the holder runs on another machine, which cannot be checked), and where the lock is not
    held (:func:`lock_held`: a lock file copied with the folder, naming the live process that
    runs the original)."""
    record = _holder(Path(workspace) / LOCK_NAME)
    if record.get("pid") == os.getpid() or record_alive(record) is not True:
        return None
    return None if lock_held(workspace) is False else record["pid"]


def process_name(pid: int) -> str:
    """``process 123``, or ``alice's process 123`` where another user runs process ``pid`` of
    this machine (the owner of ``/proc/<pid>``; not told where there is none): in a lab's shared
    folder, whose process it is says whom to ask to stop it."""
    try:
        uid = os.stat(f"/proc/{int(pid)}").st_uid
    except OSError:
        return f"process {pid}"
    if pwd is None or uid == os.geteuid():
        return f"process {pid}"
    return f"{user_name(uid) or f'user {uid}'}'s process {pid}"


def user_name(uid: int) -> str | None:
    """The name of user ``uid`` on this machine; ``None`` for a user without a name here (a
    container's) or where there are no user names (no ``pwd``)."""
    if pwd is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _in_use(workspace: Path, holder: dict) -> WorkspaceInUse:
    pid, host = holder.get("pid"), holder.get("host")
    if isinstance(pid, int) and on_this_machine(holder):
        return WorkspaceInUse(workspace, f"{process_name(pid)} on this machine")
    if isinstance(pid, int) and host == HOST:  # another boot_id: a twin, or an earlier boot
        who = f"process {pid} on another machine named {host} (or before this one rebooted)"
    elif isinstance(pid, int) and isinstance(host, str):
        who = f"process {pid} on {host}"
    else:
        return WorkspaceInUse(workspace, "another process")
    times = _held_since(workspace, holder)
    gone = (
        f"if that process is gone ({host} down, or cut off from this file system, whose server "
        f"may keep its lock), remove {shown_path(Path(workspace) / LOCK_NAME)}"
    )
    return WorkspaceInUse(workspace, f"{who} ({times})" if times else who, gone=gone)


def _held_since(workspace: Path, holder: dict) -> str | None:
    """Since when ``holder``, a process of another machine that cannot be asked from here
    whether it runs, holds ``workspace``'s lock, and when it last wrote the run's status.json
    (its ``updated``, rewritten at each log line, and every
    :data:`dreamtext.runstatus.HEARTBEAT_SECONDS` where there are no steps: the run's
    heartbeat), each with how long ago by this machine's clock: ``lock taken T, 3 h 5 min
    ago; status.json last written U, 40 min ago``. ``None`` where neither is known (a lock
    from before it recorded ``started``, a status.json of another process)."""
    times = []
    taken = iso_timestamp(holder.get("started"))
    if taken is not None:
        times.append(f"lock taken {holder['started']}, {_ago(taken)}")
    try:
        status = read_status_json(Path(workspace) / "status.json")
    except (OSError, *UNREADABLE_JSON):
        status = None
    written = record_time(status) if isinstance(status, dict) else None
    if written is not None and same_process(status, holder):
        times.append(f"status.json last written {status['updated']}, {_ago(written)}")
    return "; ".join(times) or None


def _ago(moment: float) -> str:
    """How long before now (this machine's clock) ``moment`` (seconds since the epoch) was, in
    words: ``45 s ago``, ``40 min ago``, ``3 h 5 min ago``; ``by a clock ahead of this
    machine's`` where such a clock wrote it."""
    seconds = time.time() - moment
    if seconds < -1:
        return "by a clock ahead of this machine's"
    if seconds < 60:
        return f"{max(seconds, 0):.0f} s ago"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min ago"
    return f"{minutes // 60} h {minutes % 60} min ago"


# A status.json that does not parse may be one being written over in place (a run's last status
# on a full disk: dreamtext.runstatus.overwrite_in_place, one write of a few hundred bytes): it is
# read again this many times, this many seconds apart, before it counts as unreadable.
STATUS_REREADS = 3
STATUS_REREAD_S = 0.05


def read_status_json(path: Path) -> Any:
    """The JSON value of the status.json at ``path``. One that does not parse is read again
    (:data:`STATUS_REREADS` times, :data:`STATUS_REREAD_S` apart): a reader that came while it
    was written over in place found it torn, and took the run for one without a status (or
    its folder for no run: :func:`is_run_folder`). Raises ``OSError`` (no such file) or, where
    it stays torn, the ``ValueError`` of its last reading."""
    for _ in range(STATUS_REREADS):
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, RecursionError):  # a torn character's UnicodeDecodeError too
            time.sleep(STATUS_REREAD_S)
    return json.loads(path.read_text(encoding="utf-8"))


def is_run_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a dreamtext run: its status.json (a record with a ``state``), its
    checkpoint (``checkpoints/last.pt``), or a describe's ``descriptor/sentence.json``. A
    ``config.json`` alone does not count: one copied out of a run (to keep its settings) is no
    run, nor is another tool's ``config.json``, ``status.json`` or ``checkpoints/``."""
    if (folder / "checkpoints" / "last.pt").is_file():
        return True
    if (folder / "descriptor" / "sentence.json").is_file():
        return True
    try:
        record = read_status_json(folder / "status.json")  # torn by a write in place: again
    except (OSError, *UNREADABLE_JSON):
        return False
    return isinstance(record, dict) and "state" in record


def enclosing_run(path: Path, itself: bool = True) -> Path | None:
    """The run folder (:func:`is_run_folder`) that ``path`` is (when ``itself``) or lies in;
    relative to the working folder when ``path`` is (``ws/a`` for ``ws/a/mesh``); ``None``."""
    absolute = Path(os.path.abspath(path))
    for folder in ([absolute] if itself else []) + list(absolute.parents):
        if is_run_folder(folder):
            return folder if Path(path).is_absolute() else Path(os.path.relpath(folder))
    return None


def outermost_run(path: Path) -> Path | None:
    """The outermost run folder ``path`` lies in (not ``path`` itself), as :func:`enclosing_run`
    gives it; ``None``. A run's ``descriptor/`` looks like a run of its own (its own
    ``checkpoints/last.pt``): ``RUN/descriptor/checkpoints`` names ``RUN``."""
    outer = enclosing_run(path, itself=False)
    while outer is not None and (around := enclosing_run(outer, itself=False)) is not None:
        outer = around
    return outer


def check_own_folder(workspace: str | Path, flag: str = "--workspace") -> None:
    """Refuse a run's folder that lies inside another run's folder, or that holds runs (a batch's
    ``--workspace ROOT``, ``workspace/`` itself): the viewer takes a run's folder for one run
    and a folder of runs for its subfolders, so the runs would hide each other, and one run's
    export would replace files of the other's (``W/mesh`` as a workspace)."""
    folder = Path(os.path.abspath(workspace))
    outer = enclosing_run(Path(workspace), itself=False)
    if outer is not None:
        raise DreamtextError(
            f"{workspace} is inside the run in {outer}: a run needs a folder of its own; "
            f"pass {flag} a folder outside it"
        )
    if not folder.is_dir() or is_run_folder(folder):
        return
    held = "batch.jsonl" if (folder / "batch.jsonl").is_file() else None
    if held is None:
        try:
            subfolders = [entry for entry in os.scandir(folder) if entry.is_dir()]
        except OSError:  # unreadable: the workspace checks say so
            return
        held = next((e.name for e in subfolders if is_run_folder(Path(e.path))), None)
    if held is not None:
        raise DreamtextError(
            f"{workspace} holds runs ({held}): a run needs a folder of its own; pass "
            f"{flag} {Path(workspace) / 'NEW_FOLDER'}"
        )


@contextlib.contextmanager
def claim_workspace(workspace: str | Path) -> Iterator[None]:
    """Hold ``workspace``'s lock (``flock`` on ``workspace/.dreamtext.lock``) for the block:
    a second process that claims it meanwhile, here or on another machine of a shared file
    system whose locks reach across machines (NFS), gets a :class:`DreamtextError` that names
    this one. The kernel drops the lock when its process ends, however it ends, so a killed run
    leaves no lock to clear. Claims nest within one process. The block's end removes the lock
    file, and the folders the claim made when nothing else was written in them (a run refused
    while it loads leaves no workspace behind). Taking the lock removes the temp files of
    :data:`HOLDER_FILES` that an earlier holder killed mid-write (SIGKILL) left for good.

    Where no lock can be taken (a folder that cannot be made or written, whose checks report
    it; a file system without locks), the block runs without one."""
    key = os.path.realpath(workspace)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    check_own_folder(workspace)
    folder = Path(workspace)
    lock = folder / LOCK_NAME
    try:
        made = _make_folder(folder)
    except OSError:  # a file in the way, permission denied: the workspace checks say so
        made, handle = [], None
    else:
        try:
            handle = _lock(lock)
        except (DreamtextError, OSError):
            _remove_empty(made)
            raise
        if handle is not None:
            for place, names in HOLDER_FILES.items():
                with contextlib.suppress(OSError):  # unreadable: the workspace checks say so
                    remove_stale_temps(folder / place, names)
    _HELD[key] = [handle, 1, made]
    try:
        yield
    finally:
        del _HELD[key]
        if handle is not None:
            with contextlib.suppress(OSError):
                lock.unlink()
            handle.close()  # after the unlink: a claim that opened the file sees it gone
        _remove_empty(made)


# The folders :func:`lock_folder` holds: (thread, real path) → how many blocks hold it.
_FOLDERS: dict[tuple[int, str], int] = {}


@contextlib.contextmanager
def lock_folder(folder: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the folder ``folder`` itself for the block, waiting while
    another process (or thread) holds it, where the system and file system have such locks
    (else the block runs unlocked). Under it an export swaps its files into a run's folder and
    a new run clears the run it replaces (``dreamtext.export.write_all_atomically``,
    ``dreamtext.trainer.remove_earlier_run``), so each sees the other's work whole.

    Held for a moment, not for a run: :func:`claim_workspace` is the lock of a run that trains.
    Blocks nest within a thread (a second ``flock`` of the folder would wait for itself)."""
    key = (threading.get_ident(), os.path.realpath(folder))
    if key in _FOLDERS:
        _FOLDERS[key] += 1
        try:
            yield
        finally:
            _FOLDERS[key] -= 1
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        fd = None
    _FOLDERS[key] = 1
    try:
        if fd is not None and fcntl is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        del _FOLDERS[key]
        if fd is not None:
            os.close(fd)  # closing drops the lock


def write_held_record(path: Path, record: dict) -> IO[str]:
    """Create the file ``path`` holding ``record`` (JSON) and an exclusive ``flock`` on it, held
    until the returned file is closed, or the process ends, however it ends. The record says
    ``"locked": true`` when the lock was taken (not where the file system has no locks), for
    :func:`record_held` to tell, from any machine that shares the file system's locks (NFS),
    whether its writer is still there: the lock is taken before the record says so."""
    handle = open(path, "w", encoding="utf-8")  # noqa: SIM115 (held past this call)
    locked = False
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
    try:
        with naming_the_file(path):  # the line names the disk that is full
            handle.write(json.dumps({**record, **({"locked": True} if locked else {})}))
            handle.flush()
    except OSError:
        with contextlib.suppress(OSError):  # its buffered record fails again as it closes
            handle.close()
        raise
    return handle


def record_held(path: Path) -> bool | None:
    """Whether a process holds the lock of the record file ``path``
    (:func:`write_held_record`), on any machine whose locks reach this one's file system;
    ``None`` where that cannot be told (no such file, no locks here)."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)  # closing drops a shared lock this took
    return False


def _lock(lock: Path) -> IO[str] | None:
    """Open and ``flock`` the lock file ``lock``, write this process's record in it and return
    it open; ``None`` where the file system refuses (the run goes on unlocked). Raises
    :class:`DreamtextError` when another process holds it."""
    if fcntl is None:  # not a POSIX system
        return None
    while True:
        try:
            handle = open(lock, "a+", encoding="utf-8")  # noqa: SIM115 (held past this call)
        except PermissionError:
            if not os.path.lexists(lock):  # a folder this user may not write in
                return None
            # Another user's lock (umask 022) in a folder both may write in (a lab's
            # group folder): its holder may live, so this process must not run unlocked.
            if not _other_users_lock_ended(lock):
                raise unreadable_lock(lock) or _in_use(lock.parent, _holder(lock)) from None
            try:
                lock.unlink()  # its run ended: this process makes its own
            except OSError:
                return None
            continue
        except OSError:
            return None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise _in_use(lock.parent, _holder(lock)) from None
        except OSError:  # no locks here (Lustre's noflock, NFS without its lock daemon)
            handle.close()
            with contextlib.suppress(OSError):
                lock.unlink()
            return None
        # The holder before this one removes the file when it ends: if it did so after this
        # process opened it, this lock is on a removed file, so lock the one now there.
        try:
            current = os.stat(lock)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(handle.fileno()), current):
            break
        handle.close()
    try:
        with naming_the_file(lock):  # the line names the disk that is full
            handle.seek(0)
            handle.truncate()
            # When it was taken: a reader on another machine, which cannot ask whether its
            # holder runs, is told since when it is held (_held_since).
            handle.write(json.dumps({**this_process(), "started": now_iso()}))
            handle.flush()
    except OSError:  # a full disk or quota: the command says so, and leaves no lock file
        with contextlib.suppress(OSError):
            lock.unlink()
        with contextlib.suppress(OSError):  # its buffered record fails again as it closes
            handle.close()
        raise
    return handle


def _other_users_lock_ended(lock: Path) -> bool:
    """Whether the lock file ``lock``, which this user may not open for writing, is no longer
    held: its ``flock`` is free (:func:`record_held`), or where that cannot be told (no locks
    here), the process its record names is gone. ``False`` while its holder may live."""
    held = record_held(lock)
    if held is not None:
        return not held
    return record_alive(_holder(lock)) is False


def unreadable_lock(lock: Path, workspace: Path | None = None) -> WorkspaceInUse | None:
    """The refusal for another user's lock file ``lock`` on ``workspace`` (default: the folder
    it lies in; a batch's claim ``<workspace>.lock`` lies beside it) that this user may not read
    (mode 600), so that neither its record nor its ``flock`` tells whether its run still runs;
    ``None`` where it can be read. A run of theirs that was killed left it for good: the line
    names the file, its owner and what to check, as no pid can be given."""
    try:
        with open(lock, encoding="utf-8"):
            return None
    except PermissionError:
        pass
    except OSError:
        return None
    owner = "another user"
    with contextlib.suppress(OSError):
        owner = user_name(os.stat(lock).st_uid) or owner
    return WorkspaceInUse(
        lock.parent if workspace is None else workspace,
        f"{owner}'s process (as far as can be told)",
        fix=(
            f"its lock file {shown_path(lock)} is {owner}'s and you may not read it, so whether "
            f"that run still runs cannot be told: if no dreamtext of {owner}'s runs on it any "
            f"more (ps -u {owner} -f on each machine that uses the folder), ask {owner} or the "
            "folder's owner to remove that file; or pass --workspace NEW_FOLDER"
        ),
    )


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) that hold nothing."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def file_age(path: Path) -> float:
    """Seconds since ``path`` was last modified; 0 if it cannot be told (a record judged by its
    age is then taken as fresh, never as abandoned)."""
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


__all__ = [
    "BOOT_ID",
    "BOOT_TIME",
    "ELSEWHERE_GRACE_S",
    "HOLDER_FILES",
    "HOST",
    "LOCAL_FILE_SYSTEMS",
    "LOCK_NAME",
    "claim_workspace",
    "earlier_boot",
    "file_age",
    "file_system_type",
    "gone_process",
    "iso_timestamp",
    "lock_folder",
    "lock_held",
    "locks_reach_every_writer",
    "now_iso",
    "on_this_machine",
    "pid_alive",
    "process_ended",
    "process_name",
    "process_start",
    "read_status_json",
    "record_alive",
    "record_held",
    "record_time",
    "remove_stale_temps",
    "run_alive",
    "same_process",
    "this_process",
    "unreadable_lock",
    "workspace_holder",
    "write_held_record",
]
