"""Where a training step's time goes: a few SDS steps under torch.profiler, by phase and by op.

    python benchmarks/step_profile.py                  # CUDA: SD-2.1-base shapes (random weights),
                                                       # fp16, 256 px lambertian (FitFusion's size)
    python benchmarks/step_profile.py --compile        # U-Net and field compiled (`dreamtext
                                                       # text --compile` adds --guidance
                                                       # '{"compile_vae": true, "compile_mode":
                                                       # "reduce-overhead"}')
    python benchmarks/step_profile.py --size 64 --shading albedo
    python benchmarks/step_profile.py --device cpu --model none --size 32 --steps 1
    python benchmarks/step_profile.py --trace step.json   # a Chrome trace too (Perfetto)

The parts are built as ``benchmarks/sds_step.py`` builds them (``dreamtext.factory``, the default
field and renderer at ``--size`` px, ``render.grad_chunk_points`` as configured, so a large
render defers its backprop as the trainer's would), and each step is ``sds_step.one_step``:
render, the guidance's SDS loss, backward and Adam. ``--warmup`` steps run first (compilation,
cuDNN's choices, the allocator's growth), then ``--steps`` steps under the profiler. Printed:
the median milliseconds of each phase a step (synchronised wall time, as ``sds_step.py``
reports it), the kernels launched a step on CUDA, and the ``--rows`` operators with the most
*self* time a step: device time on CUDA (kernels, attributed to the op that launched them),
CPU time on a CPU. ``--model none`` takes ``loss = mean(rgb)`` in place of the guidance.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dreamtext.inputs import spin_briefly

# Before torch loads libgomp, which reads it once: the CLI's short spin count (README, Speed).
spin_briefly(os.environ)
import torch  # noqa: E402
from sds_step import (  # noqa: E402
    PRECISION_FLAGS,
    device_from_flag,
    guidance_overrides,
    model_folder,
    one_step,
    render_label,
    render_settings,
    synchronize,
)

from dreamtext.cameras import sample_poses  # noqa: E402
from dreamtext.config import resolve_config  # noqa: E402
from dreamtext.devices import use_expandable_segments  # noqa: E402
from dreamtext.factory import build_parts  # noqa: E402

PHASES = ("render", "guidance", "backward+Adam")


def step_config(args: argparse.Namespace, model: str | None, device: torch.device):
    """The run's config: the default one at ``--size`` px with the asked model, precision and
    shading-independent settings (``--compile``: the U-Net and ``render.compile_field``)."""
    overrides = {
        "prompt": "a red castle",
        "h": args.size,
        "w": args.size,
        "device": device.type,
        "guidance": guidance_overrides(model, args.precision, args.compile, args.guidance),
        "render": {"compile_field": args.compile},
    }
    return resolve_config(overrides)


def op_rows(profile: torch.profiler.profile, steps: int, cuda: bool, rows: int) -> list[dict]:
    """The ``rows`` operators with the most self time a step (device time on CUDA)."""
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in profile.key_averages() if getattr(e, key) > 0]
    events.sort(key=lambda e: getattr(e, key), reverse=True)
    return [
        {
            "op": e.key if len(e.key) <= 70 else e.key[:67] + "...",
            "calls": e.count / steps,
            "ms": getattr(e, key) / 1e3 / steps,
        }
        for e in events[:rows]
    ]


def kernels_a_step(profile: torch.profiler.profile, steps: int) -> float:
    """Device kernels (and copies) launched a step: the CUDA events the profiler saw."""
    from torch.autograd import DeviceType

    return sum(e.count for e in profile.key_averages() if e.device_type == DeviceType.CUDA) / steps


def report(args: argparse.Namespace, device: torch.device, times: list, ops: list[dict], kernels):
    """The printed section: phases a step, then the ops table."""
    medians = [statistics.median(t) * 1e3 for t in zip(*times, strict=True)]
    lines = [
        f"## Step profile — {device_name(device)} — {args.size} px {args.shading}, "
        f"model {args.model}, {args.precision}, compile {'on' if args.compile else 'off'}"
        + (f", guidance {render_label(args.guidance)}" if args.guidance else ""),
        "",
        "| " + " | ".join(f"{p} ms" for p in PHASES) + " | step ms | kernels a step |",
        "|---|---|---|---|---|",
        "| "
        + " | ".join(f"{m:.1f}" for m in medians)
        + f" | {sum(medians):.1f} | {'-' if kernels is None else f'{kernels:.0f}'} |",
        "",
        f"| op | calls a step | self {'device' if device.type == 'cuda' else 'CPU'} ms a step |",
        "|---|---|---|",
    ]
    lines += [f"| `{r['op']}` | {r['calls']:.0f} | {r['ms']:.2f} |" for r in ops]
    return "\n".join(lines)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda [auto]")
    parser.add_argument(
        "--model", help="sd21-random, tiny, none or a diffusers folder [CUDA: sd21-random]"
    )
    parser.add_argument("--precision", choices=list(PRECISION_FLAGS), help="[CUDA: fp16]")
    parser.add_argument("--size", type=int, default=256, help="render size in px [256]")
    parser.add_argument(
        "--shading", default="lambertian", choices=["albedo", "lambertian", "textureless"]
    )
    parser.add_argument("--compile", action="store_true", help="compile the U-Net and field")
    parser.add_argument(
        "--guidance",
        type=render_settings,
        help="the guidance section's settings, a JSON object, e.g. '{\"compile_vae\": true}'",
    )
    parser.add_argument("--warmup", type=int, default=3, help="steps before profiling [3]")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps [3]")
    parser.add_argument("--rows", type=int, default=30, help="operators listed [30]")
    parser.add_argument("--trace", type=Path, help="also write a Chrome trace here")
    parser.add_argument(
        "--cache", type=Path, default=Path("/tmp/dreamtext-bench"), help="random model cache"
    )
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    use_expandable_segments()
    device = device_from_flag(parser, args.device)
    cuda = device.type == "cuda"
    args.model = args.model or ("sd21-random" if cuda else "none")
    args.precision = args.precision or ("fp16" if cuda else "fp32")
    folder = model_folder(args.model, args.cache, device)
    cfg = step_config(args, folder, device)
    torch.manual_seed(0)
    parts = build_parts(cfg, device, with_guidance=folder is not None)
    if parts.guidance is not None:
        parts.guidance.set_prompt(cfg.prompt)
        parts.guidance.seed(0)
    renderer = parts.renderer.train()
    renderer.update_occupancy(parts.field, 0)
    generator = torch.Generator().manual_seed(0)

    def step() -> tuple[float, float, float]:
        poses = sample_poses(1, generator=generator).to(device)
        return one_step(
            parts.field,
            renderer,
            parts.guidance,
            parts.optimizer,
            poses,
            args.size,
            args.shading,
            device,
        )

    for _ in range(args.warmup):
        step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    synchronize(device)
    with torch.profiler.profile(activities=activities) as profile:
        times = [step() for _ in range(args.steps)]
    ops = op_rows(profile, args.steps, cuda, args.rows)
    kernels = kernels_a_step(profile, args.steps) if cuda else None
    print(report(args, device, times, ops, kernels), flush=True)
    if args.trace is not None:
        profile.export_chrome_trace(str(args.trace))
        print(f"trace: {args.trace}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
