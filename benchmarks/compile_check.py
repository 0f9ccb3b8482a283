"""Run the guidance's SDS steps through a ``torch.compile``d U-Net on the CPU, against eager.

    python benchmarks/compile_check.py                 # the tiny test pipeline, 4 steps each
    python benchmarks/compile_check.py --model /path/sd --steps 6 --size 64

``dreamtext text --compile`` compiles the U-Net (and the field's MLPs, whose CPU check is
``tests/test_field.py`` and ``field_cost.py --compile``) on CUDA only (on a CPU the flag is
ignored), and without a GPU that path would never run. Inductor also compiles for the CPU when a C
compiler is installed, so this script takes the same call path there: it builds the guidance as a
run does (``--perp-neg`` on, so the U-Net's batch changes with the view: 2, 3 or 4), puts
``torch.compile(models.unet)`` in the place
:meth:`~dreamtext.models.StableDiffusionModels.sds_unet` gives it on CUDA, and runs the same seeded
SDS steps (front, side, back, overhead) eagerly and compiled. It reports each step's time, how many
times dynamo compiled, and the largest difference between the image gradients. What it does not
show: CUDA kernels, their speed, or CUDA graphs; the GPU session's ``compile`` check measures
those.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from dreamtext.inputs import spin_briefly  # noqa: E402

# Before torch loads libgomp, which reads it once: the CLI's short spin count (README, Speed).
spin_briefly(os.environ)
import torch  # noqa: E402

from dreamtext.guidance import GuidanceConfig, StableDiffusionGuidance  # noqa: E402

VIEWS = ("front", "side", "back", "overhead")


def sds_gradients(
    model: str, compiled: bool, steps: int, size: int
) -> tuple[list[torch.Tensor], list[float]]:
    """Image gradients and seconds of ``steps`` seeded SDS steps, eager or with the U-Net
    compiled."""
    guidance = StableDiffusionGuidance(GuidanceConfig(model=model, perp_neg=True))
    if compiled:
        guidance.unet = torch.compile(guidance.models.unet)
    guidance.set_prompt("a red cube")
    guidance.seed(0)
    grads, seconds = [], []
    for step in range(steps):
        generator = torch.Generator().manual_seed(step)
        images = torch.rand(1, 3, size, size, generator=generator).requires_grad_(True)
        start = time.perf_counter()
        loss, _ = guidance.sds_loss(images, [VIEWS[step % len(VIEWS)]], step / steps)
        loss.backward()
        seconds.append(time.perf_counter() - start)
        grads.append(images.grad)
    return grads, seconds


def compile_count() -> int:
    """Frames dynamo has compiled so far in this process."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local diffusers folder [the tiny test pipeline]")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=32, help="render size [32]")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/dreamtext-bench"))
    args = parser.parse_args(argv)
    model = args.model
    if model is None:
        from tiny_models import write_tiny_sd

        folder = args.cache / "tiny"
        if not (folder / "model_index.json").is_file():
            write_tiny_sd(folder)
        model = str(folder)
    eager, eager_s = sds_gradients(model, False, args.steps, args.size)
    before = compile_count()
    compiled, compiled_s = sds_gradients(model, True, args.steps, args.size)
    graphs = compile_count() - before
    print(f"torch {torch.__version__}, model {model}, {args.steps} steps at {args.size} px")
    print("| step | view | eager s | compiled s | max |grad diff| | max |grad| |")
    print("|---|---|---|---|---|---|")
    for i, (a, b) in enumerate(zip(eager, compiled, strict=True)):
        print(
            f"| {i} | {VIEWS[i % len(VIEWS)]} | {eager_s[i]:.2f} | {compiled_s[i]:.2f} "
            f"| {float((a - b).abs().max()):.2e} | {float(a.abs().max()):.3f} |"
        )
    print(f"graphs compiled: {graphs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
