"""``dreamtext view --static OUT``: the gallery and run pages as a folder that opens from file://.

    OUT/index.html                      the gallery
    OUT/static/                         app.js, app.css, three.js and its license
    OUT/runs/<id>/index.html            a run's page
    OUT/runs/<id>/files/...             the files it shows (previews, turntable, PLY, config, log,
                                        mesh.json); the PLY named after the run (``copy_name``)
    OUT/runs/<id>/mesh.glb.js           the GLB, as a script: a file:// page cannot fetch() a file
    OUT/runs/<id>/<id>.zip              the OBJ with its MTL and texture (downloads.write_zip)

Each file is stored once (users copy these folders over ssh): the zip holds only the mesh files
that the page offers in it alone (``downloads.zip_only``), the script the GLB (the 3D view reads
it, and the page makes the GLB's download, ``a_red_cube.glb``, of its bytes), and ``files/`` all
the others.

The folder is written beside OUT and renamed into place, so an interrupted export leaves nothing
half-written; an earlier export in OUT is replaced, any other folder with files in it is refused.
"""

from __future__ import annotations

import base64
import errno
import os
import posixpath
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote

from dreamtext.errors import DreamtextError, copy_file, shell_word, shown_path
from dreamtext.processes import lock_folder
from dreamtext.runfiles import check_writable, file_mode
from dreamtext.view.downloads import download_names, write_zip, zip_members, zip_name, zip_only
from dreamtext.view.page import (
    ASSETS,
    Links,
    asset_bytes,
    gallery_json,
    render_page,
    run_page_json,
)
from dreamtext.view.workspaces import Catalog, Run, read_run

MARKER = ".dreamtext-view"
GLB_SCRIPT = "mesh.glb.js"
MOUNT_POINT = (
    "--static {out_dir} is a mount point, which the export cannot replace; pass a new folder "
    "inside it"
)


def export_static(folders: list[Path], out_dir: Path) -> Path:
    """Write the pages of the runs under ``folders`` into ``out_dir``; return ``out_dir``."""
    catalog = Catalog(folders)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DreamtextError(f"{shown_path(out_dir)} is a file; pass a folder to --static")
    if out_dir.is_symlink() and not out_dir.exists():  # the rename into place would fail
        raise DreamtextError(
            f"{shown_path(out_dir)} is a link to {shown_path(os.readlink(out_dir))}, which does "
            "not exist; make that folder, or pass another folder to --static"
        )
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise DreamtextError(
            f"{shown_path(out_dir)} already holds files; pass a new or empty folder to --static "
            "(an earlier `dreamtext view --static` folder is replaced)"
        )
    if (out_dir / MARKER).is_file():
        _check_only_the_site(out_dir)
    _check_replaceable(out_dir)
    # A link to a folder (a web server's): the site goes into that folder, beside which it is
    # staged. Replaced itself, the link became a folder and its target was left as it was.
    target = out_dir.resolve() if out_dir.is_symlink() else out_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _write(catalog, staging)
        # Another export into the same folder swaps in turn: between this one's two renames it
        # found no OUT, renamed its own in, and this one's rename failed (a traceback).
        with lock_folder(target.parent):
            _replace(staging, target)
    except BaseException as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, OSError) and _names_a_file_in(error, staging):
            # A hidden name the user never saw: the CLI names --static's folder instead.
            raise OSError(error.errno, error.strerror) from error
        raise
    return out_dir


def _names_a_file_in(error: OSError, folder: Path) -> bool:
    """Whether ``error`` names ``folder`` or a file in it."""
    if error.filename is None:
        return False
    try:
        named = Path(os.path.abspath(os.fsdecode(error.filename)))
    except TypeError:
        return False
    return named.is_relative_to(os.path.abspath(folder))


# What an export writes at the top of its folder: whatever else is there, the user put there.
SITE_ENTRIES = frozenset({MARKER, "index.html", "static", "runs"})


def _check_only_the_site(out_dir: Path) -> None:
    """Refuse to replace an earlier export's ``out_dir`` that holds something the export did
    not write (notes, figures, a ``.git`` of a site published from it): the replacement
    removed it without a word."""
    added = sorted(p.name for p in out_dir.iterdir() if p.name not in SITE_ENTRIES)
    if added:
        names = ", ".join(shown_path(name) for name in added[:3])
        names += f" and {len(added) - 3} more" if len(added) > 3 else ""
        raise DreamtextError(
            f"{shown_path(out_dir)} holds files an earlier `dreamtext view --static` did not write "
            f"({names}), which replacing it would delete; move them out of it, or pass another "
            "folder to --static"
        )


def _check_replaceable(out_dir: Path) -> None:
    """Refuse, before anything is written, an ``out_dir`` that the rename into place cannot
    replace: one whose parent cannot be a folder or be written in, the folder the command runs
    in or one above it (``--static .`` in an empty folder: a rename of the working directory,
    which would also leave the shell in a deleted folder), and a mount point."""
    here = Path.cwd().resolve()
    target = out_dir.resolve()
    if target == here or target in here.parents:
        raise DreamtextError(
            f"--static {shown_path(out_dir)} is the folder this command runs in (or one above "
            "it), which the export cannot replace; pass a new folder, e.g. --static site"
        )
    if target.is_dir() and os.path.ismount(target):
        raise DreamtextError(MOUNT_POINT.format(out_dir=shown_path(out_dir)))
    check_writable(out_dir.parent, "give --static a folder you can write")


def copy_name(run: Run, rel: str) -> str:
    """Where the export copies a workspace file, relative to the run's ``files/``: where it lies
    in the workspace, but the GLB and PLY named after the run (``mesh/a_red_cube.glb``, as
    ``downloads.download_names``). A page opened from file:// cannot rename a download (Chromium
    ignores the ``download`` attribute there), so the copy's own name is the one it is saved as."""
    for kind, name in download_names(run).items():
        if run.mesh[kind] == rel:
            return posixpath.join(posixpath.dirname(rel), name)
    return rel


def stored_alone(run: Run) -> list[str]:
    """The workspace files the export copies into the run's ``files/``: every file the pages
    show but the GLB (its script holds it) and those only the zip holds
    (``downloads.zip_only``), which the zip therefore leaves out."""
    elsewhere = set(zip_only(run)) | {run.mesh.get("glb")}
    return [rel for rel in run.files() if rel not in elsewhere]


def stored_outside_zip(run: Run) -> list[str]:
    """The workspace files the run's folder holds outside its zip, which the zip therefore
    leaves out: those in ``files/`` (:func:`stored_alone`) and the GLB (its script)."""
    glb = [run.mesh["glb"]] if "glb" in run.mesh else []
    return stored_alone(run) + glb


def run_folder_path(run: Run, rel: str) -> str:
    """Where a workspace file is in the run's exported folder: the GLB's script, the zip (for
    a file only the zip holds: the OBJ, MTL, texture) or its copy in ``files/``."""
    if rel == run.mesh.get("glb"):
        return GLB_SCRIPT
    if rel in zip_only(run):
        return zip_name(run)
    return f"files/{copy_name(run, rel)}"


# The addresses of the exported pages: a run's page lies in ``runs/<id>/``, the gallery at the top.
RUN_LINKS = Links(
    static="../../static/",
    gallery="../../index.html",
    run=lambda run_id: f"../{quote(run_id)}/index.html",
    file=lambda run, rel: quote(run_folder_path(run, rel)),
    local_paths=False,
    mesh_zip=lambda run: quote(zip_name(run)),
    zip_leaves_out=stored_outside_zip,
)
GALLERY_LINKS = Links(
    static="static/",
    gallery="index.html",
    run=lambda run_id: f"runs/{quote(run_id)}/index.html",
    file=lambda run, rel: f"runs/{quote(run.id)}/{quote(run_folder_path(run, rel))}",
    local_paths=False,
)


def _write(catalog: Catalog, out: Path) -> None:
    """Each run's folder written as its run is read (one run's curves in memory at a time: 1,000
    runs' at once took ~270 MB), then the gallery from what the cards show of each."""
    (out / "static").mkdir()
    for name in ASSETS:
        (out / "static" / name).write_bytes(asset_bytes(name))
    cards = []
    for location in catalog.runs():
        before = _export_folders(location.path)
        run = read_run(location, follow_logs=False)
        if location.path is not None and not location.path.is_dir():
            continue  # removed since the scan found it: read as an empty run, shown 'interrupted'
        try:
            try:
                _write_run(run, out / "runs" / run.id, RUN_LINKS)
                _check_not_swapped(location.path, before)
            except FileNotFoundError:  # its files replaced as they were read (an export): again
                shutil.rmtree(out / "runs" / run.id, ignore_errors=True)
                before = _export_folders(location.path)
                run = read_run(location, follow_logs=False)
                _write_run(run, out / "runs" / run.id, RUN_LINKS)
                _check_not_swapped(location.path, before)
        except FileNotFoundError as error:
            raise DreamtextError(
                f"the files of {shown_path(run.workspace)} changed as they were copied "
                f"({shown_path(error.filename)} "
                "went away twice); run `dreamtext view --static` again once its export is done"
            ) from None
        except PermissionError as error:
            raise DreamtextError(
                f"cannot read {shown_path(error.filename)}: permission denied; make the run's "
                f"files readable (chmod -R a+rX {shell_word(run.workspace)}), or leave that run "
                "out of the folders given"
            ) from None
        # A card shows none of the curves (run_json without ``full``).
        cards.append(replace(run, series={}, descriptor_steps=[], descriptor_loss=[]))
    links = replace(GALLERY_LINKS, folders=tuple(folder.name for folder, _ in catalog.sources))
    gallery = gallery_json(cards, links)
    (out / "index.html").write_text(render_page(gallery, links), encoding="utf-8")
    (out / MARKER).write_text("written by dreamtext view --static\n", encoding="utf-8")


# The folders an export replaces each as a whole (dreamtext.export.write_all_atomically).
EXPORT_FOLDERS = ("mesh", "video")


def _export_folders(workspace: Path | None) -> tuple[tuple[int, int] | None, ...]:
    """Which ``mesh/`` and ``video/`` folders ``workspace`` holds now (device and inode; ``None``
    for one it has not): an export swaps in new ones by renames."""
    identities = []
    for name in EXPORT_FOLDERS:
        try:
            st = os.stat(Path(workspace or "") / name) if workspace is not None else None
        except OSError:
            st = None
        identities.append(None if st is None else (st.st_dev, st.st_ino))
    return tuple(identities)


def _check_not_swapped(workspace: Path | None, before: tuple) -> None:
    """Raise ``FileNotFoundError`` (the copy's retry) when an export swapped ``workspace``'s
    ``mesh/`` or ``video/`` since ``before`` (:func:`_export_folders`): the page's figures
    were read from one export and files copied from the next (mesh.json's 2644 faces on the
    page beside the 1296-face GLB and PLY it offered)."""
    now = _export_folders(workspace)
    for name, was, is_now in zip(EXPORT_FOLDERS, before, now, strict=True):
        if was != is_now:
            raise FileNotFoundError(errno.ENOENT, "replaced by an export", str(workspace / name))


def _write_run(run: Run, folder: Path, links: Links) -> None:
    """A run's page, the files it shows, its GLB as a script and its mesh zip."""
    folder.mkdir(parents=True)
    _copy_files(run, stored_alone(run), folder / "files")
    outside = stored_outside_zip(run)
    if zip_members(run, outside):
        # Written a block of each file at a time: made in memory, a 24 MB OBJ's zip took the
        # export's peak to 18 MiB.
        with (folder / zip_name(run)).open("wb") as target:
            write_zip(run, target, outside)
    glb_script = None
    if "glb" in run.mesh and _write_glb_script(run, folder / GLB_SCRIPT):
        glb_script = GLB_SCRIPT
    page = render_page(run_page_json(run, links, glb_script), links)
    (folder / "index.html").write_text(page, encoding="utf-8")


def _copy_files(run: Run, rels: list[str], files: Path) -> None:
    if run.workspace is None:
        return
    workspace = Path(run.workspace)
    for rel in rels:
        source = (workspace / rel).resolve()
        # read_run only lists files inside the workspace; checked again, as the server does.
        if not source.is_relative_to(workspace) or not source.is_file():
            continue
        target = files / copy_name(run, rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_file(source, target)


def _write_glb_script(run: Run, script: Path) -> bool:
    """The run's GLB as a script that sets ``window.dreamtextGlb`` to its bytes in base64 (the
    page's one copy of them: the 3D view reads them, the download is made of them); whether the
    workspace still held the GLB to write it."""
    workspace = Path(run.workspace or "")
    glb = (workspace / run.mesh["glb"]).resolve()
    # read_run only lists files inside the workspace; checked again, as the server does.
    if run.workspace is None or not glb.is_relative_to(workspace) or not glb.is_file():
        return False
    encoded = base64.b64encode(glb.read_bytes()).decode("ascii")
    script.write_text(f'window.dreamtextGlb = "{encoded}";\n', encoding="ascii")
    return True


def _replace(staging: Path, out_dir: Path) -> None:
    """Move the finished export into place (an earlier export or empty folder gives way)."""
    staging.chmod(file_mode(0o777))  # as mkdir makes it: mkdtemp's is private
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
    old.rmdir()
    try:
        out_dir.rename(old)
    except OSError as error:
        if error.errno != errno.EBUSY:  # a mount point os.path.ismount misses (a bind mount)
            raise
        raise DreamtextError(MOUNT_POINT.format(out_dir=shown_path(out_dir))) from None
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
