"""Control characters in a prompt (a NUL, an escape, a line break; not a tab) are refused with
where they are, from a command-line argument, a prompts file or a pipe, before anything is
written."""

import os
import subprocess
import sys

import pytest

from dreamtext.cli import main
from dreamtext.config import GuidanceConfig, TrainConfig, validate
from dreamtext.errors import DreamtextError
from dreamtext.prompts_text import (
    check_prompt_characters,
    draws_nothing,
    first_control_character,
    shows_nothing,
)

ONE_LINE = "; remove it (a prompt is one line of printable text; tabs count as spaces)"


def run_main(args, capsys):
    try:
        code = main([str(a) for a in args])
    except SystemExit as done:
        code = done.code
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_tab_is_a_space_but_nul_escape_delete_and_c1_controls_are_control_characters():
    assert first_control_character("a red\tcube") is None
    assert first_control_character("un cœur rouge, 一只猫") is None
    for char in ("\x00", "\x1b", "\x0c", "\x7f", "\x85", "\n"):
        assert first_control_character(f"a {char}cube") == 2


def test_the_position_is_the_character_of_the_first_control_character():
    with pytest.raises(DreamtextError) as caught:
        check_prompt_characters("a red\x00 cube", "the prompt")
    assert str(caught.value) == (
        f"the prompt holds the control character U+0000 (NUL) at character 6{ONE_LINE}"
    )
    with pytest.raises(DreamtextError, match=r"U\+000A \(a line break\) at character 6;"):
        check_prompt_characters("a red\nab\x1b cube", "the prompt")


def test_a_nul_in_the_command_line_prompt_is_one_line_and_writes_nothing(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    code, err = run_main(["text", "a red\x00 cube", "--model", "builtin:shapes"], capsys)
    assert code == 2
    assert err == [
        "dreamtext: error: the prompt holds the control character U+0000 (NUL) at character "
        f"6{ONE_LINE}"
    ]
    code, err = run_main(["text", "a red cube", "--negative", "blur\x07"], capsys)
    assert code == 2 and err[0].startswith("dreamtext: error: --negative holds the control")
    assert list(tmp_path.iterdir()) == []


def test_a_command_line_prompt_with_a_byte_that_is_not_utf8_is_one_line(tmp_path, monkeypatch):
    """A Latin-1 terminal's "café" reaches Python as a lone surrogate (U+DCE9): it passed the
    check and the run died in the tokenizer with a traceback, after the model had loaded."""
    monkeypatch.chdir(tmp_path)
    prompt = b"a caf\xe9 cube".decode("utf-8", "surrogateescape")
    with pytest.raises(DreamtextError) as refused:
        check_prompt_characters(prompt, "the prompt")
    assert str(refused.value) == (
        "the prompt holds a byte that is not UTF-8 text (0xE9) at character 6: set your terminal "
        "to UTF-8 and type it again, or write the prompt in a UTF-8 file (a prompts file for "
        "dreamtext batch)"
    )
    env = {**os.environ, "LC_ALL": "C.UTF-8", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "dreamtext", "text", b"a caf\xe9 cube", "--model", "builtin:shapes"],
        capture_output=True,
        cwd=tmp_path,
        env=env,
    )
    err = done.stderr.decode("utf-8", "replace").strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, err
    assert "not UTF-8 text (0xE9) at character 6" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_a_prompts_file_lets_through_what_its_reader_takes_for_a_space():
    assert first_control_character("a red cube\x0c", spaces_allowed=True) is None
    assert first_control_character("a\x1fred\x0bcube", spaces_allowed=True) is None
    assert first_control_character("a red\x0c\x00", spaces_allowed=True) == 6


def test_a_config_files_prompt_is_checked_too():
    with pytest.raises(DreamtextError, match="the prompt holds the control character U"):
        validate(TrainConfig(prompt="a red cube\x00"))


def test_a_prompt_of_only_invisible_characters_is_empty(tmp_path, monkeypatch, capsys):
    """A zero-width space (pasted from a web page) or a byte-order mark (``"$(cat
    prompt.txt)"``) shows nothing, but passed the empty-prompt check and was trained."""
    monkeypatch.chdir(tmp_path)
    for model in ("/no/model", "builtin:shapes"):  # not an unknown caption quoted as ""
        code, err = run_main(["text", "\u200b \ufeff", "--model", model], capsys)
        assert code == 2
        assert err == [
            "dreamtext: error: the prompt is empty (it holds only invisible characters: U+200B, "
            'U+FEFF); give a text prompt, e.g. dreamtext text "a castle"'
        ]  # each named once: the byte-order mark was left out
        code, err = run_main(["text", "\u200b\u200b", "--model", model], capsys)
        assert err == [
            "dreamtext: error: the prompt is empty (it holds only invisible characters: U+200B); "
            'give a text prompt, e.g. dreamtext text "a castle"'
        ]
    assert list(tmp_path.iterdir()) == []


def test_a_prompts_file_line_of_only_invisible_characters_is_a_blank_line(tmp_path):
    """An editor shows a line holding a zero-width space blank, as README says blank lines are
    skipped; it was a prompt, trained in a run_<hash> folder (refused by the built-in prior
    with a caption that printed as \"\")."""
    from dreamtext.batch import read_prompts

    path = tmp_path / "prompts.txt"
    path.write_text("a red cube\n\u200b\n \u2060 \u00ad\n")
    entries = read_prompts(path, tmp_path / "workspace")
    assert [(e.line, e.prompt) for e in entries] == [(1, "a red cube")]


@pytest.mark.parametrize("mark", ["\u06dd", "\u0600 \u0605", "\u070f", "\u08e2", "\U000110bd"])
def test_a_prompt_of_format_characters_that_draw_a_mark_is_text(tmp_path, mark):
    """The end of ayah (U+06DD), an Arabic number sign (U+0600-U+0605), the Syriac abbreviation
    mark, a Kaithi number sign are format characters (Unicode category Cf) that draw a mark
    (Prepended_Concatenation_Mark): a prompt of them was refused as "the prompt is empty (it
    holds only invisible characters: U+06DD)", a --negative of them too, and a prompts file's
    line of them skipped as blank."""
    from dreamtext.batch import read_prompts

    validate(TrainConfig(prompt=mark))
    validate(TrainConfig(prompt="a red cube", guidance=GuidanceConfig(negative=mark)))
    path = tmp_path / "prompts.txt"
    path.write_text(f"a red cube\n{mark}\n\u200b\n", encoding="utf-8")
    entries = read_prompts(path, tmp_path / "workspace")
    assert [(e.line, e.prompt) for e in entries] == [(1, "a red cube"), (2, mark)]


def test_the_format_characters_that_draw_a_mark_are_unicodes_prepended_concatenation_marks():
    """PropList.txt (Unicode 15.1): 0600..0605, 06DD, 070F, 0890..0891, 08E2, 110BD, 110CD."""
    from dreamtext.prompts_text import VISIBLE_FORMAT_CHARACTERS, shows_nothing

    assert sorted(VISIBLE_FORMAT_CHARACTERS) == [
        *range(0x0600, 0x0606),
        0x06DD,
        0x070F,
        0x0890,
        0x0891,
        0x08E2,
        0x110BD,
        0x110CD,
    ]
    assert shows_nothing("\u200b \ufeff\u2060\u00ad\u200d")  # the invisible ones stay so


@pytest.mark.parametrize("blank", ["\u3164", "\ufe0f", "\u034f \u200b", "\uffa0\u115f"])
def test_a_prompt_of_default_ignorable_characters_of_other_categories_is_empty(
    tmp_path, monkeypatch, capsys, blank
):
    """A Hangul filler (U+3164, a letter to Unicode that passes for a space), a variation
    selector (U+FE0F, left after an emoji was deleted), the combining grapheme joiner draw
    nothing but are no format characters (Cf): `dreamtext text $'\u3164'` was trained (with the
    built-in prior, "does not know" its caption), a prompts file's line of them a prompt."""
    from dreamtext.batch import read_prompts

    monkeypatch.chdir(tmp_path)
    code, err = run_main(["text", blank, "--model", "builtin:shapes"], capsys)
    assert code == 2
    assert len(err) == 1 and "the prompt is empty (it holds only invisible characters: " in err[0]
    assert list(tmp_path.iterdir()) == []
    path = tmp_path / "prompts.txt"
    path.write_text(f"a red cube\n{blank}\n", encoding="utf-8")
    assert [e.line for e in read_prompts(path, tmp_path / "workspace")] == [1]
    assert not shows_nothing(f"a red cube{blank}")


def test_the_invisible_characters_are_unicodes_default_ignorable_code_points():
    """Against the regex module's Unicode tables (a dependency of transformers): a character
    draws nothing where it is Default_Ignorable_Code_Point or an invisible Cf, and only there;
    the Cf characters outside Default_Ignorable_Code_Point are the marks that draw
    (Prepended_Concatenation_Mark) and interlinear or hieroglyph controls."""
    import unicodedata

    regex = pytest.importorskip("regex")
    ignorable = regex.compile(r"\p{Default_Ignorable_Code_Point}")
    marks = regex.compile(r"\p{Prepended_Concatenation_Mark}")
    for code in range(0x110000):
        char = chr(code)
        if unicodedata.category(char) == "Cf":
            assert draws_nothing(char) is not bool(marks.match(char)), hex(code)
        else:
            assert draws_nothing(char) is bool(ignorable.match(char)), hex(code)


def test_a_nul_in_a_prompts_file_names_its_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.txt").write_bytes(b"a red cube\n# fine\na blue\x00 sphere\n")
    code, err = run_main(["batch", "prompts.txt", "--model", "builtin:shapes"], capsys)
    assert code == 2
    assert err == [
        "dreamtext: error: prompts.txt:3: the line holds the control character U+0000 (NUL) "
        f"at character 7{ONE_LINE}"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.txt"]


def test_read_prompts_refuses_a_control_character_itself(tmp_path):
    """The batch's own reader (run_batch's), not only the CLI's early check."""
    from dreamtext.batch import read_prompts

    path = tmp_path / "prompts.txt"
    path.write_text("a red cube\n\ta blue\x1b[0m sphere\n")
    with pytest.raises(DreamtextError, match=r"prompts.txt:2: the line holds .*U\+001B \(ESC\)"):
        read_prompts(path, tmp_path / "workspace")
    assert not (tmp_path / "workspace").exists()


def test_a_nul_in_a_piped_prompts_list_is_one_line_in_a_real_process(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "dreamtext.cli", "batch", "/dev/stdin", "--model", "builtin:shapes"],
        input=b"a red cube\na green\x00 cube\n",
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=300,
    )
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert err.strip().splitlines() == [
        "dreamtext: error: /dev/stdin:2: the line holds the control character U+0000 (NUL) at "
        f"character 8{ONE_LINE}"
    ]
    assert list(tmp_path.iterdir()) == []


def test_a_negative_prompt_of_only_invisible_characters_is_refused(tmp_path, monkeypatch, capsys):
    """`--negative $'\\u200b'` steered Stable Diffusion away from a zero-width space's tokens
    without a word, and the built-in prior said it did not know "" (an invisible caption)."""
    monkeypatch.chdir(tmp_path)
    for model in ("/no/model", "builtin:shapes"):
        code, err = run_main(
            ["text", "a red cube", "--model", model, "--negative", "\u200b"], capsys
        )
        assert code == 2
        assert err == [
            "dreamtext: error: the negative prompt (--negative, guidance.negative) holds only "
            "invisible characters (U+200B); leave it empty for none, or give words"
        ]
    assert list(tmp_path.iterdir()) == []
    validate(TrainConfig(prompt="a red cube"))  # the empty default stays "none"
