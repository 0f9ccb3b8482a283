"""Values of a run's mesh zip (``view.downloads``) that the other view tests leave open: how
each member is stored and the permissions it extracts with."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

from test_view import make_obj_run

from dreamtext.view import Catalog, read_run
from dreamtext.view.downloads import zip_bytes


def _zip_of(tmp_path: Path) -> zipfile.ZipFile:
    make_obj_run(tmp_path / "runs" / "a_red_apple", "a red apple", (200, 30, 30))
    (found,) = Catalog([tmp_path / "runs"]).runs()
    return zipfile.ZipFile(io.BytesIO(zip_bytes(read_run(found))))


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
