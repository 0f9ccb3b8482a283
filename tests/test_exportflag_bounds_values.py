"""The ends of each `dreamtext export` flag's range, as its help gives them ("even, at least
16", "at least 4; 0 keeps every face", "at least 60", "at least 8"), second mutation pass."""

from __future__ import annotations

import argparse

import pytest

from dreamtext.exportflags import EXPORT_FLAGS, add_export_flags, apply_export_flags


class _Refused(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise _Refused(message)


def _parse(*words: str) -> argparse.Namespace:
    parser = _Parser(prog="dreamtext export")
    add_export_flags(parser)
    return parser.parse_args(list(words))


@pytest.mark.parametrize(
    ("flag", "text", "value"),
    [
        ("--video-size", "16", 16),
        ("--decimate", "4", 4),
        ("--decimate", "0", 0),
        ("--frames", "60", 60),
        ("--resolution", "8", 8),
        ("--texture-size", "8", 8),
    ],
)
def test_each_export_flag_takes_the_end_of_its_range(flag, text, value):
    assert getattr(_parse(flag, text), flag[2:].replace("-", "_")) == value


@pytest.mark.parametrize(
    ("flag", "text", "words"),
    [
        ("--video-size", "17", "must be an even number of pixels, got 17"),
        ("--video-size", "14", "must be at least 16, got 14"),
        ("--decimate", "3", "a closed mesh has at least 4 faces (0 keeps every face), got '3'"),
        ("--decimate", "1", "a closed mesh has at least 4 faces"),
        ("--decimate", "-1", "expected a face count (0 keeps every face), got '-1'"),
        ("--frames", "59", "must be at least 60, got 59"),
        ("--resolution", "7", "must be at least 8, got 7"),
        ("--texture-size", "7", "must be at least 8, got 7"),
    ],
)
def test_just_past_each_export_flags_end_is_refused(flag, text, words):
    with pytest.raises(_Refused) as refused:
        _parse(flag, text)
    assert f"{flag}: " in str(refused.value)
    assert words in str(refused.value)


class _Options:
    """An ExportOptions' defaults, as the help's brackets give them."""

    def __init__(self):
        self.resolution, self.threshold, self.decimate = 256, None, 50000
        self.texture_size, self.formats, self.video = 1024, ("glb", "obj", "ply"), True
        self.video_size, self.frames, self.device = 256, 60, "auto"


def test_falsy_flags_replace_the_runs_options_and_unset_flags_keep_them():
    """--decimate 0 ("keeps every face") and --no-video are given values, not unset flags."""
    options = _Options()
    apply_export_flags(_parse("--decimate", "0", "--no-video"), options)
    assert options.decimate == 0
    assert options.video is False
    untouched = _Options()
    apply_export_flags(_parse(), untouched)
    assert vars(untouched) == vars(_Options())


def test_the_flag_words_of_an_option_set_it_back():
    """export_flag_words' words, parsed again, give the same options: auto threshold,
    --no-video, a lowercase formats list."""
    from dreamtext.exportflags import export_flag_words

    options = _Options()
    options.video, options.formats, options.decimate = False, ("glb", "ply"), 0
    names = [row.option for row in EXPORT_FLAGS]
    words = export_flag_words(options, names)
    assert words[words.index("--threshold") + 1] == "auto"
    assert "--no-video" in words
    again = _Options()
    again.video, again.threshold, again.decimate = True, 0.5, 7
    apply_export_flags(_parse(*words), again)
    assert vars(again) == vars(options)


@pytest.mark.parametrize("text", ["glb,,obj", "glb,"])
def test_an_empty_formats_entry_is_named_as_empty(text):
    """`glb,,obj` or a trailing comma: a format lost in editing, said so, not "unknown"."""
    with pytest.raises(_Refused) as refused:
        _parse("--formats", text)
    assert f"has an empty entry in '{text}': name formats between single commas" in str(
        refused.value
    )
