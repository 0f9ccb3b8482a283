"""Coloured primitives for the built-in prior: analytic occupancy, ray casting and a cached dataset.

The primitives live in the world frame (+y up, centred at the origin), so a NeRF trained against
them and the mesh exported from it can be compared with the analytic shape directly:

* cube: ``|x|, |y|, |z| ≤ 0.4`` · sphere: radius 0.5 · cylinder: axis y, radius 0.35, ``|y| ≤ 0.4``
* cone: axis y, apex at ``y = 0.45``, base radius 0.45 at ``y = −0.45``
* torus: axis y, major radius 0.4, minor radius 0.15

Each is rendered as flat albedo (no lighting) on a white background through
:func:`dreamtext.cameras.get_rays`, i.e. with exactly the cameras the trainer uses. The dataset
takes one ray through each pixel centre, as the trainer's renderer does (``DATASET_SUPERSAMPLE``);
:func:`render` can also average a sub-pixel grid, for antialiased reference images.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dreamtext.cameras import (
    BOX_POLAR_RANGE,
    CameraRange,
    Poses,
    ViewThresholds,
    get_rays,
    look_at,
    position_from_angles,
    view_of,
    with_view,
)

# The objects' vocabulary lives in dreamtext.captions, which the CLI reads without torch; its
# names are this module's too.
from dreamtext.captions import (
    COLORFUL,
    COLOURS,
    SHAPES,
    Primitive,
    captions,
    captions_in_words,
    find_primitive,
    normalise_caption,
    primitives,
)

log = logging.getLogger(__name__)

# Face colours of "a colorful cube", keyed by (axis, sign of the outward normal).
FACE_COLOURS: dict[tuple[int, int], str] = {
    (0, 1): "red",
    (0, -1): "green",
    (1, 1): "yellow",
    (1, -1): "purple",
    (2, 1): "blue",
    (2, -1): "orange",
}

CUBE_HALF = 0.4
SPHERE_RADIUS = 0.5
CYLINDER_RADIUS, CYLINDER_HALF_HEIGHT = 0.35, 0.4
CONE_APEX, CONE_BASE_Y, CONE_BASE_RADIUS = 0.45, -0.45, 0.45
TORUS_MAJOR, TORUS_MINOR = 0.4, 0.15

# Bumped whenever the rendering changes, so that stale cached datasets are not reused.
DATASET_VERSION = 3
# One ray through each pixel centre, exactly as the trainer's renderer samples a pixel: a field
# can then match every image with an opaque, sharp surface. Antialiased images (2×2 rays a pixel)
# can only be matched by semi-transparent density along the silhouettes, which erodes thin parts
# (green torus IoU 0.69 with 2×2 rays, 0.75 with one; benchmarks/RESULTS.md).
DATASET_SUPERSAMPLE = 1
# Dataset cameras are at most this many degrees apart in azimuth and in polar angle.
DATASET_STEP_DEG = 10.0


# ---------------------------------------------------------------------------------------------
# Occupancy


def inside(shape: str, points: Tensor) -> Tensor:
    """Analytic occupancy: ``points [N, 3] -> bool [N]``, True inside or on the surface.

    cube ``max|p_i| ≤ 0.4``; sphere ``|p| ≤ 0.5``; cylinder ``x² + z² ≤ 0.35², |y| ≤ 0.4``;
    cone ``√(x² + z²) ≤ ½ (0.45 − y), |y| ≤ 0.45``; torus ``(√(x² + z²) − 0.4)² + y² ≤ 0.15²``.
    """
    x, y, z = points.unbind(-1)
    rho = torch.sqrt(x * x + z * z)
    if shape == "cube":
        return points.abs().amax(dim=-1) <= CUBE_HALF
    if shape == "sphere":
        return points.norm(dim=-1) <= SPHERE_RADIUS
    if shape == "cylinder":
        return (rho <= CYLINDER_RADIUS) & (y.abs() <= CYLINDER_HALF_HEIGHT)
    if shape == "cone":
        return (rho <= _cone_slope() * (CONE_APEX - y)) & (y >= CONE_BASE_Y) & (y <= CONE_APEX)
    if shape == "torus":
        return (rho - TORUS_MAJOR) ** 2 + y * y <= TORUS_MINOR**2
    raise ValueError(f"unknown shape {shape!r}")


def y_extent(shape: str) -> tuple[float, float]:
    """The lowest and highest ``y`` of the primitive ``shape`` (what an exported mesh of it should
    span): cube ±0.4, sphere ±0.5, cylinder ±0.4, cone −0.45 … 0.45, torus ±0.15."""
    extents = {
        "cube": (-CUBE_HALF, CUBE_HALF),
        "sphere": (-SPHERE_RADIUS, SPHERE_RADIUS),
        "cylinder": (-CYLINDER_HALF_HEIGHT, CYLINDER_HALF_HEIGHT),
        "cone": (CONE_BASE_Y, CONE_APEX),
        "torus": (-TORUS_MINOR, TORUS_MINOR),
    }
    if shape not in extents:
        raise ValueError(f"unknown shape {shape!r}")
    return extents[shape]


def _cone_slope() -> float:
    """Radius lost per unit of height: ``k = 0.45 / 0.9``."""
    return CONE_BASE_RADIUS / (CONE_APEX - CONE_BASE_Y)


# ---------------------------------------------------------------------------------------------
# Ray casting: each returns the distance to the first hit in front of the origin, inf on a miss.


def _nearest(rays_o: Tensor, rays_d: Tensor, candidates: list[tuple[Tensor, Tensor]]) -> Tensor:
    """The smallest positive ``t`` among ``(t [N], valid [N])`` candidates; inf when none."""
    best = torch.full_like(rays_o[:, 0], math.inf)
    for t, valid in candidates:
        ok = valid & (t > 0) & torch.isfinite(t)
        best = torch.where(ok, torch.minimum(best, t), best)
    return best


def _quadratic_roots(a: Tensor, b: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Real roots of ``a t² + b t + c = 0`` without cancellation: ``q = −½ (b + sgn(b) √Δ)``,
    ``t₁ = q / a``, ``t₂ = c / q`` (which also covers ``a → 0``). Returns ``(t1, t2, real)``."""
    disc = b * b - 4 * a * c
    real = disc >= 0
    sign = torch.where(b >= 0, 1.0, -1.0)
    q = -0.5 * (b + sign * torch.sqrt(disc.clamp_min(0)))
    with torch.no_grad():
        t1 = torch.where(a != 0, q / a, torch.full_like(q, math.inf))
        t2 = torch.where(q != 0, c / q, torch.full_like(q, math.inf))
    return t1, t2, real


def _cast_box(rays_o: Tensor, rays_d: Tensor) -> Tensor:
    """Slab test: ``t_near = max_i min(t_i⁻, t_i⁺)``, ``t_far = min_i max(t_i⁻, t_i⁺)``."""
    d = torch.where(rays_d.abs() < 1e-12, torch.full_like(rays_d, 1e-12), rays_d)
    t_lo, t_hi = (-CUBE_HALF - rays_o) / d, (CUBE_HALF - rays_o) / d
    t_near = torch.minimum(t_lo, t_hi).amax(dim=-1)
    t_far = torch.maximum(t_lo, t_hi).amin(dim=-1)
    return _nearest(rays_o, rays_d, [(t_near, t_near <= t_far)])


def _cast_sphere(rays_o: Tensor, rays_d: Tensor) -> Tensor:
    """``|o + t d|² = r²``."""
    a = (rays_d * rays_d).sum(-1)
    b = 2 * (rays_o * rays_d).sum(-1)
    c = (rays_o * rays_o).sum(-1) - SPHERE_RADIUS**2
    t1, t2, real = _quadratic_roots(a, b, c)
    return _nearest(rays_o, rays_d, [(t1, real), (t2, real)])


def _caps(
    rays_o: Tensor, rays_d: Tensor, heights_radii: list[tuple[float, float]]
) -> list[tuple[Tensor, Tensor]]:
    """Hits of the horizontal discs ``y = h, x² + z² ≤ ρ²``."""
    dy = torch.where(rays_d[:, 1].abs() < 1e-12, torch.full_like(rays_d[:, 1], 1e-12), rays_d[:, 1])
    out = []
    for height, radius in heights_radii:
        t = (height - rays_o[:, 1]) / dy
        p = rays_o + t[:, None] * rays_d
        out.append((t, p[:, 0] ** 2 + p[:, 2] ** 2 <= radius**2))
    return out


def _cast_cylinder(rays_o: Tensor, rays_d: Tensor) -> Tensor:
    """Side ``x² + z² = ρ²`` with ``|y| ≤ h``, and the two caps."""
    ox, oy, oz = rays_o.unbind(-1)
    dx, dy, dz = rays_d.unbind(-1)
    a = dx * dx + dz * dz
    b = 2 * (ox * dx + oz * dz)
    c = ox * ox + oz * oz - CYLINDER_RADIUS**2
    t1, t2, real = _quadratic_roots(a, b, c)
    side = [(t, real & ((oy + t * dy).abs() <= CYLINDER_HALF_HEIGHT)) for t in (t1, t2)]
    h = CYLINDER_HALF_HEIGHT
    caps = _caps(rays_o, rays_d, [(h, CYLINDER_RADIUS), (-h, CYLINDER_RADIUS)])
    return _nearest(rays_o, rays_d, side + caps)


def _cast_cone(rays_o: Tensor, rays_d: Tensor) -> Tensor:
    """Side ``x² + z² = k² (y_apex − y)²`` with ``y_base ≤ y ≤ y_apex``, and the base disc."""
    ox, oy, oz = rays_o.unbind(-1)
    dx, dy, dz = rays_d.unbind(-1)
    k2 = _cone_slope() ** 2
    h = CONE_APEX - oy
    a = dx * dx + dz * dz - k2 * dy * dy
    b = 2 * (ox * dx + oz * dz + k2 * h * dy)
    c = ox * ox + oz * oz - k2 * h * h
    t1, t2, real = _quadratic_roots(a, b, c)

    def on_side(t: Tensor) -> Tensor:
        y = oy + t * dy
        return real & (y >= CONE_BASE_Y) & (y <= CONE_APEX)

    base = _caps(rays_o, rays_d, [(CONE_BASE_Y, CONE_BASE_RADIUS)])
    return _nearest(rays_o, rays_d, [(t1, on_side(t1)), (t2, on_side(t2)), *base])


def torus_sdf(points: Tensor) -> Tensor:
    """Signed distance to the torus: ``|(√(x² + z²) − R, y)| − r``; ``[N, 3] -> [N]``."""
    rho = torch.sqrt(points[:, 0] ** 2 + points[:, 2] ** 2)
    return torch.sqrt((rho - TORUS_MAJOR) ** 2 + points[:, 1] ** 2) - TORUS_MINOR


def _cast_torus(rays_o: Tensor, rays_d: Tensor, iterations: int = 128, eps: float = 1e-6) -> Tensor:
    """Sphere tracing ``t ← t + sdf(o + t d)`` inside the bounding sphere of radius ``R + r``.

    The SDF is exact, so a step never crosses the surface; rays still marching after
    ``iterations`` steps graze the surface and count as hits when within ``eps`` of it.
    """
    a = (rays_d * rays_d).sum(-1)
    b = 2 * (rays_o * rays_d).sum(-1)
    c = (rays_o * rays_o).sum(-1) - (TORUS_MAJOR + TORUS_MINOR + 1e-3) ** 2
    t1, t2, real = _quadratic_roots(a, b, c)
    t_enter = torch.where(real, torch.minimum(t1, t2).clamp_min(0), torch.zeros_like(a))
    t_exit = torch.where(real, torch.maximum(t1, t2), torch.full_like(a, -1.0))
    t = t_enter.clone()
    # Only rays still marching (not yet within eps of the surface, not yet out) are stepped.
    marching = real.clone()
    for _ in range(iterations):
        rows = marching.nonzero()[:, 0]
        if rows.numel() == 0:
            break
        step = torus_sdf(rays_o[rows] + t[rows, None] * rays_d[rows])
        t[rows] += step
        marching[rows] = (step >= eps) & (t[rows] <= t_exit[rows])
    hit = (torus_sdf(rays_o + t[:, None] * rays_d) < eps) & (t <= t_exit) & real
    return torch.where(hit, t, torch.full_like(t, math.inf))


_CASTERS = {
    "cube": _cast_box,
    "sphere": _cast_sphere,
    "cylinder": _cast_cylinder,
    "cone": _cast_cone,
    "torus": _cast_torus,
}


def cast(shape: str, rays_o: Tensor, rays_d: Tensor) -> Tensor:
    """Distance along each ray to the first surface hit: ``rays_o, rays_d [N, 3] -> t [N]``
    (inf where the ray misses). ``rays_d`` need not be unit length; ``t`` is in its units."""
    return _CASTERS[shape](rays_o.double(), rays_d.double()).to(rays_o.dtype)


def albedo(primitive: Primitive, points: Tensor) -> Tensor:
    """Flat albedo at surface points ``[N, 3] -> [N, 3]``; the colorful cube by the face hit
    (the axis with the largest ``|p_i|`` and its sign)."""
    if primitive.colour != COLORFUL:
        return torch.tensor(COLOURS[primitive.colour], dtype=points.dtype).expand_as(points)
    axis = points.abs().argmax(dim=-1)
    sign = torch.sign(points.gather(-1, axis[:, None]))[:, 0]
    table = torch.zeros(3, 2, 3, dtype=points.dtype)
    for (ax, sg), name in FACE_COLOURS.items():
        table[ax, (sg + 1) // 2] = torch.tensor(COLOURS[name], dtype=points.dtype)
    return table[axis, ((sign + 1) // 2).long()]


def _subpixel_hits(
    shape: str, poses: Poses, height: int, width: int, supersample: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Rays through a regular ``supersample²`` sub-pixel grid of each pixel, and where they hit:
    ``(rays_o, rays_d, t, hit)``, flattened to ``[B · H·s · W·s, …]``."""
    rays_o, rays_d = get_rays(poses.c2w, poses.fovy, height * supersample, width * supersample)
    rays_o, rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
    t = cast(shape, rays_o, rays_d)
    return rays_o, rays_d, t, torch.isfinite(t)


def _pixel_mean(values: Tensor, batch: int, height: int, width: int, supersample: int) -> Tensor:
    """Average sub-pixel values ``[B · H·s · W·s, C]`` into pixels ``[B, H, W, C]``."""
    s = supersample
    return values.reshape(batch, height, s, width, s, -1).mean(dim=(2, 4))


def render(
    primitive: Primitive, poses: Poses, height: int, width: int, supersample: int = 2
) -> Tensor:
    """Flat-albedo images of a primitive on white: ``[B, H, W, 3]`` in [0, 1].

    Each pixel is the mean of ``supersample²`` rays through a regular sub-pixel grid, so edges are
    antialiased: ``c = (1/S²) Σ_s (hit_s ? a(p_s) : 1)``.
    """
    hits = _subpixel_hits(primitive.shape, poses, height, width, supersample)
    return _shade(primitive, hits, len(poses), height, width, supersample)


def _shade(
    primitive: Primitive,
    hits: tuple[Tensor, Tensor, Tensor, Tensor],
    batch: int,
    height: int,
    width: int,
    supersample: int,
) -> Tensor:
    """Albedo where the sub-pixel rays of :func:`_subpixel_hits` hit, white elsewhere, averaged
    into pixels ``[B, H, W, 3]``."""
    rays_o, rays_d, t, hit = hits
    rgb = torch.ones_like(rays_o)
    rgb[hit] = albedo(primitive, rays_o[hit] + t[hit, None] * rays_d[hit])
    return _pixel_mean(rgb, batch, height, width, supersample)


def coverage(shape: str, poses: Poses, height: int, width: int, supersample: int = 2) -> Tensor:
    """The fraction of each pixel the shape covers, ``[B, H, W]`` (1 inside, 0 on background)."""
    *_, hit = _subpixel_hits(shape, poses, height, width, supersample)
    return _pixel_mean(hit[:, None].float(), len(poses), height, width, supersample)[..., 0]


# ---------------------------------------------------------------------------------------------
# Dataset


def _grid(lo: float, hi: float, periodic: bool) -> Tensor:
    """Evenly spaced angles covering ``[lo, hi]`` at most ``DATASET_STEP_DEG`` apart (a full turn
    without repeating its end)."""
    span = hi - lo
    if periodic and span >= 360.0:
        n = math.ceil(360.0 / DATASET_STEP_DEG)
        return lo + torch.arange(n, dtype=torch.float64) * (360.0 / n)
    n = max(1, math.ceil(span / DATASET_STEP_DEG))
    return torch.linspace(lo, hi, n + 1, dtype=torch.float64)


def dataset_azimuth_range(cameras: CameraRange) -> tuple[float, ...]:
    """The azimuths the dataset covers: ``azimuth_range``, or the whole circle where training
    cameras come from the box too (``box_fraction > 0``), which takes any azimuth."""
    if cameras.box_fraction > 0:
        return (0.0, 360.0)
    return tuple(cameras.azimuth_range)


# How far inside a view band its edge angle is taken (:func:`band_angles`): float32 rounds an
# edge such as 37.3° to just below it, the band before.
BAND_MARGIN_DEG = 0.01


def _labels(polars: list[float], azimuths: list[float], thresholds: ViewThresholds) -> set[str]:
    return {view_of(p, a, thresholds).label for p in polars for a in azimuths}


def band_angles(
    cameras: CameraRange, thresholds: ViewThresholds | None = None
) -> tuple[list[float], list[float]]:
    """The polar and azimuth angles (degrees, float32 values) the dataset adds to its 10° grids
    (:func:`dataset_poses`) so that every view band the grids reach has images: a band narrower
    than the grid step (``guidance.views`` front 1°–9°) may hold no grid angle, and the run then
    stopped at its first camera in that band. Each band's lower edge (a hair inside) is added
    where it gives a label the grids have none of; with the default bands, none is."""
    t = thresholds or ViewThresholds()
    polar_lo, polar_hi, polar_grid, azimuth_grid = _grids(cameras)
    polars = [float(v) for v in polar_grid.float()]
    azimuths = [float(v) for v in azimuth_grid.float()]
    az_lo, az_hi = dataset_azimuth_range(cameras)
    extra_polar: list[float] = []
    extra_azimuth: list[float] = []
    for _ in range(2):  # an added polar angle may make an azimuth band's new label, and back
        for edge in (t.front_start, t.front_end, t.back_start, t.back_end):
            a = float(np.float32((edge + BAND_MARGIN_DEG) % 360.0))
            inside = (a - az_lo) % 360.0 <= az_hi - az_lo or az_hi - az_lo >= 360.0
            if (
                inside
                and a not in azimuths
                and _labels(polars, [a], t) - _labels(polars, azimuths, t)
            ):
                azimuths.append(a)
                extra_azimuth.append(a)
        for edge in (t.overhead, t.bottom, t.below):
            p = None if edge is None else float(np.float32(edge + BAND_MARGIN_DEG))
            if p is None or not polar_lo <= p <= polar_hi or p in polars:
                continue
            if _labels([p], azimuths, t) - _labels(polars, azimuths, t):
                polars.append(p)
                extra_polar.append(p)
    return sorted(extra_polar), sorted(extra_azimuth)


def _grids(cameras: CameraRange) -> tuple[float, float, Tensor, Tensor]:
    """The dataset's polar range and its 10° polar and azimuth grids (:func:`dataset_poses`)."""
    polar_lo, polar_hi = cameras.polar_range
    if cameras.box_fraction > 0:
        polar_lo, polar_hi = min(polar_lo, BOX_POLAR_RANGE[0]), max(polar_hi, BOX_POLAR_RANGE[1])
    polar_values = _grid(polar_lo, polar_hi, periodic=False)
    azimuth_values = _grid(*dataset_azimuth_range(cameras), periodic=True) % 360.0
    return polar_lo, polar_hi, polar_values, azimuth_values


def dataset_poses(cameras: CameraRange, thresholds: ViewThresholds | None = None) -> Poses:
    """The dataset's cameras for a training camera range: every ≤ 10° in azimuth and polar angle,
    and the angles of :func:`band_angles` (view bands of ``thresholds`` between two of them).

    Training cameras drawn from the box (``box_fraction > 0``) have polar angles in [0°, 90°] and
    any azimuth, so those are then covered too (:func:`dataset_azimuth_range`): a box camera
    behind a front-only azimuth range was a "back" view the dataset had no images of, which
    stopped the run. Radius and field of view are the middles of their ranges.
    """
    _, _, polar_values, azimuth_values = _grids(cameras)
    extra_polar, extra_azimuth = band_angles(cameras, thresholds)
    if extra_polar:
        polar_values = torch.cat([polar_values, torch.tensor(extra_polar, dtype=torch.float64)])
    if extra_azimuth:
        more = torch.tensor(extra_azimuth, dtype=torch.float64)
        azimuth_values = torch.cat([azimuth_values, more])
    polar, azimuth = torch.meshgrid(polar_values, azimuth_values, indexing="ij")
    polar, azimuth = polar.reshape(-1).float(), azimuth.reshape(-1).float()
    n = polar.shape[0]
    radius = torch.full((n,), sum(cameras.radius_range) / 2)
    fovy = torch.full((n,), sum(cameras.fovy_range) / 2)
    eye = position_from_angles(polar, azimuth, radius)
    return Poses(look_at(eye), polar, azimuth, radius, fovy)


@dataclass
class ShapesDataset:
    """Renders of every primitive from the dataset cameras.

    ``images: [N, 3, H, W]`` in [0, 1]; ``objects[i]`` the caption of the object ("a red cube"),
    ``captions[i]`` with its view label ("a red cube, front view"); ``polar, azimuth: [N]``.
    """

    images: Tensor
    objects: list[str]
    captions: list[str]
    polar: Tensor
    azimuth: Tensor


def build_dataset(
    cameras: CameraRange, height: int, width: int, thresholds: ViewThresholds | None = None
) -> ShapesDataset:
    """Render every primitive from :func:`dataset_poses` and caption each image with
    :func:`dreamtext.cameras.view_of` / :func:`dreamtext.cameras.with_view`."""
    poses = dataset_poses(cameras, thresholds)
    labels = [
        view_of(float(p), float(a), thresholds).label
        for p, a in zip(poses.polar, poses.azimuth, strict=True)
    ]
    # Ray casting is the slow part and depends on the shape only: once per shape, then colour.
    hits = {
        shape: _subpixel_hits(shape, poses, height, width, DATASET_SUPERSAMPLE) for shape in SHAPES
    }
    images, objects, texts = [], [], []
    for primitive in primitives():
        rgb = _shade(
            primitive, hits[primitive.shape], len(poses), height, width, DATASET_SUPERSAMPLE
        )
        images.append(rgb.permute(0, 3, 1, 2))
        objects += [primitive.caption] * len(poses)
        texts += [with_view(primitive.caption, label) for label in labels]
    n = len(primitives())
    return ShapesDataset(
        torch.cat(images), objects, texts, poses.polar.repeat(n), poses.azimuth.repeat(n)
    )


def cache_dir() -> Path | None:
    """``$DREAMTEXT_CACHE``, else ``$XDG_CACHE_HOME/dreamtext``, else ``~/.cache/dreamtext``;
    ``None`` where none of them is known (``HOME`` unset for a user without a home)."""
    if os.environ.get("DREAMTEXT_CACHE"):
        return Path(os.environ["DREAMTEXT_CACHE"])
    try:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except RuntimeError:  # Path.home(): "Could not determine home directory."
        return None
    return Path(base) / "dreamtext"


def _cache_key(
    cameras: CameraRange, height: int, width: int, thresholds: ViewThresholds | None
) -> str:
    params = (
        thresholds or ViewThresholds(),
        DATASET_VERSION,
        DATASET_SUPERSAMPLE,
        DATASET_STEP_DEG,
        height,
        width,
        tuple(cameras.polar_range),
        # As covered: a box range's key is the whole circle's, whose images it has.
        dataset_azimuth_range(cameras),
        tuple(cameras.radius_range),
        tuple(cameras.fovy_range),
        cameras.box_fraction > 0,
    )
    # ``ViewThresholds.below`` came later: left off, it keeps the keys of the caches before it.
    text = repr(params).replace(", below=None)", ")", 1)
    # So do the angles of bands between two grid angles, where there are none (as by default).
    extra = band_angles(cameras, thresholds)
    if extra != ([], []):
        text += repr(extra)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def load_dataset(
    cameras: CameraRange,
    height: int,
    width: int,
    thresholds: ViewThresholds | None = None,
    directory: Path | None = None,
) -> ShapesDataset:
    """The dataset for these cameras and render size, from the cache or rendered and cached.

    The file is ``shapes-<key>.npz`` (key: a hash of every parameter that changes the images),
    images stored as 8-bit, written to a temporary file and renamed so that concurrent runs never
    read half a file. A cache that cannot be written (read-only, full, ``HOME`` unset) is a
    warning: the rendered dataset is returned all the same. A cache file that cannot be read
    (damaged: truncated by a full disk or a crash, or not this version's) is a warning too, and
    is rendered and written again.
    """
    directory = Path(directory) if directory is not None else cache_dir()
    key = _cache_key(cameras, height, width, thresholds)
    path = directory / f"shapes-{key}.npz" if directory is not None else None
    if path is not None and path.is_file():
        cached = _read_cache(path)
        if cached is not None:
            return cached
    dataset = build_dataset(cameras, height, width, thresholds)
    # The returned dataset is the quantised one, so a fresh render and a cache hit are identical.
    images8 = (dataset.images * 255.0).round().clamp(0, 255).to(torch.uint8)
    dataset.images = images8.float() / 255.0
    if path is None:
        log.warning(
            "could not keep the built-in prior's images: there is no home folder for the cache; "
            "the next run renders them again: set DREAMTEXT_CACHE to a folder you can write"
        )
        return dataset
    try:
        _write_cache(path, dataset, images8)
    except OSError as error:  # the images are here; only the next run's time is lost
        log.warning(
            "could not keep the built-in prior's images in %s (%s); the next run renders them "
            "again: set DREAMTEXT_CACHE to a folder you can write",
            directory,
            error.strerror or error,
        )
    return dataset


def _read_cache(path: Path) -> ShapesDataset | None:
    """The dataset in the cache file ``path``; ``None`` (with a warning) where it cannot be read
    whole: the caller renders the images again and the file is written over."""
    try:
        with np.load(path) as data:
            dataset = ShapesDataset(
                torch.from_numpy(data["images"]).float() / 255.0,
                [str(s) for s in data["objects"]],
                [str(s) for s in data["captions"]],
                torch.from_numpy(data["polar"]),
                torch.from_numpy(data["azimuth"]),
            )
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        log.warning(
            "the built-in prior's cached images in %s are damaged (%s); rendering them again",
            path,
            error,
        )
        return None
    n = dataset.images.shape[0]
    sizes = {len(dataset.objects), len(dataset.captions), len(dataset.polar), len(dataset.azimuth)}
    if dataset.images.ndim != 4 or sizes != {n}:
        log.warning(
            "the built-in prior's cached images in %s are damaged (%s images, %s "
            "captions); rendering them again",
            path,
            n,
            len(dataset.captions),
        )
        return None
    return dataset


def _write_cache(path: Path, dataset: ShapesDataset, images8: Tensor) -> None:
    """``dataset`` (its images as ``images8``) into the cache file ``path``, atomically."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(
                f,
                images=images8.numpy(),
                objects=np.array(dataset.objects),
                captions=np.array(dataset.captions),
                polar=dataset.polar.numpy(),
                azimuth=dataset.azimuth.numpy(),
            )
            f.flush()
            os.fsync(f.fileno())  # a crash after the rename leaves the whole file, not an empty one
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; the cache is an ordinary file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


__all__ = [
    "COLORFUL",
    "COLOURS",
    "FACE_COLOURS",
    "SHAPES",
    "Primitive",
    "ShapesDataset",
    "albedo",
    "build_dataset",
    "cache_dir",
    "captions",
    "captions_in_words",
    "cast",
    "coverage",
    "dataset_azimuth_range",
    "dataset_poses",
    "find_primitive",
    "inside",
    "load_dataset",
    "normalise_caption",
    "primitives",
    "render",
    "torus_sdf",
]
