"""runstatus.run_finished and has_mesh: which runs a batch counts as finished, with values
worked out by hand from the docstrings (a finished status at ``iters`` steps or more; a mesh
of the run's step or later where one is asked for; a run from before status.json by its
last.pt, its own iters and its mesh.glb)."""

import json
from pathlib import Path

import torch

from dreamtext.runstatus import error_line, has_mesh, run_finished


def _status(ws: Path, state: str, step: int) -> None:
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "status.json").write_text(json.dumps({"state": state, "step": step, "iters": step}))


def _mesh(ws: Path, step: int | bool | None) -> None:
    (ws / "mesh").mkdir(parents=True, exist_ok=True)
    (ws / "mesh" / "mesh.glb").write_bytes(b"glb")
    if step is not None:
        (ws / "mesh" / "mesh.json").write_text(json.dumps({"step": step}))


def _last(ws: Path, step: int) -> None:
    (ws / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save({"step": step}, ws / "checkpoints" / "last.pt")


def test_a_finished_status_counts_at_its_iters_and_not_short_of_them(tmp_path):
    _status(tmp_path, "finished", 10)
    assert run_finished(tmp_path, 10)
    assert run_finished(tmp_path, 9)
    assert not run_finished(tmp_path, 11)
    _status(tmp_path, "interrupted", 10)
    assert not run_finished(tmp_path, 10)


def test_a_finished_run_without_a_mesh_is_finished_only_without_a_checkpoint_to_export(tmp_path):
    _status(tmp_path, "finished", 10)
    assert run_finished(tmp_path, 10, needs_mesh=True)  # checkpoints removed: nothing to resume
    _last(tmp_path, 10)
    assert not run_finished(tmp_path, 10, needs_mesh=True)  # --no-export: export it
    assert run_finished(tmp_path, 10)  # no mesh asked of it


def test_a_mesh_of_an_earlier_end_is_no_mesh_of_the_runs_step(tmp_path):
    _status(tmp_path, "finished", 20)
    _last(tmp_path, 20)
    _mesh(tmp_path, 10)  # exported at 10, continued to 20 with --no-export
    assert not has_mesh(tmp_path, 20)
    assert not run_finished(tmp_path, 20, needs_mesh=True)
    _mesh(tmp_path, 20)
    assert has_mesh(tmp_path, 20)
    assert run_finished(tmp_path, 20, needs_mesh=True)


def test_a_mesh_whose_step_is_not_recorded_counts(tmp_path):
    _mesh(tmp_path, None)  # an export from before mesh.json
    assert has_mesh(tmp_path, 20)
    (tmp_path / "mesh" / "mesh.json").write_text("{cut sho")
    assert has_mesh(tmp_path, 20)


def test_a_run_from_before_status_json_needs_its_own_iters_and_the_ones_asked(tmp_path):
    _mesh(tmp_path, None)
    _last(tmp_path, 20)
    (tmp_path / "config.json").write_text(json.dumps({"iters": 20}))
    assert run_finished(tmp_path, 20)
    assert not run_finished(tmp_path, 30)
    (tmp_path / "config.json").write_text(json.dumps({"iters": 30}))  # stopped short of its own
    assert not run_finished(tmp_path, 10)


def test_an_unreadable_status_json_is_no_run_from_before_it(tmp_path):
    _mesh(tmp_path, None)
    _last(tmp_path, 20)
    (tmp_path / "config.json").write_text(json.dumps({"iters": 20}))
    (tmp_path / "status.json").write_text("{cut sho")
    assert not run_finished(tmp_path, 20)


def test_a_status_whose_step_is_a_boolean_is_no_finished_run(tmp_path):
    """JSON true is no step (another tool's file, or one edited by hand): true >= 1 in Python,
    but no run finished at step 'true'."""
    (tmp_path / "status.json").write_text(json.dumps({"state": "finished", "step": True}))
    assert not run_finished(tmp_path, 1)
    assert not run_finished(tmp_path, 0)


def test_a_mesh_json_whose_step_is_a_boolean_leaves_the_step_unknown(tmp_path):
    """mesh.json's step true is no step: the mesh counts, as one of an unknown step does
    (true >= 20 is False in Python, which made it an earlier end's)."""
    _mesh(tmp_path, True)
    assert has_mesh(tmp_path, 20)


def test_error_line_of_an_error_with_a_message_names_its_type_and_first_line():
    assert error_line(RuntimeError("CUDA out of memory\nTried to allocate")) == (
        "RuntimeError: CUDA out of memory"
    )
    assert error_line(OSError("  \n ")) == "OSError"


def _cut_export_status(ws: Path) -> dict:
    """status.json of a run killed (SIGKILL) in its export at step 3, as it wrote status.json:
    ``running`` in phase ``export`` with its process gone, and the temp file it left."""
    import subprocess
    import sys

    from dreamtext.processes import HOST

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    status = {"state": "running", "step": 3, "iters": 3, "phase": "export"}
    status.update(host=HOST, pid=gone.pid, pid_start=None)
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "status.json").write_text(json.dumps(status))
    (ws / ".status.json.k2j4x9ab.tmp").write_text('{"state": "run')
    return status


def test_an_export_that_finishes_a_cut_export_removes_the_killed_runs_status_temp(tmp_path):
    """``dreamtext export`` finishing a run whose own export was killed writes status.json
    under the workspace's lock, and so removes the temp file the killed writer left."""
    from dreamtext.runstatus import finish_cut_export

    ws = tmp_path / "run"
    _cut_export_status(ws)
    assert finish_cut_export(ws, 3)
    assert json.loads((ws / "status.json").read_text())["state"] == "finished"
    assert sorted(p.name for p in ws.iterdir()) == ["status.json"]


def test_a_cut_export_that_a_new_run_holds_now_is_left_to_it(tmp_path):
    """A run that took the workspace's lock meanwhile (a --resume) writes its own status.json:
    the export leaves it, and its files, as they are."""
    import fcntl

    from dreamtext.processes import HOST, LOCK_NAME
    from dreamtext.runstatus import finish_cut_export

    ws = tmp_path / "run"
    status = _cut_export_status(ws)
    lock = ws / LOCK_NAME
    lock.write_text(json.dumps({"host": HOST, "pid": 1}), encoding="utf-8")
    with open(lock, encoding="utf-8") as held:  # another open file: its own flock
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert not finish_cut_export(ws, 3)
    assert json.loads((ws / "status.json").read_text()) == status
    assert (ws / ".status.json.k2j4x9ab.tmp").is_file()


def test_an_export_of_another_step_leaves_a_cut_export_as_it_is(tmp_path):
    """An export of another step than the one whose export was cut short (an older step file,
    where last.pt is damaged) has not made that step's mesh: the run stays as it was."""
    from dreamtext.runstatus import finish_cut_export

    ws = tmp_path / "run"
    status = _cut_export_status(ws)
    assert not finish_cut_export(ws, 2)
    assert json.loads((ws / "status.json").read_text()) == status
