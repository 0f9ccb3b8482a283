"""The regularisers of a training render, from the compositor's per-ray outputs.

Each term is a mean over the rays of a per-ray quantity, so a render done in ray chunks can add
up its parts exactly: ``loss = Σ_chunks Σ_{r ∈ chunk} ℓ_r / N``.

* ``loss_entropy = mean_r(−o_r log₂ o_r − (1 − o_r) log₂(1 − o_r))``, ``o`` the opacity clamped to
  ``[1e-5, 1 − 1e-5]``: pushes every ray to be either empty or opaque. In bits, as in the
  Stable-DreamFusion code the thesis ran (its ``lambda_entropy`` 1e-4 weighs this value).
* ``loss_opacity = mean_r(o_r)``: the amount of matter seen.
* ``loss_orientation = mean_r(Σ_i stopgrad(w_i) max(0, n_i · d_r)²)`` (DreamFusion): visible
  normals that face away from the camera. The renderer computes the per-ray sum (``orientation``);
  it is zero when no normals were computed.

The trainer weighs them with ``lambda_<name>`` and adds them to the SDS loss (:func:`weighted_sum`).

One term reads the field, not the rays:

* ``loss_density = mean_x log(1 + σ(x))`` at points ``x`` uniform in the scene
  (:func:`density_decay`): empty is the default. Density that no training camera sees gets no
  gradient from the renders, so whatever the start blob (or a shared hash-grid cell) put there
  stays; this term removes it, while the SDS gradient holds up what the cameras see. Its gradient
  in the raw density ``z`` (blob included) depends on ``field.density_activation``: with ``exp``
  (``σ = e^z``, the ``builtin-shapes`` preset) it is ``σ / (1 + σ)``, about 1 wherever there is
  matter, so a dense hidden tail is pushed as hard as a faint one; with ``softplus`` (the
  default, ``σ = log(1 + e^z)``) it is ``(1 − e^{−σ}) / (1 + σ)``, largest (0.32) near σ = 1 and
  falling as ``1 / σ`` above it (0.09 at σ = 10), so a dense tail is pushed less than a faint one.
"""

from __future__ import annotations

import torch
from torch import Tensor

REGULARISERS: tuple[str, ...] = ("entropy", "opacity", "orientation")
# Points a step of loss_density samples: 4096 against a 32 px batch's 65,536 render samples.
DENSITY_POINTS = 4096
OPACITY_EPS = 1e-5


def entropy_per_ray(opacity: Tensor) -> Tensor:
    """Binary entropy in bits of each ray's opacity ``o [N]`` (clamped away from 0 and 1):
    ``−o log₂ o − (1 − o) log₂(1 − o)``, ``[N]``; 1 for a half-opaque ray."""
    o = opacity.clamp(OPACITY_EPS, 1.0 - OPACITY_EPS)
    return -o * torch.log2(o) - (1.0 - o) * torch.log2(1.0 - o)


def per_ray_terms(outputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """``{name: [N]}`` per-ray values of every regulariser, from the renderer's per-ray
    ``opacity [N]`` and ``orientation [N]``."""
    opacity = outputs["opacity"].reshape(-1)
    return {
        "entropy": entropy_per_ray(opacity),
        "opacity": opacity,
        "orientation": outputs["orientation"].reshape(-1),
    }


def regularisers(outputs: dict[str, Tensor], num_rays: int | None = None) -> dict[str, Tensor]:
    """``{"loss_<name>": scalar}``: each term summed over these rays and divided by
    ``num_rays`` (default: these rays' count, i.e. the mean)."""
    terms = per_ray_terms(outputs)
    n = num_rays if num_rays is not None else terms["opacity"].numel()
    return {f"loss_{name}": value.sum() / max(n, 1) for name, value in terms.items()}


def weighted_sum(losses: dict[str, Tensor], lambdas: dict[str, float]) -> Tensor:
    """``Σ_name λ_name · loss_name`` over the names in ``lambdas`` (zero weights skipped)."""
    total = losses[f"loss_{REGULARISERS[0]}"] * 0.0
    for name, weight in lambdas.items():
        if weight:
            total = total + weight * losses[f"loss_{name}"]
    return total


def density_decay(field: torch.nn.Module, points: Tensor) -> Tensor:
    """``loss_density = mean_i log(1 + σ(x_i))`` for ``points x [N, 3]`` (a scalar)."""
    return torch.log1p(field.density(points)).mean()


def scene_points(num_points: int, bound: float, device: torch.device | str) -> Tensor:
    """``[N, 3]`` points uniform in the scene ``[−bound, bound]³`` (torch's global generator, so
    a resumed run draws what the uninterrupted one would)."""
    return (torch.rand(num_points, 3, device=device) * 2.0 - 1.0) * bound


__all__ = [
    "DENSITY_POINTS",
    "REGULARISERS",
    "density_decay",
    "entropy_per_ray",
    "per_ray_terms",
    "regularisers",
    "scene_points",
    "weighted_sum",
]
