"""``python -m dreamtext`` and the ``dreamtext`` command (:func:`run`).

Python imports ``dreamtext.cli`` (argparse, the flag checks) before ``main`` can set a handler,
and ``main`` parses the command line before its own ``try``: a SIGTERM there killed the process
with no line (exit -15) and a Ctrl-C printed a ``KeyboardInterrupt`` traceback. So this module
imports nothing of dreamtext's before its SIGTERM handler is set."""

import signal
import sys

EXIT_INTERRUPTED = 130  # dreamtext.cli.EXIT_INTERRUPTED, not imported before the handler is set


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def ignore_stop_signals() -> None:
    """Ignore Ctrl-C and SIGTERM from here to the process's end: the command has finished (or
    is stopping) and its exit status is decided. Python's shutdown puts every signal that has a
    Python handler back to the default action, so a third Ctrl-C or SIGTERM sent while it
    stops (torch's teardown takes a moment) killed the process with -2 or -15 (a shell's 130 or
    143, a traceback sometimes) instead of its own status; an ignored signal stays ignored."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def run() -> int:
    """Entry point of the ``dreamtext`` console script: ``dreamtext.cli.main`` with SIGTERM
    raising ``KeyboardInterrupt`` as Ctrl-C does from the first line on (``main``'s own handlers
    take over where it sets them). One interrupted before ``main`` knows the command says only
    that, with ``main``'s exit status. Once ``main`` is done, or stopping for a signal, more
    signals are ignored (:func:`ignore_stop_signals`): the status is the one it returns."""
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        from dreamtext.cli import main

        code = main(ending_process=True)
    except KeyboardInterrupt:
        ignore_stop_signals()
        print("dreamtext: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    ignore_stop_signals()
    return code


if __name__ == "__main__":
    sys.exit(run())
