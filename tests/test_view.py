"""`dreamtext view` without a browser: finding runs, reading their status, what the server serves
and refuses, the static export, the command line. (tests/test_view_browser.py drives Chromium.)"""

import contextlib
import dataclasses
import errno
import gzip
import html
import http.client
import io
import itertools
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import unicodedata
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote, urlencode, urljoin, urlsplit

import pytest
from PIL import Image

from dreamtext.cli import main
from dreamtext.errors import DreamtextError
from dreamtext.view import Catalog, export_static, make_server, read_run
from dreamtext.view.page import page_base, run_json, script_json, server_links
from dreamtext.view.server import (
    CONTENT_SECURITY_POLICY,
    NO_TOKEN,
    ViewHandler,
    ViewServer,
    _copy,
    serve,
    workspace_file,
)
from dreamtext.view.workspaces import DEFAULT_ROOT, SENTENCE_FILE, log_curves, log_figures

REPO = Path(__file__).parent.parent


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def write_log(path: Path, steps) -> None:
    lines = [json.dumps({"step": s, "loss": 1.0 / s, "t": 500.0, "its": 4.0}) for s in steps]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def write_png(path: Path, color=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)


# A child that holds an exclusive flock on the file argv[1], as a training run holds its lock,
# and says so on stdout.
HOLD_LOCK = (
    "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
    "print('held', flush=True); time.sleep(120)"
)


def make_run(folder: Path, prompt: str, steps=(10, 20), iters=20, final=True, status=None) -> Path:
    """A workspace as the trainer leaves it (without checkpoints): config, log, previews, mesh."""
    write_json(folder / "config.json", {"prompt": prompt, "iters": iters, "workspace": str(folder)})
    write_log(folder / "log.jsonl", steps)
    write_png(folder / "previews" / "step_000010.png")
    if final:
        write_png(folder / "previews" / "final.png")
        (folder / "mesh").mkdir()
        (folder / "mesh" / "mesh.glb").write_bytes(b"glTF-not-really")
        (folder / "video").mkdir()
        (folder / "video" / "turntable.mp4").write_bytes(bytes(range(256)) * 4)
    if status is not None:
        write_json(folder / "status.json", status)
    return folder


@contextlib.contextmanager
def serving(catalog: Catalog, **options) -> Iterator[ViewServer]:
    """A server over ``catalog`` (``make_server``'s ``options``: ``poll_ms``, ``log``, ``host``)
    answering on a thread for the ``with`` block; shut down and closed after it, whatever the
    block raised. The fixtures ``server`` (here and in test_view_browser.py) are one of these."""
    srv = make_server(catalog, **options)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join()


def batch_record(line: int, workspace: str, status: str, error=None) -> dict:
    """A batch.jsonl line in the format of COORD.md."""
    return {
        "line": line,
        "input": f"prompt {line}",
        "kind": "text",
        "prompt": f"prompt {line}",
        "workspace": workspace,
        "status": status,
        "error": error,
        "seconds": 12.5,
        "its": 3.0,
        "gpu_mem_mib": 2048.0,
        "started": "2026-11-30T10:00:00+00:00",
        "finished": "2026-11-30T10:00:12+00:00",
        "host": "node7",
        "shard": "1/2",
    }


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A folder of three runs: finished (status.json), failed (status.json), interrupted (old
    files only), plus a secret beside the root that nothing may serve."""
    base = tmp_path / "runs"
    make_run(base / "cube", "a red cube", status={"state": "finished", "step": 20, "iters": 20})
    make_run(
        base / "torus",
        "a green torus",
        steps=(10,),
        final=False,
        status={"state": "failed", "step": 10, "iters": 20, "error": "CUDA out of memory"},
    )
    old = make_run(base / "sphere", "a blue sphere", steps=(10,), final=False)
    past = time.time() - 3600
    for path in old.rglob("*"):
        os.utime(path, (past, past))
    write_png(tmp_path / "secret.png", (0, 0, 0))
    return base


def location(catalog: Catalog, run_id: str):
    found = catalog.find(run_id)
    assert found is not None, [r.id for r in catalog.runs()]
    return found


# ------------------------------------------------------------------------- finding and reading


def test_a_root_lists_its_workspaces_and_a_workspace_lists_itself(root: Path):
    assert sorted(r.id for r in Catalog([root]).runs()) == ["cube", "sphere", "torus"]
    assert [r.id for r in Catalog([root / "cube"]).runs()] == ["cube"]


def test_runs_with_the_same_folder_name_get_distinct_ids(tmp_path: Path):
    make_run(tmp_path / "a" / "run", "one")
    make_run(tmp_path / "b" / "run", "two")
    ids = [r.id for r in Catalog([tmp_path / "a" / "run", tmp_path / "b" / "run"]).runs()]
    assert ids == ["run", "run-2"]


def test_a_run_keeps_its_id_when_a_run_of_the_same_name_appears_before_it(tmp_path: Path):
    """Ids went by scan order: a run made later in the first of two roots took ``a_red_cube``
    from the second root's run, whose open page then showed the newcomer without a word."""
    first, second = tmp_path / "runs1", tmp_path / "runs2"
    first.mkdir()
    make_run(second / "a_red_cube", "two")
    catalog = Catalog([first, second])
    assert [(r.id, r.path) for r in catalog.runs()] == [("a_red_cube", second / "a_red_cube")]
    make_run(first / "a_red_cube", "one")
    by_id = {r.id: r.path for r in catalog.runs()}
    assert by_id == {"a_red_cube": second / "a_red_cube", "a_red_cube-2": first / "a_red_cube"}
    # A run no longer listed gives its id up.
    shutil.rmtree(second / "a_red_cube")
    assert [(r.id, r.path) for r in catalog.runs()] == [("a_red_cube-2", first / "a_red_cube")]
    assert [r.id for r in Catalog([first, second]).runs()] == ["a_red_cube"]


def test_a_scan_compares_each_run_with_a_few_others_not_with_every_run(tmp_path: Path, monkeypatch):
    """Ids were given by looking each run up in the list of the runs before it: a gallery of
    5,000 runs made 12.5 million path comparisons a scan, 4-6 s at every poll (every 2 s)."""
    import pathlib

    runs = 300
    for n in range(runs):
        write_json(tmp_path / f"run{n}" / "config.json", {"prompt": f"p{n}", "iters": 20})
    catalog = Catalog([tmp_path])
    compared = []
    real_eq = pathlib.PurePath.__eq__
    monkeypatch.setattr(
        pathlib.PurePath, "__eq__", lambda a, b: compared.append(1) or real_eq(a, b)
    )
    assert len(catalog.runs()) == runs
    assert len(compared) < 10 * runs  # a quadratic scan: ~runs² / 2 = 45,000


def test_run_ids_differing_in_case_or_normalisation_alone_are_made_distinct(tmp_path: Path):
    """Downloads and static folders are named by run id: on macOS's or Windows' file systems,
    ``Cube.zip`` and ``cube.zip`` (and their folders ``Cube/``, ``cube/``) are one name."""
    make_run(tmp_path / "Cube", "one")
    make_run(tmp_path / "cube", "two")
    make_run(tmp_path / "cre\u0300me", "three")  # è as e and a combining grave
    make_run(tmp_path / "crème", "four")
    ids = [r.id for r in Catalog([tmp_path]).runs()]  # by folder name: "Cube" sorts first
    assert len({unicodedata.normalize("NFC", i).casefold() for i in ids}) == 4, ids
    assert ids[0] == "Cube" and "cube-2" in ids
    assert {"crème", "crème-2"} <= {unicodedata.normalize("NFC", i) for i in ids}


def test_a_run_id_differing_in_case_from_one_listed_before_it_is_made_distinct(tmp_path: Path):
    """The lower-case name first (the first of two roots), the upper-case one after it: the
    second is no more a name of its own on a case-blind file system than the other way round."""
    make_run(tmp_path / "a" / "cube", "one")
    make_run(tmp_path / "b" / "Cube", "two")
    ids = [r.id for r in Catalog([tmp_path / "a", tmp_path / "b"]).runs()]
    assert ids == ["cube", "Cube-2"]


def test_a_runs_status_is_its_whole_time_and_peak_over_every_stage(tmp_path: Path):
    stages = {"descriptor": {"seconds": 300.0, "gpu_mem_mib": 3000.0}}
    stages |= {"train": {"seconds": 60.0, "gpu_mem_mib": 2048.0}, "bad": "x"}
    status = {"state": "finished", "step": 20, "iters": 20, "seconds": 60.0, "gpu_mem_mib": 2048.0}
    status |= {"stages": stages, "total_seconds": 360.0, "peak_gpu_mem_mib": 3000.0}
    make_run(tmp_path / "apple", "an apple", status=status)
    [run] = Catalog([tmp_path]).runs()
    shown = read_run(run).status
    assert (shown["seconds"], shown["gpu_mem_mib"]) == (360.0, 3000.0)
    assert shown["stage_seconds"] == {"descriptor": 300.0, "train": 60.0}
    make_run(
        tmp_path / "old", "an old run", status={**status, "stages": None, "total_seconds": None}
    )
    shown = read_run(Catalog([tmp_path / "old"]).runs()[0]).status
    assert (shown["seconds"], shown["gpu_mem_mib"]) == (60.0, 2048.0)


def test_a_running_run_whose_process_is_gone_shows_as_interrupted(tmp_path: Path):
    """SIGKILL (the out-of-memory killer) leaves status.json "running": the card said running
    for ten minutes, then "no change for N min", forever."""
    from dreamtext.processes import HOST

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    status = {"state": "running", "step": 10, "iters": 20, "host": HOST, "pid": dead.pid}
    make_run(tmp_path / "killed", "a red cube", final=False, status=status)
    make_run(tmp_path / "elsewhere", "a blue cube", final=False, status={**status, "host": "n7"})
    make_run(tmp_path / "alive", "a cube", final=False, status={**status, "pid": os.getpid()})
    shown = {r.id: read_run(r).status for r in Catalog([tmp_path]).runs()}
    assert (shown["killed"]["state"], shown["killed"]["process_gone"]) == ("interrupted", dead.pid)
    assert shown["elsewhere"]["state"] == shown["alive"]["state"] == "running"
    assert "process_gone" not in shown["alive"]


@pytest.mark.skipif(
    not os.path.exists("/proc/sys/kernel/random/boot_id"), reason="no boot_id: not Linux"
)
def test_a_run_that_a_reboot_of_this_machine_killed_shows_as_interrupted(tmp_path: Path):
    """status.json of this host with another boot_id was taken for a twin machine's: a run a
    reboot killed showed running, then "no change for N min". Last written before this boot,
    its process is gone; written since, it is a twin's run, shown running."""
    import uuid
    from datetime import datetime, timezone

    from dreamtext.processes import HOST

    def iso(seconds):
        return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    status = {"state": "running", "step": 10, "iters": 20, "host": HOST, "pid": dead.pid}
    boot = float(Path("/proc/stat").read_text().split("btime ")[1].split()[0])  # booted at
    status["boot_id"] = str(uuid.uuid4())
    rebooted = make_run(
        tmp_path / "rebooted",
        "a red cube",
        final=False,
        status={**status, "updated": iso(boot - 120)},
    )
    os.utime(rebooted / "status.json", (boot - 120, boot - 120))  # written then, as its file says
    make_run(
        tmp_path / "twin",
        "a blue cube",
        final=False,
        status={**status, "updated": iso(time.time())},
    )
    shown = {r.id: read_run(r).status for r in Catalog([tmp_path]).runs()}
    assert (shown["rebooted"]["state"], shown["rebooted"]["process_gone"]) == (
        "interrupted",
        dead.pid,
    )
    assert shown["twin"]["state"] == "running" and "process_gone" not in shown["twin"]


@pytest.mark.skipif(
    not os.path.exists("/proc/sys/kernel/random/boot_id"), reason="no boot_id: not Linux"
)
def test_a_twin_whose_clock_runs_behind_this_boot_shows_running(tmp_path: Path):
    """A machine of this one's name (another boot_id) on a shared folder whose clock runs behind
    this one's by more than this machine's uptime writes an ``updated`` before this boot: its
    live run was taken for one a reboot of this machine ended, shown interrupted, "process
    gone". Two witnesses say otherwise: status.json's mtime (the file system's clock) after this
    boot, or the run's lock (.dreamtext.lock) held now, which no process of an earlier boot
    holds. With neither (written before this boot by both clocks, the lock free), the reboot
    ended it."""
    import uuid

    from dreamtext.processes import BOOT_TIME, HOST, LOCK_NAME

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    before = BOOT_TIME - 120
    behind = datetime.fromtimestamp(before, timezone.utc).isoformat(timespec="seconds")
    status = {"state": "running", "step": 10, "iters": 20, "host": HOST, "pid": dead.pid}
    status |= {"boot_id": str(uuid.uuid4()), "updated": behind}
    locked = make_run(tmp_path / "locked", "a red cube", final=False, status=status)
    make_run(tmp_path / "written_since", "a cube", final=False, status=status)  # mtime: now
    rebooted = make_run(tmp_path / "rebooted", "a blue cube", final=False, status=status)
    for run in (locked, rebooted):
        os.utime(run / "status.json", (before, before))
    (locked / LOCK_NAME).write_text(json.dumps(status))
    holds = (
        "import fcntl, sys, time; f = open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_EX); "
        "print('held', flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holds, str(locked / LOCK_NAME)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        shown = {r.id: read_run(r).status for r in Catalog([tmp_path]).runs()}
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    for twin in ("locked", "written_since"):
        assert shown[twin]["state"] == "running" and "process_gone" not in shown[twin]
    assert (shown["rebooted"]["state"], shown["rebooted"]["process_gone"]) == (
        "interrupted",
        dead.pid,
    )


def test_a_failed_run_shows_the_step_its_checkpoint_saved_where_that_is_behind(tmp_path: Path):
    """A full disk at step 14 of a run saved at step 10: the card showed step 14 alone, a step
    --resume does not start from."""
    failed = {"state": "failed", "step": 14, "iters": 20, "error": "No space left on device"}
    make_run(tmp_path / "full", "a red cube", final=False, status={**failed, "saved_step": 10})
    make_run(tmp_path / "nan", "a cube", final=False, status={**failed, "saved_step": 14})
    make_run(tmp_path / "old", "a blue cube", final=False, status=failed)  # from before saved_step
    shown = {r.id: read_run(r).status for r in Catalog([tmp_path]).runs()}
    assert (shown["full"]["step"], shown["full"]["saved_step"]) == (14, 10)
    assert "saved_step" not in shown["nan"] and "saved_step" not in shown["old"]
    assert shown["old"]["step"] == 14


def _shown_and_copied(original: Path, status: dict) -> tuple[dict, ...]:
    """The statuses the viewer shows of a run made in ``original`` with ``status`` and of its
    copy (``copytree``) into ``copies/<name>`` beside the folder above it."""
    make_run(original, "a red cube", final=False, status=status)
    copy = original.parent.parent / "copies" / original.name
    shutil.copytree(original, copy)
    return tuple(read_run(Catalog([folder]).runs()[0]).status for folder in (original, copy))


def test_a_copy_of_a_running_run_shows_as_interrupted_and_the_original_as_running(tmp_path: Path):
    """A run folder copied with ``cp -r`` while it trained carries its status.json and lock file,
    which name the live process that trains the original: the copy showed "running", forever.
    The original's process holds the original's lock, and nobody the copy's."""
    from dreamtext.processes import HOST, LOCK_NAME, process_start

    original = tmp_path / "runs" / "cube"
    original.mkdir(parents=True)
    (original / LOCK_NAME).touch()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(original / LOCK_NAME)], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout.readline() == b"held\n"
        status = {"state": "running", "step": 10, "iters": 20, "host": HOST, "pid": holder.pid}
        status["pid_start"] = process_start(holder.pid)
        shown, copied = _shown_and_copied(original, status)
    finally:
        holder.kill()
        holder.wait()
    assert shown["state"] == "running" and "process_elsewhere" not in shown
    assert (copied["state"], copied["process_elsewhere"]) == ("interrupted", holder.pid)
    assert copied["step"] == 10 and "process_gone" not in copied


def test_a_copy_of_a_running_run_whose_original_ended_says_it_is_a_copy_not_killed(
    tmp_path: Path,
):
    """A folder copied at step 10 while its run ran, viewed after that run finished: its
    status.json still says running, its process is gone, and the copy showed "its process N
    ended without recording how (killed, or its disk full)", as a run killed in its own folder.
    status.json names its folder (``folder_inode``): the copy is another folder, a snapshot of
    a run that went on elsewhere; the original's folder, killed, is still the killed run."""
    from dreamtext.processes import this_process

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    original = tmp_path / "runs" / "cube"
    original.mkdir(parents=True)
    status = {"state": "running", "step": 10, "iters": 20, **this_process()}
    status |= {"pid": ended.pid, "pid_start": None, "folder_inode": original.stat().st_ino}
    killed, copied = _shown_and_copied(original, status)
    assert (killed["state"], killed["process_gone"]) == ("interrupted", ended.pid)
    assert "copy" not in killed
    assert (copied["state"], copied["copy"], copied["step"]) == ("interrupted", True, 10)
    assert copied["process_ended"] == ended.pid
    assert "process_gone" not in copied and "process_elsewhere" not in copied


def test_a_copy_is_told_by_its_folder_where_no_lock_says_so(tmp_path: Path):
    """A copy made while the run runs, where its lock cannot be asked (a file system without
    locks: no lock file) showed running, at the step it was copied at, for ten minutes."""
    from dreamtext.processes import process_start, this_process

    original = tmp_path / "runs" / "cube"
    original.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        status = {"state": "running", "step": 10, "iters": 20, **this_process()}
        status |= {"pid": holder.pid, "pid_start": process_start(holder.pid)}
        status["folder_inode"] = original.stat().st_ino
        shown, copied = _shown_and_copied(original, status)
    finally:
        holder.kill()
        holder.wait()
    assert shown["state"] == "running" and "copy" not in shown
    assert (copied["state"], copied["process_elsewhere"]) == ("interrupted", holder.pid)


def test_runs_in_folders_of_other_scripts_keep_their_names_as_ids(tmp_path: Path):
    """Workspaces are named in the prompt's own letters (``一只猫``, ``crème_brûlée``); their
    ids were all ``run``, ``run-2``…: addresses that change when a run is added."""
    make_run(tmp_path / "一只猫", "一只猫")
    make_run(tmp_path / "crème_brûlée", "Crème brûlée")
    make_run(tmp_path / "a cat (2)", "a cat")
    make_run(tmp_path / "नमस्ते", "नमस्ते")  # vowel signs and virama were cut: नमस_त
    assert sorted(r.id for r in Catalog([tmp_path]).runs()) == [
        "a_cat_2",
        "crème_brûlée",
        "नमस्ते",
        "一只猫",
    ]


@pytest.mark.parametrize("what", ["missing", "empty", "file"])
def test_folders_without_runs_are_user_errors(tmp_path: Path, what: str):
    target = tmp_path / what
    if what == "empty":
        target.mkdir()
    if what == "file":
        target.write_text("x")
    with pytest.raises(DreamtextError):
        Catalog([target])


def test_status_json_gives_state_steps_time_memory_and_error(root: Path):
    torus = read_run(location(Catalog([root]), "torus"))
    assert torus.status["state"] == "failed"
    assert torus.status["source"] == "status.json"
    assert torus.status["error"] == "CUDA out of memory"
    assert (torus.status["step"], torus.status["iters"]) == (10, 20)


def test_a_pages_status_has_whole_steps_and_iters_as_written(root: Path):
    """The pages' data showed ``"step": 20.0`` and ``"iters": 20.0``: every number read from a
    run's files was made a float. From status.json (cube), the log and config.json (sphere),
    and a running run's log step over its status.json's (torus)."""
    write_json(root / "torus" / "status.json", {**RUNNING, "step": 5, "iters": 20})
    links = server_links("api/runs.json")
    for name in ("cube", "sphere", "torus"):
        text = script_json(run_json(read_run(location(Catalog([root]), name)), links, True))
        status = json.loads(text)["status"]
        assert (type(status["step"]), type(status["iters"])) == (int, int), (name, status)
        assert f'"step": {status["step"]},' in text and f'"iters": {status["iters"]},' in text


def test_older_runs_without_status_json_get_a_status_from_their_files(root: Path):
    catalog = Catalog([root])
    (root / "cube" / "status.json").unlink()
    cube = read_run(location(catalog, "cube"))
    assert (cube.status["state"], cube.status["source"]) == ("finished", "files")
    sphere = read_run(location(catalog, "sphere"))  # stopped at step 10 of 20, an hour ago
    assert sphere.status["state"] == "interrupted"
    write_log(root / "sphere" / "log.jsonl", (10, 20 - 5))  # written just now
    assert read_run(location(catalog, "sphere")).status["state"] == "running"


@pytest.mark.parametrize("mesh", ["mesh.glb", "mesh.obj", "mesh.ply"])
def test_an_older_run_without_status_json_that_exported_any_mesh_is_finished(root: Path, mesh):
    """Its log short of iters and no final preview: the mesh says the run ended. Only a GLB
    did; one exported with --formats obj or ply showed "interrupted"."""
    sphere = root / "sphere"
    (sphere / "mesh").mkdir()
    (sphere / "mesh" / mesh).write_bytes(b"mesh")
    age(sphere, 3600)
    status = read_run(location(Catalog([root]), "sphere")).status
    assert (status["state"], status["source"]) == ("finished", "files")


def test_a_running_run_whose_files_stopped_changing_says_how_long(root: Path):
    catalog = Catalog([root])
    write_json(root / "sphere" / "status.json", {"state": "running", "step": 10, "iters": 20})
    assert "quiet_minutes" not in read_run(location(catalog, "sphere")).status
    past = time.time() - 1800
    for path in (root / "sphere").rglob("*"):
        os.utime(path, (past, past))
    status = read_run(location(catalog, "sphere")).status
    assert status["state"] == "running" and status["quiet_minutes"] == 30


def age(folder: Path, seconds: float) -> None:
    """Make every file and folder under ``folder`` ``seconds`` old."""
    past = time.time() - seconds
    for path in folder.rglob("*"):
        os.utime(path, (past, past))


def write_records(path: Path, records) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


RUNNING = {"state": "running", "step": 10, "iters": 100, "gpu_mem_mib": 900.0, "seconds": 5.0}


def test_a_running_run_shows_the_log_step_when_status_json_is_behind(root: Path):
    sphere = root / "sphere"
    write_json(sphere / "status.json", RUNNING)  # written at the start, not since
    write_records(sphere / "log.jsonl", [{"step": s, "loss": 1.0} for s in (10, 20, 40)])
    assert read_run(location(Catalog([root]), "sphere")).status["step"] == 40
    write_json(sphere / "status.json", {**RUNNING, "step": 50})  # refreshed after the last line
    assert read_run(location(Catalog([root]), "sphere")).status["step"] == 50


def test_a_running_run_shows_the_larger_peak_memory_of_status_json_and_the_log(root: Path):
    sphere = root / "sphere"
    write_json(sphere / "status.json", RUNNING)
    write_records(sphere / "log.jsonl", [{"step": 10, "gpu_mem_mib": 1500.0}, {"step": 20}])
    assert read_run(location(Catalog([root]), "sphere")).status["gpu_mem_mib"] == 1500.0
    write_json(sphere / "status.json", {**RUNNING, "gpu_mem_mib": 2048.0})
    assert read_run(location(Catalog([root]), "sphere")).status["gpu_mem_mib"] == 2048.0


def test_an_ended_run_keeps_status_json_figures(root: Path):
    sphere = root / "sphere"
    write_json(sphere / "status.json", {**RUNNING, "state": "interrupted", "step": 20})
    write_records(sphere / "log.jsonl", [{"step": 30, "gpu_mem_mib": 1500.0}])
    status = read_run(location(Catalog([root]), "sphere")).status
    assert (status["step"], status["gpu_mem_mib"]) == (20, 900.0)


@pytest.mark.parametrize(
    "fresh", ["status.json", "log.jsonl", "previews/step_000010.png", "mesh/mesh.glb"]
)
def test_a_running_run_is_quiet_only_when_none_of_its_files_changed(root: Path, fresh: str):
    """status.json may be stale (an old trainer, the export, which logs no lines): a new preview
    or mesh file also shows the run is alive. Touching a file in place leaves its folder's mtime
    as it was, so this checks the files themselves."""
    sphere = root / "sphere"
    write_json(sphere / "status.json", RUNNING)
    write_png(sphere / "previews" / "step_000010.png")
    (sphere / "mesh").mkdir()
    (sphere / "mesh" / "mesh.glb").write_bytes(b"glTF")
    age(sphere, 1800)
    assert read_run(location(Catalog([root]), "sphere")).status["quiet_minutes"] == 30
    os.utime(sphere / fresh)
    assert "quiet_minutes" not in read_run(location(Catalog([root]), "sphere")).status


def file_server_clock(folder: Path, offset: float) -> None:
    """Give every file and folder under ``folder`` (and itself) the time it would have on a file
    server whose clock is ``offset`` seconds ahead of this machine's, written just now."""
    when = time.time() + offset
    for path in [folder, *folder.rglob("*")]:
        os.utime(path, (when, when))


def iso(seconds_from_now: float) -> str:
    moment = datetime.now(timezone.utc) + timedelta(seconds=seconds_from_now)
    return moment.isoformat(timespec="seconds")


@pytest.mark.parametrize("offset", [-600.0, 600.0])
def test_a_live_run_on_a_file_server_with_another_clock_is_not_quiet(root: Path, offset: float):
    """The run wrote just now (status.json's "updated", the writer's clock), but its files'
    times are the file server's, 10 minutes behind or ahead: neither makes it quiet."""
    sphere = root / "sphere"
    write_json(sphere / "status.json", {**RUNNING, "updated": iso(0)})
    file_server_clock(sphere, offset)
    status = read_run(location(Catalog([root]), "sphere")).status
    assert status["state"] == "running" and "quiet_minutes" not in status


@pytest.mark.parametrize("offset", [-600.0, 600.0])
def test_a_dead_run_on_a_file_server_with_another_clock_is_quiet_for_its_real_time(
    root: Path, offset: float
):
    """Its last write was 11 minutes ago by the writer's clock; its file times are off by 10
    minutes either way: it has been quiet for 11 minutes, not 1 or 21."""
    sphere = root / "sphere"
    write_json(sphere / "status.json", {**RUNNING, "updated": iso(-11 * 60)})
    file_server_clock(sphere, offset - 11 * 60)
    status = read_run(location(Catalog([root]), "sphere")).status
    assert status["state"] == "running" and status["quiet_minutes"] == 11


def test_a_watched_run_is_not_quiet_after_it_writes_whatever_its_file_times_say(
    root: Path, monkeypatch
):
    """No "updated" in status.json to tell the file server's clock by: a file server 10 minutes
    behind makes the first look quiet, but once the viewer has seen the run's files change it
    counts by its own clock from that look: not quiet, then quiet 11 minutes later."""
    import dreamtext.view.workspaces as workspaces

    sphere = root / "sphere"
    write_json(sphere / "status.json", RUNNING)
    file_server_clock(sphere, -630)
    catalog = Catalog([root])
    assert read_run(location(catalog, "sphere")).status["quiet_minutes"] == 10
    write_records(sphere / "log.jsonl", [{"step": 10}, {"step": 20}])
    file_server_clock(sphere, -625)  # the new line, in the file server's time
    assert "quiet_minutes" not in read_run(location(catalog, "sphere")).status
    real_time = time.time
    monkeypatch.setattr(workspaces.time, "time", lambda: real_time() + 11 * 60)
    assert read_run(location(catalog, "sphere")).status["quiet_minutes"] == 11


def test_a_watched_run_on_a_file_server_ahead_turns_quiet_by_the_viewers_clock(
    root: Path, monkeypatch
):
    """File times 10 minutes in the future, no "updated": the run looks fresh, and after 11
    minutes of this viewer's time without a change it is quiet (its file times alone said 1)."""
    import dreamtext.view.workspaces as workspaces

    sphere = root / "sphere"
    write_json(sphere / "status.json", RUNNING)
    file_server_clock(sphere, 600)
    catalog = Catalog([root])
    assert "quiet_minutes" not in read_run(location(catalog, "sphere")).status
    real_time = time.time
    monkeypatch.setattr(workspaces.time, "time", lambda: real_time() + 11 * 60)
    assert read_run(location(catalog, "sphere")).status["quiet_minutes"] == 11


def test_a_run_without_status_json_on_a_file_server_ahead_stops_counting_as_running(
    root: Path, monkeypatch
):
    """A run from before status.json counts as running while its files change; on a file server
    10 minutes ahead its last write looked 10 minutes younger, so it stayed "running" 12
    minutes after it stopped. Watched, it is interrupted 3 minutes after its last change."""
    import dreamtext.view.workspaces as workspaces

    sphere = root / "sphere"
    file_server_clock(sphere, 600)
    catalog = Catalog([root])
    assert read_run(location(catalog, "sphere")).status["state"] == "running"
    real_time = time.time
    monkeypatch.setattr(workspaces.time, "time", lambda: real_time() + 3 * 60)
    assert read_run(location(catalog, "sphere")).status["state"] == "interrupted"


def test_a_running_status_json_that_vanished_after_reading_is_not_quiet():
    """status.json read, then replaced or removed before its mtime was taken: no file time."""
    from dreamtext.view.workspaces import Run, status_of

    status = status_of(Run(id="x", name="x", workspace=None), RUNNING, [], None)
    assert status["state"] == "running" and "quiet_minutes" not in status


@pytest.mark.parametrize(
    "state, phase, activity",
    [
        ("running", "export", "exporting"),
        ("running", "train", None),
        ("running", None, None),
        ("failed", "export", "in export"),
        ("finished", "export", None),
    ],
)
def test_status_json_phase_says_what_the_run_is_doing(root: Path, state, phase, activity):
    status = {**RUNNING, "state": state} | ({"phase": phase} if phase else {})
    write_json(root / "sphere" / "status.json", status)
    status = read_run(location(Catalog([root]), "sphere")).status
    assert (status["phase"], status["activity"]) == (phase, activity)


def test_peak_gpu_memory_is_the_largest_in_the_log(root: Path):
    lines = [{"step": 10, "loss": 1.0, "gpu_mem_mib": 900.0}, {"step": 20, "loss": 1.0}]
    lines.append({"step": 30, "loss": 1.0, "gpu_mem_mib": 1200.5})
    (root / "sphere" / "log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    sphere = read_run(location(Catalog([root]), "sphere"))
    assert sphere.status["gpu_mem_mib"] == 1200.5
    assert sphere.series["gpu_mem_mib"] == [900.0, None, 1200.5]


def test_batch_lines_give_status_and_cards_for_workspaces_never_made(root: Path):
    records = [
        batch_record(1, "sphere", "failed", "boom"),
        batch_record(2, "never_made", "skipped"),
        batch_record(3, "sphere", "finished"),  # a retry: the newest line wins
        batch_record(4, "../outside", "finished"),
    ]
    make_run(root.parent / "outside", "elsewhere")
    (root / "batch.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    catalog = Catalog([root])
    sphere = read_run(location(catalog, "sphere"))
    assert (sphere.status["state"], sphere.status["source"]) == ("finished", "batch.jsonl")
    assert sphere.batch["line"] == 3 and sphere.status["seconds"] == 12.5
    never = read_run(location(catalog, "never_made"))
    assert never.workspace is None and never.status["state"] == "skipped"
    outside = read_run(location(catalog, "outside"))  # a card from its batch line, no files
    assert outside.workspace is None and outside.status["state"] == "finished"
    assert all(r.path is None or r.path.is_relative_to(root) for r in catalog.runs())


def test_a_skipped_batch_line_does_not_hide_the_attempt_before_it(tmp_path: Path):
    """Workers sharing a list: one failed a prompt the model refused (no workspace was made),
    another skipped it; and a rerun skipped a finished run. The cards show the attempts."""
    root = tmp_path / "runs"
    make_run(root / "cube", "a red cube")  # finished, without status.json: from its batch line
    failed = batch_record(1, "a_cat", "failed", "the built-in prior does not know 'a cat'")
    done = batch_record(2, "cube", "finished")
    skipped = batch_record(1, "a_cat", "skipped", "failed in another worker of this batch: ...")
    write_records(root / "batch.jsonl", [failed, done, skipped, batch_record(2, "cube", "skipped")])
    runs = {r.id: read_run(r) for r in Catalog([root]).runs()}
    assert runs["a_cat"].status["state"] == "failed"
    assert runs["a_cat"].status["error"] == failed["error"]
    assert runs["cube"].batch == done


def test_a_batch_jsonl_an_editor_saved_with_a_bom_keeps_its_first_record(tmp_path: Path):
    """A batch.jsonl saved by an editor that starts files with a UTF-8 BOM: batch's own reader
    reads its first record (json.loads of bytes); the viewer dropped it."""
    root = tmp_path / "runs"
    first = batch_record(1, "a_cat", "failed", "out of memory")
    second = batch_record(2, "cube", "finished")
    text = "".join(json.dumps(r) + "\n" for r in (first, second))
    (root / "batch.jsonl").parent.mkdir(parents=True)
    (root / "batch.jsonl").write_bytes(b"\xef\xbb\xbf" + text.encode())
    runs = {r.id: read_run(r) for r in Catalog([root]).runs()}
    assert runs["a_cat"].status["state"] == "failed" and runs["cube"].batch == second


def test_prompts_and_errors_that_are_not_text_reach_the_page_as_text(tmp_path: Path):
    """A config.json or batch.jsonl prompt that is a number (a hand-edited or foreign file) broke
    the gallery's sort by prompt and its filter, which call string methods on it; an error that
    is an object showed as "[object Object]"."""
    base = tmp_path / "runs"
    failed = {"state": "failed", "step": 10, "iters": 20, "error": {"code": 7}}
    make_run(base / "numbered", 123, status=failed)
    ghost = {**batch_record(2, "ghost", "failed", ["out of memory"]), "prompt": 42}
    (base / "batch.jsonl").write_text(json.dumps(ghost) + "\n")
    catalog = Catalog([base])
    numbered = read_run(location(catalog, "numbered"))
    assert (numbered.prompt, numbered.status["error"]) == (None, '{"code": 7}')
    never_made = read_run(location(catalog, "ghost"))
    assert (never_made.prompt, never_made.status["error"]) == (None, '["out of memory"]')


def test_a_log_line_still_being_written_is_left_out(tmp_path: Path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    figures = log_figures(path)
    assert (figures.lines, figures.last) == (1, {"step": 1, "loss": 2.0})
    assert log_curves(path)[1]["loss"] == [2.0]


@pytest.mark.parametrize(
    "bad",
    ['{"step": ' + "1" * 5000 + "}", "[" * 100_000, '{"a": ' * 100_000],
    ids=["int-of-5000-digits", "nested-arrays", "nested-objects"],
)
def test_a_log_line_python_cannot_read_is_left_out_and_the_gallery_still_answers(
    tmp_path: Path, bad: str
):
    """json.loads refuses such a line with a plain ValueError (int digits) or a RecursionError,
    not a JSONDecodeError: one such line (a torn write, garbage, a hand edit) in one run's log
    made every answer of the gallery and the run's page a 500. The same text as a run's
    config.json or status.json is read as no file."""
    run = make_run(tmp_path / "cube", "a red cube", status={"state": "finished", "step": 20})
    with open(run / "log.jsonl", "a", encoding="utf-8") as log:
        log.write(bad + "\n" + json.dumps({"step": 30, "loss": 0.5}) + "\n")
    other = make_run(tmp_path / "torus", "a green torus")
    (other / "config.json").write_text(bad)
    (other / "status.json").write_text(bad)
    with serving(Catalog([tmp_path])) as srv:
        status, body, _ = get(srv, "/api/runs.json")
        assert status == 200
        runs = {r["id"]: r for r in json.loads(body)["runs"]}
        assert runs["cube"]["log_lines"] == 3 and runs["torus"]["prompt"] is None
        status, body, _ = get(srv, "/api/run/cube.json")
        assert status == 200 and json.loads(body)["run"]["series"]["step"] == [10, 20, 30]


def test_a_folder_name_that_is_not_utf8_or_an_escaped_surrogate_does_not_break_the_pages(
    tmp_path: Path,
):
    """Python holds a folder name's byte that is not UTF-8 as a lone surrogate (U+DCFF), and
    json.loads makes one of a "\\udcff" escape; neither can be written as UTF-8. One such run
    made every answer of the gallery a 500 and `view --static` a traceback. Now the pages carry
    it as its JSON escape (the same string in JavaScript) and the title as U+FFFD."""
    root = tmp_path / "runs"
    odd = root / os.fsdecode(b"caf\xe9")  # Latin-1 "café", as a copy from an old machine names it
    make_run(odd, "a red cube", status={"state": "finished", "step": 20, "iters": 20})
    make_run(root / "torus", "a green torus")
    (root / "torus" / "config.json").write_text('{"prompt": "torus \\udcff", "iters": 20}')
    with serving(Catalog([root])) as srv:
        status, body, _ = get(srv, "/api/runs.json")
        assert status == 200
        runs = {r["id"]: r for r in json.loads(body)["runs"]}
        assert runs["caf"]["name"] == odd.name and runs["torus"]["prompt"] == "torus \udcff"
        for path in ("/", "/run/caf/", "/api/run/caf.json", "/run/torus/", "/api/run/torus.json"):
            status, body, _ = get(srv, path)
            assert status == 200, path
            body.decode("utf-8")  # strict
        assert "<title>torus \ufffd · dreamtext</title>" in get(srv, "/run/torus/")[1].decode()
        assert get(srv, "/" + runs["caf"]["thumbnail"])[0] == 200
    site = export_static([root], tmp_path / "site")
    assert (site / "runs" / "caf" / "index.html").is_file()
    assert '"prompt": "torus \\udcff"' in (site / "runs" / "torus" / "index.html").read_text(
        "utf-8"
    )


# -------------------------------------------------------------------- logs followed as they grow


def log_record(step: int, scale: float = 1.0, **extra) -> dict:
    """A log line shaped as the trainer's (several keys the pages never show among them)."""
    return {
        "step": step,
        "loss": scale / step,
        "loss_sds": scale / step,
        "shading": "lambertian",
        "view": "front",
        "t": 500.0 + step % 3,
        "its": 4.0 + step % 5,
        "gpu_mem_mib": 1000.0 + step % 7,
        **extra,
    }


def write_lines(path: Path, records, mode: str = "a") -> None:
    with open(path, mode, encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))


def shown_of_log(path: Path) -> dict:
    """What the pages should show of a log, from its complete lines, read here directly."""
    text = path.read_text(encoding="utf-8")
    records = [json.JSONDecoder().decode(line) for line in text.split("\n")[:-1]]  # not counted
    columns = {k: [r.get(k) for r in records] for k in ("loss", "loss_sds", "t", "its")}
    columns["gpu_mem_mib"] = [r.get("gpu_mem_mib") for r in records]
    return {
        "log_lines": len(records),
        "step": records[-1]["step"] if records else None,
        "gpu_mem_mib": max(filter(None, columns["gpu_mem_mib"]), default=None),
        # A curve for each key some record has.
        "series": {"step": [r.get("step") for r in records]}
        | {k: values for k, values in columns.items() if any(v is not None for v in values)},
    }


def shown_by_viewer(gallery, catalog: Catalog, run_id: str) -> dict:
    """What the gallery (a poll) and the run page show of a run's log."""
    card = next(r for r in gallery.runs(catalog.runs()) if r.id == run_id)
    page = read_run(location(catalog, run_id))
    assert (page.log_lines, page.status) == (card.log_lines, card.status)
    return {
        "log_lines": card.log_lines,
        "step": card.status["step"],
        "gpu_mem_mib": card.status["gpu_mem_mib"],
        "series": page.series,
    }


def count_log_lines_parsed(monkeypatch) -> list[str]:
    """The log lines (those holding "shading") json.loads is asked to parse from now on."""
    parsed, loads = [], json.loads

    def counting(text, *args, **kwargs):
        if "shading" in (text if isinstance(text, str) else text.decode(errors="replace")):
            parsed.append(text)
        return loads(text, *args, **kwargs)

    monkeypatch.setattr(json, "loads", counting)
    return parsed


def test_a_growing_log_is_parsed_only_where_it_grew(tmp_path: Path, monkeypatch):
    """A live run appends a line every log_every steps: the viewer parsed its whole log again
    for each (a 10,000-step run's 1,000 lines, for the gallery and again for the run page)."""
    import dreamtext.view.workspaces as workspaces

    live = make_run(tmp_path / "live", "a cube", iters=5000, final=False)
    write_lines(live / "log.jsonl", (log_record(s) for s in range(10, 2001, 10)), "w")
    write_json(live / "status.json", {"state": "running", "step": 2000, "iters": 5000})
    catalog, gallery = Catalog([tmp_path]), workspaces.GalleryCache()
    assert shown_by_viewer(gallery, catalog, "live") == shown_of_log(live / "log.jsonl")
    parsed = count_log_lines_parsed(monkeypatch)
    for step in (2010, 2020):
        time.sleep(0.01)  # a later mtime on file systems with coarse clocks
        write_lines(live / "log.jsonl", [log_record(step, gpu_mem_mib=9000.0)])
        shown = shown_by_viewer(gallery, catalog, "live")
        assert shown == shown_of_log(live / "log.jsonl")
        assert shown["log_lines"] == 200 + (step - 2000) // 10
    # Each appended line once for the gallery's figures and once for the run page's curves.
    assert len(parsed) == 4


# Each change of a 100-line log (with a line being written after them), and its lines after.
LOG_CHANGES = {
    "resumed: truncated to an earlier step, then appended": 79,
    "truncated in place, then appended past the old size": 150,
    "rewritten in place with other records, longer": 120,
    "rewritten in place, same size": 100,
    "last line completed": 101,
    "emptied": 0,
}


@pytest.mark.parametrize("change", LOG_CHANGES)
def test_a_log_rewritten_or_truncated_shows_as_it_is_now(tmp_path: Path, change: str):
    """A resume truncates log.jsonl to the checkpoint's step and appends from there; a copy or
    an editor may rewrite it in place. The pages show the log as it is, never records kept
    from before with records appended after."""
    import dreamtext.view.workspaces as workspaces
    from dreamtext.interrupts import truncate_log

    run = make_run(tmp_path / "run", "a cube", iters=5000, final=False)
    log = run / "log.jsonl"
    write_lines(log, (log_record(s) for s in range(10, 1001, 10)), "w")
    with open(log, "a") as f:
        f.write('{"step": 1010, "loss": 0.5, "sha')  # a line being written
    catalog, gallery = Catalog([tmp_path]), workspaces.GalleryCache()
    assert shown_by_viewer(gallery, catalog, "run") == shown_of_log(log)
    time.sleep(0.02)  # a later mtime on file systems with coarse clocks
    if change.startswith("resumed"):
        truncate_log(log, 500)
        write_lines(log, (log_record(s, scale=3.0) for s in range(510, 800, 10)))
    elif change.startswith("truncated in place"):
        write_lines(log, (log_record(s, scale=2.0) for s in range(10, 301, 10)), "w")
        write_lines(log, (log_record(s, scale=5.0) for s in range(310, 1501, 10)))
    elif change.startswith("rewritten in place with other records"):
        write_lines(log, (log_record(s, scale=7.0) for s in range(10, 1201, 10)), "w")
    elif change.startswith("rewritten in place, same size"):
        log.write_text(log.read_text().replace('"t": 50', '"t": 60'))
    elif change == "last line completed":
        with open(log, "a") as f:
            f.write('dow": 1.0}\n')
    elif change == "emptied":
        log.write_text("")
    shown = shown_by_viewer(gallery, catalog, "run")
    assert shown == shown_of_log(log)
    assert shown["log_lines"] == LOG_CHANGES[change]


def test_the_viewer_keeps_of_a_log_what_the_pages_show_not_its_records(tmp_path: Path):
    """A sweep of 1,000 runs of 10,000 steps is a million log lines, ~2 KB each as parsed
    records: the viewer kept them all (a gigabyte and more). It keeps a log's figures (lines,
    last record, peak memory) for the gallery and the curves of the runs whose pages are open."""
    import tracemalloc

    import dreamtext.view.workspaces as workspaces

    for i in range(10):
        run = make_run(tmp_path / f"run{i}", f"prompt {i}", iters=10_000, final=False)
        write_lines(run / "log.jsonl", (log_record(s) for s in range(10, 10_001, 10)), "w")
    catalog, gallery = Catalog([tmp_path]), workspaces.GalleryCache()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        runs = gallery.runs(catalog.runs())
        page = read_run(location(catalog, "run3"))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert [r.log_lines for r in runs] == [1000] * 10
    assert page.series["loss"][-1] == 1 / 10_000
    # 10,000 records parsed; the curves of one page (6 × 1,000 numbers) as lists for its answer.
    assert held < 1_500_000, held


def test_a_long_logs_curves_keep_their_range_spikes_and_ends_in_at_most_2000_records(
    tmp_path: Path,
):
    """A run page got every record of its log at each poll: 100,000 log lines were 7.5 MB of
    JSON (1.9 MB gzipped) every 2 s (benchmarks/view_run_poll.py). A long log's curves are now
    drawn from at most 2,000 of its records, each a true record, keeping every curve's first and
    last step, its smallest and largest value, a spike and its extremes in each bucket of a
    power-of-two number of records; a key some lines lack keeps its own."""
    import random

    rng = random.Random(0)
    records = []
    for step in range(1, 20_001):
        record = {"step": step, "loss": 1 / step + rng.random() * 1e-4, "t": rng.uniform(20, 980)}
        record |= {"its": 4.0 + rng.random()}
        if step % 7 == 0:
            record["gpu_mem_mib"] = 1000.0 + step % 13
        records.append(record)
    records[12_345]["loss"] = 50.0  # a spike, far from the curve's other large values
    records[15_000]["t"] = 0.5  # an outlier low
    run = make_run(tmp_path / "long", "a long run", iters=20_000, final=False)
    write_lines(run / "log.jsonl", records, "w")
    shown = read_run(Catalog([run]).runs()[0]).series
    steps = shown["step"]
    assert 100 < len(steps) <= 2000
    assert steps == sorted(steps) and steps[0] == 1 and steps[-1] == 20_000
    by_step = {r["step"]: r for r in records}
    for key in ("loss", "t", "its", "gpu_mem_mib"):
        kept = shown[key]
        assert kept == [by_step[s].get(key) for s in steps], key  # true records' values
        every = [r[key] for r in records if key in r]
        values = [v for v in kept if v is not None]
        assert (min(values), max(values)) == (min(every), max(every)), key
    assert 12_346 in steps and 15_001 in steps
    # Each curve's extremes in every bucket of w records, w the smallest power of two that
    # makes at most (2000 - 2) // (2 · 4 curves) = 249 buckets: 128 (157 buckets).
    width = 128
    assert -(-20_000 // width) <= 249 < -(-20_000 // (width // 2))
    for key in ("loss", "t", "its", "gpu_mem_mib"):
        for start in range(0, 20_000, width):
            every = [r[key] for r in records[start : start + width] if key in r]
            drawn = [
                v for s, v in zip(steps, shown[key], strict=True) if start < s <= start + width
            ]
            drawn = [v for v in drawn if v is not None]
            assert (min(drawn), max(drawn)) == (min(every), max(every)), (key, start)
    # A log within the limit is drawn from every record.
    write_lines(run / "log.jsonl", records[:2000], "w")
    assert read_run(Catalog([run]).runs()[0]).series["step"] == list(range(1, 2001))


class EveryRecordCurves:
    """A run page's curves as the viewer kept them before its fold was bounded: every record's
    value of each key (a 100,000-line log: 5.6 MB), the records drawn chosen from the whole
    columns by the rule :class:`LogCurves` states, written plainly: the reference it must equal.

    Kept of a log of ``n > 2000`` records: the first and last, and for each curve (a key but
    step with a value somewhere) the first record of its smallest and of its largest value in
    each bucket of ``w`` consecutive records, ``w`` the smallest power of two with
    ``ceil(n / w) <= (2000 - 2) // (2 K)`` for ``K`` curves."""

    def __init__(self) -> None:
        from dreamtext.view.workspaces import CURVE_KEYS, LogFigures

        self.figures = LogFigures()
        self.columns: dict[str, list] = {key: [] for key in CURVE_KEYS}

    def add(self, record: dict) -> None:
        self.figures.add(record)
        for key, column in self.columns.items():
            value = record.get(key)
            finite = isinstance(value, (int, float)) and not isinstance(value, bool)
            column.append(float(value) if finite and math.isfinite(value) else None)

    def snapshot(self) -> tuple:
        n = len(self.columns["step"])
        kept = list(range(n))
        curves = [
            column
            for key, column in self.columns.items()
            if key != "step" and any(v is not None for v in column)
        ]
        if n > 2000:
            kept = {0, n - 1}
            width = 1
            while curves and -(-n // width) > (2000 - 2) // (2 * len(curves)):
                width *= 2
            for column in curves:
                for start in range(0, n, width):
                    present = [
                        i for i in range(start, min(n, start + width)) if column[i] is not None
                    ]
                    if present:  # min and max give the first of equal values
                        kept |= {min(present, key=column.__getitem__)}
                        kept |= {max(present, key=column.__getitem__)}
            kept = sorted(kept)
        return self.figures.snapshot(), {k: [c[i] for i in kept] for k, c in self.columns.items()}


def uneven_records(steps, seed: int = 0) -> list[dict]:
    """Log records whose curve keys are now absent, now NaN, ±Infinity, a string, a bool or
    null; a key (gpu_mem_mib) only from the middle on; repeated values (ties); a spike."""
    import random

    rng = random.Random(seed)
    odd = [float("nan"), float("inf"), float("-inf"), "1.5", True, None]
    records = []
    steps = list(steps)
    for i, step in enumerate(steps):
        record = {"step": step, "loss": round(1 / step + rng.random() * 0.01, 3), "shading": "x"}
        record["t"] = float(rng.randrange(20, 30))  # many ties
        record["its"] = 4.0 + rng.random()
        if i >= len(steps) // 2:
            record["gpu_mem_mib"] = 1000.0 + rng.randrange(5)
        for key in ("loss", "t", "its", "gpu_mem_mib"):
            roll = rng.random()
            if roll < 0.05:
                record.pop(key, None)
            elif roll < 0.08:
                record[key] = rng.choice(odd)
        if rng.random() < 0.01:
            record.pop("step")
        records.append(record)
    if len(records) > 10:
        records[len(records) // 3]["loss"] = 99.0
    return records


def api_run_body(server, run_id: str) -> bytes:
    status, body, _ = get(server, f"api/run/{run_id}.json")
    assert status == 200
    return body


@pytest.mark.parametrize("lines", [1000, 2001, 100_000])
def test_a_run_pages_data_from_the_bounded_curves_is_that_of_every_record(
    tmp_path: Path, monkeypatch, lines: int
):
    """The viewer kept every record's curve values of the 64 logs whose pages were asked for
    last (64 pages of 100,000-line runs held ~360 MB). It keeps per curve each bucket's extremes
    (LogCurves); ``api/run/<id>.json`` is byte for byte what every record kept gives, read whole,
    as the log grows by appends (parsed from where it was), is rolled back by a resume, and
    grows again."""
    import dreamtext.view.workspaces as workspaces
    from dreamtext.interrupts import truncate_log
    from dreamtext.view.workspaces import JsonlFollower

    run = make_run(tmp_path / "runs" / "long", "a long run", iters=10 * lines, final=False)
    write_json(run / "status.json", {"state": "finished", "step": 10 * lines, "iters": 10 * lines})
    records = uneven_records(range(10, 10 * lines + 1, 10))
    log = run / "log.jsonl"
    grown = [len(records) // 2, len(records) - 7, len(records) - 1, len(records)]
    log.write_text("")
    bounded = workspaces._log_curves

    def both() -> tuple[bytes, bytes]:
        """The answers without their cursor (which names the records that are settled)."""
        new = api_run_body(srv, "long")
        monkeypatch.setattr(workspaces, "_log_curves", JsonlFollower(EveryRecordCurves))
        every = api_run_body(srv, "long")
        monkeypatch.setattr(workspaces, "_log_curves", bounded)
        return tuple(re.sub(rb', "cursor": "[^"]*"', b"", body) for body in (new, every))

    with serving(Catalog([tmp_path / "runs"])) as srv:
        for start, end in itertools.pairwise([0, *grown]):
            write_lines(log, records[start:end])
            new, every = both()
            assert new == every, end
        shown = json.loads(new)["run"]
        assert shown["log_lines"] == lines
        assert (
            len(shown["series"]["step"]) == lines
            if lines <= 2000
            else 500 < len(shown["series"]["step"]) <= 2000
        )
        truncate_log(log, 10 * lines // 3)  # a resume from a checkpoint a third of the way
        new, every = both()
        assert new == every
        kept_lines = len(log.read_text().splitlines())
        assert json.loads(new)["run"]["log_lines"] == kept_lines < lines // 2
        write_lines(log, uneven_records(range(10 * lines // 3 + 10, 10 * lines // 2, 10), 1))
        new, every = both()
        assert new == every


def test_a_long_logs_curves_are_kept_in_bounded_memory(tmp_path: Path):
    """A log's curves were kept as 6 columns of 8-byte numbers per record (a 100,000-line log:
    5.6 MB with the arrays' slack; 64 such pages open: ~360 MB of the server; 30,000 lines here:
    1.6 MB). Now each curve's extremes per bucket: ~110 KB whatever the log's length."""
    import tracemalloc

    from dreamtext.view.workspaces import JsonlFollower, LogCurves

    path = tmp_path / "log.jsonl"
    write_lines(path, (log_record(s) for s in range(1, 30_001)), "w")
    follower = JsonlFollower(LogCurves)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        figures, curves = follower.read(path)
        assert figures.lines == 30_000 and len(curves["step"]) <= 2000
        del curves
        held = tracemalloc.get_traced_memory()[0] - before
        write_lines(path, (log_record(s) for s in range(30_001, 40_001)))
        assert follower.read(path)[0].lines == 40_000
        held_grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 200_000, held
    assert held_grown < 200_000, held_grown


def test_a_log_is_parsed_a_block_at_a_time(tmp_path: Path):
    """A log was read whole to be parsed: its bytes, their text and its lines at once, ~3 times
    its size (120 MB for a 100,000-line log, in the server and in each run of a static export).
    Now it is parsed a block at a time; every record still counts."""
    import tracemalloc

    from dreamtext.view.workspaces import JsonlFollower, LogCurves

    path = tmp_path / "log.jsonl"
    write_lines(path, (log_record(s, note="x" * 300) for s in range(1, 20_001)), "w")
    size = path.stat().st_size
    assert size > 8_000_000
    tracemalloc.start()
    try:
        figures, curves = JsonlFollower(LogCurves).read(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert figures.lines == 20_000 and figures.last["step"] == 20_000
    assert curves["step"][0] == 1 and curves["step"][-1] == 20_000
    assert peak < size / 2, (peak, size)


def test_a_log_line_of_megabytes_is_passed_over_without_being_kept(tmp_path: Path):
    """A log of one record and then 16 MiB of NUL bytes without a newline (what a crash can
    leave of a file on some file systems, or a binary file under a log's name) was kept whole as
    the start of a line, copied again at each block read: 64 MB took 5.4 s of CPU to parse and
    1 GB would take ~20 min, holding the gallery's polls. Such a line is passed over as it is
    read; the records around it still count, also when it ends only after a later read."""
    import tracemalloc

    from dreamtext.view.workspaces import JsonlFollower, LogFigures

    path = tmp_path / "log.jsonl"
    write_lines(path, [log_record(1)], "w")
    with open(path, "ab") as log:
        log.write(b"\0" * (16 << 20))
    follower = JsonlFollower(LogFigures)
    tracemalloc.start()
    try:
        figures = follower.read(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (figures.lines, figures.last["step"]) == (1, 1)
    assert peak < 4 << 20, peak
    # The long line goes on, then ends, and a record follows: only the record is read.
    with open(path, "ab") as log:
        log.write(b'{"step": 99, "loss": 1.0}' + b"\0" * 1000 + b"\n")
    write_lines(path, [log_record(2)])
    figures = follower.read(path)
    assert (figures.lines, figures.last["step"]) == (2, 2)


def test_a_log_read_as_it_grows_gives_the_records_of_a_whole_read_whatever_its_lines(
    tmp_path: Path, monkeypatch
):
    """Lines passed over for their length (:data:`_LINE_MAX_BYTES`, small here, as the blocks
    read) leave the records around them as one read of the whole file finds them, wherever the
    writes that grow the file end: mid-line, mid-long-line, at a newline."""
    import random

    import dreamtext.view.workspaces as workspaces

    class Steps:
        def __init__(self) -> None:
            self.steps: list[int] = []

        def add(self, record: dict) -> None:
            self.steps.append(record["step"])

        def snapshot(self) -> list[int]:
            return list(self.steps)

    monkeypatch.setattr(workspaces, "_PARSE_BLOCK_BYTES", 16)
    monkeypatch.setattr(workspaces, "_LINE_MAX_BYTES", 40)
    rng = random.Random(0)
    for trial in range(40):
        lines = [
            json.dumps({"step": i}).encode() if rng.random() < 0.7 else b"\0" * rng.randint(1, 200)
            for i in range(30)
        ]
        data = b"".join(line + b"\n" for line in lines)
        path = tmp_path / f"log{trial}.jsonl"
        path.write_bytes(b"")
        follower = workspaces.JsonlFollower(Steps)
        written = 0
        while written < len(data):
            grown = min(len(data), written + rng.randint(1, 120))
            with open(path, "ab") as log:
                log.write(data[written:grown])
            written = grown
            complete = data[: data.rfind(b"\n", 0, written) + 1]
            records = [json.loads(line) for line in complete.split(b"\n")[:-1] if b"\0" not in line]
            assert follower.read(path) == [r["step"] for r in records], (trial, written)


def test_the_logs_of_removed_runs_are_forgotten(tmp_path: Path, monkeypatch):
    """What the viewer kept of a log stayed for as long as it ran, after its run was removed."""
    import pathlib
    import tracemalloc

    import dreamtext.view.workspaces as workspaces

    make_run(tmp_path / "kept", "a cube")
    # Lines of 50 KB: what is kept of each log shows (what else the first polls leave, free
    # lists and caches, is a few KB, more or less by the tests run before).
    big = {"note": "x" * 50_000}
    for i in range(10):
        run = make_run(tmp_path / f"gone{i}", f"prompt {i}", final=False)
        write_lines(run / "log.jsonl", (log_record(s, **big) for s in range(10, 201, 10)), "w")
    write_records(
        tmp_path / "batch.jsonl", [batch_record(i, f"gone{i}", "failed") for i in range(10)]
    )
    catalog, gallery = Catalog([tmp_path]), workspaces.GalleryCache()

    def traced() -> int:
        """Bytes allocated since tracing started and still held, but for the table of interned
        strings, which grows (by MB) when pathlib interns the names of the session's paths."""
        interned = tracemalloc.Filter(False, pathlib.__file__)
        snapshot = tracemalloc.take_snapshot().filter_traces([interned])
        return sum(stat.size for stat in snapshot.statistics("filename"))

    tracemalloc.start()
    try:
        before = traced()
        assert len(gallery.runs(catalog.runs())) == 11
        read_run(location(catalog, "gone3"))  # a run page's curves
        assert tracemalloc.get_traced_memory()[0] - before > 10 * 50_000
        for i in range(10):
            shutil.rmtree(tmp_path / f"gone{i}")
        (tmp_path / "batch.jsonl").unlink()
        real_monotonic = time.monotonic
        monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + 3600)  # an hour later
        assert [r.id for r in gallery.runs(catalog.runs())] == ["kept"]
        held = traced() - before
    finally:
        tracemalloc.stop()
    assert held < 40_000, held


def test_image_runs_show_their_sentences_and_a_source_image_inside_the_workspace(root: Path):
    cube = root / "cube"
    sentence = {"sentence": "An image of a red cube", "trained_sentence": "An image of a <d> cube"}
    write_json(cube / SENTENCE_FILE, {**sentence, "image": str(root.parent / "secret.png")})
    run = read_run(location(Catalog([root]), "cube"))
    assert (run.kind, run.sentence, run.trained_sentence) == ("image", *sentence.values())
    assert run.source_image is None  # the recorded image lies outside the workspace
    write_png(cube / "diverse" / "sample_seed0.png")
    write_json(cube / SENTENCE_FILE, {**sentence, "image": str(cube / "diverse/sample_seed0.png")})
    assert read_run(location(Catalog([root]), "cube")).source_image == "diverse/sample_seed0.png"


CLIP_SENTENCE = "An image of a shiny red apple"
TRAINED_SENTENCE = "An image of a <descriptor> apple"


def make_image_run(folder: Path, stage: str, source=True, image=None) -> Path:
    """An image→3D workspace as `dreamtext image` leaves it at the end of a stage's writing:
    ``describe`` (the sentence, and the image's copy unless ``source`` is off), ``descriptor``
    (its checkpoints folder, previews folder and log, at step 1200), ``embeds`` (the learned
    file and trained sentence: the text stage has not written yet)."""
    sentence = {"sentence": CLIP_SENTENCE, "quantifier": "a", "words": ["shiny", "red"]}
    sentence |= {"noun": "apple", "image": str(image or folder.parent / "apple.jpg")}
    write_json(folder / SENTENCE_FILE, sentence)
    if source:
        write_png(folder / "descriptor" / "source.jpg", (220, 20, 20))
    if stage in ("descriptor", "embeds"):
        (folder / "descriptor" / "checkpoints").mkdir()
        (folder / "descriptor" / "previews").mkdir()
        records = [{"step": s, "loss": 1.0 / s} for s in range(10, 1201, 10)]
        write_records(folder / "descriptor" / "log.jsonl", records)
    if stage == "embeds":
        (folder / "descriptor" / "checkpoints" / "last.pt").write_bytes(b"torch")
        (folder / "descriptor" / "learned_embeds.safetensors").write_bytes(b"embeds")
        write_json(folder / SENTENCE_FILE, {**sentence, "trained_sentence": TRAINED_SENTENCE})
    return folder


def test_an_image_run_is_a_run_from_its_first_file(tmp_path: Path):
    """Before the text stage writes config.json, an image→3D workspace has only descriptor/;
    it is one run, whether its folder or the folder of runs is given."""
    apple = make_image_run(tmp_path / "runs" / "apple", "describe")
    assert [r.id for r in Catalog([tmp_path / "runs"]).runs()] == ["apple"]
    only = Catalog([apple]).runs()
    assert [(r.id, r.path) for r in only] == [("apple", apple.resolve())]


@pytest.mark.parametrize(
    "stage, shown, activity, descriptor_step",
    [
        ("describe", "describe", "starting descriptor training", None),
        ("descriptor", "descriptor", "training descriptor", 1200),
        ("embeds", "text", None, None),
    ],
)
def test_an_image_run_shows_its_stage_while_it_runs(
    tmp_path: Path, stage, shown, activity, descriptor_step
):
    apple = make_image_run(tmp_path / "apple", stage)
    status = read_run(location(Catalog([apple]), "apple")).status
    assert (status["state"], status["source"]) == ("running", "files")
    assert (status["stage"], status["activity"]) == (shown, activity)
    assert status["descriptor_step"] == descriptor_step and status["step"] is None


@pytest.mark.parametrize(
    "stage, activity",
    [("describe", "after describe"), ("descriptor", "in descriptor training")],
)
def test_an_image_run_that_stopped_says_in_which_stage(tmp_path: Path, stage, activity):
    apple = make_image_run(tmp_path / "apple", stage)
    age(apple, 3600)
    status = read_run(location(Catalog([apple]), "apple")).status
    assert (status["state"], status["activity"]) == ("interrupted", activity)


def test_describe_alone_is_a_finished_run(tmp_path: Path):
    """`dreamtext describe` writes the sentence and nothing more (no copy of the image)."""
    apple = make_image_run(tmp_path / "apple", "describe", source=False)
    status = read_run(location(Catalog([apple]), "apple")).status
    assert (status["state"], status["activity"]) == ("finished", "described")


@pytest.mark.parametrize(
    "state, activity",
    [
        ("running", "describing the image"),
        ("interrupted", "in describe"),
        ("failed", "in describe"),
    ],
)
def test_describe_alone_before_its_sentence_is_an_image_run_in_describe(
    tmp_path: Path, state, activity
):
    """`dreamtext describe` writes status.json before its sentence.json: running, or stopped by
    Ctrl-C or an error, it was read as a text run with no prompt, in phase 'text'."""
    apple = tmp_path / "apple"
    write_json(
        apple / "status.json",
        {"state": state, "phase": "describe", "step": 0, "iters": 0, "host": "elsewhere"},
    )
    run = read_run(location(Catalog([apple]), "apple"))
    assert run.kind == "image"
    assert (run.status["state"], run.status["stage"]) == (state, "describe")
    assert run.status["activity"] == activity


def test_an_image_run_shows_its_source_image_and_sentence_before_the_text_stage(tmp_path: Path):
    apple = make_image_run(tmp_path / "runs" / "apple", "descriptor")
    run = read_run(location(Catalog([tmp_path / "runs"]), "apple"))
    assert (run.kind, run.sentence, run.trained_sentence) == ("image", CLIP_SENTENCE, None)
    assert run.source_image == "descriptor/source.jpg"
    assert run.thumbnail == "descriptor/source.jpg"  # no preview yet: the card shows the image
    assert run.descriptor_loss[-1] == 1.0 / 1200
    assert run.descriptor_steps[:2] == [10, 20] and run.descriptor_steps[-1] == 1200
    with serving(Catalog([tmp_path / "runs"])) as srv:
        card = json.loads(get(srv, "/api/runs.json")[1])["runs"][0]
        assert card["status"]["activity"] == "training descriptor" and card["kind"] == "image"
        status, body, _ = get(srv, card["thumbnail"])
        assert status == 200 and body == (apple / "descriptor" / "source.jpg").read_bytes()
        page = json.loads(get(srv, "/api/run/apple.json")[1])["run"]
        assert get(srv, page["source_image"])[0] == 200
        assert get(srv, "/files/apple/descriptor/checkpoints/last.pt")[0] == 404


def test_only_the_files_a_run_page_links_to_are_served(root: Path):
    """`/files/<run>/...` served any file of a served kind in the run's folder: a notes.json,
    an image of the user's own, which on a shared machine anyone who can reach 127.0.0.1:PORT
    read. Every file the pages link to is still served; the others are not found."""
    cube = root / "cube"
    write_json(cube / "notes.json", {"secret": "mine"})
    write_png(cube / "private" / "face.png")
    write_png(cube / "previews" / "copy of step_000010.png")
    (cube / "mesh" / "old").mkdir()
    (cube / "mesh" / "old" / "mesh.glb").write_bytes(b"glTF-an-older-one")
    write_png(cube / "diverse" / "sample_seed0.png")
    write_json(cube / SENTENCE_FILE, {"sentence": "An image", "image": "diverse/sample_seed0.png"})
    with serving(Catalog([root])) as srv:
        page = json.loads(get(srv, "/api/run/cube.json")[1])["run"]
        linked = [p["url"] for p in page["previews"]] + [page["source_image"]]
        linked += [*page["video"].values(), *page["mesh"].values(), *page["data_files"].values()]
        assert len(linked) == 9, linked  # 2 previews, image, video, mesh, 3 records
        for address in linked:
            assert get(srv, address)[0] == 200, address
        for rel in [
            "notes.json",
            "private/face.png",
            "previews/copy%20of%20step_000010.png",
            "mesh/old/mesh.glb",
        ]:
            assert get(srv, f"/files/cube/{rel}")[0] == 404, rel


def test_an_image_run_in_its_text_stage_is_read_as_a_text_run(tmp_path: Path):
    apple = make_image_run(tmp_path / "apple", "embeds")
    make_run(apple, TRAINED_SENTENCE, steps=(10,), final=False, status=RUNNING)
    run = read_run(location(Catalog([apple]), "apple"))
    assert (run.kind, run.prompt, run.trained_sentence) == ("image", *[TRAINED_SENTENCE] * 2)
    assert (run.status["stage"], run.status["source"], run.status["step"]) == (
        "text",
        "status.json",
        10,
    )
    assert run.thumbnail == "previews/step_000010.png"


def test_a_batch_line_of_an_earlier_attempt_does_not_hide_a_retry(tmp_path: Path):
    root = tmp_path / "runs"
    apple = make_image_run(root / "apple", "descriptor")
    earlier = {**batch_record(1, "apple", "failed", "CUDA out of memory"), "kind": "image"}
    an_hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    earlier["finished"] = an_hour_ago.isoformat(timespec="seconds")
    write_records(root / "batch.jsonl", [earlier])
    status = read_run(location(Catalog([root]), "apple")).status
    assert (status["state"], status["source"]) == ("running", "files")
    age(apple, 2 * 3600)  # the files are older than the line: the line says it all
    status = read_run(location(Catalog([root]), "apple")).status
    assert (status["state"], status["source"]) == ("failed", "batch.jsonl")
    assert status["activity"] == "in descriptor training"


def test_viewer_paths_match_the_pipelines_own(tmp_path: Path):
    from dreamtext.config import DEFAULT_WORKSPACE_ROOT
    from dreamtext.describe import sentence_path
    from dreamtext.descriptor import learned_embeds_path
    from dreamtext.imageto3d import keep_source_copy
    from dreamtext.view.workspaces import LEARNED_EMBEDS

    assert DEFAULT_ROOT == DEFAULT_WORKSPACE_ROOT
    assert sentence_path("w") == Path("w") / SENTENCE_FILE
    assert learned_embeds_path("w") == Path("w") / LEARNED_EMBEDS
    write_png(tmp_path / "apple.JPG")
    workspace = make_image_run(tmp_path / "w", "describe", source=False)
    copy = keep_source_copy(tmp_path / "apple.JPG", workspace)
    run = read_run(location(Catalog([workspace]), "w"))
    assert run.source_image == copy.relative_to(workspace).as_posix() == "descriptor/source.jpg"


def test_page_data_cannot_close_its_script_element():
    text = script_json({"prompt": "</script><script>alert(1)</script><!--", "x": float("nan")})
    assert "<" not in text and ">" not in text
    assert json.loads(text) == {"prompt": "</script><script>alert(1)</script><!--", "x": None}


# ---------------------------------------------------------------- what the pages call things


def test_every_key_mesh_json_can_hold_has_a_label(tmp_path: Path):
    """The run page's Mesh table showed mesh.json's raw keys (``iou_field``). Every key that
    export writes has a label, and no label is of a key it no longer writes."""
    from dreamtext.export import ExportOptions, ExportResult
    from dreamtext.mesh import MeshStats
    from dreamtext.view.page import MESH_LABELS

    stats = MeshStats(12, 8, 1, True, True, 0.25, 0.9)
    result = ExportResult(tmp_path, {}, stats, None, 64, 0, 12, options=ExportOptions())
    assert set(result.report()) == set(MESH_LABELS)
    assert all("_" not in label for label, _ in MESH_LABELS.values())
    assert MESH_LABELS["volume"] == ("volume", "units³")


def test_every_key_of_a_batch_record_has_a_label(tmp_path: Path):
    """The run page's Batch table: every key of a batch.jsonl record (batch._record, plus the
    two that run_entry adds to it) has a label."""
    from dreamtext.batch import Entry, _record
    from dreamtext.view.page import BATCH_LABELS

    entry = Entry(1, "a red cube", "text", "a red cube", tmp_path / "a_red_cube")
    result = {"status": "failed", "error": "RuntimeError: x"}
    record = _record(entry, tmp_path, None, result, False, "2026-12-03T20:00:00+00:00", 0.0)
    record |= {"continued_from": None, "stopped_batch": False}
    assert set(record) == set(BATCH_LABELS)
    assert BATCH_LABELS["its"][1] == "it/s" and BATCH_LABELS["gpu_mem_mib"][1] == "MiB"


def test_a_run_page_holds_the_labels_once_and_its_polls_do_not_carry_them(root: Path):
    """The labels are the run page's (a script element of their own, on the server's page and
    a static one); not in its data, so a poll's answer, sent at each change, stays as short."""
    from dreamtext.view.page import BATCH_LABELS, MESH_LABELS

    def labels_of(body: bytes) -> dict:
        text = body.decode("utf-8")
        start = text.index('<script id="dreamtext-labels"')
        return json.loads(text[text.index(">", start) + 1 : text.index("</script>", start)])

    want = {"mesh": MESH_LABELS, "batch": BATCH_LABELS}
    want = json.loads(json.dumps(want))  # tuples as JSON lists
    with serving(Catalog([root])) as srv:
        assert labels_of(get(srv, "/run/cube/")[1]) == want
        assert labels_of(get(srv, "/")[1]) == {}  # the gallery has no tables
        answer = get(srv, "/api/run/cube.json")[1]
        assert MESH_LABELS["iou_field"][0].encode() not in answer and b"labels" not in answer
    site = export_static([root], root.parent / "site")
    assert labels_of((site / "runs" / "cube" / "index.html").read_bytes()) == want


def test_a_card_says_what_its_picture_is(tmp_path: Path):
    """A card's picture had no caption and the alt "picture of <prompt>": its data says
    whether it is the turntable, a preview (of which step) or an image run's source image."""
    root = tmp_path / "runs"
    cube = make_run(root / "cube", "a red cube")
    (cube / "video" / "turntable.gif").write_bytes(b"GIF89a")
    make_run(root / "torus", "a green torus", steps=(10,), final=False)
    make_image_run(root / "apple", "descriptor")
    links = server_links(None)
    shown = {
        run.id: run_json(run, links, full=False)["thumbnail_of"]
        for run in (read_run(location) for location in Catalog([root]).runs())
    }
    assert shown == {
        "cube": {"kind": "turntable"},
        "torus": {"kind": "preview", "step": 10},
        "apple": {"kind": "source"},
    }
    (cube / "video" / "turntable.gif").unlink()
    assert run_json(read_run(location(Catalog([root]), "cube")), links, False)["thumbnail_of"] == {
        "kind": "preview",
        "step": None,
    }


# ------------------------------------------------------------------------- the server


@pytest.fixture
def server(root: Path):
    with serving(Catalog([root])) as srv:
        yield srv


def get(server, path: str, headers=None) -> tuple[int, bytes, dict]:
    """A raw GET: the path goes out exactly as written (no client-side normalising), except
    that an address from the pages' data, relative to the server's root (the pages' ``<base>``),
    gets its root."""
    if not path.startswith("/") and "://" not in path:
        path = "/" + path
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
    conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    for key, value in {"Host": f"127.0.0.1:{server.server_port}", **(headers or {})}.items():
        conn.putheader(key, value)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body, dict(response.getheaders())


def test_server_serves_pages_data_assets_and_workspace_files(server, root: Path):
    status, body, headers = get(server, "/")
    assert status == 200 and b'id="dreamtext-data"' in body
    assert headers["Content-Security-Policy"].startswith("default-src 'self'")
    status, body, _ = get(server, "/api/runs.json")
    assert sorted(r["id"] for r in json.loads(body)["runs"]) == ["cube", "sphere", "torus"]
    status, body, _ = get(server, "/api/run/cube.json")
    run = json.loads(body)["run"]
    assert run["series"]["loss"] == [0.1, 0.05]
    assert get(server, "/run/cube/")[0] == 200
    assert get(server, "/static/three-viewer.min.js")[0] == 200
    status, body, headers = get(server, "/files/cube/previews/final.png")
    assert status == 200 and body == (root / "cube" / "previews" / "final.png").read_bytes()
    assert headers["Content-Type"] == "image/png"


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/run/cube/",
        "/api/runs.json",
        "/api/run/cube.json",
        "/static/app.js",
        "/files/cube/previews/final.png",
        "/files/cube/config.json",
        "/files/cube/nothing.png",
        "/run/gone/",
    ],
)
def test_a_page_on_another_site_cannot_embed_what_the_server_answers(server, path: str):
    """A page elsewhere embedded a run's preview (<img src="http://127.0.0.1:8000/files/...">),
    showing it and learning from its load (and its size) which runs, by their prompts'
    names, the user has. Every answer is for the viewer's own pages only."""
    status, _, headers = get(server, path)
    assert status in (200, 404)
    assert headers["Cross-Origin-Resource-Policy"] == "same-origin"


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
        (b"PUT / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 501),
        (b"GET / a HTTP/1.1\r\n\r\n", 400),
    ],
)
def test_the_error_pages_of_a_request_the_server_cannot_read_carry_its_headers(
    server, request_line: bytes, status: int
):
    """The standard library's own error pages (a request line too long, too many headers, a
    method it does not speak, a malformed request line) went out without the policy, nosniff
    and same-origin headers every other answer carries. (An HTTP version it cannot read, 505
    or 400, is answered as HTTP/0.9: a body with no status line or headers at all.)"""
    with socket.create_connection(("127.0.0.1", server.server_port), timeout=10) as client:
        client.sendall(request_line)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    assert head[0].split(" ")[1] == str(status), head[0]
    headers = dict(line.split(": ", 1) for line in head[1:])
    assert headers["Cross-Origin-Resource-Policy"] == "same-origin"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY


def test_only_the_gallery_runs_an_inline_script_and_the_policy_allows_just_that_one(server):
    """The gallery adds its own final "/" (behind a proxy's prefix opened without it); the
    Content-Security-Policy lets exactly that script's text run, and no page has another."""
    import base64
    import hashlib
    import re

    inline = re.compile(rb"<script>(.*?)</script>", re.S)
    status, body, headers = get(server, "/")
    scripts = inline.findall(body)
    assert status == 200 and len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0]).digest()).decode()
    policy = headers["Content-Security-Policy"]
    assert f"script-src 'self' 'sha256-{digest}';" in policy and "unsafe-inline" not in policy
    assert body.index(b"<script>") < body.index(b"<base ") < body.index(b"app.css")
    for path in ("/run/cube/", "/run/cube"):  # below the root: their <base> already works
        assert inline.findall(get(server, path)[1]) == []


def test_file_addresses_in_the_data_are_served(server):
    run = json.loads(get(server, "/api/run/cube.json")[1])["run"]
    urls = [p["url"] for p in run["previews"]] + list(run["mesh"].values())
    assert urls and all(get(server, url)[0] == 200 for url in urls)


def test_a_gallerys_pictures_are_served_without_a_scan_of_the_folders_each(
    tmp_path: Path, monkeypatch
):
    import dreamtext.view.workspaces as workspaces

    root = tmp_path / "runs"
    for i in range(30):
        make_run(root / f"run{i:02d}", f"prompt {i}")
    scans = []
    listed = workspaces._subfolders
    monkeypatch.setattr(workspaces, "_subfolders", lambda folder: scans.append(1) or listed(folder))
    with serving(Catalog([root])) as srv:
        scans.clear()
        runs = json.loads(get(srv, "/api/runs.json")[1])["runs"]
        assert len(runs) == 30 and all(get(srv, r["thumbnail"])[0] == 200 for r in runs)
    assert len(scans) <= 2  # the gallery's own scan, and at most one more if the machine is slow


def test_links_among_a_roots_folders_count_where_they_point(tmp_path: Path):
    """A subfolder or batch line that is a link: a run inside the root is listed once; a run
    outside is not served (a batch line names it: its card has no files)."""
    root = tmp_path / "runs"
    make_run(root / "cube", "a red cube")
    make_run(tmp_path / "elsewhere", "a secret")
    (root / "alias").symlink_to(root / "cube")
    (root / "out").symlink_to(tmp_path / "elsewhere")
    write_records(root / "batch.jsonl", [batch_record(1, "out", "finished")])
    runs = Catalog([root]).runs()
    assert [r.path for r in runs if r.path is not None] == [(root / "cube").resolve()]
    outside = [r for r in runs if r.path is None]
    assert len(runs) == 2 and outside[0].name == "out" and outside[0].batch is not None


def test_a_removed_runs_data_is_404_saying_it_is_gone(server, root: Path):
    """An open run page polls its data: once the run's folder is removed (or moved) the answer
    says so, in JSON, so that the page can tell it from a server that does not answer. Right
    after the removal too, while ``find`` answers from the scan that still listed the run."""
    assert get(server, "/api/run/cube.json")[0] == 200
    shutil.rmtree(root / "cube")
    status, body, headers = get(server, "/api/run/cube.json")
    assert status == 404
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert json.loads(body) == {"gone": "cube"}
    status, body, _ = get(server, "/api/run/never-was.json")
    assert (status, json.loads(body)) == (404, {"gone": "never-was"})
    # The run's page, opened again: a page (404) that says the run is gone.
    status, body, headers = get(server, "/run/cube/")
    assert (status, headers["Content-Type"]) == (404, "text/html; charset=utf-8")
    data = page_data_of(body)
    assert (data["page"], data["gone"], data["api"]) == ("gone", "cube", None)
    assert data["gallery"] == "./"  # against the page's <base>: the server's root
    assert '<base href="../../">' in body.decode()


def page_data_of(body: bytes) -> dict:
    """The data in a page's ``<script id="dreamtext-data">``."""
    text = body.decode("utf-8")
    start = text.index('<script id="dreamtext-data"')
    return json.loads(text[text.index(">", start) + 1 : text.index("</script>", start)])


def test_a_run_made_after_the_last_scan_is_found(root: Path):
    catalog = Catalog([root])
    assert catalog.find("cube") is not None
    make_run(root / "cone", "a red cone")
    assert location(catalog, "cone").path == (root / "cone").resolve()
    assert catalog.find("no-such-run") is None


# ------------------------------------------------------------------------- the gallery's polls


def settle_at_once(monkeypatch) -> None:
    """Trust a run's stat as soon as it was read (the viewer waits for its files' times to be
    STAT_SETTLES_AFTER_S old, against changes within one tick of the file clock), and let the
    file clock tick before the test changes anything."""
    import dreamtext.view.workspaces as workspaces

    monkeypatch.setattr(workspaces, "STAT_SETTLES_AFTER_S", 0.0, raising=False)


def count_reads(monkeypatch) -> list[Path]:
    """The files read from now on (the viewer reads every file it parses with read_text)."""
    reads: list[Path] = []
    read_text = Path.read_text
    monkeypatch.setattr(
        Path, "read_text", lambda p, *a, **k: reads.append(p) or read_text(p, *a, **k)
    )
    return reads


def test_a_gallery_poll_reads_only_the_runs_whose_files_changed(tmp_path: Path, monkeypatch):
    """An open gallery asks for every run every 2 s: reading every run's files each time kept
    the server 15-45 % busy with 250 runs and took 2 s a poll with 1,000."""
    root = tmp_path / "runs"
    for i in range(20):
        make_run(root / f"run{i:02d}", f"prompt {i}", status={"state": "finished", "step": 20})
    age(root, 3600)
    settle_at_once(monkeypatch)
    reads = count_reads(monkeypatch)
    with serving(Catalog([root])) as srv:
        first = json.loads(get(srv, "/api/runs.json")[1])["runs"]
        assert len(first) == 20 and {p.parent.name for p in reads} >= {"run00", "run19"}
        time.sleep(0.05)
        reads.clear()
        assert json.loads(get(srv, "/api/runs.json")[1])["runs"] == first
        assert reads == []
        write_json(root / "run07" / "status.json", {"state": "failed", "error": "out of memory"})
        runs = {r["id"]: r for r in json.loads(get(srv, "/api/runs.json")[1])["runs"]}
        assert {p.relative_to(root).parts[0] for p in reads} == {"run07"}
        assert runs["run07"]["status"]["error"] == "out of memory"
        assert [r for r in runs.values() if r["id"] != "run07"] == first[:7] + first[8:]


def test_a_run_changed_just_before_a_poll_is_read_again_at_the_next(tmp_path: Path, monkeypatch):
    """A file rewritten within the same tick of the file clock keeps its time: a run whose
    files changed less than STAT_SETTLES_AFTER_S before it was read is not trusted to them."""
    import dreamtext.view.workspaces as workspaces

    make_run(tmp_path / "cube", "a red cube", status={"state": "running", "step": 10})
    catalog, gallery = Catalog([tmp_path]), workspaces.GalleryCache()
    gallery.runs(catalog.runs())
    reads = count_reads(monkeypatch)
    gallery.runs(catalog.runs())
    assert tmp_path / "cube" / "status.json" in reads


def _change(root: Path, what: str) -> None:
    cube, sphere = root / "cube", root / "sphere"
    later = time.time() + 5
    if what == "status.json rewritten":
        write_json(cube / "status.json", {"state": "failed", "step": 20, "error": "killed"})
    elif what == "status.json removed":
        (cube / "status.json").unlink()
    elif what == "log line appended":
        with open(sphere / "log.jsonl", "a") as f:
            f.write(json.dumps({"step": 30, "loss": 0.1, "gpu_mem_mib": 4000.0}) + "\n")
    elif what == "preview added":
        write_png(sphere / "previews" / "step_000020.png")
    elif what == "preview removed":
        (sphere / "previews" / "step_000010.png").unlink()
    elif what == "final.png rewritten in place":
        with open(cube / "previews" / "final.png", "r+b") as f:
            f.write(f.read())  # same bytes, same size, same inode: only its times change
        os.utime(cube / "previews" / "final.png", (later, later))
    elif what == "turntable gif added":
        (cube / "video" / "turntable.gif").write_bytes(b"GIF89a")
    elif what == "mesh.json added":
        write_json(cube / "mesh" / "mesh.json", {"vertices": 8, "faces": 12})
    elif what == "checkpoint saved":
        (sphere / "checkpoints").mkdir()
        (sphere / "checkpoints" / "last.pt").write_bytes(b"torch")
    elif what == "config.json edited in place":
        text = (cube / "config.json").read_text().replace("a red cube", "a red cubA")
        (cube / "config.json").write_text(text)
    elif what == "sentence.json and source image":
        write_png(sphere / "descriptor" / "source.png")
        write_json(sphere / SENTENCE_FILE, {"sentence": "An image of a ball", "image": "x.png"})
    elif what == "image sentence.json names appears":
        write_png(root / "apple" / "diverse" / "sample.png")
    elif what == "batch line":
        write_records(root / "batch.jsonl", [batch_record(1, "cube", "failed", "refused")])
    elif what == "workspace made":
        make_run(root / "cone", "a cone")
    elif what == "descriptor checkpoint saved":
        (root / "pear" / "descriptor" / "checkpoints" / "last.pt").write_bytes(b"torch")
    elif what == "learned embedding saved":
        (root / "pear" / "descriptor" / "learned_embeds.safetensors").write_bytes(b"embeds")
    elif what == "workspace removed":
        shutil.rmtree(cube)
    elif what == "mesh exported":
        (cube / "mesh" / "mesh.obj").write_text("v 0 0 0\n")
    elif what == "exported again":  # as `dreamtext export` replaces a finished run's files
        from dreamtext.export import write_all_atomically

        files = {cube / "mesh" / "mesh.glb": b"glTF-again", cube / "video" / "turntable.mp4": b"v"}
        write_all_atomically(files)


CHANGES = [
    "status.json rewritten",
    "status.json removed",
    "log line appended",
    "preview added",
    "preview removed",
    "final.png rewritten in place",
    "turntable gif added",
    "mesh.json added",
    "checkpoint saved",
    "config.json edited in place",
    "sentence.json and source image",
    "image sentence.json names appears",
    "batch line",
    "workspace made",
    "workspace removed",
    "mesh exported",
    "exported again",
    "descriptor checkpoint saved",
    "learned embedding saved",
]


@pytest.mark.parametrize("what", CHANGES)
def test_each_change_to_a_runs_files_shows_at_the_next_poll(tmp_path: Path, monkeypatch, what):
    """The gallery's data after a change is what reading every run afresh gives."""
    root = tmp_path / "runs"
    make_run(root / "cube", "a red cube", status={"state": "finished", "step": 20, "iters": 20})
    make_run(root / "sphere", "a sphere", steps=(10, 20), final=False, status=RUNNING)
    make_image_run(root / "apple", "describe", source=False, image="diverse/sample.png")
    make_image_run(root / "pear", "descriptor")
    age(root, 3600)
    settle_at_once(monkeypatch)
    with serving(Catalog([root])) as srv:
        _, body, headers = get(srv, "/api/runs.json")
        first, etag = json.loads(body), headers["ETag"]
        before = first["runs"]
        time.sleep(0.05)  # a later tick of the file clock
        _change(root, what)
        # The page's poll, which names its last answer and its cursor: a change must not be a
        # 304, and the runs the answer changes, as the page applies it, are the runs now.
        since = "/api/runs.json?since=" + first["cursor"]
        status, body, headers = get(srv, since, {"If-None-Match": etag})
        answer = json.loads(body)
        shown = apply_answer(before, answer)
        links = server_links("api/runs.json")
        fresh = [run_json(read_run(r, with_series=False), links, False) for r in srv.catalog.runs()]
        assert status == 200 and headers["ETag"] != etag
        assert answer["since"] == first["cursor"] and len(answer["changed"]) < len(before)
        assert shown != before
        assert shown == json.loads(script_json(fresh))
        # Its tag is that of the whole gallery it makes: the next poll, nothing changed, is a 304.
        assert get(srv, "/api/runs.json")[2]["ETag"] == headers["ETag"]
        since = "/api/runs.json?since=" + answer["cursor"]
        assert get(srv, since, {"If-None-Match": headers["ETag"]})[0] == 304


@pytest.mark.parametrize("what", CHANGES)
def test_each_change_shows_on_a_run_page_polled_with_its_cursor(tmp_path: Path, what):
    """A run page's poll names its cursor and gets only what changed; the run it makes of that,
    as the page applies it, is the run read afresh, and its tag is the whole run's."""
    root = tmp_path / "runs"
    make_run(root / "cube", "a red cube", status={"state": "finished", "step": 20, "iters": 20})
    make_run(root / "sphere", "a sphere", steps=(10, 20), final=False, status=RUNNING)
    make_image_run(root / "apple", "describe", source=False, image="diverse/sample.png")
    make_image_run(root / "pear", "descriptor")
    with serving(Catalog([root])) as srv:
        pages = {name: get(srv, f"/api/run/{name}.json")[1] for name in ("cube", "sphere", "pear")}
        time.sleep(0.05)  # a later tick of the file clock
        _change(root, what)
        for name, body in pages.items():
            first = json.loads(body)
            path = f"/api/run/{name}.json"
            status, body, answer_headers = get(srv, f"{path}?since={first['cursor']}")
            if status == 404:  # its workspace removed
                continue
            answer = json.loads(body)
            whole = get(srv, path)
            # A delta where it is shorter; else the whole, small (its length without the test's
            # folder, named in each path: pytest-xdist's is longer, and 2,006 B failed in CI).
            assert "since" in answer or len(body.replace(str(tmp_path).encode(), b"")) < 2000, name
            assert run_after(first["run"], answer) == json.loads(whole[1])["run"], name
            assert answer_headers["ETag"] == whole[2]["ETag"]
            since = f"{path}?since={answer['cursor']}"
            assert get(srv, since, {"If-None-Match": whole[2]["ETag"]})[0] == 304


def run_after(run: dict, answer: dict) -> dict:
    """A run page's run after a poll's answer, as app.js's ``runAfter`` makes it: the whole
    run, or (an answer to the page's cursor) its fields put in, and of each list in ``tails``
    (a series': of each key's) the first ``keep`` records the page has, then ``add``."""
    if "since" not in answer:
        return answer["run"]
    after = {**run, **answer["run"]}
    for field, tail in answer["tails"].items():
        keep, add = tail["keep"], tail["add"]
        if isinstance(add, list):
            after[field] = run[field][:keep] + add
        else:
            after[field] = {key: run[field][key][:keep] + values for key, values in add.items()}
    return after


def test_a_live_run_pages_poll_sends_its_new_log_records_not_its_whole_curves(tmp_path: Path):
    """A running run's page polled at every new log line got its 2,000 curve records each
    time (74 KB of JSON for a 1,000-line log). With its cursor, a poll gets the new records and
    previews; a log long enough to be drawn from a selection of its records gets the records
    after its settled ones, and, the selection's width doubled, its whole curves again."""
    ws = make_run(tmp_path / "long", "a long run", steps=(), final=False, status=RUNNING)
    write_lines(ws / "log.jsonl", (log_record(s) for s in range(1, 3180)), "w")
    with serving(Catalog([ws])) as srv:
        first = json.loads(get(srv, "/api/run/long.json")[1])
        run, cursor, step, kept = first["run"], first["cursor"], 3180, []
        for poll in range(8):  # the width doubles at record 3,184
            write_lines(ws / "log.jsonl", [log_record(step)])
            step += 1
            if poll == 2:
                write_png(ws / "previews" / "step_003182.png")
            _, body, _ = get(srv, f"/api/run/long.json?since={cursor}")
            answer = json.loads(body)
            whole = json.loads(get(srv, "/api/run/long.json")[1])
            run, cursor = run_after(run, answer), answer["cursor"]
            assert run == whole["run"] and answer["since"]
            assert "config" not in answer["run"]
            series = answer["tails"].get("series")
            kept.append(series and series["keep"])
            if series is None:  # the selection changed: the whole curves
                assert len(answer["run"]["series"]["step"]) == len(run["series"]["step"])
            else:
                assert "series" not in answer["run"]
                assert len(series["add"]["step"]) == len(run["series"]["step"]) - series["keep"]
                assert len(series["add"]["step"]) <= 2 * 5 + 1  # the last bucket's, of 5 keys
            previews = answer["tails"]["previews"]
            assert (previews["keep"], len(previews["add"])) == (2 if poll > 2 else 1, poll == 2)
        # Of ~1,000 records, all but the last bucket's are settled; at the doubling, none.
        assert kept.count(None) == 1 and min(k for k in kept if k is not None) > 500


def test_a_cursor_the_server_did_not_give_gets_the_whole_run(tmp_path: Path):
    root = tmp_path / "runs"
    make_run(root / "cube", "a red cube", status=RUNNING)
    make_run(root / "ball", "a ball", status=RUNNING)
    with serving(Catalog([root])) as srv, serving(Catalog([root])) as other:
        first = json.loads(get(srv, "/api/run/cube.json")[1])
        ball = json.loads(get(srv, "/api/run/ball.json")[1])["cursor"]
        elsewhere = json.loads(get(other, "/api/run/cube.json")[1])["cursor"]
        counts, _, signature = first["cursor"].rpartition(".")
        made_up = counts.replace("2.", "1.", 1) + "." + signature
        odd = ("", "x", "1.2.3", "%C3%A9", "%ff.%00", first["cursor"][:-1] + "%C3%A9")
        for cursor in (*odd, ball, elsewhere, made_up, first["cursor"][:-1]):
            answer = json.loads(get(srv, f"/api/run/cube.json?since={cursor}")[1])
            assert "since" not in answer and answer["run"] == first["run"], cursor
        answer = json.loads(get(srv, f"/api/run/cube.json?since={first['cursor']}")[1])
        assert answer["since"] == first["cursor"] and answer["tails"]["series"]["add"]["step"] == []


def apply_answer(runs: list[dict], answer: dict) -> list[dict]:
    """The gallery's runs after a poll's answer, as app.js's ``afterAnswer`` makes them: the
    whole list, or (an answer to the page's cursor) the runs it had with those that changed put
    in; where runs came or went, those ``removed`` and ``added`` taken out and each added one put
    at its place, or (where the answer has it) in the order of ``ids``."""
    if "since" not in answer:
        return answer["runs"]
    by_id = {run["id"]: run for run in runs} | {run["id"]: run for run in answer["changed"]}
    ids = answer.get("ids")
    if ids is None:
        out = set(answer.get("removed", [])) | {run_id for run_id, _ in answer.get("added", [])}
        ids = [run["id"] for run in runs if run["id"] not in out]
        for run_id, place in answer.get("added", []):
            assert place <= len(ids)
            ids.insert(place, run_id)
    return [by_id[run_id] for run_id in ids]


def poll_since(srv, cursor: str) -> dict:
    return json.loads(get(srv, f"/api/runs.json?since={cursor}")[1])


def test_a_poll_after_one_runs_change_sends_that_run_alone(tmp_path: Path, monkeypatch):
    """Each change of one run's status resent every card: a batch of 1,000 runs, 860 KB of JSON
    (37 KB gzipped) at every poll that saw a change. The page sends back the cursor of what it
    has and gets the runs that changed since."""
    root = tmp_path / "runs"
    for i in range(20):
        make_run(root / f"run{i:02d}", f"prompt {i}", status={"state": "finished", "step": 20})
    age(root, 3600)
    settle_at_once(monkeypatch)
    with serving(Catalog([root])) as srv:
        first = json.loads(get(srv, "/api/runs.json")[1])
        page = page_data_of(get(srv, "/")[1])
        assert page["cursor"] == first["cursor"] and len(first["runs"]) == 20
        time.sleep(0.05)
        write_json(root / "run07" / "status.json", {"state": "failed", "error": "out of memory"})
        answer = poll_since(srv, first["cursor"])
        (changed,) = answer["changed"]
        assert changed["id"] == "run07" and changed["status"]["error"] == "out of memory"
        assert "runs" not in answer and "ids" not in answer
        assert answer["cursor"] != first["cursor"]
        whole = json.loads(get(srv, "/api/runs.json")[1])
        assert apply_answer(first["runs"], answer) == whole["runs"]
        # Nothing changed since: nothing sent; an older cursor still gets what changed after it.
        assert poll_since(srv, answer["cursor"])["changed"] == []
        assert poll_since(srv, first["cursor"])["changed"] == [changed]


def test_a_poll_after_runs_came_and_went_gets_those_not_the_list_of_ids(
    tmp_path: Path, monkeypatch
):
    """A run that started or was removed sent the whole list of ids (a batch of 1,000 runs:
    ~14 KB of JSON at each run that started): now the ids that went, and where the new ones go."""
    root = tmp_path / "runs"
    for i in range(6):
        make_run(root / f"run{i}", f"prompt {i}", status={"state": "finished", "step": 20})
    age(root, 3600)
    settle_at_once(monkeypatch)
    with serving(Catalog([root])) as srv:
        first = json.loads(get(srv, "/api/runs.json")[1])
        shutil.rmtree(root / "run2")
        make_run(root / "run10", "prompt 10", status={"state": "running", "step": 5})
        answer = poll_since(srv, first["cursor"])
        assert [run["id"] for run in answer["changed"]] == ["run10"]
        assert "ids" not in answer
        assert answer["removed"] == ["run2"] and answer["added"] == [["run10", 2]]
        whole = json.loads(get(srv, "/api/runs.json")[1])
        assert apply_answer(first["runs"], answer) == whole["runs"]


def test_a_poll_after_runs_came_went_and_came_back_puts_each_in_its_place(
    tmp_path: Path, monkeypatch
):
    """Whatever cursor a page holds, of any poll before, the page made of what it had and the
    answer is the gallery now: runs removed, added, put back, renamed, several at a time."""
    root = tmp_path / "runs"
    for i in range(20):
        make_run(root / f"run{i}", f"prompt {i}", status={"state": "finished", "step": 20})
    age(root, 3600)
    settle_at_once(monkeypatch)
    aside = tmp_path / "aside"
    aside.mkdir()
    steps = [
        lambda: (root / "run3").rename(aside / "run3"),
        lambda: make_run(root / "run0a", "prompt 0a", status={"state": "running", "step": 1}),
        lambda: (aside / "run3").rename(root / "run3"),  # back, at its old place
        lambda: [(root / f"run{i}").rename(aside / f"run{i}") for i in (0, 1, 7)],
        lambda: (root / "run5").rename(root / "run5b"),  # a folder renamed: one went, one came
        lambda: [(aside / f"run{i}").rename(root / f"run{i}") for i in (1, 7)],
    ]
    with serving(Catalog([root])) as srv:
        first = json.loads(get(srv, "/api/runs.json")[1])
        had = [(first["cursor"], first["runs"])]
        for step in steps:
            step()
            whole = json.loads(get(srv, "/api/runs.json")[1])
            for cursor, runs in had:
                answer = poll_since(srv, cursor)
                assert "since" in answer and "ids" not in answer
                assert apply_answer(runs, answer) == whole["runs"]
            had.append((whole["cursor"], whole["runs"]))
        ids = [run["id"] for run in had[-1][1]]
        assert ids == sorted({f"run{i}" for i in range(20)} - {"run0", "run5"} | {"run0a", "run5b"})


def test_a_poll_that_cannot_be_told_what_came_and_went_gets_the_list_of_ids(
    tmp_path: Path, monkeypatch
):
    """The runs that stayed moved one past another (a run batch.jsonl named, at the end of the
    list until its folder appeared, moves to its folder's place), or more runs went since the
    cursor than the gallery keeps note of: the answer has the whole list of ids."""
    import dreamtext.view.page as page

    root = tmp_path / "runs"
    for i in range(4):
        make_run(root / f"run{i}", f"prompt {i}", status={"state": "finished", "step": 20})
    line = {"line": 1, "input": "late", "kind": "text", "prompt": "late", "workspace": "a_late"}
    (root / "batch.jsonl").write_text(json.dumps({**line, "status": "running"}) + "\n")
    age(root, 3600)
    settle_at_once(monkeypatch)
    monkeypatch.setattr(page, "GALLERY_REMOVALS_KEPT", 1)
    with serving(Catalog([root])) as srv:
        first = json.loads(get(srv, "/api/runs.json")[1])
        assert [run["id"] for run in first["runs"]][-1] == "a_late"
        make_run(root / "a_late", "late", status={"state": "running", "step": 1})
        answer = poll_since(srv, first["cursor"])
        whole = json.loads(get(srv, "/api/runs.json")[1])
        assert answer["ids"] == [run["id"] for run in whole["runs"]]
        assert answer["ids"][0] == "a_late"
        assert apply_answer(first["runs"], answer) == whole["runs"]
        # Two runs went, one at a time: the first's removal is forgotten (one kept).
        before = whole
        for name in ("run1", "run2"):
            shutil.rmtree(root / name)
            get(srv, "/api/runs.json")
        answer = poll_since(srv, before["cursor"])
        whole = json.loads(get(srv, "/api/runs.json")[1])
        assert answer["ids"] == ["a_late", "run0", "run3"]
        assert apply_answer(before["runs"], answer) == whole["runs"]


def test_a_cursor_the_server_did_not_give_gets_the_whole_gallery(tmp_path: Path, monkeypatch):
    """A page open across a restart of the server, or an address typed by hand: the whole."""
    for i in range(4):
        make_run(tmp_path / f"run{i}", f"prompt {i}", status={"state": "finished", "step": 20})
    settle_at_once(monkeypatch)
    with serving(Catalog([tmp_path])) as srv, serving(Catalog([tmp_path])) as other:
        first = json.loads(get(srv, "/api/runs.json")[1])
        elsewhere = json.loads(get(other, "/api/runs.json")[1])["cursor"]
        epoch, _, number = first["cursor"].partition("-")
        for cursor in ("", "x", elsewhere, f"{epoch}-{int(number) + 1}", f"{epoch}-1e3"):
            answer = poll_since(srv, cursor)
            assert "since" not in answer and answer["runs"] == first["runs"], cursor
        # Most runs changed: the whole gallery is as short as the changes.
        for i in range(3):
            write_json(tmp_path / f"run{i}" / "status.json", {"state": "failed"})
        answer = poll_since(srv, first["cursor"])
        assert "since" not in answer and len(answer["runs"]) == 4


def test_a_poll_stats_no_path_a_run_lacks_but_the_folder_it_would_be_in(
    tmp_path: Path, monkeypatch
):
    """A poll stat'ed ~32 paths a run, seven of them an image run's descriptor files that a text
    run never has; making one changes its folder's time, which the poll stats anyway."""
    import dreamtext.view.workspaces as workspaces

    make_run(tmp_path / "cube", "a red cube", status={"state": "finished", "step": 20})
    age(tmp_path, 3600)
    settle_at_once(monkeypatch)
    catalog, gallery = Catalog([tmp_path]), workspaces.GalleryCache()
    locations = catalog.runs()
    gallery.runs(locations)
    stat, stats = os.stat, []
    monkeypatch.setattr(
        os, "stat", lambda path, *a, **k: stats.append(str(path)) or stat(path, *a, **k)
    )
    gallery.runs(locations)
    monkeypatch.undo()
    cube = str(tmp_path / "cube")
    shown = sorted(os.path.relpath(p, cube) for p in stats if p.startswith(cube + os.sep))
    assert not [p for p in shown if "descriptor" in p]
    assert len(shown) == len(set(shown))  # each once
    present = [p for p in shown if os.path.exists(os.path.join(cube, p))]
    assert shown == present


def count_stats(gallery, locations, folder: Path, polls: int = 1) -> list[list[str]]:
    """The paths inside ``folder`` that each of ``polls`` gallery polls stats, relative."""
    stat, stats = os.stat, []
    os.stat = lambda path, *a, **k: stats[-1].append(str(path)) or stat(path, *a, **k)
    try:
        for _ in range(polls):
            stats.append([])
            gallery.runs(locations)
    finally:
        os.stat = stat
    inside = str(folder) + os.sep
    return [[os.path.relpath(p, folder) for p in poll if p.startswith(inside)] for poll in stats]


def test_a_finished_runs_poll_stats_what_the_gallery_reads_and_its_picture(
    tmp_path: Path, monkeypatch
):
    """A finished run's poll stat'ed every file its run page links to (~22 paths a run: 22,000
    stats a poll of a sweep of 1,000). Those files are written by renaming them into their
    folder (or the folder swapped whole), whose time the poll stats: each poll now stats the
    run's records, its folders and the card's picture, and its other files at one poll in
    LINKED_FILES_EVERY_POLLS (a file rewritten in place by another tool shows then)."""
    import dreamtext.view.workspaces as workspaces

    cube = make_run(tmp_path / "cube", "a red cube", status={"state": "finished", "step": 20})
    write_json(cube / "mesh" / "mesh.json", {"vertices": 8})
    (cube / "checkpoints").mkdir()
    (cube / "checkpoints" / "last.pt").write_bytes(b"torch")
    age(tmp_path, 3600)
    settle_at_once(monkeypatch)
    catalog, gallery = Catalog([tmp_path]), workspaces.GalleryCache()
    locations = catalog.runs()
    gallery.runs(locations)
    every = workspaces.LINKED_FILES_EVERY_POLLS
    polls = count_stats(gallery, locations, cube, every)
    each_poll = [".", "checkpoints", "config.json", "log.jsonl", "mesh", "previews"]
    each_poll += ["previews/final.png", "status.json", "video"]
    linked = ["mesh/mesh.glb", "mesh/mesh.json", "previews/step_000010.png", "video/turntable.mp4"]
    assert sorted(map(sorted, polls), key=len) == [each_poll] * (every - 1) + [
        sorted(each_poll + linked)
    ]
    # A running run's, every poll.
    write_json(cube / "status.json", RUNNING)
    age(tmp_path, 3600)
    gallery.runs(locations)
    polls = count_stats(gallery, locations, cube, 3)
    assert [sorted(poll) for poll in polls] == [sorted(each_poll + linked)] * 3


def test_a_finished_runs_file_rewritten_in_place_shows_within_its_turn(tmp_path: Path, monkeypatch):
    """``cp`` of a run over an older copy rewrites its files in place, no folder's time
    changes: a finished run's mesh so rewritten shows (the card's time) within
    LINKED_FILES_EVERY_POLLS polls."""
    import dreamtext.view.workspaces as workspaces

    make_run(tmp_path / "cube", "a red cube", status={"state": "finished", "step": 20})
    age(tmp_path, 3600)
    settle_at_once(monkeypatch)
    catalog, gallery = Catalog([tmp_path]), workspaces.GalleryCache()
    before = gallery.runs(catalog.runs())[0].updated
    glb = tmp_path / "cube" / "mesh" / "mesh.glb"
    glb.write_bytes(glb.read_bytes())  # same size, same inode: its times alone change
    shown = [
        gallery.runs(catalog.runs())[0].updated for _ in range(workspaces.LINKED_FILES_EVERY_POLLS)
    ]
    assert before < shown[-1] == glb.stat().st_mtime


def test_an_unchanged_answer_to_a_poll_is_304_without_a_body(tmp_path: Path, monkeypatch):
    """An open gallery asks for every run every 2 s; the whole answer (~1 MB at 1,000 runs) was
    sent and parsed each time. The page names the answer it has (If-None-Match: its ETag)."""
    root = tmp_path / "runs"
    for i in range(5):
        make_run(root / f"run{i}", f"prompt {i}", status={"state": "finished", "step": 20})
    age(root, 3600)
    settle_at_once(monkeypatch)
    with serving(Catalog([root])) as srv:
        for api in ("/api/runs.json", "/api/run/run3.json"):
            status, full, headers = get(srv, api)
            etag = headers["ETag"]
            assert status == 200 and json.loads(full) and re.fullmatch(r'W/"[0-9a-f]{32}"', etag)
            status, body, headers = get(srv, api, {"If-None-Match": etag})
            assert (status, body, headers["ETag"]) == (304, b"", etag)
            # RFC 9110 15.4.5: a 304 carries the Vary a 200 would (gzipped or not).
            assert headers["Vary"] == "Accept-Encoding"
            strong = etag.removeprefix("W/")  # compared weakly, either form names it
            assert get(srv, api, {"If-None-Match": f'"other", {strong}'})[0] == 304
            assert get(srv, api, {"If-None-Match": '"other"'})[:2] == (200, full)
        # The pages carry their data's tag: their first poll is a conditional one too.
        for page, api in (("/", "/api/runs.json"), ("/run/run3/", "/api/run/run3.json")):
            text = get(srv, page)[1].decode()
            (tag,) = re.findall(r'id="dreamtext-data"[^>]* data-etag="([^"]*)"', text)
            assert get(srv, api, {"If-None-Match": html.unescape(tag)})[0] == 304


def test_pages_and_data_go_gzipped_to_a_client_that_takes_it(tmp_path: Path):
    """A gallery of 1,000 runs answered 850 KiB of JSON at every poll that saw a change (every
    poll while a batch runs): 25 MB a minute through an ssh tunnel. Gzipped: ~35 KiB."""
    for i in range(40):
        make_run(tmp_path / f"run{i:02d}", f"prompt {i}", status={"state": "finished"})
    write_log(tmp_path / "run07" / "log.jsonl", range(10, 2001, 10))  # a run page's curves
    took = {"Accept-Encoding": "gzip, deflate, br"}
    with serving(Catalog([tmp_path])) as srv:
        for path in ("/", "/api/runs.json", "/api/run/run07.json"):
            _, plain, headers = get(srv, path)
            assert "Content-Encoding" not in headers
            _, body, headers = get(srv, path, took)
            assert headers["Content-Encoding"] == "gzip" and headers["Vary"] == "Accept-Encoding"
            assert gzip.decompress(body) == plain and int(headers["Content-Length"]) == len(body)
            assert len(body) < len(plain) / 3
            _, body, headers = get(srv, path, {"Accept-Encoding": "gzip;q=0, identity"})
            assert body == plain and "Content-Encoding" not in headers
        _, body, headers = get(srv, "/files/run07/previews/final.png", took)
        assert "Content-Encoding" not in headers and body[:4] == b"\x89PNG"


def test_a_status_that_follows_the_clock_changes_the_answer(tmp_path: Path, monkeypatch):
    """A running run's files unchanged, its card still changes ("no change for 12 min"): the
    answer kept for the run must not outlive its status."""
    import dreamtext.view.workspaces as workspaces

    make_run(tmp_path / "cube", "a red cube", final=False, status=RUNNING)
    age(tmp_path / "cube", 11 * 60)
    os.utime(tmp_path / "cube", (time.time() - 11 * 60,) * 2)
    settle_at_once(monkeypatch)
    with serving(Catalog([tmp_path])) as srv:
        _, body, headers = get(srv, "/api/runs.json")
        assert json.loads(body)["runs"][0]["status"]["quiet_minutes"] == 11
        assert get(srv, "/api/runs.json", {"If-None-Match": headers["ETag"]})[0] == 304
        real_time = time.time
        monkeypatch.setattr(workspaces.time, "time", lambda: real_time() + 60)
        status, body, _ = get(srv, "/api/runs.json", {"If-None-Match": headers["ETag"]})
        assert status == 200 and json.loads(body)["runs"][0]["status"]["quiet_minutes"] == 12


def test_a_cached_runs_status_still_follows_the_clock_and_its_process(tmp_path: Path, monkeypatch):
    """Its files unchanged, a running run turns quiet as time passes, and interrupted when its
    process is gone: the judgements that ask the clock and this machine are made every poll."""
    import dreamtext.view.workspaces as workspaces
    from dreamtext.processes import HOST

    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    status = {"state": "running", "step": 10, "iters": 20, "host": HOST, "pid": worker.pid}
    make_run(tmp_path / "cube", "a red cube", final=False, status=status)
    age(tmp_path / "cube", 9 * 60)
    (tmp_path / "cube").touch()  # only the folder is new: read_run ignores its time
    os.utime(tmp_path / "cube", (time.time() - 9 * 60,) * 2)
    settle_at_once(monkeypatch)
    catalog, gallery = Catalog([tmp_path]), workspaces.GalleryCache()
    try:
        assert gallery.runs(catalog.runs())[0].status["state"] == "running"
        time.sleep(0.05)
        reads = count_reads(monkeypatch)
        real_time = time.time
        monkeypatch.setattr(workspaces.time, "time", lambda: real_time() + 3 * 60)
        status = gallery.runs(catalog.runs())[0].status
        assert (status["state"], status["quiet_minutes"]) == ("running", 12)
        worker.kill()
        worker.wait()
        status = gallery.runs(catalog.runs())[0].status
        assert (status["state"], status["process_gone"]) == ("interrupted", worker.pid)
        assert reads == []
    finally:
        worker.kill()
        worker.wait()


def test_two_galleries_polling_at_once_get_the_same_runs(tmp_path: Path):
    root = tmp_path / "runs"
    for i in range(30):
        make_run(root / f"run{i:02d}", f"prompt {i}")
    answers: list[bytes] = []
    with serving(Catalog([root])) as srv:
        pollers = [
            threading.Thread(
                target=lambda: answers.extend(get(srv, "/api/runs.json")[1] for _ in range(5))
            )
            for _ in range(4)
        ]
        for poller in pollers:
            poller.start()
        for poller in pollers:
            poller.join()
    runs = [json.loads(a)["runs"] for a in answers]
    assert len(runs) == 20 and all(r == runs[0] for r in runs) and len(runs[0]) == 30


def test_byte_ranges_for_video_seeking(server, root: Path):
    data = (root / "cube" / "video" / "turntable.mp4").read_bytes()
    status, body, headers = get(server, "/files/cube/video/turntable.mp4", {"Range": "bytes=10-19"})
    assert (status, body) == (206, data[10:20])
    assert headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert get(server, "/files/cube/video/turntable.mp4", {"Range": "bytes=-5"})[1] == data[-5:]


def test_a_range_longer_than_any_number_is_ignored(server, root: Path):
    data = (root / "cube" / "video" / "turntable.mp4").read_bytes()
    huge = {"Range": "bytes=" + "9" * 5000 + "-"}  # int() refuses more than 4300 digits
    assert get(server, "/files/cube/video/turntable.mp4", huge)[:2] == (200, data)


@pytest.mark.parametrize(
    "path",
    [
        "/files/cube/../../secret.png",
        "/files/cube/../torus/config.json",
        "/files/cube/%2e%2e/%2e%2e/secret.png",
        "/files/cube/%2E%2E%2F%2E%2E%2Fsecret.png",
        "/files/cube/..%2f..%2fsecret.png",
        "/files/cube/%252e%252e/%252e%252e/secret.png",
        "/files/cube//etc/passwd",
        "/files/cube/%2Fetc%2Fpasswd",
        "/files/cube/previews\\..\\..\\..\\secret.png",
        "/files/cube/previews/final.png%00.png",
        "/files/../secret.png",
        "/files/%2e%2e/secret.png",
        "/static/../server.py",
        "/static/%2e%2e%2fserver.py",
        "/run/../../secret.png",
        "/files/cube/link_out/secret.png",
        "/files/cube/previews/link.png",
        "/files/cube/checkpoints/last.pt",
        "/files/cube/.hidden.json",
        "/files/nope/config.json",
        "/etc/passwd",
        # Percent-encodings that are not UTF-8, overlong encodings of "." and "/" among them.
        "/files/cube/%ff.png",
        "/files/cube/previews/%ff%fe.png",
        "/files/cube/%C0%AE%C0%AE/x.png",
        "/files/cube/%C0%AE%C0%AE/%C0%AE%C0%AE/secret.png",
        "/files/cube/%C0%AE%C0%AE%C0%AFsecret.png",
        "/files/cube/%E0%80%AE%E0%80%AE/secret.png",
        "/files/cube/%ED%A0%80.png",
        "/files/%ff/config.json",
        "/run/%ff/",
        "/api/run/%ff.json",
        "/static/%ff",
        "http://[::1/files/cube/config.json",
    ],
)
def test_requests_outside_the_workspaces_get_404(server, root: Path, path: str):
    (root / "cube" / "link_out").symlink_to(root.parent)
    (root / "cube" / "previews" / "link.png").symlink_to(root.parent / "secret.png")
    write_json(root / "cube" / "checkpoints" / "last.pt", {})
    write_json(root / "cube" / ".hidden.json", {})
    status, body, _ = get(server, path)
    assert status == 404
    if path.startswith("/api/run/"):  # a run page's poll is told its run is not there
        assert json.loads(body) == {"gone": "\ufffd"}
    elif path.startswith("/run/%"):  # and so is a run page asked for
        assert page_data_of(body)["gone"] == "\ufffd"
    else:
        assert body == b"not found\n"


@pytest.fixture
def logged_server(root: Path):
    """A server whose error lines go to a list, and an event set after each ``handle_error``."""
    lines: list[str] = []
    handled = threading.Event()

    class Log:
        def write(self, text: str) -> None:
            lines.extend(line for line in text.split("\n") if line)

        def flush(self) -> None:
            pass

    with serving(Catalog([root]), log=Log()) as srv:
        original = srv.handle_error

        def handle_error(*args) -> None:
            original(*args)
            handled.set()

        srv.handle_error = handle_error  # before the test's first request
        assert isinstance(srv, ViewServer)
        yield srv, lines, handled


def test_a_bug_while_answering_is_a_500_and_one_line(logged_server, monkeypatch, capfd):
    import dreamtext.view.workspaces as workspaces

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire\nsecond line")

    monkeypatch.setattr(workspaces, "_read_files", broken)
    srv, lines, _ = logged_server
    assert get(srv, "/api/runs.json")[:2] == (500, b"internal error\n")
    assert lines == [
        "dreamtext view: error answering GET '/api/runs.json': RuntimeError: disk on fire"
    ]
    assert get(srv, "/static/app.js")[0] == 200  # and it goes on serving
    assert "Traceback" not in capfd.readouterr().err


def test_a_bug_outside_the_handler_is_one_line_too(logged_server, monkeypatch, capfd):
    def broken(self):
        raise RuntimeError("parser broke")

    monkeypatch.setattr(ViewHandler, "parse_request", broken)
    srv, lines, handled = logged_server
    with pytest.raises(http.client.RemoteDisconnected):
        get(srv, "/")
    assert handled.wait(10)
    assert lines == [
        "dreamtext view: error with a request from 127.0.0.1: RuntimeError: parser broke"
    ]
    assert "Traceback" not in capfd.readouterr().err


def test_a_client_that_resets_mid_request_prints_nothing(logged_server, capfd):
    srv, lines, handled = logged_server
    client = socket.create_connection(("127.0.0.1", srv.server_port), timeout=10)
    client.sendall(b"GET / HTTP/1.1\r\n")  # the headers never come: the server waits for them
    time.sleep(0.2)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # linger on, 0 s: a reset, not a clean close
    assert handled.wait(10)
    assert lines == [] and capfd.readouterr().err == ""


def test_workspace_file_accepts_links_that_stay_inside(root: Path):
    cube = root.resolve() / "cube"
    (cube / "previews" / "alias.png").symlink_to(cube / "previews" / "final.png")
    assert workspace_file(cube, "previews/alias.png") == cube / "previews" / "final.png"
    assert workspace_file(cube, "previews/final%2Epng") == cube / "previews" / "final.png"


@pytest.mark.parametrize(
    "target",
    ["checkpoints/last.pt", ".dreamtext.lock", ".export-progress.json", ".hidden/final.png"],
)
def test_a_link_to_a_file_the_pages_never_show_is_not_served(
    logged_server, root: Path, target: str
):
    """previews/step_009999.png linking to checkpoints/last.pt was a 500 and a line on the
    terminal (KeyError: '.pt'), and one linking to a hidden file (.export-progress.json) served
    it: the name asked for was checked, not the file it leads to. Both are 404 now."""
    srv, lines, _ = logged_server
    cube = root.resolve() / "cube"
    (cube / target).parent.mkdir(parents=True, exist_ok=True)
    (cube / target).write_text("{}")
    link = cube / "previews" / "step_009999.png"
    link.unlink(missing_ok=True)
    link.symlink_to(cube / target)
    assert workspace_file(cube, "previews/step_009999.png") is None
    assert get(srv, "/files/cube/previews/step_009999.png")[:2] == (404, b"not found\n")
    assert lines == []


def test_runs_in_a_hidden_folder_are_served_with_their_files(tmp_path: Path):
    """Hidden names are checked inside the workspace only: runs kept under a hidden folder
    (~/.local/share/runs) are shown with their previews, meshes and videos, and served."""
    runs = tmp_path / ".local" / "runs"
    make_run(runs / "cube", "a cube")
    [run] = Catalog([runs]).runs()
    shown = read_run(run)
    assert [p["step"] for p in shown.previews] == [10, None]
    assert "glb" in shown.mesh and shown.video
    with serving(Catalog([runs])) as srv:
        assert get(srv, "/files/cube/previews/step_000010.png")[0] == 200


@pytest.mark.parametrize("name", ["node01.evil.example", "10.1.2.3", "node01"])
def test_a_server_on_one_address_answers_no_other_name_of_this_machine(
    root: Path, monkeypatch, name: str
):
    """What a server on every interface also answers (this machine's host name with any domain,
    any address) is not answered on 127.0.0.1: there a page at node01.evil.example, pointed at
    127.0.0.1, would read the runs."""
    monkeypatch.setattr(socket, "gethostname", lambda: "node01")
    with serving(Catalog([root]), host="127.0.0.1") as srv:
        status = get(srv, "/api/runs.json", {"Host": f"{name}:{srv.server_port}"})[0]
    assert status == 403


# ------------------------------------------------------------------------- the token

TOKEN = "0123456789abcdef0123456789abcdef"
# Every kind of address the server answers.
TOKEN_PATHS = [
    "/",
    "/run/cube/",
    "/api/runs.json",
    "/api/run/cube.json",
    "/static/app.js",
    "/files/cube/previews/final.png",
    "/download/cube/cube.zip",
]


def test_without_the_token_every_address_is_403_saying_to_open_the_printed_one(root: Path):
    """On a machine others log in to, any of them could open 127.0.0.1:PORT and read the runs'
    prompts, configs and files. A server with a token answers none of it without: not with
    another token, nor with the token in the cookie of another port's name."""
    with serving(Catalog([root]), token=TOKEN) as srv:
        name = f"dreamtext-view-{srv.server_port}"
        for path, headers in [
            *((path, {}) for path in TOKEN_PATHS),
            (f"/?token={TOKEN[:-1]}0", {}),
            ("/?token=", {}),
            ("/", {"Cookie": f"{name}={TOKEN[:-1]}0"}),
            ("/", {"Cookie": f"dreamtext-view-1={TOKEN}"}),
        ]:
            status, body, answer = get(srv, path, headers)
            assert (status, body) == (403, (NO_TOKEN + "\n").encode()), path
            assert "Set-Cookie" not in answer
    assert NO_TOKEN.startswith("this viewer answers the address it printed as it started")


def test_the_token_once_sets_a_cookie_that_later_requests_carry(root: Path):
    """The printed address's ?token= is asked for once: its answer sets a cookie (for the
    port the browser names, HttpOnly), and every later request of the pages carries that."""
    with serving(Catalog([root]), token=TOKEN) as srv:
        status, body, headers = get(srv, f"/?token={TOKEN}")
        assert status == 200 and b'id="dreamtext-data"' in body
        name = f"dreamtext-view-{srv.server_port}"
        assert headers["Set-Cookie"] == f"{name}={TOKEN}; HttpOnly; SameSite=Lax"
        assert TOKEN.encode() not in body  # the page does not show it to its scripts
        for path in TOKEN_PATHS:
            status, _, headers = get(srv, path, {"Cookie": f"other=1; {name}={TOKEN}"})
            assert status == 200, path
            assert "Set-Cookie" not in headers
        # Through a forward to another port (ssh -L 9000:...), and through a proxy on the web's
        # standard port: a cookie of that port's name, none taken for another viewer's.
        host = {"Host": "localhost:9000"}
        assert get(srv, f"/?token={TOKEN}", host)[2]["Set-Cookie"].startswith(
            f"dreamtext-view-9000={TOKEN};"
        )
        assert get(srv, f"/?token={TOKEN}", {"Host": "localhost"})[2]["Set-Cookie"].startswith(
            f"dreamtext-view={TOKEN};"
        )


def test_a_token_on_a_run_pages_address_sets_the_cookie_at_the_root_and_comes_back(root: Path):
    """A cookie set by a run page's answer is kept for run/NAME/ alone (no Path: a proxy's
    prefix is unknown here), and the gallery then got 403s. That page's ?token= is a relative
    303 to the root, whose answer sets the cookie and sends the browser back (to a run page of
    this server only: ?next= names no other site)."""
    with serving(Catalog([root]), token=TOKEN) as srv:
        status, _, headers = get(srv, f"/run/cube/?token={TOKEN}")
        assert status == 303 and "Set-Cookie" not in headers
        assert headers["Location"] == f"../../?token={TOKEN}&next=run%2Fcube%2F"
        status, _, headers = get(srv, f"/?token={TOKEN}&next=run%2Fcube%2F")
        assert (status, headers["Location"]) == (303, "./run/cube/")
        assert headers["Set-Cookie"].startswith(f"dreamtext-view-{srv.server_port}={TOKEN};")
        for elsewhere in ("//evil.example/", "https://evil.example/", "run/a/\r\nX: 1/"):
            status, body, headers = get(srv, f"/?token={TOKEN}&{urlencode({'next': elsewhere})}")
            assert status == 200 and "Location" not in headers and b"dreamtext-data" in body


# Folder names of every kind a workspace can have: spaces, any script, combining marks, URL
# syntax (%, #, ?, &, ;, =, +), dots, quotes, a backslash, controls, only punctuation, 255
# bytes of ASCII and of CJK (3 bytes a letter), names that become the same id.
AWKWARD_NAMES = [
    "a red cube", "café ☕ 日本", "e\u0301te", "100% done", "a#b", "what?", "semi;colon=1&a",
    "a+b", "x..", "a..b", "it's \"q\"", "back\\slash", "tab\there", "___", "[br]^|{c}", "~tilde",
    "x" * 255, "日本語" * 28, "A red cube",
]  # fmt: skip


def test_a_token_on_any_run_pages_address_comes_back_to_that_run(tmp_path: Path):
    """A run page's ?token= goes to the root and back (?next=) only where next names a run
    page, by a pattern of the characters an address's path may hold. Every run's address, as
    the pages link to it (its id, made of its folder's name: letters of any script, digits,
    marks, '.', '-', '_', percent-encoded), is one: each comes back to its own run, not the
    gallery."""
    from dreamtext.view.server import _RUN_PAGE
    from dreamtext.view.workspaces import _id_of

    root = tmp_path / "runs"
    for name in AWKWARD_NAMES:
        (root / name).mkdir(parents=True)
        (root / name / "config.json").write_text(json.dumps({"prompt": name}))
    links = server_links(None)
    with serving(Catalog([root]), token=TOKEN) as srv:
        cookie = {"Cookie": f"dreamtext-view-{srv.server_port}={TOKEN}"}
        runs = json.loads(get(srv, "/api/runs.json", cookie)[1])["runs"]
        assert len(runs) == len(AWKWARD_NAMES)
        for run in runs:
            status, _, headers = get(srv, f"{run['href']}?token={TOKEN}")
            assert (status, headers["Location"][:6]) == (303, "../../"), run["id"]
            status, _, headers = get(srv, headers["Location"][len("../..") :])
            assert (status, headers["Location"]) == (303, f"./{run['href']}"), run["id"]
            status, body, _ = get(srv, run["href"], cookie)
            data = json.loads(re.search(rb'id="dreamtext-data"[^>]*>(.*?)</script>', body)[1])
            assert (status, data["page"], data["run"]["id"]) == (200, "run", run["id"])
    # Any name at all: every code point, each in names of 64 (the link is the id's, quoted).
    points = [chr(c) for c in range(0x110000)]
    for start in range(0, len(points), 64):
        href = links.run(_id_of("".join(points[start : start + 64])))
        assert _RUN_PAGE.fullmatch(href), href


def test_a_token_redirects_back_to_a_run_page_of_this_server_alone(root: Path):
    """?next= is followed only to a run page, as a path relative to the root: never to another
    site (scheme-relative ``//``, ``/\\`` that browsers read as ``//``, a scheme), nor out
    of the run pages (an absolute path, a deeper one)."""
    with serving(Catalog([root]), token=TOKEN) as srv:
        for elsewhere in (
            "//evil.example/", "/\\evil.example/", "\\\\evil.example/", "\\/evil.example/",
            "http:evil.example", "http://evil.example/", "https:/evil.example/",
            "javascript:alert(1)//", " //evil.example/", "\t//evil.example/", "/run/cube/",
            "run//evil.example/", "run/\\evil.example/", "run/cube/../../x/", "run/cube",
            "run/cube/files/", "./run/cube/", "run/a b/", "run/a\r\nLocation: //evil/",
        ):  # fmt: skip
            query = urlencode({"token": TOKEN, "next": elsewhere})
            status, body, headers = get(srv, f"/?{query}")
            assert status == 200 and "Location" not in headers, elsewhere
            assert b"dreamtext-data" in body and "Set-Cookie" in headers
        for back in ("run/cube/", "run/%2e%2e/", "run/caf%C3%A9/", "run/a:b/"):
            query = urlencode({"token": TOKEN, "next": back})
            assert get(srv, f"/?{query}")[2]["Location"] == f"./{back}"


def test_a_server_without_a_token_answers_without_one_and_sets_no_cookie(server):
    for path in TOKEN_PATHS:
        status, _, headers = get(server, path + ("?token=x" if path == "/" else ""))
        assert status == 200 and "Set-Cookie" not in headers, path


def test_the_printed_address_opens_the_runs_as_it_is_and_its_cookie_serves_the_rest(
    root: Path, monkeypatch
):
    """`dreamtext view` prints one address to open, as the ssh line's `then open` too: opened
    as it is (a browser's cookie jar, which keeps what the answer sets), the page's data and
    files follow; without the jar they are 403."""
    import http.cookiejar
    import urllib.error
    import urllib.request

    server, thread, out = serving_in_a_thread(monkeypatch, [root])
    try:
        printed = out.getvalue()
        url = re.search(r" at (http://\S+)\n", printed).group(1)
        token = server.token
        assert len(token) == 32 and url == f"http://127.0.0.1:{server.server_port}/?token={token}"
        assert f"then open {url}\n" in printed  # the ssh line's
        browser = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        assert b'id="dreamtext-data"' in browser.open(url, timeout=10).read()
        base = url.split("?")[0]
        for path in TOKEN_PATHS:
            assert browser.open(base + path.lstrip("/"), timeout=10).status == 200, path
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + "api/runs.json", timeout=10)
        assert refused.value.code == 403
    finally:
        server.shutdown()
        thread.join(timeout=30)


def serving_in_a_thread(monkeypatch, folders: list[Path], port: int = 0, **options):
    """``serve`` on a thread; returns its server (once it is made), the thread, and what it
    printed."""
    made, out = [], io.StringIO()
    serve_forever = ViewServer.serve_forever

    def recorded(self, *args, **kwargs):
        made.append(self)
        serve_forever(self, *args, **kwargs)

    monkeypatch.setattr(ViewServer, "serve_forever", recorded)
    kwargs = {"out": out, **options}
    thread = threading.Thread(target=serve, args=(folders, "127.0.0.1", port), kwargs=kwargs)
    thread.start()
    deadline = time.monotonic() + 30
    while not made and time.monotonic() < deadline:
        time.sleep(0.05)
    return made[0], thread, out


def servers_stopped_at_once(monkeypatch) -> list:
    """From now on, `dreamtext view` makes its server as it does and stops it as it would start
    serving (a Ctrl-C there): the list it fills with the servers made, to read their port and
    token."""
    import dreamtext.view.server as server_module

    made = []

    def stopped_at_once(*args, **kwargs):
        srv = make_server(*args, **kwargs)
        made.append(srv)
        monkeypatch.setattr(
            srv, "serve_forever", lambda **_: (_ for _ in ()).throw(KeyboardInterrupt)
        )
        return srv

    monkeypatch.setattr(server_module, "make_server", stopped_at_once)
    return made


def test_no_token_serves_without_one_and_is_refused_beside_static(
    root: Path, tmp_path: Path, monkeypatch, capsys
):
    """--no-token: the old behaviour, addresses printed without a token; --static serves
    nothing, so it takes no --no-token."""
    made = servers_stopped_at_once(monkeypatch)
    assert main(["view", str(root), "--port", "0", "--no-token"]) == 0
    assert made[0].token is None
    out = capsys.readouterr().out
    assert f"at http://127.0.0.1:{made[0].server_port}/\n" in out and "token" not in out
    argv = ["view", str(root), "--no-token", "--static", str(tmp_path / "s")]
    assert main(argv) == 2
    assert "give --static (files, no server) or --no-token, not both" in capsys.readouterr().err


# ------------------------------------------------------------------------- behind a web proxy

# Headers a proxy does not pass on (RFC 9110 7.6.1), and Content-Length, which it recomputes.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding"}
HOP_BY_HOP |= {"upgrade", "proxy-authorization", "proxy-authenticate", "content-length"}
PUBLIC_HOST = "ondemand.example"


class PrefixProxy:
    """A reverse proxy that serves the viewer under ``prefix`` and forwards each request with the
    prefix taken off, as Open OnDemand's ``/rnode/<host>/<port>/`` and jupyter-server-proxy's
    ``/proxy/<port>/`` do. ``host``: ``"client"`` passes the browser's ``Host`` on (jupyter-server-
    proxy; Open OnDemand with ProxyPreserveHost), ``"upstream"`` sends the viewer's own address
    (Apache's default). It also answers a browser that uses it as its HTTP proxy (an absolute
    address in the request line), so a browser can load ``http://ondemand.example/<prefix>``:
    the name a real proxy on the standard port has, with no port in ``Host``."""

    def __init__(self, upstream_port: int, prefix: str, host: str = "client"):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        assert prefix.startswith("/") and prefix.endswith("/") and host in ("client", "upstream")
        self.prefix, self.host, self.upstream_port = prefix, host, upstream_port
        self.seen_hosts: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                pass

            def do_GET(self):
                self.forward(send_body=True)

            def do_HEAD(self):
                self.forward(send_body=False)

            def forward(self, send_body: bool) -> None:
                address = urlsplit(self.path)
                path = address.path + (f"?{address.query}" if address.query else "")
                if not (path + "/").startswith(prefix):
                    return self.answer(404, [], b"not under the proxy's prefix\n", send_body)
                upstream_path = "/" + path[len(prefix) :]
                headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
                headers = [(k, v) for k, v in headers if k.lower() != "host"]
                client_host = self.headers.get("Host", "")
                sent_host = client_host if host == "client" else f"127.0.0.1:{upstream_port}"
                proxy.seen_hosts.append(sent_host)
                headers += [("Host", sent_host), ("X-Forwarded-Host", client_host)]
                headers += [("X-Forwarded-Prefix", prefix.rstrip("/"))]
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                try:
                    conn.putrequest(
                        self.command, upstream_path, skip_host=True, skip_accept_encoding=True
                    )
                    for key, value in headers:
                        conn.putheader(key, value)
                    conn.endheaders()
                    response = conn.getresponse()
                    body = response.read()
                finally:
                    conn.close()
                kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
                self.answer(response.status, kept, body, send_body)

            def answer(self, status, headers, body: bytes, send_body: bool) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_port
        self.url = f"http://{PUBLIC_HOST}{prefix}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}
        )

    def __enter__(self) -> "PrefixProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()


def test_other_hosts_are_refused(server):
    # A page elsewhere that reaches 127.0.0.1 through its own DNS name (DNS rebinding).
    assert get(server, "/api/runs.json", {"Host": "evil.example:80"})[0] == 403
    assert get(server, "/api/runs.json", {"Host": "localhost:9999"})[0] == 200


@pytest.mark.parametrize(
    "host, answered",
    [
        ("127.0.0.1:{port}", True),
        ("localhost", True),
        ("[::1]:{port}", True),
        # DNS rebinding: the browser names the port it connected to, this server's or that of a
        # port forward to it (ssh -L 9000:127.0.0.1:{port}).
        ("evil.example:{port}", False),
        ("evil.example:9000", False),
        ("EVIL.example:443", False),
        # No port: the browser connected to port 80, where any user on Windows (and, as
        # reported, on macOS from 10.14 on) may forward it (ssh -L 80:127.0.0.1:{port}).
        ("evil.example", False),
        ("Hub.Example.EDU", False),
        # What no browser sends.
        ("", False),
        ("::1", False),
        ("evil.example:", False),
        ("evil.example:80x", False),
        ("[::1", False),
        ("[::1]x", False),
    ],
)
def test_host_check_refuses_dns_rebinding_on_any_port(server, host: str, answered: bool):
    """A foreign name without a port was answered as a reverse proxy on port 80 or 443 would
    send it, on the belief that only root listens on port 80: a page named evil.example, pointed
    at 127.0.0.1 and opened through a user's `ssh -L 80:127.0.0.1:PORT`, read the runs."""
    host = host.format(port=server.server_port)
    assert get(server, "/api/runs.json", {"Host": host})[0] == (200 if answered else 403)


@pytest.mark.parametrize(
    "host, line",
    [
        ("evil.example", "--allow-host evil.example"),
        ("Evil.Example:8080", "--allow-host evil.example"),
        ("[fe80::1]:80", "--allow-host fe80::1"),
        ("evil<b>.example", "--allow-host ITS_NAME"),  # the client's text is not repeated
        ("", "--allow-host ITS_NAME"),
    ],
)
def test_a_refused_name_gets_the_flag_that_answers_it(server, host: str, line: str):
    """A user behind a proxy that passes its own name on is told, in one line of the 403,
    what to open instead and what to pass to be answered through the proxy."""
    status, body, _ = get(server, "/api/runs.json", {"Host": host})
    assert status == 403
    assert (
        body
        == (
            "not a local address: open it as 127.0.0.1 or localhost; behind a proxy, start "
            f"dreamtext view with {line}\n"
        ).encode()
    )


@pytest.mark.parametrize(
    "host, answered",
    [
        ("hub.example.edu", True),
        ("HUB.example.edu:8443", True),  # the name on any port
        ("127.0.0.1:{port}", True),
        ("evil.example", False),
        ("hub.example.edu.evil.example", False),
        ("evil.hub.example.edu", False),
        ("[fe80::1]:{port}", True),
        ("[fe80::2]:{port}", False),
    ],
)
def test_allow_host_answers_the_names_given_and_no_other(root: Path, host: str, answered: bool):
    """`--allow-host NAME` (repeatable) answers NAME with or without a port, as a reverse
    proxy that passes the browser's Host on sends it; the check stays as tight elsewhere."""
    with serving(Catalog([root]), allowed_hosts=["Hub.Example.EDU", "[FE80::1]"]) as srv:
        host = host.format(port=srv.server_port)
        assert get(srv, "/api/runs.json", {"Host": host})[0] == (200 if answered else 403)


@pytest.mark.parametrize(
    "value, says",
    [
        ("http://hub.example.edu/", "--allow-host takes a host name as the browser's address"),
        (
            "hub.example.edu:8443",
            "--allow-host takes the name without its port: --allow-host "
            "hub.example.edu (it is answered on any port)",
        ),
        ("", "--allow-host takes a host name"),
        ("hub example", "--allow-host takes a host name"),
    ],
)
def test_allow_host_refuses_what_is_not_a_host_name(root: Path, value: str, says: str):
    with pytest.raises(DreamtextError) as refused:
        make_server(Catalog([root]), allowed_hosts=[value])
    assert str(refused.value).startswith(says)


def test_allow_host_on_the_command_line_is_checked_said_and_refused_beside_static(
    root: Path, tmp_path: Path, capsys
):
    """What `view --allow-host` refuses is one line and exit 2, before anything listens; the
    names given are said when it starts; --static serves nothing, so it takes none."""
    assert main(["view", str(root), "--port", "0", "--allow-host", "hub.example.edu:443"]) == 2
    assert capsys.readouterr().err == (
        "dreamtext: error: --allow-host takes the name without its port: --allow-host "
        "hub.example.edu "
        "(it is answered on any port)\n"
    )
    argv = ["view", str(root), "--allow-host", "hub.example.edu", "--static", str(tmp_path / "s")]
    assert main(argv) == 2
    assert "give --static (files, no server) or --allow-host, not both" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ViewServer, "serve_forever", lambda self, *a, **k: None)
        serve([root], "127.0.0.1", 0, out=out, allowed_hosts=["Hub.Example.EDU", "b.example"])
    assert "  answers too as b.example, hub.example.edu (--allow-host)" in out.getvalue()


@pytest.mark.parametrize(
    "host, answered",
    [
        # What another machine (Open OnDemand's proxy too) names this one by.
        ("node01:{port}", True),
        ("NODE01.cluster.example:{port}", True),
        ("10.1.2.3:{port}", True),
        ("[fe80::1]:{port}", True),
        ("127.0.0.1:{port}", True),
        ("localhost:{port}", True),
        ("ondemand.example", False),  # a proxy's name: answered once given (--allow-host)
        # DNS rebinding: a page elsewhere whose name points at the user's end of an ssh forward
        # to this port (-L {port}:node01:{port}); it read the runs.
        ("evil.example:{port}", False),
        ("node01-evil.example:{port}", False),
        (".example:{port}", False),
        # A page's own domain with a host named after this machine.
        ("node01.evil.example:{port}", False),
        ("node01.cluster.example.evil.example:{port}", False),
        ("node01.:{port}", False),
    ],
)
def test_a_server_on_every_interface_answers_this_machines_names_not_other_sites(
    root: Path, monkeypatch, host: str, answered: bool
):
    """--host 0.0.0.0 opens it to the network, not to every web page the user's browser opens:
    it answered any Host, so a DNS name pointed at 127.0.0.1 read the runs through the ssh
    forward the viewer prints; then any domain after this machine's name still did
    (node01.evil.example): only the resolver's search domains and the machine's own count."""
    from dreamtext.view import server as server_module

    monkeypatch.setattr(socket, "gethostname", lambda: "node01")
    monkeypatch.setattr(socket, "getfqdn", lambda *name: "node01")
    monkeypatch.setattr(
        server_module, "resolver_domains", lambda: {"cluster.example"}, raising=False
    )
    with serving(Catalog([root]), host="0.0.0.0") as srv:
        status, body, _ = get(srv, "/api/runs.json", {"Host": host.format(port=srv.server_port)})
    assert status == (200 if answered else 403), body
    if not answered:
        assert body.startswith(b"not this machine's name: open it as node01, by its address")
        assert b"start dreamtext view with --allow-host " in body


@pytest.mark.parametrize(
    "hostname, fqdn, answered",
    [
        ("node01.cluster.example", "node01", True),  # the host name holds its domain
        ("node01", "node01.cluster.example", True),  # the machine's own full name
        ("node01", "node01", False),  # neither: the resolver's search list alone counts
    ],
)
def test_a_domain_is_this_machines_where_its_names_give_it(
    root: Path, monkeypatch, hostname: str, fqdn: str, answered: bool
):
    """node01.cluster.example is answered on every interface where the host name or the
    machine's full name holds that domain, not only the resolver's search list."""
    from dreamtext.view import server as server_module

    monkeypatch.setattr(socket, "gethostname", lambda: hostname)
    monkeypatch.setattr(socket, "getfqdn", lambda *name: fqdn)
    monkeypatch.setattr(server_module, "resolver_domains", lambda: set(), raising=False)
    with serving(Catalog([root]), host="0.0.0.0") as srv:
        host = f"NODE01.Cluster.Example:{srv.server_port}"
        assert get(srv, "/api/runs.json", {"Host": host})[0] == (200 if answered else 403)


def test_the_resolvers_search_and_domain_lines_are_its_domains(tmp_path: Path):
    """The domains a cluster gives its nodes' short names, read without a DNS lookup."""
    from dreamtext.view.server import resolver_domains

    conf = tmp_path / "resolv.conf"
    conf.write_text(
        "# generated\nnameserver 10.0.0.1\nsearch Cluster.Example. lab.example\n"
        "domain hpc.example\noptions ndots:2\nsearch\n"
    )
    assert resolver_domains(str(conf)) == {"cluster.example", "lab.example", "hpc.example"}
    assert resolver_domains(str(tmp_path / "none")) == set()


def test_an_idle_connection_is_closed_after_the_handlers_timeout(root: Path, monkeypatch):
    """A connection that sends nothing (an ssh tunnel dropped without a word) kept its handler
    thread for as long as the server ran."""
    assert ViewHandler.timeout is not None and 60 <= ViewHandler.timeout <= 600
    monkeypatch.setattr(ViewHandler, "timeout", 0.5)
    with serving(Catalog([root])) as srv:
        with socket.create_connection(("127.0.0.1", srv.server_port), timeout=10) as idle:
            start = time.monotonic()
            assert idle.recv(1) == b""  # closed by the server
            assert time.monotonic() - start < 5
        assert get(srv, "/api/runs.json")[0] == 200


def test_a_file_cut_short_while_sent_closes_the_connection():
    """A log truncated by a resume after its Content-Length was sent: the copy says how many
    bytes it could not send, and the handler then closes the connection."""
    target = io.BytesIO()
    assert _copy(io.BytesIO(b"x" * 100), target, 150, chunk=32) == 50
    assert target.getvalue() == b"x" * 100
    assert _copy(io.BytesIO(b"y" * 100), io.BytesIO(), 100, chunk=32) == 0


def test_a_server_on_every_interface_by_host_0_answers_other_machines_and_says_so(
    root: Path, monkeypatch
):
    """`--host 0` listens on every interface (as 0.0.0.0 does) but was taken for a name: other
    machines' requests were refused, and the terminal offered an ssh forward to host "0"."""
    monkeypatch.setattr(socket, "gethostname", lambda: "node01")
    with serving(Catalog([root]), host="0") as srv:
        assert get(srv, "/api/runs.json", {"Host": f"node01:{srv.server_port}"})[0] == 200
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ViewServer, "serve_forever", lambda self, *a, **k: None)
        serve([root], "0", 0, out=out)
    assert "listening on every network interface" in out.getvalue()
    assert ":0:" not in out.getvalue()


def test_a_server_on_a_named_host_answers_the_address_it_prints(root: Path):
    """`--host $(hostname)` binds the address the name resolves to and prints that address as
    the URL to open, which it then refused with 403 ("not a local address")."""

    class NamedHost(ViewServer):  # as if "node01" resolved to 127.0.0.2
        def server_bind(self) -> None:
            self.server_address = ("127.0.0.2", self.server_address[1])
            super().server_bind()

    srv = NamedHost(("node01", 0), Catalog([root]))
    try:
        assert srv.url == f"http://127.0.0.2:{srv.server_port}/"
        assert srv.host_allowed(f"127.0.0.2:{srv.server_port}")
        assert srv.host_allowed(f"node01:{srv.server_port}")
        assert not srv.host_allowed(f"evil.example:{srv.server_port}")
    finally:
        srv.server_close()


@pytest.mark.parametrize(
    "path, base",
    [("/", "./"), ("/run/cube/", "../../"), ("/run/cube", "../"), ("/a/b/c/", "../../../")],
)
def test_a_page_base_is_the_server_root_seen_from_the_page(path: str, base: str):
    assert page_base(path) == base
    assert urljoin(urljoin(f"http://h/prefix/p{path}", base), "static/app.js") == (
        "http://h/prefix/p/static/app.js"
    )


def page_addresses(body: bytes) -> tuple[str, list[str], dict]:
    """A served page's ``<base href>``, every address it holds (in its HTML: scripts, style;
    in its data: runs, files, the address it polls) and its data."""
    text = body.decode("utf-8")
    (base,) = re.findall(r'<base href="([^"]*)">', text)
    addresses = re.findall(r'(?:src|href)="([^"]*)"', text.replace(f'<base href="{base}">', ""))
    start = text.index('<script id="dreamtext-data"')
    data = json.loads(text[text.index(">", start) + 1 : text.index("</script>", start)])
    runs = data["runs"] if data["page"] == "gallery" else [data["run"]]
    addresses += [data["api"], data["gallery"]]
    for run in runs:
        addresses += [run["href"], run["thumbnail"], run.get("source_image")]
        addresses += [p["url"] for p in run.get("previews", [])]
        for kind in ("mesh", "video", "data_files"):
            addresses += list(run.get(kind, {}).values())
        addresses.append((run.get("mesh_zip") or {}).get("url"))
    return base, [a for a in addresses if a and a != "data:,"], data


def via_proxy(proxy: "PrefixProxy", url: str, headers=None) -> tuple[int, bytes]:
    """GET ``url`` (an http://ondemand.example/... address) from the proxy, as a browser that
    reached it on the standard port would: ``Host`` without a port."""
    address = urlsplit(url)
    assert address.netloc == PUBLIC_HOST, url
    path = address.path + (f"?{address.query}" if address.query else "")
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.request("GET", path, headers={"Host": PUBLIC_HOST, **(headers or {})})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


@pytest.mark.parametrize("host", ["client", "upstream"])
@pytest.mark.parametrize("page", ["", "run/cube/", "run/cube"])
def test_behind_a_proxy_under_a_path_every_address_of_a_page_is_served(
    root: Path, host: str, page: str
):
    """Open OnDemand's /rnode/<node>/<port>/ and jupyter-server-proxy's /proxy/<port>/ take
    their path off before forwarding: absolute addresses (/static/app.js) left it (404), and
    the browser's Host (the proxy's name) was refused (403), as it is still without
    --allow-host."""
    with serving(Catalog([root]), allowed_hosts=[PUBLIC_HOST]) as server:
        check_every_address_behind_a_proxy(server, host, page)


def check_every_address_behind_a_proxy(server, host: str, page: str) -> None:
    prefix = f"/rnode/node01/{server.server_port}/"
    with PrefixProxy(server.server_port, prefix, host=host) as proxy:
        page_url = proxy.url + page
        status, body = via_proxy(proxy, page_url)
        assert status == 200, body
        base, addresses, data = page_addresses(body)
        root = urljoin(page_url, base)
        assert root == proxy.url
        assert len(addresses) >= (5 if page == "" else 10)
        for address in addresses:
            url = urljoin(root, address)
            assert url.startswith(proxy.url), address
            assert via_proxy(proxy, url)[0] == 200, address
        # What the page polls is its own data again, addresses and all, wherever the page is.
        status, polled = via_proxy(proxy, urljoin(root, data["api"]))
        assert status == 200 and json.loads(polled) == data


def test_behind_a_proxy_that_passes_its_name_on_the_name_must_be_given(server):
    """Without --allow-host, a proxy passing the browser's Host on is refused as any foreign
    name is, with the flag to pass; one sending the server's own address is answered."""
    prefix = f"/rnode/node01/{server.server_port}/"
    with PrefixProxy(server.server_port, prefix, host="client") as proxy:
        status, body = via_proxy(proxy, proxy.url)
    assert status == 403
    assert body.endswith(f"start dreamtext view with --allow-host {PUBLIC_HOST}\n".encode())
    check_every_address_behind_a_proxy(server, "upstream", "")


# ------------------------------------------------------------------------- downloads


def make_obj_run(folder: Path, prompt: str, color) -> Path:
    """A finished run exported as the export writes its files: a GLB and a PLY, an OBJ naming
    ``mesh.mtl``, which names ``albedo.png`` (of ``color``); and checkpoints."""
    make_run(folder, prompt, status={"state": "finished", "step": 20, "iters": 20})
    mesh = folder / "mesh"
    (mesh / "mesh.obj").write_text(
        "mtllib mesh.mtl\no object\nusemtl material\nv 0 0 0\nv 1 0 0\nv 0 1 0\n"
        "vt 0 0\nvt 1 0\nvt 0 1\nf 1/1 2/2 3/3\n"
    )
    (mesh / "mesh.mtl").write_text("newmtl material\nKd 1 1 1\nmap_Kd albedo.png\n")
    Image.new("RGB", (16, 16), color).save(mesh / "albedo.png")  # not a preview's bytes
    (mesh / "mesh.ply").write_bytes(b"ply-not-really")
    write_json(mesh / "mesh.json", {"vertices": 3, "faces": 1})
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "last.pt").write_bytes(b"torch")
    return folder


@pytest.fixture
def obj_runs(tmp_path: Path) -> Path:
    """Two runs whose export made OBJs of the same names, one red, one blue."""
    root = tmp_path / "runs"
    make_obj_run(root / "a_red_apple", "a red apple", (200, 30, 30))
    make_obj_run(root / "a_blue_apple", "a blue apple", (30, 30, 200))
    return root


# What the server's zip holds (every mesh file, and mesh.json), and a static folder's (what it
# does not hold on its own).
ZIPPED = ["albedo.png", "mesh.glb", "mesh.json", "mesh.mtl", "mesh.obj", "mesh.ply"]
ZIPPED_STATIC = ["albedo.png", "mesh.mtl", "mesh.obj"]


def texture_colour_of(obj: Path):
    """The colour of the texture the OBJ's material names, as trimesh finds it (None: no
    texture found)."""
    import trimesh

    image = trimesh.load(obj, force="mesh").visual.material.image
    return None if image is None else image.convert("RGB").getpixel((0, 0))


def check_zips_open_side_by_side(
    zips: dict[str, bytes], folder: Path, files: list[str] = ZIPPED
) -> None:
    """Each zip (by its download's name) holds its run's mesh ``files`` in a folder of the run's
    name, nothing else; extracted into one folder, each OBJ shows its own run's texture."""
    import io
    import zipfile

    assert sorted(zips) == ["a_blue_apple.zip", "a_red_apple.zip"]
    for name, data in zips.items():
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            run = name.removesuffix(".zip")
            assert sorted(archive.namelist()) == [f"{run}/{file}" for file in files]
            archive.extractall(folder)
    assert texture_colour_of(folder / "a_red_apple" / "mesh.obj") == (200, 30, 30)
    assert texture_colour_of(folder / "a_blue_apple" / "mesh.obj") == (30, 30, 200)


def test_a_runs_mesh_downloads_are_named_after_the_run(obj_runs: Path):
    """Every run's page linked mesh.obj, mesh.mtl and albedo.png: saved from two runs into one
    folder, the second texture became "albedo (1).png" and the second OBJ showed the first's."""
    links = server_links("api/runs.json")
    shown = {}
    for location in Catalog([obj_runs]).runs():
        run = run_json(read_run(location), links, full=True)
        shown[run["id"]] = run["mesh_names"], run["mesh_zip"]["name"]
    assert shown == {
        "a_blue_apple": (
            {"glb": "a_blue_apple.glb", "ply": "a_blue_apple.ply"},
            "a_blue_apple.zip",
        ),
        "a_red_apple": ({"glb": "a_red_apple.glb", "ply": "a_red_apple.ply"}, "a_red_apple.zip"),
    }


def test_the_served_mesh_zip_opens_elsewhere_with_its_own_texture(obj_runs: Path, tmp_path: Path):
    with serving(Catalog([obj_runs])) as srv:
        zips = {}
        for run_id in ("a_red_apple", "a_blue_apple"):
            run = json.loads(get(srv, f"/api/run/{run_id}.json")[1])["run"]
            status, body, headers = get(srv, run["mesh_zip"]["url"])
            assert status == 200 and headers["Content-Type"] == "application/zip"
            disposition = headers["Content-Disposition"]
            assert disposition.startswith(f'attachment; filename="{run_id}.zip"')
            zips[run["mesh_zip"]["name"]] = body
    check_zips_open_side_by_side(zips, tmp_path / "Downloads")


def test_a_large_meshs_zip_is_served_holding_a_block_of_it_in_memory(
    obj_runs: Path, tmp_path: Path
):
    """The zip was made in memory, the OBJ read whole into it: a 200 MB OBJ took the server's
    peak from 51 to 254 MB. Now each file is copied into a temporary file a block at a time
    and sent from there: a 24 MB OBJ's download allocates under 8 MB (Python's allocations,
    zlib's included, as tracemalloc counts them), and unzips to the same bytes."""
    import hashlib
    import tracemalloc
    import zipfile
    import zlib

    obj = obj_runs / "a_red_apple" / "mesh" / "mesh.obj"
    digest, deflate, deflated = hashlib.sha256(), zlib.compressobj(1, zlib.DEFLATED, -15), 0
    with obj.open("w") as out:  # an OBJ's lines, each vertex different: deflate keeps ~1/6
        for block in range(24):
            text = "".join(f"v {i * 1e-6:.6f} {block}.{i % 977} 0.5\n" for i in range(40_000))
            data = text[: 1 << 20].ljust(1 << 20, "\n").encode()
            out.write(data.decode())
            digest.update(data)
            deflated += len(deflate.compress(data))
    deflated += len(deflate.flush())
    assert obj.stat().st_size == 24 << 20
    saved = tmp_path / "a_red_apple.zip"
    with serving(Catalog([obj_runs])) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.server_port, timeout=60)
        tracemalloc.start()
        try:
            conn.request("GET", "/download/a_red_apple/a_red_apple.zip")
            response = conn.getresponse()
            with saved.open("wb") as out:
                while block := response.read(1 << 16):
                    out.write(block)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            conn.close()
    assert response.status == 200
    assert saved.stat().st_size == int(response.getheader("Content-Length"))
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MiB"
    with zipfile.ZipFile(saved) as archive:
        assert archive.testzip() is None
        # Deflated at level 1 (the level's speed is why it was chosen), as the zip in memory was.
        assert archive.getinfo("a_red_apple/mesh.obj").compress_size == deflated
        unzipped = hashlib.sha256()
        with archive.open("a_red_apple/mesh.obj") as member:
            while block := member.read(1 << 20):
                unzipped.update(block)
    assert unzipped.hexdigest() == digest.hexdigest()


def test_a_large_meshs_zip_is_written_to_a_static_folder_holding_a_block_of_it_in_memory(
    obj_runs: Path, tmp_path: Path
):
    """`--static` made each run's zip in memory (downloads.zip_bytes) and copied it out: a 24 MB
    OBJ of hex digits took the export's peak to 18.3 MiB. Now it is written into the folder's
    file a block at a time, as the server's is: under 8 MB (Python's allocations, zlib's
    included, as tracemalloc counts them), and it unzips to the same bytes."""
    import hashlib
    import tracemalloc
    import zipfile

    obj = obj_runs / "a_red_apple" / "mesh" / "mesh.obj"
    digest = hashlib.sha256()
    with obj.open("wb") as out:  # random hex digits: deflate keeps over half
        for _ in range(24):
            data = os.urandom(1 << 19).hex().encode()
            out.write(data)
            digest.update(data)
    tracemalloc.start()
    try:
        out = export_static([obj_runs], tmp_path / "site")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MiB"
    with zipfile.ZipFile(out / "runs" / "a_red_apple" / "a_red_apple.zip") as archive:
        assert archive.testzip() is None
        unzipped = hashlib.sha256()
        with archive.open("a_red_apple/mesh.obj") as member:
            while block := member.read(1 << 20):
                unzipped.update(block)
    assert unzipped.hexdigest() == digest.hexdigest()


def test_a_static_export_holds_each_runs_mesh_zip(obj_runs: Path, tmp_path: Path):
    out = export_static([obj_runs], tmp_path / "site")
    zips = {}
    for run_id in ("a_red_apple", "a_blue_apple"):
        data = page_data(out / "runs" / run_id / "index.html")
        run = data["run"]
        zips[run["mesh_zip"]["name"]] = (
            out / "runs" / run_id / run["mesh_zip"]["url"]
        ).read_bytes()
        for kind, url in run["mesh"].items():
            assert (out / "runs" / run_id / url).is_file(), kind
        # A file:// page cannot rename a download of a file: the PLY's copy is named after the
        # run; the GLB is its script's, whose download the page makes (a Blob, named by it).
        assert run["mesh"]["glb"] == data["glb_script"] == "mesh.glb.js"
        assert run["mesh_names"]["glb"] == f"{run_id}.glb"
        assert run["mesh"]["ply"] == f"files/mesh/{run_id}.ply"
        # The OBJ, MTL and texture are in the zip alone.
        assert run["mesh"]["obj"] == run["mesh"]["texture"] == f"{run_id}.zip"
        assert run["mesh_zip"]["holds"] == ["obj", "mtl", "texture"]
        assert not (out / "runs" / run_id / "files" / "mesh" / "mesh.obj").exists()
    check_zips_open_side_by_side(zips, tmp_path / "Downloads", ZIPPED_STATIC)


def test_a_static_folder_stores_each_mesh_file_once(obj_runs: Path, tmp_path: Path):
    """Users copy these folders over ssh: each run's mesh files were in its files/ and again in
    its zip, and then the GLB in files/ and again (in base64) in the script the 3D view reads it
    from on file://. Now no file of the folder, no member of its zip, and no file and the bytes
    the script holds, are the same bytes: the GLB is in the script alone."""
    import base64
    import zipfile

    out = export_static([obj_runs], tmp_path / "site")
    for run_id in ("a_red_apple", "a_blue_apple"):
        folder = out / "runs" / run_id
        stored = {}
        for path in folder.rglob("*"):
            if path.suffix == ".zip":
                with zipfile.ZipFile(path) as archive:
                    stored |= {f"{path.name}:{n}": archive.read(n) for n in archive.namelist()}
            elif path.is_file() and path.name != "index.html":
                stored[path.relative_to(folder).as_posix()] = path.read_bytes()
        script = stored.pop("mesh.glb.js").decode()
        glb = base64.b64decode(script.split('"')[1])
        assert glb == (obj_runs / run_id / "mesh" / "mesh.glb").read_bytes()
        stored["the bytes of mesh.glb.js"] = glb
        by_bytes: dict[bytes, list[str]] = {}
        for name, data in stored.items():
            if not name.startswith("files/previews/"):  # the fixture's previews are alike
                by_bytes.setdefault(data, []).append(name)
        assert [names for names in by_bytes.values() if len(names) > 1] == []
        assert sorted(name for name in stored if name.startswith("files/mesh/")) == [
            f"files/mesh/{run_id}.ply",
            "files/mesh/mesh.json",
        ]


def test_same_named_runs_of_two_batches_download_under_distinct_names(tmp_path: Path):
    """Two batches of one gallery each ran "a red apple": the downloads are named by run id,
    which the gallery makes distinct (``a_red_apple``, ``a_red_apple-2``), so the two zips, and
    their folders, extract side by side, each OBJ with its own texture; the static folder holds
    both."""
    import io
    import zipfile

    make_obj_run(tmp_path / "batch1" / "a_red_apple", "a red apple", (200, 30, 30))
    make_obj_run(tmp_path / "batch2" / "a_red_apple", "a red apple", (30, 30, 200))
    catalog = Catalog([tmp_path / "batch1", tmp_path / "batch2"])
    with serving(catalog) as srv:
        names = {}
        for run_id in ("a_red_apple", "a_red_apple-2"):
            run = json.loads(get(srv, f"/api/run/{run_id}.json")[1])["run"]
            status, body, headers = get(srv, run["mesh_zip"]["url"])
            assert status == 200 and f'filename="{run_id}.zip"' in headers["Content-Disposition"]
            names[run_id] = run["mesh_names"]["glb"], run["mesh_zip"]["name"]
            with zipfile.ZipFile(io.BytesIO(body)) as archive:
                assert {n.split("/")[0] for n in archive.namelist()} == {run_id}
                archive.extractall(tmp_path / "Downloads")
    assert names == {
        "a_red_apple": ("a_red_apple.glb", "a_red_apple.zip"),
        "a_red_apple-2": ("a_red_apple-2.glb", "a_red_apple-2.zip"),
    }
    assert texture_colour_of(tmp_path / "Downloads" / "a_red_apple" / "mesh.obj") == (200, 30, 30)
    assert texture_colour_of(tmp_path / "Downloads" / "a_red_apple-2" / "mesh.obj") == (30, 30, 200)
    out = export_static([tmp_path / "batch1", tmp_path / "batch2"], tmp_path / "site")
    assert (out / "runs" / "a_red_apple" / "a_red_apple.zip").is_file()
    assert (out / "runs" / "a_red_apple-2" / "a_red_apple-2.zip").is_file()


def test_a_run_without_mesh_files_offers_no_zip(server, root: Path):
    run = json.loads(get(server, "/api/run/torus.json")[1])["run"]
    assert run["mesh_zip"] is None and run["mesh_names"] == {}
    assert get(server, "/download/torus/torus.zip")[0] == 404
    assert get(server, "/download/nothing/nothing.zip")[0] == 404
    # A run with a GLB alone gets it in a zip too (one download of whatever the export made).
    status, body, _ = get(
        server, json.loads(get(server, "/api/run/cube.json")[1])["run"]["mesh_zip"]["url"]
    )
    assert status == 200 and body.startswith(b"PK")


# ------------------------------------------------------------------------- the static export


def test_static_export_holds_pages_assets_and_the_files_they_show(root: Path, tmp_path: Path):
    out = export_static([root], tmp_path / "site")
    assert (out / "index.html").is_file() and (out / "static" / "app.js").is_file()
    assert (out / "static" / "LICENSE-three.txt").is_file()
    cube = out / "runs" / "cube"
    assert (cube / "files" / "previews" / "final.png").read_bytes() == (
        root / "cube" / "previews" / "final.png"
    ).read_bytes()
    script = (cube / "mesh.glb.js").read_text()
    assert script.startswith("window.dreamtextGlb = ") and "Z2xURi1ub3QtcmVhbGx5" in script
    assert not (cube / "files" / "checkpoints").exists()
    # A file's address never ends in "/": the server gallery's slash-adding script is not here.
    assert "<script>" not in (out / "index.html").read_text(encoding="utf-8")


def test_a_static_export_holds_one_runs_curves_at_a_time(root: Path, tmp_path: Path, monkeypatch):
    """The export read every run, curves and all, before writing any page: ~270 MB for 1,000
    runs of 1,000 log lines (benchmarks/view_static.py). Now each run is written as it is read
    and its curves let go before the next is read, and none are kept for a server's next read."""
    import weakref

    from dreamtext.view import static, workspaces

    for i in range(4):
        make_run(root / f"extra_{i}", f"prompt {i}", steps=tuple(range(10, 210, 10)))
    read, runs, most = static.read_run, [], []

    def reading(location, *args, **kwargs):
        # How many runs read, with their curves, are still held when the next is read.
        most.append(sum(ref() is not None for ref in runs))
        run = read(location, *args, **kwargs)
        runs.append(weakref.ref(run))
        return run

    monkeypatch.setattr(static, "read_run", reading)
    out = export_static([root], tmp_path / "site")
    assert len(most) == 7 and max(most) <= 1, most
    assert not any(workspaces._log_curves.__contains__(p) for p in root.rglob("log.jsonl"))
    # Yet every page has its curves and the gallery every card.
    extra = page_data(out / "runs" / "extra_3" / "index.html")["run"]
    assert extra["series"]["step"] == list(range(10, 210, 10))
    assert len(page_data(out / "index.html")["runs"]) == 7


def test_a_static_export_leaves_out_a_run_removed_while_it_writes(
    root: Path, tmp_path: Path, monkeypatch
):
    """A run whose folder was removed after the scan found it got a page and a card of an empty
    run, 'interrupted', with no prompt. It is left out, as a scan after the removal would."""
    from dreamtext.view import static

    make_run(root / "doomed", "a doomed run", steps=(10, 20))
    read = static.read_run

    def reading(location, *args, **kwargs):
        if location.name == "doomed":
            shutil.rmtree(location.path)
        return read(location, *args, **kwargs)

    monkeypatch.setattr(static, "read_run", reading)
    out = export_static([root], tmp_path / "site")
    names = [card["name"] for card in page_data(out / "index.html")["runs"]]
    assert names and "doomed" not in names
    assert not (out / "runs" / "doomed").exists()


def test_a_static_export_reads_a_run_again_whose_export_replaced_its_files(
    obj_runs: Path, tmp_path: Path, monkeypatch
):
    """`dreamtext export --formats glb` finishing while `--static` copies the run: its OBJ,
    MTL and texture went away between the run's listing and its zip, and the export ended in
    a FileNotFoundError traceback. The run is read again and written as it is now."""
    from dreamtext.view import static

    run = obj_runs / "a_red_apple"
    (run / "mesh" / "mesh.glb").write_bytes(b"glTF-not-really")
    copy = static._copy_files

    def copy_then_reexport(copied, rels, files):
        copy(copied, rels, files)
        if Path(copied.workspace) == run:
            for name in ("mesh.obj", "mesh.mtl", "albedo.png"):
                (run / "mesh" / name).unlink(missing_ok=True)

    monkeypatch.setattr(static, "_copy_files", copy_then_reexport)
    assert main(["view", str(obj_runs), "--static", str(tmp_path / "site")]) == 0
    page = page_data(tmp_path / "site" / "runs" / "a_red_apple" / "index.html")["run"]
    assert sorted(page["mesh"]) == ["glb", "ply"]


def test_a_static_export_of_a_run_file_it_cannot_read_names_the_file(
    obj_runs: Path, tmp_path: Path, monkeypatch, capsys
):
    """Another user's run file of mode 600: the refusal blamed the folder written ("give
    --static a folder you can write")."""
    from dreamtext.view import static

    obj = obj_runs / "a_red_apple" / "mesh" / "mesh.obj"

    def refused(run, target, leave_out=()):
        raise PermissionError(errno.EACCES, "Permission denied", str(obj))

    monkeypatch.setattr(static, "write_zip", refused)
    assert main(["view", str(obj_runs), "--static", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot read {obj}: permission denied" in err
    assert "chmod -R a+rX" in err and "folder you can write" not in err
    assert not (tmp_path / "site").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".site")] == []


def test_the_server_says_which_run_file_it_cannot_read(obj_runs: Path, monkeypatch):
    """A run file of mode 600 got 500 "internal error" as a file and 503 "being replaced: try
    again" as the zip, which no retry would help."""
    import dreamtext.view.server as server_module

    def refused(run, target, leave_out=()):
        raise PermissionError(errno.EACCES, "Permission denied", "/runs/x/mesh/mesh.obj")

    monkeypatch.setattr(server_module, "write_zip", refused)
    opened = Path.open

    def open_unless_the_obj(self, *args, **kwargs):
        if self.name == "mesh.obj":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_unless_the_obj)
    with serving(Catalog([obj_runs])) as srv:
        status, body, _ = get(srv, "/download/a_red_apple/a_red_apple.zip")
        assert status == 403 and body.startswith(b"cannot read mesh.obj of this run")
        status, body, _ = get(srv, "/files/a_red_apple/mesh/mesh.obj")
        assert status == 403 and body.startswith(b"cannot read mesh.obj of this run")
        assert get(srv, "/files/a_red_apple/mesh/mesh.mtl")[0] == 200


def test_static_pages_are_the_pages_of_the_runs_read_whole(root: Path, tmp_path: Path):
    """Written run by run, the export holds the same bytes as pages made from every run read
    whole (as it was written before), an image run with its descriptor's curve among them."""
    from dreamtext.view.page import gallery_json, render_page, run_page_json
    from dreamtext.view.static import GALLERY_LINKS, RUN_LINKS

    make_image_run(root / "apple", "descriptor")
    out = export_static([root], tmp_path / "site")
    runs = [read_run(location) for location in Catalog([root]).runs()]
    assert len(runs) == 4 and any(run.descriptor_loss for run in runs)
    links = dataclasses.replace(GALLERY_LINKS, folders=(root.name,))  # the heading's folder
    gallery = render_page(gallery_json(runs, links), links)
    assert (out / "index.html").read_text(encoding="utf-8") == gallery
    for run in runs:
        glb = "mesh.glb.js" if "glb" in run.mesh else None
        page = render_page(run_page_json(run, RUN_LINKS, glb), RUN_LINKS)
        assert (out / "runs" / run.id / "index.html").read_text(encoding="utf-8") == page


def page_data(html_file: Path) -> dict:
    return page_data_of(html_file.read_bytes())


def test_static_pages_link_their_copies_and_name_runs_without_local_paths(root, tmp_path):
    out = export_static([root], tmp_path / "site")
    gallery = page_data(out / "index.html")
    assert {r["workspace"] for r in gallery["runs"]} == {"cube", "sphere", "torus"}
    cube = next(r for r in gallery["runs"] if r["id"] == "cube")
    assert (out / cube["href"]).is_file() and (out / cube["thumbnail"]).is_file()
    run = page_data(out / "runs" / "cube" / "index.html")
    assert run["api"] is None and run["glb_script"] == "mesh.glb.js"
    for url in [p["url"] for p in run["run"]["previews"]] + list(run["run"]["mesh"].values()):
        assert (out / "runs" / "cube" / url).is_file()
    # A GLB alone: the server zips it; the folder holds it on its own, and offers no zip of it.
    assert run["run"]["mesh_zip"] is None and not list((out / "runs" / "cube").glob("*.zip"))


def test_runs_named_in_other_scripts_are_served_and_exported(tmp_path: Path):
    root = tmp_path / "runs"
    make_obj_run(root / "一只猫", "一只猫", (200, 30, 30))
    with serving(Catalog([root])) as srv:
        [run] = json.loads(get(srv, "/api/runs.json")[1])["runs"]
        assert run["href"] == "run/%E4%B8%80%E5%8F%AA%E7%8C%AB/"
        assert get(srv, run["href"])[0] == 200
        page = json.loads(get(srv, "/api/run/%E4%B8%80%E5%8F%AA%E7%8C%AB.json")[1])["run"]
        urls = [p["url"] for p in page["previews"]] + list(page["mesh"].values())
        assert urls and all(get(srv, url)[0] == 200 for url in urls)
        # The zip's name in UTF-8 for browsers (RFC 6266), as far as ASCII goes for the rest.
        assert page["mesh_zip"]["name"] == "一只猫.zip"
        status, _, headers = get(srv, page["mesh_zip"]["url"])
        assert status == 200 and headers["Content-Disposition"] == (
            "attachment; filename=\"___.zip\"; filename*=UTF-8''%E4%B8%80%E5%8F%AA%E7%8C%AB.zip"
        )
    out = export_static([root], tmp_path / "site")
    [card] = page_data(out / "index.html")["runs"]
    assert card["href"] == "runs/%E4%B8%80%E5%8F%AA%E7%8C%AB/index.html"
    assert (out / unquote(card["href"])).is_file() and (out / unquote(card["thumbnail"])).is_file()
    run = page_data(out / "runs" / "一只猫" / "index.html")["run"]
    for url in [p["url"] for p in run["previews"]] + list(run["mesh"].values()):
        assert (out / "runs" / "一只猫" / unquote(url)).is_file()
    assert (out / "runs" / "一只猫" / unquote(run["mesh_zip"]["url"])).name == "一只猫.zip"
    assert (out / "runs" / "一只猫" / "一只猫.zip").is_file()


def test_static_export_replaces_an_earlier_export_but_no_other_folder(root: Path, tmp_path: Path):
    out = export_static([root], tmp_path / "site")
    (out / "index.html").write_text("from before")
    export_static([root], out)
    assert (out / "index.html").read_text() != "from before"
    other = tmp_path / "notes"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    with pytest.raises(DreamtextError, match="already holds files"):
        export_static([root], other)
    assert [p.name for p in other.iterdir()] == ["mine.txt"]


def test_static_export_over_an_earlier_one_keeps_what_the_user_added_and_says_so(
    root: Path, tmp_path: Path
):
    """Notes and figures put beside an exported site (supplementary material) were deleted
    without a word when the site was exported again into the same folder."""
    out = export_static([root], tmp_path / "site")
    (out / "README.txt").write_text("notes")
    (out / "figures").mkdir()
    before = sorted(p.name for p in out.iterdir())
    beside = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(
        DreamtextError, match=r"holds files .* did not write \(README.txt, figures\)"
    ):
        export_static([root], out)
    assert sorted(p.name for p in out.iterdir()) == before
    assert (out / "README.txt").read_text() == "notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == beside  # no staging folder left


def test_static_export_into_a_link_to_nothing_is_one_line_and_leaves_nothing(
    root: Path, tmp_path: Path
):
    """A link to a folder that was moved away: the page was written, then its rename into
    place was a NotADirectoryError traceback."""
    (tmp_path / "site").symlink_to(tmp_path / "moved")
    with pytest.raises(DreamtextError, match=r"is a link to .*, which does not exist"):
        export_static([root], tmp_path / "site")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("earlier_export", [False, True])
def test_static_export_into_a_link_to_a_folder_writes_the_site_there(
    root: Path, tmp_path: Path, earlier_export: bool
):
    """A link to a web server's folder: the link itself was renamed away and replaced by a new
    folder, the folder it pointed to stayed empty, and a hidden ``.site.old.*`` link was left."""
    out = tmp_path / "out"
    served = out / "www" / "site"
    served.mkdir(parents=True)
    if earlier_export:
        export_static([root], served)
    (out / "site").symlink_to(served)
    export_static([root], out / "site")
    assert (out / "site").is_symlink()
    assert (served / "index.html").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["site", "www"]
    assert sorted(p.name for p in served.parent.iterdir()) == ["site"]


@pytest.mark.parametrize("earlier_export", [False, True])
def test_static_export_into_the_working_folder_is_one_line_and_changes_nothing(
    root: Path, tmp_path: Path, monkeypatch, capsys, earlier_export: bool
):
    """`cd empty && dreamtext view ROOT --static .` was an OSError traceback (EBUSY): the
    staging folder was made inside the folder it was then to replace by a rename (and in an
    earlier export's folder the rename would have left the shell in a deleted folder)."""
    here = tmp_path / "out" / "site"
    if earlier_export:
        export_static([root], here)
    else:
        here.mkdir(parents=True)
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*"))
    monkeypatch.chdir(here)
    assert main(["view", str(root), "--static", "."]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is the folder this command runs in" in err
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*")) == before


def test_static_export_under_a_file_is_one_line_and_leaves_nothing(root, tmp_path, capsys):
    """`--static notes.txt/site` was a FileExistsError traceback from the mkdir of its parent."""
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["view", str(root), "--static", str(tmp_path / "notes.txt" / "site")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "notes.txt is a file" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "runs", "secret.png"]


def test_static_export_onto_a_mount_point_is_one_line(root, tmp_path, monkeypatch, capsys):
    """A mount point cannot be renamed away (EBUSY, a traceback after the pages were written)."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == mount.resolve())
    assert main(["view", str(root), "--static", str(mount)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a mount point" in err
    assert list(mount.iterdir()) == [] and not any(
        p.name.startswith(".") for p in tmp_path.iterdir()
    )


def test_static_export_onto_a_bind_mount_is_one_line_and_leaves_nothing(
    root, tmp_path, monkeypatch, capsys
):
    """A bind mount of the same file system looks like no mount to os.path.ismount; its rename
    away fails with EBUSY, which was a traceback after the pages were written."""
    import errno

    site = export_static([root], tmp_path / "site")
    real_rename = Path.rename

    # Path.rename, which the export calls: on Python 3.10 it does not go through os.rename.
    def busy(self, target):
        if self == site:
            raise OSError(errno.EBUSY, "Device or resource busy", str(self))
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", busy)
    assert main(["view", str(root), "--static", str(site)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a mount point" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "secret.png", "site"]
    assert (site / "index.html").is_file()


def test_a_failed_static_export_leaves_nothing_behind(root: Path, tmp_path: Path, monkeypatch):
    import dreamtext.view.static as static

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(static, "_write_glb_script", broken)
    with pytest.raises(OSError):
        export_static([root], tmp_path / "site")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "secret.png"]


# ------------------------------------------------------------------------- the command line


@pytest.mark.parametrize("what, static", [("missing", True), ("empty", True)])
def test_view_of_a_folder_without_runs_exits_2_with_one_line(tmp_path, capsys, what, static):
    (tmp_path / "empty").mkdir()
    extra = ["--static", str(tmp_path / "site")] if static else []
    assert main(["view", str(tmp_path / what), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dreamtext: error: ")
    assert not (tmp_path / "site").exists()


def test_a_server_started_before_a_batchs_first_run_shows_runs_as_they_start(tmp_path):
    """`dreamtext batch … &` then `dreamtext view ROOT` in the next moment exited 2 ("no
    dreamtext runs"): the sweep's viewer had to be started again once a run existed."""
    empty = tmp_path / "sweep"
    empty.mkdir()
    with pytest.raises(DreamtextError, match="no dreamtext runs"):
        Catalog([empty])  # a static export of nothing is still refused
    with serving(Catalog([empty], empty_ok=True)) as srv:
        status, body, _ = get(srv, "/")
        assert status == 200 and b'id="dreamtext-data"' in body
        assert json.loads(get(srv, "/api/runs.json")[1])["runs"] == []
        make_run(empty / "cube", "a red cube")
        assert [r["id"] for r in json.loads(get(srv, "/api/runs.json")[1])["runs"]] == ["cube"]


@pytest.mark.parametrize("becomes", ["root", "workspace"])
def test_a_server_started_before_a_batch_made_its_folder_shows_its_runs_once_it_does(
    tmp_path: Path, becomes: str
):
    """`dreamtext batch prompts.txt --workspace sweep &` makes sweep/ only once it has read its
    prompts and checked its model: `dreamtext view sweep` in the next moment said "no such
    folder", where the README says a batch's folder can be opened before its first run starts.
    The folder is looked for at every poll, and read as a root or a run once it is there."""
    sweep = tmp_path / "sweep"
    with pytest.raises(DreamtextError, match="no such folder"):
        Catalog([sweep])  # a static export of nothing is still refused
    with serving(Catalog([sweep], empty_ok=True)) as srv:
        assert get(srv, "/")[0] == 200
        assert json.loads(get(srv, "/api/runs.json")[1])["runs"] == []
        if becomes == "root":
            make_run(sweep / "cube", "a red cube")
            want = ["cube"]
        else:
            make_run(sweep, "a red cube")
            want = ["sweep"]
        assert [r["id"] for r in json.loads(get(srv, "/api/runs.json")[1])["runs"]] == want
        assert get(srv, f"/run/{want[0]}/")[0] == 200


def test_a_server_started_while_a_run_loads_its_models_shows_the_run(tmp_path: Path):
    """`dreamtext text … --workspace W &` then `dreamtext view W`: while the run loads its models
    W holds only its lock file. The viewer took W for a folder of runs for good, and showed no
    run, even after the run had finished."""
    folder = tmp_path / "a_red_cube"
    folder.mkdir()
    (folder / ".dreamtext.lock").write_text("{}")
    with serving(Catalog([folder], empty_ok=True)) as srv:
        assert json.loads(get(srv, "/api/runs.json")[1])["runs"] == []
        make_run(folder, "a red cube")
        runs = json.loads(get(srv, "/api/runs.json")[1])["runs"]
        assert [r["id"] for r in runs] == ["a_red_cube"]
        assert get(srv, "/run/a_red_cube/")[0] == 200


def test_a_run_folder_removed_while_served_leaves_the_gallery(tmp_path: Path):
    """`dreamtext view workspace/a_red_cube`, then the run's folder moved away: its card stayed,
    as an interrupted run whose page said it was gone."""
    run = make_run(tmp_path / "a_red_cube", "a red cube")
    with serving(Catalog([run])) as srv:
        assert [r["id"] for r in json.loads(get(srv, "/api/runs.json")[1])["runs"]] == [
            "a_red_cube"
        ]
        run.rename(tmp_path / "moved")
        assert json.loads(get(srv, "/api/runs.json")[1])["runs"] == []


def test_a_folder_of_links_to_runs_outside_it_says_the_links_are_not_followed(
    tmp_path: Path, capsys
):
    """`ln -s ../workspace/a_red_cube best/`, then `dreamtext view best`: the links are not
    followed (nothing outside a root is served), but the refusal said a run's folder holds
    config.json, which the linked folder does, and the server that its runs would appear."""
    run = make_run(tmp_path / "workspace" / "a_red_cube", "a red cube")
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "a_red_cube").symlink_to(run)
    assert main(["view", str(tmp_path / "best"), "--static", str(tmp_path / "site")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert (
        "holds 1 link to a run outside it" in err
        and f"dreamtext view {shlex.quote(str(run))}" in err
    )
    assert not (tmp_path / "site").exists()
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ViewServer, "serve_forever", lambda self, *a, **k: None)
        serve([tmp_path / "best"], "127.0.0.1", 0, out=out)
    assert "holds 1 link to a run outside it" in out.getvalue()
    assert "shows them as they start" not in out.getvalue()


def test_view_of_a_folder_not_made_yet_serves_it_and_says_so(tmp_path: Path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "dreamtext", "view", str(tmp_path / "sweep"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        first, second, third = (proc.stdout.readline() for _ in range(3))
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    assert first.startswith("dreamtext view: 0 runs at http://127.0.0.1:"), first
    assert second.strip() == (
        f"no folder {tmp_path / 'sweep'} yet: the page shows its runs once a batch makes it "
        "(check the path if none is starting)"
    )
    assert not third.strip().startswith("no runs in"), third


def test_view_without_arguments_needs_a_workspace_folder(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["view"]) == 2
    assert "no workspace/ folder here" in capsys.readouterr().err


def test_view_on_a_port_in_use_exits_2(root: Path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["view", str(root), "--port", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is in use" in err


def _printed_lines(root: Path, monkeypatch, capsys, host: str) -> tuple[list[str], int]:
    """What `dreamtext view --host HOST` prints on a machine called node042, and its port."""
    monkeypatch.setattr(socket, "gethostname", lambda: "node042")
    made = servers_stopped_at_once(monkeypatch)
    assert main(["view", str(root), "--host", host, "--port", "0"]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    # The token, where the tests below write the addresses' ?token= as {token}.
    lines = [line.replace(made[0].token, "{token}") for line in lines]
    return lines, made[0].server_port


@pytest.mark.parametrize(
    "host, line",
    [
        (
            "127.0.0.1",
            "from another machine: ssh -o ExitOnForwardFailure=yes -L {port}:127.0.0.1:{port} "
            "node042, then open http://127.0.0.1:{port}/?token={token}",
        ),
        ("0.0.0.0", "from another machine, open http://node042:{port}/?token={token}"),
    ],
)
def test_view_names_this_machine_in_how_to_reach_it_from_another(
    root: Path, monkeypatch, capsys, host: str, line: str
):
    """The lines said `ssh -L ... <this host>`, and with --host 0.0.0.0 gave only 127.0.0.1's
    address: the node's name is what a user at home has to type. The ssh line asks ssh to stop
    when it cannot forward: where the user's port was taken, the line's plain `ssh -L` warned,
    logged in, and the address it gave opened whatever held that port there."""
    lines, port = _printed_lines(root, monkeypatch, capsys, host)
    assert line.format(port=port, token="{token}") in "\n".join(lines), lines


def test_view_says_how_to_reach_it_through_a_login_node(root: Path, monkeypatch, capsys):
    """On a cluster the laptop reaches the login node only, and the node's name resolves there,
    not on the laptop: the printed ssh line alone failed ("Could not resolve hostname node",
    benchmarks/view_ssh.sh). The next line is the same command through the login node with
    -J, a placeholder for the login node's name that is one word and no shell syntax."""
    lines, port = _printed_lines(root, monkeypatch, capsys, "127.0.0.1")
    first = next(line for line in lines if line.startswith("from another machine: ssh "))
    jump = next(line for line in lines if line.startswith("through a login node: ssh "))
    command = first.removeprefix("from another machine: ").split(", then open")[0].split()
    assert jump.removeprefix("through a login node: ").split() == (
        [*command[:1], "-J", "LOGIN_NODE", *command[1:]]
    )
    assert command[-1] == "node042" and f"{port}:127.0.0.1:{port}" in command


def test_view_on_every_interface_says_how_to_forward_through_a_login_node(
    root: Path, monkeypatch, capsys
):
    """With --host 0.0.0.0 the lines gave only http://node042:PORT/, which a laptop outside the
    cluster cannot open. The login node can: a forward from it to the node's port needs no ssh
    to the node, which some clusters do not allow."""
    lines, port = _printed_lines(root, monkeypatch, capsys, "0.0.0.0")
    want = (
        f"through a login node: ssh -o ExitOnForwardFailure=yes -L {port}:node042:{port} "
        f"LOGIN_NODE, then open http://127.0.0.1:{port}/?token={{token}}"
    )
    assert want in lines, lines


def test_view_on_every_interface_gives_the_machines_addresses_too(root: Path, monkeypatch, capsys):
    """With --host 0.0.0.0 the line named the node only by its host name, which a laptop outside
    the cluster's DNS (or a portal that connects by address) cannot resolve; it gives the
    addresses that reach the node too."""
    import dreamtext.view.server as server_module

    monkeypatch.setattr(server_module, "machine_addresses", lambda: ["10.1.2.3", "10.9.0.7"])
    lines, port = _printed_lines(root, monkeypatch, capsys, "0.0.0.0")
    want = (
        f"from another machine, open http://node042:{port}/?token={{token}} (by address: "
        f"http://10.1.2.3:{port}/?token={{token}}, http://10.9.0.7:{port}/?token={{token}})"
    )
    assert want in "\n".join(lines), lines


def test_machine_addresses_are_this_machines_and_not_loopback():
    """Each address binds here (an address of another machine would not) and none is 127.x;
    the address this machine's route to the outside leaves from is among them."""
    from dreamtext.view.server import machine_addresses

    addresses = machine_addresses()
    for address in addresses:
        assert not address.startswith("127."), addresses
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((address, 0))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.123", 9))  # sends nothing: picks the route and its source
        except OSError:
            pytest.skip("no IPv4 route off this machine")
        source = s.getsockname()[0]
    if not source.startswith("127."):
        assert source in addresses, (source, addresses)


def test_view_static_prints_the_page_it_wrote(root: Path, tmp_path: Path, capsys):
    assert main(["view", str(root), "--static", str(tmp_path / "site")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "site" / "index.html")


def test_a_path_stdout_cannot_encode_is_escaped_not_a_traceback(root: Path, tmp_path: Path):
    """stdout in ASCII (PYTHONIOENCODING=ascii, a Latin-1 locale): printing a folder named in
    another script was a UnicodeEncodeError traceback (exit 1) after the work was done; `text`
    ends the same way, printing its workspace."""
    site = tmp_path / "café 一只猫"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONIOENCODING": "ascii"}
    done = subprocess.run(
        [sys.executable, "-m", "dreamtext.cli", "view", str(root), "--static", str(site)],
        capture_output=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    escaped = str(site / "index.html").encode("ascii", "backslashreplace")
    assert done.stdout.strip() == escaped
    assert (site / "index.html").is_file()


def _sigint_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_view_serves_and_stops_on_ctrl_c_or_sigterm(root: Path, stop: signal.Signals):
    """As a user runs it: a new process, the address on stdout, Ctrl-C (SIGINT) ends it with 0.
    So does a SIGTERM (`kill`, a job scheduler's stop), which killed it with no line (-15).
    It imports neither torch nor diffusers, so it starts in a moment."""
    code = (
        "import sys; from dreamtext.cli import main; rc = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules; sys.exit(rc)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "view", str(root), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # A terminal's Ctrl-C, even when pytest itself was started in the background by a
        # shell without job control, which leaves SIGINT ignored for every child.
        preexec_fn=_sigint_as_in_a_terminal,
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("dreamtext view: 3 runs at http://127.0.0.1:"), first
        address = urlsplit(first.rsplit(" ", 1)[1].strip())
        port, token = address.port, address.query  # the printed address's token=...
        for path, expected in [("/api/runs.json", 200), ("/files/cube/%ff.png", 404)]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", f"{path}?{token}")
            assert conn.getresponse().status == expected, path
            conn.close()
        proc.send_signal(stop)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert out.rstrip().endswith("dreamtext view: stopped")


def first_two_lines_served(folder: Path) -> tuple[str, str]:
    """The first two lines ``dreamtext view FOLDER --port 0`` prints, in a process of its own,
    which is then stopped."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dreamtext", "view", str(folder), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        return proc.stdout.readline(), proc.stdout.readline()
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def test_view_of_a_root_without_runs_yet_serves_it_and_says_so(tmp_path: Path):
    (tmp_path / "sweep").mkdir()
    first, second = first_two_lines_served(tmp_path / "sweep")
    assert first.startswith("dreamtext view: 0 runs at http://127.0.0.1:"), first
    assert second.strip().startswith(f"no runs in {tmp_path / 'sweep'} yet: the page shows them")


@pytest.mark.parametrize(
    "status_file, stage, activity",
    [
        ({"state": "running", "phase": "describe"}, "describe", "describing the image"),
        ({"state": "interrupted", "phase": "describe"}, "describe", "in describe"),
        ({"state": "failed", "phase": "descriptor"}, "descriptor", "in descriptor training"),
        ({"state": "running", "phase": "descriptor"}, "descriptor", "training descriptor"),
    ],
)
def test_an_image_run_before_its_text_stage_reads_its_state_and_phase_from_status_json(
    tmp_path: Path, status_file, stage, activity
):
    """describe and the descriptor training wrote no status.json: a failed or interrupted one
    showed as running for two minutes after its last file, then as interrupted."""
    apple = make_image_run(tmp_path / "apple", "describe")
    write_json(apple / "config.json", {"prompt": "apple", "iters": 100, "image_to_3d": {}})
    write_json(apple / "status.json", {**status_file, "step": 40, "iters": 500, "seconds": 9.0})
    status = read_run(location(Catalog([apple]), "apple")).status
    assert (status["state"], status["source"]) == (status_file["state"], "status.json")
    assert (status["stage"], status["activity"]) == (stage, activity)
    assert (status["step"], status["iters"]) == (None, 100)  # the text stage's
    if stage == "descriptor":
        assert (status["descriptor_step"], status["descriptor_iters"]) == (40, 500)


def test_a_diverse_run_sampling_its_image_is_an_image_run(tmp_path: Path):
    """Before its image exists, a --diverse run has only config.json and status.json."""
    cube = tmp_path / "cube"
    write_json(cube / "config.json", {"prompt": "a red cube", "diverse": {"prompt": "a red cube"}})
    write_json(cube / "status.json", {"state": "running", "phase": "sample", "step": 0})
    run = read_run(location(Catalog([cube]), "cube"))
    assert (run.kind, run.prompt) == ("image", "a red cube")
    assert (run.status["stage"], run.status["activity"]) == ("sample", "sampling the image")


def test_describe_alone_with_its_status_json_is_a_finished_run(tmp_path: Path):
    """`dreamtext describe` records its run in status.json: finished in phase describe reads as
    described, not as an image→3D run stopped after its describe stage."""
    apple = make_image_run(tmp_path / "apple", "describe", source=False)
    write_json(apple / "status.json", {"state": "finished", "phase": "describe", "step": 0})
    status = read_run(location(Catalog([apple]), "apple")).status
    assert (status["state"], status["source"]) == ("finished", "status.json")
    assert (status["stage"], status["activity"]) == ("describe", "described")


# ------------------------------------------------------------------ an export at work


def test_a_finished_run_being_exported_shows_its_export_stage_and_stays_finished(root: Path):
    """`dreamtext export` of a finished run leaves status.json `finished` (byte for byte), so
    the card showed a finished run, idle, for minutes of meshing and turntable. The export's
    progress record says what it does: the card reads `finished`, `exporting · turntable 7/15`."""
    from dreamtext.exportprogress import ExportProgress
    from dreamtext.processes import HOST

    cube = root / "cube"
    with ExportProgress(cube, step=20) as progress:
        progress.stage("turntable", 7, 15)
        status = read_run(location(Catalog([root]), "cube")).status
        assert status["state"] == "finished" and status["activity"] == "exporting · turntable 7/15"
        assert status["export"]["stage"] == "turntable" and status["export"]["step"] == 20
        assert (status["export"]["host"], status["export"]["pid"]) == (HOST, os.getpid())
        assert status["export"]["started"] == progress.started
        progress.stage("texture baking")
        status = read_run(location(Catalog([root]), "cube")).status
        assert status["activity"] == "exporting · texture baking"
    status = read_run(location(Catalog([root]), "cube")).status
    assert status["state"] == "finished" and status["activity"] is None and "export" not in status


def test_a_running_run_in_its_export_phase_shows_the_stage(root: Path):
    from dreamtext.exportprogress import ExportProgress

    sphere = root / "sphere"
    write_json(sphere / "status.json", {**RUNNING, "phase": "export"})
    assert read_run(location(Catalog([root]), "sphere")).status["activity"] == "exporting"
    with ExportProgress(sphere) as progress:
        progress.stage("meshing", 12, 64)
        status = read_run(location(Catalog([root]), "sphere")).status
    assert status["state"] == "running" and status["activity"] == "exporting · meshing 12/64"


@pytest.mark.parametrize("named", [True, False], ids=["--workspace", "the newest run"])
def test_dreamtext_export_shows_in_the_viewer_before_its_slow_imports(
    root: Path, monkeypatch, capsys, named
):
    """A cold `dreamtext export` showed nothing in the viewer for its first 20-70 s: its
    progress record was written after torch, the model libraries and the export's own modules
    loaded. It is there when they start loading now (``loading the run``), and gone again
    however the export ends (here: refused). Without --workspace too: the newest run under
    workspace/ is found before those imports (it was found by the export, after them)."""
    import types

    import dreamtext.cli as cli
    from dreamtext.exportprogress import PROGRESS_FILE

    cube = root / "cube"
    (cube / "checkpoints").mkdir()
    (cube / "checkpoints" / "last.pt").write_bytes(b"a checkpoint")
    older = root / "torus" / "checkpoints" / "last.pt"  # beside its step file
    older.parent.mkdir()
    older.write_bytes(b"an older checkpoint")
    past = time.time() - 600
    os.utime(older, (past, past))
    (root.parent / "workspace").symlink_to(root)
    monkeypatch.chdir(root.parent)
    seen = []

    def shown() -> str | None:
        return read_run(location(Catalog([root]), "cube")).status["activity"]

    def at_import(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        seen.append(("dreamtext.export", shown()))
        raise DreamtextError("stopped at the export's imports by the test")

    start_libraries = cli.start_libraries
    monkeypatch.setattr(
        cli,
        "start_libraries",
        lambda args: seen.append(("torch", shown())) or start_libraries(args),
    )

    slow = types.ModuleType("dreamtext.export")
    slow.__getattr__ = at_import  # the module's `from dreamtext.export import ...`
    monkeypatch.setitem(sys.modules, "dreamtext.export", slow)
    assert main(["export", "--workspace", str(cube)] if named else ["export"]) == 2
    assert "stopped at the export's imports" in capsys.readouterr().err
    loading = "exporting · loading the run"
    assert seen == [("torch", loading), ("dreamtext.export", loading)]
    assert not (cube / PROGRESS_FILE).exists()


EXPORTER = """
import sys, time
from dreamtext.exportprogress import ExportProgress
with ExportProgress(sys.argv[1]) as progress:
    progress.stage("turntable", 3, 15)
    print("written", flush=True)
    time.sleep(600)
"""


def test_a_killed_exporters_progress_record_shows_no_export(root: Path, monkeypatch):
    """SIGKILL (the out-of-memory killer) leaves the record behind; the viewer tells it from a
    live export's by the lock its writer held (dropped with the process), and the gallery's
    delta poll sends the card again without it although no file changed."""
    settle_at_once(monkeypatch)
    cube = root / "cube"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    exporter = subprocess.Popen(
        [sys.executable, "-c", EXPORTER, str(cube)], stdout=subprocess.PIPE, text=True, env=env
    )
    with serving(Catalog([root])) as srv:
        try:
            assert exporter.stdout.readline().strip() == "written"
            first = json.loads(get(srv, "/api/runs.json")[1])
            (card,) = [run for run in first["runs"] if run["id"] == "cube"]
            assert card["status"]["activity"] == "exporting · turntable 3/15"
            assert card["status"]["export"]["pid"] == exporter.pid
            exporter.kill()
            exporter.wait()
            assert (cube / ".export-progress.json").exists()
            answer = poll_since(srv, first["cursor"])
            (changed,) = answer["changed"]
            assert changed["id"] == "cube" and changed["status"]["state"] == "finished"
            assert changed["status"]["activity"] is None and "export" not in changed["status"]
        finally:
            exporter.kill()
            exporter.wait()


def test_a_gallery_poll_sends_a_run_whose_export_moved_on(root: Path, monkeypatch):
    """A progress record that appears, moves to the next stage or goes is a change of its run:
    the page's ?since= poll gets that card, and only it."""
    from dreamtext.exportprogress import ExportProgress

    age(root, 3600)
    settle_at_once(monkeypatch)
    with serving(Catalog([root])) as srv:
        first = json.loads(get(srv, "/api/runs.json")[1])
        cursor, activities = first["cursor"], []
        with ExportProgress(root / "cube") as progress:
            for stage in ("meshing", "turntable"):
                time.sleep(0.05)  # a tick of the file clock
                progress.stage(stage, 1, 15)
                answer = poll_since(srv, cursor)
                cursor = answer["cursor"]
                activities.append([run["status"]["activity"] for run in answer["changed"]])
        time.sleep(0.05)
        answer = poll_since(srv, cursor)
        activities.append([(run["id"], run["status"]["activity"]) for run in answer["changed"]])
        assert activities == [
            ["exporting · meshing 1/15"],
            ["exporting · turntable 1/15"],
            [("cube", None)],
        ]


def test_an_export_rewrites_its_record_while_a_stage_goes_on(root: Path, monkeypatch):
    """One stage may take minutes (texture baking): the record was written at stage changes
    alone, so a reader on another node could not tell a live exporter from a killed one for an
    hour. It is written again every beat, and no more once the export ends."""
    import dreamtext.exportprogress as exportprogress

    monkeypatch.setattr(exportprogress, "BEAT_S", 0.05)
    path = root / "cube" / exportprogress.PROGRESS_FILE
    with exportprogress.ExportProgress(root / "cube") as progress:
        progress.stage("texture baking")
        first = os.stat(path).st_ino
        record = json.loads(path.read_text())
        assert record["beat_s"] == 0.05 and record["stage"] == "texture baking"
        deadline = time.monotonic() + 30
        while os.stat(path).st_ino == first and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.stat(path).st_ino != first  # written again, whole (a new file renamed over)
        assert json.loads(path.read_text())["stage"] == "texture baking"
    time.sleep(0.2)  # four beats
    assert not path.exists()


def test_an_export_on_another_node_shows_until_its_heartbeat_stops(root: Path, monkeypatch):
    """Where locks do not reach across nodes, a killed exporter's record showed `exporting`
    for an hour (ELSEWHERE_GRACE_S). A record with a heartbeat is live while the viewer sees it
    change: unchanged for BEATS_MISSED beats of the viewer's own clock, it shows no export."""
    import dreamtext.exportprogress as exportprogress

    now = [1000.0]
    monkeypatch.setattr(exportprogress, "_clock", lambda: now[0])
    path = root / "cube" / exportprogress.PROGRESS_FILE
    record = {"stage": "texture baking", "host": "another-node", "pid": 4242, "beat_s": 30.0}

    def shown() -> str | None:
        return read_run(location(Catalog([root]), "cube")).status["activity"]

    write_json(path, {**record, "updated": "2026-11-30T10:00:00+00:00"})
    assert shown() == "exporting · texture baking"
    now[0] += 3 * 30 - 1  # beats missed, but not three yet
    assert shown() == "exporting · texture baking"
    now[0] += 2
    assert shown() is None
    write_json(path, {**record, "updated": "2026-11-30T10:01:32+00:00"})  # it beats again
    assert shown() == "exporting · texture baking"
    # A record from before the heartbeat: the file's age, as before (an hour's grace).
    write_json(path, {"stage": "meshing", "host": "another-node", "pid": 4242})
    now[0] += 3600
    assert shown() == "exporting · meshing"


@pytest.mark.parametrize(
    ("record", "seconds_old", "shown"),
    [
        ({"host": "another-node", "pid": 4242}, 60, True),  # cannot be checked: recent enough
        ({"host": "another-node", "pid": 4242}, 7200, False),  # no export runs this long
        ({"host": "another-node", "pid": 4242, "locked": True}, 60, True),  # locks stay local
        ({"host": "another-node", "pid": 4242, "locked": True}, 7200, False),
        ({"pid": 2**22 + 1}, 60, False),  # of this machine, and the process is gone
        ({"locked": True}, 60, False),  # of this machine, and nobody holds its lock
    ],
    ids=["elsewhere", "elsewhere-old", "elsewhere-locked", "elsewhere-locked-old", "gone", "freed"],
)
def test_an_export_record_is_live_only_while_its_writer_can_be_there(
    root: Path, record, seconds_old, shown
):
    from dreamtext.processes import HOST

    path = root / "cube" / ".export-progress.json"
    write_json(path, {"stage": "turntable", "done": 2, "total": 15, "host": HOST, **record})
    past = time.time() - seconds_old
    os.utime(path, (past, past))
    status = read_run(location(Catalog([root]), "cube")).status
    assert ("export" in status) == shown
    assert status["activity"] == ("exporting · turntable 2/15" if shown else None)


def test_an_empty_static_folder_is_one_line_not_a_server(root: Path, tmp_path, monkeypatch, capsys):
    """`--static "$OUT"` with OUT unset reached the command as "", which is no --static at all:
    a server started and a batch job's script waited on it forever."""
    import dreamtext.view

    def no_server(*args, **kwargs):
        raise AssertionError("a server started")

    monkeypatch.setattr(dreamtext.view, "serve", no_server)
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    assert main(["view", str(root), "--static", ""]) == 2
    assert main(["view", ""]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "dreamtext: error: --static is empty (an unset shell variable?); give it a path",
        "dreamtext: error: WORKSPACE_OR_ROOT is empty (an unset shell variable?); give it a path",
    ]
    assert sorted(tmp_path.rglob("*")) == before


def test_a_not_exported_runs_page_names_a_folder_its_export_command_can_find(tmp_path: Path):
    """The page of a run trained with --no-export said `dreamtext export --workspace cube` in a
    static folder (which names runs, not paths): run where the batch ran, that command found no
    run. It names the folder the training was given, quoted for the shell; the server's page
    names the run's folder on this machine."""
    root = tmp_path / "my runs"
    run = make_run(root / "cube", "a red cube", final=False, status={"state": "finished"})
    write_json(
        run / "config.json", {"prompt": "a red cube", "export": False, "workspace": "my runs/cube"}
    )
    with serving(Catalog([root])) as srv:
        page = json.loads(get(srv, "/api/run/cube.json")[1])["run"]
    assert page["export_command"] == f"dreamtext export --workspace '{root / 'cube'}'"
    out = export_static([root], tmp_path / "site")
    page = page_data(out / "runs" / "cube" / "index.html")["run"]
    assert page["workspace"] == "cube"
    assert page["export_command"] == "dreamtext export --workspace 'my runs/cube'"


def test_a_folder_inside_a_run_names_the_run_to_view(root: Path, tmp_path, monkeypatch, capsys):
    """`dreamtext view runs/cube/mesh` (the folder the GLB is in) said "no runs in
    runs/cube/mesh yet: the page shows them as they start", and served an empty gallery that
    would never fill. It names the run to pass instead."""
    from dreamtext.view.workspaces import inside_run_hint

    write_json(root / "cube" / "status.json", {"state": "finished"})
    monkeypatch.chdir(tmp_path)
    assert main(["view", "runs/cube/mesh", "--static", "site"]) == 2
    assert capsys.readouterr().err == (
        "dreamtext: error: runs/cube/mesh is a folder inside the run runs/cube: "
        "`dreamtext view runs/cube` shows it\n"
    )
    assert not (tmp_path / "site").exists()
    # A lone config.json higher up (a home folder's) makes no run of that folder.
    (tmp_path / "home" / "empty").mkdir(parents=True)
    write_json(tmp_path / "home" / "config.json", {"theme": "dark"})
    assert inside_run_hint(Path("home/empty")) is None


def test_a_server_of_a_folder_inside_a_run_names_the_run_to_view(root: Path):
    mesh = root / "cube" / "mesh"
    first, second = first_two_lines_served(mesh)
    assert first.startswith("dreamtext view: 0 runs at http://127.0.0.1:"), first
    cube = (root / "cube").resolve()
    assert second.strip() == (
        f"{mesh} is a folder inside the run {cube}: `dreamtext view {shlex.quote(str(cube))}` "
        "shows it"
    )


def test_the_gallery_names_the_folders_it_shows(root: Path, tmp_path: Path):
    """A gallery said "dreamtext runs" and nothing of where: two viewers forwarded over SSH (a
    sweep's and last week's) looked alike. The server names its folders' paths; a static
    folder, which names no local paths, their names."""
    with serving(Catalog([root])) as srv:
        gallery = json.loads(get(srv, "/api/runs.json")[1])
    assert gallery["folders"] == [str(root.resolve())]
    out = export_static([root], tmp_path / "site")
    assert page_data(out / "index.html")["folders"] == ["runs"]


@pytest.mark.parametrize(
    ("number", "port", "fix"),
    [
        (errno.EACCES, 80, "pass a --port of 1024 or more (0 picks a free one)"),
        (errno.EADDRINUSE, 8000, "pass another --port (0 picks a free one)"),
        (errno.EADDRNOTAVAIL, 8000, "check --host"),
    ],
)
def test_a_port_or_host_that_cannot_be_listened_on_names_its_flag(
    root, monkeypatch, number, port, fix
):
    """A privileged port refused (EACCES) was blamed on --host."""
    from dreamtext.view import server

    def refused(*args, **kwargs):
        raise OSError(number, os.strerror(number))

    monkeypatch.setattr(server, "ViewServer", refused)
    with pytest.raises(DreamtextError) as raised:
        server.make_server(Catalog([root]), "127.0.0.1", port)
    assert str(raised.value).endswith(fix)
