"""benchmarks/tokenizer_memory.py: a tokenizer of CLIP's size, for what the process keeps of the
tokenizers it read."""

from __future__ import annotations

import json
from pathlib import Path

from benchmark_scripts import load_benchmark
from transformers import CLIPTokenizer


def test_the_written_tokenizer_has_clips_size_and_every_merge_makes_a_token(tmp_path: Path):
    """49,408 tokens (256 byte symbols, each also word-final, the merges and the two special
    tokens), read by transformers as SD's tokenizer folder is; each merge's result is a token,
    so the BPE never builds one the vocabulary lacks."""
    bench = load_benchmark("tokenizer_memory", "tokenizer_memory_benchmark")
    folder = bench.write_clip_sized_tokenizer(tmp_path / "tokenizer")
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    merges = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    assert len(vocab) == 49_408 and len(merges) == 49_408 - 2 * 256 - 2
    assert all("".join(merge.split(" ")) in vocab for merge in merges)
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    assert len(tokenizer) == 49_408
    assert tokenizer.model_max_length == 77
    ids = tokenizer("a red cube").input_ids
    assert ids[0] == vocab["<|startoftext|>"] and ids[-1] == vocab["<|endoftext|>"]
