"""Where a working export stands, for ``dreamtext view``: the sidecar ``W/.export-progress.json``
of the run folder ``W`` it exports, there only while it works.

    {"stage": "loading the run" | "meshing" | "marching cubes" | "decimating"
              | "measuring the mesh" | "UV unwrapping" | "texture baking" | "vertex colours"
              | "turntable" | "writing files",
     "done": int | null, "total": int | null,   # meshing: density chunks; turntable: chunks
     "started": iso8601, "updated": iso8601, "step": int | null, "beat_s": 30.0,
     "host": str, "pid": int, "pid_start": int | null, "pid_ns": int | null,
     "boot_id": str | null, "locked": true}

``status.json`` is the training run's record and stays as it is (a finished run stays
``finished``, byte for byte, while ``dreamtext export`` works on it); this file says what the
export is doing. It is written whole (a temp file renamed over it, as ``status.json`` is) at
each stage and at most once in :data:`WRITE_EVERY_S` within one, and removed when the export
ends, however it ends short of SIGKILL. Each version's writer holds a ``flock`` on it
(:func:`dreamtext.processes.write_held_record`), so a reader on any machine whose locks reach
the file system tells a killed exporter's leftover from a live one (:func:`export_alive`).
Where locks do not reach (another machine over NFS mounted ``local_lock=flock``), the record's
heartbeat tells: it is written again every ``beat_s`` (:data:`BEAT_S`) while the export works,
a stage or not, and a reader that sees it unchanged for :data:`BEATS_MISSED` beats by its own
clock takes its writer for gone (a killed exporter on another node showed as exporting for an
hour, :data:`~dreamtext.processes.ELSEWHERE_GRACE_S`).

Imports nothing heavy: ``dreamtext view`` reads it without torch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from dreamtext.processes import (
    ELSEWHERE_GRACE_S,
    file_age,
    now_iso,
    on_this_machine,
    record_alive,
    record_held,
    this_process,
    write_held_record,
)

PROGRESS_FILE = ".export-progress.json"
# Within one stage, the record is rewritten at most this often (a 256^3 density grid has 64
# chunks, a turntable 15): a rename a second is nothing beside the work, even over NFS.
WRITE_EVERY_S = 1.0
# A temp file of a writer killed between writing it and renaming it is removed by the next
# export once it is this old, where no lock tells (its writer renames it within milliseconds).
TEMP_GRACE_S = 60.0
# The record is written again this often while the export works, whatever it does (one stage
# may take minutes: texture baking, an uncounted turntable): a heartbeat for readers on other
# machines, where the writer's lock cannot be seen.
BEAT_S = 30.0
# A record of another machine unchanged for this many of its beats, by the reader's clock, is a
# gone writer's (the file server's clock and the writer's may be minutes off the reader's, so
# only changes the reader saw are counted).
BEATS_MISSED = 3


class ExportProgress:
    """The writer of ``folder``'s :data:`PROGRESS_FILE`, for the block it is entered in.

    A write that fails (a folder not made yet, a full disk) is skipped: the progress is for
    people watching, and the export's own writes say what is wrong with the disk."""

    def __init__(self, folder: str | Path, step: int | None = None) -> None:
        self.path = Path(folder) / PROGRESS_FILE
        self.step = step
        self.started = now_iso()
        self._process = this_process()  # read once: /proc/<pid>/stat at every write is waste
        self._held: IO[str] | None = None
        self._stage: str | None = None
        self._written_at = -float("inf")
        self._record: dict[str, Any] | None = None  # the last written, for the heartbeat
        self._lock = threading.Lock()  # the heartbeat's writes and stage()'s, one at a time
        self._stop = threading.Event()
        self._heart: threading.Thread | None = None

    def __enter__(self) -> ExportProgress:
        _remove_dead_temps(self.path)
        self._heart = threading.Thread(target=self._beat, name="export-progress", daemon=True)
        self._heart.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(BEAT_S):
            with self._lock:
                if self._record is not None and self._held is not None:
                    self._write({**self._record, "updated": now_iso()})

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._heart is not None:
            self._heart.join()
        held, self._held = self._held, None
        if held is None:
            return
        try:  # only this export's record: another export of the run may have written since
            ours = os.path.samestat(os.fstat(held.fileno()), os.stat(self.path))
        except OSError:
            ours = False
        held.close()
        if ours:
            with contextlib.suppress(OSError):
                self.path.unlink()

    def stage(self, name: str, done: int | None = None, total: int | None = None) -> None:
        """Record that the export is at ``name`` (``done`` of ``total`` pieces of it): written
        at once for a new stage, else at most once in :data:`WRITE_EVERY_S`."""
        now = time.monotonic()
        if name == self._stage and now - self._written_at < WRITE_EVERY_S:
            return
        record = {
            "stage": name,
            "done": done,
            "total": total,
            "started": self.started,
            "updated": now_iso(),
            "step": self.step,
            "beat_s": BEAT_S,
            **self._process,
        }
        with self._lock:
            if self._write(record):
                self._stage, self._written_at, self._record = name, now, record

    def counter(self, name: str) -> Any:
        """``stage(name, done, total)`` as a function of ``done, total``, for a loop's callback."""
        return lambda done, total: self.stage(name, done, total)

    def _write(self, record: dict[str, Any]) -> bool:
        temp = self.path.with_name(f"{PROGRESS_FILE}.{secrets.token_hex(4)}.tmp")
        handle = None
        try:
            handle = write_held_record(temp, record)
            os.replace(temp, self.path)
        except OSError:
            if handle is not None:
                handle.close()
            with contextlib.suppress(OSError):
                temp.unlink()
            return False
        if self._held is not None:
            self._held.close()  # its file is replaced: closing drops the lock on it
        self._held = handle
        return True


def read_progress(folder: str | Path) -> dict[str, Any] | None:
    """``folder``'s progress record as written, live or not; ``None`` when there is none."""
    try:
        with open(Path(folder) / PROGRESS_FILE, "rb") as f:
            record = json.loads(f.read(1 << 16))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("stage"), str) else None


def export_alive(path: Path, record: dict[str, Any]) -> bool:
    """Whether the export that wrote ``record`` (the file ``path``) still works, judged as
    ``dreamtext.export`` judges a staging folder's writer: the lock of its file is held; or,
    free, it ran on another machine where locks may not reach across (NFS mounted
    ``local_lock=flock``) and wrote within :data:`ELSEWHERE_GRACE_S`; or, where the file has no
    lock, its process runs on this machine (or, of another, it wrote within the grace)."""
    held = record_held(path) if record.get("locked") is True else None
    if held is True:
        return True
    if held is False:
        return not on_this_machine(record) and _recent(path, record)
    # One of this machine's name written before it booted, and late by its heartbeat, is of
    # an earlier boot (processes.earlier_boot): the reboot ended it.
    alive = record_alive(record, every=_beat(record) or 0.0)
    return alive if alive is not None else _recent(path, record)


def _beat(record: dict[str, Any]) -> float | None:
    """The record's ``beat_s``, the seconds between its writer's heartbeats; ``None`` where it
    gives none (an export from before the heartbeat) or no usable one."""
    beat = record.get("beat_s")
    if isinstance(beat, (int, float)) and not isinstance(beat, bool) and 0 < beat < math.inf:
        return float(beat)
    return None


def _recent(path: Path, record: dict[str, Any]) -> bool:
    """Whether the record of a writer that cannot be checked from here has been written lately:
    by its heartbeat where it has one (:func:`_beating`), else (an export from before the
    heartbeat) within :data:`ELSEWHERE_GRACE_S`."""
    beat = _beat(record)
    if beat is not None:
        return _beating(path, record, beat)
    return file_age(path) <= ELSEWHERE_GRACE_S


# Per record file: the record as this process last saw it change, and when (by _clock), for
# :func:`_beating`. Bounded: the records looked at longest ago go first.
_sightings: dict[str, tuple[str, float]] = {}
_sightings_lock = threading.Lock()
SIGHTINGS_KEPT = 4096
_clock = time.monotonic


def _beating(path: Path, record: dict[str, Any], beat_s: float) -> bool:
    """Whether a record with a heartbeat every ``beat_s`` has changed within
    :data:`BEATS_MISSED` beats, by this process's clock: it is seen changed (its ``updated``,
    or its stage) at one look and unchanged at later ones. First seen, it is taken as beating
    (a dead writer's record shows as live for at most ``BEATS_MISSED * beat_s`` after a viewer
    starts); the file's time is not used, being the file server's clock, not this one's."""
    key, now = str(path), _clock()
    version = json.dumps(record, sort_keys=True, default=str)
    with _sightings_lock:
        seen = _sightings.pop(key, None)
        if seen is None or seen[0] != version:
            seen = (version, now)
        _sightings[key] = seen  # last: the most recently looked at
        while len(_sightings) > SIGHTINGS_KEPT:
            del _sightings[next(iter(_sightings))]
    return now - seen[1] <= BEATS_MISSED * beat_s


def live_export(folder: str | Path) -> dict[str, Any] | None:
    """The progress record of an export of ``folder`` that still works (:func:`export_alive`),
    ``None`` when none does (no record, or a killed exporter's)."""
    record = read_progress(folder)
    if record is None or not export_alive(Path(folder) / PROGRESS_FILE, record):
        return None
    return record


def progress_words(record: dict[str, Any]) -> str:
    """The record in words: ``turntable 7/15``, ``texture baking``."""
    done, total = record.get("done"), record.get("total")
    counted = all(isinstance(n, int) and not isinstance(n, bool) for n in (done, total))
    return f"{record['stage']} {done}/{total}" if counted else str(record["stage"])


def _remove_dead_temps(path: Path) -> None:
    """Remove the temp files of :class:`ExportProgress` writers killed before their rename."""
    for temp in path.parent.glob(f"{PROGRESS_FILE}.*.tmp"):
        held = record_held(temp)
        if held is False or (held is None and file_age(temp) > TEMP_GRACE_S):
            with contextlib.suppress(OSError):
                temp.unlink()


__all__ = [
    "BEATS_MISSED",
    "BEAT_S",
    "PROGRESS_FILE",
    "ExportProgress",
    "export_alive",
    "live_export",
    "progress_words",
    "read_progress",
]
