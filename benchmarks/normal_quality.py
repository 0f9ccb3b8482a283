"""How true are the field's normals? Forward, central differences and the analytic gradient on a
default field fitted to a known shape.

Shading (lambertian, textureless) lights each sample by its normal ``n = −∇σ/|∇σ|``, so a noisy
normal is noise in every shaded image SDS sees. For each primitive (sphere, cube, torus of
:mod:`dreamtext.shapes`):

1. fit the default field's density (``FieldConfig()``: 16 levels, 2^19 table, finest resolution
   2048) to ``σ*(x) = σ_max · sigmoid(−sdf(x) / τ)`` by regression, half the points uniform in the
   scene cube and half within ``--band`` (0.05) of the surface, Adam at the trainer's learning
   rates (the hash table at ``lr × encoding_lr_scale``);
2. render the fitted field from ``--views`` cameras around it with the default renderer
   (occupancy marcher, grid refreshed from the fitted field), once per normal method;
   (``--precisions fp16 bf16``: also with the field's MLP under autocast, as ``--fp16`` /
   ``--bf16`` run it on CUDA: differences of σ are then differences of rounded values);
3. compare the rendered normal image ``Σ w_i n_i`` (normalised) with the true outward normal
   ``∇sdf`` where the camera ray first hits the primitive (``shapes.cast``), on pixels the
   primitive covers and the field renders opaque (> ½): mean, median and 90th percentile of
   the angle.

A proxy, not an SDS run: a field fitted by regression has the hash grid's collisions and the
finest levels' detail that a trained one has, but not the geometry SDS would give it. Appends a
markdown section to ``benchmarks/RESULTS.md``::

    python benchmarks/normal_quality.py
    python benchmarks/normal_quality.py --shapes sphere --steps 300 --no-append
    python benchmarks/normal_quality.py --cache /tmp/nq --precisions fp32 fp16 bf16
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import sys
import time
from pathlib import Path

from dreamtext.inputs import spin_briefly

# Before torch loads libgomp, which reads it once: the CLI's short spin count (README, Speed).
spin_briefly(os.environ)
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from dreamtext import shapes  # noqa: E402
from dreamtext.cameras import orbit_poses, position_from_angles  # noqa: E402
from dreamtext.config import TrainConfig  # noqa: E402
from dreamtext.factory import build_optimizer  # noqa: E402
from dreamtext.field import FieldConfig, NeRFField  # noqa: E402
from dreamtext.renderer import RenderConfig, VolumeRenderer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("forward_difference", "central_difference", "analytic")
# The field's MLP precision while its normals are taken (``NeRFField.mlp_dtype``): what
# ``--fp16`` / ``--bf16`` set on CUDA. On the CPU, autocast rounds the same matrix products'
# outputs to the same format (their accumulation order differs).
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def sdf(shape: str, points: torch.Tensor) -> torch.Tensor:
    """Signed distance to the primitive ``shape``: ``[N, 3] → [N]`` (negative inside)."""
    if shape == "sphere":
        return points.norm(dim=-1) - shapes.SPHERE_RADIUS
    if shape == "cube":
        q = points.abs() - shapes.CUBE_HALF
        outside = q.clamp_min(0.0).norm(dim=-1)
        return outside + q.amax(dim=-1).clamp_max(0.0)
    if shape == "torus":
        return shapes.torus_sdf(points)
    raise ValueError(f"no SDF for {shape!r}; use sphere, cube or torus")


def true_normals(shape: str, points: torch.Tensor) -> torch.Tensor:
    """Unit outward normals ``∇sdf / |∇sdf|`` at ``points [N, 3]``."""
    with torch.enable_grad():
        x = points.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(sdf(shape, x).sum(), x)
    return torch.nn.functional.normalize(grad, dim=-1)


def target_density(shape: str, points: torch.Tensor, sigma_max: float, tau: float) -> torch.Tensor:
    """``σ*(x) = σ_max · sigmoid(−sdf(x) / τ)``."""
    return sigma_max * torch.sigmoid(-sdf(shape, points) / tau)


def training_points(shape: str, n: int, band: float, generator: torch.Generator) -> torch.Tensor:
    """``n`` points: half uniform in ``[−1, 1]^3``, half uniform within ``band`` of the surface."""
    uniform = torch.rand(n // 2, 3, generator=generator) * 2 - 1
    near: list[torch.Tensor] = []
    have = 0
    while have < n - n // 2:
        pool = torch.rand(1 << 18, 3, generator=generator) * 2 - 1
        keep = pool[sdf(shape, pool).abs() < band]
        near.append(keep)
        have += keep.shape[0]
    return torch.cat([uniform, torch.cat(near)[: n - n // 2]])


# The fit's settings unless asked otherwise (this script's defaults): pruning.py and sds_step.py
# --fitted fit with them too, so the three share one cache of fitted fields.
FIT_DEFAULTS = {"steps": 800, "points": 1 << 14, "sigma_max": 50.0, "tau": 0.005, "band": 0.05}


def fit_settings(**given) -> argparse.Namespace:
    """What :func:`fit` reads: :data:`FIT_DEFAULTS`, seed 0, no cache, the shared density head
    and the CPU, with ``given`` over them."""
    base = {"seed": 0, "cache": None, "density_head": "shared", "device": None}
    return argparse.Namespace(**{**FIT_DEFAULTS, **base, **given})


def fit(shape: str, args: argparse.Namespace) -> tuple[NeRFField, float]:
    """The default field (with ``args.density_head``) fitted to ``shape``'s density; returns it
    and the fit's final RMSE relative to ``σ_max``. It trains on ``args.device`` when given
    (``sds_step.py --fitted`` on a GPU), else on the CPU; the cache holds CPU tensors either
    way, and a cached field comes back on the CPU."""
    settings = (args.steps, args.points, args.sigma_max, args.tau, args.band, args.seed)
    key = "-".join([shape, *(f"{value:g}" for value in settings)])
    if args.density_head != "shared":
        key += f"-{args.density_head}"
    cached = args.cache / f"{key}.pt" if args.cache is not None else None
    if cached is not None and cached.exists():
        state = torch.load(cached, map_location="cpu")
        field = NeRFField(FieldConfig(density_head=args.density_head))
        field.load_state_dict(state["field"])
        return field, state["rmse"]
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    device = torch.device(getattr(args, "device", None) or "cpu")
    field = NeRFField(FieldConfig(density_head=args.density_head), device=device)
    train_cfg = TrainConfig()
    optimizer = build_optimizer(field, train_cfg.lr)
    loss = torch.zeros(())
    for _ in tqdm(range(args.steps), desc=f"fitting the {shape}", unit="step", leave=False):
        x = training_points(shape, args.points, args.band, generator)
        target = target_density(shape, x, args.sigma_max, args.tau)
        x, target = x.to(device), target.to(device)
        loss = ((field.density(x) - target) / args.sigma_max).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    rmse = math.sqrt(loss.item())
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        state = {key: value.cpu() for key, value in field.state_dict().items()}
        torch.save({"field": state, "rmse": rmse}, cached)
    return field, rmse


def variants(eps_values: list[float]) -> list[tuple[str, float | None]]:
    """The (method, ε) pairs to compare: each difference at every ε, the analytic gradient once."""
    pairs: list[tuple[str, float | None]] = []
    for method in METHODS:
        if method == "analytic":
            pairs.append((method, None))
        else:
            pairs.extend((method, eps) for eps in eps_values)
    return pairs


@torch.no_grad()
def normal_errors(field: NeRFField, shape: str, args: argparse.Namespace) -> dict[str, dict]:
    """Per normal method (and ε, and MLP precision): angle statistics (degrees) of the rendered
    normals against the true ones, the textureless shading's mean absolute error, and the
    render's time."""
    renderer = VolumeRenderer(RenderConfig()).eval()
    for _ in range(4):  # the grid keeps max(decay · g, σ): a few updates settle it
        renderer.grid.update(field, renderer.cfg.chunk_points)
    poses = orbit_poses(args.views, polar=args.polar, radius=2.0, fovy=40.0, start=20.0)
    # A light 45° round from each camera and 30° higher, so shading varies across the object.
    lights = position_from_angles(poses.polar - 30.0, poses.azimuth + 45.0, poses.radius * 1.5)
    size = args.size
    rays = renderer.camera_rays(poses, size, size, lights)
    t = shapes.cast(shape, rays.origins, rays.directions)
    hit = torch.isfinite(t)
    hit_points = rays.origins[hit] + t[hit, None] * rays.directions[hit]
    truth = true_normals(shape, hit_points)
    ambient = TrainConfig().ambient_ratio
    true_shade = ambient + (1 - ambient) * (truth * rays.light_dirs[hit]).sum(-1).clamp_min(0.0)
    rows = {}
    default_eps = field.cfg.normal_eps
    precisions = getattr(args, "precisions", ["fp32"])
    for (method, eps), precision in itertools.product(variants(args.eps), precisions):
        field.cfg.normals = method
        field.cfg.normal_eps = default_eps if eps is None else eps
        if precision != "fp32" or hasattr(field, "mlp_dtype"):
            field.mlp_dtype = PRECISIONS[precision]
        start = time.perf_counter()
        out = renderer.render(
            field, poses, size, size, "textureless", lights, ambient, torch.zeros(3)
        )
        seconds = time.perf_counter() - start
        opacity = out["opacity"].reshape(-1)[hit]
        opaque = opacity > 0.5
        normals = torch.nn.functional.normalize(out["normals"].reshape(-1, 3)[hit], dim=-1)
        cosine = (normals * truth).sum(dim=-1).clamp(-1.0, 1.0)[opaque]
        angle = torch.rad2deg(torch.arccos(cosine.double()))
        # Black background: the pixel is Σ w_i s_i, so its shading is that over the opacity.
        shade = out["rgb"].reshape(-1, 3)[hit][:, 0] / opacity.clamp_min(1e-6)
        label = method if eps is None else f"{method} ε={eps:g}"
        if len(precisions) > 1 or precision != "fp32":
            label += f", MLP {precision}"
        rows[label] = {
            "mean": angle.mean().item(),
            "median": angle.median().item(),
            "p90": torch.quantile(angle, 0.9).item(),
            "shade": (shade - true_shade)[opaque].abs().mean().item(),
            "pixels": int(opaque.sum()),
            "covered": int(hit.sum()),
            "seconds": seconds,
        }
    field.cfg.normals, field.cfg.normal_eps = FieldConfig().normals, default_eps
    if hasattr(field, "mlp_dtype"):
        field.mlp_dtype = None
    return rows


def section(results: dict[str, tuple[float, dict]], args: argparse.Namespace, command: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    head = (
        f"## Normal quality of the default field (issue 9) — CPU ({platform.machine()}, "
        f"{torch.get_num_threads()} threads) — {stamp}\n\n"
        f"`{command}` (torch {torch.__version__}): default field (density head: "
        f"{args.density_head}) fitted for {args.steps} steps of "
        f"{args.points} points to σ* = {args.sigma_max:g} · sigmoid(−sdf / {args.tau:g}); "
        f"{args.views} views at {args.size} px, polar {args.polar:g}°. Angle between the rendered "
        "normal and the primitive's, on covered pixels the field renders opaque.\n\n"
        "| shape | fit RMSE / σ_max | normals | mean ° | median ° | 90th pct ° | shading error | "
        "pixels | render s |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for shape, (rmse, rows) in results.items():
        for method, r in rows.items():
            lines.append(
                f"| {shape} | {rmse:.3f} | {method} | {r['mean']:.1f} | {r['median']:.1f} | "
                f"{r['p90']:.1f} | {r['shade']:.4f} | {r['pixels']}/{r['covered']} | "
                f"{r['seconds']:.1f} |"
            )
    return head + "\n".join(lines) + "\n"


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that ran ``benchmarks/<script>`` (``argv``: its arguments, ``None`` for the
    process's own), for a section's header."""
    words = sys.argv[1:] if argv is None else argv
    return " ".join(["python", f"benchmarks/{script}", *words])


def publish(text: str, args: argparse.Namespace) -> None:
    """Print a markdown section and append it to ``args.out`` unless ``args.no_append``."""
    print(text)
    if not args.no_append:
        with args.out.open("a", encoding="utf-8") as handle:
            handle.write("\n" + text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["sphere", "cube", "torus"])
    parser.add_argument(
        "--steps", type=int, default=FIT_DEFAULTS["steps"], help="fitting steps [800]"
    )
    parser.add_argument(
        "--points", type=int, default=FIT_DEFAULTS["points"], help="points per step [16384]"
    )
    parser.add_argument(
        "--sigma-max", type=float, default=FIT_DEFAULTS["sigma_max"], help="density inside [50]"
    )
    parser.add_argument(
        "--tau", type=float, default=FIT_DEFAULTS["tau"], help="surface width (world) [0.005]"
    )
    parser.add_argument(
        "--band", type=float, default=FIT_DEFAULTS["band"], help="near-surface band [0.05]"
    )
    parser.add_argument(
        "--eps",
        type=float,
        nargs="+",
        default=[FieldConfig().normal_eps],
        help="finite-difference steps to compare [the default normal_eps]",
    )
    parser.add_argument(
        "--cache", type=Path, default=None, help="keep fitted fields here and reuse them"
    )
    parser.add_argument(
        "--density-head",
        choices=["shared", "separate"],
        default=FieldConfig().density_head,
        help="field.density_head of the fitted field [shared]",
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=list(PRECISIONS),
        default=["fp32"],
        help="MLP precisions to take the normals in (--fp16 / --bf16 on CUDA) [fp32]",
    )
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--size", type=int, default=128, help="render px [128]")
    parser.add_argument("--polar", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args(argv)
    results = {}
    for shape in args.shapes:
        start = time.perf_counter()
        field, rmse = fit(shape, args)
        print(f"{shape}: fitted in {time.perf_counter() - start:.0f} s, RMSE/σ_max {rmse:.3f}")
        rows = normal_errors(field, shape, args)
        for method, r in rows.items():
            print(
                f"  {method:27s} mean {r['mean']:5.1f}°  median {r['median']:5.1f}°  "
                f"p90 {r['p90']:5.1f}°  shading {r['shade']:.4f}  ({r['pixels']} px, "
                f"{r['seconds']:.1f} s)"
            )
        results[shape] = (rmse, rows)
    publish(section(results, args, command_line("normal_quality.py", argv)), args)


if __name__ == "__main__":
    main()
