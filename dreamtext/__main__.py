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


def run() -> int:
    """Entry point of the ``dreamtext`` console script: ``dreamtext.cli.main`` with SIGTERM
    raising ``KeyboardInterrupt`` as Ctrl-C does from the first line on (``main``'s own handlers
    take over where it sets them). One interrupted before ``main`` knows the command says only
    that, with ``main``'s exit status."""
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        from dreamtext.cli import main

        return main()
    except KeyboardInterrupt:
        print("dreamtext: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(run())
