"""What a viewer samples from the exported texture, at chart edges and the atlas's border.

For a trained run (``--workspace``), mesh the field as its export does (the recorded export
options: grid, threshold, decimation); or (``--ball``) tests/analytic_field.py's noisy ball
(white noise in the density: a rough surface, as a trained field's) coloured by direction,
meshed at the export's defaults (a 256³ grid, 50,000 faces: 2,323 charts, each edge's
neighbours other colours). Then for each ``--sizes`` texture and each chart padding ``p`` (the
padding rules of :data:`RULES` at that size, and any ``--paddings``) unwrap it (``unwrap_uv``)
and bake it (``bake_texture``), and look the texture up as a viewer does:

* bilinear with REPEAT (glTF's and most viewers' default wrap mode; an OBJ has no other) and
  with CLAMP_TO_EDGE (the GLB's sampler), on the texture itself (level 0);
* the same on the mip levels 1 and 2 (``--levels``: each texel the mean of 2 × 2 of the level
  above), which a viewer reads where the object is drawn at a half and a quarter of the
  texture's size on screen.

The points: each face's UV centroid, and on every chart's edge (the mesh's boundary edges once
unwrapped: seams) the points at ¼, ½ and ¾ of each edge. Each lookup's colour is compared with
the field's albedo at the point's 3D position (``query_surface_albedo``, as the bake queries it),
in 8-bit levels, the largest of the three channels per point. Also: the charts' nearest texel
distance to the texture's border, and how many lookups REPEAT and CLAMP disagree on. Prints a
markdown table, one row per size and padding (errors under CLAMP, the GLB's; REPEAT's own where
the two disagree anywhere), and with ``--json`` writes every figure::

    python benchmarks/texture_edges.py --workspace workspace/a_colorful_cube --sizes 256 1024
    python benchmarks/texture_edges.py --ball --json ball.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import trimesh

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from analytic_field import direction_albedo, noisy_ball  # noqa: E402

from dreamtext.checkpoint import load_field  # noqa: E402
from dreamtext.export import ExportOptions, recorded_options  # noqa: E402
from dreamtext.mesh import (  # noqa: E402
    bake_texture,
    decimate,
    dilate,
    extract_mesh,
    face_components,
    query_surface_albedo,
    rasterize_uv,
    unwrap_uv,
)

SIZES = (128, 256, 512, 1024, 2048)
# The chart paddings compared: each rule's texels at texture size S.
RULES: dict[str, Callable[[int], int]] = {
    "max(2, S/256)": lambda size: max(2, size // 256),
    "max(1, S/512)": lambda size: max(1, size // 512),
    "max(1, S/256)": lambda size: max(1, size // 256),
}
# Where on each seam edge a point is looked up (fractions of the edge from its first corner).
EDGE_FRACTIONS = (0.25, 0.5, 0.75)
# A lookup this many 8-bit levels off its albedo is counted as wrong.
WRONG_LEVELS = 16
# A seam lookup more than this many 8-bit levels off its chart's colour (chart_bleed) reads
# another chart's texels (or the background) with a weight of ~1 / 100 or more.
BLEED_LEVELS = 1.0
# Mip levels looked up: 0 (the texture), 1 and 2 (drawn 2× and 4× smaller).
LEVELS = 3


def mip_level(image: np.ndarray) -> np.ndarray:
    """The next mip level of ``image: [S, S, C]`` (float): each texel the mean of a 2 × 2 block
    (a box filter, as ``glGenerateMipmap`` builds it for a power-of-two texture)."""
    half = image.shape[0] // 2
    blocks = image[: 2 * half, : 2 * half].reshape(half, 2, half, 2, -1)
    return blocks.mean(axis=(1, 3))


def bilinear(image: np.ndarray, uv: np.ndarray, wrap: str) -> np.ndarray:
    """The bilinear lookup of ``image: [S, S, C]`` (row 0 at ``v = 1``) at ``uv: [N, 2]``.

    Texel ``(r, c)`` is centred at ``u = (c + ½) / S``, ``v = 1 − (r + ½) / S``; a lookup at
    ``x = u S − ½``, ``y = (1 − v) S − ½`` weighs the four texels around it by
    ``(1 − f_x)(1 − f_y)``, ``f_x (1 − f_y)``, ... with ``f = x − ⌊x⌋``. ``wrap``: ``"repeat"``
    (indices modulo ``S``) or ``"clamp"`` (indices clipped to ``[0, S − 1]``)."""
    size = image.shape[0]
    x = uv[:, 0] * size - 0.5
    y = (1.0 - uv[:, 1]) * size - 0.5
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]

    def at(rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        if wrap == "repeat":
            return image[rows % size, columns % size]
        return image[np.clip(rows, 0, size - 1), np.clip(columns, 0, size - 1)]

    return (
        (1 - fx) * (1 - fy) * at(y0, x0)
        + fx * (1 - fy) * at(y0, x0 + 1)
        + (1 - fx) * fy * at(y0 + 1, x0)
        + fx * fy * at(y0 + 1, x0 + 1)
    )


def seam_edges(mesh: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray]:
    """The unwrapped mesh's boundary edges (its charts' edges): ``(ends [E, 2] vertex indices,
    face [E] the one face each edge is on)``."""
    edges = np.sort(mesh.edges, axis=1)  # [3F, 2], edge k of face k // 3
    _, inverse, counts = np.unique(edges, axis=0, return_inverse=True, return_counts=True)
    boundary = np.flatnonzero(counts[inverse.ravel()] == 1)
    return np.asarray(mesh.edges)[boundary], boundary // 3


def seam_points(mesh: trimesh.Trimesh, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points on the unwrapped mesh's boundary edges (its charts' edges): ``(uv [N, 2], points
    [N, 3], normals [N, 3])`` at :data:`EDGE_FRACTIONS` of each edge, the normal its face's."""
    ends, face = seam_edges(mesh)
    normal = np.asarray(mesh.face_normals)[face]
    t = np.asarray(EDGE_FRACTIONS)[:, None, None]
    along_uv = (1 - t) * uv[ends[:, 0]] + t * uv[ends[:, 1]]
    along = (1 - t) * mesh.vertices[ends[:, 0]] + t * mesh.vertices[ends[:, 1]]
    repeat = len(EDGE_FRACTIONS)
    return along_uv.reshape(-1, 2), along.reshape(-1, 3), np.tile(normal, (repeat, 1))


def chart_bleed(mesh: trimesh.Trimesh, uv: np.ndarray, size: int, levels: int) -> list[np.ndarray]:
    """What reaches a chart's edge from other charts, apart from the field's colours: per mip
    level ``0 … levels − 1``, each seam point's (:func:`seam_points`) largest difference, in
    8-bit levels over the channels and over REPEAT and CLAMP, from its own chart's colour on a
    texture where each chart is one random colour (``U[0, 255]³``), laid out as the bake lays
    the field's: on the texel centres its faces cover, in the texel of each face's UV centroid
    that none covers (a face smaller than a texel), dilated into the gutters as far as the
    bake's default (``max(4, S / 128)``, ``dilate``). 0: the lookup reads its own chart alone;
    ``w`` of another chart's weight shows as ``w`` times the two colours' difference."""
    chart_of_face = face_components(mesh)
    colours = np.random.default_rng(0).uniform(0.0, 255.0, (chart_of_face.max() + 1, 3))
    face_of, _ = rasterize_uv(uv, mesh.faces, size)
    covered = face_of >= 0
    image = np.zeros((size, size, 3))
    image[covered] = colours[chart_of_face[face_of[covered]]]
    centroid = uv[mesh.faces].mean(axis=1)
    column = np.clip((centroid[:, 0] * size).astype(int), 0, size - 1)
    row = np.clip(((1.0 - centroid[:, 1]) * size).astype(int), 0, size - 1)
    small = (np.bincount(face_of[covered], minlength=len(mesh.faces)) == 0) & ~covered[row, column]
    image[row[small], column[small]] = colours[chart_of_face[small]]
    covered[row[small], column[small]] = True
    image, _ = dilate(image, covered, max(4, size // 128))
    _, face = seam_edges(mesh)
    where, _, _ = seam_points(mesh, uv)
    own = np.tile(colours[chart_of_face[face]], (len(EDGE_FRACTIONS), 1))
    return [
        np.maximum(
            errors(bilinear(level, where, "repeat"), own / 255.0),
            errors(bilinear(level, where, "clamp"), own / 255.0),
        )
        for level in mip_levels(image.astype(np.float64), levels)
    ]


def border_distance(uv: np.ndarray, size: int) -> float:
    """The charts' nearest approach to the texture's border, in texels."""
    return float(np.min(np.minimum(uv, 1.0 - uv)) * size)


def chart_count(mesh: trimesh.Trimesh) -> int:
    """Charts: the unwrapped mesh's connected parts (its vertices are split at every seam)."""
    return int(face_components(mesh).max() + 1) if len(mesh.faces) else 0


def errors(sampled: np.ndarray, albedo: np.ndarray) -> np.ndarray:
    """Per point, the largest channel's difference in 8-bit levels."""
    return np.abs(sampled - albedo * 255.0).max(axis=1)


def mip_levels(texture: np.ndarray, count: int) -> list[np.ndarray]:
    """Levels 0 to ``count − 1`` of ``texture``'s mip chain (:func:`mip_level`)."""
    levels = [texture]
    while len(levels) < count:
        levels.append(mip_level(levels[-1]))
    return levels


def measure(
    field: torch.nn.Module,
    surface: trimesh.Trimesh,
    cell: float,
    size: int,
    padding: int,
    levels: int = LEVELS,
) -> dict:
    """One texture size's and chart padding's figures (see the module's docstring)."""
    textured, uv = unwrap_uv(surface, size, padding)
    texture = bake_texture(field, textured, uv, size, cell=cell).astype(np.float64)
    chain = mip_levels(texture, levels)
    centre_uv = uv[textured.faces].mean(axis=1)
    edge_uv, edge_points, edge_normals = seam_points(textured, uv)
    face_normals = np.asarray(textured.face_normals)
    sets = {
        "centres": (centre_uv, np.asarray(textured.triangles_center), face_normals),
        "edges": (edge_uv, edge_points, edge_normals),
    }
    row: dict = {
        "size": size,
        "padding": padding,
        "charts": chart_count(textured),
        "border": border_distance(uv, size),
        "covered": float((rasterize_uv(uv, textured.faces, size)[0] >= 0).mean()),
    }
    for level, bleed in enumerate(chart_bleed(textured, uv, size, levels)):
        row[f"bleed L{level}"] = float((bleed > BLEED_LEVELS).mean())
    for name, (where, points, normals) in sets.items():
        albedo = query_surface_albedo(field, points, lambda index, n=normals: n[index], cell)
        for level, image in enumerate(chain):
            repeat = bilinear(image, where, "repeat")
            clamp = bilinear(image, where, "clamp")
            for wrap, sampled in (("repeat", repeat), ("clamp", clamp)):
                error = errors(sampled, albedo)
                key = f"{name} L{level} {wrap}"
                spread = (error.mean(), np.percentile(error, 99), error.max())
                row[key] = tuple(float(value) for value in spread)
                row[f"{key} wrong"] = float((error > WRONG_LEVELS).mean())
            row[f"{name} L{level} wrapped"] = int((np.abs(repeat - clamp).max(axis=1) > 1.0).sum())
        row[f"{name} n"] = len(where)
    return row


def paddings_at(size: int, extra: list[int]) -> dict[int, list[str]]:
    """The paddings measured at ``size``: each of :data:`RULES`' and ``extra``, with the
    names of the rules that pick it."""
    chosen: dict[int, list[str]] = {padding: [] for padding in extra}
    for name, rule in RULES.items():
        chosen.setdefault(rule(size), []).append(name)
    return dict(sorted(chosen.items()))


def table_line(row: dict, rules: list[str], levels: int) -> str:
    """One markdown row: errors under CLAMP (the GLB's), REPEAT's where the two disagree."""

    def spread(name: str, level: int) -> str:
        mean, p99, most = row[f"{name} L{level} clamp"]
        text = f"{mean:.1f} / {p99:.0f} / {most:.0f}"
        if row[f"{name} L{level} wrapped"]:
            mean, p99, most = row[f"{name} L{level} repeat"]
            text += f" (R {mean:.1f} / {p99:.0f} / {most:.0f})"
        return text

    cells = [
        str(row["size"]),
        str(row["padding"]),
        ", ".join(rules) or "-",
        str(row["charts"]),
        f"{row['border']:.2f}",
        f"{100 * row['covered']:.1f}",
        " · ".join(f"{row[f'centres L{k} clamp'][0]:.1f}" for k in range(levels)),
        *(spread("edges", k) for k in range(levels)),
        " · ".join(f"{100 * row[f'edges L{k} clamp wrong']:.1f}" for k in range(levels)),
        " · ".join(f"{100 * row[f'bleed L{k}']:.1f}" for k in range(levels)),
        " · ".join(
            str(row[f"centres L{k} wrapped"] + row[f"edges L{k} wrapped"]) for k in range(levels)
        ),
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--workspace", type=Path, help="a trained run")
    source.add_argument("--ball", action="store_true", help="the direction-coloured noisy ball")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--paddings", type=int, nargs="*", default=[], help="also these")
    parser.add_argument("--levels", type=int, default=LEVELS, help="mip levels looked up")
    parser.add_argument("--json", type=Path, help="write every row's figures here")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if args.ball:
        field, options, name = noisy_ball(), ExportOptions(), "the direction-coloured ball"
        field.albedo = direction_albedo
    else:
        field, _ = load_field(args.workspace)
        options, name = recorded_options(args.workspace), str(args.workspace)
    field.eval()
    extraction = extract_mesh(field, options.resolution, options.threshold)
    surface = decimate(extraction.mesh, options.decimate)
    cell = 2.0 * float(field.bound) / options.resolution
    print(f"{name}: {len(surface.faces)} faces, grid {options.resolution}")
    levels = range(args.levels)
    print(
        "| size | p | rules | charts | border texels | texels covered % | centres mean, L"
        + " · L".join(map(str, levels))
        + "".join(f" | edges L{k} mean / p99 / max" for k in levels)
        + f" | edges > {WRONG_LEVELS} levels %, L"
        + " · L".join(map(str, levels))
        + " | edges reading other charts %, L"
        + " · L".join(map(str, levels))
        + " | REPEAT ≠ CLAMP, L"
        + " · L".join(map(str, levels))
        + " |"
    )
    print("|---" * (9 + args.levels) + "|")
    rows = []
    for size in args.sizes:
        for padding, rules in paddings_at(size, args.paddings).items():
            row = measure(field, surface, cell, size, padding, args.levels)
            rows.append({**row, "rules": rules})
            print(table_line(row, rules, args.levels), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
