"""The sentence search of `dreamtext image` keeps to sentences the descriptor can learn: counted
as the descriptor's prompt (its placeholders, the noun's pieces again without words) with its
longest view label, in Stable Diffusion's tokenizer. It kept to CLIP's 77 tokens only, and a
sentence it found was refused by the descriptor after both models had loaded and it had run."""

import functools
import zlib

import pytest
import torch
from PIL import Image

import dreamtext.describe
import dreamtext.models
import dreamtext.trainer
from dreamtext.config import resolve_config
from dreamtext.describe import (
    DescribeOptions,
    SentenceScores,
    check_options,
    search_sentence,
    tokens_at_most,
)
from dreamtext.descriptor import (
    DescriptorOptions,
    DescriptorTrainer,
    SentencesToLearn,
    check_sentence_to_learn,
    learned_embeds_path,
)
from dreamtext.errors import DreamtextError
from dreamtext.guidance import GuidanceConfig
from dreamtext.imageto3d import ImageOptions, run_image
from dreamtext.models import load_stable_diffusion, read_tokenizer

NOUN = "apartment building"  # 17 pieces in the tiny tokenizer (every letter but "a" one piece)
LABELS = GuidanceConfig().views.labels


class ShorterIsBetter:
    """Scores fall with a sentence's length (``cos(length / 100)``): no word raises a score."""

    def encode_texts(self, texts):
        angles = torch.tensor([len(text) / 100.0 for text in texts])
        return torch.stack([angles.cos(), angles.sin()], dim=-1)

    def encode_image(self, image):
        return torch.tensor([1.0, 0.0])


@functools.cache
def _word_vector(word: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(zlib.crc32(word.encode()))
    return torch.randn(8, generator=generator, dtype=torch.float64)


class HashedWords:
    """A sentence's embedding is the sum of a vector per word, drawn from the word's CRC (the
    image's: the word "image!"): a search of no particular bias that appends several words."""

    def encode_texts(self, texts):
        sums = torch.stack([sum(map(_word_vector, text.split())) for text in texts])
        return sums / sums.norm(dim=-1, keepdim=True)

    def encode_image(self, image):
        return self.encode_texts(["image!"])[0]


def _scores(encoder) -> SentenceScores:
    return SentenceScores(encoder, encoder.encode_image(None))


def _search(tiny_sd_path, *args, learn: bool = True, **kwargs):
    """``search_sentence`` scored by :class:`ShorterIsBetter`, CLIP's fit counted by the tiny
    tokenizer; with ``learn``, the descriptor's too."""
    tokenizer = read_tokenizer(str(tiny_sd_path))
    return search_sentence(
        _scores(ShorterIsBetter()),
        *args,
        fits=lambda sentence: len(tokenizer(sentence).input_ids) <= 77,
        learnable=SentencesToLearn(tokenizer, LABELS) if learn else None,
        **kwargs,
    )


def test_a_search_without_words_is_refused_late_no_more(
    tmp_path, tiny_sd_path, tiny_clip_path, monkeypatch
):
    """`image` with the noun "apartment building" (17 pieces) and a quantifier of 51: the base
    sentence and the prompt with one placeholder fit, so nothing refused it early; no word
    raised CLIP's score, so the search returned the sentence without words, whose prompt holds
    the noun's pieces twice, 93 tokens with its view label, and the descriptor refused it
    after Stable Diffusion and CLIP had loaded and the search had run. The search now appends
    the best word whose prompt fits, and the descriptor trains on it."""

    class Clip(ShorterIsBetter, dreamtext.describe.ClipEncoder):  # CLIP's own fits()
        pass

    dreamtext.models.clear_cache()
    monkeypatch.setattr(dreamtext.describe, "ClipEncoder", Clip)
    texts: list[str] = []
    monkeypatch.setattr(dreamtext.trainer, "train", lambda cfg, **kwargs: texts.append(cfg.prompt))
    nouns, adjectives = tmp_path / "nouns.txt", tmp_path / "adjectives.txt"
    nouns.write_text(f"{NOUN}\n")
    adjectives.write_text("red\n")
    image = tmp_path / "building.png"
    Image.new("RGB", (48, 48), (120, 120, 130)).save(image)
    quantifier = "q" * 51
    options = ImageOptions(
        describe=DescribeOptions(
            clip=str(tiny_clip_path), nouns=nouns, adjectives=adjectives, quantifier=quantifier
        ),
        descriptor=DescriptorOptions(iters=1, checkpoint_every=0, preview_every=0),
    )
    cfg = resolve_config(
        {
            "iters": 1,
            "workspace": str(tmp_path / "run"),
            "prompt": "replaced by the trained sentence",
            "guidance": {"model": str(tiny_sd_path)},
        }
    )
    workspace = run_image(image, options, cfg)
    record = dreamtext.describe.read_record(workspace)
    assert record["sentence"] == f"An image of {quantifier} red {NOUN}"
    assert learned_embeds_path(workspace).is_file()
    assert texts == [f"An image of {quantifier} <descriptor> {NOUN}"]


def test_the_search_appends_the_best_word_that_fits_where_the_sentence_alone_is_too_long(
    tiny_sd_path,
):
    learnable = SentencesToLearn(read_tokenizer(str(tiny_sd_path)), LABELS)
    quantifier = "q" * 51
    alone = _search(tiny_sd_path, [NOUN], ["red", "blue"], quantifier=quantifier, learn=False)
    assert alone.words == []  # as before: no word raises the score
    assert learnable.tokens(quantifier, [], NOUN) == 93
    found = _search(tiny_sd_path, [NOUN], ["red", "blue"], quantifier=quantifier)
    assert found.words == ["red"]  # scored above "blue" (shorter), below the sentence alone
    assert learnable.tokens(quantifier, found.words, NOUN) == 77
    assert found.score < alone.score


def test_no_word_that_fits_is_one_line_naming_the_word_lists(tiny_sd_path):
    """One word would make the sentence fit (one piece: 77 tokens); the vocabulary has none."""
    quantifier = "q" * 51
    with pytest.raises(DreamtextError) as refused:
        # "zzzzz" is 5 placeholders: 81 tokens; "apartment building" again 17
        _search(tiny_sd_path, [NOUN], ["zzzzz"], quantifier=quantifier)
    assert str(refused.value) == (
        "no sentence 'An image of <quantifier> <descriptor> <noun>' fits in the text encoder's "
        f"tokens with its view label with --quantifier '{quantifier}': give a shorter one, or a "
        "shorter word in --nouns or --adjectives"
    )


@pytest.mark.parametrize(("length", "tokens"), [(35, 77), (36, 78)], ids=["77", "78"])
def test_the_search_counts_what_the_descriptor_refuses_at_77_tokens(tiny_sd_path, length, tokens):
    """A sentence without words: the descriptor's prompt holds the noun's 17 pieces twice, and
    with its view label is 77 tokens with a quantifier of 35 letters: the search keeps it and
    the descriptor takes it; one letter more, both refuse it."""
    models = load_stable_diffusion(str(tiny_sd_path))
    learnable = SentencesToLearn(read_tokenizer(str(tiny_sd_path)), LABELS)
    quantifier = "q" * length
    trainer = DescriptorTrainer(models, quantifier, [], NOUN, DescriptorOptions())
    assert learnable.tokens(quantifier, [], NOUN) == tokens
    if tokens <= 77:
        trainer.check_length(LABELS)
        assert learnable.fits(quantifier, [], NOUN)
        return
    with pytest.raises(DreamtextError, match=f"is {tokens} tokens with its view label"):
        trainer.check_length(LABELS)
    assert not learnable.fits(quantifier, [], NOUN)


@pytest.mark.parametrize(
    ("noun", "tokens"),
    [("cat" + "\u0130" * 11, 79), ("cat" + "\u0958" * 6, 85)],
    ids=["dotted-I", "qa"],
)
def test_a_noun_longer_once_normalised_is_counted_as_the_descriptor_counts_it(
    tiny_sd_path, noun, tokens
):
    """'İ' is 2 bytes and 3 pieces once lower-cased, 'क़' (U+0958) 3 bytes and 6 once in NFC: the
    bound by bytes let these sentences through, which the descriptor refuses at 79 and 85
    tokens."""
    models = load_stable_diffusion(str(tiny_sd_path))
    learnable = SentencesToLearn(read_tokenizer(str(tiny_sd_path)), LABELS)
    trainer = DescriptorTrainer(models, "a", [], noun, DescriptorOptions())
    with pytest.raises(DreamtextError, match=f"is {tokens} tokens with its view label"):
        trainer.check_length(LABELS)
    assert not learnable.fits("a", [], noun)
    base = trainer.base_prompt  # CLIP's check of a sentence (ClipEncoder.fits) counts it so too
    assert tokens_at_most(base) >= len(trainer.tokenizer(base, truncation=False).input_ids)


@pytest.mark.parametrize(("length", "tokens"), [(51, 77), (52, 78)], ids=["77", "78"])
def test_the_search_lets_a_pair_through_as_the_early_check_does(tiny_sd_path, length, tokens):
    """Step 1 keeps a quantifier and noun where a word of the lists fits (93 − 17 + 1 = 77
    tokens with a quantifier of 51 letters and "red"), as check_sentence_to_learn, before any
    load, does: a pair it refuses is one that check refused."""
    tokenizer = read_tokenizer(str(tiny_sd_path))
    learnable = SentencesToLearn(tokenizer, LABELS)
    quantifier = "q" * length
    assert learnable.tokens(quantifier, ["red"], NOUN) == tokens
    assert learnable.least_tokens(quantifier, NOUN, learnable.fewest_pieces([NOUN, "red"])) == (
        tokens
    )
    assert learnable.least_tokens("q" * 35, NOUN, None) == 77
    assert learnable.least_tokens("q" * 36, NOUN, None) == 78
    if tokens <= 77:
        check_sentence_to_learn(tokenizer, None, quantifier, [NOUN], [NOUN, "red"], 15, LABELS)
        _search(tiny_sd_path, [NOUN], ["red"], quantifier=quantifier)
        return
    with pytest.raises(DreamtextError, match=f"is at least {tokens} tokens"):
        check_sentence_to_learn(tokenizer, None, quantifier, [NOUN], [NOUN, "red"], 15, LABELS)
    with pytest.raises(DreamtextError, match="fits in the text encoder's tokens with its view"):
        _search(tiny_sd_path, [NOUN], ["red"], quantifier=quantifier)


@pytest.mark.parametrize("adjust", [False, True], ids=["words", "adjust"])
def test_a_search_whose_sentence_fits_finds_what_it_found_before(tiny_sd_path, adjust):
    """The built-in word lists with scores of no particular bias: the same sentence, word for
    word, with the descriptor's count as without it."""
    nouns, adjectives = check_options(DescribeOptions())
    nouns, adjectives = nouns[::20], adjectives[::20]  # every 20th: a search of ~0.1 s
    learnable = SentencesToLearn(read_tokenizer(str(tiny_sd_path)), LABELS)
    before = search_sentence(_scores(HashedWords()), nouns, adjectives, max_words=6, adjust=adjust)
    after = search_sentence(
        _scores(HashedWords()), nouns, adjectives, max_words=6, adjust=adjust, learnable=learnable
    )
    assert len(before.words) >= 2  # words were appended
    assert after == before


def test_a_sentence_describe_found_too_long_to_learn_is_refused_before_any_load(
    tmp_path, tiny_sd_path, tiny_clip_path, monkeypatch, capsys
):
    """`describe` keeps to CLIP's 77 tokens alone (it trains nothing): its sentence without
    words, 93 tokens as the descriptor's prompt, was refused by `image` in the same workspace
    once Stable Diffusion had loaded. It is one line before any weight loads."""
    from dreamtext.cli import main
    from dreamtext.describe import describe

    class Clip(ShorterIsBetter, dreamtext.describe.ClipEncoder):
        pass

    nouns = tmp_path / "nouns.txt"
    nouns.write_text(f"{NOUN}\n")
    image = tmp_path / "building.png"
    Image.new("RGB", (48, 48), (120, 120, 130)).save(image)
    workspace, quantifier = tmp_path / "run", "q" * 51
    options = DescribeOptions(clip=str(tiny_clip_path), nouns=nouns, quantifier=quantifier)
    assert describe(image, workspace, options, encoder=Clip(str(tiny_clip_path))) == (
        f"An image of {quantifier} {NOUN}"
    )

    def no_weights(cls, path, subfolder, **kwargs):
        if subfolder != "tokenizer":
            raise AssertionError(f"{subfolder} was loaded before the sentence was checked")
        return real(cls, path, subfolder, **kwargs)

    dreamtext.models.clear_cache()
    real = dreamtext.models._from_pretrained
    monkeypatch.setattr(dreamtext.models, "_from_pretrained", no_weights)
    capsys.readouterr()
    args = ["image", str(image), "--workspace", str(workspace), "--model", str(tiny_sd_path)]
    assert main([*args, "--clip", str(tiny_clip_path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"dreamtext: error: the sentence to learn, 'An image of {quantifier} <descriptor> {NOUN}', "
        "is 93 tokens with its view label once its descriptor is written as the words' pieces, "
        "but the text encoder reads 77 (start and end included); describe the image again with a "
        "shorter --noun or a smaller --max-words, in a new --workspace"
    ]
    assert [p.name for p in workspace.iterdir()] == ["descriptor"]
    assert [p.name for p in (workspace / "descriptor").iterdir()] == ["sentence.json"]


def _image(tmp_path):
    path = tmp_path / "building.png"
    Image.new("RGB", (48, 48), (120, 120, 130)).save(path)
    return path


@pytest.mark.parametrize(("letters", "tokens"), [(5, 77), (6, 78)], ids=["77", "78"])
def test_word_lists_without_a_word_that_fits_are_refused_before_any_load(
    tmp_path, tiny_sd_path, tiny_clip_path, no_weight_loads, capsys, letters, tokens
):
    """`image --noun "apartment building" --quantifier <47 letters>` with word lists whose one
    word is 'z' * 6: the sentence without words is 89 tokens as the descriptor's prompt with its
    view label, with the word 72 + 6 = 78. The check before the loads counted a one-piece word
    that the lists did not hold, so CLIP and Stable Diffusion loaded and the search refused
    ('no word of the vocabulary makes it fit'). It is one line before any load, nothing
    written; the longest word accepted, 'z' * 5 (77 tokens), goes on to the loads."""
    from dreamtext.cli import main

    words = tmp_path / "words.txt"
    words.write_text("z" * letters + "\n", encoding="utf-8")
    quantifier = "q" * 47
    args = ["image", str(_image(tmp_path)), "--noun", NOUN, "--quantifier", quantifier]
    args += ["--nouns", str(words), "--adjectives", str(words), "--model", str(tiny_sd_path)]
    args += ["--clip", str(tiny_clip_path), "--workspace", str(tmp_path / "run")]
    if tokens <= 77:
        with pytest.raises(AssertionError, match="CLIP was loaded before the texts were checked"):
            main(args)
        return
    assert main(args) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"dreamtext: error: the sentence to learn, 'An image of {quantifier} <descriptor> {NOUN}'"
        ", is at least 78 tokens with its view label once its descriptor is written as the "
        "words' pieces, but the text encoder reads 77 (start and end included); give a shorter "
        "--noun or --quantifier, or a word of at most 5 pieces in --nouns or --adjectives"
    ]
    assert not (tmp_path / "run").exists()


class LongerIsBetter:
    """Scores rise with a sentence's length (``cos(10 / length)``)."""

    def encode_texts(self, texts):
        angles = torch.tensor([10.0 / len(text) for text in texts])
        return torch.stack([angles.cos(), angles.sin()], dim=-1)

    def encode_image(self, image):
        return torch.tensor([1.0, 0.0])


def test_the_search_chooses_a_quantifier_with_which_a_word_of_the_lists_fits(tiny_sd_path):
    """A noun of 62 pieces and the one word 'z' * 6: with a one-piece quantifier the prompt is
    77 tokens, with 'a lot of' (4 pieces) 80. Step 1 let 'a lot of' through (a one-piece word
    would fit), CLIP scored it best, and the search refused: no word of the vocabulary fit.
    It keeps the quantifiers with which a word of the lists fits."""
    tokenizer = read_tokenizer(str(tiny_sd_path))
    learnable = SentencesToLearn(tokenizer, LABELS)
    noun, word = "y" * 62, "z" * 6
    found = search_sentence(
        _scores(LongerIsBetter()),
        [word],
        [word],
        noun=noun,
        fits=lambda sentence: len(tokenizer(sentence).input_ids) <= 77,
        learnable=learnable,
    )
    assert (found.quantifier, found.words) == ("some", [word])  # the longest of one piece
    assert learnable.tokens("some", [word], noun) == 77
    assert learnable.tokens("a lot of", [word], noun) == 80


def test_the_search_refuses_exactly_the_options_the_check_before_the_loads_refuses(tiny_sd_path):
    """Around the boundary, a quantifier or noun of n letters and word lists whose one word has
    k: check_sentence_to_learn (before any load) refuses the options where the search (after
    both loads) finds no sentence to learn, and only those."""
    tokenizer = read_tokenizer(str(tiny_sd_path))

    def refused(call) -> bool:
        try:
            call()
        except DreamtextError:
            return True
        return False

    cases = [("q" * n, NOUN, "z" * k) for n in range(46, 53) for k in range(1, 9)]
    cases += [(None, "y" * n, "z" * k) for n in range(58, 65) for k in range(4, 11)]
    outcomes = set()
    for quantifier, noun, word in cases:
        learnable = SentencesToLearn(tokenizer, LABELS)
        search = functools.partial(
            search_sentence,
            _scores(LongerIsBetter()),
            [word],
            [word],
            noun=noun,
            quantifier=quantifier,
            fits=lambda sentence: len(tokenizer(sentence).input_ids) <= 77,
            learnable=learnable,
        )
        check = functools.partial(
            check_sentence_to_learn, tokenizer, noun, quantifier, [], [word], 15, LABELS
        )
        assert refused(search) == refused(check), (quantifier, noun, word)
        outcomes.add(refused(check))
    assert outcomes == {True, False}


# The view labels a user can set: --side-views split, guidance.views.below (a --config key) and
# --no-view-prompt; the longest quantifier whose sentence, with NOUN, fits without a word and
# with "red" (longer labels leave fewer letters).
VIEW_SETTINGS = {
    "default": ({}, (35, 51)),
    "split-sides": ({"views": {"split_sides": True}}, (34, 50)),  # 'right side view'
    "below": ({"views": {"below": 90.0}}, (32, 48)),  # 'side below view'
    "split-below": ({"views": {"split_sides": True, "below": 90.0}}, (31, 47)),
    "no-labels": ({"view_dependent": False}, (38, 54)),
}


@pytest.mark.parametrize("views", list(VIEW_SETTINGS), ids=list(VIEW_SETTINGS))
def test_the_count_is_the_descriptors_with_every_view_label_a_user_can_set(tiny_sd_path, views):
    """With the view labels of --side-views split, guidance.views.below and --no-view-prompt
    too, the longest quantifier the search's count and the check before the loads accept is the
    longest the descriptor takes, with a word and without: one letter more, all three refuse."""
    setting, longest_of = VIEW_SETTINGS[views]
    settings = {"prompt": "replaced", "guidance": {"model": str(tiny_sd_path), **setting}}
    cfg = resolve_config(settings)
    labels = cfg.guidance.views.labels if cfg.guidance.view_dependent else ()
    models = load_stable_diffusion(str(tiny_sd_path))
    tokenizer = read_tokenizer(str(tiny_sd_path))
    for words, max_words, longest in (([], 0, longest_of[0]), (["red"], 15, longest_of[1])):
        learnable = SentencesToLearn(tokenizer, labels)
        for n in (longest, longest + 1):
            quantifier = "q" * n
            trainer = DescriptorTrainer(models, quantifier, words, NOUN, DescriptorOptions())
            count = learnable.tokens(quantifier, words, NOUN)
            check = functools.partial(
                check_sentence_to_learn, tokenizer, NOUN, quantifier, [], words, max_words, labels
            )
            if n == longest:
                assert count == 77 and learnable.fits(quantifier, words, NOUN)
                trainer.check_length(labels)
                check()
                continue
            assert count == 78 and not learnable.fits(quantifier, words, NOUN)
            with pytest.raises(DreamtextError, match="is 78 tokens"):
                trainer.check_length(labels)
            with pytest.raises(DreamtextError, match="is at least 78 tokens"):
                check()


@pytest.mark.parametrize("views", ["split-sides", "below", "no-labels"])
@pytest.mark.parametrize("past", [0, 1], ids=["longest", "one-more"])
def test_the_view_labels_set_by_flag_or_config_reach_the_check_before_the_loads(
    tmp_path, tiny_sd_path, tiny_clip_path, no_weight_loads, capsys, views, past
):
    """`image --side-views split`, `--config` with guidance.views.below, `--no-view-prompt`:
    the quantifier one letter past the longest those labels allow is one line before any load,
    nothing written; the longest goes on to the loads."""
    from dreamtext.cli import main

    nouns, adjectives = tmp_path / "nouns.txt", tmp_path / "adjectives.txt"
    nouns.write_text(f"{NOUN}\n", encoding="utf-8")
    adjectives.write_text("red\n", encoding="utf-8")
    flags = {
        "split-sides": ["--side-views", "split"],
        "below": ["--config", str(tmp_path / "below.yaml")],
        "no-labels": ["--no-view-prompt"],
    }[views]
    (tmp_path / "below.yaml").write_text("guidance:\n  views:\n    below: 90\n", encoding="utf-8")
    quantifier = "q" * (VIEW_SETTINGS[views][1][1] + past)
    args = ["image", str(_image(tmp_path)), "--noun", NOUN, "--quantifier", quantifier, *flags]
    args += ["--nouns", str(nouns), "--adjectives", str(adjectives)]
    args += ["--model", str(tiny_sd_path), "--clip", str(tiny_clip_path)]
    args += ["--workspace", str(tmp_path / "run")]
    if not past:
        with pytest.raises(AssertionError, match="CLIP was loaded before the texts were checked"):
            main(args)
        return
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "is at least 78 tokens" in err[0], err
    assert not (tmp_path / "run").exists()
