"""Values of the export flag table (dreamtext.exportflags), checked against its help and
ExportOptions.validate's bounds: each refusal is the parser's, before the export's imports."""

from __future__ import annotations

import argparse
import re

import pytest

from dreamtext.exportflags import add_export_flags, apply_export_flags


class _Refused(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would exit; the test wants the line
        raise _Refused(message)


def _parse(*words: str) -> argparse.Namespace:
    parser = _Parser(prog="dreamtext export")
    add_export_flags(parser)
    return parser.parse_args(list(words))


@pytest.mark.parametrize("text", ["0", "0.0", "-0"])
def test_a_zero_threshold_is_refused_by_the_parser(text):
    """The help says "mesh the density above this iso-level", a positive density (validate:
    "must be a positive density"): 0 is refused in the parser's line, naming auto too."""
    with pytest.raises(
        _Refused, match=f"--threshold: expected a positive number or auto, got '{text}'"
    ):
        _parse("--threshold", text)


def test_a_tiny_positive_threshold_is_taken():
    assert _parse("--threshold", "1e-30").threshold == 1e-30


def test_formats_are_read_in_any_case():
    """`--formats GLB,Ply` names glb and ply: the table lowercases them (ExportOptions.validate
    knows the lowercase names only), each once (mesh.json recorded ["glb", "glb"])."""
    args = _parse("--formats", "GLB, Ply,glb")

    class Options:
        formats = ("glb", "obj", "ply")

    options = Options()
    apply_export_flags(args, options)
    assert options.formats == ("glb", "ply")


@pytest.mark.parametrize("text", ["", "  "])
def test_an_empty_formats_list_is_said_to_be_empty(text):
    """`--formats ""` (a variable unset in a script) names no format at all: its line says so,
    not that one entry of a list is empty."""
    line = "--formats: is empty: name formats, e.g. glb,ply"
    with pytest.raises(_Refused, match=re.escape(line)):
        _parse("--formats", text)


@pytest.mark.parametrize("text", ["Auto", "AUTO", " auto"])
def test_auto_threshold_is_read_in_any_case_as_formats_are(text):
    """`--formats GLB` was read as glb while `--threshold Auto` was refused as "expected a
    positive number or auto"."""
    assert _parse("--threshold", text).threshold == "auto"
