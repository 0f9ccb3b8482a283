"""The two pages (gallery, run) as HTML with their data inside, for the server and static export.

A page is one template, ``assets/page.html``, plus a JSON object in a ``<script
type="application/json">`` element that ``assets/app.js`` reads and draws. The data is inside the
page, not fetched, because a page opened from ``file://`` cannot fetch files; the server's pages
carry the same data and then poll ``api`` for changes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import math
import re
import secrets
import shlex
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import quote

from dreamtext import __version__
from dreamtext.view.downloads import download_names, zip_members, zip_name
from dreamtext.view.workspaces import Run

# Package files a page loads, by the name it loads them under.
ASSETS = {
    "app.js": "app.js",
    "app.css": "app.css",
    "three-viewer.min.js": "vendor/three-viewer.min.js",
    "LICENSE-three.txt": "vendor/LICENSE-three.txt",
}


def asset_bytes(name: str) -> bytes:
    """One of ``ASSETS`` (by its page name), read from the installed package."""
    return resources.files("dreamtext.view").joinpath("assets", ASSETS[name]).read_bytes()


@dataclass
class Links:
    """Where things are, as relative addresses: relative to the page itself (the static
    export), or, where ``base`` is set, to the page's ``<base href>``, the server's root.

    No address is absolute: behind a web proxy that serves the viewer under a path (Open
    OnDemand's ``/rnode/<node>/<port>/``, jupyter-server-proxy's ``/proxy/<port>/``) and strips
    it before forwarding, ``/static/app.js`` would leave that path, while ``static/app.js``
    against a base of ``../../`` (a run page, ``run/<id>/``) stays inside it, whatever it is."""

    static: str
    gallery: str
    run: Callable[[str], str]
    file: Callable[[Run, str], str]
    api: str | None = None
    poll_ms: int = 2000
    # Show where each workspace lies on this machine (not in a static export, made to be shared).
    local_paths: bool = True
    # The server's root as seen from the page ("./", "../../"), or None: links are page-relative.
    base: str | None = None
    # The run's mesh zip (downloads.write_zip), where the run page offers one.
    mesh_zip: Callable[[Run], str] | None = None
    # The workspace files that zip leaves out (a static folder's: those it holds on their own).
    zip_leaves_out: Callable[[Run], Collection[str]] = lambda run: ()
    # The folders the gallery shows (its heading names them): paths, or in a static folder names.
    folders: tuple[str, ...] = ()


def server_links(api: str | None, poll_ms: int = 2000, base: str | None = None) -> Links:
    """The server's links, relative to its root: the same for every page, so the data that
    ``api`` answers (polled by pages at any depth) holds the same addresses as the page's.
    ``base``: the root as seen from the page (``page_base``), for the page's ``<base href>``."""

    def file(run: Run, rel: str) -> str:
        # The file's mtime in the address, so a rewritten final.png or mesh is fetched again.
        version = int(run.mtimes.get(rel, 0) * 1000)
        return f"files/{quote(run.id)}/{quote(rel)}?v={version}"

    def mesh_zip(run: Run) -> str:
        # The zip's name last, as the browser names a download it has no other name for; the
        # newest of its files' mtimes, so a re-export's zip is fetched again.
        version = max(
            (int(run.mtimes.get(rel, 0) * 1000) for rel, _ in zip_members(run)), default=0
        )
        return f"download/{quote(run.id)}/{quote(zip_name(run))}?v={version}"

    return Links(
        static="static/",
        gallery="./",
        run=lambda run_id: f"run/{quote(run_id)}/",
        file=file,
        api=api,
        poll_ms=poll_ms,
        base=base,
        mesh_zip=mesh_zip,
    )


# The gallery served at the server's root, opened through a proxy's prefix without its final
# "/" (/rnode/node01/8765): the server sees "/" either way, but the browser resolves every
# relative address one level up. This script, before anything loads, adds the "/". The
# Content-Security-Policy lets exactly this script run (its hash, SLASH_SCRIPT_HASH).
SLASH_SCRIPT = (
    'if(!location.pathname.endsWith("/"))'
    'location.replace(location.pathname+"/"+location.search+location.hash)'
)
SLASH_SCRIPT_HASH = (
    "'sha256-" + base64.b64encode(hashlib.sha256(SLASH_SCRIPT.encode()).digest()).decode() + "'"
)


def page_base(path: str) -> str:
    """The server's root, relative to the page at ``path`` (the request's path, which a proxy
    may have taken a prefix off; the browser resolves against its own longer address, which
    ends the same way): ``/`` → ``./``, ``/run/a/`` → ``../../``, ``/run/a`` → ``../``."""
    return "../" * (path.count("/") - 1) or "./"


def run_json(run: Run, links: Links, full: bool) -> dict[str, Any]:
    """A run as the page's JavaScript reads it; ``full`` adds what only the run page shows."""
    url = lambda rel: links.file(run, rel)  # noqa: E731
    picture = run.picture()
    data: dict[str, Any] = {
        "id": run.id,
        "name": run.name,
        "href": links.run(run.id),
        "workspace": run.workspace if links.local_paths or run.workspace is None else run.name,
        "kind": run.kind,
        "prompt": run.prompt,
        "sentence": run.sentence,
        "trained_sentence": run.trained_sentence,
        "diverse_prompt": run.diverse_prompt,
        "status": run.status,
        "batch": run.batch,
        "log_lines": run.log_lines,
        "updated": run.updated,
        "thumbnail": url(picture[0]) if picture else None,
        "thumbnail_of": picture[1] if picture else None,
    }
    if full:
        data.update(
            config=run.config,
            series=run.series,
            descriptor_steps=run.descriptor_steps,
            descriptor_loss=run.descriptor_loss,
            previews=[{"step": p["step"], "url": url(p["path"])} for p in run.previews],
            video={kind: url(rel) for kind, rel in run.video.items()},
            mesh={kind: url(rel) for kind, rel in run.mesh.items()},
            # What a download of each is named: the run's name, for files that hold all they
            # show; the OBJ and its MTL and texture come in the zip (dreamtext.view.downloads).
            mesh_names=download_names(run),
            mesh_zip=mesh_zip_json(run, links),
            mesh_stats=run.mesh_stats,
            data_files={rel: url(rel) for rel in run.data_files},
            source_image=url(run.source_image) if run.source_image else None,
            linked_out=run.linked_out,
            export_command=export_command(run, links),
        )
    return data


# What a run page's tables call the keys of mesh/mesh.json (``ExportResult.report``) and of a
# batch.jsonl record (``batch._record``): a label a newcomer reads, and the unit of its values
# ("" where they have none). The raw key stays the row's tooltip and its ``data-key``; a key
# not listed (a file of a later dreamtext) is shown as it is. A run page holds them in a script
# element of their own (render_page), not in its data: a poll's answer does not carry them again.
MESH_LABELS: dict[str, tuple[str, str]] = {
    "faces": ("faces", ""),
    "vertices": ("vertices", ""),
    "components": ("connected parts", ""),
    "watertight": ("watertight (each edge on two faces)", ""),
    "manifold": ("closed manifold", ""),
    "volume": ("volume", "units³"),
    "iou_field": ("overlap with the field (voxel IoU)", ""),
    "threshold": ("density threshold given", ""),
    "threshold_is_auto": ("surface found without a threshold", ""),
    "surface": ("surface taken from", ""),
    "transmittance": ("surface at transmittance", ""),
    "resolution": ("marching-cubes grid", "cells a side"),
    "smoothing": ("smoothing", ""),
    "dropped_components": ("small parts dropped", ""),
    "faces_before_decimation": ("faces before decimation", ""),
    "textured_vertices": ("textured vertices (UV seams split)", ""),
    "step": ("training step", ""),
    "turntable_step": ("turntable's training step", ""),
    "options": ("export options", ""),
    "ran_on": ("exported on", ""),
}
BATCH_LABELS: dict[str, tuple[str, str]] = {
    "line": ("prompts file line", ""),
    "input": ("line as written", ""),
    "kind": ("kind", ""),
    "prompt": ("prompt", ""),
    "workspace": ("workspace", ""),
    "status": ("status", ""),
    "error": ("error", ""),
    "seconds": ("time taken", ""),
    "its": ("speed at the end", "it/s"),
    "gpu_mem_mib": ("peak GPU memory", "MiB"),
    "phase": ("phase", ""),
    "step": ("last step", ""),
    "started": ("started", ""),
    "finished": ("ended", ""),
    "host": ("host", ""),
    "shard": ("shard", ""),
    "slurm": ("SLURM task", ""),
    "slurm_restart": ("SLURM restarts", ""),
    "continued_from": ("continued from step", ""),
    "stopped_batch": ("stopped the batch", ""),
}


def export_command(run: Run, links: Links) -> str | None:
    """The command that exports ``run`` (a finished ``--no-export`` run's page names it): its
    folder on this machine, or in a static folder, which names no local paths, the folder its
    training was given (config.json's ``workspace``, as typed where it ran). ``None`` where
    neither is known."""
    typed = (run.config or {}).get("workspace")
    folder = run.workspace if links.local_paths else typed
    if not isinstance(folder, str) or not folder:
        return None
    return f"dreamtext export --workspace {shlex.quote(folder)}"


def mesh_zip_json(run: Run, links: Links) -> dict[str, Any] | None:
    """The run page's zip link: its address, the name it downloads under, and the kinds of mesh
    file it holds (``["obj", "mtl", "texture"]``); ``None`` where there is no zip to offer."""
    if links.mesh_zip is None:
        return None
    members = {rel for rel, _ in zip_members(run, links.zip_leaves_out(run))}
    if not members:
        return None
    holds = [kind for kind, rel in run.mesh.items() if rel in members]
    return {"url": links.mesh_zip(run), "name": zip_name(run), "holds": holds}


def gallery_json(runs: list[Run], links: Links, cursor: str | None = None) -> dict[str, Any]:
    """The gallery's data; ``cursor`` (the server's): what a poll sends back to be answered with
    the runs that changed since (:class:`GalleryText`)."""
    data = {
        "page": "gallery",
        "version": __version__,
        "api": links.api,
        "poll_ms": links.poll_ms,
        "gallery": links.gallery,
    }
    if links.folders:
        data["folders"] = list(links.folders)
    if cursor is not None:
        data["cursor"] = cursor
    data["runs"] = [run_json(run, links, full=False) for run in runs]
    return data


@dataclass(frozen=True)
class GalleryAnswer:
    """What a gallery poll is answered from: ``text``, the whole gallery
    (``script_json(gallery_json(runs, links, cursor))``), its ``etag``, and ``delta``, the text
    of the runs that changed since the poll's cursor (``None``: the cursor is not one this
    server can answer, or most runs changed: then ``text``)."""

    text: str
    etag: str
    delta: str | None = None


class GalleryText:
    """The gallery's JSON text, made of each run's JSON text, kept from the last call while the
    run is the same ``Run`` object (``GalleryCache`` hands out the same one while a run's files
    and status stay the same): a poll of an unchanged gallery of 1,000 runs joins texts instead
    of encoding ~1 MB of JSON again.

    And the answer to a poll that names what it has (its ``cursor``): only the runs whose text
    changed since. Each run's text carries the number of the change that made it; the cursor is
    this object's ``<epoch>-<number of its last change>``, the epoch a random word per server
    (a page open across a restart has a cursor of another epoch: it gets the whole gallery).
    The list of ids in order is a change too (a run added or removed, or a folder renamed): a
    delta since before it says what came and went, ``removed`` (the ids that left since) and
    ``added`` (``[id, place]`` of each run that joined since, by place in the list now); the
    page drops both kinds from its list, then puts each added run at its place, in that order.
    Where that cannot say it (the runs that stayed changed order: a run named by batch.jsonl
    whose folder appeared; or the cursor is older than the removals kept,
    :data:`GALLERY_REMOVALS_KEPT`), the delta carries ``ids``, the whole list, instead. A
    batch of 1,000 runs sent its 1,000 ids (~14 KB of JSON) at each run that started.
    Nothing is kept per client: any cursor this object gave out can be answered.

    For one kind of ``Links`` (the server's): a run's text is kept whatever ``links`` says.
    Safe to share between threads.
    """

    def __init__(self) -> None:
        self._texts: dict[str, tuple[Run, str, int]] = {}  # id: (run, its text, its change)
        self._ids: tuple[str, ...] = ()
        self._ids_changed = 0  # the change that made the list of ids what it is
        self._joined: dict[str, int] = {}  # id listed now: the change that listed it
        self._left: dict[str, int] = {}  # id no longer listed: the change that dropped it
        self._left_forgotten = 0  # the last change whose removals are no longer all in _left
        self._order_changed = 0  # the last change that moved runs that stayed, one past another
        self._changes = 0
        self._epoch = secrets.token_hex(4)
        self._lock = threading.Lock()

    def __call__(self, runs: list[Run], links: Links, since: str | None = None) -> GalleryAnswer:
        with self._lock:  # changes are numbered in one order for every poll
            kept, texts = self._texts, {}
            for run in runs:
                before = kept.get(run.id)
                if before is not None and before[0] is run:
                    texts[run.id] = before
                    continue
                text = script_json(run_json(run, links, full=False))
                if before is None or before[1] != text:
                    self._changes += 1
                    before = (run, text, self._changes)
                texts[run.id] = (run, text, before[2])
            ids = tuple(texts)
            if ids != self._ids:
                self._changes += 1
                self._list_changed(ids)
            self._texts = texts  # runs no longer listed are forgotten
            cursor = f"{self._epoch}-{self._changes}"
            after = self._change_of(since)
            came_and_went = None
            if after is not None and self._ids_changed > after:
                came_and_went = self._came_and_went(ids, after)
        head = gallery_json([], links, cursor)
        del head["runs"]  # the last key, written after the others as json.dumps would
        head_text = script_json(head)[:-1]
        listed = ", ".join(texts[run_id][1] for run_id in ids)
        text = head_text + ', "runs": [' + listed + "]}"
        delta = None
        if after is not None:
            changed = [texts[run_id][1] for run_id in ids if texts[run_id][2] > after]
            if len(changed) * 2 <= len(ids):  # else the whole gallery is as short
                delta = head_text + f', "since": {script_json(since)}, "changed": ['
                delta += ", ".join(changed) + "]"
                if came_and_went is not None:
                    delta += ", " + script_json(came_and_went)[1:-1]
                delta += "}"
        return GalleryAnswer(text, json_etag(text), delta)

    def _list_changed(self, ids: tuple[str, ...]) -> None:
        """Note the change of the list of ids (now ``ids``) that is ``self._changes``: which ids
        joined, which left, and whether those that stayed are in the same order. Under the lock."""
        change, before = self._changes, self._ids
        now, then = set(ids), set(before)
        for run_id in then - now:
            self._joined.pop(run_id, None)
            self._left[run_id] = change
        for run_id in now - then:
            self._joined[run_id] = change
            self._left.pop(run_id, None)
        if [i for i in before if i in now] != [i for i in ids if i in then]:
            self._order_changed = change
        while len(self._left) > GALLERY_REMOVALS_KEPT:  # the oldest first: kept in change order
            forgotten = next(iter(self._left))
            self._left_forgotten = max(self._left_forgotten, self._left.pop(forgotten))
        self._ids, self._ids_changed = ids, change

    def _came_and_went(self, ids: tuple[str, ...], after: int) -> dict[str, Any]:
        """What a delta since change ``after`` says of the list of ids: ``removed`` and
        ``added``, or ``ids`` whole where those cannot say it. Under the lock."""
        if self._order_changed > after or self._left_forgotten > after:
            return {"ids": list(ids)}
        removed = [run_id for run_id, change in self._left.items() if change > after]
        added = [[run_id, i] for i, run_id in enumerate(ids) if self._joined[run_id] > after]
        return {"removed": removed, "added": added}

    def _change_of(self, cursor: str | None) -> int | None:
        """The number of the change a cursor of this object names; ``None`` for any other."""
        epoch, _, number = (cursor or "").partition("-")
        if epoch != self._epoch or not (number.isascii() and number.isdigit()) or len(number) > 18:
            return None
        return int(number) if int(number) <= self._changes else None


# The removals a gallery keeps to tell a poll which runs left since its cursor: a page whose
# cursor is older than the oldest kept gets the whole list of ids (a sweep that removed this
# many runs since the page last polled).
GALLERY_REMOVALS_KEPT = 4096


def json_etag(text: str) -> str:
    """An HTTP entity tag for a JSON answer: a digest of its text, so any change of the text
    changes it (a polling page sends it back in ``If-None-Match`` and gets a 304 while the
    answer is the same)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()
    return f'W/"{digest}"'  # weak: it stands for the text, gzipped or not


def run_page_json(run: Run, links: Links, glb_script: str | None = None) -> dict[str, Any]:
    """``glb_script``: in a static export, the script that holds the GLB (a file:// page cannot
    fetch the GLB itself)."""
    return {
        "page": "run",
        "version": __version__,
        "api": links.api,
        "poll_ms": links.poll_ms,
        "gallery": links.gallery,
        "run": run_json(run, links, full=True),
        "glb_script": glb_script,
    }


@dataclass(frozen=True)
class RunAnswer:
    """What a run page's poll is answered from: ``data``, the whole run page's data (with its
    ``cursor``), ``text`` its JSON, ``etag`` that of ``text``, and ``delta``, the text of what
    changed since the poll's cursor (``None``: no cursor this server gave, or not shorter)."""

    data: dict[str, Any]
    text: str
    etag: str
    delta: str | None = None


# The parts of a run's page data that a poll sends only the new end of (or nothing of, when
# they did not change), by name: the run's fields each is made of, and whether the part grows
# at its end. Every other field (status, log_lines, mesh, video, ...) is small and is sent at
# every answer that changed.
RUN_PARTS = {
    "series": (("series",), True),
    "descriptor": (("descriptor_steps", "descriptor_loss"), True),
    "previews": (("previews",), True),
    "config": (("config",), False),
}


# The runs whose page text a RunText keeps (the pages polling at once, ~0.5 MB each at most).
RUN_TEXTS_KEPT = 8


class RunText:
    """A run page's data, and the answer to a poll that names what the page has (its
    ``cursor``): the run's small fields, and of its curves and previews only the records after
    those the page has, of its config nothing unless it changed.

    The cursor says, for each of :data:`RUN_PARTS`, how many first records of it the page has
    (``n``: the log's settled records, ``Curves.settled``, every preview) and a digest of them;
    a poll is answered with ``{"keep": n, "add": [the records after]}`` where the run's part
    still starts with records of that digest, else with the part whole. Nothing is kept per
    page or per run: the cursor is signed with a key of this object (a random one per server),
    so any cursor it did not give out (another server's, another run's, one made up) gets the
    whole run. A growing log's poll then carries its new records, not its 2,000.

    The text of the :data:`RUN_TEXTS_KEPT` runs asked for last is kept with the run's curves
    and the text of the rest of its data: a poll of a run whose curves are the same records and
    whose other data is the same text reuses its text, tag and cursor instead of encoding its
    curves again, twice (the page's text for its tag, 1.8 ms, and the cursor's digest, 1.3 ms,
    of the 6.3 ms of CPU that a 1,000-line log's poll took to be answered 304). A poll after a
    new log line encodes the series once (:func:`_encoded_series`: the text and the cursor's
    digest from it), and finds the page's records the same as the last answer's without
    encoding them again where the page names that answer's cursor (:func:`_same_records`).

    Safe to share between threads.
    """

    def __init__(self) -> None:
        self._key = secrets.token_bytes(16)
        # run id: (what the text is made of: _made_of), its parts, text, etag and run data
        self._kept: OrderedDict[str, tuple[tuple, dict, str, str, dict]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, run: Run, links: Links, since: str | None = None) -> RunAnswer:
        data = run_page_json(run, links)
        shown = data["run"]
        made_of = _made_of(run, data)
        with self._lock:
            kept = self._kept.get(run.id)
            if kept is not None:
                self._kept.move_to_end(run.id)
        if kept is not None and kept[0] == made_of:
            parts, text, etag = kept[1:4]
            data["cursor"] = self._cursor(run.id, parts)
        else:
            parts, text = self._encoded(run, data, made_of[2])
            etag = json_etag(text)
            with self._lock:
                self._kept[run.id] = (made_of, parts, text, etag, shown)
                self._kept.move_to_end(run.id)
                while len(self._kept) > RUN_TEXTS_KEPT:
                    self._kept.popitem(last=False)
        had = self._read(run.id, since)
        delta = None
        if had is not None:
            changed = {k: v for k, v in shown.items() if k not in _PART_FIELDS}
            tails = {}
            for name, (fields, grows) in RUN_PARTS.items():
                n, digest = had[name]
                columns = {f: shown[f] for f in fields}
                if n == parts[name][0]:  # as often: this answer's digest is the one to match
                    same = digest == parts[name][1]
                elif kept is not None and (n, digest) == kept[1][name]:
                    # The page has the last answer's records: are they this one's first?
                    same = _same_records(columns, {f: kept[4][f] for f in fields}, n)
                else:
                    same = digest == _prefix_digest(columns, n if grows else None)
                if same and grows:
                    for f in fields:
                        tails[f] = {"keep": n, "add": _after(shown[f], n)}
                elif not same:
                    changed.update(columns)
            answer = {k: v for k, v in data.items() if k != "run"}
            answer.update(since=since, run=changed, tails=tails)
            delta = script_json(answer)
            if len(delta) >= len(text):
                delta = None
        return RunAnswer(data, text, etag, delta)

    def _encoded(self, run: Run, data: dict[str, Any], rest: str) -> tuple[dict, str]:
        """The parts of a run page's data as its cursor names them, and its text, with the
        cursor (set in ``data``). ``rest``: the text of the rest of the data (:func:`_made_of`),
        into which the series' text goes where it encodes once (:func:`_encoded_series`)."""
        shown = data["run"]
        n = _settled_records(run, shown, "series")
        series = _encoded_series(shown["series"], n)
        parts = {}
        for name in RUN_PARTS:
            if name == "series" and series is not None:
                parts[name] = (n, series[1])
            else:
                parts[name] = self._part(run, shown, name)
        data["cursor"] = self._cursor(run.id, parts)
        text = None
        if series is not None:
            text = _spliced(rest, series[0], data["cursor"])
        return parts, text if text is not None else script_json(data)

    @staticmethod
    def _part(run: Run, shown: dict[str, Any], name: str) -> tuple[int, str]:
        """A part's settled records (how many; their digest) as a cursor names them."""
        fields, grows = RUN_PARTS[name]
        columns = {f: shown[f] for f in fields}
        if not grows:
            return 0, _prefix_digest(columns, None)
        n = _settled_records(run, shown, name)
        return n, _prefix_digest(columns, n)

    def _cursor(self, run_id: str, parts: dict[str, tuple[int, str]]) -> str:
        body = ".".join(f"{n}.{digest}" for n, digest in parts.values())
        return f"{body}.{self._sign(run_id, body)}"

    def _sign(self, run_id: str, body: str) -> str:
        message = f"{run_id}\n{body}".encode("utf-8", "surrogateescape")
        return hashlib.blake2b(message, key=self._key, digest_size=8).hexdigest()

    def _read(self, run_id: str, cursor: str | None) -> dict[str, tuple[int, str]] | None:
        """What a cursor of this object for this run names; ``None`` for any other."""
        if not cursor or len(cursor) > 400:
            return None
        body, _, signature = cursor.rpartition(".")
        given = signature.encode("utf-8", "surrogateescape")  # compared as bytes: any text
        if not hmac.compare_digest(given, self._sign(run_id, body).encode()):
            return None
        fields = body.split(".")
        counts, digests = fields[0::2], fields[1::2]
        if len(fields) != 2 * len(RUN_PARTS) or not all(
            c.isascii() and c.isdigit() for c in counts
        ):
            return None
        return {name: (int(c), d) for name, c, d in zip(RUN_PARTS, counts, digests, strict=True)}


def _made_of(run: Run, data: dict[str, Any]) -> tuple:
    """What a run page's text and cursor are made of, to be compared with ``==``: its curves
    as lists of floats and ``None`` (``workspaces.Curves``; ~0.1 ms for 2,000 records, in C),
    how many of their records are settled, and the text of the rest of its data (as text, so
    that a 1 turned 1.0 or True, equal in Python, is a change). Of the curves only a value
    rewritten from 0.0 to -0.0 goes unseen, which draws the same.

    The rest's text holds a mark where the series and the cursor go (:func:`_spliced`)."""
    shown = data["run"]
    rest = {**data, "run": {**shown, "series": _SERIES_MARK}, "cursor": _CURSOR_MARK}
    settled = (run.series_settled, run.descriptor_settled)
    return list(shown["series"].items()), settled, script_json(rest)


# Where the series and the cursor go in the text of the rest of a run page's data (_made_of):
# strings no run's files can hold (random, per process).
_SERIES_MARK = f"series-{secrets.token_hex(16)}"
_CURSOR_MARK = f"cursor-{secrets.token_hex(16)}"


def _spliced(rest: str, series: str, cursor: str) -> str | None:
    """The text :func:`script_json` writes of a run page's data, from the text of the rest of
    it (:func:`_made_of`), the series' text and the cursor; ``None`` where a mark is not there
    once."""
    series_mark, cursor_mark = json.dumps(_SERIES_MARK), json.dumps(_CURSOR_MARK)
    if rest.count(series_mark) != 1 or rest.count(cursor_mark) != 1:
        return None
    return rest.replace(cursor_mark, script_json(cursor)).replace(series_mark, series)


def _encoded_series(series: Any, n: int) -> tuple[str, str] | None:
    """A run's series (``{key: [value, ...]}``) as :func:`script_json` writes it, and the
    digest of its first ``n`` records as :func:`_prefix_digest` makes it, from one encoding of
    its values (a 1,000-line log's, ~1.4 ms each way).

    Each key's list is encoded as its first ``n`` values and the rest, ``[a, b]`` and ``[c]``;
    the text joins them (``"key": [a, b, c]``) and the digest's compact text is the first with
    its separators ``", "`` written ``","`` (``"key":[a,b]``). That holds for numbers, ``null``
    and lists of them; ``None`` (encode it as any data) where a list holds a string (which may
    hold ``", "``), a non-finite number (``null`` in the text, ``NaN`` in the digest's) or
    anything JSON has not."""
    if not isinstance(series, dict):
        return None
    full, compact = [], []
    for key, values in series.items():
        if not isinstance(key, str) or not isinstance(values, list):
            return None
        try:
            head = json.dumps(values[:n], allow_nan=False)[1:-1]
            tail = json.dumps(values[n:], allow_nan=False)[1:-1]
        except (TypeError, ValueError):
            return None
        if '"' in head or '"' in tail:
            return None
        joined = f"{head}, {tail}" if head and tail else head or tail
        full.append(f"{script_json(key)}: [{joined}]")
        compact.append(f"{json.dumps(key)}:[{head.replace(', ', ',')}]")
    digest_text = '{"series":{' + ",".join(compact) + "}}"
    return "{" + ", ".join(full) + "}", _digest(digest_text)


def _same_records(columns: dict[str, Any], kept: dict[str, Any], n: int) -> bool:
    """Whether a part's first ``n`` records (of each field; a series' of each key, in order)
    are those of the part ``kept``, compared as values: a series' floats in C (0.0 and -0.0
    are one value, as in :func:`_made_of`)."""
    for field, value in columns.items():
        other = kept[field]
        if isinstance(value, dict) and isinstance(other, dict):
            if list(value) != list(other):
                return False
            if any(value[key][:n] != other[key][:n] for key in value):
                return False
        elif _first(value, n) != _first(other, n):
            return False
    return True


def _settled_records(run: Run, shown: dict[str, Any], name: str) -> int:
    """How many first records of a growing part a cursor names: the log's settled records
    (``Curves.settled``), every record of the others."""
    fields, _ = RUN_PARTS[name]
    length = min(len(v) for v in _columns({f: shown[f] for f in fields}))
    settled = {"series": run.series_settled, "descriptor": run.descriptor_settled}
    return min(settled.get(name, length), length)


# The run's fields that RUN_PARTS are made of.
_PART_FIELDS = {field for fields, _ in RUN_PARTS.values() for field in fields}


def _columns(columns: dict[str, Any]) -> list[list[Any]]:
    """A part's lists of records: the series' by key, a field's that is a list, else none."""
    out = []
    for value in columns.values():
        if isinstance(value, dict):
            out += list(value.values())
        elif isinstance(value, list):
            out.append(value)
    return out or [[]]


def _after(value: Any, n: int) -> Any:
    """The records of a field after its first ``n`` (a series': of each key's list)."""
    if isinstance(value, dict):
        return {key: values[n:] for key, values in value.items()}
    return value[n:]


def _prefix_digest(columns: dict[str, Any], n: int | None) -> str:
    """A digest of a part's first ``n`` records (of every key of a series), or of all of it
    (``None``): two parts with the same digest start with the same records, under the same keys."""
    if n is not None:
        columns = {field: _first(value, n) for field, value in columns.items()}
    return _digest(json.dumps(columns, allow_nan=True, separators=(",", ":")))


def _digest(text: str) -> str:
    """A cursor's digest of a part's text (:func:`_prefix_digest`)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def _first(value: Any, n: int) -> Any:
    """A field's first ``n`` records (a series': of each key's list)."""
    if isinstance(value, dict):
        return {key: values[:n] for key, values in value.items()}
    return value[:n] if isinstance(value, list) else value


def gone_page_json(run_id: str, links: Links) -> dict[str, Any]:
    """The page of a run that is not there (its folder removed or moved): it says so and links
    to the gallery."""
    return {
        "page": "gone",
        "version": __version__,
        "api": None,
        "poll_ms": links.poll_ms,
        "gallery": links.gallery,
        "gone": run_id,
    }


# A str's lone surrogates: a folder or file name that is not UTF-8 (Python keeps its bytes as
# U+DC80-U+DCFF), or a "\udcff" escape in a run's JSON. UTF-8 cannot encode them.
_SURROGATE = re.compile("[\ud800-\udfff]")


def script_json(data: Any) -> str:
    """JSON that is safe inside a ``<script>`` element: no ``</script>`` or ``<!--`` can form;
    encodable as UTF-8 (a lone surrogate is written as its ``\\uXXXX`` escape, which JavaScript
    reads as the same string)."""
    text = json.dumps(_finite(data), ensure_ascii=False, allow_nan=False)
    if not text.isascii():  # ~1 MB of curves: 6 ms to search, 0.1 µs to see it is ASCII
        text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _finite(value: Any) -> Any:
    """NaN and infinities (which JSON lacks; a run's files may hold them) become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def render_page(data: dict[str, Any], links: Links, text: str | None = None) -> str:
    """``assets/page.html`` with its title, base, asset folder and data filled in (in one pass,
    so nothing a prompt holds is read as a placeholder). ``text``: the data as
    :func:`script_json` writes it, where it is already written (the gallery's, by
    :class:`GalleryText`); ``data`` then needs only its ``page``."""
    title = "dreamtext runs"
    if data["page"] == "gone":
        title = "run gone · dreamtext"
    if data["page"] == "run":
        run = data["run"]
        named = [run.get("prompt")]
        if run.get("kind") == "image":  # as app.js's runTitle
            named = [run.get("trained_sentence"), run.get("sentence"), run.get("prompt")]
        title = f"{next((t for t in named if t), run['name'])} · dreamtext"
    # Only the run page draws in 3D; the gallery does without three.js's 600 kB.
    vendor = ""
    if data["page"] == "run":
        vendor = f'<script src="{html.escape(links.static)}three-viewer.min.js"></script>'
    base = ""
    if links.base is not None:
        base = f'<base href="{html.escape(links.base)}">'
    if links.base == "./":  # the server's root page (a static export's page is a file)
        base = f"<script>{SLASH_SCRIPT}</script>\n{base}"
    if text is None:
        text = script_json(data)
    labels = {"mesh": MESH_LABELS, "batch": BATCH_LABELS} if data["page"] == "run" else {}
    values = {
        "title": html.escape(_SURROGATE.sub("\ufffd", title)),
        "base": base,
        "static": html.escape(links.static),
        "vendor": vendor,
        "data": text,
        "labels": script_json(labels),
        # What the data's answer from api/ is tagged with, so the page's first poll can be a
        # conditional one (none in a static export: nothing to poll).
        "etag": html.escape(json_etag(text)) if links.api else "",
    }
    template = resources.files("dreamtext.view").joinpath("assets", "page.html")
    return re.sub(r"\{\{(\w+)\}\}", lambda m: values[m.group(1)], template.read_text("utf-8"))
