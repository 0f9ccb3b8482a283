"""The sentence search never makes a sentence over CLIP's 77 tokens (which CLIP and Stable
Diffusion cut short, the noun with it), and a word no sentence can hold, from a word list,
``--noun`` or ``--quantifier``, is one line naming where it is."""

import pytest
import torch
from PIL import Image

from dreamtext.cli import main
from dreamtext.describe import (
    CLIP_MAX_TOKENS,
    ClipEncoder,
    SentenceScores,
    fits_by_bytes,
    read_vocabulary,
    search_sentence,
    tokens_at_most,
)
from dreamtext.errors import DreamtextError


class LongerIsBetterEncoder:
    """Scores rise with a sentence's length in characters (``cos(10 / length)``): an unbounded
    search would append words until ``max_words``."""

    def encode_texts(self, texts):
        angles = torch.tensor([10.0 / len(text) for text in texts])
        return torch.stack([angles.cos(), angles.sin()], dim=-1)

    def encode_image(self, image):
        return torch.tensor([1.0, 0.0])


def test_the_byte_bound_is_an_upper_bound_of_clips_tokens(tiny_clip_path):
    encoder = ClipEncoder(str(tiny_clip_path))
    tokenizer = encoder.processor.tokenizer
    for sentence in ["An image of a mug", "An image of a lot of red wooden mugs", "x" * 90]:
        assert len(tokenizer(sentence)["input_ids"]) <= tokens_at_most(sentence)
    assert encoder.fits("An image of a mug")
    assert not encoder.fits("An image of a " + "mug " * 80)


def test_the_search_keeps_every_sentence_within_77_tokens():
    long_words = [f"{c}" * 30 for c in "abcdefgh"]  # 30 bytes each: one fits, not three
    scores = SentenceScores(LongerIsBetterEncoder(), LongerIsBetterEncoder().encode_image(None))
    result = search_sentence(scores, ["mug"], long_words, max_words=15)
    assert result.words  # it did add words
    assert tokens_at_most(result.sentence) <= CLIP_MAX_TOKENS
    assert all(tokens_at_most(s) <= CLIP_MAX_TOKENS for s in scores.cache)
    # Without the bound the same search appends words far past 77 tokens.
    unbounded = search_sentence(
        SentenceScores(LongerIsBetterEncoder(), LongerIsBetterEncoder().encode_image(None)),
        ["mug"],
        long_words,
        max_words=15,
        fits=lambda sentence: True,
    )
    assert tokens_at_most(unbounded.sentence) > CLIP_MAX_TOKENS


def test_a_noun_too_long_for_any_sentence_is_refused_by_the_search():
    scores = SentenceScores(LongerIsBetterEncoder(), LongerIsBetterEncoder().encode_image(None))
    with pytest.raises(DreamtextError, match="fits in CLIP's 77 tokens with --noun"):
        search_sentence(scores, [], ["red"], noun="m" * 70, fits=fits_by_bytes)


def test_a_5000_character_word_in_a_word_list_names_its_file_and_line(tmp_path):
    path = tmp_path / "nouns.txt"
    path.write_text("mug\n# a comment\n" + "w" * 5000 + "\nbox\n")
    with pytest.raises(DreamtextError) as caught:
        read_vocabulary(path, "nouns.txt")
    assert str(caught.value) == (
        f"word list {path}:3: the word 'wwwwwwwwwwwwwwwwwwww…' is 5000 bytes long; CLIP reads "
        "at most 77 tokens of a sentence, so a word may have 64 bytes at most: shorten it"
    )
    path.write_text("mug\n" + "w" * 64 + "\n")
    assert read_vocabulary(path, "nouns.txt") == ["mug", "w" * 64]


@pytest.mark.parametrize("command", ["describe", "image"])
@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--nouns", "long.txt"], "word list long.txt:2: the word 'llllllllllllllllllll…' is"),
        (["--adjectives", "long.txt"], "word list long.txt:2: the word"),
        (["--noun", "n" * 5000], "--noun 'nnnnnnnnnnnnnnnnnnnn…' is 5000 bytes long"),
        (["--quantifier", "q" * 100], "--quantifier 'qqqqqqqqqqqqqqqqqqqq…' is 100 bytes"),
    ],
)
def test_a_word_too_long_from_the_command_line_is_one_line_and_writes_nothing(
    tmp_path, monkeypatch, capsys, command, flags, fragment
):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 64), (200, 40, 40)).save("mug.png")
    (tmp_path / "long.txt").write_text("mug\n" + "l" * 5000 + "\n")
    try:
        code = main([command, "mug.png", *flags])
    except SystemExit as done:
        code = done.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and fragment in err[0], err
    assert "64 bytes at most: shorten it" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.txt", "mug.png"]


def test_the_byte_bound_accepts_a_sentence_of_exactly_77_tokens():
    """75 bytes besides spaces plus the start and end tokens are 77: the most CLIP reads."""
    start = "An image of a "
    filler = 75 - len(start.replace(" ", "")) - 3  # "mug" at the end
    at_limit = start + "x" * filler + " mug"
    assert tokens_at_most(at_limit) == CLIP_MAX_TOKENS
    assert fits_by_bytes(at_limit)
    assert not fits_by_bytes(start + "x" * (filler + 1) + " mug")


def test_clip_fits_a_sentence_of_exactly_its_token_limit(tiny_clip_path):
    """A sentence of exactly ``model_max_length`` tokens (start and end included) is read whole:
    it fits; one more token does not."""
    encoder = ClipEncoder(str(tiny_clip_path))
    tokenizer = encoder.processor.tokenizer
    limit = tokenizer.model_max_length
    sentence = "An image of a"
    for word in ("mug", "a"):  # long words first, then one-letter ones to reach the limit
        while len(tokenizer(f"{sentence} {word}")["input_ids"]) <= limit:
            sentence += f" {word}"
    assert len(tokenizer(sentence)["input_ids"]) == limit
    assert tokens_at_most(sentence) > limit  # the tokenizer decides, not the byte bound
    assert encoder.fits(sentence)
    assert not encoder.fits(sentence + " a")


@pytest.mark.parametrize("command", ["describe", "image"])
def test_a_quantifier_and_noun_no_sentence_holds_are_refused_before_clip_loads(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch, capsys, command
):
    """`describe mug.png --quantifier <60 bytes> --noun <60 bytes>` (each within a word's 64
    bytes) was refused by the search once CLIP had loaded, and left the workspace's status.json
    and the image's copy; `image` after both loads. The base sentence is counted with CLIP's
    tokenizer alone: one line, nothing written."""
    import dreamtext.describe
    import dreamtext.models as models

    def clip(*args, **kwargs):
        raise AssertionError("CLIP was loaded before the sentence was checked")

    models.clear_cache()
    monkeypatch.setattr(dreamtext.describe, "ClipEncoder", clip)
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 64), (200, 40, 40)).save("mug.png")
    flags = ["--quantifier", "q" * 60, "--noun", "n" * 60, "--clip", str(tiny_clip_path)]
    flags += ["--model", str(tiny_sd_path)] if command == "image" else []
    assert main([command, "mug.png", *flags, "--workspace", "run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("dreamtext: error: no sentence 'An image of <quantifier> <noun>' ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mug.png"]
