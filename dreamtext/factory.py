"""One way to build a run's parts from its config: field, renderer, guidance, optimiser.

The trainer, :func:`dreamtext.checkpoint.load_run`, the exporter and the benchmarks all build
through these functions, so a setting means the same thing everywhere (which hash-grid backend,
which sampler, the MLPs' precision, the optimiser's groups).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch

from dreamtext import models
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


def optimizer_step_temporaries(kind: str, device: torch.device) -> int:
    """Values a parameter that the step of optimiser ``kind`` on ``device`` holds at once besides
    its state, at the least: Adam, built with ``foreach`` (:func:`build_optimizer`), √v divided
    in place (1; torch's one-parameter-at-a-time step, its CPU default, held √v and its quotient
    by the bias correction: 2); Adan none (it clips the gradient in place, dreamtext/adan.py).
    Measured as peak RSS of a step on the CPU: a table of 2^24 rows × 16 levels × 4 features
    peaked 1.24 GB (Adam one parameter at a time) and 0.00 GB (Adan; 0.63 GB with its clipped
    copy) above the table, its gradient and the state. The field's memory check counts them for
    the hash table. ``device``: every device takes the same step now."""
    del device
    return 0 if kind == "adan" else 1


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
# The lines of :func:`ignored_compile_line` this process has written: a batch's later prompts
# build their parts again, and the user asked once.
_IGNORED_COMPILE_WARNED: set[str] = set()


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
    Stable-DreamFusion's settings.

    Adam steps every parameter at once (``foreach``, its default on CUDA) on the CPU too: the
    same values bit for bit, fewer Python calls a step (the built-in field's 15 tensors: 2.3-2.5
    → 1.8-1.9 ms a step) and one temporary a value where one parameter at a time made two
    (:func:`optimizer_step_temporaries`)."""
    if kind == "adan":
        return Adan(field.param_groups(lr))
    return torch.optim.Adam(field.param_groups(lr), betas=ADAM_BETAS, eps=ADAM_EPS, foreach=True)


def build_guidance(cfg: TrainConfig, device: torch.device) -> ScoreDistillation:
    """The prior of ``cfg.guidance`` in its precision, seeing the run's cameras and render size."""
    dtype = resolve_dtype(cfg.guidance, device)
    return make_guidance(cfg.guidance, device, dtype, cfg.cameras, (cfg.h, cfg.w))


def ignored_compile_line(
    cfg: TrainConfig, device: torch.device, with_guidance: bool = True
) -> str | None:
    """The one line saying which of the compile settings of ``cfg`` ``device`` ignores (``None``:
    none asked for there), naming the setting that asked: ``--compile`` (``guidance.compile``;
    it sets the rest), else a config file's ``guidance.compile_vae`` and
    ``render.compile_field: true``. The built-in prior has nothing to compile anywhere."""
    builtin = cfg.guidance.model.startswith("builtin:")
    guidance_ignored = with_guidance and device.type not in models.COMPILE_DEVICES
    prior = guidance_ignored and builtin and cfg.guidance.compile
    guidance = (
        guidance_ignored and not builtin and (cfg.guidance.compile or cfg.guidance.compile_vae)
    )
    field = cfg.render.compile_field is True and device.type not in COMPILE_DEVICES
    if not (prior or guidance or field):
        return None
    if prior:
        mlps = (
            ", and the field's MLPs compile for CUDA only; they run eagerly here" if field else ""
        )
        return f"--compile: the built-in prior has no network to compile{mlps}"
    if cfg.guidance.compile:
        asked = "--compile"
    else:
        names = (("guidance.compile_vae", guidance), ("render.compile_field: true", field))
        asked = " and ".join(name for name, on in names if on)
    if not field:
        return f"{asked}: the guidance compiles for CUDA only; it runs eagerly here"
    parts = "the guidance and the field's MLPs" if guidance else "the field's MLPs"
    return f"{asked}: {parts} compile for CUDA only; they run eagerly here"


def build_parts(
    cfg: TrainConfig,
    device: torch.device,
    with_guidance: bool = True,
    with_optimizer: bool = True,
) -> RunParts:
    """Field, renderer and (optionally) guidance and optimiser of a run. The guidance is built
    first: a bad model id then fails before anything else is allocated.

    Compile settings that ``device`` cannot honour are left out of the parts' settings and said
    in one line, once a process (:func:`ignored_compile_line`): the parts would each warn, and a
    batch would repeat both lines at every prompt. They change speed, never what a run computes.
    """
    line = ignored_compile_line(cfg, device, with_guidance)
    if line is not None and line not in _IGNORED_COMPILE_WARNED:
        _IGNORED_COMPILE_WARNED.add(line)
        logger.warning("%s", line)
    compile_field = cfg.render.compile_field if device.type in COMPILE_DEVICES else False
    if device.type not in models.COMPILE_DEVICES:
        cfg = replace(cfg, guidance=replace(cfg.guidance, compile=False, compile_vae=False))
    guidance = build_guidance(cfg, device) if with_guidance else None
    field = build_field(cfg.field, device, mixed_precision(cfg, device), compile_field)
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
    "ignored_compile_line",
    "mixed_precision",
    "optimizer_step_temporaries",
]
