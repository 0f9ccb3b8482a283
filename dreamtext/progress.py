"""How the progress bars write: live on a terminal, now and then into a file.

tqdm redraws a bar at most every 0.1 s. On a terminal each redraw overwrites the one before; where
stderr is a file (a SLURM job's log, ``2> run.log``) every redraw stays in it, ``\\r`` after
``\\r``: a training run wrote about two a step, some 2 MB per 10,000 steps. There a bar redraws
at most every ``DREAMTEXT_PROGRESS_SECONDS`` seconds (default 30), which keeps a long run's log
to tens of KB and still shows it moving.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

PROGRESS_SECONDS = "DREAMTEXT_PROGRESS_SECONDS"
FILE_SECONDS = 30.0  # between two redraws of a bar written to a file


def writes_to_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (stderr) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def bar_options(stream: TextIO | None = None) -> dict[str, float]:
    """tqdm's keyword arguments for a bar on ``stream`` (stderr): none on a terminal (tqdm's
    live bar), else ``mininterval`` = ``maxinterval`` = ``DREAMTEXT_PROGRESS_SECONDS`` (default
    :data:`FILE_SECONDS`; ``0`` gives tqdm's own redraws back), so that a bar writes one line
    every that many seconds at most (tqdm's monitor redraws a bar after ``maxinterval``)."""
    if writes_to_terminal(stream):
        return {}
    try:
        seconds = float(os.environ.get(PROGRESS_SECONDS) or FILE_SECONDS)
    except ValueError:
        seconds = FILE_SECONDS
    if not seconds > 0:  # 0 (or nan): tqdm's defaults
        return {}
    return {"mininterval": seconds, "maxinterval": max(seconds, 10.0)}
