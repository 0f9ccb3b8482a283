"""The terminal going away (an ssh connection that drops: the kernel hangs the terminal up and
sends SIGHUP) stops a command as SIGTERM does: Python's default for SIGHUP killed it at once,
losing the steps since the last checkpoint and leaving status.json "running". Once the terminal
is gone every write to it fails (EIO), which must not turn the saved stop into a traceback;
under ``nohup`` (SIGHUP ignored) the command goes on. A Ctrl-C typed at the terminal is not for
a script's background job either, which the shell starts with it ignored."""

import contextlib
import errno
import fcntl
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dreamtext.interrupts import signals_held, sigterm_interrupts, stop_on_signal

ROOT = Path(__file__).resolve().parents[1]


def _logged_step(log: Path) -> int:
    """The last step ``log`` (log.jsonl) records, 0 for none yet."""
    step = 0
    for line in log.read_text().splitlines() if log.exists() else []:
        with contextlib.suppress(ValueError):  # a line still being written
            step = max(step, json.loads(line).get("step", 0))
    return step


def _long_run(workspace: Path) -> tuple[list[str], dict[str, str]]:
    """The arguments of a text run into ``workspace`` that trains until stopped (checkpoint_every
    1000: nothing saved but by the stop), and the environment that runs this checkout's code."""
    command = ["text", "a red cube", "--model", "builtin:shapes", "--h", "16"]
    command += ["--iters", "100000", "--no-export", "--workspace", str(workspace)]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return command, env


def _hangup_as_by_default() -> None:
    """In the command's process before it starts: SIGHUP's default action, whatever the tests
    inherited. Run under `nohup` (a CI job's shell, a detached session), they passed SIGHUP
    ignored on to the command, which then rightly went on, and the tests waited for ever."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@contextlib.contextmanager
def _killed_if_left(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """``process`` for the ``with`` block, killed and reaped if the block leaves it running (a
    wait that timed out, an assertion that failed): no run is left training after the test."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _start_long_run(workspace: Path, before: Callable[[], None]) -> subprocess.Popen:
    """:func:`_long_run` started, stdout to /dev/null and stderr a pipe, ``before`` run in its
    process before it starts (the signal dispositions it inherits)."""
    command, env = _long_run(workspace)
    return subprocess.Popen(
        [sys.executable, "-m", "dreamtext", *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=before,
    )


def _trains_past(process: subprocess.Popen, log: Path, step: int, deadline: float) -> None:
    """Wait until ``log`` (log.jsonl) records ``step``, the command training all the while
    (its stderr the failure's message if it ended), before ``deadline`` (``time.monotonic``)."""
    while _logged_step(log) < step:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)


def _on_a_terminal(
    arguments: list[str],
    env: dict[str, str],
    stderr: int | None,
    controlling: bool = True,
    program: tuple[str, ...] = ("-m", "dreamtext"),
) -> tuple[subprocess.Popen, int]:
    """``python -m dreamtext ARGUMENTS`` (``python PROGRAM ARGUMENTS``) started as an ssh
    session's command runs: the leader of
    a session of its own whose controlling terminal is a new pseudo-terminal, its stdin, stdout
    and (unless ``stderr`` is another file descriptor) stderr that terminal, 80 columns wide (on
    one of 0 columns the bar is empty). Returns the process and the terminal's master side, whose
    closing hangs the terminal up as a dropped connection does: the kernel sends the session's
    leader SIGHUP and every later write to the terminal fails with EIO. Not ``controlling``: a
    session without a controlling terminal (a disowned job's), which gets no SIGHUP. Skipped
    where there are no pseudo-terminals."""
    try:
        terminal, its_end = os.openpty()
    except OSError as error:
        pytest.skip(f"no pseudo-terminal here: {error}")
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))

    def controlled_by_the_terminal() -> None:
        _hangup_as_by_default()
        if controlling:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # stdin, the terminal: the session's own

    try:
        process = subprocess.Popen(
            [sys.executable, *program, *arguments],
            env=env,
            stdin=its_end,
            stdout=its_end,
            stderr=its_end if stderr is None else stderr,
            start_new_session=True,
            preexec_fn=controlled_by_the_terminal,
        )
    except BaseException:
        os.close(terminal)
        raise
    finally:
        os.close(its_end)
    return process, terminal


def _left_in_session(session: int) -> list[int]:
    """The processes still in session ``session`` (read from /proc; none where it is missing)."""
    left = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            # stat: "pid (comm) state ppid pgrp session ...", comm may hold spaces or ")".
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[3]) == session:
                left.append(int(entry.name))
    return left


@pytest.mark.parametrize("stderr_to", [None, "run.log"], ids=["on the terminal", "2> run.log"])
def test_the_terminal_going_away_saves_the_last_step_and_ends_with_130(tmp_path, stderr_to):
    """An ssh connection dropped while `dreamtext text ...` trains in it (its stderr on the
    terminal, or `2> run.log`): what the user finds when they log in again. The hangup is the
    kernel's (the master side of the run's controlling terminal closed), so the command gets
    SIGHUP and every write to the terminal after it fails with EIO: the bar's next redraw, the
    line saying what was saved. Exit 130 with the last step saved; status.json "interrupted"
    at that step; log.jsonl whole lines, none past it; where stderr is a file, the saved line
    in it and no traceback; nothing left running in the session."""
    workspace = tmp_path / "run"
    command, env = _long_run(workspace)
    log_file = open(tmp_path / "run.log", "wb") if stderr_to else None  # noqa: SIM115
    try:
        stderr = log_file.fileno() if log_file else None
        process, terminal = _on_a_terminal(command, env, stderr)
    finally:
        if log_file:
            log_file.close()  # the command has its own
    seen = b""
    with _killed_if_left(process):
        try:
            deadline = time.monotonic() + 240
            # checkpoint_every is 1000: until it stops, the run saves nothing.
            while _logged_step(workspace / "log.jsonl") == 0:
                assert process.poll() is None, seen.decode(errors="replace")
                assert time.monotonic() < deadline
                if select.select([terminal], [], [], 0.1)[0]:
                    seen += os.read(terminal, 65536)  # the bar, as a terminal reads it
            logged = _logged_step(workspace / "log.jsonl")
        finally:
            os.close(terminal)  # the connection drops: the terminal hangs up
        process.wait(timeout=120)
    assert _left_in_session(process.pid) == []
    assert process.returncode == 130, seen.decode(errors="replace")
    if stderr_to is None:
        assert b"it/s" in seen  # the bar was drawing on the terminal when it went away
    run_status = json.loads((workspace / "status.json").read_text())
    assert (run_status["state"], run_status["error"]) == ("interrupted", None)
    saved = json.loads((workspace / "checkpoints" / "last.step.json").read_text())["step"]
    assert saved == run_status["step"] >= logged
    log_text = (workspace / "log.jsonl").read_text()
    steps = [json.loads(line)["step"] for line in log_text.splitlines()]
    assert log_text.endswith("\n") and steps == sorted(set(steps)) and steps[-1] <= saved
    if stderr_to:
        written = (tmp_path / stderr_to).read_text()
        assert "Traceback" not in written and "Exception ignored" not in written, written
        last = f"dreamtext: interrupted after step {saved}; saved {workspace}/checkpoints/last.pt"
        lines = written.splitlines()
        assert lines and lines[-1].startswith(last), written


# `python -m dreamtext ARGS` as -m runs it (the file dreamtext/__main__.py is the module __main__)
# with one function of a later import wrapped, by an import hook, so that nothing of dreamtext is
# imported before run() starts: `python -c LAUNCHER HOOK HELD GO ARGS`. HOOK "summary": the
# export's summary, made once the run's work is complete, writes the file HELD and waits for the
# file GO; "libraries": Ctrl-C sent once the command's libraries' context (and with it main's
# last handlers) has ended, its work done.
LAUNCHER = """
import contextlib, importlib.machinery, os, runpy, signal, sys, time

hook, held, go = sys.argv.pop(1), sys.argv.pop(1), sys.argv.pop(1)
module = {"summary": "dreamtext.export", "libraries": "dreamtext.cli"}[hook]

def wrap(loaded):
    if hook == "summary":
        real = loaded.ExportResult.summary
        def summary(self):
            open(held, "w").close()
            while not os.path.exists(go):
                time.sleep(0.05)
            return real(self)
        loaded.ExportResult.summary = summary
    else:
        real = loaded.start_libraries
        @contextlib.contextmanager
        def start_libraries(args):
            with real(args):
                yield
            signal.raise_signal(signal.SIGINT)
        loaded.start_libraries = start_libraries

class Hook:
    def find_spec(self, fullname, path, target=None):
        if fullname != module:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        load = spec.loader.exec_module
        def exec_module(loaded):
            load(loaded)
            wrap(loaded)
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, Hook())
runpy.run_module("dreamtext", run_name="__main__", alter_sys=True)
"""


def _complete_run(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """The arguments of a 2-step text run into ``tmp_path / "run"`` with a small export (PLY
    alone, no turntable), and the environment that runs this checkout's code."""
    config = tmp_path / "tiny.json"
    small = {"resolution": 16, "formats": ["ply"], "video": False}
    config.write_text(json.dumps({"preview_every": 0, "export_options": small}))
    command, env = _long_run(tmp_path / "run")
    command[command.index("--iters") + 1] = "2"
    command.remove("--no-export")
    return [*command, "--config", str(config)], env


def _stdout_of(pid: int) -> str | None:
    """What process ``pid``'s stdout is (its /proc link); ``None`` once it has ended."""
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/{pid}/fd/1")
    return None


@pytest.mark.parametrize("stderr_to", [None, "run.log"], ids=["on the terminal", "2> run.log"])
def test_the_terminal_going_away_once_the_run_is_complete_changes_nothing(tmp_path, stderr_to):
    """The connection drops once the run's export has put its last file in place: status.json
    said "interrupted" in phase export of a run with every file written, and with `2> run.log`
    (status.json finished) the command exited 130 with "interrupted; run the same command
    again, with --resume if the run has a checkpoint". It ends as without the hangup: exit 0,
    status.json finished, the export's summary in run.log, nothing said of an interruption."""
    if not Path(f"/proc/{os.getpid()}/fd").exists():
        pytest.skip("no /proc here to tell when the command has handled the hangup")
    command, env = _complete_run(tmp_path)
    held, go = tmp_path / "held", tmp_path / "go"
    log_file = open(tmp_path / "run.log", "wb") if stderr_to else None  # noqa: SIM115
    try:
        stderr = log_file.fileno() if log_file else None
        program = ("-c", LAUNCHER, "summary", str(held), str(go))
        process, terminal = _on_a_terminal(command, env, stderr, program=program)
    finally:
        if log_file:
            log_file.close()
    seen = b""
    with _killed_if_left(process):
        try:
            deadline = time.monotonic() + 240
            while not held.exists():
                assert process.poll() is None, seen.decode(errors="replace")
                assert time.monotonic() < deadline
                if select.select([terminal], [], [], 0.1)[0]:
                    seen += os.read(terminal, 65536)
        finally:
            os.close(terminal)  # the connection drops: the terminal hangs up
        # The SIGHUP's handler has run once it sent stdout, the terminal, to /dev/null.
        while process.poll() is None and _stdout_of(process.pid) != os.devnull:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        go.touch()
        process.wait(timeout=120)
    assert _left_in_session(process.pid) == []
    assert process.returncode == 0, seen.decode(errors="replace")
    workspace = tmp_path / "run"
    run_status = json.loads((workspace / "status.json").read_text())
    assert (run_status["state"], run_status["phase"], run_status["step"]) == (
        "finished",
        "export",
        2,
    )
    assert (workspace / "mesh" / "mesh.ply").is_file()
    if stderr_to:
        written = (tmp_path / stderr_to).read_text()
        assert "interrupted" not in written and "Traceback" not in written, written
        assert f"exported {workspace} (step 2)" in written


def _ctrl_c_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_a_ctrl_c_after_the_commands_last_handlers_changes_nothing(tmp_path):
    """Ctrl-C once main's handlers were given back, the run finished and recorded: Python's own
    handler was back in place and raised KeyboardInterrupt, "interrupted" and exit 130."""
    command, env = _complete_run(tmp_path)
    program = ["-c", LAUNCHER, "libraries", "-", "-"]
    process = subprocess.Popen(
        [sys.executable, *program, *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    with _killed_if_left(process):
        out, err = process.communicate(timeout=240)
    assert process.returncode == 0, err
    assert out == f"{tmp_path / 'run'}\n"
    assert "interrupted" not in err


def _catches(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler set for ``signum`` (its SigCgt mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def test_the_terminal_going_away_while_the_command_starts_ends_with_130(tmp_path):
    """The connection drops in the seconds the command spends importing its modules, before
    any run is set up: one line, "interrupted", exit 130, and no run folder; not a process
    killed by SIGHUP (-1) with nothing said."""
    if not Path(f"/proc/{os.getpid()}/status").exists():
        pytest.skip("no /proc here to tell when the command has set its handlers")
    workspace = tmp_path / "run"
    command, env = _long_run(workspace)
    with open(tmp_path / "run.log", "wb") as log_file:
        process, terminal = _on_a_terminal(command, env, log_file.fileno())
    with _killed_if_left(process):
        try:
            deadline = time.monotonic() + 60
            # run() sets SIGTERM's handler and SIGHUP's together, before any import of its own.
            while not _catches(process.pid, signal.SIGTERM):
                assert process.poll() is None
                assert time.monotonic() < deadline
                time.sleep(0.005)
        finally:
            os.close(terminal)  # the connection drops: the terminal hangs up
        process.wait(timeout=120)
    assert (tmp_path / "run.log").read_text() == "dreamtext: interrupted\n"
    assert process.returncode == 130
    assert not workspace.exists()


def test_a_run_whose_terminal_went_away_without_a_sighup_ends_with_its_own_status(tmp_path):
    """`dreamtext text ... --no-export & disown`, its terminal then closed: the job gets no
    SIGHUP (the terminal is not its controlling one here, as for a disowned job) and trains on
    with every write failing (EIO). The run's folder, the first line to reach the gone terminal
    where no export's note had, exited 1 where the same run with an export exited 0."""
    workspace = tmp_path / "run"
    command, env = _long_run(workspace)
    command[command.index("--iters") + 1] = "200"
    process, terminal = _on_a_terminal(command, env, None, controlling=False)
    seen = b""
    try:
        deadline = time.monotonic() + 240
        while b"it/s" not in seen:  # the bar is drawing on the terminal: the run is training
            assert process.poll() is None, seen.decode(errors="replace")
            assert time.monotonic() < deadline
            if select.select([terminal], [], [], 0.1)[0]:
                seen += os.read(terminal, 65536)
    finally:
        os.close(terminal)  # the terminal goes away, hung up, with no SIGHUP for the job
        with _killed_if_left(process):
            process.wait(timeout=240)
    assert process.returncode == 0
    run_status = json.loads((workspace / "status.json").read_text())
    assert (run_status["state"], run_status["step"]) == ("finished", 200)


@pytest.mark.parametrize("block", [stop_on_signal, sigterm_interrupts, signals_held])
@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT], ids=["SIGHUP", "Ctrl-C"])
def test_an_ignored_sighup_or_ctrl_c_stays_ignored(block, signum):
    """``nohup dreamtext ...``: the command is meant to outlive its terminal; ``dreamtext batch
    x.txt &`` in a script: the shell ignores Ctrl-C in its background jobs, so that one typed at
    the terminal reaches only the job in the foreground."""
    previous = signal.signal(signum, signal.SIG_IGN)
    try:
        with block():
            assert signal.getsignal(signum) is signal.SIG_IGN
    finally:
        signal.signal(signum, previous)


@pytest.mark.parametrize("block", [stop_on_signal, sigterm_interrupts, signals_held])
def test_an_ignored_sigterm_is_handled_still(block):
    """A scheduler's stop (scancel, a container's stop) is a SIGTERM, then a SIGKILL: handled
    even where a parent left it ignored, it saves the steps the SIGKILL would lose."""
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with block():
            assert callable(signal.getsignal(signal.SIGTERM))
    finally:
        signal.signal(signal.SIGTERM, previous)


def _as_a_scripts_background_job() -> None:
    """In the command's process before it starts: Ctrl-C ignored, as a shell without job
    control (a script) starts `dreamtext ... &`; SIGHUP's default action, whatever the tests
    inherited (:func:`_hangup_as_by_default`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _hangup_as_by_default()


def test_a_ctrl_c_meant_for_the_foreground_leaves_a_background_job_training(tmp_path):
    """A script's `dreamtext text ... &` starts with Ctrl-C ignored; handled again, a Ctrl-C
    typed for another command stopped it (exit 130 a step later). It trains on past it, and a
    SIGTERM still stops it with its last step saved."""
    workspace = tmp_path / "run"
    process = _start_long_run(workspace, _as_a_scripts_background_job)
    log = workspace / "log.jsonl"
    with _killed_if_left(process):
        deadline = time.monotonic() + 240
        _trains_past(process, log, 10, deadline)
        process.send_signal(signal.SIGINT)
        # Handled, the first Ctrl-C ends the run after the step it lands in.
        at_ctrl_c = _logged_step(log)
        _trains_past(process, log, at_ctrl_c + 20, deadline)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err.decode()
    run_status = json.loads((workspace / "status.json").read_text())
    assert run_status["state"] == "interrupted"
    saved = json.loads((workspace / "checkpoints" / "last.step.json").read_text())["step"]
    assert saved == run_status["step"] >= at_ctrl_c + 20


def test_sighup_stops_a_training_loop_after_its_step():
    def not_handled(signum, frame):  # what Python's default would do: end the process
        pytest.fail("SIGHUP reached the handler from before the loop")

    previous = signal.signal(signal.SIGHUP, not_handled)
    try:
        with stop_on_signal() as stop:
            signal.raise_signal(signal.SIGHUP)
            assert stop["stop"]
    finally:
        signal.signal(signal.SIGHUP, previous)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_whose_stderr_reader_is_gone_ends_interrupted(tmp_path, signum):
    """`dreamtext text ... 2>&1 | tee run.log` stopped by Ctrl-C or the terminal's SIGHUP, which
    end tee too: the bar's last line and the closing note, written into a pipe no one reads,
    turned the saved stop into status.json "failed" (BrokenPipeError) and exit 1."""
    workspace = tmp_path / "run"
    process = _start_long_run(workspace, _hangup_as_by_default)
    with _killed_if_left(process):
        _trains_past(process, workspace / "log.jsonl", 20, time.monotonic() + 240)
        process.stderr.close()  # tee is gone
        process.send_signal(signum)
        process.wait(timeout=120)
    assert process.returncode == 130
    run_status = json.loads((workspace / "status.json").read_text())
    assert run_status["state"] == "interrupted", run_status
    saved = json.loads((workspace / "checkpoints" / "last.step.json").read_text())["step"]
    assert saved == run_status["step"]


def test_a_note_to_a_terminal_gone_without_a_sighup_is_lost_not_an_error(monkeypatch):
    """A job started with `&`, its shell then left with `exit`, gets no SIGHUP and runs on with
    its terminal hung up: every write to it fails with EIO. The summary line after an export
    (say) raised it as the disk failing: status.json "failed" (OSError EIO, in the export) for
    a run whose mesh was written, a traceback and exit 1."""
    from dreamtext.__main__ import LostOnAGoneTerminal
    from dreamtext.errors import print_note
    from dreamtext.progress import say

    master, slave = os.openpty()
    os.close(master)  # the terminal hangs up
    stream = open(slave, "w", buffering=1)  # noqa: SIM115  (line-buffered, as stderr is)
    try:  # the streams as the command's run() makes them
        monkeypatch.setattr(sys, "stderr", LostOnAGoneTerminal(stream))
        monkeypatch.setattr(sys, "stdout", LostOnAGoneTerminal(stream))
        say("dreamtext: exported mesh/ (glb, obj, ply)")
        print_note("dreamtext: interrupted after step 3")
        say("a second one")
    finally:
        monkeypatch.undo()
        stream.close()


def _on_a_gone_terminal(arguments: list[str]) -> subprocess.Popen:
    """``python -m dreamtext ARGUMENTS`` started as a disowned job whose terminal is already
    gone (hung up, no SIGHUP for it: not its controlling terminal): every write to its stdout
    and stderr fails with EIO from its first line on."""
    _, env = _long_run(Path("unused"))
    terminal, its_end = os.openpty()
    os.close(terminal)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "dreamtext", *arguments],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=its_end,
            stderr=its_end,
            start_new_session=True,
            preexec_fn=_hangup_as_by_default,
        )
    finally:
        os.close(its_end)


def test_a_refusal_on_a_terminal_gone_without_a_sighup_keeps_its_status_2(tmp_path):
    """`dreamtext export --workspace TYPO & disown`, its terminal closed: the error line (not
    written through print_note) raised EIO out of the handler, exit 1 instead of 2."""
    process = _on_a_gone_terminal(["export", "--workspace", str(tmp_path / "no-such-run")])
    assert process.wait(timeout=240) == 2


def test_the_viewer_serves_on_when_its_terminal_went_away_without_a_sighup(tmp_path):
    """`dreamtext view runs & disown`, the terminal closed before the address line: that line
    raised EIO and the viewer ended (exit 1) without serving. It serves (the 403 that asks for
    the printed address's token: the line holding it went nowhere), and SIGTERM stops it as it
    stops a viewer whose terminal is there (exit 0, "dreamtext view: stopped")."""
    (tmp_path / "runs").mkdir()
    with socket.socket() as probe:  # a port free now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = _on_a_gone_terminal(["view", str(tmp_path / "runs"), "--port", str(port)])
    with _killed_if_left(process):
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, process.returncode
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).close()
                pytest.fail("answered without the token that its (lost) first line printed")
            except urllib.error.HTTPError as answer:  # listening: the token was never seen
                assert answer.code == 403 and b"?token=" in answer.read(), answer
                break
            except urllib.error.URLError:  # not listening yet
                assert time.monotonic() < deadline
                time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0


def test_a_failing_disk_or_a_closed_pipe_is_not_taken_for_a_gone_terminal(tmp_path, monkeypatch):
    """The EIO of a file (a disk or file server failing) is no terminal's: raised, for the
    command's one line about it, even where the other output is a terminal that is gone; a
    closed pipe's error is raised as well."""
    from dreamtext.__main__ import LostOnAGoneTerminal

    class Failing:
        def __init__(self, error: OSError, fd: int) -> None:
            self.error, self.fd = error, fd

        def write(self, text: str) -> int:
            raise self.error

        def flush(self) -> None:
            raise self.error

        def fileno(self) -> int:
            return self.fd

    master, slave = os.openpty()
    os.close(master)  # stdout a terminal gone, as the failing disk's file is written
    gone = open(slave, "w")  # noqa: SIM115
    with open(tmp_path / "out.log", "w") as log, monkeypatch.context() as patched:
        patched.setattr(sys, "stdout", gone)
        for error in (OSError(errno.EIO, "Input/output error"), BrokenPipeError()):
            stream = LostOnAGoneTerminal(Failing(error, log.fileno()))
            with pytest.raises(OSError) as raised:
                stream.write("a line\n")
            assert raised.value is error
            with pytest.raises(OSError):
                stream.flush()
    gone.close()
