"""What a prompt's text may hold, checked before anything loads (torch-free: the CLI's early
checks and the batch's prompts file reader use it).

A control character (Unicode category ``Cc``: U+0000-U+001F, U+007F-U+009F) other than a tab
is refused: a NUL was accepted from a command-line argument, a prompts file or a pipe and then
failed in the middle of a run (a path with an embedded null byte, a config.json no editor
shows the same), and a stray escape or form feed would be trained as part of the prompt. A tab
stands between words like a space. A byte that is not UTF-8 (a command-line argument from a
Latin-1 terminal, which Python decodes to a lone surrogate, category ``Cs``) is refused too."""

from __future__ import annotations

import unicodedata
from pathlib import Path

from dreamtext.errors import DreamtextError, typed_in_utf8, utf8_locale_fix

# The control characters a user is likely to have typed or piped by mistake, by name.
_NAMES = {0x00: "NUL", 0x0A: "a line break", 0x0D: "a carriage return", 0x1B: "ESC"}


def first_control_character(text: str, spaces_allowed: bool = False) -> int | None:
    """The index in ``text`` of its first control character other than a tab, else ``None``;
    with ``spaces_allowed``, of its first that Python does not take for a space either (a form
    feed, a vertical tab or U+001C-U+001F are spaces to ``str.split``)."""
    for index, char in enumerate(text):
        if char == "\t" or (spaces_allowed and char.isspace()):
            continue
        if unicodedata.category(char) == "Cc":
            return index
    return None


# The format characters (Unicode category ``Cf``) that draw a mark: Unicode's
# Prepended_Concatenation_Mark ones (PropList.txt), an Arabic or Kaithi number sign, the end of
# ayah, the Syriac abbreviation mark, drawn around the digits or letters after them.
VISIBLE_FORMAT_CHARACTERS = frozenset(
    [*range(0x0600, 0x0606), 0x06DD, 0x070F, 0x0890, 0x0891, 0x08E2, 0x110BD, 0x110CD]
)


# The characters of other categories than ``Cf`` that draw nothing: Unicode's
# Default_Ignorable_Code_Point ones (DerivedCoreProperties.txt) that are not format characters,
# as inclusive ranges: the combining grapheme joiner, the Hangul fillers (U+3164 passes for a
# space), the Khmer inherent vowels, the Mongolian and the other variation selectors (U+FE0F
# after an emoji), and the code points Unicode reserves as ignorable.
INVISIBLE_CHARACTERS_OF_OTHER_CATEGORIES = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180D),
    (0x180F, 0x180F),
    (0x2065, 0x2065),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0xE0000, 0xE0000),
    (0xE0002, 0xE001F),
    (0xE0080, 0xE0FFF),
)


def draws_nothing(char: str) -> bool:
    """Whether the character ``char`` is invisible: a format character (Unicode category
    ``Cf``: a zero-width space or joiner, a word joiner, a byte-order mark, a soft hyphen) but
    those that draw a mark (:data:`VISIBLE_FORMAT_CHARACTERS`), or another default-ignorable
    one (:data:`INVISIBLE_CHARACTERS_OF_OTHER_CATEGORIES`: a Hangul filler, a variation
    selector)."""
    code = ord(char)
    if unicodedata.category(char) == "Cf":
        return code not in VISIBLE_FORMAT_CHARACTERS
    return any(low <= code <= high for low, high in INVISIBLE_CHARACTERS_OF_OTHER_CATEGORIES)


def shows_nothing(text: str) -> bool:
    """Whether ``text`` is blank to the eye: spaces and characters that draw nothing
    (:func:`draws_nothing`) only. Such a prompt (pasted from a web page, or
    ``"$(cat prompt.txt)"`` of a file holding a BOM) was trained as text no one could see, and
    such a line of a prompts file, which an editor shows blank, as a prompt in a ``run_<hash>``
    folder. The ``Cf`` characters that draw a mark (``"\u06dd"``, the end of ayah) are text one
    can see."""
    return all(char.isspace() or draws_nothing(char) for char in text)


def is_prompt_line(text: str) -> bool:
    """Whether a prompts file's line ``text`` (stripped) is a prompt: not blank to the eye
    (:func:`shows_nothing`) and not a ``#`` comment. The batch's reader and its early checks
    skip the same lines by it."""
    return not shows_nothing(text) and not text.startswith("#")


def invisible_characters(text: str) -> str:
    """``U+200B, U+FEFF``: each character of ``text`` other than whitespace, once, for the
    refusal of a text that :func:`shows_nothing`."""
    return ", ".join(dict.fromkeys(f"U+{ord(char):04X}" for char in text if not char.isspace()))


def describe_character(char: str) -> str:
    """``U+0000 (NUL)``: a control character as a message names it."""
    code = ord(char)
    name = _NAMES.get(code)
    return f"U+{code:04X}" + (f" ({name})" if name else "")


def first_undecoded_byte(text: str) -> tuple[int, int] | None:
    """``(position, byte)`` of the first byte of ``text`` that was not UTF-8, ``None`` if none:
    Python reads such a byte of a command-line argument or a file name (a Latin-1 system's
    ``café``) as the lone surrogate U+DC80-U+DCFF, 0xDC00 above the byte."""
    return next(
        ((i, ord(c) - 0xDC00) for i, c in enumerate(text) if 0xDC80 <= ord(c) <= 0xDCFF), None
    )


def check_prompt_characters(text: str, where: str, spaces_allowed: bool = False) -> None:
    """Refuse ``text`` (a prompt; ``where`` names it in the message, e.g. ``"the prompt"`` or
    ``"prompts.txt:3: the line"``) if it holds a control character other than a tab, at its
    1-based character position (a line break in a command-line argument is one too);
    ``spaces_allowed`` as for :func:`first_control_character`."""
    stray = next((i for i, char in enumerate(text) if unicodedata.category(char) == "Cs"), None)
    if stray is not None:
        # Python decodes command-line bytes that are not UTF-8 (a Latin-1 terminal's "café")
        # to lone surrogates, which the tokenizer then failed on with a traceback.
        byte = f"0x{ord(text[stray]) - 0xDC00:02X}" if 0xDC80 <= ord(text[stray]) <= 0xDCFF else ""
        if typed_in_utf8(text):
            raise DreamtextError(f"{where} is UTF-8 text, which Python read in {utf8_locale_fix()}")
        raise DreamtextError(
            f"{where} holds a byte that is not UTF-8 text {byte and f'({byte}) '}at character "
            f"{stray + 1}: set your terminal to UTF-8 and type it again, or write the prompt in "
            "a UTF-8 file (a prompts file for dreamtext batch)"
        )
    index = first_control_character(text, spaces_allowed)
    if index is None:
        return
    raise DreamtextError(
        f"{where} holds the control character {describe_character(text[index])} at "
        f"character {index + 1}; remove it (a prompt is one line of printable text; tabs "
        "count as spaces)"
    )


def check_prompt_lines(path: Path, lines: list[str]) -> None:
    """Refuse the first line of a prompts file (``lines``, as
    :func:`dreamtext.inputs.read_prompt_lines` splits it) holding a control character other
    than a tab, ``# comment`` lines included (a NUL there is as likely a file that is not
    text), with ``path:line``. Those Python takes for spaces are let through: the reader joins
    a line's words with single spaces (a page break pasted at a line's end is read as none)."""
    for number, line in enumerate(lines, start=1):
        check_prompt_characters(line, f"{path}:{number}: the line", spaces_allowed=True)


__all__ = [
    "INVISIBLE_CHARACTERS_OF_OTHER_CATEGORIES",
    "VISIBLE_FORMAT_CHARACTERS",
    "check_prompt_characters",
    "check_prompt_lines",
    "describe_character",
    "draws_nothing",
    "first_control_character",
    "first_undecoded_byte",
    "invisible_characters",
    "is_prompt_line",
    "shows_nothing",
]
