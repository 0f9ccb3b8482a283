"""The viewer's lookups of benchmarks/texture_edges.py (bilinear with REPEAT and CLAMP, a mip
level), on textures whose every lookup is known."""

from __future__ import annotations

import numpy as np
import pytest
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("texture_edges", "texture_edges_benchmark")


def ramp(size: int) -> np.ndarray:
    """``[S, S, 1]``: texel (row r, column c) holds ``10 c + 1000 r``."""
    rows, columns = np.mgrid[0:size, 0:size]
    return (10.0 * columns + 1000.0 * rows)[..., None]


def test_a_lookup_at_a_texel_centre_reads_that_texel_alone(bench):
    image = ramp(4)
    uv = np.array([[(2 + 0.5) / 4, 1 - (1 + 0.5) / 4]])  # column 2, row 1
    for wrap in ("repeat", "clamp"):
        assert bench.bilinear(image, uv, wrap)[0, 0] == pytest.approx(1020.0)


def test_a_lookup_between_two_texels_weighs_them_by_distance(bench):
    uv = np.array([[(1 + 0.5 + 0.25) / 4, 1 - (0 + 0.5) / 4]])  # a quarter from column 1 to 2
    assert bench.bilinear(ramp(4), uv, "clamp")[0, 0] == pytest.approx(0.75 * 10 + 0.25 * 20)


def test_repeat_blends_the_opposite_edge_at_the_border_and_clamp_does_not(bench):
    uv = np.array([[0.0, 1 - 0.5 / 4]])  # u = 0: halfway between column 3 (wrapped) and 0
    assert bench.bilinear(ramp(4), uv, "repeat")[0, 0] == pytest.approx(0.5 * 30 + 0.5 * 0)
    assert bench.bilinear(ramp(4), uv, "clamp")[0, 0] == pytest.approx(0.0)


def test_the_mip_level_is_the_mean_of_each_two_by_two_block(bench):
    level = bench.mip_level(ramp(4))
    assert level.shape == (2, 2, 1)
    np.testing.assert_allclose(level[..., 0], [[505.0, 525.0], [2505.0, 2525.0]])


def test_seam_points_lie_on_the_edges_of_one_face_alone(bench):
    import trimesh

    square = trimesh.Trimesh(
        vertices=[[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], faces=[[0, 1, 2], [0, 2, 3]]
    )
    uv = np.array(square.vertices)[:, :2] * 0.5 + 0.25
    where, points, normals = bench.seam_points(square, uv)
    assert len(where) == 4 * len(bench.EDGE_FRACTIONS)  # the diagonal is inside, not a seam
    np.testing.assert_allclose(where, points[:, :2] * 0.5 + 0.25)
    on_outline = np.isclose(points[:, :2], 0) | np.isclose(points[:, :2], 1)
    assert on_outline.any(axis=1).all()
    np.testing.assert_allclose(normals, [[0, 0, 1]] * len(where))


def two_squares(gap: float) -> tuple:
    """Two charts, squares 8 texels of a 32 px texture wide, side by side in UV, ``gap`` apart
    (the first from u = 4 to 12 texels, on texel boundaries)."""
    import trimesh

    corners = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float) * 0.25
    uv = np.concatenate(
        [corners + np.array([0.125, 0.375]), corners + np.array([0.375 + gap, 0.375])]
    )
    mesh = trimesh.Trimesh(
        vertices=np.c_[uv, np.zeros(8)],
        faces=[[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]],
        process=False,
    )
    return mesh, uv


def test_chart_bleed_is_nothing_where_the_gutter_holds_the_lookups(bench):
    mesh, uv = two_squares(gap=0.25)  # 8 texels: the bake's gutter of 4 for each square
    for level, bleed in enumerate(bench.chart_bleed(mesh, uv, 32, 2)):
        assert bleed.max() == pytest.approx(0.0, abs=1e-3), level  # float32 dilation


def test_chart_bleed_is_the_neighbours_share_where_two_charts_touch(bench):
    """The squares' facing edges touch: a lookup there weighs the two charts' texels half and
    half, half the two colours' difference off; the outer edges read their own chart alone."""
    mesh, uv = two_squares(gap=0.0)
    (bleed,) = bench.chart_bleed(mesh, uv, 32, 1)
    where, _, _ = bench.seam_points(mesh, uv)
    facing = np.isclose(where[:, 0], 0.375)
    colours = np.random.default_rng(0).uniform(0.0, 255.0, (2, 3))
    assert bleed[facing] == pytest.approx(np.abs(colours[0] - colours[1]).max() / 2)
    assert bleed[~facing].max() == pytest.approx(0.0, abs=1e-3)


def test_each_padding_measured_names_the_rules_that_pick_it(bench):
    assert bench.paddings_at(256, [4]) == {
        1: ["max(1, S/512)", "max(1, S/256)"],
        2: ["max(2, S/256)"],
        4: [],
    }
    assert bench.paddings_at(1024, []) == {
        2: ["max(1, S/512)"],
        4: ["max(2, S/256)", "max(1, S/256)"],
    }
