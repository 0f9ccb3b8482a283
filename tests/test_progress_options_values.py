"""dreamtext.progress' redraw interval for a bar written to a file and its label, by the
module's docstring: DREAMTEXT_PROGRESS_SECONDS, default 30, 0 gives tqdm's own redraws back."""

from __future__ import annotations

import io

import pytest

from dreamtext.progress import (
    PROGRESS_SECONDS,
    bar_label,
    bar_options,
    tqdm,
    writes_to_terminal,
)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        super().isatty()  # a closed stream raises ValueError, as a real one does
        return True


@pytest.mark.parametrize(("env", "seconds"), [(None, 30.0), ("", 30.0), ("45", 45.0)])
def test_a_file_bar_redraws_every_that_many_seconds(monkeypatch, env, seconds):
    if env is None:
        monkeypatch.delenv(PROGRESS_SECONDS, raising=False)
    else:
        monkeypatch.setenv(PROGRESS_SECONDS, env)
    assert bar_options(io.StringIO()) == {"mininterval": seconds, "maxinterval": seconds}


def test_a_value_that_is_no_number_keeps_the_default(monkeypatch):
    monkeypatch.setenv(PROGRESS_SECONDS, "thirty")
    assert bar_options(io.StringIO())["mininterval"] == 30.0


@pytest.mark.parametrize("env", ["0", "nan"])
def test_zero_gives_tqdms_own_redraws_back(monkeypatch, env):
    monkeypatch.setenv(PROGRESS_SECONDS, env)
    assert bar_options(io.StringIO()) == {}


def test_a_terminal_gets_tqdms_live_bar_and_a_closed_stream_is_no_terminal(monkeypatch):
    monkeypatch.setenv(PROGRESS_SECONDS, "45")
    assert bar_options(_Terminal()) == {}
    closed = _Terminal()
    closed.close()
    assert writes_to_terminal(closed) is False
    assert writes_to_terminal(object()) is False  # no isatty


class OutStream(io.StringIO):
    """Stands in for ipykernel's stderr in a notebook: no terminal, the kernel's module."""


OutStream.__module__ = "ipykernel.iostream"


def test_a_jupyter_kernels_output_gets_tqdms_live_bar_not_a_line_every_30_seconds(monkeypatch):
    """A notebook without ipywidgets shows a bar's ``\\r`` redraws in place: lines 30 s apart
    left a run's cell blank for its first 30 s."""
    monkeypatch.setenv(PROGRESS_SECONDS, "30")
    stream = OutStream()
    assert bar_options(stream) == {"mininterval": 1.0}  # a redraw a second, not every 30 s
    with tqdm(total=3, file=stream, mininterval=0) as bar:
        for _ in range(3):
            bar.update(1)
    assert stream.getvalue().count("\r") >= 3


def test_a_label_is_at_most_forty_characters():
    assert bar_label("a" * 40) == "a" * 40
    assert bar_label("a" * 41) == "a" * 39 + "…"
