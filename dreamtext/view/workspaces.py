"""What the viewer knows about runs: found from the folders given, read from their files.

    folders given ──► Catalog (which workspaces, under which root, with which id)
    workspace     ──► read_run ──► Run (prompt, status, log series, previews, mesh, video, ...)
    runs          ──► GalleryCache ──► the gallery's Runs, each read again when its files change

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
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from dreamtext.errors import DreamtextError
from dreamtext.processes import gone_process

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
# died without saying so; its status then says how long it has been quiet.
QUIET_AFTER_S = 600.0
# How long find() answers from the last scan of the folders. A page's requests come together (a
# gallery's thumbnails: one per card), and a scan reads every workspace: one scan per request
# made a gallery of 250 runs cost 250 scans, 28 s of the server's time, to show its pictures.
FIND_REUSES_SCAN_S = 2.0
# A file changed this close to the time a run was read may change again without its stat
# changing (file times advance in ticks of up to a few milliseconds, of 1-2 s on some file
# systems): the gallery reads such a run again at its next poll instead of trusting the stat.
STAT_SETTLES_AFTER_S = 2.0
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
    runs are refused unless ``empty_ok`` (a server started before a batch's first run).
    """

    def __init__(self, folders: list[Path], empty_ok: bool = False):
        self.sources: list[tuple[Path, bool]] = []
        self._last_scan: tuple[float, dict[str, RunLocation]] | None = None
        self._scan_lock = threading.Lock()
        for folder in folders:
            if not folder.exists():
                raise DreamtextError(f"no such folder: {folder}")
            if not folder.is_dir():
                raise DreamtextError(f"{folder} is a file; pass a run's folder or a folder of runs")
            resolved = folder.resolve()
            self.sources.append((resolved, not is_workspace(resolved)))
        if not empty_ok and not self.runs():
            shown = ", ".join(str(f) for f in folders)
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
        return next((run for run in self.runs() if run.id == run_id), None)

    def _scan(self) -> list[RunLocation]:
        found: list[RunLocation] = []
        used: set[str] = set()

        def add(name: str, path: Path | None, root: Path | None, batch: dict | None) -> None:
            base = _id_of(name)
            run_id, n = base, 2
            while run_id in used:
                run_id, n = f"{base}-{n}", n + 1
            used.add(run_id)
            found.append(RunLocation(run_id, name, path, root, batch))

        seen: set[Path] = set()
        for folder, is_root in self.sources:
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
        return found


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


def _holds_run(folder: str) -> bool:
    """:func:`is_workspace` for a path as text (the scan asks it of every subfolder each poll)."""
    return any(os.path.isfile(os.path.join(folder, name)) for name in WORKSPACE_MARKERS)


@functools.lru_cache(maxsize=65536)
def _id_of(name: str) -> str:
    """A run's address from its folder's name: letters of any script stay, with their combining
    marks (workspace folders keep them: config.slugify); anything else is ``_``."""
    kept = "".join(c if c in ".-" or unicodedata.category(c)[0] in "LNM" else "_" for c in name)
    return re.sub(r"_+", "_", kept).strip("._") or "run"


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
    """``batch.jsonl``'s newest record per workspace (a prompt retried appends a new line). A
    ``skipped`` line (the run had finished, or another worker sharing the list held it or had
    failed it) is not an attempt: it does not hide the attempt recorded before it."""
    latest: dict[str, dict[str, Any]] = {}
    for record in read_jsonl(root / "batch.jsonl"):
        name = record.get("workspace")
        if isinstance(name, str) and not (record.get("status") == "skipped" and name in latest):
            latest[name] = record
    return latest


# --------------------------------------------------------------------------------------- reading


_jsonl_cache: dict[Path, tuple[tuple[int, int], list[dict[str, Any]]]] = {}
_jsonl_lock = threading.Lock()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a ``.jsonl`` file, one per complete line; a line being written (no
    newline yet) or not an object is left out. Parsed again only when the file changes."""
    try:
        stat = path.stat()
    except OSError:
        return []
    key = (stat.st_mtime_ns, stat.st_size)
    with _jsonl_lock:
        cached = _jsonl_cache.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    records = []
    for line in text.split("\n")[:-1]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    with _jsonl_lock:
        _jsonl_cache[path] = (key, records)
    return records


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _iso_timestamp(value: Any) -> float | None:
    """An ISO 8601 time with its offset (``2026-11-30T10:00:12+00:00``) as a Unix time."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


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
    status: dict[str, Any] = field(default_factory=dict)
    batch: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    log_lines: int = 0
    series: dict[str, list[float | None]] = field(default_factory=dict)
    descriptor_steps: list[float | None] = field(default_factory=list)
    descriptor_loss: list[float | None] = field(default_factory=list)
    previews: list[dict[str, Any]] = field(default_factory=list)
    video: dict[str, str] = field(default_factory=dict)
    mesh: dict[str, str] = field(default_factory=dict)
    mesh_stats: dict[str, Any] | None = None
    data_files: list[str] = field(default_factory=list)
    source_image: str | None = None
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
        """The card's picture: the turntable GIF (plays in an ``<img>``), else the last preview,
        else (an image run before its text stage) the source image."""
        if "gif" in self.video:
            return self.video["gif"]
        return self.previews[-1]["path"] if self.previews else self.source_image


def read_run(location: RunLocation, with_series: bool = True) -> Run:
    """Read one run's files. ``with_series=False`` skips the per-step series (the gallery)."""
    run, status_inputs = _read_files(location, with_series)
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

    def status(self, run: Run) -> dict[str, Any]:
        return _status(
            run,
            self.status_file,
            self.last_record,
            self.log_peak_mem,
            self.folder,
            self.stage,
            self.descriptor_step,
        )


def _read_files(location: RunLocation, with_series: bool) -> tuple[Run, _StatusInputs]:
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
    status_file = read_json(folder / "status.json")
    records = read_jsonl(folder / "log.jsonl")
    run.log_lines = len(records)
    if with_series:
        run.series = {"step": [_number(r.get("step")) for r in records]}
        for key in SERIES_KEYS:
            values = [_number(r.get(key)) for r in records]
            if any(v is not None for v in values):
                run.series[key] = values
        descriptor_log = read_jsonl(folder / "descriptor" / "log.jsonl")
        run.descriptor_steps = [_number(r.get("step")) for r in descriptor_log]
        run.descriptor_loss = [_number(r.get("loss")) for r in descriptor_log]

    # Text only: a hand-edited or foreign file's number or list would break the page's sorting
    # and filtering, which compare prompts as strings.
    if run.config:
        run.prompt = _text(run.config.get("prompt"))
    if run.prompt is None and location.batch:
        run.prompt = _text(location.batch.get("prompt"))
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
    run.video = {k: rel for k, rel in VIDEO_FILES.items() if _is_file_inside(folder, rel)}
    run.mesh = {k: rel for k, rel in MESH_FILES.items() if _is_file_inside(folder, rel)}
    run.mesh_stats = read_json(folder / "mesh" / "mesh.json")
    run.data_files = [rel for rel in DATA_FILES if _is_file_inside(folder, rel)]
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
        steps = [_number(r.get("step")) for r in read_jsonl(folder / DESCRIPTOR_LOG)]
        descriptor_step = next((s for s in reversed(steps) if s is not None), None)
    last = records[-1] if records else {}
    inputs = _StatusInputs(status_file, last, _peak_memory(records), folder, stage, descriptor_step)
    return run, inputs


def _peak_memory(records: list[dict[str, Any]]) -> float | None:
    return max(
        (m for m in (_number(r.get("gpu_mem_mib")) for r in records) if m is not None), default=None
    )


# Besides the files the pages link to (Run.files) and the files and folders whose time says how
# recently a run did anything (ACTIVITY_PATHS): everything _read_files reads or lists for the
# gallery. A folder's time changes when a file in it is made, replaced or removed.
READ_PATHS = tuple(dict.fromkeys((".", *ACTIVITY_PATHS, *DATA_FILES)))


@dataclass(frozen=True)
class _GalleryEntry:
    """A run as the gallery read it, with the stat of each file and folder it was read from."""

    location: RunLocation
    run: Run
    status_inputs: _StatusInputs
    paths: tuple[str, ...]
    stamps: tuple[tuple[int, ...] | None, ...]
    settled: bool


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
    gallery of a finished sweep stats its files and reads none.

    A run's status is judged again at every poll from what its files held (:class:`_StatusInputs`):
    whether a running run is quiet depends on the clock, whether its process is gone on the
    processes of this machine. Safe to share between the server's threads.
    """

    def __init__(self) -> None:
        # Per run id: its entry, and the Run last handed out for it (with its status).
        self._entries: dict[str, tuple[_GalleryEntry, Run]] = {}
        self._lock = threading.Lock()

    def runs(self, locations: list[RunLocation]) -> list[Run]:
        """The runs at ``locations``. A run whose entry and status are those of the last call is
        the same ``Run`` object as then (``page.GalleryText`` keeps its JSON by that); callers
        must not change the ``Run``s."""
        with self._lock:
            entries = self._entries
        current: dict[str, tuple[_GalleryEntry, Run]] = {}
        for location in locations:
            entry, shown = entries.get(location.id, (None, None))
            if entry is None or not self._still_valid(entry, location):
                entry = _read_gallery_entry(location)
            status = entry.status_inputs.status(entry.run)
            if shown is None or entry is not entries[location.id][0] or shown.status != status:
                shown = replace(entry.run, status=status)
            current[location.id] = (entry, shown)
        with self._lock:  # runs no longer listed are forgotten
            self._entries = current
        return [current[location.id][1] for location in locations]

    @staticmethod
    def _still_valid(entry: _GalleryEntry, location: RunLocation) -> bool:
        if not entry.settled or entry.location != location:
            return False
        # _stamp, inline: this loop stats every kept path of every run at every poll.
        stat = os.stat
        for path, stamp in zip(entry.paths, entry.stamps, strict=True):
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
    (an image run's seven descriptor paths in a text run, say)."""
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
    kept = [rel for rel in stamps if rel not in covered]
    paths = tuple(os.path.join(folder, rel) for rel in kept)
    return _GalleryEntry(
        location, run, status_inputs, paths, tuple(stamps[rel] for rel in kept), settled
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
    path = folder / rel
    try:
        return path.is_file() and path.resolve().is_relative_to(folder)
    except OSError:
        return False


def _previews(folder: Path) -> list[dict[str, Any]]:
    """``previews/step_XXXXXX.png`` in step order, then ``final.png``."""
    out = []
    try:
        names = sorted(p.name for p in (folder / "previews").iterdir())
    except OSError:
        return out
    for name in names:
        match = _STEP_PREVIEW.fullmatch(name)
        if match and _is_file_inside(folder, f"previews/{name}"):
            out.append({"step": int(match.group(1)), "path": f"previews/{name}"})
    out.sort(key=lambda p: p["step"])
    if _is_file_inside(folder, "previews/final.png"):
        out.append({"step": None, "path": "previews/final.png"})
    return out


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
        if resolved.is_file() and resolved.is_relative_to(folder):
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
    it is quiet (``quiet_minutes``) only when nothing the run writes has changed for a while. A
    running run whose process, of this machine, is gone (``process_gone``, its pid) was killed
    without warning: it is shown ``interrupted``.
    """
    last = records[-1] if records else {}
    return _status(run, status_file, last, _peak_memory(records), folder, stage, descriptor_step)


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
    since_change = time.time() - run.updated if run.updated is not None else math.inf
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
        out["updated"] = status_file.get("updated")
        out["started"] = status_file.get("started")
        if isinstance(status_file.get("phase"), str):
            out["phase"] = status_file["phase"]
        if stage in IMAGE_PHASES:
            if stage == "descriptor":
                out["descriptor_step"] = _largest(out["step"], descriptor_step)
                out["descriptor_iters"] = out["iters"]
            out["step"], out["iters"] = None, iters
        if out["state"] == "running" and (pid := gone_process(status_file)) is not None:
            # Killed without warning (SIGKILL, the out-of-memory killer): stopped, resumable.
            out.update(state="interrupted", process_gone=pid)
        if out["state"] == "running":
            out["step"] = _largest(out["step"], log_step)
            out["gpu_mem_mib"] = _largest(out["gpu_mem_mib"], log_peak_mem)
            if QUIET_AFTER_S < since_change < math.inf:
                out["quiet_minutes"] = int(since_change // 60)  # whole: the page redraws rarely
        out["activity"] = _activity(out)
        return out
    batch = run.batch or {}
    # A batch line of an earlier attempt says nothing of the files a retry is writing now (its
    # "finished" has whole seconds, and the run's last files come just before the line).
    ended = _iso_timestamp(batch.get("finished"))
    retried = ended is not None and run.updated is not None and run.updated > ended + 2
    if isinstance(batch.get("status"), str) and not (
        retried and since_change < RUNNING_IF_CHANGED_WITHIN_S
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
        trained or "glb" in run.mesh or any(p["step"] is None for p in run.previews)
    ):
        out["state"] = "finished"
    elif folder is not None and since_change < RUNNING_IF_CHANGED_WITHIN_S:
        out["state"] = "running"
    else:
        out["state"] = "interrupted"
    out["activity"] = _activity(out)
    return out


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
