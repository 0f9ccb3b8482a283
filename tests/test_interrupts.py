"""Ctrl-C / SIGTERM outside the training loops: a signal whose KeyboardInterrupt a library
swallowed is still recorded, and a write can hold signals back until it is whole."""

import signal

import pytest

from dreamtext.interrupts import (
    StepStopped,
    raise_if_stop_in_step,
    raise_if_stop_requested,
    signals_held,
    sigterm_interrupts,
    stop_on_signal,
    stop_requested,
)


class _SwallowsASignal:
    """A finalizer the signal lands in: the handler's KeyboardInterrupt is raised inside
    ``__del__``, which Python prints as "Exception ignored" and drops."""

    def __del__(self):
        signal.raise_signal(signal.SIGTERM)


pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def test_a_swallowed_signal_is_recorded_until_the_outermost_block_ends():
    with sigterm_interrupts():
        with sigterm_interrupts():  # an image run's describe stage, inside the command's block
            _SwallowsASignal()
        assert stop_requested()
    assert not stop_requested()  # the next command in this process starts afresh


def test_a_signal_swallowed_before_an_inner_block_is_still_recorded_inside_it():
    """The record holds "from the outermost such block's start": an image run's describe stage
    opens its block after a SIGTERM the command's block recorded, and must still see it."""
    with sigterm_interrupts():
        _SwallowsASignal()
        with sigterm_interrupts():  # the describe stage, after the signal was lost
            assert stop_requested()
        assert stop_requested()
    assert not stop_requested()


def test_a_signal_lost_before_a_training_loop_stops_it_after_its_first_step():
    """A SIGTERM swallowed while Stable Diffusion loaded was forgotten by the loop's handler:
    the descriptor (or text→3D) trained on to its end."""
    with sigterm_interrupts():
        _SwallowsASignal()
        with stop_on_signal() as stop:
            assert stop["stop"]


@pytest.mark.parametrize("drop", [False, True])
def test_a_held_signal_arrives_after_the_block_or_is_dropped(drop):
    done = []
    with sigterm_interrupts():
        try:
            with signals_held(drop=drop):
                signal.raise_signal(signal.SIGTERM)
                done.append("the write")  # not cut short
        except KeyboardInterrupt:
            done.append("interrupted")
    assert done == ["the write"] if drop else ["the write", "interrupted"]


def test_a_stop_in_a_training_loop_stops_the_chunks_of_its_step_and_nothing_outside_it():
    """The renderer's chunk loops call raise_if_stop_in_step: inside a training loop a first
    Ctrl-C / SIGTERM ends the step at its next chunk; outside one (an export) it is a no-op."""
    with sigterm_interrupts():
        with stop_on_signal():
            raise_if_stop_in_step()  # nothing asked yet
            signal.raise_signal(signal.SIGTERM)
            with pytest.raises(StepStopped):
                raise_if_stop_in_step()
        raise_if_stop_in_step()  # the loop is over: its flag no longer applies


def _run_to_export(tmp_path):
    """A run folder that ``export`` accepts before it loads the libraries (its checkpoint is
    read only after them)."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"not read before the libraries load")
    return run


def test_a_sigterm_while_the_libraries_load_is_an_interrupt_that_leaves_nothing(tmp_path):
    """Loading torch and diffusers takes seconds, before the command's own SIGTERM handler can
    be set (it imports torch): a SIGTERM then killed the process with no line (exit -15) and
    left an export's progress record, written before those imports, for the viewer to show.
    Here the libraries' loading is held (a stand-in that says so in a file, then sleeps) and
    SIGTERM sent once it is: exit 130, the export's interrupted line, the record removed. The
    signal waits for the stand-in, not for a guessed time: torch's own import, which on a loaded
    machine takes ten times as long, is not what this test interrupts."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    from dreamtext.exportprogress import PROGRESS_FILE

    run = _run_to_export(tmp_path)
    loading = tmp_path / "loading"
    code = (
        "import pathlib, sys, time\n"
        "import dreamtext.cli as cli\n"
        f"cli.quiet_libraries = lambda: pathlib.Path({str(loading)!r}).touch() or time.sleep(900)\n"
        f"sys.exit(cli.main(['export', '--workspace', {str(run)!r}]))\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 600  # torch's import: 3 s idle, a minute or more loaded
        while not loading.exists() and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        assert loading.exists(), "the libraries did not load within 10 minutes"
        assert (run / PROGRESS_FILE).exists()
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err.decode()
    assert err.decode().strip().splitlines()[-1].startswith("dreamtext export: interrupted")
    assert "Traceback" not in err.decode()
    assert not (run / PROGRESS_FILE).exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_while_torch_imports_waits_for_the_import_then_is_one_line(tmp_path, signum):
    """A KeyboardInterrupt raised while torch's C++ ran Python in its import (its autograd
    init) could not unwind through it: the process aborted, exit -6, with pybind11's
    "terminate called" and a C++ trace (seen 1 in ~35 Ctrl-Cs a second into `dreamtext text`).
    A first signal during torch's import is raised once the import is done. Here torch's import
    is held (a finder that says so in a file, sleeps, then says it went on) and the signal sent
    while it is: the import finishes, then exit 130 and one line."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    run = _run_to_export(tmp_path)
    held, went_on = tmp_path / "held", tmp_path / "went_on"
    code = (
        "import importlib.abc, pathlib, sys, time\n"
        "class Held(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch':\n"
        f"            pathlib.Path({str(held)!r}).touch(); time.sleep(3)\n"
        f"            pathlib.Path({str(went_on)!r}).touch()\n"
        "sys.meta_path.insert(0, Held())\n"
        "import dreamtext.cli as cli\n"
        f"sys.exit(cli.main(['export', '--workspace', {str(run)!r}]))\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_sigint_as_in_a_terminal,
    )
    try:
        deadline = time.monotonic() + 600
        while not held.exists() and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        process.send_signal(signum)
        _, err = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err.decode()
    assert err.decode() == "dreamtext export: interrupted; run the same command again\n"
    assert went_on.exists()  # the import was not cut


def _sigint_as_in_a_terminal() -> None:
    """conftest's ``ctrl_c_as_in_a_terminal`` for a child process (its ``preexec_fn``)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _import_that_a_signal_lands_in(signum, then):
    """A stand-in for the libraries' loading (``quiet_libraries``) that a signal lands in:
    ``then`` is what the library being imported made of its ``KeyboardInterrupt``."""

    def loading():
        try:
            signal.raise_signal(signum)
        except KeyboardInterrupt:
            if then is not None:
                raise then from None

    return loading


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
@pytest.mark.parametrize(
    "then",
    [
        ImportError("numpy._core.multiarray failed to import"),  # torch importing numpy
        RuntimeError("Failed to import diffusers.pipelines"),  # diffusers' lazy modules
        None,  # swallowed: the export went on to read the checkpoint
    ],
    ids=["ImportError", "RuntimeError", "swallowed"],
)
def test_an_error_or_nothing_after_a_signal_while_the_libraries_load_is_that_interrupt(
    tmp_path, monkeypatch, capsys, signum, then
):
    """A SIGTERM (or Ctrl-C) that lands while torch imports numpy, or diffusers a pipeline,
    became that library's ImportError or RuntimeError, printed as a traceback, or was lost and
    the command ran on. Either way it is the interrupt: exit 130, one line, the export's
    progress record removed."""
    from dreamtext import cli
    from dreamtext.exportprogress import PROGRESS_FILE

    run = _run_to_export(tmp_path)
    monkeypatch.setattr(cli, "quiet_libraries", _import_that_a_signal_lands_in(signum, then))
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    assert cli.main(["export", "--workspace", str(run)]) == cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "dreamtext export: interrupted; run the same command again\n"
    assert not (run / PROGRESS_FILE).exists()
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # put back


def test_an_error_while_the_libraries_load_without_a_signal_is_still_raised(tmp_path, monkeypatch):
    """Only an error after a signal is taken for the interrupt: a broken install is a bug."""
    from dreamtext import cli

    def broken():
        raise ImportError("numpy._core.multiarray failed to import")

    monkeypatch.setattr(cli, "quiet_libraries", broken)
    with pytest.raises(ImportError, match="multiarray"):
        cli.main(["export", "--workspace", str(_run_to_export(tmp_path))])


def _started_as(command: str) -> str:
    """Python that starts ``command`` as it starts: the ``dreamtext`` console script's entry
    point (read from pyproject.toml) imported and called, or ``python -m MODULE`` by runpy,
    which is what ``-m`` runs."""
    import re
    from pathlib import Path

    if command == "dreamtext":
        root = Path(__file__).resolve().parents[1]
        scripts = (root / "pyproject.toml").read_text().split("[project.scripts]")[1]
        module, function = re.search(r'^dreamtext = "(.+):(.+)"$', scripts, re.M).groups()
        return f"sys.exit(getattr(importlib.import_module({module!r}), {function!r})())\n"
    module = command.removeprefix("python -m ")
    return f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"


@pytest.mark.parametrize("command", ["dreamtext", "python -m dreamtext", "python -m dreamtext.cli"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_while_python_imports_the_command_is_one_line(signum, command):
    """Python imports ``dreamtext.cli`` before ``main`` can set a handler: a SIGTERM then killed
    the ``dreamtext`` command with no line (exit -15), a Ctrl-C printed a traceback. Here the
    signal lands in that import (in ``dreamtext.errors``), in a process started as the command
    starts: ``python -m dreamtext.cli`` ran the module's imports before any handler too."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = (
        "import importlib, runpy, signal, sys\n"
        "class LandsInTheImport:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'dreamtext.errors':\n"
        f"            signal.raise_signal({int(signum)})\n"
        "sys.meta_path.insert(0, LandsInTheImport())\n"
        "sys.argv = ['dreamtext', 'export']\n" + _started_as(command)
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_sigint_as_in_a_terminal,
    )
    assert (done.returncode, done.stderr) == (130, "dreamtext: interrupted\n")


def test_a_second_signal_in_a_training_loop_interrupts_at_once():
    """The first Ctrl-C / SIGTERM in a training loop only asks it to stop after its step; a
    second one does not wait for that (stop_on_signal: "a second Ctrl-C interrupts at once")."""
    with sigterm_interrupts(), stop_on_signal() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop["stop"]  # the first is a request, no exception
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_machines_stop_sent_twice_in_a_training_loop_still_saves_the_step(signum):
    """A SLURM task's time limit or scancel reaches its step twice, milliseconds apart (its
    slurmstepd's SIGTERM, then its srun's): the second interrupted at once, in the checkpoint
    of the first, and the run lost every step since its last periodic checkpoint. Only a
    Ctrl-C typed again skips the checkpoint."""
    other = signal.SIGTERM if signum == signal.SIGHUP else signal.SIGHUP
    with sigterm_interrupts(), stop_on_signal() as stop:
        try:
            for sent in (signum, signum, other):
                signal.raise_signal(sent)
        except KeyboardInterrupt:
            pytest.fail(f"{signal.Signals(sent).name} again interrupted the step's checkpoint")
        assert stop["stop"]  # the loop saves its step and stops, as after one
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)


def assert_a_stop_again_is_dropped_and_ctrl_c_is_not() -> None:
    """While a stop is under way, a SIGTERM or SIGHUP sent again raises nothing (a scheduler's
    repeat of the same stop), and Ctrl-C again stops at once."""
    try:
        for sent in (signal.SIGTERM, signal.SIGHUP):
            signal.raise_signal(sent)
    except KeyboardInterrupt:
        pytest.fail(f"{signal.Signals(sent).name} again interrupted the stop")
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C again: at once
        signal.raise_signal(signal.SIGINT)


def test_a_machines_stop_sent_again_while_the_command_stops_is_not_raised_again():
    """After the first SIGTERM's interrupt (outside a training loop, or after the loop's stop),
    the batch writes the line's record, gives its lock back and prints its summary: a second
    SIGTERM there (a SLURM task's srun passing on the stop its step had already) raised again,
    and the line had no record, its lock stayed, and the batch said it had not started it."""
    for in_loop in (False, True):
        with sigterm_interrupts():
            if in_loop:  # the loop stops by raising (TrainingInterrupted) after its checkpoint
                with pytest.raises(StepStopped), stop_on_signal():
                    signal.raise_signal(signal.SIGTERM)
                    raise_if_stop_in_step()
            else:
                with pytest.raises(KeyboardInterrupt):
                    signal.raise_signal(signal.SIGTERM)
            assert_a_stop_again_is_dropped_and_ctrl_c_is_not()
        with sigterm_interrupts(), pytest.raises(KeyboardInterrupt):  # the next command's
            signal.raise_signal(signal.SIGTERM)


def test_a_machines_stop_noted_after_complete_work_is_not_raised_again_as_it_stops():
    """A SIGTERM after a batch line's work was complete is noted (work_complete), and the next
    piece of work (more_work) takes it as the stop: the batch starts no next line and writes
    its summary. The second SIGTERM of that stop (a SLURM task's srun passing on what its step
    had) raised there, as a new stop would, and cut the summary short."""
    from dreamtext.__main__ import work_complete
    from dreamtext.interrupts import more_work

    with sigterm_interrupts():
        work_complete()
        signal.raise_signal(signal.SIGTERM)  # noted: the line's files are in place
        more_work()
        assert stop_requested()
        assert_a_stop_again_is_dropped_and_ctrl_c_is_not()


def test_a_stop_after_a_training_loops_last_look_is_the_commands_stop():
    """A SIGTERM after the loop's last look at its flag (as it closes its bar and log) is on
    the flag after the block, for the loop to act on, and recorded as the command's stop: work
    that follows without reading the flag (an export: raise_if_stop_requested) stops, and the
    SIGTERM sent again (a SLURM task's srun passing it on) is that stop, not raised into the
    checkpoint the loop saves for it. Before, the run went on to its final preview and export,
    and the stop sent again was the first to interrupt anything."""
    with sigterm_interrupts():
        with stop_on_signal() as stop:
            signal.raise_signal(signal.SIGTERM)  # the loop has ended: nothing reads the flag
        assert stop["stop"] and stop_requested()
        signal.raise_signal(signal.SIGTERM)  # not raised
        with pytest.raises(KeyboardInterrupt):
            raise_if_stop_requested()


def test_a_late_stop_of_a_loop_outside_a_command_is_not_kept_for_the_next_loop():
    """A training loop run outside a command (the Python API: train() called twice, no
    sigterm_interrupts) that a SIGTERM stopped after its last look: the stop is that loop's
    (on its flag), not recorded for the process, so the next loop starts unstopped."""
    with stop_on_signal() as stop:
        signal.raise_signal(signal.SIGTERM)
    assert stop["stop"] and not stop_requested()
    with stop_on_signal() as again:
        assert not again["stop"]


def test_an_interrupt_in_the_export_says_so_with_its_step_and_checkpoint():
    from pathlib import Path

    from dreamtext.interrupts import TrainingInterrupted

    saved = Path("w") / "checkpoints" / "last.pt"
    assert str(TrainingInterrupted(7, saved)) == f"interrupted after step 7; saved {saved}"
    in_export = TrainingInterrupted(7, saved, in_export=True)
    assert str(in_export) == f"interrupted in the export, after step 7; saved {saved}"
    stage = TrainingInterrupted(3, saved, stage="descriptor training")
    assert str(stage) == f"descriptor training interrupted after step 3; saved {saved}"


@pytest.mark.parametrize("block", [sigterm_interrupts, stop_on_signal, signals_held])
def test_each_block_gives_back_the_handlers_it_found(block):
    """A library caller's own SIGINT / SIGTERM handlers are theirs again after the block."""

    def mine(signum, frame):
        return None

    previous = {sig: signal.signal(sig, mine) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with block():
            assert signal.getsignal(signal.SIGTERM) is not mine
        assert signal.getsignal(signal.SIGINT) is mine
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def test_a_resumed_log_keeps_its_records_up_to_the_checkpoints_step(tmp_path):
    """truncate_log(log, 3): the records of steps 1 to 3 stay (the checkpoint holds step 3),
    those of 4 and 5 go, as does a torn last line; a record without a step stays."""
    import json

    from dreamtext.interrupts import truncate_log

    log = tmp_path / "log.jsonl"
    lines = [json.dumps({"step": n, "loss": n / 10}) for n in range(1, 6)]
    note = json.dumps({"event": "started"})
    log.write_text("\n".join([note, *lines]) + '\n{"step": 6, "lo', encoding="utf-8")
    truncate_log(log, 3)
    assert log.read_text(encoding="utf-8") == "".join(f"{x}\n" for x in [note, *lines[:3]])


def test_a_log_line_that_is_json_but_not_an_object_is_dropped(tmp_path):
    """truncate_log keeps whole JSON objects only: a line that parses as a number or a list
    (a torn record's digits) is dropped, not a traceback on every resume."""
    import json

    from dreamtext.interrupts import truncate_log

    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1}\n7\n[2, 3]\n{"step": 2}\n', encoding="utf-8")
    truncate_log(log, 1)
    assert [json.loads(line) for line in log.read_text().splitlines()] == [{"step": 1}]


@pytest.mark.parametrize(
    "tail",
    ['{"step": 6, "lo', "\0" * 5000, '{"step": 4}\n{"step": 5}\n\0\0\0', "\n\n7\n", ""],
)
def test_a_resumed_log_loses_only_its_damaged_or_later_tail(tmp_path, tail):
    """truncate_log(log, 3) cuts whatever follows the record of step 3: records of later steps,
    a torn last line, a NUL tail (a node's crash), blank lines and stray JSON; a last record
    that lost only its newline gets it back, as the resumed run appends after it."""
    import json

    from dreamtext.interrupts import truncate_log

    records = "".join(json.dumps({"step": n, "loss": n / 10}) + "\n" for n in range(1, 4))
    log = tmp_path / "log.jsonl"
    log.write_text(records + tail, encoding="utf-8")
    truncate_log(log, 3)
    assert log.read_text(encoding="utf-8") == records
    log.write_text(records[:-1], encoding="utf-8")
    truncate_log(log, 3)
    assert log.read_text(encoding="utf-8") == records
    log.write_text(tail, encoding="utf-8")
    truncate_log(log, 3)
    assert log.read_text(encoding="utf-8") == ""


def test_a_resume_leaves_a_clean_log_untouched_and_cuts_a_tail_in_place(tmp_path):
    """Every --resume rewrote the whole log.jsonl (0.9 s and 37 MB at 100,000 lines) even where
    it had nothing to drop. A clean log now keeps its file, bytes and time; a log with a tail
    to drop is cut where it stands (the same file), not copied."""
    import json
    import os

    from dreamtext.interrupts import truncate_log

    log = tmp_path / "log.jsonl"
    records = "".join(json.dumps({"step": n, "loss": n / 10}) + "\n" for n in range(1, 2001))
    log.write_text(records, encoding="utf-8")
    os.utime(log, ns=(1_000_000_000, 1_000_000_000))
    before = log.stat()
    truncate_log(log, 2000)
    after = log.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )
    with open(log, "a", encoding="utf-8") as f:
        f.write('{"step": 2001}\n{"step": 2002, "lo')
    truncate_log(log, 2000)
    assert log.stat().st_ino == before.st_ino
    assert log.read_text(encoding="utf-8") == records


def test_a_record_without_a_step_among_those_dropped_stays(tmp_path):
    """A record without a step counts as of step 0 wherever it is (truncate_log's rule before
    it read from the end): one among the records past the step stays, in its place."""
    from dreamtext.interrupts import truncate_log

    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"note": "x"}\n{"step": 3}\n{"step', encoding="utf-8")
    truncate_log(log, 1)
    assert log.read_text(encoding="utf-8") == '{"step": 1}\n{"note": "x"}\n'


@pytest.mark.parametrize("block", [1, 2, 5, 16, 64])
def test_a_log_read_from_its_end_in_small_blocks_is_cut_as_one_read_whole(
    tmp_path, monkeypatch, block
):
    """truncate_log reads the log 64 KiB at a time from its end back: a record straddling two
    blocks, a block that starts at a newline or at the file's second byte, cut as a log read at
    once is (small blocks stand in for a log of thousands of records)."""
    import json

    from dreamtext import interrupts
    from dreamtext.interrupts import truncate_log

    monkeypatch.setattr(interrupts, "LOG_BLOCK_BYTES", block)
    lines = [json.dumps({"step": n, "loss": n / 10}) + "\n" for n in range(1, 9)]
    log = tmp_path / "log.jsonl"
    for step in (1, 4, 8):
        log.write_text("".join(lines) + '{"step": 9, "lo', encoding="utf-8")
        truncate_log(log, step)
        assert log.read_text(encoding="utf-8") == "".join(lines[:step]), step
    log.write_text("".join(lines) + "\0" * 40, encoding="utf-8")
    truncate_log(log, 8)
    assert log.read_text(encoding="utf-8") == "".join(lines)
    log.write_text("".join(lines[:3]) + '{"note": "x"}\n' + "".join(lines[3:]), encoding="utf-8")
    truncate_log(log, 2)
    assert log.read_text(encoding="utf-8") == "".join(lines[:2]) + '{"note": "x"}\n'


@pytest.mark.parametrize("step", ['"4"', "null", "[4]"])
def test_a_log_record_whose_step_is_no_number_is_dropped_not_a_traceback(tmp_path, step):
    """A record whose step is a string, null or a list (a log edited by hand, or by another
    tool) is dropped from the tail a resume cuts, as a torn line is; comparing it with the
    checkpoint's step was a TypeError traceback on every resume."""
    from dreamtext.interrupts import truncate_log

    log = tmp_path / "log.jsonl"
    log.write_text(f'{{"step": 1}}\n{{"step": {step}}}\n', encoding="utf-8")
    truncate_log(log, 1)
    assert log.read_text(encoding="utf-8") == '{"step": 1}\n'


@pytest.mark.parametrize("tail", ["\0", "{", "\n", "7"])
def test_a_one_byte_tail_after_the_kept_records_is_cut(tmp_path, tail):
    """A tail of one byte (a NUL, a torn record's brace, a blank line) is cut like a longer one:
    left, the resumed run's first record was appended to it, '{{"step": 4, ...' lost."""
    from dreamtext.interrupts import truncate_log

    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n' + tail, encoding="utf-8")
    truncate_log(log, 2)
    assert log.read_text(encoding="utf-8") == '{"step": 1}\n{"step": 2}\n'
