"""Adan, the optimiser the thesis's NeRF most likely trained with.

Stable-DreamFusion, the code the thesis forked (March 2023), trained its NeRF with Adan by
default (``--optim adan``: lr 5 × its ``--lr``, ε 1e-8, weight decay 2e-5, gradients clipped to a
global norm of 5) and the thesis's commands do not change it; dreamtext's default is Adam
(``optimizer: adam``). ``optimizer: adan`` in a ``--config`` YAML takes this one.

Adan (Xie et al. 2022, "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep
Models", arXiv:2208.06677, Algorithm 1 with bias corrections), for each parameter θ with
gradient g_k at step k, written with the decays β₁, β₂, β₃ = 0.98, 0.92, 0.99 (the paper's
1 − β) and c_i = 1 − β_i^k::

    g_k ← g_k · min(1, G / (‖g_k‖ + ε))               (‖·‖ over every parameter; G = max_grad_norm)
    m_k = β₁ m_{k−1} + (1 − β₁) g_k                     (the gradient's average)
    v_k = β₂ v_{k−1} + (1 − β₂) (g_k − g_{k−1})         (its change's; g_0 = g_1, so v_1 = 0)
    n_k = β₃ n_{k−1} + (1 − β₃) (g_k + β₂ (g_k − g_{k−1}))²
    θ_k = (θ_{k−1} − η (m_k / c₁ + β₂ v_k / c₂) / (√(n_k / c₃) + ε)) / (1 + η λ)

with η the group's learning rate and λ the decoupled weight decay (the proximal form: the
division after the step). Each parameter keeps three averages and the last gradient: twice
Adam's state.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

# Stable-DreamFusion's settings for its NeRF (main.py, March 2023).
ADAN_BETAS = (0.98, 0.92, 0.99)
ADAN_EPS = 1e-8
ADAN_WEIGHT_DECAY = 2e-5
ADAN_MAX_GRAD_NORM = 5.0


class Adan(torch.optim.Optimizer):
    """Adan (module docstring), over ``params`` (tensors or groups, as for ``torch.optim``);
    ``max_grad_norm`` 0 clips nothing."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float, float] = ADAN_BETAS,
        eps: float = ADAN_EPS,
        weight_decay: float = ADAN_WEIGHT_DECAY,
        max_grad_norm: float = ADAN_MAX_GRAD_NORM,
    ) -> None:
        if not lr >= 0.0 or not eps >= 0.0 or not weight_decay >= 0.0:
            raise ValueError(
                f"Adan needs lr, eps, weight_decay ≥ 0, got {lr}, {eps}, {weight_decay}"
            )
        if not all(0.0 <= beta < 1.0 for beta in betas) or len(betas) != 3:
            raise ValueError(f"Adan needs three betas in [0, 1), got {betas}")
        if not max_grad_norm >= 0.0:
            raise ValueError(f"Adan needs max_grad_norm ≥ 0, got {max_grad_norm}")
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)
        self.max_grad_norm = max_grad_norm

    def clip_factor(self) -> Tensor | None:
        """min(1, G / (‖g‖ + ε)) over every gradient, as a 0-dim tensor (not read: no host
        sync); ``None`` without clipping or gradients."""
        grads = [p.grad for group in self.param_groups for p in group["params"]]
        grads = [g for g in grads if g is not None]
        if self.max_grad_norm <= 0.0 or not grads:
            return None
        dtype = functools.reduce(torch.promote_types, [g.dtype for g in grads], torch.float32)
        norm = torch.linalg.vector_norm(torch.stack([g.to(dtype).norm() for g in grads]))
        eps = self.param_groups[-1]["eps"]
        return (self.max_grad_norm / (norm + eps)).clamp(max=1.0)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """One Adan step over every parameter with a gradient (module docstring)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        clip = self.clip_factor()
        for group in self.param_groups:
            beta1, beta2, beta3 = group["betas"]
            lr, eps, decay = group["lr"], group["eps"], group["weight_decay"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                # Clipped in place: nothing reads a gradient after the step (the finiteness
                # check and fp16's unscale come before it, the next step's zero_grad drops it),
                # and a clipped copy was 4 B a value of the hash table more peak memory.
                grad = param.grad if clip is None else param.grad.mul_(clip.to(param.grad.dtype))
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_diff"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                    state["previous_grad"] = grad.clone()  # g_0 = g_1: no change at the start
                state["step"] += 1
                k = state["step"]
                # g_k − g_{k−1}, then the look-ahead, then the denominator, each written over the
                # last gradient, which takes g_k at the end: three temporaries the size of the
                # hash table were 12 B a value more peak memory. The same ops as into new
                # tensors (out=), so the same values.
                work = state["previous_grad"]
                diff = torch.sub(grad, work, out=work)
                state["exp_avg"].mul_(beta1).add_(grad, alpha=1.0 - beta1)
                state["exp_avg_diff"].mul_(beta2).add_(diff, alpha=1.0 - beta2)
                ahead = torch.add(grad, diff, alpha=beta2, out=work)
                state["exp_avg_sq"].mul_(beta3).addcmul_(ahead, ahead, value=1.0 - beta3)
                denom = torch.div(state["exp_avg_sq"], 1.0 - beta3**k, out=work)
                denom.sqrt_().add_(eps)
                param.addcdiv_(state["exp_avg"], denom, value=-lr / (1.0 - beta1**k))
                param.addcdiv_(state["exp_avg_diff"], denom, value=-lr * beta2 / (1.0 - beta2**k))
                if decay:
                    param.div_(1.0 + lr * decay)
                work.copy_(grad)
        return loss


__all__ = ["ADAN_BETAS", "ADAN_EPS", "ADAN_MAX_GRAD_NORM", "ADAN_WEIGHT_DECAY", "Adan"]
