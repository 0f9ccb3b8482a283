"""Values of the pages' data (``view.page``) that the other view tests leave open."""

from __future__ import annotations

import json
import re
import time
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


def _run_of(tmp_path: Path):
    """A running run with a 1,000-line log (a 10,000-step run's, a line every 10 steps), read
    as the run page's poll reads it."""
    from test_view import RUNNING, log_record, write_lines

    from dreamtext.view import Catalog, read_run

    ws = make_run(tmp_path / "runs" / "long", "a long run", steps=(), final=False, status=RUNNING)
    write_lines(ws / "log.jsonl", (log_record(s) for s in range(10, 10_001, 10)), "w")
    catalog = Catalog([tmp_path / "runs"])
    return ws, lambda: read_run(catalog.find("long"))


def test_a_poll_of_an_unchanged_run_reuses_its_text_instead_of_encoding_its_curves(
    tmp_path: Path, monkeypatch
):
    """A run page's poll of a run with nothing new encoded its ~1,000 curve records twice (its
    text for the tag, their digest for the cursor; 3.1 ms of the 6.3 ms a 304 cost), to find
    them the same. It answers from the text it made last, tag and cursor alike."""
    from dreamtext.view import page
    from dreamtext.view.page import RunText, server_links

    _, read = _run_of(tmp_path)
    links = server_links("api/run/long.json")
    run_text = RunText()
    first = run_text(read(), links)
    encoded: list[int] = []
    dumps = page.json.dumps
    monkeypatch.setattr(page.json, "dumps", lambda v, **k: encoded.append(1) or dumps(v, **k))
    again = run_text(read(), links, first.data["cursor"])
    assert again.text is first.text and again.etag == first.etag
    assert again.data["cursor"] == first.data["cursor"]
    # The rest of its data and the delta (no new records) are encoded; its curves are not.
    assert len(encoded) == 2
    assert json.loads(again.delta)["tails"]["series"]["add"]["step"] == []


def test_a_run_changed_in_any_way_gets_the_text_a_fresh_server_makes(tmp_path: Path):
    """The text kept for a run is reused only for the same curves and the same text of the
    rest: a new log line, a status changed, a config's 1 turned 1.0 (equal in Python, not in
    JSON) each get the text, tag and cursor that a server that kept nothing makes."""
    from test_view import log_record, write_lines

    from dreamtext.view.page import RunText, server_links

    ws, read = _run_of(tmp_path)
    links = server_links("api/run/long.json")
    run_text = RunText()
    config = json.loads((ws / "config.json").read_text())

    def changes():
        yield lambda: write_lines(ws / "log.jsonl", [log_record(10_010)])
        yield lambda: (ws / "status.json").write_text(
            json.dumps({**json.loads((ws / "status.json").read_text()), "step": 10_010})
        )
        yield lambda: (ws / "config.json").write_text(json.dumps({**config, "lr": 1}))
        yield lambda: (ws / "config.json").write_text(json.dumps({**config, "lr": 1.0}))
        yield lambda: (ws / "config.json").write_text(json.dumps({**config, "lr": True}))

    texts = [run_text(read(), links).text]
    for change in changes():
        change()
        time.sleep(0.02)  # a later mtime for the viewer's file clocks
        made_afresh = RunText()
        made_afresh._key = run_text._key  # the same signing key: the same cursors
        answer, fresh = run_text(read(), links), made_afresh(read(), links)
        assert answer.text == fresh.text and answer.etag == fresh.etag
        assert answer.text != texts[-1]
        texts.append(answer.text)


def _previews_resolved(folder: Path) -> list[dict]:
    """A run's previews as the code before stop 85 listed them: each path resolved."""
    from dreamtext.view.workspaces import _STEP_PREVIEW, _is_file_inside

    try:
        names = sorted(p.name for p in (folder / "previews").iterdir())
    except OSError:
        return []
    out = [
        {"step": int(match.group(1)), "path": f"previews/{name}"}
        for name in names
        if (match := _STEP_PREVIEW.fullmatch(name)) and _is_file_inside(folder, f"previews/{name}")
    ]
    out.sort(key=lambda p: p["step"])
    if _is_file_inside(folder, "previews/final.png"):
        out.append({"step": None, "path": "previews/final.png"})
    return out


def _live_run(tmp_path: Path, lines: int = 300, previews: int = 12) -> Path:
    from test_view import RUNNING, log_record, write_lines, write_png

    ws = make_run(tmp_path / "runs" / "long", "a long run", steps=(), final=False, status=RUNNING)
    write_lines(ws / "log.jsonl", (log_record(s) for s in range(10, 10 * lines + 1, 10)), "w")
    for s in range(250, 250 * previews + 1, 250):
        write_png(ws / "previews" / f"step_{s:06d}.png")
    return ws


def test_a_poll_resolves_only_the_previews_that_are_links(tmp_path: Path, monkeypatch):
    """Each poll of a run page resolved each preview's path (1.1 ms for a 10,000-step run's
    38): one that is no link, in a ``previews`` folder that is none, in a run folder that is
    its own real path, lies inside the run as listed. A link among them is still resolved."""
    from dreamtext.view import workspaces
    from dreamtext.view.workspaces import _previews

    ws = _live_run(tmp_path, lines=10, previews=38)
    (ws / "previews" / "step_099999.png").symlink_to(ws / "previews" / "step_000250.png")
    looked_up: list[str] = []
    place = workspaces._file_place
    monkeypatch.setattr(
        workspaces, "_file_place", lambda folder, rel: looked_up.append(rel) or place(folder, rel)
    )
    listed = _previews(ws)
    assert len(listed) == 40 and listed[-1]["step"] == 99999  # make_run's step 10, 38, the link
    assert looked_up == ["previews/step_099999.png"]


def test_previews_listed_without_resolving_each_are_those_resolving_each_lists(tmp_path: Path):
    """Links in and out of the run, to a hidden file or a folder, a folder named as a preview,
    the ``previews`` folder a link, the run's folder reached through a link: the previews
    listed are those that resolving every path lists."""
    import os

    from test_view import write_png

    from dreamtext.view.workspaces import _previews

    ws = _live_run(tmp_path, lines=10, previews=6)
    previews = ws / "previews"
    write_png(tmp_path / "out.png")
    write_png(ws / ".hidden.png")
    write_png(previews / "final.png")
    (previews / "step_000250.png").unlink()
    (previews / "step_000250.png").symlink_to(tmp_path / "out.png")
    (previews / "step_000500.png").unlink()
    (previews / "step_000500.png").symlink_to("../.hidden.png")
    (previews / "step_000750.png").unlink()
    (previews / "step_000750.png").symlink_to("step_001000.png")
    (previews / "step_001250.png").unlink()
    (previews / "step_001250.png").mkdir()
    (previews / "step_002000.png").symlink_to(previews)
    assert [p["step"] for p in _previews(ws)] == [10, 750, 1000, 1500, None]
    assert _previews(ws) == _previews_resolved(ws)
    os.symlink(ws, tmp_path / "through")
    assert _previews(tmp_path / "through") == _previews_resolved(tmp_path / "through") == []
    os.rename(previews, ws / "p")
    os.symlink("p", previews)
    assert _previews(ws) == _previews_resolved(ws) and len(_previews(ws)) == 5
    previews.unlink()
    os.symlink(tmp_path / "runs" / "long" / "p", previews)
    assert _previews(ws) == _previews_resolved(ws)
    os.rename(ws / "p", ws / ".p")  # a hidden folder, then one out of the run
    previews.unlink()
    os.symlink(".p", previews)
    assert _previews(ws) == _previews_resolved(ws) == []
    os.rename(ws / ".p", tmp_path / "p")
    previews.unlink()
    os.symlink(tmp_path / "p", previews)
    assert _previews(ws) == _previews_resolved(ws) == []
