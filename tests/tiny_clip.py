"""A random CLIP (text + vision towers) saved in transformers layout, so tests load it the way
users load ``openai/clip-vit-base-patch32``: ``CLIPModel`` / ``CLIPProcessor.from_pretrained``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tiny_models import load_tiny_tokenizer, write_tiny_tokenizer
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPVisionConfig,
)

# ViT-B/32's shapes: the benchmark's model (random weights, same cost per sentence as the real one).
VIT_B32_TEXT = {
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_attention_heads": 8,
    "num_hidden_layers": 12,
}
VIT_B32_VISION = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "patch_size": 32,
    "image_size": 224,
}
TINY_TEXT = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
}
TINY_VISION = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "patch_size": 8,
    "image_size": 32,
}


def write_clip(
    folder: str | Path,
    extra_words: Iterable[str] = (),
    text: dict | None = None,
    vision: dict | None = None,
    projection_dim: int = 16,
    seed: int = 0,
) -> Path:
    """Write a random CLIP with the tiny test tokenizer into ``folder``; tiny towers by default."""
    folder = Path(folder)
    tokenizer = load_tiny_tokenizer(write_tiny_tokenizer(folder / "tokenizer_src", extra_words))
    vision = vision or TINY_VISION
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **(text or TINY_TEXT),
    )
    config = CLIPConfig(
        text_config=text_config.to_dict(),
        vision_config=CLIPVisionConfig(**vision).to_dict(),
        projection_dim=projection_dim,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    model.save_pretrained(folder)
    size = vision["image_size"]
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


CACHED_CLIP_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_tiny_clip(tmp_path: Path, monkeypatch, repo_id: str = "someone/tiny-clip") -> str:
    """A tiny CLIP as the Hugging Face cache holds ``repo_id`` (``refs/main`` naming the
    snapshot :data:`CACHED_CLIP_COMMIT`), in a cache under ``tmp_path`` that ``monkeypatch``
    makes the hub's for the test, with dreamtext's model cache cleared; returns the commit."""
    import huggingface_hub.constants

    import dreamtext.models as models

    repo = tmp_path / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(CACHED_CLIP_COMMIT)
    write_clip(repo / "snapshots" / CACHED_CLIP_COMMIT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    models.clear_cache()
    return CACHED_CLIP_COMMIT
