"""Volume-rendering quadrature over packed samples (segments of one flat list, one per ray).

For the samples ``i`` of one ray, in order along it (Max 1995; NeRF's quadrature):

    α_i = 1 − exp(−σ_i δ_i),   T_i = exp(−Σ_{j<i} σ_j δ_j),   w_i = T_i α_i,
    C = Σ_i w_i c_i + (1 − Σ_i w_i) c_bg.

Samples arrive packed (``ray_indices [S]``, non-decreasing), so the sums "over the samples before
``i`` of the same ray" are segmented prefix sums and the per-ray sums are scatter-adds. Everything
here runs in float32 (the prefix sum in float64), whatever precision the field ran in.
"""

from __future__ import annotations

import torch
from torch import Tensor

# A sample's optical depth σδ is capped here: its α is then 1 − e⁻⁵⁰ (opaque to float32) and what
# lies behind it gets T ≤ e⁻⁵⁰, so no rendered value changes. Uncapped, an infinite σ (an exp
# activation that overflowed) made T = exp(−(∞ − ∞)) NaN, and a huge finite one swamped the float64
# prefix sum of every ray after it (exclusive_segment_sum).
MAX_OPTICAL_DEPTH = 50.0


def optical_depths(sigma: Tensor, deltas: Tensor) -> Tensor:
    """``min(σ_i δ_i, MAX_OPTICAL_DEPTH)`` in float32, any shape. NaN stays NaN.

    The cap's gradient is zero above it, where ``∂α/∂σ = δ e^{−σδ}`` is below ``e⁻⁵⁰`` anyway.
    A ``where`` rather than a ``clamp``: for backward it keeps a 1-byte mask a sample, where
    ``clamp`` keeps its 4-byte input (a training render keeps this for every sample).
    """
    optical = sigma.float() * deltas.float()
    return torch.where(optical > MAX_OPTICAL_DEPTH, MAX_OPTICAL_DEPTH, optical)


def segment_offsets(ray_indices: Tensor, num_rays: int) -> Tensor:
    """``[N + 1]`` int64: the samples of ray ``r`` are ``offsets[r] : offsets[r + 1]``.

    ``offsets[r]`` is the number of samples of the rays before ``r``, the first ``i`` with
    ``ray_indices[i] ≥ r``: a binary search per ray in the sorted indices. Unlike a ``bincount``
    it needs no host sync on CUDA (the output's length is known without reading the indices).
    """
    rays = torch.arange(num_rays + 1, device=ray_indices.device, dtype=ray_indices.dtype)
    return torch.searchsorted(ray_indices, rays)


def segment_starts(ray_indices: Tensor, num_rays: int) -> Tensor:
    """For each sample, the index of its ray's first sample: ``[S]`` int64."""
    return segment_offsets(ray_indices, num_rays)[ray_indices]


def exclusive_segment_sum(values: Tensor, ray_indices: Tensor, num_rays: int) -> Tensor:
    """``s_i = Σ_{j<i, ray(j) = ray(i)} v_j`` for packed ``values [S]``.

    One global prefix sum minus its value at each segment's start. It runs in float64: over
    millions of samples a float32 running sum would swamp the small per-ray sums it differences.
    Differentiable (its gradient is the segmented suffix sum).
    """
    if values.numel() == 0:
        return values
    v = values.double()
    inclusive = v.cumsum(0)
    exclusive = inclusive - v
    return (exclusive - exclusive[segment_starts(ray_indices, num_rays)]).to(values.dtype)


def packed_weights(
    sigma: Tensor, deltas: Tensor, ray_indices: Tensor, num_rays: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Quadrature weights of packed samples: ``w_i = T_i α_i`` (see the module docstring).

    Args:
        sigma, deltas: ``[S]`` densities and interval lengths.
        ray_indices: ``[S]`` non-decreasing ray of each sample.

    Returns:
        ``weights [S]``, ``transmittance [S]`` (``T_i``, light reaching the sample) and
        ``alpha [S]``, all float32.
    """
    optical = optical_depths(sigma, deltas)
    alpha = 1.0 - torch.exp(-optical)
    transmittance = torch.exp(-exclusive_segment_sum(optical, ray_indices, num_rays))
    return transmittance * alpha, transmittance, alpha


def accumulate(values: Tensor, ray_indices: Tensor, num_rays: int) -> Tensor:
    """Per-ray sums ``Σ_{i ∈ ray} v_i``: ``[S]`` → ``[N]``, ``[S, C]`` → ``[N, C]`` (float32)."""
    values = values.float()
    out = values.new_zeros((num_rays, *values.shape[1:]))
    return out.index_add(0, ray_indices, values)


__all__ = [
    "MAX_OPTICAL_DEPTH",
    "accumulate",
    "exclusive_segment_sum",
    "optical_depths",
    "packed_weights",
    "segment_offsets",
    "segment_starts",
]
