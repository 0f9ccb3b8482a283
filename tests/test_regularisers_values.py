"""Regulariser helpers on values the module docstring states."""

import torch

from dreamtext.regularisers import scene_points


def test_scene_points_fill_the_whole_scene_cube():
    """Guards against dropping ``× bound``: loss_density must sample [−bound, bound]³, not the
    unit cube, or density outside |x| ≤ 1 of a bound-2 scene is never decayed."""
    torch.manual_seed(0)
    points = scene_points(4096, 2.0, "cpu")
    assert points.shape == (4096, 3)
    assert points.abs().max().item() <= 2.0
    # 4096 · 3 uniform draws on [−2, 2]: half lie beyond |x| = 1.
    assert (points.abs() > 1.0).float().mean().item() > 0.4


def test_scene_points_reach_the_faces_of_the_scene_cube():
    """Uniform on [−2, 2]: |x| is uniform on [0, 2], so 5% of the 4096 · 3 coordinates lie past
    1.9 and their mean is 1. Points drawn from a cube 10% smaller (±1.8) have none past 1.9, and
    density near the faces of the scene would never be decayed."""
    torch.manual_seed(0)
    coordinates = scene_points(4096, 2.0, "cpu").abs()
    assert abs((coordinates > 1.9).float().mean().item() - 0.05) < 0.01
    assert abs(coordinates.mean().item() - 1.0) < 0.02
