"""Sentence search (thesis ch. 5.2.1): describe an image in words with CLIP.

The sentence reads ``"An image of <quantifier> <w1> … <wk> <noun>"``; its score is the cosine
similarity of CLIP's normalised text embedding with CLIP's normalised image embedding. The search:

1. noun: every quantifier × every noun × {singular, plural}; the best fixes quantifier and noun;
2. words: append the vocabulary word (nouns, then adjectives) that raises the score most, while
   fewer than ``max_words`` words and while some word raises it;
3. adjust (``--adjust``, off by default; not in the thesis, whose search ends with step 2):
   replace each word, left to right, by the vocabulary word that scores best in its place, pass
   after pass until a pass changes nothing. A higher score, for about one more search's time per
   pass (every vocabulary word in every place).

Every comparison is strict and ties go to the earliest candidate, so the result does not depend on
how the candidates were batched. The image is encoded once; each candidate sentence is encoded
once (scores are cached by sentence), in batches padded to the batch's longest sentence.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image
from torch import Tensor

from dreamtext.checkpoint import atomic_write_bytes
from dreamtext.config import absolute_model_folder
from dreamtext.devices import (
    cpu_threads_record,
    describe_device,
    resolve_device,
    software_versions,
)
from dreamtext.errors import DreamtextError
from dreamtext.images import load_image, open_unchecked, pad_to_square, small_image_warning
from dreamtext.inputs import check_search_options, word_list_identity, word_list_path
from dreamtext.inputs import read_vocabulary as read_vocabulary  # re-exported
from dreamtext.interrupts import more_work, raise_if_stop_requested, rename_for
from dreamtext.progress import bar_options, tqdm
from dreamtext.runfiles import (
    SOURCE_SUFFIXES,
    check_describe_workspace,
    check_not_running,
    read_stage_sections,
    sentence_path,
)
from dreamtext.runfiles import read_record as read_record  # re-exported
from dreamtext.runfiles import source_copy as source_copy  # re-exported
from dreamtext.runstatus import HEARTBEAT_SECONDS, check_guards, track_status

log = logging.getLogger(__name__)

DEFAULT_CLIP = "openai/clip-vit-base-patch32"
QUANTIFIERS: tuple[str, ...] = ("a", "an", "some", "a few", "a little", "a lot of", "much", "many")
SENTENCE_START = "An image of"
CLIP_MAX_TOKENS = 77
"""Tokens CLIP's text tower (and Stable Diffusion's, which the descriptor trains on) reads of a
sentence, its start and end tokens included: the rest is cut off."""


# The most UTF-8 bytes one non-ASCII character becomes in a tokenizer's normalisation before its
# BPE (NFC, then lower case, or the other way round): NFC makes a text at most 3 times as many code
# points (UAX #15; क़ U+0958 is क + ़, 3 -> 6 bytes), lower case one code point at most 2 (İ is
# i + U+0307, 2 -> 3 bytes), each of at most 4 bytes. An ASCII character stays one byte.
MOST_BYTES_PER_CHARACTER = 3 * 2 * 4


def pieces_at_most(text: str) -> int:
    """An upper bound on ``text``'s byte-level BPE pieces without the tokenizer: a piece holds at
    least one byte of the text as the tokenizer normalises it, and no space; each non-ASCII
    character counted at the most bytes it becomes (:data:`MOST_BYTES_PER_CHARACTER`)."""
    letters = "".join(text.split())
    return sum(1 if c.isascii() else MOST_BYTES_PER_CHARACTER for c in letters)


def tokens_at_most(sentence: str) -> int:
    """An upper bound on ``sentence``'s CLIP tokens without the tokenizer: its
    :func:`pieces_at_most` plus the start and end tokens. Its UTF-8 bytes as written were no
    bound: 'İ' (2 bytes) is 3 pieces once lower-cased, 'क़' (3 bytes) 6 once in NFC."""
    return pieces_at_most(sentence) + 2


def fits_by_bytes(sentence: str) -> bool:
    """Whether ``sentence`` surely fits in :data:`CLIP_MAX_TOKENS` (:func:`tokens_at_most`)."""
    return tokens_at_most(sentence) <= CLIP_MAX_TOKENS


def make_sentence(quantifier: str, words: Sequence[str], noun: str) -> str:
    """``"An image of <quantifier> <w1> … <wk> <noun>"`` with single spaces."""
    return " ".join([SENTENCE_START, quantifier, *words, noun])


def base_sentence(quantifier: str, noun: str) -> str:
    """The sentence without descriptors, τ_b's text in eq. 5.3: ``"An image of <q> <noun>"``."""
    return make_sentence(quantifier, [], noun)


class SentenceToLearn(Protocol):
    """What the search needs to know of the descriptor that learns its sentence
    (:class:`dreamtext.descriptor.SentencesToLearn`): whether the prompt it will encode for a
    sentence fits its text encoder."""

    def fits(self, quantifier: str, words: Sequence[str], noun: str) -> bool:
        """Whether ``"An image of <quantifier> <words…> <noun>"``, as the descriptor encodes it,
        fits its text encoder."""
        ...

    def shortest_first(self, words: Sequence[str]) -> list[str]:
        """``words`` ordered so that each, appended to a sentence, makes a prompt at least as
        long as the one before."""
        ...


class ImageTextEncoder(Protocol):
    """What the search needs from CLIP: unit-length embeddings in a shared space."""

    def encode_texts(self, texts: list[str]) -> Tensor:
        """``texts`` (N sentences) → ``[N, D]`` unit-length text embeddings."""
        ...

    def encode_image(self, image: Image.Image) -> Tensor:
        """An RGB image → ``[D]`` unit-length image embedding."""
        ...


def check_clip_folder(model: str) -> None:
    """Refuse a ``--clip`` that names a folder (a path: ``.``, ``/`` or ``~`` first) that does not
    exist, or anything there that is not a folder, before anything loads; a hub id is left to the
    load. transformers reads a file given for a model as the processor's JSON config: a list or
    a number there ended the command in an ``AttributeError`` traceback, ``[[[[…`` in a
    ``RecursionError`` one."""
    path = Path(model).expanduser()
    if model.startswith((".", "/", "~")) and not path.exists():
        raise DreamtextError(
            f"CLIP folder {model} does not exist; pass --clip /path/to/folder (a CLIP model in"
            " transformers layout) or a hub id"
        )
    if path.exists() and not path.is_dir():
        raise DreamtextError(
            f"--clip {model} is a file, not a folder; pass --clip /path/to/folder (a CLIP model"
            " in transformers layout) or a hub id"
        )


class ClipEncoder:
    """CLIP through transformers (``CLIPModel`` + ``CLIPProcessor``), any hub id or local folder."""

    def __init__(self, model: str = DEFAULT_CLIP, device: str = "auto", batch_size: int = 256):
        from dreamtext.models import quiet_model_libraries

        quiet_model_libraries("transformers")
        from transformers import CLIPModel, CLIPProcessor

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        check_clip_folder(model)
        try:
            self.processor = CLIPProcessor.from_pretrained(model)
            self.model = CLIPModel.from_pretrained(model).to(device).eval()
        except (OSError, ValueError) as error:
            if Path(model).expanduser().is_dir():
                raise DreamtextError(
                    f"{model} is not a CLIP model in transformers layout "
                    f"({type(error).__name__}); pass --clip a CLIP folder or hub id"
                ) from None
            from huggingface_hub import constants

            offline = constants.HF_HUB_OFFLINE  # "1", "true", "yes" or "on", as the hub reads it
            where = "offline" if offline else "from the hub or disk"
            from dreamtext.models import hub_unreachable

            reason = type(error).__name__
            network = None if offline else hub_unreachable(error)
            if network is not None:
                where, reason = "from the hub, which could not be reached", network
            raise DreamtextError(
                f"CLIP model {model!r} is not available {where} ({reason}); download"
                " it once in transformers layout and pass --clip /path/to/folder"
            ) from None
        self.device = torch.device(device)
        self.batch_size = batch_size

    def fits(self, sentence: str) -> bool:
        """Whether ``sentence`` is at most the tokenizer's ``model_max_length`` tokens (77 for
        CLIP), start and end included: what :meth:`encode_texts` reads of it uncut."""
        tokenizer = self.processor.tokenizer
        limit = tokenizer.model_max_length
        if tokens_at_most(sentence) <= limit:  # nearly every sentence: no need to tokenize it
            return True
        return len(tokenizer(sentence)["input_ids"]) <= limit

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> Tensor:
        """``[N]`` sentences → ``[N, D]`` unit embeddings.

        Sentences are sorted by token count and each batch is padded only to its own longest
        sentence: CLIP's attention mask makes padding irrelevant to the result, but not to the cost
        (77 tokens cost ~8× what a 10-token sentence does).
        """
        tokenizer = self.processor.tokenizer
        ids = tokenizer(texts, truncation=True, max_length=tokenizer.model_max_length)["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: len(ids[i]))
        out = torch.empty(len(texts), self.model.config.projection_dim)
        # A with block: Ctrl-C clears the bar too, so the CLI's one line starts a line of its own.
        with tqdm(
            total=len(texts),
            desc="CLIP sentences",
            unit="sentence",
            leave=False,
            disable=len(texts) <= self.batch_size,
            **bar_options(),
        ) as bar:
            for start in range(0, len(order), self.batch_size):
                raise_if_stop_requested()  # a Ctrl-C that a library swallowed stops it here
                batch = order[start : start + self.batch_size]
                padded = tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
                features = self.model.get_text_features(
                    input_ids=padded["input_ids"].to(self.device),
                    attention_mask=padded["attention_mask"].to(self.device),
                )
                out[batch] = _unit(_pooled(features)).float().cpu()
                bar.update(len(batch))
        return out

    @torch.no_grad()
    def encode_image(self, image: Image.Image) -> Tensor:
        """An RGB image → ``[D]`` unit embedding: padded to a square with white, centred, as the
        descriptor sees it (:func:`dreamtext.augment.image_to_tensor`), then CLIP's own resize,
        crop (of nothing, once square) and normalisation. Unpadded, CLIP's centre crop of a wide
        or tall image cut off an object away from its middle."""
        image = pad_to_square(image)
        pixels = self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"]
        features = self.model.get_image_features(pixel_values=pixels.to(self.device))
        return _unit(_pooled(features))[0].float().cpu()


def _pooled(features: Tensor | object) -> Tensor:
    """transformers 4 returns the projected features, 5 an output holding them as pooler_output."""
    return features if isinstance(features, Tensor) else features.pooler_output


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True)


class SentenceScores:
    """Cosine similarity of sentences with one image, each sentence encoded at most once.
    ``check`` is called before each round of encoding: it raises to stop the search (Ctrl-C,
    a workspace another worker took over)."""

    def __init__(
        self,
        encoder: ImageTextEncoder,
        image_embedding: Tensor,
        check: Callable[[], None] | None = None,
    ):
        self.encoder = encoder
        self.image_embedding = image_embedding
        self.check = check
        self.cache: dict[str, float] = {}

    def __call__(self, sentences: list[str]) -> Tensor:
        """``[N]`` sentences → ``[N]`` scores ``s = ê_text · ê_image`` (both unit vectors)."""
        new = [s for s in dict.fromkeys(sentences) if s not in self.cache]
        if new:
            if self.check is not None:
                self.check()
            scores = self.encoder.encode_texts(new) @ self.image_embedding
            self.cache.update(zip(new, scores.tolist(), strict=True))
        return torch.tensor([self.cache[s] for s in sentences], dtype=torch.float64)


@dataclass
class SearchResult:
    """The sentence found and the score after each step (``noun``, ``words``, ``adjust``)."""

    quantifier: str
    noun: str
    words: list[str]
    score: float
    step_scores: dict[str, float] = field(default_factory=dict)

    @property
    def sentence(self) -> str:
        return make_sentence(self.quantifier, self.words, self.noun)


def _best(scores: Tensor) -> tuple[int, float]:
    """Index and value of the maximum; ``argmax`` returns the first of equal maxima."""
    index = int(torch.argmax(scores))
    return index, float(scores[index])


# The plural of every noun of the shipped nouns.txt, one "noun<TAB>plural" a line, as inflect
# gives it: scripts/noun_plurals.py writes it. Importing inflect costs ~4 s of CPU (typeguard
# instruments it as it loads), more than a tiny describe run's whole search, so only nouns of a
# user's own list that the table lacks pay for it.
PLURALS_FILE = "noun_plurals.txt"


@cache
def _inflect_engine():
    import inflect

    return inflect.engine()


def inflect_plural(noun: str) -> str:
    """inflect's plural of a singular noun (the noun itself where inflect gives none)."""
    return _inflect_engine().plural_noun(noun) or noun


@cache
def shipped_plurals() -> dict[str, str]:
    """``{noun: plural}`` for every noun of ``dreamtext/data/nouns.txt`` (:data:`PLURALS_FILE`)."""
    text = resources.files("dreamtext").joinpath("data", PLURALS_FILE).read_text(encoding="utf-8")
    rows = (line.split("\t") for line in text.splitlines() if line and not line.startswith("#"))
    return {noun: noun_plural for noun, noun_plural in rows}


def plural(noun: str) -> str:
    """The plural of a singular noun ("mug" → "mugs", "knife" → "knives"): the shipped table's,
    else inflect's."""
    return shipped_plurals().get(noun) or inflect_plural(noun)


def no_sentence_fits(quantifier: str | None, noun: str | None) -> DreamtextError:
    """The refusal of a search none of whose base sentences fits in CLIP's tokens."""
    given = " and ".join(
        f"{flag} {value!r}"
        for flag, value in (("--quantifier", quantifier), ("--noun", noun))
        if value
    )
    return DreamtextError(
        f"no sentence 'An image of <quantifier> <noun>' fits in CLIP's {CLIP_MAX_TOKENS} "
        f"tokens with {given or 'these word lists'}: give a shorter one"
    )


def no_sentence_to_learn(quantifier: str | None, noun: str | None) -> DreamtextError:
    """The refusal of a search none of whose sentences the descriptor can learn: each is too
    long for Stable Diffusion's text encoder once written as the descriptor's prompt, with its
    view label, with no word of the vocabulary as with each. ``dreamtext image`` refuses every
    such case before any load by the same count
    (:func:`dreamtext.descriptor.check_sentence_to_learn`), where CLIP's tokenizer counts no
    sentence longer than Stable Diffusion's does."""
    given = " and ".join(
        f"{flag} {value!r}"
        for flag, value in (("--quantifier", quantifier), ("--noun", noun))
        if value
    )
    return DreamtextError(
        "no sentence 'An image of <quantifier> <descriptor> <noun>' fits in the text encoder's "
        f"tokens with its view label with {given or 'these word lists'}: give a shorter one, "
        "or a shorter word in --nouns or --adjectives"
    )


def check_base_sentences(options: DescribeOptions, nouns: Sequence[str]) -> None:
    """Refuse, before CLIP loads, a search none of whose base sentences ``"An image of <q>
    <noun>"`` fits in CLIP's tokens (:func:`search_sentence` refused it once CLIP had loaded,
    and ``describe`` had written its status and the image's copy). Nearly always one fits by
    its bytes (:func:`fits_by_bytes`); only where none does is the tokenizer read, alone
    (``--clip``'s, no weights; one that does not read is left to the load to name)."""
    quantifier, noun = collapse_spaces(options.quantifier), collapse_spaces(options.noun)
    quantifiers = [quantifier] if quantifier else list(QUANTIFIERS)
    noun_forms = [noun] if noun else [form for n in nouns for form in (n, plural(n))]
    sentences = [base_sentence(q, n) for q in quantifiers for n in noun_forms]
    if any(fits_by_bytes(sentence) for sentence in sentences):
        return
    from dreamtext.models import quiet_model_libraries

    quiet_model_libraries("transformers")
    from transformers import AutoTokenizer

    check_clip_folder(options.clip)
    try:
        tokenizer = AutoTokenizer.from_pretrained(options.clip)
    except (OSError, ValueError):
        return
    limit = tokenizer.model_max_length
    if not any(len(tokenizer(sentence)["input_ids"]) <= limit for sentence in sentences):
        raise no_sentence_fits(quantifier, noun)


def search_sentence(
    score: SentenceScores,
    nouns: Sequence[str],
    adjectives: Sequence[str],
    max_words: int = 15,
    noun: str | None = None,
    quantifier: str | None = None,
    fits: Callable[[str], bool] = fits_by_bytes,
    adjust: bool = False,
    learnable: SentenceToLearn | None = None,
) -> SearchResult:
    """The search of the module docstring: its steps 1 and 2, and step 3 with ``adjust``.

    A given ``noun`` (used as written) or ``quantifier`` fixes that part of step 1; with both,
    step 1 only scores the base sentence. Only sentences that ``fits`` (CLIP's 77 tokens: the
    encoder's :meth:`ClipEncoder.fits`, else :func:`fits_by_bytes`) are scored, so the sentence
    found, which the descriptor trains, is never cut short.

    ``learnable`` (``dreamtext image``'s): only sentences whose descriptor prompt, in the
    tokenizer of the text encoder that trains it and with its longest view label, fits that
    encoder are scored, and a step-1 pair only where one of its sentences does: without words,
    or with one word of the vocabulary. A sentence with no word holds the noun's pieces twice
    (the descriptor starts from them): where that is too long and no word raises the score, the
    best word that fits is appended all the same, so that the sentence returned is one the
    descriptor learns. Wherever the sentence found without ``learnable`` fits, it is the one
    found with it (each word appended makes the prompt longer).
    """
    vocabulary = list(dict.fromkeys([*nouns, *adjectives]))

    def fit(q: str, words: list[str], n: str) -> bool:
        if not fits(make_sentence(q, words, n)):
            return False
        return learnable is None or learnable.fits(q, words, n)

    # Step 1: quantifier × noun × {singular, plural}, in that nesting order.
    quantifiers = [quantifier] if quantifier else list(QUANTIFIERS)
    noun_forms = [noun] if noun else [form for n in nouns for form in (n, plural(n))]
    pairs = [(q, n) for q in quantifiers for n in noun_forms if fits(base_sentence(q, n))]
    if not pairs:
        raise no_sentence_fits(quantifier, noun)
    if learnable is not None:
        shortest_first: list[str] = []  # the vocabulary so ordered, where a pair needs it

        def learnable_pair(q: str, n: str) -> bool:
            if learnable.fits(q, [], n):
                return True
            if max_words == 0:
                return False
            if not shortest_first:
                shortest_first.extend(learnable.shortest_first(vocabulary))
            for word in shortest_first:
                if not learnable.fits(q, [word], n):
                    return False  # nor does any word after it
                if fits(make_sentence(q, [word], n)):
                    return True
            return False

        pairs = [(q, n) for q, n in pairs if learnable_pair(q, n)]
        if not pairs:
            raise no_sentence_to_learn(quantifier, noun)
    index, best = _best(score([base_sentence(q, n) for q, n in pairs]))
    chosen_quantifier, chosen_noun = pairs[index]
    result = SearchResult(chosen_quantifier, chosen_noun, [], best, {"noun": best})

    def sentences_with(words_for: list[list[str]]) -> list[str]:
        return [make_sentence(chosen_quantifier, w, chosen_noun) for w in words_for]

    def fitting(words_for: list[list[str]]) -> list[list[str]]:
        return [w for w in words_for if fit(chosen_quantifier, w, chosen_noun)]

    # Step 2: append the best word while it raises the score (and once in any case where the
    # sentence without words is too long to learn: step 1 kept the pair only where a word fits).
    needs_word = not fit(chosen_quantifier, [], chosen_noun)
    while len(result.words) < max_words:
        candidates = fitting([[*result.words, w] for w in vocabulary])
        if not candidates:
            break
        index, best = _best(score(sentences_with(candidates)))
        if best <= result.score and not needs_word:
            break
        result.words, result.score, needs_word = candidates[index], best, False
    result.step_scores["words"] = result.score

    if not adjust:
        return result
    # Step 3: replace each word by the best in its place until a full pass changes nothing.
    changed = True
    while changed:
        changed = False
        for position in range(len(result.words)):
            # The word in place fits (it is the result's), so one candidate at least does.
            candidates = fitting(
                [[*result.words[:position], w, *result.words[position + 1 :]] for w in vocabulary]
            )
            index, best = _best(score(sentences_with(candidates)))
            if best > result.score:
                result.words, result.score, changed = candidates[index], best, True
    result.step_scores["adjust"] = result.score
    return result


@dataclass
class DescribeOptions:
    """``dreamtext describe`` options (also part of ``dreamtext image``)."""

    clip: str = DEFAULT_CLIP
    nouns: Path | None = None
    adjectives: Path | None = None
    noun: str | None = None
    quantifier: str | None = None
    max_words: int = 15
    adjust: bool = False
    batch_size: int = 256
    device: str = "auto"


def keep_source_copy(image_path: str | Path, workspace: str | Path, replace: bool = False) -> Path:
    """Copy the input image into ``W/descriptor/source.<ext>``, so the run folder holds
    everything that made it: the viewer shows it (from the sentence search on) and a copied run
    keeps it.

    ``<ext>`` is that of the image's format, read from its bytes (``source.png``, ``source.jpg``,
    ``source.webp``), not its file name's: a PNG without a suffix or a JPEG named ``.jfif`` gets
    a name the viewer recognises. An existing copy is kept unless ``replace`` (a new search of
    the image, which may have been edited since): then it is rewritten and a copy in another
    format removed. ``image_path`` must have passed :func:`load_image`.
    """
    image_path, workspace = Path(image_path), Path(workspace)
    # Without Pillow's pixel limit, as load_image read it: a 200-megapixel phone photo's JPEG
    # (decoded at 1/8 size there) was a DecompressionBombError traceback here.
    with open_unchecked(image_path) as image:
        suffix = SOURCE_SUFFIXES[image.format]
    target = workspace / "descriptor" / f"source{suffix}"
    if replace or not target.is_file():
        data = image_path.read_bytes()
        atomic_write_bytes(target, lambda f: f.write(data))
    if replace:
        for other in set(SOURCE_SUFFIXES.values()) - {suffix}:
            (target.parent / f"source{other}").unlink(missing_ok=True)
    return target


def collapse_spaces(words: str | None) -> str | None:
    """``--noun`` / ``--quantifier`` as the search reads them: runs of spaces as one, the ends
    stripped (``"coffee   mug"`` → ``"coffee mug"``); ``None`` for none (an empty one was
    refused by :func:`check_options`)."""
    return " ".join(words.split()) if words else None


def used_options(options: DescribeOptions) -> dict[str, object]:
    """The options a search ran with, as sentence.json records them (``options``): a ``--clip``
    folder and the word lists as absolute paths (``null``: the built-in lists), so that a rerun
    from another directory finds them and compares like with like."""

    def absolute(path: Path | str | None) -> str | None:
        return word_list_path(path)[0] if path is not None else None

    return {
        "clip": absolute_model_folder(options.clip),
        "nouns": absolute(options.nouns),
        "adjectives": absolute(options.adjectives),
        # As the search used them: "coffee   mug" is the noun "coffee mug".
        "noun": collapse_spaces(options.noun),
        "quantifier": collapse_spaces(options.quantifier),
        "max_words": options.max_words,
        "adjust": options.adjust,
    }


def word_lists_record(
    options: DescribeOptions, nouns: Sequence[str], adjectives: Sequence[str]
) -> dict[str, dict[str, object]]:
    """The word lists a search reads, as sentence.json and an image run's config.json record
    them (``word_lists``): ``{"nouns": ..., "adjectives": ...}``, each its file, word count and
    digest (:func:`dreamtext.inputs.word_list_identity`). The options record the files by path
    alone, and a file edited since reads otherwise."""
    return {
        "nouns": word_list_identity(options.nouns, nouns),
        "adjectives": word_list_identity(options.adjectives, adjectives),
    }


def recorded_word_lists(workspace: str | Path) -> tuple[dict, str] | None:
    """``(word_lists, file)`` as ``workspace`` recorded them last: sentence.json's (the search
    done), else config.json's ``image_to_3d`` section (an image run stopped before its search
    ended); ``None`` without a record of them (a run from before it)."""
    record = read_record(workspace) or {}
    if isinstance(record.get("word_lists"), dict):
        return record["word_lists"], str(sentence_path(workspace))
    section = read_stage_sections(workspace).get("image_to_3d", {})
    if isinstance(section.get("word_lists"), dict):
        return section["word_lists"], str(Path(workspace) / "config.json")
    return None


def same_word_list(before: object, identity: dict[str, object]) -> bool:
    """Whether ``identity`` (:func:`dreamtext.inputs.word_list_identity`) is of the list that
    ``before`` recorded, whatever it held: the same file, or both piped in (``--nouns <(grep
    ...)`` again: a pipe's name is another at every run, and it is the flag that names the
    list). A list given by another path is another option, not a change of this one."""
    if not isinstance(before, dict):
        return False
    piped = before.get("piped") is True and identity.get("piped") is True
    return piped or before.get("file") == identity["file"]


def changed_word_lists(recorded: dict, now: dict[str, dict[str, object]]) -> list[str]:
    """The word lists of ``now`` (:func:`word_lists_record`) that read otherwise than the same
    list (:func:`same_word_list`) did when ``recorded``: ``"nouns.txt (12 words, sha256
    0a1b2c3d4e5f; now 13, ...)"``, ``"the nouns piped in (12 words, ...)"``."""
    out = []
    for name, identity in now.items():
        before = recorded.get(name)
        if not same_word_list(before, identity) or before.get("sha256") == identity["sha256"]:
            continue
        file = identity["file"] or f"the built-in {name}.txt"
        if identity.get("piped") is True:
            file = f"the {name} piped in"
        out.append(
            f"{file} ({before.get('words')} words, sha256 {str(before.get('sha256'))[:12]}; now "
            f"{identity['words']}, {str(identity['sha256'])[:12]})"
        )
    return out


def warn_changed_word_lists(
    workspace: str | Path, options: DescribeOptions, nouns: list[str], adjectives: list[str]
) -> None:
    """Warn where a word list this search reads differs from the one the workspace recorded
    for the same file (:func:`changed_word_lists`): a rerun or resume would otherwise search a
    list edited since, without a word. A warning, not a refusal: nothing the workspace holds was
    made from the old list once this search replaces its sentence (a trained descriptor's
    workspace is refused before: :func:`check_describe_workspace`)."""
    found = recorded_word_lists(workspace)
    if found is None:
        return
    recorded, source = found
    changed = changed_word_lists(recorded, word_lists_record(options, nouns, adjectives))
    if changed:
        log.warning(
            f"warning: word list changed since {source} recorded it: {'; '.join(changed)}; "
            "this search reads it as it is now (restore the file to search the recorded list)"
        )


def check_options(options: DescribeOptions) -> tuple[list[str], list[str]]:
    """Refuse options no search can use (:func:`dreamtext.inputs.check_search_options`: the CLI
    asks it before torch is imported too); return the nouns and adjectives."""
    return check_search_options(
        options.max_words, options.quantifier, options.noun, options.nouns, options.adjectives
    )


def describe(
    image_path: str | Path,
    workspace: str | Path,
    options: DescribeOptions | None = None,
    encoder: ImageTextEncoder | None = None,
    status: bool = False,
    learnable: SentenceToLearn | None = None,
) -> str:
    """Find the sentence for an image, write ``W/descriptor/sentence.json``, return the sentence.

    The record holds the sentence, its parts and scores, the image and the options the search ran
    with (:func:`used_options`).

    A workspace holding another image's record, or a trained one, is refused before the search
    (:func:`check_describe_workspace`).
    ``encoder`` defaults to CLIP loaded from ``options.clip``; tests pass a fake one.
    ``learnable``: the descriptor that will learn the sentence (``dreamtext image``'s), whose
    prompts the search keeps within its text encoder's tokens (:func:`search_sentence`).
    ``status``: keep ``W/status.json`` of the search as a run of its own (``dreamtext describe``:
    ``running`` in phase ``describe``, rewritten every :data:`HEARTBEAT_SECONDS` with the time
    so far, then ``finished``, ``failed`` or ``interrupted``) and the image's copy
    (:func:`keep_source_copy`), written once the checks have passed and CLIP is loaded;
    image→3D tracks its describe stage and keeps its copy itself.
    """
    # A search is work of its own, as a run is (dreamtext.trainer.train): one that follows work
    # complete in the same handler block (a caller's loop of searches) is stopped by signals
    # again, not only noted; one noted in between stops it once CLIP is loaded, below.
    more_work()
    options = options or DescribeOptions()
    nouns, adjectives = check_options(options)
    image = load_image(image_path)
    check_describe_workspace(workspace, image_path)
    warn_changed_word_lists(workspace, options, nouns, adjectives)
    if encoder is None:
        check_base_sentences(options, nouns)
    if warning := small_image_warning(image, image_path):
        log.warning(warning)
    if status:  # track_status asks again; before CLIP loads, a second search is refused at once
        check_not_running(workspace)
    encoder = encoder or ClipEncoder(options.clip, options.device, options.batch_size)
    # A Ctrl-C / SIGTERM while CLIP loaded can have been swallowed (raised in a finalizer).
    raise_if_stop_requested()
    if not status:
        return _describe(
            image, image_path, workspace, options, encoder, nouns, adjectives, learnable
        )
    device = resolve_device(options.device)
    with track_status(
        workspace, 0, lambda: 0, device, phase="describe", heartbeat=HEARTBEAT_SECONDS
    ):
        # The image the sentence is of, for the viewer's card and for `dreamtext image` after it
        # (which refuses an image edited since its copy). A new search replaces an older copy.
        keep_source_copy(image_path, workspace, replace=True)
        # The run's one file: a stop once it is in place changes neither its status.json
        # ("finished") nor the command's exit status.
        return _describe(
            image,
            image_path,
            workspace,
            options,
            encoder,
            nouns,
            adjectives,
            learnable,
            completes_work=True,
        )


def search_ran_on(encoder: ImageTextEncoder, clip: str | None = None) -> dict[str, object]:
    """What a search scored its sentences with, where its options say only ``auto``: CLIP's
    device (and what it is) and dtype, the CPU threads and the software versions, as a run's
    ``config.json`` records them (its ``ran_on``), and which files of ``clip`` (``--clip``)
    loaded: ``clip_revision``, the hub commit of a cached hub id (as ``model_revision`` is
    Stable Diffusion's), and ``clip_folder``, the snapshot or local folder it loaded from
    (:func:`dreamtext.models.clip_revision`; ``None`` where neither is known). Near-tied
    sentences can rank apart on another device, dtype, thread count or CLIP revision. A test's
    fake encoder, without a CLIP model, records ``None`` for the device and dtype."""
    from dreamtext.models import clip_revision

    revision, folder = clip_revision(clip) if clip is not None else (None, None)
    model = getattr(encoder, "model", None)
    device = getattr(encoder, "device", None)
    dtype = getattr(model, "dtype", None)
    return {
        "device": None if device is None else str(device),
        "device_name": None if device is None else describe_device(torch.device(device)),
        "clip_dtype": None if dtype is None else str(dtype).removeprefix("torch."),
        "clip_revision": revision,
        "clip_folder": folder,
        **cpu_threads_record(),
        "versions": software_versions(),
    }


def _describe(
    image: Image.Image,
    image_path: str | Path,
    workspace: str | Path,
    options: DescribeOptions,
    encoder: ImageTextEncoder,
    nouns: list[str],
    adjectives: list[str],
    learnable: SentenceToLearn | None = None,
    completes_work: bool = False,
) -> str:
    """:func:`describe`'s search and record, its checks passed. Between rounds of scoring, and
    before the record is written, the search stops on a Ctrl-C / SIGTERM whose
    ``KeyboardInterrupt`` was lost and on a workspace another worker took over (``batch``).
    ``completes_work``: the record is the command's last file, whose rename into place marks
    its work complete (:func:`~dreamtext.interrupts.rename_completing_work`)."""

    def check() -> None:
        raise_if_stop_requested()
        check_guards(workspace)

    score = SentenceScores(encoder, encoder.encode_image(image), check)
    result = search_sentence(
        score,
        nouns,
        adjectives,
        max_words=options.max_words,
        noun=collapse_spaces(options.noun),
        quantifier=collapse_spaces(options.quantifier),
        fits=getattr(encoder, "fits", fits_by_bytes),
        adjust=options.adjust,
        learnable=learnable,
    )
    record = {
        "sentence": result.sentence,
        **asdict(result),
        "image": str(Path(image_path).resolve()),
        "clip": absolute_model_folder(options.clip),
        "max_words": options.max_words,
        "options": used_options(options),
        "word_lists": word_lists_record(options, nouns, adjectives),
        "sentences_scored": len(score.cache),
        "ran_on": search_ran_on(encoder, options.clip),
    }
    text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    check()
    atomic_write_bytes(
        sentence_path(workspace),
        lambda f: f.write(text.encode("utf-8")),
        replace=rename_for(completes_work),
    )
    return result.sentence
