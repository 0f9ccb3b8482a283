"""``status.json``: where a run stands, for ``dreamtext batch``, ``dreamtext view`` and people.

    {"state": "running" | "finished" | "failed" | "interrupted", "step": int, "iters": int,
     "started": iso8601, "updated": iso8601, "error": str | null, "seconds": float,
     "gpu_mem_mib": float | null}

The trainer wraps a run in :func:`track_status`, which writes the file atomically when the run
starts, when it ends (``finished``, written after the export), when it fails (with the error's
first line) and when it is interrupted (Ctrl-C, SIGTERM). ``started`` and ``seconds`` are those of
this attempt (a resumed run starts again); ``gpu_mem_mib`` is the peak reserved CUDA memory of the
attempt, ``null`` off CUDA.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from dreamtext.checkpoint import atomic_write_bytes
from dreamtext.errors import DreamtextError

STATUS = "status.json"
STATES = ("running", "finished", "failed", "interrupted")


def now_iso() -> str:
    """The current UTC time as ISO 8601 with seconds (``2026-11-30T12:00:00+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def error_line(error: BaseException) -> str:
    """One line for a failed run: a user error's message, else ``Type: first line``."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, DreamtextError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def write_status(workspace: str | Path, status: dict[str, Any]) -> None:
    text = json.dumps(status, indent=2) + "\n"
    atomic_write_bytes(Path(workspace) / STATUS, lambda f: f.write(text.encode("utf-8")))


def read_status(workspace: str | Path) -> dict[str, Any] | None:
    """The workspace's status, or ``None`` when there is none (or it is unreadable)."""
    try:
        data = json.loads((Path(workspace) / STATUS).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and data.get("state") in STATES else None


def peak_gpu_mib(device: torch.device) -> float | None:
    """Peak reserved CUDA memory since the last reset, in MiB; ``None`` off CUDA."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_reserved(device) / 2**20, 1)


@contextmanager
def track_status(
    workspace: str | Path,
    iters: int,
    step: Callable[[], int],
    device: torch.device,
    interrupted: tuple[type[BaseException], ...] = (KeyboardInterrupt,),
) -> Iterator[None]:
    """Keep ``workspace/status.json`` up to date around a run; ``step()`` reads the run's step.

    Exceptions pass through: those in ``interrupted`` are recorded as ``interrupted``, anything
    else as ``failed`` with :func:`error_line`.
    """
    started, start = now_iso(), time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def write(state: str, error: str | None = None) -> None:
        status = {
            "state": state,
            "step": int(step()),
            "iters": int(iters),
            "started": started,
            "updated": now_iso(),
            "error": error,
            "seconds": round(time.perf_counter() - start, 3),
            "gpu_mem_mib": peak_gpu_mib(device),
        }
        write_status(workspace, status)

    write("running")
    try:
        yield
    except interrupted:
        write("interrupted")
        raise
    except Exception as error:
        write("failed", error_line(error))
        raise
    write("finished")
