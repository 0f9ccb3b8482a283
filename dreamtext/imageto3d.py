"""Image→3D (DreamText, thesis ch. 5.2) and diversity augmentation (ch. 5.3).

``run_image`` chains the stages, each skipped when its output is already in the workspace, so an
interrupted run continues where it stopped:

    image ──► describe      W/descriptor/sentence.json            (CLIP sentence search)
                            W/descriptor/source.<ext>             (a copy of the image)
          ──► descriptor    W/descriptor/learned_embeds.safetensors (placeholder-token training)
          ──► text→3D       W/checkpoints/last.pt                  (SDS with the trained sentence)
          ──► export        W/mesh/                                (unless ``cfg.export`` is off)

text→3D and its export are one ``train`` call, so ``W/status.json`` tracks them like any text→3D
run and ends ``finished`` after the export; a run stopped during its export resumes at its last
step, trains nothing and exports.

CLIP and Stable Diffusion come from :mod:`dreamtext.models`, so descriptor training and text→3D
share one load, and a batch of image runs loads each model once.

``run_diverse`` first samples an image of a text prompt with the same Stable Diffusion, then runs
``run_image`` on it: SDS alone gives nearly the same object for a prompt whatever the seed; a
sampled image, different for every seed, pins down one concrete instance.
"""

from __future__ import annotations

import copy
import os
import sys
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from dreamtext.checkpoint import atomic_write_bytes, check_writable, last_checkpoint
from dreamtext.config import DEFAULT_WORKSPACE_ROOT, TrainConfig, read_run_config, slugify
from dreamtext.describe import DescribeOptions, describe, read_record, sentence_path
from dreamtext.descriptor import (
    DescriptorOptions,
    learned_embeds_path,
    sample_grid,
    train_descriptor,
)
from dreamtext.devices import resolve_device
from dreamtext.errors import DreamtextError
from dreamtext.guidance import GuidanceConfig
from dreamtext.images import load_image
from dreamtext.interrupts import TrainingInterrupted, sigterm_interrupts
from dreamtext.models import clip_encoder, load_for
from dreamtext.runstatus import run_finished, track_status

MESH_FILES = ("mesh.glb", "mesh.obj", "mesh.ply")
# The suffix of descriptor/source.<ext> for each format load_image accepts.
SOURCE_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}


@dataclass
class ImageOptions:
    """``dreamtext image`` options beyond the text→3D ones (``--clip --nouns --adjectives --noun
    --quantifier --max-words`` go to ``describe``, ``--descriptor-iters`` to ``descriptor.iters``).

    ``sample_steps`` / ``sample_guidance_scale``: the sampler of ``--diverse``'s input image.
    """

    describe: DescribeOptions = field(default_factory=DescribeOptions)
    descriptor: DescriptorOptions = field(default_factory=DescriptorOptions)
    sample_steps: int = 50
    sample_guidance_scale: float = 7.5


def default_workspace(image_path: str | Path) -> Path:
    """``workspace/<image file name>``: where ``dreamtext describe`` and ``dreamtext image`` write
    by default, so that ``image`` reuses the sentence ``describe`` found."""
    return DEFAULT_WORKSPACE_ROOT / slugify(Path(image_path).stem)


def _needs_stable_diffusion(model: str, what: str) -> None:
    if model.startswith("builtin:"):
        raise DreamtextError(
            f"{what} needs a Stable Diffusion model, not {model}; pass --model with a diffusers "
            "Stable Diffusion hub id or folder"
        )


def _text_stage_done(workspace: Path, cfg: TrainConfig) -> bool:
    """text→3D finished at ``cfg.iters`` (``status.json``, or for older runs the checkpoint and
    mesh) and, when ``cfg.export`` asks for one, the mesh is there."""
    if cfg.export and not any((workspace / "mesh" / name).is_file() for name in MESH_FILES):
        return False
    return run_finished(workspace, cfg.iters)


def keep_source_copy(image_path: Path, workspace: Path) -> Path:
    """Copy the input image into ``W/descriptor/source.<ext>`` (once), so the run folder holds
    everything that made it: the viewer shows it and a copied run keeps it.

    ``<ext>`` is that of the image's format, read from its bytes (``source.png``, ``source.jpg``,
    ``source.webp``), not its file name's: a PNG without a suffix or a JPEG named ``.jfif`` gets
    a name the viewer recognises. ``image_path`` must have passed :func:`load_image`.
    """
    with Image.open(image_path) as image:
        suffix = SOURCE_SUFFIXES[image.format]
    target = workspace / "descriptor" / f"source{suffix}"
    if not target.is_file():
        data = image_path.read_bytes()
        atomic_write_bytes(target, lambda f: f.write(data))
    return target


def check_image_workspace(workspace: Path, image_path: Path) -> dict | None:
    """Refuse, before any work, a workspace that holds something other than this image's run:
    a file, a folder this process cannot write, the run of another image, or a text→3D run of
    some prompt (which the text→3D stage would otherwise continue as this image's). Returns the
    run's recorded ``config.json`` (``None`` before the text→3D stage has started)."""
    check_writable(workspace, "pass --workspace a folder you can write")
    record = read_record(workspace)
    previous = record.get("image") if record else None
    if previous is not None and Path(previous).resolve() != image_path.resolve():
        raise DreamtextError(
            f"{workspace} holds the image→3D run of {previous}; pass --workspace NEW_FOLDER "
            "for this image"
        )
    saved = read_run_config(workspace, "delete it or pass --workspace NEW_FOLDER")
    if saved is None:
        return None
    if record is None or not saved.get("guidance", {}).get("textual_inversion"):
        raise DreamtextError(
            f"{workspace} holds a text→3D run of '{saved.get('prompt')}'; pass --workspace "
            "NEW_FOLDER for this image"
        )
    return saved


def check_text_stage(cfg: TrainConfig, device: torch.device) -> None:
    """What the later stages need, checked before the first one runs, so that a bad flag costs
    a line and not the sentence search and the descriptor training: the precision on this
    device, the hash-grid backend (a field is built and dropped), and the Stable Diffusion,
    loaded here through :func:`dreamtext.models.load_for` (the stages reuse the load)."""
    from dreamtext.factory import build_field
    from dreamtext.models import resolve_dtype

    resolve_dtype(cfg.guidance, device)
    build_field(cfg.field, device)  # an encoding that cannot run here raises
    load_for(cfg.guidance, device)


def ignored_flags(workspace: Path, given: dict[str, object]) -> list[str]:
    """The explicitly given ``given`` settings (``noun``, ``quantifier``, ``clip``, ``max_words``
    of describe; ``descriptor_iters``) that differ from what the workspace's finished describe /
    descriptor stages used, which a rerun reuses, as ``"--flag value (the run's: old)"``."""
    record = read_record(workspace) or {}
    done = {"noun", "quantifier", "clip", "max_words"} if record else set()
    if "trained_sentence" in record:
        done.add("descriptor_iters")
    out = []
    for name, value in given.items():
        recorded = record.get(name)
        if value is None or name not in done or recorded is None or recorded == value:
            continue
        out.append(f"--{name.replace('_', '-')} {value} (the run's: {recorded})")
    return out


def run_image(image_path: str | Path, options: ImageOptions | None, train_cfg: TrainConfig) -> Path:
    """Reconstruct the object of one image in 3D; return the workspace.

    ``train_cfg`` is the text→3D configuration (its prompt is replaced by the trained sentence,
    its ``guidance.textual_inversion`` by the learned file). An empty ``train_cfg.workspace``
    becomes ``workspace/<image file name>``. ``train_cfg.seed`` also seeds descriptor training.
    Everything that can be checked cheaply (the image, the workspace, the device, precision,
    encoding and model) is checked before the first stage runs. Stage notes go to stderr.
    """
    options = options or ImageOptions()
    cfg = copy.deepcopy(train_cfg)
    _needs_stable_diffusion(cfg.guidance.model, "image→3D")
    image_path = Path(image_path)
    load_image(image_path)  # a bad image fails here, before any model is loaded
    if not cfg.workspace:
        cfg.workspace = str(default_workspace(image_path))
    workspace = Path(cfg.workspace)
    check_image_workspace(workspace, image_path)
    device = resolve_device(cfg.device)
    if not _text_stage_done(workspace, cfg):
        check_text_stage(cfg, device)

    record_path = sentence_path(workspace)
    if record_path.is_file():
        _note(f"describe: reusing {record_path}")
    else:
        describe_options = replace(options.describe, device=str(device))
        with (
            stage_status(workspace, "describe", device),
            sigterm_interrupts(),
            clip_encoder(describe_options.clip, device, describe_options.batch_size) as clip,
        ):
            sentence = describe(image_path, workspace, describe_options, encoder=clip)
        _note(f"describe: {sentence}")
    keep_source_copy(image_path, workspace)

    learned = learned_embeds_path(workspace)
    if learned.is_file() and "trained_sentence" in (read_record(workspace) or {}):
        _note(f"descriptor: reusing {learned}")
    else:
        descriptor_options = replace(options.descriptor, seed=cfg.seed)
        train_descriptor(image_path, workspace, cfg.guidance, descriptor_options, str(device))

    cfg.prompt = read_record(workspace)["trained_sentence"]
    cfg.guidance.textual_inversion = str(learned)
    if _text_stage_done(workspace, cfg):
        _note(f"text→3D: reusing {last_checkpoint(workspace)}")
    else:
        from dreamtext.trainer import train

        # A run stopped during its export is already at cfg.iters: resuming trains nothing and
        # exports, under status.json like any run, which ends "finished".
        train(cfg, resume=last_checkpoint(workspace).is_file())
    return workspace


def stage_status(workspace: str | Path, phase: str, device: torch.device) -> AbstractContextManager:
    """``status.json`` around a stage without steps of its own (``sample``, ``describe``):
    running in ``phase``, then failed or interrupted there, or running on into the next stage."""
    interrupted = (TrainingInterrupted, KeyboardInterrupt)
    return track_status(workspace, 0, lambda: 0, device, interrupted, phase, finishes=False)


def _note(line: str) -> None:
    """A stage's note, on stderr: stdout carries only the workspace, for
    ``ws=$(dreamtext image …)``."""
    tqdm.write(line, file=sys.stderr)


def sample_image(
    prompt: str,
    guidance: GuidanceConfig,
    seed: int,
    out_path: str | Path,
    device: str = "cpu",
    steps: int = 50,
    guidance_scale: float = 7.5,
) -> Path:
    """One image of ``prompt`` from the run's Stable Diffusion (``guidance``: model, precision,
    memory options; seeded), saved as PNG. The model is the one the image→3D stages reuse."""
    _needs_stable_diffusion(guidance.model, "--diverse")
    models = load_for(guidance, device)
    with torch.no_grad(), models.text_encoder_on_device() as text_encoder:
        pipe = models.pipeline(text_encoder=text_encoder)
        size = models.resolution
        image = sample_grid(pipe, prompt, 1, steps, guidance_scale, seed, size, "diverse image")[0]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, out_path)
    return out_path


def run_diverse(
    train_cfg: TrainConfig, options: ImageOptions | None = None, named: bool = False
) -> Path:
    """``dreamtext text PROMPT --diverse``: sample an image of the prompt, then image→3D on it.

    The default workspace (``workspace/<prompt slug>``) gets a ``_diverse_seed<seed>`` suffix, so
    runs with different seeds (different images, hence different objects) do not collide; a
    workspace the user ``named`` (``--workspace``) is taken as it is.
    """
    options = options or ImageOptions()
    cfg = copy.deepcopy(train_cfg)
    _needs_stable_diffusion(cfg.guidance.model, "--diverse")
    default = str(DEFAULT_WORKSPACE_ROOT / slugify(cfg.prompt))
    if not named and (not cfg.workspace or cfg.workspace == default):
        cfg.workspace = f"{default}_diverse_seed{cfg.seed}"
    image_path = Path(cfg.workspace) / "diverse" / f"sample_seed{cfg.seed}.png"
    if image_path.is_file():
        _note(f"diverse: reusing {image_path}")
    else:
        device = resolve_device(cfg.device)
        with stage_status(cfg.workspace, "sample", device):
            sample_image(
                cfg.prompt,
                cfg.guidance,
                cfg.seed,
                image_path,
                str(device),
                options.sample_steps,
                options.sample_guidance_scale,
            )
    return run_image(image_path, options, cfg)
