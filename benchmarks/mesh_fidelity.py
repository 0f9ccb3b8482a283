"""Is the exported mesh the object the renders show? Built-in shapes, field against mesh.

For one caption per primitive (or ``--captions``), train with the ``builtin-shapes`` preset exactly
as ``dreamtext text CAPTION --model builtin:shapes`` does (skipped when the workspace already has a
checkpoint), then export the mesh (the preset's export options, no turntable) with this tree and,
with ``--before DIR``, with another checkout of dreamtext (e.g. ``git archive main``), each into
its own copy of the run, and measure:

* field IoU: ``benchmarks/shapes.py``'s voxel IoU of the field's occupancy (cells light from
  outside does not reach, 64³) against the true primitive, best over yaws every 5°;
* mesh IoU: the same for the exported ``mesh.glb``: its vertices welded by position, its solid
  the 64³ cell centres it encloses with enclosed cavities filled (``voxelize_solid``);
* components, watertight (every edge in two faces) and manifold (also one fan per vertex,
  consistent winding, no zero-area face) of the welded GLB, and the Khronos glTF validator's
  error count when ``tests/gltf`` has it (``scripts/install-gltf-validator.sh``);
* export time: ``export_workspace`` alone, in a fresh process (checkpoint load included).

``--sweep`` also meshes each field's density grid with other transmittance levels and with
Gaussian smoothing of the optical depth, to show how the shipped setting was chosen. Appends a
markdown section to ``benchmarks/RESULTS.md``::

    python benchmarks/mesh_fidelity.py --before /tmp/dreamtext-main --sweep
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dreamtext.inputs import spin_briefly

# Before torch loads libgomp, which reads it once: the CLI's short spin count (README, Speed),
# for this process and the export's own (EXPORT_SNIPPET), which inherits it.
spin_briefly(os.environ)
import numpy as np  # noqa: E402
import torch  # noqa: E402
import trimesh  # noqa: E402
from scipy import ndimage  # noqa: E402
from shapes import IOU_RESOLUTION, best_iou, field_occupancy, grid_points  # noqa: E402

from dreamtext import shapes  # noqa: E402
from dreamtext.checkpoint import last_checkpoint, load_field  # noqa: E402
from dreamtext.config import resolve_config  # noqa: E402
from dreamtext.export import ExportOptions  # noqa: E402
from dreamtext.mesh import (  # noqa: E402
    decimate,
    face_components,
    is_closed_manifold,
    outside_optical_depth,
    sample_density_grid,
    solid_surface,
    voxelize_solid,
)
from dreamtext.trainer import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VALIDATOR = ROOT / "tests" / "gltf" / "validate.js"
CAPTIONS = [
    "a blue cube",
    "a yellow sphere",
    "a purple cylinder",
    "a green cone",
    "an orange torus",
]
# (transmittance level, Gaussian smoothing of the optical depth in cells); the first is shipped.
SWEEP = [(0.5, 0.0), (0.3, 0.0), (0.7, 0.0), (0.5, 0.5), (0.5, 1.0)]

# Runs in a fresh process with PYTHONPATH set to the tree being measured; prints the seconds.
EXPORT_SNIPPET = """
import sys, time
from pathlib import Path
from dreamtext.export import ExportOptions, export_workspace
resolution, faces, texture = (int(a) for a in sys.argv[2:5])
options = ExportOptions(resolution=resolution, decimate=faces, texture_size=texture, video=False)
start = time.perf_counter()
export_workspace(Path(sys.argv[1]), options)
print(time.perf_counter() - start)
"""


@dataclass
class MeshMeasure:
    iou: float
    components: int
    watertight: bool
    manifold: bool
    validator_errors: int | None
    seconds: float


@dataclass
class Row:
    caption: str
    field_iou: float
    after: MeshMeasure
    before: MeshMeasure | None
    sweep: dict[tuple[float, float], float]


def trained_run(caption: str, root: Path, seed: int) -> Path:
    """The run's workspace, trained with the built-in preset unless it already is."""
    workspace = root / caption.replace(" ", "_")
    if not last_checkpoint(workspace).is_file():
        overrides = {
            "prompt": caption,
            "seed": seed,
            "workspace": str(workspace),
            "export": False,
            "guidance": {"model": "builtin:shapes"},
        }
        train(resolve_config(overrides))
    return workspace


def export_copy(workspace: Path, tree: Path, name: str, opts: ExportOptions) -> tuple[Path, float]:
    """Export the run with the dreamtext in ``tree`` into ``workspace/name`` (a copy of the run's
    config and last checkpoint), with ``opts``'s grid, face count and texture size. Returns the
    copy and the seconds ``export_workspace`` took."""
    copy = workspace / name
    shutil.rmtree(copy, ignore_errors=True)
    (copy / "checkpoints").mkdir(parents=True)
    shutil.copy2(workspace / "config.json", copy / "config.json")
    shutil.copy2(last_checkpoint(workspace), last_checkpoint(copy))
    env = {**os.environ, "PYTHONPATH": str(tree), "TQDM_DISABLE": "1"}
    args = [str(copy), str(opts.resolution), str(opts.decimate), str(opts.texture_size)]
    run = subprocess.run(
        [sys.executable, "-c", EXPORT_SNIPPET, *args],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    return copy, float(run.stdout.strip().splitlines()[-1])


def welded_glb(path: Path) -> trimesh.Trimesh:
    """The GLB's triangles with vertices at the same position merged (UV seams closed)."""
    mesh = trimesh.load(path, force="mesh", process=False)
    vertices, index = np.unique(np.asarray(mesh.vertices), axis=0, return_inverse=True)
    return trimesh.Trimesh(vertices, index.ravel()[mesh.faces], process=False)


def validator_errors(path: Path) -> int | None:
    if shutil.which("node") is None or not (VALIDATOR.parent / "node_modules").is_dir():
        return None
    run = subprocess.run(["node", str(VALIDATOR), str(path)], capture_output=True, text=True)
    return int(re.search(r"(\d+) errors", run.stdout).group(1))


def solid_iou(solid: np.ndarray, shape: str, bound: float) -> float:
    occupied = torch.from_numpy(np.ascontiguousarray(solid)).reshape(-1)
    return best_iou(occupied, grid_points(solid.shape[0], bound), shape)[0]


def measure_mesh(copy: Path, shape: str, bound: float, seconds: float) -> MeshMeasure:
    glb = copy / "mesh" / "mesh.glb"
    mesh = welded_glb(glb)
    edges = np.sort(np.asarray(mesh.edges), axis=1)
    per_edge = np.unique(edges, axis=0, return_counts=True)[1]
    return MeshMeasure(
        iou=solid_iou(voxelize_solid(mesh, IOU_RESOLUTION, bound), shape, bound),
        components=int(face_components(mesh).max() + 1),
        watertight=bool((per_edge == 2).all()),
        manifold=is_closed_manifold(mesh),
        validator_errors=validator_errors(glb),
        seconds=seconds,
    )


def sweep(field: torch.nn.Module, shape: str, bound: float, resolution: int, faces: int) -> dict:
    """Mesh IoU for each ``SWEEP`` setting: the solid is where the (smoothed) optical depth
    exceeds ``ln(1 / T)``, meshed and decimated as export does."""
    depth = outside_optical_depth(sample_density_grid(field, resolution, bound), bound)
    ious = {}
    for transmittance, sigma in SWEEP:
        level = math.log(1.0 / transmittance)
        values = np.minimum(depth, 2.0 * level)
        if sigma:
            values = ndimage.gaussian_filter(values, sigma)
        mesh = decimate(solid_surface(values, values > level, level, bound)[0], faces)
        ious[(transmittance, sigma)] = solid_iou(
            voxelize_solid(mesh, IOU_RESOLUTION, bound), shape, bound
        )
    return ious


def evaluate(caption: str, args: argparse.Namespace) -> Row:
    primitive = shapes.find_primitive(caption)
    workspace = trained_run(caption, args.root, args.seed)
    field, config = load_field(workspace)
    cfg = resolve_config({}, base=config)
    bound = cfg.field.bound
    occupied, points = field_occupancy(field, bound)
    field_iou = best_iou(occupied, points, primitive.shape)[0]
    opts = cfg.export_options
    copy, seconds = export_copy(workspace, ROOT, "after", opts)
    after = measure_mesh(copy, primitive.shape, bound, seconds)
    before = None
    if args.before:
        copy, seconds = export_copy(workspace, args.before, "before", opts)
        before = measure_mesh(copy, primitive.shape, bound, seconds)
    ious = (
        sweep(field, primitive.shape, bound, opts.resolution, opts.decimate) if args.sweep else {}
    )
    return Row(caption, field_iou, after, before, ious)


def _flags(m: MeshMeasure) -> str:
    errors = "–" if m.validator_errors is None else str(m.validator_errors)
    return (
        f"{m.components} | {'yes' if m.watertight else 'no'} | {'yes' if m.manifold else 'no'} "
        f"| {errors}"
    )


def table(rows: list[Row]) -> str:
    lines = [
        "| caption | field IoU | mesh IoU before | mesh IoU after | after − field "
        "| components before | watertight before | manifold before | glTF errors before "
        "| components after | watertight after | manifold after | glTF errors after "
        "| export s before | export s after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        b = r.before
        lines.append(
            f"| {r.caption} | {r.field_iou:.3f} | {f'{b.iou:.3f}' if b else '–'} "
            f"| {r.after.iou:.3f} | {r.after.iou - r.field_iou:+.3f} "
            f"| {_flags(b) if b else '– | – | – | –'} | {_flags(r.after)} "
            f"| {f'{b.seconds:.1f}' if b else '–'} | {r.after.seconds:.1f} |"
        )
    return "\n".join(lines)


def sweep_table(rows: list[Row]) -> str:
    settings = [f"T = {t:g}, σ = {s:g}" for t, s in SWEEP]
    lines = [
        "| caption | field IoU | " + " | ".join(settings) + " |",
        "|---|---|" + "---|" * len(SWEEP),
    ]
    for r in rows:
        cells = " | ".join(f"{r.sweep[k] - r.field_iou:+.3f}" for k in SWEEP)
        lines.append(f"| {r.caption} | {r.field_iou:.3f} | {cells} |")
    return "\n".join(lines)


def section(rows: list[Row], command: str) -> str:
    text = (
        f"\n## Exported mesh against the field — CPU ({platform.machine()}, "
        f"{torch.get_num_threads()} threads) — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f"\n\n`{command}` (preset `configs/builtin-shapes.yaml`: 96³ grid, 8,000 faces, 256 px "
        "texture; no turntable). IoU: 64³ voxels against the true primitive, best over yaws, "
        "definitions in `benchmarks/mesh_fidelity.py`.\n\n" + table(rows) + "\n"
    )
    if rows and rows[0].sweep:
        text += (
            "\nMesh IoU minus field IoU for other settings (T: the transmittance level of the "
            "surface; σ: Gaussian smoothing of the optical depth, in cells); the first column "
            "is the one shipped.\n\n" + sweep_table(rows) + "\n"
        )
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", nargs="+", default=CAPTIONS)
    parser.add_argument("--root", type=Path, default=Path("workspace/mesh_fidelity"))
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another dreamtext checkout to compare")
    parser.add_argument("--sweep", action="store_true", help="also try other settings")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "RESULTS.md")
    args = parser.parse_args(argv)
    args.root = args.root.resolve()
    command = "python benchmarks/mesh_fidelity.py" + " ".join(
        [""]
        + ([f"--before {args.before}"] if args.before else [])
        + (["--sweep"] if args.sweep else [])
        + ([f"--seed {args.seed}"] if args.seed != 3 else [])
    )
    rows = []
    for caption in args.captions:
        rows.append(evaluate(caption, args))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    with args.out.open("a", encoding="utf-8") as f:
        f.write(section(rows, command))
    print(table(rows))
    if args.sweep:
        print(sweep_table(rows))


if __name__ == "__main__":
    main()
