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
centre), and whose area is under 1e-3 of the median face's ("slivers")::

    python benchmarks/mesh_folds.py --root /tmp/folds
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import fast_simplification
import numpy as np
import trimesh
from scipy import ndimage

from dreamtext import shapes
from dreamtext.checkpoint import last_checkpoint, load_field
from dreamtext.config import resolve_config
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder of the runs")
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args(argv)
    for shape in shapes.SHAPES:
        workspace = trained_run(shape, args.root, args.steps)
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
            "decimated, no unfold": drop_small_parts(orient_outward(repaired)),
            "decimate()": decimate(mesh, target),
        }
        rows = {
            name: (np.asarray(m.vertices), np.asarray(m.vertex_normals), np.asarray(m.faces))
            for name, m in meshes.items()
        }
        rows["run's mesh.glb"] = glb_mesh(workspace / "mesh" / "mesh.glb")
        for name, (v, n, f) in rows.items():
            counts = fold_counts(v, n, f, extraction.occupancy, bound)
            print(f"{shape:9s} {name:21s}", "  ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
