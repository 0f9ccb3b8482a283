"""The SDS training loop: sample a camera, render, ask the prior for a gradient, step the NeRF.

One step (DreamFusion; thesis ch. 3.3, eq. 3.21):

    x = g(θ, camera)                     render (renderer + field)
    loss = L_SDS(x) + λ_e L_entropy + λ_o L_opacity + λ_n L_orientation + λ_d L_density
    θ ← Adam(θ, ∇θ loss)                 ∇θ L_SDS = w(t) (ε̂ − ε) ∂x/∂θ (guidance)

Everything else here is bookkeeping at the edges: the workspace, ``log.jsonl``, previews,
checkpoints, resuming and Ctrl-C. The trainer composes the parts; the parts never import it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import math
import resource
import secrets
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dreamtext.cameras import Poses, box_outside_ranges, orbit_poses, sample_poses, view_of
from dreamtext.checkpoint import (
    RUN_KEYS,
    UnreadableCheckpoint,
    append_log_line,
    atomic_write_bytes,
    can_resume,
    check_checkpoint_files,
    check_writable,
    checkpoint_dir,
    checkpoint_step,
    last_checkpoint,
    load_checkpoint,
    remove_later_steps,
    remove_stale_temps,
    resume_step,
    save_checkpoint,
    step_files,
)
from dreamtext.config import (
    ITERS_PER_EPOCH,
    TrainConfig,
    apply_overrides,
    change_lines,
    changed_settings,
    config_to_dict,
    fill_from_presets,
    read_ran_on,
    read_resumes,
    read_run_config,
    resume_conflicts,
    resume_refusal,
    same_prompt,
    write_run_config,
)
from dreamtext.devices import (
    DIVERGED_AFTER,
    DIVERGENCE_WINDOW,
    cpu_threads_record,
    describe_device,
    fp16_loss_scaler,
    memory_that_ran_out,
    out_of_memory_is_a_user_error,
    resolve_device,
    software_versions,
    to_device,
)
from dreamtext.encoding import check_encoding
from dreamtext.errors import (
    ANOTHER_SEED,
    ENVIRONMENT_ERRNOS,
    OVERWRITE,
    UNREADABLE_JSON,
    DreamtextError,
    SavedRun,
    StartAgain,
    TrainedRun,
    check_a_file,
    free_memory_fix,
    precision_memory_fixes,
    shell_word,
)
from dreamtext.export import (
    MESH_OUTPUTS,
    REPLACED_OUTPUTS,
    VIDEO_OUTPUTS,
    available_memory,
    check_export_folders,
    check_ffmpeg,
    check_memory,
    export_field,
    finish_replacements,
    format_gigabytes,
    run_title,
)
from dreamtext.factory import OPTIMIZER_STATE_VALUES, build_parts, optimizer_step_temporaries
from dreamtext.field import (
    NeRFField,
    field_config_to_dict,
    grid_parameters,
    mlp_memory_at_least,
)
from dreamtext.guidance import ScoreDistillation
from dreamtext.inputs import no_checkpoint_error, write_elsewhere
from dreamtext.interrupts import (  # TrainingInterrupted is imported from here too
    StepStopped,
    TrainingInterrupted,
    chunks_not_stopped,
    more_work,
    raise_if_stop_requested,
    rename_for,
    sigterm_interrupts,
    stop_on_signal,
    stops_as,
    truncate_log,
)
from dreamtext.mesh import DivergedDensity
from dreamtext.models import model_revision
from dreamtext.processes import claim_workspace, lock_folder
from dreamtext.progress import bar_label, bar_options, say, tqdm
from dreamtext.prompts import check_run_lengths
from dreamtext.regularisers import DENSITY_POINTS, REGULARISERS, density_decay, scene_points
from dreamtext.renderer import VolumeRenderer, all_finite, renders_finite
from dreamtext.runfiles import (
    TRAINING_FOLDERS,
    check_run_folders,
    held_run_error,
    other_prompt_error,
    search_clip_revision,
)
from dreamtext.runstatus import (
    check_not_running,
    peak_gpu_mib,
    read_status,
    status_heartbeat,
    track_status,
    tracked_phase,
    update_status,
)

SHADINGS = ("albedo", "textureless", "lambertian")
# An export's files in a run's folder (files of the user's own beside them are not).
EXPORT_FILES = (
    *(f"mesh/{name}" for name in MESH_OUTPUTS),
    *(f"video/{name}" for name in VIDEO_OUTPUTS),
)
# What a run writes besides log.jsonl, config.json and status.json (all three rewritten): a new
# run in the workspace of an earlier one removes them first.
EARLIER_RUN_FILES = (
    "checkpoints/*.pt",
    "checkpoints/last.step.json",
    "previews/*.png",
    *EXPORT_FILES,
)


@dataclass
class Run:
    """The live objects of one run."""

    cfg: TrainConfig
    workspace: Path
    device: torch.device
    field: NeRFField
    renderer: VolumeRenderer
    guidance: ScoreDistillation
    optimizer: torch.optim.Optimizer
    cameras_rng: torch.Generator
    scaler: torch.amp.GradScaler
    step: int = 0
    # The step of the checkpoint a resume goes on from: the one restored, then each one saved
    # (:func:`save_run_checkpoint`). An interrupted status.json records it: a second Ctrl-C
    # stops before the checkpoint of ``step``.
    saved_step: int = 0
    # Why each of the last DIVERGENCE_WINDOW steps taught the field nothing: "render" (the field
    # rendered NaN or ±inf pixels), "guidance" (ε̂ was not finite, so the guidance gave no
    # gradient), "gradients" (its update was skipped for non-finite gradients, see
    # ``optimizer_step``) or None (it did); and how many steps of the run skipped their update.
    recent_skips: collections.deque = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=DIVERGENCE_WINDOW)
    )
    skipped_updates: int = 0
    # The first of the steps up to ``step`` whose renders were all NaN or infinite (``None``: the
    # last one's was finite): the field's weights overflowed in the update of the step before,
    # and every checkpoint from that step on holds them (:func:`check_diverged`).
    nan_renders_from: int | None = None
    # The occupancy grid's refresh after step ``step`` ran out of memory and is to be run on
    # resume (:func:`refresh_occupancy`).
    occupancy_pending: bool = False
    # Inside ``optimizer.step()`` (:func:`optimizer_step`): memory that runs out there leaves the
    # parameters and Adam's moments partly updated, a state no checkpoint may hold.
    updating: bool = False
    # That update is the optimiser's first (:func:`optimizer_step`): it makes the optimiser's
    # state, sized by the field's parameters, not by the render (out_of_memory_saves_a_checkpoint).
    making_state: bool = False
    # How the command that runs it goes on from a checkpoint, as the lines that stop it say:
    # "--resume" for `dreamtext text`; a batch or `dreamtext image` has no --resume (train's
    # ``resume_with``).
    resume_with: str = "--resume"
    # How those lines say to go on with a setting changed (a smaller --lr): ``resume_with``,
    # but in a batch the line's own command (train's ``resume_changed``).
    resume_changed: str = "--resume"
    # How those lines say to train it again from scratch (train's ``start_again``).
    start_again: StartAgain = dataclasses.field(default_factory=StartAgain)
    # A resumed run: the step it resumed at and the settings it changed then
    # (:func:`dreamtext.config.changed_settings`), recorded in config.json's ``resumes``.
    resumed: dict[str, Any] | None = None
    # The settings a resume with nothing left to train asked to change and does not use
    # (:func:`keep_trained_settings`), as ``"name old → new"``, said with "nothing to train".
    unused_changes: list[str] = dataclasses.field(default_factory=list)
    # Who this run is: drawn when it starts, kept in its checkpoints and through its resumes,
    # so that an export of an earlier run of the folder can tell it was replaced
    # (dreamtext.export.export_workspace).
    run_id: str = dataclasses.field(default_factory=lambda: secrets.token_hex(8))


def shading_for_step(step: int, cfg: TrainConfig, rng: torch.Generator) -> str:
    """Ch. 6.1.4: albedo only for the first ``albedo_epochs``; then albedo / textureless /
    lambertian with probabilities ``shading_probs`` (0.2 / 0.4 / 0.4)."""
    if step <= cfg.albedo_epochs * ITERS_PER_EPOCH:
        return "albedo"
    probs = torch.tensor(cfg.shading_probs, dtype=torch.float32)
    return SHADINGS[int(torch.multinomial(probs, 1, generator=rng))]


def light_positions(poses: Poses, jitter: float, rng: torch.Generator) -> torch.Tensor:
    """Lights ``[B, 3]`` sampled as Gaussian noise around each camera position (ch. 6.1.4), so the
    visible side is lit: ``L_b = eye_b + jitter · ξ_b``, ``ξ_b ~ N(0, I)``."""
    eye = poses.eye
    return eye + to_device(torch.randn(eye.shape, generator=rng), eye.device).to(eye.dtype) * jitter


def random_backgrounds(batch: int, rng: torch.Generator) -> torch.Tensor:
    """One random solid colour per image ``[B, 3]`` (``field.background: random``)."""
    return torch.rand(batch, 3, generator=rng)


def check_workspace(
    workspace: Path,
    prompt: str,
    resume: bool,
    overwrite: bool = False,
    own_config: Path | None = None,
) -> None:
    """Refuse to mix two prompts' runs in one folder, to resume a run that is not there, and to
    start over on a run of the same prompt that has a checkpoint unless ``overwrite``: typing the
    training command again must not wipe hours of training. ``own_config``: the ``--config`` file
    that is the workspace's own record (:func:`dreamtext.config.own_config_file`): a user typing
    the run again from it wants it reproduced, so the refusal names a new folder, not
    ``--overwrite``, which would delete the run."""
    # A resume goes on only where the run is: another folder has nothing to resume.
    fix = (
        write_elsewhere(workspace, "resume it")
        if resume
        else "pass --workspace a folder you can write"
    )
    check_writable(workspace, fix)
    check_run_folders(workspace, TRAINING_FOLDERS, fix)
    check_checkpoint_files(workspace)
    # A new run removes them (remove_earlier_run): a folder was a traceback, with the files
    # before it in the glob removed. A resume truncates log.jsonl and appends to it (a FIFO
    # held it for good) and removes the previews past its step and the final one.
    log_file = workspace / "log.jsonl"
    check_a_file(log_file, "a run's file")
    for pattern in ("previews/*.png",) if resume else EARLIER_RUN_FILES:
        for path in workspace.glob(pattern):
            check_a_file(path, "a run's file")
    check_not_running(workspace)
    # Read first: a config.json that is not a run's fails here, before anything is written.
    previous = (read_run_config(workspace, "delete it or pass --workspace") or {}).get("prompt")
    if resume:
        if not can_resume(workspace):
            raise no_checkpoint_error(workspace)
        return
    if previous is not None and not same_prompt(previous, prompt):
        raise other_prompt_error(workspace, previous, own_config)
    # Step files without last.pt are a run a resume goes on from too: a new run deleted them.
    if can_resume(workspace) and not overwrite:
        # The checkpoint's step, where --resume continues (its newest whole step file's where
        # last.pt is missing): status.json's can be later (a run killed without warning logged
        # steps after its last checkpoint).
        raise held_run_error(workspace, resume_step(workspace), own_config)


# Bytes every ray of a training render holds at once, at the least, in the first steps of a run
# (its occupancy grid starts with every cell occupied): its origin, direction and outputs, and
# its samples, which a step keeps for its backward pass, the deferred one included (the packed
# samples and the field's values at them, re-rendered chunk by chunk). Measured with peak RSS
# (benchmarks/RESULTS.md, 2026-12-03): each further ray of a batch cost 1.2-2.7 KB where the
# backward pass was deferred (192-768 images of 32 px) and 30-36 KB where it was not; 48 B (the
# ray alone) let `--batch-size 100000 --h 32` through on a 22 GB machine, whose system then
# killed it. Below every figure measured, so it refuses no run that fits as measured; a grid
# that skips more samples (later steps, a resume) needs less.
BYTES_PER_RAY_AT_LEAST = 1024


def render_memory_at_least(cfg: TrainConfig) -> int:
    """Bytes a training step of ``cfg`` needs at the very least: ``1024 · batch_size · h · w``
    (:data:`BYTES_PER_RAY_AT_LEAST`): 134 MB at 256 px, 34 GB at 4096 px, 105 GB for a batch of
    100,000 at 32 px, for a batch of 2 where not said."""
    return BYTES_PER_RAY_AT_LEAST * cfg.batch_size * cfg.h * cfg.w


def device_memory(device: torch.device) -> int | None:
    """Bytes a run on ``device`` can have at most: a GPU's total memory (what other processes
    hold may be freed before the run needs it), the host's available memory
    (:func:`~dreamtext.export.available_memory`) for the CPU; ``None`` where unknown."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return available_memory()


def memory_had(device: torch.device, available: int) -> str:
    """How the memory checks' lines say what ``device`` has: ``of GPU memory and the GPU has
    12.9 GB``, or ``of memory and 22.0 GB is available`` (the host's)."""
    if device.type == "cuda":
        return f"of GPU memory and the GPU has {format_gigabytes(available)}"
    return f"of memory and {format_gigabytes(available)} is available"


def check_render_memory(cfg: TrainConfig, device: torch.device) -> None:
    """Refuse, before anything is loaded or written, a render size whose rays and their samples
    cannot fit (:func:`render_memory_at_least`): such a run wrote a workspace and then ran out
    of memory at its first step, swapped for minutes, or (the host's memory) was killed by the
    system. A lower bound, so it refuses no run that fits as measured; sizes below it still meet
    the out-of-memory line."""
    need, available = render_memory_at_least(cfg), device_memory(device)
    if available is None or need <= available:
        return
    has = memory_had(device, available)
    # The batch multiplies the rays as the render's area does: a huge --batch-size was told to
    # lower --h alone. (No default is quoted: a preset's differs, builtin:shapes' 32 px and
    # batch 2 among them.)
    fix = "lower --h (the thesis's FitFusion renders 256 px)"
    if cfg.batch_size > 2:
        fix = "lower --batch-size or --h"
    raise DreamtextError(
        f"--h {cfg.h} --w {cfg.w} with batch {cfg.batch_size}: its rays and their samples "
        f"need at least {format_gigabytes(need)} {has}; {fix}"
    )


def graph_queries_at_least(cfg: TrainConfig) -> int:
    """Field queries a training step of ``cfg`` holds in a graph at once, at the least.

    The rays that surely meet the scene: a camera at distance ``r`` (``cameras.radius_range``'s
    far end, plus 3 × ``cameras.jitter``) looking at the origin sees the ball of radius
    ``bound`` inside the cube within ``θ = asin(bound / r)`` of its axis, a disc of radius
    ``tan θ`` on an image ``2 tan(fovy / 2)`` wide (the widest ``fovy``): ``π/4 · min(1, tan θ /
    tan(fovy / 2))²`` of its pixels. Each keeps ``num_steps + upsample_steps`` samples (the
    dense sampler), or one (the occupancy marcher: a ray that meets the scene takes one at least).
    With ``render.recompute_field`` the graph holds one piece of the backward pass's re-run at
    a time: ``chunk_points`` over the 7 queries a sample takes at most. A deferred backward
    (``render.backprop`` ``deferred``, or ``auto`` past ``grad_chunk_points`` queries) holds
    one chunk of the re-render at a time: ``grad_chunk_points`` over 7, at most
    ``chunk_size`` rays (one sample each, at the least)."""
    return min(graph_pieces(cfg).values())


def graph_pieces(cfg: TrainConfig) -> dict[str, int]:
    """The counts whose least is :func:`graph_queries_at_least`, by what sets each: ``samples``
    (:func:`samples_at_least`), and the pieces the graph may be held to, by their setting
    (``render.chunk_points``, ``render.grad_chunk_points``, ``render.chunk_size``)."""
    render = cfg.render
    pieces = {"samples": samples_at_least(cfg)}
    if render.recompute_field:
        pieces["render.chunk_points"] = max(render.chunk_points // 7, 1)
    if render.backprop != "direct":
        # builtin-shapes at 512 px with grad_chunk_points 2^18 peaked at 2.6 GB, and was refused
        # on a machine of 6 GB for its 13 M samples' 8 GB: only a chunk of them is in the graph.
        pieces["render.grad_chunk_points"] = max(render.grad_chunk_points // 7, 1)
        pieces["render.chunk_size"] = render.chunk_size
    return pieces


def samples_at_least(cfg: TrainConfig) -> int:
    """The samples a training render of ``cfg`` takes at the least, each one field query or
    more (:func:`graph_queries_at_least` says how they are counted)."""
    cams = cfg.cameras
    distance = cams.radius_range[1] + 3 * cams.jitter
    ratio = 1.0
    if distance > cfg.field.bound:
        cone = math.tan(math.asin(cfg.field.bound / distance))
        ratio = min(1.0, cone / math.tan(math.radians(cams.fovy_range[1]) / 2))
    rays = int(cfg.batch_size * cfg.h * cfg.w * math.pi / 4 * ratio**2)
    if cfg.render.sampler == "dense":
        rays *= cfg.render.num_steps + cfg.render.upsample_steps
    return rays


def check_field_memory(
    cfg: TrainConfig, device: torch.device, resume: bool = False, resumed: str | None = None
) -> None:
    """Refuse, before anything is loaded or written, a field whose MLPs and hash grid cannot fit
    beside the render's rays (:func:`~dreamtext.field.mlp_memory_at_least` on
    :func:`graph_queries_at_least`, the grid's :func:`~dreamtext.field.grid_parameters`, each
    parameter with its gradient and the optimiser's state, the table's with the update's
    temporaries too, plus :func:`render_memory_at_least`):
    `field.num_blocks: 100000` wrote a workspace and was killed by the system in its first
    step, and a table too large (`field.log2_hashmap_size: 24` with 16 levels × 8 features is
    5.1 GB with Adam) ran out of memory after the workspace was written, in its first step.
    With ``resume`` the line names no ``field.`` key to lower: a resumed run keeps its field.
    ``resumed``: a batch's lines whose runs resume (``"lines 1 and 3"``), all of its lines to
    train with ``resume``, else beside new ones: the line says what each can change."""
    # Autograd keeps, a query, every linear layer's input, LayerNorm's and SiLU's (3 values a
    # block) in float32 where the MLPs run eager (the CPU); on CUDA --fp16/--bf16 and a compiled
    # MLP may keep the linear layers' inputs alone, in 2 bytes.
    eager = device.type != "cuda"
    value_bytes = 2 if not eager and (cfg.guidance.fp16 or cfg.guidance.bf16) else 4
    pieces = graph_pieces(cfg)
    queries = min(pieces.values())
    # Every parameter is float32 (the MLPs run fp16/bf16 under autocast) with its gradient and
    # the optimiser's state.
    parameter_bytes = 4 * (2 + OPTIMIZER_STATE_VALUES[cfg.optimizer])
    mlp = mlp_memory_at_least(cfg.field, queries, value_bytes, eager, parameter_bytes)
    need, available = render_memory_at_least(cfg) + mlp, device_memory(device)
    if available is None:
        return
    grid = 0
    if need <= available:  # the grid's layout is a loop over the levels, the MLP's size not
        grid = grid_memory_at_least(cfg, device)
        if need + grid <= available:
            return
        if grid >= need:
            has = memory_had(device, available)
            raise grid_memory_error(cfg, grid, need + grid, has, resume, resumed)
    need += grid
    has = memory_had(device, available)
    beside = f", and the hash grid's {format_gigabytes(grid)}" if grid else ""
    field, render = cfg.field, cfg.render
    # Both multiply: the queries (`render.num_steps: 1e12`) and what the MLP keeps of each
    # (`field.num_blocks: 100000`); either alone was blamed on the MLP's size.
    # The batch multiplies the rays as the render's area does (check_render_memory).
    size = "--batch-size or --h" if cfg.batch_size > 2 else "--h"
    samples, fewer = "one sample a ray", size
    # A chunk is named only where the backward surely is deferred: auto defers past
    # grad_chunk_points queries, so a batch of 4 at 32 px (100 k samples) runs direct.
    deferred = render.backprop == "deferred" or (
        render.backprop == "auto" and pieces["samples"] > render.grad_chunk_points
    )
    if pieces.get("render.chunk_points") == queries:
        samples = f"render.chunk_points {render.chunk_points} over 7 queries a sample at a time"
        fewer = "render.chunk_points"
    elif deferred and pieces["render.grad_chunk_points"] == queries:
        samples = f"render.grad_chunk_points {render.grad_chunk_points} over 7 queries a sample "
        samples += "at a time"
        fewer = "render.grad_chunk_points"
    elif deferred and pieces["render.chunk_size"] == queries:
        samples = f"render.chunk_size {render.chunk_size} rays at a time"
        fewer = "render.chunk_size"
    elif render.sampler == "dense":
        samples = f"render.num_steps {render.num_steps} + render.upsample_steps "
        samples += f"{render.upsample_steps} samples a ray"
        fewer = f"render.num_steps or render.upsample_steps, or {size}"
    kept = "field.num_blocks and field.hidden_dim"
    fix = f"field.num_blocks or field.hidden_dim, {fewer}"
    if resumed is not None:  # a batch: those it resumes keep their MLP, the new lines need not
        batch = f"the batch resumes the runs of {resumed}, which keep their {kept}"
        fix = (
            f"{fewer} ({batch}), or resume those on a machine with more memory"
            if resume
            else f"{fewer}, or field.num_blocks or field.hidden_dim for the new lines ({batch})"
        )
    elif resume:
        fix = (
            f"{fewer} (a resumed run keeps its {kept}), or resume it on a machine with more memory"
        )
    raise DreamtextError(
        f"a training step's graph of at least {queries:,} field queries at once (--h {cfg.h} "
        f"--w {cfg.w}, batch {cfg.batch_size}, {samples}) through the field's MLP "
        f"(field.num_blocks {field.num_blocks} × field.hidden_dim {field.hidden_dim}) need at "
        f"least {format_gigabytes(need)} {has} (its weights and activations{beside}); lower {fix}"
    )  # no default quoted: builtin-shapes' field is not FieldConfig's


def grid_memory_at_least(cfg: TrainConfig, device: torch.device) -> int:
    """Bytes the hash table of ``cfg`` takes in a first step on ``device``, at the least: each
    value (:func:`~dreamtext.field.grid_parameters`) in float32 with its gradient, the
    optimiser's state (:data:`~dreamtext.factory.OPTIMIZER_STATE_VALUES`) and the temporaries
    its update makes meanwhile (:func:`~dreamtext.factory.optimizer_step_temporaries`): 20 B a
    value with Adam, 24 B with Adan."""
    values = 2 + OPTIMIZER_STATE_VALUES[cfg.optimizer]
    values += optimizer_step_temporaries(cfg.optimizer, device)
    return 4 * values * grid_parameters(cfg.field)


def grid_memory_error(
    cfg: TrainConfig,
    grid: int,
    need: int,
    has: str,
    resume: bool = False,
    resumed: str | None = None,
) -> DreamtextError:
    """The line of a hash table that cannot fit (``grid`` bytes, most of the ``need``): its
    size and the keys that set it, which a new run can lower and a resumed one (``resume``)
    cannot. ``has``: :func:`memory_had`'s words; ``resumed`` as for
    :func:`check_field_memory` (a batch's lines that resume)."""
    field = cfg.field
    keys = "field.log2_hashmap_size, field.num_levels or field.level_dim"
    fix = f"lower {keys}"
    if resumed is not None:  # a batch: a smaller field refuses its resumed lines, trains the rest
        kept = f"the batch resumes the runs of {resumed}, which keep their field"
        fix = (
            f"{kept}: resume those on a machine with more memory, or remove their folders "
            f"to train them anew with a smaller {keys}"
            if resume
            else f"lower {keys} for the new lines; {kept}: resume those on a machine with more "
            "memory, or remove their folders to train them anew too"
        )
    elif resume:  # --config with a smaller field was refused: the run's tensors have its shapes
        fix = (
            "a resumed run keeps its field: resume it on a machine with more memory, or start "
            f"a new run (--workspace NEW_FOLDER) with a smaller {keys}"
        )
    optimiser = {
        "adam": "its gradient, Adam's two moments and the update's temporaries",
        "adan": "its gradient and Adan's four state values",  # its update makes none
    }
    return DreamtextError(
        f"the field's hash grid (field.num_levels {field.num_levels} × field.level_dim "
        f"{field.level_dim} features, up to 2^{field.log2_hashmap_size} rows a level: "
        f"field.log2_hashmap_size) with {optimiser[cfg.optimizer]} needs "
        f"{format_gigabytes(grid)}; the run needs at least {format_gigabytes(need)} {has}; "
        f"{fix}"
    )  # no default quoted: builtin-shapes' field is not FieldConfig's


def build_run(
    cfg: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    own_config: Path | None = None,
    resume_with: str = "--resume",
    start_again: StartAgain = OVERWRITE,
    resume_changed: str | None = None,
) -> Run:
    """Load the prior, build field / renderer / optimiser, and restore a checkpoint when resuming.

    The prior is loaded before anything is written, so a bad model id leaves no workspace behind.
    ``overwrite`` lets a new run replace a run of the same prompt that has checkpoints;
    ``own_config`` as for :func:`check_workspace`; ``resume_with``, ``start_again`` and
    ``resume_changed`` as for :func:`train`.
    """
    workspace = Path(cfg.workspace)
    check_workspace(workspace, cfg.prompt, resume, overwrite, own_config)
    if cfg.export:  # not after hours of training
        check_memory(cfg.export_options, after_training=True)
        check_ffmpeg(cfg.export_options, after_training=True)
        check_export_folders(workspace, cfg.export_options)
    device = resolve_device(cfg.device)
    check_render_memory(cfg, device)
    check_field_memory(cfg, device, resume)
    check_encoding(cfg.field.encoding, device, cfg.field.level_dim)  # before minutes of loading
    check_run_lengths(cfg.guidance, cfg.prompt)  # by the tokenizer alone, before the load
    torch.manual_seed(cfg.seed)
    parts = build_parts(cfg, device)
    guidance = parts.guidance
    guidance.set_prompt(cfg.prompt, cfg.guidance.negative)
    guidance.seed(cfg.seed + 1)
    run = Run(
        cfg,
        workspace,
        device,
        parts.field,
        parts.renderer,
        guidance,
        parts.optimizer,
        torch.Generator().manual_seed(cfg.seed + 2),
        # The field's MLPs in fp16: per-sample gradients small enough to underflow unscaled.
        fp16_loss_scaler(parts.field.mlp_dtype, device),
    )
    run.resume_with = resume_with
    run.resume_changed = resume_with if resume_changed is None else resume_changed
    run.start_again = start_again
    if resume:
        with out_of_memory_is_a_user_error(lambda memory: restore_memory_line(run, memory)):
            restore_newest(run)
    return run


def restore_memory_line(run: Run, memory: str) -> str:
    """The line of a resume of ``run`` that ran out of ``memory`` (``"GPU memory"`` or
    ``"memory"``, the host's) restoring its checkpoint. A restore renders nothing but 8×8 rays
    (:func:`weights_render_finite`): it reads the whole file into host memory, copies the
    field's weights into place and makes the optimiser's state on the run's device, float32
    :data:`~dreamtext.factory.OPTIMIZER_STATE_VALUES` values a parameter, beside the prior
    loaded before it. So its fixes are room on the device, the prior in half precision
    (``--fp16``; the field and its state stay float32), the CPU, or a new run with a smaller
    hash table (:func:`table_fix`): the render's sizes and chunks, which the training line
    names, change none of it."""
    cfg = run.cfg
    values = sum(p.numel() for p in run.field.parameters())
    state = 4 * OPTIMIZER_STATE_VALUES[cfg.optimizer] * values
    if memory == "GPU memory" and run.device.type == "cuda":
        what = (
            f"({values:,} field parameters, whose {cfg.optimizer} state needs "
            f"{format_gigabytes(state)} on the GPU, beside the prior; the render's settings do "
            "not change it)"
        )
    else:  # the host holds the whole file as read (the weights and the state, CPU tensors) first
        what = (
            f"(the whole file is read into memory: {values:,} field parameters with their "
            f"{cfg.optimizer} state, {format_gigabytes(state + 4 * values)} at least, beside the "
            "prior; the render's settings do not change it)"
        )
    advice = loading_memory_advice(
        cfg, memory, f"resume with {run.resume_changed}", run.start_again
    )
    return f"out of {memory} restoring the checkpoint of {run.workspace} {what}; {advice}"


def loading_memory_advice(
    cfg: TrainConfig,
    memory: str,
    again: str,
    start_again: StartAgain,
    typed: Sequence[str] | None = None,
) -> str:
    """What a run of ``cfg`` that ran out of ``memory`` (``"GPU memory"`` or ``"memory"``, the
    host's) outside the render (loading the prior, building its field, restoring its checkpoint,
    the optimiser's first update) can do, ``again`` (``"resume with --resume"``, a batch line's
    own command) said where it goes: free the memory, or on the GPU load the prior in half
    precision (``--fp16``) or run on the CPU (:func:`~dreamtext.errors.precision_memory_fixes`,
    ``typed`` its precision flags where the command line is known); then a new run's smaller
    hash table (:func:`table_fix`). The render's sizes, samples and chunks, which the training
    steps' line names (:func:`out_of_memory_fixes`), change none of what those allocate."""
    half = cfg.guidance.fp16 or cfg.guidance.bf16
    fixes = ", ".join(filter(None, precision_memory_fixes(memory, half, typed)))
    free = free_memory_fix(memory)
    advice = f"{free} and {again}" + (f", or {again} and one of: {fixes}" if fixes else "")
    return advice + table_fix(cfg, memory, start_again)


def restore_newest(run: Run) -> None:
    """Continue ``run`` from ``checkpoints/last.pt``, or, when that file is not a whole
    checkpoint (:class:`~dreamtext.checkpoint.UnreadableCheckpoint`: truncated by a full disk or a
    copy cut short, damaged) or is missing (deleted by hand, a sync cut short), from the newest
    step file that restores whole, saying so in one line on stderr and in config.json's
    ``resumes`` (``fallback``). The unreadable ``last.pt`` is removed then: a checkpoint save
    keeps the ``last.pt`` it replaces as a step file. Without one, a :class:`DreamtextError`
    that names the file and the fix; and one where the checkpoint restored holds weights that
    overflowed (:func:`refuse_overflowed_weights`).

    Whole means :func:`restore` takes all of it (the field, the optimiser, the renderer, the random
    states and the step), not that it unpickles: a file can unpickle and still not restore."""
    last = last_checkpoint(run.workspace)
    try:
        # Only a file that is not there is missing: a failing file server (EIO, a stale NFS
        # handle) raises here, as when reading it, and is not fallen back from.
        last.stat()
    except FileNotFoundError:
        why, problem = "missing", "is missing"
    else:
        try:
            restore_file(run, last)
        except UnreadableCheckpoint as error:
            why, problem = error.why, f"is unreadable ({error.why})"
        else:
            refuse_overflowed_weights(run, last)
            return
    damaged = []
    for step, path in reversed(step_files(checkpoint_dir(run.workspace))):
        try:
            restore_file(run, path, step)
        except UnreadableCheckpoint:
            damaged.append(path.name)
            continue
        refuse_overflowed_weights(run, path, f"{last} {problem}, and ")
        reached = (read_status(run.workspace) or {}).get("step")
        lost = (
            f"steps {run.step + 1}-{reached} are lost and trained again"
            if isinstance(reached, int) and reached > run.step
            else "the steps after it are lost and trained again"
        )
        assert run.resumed is not None  # set by restore
        run.resumed["fallback"] = {
            "unreadable": str(last.relative_to(run.workspace)),
            "why": why,
            "from": str(path.relative_to(run.workspace)),
            **({"damaged": damaged} if damaged else {}),
        }
        skipped = f" ({', '.join(damaged)} unreadable too)" if damaged else ""
        removed = ""
        if why != "missing":
            # Of the branch the run leaves, as the later step files a resume removes: kept, the
            # next save would keep it as the step file of its step in place of a whole one.
            last.unlink(missing_ok=True)
            removed = "; the unreadable last.pt is removed"
        say(
            f"dreamtext: {last} {problem}; resuming from {path}, the "
            f"newest whole checkpoint{skipped}, at step {run.step}: {lost}{removed}"
        )
        return
    earlier = f" ({', '.join(damaged)} are unreadable too)" if damaged else ""
    raise DreamtextError(
        f"cannot resume: {last} {problem} and the run has no earlier "
        f"checkpoint that is whole{earlier}; train it again from scratch with "
        f"{run.start_again.command}"
    )


def refuse_overflowed_weights(run: Run, path: Path, before: str = "") -> None:
    """Refuse to resume ``run`` from the checkpoint at ``path``, just restored, where its weights
    overflowed (:func:`weights_render_finite`, the check of every save: saved by a dreamtext
    from before that check, or copied in): every step renders NaN and teaches the field nothing,
    and 50 of them stopped the run as diverged. The :class:`DreamtextError` names the newest
    step file whose weights pass (:func:`earlier_finite_checkpoint`), to copy over ``last.pt``
    and resume from with a smaller ``--lr``, or says to start again. ``before``: what the line
    says first (an unreadable ``last.pt`` fallen back from)."""
    if weights_render_finite(run):
        return
    step = run.step
    assert run.resumed is not None  # set by restore
    # The checkpoint's --lr, which overflowed it (a finished run's resume sets it back on cfg).
    lr = run.resumed["changed"].get("lr", [run.cfg.lr])[0]
    smaller = f"a smaller --lr (it trained at --lr {lr:g})"
    last = last_checkpoint(run.workspace)
    earlier = earlier_finite_checkpoint(run, step)
    if earlier is None:
        fix = (
            f"no earlier checkpoint of the run renders finite pixels: "
            f"{run.start_again.with_changes(smaller, ANOTHER_SEED)}"
        )
    else:
        other, other_step = earlier
        fix = (
            f"its newest checkpoint that renders finite pixels is {other} (step {other_step}): "
            f"copy it over {last.name} (cp --remove-destination {shell_word(other)} "
            f"{shell_word(last)}) and continue from it with {run.resume_changed} and {smaller}, "
            f"or {run.start_again.with_changes()}"
        )
    raise DreamtextError(
        f"cannot resume: {before}{path} (step {step}) holds weights that overflowed float32 "
        f"(the field renders NaN or infinite pixels); {fix}"
    )


def earlier_finite_checkpoint(run: Run, step: int) -> tuple[Path, int] | None:
    """The newest step file of ``run``'s workspace before ``step`` that restores whole and whose
    weights may be saved (:func:`weights_render_finite`), and its step; ``None`` where none
    does. Each one tried is restored into ``run``, which is left as the last one tried: for a
    resume that is refused."""
    for other_step, path in reversed(step_files(checkpoint_dir(run.workspace))):
        if other_step >= step:
            continue
        try:
            restore_file(run, path, other_step)
        except (UnreadableCheckpoint, DreamtextError):
            continue
        if weights_render_finite(run):
            return path, other_step
    return None


def restore_file(run: Run, path: Path, step: int | None = None) -> None:
    """:func:`restore` ``run`` from the checkpoint at ``path`` (of ``step``, for a step file).
    Anything short of a whole restore is an :class:`~dreamtext.checkpoint.UnreadableCheckpoint`,
    after which ``run`` is as it was where it counts (its ``iters``) and the next restore sets
    the rest; a resume a setting refuses (:func:`restore`'s ``DreamtextError``) goes on up."""
    # Loaded on the CPU: the random generators' states must stay there (``set_rng_state`` takes
    # only a CPU byte tensor), and ``load_state_dict`` copies the rest to the device.
    state = load_checkpoint(path, required=RUN_KEYS)
    iters = run.cfg.iters
    try:
        if step is not None and state["step"] != step:
            raise ValueError(f"it holds step {state['step']}")
        restore(run, state)
    except DreamtextError:  # a setting this resume cannot change: the same for every file
        raise
    except Exception as exc:  # a file whose parts do not fit this run's: not a bug of ours
        if memory_that_ran_out(exc) is not None:
            raise
        run.cfg.iters = iters
        why = f"it does not restore: {type(exc).__name__}"
        raise UnreadableCheckpoint(f"cannot restore {path} ({why})", path, why) from None


def checkpoint_state(run: Run) -> dict[str, Any]:
    return {
        "step": run.step,
        "field": run.field.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "renderer": run.renderer.state_dict(),
        "rng": {
            "torch": torch.get_rng_state(),
            # The renderer's sample jitter draws from the device's generator.
            "cuda": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
            "cameras": run.cameras_rng.get_state(),
            "guidance": run.guidance.get_state(),
        },
        "skipped_steps": run.guidance.skipped_steps,
        "skipped_updates": run.skipped_updates,
        # The divergence window (check_diverged): a resume that started it empty stopped 50
        # steps later than the run it continues would have.
        "recent_skips": list(run.recent_skips),
        "occupancy_pending": run.occupancy_pending,
        "loss_scaler": run.scaler.state_dict(),
        "config": config_to_dict(run.cfg),
        "field_config": field_config_to_dict(run.cfg.field),
        "encoding_backend": run.field.encoding_backend,
        "run_id": run.run_id,
    }


def restore(run: Run, state: dict[str, Any]) -> None:
    """Continue ``run`` from a checkpoint: its step, tensors, optimiser state and random states.

    The optimiser's learning rates are the run's own (``cfg.lr``, which ``--lr`` may have changed
    on ``--resume``), not the checkpoint's. A config that changes what a checkpoint fixes (the
    seed, the field's architecture, the occupancy grid) is a :class:`DreamtextError`.
    """
    changed: dict[str, list[Any]] = {}
    # A resume never shortens a run: asked for fewer steps than it has (a batch with a smaller
    # --iters exporting a run trained by hand), it keeps them, so that status.json and
    # config.json say the run's own iters, not the command's, beside its step.
    run.cfg.iters = max(run.cfg.iters, int(state["step"]))
    if isinstance(state.get("config"), dict):
        # An older dreamtext's checkpoint lacks the settings added since: they were its
        # presets', as the resumed config takes them (fill_from_presets), not the defaults.
        saved, _ = fill_from_presets(state["config"])
        conflicts = resume_conflicts(saved, run.cfg)
        if conflicts:
            raise DreamtextError(resume_refusal(conflicts))
        changed = changed_settings(saved, run.cfg)
    run.step = int(state["step"])
    run.run_id = str(state.get("run_id", ""))  # "": a run from before runs had one
    run.field.load_state_dict(state["field"])
    rates = [group["lr"] for group in run.optimizer.param_groups]
    # How the optimiser steps is this version's (build_optimizer), not the checkpoint's: one
    # saved before Adam was built with foreach=True would step one parameter at a time.
    foreach = [group.get("foreach") for group in run.optimizer.param_groups]
    run.optimizer.load_state_dict(state["optimizer"])
    trained_rates = [group["lr"] for group in run.optimizer.param_groups]
    for group, lr, step_kind in zip(run.optimizer.param_groups, rates, foreach, strict=True):
        group["lr"] = lr
        if "foreach" in group:
            group["foreach"] = step_kind
    run.renderer.load_state_dict(state["renderer"])
    torch.set_rng_state(state["rng"]["torch"])
    restore_cuda_rng(state["rng"].get("cuda"), run.device)
    run.cameras_rng.set_state(state["rng"]["cameras"])
    run.guidance.set_state(state["rng"]["guidance"])
    run.guidance.skipped_steps = int(state.get("skipped_steps", 0))
    run.skipped_updates = int(state.get("skipped_updates", 0))
    run.recent_skips = collections.deque(
        state.get("recent_skips", []), maxlen=DIVERGENCE_WINDOW
    )  # empty for a checkpoint from before it was kept
    if run.scaler.is_enabled() and state.get("loss_scaler"):
        run.scaler.load_state_dict(state["loss_scaler"])
    if state.get("occupancy_pending"):  # the refresh that ran out of memory, now, as it was due
        run.renderer.update_occupancy(run.field, run.step)
    # Nothing left to train: a setting no step will use is not the run's (config.json, the
    # checkpoint saved at the end and `resumes` said every step ran at --lr 0.005, and a run
    # from that config.json was not this one). Set back once the file has restored whole: a
    # file that does not leaves the command's settings for the next one (restore_file).
    if run.step >= run.cfg.iters and changed:
        kept = keep_trained_settings(run.cfg, changed)
        run.unused_changes = change_lines({k: v for k, v in changed.items() if k not in kept})
        changed = kept
        for group, lr in zip(run.optimizer.param_groups, trained_rates, strict=True):
            group["lr"] = lr
    run.resumed = {"step": run.step, "changed": changed}


# What a resume with nothing left to train still uses (its end: the final preview and the
# export), or which says where and how it runs (the field's encoding backend is built from
# it): taken from the command. The rest of a finished run's settings stay those it trained
# with. A name here covers its section's settings (export_options.resolution).
AFTER_TRAINING = ("iters", "export", "export_options", "device", "workspace", "field.encoding")


def keep_trained_settings(cfg: TrainConfig, changed: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Set back on ``cfg`` the settings of ``changed`` (:func:`changed_settings`: ``{name: [old,
    new]}``) that a resume with nothing left to train does not use, and return the changes it
    keeps (:data:`AFTER_TRAINING`)."""
    kept: dict[str, list[Any]] = {}
    trained: dict[str, Any] = {}
    for name, (old, new) in changed.items():
        if name in AFTER_TRAINING or name.split(".")[0] in AFTER_TRAINING:
            kept[name] = [old, new]
            continue
        *sections, field = name.split(".")
        layer = trained
        for section in sections:
            layer = layer.setdefault(section, {})
        layer[field] = old
    apply_overrides(cfg, trained, "the run's checkpoint")
    return kept


def restore_cuda_rng(saved: torch.Tensor | list[torch.Tensor] | None, device: torch.device) -> None:
    """Give the run's GPU the generator state it had when the checkpoint was written.

    ``saved`` is that GPU's state, ``None`` for a run on the CPU, or (checkpoints written before
    this) one state per GPU then visible: the run's own index is taken from it when present. A
    resume on another machine, or with another ``CUDA_VISIBLE_DEVICES``, may see fewer GPUs.
    """
    if device.type != "cuda" or saved is None:
        return
    if isinstance(saved, list | tuple):
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= len(saved):
            return
        saved = saved[index]
    torch.cuda.set_rng_state(saved, device)


def random_states(run: Run) -> dict[str, Any]:
    """What a step draws from and counts: the random generators' states and the guidance's count
    of skipped steps, to put back when the step is abandoned (:func:`train_step`)."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
        "cameras": run.cameras_rng.get_state(),
        "guidance": run.guidance.get_state(),
        "skipped_steps": run.guidance.skip_state(),  # not read from the GPU
    }


def put_back(run: Run, before: dict[str, Any]) -> None:
    """Return ``run`` to :func:`random_states` ``before`` and drop the gradients of the step
    abandoned since."""
    run.optimizer.zero_grad(set_to_none=True)
    torch.set_rng_state(before["torch"])
    restore_cuda_rng(before["cuda"], run.device)
    run.cameras_rng.set_state(before["cameras"])
    run.guidance.set_state(before["guidance"])
    run.guidance.set_skip_state(before["skipped_steps"])


def train_step(run: Run) -> dict[str, Any]:
    """One SDS step on a batch of random cameras; returns the numbers worth logging. The
    occupancy grid's refresh due after it is the caller's (:func:`refresh_occupancy`; the
    trainer's loop runs it once the step's log line is written).

    A stop requested mid-step (:class:`~dreamtext.interrupts.StepStopped`, raised between the
    renderer's chunks) or running out of memory (GPU or host, :func:`memory_that_ran_out`) in
    the render, the guidance or the backward pass abandons the step before its update: its
    gradients are dropped and the random states and skip count put back, so that the run is
    exactly at its last whole step, and the checkpoint saved then (:func:`_train`,
    :func:`out_of_memory_saves_a_checkpoint`) resumes drawing the same cameras, sample jitter
    and noise as a run that never failed. Memory that runs out inside the update leaves a state
    between two steps, which no checkpoint takes (``Run.updating``); in the occupancy grid's
    refresh, after the update, it is :func:`refresh_occupancy`'s to handle."""
    before = random_states(run)
    try:
        return _train_step(run)
    except StepStopped:
        put_back(run, before)
        raise
    except (MemoryError, RuntimeError) as error:  # torch.OutOfMemoryError is a RuntimeError
        if memory_that_ran_out(error) is not None:
            put_back(run, before)
        raise


def refresh_occupancy(run: Run) -> None:
    """The occupancy grid's refresh due after step ``run.step`` (every ``grid_update_every``).

    It comes after the step's update, so a refresh that runs out of memory cannot abandon the
    step: the random states are put back to before the refresh (which draws its cell jitter)
    and the refresh is left pending (``run.occupancy_pending``, kept in the checkpoint), for
    :func:`restore` to run first, as the uninterrupted run did. The grid is written only once
    its densities are all computed, so it is still the one from before."""
    before = random_states(run)
    try:
        run.renderer.update_occupancy(run.field, run.step)
    except (MemoryError, RuntimeError) as error:
        if memory_that_ran_out(error) is not None:
            put_back(run, before)
            run.occupancy_pending = True
        raise


def _train_step(run: Run) -> dict[str, Any]:
    cfg, rng = run.cfg, run.cameras_rng
    step = run.step + 1
    poses = sample_poses(cfg.batch_size, cfg.cameras, rng)
    labels = [  # read on the CPU, where the poses are drawn: no wait for the GPU
        view_of(float(p), float(a), cfg.guidance.views).label
        for p, a in zip(poses.polar.tolist(), poses.azimuth.tolist(), strict=True)
    ]
    # Drawn on the host, copied up without waiting for the GPU (to_device).
    poses = poses.to(run.device)
    shading = shading_for_step(step, cfg, rng)
    lights = light_positions(poses, cfg.light_jitter, rng)
    background = None
    if cfg.field.background == "random":
        background = to_device(random_backgrounds(cfg.batch_size, rng), run.device)

    render = run.renderer.render_train(
        run.field,
        poses,
        cfg.h,
        cfg.w,
        shading=shading,
        light_positions=lights,
        ambient_ratio=cfg.ambient_ratio,
        background=background,
        perturb=True,
    )
    run.optimizer.zero_grad(set_to_none=True)
    images = render.images()
    # Read with the step's other numbers: a NaN render makes ε̂ NaN too, and the line that stops
    # a diverged run is to blame the field (its --lr), not the guidance.
    render_finite = torch.isfinite(images.detach()).all()
    loss_sds, info = run.guidance.sds_loss(images, labels, step / cfg.iters)
    scale = loss_scale(run)
    loss = render.backward(loss_sds, regulariser_weights(cfg), scale)
    losses = {"loss": loss, "loss_sds": loss_sds}
    if run.scaler.is_enabled():  # the scale the step ran with, logged
        losses["loss_scale"] = scale
    losses |= {f"loss_{name}": render.outputs[f"loss_{name}"] for name in REGULARISERS}
    if cfg.lambda_density > 0:
        points = scene_points(DENSITY_POINTS, cfg.field.bound, run.device)
        loss_density = density_decay(run.field, points)
        run.scaler.scale(cfg.lambda_density * loss_density).backward()
        losses["loss"] = loss + cfg.lambda_density * loss_density.detach()
        losses["loss_density"] = loss_density
    # The step's one host read: whether its gradients are finite (the update depends on it) and,
    # in the same copy, every number its log line and progress bar show.
    read = read_step_values(
        run, {**losses, "skipped": info.pop("skipped"), "render_finite": render_finite}
    )
    updated = optimizer_step(run, read.pop("gradients_finite") == 1.0)
    # A step whose ε̂ was not finite has a zero SDS loss: even where the regularisers still
    # update the field, the prior taught it nothing, and a run of such steps only looks trained.
    # A finite ε̂ whose SDS loss ½ Σ w² (ε̂ − ε)² / B overflowed (--guidance 1e20 and more) makes
    # the gradients through the VAE NaN: the line blamed --lr, not the guidance.
    unguided = read["skipped"] == 1.0 or read["loss_sds"] == math.inf
    if read.pop("render_finite") != 1.0:
        cause = "render"
    else:
        cause = "guidance" if unguided else None if updated else "gradients"
    run.recent_skips.append(cause)
    if cause != "render":
        run.nan_renders_from = None
    elif run.nan_renders_from is None:
        run.nan_renders_from = step
    run.skipped_updates += not updated
    run.step = step
    skipped, scale = read.pop("skipped"), read.pop("loss_scale", None)
    return {
        "step": step,
        **read,
        "shading": shading,
        "view": labels[0],
        "backprop": "deferred" if render.deferred else "direct",
        "samples_per_ray": render.num_samples / max(render.outputs["opacity"].numel(), 1),
        **({} if updated else {"update_skipped": True}),
        **({} if scale is None else {"loss_scale": scale}),
        **{k: float(v) for k, v in info.items()},
        "skipped": skipped,
    }


def loss_scale(run: Run) -> float | torch.Tensor:
    """The fp16 loss scale ``s`` as a 0-dim tensor on the run's device (``GradScaler.get_scale``
    would read it to the host); 1.0 without fp16."""
    if not run.scaler.is_enabled():
        return 1.0
    return run.scaler.scale(torch.ones((), device=run.device))  # 1 · s = s exactly


def read_step_values(run: Run, values: dict[str, torch.Tensor]) -> dict[str, float]:
    """``values`` (0-dim tensors; in fp16 the step's ``loss_scale`` among them) and whether every
    gradient is finite (``gradients_finite``, 1.0 or 0.0), read to the host in one copy: one sync
    on CUDA. fp16's gradients are unscaled first (``GradScaler.unscale_``), so that the check
    sees what the optimiser would. float64 holds every float32 exactly, so each value is what
    ``.item()`` gives."""
    if run.scaler.is_enabled():
        run.scaler.unscale_(run.optimizer)
    values = {**values, "gradients_finite": gradients_finite(run.optimizer, run.device)}
    stacked = torch.stack([value.detach().reshape(()).double() for value in values.values()])
    return dict(zip(values, stacked.tolist(), strict=True))


def gradients_finite(optimizer: torch.optim.Optimizer, device: torch.device) -> torch.Tensor:
    """Whether every parameter's gradient is free of NaN and ±inf: a 0-dim bool tensor on
    ``device``, not read (:func:`read_step_values` reads it with the step's other numbers)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
    return all_finite([g for g in grads if g is not None], device)


def weights_render_finite(run: Run) -> bool:
    """Whether the field's weights may be saved: every parameter free of NaN and ±inf, and a
    render of them (:func:`~dreamtext.renderer.renders_finite`: 8×8 rays of one preview camera,
    no jitter) free of NaN and ±inf pixels.

    Weights that overflowed need not be infinite: after ``--resume --lr 1e8`` of the built-in
    prior they were finite (|θ| up to 1e9) while the MLP's activations overflowed float32 and
    every pixel was NaN. A render alone misses a NaN table entry its few rays do not reach.
    One host read, at a save; the random states are as they were after it, so that a run
    stopped and resumed draws what the uninterrupted one does; a stop (whose own save this
    checks) does not cut its chunks short."""
    cfg = run.cfg
    fovy = sum(cfg.cameras.fovy_range) / 2
    radius = sum(cfg.cameras.radius_range) / 2
    devices = [run.device] if run.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), chunks_not_stopped():
        return renders_finite(run.field, run.renderer, radius, fovy, run.device)


def overflowed_step(run: Run) -> int | None:
    """The step whose update overflowed the weights ``run`` holds (they render NaN or are not
    finite), which no checkpoint may hold; ``None`` where they may be saved.

    The step's renders tell of the weights of the step before (``nan_renders_from``); where they
    were finite, :func:`weights_render_finite` checks the weights of this step, which the
    renders have yet to show: those of a ``checkpoint_every`` step whose update overflowed were
    saved over the checkpoint of finite weights and pruned it."""
    if run.nan_renders_from is not None:
        return run.nan_renders_from - 1
    return None if weights_render_finite(run) else run.step


def kept_checkpoint(run: Run, overflowed: int, why: bool = True) -> str:
    """What a run whose weights overflowed in step ``overflowed`` has on disk instead of them,
    and what to do, as the end of the line that does not save them: the checkpoint from before
    to continue from with a smaller ``--lr``, or, where there is none (or the one there holds
    overflowed weights too: a resume of an older dreamtext's checkpoint), start again. ``why``:
    say why they are not saved (a line that has said so already does not)."""
    cause = (
        f" (the field renders NaN or infinite pixels: its weights overflowed float32 in step "
        f"{overflowed})"
        if why
        else ""
    )
    smaller = f"a smaller --lr (this run's is {run.cfg.lr:g})"
    again = run.start_again
    if run.saved_step == 0:
        return (
            f"nothing saved{cause}, as it has no checkpoint from before: "
            f"{again.with_changes(smaller, ANOTHER_SEED, held=False)}"
        )
    last = last_checkpoint(run.workspace)
    if run.saved_step >= overflowed:
        return (
            f"not saved{cause}, and {last} (step {run.saved_step}) holds overflowed weights too: "
            f"{again.with_changes(smaller, ANOTHER_SEED)}"
        )
    # Starting again where a checkpoint is needs --overwrite: the same command with another
    # --seed alone is refused ("already holds a run of this prompt"), as a resume of another.
    other_seed = again.with_changes(ANOTHER_SEED)
    return (
        f"not saved{cause}: {last} stays the checkpoint of step {run.saved_step}, from before; "
        f"continue from it with {run.resume_changed} and {smaller}"
        + (f", or {other_seed}" if other_seed else "")
    )


def interruption(run: Run, save: Callable[[Run], Path]) -> TrainingInterrupted:
    """The :class:`TrainingInterrupted` of a stop after step ``run.step``: with the checkpoint
    ``save(run)`` wrote, or, where the weights overflowed (:func:`overflowed_step`), with what
    is on disk instead and what to do. After the last step it says the export has not begun
    (the run's resume trains nothing and exports)."""
    overflowed = None if run.saved_step == run.step else overflowed_step(run)
    if overflowed is None:
        return TrainingInterrupted(run.step, save(run), before_export=export_due(run))
    return TrainingInterrupted(run.step, None, unsaved=kept_checkpoint(run, overflowed))


def export_due(run: Run) -> bool:
    """Whether ``run`` has trained to its end and exports next (``cfg.export``)."""
    return run.cfg.export and run.step >= run.cfg.iters


def optimizer_step(run: Run, finite: bool) -> bool:
    """Apply the step's gradients unless one of them is not finite (``finite``, read by
    :func:`read_step_values`); return whether it did.

    One NaN gradient would make Adam's moments, and then every parameter, NaN for good: the
    field would render nothing from then on while the run went on. In fp16 the gradients are
    already unscaled, and the scaler is told of the step (``update``: its scale halves after a
    skipped step, and grows after ``growth_interval`` good ones), as ``GradScaler.step`` would
    do, without its second read of the same flag. The step still counts, so the run's length is
    unchanged.
    """
    if finite:
        run.updating = True  # left set if the update fails (out_of_memory_saves_a_checkpoint)
        # No state yet: a new run's first update, or a resume of a checkpoint saved before it.
        run.making_state = not run.optimizer.state
        run.optimizer.step()
        run.updating = False
    if run.scaler.is_enabled():
        run.scaler.update()
    return finite


def check_diverged(run: Run) -> None:
    """Stop a run that learned nothing in ``DIVERGED_AFTER`` of its last ``DIVERGENCE_WINDOW``
    steps (their update skipped, or their ε̂ not finite): save a checkpoint and say so in one
    line, naming the fix for the cause most of them had, instead of going on for hours with a
    field that renders NaN, or finishing "trained" with the field it started from."""
    causes = [cause for cause in run.recent_skips if cause]
    if len(causes) < DIVERGED_AFTER:
        return
    window = f"of the {len(run.recent_skips)} steps up to step {run.step}"
    bad_eps, bad_grads = causes.count("guidance"), causes.count("gradients")
    bad_renders = causes.count("render")
    # Its checkpoint is for a resume with a fix (a smaller --lr or --guidance), which a window
    # kept full would stop again at its first step.
    run.recent_skips.clear()
    others = bad_eps + bad_grads
    overflowed = overflowed_step(run)
    if overflowed is not None:
        # The weights that overflowed are not saved: as last.pt they replaced the checkpoint of
        # finite weights a resume with a smaller --lr goes on from (and a batch's
        # keep_checkpoints: 1 kept no other), and a resume from them diverged again.
        more = f", and ε̂ or the gradients in {others} more" if others else ""
        raise DreamtextError(
            f"the training diverged: the field rendered NaN or infinite pixels in {bad_renders} "
            f"{window}{more} (its weights overflowed float32 in step {overflowed}); "
            f"{kept_checkpoint(run, overflowed, why=False)}"
        )
    path = save_run_checkpoint(run)
    # Each cause with its own count: a line that put all 50 steps on ε̂, where 10 of them had
    # finite ε̂ and NaN gradients, misstated both.
    if bad_renders > max(bad_eps, bad_grads):
        # A field that renders NaN (its MLP overflowed float32) made ε̂ NaN as well: the line
        # blamed --guidance. A resume goes on from the same overflowing weights.
        more = f", and ε̂ or the gradients in {others} more" if others else ""
        smaller = f"a smaller --lr (this run's is {run.cfg.lr:g})"
        raise DreamtextError(
            f"the training diverged: the field rendered NaN or infinite pixels in {bad_renders} "
            f"{window}{more} (its weights overflowed float32); saved {path}, but a resume goes "
            f"on from those weights: {run.start_again.with_changes(smaller, ANOTHER_SEED)}"
        )
    if bad_eps > bad_grads:
        guidance = run.cfg.guidance
        # A resume without --fp16 stays in the fp16 its config.json records: --fp32 turns it off.
        precision = " or --fp32 (without --fp16)" if guidance.fp16 else ""
        more = f", and the gradients in {bad_grads} more" if bad_grads else ""
        raise DreamtextError(
            f"the training diverged: the diffusion model's guided noise prediction, or its SDS "
            f"loss, was NaN or infinite in {bad_eps} {window}{more}, so they taught the field "
            f"nothing; saved "
            f"{path}; continue with {run.resume_changed} and a smaller --guidance (this run's is "
            f"{guidance.guidance_scale:g}){precision}"
        )
    more = f", and the guided noise prediction in {bad_eps} more" if bad_eps else ""
    other_seed = run.start_again.with_changes(ANOTHER_SEED)
    raise DreamtextError(
        f"the training diverged: the gradients were NaN or infinite in {bad_grads} {window}"
        f"{more}, which left the field unchanged; saved {path}; continue with "
        f"{run.resume_changed} and a smaller --lr (this run's is {run.cfg.lr:g})"
        + (f", or {other_seed}" if other_seed else "")
    )


def regulariser_weights(cfg: TrainConfig) -> dict[str, float]:
    """``{name: lambda_<name>}`` for every regulariser."""
    return {name: getattr(cfg, f"lambda_{name}") for name in REGULARISERS}


PREVIEW_SHADINGS = ("albedo", "textureless")
"""The rows of a preview, top to bottom."""


def preview_renderer(run: Run) -> VolumeRenderer:
    """The renderer previews use (the export's turntable refreshes the same way): the run's, or
    for a run not yet at its first occupancy-grid refresh a copy with the grid refreshed once
    (:meth:`~dreamtext.renderer.VolumeRenderer.with_grid_refreshed`)."""
    return run.renderer.with_grid_refreshed(run.field, run.step)


@torch.no_grad()
def save_preview(run: Run, path: Path, completes_work: bool = False) -> None:
    """A strip of ``preview_views`` cameras around the object: albedo on top, geometry
    (textureless shading, lit from the camera) below.

    Each camera is sampled and its field queried once for both rows
    (:meth:`~dreamtext.renderer.VolumeRenderer.render_shadings`), one camera at a time; the
    final one (``final.png``, minutes on a CPU for a fuzzy field, after the training bar has
    closed) shows a bar of them. ``completes_work``: the preview is the command's last file,
    whose rename into place marks its work complete
    (:func:`~dreamtext.interrupts.rename_completing_work`)."""
    cfg = run.cfg
    fovy = sum(cfg.cameras.fovy_range) / 2
    radius = sum(cfg.cameras.radius_range) / 2
    poses = orbit_poses(cfg.preview_views, polar=70.0, radius=radius, fovy=fovy).to(run.device)
    renderer = preview_renderer(run)
    columns = []
    bar = tqdm(
        total=len(poses),
        desc=f"preview {path.name}",
        unit="view",
        leave=False,
        disable=path.name != "final.png",
        **bar_options(),
    )
    with bar:
        for view in range(len(poses)):
            out = renderer.render_shadings(
                run.field, poses[view : view + 1], cfg.h, cfg.w, PREVIEW_SHADINGS, perturb=False
            )
            columns.append(
                torch.cat([out[shading]["rgb"][0].clamp(0, 1) for shading in PREVIEW_SHADINGS])
            )
            bar.update(1)
    pixels = (torch.cat(columns, dim=1).cpu().numpy() * 255).round().astype(np.uint8)
    atomic_write_bytes(
        path,
        lambda f: Image.fromarray(pixels).save(f, format="PNG"),
        replace=rename_for(completes_work),
    )
    # A preview's temp file that a kill left (hidden, as large as a strip) stayed for good;
    # only this run's trainer writes previews/.
    remove_stale_temps(path.parent, r"step_\d+\.png|final\.png")


def preview_cut_short(run: Run) -> Path | None:
    """The preview of ``run``'s step that is due (a multiple of ``preview_every``) and missing:
    a stop in it, after the step's checkpoint was due, left it unwritten (the step is whole and
    saved; its preview is not), and the run resumed from that step renders it, so that its
    previews are those of a run never stopped. ``None`` where there is none to render."""
    every = run.cfg.preview_every
    if run.step == 0 or every <= 0 or run.step % every:
        return None
    path = run.workspace / "previews" / f"step_{run.step:06d}.png"
    return None if path.exists() else path


def save_final_preview(run: Run, previewed: int | None, completes_work: bool = False) -> None:
    """``previews/final.png``, the strip of the run's last step. Where the loop saved that
    step's preview already (``previewed``: the step of its last one; every preset's ``iters``
    is a multiple of its ``preview_every``), final.png is a copy of it: rendered again, the same
    field from the same cameras gave the same bytes (a 10,000-step run of the built-in prior)
    at the cost of a whole render, minutes on a CPU for a fuzzy field. ``completes_work``: as
    :func:`save_preview`'s."""
    final = run.workspace / "previews" / "final.png"
    strip = None
    if previewed == run.step:
        with contextlib.suppress(FileNotFoundError):  # removed by hand since: render it
            strip = (run.workspace / "previews" / f"step_{run.step:06d}.png").read_bytes()
    if strip is None:
        save_preview(run, final, completes_work=completes_work)
        return
    atomic_write_bytes(
        final,
        lambda f: f.write(strip),
        replace=rename_for(completes_work),
    )


def ran_on(run: Run) -> dict[str, Any]:
    """What this process trains ``run`` with, where the config says only ``auto`` or nothing:
    the device (and what it is), the guidance's and the field MLPs' dtypes, whether the field's
    MLPs run compiled (``render.compile_field`` asks; CUDA only) and which of the guidance's
    parts do (``--compile``, ``guidance.compile_vae``: CUDA only), the host, the hub commit of the
    model (``None`` for a folder or the built-in prior), for an image→3D run the hub commit of
    the CLIP whose scores chose its sentence (``clip_revision``, as its ``sentence.json``
    records it: :func:`dreamtext.runfiles.search_clip_revision`) and the software versions."""
    return {
        "device": str(run.device),
        "device_name": describe_device(run.device),
        "guidance_dtype": str(run.guidance.dtype).removeprefix("torch."),
        # The MLPs run in their parameters' float32 unless autocast (--fp16/--bf16 on CUDA).
        "field_mlp_dtype": str(run.field.mlp_dtype or torch.float32).removeprefix("torch."),
        "field_compiled": bool(getattr(run.field, "compiled", False)),
        # Stable Diffusion's compiled parts (the built-in prior has none to compile).
        "guidance_compiled": list(getattr(run.guidance, "compiled", [])),
        **cpu_threads_record(),
        "host": socket.gethostname(),
        "model_revision": model_revision(run.cfg.guidance.model),
        **search_clip_revision(run.workspace),
        "versions": software_versions(),
    }


def write_config(run: Run) -> None:
    """``config.json``: the resolved config, the hash-grid backend that runs it, what this
    attempt runs on (:func:`ran_on`) and ``resumes``: one ``{"step", "changed", "ran_on_before"}``
    for each time the run was resumed, with the settings that differed from then on and what the
    attempt that trained up to that step ran on (its ``ran_on``, which this attempt's replaces;
    left out for a run from before it was recorded). A new run has none. An image run's sections
    of its earlier stages are kept (:func:`dreamtext.config.write_run_config`)."""
    resumes: list[dict[str, Any]] = []
    if run.resumed is not None:
        resume = dict(run.resumed)
        before = read_ran_on(run.workspace)
        # The resumes at or past this one's step are of attempts whose steps are lost (killed
        # before a checkpoint, or left by a fallback): their changes trained nothing that is
        # kept, and the first of them says what trained up to here (its ran_on_before).
        earlier = read_resumes(run.workspace)
        kept = [r for r in earlier if not _at_or_past(r.get("step"), run.step)]
        lost = [r for r in earlier if _at_or_past(r.get("step"), run.step)]
        if lost and isinstance(lost[0].get("ran_on_before"), dict):
            before = lost[0]["ran_on_before"]
        if before is not None:
            resume["ran_on_before"] = before
        resumes = [*kept, resume]
    extra = {
        "encoding_backend": run.field.encoding_backend,
        "ran_on": ran_on(run),
        "resumes": resumes,
    }
    write_run_config(run.workspace, run.cfg, extra)


def _at_or_past(step: Any, resumed_at: int) -> bool:
    """Whether a ``resumes`` entry's ``step`` is ``resumed_at`` or later."""
    return isinstance(step, int) and not isinstance(step, bool) and step >= resumed_at


def remove_earlier_run(workspace: Path) -> None:
    """Remove what a run of this workspace wrote besides ``config.json`` and ``status.json``
    (both rewritten): its log, checkpoints, previews, mesh and turntable.

    An export of it that a kill cut short is finished first: its staged folders
    (``.export-ready-*``, ``.export-old-*``) would else be swapped in by the new run's first
    export, and one with ``--no-video`` kept the old run's turntable beside the new mesh. A
    user's own files in them land in mesh/ and video/, where they are kept.

    All under the folder's lock, which an export holds while it checks that the run it read is
    still there and swaps its files in (:func:`dreamtext.export.write_all_atomically`): such an
    export lands before this, which removes its files, or after, and finds the run gone."""
    if not workspace.is_dir():
        return
    with lock_folder(workspace):
        finish_replacements(workspace, REPLACED_OUTPUTS)
        (workspace / "log.jsonl").unlink(missing_ok=True)
        for pattern in EARLIER_RUN_FILES:
            for old in workspace.glob(pattern):
                old.unlink()


def remove_later_files(workspace: Path, step: int) -> None:
    """Remove the step files (checkpoints and previews) past ``step``, which a resume from
    ``step`` goes on from: a run killed after its last checkpoint, or one resumed from an
    earlier checkpoint (a step file copied over ``last.pt``, or the newest whole one when
    ``last.pt`` is unreadable), left them of steps it trains again, and they would pass for the
    newest (the checkpoint to fall back to; the viewer's newest preview). As ``log.jsonl`` is
    cut back to ``step`` (:func:`~dreamtext.interrupts.truncate_log`)."""
    removed = remove_later_steps(workspace, step)
    for preview_step, preview in step_files(workspace / "previews", ".png"):
        if preview_step > step:
            preview.unlink(missing_ok=True)
    if removed:
        names = ", ".join(path.name for path in removed)
        say(
            f"dreamtext: removed {names} of {workspace}/checkpoints: past step {step}, which "
            "the run goes on from"
        )
    exported = remove_later_export(workspace, step)
    if exported is not None:
        say(
            f"dreamtext: removed the export of step {exported} (mesh/, video/) of {workspace}: "
            f"past step {step}, which the run goes on from; dreamtext export makes it again"
        )


def remove_later_export(workspace: Path, step: int) -> int | None:
    """Remove the export's files in ``mesh/`` and ``video/`` where ``mesh/mesh.json`` says they are
    of a step past ``step`` (a resume from an earlier checkpoint: they show the branch it left),
    and return that step; ``None`` where there is none. Left, the run trained to that step again
    showed the old branch's mesh as its own, and a ``--no-video`` export of it kept the old
    branch's turntable, recorded as of the same step. Files of the user's own stay. Under the
    folder's lock, after finishing an export a kill cut short (:func:`remove_earlier_run`)."""
    report = workspace / "mesh" / "mesh.json"
    with lock_folder(workspace):
        finish_replacements(workspace, REPLACED_OUTPUTS)
        try:
            exported = json.loads(report.read_text(encoding="utf-8")).get("step")
        except (OSError, AttributeError, *UNREADABLE_JSON):
            return None
        if not isinstance(exported, int) or isinstance(exported, bool) or exported <= step:
            return None
        for name in EXPORT_FILES:
            (workspace / name).unlink(missing_ok=True)
    return exported


def train(
    cfg: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    own_config: Path | None = None,
    note: str | Callable[[TrainConfig, dict[str, Any] | None], str | None] | None = None,
    resume_with: str = "--resume",
    start_again: StartAgain = OVERWRITE,
    resume_changed: str | None = None,
) -> Path:
    """Run SDS from ``run.step`` to ``cfg.iters`` and return the workspace.

    Writes ``config.json``, ``log.jsonl`` (one JSON object per logged step), ``previews/*.png`` and
    ``checkpoints/`` (every ``checkpoint_every`` steps and at the end); exports the mesh at the end
    unless ``cfg.export`` is off. Ctrl-C / SIGTERM save a checkpoint and raise
    ``TrainingInterrupted``. ``status.json`` says where the run stands (``dreamtext.runstatus``).
    The run holds the workspace's lock (:func:`dreamtext.processes.claim_workspace`) throughout.
    ``own_config``: the ``--config`` file that is the workspace's own record
    (:func:`check_workspace`). ``note``: the command's line for stderr (such as the settings a
    resume changes), printed once the run is checked and loaded: a run refused then (a model
    folder gone) does not say it goes on. A callable makes the line from the loaded run's config
    (a resume keeps a checkpoint's step as its iters where ``--iters`` asks for fewer) and its
    ``resumed`` record (the settings changed against the checkpoint; ``None`` for a new run).
    ``resume_with``: how the lines that stop the run (out of memory, diverged) say to go on
    from its checkpoint: ``--resume``, or a batch's or ``dreamtext image``'s rerun.
    ``start_again``: how the lines that stop it for good (diverged, overflowed) say to train it
    again from scratch (``--overwrite``; a batch's line, its own command). ``resume_changed``:
    how they say to go on from its checkpoint with a setting changed (a smaller ``--lr``,
    ``--guidance``, ``--h/--w``); ``None``: as ``resume_with``. A batch line's is its own
    ``dreamtext text PROMPT --workspace W --resume``: the batch run again with that flag changes
    every line it resumes, and warns of every finished one.
    """
    # A run is work of its own: one that follows a run complete in the same handler block (a
    # caller's loop of runs) is stopped by signals again, not only noted; one noted in between
    # stops it after its first step (stop_on_signal reads stop_requested).
    more_work()
    # Held from before the checks to the end: a second process on the workspace is refused
    # even while this one still loads its models (claim_workspace).
    with claim_workspace(cfg.workspace):
        run = build_run(
            cfg, resume, overwrite, own_config, resume_with, start_again, resume_changed
        )
        line = note(run.cfg, run.resumed) if callable(note) else note
        if line is not None:
            say(line)
        outside = box_outside_ranges(run.cfg.cameras) if run.resumed is None else None
        if outside is not None:
            say(outside)
        interrupted = (TrainingInterrupted, KeyboardInterrupt)
        run.saved_step = run.step  # the checkpoint a resume restored (0: none)
        with track_status(
            run.workspace,
            cfg.iters,
            lambda: run.step,
            run.device,
            interrupted,
            saved=lambda: run.saved_step,
        ):
            try:
                return _train(run, resume)
            except OSError as error:
                # A full or failing disk in training (a checkpoint, the log, a preview): the
                # fix is followed by a resume from the last checkpoint, not a new run elsewhere
                # (the CLI's line, errors.saved_run_line). The error goes on: a batch stops on it.
                if error.errno in ENVIRONMENT_ERRNOS and not hasattr(error, "trained_run"):
                    step = resume_step(run.workspace) if can_resume(run.workspace) else None
                    if step is not None:
                        error.saved_run = SavedRun(step, run.resume_with)
                raise


def save_run_checkpoint(run: Run) -> Path:
    """Save the checkpoint of ``run``'s step (:func:`~dreamtext.checkpoint.save_checkpoint`),
    and record it as the one a resume goes on from (``run.saved_step``). A second Ctrl-C can
    land after ``last.pt`` was replaced (while its step record is written or older step files
    pruned): the checkpoint on disk is then this step's, which the interrupted status.json names
    (it named the step before)."""
    try:
        path = save_checkpoint(run.workspace, checkpoint_state(run), keep=run.cfg.keep_checkpoints)
    except BaseException:
        if checkpoint_step(last_checkpoint(run.workspace)) == run.step:
            run.saved_step = run.step
        raise
    run.saved_step = run.step
    return path


def save_new_checkpoint(run: Run) -> Path:
    """``last.pt`` of ``run``'s step: saved (:func:`save_run_checkpoint`) unless the loop saved
    it at this step already. The last step of a run whose ``iters`` is a multiple of
    ``checkpoint_every`` (every default and FitFusion run) wrote the same state twice, a whole
    checkpoint more (148 MB for the default field), and a SIGTERM that came during such a save
    waited for the second within the scheduler's grace period."""
    if run.saved_step == run.step:
        return last_checkpoint(run.workspace)
    return save_run_checkpoint(run)


def _train(run: Run, resume: bool) -> Path:
    cfg, workspace = run.cfg, run.workspace
    workspace.mkdir(parents=True, exist_ok=True)
    log_path = workspace / "log.jsonl"
    if resume:
        truncate_log(log_path, run.step)
        remove_later_files(workspace, run.step)
        if run.step < cfg.iters:
            # The final preview of the run's earlier end: while the run trains on (and for good
            # if it is stopped) it passed for the newest picture of the field (the viewer's).
            (workspace / "previews" / "final.png").unlink(missing_ok=True)
    else:
        # An --overwrite leaves nothing of the run it replaces; removed before the new
        # config.json is written, so that a process killed in between leaves no old checkpoint
        # for --resume to continue under the new settings.
        remove_earlier_run(workspace)
    write_config(run)
    if run.step >= cfg.iters:
        unused = "; ".join(run.unused_changes)
        say(
            f"{workspace}: already at step {run.step} of {cfg.iters}; nothing to train"
            + (
                f", so these are not used: {unused} (train on with a larger --iters)"
                if unused
                else ""
            )
        )
    start_time, start_step = time.perf_counter(), run.step
    due = False  # a checkpoint the loop has not saved yet
    previewed = None  # the step of the last preview the loop saved
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(run.device)
    with (
        stop_on_signal() as stop,
        log_path.open("ab", buffering=0) as log,  # nothing buffered (append_log_line)
        tqdm(
            total=cfg.iters,
            initial=run.step,
            desc=f"text→3D {bar_label(cfg.prompt)!r}",
            unit="it",
            dynamic_ncols=True,
            **bar_options(),
        ) as bar,
    ):
        cut_short = preview_cut_short(run) if resume else None
        if cut_short is not None:
            try:
                with out_of_memory_saves_a_checkpoint(run):
                    save_preview(run, cut_short)
                previewed = run.step
            except StepStopped:  # stopped again: the next stop saves the step after this one
                stop["stop"] = True
        while run.step < cfg.iters:
            try:
                with out_of_memory_saves_a_checkpoint(run):
                    record = train_step(run)
            except StepStopped:  # stopped mid-step: train_step left the last whole one as it was
                raise interruption(run, save_run_checkpoint) from None
            postfix = {"loss": f"{record['loss']:.4g}", "t": f"{record.get('t', 0):.0f}"}
            memory = peak_gpu_mib(run.device)
            if memory is not None:
                record["gpu_mem_mib"] = memory
                postfix["mem"] = f"{memory:.0f}MiB"
            # shown by the update's redraw: a redraw of its own doubled a log file's lines
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
            if run.step % cfg.log_every == 0 or run.step == cfg.iters:
                elapsed = time.perf_counter() - start_time
                record["its"] = (run.step - start_step) / max(elapsed, 1e-9)
                record["skipped_total"] = run.guidance.skipped_steps
                append_log_line(log, log_path, record)
                update_status(workspace)
            # After the step's log line, so that running out of memory here loses no line.
            with out_of_memory_saves_a_checkpoint(run):
                refresh_occupancy(run)
            if cfg.preview_every > 0 and run.step % cfg.preview_every == 0:
                try:
                    with out_of_memory_saves_a_checkpoint(run):
                        save_preview(run, workspace / "previews" / f"step_{run.step:06d}.png")
                    previewed = run.step
                except StepStopped:  # the step itself is whole: its checkpoint, no preview
                    stop["stop"] = True
            # Not weights that overflowed (overflowed_step): saved, they replaced the checkpoints
            # of finite weights, and pruned them. Due, it is saved at the next step whose
            # weights render finite.
            due = due or run.step % cfg.checkpoint_every == 0
            if due and overflowed_step(run) is None:
                save_run_checkpoint(run)
                update_status(workspace)
                due = False
            check_diverged(run)
            if stop["stop"]:
                raise interruption(run, save_new_checkpoint)
    # A stop after the loop's last look at its flag (as it closed its bar and log): the final
    # preview and the export would run on for minutes that a scheduler stopping it does not give.
    if stop["stop"]:
        raise interruption(run, save_new_checkpoint)
    # The end of training's check and save (seconds for a large field), where the loop's signal
    # handling has ended: a stop then is noted as the loop's, the step saved, and stops the run
    # before its final preview. Raised into them, it lost every step since the last periodic
    # checkpoint (a run whose iters are no multiple of checkpoint_every).
    with stop_on_signal() as stop:
        # A resume with nothing to train saves all the same: its checkpoint records the
        # settings that apply after training (AFTER_TRAINING).
        resaved = run.step == start_step
        overflowed = None if run.saved_step == run.step and not resaved else overflowed_step(run)
        if overflowed is not None:
            # Too few steps rendered NaN to count as diverged: the run "finished", saved
            # weights that render NaN over the checkpoint from before, and exported them.
            raise DreamtextError(
                f"the training ended with weights that overflowed float32 in step {overflowed}, "
                f"so the field renders NaN or infinite pixels; "
                f"{kept_checkpoint(run, overflowed, False)}"
            )
        checkpoint = save_run_checkpoint(run) if resaved else save_new_checkpoint(run)

    # From here to the export's start the loop's signal handling has ended (the final previews
    # render the whole field: minutes on a CPU for a fuzzy field): a stop there is one of the
    # trained, saved run, before its export, whatever line it lands on (the notes below and
    # status.json's phase said only "interrupted; ... with --resume if the run has a
    # checkpoint"), and so is a library's error made of its KeyboardInterrupt (recorded
    # "failed"); once status.json's phase is the export, one in the export. Without an export
    # the final preview is the run's last file: a stop once it is in place changes nothing.
    def stopped_at_the_end() -> TrainingInterrupted:
        if tracked_phase(workspace) == "export":
            return TrainingInterrupted(run.step, last_checkpoint(workspace), in_export=True)
        return TrainingInterrupted(run.step, checkpoint, before_export=export_due(run))

    with stops_as(stopped_at_the_end), sigterm_interrupts():
        if stop["stop"]:
            raise stopped_at_the_end()
        with out_of_memory_saves_a_checkpoint(run):
            save_final_preview(run, previewed, completes_work=not cfg.export)
        if run.guidance.skipped_steps:
            say(f"dreamtext: skipped {run.guidance.skipped_steps} steps with non-finite guidance")
        if run.skipped_updates:
            say(
                f"dreamtext: skipped the update of {run.skipped_updates} steps with non-finite "
                "gradients"
            )
        if cfg.export:
            # One whose KeyboardInterrupt a library swallowed: the export would run to its end.
            raise_if_stop_requested()
            update_status(workspace, phase="export")
            try:
                # Its files are written all at once: a stop in it leaves none half-written.
                export_trained(run)
            except OSError as error:
                # A full or failing disk in the export: the run is trained and saved, so what to
                # do once it is fixed is to export it, not to train it again elsewhere (the
                # CLI's line, errors.trained_run_line). The error itself goes on: a batch stops
                # on it.
                error.trained_run = TrainedRun(run.step, last_checkpoint(workspace), workspace)
                raise
    return workspace


def out_of_memory_fixes(cfg: TrainConfig, memory: str) -> str:
    """What a run of ``cfg`` that ran out of ``memory`` (``"GPU memory"`` or ``"memory"``, the
    host's) can change to fit, as a phrase: ``a smaller --h/--w, --fp16, ...``. The trainer's
    out-of-memory line names them, and a batch's line that ran out outside the training steps
    (loading the prior, building the field)."""
    # --fp16 halves the prior and the MLPs' activations on the GPU; the host's share is the
    # render's samples and the prior. The CPU is not named: a training step there is slow.
    halve, _ = precision_memory_fixes(memory, cfg.guidance.fp16 or cfg.guidance.bf16)
    first = f"{halve}, " if halve else ""
    # The batch multiplies the render (and the guidance) as the area does, on either; a batch
    # of 1 has no smaller one (a CPU run of one image was told to lower it).
    if cfg.batch_size > 1:
        first += "a smaller --batch-size, "
    # The samples' count is the sampler's: the dense one (builtin:shapes') reads no
    # march_steps, so naming it for such a run changed nothing.
    steps = (
        "render.num_steps, render.upsample_steps"
        if cfg.render.sampler == "dense"
        else "render.march_steps"
    )
    # The chunks of a deferred backward: a direct one (render.backprop: direct) reads no
    # grad_chunk_points, so naming it for such a run changed nothing.
    chunks = (
        "render.backprop: deferred (its backward in chunks of render.grad_chunk_points)"
        if cfg.render.backprop == "direct"
        else "a smaller render.grad_chunk_points"
    )
    last = "" if memory == "GPU memory" else ", or close other programs"
    return f"a smaller --h/--w, {first}fewer samples ({steps}), {chunks}{last}"


# The share of the most memory a run held from which its out-of-memory line names the hash
# table's keys too: a smaller table then frees a large part of what the run needs.
TABLE_SHARE_NAMED = 0.25


def memory_peak(memory: str) -> int:
    """Bytes of ``memory`` (``"GPU memory"`` or ``"memory"``, the host's) this process held at
    most so far: torch's peak allocation on the GPU, the peak RSS on the host (Linux's
    ``VmHWM``, since :func:`reset_memory_peak` where it could reset it); 0 where unknown."""
    if memory == "GPU memory":
        return torch.cuda.max_memory_allocated() if torch.cuda.is_initialized() else 0
    peak = resident_peak()
    if peak is not None:
        return peak
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * ru_maxrss_unit()


def resident_peak() -> int | None:
    """Linux's ``VmHWM`` in bytes: the peak RSS that :func:`reset_memory_peak` resets (proc(5);
    ``ru_maxrss`` is documented as the whole process's); ``None`` without ``/proc`` (macOS)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def ru_maxrss_unit() -> int:
    """Bytes in a unit of ``getrusage``'s ``ru_maxrss``: bytes on macOS, KiB on Linux and the
    BSDs (read as KiB, a Mac's peak was 1024 times too large)."""
    return 1 if sys.platform == "darwin" else 1024


def reset_memory_peak() -> None:
    """Count the host's peak RSS (:func:`memory_peak`) from here on: a batch's line weighs its
    hash table against its own peak, where an earlier line's larger one hid the table's clause
    of its out-of-memory line. Linux's ``/proc/self/clear_refs``; where it cannot be written
    the process's peak stands."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def table_fix(cfg: TrainConfig, memory: str, start_again: StartAgain = OVERWRITE) -> str:
    """``""``, or where the hash table of ``cfg`` (:func:`grid_memory_at_least`) is a large part
    of the memory the run held (:data:`TABLE_SHARE_NAMED`), the clause that ends an
    out-of-memory line naming its keys, for a new run: a resumed one keeps its field. The
    fixes named before it were the render's alone (`field.log2_hashmap_size: 24` with 16 levels
    × 4 features, a 32 px render, was told to lower --h/--w and the samples). A batch line's
    new run is its own command (``start_again``, :func:`dreamtext.batch.line_start_again`)
    with a --config: the batch run again resumes the line, whose field stays as it started, and
    its --overwrite trains every text line of the share again."""
    device = torch.device("cuda" if memory == "GPU memory" else "cpu")
    grid, peak = grid_memory_at_least(cfg, device), memory_peak(memory)
    if not peak or grid < TABLE_SHARE_NAMED * peak:
        return ""
    keys = "field.log2_hashmap_size, field.num_levels or field.level_dim"
    need = (
        "(the hash table, its gradient and the optimiser's state and update need at least "
        f"{format_gigabytes(grid)})"
    )
    if start_again.command == OVERWRITE.command:
        return f"; or, in a new run, lower {keys} {need}"
    return f"; or start a new run, {start_again.command}, with a --config that lowers {keys} {need}"


def first_update_memory_line(run: Run, memory: str, where: str, again: str) -> str:
    """The line of ``run`` out of ``memory`` in its optimiser's first update (``where``: its
    render's size and batch; ``again``: how it goes on). That update makes the optimiser's
    state, :data:`~dreamtext.factory.OPTIMIZER_STATE_VALUES` float32 values a field parameter
    (Adam's two moments), and its step's temporaries
    (:func:`~dreamtext.factory.optimizer_step_temporaries`) meanwhile: 12 B a parameter with
    Adam, 16 B with Adan, 0.15 GB for the default field's 12.2 M, whatever the render's size.
    A later update makes the temporaries alone (4 B a parameter, or none) beside the state the
    first one made, so it peaks where the first did but for what else the step holds: one that
    runs out where the first fit ran out of what changed since, the render's (its samples'
    count changes from step to step) or other programs' memory, and its line names the
    render's settings (:func:`out_of_memory_fixes`). Here the fixes are those of a load
    (:func:`loading_memory_advice`): room on the device, the prior in half precision
    (``--fp16``: the field and its state stay float32), the CPU, or a new run's smaller hash
    table, the keys named where the table is a large part of what the run held."""
    cfg = run.cfg
    values = sum(p.numel() for p in run.field.parameters())
    state = OPTIMIZER_STATE_VALUES[cfg.optimizer]
    temporaries = optimizer_step_temporaries(cfg.optimizer, run.device)
    total = format_gigabytes(4 * (state + temporaries) * values)
    made = f"{state} float32 values for each of the field's {values:,} parameters"
    made += f" and {temporaries} more while it updates: {total}" if temporaries else f": {total}"
    halve, _ = precision_memory_fixes(memory, cfg.guidance.fp16 or cfg.guidance.bf16)
    fp16 = ", nor does --fp16, which halves the prior beside it" if halve else ""
    return (
        f"out of {memory} in the optimiser's first update, of step {run.step + 1} {where}, "
        f"which it left half done, so no checkpoint was saved; that update makes the "
        f"{cfg.optimizer} state ({made}, beside the prior; the render's settings do not change "
        f"it{fp16}): {loading_memory_advice(cfg, memory, again, run.start_again)}"
    )


def out_of_memory_saves_a_checkpoint(run: Run) -> contextlib.AbstractContextManager:
    """Turn running out of GPU or host memory into a :class:`DreamtextError` naming the fixes,
    after saving a checkpoint so that ``--resume`` continues from there.

    Memory that runs out in the render, the guidance or the backward pass, before
    ``optimizer.step()``, leaves the run at its last finished step (``run.step``,
    :func:`train_step`), which the checkpoint holds. Adam's update allocates too (its state on
    the first step, a temporary of each parameter's size on every step), after it has begun to
    write the parameters and moments: memory that runs out there (``run.updating``) leaves a
    state between two steps, so nothing is saved and ``--resume`` goes on from the last
    checkpoint on disk.
    """

    def explain(memory: str) -> str:
        run.optimizer.zero_grad(set_to_none=True)
        cfg = run.cfg
        fixes = out_of_memory_fixes(cfg, memory) + table_fix(cfg, memory, run.start_again)
        where = f"({cfg.h}x{cfg.w} px, batch {cfg.batch_size})"
        if run.updating:
            step = resume_step(run.workspace) if can_resume(run.workspace) else None
            # Nothing to resume: the command again, but a batch line's own (start_again's): the
            # batch run again with the fix changes it for every line it resumes or starts.
            fresh = run.start_again.command
            again = (
                f"resume with {run.resume_changed} (from its last checkpoint, step {step})"
                if step is not None
                else "run the command again"
                if fresh == OVERWRITE.command
                else f"run {fresh}"
            )
            if run.making_state:
                return first_update_memory_line(run, memory, where, again)
            return (
                f"out of {memory} in the optimiser's update of step {run.step + 1} {where}, "
                f"which it left half done, so no checkpoint was saved; {again} after one of: "
                f"{fixes}"
            )
        overflowed = overflowed_step(run)
        if overflowed is not None:
            return (
                f"out of {memory} after step {run.step} {where}; "
                f"{kept_checkpoint(run, overflowed)}; for the memory, one of: {fixes}"
            )
        path = save_run_checkpoint(run)
        return (
            f"out of {memory} after step {run.step} {where}; saved {path}; resume with "
            f"{run.resume_changed} after one of: {fixes}"
        )

    return out_of_memory_is_a_user_error(explain)


def export_trained(run: Run) -> None:
    """The seam to mesh export: the trained field, rendered by the run's own renderer (its
    settings and occupancy grid; the turntable of a run stopped before the grid's first refresh
    goes through a refreshed copy of it, as the previews do), with the run's ``export_options``,
    the files named after its object (:func:`dreamtext.export.run_title`: its prompt, an image
    run's image). Its files go to hidden staging folders for minutes, so status.json is kept
    fresh meanwhile (:func:`status_heartbeat`), whose guards (a batch's lock) stop it on the
    way.

    Its memory is checked again here (the run's start checked it, and other work may have
    taken memory since); a refusal names ``dreamtext export``, whose flags it names, and says
    the run is trained and saved."""
    options = dataclasses.replace(run.cfg.export_options, device=str(run.device))
    try:
        check_memory(options)
    except DreamtextError as error:
        workspace = shell_word(run.workspace)
        raise DreamtextError(
            f"{error}; the run trained to step {run.step} and is saved "
            f"({last_checkpoint(run.workspace)}): export it with those flags of "
            f"`dreamtext export --workspace {workspace}`"
        ) from None
    check_ffmpeg(options)
    with status_heartbeat(run.workspace) as still_ours:
        try:
            result = export_field(
                run.field.eval(),
                run.workspace,
                options,
                renderer=run.renderer,
                step=run.step,
                check=still_ours,
                prompt=run.cfg.prompt,
                title=run_title(run.workspace, run.cfg.prompt),
                radius_range=run.cfg.cameras.radius_range,
                checked=True,
                # Its files are the run's last: once they are committed a stop neither makes
                # it "interrupted in the export" nor the command's exit 130.
                completes_work=True,
            )
        except DivergedDensity as diverged:  # "train again": a batch line's is its own command
            smaller = f"a smaller --lr (this run's is {run.cfg.lr:g})"
            raise DreamtextError(
                f"{diverged.situation}; {run.start_again.with_changes(smaller)}"
            ) from None
    say(result.summary())
