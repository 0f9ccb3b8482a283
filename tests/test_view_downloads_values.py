"""Values of a run's mesh zip (``view.downloads``) that the other view tests leave open: how
each member is stored and the permissions it extracts with."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

from PIL import Image
from test_view import make_obj_run

from dreamtext.view import Catalog, read_run
from dreamtext.view.downloads import write_zip


def zipped(run) -> io.BytesIO:
    """The run's mesh zip, as write_zip writes it, in memory to read back."""
    buffer = io.BytesIO()
    write_zip(run, buffer)
    buffer.seek(0)
    return buffer


def _zip_of(tmp_path: Path) -> zipfile.ZipFile:
    make_obj_run(tmp_path / "runs" / "a_red_apple", "a red apple", (200, 30, 30))
    (found,) = Catalog([tmp_path / "runs"]).runs()
    return zipfile.ZipFile(zipped(read_run(found)))


def test_zip_members_extract_as_readable_regular_files(tmp_path: Path):
    """``unzip`` on Unix gives each file the mode the zip records: rw-r--r-- (0o644), as the
    export writes them; a zip that records none extracts them private (rw-------)."""
    for info in _zip_of(tmp_path).infolist():
        assert info.external_attr >> 16 == 0o644, info.filename
        assert not stat.S_ISDIR(info.external_attr >> 16)


def test_the_texture_is_stored_and_the_text_files_deflated(tmp_path: Path):
    """A PNG is already compressed: stored as it is; the OBJ and MTL (text) are deflated."""
    archive = _zip_of(tmp_path)
    kinds = {info.filename: info.compress_type for info in archive.infolist()}
    assert kinds["a_red_apple/albedo.png"] == zipfile.ZIP_STORED
    assert kinds["a_red_apple/mesh.obj"] == zipfile.ZIP_DEFLATED
    assert kinds["a_red_apple/mesh.mtl"] == zipfile.ZIP_DEFLATED


def test_a_zip_read_while_an_export_swaps_mesh_in_is_all_of_one_export(tmp_path, monkeypatch):
    """An export swaps a new ``mesh/`` in by renames while the viewer zips the old one: files
    read by path after the swap were the new export's, so a downloaded zip held one export's
    OBJ beside the next one's MTL, texture, PLY and mesh.json."""
    run = make_obj_run(tmp_path / "runs" / "a_red_apple", "a red apple", (200, 30, 30))
    (found,) = Catalog([tmp_path / "runs"]).runs()
    listed = read_run(found)
    newer = make_obj_run(tmp_path / "newer" / "a_red_apple", "a red apple", (30, 30, 200))
    (newer / "mesh" / "mesh.ply").write_bytes(b"ply-of-the-next-export")
    open_member, swapped = zipfile.ZipFile.open, []

    def swap_after_the_first_member(archive, info, *args, **kwargs):
        if archive.infolist() and not swapped:  # a member written: as write_all_atomically,
            (run / "mesh").rename(run / ".mesh-retired")  # the old folder renamed away,
            (newer / "mesh").rename(run / "mesh")  # the new one in
            swapped.append(True)
        return open_member(archive, info, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", swap_after_the_first_member)
    archive = zipfile.ZipFile(zipped(listed))
    assert swapped
    assert archive.read("a_red_apple/mesh.ply") == b"ply-not-really"
    texture = Image.open(io.BytesIO(archive.read("a_red_apple/albedo.png")))
    assert texture.getpixel((0, 0)) == (200, 30, 30)
