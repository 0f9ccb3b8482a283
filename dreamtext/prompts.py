"""View-dependent prompt embeddings, encoded once and cached per view label (thesis ch. 6.1.7).

DreamFusion appends the camera's view to the prompt ("a castle, front view") so the 2D prior is
asked for the side of the object the camera sees. There are five labels, so every prompt the
training loop can ask for is encoded once, up front; the text encoder can then be freed.

Textual inversion files (diffusers' ``learned_embeds.safetensors``: ``{token: [n, dim]}``) add new
tokens to the tokenizer and rows to the text encoder's embedding table before encoding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from dreamtext.cameras import VIEW_LABELS, every_view_label, with_view
from dreamtext.errors import DreamtextError

if TYPE_CHECKING:
    from dreamtext.guidance import GuidanceConfig

# The largest |value| a learned token's vector may hold: read_textual_inversion says why.
LARGEST_EMBEDDING_VALUE = 1e4


class PromptEmbeddings:
    """The text conditioning of one prompt, per view label.

    Encodes ``"<prompt>, <label> view"`` for each of ``labels`` (the labels the run's
    ``ViewThresholds`` give, by default the thesis's ``VIEW_LABELS``; or just ``prompt`` when
    ``view_dependent`` is off) and the negative prompt (``""`` is the unconditional embedding),
    each padded to ``tokenizer.model_max_length``. Embeddings are ``[L, D]`` rows of the text
    encoder's last hidden state, stored on ``device`` in ``dtype``.

    ``perp_neg_weights`` (``{label: {negative_label: weight}}``) names, per view, the view prompts
    used as Perp-Neg negatives (see ``guidance.perp_neg_guidance``); it needs view-dependent
    prompts. Weights for labels this run does not use (the split "left side" / "right side"
    without ``split_sides``, or "side" with it) are ignored, so one default serves both.
    """

    def __init__(
        self,
        tokenizer,
        text_encoder: torch.nn.Module,
        prompt: str,
        negative: str = "",
        view_dependent: bool = True,
        perp_neg_weights: Mapping[str, Mapping[str, float]] | None = None,
        labels: Sequence[str] = VIEW_LABELS,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if not prompt.strip():
            raise DreamtextError("the prompt is empty; give a text prompt such as 'a red castle'")
        if perp_neg_weights and not view_dependent:
            raise DreamtextError("Perp-Neg needs view-dependent prompts; turn view_dependent on")
        known = every_view_label()  # a run's own " below" labels included
        for label, negatives in (perp_neg_weights or {}).items():
            unknown = [v for v in (label, *negatives) if v not in known]
            if unknown:
                raise DreamtextError(
                    f"unknown view label {unknown[0]!r} in perp_neg_weights; use {known}"
                )
        self.perp_neg_weights = {
            label: {v: w for v, w in negatives.items() if v in labels}
            for label, negatives in (perp_neg_weights or {}).items()
            if label in labels
        }
        self.labels = tuple(labels)
        self.prompt, self.negative, self.view_dependent = prompt, negative, view_dependent
        texts = {label: self.text_for(label) for label in self.labels}
        check_lengths(tokenizer, list(texts.values()), negative, view_dependent)
        ordered = [negative, *texts.values()]
        encoded = encode_texts(tokenizer, text_encoder, ordered)
        encoded = encoded.to(device=device or encoded.device, dtype=dtype or encoded.dtype)
        self.uncond: Tensor = encoded[0]
        self.cond: dict[str, Tensor] = dict(zip(texts, encoded[1:], strict=True))

    def text_for(self, label: str) -> str:
        """The prompt text used for a camera with view ``label``."""
        return with_view(self.prompt, label) if self.view_dependent else self.prompt

    def get(self, labels: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(uncond, cond)``, each ``[B, L, D]``, for a batch of view labels."""
        cond = torch.stack([self.cond[label] for label in labels])
        return self.uncond.expand(len(labels), -1, -1), cond

    def negatives(self, labels: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Perp-Neg negatives ``(embeddings [B, K, L, D], weights [B, K])`` for a batch of labels.

        ``K`` is the most negatives any label in the batch has; the missing ones are padded with
        the unconditional embedding and weight 0, which contributes nothing. ``K`` is 0 when no
        label in the batch has negatives.
        """
        per_label = [self.perp_neg_weights.get(label, {}) for label in labels]
        k = max((len(n) for n in per_label), default=0)
        embeds = self.uncond.new_empty(len(labels), k, *self.uncond.shape)
        weights = torch.zeros(len(labels), k, device=self.uncond.device)
        for b, negatives in enumerate(per_label):
            embeds[b] = self.uncond
            for j, (negative_label, weight) in enumerate(negatives.items()):
                embeds[b, j] = self.cond[negative_label]
                weights[b, j] = weight
        return embeds, weights


def check_lengths(tokenizer, texts: Sequence[str], negative: str, view_dependent: bool) -> None:
    """Refuse texts the text encoder would cut off: it reads ``model_max_length`` tokens (77 for
    CLIP, start and end included) and the tokenizer silently drops the rest. The view label comes
    last, so a long prompt would lose it first, and every view would get the same conditioning.
    ``texts``: the prompt's text per view label (:meth:`PromptEmbeddings.text_for`)."""
    limit = tokenizer.model_max_length
    prompt = "the prompt with its view label" if view_dependent else "the prompt"
    for text, what in [*((text, prompt) for text in texts), (negative, "the negative prompt")]:
        count = len(tokenizer(text, truncation=False).input_ids)
        if count > limit:
            raise DreamtextError(
                f"{what} is {count} tokens, but the text encoder reads {limit} (start and end "
                f"included) and would cut off the rest; shorten {what.split(' with')[0]}"
            )


def check_run_lengths(guidance: GuidanceConfig, prompt: str, views: bool = True) -> None:
    """:func:`check_lengths` of a run of ``guidance``: ``prompt`` (with each of its view labels
    where ``views`` and ``guidance.view_dependent``) and the negative prompt, their learned
    tokens expanded, counted with the model's tokenizer read alone
    (:func:`dreamtext.models.read_text_side`), so that a text too long is refused before any
    weight loads: :class:`PromptEmbeddings` refused it once Stable Diffusion was loaded (SD 2.1:
    30-60 s on a laptop). The built-in prior has captions, not a tokenizer: its own check."""
    from dreamtext.models import read_text_side

    if guidance.model.startswith("builtin:"):
        return
    tokenizer, expansions = read_text_side(guidance)
    prompt = expand_tokens(prompt, expansions)
    labeled = views and guidance.view_dependent
    texts = [with_view(prompt, label) for label in guidance.views.labels] if labeled else [prompt]
    check_lengths(tokenizer, texts, expand_tokens(guidance.negative, expansions), labeled)


@torch.no_grad()
def encode_texts(tokenizer, text_encoder: torch.nn.Module, texts: Sequence[str]) -> Tensor:
    """``[N, L, D]``: the last hidden state of ``texts``, padded to the tokenizer's max length."""
    tokens = tokenizer(
        list(texts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    device = next(text_encoder.parameters()).device
    return text_encoder(tokens.input_ids.to(device))[0]


def read_textual_inversion(path: str | Path) -> dict[str, Tensor]:
    """Read a diffusers ``learned_embeds.safetensors``: ``{token: [n_vectors, dim]}``.

    Refused: a file that holds no tokens or is not one; vectors with NaN or ±inf; and vectors
    with a value past ``LARGEST_EMBEDDING_VALUE`` (1e4), finite as they may be. With --fp16 the
    text encoder's embedding table and residual stream are float16, whose largest value is
    65504: a value past it is ±inf once the vector is copied into the table, and every hidden
    state the token reaches is NaN (measured on a CPU in float16: the tests' tiny tower and
    ViT-L- and OpenCLIP-H-shaped ones are finite up to 65519, NaN from 65520). Below that the
    token's residual stream is its vector plus what each layer adds, which does not grow with
    it (the layers read it layer-normalised): the bound leaves 5.5e4 for that. In float32 the
    layer norm's sum of squares overflows first, once the vector's norm nears 1.8e19 (the
    square root of float32's largest; measured: finite up to a value of 3e19 to 1e21), far
    above. A vocabulary's values are about 1e5 times smaller: CLIP ViT-L's and OpenCLIP-H's
    rows have norms of 0.3-0.6 at widths 768 and 1024 (values about 0.02; towers of those
    shapes initialised at random measured 0.55 and 0.64, largest value 0.10), the tests' tiny
    tower's 0.11 (largest 0.07); learned tokens start from such rows, and a training that took
    one past 1e4 diverged.
    """
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise DreamtextError(
            f"textual inversion file {path} does not exist; pass a learned_embeds.safetensors"
        )
    try:
        embeds = load_file(str(path))
    except Exception as error:  # safetensors raises its own error type for a corrupt file
        raise DreamtextError(
            f"{path} is not a safetensors file of token embeddings: {error}"
        ) from error
    if not embeds:
        raise DreamtextError(f"{path} holds no token embeddings")
    if set(embeds) == {"emb_params"}:  # Automatic1111's layout: the token is not in the file
        raise DreamtextError(
            f"{path} is an Automatic1111 embedding (one 'emb_params' tensor, no token name); "
            "pass a diffusers learned_embeds.safetensors, which maps each token to its vectors"
        )
    for token, e in embeds.items():
        if e.ndim not in (1, 2):
            raise DreamtextError(
                f"token {token!r} in {path} has embeddings of shape {tuple(e.shape)}; a "
                "learned_embeds.safetensors holds [vectors, width] (or [width]) per token"
            )
        # A descriptor training that diverged (an older dreamtext saved it): every text→3D step's
        # ε̂ was NaN, and after 50 of them the run stopped blaming --guidance.
        if e.is_floating_point() and not bool(torch.isfinite(e).all()):
            raise DreamtextError(
                f"token {token!r} in {path} has NaN or infinite values: the training that made "
                "it diverged; train it again with a smaller learning rate (dreamtext image: "
                "image_to_3d.descriptor.lr in a --config)"
            )
        # Finite but huge (1e30): the text encoder's output of the prompt was NaN, every step's
        # ε̂ NaN, and after 50 steps the run stopped suggesting a smaller --guidance.
        largest = float(e.abs().max()) if e.is_floating_point() and e.numel() else 0.0
        if largest > LARGEST_EMBEDDING_VALUE:
            raise DreamtextError(
                f"token {token!r} in {path} has values up to {largest:.3g}, past "
                f"{LARGEST_EMBEDDING_VALUE:g}, the most a learned token may hold (the text "
                "encoder overflows past 65504 with --fp16, near 1e19 in float32; a vocabulary's "
                "values are below 1): the training that made it diverged; train it again with "
                "a smaller learning rate (dreamtext image: image_to_3d.descriptor.lr in a --config)"
            )
    return {token: (e[None] if e.ndim == 1 else e) for token, e in embeds.items()}


def expanded_tokens(token: str, n: int) -> list[str]:
    """diffusers' names for an ``n``-vector token: ``token, token_1, …, token_{n−1}``."""
    return [token] + [f"{token}_{i}" for i in range(1, n)]


def add_learned_tokens(
    tokenizer, embeds: Mapping[str, Tensor], width: int | None = None
) -> dict[str, str]:
    """Add the names of the learned tokens ``embeds`` (``{token: [n_vectors, dim]}``) to
    ``tokenizer``, no vectors: a token of ``n > 1`` vectors becomes ``token, token_1, …,
    token_{n-1}`` (diffusers' naming, :func:`expanded_tokens`). Returns ``{token: "token
    token_1 …"}``, which rewrites prompts to use all of them (:func:`expand_tokens`).

    Refused: a token of another width than ``width`` (the text encoder's; ``None``: not known),
    a name the tokenizer has, a name given twice. A batch counts the prompts of a model it
    has not loaded with this (the tokenizer read alone); :func:`add_textual_inversion` adds
    the vectors too.
    """
    expansions: dict[str, str] = {}
    new_tokens: list[str] = []
    for token, vecs in embeds.items():
        if width is not None and vecs.shape[-1] != width:
            raise DreamtextError(
                f"textual inversion token {token!r} has width {vecs.shape[-1]} but this text "
                f"encoder's is {width}; it was trained for another model"
            )
        names = expanded_tokens(token, vecs.shape[0])
        vocab = tokenizer.get_vocab()
        # CLIP stores whole words with a "</w>" suffix: "red" is taken by "red</w>"; and its
        # tokenizer lowercases the text, so "Red" in a prompt is that word too.
        taken = [n for n in names if {n, f"{n}</w>", n.lower(), f"{n.lower()}</w>"} & vocab.keys()]
        if taken:
            raise DreamtextError(
                f"token {taken[0]!r} is already in the tokenizer; rename the learned token"
            )
        # A file holding both <t> of n vectors and a <t>_1 of its own (two files merged): one
        # name for two vectors, the last written won and <t> lost its own second vector.
        twice = [n for n in names[1:] if n in new_tokens or n in embeds]
        if twice:
            raise DreamtextError(
                f"token {twice[0]!r} is a learned token of its own and the name of one of "
                f"{token!r}'s vectors (a token's vectors are named <t>, <t>_1, …); rename one"
            )
        expansions[token] = " ".join(names)
        new_tokens += names
    tokenizer.add_tokens(new_tokens)
    return expansions


def add_textual_inversion(
    tokenizer, text_encoder: torch.nn.Module, embeds: Mapping[str, Tensor]
) -> dict[str, str]:
    """Add learned tokens to ``tokenizer`` (:func:`add_learned_tokens`: their names, checked)
    and their vectors to ``text_encoder``'s embeddings; returns the expansions."""
    table = text_encoder.get_input_embeddings()
    expansions = add_learned_tokens(tokenizer, embeds, table.embedding_dim)
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    table = text_encoder.get_input_embeddings()
    names = [name for token, vecs in embeds.items() for name in expanded_tokens(token, len(vecs))]
    ids = tokenizer.convert_tokens_to_ids(names)
    with torch.no_grad():
        table.weight[ids] = torch.cat(list(embeds.values())).to(table.weight)
    return expansions


def expand_tokens(text: str, expansions: Mapping[str, str]) -> str:
    """Replace each multi-vector learned token by its run of tokens (see add_textual_inversion),
    in one pass over ``text`` that tries the longest token first, as the tokenizer splits its
    added tokens out: ``<t>`` is not replaced inside ``<t>2``, another learned token, nor inside
    an expansion already written."""
    if not expansions:
        return text
    tokens = sorted(expansions, key=len, reverse=True)
    pattern = "|".join(map(re.escape, tokens))
    return re.sub(pattern, lambda match: expansions[match[0]], text)
