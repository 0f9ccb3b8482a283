"""Score distillation (SDS, thesis ch. 3.3 eq. 3.21, ch. 5.1): the equations and the shared step.

One SDS step, shared by every prior (:class:`ScoreDistillation`):

    x_0 = E(g(θ))                         the render, encoded (SD: VAE latents; built-in: pixels)
    t ~ U{t_min·T, …, t_max·T} (rounded, at most T − 1),  ε ~ N(0, I)
    x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε
    ε̂ = ε(x_t; y) + s (ε(x_t; y) − ε(x_t; ∅))          classifier-free guidance, eq. 3.8 / 5.1
    ∇_θ L_SDS = w(t) (ε̂ − ε) ∂x_0/∂θ                   no U-Net Jacobian

A subclass only says how images become ``x_0`` (:meth:`ScoreDistillation.encode_images`) and how
noise is predicted (:meth:`ScoreDistillation.predict_noise`); :class:`StableDiffusionGuidance` is
the diffusers implementation, over the parts :mod:`dreamtext.models` loads.
"""

from __future__ import annotations

import functools
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from dreamtext.cameras import CameraRange, ViewThresholds
from dreamtext.captions import BUILTIN_MODELS
from dreamtext.devices import (
    COMPILE_REMEDY,
    compiled_agrees,
    free_memory,
    memory_that_ran_out,
    to_device,
)
from dreamtext.errors import DreamtextError, cause_line
from dreamtext.models import COMPILE_MODES, DEFAULT_MODEL, TextSide, load_for
from dreamtext.prompts import PromptEmbeddings, expand_tokens

logger = logging.getLogger(__name__)


def default_perp_neg_weights() -> dict[str, dict[str, float]]:
    """Perp-Neg negatives per view label: side and back views push away from the front view.

    The Janus problem is the front (a face) appearing in every view, so the views that are not the
    front use the front-view prompt as their negative; the front, overhead and bottom views have
    none. The weight 2 is stable-dreamfusion's default ``negative_w``, which it writes −2 because
    it adds the weighted sum (``Δ + Σ_k w_k Δ_k^⊥``) where :func:`perp_neg_guidance` subtracts
    it. Both the thesis's "side" and the split "left side" / "right side" labels are listed, and
    their " below" forms (``ViewThresholds.below``), which push away from the front seen from
    below; a run uses those its ``ViewThresholds`` give.
    """
    sides = ("side", "left side", "right side", "back")
    return {
        **{label: {"front": 2.0} for label in sides},
        **{f"{label} below": {"front below": 2.0} for label in sides},
    }


@dataclass
class GuidanceConfig:
    """The 2D prior and how its score is distilled.

    ``model``: a diffusers SD-1.x/2.x hub id or local folder, or ``builtin:shapes``.
    ``guidance_scale``: s in ``ε̂ = ε_c + s (ε_c − ε_u)`` (:func:`classifier_free_guidance`;
    diffusers' scale for the same ε̂ is s + 1).
    ``t_range``: t ~ U[t_min, t_max] as fractions of the T training steps. With ``t_anneal`` the
    upper end shrinks linearly with training progress r ∈ [0, 1]:
    ``t_max(r) = t_max − r (t_max − clamp(t_anneal_end, t_min, t_max))`` (late steps refine
    detail; an end above ``t_max`` leaves it as it is).
    ``weighting``: ``"sds"`` w(t) = 1 − ᾱ_t (DreamFusion), ``"uniform"`` w(t) = 1.
    ``perp_neg_weights``: ``{view: {negative view: weight}}`` (see :func:`perp_neg_guidance`).
    ``textual_inversion``: a ``learned_embeds.safetensors`` whose tokens are added before encoding.
    Memory and speed options (applied by :mod:`dreamtext.models`): ``attention_slicing`` (U-Net
    attention in slices), ``vae_slicing`` (encode a batch one image at a time), ``vae_tiling``
    (encode large images in tiles), ``vae_checkpointing`` (the SDS step's encode keeps its
    blocks' inputs only and its backward recomputes one ResNet block at a time: the same
    gradients, one more encoder forward a step; in 2-byte precision the encode's peak drops by
    ~0.9 GiB, a 64 px step's by ~0.5-0.6 GiB, ``benchmarks/encoder_memory.py`` and
    ``memory_model.py``),
    ``channels_last`` (U-Net and VAE in NHWC; ``None``: on for
    fp16/bf16 on CUDA), ``compile`` (``torch.compile`` the U-Net; CUDA only, ignored with a
    warning on the CPU), ``compile_vae`` (``torch.compile`` the VAE encoder's forward and
    backward, checked against the eager encoder at its first call; CUDA only, as ``compile``),
    ``compile_mode`` (torch.compile's mode for both: ``"default"``, or ``"reduce-overhead"``,
    which records CUDA graphs and replays them), ``compile_vae_mode`` (the encoder's own mode;
    ``None``: ``compile_mode``. The encoder's graphs keep its activations for backward in a
    memory pool of their own, 1,586 MiB at 512 px in fp16 by ``benchmarks/guidance_cost.py``;
    the U-Net's forward keeps none).
    """

    model: str = DEFAULT_MODEL
    guidance_scale: float = 100.0
    t_range: tuple[float, float] = (0.02, 0.98)
    t_anneal: bool = False
    t_anneal_end: float = 0.5
    weighting: str = "sds"
    view_dependent: bool = True
    views: ViewThresholds = field(default_factory=ViewThresholds)
    negative: str = ""
    perp_neg: bool = False
    perp_neg_weights: dict[str, dict[str, float]] = field(default_factory=default_perp_neg_weights)
    fp16: bool = False
    bf16: bool = False
    attention_slicing: bool = False
    vae_slicing: bool = False
    vae_tiling: bool = False
    vae_checkpointing: bool = False
    channels_last: bool | None = None
    compile: bool = False
    compile_vae: bool = False
    compile_mode: str = "default"
    compile_vae_mode: str | None = None
    textual_inversion: str | None = None

    @property
    def vae_mode(self) -> str:
        """torch.compile's mode for the VAE encoder: ``compile_vae_mode``, else ``compile_mode``."""
        return self.compile_mode if self.compile_vae_mode is None else self.compile_vae_mode

    def validate(self) -> None:
        """Raise a :class:`DreamtextError` naming the first setting a user got wrong (before the
        model loads and anything is written)."""
        if self.fp16 and self.bf16:
            # Named by flag and key: a config file's pair got no "(in FILE)" (with_its_file).
            raise DreamtextError(
                "give --fp16 or --bf16, not both (guidance.fp16 and guidance.bf16 are both on)"
            )
        if self.guidance_scale < 0:
            raise DreamtextError(
                f"the guidance scale (--guidance, guidance.guidance_scale) must be ≥ 0, got "
                f"{self.guidance_scale:g}"
            )
        # It multiplies the noise predictions in float32 at most: past float32's largest value
        # every step's gradient was infinite and skipped, and a short run "finished" untrained.
        float32_max = torch.finfo(torch.float32).max
        if self.guidance_scale > float32_max:
            raise DreamtextError(
                f"the guidance scale (--guidance, guidance.guidance_scale) {self.guidance_scale:g} "
                f"is past float32's range ({float32_max:.4g}); the thesis's FitFusion uses 1000, "
                "its Stable-DreamFusion settings 100"
            )
        # Said by the text side once the model had loaded (minutes for Stable Diffusion). The
        # built-in prior ignores --perp-neg (with a warning): its runs keep training as before.
        if self.perp_neg and not self.view_dependent and self.model not in BUILTIN_MODELS:
            raise DreamtextError(
                "--perp-neg needs view-dependent prompts: drop --no-view-prompt (or "
                "guidance.view_dependent: false in a --config file)"
            )
        if self.weighting not in SDS_WEIGHTINGS:
            raise DreamtextError(
                f"guidance.weighting must be one of {', '.join(SDS_WEIGHTINGS)}, got "
                f"{self.weighting!r}"
            )
        for name, mode in (
            ("compile_mode", self.compile_mode),
            ("compile_vae_mode", self.vae_mode),
        ):
            if mode not in COMPILE_MODES:
                raise DreamtextError(
                    f"guidance.{name} must be one of {', '.join(COMPILE_MODES)}, got {mode!r}"
                )
        views = self.views
        angles = ("overhead", "bottom", "front_start", "front_end", "back_start", "back_end")
        for name in angles:
            value = getattr(views, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise DreamtextError(f"guidance.views.{name} must be degrees, got {value!r}")
        if not 0 <= views.overhead <= views.bottom <= 180:
            raise DreamtextError(
                "guidance.views must satisfy 0 ≤ overhead ≤ bottom ≤ 180 (polar angles in "
                f"degrees, 0 straight above); got overhead {views.overhead:g}, bottom "
                f"{views.bottom:g}"
            )
        # view_of reads the azimuth in [0, 360) in this order (front, right side, back, left
        # side): a front from -30 to 30 or 330 to 30 was accepted and labelled 330-360 "side".
        order = (views.front_start, views.front_end, views.back_start, views.back_end)
        if not 0 <= order[0] < order[1] <= order[2] < order[3] <= 360:
            raise DreamtextError(
                "guidance.views must satisfy 0 ≤ front_start < front_end ≤ back_start < back_end "
                "≤ 360 (azimuths in degrees; a range across 0°, such as -30 to 30, is not read "
                f"as one); got front {order[0]:g}-{order[1]:g}, back {order[2]:g}-{order[3]:g}"
            )
        below = self.views.below
        if below is not None and not (
            isinstance(below, (int, float))
            and not isinstance(below, bool)
            and self.views.overhead < below <= self.views.bottom
        ):
            raise DreamtextError(
                "guidance.views.below must be a polar angle in degrees between views.overhead "
                f"({self.views.overhead:g}) and views.bottom ({self.views.bottom:g}), such as 90 "
                f"(the horizon), or null; got {below!r}"
            )
        if not 0.0 <= self.t_anneal_end <= 1.0:
            raise DreamtextError(
                f"guidance.t_anneal_end must be in [0, 1], got {self.t_anneal_end:g}"
            )
        weights = self.perp_neg_weights
        if not isinstance(weights, dict) or not all(
            isinstance(negatives, dict)
            and all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w)
                for w in negatives.values()
            )
            for negatives in weights.values()
        ):
            raise DreamtextError(
                "guidance.perp_neg_weights must map view labels to {negative view label: "
                f"weight}}, e.g. {{side: {{front: 2.0}}}}; got {weights!r}"
            )


# ----------------------------------------------------------------------------------------------
# The SDS equations, as plain functions of tensors.


def classifier_free_guidance(eps_uncond: Tensor, eps_cond: Tensor, scale: float) -> Tensor:
    """``ε̂ = ε_c + s (ε_c − ε_u)``: thesis eq. 3.8 and FitFusion's eq. 5.1; any matching shapes.

    This is Ho & Salimans' form, and the one Stable-DreamFusion ran from Dec 2022 to Apr 2023,
    which covers the thesis's March 2023 fork (``noise_pred_text + s * (text - uncond)``).
    diffusers' pipelines, and Stable-DreamFusion before and after, write ``ε_u + s (ε_c − ε_u)``:
    their scale is this one's ``s + 1``, so guidance 100 here is their 101.
    """
    return eps_cond + scale * (eps_cond - eps_uncond)


def perp_neg_guidance(
    eps_uncond: Tensor, eps_cond: Tensor, eps_neg: Tensor, weights: Tensor, scale: float
) -> Tensor:
    """Perp-Neg (Armandpour et al. 2023): subtract only what the negatives add *across* the prompt.

    With ``Δ = ε_c − ε_u`` and ``Δ_k = ε_k − ε_u`` for the negative prompts k,

        Δ_k^⊥ = Δ_k − (⟨Δ_k, Δ⟩ / ‖Δ‖²) Δ,        ε̂ = ε_c + s (Δ − Σ_k w_k Δ_k^⊥),

    inner products taken per sample over all of ``C, H, W``; a weight ``w_k > 0`` pushes away from
    negative k (stable-dreamfusion adds the sum instead, with ``w_k < 0``: the same term). A
    negative that overlaps the prompt (``Δ_k ∥ Δ``) removes nothing, unlike a plain negative
    prompt. The paper starts from ``ε_u``;
    here the base is ``ε_c``, as in the thesis's guidance (:func:`classifier_free_guidance`), so
    that K = 0 is exactly that CFG. ``eps_uncond, eps_cond: [B, C, H, W]``,
    ``eps_neg: [B, K, C, H, W]``, ``weights: [B, K]``.
    """
    delta = eps_cond - eps_uncond
    delta_neg = eps_neg - eps_uncond[:, None]
    flat, flat_neg = delta.flatten(1)[:, None], delta_neg.flatten(2)
    along = (flat_neg * flat).sum(-1) / (flat * flat).sum(-1).clamp_min(1e-12)
    perpendicular = delta_neg - along[..., None, None, None] * delta[:, None]
    combined = delta - (weights[..., None, None, None].to(delta) * perpendicular).sum(1)
    return eps_cond + scale * combined


def v_to_epsilon(v: Tensor, x_t: Tensor, alphas_cumprod_t: Tensor) -> Tensor:
    """``ε = √ᾱ_t v + √(1 − ᾱ_t) x_t`` for a v-prediction model (Salimans & Ho 2022).

    ``v, x_t: [B, C, H, W]``; ``alphas_cumprod_t: [B]`` (or already broadcastable).
    """
    ab = _per_sample(alphas_cumprod_t, v)
    return ab.sqrt() * v + (1 - ab).sqrt() * x_t


SDS_WEIGHTINGS = ("sds", "uniform")


def sds_weight(alphas_cumprod_t: Tensor, kind: str) -> Tensor:
    """``w(t)``: ``"sds"`` → ``1 − ᾱ_t`` (DreamFusion), ``"uniform"`` → 1; shaped like the input."""
    if kind == "sds":
        return 1 - alphas_cumprod_t
    if kind == "uniform":
        return torch.ones_like(alphas_cumprod_t)
    raise DreamtextError(f"unknown SDS weighting '{kind}'; use 'sds' (1 − ᾱ_t) or 'uniform'")


def sds_loss(latents: Tensor, eps_hat: Tensor, noise: Tensor, w: Tensor) -> Tensor:
    """``L = ½ Σ ‖x − sg(x − w (ε̂ − ε))‖² / B`` for ``latents x, eps_hat, noise: [B, C, H, W]``.

    Its gradient w.r.t. sample b of ``latents`` is ``w_b (ε̂_b − ε_b) / B`` — the SDS gradient,
    averaged over the batch (exactly ``w (ε̂ − ε)`` for B = 1) — and its value,
    ``½ Σ w² (ε̂ − ε)² / B``, is worth logging. ``w: [B]`` or broadcastable.
    """
    sds_grad = _per_sample(w, latents) * (eps_hat - noise)
    target = (latents - sds_grad).detach()
    return 0.5 * ((latents - target) ** 2).sum() / latents.shape[0]


def sample_timesteps(
    batch: int,
    t_range: Sequence[float],
    num_train_timesteps: int,
    step_ratio: float = 0.0,
    anneal: bool = False,
    generator: torch.Generator | None = None,
    anneal_end: float = 0.5,
) -> Tensor:
    """Integer diffusion times ``[B]``, uniform on ``{lo, …, hi}``, ``lo = min(round(t_min T),
    T − 1)``, ``hi = max(lo, min(round(t_max T), T − 1))``: both ends at most ``T − 1``, the
    last time the schedule has (``t_max = 1`` draws up to ``T − 1``, not ``T``).

    With ``anneal`` ``t_max`` is first replaced by ``t_max − r (t_max − e)``, ``e =
    clamp(anneal_end, t_min, t_max)``, for training progress ``r = step_ratio`` clamped to
    [0, 1]: it only shrinks (an ``anneal_end`` above ``t_max`` raised it past the range).
    Sampled on the CPU (``generator`` is a CPU generator) so the same seed gives the same times
    on every device.
    """
    t_min, t_max = float(t_range[0]), float(t_range[1])
    if not 0.0 <= t_min <= t_max <= 1.0:
        raise DreamtextError(f"t_range must satisfy 0 ≤ t_min ≤ t_max ≤ 1, got {tuple(t_range)}")
    if anneal:
        r = min(max(step_ratio, 0.0), 1.0)
        t_max -= r * (t_max - min(max(anneal_end, t_min), t_max))
    lo = min(round(t_min * num_train_timesteps), num_train_timesteps - 1)
    hi = min(round(t_max * num_train_timesteps), num_train_timesteps - 1)
    return torch.randint(lo, max(hi, lo) + 1, (batch,), generator=generator)


def sd_alphas_cumprod(num_train_timesteps: int = 1000) -> Tensor:
    """Stable Diffusion's schedule ``ᾱ_t = Π_{s≤t} (1 − β_s)``, ``β = linspace(√β_0, √β_1, T)²``.

    β_0 = 0.00085, β_1 = 0.012 ("scaled_linear"). ``[T]`` float32; a model's own scheduler
    config is preferred when there is one.
    """
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """``[B]`` → ``[B, 1, …, 1]`` to broadcast against ``like``; other shapes pass through."""
    if values.ndim == 1 and like.ndim > 1:
        return values.reshape(-1, *([1] * (like.ndim - 1)))
    return values


# ----------------------------------------------------------------------------------------------
# The shared SDS step.


class NoisePrediction(NamedTuple):
    """What a prior predicts for ``x_t``: ``uncond, cond: [B, C, H, W]``; Perp-Neg adds the
    negatives ``negatives: [B, K, C, H, W]`` with ``negative_weights: [B, K]``."""

    uncond: Tensor
    cond: Tensor
    negatives: Tensor | None = None
    negative_weights: Tensor | None = None


class ScoreDistillation(ABC):
    """The SDS step of every prior; subclasses implement :meth:`encode_images`,
    :meth:`predict_noise` and :meth:`set_prompt`.

    ``alphas_cumprod: [T]`` is the prior's noise schedule (default: Stable Diffusion's). Noise and
    times come from ``self.generator`` (CPU), which :meth:`seed`, :meth:`get_state` and
    :meth:`set_state` control so a resumed run continues bit-exactly. Steps whose ε̂ is not finite
    are skipped (zero loss, ``info["skipped"] = 1``) and counted in ``skipped_steps`` (read from
    the device only when asked).
    """

    def __init__(
        self,
        cfg: GuidanceConfig,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        alphas_cumprod: Tensor | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = torch.device(device)
        self.dtype = dtype
        ab = sd_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod
        self.alphas_cumprod = ab.to(device=self.device, dtype=torch.float32)
        self.generator = torch.Generator().manual_seed(0)
        self._skipped_read = 0
        self._skipped_unread: Tensor | None = None

    @property
    def num_train_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    @functools.cached_property
    def alphas_cumprod_host(self) -> Tensor:
        """``ᾱ: [T]`` on the host, read from the device once. The times are drawn on the host, so
        ᾱ_t and w(t) are looked up there too: their values reach the step's info without a read
        from the GPU."""
        return self.alphas_cumprod.detach().cpu()

    @property
    def skipped_steps(self) -> int:
        """How many steps were skipped for a non-finite ε̂ or ``x_0``. Each step adds its flag on
        the device; the count is read to the host here, once for all steps since the last read."""
        if self._skipped_unread is not None:
            self._skipped_read += int(self._skipped_unread)
            self._skipped_unread = None
        return self._skipped_read

    @skipped_steps.setter
    def skipped_steps(self, count: int) -> None:
        self._skipped_read, self._skipped_unread = int(count), None

    def skip_state(self) -> tuple[int, Tensor | None]:
        """The skip count as it stands, without reading the device (:meth:`set_skip_state`)."""
        return self._skipped_read, self._skipped_unread

    def set_skip_state(self, state: tuple[int, Tensor | None]) -> None:
        self._skipped_read, self._skipped_unread = state

    def seed(self, seed: int) -> None:
        """Restart the noise / time generator from ``seed``."""
        self.generator.manual_seed(seed)

    def get_state(self) -> Tensor:
        """The generator state (a uint8 tensor, checkpointable)."""
        return self.generator.get_state()

    def set_state(self, state: Tensor) -> None:
        self.generator.set_state(state.cpu())

    @abstractmethod
    def set_prompt(self, prompt: str, negative: str = "") -> None:
        """Prepare the conditioning of ``prompt`` (per view label) and of ``negative``."""

    @abstractmethod
    def encode_images(self, images: Tensor) -> Tensor:
        """Renders ``[B, 3, H, W]`` in [0, 1] → the prior's ``x_0`` (differentiable)."""

    @abstractmethod
    def predict_noise(
        self, x_t: Tensor, t: Tensor, labels: list[str]
    ) -> NoisePrediction | tuple[Tensor, ...]:
        """ε predictions for ``x_t`` at integer times ``t: [B]`` (called under ``no_grad``):
        ``(ε_uncond, ε_cond)`` or a :class:`NoisePrediction` with Perp-Neg negatives."""

    def guide(self, prediction: NoisePrediction) -> Tensor:
        """ε̂ from the predictions: Perp-Neg when negatives are given, else CFG."""
        if prediction.negatives is not None and prediction.negative_weights is not None:
            return perp_neg_guidance(
                prediction.uncond,
                prediction.cond,
                prediction.negatives,
                prediction.negative_weights,
                self.cfg.guidance_scale,
            )
        return classifier_free_guidance(prediction.uncond, prediction.cond, self.cfg.guidance_scale)

    def sds_loss(
        self, images: Tensor, labels: list[str], step_ratio: float = 0.0
    ) -> tuple[Tensor, dict[str, float | Tensor]]:
        """One SDS step on renders ``images: [B, 3, H, W]`` in [0, 1] seen from views ``labels``.

        Returns a scalar loss whose gradient w.r.t. the encoded ``x_0`` is ``w(t) (ε̂ − ε) / B``
        (see :func:`sds_loss`), and ``info``: mean ``t`` and mean ``w`` (floats, known on the
        host) and ``skipped`` (a 0-dim float tensor on the device, 0 or 1: read it when a log line
        needs it, not every step). No host sync on CUDA.
        """
        x0 = self.encode_images(images).float()
        batch = x0.shape[0]
        # t, ε and w(t) are drawn and looked up on the host and copied up without a wait
        # (to_device): nothing in this step reads the GPU.
        t = sample_timesteps(
            batch,
            self.cfg.t_range,
            self.num_train_timesteps,
            step_ratio,
            self.cfg.t_anneal,
            self.generator,
            self.cfg.t_anneal_end,
        )
        noise = torch.randn(x0.shape, generator=self.generator)
        ab = self.alphas_cumprod_host[t]
        w = sds_weight(ab, self.cfg.weighting)
        info: dict[str, float | Tensor] = {"t": float(t.float().mean()), "w": float(w.mean())}
        t, noise, ab, w = (to_device(value, x0.device) for value in (t, noise, ab, w))
        with torch.no_grad():
            x_t = _per_sample(ab.sqrt(), x0) * x0 + _per_sample((1 - ab).sqrt(), x0) * noise
            prediction = self.predict_noise(x_t, t, labels)
            if not isinstance(prediction, NoisePrediction):
                prediction = NoisePrediction(*prediction)
            eps_hat = self.guide(prediction).float()
            finite = torch.isfinite(eps_hat).all() & torch.isfinite(x0).all()
        # A step whose ε̂ or x_0 is not finite is skipped without a host read: x_0, ε̂ and w are
        # zeroed by a flag on the device, so its loss and gradient are 0 (and x_0's gradient,
        # through torch.where, is 0 where the flag is off; where it is on, every value is the
        # one the plain equation takes).
        skipped = (~finite).float()
        info["skipped"] = skipped
        self._skipped_unread = (
            skipped if self._skipped_unread is None else self._skipped_unread + skipped
        )
        zero = torch.zeros((), device=x0.device)
        x0 = torch.where(finite, x0, zero)
        eps_hat = torch.where(finite, eps_hat, zero)
        w = torch.where(finite, w, zero)
        return sds_loss(x0, eps_hat, noise, w), info


# ----------------------------------------------------------------------------------------------
# Stable Diffusion through diffusers.


class StableDiffusionGuidance(ScoreDistillation):
    """SDS from a diffusers Stable Diffusion 1.x/2.x (epsilon or v-prediction), weights frozen.

    The parts come from :func:`dreamtext.models.load_for` (read from disk once per process); this
    class adds the prompt's conditioning and the noise prediction. Renders become latents by
    :meth:`~dreamtext.models.StableDiffusionModels.encode_images` (the VAE posterior mean at the
    model's native resolution). With ``cfg.textual_inversion`` the prompt is encoded by a copy of
    the text side with the learned tokens added; the shared one is never changed.
    """

    def __init__(
        self,
        cfg: GuidanceConfig,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> None:
        self.models = load_for(cfg, device, dtype)
        super().__init__(cfg, self.models.device, self.models.dtype, self.models.alphas_cumprod)
        self.prediction_type = self.models.prediction_type
        self.resolution = self.models.resolution
        self.vae = self.models.vae
        if (cfg.compile or cfg.compile_vae) and not self.models.compiles_here:
            # One line for the guidance, however many of its parts were asked for; --compile
            # sets guidance.compile_vae too, which the user then did not ask for by name.
            asked = "--compile" if cfg.compile else "guidance.compile_vae"
            logger.warning("%s: the guidance compiles for CUDA only; it runs eagerly here", asked)
        self.unet = self.models.sds_unet(cfg.compile, cfg.compile_mode)
        self._encoder = self.models.sds_encoder(cfg.compile_vae, cfg.vae_mode)
        # A compiled encoder is built and checked at its first call (it needs a render's shape).
        self._encoder_checked = self._encoder == self.models.encode_images
        # CUDA graphs (reduce-overhead) of either part: each SDS call is one iteration of them.
        graphs = "reduce-overhead"
        self._cuda_graphs = (self.unet is not self.models.unet and cfg.compile_mode == graphs) or (
            not self._encoder_checked and cfg.vae_mode == graphs
        )
        # Read now, so that a bad textual-inversion file fails before the run writes anything.
        self._text: TextSide | None = self.models.text_side(cfg.textual_inversion)
        self.tokenizer = self._text.tokenizer
        self.token_expansions = self._text.expansions
        self.prompts: PromptEmbeddings | None = None

    @property
    def compiled(self) -> list[str]:
        """The parts that run compiled here (``unet``, ``vae_encoder``; empty: all eager), where
        the config's ``compile`` / ``compile_vae`` say what was asked (CUDA only)."""
        parts = ["unet"] if self.unet is not self.models.unet else []
        return parts + (["vae_encoder"] if self._encoder != self.models.encode_images else [])

    def set_prompt(self, prompt: str, negative: str = "") -> None:
        """Encode the prompt per view label and the negative prompt (the text encoder visits the
        device only for this), then drop the text side: only the embeddings stay."""
        text = self._text or self.models.text_side(self.cfg.textual_inversion)
        self._text = None
        with self.models.text_encoder_on_device(text.text_encoder) as text_encoder:
            self.prompts = PromptEmbeddings(
                text.tokenizer,
                text_encoder,
                expand_tokens(prompt, text.expansions),
                expand_tokens(negative, text.expansions),
                view_dependent=self.cfg.view_dependent,
                perp_neg_weights=self.cfg.perp_neg_weights if self.cfg.perp_neg else None,
                labels=self.cfg.views.labels,
                device=self.device,
                dtype=self.dtype,
            )
        del text, text_encoder
        free_memory(self.device)

    def encode_images(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in [0, 1] → latents ``[B, 4, R/f, R/f]`` (differentiable): the
        compiled encoder with ``guidance.compile_vae`` on CUDA, checked at its first call
        (:meth:`_check_encoder`)."""
        if self._cuda_graphs:
            # A new iteration of the recorded graphs: their outputs of the last step (latents,
            # noise predictions) may be overwritten. The last step's backward has run by now;
            # torch's own guess of a new iteration waits for it, which a step whose backward
            # never came (skipped, out of memory) would leave pending.
            torch.compiler.cudagraph_mark_step_begin()
        if not self._encoder_checked:
            self._check_encoder(images)
        return self._encoder(images)

    def _check_encoder(self, images: Tensor) -> None:
        """Build the compiled encoder's forward and backward now, on renders shaped as
        ``images``, and compare them with the eager encoder's: latents, and the gradient of a
        random weighting of them with respect to the renders, within 5% of their largest
        magnitude (as the field's compiled MLPs are checked; fp16 rounding is ~0.1%, wrong code
        is off by about the values). A compiler that fails or code that disagrees is a
        :class:`DreamtextError` naming the setting to turn off; nothing of the run's state
        changes (the probe is a detached copy of ``images``)."""
        remedy = COMPILE_REMEDY
        probe = images.detach()

        def encode_with_gradient(encode) -> tuple[Tensor, Tensor]:
            leaf = probe.clone().requires_grad_(True)
            with torch.enable_grad():
                latents = encode(leaf).float()
                draw = torch.Generator().manual_seed(0)  # the same weights for both
                weights = torch.rand(latents.shape, generator=draw).to(latents.device)
                (grad,) = torch.autograd.grad((latents * weights).sum(), leaf)
            return latents.detach().clone(), grad.float().clone()

        results = [encode_with_gradient(self.models.encode_images)]
        try:
            results.append(encode_with_gradient(self._encoder))
        except Exception as error:  # compiler and driver errors come in many types
            if memory_that_ran_out(error) is not None:  # the run's, not the compiler's
                raise
            raise DreamtextError(
                f"torch.compile does not build the VAE encoder here ({cause_line(error)}): {remedy}"
            ) from error
        for want, got in zip(*results, strict=True):
            if not compiled_agrees(got, want):
                raise DreamtextError(
                    f"torch.compile's VAE encoder disagrees with the eager one on this device: "
                    f"{remedy}"
                )
        self._encoder_checked = True

    def predict_noise(self, x_t: Tensor, t: Tensor, labels: list[str]) -> NoisePrediction:
        """One batched U-Net call over ``[uncond; cond; negatives]``; v is converted to ε."""
        if self.prompts is None:
            raise RuntimeError("set_prompt must be called before predict_noise")
        batch = x_t.shape[0]
        uncond, cond = self.prompts.get(labels)
        embeddings, latents, times = [uncond, cond], [x_t, x_t], [t, t]
        negatives, weights = None, None
        if self.cfg.perp_neg:
            negatives, weights = self.prompts.negatives(labels)
            k = negatives.shape[1]
            embeddings.append(negatives.flatten(0, 1))
            latents.append(x_t.repeat_interleave(k, 0))
            times.append(t.repeat_interleave(k, 0))
        latent_in, t_in = torch.cat(latents), torch.cat(times)
        unet_in = self.models.unet_input(latent_in)
        try:
            out = self.unet(unet_in, t_in, encoder_hidden_states=torch.cat(embeddings)).sample
        except Exception as error:
            if self.unet is self.models.unet or not compiler_error(error):
                raise
            raise DreamtextError(
                f"torch.compile does not build the U-Net here ({cause_line(error)}): "
                f"{COMPILE_REMEDY}"
            ) from error
        out = out.float()
        if self.prediction_type == "v_prediction":
            out = v_to_epsilon(out, latent_in.float(), self.alphas_cumprod[t_in])
        eps_uncond, eps_cond = out[:batch], out[batch : 2 * batch]
        if negatives is not None:
            eps_neg = out[2 * batch :].reshape(batch, negatives.shape[1], *x_t.shape[1:])
            return NoisePrediction(eps_uncond, eps_cond, eps_neg, weights)
        return NoisePrediction(eps_uncond, eps_cond)


def compiler_error(error: BaseException) -> bool:
    """Whether ``error`` is torch.compile's own (dynamo's or inductor's: a backend that failed, a
    missing C compiler), not the model's (out of memory is torch's, and stays that, also where
    torch.compile wraps it: :func:`~dreamtext.devices.memory_that_ran_out`)."""
    if memory_that_ran_out(error) is not None:
        return False
    return type(error).__module__.startswith(("torch._dynamo", "torch._inductor"))


def make_guidance(
    cfg: GuidanceConfig,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    cameras: CameraRange | None = None,
    render_size: tuple[int, int] | None = None,
) -> ScoreDistillation:
    """``builtin:…`` → the built-in prior; anything else → :class:`StableDiffusionGuidance`.

    ``cameras`` and ``render_size`` (H, W) are the run's: the built-in prior renders its image set
    from that camera range at that size, so the trainer's views are always covered.
    """
    if cfg.model.startswith("builtin:"):
        from dreamtext.prior import make_builtin_prior

        height, width = render_size if render_size is not None else (None, None)
        return make_builtin_prior(cfg, device, cameras=cameras, height=height, width=width)
    return StableDiffusionGuidance(cfg, device, dtype)


__all__ = [
    "DEFAULT_MODEL",
    "GuidanceConfig",
    "NoisePrediction",
    "ScoreDistillation",
    "StableDiffusionGuidance",
    "classifier_free_guidance",
    "default_perp_neg_weights",
    "make_guidance",
    "perp_neg_guidance",
    "sample_timesteps",
    "sd_alphas_cumprod",
    "sds_loss",
    "sds_weight",
    "v_to_epsilon",
]
