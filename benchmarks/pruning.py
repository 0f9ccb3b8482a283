"""What do the marcher's thresholds cost? ``alpha_threshold`` and ``transmittance_threshold``
against no pruning at all.

The occupancy marcher keeps a sample only if ``α_i > alpha_threshold`` and
``T_i > transmittance_threshold``, and stops a ray once its transmittance falls to the threshold
(``RenderConfig``: alpha ``1e-4``, transmittance ``1e-3`` by default). For each field and each
pair of thresholds, one training render of ``--views`` random training cameras (the trainer's
``CameraRange``) at ``--size`` px with lambertian shading, then backward of the loss
``Σ rgb · R`` (``R`` fixed, random), measures:

* kept samples per ray and the render + backward time;
* the image's largest and mean absolute difference from the unpruned render (thresholds 0:
  every step of an occupied cell to the far side), in 8-bit levels;
* the relative error of the field's parameter gradient ``‖g − g₀‖ / ‖g₀‖`` against the
  unpruned render's.

The occupancy grid is the same for every threshold (copied from one update), and the samples
are not jittered, so only the thresholds differ. Fields: the freshly initialised default field
(a fog around the density blob: the most samples a training step sees), and the default field
fitted to a sphere, a cube and a torus (``benchmarks/normal_quality.py``'s fit: sharp surfaces,
as a trained run has). Appends a markdown section to ``benchmarks/RESULTS.md``::

    python benchmarks/pruning.py --cache /tmp/nqcache
    python benchmarks/pruning.py --shapes --size 32 --no-append     # the fresh field only
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from dreamtext.inputs import spin_briefly

# Before torch loads libgomp, which reads it once: the CLI's short spin count (README, Speed).
spin_briefly(os.environ)
import torch  # noqa: E402
from normal_quality import command_line, fit, fit_settings, publish  # noqa: E402

from dreamtext.cameras import sample_poses  # noqa: E402
from dreamtext.field import FieldConfig, NeRFField  # noqa: E402
from dreamtext.renderer import RenderConfig, VolumeRenderer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# (alpha_threshold, transmittance_threshold); the first, no pruning, is the reference.
THRESHOLDS = (
    (0.0, 0.0),
    (1e-6, 1e-6),
    (1e-5, 1e-5),
    (1e-4, 1e-4),
    (1e-4, 1e-3),
    (1e-3, 1e-4),
    (1e-3, 1e-3),
    (1e-2, 1e-2),
)
NO_REGULARISERS = {"entropy": 0.0, "opacity": 0.0, "orientation": 0.0}


@dataclass
class Row:
    field: str
    alpha: float
    transmittance: float
    samples_per_ray: float
    seconds: float
    max_levels: float
    mean_levels: float
    gradient_error: float


def render_and_gradient(
    field: NeRFField, renderer: VolumeRenderer, poses, size: int, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """One lambertian training render and the gradient of ``Σ rgb · weights``: the image, the
    flattened parameter gradient, the kept samples and the seconds both took."""
    field.zero_grad(set_to_none=True)
    start = time.perf_counter()
    render = renderer.render_train(field, poses, size, size, "lambertian", perturb=False)
    images = render.images()
    render.backward((images * weights).sum(), NO_REGULARISERS)
    seconds = time.perf_counter() - start
    grads = [p.grad.flatten() for p in field.parameters() if p.grad is not None]
    return images.detach(), torch.cat(grads), render.num_samples, seconds


def sweep(name: str, field: NeRFField, grid_updates: int, args: argparse.Namespace) -> list[Row]:
    """The rows of one field, the unpruned render first."""
    reference = VolumeRenderer(RenderConfig())
    for _ in range(grid_updates):
        reference.grid.update(field, reference.cfg.chunk_points)
    poses = sample_poses(args.views, generator=torch.Generator().manual_seed(args.seed))
    weights = torch.rand(
        args.views, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)
    )
    rays = args.views * args.size * args.size
    rows, base = [], None
    for alpha, transmittance in THRESHOLDS:
        cfg = RenderConfig(alpha_threshold=alpha, transmittance_threshold=transmittance)
        renderer = VolumeRenderer(cfg).train()
        renderer.grid.load_state_dict(reference.grid.state_dict())
        image, grad, samples, seconds = render_and_gradient(
            field, renderer, poses, args.size, weights
        )
        if base is None:
            base = (image, grad)
        difference = (image - base[0]).abs() * 255.0
        rows.append(
            Row(
                name,
                alpha,
                transmittance,
                samples / rays,
                seconds,
                difference.max().item(),
                difference.mean().item(),
                ((grad - base[1]).norm() / base[1].norm().clamp_min(1e-30)).item(),
            )
        )
        r = rows[-1]
        print(
            f"{name:8s} α {alpha:<6g} T {transmittance:<6g} {r.samples_per_ray:6.1f} samples/ray "
            f"{r.seconds:6.2f} s  image max {r.max_levels:6.3f} mean {r.mean_levels:7.4f} "
            f"levels  gradient {r.gradient_error:.2e}"
        )
    return rows


def section(rows: list[Row], args: argparse.Namespace, command: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        f"## Pruning thresholds (issue 9) — CPU ({platform.machine()}, "
        f"{torch.get_num_threads()} threads) — {stamp}",
        "",
        f"`{command}` (torch {torch.__version__}): {args.views} training cameras at {args.size} "
        "px, lambertian, one render + backward per row; α and T are `alpha_threshold` and "
        "`transmittance_threshold`, 0 and 0 is no pruning (the reference). Image differences in "
        "8-bit levels; gradient error `‖g − g₀‖ / ‖g₀‖`.",
        "",
        "| field | α | T | samples / ray | render + backward s | image max | image mean "
        "| gradient error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.field} | {r.alpha:g} | {r.transmittance:g} | {r.samples_per_ray:.1f} | "
            f"{r.seconds:.2f} | {r.max_levels:.3f} | {r.mean_levels:.4f} | {r.gradient_error:.2e} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--shapes",
        nargs="*",
        default=["sphere", "cube", "torus"],
        help="fitted fields to sweep besides the fresh one [sphere cube torus]",
    )
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--size", type=int, default=64, help="render px [64]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--cache", type=Path, default=None, help="normal_quality.py's cache of fitted fields"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    rows = sweep("fresh", NeRFField(FieldConfig()), 1, args)
    # normal_quality.fit's settings: its defaults, so its cache is shared.
    fit_args = fit_settings(seed=args.seed, cache=args.cache)
    for shape in args.shapes:
        field, _ = fit(shape, fit_args)
        rows += sweep(shape, field, 4, args)
    publish(section(rows, args, command_line("pruning.py", argv)), args)


if __name__ == "__main__":
    main()
