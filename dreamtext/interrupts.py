"""Stopping long work cleanly: Ctrl-C and SIGTERM end a training loop after its current step,
with a checkpoint of that step on disk, instead of a traceback and lost steps.

The text→3D trainer and descriptor training both use these, so a stopped stage says the same
thing and resumes the same way, whichever it was.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from dreamtext.checkpoint import atomic_write_bytes


class TrainingInterrupted(Exception):
    """Raised after Ctrl-C / SIGTERM once the checkpoint of the last finished step is on disk
    (``in_export``: the run had trained to its end and was exporting; ``stage``: which training,
    when not text→3D's, e.g. ``"descriptor training"``)."""

    def __init__(
        self, step: int, checkpoint: Path, in_export: bool = False, stage: str | None = None
    ):
        what = f"{stage} interrupted" if stage else "interrupted"
        where = "in the export, " if in_export else ""
        super().__init__(f"{what} {where}after step {step}; saved {checkpoint}")
        self.step = step
        self.checkpoint = checkpoint
        self.in_export = in_export
        self.stage = stage


@contextmanager
def _handling(signals: tuple[signal.Signals, ...], handler: Callable) -> Iterator[None]:
    """``handler`` for ``signals`` inside the block, the previous handlers restored after it.
    Off the main thread, where Python refuses to set handlers, signals are left alone."""
    previous = {}
    for sig in signals:
        with suppress(ValueError):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def stop_on_signal() -> Iterator[dict[str, bool]]:
    """Turn the first Ctrl-C / SIGTERM into a flag the loop checks after each step; a second
    Ctrl-C interrupts at once."""
    flag = {"stop": False}

    def handler(signum, frame):
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    with _handling((signal.SIGINT, signal.SIGTERM), handler):
        yield flag


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C does (a batch scheduler's stop, or ``kill``),
    so that work outside the training loop ends recorded as interrupted, not killed mid-line."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    with _handling((signal.SIGTERM,), handler):
        yield


def truncate_log(log_path: Path, step: int) -> None:
    """Drop log records past ``step``: a run killed after its last checkpoint logged steps that
    the resumed run is about to log again. A line that is not a whole JSON object is dropped too:
    a run killed with its node (power loss, a full disk) can leave its last line torn, or
    a tail of NUL bytes, and the resumed run appends after it."""
    if not log_path.is_file():
        return
    kept = []
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line)
    text = "".join(line + "\n" for line in kept)
    atomic_write_bytes(log_path, lambda f: f.write(text.encode()))
