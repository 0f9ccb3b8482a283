"""View-dependent prompt embeddings and textual inversion (dreamtext.prompts)."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import (
    TEST_WORDS,
    load_tiny_tokenizer,
    tiny_text_encoder,
    write_tiny_tokenizer,
)

from dreamtext.cameras import VIEW_LABELS, ViewThresholds
from dreamtext.errors import DreamtextError
from dreamtext.guidance import default_perp_neg_weights
from dreamtext.prompts import (
    PromptEmbeddings,
    add_textual_inversion,
    encode_texts,
    expand_tokens,
    read_textual_inversion,
)


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture
def tokenizer(tokenizer_path: Path):
    return load_tiny_tokenizer(tokenizer_path)


@pytest.fixture
def text_encoder(tokenizer) -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_text_encoder(tokenizer).eval()


def test_tiny_tokenizer_keeps_each_test_word_one_token(tokenizer):
    for word in TEST_WORDS:
        ids = tokenizer(word).input_ids
        assert tokenizer.convert_ids_to_tokens(ids) == [
            tokenizer.bos_token,
            f"{word}</w>",
            tokenizer.eos_token,
        ]


def test_tiny_tokenizer_spells_unknown_words_by_character(tokenizer):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("zebra").input_ids)[1:-1]
    assert tokens == ["z", "e", "b", "r", "a</w>"]


def test_each_label_gets_its_own_view_prompt(tokenizer, text_encoder):
    prompts = PromptEmbeddings(tokenizer, text_encoder, "a red castle")
    _, cond = prompts.get(["front", "back"])
    expected = encode_texts(
        tokenizer, text_encoder, ["a red castle, front view", "a red castle, back view"]
    )
    torch.testing.assert_close(cond, expected)
    assert not torch.allclose(cond[0], cond[1])


def test_every_view_label_is_cached_and_distinct(tokenizer, text_encoder):
    prompts = PromptEmbeddings(tokenizer, text_encoder, "a red castle")
    _, cond = prompts.get(list(VIEW_LABELS))
    for i in range(len(VIEW_LABELS)):
        for j in range(i + 1, len(VIEW_LABELS)):
            assert not torch.allclose(cond[i], cond[j])


def test_embeddings_are_padded_to_the_tokenizer_length(tokenizer, text_encoder):
    uncond, cond = PromptEmbeddings(tokenizer, text_encoder, "a cube").get(["side"] * 3)
    assert uncond.shape == cond.shape == (3, tokenizer.model_max_length, 32)


def test_without_view_dependence_every_label_is_the_plain_prompt(tokenizer, text_encoder):
    prompts = PromptEmbeddings(tokenizer, text_encoder, "a red castle", view_dependent=False)
    _, cond = prompts.get(["front", "overhead"])
    plain = encode_texts(tokenizer, text_encoder, ["a red castle"])[0]
    torch.testing.assert_close(cond[0], plain)
    torch.testing.assert_close(cond[1], plain)


def test_uncond_is_the_negative_prompt(tokenizer, text_encoder):
    empty = PromptEmbeddings(tokenizer, text_encoder, "a cube")
    negative = PromptEmbeddings(tokenizer, text_encoder, "a cube", negative="blurry")
    expected = encode_texts(tokenizer, text_encoder, ["", "blurry"])
    torch.testing.assert_close(empty.get(["front"])[0][0], expected[0])
    torch.testing.assert_close(negative.get(["front"])[0][0], expected[1])


def test_empty_prompt_is_a_user_error(tokenizer, text_encoder):
    with pytest.raises(DreamtextError, match="prompt is empty"):
        PromptEmbeddings(tokenizer, text_encoder, "   ")


def test_embeddings_are_moved_to_the_requested_dtype(tokenizer, text_encoder):
    prompts = PromptEmbeddings(tokenizer, text_encoder, "a cube", dtype=torch.float64)
    uncond, cond = prompts.get(["front"])
    assert uncond.dtype == cond.dtype == torch.float64


def test_perp_neg_negatives_are_the_other_view_prompts(tokenizer, text_encoder):
    weights = {"side": {"front": 2.0}, "back": {"front": 1.5, "side": 0.5}}
    prompts = PromptEmbeddings(tokenizer, text_encoder, "a dog", perp_neg_weights=weights)
    embeds, w = prompts.negatives(["side", "back", "front"])
    assert embeds.shape[:2] == w.shape == (3, 2)
    torch.testing.assert_close(embeds[0, 0], prompts.cond["front"])
    torch.testing.assert_close(embeds[1, 1], prompts.cond["side"])
    torch.testing.assert_close(w, torch.tensor([[2.0, 0.0], [1.5, 0.5], [0.0, 0.0]]))
    # Padding slots hold the unconditional embedding with weight 0, so they contribute nothing.
    torch.testing.assert_close(embeds[2, 0], prompts.uncond)


def test_perp_neg_batch_without_negatives_has_none(tokenizer, text_encoder):
    prompts = PromptEmbeddings(
        tokenizer, text_encoder, "a dog", perp_neg_weights={"side": {"front": 2.0}}
    )
    embeds, w = prompts.negatives(["front", "overhead"])
    assert embeds.shape[1] == w.shape[1] == 0


def test_perp_neg_needs_view_dependent_prompts(tokenizer, text_encoder):
    with pytest.raises(DreamtextError, match="view-dependent"):
        PromptEmbeddings(
            tokenizer,
            text_encoder,
            "a dog",
            view_dependent=False,
            perp_neg_weights={"side": {"front": 1.0}},
        )


def test_split_side_labels_get_their_own_prompts_and_perp_neg(tokenizer, text_encoder):
    labels = ViewThresholds(split_sides=True).labels
    prompts = PromptEmbeddings(
        tokenizer, text_encoder, "a dog", perp_neg_weights=default_perp_neg_weights(), labels=labels
    )
    assert set(prompts.cond) == set(labels)
    assert prompts.text_for("left side") == "a dog, left side view"
    assert not torch.equal(prompts.cond["left side"], prompts.cond["right side"])
    # The thesis's "side" weights are dropped; the split labels keep theirs.
    assert set(prompts.perp_neg_weights) == {"left side", "right side", "back"}
    embeds, w = prompts.negatives(["right side"])
    torch.testing.assert_close(embeds[0, 0], prompts.cond["front"])
    assert w.tolist() == [[2.0]]


def test_views_from_below_push_away_from_the_front_seen_from_below(tokenizer, text_encoder):
    """``views.below`` gives labels of their own ("side below"): Perp-Neg's weights for them were
    refused as unknown labels, and the defaults gave those views no negative (the Janus face
    came back in every view from under the horizon)."""
    labels = ViewThresholds(below=90.0).labels
    prompts = PromptEmbeddings(
        tokenizer, text_encoder, "a dog", perp_neg_weights=default_perp_neg_weights(), labels=labels
    )
    embeds, w = prompts.negatives(["side below", "back below", "front below", "side"])
    for b in (0, 1):
        torch.testing.assert_close(embeds[b, 0], prompts.cond["front below"])
    torch.testing.assert_close(embeds[3, 0], prompts.cond["front"])
    assert w.tolist() == [[2.0], [2.0], [0.0], [2.0]]
    own = PromptEmbeddings(
        tokenizer,
        text_encoder,
        "a dog",
        perp_neg_weights={"left side below": {"front below": 1.5, "back below": 0.5}},
        labels=ViewThresholds(split_sides=True, below=90.0).labels,
    )
    assert own.perp_neg_weights == {"left side below": {"front below": 1.5, "back below": 0.5}}


def test_perp_neg_rejects_unknown_view_labels(tokenizer, text_encoder):
    with pytest.raises(DreamtextError, match="'left'"):
        PromptEmbeddings(tokenizer, text_encoder, "a dog", perp_neg_weights={"side": {"left": 1.0}})


def test_textual_inversion_adds_the_learned_vector(tokenizer, text_encoder):
    vector = torch.randn(1, 32)
    expansions = add_textual_inversion(tokenizer, text_encoder, {"<dt-cat>": vector})
    ids = tokenizer("<dt-cat>", add_special_tokens=False).input_ids
    assert len(ids) == 1
    torch.testing.assert_close(text_encoder.get_input_embeddings().weight[ids[0]], vector[0])
    assert expansions == {"<dt-cat>": "<dt-cat>"}


def test_multi_vector_token_expands_to_one_token_per_vector(tokenizer, text_encoder):
    vectors = torch.randn(3, 32)
    expansions = add_textual_inversion(tokenizer, text_encoder, {"<dt-cat>": vectors})
    text = expand_tokens("a photo of <dt-cat>", expansions)
    assert text == "a photo of <dt-cat> <dt-cat>_1 <dt-cat>_2"
    ids = tokenizer(text, add_special_tokens=False).input_ids[-3:]
    torch.testing.assert_close(text_encoder.get_input_embeddings().weight[ids], vectors)


@pytest.mark.parametrize("first", ["<t>", "<t>_1"])
def test_a_token_named_as_another_tokens_vector_is_refused(tokenizer, text_encoder, first):
    """A file holding <t> of 2 vectors and a <t>_1 of its own (two files merged): <t>'s second
    vector and <t>_1's were written to one row, the last one won, without a word."""
    embeds = {"<t>": torch.full((2, 32), 1.0), "<t>_1": torch.full((1, 32), 9.0)}
    embeds = dict(sorted(embeds.items(), key=lambda item: item[0] != first))
    with pytest.raises(DreamtextError) as raised:
        add_textual_inversion(tokenizer, text_encoder, embeds)
    assert str(raised.value) == (
        "token '<t>_1' is a learned token of its own and the name of one of '<t>''s vectors "
        "(a token's vectors are named <t>, <t>_1, …); rename one"
    )


def test_a_token_is_not_expanded_inside_a_longer_learned_token(tokenizer, text_encoder):
    """<t> (2 vectors) and <t>2 (1): `a <t>2` became `a <t> <t>_12` (str.replace of <t> inside
    <t>2), which the tokenizer reads as <t>, <t>_1 and "2": <t>2's vector was not read."""
    vectors = {"<t>": torch.randn(2, 32), "<t>2": torch.randn(1, 32)}
    expansions = add_textual_inversion(tokenizer, text_encoder, vectors)
    assert expand_tokens("a <t>2 and <t>", expansions) == "a <t>2 and <t> <t>_1"
    ids = tokenizer(expand_tokens("<t>2", expansions), add_special_tokens=False).input_ids
    assert ids == tokenizer.convert_tokens_to_ids(["<t>2"])
    assert expand_tokens("a red cube", {}) == "a red cube"


def test_textual_inversion_changes_the_prompt_embedding(tokenizer, text_encoder):
    add_textual_inversion(tokenizer, text_encoder, {"<dt-cat>": torch.randn(1, 32)})
    before = encode_texts(tokenizer, text_encoder, ["a <dt-cat>"])
    table = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        table[-1] += 1.0
    after = encode_texts(tokenizer, text_encoder, ["a <dt-cat>"])
    assert not torch.allclose(before, after)


def test_textual_inversion_of_another_width_is_a_user_error(tokenizer, text_encoder):
    with pytest.raises(DreamtextError, match="width 768"):
        add_textual_inversion(tokenizer, text_encoder, {"<dt-cat>": torch.randn(1, 768)})


def test_textual_inversion_token_already_in_vocabulary_is_a_user_error(tokenizer, text_encoder):
    with pytest.raises(DreamtextError, match="already in the tokenizer"):
        add_textual_inversion(tokenizer, text_encoder, {"red": torch.randn(1, 32)})


def test_a_learned_token_that_is_a_word_in_capitals_is_refused_too(tokenizer, text_encoder):
    """CLIP's tokenizer lowercases the text: a learned "Red" took the place of the word "red"
    in every prompt and negative prompt of the run, without a word."""
    with pytest.raises(DreamtextError, match="token 'Red' is already in the tokenizer"):
        add_textual_inversion(tokenizer, text_encoder, {"Red": torch.randn(1, 32)})


def test_read_textual_inversion_round_trips_the_file(tmp_path: Path):
    path = tmp_path / "learned_embeds.safetensors"
    vector = torch.randn(32)
    save_file({"<dt-cat>": vector}, str(path))
    embeds = read_textual_inversion(path)
    torch.testing.assert_close(embeds["<dt-cat>"], vector[None])


def test_read_textual_inversion_missing_file_is_a_user_error(tmp_path: Path):
    with pytest.raises(DreamtextError, match="does not exist"):
        read_textual_inversion(tmp_path / "nope.safetensors")


def tokens_of(tokenizer, text: str) -> int:
    return len(tokenizer(text, truncation=False).input_ids)


def test_a_prompt_whose_view_label_would_be_cut_off_is_refused(tokenizer, text_encoder):
    """The tokenizer truncates at 77 tokens, the view label last: such a prompt trained every
    view on the same text, view-dependent prompting silently off."""
    prompt = " ".join(["red"] * 73)  # 75 tokens; with ", overhead view" 78
    assert tokens_of(tokenizer, prompt) <= tokenizer.model_max_length
    assert tokens_of(tokenizer, f"{prompt}, overhead view") > tokenizer.model_max_length
    with pytest.raises(DreamtextError, match=r"with its view label is \d+ tokens.*reads 77"):
        PromptEmbeddings(tokenizer, text_encoder, prompt)
    # Without view labels the same prompt fits, and is encoded whole.
    PromptEmbeddings(tokenizer, text_encoder, prompt, view_dependent=False)


def test_a_prompt_that_fits_with_every_view_label_is_accepted(tokenizer, text_encoder):
    limit = tokenizer.model_max_length
    prompt = " ".join(["red"] * 60)
    longest = max(tokens_of(tokenizer, f"{prompt}, {label} view") for label in VIEW_LABELS)
    prompt = " ".join(["red"] * (60 + limit - longest))  # the longest view text is exactly 77
    longest = max(tokens_of(tokenizer, f"{prompt}, {label} view") for label in VIEW_LABELS)
    assert longest == limit
    prompts = PromptEmbeddings(tokenizer, text_encoder, prompt)
    assert not torch.equal(prompts.cond["front"], prompts.cond["overhead"])


def test_a_negative_prompt_longer_than_the_encoder_reads_is_refused(tokenizer, text_encoder):
    with pytest.raises(DreamtextError, match="negative prompt is 82 tokens"):
        PromptEmbeddings(tokenizer, text_encoder, "a cube", negative=" ".join(["blurry"] * 80))


# --- formulas on values: each guards a one-character change the tests above let through ---


def test_perp_neg_negatives_this_run_has_no_prompt_for_are_dropped(tokenizer, text_encoder):
    """Guards against keeping every negative of a used label: ``{"back": {"front": 2,
    "left side": 1}}`` on a run without split_sides (no "left side" prompt) must give "back"
    one negative, the front prompt at weight 2 (K = 1), not a KeyError at the first back view.
    """
    weights = {"back": {"front": 2.0, "left side": 1.0}}
    prompts = PromptEmbeddings(tokenizer, text_encoder, "a dog", perp_neg_weights=weights)
    assert prompts.perp_neg_weights == {"back": {"front": 2.0}}
    embeds, w = prompts.negatives(["back"])
    assert w.tolist() == [[2.0]]
    torch.testing.assert_close(embeds[0, 0], prompts.cond["front"])
