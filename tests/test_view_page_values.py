"""Values of the pages' data (``view.page``) that the other view tests leave open."""

from __future__ import annotations

import json
import re
from pathlib import Path

from test_view import make_run

from dreamtext.view import export_static
from dreamtext.view.page import script_json


def test_a_static_pages_data_carries_no_etag(tmp_path: Path):
    """A static export has nothing to poll: its pages' data tag is empty (a tag there would
    make the page send a conditional poll to an api it does not have)."""
    make_run(tmp_path / "runs" / "cube", "a cube")
    out = export_static([tmp_path / "runs"], tmp_path / "site")
    for page in (out / "index.html", out / "runs" / "cube" / "index.html"):
        text = page.read_text("utf-8")
        assert re.findall(r'id="dreamtext-data"[^>]* data-etag="([^"]*)"', text) == [""], page


def test_a_lone_surrogate_is_written_as_its_escape():
    """A folder name that is not UTF-8 (Python keeps byte 0xff as U+DCFF): the JSON holds
    ``\\udcff`` (six ASCII characters), which encodes as UTF-8 and JavaScript reads back."""
    text = script_json({"name": "caf\udcff"})
    assert text == '{"name": "caf\\udcff"}'
    text.encode("utf-8")
    assert json.loads(text) == {"name": "caf\udcff"}


def test_links_without_a_zip_address_offer_no_zip(tmp_path: Path):
    """``Links.mesh_zip`` None (pages that do not serve zips): a run with mesh files gets no
    zip link, rather than a call of None."""
    import dataclasses

    from dreamtext.view import Catalog, read_run
    from dreamtext.view.page import run_json
    from dreamtext.view.static import RUN_LINKS

    make_run(tmp_path / "runs" / "cube", "a cube")
    (found,) = Catalog([tmp_path / "runs"]).runs()
    run = read_run(found)
    assert run.mesh  # it has a GLB, which the zip would hold
    links = dataclasses.replace(RUN_LINKS, mesh_zip=None, zip_leaves_out=lambda run: ())
    assert run_json(run, links, full=True)["mesh_zip"] is None
