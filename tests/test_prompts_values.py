"""Textual-inversion files (dreamtext.prompts.read_textual_inversion): what a user's file gives."""

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dreamtext.errors import DreamtextError
from dreamtext.prompts import read_textual_inversion


def test_a_textual_inversion_file_with_no_tokens_is_a_user_error(tmp_path: Path):
    path = tmp_path / "learned_embeds.safetensors"
    save_file({}, str(path))
    with pytest.raises(DreamtextError, match="holds no token embeddings"):
        read_textual_inversion(path)


def test_a_file_that_is_not_safetensors_is_a_user_error_naming_it(tmp_path: Path):
    path = tmp_path / "learned_embeds.safetensors"
    path.write_bytes(b"this is not a safetensors file")
    with pytest.raises(DreamtextError, match="is not a safetensors file of token embeddings"):
        read_textual_inversion(path)


def test_a_textual_inversion_path_under_home_is_expanded(tmp_path: Path, monkeypatch):
    # "~/learned.safetensors" is the file in $HOME, as a shell would have it.
    monkeypatch.setenv("HOME", str(tmp_path))
    vectors = torch.arange(64, dtype=torch.float32).reshape(2, 32)
    save_file({"<dt-cat>": vectors}, str(tmp_path / "learned.safetensors"))
    embeds = read_textual_inversion("~/learned.safetensors")
    torch.testing.assert_close(embeds["<dt-cat>"], vectors)


@pytest.mark.parametrize("shape", [(1, 1, 32), ()])
def test_embeddings_of_another_rank_are_a_user_error_naming_the_token(tmp_path: Path, shape):
    """[1, n, width] passed the width check and ended in a traceback in the embedding table."""
    path = tmp_path / "learned_embeds.safetensors"
    save_file({"<dt-cat>": torch.zeros(shape)}, str(path))
    with pytest.raises(DreamtextError, match=r"token '<dt-cat>' in .* has embeddings of shape"):
        read_textual_inversion(path)


def test_an_automatic1111_embedding_is_named_as_such(tmp_path: Path):
    """Its one tensor is 'emb_params': read as a token of that name, a prompt's <my-style>
    stayed plain sub-words without a word."""
    path = tmp_path / "my-style.safetensors"
    save_file({"emb_params": torch.zeros(2, 32)}, str(path))
    with pytest.raises(DreamtextError, match="is an Automatic1111 embedding"):
        read_textual_inversion(path)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_embeddings_that_are_not_finite_are_refused_as_they_are_read(tmp_path: Path, bad):
    """A diverged descriptor's NaN vectors, given as guidance.textual_inversion, made every
    text→3D step's ε̂ NaN; after 50 steps the run stopped suggesting a smaller --guidance."""
    path = tmp_path / "learned_embeds.safetensors"
    vectors = torch.zeros(2, 32)
    vectors[1, 3] = bad
    save_file({"<dt-cat>": vectors}, str(path))
    with pytest.raises(DreamtextError, match=r"token '<dt-cat>' in .* has NaN or infinite values"):
        read_textual_inversion(path)


@pytest.mark.parametrize("huge", [1e30, -2e5])
def test_embeddings_past_the_largest_value_the_text_encoder_takes_are_refused(tmp_path, huge):
    """Finite but huge: at 1e30 the tiny text encoder's output of the prompt was NaN in float32,
    every text→3D step's ε̂ NaN, and after 50 steps the run stopped suggesting a smaller
    --guidance; past 65504 (float16's largest) a --fp16 run's table holds ±inf."""
    path = tmp_path / "learned_embeds.safetensors"
    vectors = torch.zeros(2, 32)
    vectors[1, 3] = huge
    save_file({"<dt-cat>": vectors}, str(path))
    message = f"token '<dt-cat>' in {path} has values up to {abs(huge):.3g}, past 10000, the "
    with pytest.raises(DreamtextError, match=re.escape(message + "most a learned token")) as error:
        read_textual_inversion(path)
    assert "\n" not in str(error.value)


def test_embeddings_at_the_largest_value_are_read_as_they_are(tmp_path):
    """The bound, 1e4, is far above a vocabulary's values (the tiny tower's largest is 0.07)."""
    path = tmp_path / "learned_embeds.safetensors"
    vectors = torch.full((2, 32), 0.05)
    vectors[0, 0], vectors[1, 1] = 1e4, -1e4
    save_file({"<dt-cat>": vectors}, str(path))
    torch.testing.assert_close(read_textual_inversion(path)["<dt-cat>"], vectors)
