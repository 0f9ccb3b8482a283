"""Regulariser helpers on values the module docstring states."""

import pytest
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


def test_density_decay_gradient_in_the_raw_density_is_the_docstrings_per_activation():
    """The module docstring's gradient of ``log(1 + σ)`` in the raw density z: ``σ / (1 + σ)``
    with exp (about 1 for dense matter), ``(1 − e^{−σ}) / (1 + σ)`` with softplus (the default:
    0.32 near σ = 1, 0.09 at σ = 10). It said ``σ / (1 + σ)`` alone, which the default does not
    have: a dense hidden tail is pushed less than a faint one there, not as hard."""
    from dreamtext.field import activate_density

    for sigma in (0.1, 1.0, 10.0):
        s = torch.tensor(sigma, dtype=torch.float64)
        for kind, z, want in (
            ("exp", s.log(), s / (1 + s)),
            ("softplus", s.expm1().log(), -torch.expm1(-s) / (1 + s)),
        ):
            z = z.clone().requires_grad_(True)
            torch.log1p(activate_density(z, kind)).backward()
            assert z.grad.item() == pytest.approx(want.item(), rel=1e-9)
    s = torch.tensor(10.0, dtype=torch.float64)
    assert (-torch.expm1(-s) / (1 + s)).item() == pytest.approx(0.0909, abs=1e-4)
