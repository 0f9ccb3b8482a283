"""Value tests of what a prompt's text may hold (mutation round 67P)."""

from pathlib import Path

import pytest

from dreamtext.errors import DreamtextError
from dreamtext.prompts_text import check_prompt_characters, check_prompt_lines


def test_a_prompts_file_lets_through_the_control_characters_python_reads_as_spaces():
    """The reader splits a file at line feeds only and joins a line's words with single spaces:
    a page break at a line's end, a CR of a CRLF file or U+001F between words is no word."""
    check_prompt_lines(Path("p.txt"), ["a red cube\x0c", "a red\x1fcube\r", "a\x0bcube"])
    with pytest.raises(DreamtextError, match=r"p\.txt:2: the line holds the control character"):
        check_prompt_lines(Path("p.txt"), ["a red cube", "a red\x00cube"])


def test_a_command_line_prompt_refuses_a_form_feed_but_not_a_tab():
    check_prompt_characters("a red\tcube", "the prompt")
    with pytest.raises(DreamtextError, match="U\\+000C at character 6"):
        check_prompt_characters("a red\x0ccube", "the prompt")


@pytest.mark.parametrize(("raw", "byte"), [(b"caf\xe9", "0xE9"), (b"\x80 cube", "0x80")])
def test_a_byte_that_is_not_utf8_is_named_by_its_value(raw, byte):
    """Python decodes such a command-line byte b to U+DC00 + b (surrogateescape), b ≥ 0x80."""
    text = raw.decode("utf-8", "surrogateescape")
    with pytest.raises(DreamtextError, match=rf"not UTF-8 text \({byte}\) at character"):
        check_prompt_characters(text, "the prompt")
