"""Settings that ran for ever or were killed by the system are refused before a run starts:
one line on stderr naming the setting and its file, exit 2, no workspace written."""

import pytest

from dreamtext.cli import main
from dreamtext.config import PREVIEW_VIEWS_MAX, TrainConfig, validate
from dreamtext.errors import DreamtextError
from dreamtext.renderer import MARCH_STEPS_MAX, RenderConfig

BUILTIN_RUN = ["text", "a red cube", "--model", "builtin:shapes", "--no-export", "--iters", "2"]


def refused(tmp_path, monkeypatch, capsys, yaml_text):
    """``dreamtext text`` with a ``--config`` of ``yaml_text``: (exit code, stderr lines), and
    that nothing was written."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "big.yaml").write_text(yaml_text, encoding="utf-8")
    code = main([*BUILTIN_RUN, "--config", "big.yaml", "--workspace", "w"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert not (tmp_path / "w").exists()
    return code, lines


def test_a_hundred_million_preview_views_are_refused_naming_the_key_and_its_file(
    tmp_path, monkeypatch, capsys
):
    """It trained, then rendered 100,000,000 views for its first preview: for ever."""
    code, lines = refused(tmp_path, monkeypatch, capsys, "preview_views: 100000000\n")
    assert code == 2
    assert lines == [
        "dreamtext: error: config field 'preview_views' (in big.yaml) must be at most 64 (each "
        "preview renders every view; the default is 4), got 100000000"
    ]


def test_a_trillion_march_steps_are_refused_naming_the_key_and_its_file(
    tmp_path, monkeypatch, capsys
):
    """The marcher took 10^12 steps a ray at its first step: for ever."""
    yaml_text = "render:\n  sampler: occupancy\n  march_steps: 1000000000000\n"
    code, lines = refused(tmp_path, monkeypatch, capsys, yaml_text)
    assert code == 2
    assert lines == [
        "dreamtext: error: render.march_steps (in big.yaml) must be at most 4,096 (16× the "
        "default 256; time and memory grow with it), got 1000000000000"
    ]


def test_march_steps_up_to_the_bound_are_taken():
    RenderConfig(march_steps=MARCH_STEPS_MAX).validate()
    with pytest.raises(DreamtextError, match=r"render\.march_steps must be at most 4,096"):
        RenderConfig(march_steps=MARCH_STEPS_MAX + 1).validate()


def test_preview_views_up_to_the_bound_are_taken():
    cfg = TrainConfig(prompt="a cube", preview_views=PREVIEW_VIEWS_MAX)
    validate(cfg)
    cfg.preview_views += 1
    with pytest.raises(DreamtextError, match="'preview_views' must be at most 64"):
        validate(cfg)
