"""Values of the pages' data (``view.page``) that the other view tests leave open."""

from __future__ import annotations

import json
import math
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


def _whole_answers(key: bytes):
    """A ``RunText`` that answers as the code before stop 85 did, the reference for the one
    that encodes less: every part's digest and the text encoded from the whole data. Made
    afresh for each answer (nothing kept), with ``key``: the cursors of the server's."""
    from dreamtext.view.page import RUN_PARTS, RunText

    class WholeText(RunText):
        def _encoded(self, run, data, rest):
            parts = {name: self._part(run, data["run"], name) for name in RUN_PARTS}
            data["cursor"] = self._cursor(run.id, parts)
            return parts, script_json(data)

    def answer(run, links, since):
        whole = WholeText()
        whole._key = key
        return whole(run, links, since)

    return answer


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


def test_a_run_pages_polls_get_the_bytes_the_data_encoded_whole_gives(tmp_path: Path):
    """The series encoded once for the text and the cursor, the page's records found the
    same as the last answer's, the previews listed without resolving each: through a live
    run's changes (nothing new, new lines, a page two lines behind, previews new, deleted and
    replaced by links, the run finished, started again with --overwrite, its log past the
    2,000 records drawn whole) each poll's status, tag and body are those of the code before."""
    import shutil

    from test_view import RUNNING, get, log_record, serving, write_json, write_lines, write_png

    from dreamtext.view import Catalog, read_run
    from dreamtext.view.page import server_links
    from dreamtext.view.workspaces import _previews

    ws = _live_run(tmp_path)
    outside = tmp_path / "elsewhere.png"
    write_png(outside)
    step = [3000]

    def lines(k: int = 1, scale: float = 1.0) -> None:
        write_lines(
            ws / "log.jsonl", (log_record(step[0] + 10 * i, scale) for i in range(1, k + 1))
        )
        step[0] += 10 * k

    def overwrite(records: int, scale: float) -> None:
        shutil.rmtree(ws / "previews")
        write_png(ws / "previews" / "step_000250.png")
        write_json(ws / "status.json", RUNNING)
        write_lines(
            ws / "log.jsonl", (log_record(10 * i, scale) for i in range(1, records + 1)), "w"
        )
        step[0] = 10 * records

    def link_out(name: str) -> None:
        (ws / "previews" / name).unlink()
        (ws / "previews" / name).symlink_to(outside)

    def finish() -> None:
        lines()
        write_png(ws / "previews" / "final.png")
        write_json(ws / "status.json", {**RUNNING, "state": "finished", "step": step[0]})

    changes = [
        ("nothing new", lambda: None),
        ("a new log line", lines),
        ("another", lines),
        ("two lines, to a page two answers behind", lambda: lines(2)),
        ("a new preview", lambda: write_png(ws / "previews" / "step_003250.png")),
        ("a preview deleted", lambda: (ws / "previews" / "step_000500.png").unlink()),
        ("a preview now a link out of the run", lambda: link_out("step_000750.png")),
        ("the run finished", finish),
        ("started again with --overwrite", lambda: overwrite(200, 2.0)),
        ("a new line of the new run", lines),
        ("overwritten: as many records, other values", lambda: overwrite(201, 3.0)),
        ("past 2,000 records: drawn from some", lambda: lines(1900)),
        ("a line after", lines),
    ]
    catalog = Catalog([tmp_path / "runs"])
    with serving(catalog) as srv:
        whole = _whole_answers(srv.run_text._key)
        links = server_links("api/run/long.json", srv.poll_ms)
        first = get(srv, "/api/run/long.json")
        pages = [(json.loads(first[1])["cursor"], first[2]["ETag"])]
        for name, change in changes:
            change()
            time.sleep(0.02)  # a later mtime for the viewer's file clocks
            behind = name.startswith("two lines")
            cursor, tag = pages[-3 if behind else -1]
            status, body, headers = get(
                srv, f"/api/run/long.json?since={cursor}", {"If-None-Match": tag}
            )
            expected = whole(read_run(catalog.find("long")), links, cursor)
            assert headers["ETag"] == expected.etag, name
            if expected.etag == tag:
                assert (status, body) == (304, b""), name
            else:
                assert status == 200, name
                assert body.decode() == (expected.delta or expected.text), name
                pages.append((json.loads(body)["cursor"], headers["ETag"]))
            assert _previews(ws) == _previews_resolved(ws), name
        status, body, _ = get(srv, "/api/run/long.json")  # a page without a cursor
        assert body.decode() == whole(read_run(catalog.find("long")), links, None).text


def test_a_run_overwritten_with_as_many_records_is_sent_whole_not_as_the_last_answers_tail(
    tmp_path: Path,
):
    """A page whose cursor names the last answer's records is answered with the new records
    only where the run's first records are still those (compared with the records kept with
    that answer): a run started again with --overwrite, as many log lines as before with other
    values, gets its whole curves."""
    from test_view import log_record, write_lines

    from dreamtext.view import Catalog, read_run
    from dreamtext.view.page import RunText, server_links

    ws = _live_run(tmp_path, lines=200)
    catalog = Catalog([tmp_path / "runs"])
    links = server_links("api/run/long.json")
    run_text = RunText()
    first = run_text(read_run(catalog.find("long")), links)
    write_lines(ws / "log.jsonl", (log_record(s, 7.0) for s in range(10, 2001, 10)), "w")
    write_lines(ws / "log.jsonl", [log_record(2010, 7.0)])
    time.sleep(0.02)
    answer = json.loads(run_text(read_run(catalog.find("long")), links, first.data["cursor"]).delta)
    assert "series" not in answer["tails"]
    assert answer["run"]["series"]["loss"][:2] == [7.0 / 10, 7.0 / 20]
    assert len(answer["run"]["series"]["step"]) == 201


def _numbers(value) -> int:
    """How many numbers a JSON value holds."""
    if isinstance(value, dict):
        return sum(_numbers(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_numbers(v) for v in value)
    return isinstance(value, float)


def test_a_poll_after_a_new_log_line_encodes_the_series_once(tmp_path: Path, monkeypatch):
    """A run page's poll after a new log line encoded its curves three times (the text, the
    new cursor's digest, the digest of the records the page had: ~4.5 of the ~8.5 ms of CPU
    such a poll of a 1,000-line log took). The text and the cursor come of one encoding, and
    the page's records, those of the last answer, are compared as numbers."""
    from test_view import log_record, write_lines

    from dreamtext.view import Catalog, page, read_run
    from dreamtext.view.page import RunText, server_links

    ws = _live_run(tmp_path, lines=200)
    catalog = Catalog([tmp_path / "runs"])
    links = server_links("api/run/long.json")
    run_text = RunText()
    first = run_text(read_run(catalog.find("long")), links)
    write_lines(ws / "log.jsonl", [log_record(2010)])
    time.sleep(0.02)
    run = read_run(catalog.find("long"))
    series = _numbers(run.series)
    encoded: list[int] = []
    dumps = page.json.dumps
    monkeypatch.setattr(
        page.json, "dumps", lambda v, **k: encoded.append(_numbers(v)) or dumps(v, **k)
    )
    answer = run_text(run, links, first.data["cursor"])
    assert json.loads(answer.delta)["tails"]["series"]["keep"] == 200
    assert series <= sum(encoded) < series + 100  # the series once, and the small rest


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


def test_a_series_of_any_values_gets_the_text_and_cursor_that_encoding_it_whole_gives():
    """Where the series cannot be written from one encoding (a NaN, an infinity, a string
    holding ", ", a key that is no string, a value JSON has not) or the run's data holds the
    marks the series and cursor go in: the text, tag, cursor and answer to a page's cursor of
    the data encoded whole."""
    from dreamtext.view import page
    from dreamtext.view.page import RunText, server_links
    from dreamtext.view.workspaces import Run

    links = server_links("api/run/x.json")
    steps = [10.0, 20.0, 30.0, 40.0]
    values = [
        [1.0, None, -0.0, 2.5e-300],
        [1.0, math.nan, 3.0, 4.0],
        [1.0, 2.0, math.inf, 4.0],
        [1.0, "a, b", 3.0, 4.0],
        [1, True, [1.5, 2.5], None],
        [1.0, 2.0, 3.0, {1, 2}],
    ]
    for settled in (0, 2, 4):
        for loss in values:
            for prompt in ("a cube", page._SERIES_MARK, page._CURSOR_MARK):
                run = Run(id="x", name="x", workspace=None, prompt=prompt)
                run.series = {"step": steps, "lösś": loss}
                run.series_settled = settled
                if isinstance(loss[3], set):
                    run.series = {"step": steps, 5: loss[:3]}
                run_text, whole = RunText(), _whole_answers(b"k" * 16)
                run_text._key = b"k" * 16
                first = run_text(run, links)
                expected = whole(run, links, None)
                assert (first.text, first.etag) == (expected.text, expected.etag), (loss, prompt)
                run.series = {k: [*v, 50.0] for k, v in run.series.items()}
                answer = run_text(run, links, first.data["cursor"])
                expected = whole(run, links, first.data["cursor"])
                assert (answer.text, answer.delta) == (expected.text, expected.delta)
