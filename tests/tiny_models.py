"""Tiny random models in the layouts the real ones use, so tests take the users' loading path.

``write_tiny_tokenizer`` writes a CLIP BPE tokenizer (vocab.json + merges.txt) small enough to read;
``write_tiny_sd`` writes a random Stable Diffusion 2.x pipeline in diffusers layout with the small
configs diffusers' own tests use. Both are deterministic: the same call writes the same files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from dreamtext.cameras import SPLIT_VIEW_LABELS, VIEW_LABELS

BOS, EOS = "<|startoftext|>", "<|endoftext|>"

# Words the tests write in prompts; each becomes one token.
TEST_WORDS: tuple[str, ...] = (
    *VIEW_LABELS,
    *(word for label in SPLIT_VIEW_LABELS for word in label.split() if word not in VIEW_LABELS),
    "view",
    "a",
    "an",
    "the",
    "of",
    "image",
    "photo",
    "red",
    "blue",
    "green",
    "sphere",
    "cube",
    "castle",
    "chair",
    "dog",
    "cat",
    "some",
    "many",
    "blurry",
    "low",
    "quality",
)

# Byte-level BPE maps printable ASCII (33..126) to itself, so these are the base symbols.
PRINTABLE = [chr(c) for c in range(33, 127)]


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply merges lowest rank first, as CLIP's BPE does."""
    while len(symbols) > 1:
        pairs = [(ranks.get(p, len(ranks) + 1), i) for i, p in enumerate(pairwise(symbols))]
        rank, i = min(pairs)
        if rank > len(ranks):
            break
        symbols = [*symbols[:i], symbols[i] + symbols[i + 1], *symbols[i + 2 :]]
    return symbols


def tiny_vocab_and_merges(words: Iterable[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP vocabulary: every printable character (word-final ``</w>`` and not) plus ``words``.

    For each word the merges that join what the earlier merges leave of it are appended, left to
    right. Appended merges rank after all earlier ones, so they never change an earlier word.
    """
    vocab: dict[str, int] = {}
    for token in [*PRINTABLE, *(c + "</w>" for c in PRINTABLE)]:
        vocab[token] = len(vocab)
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(w.lower() for w in words):
        if not word.isalpha() or not word.isascii():
            raise ValueError(f"tiny tokenizer words must be ASCII letters: {word!r}")
        pieces = _bpe([*word[:-1], word[-1] + "</w>"], ranks)
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            ranks[pair] = len(merges)
            merges.append(pair)
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            vocab.setdefault(pieces[0], len(vocab))
    for special in (BOS, EOS):
        vocab[special] = len(vocab)
    return vocab, merges


def write_tiny_tokenizer(folder: str | Path, extra_words: Iterable[str] = ()) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` of a tiny CLIP tokenizer into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = tiny_vocab_and_merges([*TEST_WORDS, *extra_words])
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def load_tiny_tokenizer(folder: str | Path) -> CLIPTokenizer:
    """The tokenizer written by :func:`write_tiny_tokenizer`, padding to 77 tokens like SD's."""
    folder = Path(folder)
    return CLIPTokenizer(
        vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=77
    )


def tiny_unet() -> UNet2DConditionModel:
    """The small SD U-Net of diffusers' tests: 2 levels, cross-attention width 32."""
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
    )


def tiny_vae() -> AutoencoderKL:
    """A 2-level KL autoencoder with 4 latent channels (downsamples by 2)."""
    return AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=64,
    )


def tiny_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """A 5-layer CLIP text tower of width 32 over ``tokenizer``'s vocabulary."""
    config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        max_position_embeddings=tokenizer.model_max_length,
        layer_norm_eps=1e-5,
        hidden_act="gelu",
        projection_dim=32,
    )
    return CLIPTextModel(config)


def tiny_scheduler(prediction_type: str) -> PNDMScheduler | DDIMScheduler:
    """SD's training schedule (scaled_linear 0.00085–0.012, 1000 steps).

    Epsilon models get SD 2.1-base's PNDM scheduler, v models SD 2.1's DDIM one, so loading is
    tested against both scheduler classes.
    """
    common = {
        "num_train_timesteps": 1000,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "prediction_type": prediction_type,
    }
    if prediction_type == "epsilon":
        return PNDMScheduler(skip_prk_steps=True, **common)
    return DDIMScheduler(clip_sample=False, **common)


def write_tiny_sd(
    folder: str | Path, prediction_type: str = "epsilon", extra_words: Iterable[str] = ()
) -> Path:
    """Write a random tiny SD-2.x pipeline (unet/, vae/, text_encoder/, tokenizer/, scheduler/).

    Native resolution 64 px (U-Net sample size 32 × VAE factor 2). Weights are seeded, so two calls
    write identical models.
    """
    folder = Path(folder)
    tokenizer = load_tiny_tokenizer(write_tiny_tokenizer(folder / "tokenizer", extra_words))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = tiny_unet()
        torch.manual_seed(1)
        vae = tiny_vae()
        torch.manual_seed(2)
        text_encoder = tiny_text_encoder(tokenizer)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=tiny_scheduler(prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return folder


def pipeline_variant(source: str | Path, dest: str | Path, **config_edits: dict) -> Path:
    """A copy of a pipeline folder (weights linked) with edits to ``<subfolder>/*config.json``."""
    source, dest = Path(source), Path(dest)
    for sub in source.iterdir():
        if sub.is_dir():
            (dest / sub.name).mkdir(parents=True)
            for f in sub.iterdir():
                (dest / sub.name / f.name).symlink_to(f)
    for subfolder, edits in config_edits.items():
        name = "scheduler_config.json" if subfolder == "scheduler" else "config.json"
        path = dest / subfolder / name
        config = json.loads(path.read_text())
        path.unlink()
        path.write_text(json.dumps({**config, **edits}))
    return dest


# A text→3D run small enough for a unit test: a few hash levels, a narrow MLP, 16×16 renders, no
# export. Tests merge it into their overrides (``resolve_config({**TINY_TRAIN, ...})``).
TINY_TRAIN: dict = {
    "h": 16,
    "w": 16,
    "log_every": 1,
    "preview_every": 2,
    "checkpoint_every": 2,
    "preview_views": 2,
    "export": False,
    "field": {
        "num_levels": 4,
        "log2_hashmap_size": 10,
        "base_resolution": 4,
        "finest_resolution_factor": 32.0,
        "hidden_dim": 16,
        "num_blocks": 1,
        "bg_hidden_dim": 8,
    },
    "render": {
        "num_steps": 16,
        "upsample_steps": 4,
        "march_steps": 64,
        "grid_resolution": 16,
        "grid_update_every": 2,
    },
}

# TINY_TRAIN's sizes alone (16 px renders, its field and samples), without its schedule (its
# checkpoint, preview and log steps): for runs of the built-in prior whose checks name the
# preset's steps. The prior keeps its image set at the render's size: at the preset's 32 px a
# one-step run peaked ~314 MB above a test's start, at 16 px ~72 MB.
TINY_SIZES: dict = {key: TINY_TRAIN[key] for key in ("h", "w", "field", "render")}


def builtin_on_virtual_cuda(
    workspace: str | Path, guidance: dict | None = None, render: dict | None = None, **top: Any
) -> dict:
    """:data:`TINY_TRAIN` for "a red cube" with the built-in prior on ``--device cuda`` (run it
    under ``virtual_cuda``), on the torch hash grid: Triton's interpreter would take minutes.
    ``guidance`` and ``render`` are merged into their sections, ``top`` into the config."""
    return {
        **TINY_TRAIN,
        "prompt": "a red cube",
        "workspace": str(workspace),
        "device": "cuda",
        "guidance": {"model": "builtin:shapes", **(guidance or {})},
        "field": {**TINY_TRAIN["field"], "encoding": "torch"},
        "render": {**TINY_TRAIN["render"], **(render or {})},
        **top,
    }
