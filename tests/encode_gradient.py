"""The encode an SDS step runs, with its gradient: shared by the tests and
``benchmarks/encoder_memory.py``. Only torch is imported here (``tiny_models`` loads diffusers'
pipelines, whose import prints transformers' warnings in every benchmark run)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def encode_with_gradient(
    encode: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``encode(images)`` as an SDS step calls a VAE encoder: the latents ``z``, and
    ``∂(Σ w ⊙ z)/∂images`` for the fixed weights ``w = linspace(−1, 1)`` over ``z``'s elements
    (summed in fp32, on ``z``'s device)."""
    leaf = images.clone().requires_grad_(True)
    latents = encode(leaf)
    weights = torch.linspace(-1, 1, latents.numel(), device=latents.device)
    (latents.float() * weights.reshape(latents.shape)).sum().backward()
    return latents.detach(), leaf.grad
