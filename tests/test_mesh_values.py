"""Values of mesh.py the other mesh tests leave open, each derived by hand: crumb boundaries,
what mesh_stats records, the texel rounding and the corners of the UV layout."""

import math

import numpy as np
import pytest
import torch
import trimesh
from analytic_field import SphereField

from dreamtext.mesh import (
    decimate,
    drop_crumbs,
    drop_small_parts,
    extract_mesh,
    mesh_stats,
    query_surface_albedo,
    render_occupancy,
    voxelize_solid,
)


def cube(grid: np.ndarray, corner, side: int) -> None:
    x, y, z = corner
    grid[x : x + side, y : y + side, z : z + side] = True


def test_a_part_of_one_and_a_half_percent_is_kept_and_half_a_percent_dropped():
    """Crumbs are parts under 1 % of the largest's cells (ARCHITECTURE: crumbs dropped): a
    1,000-cell cube keeps a 15-cell part (1.5 %) and drops a 5-cell one (0.5 %)."""
    solid = np.zeros((24, 24, 24), dtype=bool)
    cube(solid, (1, 1, 1), 10)  # 1,000 cells
    solid[15, 2, 2:17] = True  # 15 cells, a line
    solid[20, 20, 2:7] = True  # 5 cells
    kept, dropped = drop_crumbs(solid)
    assert kept.sum() == 1000 + 15
    assert kept[15, 2, 2:17].all() and not kept[20, 20, 2:7].any()
    assert dropped == 1


def test_a_part_of_exactly_one_percent_of_the_cells_is_kept():
    """ "At least min_fraction": 10 cells beside 1,000 are kept, 9 are dropped."""
    solid = np.zeros((24, 24, 24), dtype=bool)
    cube(solid, (1, 1, 1), 10)
    solid[15, 2, 2:12] = True  # 10 cells: exactly 1 %
    solid[20, 20, 2:11] = True  # 9 cells
    kept, dropped = drop_crumbs(solid)
    assert kept.sum() == 1010 and dropped == 1


def test_a_closed_part_of_one_and_a_half_percent_of_the_volume_is_kept():
    """drop_small_parts, by enclosed volume: a unit box (1) and boxes of 0.015 and 0.005."""
    big = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    kept_box = trimesh.creation.box(extents=(0.015, 1.0, 1.0))
    kept_box.apply_translation((2.0, 0, 0))
    crumb = trimesh.creation.box(extents=(0.005, 1.0, 1.0))
    crumb.apply_translation((4.0, 0, 0))
    mesh = trimesh.util.concatenate([big, kept_box, crumb])
    kept, dropped = drop_small_parts(mesh)
    assert dropped == 1
    assert kept.volume == pytest.approx(1.0 + 0.015)
    assert len(kept.vertices) == 16  # the crumb's 8 corners go with its faces


class OverflowingCore(SphereField):
    """The default sphere with its core (``|x| < 0.3``) at an infinite density."""

    def density(self, x: torch.Tensor) -> torch.Tensor:
        sigma = super().density(x)
        return torch.where(x.norm(dim=-1) < 0.3, torch.full_like(sigma, math.inf), sigma)


def test_an_infinite_core_is_occupied_like_a_dense_one():
    """An infinitely dense cell stops all light: the occupancy mesh.json's IoU is measured
    against holds it, as it holds the finite sphere's core (density 100)."""
    overflowing = extract_mesh(OverflowingCore(), resolution=24)
    finite = extract_mesh(SphereField(), resolution=24)
    assert finite.occupancy[12, 12, 12]
    np.testing.assert_array_equal(overflowing.occupancy, finite.occupancy)


def test_decimate_zero_keeps_every_face():
    """``--decimate 0`` keeps every face (exportflags: "0 keeps every face")."""
    sphere = trimesh.creation.icosphere(subdivisions=2)
    kept = decimate(sphere, 0)
    assert len(kept.faces) == len(sphere.faces) == 320


def test_a_slab_thinner_than_a_cell_between_centres_encloses_no_cell():
    """Grid 8, bound 1: cell centres at z = ±0.125, ±0.375, … A slab z ∈ [0.01, 0.11] holds
    none, so its solid is empty (each column crosses it twice between the same two centres)."""
    slab = trimesh.creation.box(bounds=[[-0.6, -0.6, 0.01], [0.6, 0.6, 0.11]])
    assert not voxelize_solid(slab, 8, 1.0).any()


def test_mesh_stats_iou_is_intersection_over_union():
    """A unit cube on a 16-cell grid (bound 1) holds 8³ = 512 cell centres; an occupancy of its
    x < 0 half (256 cells) overlaps it in 256: IoU 256 / 512 = 0.5."""
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    occupancy = voxelize_solid(box, 16, 1.0).copy()
    assert occupancy.sum() == 512
    occupancy[8:] = False
    stats = mesh_stats(box, occupancy, 1.0)
    assert stats.iou_field == pytest.approx(0.5)
    assert stats.volume == pytest.approx(1.0)


def test_mesh_stats_counts_two_parts():
    left = trimesh.creation.box(extents=(0.5, 0.5, 0.5))
    right = trimesh.creation.box(extents=(0.5, 0.5, 0.5))
    left.apply_translation((-0.5, 0, 0))
    right.apply_translation((0.5, 0, 0))
    both = trimesh.util.concatenate([left, right])
    stats = mesh_stats(both, voxelize_solid(both, 16, 1.0), 1.0)
    assert (stats.components, stats.faces, stats.vertices) == (2, 24, 16)
    assert stats.watertight and stats.manifold
    assert stats.volume == pytest.approx(0.25)
    assert stats.iou_field == pytest.approx(1.0)


def test_mesh_stats_says_a_box_with_a_fin_is_neither_watertight_nor_manifold():
    """A fin (two faces folded onto each other on the edge 0–1): that edge has four faces."""
    box = trimesh.creation.box()
    vertices = np.concatenate([box.vertices, [[-0.5, -0.5, 0.9]]])
    faces = np.concatenate([box.faces, [[0, 1, 8], [8, 1, 0]]])
    finned = trimesh.Trimesh(vertices, faces, process=False)
    stats = mesh_stats(finned, voxelize_solid(box, 8, 1.0), 1.0)
    assert not stats.watertight
    assert not stats.manifold


def test_mesh_stats_says_an_open_box_is_neither_watertight_nor_manifold():
    box = trimesh.creation.box()
    open_box = trimesh.Trimesh(box.vertices, box.faces[1:], process=False)
    stats = mesh_stats(open_box, voxelize_solid(box, 8, 1.0), 1.0)
    assert (stats.watertight, stats.manifold) == (False, False)


class Haze(SphereField):
    """Density 3 everywhere; albedo red = 0.5 + x (a colour that changes along x)."""

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x),), 3.0, dtype=x.dtype)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        red = (0.5 + x[:, :1]).clamp(0, 1)
        return self.density(x), torch.cat([red, torch.full_like(red, 0.5), red * 0], 1)


def test_thin_matter_at_a_point_keeps_the_albedo_there():
    """One cell (1/24) of density 3 has opacity 1 − exp(−0.125) = 0.118, at least 5 %
    (EMPTY_OPACITY): the point has matter, and its colour is the albedo at it, not a colour
    composited inward of it."""
    points = np.array([[0.3, 0.0, 0.0], [-0.2, 0.1, 0.0]])
    normals = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]])
    colours = query_surface_albedo(Haze(), points, normals.__getitem__, 1.0 / 24)
    np.testing.assert_allclose(colours[:, 0], [0.8, 0.3], atol=1e-6)


class Bright(SphereField):
    """The default sphere with an albedo out of range: 1.5 red, −0.5 blue."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        colour = torch.tensor([1.5, 0.5, -0.5], dtype=x.dtype).expand(len(x), 3)
        return self.density(x), colour


@pytest.mark.parametrize("radius", [0.5, 0.7])  # matter at the point; empty, matter inward
def test_surface_albedo_is_clamped_to_the_unit_range(radius):
    """The PLY's vertex colours are ``round(albedo · 255)`` as uint8: an albedo over 1 must not
    wrap round to a dark colour."""
    points = np.array([[radius, 0.0, 0.0]])
    normals = np.array([[1.0, 0.0, 0.0]])
    colours = query_surface_albedo(Bright(), points, normals.__getitem__, 2.0 / 48)
    np.testing.assert_allclose(colours, [[1.0, 0.5, 0.0]], atol=1e-6)


def test_a_point_whose_inward_ray_meets_no_matter_keeps_the_albedo_there():
    """Empty space at the point and for 8 cells inward (a sphere of radius 0.5, the point at
    0.95 looking in along −x reaches 0.95 − 8/24 = 0.62): the ray meets no matter, so the
    colour stays the albedo at the point (the default sphere's, ALBEDO)."""
    points = np.array([[0.95, 0.0, 0.0]])
    normals = np.array([[1.0, 0.0, 0.0]])
    colours = query_surface_albedo(SphereField(), points, normals.__getitem__, 1.0 / 24)
    np.testing.assert_allclose(colours, [[0.8, 0.3, 0.2]], atol=1e-6)


def test_the_inward_look_of_points_in_empty_space_shows_its_own_bar(monkeypatch):
    """Points in empty space cost 16 queries each (8 cells, 2 samples a cell): on a soft
    field (an early checkpoint) every texel of a 1024 px texture was one, and the texture
    bake ran 45 s after its "albedo" bar closed at 100 % (3 s). 12 such points, 64 points a
    chunk: one "albedo" chunk, then 4 points (64 queries) a chunk inward, 3 chunks, each bar's
    line in a file ending at its total."""
    import io
    import re
    import sys

    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    points = np.tile([[0.95, 0.0, 0.0]], (12, 1))
    normals = np.tile([[1.0, 0.0, 0.0]], (12, 1))
    query_surface_albedo(SphereField(), points, normals.__getitem__, 1.0 / 24, chunk=64)
    bars = re.findall(r"^(.+?): +\d+%\|.*\| (\d+/\d+) \[", stderr.getvalue(), re.MULTILINE)
    assert bars == [("albedo", "1/1"), ("albedo inward", "3/3")], stderr.getvalue()


def test_points_with_matter_show_no_inward_bar(monkeypatch):
    """Where every point has matter nothing is looked for inward, and no bar says 0/0."""
    import io
    import sys

    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    points, normals = np.array([[0.3, 0.0, 0.0]]), np.array([[1.0, 0.0, 0.0]])
    query_surface_albedo(Haze(), points, normals.__getitem__, 1.0 / 24)
    assert "inward" not in stderr.getvalue()


def test_a_linear_ramp_is_meshed_on_its_iso_surface_to_a_fraction_of_a_cell():
    """σ = 100 (0.55 − |x|) / 0.1 crosses 50 at |x| = 0.5. Along a cell edge (h = 1/16) the
    ramp is linear in |x|, which bends from a straight line by at most about h² / (8 r) = 0.001:
    every vertex lies within 0.002 of the sphere (3 % of a cell)."""
    mesh = extract_mesh(SphereField(), resolution=32, threshold=50.0).mesh
    assert np.abs(np.linalg.norm(mesh.vertices, axis=1) - 0.5).max() < 0.002


def test_uv_seams_keep_the_normals_of_the_welded_surface():
    """Each seam-split vertex keeps the normal of the surface's vertex at its place, so
    shading is smooth across UV seams (a chart's own normals differ there)."""
    from scipy.spatial import cKDTree

    from dreamtext.mesh import unwrap_uv

    sphere = trimesh.creation.icosphere(subdivisions=2)
    unwrapped, _ = unwrap_uv(sphere, 256)
    assert len(unwrapped.vertices) > len(sphere.vertices)  # seams were split
    distance, index = cKDTree(sphere.vertices).query(unwrapped.vertices)
    assert distance.max() < 1e-9
    np.testing.assert_allclose(unwrapped.vertex_normals, sphere.vertex_normals[index], atol=1e-9)


def test_the_density_grid_reports_the_chunks_done_when_it_checks(monkeypatch):
    """48 chunks of ¼ s (a 12³ grid, 36 points a chunk): ``progress(0, 48)`` first, then once
    a second, before the 5th, 9th, … chunk, when 4, 8, … 44 chunks are done."""
    import types

    import dreamtext.mesh as mesh_module
    from dreamtext.mesh import sample_density_grid

    class Clocked(SphereField):
        now = 0.0

        def density(self, x: torch.Tensor) -> torch.Tensor:
            self.now += 0.25
            return super().density(x)

    field, reports = Clocked(), []
    monkeypatch.setattr(mesh_module, "time", types.SimpleNamespace(monotonic=lambda: field.now))
    sample_density_grid(field, 12, 1.0, chunk=36, progress=lambda *a: reports.append(a))
    assert reports == [(0, 48)] + [(k, 48) for k in range(4, 48, 4)]


def test_a_uniform_albedo_is_baked_rounded_to_the_nearest_level():
    """Albedo (0.45, 0.72, 0.18) is 255 × that = (114.75, 183.6, 45.9): texels (115, 184, 46)."""
    from analytic_field import constant_albedo

    from dreamtext.mesh import bake_texture, unwrap_uv

    field = SphereField(albedo=constant_albedo((0.45, 0.72, 0.18)))
    mesh, uv = unwrap_uv(trimesh.creation.icosphere(subdivisions=1, radius=0.5), 32)
    texture = bake_texture(field, mesh, uv, 32)
    assert (texture.reshape(-1, 3) == [115, 184, 46]).all()


class BallAndCrumb(SphereField):
    """A hard ball of radius 0.45 and one of 0.08 beside it: (0.08 / 0.45)³ = 0.56 % of its
    cells, a crumb (under 1 %)."""

    def __init__(self):
        super().__init__(radius=0.45, sigma_max=1000.0, width=0.01, centre=(-0.3, 0, 0))
        self.crumb = SphereField(radius=0.08, sigma_max=1000.0, width=0.01, centre=(0.6, 0, 0))

    def density(self, x):
        return torch.maximum(super().density(x), self.crumb.density(x))


def test_a_crumb_is_dropped_once_and_counted_once():
    extraction = extract_mesh(BallAndCrumb(), resolution=32)
    assert extraction.dropped_components == 1
    assert extraction.mesh.vertices[:, 0].max() < 0.2  # nothing left of the crumb (x ≥ 0.52)


def test_mesh_stats_measure_on_the_field_s_own_bound():
    """Bound 2, 16 cells of 0.25: a unit cube holds the centres ±0.125, ±0.375 on each axis,
    4³ = 64 cells, the same as an occupancy of those cells: IoU 1 (on a bound-1 grid the cube
    would hold 512 cells, IoU 1/8)."""
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    axis = (np.arange(16) + 0.5) * 0.25 - 2.0
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    occupancy = (np.abs(x) < 0.5) & (np.abs(y) < 0.5) & (np.abs(z) < 0.5)
    assert occupancy.sum() == 64
    assert mesh_stats(box, occupancy, 2.0).iou_field == pytest.approx(1.0)


def test_a_threshold_mesh_is_measured_against_what_the_renders_show():
    """With ``threshold`` 50 the default sphere's solid is |x| < 0.5, but the occupancy (what
    mesh.json's IoU compares with) is where light from outside falls under ½: |x| < 0.5128
    (test_mesh.py), whatever the threshold; and beyond |x| = 0.55 no density stops any light."""
    from dreamtext.mesh import grid_centres

    extraction = extract_mesh(SphereField(), resolution=32, threshold=50.0)
    axis = grid_centres(32, 1.0)
    r = np.sqrt(sum(c**2 for c in np.meshgrid(axis, axis, axis, indexing="ij")))
    assert ((r > 0.501) & (r < 0.511)).any()  # cells between the two surfaces
    np.testing.assert_array_equal(extraction.occupancy[r < 0.499], True)
    np.testing.assert_array_equal(extraction.occupancy[(r > 0.501) & (r < 0.511)], True)
    np.testing.assert_array_equal(extraction.occupancy[r > 0.56], False)


def test_a_part_is_weighed_against_the_largest_not_the_total():
    """Two 1,000-cell cubes and a 15-cell part: 1.5 % of the largest, kept (0.74 % of all)."""
    solid = np.zeros((24, 24, 24), dtype=bool)
    cube(solid, (1, 1, 1), 10)
    cube(solid, (12, 12, 12), 10)
    solid[1, 20, 2:17] = True
    kept, dropped = drop_crumbs(solid)
    assert kept.sum() == 2015 and dropped == 0


def test_a_closed_part_is_weighed_against_the_largest_not_the_total():
    """Two unit boxes and one of 0.015: kept (1.5 % of the largest, 0.74 % of all)."""
    boxes = []
    for x, width in ((0.0, 1.0), (2.0, 1.0), (4.0, 0.015)):
        box = trimesh.creation.box(extents=(width, 1.0, 1.0))
        box.apply_translation((x, 0, 0))
        boxes.append(box)
    kept, dropped = drop_small_parts(trimesh.util.concatenate(boxes))
    assert dropped == 0 and kept.volume == pytest.approx(2.015)


GREEN, PALE = (0.1, 0.7, 0.2), (0.85, 0.8, 0.75)


class Slab(SphereField):
    """Density ``sigma`` where x < ``face``, none beyond; green in the matter, pale outside."""

    def __init__(self, face: float, sigma: float):
        super().__init__()
        self.face, self.sigma = face, sigma

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.sigma * (x[:, 0] < self.face).to(x.dtype)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        matter = (x[:, :1] < self.face).to(x.dtype)
        colour = matter * torch.tensor(GREEN) + (1 - matter) * torch.tensor(PALE)
        return self.density(x), colour


def test_a_ray_that_thin_matter_half_stops_sees_the_matter_s_colour_not_a_darker_one():
    """From x = 0.55 inward along −x over 8 cells of 1/24 (to x ≈ 0.23), a slab of density 1
    from x = 0.5 absorbs 1 − exp(−0.27) ≈ 24 % of the light: over 5 % (EMPTY_OPACITY), so the
    point takes the colour the ray sees, composited and normalised: the slab's green."""
    colours = query_surface_albedo(
        Slab(0.5, 1.0), np.array([[0.55, 0.0, 0.0]]), lambda i: np.array([[1.0, 0, 0]]), 1 / 24
    )
    np.testing.assert_allclose(colours, [GREEN], atol=1e-5)


def test_the_inward_look_reaches_eight_cells_and_no_further():
    """Matter from x = 0.2 only: from x = 0.55 the 16 samples at (i + ½) / 48 reach
    0.55 − 15.5 / 48 = 0.227 and meet none, so the point keeps its own (pale) albedo; from
    x = 0.5 they reach 0.177 and meet it (0.023 of density 100: 90 % absorbed), green."""
    slab, normal = Slab(0.2, 100.0), lambda i: np.tile([1.0, 0.0, 0.0], (len(i), 1))
    points = np.array([[0.55, 0.0, 0.0], [0.5, 0.0, 0.0]])
    colours = query_surface_albedo(slab, points, normal, 1 / 24)
    np.testing.assert_allclose(colours, [PALE, GREEN], atol=1e-5)


def test_a_field_of_bound_two_is_meshed_in_its_own_units():
    """A sphere of radius 1 in a field of bound 2 (density 100 over |x| ∈ [0.9, 1.1], 50 at
    |x| = 1): the mesh has radius 1 and volume 4π/3, not the halved sphere of a bound-1 grid."""
    field = SphereField(radius=1.0, width=0.2, bound=2.0)
    mesh = extract_mesh(field, resolution=32, threshold=50.0).mesh
    assert np.abs(np.linalg.norm(mesh.vertices, axis=1) - 1.0).max() < 0.01
    assert mesh.volume == pytest.approx(4 / 3 * math.pi, rel=0.02)


def test_a_cell_touching_the_solid_only_at_a_corner_is_a_crumb_of_its_own():
    """Parts are face-connected: one cell diagonal to a 1,000-cell cube's corner is a part of
    0.1 %, dropped."""
    solid = np.zeros((16, 16, 16), dtype=bool)
    cube(solid, (1, 1, 1), 10)
    solid[11, 11, 11] = True  # meets the cube's cell (10, 10, 10) at a corner only
    kept, dropped = drop_crumbs(solid)
    assert kept.sum() == 1000 and not kept[11, 11, 11] and dropped == 1


class Gradient(SphereField):
    """Albedo (0.5 + 0.4 x, 0.5 + 0.4 y, 0.5): each texel's colour says where it was baked."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        colour = torch.stack([0.5 + 0.4 * x[:, 0], 0.5 + 0.4 * x[:, 1], 0.5 + 0 * x[:, 0]], 1)
        return self.density(x), colour


def test_each_texel_is_baked_at_its_own_point_of_the_surface():
    """A square x, y ∈ [−½, ½] at z = 0, mapped to the texture by u = x + ½, v = y + ½. The
    texel in row r, column c has its centre at u = (c + ½) / S, v = 1 − (r + ½) / S (row 0 at
    the top), so it holds the albedo at x = u − ½, y = v − ½, to within one level."""
    from dreamtext.mesh import bake_texture

    size = 16
    vertices = np.array([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.5, 0.5, 0.0], [-0.5, 0.5, 0.0]])
    square = trimesh.Trimesh(vertices, [[0, 1, 2], [0, 2, 3]], process=False)
    uv = vertices[:, :2] + 0.5
    texture = bake_texture(Gradient(), square, uv, size).astype(float)
    rows, cols = np.mgrid[0:size, 0:size]
    x, y = (cols + 0.5) / size - 0.5, 1 - (rows + 0.5) / size - 0.5
    assert np.abs(texture[..., 0] - 255 * (0.5 + 0.4 * x)).max() <= 0.51
    assert np.abs(texture[..., 1] - 255 * (0.5 + 0.4 * y)).max() <= 0.51


def test_a_triangle_between_texel_centres_colours_the_texel_of_its_centroid():
    """The square's two halves, each mapped inside one texel of an 8 px texture without
    covering its centre: half A (centroid x = 1/6, y = −1/6) at u, v ∈ [0.13, 0.18], in
    column 1 and row 6 (centre u = v = 0.1875); half B (x = −1/6, y = 1/6) at u, v ∈ [0.82,
    0.87], in column 6 and row 1 (centre 0.8125). Each of those texels holds the albedo at its
    half's centroid; the texture was black, no texel centre lying in a triangle."""
    from dreamtext.mesh import bake_texture

    vertices = np.array(
        [
            [-0.5, -0.5, 0],
            [0.5, -0.5, 0],
            [0.5, 0.5, 0],
            [-0.5, -0.5, 0],
            [0.5, 0.5, 0],
            [-0.5, 0.5, 0],
        ]
    )
    halves = trimesh.Trimesh(vertices, [[0, 1, 2], [3, 4, 5]], process=False)
    uv = np.array(
        [[0.13, 0.13], [0.18, 0.13], [0.18, 0.18], [0.82, 0.82], [0.87, 0.87], [0.82, 0.87]]
    )
    texture = bake_texture(Gradient(), halves, uv, 8).astype(float)
    third = 0.4 / 6
    np.testing.assert_allclose(
        texture[6, 1], 255 * np.array([0.5 + third, 0.5 - third, 0.5]), atol=1
    )
    np.testing.assert_allclose(
        texture[1, 6], 255 * np.array([0.5 - third, 0.5 + third, 0.5]), atol=1
    )


def test_small_triangles_share_their_texel_by_uv_area_and_leave_a_covered_one_alone():
    """Of an 8 px texture, without dilation: a large triangle covers texel centres (row 7,
    column 0 at u = v = 1/16 among them); two small ones lie in the last column's texel of row
    1 (u ∈ [7/8, 1)), their UV areas 5 : 1; a third small one lies in the large one's texel of
    row 7, column 0. The last column's texel is their UV-area-weighted mean (a plain mean is
    0.49 in red, not 0.57); the covered texel keeps the large triangle's colour at its centre."""
    from dreamtext.mesh import bake_texture

    corners = {
        "large": ([[0.0, 0.0], [0.3, 0.0], [0.0, 0.3]], [[-0.5, -0.5], [-0.2, -0.5], [-0.5, -0.2]]),
        "five": (
            [[0.88, 0.76], [0.93, 0.76], [0.88, 0.80]],
            [[0.2, -0.3], [0.4, -0.3], [0.2, -0.1]],
        ),
        "one": (
            [[0.95, 0.83], [0.99, 0.83], [0.95, 0.84]],
            [[-0.4, 0.2], [-0.2, 0.2], [-0.4, 0.4]],
        ),
        "inside": (
            [[0.01, 0.01], [0.02, 0.01], [0.01, 0.02]],
            [[0.4, 0.3], [0.45, 0.3], [0.4, 0.35]],
        ),
    }
    uv = np.concatenate([np.array(u) for u, _ in corners.values()])
    xy = np.concatenate([np.array(p) for _, p in corners.values()])
    vertices = np.concatenate([xy, np.zeros((len(xy), 1))], axis=1)
    faces = np.arange(len(vertices)).reshape(-1, 3)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    texture = bake_texture(Gradient(), mesh, uv, 8, gutter=0).astype(float)
    five, one = np.mean(corners["five"][1], axis=0), np.mean(corners["one"][1], axis=0)
    x, y = (5 * five + one) / 6
    np.testing.assert_allclose(
        texture[1, 7], 255 * np.array([0.5 + 0.4 * x, 0.5 + 0.4 * y, 0.5]), atol=1
    )
    np.testing.assert_allclose(
        texture[7, 0], 255 * np.array([0.5 + 0.4 * (1 / 16 - 0.5)] * 2 + [0.5]), atol=1
    )


def test_a_decimation_left_open_gives_the_mesh_back_undecimated(monkeypatch):
    """ "Should a defect survive the repair, the undecimated mesh is returned": here the
    simplifier leaves a box with a hole and the repair does nothing."""
    import dreamtext.mesh as mesh_module
    from dreamtext.mesh import is_closed_manifold

    box = trimesh.creation.box()
    monkeypatch.setattr(
        mesh_module.fast_simplification,
        "simplify",
        lambda vertices, faces, target_count: (np.asarray(box.vertices), box.faces[1:]),
    )
    monkeypatch.setattr(mesh_module, "make_manifold", lambda mesh: mesh)
    sphere = trimesh.creation.icosphere(subdivisions=2)
    result = decimate(sphere, 100)
    assert len(result.faces) == 320 and is_closed_manifold(result)


def test_the_solid_is_where_the_light_from_outside_falls_below_one_half():
    """σ = 1 in every cell of a 20³ grid over [−1, 1]³ (h = 0.1): light from the nearest face
    reaches the centre of cell i with optical depth h (i + ½) σ = 0.1 (i + ½), and T < ½ is
    τ > ln 2 ≈ 0.693: i + ½ ≥ 7.5, so cells 7 … 12 of each axis (6³) are solid. A surface at
    T = 0.55 (τ > 0.598) would take cells 6 … 13 too."""
    occupied = render_occupancy(np.ones((20, 20, 20), dtype=np.float32), bound=1.0)
    expected = np.zeros((20, 20, 20), dtype=bool)
    expected[7:13, 7:13, 7:13] = True
    assert np.array_equal(occupied, expected)


class ThinHaze(Haze):
    """Haze of a chosen density; albedo red = 0.9 + x (in [0, 1] for −0.9 ≤ x ≤ 0.1)."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x),), self.sigma, dtype=x.dtype)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        red = 0.9 + x[:, :1]
        return self.density(x), torch.cat([red, torch.full_like(red, 0.5), red * 0], 1)


@pytest.mark.parametrize("sigma", [0.54, 0.75])
def test_matter_at_a_point_is_one_cells_opacity_of_five_percent(sigma):
    """cell 0.1: a point has matter when 1 − exp(−0.1 σ) ≥ 0.05 (EMPTY_OPACITY), σ ≥ 0.513.
    σ = 0.54 (opacity 0.0526) and 0.75 (0.072; over half a cell only 0.037) both have it: the
    colour is the albedo at the point, red 0.9 at x = 0."""
    colours = query_surface_albedo(
        ThinHaze(sigma), np.zeros((1, 3)), lambda index: np.array([[1.0, 0.0, 0.0]]), 0.1
    )
    np.testing.assert_allclose(colours[:, 0], [0.9], atol=1e-6)


def test_a_point_in_thinner_haze_takes_the_colour_composited_inward():
    """σ = 0.5, cell 0.1: opacity 1 − exp(−0.05) = 0.049 < 5 %, so the colour is the one seen
    along −n = −x: 16 samples at t_i = (i + ½) 0.05, w_i = (1 − α)^i α with α = 1 − exp(−0.025)
    (Σ w = 1 − exp(−0.4) = 0.33, matter met), red_i = 0.9 − t_i, so red = 0.9 − Σ w_i t_i / Σ w_i
    = 0.5265 (hand sum below; samples at the cell ends, t_i = (i + 1) 0.05, give 0.5015)."""
    alpha = 1.0 - math.exp(-0.5 * 0.05)
    t = (np.arange(16) + 0.5) * 0.05
    w = (1.0 - alpha) ** np.arange(16) * alpha
    expected = 0.9 - float((w * t).sum() / w.sum())
    assert expected == pytest.approx(0.5265, abs=1e-4)
    colours = query_surface_albedo(
        ThinHaze(0.5), np.zeros((1, 3)), lambda index: np.array([[1.0, 0.0, 0.0]]), 0.1
    )
    np.testing.assert_allclose(colours[:, 0], [expected], atol=1e-5)


def test_a_small_triangle_in_empty_space_looks_inward_along_its_own_normal():
    """The square's two halves of the test above, at z = 0.62 over the sphere of matter (its
    edge at 0.55) and facing away from it (+z): each one's texel holds the albedo the inward
    look along its own normal (−z) finds, that of its centroid's x and y."""
    from dreamtext.mesh import bake_texture

    vertices = np.array(
        [
            [-0.25, -0.25, 0.62],
            [0.25, -0.25, 0.62],
            [0.25, 0.25, 0.62],
            [-0.25, -0.25, 0.62],
            [0.25, 0.25, 0.62],
            [-0.25, 0.25, 0.62],
        ]
    )
    halves = trimesh.Trimesh(vertices, [[0, 1, 2], [3, 4, 5]], process=False)
    uv = np.array(
        [[0.13, 0.13], [0.18, 0.13], [0.18, 0.18], [0.82, 0.82], [0.87, 0.87], [0.82, 0.87]]
    )
    texture = bake_texture(Gradient(), halves, uv, 8, cell=0.02).astype(float)
    sixth = 0.4 / 12
    np.testing.assert_allclose(
        texture[6, 1], 255 * np.array([0.5 + sixth, 0.5 - sixth, 0.5]), atol=1
    )
    np.testing.assert_allclose(
        texture[1, 6], 255 * np.array([0.5 - sixth, 0.5 + sixth, 0.5]), atol=1
    )


def test_a_mesh_that_crosses_no_column_has_an_empty_solid():
    """Grid 8, bound 1: column centres at x, y = ±0.125, ±0.375, … A closed tetrahedron within
    x, y ∈ [0.01, 0.1] lies between them: no column crosses a face, so no cell is inside (the
    measure of a crumb smaller than a cell, as an export's IoU takes it)."""
    corners = np.array([[0.01, 0.01, 0.0], [0.1, 0.01, 0.0], [0.01, 0.1, 0.0], [0.04, 0.04, 0.3]])
    crumb = trimesh.Trimesh(corners, [[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]], process=False)
    solid = voxelize_solid(crumb, 8, 1.0)
    assert solid.shape == (8, 8, 8) and not solid.any()
    assert not voxelize_solid(trimesh.Trimesh(), 8, 1.0).any()  # no faces at all


def test_surface_distance_of_long_thin_faces_is_the_brute_force_one():
    """A face's bound is its centroid's distance less its farthest corner's: with long thin
    faces (a corner far from the centroid, the others near it), a point near that corner is
    nearest that face though a small face's centroid is nearer. Every distance, face and
    closest point is the brute-force one (a bound of the nearest corner dropped those faces)."""
    from dreamtext.mesh import _SurfaceDistance

    rng = np.random.default_rng(3)
    centres = rng.uniform(-1.0, 1.0, size=(200, 3))
    tips = centres + rng.normal(size=(200, 3)) * 0.6  # one far corner each
    near = centres[:, None] + rng.normal(size=(200, 2, 3)) * 0.01
    vertices = np.concatenate([tips[:, None], near], axis=1).reshape(-1, 3)
    faces = np.arange(len(vertices)).reshape(-1, 3)
    points = tips + rng.normal(size=(200, 3)) * 0.05
    gap, face, closest = _SurfaceDistance(vertices, faces)(points)
    triangles = vertices[faces]
    every = trimesh.triangles.closest_point(
        np.repeat(triangles, len(points), 0), np.tile(points, (len(faces), 1))
    )
    brute = np.linalg.norm(every - np.tile(points, (len(faces), 1)), axis=1)
    brute = brute.reshape(len(faces), -1)
    np.testing.assert_allclose(gap, brute.min(axis=0), atol=1e-12)
    np.testing.assert_array_equal(face, brute.argmin(axis=0))
    np.testing.assert_allclose(np.linalg.norm(closest - points, axis=1), gap, atol=1e-12)
