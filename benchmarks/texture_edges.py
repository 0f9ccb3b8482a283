"""What a viewer samples from the exported texture, at chart edges and the atlas's border.

For a trained run (``--workspace``), mesh the field as its export does (the recorded export
options: grid, threshold, decimation), then for each ``--sizes`` texture unwrap it (``unwrap_uv``)
and bake it (``bake_texture``) with this tree (or the tree on ``PYTHONPATH``), and look the
texture up as a viewer does:

* bilinear with REPEAT (glTF's and most viewers' default wrap mode; an OBJ has no other) and
  with CLAMP_TO_EDGE (the GLB's sampler), on the texture itself (level 0);
* the same on the first mip level (level 1, each texel the mean of 2 × 2), which a viewer reads
  where the object is drawn at half the texture's size on screen.

The points: each face's UV centroid, and on every chart's edge (the mesh's boundary edges once
unwrapped: seams) the points at ¼, ½ and ¾ of each edge. Each lookup's colour is compared with
the field's albedo at the point's 3D position (``query_surface_albedo``, as the bake queries it),
in 8-bit levels, the largest of the three channels per point. Also: the charts' nearest texel
distance to the texture's border, and how many lookups REPEAT and CLAMP disagree on. Prints a
markdown table::

    python benchmarks/texture_edges.py --workspace workspace/a_colorful_cube
    PYTHONPATH=/tmp/dreamtext-main python benchmarks/texture_edges.py --workspace RUN  # before
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import trimesh

from dreamtext.checkpoint import load_field
from dreamtext.export import recorded_options
from dreamtext.mesh import (
    bake_texture,
    decimate,
    extract_mesh,
    face_components,
    query_surface_albedo,
    unwrap_uv,
)

SIZES = (8, 16, 32, 64, 256, 1024)
# Where on each seam edge a point is looked up (fractions of the edge from its first corner).
EDGE_FRACTIONS = (0.25, 0.5, 0.75)
# A lookup this many 8-bit levels off its albedo is counted as wrong.
WRONG_LEVELS = 16


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


def seam_points(mesh: trimesh.Trimesh, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points on the unwrapped mesh's boundary edges (its charts' edges): ``(uv [N, 2], points
    [N, 3], normals [N, 3])`` at :data:`EDGE_FRACTIONS` of each edge, the normal its face's."""
    edges = np.sort(mesh.edges, axis=1)  # [3F, 2], edge k of face k // 3
    _, inverse, counts = np.unique(edges, axis=0, return_inverse=True, return_counts=True)
    boundary = np.flatnonzero(counts[inverse.ravel()] == 1)
    ends = np.asarray(mesh.edges)[boundary]
    normal = np.asarray(mesh.face_normals)[boundary // 3]
    t = np.asarray(EDGE_FRACTIONS)[:, None, None]
    along_uv = (1 - t) * uv[ends[:, 0]] + t * uv[ends[:, 1]]
    along = (1 - t) * mesh.vertices[ends[:, 0]] + t * mesh.vertices[ends[:, 1]]
    repeat = len(EDGE_FRACTIONS)
    return along_uv.reshape(-1, 2), along.reshape(-1, 3), np.tile(normal, (repeat, 1))


def border_distance(uv: np.ndarray, size: int) -> float:
    """The charts' nearest approach to the texture's border, in texels."""
    return float(np.min(np.minimum(uv, 1.0 - uv)) * size)


def chart_count(mesh: trimesh.Trimesh) -> int:
    """Charts: the unwrapped mesh's connected parts (its vertices are split at every seam)."""
    return int(face_components(mesh).max() + 1) if len(mesh.faces) else 0


def errors(sampled: np.ndarray, albedo: np.ndarray) -> np.ndarray:
    """Per point, the largest channel's difference in 8-bit levels."""
    return np.abs(sampled - albedo * 255.0).max(axis=1)


def measure(field: torch.nn.Module, surface: trimesh.Trimesh, cell: float, size: int) -> dict:
    """One texture size's figures (see the module's docstring)."""
    textured, uv = unwrap_uv(surface, size)
    texture = bake_texture(field, textured, uv, size, cell=cell).astype(np.float64)
    levels = {"L0": texture, "L1": mip_level(texture)}
    centre_uv = uv[textured.faces].mean(axis=1)
    edge_uv, edge_points, edge_normals = seam_points(textured, uv)
    face_normals = np.asarray(textured.face_normals)
    sets = {
        "centres": (centre_uv, np.asarray(textured.triangles_center), face_normals),
        "edges": (edge_uv, edge_points, edge_normals),
    }
    row: dict = {
        "size": size,
        "charts": chart_count(textured),
        "border": border_distance(uv, size),
    }
    for name, (where, points, normals) in sets.items():
        albedo = query_surface_albedo(field, points, lambda index, n=normals: n[index], cell)
        for level, image in levels.items():
            repeat = bilinear(image, where, "repeat")
            clamp = bilinear(image, where, "clamp")
            for wrap, sampled in (("repeat", repeat), ("clamp", clamp)):
                error = errors(sampled, albedo)
                key = f"{name} {level} {wrap}"
                spread = (error.mean(), np.percentile(error, 99), error.max())
                row[key] = tuple(float(value) for value in spread)
                row[f"{key} wrong"] = float((error > WRONG_LEVELS).mean())
            row[f"{name} {level} wrapped"] = int((np.abs(repeat - clamp).max(axis=1) > 1.0).sum())
        row[f"{name} n"] = len(where)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    field, _ = load_field(args.workspace)
    field.eval()
    options = recorded_options(args.workspace)
    extraction = extract_mesh(field, options.resolution, options.threshold)
    surface = decimate(extraction.mesh, options.decimate)
    cell = 2.0 * float(field.bound) / options.resolution
    print(f"{args.workspace}: {len(surface.faces)} faces, grid {options.resolution}")
    header = "| size | charts | border texels | points | lookup | mean / p99 / max levels | > "
    print(f"{header}{WRONG_LEVELS} | REPEAT ≠ CLAMP |")
    print("|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        row = measure(field, surface, cell, size)
        for name in ("centres", "edges"):
            for level in ("L0", "L1"):
                for wrap in ("repeat", "clamp"):
                    key = f"{name} {level} {wrap}"
                    mean, p99, most = row[key]
                    print(
                        f"| {size} | {row['charts']} | {row['border']:.2f} | {name} "
                        f"({row[f'{name} n']}) | {level} {wrap} | {mean:.1f} / {p99:.0f} / "
                        f"{most:.0f} | {100 * row[f'{key} wrong']:.1f} % | "
                        f"{row[f'{name} {level} wrapped']} |"
                    )


if __name__ == "__main__":
    main()
