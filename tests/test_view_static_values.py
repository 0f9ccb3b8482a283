"""`dreamtext view --static` and the run page's data checked against values worked out by hand,
for the lines a mutation round of dreamtext/view/page.py and dreamtext/view/static.py found
untested."""

import shlex
from pathlib import Path

from test_view import batch_record, page_data, root, write_records  # noqa: F401  (root: fixture)

from dreamtext.view import export_static


def test_a_static_card_of_a_batch_line_never_made_names_no_workspace(root: Path, tmp_path):  # noqa: F811
    """A batch line whose workspace was never made has no folder: its static card says so
    (``workspace`` null: app.js writes "no workspace" and links no page), as the server's does,
    instead of naming the run as if its folder were there."""
    write_records(root / "batch.jsonl", [batch_record(1, "never_made", "failed", "boom")])
    out = export_static([root], tmp_path / "site")
    cards = {card["id"]: card for card in page_data(out / "index.html")["runs"]}
    assert cards["never_made"]["workspace"] is None
    assert cards["cube"]["workspace"] == "cube"  # a made run: its name, not its local path


def test_a_static_page_names_no_export_command_for_an_empty_typed_workspace(root: Path, tmp_path):  # noqa: F811
    """A static page names the folder the training was given (config.json's ``workspace``);
    where that is empty there is no folder to name: no command (app.js then writes
    ``--workspace <its folder>``), not ``dreamtext export --workspace ''``, which exports
    nothing."""
    config = root / "cube" / "config.json"
    config.write_text(config.read_text().replace(f'"{root / "cube"}"', '""'))
    assert '"workspace": ""' in config.read_text()
    out = export_static([root], tmp_path / "site")
    assert page_data(out / "runs" / "cube" / "index.html")["run"]["export_command"] is None
    sphere = page_data(out / "runs" / "sphere" / "index.html")["run"]["export_command"]
    # as typed where it ran
    assert sphere == f"dreamtext export --workspace {shlex.quote(str(root / 'sphere'))}"


def test_a_glb_removed_after_its_run_was_read_gets_no_script_on_the_page(
    root: Path,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    """The run's GLB removed between the read and the copy (a new export under way): the page
    names no GLB script (its 3D view says there is none), rather than one the folder lacks."""
    from dreamtext.view import static

    read = static.read_run

    def reading(location, *args, **kwargs):
        run = read(location, *args, **kwargs)
        if location.name == "cube" and "glb" in run.mesh:
            (root / "cube" / run.mesh["glb"]).unlink()
        return run

    monkeypatch.setattr(static, "read_run", reading)
    out = export_static([root], tmp_path / "site")
    assert page_data(out / "runs" / "cube" / "index.html")["glb_script"] is None
    assert not (out / "runs" / "cube" / "mesh.glb.js").exists()


def test_infinities_in_a_runs_data_reach_the_page_as_null():
    """JSON has no Infinity (RFC 8259 6): a log's ``inf`` or ``-inf`` loss, as its NaN, is
    written ``null``, not a ValueError that fails the page."""
    from dreamtext.view.page import script_json

    data = {"loss": [1.5, float("inf"), float("-inf"), float("nan")], "t": (float("inf"),)}
    assert script_json(data) == '{"loss": [1.5, null, null, null], "t": [null]}'


def test_a_static_page_shows_the_export_whose_files_it_copied(tmp_path, monkeypatch):
    """An export swapping in a new ``mesh/`` while ``--static`` copied the run: the page showed
    the old export's mesh.json figures (2644 faces) beside the new export's GLB, PLY and
    mesh.json copies (1296 faces). The run is read again and written as it is now."""
    import json
    import shutil

    from test_view import make_obj_run

    from dreamtext.view import static

    run = make_obj_run(tmp_path / "runs" / "a_red_apple", "a red apple", (200, 30, 30))
    newer = make_obj_run(tmp_path / "newer" / "a_red_apple", "a red apple", (30, 30, 200))
    (newer / "mesh" / "mesh.json").write_text(json.dumps({"vertices": 3, "faces": 2}))
    copy, swapped = static._copy_files, []

    def copy_then_swap(copied, rels, files):
        copy(copied, rels, files)
        if not swapped:  # as write_all_atomically: the old folder renamed away, the new one in
            (run / "mesh").rename(run / ".mesh-retired")
            shutil.move(newer / "mesh", run / "mesh")
            swapped.append(True)

    monkeypatch.setattr(static, "_copy_files", copy_then_swap)
    out = export_static([tmp_path / "runs"], tmp_path / "site")
    folder = out / "runs" / "a_red_apple"
    copied = json.loads((folder / "files" / "mesh" / "mesh.json").read_text())
    assert copied["faces"] == 2
    assert page_data(folder / "index.html")["run"]["mesh_stats"]["faces"] == 2


def test_two_static_exports_into_one_folder_at_once_both_finish_whole(
    root: Path,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    """Two ``dreamtext view --static OUT`` at once (a cron job and a user): the second swapped
    its export into OUT while the first had moved the earlier one aside, and the first then
    failed with a traceback (``OSError: Directory not empty``), leaving the earlier export
    beside OUT as ``.OUT.old.XXXXXXXX``. The swaps now take turns: both finish, OUT is one whole
    export, nothing is left beside it."""
    import threading

    from dreamtext.view import static

    out = tmp_path / "site"
    export_static([root], out)  # an earlier export, which the two replace
    written, go, done = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []
    real_write, real_rename = static._write, Path.rename

    def write(catalog, staging):  # the second export waits, written, for the first's swap
        real_write(catalog, staging)
        if threading.current_thread().name == "second":
            written.set()
            go.wait(10)

    def rename(self, target):
        result = real_rename(self, target)
        if ".old." in Path(target).name and threading.current_thread().name != "second":
            go.set()  # the first has moved OUT aside: the second swaps now, if it may
            done.wait(1)
        return result

    def second():
        try:
            export_static([root], out)
        except BaseException as error:  # reported by the assertion below
            errors.append(error)
        done.set()

    monkeypatch.setattr(static, "_write", write)
    monkeypatch.setattr(Path, "rename", rename)
    thread = threading.Thread(target=second, name="second")
    thread.start()
    assert written.wait(60)
    try:
        export_static([root], out)
    finally:
        go.set()
        thread.join(60)
    assert errors == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "secret.png", "site"]
    assert page_data(out / "index.html")["runs"]


def test_links_to_a_checkpoint_or_hidden_file_are_neither_shown_nor_copied(root: Path, tmp_path):  # noqa: F811
    """A preview, a mesh file and the source image linking to checkpoints/last.pt or to a
    hidden file of the workspace were listed as the run's files: the --static folder, made to be
    shared, held the 3 MB checkpoint as previews/step_009999.png, and the page drew it as a
    broken preview."""
    cube = root / "cube"
    (cube / "checkpoints").mkdir()
    (cube / "checkpoints" / "last.pt").write_bytes(b"CHECKPOINT")
    (cube / ".export-progress.json").write_text("{}")
    (cube / "previews" / "step_009999.png").symlink_to(cube / "checkpoints" / "last.pt")
    (cube / "mesh" / "mesh.ply").symlink_to(cube / ".export-progress.json")
    (cube / "descriptor").mkdir()
    (cube / "descriptor" / "source.png").symlink_to(cube / "checkpoints" / "last.pt")
    # A file of the right kind in a hidden folder (named plainly itself) is hidden too.
    (cube / ".cache").mkdir()
    for name in ("shot.png", "shot.jpg"):
        (cube / ".cache" / name).write_bytes(b"HIDDEN")
    (cube / "previews" / "step_009998.png").symlink_to(cube / ".cache" / "shot.png")
    (cube / "descriptor" / "source.jpg").symlink_to(cube / ".cache" / "shot.jpg")
    out = export_static([root], tmp_path / "site")
    run = page_data(out / "runs" / "cube" / "index.html")["run"]
    assert [p["step"] for p in run["previews"]] == [10, None]
    assert "ply" not in run["mesh"] and run["source_image"] is None
    copied = [p.read_bytes() for p in (out / "runs" / "cube").rglob("*") if p.is_file()]
    assert not any(b"CHECKPOINT" in data or b"HIDDEN" in data for data in copied)
