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
