"""Sentences per second of the CLIP sentence search: dreamtext's batching vs the reference code's.

    python benchmarks/describe.py                     # 400 step-1 sentences, 2 threads
    python benchmarks/describe.py --sentences 2000 --threads 4
    python benchmarks/describe.py --words 10          # sentences of steps 2–3 with 10 descriptors

The model is a random CLIP with ViT-B/32's shapes (text tower 512 wide, 12 layers, 8 heads; vision
tower 768 wide, 12 layers, patch 32, 224 px), built from configs, saved in transformers layout and
loaded through ``ClipEncoder`` like ``openai/clip-vit-base-patch32``: the cost per sentence is the
real model's, nothing is downloaded. Its tokenizer knows every word of the sentences as one token,
as CLIP's 49k-token vocabulary does for common words, so sentences are as long as real ones.

* dreamtext: ``SentenceScores`` over ``ClipEncoder``: the image encoded once, sentences sorted by
  length, batches padded to their longest sentence.
* reference: chunks of 1,000 sentences through ``CLIPProcessor(text, images, padding=max_length)``
  and ``CLIPModel(...)``: every sentence padded to 77 tokens, the image encoded again per chunk.

The sentences are the first ones of the search's step 1 (quantifier × noun × singular/plural over
the shipped noun list); ``--words K`` puts the first K shipped adjectives before each noun, the
length of steps 2 and 3 after K words. Both ways must give the same scores; the largest
difference is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from dreamtext.inputs import spin_briefly  # noqa: E402

# Before torch loads libgomp, which reads it once: the CLI's short spin count (README, Speed).
spin_briefly(os.environ)
import torch  # noqa: E402
from tiny_clip import VIT_B32_TEXT, VIT_B32_VISION, write_clip  # noqa: E402

from dreamtext.describe import (  # noqa: E402
    QUANTIFIERS,
    ClipEncoder,
    SentenceScores,
    make_sentence,
    plural,
    read_vocabulary,
)

REFERENCE_CHUNK = 1000


def search_sentences(count: int, words: int) -> list[str]:
    """The first ``count`` sentences of step 1, in the search's order, with ``words`` adjectives."""
    nouns = read_vocabulary(None, "nouns.txt")
    adjectives = read_vocabulary(None, "adjectives.txt")[:words]
    forms = [form for noun in nouns for form in (noun, plural(noun))]
    sentences = [make_sentence(q, adjectives, n) for q in QUANTIFIERS for n in forms]
    return sentences[:count]


@torch.no_grad()
def reference_scores(
    encoder: ClipEncoder, image: Image.Image, sentences: list[str]
) -> torch.Tensor:
    """The reference code's loop: 1,000 sentences at a time, padded to 77, image re-encoded."""
    scores = []
    for start in range(0, len(sentences), REFERENCE_CHUNK):
        inputs = encoder.processor(
            text=sentences[start : start + REFERENCE_CHUNK],
            images=image,
            return_tensors="pt",
            padding="max_length",
            max_length=77,
            truncation=True,
        )
        out = encoder.model(**inputs)
        text = out.text_embeds / out.text_embeds.norm(dim=-1, keepdim=True)
        image_embeds = out.image_embeds / out.image_embeds.norm(dim=-1, keepdim=True)
        scores.append(text @ image_embeds[0])
    return torch.cat(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=400)
    parser.add_argument("--words", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    sentences = search_sentences(args.sentences, args.words)
    words = {w for s in sentences for w in s.lower().split() if w.isalpha() and w.isascii()}
    image = Image.new("RGB", (320, 240), (200, 60, 40))
    with tempfile.TemporaryDirectory() as folder:
        write_clip(folder, words, VIT_B32_TEXT, VIT_B32_VISION, projection_dim=512)
        encoder = ClipEncoder(folder, batch_size=args.batch_size)

        start = time.perf_counter()
        ours = SentenceScores(encoder, encoder.encode_image(image))(sentences)
        ours_s = time.perf_counter() - start

        start = time.perf_counter()
        reference = reference_scores(encoder, image, sentences)
        reference_s = time.perf_counter() - start

    n = len(sentences)
    lengths = [len(encoder.processor.tokenizer(s)["input_ids"]) for s in sentences]
    print(f"{n} sentences, {min(lengths)}–{max(lengths)} tokens, {args.threads} threads")
    print(f"dreamtext (batched, padded per batch): {n / ours_s:8.1f} sentences/s  ({ours_s:.1f} s)")
    print(
        f"reference (chunks of 1000, pad to 77): {n / reference_s:8.1f} sentences/s  "
        f"({reference_s:.1f} s)"
    )
    print(f"speed-up: {reference_s / ours_s:.1f}×")
    print(f"largest score difference: {(ours.float() - reference).abs().max():.2e}")


if __name__ == "__main__":
    main()
