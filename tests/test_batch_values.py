"""`dreamtext batch`: values the other batch tests leave open (the SLURM task a record names,
the summary's counts, exit statuses, lock arithmetic), each derived by hand or from SLURM's
documentation."""

import errno
import json
import os
import re
import shlex
import time
from pathlib import Path

import pytest
import torch

import dreamtext.batch as batch
import dreamtext.models as models
from dreamtext.batch import Entry
from dreamtext.config import TrainConfig


@pytest.fixture(autouse=True)
def outside_slurm(monkeypatch):
    for name in list(os.environ):
        if name.startswith("SLURM_"):
            monkeypatch.delenv(name)


def test_an_array_task_is_named_by_its_array_job_not_its_own_job_id(monkeypatch):
    """In a job array every task has its own SLURM_JOB_ID (1237 here) and shares the array's
    SLURM_ARRAY_JOB_ID (1234): squeue, sacct and scancel name the task 1234_3, and only that
    name is the same for the array's tasks and across a requeue."""
    monkeypatch.setenv("SLURM_JOB_ID", "1237")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "1234")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert batch.slurm_task() == ("1234_3", 0)


def test_a_first_attempt_without_slurm_restart_count_is_restart_0(monkeypatch):
    """SLURM sets SLURM_RESTART_COUNT only once a job has been restarted: a task's first
    attempt has none, and must not take itself for a requeued one."""
    monkeypatch.setenv("SLURM_JOB_ID", "55")
    assert batch.slurm_task() == ("55", 0)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert batch.slurm_task() == ("55", 2)


@pytest.mark.parametrize("count", ["x", "-1", "\u00b2"])  # ² is a digit to str.isdigit, not int
def test_a_slurm_restart_count_that_is_no_number_of_restarts_is_refused(monkeypatch, count):
    """A count int() cannot read (SLURM_RESTART_COUNT=² passed str.isdigit) was a ValueError
    traceback: it is the one line that says to unset it."""
    from dreamtext.errors import DreamtextError

    monkeypatch.setenv("SLURM_JOB_ID", "55")
    monkeypatch.setenv("SLURM_RESTART_COUNT", count)
    with pytest.raises(DreamtextError, match="not a number of restarts"):
        batch.slurm_task()


def _row(status, error=None, stopped=False, **more):
    return {
        "line": 1,
        "status": status,
        "error": error,
        "stopped_batch": stopped,
        "seconds": 1.0,
        "its": None,
        "gpu_mem_mib": None,
        "workspace": "a",
        **more,
    }


@pytest.mark.parametrize(
    ("rows", "code"),
    [
        ([_row("finished"), _row("skipped")], 0),
        # a line whose lock another worker took over stopped alone: not a Ctrl-C
        ([_row("finished"), _row("interrupted", "lock taken over by n1 pid 4 (a.lock)")], 0),
        ([_row("finished"), _row("failed", "ValueError: x")], 1),
        # a failed line whose record was skipped for its lock is not a failure of this worker's
        ([_row("skipped", "claimed by n1 pid 4 since t (a.lock)")], 0),
        # CUDA's own error stops the batch: a failed line, not a full disk
        ([_row("failed", "AcceleratorError: CUDA error: an illegal memory access", True)], 1),
        ([_row("finished"), _row("failed", "OSError: [Errno 28] No space left", True)], 2),
        ([_row("failed", "OSError: [Errno 28] No space", True), _row("interrupted")], 130),
        ([_row("failed", "ValueError: x"), _row("interrupted", None, True)], 130),
    ],
)
def test_the_exit_status_says_what_stopped_the_batch(rows, code):
    """130: a Ctrl-C or SIGTERM; 2: a file-system stop; 1: a failed line; else 0."""
    assert batch.exit_code(rows) == code


def _lock_file(path, age=0.0, **info):
    path.write_text(json.dumps({"host": "node1", "pid": 1, "started": "x", "token": "t", **info}))
    then = time.time() - age
    os.utime(path, (then, then))


def test_a_lock_released_while_its_line_waits_for_it_has_the_line_tried_again(
    tmp_path, monkeypatch
):
    """The lock looked abandoned (30 s without a refresh, 3 × 5 s), and is released while this
    worker waits for --lock-timeout: the line is tried again (its claim then skips it where its
    holder finished it), not left as held."""
    lock_file = tmp_path / "a.lock"
    _lock_file(lock_file, age=30, refresh_s=5)
    entry = Entry(1, "a", "text", "a", tmp_path / "a")
    monkeypatch.setattr(batch.time, "sleep", lambda _: lock_file.unlink())
    assert batch.wait_for_abandoned_lock(entry, 600) is True


def test_ten_lines_not_started_are_all_named_with_no_more():
    """NOT_STARTED_SHOWN = 10 line numbers are named: ten lines are named whole, with no
    'and 0 more'; eleven name ten and 'and 1 more'."""
    entries = [Entry(n, "", "text", "", Path()) for n in range(1, 12)]
    named = ", ".join(str(n) for n in range(1, 11))
    assert batch.not_started_line(entries[:10], False).startswith(
        f"batch: 10 lines not started (lines {named}); run the same command again to start them "
    )
    assert batch.not_started_line(entries, False).startswith(
        f"batch: 11 lines not started (lines {named} and 1 more); "
    )


def test_one_line_not_started_under_overwrite_is_it_not_them():
    entry = Entry(4, "", "text", "", Path())
    line = batch.not_started_line([entry], True)
    assert line.startswith("batch: 1 line not started (line 4); run the same command again with ")
    assert "--overwrite to train it anew" in line and "them" not in line


@pytest.mark.parametrize(
    ("row", "cell"),
    [
        (_row("failed", "x", phase="descriptor"), "failed in descriptor"),
        (_row("interrupted", None, phase="train"), "interrupted in train"),
        # a finished run's phase is its last stage: not named
        (_row("finished", phase="export"), "finished"),
        (_row("skipped", "claimed by x", phase="train"), "skipped"),
        (_row("finished", continued_from=60), "finished (from step 60)"),
        (_row("finished", continued_from=0), "finished (from step 0)"),
        (_row("failed", "x", continued_from=60), "failed"),
    ],
)
def test_the_status_cell_names_the_stage_a_run_ended_in(row, cell):
    row = {"phase": None, "continued_from": None, **row}
    table = batch.summary_table([row]).splitlines()
    assert re.split(r"\s{2,}", table[1])[1] == cell


def test_a_batch_log_that_can_be_read_but_not_written_is_refused(tmp_path, monkeypatch):
    """A batch.jsonl of mode 0444 (another user's, a chmod a-w): readable, not writable. (Root
    may write any file: the permission is the one os.access answers.)"""
    log = tmp_path / "batch.jsonl"
    log.write_text("")
    real = os.access

    def access(path, mode):
        if Path(path) == log:
            return not mode & os.W_OK
        return real(path, mode)

    monkeypatch.setattr(batch.os, "access", access)
    with pytest.raises(batch.DreamtextError, match=r"^cannot write .*batch.jsonl"):
        batch.check_batch_log(log)


def _requeued(monkeypatch, restarts):
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    monkeypatch.setenv("SLURM_RESTART_COUNT", str(restarts))


def test_a_requeued_task_keeps_a_line_its_earlier_self_recorded_before_records_had_a_step(
    tmp_path, monkeypatch
):
    """A batch.jsonl record of an earlier dreamtext, written before records had ``step``: an
    interrupted attempt of this task before its requeue counts as trained, as it did before
    (:func:`dreamtext.batch._trained_in`), so --overwrite keeps its run."""
    _requeued(monkeypatch, 1)
    root = tmp_path / "root"
    root.mkdir()
    share = [Entry(1, "a", "text", "a", root / "a"), Entry(2, "b", "text", "b", root / "b")]
    old = {"workspace": "a", "slurm": "77_0", "slurm_restart": 0, "status": "interrupted"}
    lost = {**old, "workspace": "b", "error": "lock taken over by n2 pid 9 (b.lock)"}
    lines = [json.dumps({**old, "error": None}), json.dumps(lost)]
    (root / "batch.jsonl").write_text("\n".join(lines) + "\n")
    # b's attempt lost its lock to another worker: b's run is that worker's, not this task's
    assert batch.requeued_task_runs(root / "batch.jsonl", share, root) == {root / "a"}


def test_a_finished_run_without_checkpoints_left_is_not_continued_from_its_step(tmp_path):
    """continued_step: a run finished at step 4 whose checkpoints were removed (to save space)
    has nothing to go on from: --iters 6 trains it from scratch, so the batch must not say
    'finished at step 4; continuing' nor record continued_from 4."""
    workspace = tmp_path / "a_red_cube"
    workspace.mkdir()
    done = {"state": "finished", "step": 4, "iters": 4, "phase": "export"}
    (workspace / "status.json").write_text(json.dumps(done))
    assert batch.continued_step(workspace, 6) is None
    (workspace / "checkpoints").mkdir()
    (workspace / "checkpoints" / "last.pt").write_bytes(b"a checkpoint")
    assert batch.continued_step(workspace, 6) == 4


class _Bar:
    def set_postfix_str(self, _):
        pass

    def update(self, _):
        pass


def test_a_retried_held_line_that_stops_the_batch_retries_no_other_line(tmp_path, monkeypatch):
    """Two lines skipped for locks that looked abandoned are come back to after the share; the
    first one retried meets a full disk, which stops the batch: the second is neither waited
    for nor tried (it would fail the same way)."""
    share = [Entry(n, f"p{n}", "text", f"p{n}", tmp_path / f"p{n}") for n in (1, 2)]
    tried = []

    def attempt(entry, cfg):
        tried.append(entry.line)
        again = tried.count(entry.line) > 1
        if not again:
            return {"status": "skipped", "error": "claimed by n1 pid 4", "stopped_batch": False}
        return {"status": "failed", "error": "OSError: [Errno 28] full", "stopped_batch": True}

    waited = []
    monkeypatch.setattr(
        batch, "wait_for_abandoned_lock", lambda entry, timeout: waited.append(entry.line) or True
    )
    monkeypatch.setattr(batch, "stop_requested", lambda: False)
    records, not_reached = [], []
    options = batch.BatchOptions(root=tmp_path)
    run = (share, [None, None], records, attempt, _Bar(), options, tmp_path, None, not_reached)
    run = (*run, tmp_path / "list.txt")
    batch._run_share(*run)
    assert tried == [1, 2, 1] and waited == [1]
    assert [r["status"] for r in records] == ["failed", "skipped"]
    assert not_reached == share[1:]  # held, and not come back to


def test_a_finished_run_with_other_training_and_export_settings_is_pointed_at_overwrite(
    tmp_path, capsys
):
    """A finished run skipped with another --seed and another export resolution: a re-export
    cannot apply the seed, so the advice is --overwrite, not the export command."""
    from dreamtext.config import config_to_dict

    root = tmp_path / "root"
    workspace = root / "a_red_cube"
    (workspace / "mesh").mkdir(parents=True)
    (workspace / "mesh" / "mesh.glb").write_bytes(b"glTF")
    (workspace / "status.json").write_text(json.dumps({"state": "finished", "step": 20}))
    entry = Entry(1, "a red cube", "text", "a red cube", workspace)
    flags = {"iters": 20, "guidance": {"model": "builtin:shapes"}}
    saved = config_to_dict(batch.entry_config(entry, flags, None, None))
    (workspace / "config.json").write_text(json.dumps(saved))
    other = {**flags, "seed": saved["seed"] + 1, "export_options": {"resolution": 64}}
    cfg = batch.entry_config(entry, other, None, None)
    assert batch.run_entry(entry, cfg, batch.BatchOptions(root=root), root, None)["status"] == (
        "skipped"
    )
    err = capsys.readouterr().err.strip().splitlines()
    own = f"`dreamtext text 'a red cube' --workspace {shlex.quote(str(workspace))} --overwrite`"
    assert len(err) == 1 and err[0].endswith(
        f"; skipped, {own}, with its other text→3D flags, trains it again with these"
    )
    assert "export_options.resolution" in err[0] and "seed " in err[0]


def _finished_run(root, prompt="a red cube"):
    from dreamtext.config import config_to_dict

    workspace = root / "a_red_cube"
    (workspace / "mesh").mkdir(parents=True)
    (workspace / "mesh" / "mesh.glb").write_bytes(b"glTF")
    (workspace / "status.json").write_text(json.dumps({"state": "finished", "step": 20}))
    entry = Entry(1, prompt, "text", prompt, workspace)
    flags = {"iters": 20, "guidance": {"model": "builtin:shapes"}}
    cfg = batch.entry_config(entry, flags, None, None)
    (workspace / "config.json").write_text(json.dumps(config_to_dict(cfg)))
    return entry, cfg


@pytest.mark.parametrize("began", [False, True])
def test_a_ctrl_c_under_overwrite_says_whether_the_new_run_had_begun(
    tmp_path, monkeypatch, capsys, began
):
    """--overwrite, Ctrl-C: before the new run wrote its status.json (the model loading) the
    folder still holds the old run, which only --overwrite replaces; after, a rerun without
    --overwrite goes on with the new one (here from its start: it saved no checkpoint)."""
    root = tmp_path / "root"
    entry, cfg = _finished_run(root)
    before = json.loads((entry.workspace / "status.json").read_text())

    def stopped(*args, **kwargs):
        if began:
            new = {"state": "interrupted", "step": 3, "started": "2099-01-01T00:00:00+00:00"}
            (entry.workspace / "status.json").write_text(json.dumps(new))
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "run_one_retrying_stale", stopped)
    options = batch.BatchOptions(root=root, overwrite=True)
    record = batch.run_entry(entry, cfg, options, root, None, before)
    assert (record["status"], record["error"]) == ("interrupted", None)
    said = capsys.readouterr().err
    anew = "interrupted before its --overwrite began; run the batch again with --overwrite"
    assert (anew in said) is not began


def test_the_wait_for_an_abandoned_lock_ends_at_the_timeout_not_a_refresh_later(
    tmp_path, monkeypatch
):
    """Not refreshed for 30 s of a 32 s --lock-timeout, by a holder refreshing every 5 s: the
    worker looks again 2 s later (plus its 0.05 s margin), when the lock has timed out, not 5 s
    later."""
    lock_file = tmp_path / "a.lock"
    _lock_file(lock_file, age=30, refresh_s=5)
    entry = Entry(1, "a", "text", "a", tmp_path / "a")
    naps = []

    def nap(seconds):
        naps.append(seconds)
        then = time.time() - 30 - seconds
        os.utime(lock_file, (then, then))

    monkeypatch.setattr(batch.time, "sleep", nap)
    assert batch.wait_for_abandoned_lock(entry, 32) is True
    assert len(naps) == 1 and naps[0] == pytest.approx(2.05, abs=0.2)


@pytest.mark.parametrize("code", [errno.EACCES, errno.EPERM])
def test_a_refused_write_that_stops_the_batch_says_to_make_it_writable(tmp_path, code):
    """EACCES and EPERM are both a refused write (an ACL, a chattr +a, a root-squashed NFS
    export answer EPERM): ROOT's gets ROOT's fix, another file's that file's."""
    root = tmp_path / "root"
    at_root = OSError(code, os.strerror(code), str(root))
    assert batch.stop_fix(at_root, root).startswith(f"make {root} writable for you again")
    in_log = OSError(code, os.strerror(code), str(root / "batch.jsonl"))
    assert batch.stop_fix(in_log, root).startswith("make that file writable for you again")


def test_overwrite_of_a_run_finished_short_of_iters_is_no_continuation(
    tmp_path, monkeypatch, capsys
):
    """A run finished at step 20 with its checkpoint, and --iters 30 --overwrite: the run is
    trained anew from step 0, so the batch neither says it continues from step 20 nor records
    continued_from (the table's 'finished (from step 20)')."""
    root = tmp_path / "root"
    entry, _ = _finished_run(root)
    (entry.workspace / "checkpoints").mkdir()
    (entry.workspace / "checkpoints" / "last.pt").write_bytes(b"a checkpoint")
    flags = {"iters": 30, "guidance": {"model": "builtin:shapes"}}
    cfg = batch.entry_config(entry, flags, None, None)
    before = json.loads((entry.workspace / "status.json").read_text())
    overwrote = []
    monkeypatch.setattr(
        batch, "run_one_retrying_stale", lambda *a, **k: overwrote.append(k["overwrite"])
    )
    options = batch.BatchOptions(root=root, overwrite=True)
    record = batch.run_entry(entry, cfg, options, root, None, before)
    assert overwrote == [True]
    assert (record["status"], record["continued_from"]) == ("finished", None)
    assert "continuing to --iters" not in capsys.readouterr().err


def test_a_batch_on_device_auto_frees_cuda_memory_where_cuda_is_there(monkeypatch):
    """--device auto picks CUDA where there is a GPU: its cached blocks go back after each line,
    as with --device cuda; on a machine without one there is nothing to free."""
    from types import SimpleNamespace

    monkeypatch.setattr(batch.torch.cuda, "is_available", lambda: True)
    assert batch.runs_on_cuda(SimpleNamespace(device="auto"))
    assert batch.runs_on_cuda(SimpleNamespace(device="cuda:1"))
    assert not batch.runs_on_cuda(SimpleNamespace(device="cpu"))
    monkeypatch.setattr(batch.torch.cuda, "is_available", lambda: False)
    assert not batch.runs_on_cuda(SimpleNamespace(device="auto"))


def test_an_image_lines_record_names_the_sentence_it_learned(tmp_path):
    """batch.jsonl's ``prompt`` of an image line: the sentence DreamText learned for it, the
    line's text prompt (its ``input`` keeps the image path)."""
    from dreamtext.describe import sentence_path

    entry = Entry(1, "image:mug.png", "image", "mug.png", tmp_path / "mug")
    path = sentence_path(entry.workspace)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"sentence": "a red mug", "trained_sentence": "a <w1> mug"}')
    result = {"status": "finished", "error": None}
    record = batch._record(entry, tmp_path, None, result, False, "t", time.perf_counter())
    assert (record["prompt"], record["input"]) == ("a <w1> mug", "image:mug.png")


def test_a_record_read_while_another_worker_was_writing_it_is_read_whole(tmp_path):
    """BatchLog reads on from where it stopped: a record it met half-written (no newline yet)
    is read once its writer ends it, not lost."""
    log = tmp_path / "batch.jsonl"
    log.write_text("")
    others = batch.BatchLog(log)
    line = json.dumps({"workspace": "a", "status": "failed", "error": "CUDA error"}) + "\n"
    with open(log, "a") as f:
        f.write(line[:20])
    assert others.failed_since_start("a") is None
    with open(log, "a") as f:
        f.write(line[20:])
    assert others.failed_since_start("a") == "CUDA error"


def test_an_image_line_described_already_needs_no_clip_folder(tmp_path):
    """check_image_lines asks only image lines still to be described: a line whose sentence
    DreamText learned in an earlier batch runs on without CLIP, so a --clip folder that is not
    there does not refuse the batch."""
    from dreamtext.describe import sentence_path

    entry = Entry(1, "image:mug.png", "image", str(tmp_path / "mug.png"), tmp_path / "mug")
    path = sentence_path(entry.workspace)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"sentence": "a red mug", "trained_sentence": "a <w1> mug"}')
    clip = {"describe": {"clip": str(tmp_path / "no_clip_here")}}
    batch.check_image_lines([entry], batch.BatchOptions(root=tmp_path, image=clip), load=False)


def test_a_line_out_of_memory_outside_the_training_steps_names_the_fixes(
    tmp_path, monkeypatch, capsys
):
    """Memory that ran out while the prior loaded was recorded as a bare "MemoryError", where
    running out in a training step names what to change: both name the same fixes now."""
    import dreamtext.trainer as trainer
    from dreamtext.cli import main

    def run_out(*args, **kwargs):
        raise MemoryError()

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(trainer, "build_parts", run_out)
    Path("list.txt").write_text("a red cube\n", encoding="utf-8")
    args = ["batch", "list.txt", "--model", "builtin:shapes", "--iters", "2", "--no-export"]
    assert main([*args, "--workspace", "runs"]) == 1
    (record,) = [json.loads(line) for line in Path("runs/batch.jsonl").read_text().splitlines()]
    expected = (
        "out of memory (MemoryError); close other programs and run `dreamtext text 'a red "
        "cube' --workspace runs/a_red_cube` with its other text→3D flags"
    )
    assert record["error"] == expected
    err = capsys.readouterr().err
    assert f"batch: line 1 failed: {expected}\n" in err
    assert "Traceback" not in err


def test_a_text_lines_own_command_is_told_its_text_to_3d_flags_not_the_describe_ones(
    tmp_path, capsys
):
    """A batch takes the sentence search's flags (--noun, --descriptor-iters) for its image
    lines, and `dreamtext text` refuses them: a text line's own command was to be run "with the
    batch's other flags" (its warnings, its out-of-memory line), which with those flags is
    refused. It is told its text→3D flags, as its start-again line was; an image line still
    the batch's other flags."""
    from dreamtext.cli import main

    text = Entry(1, "a red cube", "text", "a red cube", tmp_path / "a_red_cube")
    image = Entry(2, "image:mug.png", "image", str(tmp_path / "mug.png"), tmp_path / "mug")
    assert "`, with its other text→3D flags, trains it" in batch.retrain_advice(text, "again")
    assert "`, with the batch's other flags, trains its" in batch.retrain_advice(image, "again")
    own = shlex.split(batch.line_command(text))[1:]
    assert main([*own, "--noun", "mug", "--model", "builtin:shapes"]) == 2
    assert "--noun: for --diverse's image only" in capsys.readouterr().err


@pytest.mark.parametrize("half", [False, True])
def test_a_line_out_of_the_gpus_memory_building_its_run_is_not_told_the_renders_sizes(
    tmp_path, monkeypatch, half
):
    """Out of GPU memory loading its prior or building its field, a line was told "a smaller
    --h/--w, fewer samples (...), a smaller render.grad_chunk_points", which the training steps
    use and the build does not. It is told the build's own fixes, as a restore's line: the GPU
    freed, or the prior in half precision, or the CPU (with --fp32 for a half run)."""
    import dreamtext.trainer as trainer

    def run_out(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(batch, "run_one_retrying_stale", run_out)
    monkeypatch.setattr(trainer, "memory_peak", lambda memory: 0)
    entry = Entry(1, "a red cube", "text", "a red cube", tmp_path / "a_red_cube")
    cfg = TrainConfig(prompt="a red cube", workspace=str(entry.workspace), iters=2)
    cfg.guidance.fp16 = half
    record = batch.run_entry(entry, cfg, batch.BatchOptions(root=tmp_path), tmp_path, None)
    command = f"`dreamtext text 'a red cube' --workspace {entry.workspace}`"
    fixes = "--device cpu --fp32" if half else "--fp16 (without --fp32), --device cpu"
    assert record["error"].endswith(
        f"; free the GPU of other work and run {command} with its other text→3D flags, or run "
        f"{command} with its other text→3D flags and one of: {fixes}"
    ), record["error"]
    assert "--h/--w" not in record["error"]


@pytest.mark.parametrize("trained", [False, True])
def test_a_line_out_of_memory_outside_the_steps_is_told_its_own_command_not_the_batch(
    tmp_path, monkeypatch, capsys, trained
):
    """Out of memory building its field, a line was told "run the batch again after one of: a
    smaller --h/--w, ...": the batch with --h changes it for every line it resumes or starts,
    and warns of every finished one. It names its own command, with --resume where it has a
    checkpoint (a finished run asked more --iters) and none where it has not (--resume is
    refused there), which trains it alone with the smaller size; the batch then skips it."""
    import dreamtext.trainer as trainer
    from dreamtext.cli import main

    def run_out(*args, **kwargs):
        raise MemoryError()

    monkeypatch.chdir(tmp_path)
    Path("list.txt").write_text("a red cube\n", encoding="utf-8")
    flags = ["--model", "builtin:shapes", "--no-export"]
    batch = ["batch", "list.txt", *flags, "--h", "16", "--w", "16", "--workspace", "runs"]
    if trained:
        assert main([*batch, "--iters", "2"]) == 0
    with monkeypatch.context() as m:
        m.setattr(trainer, "build_parts", run_out)
        assert main([*batch, "--iters", "4"]) == 1
    error = [json.loads(line) for line in Path("runs/batch.jsonl").read_text().splitlines()][-1]
    command = "dreamtext text 'a red cube' --workspace runs/a_red_cube" + (
        " --resume" if trained else ""
    )
    assert f" and run `{command}` with its other text→3D flags" in error["error"], error["error"]
    assert "the batch again" not in error["error"]
    assert main([*shlex.split(command)[1:], *flags, "--iters", "4", "--h", "8", "--w", "8"]) == 0
    config = json.loads(Path("runs/a_red_cube/config.json").read_text())
    assert (config["h"], config["iters"]) == (8, 4)
    status = json.loads(Path("runs/a_red_cube/status.json").read_text())
    assert (status["state"], status["step"]) == ("finished", 4)
    assert main([*batch, "--iters", "4"]) == 0
    records = [json.loads(line) for line in Path("runs/batch.jsonl").read_text().splitlines()]
    assert records[-1]["status"] == "skipped"


@pytest.mark.parametrize("where", ["build", "step"])
def test_a_line_out_of_memory_with_a_large_table_names_its_own_new_run_for_the_tables_keys(
    tmp_path, monkeypatch, capsys, where
):
    """A table that is much of what the process held (0.1 GB of 0.4) is named with its keys,
    where the line named the render's sizes alone; building the field or in a step. "in a new
    run" named no way to one: the batch run again resumes the line (its field as it started) and
    its --overwrite trains every text line again. It names the line's own `dreamtext text ...
    --overwrite` with a --config, which trains it with a smaller table."""
    from step_faults import raise_at_step

    import dreamtext.trainer as trainer
    from dreamtext.cli import main

    def run_out(*args, **kwargs):
        raise MemoryError()

    monkeypatch.chdir(tmp_path)
    with monkeypatch.context() as m:
        if where == "build":
            m.setattr(trainer, "build_parts", run_out)
        else:
            raise_at_step(m, 1, MemoryError())
        m.setattr(trainer, "memory_peak", lambda memory: 4 * 10**8, raising=False)
        Path("list.txt").write_text("a red cube\n", encoding="utf-8")
        Path("big.yaml").write_text("field:\n  log2_hashmap_size: 18\n  level_dim: 4\n")
        args = ["batch", "list.txt", "--model", "builtin:shapes", "--iters", "2", "--no-export"]
        assert main([*args, "--config", "big.yaml", "--workspace", "runs"]) == 1
    (record,) = [json.loads(line) for line in Path("runs/batch.jsonl").read_text().splitlines()]
    command = "dreamtext text 'a red cube' --workspace runs/a_red_cube --overwrite"
    assert record["error"].endswith(
        f"; or start a new run, `{command}` (with its other text→3D "
        "flags), with a --config that lowers field.log2_hashmap_size, field.num_levels or "
        "field.level_dim (the hash table, its gradient and the optimiser's state and update "
        "need at least 0.1 GB)"
    ), record["error"]
    capsys.readouterr()
    Path("small.yaml").write_text("field:\n  log2_hashmap_size: 12\n  level_dim: 2\n")
    flags = ["--model", "builtin:shapes", "--iters", "2", "--no-export", "--config", "small.yaml"]
    assert main([*shlex.split(command)[1:], *flags]) == 0
    field = json.loads(Path("runs/a_red_cube/config.json").read_text())["field"]
    assert (field["log2_hashmap_size"], field["level_dim"]) == (12, 2)


def test_a_batchs_files_in_a_group_folder_get_the_umasks_mode(tmp_path, monkeypatch):
    """A lab's batch folder (umask 002): batch.jsonl and a line's lock made by exclusive create
    were 0o644 whatever the umask, while every other file of the batch was 0o664, so a
    colleague going on with the batch was refused: "cannot write ROOT/batch.jsonl"."""

    def no_hard_links(*args, **kwargs):  # a file system without them: the exclusive create
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    old = os.umask(0o002)
    try:
        batch.append_record(tmp_path / "batch.jsonl", {"line": 1})
        monkeypatch.setattr(os, "link", no_hard_links)
        lock = batch.WorkspaceLock(tmp_path / "a_cat", timeout=600)
        assert lock.acquire()
    finally:
        os.umask(old)
    assert (tmp_path / "batch.jsonl").stat().st_mode & 0o777 == 0o664
    assert lock.path.stat().st_mode & 0o777 == 0o664
    lock.release()


def test_lines_are_checked_in_groups_of_one_config_but_prompt_and_folder():
    """The up-front checks run once per group: lines that took the batch's config form one,
    the first line's group comes first, a run's own settings that resolve to the batch's join
    the batch's group (in line order), and a run's other settings are a group of their own."""
    from dataclasses import replace

    from dreamtext.config import resolve_config

    batch_cfg = resolve_config({"prompt": "a", "workspace": "w"})
    fp16 = replace(batch_cfg, guidance=replace(batch_cfg.guidance, fp16=True))

    def line(number, cfg):
        entry = Entry(number, f"p{number}", "text", f"p{number}", Path(f"w{number}"))
        return entry, replace(cfg, prompt=entry.prompt, workspace=str(entry.workspace))

    pending = [line(1, fp16), line(2, batch_cfg), line(3, batch_cfg), line(4, fp16)]
    settings = {Path("w1"): "run A", Path("w3"): "run B", Path("w4"): "run A"}
    groups = batch.settings_groups(pending, settings)
    assert [[entry.line for entry, _ in group] for group in groups] == [[1, 4], [2, 3]]
    assert [group[0][1].guidance.fp16 for group in groups] == [True, False]


def test_a_negative_prompt_too_long_is_refused_before_the_first_model_loads(
    tiny_sd_path, tmp_path, monkeypatch, capsys
):
    """`batch list.txt --negative <5,000 characters>` said "loaded Stable Diffusion ..." (the
    first line's model, which the checks load) and only then refused the negative prompt: it
    is counted with the tokenizer read alone, before any weight loads; nothing is written."""
    from dreamtext.cli import main

    def tokenizer_only(cls, path, subfolder, **kwargs):
        if subfolder != "tokenizer":
            raise AssertionError(f"{subfolder} was loaded before the negative prompt was checked")
        return real(cls, path, subfolder, **kwargs)

    models.clear_cache()
    real = models._from_pretrained
    monkeypatch.setattr(models, "_from_pretrained", tokenizer_only)
    monkeypatch.chdir(tmp_path)
    Path("list.txt").write_text("a red cube\n", encoding="utf-8")
    args = ["batch", "list.txt", "--model", str(tiny_sd_path), "--negative", "blurry " * 800]
    assert main([*args, "--workspace", "runs"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "dreamtext: error: the negative prompt is 802 tokens, but the text encoder reads 77 "
        "(start and end included) and would cut off the rest; shorten the negative prompt"
    ]
    assert not Path("runs").exists()


@pytest.mark.parametrize(
    ("flags", "refusal"),
    [
        (
            ["--noun", "q" * 40, "--quantifier", "a", "--max-words", "0"],
            "the sentence to learn, 'An image of a <descriptor> " + "q" * 40 + "', is at least "
            "89 tokens with its view label",
        ),
        (
            ["--quantifier", "q" * 52, "--nouns", "nouns.txt"],
            f"the sentence to learn, 'An image of {'q' * 52} <descriptor> <noun>', is at least "
            "78 tokens with its view label whatever noun the search finds",
        ),
    ],
    ids=["noun", "quantifier"],
)
def test_an_image_lines_sentence_to_learn_too_long_is_refused_before_the_first_model_loads(
    tiny_sd_path, tiny_clip_path, tmp_path, monkeypatch, capsys, no_weight_loads, flags, refusal
):
    """A batch counted its text lines' prompts before the first load, not its image lines'
    sentences to learn: `batch list.txt --noun <40 pieces>` (or a --quantifier no noun of
    --nouns fits with) loaded Stable Diffusion and CLIP, trained the lines ahead, and refused
    the image line at its turn, after the sentence search. It is refused as `image` refuses
    it, by the tokenizer alone before any weight loads, naming the line; nothing is written."""
    import numpy as np
    from PIL import Image

    from dreamtext.cli import main

    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.full((48, 48, 3), 200, dtype=np.uint8)).save("mug.png")
    Path("nouns.txt").write_text("apartment building\n", encoding="utf-8")
    Path("list.txt").write_text("a red cube\nimage:mug.png\n", encoding="utf-8")
    args = ["batch", "list.txt", "--model", str(tiny_sd_path), "--clip", str(tiny_clip_path)]
    assert main([*args, *flags, "--workspace", "runs"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"dreamtext: error: list.txt: line 2: {refusal}")
    assert not Path("runs").exists()


def test_a_later_group_of_image_lines_alone_has_its_negative_prompt_checked(tiny_sd_path, tmp_path):
    """The lines' own runs group the checks by their settings: a group of image lines alone,
    after the first (a stopped image run whose config.json records another negative prompt),
    had no token check at all, and its run refused a negative prompt too long for the text
    encoder only at its turn, after the lines before it had trained. Its learned file is its
    run's to read: the negative prompt is counted with the model's tokenizer alone, as the
    image command counts it."""
    from dreamtext.config import resolve_config

    long = "a " + "blurry " * 80 + "photo"

    def config(entry, negative):
        guidance = {"model": str(tiny_sd_path), "negative": negative}
        return resolve_config(
            {"prompt": entry.prompt, "workspace": str(entry.workspace), "guidance": guidance}
        )

    text = Entry(1, "a red cube", "text", "a red cube", tmp_path / "a_red_cube")
    image = Entry(2, "image:mug.png", "image", "mug", tmp_path / "mug")
    groups = [[(text, config(text, ""))], [(image, config(image, long))]]
    with pytest.raises(batch.DreamtextError) as refusal:
        batch.check_prompt_lengths(groups, tmp_path / "prompts.txt")
    assert str(refusal.value) == (  # start, 82 words, end
        f"line 2 ({image.workspace}): the negative prompt is 84 tokens, but the text encoder "
        "reads 77 (start and end included) and would cut off the rest; shorten the negative prompt"
    )
    batch.check_prompt_lengths([groups[0], [(image, config(image, "blurry"))]], Path())


def test_the_up_front_checks_build_each_distinct_field_once(tmp_path, monkeypatch):
    """A batch's groups of settings mostly differ elsewhere than in the field (seed, guidance):
    each built a field of its own to see that its encoding runs here, 42 ms of CPU for one of
    the thesis's size, where the settings of one field give the same answer."""
    from dataclasses import replace

    import dreamtext.factory as factory
    from dreamtext.config import resolve_config

    fields = []
    real = factory.build_field
    monkeypatch.setattr(
        factory, "build_field", lambda cfg, device: fields.append(cfg) or real(cfg, device)
    )
    cfg = resolve_config({"prompt": "a red cube", "workspace": str(tmp_path / "a")})
    larger = replace(cfg.field, log2_hashmap_size=cfg.field.log2_hashmap_size + 1)
    configs = [replace(cfg, seed=seed) for seed in range(3)] + [replace(cfg, field=larger)]
    built: set[str] = set()
    for each in configs:
        batch.check_machine(each, built=built)
    assert fields == [cfg.field, larger]
    batch.check_machine(cfg)  # alone: built
    assert fields == [cfg.field, larger, cfg.field]


def learned_file(path: Path, embeds: dict) -> Path:
    from safetensors.torch import save_file

    save_file(embeds, path)
    return path


def test_a_later_models_learned_tokens_are_named_as_diffusers_names_them(tiny_sd_path, tmp_path):
    """A group whose model is not the one loaded counts its prompts with the tokenizer read
    alone and its textual_inversion file's tokens added by name: a 3-vector token reads as
    diffusers' own load_textual_inversion makes it (its prompt and its token ids)."""
    import torch
    from diffusers import StableDiffusionPipeline

    from dreamtext.guidance import GuidanceConfig
    from dreamtext.prompts import expand_tokens

    file = learned_file(tmp_path / "learned_embeds.safetensors", {"<cat-toy>": torch.randn(3, 32)})
    guidance = GuidanceConfig(model=str(tiny_sd_path), textual_inversion=str(file))
    tokenizer, expansions = models.read_text_side(guidance)
    pipe = StableDiffusionPipeline.from_pretrained(
        tiny_sd_path, safety_checker=None, requires_safety_checker=False
    )
    pipe.load_textual_inversion(str(file))
    prompt = "a photo of <cat-toy> on a red chair"
    converted = pipe.maybe_convert_prompt(prompt, pipe.tokenizer)
    assert converted == "a photo of <cat-toy> <cat-toy>_1 <cat-toy>_2 on a red chair"
    assert expand_tokens(prompt, expansions) == converted
    assert tokenizer(converted).input_ids == pipe.tokenizer(converted).input_ids


@pytest.mark.parametrize(
    ("token", "width", "refusal"),
    [
        ("<cat-toy>", 16, "textual inversion token '<cat-toy>' has width 16 but this text "
                          "encoder's is 32; it was trained for another model"),
        ("red", 32, "token 'red' is already in the tokenizer; rename the learned token"),
    ],
)  # fmt: skip
def test_a_later_models_learned_file_that_its_load_refuses_is_refused_before_any_line(
    tiny_sd_path, tmp_path, token, width, refusal
):
    """Added to the tokenizer read alone without the load's checks, such a file passed, and its
    lines' load refused it at their turn, after the lines before them had trained."""
    import torch

    from dreamtext.guidance import GuidanceConfig

    file = learned_file(tmp_path / "learned_embeds.safetensors", {token: torch.randn(1, width)})
    guidance = GuidanceConfig(model=str(tiny_sd_path), textual_inversion=str(file))
    with pytest.raises(batch.DreamtextError) as refused:
        models.read_text_side(guidance)
    assert str(refused.value) == refusal
    loaded = models.load_stable_diffusion(str(tiny_sd_path))
    with pytest.raises(batch.DreamtextError) as at_load:
        loaded.text_side(str(file))
    assert str(at_load.value) == refusal
