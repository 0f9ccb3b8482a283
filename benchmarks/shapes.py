"""Does SDS recover the 3D shape? The built-in preset against the analytic primitives.

For every caption of the built-in prior (or ``--captions``), train with the ``builtin-shapes``
preset exactly as ``dreamtext text CAPTION --model builtin:shapes`` does (export included, so the
wall time is the user's), then measure the trained field against the primitive it was asked for:

* voxel IoU: the cells of a 64³ grid over the scene that light from outside does not reach
  (transmittance below ½ from all six axis directions, see :func:`field_occupancy`), against
  :func:`dreamtext.shapes.inside`;
  the best over rotations about y (every 5°), since SDS fixes the shape but not its yaw;
* the same IoU for every other primitive: the best rival must score lower;
* colour error: mean ``‖c_nerf − c_ref‖₂`` (RGB in [0, 1]) over pixels fully covered by the
  primitive where the field is opaque (> ½), in albedo renders at held-out azimuths;
* PSNR of those renders against the prior's own renders of the primitive (``shapes.render``),
  turned by the yaw of the best IoU (except the colorful cube, whose faces fix its yaw);
* the y range of the exported mesh (``mesh/mesh.glb``, the file users open) against the
  primitive's (:func:`dreamtext.shapes.y_extent`), and the tail: how far the mesh reaches below the
  primitive's lowest point (density the cameras never see stays in the field and in the mesh);
* wall time of training + export.

"a colorful cube" also runs with the thesis's single "side" label (the preset splits it into left
and right) and with view-dependent prompts off. Appends a markdown table to
``benchmarks/RESULTS.md``::

    python benchmarks/shapes.py                                # every caption (long)
    python benchmarks/shapes.py --captions "a red cube" "a blue torus"
    python benchmarks/shapes.py --captions "a red cube" --render '{"sampler": "dense"}' --no-append
    python benchmarks/shapes.py --field '{"density_head": "separate"}'
    python benchmarks/shapes.py --cameras '{"polar_range": [30, 100]}'
    python benchmarks/shapes.py --settings '{"lambda_density": 10}'
    python benchmarks/shapes.py --guidance '{"views": {"bottom": 90}}'
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from dreamtext.inputs import spin_briefly

# Before torch loads libgomp, which reads it once: the CLI's short spin count (README, Speed).
spin_briefly(os.environ)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import trimesh  # noqa: E402

from dreamtext import shapes  # noqa: E402
from dreamtext.cameras import Poses, orbit_poses  # noqa: E402
from dreamtext.checkpoint import load_run  # noqa: E402
from dreamtext.config import TrainConfig, resolve_config  # noqa: E402
from dreamtext.mesh import grid_centres, render_occupancy, sample_density_grid  # noqa: E402
from dreamtext.trainer import train  # noqa: E402

IOU_RESOLUTION = 64
ROTATION_STEP_DEG = 5.0
HELD_OUT_VIEWS = 8
# Held-out azimuths sit halfway between the dataset's (which are 10° apart from 0°).
HELD_OUT_START_DEG = 5.0
ACCEPT_IOU, ACCEPT_COLOUR, ACCEPT_SECONDS = 0.7, 0.2, 180.0


# How the colorful cube's view prompts are set in each run: the preset's (split side labels), the
# thesis's one "side" label, none.
VIEW_SETTINGS: dict[str, dict] = {
    "split sides": {},
    "one side": {"views": {"split_sides": False}},
    "off": {"view_dependent": False},
}


@dataclass
class Result:
    caption: str
    views: str
    iou: float
    rival: str
    rival_iou: float
    colour_error: float
    psnr: float
    seconds: float
    mesh_y: tuple[float, float]
    shape_y: tuple[float, float]

    @property
    def tail(self) -> float:
        """How far the exported mesh reaches below the primitive (0 when it does not)."""
        return max(0.0, self.shape_y[0] - self.mesh_y[0])

    @property
    def accepted(self) -> bool:
        return (
            self.iou >= ACCEPT_IOU
            and self.iou > self.rival_iou
            and self.colour_error <= ACCEPT_COLOUR
            and self.seconds <= ACCEPT_SECONDS
        )


def rotate_y(points: torch.Tensor, degrees: float) -> torch.Tensor:
    """``R_y(φ) p`` for ``points [N, 3]``: ``(x cos φ + z sin φ, y, −x sin φ + z cos φ)``."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    x, y, z = points.unbind(-1)
    return torch.stack([x * c + z * s, y, -x * s + z * c], dim=-1)


def best_iou(occupied: torch.Tensor, points: torch.Tensor, shape: str) -> tuple[float, float]:
    """``max_φ |A ∩ R_φ S| / |A ∪ R_φ S|`` over yaws φ every 5°: ``occupied [N]`` bool at
    ``points [N, 3]`` against the primitive ``shape`` turned by φ about y. Returns (IoU, φ)."""
    best = (0.0, 0.0)
    for degrees in np.arange(0.0, 360.0, ROTATION_STEP_DEG):
        target = shapes.inside(shape, rotate_y(points, -float(degrees)))
        union = (occupied | target).sum()
        best = max(best, (float((occupied & target).sum() / union.clamp_min(1)), float(degrees)))
    return best


def field_occupancy(field: torch.nn.Module, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(occupied [R³], points [R³, 3])``: the cells that light from outside does not reach.

    A cell is occupied when, from each of the six axis directions, the optical depth from the
    scene's edge to the cell centre exceeds ln 2, i.e. the transmittance ``T = exp(−∫σ ds)``
    is below ½ (:func:`dreamtext.mesh.render_occupancy`, the solid that export meshes). No
    density threshold is involved: SDS only ever sees the object from outside, so the density
    inside it is unconstrained (often a dense shell around a thinner core) and any fixed
    iso-level would measure that instead of the shape.
    """
    grid = sample_density_grid(field, IOU_RESOLUTION, bound)
    occupied = render_occupancy(grid, bound)
    return torch.from_numpy(occupied).reshape(-1), grid_points(IOU_RESOLUTION, bound)


def grid_points(resolution: int, bound: float) -> torch.Tensor:
    """The cell centres of the ``R³`` grid, in the order of a flattened ``[R, R, R]`` array:
    ``[R³, 3]``."""
    axis_points = torch.from_numpy(grid_centres(resolution, bound))
    points = torch.stack(torch.meshgrid(axis_points, axis_points, axis_points, indexing="ij"), -1)
    return points.reshape(-1, 3)


def held_out_poses(cfg: TrainConfig, yaw: float = 0.0) -> Poses:
    """Cameras between the dataset's azimuths, at the middle of the preset's range, turned by
    ``−yaw``: the view of the primitive turned by ``+yaw`` from the unturned cameras."""
    cams = cfg.cameras
    return orbit_poses(
        HELD_OUT_VIEWS,
        polar=sum(cams.polar_range) / 2,
        radius=sum(cams.radius_range) / 2,
        fovy=sum(cams.fovy_range) / 2,
        start=HELD_OUT_START_DEG - yaw,
    )


@torch.no_grad()
def mesh_y_range(workspace: Path) -> tuple[float, float]:
    """The lowest and highest ``y`` of the run's exported ``mesh/mesh.glb`` (+y up, the field's
    own coordinates)."""
    mesh = trimesh.load(workspace / "mesh" / "mesh.glb", force="mesh")
    low, high = mesh.bounds[:, 1]
    return float(low), float(high)


def evaluate(workspace: Path, primitive: shapes.Primitive, seconds: float, views: str) -> Result:
    field, renderer, config = load_run(workspace)
    cfg = resolve_config({}, base=config)
    occupied, points = field_occupancy(field, cfg.field.bound)
    fits = {shape: best_iou(occupied, points, shape) for shape in shapes.SHAPES}
    ious = {shape: iou for shape, (iou, _) in fits.items()}
    rival = max((s for s in shapes.SHAPES if s != primitive.shape), key=ious.__getitem__)
    # SDS fixes a one-colour primitive's shape but not its yaw: compare images at the fitted yaw.
    # The colorful cube's faces fix its yaw, so it is compared as the prompt's views define it.
    yaw = 0.0 if primitive.colour == shapes.COLORFUL else fits[primitive.shape][1]

    poses = held_out_poses(cfg)
    with torch.no_grad():  # a held-out view: no graph (it warned when read as a float)
        out = renderer.render(field, poses, cfg.h, cfg.w, shading="albedo", perturb=False)
    rgb = out["rgb"].clamp(0, 1)
    turned = held_out_poses(cfg, yaw)
    reference = shapes.render(primitive, turned, cfg.h, cfg.w, shapes.DATASET_SUPERSAMPLE)
    psnr = -10 * math.log10(float(((rgb - reference) ** 2).mean()))
    covered = shapes.coverage(primitive.shape, turned, cfg.h, cfg.w) == 1
    mask = covered & (out["opacity"] > 0.5)
    colour_error = float((rgb - reference).norm(dim=-1)[mask].mean()) if mask.any() else math.inf
    return Result(
        primitive.caption,
        views,
        ious[primitive.shape],
        rival,
        ious[rival],
        colour_error,
        psnr,
        seconds,
        mesh_y_range(workspace),
        shapes.y_extent(primitive.shape),
    )


def guidance_settings(given: dict, row: dict) -> dict:
    """The guidance section of a run: ``given`` (``--guidance``), the row's view settings over
    it (a ``views`` dict merged key by key), the built-in prior as the model."""
    merged = {**given, **row, "model": "builtin:shapes"}
    if isinstance(given.get("views"), dict) and "views" in row:
        merged["views"] = {**given["views"], **row["views"]}
    return merged


def run(
    caption: str,
    views: str,
    root: Path,
    seed: int,
    render: dict | None = None,
    field: dict | None = None,
    cameras: dict | None = None,
    settings: dict | None = None,
    guidance: dict | None = None,
) -> Result:
    """Train and export with the built-in preset, as the CLI would, then evaluate. ``views``
    names one of ``VIEW_SETTINGS``; ``render``, ``field`` and ``cameras`` override the preset's
    settings (the prior renders its images from the cameras it is given), ``settings`` its
    top-level ones (``{"lambda_density": 10}``), ``guidance`` its guidance ones
    (``{"views": {"bottom": 90}}``; the row's ``VIEW_SETTINGS`` are merged over them, the view
    thresholds key by key)."""
    primitive = shapes.find_primitive(caption)
    suffix = "" if views == "split sides" else "_" + views.replace(" ", "_")
    overrides = {
        **(settings or {}),
        "prompt": primitive.caption,
        "seed": seed,
        "workspace": str(root / (primitive.caption.replace(" ", "_") + suffix)),
        "guidance": guidance_settings(guidance or {}, VIEW_SETTINGS[views]),
        "render": render or {},
        "field": field or {},
        "cameras": cameras or {},
    }
    cfg = resolve_config(overrides)
    start = time.perf_counter()
    workspace = train(cfg, overwrite=True)  # a rerun of the benchmark trains afresh
    seconds = time.perf_counter() - start
    return evaluate(workspace, primitive, seconds, views)


def table(results: list[Result]) -> str:
    lines = [
        "| caption | view prompts | IoU | best rival (IoU) | colour error | PSNR (dB) | time (s) "
        "| mesh y (object y) | tail below | accepted |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.caption} | {r.views} | {r.iou:.3f} "
            f"| {r.rival} ({r.rival_iou:.3f}) | {r.colour_error:.3f} | {r.psnr:.2f} "
            f"| {r.seconds:.0f} | {r.mesh_y[0]:.3f} … {r.mesh_y[1]:.3f} "
            f"({r.shape_y[0]:.2f} … {r.shape_y[1]:.2f}) | {r.tail:.3f} "
            f"| {'yes' if r.accepted else 'no'} |"
        )
    return "\n".join(lines)


def section(results: list[Result], command: str) -> str:
    """The markdown section this benchmark appends to ``RESULTS.md``."""
    return (
        f"\n## Built-in prior: shape recovery — CPU ({platform.machine()}, "
        f"{torch.get_num_threads()} threads) — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f"\n\n`{command}` (preset `configs/builtin-shapes.yaml`). Acceptance: IoU ≥ {ACCEPT_IOU} "
        f"and above every rival, colour error ≤ {ACCEPT_COLOUR}, ≤ {ACCEPT_SECONDS:.0f} s per run "
        "(training + export). Definitions in `benchmarks/shapes.py`.\n\n" + table(results) + "\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", nargs="+", default=shapes.captions())
    parser.add_argument("--root", type=Path, default=Path("workspace/benchmark"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--render", type=json.loads, default={}, help="JSON of render settings over the preset's"
    )
    parser.add_argument(
        "--field", type=json.loads, default={}, help="JSON of field settings over the preset's"
    )
    parser.add_argument(
        "--cameras", type=json.loads, default={}, help="JSON of camera settings over the preset's"
    )
    parser.add_argument(
        "--settings",
        type=json.loads,
        default={},
        help="JSON of top-level settings over the preset's",
    )
    parser.add_argument(
        "--guidance",
        type=json.loads,
        default={},
        help="JSON of guidance settings over the preset's, such as the view thresholds "
        '(\'{"views": {"bottom": 90}}\'); the model stays builtin:shapes',
    )
    parser.add_argument("--no-append", action="store_true", help="print only, leave RESULTS.md")
    args = parser.parse_args(argv)
    command = "python benchmarks/shapes.py" + (
        ""
        if args.captions == shapes.captions()
        else " --captions " + " ".join(f'"{c}"' for c in args.captions)
    )
    results = []
    for caption in args.captions:
        primitive = shapes.find_primitive(caption)
        view_settings = (
            list(VIEW_SETTINGS) if primitive.colour == shapes.COLORFUL else ["split sides"]
        )
        for views in view_settings:
            results.append(
                run(
                    caption,
                    views,
                    args.root,
                    args.seed,
                    args.render,
                    args.field,
                    args.cameras,
                    args.settings,
                    args.guidance,
                )
            )
            print(table(results[-1:]).splitlines()[-1], flush=True)
    if args.render:
        command += f" --render '{json.dumps(args.render)}'"
    if args.field:
        command += f" --field '{json.dumps(args.field)}'"
    if args.cameras:
        command += f" --cameras '{json.dumps(args.cameras)}'"
    if args.settings:
        command += f" --settings '{json.dumps(args.settings)}'"
    if args.guidance:
        command += f" --guidance '{json.dumps(args.guidance)}'"
    if not args.no_append:
        with args.out.open("a", encoding="utf-8") as f:
            f.write(section(results, command))
    print(table(results))


if __name__ == "__main__":
    main()
