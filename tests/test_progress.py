"""Progress bars: live on a terminal, a line now and then in a file (a SLURM log)."""

import io

import pytest

from dreamtext.progress import FILE_SECONDS, PROGRESS_SECONDS, bar_options


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


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
