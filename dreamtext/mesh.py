"""From a trained field to a textured triangle mesh, on the CPU: arrays in, arrays out, no files.

    density grid ──► occupancy ──► marching cubes ──► decimation ──► UVs ──► texture
                     (what the renders show)   (one closed manifold surface per object)

Grid convention (the one place world coordinates and grid indices meet): the cube ``[−b, b]^3`` is
cut into ``R^3`` cells of side ``h = 2b / R`` and the density is sampled at the cell *centres*
``x_i = −b + (i + ½) h``, ``i = 0 … R−1``. Marching cubes returns vertices in index units, so a
vertex at index coordinate ``v`` lies at ``x = −b + (v + ½) h`` in the field's own frame (+y up,
the training scale; nothing is renormalised). The grid is padded with one layer of empty cells
before marching cubes so surfaces touching the cube's faces are closed rather than cut open.

Occupancy: the renderer's surface is where the transmittance ``T = exp(−∫σ ds)`` from the camera
falls to ½ (the median of a ray's termination depth). A cell is solid when light from outside does
not reach it: from each of the six axis directions, the optical depth from the scene's edge to the
cell centre exceeds ``ln 2``. SDS only ever sees an object from outside, so the density inside it
is unconstrained, often a dense skin around a noisy core; one density iso-level cuts that core
into inner shells and crumbs, while the optical depth only grows behind a wall, so every cavity no
ray reaches is solid. The mesh is the boundary of that solid, placed between cell centres where the
optical depth crosses ``ln 2``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import fast_simplification
import mcubes
import numpy as np
import torch
import trimesh
import xatlas
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from dreamtext.errors import DreamtextError
from dreamtext.exportflags import MIN_DECIMATE
from dreamtext.field import MAX_DENSITY
from dreamtext.progress import bar_options, tqdm

log = logging.getLogger(__name__)

SURFACE_TRANSMITTANCE = 0.5
SURFACE_DEPTH = math.log(1.0 / SURFACE_TRANSMITTANCE)  # the optical depth where T = ½
# Parts of the solid under this fraction of the largest part's cells are crumbs.
MIN_COMPONENT_FRACTION = 0.01
# How often, at most, the density grid calls its ``check`` between chunks (an export's "is the run
# still there": a memory-mapped read of last.pt, milliseconds). A 256^3 grid takes minutes on a
# CPU and a chunk a fraction of a second, so a check per chunk would cost more than it tells.
CHECK_EVERY_S = 1.0


def field_device(field: torch.nn.Module) -> torch.device:
    """The device of a field's parameters (CPU for a parameter-free field)."""
    for parameter in field.parameters():
        return parameter.device
    return torch.device("cpu")


def grid_centres(resolution: int, bound: float) -> np.ndarray:
    """Cell-centre coordinates ``x_i = −b + (i + ½) · 2b / R`` of one axis: ``[R]``."""
    h = 2.0 * bound / resolution
    return (-bound + (np.arange(resolution) + 0.5) * h).astype(np.float32)


@torch.no_grad()
def sample_density_grid(
    field: torch.nn.Module,
    resolution: int,
    bound: float,
    chunk: int = 1 << 18,
    check: Callable[[], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Density ``σ(x_i, y_j, z_k)`` at the cell centres of an ``R^3`` grid: ``[R, R, R]`` float32.

    Points are generated and evaluated ``chunk`` at a time, so memory is ``O(R^3)`` floats for the
    result plus ``O(chunk)`` for the field, whatever ``R`` is. Axis order is (x, y, z).
    ``check`` (when given) is called between chunks, at most once in :data:`CHECK_EVERY_S`
    seconds; what it raises stops the sampling. ``progress(done, chunks)`` (when given) is
    called then too, and before the first chunk.
    """
    device = field_device(field)
    axis = torch.from_numpy(grid_centres(resolution, bound)).to(device)
    total = resolution**3
    chunks = -(-total // chunk)
    grid = np.empty(total, dtype=np.float32)
    checked = time.monotonic()
    if progress is not None:
        progress(0, chunks)
    for start in tqdm(
        range(0, total, chunk), desc="density grid", leave=False, unit="chunk", **bar_options()
    ):
        if time.monotonic() - checked >= CHECK_EVERY_S:
            if check is not None:
                check()
            if progress is not None:
                progress(start // chunk, chunks)
            checked = time.monotonic()
        index = torch.arange(start, min(start + chunk, total), device=device)
        i, rest = index // (resolution * resolution), index % (resolution * resolution)
        j, k = rest // resolution, rest % resolution
        points = torch.stack([axis[i], axis[j], axis[k]], dim=-1)
        grid[start : start + len(index)] = field.density(points).float().cpu().numpy()
    return grid.reshape(resolution, resolution, resolution)


def outside_optical_depth(grid: np.ndarray, bound: float) -> np.ndarray:
    """``τ_out``: the least optical depth from the scene's edge to each cell centre, ``[R, R, R]``.

    Along one axis, the depth to the centre of cell ``i`` is ``h (σ_0 + … + σ_{i−1} + σ_i / 2)``
    (every cell before it, half of its own). ``τ_out`` is the minimum over the six axis
    directions, the way light from outside reaches the cell best; ``T = exp(−τ_out)``.

    grid: ``[R, R, R]`` densities from :func:`sample_density_grid`. Returns float32.
    """
    h = 2.0 * bound / grid.shape[0]
    sigma = np.asarray(grid, dtype=np.float32)
    depth = np.full(sigma.shape, np.inf, dtype=np.float32)
    for axis in range(3):
        for flip in (False, True):
            along = np.flip(sigma, axis) if flip else sigma
            run = np.cumsum(along, axis=axis, dtype=np.float32)
            run -= 0.5 * along
            run *= h
            np.minimum(depth, np.flip(run, axis) if flip else run, out=depth)
    return depth


def render_occupancy(grid: np.ndarray, bound: float) -> np.ndarray:
    """The cells light from outside does not reach, ``τ_out > ln 2`` (``T < ½``): ``[R, R, R]``
    bool. Cavities behind an opaque wall are occupied; density too thin to stop half the light
    is not."""
    return outside_optical_depth(grid, bound) > SURFACE_DEPTH


def density_solid(grid: np.ndarray, threshold: float) -> np.ndarray:
    """The cells denser than ``threshold``, flood-filled from outside (cavities become solid)."""
    return ndimage.binary_fill_holes(grid > threshold)


def drop_crumbs(
    solid: np.ndarray, min_fraction: float = MIN_COMPONENT_FRACTION
) -> tuple[np.ndarray, int]:
    """Keep the face-connected parts of ``solid`` with at least ``min_fraction`` of the cells of
    the largest one. Returns ``(solid, number of parts dropped)``."""
    labels, count = ndimage.label(solid)
    if count <= 1:
        return solid, 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = sizes >= min_fraction * sizes.max()
    return keep[labels], int(count - keep[1:].sum())


def marching_cubes(
    values: np.ndarray, solid: np.ndarray, level: float, bound: float
) -> trimesh.Trimesh:
    """The boundary of ``solid`` as triangles, placed between cell centres where ``values``
    crosses ``level`` (linear interpolation), in world coordinates.

    values: ``[R, R, R]``, larger inside (the optical depth with level ``ln 2``, or the density
    with level the threshold); solid: ``[R, R, R]`` bool, the cells inside; ``level > 0``.

    * Values are clamped to ``[0, 2 level]``. A wall that turns opaque within one cell jumps from
      about 0 to far above the level between two centres; unclamped, the crossing would sit
      next to the outer centre (half a cell outward on average: +5 % volume for a hard ball on
      a 96³ grid). Clamped, it sits halfway, where a step somewhere between the two centres is
      on average; a gradual wall (values under ``2 level``) is interpolated as it is.
    * Where values and solid disagree (a filled cavity, a dropped crumb) and within 0.1 % of the
      level, values are pushed just past the level, so the surface is exactly the boundary of
      ``solid`` and no vertex lands on a cell centre (which would leave zero-area triangles).

    Vertices are mapped back with ``x = −b + (v + ½) h`` (see the module docstring); the one-cell
    padding is undone here.
    """
    above, below = level * (1.0 + 1e-3), level * (1.0 - 1e-3)
    clamped = np.clip(values, 0.0, 2.0 * level)
    inside = np.where(solid, np.maximum(clamped, above), np.minimum(clamped, below))
    padded = np.pad(inside.astype(np.float64), 1, mode="constant", constant_values=0.0)
    # PyMCubes 0.1.6 (the newest) reshapes its results by setting `.shape`, which numpy 2.5
    # deprecates: the DeprecationWarning names this line, but no argument avoids it (see the
    # PyMCubes line in pyproject.toml).
    vertices, faces = mcubes.marching_cubes(padded, level)
    h = 2.0 * bound / solid.shape[0]
    vertices = -bound + (vertices - 1.0 + 0.5) * h
    return trimesh.Trimesh(vertices=vertices, faces=faces.astype(np.int64), process=False)


@dataclass
class Extraction:
    """A field's surface before decimation, and what it was measured against.

    ``mesh``: closed, manifold, outward-facing; ``occupancy``: ``[R, R, R]`` bool, the cells light
    from outside does not reach (:func:`render_occupancy`), whatever ``threshold`` was;
    ``threshold``: the density iso-level given, ``None`` for the render's surface (``T = ½``);
    ``dropped_components``: parts of the solid dropped as crumbs.
    """

    mesh: trimesh.Trimesh
    occupancy: np.ndarray
    threshold: float | None
    dropped_components: int


def extract_mesh(
    field: torch.nn.Module,
    resolution: int = 256,
    threshold: float | None = None,
    chunk: int = 1 << 18,
    check: Callable[[], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    sampled: Callable[[], None] | None = None,
) -> Extraction:
    """Sample the field's density, decide what is solid, mesh its boundary.

    ``threshold=None`` (the default) meshes what the renders show: the cells light from outside
    does not reach, with the surface where the optical depth crosses ``ln 2``. A density
    ``threshold`` meshes the cells denser than it instead, flood-filled from outside, with the
    surface where the density crosses it. Either way, crumbs (parts under
    ``MIN_COMPONENT_FRACTION`` of the largest) are dropped. Raises ``DreamtextError`` when nothing
    is solid. ``check`` and ``progress`` are called while the density is sampled
    (:func:`sample_density_grid`); ``sampled`` once it is, before the solid is found and meshed
    (seconds at 256³, with no progress of their own).
    """
    bound = float(field.bound)
    grid = finite_density(sample_density_grid(field, resolution, bound, chunk, check, progress))
    if sampled is not None:
        sampled()
    depth = outside_optical_depth(grid, bound)
    occupancy = depth > SURFACE_DEPTH
    if threshold is None:
        solid, values, level = occupancy, depth, SURFACE_DEPTH
        if not solid.any():
            raise DreamtextError(
                "the field is empty (no ray through it becomes half opaque): "
                "train longer or pass a lower --threshold"
            )
    else:
        solid, values, level = density_solid(grid, threshold), grid, threshold
        if not solid.any():
            raise DreamtextError(
                f"no density above the threshold {threshold:.4g} (the field's largest is "
                f"{float(grid.max()):.4g}): train longer or lower --threshold"
            )
    mesh, dropped = solid_surface(values, solid, level, bound)
    if len(mesh.faces) == 0:
        raise DreamtextError(
            f"the field's solid is too small or too broken up to mesh at {resolution}^3 "
            f"({dropped} crumbs dropped): train longer, or pass a higher --resolution or a "
            "--threshold"
        )
    return Extraction(mesh, occupancy, threshold, dropped)


class DivergedDensity(DreamtextError):
    """The density grid of a field whose training diverged holds NaN (:func:`finite_density`).
    ``situation``: what was found; the command that meshed it ends it with the command that
    trains the run again with a smaller --lr (`dreamtext export`'s, a batch line's own)."""

    def __init__(self, situation: str) -> None:
        self.situation = situation
        super().__init__(f"{situation}; train again with a smaller --lr")


def finite_density(grid: np.ndarray) -> np.ndarray:
    """``grid`` with infinite densities set to :data:`MAX_DENSITY`: an ``exp`` activation
    overflows float32 above σ ≈ 3.4e38, and such a cell is as opaque as any dense one. A NaN
    density is a field that diverged: a :class:`DivergedDensity`."""
    bad = np.isnan(grid)
    if bad.any():
        raise DivergedDensity(
            f"the field's density is NaN at {int(bad.sum())} of {grid.size} grid points: its "
            "training diverged (see the loss in log.jsonl)"
        )
    return np.minimum(grid, MAX_DENSITY)


def solid_surface(
    values: np.ndarray, solid: np.ndarray, level: float, bound: float
) -> tuple[trimesh.Trimesh, int]:
    """The boundary of ``solid`` without its crumbs (:func:`drop_crumbs`), placed by ``values``
    (:func:`marching_cubes`), as a closed manifold facing out. Returns ``(mesh, parts
    dropped)``."""
    solid, dropped = drop_crumbs(solid)
    mesh = marching_cubes(values, solid, level, bound)
    # A part just over drop_crumbs' share of cells can enclose under that share of volume (its
    # surface lies inside its cells): dropped here, it is counted with the crumbs.
    mesh, small = drop_small_parts(orient_outward(make_manifold(mesh)))
    return mesh, dropped + small


# ---------------------------------------------------------------------------------------------
# Topology: closed, manifold, outward. A mesh is a closed manifold when every directed edge
# a→b appears in exactly one face and b→a in exactly one other (each edge has two faces, wound
# consistently), the faces around every vertex form a single fan, and no face has zero area.


def defect_vertices(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``[V]`` bool: the vertices where a mesh is not a closed manifold (see above).

    Flags both ends of every directed edge that is not matched by exactly one reverse edge, every
    vertex whose faces form more than one fan (two surfaces touching at a point), and the corners
    of every face with a repeated index or an area under ``1e-6`` of the median face's.
    """
    bad = _edge_and_fan_defects(len(vertices), faces)
    if len(faces) > 0:
        bad[faces[_degenerate_faces(vertices, faces)].ravel()] = True
    return bad


def _edge_and_fan_defects(n: int, faces: np.ndarray) -> np.ndarray:
    """``[n]`` bool: both ends of every directed edge of ``faces`` not matched by exactly one
    reverse edge, and every vertex whose faces form more than one fan. Each vertex's flag
    depends only on the faces round it."""
    bad = np.zeros(n, dtype=bool)
    if len(faces) == 0:
        return bad
    start = faces.ravel()
    end = faces[:, [1, 2, 0]].ravel()
    key = start * n + end
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    first = np.searchsorted(sorted_key, key, side="left")
    count = np.searchsorted(sorted_key, key, side="right") - first
    reverse = end * n + start
    rev_first = np.searchsorted(sorted_key, reverse, side="left")
    rev_count = np.searchsorted(sorted_key, reverse, side="right") - rev_first
    broken = (count != 1) | (rev_count != 1)
    bad[start[broken]] = True
    bad[end[broken]] = True

    # Fans: join the two corners of a vertex that share an edge (a→b in one face, b→a in the
    # other); a vertex is a pinch when its corners fall into more than one group.
    ok = ~broken
    edge_corner = np.arange(len(key))  # corner index 3 f + k holds the edge leaving faces[f, k]
    twin = order[np.minimum(rev_first, len(key) - 1)]
    face_of, twin_face = edge_corner // 3, twin // 3
    next_corner = face_of * 3 + (edge_corner % 3 + 1) % 3  # the corner of ``end`` in this face
    twin_next = twin_face * 3 + (twin % 3 + 1) % 3  # the corner of ``start`` in the twin face
    joins = np.concatenate(
        [np.stack([edge_corner, twin_next], 1)[ok], np.stack([next_corner, twin], 1)[ok]]
    )
    graph = coo_matrix(
        (np.ones(len(joins)), (joins[:, 0], joins[:, 1])), shape=(len(key), len(key))
    )
    group = connected_components(graph, directed=False)[1]
    fans = np.unique(np.stack([start, group], 1), axis=0)[:, 0]
    bad[fans[np.bincount(fans, minlength=n)[fans] > 1]] = True
    return bad


def _degenerate_faces(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """``[F]`` bool: faces with a repeated index or an area under ``1e-6`` of the median face's."""
    corners = vertices[faces]
    double_area = np.linalg.norm(
        np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
    )
    return _repeats_a_vertex(faces) | (double_area <= 1e-6 * np.median(double_area))


def _repeats_a_vertex(faces: np.ndarray) -> np.ndarray:
    """``[F]`` bool: faces with a vertex index twice."""
    return (
        (faces[:, 0] == faces[:, 1]) | (faces[:, 1] == faces[:, 2]) | (faces[:, 0] == faces[:, 2])
    )


def is_closed_manifold(mesh: trimesh.Trimesh) -> bool:
    """Every edge in exactly two faces, wound consistently, one fan per vertex, no zero area."""
    faces = np.asarray(mesh.faces)
    return len(faces) > 0 and not defect_vertices(np.asarray(mesh.vertices), faces).any()


def make_manifold(mesh: trimesh.Trimesh, max_rounds: int = 8) -> trimesh.Trimesh:
    """Repair the few local defects decimation leaves, so the mesh is a closed manifold.

    Vertices at the same (float32) position are welded, faces with a repeated index dropped, and
    pairs of faces on the same three vertices (a fin, which quadric decimation leaves when it
    folds a triangle onto its neighbour) removed. Any defect left (see :func:`defect_vertices`)
    is cut out with every face touching it, widened until each hole's rim is a simple loop, and
    each hole is closed by a fan of triangles around the rim's centroid. Returns the repaired
    mesh; check it with :func:`is_closed_manifold` (a defect can survive ``max_rounds``).
    """
    vertices, faces = _weld(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces))
    faces = faces[~_repeats_a_vertex(faces)]
    _, group, size = np.unique(
        np.sort(faces, axis=1), axis=0, return_inverse=True, return_counts=True
    )
    faces = faces[size[group.ravel()] == 1]
    for _ in range(max_rounds):
        bad = defect_vertices(vertices, faces)
        if not bad.any():
            break
        vertices, faces = _cut_and_fill(vertices, faces, bad)
    used = np.unique(faces)
    remap = np.zeros(len(vertices), dtype=np.int64)
    remap[used] = np.arange(len(used))
    return trimesh.Trimesh(vertices=vertices[used], faces=remap[faces], process=False)


def _weld(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge vertices whose float32 positions are equal (the files store float32)."""
    _, first, index = np.unique(
        vertices.astype(np.float32), axis=0, return_index=True, return_inverse=True
    )
    return vertices[first], index.ravel()[faces].astype(np.int64)


def _cut_and_fill(
    vertices: np.ndarray, faces: np.ndarray, bad: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Remove every face touching a ``bad`` vertex, then close each hole with a centroid fan.

    A rim vertex with more than one boundary edge leaving it (two holes meeting at a point) is
    cut out too, until every hole's rim is a simple loop. The rim edge ``a→b`` of a remaining
    face is closed by the new face ``(b, a, centre)``, wound like its neighbour.
    """
    n = len(vertices)
    while True:
        faces = faces[~bad[faces].any(axis=1)]
        start = faces.ravel()
        end = faces[:, [1, 2, 0]].ravel()
        key, reverse = start * n + end, end * n + start
        rim = ~np.isin(key, reverse)
        start, end = start[rim], end[rim]
        tangled = (np.bincount(start, minlength=n) > 1) | (np.bincount(end, minlength=n) > 1)
        if not tangled.any():
            break
        bad = tangled
    following = np.full(n, -1, dtype=np.int64)
    following[start] = end
    centres, fans = [], []
    done = np.zeros(n, dtype=bool)
    for first in start:
        loop, v = [], first
        while v >= 0 and not done[v]:
            done[v] = True
            loop.append(v)
            v = following[v]
        if not loop or v != first:  # done already, or not a closed rim (not on an oriented surface)
            continue
        centre = n + len(centres)
        centres.append(vertices[loop].mean(axis=0))
        a = np.array(loop)
        fans.append(np.stack([np.roll(a, -1), a, np.full(len(a), centre)], axis=1))
    if centres:
        vertices = np.concatenate([vertices, np.array(centres)])
        faces = np.concatenate([faces, *fans])
    return vertices, faces


def orient_outward(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Flip every connected part whose enclosed volume is negative, so normals point out.

    Per part is right here because the solid has no cavities: no part lies inside another.
    """
    labels, volume = _part_volumes(mesh)
    faces = np.asarray(mesh.faces).copy()
    flip = volume[labels] < 0
    faces[flip] = faces[flip][:, ::-1]
    return trimesh.Trimesh(vertices=mesh.vertices, faces=faces, process=False)


def drop_small_parts(
    mesh: trimesh.Trimesh, min_fraction: float = MIN_COMPONENT_FRACTION
) -> tuple[trimesh.Trimesh, int]:
    """Drop the connected parts that enclose under ``min_fraction`` of the largest part's volume
    (the same rule as :func:`drop_crumbs`; decimation can pinch off a tiny closed bubble).
    Returns ``(mesh, number of parts dropped)``."""
    labels, volume = _part_volumes(mesh)
    volume = np.abs(volume)
    small = volume < min_fraction * volume.max()
    if not small.any():
        return mesh, 0
    kept = trimesh.Trimesh(
        vertices=mesh.vertices, faces=np.asarray(mesh.faces)[~small[labels]], process=False
    )
    kept.remove_unreferenced_vertices()
    return kept, int(small.sum())


def _part_volumes(mesh: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray]:
    """``(label [F], signed volume [parts])``: each face's connected part and the volume each
    part encloses, ``Σ v0 · (v1 × v2) / 6`` over its faces (positive when wound outward)."""
    labels = face_components(mesh)
    corners = np.asarray(mesh.vertices)[np.asarray(mesh.faces)]
    signed = np.einsum("ij,ij->i", corners[:, 0], np.cross(corners[:, 1], corners[:, 2])) / 6.0
    return labels, np.bincount(labels, weights=signed)


def face_components(mesh: trimesh.Trimesh) -> np.ndarray:
    """Connected-component label of every face (faces sharing an edge are connected): ``[F]``."""
    pairs = mesh.face_adjacency
    n = len(mesh.faces)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


# A face is folded when its normal is more than 60° from the mean of its corner normals (the
# normals the files store): smooth shading then lights it as if it faced elsewhere, a dark speck.
FOLD_COSINE = 0.5


def folded_faces(mesh: trimesh.Trimesh) -> np.ndarray:
    """``[F]`` bool: faces whose normal is over 60° from the mean of their corner normals
    (trimesh's angle-weighted vertex normals, the ones export writes)."""
    corners = np.asarray(mesh.vertex_normals)[np.asarray(mesh.faces)].mean(axis=1)
    corners /= np.maximum(np.linalg.norm(corners, axis=1, keepdims=True), 1e-12)
    return np.einsum("ij,ij->i", np.asarray(mesh.face_normals), corners) < FOLD_COSINE


# Unfold's rounds: the first HELD_ROUNDS move vertices only along the surface; the rest, up to
# UNFOLD_ROUNDS in all while folds are left, move them freely. Most meshes are clear within 8;
# a 60-step built-in cube had one fold left after 8 and none after 9 (benchmarks/RESULTS.md,
# stop 61).
HELD_ROUNDS = 4
UNFOLD_ROUNDS = 16


def unfold(mesh: trimesh.Trimesh, max_rounds: int = UNFOLD_ROUNDS) -> trimesh.Trimesh:
    """Clear the folded faces (:func:`folded_faces`) quadric decimation leaves, in rounds.

    First the longest edge of each folded face is flipped, so a crease sliver is replaced by
    the other diagonal of its quadrilateral: faces ``(a, b, c)`` and ``(b, a, d)`` across the
    edge ``a–b`` become ``(a, d, c)`` and ``(b, c, d)``, the same four vertices and outer edges.
    A flip is made only when the edge ``c–d`` is not in the mesh already and both new faces
    face the way the old pair did (positive dot with the sum of the old faces' area vectors),
    A flip that leaves a face of the pair folded (at a steep pit or spike of the marching
    cubes surface) is undone where the round does as well without it (:func:`_unfold_round`).
    The corners of the faces still folded (a pleat of well-shaped faces) are then moved towards
    the mean of their neighbours (:func:`_relax`). In the first :data:`HELD_ROUNDS` rounds they
    move only along the surface their unfolded faces make, by at most their shortest edge a
    round: a corner of a box stays where it is, a vertex on its edge moves along the edge, one
    on a flat side within it. In the later rounds they go to the mean (a noisy surface holds its
    vertices everywhere). Each corner goes only the smallest share of that move that leaves
    the fewest folded faces round it (:func:`_shortest_steps`). A flip keeps a closed manifold
    one (it swaps the diagonal of a quadrilateral for one not in the mesh), so the only defect a
    round can leave is a face of (nearly) zero area (:func:`_degenerate_faces`): the vertices
    there are put back, and if one is still left the round is undone and ends the repair.
    Rounds repeat while folds are left, ``max_rounds`` at most. Last, the shortest edge of each
    sliver is collapsed (:func:`_collapse_slivers`, two faces fewer each), unless that leaves a
    defect or more folds. A mesh that is not a closed manifold is left as it is. Vertices no
    face uses are dropped.

    A round looks only at the faces near what it changes (:func:`_refolded`): a 50,000-face
    mesh with a few hundred folds costs a fraction of what whole-mesh checks did, for the same
    result.
    """
    return _unfold(mesh, max_rounds)[0]


def _unfold(
    mesh: trimesh.Trimesh, max_rounds: int = UNFOLD_ROUNDS
) -> tuple[trimesh.Trimesh, np.ndarray, np.ndarray]:
    """:func:`unfold`, and for each vertex of its result its index in ``mesh`` (``[V]``) and how
    far the held rounds (the first :data:`HELD_ROUNDS`) moved it (``[V]``)."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    start = vertices.copy()
    held = vertices
    faces = np.asarray(mesh.faces, dtype=np.int64)
    folded = folded_faces(mesh)
    closed = is_closed_manifold(mesh)
    for round_ in range(max_rounds):
        if not closed or not folded.any():
            break
        hold = round_ < HELD_ROUNDS
        new_vertices, new_faces, new_folded = _unfold_round(vertices, faces.copy(), folded, hold)
        bad = np.zeros(len(vertices), dtype=bool)
        bad[new_faces[_degenerate_faces(new_vertices, new_faces)].ravel()] = True
        if bad.any():  # put back the moved vertices at the defects first
            new_vertices[bad] = vertices[bad]
            if _degenerate_faces(new_vertices, new_faces).any():
                break
            new_folded = folded_faces(trimesh.Trimesh(new_vertices, new_faces, process=False))
        vertices, faces, folded = new_vertices, new_faces, new_folded
        if hold:
            held = vertices
    if closed:
        faces, folded = _clear_slivers(vertices, faces, folded)
    used = np.unique(faces)
    remap = np.zeros(len(vertices), dtype=np.int64)
    remap[used] = np.arange(len(used))
    moved = np.linalg.norm(held - start, axis=1)
    result = trimesh.Trimesh(vertices=vertices[used], faces=remap[faces], process=False)
    return result, used, moved[used]


# A sliver: a face under 1e-3 of the median face's area. Decimation leaves 0 to 12 in 8,000
# faces of the built-in shapes: needles (one edge far shorter than the others) and tiny faces
# in clusters of them (benchmarks/RESULTS.md, "Pleat vertices and slivers"). A collapse is made
# only when no face it moves turns by more than 60°. Passes and single tries are bounded so a
# noisy 50,000-face mesh decimates in about the time it did without them.
SLIVER_AREA = 1e-3
COLLAPSE_COSINE = 0.5
SLIVER_PASSES = 4
SLIVER_SINGLES = 16


def _clear_slivers(
    vertices: np.ndarray, faces: np.ndarray, folded: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(faces, folded)`` after up to :data:`SLIVER_PASSES` passes of
    :func:`_collapse_slivers`, each kept only when it leaves no defect and no more folded faces;
    a pass that does is tried again one sliver at a time (the first :data:`SLIVER_SINGLES`)."""

    def checked(collapse: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray | None:
        collapsed, kept, touched = collapse
        if len(collapsed) == len(faces) or _defect_after(vertices, collapsed, touched):
            return None
        after = _refolded(vertices, collapsed, folded[kept], touched)
        return None if after.sum() > folded.sum() else after

    for _ in range(SLIVER_PASSES):
        collapse = _collapse_slivers(vertices, faces)
        after = checked(collapse)
        if after is None:
            tried: set[tuple[int, ...]] = set()
            for _ in range(SLIVER_SINGLES):  # the indices shift after each collapse kept
                left = [f for f in _slivers(vertices, faces) if _key(faces[f]) not in tried]
                if not left:
                    break
                tried.add(_key(faces[left[0]]))
                one = _collapse_slivers(vertices, faces, left[:1])
                one_after = checked(one)
                if one_after is not None:
                    faces, folded = one[0], one_after
            break
        faces, folded = collapse[0], after
    return faces, folded


def _defect_after(vertices: np.ndarray, faces: np.ndarray, changed: np.ndarray) -> bool:
    """Whether ``faces``, a closed manifold before the faces round the vertices ``changed``
    (``[V]`` bool) were replaced, has a defect (:func:`defect_vertices`) now: one of (nearly) zero
    area anywhere, or a broken edge or fan at ``changed``, checked on the faces round them only
    (an edge or fan elsewhere is as it was)."""
    if _degenerate_faces(vertices, faces).any():
        return True
    near = changed[faces].any(axis=1)
    return bool((_edge_and_fan_defects(len(vertices), faces[near]) & changed).any())


def _key(face: np.ndarray) -> tuple[int, ...]:
    return tuple(sorted(int(v) for v in face))


def _slivers(vertices: np.ndarray, faces: np.ndarray) -> list[int]:
    """The faces under :data:`SLIVER_AREA` of the median face's area."""
    corners = vertices[faces]
    area = np.linalg.norm(
        np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1
    )
    return np.flatnonzero(area < SLIVER_AREA * np.median(area)).tolist()


def _collapse_slivers(
    vertices: np.ndarray, faces: np.ndarray, slivers: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(faces, kept [F] bool, changed [V] bool)``: ``faces`` with the shortest edge ``p–q`` of
    each sliver (:func:`_slivers`, or the faces ``slivers``) collapsed, the input faces kept (in
    order), and the vertices whose faces changed. A collapse drops the two faces on ``p–q`` and
    replaces ``q`` by ``p`` in its other faces (or ``p`` by ``q``, whichever turns the faces it
    moves less). Positions are not changed; ``q`` is left unused.

    Made only where the ends share no neighbour but the two opposite corners (else the mesh
    would pinch), those corners keep three faces or more, and every face moved keeps within
    60° of its normal (:data:`COLLAPSE_COSINE`) and is not made a sliver (it stays over
    :data:`SLIVER_AREA` of the median area, or no smaller than it was); faces next to a
    collapse wait for the next call.
    """
    area_vectors = np.cross(
        vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]]
    )
    area = np.linalg.norm(area_vectors, axis=1)
    least = SLIVER_AREA * np.median(area)
    if slivers is None:
        slivers = np.flatnonzero(area < least)
    changed = np.zeros(len(vertices), dtype=bool)
    if len(slivers) == 0:
        return faces, np.ones(len(faces), dtype=bool), changed
    faces = faces.copy()
    order = np.argsort(faces.ravel(), kind="stable")
    first = np.searchsorted(faces.ravel()[order], np.arange(len(vertices) + 1))

    def fan(v: int) -> np.ndarray:
        return order[first[v] : first[v + 1]] // 3

    dropped = np.zeros(len(faces), dtype=bool)
    touched: set[int] = set()
    for f in slivers:
        a, b, c = (int(v) for v in faces[f])
        p, q = min(
            ((a, b), (b, c), (c, a)), key=lambda e: np.linalg.norm(vertices[e[0]] - vertices[e[1]])
        )
        around = set(fan(p)) | set(fan(q))
        if (
            any(dropped[g] for g in around)
            or {int(v) for v in faces[list(around)].ravel()} & touched
        ):
            continue
        shared = [g for g in around if p in faces[g] and q in faces[g]]
        opposite = {int(v) for g in shared for v in faces[g] if v != p and v != q}
        ring_p = {int(v) for v in faces[fan(p)].ravel()} - {p}
        ring_q = {int(v) for v in faces[fan(q)].ravel()} - {q}
        if len(shared) != 2 or ring_p & ring_q != opposite or len(opposite) != 2:
            continue
        valence = np.bincount(faces[~dropped].ravel(), minlength=len(vertices))
        if min(valence[list(opposite)]) < 4:
            continue
        best = None
        for keep, gone in ((p, q), (q, p)):
            moved = [g for g in fan(gone) if g not in shared]
            new = faces[moved].copy()
            new[new == gone] = keep
            vectors = np.cross(
                vertices[new[:, 1]] - vertices[new[:, 0]], vertices[new[:, 2]] - vertices[new[:, 0]]
            )
            lengths = np.linalg.norm(vectors, axis=1)
            turn = np.einsum("ij,ij->i", vectors, area_vectors[moved]) / np.maximum(
                lengths * area[moved], 1e-300
            )
            kept = (lengths > least) | (lengths >= area[moved])  # none made a sliver
            good = kept.all() and turn.min() > COLLAPSE_COSINE
            if good and (best is None or turn.min() > best[0]):
                best = (turn.min(), moved, new)
        if best is None:
            continue
        _, moved, new = best
        faces[moved] = new
        dropped[shared] = True
        touched |= {p, q} | ring_p | ring_q
    changed[list(touched)] = True
    return faces[~dropped], ~dropped, changed


def _unfold_round(
    vertices: np.ndarray, faces: np.ndarray, folded: np.ndarray, hold: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One round of :func:`unfold` on a closed manifold whose ``folded`` faces (``[F]`` bool,
    :func:`folded_faces`) are known: flip what can be flipped (``faces`` is changed in place),
    relax the corners of the faces still folded. The round is also tried with the flips that
    left a folded face undone (each where no other flip shares its faces or made the edge it
    removed); the one leaving fewer folded faces is kept, or, as many, the one moving no vertex
    as far. Returns ``(vertices, faces, folded)`` after it."""
    fans = _Fans(faces, len(vertices))
    flips = []  # (f, g, old face f, old face g, edge removed, edge made)
    for f in np.flatnonzero(folded):
        a, b, c = _longest_edge_first(vertices, faces[f])
        g = fans.face_with_edge(b, a)
        if g is None:
            continue
        d = next(int(v) for v in faces[g] if v != a and v != b)
        if c == d or fans.has_edge(c, d):
            continue
        before = _area_vector(vertices, a, b, c) + _area_vector(vertices, b, a, d)
        after = (np.array([a, d, c]), np.array([b, c, d]))
        if min(float(_area_vector(vertices, *t) @ before) for t in after) <= 0.0:
            continue
        flips.append((f, g, faces[f].copy(), faces[g].copy(), (a, b), (c, d)))
        fans.replace(f, after[0])
        fans.replace(g, after[1])
    flipped_corners = np.zeros(len(vertices), dtype=bool)
    flipped_corners[[v for flip in flips for v in (*flip[4], *flip[5])]] = True
    options = [(faces.copy(), _refolded(vertices, faces, folded, flipped_corners))]
    still = options[0][1]
    flipped = np.bincount([h for flip in flips for h in flip[:2]], minlength=len(faces))
    undone_corners = np.zeros(len(vertices), dtype=bool)
    for f, g, old_f, old_g, gone, made in flips:
        if not (still[f] or still[g]) or flipped[f] > 1 or flipped[g] > 1:
            continue
        if fans.has_edge(*gone):  # another flip made the edge this one removed
            continue
        fans.replace(f, old_f)
        fans.replace(g, old_g)
        undone_corners[[*gone, *made]] = True
    if undone_corners.any():
        options.append((faces, _refolded(vertices, faces, still, undone_corners)))
    best = None
    for option, still in options:
        moved, left = vertices, still
        if still.any():
            moving = np.unique(option[still])
            relaxed = _relax(vertices, option, moving, still if hold else None)
            moved = _shortest_steps(vertices, relaxed, option, moving)
            changed = np.zeros(len(vertices), dtype=bool)
            changed[moving] = True
            left = _refolded(moved, option, still, changed)
        key = (int(left.sum()), float(np.linalg.norm(moved - vertices, axis=1).max()))
        if best is None or key < best[0]:
            best = (key, moved, option, left)
    return best[1], best[2], best[3]


class _Fans:
    """The faces round each vertex of ``faces``, kept up to date while faces are replaced
    (:meth:`replace`); a vertex's fan is read from the index of the faces as they were the first
    time it is asked for, which is before any replacement changed it."""

    def __init__(self, faces: np.ndarray, n_vertices: int) -> None:
        self.faces = faces
        flat = faces.ravel()
        self._order = np.argsort(flat, kind="stable")
        self._first = np.searchsorted(flat[self._order], np.arange(n_vertices + 1))
        self._fans: dict[int, set[int]] = {}

    def around(self, v: int) -> set[int]:
        fan = self._fans.get(v)
        if fan is None:
            fan = set((self._order[self._first[v] : self._first[v + 1]] // 3).tolist())
            self._fans[v] = fan
        return fan

    def face_with_edge(self, a: int, b: int) -> int | None:
        """The face with the directed edge ``a→b``, if any."""
        for h in self.around(a):
            x, y, z = self.faces[h].tolist()
            if (x, y) == (a, b) or (y, z) == (a, b) or (z, x) == (a, b):
                return h
        return None

    def has_edge(self, a: int, b: int) -> bool:
        return any(b in self.faces[h].tolist() for h in self.around(a))

    def replace(self, f: int, face: np.ndarray) -> None:
        old, new = self.faces[f].tolist(), face.tolist()
        for v in old + new:
            self.around(v)
        for v in old:
            self._fans[v].discard(f)
        self.faces[f] = face
        for v in new:
            self._fans[v].add(f)


def _refolded(
    vertices: np.ndarray, faces: np.ndarray, folded: np.ndarray, changed: np.ndarray
) -> np.ndarray:
    """``[F]`` bool: :func:`folded_faces` of ``(vertices, faces)``, given ``folded``, its value
    before the vertices ``changed`` (``[V]`` bool) moved or the faces round them were replaced.

    A face's fold depends on its normal and its corners' normals, each the angle-weighted mean
    of the normals of the faces round that corner: only the faces round the corners of the
    faces round ``changed`` can differ, and only those are computed (:func:`_local_folds`).
    """
    touched = changed[faces].any(axis=1)
    if not touched.any():
        return folded.copy()
    corners = np.zeros(len(vertices), dtype=bool)
    corners[faces[touched]] = True
    near = corners[faces].any(axis=1)
    result = folded.copy()
    result[near] = _local_folds(faces, near, len(vertices))(vertices)
    return result


def _local_folds(
    faces: np.ndarray, which: np.ndarray, n_vertices: int
) -> Callable[[np.ndarray], np.ndarray]:
    """A function of the vertex positions ``[V, 3]`` that gives :func:`folded_faces` of the
    faces ``which`` (``[F]`` bool), computed from the faces round their corners only.

    The values are the same bits: a corner's normal sums the same faces in the same order.
    """
    corners = np.zeros(n_vertices, dtype=bool)
    corners[faces[which]] = True
    support = corners[faces].any(axis=1)
    used, local = np.unique(faces[support].ravel(), return_inverse=True)
    local = local.reshape(-1, 3)
    pick = which[support]

    def folds(vertices: np.ndarray) -> np.ndarray:
        return folded_faces(trimesh.Trimesh(vertices[used], local, process=False))[pick]

    return folds


# A round moves a corner only as far as its faces need: decimation leaves a few folds at steep
# pits of the marching cubes surface (a vertex a cell or more below its neighbours), which a
# whole relaxing step fills (benchmarks/RESULTS.md, "Stop 44"). Shares tried, smallest first.
STEP_FRACTIONS = (0.125, 0.25, 0.5, 1.0)


def _shortest_steps(
    vertices: np.ndarray, relaxed: np.ndarray, faces: np.ndarray, moving: np.ndarray
) -> np.ndarray:
    """``vertices`` with each of ``moving`` moved the smallest share (of
    :data:`STEP_FRACTIONS`) of its way to ``relaxed`` that leaves the fewest folded faces round
    it, all of ``moving`` tried at each share together; the whole way when no share leaves
    fewer than staying put (a pleat that later rounds unfold)."""

    around = np.zeros(len(vertices), dtype=bool)
    around[moving] = True
    around = around[faces].any(axis=1)  # every face a count of ``moving`` can hold
    folds, fan_faces = _local_folds(faces, around, len(vertices)), faces[around]

    def folds_round(share: float) -> np.ndarray:
        trial = vertices.copy()
        trial[moving] += share * (relaxed[moving] - vertices[moving])
        return np.bincount(fan_faces[folds(trial)].ravel(), minlength=len(vertices))

    fewest = folds_round(0.0)
    chosen = np.ones(len(vertices))
    for share in STEP_FRACTIONS:
        counts = folds_round(share)
        chosen[counts < fewest] = share
        fewest = np.minimum(fewest, counts)
    return vertices + chosen[:, None] * (relaxed - vertices)


# A vertex's unfolded faces hold it in a direction when their normals lean along it by about 23°
# or more (sin² 23° = 0.15 of the mean of n nᵀ over the faces, see _relax): a flat side holds
# one direction (its normal), an edge two, a corner all three. A round moves a vertex at most its
# shortest edge. Chosen by measurement on short trained runs of the built-in shapes
# (benchmarks/RESULTS.md, "Surface moved by unfold"); a cap of a quarter or half an edge moved
# the surface less there but left folds, or let later rounds flip across a box's edge; holding
# in every round left up to 50 folds in 50,000 faces on tests/test_mesh.py's noisy fields.
HELD_SHARE = 0.15
MOVE_CAP = 1.0


def _relax(
    vertices: np.ndarray, faces: np.ndarray, moving: np.ndarray, folded: np.ndarray | None
) -> np.ndarray:
    """``vertices`` with each of ``moving`` moved towards the mean ``m`` of its edge neighbours
    (one umbrella step, all at once), within the surface its faces not ``folded`` make.

    ``C = mean(n nᵀ)`` over those faces' unit normals ``n``; the eigenvectors of ``C`` whose
    eigenvalue is over :data:`HELD_SHARE` are the directions the vertex is held in, and the
    move ``m − v`` loses its part along them (none when all its faces are folded), and is cut
    to :data:`MOVE_CAP` of the vertex's shortest edge. With ``folded`` None (the later rounds,
    for folds on a surface too noisy to hold on to) each goes to ``m``.
    """
    near = np.zeros(len(vertices), dtype=bool)
    near[moving] = True
    near = near[faces].any(axis=1)  # the faces round ``moving``, all a move here depends on
    if folded is not None:
        folded = folded[near]
    faces = faces[near]
    start, end = faces.ravel(), faces[:, [1, 2, 0]].ravel()
    total = np.zeros_like(vertices)
    np.add.at(total, start, vertices[end])
    count = np.bincount(start, minlength=len(vertices))
    relaxed = vertices.copy()
    if folded is None:
        relaxed[moving] = total[moving] / count[moving, None]
        return relaxed
    shortest = np.full(len(vertices), np.inf)
    np.minimum.at(shortest, start, np.linalg.norm(vertices[end] - vertices[start], axis=1))
    corners = vertices[faces[~folded]]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-300)
    spread = np.zeros((len(vertices), 3, 3))
    holding = np.zeros(len(vertices))
    outer = np.einsum("fi,fj->fij", normals, normals)
    for k in range(3):
        np.add.at(spread, faces[~folded, k], outer)
        np.add.at(holding, faces[~folded, k], 1.0)
    for v in moving:
        move = total[v] / count[v] - vertices[v]
        if holding[v] > 0:
            share, directions = np.linalg.eigh(spread[v] / holding[v])
            held = directions[:, share > HELD_SHARE]
            move -= held @ (held.T @ move)
        length = np.linalg.norm(move)
        if length > MOVE_CAP * shortest[v]:
            move *= MOVE_CAP * shortest[v] / length
        relaxed[v] = vertices[v] + move
    return relaxed


def _longest_edge_first(vertices: np.ndarray, face: np.ndarray) -> tuple[int, int, int]:
    """The face's corners rotated so that ``(a, b)`` is its longest edge (winding kept)."""
    a, b, c = (int(v) for v in face)
    rotations = [(a, b, c), (b, c, a), (c, a, b)]
    lengths = [np.linalg.norm(vertices[q] - vertices[p]) for p, q, _ in rotations]
    return rotations[int(np.argmax(lengths))]


def _area_vector(vertices: np.ndarray, a: int, b: int, c: int) -> np.ndarray:
    """Twice the area of the face ``(a, b, c)`` times its unit normal, ``u × w`` with
    ``u = b − a``, ``w = c − a`` (written out: ``np.cross`` costs ~20× more on one pair)."""
    u0, u1, u2 = vertices[b] - vertices[a]
    w0, w1, w2 = vertices[c] - vertices[a]
    return np.array([u1 * w2 - u2 * w1, u2 * w0 - u0 * w2, u0 * w1 - u1 * w0])


def decimate(mesh: trimesh.Trimesh, target_faces: int) -> trimesh.Trimesh:
    """Quadric-error decimation to at most ``target_faces`` faces, kept a closed manifold.

    fast-simplification collapses edges without checking that the result stays a manifold: on
    trained built-in shapes it leaves a few fins (two triangles folded onto each other, up to
    15 in 50,000 faces), on a surface noisy at the scale of a cell a few hundred defects. They are
    repaired afterwards (:func:`make_manifold`), and any tiny bubble a collapse pinched off is
    dropped. Quadric decimation also folds a few faces at creases and on noisy patches (8 to 22
    of 8,000 on short trained runs of the built-in shapes turned over 60° from their corner
    normals, up to 100°: dark specks under smooth shading); :func:`unfold` flips or relaxes
    them away, and collapses the slivers it leaves (two faces fewer each).

    At the tip of a narrow pit (one cell wide, narrower than a face) clearing the folds lifts
    the tip up the pit and leaves the marching-cubes surface there uncovered
    (:func:`_lifted_tips`). Where unfold left no folded face and lifted such tips, the
    farthest :data:`TIP_MAX` are put back and refined on a trial (:func:`_refine_tips`: each
    kept only where it brings the mesh nearer the marching-cubes surface, turns no face
    inward and adds no fold; all of them only where they bring the tips clearly nearer). If
    the trial wins, ``mesh`` is decimated again as many faces under the target as the
    refinement takes, and its tips refined the same way within the target; that is returned
    when it is clearly nearer round the first mesh's tips too, else the first decimation is.
    A mesh without lifted tips is decimated once, as before.

    Should a defect survive the repair, the undecimated mesh is returned (and a warning
    logged): the output is a closed manifold whenever the input is. No-op when already at or
    below the target.
    """
    if target_faces <= 0 or len(mesh.faces) <= target_faces:
        return mesh
    first = _decimate_once(mesh, target_faces)
    if first is None:
        log.warning("decimation left a non-manifold mesh; keeping all %d faces", len(mesh.faces))
        return mesh
    simplified, start, moved = first
    no_tips = np.zeros(0, dtype=np.int64)
    tips = no_tips if folded_faces(simplified).any() else _lifted_tips(simplified, start, moved)
    if len(tips):
        # Refine where a trial on this mesh wins; make room for it by decimating again.
        reference = _Reference(mesh)
        if _refine_tips(simplified, start, tips, reference, None) is not None:
            valence = np.bincount(np.asarray(simplified.faces).ravel(), minlength=len(start))
            reserve = int(TIP_FACES * valence[tips[:TIP_MAX]].sum())
            # A small target leaves no room (fast-simplification refuses a target ≤ 0 with a
            # ValueError): the first decimation is kept.
            again = None
            if target_faces - reserve >= MIN_DECIMATE:
                again = _decimate_once(mesh, target_faces - reserve)
            if again is not None and not folded_faces(again[0]).any():
                current, current_start, current_moved = again
                current_tips = _lifted_tips(current, current_start, current_moved)
                refined = _refine_tips(
                    current, current_start, current_tips, reference, target_faces
                )
                if refined is not None and _tips_nearer(
                    simplified, refined, start, tips, reference
                ):
                    simplified = refined
    return drop_small_parts(orient_outward(simplified))[0]


def _decimate_once(
    mesh: trimesh.Trimesh, target_faces: int
) -> tuple[trimesh.Trimesh, np.ndarray, np.ndarray] | None:
    """fast-simplification to ``target_faces``, :func:`make_manifold`, :func:`_unfold`: the mesh,
    where each vertex was before unfold, how far the held rounds moved it; ``None`` when the
    result is not a closed manifold."""
    vertices, faces = fast_simplification.simplify(
        np.asarray(mesh.vertices, np.float64),
        np.asarray(mesh.faces, np.int32),
        target_count=target_faces,
    )
    repaired = make_manifold(trimesh.Trimesh(vertices=vertices, faces=faces, process=False))
    result, used, moved = _unfold(repaired)
    if not is_closed_manifold(result):
        return None
    return result, np.asarray(repaired.vertices)[used], moved


# A pit tip lifted by unfold: a vertex the held rounds moved over TIP_MOVE median edges whose
# place before unfold is now over TIP_GAP median edges from the mesh (it slid up a narrow pit
# rather than along the surface). TIP_MAX of them, farthest first, are refined; each of a tip's
# spokes is split in TIP_SPLITS + 1, so each face round it becomes 2 TIP_SPLITS + 1
# (TIP_FACES = 2 TIP_SPLITS more).
TIP_MOVE = 0.75
TIP_GAP = 0.5
TIP_MAX = 4
TIP_SPLITS = 2
TIP_FACES = 2 * TIP_SPLITS
TIP_SIDE = 0.25
TIP_GAIN = 0.75


def _tip_radius(mesh: trimesh.Trimesh, start: np.ndarray, tip: int) -> float:
    """The radius of the ball round ``start[tip]`` that holds the tip's ring and its place."""
    vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    ring = np.unique(faces[(faces == tip).any(axis=1)])
    return float(np.linalg.norm(vertices[ring] - start[tip], axis=1).max())


def _median_edge(vertices: np.ndarray, faces: np.ndarray) -> float:
    return float(
        np.median(np.linalg.norm(vertices[faces] - vertices[np.roll(faces, 1, 1)], axis=2))
    )


def _lifted_tips(mesh: trimesh.Trimesh, start: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """The vertices of ``mesh`` (an :func:`_unfold` result with its ``start`` and ``moved``)
    that unfold lifted off the surface, farthest first: moved over ``TIP_MOVE`` median edges
    ``e`` by the held rounds, and ``d(start_v, mesh) > TIP_GAP · e``."""
    vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    edge = _median_edge(vertices, faces)
    candidates = np.flatnonzero(moved > TIP_MOVE * edge)
    if len(candidates) == 0:
        return candidates
    gap = _SurfaceDistance(vertices, faces)(start[candidates])[0]
    order = np.argsort(-gap, kind="stable")
    return candidates[order][gap[order] > TIP_GAP * edge]


class _SurfaceDistance:
    """Distances from points to a triangle mesh's surface, exactly. A face ``g`` with centroid
    ``c_g`` lies in the ball of radius ``r_g`` (its largest centroid-to-corner distance) round
    ``c_g``, so its distance from a point ``p`` is at least ``|p − c_g| − r_g``; the nearest
    centroid's face is at most ``d_1 = min_g |p − c_g|`` away. So the closest point of ``p``
    lies on a face with ``|p − c_g| − r_g ≤ d_1``: those within ``d_1 + max_g r_g`` of ``p`` are
    found in a tree of the centroids, and only those that pass their own ``r_g`` are tried
    (a decimated mesh's large flat faces set ``max_g r_g``: the test drops ~85 % of the
    candidates of a tip's measure, which cost most of a decimation at 256^3)."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray) -> None:
        self.triangles = vertices[faces]
        self.centroids = self.triangles.mean(axis=1)
        self.radii = np.linalg.norm(self.triangles - self.centroids[:, None], axis=2).max(axis=1)
        self.radius = float(self.radii.max(initial=0.0))
        self.tree = cKDTree(self.centroids)

    def __call__(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(distance [P], nearest face [P], closest point [P, 3])``."""
        if len(points) == 0:
            return np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros((0, 3))
        first, _ = self.tree.query(points)
        lists = self.tree.query_ball_point(points, first + self.radius + 1e-12)
        owner = np.repeat(np.arange(len(points)), [len(c) for c in lists])
        candidates = np.concatenate([np.asarray(c, dtype=np.int64) for c in lists])
        # The margin keeps a face whose bound passes d_1 by rounding alone (it cannot be nearer).
        lower = np.linalg.norm(points[owner] - self.centroids[candidates], axis=1)
        near = lower - self.radii[candidates] <= first[owner] * (1.0 + 1e-9) + 1e-12
        owner, candidates = owner[near], candidates[near]
        closest = trimesh.triangles.closest_point(self.triangles[candidates], points[owner])
        gap = np.linalg.norm(closest - points[owner], axis=1)
        order = np.lexsort((gap, owner))
        firsts = order[np.searchsorted(owner[order], np.arange(len(points)))]
        return gap[firsts], candidates[firsts], closest[firsts]


def _refine_tips(
    mesh: trimesh.Trimesh,
    start: np.ndarray,
    tips: np.ndarray,
    reference: _Reference,
    target_faces: int | None,
) -> trimesh.Trimesh | None:
    """Refine the first :data:`TIP_MAX` of ``tips`` (:func:`_lifted_tips`, farthest first) one
    at a time (:func:`_refine_tip`), each only while the faces stay within ``target_faces``
    (``None``: no limit). ``None`` when what is kept does not make the tips clearly nearer
    (:func:`_tips_nearer`)."""
    tips = tips[:TIP_MAX]
    current, current_start = mesh, start
    kept = 0
    for tip in tips:
        valence = int((np.asarray(current.faces) == tip).any(axis=1).sum())
        if target_faces is not None and len(current.faces) + TIP_FACES * valence > target_faces:
            continue
        refined = _refine_tip(current, current_start, int(tip), reference)
        if refined is not None:
            current, current_start = refined
            kept += 1
    if kept == 0 or not _tips_nearer(mesh, current, start, tips, reference):
        return None
    return current


def _tips_nearer(
    mesh: trimesh.Trimesh,
    refined: trimesh.Trimesh,
    start: np.ndarray,
    tips: np.ndarray,
    reference: _Reference,
) -> bool:
    """Whether ``refined`` is clearly nearer the marching-cubes surface than ``mesh`` round the
    tips of ``mesh``: over the balls of :func:`_refine_tip`, the largest two-sided distance
    falls to ``TIP_GAIN`` of what it was or less, and the faces turned inward are no more."""
    balls = [(start[t], _tip_radius(mesh, start, int(t))) for t in tips[:TIP_MAX]]
    before = [_tip_measure(mesh, *ball, reference) for ball in balls]
    after = [_tip_measure(refined, *ball, reference) for ball in balls]
    log.debug("round the tips before %s, after %s", before, after)
    inward = sum(m[0] for m in after) <= sum(m[0] for m in before)
    return inward and max(m[1] for m in after) <= TIP_GAIN * max(m[1] for m in before)


class _Reference:
    """The marching-cubes surface (closed, facing out) a refinement is measured against: its
    vertices, the distance to it from any point, and which side of it a point is on."""

    def __init__(self, mesh: trimesh.Trimesh) -> None:
        self.vertices = np.asarray(mesh.vertices, dtype=np.float64)
        self.faces = np.asarray(mesh.faces)
        self.tree = cKDTree(self.vertices)
        self.distance = _SurfaceDistance(self.vertices, self.faces)
        self.edge = _median_edge(self.vertices, self.faces)
        self.face_normals = np.asarray(mesh.face_normals)
        self.vertex_normals = np.asarray(mesh.vertex_normals)  # angle-weighted
        edges = np.sort(self.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
        _, edge_of = np.unique(edges[:, 0] * len(self.vertices) + edges[:, 1], return_inverse=True)
        self.edge_of = edge_of.reshape(-1, 3)  # [F, 3]: the edge (k, k+1) of each face
        self.edge_normals = np.zeros((int(edge_of.max()) + 1, 3))
        np.add.at(self.edge_normals, self.edge_of.ravel(), np.repeat(self.face_normals, 3, 0))

    def inside(self, points: np.ndarray) -> np.ndarray:
        """``[P]`` bool: the points inside the surface, ``(p − q) · n < 0`` with ``q`` the closest
        point and ``n`` the angle-weighted pseudo-normal of the face, edge or vertex ``q`` lies on
        (Bærentzen and Aanæs, 2005: exact for a closed manifold)."""
        _, face, closest = self.distance(points)
        corners = self.vertices[self.faces[face]]
        bary = trimesh.triangles.points_to_barycentric(corners, closest)
        on = bary > 1e-9  # the corners whose weight is not zero
        normal = self.face_normals[face].copy()
        edge = on.sum(axis=1) == 2
        if edge.any():  # the edge opposite the corner k of zero weight: (k+1, k+2)
            k = (np.argmin(on[edge], axis=1) + 1) % 3
            normal[edge] = self.edge_normals[self.edge_of[face[edge], k]]
        vertex = on.sum(axis=1) <= 1
        if vertex.any():
            k = np.argmax(bary[vertex], axis=1)
            normal[vertex] = self.vertex_normals[self.faces[face[vertex], k]]
        return np.einsum("ij,ij->i", points - closest, normal) < 0


def _refine_tip(
    mesh: trimesh.Trimesh, start: np.ndarray, tip: int, reference: _Reference
) -> tuple[trimesh.Trimesh, np.ndarray] | None:
    """Put ``tip`` back where decimation left it, split each of its spokes in
    ``TIP_SPLITS + 1`` on the straight line to its neighbour, run unfold's rounds again, and
    keep the result only when, in the ball ``B`` round the tip's first place that holds its
    ring and its lifted place, all of these hold:

    * nearer: ``max(max_{m ∈ M∩B} d(m, mesh), max_{v ∈ V∩B} d(v, M))`` falls, where ``M`` is the
      marching-cubes surface (its vertices in ``B``) and ``V`` the mesh's vertices;
    * no face turned inward: faces in ``B`` (by centroid ``c``, unit normal ``n``) with
      ``c + δ n`` inside the marching-cubes solid and ``c − δ n`` outside (their front faces
      into it), ``δ = TIP_SIDE`` of its median edge (:meth:`_Reference.inside`), are no more;
    * no more folded faces in the whole mesh, one closed manifold still, and no vertex outside
      ``B`` moved.

    Returns ``(mesh, start)`` (``start`` extended by the new vertices' places), or ``None``.
    """
    vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    fan = np.flatnonzero((faces == tip).any(axis=1))
    ring = np.setdiff1d(np.unique(faces[fan]), [tip])
    origin = start[tip]
    radius = _tip_radius(mesh, start, tip)
    new_vertices = [vertices.copy()]
    new_vertices[0][tip] = origin
    spoke = {}
    count = len(vertices)
    for k in ring:
        steps = np.arange(1, TIP_SPLITS + 1)[:, None] / (TIP_SPLITS + 1)
        new_vertices.append(origin + steps * (vertices[k] - origin))
        spoke[int(k)] = [tip, *range(count, count + TIP_SPLITS), int(k)]
        count += TIP_SPLITS
    new_faces = []
    for f in fan:
        a, b, c = (int(x) for x in faces[f])
        while a != tip:
            a, b, c = b, c, a
        sb, sc = spoke[b], spoke[c]
        new_faces.append([tip, sb[1], sc[1]])
        for s in range(1, TIP_SPLITS + 1):
            new_faces += [[sb[s], sb[s + 1], sc[s + 1]], [sb[s], sc[s + 1], sc[s]]]
    keep = np.ones(len(faces), dtype=bool)
    keep[fan] = False
    split = trimesh.Trimesh(
        np.concatenate(new_vertices),
        np.concatenate([faces[keep], np.asarray(new_faces, dtype=np.int64)]),
        process=False,
    )
    refined, used, _ = _unfold(split)
    if not is_closed_manifold(refined):
        log.debug("tip %d: not kept, not a closed manifold", tip)
        return None
    after = np.asarray(refined.vertices)
    outside = np.flatnonzero(np.linalg.norm(vertices - origin, axis=1) > radius)
    where = np.minimum(np.searchsorted(used, outside), len(used) - 1)
    if (used[where] != outside).any() or (after[where] != vertices[outside]).any():
        log.debug("tip %d: not kept, a vertex outside its ball moved", tip)
        return None
    if folded_faces(refined).sum() > folded_faces(mesh).sum():
        log.debug("tip %d: not kept, more folded faces", tip)
        return None
    inward, distance = _tip_measure(refined, origin, radius, reference)
    inward_before, distance_before = _tip_measure(mesh, origin, radius, reference)
    log.debug(
        "tip %d: inward %d -> %d, distance %.4g -> %.4g",
        tip,
        inward_before,
        inward,
        distance_before,
        distance,
    )
    if inward > inward_before or distance >= distance_before:
        return None
    extended = np.concatenate([start, np.asarray(split.vertices)[len(vertices) :]])
    return refined, extended[used]


def _tip_measure(
    mesh: trimesh.Trimesh, origin: np.ndarray, radius: float, reference: _Reference
) -> tuple[int, float]:
    """``(faces turned inward, two-sided largest distance)`` in the ball ``(origin, radius)``
    (:func:`_refine_tip`)."""
    vertices, faces = np.asarray(mesh.vertices), np.asarray(mesh.faces)
    centroids = vertices[faces].mean(axis=1)
    near = np.linalg.norm(centroids - origin, axis=1) <= radius
    step = TIP_SIDE * reference.edge * np.asarray(mesh.face_normals)[near]
    front = reference.inside(centroids[near] + step)
    back = reference.inside(centroids[near] - step)
    inward = int((front & ~back).sum())
    points = reference.vertices[reference.tree.query_ball_point(origin, radius)]
    to_mesh = _SurfaceDistance(vertices, faces)(points)[0]
    mine = vertices[np.linalg.norm(vertices - origin, axis=1) <= radius]
    to_reference = reference.distance(mine)[0]
    return inward, float(max(to_mesh.max(initial=0.0), to_reference.max(initial=0.0)))


# ---------------------------------------------------------------------------------------------
# What the mesh is: its solid on the grid, and the figures export reports.


def voxelize_solid(mesh: trimesh.Trimesh, resolution: int, bound: float) -> np.ndarray:
    """``[R, R, R]`` bool: the cells of the grid whose centres the mesh encloses, cavities filled.

    Each column of cell centres along z is crossed by the mesh some number of times; a centre is
    inside when an odd number of crossings lie below it (parity, so it needs no orientation).
    Enclosed empty regions are then filled (``binary_fill_holes``), so an inner shell counts as
    solid, as the renders see it. The columns are shifted by ~1e-4 of a cell so that they do not
    pass exactly through the vertices marching cubes puts on grid lines.

    A column no face crosses is empty, and joins the grid's border by its own ends: only the
    box of the columns the mesh crosses is counted and filled (the same cells as the whole grid:
    a region of that box touching its side touches an empty column outside it). At 256^3 that
    box of a decimated object is a fraction of the grid, whose filling cost most of the measure.
    """
    h = 2.0 * bound / resolution
    shift = np.array([1.234e-4, 3.117e-4]) * h
    columns = (np.asarray(mesh.vertices)[:, :2] + bound - shift) / h  # column i centre: i + ½
    faces = np.asarray(mesh.faces)
    z = np.asarray(mesh.vertices)[:, 2]
    centres = grid_centres(resolution, bound).astype(np.float64)
    solid = np.zeros((resolution, resolution, resolution), dtype=bool)
    crossings = []
    for face, x, y, bary in _covered_pixels(columns[faces], resolution):
        height = np.einsum("nk,nk->n", bary, z[faces[face]])
        above = np.searchsorted(centres, height)  # the first cell whose centre is above it
        if len(x):  # a chunk of faces between the columns crosses none
            crossings.append((x, y, above))
    if not crossings:  # no faces, or a mesh between the columns: no cell is inside
        return solid
    x, y, above = (np.concatenate(values) for values in zip(*crossings, strict=True))
    x0, y0 = int(x.min()), int(y.min())
    nx, ny = int(x.max()) + 1 - x0, int(y.max()) + 1 - y0
    index = ((x - x0) * ny + (y - y0)) * (resolution + 1) + above
    flips = np.bincount(index, minlength=nx * ny * (resolution + 1)) % 2
    parity = np.bitwise_xor.accumulate(
        flips.astype(np.uint8).reshape(nx, ny, resolution + 1), axis=2
    )
    solid[x0 : x0 + nx, y0 : y0 + ny] = ndimage.binary_fill_holes(
        parity[:, :, :resolution].astype(bool)
    )
    return solid


@dataclass
class MeshStats:
    """What export made: counts, topology, volume (world units³), and the voxel IoU between
    the mesh's solid and the field's occupancy on the extraction grid."""

    faces: int
    vertices: int
    components: int
    watertight: bool
    manifold: bool
    volume: float
    iou_field: float


def mesh_stats(mesh: trimesh.Trimesh, occupancy: np.ndarray, bound: float) -> MeshStats:
    """Measure ``mesh`` against ``occupancy`` (``[R, R, R]`` bool, :func:`render_occupancy`).

    watertight: every edge has exactly two faces; manifold: :func:`is_closed_manifold` (also
    consistent winding and one fan per vertex); ``iou_field = |M ∩ O| / |M ∪ O|`` with ``M``
    from :func:`voxelize_solid` on the same grid.
    """
    solid = voxelize_solid(mesh, occupancy.shape[0], bound)
    union = np.logical_or(solid, occupancy).sum()
    iou = float(np.logical_and(solid, occupancy).sum() / union) if union else 0.0
    edges = np.sort(np.asarray(mesh.edges), axis=1)
    _, per_edge = np.unique(edges, axis=0, return_counts=True)
    return MeshStats(
        faces=len(mesh.faces),
        vertices=len(mesh.vertices),
        components=int(face_components(mesh).max() + 1) if len(mesh.faces) else 0,
        watertight=bool(len(per_edge) and (per_edge == 2).all()),
        manifold=is_closed_manifold(mesh),
        volume=float(mesh.volume),
        iou_field=iou,
    )


def chart_padding(texture_size: int) -> int:
    """Texels between two charts, and between a chart and the texture's border, at a texture
    of ``texture_size`` pixels: ``max(1, S / 256)`` (1 at 256 px, 4 at 1024, 8 at 2048).

    A viewer reads mip level ``k`` where the texture is drawn ``2^k`` times smaller than ``S``
    on screen, and a bilinear lookup there reads the level's texels within one of it: level-0
    texels up to ``2^k`` away. Charts ``p`` texels apart (xatlas pads each by ``p``, so a
    texel of another chart is over ``2 p`` away) and from the border (so the border joins two
    charts into the same gap under REPEAT, glTF's default wrap mode and the OBJ's, as under
    the GLB's CLAMP_TO_EDGE) read their own texels on levels up to ``log2 p``: ``S / 256``
    keeps the chart edges clean wherever the texture is drawn at 256 px or more. Measured
    (benchmarks/texture_edges.py, share of chart-edge lookups reading another chart): at
    1024 px on level 2, 0 % with 4 texels, 2.1 % with 2 (a noisy torus's 119 charts); the
    field's colour at a 2,323-chart ball's edges on level 2, 0.0 % of lookups over 16 levels
    off with 4 texels, 2.3 % with 2, with the same error at face centres (0.3 levels).
    Below 512 px a texture is mostly drawn larger than itself (level 0, clean with 1 texel),
    and 2 texels cost what shows there: the torus's charts covered 30 % of a 128 px texture
    with 1 texel, 15 % with 2, and the README cube's face centres were 2.4 levels off at
    256 px with 1, 2.7 with 2 (5.6 and 6.8 at 128 px)."""
    return max(1, texture_size // 256)


# How many scales :func:`repack_charts` tries (a bisection): the largest that fits is found
# within 1.2 / 2^8 of the atlas's own scale, 0.5 % (10 packs of the README cube's 253 charts
# at 1024 px: 1.1 s of CPU; xatlas's charts for its 8,000 faces, once: ~1 s).
REPACK_STEPS = 8


def unwrap_uv(
    mesh: trimesh.Trimesh, texture_size: int = 1024, padding: int | None = None
) -> tuple[trimesh.Trimesh, np.ndarray]:
    """A UV atlas from xatlas. Vertices on chart seams are split, so the mesh is returned too.

    Charts are packed into a ``texture_size`` texture ``S`` with ``padding`` ``p`` texels
    (``None``: :func:`chart_padding`) between them and between them and the texture's border,
    on the texture's texel grid, so a bilinear or mip-mapped lookup at a chart's edge reads its
    own texels (the bake dilates its colour into the gutter), never a neighbour's or, across
    the border, the opposite edge's.

    xatlas cuts and flattens the charts, then packs them into an atlas of its own size (~1.2-1.4×
    the one asked for: 0.36 texels from the border at 256 px once scaled into it) and keeps no
    padding at the atlas's outer edges. So its charts, in its texels, are packed again, at the
    largest scale that fits (:func:`repack_charts`), into ``S − 2p`` texels, and offset by ``p``.
    Where no scale fits (each chart takes at least ``(1 + 2p)²`` texels: a noisy torus's 119
    charts do not fit 32 px) the charts are stretched over the texture as xatlas packed them,
    closer than ``p``, their outermost UVs on the outermost texels' centres (a bilinear lookup
    on the texture itself reads no texel across the border; its mip levels do), and a warning
    names a size that fits them.

    Returns ``(mesh, uv)`` with ``uv: [V, 2]`` in [0, 1], origin at the image's bottom-left (the
    OBJ / trimesh convention; trimesh flips ``v`` itself when writing glTF). Vertex normals are
    those of the welded input, so shading stays smooth across the seams.
    """
    # xatlas leaves out of every chart (all three UVs (0, 0): the texture's corner colour) each
    # face of area ≤ FLT_EPSILON (1.2e-7) in the mesh's units: the slivers a decimation leaves
    # in a mesh ±1 across. Measured in median edges the UVs are the same (xatlas sizes the
    # charts to the texture) and only faces of no area fall under that.
    lengths = mesh.edges_unique_length
    median = float(np.median(lengths)) if len(lengths) else 0.0
    positions = (mesh.vertices / (median if median > 0 else 1.0)).astype(np.float32)
    padding = chart_padding(texture_size) if padding is None else padding
    inner = max(1, texture_size - 2 * padding)
    atlas = xatlas.Atlas()
    atlas.add_mesh(positions, mesh.faces.astype(np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution, pack.padding = inner, padding
    atlas.generate(xatlas.ChartOptions(), pack)
    if atlas.atlas_count != 1:  # the charts overflowed one texture: let xatlas size a single one
        pack.resolution = 0
        atlas = xatlas.Atlas()
        atlas.add_mesh(positions, mesh.faces.astype(np.uint32))
        atlas.generate(xatlas.ChartOptions(), pack)
    vmapping, faces, uv = atlas[0]
    unwrapped = trimesh.Trimesh(
        vertices=mesh.vertices[vmapping],
        faces=faces.astype(np.int64),
        vertex_normals=mesh.vertex_normals[vmapping],
        process=False,
    )
    texels = uv * [atlas.width, atlas.height]
    packed = repack_charts(texels, faces, inner, padding)
    if packed is not None:
        return unwrapped, (padding + packed) / texture_size
    log.warning(
        "the UV atlas's %d charts do not fit a %d px texture %d texel%s apart: they are packed "
        "closer, so colours at their edges blend (%s)",
        atlas.chart_count,
        texture_size,
        padding,
        "" if padding == 1 else "s",
        _size_that_fits(texels, faces, texture_size),
    )
    # xatlas's outermost UVs, half a texel in from its W × H, go to the texture's half texel.
    sides = texels.max(axis=0, initial=0.5) + 0.5
    stretch = (texture_size - 1) / np.maximum(sides - 1, 1e-9)
    return unwrapped, (0.5 + (texels - 0.5) * stretch) / texture_size


def repack_charts(
    texels: np.ndarray, faces: np.ndarray, size: int, padding: int
) -> np.ndarray | None:
    """The charts of an atlas, ``texels: [V, 2]`` in its texels (``faces: [F, 3]``; a chart is
    a connected part), packed again by xatlas (``add_uv_mesh``: its packer alone) into
    ``size × size`` texels with ``padding`` texels between them, at one scale for all: the
    largest that fits, bisected over ``(0, 1.2 √(S² / (W H))]`` of the atlas's ``W × H`` in
    :data:`REPACK_STEPS` steps. Returns ``[V, 2]`` in texels of that texture, within
    ``[½, size − ½]`` (xatlas keeps chart corners half a texel in), or ``None`` where no
    scale tried fits."""
    width, height = texels.max(axis=0, initial=0.0) + 0.5
    low, high = 0.0, 1.2 * size / np.sqrt(width * height)
    best = None
    for _ in range(REPACK_STEPS):
        scale = 0.5 * (low + high)
        atlas = xatlas.Atlas()
        atlas.add_uv_mesh(texels.astype(np.float32), faces.astype(np.uint32))
        pack = xatlas.PackOptions()
        pack.resolution, pack.padding, pack.texels_per_unit = size, padding, scale
        atlas.generate(xatlas.ChartOptions(), pack)
        vmapping, repacked, uv = atlas[0]
        if atlas.atlas_count == 1 and np.array_equal(repacked, faces):
            best = np.empty_like(texels, dtype=np.float64)
            best[vmapping] = uv * [atlas.width, atlas.height]
            low = scale
        else:
            high = scale
    return best


def _size_that_fits(texels: np.ndarray, faces: np.ndarray, texture_size: int) -> str:
    """Where the charts of :func:`unwrap_uv` fit with their padding: ``--texture-size N`` for
    the smallest ``N = 2^k S`` up to 8192 that takes them, for a warning."""
    size = 2 * texture_size
    while size <= 8192:
        padding = chart_padding(size)
        if repack_charts(texels, faces, size - 2 * padding, padding) is not None:
            return f"--texture-size {size} fits them"
        size *= 2
    return "no --texture-size up to 8192 fits them"


# A surface point "stands in empty space" when one cell of the field around it is under this
# opacity (1 − exp(−σ·cell)). Such points are where the solid (the cells light from the six
# axis directions does not reach) reaches past the matter, as over a pit: the field's albedo
# there was never trained (pale specks: 2.7 % of the texels of benchmarks/RESULTS.md's green
# sphere, 0.3 % with this).
EMPTY_OPACITY = 0.05
# How far inward (cells) and how finely (samples a cell) such a point looks for the matter.
INWARD_CELLS = 8
INWARD_SAMPLES_PER_CELL = 2


@torch.no_grad()
def query_surface_albedo(
    field: torch.nn.Module,
    points: np.ndarray,
    normals_of: Callable[[np.ndarray], np.ndarray],
    cell: float | None,
    chunk: int = 1 << 16,
) -> np.ndarray:
    """The albedo ``[N, 3]`` in [0, 1] of the matter at surface ``points: [N, 3]``.

    Where the field has matter at a point (one cell's opacity ``1 − exp(−σ(x)·cell)`` at least
    :data:`EMPTY_OPACITY`) it is ``albedo(x)``. Elsewhere the point stands in empty space and
    the colour is what a ray entering the surface there along its inward normal ``−n`` sees,
    composited over :data:`INWARD_CELLS` cells in ``K`` samples ``x_i = x − t_i n``,
    ``t_i = (i + ½) δ``:

        C = Σ_i w_i a_i / Σ_i w_i,  w_i = T_i (1 − exp(−σ_i δ)),  T_i = Π_{j<i} exp(−σ_j δ),

    kept only where that ray meets matter (``Σ w_i`` at least :data:`EMPTY_OPACITY`).
    ``normals_of(index: [P]) -> [P, 3]``: the outward unit normals of the points ``index``,
    asked only for the points in empty space (a texture's texels would need 24 B each);
    ``cell``: the export grid's cell size (``None``: the albedo at the points as they are)."""
    device = field_device(field)
    albedo = np.empty((len(points), 3), dtype=np.float32)
    empty = np.zeros(len(points), dtype=bool)
    for start in tqdm(
        range(0, len(points), chunk), desc="albedo", leave=False, unit="chunk", **bar_options()
    ):
        x = torch.from_numpy(points[start : start + chunk].astype(np.float32)).to(device)
        sigma, rgb = field(x)
        albedo[start : start + chunk] = rgb.float().clamp(0, 1).cpu().numpy()
        if cell is not None:
            opacity = 1.0 - torch.exp(-sigma.double().clamp(min=0) * cell)
            empty[start : start + chunk] = (opacity < EMPTY_OPACITY).cpu().numpy()
    samples = INWARD_CELLS * INWARD_SAMPLES_PER_CELL
    delta = (cell or 0.0) / INWARD_SAMPLES_PER_CELL
    t = (np.arange(samples) + 0.5) * delta
    per_chunk = max(1, chunk // samples)
    in_empty_space = np.flatnonzero(empty)
    # Its own bar: each point here costs K queries, and where the field is soft (an early
    # checkpoint) every point of a 1024 px texture can be one, 16× the work "albedo" counted.
    chunks = range(0, len(in_empty_space), per_chunk)
    for start in tqdm(
        chunks, desc="albedo inward", leave=False, unit="chunk", disable=not chunks, **bar_options()
    ):
        index = in_empty_space[start : start + per_chunk]
        x = points[index, None, :] - t[None, :, None] * normals_of(index)[:, None, :]  # [P, K, 3]
        sigma, rgb = field(torch.from_numpy(x.reshape(-1, 3).astype(np.float32)).to(device))
        sigma = sigma.double().clamp(min=0).cpu().numpy().reshape(len(index), samples)
        rgb = rgb.float().clamp(0, 1).cpu().numpy().reshape(len(index), samples, 3)
        alpha = 1.0 - np.exp(-sigma * delta)
        through = np.cumprod(np.concatenate([np.ones((len(index), 1)), 1.0 - alpha[:, :-1]], 1), 1)
        weight = through * alpha
        total = weight.sum(axis=1)
        met = total >= EMPTY_OPACITY
        seen = (weight[met, :, None] * rgb[met]).sum(axis=1) / total[met, None]
        albedo[index[met]] = seen.astype(np.float32)
    return albedo


def rasterize_uv(
    uv: np.ndarray, faces: np.ndarray, size: int, chunk: int = 1 << 22
) -> tuple[np.ndarray, np.ndarray]:
    """Which triangle covers each texel centre of a ``size × size`` texture, and where in it.

    Texel (row r, column c) has its centre at ``u = (c + ½) / S``, ``v = 1 − (r + ½) / S``.

    uv: ``[V, 2]``, faces: ``[F, 3]``. Returns ``face: [S, S]`` (−1 where no triangle covers the
    texel) and ``barycentric: [S, S, 3]``.
    """
    pixel = np.stack([uv[:, 0] * size, (1.0 - uv[:, 1]) * size], axis=-1)  # (x, y) in texel units
    face_of = np.full((size, size), -1, dtype=np.int64)
    bary = np.zeros((size, size, 3), dtype=np.float64)
    for face, x, y, weights in _covered_pixels(pixel[faces], size, chunk):
        face_of[y, x] = face
        bary[y, x] = weights
    return face_of, bary


def _covered_pixels(
    corners: np.ndarray, size: int, chunk: int = 1 << 22
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The pixel centres of a ``size × size`` grid inside each triangle, many triangles at once.

    corners: ``[F, 3, 2]`` in pixel units, pixel ``(x, y)`` centred at ``(x + ½, y + ½)``. For each
    triangle the pixels of its bounding box are tested with barycentric coordinates
    ``λ = (λ0, λ1, λ2)``, ``p = Σ λ_k corner_k``, inside when all ``λ_k ≥ 0``; the candidates of
    many triangles are enumerated at once, about ``chunk`` at a time. Yields ``(face [n], x [n],
    y [n], barycentric [n, 3])``; a triangle of zero area covers nothing.
    """
    lo = np.clip(np.floor(corners.min(axis=1) - 0.5), 0, size - 1).astype(np.int64)
    hi = np.clip(np.ceil(corners.max(axis=1) - 0.5), 0, size - 1).astype(np.int64)
    width, height = hi[:, 0] - lo[:, 0] + 1, hi[:, 1] - lo[:, 1] + 1
    count = width * height
    ends = np.cumsum(count)
    start = 0
    while start < len(corners):
        stop = max(int(np.searchsorted(ends, ends[start] - count[start] + chunk)), start + 1)
        f = np.repeat(np.arange(start, stop), count[start:stop])
        first = ends[start:stop] - count[start:stop]
        # f's candidates are numbered from this chunk's first one, first[0], not from 0: a
        # texture over 2^22 candidates (2048 px) had every later triangle tested at the wrong
        # texels, and its texels left to the gutter's mean colour.
        local = np.arange(len(f)) + first[0] - np.repeat(first, count[start:stop])
        x = lo[f, 0] + local % width[f]
        y = lo[f, 1] + local // width[f]
        a, b, c = corners[f, 0], corners[f, 1], corners[f, 2]
        px, py = x + 0.5, y + 0.5
        det = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
        ok = np.abs(det) > 1e-12
        det = np.where(ok, det, 1.0)
        l0 = ((b[:, 1] - c[:, 1]) * (px - c[:, 0]) + (c[:, 0] - b[:, 0]) * (py - c[:, 1])) / det
        l1 = ((c[:, 1] - a[:, 1]) * (px - c[:, 0]) + (a[:, 0] - c[:, 0]) * (py - c[:, 1])) / det
        l2 = 1.0 - l0 - l1
        inside = ok & (l0 >= -1e-9) & (l1 >= -1e-9) & (l2 >= -1e-9)
        yield f[inside], x[inside], y[inside], np.stack([l0, l1, l2], axis=-1)[inside]
        start = stop


def dilate(image: np.ndarray, filled: np.ndarray, pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Grow the filled region of ``image: [S, S, C]`` by ``pixels`` texels into the gutters.

    Each pass gives every empty texel with a filled 8-neighbour the mean of those neighbours, so
    colours bleed outward across chart borders and bilinear / mip-mapped lookups at seams read
    surface colour, not background. ``filled: [S, S]`` bool. Returns ``(image, filled)``.
    """
    image, filled = image.astype(np.float32).copy(), filled.copy()
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    for _ in range(pixels):
        padded_image = np.pad(image * filled[..., None], ((1, 1), (1, 1), (0, 0)))
        padded_filled = np.pad(filled, 1).astype(np.float32)
        total = np.zeros_like(image)
        weight = np.zeros(filled.shape, dtype=np.float32)
        for dy, dx in offsets:
            window = (
                slice(1 + dy, 1 + dy + filled.shape[0]),
                slice(1 + dx, 1 + dx + filled.shape[1]),
            )
            total += padded_image[window]
            weight += padded_filled[window]
        grow = ~filled & (weight > 0)
        if not grow.any():
            break
        image[grow] = total[grow] / weight[grow][:, None]
        filled = filled | grow
    return image, filled


def _small_faces(
    mesh: trimesh.Trimesh, uv: np.ndarray, size: int, face_of: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The triangles smaller than a texel whose colour a texel takes, for :func:`bake_texture`.

    A triangle that covers no texel centre (:func:`rasterize_uv`) has no texel of its own; where
    the texel holding its UV centroid is covered by no triangle either, that texel takes the
    mean albedo of the matter at the centroids ``c_f`` of such triangles in it, weighted by
    their UV areas ``a_f`` (a box filter over the texel):

        colour = Σ_f a_f albedo(c_f) / Σ_f a_f.

    Without it such texels were the dilation's guess from their neighbours, or, where no
    triangle covered any centre (a texture of 8 px), the mean of nothing: black. The preset's
    8,000-face mesh has 4 % of its faces between texel centres at 256 px, 92 % at 64 px.

    face_of: ``[S, S]``, the triangle covering each texel centre (−1: none). Returns ``(texel
    [F], centroid [F, 3], normal [F, 3], weight [F])``: each such triangle's flat index into the
    ``S × S`` texture, its 3D centroid and unit normal, and its ``a_f``.
    """
    faces = np.asarray(mesh.faces)
    has_texel = np.zeros(len(faces), dtype=bool)
    has_texel[face_of[face_of >= 0]] = True
    small = np.flatnonzero(~has_texel)
    centre = uv[faces[small]].mean(axis=1)  # [F, 2]
    column = np.clip((centre[:, 0] * size).astype(np.int64), 0, size - 1)
    row = np.clip(((1.0 - centre[:, 1]) * size).astype(np.int64), 0, size - 1)
    free = face_of[row, column] < 0
    small, texel = small[free], (row * size + column)[free]
    corners = uv[faces[small]]  # [F, 3, 2]
    edge_1, edge_2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    uv_area = 0.5 * np.abs(edge_1[:, 0] * edge_2[:, 1] - edge_1[:, 1] * edge_2[:, 0])
    weight = np.maximum(uv_area, 1e-30)
    normals = np.asarray(mesh.face_normals)[small]
    points = np.asarray(mesh.triangles_center)[small]
    return texel, points, normals, weight


def bake_texture(
    field: torch.nn.Module,
    mesh: trimesh.Trimesh,
    uv: np.ndarray,
    size: int = 1024,
    gutter: int | None = None,
    cell: float | None = None,
) -> np.ndarray:
    """Bake the field's albedo into a ``size × size`` texture over the mesh's UV atlas.

    Per covered texel: ``x = Σ λ_k x_k`` (barycentric interpolation of the triangle's 3D corners,
    and likewise its normal from the vertex normals), colour = the albedo of the matter there
    (:func:`query_surface_albedo`, with the export grid's ``cell`` size; ``None``: ``albedo(x)``)
    queried in batches. A texel whose centre no triangle covers but that holds the UV centroid
    of triangles too small to cover any centre gets their colour (:func:`_small_faces`), in
    the same query.
    Gutters are dilated by ``gutter`` texels (default ``max(4, S / 128)``); any texel still
    empty gets the mean surface colour. Returns ``[S, S, 3]`` uint8, row 0 at the top of the
    image (``v = 1``).
    """
    face_of, bary = rasterize_uv(uv, mesh.faces, size)
    covered = face_of >= 0
    corners = mesh.vertices[mesh.faces[face_of[covered]]]  # [T, 3, 3]
    points = np.einsum("tk,tkc->tc", bary[covered], corners)
    del corners
    texel_face, texel_bary = face_of[covered], bary[covered]
    small_texel, small_points, small_normals, small_weight = _small_faces(mesh, uv, size, face_of)
    count = len(points)

    def normals_of(index: np.ndarray) -> np.ndarray:
        """The unit normals of the points ``index``: a covered texel's interpolated vertex
        normals, a small triangle's own normal (its points follow the covered texels')."""
        normal = np.empty((len(index), 3))
        texel, face = index < count, index >= count
        corner_normals = mesh.vertex_normals[mesh.faces[texel_face[index[texel]]]]  # [P, 3, 3]
        normal[texel] = np.einsum("pk,pkc->pc", texel_bary[index[texel]], corner_normals)
        normal[face] = small_normals[index[face] - count]
        return normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)

    # One query (one progress bar) for the covered texels and the small triangles' centroids.
    albedo = query_surface_albedo(field, np.concatenate([points, small_points]), normals_of, cell)
    image = np.zeros((size, size, 3), dtype=np.float32)
    image[covered] = albedo[:count]
    if len(small_texel):
        texels, slot = np.unique(small_texel, return_inverse=True)
        total = np.zeros((len(texels), 3))
        weights = np.zeros((len(texels), 1))
        np.add.at(total, slot, small_weight[:, None] * albedo[count:])
        np.add.at(weights, slot, small_weight[:, None])
        image.reshape(-1, 3)[texels] = (total / weights).astype(np.float32)
        covered.reshape(-1)[texels] = True
    image, filled = dilate(image, covered, gutter if gutter is not None else max(4, size // 128))
    if covered.any():
        image[~filled] = image[covered].mean(axis=0)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


__all__ = [
    "CHECK_EVERY_S",
    "SURFACE_DEPTH",
    "SURFACE_TRANSMITTANCE",
    "DivergedDensity",
    "Extraction",
    "MeshStats",
    "bake_texture",
    "chart_padding",
    "decimate",
    "defect_vertices",
    "density_solid",
    "dilate",
    "drop_crumbs",
    "drop_small_parts",
    "extract_mesh",
    "face_components",
    "field_device",
    "finite_density",
    "folded_faces",
    "grid_centres",
    "is_closed_manifold",
    "make_manifold",
    "marching_cubes",
    "mesh_stats",
    "orient_outward",
    "outside_optical_depth",
    "query_surface_albedo",
    "rasterize_uv",
    "render_occupancy",
    "repack_charts",
    "sample_density_grid",
    "solid_surface",
    "unfold",
    "unwrap_uv",
    "voxelize_solid",
]
