"""The resolved configuration of a text→3D run, and how presets, YAML files and flags build it.

Precedence, lowest first: dataclass defaults (the thesis's values) → the built-in prior's preset
when ``--model builtin:...`` → ``--preset NAME`` → ``--config FILE`` → explicit command-line flags.
A preset is a YAML file of field overrides; nested sections (``field:``, ``render:``, ``guidance:``,
``cameras:``, ``export_options:``) override fields of the module configs they name.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamtext.adan import ADAN_BETAS
from dreamtext.cameras import CameraRange
from dreamtext.captions import BUILTIN_MODELS
from dreamtext.errors import DreamtextError, print_note
from dreamtext.exportflags import ExportOptions
from dreamtext.field import FieldConfig
from dreamtext.guidance import GuidanceConfig
from dreamtext.inputs import (
    DEFAULT_WORKSPACE_ROOT,
    INT64_MAX,
    SLUG_MAX_BYTES,
    STAGE_KEYS,
    STAGE_RECORDS,
    STAGE_SECTIONS,
    ascii_slug,
    available_presets,
    config_file_stage_sections,
    config_files_list,
    configured_workspace,
    own_config_file,
    owner_value,
    preset_dirs,
    preset_path,
    read_yaml,
    refuse_recorded_presets,
    resumes_line,
    same_prompt,
    slugify,
    stage_sections,
    unknown_field,
)
from dreamtext.processes import is_run_folder
from dreamtext.prompts_text import check_prompt_characters, invisible_characters, shows_nothing
from dreamtext.renderer import RenderConfig
from dreamtext.runfiles import (
    KEPT_KEYS,
    own_learned_embeds,
    prompt_workspace,
    read_config_json,
    read_run_config,
    read_stage_sections,
    run_owner,
)

ITERS_PER_EPOCH = 100
"""Iterations per epoch, as in stable-dreamfusion (the thesis counts epochs)."""


# The largest finite float32 (torch.finfo(torch.float32).max), without importing torch.
FLOAT32_MAX = 3.4028234663852886e38

# The most views a preview strip shows (16× the default): each is a render of the field.
PREVIEW_VIEWS_MAX = 64
# The field's optimisers (TrainConfig.optimizer; dreamtext.factory.build_optimizer).
OPTIMIZERS = ("adam", "adan")

# The finest hash-grid resolution a run takes (field.finest_resolution_factor × field.bound).
FINEST_RESOLUTION_MAX = 2**24


@dataclass
class TrainConfig:
    """Everything a ``dreamtext text`` run needs; defaults follow the thesis."""

    prompt: str = ""
    workspace: str = ""
    seed: int = 0
    device: str = "auto"
    iters: int = 10_000
    lr: float = 1e-3
    # The field's optimiser: adam (β 0.9, 0.99, ε 1e-15, Instant-NGP's), or adan, the one the
    # thesis's Stable-DreamFusion fork trained with by default (dreamtext/adan.py; it took lr 5e-3).
    optimizer: str = "adam"
    h: int = 64
    w: int = 64
    batch_size: int = 1
    # Shading schedule (ch. 6.1.4): albedo only for the first epochs, then random shading.
    albedo_epochs: int = 10
    shading_probs: tuple[float, float, float] = (0.2, 0.4, 0.4)  # albedo, textureless, lambertian
    ambient_ratio: float = 0.1
    # Std of the light position's Gaussian noise around the camera (ch. 6.1.4): 1, the standard
    # normal of the fork's ``rays_o[0] + torch.randn(3)``, whose direction lit every ray of the
    # image alike; here the point lights each ray from where it is (README, "Three choices").
    light_jitter: float = 1.0
    # Regulariser weights (the renderer computes the terms). The thesis gives none; these are
    # those of the Stable-DreamFusion fork it ran (March 2023): entropy 1e-4 on the opacity's
    # entropy in bits, orientation 1e-2, opacity off.
    lambda_entropy: float = 1e-4
    lambda_opacity: float = 0.0
    lambda_orientation: float = 1e-2
    # Weight of loss_density (dreamtext/regularisers.py), a decay of the density at random points
    # of the scene, for density no camera sees (off: the thesis has none).
    lambda_density: float = 0.0
    # Bookkeeping.
    log_every: int = 10
    preview_every: int = 500
    preview_views: int = 4
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3  # last.pt and the 2 step files before it
    export: bool = True
    # Mesh / turntable settings of the export that ends the run (`dreamtext export` flags).
    export_options: ExportOptions = dataclasses.field(default_factory=ExportOptions)
    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    render: RenderConfig = dataclasses.field(default_factory=RenderConfig)
    guidance: GuidanceConfig = dataclasses.field(default_factory=GuidanceConfig)
    cameras: CameraRange = dataclasses.field(default_factory=CameraRange)
    # A record, set by :func:`resolve_config`: the named presets this config was built on, lowest
    # first (the built-in prior's, then ``--preset``'s). A resume fills a setting the run's
    # config.json lacks (one written before the setting existed) from them (:func:`fill_missing`).
    presets: tuple[str, ...] = ()


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass; tuples become lists."""
    return _plain(dataclasses.asdict(cfg))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _coerce(value: Any, hint: Any, where: str, source: str = "") -> Any:
    """Convert a YAML/JSON value to the annotated type (lists → tuples, ints → floats); a value
    of another type is a :class:`DreamtextError` naming the field ``where`` and the file or
    preset ``source`` it came from."""
    name, found_in = f"config field '{where}'", f" (in {source})" if source else ""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, options[0], where, source) if len(options) == 1 else value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise DreamtextError(f"{name} must be a list, got {value!r}{found_in}")
        args = typing.get_args(hint)
        if not args or args[-1] is Ellipsis:
            item = args[0] if args else Any
            return tuple(_coerce(v, item, where, source) for v in value)
        if len(value) != len(args):
            raise DreamtextError(
                f"{name} must be a list of {len(args)} values, got {list(value)}{found_in}"
            )
        return tuple(_coerce(v, item, where, source) for v, item in zip(value, args, strict=True))
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:  # a whole number too large for a float (YAML's 1 and 400 zeros) overflows here
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            shown = (
                value
                if isinstance(value, float)
                else f"a whole number of {len(str(abs(value)))} digits"
            )
            raise DreamtextError(f"{name} must be a finite number, got {shown}{found_in}")
        return number
    # YAML's true / false are ints to Python (bool subclasses int); an int field wants a number.
    wrong_bool = hint is int and isinstance(value, bool)
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or wrong_bool):
        raise DreamtextError(f"{name} must be {hint.__name__}, got {value!r}{found_in}")
    return value


def field_paths(kind: type, prefix: str, key: Any) -> list[str]:
    """The dotted names of the :class:`TrainConfig` fields named ``key`` (``guidance_scale`` →
    ``["guidance.guidance_scale"]``), for a key found in ``kind``, the section at ``prefix``
    (``""`` the top level), where it is no field; ``[]`` for a dataclass outside
    :class:`TrainConfig` (the image stages' options). At the top level an option of an image
    stage is named in its :data:`STAGE_SECTIONS` section (``descriptor`` →
    ``["image_to_3d.descriptor"]``): an ``image --config`` with ``descriptor:`` at the top was
    told the text→3D fields alone."""
    hints = typing.get_type_hints(TrainConfig)
    nested = {name: hint for name, hint in hints.items() if dataclasses.is_dataclass(hint)}
    top = kind is TrainConfig and not prefix
    if not top and nested.get(prefix[:-1]) is not kind:
        return []
    found = [str(key)] if key in {f.name for f in dataclasses.fields(TrainConfig)} else []
    for name, section in nested.items():
        if key in {f.name for f in dataclasses.fields(section)}:
            found.append(f"{name}.{key}")
    if top and key not in STAGE_RECORDS:
        found += [f"{name}.{key}" for name, keys in STAGE_KEYS.items() if key in keys]
    return found


def apply_overrides(cfg: Any, overrides: dict[str, Any], source: str, prefix: str = "") -> None:
    """Set the fields named in ``overrides`` (nested dicts for nested configs) on ``cfg``."""
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    for key, value in overrides.items():
        where = f"{prefix}{key}"
        if key not in names:
            elsewhere = [path for path in field_paths(type(cfg), prefix, key) if path != where]
            offered = set(names)
            if isinstance(cfg, TrainConfig) and key not in STAGE_RECORDS:
                # A config file may hold the stage sections too (read_config_file sets them
                # aside); a record's name (`image`) is not offered the section it is kept in.
                offered |= set(STAGE_SECTIONS)
            raise DreamtextError(
                unknown_field(where, key, sorted(offered), prefix, source, elsewhere)
            )
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise DreamtextError(f"config section '{where}' in {source} must be a mapping")
            apply_overrides(current, value, source, prefix=f"{where}.")
        else:
            setattr(cfg, key, _coerce(value, hints[key], where, source))


def read_resumes(workspace: str | Path) -> list[dict[str, Any]]:
    """The ``resumes`` a workspace's ``config.json`` records (``[]`` for a run never resumed,
    one from before they were recorded, or no config.json)."""
    data = read_config_json(Path(workspace) / "config.json", "delete it or pass --workspace")
    resumes = (data or {}).get("resumes")
    return resumes if isinstance(resumes, list) else []


def read_ran_on(workspace: str | Path) -> dict[str, Any] | None:
    """The ``ran_on`` a workspace's ``config.json`` records: what its latest attempt ran on
    (``None`` for a run from before it was recorded, or no config.json)."""
    data = read_config_json(Path(workspace) / "config.json", "delete it or pass --workspace")
    ran_on = (data or {}).get("ran_on")
    return ran_on if isinstance(ran_on, dict) else None


def read_config_file(path: Path, rerun: bool = True) -> dict[str, Any]:
    """A ``--config`` file's settings. A run's ``config.json`` is one too, so that the run can be
    typed again from it (``--config RUN/config.json``): its :data:`KEPT_KEYS` (what ran, and the
    stages before text→3D) are records, not ``TrainConfig`` fields, and are left out as a
    resume leaves them out (:func:`read_run_config`). A run whose ``resumes`` changed more than
    ``iters`` trained its steps with other settings than its last, which is all this file holds:
    when the file starts a run from step 0 (``rerun``; not a resume, which continues from a
    checkpoint with them) a line on stderr says so. A run's own learned tokens are the file
    beside its config.json (:func:`own_learned_embeds`), and its workspace the folder the
    config.json is in (:func:`is_run_folder`)."""
    data = read_yaml(path)
    sections = stage_sections(data, str(path))
    if sections:  # checked here for every command: `text` runs no image stage to check them
        from dreamtext.imageto3d import check_stage_sections

        check_stage_sections(sections, str(path))
    said = resumes_line(path, data) if rerun else None
    if said is not None:
        print_note(said)
    if path.name != "config.json":
        refuse_recorded_presets(path, data)  # before ran_on, which names a run's record, goes
    data = {key: value for key, value in data.items() if key not in KEPT_KEYS}
    if path.name != "config.json":
        return data
    # The record names its workspace as typed, relative to where the run was started: typed from
    # another directory (or after the folder moved) it named another folder, where --resume
    # found nothing and a new run started. A config.json beside its run names that run's folder.
    if isinstance(data.get("workspace"), str) and is_run_folder(path.parent):
        data["workspace"] = str(path.parent)
    # An older dreamtext's config.json lacks the settings added since: the run had its presets',
    # which it records (``presets``), so a rerun takes them, as a resume does, not the defaults.
    data, _ = fill_from_presets(data)
    return own_learned_embeds(data, path.parent)


def write_run_config(
    workspace: str | Path, cfg: TrainConfig, extra: dict[str, Any] | None = None
) -> None:
    """Write ``W/config.json``: ``cfg``'s fields, then ``extra``'s keys. The :data:`KEPT_KEYS`
    the file already holds (an earlier stage's sections, the backend that ran) are kept unless
    ``extra`` gives them anew."""
    from dreamtext.checkpoint import atomic_write_bytes

    path = Path(workspace) / "config.json"
    earlier = read_config_json(path, "delete it or pass --workspace") or {}
    data = config_to_dict(cfg)
    data.update({key: earlier[key] for key in KEPT_KEYS if key in earlier})
    data.update(extra or {})
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, lambda f: f.write(text.encode("utf-8")))


def builtin_preset_name(model: str) -> str | None:
    """``builtin:shapes`` → ``builtin-shapes`` (the preset that suits that prior); an unknown
    built-in name is a :class:`DreamtextError` listing the known ones."""
    if not model.startswith("builtin:"):
        return None
    if model not in BUILTIN_MODELS:
        raise DreamtextError(
            f"unknown built-in model '{model}'; available: {', '.join(BUILTIN_MODELS)}"
        )
    return "builtin-" + model.split(":", 1)[1]


# What a resumed run cannot change: its random state continues from the checkpoint (``seed``),
# and the checkpoint's tensors have the shapes these settings gave them (the field's architecture,
# the occupancy grid). ``field.encoding`` picks an implementation of the same hash grid.
RESUME_FIXED = ("seed", "optimizer", "field", "render.grid_resolution")
RESUME_FREE = ("field.encoding",)
# How a refusal names a resumed run's own recorded config (the first layer of its settings).
RUN_CONFIG = "the workspace's config.json"


def builtin_preset_on_stable_diffusion(cfg: TrainConfig) -> str | None:
    """A warning for a new run of a Stable Diffusion model built on the built-in prior's preset
    (``--preset builtin-shapes --model SD``, or a built-in run's config.json as ``--config``):
    the model's flag is taken over the preset's, and the preset's settings, tuned for that
    prior, then silently trained Stable Diffusion (guidance 4, 32 px, albedo only); else
    ``None``. ``text`` and ``image`` say it for a new run, ``batch`` once for its lines."""
    if "builtin-shapes" not in cfg.presets or cfg.guidance.model.startswith("builtin:"):
        return None
    return (
        "the preset builtin-shapes is the built-in prior's (32 px, guidance 4, albedo only); "
        f"Stable Diffusion ({cfg.guidance.model}) trains with it under your flags: leave it out "
        "(--preset, or a builtin:shapes run's config.json as --config) for Stable Diffusion's "
        "own defaults"
    )


def resume_conflicts(
    saved: dict[str, Any], cfg: TrainConfig, fixed: tuple[str, ...] = RESUME_FIXED
) -> list[str]:
    """The settings of ``cfg`` that differ from ``saved`` (a run's recorded config) and that a
    resumed run cannot change (``fixed``), as ``"name saved → new"``."""
    before = TrainConfig()
    apply_overrides(before, saved, RUN_CONFIG)
    old, new = flat_fields(config_to_dict(before)), flat_fields(config_to_dict(cfg))
    return [
        f"{name} {old[name]} → {new[name]}"
        for name in old
        if name not in RESUME_FREE
        and any(name == key or name.startswith(key + ".") for key in fixed)
        and old[name] != new[name]
    ]


# Fields of a run's config that do not change what it makes: its name and length (a finished run
# asked for more iterations resumes), whether it exports (a finished run without a mesh asked for
# one resumes to export it), where and how fast it runs, how often it reports. A finished run that
# a batch skips, or that an `image` rerun reuses, gets a warning where its config.json differs in
# any other field.
NOT_COMPARED = frozenset(
    {
        "prompt",
        "workspace",
        "iters",
        "export",
        "device",
        "log_every",
        "preview_every",
        "preview_views",
        "checkpoint_every",
        "keep_checkpoints",
        "field.encoding",
        "render.chunk_size",
        "render.chunk_points",
        "render.backprop",
        "render.grad_chunk_points",
        "render.recompute_field",
        "render.compile_field",
        "guidance.attention_slicing",
        "guidance.vae_slicing",
        "guidance.vae_tiling",
        "guidance.vae_checkpointing",
        "guidance.channels_last",
        "guidance.compile",
        "guidance.compile_vae",
        "guidance.compile_mode",
        "guidance.compile_vae_mode",
        "export_options.device",
    }
)


def changed_settings(saved: dict[str, Any], cfg: TrainConfig) -> dict[str, list[Any]]:
    """The settings of ``cfg`` that differ from ``saved`` (the config a run was trained with: its
    checkpoint's, or its config.json), as ``{"lr": [old, new], "guidance.guidance_scale": [old,
    new]}``: what a resume changed from its step on, which the run's config.json alone would not
    tell, or what a batch would change in a run it skips. Only the settings both have are
    compared: one that ``saved`` lacks (a run of an older dreamtext) has no old value to compare
    (the defaults are not it: the run may have had a preset's), and one that ``cfg`` lacks (a
    setting dreamtext no longer has) no new one."""
    old, new = flat_fields(saved), flat_fields(config_to_dict(cfg))
    return {
        name: [old[name], value]
        for name, value in new.items()
        if name in old and old[name] != value
    }


def setting_change_lines(
    saved: dict[str, Any], cfg: TrainConfig, ignored: frozenset[str] | set[str] = frozenset()
) -> list[str]:
    """:func:`changed_settings` as ``"name old → new"`` lines (:func:`change_lines`), leaving
    out the settings named in ``ignored``."""
    return change_lines(changed_settings(saved, cfg), ignored)


def change_lines(
    changed: dict[str, Any], ignored: frozenset[str] | set[str] = frozenset()
) -> list[str]:
    """``{"lr": [old, new], ...}`` (:func:`changed_settings`, a resume's ``changed``) as
    ``"name old → new"`` lines (each value as JSON, cut to 40 characters), leaving out the
    settings named in ``ignored``."""

    def short(value: Any) -> str:
        text = json.dumps(value)
        return text if len(text) <= 40 else text[:39] + "…"

    return [
        f"{name} {short(old)} → {short(new)}"
        for name, (old, new) in changed.items()
        if name not in ignored
    ]


def run_setting_changes(workspace: Path, cfg: TrainConfig, learned: bool) -> list[str]:
    """``"name old → new"`` for every setting of ``cfg`` that differs from what the run in
    ``workspace`` was trained with (its ``config.json``; none when it has none or it cannot be
    read), leaving out :data:`NOT_COMPARED`, and with ``learned`` (an image run) its learned
    sentence and token, which ``cfg`` holds only once the run has set them. A config.json of an
    older dreamtext is compared with the settings it lacks filled as its resume fills them
    (:func:`fill_from_presets`): ``guidance.views.below null → 90.0`` of a run from before views
    from below had labels changes what it trains, as the resume records."""
    try:
        saved = read_run_config(workspace, "")
    except DreamtextError:  # an unreadable record compares with nothing
        return []
    if saved is None:
        return []
    saved, _ = fill_from_presets(saved)
    ignored = NOT_COMPARED | ({"guidance.textual_inversion"} if learned else set())
    return setting_change_lines(saved, cfg, ignored)


def flat_fields(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{"guidance.guidance_scale": 100.0, ...}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flat_fields(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resolve_config(
    overrides: dict[str, Any],
    preset: str | None = None,
    config_file: str | Path | Sequence[str | Path] | None = None,
    base: dict[str, Any] | None = None,
    new_run: str = "start a new run with --overwrite or --workspace NEW_FOLDER",
    fixed: tuple[str, ...] = RESUME_FIXED,
    kept: str = "a resumed run keeps its seed, optimizer, field and occupancy grid",
) -> TrainConfig:
    """Build the run's ``TrainConfig``.

    ``base`` (a saved ``config.json``, when resuming) replaces the defaults and the built-in
    prior's preset; ``preset``, ``config_file`` (one YAML file or several, each over the one
    before) and then ``overrides`` (the explicit flags, as a nested dict) apply over it, so the
    command that started a run, typed again with ``--resume``, resolves to the same config. A
    resumed run that would change what it cannot (``fixed``, :data:`RESUME_FIXED`) is a
    :class:`DreamtextError` that says why (``kept``) and ends with ``new_run`` (how the command
    starts a new run instead).
    """
    cfg = TrainConfig()
    layers: list[tuple[dict[str, Any], str]] = []
    if preset is not None:
        layers.append((read_yaml(preset_path(preset)), f"preset '{preset}'"))
    for path in config_files_list(config_file):
        layers.append((read_config_file(path, rerun=base is None), str(path)))
    builtin, lacking = None, None
    if base is not None:
        where = overrides.get("workspace") or base.get("workspace", "")
        base, lacking = fill_from_presets(base, where)
        layers.insert(0, (base, RUN_CONFIG))
    else:
        model = overrides.get("guidance", {}).get("model")
        if model is None:
            for data, _ in layers:
                guidance = data.get("guidance")
                if isinstance(guidance, dict):
                    model = guidance.get("model", model)
        # A model that is no string (a section that is no mapping) is apply_overrides' to refuse.
        builtin = builtin_preset_name(
            model if isinstance(model, str) and model else cfg.guidance.model
        )
        if builtin is not None:
            layers.insert(0, (read_yaml(preset_path(builtin)), f"preset '{builtin}'"))
    for data, source in layers:
        apply_overrides(cfg, square(data), source)
    apply_overrides(cfg, square(overrides), "the command line")
    # The built-in prior's preset, --preset's, and those the resumed run (or a run's config.json
    # given as a --config) was built on, in the order their layers applied: fill_from_presets
    # takes a later one over an earlier one, so --preset under a run's config.json counts
    # before that run's presets (it was recorded last), and a name given twice where it applied
    # last.
    names: list[str] = []
    for data, source in layers:
        if source == f"preset '{builtin}'" or source == f"preset '{preset}'":
            names.append(source[len("preset '") : -1])
        else:
            names += data.get("presets") or []
    cfg.presets = tuple(reversed(dict.fromkeys(reversed(names))))
    cfg.guidance.model = absolute_model_folder(cfg.guidance.model)
    # A config file's `workspace: ~/runs/x` (the flags' ~ the CLI expands): a folder named "~".
    cfg.workspace = os.path.expanduser(cfg.workspace)
    export_source = next(
        (
            source
            for data, source in reversed([*layers, (overrides, "the command line")])
            if "export_options" in data
        ),
        "the defaults",
    )
    try:
        validate(
            cfg,
            export_source,
            source_of=lambda key: setting_source(layers, overrides, key),
            new_run=base is None,
        )
    except DreamtextError as error:
        if type(error) is not DreamtextError or base is None:
            raise
        raise DreamtextError(with_resume_fix(str(error), fixed)) from None
    if base is not None:
        changed = resume_conflicts(base, cfg, fixed)
        if changed:
            raise DreamtextError(resume_refusal(changed, new_run, kept))
    if lacking is not None:  # once the config is one the run can resume with
        print_note(lacking)
    if not cfg.workspace:
        key = ("text", cfg.prompt)
        cfg.workspace = str(prompt_workspace(DEFAULT_WORKSPACE_ROOT, cfg.prompt, key))
    return cfg


def with_resume_fix(message: str, fixed: tuple[str, ...] = RESUME_FIXED) -> str:
    """A resumed run's refusal of a value from its own config.json (one from before a bound, or
    an edited file) with the way on: a ``--config`` YAML applies over config.json, so one that
    sets the value in range resumes the run (not for the settings a resume cannot change,
    ``fixed``, which would be refused next)."""
    keys = re.findall(
        r"(?:config field ')?([\w.]+)'? \(in " + re.escape(RUN_CONFIG) + r"\)", message
    )
    if not keys or any(key == f or key.startswith(f + ".") for key in keys for f in fixed):
        return message
    return (
        f"{message}; to resume the run, pass --config with a YAML file that sets "
        f"{' and '.join(dict.fromkeys(keys))} in range (it applies over config.json)"
    )


def recorded_presets(saved: dict[str, Any]) -> list[str] | None:
    """The named presets a run's recorded config was built on: its ``presets`` record, else (a
    config.json from before it was recorded) the built-in prior's preset when its model is one
    (:func:`resolve_config` puts it under every such run), else ``None``: not said."""
    names = saved.get("presets")
    if isinstance(names, list) and all(isinstance(name, str) for name in names):
        return names
    guidance = saved.get("guidance")
    model = guidance.get("model") if isinstance(guidance, dict) and "presets" not in saved else None
    try:
        builtin = builtin_preset_name(model) if isinstance(model, str) else None
    except DreamtextError:
        return None
    return [builtin] if builtin is not None else None


def fill_missing(saved: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """``saved`` with each setting it lacks, and ``layer`` gives, taken from ``layer`` (nested
    sections filled key by key); ``saved``'s own values are kept."""
    out = dict(saved)
    for key, value in layer.items():
        if key not in out:
            out[key] = value
        elif isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = fill_missing(out[key], value)
    return out


# What a run from before each of these settings did, where that is not what its presets or the
# defaults give it today (the other settings, added later, kept the behaviour from before them as
# their default when they came): the dense sampler, the thesis's one "side" label (split_sides
# came with the built-in preset's true), no labels of their own for views from below (off when
# it came; the built-in preset's 90 came three hours later).
BEFORE_SETTINGS: dict[str, Any] = {
    "optimizer": "adam",
    "render": {"sampler": "dense"},
    "guidance": {"views": {"split_sides": False, "below": None}},
}


def fill_from_presets(saved: dict[str, Any], where: str = "") -> tuple[dict[str, Any], str | None]:
    """A resume base (``saved``, the run's config.json, :func:`read_run_config`, or a
    checkpoint's config) with the settings it lacks (it was written by a dreamtext from before
    they existed) taken from the run's own presets (:func:`recorded_presets`), as a new run of
    it would have them, not from the defaults; and ``None``. When the record does not say which
    presets the run had, the settings it lacks keep the defaults, and the second value is the
    line for stderr that names them (``where``: the run's folder). The settings whose arrival
    changed what a run does are known whatever the presets (:data:`BEFORE_SETTINGS`): a run
    from before them had their old behaviour, which its resume and its export (``load_run``)
    both keep."""
    saved = fill_missing(saved, copy.deepcopy(BEFORE_SETTINGS))
    names = recorded_presets(saved)
    layer: dict[str, Any] = {}
    for name in names or []:
        try:
            layer = fill_missing(square(read_yaml(preset_path(name))), layer)
        except DreamtextError:  # a preset this dreamtext no longer has: not said either
            names = None
            break
    if names is not None:
        return fill_missing({**saved, "presets": names}, layer), None
    defaults = flat_fields(config_to_dict(TrainConfig()))
    lacking = [
        name for name in sorted(set(defaults) - set(flat_fields(saved))) if name != "presets"
    ]
    if not lacking:
        return saved, None
    shown = ", ".join(f"{name} {json.dumps(defaults[name])}" for name in lacking)
    return saved, (
        f"dreamtext: {where}'s config.json (an older dreamtext's) has no {', '.join(lacking)} "
        f"and does not say which preset the run had, so it resumes with the defaults ({shown}); "
        "give the run's values with --config FILE if its preset set others"
    )


def square(data: dict[str, Any]) -> dict[str, Any]:
    """A layer of settings that gives one side of the render (``--h 256``, ``h: 96``) gives the
    other too: renders are square (:func:`validate`), so ``--h 256`` means 256 × 256 px."""
    if isinstance(data, dict) and ("h" in data) != ("w" in data):
        side = data["h"] if "h" in data else data["w"]
        return {**data, "h": side, "w": side}
    return data


def absolute_model_folder(model: str) -> str:
    """A ``--model`` that names a folder here, as an absolute path (symlinks kept); anything else
    (a hub id, ``builtin:...``) unchanged. The run records it: a relative folder would not be
    found by a resume or a batch rerun from another directory, and ``models/sd21`` would then be
    taken for a hub id."""
    path = Path(model).expanduser()
    if not model or model.startswith("builtin:") or not path.is_dir():  # "": validate refuses it
        return model
    return os.path.abspath(path)


def resume_refusal(
    changed: list[str],
    new_run: str = "start a new run with --overwrite or --workspace NEW_FOLDER",
    kept: str = "a resumed run keeps its seed, optimizer, field and occupancy grid",
) -> str:
    """The one line that refuses to resume a run with settings it cannot change: ``kept``, what
    the run keeps; ``new_run``, how the command starts a new run instead."""
    return (
        f"{kept}, but these settings differ from the run's: {'; '.join(changed)}; keep the "
        f"run's own (its config.json), or {new_run}"
    )


_UNSET = object()
# The top-level settings that have a flag of their own (the others are config fields only).
FLAGGED = frozenset({"iters", "h", "w", "batch_size", "lr", "seed"})


def setting_source(
    layers: Sequence[tuple[dict[str, Any], str]], overrides: dict[str, Any], key: str
) -> str | None:
    """Where the dotted setting ``key`` (``iters``, ``guidance.fp16``) got its value: "the command
    line", else the source of the last of ``layers`` (a config file, a preset, a resumed run's
    config.json) that sets it; ``None``: no layer does (the default)."""
    for data, source in reversed([*layers, (overrides, "the command line")]):
        section: Any = square(data)
        for part in key.split("."):
            section = section.get(part, _UNSET) if isinstance(section, dict) else _UNSET
        if section is not _UNSET:
            return source
    return None


def from_a_file(source: str | None) -> bool:
    """Whether a setting's ``source`` (:func:`setting_source`) is a file or preset, not the
    command line or the defaults (``None``)."""
    return source is not None and source != "the command line"


def setting_name(key: str, flag: str | None, source: str | None) -> str:
    """How a refusal names the setting ``key``: its ``flag`` where the command line (or the
    defaults) gave it, else ``config field 'KEY' (in SOURCE)``, so that a value from one of
    several ``--config`` files names the file to fix, not a flag the user never typed."""
    if not from_a_file(source):
        return flag or f"config field '{key}'"
    return f"config field '{key}' (in {source})"


def with_its_file(message: str, source_of: Callable[[str], str | None]) -> str:
    """A section's refusal (``field.num_levels must be ...``, from ``FieldConfig.validate`` and
    the like, which know no files) with ``(in FILE)`` after each setting it names, where a
    config file or preset set it: of several ``--config`` files, the one to fix. A refusal of
    two settings (``field.finest_resolution_factor × field.bound ... field.base_resolution``)
    names the file of each, not only of the first."""
    pieces, end, named = [], 0, set()
    for match in re.finditer(r"(?:field|render|guidance|cameras)(?:\.\w+)+'?", message):
        key = match.group(0).rstrip("'")
        source = source_of(key)
        if key in named or not from_a_file(source) or message.startswith(" (in ", match.end()):
            continue
        named.add(key)
        pieces += [message[end : match.end()], f" (in {source})"]
        end = match.end()
    return "".join(pieces) + message[end:]


def validate(
    cfg: TrainConfig,
    export_source: str = "the config",
    source_of: Callable[[str], str | None] = lambda key: None,
    new_run: bool = False,
) -> None:
    """Reject values no run can use, with the flag or config field to fix; ``export_source``
    names where ``export_options`` came from (they are checked before training, not after),
    ``source_of`` where a top-level setting did (:func:`setting_source`). ``new_run``: a seed
    must be one ``--seed`` takes (a resumed run from before that bound keeps its own)."""

    def name(key: str) -> str:
        flag = "--" + key.replace("_", "-") if key in FLAGGED else None
        return setting_name(key, flag, source_of(key))

    if shows_nothing(cfg.prompt):
        hidden = invisible_characters(cfg.prompt)
        only = f" (it holds only invisible characters: {hidden})" if hidden else ""
        raise DreamtextError(
            f'the prompt is empty{only}; give a text prompt, e.g. dreamtext text "a castle"'
        )
    check_prompt_characters(cfg.prompt, "the prompt")
    if not cfg.guidance.model:
        # Path("") is the current folder, which was then refused as no Stable Diffusion folder.
        where = setting_name("guidance.model", "--model", source_of("guidance.model"))
        raise DreamtextError(f"{where} is empty; give it a model id or folder")
    check_prompt_characters(cfg.guidance.negative, "--negative")
    if cfg.guidance.negative.strip() and shows_nothing(cfg.guidance.negative):
        # Pasted with a zero-width space: Stable Diffusion was steered away from its tokens.
        raise DreamtextError(
            "the negative prompt (--negative, guidance.negative) holds only invisible characters "
            f"({invisible_characters(cfg.guidance.negative)}); leave it empty for none, or give "
            "words"
        )
    counts = ("iters", "h", "w", "batch_size", "log_every", "checkpoint_every", "preview_views")
    for key in (*counts, "keep_checkpoints"):
        if getattr(cfg, key) <= 0:
            raise DreamtextError(f"{name(key)} must be a positive integer, got {getattr(cfg, key)}")
    from dreamtext.cli import ITERS_MAX, SEED_MAX  # the flags' bounds (the CLI imports no torch)

    if cfg.iters > ITERS_MAX:
        raise DreamtextError(
            f"{name('iters')} must be at most {ITERS_MAX:,} (two weeks at a GPU's 8 it/s; the "
            f"default is {TrainConfig.iters:,}), got {cfg.iters}"
        )
    # Every preview renders each of its views, one after the other, into one strip of
    # preview_views × w pixels: 100,000,000 views ran for ever. The export's turntable is the
    # way to see the object from every side.
    if cfg.preview_views > PREVIEW_VIEWS_MAX:
        raise DreamtextError(
            f"{name('preview_views')} must be at most {PREVIEW_VIEWS_MAX} (each preview renders "
            f"every view; the default is {TrainConfig.preview_views}), got {cfg.preview_views}"
        )
    if cfg.h != cfg.w:
        # The priors see every render at their square native size (Stable Diffusion's 512 px,
        # the built-in prior's 64 px): a non-square one would reach them stretched.
        raise DreamtextError(
            f"{name('h')} and {name('w')} must be equal (--h alone sets both): the diffusion "
            f"model sees the render resized to its square native size, so a {cfg.w}×{cfg.h} "
            f"render would be stretched; got {cfg.h} and {cfg.w}"
        )
    if cfg.lr <= 0:
        raise DreamtextError(f"{name('lr')} must be positive, got {cfg.lr}")
    if cfg.optimizer not in OPTIMIZERS:
        raise DreamtextError(
            f"{name('optimizer')} must be one of {', '.join(OPTIMIZERS)}, got {cfg.optimizer!r}"
        )
    # Adam's first step is lr / (1 - β1) = 10 lr, Adan's 50 lr (the hash table's
    # encoding_lr_scale times that), taken in float32: past its largest value torch raised
    # mid-run (a traceback).
    adan = cfg.optimizer == "adan"
    first_step = 1.0 / (1.0 - ADAN_BETAS[0]) if adan else 10.0
    lr_max = FLOAT32_MAX / first_step / max(1.0, cfg.field.encoding_lr_scale)
    if cfg.lr > lr_max:
        raise DreamtextError(
            f"{name('lr')} is too large ({cfg.lr:g}): {'Adan' if adan else 'Adam'}'s steps "
            f"would overflow float32 above {lr_max:.3g}; the default is {TrainConfig.lr:g}"
        )
    # torch.manual_seed takes -2^63 to 2^64 - 1; a seed past that was a torch traceback once
    # the run had started. Negative seeds and seeds past SEED_MAX are refused by --seed and in a
    # new run's config files, but runs made before that still resume with theirs (the trainer's
    # largest seed is seed + 2).
    low, high = (0, SEED_MAX) if new_run else (-(2**63), 2**64 - 3)
    if not low <= cfg.seed <= high:
        where = setting_name("seed", None, source_of("seed"))
        raise DreamtextError(f"{where} must be from {low} to {high}, got {cfg.seed}")
    # Counts and sizes reach torch as 64-bit integers: `render.num_steps: 1e30` written out (a
    # YAML int) was a traceback once the run had started. The seed has its own range, above.
    for key, value in flat_fields(config_to_dict(cfg)).items():
        huge = isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64_MAX
        if huge and key != "seed":
            flag = "--" + key.replace("_", "-") if key in FLAGGED else None
            raise DreamtextError(
                f"{setting_name(key, flag, source_of(key))} must fit a 64-bit integer "
                f"(±{INT64_MAX:,}), got a whole number of {len(str(abs(value)))} digits"
            )
    # The hash grid sees float32 positions, whose 24-bit significand tells at most 2^24 cells
    # apart along an axis: a finer grid is no finer. Far past it (field.bound 1e30) the grid's
    # int64 resolutions overflowed, a traceback once the run had started.
    finest = cfg.field.finest_resolution_factor * cfg.field.bound
    if not finest <= FINEST_RESOLUTION_MAX:
        factor, bound = "field.finest_resolution_factor", "field.bound"
        raise DreamtextError(
            f"the finest hash-grid resolution, {setting_name(factor, None, source_of(factor))} × "
            f"{setting_name(bound, None, source_of(bound))} "
            f"({cfg.field.finest_resolution_factor:g} × {cfg.field.bound:g}), must be at most "
            f"{FINEST_RESOLUTION_MAX:,} (2^24: the grid's float32 positions tell no finer cells "
            "apart)"
        )  # no default quoted: builtin-shapes' factor is not FieldConfig's
    try:
        cfg.render.validate()
        cfg.field.validate()
        cfg.guidance.validate()
        validate_cameras(cfg.cameras)
    except DreamtextError as error:
        if type(error) is not DreamtextError:
            raise
        raise DreamtextError(with_its_file(str(error), source_of)) from None
    # Every camera is at most radius_range's upper end from the centre, and the field's box
    # reaches √3 × bound beyond that: a near plane past it (render.min_near: 100) left every
    # ray without a sample, and the run trained nothing to the end, without a word.
    reach = cfg.cameras.radius_range[1] + math.sqrt(3.0) * cfg.field.bound
    if cfg.render.min_near >= reach:
        near, radius = "render.min_near", "cameras.radius_range"
        raise DreamtextError(
            f"{setting_name(near, None, source_of(near))} is {cfg.render.min_near:g}, past the "
            f"whole scene: every camera is within {cfg.cameras.radius_range[1]:g} of its centre, "
            f"by {setting_name(radius, None, source_of(radius))}, and the field's box reaches "
            f"{math.sqrt(3.0) * cfg.field.bound:.3g} beyond that (√3 × field.bound), so no ray "
            f"would take a sample; make it less than {reach:.3g} (the default is "
            f"{RenderConfig.min_near:g})"
        )
    cfg.export_options.validate(export_source, source_of)
    if cfg.guidance.textual_inversion and cfg.guidance.model in BUILTIN_MODELS:
        # It was recorded and never read: its tokens go into Stable Diffusion's text encoder.
        raise DreamtextError(
            with_its_file(
                "guidance.textual_inversion is for a Stable Diffusion model's text encoder; "
                f"{cfg.guidance.model} has none: leave it out",
                source_of,
            )
        )
    if cfg.cameras.jitter > 0 and cfg.guidance.model in BUILTIN_MODELS:
        # A jittered eye leaves the camera range the prior renders its images for: a camera
        # above polar_range's top was an "overhead" view it had none of, which stopped the run.
        raise DreamtextError(
            with_its_file(
                f"cameras.jitter moves cameras off the range {cfg.guidance.model} renders its "
                "images for, and the run would stop at the first such view: set cameras.jitter "
                "to 0 (its preset's), or widen cameras.polar_range instead",
                source_of,
            )
        )
    t_min, t_max = cfg.guidance.t_range
    if not 0.0 <= t_min < t_max <= 1.0:
        raise DreamtextError(
            with_its_file(
                f"guidance.t_range must satisfy 0 ≤ t_min < t_max ≤ 1, got {cfg.guidance.t_range}",
                source_of,
            )
        )
    probs = cfg.shading_probs
    if len(probs) != 3 or not all(p >= 0.0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
        raise DreamtextError(
            f"{name('shading_probs')} must be three probabilities (albedo, textureless, "
            f"lambertian), each ≥ 0, summing to 1, got {cfg.shading_probs}"
        )
    # Weights and counts a run multiplies or counts with: below 0 they train the opposite way
    # (a negative regulariser rewards what it should punish) or mean nothing.
    if cfg.albedo_epochs < 0:
        raise DreamtextError(
            f"{name('albedo_epochs')} must be ≥ 0 (0: shading from the start), got "
            f"{cfg.albedo_epochs}"
        )
    if not 0.0 <= cfg.ambient_ratio <= 1.0:
        raise DreamtextError(
            f"{name('ambient_ratio')} must be in [0, 1] (the share of unlit colour in a "
            f"shaded render), got {cfg.ambient_ratio:g}"
        )
    lambdas = ("lambda_entropy", "lambda_opacity", "lambda_orientation", "lambda_density")
    for key in ("light_jitter", *lambdas):
        if not getattr(cfg, key) >= 0.0:
            raise DreamtextError(f"{name(key)} must be ≥ 0, got {getattr(cfg, key):g}")
    # Adam checks only its default lr, not a group's: below 0 the hash table trained away from
    # the prior (gradient ascent) without a word. Checked here, for training: an export of a
    # run that trained so still loads its field.
    if not cfg.field.encoding_lr_scale >= 0.0:
        raise DreamtextError(
            with_its_file(
                "field.encoding_lr_scale must be ≥ 0 (the hash table trains at lr × it; below 0 "
                f"it would climb the loss), got {cfg.field.encoding_lr_scale:g}",
                source_of,
            )
        )


def validate_cameras(cameras: CameraRange) -> None:
    """Each ``cameras.*_range`` is ``[low, high]`` with low ≤ high, inside what a camera can be:
    a radius above 0, a vertical field of view in (0°, 180°), a polar angle in [0°, 180°];
    ``box_fraction`` in [0, 1] and ``jitter`` ≥ 0."""
    limits = {
        "radius_range": (0.0, math.inf, False),
        "fovy_range": (0.0, 180.0, False),
        "polar_range": (0.0, 180.0, True),
        "azimuth_range": (-math.inf, math.inf, True),
    }
    # A share and a distance: a percentage (box_fraction 50) put every camera in the box, and
    # a negative jitter meant none, both without a word.
    if not 0.0 <= cameras.box_fraction <= 1.0:
        raise DreamtextError(
            "config field 'cameras.box_fraction' must be in [0, 1] (the share of cameras drawn "
            f"from the box), got {cameras.box_fraction:g}"
        )
    if not cameras.jitter >= 0.0:
        raise DreamtextError(
            f"config field 'cameras.jitter' must be ≥ 0 (world units), got {cameras.jitter:g}"
        )
    for name, (low, high, closed) in limits.items():
        a, b = getattr(cameras, name)
        inside = (low <= a and b <= high) if closed else (low < a and b < high)
        if not (a <= b and inside):
            bounds = f"[{low:g}, {high:g}]" if closed else f"({low:g}, {high:g})"
            raise DreamtextError(
                f"config field 'cameras.{name}' must be [low, high] with low ≤ high in "
                f"{bounds}, got {[a, b]}"
            )


__all__ = [
    "DEFAULT_WORKSPACE_ROOT",
    "ITERS_PER_EPOCH",
    "NOT_COMPARED",
    "SLUG_MAX_BYTES",
    "STAGE_SECTIONS",
    "TrainConfig",
    "apply_overrides",
    "ascii_slug",
    "available_presets",
    "change_lines",
    "changed_settings",
    "config_file_stage_sections",
    "config_files_list",
    "config_to_dict",
    "configured_workspace",
    "flat_fields",
    "own_config_file",
    "own_learned_embeds",
    "owner_value",
    "preset_dirs",
    "preset_path",
    "prompt_workspace",
    "read_config_file",
    "read_ran_on",
    "read_resumes",
    "read_run_config",
    "read_stage_sections",
    "read_yaml",
    "resolve_config",
    "resume_conflicts",
    "resume_refusal",
    "run_owner",
    "run_setting_changes",
    "same_prompt",
    "setting_change_lines",
    "slugify",
    "write_run_config",
]
