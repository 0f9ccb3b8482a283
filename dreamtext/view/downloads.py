"""What the run page offers to download of a run's mesh, under names of that run.

The export names its files the same in every run (``mesh/mesh.obj`` naming ``mesh.mtl``, which
names ``albedo.png``). Saved from two runs into one folder, the browser renamed the second
texture ``albedo (1).png`` and the second OBJ showed the first run's texture. So:

- the GLB and the PLY, which hold everything they show, download under the run's name
  (``a_red_cube.glb``);
- the OBJ, its MTL and texture come only in one zip per run, ``a_red_cube.zip``, whose folder
  ``a_red_cube/`` holds the run's mesh files under the names they reference each other by,
  with ``mesh.json``. Nothing else of the workspace goes in (no checkpoints).

The run's name is its id on the pages: its folder's name (the prompt's or image's slug, as
``dreamtext text`` and ``batch`` name folders), made distinct among the runs one viewer shows
(two batches' ``a_red_cube``: ``a_red_cube`` and ``a_red_cube-2``), also to file systems that
ignore case (``Cube``, ``cube-2``), so no two of its downloads share a name.

The server's zip holds every mesh file (one download of whatever the export made); a
``--static`` folder's leaves out the files the folder holds on their own (``leave_out``), so
that it stores each file once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
import zipfile
from collections.abc import Collection
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from dreamtext.view.workspaces import Run

# The mesh files that reference no other file: each can be saved on its own under any name.
SELF_CONTAINED = {"glb": ".glb", "ply": ".ply"}
# What the zip holds besides the mesh files (the export's statistics and settings).
ZIP_EXTRAS = ("mesh/mesh.json",)
# Files already compressed: stored as they are.
STORED_SUFFIXES = {".png", ".jpg", ".jpeg"}
# The first and last times a zip entry can hold (DOS dates, seconds in steps of 2), and a file
# time past the last in every time zone (2108-01-02 UTC), to which later ones are cut before
# they become a local time (a bad clock's year 33658 is past what a local time can hold).
ZIP_FIRST, ZIP_LAST = (1980, 1, 1, 0, 0, 0), (2107, 12, 31, 23, 59, 58)
ZIP_LAST_SECONDS = 4354905600.0
# zlib's level for the files the zip compresses, and the name ZipInfo gives it.
ZIP_LEVEL = 1
_LEVEL_ATTRIBUTE = "compress_level" if sys.version_info >= (3, 13) else "_compresslevel"
# Bytes of a mesh file read into the zip at a time: what the zip holds of it in memory.
COPY_BLOCK = 1 << 20


def download_names(run: Run) -> dict[str, str]:
    """The names the run's self-contained mesh files download under, by kind
    (``{"glb": "a_red_cube.glb"}``)."""
    return {kind: run.id + suffix for kind, suffix in SELF_CONTAINED.items() if kind in run.mesh}


def zip_name(run: Run) -> str:
    """The name of the run's mesh zip (``a_red_cube.zip``)."""
    return f"{run.id}.zip"


def zip_only(run: Run) -> list[str]:
    """The run's mesh files that the page offers only in its zip (the OBJ, MTL and texture,
    which name each other), relative to the workspace."""
    return [rel for kind, rel in run.mesh.items() if kind not in SELF_CONTAINED]


def zip_members(run: Run, leave_out: Collection[str] = ()) -> list[tuple[str, str]]:
    """What the run's mesh zip holds: (the file relative to the workspace, its name in the zip),
    empty when the run has no mesh files, or none but those in ``leave_out`` (workspace files
    the zip leaves out). The files keep their names, side by side in one folder named after the
    run, so the OBJ finds its MTL and the MTL its texture once extracted."""
    rels = [rel for rel in run.mesh.values() if rel not in leave_out]
    if not rels:
        return []
    rels += [rel for rel in ZIP_EXTRAS if rel in run.data_files and rel not in leave_out]
    return [(rel, f"{run.id}/{PurePosixPath(rel).name}") for rel in rels]


def write_zip(run: Run, target: BinaryIO, leave_out: Collection[str] = ()) -> None:
    """Write the run's mesh zip (:func:`zip_members`), made from its workspace's files as they
    are now, into ``target`` (a file open for writing), each file copied in blocks of
    :data:`COPY_BLOCK`: the server held a file and its zip whole, so a 200 MB OBJ took its peak
    from 51 to 254 MB. ``OSError`` when one of them cannot be read (an export replacing them)
    or ``target`` cannot be written."""
    workspace = Path(run.workspace or "")  # none: no mesh files, no members
    folders: dict[Path, int] = {}
    with contextlib.ExitStack() as held, zipfile.ZipFile(target, "w") as archive:
        for rel, name in zip_members(run, leave_out):
            source = workspace / rel
            # read_run lists only files inside the workspace; checked again, as the server does.
            if not source.resolve().is_relative_to(workspace):
                continue
            with _open_in_folder(source, folders, held) as file:
                status = os.fstat(file.fileno())
                # The file's own local time, within the zip format's dates (1980 to 2107): a
                # file dated 2200 by a bad clock, or 1970 west of Greenwich, made zipfile raise.
                seconds = min(max(status.st_mtime, 0.0), ZIP_LAST_SECONDS)
                stamp = min(max(time.localtime(seconds)[:6], ZIP_FIRST), ZIP_LAST)
                info = zipfile.ZipInfo(name, date_time=stamp)
                info.external_attr = 0o644 << 16
                stored = PurePosixPath(rel).suffix.lower() in STORED_SUFFIXES
                info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
                # Level 1: a builtin:shapes export's mesh files (1.47 MB) zip to 776 KB in 25 ms,
                # against 736 KB in 96 ms at zlib's default level 6 (2-core CPU). ZipFile.open
                # takes the level from the entry only (compress_level from Python 3.13 on).
                setattr(info, _LEVEL_ATTRIBUTE, ZIP_LEVEL)
                # Its size as it is opened: zipfile chooses ZIP64 headers by it (over 2 GiB).
                info.file_size = status.st_size
                with archive.open(info, "w") as member:
                    shutil.copyfileobj(file, member, COPY_BLOCK)


def _open_in_folder(source: Path, folders: dict[Path, int], held: contextlib.ExitStack) -> BinaryIO:
    """``source`` opened for reading, looked up in its folder as the zip first opened that
    folder (``folders``: each folder's open descriptor, closed by ``held``). An export swaps a
    whole new ``mesh/`` in by renames (``dreamtext.export.write_all_atomically``): files read
    by their paths across a swap made a zip of one export's OBJ beside the next one's PLY and
    mesh.json. Through the folder opened once, every file is of one export, or one is gone
    (``OSError``: the old folder removed after the swap)."""
    if os.open not in os.supports_dir_fd:  # Windows: by path
        return source.open("rb")
    folder = folders.get(source.parent)
    if folder is None:
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
        folder = folders[source.parent] = os.open(source.parent, flags)
        held.callback(os.close, folder)
    return open(os.open(source.name, os.O_RDONLY, dir_fd=folder), "rb")
