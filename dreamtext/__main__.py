"""``python -m dreamtext`` and the ``dreamtext`` command (:func:`run`).

Python imports ``dreamtext.cli`` (argparse, the flag checks) before ``main`` can set a handler,
and ``main`` parses the command line before its own ``try``: a SIGTERM there killed the process
with no line (exit -15) and a Ctrl-C printed a ``KeyboardInterrupt`` traceback. So this module
imports nothing of dreamtext's before its SIGTERM handler is set."""

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

if __name__ == "__main__":
    # `python -m dreamtext` runs this file as the module __main__: the modules that import
    # dreamtext.__main__ (the handlers' blocks, the trainer) get this one, not a second copy
    # whose state of the command's work (_WORK) run()'s handlers would not see.
    sys.modules.setdefault("dreamtext.__main__", sys.modules[__name__])

EXIT_INTERRUPTED = 130  # dreamtext.cli.EXIT_INTERRUPTED, not imported before the handler is set
EXIT_USAGE = 2  # dreamtext.cli's exit status for what the user can fix
# Native Windows has no fcntl locks, no resource module, and its os.kill(pid, 0) sends Ctrl-C to
# the process group instead of asking whether a process exists: a run's locks and liveness
# checks would be wrong, so every command says where it runs instead.
NATIVE_WINDOWS = (
    "dreamtext: native Windows is not supported; run dreamtext under WSL 2 (the Windows "
    "Subsystem for Linux), where the README's commands work as on Linux"
)


# The signals that stop a command: Ctrl-C, a scheduler's stop or `kill`, and the terminal going
# away (an ssh connection that drops sends SIGHUP), which Python's default turned into a kill
# that lost the steps since the last checkpoint and left status.json "running".
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# The stop signals that stay ignored where they are, as Python leaves an ignored Ctrl-C without
# its KeyboardInterrupt: SIGHUP under `nohup`, which asked for the command to outlive its
# terminal, and Ctrl-C in a job that a script started in the background (`dreamtext batch x.txt
# &`), which the shell starts with SIGINT ignored (POSIX) so that a Ctrl-C typed at the terminal
# reaches only the foreground job; handled, it stopped the batch as well. SIGTERM is handled even
# where it was ignored: it is no key anyone types by mistake, and a scheduler's stop (scancel, a
# container's stop, a job's time limit) sends it before its SIGKILL, which loses every step since
# the last checkpoint where SIGTERM has not saved them.
LEFT_IGNORED = (signal.SIGINT, signal.SIGHUP)


# A stop interrupts a command's work; once that work is complete it interrupts nothing. The work is
# complete when its last file is in place (a run's export committed, whose swap then finishes, or
# its final preview without one; `dreamtext export`'s files; `dreamtext describe`'s sentence),
# marked in one step with the rename that puts it there (interrupts.rename_completing_work; marked
# after the rename returned, a stop in between read "interrupted" of a run with every file written):
# what follows only records it (status.json "finished", a batch's line) and says so. A stop from
# there on is noted and dropped (every handler is set through handle_stop_signals, whose StopHandler
# asks): the run reads finished, the command exits with its own status, and no "interrupted" is
# said. A stop before it, a moment earlier, stops the command as ever (130, a run that resumes). The
# window lasts to the process's end, or to the command's next work (a batch's next line, whose
# more_work ends it), which a stop noted meanwhile stops before it starts. It is no shorter than
# that: ended at status.json's "finished", a stop after it said "interrupted" of a finished run and
# exited 130. The state outlives the handlers of a process run by run() (its own are set first and
# last for its life); in a process that calls dreamtext (the tests), its outermost handler starts it
# anew.
_WORK = {"complete": False, "stopped": False}


def work_complete() -> None:
    """The command's work is complete: every file it makes is in place, and what follows only
    records it and says so. From here a stop signal interrupts nothing (see :data:`_WORK`'s
    rule): the handlers of :func:`handle_stop_signals` note it and return."""
    _WORK["complete"] = True


def work_goes_on() -> bool:
    """End what :func:`work_complete` began, for more work of the same command (a batch's next
    line): stop signals interrupt again. Returns whether one arrived since the work was
    complete; it is for the caller to stop the work that follows."""
    _WORK["complete"] = False  # first: a stop from here on interrupts, and none is lost
    stopped, _WORK["stopped"] = _WORK["stopped"], False
    return stopped


class StopHandler:
    """The handler :func:`handle_stop_signals` sets: for SIGHUP it first sends stdout and stderr
    to /dev/null where they are the terminal that went away
    (:func:`outputs_of_a_gone_terminal_to_devnull`), so that the lines saying what was saved
    cannot fail on them; then ``handler``, unless the command's work is complete
    (:func:`work_complete`), when the stop is only noted."""

    def __init__(self, handler: Callable[[int, FrameType | None], Any]) -> None:
        self.handler = handler

    def __call__(self, signum: int, frame: FrameType | None) -> Any:
        if signum == signal.SIGHUP:
            outputs_of_a_gone_terminal_to_devnull()
        if _WORK["complete"]:
            _WORK["stopped"] = True
            return None
        return self.handler(signum, frame)


def handle_stop_signals(
    handler: Callable[[int, FrameType | None], Any],
    signals: tuple[signal.Signals, ...] = STOP_SIGNALS,
) -> dict[int, Any]:
    """Set ``handler`` for each of ``signals`` (:data:`STOP_SIGNALS`) but one ignored that stays
    so (:data:`LEFT_IGNORED`), behind a :class:`StopHandler`. Returns the handlers it replaced,
    for the caller to put back. Off the main thread it raises ``ValueError``, having set none.
    The outermost of them (SIGTERM, always handled, has none of dreamtext's yet) begins a
    command's work: one complete before is another command's (:func:`work_complete`)."""
    outermost = not isinstance(signal.getsignal(signal.SIGTERM), StopHandler)
    on_signal = StopHandler(handler)
    previous = {}
    for sig in signals:
        if sig in LEFT_IGNORED and signal.getsignal(sig) == signal.SIG_IGN:
            continue
        previous[sig] = signal.signal(sig, on_signal)
    if outermost:
        _WORK.update(complete=False, stopped=False)
    return previous


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def outputs_of_a_gone_terminal_to_devnull() -> bool:
    """Send stdout and stderr to /dev/null where they are a terminal that has hung up (an ssh
    connection that dropped, whose SIGHUP stops the command): every write to one fails with EIO,
    which turned the line of a run that had saved its last step into a traceback and exit 1,
    and nothing written there can be seen any more. A terminal still there (a `kill -HUP`) is
    left as it is, and so is what is no terminal. Returns whether one was sent."""
    gone = False
    for stream in (sys.stdout, sys.stderr):
        if a_gone_terminal(stream):
            gone = True
            to_devnull(stream)
    return gone


def a_gone_terminal(stream: object) -> bool:
    """Whether ``stream``'s file descriptor is a terminal that has hung up: asking for its
    settings fails with EIO (a file, a pipe or a socket fails with ENOTTY; a live terminal
    answers)."""
    import errno
    import termios  # not on native Windows, which run() refuses before any handler is set

    try:
        termios.tcgetattr(stream.fileno())  # type: ignore[attr-defined]
    except termios.error as error:
        return error.args[0] == errno.EIO
    except (AttributeError, OSError, ValueError):  # none, or no file descriptor
        return False
    return False


def written_to_a_gone_terminal(error: OSError, stream: object) -> bool:
    """Whether ``error``, raised by a write to ``stream`` (stdout or stderr), is the EIO of a
    terminal that went away without a SIGHUP for this process (a job started with `&`, its
    shell then left with `exit`), not a disk failing: asked of ``stream`` itself, so that a
    failing disk's EIO on one is not taken for the other's gone terminal. If so, both are sent
    to /dev/null from here on where they are that terminal
    (:func:`outputs_of_a_gone_terminal_to_devnull`)."""
    import errno

    if error.errno != errno.EIO or not a_gone_terminal(stream):
        return False
    outputs_of_a_gone_terminal_to_devnull()
    return True


class LostOnAGoneTerminal:
    """``sys.stdout`` or ``sys.stderr`` (``stream``), whose writes are lost, not raised, once it
    is a terminal that went away without a SIGHUP for this process (a job started with `&
    disown`, its terminal then closed: every write fails with EIO): the one place that tells
    such a write from a failing disk's (:func:`written_to_a_gone_terminal`) for every line the
    command prints, its error line, the viewer's address and log lines and tqdm's bars included.
    Before, each print that was not wrapped for it raised EIO, which ended the command 1: the
    viewer without serving, a refusal without its status 2. A closed pipe
    (``BrokenPipeError``) and a disk's or file server's EIO are raised as before. Everything
    else is the stream's own."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as error:
            if not written_to_a_gone_terminal(error, self._stream):
                raise
            return len(text)  # lost: its file descriptor is /dev/null from here on

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as error:
            if not written_to_a_gone_terminal(error, self._stream):
                raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def outputs_lost_on_a_gone_terminal() -> None:
    """Make ``sys.stdout`` and ``sys.stderr`` :class:`LostOnAGoneTerminal` (those there are)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, LostOnAGoneTerminal):
            setattr(sys, name, LostOnAGoneTerminal(stream))


def ignore_stop_signals() -> None:
    """Ignore Ctrl-C, SIGTERM and SIGHUP from here to the process's end: the command has
    finished (or is stopping) and its exit status is decided. Python's shutdown puts every
    signal that has a Python handler back to the default action, so a third Ctrl-C or SIGTERM
    sent while it stops (torch's teardown takes a moment) killed the process with -2 or -15 (a
    shell's 130 or 143, a traceback sometimes) instead of its own status; an ignored signal
    stays ignored."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def stdout_to_devnull() -> None:
    """Send what is still written to stdout to /dev/null: its reader has closed it (`| head
    -1`), and every later write, Python's own flush at exit included, would raise
    ``BrokenPipeError`` again (Python's docs, "Note on SIGPIPE")."""
    to_devnull(sys.stdout)


def to_devnull(stream: object) -> None:
    """Point ``stream``'s file descriptor at /dev/null, so that every later write to it (Python's
    flush at exit included) goes nowhere instead of failing; nothing where it has none."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())  # type: ignore[attr-defined]
        finally:
            os.close(devnull)


def output_failed_line(error: OSError) -> str:
    """The line for stdout that cannot be written (``> /dev/full``, a full disk, a lost mount)."""
    return (
        f"dreamtext: error: {error.strerror or error} (writing the output); send the output where "
        "it can be written (a disk with room, the terminal)"
    )


def stdout_delivered(code: int) -> int:
    """``code``, once what stdout still holds is written. Where its reader has closed it
    (`dreamtext text ... | head -0`, `dreamtext --help | true`), a command that had succeeded
    exits 1, the status Python's docs give a program whose output was cut, and one that had not
    keeps its own (130 interrupted, 2 an error). Left to Python's flush at exit, a buffered
    stdout printed "Exception ignored ... BrokenPipeError" and the status was 120. A process
    started with no stdout (`dreamtext --version >&-`: ``sys.stdout`` is ``None``) has none to
    flush. One that cannot be written (``--help > /dev/full``: a traceback, "Exception ignored"
    and status 120) says so in one line (:func:`output_failed_line`), status 2 where the
    command had succeeded."""
    if sys.stdout is None:
        return code
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        stdout_to_devnull()
        return code or 1
    except OSError as error:
        stdout_to_devnull()
        print(output_failed_line(error), file=sys.stderr)
        return code or EXIT_USAGE
    return code


def run() -> int:
    """Entry point of the ``dreamtext`` console script: ``dreamtext.cli.main`` with SIGTERM and
    SIGHUP raising ``KeyboardInterrupt`` as Ctrl-C does from the first line on (``main``'s own
    handlers take over where it sets them), until the command's work is complete
    (:func:`work_complete`). One interrupted before ``main`` knows the command says only
    that, with ``main``'s exit status. Once ``main`` is done, or stopping for a signal, more
    signals are ignored (:func:`ignore_stop_signals`): the status is the one it returns.
    What it writes to a terminal gone without a SIGHUP is lost (:class:`LostOnAGoneTerminal`).
    On native Windows every command is refused with one line (:data:`NATIVE_WINDOWS`)."""
    if sys.platform == "win32":
        print(NATIVE_WINDOWS, file=sys.stderr)
        return EXIT_USAGE
    outputs_lost_on_a_gone_terminal()
    # Ctrl-C too, which Python's own handler turned into KeyboardInterrupt as this one does: put
    # back as main's handlers end, Python's raised it once the command's work was complete.
    handle_stop_signals(_raise_keyboard_interrupt)
    try:
        from dreamtext.cli import main

        code = main(ending_process=True)
    except KeyboardInterrupt:
        ignore_stop_signals()
        print("dreamtext: interrupted", file=sys.stderr)
        return stdout_delivered(EXIT_INTERRUPTED)
    except SystemExit as stop:  # argparse's --help, --version and usage errors
        if not isinstance(stop.code, int | None):
            raise
        code = stop.code or 0
    except BrokenPipeError:  # --help or --version into a closed stdout (`| true`)
        stdout_to_devnull()
        code = 1
    ignore_stop_signals()
    return stdout_delivered(code)


if __name__ == "__main__":
    sys.exit(run())
