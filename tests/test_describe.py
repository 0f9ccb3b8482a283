"""Sentence search (ch. 5.2.1): the three steps, ties, CLIP scoring, the sentence.json record."""

import hashlib
import importlib.util
import json
import logging
import os
import signal
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

import dreamtext.describe
from dreamtext.describe import (
    PLURALS_FILE,
    QUANTIFIERS,
    ClipEncoder,
    DescribeOptions,
    SentenceScores,
    describe,
    inflect_plural,
    make_sentence,
    plural,
    read_vocabulary,
    search_sentence,
)
from dreamtext.errors import DreamtextError

NOUNS = ["mug", "box", "knife", "sheep"]
ADJECTIVES = ["red", "wooden", "round", "shiny", "tall"]


class HashEncoder:
    """Each sentence gets a fixed pseudo-random vector (arbitrary but reproducible scores), plus a
    pull towards the image that grows with the sentence's length, so that longer sentences tend to
    win and every step of the search has work to do.
    """

    dim = 16

    def encode_texts(self, texts):
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            noise = torch.randn(self.dim, generator=torch.Generator().manual_seed(seed))
            rows.append(noise + len(text.split()) * self.encode_image(None))
        rows = torch.stack(rows)
        return rows / rows.norm(dim=-1, keepdim=True)

    def encode_image(self, image):
        return torch.nn.functional.normalize(torch.arange(1.0, self.dim + 1), dim=0)


class BagOfWordsEncoder:
    """A sentence embeds as the normalised sum of one-hot vectors of its (non-template) words.

    The image embeds as the normalised sum of ``target`` words, so the sentence whose words are
    exactly the targets scores 1 and every extra or missing word lowers the score.
    """

    def __init__(self, vocabulary, target):
        self.index = {w: i for i, w in enumerate(dict.fromkeys(vocabulary))}
        self.target = target

    def _embed(self, words):
        x = torch.zeros(len(self.index))
        for w in words:
            if w in self.index:
                x[self.index[w]] += 1
        return x / x.norm().clamp_min(1e-12)

    def encode_texts(self, texts):
        return torch.stack([self._embed(t.split()[3:]) for t in texts])

    def encode_image(self, image):
        return self._embed(self.target)


def brute_force(score_one, nouns, adjectives, max_words, noun=None, quantifier=None):
    """The three steps written one sentence at a time, the plainest way."""
    best = None
    for q in [quantifier] if quantifier else QUANTIFIERS:
        for n in nouns if noun is None else [None]:
            for form in [noun] if noun else [n, plural(n)]:
                s = score_one(make_sentence(q, [], form))
                if best is None or s > best[0]:
                    best = (s, q, form)
    current, q, n = best
    vocabulary = []
    for w in nouns + adjectives:
        if w not in vocabulary:
            vocabulary.append(w)
    words = []
    while len(words) < max_words:
        found = None
        for w in vocabulary:
            s = score_one(make_sentence(q, [*words, w], n))
            if s > current and (found is None or s > found[0]):
                found = (s, w)
        if found is None:
            break
        current, words = found[0], [*words, found[1]]
    changed = True
    while changed:
        changed = False
        for i in range(len(words)):
            for w in vocabulary:
                trial = [*words[:i], w, *words[i + 1 :]]
                s = score_one(make_sentence(q, trial, n))
                if s > current:
                    current, words, changed = s, trial, True
    return q, n, words, current


def _scores(encoder):
    return SentenceScores(encoder, encoder.encode_image(None))


@pytest.mark.parametrize("max_words", [0, 1, 15])
def test_search_matches_brute_force(max_words):
    encoder = HashEncoder()
    score = _scores(encoder)
    result = search_sentence(score, NOUNS, ADJECTIVES, max_words=max_words, adjust=True)

    def score_one(sentence):
        return float(encoder.encode_texts([sentence])[0].double() @ score.image_embedding.double())

    q, n, words, best = brute_force(score_one, NOUNS, ADJECTIVES, max_words)
    assert (result.quantifier, result.noun, result.words) == (q, n, words)
    assert result.score == pytest.approx(best, abs=1e-6)
    assert len(result.words) <= max_words


def test_adjust_step_changes_words_for_this_encoder():
    # Guards the brute-force comparison: the adjust step must have had work to do.
    result = search_sentence(_scores(HashEncoder()), NOUNS, ADJECTIVES, max_words=15, adjust=True)
    assert result.step_scores["adjust"] > result.step_scores["words"] > result.step_scores["noun"]


def test_the_default_search_is_the_thesiss_and_ends_with_its_words():
    """Thesis 5.2.1: a word is appended while it raises the score, and the sentence is then
    passed on; replacing words in place (step 3) is --adjust's, not the thesis's."""
    encoder = HashEncoder()
    adjusted = search_sentence(_scores(encoder), NOUNS, ADJECTIVES, max_words=15, adjust=True)
    thesis = search_sentence(_scores(encoder), NOUNS, ADJECTIVES, max_words=15)
    assert set(thesis.step_scores) == {"noun", "words"}
    assert thesis.score == thesis.step_scores["words"] == adjusted.step_scores["words"]
    assert thesis.words != adjusted.words  # this encoder's adjust step changes them
    # Appended, never replaced: a longer search starts with a shorter one's words.
    grown = [search_sentence(_scores(encoder), NOUNS, ADJECTIVES, max_words=k) for k in (1, 2)]
    assert grown[1].words[:1] == grown[0].words


def test_given_noun_and_quantifier_match_brute_force():
    encoder = HashEncoder()
    score = _scores(encoder)
    result = search_sentence(score, NOUNS, ADJECTIVES, max_words=3, noun="teapot")

    def score_one(sentence):
        return float(encoder.encode_texts([sentence])[0].double() @ score.image_embedding.double())

    q, _, words, _ = brute_force(score_one, NOUNS, ADJECTIVES, 3, noun="teapot")
    assert (result.quantifier, result.noun, result.words) == (q, "teapot", words)
    fixed = search_sentence(score, NOUNS, ADJECTIVES, max_words=3, quantifier="some")
    assert fixed.quantifier == "some"


def test_search_finds_the_words_the_image_embeds():
    vocabulary = [*QUANTIFIERS, *NOUNS, *ADJECTIVES, "mugs"]
    encoder = BagOfWordsEncoder(vocabulary, ["some", "tall", "red", "mugs"])
    result = search_sentence(_scores(encoder), NOUNS, ADJECTIVES, max_words=15)
    # Order does not matter to this encoder, so the tie goes to the word earliest in the files.
    assert result.sentence == "An image of some red tall mugs"
    assert result.score == pytest.approx(1.0)


def test_search_stops_when_no_word_helps():
    encoder = BagOfWordsEncoder([*QUANTIFIERS, *NOUNS, *ADJECTIVES], ["a", "box"])
    result = search_sentence(_scores(encoder), NOUNS, ADJECTIVES, max_words=15)
    assert (result.quantifier, result.noun, result.words) == ("a", "box", [])


def test_a_word_already_in_the_sentence_is_appended_again_when_it_raises_the_score():
    """Each step tries the whole vocabulary, as the thesis's does (ch. 5.2 (2)-(3)): a word the
    sentence holds, or its noun, is appended again when the score rises (the tiny random CLIP
    scores "An image of a few puffin puffin" above "An image of a few puffin")."""
    vocabulary = [*QUANTIFIERS, *NOUNS, *ADJECTIVES]
    twice = BagOfWordsEncoder(vocabulary, ["a", "box", "red", "red"])
    result = search_sentence(_scores(twice), NOUNS, ADJECTIVES, max_words=15)
    assert result.sentence == "An image of a red red box"
    assert result.score == pytest.approx(1.0)
    noun_twice = BagOfWordsEncoder(vocabulary, ["a", "box", "box"])
    result = search_sentence(_scores(noun_twice), NOUNS, ADJECTIVES, max_words=15)
    assert result.sentence == "An image of a box box"


def test_max_words_caps_the_descriptors():
    target = ["a", "box", "red", "wooden", "round"]
    encoder = BagOfWordsEncoder([*QUANTIFIERS, *NOUNS, *ADJECTIVES], target)
    result = search_sentence(_scores(encoder), NOUNS, ADJECTIVES, max_words=2)
    assert result.words == ["red", "wooden"]


class ConstantEncoder:
    def encode_texts(self, texts):
        return torch.ones(len(texts), 2) / 2**0.5

    def encode_image(self, image):
        return torch.tensor([1.0, 0.0])


def test_ties_go_to_the_earliest_candidate():
    result = search_sentence(_scores(ConstantEncoder()), NOUNS, ADJECTIVES, max_words=15)
    assert result.sentence == "An image of a mug"


def test_each_sentence_is_encoded_once():
    calls = []

    class Counting(HashEncoder):
        def encode_texts(self, texts):
            calls.extend(texts)
            return super().encode_texts(texts)

    search_sentence(_scores(Counting()), NOUNS, ADJECTIVES, max_words=4)
    assert len(calls) == len(set(calls))


def test_plurals_come_from_inflect():
    assert [plural(n) for n in NOUNS] == ["mugs", "boxes", "knives", "sheep"]


def test_the_shipped_plural_table_is_what_its_script_writes_from_inflect():
    """dreamtext/data/noun_plurals.txt can't drift from nouns.txt or from inflect."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "noun_plurals.py"
    spec = importlib.util.spec_from_file_location("noun_plurals_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shipped = resources.files("dreamtext").joinpath("data", PLURALS_FILE).read_text("utf-8")
    assert shipped == module.table_text()


def test_the_default_nouns_plurals_do_not_import_inflect_and_other_nouns_still_do(monkeypatch):
    """Importing inflect costs ~4 s of CPU; the search over the shipped nouns needs none of it."""
    nouns = read_vocabulary(None, "nouns.txt")
    expected = [inflect_plural(n) for n in nouns]
    assert expected[:3] == ["dogs", "puppies", "cats"] and len(nouns) > 1000

    def no_inflect():
        raise AssertionError("inflect was used for a noun of the shipped list")

    monkeypatch.setattr(dreamtext.describe, "_inflect_engine", no_inflect)
    assert [plural(n) for n in nouns] == expected
    monkeypatch.undo()
    assert [plural(n) for n in ("quokka", "criterion", "phenomenon")] == [
        "quokkas",
        "criteria",
        "phenomena",
    ]


def test_vocabulary_file_keeps_order_and_skips_blanks(tmp_path):
    path = tmp_path / "nouns.txt"
    path.write_text("mug\n\n  box  \n# a comment\nmug\nteddy   bear\n")
    assert read_vocabulary(path, "nouns.txt") == ["mug", "box", "teddy bear"]


def test_a_byte_order_mark_is_not_part_of_the_first_word(tmp_path):
    path = tmp_path / "nouns.txt"
    path.write_bytes("\ufeffmug\r\nbox\r\n".encode())
    assert read_vocabulary(path, "nouns.txt") == ["mug", "box"]


def test_empty_vocabulary_file_is_a_user_error(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n  \n")
    with pytest.raises(DreamtextError, match="empty"):
        read_vocabulary(path, "nouns.txt")


def test_a_word_list_that_is_gone_names_the_flag_that_gives_it(tmp_path):
    """A run copied to another machine resumed with the word list its config.json names, which
    is not there: the line said only the OS error, not what to pass."""
    for default, flag in (("nouns.txt", "--nouns"), ("adjectives.txt", "--adjectives")):
        with pytest.raises(DreamtextError) as error:
            read_vocabulary(tmp_path / "moved.txt", default)
        assert str(error.value) == (
            f"cannot read word list {tmp_path / 'moved.txt'} (No such file or directory); "
            f"pass {flag} with the word list's path"
        )


def test_shipped_vocabularies_are_large_and_single_spaced():
    nouns = read_vocabulary(None, "nouns.txt")
    adjectives = read_vocabulary(None, "adjectives.txt")
    assert len(nouns) >= 2000 and len(adjectives) >= 700
    assert all(w == w.strip().lower() and "  " not in w for w in nouns + adjectives)


def test_batched_padded_encoding_equals_one_sentence_at_a_time(tiny_clip_path):
    encoder = ClipEncoder(str(tiny_clip_path), batch_size=3)
    sentences = [
        "An image of a mug",
        "An image of a lot of red wooden round shiny mugs",
        "An image of some boxes",
        "An image of many tall knives",
    ]
    batched = encoder.encode_texts(sentences)
    alone = torch.cat([encoder.encode_texts([s]) for s in sentences])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.norm(dim=-1), torch.ones(4))


def test_clip_sees_an_object_away_from_the_middle_of_a_wide_image(tiny_clip_path):
    """CLIP's processor centre-crops: of a 400 x 100 image with the object at its left end it
    saw only white (the same embedding as a blank image), while the descriptor, which pads to a
    square, saw the object. Both now see the image padded to a square with white."""
    from dreamtext.augment import image_to_tensor
    from dreamtext.images import pad_to_square

    wide = Image.new("RGB", (400, 100), "white")
    ImageDraw.Draw(wide).ellipse((10, 10, 90, 90), fill=(200, 30, 30))
    square = Image.new("RGB", (400, 400), "white")
    square.paste(wide, (0, 150))
    assert pad_to_square(wide).tobytes() == square.tobytes()
    assert torch.equal(image_to_tensor(wide, 64), image_to_tensor(square, 64))
    encoder = ClipEncoder(str(tiny_clip_path))
    seen = encoder.encode_image(wide)
    torch.testing.assert_close(seen, encoder.encode_image(square), atol=1e-6, rtol=0)
    blank = encoder.encode_image(Image.new("RGB", (400, 100), "white"))
    assert (seen - blank).abs().max() > 1e-3


def test_describe_writes_the_record(tiny_clip_path, tmp_path):
    image_path = tmp_path / "mug.png"
    Image.new("RGBA", (40, 30), (200, 30, 30, 255)).save(image_path)
    nouns, adjectives = tmp_path / "n.txt", tmp_path / "a.txt"
    nouns.write_text("\n".join(NOUNS))
    adjectives.write_text("\n".join(ADJECTIVES))
    options = DescribeOptions(
        clip=str(tiny_clip_path), nouns=nouns, adjectives=adjectives, max_words=2
    )
    sentence = describe(image_path, tmp_path / "ws", options)

    record = json.loads((tmp_path / "ws" / "descriptor" / "sentence.json").read_text())
    assert record["sentence"] == sentence
    assert record["image"] == str(image_path.resolve())
    assert sentence == make_sentence(record["quantifier"], record["words"], record["noun"])
    assert set(record["step_scores"]) == {"noun", "words"}  # the thesis's steps: no --adjust
    assert record["options"]["adjust"] is False
    assert record["max_words"] == record["options"]["max_words"] == 2  # as given, not the default
    assert record["score"] == record["step_scores"]["words"] >= record["step_scores"]["noun"]
    # The recorded score is CLIP's cosine similarity of this very sentence with the image.
    encoder = ClipEncoder(str(tiny_clip_path))
    from dreamtext.images import load_image

    expected = encoder.encode_texts([sentence])[0] @ encoder.encode_image(load_image(image_path))
    assert record["score"] == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.parametrize(("size", "warned"), [((1, 1), True), ((200, 31), True), ((32, 32), False)])
def test_an_image_too_small_to_describe_is_warned_about(tmp_path, caplog, size, warned):
    """A 1x1 image was described without a word, though CLIP sees it as 224x224 of one colour."""
    image_path = tmp_path / "dot.png"
    Image.new("RGB", size, (200, 30, 30)).save(image_path)
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        describe(image_path, tmp_path / "ws", _vocabulary(tmp_path), encoder=HashEncoder())
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if warned:
        assert lines == [
            f"warning: {image_path} is only {size[0]}x{size[1]} pixels; CLIP sees it upscaled "
            "to 224x224, so the sentence will describe little; pass an image at least 32 pixels "
            "on each side"
        ]
    else:
        assert lines == []


def test_a_long_narrow_image_is_warned_about_with_its_own_size(tmp_path, caplog):
    """A 2400x48 strip has both sides over 32 pixels, but cut to 1024 on its longer side it is
    1024x20: the warning named 1024x20 as the file's size and asked for 32 pixels a side,
    which the file has. It names the file's size and says to crop."""
    image_path = tmp_path / "banner.png"
    Image.new("RGB", (2400, 48), (200, 30, 30)).save(image_path)
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        describe(image_path, tmp_path / "ws", _vocabulary(tmp_path), encoder=HashEncoder())
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert lines == [
        f"warning: {image_path} (2400x48 pixels) is so narrow that with its longer side cut to "
        "1024 pixels its shorter one is 20, and padded to a square the object is a thin strip; "
        "the sentence will describe little: crop the image nearer to a square around the object"
    ]


def test_quantifier_help_names_the_searched_quantifiers_and_free_text(capsys):
    """``--quantifier zillions`` is used as written (as ``--noun`` is: the sentence is free
    text to CLIP and to the descriptor's base embedding), so --help says so and which
    quantifiers the search tries without it."""
    from dreamtext.cli import build_parser
    from dreamtext.describe import QUANTIFIERS

    with pytest.raises(SystemExit):
        build_parser().parse_command_line(["describe", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "used as written" in text
    assert f"[searched: {', '.join(QUANTIFIERS)}]" in text


def test_unavailable_clip_names_the_clip_flag(tmp_path):
    with pytest.raises(DreamtextError, match="--clip /path/to/folder"):
        ClipEncoder(str(tmp_path / "no_such_clip"))


def _described(tmp_path, **extra):
    """A workspace whose sentence.json describes ``mug.png`` (plus ``extra`` fields)."""
    image_path = tmp_path / "mug.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image_path)
    record_path = tmp_path / "ws" / "descriptor" / "sentence.json"
    record_path.parent.mkdir(parents=True)
    record = {"sentence": "An image of a red mug", "image": str(image_path.resolve()), **extra}
    record_path.write_text(json.dumps(record))
    return image_path, record_path


def _vocabulary(tmp_path) -> DescribeOptions:
    nouns, adjectives = tmp_path / "n.txt", tmp_path / "a.txt"
    nouns.write_text("\n".join(NOUNS))
    adjectives.write_text("\n".join(ADJECTIVES))
    return DescribeOptions(nouns=nouns, adjectives=adjectives, max_words=2)


def test_describe_refuses_the_workspace_of_a_trained_image_run(tmp_path):
    image_path, record_path = _described(tmp_path, trained_sentence="An image of a <d> mug")
    before = record_path.read_text()
    with pytest.raises(DreamtextError, match="--workspace NEW_FOLDER"):
        describe(image_path, tmp_path / "ws", _vocabulary(tmp_path), encoder=HashEncoder())
    assert record_path.read_text() == before


def test_describe_refuses_a_workspace_whose_descriptor_training_has_started(tmp_path):
    image_path, record_path = _described(tmp_path)
    (record_path.parent / "checkpoints").mkdir()
    (record_path.parent / "checkpoints" / "last.pt").write_bytes(b"")
    with pytest.raises(DreamtextError, match="--workspace NEW_FOLDER"):
        describe(image_path, tmp_path / "ws", _vocabulary(tmp_path), encoder=HashEncoder())


def test_describe_refuses_the_workspace_of_another_image(tmp_path):
    _, record_path = _described(tmp_path)
    other = tmp_path / "cup.png"
    Image.new("RGB", (16, 16)).save(other)
    before = record_path.read_text()
    with pytest.raises(DreamtextError, match=r"holds the sentence of .*mug\.png.*--workspace"):
        describe(other, tmp_path / "ws", _vocabulary(tmp_path), encoder=HashEncoder())
    assert record_path.read_text() == before


def test_describe_refuses_an_image_run_of_another_image_stopped_before_its_sentence(tmp_path):
    """`dreamtext image red.png --workspace W` stopped in describe (config.json names red.png,
    no sentence yet), then `describe blue.png --workspace W`: accepted, and the run's own image
    was then refused as changed since the run started from it."""
    red, blue = tmp_path / "red.png", tmp_path / "blue.png"
    Image.new("RGB", (16, 16), (200, 0, 0)).save(red)
    Image.new("RGB", (16, 16), (0, 0, 200)).save(blue)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    config = {"prompt": "red", "image_to_3d": {"image": str(red.resolve())}}
    (workspace / "config.json").write_text(json.dumps(config))
    with pytest.raises(DreamtextError) as refusal:
        describe(blue, workspace, _vocabulary(tmp_path), encoder=HashEncoder())
    assert str(refusal.value) == (
        f"{workspace} holds the image→3D run of {red.resolve()}; pass --workspace NEW_FOLDER to "
        f"describe {blue}"
    )
    assert sorted(p.name for p in workspace.iterdir()) == ["config.json"]


def test_describe_refuses_the_workspace_of_a_text_run(tmp_path):
    """A text→3D run's folder: describe wrote its sentence there and replaced the run's
    status.json (finished at step 10) by its own (finished, phase describe, step 0), so the run
    read as an image run that had only been described."""
    image_path = tmp_path / "mug.png"
    Image.new("RGB", (16, 16), "red").save(image_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"prompt": "a red cube", "iters": 10}))
    (run / "status.json").write_text(json.dumps({"state": "finished", "step": 10, "iters": 10}))
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(
        DreamtextError, match=r"text→3D run of 'a red cube'.*--workspace NEW_FOLDER"
    ):
        describe(image_path, run, _vocabulary(tmp_path), encoder=HashEncoder(), status=True)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_describe_goes_on_in_the_workspace_of_an_image_run_before_its_sentence(tmp_path):
    """image→3D records its config.json (with its image_to_3d section) before describing."""
    image_path = tmp_path / "mug.png"
    Image.new("RGB", (16, 16), "red").save(image_path)
    run = tmp_path / "run"
    run.mkdir()
    section = {"image": str(image_path), "describe": {}, "descriptor": {}}
    (run / "config.json").write_text(json.dumps({"prompt": "mug", "image_to_3d": section}))
    sentence = describe(image_path, run, _vocabulary(tmp_path), encoder=HashEncoder())
    assert json.loads((run / "descriptor" / "sentence.json").read_text())["sentence"] == sentence


def test_describe_replaces_an_untrained_sentence_of_the_same_image(tmp_path):
    image_path, record_path = _described(tmp_path)
    sentence = describe(image_path, tmp_path / "ws", _vocabulary(tmp_path), encoder=HashEncoder())
    assert json.loads(record_path.read_text())["sentence"] == sentence


def test_describe_into_a_file_is_one_line_before_the_search(tmp_path):
    image_path, _ = _described(tmp_path)
    (tmp_path / "afile").write_text("hi")

    class NoSearch(HashEncoder):
        def encode_image(self, image):
            raise AssertionError("the search started")

    with pytest.raises(DreamtextError, match="is a file"):
        describe(image_path, tmp_path / "afile", _vocabulary(tmp_path), encoder=NoSearch())


def test_describe_cli_refusal_is_one_line_and_exit_2(tmp_path, capsys):
    from dreamtext.cli import main

    image_path, _ = _described(tmp_path, trained_sentence="An image of a <d> mug")
    code = main(["describe", str(image_path), "--workspace", str(tmp_path / "ws")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "--workspace NEW_FOLDER" in err


@pytest.mark.parametrize("noun", ["", "   "])
def test_an_empty_noun_is_refused_not_ignored(tmp_path, noun):
    image_path, _ = _described(tmp_path)
    options = _vocabulary(tmp_path)
    options.noun = noun
    with pytest.raises(DreamtextError, match="--noun is empty"):
        describe(image_path, tmp_path / "new", options, encoder=HashEncoder())


def test_a_folder_that_is_not_clip_is_named_so(tmp_path, tiny_sd_path):
    with pytest.raises(DreamtextError, match="is not a CLIP model in transformers layout"):
        ClipEncoder(str(tiny_sd_path))


def test_ctrl_c_during_the_sentence_encoding_clears_its_progress_bar(
    tiny_clip_path, monkeypatch, capsys
):
    """The CLI's 'interrupted' line was glued to the end of the unfinished bar."""
    encoder = ClipEncoder(str(tiny_clip_path), batch_size=1)
    encode = encoder.model.get_text_features
    calls = []

    def interrupted_on_the_second_batch(**kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return encode(**kwargs)

    monkeypatch.setattr(encoder.model, "get_text_features", interrupted_on_the_second_batch)
    capsys.readouterr()
    try:
        encoder.encode_texts(["An image of a mug", "An image of a box", "An image of a cup"])
    except KeyboardInterrupt:
        err = capsys.readouterr().err  # while the traceback still holds the encoding's frame
    else:
        pytest.fail("the interrupt did not reach the caller")
    assert "CLIP sentences" in err
    # stderr is a file here: the bar's last state is a line of its own (a terminal clears it)
    assert err.endswith("\n") and "\r" not in err and "| 1/3 [" in err.splitlines()[-1]


def test_describe_records_what_clip_ran_on(tiny_clip_path, tmp_path):
    """sentence.json records, as a run's config.json does (its ran_on), what the search scored
    with where the options say only auto: CLIP's device and dtype, the threads and versions."""
    import platform

    image_path = tmp_path / "mug.png"
    Image.new("RGB", (40, 30), (200, 30, 30)).save(image_path)
    nouns, adjectives = tmp_path / "n.txt", tmp_path / "a.txt"
    nouns.write_text("\n".join(NOUNS))
    adjectives.write_text("\n".join(ADJECTIVES))
    options = DescribeOptions(
        clip=str(tiny_clip_path), nouns=nouns, adjectives=adjectives, max_words=1, device="cpu"
    )
    describe(image_path, tmp_path / "ws", options)

    ran_on = json.loads((tmp_path / "ws" / "descriptor" / "sentence.json").read_text())["ran_on"]
    assert (ran_on["device"], ran_on["clip_dtype"]) == ("cpu", "float32")
    assert ran_on["cpu_threads"] == torch.get_num_threads()
    assert ran_on["versions"]["torch"] == torch.__version__
    assert ran_on["versions"]["python"] == platform.python_version()
    # A local folder has no hub commit: the folder it loaded from names it.
    assert (ran_on["clip_revision"], ran_on["clip_folder"]) == (None, str(tiny_clip_path.resolve()))


def test_dreamtext_describe_records_its_run_in_status_json(tiny_clip_path, tmp_path, capsys):
    """`dreamtext describe IMAGE` wrote no status.json: the viewer, batch and another command
    could not tell a search in progress from one that ended or was killed."""
    from dreamtext.cli import main

    image_path, _ = _described(tmp_path)
    workspace = tmp_path / "described"
    vocabulary = _vocabulary(tmp_path)
    flags = ["--nouns", str(vocabulary.nouns), "--adjectives", str(vocabulary.adjectives)]
    flags += ["--clip", str(tiny_clip_path), "--workspace", str(workspace), "--device", "cpu"]
    assert main(["describe", str(image_path), *flags]) == 0
    status = json.loads((workspace / "status.json").read_text())
    assert (status["state"], status["phase"], status["error"]) == ("finished", "describe", None)
    assert status["pid"] == os.getpid() and status["stages"].keys() == {"describe"}
    assert status["total_seconds"] == status["seconds"] > 0


def test_a_describe_in_progress_is_running_in_its_status(tmp_path):
    image_path, _ = _described(tmp_path)
    seen = []

    class Watched(HashEncoder):
        def encode_image(self, image):
            if image is not None:  # the search starts
                seen.append(json.loads((tmp_path / "new" / "status.json").read_text()))
            return super().encode_image(image)

    describe(image_path, tmp_path / "new", _vocabulary(tmp_path), encoder=Watched(), status=True)
    assert [(s["state"], s["phase"], s["pid"]) for s in seen] == [
        ("running", "describe", os.getpid())
    ]


@pytest.mark.parametrize(
    ("raised", "state", "error"),
    [
        (KeyboardInterrupt(), "interrupted", None),  # Ctrl-C, or SIGTERM (the CLI makes it one)
        (RuntimeError("CLIP broke"), "failed", "RuntimeError: CLIP broke"),
    ],
)
def test_a_describe_that_stops_says_so_in_its_status(tmp_path, raised, state, error):
    image_path, _ = _described(tmp_path)

    class Broken(HashEncoder):
        def encode_texts(self, texts):
            raise raised

    with pytest.raises(type(raised)):
        describe(image_path, tmp_path / "new", _vocabulary(tmp_path), Broken(), status=True)
    status = json.loads((tmp_path / "new" / "status.json").read_text())
    assert (status["state"], status["phase"], status["error"]) == (state, "describe", error)


def test_dreamtext_describe_keeps_the_image_beside_its_sentence(tmp_path):
    """`dreamtext describe` left no copy of its image: the viewer's card of the workspace had no
    picture, the search's or a later `dreamtext image`'s, until the descriptor stage began."""
    image_path, _ = _described(tmp_path)
    seen = []

    class Watched(HashEncoder):
        def encode_image(self, image):
            seen.append(sorted(p.name for p in (tmp_path / "new" / "descriptor").iterdir()))
            return super().encode_image(image)

    describe(image_path, tmp_path / "new", _vocabulary(tmp_path), encoder=Watched(), status=True)
    assert seen[0] == ["source.png"]  # from the search's start
    copy = tmp_path / "new" / "descriptor" / "source.png"
    assert copy.read_bytes() == image_path.read_bytes()
    Image.new("RGB", (16, 16), (20, 200, 30)).save(image_path)  # edited, then described again
    describe(image_path, tmp_path / "new", _vocabulary(tmp_path), HashEncoder(), status=True)
    assert copy.read_bytes() == image_path.read_bytes()


def test_a_refused_describe_writes_no_status(tmp_path):
    image_path, _ = _described(tmp_path, trained_sentence="An image of a <d> mug")
    with pytest.raises(DreamtextError):
        describe(image_path, tmp_path / "ws", _vocabulary(tmp_path), HashEncoder(), status=True)
    assert sorted(p.name for p in (tmp_path / "ws").iterdir()) == ["descriptor"]


def test_a_describe_records_its_time_while_it_searches(tmp_path, monkeypatch):
    """status.json was written at the search's start and end only: a describe killed without
    warning (SIGKILL, after minutes of CLIP) recorded 0.0 s. It is rewritten while it runs."""
    import time

    import dreamtext.describe

    monkeypatch.setattr(dreamtext.describe, "HEARTBEAT_SECONDS", 0.05, raising=False)
    image_path, _ = _described(tmp_path)
    seen = []

    class Slow(HashEncoder):
        def encode_texts(self, texts):
            if not seen:  # the first scoring round takes a while, then looks
                time.sleep(0.5)
                seen.append(json.loads((tmp_path / "new" / "status.json").read_text()))
            return super().encode_texts(texts)

    describe(image_path, tmp_path / "new", _vocabulary(tmp_path), encoder=Slow(), status=True)
    [running] = seen
    assert (running["state"], running["phase"]) == ("running", "describe")
    assert running["seconds"] > 0.3 and running["stages"]["describe"]["seconds"] > 0.3
    status = json.loads((tmp_path / "new" / "status.json").read_text())
    assert status["state"] == "finished" and status["seconds"] >= running["seconds"]


class _SwallowsASignal:
    """What a library's finalizer does to a Ctrl-C / SIGTERM that lands in it: the handler's
    ``KeyboardInterrupt`` is raised inside ``__del__``, which Python prints as "Exception ignored"
    and drops. (A library's ``except BaseException`` loses it the same way.)"""

    def __del__(self):
        signal.raise_signal(signal.SIGTERM)


def _lose_a_signal() -> None:
    _SwallowsASignal()  # dropped at once: its finalizer runs here


def _describe_flags(tmp_path) -> list[str]:
    image_path, _ = _described(tmp_path)
    vocabulary = _vocabulary(tmp_path)
    return [
        "describe",
        str(image_path),
        *["--nouns", str(vocabulary.nouns), "--adjectives", str(vocabulary.adjectives)],
        *["--clip", "unused", "--workspace", str(tmp_path / "new"), "--device", "cpu"],
    ]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # on purpose
def test_a_signal_lost_while_clip_loads_still_stops_the_describe(tmp_path, monkeypatch, capsys):
    """A SIGTERM that landed in a finalizer while CLIP loaded was lost: the describe ran on to
    `finished`, exit 0."""
    import dreamtext.describe
    from dreamtext.cli import main

    class LoadsWhileASignalIsLost(HashEncoder):
        def __init__(self, *args):
            _lose_a_signal()

    monkeypatch.setattr(dreamtext.describe, "ClipEncoder", LoadsWhileASignalIsLost)
    assert main(_describe_flags(tmp_path)) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("dreamtext describe: interrupted; run the same command again")
    assert not (tmp_path / "new" / "descriptor" / "sentence.json").exists()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # on purpose
def test_a_signal_lost_during_the_search_ends_it_interrupted(tmp_path, monkeypatch, capsys):
    import dreamtext.describe
    from dreamtext.cli import main

    class SearchesWhileASignalIsLost(HashEncoder):
        def __init__(self, *args):
            self.rounds = 0

        def encode_texts(self, texts):
            self.rounds += 1
            if self.rounds == 1:
                _lose_a_signal()
            return super().encode_texts(texts)

    monkeypatch.setattr(dreamtext.describe, "ClipEncoder", SearchesWhileASignalIsLost)
    assert main(_describe_flags(tmp_path)) == 130
    assert "dreamtext describe: interrupted" in capsys.readouterr().err
    status = json.loads((tmp_path / "new" / "status.json").read_text())
    assert (status["state"], status["phase"]) == ("interrupted", "describe")
    assert not (tmp_path / "new" / "descriptor" / "sentence.json").exists()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # on purpose
def test_an_error_that_follows_a_lost_signal_is_reported_as_the_interrupt(
    tmp_path, monkeypatch, capsys
):
    """A SIGTERM swallowed by trimesh's optional imports left a module half-imported: the
    describe ended in a TypeError traceback, exit 1, instead of the interrupted line."""
    import dreamtext.cli

    def cut_short_import(args):
        _lose_a_signal()
        raise TypeError("unsupported operand type(s) for |: 'ExceptionWrapper' and 'NoneType'")

    monkeypatch.setattr(dreamtext.cli, "cmd_describe", cut_short_import)
    assert dreamtext.cli.main(_describe_flags(tmp_path)) == 130
    err = capsys.readouterr().err
    assert "dreamtext describe: interrupted" in err and "Traceback" not in err


def test_a_workspace_taken_over_mid_search_stops_it_before_the_sentence(tmp_path):
    """batch: another worker took over an image line's workspace while its sentence search ran;
    the heartbeat noticed, but the search went on and wrote sentence.json into the new holder's
    workspace."""
    from dreamtext.runstatus import RunTakenOver, guard_run

    image_path, _ = _described(tmp_path)
    workspace = tmp_path / "new"
    taken = []

    def lock_check():
        if taken:
            raise RunTakenOver("lock taken over by worker 2")

    class TakenOverMidSearch(HashEncoder):
        def encode_texts(self, texts):
            taken.append(True)  # another worker takes the workspace over now
            return super().encode_texts(texts)

    with guard_run(workspace, lock_check), pytest.raises(RunTakenOver):
        describe(image_path, workspace, _vocabulary(tmp_path), TakenOverMidSearch(), status=True)
    assert not (workspace / "descriptor" / "sentence.json").exists()
    # The last status is the one written before the takeover: the new holder's to replace.
    assert json.loads((workspace / "status.json").read_text())["state"] == "running"


# --- formulas on values: each guards a one-character change the tests above let through ---


def table_score(table: dict[str, float]):
    """A scorer for search_sentence: each sentence's score from ``table`` (0 if absent)."""
    return lambda sentences: torch.tensor(
        [table.get(s, 0.0) for s in sentences], dtype=torch.float64
    )


def test_adjust_replaces_the_last_word_too():
    """Guards against ``range(len(words) - 1)`` in step 3.

    Scores (all other sentences 0): "a cube" .1; step 2 picks "a red cube" (.5) then
    "a red big cube" (.6; "a red tall cube" .55), max_words 2. Adjust, pass 1: position 0 →
    "a tall big cube" (.7); position 1 → "a tall red cube" (.8). Pass 2 changes nothing.
    Result: "An image of a tall red cube", 0.8. Skipping the last place ends at
    "a tall big cube", 0.7.
    """
    s = {
        "a cube": 0.1,
        "a red cube": 0.5,
        "a big cube": 0.3,
        "a tall cube": 0.2,
        "a red big cube": 0.6,
        "a red tall cube": 0.55,
        "a tall big cube": 0.7,
        "a tall red cube": 0.8,
    }
    table = {f"An image of {k}": v for k, v in s.items()}
    result = search_sentence(
        table_score(table),
        ["cube"],
        ["red", "big", "tall"],
        max_words=2,
        noun="cube",
        quantifier="a",
        adjust=True,
    )
    assert result.sentence == "An image of a tall red cube"
    assert result.score == pytest.approx(0.8)
    assert result.step_scores == pytest.approx({"noun": 0.1, "words": 0.6, "adjust": 0.8})


def test_ties_follow_the_documented_orders():
    """Guards against adjectives before nouns in the vocabulary and noun-major
    nesting in step 1. Module docstring: step 1 is quantifier × noun
    (quantifier outermost), step 2 tries nouns then adjectives; ties go to the earliest.

    Step 1: "a dogs" and "an dog" tie at 0.5; quantifier-major order tries ("a", dog),
    ("a", dogs), ("an", dog)…, so "a dogs" comes first. Step 2: "a ball dogs" (noun) and
    "a red dogs" (adjective) tie at 0.9: the noun comes first.
    """
    table = {
        "An image of a dogs": 0.5,
        "An image of an dog": 0.5,
        "An image of a ball dogs": 0.9,
        "An image of a red dogs": 0.9,
    }
    result = search_sentence(table_score(table), ["dog", "ball"], ["red"], max_words=1)
    assert (result.quantifier, result.noun) == ("a", "dogs")
    assert result.words == ["ball"]


def test_sentence_json_records_each_word_lists_size_and_digest(tmp_path):
    """The options name a word list by its path alone: sentence.json records what the search
    read of each (its file, word count and the SHA-256 of its words), so that a list edited
    since can be told apart from the one the sentence was found in."""
    image_path = tmp_path / "mug.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image_path)
    options = _vocabulary(tmp_path)
    describe(image_path, tmp_path / "ws", options, encoder=HashEncoder())
    record = json.loads((tmp_path / "ws" / "descriptor" / "sentence.json").read_text())
    nouns = record["word_lists"]["nouns"]
    assert nouns["file"] == str(options.nouns.resolve()) and nouns["words"] == len(NOUNS)
    assert nouns["sha256"] == hashlib.sha256("\n".join(NOUNS).encode()).hexdigest()
    assert record["word_lists"]["adjectives"]["words"] == len(ADJECTIVES)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_search_of_a_word_list_edited_since_the_record_warns(tmp_path, caplog):
    """A rerun of `dreamtext describe` with the same --nouns file, edited since the sentence
    was found in it, searched the new list without a word; it warns, naming both lists."""
    image_path = tmp_path / "mug.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image_path)
    options = _vocabulary(tmp_path)
    describe(image_path, tmp_path / "ws", options, encoder=HashEncoder())
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        describe(image_path, tmp_path / "ws", options, encoder=HashEncoder())
    assert not [line for line in _warnings(caplog) if "word list" in line]  # unchanged: quiet

    options.nouns.write_text("\n".join([*NOUNS, "cup"]) + "\n# a comment\n")
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        describe(image_path, tmp_path / "ws", options, encoder=HashEncoder())
    [line] = [line for line in _warnings(caplog) if "word list" in line]
    assert str(options.nouns.resolve()) in line and "sentence.json" in line
    assert f"({len(NOUNS)} words" in line and f"now {len(NOUNS) + 1}," in line
    assert str(options.adjectives.resolve()) not in line  # unchanged
    record = json.loads((tmp_path / "ws" / "descriptor" / "sentence.json").read_text())
    assert record["word_lists"]["nouns"]["words"] == len(NOUNS) + 1  # the new search's list


def test_a_word_list_edited_to_other_words_of_the_same_count_warns(tmp_path, caplog):
    """A word replaced by another keeps the list's count: its digest tells the edit."""
    image_path = tmp_path / "mug.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image_path)
    options = _vocabulary(tmp_path)
    describe(image_path, tmp_path / "ws", options, encoder=HashEncoder())
    options.nouns.write_text("\n".join([*NOUNS[:-1], "cup"]) + "\n")
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        describe(image_path, tmp_path / "ws", options, encoder=HashEncoder())
    [line] = [line for line in _warnings(caplog) if "word list" in line]
    assert f"({len(NOUNS)} words" in line and f"now {len(NOUNS)}," in line, line


def test_a_word_list_given_by_another_path_is_no_edit_of_the_recorded_one(tmp_path, caplog):
    """Another --nouns file is another option, not an edit of the file the record names."""
    image_path = tmp_path / "mug.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image_path)
    options = _vocabulary(tmp_path)
    describe(image_path, tmp_path / "ws", options, encoder=HashEncoder())
    other = tmp_path / "other_nouns.txt"
    other.write_text("\n".join([*NOUNS, "cup"]) + "\n")
    options.nouns = other
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        describe(image_path, tmp_path / "ws", options, encoder=HashEncoder())
    assert not [line for line in _warnings(caplog) if "word list" in line]


def test_a_comment_added_to_a_word_list_is_no_change(tmp_path, caplog):
    """The digest is of the words the search reads: a comment or blank line changes nothing."""
    image_path = tmp_path / "mug.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image_path)
    options = _vocabulary(tmp_path)
    describe(image_path, tmp_path / "ws", options, encoder=HashEncoder())
    options.nouns.write_text("# nouns\n\n" + "\n".join(NOUNS) + "\n")
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        describe(image_path, tmp_path / "ws", options, encoder=HashEncoder())
    assert not [line for line in _warnings(caplog) if "word list" in line]


def test_sentence_json_records_the_cached_clip_commit_it_loaded(tmp_path, monkeypatch):
    """sentence.json named CLIP by its hub id alone: which commit of the model scored the
    sentences was not recorded (a run's config.json records Stable Diffusion's). Its ran_on
    holds the commit of the cache's snapshot and that folder."""
    import huggingface_hub.constants
    from tiny_clip import write_clip

    commit = "89abcdef0123456789abcdef0123456789abcdef"
    repo = tmp_path / "hub" / "models--someone--tiny-clip"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = write_clip(repo / "snapshots" / commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    image_path = tmp_path / "mug.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image_path)
    options = replace(_vocabulary(tmp_path), clip="someone/tiny-clip")
    describe(image_path, tmp_path / "ws", options, encoder=HashEncoder())
    record = json.loads((tmp_path / "ws" / "descriptor" / "sentence.json").read_text())
    assert record["ran_on"]["clip_revision"] == commit
    assert record["ran_on"]["clip_folder"] == str(snapshot)


def test_an_image_run_resumed_before_its_search_warns_of_an_edited_word_list(tmp_path, caplog):
    """An image run's config.json records its word lists before the search (which a stop can
    cut short): the resumed search of a list edited since warns, as a rerun of describe does."""
    from dreamtext.config import TrainConfig
    from dreamtext.imageto3d import ImageOptions, record_config

    image_path = tmp_path / "mug.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image_path)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    options = ImageOptions(describe=_vocabulary(tmp_path))
    record_config(workspace, TrainConfig(workspace=str(workspace)), image_path, options)
    section = json.loads((workspace / "config.json").read_text())["image_to_3d"]
    assert section["word_lists"]["nouns"]["words"] == len(NOUNS)

    options.describe.nouns.write_text("\n".join(NOUNS[:-1]))
    # As run_image resumes: config.json is written again before the search.
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        record_config(workspace, TrainConfig(workspace=str(workspace)), image_path, options)
        describe(image_path, workspace, options.describe, encoder=HashEncoder())
    [line] = [line for line in _warnings(caplog) if "word list" in line]  # once, not twice
    assert "config.json" in line and f"now {len(NOUNS) - 1}," in line


@pytest.fixture
def pipe_of(tmp_path):
    """``pipe_of(words)``: a pipe holding ``words``, one a line, named as a shell's
    ``<(printf ...)`` names it (``/dev/fd/N``); closed after the test."""
    opened = []

    def pipe_of(words):
        read, write = os.pipe()
        os.write(write, ("\n".join(words) + "\n").encode())
        os.close(write)
        opened.append(read)
        return f"/dev/fd/{read}"

    yield pipe_of
    for descriptor in opened:
        os.close(descriptor)


def test_a_word_list_piped_in_again_with_other_words_warns(tmp_path, caplog, pipe_of):
    """`describe --nouns <(grep ...)`: a pipe was recorded by its resolved name,
    /proc/<pid>/fd/pipe:[<inode>], another at every run, so a rerun whose pipe held other words
    searched them without the warning an edited file gets. A list piped in is recorded as
    such and compared with the next one piped in."""
    image_path = tmp_path / "mug.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image_path)
    options = _vocabulary(tmp_path)
    first = pipe_of(NOUNS)
    describe(image_path, tmp_path / "ws", replace(options, nouns=first), encoder=HashEncoder())
    record = json.loads((tmp_path / "ws" / "descriptor" / "sentence.json").read_text())
    assert record["word_lists"]["nouns"]["file"] == record["options"]["nouns"] == first
    assert record["word_lists"]["nouns"]["piped"] is True
    assert "piped" not in record["word_lists"]["adjectives"]  # a file: as before
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        again = replace(options, nouns=pipe_of(NOUNS))  # the same words: nothing to say
        describe(image_path, tmp_path / "ws", again, encoder=HashEncoder())
        assert not [line for line in _warnings(caplog) if "word list" in line]
        fewer = replace(options, nouns=pipe_of(NOUNS[:-1]))
        describe(image_path, tmp_path / "ws", fewer, encoder=HashEncoder())
    [line] = [line for line in _warnings(caplog) if "word list" in line]
    assert f"the nouns piped in ({len(NOUNS)} words" in line and f"now {len(NOUNS) - 1}," in line


def test_a_list_piped_in_after_a_file_or_a_file_after_a_pipe_is_no_edit_of_either(
    tmp_path, caplog, pipe_of
):
    """A pipe given where the record names a file, or a file where it names a pipe, is another
    list, as another path is: no warning compares the two lists' words as an edit."""
    image_path = tmp_path / "mug.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image_path)
    options = _vocabulary(tmp_path)
    describe(image_path, tmp_path / "file_first", options, encoder=HashEncoder())
    piped = replace(options, nouns=pipe_of(NOUNS))
    describe(image_path, tmp_path / "pipe_first", piped, encoder=HashEncoder())
    options.nouns.write_text("\n".join(NOUNS[:-2]) + "\n")
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        piped = replace(options, nouns=pipe_of(NOUNS[:-1]))
        describe(image_path, tmp_path / "file_first", piped, encoder=HashEncoder())
        describe(image_path, tmp_path / "pipe_first", options, encoder=HashEncoder())
    assert not [line for line in _warnings(caplog) if "word list" in line]


@pytest.mark.parametrize("recorded", [{}, {"nouns": None}, {"nouns": "nouns.txt"}])
def test_a_record_without_a_lists_identity_names_no_change_of_it(tmp_path, recorded):
    """A record from before word lists were kept, or one whose entry is not a list's identity
    (null, a bare file name): nothing to compare the list with, so no change is named."""
    from dreamtext.describe import changed_word_lists
    from dreamtext.inputs import word_list_identity

    nouns = tmp_path / "nouns.txt"
    nouns.write_text("mug\nbox\n")
    now = {"nouns": word_list_identity(nouns, ["mug", "box"])}
    assert changed_word_lists(recorded, now) == []


def test_an_image_run_resumed_before_its_search_asks_again_for_a_list_piped_in(tmp_path):
    """A FIFO (or a shell's pipe) given as --nouns is recorded in config.json before the
    search; resumed without --nouns, the run took that name as the list: a FIFO with nothing
    writing to it blocked for ever, a /dev/fd/N pipe is gone. It is refused in one line that
    says to pass the list again; given again, it is read."""
    import threading

    from dreamtext.config import TrainConfig
    from dreamtext.imageto3d import ImageOptions, record_config, resolve_image_options

    image_path = tmp_path / "mug.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image_path)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    fifo = tmp_path / "nouns.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_text, args=("\n".join(NOUNS),))
    writer.start()
    options = ImageOptions(describe=replace(_vocabulary(tmp_path), nouns=fifo))
    record_config(workspace, TrainConfig(workspace=str(workspace)), image_path, options)
    writer.join()
    section = json.loads((workspace / "config.json").read_text())["image_to_3d"]
    assert section["word_lists"]["nouns"] == {**section["word_lists"]["nouns"], "piped": True}
    with pytest.raises(DreamtextError, match=r"--nouns was piped in .* pass --nouns again"):
        resolve_image_options({}, workspace)
    given = resolve_image_options({"describe": {"nouns": str(fifo)}}, workspace)
    assert given.describe.nouns == fifo
