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


def gone_process(record: dict | None) -> int | None:
    """The process id ``record`` (status.json) names when that process ran on this machine and
    no longer exists: a run it said was running was killed without warning. ``None`` when the
    record names another machine, no process, or one that is alive."""
    host, pid = (record or {}).get("host"), (record or {}).get("pid")
    if host != HOST or not isinstance(pid, int) or isinstance(pid, bool):
        return None
    return None if pid_alive(pid) else pid


__all__ = ["HOST", "gone_process", "pid_alive"]
