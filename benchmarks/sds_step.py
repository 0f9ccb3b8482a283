"""Time one SDS training step (render → guidance → backward → Adam) and its peak memory.

    python benchmarks/sds_step.py                    # CUDA: SD-2.1-base-shaped model at
                                                     # 64/256/512 px in fp32/fp16/bf16;
                                                     # CPU: the NeRF part alone
    python benchmarks/sds_step.py --model tiny       # the tiny random test pipeline (CPU-friendly)
    python benchmarks/sds_step.py --model /path/sd   # a real local diffusers folder
    python benchmarks/sds_step.py --shadings albedo lambertian   # shaded rows too
    python benchmarks/sds_step.py --trainer --presets default fitfusion --steps 40
                                                     # the real trainer: it/s and peak memory
                                                     # of albedo and shaded phases per preset
    python benchmarks/sds_step.py --trainer --presets default --compile
                                                     # the same with the U-Net compiled
    python benchmarks/sds_step.py --trainer --presets default --compile --fitted sphere
                                                     # the trainer from a field fitted to a
                                                     # sphere: a trained run's surface, not
                                                     # a fresh field's fog
    python benchmarks/sds_step.py --descriptor --model sd21-random --precisions fp16
                                                     # `dreamtext image`'s descriptor training:
                                                     # step time and peak memory
    python benchmarks/sds_step.py --out benchmarks/RESULTS.md   # append the table there

``sd21-random`` builds a random-weight model from the SD-2.1-base configs in
``benchmarks/sd21_configs/`` (U-Net 865M, VAE 84M, OpenCLIP-H text tower 340M parameters), saves it
once in diffusers layout and loads it through ``StableDiffusionGuidance`` like a user's model:
nothing is downloaded, and the timings are those of the real architecture (weights do not change
the cost). The render size is the NeRF's; the VAE always encodes at the model's native size
(512 px for SD 2.1-base), as Stable-DreamFusion does. ``none`` times the NeRF part alone with
``loss = mean(rgb)`` in place of the guidance. Every part is built by ``dreamtext.factory`` and the
render goes through ``VolumeRenderer.render_train``, as in the trainer (deferred backprop when
the render is large). Peak memory on CUDA is the most allocated during the row (model weights
included) and the most reserved; on the CPU it is the process's peak RSS so far. The CUDA
allocator grows its segments in place, as the ``dreamtext`` command sets it up
(``devices.use_expandable_segments``); ``PYTORCH_ALLOC_CONF=expandable_segments:False`` in the
environment measures torch's default allocator instead. ``--gpu-memory-gib 11`` holds a run to what
a 12 GB card leaves it: out of memory, or the allocator's freeing and retrying near the limit,
shows in the rows as it would there.

``--trainer`` runs ``dreamtext.trainer.train`` itself for ``--steps`` steps per preset and phase
(albedo: shading never starts; shaded: the thesis's 0.2 / 0.4 / 0.4 mix from the first step),
without periodic previews or export, and reports the steady it/s (the second half of the steps),
the peak reserved memory the trainer logs for its steps, and the run's peak once its final
preview is rendered too (``status.json``): the issue's "no part of a run peaks above the
training step" for previews. ``--compile`` runs every row with ``torch.compile``d U-Net
(CUDA only, the trainer ignores it on a CPU). The trainer's field MLPs follow
``render.compile_field``: its default ``"auto"`` compiles them on CUDA (eager where that fails),
``--render '{"compile_field": false}'`` keeps them eager and ``true`` is ``dreamtext text
--compile``'s (a failure is then an error); the "field MLPs" column says how each row ran. The
U-Net's compilation falls in the warm-up steps (or the first half of a trainer row), so give
those enough steps. With ``--fitted SHAPE`` the trainer's field starts from the default field
fitted to that shape (as the single-step rows' does): a fresh field is a fog around the density
blob that the marcher keeps 60-70 samples a ray of, a trained one a surface it keeps 10-16 of, so
the fresh rows time a run's first steps and the fitted ones its later (shaded) steps. The
random-weight model's guidance turns no field into an object (and a fitted one back into fog), so
the fitted rows keep their field as it starts: its optimiser steps with a learning rate of 0
(:func:`fields_starting_from`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")


ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from dreamtext.inputs import spin_briefly  # noqa: E402

# Before torch loads libgomp, which reads it once: the CLI's short spin count (README, Speed).
spin_briefly(os.environ)
import torch  # noqa: E402

from dreamtext import trainer as trainer_module  # noqa: E402
from dreamtext.cameras import Poses, sample_poses, view_of  # noqa: E402
from dreamtext.config import resolve_config  # noqa: E402
from dreamtext.devices import free_memory, use_expandable_segments  # noqa: E402
from dreamtext.errors import DreamtextError  # noqa: E402
from dreamtext.factory import build_parts  # noqa: E402
from dreamtext.field import NeRFField  # noqa: E402
from dreamtext.guidance import DEFAULT_MODEL, ScoreDistillation  # noqa: E402
from dreamtext.models import clear_cache  # noqa: E402
from dreamtext.renderer import VolumeRenderer  # noqa: E402

CONFIGS = Path(__file__).resolve().parent / "sd21_configs"
PROMPT = "a red castle"
PRECISION_FLAGS = {"fp32": {}, "fp16": {"fp16": True}, "bf16": {"bf16": True}}


def write_sd21_random(folder: Path, device: torch.device) -> Path:
    """Save a random SD-2.1-base-shaped pipeline (fp16 weights) to ``folder``, once."""
    if (folder / "model_index.json").is_file():
        return folder
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from tiny_models import load_tiny_tokenizer, write_tiny_tokenizer
    from transformers import CLIPTextConfig, CLIPTextModel

    def config(name: str) -> dict:
        return json.loads((CONFIGS / name).read_text())

    # The real tokenizer cannot be downloaded; a tiny one only changes token ids, not the cost.
    tokenizer = load_tiny_tokenizer(write_tiny_tokenizer(folder / "tokenizer"))
    torch.manual_seed(0)
    with torch.device(device):  # initialising 1.3 B parameters is much faster on the GPU
        unet = UNet2DConditionModel.from_config(config("unet_config.json"))
        vae = AutoencoderKL.from_config(config("vae_config.json"))
        text_encoder = CLIPTextModel(CLIPTextConfig(**config("text_encoder_config.json")))
    pipe = StableDiffusionPipeline(
        vae=vae.half(),
        text_encoder=text_encoder.half(),
        tokenizer=tokenizer,
        unet=unet.half(),
        scheduler=PNDMScheduler.from_config(config("scheduler_config.json")),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    del pipe, unet, vae, text_encoder
    return folder


def model_folder(name: str, cache: Path, device: torch.device) -> str | None:
    if name == "none":
        return None
    if name == "tiny":
        from tiny_models import write_tiny_sd

        folder = cache / "tiny"
        if not (folder / "model_index.json").is_file():
            write_tiny_sd(folder)
        return str(folder)
    if name == "sd21-random":
        return str(write_sd21_random(cache / "sd21-random", device))
    return name


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_step(
    field: NeRFField,
    renderer: VolumeRenderer,
    guidance: ScoreDistillation | None,
    optimizer: torch.optim.Optimizer,
    poses: Poses,
    size: int,
    shading: str,
    device: torch.device,
    samples: list[float] | None = None,
) -> tuple[float, float, float]:
    """Seconds spent rendering, in the guidance, and in backward + Adam, for one step
    (``samples``, when given, gets the step's kept samples per ray)."""
    labels = [
        view_of(float(p), float(a)).label for p, a in zip(poses.polar, poses.azimuth, strict=True)
    ]
    synchronize(device)
    start = time.perf_counter()
    render = renderer.render_train(field, poses, size, size, shading=shading, perturb=True)
    images = render.images()
    if samples is not None:
        samples.append(render.num_samples / (len(poses) * size * size))
    synchronize(device)
    rendered = time.perf_counter()
    if guidance is None:
        loss = images.mean()
    else:
        loss, _ = guidance.sds_loss(images, labels, 0.5)
    synchronize(device)
    guided = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    render.backward(loss, {"entropy": 1e-4, "orientation": 1e-2})
    optimizer.step()
    synchronize(device)
    done = time.perf_counter()
    return rendered - start, guided - rendered, done - guided


def peak_memory_label(device: torch.device) -> str:
    """Peak memory in MiB as a row shows it: on CUDA the most allocated since the last reset of
    the peak statistics, with the most reserved beside it; on the CPU the process's peak RSS."""
    if device.type == "cuda":
        allocated = torch.cuda.max_memory_allocated(device) / 2**20
        reserved = torch.cuda.max_memory_reserved(device) / 2**20
        return f"{allocated:.0f} ({reserved:.0f} reserved)"
    return f"{trainer_module.memory_peak('memory') / 2**20:.0f} (RSS)"


def guidance_overrides(
    model: str | None, precision: str, compile: bool, settings: dict | None = None
) -> dict:
    """The ``guidance`` section of a benchmark run's config (``settings``: ``--guidance``'s)."""
    # Without a model only the NeRF is built; the id is a placeholder that is never loaded.
    return {
        "model": model or DEFAULT_MODEL,
        "compile": compile,
        **PRECISION_FLAGS[precision],
        **(settings or {}),
    }


def compile_label(compile: bool, device: torch.device, settings: dict | None = None) -> str:
    """What a row's U-Net ran as (the guidance compiles on CUDA only), and ``--guidance``'s
    settings, if any."""
    label = "off" if not compile else "on" if device.type == "cuda" else "ignored (CPU)"
    return label if not settings else f"{label}; {render_label(settings)}"


def run_config(
    model: str | None,
    precision: str,
    size: int,
    device: torch.device,
    compile: bool = False,
    field: dict | None = None,
    guidance: dict | None = None,
):
    """The ``TrainConfig`` of a default run at ``size`` px with this model and precision (and
    the ``field`` and ``guidance`` sections' overrides, e.g. ``{"normals": "analytic"}``, when
    given)."""
    overrides = {
        "prompt": PROMPT,
        "h": size,
        "w": size,
        "device": device.type,
        "guidance": guidance_overrides(model, precision, compile, guidance),
    }
    if field:
        overrides["field"] = dict(field)
    return resolve_config(overrides)


def render_settings(text: str) -> dict:
    """``--render``'s (or ``--guidance``'s) JSON object of settings (argparse's type: an error
    otherwise)."""
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from None
    if not isinstance(settings, dict):
        raise argparse.ArgumentTypeError("give a JSON object, e.g. '{\"march_window\": 64}'")
    return settings


def render_label(settings: dict | None) -> str:
    """A row's render settings as ``key=value, ...`` (``config defaults`` without any)."""
    if not settings:
        return "config defaults"
    return ", ".join(f"{key}={value}" for key, value in settings.items())


def field_overrides(args: argparse.Namespace) -> dict:
    """The ``field`` section the command line asks for (``--normals``, ``--density-head``)."""
    wanted = {"normals": args.normals, "density_head": args.density_head}
    return {key: value for key, value in wanted.items() if value is not None}


def measure(
    model: str | None,
    precision: str,
    sizes: list[int],
    shadings: list[str],
    device: torch.device,
    repeats: int,
    warmup: int,
    compile: bool = False,
    field_config: dict | None = None,
    report: Callable[[dict], None] | None = None,
    fitted: str | None = None,
    cache: Path | None = None,
    guidance_settings: dict | None = None,
) -> list[dict]:
    """One row per render size and shading: median times (ms) over ``repeats`` steps, kept
    samples per ray and peak memory (MiB). ``report`` gets each row as soon as it is measured
    (a later row may not end). ``fitted``: start each row from the field fitted to that shape
    (:func:`fitted_state`) instead of a fresh one."""
    guidance = None
    model_px = "-"
    if model is not None:
        clear_cache()  # the process keeps loaded models; drop the last precision's copy
        cfg = run_config(model, precision, sizes[0], device, compile, guidance=guidance_settings)
        guidance = build_parts(cfg, device, with_optimizer=False).guidance
        guidance.set_prompt(PROMPT)
        guidance.seed(0)
        model_px = str(getattr(guidance, "resolution", "-"))
    start = None  # the fitted parameters, fitted (or read from the cache) once for every row
    if fitted is not None:
        head = run_config(model, precision, sizes[0], device, field=field_config).field
        start = fitted_state(fitted, head.density_head, cache, device)
    rows = []
    for size, shading in ((s, sh) for s in sizes for sh in shadings):
        torch.manual_seed(0)
        cfg = run_config(model, precision, size, device, field=field_config)
        parts = build_parts(cfg, device, with_guidance=False)
        field, renderer, optimizer = parts.field, parts.renderer.train(), parts.optimizer
        if start is None:
            renderer.update_occupancy(field, 0)
        else:
            field.load_state_dict(start)
            for _ in range(FITTED_GRID_UPDATES):
                renderer.grid.update(field, renderer.cfg.chunk_points)
        generator = torch.Generator().manual_seed(0)
        free_device_memory(device)
        row = {
            "model": Path(model).name if model else "none (NeRF only)",
            "precision": precision if model else "fp32",
            "compile": compile_label(
                compile and model is not None, device, guidance_settings if model else None
            ),
            "encoding": getattr(field, "encoding_backend", "?"),
            "render_px": size,
            "model_px": model_px,
            "shading": shading,
            "normals": cfg.field.normals if shading != "albedo" else "-",
            "density_head": cfg.field.density_head,
            "field": "fresh" if fitted is None else f"fitted {fitted}",
            "field_mlps": "compiled" if getattr(field, "compiled", False) else "eager",
        }
        try:
            times, samples = [], []
            for i in range(warmup + repeats):
                poses = sample_poses(1, generator=generator).to(device)
                step = one_step(
                    field,
                    renderer,
                    guidance,
                    optimizer,
                    poses,
                    size,
                    shading,
                    device,
                    samples if i >= warmup else None,
                )
                if i >= warmup:
                    times.append(step)
        except torch.cuda.OutOfMemoryError:
            row["status"] = "out of memory"
        else:
            render_s, guide_s, backward_s = (statistics.median(t) for t in zip(*times, strict=True))
            row |= {
                "render_ms": f"{render_s * 1e3:.1f}",
                "guidance_ms": f"{guide_s * 1e3:.1f}" if guidance else "-",
                "backward_ms": f"{backward_s * 1e3:.1f}",
                "step_ms": f"{statistics.median(sum(t) for t in times) * 1e3:.1f}",
                "samples": f"{statistics.median(samples):.1f}",
                "peak_mib": peak_memory_label(device),
                "status": "ok",
            }
        rows.append(row)
        if report:
            report(row)
        del field, renderer, optimizer
    return rows


# Occupancy-grid updates of a fitted field before its row, as a trained run has had many. The
# count hardly matters: 2 → 32 updates gave 11.4 → 12.5 samples a ray (the sphere, 64 px, CPU).
FITTED_GRID_UPDATES = 8
FITTED_SHAPES = ("sphere", "cube", "torus")
# Where a trainer row's field starts: the shape's name (the row's label) and its fitted parameters.
FittedStart = tuple[str, dict[str, torch.Tensor]]


def fitted_state(
    shape: str, density_head: str, cache: Path | None, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """The default field's parameters fitted to ``shape``'s density (``normal_quality.py``'s
    fit, its default settings: 800 steps on ``device``, cached under ``cache/fitted``): a field
    with a sharp surface and empty space around it, as a trained run's, where a fresh field is a
    fog around the density blob (at 256 px on the CPU: 36 samples a ray fresh, 5-10 fitted)."""
    from normal_quality import fit, fit_settings  # benchmarks/normal_quality.py

    settings = fit_settings(
        cache=None if cache is None else cache / "fitted",
        density_head=density_head,
        device=str(device),
    )
    return fit(shape, settings)[0].state_dict()


def free_device_memory(device: torch.device) -> None:
    """Before a row's figures: collect what the last row left in reference cycles (the first
    optimiser's import of torch._dynamo keeps its caller's frames in one), hand the allocator's
    cache back (:func:`dreamtext.devices.free_memory`), and start the peak statistics afresh."""
    free_memory(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


COLUMNS = [
    ("model", "model"),
    ("precision", "precision"),
    ("compile", "compiled U-Net"),
    ("encoding", "hash grid"),
    ("render_px", "render px"),
    ("shading", "shading"),
    ("normals", "normals"),
    ("density_head", "density head"),
    ("field_mlps", "field MLPs"),
    ("field", "field"),
    ("model_px", "model px"),
    ("render_ms", "render ms"),
    ("guidance_ms", "guidance ms"),
    ("backward_ms", "backward+Adam ms"),
    ("step_ms", "step ms"),
    ("samples", "samples/ray"),
    ("peak_mib", "peak MiB"),
    ("status", "status"),
]


def table_of(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A markdown table of ``rows`` with ``columns`` ``(key, title)``; missing values are ``-``."""
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(key, "-")) for key, _ in columns) + " |")
    return "\n".join(lines)


def markdown_table(rows: list[dict]) -> str:
    return table_of(rows, COLUMNS)


def trainer_row(
    model: str | None,
    precision: str,
    preset: str,
    phase: str,
    args: argparse.Namespace,
    device: torch.device,
    start: FittedStart | None = None,
) -> dict:
    """Run the trainer for ``args.steps`` steps; steady it/s and peak reserved memory.
    ``start``: a shape's name and the field's parameters at step 0 (:func:`fitted_state`,
    ``--fitted``) instead of a fresh field's."""
    import tempfile

    from dreamtext.trainer import train

    overrides: dict = {
        "prompt": PROMPT,
        "iters": args.steps,
        "device": device.type,
        "log_every": 1,
        "preview_every": 0,
        "checkpoint_every": 10**9,
        "export": False,
        "albedo_epochs": 10**6 if phase == "albedo" else 0,
        "guidance": guidance_overrides(model, precision, args.compile, args.guidance),
    }
    field = field_overrides(args)
    if field:
        overrides["field"] = field
    if args.px:
        overrides["h"] = overrides["w"] = args.px
    if args.render:
        overrides["render"] = dict(args.render)
    row = {
        "preset": preset,
        "phase": phase,
        "precision": precision,
        "compile": compile_label(args.compile, device, args.guidance),
        "field": "fresh" if start is None else f"fitted {start[0]}",
    }
    # In memory where there is /dev/shm: the trainer fsyncs status.json at every logged step
    # (every step here, every 10th in a user's run), which a disk would add to the step time.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=shm) as workspace:
        overrides["workspace"] = workspace
        cfg = resolve_config(overrides, preset=None if preset == "default" else preset)
        row["px"] = cfg.h
        row["normals"] = cfg.field.normals
        row["density_head"] = cfg.field.density_head
        row["render"] = render_label(args.render)
        free_device_memory(device)
        try:
            with fields_starting_from(start):
                train(cfg)
        except DreamtextError as error:  # out of memory, as a user sees it: report, go on
            return {**row, "status": str(error).split(";")[0]}
        # The trainer resets the peak statistics when its loop starts.
        allocated = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0
        log = Path(workspace, "log.jsonl").read_text(encoding="utf-8")
        records = [json.loads(line) for line in log.splitlines()]
        run_peak = final_status_peak(Path(workspace))
        field_mlps = field_mlps_label(Path(workspace))
    # Each record's "its" is the mean rate since the start: recover the elapsed times.
    elapsed = [r["step"] / r["its"] for r in records]
    half = min(len(records) // 2, len(records) - 2)  # at least one step after it
    if half >= 0:
        rate = (records[-1]["step"] - records[half]["step"]) / (elapsed[-1] - elapsed[half])
    else:  # a one-step run: its only rate
        rate = records[-1]["its"]
    deferred = sum(r.get("backprop") == "deferred" for r in records)
    return {
        **row,
        "field_mlps": field_mlps,
        "scaler": loss_scaler_summary(records),
        "its": f"{rate:.2f}",
        "peak_mib": f"{max(r.get('gpu_mem_mib', 0.0) for r in records):.0f}",
        "run_peak_mib": "-" if run_peak is None else f"{run_peak:.0f}",
        "allocated_mib": f"{allocated:.0f}",
        "samples": f"{statistics.median(r['samples_per_ray'] for r in records):.1f}",
        "deferred": f"{deferred}/{len(records)}",
        "status": "ok",
    }


@contextlib.contextmanager
def fields_starting_from(start: FittedStart | None) -> Iterator[None]:
    """Within the block the trainer's field is ``start``'s fitted state (none: as built) and stays
    it: its parameters are loaded into the field :func:`dreamtext.factory.build_parts` gives the
    trainer, whose optimiser then steps them with a learning rate of 0. The random model's guidance
    would otherwise turn a fitted field back into fog within a few steps (Adam's first steps move
    every parameter with a gradient by about the learning rate: the tiny model's trainer from a
    fitted sphere at 64 px, albedo, kept 27, 46, 41, 54, 59, 58 samples a ray in its first six
    steps), where a real prompt's run keeps its surface. A step of 0 costs what a real Adam step
    costs. The occupancy grid is the trainer's own: every cell occupied until its first refresh,
    after step ``render.grid_update_every`` (16), as in a user's run; give a row steps past twice
    that, so that its second half, which the rate is taken over, has a refreshed grid."""
    if start is None:
        yield
        return
    state = start[1]
    build = trainer_module.build_parts

    def build_from_state(*args, **kwargs):
        parts = build(*args, **kwargs)
        parts.field.load_state_dict(state)
        for group in parts.optimizer.param_groups:
            group["lr"] = 0.0
        return parts

    with mock.patch.object(trainer_module, "build_parts", build_from_state):
        yield


def field_mlps_label(workspace: Path) -> str:
    """How the run's field MLPs ran, from its config.json: "compiled" or "eager" (on CUDA
    ``render.compile_field``'s default, "auto", compiles them unless that fails)."""
    ran_on = json.loads((workspace / "config.json").read_text(encoding="utf-8"))["ran_on"]
    return "compiled" if ran_on.get("field_compiled") else "eager"


def final_status_peak(workspace: Path) -> float | None:
    """The peak reserved GPU memory (MiB) ``status.json`` ends the run with: since the training
    loop started, the final preview (rendered after the last step) included; ``None`` off CUDA
    or without the file. Above the steps' own peak (log.jsonl), the preview is what peaked."""
    path = workspace / "status.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("gpu_mem_mib")


def loss_scaler_summary(records: list[dict]) -> str:
    """How the fp16 loss scaler fared: the steps it skipped (each halving of ``loss_scale`` from
    GradScaler's initial 2^16 is a step whose gradients overflowed and updated nothing) and the
    scale at the end; "off" when the run had none (fp32, bf16)."""
    scales = [r["loss_scale"] for r in records if "loss_scale" in r]
    if not scales:
        return "off"
    initial = torch.amp.GradScaler("cpu", enabled=True).get_scale()
    before = [initial, *scales[:-1]]
    skipped = sum(now < then for then, now in zip(before, scales, strict=True))
    return f"{skipped} skipped, scale {scales[-1]:g}"


TRAINER_COLUMNS = [
    ("preset", "preset"),
    ("px", "render px"),
    ("precision", "precision"),
    ("compile", "compiled U-Net"),
    ("field_mlps", "field MLPs"),
    ("phase", "phase"),
    ("normals", "normals"),
    ("density_head", "density head"),
    ("field", "field at step 0"),
    ("its", "it/s (steady)"),
    ("peak_mib", "peak reserved MiB"),
    ("run_peak_mib", "with the final preview"),
    ("allocated_mib", "peak allocated MiB (cf. memory_model.py)"),
    ("samples", "samples/ray (median)"),
    ("render", "render settings"),
    ("deferred", "deferred steps"),
    ("scaler", "fp16 loss scaler"),
    ("status", "status"),
]


def trainer_table(rows: list[dict]) -> str:
    return table_of(rows, TRAINER_COLUMNS)


def descriptor_row(
    model: str, precision: str, device: torch.device, repeats: int, warmup: int
) -> dict:
    """``dreamtext image``'s descriptor training (eq. 5.4, :class:`DescriptorTrainer`): median
    step time of ``repeats`` steps after ``warmup``, and peak memory (CUDA: allocated and
    reserved since the models were loaded, weights included; CPU: the process's peak RSS)."""
    from dreamtext.descriptor import DescriptorOptions, DescriptorTrainer
    from dreamtext.guidance import GuidanceConfig
    from dreamtext.models import load_for

    clear_cache()
    models = load_for(GuidanceConfig(model=model, **PRECISION_FLAGS[precision]), device)
    trainer = DescriptorTrainer(models, "a", ["red", "shiny"], "mug", DescriptorOptions())
    image = torch.rand(1, 3, models.resolution, models.resolution)
    free_device_memory(device)  # loading's channels-last copies leave freed blocks cached
    times = []
    for i in range(warmup + repeats):
        synchronize(device)
        start = time.perf_counter()
        trainer.train_step(image)
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    step, resolution = statistics.median(times), models.resolution
    peak = peak_memory_label(device)
    del trainer, models
    clear_cache()
    return {
        "model": Path(model).name,
        "precision": precision,
        "model_px": str(resolution),
        "step_ms": f"{step * 1e3:.1f}",
        "its": f"{1 / step:.2f}",
        "peak_mib": peak,
    }


DESCRIPTOR_COLUMNS = [
    ("model", "model"),
    ("precision", "precision"),
    ("model_px", "model px"),
    ("step_ms", "descriptor step ms"),
    ("its", "it/s"),
    ("peak_mib", "peak MiB"),
]


def publish(report: str, out: Path | None) -> None:
    """Print ``report`` and, with ``out``, append it to that markdown file."""
    print(report)
    if out:
        with out.open("a", encoding="utf-8") as f:
            f.write(report)


def cap_gpu_memory(device: torch.device, gib: float) -> float:
    """Let this process's CUDA allocator hold at most ``gib`` GiB of ``device``, as a card with
    that much memory free would: past it the allocator frees its cache and retries, then runs
    out of memory. Returns the fraction of the GPU's memory that is (torch's
    ``set_per_process_memory_fraction``)."""
    total = torch.cuda.get_device_properties(device).total_memory
    if not 0 < gib * 2**30 <= total:
        raise DreamtextError(
            f"--gpu-memory-gib {gib:g}: this GPU has {total / 2**30:.1f} GiB; give at most that"
        )
    fraction = gib * 2**30 / total
    # torch takes a device with its index here ("cuda" alone raised on the H200).
    index = torch.cuda.current_device() if device.index is None else device.index
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    return fraction


def device_from_flag(parser: argparse.ArgumentParser, name: str) -> torch.device:
    """The device ``--device name`` asks for: ``auto`` is CUDA where torch sees a GPU, else the
    CPU; a CUDA device where there is none ends the benchmark with a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {name}: no CUDA device here")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda [auto]")
    parser.add_argument(
        "--model",
        help="sd21-random, tiny, none, or a local diffusers folder "
        "[sd21-random on CUDA, none on CPU]",
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="render sizes [CUDA: 64 256 512; CPU: 64]"
    )
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=list(PRECISION_FLAGS),
        help="[CUDA: fp32 fp16 bf16; CPU: fp32]",
    )
    parser.add_argument(
        "--shadings",
        nargs="+",
        default=["albedo", "lambertian"],
        choices=["albedo", "lambertian", "textureless"],
        help="[albedo lambertian]",
    )
    parser.add_argument(
        "--normals",
        choices=["forward_difference", "central_difference", "analytic"],
        help="field.normals of every row [the config's default]",
    )
    parser.add_argument(
        "--density-head",
        choices=["shared", "separate"],
        help="field.density_head of every row [the config's default: shared]",
    )
    parser.add_argument(
        "--fitted",
        choices=FITTED_SHAPES,
        help="start each row's field fitted to this shape (a trained run's sharp surface and "
        "empty space), not fresh (a fog: the most samples); with --trainer the trainer's field "
        "starts from it and is held there (learning rate 0) [fresh]",
    )
    parser.add_argument("--trainer", action="store_true", help="time the real trainer instead")
    parser.add_argument(
        "--descriptor",
        action="store_true",
        help="time `dreamtext image`'s descriptor training steps instead (needs a model)",
    )
    parser.add_argument(
        "--presets",
        nargs="+",
        default=["default", "fitfusion"],
        help="with --trainer: presets to run (default = no preset) [default fitfusion]",
    )
    parser.add_argument("--steps", type=int, default=40, help="with --trainer: steps per phase")
    parser.add_argument(
        "--px",
        type=int,
        help="with --trainer: render size (--h/--w) of every row [each preset's own]",
    )
    parser.add_argument(
        "--render",
        type=render_settings,
        help="with --trainer: the render section's settings for every row, a JSON object, e.g. "
        '\'{"grad_chunk_points": 33554432, "march_window": 64}\' [the config\'s]',
    )
    parser.add_argument(
        "--guidance",
        type=render_settings,
        help="the guidance section's settings for every row, a JSON object, e.g. "
        '\'{"compile_vae": true, "compile_mode": "reduce-overhead"}\' [the config\'s]',
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the U-Net (CUDA only); dreamtext's --compile also sets --render "
        '\'{"compile_field": true}\' --guidance \'{"compile_vae": true, "compile_mode": '
        '"reduce-overhead"}\'',
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per row [5]")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first [2]")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("/tmp/dreamtext-bench"),
        help="where generated random models are kept [/tmp/dreamtext-bench]",
    )
    parser.add_argument(
        "--cudnn-benchmark",
        action="store_true",
        help="let cuDNN time its convolution algorithms for each shape and keep the fastest "
        "(torch.backends.cudnn.benchmark; dreamtext leaves it off): the VAE encodes at a fixed "
        "512 px, so it pays once",
    )
    parser.add_argument(
        "--gpu-memory-gib",
        type=float,
        help="CUDA: let the run hold at most this much GPU memory, as on a smaller card (11 for "
        "a 12 GB card less its CUDA context and a desktop) [the whole GPU]",
    )
    parser.add_argument("--out", type=Path, help="append the table to this markdown file")
    args = parser.parse_args(argv)
    use_expandable_segments()  # as the dreamtext command does, before CUDA starts
    torch.backends.cudnn.benchmark = args.cudnn_benchmark

    device = device_from_flag(parser, args.device)
    cuda = device.type == "cuda"
    if args.gpu_memory_gib is not None:
        if not cuda:
            parser.error("--gpu-memory-gib needs a CUDA device")
        try:
            cap_gpu_memory(device, args.gpu_memory_gib)
        except DreamtextError as error:
            parser.error(str(error))
    model_name = args.model or ("sd21-random" if cuda else "none")
    sizes = args.sizes or ([64, 256, 512] if cuda else [64])
    precisions = args.precisions or (["fp32", "fp16", "bf16"] if cuda else ["fp32"])
    if model_name == "none":
        precisions = ["fp32"]

    folder = model_folder(model_name, args.cache, device)
    if args.descriptor and args.fitted:
        parser.error("--fitted is for the SDS step and --trainer rows, not --descriptor")
    if (args.trainer or args.descriptor) and folder is None:
        parser.error("--trainer and --descriptor need a model: --model tiny on a CPU, sd21-random")
    if args.descriptor:
        rows = [descriptor_row(folder, p, device, args.repeats, args.warmup) for p in precisions]
        table = table_of(rows, DESCRIPTOR_COLUMNS)
    elif args.trainer:
        start = None  # the fitted field every row starts from, fitted (or read) once
        if args.fitted:
            head = resolve_config({"prompt": PROMPT, "field": field_overrides(args)}).field
            start = (args.fitted, fitted_state(args.fitted, head.density_head, args.cache, device))
        rows = []
        for precision in precisions:
            for preset in args.presets:
                for phase in ("albedo", "shaded"):
                    rows.append(trainer_row(folder, precision, preset, phase, args, device, start))
                    print(trainer_table(rows[-1:]), flush=True)
        table = trainer_table(rows)
    else:
        rows = []
        for precision in precisions:
            rows += measure(
                folder,
                precision,
                sizes,
                args.shadings,
                device,
                args.repeats,
                args.warmup,
                args.compile,
                field_overrides(args),
                report=lambda row: print(markdown_table([row]), flush=True),
                fitted=args.fitted,
                cache=args.cache,
                guidance_settings=args.guidance,
            )
        table = markdown_table(rows)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    # Quoted as a shell needs it (--render's JSON), so that the line can be run again as it is.
    command = "python benchmarks/sds_step.py " + shlex.join(
        argv if argv is not None else sys.argv[1:]
    )
    if args.trainer:
        timing = f"{args.steps} trainer steps a row, it/s over the second half"
    else:
        timing = f"median of {args.repeats} steps after {args.warmup} warm-up"
    report = (
        f"\n## {'Descriptor step' if args.descriptor else 'SDS step'} — {device_name(device)} — "
        f"{stamp}\n\n"
        f"`{command.strip()}` (torch {torch.__version__}, {timing}, batch 1)\n\n{table}\n"
    )
    publish(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
