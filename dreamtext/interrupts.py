"""Stopping long work cleanly: Ctrl-C, SIGTERM and SIGHUP end a training loop after its current
step, with a checkpoint of that step on disk, instead of a traceback and lost steps. Ctrl-C
sent again stops at once; a SIGTERM or SIGHUP sent again is the same stop (schedulers send
more than one for one stop).

A step too big to end soon (a render of thousands of pixels a side) is cut short instead: the
renderer's and sampler's chunk loops call :func:`raise_if_stop_in_step`, which raises
:class:`StepStopped` once a stop was requested, and the trainer drops that half-done step and
saves the last whole one, as after any stop.

The text→3D trainer and descriptor training both use these, so a stopped stage says the same
thing and resumes the same way, whichever it was.

Outside the training loops a signal raises ``KeyboardInterrupt`` (:func:`sigterm_interrupts`),
which a library can swallow: one raised in an object's ``__del__`` (Python prints "Exception
ignored in ...") or under a library's ``except BaseException`` (trimesh's optional imports) is
lost. The handler also records the request, so work without steps (the sentence search) stops
at its next :func:`raise_if_stop_requested` and a training loop after its first step.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from dreamtext.__main__ import STOP_SIGNALS, handle_stop_signals, work_complete, work_goes_on
from dreamtext.checkpoint import atomic_write_bytes
from dreamtext.errors import naming_the_file


class TrainingInterrupted(Exception):
    """Raised after Ctrl-C / SIGTERM once the checkpoint of the last finished step is on disk
    (``in_export``: the run had trained to its end and was exporting; ``before_export``: it had
    trained to its end and its export had not begun; ``stage``: which training, when not
    text→3D's, e.g. ``"descriptor training"``).

    ``unsaved``: instead, why that step was not saved (a field whose weights overflowed), what
    is on disk and what to do; its line says all of it, so a command adds no "continue with
    --resume" of its own. ``checkpoint`` is then ``None``."""

    def __init__(
        self,
        step: int,
        checkpoint: Path | None,
        in_export: bool = False,
        stage: str | None = None,
        unsaved: str | None = None,
        before_export: bool = False,
    ):
        what = f"{stage} interrupted" if stage else "interrupted"
        where = "in the export, " if in_export else "before the export, " if before_export else ""
        saved = unsaved if unsaved is not None else f"saved {checkpoint}"
        super().__init__(f"{what} {where}after step {step}; {saved}")
        self.step = step
        self.checkpoint = checkpoint
        self.in_export = in_export
        self.before_export = before_export
        self.stage = stage
        self.unsaved = unsaved


class StepStopped(KeyboardInterrupt):
    """Ctrl-C / SIGTERM arrived inside a training step, which stops at its next chunk of work
    (:func:`raise_if_stop_in_step`) without applying its update. A ``KeyboardInterrupt``, so
    that where no training loop catches it, the command still ends as interrupted."""


# Whether Ctrl-C or SIGTERM arrived inside the outermost :func:`sigterm_interrupts` block, and
# how many such blocks are open (an image run's describe stage opens one inside the command's).
_REQUEST = {"stop": False, "depth": 0, "asked": False}
# The flag of the open :func:`stop_on_signal` block (None outside one), which the chunk loops
# inside a step read: a dict lookup, nothing a chunk of field queries would notice.
_STEP_LOOP: dict[str, dict[str, bool] | None] = {"flag": None}


def stop_requested() -> bool:
    """Whether Ctrl-C or SIGTERM has arrived since the command started (inside
    :func:`sigterm_interrupts`), whether or not its ``KeyboardInterrupt`` got through."""
    return _REQUEST["stop"]


def after_a_stop(error: BaseException) -> bool:
    """Whether ``error`` is a stop: a ``KeyboardInterrupt``, or an error raised once Ctrl-C or
    SIGTERM had arrived (:func:`stop_requested`), which a library made of the
    ``KeyboardInterrupt`` it caught (an import cut short fails where it is used; a write to
    ffmpeg that a Ctrl-C ended fails on its pipe). The CLI says such an error is the interrupt
    (``run_command``); the run's records and lines say so too."""
    return isinstance(error, KeyboardInterrupt) or (
        isinstance(error, Exception) and stop_requested()
    )


@contextmanager
def stops_as(interruption: Callable[[], BaseException]) -> Iterator[None]:
    """Raise ``interruption()`` (a :class:`TrainingInterrupted` naming where the run stopped and
    what is saved) for a stop in the block (:func:`after_a_stop`) instead of the bare
    ``KeyboardInterrupt`` or the library's error, whose line said only "interrupted", and which
    status.json recorded as "failed"; one raised in the block already says so, as it is."""
    try:
        yield
    except TrainingInterrupted:
        raise
    except Exception as error:
        if not after_a_stop(error):
            raise
        raise interruption() from None
    except KeyboardInterrupt:
        raise interruption() from None


def raise_if_stop_requested() -> None:
    """Raise ``KeyboardInterrupt`` when Ctrl-C or SIGTERM has arrived (:func:`stop_requested`):
    work without steps calls this between its pieces, so that a signal whose
    ``KeyboardInterrupt`` a library swallowed still stops it."""
    if _REQUEST["stop"]:
        raise KeyboardInterrupt


def more_work() -> None:
    """More work of the command follows work that was complete (a batch's next line, after
    :func:`dreamtext.__main__.work_complete`): stop signals interrupt again, and one that
    arrived in between is a request to stop (:func:`stop_requested`), which the caller checks
    before it starts that work; a SIGTERM or SIGHUP after it is that stop again, not raised.
    Outside every :func:`sigterm_interrupts` block there is no command whose stop it could be:
    one noted in an earlier, ended block (a notebook's cell stopped after its run was complete)
    is dropped, not carried into the next run."""
    if work_goes_on() and _REQUEST["depth"] > 0:
        # The command is stopping for it: the same stop sent again (sigterm_interrupts) is not
        # raised into the records of that stop.
        _REQUEST["stop"] = _REQUEST["asked"] = True


def raise_if_stop_in_step() -> None:
    """Raise :class:`StepStopped` when Ctrl-C or SIGTERM has arrived in a training loop
    (:func:`stop_on_signal`). Chunk loops inside a step call this between chunks, so that a step
    that would run for minutes or never end (a render far too big) stops within one chunk's
    work; outside a training loop it does nothing (an export stops by ``KeyboardInterrupt``)."""
    flag = _STEP_LOOP["flag"]
    if flag is not None and flag["stop"]:
        raise StepStopped


@contextmanager
def _handling(signals: tuple[signal.Signals, ...], handler: Callable) -> Iterator[None]:
    """``handler`` for ``signals`` inside the block (:func:`dreamtext.__main__.handle_stop_signals`:
    an ignored SIGHUP or Ctrl-C stays ignored), the previous handlers restored after it. Off
    the main thread, where Python refuses to set handlers, signals are left alone."""
    previous = {}
    with suppress(ValueError):
        previous = handle_stop_signals(handler, signals)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def stop_on_signal() -> Iterator[dict[str, bool]]:
    """Turn the first Ctrl-C / SIGTERM into a flag the loop checks after each step, and the
    chunk loops inside a step between chunks (:func:`raise_if_stop_in_step`); a second
    Ctrl-C interrupts at once. A signal that arrived before the loop and whose
    ``KeyboardInterrupt`` was lost (:func:`stop_requested`) counts as the first.

    The loop reads the flag once more after the block: a stop that came after its last look
    (as it closed its bar and log) is the command's stop all the same, which the loop acts on
    there (its checkpoint saved, what follows the training not begun). The block leaves it
    recorded (:func:`stop_requested`), so that work that follows without reading the flag
    stops at its :func:`raise_if_stop_requested`, and a SIGTERM or SIGHUP after it is that stop
    sent again, not raised into its checkpoint.

    Only Ctrl-C, typed again by someone who will not wait, skips the step's checkpoint: SIGTERM
    and SIGHUP come from machines, which send more than one of them for one stop and end the
    process themselves once their grace time is up (SIGKILL). A SLURM task's step gets its
    slurmstepd's SIGTERM and, milliseconds later, a second one from its srun, which the job's
    stop (its time limit, scancel) reached too: as a second Ctrl-C, that one cut the checkpoint
    of the first short, and the run lost every step since its last periodic checkpoint."""
    flag = {"stop": stop_requested()}

    def handler(signum, frame):
        if flag["stop"] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag["stop"] = True
        if _REQUEST["depth"] > 0:  # what the command does after the loop stops is that stop's
            _REQUEST["asked"] = True

    outer = _STEP_LOOP["flag"]
    _STEP_LOOP["flag"] = flag
    try:
        with _handling(STOP_SIGNALS, handler):
            yield flag
        if flag["stop"] and _REQUEST["depth"] > 0:  # the handler noted it as asked
            _REQUEST["stop"] = True
    finally:
        _STEP_LOOP["flag"] = outer


@contextmanager
def chunks_not_stopped() -> Iterator[None]:
    """Inside the block a stop does not cut the chunk loops short (:func:`raise_if_stop_in_step`
    does nothing): for work of a few chunks that a stop itself needs done (the check of the
    weights it saves, :func:`dreamtext.trainer.weights_render_finite`). A second Ctrl-C still
    interrupts at once (:func:`stop_on_signal`)."""
    outer = _STEP_LOOP["flag"]
    _STEP_LOOP["flag"] = None
    try:
        yield
    finally:
        _STEP_LOOP["flag"] = outer


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C does (a batch scheduler's stop, or ``kill``),
    so that work outside the training loop ends recorded as interrupted, not killed mid-line.
    Both are also recorded (:func:`stop_requested`), from the outermost such block's start."""

    def handler(signum, frame):
        # A SIGTERM or SIGHUP once the command is stopping is the same stop sent again (as
        # stop_on_signal's): raised, it cut the stop's own records short (a batch line's record
        # and lock, its summary). Ctrl-C again still interrupts.
        if _REQUEST["asked"] and signum != signal.SIGINT:
            return
        _REQUEST["stop"] = _REQUEST["asked"] = True
        raise KeyboardInterrupt

    if _REQUEST["depth"] == 0:
        _REQUEST["stop"] = _REQUEST["asked"] = False
    _REQUEST["depth"] += 1
    try:
        with _handling(STOP_SIGNALS, handler):
            yield
    finally:
        _REQUEST["depth"] -= 1
        if _REQUEST["depth"] == 0:
            _REQUEST["stop"] = _REQUEST["asked"] = False


@contextmanager
def signals_held(drop: bool = False) -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back inside the block, so that a write in it (a run's last
    ``status.json``) is not cut short: one that arrives is delivered to the handler it would
    have reached when the block ends, or with ``drop`` dropped (the block is part of stopping for
    an earlier one). Off the main thread, where handlers cannot be set, nothing is held.

    The signals are caught, not masked: ``pthread_sigmask`` masks them in this thread only, and a
    ``kill`` then reaches one of torch's threads, whose Python handler still runs in this one.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    try:
        with _handling(STOP_SIGNALS, lambda signum, frame: arrived.append(signum)):
            yield
    finally:
        if arrived and not drop:
            signal.raise_signal(arrived[0])


def rename_completing_work(source: str | Path, destination: str | Path) -> None:
    """Rename ``source`` to ``destination`` (``os.replace``): the rename that puts the command's
    last file in place, which marks its work complete
    (:func:`dreamtext.__main__.work_complete`) in the same step. The stop signals are held from
    before the rename to after the mark (:func:`signals_held`), so a stop lands before both (it
    interrupts, nothing renamed) or after both (noted: the run reads finished, exit 0). Marked
    after the rename returned, a stop in between read "interrupted" of a run whose every file
    was in place. A rename that fails marks nothing, and a stop held meanwhile interrupts."""
    with signals_held():
        os.replace(source, destination)
        work_complete()


def rename_for(completes_work: bool) -> Callable[[str | Path, str | Path], None]:
    """The rename that puts a file in place: :func:`rename_completing_work` where the file is the
    command's last (``completes_work``), else ``os.replace``."""
    return rename_completing_work if completes_work else os.replace


# How much of a log truncate_log reads at a time, from its end back.
LOG_BLOCK_BYTES = 64 * 1024


def truncate_log(log_path: Path, step: int) -> None:
    """Drop log records past ``step``: a run killed after its last checkpoint logged steps that
    the resumed run is about to log again. A line that is not a whole JSON object is dropped too:
    a run killed with its node (power loss, a full disk) can leave its last line torn, or
    a tail of NUL bytes, and the resumed run appends after it.

    Read from the file's end back to the last record of ``step`` or earlier, and cut in place
    there: every append to a log follows this, so what it drops is only ever a tail. A clean log
    (the resume of a run stopped at a checkpoint) is left untouched; rewritten whole on every
    resume, a 100,000-line log cost 0.9 s and 37 MB of memory. A record without a step (none
    that dreamtext writes) in that tail stays, the file then rewritten whole."""
    if not log_path.is_file():
        return
    with open(log_path, "rb") as log:
        end = log.seek(0, os.SEEK_END)
        kept = _end_of_kept_records(log, end, step)
    if kept is None:
        _rewrite_log(log_path, step)
        return
    cut = kept + 1 if kept > 0 else 0  # after the kept record's newline
    with naming_the_file(log_path):
        if kept == end and end > 0:  # a whole last record without its newline: given one
            with open(log_path, "ab") as log:
                log.write(b"\n")
        elif cut < end:
            os.truncate(log_path, cut)


def _end_of_kept_records(log: BinaryIO, end: int, step: int) -> int | None:
    """The offset in ``log`` (``end`` bytes long) where its last record of ``step`` or earlier
    ends, before its newline, 0 where there is none; ``None`` where a record after it stays
    (one without a step)."""
    for line_end, line in lines_from_end(log, end, LOG_BLOCK_BYTES):
        record = _record(line)
        if record is not None and _is_kept(record, step):
            return line_end if "step" in record else None
    return 0


def lines_from_end(log: BinaryIO, end: int, block: int) -> Iterator[tuple[int, bytes]]:
    """The lines of ``log`` (``end`` bytes long), split at each newline, from its last back to its
    first, each with the offset where it ends (before its newline; the first is the ``b""``
    after a final newline), read ``block`` bytes at a time from the end: a log of 10^5 records
    is looked at by its end without reading it whole."""
    start, tail = end, b""  # tail: the bytes from start, up to the line being looked at
    while True:
        newline = tail.rfind(b"\n")
        if newline < 0 and start > 0:
            size = min(start, block)
            start -= size
            log.seek(start)
            tail = log.read(size) + tail
            continue
        yield start + len(tail), tail[newline + 1 :]
        if newline < 0:
            return
        tail = tail[:newline]


def _rewrite_log(log_path: Path, step: int) -> None:
    """:func:`truncate_log` by rewriting the whole file, its every line looked at."""
    kept = []
    for line in log_path.read_bytes().splitlines():
        record = _record(line)
        if record is not None and _is_kept(record, step):
            kept.append(line + b"\n")
    atomic_write_bytes(log_path, lambda f: f.write(b"".join(kept)))


def _record(line: bytes) -> dict | None:
    """The JSON object ``line`` holds, else ``None``."""
    try:
        record = json.loads(line.decode("utf-8", errors="replace"))
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _is_kept(record: dict, step: int) -> bool:
    """Whether a resume from ``step`` keeps ``record``: one of ``step`` or earlier, or without
    a step."""
    logged = record.get("step", 0)
    return isinstance(logged, (int, float)) and logged <= step
