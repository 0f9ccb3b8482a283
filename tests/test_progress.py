"""Progress bars: live on a terminal, a line now and then in a file (a SLURM log)."""

import io
import re
import sys
from pathlib import Path

import pytest

from dreamtext.progress import FILE_SECONDS, PROGRESS_SECONDS, bar_label, bar_options


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_label_cut_to_forty_characters_ends_in_an_ellipsis():
    """An image run's bar read "text→3D 'An image of a few <descriptor> firefight'": a prompt
    cut at 40 characters looked whole."""
    sentence = "An image of a few <descriptor> firefighter"
    assert bar_label(sentence) == "An image of a few <descriptor> firefigh…"
    assert len(bar_label(sentence)) == 40
    assert bar_label("a red cube") == "a red cube"
    assert bar_label(sentence[:40]) == sentence[:40]


def test_a_bar_on_a_terminal_keeps_tqdms_own_redraws(monkeypatch):
    monkeypatch.setenv(PROGRESS_SECONDS, "5")
    assert bar_options(Terminal()) == {}


def test_a_bar_in_a_file_redraws_every_thirty_seconds_at_most(monkeypatch):
    monkeypatch.delenv(PROGRESS_SECONDS, raising=False)
    assert bar_options(io.StringIO()) == {"mininterval": FILE_SECONDS, "maxinterval": FILE_SECONDS}
    assert FILE_SECONDS == 30.0


@pytest.mark.parametrize(
    "value, options",
    [
        ("120", {"mininterval": 120.0, "maxinterval": 120.0}),
        ("2", {"mininterval": 2.0, "maxinterval": 10.0}),  # tqdm's own maxinterval
        ("0", {}),  # tqdm's redraws back
        ("soon", {"mininterval": FILE_SECONDS, "maxinterval": FILE_SECONDS}),
    ],
)
def test_the_seconds_between_redraws_in_a_file_come_from_the_environment(
    monkeypatch, value, options
):
    monkeypatch.setenv(PROGRESS_SECONDS, value)
    assert bar_options(io.StringIO()) == options


def test_every_progress_bar_of_the_package_takes_the_file_redraw_interval():
    """Each ``tqdm(...)`` in dreamtext/ passes ``**bar_options()``: a bar without it writes ten
    redraws a second into a SLURM log (the mesh's and CLIP's bars once did)."""
    import ast
    from pathlib import Path

    import dreamtext

    missing = []
    for path in sorted(Path(dreamtext.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "tqdm"):
                continue
            spread = [k.value for k in node.keywords if k.arg is None]
            if not any(
                getattr(getattr(v, "func", None), "id", None) == "bar_options" for v in spread
            ):
                missing.append(f"{path.name}:{node.lineno}")
    assert missing == []


BAR_LINE = re.compile(r"^(?P<desc>.+?): +(?P<percent>\d+)%\|.*\| (?P<n>\d+)/(?P<total>\d+) \[")


def test_a_bar_in_a_file_writes_a_line_every_interval_and_its_final_state_once(monkeypatch):
    """No line when it starts, one each ``mininterval`` seconds while it runs, its last the
    final state: with a step a second and 30 s between lines, 100 steps are four lines."""
    import tqdm.std

    from dreamtext.progress import tqdm as bar

    clock = [1000.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: clock[0])
    stream = io.StringIO()
    with bar(total=100, desc="steps", file=stream, mininterval=30, maxinterval=30) as steps:
        for _ in range(100):
            clock[0] += 1
            steps.update(1)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [BAR_LINE.match(line)["n"] for line in lines] == ["30", "60", "90", "100"]
    assert lines[-1].startswith("steps: 100%|") and "100/100 [01:40<00:00" in lines[-1]


def test_a_bar_asked_to_show_its_start_writes_a_line_of_it_at_once_in_a_file(monkeypatch):
    """``show_start``: a 0/N line when the bar starts, then the lines as without it; on a
    terminal it is tqdm's bar as before."""
    import tqdm.std

    from dreamtext.progress import tqdm as bar

    clock = [1000.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: clock[0])
    stream, terminal = io.StringIO(), Terminal()
    with bar(total=3, desc="prompts", file=stream, show_start=True, mininterval=30) as prompts:
        assert [BAR_LINE.match(line)["n"] for line in stream.getvalue().splitlines()] == ["0"]
        for _ in range(3):
            clock[0] += 20
            prompts.update(1)
    assert [BAR_LINE.match(line)["n"] for line in stream.getvalue().splitlines()] == [
        "0",
        "2",
        "3",
    ]
    with bar(total=3, desc="prompts", file=terminal, show_start=True) as prompts:
        prompts.update(3)
    assert terminal.getvalue().startswith("\rprompts:   0%|")  # redrawn in place


def test_a_batch_logged_to_a_file_shows_its_prompts_bar_before_the_first_prompt_trains(
    tmp_path, monkeypatch
):
    """``dreamtext batch ... 2> batch.log``: "prompts: 0%| 0/2" came only once the first
    prompt had finished (minutes in), when the bar first redrew."""
    from dreamtext.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(PROGRESS_SECONDS, "600")
    Path("prompts.txt").write_text("a red cube\na blue cube\n")
    args = ["batch", "prompts.txt", "--model", "builtin:shapes", "--iters", "2", "--h", "16"]
    with open("batch.log", "w", encoding="utf-8") as log:
        monkeypatch.setattr(sys, "stderr", log)
        assert main([*args, "--no-export"]) == 0
    lines = Path("batch.log").read_text(encoding="utf-8").splitlines()
    bars = [(m["desc"], m["n"]) for m in map(BAR_LINE.match, lines) if m]
    assert bars[0] == ("prompts", "0"), lines
    assert bars[-1] == ("prompts", "2"), lines
    assert [bar for bar in bars if bar[0] == "prompts"] == [("prompts", "0"), ("prompts", "2")]


def test_a_bar_that_vanishes_on_a_terminal_leaves_its_final_line_in_a_file():
    from dreamtext.progress import tqdm as bar

    stream, terminal = io.StringIO(), Terminal()
    for out in (stream, terminal):
        for _ in bar(range(3), desc="grid", leave=False, file=out, **bar_options(out)):
            pass
    assert BAR_LINE.match(stream.getvalue())["n"] == "3"
    assert stream.getvalue().count("\n") == 1
    # on a terminal it is tqdm's bar: redrawn in place, then cleared
    assert terminal.getvalue().startswith("\r") and terminal.getvalue().endswith("\r")
    assert "\n" not in terminal.getvalue()


def test_every_module_that_makes_a_bar_takes_dreamtexts_bar():
    """``tqdm(...)`` in dreamtext/ is :class:`dreamtext.progress.tqdm`, which writes lines to a
    file: tqdm's own left a ``0/1`` line and no final one for each short bar in a SLURM log."""
    import ast

    import dreamtext

    wrong = []
    for path in sorted(Path(dreamtext.__file__).parent.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        calls = any(
            isinstance(node, ast.Call) and getattr(node.func, "id", None) == "tqdm"
            for node in ast.walk(tree)
        )
        sources = {
            node.module
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and any(a.name == "tqdm" for a in node.names)
        }
        if calls and sources != {"dreamtext.progress"}:
            wrong.append(f"{path.name}: {sorted(sources)}")
    assert wrong == []


def test_a_run_logged_to_a_file_ends_every_bar_at_its_total_in_one_line(tmp_path, monkeypatch):
    """``dreamtext text ... 2> run.log``, as a SLURM job writes its log: each bar (training, the
    final preview, the export's density grid and texture) is one line that ends at N/N, 100 %,
    with the time it took; no ``\\r``, no ``0/1`` lines."""
    from dreamtext.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(PROGRESS_SECONDS, "600")  # no bar here runs long enough for two lines
    Path("small.yaml").write_text(
        "export_options: {resolution: 32, texture_size: 64, video: false}\n"
    )
    args = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "2"]
    with open("run.log", "w", encoding="utf-8") as log:
        monkeypatch.setattr(sys, "stderr", log)
        assert main([*args, "--h", "16", "--config", "small.yaml"]) == 0
    with open("run.log", encoding="utf-8", newline="") as log:  # \r kept as written
        text = log.read()
    assert "\r" not in text
    bars = [match for match in map(BAR_LINE.match, text.splitlines()) if match]
    assert {bar["desc"] for bar in bars} == {
        "text→3D 'a red cube'",
        "preview final.png",
        "density grid",
        "albedo",
    }
    for bar in bars:
        assert (bar["percent"], bar["n"]) == ("100", bar["total"]), bar.string
    assert len(bars) <= 5, text


def test_a_bar_whose_reader_is_gone_lets_the_stop_through():
    """`dreamtext text ... 2>&1 | tee run.log` stopped with Ctrl-C: tee ends too, and the bar's
    last line, written as the stop left the training loop, raised BrokenPipeError in its place
    (status.json "failed", exit 1, though the checkpoint was saved)."""
    from dreamtext.progress import tqdm

    class ReaderGone(io.StringIO):  # a pipe whose reader has ended
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    stream = ReaderGone()
    with (
        pytest.raises(KeyboardInterrupt),
        tqdm(total=10, file=stream, **bar_options(stream)) as bar,
    ):
        bar.update(3)
        raise KeyboardInterrupt
