"""The lines a bar writes into a file (dreamtext.progress.tqdm), by its docstring: one each
mininterval while it runs and one of its final state, with the rate over the whole bar."""

from __future__ import annotations

import io
import re

BAR_LINE = re.compile(r"^(?P<desc>.+?): +(?P<percent>\d+)%\|.*\| (?P<n>\d+)/(?P<total>\d+) \[")


def _fake_clock(monkeypatch) -> list[float]:
    import tqdm.std

    clock = [1000.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: clock[0])
    return clock


def test_a_final_state_its_last_line_showed_is_not_written_twice(monkeypatch):
    """60 steps a second apart, 30 s between lines: lines at 30 and 60; the bar closing at 60
    writes no second 60/60 line."""
    from dreamtext.progress import tqdm as bar

    clock = _fake_clock(monkeypatch)
    stream = io.StringIO()
    with bar(total=60, desc="steps", file=stream, mininterval=30, maxinterval=30) as steps:
        for _ in range(60):
            clock[0] += 1
            steps.update(1)
    assert [BAR_LINE.match(line)["n"] for line in stream.getvalue().splitlines()] == ["30", "60"]


def test_the_final_line_gives_the_rate_over_the_whole_bar(monkeypatch):
    """10 steps of 1 s, then 9 of 5 s, 30 s between lines: a line at 30 s (14 steps), then the
    final one, 19 steps in 55 s, 2.89 s a step over the whole bar (tqdm's smoothed rate, last
    measured at 30 s, would say 2.14)."""
    from dreamtext.progress import tqdm as bar

    clock = _fake_clock(monkeypatch)
    stream = io.StringIO()
    with bar(total=19, desc="steps", file=stream, mininterval=30, maxinterval=30) as steps:
        for seconds in [1] * 10 + [5] * 9:
            clock[0] += seconds
            steps.update(1)
    lines = stream.getvalue().splitlines()
    assert [BAR_LINE.match(line)["n"] for line in lines] == ["14", "19"]
    assert "[00:55<00:00,  2.89s/it]" in lines[-1], lines[-1]


def test_a_slow_bars_line_at_its_final_count_gives_the_rate_over_the_whole_bar(monkeypatch):
    """A batch's prompts bar, each prompt minutes long (60, 60 and 600 s, lines 30 s apart):
    every update writes a line, so the last one lands on 3/3, and the bar's closing wrote none.
    That line gave tqdm's smoothed rate, 306.58 s a prompt, where the whole bar took 720 s for
    3: 240.00."""
    from dreamtext.progress import tqdm as bar

    clock = _fake_clock(monkeypatch)
    stream = io.StringIO()
    with bar(total=3, desc="prompts", file=stream, mininterval=30, maxinterval=30) as prompts:
        for seconds in (60, 60, 600):
            clock[0] += seconds
            prompts.update(1)
    lines = stream.getvalue().splitlines()
    assert [BAR_LINE.match(line)["n"] for line in lines] == ["1", "2", "3"]
    assert "[12:00<00:00, 240.00s/it]" in lines[-1], lines[-1]


def test_a_bar_closing_after_its_final_counts_line_writes_no_second_one(monkeypatch):
    """Two training steps of 25.64 s, lines 30 s apart: the second step's update writes the
    2/2 line (51.28 s after the start); the bar closes 20 ms later, when the loop ends. That
    close wrote the 2/2 line again, its time and rate a few ms on (25.65s/it): every bar whose
    last step came 30 s or more after its previous line ended twice in a log."""
    from dreamtext.progress import tqdm as bar

    clock = _fake_clock(monkeypatch)
    stream = io.StringIO()
    with bar(total=2, desc="steps", file=stream, mininterval=30, maxinterval=30) as steps:
        for _ in range(2):
            clock[0] += 25.64
            steps.update(1)
        clock[0] += 0.02
    lines = stream.getvalue().splitlines()
    assert [BAR_LINE.match(line)["n"] for line in lines] == ["2"], lines
    assert "[00:51<00:00, 25.64s/it]" in lines[0], lines[0]
