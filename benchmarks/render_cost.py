"""What one training render of the NeRF costs: bytes kept for backward, time, and turntables.

    python benchmarks/render_cost.py                       # default field, 64 px, both shadings
    python benchmarks/render_cost.py --sizes 32 64 --shadings albedo lambertian
    python benchmarks/render_cost.py --turntable workspace/a_run   # time its 60-frame turntable

For each render size and shading: a freshly initialised default field (``FieldConfig()``: 16
levels × 2 features, 2^19 table, 4 × 96 MLP, torch hash grid) behind a default renderer whose
occupancy grid has been updated once, one random training camera (seed 0), and
``loss = mean(rgb)``. Reported:

* **saved bytes**: everything autograd keeps for backward during the render, counted with
  ``torch.autograd.graph.saved_tensors_hooks`` (per ray; for a deferred render the largest
  chunk, since chunks are freed one after another);
* **render + backward** time (median of ``--repeats`` after one warm-up), on this device.

The script runs against this checkout's renderer and also against older ones that lack
``render_train`` (they render with a graph in one pass), so the same command measures a change;
that is why it builds the field and renderer from their configs directly rather than through
``dreamtext.factory``, which older checkouts do not have.
``--turntable`` times :func:`dreamtext.export.render_turntable` on a trained workspace (60 frames
at 256 px by default), with the workspace's own renderer, as ``dreamtext export`` does.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from dreamtext.inputs import spin_briefly  # noqa: E402

# Before torch loads libgomp, which reads it once: the CLI's short spin count (README, Speed).
spin_briefly(os.environ)
import torch  # noqa: E402

from dreamtext.cameras import sample_poses  # noqa: E402
from dreamtext.field import FieldConfig, NeRFField  # noqa: E402
from dreamtext.renderer import RenderConfig, VolumeRenderer  # noqa: E402


class SavedBytes:
    """Counts the bytes of tensors autograd saves for backward (every save, as the hooks see)."""

    def __init__(self) -> None:
        self.total = 0

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        self.total += tensor.numel() * tensor.element_size()
        return tensor

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda t: t)


def render_and_backward(renderer, field, poses, size: int, shading: str, counter: SavedBytes):
    """One training render with ``loss = mean(rgb)``; returns the largest graph's saved bytes."""
    if hasattr(renderer, "render_train"):
        largest = 0
        with counter.hooks():
            render = renderer.render_train(field, poses, size, size, shading=shading)
            first = counter.total
            loss = render.images().mean()
            if render.deferred:
                # Chunks are built and freed one by one: report the largest.
                replay = render.replay
                counts = []
                original = replay.renderer.composite

                def counted(*args, **kwargs):
                    before = counter.total
                    out = original(*args, **kwargs)
                    counts.append(counter.total - before)
                    return out

                replay.renderer.composite = counted
                try:
                    render.backward(loss, {})
                finally:
                    replay.renderer.composite = original
                largest = max(counts)
            else:
                largest = first
                render.backward(loss, {})
        return largest
    with counter.hooks():  # an older renderer: one graph over every sample
        out = renderer.render(field, poses, size, size, shading=shading, perturb=True)
        saved = counter.total
        out["rgb"].mean().backward()
    return saved


def measure(size: int, shading: str, repeats: int, render_cfg: dict, field_cfg: dict) -> dict:
    torch.manual_seed(0)
    field = NeRFField(FieldConfig(**{"encoding": "torch", **field_cfg}))
    renderer = VolumeRenderer(RenderConfig(**render_cfg)).train()
    renderer.update_occupancy(field, 0)
    generator = torch.Generator().manual_seed(0)
    poses = sample_poses(1, generator=generator)
    times, saved = [], 0
    for i in range(repeats + 1):
        field.zero_grad(set_to_none=True)
        counter = SavedBytes()
        start = time.perf_counter()
        saved = render_and_backward(renderer, field, poses, size, shading, counter)
        if i > 0:
            times.append(time.perf_counter() - start)
    rays = size * size
    return {
        "px": size,
        "shading": shading,
        "saved_kib_per_ray": saved / rays / 1024,
        "saved_mib": saved / 2**20,
        "seconds": statistics.median(times),
    }


def time_turntable(workspace: Path, frames: int, size: int) -> float:
    from dreamtext.checkpoint import load_run
    from dreamtext.export import render_turntable

    field, renderer, _ = load_run(workspace)
    start = time.perf_counter()
    render_turntable(field, frames, size, renderer)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64])
    parser.add_argument("--shadings", nargs="+", default=["albedo", "lambertian"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--render", default="{}", help="JSON of RenderConfig overrides")
    parser.add_argument("--field", default="{}", help="JSON of FieldConfig overrides")
    parser.add_argument("--turntable", type=Path, help="a trained workspace to time")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--video-size", type=int, default=256)
    args = parser.parse_args(argv)
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(
        f"# {platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__},"
        f" dreamtext {commit}"
    )
    if args.turntable:
        seconds = time_turntable(args.turntable, args.frames, args.video_size)
        print(f"turntable {args.frames} frames at {args.video_size} px: {seconds:.1f} s")
        return 0
    import json

    print("| render px | shading | saved for backward (KiB/ray) | (MiB) | render+backward (s) |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        for shading in args.shadings:
            row = measure(
                size, shading, args.repeats, json.loads(args.render), json.loads(args.field)
            )
            print(
                f"| {row['px']} | {row['shading']} | {row['saved_kib_per_ray']:.2f} "
                f"| {row['saved_mib']:.1f} | {row['seconds']:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
