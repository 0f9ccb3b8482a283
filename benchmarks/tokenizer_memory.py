"""What a Python session keeps of the Stable Diffusion tokenizers it read.

    python benchmarks/tokenizer_memory.py               # 8 models, each with its own tokenizer
    python benchmarks/tokenizer_memory.py --models 20

The early length checks read a model's tokenizer alone (``models.read_tokenizer``), and its load
shares it. Each model here is the tests' tiny random SD-2.x pipeline (``tests/tiny_models.py``)
with a tokenizer of CLIP's size in its place: a byte-level BPE of 49,408 tokens (256 byte
symbols, each also word-final, 48,894 merges and the two special tokens), written as SD's
``tokenizer/`` folder is (``vocab.json``, ``merges.txt``, ``tokenizer_config.json``); its
merges are random pairs of shorter tokens, so it tokenizes nothing as CLIP does, but holds as
many tokens. Printed: the resident memory (RSS) the tokenizers of all models take, read alone,
and the CPU time of one read; then, model after model, as a notebook's runs or a batch's lines
on several models do, its tokenizer read alone and the model loaded: how many tokenizers the
process holds, whether each earlier one is still alive (a ``weakref``, after ``gc.collect()``)
and the RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import random
import sys
import tempfile
import time
import weakref
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import psutil  # noqa: E402

CLIP_VOCAB_SIZE = 49_408
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
# The 256 symbols byte-level BPE maps bytes to: the printable Latin-1 characters stand for
# themselves, the other 68 bytes for U+0100 onwards.
BYTE_SYMBOLS = [
    *map(chr, [*range(33, 127), *range(161, 173), *range(174, 256)]),
    *map(chr, range(256, 256 + 68)),
]


def rss_mib() -> float:
    """The resident memory, once ``gc.collect()`` and glibc's ``malloc_trim`` have given back
    to the system what is free (a freed tokenizer's heap would otherwise stay in the process and
    hide the next one's)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return psutil.Process().memory_info().rss / 2**20


def write_clip_sized_tokenizer(folder: Path, seed: int = 0, max_chars: int = 8) -> Path:
    """Write a byte-level BPE tokenizer of :data:`CLIP_VOCAB_SIZE` tokens into ``folder`` in SD's
    layout. Each merge joins two tokens already in the vocabulary (the first not word-final)
    into a new one of at most ``max_chars`` characters, so every merge's result is a token, as a
    trained BPE's is."""
    rng = random.Random(seed)
    tokens = [*BYTE_SYMBOLS, *(symbol + "</w>" for symbol in BYTE_SYMBOLS)]
    vocab = {token: index for index, token in enumerate(tokens)}
    merges: list[tuple[str, str]] = []
    while len(vocab) < CLIP_VOCAB_SIZE - len(SPECIAL_TOKENS):
        first, second = rng.choice(tokens), rng.choice(tokens)
        joined = first + second
        too_long = len(joined.removesuffix("</w>")) > max_chars
        if first.endswith("</w>") or joined in vocab or too_long:
            continue
        vocab[joined] = len(vocab)
        tokens.append(joined)
        merges.append((first, second))
    for special in SPECIAL_TOKENS:
        vocab[special] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": SPECIAL_TOKENS[0],
        "eos_token": SPECIAL_TOKENS[1],
        "unk_token": SPECIAL_TOKENS[1],
        "pad_token": SPECIAL_TOKENS[1],
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=8, help="models, each with its tokenizer")
    args = parser.parse_args()

    import shutil

    import torch
    from tiny_models import pipeline_variant, write_tiny_sd

    from dreamtext import models

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = write_tiny_sd(folder / "source")
        shutil.rmtree(source / "tokenizer")
        write_clip_sized_tokenizer(source / "tokenizer")
        paths = [pipeline_variant(source, folder / f"sd{i}") for i in range(args.models)]
        one = models.read_tokenizer(str(paths[0]))
        print(f"tokenizer: {len(one):,} tokens")
        del one
        models.clear_cache()
        gc.collect()
        before, cpu = rss_mib(), time.process_time()
        for path in paths:
            models.read_tokenizer(str(path))
        cpu = time.process_time() - cpu
        gc.collect()
        grown = rss_mib() - before
        print(
            f"{args.models} tokenizers read alone: RSS +{grown:.1f} MiB "
            f"({grown / args.models:.1f} MiB each), {cpu / args.models * 1000:.0f} ms of CPU a read"
        )
        models.clear_cache()
        gc.collect()
        alive: list[weakref.ref] = []
        for i, path in enumerate(paths):
            alive.append(weakref.ref(models.read_tokenizer(str(path))))  # the checks' read
            models.load_stable_diffusion(str(path))
            gc.collect()
            living = "".join("1" if ref() is not None else "0" for ref in alive)
            print(
                f"after model {i + 1}: tokenizers held {len(models._TOKENIZERS)}, "
                f"alive (1..{i + 1}) {living}, RSS {rss_mib():.1f} MiB"
            )


if __name__ == "__main__":
    main()
