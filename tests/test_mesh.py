"""Mesh extraction on fields with known answers: grid convention, occupancy, one closed manifold
surface, decimation, UVs, bake."""

import math
import types

import numpy as np
import pytest
import torch
import trimesh
from analytic_field import (
    ALBEDO,
    SphereField,
    direction_albedo,
    hollow_shell,
    noisy_ball,
    noisy_torus,
)
from benchmark_scripts import load_benchmark

import dreamtext.mesh as mesh_module
from dreamtext.errors import DreamtextError
from dreamtext.exportflags import MIN_DECIMATE
from dreamtext.mesh import (
    bake_texture,
    chart_padding,
    decimate,
    defect_vertices,
    dilate,
    drop_crumbs,
    extract_mesh,
    face_components,
    folded_faces,
    grid_centres,
    is_closed_manifold,
    make_manifold,
    marching_cubes,
    mesh_stats,
    orient_outward,
    outside_optical_depth,
    rasterize_uv,
    render_occupancy,
    sample_density_grid,
    unfold,
    unwrap_uv,
    voxelize_solid,
)


class LinearField(torch.nn.Module):
    """σ(x, y, z) = x + 10 y + 100 z: every grid value says where it was sampled."""

    bound = 1.0

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0] + 10 * x[:, 1] + 100 * x[:, 2]


def ball(resolution: int, centre, radius: float) -> np.ndarray:
    """``[R, R, R]`` bool: the cells whose centres lie in a ball (bound 1)."""
    axis = grid_centres(resolution, 1.0)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    return (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= radius**2


def mesh_of(solid: np.ndarray) -> trimesh.Trimesh:
    """The boundary of a boolean grid (bound 1), cleaned like an extraction."""
    values = np.where(solid, 2.0, 0.0)
    return orient_outward(make_manifold(marching_cubes(values, solid, 1.0, 1.0)))


def welded(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Vertices at the same position merged (UVs and normals ignored), nothing else changed."""
    vertices, index = np.unique(mesh.vertices, axis=0, return_inverse=True)
    return trimesh.Trimesh(vertices, index.ravel()[mesh.faces], process=False)


def test_grid_points_are_cell_centres():
    np.testing.assert_allclose(grid_centres(4, 1.0), [-0.75, -0.25, 0.25, 0.75])


def test_density_grid_is_indexed_x_y_z_at_cell_centres():
    grid = sample_density_grid(LinearField(), 4, 1.0)
    c = grid_centres(4, 1.0)
    assert grid.shape == (4, 4, 4)
    assert grid[1, 2, 3] == pytest.approx(c[1] + 10 * c[2] + 100 * c[3], abs=1e-4)
    assert grid[3, 0, 1] == pytest.approx(c[3] + 10 * c[0] + 100 * c[1], abs=1e-4)


def test_density_grid_is_the_same_in_any_chunk_size():
    field = SphereField()
    np.testing.assert_array_equal(
        sample_density_grid(field, 12, 1.0, chunk=7), sample_density_grid(field, 12, 1.0)
    )


class ClockedSphere(SphereField):
    """A sphere whose every density query takes ``seconds`` on a clock of its own (``now``),
    the clock :func:`sample_density_grid` reads in these tests."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds, self.now, self.queries = seconds, 0.0, 0

    def density(self, x: torch.Tensor) -> torch.Tensor:
        self.now += self.seconds
        self.queries += 1
        return super().density(x)


def clocked(monkeypatch, seconds: float) -> ClockedSphere:
    field = ClockedSphere(seconds)
    monkeypatch.setattr(mesh_module, "time", types.SimpleNamespace(monotonic=lambda: field.now))
    return field


def test_the_density_grid_calls_its_check_once_a_second_not_per_chunk(monkeypatch):
    """An export's "is the run still there" (milliseconds) runs while a 256^3 grid is sampled
    (minutes on a CPU), but not at each of its thousands of chunks: 144 chunks of ¼ s are 36 s,
    checked after the 4th, 8th, … 140th chunk."""
    field, checks = clocked(monkeypatch, 0.25), []
    grid = sample_density_grid(field, 12, 1.0, chunk=12, check=lambda: checks.append(field.now))
    assert field.queries == 144 and len(checks) == 35
    assert checks == [1.0 * k for k in range(1, 36)]
    np.testing.assert_array_equal(grid, sample_density_grid(SphereField(), 12, 1.0))


def test_a_check_that_raises_stops_the_density_grid_there(monkeypatch):
    field = clocked(monkeypatch, 0.25)
    checks = []

    def refused() -> None:
        checks.append(1)
        if len(checks) == 2:
            raise DreamtextError("the run was replaced")

    with pytest.raises(DreamtextError, match="the run was replaced"):
        extract_mesh(field, resolution=12, chunk=12, check=refused)
    assert field.queries == 8  # two seconds' worth, of 144


# --- occupancy: what the renders show -------------------------------------------------------


def test_optical_depth_is_the_light_blocked_before_each_cell_centre():
    # A slab across x from cell 8 to 23 (full in y and z): the least depth comes along x.
    grid = np.zeros((32, 32, 32))
    grid[8:24] = 3.0
    h = 2.0 / 32
    depth = outside_optical_depth(grid, 1.0)
    for i in (8, 9, 12):
        assert depth[i, 5, 7] == pytest.approx(h * 3.0 * (i - 8 + 0.5), rel=1e-5)
    assert depth[20, 5, 7] == pytest.approx(h * 3.0 * (23 - 20 + 0.5), rel=1e-5)  # from +x
    assert depth[3, 5, 7] == 0.0


def test_a_cavity_behind_an_opaque_wall_is_occupied():
    grid = np.where(ball(32, (0, 0, 0), 0.6), 100.0, 0.0)
    grid[ball(32, (0, 0, 0), 0.4)] = 0.0  # empty inside
    occupied = render_occupancy(grid, 1.0)
    np.testing.assert_array_equal(occupied, ball(32, (0, 0, 0), 0.6))


def test_density_too_thin_to_stop_half_the_light_is_not_occupied():
    grid = np.where(ball(32, (0, 0, 0), 0.5), 0.3, 0.0)  # optical depth ≤ 0.3 < ln 2 everywhere
    assert not render_occupancy(grid, 1.0).any()


def test_crumbs_are_dropped_and_large_parts_kept():
    big, twin = ball(48, (-0.5, 0, 0), 0.35), ball(48, (0.5, 0, 0), 0.35)
    crumb = ball(48, (0.0, 0.7, 0.7), 0.06)  # under 1 % of a big ball's cells
    solid, dropped = drop_crumbs(big | twin | crumb)
    np.testing.assert_array_equal(solid, big | twin)
    assert dropped == 1


class TwoBalls(SphereField):
    """A hard ball and a small one beside it: at 64³ the small one has 236 cells, 1.01 % of
    the large one's, so the grid keeps it, and its surface encloses under 1 % of the large
    one's volume, so the mesh drops it."""

    def __init__(self):
        super().__init__(radius=0.55, sigma_max=1000.0, width=0.01, centre=(-0.3, 0, 0))
        self.small = SphereField(radius=0.114, sigma_max=1000.0, width=0.01, centre=(0.65, 0, 0))

    def density(self, x):
        return torch.maximum(super().density(x), self.small.density(x))


def test_a_part_the_mesh_drops_for_its_volume_is_counted_with_the_crumbs():
    """It went without a word: mesh.json's dropped_components and the summary counted the
    parts dropped on the grid alone."""
    extraction = extract_mesh(TwoBalls(), resolution=64)
    assert len(np.unique(face_components(extraction.mesh))) == 1
    assert extraction.dropped_components == 1


# --- the surface ------------------------------------------------------------------------------


def test_sphere_mesh_has_the_field_radius_in_world_units():
    mesh = extract_mesh(SphereField(), resolution=64, threshold=50.0).mesh
    radius = np.linalg.norm(mesh.vertices, axis=1)
    assert np.abs(radius - 0.5).max() < 0.01  # 2 % of the radius


def test_off_centre_sphere_mesh_is_where_the_field_puts_it():
    # Catches swapped axes and the half-cell shift of mixing up cell centres and corners.
    centre = (0.3, -0.2, 0.1)
    field = SphereField(radius=0.3, centre=centre)
    mesh = extract_mesh(field, resolution=48, threshold=50.0).mesh
    np.testing.assert_allclose(mesh.vertices.mean(axis=0), centre, atol=0.002)
    radius = np.linalg.norm(mesh.vertices - centre, axis=1)
    assert np.abs(radius - 0.3).max() < 0.006


def test_default_surface_is_where_light_from_outside_falls_to_one_half():
    # Density 100 (0.55 − |x|) / 0.1 over the shell [0.45, 0.55]: along an axis, the optical
    # depth from outside to radius r is 500 (0.55 − r)², which reaches ln 2 at r = 0.5128.
    expected = 0.55 - math.sqrt(math.log(2.0) / 500)  # ln 2 by hand, not mesh.SURFACE_DEPTH
    extraction = extract_mesh(SphereField(), resolution=64)
    assert extraction.threshold is None
    on_axes = np.abs(extraction.mesh.vertices).max(axis=1) > 0.99 * np.linalg.norm(
        extraction.mesh.vertices, axis=1
    )
    radius = np.linalg.norm(extraction.mesh.vertices[on_axes], axis=1)
    assert np.abs(radius - expected).max() < 0.003


def test_sphere_mesh_is_a_closed_manifold_with_outward_normals():
    mesh = extract_mesh(SphereField(), resolution=48, threshold=50.0).mesh
    assert is_closed_manifold(mesh)
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * 0.5**3, rel=0.02)
    outward = np.einsum("ij,ij->i", mesh.face_normals, mesh.triangles_center)
    assert (outward > 0).all()


def test_a_hollow_ball_is_meshed_as_the_ball_without_an_inner_shell():
    mesh = extract_mesh(hollow_shell(), resolution=48).mesh
    assert face_components(mesh).max() == 0  # one surface
    assert np.linalg.norm(mesh.vertices, axis=1).min() > 0.45


def test_a_density_threshold_fills_cavities_too():
    mesh = extract_mesh(hollow_shell(), resolution=48, threshold=10.0).mesh
    assert face_components(mesh).max() == 0
    assert np.linalg.norm(mesh.vertices, axis=1).min() > 0.45


def test_surface_touching_the_cube_is_closed():
    mesh = mesh_of(np.ones((16, 16, 16), dtype=bool))
    assert is_closed_manifold(mesh)
    assert mesh.volume > 0


def test_a_hard_wall_sits_halfway_between_cell_centres():
    # Density jumps from 0 to 10⁴ at |x| = 0.5: on average halfway between the last clear and
    # the first opaque centre; without clamping the depth it would sit half a cell outward.
    field = SphereField(radius=0.5, sigma_max=1e4, width=1e-6)
    volume = extract_mesh(field, resolution=64).mesh.volume
    assert volume == pytest.approx(4 / 3 * np.pi * 0.5**3, rel=0.01)


def test_empty_field_asks_to_train_longer():
    with pytest.raises(DreamtextError, match="train longer"):
        extract_mesh(SphereField(sigma_max=0.0), resolution=16)


def test_threshold_above_the_field_asks_to_lower_it():
    with pytest.raises(DreamtextError, match="lower --threshold"):
        extract_mesh(SphereField(), resolution=16, threshold=500.0)


class OverflowingSphere(SphereField):
    """A sphere whose core density overflowed to infinity (an ``exp`` activation, diverged)."""

    def density(self, x: torch.Tensor) -> torch.Tensor:
        sigma = super().density(x)
        return torch.where(x.norm(dim=-1) < 0.3, torch.full_like(sigma, math.inf), sigma)


def test_an_infinite_density_is_opaque_and_meshes_like_a_large_one():
    """Infinite density made the optical depths NaN, and the export wrote a mesh of 0 faces."""
    overflowing = extract_mesh(OverflowingSphere(), resolution=32)
    finite = extract_mesh(SphereField(), resolution=32)
    assert len(overflowing.mesh.faces) == len(finite.mesh.faces) > 0
    assert np.allclose(overflowing.mesh.vertices, finite.mesh.vertices, atol=1e-5)


def test_a_nan_density_says_the_training_diverged():
    class NanField(SphereField):
        def density(self, x: torch.Tensor) -> torch.Tensor:
            return super().density(x) * torch.nan

    with pytest.raises(DreamtextError, match=r"diverged.*smaller --lr"):
        extract_mesh(NanField(), resolution=16)


def test_a_solid_left_with_no_faces_is_an_error_not_an_empty_mesh(monkeypatch):
    from dreamtext import mesh as mesh_module

    monkeypatch.setattr(mesh_module, "solid_surface", lambda *a: (trimesh.Trimesh(), 7))
    with pytest.raises(DreamtextError, match=r"too broken up to mesh at 16\^3 \(7 crumbs"):
        extract_mesh(SphereField(), resolution=16)


# --- fields whose inside no ray sees, at the default resolution -------------------------------


@pytest.fixture(scope="module", params=["noisy ball", "hollow shell", "noisy torus"])
def solid_export(request):
    """``(field, extraction, decimated)`` at the export defaults (256³ grid, 50,000 faces)."""
    field = {"noisy ball": noisy_ball, "hollow shell": hollow_shell, "noisy torus": noisy_torus}[
        request.param
    ]()
    extraction = extract_mesh(field)
    return field, extraction, decimate(extraction.mesh, 50000)


def test_a_noisy_inside_gives_one_closed_manifold_surface(solid_export):
    _, extraction, _ = solid_export
    assert is_closed_manifold(extraction.mesh)
    assert face_components(extraction.mesh).max() == 0


def test_the_volume_is_the_solid_the_renders_show(solid_export):
    field, extraction, _ = solid_export
    assert extraction.mesh.volume == pytest.approx(field.volume, rel=0.03)


def test_decimation_keeps_one_closed_manifold_surface_and_the_volume(solid_export):
    field, extraction, small = solid_export
    assert len(small.faces) <= 50000 < len(extraction.mesh.faces)
    assert is_closed_manifold(small)
    assert face_components(small).max() == 0
    assert small.volume == pytest.approx(field.volume, rel=0.03)


def test_decimation_folds_under_one_face_in_a_thousand_against_its_corner_normals(
    solid_export,
):
    """Quadric decimation alone turns 0.3-5 % of these faces over 60° from the mean of their
    corner normals (a noisy inside: its marching cubes mesh has a few itself)."""
    small = solid_export[2]
    corners = small.vertex_normals[small.faces].mean(axis=1)
    corners /= np.linalg.norm(corners, axis=1, keepdims=True)
    folded = np.einsum("ij,ij->i", small.face_normals, corners) < 0.5
    assert folded.sum() < len(small.faces) / 1000


def test_a_vertex_pushed_past_its_neighbour_is_unfolded_and_the_sphere_kept():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    vertices = sphere.vertices.copy()
    neighbour = sphere.vertex_neighbors[0][0]
    vertices[0] += 1.6 * (vertices[neighbour] - vertices[0])  # two faces fold over
    folded = trimesh.Trimesh(vertices, sphere.faces, process=False)
    assert folded_faces(folded).sum() == 2
    unfolded = unfold(folded)
    assert not folded_faces(unfolded).any()
    assert len(unfolded.faces) == len(sphere.faces) and is_closed_manifold(unfolded)
    assert unfolded.volume == pytest.approx(sphere.volume, rel=1e-3)


def test_a_vertex_is_moved_only_as_far_as_unfolding_its_faces_needs():
    """The vertex pushed aside and into the sphere folds one face; a tenth of an edge clears
    it. A whole relaxing step took it 0.85 of an edge off the surface it stood on."""
    sphere = trimesh.creation.icosphere(subdivisions=3)
    vertices = sphere.vertices.copy()
    edge = np.linalg.norm(vertices[sphere.vertex_neighbors[0][0]] - vertices[0])
    vertices[0] += edge * np.array([0.187, -0.981, -1.158])
    dented = trimesh.Trimesh(vertices, sphere.faces, process=False)
    assert folded_faces(dented).sum() == 1
    unfolded = unfold(dented)
    assert not folded_faces(unfolded).any()
    assert len(unfolded.faces) == len(sphere.faces) and is_closed_manifold(unfolded)
    assert np.linalg.norm(unfolded.vertices - vertices, axis=1).max() < 0.25 * edge


def test_a_spike_with_one_steep_face_keeps_its_tip():
    """A vertex drawn 2.3 edges out of the sphere, a spike (or, turned inside out, a pit of
    the marching cubes surface) whose one steep face is folded: the flip of that face's long
    edge leaves a folded face, so it is undone, and the tip is lowered 0.3 of an edge; before,
    the flip and a whole relaxing step took it 2.3 edges, back onto the sphere."""
    sphere = trimesh.creation.icosphere(subdivisions=3)
    vertices = sphere.vertices.copy()
    edge = np.linalg.norm(vertices[sphere.vertex_neighbors[0][0]] - vertices[0])
    vertices[0] += edge * np.array([-0.925, 2.071, -0.352])
    spiked = trimesh.Trimesh(vertices, sphere.faces, process=False)
    assert folded_faces(spiked).sum() == 1
    unfolded = unfold(spiked)
    assert not folded_faces(unfolded).any()
    assert len(unfolded.faces) == len(sphere.faces) and is_closed_manifold(unfolded)
    assert np.linalg.norm(unfolded.vertices - vertices, axis=1).max() < 0.5 * edge


def test_a_pleat_on_a_box_side_is_unfolded_and_the_box_corners_kept():
    box = trimesh.creation.box()  # 12 faces, sides at ±0.5
    top = np.isclose(box.face_normals[:, 2], 1.0)
    ring = [i for i in range(8) if np.isclose(box.vertices[i, 2], 0.5)]
    ring.sort(key=lambda i: math.atan2(box.vertices[i, 1], box.vertices[i, 0]))
    # the top side as a fan of four faces round a centre vertex pushed out past its edge x = 0.5
    vertices = np.concatenate([box.vertices, [[1.5, 0.0, 0.5]]])
    fan = [[8, ring[k], ring[(k + 1) % 4]] for k in range(4)]
    pleated = trimesh.Trimesh(vertices, np.concatenate([box.faces[~top], fan]), process=False)
    assert folded_faces(pleated).sum() == 1 and pleated.volume == pytest.approx(1.0)
    unfolded = unfold(pleated)
    assert not folded_faces(unfolded).any() and is_closed_manifold(unfolded)
    assert unfolded.volume == pytest.approx(1.0, rel=0.01)  # relaxing the corners made it 0.69
    np.testing.assert_allclose(unfolded.vertices[:8], box.vertices, atol=1e-12)
    assert unfolded.vertices[8, 2] == pytest.approx(0.5)  # moved back within the top side


def test_folds_recomputed_round_the_changed_vertices_are_the_whole_mesh_s():
    """unfold's rounds recompute :func:`folded_faces` only near the vertices they move or whose
    faces they flip; that must give the whole-mesh check's values, bit for bit."""
    sphere = trimesh.creation.icosphere(subdivisions=3)
    faces = np.asarray(sphere.faces)
    edge = np.linalg.norm(sphere.vertices[sphere.vertex_neighbors[0][0]] - sphere.vertices[0])
    before = folded_faces(sphere)
    rng = np.random.default_rng(0)
    changed = np.zeros(len(sphere.vertices), dtype=bool)
    changed[rng.choice(len(changed), 30, replace=False)] = True
    vertices = sphere.vertices.copy()
    vertices[changed] += rng.normal(scale=0.7 * edge, size=(30, 3))
    after = folded_faces(trimesh.Trimesh(vertices, faces, process=False))
    assert after.sum() > 10 and not before.any()
    np.testing.assert_array_equal(mesh_module._refolded(vertices, faces, before, changed), after)
    # faces replaced, positions kept: the longest edge of the first folded face flipped
    f = int(np.flatnonzero(after)[0])
    a, b, c = mesh_module._longest_edge_first(vertices, faces[f])
    g = next(g for g in range(len(faces)) if {a, b} <= set(faces[g]) and g != f)
    d = next(v for v in faces[g] if v not in (a, b))
    flipped = faces.copy()
    flipped[f], flipped[g] = [a, d, c], [b, c, d]
    corners = np.zeros_like(changed)
    corners[[a, b, c, d]] = True
    expected = folded_faces(trimesh.Trimesh(vertices, flipped, process=False))
    assert not np.array_equal(expected, after)
    np.testing.assert_array_equal(
        mesh_module._refolded(vertices, flipped, after, corners), expected
    )


def test_a_mesh_that_is_not_closed_is_not_unfolded():
    """unfold's rounds keep a closed manifold one and check only what they change; on an open
    mesh they would not see the hole, so it is left as it is."""
    sphere = trimesh.creation.icosphere(subdivisions=3)
    vertices = sphere.vertices.copy()
    neighbour = sphere.vertex_neighbors[0][0]
    vertices[0] += 1.6 * (vertices[neighbour] - vertices[0])
    far = np.argmax(np.linalg.norm(sphere.triangles_center - vertices[0], axis=1))
    holed = trimesh.Trimesh(vertices, np.delete(sphere.faces, far, axis=0), process=False)
    assert folded_faces(holed).sum() == 2 and not is_closed_manifold(holed)
    kept = unfold(holed)
    np.testing.assert_array_equal(kept.vertices, holed.vertices)
    np.testing.assert_array_equal(kept.faces, holed.faces)


def test_a_collapse_is_checked_for_defects_on_the_faces_round_it():
    """Collapsing a sliver's edge is checked on the faces round the vertices it changed only;
    merging two vertices that share one neighbour but no edge (the surface pinched there) is
    found there, as the whole-mesh check finds it, and an edge's collapse passes."""
    sphere = trimesh.creation.icosphere(subdivisions=2)
    faces = np.asarray(sphere.faces)
    neighbours = [set(ring) for ring in sphere.vertex_neighbors]
    edge_end = min(neighbours[0])
    apart = next(
        v for v in range(len(neighbours)) if v != 0 and len(neighbours[0] & neighbours[v]) == 1
    )
    assert apart not in neighbours[0]
    for q, pinched in ((edge_end, False), (apart, True)):
        merged = faces[np.isin(faces, [0, q]).sum(axis=1) < 2]  # an edge's two faces go
        merged[merged == q] = 0
        changed = np.zeros(len(neighbours), dtype=bool)
        changed[[0, q, *neighbours[0], *neighbours[q]]] = True
        assert defect_vertices(sphere.vertices, merged).any() == pinched
        assert mesh_module._defect_after(sphere.vertices, merged, changed) == pinched


def test_a_needle_face_s_short_edge_is_collapsed_and_the_sphere_kept():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    vertices = sphere.vertices.copy()
    p, q = sphere.edges_unique[0]
    vertices[q] = vertices[p] + 1e-4 * (vertices[q] - vertices[p])  # the two faces on p–q: needles
    needled = trimesh.Trimesh(vertices, sphere.faces, process=False)
    area = needled.area_faces
    assert (area < 1e-3 * np.median(area)).sum() == 2 and not folded_faces(needled).any()
    collapsed = unfold(needled)
    area = collapsed.area_faces
    assert (area < 1e-3 * np.median(area)).sum() == 0 and not folded_faces(collapsed).any()
    assert len(collapsed.faces) == len(sphere.faces) - 2 and is_closed_manifold(collapsed)
    assert len(collapsed.vertices) == len(sphere.vertices) - 1  # the unused end is dropped
    assert collapsed.volume == pytest.approx(needled.volume, rel=1e-6)


def test_the_mesh_solid_is_the_field_occupancy(solid_export):
    _, extraction, small = solid_export
    stats = mesh_stats(small, extraction.occupancy, 1.0)
    assert (stats.components, stats.watertight, stats.manifold) == (1, True, True)
    assert stats.iou_field > 0.98


def test_uv_seams_welded_by_position_give_the_closed_surface_back(solid_export):
    small = decimate(solid_export[2], 5000)  # xatlas takes ~1 min on 50,000 noisy faces
    unwrapped, _ = unwrap_uv(small, 1024)
    assert len(unwrapped.vertices) > len(small.vertices)  # seams are split for the formats
    closed = welded(unwrapped)
    assert is_closed_manifold(closed)
    assert len(closed.vertices) == len(small.vertices)


# --- topology ---------------------------------------------------------------------------------


def box_with(faces_to_add=(), vertices_to_add=()) -> tuple[np.ndarray, np.ndarray]:
    box = trimesh.creation.box()
    vertices = np.concatenate([box.vertices, np.reshape(vertices_to_add, (-1, 3))])
    faces = np.concatenate([box.faces, np.reshape(faces_to_add, (-1, 3))]).astype(np.int64)
    return vertices, faces


def test_a_closed_box_has_no_defects():
    vertices, faces = box_with()
    assert not defect_vertices(vertices, faces).any()


@pytest.mark.parametrize(
    "defect",
    ["hole", "flipped face", "fin", "zero-area face", "two surfaces touching at a vertex"],
)
def test_each_kind_of_defect_is_found_and_repaired(defect):
    box = trimesh.creation.box()
    vertices, faces = box.vertices, box.faces.copy()
    if defect == "hole":
        faces = faces[1:]
    elif defect == "flipped face":
        faces[0] = faces[0][::-1]
    elif defect == "fin":  # two triangles folded onto each other, hanging off an edge
        vertices, faces = box_with([[0, 1, 8], [8, 1, 0]], [[-0.5, -0.5, 0.9]])
    elif defect == "zero-area face":  # a vertex in the middle of an edge, fanned
        a, b = faces[0][0], faces[0][1]
        vertices = np.concatenate([vertices, (vertices[a] + vertices[b])[None] / 2])
        faces = np.concatenate([faces, [[a, len(vertices) - 1, b]]])
    else:  # a second box sharing one corner
        other = box.vertices + (box.vertices[0] - box.vertices[7])
        vertices = np.concatenate([vertices, other])
        faces = np.concatenate([faces, box.faces + 8])
        faces[faces == 8 + 7] = 0
    assert defect_vertices(vertices, faces).any()
    repaired = make_manifold(trimesh.Trimesh(vertices, faces, process=False))
    assert is_closed_manifold(repaired)


def test_a_fin_is_removed_and_the_box_kept():
    vertices, faces = box_with([[0, 1, 8], [8, 1, 0]], [[-0.5, -0.5, 0.9]])
    repaired = make_manifold(trimesh.Trimesh(vertices, faces, process=False))
    assert len(repaired.faces) == 12 and len(repaired.vertices) == 8


def test_triangle_soup_is_welded_and_inward_winding_flipped():
    box = trimesh.creation.box()
    soup = trimesh.Trimesh(
        vertices=box.triangles.reshape(-1, 3),
        faces=np.arange(len(box.faces) * 3).reshape(-1, 3)[:, ::-1],  # inward-facing
        process=False,
    )
    cleaned = orient_outward(make_manifold(soup))
    assert len(cleaned.vertices) == 8
    assert is_closed_manifold(cleaned)
    assert cleaned.volume == pytest.approx(1.0)


# --- the mesh as a solid ----------------------------------------------------------------------


def test_voxelized_box_is_exactly_the_cells_inside_it():
    box = trimesh.creation.box(extents=(0.8, 0.6, 1.0))
    solid = voxelize_solid(box, 32, 1.0)
    axis = grid_centres(32, 1.0)
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    expected = (np.abs(x) < 0.4) & (np.abs(y) < 0.3) & (np.abs(z) < 0.5)
    np.testing.assert_array_equal(solid, expected)


def test_voxelized_mesh_with_an_inner_shell_is_filled():
    outer = trimesh.creation.box(extents=(0.8, 0.8, 0.8))
    inner = trimesh.creation.box(extents=(0.4, 0.4, 0.4))
    both = trimesh.util.concatenate([outer, inner])
    np.testing.assert_array_equal(voxelize_solid(both, 32, 1.0), voxelize_solid(outer, 32, 1.0))


def test_voxelizing_a_marching_cubes_mesh_on_its_own_grid_gives_its_solid_back():
    # Marching cubes puts vertices on grid lines, where the columns would hit them exactly.
    solid = ball(32, (0.1, 0, -0.05), 0.55)
    np.testing.assert_array_equal(voxelize_solid(mesh_of(solid), 32, 1.0), solid)


def test_voxelizing_fills_only_the_box_of_the_columns_the_mesh_crosses(monkeypatch):
    """The measure's fill runs on the columns a mesh crosses, not the whole grid (at 256^3 the
    whole grid's fill cost most of an export's IoU), with the same cells as a fill of all of it:
    a box off centre, against the grid's side, with a tunnel to the side that is not filled and
    a sealed cavity that is."""
    solid = np.zeros((32, 32, 32), dtype=bool)
    solid[0:12, 5:17, 8:26] = True  # against the x = 0 side of the grid
    solid[0:9, 10:12, 15:17] = False  # a tunnel from that side, 9 cells deep: not filled
    mesh = mesh_of(solid)
    shell = trimesh.util.concatenate([mesh, trimesh.creation.box(extents=(0.1, 0.1, 0.1))])
    shell.vertices[len(mesh.vertices) :] += grid_centres(32, 1.0)[[5, 12, 20]]  # a cavity inside
    filled = []
    fill_holes = mesh_module.ndimage.binary_fill_holes

    def recorded(inside: np.ndarray) -> np.ndarray:
        filled.append(inside.shape)
        return fill_holes(inside)

    monkeypatch.setattr(mesh_module.ndimage, "binary_fill_holes", recorded)
    np.testing.assert_array_equal(voxelize_solid(mesh, 32, 1.0), solid)
    np.testing.assert_array_equal(voxelize_solid(shell, 32, 1.0), solid)
    assert filled == [(12, 12, 32), (12, 12, 32)]


def test_surface_distance_tries_only_the_faces_that_can_be_nearest(monkeypatch):
    """Distances to a mesh of small faces and one large far one are the brute-force ones, and
    only faces whose own bounding ball can hold the nearest point are measured: the large face
    sets the largest radius, which let every small face within it be measured for each point."""
    rng = np.random.default_rng(0)
    fine = trimesh.creation.icosphere(subdivisions=4, radius=0.3)
    far = trimesh.Trimesh([[2.0, -2.0, 0.0], [2.0, 2.0, 0.0], [2.0, 0.0, 3.0]], [[0, 1, 2]])
    both = trimesh.util.concatenate([fine, far])
    directions = rng.normal(size=(50, 3))
    points = 0.3 * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    points *= rng.uniform(0.9, 1.1, size=(50, 1))  # within 0.03 of the sphere
    measured = []
    closest_point = trimesh.triangles.closest_point

    def counted(triangles: np.ndarray, at: np.ndarray) -> np.ndarray:
        measured.append(len(triangles))
        return closest_point(triangles, at)

    monkeypatch.setattr(trimesh.triangles, "closest_point", counted)
    gap, face, closest = mesh_module._SurfaceDistance(both.vertices, both.faces)(points)
    every = closest_point(
        np.repeat(both.triangles, len(points), 0), np.tile(points, (len(both.faces), 1))
    )
    brute = np.linalg.norm(every - np.tile(points, (len(both.faces), 1)), axis=1)
    brute = brute.reshape(len(both.faces), -1)
    np.testing.assert_allclose(gap, brute.min(axis=0), atol=1e-12)
    np.testing.assert_array_equal(face, brute.argmin(axis=0))
    np.testing.assert_allclose(np.linalg.norm(closest - points, axis=1), gap, atol=1e-12)
    assert sum(measured) < 20 * len(points)  # of 5,121 faces: all of them before


def _pit_sphere(subdivisions: int, depth: float, width: float) -> trimesh.Trimesh:
    """An icosphere with a conical pit at vertex 0, ``depth`` deep and ``width`` wide at its
    mouth (radius from its axis): the marching-cubes surface of a narrow pit."""
    sphere = trimesh.creation.icosphere(subdivisions=subdivisions)
    vertices = sphere.vertices.copy()
    axis = vertices[0] / np.linalg.norm(vertices[0])
    along = np.linalg.norm(np.cross(vertices, axis), axis=1)
    near = (vertices @ axis > 0) & (along < width)
    vertices[near] *= (1 - depth * (1 - along[near] / width))[:, None]
    return trimesh.Trimesh(vertices, sphere.faces, process=False)


def _lifted_pit_tip(width: float):
    """A coarse sphere whose vertex 0 decimation sank 2 edges into a pit of ``width`` edges,
    after unfold (which lifts it out of the pit), the fine surface with that pit, its tips."""
    coarse = trimesh.creation.icosphere(subdivisions=3)
    edge = np.linalg.norm(coarse.vertices[coarse.vertex_neighbors[0][0]] - coarse.vertices[0])
    vertices = coarse.vertices.copy()
    vertices[0] *= 1 - 2 * edge
    sunk = trimesh.Trimesh(vertices, coarse.faces, process=False)
    assert folded_faces(sunk).any()
    unfolded, used, moved = mesh_module._unfold(sunk)
    start = vertices[used]
    reference = mesh_module._Reference(_pit_sphere(5, 2 * edge, width * edge))
    return unfolded, start, moved, reference, edge


def test_a_pit_tip_unfold_lifted_is_put_back_within_the_face_budget():
    """Unfold clears the folds round a vertex sunk 2 edges into a pit by lifting it 2 edges,
    leaving the pit's bottom uncovered; refined (its spokes split in three, the rounds run
    again) it stays in the pit with no fold, 12 faces more, and the mesh is nearer the pit."""
    unfolded, start, moved, reference, edge = _lifted_pit_tip(1.0)
    assert not folded_faces(unfolded).any() and moved[0] > 1.5 * edge
    tips = mesh_module._lifted_tips(unfolded, start, moved)
    assert list(tips) == [0]
    budget = len(unfolded.faces) + 20
    refined = mesh_module._refine_tips(unfolded, start, tips, reference, budget)
    assert refined is not None
    assert len(unfolded.faces) < len(refined.faces) <= budget
    assert is_closed_manifold(refined) and not folded_faces(refined).any()
    ball = (start[0], mesh_module._tip_radius(unfolded, start, 0))
    inward_before, before = mesh_module._tip_measure(unfolded, *ball, reference)
    inward_after, after = mesh_module._tip_measure(refined, *ball, reference)
    assert inward_after <= inward_before and after < 0.5 * before
    gap = mesh_module._SurfaceDistance(refined.vertices, refined.faces)(start[:1])[0]
    assert gap[0] < 0.25 * edge  # the pit's bottom is covered again (it was 2 edges off)


def test_a_pit_tip_is_not_refined_past_the_face_budget():
    unfolded, start, moved, reference, _ = _lifted_pit_tip(1.0)
    tips = mesh_module._lifted_tips(unfolded, start, moved)
    budget = len(unfolded.faces) + 11  # the refinement takes 12
    assert mesh_module._refine_tips(unfolded, start, tips, reference, budget) is None


def _decimations_leave_the_lifted_tip(monkeypatch, width: float) -> tuple[list[int], int]:
    """Every decimation ``decimate`` asks for returns the lifted-tip mesh of
    :func:`_lifted_pit_tip` (fast-simplification does not leave one on a mesh small enough for
    a test), refusing a target ≤ 0 as fast-simplification does. Returns the targets asked for
    (filled as it runs) and the faces a refinement of its tip reserves."""
    unfolded, start, moved, reference, _ = _lifted_pit_tip(width)
    targets: list[int] = []

    def decimate_once(mesh, target_faces):
        if target_faces <= 0:
            raise ValueError("target_count must be greater than 0")
        targets.append(target_faces)
        return unfolded, start, moved

    monkeypatch.setattr(mesh_module, "_decimate_once", decimate_once)
    monkeypatch.setattr(mesh_module, "_Reference", lambda mesh: reference)
    spokes = int((np.asarray(unfolded.faces) == 0).any(axis=1).sum())
    return targets, mesh_module.TIP_FACES * spokes


@pytest.mark.parametrize("width, refined", [(1.0, True), (0.5, False)])
def test_decimate_makes_room_for_a_tip_it_refines_and_keeps_its_target(monkeypatch, width, refined):
    """Through ``decimate`` itself: where the trial refinement of a lifted tip wins, the mesh is
    decimated again TIP_FACES faces per spoke of the tip under the target, and the refined
    result is returned, within the target; where it does not win (a pit half a face wide), the
    first decimation is returned and there is no second one. fast-simplification is replaced by
    the lifted-tip mesh (it does not leave one on a mesh small enough for a test)."""
    unfolded, start, _, _, edge = _lifted_pit_tip(width)
    targets, reserve = _decimations_leave_the_lifted_tip(monkeypatch, width)
    target = len(unfolded.faces) + reserve
    fine = trimesh.creation.icosphere(subdivisions=5)  # more faces than the target
    out = decimate(fine, target)
    assert is_closed_manifold(out) and not folded_faces(out).any()
    gap = mesh_module._SurfaceDistance(out.vertices, out.faces)(start[:1])[0][0]
    if refined:
        assert targets == [target, target - reserve]
        assert len(unfolded.faces) < len(out.faces) <= target
        assert gap < 0.25 * edge  # the pit's bottom is covered (unfold left it 2 edges off)
    else:
        assert targets == [target]
        assert len(out.faces) == len(unfolded.faces) and gap > edge


def test_decimate_to_a_target_that_leaves_no_room_for_a_tip_keeps_its_first_decimation(
    monkeypatch,
):
    """``--decimate 14`` of a noisy torus: the second decimation, made to leave room for a
    refined tip, asked fast-simplification for 14 − 16 = −2 faces, and its ValueError ended the
    export in a traceback. A target under the reserve plus a closed mesh's fewest faces keeps
    the first decimation."""
    unfolded = _lifted_pit_tip(1.0)[0]
    targets, reserve = _decimations_leave_the_lifted_tip(monkeypatch, 1.0)
    fine = trimesh.creation.icosphere(subdivisions=5)
    for target in (reserve - 2, reserve + MIN_DECIMATE - 1):
        targets.clear()
        out = decimate(fine, target)
        assert targets == [target] and len(out.faces) == len(unfolded.faces)


def test_a_refinement_that_turns_a_face_inward_is_not_kept():
    """In a pit half a face wide the refined fan nearest the tip faces into the solid (its
    front inside the pit's wall, its back in the pit): nearer, but not kept."""
    unfolded, start, moved, reference, _ = _lifted_pit_tip(0.5)
    tips = mesh_module._lifted_tips(unfolded, start, moved)
    budget = len(unfolded.faces) + 20
    assert mesh_module._refine_tip(unfolded, start, int(tips[0]), reference) is None
    assert mesh_module._refine_tips(unfolded, start, tips, reference, budget) is None


def test_the_side_of_a_box_a_point_is_on_is_exact_at_its_edges_and_corners_too():
    """Points round a 12-face box: many of their closest points lie on an edge or a corner,
    where the side is read from the edge's or the vertex's pseudo-normal."""
    box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    points = np.random.default_rng(0).uniform(-1.0, 1.0, size=(4000, 3))
    inside = mesh_module._Reference(box).inside(points)
    assert np.array_equal(inside, (np.abs(points) < 0.5).all(axis=1))


# --- decimation, UVs, texture -----------------------------------------------------------------


def test_decimation_reaches_the_target_and_keeps_the_shape():
    mesh = extract_mesh(SphereField(), resolution=48, threshold=50.0).mesh
    small = decimate(mesh, 1000)
    assert 900 <= len(small.faces) <= 1000
    assert is_closed_manifold(small)
    assert small.volume == pytest.approx(mesh.volume, rel=0.02)


def test_uv_unwrap_keeps_the_surface_and_stays_in_the_unit_square():
    mesh = decimate(extract_mesh(SphereField(), resolution=32, threshold=50.0).mesh, 500)
    unwrapped, uv = unwrap_uv(mesh)
    assert uv.shape == (len(unwrapped.vertices), 2)
    assert uv.min() >= 0.0 and uv.max() <= 1.0
    assert len(unwrapped.faces) == len(mesh.faces)
    assert unwrapped.area == pytest.approx(mesh.area)


def test_uv_unwrap_gives_every_face_of_a_small_mesh_its_own_texels():
    """xatlas leaves out each face of area ≤ FLT_EPSILON (1.2e-7) in the units it is given: all
    three UVs (0, 0), the texture's corner colour. A 50,000-face export of a ±1 scene keeps
    such slivers; here a sphere 0.003 across, every face of which is that small."""
    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.0015)
    assert sphere.area_faces.max() < np.finfo(np.float32).eps
    unwrapped, uv = unwrap_uv(sphere, 256)
    corners = uv[unwrapped.faces]
    uv_area = 0.5 * np.abs(
        (corners[:, 1, 0] - corners[:, 0, 0]) * (corners[:, 2, 1] - corners[:, 0, 1])
        - (corners[:, 2, 0] - corners[:, 0, 0]) * (corners[:, 1, 1] - corners[:, 0, 1])
    )
    assert (uv_area > 0).all()
    assert unwrapped.area == pytest.approx(sphere.area)


def test_rasterised_triangle_covers_exactly_the_texels_inside_it():
    uv = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # the lower-left half of the image
    face, bary = rasterize_uv(uv, np.array([[0, 1, 2]]), 8)
    rows, cols = np.mgrid[0:8, 0:8]
    np.testing.assert_array_equal(face == 0, cols <= rows)  # u + v ≤ 1, row 0 is v = 1
    centre_u, centre_v = (cols + 0.5) / 8, 1 - (rows + 0.5) / 8
    inside = face == 0
    np.testing.assert_allclose((bary @ uv)[inside], np.stack([centre_u, centre_v], -1)[inside])


def test_rasterised_triangles_cover_the_same_texels_however_many_go_in_a_chunk():
    """Triangles are rasterised about ``chunk`` candidate texels at a time; every chunk after
    the first tested its triangles at the wrong texels, so a 2048 px texture (over 2^22
    candidates) baked half of the README cube's faces the gutter's mean colour."""
    rows, cols = np.mgrid[0:9, 0:9] / 8.0
    uv = np.stack([cols.ravel(), rows.ravel()], -1)  # a 9 x 9 grid of corners over the image
    corner = (np.arange(8)[:, None] * 9 + np.arange(8)[None, :]).ravel()
    faces = np.concatenate(
        [
            np.stack([corner, corner + 1, corner + 10], -1),
            np.stack([corner, corner + 10, corner + 9], -1),
        ]
    )
    whole, whole_bary = rasterize_uv(uv, faces, 32)
    assert (whole >= 0).all()
    chunked, chunked_bary = rasterize_uv(uv, faces, 32, chunk=40)
    np.testing.assert_array_equal(chunked, whole)
    np.testing.assert_allclose(chunked_bary, whole_bary)


def test_dilation_grows_colour_into_the_gutter_by_the_given_width():
    image = np.zeros((9, 9, 3), dtype=np.float32)
    filled = np.zeros((9, 9), dtype=bool)
    image[4, 4], filled[4, 4] = (0.2, 0.4, 0.6), True
    grown, grown_filled = dilate(image, filled, 2)
    np.testing.assert_array_equal(grown_filled[2:7, 2:7], True)
    assert grown_filled.sum() == 25
    np.testing.assert_allclose(grown[grown_filled], [[0.2, 0.4, 0.6]] * 25)


def test_baked_texture_of_a_uniform_field_is_its_albedo_everywhere():
    field = SphereField()
    mesh = decimate(extract_mesh(field, resolution=32, threshold=50.0).mesh, 500)
    mesh, uv = unwrap_uv(mesh, 64)
    texture = bake_texture(field, mesh, uv, 64) / 255.0
    np.testing.assert_allclose(texture.reshape(-1, 3).mean(axis=0), ALBEDO, atol=0.01)
    assert np.abs(texture - ALBEDO).max() < 0.01  # gutters filled, no black background


def test_baked_texel_under_each_vertex_holds_that_vertex_colour():
    field = SphereField(albedo=direction_albedo)
    mesh = decimate(extract_mesh(field, resolution=48, threshold=50.0).mesh, 2000)
    mesh, uv = unwrap_uv(mesh, 256)
    size = 256
    texture = bake_texture(field, mesh, uv, size) / 255.0
    cols = np.clip((uv[:, 0] * size).astype(int), 0, size - 1)
    rows = np.clip(((1 - uv[:, 1]) * size).astype(int), 0, size - 1)
    expected = direction_albedo(torch.from_numpy(mesh.vertices)).numpy()
    assert np.abs(texture[rows, cols] - expected).mean() < 0.02


def test_a_texture_smaller_than_its_faces_shows_each_face_its_own_colour():
    """An 8 px texture for 4,000 faces of a sphere coloured by octant: 14 texel centres lie in
    a triangle, so the texel at most faces' UV centroid was the dilation's guess from a few
    neighbours, another octant's colour for 46 % of the faces; it holds the colour of the faces
    whose centroids it holds (22 % off, where one texel spans two octants)."""

    def octants(x: torch.Tensor) -> torch.Tensor:
        return 0.5 + 0.4 * torch.sign(x)

    field = SphereField(albedo=octants)
    mesh = decimate(extract_mesh(field, resolution=48, threshold=50.0).mesh, 4000)
    size = 8
    mesh, uv = unwrap_uv(mesh, size)
    texture = bake_texture(field, mesh, uv, size) / 255.0
    centre = uv[mesh.faces].mean(axis=1)
    cols = np.clip((centre[:, 0] * size).astype(int), 0, size - 1)
    rows = np.clip(((1 - centre[:, 1]) * size).astype(int), 0, size - 1)
    expected = octants(torch.from_numpy(np.array(mesh.triangles_center))).numpy()
    assert (np.abs(texture[rows, cols] - expected).max(axis=1) > 0.4).mean() < 0.3


@pytest.fixture(scope="module")
def sphere_of_directions() -> tuple[SphereField, trimesh.Trimesh]:
    """A sphere coloured by direction (:func:`direction_albedo`), 2,000 faces."""
    field = SphereField(albedo=direction_albedo)
    return field, decimate(extract_mesh(field, resolution=48, threshold=50.0).mesh, 2000)


@pytest.mark.parametrize("size", [256, 1024])
def test_uv_charts_keep_their_padding_from_the_texture_border(sphere_of_directions, size):
    """Every UV is at least the padding (1 texel at 256 px, 4 at 1024) and xatlas's half texel
    from the texture's edges, so a bilinear lookup on the texture and its first mip levels
    reads no texel across the border. xatlas keeps no padding at its atlas's outer edges:
    the charts came 0.41 texels from them at 256 px, and a viewer that repeats the texture
    (glTF's default wrap mode, an OBJ's only one) blended in the opposite edge's texels."""
    _, surface = sphere_of_directions
    _, uv = unwrap_uv(surface, size)
    nearest = np.minimum(uv, 1.0 - uv).min() * size
    assert nearest >= chart_padding(size) + 0.5 - 1e-6, nearest


def test_chart_edges_look_up_their_own_colour_whether_the_texture_repeats_or_clamps(
    sphere_of_directions,
):
    """A viewer's bilinear lookup at points on every chart's edge (seams) of the 256 px
    texture, repeated and clamped, reads the albedo there within 3 of 255 levels (its 8 bits,
    and the colour's change over a texel): the gutter's dilated texels hold the chart's own
    colour. On its first mip level (the object drawn at half that size) the repeated and the
    clamped texture read the same, within a level: the charts keep 1.5 texels from the border,
    and a lookup there reads no texel across it. With the charts within half a texel of the
    border, the repeated mip level read up to 12.5 levels off (the opposite edge's colour)."""
    bench = load_benchmark("texture_edges", "texture_edges_benchmark")
    field, surface = sphere_of_directions
    size = 256
    mesh, uv = unwrap_uv(surface, size)
    texture = bake_texture(field, mesh, uv, size).astype(np.float64)
    where, points, _ = bench.seam_points(mesh, uv)
    expected = direction_albedo(torch.from_numpy(points)).numpy() * 255.0
    for wrap in ("repeat", "clamp"):
        error = np.abs(bench.bilinear(texture, where, wrap) - expected).max(axis=1)
        assert error.max() <= 3.0, (wrap, error.max())
    level = bench.mip_level(texture)
    wrapped = bench.bilinear(level, where, "repeat") - bench.bilinear(level, where, "clamp")
    assert np.abs(wrapped).max() <= 1.0


@pytest.fixture(scope="module")
def torus_of_charts() -> trimesh.Trimesh:
    """A noisy torus of 4,000 faces: xatlas cuts it into 119 small charts."""
    return decimate(extract_mesh(noisy_torus(), 64).mesh, 4000)


def test_chart_padding_is_a_texel_for_each_256_of_the_texture_and_at_least_one():
    """``max(1, S / 256)``: the charts' edges clean wherever the texture is drawn at 256 px or
    more (mip levels up to log2 of it), one texel below 512 px, where a texture is mostly drawn
    larger than itself; the former ``max(2, S / 256)`` took 2 there, ``max(1, S / 512)``
    would take 2 at 1024 px (both measured in the tests below and benchmarks/RESULTS.md)."""
    sizes = (8, 64, 128, 256, 512, 1024, 2048, 4096)
    assert [chart_padding(size) for size in sizes] == [1, 1, 1, 1, 2, 4, 8, 16]


def test_a_small_texture_keeps_its_area_for_many_small_charts(torus_of_charts):
    """At 128 px the noisy torus's 119 charts cover 30 % of the texels, one texel apart; two
    texels apart (the former ``max(2, S / 256)``) they covered 15 %: half the texels for the
    field's colours, in a texture that a viewer draws larger than itself, where a lookup
    reads level 0 alone and one texel of gutter keeps it clean (the next test but one)."""
    mesh, uv = unwrap_uv(torus_of_charts, 128)
    face_of, _ = rasterize_uv(uv, mesh.faces, 128)
    assert (face_of >= 0).mean() >= 0.25


def test_chart_edges_read_no_other_chart_where_the_texture_is_drawn_at_256_px(torus_of_charts):
    """At 1024 px (the default) the charts keep 4 texels apart, so a lookup at a chart's edge
    on mip levels 0-2 (the texture drawn at 1024, 512 and 256 px on screen) reads its own
    chart's texels alone, repeated or clamped (benchmarks/texture_edges.py's chart_bleed: every
    chart one colour, laid out and dilated as the bake does). Two texels apart
    (``max(1, S / 512)``) 2.1 % of the torus's edge lookups on level 2 read another chart,
    up to 26 levels off."""
    bench = load_benchmark("texture_edges", "texture_edges_benchmark")
    mesh, uv = unwrap_uv(torus_of_charts, 1024)
    for level, bleed in enumerate(bench.chart_bleed(mesh, uv, 1024, 3)):
        assert bleed.max() <= bench.BLEED_LEVELS, (level, bleed.max())


def test_chart_edges_read_no_other_chart_on_a_small_texture_itself(torus_of_charts):
    """At 128 and 256 px, one texel apart, a lookup at a chart's edge on the texture itself
    (level 0: the texture drawn at its size or larger) reads its own chart's texels alone."""
    bench = load_benchmark("texture_edges", "texture_edges_benchmark")
    for size in (128, 256):
        mesh, uv = unwrap_uv(torus_of_charts, size)
        (bleed,) = bench.chart_bleed(mesh, uv, size, 1)
        assert bleed.max() <= bench.BLEED_LEVELS, (size, bleed.max())


def test_charts_too_many_for_the_texture_are_packed_closer_and_the_warning_names_a_size(
    sphere_of_directions, caplog
):
    """At 8 px the sphere's 7 charts, each at least 3 × 3 texels with its padding, do not fit:
    they are stretched over the texture as xatlas packed them, half a texel in from its border
    (a bilinear lookup on the texture reads no texel across it), and a warning says so and
    names a --texture-size that takes them with their padding."""
    _, surface = sphere_of_directions
    with caplog.at_level("WARNING", logger="dreamtext.mesh"):
        _, uv = unwrap_uv(surface, 8)
    (record,) = [r for r in caplog.records if "do not fit a 8 px texture" in r.getMessage()]
    assert np.minimum(uv, 1.0 - uv).min() * 8 == pytest.approx(0.5)
    fits = int(record.getMessage().split("--texture-size ")[1].split()[0])
    caplog.clear()
    with caplog.at_level("WARNING", logger="dreamtext.mesh"):
        _, uv = unwrap_uv(surface, fits)
    assert not [r for r in caplog.records if "do not fit" in r.getMessage()]
    assert np.minimum(uv, 1.0 - uv).min() * fits >= chart_padding(fits) + 0.5 - 1e-6


def test_the_size_the_warning_names_is_tried_as_unwrap_uv_packs_at_it(
    sphere_of_directions, caplog, monkeypatch
):
    """The --texture-size the too-small warning names is the smallest power-of-two multiple
    of the size asked whose packing fits as unwrap_uv packs at that size: in its texture less
    the padding on both sides, with that padding between charts. Tried in the whole texture
    instead, it could name a size whose charts do not fit its inner square, which then warns
    again."""
    _, surface = sphere_of_directions
    tried = []
    repack = mesh_module.repack_charts

    def recorded(texels, faces, size, padding):
        packed = repack(texels, faces, size, padding)
        tried.append((size, padding, packed is not None))
        return packed

    monkeypatch.setattr(mesh_module, "repack_charts", recorded)
    with caplog.at_level("WARNING", logger="dreamtext.mesh"):
        unwrap_uv(surface, 8)
    (record,) = [r for r in caplog.records if "do not fit a 8 px texture" in r.getMessage()]
    fits = int(record.getMessage().split("--texture-size ")[1].split()[0])
    # 8 px, then each size twice the one before, up to the first that fits: the smallest.
    sizes = [8 * 2**k for k in range(int(math.log2(fits // 8)) + 1)]
    inner = [(n - 2 * chart_padding(n), chart_padding(n)) for n in sizes]
    assert [(size, padding) for size, padding, _ in tried] == inner, tried
    assert [fit for _, _, fit in tried] == [False] * (len(sizes) - 1) + [True], tried
    tried.clear()
    unwrap_uv(surface, fits)
    assert [(size, padding) for size, padding, _ in tried] == inner[-1:]


def test_a_separate_part_of_a_few_percent_is_kept():
    """A ball and a moon of 5 % of its volume beside it: both are kept, only parts under
    MIN_COMPONENT_FRACTION (1 %) are crumbs (at 10 % the moon was dropped without a word)."""
    from analytic_field import SolidField

    planet, moon = torch.tensor([-0.2, 0.0, 0.0]), torch.tensor([0.6, 0.0, 0.0])

    def inside(x: torch.Tensor) -> torch.Tensor:
        return ((x - planet).norm(dim=-1) <= 0.45) | ((x - moon).norm(dim=-1) <= 0.17)

    extracted = extract_mesh(SolidField(inside, 0.0, noisy=False), 48)
    assert len(np.unique(face_components(extracted.mesh))) == 2
    assert extracted.dropped_components == 0


def test_uv_charts_keep_two_texels_from_each_other():
    """No texel of one chart lies within two texels of another, so a bilinear lookup at a
    chart's border never reads its neighbour's colour (with no padding, 216 texels of a noisy
    torus's 256 px atlas did). xatlas pads each chart by the padding: with the 1 texel of 256
    px, the nearest texels of two charts are 4 apart (6 with 2 texels of padding)."""
    from scipy import ndimage
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    size = 256
    mesh, uv = unwrap_uv(decimate(extract_mesh(noisy_torus(), 64).mesh, 4000), size)
    faces = np.asarray(mesh.faces)
    rows = np.repeat(np.arange(len(faces)), 3)  # faces joined through their (seam-split) vertices
    incidence = coo_matrix((np.ones(rows.size), (rows, faces.ravel())), (len(faces), len(uv)))
    count, chart_of_face = connected_components(incidence @ incidence.T, directed=False)
    face_of, _ = rasterize_uv(uv, faces, size)
    chart = np.where(face_of >= 0, chart_of_face[np.maximum(face_of, 0)], -1)
    assert count > 1
    for label in range(count):
        near = ndimage.binary_dilation(chart == label, np.ones((3, 3)), iterations=2)
        assert not ((chart >= 0) & (chart != label) & near).any(), label


def test_uv_charts_are_padding_texels_apart_in_the_layout():
    """Measured on the layout itself, not on rasterized texel centres: the outlines of two
    charts are at least ``max(1, S / 256)`` texels apart, 4 at 1024 px. xatlas packs an atlas
    larger than the texture (1,294 px for 1024), which was scaled into it, its padding with
    it; its charts are now packed again in the texture's own texels (unwrap_uv), and each is
    padded on its own: the charts of a noisy torus are 9.1 texels apart (7.1 when scaled)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    size, padding = 1024, 4
    mesh, uv = unwrap_uv(decimate(extract_mesh(noisy_torus(), 64).mesh, 4000), size)
    faces = np.asarray(mesh.faces)
    rows = np.repeat(np.arange(len(faces)), 3)
    incidence = coo_matrix((np.ones(rows.size), (rows, faces.ravel())), (len(faces), len(uv)))
    count, chart_of_face = connected_components(incidence @ incidence.T, directed=False)
    # Two charts' nearest points lie on their outlines: the edges of one face only (of the
    # seam-split faces), sampled every 0.25 texel.
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    unique, first, once = np.unique(edges, axis=0, return_index=True, return_counts=True)
    outline, label_of_edge = unique[once == 1], np.repeat(chart_of_face, 3)[first[once == 1]]
    start, end = uv[outline[:, 0]] * size, uv[outline[:, 1]] * size
    steps = np.ceil(np.linalg.norm(end - start, axis=1) / 0.25).astype(int) + 1
    edge = np.repeat(np.arange(len(outline)), steps)
    fraction = (np.arange(len(edge)) - np.repeat(np.cumsum(steps) - steps, steps)) / (
        steps[edge] - 1
    )
    points = start[edge] + fraction[:, None] * (end - start)[edge]
    labels = label_of_edge[edge]
    assert count > 1
    gap = min(
        cKDTree(points[labels != label]).query(points[labels == label])[0].min()
        for label in range(count)
    )
    assert gap >= padding - 0.25, gap  # sampled every 0.25 texel: the gap is at most that short
