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
