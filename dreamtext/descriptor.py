"""Descriptor training (thesis ch. 5.2.2, eq. 5.2–5.4, ch. 6.1.10).

The descriptor words ``w1 … wk`` of ``"An image of <q> <w1> … <wk> <noun>"`` (from
:mod:`dreamtext.describe`) become new placeholder tokens, one per BPE piece, each initialised from
that piece's embedding, so the sentence starts out meaning exactly what it said and the
vocabulary's own words never change. Only the placeholders train; U-Net, VAE and the rest of the
text encoder are frozen. Each step noises an augmented copy of the image and asks the U-Net for
two predictions: with the full sentence τ_θ(y), pulled towards the true noise (eq. 5.2), and with
the frozen base sentence τ_b = "An image of <q> <noun>", towards which the full prediction is also
pulled so the noun keeps its class meaning (eq. 5.3).

The placeholders are saved as one multi-vector textual-inversion token (``DESCRIPTOR_TOKEN`` with
``n`` vectors, expanded by diffusers to ``<descriptor> <descriptor>_1 …``): the descriptor words are
contiguous in the sentence, and ``StableDiffusionPipeline.load_textual_inversion`` reads one token
per file. The trained sentence is ``"An image of <q> <descriptor> <noun>"``.
"""

from __future__ import annotations

import collections
import json
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dreamtext.augment import AugmentConfig, ImageAugmentation, image_to_tensor
from dreamtext.cameras import with_view
from dreamtext.checkpoint import (
    append_log_line,
    atomic_write_bytes,
    checkpoint_step,
    load_checkpoint,
    remove_stale_temps,
    save_into,
    with_digest,
)
from dreamtext.describe import (
    QUANTIFIERS,
    SENTENCE_START,
    base_sentence,
    make_sentence,
    pieces_at_most,
    plural,
    sentence_path,
    tokens_at_most,
)
from dreamtext.devices import (
    DIVERGED_AFTER,
    DIVERGENCE_WINDOW,
    fp16_loss_scaler,
    free_memory,
)
from dreamtext.errors import DreamtextError
from dreamtext.guidance import GuidanceConfig
from dreamtext.images import load_image
from dreamtext.interrupts import TrainingInterrupted, stop_on_signal, truncate_log
from dreamtext.models import StableDiffusionModels, load_for
from dreamtext.progress import bar_options, tqdm
from dreamtext.prompts import LARGEST_EMBEDDING_VALUE, expanded_tokens
from dreamtext.runstatus import track_status, update_status

DESCRIPTOR_TOKEN = "<descriptor>"
LEARNED_EMBEDS = "learned_embeds.safetensors"


@dataclass
class DescriptorOptions:
    """Descriptor training settings (defaults: thesis ch. 6.1.10 and 6.3.3).

    ``iters``: the thesis trained the tokens "around 10.000 iterations" (ch. 6.3.3, 2 h 10 min);
    its reference ``descriptor.py`` defaults ``--iterations`` to 5000, but where the two differ
    the thesis is followed. ``checkpoint_every`` / ``preview_every`` of 0 turn checkpoints /
    previews off; ``preview_guidance_scale`` is diffusers' pipeline's (``ε_u + s (ε_c − ε_u)``).
    """

    iters: int = 10_000
    lr: float = 3e-4
    batch_size: int = 1
    seed: int = 0
    checkpoint_every: int = 500
    preview_every: int = 1000
    preview_samples: int = 2
    preview_steps: int = 25
    preview_guidance_scale: float = 7.5
    log_every: int = 10
    token: str = DESCRIPTOR_TOKEN
    augment: AugmentConfig = field(default_factory=AugmentConfig)


class PlaceholderEmbeddings(nn.Module):
    """Trainable rows for the placeholder ids ``first_id … first_id + n − 1`` of a frozen table.

    A forward hook on the text encoder's token-embedding table replaces the looked-up rows of
    placeholder ids by ``vectors: [n, dim]``; the table itself is never written during training,
    so every other row stays bit-identical by construction, and Adam holds state for ``n`` rows
    instead of the whole vocabulary.
    """

    def __init__(self, table: nn.Embedding, first_id: int, init: Tensor):
        super().__init__()
        self.first_id = first_id
        self.vectors = nn.Parameter(init.detach().clone().float())
        self.table = table
        table.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
        ids = inputs[0]
        is_placeholder = (ids >= self.first_id)[..., None]
        rows = self.vectors[(ids - self.first_id).clamp(0, len(self.vectors) - 1)]
        return torch.where(is_placeholder, rows.to(output.dtype), output)

    @torch.no_grad()
    def write_to_table(self) -> None:
        """Copy the vectors into the table's placeholder rows (for code that reads the table)."""
        self.table.weight[self.first_id : self.first_id + len(self.vectors)] = self.vectors.to(
            self.table.weight
        )


def taken_token(tokenizer, names: list[str]) -> bool:
    """Whether one of the placeholder ``names`` is a token of ``tokenizer`` already (as a piece,
    or as a whole word: ``cube</w>``), in any case: CLIP's tokenizer lowercases a prompt, and
    text→3D refuses ``Cube`` as :func:`dreamtext.prompts.add_textual_inversion` does."""
    vocab = tokenizer.get_vocab()
    return any(
        form in vocab for n in names for form in (n, f"{n}</w>", n.lower(), f"{n.lower()}</w>")
    )


def check_token(tokenizer, token: str) -> None:
    """Refuse a descriptor ``token`` (``image_to_3d.descriptor.token``) that is a token of
    ``tokenizer`` already, whatever number of pieces the sentence will have (at most the
    tokenizer's ``model_max_length``): :func:`add_placeholders` refused it only after the
    sentence search, minutes with a real CLIP."""
    if taken_token(tokenizer, expanded_tokens(token, tokenizer.model_max_length)):
        raise DreamtextError(
            f"image_to_3d.descriptor.token {token!r} is already a token of the model's "
            f"tokenizer; choose another (the default is {DESCRIPTOR_TOKEN!r})"
        )


def check_sentence_to_learn(
    tokenizer,
    noun: str | None,
    quantifier: str | None,
    nouns: Iterable[str],
    vocabulary: Sequence[str],
    max_words: int,
    labels: Sequence[str],
    token: str = DESCRIPTOR_TOKEN,
) -> None:
    """Refuse, before the sentence search, options with which every sentence to learn is longer
    than the text encoder reads (``model_max_length``, 77 with start and end), as the search
    would once CLIP and Stable Diffusion had loaded (minutes with a real CLIP), or
    :meth:`DescriptorTrainer.check_length` once it had run.

    The search's nouns are ``noun`` where given, else each of ``nouns`` singular and plural,
    its quantifiers ``quantifier``, else :data:`QUANTIFIERS`, and the words it appends those of
    ``vocabulary`` (its nouns and adjectives). Each pair is counted as
    :meth:`SentencesToLearn.least_tokens` counts it, the search's own count: refused only where
    every pair is over the limit, so a sentence the search can find and the descriptor learn
    is never refused. The first pair that fits ends the count (nearly always the first).
    ``token`` names the placeholder in the refusal."""
    learnable = SentencesToLearn(tokenizer, labels)
    limit = learnable.limit

    def searched_nouns() -> Iterator[str]:  # a plural is made only where its singular is long
        for singular in nouns:
            yield singular
            yield plural(singular)

    noun_forms = [noun] if noun is not None else searched_nouns()
    # The fewest pieces of a word the search may append, counted where a pair needs it.
    fewest: int | None = None
    counted = False
    least: tuple[int, int, str] | None = None  # (tokens, base tokens, quantifier)
    for form in noun_forms:
        for q in [quantifier] if quantifier else QUANTIFIERS:
            if learnable.fits(q, [], form):
                return
            if not counted:
                fewest = learnable.fewest_pieces(vocabulary) if max_words > 0 else None
                counted = True
            count = learnable.least_tokens(q, form, fewest)
            if count <= limit:
                return
            if least is None or count < least[0]:
                least = (count, learnable.base_tokens(q, form), q)
    if least is None:
        return
    count, base, q = least
    with_label = " with its view label" if labels else ""
    if noun is not None:
        sentence, found = make_sentence(q, [token], noun), ""
        given = "a shorter --noun or --quantifier" if quantifier else "a shorter --noun"
    else:
        sentence, found = make_sentence(q, [token], "<noun>"), " whatever noun the search finds"
        given = "a shorter --quantifier or shorter --nouns" if quantifier else "shorter --nouns"
    if max_words > 0 and base < limit:  # a shorter word of the lists makes it fit
        given += f", or a word of at most {limit - base} pieces in --nouns or --adjectives"
    raise DreamtextError(
        f"the sentence to learn, {sentence!r}, is at least {count} tokens{with_label}{found} "
        "once its descriptor is written as the words' pieces, but the text encoder reads "
        f"{limit} (start and end included); give {given}"
    )


class SentencesToLearn:
    """The descriptor's prompt of each sentence the search may return, counted in ``tokenizer``
    (Stable Diffusion's, which encodes it) with the longest of the view ``labels`` text→3D
    appends (none: ``()``), without adding its placeholders: the search's
    :class:`dreamtext.describe.SentenceToLearn`, and the count of
    :func:`check_sentence_to_learn` and :func:`check_recorded_sentence` before any load.

    The prompt of ``"An image of <q> <w1> … <wk> <noun>"`` is ``"An image of <q> <p_1> … <p_n>
    <noun>"`` with one placeholder (one token) per BPE piece of the words, or of the noun where
    there is none (:class:`DescriptorTrainer`). The tokenizer splits a text at its spaces before
    its BPE (a noun's closing punctuation and the comma after it are one run), so with label
    ``L`` the prompt is

        T("An image of <q>") + n + pieces("<noun>,") + pieces("<L> view")

    tokens (T with start and end), and T("An image of <q>") + n + pieces("<noun>") without a
    label: :meth:`base_tokens` + n, the count :meth:`DescriptorTrainer.check_length` refuses
    over ``model_max_length``. Nearly every sentence fits by its bytes
    (:func:`~dreamtext.describe.pieces_at_most`); only the others are tokenized, each
    quantifier, noun, label and word once."""

    def __init__(self, tokenizer, labels: Sequence[str]):
        self.tokenizer = tokenizer
        self.limit: int = tokenizer.model_max_length
        self.labels = list(labels)
        self._heads: dict[str, int] = {}
        self._pieces: dict[str, int] = {}

    def pieces(self, word: str) -> int:
        """The BPE pieces of ``word`` (of a noun of several words, all of them)."""
        if word not in self._pieces:
            ids = self.tokenizer(word, add_special_tokens=False, truncation=False).input_ids
            self._pieces[word] = len(ids)
        return self._pieces[word]

    def base_tokens(self, quantifier: str, noun: str) -> int:
        """T(``"An image of <q> <noun>"`` with its longest view label), start and end included:
        T("An image of <q>") + pieces("<noun>,") + max over L of pieces("<L> view")."""
        if quantifier not in self._heads:
            head = self.tokenizer(f"{SENTENCE_START} {quantifier}", truncation=False)
            self._heads[quantifier] = len(head.input_ids)
        if not self.labels:
            return self._heads[quantifier] + self.pieces(noun)
        tail = max(self.pieces(f"{label} view") for label in self.labels)
        return self._heads[quantifier] + self.pieces(f"{noun},") + tail

    def tokens(self, quantifier: str, words: Sequence[str], noun: str) -> int:
        """The prompt's tokens with its longest view label: ``base_tokens + n``."""
        n = sum(self.pieces(word) for word in list(words) or [noun])
        return self.base_tokens(quantifier, noun) + n

    def fits(self, quantifier: str, words: Sequence[str], noun: str) -> bool:
        """Whether the prompt of the sentence fits: at most ``model_max_length`` tokens."""
        sentence = make_sentence(quantifier, words, noun)
        longest = [with_view(sentence, label) for label in self.labels] or [sentence]
        repeated = 0 if words else pieces_at_most(noun)
        if max(map(tokens_at_most, longest)) + repeated <= self.limit:
            return True  # the bound: the words' pieces stand for their placeholders
        return self.tokens(quantifier, words, noun) <= self.limit

    def shortest_first(self, words: Sequence[str]) -> list[str]:
        """``words`` by their pieces, fewest first (of equal pieces, in their order): appended
        to a sentence, each makes a prompt at least as long as the one before."""
        return sorted(words, key=self.pieces)

    def fewest_pieces(self, words: Sequence[str]) -> int | None:
        """The fewest pieces of a word of ``words`` (``None``: no word). Those of fewest bytes
        are tokenized first, and the count stops at a word of one piece."""
        fewest = None
        for word in sorted(words, key=pieces_at_most):
            pieces = self.pieces(word)
            if fewest is None or pieces < fewest:
                fewest = pieces
            if fewest == 1:
                break
        return fewest

    def least_tokens(self, quantifier: str, noun: str, fewest: int | None) -> int:
        """The fewest tokens a prompt of ``quantifier`` and ``noun`` has: :meth:`base_tokens` +
        the fewer of the noun's pieces (no word) and ``fewest``, the fewest pieces of a word the
        search may append (``None``: it appends none, ``max_words`` 0)."""
        n = self.pieces(noun) if fewest is None else min(self.pieces(noun), fewest)
        return self.base_tokens(quantifier, noun) + n


def sentence_too_long(trained: str, count: int, labelled: bool, limit: int) -> DreamtextError:
    """The refusal of a found sentence whose descriptor prompt, ``count`` tokens (with its view
    label where ``labelled``), is longer than the text encoder's ``limit``."""
    with_label = " with its view label" if labelled else ""
    return DreamtextError(
        f"the sentence to learn, {trained!r}, is {count} tokens{with_label} once its "
        f"descriptor is written as the words' pieces, but the text encoder reads {limit} (start "
        "and end included); describe the image again with a shorter --noun or a smaller "
        "--max-words, in a new --workspace"
    )


def check_recorded_sentence(tokenizer, record: dict, labels: Sequence[str], token: str) -> None:
    """Refuse, before any load, a workspace's found sentence (``sentence.json``'s
    ``quantifier``, ``words`` and ``noun``) whose descriptor prompt is too long, as
    :meth:`DescriptorTrainer.check_length` would once Stable Diffusion had loaded: `dreamtext
    describe` keeps to CLIP's 77 tokens alone. A record without those parts is left to the
    descriptor to name."""
    quantifier, words, noun = (record.get(key) for key in ("quantifier", "words", "noun"))
    if not (isinstance(quantifier, str) and isinstance(noun, str) and isinstance(words, list)):
        return
    if not all(isinstance(word, str) for word in words):
        return
    learnable = SentencesToLearn(tokenizer, labels)
    if not learnable.fits(quantifier, words, noun):
        count = learnable.tokens(quantifier, words, noun)
        trained = make_sentence(quantifier, [token], noun)
        raise sentence_too_long(trained, count, bool(labels), learnable.limit)


def add_placeholders(tokenizer, text_encoder: nn.Module, token: str, words: list[str]) -> list[int]:
    """Add one placeholder per BPE piece of ``words`` to the tokenizer and embedding table.

    Returns the pieces' original ids (the rows the placeholders start from). The new ids are
    ``len(tokenizer) − n … len(tokenizer) − 1``, in sentence order.
    """
    piece_ids = [
        i for word in words for i in tokenizer(word, add_special_tokens=False)["input_ids"]
    ]
    names = expanded_tokens(token, len(piece_ids))
    if taken_token(tokenizer, names):
        raise DreamtextError(f"token {token!r} is already in the tokenizer; choose another token")
    tokenizer.add_tokens(names)
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    new_ids = tokenizer.convert_tokens_to_ids(names)
    first = len(tokenizer) - len(names)
    if new_ids != list(range(first, len(tokenizer))):
        raise RuntimeError(f"placeholder ids {new_ids} are not the last rows of the table")
    return piece_ids


def descriptor_loss(
    pred_full: Tensor, pred_base: Tensor, target: Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 5.4: ``L = ‖ε_φ(x_t, t, τ_θ(y)) − ε‖² + ‖ε_φ(x_t, t, τ_θ(y)) − ε_φ(x_t, t, τ_b)‖²``.

    ``pred_full``, ``pred_base``, ``target``: ``[B, 4, h, w]``; both terms are means (MSE).
    ``target`` is ε, or v = √ᾱ_t ε − √(1 − ᾱ_t) x_0 for a v-prediction model. ``pred_base`` is
    treated as a constant (τ_b is frozen). The two terms come back as 0-dim tensors on the
    device (``loss_real``, ``loss_base``), read back by the caller with the loss in one sync.
    """
    loss_real = F.mse_loss(pred_full, target)
    loss_base = F.mse_loss(pred_full, pred_base.detach())
    return loss_real + loss_base, {"loss_real": loss_real.detach(), "loss_base": loss_base.detach()}


# How the lines that stop a descriptor training say to run it again with a setting changed, where
# the caller (train_descriptor's ``rerun``) names no command of its own.
RERUN = "the same command again"


class DescriptorTrainer:
    """The frozen Stable Diffusion, the placeholder vectors and their Adam optimiser.

    ``quantifier``, ``words``, ``noun``: the sentence found by the search. With no words (the
    search found none that raised the score), one descriptor initialised from the noun is put in
    front of it, so that there is something to train. The placeholders go into a copy of the
    text side, which stays on the device while the trainer lives; ``models``' own is untouched.
    """

    def __init__(
        self,
        models: StableDiffusionModels,
        quantifier: str,
        words: list[str],
        noun: str,
        options: DescriptorOptions,
    ):
        self.models, self.options = models, options
        self.device = models.device
        text = models.text_side(private=True)
        self.tokenizer, self.text_encoder = text.tokenizer, text.text_encoder.to(self.device)
        self.words = list(words) or [noun]
        piece_ids = add_placeholders(self.tokenizer, self.text_encoder, options.token, self.words)
        self.n_vectors = len(piece_ids)
        table = self.text_encoder.get_input_embeddings()
        self.placeholders = PlaceholderEmbeddings(
            table, len(self.tokenizer) - self.n_vectors, table.weight[piece_ids]
        )
        self.trained_sentence = make_sentence(quantifier, [options.token], noun)
        self.full_prompt = make_sentence(
            quantifier, expanded_tokens(options.token, self.n_vectors), noun
        )
        self.base_prompt = base_sentence(quantifier, noun)
        with torch.no_grad():
            self.tau_base = self.encode(self.base_prompt)
        self.optimizer = torch.optim.Adam([self.placeholders.vectors], lr=options.lr)
        # With --fp16, eq. 5.4's gradient at the prediction, 2 (ε̂ − ε) / (B·4·h·w), is about
        # 1e-4 at 64 × 64 latents (the bottom of fp16's normal range), and it still has the
        # U-Net's cross-attention and the text encoder to pass back through to the vectors.
        self.scaler = fp16_loss_scaler(models.dtype, self.device)
        self.augment = ImageAugmentation(models.resolution, options.augment)
        self.step = 0
        self.largest_value = 0.0  # of the vectors after the last step (train_step)
        # Whether the loss scaler skipped the update of each of the last DIVERGENCE_WINDOW steps
        # (train_step; never without fp16), and how many steps of the training it skipped.
        self.recent_skips: collections.deque[bool] = collections.deque(maxlen=DIVERGENCE_WINDOW)
        self.skipped_updates = 0
        # What the lines that stop the training say to run with a setting changed (a smaller
        # descriptor lr, --fp32): train_descriptor's ``rerun``.
        self.rerun = RERUN

    def check_length(self, labels: Sequence[str]) -> None:
        """Refuse a sentence the text encoder would cut off, before any step: the descriptor's
        prompt (its placeholder as the words' pieces, the noun's again in a sentence without
        words) and, with each view label in ``labels``, the text→3D stage's must each be at most
        ``model_max_length`` tokens (77, start and end included). :meth:`token_ids` cut it
        silently, and the text→3D stage refused it after the descriptor had trained."""
        limit = self.tokenizer.model_max_length
        texts = [self.full_prompt, *(with_view(self.full_prompt, label) for label in labels)]
        count = max(len(self.tokenizer(text, truncation=False).input_ids) for text in texts)
        if count > limit:
            raise sentence_too_long(self.trained_sentence, count, bool(labels), limit)

    def token_ids(self, prompt: str) -> Tensor:
        """``[1, 77]`` ids, padded to the model's length as Stable Diffusion's pipeline does."""
        return self.tokenizer(
            prompt,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )["input_ids"].to(self.device)

    def encode(self, prompt: str) -> Tensor:
        """``prompt`` → text-encoder hidden states ``[1, 77, dim]`` (placeholders included)."""
        return self.text_encoder(self.token_ids(prompt))[0]

    def noisy_batch(self, image: Tensor, step: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """An augmented copy of ``image: [1, 3, R, R]``, encoded and noised at a random t.

        Returns ``x_0, ε, x_t: [B, 4, h, w]`` and ``t: [B]``. Augmentation, ε and t are drawn
        from seeds derived from ``(seed, step)``, so a resumed run sees the same batches.
        """
        seed = self.options.seed * 1_000_003 + step
        if seed >= 2**64:  # a seed from before --seed's bound (SEED_MAX); torch takes < 2^64
            seed %= 2**64
        batch = self.options.batch_size
        images = self.augment(image.expand(batch, -1, -1, -1), seed)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            x0 = self.models.encode_images(images.to(self.device)).float()
        t = torch.randint(0, self.models.num_train_timesteps, (batch,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator).to(self.device)
        t = t.to(self.device)
        ab = self.models.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        return x0, noise, x_t, t

    def loss(
        self, x0: Tensor, noise: Tensor, x_t: Tensor, t: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Eq. 5.4 on one noised batch (see :func:`descriptor_loss`)."""
        batch = x_t.shape[0]
        tau_full = self.encode(self.full_prompt).expand(batch, -1, -1)
        unet, unet_in = self.models.unet, self.models.unet_input(x_t)
        pred_full = unet(unet_in, t, encoder_hidden_states=tau_full).sample.float()
        with torch.no_grad():
            tau_base = self.tau_base.expand(batch, -1, -1)
            pred_base = unet(unet_in, t, encoder_hidden_states=tau_base).sample
        target = noise
        if self.models.prediction_type == "v_prediction":
            ab = self.models.alphas_cumprod[t].view(-1, 1, 1, 1)
            target = ab.sqrt() * noise - (1 - ab).sqrt() * x0
        return descriptor_loss(pred_full, pred_base.float(), target)

    def loss_scale(self) -> Tensor:
        """The fp16 loss scale ``s`` as a 0-dim tensor on the device (``GradScaler.get_scale``
        would read it to the host); 1 without fp16."""
        return self.scaler.scale(torch.ones((), device=self.device))  # 1 · s = s exactly

    def train_step(self, image: Tensor) -> dict:
        """One Adam step on a fresh noised batch of ``image``; returns the losses (read back
        from the device together: one host sync, besides the fp16 loss scaler's own read of
        whether the gradients are finite). The same read sets ``largest_value``, the
        placeholder vectors' largest ``|value|`` after the update (NaN once one is NaN), which
        the loop checks every step, and, with fp16, tells whether the scaler skipped the
        update: the scale ``s`` after the step is below the one it ran with (``update`` halves
        ``s`` after a skipped step and only then; ``recent_skips``, ``skipped_updates``, and
        ``update_skipped`` in the step's log line). ``loss_scale``: the ``s`` the step ran
        with."""
        step = self.step + 1
        loss, parts = self.loss(*self.noisy_batch(image, step))
        self.optimizer.zero_grad(set_to_none=True)
        values = {"loss": loss.detach(), **parts}
        if self.scaler.is_enabled():
            values["loss_scale"] = self.loss_scale()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)  # skipped when the fp16 gradients overflowed
        self.scaler.update()
        self.step = step
        values["largest"] = self.placeholders.vectors.detach().abs().max()
        if self.scaler.is_enabled():
            values["next_scale"] = self.loss_scale()
        read = dict(zip(values, torch.stack(list(values.values())).tolist(), strict=True))
        self.largest_value = read.pop("largest")
        skipped = read.pop("next_scale", 1.0) < read.get("loss_scale", 1.0)
        self.recent_skips.append(skipped)
        self.skipped_updates += skipped
        return {"step": step, **read, **({"update_skipped": True} if skipped else {})}

    def state(self) -> dict:
        """A checkpoint: plain tensors, numbers and strings (loadable with ``weights_only``)."""
        return {
            "step": self.step,
            "vectors": self.placeholders.vectors.detach().cpu(),
            "optimizer": self.optimizer.state_dict(),
            "loss_scaler": self.scaler.state_dict(),
            "recent_skips": list(self.recent_skips),
            "skipped_updates": self.skipped_updates,
            "full_prompt": self.full_prompt,
        }

    def load_state(
        self, state: dict, folder: Path | str = "WORKSPACE/descriptor/checkpoints"
    ) -> None:
        """Continue from a checkpoint of :meth:`state` (``folder``: where it lies, for the
        messages refusing one of another sentence, and one whose vectors are NaN, infinite or
        past :data:`~dreamtext.prompts.LARGEST_EMBEDDING_VALUE`: an older dreamtext saved the
        vectors of a training that diverged, which text→3D refuses; resumed with no steps left
        they were saved as the learned file, with steps left the first step stopped and named
        the same checkpoint to go on from)."""
        if state["full_prompt"] != self.full_prompt or state["vectors"].shape != (
            self.placeholders.vectors.shape
        ):
            raise DreamtextError(
                f"the descriptor checkpoint belongs to another sentence; delete {folder} to "
                "start the descriptor training afresh"
            )
        largest = float(state["vectors"].abs().max()) if state["vectors"].numel() else 0.0
        if not largest <= LARGEST_EMBEDDING_VALUE:  # NaN included
            values = (
                "NaN values"
                if math.isnan(largest)
                else f"values up to {largest:.3g}, past {LARGEST_EMBEDDING_VALUE:g}, the most a "
                "learned token may hold"
            )
            raise DreamtextError(
                f"{Path(folder) / 'last.pt'} holds token embeddings with {values}: the training "
                f"that saved it diverged; delete {folder} and run {self.rerun} to start the "
                "descriptor training afresh, with a smaller image_to_3d.descriptor.lr in a "
                "--config (the thesis's is 3e-4)"
            )
        with torch.no_grad():
            self.placeholders.vectors.copy_(state["vectors"])
        # The learning rate is this run's (options.lr, which config.json records), as the
        # text→3D trainer keeps its own on resume: load_state_dict put back the checkpoint's.
        rates = [group["lr"] for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, lr in zip(self.optimizer.param_groups, rates, strict=True):
            group["lr"] = lr
        if self.scaler.is_enabled() and state.get("loss_scaler"):
            self.scaler.load_state_dict(state["loss_scaler"])
        self.recent_skips.extend(bool(skipped) for skipped in state.get("recent_skips", []))
        self.skipped_updates = int(state.get("skipped_updates", 0))
        self.step = int(state["step"])

    def saved_values(self) -> tuple[float, bool]:
        """What a save checks of the placeholder vectors: their largest ``|value|`` (NaN where
        one is NaN), to be at most :data:`~dreamtext.prompts.LARGEST_EMBEDDING_VALUE`, the bound
        text→3D reads the saved file with; and whether the text encoder's hidden states of the
        sentence they are in are free of NaN and ±inf (vectors that overflowed may stay finite,
        1e30 after a step at ``lr`` 1e30, while the encoder's activations overflow float32).
        One host read, at a save."""
        with torch.no_grad():
            hidden = self.encode(self.full_prompt)
            largest = self.placeholders.vectors.detach().abs().max()
            read = torch.stack([largest, torch.isfinite(hidden).all().to(largest)]).tolist()
        return read[0], read[1] == 1.0

    def learned_embeds(self) -> dict[str, Tensor]:
        """diffusers' textual-inversion format: ``{token: [n_vectors, dim]}``."""
        return {self.options.token: self.placeholders.vectors.detach().cpu().contiguous()}

    def pipeline(self):
        """A ``StableDiffusionPipeline`` over these components (placeholders included)."""
        self.placeholders.write_to_table()
        return self.models.pipeline(self.tokenizer, self.text_encoder)


def sample_grid(
    pipe,
    prompt: str,
    n: int,
    steps: int,
    guidance_scale: float,
    seed: int,
    size: int,
    desc: str = "sampling",
    negative: str = "",
) -> list:
    """``n`` seeded samples of ``prompt`` (PIL images, ``size`` × ``size``), with a tqdm bar
    ``desc`` over the denoising steps on stderr (the pipeline's own bar is off: see
    :meth:`dreamtext.models.StableDiffusionModels.pipeline`). ``negative``: the prompt whose
    embedding takes the unconditional one's place in classifier-free guidance (none: ``""``)."""
    generator = torch.Generator(pipe.device).manual_seed(seed)
    with tqdm(
        total=steps, desc=desc, unit="step", leave=False, file=sys.stderr, **bar_options()
    ) as bar:

        def step_done(pipe, index: int, timestep, tensors: dict) -> dict:
            bar.update(1)
            return tensors

        return pipe(
            prompt,
            negative_prompt=negative or None,
            num_images_per_prompt=n,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            generator=generator,
            height=size,
            width=size,
            callback_on_step_end=step_done,
        ).images


def _save_row(images: list, path: Path) -> None:
    from PIL import Image

    row = Image.new("RGB", (sum(im.width for im in images), max(im.height for im in images)))
    x = 0
    for im in images:
        row.paste(im, (x, 0))
        x += im.width
    # Written in place, a kill mid-write left a truncated PNG that a resume past its step kept.
    atomic_write_bytes(path, lambda f: row.save(f, format="PNG"))
    remove_stale_temps(path.parent, r"step_\d+\.png")  # only this run writes descriptor/


def _atomic_torch_save(state: dict, path: Path) -> None:
    """Save ``state`` with its checksum (:func:`~dreamtext.checkpoint.with_digest`), which
    :func:`~dreamtext.checkpoint.load_checkpoint` checks, atomically; the temp file of a save
    that was killed midway (SIGKILL) is removed. Through :func:`~dreamtext.checkpoint.save_into`:
    a full disk past the file's first 8 KiB was torch's "unexpected pos ..." traceback."""
    saved = with_digest(state)
    atomic_write_bytes(path, lambda f: save_into(saved, f, int(state.get("step", 0))))
    remove_stale_temps(path.parent, r"last\.pt")  # only this run writes descriptor/


def learned_embeds_path(workspace: str | Path) -> Path:
    return Path(workspace) / "descriptor" / LEARNED_EMBEDS


def train_descriptor(
    image_path: str | Path,
    workspace: str | Path,
    guidance: GuidanceConfig,
    options: DescriptorOptions | None = None,
    device: str = "cpu",
    rerun: str = RERUN,
) -> Path:
    """Train the descriptor of ``W/descriptor/sentence.json`` on the image; return the saved file.

    Writes ``W/descriptor/learned_embeds.safetensors``, ``log.jsonl``, ``checkpoints/last.pt``
    (every ``checkpoint_every`` steps; a run resumes from it), ``previews/step_XXXXXX.png`` and
    adds ``trained_sentence`` to sentence.json; ``W/status.json`` says ``phase: "descriptor"``
    with the descriptor's step (running, failed, interrupted; ``running`` at its end, for the
    text→3D stage that follows). Ctrl-C / SIGTERM save ``last.pt`` at the step they interrupt
    and raise :class:`~dreamtext.interrupts.TrainingInterrupted`; the next call continues from
    that step (log lines past it are dropped, not written twice). ``guidance``
    names the Stable Diffusion (model, precision, memory options); it is loaded through
    :func:`dreamtext.models.load_for`, so the text→3D stage that follows in the same process
    reuses it. ``rerun``: what the lines that stop it (diverged) say to run with a setting
    changed (a smaller descriptor lr, ``--fp32``): "the same command again" (:data:`RERUN`);
    a batch line's own `dreamtext image IMAGE --workspace W`, since the batch run again with
    the setting changes every line it resumes.
    """
    options = options or DescriptorOptions()
    if options.iters < 0:
        raise DreamtextError("--descriptor-iters must be 0 or more")
    record_path = sentence_path(workspace)
    if not record_path.is_file():
        raise DreamtextError(f"{record_path} is missing; run `dreamtext describe` first")
    record = json.loads(record_path.read_text(encoding="utf-8"))
    folder = record_path.parent
    models = load_for(guidance, device)
    trainer = DescriptorTrainer(
        models, record["quantifier"], record["words"], record["noun"], options
    )
    trainer.rerun = rerun
    trainer.check_length(guidance.views.labels if guidance.view_dependent else ())
    image = image_to_tensor(load_image(image_path), models.resolution)

    checkpoint = folder / "checkpoints" / "last.pt"
    if checkpoint.is_file():
        trainer.load_state(load_checkpoint(checkpoint), checkpoint.parent)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    (folder / "previews").mkdir(exist_ok=True)
    truncate_log(folder / "log.jsonl", trainer.step)  # steps logged after the checkpoint
    out = _train_and_save(trainer, image, Path(workspace), record, options)
    del trainer  # and with it the placeholders' text encoder on the device
    free_memory(models.device)
    return out


def _train_and_save(
    trainer: DescriptorTrainer,
    image: Tensor,
    workspace: Path,
    record: dict,
    options: DescriptorOptions,
) -> Path:
    """Train to ``options.iters`` under ``status.json``, then save the learned embedding and the
    trained sentence (``record`` is sentence.json's, updated and rewritten)."""
    from safetensors.torch import save

    record_path = sentence_path(workspace)
    saved = {"step": trainer.step}  # of the checkpoint on disk (none at step 0)
    with track_status(
        workspace,
        options.iters,
        lambda: trainer.step,
        trainer.device,
        (TrainingInterrupted, KeyboardInterrupt),
        phase="descriptor",
        finishes=False,  # text→3D follows
        saved=lambda: saved["step"],
    ):
        _train_loop(trainer, image, record_path.parent, options, saved)
        out = learned_embeds_path(workspace)
        embeds = save(trainer.learned_embeds())
        atomic_write_bytes(out, lambda f: f.write(embeds))
        # Untrained (--descriptor-iters 0), text→3D runs on the search's own sentence: the
        # placeholder of a sentence without words starts from the noun, and the trained
        # sentence would say the noun twice ("a little <descriptor> figurine").
        record["trained_sentence"] = (
            trainer.trained_sentence
            if trainer.step
            else make_sentence(record["quantifier"], record["words"], record["noun"])
        )
        record["descriptor_token"] = options.token
        record["descriptor_vectors"] = trainer.n_vectors
        record["descriptor_words"] = trainer.words
        record["descriptor_iters"] = trainer.step
        text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
        atomic_write_bytes(record_path, lambda f: f.write(text.encode("utf-8")))
    return out


def overflowed_line(
    trainer: DescriptorTrainer, checkpoint: Path, saved_step: int, largest: float | None = None
) -> str:
    """The line that stops a descriptor training whose vectors overflowed instead of saving
    them: as ``last.pt`` and ``learned_embeds.safetensors`` they made the text→3D stage's prompt
    NaN. ``largest``: the vectors' largest ``|value|`` after the step (:meth:`~DescriptorTrainer.
    train_step`), past :data:`~dreamtext.prompts.LARGEST_EMBEDDING_VALUE` or NaN; ``None``: a
    save found them or the text encoder's output of the sentence not finite
    (:meth:`DescriptorTrainer.saved_values`). ``saved_step``: the step of the checkpoint on
    disk (0: none), which a rerun goes on from."""
    kept = (
        f"not saved: {checkpoint} stays the checkpoint of step {saved_step}, from before, which "
        "the same command goes on from"
        if saved_step
        else "nothing saved"
    )
    if largest is None:
        # What overflowed is the text encoder's precision, not the vectors' float32: float16
        # (largest 65504) with --fp16.
        dtype = str(trainer.text_encoder.dtype).removeprefix("torch.")
        cause = (
            f"overflowed {dtype} by step {trainer.step} (the text encoder's output is NaN or "
            "infinite"
        )
    elif math.isnan(largest):
        cause = f"became NaN in step {trainer.step} (the loss or its gradient was NaN"
    else:
        cause = (
            f"reached a value of {largest:.3g} in step {trainer.step} (past "
            f"{LARGEST_EMBEDDING_VALUE:g}, the most a learned token may hold: the text encoder "
            "overflows past 65504 with --fp16"
        )
    return (
        f"the descriptor training diverged: its token embeddings {cause}; "
        f"image_to_3d.descriptor.lr is {trainer.options.lr:g}); {kept}; run {trainer.rerun} "
        "with a smaller image_to_3d.descriptor.lr in a --config (the thesis's is 3e-4)"
    )


def skipped_line(trainer: DescriptorTrainer, checkpoint: Path) -> str:
    """The line that stops a descriptor training whose fp16 loss scaler skipped the update of
    ``DIVERGED_AFTER`` of its last ``DIVERGENCE_WINDOW`` steps (their gradients NaN or infinite
    however small the scale, so the U-Net's or the text encoder's float16 overflowed): it would
    finish with the vectors it started from, untrained. ``checkpoint``: saved at the step, with
    those vectors (a skipped update leaves them as they were), which a rerun goes on from."""
    skipped = sum(trainer.recent_skips)
    return (
        f"the descriptor training diverged: its gradients were NaN or infinite in {skipped} of "
        f"the {len(trainer.recent_skips)} steps up to step {trainer.step}, so the fp16 loss "
        f"scaler skipped their updates and its token embeddings did not train; saved "
        f"{checkpoint}; run {trainer.rerun} with --bf16 or --fp32 (without --fp16), and it goes "
        "on from there"
    )


def _train_loop(
    trainer: DescriptorTrainer,
    image: Tensor,
    folder: Path,
    options: DescriptorOptions,
    saved: dict[str, int],
) -> None:
    """Steps from ``trainer.step`` to ``options.iters``: log lines, checkpoints (``last.pt``,
    also at the end and on Ctrl-C / SIGTERM; ``saved["step"]`` is set to the step of each once
    it is on disk), previews, and a ``status.json`` refresh at each log line and checkpoint."""
    workspace = folder.parent
    checkpoint = folder / "checkpoints" / "last.pt"

    def save() -> None:
        largest, hidden_finite = trainer.saved_values()
        if not hidden_finite:
            raise DreamtextError(overflowed_line(trainer, checkpoint, saved["step"]))
        if not largest <= LARGEST_EMBEDDING_VALUE:  # NaN included
            raise DreamtextError(overflowed_line(trainer, checkpoint, saved["step"], largest))
        try:
            _atomic_torch_save(trainer.state(), checkpoint)
        except BaseException:  # a Ctrl-C after the replace (in the temps' cleanup): it is saved
            if checkpoint_step(checkpoint) == trainer.step:
                saved["step"] = trainer.step
            raise
        saved["step"] = trainer.step

    with (
        stop_on_signal() as stop,
        (folder / "log.jsonl").open("ab", buffering=0) as log,  # nothing buffered
        tqdm(
            total=options.iters,
            initial=min(trainer.step, options.iters),
            desc="descriptor",
            unit="it",
            **bar_options(),
        ) as bar,
    ):
        while trainer.step < options.iters:
            info = trainer.train_step(image)
            # Every step, from the read the step makes anyway: vectors that overflowed stay so (in
            # fp32 Adam makes them NaN, in fp16 the loss scaler skips every step after), and the
            # saves' check stopped the run only at the next one, 500 steps on by default (all
            # of them, --descriptor-iters, with checkpoint_every 0).
            if not trainer.largest_value <= LARGEST_EMBEDDING_VALUE:  # NaN included
                raise DreamtextError(
                    overflowed_line(trainer, checkpoint, saved["step"], trainer.largest_value)
                )
            bar.set_postfix(loss=f"{info['loss']:.4g}", refresh=False)  # the update redraws
            bar.update(1)
            step = trainer.step
            if options.log_every and (step % options.log_every == 0 or step == options.iters):
                append_log_line(log, folder / "log.jsonl", info)
                update_status(workspace)
            # In fp16 the scaler skips the update of a step whose gradients are not finite, and
            # a U-Net that overflows in float16 on every step left the vectors as they started:
            # the training "finished" untrained.
            if sum(trainer.recent_skips) >= DIVERGED_AFTER:
                line = skipped_line(trainer, checkpoint)
                # A rerun with a fix goes on from here with an empty window, not one full already.
                trainer.recent_skips.clear()
                save()
                raise DreamtextError(line)
            if options.checkpoint_every and step % options.checkpoint_every == 0:
                save()
                update_status(workspace)
            if options.preview_every and step % options.preview_every == 0:
                images = sample_grid(
                    trainer.pipeline(),
                    # The pipeline writes the token out itself (its textual-inversion tokens):
                    # given full_prompt, which has it written out, it wrote "<descriptor>" out
                    # again inside "<descriptor>_1", and sampled another, garbled prompt.
                    trainer.trained_sentence,
                    options.preview_samples,
                    options.preview_steps,
                    options.preview_guidance_scale,
                    options.seed,
                    trainer.models.resolution,
                    desc="descriptor preview",
                )
                _save_row(images, folder / "previews" / f"step_{step:06d}.png")
            if stop["stop"]:
                save()
                raise TrainingInterrupted(step, checkpoint, stage="descriptor training")
    # The last step's save, where the loop's signal handling has ended: a stop then is noted as
    # the loop's, not raised into the save (which lost the steps since the last periodic one).
    with stop_on_signal() as stopped:
        save()
    # A stop after the loop's last look at its flag (as it closed its bar and log) or in that
    # save: the text→3D stage is not begun (it stopped after its first step, where
    # stop_on_signal reads it).
    if stop["stop"] or stopped["stop"]:
        raise TrainingInterrupted(trainer.step, checkpoint, stage="descriptor training")
