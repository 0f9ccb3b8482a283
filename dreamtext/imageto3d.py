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
step, trains nothing and exports. The stages before it write ``status.json`` too, with their
phase (``sample``, ``describe``, ``descriptor``).

``W/config.json`` is written once the checks have passed, before the first stage: the text→3D
config (its prompt is the image's name, or ``--diverse``'s prompt, until the descriptor is
trained), with the sections ``image_to_3d`` (the image, the describe and descriptor options) and,
for ``--diverse``, ``diverse`` (the prompt, seed and sampler). A rerun resolves over them
(:func:`resolve_image_options`), as the text→3D settings resolve over the rest of the file.

A rerun whose ``--descriptor-iters`` is larger than the trained descriptor's trains it on from
its last checkpoint; the text→3D stage must then start over on the new embedding, which a run
whose text→3D stage has begun does only with ``overwrite`` (``--overwrite``). A smaller count
keeps the descriptor as it is, with a note.

CLIP and Stable Diffusion come from :mod:`dreamtext.models`, so descriptor training and text→3D
share one load, and a batch of image runs loads each model once.

``run_diverse`` first samples an image of a text prompt with the same Stable Diffusion, then runs
``run_image`` on it: SDS alone gives nearly the same object for a prompt whatever the seed; a
sampled image, different for every seed, pins down one concrete instance.
"""

from __future__ import annotations

import copy
import os
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from dreamtext.__main__ import work_complete
from dreamtext.captions import needs_stable_diffusion
from dreamtext.checkpoint import (
    atomic_write_bytes,
    can_resume,
    check_writable,
    last_checkpoint,
    last_reads,
    load_checkpoint,
)
from dreamtext.config import (
    DEFAULT_WORKSPACE_ROOT,
    FLOAT32_MAX,
    TrainConfig,
    absolute_model_folder,
    apply_overrides,
    config_to_dict,
    flat_fields,
    read_stage_sections,
    run_setting_changes,
    same_prompt,
    slugify,
    write_run_config,
)
from dreamtext.describe import (
    DescribeOptions,
    changed_word_lists,
    check_base_sentences,
    check_options,
    collapse_spaces,
    describe,
    keep_source_copy,
    read_record,
    sentence_path,
    used_options,
    warn_changed_word_lists,
    word_lists_record,
)
from dreamtext.descriptor import (
    DESCRIPTOR_TOKEN,
    LEARNED_EMBEDS,
    RERUN,
    DescriptorOptions,
    SentencesToLearn,
    check_recorded_sentence,
    check_sentence_to_learn,
    check_token,
    learned_embeds_path,
    sample_grid,
    train_descriptor,
)
from dreamtext.devices import out_of_memory_is_a_user_error, resolve_device
from dreamtext.errors import (
    OVERWRITE_SAME_SEED,
    DreamtextError,
    StartAgain,
    free_memory_fix,
    precision_memory_fixes,
)
from dreamtext.guidance import GuidanceConfig
from dreamtext.inputs import (
    earlier_slugs,
    read_vocabulary,
    word_list_identity,
    word_list_path,
    write_elsewhere,
)
from dreamtext.interrupts import TrainingInterrupted, sigterm_interrupts
from dreamtext.models import clip_encoder, load_for, release_clip
from dreamtext.processes import claim_workspace
from dreamtext.progress import say
from dreamtext.prompts import check_lengths, check_run_lengths, expand_tokens
from dreamtext.runfiles import (
    check_image,
    check_image_workspace,
    default_workspace,
    descriptor_checkpoint,
    source_copy,
)
from dreamtext.runfiles import recorded_image as recorded_image  # re-exported
from dreamtext.runfiles import same_image as same_image  # re-exported
from dreamtext.runstatus import (
    HEARTBEAT_SECONDS,
    ends_between_stages,
    restart_stage,
    run_finished,
    track_status,
)

# How the lines that stop an image run's text→3D stage (out of memory, diverged) say to go on
# from its checkpoint: `dreamtext image` has no --resume; the same command continues the run.
IMAGE_RESUME = "the same `dreamtext image` command again (it goes on from there)"
# ``text --diverse``'s, which runs image→3D too: the lines named `dreamtext image`.
DIVERSE_RESUME = "the same `dreamtext text --diverse` command again (it goes on from there)"


@dataclass
class ImageOptions:
    """``dreamtext image`` options beyond the text→3D ones (``--clip --nouns --adjectives --noun
    --quantifier --max-words`` go to ``describe``, ``--descriptor-iters`` to ``descriptor.iters``).

    ``sample_steps`` / ``sample_guidance_scale``: the sampler of ``--diverse``'s input image
    (diffusers' pipeline, whose scale is that of ``ε_u + s (ε_c − ε_u)``, not SDS's
    ``guidance_scale``).
    """

    describe: DescribeOptions = field(default_factory=DescribeOptions)
    descriptor: DescriptorOptions = field(default_factory=DescriptorOptions)
    sample_steps: int = 50
    sample_guidance_scale: float = 7.5


def image_run_fixed(workspace: str | Path, overwrite: bool, command: str) -> dict[str, Any]:
    """``resolve_config``'s ``fixed`` and ``kept`` for an image→3D run (``image``, ``text
    --diverse``, a ``batch``'s image line) in ``workspace``: with ``--overwrite`` (text→3D
    trains from scratch: another field, another grid may be asked for), or before its text stage
    has a checkpoint (there is no field yet), only the seed stays, which trained the descriptor
    the run keeps; otherwise none, so that ``resolve_config`` keeps what any resumed run keeps
    (:data:`~dreamtext.config.RESUME_FIXED`). Before the descriptor has learned words or a
    checkpoint (a run stopped in its describe stage, or killed before the descriptor's first
    checkpoint) nothing the seed trained is kept: nothing is fixed."""
    workspace = Path(workspace)
    if not overwrite and can_resume(workspace):
        return {}
    if not (learned_embeds_path(workspace).is_file() or can_resume(workspace / "descriptor")):
        return {"fixed": ()}
    if overwrite:
        return {
            "fixed": ("seed",),
            "kept": f"{command} --overwrite keeps the run's descriptor, which its seed trained",
        }
    return {"fixed": ("seed",), "kept": "the run keeps its descriptor, which its seed trained"}


def _text_stage_done(workspace: Path, cfg: TrainConfig) -> bool:
    """text→3D finished at ``cfg.iters`` (``status.json``, or for older runs the checkpoint and
    mesh) and, when ``cfg.export`` asks for one, the mesh is there; and its ``last.pt`` loads
    whole, or there is no checkpoint to go on from. A finished run whose ``last.pt`` was damaged
    or deleted was reused as it was, though the export names this command as the way to go on
    from the run's newest whole step file, as ``text --resume`` does."""
    return run_finished(workspace, cfg.iters, needs_mesh=cfg.export) and last_reads(workspace)


def image_section(image_path: Path, options: ImageOptions) -> dict[str, Any]:
    """config.json's ``image_to_3d`` section: the image (absolute), the describe options (a
    ``--clip`` folder and the word lists as absolute paths, ``null`` for the built-in lists; the
    device is the run's) and the descriptor options."""
    describe_options = {**used_options(options.describe), "batch_size": options.describe.batch_size}
    return {
        "image": str(image_path.resolve()),
        "describe": describe_options,
        "descriptor": config_to_dict(options.descriptor),
    }


def resolve_image_options(overrides: dict[str, Any], workspace: str | Path) -> ImageOptions:
    """The describe / descriptor / sampler options of a run: the defaults, then what the run in
    ``workspace`` recorded (config.json's ``image_to_3d`` and ``diverse`` sections; for a run from
    before them, sentence.json's descriptor step count), then ``overrides``: the ``--config``
    files' sections (``"configs"``, :func:`dreamtext.config.config_file_stage_sections`, each over
    the one before: ``image IMG --config RUN/config.json`` runs with RUN's options), then the
    flags given (``"describe"``, ``"descriptor"``). A rerun typed without the first run's flags
    thus keeps its settings, as ``text --resume`` does. Once the describe stage is done, its
    options are the ones sentence.json says it ran with (``options``), whatever the flags and
    files: the stage is reused, and config.json must not record options it ignored
    (:func:`ignored_flags` names them)."""
    options = ImageOptions()
    sections = read_stage_sections(workspace)
    origins: dict[str, str] = {}  # each option's last source, for check_image_options

    def apply(values: dict[str, Any], source: str, prefix: str = "") -> None:
        target = getattr(options, prefix[:-1]) if prefix else options
        apply_overrides(target, values, source)
        origins.update({name: source for name in flat_fields(values, prefix)})

    if "image_to_3d" not in sections:
        done = (read_record(workspace) or {}).get("descriptor_iters")
        if isinstance(done, int) and not isinstance(done, bool):
            apply({"iters": done}, str(sentence_path(workspace)), "descriptor.")
    layers = [(f"{Path(workspace) / 'config.json'}", sections), *overrides.get("configs", ())]
    piped: dict[str, str] = {}  # the recorded lists that were piped in, by the file naming them
    for source, stages in layers:
        check_stage_sections(stages, source)
        apply(stage_options(stages), source)
        piped.update(_piped_lists(stages))
    used = (read_record(workspace) or {}).get("options")
    if isinstance(used, dict):
        apply(used, str(sentence_path(workspace)), "describe.")
    else:
        apply(overrides.get("describe", {}), "the command line", "describe.")
        _refuse_piped_again(options.describe, piped, origins)
    options.describe.clip = absolute_model_folder(options.describe.clip)
    apply(overrides.get("descriptor", {}), "the command line", "descriptor.")
    for name in ("nouns", "adjectives"):
        value = getattr(options.describe, name)
        setattr(options.describe, name, Path(value) if value is not None else None)
    check_image_options(options, origins)
    return options


def _piped_lists(stages: dict[str, Any]) -> dict[str, str]:
    """``{name: file}`` of the word lists (``nouns``, ``adjectives``) that a config file's
    ``image_to_3d`` section records as piped in (its ``word_lists``), each by the name its
    ``describe`` options give it."""
    section = stages.get("image_to_3d", {})
    lists, named = section.get("word_lists"), section.get("describe")
    if not isinstance(lists, dict) or not isinstance(named, dict):
        return {}
    return {
        name: named[name]
        for name in ("nouns", "adjectives")
        if _piped(lists.get(name)) and isinstance(named.get(name), str)
    }


def _refuse_piped_again(
    options: DescribeOptions, piped: dict[str, str], origins: dict[str, str]
) -> None:
    """Refuse a search that would read again, from a run's record, a word list that was piped
    in (``--nouns <(grep ...)``, ``/dev/stdin``, a FIFO): the pipe is gone (its name, such as
    ``/dev/fd/63``, is another open file or none in this process), and a FIFO blocks until
    something writes to it, so a resume before the search ended failed on a name it never
    showed, or waited for ever without a word."""
    for name, file in piped.items():
        value = getattr(options, name)
        if value is None or origins.get(f"describe.{name}") == "the command line":
            continue
        if str(value) == file:
            raise DreamtextError(
                f"the run's --{name} was piped in ({file}) and is read once: pass --{name} "
                "again (the same words) to search with it"
            )


# What each numeric image option may be, as (low, high) with None for no bound: the flags
# (--max-words, --descriptor-iters) are refused by the CLI before this, but a --config file's
# `image_to_3d:` and `diverse:` sections, or a run's config.json, were checked for their type
# only: a descriptor batch of 0 was a traceback after the sentence search, `iters: -1` was
# refused only after it, and both were recorded for the next run to trip on again.
IMAGE_OPTION_RANGES: dict[str, tuple[float | None, float | None]] = {
    "describe.max_words": (0, None),
    "describe.batch_size": (1, None),
    "descriptor.iters": (0, None),  # and at most cli.ITERS_MAX, as --descriptor-iters
    "descriptor.batch_size": (1, None),
    "descriptor.checkpoint_every": (0, None),
    "descriptor.preview_every": (0, None),
    "descriptor.preview_samples": (1, None),
    "descriptor.preview_steps": (1, None),
    "descriptor.log_every": (0, None),  # 0: no log lines, as checkpoint_every and preview_every
    "descriptor.augment.flip_p": (0, 1),
    "descriptor.augment.rotation_degrees": (0, 180),
    "descriptor.augment.rotation_p": (0, 1),
    "descriptor.augment.blur_kernel": (1, None),
    "descriptor.augment.blur_p": (0, 1),
    "descriptor.augment.crop_fraction": (0, 1),
    "descriptor.augment.crop_p": (0, 1),
    "descriptor.augment.grayscale_p": (0, 1),
    "descriptor.augment.jitter": (0, 0.5),  # kornia's ColorJitter: a hue shift of at most 0.5
    "descriptor.augment.jitter_p": (0, 1),
    "sample_steps": (1, None),
}
# Above 0, not from 0.
POSITIVE_IMAGE_OPTIONS = frozenset(
    {"descriptor.lr", "descriptor.augment.crop_fraction", "descriptor.augment.blur_sigma"}
)


def check_image_options(options: ImageOptions, origins: dict[str, str] | None = None) -> None:
    """Refuse image options outside :data:`IMAGE_OPTION_RANGES` (:data:`POSITIVE_IMAGE_OPTIONS`
    above 0, the blur's kernel odd and its sigma range low ≤ high), naming the config key and
    where it was set (``origins``: each dotted name's source), before any stage runs or
    config.json records it."""
    from dreamtext.cli import ITERS_MAX  # the flag's bound (the CLI imports no torch)

    origins = origins or {}
    ranges = {**IMAGE_OPTION_RANGES, "descriptor.iters": (0, ITERS_MAX)}

    def refuse(name: str, value: Any, what: str) -> None:
        key = "diverse.sample_steps" if name == "sample_steps" else f"image_to_3d.{name}"
        where = f" in {origins[name]}" if name in origins else ""
        raise DreamtextError(f"{key}{where} must be {what}, got {value}")

    for name, (low, high) in ranges.items():
        value = _option_value(options, name)
        if (low is not None and value < low) or (high is not None and value > high):
            refuse(name, value, f"{low} or more" if high is None else f"from {low} to {high:,}")
    for name in sorted(POSITIVE_IMAGE_OPTIONS):
        value = _option_value(options, name)
        if any(v <= 0 for v in (value if isinstance(value, tuple | list) else (value,))):
            refuse(name, value, "above 0")
    # Adam's first step is lr / (1 - β1) = 10 lr, taken in float32: past its largest value
    # torch raised in the first step (a traceback), as for the field's --lr (config's check).
    lr_max = FLOAT32_MAX / 10.0
    if options.descriptor.lr > lr_max:
        what = f"at most {lr_max:.3g} (Adam's first step, 10 × lr, must fit float32)"
        refuse("descriptor.lr", options.descriptor.lr, what)
    augment = options.descriptor.augment
    if augment.blur_kernel % 2 == 0:
        refuse("descriptor.augment.blur_kernel", augment.blur_kernel, "odd")
    low, high = augment.blur_sigma
    if low > high:
        refuse("descriptor.augment.blur_sigma", [low, high], "[low, high] with low ≤ high")
    # "" trained a descriptor, then text→3D wrote its vectors between every two characters of
    # the prompt ("550 tokens ... shorten the prompt"); a space splits it as a prompt's words.
    token = options.descriptor.token
    if not token or any(c.isspace() for c in token):
        what = f"one word without spaces (the default is {DESCRIPTOR_TOKEN!r})"
        refuse("descriptor.token", repr(token), what)


def _option_value(options: ImageOptions, name: str) -> Any:
    value: Any = options
    for part in name.split("."):
        value = getattr(value, part)
    return value


def stage_options(sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The :class:`ImageOptions` fields that config.json's stage sections hold, as overrides:
    ``image_to_3d``'s ``describe`` and ``descriptor``, ``diverse``'s sampler settings (the image,
    the prompt and the seed are the run's input, not options)."""
    image, diverse = sections.get("image_to_3d", {}), sections.get("diverse", {})
    out = {name: image[name] for name in ("describe", "descriptor") if name in image}
    out.update({k: diverse[k] for k in ("sample_steps", "sample_guidance_scale") if k in diverse})
    return out


def check_stage_sections(sections: dict[str, dict[str, Any]], source: str) -> None:
    """Refuse an option of the stage ``sections`` (:func:`dreamtext.inputs.stage_sections` of
    a config file, ``source``) that :class:`ImageOptions` has no field for, or of another type,
    naming it as the file does (``image_to_3d.descriptor.lrr``, with the field it is close
    to). Every command that reads a ``--config`` file checks it, those that run no image stage
    too: a typo there was taken without a word by ``text``, which has no stage to run it."""
    options = ImageOptions()
    image, diverse = sections.get("image_to_3d", {}), sections.get("diverse", {})
    kept = {name: image[name] for name in ("describe", "descriptor") if name in image}
    apply_overrides(options, kept, source, prefix="image_to_3d.")
    kept = {k: diverse[k] for k in ("sample_steps", "sample_guidance_scale") if k in diverse}
    apply_overrides(options, kept, source, prefix="diverse.")


def descriptor_plan(
    workspace: Path, iters: int, overwrite: bool, start_again: StartAgain = OVERWRITE_SAME_SEED
) -> tuple[bool, int]:
    """Whether the descriptor stage trains, and to how many steps, for ``iters`` asked.

    Untrained: it trains (resuming its checkpoint). Trained to ``iters``: it is reused. Trained to
    fewer: it trains on from its checkpoint, unless the text→3D stage has started on the old
    embedding and ``overwrite`` is off (a :class:`DreamtextError`: the text→3D run would mix two
    embeddings; it names ``start_again``'s command, a batch line's own). Trained to more, or
    stopped past ``iters`` before its end: kept at its step, with a note."""
    record = read_record(workspace) or {}
    if "trained_sentence" not in record or not learned_embeds_path(workspace).is_file():
        return True, _past_stop(workspace, iters)
    done = record.get("descriptor_iters")
    if not isinstance(done, int) or isinstance(done, bool) or done == iters:
        return False, done if isinstance(done, int) else iters
    if iters < done:
        _note(
            f"descriptor: trained to step {done} already; --descriptor-iters {iters} is fewer, so "
            f"it is kept as it is (pass --workspace NEW_FOLDER to train one to step {iters})"
        )
        return False, done
    checkpoint = descriptor_checkpoint(workspace)
    if not checkpoint.is_file():
        raise DreamtextError(
            f"{workspace}'s descriptor has no checkpoint ({checkpoint}) to train on from step "
            f"{done}; pass --workspace NEW_FOLDER to train one to step {iters}"
        )
    if can_resume(workspace) and not overwrite:
        # A batch's --overwrite refuses image lines and its --workspace is the list's root.
        fix = (
            "add --overwrite, or pass --workspace NEW_FOLDER"
            if start_again.command == "--overwrite"
            else f"run {start_again.command}"
        )
        raise DreamtextError(
            f"{workspace}'s text→3D stage trained on the descriptor of step {done}; to train the "
            f"descriptor on to step {iters} and text→3D again from scratch, {fix}"
        )
    # Trained on once before and stopped past iters (trained to 2, then stopped at 4 of 6, now
    # 3): config.json said 3 of a descriptor that ends at step 4.
    return True, _past_stop(workspace, iters)


def _past_stop(workspace: Path, iters: int) -> int:
    """The step the descriptor's training ends at for ``iters`` asked: ``iters``, or the step
    its checkpoint stopped at past it (with a note). Steps past ``iters`` are not undone, and
    config.json records where it ends, so that a rerun from it trains the same descriptor."""
    stopped = _stopped_descriptor_step(workspace)
    if stopped is None or stopped <= iters:
        return iters
    _note(
        f"descriptor: stopped at step {stopped} already, past --descriptor-iters {iters}; it is "
        f"kept at step {stopped} (pass --workspace NEW_FOLDER to train one to step {iters})"
    )
    return stopped


def _stopped_descriptor_step(workspace: Path) -> int | None:
    """The step of an unfinished descriptor's checkpoint (``last.pt``), ``None`` where there is
    none or it cannot be read (the descriptor stage then says why)."""
    checkpoint = descriptor_checkpoint(workspace)
    if not checkpoint.is_file():
        return None
    try:
        step = load_checkpoint(checkpoint).get("step")
    except DreamtextError:
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def check_text_stage(cfg: TrainConfig, device: torch.device, resume: bool = False) -> None:
    """What the later stages need, checked before the first one runs, so that a bad flag costs
    a line and not the sentence search and the descriptor training: the memory and the folders
    (:func:`dreamtext.export.check_export_folders`) of the export that ends it and of the
    training renders (as :func:`dreamtext.trainer.build_run` checks
    them; ``resume``: the stage goes on from its checkpoint, whose field it keeps), the precision
    on this device, the hash-grid backend (a field is built and dropped), and the Stable
    Diffusion, loaded here through :func:`dreamtext.models.load_for` (the stages reuse the
    load)."""
    from dreamtext.export import check_export_folders, check_ffmpeg, check_memory
    from dreamtext.factory import build_field
    from dreamtext.models import resolve_dtype
    from dreamtext.trainer import check_field_memory, check_render_memory

    if cfg.export:
        check_memory(cfg.export_options, after_training=True)
        check_ffmpeg(cfg.export_options, after_training=True)
        check_export_folders(Path(cfg.workspace), cfg.export_options)
    check_render_memory(cfg, device)
    check_field_memory(cfg, device, resume)
    resolve_dtype(cfg.guidance, device)
    build_field(cfg.field, device)  # an encoding that cannot run here raises
    models = load_for(cfg.guidance, device)
    # The negative prompt is read by text→3D (and --diverse's sample): one too long for the
    # text encoder was refused there, after the sentence search and the descriptor's training.
    check_lengths(models.tokenizer, [], cfg.guidance.negative, False)


def check_lengths_first(
    workspace: Path, cfg: TrainConfig, options: ImageOptions, overwrite: bool
) -> None:
    """The texts of the stages still to run that the text encoder would cut off, counted with
    Stable Diffusion's tokenizer read alone (:func:`dreamtext.models.read_tokenizer`, no weights):
    the negative prompt of a text→3D stage to train (its run's own learned words are not in it,
    as :func:`check_text_stage` counts it), and until the sentence is found, the sentence to
    learn at its shortest, of the ``--noun`` given or of every noun the search may find, with
    the ``--quantifier`` given and the words of the lists it may append
    (:func:`dreamtext.descriptor.check_sentence_to_learn`), and once
    it is found (by `dreamtext describe`, which counts CLIP's tokens alone) until the descriptor
    is trained, that sentence (:func:`dreamtext.descriptor.check_recorded_sentence`). Each was
    refused once the models had loaded, the sentence after the search too, with its record left
    in the workspace."""
    from dreamtext.models import read_tokenizer

    tokenizer = read_tokenizer(cfg.guidance.model)
    if overwrite or not _text_stage_done(workspace, cfg):
        check_lengths(tokenizer, [], cfg.guidance.negative, False)
    labels = cfg.guidance.views.labels if cfg.guidance.view_dependent else ()
    if sentence_path(workspace).is_file():
        if not learned_embeds_path(workspace).is_file():
            record = read_record(workspace) or {}
            check_recorded_sentence(tokenizer, record, labels, options.descriptor.token)
        return
    describe_options = options.describe
    noun = collapse_spaces(describe_options.noun)
    nouns, adjectives = check_options(describe_options)
    check_sentence_to_learn(
        tokenizer,
        noun,
        collapse_spaces(describe_options.quantifier),
        () if noun is not None else nouns,
        [*nouns, *adjectives],
        describe_options.max_words,
        labels,
        options.descriptor.token,
    )


def check_stages(
    workspace: Path, cfg: TrainConfig, options: ImageOptions, device: torch.device, overwrite: bool
) -> None:
    """Everything the stages still to run need, checked before the first one: unless the
    sentence is found already, the describe options (and base sentences that CLIP can read:
    :func:`dreamtext.describe.check_base_sentences`), then, by Stable Diffusion's tokenizer alone,
    the texts too long for its text encoder (:func:`check_lengths_first`), both once refused after
    the loads; then the CLIP model (loaded here, on the CPU; the search reuses the load), the
    text→3D stage's (:func:`check_text_stage`), and until the descriptor is trained, its token
    against the model's tokenizer (:func:`check_token`)."""
    search = not sentence_path(workspace).is_file()
    if search:
        nouns, _ = check_options(options.describe)
        check_base_sentences(options.describe, nouns)
    check_lengths_first(workspace, cfg, options, overwrite)
    if search:
        with clip_encoder(options.describe.clip, "cpu", options.describe.batch_size):
            pass
    if overwrite or not _text_stage_done(workspace, cfg):
        check_text_stage(cfg, device, resume=can_resume(workspace) and not overwrite)
    if not learned_embeds_path(workspace).is_file():
        check_token(load_for(cfg.guidance, device).tokenizer, options.descriptor.token)


def ignored_flags(
    workspace: Path, given: dict[str, object], source: str | None = None
) -> list[str]:
    """The explicitly given ``given`` describe settings (``clip``, ``nouns``, ``adjectives``,
    ``noun``, ``quantifier``, ``max_words``, ``adjust``) that differ from what the workspace's
    finished describe stage used, which a rerun reuses, as ``"--flag value (the run's: old)"``; with
    ``source`` (a ``--config`` file whose ``image_to_3d.describe`` they are) as
    ``"image_to_3d.describe.name value in source (the run's: old)"``. The stage's options are
    sentence.json's ``options``; a record from before it names only its ``clip`` and
    ``max_words`` and the chosen ``noun`` and ``quantifier``. A word list given by the path the
    search read, whose words differ from the ones sentence.json's ``word_lists`` recorded
    (edited since), is named too: its edit changes nothing of the reused stage either."""
    record = read_record(workspace) or {}
    lists = record.get("word_lists")
    used = record.get("options")
    if isinstance(used, dict):
        record, done = used, set(used)
    else:
        done = {"noun", "quantifier", "clip", "max_words"} if record else set()
    out = []
    for name, value in given.items():
        piped = False
        if name == "clip" and value is not None:
            value = absolute_model_folder(str(value))
        elif name in ("nouns", "adjectives") and value is not None:
            value, piped = word_list_path(value)
        recorded = record.get(name)
        if name in ("noun", "quantifier"):  # words as the search reads them, spaces collapsed
            value = collapse_spaces(value) if isinstance(value, str) else value
            recorded = collapse_spaces(recorded) if isinstance(recorded, str) else recorded
        # A list piped in again is the list the search read piped in, whatever the pipe's name.
        same_list = recorded == value or (
            piped and isinstance(lists, dict) and _piped(lists.get(name))
        )
        if name in ("nouns", "adjectives") and value is not None and same_list:
            if isinstance(lists, dict) and (edited := _edited_list(lists, name, value)):
                where = (
                    f"--{name}" if source is None else f"image_to_3d.describe.{name} in {source}"
                )
                if piped:
                    detail = edited.removeprefix(f"the {name} piped in ")
                    out.append(f"{where} piped in {detail}, other words than the search read")
                else:
                    out.append(f"{where} {edited}, edited since the search")
            continue
        if value is None or name not in done or recorded == value:
            continue
        if recorded is None and not isinstance(used, dict):
            continue  # a record from before "options" does not say
        was = "not given" if recorded is None else recorded
        if source is None and isinstance(value, bool):  # a switch: --adjust
            out.append(f"--{name} (the run's: {'on' if recorded else 'off'})")
        elif source is None:
            out.append(f"--{name.replace('_', '-')} {value} (the run's: {was})")
        else:
            out.append(f"image_to_3d.describe.{name} {value} in {source} (the run's: {was})")
    return out


def _piped(identity: object) -> bool:
    """Whether a record's word list identity (``word_lists``' ``nouns`` or ``adjectives``) is
    of a list piped in (:func:`dreamtext.inputs.word_list_path`)."""
    return isinstance(identity, dict) and identity.get("piped") is True


def _edited_list(recorded: dict, name: str, file: str) -> str | None:
    """How word list ``file`` (``nouns`` or ``adjectives``: ``name``) differs from what
    ``recorded`` (sentence.json's ``word_lists``) says it held (:func:`changed_word_lists`), or
    ``None`` where it does not."""
    try:
        words = read_vocabulary(file, f"{name}.txt")
    except DreamtextError:  # gone or unreadable: the reused stage does not read it
        return None
    changed = changed_word_lists(recorded, {name: word_list_identity(file, words)})
    return changed[0] if changed else None


def run_image(
    image_path: str | Path,
    options: ImageOptions | None,
    train_cfg: TrainConfig,
    overwrite: bool = False,
    sections: dict[str, Any] | None = None,
    note: str | None = None,
    resume_with: str = IMAGE_RESUME,
    start_again: StartAgain = OVERWRITE_SAME_SEED,
    resume_changed: str | None = None,
) -> Path:
    """Reconstruct the object of one image in 3D; return the workspace.

    ``train_cfg`` is the text→3D configuration (its prompt is replaced by the trained sentence,
    its ``guidance.textual_inversion`` by the learned file). An empty ``train_cfg.workspace``
    becomes ``workspace/<image file name>``. ``train_cfg.seed`` also seeds descriptor training.
    Everything that can be checked cheaply (the image, the workspace, the descriptor step count,
    the device, precision, encoding, model, the describe options and CLIP) is checked before
    anything is written. ``overwrite`` trains the text→3D stage again from scratch (describe and
    the descriptor are kept). ``sections``: more config.json sections to record (``--diverse``'s).
    Stage notes go to stderr; ``note`` (the command's own, such as that it continues a run)
    too, once the checks pass, so that a run they refuse does not say it goes on.
    ``resume_with``, ``resume_changed`` and ``start_again``: how the lines that stop it say to go
    on, to go on with a setting changed, and to train it again from scratch
    (:func:`dreamtext.trainer.train`'s).
    """
    options = options or ImageOptions()
    cfg = copy.deepcopy(train_cfg)
    needs_stable_diffusion(cfg.guidance.model, "image→3D")
    image_path = Path(image_path)
    if not cfg.workspace:
        cfg.workspace = str(default_workspace(image_path))
    workspace = Path(cfg.workspace)
    check_image(image_path, workspace)  # a bad image fails here, before any model is loaded
    # The workspace's lock from the checks on (processes.claim_workspace).
    with claim_workspace(workspace), ends_between_stages(workspace):
        return _run_image(
            image_path,
            options,
            cfg,
            workspace,
            overwrite,
            sections,
            note,
            resume_with,
            start_again,
            resume_changed,
        )


def _run_image(
    image_path: Path,
    options: ImageOptions,
    cfg: TrainConfig,
    workspace: Path,
    overwrite: bool,
    sections: dict[str, Any] | None,
    note: str | None,
    resume_with: str,
    start_again: StartAgain,
    resume_changed: str | None,
) -> Path:
    check_image_workspace(workspace, image_path)
    train_words, iters = descriptor_plan(
        workspace, options.descriptor.iters, overwrite, start_again
    )
    device = resolve_device(cfg.device)
    check_stages(workspace, cfg, options, device, overwrite)
    # Nothing to train: config.json keeps the settings the run was trained with, not the flags
    # of this command, which change nothing (they are named in a note below).
    reused = not overwrite and _text_stage_done(workspace, cfg)

    # Checked: from here on the run writes.
    if note is not None:
        _note(note)
    unread = unread_words(cfg, sections)
    if unread is not None:
        _note(
            f"dreamtext: guidance.textual_inversion ({unread}) is not read: an image run learns "
            "its own words from the image (`dreamtext text` and `text --diverse` read such a file)"
        )
    if overwrite:
        from dreamtext.trainer import remove_earlier_run

        remove_earlier_run(workspace)
        restart_stage(workspace, "train")  # describe's and the descriptor's figures stay
    options = replace(options, descriptor=replace(options.descriptor, seed=cfg.seed, iters=iters))
    learned = learned_embeds_path(workspace)
    if not reused:
        record_config(workspace, cfg, image_path, options, sections)

    record_path = sentence_path(workspace)
    # The copy first, so the viewer's card shows the image through the search (minutes with a
    # real CLIP). Before a sentence nothing was made from an older copy, so it is replaced.
    keep_source_copy(image_path, workspace, replace=not record_path.is_file())
    if reused and not train_words and record_path.is_file():
        # Every stage is done and reused, the image's copy kept: the command's work is complete
        # (a stop while it says so interrupts nothing; it exited 130 "run the same command again").
        work_complete()
    # What the stages' lines that stop them say to run with a setting changed.
    rerun = resume_changed or RERUN
    if record_path.is_file():
        _note(f"describe: reusing {record_path}")
    else:
        describe_options = replace(options.describe, device=str(device))
        # The search keeps to sentences whose descriptor prompt, as Stable Diffusion's tokenizer
        # counts it with its view label, the descriptor can learn: CLIP's 77 tokens let through
        # one that the descriptor refused after the search, the noun's pieces held twice.
        from dreamtext.models import read_tokenizer

        learnable = SentencesToLearn(
            read_tokenizer(cfg.guidance.model),
            cfg.guidance.views.labels if cfg.guidance.view_dependent else (),
        )
        search_memory = out_of_memory_is_a_user_error(
            lambda memory: search_memory_line(memory, cfg, options, rerun)
        )
        with (
            search_memory,
            stage_status(workspace, "describe", device),
            sigterm_interrupts(),
            clip_encoder(describe_options.clip, device, describe_options.batch_size) as clip,
        ):
            sentence = describe(
                image_path, workspace, describe_options, encoder=clip, learnable=learnable
            )
        # The later stages do not use it (a batch's later image lines may: it holds those).
        del clip
        release_clip()
        _note(f"describe: {sentence}")

    if train_words:
        descriptor_memory = out_of_memory_is_a_user_error(
            lambda memory: descriptor_memory_line(memory, cfg, options, rerun)
        )
        with descriptor_memory:
            train_descriptor(
                image_path,
                workspace,
                cfg.guidance,
                options.descriptor,
                str(device),
                rerun=rerun,
            )
    else:
        _note(f"descriptor: reusing {learned}")

    if reused:
        _note(f"text→3D: reusing {last_checkpoint(workspace)}")
        changed = run_setting_changes(workspace, cfg, learned=True)
        if changed:
            _note(
                f"text→3D: the run finished with other settings than these "
                f"({', '.join(changed)}); they are not applied: --overwrite trains text→3D "
                "again with them"
            )
    else:
        record_config(workspace, cfg, image_path, options, sections)
        from dreamtext.trainer import train

        # A run stopped during its export is already at cfg.iters: resuming trains nothing and
        # exports, under status.json like any run, which ends "finished".
        train(
            cfg,
            resume=can_resume(workspace),
            resume_with=resume_with,
            start_again=start_again,
            resume_changed=resume_changed,
        )
    return workspace


def stage_memory_fixes(memory: str, cfg: TrainConfig, batch: str, fp16: bool) -> str:
    """What an image run's describe or descriptor stage that ran out of ``memory`` (``"GPU
    memory"`` or ``"memory"``, the host's) can change, as ``"; free ..., or run RERUN after one
    of: ..."``'s list: the stage's own batch (``batch``, its config key, where it is above 1),
    and the precision flags of :func:`~dreamtext.errors.precision_memory_fixes`: ``--fp16``
    where the stage runs in the run's precision (``fp16``: Stable Diffusion's; CLIP is float32
    whatever the flags), and ``--device cpu``."""
    halve, cpu = precision_memory_fixes(memory, cfg.guidance.fp16 or cfg.guidance.bf16)
    fixes = [halve if fp16 else "", f"a smaller {batch} in a --config" if batch else "", cpu]
    return ", ".join(filter(None, fixes))


def stage_memory_line(stage: str, memory: str, fixes: str, rerun: str) -> str:
    """One line for ``stage`` of an image run out of ``memory``: freeing it, else running
    ``rerun`` (the same command, a batch line's own) after one of ``fixes``. text→3D's render
    settings (``--h/--w``, the samples), which the CLI's line named, are not used there."""
    free = free_memory_fix(memory)
    again = f", or run {rerun} after one of: {fixes}" if fixes else f", then run {rerun}"
    return f"out of {memory} in {stage}; {free}{again}"


def search_memory_line(memory: str, cfg: TrainConfig, options: ImageOptions, rerun: str) -> str:
    """:func:`stage_memory_line` of the sentence search: CLIP (float32) scores
    ``image_to_3d.describe.batch_size`` sentences at a time."""
    size = options.describe.batch_size
    batch = "image_to_3d.describe.batch_size" if size > 1 else ""
    stage = f"the sentence search (CLIP scoring {size} sentences at a time)"
    return stage_memory_line(stage, memory, stage_memory_fixes(memory, cfg, batch, False), rerun)


def descriptor_memory_line(memory: str, cfg: TrainConfig, options: ImageOptions, rerun: str) -> str:
    """:func:`stage_memory_line` of the descriptor training: Stable Diffusion in the run's
    precision, on ``image_to_3d.descriptor.batch_size`` augmented copies of the image at the
    model's own resolution (no setting changes that) a step."""
    size = options.descriptor.batch_size
    batch = "image_to_3d.descriptor.batch_size" if size > 1 else ""
    stage = f"the descriptor training (a batch of {size} at the model's resolution)"
    return stage_memory_line(stage, memory, stage_memory_fixes(memory, cfg, batch, True), rerun)


def unread_words(cfg: TrainConfig, sections: dict[str, Any] | None) -> str | None:
    """The caller's ``guidance.textual_inversion`` file (from ``--config``) that an image run
    does not read, else ``None``.

    The run's text→3D stage reads the words its descriptor learns (:func:`record_config`), so a
    file of the user's (``<my-cat>``) was dropped without a word. A run's own learned file
    (``RUN/descriptor/learned_embeds.safetensors``: this run's on a rerun, or another run's whose
    config.json was passed) is not the user's and needs no note; nor is the file ``--diverse``'s
    sample reads (:func:`sample_words`, recorded in ``sections``): another file on a rerun of a
    run already sampled is read by no stage, and gets the note."""
    given = cfg.guidance.textual_inversion
    sampled = (sections or {}).get("diverse", {}).get("textual_inversion")
    if given is None or (sampled is not None and os.path.abspath(given) == sampled):
        return None
    path = Path(given)
    if path.name == LEARNED_EMBEDS and path.parent.name == "descriptor":
        return None
    return given


def record_config(
    workspace: Path,
    cfg: TrainConfig,
    image_path: Path,
    options: ImageOptions,
    sections: dict[str, Any] | None = None,
) -> None:
    """Write config.json with the ``image_to_3d`` section (and ``sections``); once the descriptor
    is trained, ``cfg``'s prompt and ``guidance.textual_inversion`` become the trained sentence
    and the learned file first (before, the prompt is the name the caller gave, and there is no
    learned file: one a ``--config OTHER_RUN/config.json`` named is that run's, not this one's).
    The file is recorded as an absolute path, as the model folder is: a ``text --config
    RUN/config.json`` from another directory must find it."""
    record = read_record(workspace) or {}
    if "trained_sentence" in record:
        cfg.prompt = record["trained_sentence"]
        cfg.guidance.textual_inversion = os.path.abspath(learned_embeds_path(workspace))
    else:
        cfg.guidance.textual_inversion = None
    # Continued from the run's copy of its image (as the refusal of a moved image says): the
    # run's image stays the one it started from, whose name titles its export, not "source".
    copy, recorded = source_copy(workspace), recorded_image(workspace)
    if copy is not None and recorded is not None and image_path.resolve() == copy.resolve():
        image_path = Path(recorded)
    section = image_section(image_path, options)
    # What the search read or will read of its word lists (the options name their files only):
    # the search's own record once it is done, for a rerun or resume to compare a list with.
    if "sentence" in record:
        if isinstance(record.get("word_lists"), dict):
            section["word_lists"] = record["word_lists"]
    else:
        # A resume before the search ended (or before --diverse's sample): warned here, as this
        # write replaces the record the search would compare its lists with.
        nouns, adjectives = check_options(options.describe)
        warn_changed_word_lists(workspace, options.describe, nouns, adjectives)
        section["word_lists"] = word_lists_record(options.describe, nouns, adjectives)
    extra = {"image_to_3d": section, **(sections or {})}
    write_run_config(workspace, cfg, extra)


def stage_status(workspace: str | Path, phase: str, device: torch.device) -> AbstractContextManager:
    """``status.json`` around a stage without steps of its own (``sample``, ``describe``):
    running in ``phase`` (with its time so far every :data:`HEARTBEAT_SECONDS`), then failed or
    interrupted there, or running on into the next stage."""
    interrupted = (TrainingInterrupted, KeyboardInterrupt)
    return track_status(
        workspace,
        0,
        lambda: 0,
        device,
        interrupted,
        phase,
        finishes=False,
        heartbeat=HEARTBEAT_SECONDS,
    )


def _note(line: str) -> None:
    """A stage's note, on stderr: stdout carries only the workspace, for
    ``ws=$(dreamtext image …)``."""
    say(line)


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
    memory options, the negative prompt and the learned words of its ``textual_inversion``;
    seeded), saved as PNG. The model is the one the image→3D stages reuse."""
    needs_stable_diffusion(guidance.model, "--diverse")
    models = load_for(guidance, device)
    # The words a guidance.textual_inversion file holds (`a photo of <my-cat>`) were read as
    # plain sub-words: the sample is of the prompt as text→3D would read it.
    side = models.text_side(guidance.textual_inversion)
    prompt = expand_tokens(prompt, side.expansions)
    negative = expand_tokens(guidance.negative, side.expansions)
    with torch.no_grad(), models.text_encoder_on_device(side.text_encoder) as text_encoder:
        pipe = models.pipeline(tokenizer=side.tokenizer, text_encoder=text_encoder)
        size = models.resolution
        image = sample_grid(
            pipe, prompt, 1, steps, guidance_scale, seed, size, "diverse image", negative
        )[0]
    out_path = Path(out_path)
    # Through a hidden temp file that a failed write removes: a full disk left
    # diverse/sample_seed0.png.tmp cut short, and its error named no file.
    atomic_write_bytes(out_path, lambda f: image.save(f, format="PNG"))
    return out_path


def diverse_workspace(cfg: TrainConfig, named: bool) -> str:
    """``--diverse``'s workspace: ``cfg.workspace`` when the user ``named`` it (``--workspace``),
    else the default one (``workspace/<prompt slug>``) with a ``_diverse_seed<seed>`` suffix, so
    runs with different seeds (different images, hence different objects) do not collide."""
    if named or cfg.workspace not in (
        "",
        *(str(f) for f in _slug_folders(cfg.prompt, "")),
    ):
        return cfg.workspace
    folder, *earlier = _slug_folders(cfg.prompt, f"_diverse_seed{cfg.seed}")
    if not folder.exists():
        for legacy in earlier:
            if legacy == folder:
                continue
            try:
                recorded = read_stage_sections(legacy).get("diverse", {}).get("prompt")
            except DreamtextError:
                recorded = None
            if same_prompt(recorded, cfg.prompt):
                return str(legacy)  # an earlier version named it so
    return str(folder)


def _slug_folders(prompt: str, suffix: str) -> tuple[Path, Path, Path]:
    """``workspace/<slug><suffix>`` of :func:`slugify`, then of the names earlier versions gave
    the prompt (:func:`earlier_slugs`)."""
    root = DEFAULT_WORKSPACE_ROOT
    return tuple(root / f"{slug}{suffix}" for slug in (slugify(prompt), *earlier_slugs(prompt)))


def diverse_image(workspace: str | Path, seed: int) -> Path:
    """Where ``--diverse`` samples its image: ``W/diverse/sample_seed<seed>.png``."""
    return Path(workspace) / "diverse" / f"sample_seed{seed}.png"


def check_diverse_workspace(workspace: str | Path, cfg: TrainConfig) -> dict | None:
    """:func:`check_image_workspace` for ``--diverse``'s image, and a workspace holding the
    ``--diverse`` run of another prompt or seed (another sampled image) is refused. Returns the
    run's recorded config (the base a rerun resolves over), ``None`` for a new run."""
    workspace = Path(workspace)
    check_writable(workspace, write_elsewhere(workspace, "run the same command"))
    diverse = read_stage_sections(workspace).get("diverse", {})
    recorded, seed = diverse.get("prompt"), diverse.get("seed")
    if recorded is not None and not same_prompt(recorded, cfg.prompt):
        raise DreamtextError(
            f"{workspace} holds the --diverse run of '{recorded}'; pass --workspace NEW_FOLDER "
            f"for '{cfg.prompt}'"
        )
    if recorded is not None and seed is not None and seed != cfg.seed:
        raise DreamtextError(
            f"{workspace} holds the --diverse run of '{recorded}' with --seed {seed} (its sampled "
            f"image); pass --seed {seed} to continue it, or --workspace NEW_FOLDER for --seed "
            f"{cfg.seed}"
        )
    return check_image_workspace(
        workspace, diverse_image(workspace, cfg.seed), f"the --diverse run of '{cfg.prompt}'"
    )


def run_diverse(
    train_cfg: TrainConfig,
    options: ImageOptions | None = None,
    named: bool = False,
    overwrite: bool = False,
    note: str | None = None,
) -> Path:
    """``dreamtext text PROMPT --diverse``: sample an image of the prompt, then image→3D on it.

    The workspace is :func:`diverse_workspace`'s. Before the image is sampled, the workspace, the
    text→3D settings, the describe options and CLIP are checked (:func:`check_stages`) and
    config.json records the run, with the ``diverse`` section (the prompt, seed and sampler).
    ``overwrite``: as :func:`run_image`'s (the sampled image is kept too); ``note`` as
    :func:`run_image`'s, printed once the checks pass.
    """
    options = options or ImageOptions()
    cfg = copy.deepcopy(train_cfg)
    needs_stable_diffusion(cfg.guidance.model, "--diverse")
    cfg.workspace = diverse_workspace(cfg, named)
    workspace = Path(cfg.workspace)
    # The workspace's lock from the checks on (processes.claim_workspace).
    with claim_workspace(workspace), ends_between_stages(workspace):
        return _run_diverse(cfg, options, workspace, overwrite, note)


# ``sample_words`` of a run whose image was sampled before config.json recorded its file.
NOT_RECORDED = object()


def sample_words(workspace: Path, cfg: TrainConfig, image_path: Path) -> str | object | None:
    """The ``guidance.textual_inversion`` file (absolute) whose learned words ``--diverse``'s
    sample reads (``a photo of <my-cat>``), recorded in config.json's ``diverse`` section.

    Once the image is sampled: the file it was sampled with, as recorded (:data:`NOT_RECORDED`
    for a run from before that record). Before: the caller's file (``--config``), else, on a
    rerun typed without it, the one the run recorded (config.json's ``guidance`` holds the
    run's own learned file, or none before the descriptor is trained: not the caller's).
    """
    recorded = (
        read_stage_sections(workspace).get("diverse", {}).get("textual_inversion", NOT_RECORDED)
    )
    if recorded is not None and not isinstance(recorded, str):
        recorded = NOT_RECORDED  # not a file name: config.json edited by hand
    if image_path.is_file():
        return recorded
    given = cfg.guidance.textual_inversion
    if given is not None and Path(given).resolve() == learned_embeds_path(workspace).resolve():
        given = None  # the run's own words, learned from its sample
    if given is not None:
        return os.path.abspath(given)
    return None if recorded is NOT_RECORDED else recorded


def _run_diverse(
    cfg: TrainConfig, options: ImageOptions, workspace: Path, overwrite: bool, note: str | None
) -> Path:
    image_path = diverse_image(workspace, cfg.seed)
    check_diverse_workspace(workspace, cfg)
    words = sample_words(workspace, cfg, image_path)
    section = {
        "diverse": {
            "prompt": cfg.prompt,
            "seed": cfg.seed,
            "sample_steps": options.sample_steps,
            "sample_guidance_scale": options.sample_guidance_scale,
            "image": str(image_path.resolve()),
            **({} if words is NOT_RECORDED else {"textual_inversion": words}),
        }
    }
    if image_path.is_file():
        _note(f"diverse: reusing {image_path}")
    else:
        device = resolve_device(cfg.device)
        # The sample reads the prompt as typed (the stages after it, the learned sentence):
        # one the text encoder would cut off was sampled cut off, without a word. So was a
        # negative prompt that the caller's learned tokens lengthen (check_text_stage counts
        # it without them). Counted by the tokenizer alone, before the models load.
        check_run_lengths(replace(cfg.guidance, textual_inversion=words), cfg.prompt, views=False)
        check_stages(workspace, cfg, options, device, overwrite)
        if note is not None:
            _note(note)
            note = None
        # record_config clears the learned file (the run learns its own words): the sample
        # reads the caller's, which the diverse section keeps.
        sampled_with = replace(cfg.guidance, textual_inversion=words)
        record_config(workspace, cfg, image_path, options, section)
        with stage_status(workspace, "sample", device):
            sample_image(
                cfg.prompt,
                sampled_with,
                cfg.seed,
                image_path,
                str(device),
                options.sample_steps,
                options.sample_guidance_scale,
            )
    return run_image(image_path, options, cfg, overwrite, section, note, DIVERSE_RESUME)
