"""ExportProgress's record, by its docstring: written at once for a new stage, at most once in
WRITE_EVERY_S (1 s) within one, by this export only, and removed at the end only where it is
this export's."""

from __future__ import annotations

import json
import os
import types
from pathlib import Path

import pytest

import dreamtext.exportprogress as exportprogress
from dreamtext.exportprogress import PROGRESS_FILE, ExportProgress


@pytest.fixture
def clock(monkeypatch):
    """The monotonic clock stage() reads, set by the test (the module's own, not time's)."""
    now = [1000.0]
    monkeypatch.setattr(exportprogress, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    return now


def _on_disk(folder: Path) -> dict:
    return json.loads((folder / PROGRESS_FILE).read_text(encoding="utf-8"))


def test_a_stage_is_rewritten_at_most_once_a_second(tmp_path, clock):
    with ExportProgress(tmp_path, step=7) as progress:
        progress.stage("meshing", 1, 64)
        clock[0] += 0.5  # half a second later: the same stage is not written again
        progress.stage("meshing", 2, 64)
        assert (_on_disk(tmp_path)["done"], _on_disk(tmp_path)["total"]) == (1, 64)
        clock[0] += 0.6  # 1.1 s after the first write
        progress.stage("meshing", 3, 64)
        assert _on_disk(tmp_path)["done"] == 3
        assert _on_disk(tmp_path)["step"] == 7
    assert not (tmp_path / PROGRESS_FILE).exists()


def test_a_write_that_failed_does_not_hold_back_the_next(tmp_path, clock):
    """A write that failed (the folder not made yet) wrote nothing: the next call of the same
    stage, within the second, is written."""
    folder = tmp_path / "run"
    with ExportProgress(folder) as progress:
        progress.stage("meshing", 1, 4)
        assert not (folder / PROGRESS_FILE).exists()
        folder.mkdir()
        clock[0] += 0.1
        progress.stage("meshing", 2, 4)
        assert _on_disk(folder)["done"] == 2


def test_an_export_ending_leaves_the_record_of_another_export_of_the_run(tmp_path):
    """Two exports of one run: the first to end must not remove the record the other wrote
    since (the viewer would show no export while one works)."""
    first, second = ExportProgress(tmp_path, step=1), ExportProgress(tmp_path, step=2)
    with first:
        first.stage("meshing", 1, 4)
        with second:
            second.stage("turntable", 1, 15)
            first.__exit__(None, None, None)
            assert exportprogress.read_progress(tmp_path)["stage"] == "turntable"
            assert exportprogress.live_export(tmp_path)["step"] == 2
        assert not (tmp_path / PROGRESS_FILE).exists()


@pytest.mark.parametrize("text", ['{"done": 1, "total": 4}', '{"stage": null}', '{"stage": 3}'])
def test_a_record_without_a_stage_is_no_record(tmp_path, text):
    """A record with no stage in words is none (the viewer writes its stage on the card)."""
    (tmp_path / PROGRESS_FILE).write_text(text, encoding="utf-8")
    assert exportprogress.read_progress(tmp_path) is None
    assert exportprogress.live_export(tmp_path) is None


def _elsewhere(folder: Path, **fields) -> Path:
    """A record of an export on another machine (no lock to see, no process to ask)."""
    path = folder / PROGRESS_FILE
    record = {"stage": "texture baking", "host": "another-node", "pid": 4242, **fields}
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


def test_a_heartbeat_unchanged_for_three_beats_is_a_gone_writers(tmp_path, monkeypatch):
    """beat_s 30, BEATS_MISSED 3: unchanged for 80 s (2.7 beats) by the reader's clock it is
    live, for 95 s (3.2 beats) its writer is taken for gone; a new beat makes it live again."""
    now = [500.0]
    monkeypatch.setattr(exportprogress, "_clock", lambda: now[0])
    _elsewhere(tmp_path, beat_s=30.0, updated="2026-12-05T10:00:00+00:00")
    assert exportprogress.live_export(tmp_path) is not None  # first seen: taken as beating
    now[0] += 80.0
    assert exportprogress.live_export(tmp_path) is not None
    now[0] += 15.0
    assert exportprogress.live_export(tmp_path) is None
    _elsewhere(tmp_path, beat_s=30.0, updated="2026-12-05T10:01:35+00:00")
    assert exportprogress.live_export(tmp_path) is not None


def test_a_record_without_a_heartbeat_is_live_for_an_hour_after_it_was_written(tmp_path):
    """An older exporter (no beat_s) on another machine: live while its file is younger than
    processes.ELSEWHERE_GRACE_S (an hour), gone after."""
    path = _elsewhere(tmp_path)
    assert exportprogress.live_export(tmp_path) is not None
    two_hours_ago = path.stat().st_mtime - 7200
    os.utime(path, (two_hours_ago, two_hours_ago))
    assert exportprogress.live_export(tmp_path) is None


@pytest.mark.parametrize(
    ("record", "words"),
    [
        ({"stage": "turntable", "done": 7, "total": 15}, "turntable 7/15"),
        ({"stage": "meshing", "done": True, "total": 4}, "meshing"),
        ({"stage": "meshing", "done": 1, "total": None}, "meshing"),
        ({"stage": "texture baking"}, "texture baking"),
    ],
)
def test_progress_in_words_counts_only_whole_numbers(record, words):
    assert exportprogress.progress_words(record) == words


def test_an_unlocked_temp_file_of_a_killed_writer_is_removed_and_a_held_one_kept(tmp_path):
    """A temp file whose writer was killed before its rename holds no lock: the next export
    removes it at its start, however new; a writer's that is still held stays."""
    from dreamtext.processes import write_held_record

    dead = tmp_path / f"{PROGRESS_FILE}.deadbeef.tmp"
    dead.write_text("{}", encoding="utf-8")
    live = tmp_path / f"{PROGRESS_FILE}.cafef00d.tmp"
    handle = write_held_record(live, {"stage": "meshing"})
    try:
        with ExportProgress(tmp_path):
            assert not dead.exists()
            assert live.exists()
    finally:
        handle.close()


def test_each_heartbeat_changes_the_record(tmp_path, monkeypatch):
    """A reader on another node sees the writer only by changes: each beat writes a new
    `updated`, so a live export's record never stands unchanged for a beat."""
    import threading
    import time

    stamps = iter(f"2026-12-05T10:00:{n:02d}+00:00" for n in range(60))
    monkeypatch.setattr(exportprogress, "now_iso", lambda: next(stamps))
    monkeypatch.setattr(exportprogress, "BEAT_S", 0.05)
    with ExportProgress(tmp_path) as progress:
        progress.stage("texture baking")
        first = _on_disk(tmp_path)["updated"]
        deadline = time.monotonic() + 5
        while _on_disk(tmp_path)["updated"] == first and time.monotonic() < deadline:
            threading.Event().wait(0.02)
        assert _on_disk(tmp_path)["updated"] != first
        assert _on_disk(tmp_path)["stage"] == "texture baking"


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_exporter_of_this_machine_is_gone_however_recent_its_record(tmp_path):
    """export_alive: a record of this machine is judged by its lock (free: gone), or without
    one by its process (ended: gone); the heartbeat and the hour's grace are for records of
    machines whose locks and processes cannot be seen from here."""
    from dreamtext.processes import HOST

    fresh = {"stage": "meshing", "host": HOST, "pid": _dead_pid(), "beat_s": 30.0}
    path = tmp_path / PROGRESS_FILE
    path.write_text(json.dumps({**fresh, "locked": True}), encoding="utf-8")  # lock free
    assert exportprogress.live_export(tmp_path) is None
    path.write_text(json.dumps(fresh), encoding="utf-8")  # no lock: its process has ended
    assert exportprogress.live_export(tmp_path) is None
    path.write_text(json.dumps({**fresh, "pid": os.getpid()}), encoding="utf-8")
    assert exportprogress.live_export(tmp_path) is not None


@pytest.mark.skipif(
    not os.path.exists("/proc/sys/kernel/random/boot_id"), reason="no boot_id: not Linux"
)
def test_an_export_a_reboot_of_this_machine_ended_is_gone_at_first_sight(tmp_path):
    """A record without a lock, of this host and another boot_id, last written before this
    machine booted and late by its beat_s: the reboot ended its exporter. Taken for a twin
    machine's, it showed live for BEATS_MISSED beats after each viewer started."""
    import uuid
    from datetime import datetime, timezone

    from dreamtext.processes import HOST

    boot = float(Path("/proc/stat").read_text().split("btime ")[1].split()[0])  # booted at
    updated = datetime.fromtimestamp(boot - 120, timezone.utc).isoformat(timespec="seconds")
    record = {"stage": "meshing", "host": HOST, "pid": _dead_pid(), "beat_s": 30.0}
    record |= {"boot_id": str(uuid.uuid4()), "updated": updated}
    (tmp_path / PROGRESS_FILE).write_text(json.dumps(record), encoding="utf-8")
    assert exportprogress.live_export(tmp_path) is None


def test_a_free_lock_of_another_machine_is_judged_by_its_heartbeat(tmp_path, monkeypatch):
    """Locked, lock free, another machine (locks may not reach across): live while its record
    changes within BEATS_MISSED (3) beats, gone after."""
    now = [100.0]
    monkeypatch.setattr(exportprogress, "_clock", lambda: now[0])
    _elsewhere(tmp_path, beat_s=10.0, locked=True)
    assert exportprogress.live_export(tmp_path) is not None
    now[0] += 29.0
    assert exportprogress.live_export(tmp_path) is not None
    now[0] += 2.0
    assert exportprogress.live_export(tmp_path) is None


def test_a_new_stage_is_written_at_once(tmp_path, clock):
    """A new stage within the second of the last write is written at once: the viewer shows
    "decimating", not a finished "meshing 64/64", while the export decimates."""
    with ExportProgress(tmp_path) as progress:
        progress.stage("meshing", 64, 64)
        clock[0] += 0.2
        progress.stage("decimating")
        assert _on_disk(tmp_path)["stage"] == "decimating"
        assert (_on_disk(tmp_path)["done"], _on_disk(tmp_path)["total"]) == (None, None)
