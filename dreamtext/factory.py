"""One way to build a run's parts from its config: field, renderer, guidance, optimiser.

The trainer, :func:`dreamtext.checkpoint.load_run`, the exporter and the benchmarks all build
through these functions, so a setting means the same thing everywhere (which hash-grid backend,
which sampler, the MLPs' precision, the optimiser's groups).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from dreamtext.adan import Adan
from dreamtext.config import TrainConfig
from dreamtext.errors import DreamtextError
from dreamtext.field import FieldConfig, NeRFField
from dreamtext.guidance import ScoreDistillation, make_guidance
from dreamtext.models import resolve_dtype
from dreamtext.renderer import RenderConfig, VolumeRenderer

ADAM_BETAS = (0.9, 0.99)
ADAM_EPS = 1e-15
# Values each optimiser keeps a parameter, in its dtype, from its first step on: Adam its two
# moments, Adan three averages and the last gradient (dreamtext/adan.py). The field's memory
# check (dreamtext.trainer.check_field_memory) counts them.
OPTIMIZER_STATE_VALUES = {"adam": 2, "adan": 4}

logger = logging.getLogger(__name__)
# Where render.compile_field compiles the field's MLPs: on the CPU the eager MLP, in cache-sized
# pieces, is faster than Inductor's CPU code (benchmarks/RESULTS.md, 2026-12-04).
COMPILE_DEVICES = ("cuda",)
# What render.compile_field "auto" does where the compiled MLPs fail: the end of the warning.
AUTO_COMPILE_FALLBACK = (
    "the field's MLPs run eagerly instead (slower; render.compile_field: false skips the try)"
)
# The warning of "auto"'s first failure in this process, once there was one: the fields built
# after it (a batch's later prompts, one process for many) stay eager without trying again.
_AUTO_COMPILE_FAILED: list[str] = []


@dataclass
class RunParts:
    """The live objects of a run (``guidance`` and ``optimizer`` may be left out)."""

    field: NeRFField
    renderer: VolumeRenderer
    guidance: ScoreDistillation | None = None
    optimizer: torch.optim.Optimizer | None = None


def mixed_precision(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The MLPs' autocast dtype: fp16 / bf16 with ``--fp16`` / ``--bf16`` on CUDA, else none
    (the hash table and the compositing always stay float32)."""
    if device.type != "cuda":
        return None
    if cfg.guidance.fp16:
        return torch.float16
    if cfg.guidance.bf16:
        return torch.bfloat16
    return None


def build_field(
    cfg: FieldConfig,
    device: torch.device | str,
    mlp_dtype: torch.dtype | None = None,
    compile: bool | str = False,
) -> NeRFField:
    """The NeRF field of ``cfg`` on ``device``, its MLPs autocast to ``mlp_dtype`` on CUDA and
    ``torch.compile``d there as ``compile`` (``render.compile_field``) says:

    * ``"auto"`` (the default): compiled on CUDA; where that fails (no Triton, a compiler
      error, compiled code that disagrees with the eager MLP) the run goes on with the eager
      MLPs and one warning, and later fields of the process (a batch's next prompts) stay
      eager without trying again. Eager elsewhere, silently.
    * ``True`` (``--compile``): compiled on CUDA, and a failure is a :class:`DreamtextError`
      (the user asked for it); elsewhere ignored with a warning, as the U-Net's is.
    * ``False``: eager.

    Compiling changes speed, never what a run computes (values within rounding, checked when
    built: :meth:`~dreamtext.field.NeRFField.compile_mlps`)."""
    field = NeRFField(cfg, device=device)
    field.mlp_dtype = mlp_dtype
    if compile is False:
        return field
    if torch.device(device).type not in COMPILE_DEVICES:
        if compile is True:
            # Asked by --compile or by a config file's render.compile_field: name both.
            logger.warning(
                "render.compile_field: true (--compile sets it): the field's MLPs compile for "
                "CUDA only; they run eagerly here"
            )
        return field
    if compile is True:
        field.compile_mlps()
        return field
    if _AUTO_COMPILE_FAILED:  # a batch's later prompts: no second try, no second warning
        return field
    try:
        field.compile_mlps(remedy=AUTO_COMPILE_FALLBACK)
    except DreamtextError as err:
        _AUTO_COMPILE_FAILED.append(str(err))
        logger.warning("%s", err)
    return field


def build_renderer(cfg: RenderConfig, device: torch.device | str) -> VolumeRenderer:
    """The volume renderer of ``cfg`` (its sampler and occupancy grid) on ``device``."""
    return VolumeRenderer(cfg).to(device)


def build_optimizer(field: NeRFField, lr: float, kind: str = "adam") -> torch.optim.Optimizer:
    """The optimiser ``kind`` over the field's groups (hash table at ``lr × encoding_lr_scale``):
    Adam with β = (0.9, 0.99), ε = 1e-15 (Instant-NGP's), or :class:`~dreamtext.adan.Adan` with
    Stable-DreamFusion's settings."""
    if kind == "adan":
        return Adan(field.param_groups(lr))
    return torch.optim.Adam(field.param_groups(lr), betas=ADAM_BETAS, eps=ADAM_EPS)


def build_guidance(cfg: TrainConfig, device: torch.device) -> ScoreDistillation:
    """The prior of ``cfg.guidance`` in its precision, seeing the run's cameras and render size."""
    dtype = resolve_dtype(cfg.guidance, device)
    return make_guidance(cfg.guidance, device, dtype, cfg.cameras, (cfg.h, cfg.w))


def build_parts(
    cfg: TrainConfig,
    device: torch.device,
    with_guidance: bool = True,
    with_optimizer: bool = True,
) -> RunParts:
    """Field, renderer and (optionally) guidance and optimiser of a run. The guidance is built
    first: a bad model id then fails before anything else is allocated."""
    guidance = build_guidance(cfg, device) if with_guidance else None
    field = build_field(cfg.field, device, mixed_precision(cfg, device), cfg.render.compile_field)
    renderer = build_renderer(cfg.render, device)
    optimizer = build_optimizer(field, cfg.lr, cfg.optimizer) if with_optimizer else None
    return RunParts(field, renderer, guidance, optimizer)


__all__ = [
    "OPTIMIZER_STATE_VALUES",
    "RunParts",
    "build_field",
    "build_guidance",
    "build_optimizer",
    "build_parts",
    "build_renderer",
    "mixed_precision",
]
