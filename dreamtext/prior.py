"""The built-in offline prior: the exact ("ideal") denoiser of a small set of rendered primitives.

For a noisy image ``x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε`` and a finite image set ``S = {x_i}`` taken as
the data distribution (uniform over S), the posterior over which image was noised is

    p(i | x_t) = softmax_i( −‖x_t − √ᾱ_t x_i‖² / 2(1 − ᾱ_t) ),

so the minimum-MSE denoiser and its noise prediction are known in closed form:

    E[x_0 | x_t] = Σ_i p(i | x_t) x_i,        ε̂ = (x_t − √ᾱ_t E[x_0 | x_t]) / √(1 − ᾱ_t).

This is what a perfectly trained diffusion model of S would predict. Images live in pixel space in
[−1, 1] (no VAE), with Stable Diffusion's noise schedule, and the prior plugs into the same
:class:`dreamtext.guidance.ScoreDistillation` step as Stable Diffusion.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from dreamtext.cameras import CameraRange, view_of, with_view
from dreamtext.captions import BUILTIN_MODELS
from dreamtext.errors import DreamtextError
from dreamtext.guidance import GuidanceConfig, NoisePrediction, ScoreDistillation
from dreamtext.shapes import ShapesDataset, find_primitive, load_dataset

MAX_DATASET_SIZE = 64
"""The longest side of the prior's images: larger renders are compared at this size (their
noise prediction is taken on the downscaled render, as Stable Diffusion's is on its latent grid).
The image set grows with the square of its size: the preset's 8,928 images and their [−1, 1] copy,
float32, keep 0.88 GB at 64 px and would keep 14.0 GB at 256 (loading peaks about 1.5× that)."""

log = logging.getLogger(__name__)


def dataset_size(height: int, width: int) -> tuple[int, int]:
    """The prior's image size for renders of ``height × width``: the same, or scaled down (aspect
    kept, at least 1 px a side) so that its longest side is :data:`MAX_DATASET_SIZE`."""
    scale = min(1.0, MAX_DATASET_SIZE / max(height, width))
    return max(1, math.floor(height * scale + 0.5)), max(1, math.floor(width * scale + 0.5))


def squared_norms(images: Tensor) -> Tensor:
    """``‖x_i‖²`` of each image: ``images: [M, D]`` → ``[M]``. The same for every call of
    :func:`posterior_logits` on one image set, so :class:`ShapesPrior` computes it once per set
    (it cost more than the matmul itself: ``M·D`` products and a temporary of the set's size)."""
    return (images * images).sum(-1)


def posterior_logits(
    x_t: Tensor, images: Tensor, alpha_bar: Tensor, sq_norms: Tensor | None = None
) -> Tensor:
    """``log p(i | x_t)`` up to a constant per row: ``−‖x_t − √ᾱ x_i‖² / 2(1 − ᾱ)``.

    ``x_t: [B, D]``, ``images: [M, D]``, ``alpha_bar: [B]`` → ``[B, M]``. The squared distance is
    expanded as ``‖x_t‖² − 2√ᾱ x_t·x_i + ᾱ‖x_i‖²`` so that the work is one matmul; the first term is
    the same for every i and drops out of the softmax, so it is left out. ``sq_norms``: the
    images' :func:`squared_norms` ``[M]`` when the caller keeps them (computed here otherwise).
    """
    a = alpha_bar.sqrt()[:, None]
    dots = x_t @ images.T
    if sq_norms is None:
        sq_norms = squared_norms(images)
    return (2 * a * dots - a * a * sq_norms[None, :]) / (2 * (1 - alpha_bar)[:, None])


def posterior_weights(
    x_t: Tensor, images: Tensor, alpha_bar: Tensor, sq_norms: Tensor | None = None
) -> Tensor:
    """``p(i | x_t) = softmax_i(−‖x_t − √ᾱ x_i‖² / 2(1 − ᾱ))``: ``[B, D], [M, D], [B] -> [B, M]``,
    each row summing to one (computed in log space: ``exp(l_i − logsumexp_j l_j)``)."""
    logits = posterior_logits(x_t, images, alpha_bar, sq_norms)
    return torch.exp(logits - torch.logsumexp(logits, dim=-1, keepdim=True))


def ideal_denoiser(
    x_t: Tensor, images: Tensor, alpha_bar: Tensor, sq_norms: Tensor | None = None
) -> Tensor:
    """``E[x_0 | x_t] = Σ_i p(i | x_t) x_i``: ``[B, D], [M, D], [B] -> [B, D]``."""
    return posterior_weights(x_t, images, alpha_bar, sq_norms) @ images


def ideal_epsilon(
    x_t: Tensor, images: Tensor, alpha_bar: Tensor, sq_norms: Tensor | None = None
) -> Tensor:
    """``ε̂ = (x_t − √ᾱ E[x_0 | x_t]) / √(1 − ᾱ)``: ``[B, D], [M, D], [B] -> [B, D]``."""
    x0 = ideal_denoiser(x_t, images, alpha_bar, sq_norms)
    a = alpha_bar[:, None]
    return (x_t - a.sqrt() * x0) / (1 - a).sqrt()


class ShapesPrior(ScoreDistillation):
    """SDS guidance from the ideal denoiser over :mod:`dreamtext.shapes` renders.

    The conditional set of a batch element is the images captioned ``"<prompt>, <view> view"`` for
    its view label (all views of the prompt's object when view-dependent prompts are off); the
    unconditional set is every view of the negative prompt's object, or of the prompt's own object
    when there is no negative prompt. The empty prompt stands for every image of the dataset.
    The dataset is rendered for ``cameras`` at ``height × width``: the training camera range and
    render size (scaled down to at most :data:`MAX_DATASET_SIZE` a side, :func:`dataset_size`), so
    that every training view has dataset images within 5° of it. Perp-Neg does not apply (the sets
    are already view-specific), so only CFG is used; ``compile`` has no network here to compile
    (the field's MLPs, on CUDA, are the factory's).
    """

    def __init__(
        self,
        cfg: GuidanceConfig,
        cameras: CameraRange,
        height: int,
        width: int,
        device: torch.device | str = "cpu",
    ):
        super().__init__(cfg, device, torch.float32)
        if cfg.perp_neg:
            log.warning("--perp-neg does not apply to the built-in prior; ignored")
        if cfg.compile:
            log.warning(
                "--compile has no network of the built-in prior to compile; on CUDA it compiles "
                "the field's MLPs only"
            )
        height, width = dataset_size(height, width)
        self.dataset: ShapesDataset = load_dataset(cameras, height, width, cfg.views)
        self.height, self.width = height, width
        # The image set lives where the renders do: x_t @ images.T needs both on one device.
        self._flat = (self.dataset.images.flatten(1) * 2 - 1).to(self.device)
        self._cond: dict[str, Tensor] = {}
        self._uncond: Tensor | None = None
        # The sets' squared_norms, made with the sets (set_prompt), not at every step.
        self._cond_norms: dict[str, Tensor] = {}
        self._uncond_norms: Tensor | None = None

    def images_of(self, caption: str) -> Tensor:
        """The flattened images ``[M, D]`` in [−1, 1] whose object or view caption is ``caption``
        (``""``: every image), in float64 so that the expanded distances of
        :func:`posterior_logits` keep the small differences that decide the posterior at low noise.
        """
        if caption == "":
            return self._flat.double()
        keep = [
            i
            for i, (obj, text) in enumerate(
                zip(self.dataset.objects, self.dataset.captions, strict=True)
            )
            if caption in (obj, text)
        ]
        return self._flat[keep].double()

    def set_prompt(self, prompt: str, negative: str = "") -> None:
        """Choose the conditional sets (one per view label in the dataset) and the unconditional
        set; an unknown caption is a :class:`DreamtextError` listing the known ones."""
        obj = find_primitive(prompt).caption if prompt.strip() else ""
        uncond_obj = find_primitive(negative).caption if negative.strip() else obj
        self._uncond = self.images_of(uncond_obj)
        labels = {
            view_of(float(p), float(a), self.cfg.views).label
            for p, a in zip(self.dataset.polar, self.dataset.azimuth, strict=True)
        }
        if self.cfg.view_dependent and obj:
            self._cond = {label: self.images_of(with_view(obj, label)) for label in labels}
        else:
            self._cond = {label: self.images_of(obj) for label in labels}
        self._uncond_norms = squared_norms(self._uncond)
        self._cond_norms = {label: squared_norms(s) for label, s in self._cond.items()}

    def encode_images(self, images: Tensor) -> Tensor:
        """Renders ``[B, 3, H, W]`` in [0, 1] → the dataset's size, in [−1, 1] (pixel space)."""
        if images.shape[-2:] != (self.height, self.width):
            images = F.interpolate(
                images, (self.height, self.width), mode="bilinear", antialias=True
            )
        return images * 2 - 1

    def predict_noise(self, x_t: Tensor, t: Tensor, labels: list[str]) -> NoisePrediction:
        """Ideal ``ε̂`` of the unconditional and the per-view conditional sets, each
        ``[B, 3, H, W]``, for ``x_t: [B, 3, H, W]`` at integer times ``t: [B]``."""
        if self._uncond is None:
            raise RuntimeError("set_prompt must be called before predict_noise")
        flat = x_t.flatten(1).to(torch.float64)
        alpha_bar = self.alphas_cumprod.to(torch.float64)[t.long().to(self.device)]
        eps_uncond = ideal_epsilon(flat, self._uncond, alpha_bar, self._uncond_norms)
        eps_cond = torch.empty_like(flat)
        for label in set(labels):
            rows = [i for i, lab in enumerate(labels) if lab == label]
            if label not in self._cond:
                known = ", ".join(sorted(self._cond))
                raise DreamtextError(
                    f'the built-in prior has no "{label}" views for this camera range '
                    f"(it has: {known}); keep the cameras inside the preset's range"
                )
            eps_cond[rows] = ideal_epsilon(
                flat[rows], self._cond[label], alpha_bar[rows], self._cond_norms[label]
            )
        shape = x_t.shape
        return NoisePrediction(
            eps_uncond.reshape(shape).to(x_t.dtype), eps_cond.reshape(shape).to(x_t.dtype)
        )


def make_builtin_prior(
    cfg: GuidanceConfig,
    device: torch.device | str = "cpu",
    cameras: CameraRange | None = None,
    height: int | None = None,
    width: int | None = None,
) -> ShapesPrior:
    """``builtin:shapes`` → :class:`ShapesPrior`.

    The dataset's cameras and size default to the ``builtin-shapes`` preset's (the numbers live
    only there), which is what ``--model builtin:shapes`` trains with.
    """
    if cfg.model not in BUILTIN_MODELS:
        raise DreamtextError(
            f"unknown built-in prior '{cfg.model}'; available: {', '.join(BUILTIN_MODELS)}"
        )
    if cameras is None or height is None or width is None:
        # Imported here: the config module composes the guidance module this one extends.
        from dreamtext.config import TrainConfig, apply_overrides, preset_path, read_yaml

        preset = TrainConfig()
        apply_overrides(preset, read_yaml(preset_path("builtin-shapes")), "preset 'builtin-shapes'")
        cameras = cameras or preset.cameras
        height, width = height or preset.h, width or preset.w
    return ShapesPrior(cfg, cameras, height, width, device)


__all__ = [
    "BUILTIN_MODELS",
    "MAX_DATASET_SIZE",
    "ShapesPrior",
    "dataset_size",
    "ideal_denoiser",
    "ideal_epsilon",
    "make_builtin_prior",
    "posterior_logits",
    "posterior_weights",
    "squared_norms",
]
