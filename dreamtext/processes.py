"""Which machine and process wrote a record (status.json, batch's locks), and whether that
process still runs. Imports nothing heavy: ``dreamtext view`` uses it without torch."""

from __future__ import annotations

import os
import socket

# The machine this process runs on, as status.json and batch's locks record it.
HOST = socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat``, field 22);
    ``None`` where there is no such file (no such process, or not Linux). With the pid it names
    one process: a pid is reused by another process after the first ends."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        # The command name (field 2) is in parentheses and may hold spaces: count after it.
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def record_alive(record: dict | None) -> bool | None:
    """Whether the process ``record`` names (``host``, ``pid`` and, where recorded,
    ``pid_start``: :func:`process_start`) still runs: ``None`` when the record names another
    machine or no process, which cannot be checked from here. A live process with the pid but
    another start time is another process (the pid was reused): the recorded one is gone."""
    host, pid = (record or {}).get("host"), (record or {}).get("pid")
    if host != HOST or not isinstance(pid, int) or isinstance(pid, bool):
        return None
    if not pid_alive(pid):
        return False
    started = record.get("pid_start")
    return started is None or process_start(pid) in (None, started)


def gone_process(record: dict | None) -> int | None:
    """The process id ``record`` (status.json) names when that process ran on this machine and
    no longer exists (:func:`record_alive`): a run it said was running was killed without
    warning. ``None`` when the record names another machine, no process, or one that is alive."""
    return record["pid"] if record_alive(record) is False else None


__all__ = ["HOST", "gone_process", "pid_alive", "process_start", "record_alive"]
