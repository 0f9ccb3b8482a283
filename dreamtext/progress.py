"""How the progress bars write: live on a terminal, a line now and then into a file.

tqdm redraws a bar at most every 0.1 s. On a terminal each redraw overwrites the one before; where
stderr is a file (a SLURM job's log, ``2> run.log``) every redraw stays in it, ``\\r`` after
``\\r``: a training run wrote about two a step, some 2 MB per 10,000 steps. There a bar redraws
at most every ``DREAMTEXT_PROGRESS_SECONDS`` seconds (default 30), which keeps a long run's log
to tens of KB and still shows it moving; and each redraw is a line of its own (:class:`tqdm`),
the last one the bar's final state, so that ``tail``, ``grep`` and an editor show every bar's
end: ``density grid: 100%|██████████| 4/4 [00:01<00:00, 3.05chunk/s]``.
"""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

from tqdm.auto import tqdm as auto_tqdm
from tqdm.std import tqdm as std_tqdm

from dreamtext.errors import shorten, terminal_lines

PROGRESS_SECONDS = "DREAMTEXT_PROGRESS_SECONDS"
FILE_SECONDS = 30.0  # between two redraws of a bar written to a file


def writes_to_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (stderr) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def draws_in_place(stream: TextIO | None = None) -> bool:
    """Whether a bar on ``stream`` (stderr) can redraw itself in place with ``\\r``: a terminal
    (:func:`writes_to_terminal`), or a Jupyter kernel's output (:func:`in_jupyter_kernel`),
    which the notebook shows in place. A notebook without ipywidgets (tqdm then warns
    "IProgress not found") showed a file's lines: nothing for the first 30 s of a run."""
    stream = sys.stderr if stream is None else stream
    return writes_to_terminal(stream) or in_jupyter_kernel(stream)


def in_jupyter_kernel(stream: TextIO) -> bool:
    """Whether ``stream`` is a Jupyter kernel's output (ipykernel's ``OutStream``, which is no
    terminal), inside tqdm's ``DisableOnWriteError`` wrapper or not."""
    inner = getattr(stream, "_wrapped", stream)
    return type(inner).__module__ == "ipykernel.iostream"


# Between two redraws of a bar in a Jupyter kernel: each redraw is a message the kernel sends,
# and nbclient (papermill) stores each as an output of its own in the notebook it saves.
KERNEL_SECONDS = 1.0


def bar_options(stream: TextIO | None = None) -> dict[str, float]:
    """tqdm's keyword arguments for a bar on ``stream`` (stderr): none on a terminal (tqdm's
    live bar); in a Jupyter kernel the live bar at most every :data:`KERNEL_SECONDS`; else
    ``mininterval`` = ``maxinterval`` = ``DREAMTEXT_PROGRESS_SECONDS`` (default
    :data:`FILE_SECONDS`; ``0`` gives tqdm's own redraws back), so that a bar writes one line
    every that many seconds at most (tqdm's monitor redraws a bar after ``maxinterval``)."""
    stream = sys.stderr if stream is None else stream
    if writes_to_terminal(stream):
        return {}
    if in_jupyter_kernel(stream):
        return {"mininterval": KERNEL_SECONDS}
    try:
        seconds = float(os.environ.get(PROGRESS_SECONDS) or FILE_SECONDS)
    except ValueError:
        seconds = FILE_SECONDS
    if not seconds > 0:  # 0 (or nan): tqdm's defaults
        return {}
    return {"mininterval": seconds, "maxinterval": max(seconds, 10.0)}


def say(text: str, file: TextIO | None = None) -> None:
    """Print ``text`` on ``file`` (stderr) above any progress bar, each control character of it
    written as its escape (:func:`dreamtext.errors.terminal_lines`): a folder another tool named,
    or a prompt read from a run's files, can hold an escape sequence, which a terminal obeys."""
    tqdm.write(terminal_lines(text), file=file if file is not None else sys.stderr)


def bar_label(text: str, width: int = 40) -> str:
    """``text`` for a bar's label, at most ``width`` characters: a longer one ends in ``…``, so
    that a cut prompt does not read as a word of its own ('firefight' for 'firefighter')."""
    return shorten(text, width)


# In a notebook tqdm.auto's bar is a widget, which draws itself.
_TEXT_BARS = auto_tqdm.display is std_tqdm.display


class tqdm(auto_tqdm):  # the name of the class it stands in for
    """tqdm's bar, which where its stream is no terminal writes lines: no line when it starts
    (unless ``show_start``: a bar whose first step may take minutes, as a batch's prompts),
    then a line each ``mininterval`` seconds at most (:func:`bar_options`) while it runs, and one
    of its final state (``n/N``, the percentage, the time it took, its overall rate) when it
    closes, ``leave=False`` bars too, which on a terminal vanish. No ``\\r``, no cursor moves and
    no clearing: those only garble a file. On a terminal (and in a notebook) it is tqdm's bar."""

    def __init__(self, *args: Any, show_start: bool = False, **kwargs: Any) -> None:
        self._show_start = show_start  # read by the first redraw, which tqdm's __init__ makes
        super().__init__(*args, **kwargs)

    def _writes_lines(self) -> bool:
        lines = getattr(self, "_lines", None)
        if lines is None:  # decided at the first redraw, the stream known by then
            lines = self._lines = _TEXT_BARS and not draws_in_place(self.fp)
        return lines

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if not self._writes_lines():
            return super().display(msg, pos)
        if msg is not None:  # tqdm clearing the bar, or its "(more hidden)"
            return False
        now = self._time()
        if not getattr(self, "_closing", False):
            # The first redraw is the bar's start (tqdm draws it before it sets start_t).
            start = not hasattr(self, "_line_t")
            since = now - getattr(self, "_line_t", now)
            self._line_t = getattr(self, "_line_t", now)
            if since < self.mininterval and not (start and self._show_start):
                return False
        if self.total is not None and self.n >= self.total:
            self._ema_dt = lambda: None  # the final count: the rate over the whole bar
        text = self.__str__()
        if getattr(self, "_closing", False) and self.n == getattr(self, "_line_n", None):
            # Its last line showed this count: the bar closing after it (ms or minutes on,
            # the loop's end) would say it again, only its time and rate moved on.
            return False
        self._line_t, self._line_n = now, self.n
        try:
            self.fp.write(text + "\n")
            self.fp.flush()
        except BrokenPipeError:
            # Its reader is gone (`2>&1 | tee run.log`, whose tee Ctrl-C or the terminal's
            # SIGHUP ended too): the bar stops drawing, as tqdm's own does on a terminal gone
            # (EIO). Raised, it replaced the command's stop (a checkpoint saved, status.json
            # "interrupted") with an error: "failed", exit 1.
            self.disable = True
            return False
        return True

    def clear(self, nolock: bool = False) -> None:
        if getattr(self, "disable", True) or not self._writes_lines():
            super().clear(nolock)

    def close(self) -> None:
        if getattr(self, "disable", True) or not self._writes_lines():
            return super().close()
        with self._lock:
            self._ema_dt = lambda: None  # the rate over the whole bar, as tqdm's final redraw
            self._closing = True
            self.display()
        self.leave = False  # tqdm's close then clears (nothing here) instead of drawing again
        return super().close()
