"""What the viewer knows about runs: found from the folders given, read from their files.

    folders given ──► Catalog (which workspaces, under which root, with which id)
    workspace     ──► read_run ──► Run (prompt, status, log series, previews, mesh, video, ...)
    runs          ──► GalleryCache ──► the gallery's Runs, each read again when its files change
    *.jsonl       ──► JsonlFollower ──► what the pages show of a log, parsed as far as it grew

An image→3D run is a run from its first file on: ``config.json`` (with the stages' settings, from
the start of the run), ``status.json`` (its phase: ``sample`` for ``--diverse``'s image, then
``describe``, ``descriptor``), ``descriptor/sentence.json`` (describe), then the descriptor
training's ``descriptor/log.jsonl`` and ``checkpoints/``, then ``learned_embeds.safetensors``, then
the trainer's files as for text→3D. Its status says which of these stages it is in; runs from
before status.json covered these stages are read from their files.

Nothing here writes. Every file is optional: a run being written, an older run without
``status.json``, a batch line whose workspace was never made, all read as far as their files go.
Paths in a ``Run`` are relative to its workspace (``previews/final.png``); the server and the static
export turn them into addresses.
"""

from __future__ import annotations

import functools
import json
import math
import os
import posixpath
import re
import threading
import time
import unicodedata
import zlib
from array import array
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from stat import S_ISDIR
from typing import Any

from dreamtext.errors import DreamtextError, shell_word, shown_path
from dreamtext.exportprogress import PROGRESS_FILE, export_alive, progress_words, read_progress
from dreamtext.processes import (
    copied_folder,
    iso_timestamp,
    lock_held,
    outermost_run,
    read_status_json,
    record_alive,
    run_alive,
)

# The same folder as dreamtext.config.DEFAULT_WORKSPACE_ROOT, not imported from there: that module
# imports torch, and the viewer starts without it.
DEFAULT_ROOT = Path("workspace")
# dreamtext.describe.sentence_path, likewise (and the descriptor's files beside it, from
# dreamtext.descriptor; dreamtext.imageto3d.keep_source_copy's descriptor/source.<ext>).
SENTENCE_FILE = Path("descriptor") / "sentence.json"
DESCRIPTOR_LOG = Path("descriptor") / "log.jsonl"
DESCRIPTOR_CHECKPOINTS = Path("descriptor") / "checkpoints"
LEARNED_EMBEDS = Path("descriptor") / "learned_embeds.safetensors"
# Files whose presence makes a folder a run's workspace: the trainer's, or the sentence an
# image→3D run writes first (its describe stage), long before the trainer starts.
WORKSPACE_MARKERS = ("config.json", "log.jsonl", "status.json", SENTENCE_FILE.as_posix())
# A run without status.json whose files changed this recently counts as running.
RUNNING_IF_CHANGED_WITHIN_S = 120.0
# A run whose status.json says running but whose files have not changed for this long may have
# died without saying so; its status then says how long it has been quiet (ChangeClock: by this
# viewer's clock, whatever the file server's).
QUIET_AFTER_S = 600.0
# status.json's "updated" is in whole seconds: a difference from its mtime under this is its
# rounding, not a file server's clock being off.
CLOCK_SKEW_FROM_S = 2.0
# The most runs ChangeClock remembers (the least recently asked about are forgotten first).
CHANGE_CLOCK_RUNS = 20000
# How long find() answers from the last scan of the folders. A page's requests come together (a
# gallery's thumbnails: one per card), and a scan reads every workspace: one scan per request
# made a gallery of 250 runs cost 250 scans, 28 s of the server's time, to show its pictures.
FIND_REUSES_SCAN_S = 2.0
# A file changed this close to the time a run was read may change again without its stat
# changing (file times advance in ticks of up to a few milliseconds, of 1-2 s on some file
# systems): the gallery reads such a run again at its next poll instead of trusting the stat.
STAT_SETTLES_AFTER_S = 2.0
# A run that is not running has its files other than those its card is made of (CARD_FILES, the
# card's picture) stat'ed at one gallery poll in this many, each run at its own; its folders every
# poll. dreamtext writes those files (previews, mesh, video, checkpoints, mesh.json) by renaming
# them into their folder, or swaps the folder whole (an export), and either changes a time that is
# stat'ed every poll (the folder's, the workspace's); a file rewritten in place by another tool
# (``cp`` over an older copy) shows within this many polls (30 s at the default 2 s), in the card's
# time.
LINKED_FILES_EVERY_POLLS = 15
# The files a card's text comes from (prompt, status, steps, sentence, descriptor step).
CARD_FILES = ("config.json", "status.json", "log.jsonl", SENTENCE_FILE.as_posix())
CARD_FILES += (DESCRIPTOR_LOG.as_posix(), PROGRESS_FILE)
# How often the figures kept of each log (JsonlFollower) are checked for logs that are gone: a
# removed run's are dropped within this time (a stat of each log kept).
FORGET_GONE_LOGS_EVERY_S = 60.0
# The log series the run page plots (each key of a log record that is present and finite).
SERIES_KEYS = ("loss", "loss_sds", "t", "its", "gpu_mem_mib")
MESH_FILES = {
    "glb": "mesh/mesh.glb",
    "obj": "mesh/mesh.obj",
    "mtl": "mesh/mesh.mtl",
    "texture": "mesh/albedo.png",
    "ply": "mesh/mesh.ply",
}
VIDEO_FILES = {"mp4": "video/turntable.mp4", "gif": "video/turntable.gif"}
# The files whose absence a run page explains; one there through a link out of the workspace is
# named instead (Run.linked_out).
LINKED_OUT_CHECKED = (*MESH_FILES.values(), *VIDEO_FILES.values(), "previews/final.png")
# The run's records, linked as they are from the run page.
DATA_FILES = (
    "config.json",
    "log.jsonl",
    "status.json",
    "mesh/mesh.json",
    "descriptor/sentence.json",
    "descriptor/log.jsonl",
)
SOURCE_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# The files of Run.files that have a name of their own (is_linked_file).
_LINKED_NAMES = frozenset(
    {*MESH_FILES.values(), *VIDEO_FILES.values(), *DATA_FILES, "previews/final.png"}
)
# Files and folders (whose mtime changes when a file in them is made or replaced) that a working
# run keeps touching, besides the files the pages link to: how recently a run did anything.
ACTIVITY_PATHS = (
    "status.json",
    "log.jsonl",
    "config.json",
    "previews",
    "mesh",
    "video",
    "checkpoints",
    "descriptor",
    "descriptor/previews",
    DESCRIPTOR_CHECKPOINTS.as_posix(),
    f"{DESCRIPTOR_CHECKPOINTS.as_posix()}/last.pt",
    LEARNED_EMBEDS.as_posix(),
)
# What a run is doing, in words, by status.json's phase (while running; "train" needs none).
PHASE_ACTIVITY = {"export": "exporting"}
# status.json's phases of an image→3D run before its text stage (dreamtext.runstatus.PHASES), and
# the config.json sections that mark an image→3D run (dreamtext.config.STAGE_SECTIONS): not
# imported, for the reason DEFAULT_ROOT is not.
IMAGE_PHASES = ("sample", "describe", "descriptor")
IMAGE_SECTIONS = ("image_to_3d", "diverse")
_STEP_PREVIEW = re.compile(r"step_(\d+)\.png")


def is_workspace(folder: Path) -> bool:
    return any((folder / name).is_file() for name in WORKSPACE_MARKERS)


def inside_run_hint(folder: Path) -> str | None:
    """Where ``folder`` lies inside a run: a sentence naming the run's folder to pass instead."""
    run = outermost_run(folder)
    if run is None:
        return None
    return (
        f"{shown_path(folder)} is a folder inside the run {shown_path(run)}: "
        f"`dreamtext view {shell_word(run)}` shows it"
    )


def linked_runs_hint(folder: Path, given: Collection[Path] = ()) -> str | None:
    """Where ``folder`` holds runs through links out of it (``ln -s ../workspace/run best/``),
    which are not followed (nothing outside a root is served): a sentence that says so and names
    the runs' folders to pass instead, but those among ``given`` (resolved: passed already)."""
    if not folder.is_dir() or is_workspace(folder):
        return None
    root = folder.resolve()
    targets = [
        (folder / name).resolve()
        for name, is_link in _subfolders(folder)
        if is_link and _holds_run(os.path.join(folder, name))
    ]
    outside = [t for t in targets if not t.is_relative_to(root) and t not in given]
    if not outside:
        return None
    shown = _some_paths(outside)
    if len(outside) == 1:
        what, instead = "1 link to a run", "the run's folder"
    else:
        what, instead = f"{len(outside)} links to runs", "the runs' folders"
    return (
        f"{shown_path(folder)} holds {what} outside it, which the viewer does not follow: "
        f"pass {instead} instead (dreamtext view {shown})"
    )


def _some_paths(paths: list[Path]) -> str:
    """Up to three of ``paths``, quoted for a shell, and "…" where some are left out."""
    shown = " ".join(shell_word(path) for path in paths[:3])
    return shown + " …" if len(paths) > 3 else shown


def nested_runs_hint(folder: Path, given: Collection[Path] = ()) -> str | None:
    """Where ``folder`` (no run) has subfolders that are no runs but hold runs of their own (a
    batch's root in a folder of batches: ``runs/B/``), which the viewer does not look into (it
    shows a folder's runs one level down): a sentence naming them to pass as well, but those
    among ``given`` (resolved: passed already). Such a folder alone was served as an empty
    gallery that said its runs were still to come."""
    if not folder.is_dir() or is_workspace(folder):
        return None
    nested = [
        folder / name
        for name, is_link in _subfolders(folder)
        if not is_link
        and not _holds_run(os.path.join(folder, name))
        and _holds_runs(folder / name)
        and (folder / name).resolve() not in given
    ]
    if not nested:
        return None
    shown = _some_paths(nested)
    if _holds_runs(folder):  # runs of its own beside them: both
        shown = f"{shell_word(folder)} {shown}"
    what = "a folder of runs" if len(nested) == 1 else f"{len(nested)} folders of runs"
    return (
        f"{shown_path(folder)} holds {what} a level further down, which the viewer does not "
        f"look into: pass {'it' if len(nested) == 1 else 'them'} (dreamtext view {shown})"
    )


def left_out_hints(folder: Path, given: Collection[Path] = ()) -> list[str]:
    """What the viewer can say of runs in ``folder`` that a gallery of its other runs leaves
    out: runs linked from outside it, runs a level further down; but those in the folders
    ``given`` (resolved), which it shows."""
    found = (linked_runs_hint(folder, given), nested_runs_hint(folder, given))
    return [hint for hint in found if hint]


def folder_hints(folder: Path) -> list[str]:
    """What the viewer can say of ``folder``'s runs that it does not show: the run it lies in,
    runs linked from outside it, runs a level further down."""
    found = (inside_run_hint(folder), linked_runs_hint(folder), nested_runs_hint(folder))
    return [hint for hint in found if hint]


@dataclass(frozen=True)
class RunLocation:
    """One run: ``id`` (its address on the page), ``path`` (its workspace, resolved; ``None`` for a
    batch line whose workspace does not exist), ``root`` (the folder of runs it was found in)."""

    id: str
    name: str
    path: Path | None
    root: Path | None
    batch: dict[str, Any] | None = None


class Catalog:
    """The runs under the folders given on the command line, found again on every ``runs()`` call
    (a batch adds workspaces to its root while the page is open).

    A folder that holds ``config.json``, ``log.jsonl``, ``status.json`` or
    ``descriptor/sentence.json`` is one workspace; any other folder is a root: its subfolders that
    are workspaces, and the workspaces its ``batch.jsonl`` names, are its runs. Folders without
    runs are refused unless ``empty_ok`` (a server started before a batch's first run), and so
    are folders that do not exist: with ``empty_ok`` those are looked for at every scan (a batch
    makes its folder only once it has read its prompts and checked its model), as a workspace or
    a root, whichever they turn out to be. So is a folder that holds nothing of a run yet (a run
    loading its models has written only its lock file): taken for a root once and for good, the
    run it became was never shown. A folder removed while the page is open shows no run.
    """

    def __init__(self, folders: list[Path], empty_ok: bool = False):
        # (folder, whether it is a root; None: not there yet, decided at each scan)
        self.sources: list[tuple[Path, bool | None]] = []
        self._last_scan: tuple[float, dict[str, RunLocation]] | None = None
        self._scan_lock = threading.Lock()
        # Each listed run's id (:meth:`_with_ids`), by its path (or root and name, for a batch
        # line whose folder is not there).
        self._ids: dict[Any, str] = {}
        self._ids_lock = threading.Lock()
        for folder in folders:
            if not folder.exists() and not folder.is_symlink() and empty_ok:
                self.sources.append((folder.resolve(), None))
                continue
            if not folder.exists():
                raise DreamtextError(f"no such folder: {shown_path(folder)}")
            if not folder.is_dir():
                raise DreamtextError(
                    f"{shown_path(folder)} is a file; pass a run's folder or a folder of runs"
                )
            resolved = folder.resolve()
            undecided = not is_workspace(resolved) and not _holds_runs(resolved)
            self.sources.append((resolved, None if undecided else not is_workspace(resolved)))
        if not empty_ok and not self.runs():
            hints = [hint for folder in folders for hint in folder_hints(folder)]
            if hints:
                raise DreamtextError("; ".join(hints))
            shown = ", ".join(shown_path(f) for f in folders)
            raise DreamtextError(
                f"no dreamtext runs in {shown}: a run's folder holds config.json, log.jsonl or "
                "descriptor/sentence.json; "
                "pass a run's folder or the folder that holds runs"
            )

    def runs(self) -> list[RunLocation]:
        """Every run, from a fresh scan of the folders."""
        found = self._scan()
        with self._scan_lock:
            self._last_scan = (time.monotonic(), {run.id: run for run in found})
        return found

    def find(self, run_id: str) -> RunLocation | None:
        """The run with this id: from the last scan when it is under
        :data:`FIND_REUSES_SCAN_S` old and has the run, else from a fresh scan (so a run that
        appeared since is found)."""
        with self._scan_lock:
            last = self._last_scan
        if last is not None and time.monotonic() - last[0] < FIND_REUSES_SCAN_S:
            run = last[1].get(run_id)
            if run is not None:
                return run
        runs = self.runs()
        found = next((run for run in runs if run.id == run_id), None)
        if found is not None:
            return found
        # An address typed by hand (é as one letter) for a folder named in NFD (é as e and a
        # combining accent: a copy from a Mac's HFS+): the same name to the user, as to batch.
        typed = unicodedata.normalize("NFC", run_id)
        alike = [run for run in runs if unicodedata.normalize("NFC", run.id) == typed]
        return alike[0] if len(alike) == 1 else None

    def _scan(self) -> list[RunLocation]:
        found: list[tuple[str, Path | None, Path | None, dict | None]] = []

        def add(name: str, path: Path | None, root: Path | None, batch: dict | None) -> None:
            found.append((name, path, root, batch))

        seen: set[Path] = set()
        for folder, is_root in self.sources:
            if not folder.is_dir():  # not there yet, or removed since
                continue
            if is_root is None:  # not there at the start, or empty: whatever it is now
                folder = folder.resolve()
                is_root = not is_workspace(folder)
            if not is_root:
                if folder not in seen:
                    seen.add(folder)
                    add(folder.name, folder, None, None)
                continue
            named = {}  # batch.jsonl's workspaces, resolved, with their newest line
            for record in latest_batch_records(folder).values():
                path = _batch_workspace(folder, record)
                if path is not None:
                    named[path] = record
            for name, is_link in _subfolders(folder):
                if not _holds_run(os.path.join(folder, name)):
                    continue
                # A subfolder that is a link out of the root is not one of its runs. (The root
                # is resolved: a subfolder that is no link is resolved as it is.)
                resolved = (folder / name).resolve() if is_link else folder / name
                if is_link and not resolved.is_relative_to(folder):
                    continue
                if resolved not in seen:
                    seen.add(resolved)
                    add(name, resolved, folder, named.pop(resolved, None))
            for path, record in named.items():
                # Named by batch.jsonl but not a subfolder: deeper, not made, or outside the root
                # (then shown from its batch line alone: nothing outside the root is served).
                if path in seen:
                    continue
                seen.add(path)
                inside = path.is_relative_to(folder)
                name = path.relative_to(folder).as_posix() if inside else str(record["workspace"])
                add(name, path if inside and path.is_dir() else None, folder, record)
        return self._with_ids(found)

    def _with_ids(
        self, found: list[tuple[str, Path | None, Path | None, dict | None]]
    ) -> list[RunLocation]:
        """The runs ``found`` (name, path, root, batch line) with their ids: a run keeps the id it
        had in the last scan for as long as it is listed, and a new run gets its name's, made
        unique (``NAME-2``, ...) among the others. By scan order alone, a run appearing earlier
        in it (a batch's new folder of the same name in the first of two roots) took the id of
        one already listed, and that run's open page turned to the newcomer's, without a word."""
        keys: list[Any] = []
        # A set beside the list: `key in keys` compared each run with every run before it, and
        # a gallery of 5,000 runs took 4-6 s a poll (every 2 s), 12.5 million Path comparisons.
        listed: set[Any] = set()
        for name, path, root, _ in found:
            key: Any = path if path is not None else (root, name)
            key = key if key not in listed else (key, len(keys))
            listed.add(key)
            keys.append(key)
        with self._ids_lock:
            ids = {key: self._ids[key] for key in keys if key in self._ids}
            used = {_file_name_key(run_id) for run_id in ids.values()}
            for key, (name, *_) in zip(keys, found, strict=True):
                if key in ids:
                    continue
                base = _id_of(name)
                run_id, n = base, 2
                while _file_name_key(run_id) in used:
                    run_id, n = f"{base}-{n}", n + 1
                used.add(_file_name_key(run_id))
                ids[key] = run_id
            self._ids = ids  # the runs no longer listed give their ids up
        return [RunLocation(ids[key], *entry) for key, entry in zip(keys, found, strict=True)]


def _subfolders(folder: Path) -> list[tuple[str, bool]]:
    """The names of ``folder``'s subfolders (links to folders too), not hidden, sorted, each with
    whether it is a link. One listing: the kind of each entry comes with it."""
    try:
        with os.scandir(folder) as entries:
            found = [
                (entry.name, entry.is_symlink())
                for entry in entries
                if not entry.name.startswith(".") and entry.is_dir()
            ]
    except OSError:
        return []
    return sorted(found)


def _holds_runs(folder: Path) -> bool:
    """Whether ``folder`` (no workspace) has runs: a ``batch.jsonl`` or a subfolder that holds
    a run. ``os.path.isfile``, not ``Path.is_file``: in another user's folder (mode 700) the
    second raises ``EACCES`` where the first answers no."""
    return os.path.isfile(folder / "batch.jsonl") or any(
        _holds_run(os.path.join(folder, name)) for name, _ in _subfolders(folder)
    )


def _holds_run(folder: str) -> bool:
    """:func:`is_workspace` for a path as text (the scan asks it of every subfolder each poll)."""
    return any(os.path.isfile(os.path.join(folder, name)) for name in WORKSPACE_MARKERS)


@functools.lru_cache(maxsize=65536)
def _id_of(name: str) -> str:
    """A run's address from its folder's name: letters of any script stay, with their combining
    marks (workspace folders keep them: config.slugify); anything else is ``_``."""
    kept = "".join(c if c in ".-" or unicodedata.category(c)[0] in "LNM" else "_" for c in name)
    return re.sub(r"_+", "_", kept).strip("._") or "run"


def _file_name_key(run_id: str) -> str:
    """A run id as a file system that ignores case and Unicode normalisation (macOS's, Windows')
    tells names apart: the downloads (``a_red_cube.zip``, the zip's folder ``a_red_cube/``) and a
    static folder's ``runs/<id>/`` are named by run id, so ``Cube`` and ``cube``, shown as two
    runs, were one file or folder there."""
    return unicodedata.normalize("NFC", run_id).casefold()


def _batch_workspace(root: Path, record: dict[str, Any]) -> Path | None:
    """A batch line's workspace, resolved (it is relative to the root where possible)."""
    name = record.get("workspace")
    if not isinstance(name, str) or not name:
        return None
    path = root / name
    if "/" not in name and os.sep not in name and name not in (".", "..") and not path.is_symlink():
        return path  # a folder of the (resolved) root, no link: resolved as it is
    return Path(os.path.realpath(path))


def latest_batch_records(root: Path) -> dict[str, dict[str, Any]]:
    """``batch.jsonl``'s newest record per workspace (:class:`LatestBatchRecords`)."""
    return _batch_records.read(root / "batch.jsonl")


# ----------------------------------------------------------------- logs, followed as they grow
#
# A run's log.jsonl gains a line every log_every steps, and a sweep's 1,000 runs of 10,000 steps
# hold a million lines (~2 KB each as Python dicts). The viewer keeps of each log only what the
# pages show (a fold of its records: counts, the last record, the largest memory; the run page's
# curves as numbers) and, when the file grows, parses only the lines appended since.


class LogFigures:
    """What the gallery and a run's status need of a log: how many records (``lines``), the last
    one, the largest ``gpu_mem_mib`` (``peak_mem``) and the last ``step`` that is a number."""

    def __init__(self) -> None:
        self.lines = 0
        self.last: dict[str, Any] = {}
        self.peak_mem: float | None = None
        self.last_step: float | None = None

    def add(self, record: dict[str, Any]) -> None:
        self.lines += 1
        self.last = record
        memory = _number(record.get("gpu_mem_mib"))
        if memory is not None and (self.peak_mem is None or memory > self.peak_mem):
            self.peak_mem = memory
        step = _number(record.get("step"))
        if step is not None:
            self.last_step = step

    def snapshot(self) -> LogFigures:
        copy = LogFigures()
        copy.lines, copy.last, copy.peak_mem = self.lines, self.last, self.peak_mem
        copy.last_step = self.last_step
        return copy


# The columns a run page's curves are drawn from: the trainer's log's (step and SERIES_KEYS),
# the descriptor log's (step and loss).
CURVE_KEYS = tuple(dict.fromkeys(("step", "loss", *SERIES_KEYS)))
# The most records a run page's curves are drawn from. A longer log (a 100,000-step run) is
# drawn from a selection of its records that keeps each curve's shape (LogCurves): a chart is a
# few hundred pixels wide, and a live run's page gets its curves again at every poll (the whole
# of a 100,000-line log was 7.5 MB of JSON, 1.9 MB gzipped, every 2 s).
CURVE_RECORDS = 2000
# A record as LogCurves keeps it: its index in the log, then its value of each of CURVE_KEYS
# (NaN where absent). An index of -1 marks a bucket in which a key has no value.
_SLOT = 1 + len(CURVE_KEYS)
_NO_RECORD = array("d", [-1.0] + [math.nan] * len(CURVE_KEYS))


def curve_buckets(keys: int, limit: int = CURVE_RECORDS) -> int:
    """How many buckets each of ``keys`` curves may have so that ``limit`` records hold them:
    ``B = (limit - 2) // (2 K)`` (a smallest and a largest record per bucket, plus the ends)."""
    return max(1, (limit - 2) // (2 * max(1, keys)))


def bucket_width(records: int, buckets: int) -> int:
    """The smallest power of two ``w`` with ``ceil(records / w) <= buckets``."""
    width = 1
    while -(-records // width) > buckets:
        width *= 2
    return width


class LogCurves:
    """A log's :class:`LogFigures` and the records its run page's curves are drawn from, in
    ~110 KB whatever the log's length (at most ~230 KB, up to 2,000 records; a 100,000-line
    log's columns, every record's values, were 5.6 MB).

    A log of ``n <= limit`` records is drawn from all of them. A longer one from

        kept = {0, n - 1} ∪ ⋃_key ⋃_b {argmin_(i in b) key_i, argmax_(i in b) key_i}

    over the keys of :data:`CURVE_KEYS` but ``step`` that have a value in some record (``K`` of
    them), the buckets ``b = [j w, (j + 1) w)`` of ``w = bucket_width(n, curve_buckets(K))``
    consecutive records (a power of two), ties going to the earlier record: at most
    ``2 + 2 K B <= limit`` records, every one a true record of the log; each curve keeps its
    first and last step, its smallest and largest value and, in every bucket (a pixel or two of a
    chart), its extremes: range, spikes and envelope are drawn as from every record.

    Widths are powers of two so the fold stays small as the log grows: per curve key, the
    record of each bucket's smallest and largest value (:data:`_SLOT` numbers each; the last
    bucket's, still filling, in lists); when ``n`` outgrows ``B`` buckets (or a key gains its
    first value, so ``B`` shrinks), pairs of buckets merge into the buckets of twice the width,
    whose extremes are the extremes of the pair's. Every record (``rows``) is kept only while
    ``n <= limit``. (Widths of ``ceil(n / B)``, the rule before, move every bucket's bounds each
    time the width grows: their extremes could only come from every record. The price: between
    ``B / 2`` and ``B`` buckets per curve instead of ``B``.)
    """

    def __init__(self, limit: int = CURVE_RECORDS) -> None:
        self.figures = LogFigures()
        self.limit = limit
        self.rows: array | None = array("d")  # every record, while there are at most `limit`
        self.first: Any = _NO_RECORD
        self.last: Any = _NO_RECORD
        self.width = 1
        self.closed = 0  # the buckets before the last one, whose records are all in
        self.most = curve_buckets(0, limit)  # the most buckets: B for the curves so far
        self.curves: list[int] = []  # the positions in CURVE_KEYS of the keys with values
        self.lows: dict[int, array] = {}  # per curve, each closed bucket's record of its
        self.highs: dict[int, array] = {}  # smallest value, and of its largest
        # The last bucket's, by position in CURVE_KEYS: the smallest and largest value, records.
        self.low = [math.inf] * len(CURVE_KEYS)
        self.high = [-math.inf] * len(CURVE_KEYS)
        self.low_rows: list[Any] = [_NO_RECORD] * len(CURVE_KEYS)
        self.high_rows: list[Any] = [_NO_RECORD] * len(CURVE_KEYS)

    def add(self, record: dict[str, Any]) -> None:
        self.figures.add(record)
        index = self.figures.lines - 1
        values = [_number(record.get(key)) for key in CURVE_KEYS]
        row = [index, *[math.nan if v is None else v for v in values]]  # _number gives no NaN
        if index == 0:
            self.first = row
        self.last = row
        if self.rows is not None:
            if index < self.limit:
                self.rows.extend(row)
            else:
                self.rows = None
        if len(self.curves) < len(CURVE_KEYS) - 1:
            for position in range(1, len(CURVE_KEYS)):
                if values[position] is not None and position not in self.lows:
                    self.curves.append(position)
                    self.lows[position] = _NO_RECORD * self.closed
                    self.highs[position] = _NO_RECORD * self.closed
                    self.most = curve_buckets(len(self.curves), self.limit)
        while index >= self.width * self.most:  # ceil((index + 1) / width) > most
            self._double()
        if index // self.width > self.closed:
            self._close()
        low, high = self.low, self.high
        for position in self.curves:
            value = values[position]
            if value is None:
                continue
            if value < low[position]:  # strictly: the first record of equal values stays
                low[position] = value
                self.low_rows[position] = row
            if value > high[position]:
                high[position] = value
                self.high_rows[position] = row

    def _close(self) -> None:
        """The last bucket is full: its records go with the closed ones; a new one starts."""
        for position in self.curves:
            self.lows[position].extend(self.low_rows[position])
            self.highs[position].extend(self.high_rows[position])
        self.closed += 1
        self.low = [math.inf] * len(CURVE_KEYS)
        self.high = [-math.inf] * len(CURVE_KEYS)
        self.low_rows = [_NO_RECORD] * len(CURVE_KEYS)
        self.high_rows = [_NO_RECORD] * len(CURVE_KEYS)

    def _double(self) -> None:
        """Buckets of twice the width: each pair's extremes, the earlier record on a tie."""
        self.width *= 2
        if self.closed % 2:  # the last closed bucket and the filling one are one bucket now
            self.closed -= 1
            for position in self.curves:
                value = 1 + position
                lows, highs = self.lows[position], self.highs[position]
                earlier_low, earlier_high = lows[-_SLOT:], highs[-_SLOT:]
                del lows[-_SLOT:], highs[-_SLOT:]
                if earlier_low[0] >= 0 and earlier_low[value] <= self.low[position]:
                    self.low[position] = earlier_low[value]
                    self.low_rows[position] = earlier_low
                if earlier_high[0] >= 0 and earlier_high[value] >= self.high[position]:
                    self.high[position] = earlier_high[value]
                    self.high_rows[position] = earlier_high
        self.closed //= 2
        for position in self.curves:
            self.lows[position] = _merge_pairs(self.lows[position], position, lower=True)
            self.highs[position] = _merge_pairs(self.highs[position], position, lower=False)

    def snapshot(self) -> tuple[LogFigures, Curves]:
        if self.rows is not None:
            rows = self.rows
            settled = len(rows) // _SLOT
        else:
            kept = {int(self.first[0]): self.first, int(self.last[0]): self.last}
            for position in self.curves:
                for extremes in (self.lows[position], self.highs[position]):
                    for at in range(0, len(extremes), _SLOT):
                        if extremes[at] >= 0:
                            kept[int(extremes[at])] = extremes[at : at + _SLOT]
                for last in (self.low_rows[position], self.high_rows[position]):
                    if last[0] >= 0:
                        kept[int(last[0])] = last
            rows = array("d")
            for index in sorted(kept):
                rows.extend(kept[index])
            # The first record and the closed buckets' come before the last bucket's.
            settled = sum(index < self.closed * self.width for index in kept)
        curves = Curves()
        for position, key in enumerate(CURVE_KEYS):
            values = rows[1 + position :: _SLOT]
            curves[key] = [None if v != v else v for v in values]
        curves.settled = settled
        return self.figures.snapshot(), curves


class Curves(dict):
    """A log's curves by key (:data:`CURVE_KEYS`), each a list of values (``None`` where a record
    has none), and ``settled``: how many of their first records stay as they are while the log
    grows (until its bucket width doubles, or the file is rewritten). While every record is
    kept, all of them; after, the first record and the closed buckets' extremes. A run page's
    poll sends only the records after those its page has (``page.RunText``)."""

    settled: int = 0


def _merge_pairs(extremes: array, position: int, lower: bool) -> array:
    """Each pair of consecutive buckets' records (``_SLOT`` numbers each) as one bucket's: the
    record of the smaller (``lower``) or larger value at ``position``, the first on a tie."""
    merged = array("d")
    value = 1 + position
    for at in range(0, len(extremes), 2 * _SLOT):
        first = extremes[at : at + _SLOT]
        second = extremes[at + _SLOT : at + 2 * _SLOT]
        better = second and (
            first[0] < 0
            or (second[value] < first[value] if lower else second[value] > first[value])
        )
        if better and second[0] >= 0:
            first = second
        merged.extend(first)
    return merged


class LatestBatchRecords:
    """``batch.jsonl``'s newest record per workspace (a prompt retried appends a new line). A
    ``skipped`` line (the run had finished, or another worker sharing the list held it or had
    failed it) is not an attempt: it does not hide the attempt recorded before it."""

    def __init__(self) -> None:
        self.latest: dict[str, dict[str, Any]] = {}

    def add(self, record: dict[str, Any]) -> None:
        name = record.get("workspace")
        skipped = record.get("status") == "skipped"
        if isinstance(name, str) and not (skipped and name in self.latest):
            self.latest[name] = record

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return dict(self.latest)


# Bytes kept from before where a log was parsed to: a file that grew but does not hold them there
# any more was rewritten (a resume's truncated log is a new file, a copy may rewrite one in place),
# and is parsed again from its start.
_TAIL_BYTES = 64
# How much of a log is read at a time.
_PARSE_BLOCK_BYTES = 1 << 18
# A line of which more than this is read without its end is no record of dreamtext's (a log line
# is ~400 bytes, a batch line a few KB): it is passed over up to its newline, not kept. A log of
# NUL bytes without a newline (what a crash can leave of a file on some file systems) was kept
# whole as the start of one line, copied again at each block read: 64 MB took 5.4 s of CPU and
# 1 GB would take ~20 min, holding every gallery poll.
_LINE_MAX_BYTES = 1 << 20


class _Followed:
    """One file as far as it was parsed: its identity and size and time when it was stat'ed,
    where its last complete line ends (``parsed_to``), the bytes before that, the fold."""

    __slots__ = ("fold", "identity", "in_long_line", "lock", "parsed_to", "seen", "tail")

    def __init__(self, fold: Any) -> None:
        self.fold = fold
        self.identity: tuple[int, int] | None = None
        self.seen: tuple[int, int] | None = None  # (mtime_ns, size)
        self.parsed_to = 0
        self.tail = b""
        # Whether the bytes from parsed_to up to the next newline end a line passed over
        # (_LINE_MAX_BYTES).
        self.in_long_line = False
        self.lock = threading.Lock()


class JsonlFollower:
    """Per ``.jsonl`` file, a fold (``make_fold()``: an object with ``add(record)`` and
    ``snapshot()``) over its JSON objects, one per complete line (a line being written, without
    its newline yet, or not an object, is left out), kept up to date as the file changes:

    * unchanged (same file, time and size): the fold as it is;
    * grown, the same file (device and inode) still holding the bytes before where it was
      parsed to: only the lines after that are parsed;
    * anything else (replaced, truncated, rewritten in place): parsed again from its start.

    A file that is gone is forgotten when it is asked for, and by :meth:`forget_gone` (a
    removed run's log is never asked for again). ``max_files``: keep at most that many, the
    least recently asked for dropped first. Safe to share between threads.
    """

    def __init__(self, make_fold: Callable[[], Any], max_files: int | None = None) -> None:
        self.make_fold = make_fold
        self.max_files = max_files
        self._files: OrderedDict[Path, _Followed] = OrderedDict()
        self._lock = threading.Lock()
        self._swept = time.monotonic()

    def read(self, path: Path) -> Any:
        """The fold's ``snapshot()`` over ``path``'s records (over none when it cannot be read)."""
        with self._lock:
            followed = self._files.get(path)
            if followed is None:
                followed = self._files[path] = _Followed(self.make_fold())
                while self.max_files is not None and len(self._files) > self.max_files:
                    self._files.popitem(last=False)
            self._files.move_to_end(path)
        with followed.lock:
            if self._update(followed, path):
                return followed.fold.snapshot()
        with self._lock:
            if self._files.get(path) is followed:
                del self._files[path]
        return self.make_fold().snapshot()

    def __len__(self) -> int:
        return len(self._files)

    def __contains__(self, path: Path) -> bool:
        return path in self._files

    def _update(self, followed: _Followed, path: Path) -> bool:
        """Bring ``followed`` up to ``path``'s contents; ``False`` when it cannot be read."""
        try:
            with open(path, "rb") as file:
                st = os.fstat(file.fileno())
                identity, seen = (st.st_dev, st.st_ino), (st.st_mtime_ns, st.st_size)
                if identity == followed.identity and seen == followed.seen:
                    return True
                grown = (
                    identity == followed.identity
                    and st.st_size >= followed.parsed_to
                    and st.st_size != followed.seen[1]
                )
                if not (grown and self._parse(followed, file, followed.tail)):
                    followed.fold, followed.parsed_to, followed.tail = self.make_fold(), 0, b""
                    followed.in_long_line = False
                    self._parse(followed, file, b"")
                followed.identity, followed.seen = identity, seen
        except OSError:
            return False
        return True

    @staticmethod
    def _parse(followed: _Followed, file: Any, tail: bytes) -> bool:
        """Parse the complete lines after ``followed.parsed_to`` into its fold; ``False`` (and
        nothing parsed) when the file does not hold ``tail`` just before that. Read a block at
        a time: a 100,000-line log is 37 MB, which read whole took ~120 MB to parse. A line of
        which more than :data:`_LINE_MAX_BYTES` is read without its end is passed over."""
        file.seek(followed.parsed_to - len(tail))
        if file.read(len(tail)) != tail:
            return False
        pending = b""  # the start of a line whose end is in the next block
        while block := file.read(_PARSE_BLOCK_BYTES):
            if followed.in_long_line:  # pending is empty: the long line's rest is passed over
                newline = block.find(b"\n")
                skipped = len(block) if newline < 0 else newline + 1
                _parsed_past(followed, block[:skipped])
                followed.in_long_line = newline < 0
                block = block[skipped:]
            data = pending + block
            end = data.rfind(b"\n") + 1
            if end:
                _add_lines(followed.fold, data[:end])
                _parsed_past(followed, data[:end])
            pending = data[end:]
            if len(pending) > _LINE_MAX_BYTES:
                _parsed_past(followed, pending)
                followed.in_long_line, pending = True, b""
        return True

    def forget_gone(self) -> None:
        """Forget the files that are gone, at most every :data:`FORGET_GONE_LOGS_EVERY_S` (a stat of
        each file kept)."""
        now = time.monotonic()
        with self._lock:
            if now - self._swept < FORGET_GONE_LOGS_EVERY_S:
                return
            self._swept = now
            paths = list(self._files)
        gone = [path for path in paths if not os.path.isfile(path)]
        with self._lock:
            for path in gone:
                self._files.pop(path, None)


def _add_lines(fold: Any, lines: bytes) -> None:
    """Add the JSON object of each of ``lines`` (whole lines, each ending in a newline) to
    ``fold``; a line that is not one is left out."""
    # Whole lines: "\n" is no part of any other character's UTF-8 bytes.
    for line in lines.decode("utf-8", errors="replace").split("\n")[:-1]:
        try:
            # A file saved by an editor that starts it with a BOM: batch's own reader
            # (json.loads of the bytes) reads its first record; so does this.
            record = json.loads(line.removeprefix("\ufeff"))
        except (ValueError, RecursionError):  # not JSON; an int of 4,300+ digits; [[[[…
            continue
        if isinstance(record, dict):
            fold.add(record)


def _parsed_past(followed: _Followed, data: bytes) -> None:
    """Move ``followed`` past ``data``, the bytes after where it was parsed to."""
    followed.parsed_to += len(data)
    followed.tail = (followed.tail + data[-_TAIL_BYTES:])[-_TAIL_BYTES:]


# Every run's log.jsonl and descriptor/log.jsonl (the gallery's and the status's figures); the
# curves of the runs whose page was asked for lately; each root's batch.jsonl.
_log_figures = JsonlFollower(LogFigures)
_log_curves = JsonlFollower(LogCurves, max_files=64)
_batch_records = JsonlFollower(LatestBatchRecords)


def forget_gone_logs() -> None:
    """Forget the logs that are gone (:meth:`JsonlFollower.forget_gone`), and the change times of
    the runs that are (:meth:`ChangeClock.forget_gone`), at most every
    :data:`FORGET_GONE_LOGS_EVERY_S`; each gallery poll asks."""
    swept = _log_figures._swept
    for follower in (_log_figures, _log_curves, _batch_records):
        follower.forget_gone()
    if _log_figures._swept != swept:
        _change_clock.forget_gone()


def log_figures(path: Path) -> LogFigures:
    """A log's :class:`LogFigures`, parsed only as far as it grew since last asked."""
    return _log_figures.read(path)


def log_curves(path: Path) -> tuple[LogFigures, Curves]:
    """A log's :class:`LogFigures` and its curves (:class:`LogCurves`), parsed only as far as it
    grew since last asked (for the 64 logs asked for last; any other is parsed whole)."""
    return _log_curves.read(path)


def read_log_curves(path: Path) -> tuple[LogFigures, Curves]:
    """:func:`log_curves`, parsed whole and kept nowhere (a static export reads each log once)."""
    return JsonlFollower(LogCurves).read(path)


# --------------------------------------------------------------------------------------- reading


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # as a log line (JsonlFollower._parse)
        return None
    return data if isinstance(data, dict) else None


def read_status_file(path: Path) -> dict[str, Any] | None:
    """:func:`read_json` of a run's status.json, read again while a write in place tears it
    (:func:`dreamtext.processes.read_status_json`)."""
    try:
        data = read_status_json(path)
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _number(value: Any) -> float | None:
    """A JSON number of a run's file as it is written there (a step stays ``12``, not ``12.0``,
    on the pages), ``None`` for anything else and for a float that is not finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int):
        return value
    return value if math.isfinite(value) else None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


@dataclass
class Run:
    """Everything the pages show of one run. File paths are relative to the workspace."""

    id: str
    name: str
    workspace: str | None
    kind: str = "text"
    prompt: str | None = None
    sentence: str | None = None
    trained_sentence: str | None = None
    # A ``text --diverse`` run's own prompt: config.json's ``prompt`` becomes the learned
    # sentence once the descriptor has trained, and the prompt typed was then nowhere on the page.
    diverse_prompt: str | None = None
    status: dict[str, Any] = field(default_factory=dict)
    batch: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    log_lines: int = 0
    series: dict[str, list[float | None]] = field(default_factory=dict)
    descriptor_steps: list[float | None] = field(default_factory=list)
    descriptor_loss: list[float | None] = field(default_factory=list)
    # How many of the first records of the series (and of the descriptor's) stay as they are while
    # the log grows (Curves.settled).
    series_settled: int = 0
    descriptor_settled: int = 0
    previews: list[dict[str, Any]] = field(default_factory=list)
    video: dict[str, str] = field(default_factory=dict)
    mesh: dict[str, str] = field(default_factory=dict)
    mesh_stats: dict[str, Any] | None = None
    data_files: list[str] = field(default_factory=list)
    source_image: str | None = None
    # The mesh, turntable and final preview files that are there but outside the workspace
    # (``video`` a link to another disk): not served, and the page says so.
    linked_out: list[str] = field(default_factory=list)
    updated: float | None = None
    mtimes: dict[str, float] = field(default_factory=dict)

    def files(self) -> list[str]:
        """Every workspace file the pages link to."""
        out = [p["path"] for p in self.previews]
        out += list(self.video.values()) + list(self.mesh.values()) + self.data_files
        if self.source_image:
            out.append(self.source_image)
        return out

    @property
    def thumbnail(self) -> str | None:
        """The card's picture (:meth:`picture`'s file)."""
        picture = self.picture()
        return picture[0] if picture else None

    def picture(self) -> tuple[str, dict[str, Any]] | None:
        """The card's picture and what it is, for its caption and ``alt``: the turntable GIF
        (plays in an ``<img>``; ``{"kind": "turntable"}``), else the last preview (``{"kind":
        "preview", "step": 30}``, ``step`` ``None`` for the final one), else (an image run before
        its text stage) the source image (``{"kind": "source"}``); ``None`` where it has none."""
        if "gif" in self.video:
            return self.video["gif"], {"kind": "turntable"}
        if self.previews:
            return self.previews[-1]["path"], {"kind": "preview", "step": self.previews[-1]["step"]}
        if self.source_image:
            return self.source_image, {"kind": "source"}
        return None


def read_run(location: RunLocation, with_series: bool = True, follow_logs: bool = True) -> Run:
    """Read one run's files. ``with_series=False`` skips the per-step series (the gallery);
    ``follow_logs=False`` keeps nothing of its logs for the next read (:func:`read_log_curves`)."""
    run, status_inputs = _read_files(location, with_series, follow_logs)
    run.status = status_inputs.status(run)
    return run


@dataclass(frozen=True)
class _StatusInputs:
    """What a run's status is judged from besides its ``Run``: what its files held when they were
    read. The judgement also asks the clock and the processes of this machine, so it is made
    again at every poll (:meth:`status`); these stay until the files change."""

    status_file: dict[str, Any] | None
    last_record: dict[str, Any]
    log_peak_mem: float | None
    folder: Path | None
    stage: str = "text"
    descriptor_step: float | None = None
    export_progress: dict[str, Any] | None = None

    def status(self, run: Run) -> dict[str, Any]:
        out = _status(
            run,
            self.status_file,
            self.last_record,
            self.log_peak_mem,
            self.folder,
            self.stage,
            self.descriptor_step,
        )
        if self.export_progress is not None and self.folder is not None:
            _add_export(out, self.export_progress, self.folder / PROGRESS_FILE)
        return out


def _add_export(status: dict[str, Any], record: dict[str, Any], path: Path) -> None:
    """Add to ``status`` what an export of the run that still works (``record``, its progress
    file ``path``: :mod:`dreamtext.exportprogress`) is doing: ``export`` (its stage, ``done`` of
    ``total`` pieces, when it started, its process) and the activity ``exporting · turntable
    7/15``. Judged at every poll, as a status is: a killed exporter's file shows nothing. The
    run's own state stays status.json's (a finished run re-exported is still ``finished``)."""
    if not export_alive(path, record):
        return
    status["export"] = {
        key: record.get(key) for key in ("stage", "done", "total", "started", "step", "host", "pid")
    }
    status["activity"] = f"exporting · {progress_words(record)}"


def _read_files(
    location: RunLocation, with_series: bool, follow_logs: bool = True
) -> tuple[Run, _StatusInputs]:
    """One run's files as a ``Run`` without its status, and what its status is judged from."""
    run = Run(
        id=location.id,
        name=location.name,
        workspace=str(location.path) if location.path else None,
        batch=location.batch,
    )
    folder = location.path
    if folder is None:
        run.prompt = _text((location.batch or {}).get("prompt"))
        run.kind = (location.batch or {}).get("kind") or "text"
        return run, _StatusInputs(None, {}, None, None)

    run.config = read_json(folder / "config.json")
    status_file = read_status_file(folder / "status.json")
    if with_series:
        curves_of = log_curves if follow_logs else read_log_curves
        log, curves = curves_of(folder / "log.jsonl")
        run.series = {"step": curves["step"]}
        for key in SERIES_KEYS:
            if any(v is not None for v in curves[key]):
                run.series[key] = curves[key]
        descriptor_log, descriptor_curves = curves_of(folder / DESCRIPTOR_LOG)
        run.descriptor_steps = descriptor_curves["step"]
        run.descriptor_loss = descriptor_curves["loss"]
        run.series_settled = getattr(curves, "settled", 0)
        run.descriptor_settled = getattr(descriptor_curves, "settled", 0)
    else:
        log = log_figures(folder / "log.jsonl")
    run.log_lines = log.lines

    # Text only: a hand-edited or foreign file's number or list would break the page's sorting
    # and filtering, which compare prompts as strings.
    if run.config:
        run.prompt = _text(run.config.get("prompt"))
    if run.prompt is None and location.batch:
        run.prompt = _text(location.batch.get("prompt"))
    diverse = (run.config or {}).get("diverse")
    if isinstance(diverse, dict):
        run.diverse_prompt = _text(diverse.get("prompt"))
    sentence = read_json(folder / SENTENCE_FILE)
    if sentence is not None:
        run.sentence = _text(sentence.get("sentence"))
        run.trained_sentence = _text(sentence.get("trained_sentence"))
    run.source_image = _source_image(folder, (sentence or {}).get("image"))
    sections = any(name in (run.config or {}) for name in IMAGE_SECTIONS)
    batch_image = (location.batch or {}).get("kind") == "image"
    # `dreamtext describe` running, or stopped before its sentence.json: only its status says so.
    image_phase = (status_file or {}).get("phase") in IMAGE_PHASES
    if sentence is not None or run.source_image or sections or batch_image or image_phase:
        run.kind = "image"

    run.previews = _previews(folder)
    # Each of these files looked at once: shown where inside, named where outside.
    places = {rel: _file_place(folder, rel) for rel in LINKED_OUT_CHECKED}
    run.video = {k: rel for k, rel in VIDEO_FILES.items() if places[rel] == "inside"}
    run.mesh = {k: rel for k, rel in MESH_FILES.items() if places[rel] == "inside"}
    run.mesh_stats = read_json(folder / "mesh" / "mesh.json")
    run.data_files = [rel for rel in DATA_FILES if _is_file_inside(folder, rel)]
    run.linked_out = [rel for rel, place in places.items() if place == "outside"]
    for rel in run.files():
        mtime = _mtime(folder / rel)
        if mtime is not None:
            run.mtimes[rel] = mtime
    # The newest change of anything the run writes: a stale status.json, a fresh preview.
    changed = [_mtime(folder / rel) for rel in ACTIVITY_PATHS] + list(run.mtimes.values())
    run.updated = max((m for m in changed if m is not None), default=None)
    stage = "text" if run.kind == "text" else image_stage(folder, status_file)
    descriptor_step = None
    if stage == "descriptor":
        if not with_series:
            descriptor_log = log_figures(folder / DESCRIPTOR_LOG)
        descriptor_step = descriptor_log.last_step
    inputs = _StatusInputs(
        status_file,
        log.last,
        log.peak_mem,
        folder,
        stage,
        descriptor_step,
        read_progress(folder),
    )
    return run, inputs


# Besides the files the pages link to (Run.files) and the files and folders whose time says how
# recently a run did anything (ACTIVITY_PATHS): everything _read_files reads or lists for the
# gallery. A folder's time changes when a file in it is made, replaced or removed.
READ_PATHS = tuple(dict.fromkeys((".", *ACTIVITY_PATHS, *DATA_FILES, PROGRESS_FILE)))


@dataclass(frozen=True)
class _GalleryEntry:
    """A run as the gallery read it, with the stat of each file and folder it was read from:
    the first ``every_poll`` of ``paths`` are its folders and the files its card is made of,
    the others its other files (:data:`LINKED_FILES_EVERY_POLLS`)."""

    location: RunLocation
    run: Run
    status_inputs: _StatusInputs
    paths: tuple[str, ...]
    stamps: tuple[tuple[int, ...] | None, ...]
    settled: bool
    every_poll: int = 0
    turn: int = 0  # the polls at which its linked files are stat'ed: n % EVERY_POLLS == turn


def _stamp(path: str) -> tuple[int, ...] | None:
    """What tells a file's versions apart: its time of change, size, inode and type."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_mode)


class GalleryCache:
    """The gallery's runs (``read_run(location, with_series=False)``), each read again only when
    one of the files or folders it was read from changed, or its batch line did: a poll of a
    gallery of a finished sweep stats its files and reads none (of a run that is not running,
    the files its card is not made of at one poll in :data:`LINKED_FILES_EVERY_POLLS`).

    A run's status is judged again at every poll from what its files held (:class:`_StatusInputs`):
    whether a running run is quiet depends on the clock, whether its process is gone on the
    processes of this machine. Safe to share between the server's threads.
    """

    def __init__(self) -> None:
        # Per run id: its entry, and the Run last handed out for it (with its status).
        self._entries: dict[str, tuple[_GalleryEntry, Run]] = {}
        self._lock = threading.Lock()
        self._polls = 0

    def runs(self, locations: list[RunLocation]) -> list[Run]:
        """The runs at ``locations``. A run whose entry and status are those of the last call is
        the same ``Run`` object as then (``page.GalleryText`` keeps its JSON by that); callers
        must not change the ``Run``s."""
        with self._lock:
            entries = self._entries
            self._polls += 1
            turn = self._polls % LINKED_FILES_EVERY_POLLS
        current: dict[str, tuple[_GalleryEntry, Run]] = {}
        for location in locations:
            entry, shown = entries.get(location.id, (None, None))
            if entry is not None:
                # A run that is not running: its linked files at its turn only.
                every = shown.status.get("state") == "running" or entry.turn == turn
                if not self._still_valid(entry, location, every):
                    entry = None
            if entry is None:
                entry = _read_gallery_entry(location)
            status = entry.status_inputs.status(entry.run)
            if shown is None or entry is not entries[location.id][0] or shown.status != status:
                shown = replace(entry.run, status=status)
            current[location.id] = (entry, shown)
        with self._lock:  # runs no longer listed are forgotten
            self._entries = current
        forget_gone_logs()  # and, within a minute, what was kept of their logs
        return [current[location.id][1] for location in locations]

    @staticmethod
    def _still_valid(entry: _GalleryEntry, location: RunLocation, linked: bool = True) -> bool:
        """Whether ``entry`` still holds for the run at ``location``: what it was read from has
        the same stat (of its linked files too where ``linked``)."""
        if not entry.settled or entry.location != location:
            return False
        # _stamp, inline: this loop stats the kept paths of every run at every poll.
        stat = os.stat
        paths, stamps = entry.paths, entry.stamps
        if not linked:
            paths, stamps = paths[: entry.every_poll], stamps[: entry.every_poll]
        for path, stamp in zip(paths, stamps, strict=True):
            try:
                st = stat(path)
            except (OSError, ValueError):
                if stamp is not None:
                    return False
                continue
            if stamp != (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_mode):
                return False
        return True


def _read_gallery_entry(location: RunLocation) -> _GalleryEntry:
    """Read a run for the gallery and stat what it was read from: the fixed files and folders
    first (their contents are read after, so a change while reading shows as a new stat next
    time), the files the run links to after (found by reading).

    Each path is stat'ed once, and a path that is absent is left out where the folder it would
    appear in (or the nearest folder above that exists) is kept: making, renaming or removing
    an entry changes its folder's time, so that folder's stat stands for its absent entries
    (an image run's seven descriptor paths in a text run, say). The files the card is not made
    of come last: a run that is not running has them stat'ed at one poll in
    :data:`LINKED_FILES_EVERY_POLLS`."""
    started = time.time()
    folder = location.path
    if folder is None:
        run, status_inputs = _read_files(location, with_series=False)
        return _GalleryEntry(location, run, status_inputs, (), (), True)
    stamps = {rel: _stamp(os.path.join(folder, rel)) for rel in READ_PATHS}
    run, status_inputs = _read_files(location, with_series=False)
    linked = [rel for rel in run.files() if rel not in stamps]
    if run.kind == "image":
        # The image sentence.json names, which may appear after it (only then is it linked).
        recorded = (read_json(folder / SENTENCE_FILE) or {}).get("image")
        if isinstance(recorded, str) and recorded and recorded not in stamps:
            linked.append(recorded)
    for rel in linked:
        stamps[rel] = _stamp(os.path.join(folder, rel))
    # A linked file changed between its reading and its stat: its time in run.mtimes is stale.
    consistent = all(
        (stamp := stamps[rel]) is not None
        and abs(stamp[0] / 1e9 - run.mtimes.get(rel, -1.0)) < 1e-6
        for rel in run.files()
    )
    # The change time (ctime), not the mtime: every write sets it to the clock's time, while an
    # mtime may be set back or ahead (a copy that keeps times, a node with another clock).
    newest = max((s[1] for s in stamps.values() if s), default=0)
    settled = consistent and newest / 1e9 < started - STAT_SETTLES_AFTER_S
    covered = {
        rel
        for rel, stamp in list(stamps.items())
        if stamp is None and _covered(rel, stamps, folder)
    }

    # The folders (the workspace's too), the files the card is made of and its picture first;
    # the other files after (LINKED_FILES_EVERY_POLLS). A path that is absent and stands for
    # itself (outside the workspace, say) goes first too.
    def each_poll(rel: str) -> bool:
        stamp = stamps[rel]
        return stamp is None or S_ISDIR(stamp[4]) or rel in CARD_FILES or rel == run.thumbnail

    kept = [rel for rel in stamps if rel not in covered and each_poll(rel)]
    every_poll = len(kept)
    kept += [rel for rel in stamps if rel not in covered and not each_poll(rel)]
    paths = tuple(os.path.join(folder, rel) for rel in kept)
    turn = zlib.crc32(location.id.encode("utf-8", "surrogateescape")) % LINKED_FILES_EVERY_POLLS
    return _GalleryEntry(
        location,
        run,
        status_inputs,
        paths,
        tuple(stamps[rel] for rel in kept),
        settled,
        every_poll,
        turn,
    )


def _covered(rel: str, stamps: dict[str, tuple[int, ...] | None], folder: Path) -> bool:
    """Whether an absent ``rel`` would show in ``stamps`` by appearing: the nearest folder above
    it that exists, inside the workspace, is stat'ed in ``stamps`` (added to it when not yet)."""
    if os.path.isabs(rel) or ".." in rel.split("/"):
        return False  # outside the workspace, or may be: stat'ed itself
    parent = posixpath.dirname(rel) or "."
    while True:
        if parent not in stamps:
            stamps[parent] = _stamp(os.path.join(folder, parent))
        if stamps[parent] is not None:
            return True
        if parent == ".":
            return False  # the workspace itself is gone
        parent = posixpath.dirname(parent) or "."


def image_stage(folder: Path, status_file: dict[str, Any] | None = None) -> str:
    """Which stage of image→3D ``folder``'s run is in: status.json's phase when it is one of
    :data:`IMAGE_PHASES`, else what the files show (runs from before those phases were recorded):

    ``"describe"``   only the sentence (describe writes it at its end; the descriptor comes next)
    ``"descriptor"`` the descriptor's training has made its checkpoints folder or its log
    ``"text"``       its learned embedding is saved, or the trainer has written its files
    """
    phase = (status_file or {}).get("phase")
    if phase in IMAGE_PHASES:
        return phase
    if any((folder / name).is_file() for name in ("log.jsonl", "status.json")):
        return "text"
    if (folder / LEARNED_EMBEDS).is_file():
        return "text"
    if (folder / DESCRIPTOR_LOG).is_file() or (folder / DESCRIPTOR_CHECKPOINTS).is_dir():
        return "descriptor"
    return "describe"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _error(value: Any) -> str | None:
    """An error as the cards show it: its text (a file's other JSON values as JSON)."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def _is_file_inside(folder: Path, rel: str) -> bool:
    return _file_place(folder, rel) == "inside"


def _file_place(folder: Path, rel: str) -> str | None:
    """Where the file ``rel`` of ``folder`` lies: ``"inside"`` the folder (served),
    ``"outside"`` it through a link (not served), ``None`` where it is no file."""
    path = folder / rel
    try:
        if not path.is_file():
            return None
        resolved = path.resolve()
    except OSError:
        return None
    if not resolved.is_relative_to(folder):
        return "outside"
    # A link to another kind of file, or a hidden one (a preview linking to checkpoints/last.pt,
    # .export-progress.json), is no file of the run's to show or copy into a --static folder.
    if resolved.suffix.lower() != path.suffix.lower() or hidden_inside(folder, resolved):
        return None
    return "inside"


def hidden_inside(folder: Path, path: Path) -> bool:
    """Whether ``path`` (inside ``folder``) is hidden there, or lies in a hidden folder."""
    return any(part.startswith(".") for part in path.relative_to(folder).parts)


def _previews(folder: Path) -> list[dict[str, Any]]:
    """``previews/step_XXXXXX.png`` in step order, then ``final.png``: those that are files
    inside the run (:func:`_file_place`).

    Where the run's folder is its own real path and ``previews`` a folder, not a link, a file
    listed there that is no link is inside the run as it is listed, and only the links among
    them are resolved: resolving each (a lookup of every folder above it) was 1.1 ms of each
    poll of a 10,000-step run's page, for its 38 previews. Nothing is kept between calls."""
    previews = folder / "previews"
    try:
        with os.scandir(previews) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
        plain = S_ISDIR(os.lstat(previews).st_mode)
    except OSError:
        return []
    plain = plain and os.path.realpath(folder) == os.fspath(folder)

    def inside(entry: os.DirEntry) -> bool:
        try:
            if plain and not entry.is_symlink():
                return entry.is_file(follow_symlinks=False)
        except OSError:
            pass
        return _is_file_inside(folder, f"previews/{entry.name}")

    out = []
    final = False
    for entry in entries:
        match = _STEP_PREVIEW.fullmatch(entry.name)
        if match and inside(entry):
            out.append({"step": int(match.group(1)), "path": f"previews/{entry.name}"})
        elif entry.name == "final.png":
            final = inside(entry)
    out.sort(key=lambda p: p["step"])
    if final:
        out.append({"step": None, "path": "previews/final.png"})
    return out


def is_linked_file(folder: Path, rel: str) -> bool:
    """Whether ``rel`` (a path inside the run ``folder``) is one a page of the run can link to
    (:meth:`Run.files`), by its name: a step or final preview, the video, the mesh, the records,
    the source image its ``sentence.json`` names. Whether it is a file inside the run that is
    not hidden is the server's check. Judged without reading the run's log, as each file of a
    page is asked for: a notes.json or an image of the user's own in the folder is none."""
    if rel in _LINKED_NAMES:
        return True
    folder_name, _, name = rel.partition("/")
    if folder_name == "previews" and _STEP_PREVIEW.fullmatch(name):
        return True
    return rel == _source_image(folder, (read_json(folder / SENTENCE_FILE) or {}).get("image"))


def _source_image(folder: Path, recorded: Any) -> str | None:
    """The image of an image→3D run, when it lies inside the workspace (``--diverse`` samples it
    into ``diverse/``; ``descriptor/source.*`` where a run keeps a copy). An image elsewhere on
    disk is not served: the viewer serves nothing outside the workspaces it was given."""
    candidates = []
    if isinstance(recorded, str) and recorded:
        candidates.append(Path(recorded))
    candidates += [folder / "descriptor" / f"source{s}" for s in SOURCE_IMAGE_SUFFIXES]
    for path in candidates:
        path = path if path.is_absolute() else folder / path
        if path.suffix.lower() not in SOURCE_IMAGE_SUFFIXES:
            continue
        try:
            resolved = path.resolve()
        except OSError:
            continue
        if (
            resolved.is_file()
            and resolved.is_relative_to(folder)
            and resolved.suffix.lower() in SOURCE_IMAGE_SUFFIXES
            and not hidden_inside(folder, resolved)
        ):
            return resolved.relative_to(folder).as_posix()
    return None


def status_of(
    run: Run,
    status_file: dict[str, Any] | None,
    records: list[dict[str, Any]],
    folder: Path | None,
    stage: str = "text",
    descriptor_step: float | None = None,
) -> dict[str, Any]:
    """running / finished / failed / interrupted (or a batch's skipped), with steps, seconds and
    peak GPU memory, from the first of: ``status.json``, the root's ``batch.jsonl`` line, the files.

    ``source`` says which one; ``inferred`` marks figures estimated from the files. ``stage`` is
    image→3D's (``sample``, ``describe``, ``descriptor``, ``text``; a text run's is ``text``),
    ``phase`` status.json's, ``activity`` what the run is doing, in words. In the stages before
    text→3D, status.json's step and iters are the descriptor's (``descriptor_step``,
    ``descriptor_iters``); ``step`` is then the text stage's (none yet) and ``iters`` its config's.
    ``seconds`` and ``gpu_mem_mib`` are the whole run's, every stage and attempt, where status.json
    records them (``total_seconds``, ``peak_gpu_mem_mib``), and ``stage_seconds`` each stage's time.

    A running run's status.json is written at its start and then at each log line, so the files
    may be fresher: its step and peak memory are the largest of status.json's and the log's, and
    it is quiet (``quiet_minutes``) only when nothing the run writes has changed for a while (by
    this viewer's clock, whatever the file server's: :class:`ChangeClock`). A
    running run whose process, of this machine, is gone (``process_gone``, its pid) ended
    without recording how: killed without warning, or its last status.json did not fit on a
    full disk (:func:`~dreamtext.runstatus.write_last_status`). It is shown ``interrupted``.
    So is a copy of a run made while it ran (``copy``; :func:`_copy_of_a_running_run`), stopped
    at the step it was copied at, with the pid of the original's process: ``process_elsewhere``
    while it runs, ``process_ended`` once it has ended (not ``process_gone``: the copy's process
    was not killed).
    """
    figures = LogFigures()
    for record in records:
        figures.add(record)
    return _status(run, status_file, figures.last, figures.peak_mem, folder, stage, descriptor_step)


def _copy_of_a_running_run(
    status_file: dict[str, Any], folder: Path | None, alive: bool | None
) -> bool:
    """Whether ``folder`` is a copy of a run's folder made while the run ran: its status.json
    (``running``, ``alive`` its process's :func:`~dreamtext.processes.record_alive`) names
    another folder (:func:`~dreamtext.processes.copied_folder`). Of a status.json from before
    it named its folder: its process lives here but holds the original's lock, not this one's
    (:func:`~dreamtext.processes.lock_held`; one open and flock, asked only then; a run that
    reads its own status holds its)."""
    if status_file.get("state") != "running" or folder is None:
        return False
    copied = copied_folder(status_file, folder)
    if copied is not None:
        return copied
    return bool(alive) and status_file["pid"] != os.getpid() and lock_held(folder) is False


def _status(
    run: Run,
    status_file: dict[str, Any] | None,
    last: dict[str, Any],
    log_peak_mem: float | None,
    folder: Path | None,
    stage: str,
    descriptor_step: float | None,
) -> dict[str, Any]:
    """:func:`status_of` from the log's last record and peak memory instead of the whole log."""
    iters = _number((run.config or {}).get("iters"))
    log_step = _number(last.get("step"))
    out: dict[str, Any] = {
        "state": None,
        "source": None,
        "step": log_step,
        "iters": iters,
        "seconds": None,
        "gpu_mem_mib": log_peak_mem,
        "error": None,
        "inferred": False,
        "stage": stage,
        "descriptor_step": descriptor_step,
        "descriptor_iters": None,
        "phase": None,
        "activity": None,
    }
    # Asked only where a judgement needs it: ChangeClock remembers the runs it is asked about.
    since_change = functools.partial(_change_clock.since_change, run, status_file, folder)
    if status_file is not None and isinstance(status_file.get("state"), str):
        out.update(source="status.json", state=status_file["state"])
        for key in ("step", "iters", "seconds", "gpu_mem_mib"):
            value = _number(status_file.get(key))
            if value is not None:
                out[key] = value
        # The whole run's time and peak, every stage and attempt, where status.json has them.
        total = _number(status_file.get("total_seconds"))
        if total is not None:
            out["seconds"] = total
            out["gpu_mem_mib"] = _number(status_file.get("peak_gpu_mem_mib"))
        stages = status_file.get("stages")
        if isinstance(stages, dict):
            out["stage_seconds"] = {
                name: seconds
                for name, figures in stages.items()
                if isinstance(figures, dict)
                and (seconds := _number(figures.get("seconds"))) is not None
            }
        out["error"] = _error(status_file.get("error"))
        # A failed run's checkpoint, where it is behind the step it failed at: --resume goes on
        # from it, not from the step shown (of the descriptor's training in that stage).
        saved = _number(status_file.get("saved_step"))
        if saved is not None and saved != _number(status_file.get("step")):
            out["saved_step"] = saved
        out["updated"] = status_file.get("updated")
        out["started"] = status_file.get("started")
        if isinstance(status_file.get("phase"), str):
            out["phase"] = status_file["phase"]
        if stage in IMAGE_PHASES:
            if stage == "descriptor":
                out["descriptor_step"] = _largest(out["step"], descriptor_step)
                out["descriptor_iters"] = out["iters"]
            out["step"], out["iters"] = None, iters
        alive = None
        if out["state"] == "running":
            # The run's lock is asked where its time alone says a reboot ended it: a twin.
            alive = record_alive(status_file) if folder is None else run_alive(status_file, folder)
        if _copy_of_a_running_run(status_file, folder, alive):
            # A copy (cp -r, rsync) made while its run ran: a snapshot at the step it was copied
            # at, whose status.json names the process of the original folder, running or ended
            # since (once ended, the copy said it had been killed).
            out.update(state="interrupted", copy=True)
            if alive is not None:
                out["process_elsewhere" if alive else "process_ended"] = status_file["pid"]
        elif alive is False:
            # Killed without warning (SIGKILL, the out-of-memory killer), or its end did not fit
            # on a full disk: stopped, resumable.
            out.update(state="interrupted", process_gone=status_file["pid"])
        if out["state"] == "running":
            out["step"] = _largest(out["step"], log_step)
            out["gpu_mem_mib"] = _largest(out["gpu_mem_mib"], log_peak_mem)
            if QUIET_AFTER_S < (quiet := since_change()) < math.inf:
                out["quiet_minutes"] = int(quiet // 60)  # whole: the page redraws rarely
        out["activity"] = _activity(out)
        return out
    batch = run.batch or {}
    # A batch line of an earlier attempt says nothing of the files a retry is writing now (its
    # "finished" has whole seconds, and the run's last files come just before the line).
    ended = iso_timestamp(batch.get("finished"))
    retried = ended is not None and run.updated is not None and run.updated > ended + 2
    if isinstance(batch.get("status"), str) and not (
        retried and since_change() < RUNNING_IF_CHANGED_WITHIN_S
    ):
        out.update(source="batch.jsonl", state=batch["status"], error=_error(batch.get("error")))
        for key in ("seconds", "gpu_mem_mib"):
            value = _number(batch.get(key))
            if value is not None:
                out[key] = value
        out["activity"] = _activity(out)
        return out
    out.update(source="files", inferred=True)
    its = _number(last.get("its"))
    if log_step and its:
        out["seconds"] = log_step / its
    trained = log_step is not None and iters is not None and log_step >= iters
    if stage == "describe" and run.source_image is None:
        # `dreamtext describe` alone: the sentence is all it makes (an image→3D run copies its
        # image into descriptor/ next).
        out["state"] = "finished"
    elif stage == "text" and (
        trained
        or any(kind in run.mesh for kind in ("glb", "obj", "ply"))  # exported: any --formats
        or any(p["step"] is None for p in run.previews)
    ):
        out["state"] = "finished"
    elif folder is not None and since_change() < RUNNING_IF_CHANGED_WITHIN_S:
        out["state"] = "running"
    else:
        out["state"] = "interrupted"
    out["activity"] = _activity(out)
    return out


class ChangeClock:
    """How long ago, in seconds of this viewer's clock, a run's files last changed.

    A run's files carry the file server's times (on NFS the server sets a file's mtime), and the
    viewer reads them on another machine (a login node): a file server whose clock is 10 minutes
    behind made every live run "no change for 10 min", one 10 minutes ahead never showed a dead
    one quiet. So file times are only compared with file times, and with the viewer's clock only
    through the viewer's own observations:

    * a run this viewer has seen before: its files' signature (their newest mtime, ``Run.updated``)
      is remembered with the viewer's time of the look that found it. The same signature at a
      later look: quiet for ``age then + (now - then)``, the viewer's clock alone. A newer one:
      the run wrote since the previous look, so it changed at most ``now - previous look`` ago
      (the estimate below, clamped to that).
    * the first look at a run (or a signature that went back: times set by a copy): an estimate.
      status.json's ``updated`` is the writer's clock at the write that gave status.json its
      mtime, so ``updated - mtime(status.json)`` is the writer's clock less the file server's,
      and the newest change is ``newest mtime + that`` on the writer's clock, which a cluster's
      nodes keep in step with the viewer's (NTP): ``age = now - (newest mtime + skew)``. Without
      ``updated`` (a run from before it, a run without status.json) the skew is taken as 0; a
      time in the future counts as just now. Either way the viewer's own clock takes over from
      the next look.

    Skews under :data:`CLOCK_SKEW_FROM_S` are ``updated``'s rounding and are ignored. Keyed by
    workspace; safe to share between threads.
    """

    def __init__(self, max_runs: int = CHANGE_CLOCK_RUNS) -> None:
        # Per workspace, the least recently asked about first: (signature, viewer time of the
        # look that found it, its age then, viewer time of the last look).
        self._seen: dict[Path, tuple[float, float, float, float]] = {}
        self._lock = threading.Lock()
        self.max_runs = max_runs

    def since_change(
        self, run: Run, status_file: dict[str, Any] | None, folder: Path | None
    ) -> float:
        """Seconds since ``run``'s files last changed (``inf`` when it has no file times)."""
        if run.updated is None:
            return math.inf
        now = time.time()
        estimate = max(0.0, now - (run.updated + _writer_skew(run, status_file)))
        if folder is None:
            return estimate
        with self._lock:
            before = self._seen.pop(folder, None)
            if before is None or run.updated < before[0]:
                age = estimate
                seen = (run.updated, now, age, now)
            elif run.updated == before[0]:
                age = before[2] + max(0.0, now - before[1])
                seen = (*before[:3], now)
            else:  # written since the last look
                age = min(estimate, max(0.0, now - before[3]))
                seen = (run.updated, now, age, now)
            self._seen[folder] = seen
            while len(self._seen) > self.max_runs:
                del self._seen[next(iter(self._seen))]
        return age

    def forget_gone(self) -> None:
        """Forget the runs whose workspace is gone (a removed run is never asked about again)."""
        with self._lock:
            keys = list(self._seen)
        gone = [key for key in keys if not os.path.isdir(key)]
        with self._lock:
            for key in gone:
                self._seen.pop(key, None)


def _writer_skew(run: Run, status_file: dict[str, Any] | None) -> float:
    """The writer's clock less the file server's, by status.json's ``updated`` and its mtime
    (:class:`ChangeClock`); 0 where unknown or within :data:`CLOCK_SKEW_FROM_S`."""
    written = iso_timestamp((status_file or {}).get("updated"))
    mtime = run.mtimes.get("status.json")
    if written is None or mtime is None:
        return 0.0
    skew = written - mtime
    return skew if abs(skew) >= CLOCK_SKEW_FROM_S else 0.0


_change_clock = ChangeClock()


def _largest(a: float | None, b: float | None) -> float | None:
    return max((v for v in (a, b) if v is not None), default=None)


def _activity(status: dict[str, Any]) -> str | None:
    """What the run is doing (or, ended, where it stopped), in words for the cards."""
    state, stage, phase = status["state"], status["stage"], status["phase"]
    running = state == "running"
    if stage == "sample":
        return "sampling the image" if running else "in image sampling"
    if stage == "describe" and state == "finished":
        return "described"  # `dreamtext describe` alone (image→3D's describe runs on)
    if stage == "describe" and status["source"] == "status.json":
        return "describing the image" if running else "in describe"
    if stage == "describe":
        return "starting descriptor training" if running else "after describe"
    if stage == "descriptor":
        return "training descriptor" if running else "in descriptor training"
    if phase is None or phase == "train":
        return None
    if running:
        return PHASE_ACTIVITY.get(phase, phase)
    return None if state == "finished" else f"in {phase}"
