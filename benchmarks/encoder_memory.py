"""Peak memory and time of the SDS step's VAE encode with its backward, with and without
``guidance.vae_checkpointing``.

    python benchmarks/encoder_memory.py [--render 64] [--dtype fp32|fp16|bf16]
                                        [--device cpu|cuda] [--compile] [--repeats 3]
                                        [--vae-config FILE] [--out FILE]

The VAE is built from its config (SD-2.1-base's by default) with random weights, frozen, on
``--device``. One call is ``StableDiffusionModels.encode_images`` on a ``--render`` px render
(resized to the VAE's 512 px, as every SDS step does), then the backward of a fixed weighting of
the latents to the render: what a training step asks of the encoder. With
``vae_checkpointing`` the VAE gets the function ``dreamtext.models`` gives it
(``checkpoint_by_resnet``): the forward keeps its blocks' inputs and the backward recomputes one
ResNet block at a time.

"peak MiB" is the most memory the call holds above what was allocated before it (the render,
the weights): on CUDA ``torch.cuda.max_memory_allocated``, on the CPU the largest "Total
Allocated" of ``torch.profiler``'s memory events (the CPU allocator's count of live tensor
bytes). ``--compile`` runs ``torch.compile``d encoders (Inductor; a C++ compiler on the CPU),
as ``guidance.compile_vae`` does, built by a first call that is not timed: their peak is what
CUDA graphs of them would hold in their own pool. The gradients of the two settings are
compared (largest difference, relative to the largest gradient).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

from dreamtext.inputs import spin_briefly  # noqa: E402

# Before torch loads libgomp, which reads it once: the CLI's short spin count (README, Speed).
spin_briefly(os.environ)
import torch  # noqa: E402
from encode_gradient import encode_with_gradient  # noqa: E402
from memory_model import live_bytes  # noqa: E402
from normal_quality import command_line  # noqa: E402
from sds_step import publish  # noqa: E402

from dreamtext.models import StableDiffusionModels, checkpoint_by_resnet  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def build_encoder(vae_config: Path, device: str, dtype: torch.dtype, checkpointing: bool):
    """The VAE of ``vae_config`` (random weights, seed 0) in the shape
    :meth:`StableDiffusionModels.encode_images` reads, checkpointed as ``set_memory_options``
    does with ``vae_checkpointing``."""
    from diffusers import AutoencoderKL

    config = json.loads(vae_config.read_text(encoding="utf-8"))
    torch.manual_seed(0)
    vae = AutoencoderKL.from_config(config).to(device, dtype).requires_grad_(False).eval()
    if checkpointing:
        vae.enable_gradient_checkpointing(checkpoint_by_resnet)
    return SimpleNamespace(
        vae=vae,
        resolution=int(config["sample_size"]),
        dtype=dtype,
        channels_last=False,
        scaling_factor=float(config.get("scaling_factor", 0.18215)),
    )


def cpu_peak(run) -> tuple[float, torch.Tensor]:
    """``run()``'s peak of live CPU tensor bytes above those live before it, in MiB, from the
    profiler's memory events (``memory_model.live_bytes``); and what it returned."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = run()
    _, alive = live_bytes(prof)
    return max(alive, default=0) / 2**20, result


def cuda_peak(run) -> tuple[float, torch.Tensor]:
    """``run()``'s peak of allocated CUDA memory above what was allocated before it, in MiB."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = run()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - before) / 2**20, result


def measure(args: argparse.Namespace, checkpointing: bool) -> dict:
    """Peak, median time and the gradient of one setting."""
    dtype = DTYPES[args.dtype]
    models = build_encoder(args.vae_config, args.device, dtype, checkpointing)
    encode = StableDiffusionModels.encode_images.__get__(models)
    if args.compile:
        encode = torch.compile(encode, dynamic=False)
    g = torch.Generator().manual_seed(1)
    render = torch.rand(1, 3, args.render, args.render, generator=g).to(args.device)
    peak_of = cuda_peak if args.device == "cuda" else cpu_peak
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    start = time.perf_counter()
    encode_with_gradient(encode, render)  # warm-up; with --compile, builds forward and backward
    sync()
    first = time.perf_counter() - start
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        encode_with_gradient(encode, render)
        sync()
        seconds.append(time.perf_counter() - start)
    peak, (_, grad) = peak_of(lambda: encode_with_gradient(encode, render))
    return {
        "checkpointing": checkpointing,
        "peak": peak,
        "ms": statistics.median(seconds) * 1e3,
        "first_s": first,
        "grad": grad.float().cpu(),
    }


def table(rows: list[dict]) -> str:
    plain = rows[0]["grad"]
    lines = [
        "| vae_checkpointing | peak MiB | ms (median) | first call s | gradient difference |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        diff = (r["grad"] - plain).abs().max() / plain.abs().max().clamp_min(1e-30)
        lines.append(
            f"| {'on' if r['checkpointing'] else 'off'} | {r['peak']:.0f} | {r['ms']:.0f} | "
            f"{r['first_s']:.1f} | {float(diff):.1e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render", type=int, default=64, help="render size in px [64]")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="[fp32]")
    parser.add_argument("--device", default="cpu", help="cpu or cuda [cpu]")
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoders")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls [3]")
    parser.add_argument(
        "--vae-config",
        type=Path,
        default=ROOT / "benchmarks" / "sd21_configs" / "vae_config.json",
        help="a diffusers AutoencoderKL config.json [SD-2.1-base's]",
    )
    parser.add_argument("--out", type=Path, help="append the section to this markdown file")
    args = parser.parse_args(argv)
    if args.render < 1 or args.repeats < 1:
        parser.error("--render and --repeats must be positive")
    if args.device not in ("cpu", "cuda"):
        parser.error(f"--device must be cpu or cuda, got {args.device!r}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    rows = [measure(args, checkpointing) for checkpointing in (False, True)]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    report = (
        f"\n## The VAE encoder's peak with and without vae_checkpointing ({device}) — {stamp}\n\n"
        f"`{command_line('encoder_memory.py', argv)}` (torch {torch.__version__}, "
        f"{args.dtype}, {'compiled' if args.compile else 'eager'}, {args.render} px render "
        f"encoded at 512 px, batch 1)\n\n{table(rows)}\n"
    )
    publish(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
