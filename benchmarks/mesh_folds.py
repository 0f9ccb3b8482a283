"""Folded faces of an exported mesh: marching cubes, decimation without and with ``unfold``, GLB.

For each primitive, a short ``builtin:shapes`` run as ``tests/test_export.py``'s ``trained``
fixture makes it ("a green SHAPE", ``--steps`` of the preset, seed 0, exported at the end by the
trainer; skipped when ``ROOT/SHAPE`` already has a checkpoint). Then, at the preset's export grid
and face count, it counts the faces of

* the marching cubes mesh (``extract_mesh``),
* the decimated mesh without :func:`dreamtext.mesh.unfold` (fast-simplification and the
  manifold repair: what ``decimate`` made before it), and with it (``decimate``),
* the run's ``mesh/mesh.glb`` as stored (float32 positions and normals, split at UV seams),

whose normal is over 60° / 90° from the mean of their corner normals ("folded"), over 90° from
outward (the gradient of the field occupancy's signed distance, Gaussian σ 1 cell, at the face
centre), whose area is under 1e-3 of the median face's ("slivers") and whose smallest angle is
under 5° ("<5°"). For the decimated meshes and the GLB it also gives how far their surface is from
the marching cubes surface, as a fraction of its bounding box diagonal: points sampled evenly on
each surface (``--samples``, seeded) to the closest point of the other, both ways, mean ("dev
mean"), 95th percentile ("dev p95") and largest ("dev max")::

    python benchmarks/mesh_folds.py --root /tmp/folds

``--full`` measures instead what the README's command gives for each of the built-in prior's
six full-preset captions (:data:`FULL_CAPTIONS`): ``dreamtext text CAPTION --model
builtin:shapes`` (1,000 steps and the export), run as a user runs it into ``ROOT/<slug>``, timed
(skipped when the folder already has a mesh), then the same counts::

    python benchmarks/mesh_folds.py --root /tmp/full --full
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import fast_simplification
import numpy as np
import trimesh
from scipy import ndimage
from scipy.spatial import cKDTree

from dreamtext import shapes
from dreamtext.checkpoint import last_checkpoint, load_field
from dreamtext.config import resolve_config
from dreamtext.inputs import slugify
from dreamtext.mesh import (
    decimate,
    drop_small_parts,
    extract_mesh,
    make_manifold,
    orient_outward,
)
from dreamtext.trainer import train


def glb_mesh(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(positions [V, 3], normals [V, 3], faces [F, 3])`` of a one-primitive GLB as stored."""
    data = path.read_bytes()
    length = int.from_bytes(data[12:16], "little")
    tree, binary = json.loads(data[20 : 20 + length]), data[20 + length + 8 :]
    primitive = tree["meshes"][0]["primitives"][0]

    def accessor(index: int) -> np.ndarray:
        acc = tree["accessors"][index]
        view = tree["bufferViews"][acc["bufferView"]]
        dtype = {5126: np.float32, 5125: np.uint32, 5123: np.uint16}[acc["componentType"]]
        width = {"SCALAR": 1, "VEC3": 3}[acc["type"]]
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        return np.frombuffer(binary, dtype, acc["count"] * width, start).reshape(-1, width)

    attributes = primitive["attributes"]
    positions = accessor(attributes["POSITION"]).astype(np.float64)
    normals = accessor(attributes["NORMAL"]).astype(np.float64)
    faces = accessor(primitive["indices"]).reshape(-1, 3).astype(np.int64)
    return positions, normals, faces


def outward_directions(occupancy: np.ndarray, bound: float, points: np.ndarray) -> np.ndarray:
    """``[N, 3]`` unit vectors: the gradient of the occupancy's smoothed signed distance."""
    signed = ndimage.distance_transform_edt(~occupancy) - ndimage.distance_transform_edt(occupancy)
    signed = ndimage.gaussian_filter(signed.astype(np.float64), 1.0)
    index = ((points + bound) / (2.0 * bound / occupancy.shape[0]) - 0.5).T
    gradient = np.stack(
        [ndimage.map_coordinates(g, index, order=1, mode="nearest") for g in np.gradient(signed)],
        axis=1,
    )
    return gradient / np.maximum(np.linalg.norm(gradient, axis=1, keepdims=True), 1e-12)


def fold_counts(vertices, normals, faces, occupancy, bound) -> dict[str, int | float]:
    corners = vertices[faces]
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    area = np.linalg.norm(cross, axis=1)
    face_normals = cross / np.maximum(area, 1e-300)[:, None]
    mean = normals[faces].mean(axis=1)
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    agree = np.einsum("ij,ij->i", face_normals, mean)
    outward = outward_directions(occupancy, bound, corners.mean(axis=1))
    return {
        "faces": len(faces),
        "folded>60": int((agree < 0.5).sum()),
        "folded>90": int((agree < 0.0).sum()),
        "worst°": round(float(np.degrees(np.arccos(np.clip(agree.min(), -1, 1)))), 1),
        "not outward>90": int((np.einsum("ij,ij->i", face_normals, outward) < 0).sum()),
        "slivers": int((area < 1e-3 * np.median(area)).sum()),
        "<5°": int((min_angles(vertices, faces) < 5.0).sum()),
    }


def min_angles(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``[F]`` smallest interior angle of each face, in degrees."""
    corners = vertices[faces]
    angles = []
    for k in range(3):
        u = corners[:, (k + 1) % 3] - corners[:, k]
        w = corners[:, (k + 2) % 3] - corners[:, k]
        norms = np.linalg.norm(u, axis=1) * np.linalg.norm(w, axis=1)
        cosine = np.einsum("ij,ij->i", u, w) / np.maximum(norms, 1e-300)
        angles.append(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))
    return np.min(angles, axis=0)


def closest_on_triangles(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """``[N, 3]`` closest point of triangle ``triangles[i]`` (``[N, 3, 3]``) to ``points[i]``
    (the Voronoi regions of the corners, edges and inside, Ericson's *Real-Time Collision
    Detection* §5.1.5)."""
    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    ab, ac, ap = b - a, c - a, points - a
    bp, cp = points - b, points - c

    def dot(u, w):
        return np.einsum("ij,ij->i", u, w)

    d1, d2 = dot(ab, ap), dot(ac, ap)
    d3, d4 = dot(ab, bp), dot(ac, bp)
    d5, d6 = dot(ab, cp), dot(ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    total = np.where(np.abs(va + vb + vc) > 1e-300, va + vb + vc, 1e-300)
    result = a + ab * (vb / total)[:, None] + ac * (vc / total)[:, None]  # inside

    def where(mask, value):
        result[mask] = value[mask]

    safe = lambda x: np.where(np.abs(x) > 1e-300, x, 1e-300)  # noqa: E731
    on_bc = (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0)
    where(on_bc, b + (c - b) * ((d4 - d3) / safe((d4 - d3) + (d5 - d6)))[:, None])
    on_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    where(on_ac, a + ac * (d2 / safe(d2 - d6))[:, None])
    on_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    where(on_ab, a + ab * (d1 / safe(d1 - d3))[:, None])
    where((d6 >= 0) & (d5 <= d6), c)
    where((d3 >= 0) & (d4 <= d3), b)
    where((d1 <= 0) & (d2 <= 0), a)
    return result


def surface_distance(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """``[N]`` distance of each point to the closest point of ``mesh``'s surface. The closest face
    is within (distance to the nearest vertex + the largest centre-to-corner distance) of its
    centre, so only faces whose centre is that near are tried."""
    triangles = np.asarray(mesh.triangles)
    centres = triangles.mean(axis=1)
    reach = float(np.linalg.norm(triangles - centres[:, None], axis=2).max())
    nearest_vertex = cKDTree(mesh.vertices).query(points)[0]
    candidates = cKDTree(centres).query_ball_point(points, nearest_vertex + reach + 1e-12)
    counts = np.array([len(c) for c in candidates], dtype=np.int64)
    point = np.repeat(np.arange(len(points)), counts)
    face = np.concatenate([np.zeros(0, np.int64), *candidates]).astype(np.int64)
    closest = closest_on_triangles(points[point], triangles[face])
    distance = np.full(len(points), np.inf)
    np.minimum.at(distance, point, np.linalg.norm(closest - points[point], axis=1))
    return distance


def deviation(reference: trimesh.Trimesh, other: trimesh.Trimesh, samples: int) -> dict[str, float]:
    """Symmetric surface distance of ``other`` from ``reference`` over ``reference``'s bounding
    box diagonal: mean, 95th percentile and largest, of ``samples`` points on each surface."""
    diagonal = float(np.linalg.norm(reference.bounds[1] - reference.bounds[0]))
    distances = []
    for source, target in ((reference, other), (other, reference)):
        points, _ = trimesh.sample.sample_surface_even(source, samples, seed=0)
        distances.append(surface_distance(target, points))
    distances = np.concatenate(distances) / diagonal
    return {
        "dev mean": float(f"{distances.mean():.2e}"),
        "dev p95": float(f"{np.percentile(distances, 95):.2e}"),
        "dev max": float(f"{distances.max():.2e}"),
    }


def trained_run(shape: str, root: Path, steps: int) -> Path:
    workspace = root / shape
    if not last_checkpoint(workspace).is_file():
        overrides = {
            "prompt": f"a green {shape}",
            "guidance": {"model": "builtin:shapes"},
            "iters": steps,
            "seed": 0,
            "workspace": str(workspace),
            "preview_every": 0,
            "export_options": {"video": False},
        }
        train(resolve_config(overrides))
    return workspace


# The README's six captions the built-in prior draws at its full preset.
FULL_CAPTIONS = (
    "a red cube",
    "a green sphere",
    "a blue cylinder",
    "an orange cone",
    "a purple torus",
    "a colorful cube",
)


def readme_run(caption: str, root: Path) -> tuple[Path, float | None]:
    """``dreamtext text CAPTION --model builtin:shapes --workspace ROOT/<slug>`` as a user runs
    it, unless that folder has a mesh already; the folder and the command's wall seconds."""
    workspace = root / slugify(caption)
    if (workspace / "mesh" / "mesh.glb").is_file():
        return workspace, None
    argv = ["text", caption, "--model", "builtin:shapes", "--workspace", str(workspace)]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dreamtext", *argv], check=True)
    return workspace, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder of the runs")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--samples", type=int, default=20000, help="points per surface")
    parser.add_argument(
        "--full", action="store_true", help="the README's command for the six full-preset captions"
    )
    args = parser.parse_args(argv)
    if args.full:
        runs = []
        for caption in FULL_CAPTIONS:
            workspace, seconds = readme_run(caption, args.root)
            if seconds is not None:
                print(f"{caption}: the README's command took {seconds:.1f} s", flush=True)
            runs.append((slugify(caption), workspace))
    else:
        runs = [(shape, trained_run(shape, args.root, args.steps)) for shape in shapes.SHAPES]
    for shape, workspace in runs:
        field, config = load_field(workspace)
        options, bound = config["export_options"], float(field.bound)
        extraction = extract_mesh(field, options["resolution"], options.get("threshold"))
        mesh, target = extraction.mesh, options["decimate"]
        vertices, faces = fast_simplification.simplify(
            np.asarray(mesh.vertices, np.float64),
            np.asarray(mesh.faces, np.int32),
            target_count=target,
        )
        repaired = make_manifold(trimesh.Trimesh(vertices, faces, process=False))
        meshes = {
            "marching cubes": mesh,
            "decimated, no unfold": drop_small_parts(orient_outward(repaired))[0],
            "decimate()": decimate(mesh, target),
        }
        rows = {
            name: (np.asarray(m.vertices), np.asarray(m.vertex_normals), np.asarray(m.faces))
            for name, m in meshes.items()
        }
        rows["run's mesh.glb"] = glb_mesh(workspace / "mesh" / "mesh.glb")
        for name, (v, n, f) in rows.items():
            counts = fold_counts(v, n, f, extraction.occupancy, bound)
            if name != "marching cubes":
                surface = trimesh.Trimesh(v, f, process=name == "run's mesh.glb")
                counts |= deviation(mesh, surface, args.samples)
            print(f"{shape:15s} {name:21s}", "  ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
