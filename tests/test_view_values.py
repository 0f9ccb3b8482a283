"""`dreamtext view`'s answers checked against values worked out by hand (or from the RFCs), for
the lines the mutation round found untested: byte ranges, conditional requests, the card's
state and figures, the static folder and the downloads."""

import io
import json
import shlex
import socket
import unicodedata
from pathlib import Path

import pytest
from test_view import get, make_run, root, serving  # noqa: F401  (root: the fixture)

from dreamtext.errors import DreamtextError
from dreamtext.view import Catalog

VIDEO = "/files/cube/video/turntable.mp4"


def test_byte_ranges_at_the_edges_of_the_file(root: Path):  # noqa: F811
    """RFC 9110 14.1.2: a last-pos past the end means the end; a suffix longer than the file
    means the whole file; ``bytes=5-5`` is one byte. make_run's video is 1,024 bytes."""
    data = (root / "cube" / "video" / "turntable.mp4").read_bytes()
    assert len(data) == 1024
    with serving(Catalog([root])) as srv:
        status, body, headers = get(srv, VIDEO, {"Range": "bytes=1000-99999"})
        assert (status, body) == (206, data[1000:])
        assert headers["Content-Range"] == "bytes 1000-1023/1024"
        assert headers["Content-Length"] == "24"
        status, body, headers = get(srv, VIDEO, {"Range": "bytes=-5000"})
        assert (status, body) == (206, data)
        assert headers["Content-Range"] == "bytes 0-1023/1024"
        status, body, headers = get(srv, VIDEO, {"Range": "bytes=5-5"})
        assert (status, body, headers["Content-Range"]) == (206, data[5:6], "bytes 5-5/1024")
        # Past the end: nothing to send, and the size the client may ask within.
        status, body, headers = get(srv, VIDEO, {"Range": "bytes=1024-"})
        assert (status, body, headers["Content-Range"]) == (416, b"", "bytes */1024")


def test_if_none_match_star_is_any_answer(root: Path):  # noqa: F811
    """RFC 9110 13.1.2: ``If-None-Match: *`` is false whenever the resource exists: 304."""
    with serving(Catalog([root])) as srv:
        for api in ("/api/runs.json", "/api/run/cube.json"):
            status, body, _ = get(srv, api, {"If-None-Match": "*"})
            assert (status, body) == (304, b"")
            assert get(srv, api, {"If-None-Match": '"x", *'})[0] == 304


def test_a_file_cut_short_while_sent_ends_the_connection_not_the_wait(root, monkeypatch):  # noqa: F811
    """The handler's half of test_a_file_cut_short_while_sent_closes_the_connection: once the
    copy says bytes are missing, the connection closes, so the client sees a short body at
    once instead of waiting for bytes that never come (and reading the next answer as them)."""
    import http.client

    import dreamtext.view.server as server

    def half(source, target, length, chunk=1 << 16):  # a log truncated after its size was sent
        target.write(source.read(length // 2))
        return length - length // 2

    monkeypatch.setattr(server, "_copy", half)
    with serving(Catalog([root])) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.server_port, timeout=5)
        conn.request("GET", VIDEO)
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("Content-Length") == "1024"
        try:
            body = response.read()
        except http.client.IncompleteRead as error:
            body = error.partial
        conn.close()
    assert len(body) == 512


def read_all(conn) -> tuple[int, bytes]:
    """A response's status and its body as far as it came (a connection closed early)."""
    import http.client

    response = conn.getresponse()
    try:
        body = response.read()
    except http.client.IncompleteRead as error:
        body = error.partial
    return response.status, body


def test_a_bug_after_the_status_line_sends_no_second_answer(root, monkeypatch):  # noqa: F811
    """A 500 goes out only while no status line has: once a 200's headers are sent, a second
    status line would be read as the body's bytes. The connection closes instead."""
    import http.client
    import io

    import dreamtext.view.server as server

    def broken(source, target, length, chunk=1 << 16):
        raise RuntimeError("a bug mid-copy")

    monkeypatch.setattr(server, "_copy", broken)
    log = io.StringIO()
    with serving(Catalog([root]), log=log) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.server_port, timeout=5)
        conn.request("GET", VIDEO)
        status, body = read_all(conn)
        conn.close()
    assert status == 200 and b"internal error" not in body and b"HTTP/1.1" not in body
    assert "RuntimeError: a bug mid-copy" in log.getvalue()


def test_a_zip_whose_files_are_being_replaced_is_503_try_again(root, monkeypatch):  # noqa: F811
    """An export swapping mesh/ between the listing and the read: 503 (a retry will work), not
    500 (a bug) nor 403 (a permission no retry fixes)."""
    import dreamtext.view.server as server

    def swapped(run, target, leave_out=()):
        raise FileNotFoundError(2, "No such file or directory", "mesh/mesh.glb")

    monkeypatch.setattr(server, "write_zip", swapped)
    with serving(Catalog([root])) as srv:
        status, body, headers = get(srv, "/download/cube/cube.zip")
    assert status == 503 and b"being replaced" in body
    assert headers["Content-Type"].startswith("text/plain")


def test_a_zip_with_no_room_in_the_temporary_folder_names_tmpdir(root, monkeypatch):  # noqa: F811
    """The zip is written into a temporary file before it is sent: a full TMPDIR is said as
    such (507), not as mesh files being replaced (a retry would fail the same)."""
    import errno
    import tempfile

    import dreamtext.view.server as server

    def full(run, target, leave_out=()):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(server, "write_zip", full)
    with serving(Catalog([root])) as srv:
        status, body, _ = get(srv, "/download/cube/cube.zip")
    assert status == 507
    assert body.decode() == (
        f"no room for the zip in {tempfile.gettempdir()}: No space left on device; free some, "
        "or start dreamtext view with TMPDIR set to a folder with room\n"
    )


def batch_root_with_one_line(tmp_path: Path, ended_ago: float, files_after_end: float):
    """A root whose batch.jsonl says its one run failed ``ended_ago`` seconds ago, and whose run
    (no status.json: an older writer) last wrote ``files_after_end`` seconds after that line."""
    import os
    import time
    from datetime import datetime, timezone

    from test_view import batch_record, write_records

    runs = tmp_path / "runs"
    run = make_run(runs / "cube", "a red cube", steps=(10,), final=False)
    ended = datetime.fromtimestamp(int(time.time() - ended_ago), timezone.utc)
    line = {**batch_record(1, "cube", "failed", "CUDA out of memory")}
    line["finished"] = ended.isoformat(timespec="seconds")
    write_records(runs / "batch.jsonl", [line])
    when = ended.timestamp() + files_after_end
    for path in [run, *run.rglob("*")]:
        os.utime(path, (when, when))
    return runs


def test_a_retry_shows_once_its_files_are_newer_than_the_lines_end_by_over_2_s(tmp_path: Path):
    """The batch line's "finished" is in whole seconds and the run's last files come just before
    it: files within 2 s of it are the attempt the line tells of (failed); files written 30 s
    after a line of 60 s ago are a retry's, which is running."""
    from test_view import location

    from dreamtext.view import read_run

    runs = batch_root_with_one_line(tmp_path / "a", ended_ago=10, files_after_end=1)
    status = read_run(location(Catalog([runs]), "cube")).status
    assert (status["state"], status["source"], status["error"]) == (
        "failed",
        "batch.jsonl",
        "CUDA out of memory",
    )
    runs = batch_root_with_one_line(tmp_path / "b", ended_ago=60, files_after_end=30)
    status = read_run(location(Catalog([runs]), "cube")).status
    assert (status["state"], status["source"]) == ("running", "files")


def old_run(folder: Path, steps, iters: int, final: bool) -> Path:
    """A run of before status.json, its files an hour old (no longer running)."""
    import os
    import time

    run = make_run(folder, "a red cube", steps=steps, iters=iters, final=final)
    past = time.time() - 3600
    for path in [run, *run.rglob("*")]:
        os.utime(path, (past, past))
    return run


def test_an_older_run_is_finished_when_its_log_reached_iters_or_it_saved_a_final_preview(
    tmp_path: Path,
):
    """Without status.json: trained to its last step (log step == iters; the trainer logs its
    last step as iters) or a final.png (written at the end of training) is finished; short of
    both, and quiet, interrupted."""
    from test_view import write_png

    from dreamtext.view import read_run

    trained = old_run(tmp_path / "trained", steps=(10, 20), iters=20, final=False)
    assert read_run(location_of(trained)).status["state"] == "finished"
    short = old_run(tmp_path / "short", steps=(10, 19), iters=20, final=False)
    assert read_run(location_of(short)).status["state"] == "interrupted"
    write_png(short / "previews" / "final.png")  # no mesh (--no-export), step short of iters
    assert read_run(location_of(short)).status["state"] == "finished"


def location_of(workspace: Path):
    (found,) = Catalog([workspace]).runs()
    return found


def test_previews_are_in_step_order_past_a_million_steps(tmp_path: Path):
    """The trainer names previews step_{step:06d}.png and runs up to 10,000,000 iters: at a
    million the name has seven digits and sorts before step_999990.png as text. The card's
    picture is the newest preview."""
    from test_view import write_png

    from dreamtext.view import read_run

    run = make_run(tmp_path / "long", "a red cube", final=False)
    for step in (999990, 1000000):
        write_png(run / "previews" / f"step_{step:06d}.png")
    shown = read_run(location_of(run))
    assert [p["step"] for p in shown.previews] == [10, 999990, 1000000]
    assert shown.picture() == ("previews/step_1000000.png", {"kind": "preview", "step": 1000000})


def test_a_folder_named_of_dots_and_underscores_gets_no_dot_segment_id(tmp_path: Path):
    """A run's id is its address (run/<id>/) and a static folder's runs/<id>/: "_.." must not
    become "..", which a browser resolves to the folder above."""
    runs = tmp_path / "runs"
    make_run(runs / "_..", "a red cube")
    make_run(runs / "x.", "a blue cube")
    ids = sorted(run.id for run in Catalog([runs]).runs())
    assert ids == ["run", "x"]


def test_hidden_folders_of_a_root_are_not_runs(tmp_path: Path):
    """A root's hidden folders (an editor's or a tool's, a static export's staging) are not
    listed, whatever they hold."""
    runs = tmp_path / "runs"
    make_run(runs / "cube", "a red cube")
    make_run(runs / ".cube.bak", "a red cube")
    assert [run.id for run in Catalog([runs]).runs()] == ["cube"]


def test_a_runs_file_that_links_out_of_it_is_not_listed(tmp_path: Path):
    """Nothing outside a workspace is served, so a link out of it is not offered either: not
    as a preview, not as the card's picture, not as a mesh to download."""
    from test_view import write_png

    from dreamtext.view import read_run

    outside = tmp_path / "elsewhere"
    write_png(outside / "final.png")
    (outside / "mesh.glb").write_bytes(b"glTF")
    run = make_run(tmp_path / "runs" / "cube", "a red cube")
    for rel, target in (("previews/final.png", "final.png"), ("mesh/mesh.glb", "mesh.glb")):
        (run / rel).unlink()
        (run / rel).symlink_to(outside / target)
    shown = read_run(location_of(run))
    assert [p["path"] for p in shown.previews] == ["previews/step_000010.png"]
    assert "glb" not in shown.mesh
    assert shown.picture() == ("previews/step_000010.png", {"kind": "preview", "step": 10})


def test_a_log_rewritten_in_place_to_the_same_size_is_read_again(tmp_path: Path):
    """Same file, same size, a new time: not a log that grew (nothing was appended), so it is
    parsed again from its start; a change far before its end (beyond the bytes kept to tell a
    rewrite) still shows."""
    import os

    from dreamtext.view.workspaces import log_figures

    log = tmp_path / "log.jsonl"
    lines = [json.dumps({"step": s, "gpu_mem_mib": 1000 + s}) for s in range(1, 101)]
    log.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    assert log_figures(log).peak_mem == 1100
    inode, size, mtime = log.stat().st_ino, log.stat().st_size, log.stat().st_mtime_ns
    with open(log, "r+b") as f:  # the first record's memory, as long a number as before
        f.write(json.dumps({"step": 1, "gpu_mem_mib": 9001}).encode())
    os.utime(log, ns=(mtime + 10**9, mtime + 10**9))
    assert (log.stat().st_ino, log.stat().st_size) == (inode, size)
    assert log_figures(log).peak_mem == 9001


def test_true_and_false_in_status_json_are_no_numbers(tmp_path: Path):
    """A hand-edited status.json's ``true`` is no step, iteration count or memory (Python's
    bool is an int): the card keeps the log's step and the config's iters."""
    from test_view import write_json

    from dreamtext.view import read_run

    run = make_run(tmp_path / "cube", "a red cube", steps=(10, 20), iters=20)
    status = {"state": "finished", "step": True, "iters": False, "gpu_mem_mib": True}
    write_json(run / "status.json", status)
    shown = read_run(location_of(run)).status
    assert (shown["step"], shown["iters"], shown["gpu_mem_mib"]) == (20, 20, None)
    assert type(shown["step"]) is int and type(shown["iters"]) is int


def test_a_batch_line_of_kind_image_makes_its_run_an_image_run(tmp_path: Path):
    """An image line's workspace from before config.json kept the stages' sections: the batch
    line's kind says what it is."""
    from test_view import batch_record, write_json, write_records

    runs = tmp_path / "runs"
    write_json(runs / "apple" / "config.json", {"prompt": "a shiny red apple", "iters": 20})
    write_records(runs / "batch.jsonl", [{**batch_record(1, "apple", "failed"), "kind": "image"}])
    (run,) = Catalog([runs]).runs()
    from dreamtext.view import read_run

    assert read_run(run).kind == "image"


def test_a_descriptor_stage_shows_the_newer_step_of_status_json_and_its_log(tmp_path: Path):
    """status.json is written at each log line; the descriptor's log may be ahead of it (a
    step logged, the status not yet rewritten): the card shows the larger step, 1200."""
    from test_view import make_image_run, write_json

    from dreamtext.view import read_run

    apple = make_image_run(tmp_path / "apple", "descriptor")  # its log ends at step 1200
    status = {"state": "running", "phase": "descriptor", "step": 1100, "iters": 2000}
    write_json(apple / "status.json", status)
    shown = read_run(location_of(apple)).status
    assert (shown["descriptor_step"], shown["descriptor_iters"]) == (1200, 2000)
    assert shown["step"] is None


def test_a_long_logs_curves_never_exceed_2000_records(tmp_path: Path):
    """CURVE_RECORDS (2,000) is the most records the curves are drawn from: with K = 5 curves
    (loss, loss_sds, t, its, gpu_mem_mib), B = (2000 - 2) // 10 = 199 buckets. A log in which
    each bucket of 16 records holds a distinct smallest and largest record of every curve, 200
    such buckets (3,200 records), would keep 2 + 2 * 5 * 200 = 2,002 records in 200 buckets
    (a B of 2000 // 10, leaving out the two ends)."""
    from dreamtext.view.workspaces import CURVE_RECORDS, read_log_curves

    keys = ("loss", "loss_sds", "t", "its", "gpu_mem_mib")
    records = []
    for i in range(3200):
        offset = i % 16
        record = {"step": i + 1}
        for j, key in enumerate(keys):
            record[key] = 0.5
            if offset == 2 * j + 1:
                record[key] = 0.0
            if offset == 2 * j + 2:
                record[key] = 1.0
        records.append(record)
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    _, curves = read_log_curves(log)
    assert CURVE_RECORDS == 2000
    assert len(curves["step"]) <= CURVE_RECORDS
    assert curves["step"][0] == 1 and curves["step"][-1] == 3200
    assert min(curves["loss"]) == 0.0 and max(curves["gpu_mem_mib"]) == 1.0


def test_file_addresses_carry_their_time_in_milliseconds():
    """A file rewritten within the same second (a preview, a re-export) gets a new address, so
    the browser fetches it again: the version is the mtime in ms; the zip's, its newest file's."""
    from dreamtext.view.page import server_links
    from dreamtext.view.workspaces import Run

    run = Run(id="cube", name="cube", workspace="/w/cube")
    run.mesh = {"obj": "mesh/mesh.obj", "mtl": "mesh/mesh.mtl"}
    run.mtimes = {"previews/final.png": 1700000000.123, "mesh/mesh.obj": 100.5}
    run.mtimes["mesh/mesh.mtl"] = 200.25
    links = server_links("api/run/cube.json")
    assert links.file(run, "previews/final.png") == "files/cube/previews/final.png?v=1700000000123"
    assert links.mesh_zip(run) == "download/cube/cube.zip?v=200250"


def test_an_image_runs_page_is_titled_by_its_trained_sentence_then_its_sentence():
    """As app.js's runTitle: an image run by what it was trained on, then the sentence found,
    then its prompt; a text run by its prompt."""
    from dreamtext.view.page import render_page
    from dreamtext.view.static import RUN_LINKS

    run = {"name": "apple", "kind": "image", "prompt": "a shiny red apple"}
    run |= {"sentence": "a red apple", "trained_sentence": "a <apple> apple"}
    page = render_page({"page": "run", "run": run}, RUN_LINKS)
    assert "<title>a &lt;apple&gt; apple · dreamtext</title>" in page
    run["trained_sentence"] = None
    assert "<title>a red apple · dreamtext</title>" in render_page(
        {"page": "run", "run": run}, RUN_LINKS
    )
    run["kind"] = "text"
    page = render_page({"page": "run", "run": run}, RUN_LINKS)
    assert "<title>a shiny red apple · dreamtext</title>" in page


def test_a_run_with_mesh_json_but_no_mesh_file_offers_no_zip(root: Path):  # noqa: F811
    """The zip is of mesh files, mesh.json beside them: without any, nothing to download."""
    import shutil

    from test_view import write_json

    from dreamtext.view import read_run
    from dreamtext.view.downloads import zip_members

    cube = root / "cube"
    shutil.rmtree(cube / "mesh")
    write_json(cube / "mesh" / "mesh.json", {"faces": 12})
    assert zip_members(read_run(location_of(cube))) == []
    with serving(Catalog([root])) as srv:
        assert get(srv, "/download/cube/cube.zip")[0] == 404


def test_a_mesh_file_dated_before_1980_still_zips(root: Path):  # noqa: F811
    """The zip format's dates start in 1980; a file of mtime 0 (unpacked from an archive
    without times) is dated 1980-01-01 in the zip, not a 500."""
    import io
    import os
    import zipfile

    glb = root / "cube" / "mesh" / "mesh.glb"
    os.utime(glb, (0, 0))
    with serving(Catalog([root])) as srv:
        status, body, _ = get(srv, "/download/cube/cube.zip")
    assert status == 200
    info = zipfile.ZipFile(io.BytesIO(body)).getinfo("cube/mesh.glb")
    assert info.date_time == (1980, 1, 1, 0, 0, 0)


@pytest.mark.parametrize(
    ("mtime", "tz", "date_time"),
    [
        (4.5e9, "UTC", (2107, 12, 31, 23, 59, 58)),  # 2112, from a bad clock: the last date
        (1e12, "UTC", (2107, 12, 31, 23, 59, 58)),  # year 33658
        # 1980-01-01 00:00 UTC is 1979-12-31 19:00 in New York, before the format's first date.
        (315532800, "America/New_York", (1980, 1, 1, 0, 0, 0)),
        # 2107-12-31 23:00 UTC is 2108-01-01 08:00 in Tokyo, past the format's last date.
        (4354815600.0, "Asia/Tokyo", (2107, 12, 31, 23, 59, 58)),
        (4354815600.0, "UTC", (2107, 12, 31, 23, 0, 0)),
    ],
)
def test_a_mesh_file_dated_outside_the_zip_formats_years_still_zips(
    root: Path,  # noqa: F811
    monkeypatch,
    mtime,
    tz,
    date_time,
):
    """zipfile raised (a 500, and `view --static` stopped with a traceback for every run) for a
    file dated after 2107, or before 1980 in local time."""
    import io
    import os
    import time
    import zipfile

    monkeypatch.setenv("TZ", tz)
    time.tzset()
    try:
        glb = root / "cube" / "mesh" / "mesh.glb"
        os.utime(glb, (mtime, mtime))
        with serving(Catalog([root])) as srv:
            status, body, _ = get(srv, "/download/cube/cube.zip")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert status == 200
    assert zipfile.ZipFile(io.BytesIO(body)).getinfo("cube/mesh.glb").date_time == date_time


def test_a_static_export_over_a_folder_above_the_working_one_is_refused(
    root,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    """An earlier export's folder, replaced from inside it (cd site/runs/cube; --static ../../..):
    the shell would be left in a deleted folder. One line, and the folder stays."""
    import pytest

    from dreamtext.errors import DreamtextError
    from dreamtext.view import export_static

    site = export_static([root], tmp_path / "site")
    inside = site / "runs" / "cube"
    monkeypatch.chdir(inside)
    with pytest.raises(DreamtextError, match="runs in"):
        export_static([root], Path("../.."))
    assert inside.is_dir() and (site / "index.html").is_file()


def test_a_host_with_a_port_of_thousands_of_digits_is_refused_not_a_500(root: Path):  # noqa: F811
    """No port has more than 5 digits; int() refuses over 4,300 of them (a ValueError: a 500
    and an error line on the terminal). Refused with 403 like any other foreign Host."""
    import io

    log = io.StringIO()
    with serving(Catalog([root]), log=log) as srv:
        status, body, _ = get(srv, "/api/runs.json", {"Host": "localhost:" + "9" * 5000})
    assert status == 403 and b"not a local address" in body
    assert log.getvalue() == ""


def test_an_image_whose_suffix_is_in_capitals_is_served(tmp_path: Path):
    """A source image inside the workspace named photo.JPG is the card's picture; the server
    serves it (as image/jpeg), whatever the case of its suffix."""
    from test_view import make_image_run, write_png

    apple = make_image_run(tmp_path / "runs" / "apple", "describe", source=False)
    write_png(apple / "photo.JPG")
    sentence = json.loads((apple / "descriptor" / "sentence.json").read_text())
    sentence["image"] = str(apple / "photo.JPG")
    (apple / "descriptor" / "sentence.json").write_text(json.dumps(sentence))
    with serving(Catalog([tmp_path / "runs"])) as srv:
        card = json.loads(get(srv, "/api/runs.json")[1])["runs"][0]
        assert card["thumbnail"].startswith("files/apple/photo.JPG?v=")
        status, body, headers = get(srv, card["thumbnail"])
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert body == (apple / "photo.JPG").read_bytes()


def test_a_static_folder_is_readable_by_others_like_any_new_folder(root, tmp_path):  # noqa: F811
    """The site is staged in a private temporary folder (mode 700) and renamed into place: it
    must end up as mkdir would make it under a 022 umask (755), so a web server or another
    user can read what was exported for them."""
    import stat

    from dreamtext.view import export_static

    site = export_static([root], tmp_path / "site")
    assert stat.S_IMODE(site.stat().st_mode) == 0o755


@pytest.mark.parametrize(("umask", "mode"), [(0o077, 0o700), (0o002, 0o775)])
def test_a_static_folder_gets_the_mode_the_users_umask_gives_a_new_folder(
    root,  # noqa: F811
    tmp_path,
    umask,
    mode,
):
    """It was made 755 whatever the umask: a user whose umask keeps new files private (077)
    had the site readable by everyone on the machine."""
    import os
    import stat

    from dreamtext.view import export_static

    before = os.umask(umask)
    try:
        site = export_static([root], tmp_path / "site")
    finally:
        os.umask(before)
    assert stat.S_IMODE(site.stat().st_mode) == mode


def test_a_hint_naming_three_linked_runs_names_all_three_without_an_ellipsis(tmp_path: Path):
    """The hint names up to three runs' folders, and "…" only where it leaves some out."""
    from dreamtext.view.workspaces import linked_runs_hint

    best = tmp_path / "best"
    best.mkdir()
    for name in ("a", "b", "c"):
        make_run(tmp_path / "workspace" / name, name)
        (best / name).symlink_to(tmp_path / "workspace" / name)
    hint = linked_runs_hint(best)
    assert "holds 3 links to runs outside it" in hint and "…" not in hint
    for name in ("a", "b", "c"):
        assert str(tmp_path / "workspace" / name) in hint
    make_run(tmp_path / "workspace" / "d", "d")
    (best / "d").symlink_to(tmp_path / "workspace" / "d")
    hint = linked_runs_hint(best)
    assert "holds 4 links" in hint and hint.endswith(" …)")


def test_an_empty_segment_in_a_file_address_is_404(root: Path):  # noqa: F811
    """The server's contract: an empty segment (``previews//final.png``) names no file, though
    ``Path.joinpath`` would drop it and find ``previews/final.png``."""
    with serving(Catalog([root])) as srv:
        assert get(srv, "/files/cube/previews/final.png")[0] == 200
        assert get(srv, "/files/cube/previews//final.png")[0] == 404
        assert get(srv, "/files/cube//previews/final.png")[0] == 404


def test_a_folder_named_like_a_served_file_is_404_not_a_500(root: Path):  # noqa: F811
    """Only files are served: a folder ``previews/odd.png`` is "not found", not an error."""
    (root / "cube" / "previews" / "odd.png").mkdir()
    with serving(Catalog([root])) as srv:
        status, body, _ = get(srv, "/files/cube/previews/odd.png")
        assert (status, body) == (404, b"not found\n")


def test_a_304_carries_the_caching_headers_its_200_would(root: Path):  # noqa: F811
    """RFC 9110 15.4.5: a 304 carries the Cache-Control, ETag and Vary the 200 would have sent,
    so a cache that refreshes its stored answer from it keeps asking again (no-cache)."""
    with serving(Catalog([root])) as srv:
        for api in ("/api/runs.json", "/api/run/cube.json"):
            status, _, first = get(srv, api)
            assert status == 200 and first["Cache-Control"] == "no-cache"
            status, body, again = get(srv, api, {"If-None-Match": first["ETag"]})
            assert (status, body) == (304, b"")
            assert again["ETag"] == first["ETag"]
            assert again["Cache-Control"] == "no-cache"
            assert again["Vary"] == "Accept-Encoding"


@pytest.mark.parametrize(("port", "says"), [(1023, "ports under 1024"), (1024, "check --host")])
def test_port_1023_is_the_last_that_needs_privileges(root, monkeypatch, port, says):  # noqa: F811
    """Ports 1-1023 are the system's (Linux's privileged ports): refused there, the line says
    so; refused on 1024 or above, the cause is elsewhere."""
    import errno

    from dreamtext.errors import DreamtextError
    from dreamtext.view import server as view_server

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(view_server, "ViewServer", refuse)
    with pytest.raises(DreamtextError, match=says):
        view_server.make_server(Catalog([root]), port=port)


def test_a_workspace_whose_only_batch_line_is_skipped_shows_as_skipped(tmp_path: Path):
    """A skipped line hides no earlier attempt, but where it is the workspace's only line it is
    what the batch says of it: the card is there, ``skipped``, from batch.jsonl."""
    from test_view import batch_record, read_run

    batch = tmp_path / "batch"
    batch.mkdir()
    line = json.dumps(batch_record(1, "ghost", "skipped"))
    (batch / "batch.jsonl").write_text(line + "\n", encoding="utf-8")
    runs = Catalog([batch]).runs()
    assert [run.id for run in runs] == ["ghost"]
    status = read_run(runs[0]).status
    assert (status["state"], status["source"]) == ("skipped", "batch.jsonl")


def test_text_assets_name_their_charset(root: Path):  # noqa: F811
    """app.js and three.js's license hold non-ASCII text: opened alone, a file without a charset
    is decoded as the browser guesses (windows-1252 for text/plain), so each names UTF-8."""
    with serving(Catalog([root])) as srv:
        for name in ("app.js", "app.css", "LICENSE-three.txt"):
            status, _, headers = get(srv, f"/static/{name}")
            assert status == 200
            assert headers["Content-Type"].endswith("; charset=utf-8"), name


def test_a_folder_name_with_control_characters_is_named_as_an_escape_not_sent_to_the_terminal(
    tmp_path: Path,
):
    """A folder of runs that another tool or user named with an escape sequence
    (``ESC ] 0 ; title BEL``, ``ESC [ 2 J``) went to the terminal as it was, in the line naming
    the folders to pass: the terminal obeyed it (cleared the screen, retitled the window). It
    is named in bash's ``$'...'`` form instead, which pasted names the folder itself."""
    import subprocess

    from dreamtext.view.workspaces import nested_runs_hint

    nest = tmp_path / "nest"
    name = "\x1b]0;owned\x07\x1b[2J b\u0085'\\\x01a"  # \x01 then a: not \x1a
    make_run(nest / name / "a_cat", "a cat")
    make_run(nest / "own", "a dog")
    hint = nested_runs_hint(nest)
    assert not any(unicodedata.category(c) == "Cc" for c in hint), repr(hint)
    words = hint.split("(dreamtext view ")[1].removesuffix(")")
    printed = subprocess.run(
        ["bash", "-c", f"printf '%s\\0' {words}"], capture_output=True, check=True
    )
    assert printed.stdout.decode().split("\0")[:-1] == [str(nest), str(nest / name)]


def quoted(path: Path) -> str:
    """``path`` as a shell word (a folder with a space in its name, as ``TMPDIR`` may be)."""
    return shlex.quote(str(path))


def _printed_by_bash(word: str) -> str:
    """What bash makes of ``word`` pasted as an argument."""
    import subprocess

    printed = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, check=True)
    return printed.stdout.decode()


def test_a_folder_inside_a_run_under_a_name_with_an_escape_is_named_as_an_escape(
    tmp_path: Path, capsys
):
    """`dreamtext view RUN/mesh` where RUN lies in a folder named with ``ESC ] 0 ; x BEL``
    printed the name raw in its "`dreamtext view RUN` shows it" line: the terminal retitled
    its window. Both names are written in bash's ``$'...'`` form; pasted, the command's
    word names the run itself."""
    from dreamtext.cli import main

    run = make_run(tmp_path / "\x1b]0;x\x07" / "run", "a cat")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    assert main(["view", str(run / "mesh"), "--static", str(tmp_path / "site")]) == 2
    line = capsys.readouterr().err.removesuffix("\n")
    assert not any(unicodedata.category(c) == "Cc" for c in line), repr(line)
    word = line.split("`dreamtext view ")[1].removesuffix("` shows it")
    assert _printed_by_bash(word) == str(run)


def test_a_stray_file_of_a_static_folder_named_with_an_escape_is_named_as_an_escape(
    tmp_path: Path,
):
    """The names of files a second `--static` into a folder would delete come from the
    folder's listing (another tool wrote them): one named ``ESC [ 2 J`` cleared the screen."""
    from dreamtext.view import export_static

    make_run(tmp_path / "runs" / "cube", "a cube")
    site = tmp_path / "site"
    export_static([tmp_path / "runs"], site)
    (site / "\x1b[2J").write_text("notes")
    with pytest.raises(DreamtextError) as refused:
        export_static([tmp_path / "runs"], site)
    assert not any(unicodedata.category(c) == "Cc" for c in str(refused.value))
    assert "$'\\x1b[2J'" in str(refused.value)


def test_folders_of_runs_a_level_further_down_are_named_to_pass(tmp_path: Path, capsys):
    """`dreamtext view runs` where runs/ holds batches' folders (runs/B/a_cat) served an empty
    gallery that said its runs were still to come; beside runs of its own they were left out
    without a word (the server's line, and --static's stderr)."""
    from dreamtext.cli import main
    from dreamtext.errors import DreamtextError
    from dreamtext.view.server import ViewServer, serve
    from dreamtext.view.workspaces import Catalog, nested_runs_hint

    nest = tmp_path / "nest"
    make_run(nest / "B" / "a_cat", "a cat")
    (nest / "C").mkdir()
    (nest / "C" / "batch.jsonl").write_text("")
    (nest / "empty").mkdir()
    expected = (
        f"{nest} holds 2 folders of runs a level further down, which the viewer does not look "
        f"into: pass them (dreamtext view {quoted(nest / 'B')} {quoted(nest / 'C')})"
    )
    assert nested_runs_hint(nest) == expected
    with pytest.raises(DreamtextError) as refused:
        Catalog([nest])
    assert str(refused.value) == expected
    make_run(nest / "own", "a dog")  # a run of its own beside them: both folders to pass
    assert nested_runs_hint(nest).endswith(
        f"pass them (dreamtext view {quoted(nest)} {quoted(nest / 'B')} {quoted(nest / 'C')})"
    )
    assert main(["view", str(nest), "--static", str(tmp_path / "site")]) == 0
    assert capsys.readouterr().err == f"dreamtext view: {nested_runs_hint(nest)}\n"
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ViewServer, "serve_forever", lambda self, *a, **k: None)
        serve([nest], "127.0.0.1", 0, out=out)
    assert out.getvalue().startswith("dreamtext view: 1 run at ")
    assert f"  {nested_runs_hint(nest)}\n" in out.getvalue()
    assert nested_runs_hint(nest / "B") is None  # its runs are one level down
    assert nested_runs_hint(nest / "B" / "a_cat") is None  # a run


def test_a_served_views_output_that_cannot_be_written_is_named_not_static(
    tmp_path: Path, capsys, monkeypatch
):
    """`dreamtext view runs > view.log` on a full disk said to "give --static a folder you can
    write", of a command given no --static: serving writes no file, only its address lines."""
    import errno
    import os

    from dreamtext.cli import main
    from dreamtext.view.server import ViewServer

    class FullDisk(io.StringIO):
        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    make_run(tmp_path / "a_cat", "a cat")
    monkeypatch.setattr(ViewServer, "serve_forever", lambda self, *a, **k: None)
    monkeypatch.setattr("sys.stdout", FullDisk())
    assert main(["view", str(tmp_path / "a_cat"), "--port", "0"]) == 2
    assert capsys.readouterr().err == (
        "dreamtext: error: No space left on device (writing its output, the page's address); "
        "send the output where it can be written (a disk with room, the terminal)\n"
    )


def test_a_static_export_on_a_full_disk_names_the_folder_it_was_writing(
    tmp_path: Path, capsys, monkeypatch
):
    """`dreamtext view runs --static site` on a full disk said "No space left on device; free
    space on that disk ..." without naming the disk's folder: a write's error carries no file."""
    import errno
    import os

    from dreamtext.cli import main

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    make_run(tmp_path / "a_cat", "a cat")
    monkeypatch.setattr(Path, "write_bytes", full)
    site = tmp_path / "site"
    assert main(["view", str(tmp_path / "a_cat"), "--static", str(site)]) == 2
    assert capsys.readouterr().err == (
        f"dreamtext: error: No space left on device (writing {site}); free space on that disk "
        "(or quota) or give --static a folder you can write\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_cat"]


def test_a_served_view_that_may_not_read_a_folder_names_the_folder_not_its_output(
    tmp_path: Path, capsys, monkeypatch
):
    """`dreamtext view THEIR_RUN` where another user's folder (mode 700) refuses this one said
    "Permission denied (writing its output, the page's address); send the output where it can be
    written": the output was fine, the folder could not be read."""
    import errno
    import os

    from dreamtext.cli import main
    from dreamtext.view import server

    locked = tmp_path / "theirs" / "a_cat"

    def refused(folders, **options):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(locked))

    monkeypatch.setattr(server, "Catalog", refused)
    assert main(["view", str(locked), "--port", "0"]) == 2
    assert capsys.readouterr().err == (
        f"dreamtext: error: Permission denied ({locked}); this user may not read it: ask its "
        "owner to let you, or view a copy of the runs that you can read\n"
    )


def test_a_static_view_that_may_not_read_a_folder_names_the_folder_not_static(
    tmp_path: Path, capsys, monkeypatch
):
    """`dreamtext view THEIR_RUN --static site` where another user's folder refuses this one said
    "give --static a folder you can write", of a folder that could not be read; a refused write
    of the page still says so."""
    import errno
    import os

    from dreamtext.cli import main
    from dreamtext.view import static

    theirs, site = tmp_path / "theirs", tmp_path / "runs" / "site"
    theirs.mkdir()

    def refused(path):
        def raising(*args, **options):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

        return raising

    monkeypatch.setattr(static, "Catalog", refused(theirs / "a_cat"))
    assert main(["view", str(theirs), "--static", str(site)]) == 2
    assert capsys.readouterr().err == (
        f"dreamtext: error: Permission denied ({theirs / 'a_cat'}); this user may not read it: "
        "ask its owner to let you, or view a copy of the runs that you can read\n"
    )
    # The page's staging folder beside it, inside the folder viewed: a write.
    monkeypatch.setattr(static, "Catalog", refused(tmp_path / "runs" / ".site.x1" / "a.png"))
    assert main(["view", str(tmp_path / "runs"), "--static", str(site)]) == 2
    assert capsys.readouterr().err.endswith("; give --static a folder you can write\n")


def test_links_to_runs_outside_a_folder_are_named_beside_its_own_runs(tmp_path: Path, capsys):
    """`ln -s ../scratch/a_dog runs/` beside runs/a_cat: the linked run is not followed (nothing
    outside a root is served), and with a run of its own the folder was served and exported
    without a word of it (the hint was given only where no run was left)."""
    from dreamtext.cli import main
    from dreamtext.view.server import ViewServer, serve
    from dreamtext.view.workspaces import linked_runs_hint

    runs = tmp_path / "runs"
    make_run(runs / "a_cat", "a cat")
    make_run(tmp_path / "scratch" / "a_dog", "a dog")
    (runs / "a_dog").symlink_to(tmp_path / "scratch" / "a_dog")
    hint = linked_runs_hint(runs)
    assert hint == (
        f"{runs} holds 1 link to a run outside it, which the viewer does not follow: pass the "
        f"run's folder instead (dreamtext view {quoted(tmp_path / 'scratch' / 'a_dog')})"
    )
    assert main(["view", str(runs), "--static", str(tmp_path / "site")]) == 0
    assert capsys.readouterr().err == f"dreamtext view: {hint}\n"
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ViewServer, "serve_forever", lambda self, *a, **k: None)
        serve([runs], "127.0.0.1", 0, out=out)
    assert out.getvalue().startswith("dreamtext view: 1 run at ")
    assert f"  {hint}\n" in out.getvalue()


def test_a_runs_files_behind_a_link_out_of_its_folder_are_named_on_its_page(tmp_path: Path):
    """A run whose video/ links to another disk (`mv video /scratch; ln -s /scratch/video`): the
    turntable is not served (nothing outside a run's folder is), and its page, told nothing of
    it, said "no turntable: its export made none"; the page's data names the files it leaves out
    so the page can say where they are."""
    from dreamtext.view.page import run_json, server_links
    from dreamtext.view.workspaces import read_run

    run = make_run(tmp_path / "runs" / "a_red_cube", "a red cube")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (run / "video").rename(scratch / "video")
    (run / "video").symlink_to(scratch / "video")
    (location,) = Catalog([run.parent]).runs()
    shown = run_json(read_run(location), server_links(None), full=True)
    assert shown["video"] == {}
    assert shown["linked_out"] == ["video/turntable.mp4"]
    (location,) = Catalog([make_run(tmp_path / "b", "a cat")]).runs()
    assert run_json(read_run(location), server_links(None), full=True)["linked_out"] == []


def test_runs_left_out_of_a_folder_but_given_too_are_not_named_to_pass(tmp_path: Path, capsys):
    """`dreamtext view nest nest/B` and `dreamtext view runs /scratch/a_dog` (the linked run's
    folder): both shown, and the terminal still said to pass them."""
    from dreamtext.cli import main
    from dreamtext.view.server import ViewServer, serve

    make_run(tmp_path / "nest" / "B" / "a_cat", "a cat")
    make_run(tmp_path / "nest" / "C" / "a_cow", "a cow")
    make_run(tmp_path / "runs" / "a_cat", "a cat")
    dog = make_run(tmp_path / "scratch" / "a_dog", "a dog")
    (tmp_path / "runs" / "a_dog").symlink_to(dog)
    folders = [tmp_path / "nest", tmp_path / "nest" / "B", tmp_path / "runs", dog]
    argv = ["view", *map(str, folders), "--static", str(tmp_path / "site")]
    assert main(argv) == 0
    assert capsys.readouterr().err == (
        f"dreamtext view: {tmp_path / 'nest'} holds a folder of runs a level further down, "
        "which the viewer does not look into: pass it "
        f"(dreamtext view {quoted(tmp_path / 'nest' / 'C')})\n"
    )
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ViewServer, "serve_forever", lambda self, *a, **k: None)
        serve(folders, "127.0.0.1", 0, out=out)
    assert "a_dog" not in out.getvalue() and "a level further down" in out.getvalue()


@pytest.mark.parametrize(("taken", "host"), [("0.0.0.0", "127.0.0.1"), ("127.0.0.1", "0.0.0.0")])
def test_a_port_another_server_answers_on_is_in_use_where_the_bind_would_share_it(
    tmp_path, monkeypatch, taken, host
):
    """On macOS (and the BSDs) SO_REUSEADDR, which Python's HTTPServer sets, lets a socket
    bind 127.0.0.1:PORT while another listens on 0.0.0.0:PORT (and the reverse), where Linux
    refuses (EADDRINUSE): a second ``dreamtext view --port PORT`` started without a word, and
    127.0.0.1:PORT then reached only one of the two. Here the kernel's sharing bind is faked
    (the server binds a free port of its own); the port is refused as in use, as on Linux."""
    import socketserver

    from dreamtext.view import server as server_module

    def shared_bind(self):  # as macOS's kernel answers: the bind succeeds beside the listener
        self.socket.bind((self.server_address[0], 0))

    monkeypatch.setattr(socketserver.TCPServer, "server_bind", shared_bind)
    monkeypatch.setattr(server_module, "SHARED_PORT_BINDS", True, raising=False)
    with socket.socket() as other:
        other.bind((taken, 0))
        other.listen()
        port = other.getsockname()[1]
        try:
            made = server_module.make_server(Catalog([tmp_path], empty_ok=True), host, port)
        except DreamtextError as error:
            assert str(error) == (
                f"port {port} is in use on {host}; pass another --port (0 picks a free one)"
            )
        else:
            made.server_close()
            pytest.fail(f"a second server started on port {port}, which {taken} listens on")


def test_a_folder_of_runs_with_another_users_private_run_is_viewed_without_it(
    tmp_path: Path, capsys, monkeypatch
):
    """A lab's `dreamtext view runs/` where one colleague's run folder is private (mode 700,
    umask 077) failed as a whole, served and `--static` alike ("Permission denied
    (runs/private/batch.jsonl)", exit 2, after the static site was written): the hint for
    runs a level further down asked ``Path.is_file`` of a file in that folder, which raises
    ``EACCES``. The readable runs are shown; the private one is left out."""
    import errno
    import os

    from dreamtext.cli import main
    from dreamtext.view.server import ViewServer, serve

    runs = tmp_path / "runs"
    make_run(runs / "a_cat", "a cat")
    private = runs / "private"
    make_run(private, "a dog")
    real_stat, real_scandir = os.stat, os.scandir

    def refused(path) -> None:  # the tests run as root, who reads any folder
        if Path(os.fspath(path)).is_relative_to(private) and Path(os.fspath(path)) != private:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    def stat(path, *args, **kwargs):
        refused(path)
        return real_stat(path, *args, **kwargs)

    def scandir(path="."):
        refused(Path(os.fspath(path)) / "x")
        return real_scandir(path)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "scandir", scandir)
    site = tmp_path / "site"
    assert main(["view", str(runs), "--static", str(site)]) == 0
    assert capsys.readouterr().err == ""
    assert sorted(p.name for p in (site / "runs").iterdir()) == ["a_cat"]
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ViewServer, "serve_forever", lambda self, *a, **k: None)
        serve([runs], "127.0.0.1", 0, out=out)
    assert "1 run at" in out.getvalue()


def _sharing_bind(monkeypatch):
    """Bind as macOS's kernel does beside a listener on the same port: the bind succeeds (here
    on a free port of the server's own)."""
    import socketserver

    from dreamtext.view import server as server_module

    def shared_bind(self):
        self.socket.bind((self.server_address[0], 0))

    monkeypatch.setattr(socketserver.TCPServer, "server_bind", shared_bind)
    monkeypatch.setattr(server_module, "SHARED_PORT_BINDS", True, raising=False)
    return server_module


def test_a_free_port_is_listened_on_where_the_bind_would_share_it(tmp_path, monkeypatch):
    """Where the check for a server already on the port runs (macOS, the BSDs), a port no
    server answers on is not refused as in use: ``dreamtext view --port 8000`` starts."""
    server_module = _sharing_bind(monkeypatch)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    made = server_module.make_server(Catalog([tmp_path], empty_ok=True), "127.0.0.1", port)
    made.server_close()


def test_a_port_a_server_answers_on_over_ipv6_only_is_in_use_for_host_ipv6_any(
    tmp_path, monkeypatch
):
    """``--host ::`` where another server listens on [::1]:PORT only: the check asks ::1, not
    127.0.0.1 (which no server answers), and refuses the port as in use."""
    server_module = _sharing_bind(monkeypatch)
    with socket.socket(socket.AF_INET6) as other:
        other.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            other.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(DreamtextError, match=f"^port {port} is in use on ::;"):
            server_module.make_server(Catalog([tmp_path], empty_ok=True), "::", port).server_close()


def test_an_address_typed_with_one_letter_for_a_folder_named_in_nfd_finds_the_run(tmp_path):
    """``run/cr%C3%A8me/`` typed by hand (è as one letter) was a 404 for a run whose folder is
    named in NFD (e and a combining grave: a copy from a Mac), which batch and --resume take for
    the same name; the page's own link (the NFD bytes) still works, and a name that is
    absent finds none."""
    nfd = unicodedata.normalize("NFD", "crème")
    make_run(tmp_path / "runs" / nfd, "crème")
    with serving(Catalog([tmp_path / "runs"])) as srv:
        for typed in ("cr%C3%A8me", "cre%CC%80me"):
            status, body, _ = get(srv, f"/api/run/{typed}.json")
            assert status == 200, typed
            assert json.loads(body)["run"]["prompt"] == "crème"
        assert get(srv, "/run/cr%C3%A8me/")[0] == 200
        assert get(srv, "/api/run/creme.json")[0] == 404
    assert Catalog([tmp_path / "runs"]).find("crèmex") is None


def test_a_static_export_whose_copy_fills_the_disk_names_the_static_folder_not_the_run(
    tmp_path: Path, capsys, monkeypatch
):
    """`dreamtext view runs --static site` with site/ on a full disk said "No space left on device
    (runs/a_cat/video/turntable.mp4); free space on that disk": the file it was copying, on the
    runs' disk, which had room (shutil.copyfile's sendfile names its source)."""
    import errno
    import os

    from dreamtext.cli import main

    def full_after_a_little(out_fd, in_fd, offset, count):
        if offset:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(out_fd, os.pread(in_fd, 10, 0))

    run = make_run(tmp_path / "a_cat", "a cat")
    monkeypatch.setattr(os, "sendfile", full_after_a_little)
    site = tmp_path / "site"
    assert main(["view", str(run), "--static", str(site)]) == 2
    assert capsys.readouterr().err == (
        f"dreamtext: error: No space left on device (writing {site}); free space on that disk "
        "(or quota) or give --static a folder you can write\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_cat"]
