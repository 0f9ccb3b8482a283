"""`dreamtext export`: a trained field → textured GLB / OBJ / PLY files and a turntable video.

    field ──► mesh (occupancy, marching cubes, decimation, UV atlas, CPU texture bake) ──► W/mesh/
    field ──► renderer (orbit of cameras: RGB | depth) ──► W/video/turntable.mp4, turntable.gif

Everything runs on the CPU; a GPU only speeds up the field queries. Every output is computed in
memory first, written into a hidden staging folder of W, and mesh/ and video/ are then each
swapped for their new copy by renames (:func:`write_all_atomically`): an error leaves no empty or
half-written file behind, and a kill at any moment leaves each folder's old files or its new
ones, never a mix (the next export finishes a swap a kill cut short).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fnmatch
import glob
import io
import json
import logging
import math
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import trimesh
from PIL import Image

from dreamtext import __version__
from dreamtext.cameras import CameraRange, Poses, orbit_poses
from dreamtext.checkpoint import (
    UnreadableCheckpoint,
    check_checkpoint_files,
    check_writable,
    checkpoint_dir,
    checkpoint_run,
    file_mode,
    go_on_from,
    last_checkpoint,
    naming_the_file,
    newest_whole_step,
    read_run_checkpoint,
    remove_stale_temps,
    run_from_state,
)
from dreamtext.devices import (
    cpu_threads_record,
    describe_device,
    out_of_memory_is_a_user_error,
    resolve_device,
    software_versions,
)
from dreamtext.errors import (
    UNREADABLE_JSON,
    DreamtextError,
    check_a_file,
    copy_file,
    run_command,
    shell_word,
)
from dreamtext.exportflags import FORMATS, ExportOptions
from dreamtext.exportprogress import ExportProgress
from dreamtext.inputs import RUN_LEARNED_EMBEDS, same_prompt, slugify
from dreamtext.interrupts import more_work, raise_if_stop_requested, rename_completing_work
from dreamtext.latestrun import newest_run, runs_in
from dreamtext.mesh import (
    SURFACE_TRANSMITTANCE,
    DivergedDensity,
    MeshStats,
    bake_texture,
    decimate,
    extract_mesh,
    field_device,
    mesh_stats,
    query_surface_albedo,
    unwrap_uv,
)
from dreamtext.processes import (
    ELSEWHERE_GRACE_S,
    HOST,
    file_age,
    lock_folder,
    locks_reach_every_writer,
    on_this_machine,
    outermost_run,
    record_alive,
    record_held,
    this_process,
    write_held_record,
)
from dreamtext.progress import bar_options, tqdm
from dreamtext.prompts_text import first_undecoded_byte
from dreamtext.renderer import RenderConfig, VolumeRenderer, renders_finite
from dreamtext.runfiles import (
    default_workspace,
    read_record,
    recorded_image,
    recorded_settings,
    same_image,
    sentence_path,
    source_copy,
)
from dreamtext.runstatus import now_iso

log = logging.getLogger(__name__)

VIDEO_FPS = 30
VIDEO_CRF = 10  # H.264's constant rate factor: 0 lossless … 51 worst; 10 keeps fine texture
# The turntable's colours: RGB → YUV with the BT.601 matrix in TV range, and the stream tagged so
# (matrix, primaries and transfer: SMPTE 170M). An untagged stream leaves players to guess, and
# they guess by size: Chromium decodes one 720 rows or taller as BT.709, a red (223, 38, 38)
# shown as (239, 56, 37). Tagged BT.709 instead, Chromium converts its transfer to sRGB and
# shifts colours by up to 10 levels at any size; tagged SMPTE 170M they come back within 2.
VIDEO_COLOURS = (
    "scale=out_color_matrix=bt601:out_range=tv,format=yuv420p,"
    "setparams=range=tv:colorspace=smpte170m:color_primaries=smpte170m:color_trc=smpte170m"
)
FRAMES_PER_CHUNK = 4
TURNTABLE_POLAR = 75.0
TURNTABLE_FOVY = 55.0
# The turntable's distance, brought into the run's training cameras' radius range (the default
# U[1.0, 1.5] holds it; builtin:shapes' 1.8 and a config's [2.5, 3.5] for a larger bound do not:
# from 1.3 the object filled the frame, from inside its scene cube).
TURNTABLE_RADIUS = 1.3
# The object's bounding sphere spans this fraction of the turntable's field of view.
TURNTABLE_FILL = 0.9
# Peak host memory of an export per grid cell (density, optical depths, the clamped and padded
# copies marching cubes takes: 31 B measured at 128^3 to 384^3) and per texel of the texture
# (UV raster, barycentric coordinates, bake points, dilation: 158 B measured at 2048^2), with
# `/usr/bin/time -v dreamtext export` on a builtin:shapes run; rounded up.
BYTES_PER_CELL = 32
BYTES_PER_TEXEL = 170
# And per pixel of the turntable's frames (frames × video_size², the RGB half): the RGB kept as
# bytes, depth and opacity as float32 until the depth panel's range is known, the frames and
# the GIF's (28-31 B measured at 256 and 512 px, 60 frames, benchmarks/RESULTS.md "Stop 62").
BYTES_PER_TURNTABLE_PIXEL = 32
# What an export writes into mesh/ (the formats, mesh.json, the texture) and video/, by name:
# a user's own `mesh.stl` or `mesh.blend` beside them (a mesh editor's "save as" keeps the
# name), or a `turntable.webm` made from the MP4, is not an export's to drop.
MESH_OUTPUTS = ("mesh.glb", "mesh.obj", "mesh.mtl", "mesh.ply", "mesh.json", "albedo.png")
VIDEO_OUTPUTS = ("turntable.mp4", "turntable.gif")
# What of an earlier export's mesh/ and video/ the next export drops (the rest, a user's own
# files, it keeps): its outputs, and the hidden temp files of the versions that wrote them into
# these folders (``.mesh.k2j4x9ab.glb``).
REPLACED_OUTPUTS = (*MESH_OUTPUTS, *VIDEO_OUTPUTS, ".mesh.*", ".albedo.*", ".turntable.*")
# The libraries that shape an export's mesh and texture, beside torch (the field): numpy and
# scipy (the solid, its parts), PyMCubes (marching cubes), fast-simplification (decimation),
# xatlas (the UV atlas) and trimesh (the repair, the files). mesh.json's ``ran_on`` records
# their versions: another version of one can make another mesh of the same checkpoint.
MESH_LIBRARIES = ("numpy", "scipy", "PyMCubes", "fast-simplification", "xatlas", "trimesh")


@dataclass
class ExportResult:
    """What was written: ``files`` maps a kind (glb, obj, mtl, texture, ply, json, mp4, gif) to a
    path; ``stats`` measures the mesh (:class:`dreamtext.mesh.MeshStats`).

    ``threshold`` is the density iso-level that was given, ``None`` when the surface is where
    light from outside falls to transmittance ½ (the default). ``textured_vertices`` counts the
    GLB / OBJ vertices, UV seams split (0 when neither was written). ``step`` is the training
    step of the checkpoint the field came from (``None`` for a field of no run), ``options``
    the export options that made the files, their device the one that ran. ``turntable_step``
    is the step of the turntable in ``video/`` after the export (``None``: there is none, or
    it is of a field of no run): ``step`` when the export made one or a ``--no-video`` export
    kept the one of its own step, :func:`_turntable_is_of`. ``ran_on`` is what made the files
    (:func:`export_ran_on`; ``None`` where it is not known).
    """

    out_dir: Path
    files: dict[str, Path]
    stats: MeshStats
    threshold: float | None
    resolution: int
    dropped_components: int
    faces_before_decimation: int
    textured_vertices: int = 0
    frames: int = 0
    step: int | None = None
    options: ExportOptions | None = None
    turntable_step: int | None = None
    ran_on: dict[str, Any] | None = None

    @property
    def threshold_is_auto(self) -> bool:
        return self.threshold is None

    def report(self) -> dict[str, Any]:
        """The contents of ``mesh/mesh.json``."""
        # config imports every module's config: only loaded where needed, as resolve_workspace.
        from dreamtext.config import config_to_dict

        return {
            **dataclasses.asdict(self.stats),
            "threshold": self.threshold,
            "threshold_is_auto": self.threshold_is_auto,
            "surface": "transmittance" if self.threshold_is_auto else "density",
            "transmittance": SURFACE_TRANSMITTANCE if self.threshold_is_auto else None,
            "resolution": self.resolution,
            "smoothing": 0.0,
            "dropped_components": self.dropped_components,
            "faces_before_decimation": self.faces_before_decimation,
            "textured_vertices": self.textured_vertices,
            "step": self.step,
            "turntable_step": self.turntable_step,
            "options": None if self.options is None else config_to_dict(self.options),
            "ran_on": self.ran_on,
        }

    def summary(self) -> str:
        s = self.stats
        at = f" (step {self.step})" if self.step is not None else ""
        parts = "component" if s.components == 1 else "components"
        closed = ", ".join(
            [
                "watertight" if s.watertight else "NOT watertight",
                "manifold" if s.manifold else "NOT manifold",
            ]
        )
        if self.threshold_is_auto:
            surface = f"where light from outside falls to transmittance {SURFACE_TRANSMITTANCE:g}"
        else:
            surface = f"density threshold {self.threshold:.4g} (given), cavities filled"
        n = self.dropped_components
        crumbs = f", {n} crumb{'s' if n > 1 else ''} dropped" if n else ""
        lines = [
            f"exported {self.out_dir}{at}: {s.faces} faces, {s.vertices} vertices, "
            f"{s.components} {parts}, {closed}",
            f"  surface {surface}; {self.resolution}^3 grid{crumbs}",
            f"  volume {s.volume:.4g}, IoU with the field's occupancy {s.iou_field:.3f}",
        ]
        lines += [f"  {kind:8s}{path}" for kind, path in self.files.items()]
        return "\n".join(lines)


def export_ran_on(device: torch.device) -> dict[str, Any]:
    """What an export makes its files with, as a run's ``config.json`` records what trained it
    (its ``ran_on``): the device of the field (and what it is), the CPU threads, and the
    software versions with those of the mesh libraries (:data:`MESH_LIBRARIES`). A later
    export replaces ``mesh.json``, and its record with it."""
    return {
        "device": str(device),
        "device_name": describe_device(device),
        **cpu_threads_record(),
        "versions": software_versions(MESH_LIBRARIES),
    }


def stage_memory(options: ExportOptions) -> dict[str, int]:
    """Bytes of host memory each stage of an export with ``options`` needs at its peak, about:
    ``mesh`` ``c R³``, ``texture`` ``R³ + t S²`` (only when a GLB or OBJ is written; the
    occupancy, one byte a cell, stays for the texture bake) and ``turntable`` ``v F V²`` (only
    with a video), with ``c = BYTES_PER_CELL``, ``t = BYTES_PER_TEXEL``, ``v =
    BYTES_PER_TURNTABLE_PIXEL``, ``R`` the grid's resolution, ``S`` the texture's size, ``F``
    the frames and ``V`` the video's size."""
    cells = options.resolution**3
    texels = options.texture_size**2 if {"glb", "obj"} & set(options.formats) else 0
    pixels = options.frames * options.video_size**2 if options.video else 0
    return {
        "mesh": BYTES_PER_CELL * cells,
        "texture": cells + BYTES_PER_TEXEL * texels,
        "turntable": BYTES_PER_TURNTABLE_PIXEL * pixels,
    }


def export_memory(options: ExportOptions) -> int:
    """Bytes of host memory an export with ``options`` needs at its peak, about: its stages run
    one after the other, so the largest of :func:`stage_memory`."""
    return max(stage_memory(options).values())


def available_memory() -> int | None:
    """Bytes of memory the system can give a new allocation without swapping (Linux's
    ``MemAvailable``; on macOS, which has no ``/proc``, :func:`macos_available_memory`), or
    ``None`` where it does not say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return macos_available_memory() if sys.platform == "darwin" else None


def macos_available_memory() -> int | None:
    """macOS's free, speculative and inactive pages, as ``vm_stat`` counts them (psutil's
    ``available`` there: vm_stat's "Pages free" leaves out the speculative pages that the
    kernel's free count, and psutil's, holds), in bytes; ``None`` where ``vm_stat`` does not
    answer."""
    try:
        report = subprocess.run(
            ["vm_stat"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
        page = int(re.search(r"page size of (\d+) bytes", report).group(1))
        pages = {
            name: int(count)
            for name, count in re.findall(
                r"^Pages (free|speculative|inactive):\s+(\d+)\.?$", report, re.M
            )
        }
        return (pages["free"] + pages.get("speculative", 0) + pages["inactive"]) * page
    except (OSError, subprocess.SubprocessError, AttributeError, KeyError, ValueError):
        return None


def check_memory(options: ExportOptions, after_training: bool = False) -> None:
    """Raise ``DreamtextError`` naming the settings to lower when the export would need more
    memory than is available (:func:`export_memory`), instead of being killed by the system
    after minutes of work. ``after_training``: the export that ends a training run, checked
    before the training (its settings are ``export_options`` fields, not flags)."""
    stages = stage_memory(options)
    stage = max(stages, key=stages.__getitem__)  # the largest: export_memory's
    need, available = stages[stage], available_memory()
    if available is None or need <= available:
        return
    if after_training:
        fields = {"turntable": "video_size or frames"}.get(stage, "resolution or texture_size")
        what = (
            f"the export after training (export_options.resolution {options.resolution}, "
            f"texture_size {options.texture_size}, video_size {options.video_size}, frames "
            f"{options.frames})"
        )
        fix = (
            f"lower export_options.{fields} in a --config, or pass --no-export "
            "and export later with `dreamtext export` on a larger machine"
        )
    elif stage == "turntable":
        what = f"a turntable of {options.frames} frames at {options.video_size} px"
        fix = (
            "lower --video-size (half of it needs a quarter of the memory) or --frames, or "
            "pass --no-video"
        )
    else:
        what = (
            f"an export at --resolution {options.resolution} with a {options.texture_size} px "
            "texture"
        )
        fix = "lower --resolution (half of it needs an eighth of the memory) or --texture-size"
    raise DreamtextError(
        f"{what} needs about {format_gigabytes(need)} of memory and "
        f"{format_gigabytes(available)} is available: {fix}"
    )


def format_gigabytes(size: int | float) -> str:
    """``size`` bytes for a message: ``34.4 GB``; from 1,000 GB on whole, with thousands
    separators (``--resolution 100000`` needs ``32,000,000 GB``, not ``32000000.0 GB``); below
    0.05 GB, which would show as ``0.0 GB`` (a GPU with 30 MB left), in whole megabytes, and
    below 1 MB in whole kilobytes (a tiny field's optimiser state)."""
    gigabytes = size / 1e9
    if gigabytes < 0.05:
        return f"{size / 1e6:.0f} MB" if round(size / 1e6) >= 1 else f"{size / 1e3:.0f} kB"
    # Tested once rounded: 999.96 GB was "1000.0 GB".
    return f"{gigabytes:.1f} GB" if round(gigabytes, 1) < 1000 else f"{gigabytes:,.0f} GB"


def find_latest_workspace(root: Path) -> Path:
    """The newest run under ``root`` (:func:`dreamtext.latestrun.newest_run`), a run without
    ``last.pt`` by its newest whole step file (:func:`~dreamtext.checkpoint.newest_whole_step`)."""
    return newest_run(root, newest_whole_step)


def resolve_workspace(workspace: Path | None, newest: Path | None = None) -> Path:
    """The run to export: ``workspace``, or the newest run under ``workspace/`` when ``None``
    (``newest``, where the caller found it already: :func:`dreamtext.latestrun.newest_run_unread`).
    Raises ``DreamtextError`` when it has no checkpoint (naming the process that trains it,
    when one does)."""
    if workspace is None:
        # config imports every module's config (diffusers included): only load it when needed.
        from dreamtext.config import DEFAULT_WORKSPACE_ROOT

        workspace = newest or find_latest_workspace(DEFAULT_WORKSPACE_ROOT)
        stray = first_undecoded_byte(str(workspace))
        if stray is not None:
            # --workspace is refused so by the CLI; torch cannot open a checkpoint named so,
            # and this export failed after meshing, calling the whole last.pt unreadable.
            shown = os.fsencode(workspace).decode("utf-8", "backslashreplace")
            raise DreamtextError(
                f"the most recent run, {shown}, is in a folder whose name holds a byte that is "
                f"not UTF-8 text (0x{stray[1]:02X}); rename the folder to a name in UTF-8, or "
                "pass --workspace to export another run"
            )
        log.info("exporting the most recent run: %s", workspace)
    workspace = Path(workspace)
    # A folder or file inside a run (its descriptor/, whose checkpoint is the descriptor's, not a
    # field's: "delete it to start over" was the line; its config.json) names the run.
    outer = outermost_run(workspace)
    if outer is not None:
        what = "a file of" if workspace.is_file() else "inside"
        raise DreamtextError(f"{workspace} is {what} the run in {outer}: pass --workspace {outer}")
    check_checkpoint_files(workspace, steps=False)  # an export reads none of them
    if not last_checkpoint(workspace).is_file():
        from dreamtext.processes import process_name
        from dreamtext.runstatus import live_run

        training = live_run(workspace)
        phase = (training[1] or {}).get("phase") if training is not None else None
        if phase in ("sample", "describe", "descriptor"):  # image→3D before its text→3D stage
            # "saves one every checkpoint_every steps" sent the user to wait on a sentence
            # search (`describe` alone never trains a field) or a descriptor's own checkpoints.
            raise DreamtextError(
                f"{workspace} has no checkpoint yet: {process_name(training[0])} is in its {phase} "
                "stage, before text→3D trains the field (`dreamtext image` goes on to it); "
                "export once text→3D has saved a checkpoint"
            )
        if training is not None:  # a run before its first checkpoint
            raise DreamtextError(
                f"{workspace} has no checkpoint yet: {process_name(training[0])} is training it "
                "and saves one every checkpoint_every steps; export once it has"
            )
        # A mistyped path and a folder of runs (workspace/ itself, a batch's root) are the
        # likely mistakes here: "train first" would send the user to train what they have.
        if not workspace.exists():
            raise DreamtextError(
                f"no such folder: {workspace}; pass --workspace the folder of a trained run "
                "(the one that holds checkpoints/)"
            )
        if not workspace.is_dir():
            raise DreamtextError(not_a_run_folder(workspace))
        # Its step files, where last.pt was deleted or a copy or sync cut short: "train first"
        # sent the user to a new run, which deletes them.
        whole = newest_whole_step(checkpoint_dir(workspace))
        if whole is not None:
            raise DreamtextError(f"{last_checkpoint(workspace)} is missing; {go_on_from(*whole)}")
        runs = runs_in(workspace)
        if runs:
            newest = max(runs, key=lambda run: run[0])[1]
            raise DreamtextError(
                f"{workspace} holds {len(runs)} run{'s' if len(runs) > 1 else ''}, not one: "
                f"pass --workspace one run's folder, such as {newest} (the newest)"
            )
        if sentence_path(workspace).parent.is_dir():  # descriptor/: describe has run in it
            # `describe`'s folder, or an image run stopped before text→3D: "dreamtext text
            # PROMPT" would start another run beside it instead of going on with this one.
            raise DreamtextError(
                f"no checkpoint at {last_checkpoint(workspace)}: {workspace} is an image→3D run "
                "that has not started text→3D; go on with `dreamtext image IMAGE` (its image)"
            )
        if (workspace / "config.json").is_file():  # a run stopped before its first checkpoint
            raise DreamtextError(
                f"no checkpoint at {last_checkpoint(workspace)}: train first with "
                "`dreamtext text PROMPT` (or pass the --workspace of a trained run)"
            )
        raise DreamtextError(not_a_run_line(workspace))
    return workspace


def not_a_run_line(folder: Path) -> str:
    """The line for ``export --workspace FOLDER`` where FOLDER holds no run and no runs:
    what is missing and what to run (``export --workspace .`` in an empty folder said only "no
    checkpoint at checkpoints/last.pt"). ``.`` and ``..`` are named by their full path."""
    from dreamtext.config import DEFAULT_WORKSPACE_ROOT

    shown = f"{folder} ({folder.resolve()})" if folder.name in ("", "..") else str(folder)
    return (
        f"{shown} is not a dreamtext run: it has no config.json and no checkpoints/last.pt; "
        "make a run with `dreamtext text PROMPT` or `dreamtext image IMAGE`, then pass "
        f"--workspace its folder (they go under {DEFAULT_WORKSPACE_ROOT}/; `dreamtext export` "
        "alone exports the newest there)"
    )


def not_a_run_folder(path: Path) -> str:
    """The line for ``export --workspace PATH`` where PATH is a file outside any run: an image
    (``mug.png``, the input of ``dreamtext image``) names the run that image's ``image`` made,
    or the command that makes it. (A run's own file names its run: :func:`resolve_workspace`.)"""
    from dreamtext.inputs import PICTURE_SUFFIXES

    if path.suffix.lower() in PICTURE_SUFFIXES:
        run = default_workspace(path)
        recorded = recorded_image(run)
        # The folder named after the image may hold another image of that name's run (a/mug.png
        # and b/mug.png both go to workspace/mug): named only where it is this image's.
        copy = source_copy(run)
        ours = recorded is not None and same_image(
            path,
            Path(recorded),
            path.read_bytes() if path.is_file() else None,
            copy.read_bytes() if copy is not None else None,
        )
        if ours and last_checkpoint(run).is_file():
            return (
                f"{path} is an image, not a run's folder: its `dreamtext image` run is "
                f"exported with --workspace {run}"
            )
        return (
            f"{path} is an image, not a run's folder: `dreamtext image {path}` makes its run "
            "and exports it; export takes --workspace the folder of a trained run"
        )
    return (
        f"{path} is a file, not a run's folder: pass --workspace the folder of a trained run "
        "(the one that holds checkpoints/)"
    )


def recorded_options(workspace: Path) -> ExportOptions:
    """The export options the run was trained with: ``export_options`` in its ``config.json``,
    which the export at the end of training used (a preset's or a ``--config``'s), over the
    defaults. The device is not taken from the run: it belongs to the machine that exports.
    A run without a ``config.json`` gets the defaults; one whose ``config.json`` cannot be read
    gets them with a warning (its run may have asked for others)."""
    from dreamtext.config import apply_overrides, fill_from_presets

    options = ExportOptions()
    path = Path(workspace) / "config.json"
    if not path.exists():
        return options
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        # An older dreamtext's config.json lacks the options added since: they were its
        # presets' (a builtin:shapes run: a 96³ mesh), as a resume of it takes them.
        saved = fill_from_presets(saved)[0] if isinstance(saved, dict) else None
    except (OSError, *UNREADABLE_JSON, AttributeError):
        saved = None
    readable = saved is not None
    saved = saved.get("export_options", {}) if readable else None
    if readable and not isinstance(saved, dict):
        # A run's record with a section of another shape (a hand edit): a resume or --config of
        # it is refused so, and a bad value in the section is; the defaults (a 256³ mesh for a
        # builtin:shapes run's 96³) replaced the run's mesh under a warning that the file was
        # unreadable.
        shown = json.dumps(saved)
        shown = shown if len(shown) <= 40 else shown[:39] + "…"
        raise DreamtextError(
            f"config section 'export_options' in {path} must be a mapping, got "
            f"{shown}: fix it, or delete the section to export with the "
            "settings of the run's preset (the defaults where it had none)"
        )  # a builtin:shapes run's section is its preset's then: a 96³ mesh, not the default 256³
    if not isinstance(saved, dict):  # not JSON, or JSON of another shape (a list, null)
        log.warning("%s is unreadable; exporting with the default export settings", path)
        return options
    saved = {key: value for key, value in saved.items() if key != "device"}
    apply_overrides(options, saved, str(path), prefix="export_options.")
    return options


def _unreadable(path: Path) -> str:
    """Why ``path``, a file :func:`checkpoint_run` could not read, cannot be read: the system's
    words when it cannot be opened (``Permission denied``), else that it is no checkpoint."""
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        return error.strerror or type(error).__name__
    return "not a whole checkpoint"


def export_workspace(
    workspace: Path | None,
    options: ExportOptions | None = None,
    progress: ExportProgress | None = None,
    completes_work: bool = False,
    checked: bool = False,
) -> ExportResult:
    """Export the trained field of ``workspace`` (default: the newest run under ``workspace/``)
    with ``options``, by default the run's own (:func:`recorded_options`). ``progress``: the
    record of ``workspace``'s export the caller started (the CLI, before this module's imports),
    else one of its own; ``completes_work``: as :func:`export_field`'s; ``checked``: the caller
    checked the memory and ffmpeg for ``options`` already (:func:`check_memory`,
    :func:`check_ffmpeg`: the CLI, before its line of the run's recorded options)."""
    # An export is work of its own, as a run is (dreamtext.trainer.train): one that follows work
    # complete in the same handler block (a caller's loop of exports) is stopped by signals
    # again, not only noted; one noted in between stops it before it starts.
    more_work()
    raise_if_stop_requested()
    workspace = resolve_workspace(workspace)
    options = options or recorded_options(workspace)
    options.validate()
    if not checked:
        check_memory(options)
        check_ffmpeg(options)
    # The workspace too: mesh/ and video/ are replaced by renames in it.
    folders = [workspace, workspace / "mesh"] + [workspace / "video"] * options.video
    for folder in folders:
        check_writable(folder, "copy the run to a folder you can write and export it there")
    device = resolve_device(options.device)
    started = contextlib.nullcontext(progress) if progress is not None else None
    with started or ExportProgress(workspace) as progress:
        progress.stage("loading the run")
        state = read_exported_checkpoint(workspace)
        field, renderer, config = run_from_state(state, device)
        refuse_overflowed_field(workspace, int(state["step"]), field, renderer, config, device)
        try:
            return _export_run(
                workspace,
                options,
                device,
                state,
                field,
                renderer,
                progress,
                config.get("prompt"),
                recorded_radius_range(config),
                completes_work,
            )
        except DivergedDensity as diverged:  # its renders were finite: NaN only off their rays
            raise DreamtextError(
                f"cannot export {workspace}: {diverged.situation}; train it again from scratch: "
                f"{retrain_command(workspace)} with the flags it was trained with and a "
                "smaller --lr"
            ) from None


def read_exported_checkpoint(workspace: Path) -> dict[str, Any]:
    """The run checkpoint an export reads (:func:`~dreamtext.checkpoint.read_run_checkpoint`).
    An unreadable ``last.pt`` with no whole step file to go on from said "delete it to start
    over", advice for a training: the export's line says the run cannot be exported and the
    command that trains it again."""
    try:
        return read_run_checkpoint(workspace)
    except UnreadableCheckpoint as error:
        if newest_whole_step(checkpoint_dir(workspace)) is not None:
            raise  # its line names that step file, and how to go on from it
        raise DreamtextError(
            f"cannot export {workspace}: {error.path} is unreadable ({error.why}) and the run "
            f"has no earlier checkpoint that is whole; train it again from scratch: "
            f"{retrain_command(workspace)} with the flags it was trained with"
        ) from None


def refuse_overflowed_field(
    workspace: Path,
    step: int,
    field: torch.nn.Module,
    renderer: VolumeRenderer,
    config: dict,
    device: torch.device,
) -> None:
    """Refuse to export the run of ``workspace`` whose checkpoint (of ``step``, read into
    ``field`` and ``renderer`` on ``device``; ``config``: its config) holds weights that
    overflowed float32 (:func:`~dreamtext.renderer.renders_finite`, as a training checks each
    save: an 8×8 render of one camera): saved by a dreamtext from before that check, or copied
    in. The density grid was sampled first (3.6 s for a builtin:shapes run, minutes for a large
    grid) only to say it was NaN; the line names the command that trains the run again."""
    cameras = CameraRange()
    radius = sum(recorded_radius_range(config) or cameras.radius_range) / 2
    if renders_finite(field, renderer, radius, sum(cameras.fovy_range) / 2, device):
        return
    raise DreamtextError(
        f"cannot export {workspace}: {last_checkpoint(workspace)} (step {step}) holds weights "
        f"that overflowed float32 (the field renders NaN or infinite pixels: its training "
        f"diverged); train it again from scratch: {retrain_command(workspace)} with the flags "
        f"it was trained with and a smaller --lr"
    )


def retrain_command(workspace: Path) -> str:
    """The command that trains the run in ``workspace`` again from scratch, in its folder
    (:func:`~dreamtext.errors.run_command`), in backquotes: a ``text --diverse`` run's ``text
    PROMPT --diverse --seed N --overwrite`` and an image run's ``image IMAGE --overwrite``
    (which keep its sentence and descriptor), else ``text PROMPT --overwrite`` with the prompt
    its config.json records."""
    data = recorded_settings(workspace)

    def recorded(section: str, key: str) -> Any:
        return (data.get(section) if isinstance(data.get(section), dict) else {}).get(key)

    prompt, seed = recorded("diverse", "prompt"), recorded("diverse", "seed")
    if isinstance(prompt, str) and prompt and isinstance(seed, int):
        diverse = ("--diverse", f"--seed {seed}")
        return f"`{run_command('text', prompt, workspace, options=diverse)}`"
    if sentence_path(workspace).is_file():
        image = recorded("image_to_3d", "image")
        if isinstance(image, str) and image:
            return f"`{run_command('image', image, workspace)}`"
        return f"`{run_command('image', 'IMAGE', workspace, placeholder=True)}` (its image)"
    prompt = data.get("prompt")
    if isinstance(prompt, str) and prompt:
        return f"`{run_command('text', prompt, workspace)}`"
    return f"`{run_command('text', 'PROMPT', workspace, placeholder=True)}`"


def recorded_radius_range(config: dict[str, Any]) -> tuple[float, float] | None:
    """The training cameras' ``cameras.radius_range`` that a run's ``config`` records, ``None``
    where it records none that reads as two finite numbers (a run from before it was kept)."""
    cameras = config.get("cameras")
    found = cameras.get("radius_range") if isinstance(cameras, dict) else None
    if not isinstance(found, list | tuple) or len(found) != 2:
        return None
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in found):
        return None
    return float(found[0]), float(found[1])


def _export_run(
    workspace: Path,
    options: ExportOptions,
    device: torch.device,
    state: dict[str, Any],
    field: torch.nn.Module,
    renderer: Any,
    progress: ExportProgress,
    prompt: str | None = None,
    radius_range: tuple[float, float] | None = None,
    completes_work: bool = False,
) -> ExportResult:
    """:func:`export_workspace`'s export of the run it read (``state``, its checkpoint, whose
    config gives its ``prompt`` and its cameras' ``radius_range``; the files are named after
    :func:`run_title`), checked on the way to be still the run in ``workspace``."""
    options = dataclasses.replace(options, device=str(device))
    run = state.get("run_id", "")
    step = int(state["step"])
    folder = workspace.stat()
    report = workspace / "mesh" / "mesh.json"
    exported = _identity(report)  # the export in the folder now, if any

    def still_the_run() -> None:
        # A new run in the folder (text --overwrite) cleared this one's checkpoints, or has
        # written its own: the files of this field would describe a run that is gone. A
        # last.pt that is gone or unreadable is not taken for this run either, but the message
        # says which it was: "replaced by a new run" sends a user who deleted checkpoints/ or
        # chmod-ed last.pt looking for a run that never started. Checked at the swap, under
        # the folder's lock, and on the way (while meshing, after each stage, before each
        # turntable chunk), so that an export that would be refused stops early rather than
        # minutes later.
        last = last_checkpoint(workspace)
        now = checkpoint_run(last)
        if now == run:
            # The run trained on while this ran and exported itself (or another export of a
            # later step landed): its newer files are kept, not swapped for this step's.
            newer = _exported_step(report) if _identity(report) != exported else None
            if newer is not None and newer > step:
                raise DreamtextError(
                    f"{workspace} was exported at step {newer} while this export of step {step} "
                    "ran; its newer files are kept and nothing was written"
                )
            return
        try:
            here = workspace.stat()  # at the swap: the write made it again if it was gone
        except FileNotFoundError:  # on the way: gone
            here = None
        if here is None or (here.st_dev, here.st_ino) != (folder.st_dev, folder.st_ino):
            raise DreamtextError(
                f"{workspace} was moved or deleted while exporting; nothing was written: "
                "export the run where it is now"
            )
        if now is not None:
            raise DreamtextError(
                f"{workspace} was replaced by a new run while exporting; export it again"
            )
        if not last.exists():
            raise DreamtextError(
                f"{last} was removed while exporting (a new run started in {workspace}, or "
                "the checkpoints were deleted); nothing was written"
            )
        raise DreamtextError(
            f"cannot read {last} ({_unreadable(last)}) to check that it is still the run this "
            "export read; nothing was written: make it readable and export again"
        )

    return export_field(
        field,
        workspace,
        options,
        renderer,
        step,
        check=still_the_run,
        progress=progress,
        prompt=prompt,
        title=run_title(workspace, prompt),
        radius_range=radius_range,
        checked=True,  # export_workspace's checks, before it read the run
        completes_work=completes_work,
    )


def _identity(path: Path) -> tuple[int, int] | None:
    """``(inode, mtime_ns)`` of ``path``, ``None`` if there is none: every export swaps in a
    new ``mesh/mesh.json``, so a changed identity is an export that landed meanwhile."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _exported_step(report: Path) -> int | None:
    """The training ``step`` a ``mesh.json`` records, ``None`` if it cannot be read."""
    try:
        step = json.loads(report.read_text(encoding="utf-8")).get("step")
    except (OSError, *UNREADABLE_JSON, AttributeError):
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def export_field(
    field: torch.nn.Module,
    out_dir: Path,
    options: ExportOptions | None = None,
    renderer: Any = None,
    step: int | None = None,
    check: Callable[[], None] | None = None,
    progress: ExportProgress | None = None,
    prompt: str | None = None,
    title: str | None = None,
    radius_range: tuple[float, float] | None = None,
    checked: bool = False,
    completes_work: bool = False,
) -> ExportResult:
    """Mesh files into ``out_dir/mesh`` and the turntable into ``out_dir/video``; ``mesh.json``
    records what was made, with ``step`` (the training step of the field's checkpoint) and
    ``options``. ``check`` is called right before the files are swapped in, under the folder's
    lock (:func:`write_all_atomically`), and on the way (about once a second while the density
    grid is sampled, after meshing, decimation, UV unwrapping and texture baking, before each
    turntable chunk), so that an export it refuses stops early; if it raises, nothing is written.

    The files name the object after its ``title`` (:func:`object_name`; by default the run's
    ``prompt``, :func:`run_title` for a run's folder), and the GLB records the title, the prompt
    and the settings that made it (:func:`_glb_bytes`); the PLY's header comments name dreamtext
    and the title (:func:`_ply_bytes`).

    Where it stands is recorded in ``out_dir``'s progress file for ``dreamtext view``
    (:mod:`dreamtext.exportprogress`; ``progress``: the caller's record, by default one of its
    own), which is removed when the export ends.

    ``renderer`` renders the turntable (anything with ``VolumeRenderer.render``'s signature); by
    default a ``VolumeRenderer`` with a freshly built occupancy grid; ``radius_range``: the
    training cameras' distances (:func:`turntable_poses`). Raises
    ``DreamtextError`` (writing nothing) for an empty field, and for a GPU or host that runs
    out of memory on the way (naming the settings that need less). The export's memory and
    ffmpeg are checked first (:func:`check_memory`, :func:`check_ffmpeg`), unless ``checked``:
    the caller checked them with ``options`` already (:func:`export_workspace`).
    ``completes_work``: the export's files are the command's last; their commit marks its work
    complete (:func:`write_all_atomically`).
    """
    check_output_names(out_dir)
    options = options or ExportOptions()
    options.validate()
    if not checked:
        check_memory(options)
        check_ffmpeg(options)
    out_dir = Path(out_dir)

    def explain(memory: str) -> str:
        on_the_gpu = ", or --device cpu" if memory == "GPU memory" else ""
        turntable, smaller = "", "--resolution or --texture-size"
        if options.video:
            turntable = f", {options.frames}-frame {options.video_size} px turntable"
            smaller = "--resolution, --texture-size or --video-size, or --no-video"
        return (
            f"out of {memory} while exporting {out_dir} (marching cubes at "
            f"{options.resolution}^3, {options.texture_size} px texture{turntable}); nothing "
            "was written and the trained run is kept: run `dreamtext export --workspace "
            f"{shell_word(out_dir)}` with a smaller {smaller}{on_the_gpu}"
        )

    # An earlier export killed while it swapped its files in is finished first.
    if out_dir.is_dir():
        finish_replacements(out_dir, REPLACED_OUTPUTS)
    if _drops_turntable(out_dir, options, step):  # video/ is replaced: checked as for --video
        check_writable(
            out_dir / "video",
            "a --no-video export removes a turntable of another step from it: make it "
            "writable, or copy the run to a folder you can write and export it there",
        )
    with contextlib.ExitStack() as stack:
        if progress is None:
            progress = stack.enter_context(ExportProgress(out_dir))
        progress.step = step
        with out_of_memory_is_a_user_error(explain):
            return _export_field(
                field,
                out_dir,
                options,
                renderer,
                step,
                check,
                progress,
                prompt,
                title,
                radius_range,
                completes_work,
            )


def marching_cubes_begins(progress: ExportProgress, resolution: int) -> None:
    """The density grid is sampled and marching cubes starts (the solid found, meshed and
    cleaned: seconds to a minute at 256^3, with no count of its own): said on stderr and
    recorded as the export's stage, ``marching cubes``."""
    log.info("marching cubes on the %d^3 grid", resolution)
    progress.stage("marching cubes")


def log_decimation(before: int, after: int, target: int) -> None:
    """The line of the decimation's outcome: its face count, and where that is over the target
    (``--decimate``, ``export_options.decimate``), a note saying so and why. Decimation stops
    short of a target below what the surface can be cut to while it stays closed and manifold
    (a few dozen faces: fast-simplification collapses no further, and the repair of its result
    may take faces out or put them back), which would otherwise pass without a word. A mesh
    already within the target, or with decimation off (0), is said to be kept whole; one
    returned whole over its target is not noted again: the decimation has said why."""
    if target <= 0:
        log.info("decimation off (decimate 0): all %d faces kept", after)
    elif before <= target:
        log.info("%d faces, within decimate's target of %d: not decimated", after, target)
    elif after == before:
        return
    elif after > target:
        log.warning(
            "decimated to %d faces, above decimate's target of %d: on this surface the "
            "decimation, which keeps it closed and manifold, stops there",
            after,
            target,
        )
    else:
        log.info("decimated to %d faces", after)


def check_output_names(out_dir: Path) -> None:
    """Refuse an export over a folder (or other non-file) named as one of its files in
    ``out_dir/mesh`` or ``out_dir/video`` (a user's ``mesh/mesh.json/``): the swap dropped it
    as an earlier export's output, with whatever the user kept in it."""
    for folder, names in (("mesh", MESH_OUTPUTS), ("video", VIDEO_OUTPUTS)):
        for name in names:
            path = Path(out_dir) / folder / name
            check_a_file(path, "a file of an export, which replaces it")


# What to do where the export that ends a training run would find its folders unusable.
EXPORT_FOLDERS_FIX_AFTER_TRAINING = "pass --no-export and export later with `dreamtext export`"


def check_export_folders(workspace: Path, options: ExportOptions) -> None:
    """Refuse, before the training whose export would find them, the folders the export that
    ends a run replaces and cannot (``mesh/``, and ``video/`` with a turntable): one this
    process cannot write or make (a link to no folder was a FileNotFoundError traceback after
    training), and a folder named as one of their files (:func:`check_output_names`), which
    ``dreamtext export`` refuses before its work and the export after training only at its
    end, the run trained and marked failed."""
    workspace = Path(workspace)
    for folder in [workspace / "mesh"] + [workspace / "video"] * options.video:
        check_writable(folder, EXPORT_FOLDERS_FIX_AFTER_TRAINING)
    check_output_names(workspace)


def _export_field(
    field: torch.nn.Module,
    out_dir: Path,
    options: ExportOptions,
    renderer: Any,
    step: int | None,
    check: Callable[[], None] | None,
    progress: ExportProgress,
    prompt: str | None,
    title: str | None,
    radius_range: tuple[float, float] | None = None,
    completes_work: bool = False,
) -> ExportResult:
    """:func:`export_field`'s work, files staged in memory and written together at the end.
    ``check`` runs between stages: each of decimation, UV unwrapping and texture baking takes
    seconds to minutes on a large mesh, which a run replaced meanwhile should not cost."""

    def on_the_way() -> None:
        # A stop whose KeyboardInterrupt a library swallowed (trimesh's optional imports, an
        # object's __del__) stops here, not after minutes more of the export, all written.
        raise_if_stop_requested()
        if check is not None:
            check()

    title = prompt if title is None else title
    extraction = extract_mesh(
        field,
        options.resolution,
        options.threshold,
        check=on_the_way,
        progress=progress.counter("meshing"),
        # What follows the density grid's bar, and xatlas below, show no progress of their own
        # (xatlas is one call: 10.6 s of CPU for a 50,000-face sphere here): a line before
        # each says what runs, and the progress record names it, as the viewer shows it (it
        # showed the grid's last count written, "meshing 62/64", through 16 s of marching
        # cubes at 256^3 after the grid was done).
        sampled=lambda: marching_cubes_begins(progress, options.resolution),
    )
    log.info("marching cubes: %d faces", len(extraction.mesh.faces))
    on_the_way()
    progress.stage("decimating")
    surface = decimate(extraction.mesh, options.decimate)
    log_decimation(len(extraction.mesh.faces), len(surface.faces), options.decimate)
    # Voxelizing the mesh for its IoU (0.2 s of CPU at 256^3, filling only the columns the
    # mesh crosses; 1.3 s, 3 to 9 s of wall time, over the whole grid) was shown as "decimating".
    progress.stage("measuring the mesh")
    stats = mesh_stats(surface, extraction.occupancy, float(field.bound))
    on_the_way()

    staged: dict[Path, bytes | Callable[[Path], None]] = {}
    mesh_dir = out_dir / "mesh"
    # The export grid's cell: how far a surface point in empty space looks for its matter's colour.
    cell_size = 2.0 * float(field.bound) / options.resolution
    textured_vertices = 0
    ran_on = export_ran_on(field_device(field))
    if {"glb", "obj"} & set(options.formats):
        progress.stage("UV unwrapping")
        log.info("UV unwrapping %d faces with xatlas", len(surface.faces))
        textured, uv = unwrap_uv(surface, options.texture_size)
        textured_vertices = len(textured.vertices)
        log.info("UV atlas: %d vertices after seam splits", len(textured.vertices))
        on_the_way()
        progress.stage("texture baking")
        texture = Image.fromarray(
            bake_texture(field, textured, uv, options.texture_size, cell=cell_size)
        )
        log.info("texture baked: %d x %d", options.texture_size, options.texture_size)
        on_the_way()
        textured.visual = trimesh.visual.TextureVisuals(uv=uv, material=_material(texture))
        if "glb" in options.formats:
            made_with = {
                "prompt": prompt,
                "step": step,
                "resolution": options.resolution,
                "threshold": extraction.threshold,
                "decimate": options.decimate,
                "texture_size": options.texture_size,
                "ran_on": ran_on,
            }
            staged[mesh_dir / "mesh.glb"] = _glb_bytes(textured, title, made_with)
        if "obj" in options.formats:
            staged.update(_obj_files(textured, mesh_dir, object_name(title)))
    if "ply" in options.formats:
        progress.stage("vertex colours")
        normals = np.asarray(surface.vertex_normals)
        colours = query_surface_albedo(
            field, surface.vertices, lambda index: normals[index], cell_size
        )
        # The normals of the GLB and OBJ (the welded surface's): a PLY without them is shaded
        # flat or by normals each reader estimates its own way (MeshLab, CloudCompare).
        coloured = trimesh.Trimesh(
            vertices=surface.vertices,
            faces=surface.faces,
            vertex_normals=surface.vertex_normals,
            vertex_colors=np.round(colours * 255).astype(np.uint8),
            process=False,
        )
        staged[mesh_dir / "mesh.ply"] = _ply_bytes(coloured, title)

    frames = 0
    video_dir = out_dir / "video"
    if options.video:
        if isinstance(renderer, VolumeRenderer) and step is not None:
            # A run stopped before its grid's first refresh renders through a refreshed copy:
            # every cell of the run's grid still counts as occupied. (Other renderers, such as
            # the tests' analytic tracer, have no grid.)
            renderer = renderer.with_grid_refreshed(field, step)
        poses = turntable_poses(options.frames, surface.vertices, radius_range)
        images = render_turntable(
            field,
            options.frames,
            options.video_size,
            renderer,
            poses,
            check=on_the_way,
            progress=progress.counter("turntable"),
        )
        frames = len(images)
        progress.stage("writing files")
        staged[video_dir / "turntable.mp4"] = lambda path: _write_mp4(images, path)
        staged[video_dir / "turntable.gif"] = _gif_bytes(images)
    # A --no-video export that drops the turntable replaces video/ by none of the export's
    # files (a user's own are carried over).
    emptied = (video_dir,) if _drops_turntable(out_dir, options, step) else ()
    kept = not options.video and not emptied and _has_turntable(video_dir)

    result = ExportResult(
        out_dir=out_dir,
        files={},
        stats=stats,
        threshold=extraction.threshold,
        resolution=options.resolution,
        dropped_components=extraction.dropped_components,
        faces_before_decimation=len(extraction.mesh.faces),
        textured_vertices=textured_vertices,
        frames=frames,
        step=step,
        options=options,
        turntable_step=step if options.video or kept else None,
        ran_on=ran_on,
    )
    staged[mesh_dir / "mesh.json"] = (json.dumps(result.report(), indent=2) + "\n").encode()
    progress.stage("writing files")
    # mesh/ (and video/) replaced whole: an earlier export's other formats describe another mesh.
    written = write_all_atomically(staged, REPLACED_OUTPUTS, on_the_way, emptied, completes_work)
    if emptied:
        with contextlib.suppress(OSError):  # the export's own folder, had it nothing else
            video_dir.rmdir()
    if video_dir.is_dir():  # a --no-video export leaves the rest of the folder as it is
        remove_stale_temps(video_dir, "turntable", suffix="[A-Za-z0-9]+")
    kinds = {".glb": "glb", ".obj": "obj", ".mtl": "mtl", ".png": "texture", ".ply": "ply"}
    result.files = {kinds.get(p.suffix, p.suffix.lstrip(".")): p for p in written}
    return result


def _drops_turntable(out_dir: Path, options: ExportOptions, step: int | None) -> bool:
    """Whether an export of ``step`` with ``options`` into ``out_dir`` removes the turntable in
    ``out_dir/video``: a ``--no-video`` export keeps it only where it is of this step
    (:func:`_turntable_is_of`); of another, it would pass for a render of the mesh beside it."""
    video_dir = out_dir / "video"
    return (
        not options.video
        and _has_turntable(video_dir)
        and not _turntable_is_of(out_dir / "mesh" / "mesh.json", step)
    )


def _has_turntable(video_dir: Path) -> bool:
    """Whether ``video_dir`` holds an export's turntable (:data:`VIDEO_OUTPUTS`)."""
    return any((video_dir / name).is_file() for name in VIDEO_OUTPUTS)


def _turntable_is_of(report: Path, step: int | None) -> bool:
    """Whether ``report``, the ``mesh.json`` of the export before, shows that the turntable in
    ``video/`` is of ``step``: its ``turntable_step``, or (an export from before it recorded
    one) its ``step`` when that export made a turntable. A ``--no-video`` export of such a run
    left the turntable of an export before it, of a step nothing records."""
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, *UNREADABLE_JSON):
        return False
    if not isinstance(data, dict):
        return False
    if "turntable_step" in data:
        return data["turntable_step"] == step
    options = data.get("options")
    return isinstance(options, dict) and options.get("video") is True and data.get("step") == step


def _material(texture: Image.Image) -> trimesh.visual.material.PBRMaterial:
    """A matte PBR material whose base colour is the baked albedo (``Kd`` 1 in the OBJ's MTL)."""
    return trimesh.visual.material.PBRMaterial(
        name="albedo",
        baseColorTexture=texture,
        baseColorFactor=[1.0, 1.0, 1.0, 1.0],
        metallicFactor=0.0,
        roughnessFactor=1.0,
    )


def object_name(title: str | None) -> str:
    """The object's name in the exported files (the GLB's node and mesh, the OBJ's ``o``): the
    title's folder name (:func:`dreamtext.inputs.slugify`, ``a_red_apple``), ``dreamtext``
    without a title (a field exported outside a run)."""
    return slugify(title) if title and title.strip() else "dreamtext"


def run_title(workspace: str | Path, prompt: str | None) -> str | None:
    """What the exported files of the run in ``workspace`` call its object, by its
    ``config.json``: a text→3D run's ``prompt``; an image→3D run's image's name (``mug`` for
    ``mug.png``, as its folder is named), a ``--diverse`` run's the prompt it sampled its image
    of. An image run's prompt is its trained sentence (``An image of a <descriptor> mug``), a
    placeholder token no user typed, which named its objects ``an_image_of_a_descriptor_mug``;
    the GLB keeps it as the node's ``prompt``. A text→3D run of an image run's trained sentence
    with that run's learned tokens (``text SENTENCE --config IMAGE_RUN/config.json --workspace
    NEW``) is named as that run is (:func:`_image_of_trained_sentence`). A config.json that
    cannot be read names the object after the prompt (:func:`recorded_options` warns of it)."""
    sections = recorded_settings(workspace)
    diverse, image = sections.get("diverse"), sections.get("image_to_3d")
    if isinstance(diverse, dict) and isinstance(diverse.get("prompt"), str):
        return diverse["prompt"]
    if isinstance(image, dict) and isinstance(image.get("image"), str):
        return Path(image["image"]).stem
    return _image_of_trained_sentence(sections, prompt) or prompt


def _image_of_trained_sentence(config: dict[str, Any], prompt: str | None) -> str | None:
    """The image name (its stem) of the image→3D run whose learned tokens the run of ``config``
    trains with (``guidance.textual_inversion``: that run's ``descriptor/learned_embeds
    .safetensors``) when ``prompt`` is that run's trained sentence, else ``None``: a prompt of
    the user's own words around the token is the user's name for it."""
    guidance = config.get("guidance")
    learned = guidance.get("textual_inversion") if isinstance(guidance, dict) else None
    if prompt is None or not isinstance(learned, str):
        return None
    if Path(learned).parts[-2:] != RUN_LEARNED_EMBEDS:
        return None
    image_run = Path(learned).parents[1]
    try:
        record, image = read_record(image_run) or {}, recorded_image(image_run)
    except DreamtextError:  # its sentence.json or config.json unreadable: the prompt names it
        return None
    if not isinstance(image, str) or not same_prompt(record.get("trained_sentence"), prompt):
        return None
    return Path(image).stem


# The GLB's scene root, which trimesh does not write when it carries nothing: named so that no
# object name (letters, digits, '_') can be it. Named after the object, a prompt "world" (trimesh's
# default root) would be the root itself.
GLB_ROOT = "scene root"


# The texture's name in the GLB, as the OBJ's texture file is named: Blender's glTF importer
# names an unnamed image ``Image_0``.
GLB_IMAGE_NAME = "albedo"

# glTF's CLAMP_TO_EDGE wrap mode. Without a sampler a texture repeats (glTF 2.0, 5.26). The
# charts keep their padding from the border (mesh.chart_padding: 1 texel at 256 px, 4 at 1024),
# so the two read the same at and near full size; where the charts are too many for the texture
# they come half a texel from it, and a mip level of a repeated texture reads across it. (With
# xatlas's layout 0.36 texels from the border at 256 px, the repeated texture was up to 29 levels
# off at 30 of the README cube's 6,127 UVs.)
CLAMP_TO_EDGE = 33071


def _glb_bytes(mesh: trimesh.Trimesh, title: str | None, made_with: dict[str, Any]) -> bytes:
    """The GLB of the textured ``mesh``: one node and mesh named :func:`object_name`, the node's
    ``extras`` the settings of ``made_with`` that have a value (the prompt, step and export
    settings, and ``ran_on``: mesh.json's record of what made the files, with the versions of
    dreamtext and of the mesh libraries), the image named :data:`GLB_IMAGE_NAME` and clamped
    at its edges (:data:`CLAMP_TO_EDGE`), ``asset.generator`` ``dreamtext <version>`` and
    ``asset.extras.title`` the title. Blender names its object and mesh after the node and
    mesh and keeps the node's extras as the object's custom properties: a ``null`` would be
    one too, an empty data-block field (Blender stores Python's ``None`` as an ID pointer), so
    a setting without a value (``threshold`` of the renders' surface, ``step`` and ``prompt``
    of a field of no run, ``cuda`` of a CPU build of torch) is left out
    (:func:`without_nulls`)."""
    name = object_name(title)
    scene = trimesh.Scene(base_frame=GLB_ROOT)
    extras = without_nulls(made_with)
    scene.add_geometry(mesh, node_name=name, geom_name=name, metadata=extras)

    def describe(tree: dict) -> None:
        _set_buffer_view_targets(tree)
        tree["asset"]["generator"] = f"dreamtext {__version__}"
        if title and title.strip():
            tree["asset"]["extras"] = {"title": title}
        for image in tree.get("images", []):
            image["name"] = GLB_IMAGE_NAME
        if tree.get("textures"):
            tree["samplers"] = [{"wrapS": CLAMP_TO_EDGE, "wrapT": CLAMP_TO_EDGE}]
            for texture in tree["textures"]:
                texture["sampler"] = 0

    return scene.export(file_type="glb", tree_postprocessor=describe)


def without_nulls(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with every key whose value is ``None`` left out, in nested records too."""
    return {
        key: without_nulls(value) if isinstance(value, dict) else value
        for key, value in record.items()
        if value is not None
    }


def _ply_bytes(mesh: trimesh.Trimesh, title: str | None) -> bytes:
    """The PLY of the vertex-coloured ``mesh`` (normals included), its header's comments
    :func:`ply_comments` in place of trimesh's own (a link to trimesh), which trimesh has no
    option to change. The header is ASCII text up to ``end_header``, and nothing in a PLY points
    into it, so the comment lines are swapped and the body is kept byte for byte."""
    data = mesh.export(file_type="ply", vertex_normal=True)
    end = data.index(b"end_header\n") + len(b"end_header\n")
    lines = data[:end].decode("ascii").splitlines()
    kept = [line for line in lines if not line.startswith("comment ")]
    # After the "ply" and "format" lines, where trimesh wrote its comment.
    header = [*kept[:2], *ply_comments(title), *kept[2:]]
    return ("\n".join(header) + "\n").encode("ascii") + data[end:]


def ply_comments(title: str | None) -> list[str]:
    """The PLY header's comments: ``comment generator dreamtext <version>`` (the GLB's
    ``asset.generator``) and, with a title, ``comment title <title>`` (its ``asset.extras``
    title) on one line, its whitespace collapsed and any non-ASCII letter escaped
    (``Crème`` → ``Cr\\xe8me``): a PLY header is ASCII, and readers such as plyfile refuse
    other bytes in it. ``end_header`` in a title is written ``end-header``: trimesh's reader
    ends the header at any line that holds it."""
    comments = [f"comment generator dreamtext {__version__}"]
    if title and title.strip():
        line = " ".join(title.split()).encode("ascii", "backslashreplace").decode("ascii")
        comments.append(f"comment title {line.replace('end_header', 'end-header')}")
    return comments


def _set_buffer_view_targets(tree: dict) -> None:
    """Mark vertex and index buffer views with their GPU targets (the glTF validator hints at it).

    ``ARRAY_BUFFER`` (34962) for attributes, ``ELEMENT_ARRAY_BUFFER`` (34963) for indices; a view
    shared by both kinds (never written by trimesh today) is left unmarked.
    """
    targets: dict[int, set[int]] = {}
    for mesh in tree.get("meshes", []):
        for primitive in mesh["primitives"]:
            for accessor in primitive.get("attributes", {}).values():
                view = tree["accessors"][accessor].get("bufferView")
                targets.setdefault(view, set()).add(34962)
            if "indices" in primitive:
                view = tree["accessors"][primitive["indices"]].get("bufferView")
                targets.setdefault(view, set()).add(34963)
    for view, kinds in targets.items():
        if view is not None and len(kinds) == 1:
            tree["bufferViews"][view]["target"] = kinds.pop()


# The GLB's matte dielectric (metallic 0, roughness 1) in MTL terms: no ambient or specular
# colour, diffuse only (illum 1), and the PBR extension's roughness and metalness, which
# Blender's OBJ importer (File > Import > Wavefront, ``wm.obj_import``, the only one from 4.0)
# reads; the legacy Python importer of Blender 3.x prints "Pr 1 (ignored)" and "Pm 0 (ignored)"
# and gets the same matte from Ns 0 and illum 1 (benchmarks/blender_import.py). trimesh's
# default (Ka = Ks = 0.4, Ns = 1) is a broad grey sheen in Phong viewers (three.js's
# MTLLoader) and, with an illum that enables reflection, 40 % metallic in Blender.
MTL_MATTE = {"Ka": "0 0 0", "Ks": "0 0 0", "Ns": "0", "illum": "1", "Pr": "1", "Pm": "0"}


def _obj_files(mesh: trimesh.Trimesh, folder: Path, name: str) -> dict[Path, bytes]:
    """``mesh.obj`` (the object ``name``), ``mesh.mtl`` (a matte material, :data:`MTL_MATTE`) and
    the texture it names (``albedo.png``), as bytes. ``mesh``: the UV-unwrapped surface, its
    vertices split at seams."""
    # trimesh's material writer: the MTL (``newmtl``, ``Kd``, ``map_Kd``) and the texture it names.
    material_files, material = mesh.visual.material.to_simple().to_obj()
    files = {folder / "mesh.obj": _obj_text(mesh, name, "mesh.mtl", material).encode("utf-8")}
    for file_name, data in material_files.items():
        if file_name.lower().endswith(".mtl"):
            files[folder / "mesh.mtl"] = _matte_mtl(data.decode("utf-8")).encode("utf-8")
        else:
            files[folder / file_name] = data
    return files


def _obj_text(mesh: trimesh.Trimesh, name: str, mtl_name: str, material: str) -> str:
    """The OBJ of a UV-unwrapped surface, one object ``o name`` (a slug: no spaces, which OBJ
    reads as the end of the name), with one ``v`` (and ``vn``) per position and one ``vt``
    per split vertex: OBJ indexes positions and UVs separately, so only the UVs split at seams
    and a reader that builds its mesh from the positions (Blender, MeshLab, slicers) gets the
    closed surface back, not one cut open along every seam as the GLB's vertices must be.
    ``s 1`` marks every face smooth: without it Blender's OBJ importer marks them flat and only
    the ``vn`` custom normals shade the surface smooth, until something clears them."""
    positions, first, corner_position = np.unique(
        np.asarray(mesh.vertices), axis=0, return_index=True, return_inverse=True
    )
    normals = np.asarray(mesh.vertex_normals)[first]  # unwrap_uv keeps the welded normals
    uv = np.asarray(mesh.visual.uv)
    position = corner_position.ravel()[mesh.faces] + 1
    texcoord = np.asarray(mesh.faces) + 1
    lines = [f"mtllib {mtl_name}", f"o {name}", f"usemtl {material}", "s 1"]
    lines += [f"v {x:.8f} {y:.8f} {z:.8f}" for x, y, z in positions]
    lines += [f"vt {u:.8f} {v:.8f}" for u, v in uv]
    lines += [f"vn {x:.8f} {y:.8f} {z:.8f}" for x, y, z in normals]
    lines += [
        "f " + " ".join(f"{p}/{t}/{p}" for p, t in zip(ps, ts, strict=True))
        for ps, ts in zip(position, texcoord, strict=True)
    ]
    return "\n".join(lines) + "\n"


def _matte_mtl(text: str) -> str:
    """An MTL with every material's statements of :data:`MTL_MATTE` set to its values (the
    others, ``newmtl``, ``Kd``, ``map_Kd``, kept)."""
    lines = []
    for line in text.splitlines():
        if line.split(" ", 1)[0] in MTL_MATTE:
            continue
        lines.append(line)
        if line.startswith("newmtl "):
            lines += [f"{key} {value}" for key, value in MTL_MATTE.items()]
    return "\n".join(lines) + "\n"


def turntable_poses(
    frames: int, vertices: np.ndarray, radius_range: tuple[float, float] | None = None
) -> Poses:
    """``frames`` cameras on a circle around the object whose surface has ``vertices: [V, 3]``,
    framed to show all of it, centred.

    They look at the centre ``c`` of the vertices' bounding box, from ``TURNTABLE_POLAR``, at the
    training cameras' distance ``d_0`` (``TURNTABLE_RADIUS`` brought into their
    ``radius_range``, where given), or farther where the bounding sphere about
    ``c`` (radius ``r = max |v − c|``) would fill more than ``TURNTABLE_FILL`` of the field of
    view: ``d = max(d_0, r / sin(f · fovy / 2))``, f the fill. (A sphere of radius ``r`` at
    distance ``d`` subtends the half-angle ``asin(r / d)``.) SDS fills the training views, so at
    their distance alone an object reaching beyond them is cropped; a camera brought closer
    than it to a small mesh would sit inside whatever faint density surrounds it.
    """
    vertices = np.asarray(vertices, dtype=np.float64)
    centre = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    reach = float(np.linalg.norm(vertices - centre, axis=1).max())
    half_angle = math.radians(TURNTABLE_FILL * TURNTABLE_FOVY / 2.0)
    near = TURNTABLE_RADIUS
    if radius_range is not None:
        near = min(max(near, radius_range[0]), radius_range[1])
    distance = max(near, reach / math.sin(half_angle))
    target = (float(centre[0]), float(centre[1]), float(centre[2]))
    return orbit_poses(frames, TURNTABLE_POLAR, distance, TURNTABLE_FOVY, target=target)


def render_turntable(
    field: torch.nn.Module,
    frames: int,
    size: int,
    renderer: Any = None,
    poses: Poses | None = None,
    check: Callable[[], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[np.ndarray]:
    """``frames`` views on a circle around the object: RGB (albedo on white) | depth.

    Frames are rendered ``FRAMES_PER_CHUNK`` at a time so the renderer's memory does not grow with
    their number; what grows is kept small, the RGB as bytes and depth and opacity as float32
    (11 bytes a pixel) until the depth range over all frames is known, then the frames are made
    a chunk at a time (it kept float32 copies of every frame: 137 bytes a pixel, 2.2 GB for 60
    frames at 512 px). Depth rather than normals: on a CPU, the renderer's finite-difference normals
    cost six more field queries per visible sample, ten times the whole frame. The depth panel
    shows the visible matter's expected depth ``d̂ = depth / o`` as grey ``g = 0.2 + 0.6 (d̂ −
    d_near) / (d_far − d_near)`` (near dark), ``d_near, d_far`` its range over the pixels with
    ``o > ½`` in all frames, composited on white: ``(1 − o) + o g``.

    ``poses``: the ``frames`` cameras (:func:`turntable_poses` frames a mesh); by default a
    circle about the origin at the training cameras' distance. ``check`` (when given) is
    called before each chunk; what it raises stops the turntable. ``progress(done, chunks)``
    (when given) too, and after the last.

    Returns ``frames`` uint8 images ``[size, 2 size, 3]``.
    """
    renderer = renderer if renderer is not None else default_renderer(field)
    was_training = getattr(renderer, "training", False)
    if isinstance(renderer, torch.nn.Module):
        renderer.eval()
    white = torch.ones(3, device=field_device(field))
    if poses is None:
        poses = orbit_poses(frames, TURNTABLE_POLAR, TURNTABLE_RADIUS, TURNTABLE_FOVY)
    rgb, depth, opacity = [], [], []  # uint8 [B, S, S, 3]; float32 [B, S, S] (11 bytes a pixel)
    chunks = -(-frames // FRAMES_PER_CHUNK)
    try:
        with torch.no_grad():
            for start in tqdm(
                range(0, frames, FRAMES_PER_CHUNK), desc="turntable", unit="chunk", **bar_options()
            ):
                if check is not None:
                    check()
                if progress is not None:
                    progress(start // FRAMES_PER_CHUNK, chunks)
                chunk = poses[start : start + FRAMES_PER_CHUNK]
                out = renderer.render(field, chunk, size, size, shading="albedo", background=white)
                o = out["opacity"].float().clamp(0, 1)
                rgb.append(_to_bytes(out["rgb"].float().clamp(0, 1).cpu().numpy()))
                depth.append((out["depth"].float() / o.clamp_min(1e-6)).cpu().numpy())
                opacity.append(o.cpu().numpy())
        if progress is not None:
            progress(chunks, chunks)
    finally:
        if isinstance(renderer, torch.nn.Module):
            renderer.train(was_training)
    solid = [d[o > 0.5] for d, o in zip(depth, opacity, strict=True)]  # each chunk's, once
    solid = [s for s in solid if s.size]
    near, far = (min(s.min() for s in solid), max(s.max() for s in solid)) if solid else (0.0, 1.0)
    images = []
    for colour, d, o in zip(rgb, depth, opacity, strict=True):  # float32 for one chunk only
        grey = 0.2 + 0.6 * np.clip((d - near) / max(far - near, 1e-6), 0.0, 1.0)
        panel = _to_bytes(np.repeat(((1.0 - o) + o * grey)[..., None], 3, axis=-1))
        images += list(np.concatenate([colour, panel], axis=2))
    return images


def _to_bytes(values: np.ndarray) -> np.ndarray:
    """``[0, 1]`` floats → uint8, ``⌊255 v + ½⌋``."""
    return (values * 255.0 + 0.5).astype(np.uint8)


def default_renderer(field: torch.nn.Module) -> torch.nn.Module:
    """A ``VolumeRenderer`` with default settings, its occupancy grid built from ``field``."""
    from dreamtext.factory import build_renderer  # the factory composes this module's config

    renderer = build_renderer(RenderConfig(), field_device(field))
    # Each update samples one jittered point per cell; a few catch thin parts one would miss.
    for _ in range(3):
        renderer.update_occupancy(field, 0)
    return renderer.eval()


def _write_mp4(images: list[np.ndarray], path: Path) -> None:
    """Encode ``images`` (uint8 ``[H, W, 3]``, all one size) with ffmpeg into ``path``: H.264,
    yuv420p (what players take; an odd width or height is scaled up to an even one), its colour
    space written in the stream (:data:`VIDEO_COLOURS`), ``VIDEO_FPS`` frames a second, the
    index (``moov``) before the frames (``+faststart``), so that a browser plays it from any
    web server before the whole file has arrived.

    ffmpeg's own messages are kept from stderr, where they came before dreamtext's one line:
    a full disk or quota, a file-size limit or a refused write is raised as that ``OSError``
    (the CLI's line names the file; a batch stops at a full disk), any other failure as a
    :class:`DreamtextError` ending in ffmpeg's last words. A file ffmpeg left cut short without
    saying so fails :func:`mp4_is_whole`.
    """
    exe = ffmpeg_exe(FFMPEG_FIX)
    height, width = images[0].shape[:2]
    command = [exe, "-y", "-loglevel", "error", "-nostdin"]
    command += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}"]
    command += ["-r", str(VIDEO_FPS), "-i", "-", "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p"]
    command += ["-crf", str(VIDEO_CRF), "-movflags", "+faststart"]
    even = f"scale={width + width % 2}:{height + height % 2}," if width % 2 or height % 2 else ""
    command += ["-vf", even + VIDEO_COLOURS, str(path)]
    said: list[bytes] = []  # read as it comes: a full pipe would stop ffmpeg, and the frames
    # The with-block closes the stderr pipe too, which a batch exporting run after run in one
    # process would otherwise leave for the garbage collector (a file descriptor a video).
    try:
        ffmpeg = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    except OSError as error:  # not there, not executable, not a program: not the disk's error
        raise ffmpeg_cannot_start(exe, error.strerror or str(error), FFMPEG_FIX) from None
    with ffmpeg:
        reader = threading.Thread(target=lambda: said.append(ffmpeg.stderr.read()), daemon=True)
        reader.start()
        try:
            try:
                for image in images:
                    ffmpeg.stdin.write(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
                ffmpeg.stdin.close()
            except BrokenPipeError:  # ffmpeg stopped reading: it has exited, and says why
                pass
            status = ffmpeg.wait()
        except BaseException:  # Ctrl-C, SIGTERM: no ffmpeg left behind
            ffmpeg.kill()
            ffmpeg.wait()
            raise
        finally:
            reader.join()
            with contextlib.suppress(BrokenPipeError):
                ffmpeg.stdin.close()
    if status != 0 or not mp4_is_whole(path):
        raise ffmpeg_failure(status, b"".join(said).decode("utf-8", errors="replace"))


# What to do where there is no ffmpeg that runs (imageio-ffmpeg's IMAGEIO_FFMPEG_EXE names one).
FFMPEG_FIX = (
    "install ffmpeg (or set IMAGEIO_FFMPEG_EXE to a working one) and export again, "
    "or export with --no-video"
)
# The same where the export ends a training run: its options are config fields, not flags.
FFMPEG_FIX_AFTER_TRAINING = (
    "install ffmpeg (or set IMAGEIO_FFMPEG_EXE to a working one), or set export_options.video: "
    "false in a --config, or pass --no-export and export later"
)


def ffmpeg_exe(fix: str) -> str:
    """imageio-ffmpeg's ffmpeg (``IMAGEIO_FFMPEG_EXE``, its wheel's binary, else ``PATH``'s);
    a :class:`DreamtextError` ending in ``fix`` where it finds none."""
    from imageio_ffmpeg import get_ffmpeg_exe  # only where a video is made: --no-video needs none

    try:
        return get_ffmpeg_exe()
    except RuntimeError:  # no ffmpeg in its wheel (a platform it has none for) nor on PATH
        raise DreamtextError(f"no ffmpeg found for the turntable video; {fix}") from None


def check_ffmpeg(options: ExportOptions, after_training: bool = False) -> None:
    """Raise ``DreamtextError`` where the turntable's ffmpeg cannot start (none found, a path
    that names no program, one not executable), before the mesh is made or, ``after_training``,
    before the training whose export would find it: the video is the export's last file."""
    if not options.video:
        return
    fix = FFMPEG_FIX_AFTER_TRAINING if after_training else FFMPEG_FIX
    exe = ffmpeg_exe(fix)
    try:
        done = subprocess.run(
            [exe, "-version"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    except subprocess.TimeoutExpired:  # it started: what it does with frames is its own matter
        return
    except OSError as error:  # not there, not executable, not a program
        raise ffmpeg_cannot_start(exe, error.strerror or str(error), fix) from None
    # 127 is the shell's and the dynamic loader's: a wrapper script whose ffmpeg is gone, a
    # binary whose shared libraries are not found. It failed only the export, after training.
    if done.returncode == 127:
        said = ffmpeg_last_words(done.stderr.decode("utf-8", errors="replace"))
        raise ffmpeg_cannot_start(exe, said or "exit status 127", fix)


def ffmpeg_cannot_start(exe: str, why: str, fix: str) -> DreamtextError:
    """The line for the ffmpeg ``exe`` that could not start, for the reason ``why``."""
    return DreamtextError(f"ffmpeg {exe} could not start ({why}); {fix}")


# What ffmpeg writes for the machine's errors (strerror's words), and what a file-size limit does
# to it (SIGXFSZ kills it; subprocess gives it back the default action, which Python ignores).
FFMPEG_OS_ERRORS = tuple(
    (os.strerror(number), number)
    for number in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EROFS)
)


def ffmpeg_last_words(said: str) -> str:
    """The last line ffmpeg wrote on stderr (``said``), shortened to 160 characters; ``""``
    where it wrote none."""
    last = said.strip().splitlines()[-1].strip() if said.strip() else ""
    return last[:159] + "…" if len(last) > 160 else last


def ffmpeg_failure(status: int, said: str) -> Exception:
    """The error for an ffmpeg that exited with ``status`` after writing ``said`` on stderr: the
    machine's ``OSError`` (no file name: :func:`write_all_atomically` gives it the video's), else
    a :class:`DreamtextError` that ends in ffmpeg's last line, shortened."""
    if status == -signal.SIGXFSZ:
        return OSError(errno.EFBIG, os.strerror(errno.EFBIG))
    for words, number in FFMPEG_OS_ERRORS:
        if words in said:
            return OSError(number, os.strerror(number))
    last = ffmpeg_last_words(said)
    how = f"exit status {status}" if status >= 0 else f"killed by signal {-status}"
    if status == 0:
        how = "it left the file cut short"
    return DreamtextError(
        f"ffmpeg could not write the turntable video ({how}"
        + (f": {last}" if last else "")
        + "); export again, or export with --no-video"
    )


def mp4_is_whole(path: Path) -> bool:
    """Whether ``path``'s top-level MP4 boxes (:func:`mp4_boxes`) fill the file exactly and
    include the index (``moov``) and the frames (``mdat``): a file cut short fails one of the
    two."""
    found = mp4_boxes(path)
    return found is not None and {b"moov", b"mdat"} <= set(found)


def mp4_boxes(path: Path) -> list[bytes] | None:
    """The types of ``path``'s top-level MP4 boxes in file order (each a 32-bit size, 1 for a
    64-bit one that follows the type, 0 for up to the end; then a 4-letter type), or ``None``
    where they do not fill the file exactly."""
    found, end = [], path.stat().st_size
    with path.open("rb") as f:
        at = 0
        while at < end:
            header = f.read(8)
            if len(header) < 8:
                return None
            size, kind = int.from_bytes(header[:4], "big"), header[4:]
            if size == 1:
                large = f.read(8)
                if len(large) < 8:
                    return None
                size = int.from_bytes(large, "big")
            elif size == 0:
                size = end - at
            if size < 8 or at + size > end:
                return None
            found.append(kind)
            at += size
            f.seek(at)
    return found


def _gif_bytes(images: list[np.ndarray]) -> bytes:
    """The frames as an endless GIF, as long as the MP4 (:func:`gif_durations`).

    Pillow merges identical consecutive frames, so a rotationally symmetric, uniformly coloured
    object gives fewer, longer frames: the same animation.
    """
    buffer = io.BytesIO()
    first, *rest = [_gif_frame(image) for image in images]
    first.save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=rest,
        duration=gif_durations(len(images), VIDEO_FPS),
        loop=0,
    )
    return buffer.getvalue()


def gif_durations(frames: int, fps: float) -> list[int]:
    """Milliseconds each of ``frames`` GIF frames shows so that frame ``k`` ends at
    ``round_10((k + 1) · 1000 / fps)``: GIF delays are whole hundredths of a second, so a
    constant ``1000 / 30`` ms would be stored as 30 ms and play 10 % fast; this alternates
    30 and 40 ms (30, 40, 30, 30, 40, ...) and lasts ``frames / fps`` seconds to the hundredth."""
    ends = [10 * round((k + 1) * 100 / fps) for k in range(frames)]
    return [int(d) for d in np.diff([0, *ends])]


def _gif_frame(image: np.ndarray) -> Image.Image:
    """A 256-colour frame: a median-cut palette of 255 colours plus pure white (the background
    stays exactly white), Floyd–Steinberg dithered so smooth shading does not band into patches."""
    rgb = Image.fromarray(image)
    palette = rgb.quantize(255, method=Image.Quantize.MEDIANCUT)
    palette.putpalette([*palette.getpalette()[: 255 * 3], 255, 255, 255])
    return rgb.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)


def write_all_atomically(
    files: dict[Path, bytes | Callable[[Path], None]],
    replaced: tuple[str, ...] = (),
    check: Callable[[], None] | None = None,
    emptied: tuple[Path, ...] = (),
    completes_work: bool = False,
) -> list[Path]:
    """Replace the folders of ``files`` (``W/mesh``, ``W/video``: folders of one parent ``W``),
    each as a whole, by folders that hold ``files``: a reader, or a kill at any moment, sees
    each folder's old set of files or its new one, never a mix of the two.

    A value is the file's bytes, or a function that writes the file at the path it is given (for
    encoders that need a real file, e.g. ffmpeg). The files are written into a hidden staging
    folder ``W/.export-partial-XXXXXXXX/<folder>/``, which is renamed ``W/.export-ready-…`` once
    all of them are written, and each folder is then swapped for its new copy by two renames
    (:func:`finish_replacements`; the folder of the last file in ``files``, an export's
    ``mesh.json``, last). Of the old folder's files, those ``files`` or a glob of ``replaced``
    name are dropped, and hidden ones; the others (a user's own) are carried over (a moment
    after the swap: :func:`_retire`). If a write fails, the staging
    folder and any folder this call made are removed and no destination is touched.

    ``check`` (when given) is called once the files are staged, under ``W``'s lock
    (:func:`dreamtext.processes.lock_folder`), which is held on through the swap: whatever it
    checks of ``W`` still holds when the files arrive. If it raises, the staged files are
    removed as for a failed write. ``emptied``: folders of ``W`` replaced the same way by
    none of ``files`` (swapped first), so that only a user's own files stay in them.
    ``completes_work``: the files are the command's last, and the rename that commits them
    marks its work complete in the same step (:func:`dreamtext.interrupts.rename_completing_work`):
    a stop from there on, the swap included, is noted, not an interruption. Returns the paths
    written.
    """
    folders = list(dict.fromkeys(path.parent for path in reversed(list(files))))[::-1]
    folders = [*dict.fromkeys(f for f in emptied if f not in folders), *folders]
    parent = folders[0].parent
    if any(folder.parent != parent for folder in folders):
        raise ValueError(f"the folders of one replacement need one parent: {folders}")
    created: list[Path] = []
    for folder in reversed([parent, *parent.parents]):
        if not folder.exists():
            folder.mkdir()
            created.append(folder)
    try:
        staging = Path(tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=parent))
    except OSError as error:  # named W/.export-partial-k2j4x9ab, a name the user never saw
        raise OSError(error.errno, error.strerror, str(parent)) from error
    owner = None
    with contextlib.ExitStack() as held:
        try:
            # Its lock, held until the staged files are committed, tells other exports (of
            # any machine) that this staging folder is still being written (_abandoned).
            # Its time tells a record of an earlier boot of this machine from a twin's.
            record = {**this_process(), "updated": now_iso()}
            record["folders"] = [folder.name for folder in folders]
            owner = write_held_record(staging / RECORD_FILE, record)
            for folder in folders:
                (staging / folder.name).mkdir(exist_ok=True)
            for path, content in files.items():
                staged = staging / path.parent.name / path.name
                with naming_the_file(path):
                    if isinstance(content, bytes):
                        staged.write_bytes(content)
                    else:
                        content(staged)
                os.chmod(staged, file_mode())
            for folder in folders:  # the new folder as shared as the old one (mkdir's mode else)
                if folder.is_dir() and not folder.is_symlink():
                    os.chmod(staging / folder.name, folder.stat().st_mode & 0o7777)
            held.enter_context(lock_folder(parent))
            if check is not None:
                check()
            _check_swappable(folders)
            ready = parent / (READY_PREFIX + staging.name[len(PARTIAL_PREFIX) :])
            if completes_work:
                rename_completing_work(staging, ready)
            else:
                os.rename(staging, ready)
        except BaseException as error:
            if owner is not None:  # closed before the removal: NFS keeps open files (.nfsXXXX)
                owner.close()
            _remove_staging(staging)
            for folder in reversed(created):
                if folder.exists() and not any(folder.iterdir()):
                    folder.rmdir()
            renamed = _named_in_the_run(error, staging, parent)
            if renamed is not None:
                raise renamed from error
            raise
        owner.close()  # committed: the ready folder is swapped in, whoever finds it
        finish_replacements(parent, replaced)
    return list(files)


def _remove_staging(staging: Path) -> None:
    """Remove the staging folder ``staging``. Its folders took the modes of the run's: the
    files of one copied from a read-only ``mesh/`` (whose swap is refused) could not be removed
    from it, so each is made its owner's to write first."""
    with contextlib.suppress(OSError):
        for entry in staging.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                with contextlib.suppress(OSError):
                    entry.chmod(entry.stat().st_mode | stat.S_IRWXU)
    shutil.rmtree(staging, ignore_errors=True)


def _check_swappable(folders: list[Path]) -> None:
    """Raise ``PermissionError`` naming the first of ``folders`` that is a folder this process
    cannot write. Its swap (:func:`_swap_in`) would move it aside, then fail to move its new
    copy in (a folder moved to another parent needs its own write permission, which the new
    copy takes from it) or a user's files over, leaving it as ``.export-old-<name>``: a
    ``--no-video`` export emptying a read-only ``video/``."""
    for folder in folders:
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder))


def _named_in_the_run(error: BaseException, staging: Path, parent: Path) -> OSError | None:
    """``error`` (an ``open`` refused in the staging folder ``staging``, removed by now) naming
    instead the place in the run's folder ``parent`` that the user knows:
    ``W/.export-partial-k2j4x9ab/mesh/mesh.glb`` → ``W/mesh/mesh.glb``, the staging folder
    itself or its record → ``W``. ``None`` when ``error`` names no path in ``staging``."""
    if not isinstance(error, OSError) or error.filename is None:
        return None
    try:
        named = Path(os.path.abspath(os.fsdecode(error.filename)))
        inside = named.relative_to(os.path.abspath(staging))
    except (TypeError, ValueError):
        return None
    place = parent if inside.parts in ((), (RECORD_FILE,)) else parent / inside
    return OSError(error.errno, error.strerror, str(place))


# write_all_atomically's leftovers in a folder W of the folders it replaces (all hidden):
# files still being written (or left by a writer that was killed), files written whole that wait
# to be swapped in, and an old folder W/<name> moved aside while its new copy moves in.
PARTIAL_PREFIX = ".export-partial-"
READY_PREFIX = ".export-ready-"
OLD_PREFIX = ".export-old-"
# What NFS names a removed file that a reader still has open ("silly rename").
NFS_PREFIX = ".nfs"
# In a staging folder: the process that writes it and the folders it holds, in swap order.
RECORD_FILE = ".record.json"
# A staging folder without a readable record this much older than now lost its writer before
# the writer wrote the record (which it does right after making the folder).
RECORD_GRACE_S = 60.0
# A staging folder of another machine whose record's lock is free is removed only once the record
# is ELSEWHERE_GRACE_S old (dreamtext.processes).


def finish_replacements(parent: Path, replaced: tuple[str, ...] = ()) -> None:
    """Finish :func:`write_all_atomically`'s replacements of folders of ``parent``, its own and
    those of writers that were killed, which left only hidden leftovers: swap in every folder
    written whole (``.export-ready-*``, oldest first), finish a swap cut between its two
    renames or before the old folder was removed (``.export-old-*``), and remove what writers
    no longer alive left half-written (``.export-partial-*``). Runs under ``parent``'s lock
    (:func:`dreamtext.processes.lock_folder`), so that two exports of a run take turns."""
    parent = Path(parent)
    with lock_folder(parent):
        for partial in parent.glob(PARTIAL_PREFIX + "*"):
            if _abandoned(partial):
                _remove_staging(partial)
        ready = sorted(parent.glob(READY_PREFIX + "*"), key=lambda p: p.stat().st_ctime)
        for folder in ready:
            record = _staging_record(folder) or {}
            names = [n for n in record.get("folders", []) if isinstance(n, str)]
            names += sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in names)
            for name in names:
                _swap_in(folder / name, parent / name, replaced)
            shutil.rmtree(folder, ignore_errors=True)
        for old in parent.glob(OLD_PREFIX + "*"):
            _swap_in(None, parent / old.name[len(OLD_PREFIX) :], replaced)


def _swap_in(new: Path | None, dest: Path, replaced: tuple[str, ...]) -> None:
    """Make the folder ``new`` (``None``: no new folder, only finish an earlier swap) the folder
    ``dest``: ``dest`` → ``.export-old-<name>``, ``new`` → ``dest``; then carry the files of
    the old folder that ``new`` lacks and ``replaced`` does not name over, and remove it."""
    old = dest.with_name(OLD_PREFIX + dest.name)
    if new is not None and new.is_dir():
        if dest.is_symlink():  # keep the user's link: fill the folder it names file by file
            _move_files_into(new, Path(os.path.realpath(dest)), replaced)
            return
        if dest.exists():
            if old.exists():  # an earlier swap's old folder, never removed
                _retire(old, dest, replaced)
            os.rename(dest, old)
        os.rename(new, dest)
    if old.is_dir() and not old.is_symlink():
        _retire(old, dest, replaced)


def _retire(old: Path, dest: Path, replaced: tuple[str, ...]) -> None:
    """Carry the entries of ``old`` that ``dest`` lacks and ``replaced`` does not name into
    ``dest``, then remove ``old``; with no ``dest`` (a swap cut between its renames, whose new
    folder is gone) ``old`` becomes ``dest`` again.

    A user's hidden files (``.notes``) are carried too, but not NFS's ``.nfsXXXX``: NFS renames
    a file removed while a reader has it open (the viewer sending the old GLB) to that name
    until it is closed, which also keeps ``old`` from being removed now; a later export
    removes it."""
    if not dest.exists():
        os.rename(old, dest)
        return
    for entry in old.iterdir():
        kept = not any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in replaced)
        if (
            kept
            and not entry.name.startswith(NFS_PREFIX)
            and not os.path.lexists(dest / entry.name)
        ):
            os.rename(entry, dest / entry.name)
    shutil.rmtree(old, ignore_errors=True)


def _move_files_into(new: Path, target: Path, replaced: tuple[str, ...]) -> None:
    """The swap of a ``dest`` that is a link to a folder: the link's folder ``target`` (on any
    file system) cannot be renamed as a whole, so every file of ``new`` is first copied into a
    hidden temp file beside its namesake in ``target``, and only once all of them are there is
    each renamed over its namesake (in the order they were staged: ``mesh.json`` last), then
    the files ``replaced`` names that ``new`` lacks are removed. A full disk or a failing write
    fails the copies, before any rename: the temp files are removed and ``target`` keeps its old
    set whole (the 5th of 6 copies failing left ``mesh.json`` and two files new, the rest old).
    A kill in the renames themselves, a moment with no writing, can still leave a mix. Temp
    files a killed export left are removed first; exports of a run take turns
    (:func:`finish_replacements`' lock)."""
    staged = sorted(new.iterdir(), key=lambda path: (path.stat().st_mtime_ns, path.name))
    for path in staged:
        for leftover in target.glob(f".{glob.escape(path.name)}.{'[0-9a-f]' * 8}.tmp"):
            leftover.unlink(missing_ok=True)
    moves: list[tuple[Path, Path]] = []
    try:
        for path in staged:
            tmp = target / f".{path.name}.{secrets.token_hex(4)}.tmp"
            moves.append((tmp, target / path.name))
            copy_file(path, tmp)
            os.chmod(tmp, path.stat().st_mode & 0o7777)
    except BaseException as error:
        for tmp, _ in moves:
            tmp.unlink(missing_ok=True)
        tmp, dest = moves[-1]
        if isinstance(error, OSError) and error.filename == str(tmp):  # the user never saw it
            raise OSError(error.errno, error.strerror, str(dest)) from error
        raise
    for tmp, dest in moves:
        os.replace(tmp, dest)
    for entry in target.iterdir():
        stale = any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in replaced)
        if stale and entry.is_file() and not (new / entry.name).exists():
            entry.unlink()
    shutil.rmtree(new)


def _staging_record(staging: Path) -> dict | None:
    try:
        record = json.loads((staging / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _abandoned(partial: Path) -> bool:
    """Whether the staging folder ``partial`` lost its writer: nobody holds the lock of its
    record (:func:`dreamtext.processes.record_held`; the system drops it when the writer ends,
    however it ends, on another machine of a file system whose locks reach across machines
    too: then once the record is :data:`ELSEWHERE_GRACE_S` old), or, where its record has no
    lock (a file system without locks, an older writer), the process it names is gone
    (:func:`dreamtext.processes.record_alive`), or it has no record well after it was made.
    One of another machine that no lock can tell of is left alone; one of this machine's name
    and another ``boot_id`` written before this boot (its ``updated``) is of an earlier boot
    once :data:`ELSEWHERE_GRACE_S` old (:func:`dreamtext.processes.earlier_boot`: the record is
    written once, and until then it may be a twin machine's export that still writes).

    A free lock of this machine's name and another ``boot_id`` (an export a reboot killed, or a
    twin machine's where locks do not reach across machines) is a writer gone at once where
    the folder lies on a local disk (:func:`dreamtext.processes.locks_reach_every_writer`): no
    twin writes there, and the reboot dropped the lock; elsewhere it waits the grace."""
    record = _staging_record(partial)
    if record is None:
        return file_age(partial) > RECORD_GRACE_S
    held = record_held(partial / RECORD_FILE) if record.get("locked") is True else None
    if held is False:
        return (
            on_this_machine(record)
            or (record.get("host") == HOST and locks_reach_every_writer(partial))
            or file_age(partial / RECORD_FILE) > ELSEWHERE_GRACE_S
        )
    return held is None and record_alive(record, every=ELSEWHERE_GRACE_S) is False


__all__ = [
    "FORMATS",
    "ExportOptions",
    "ExportResult",
    "available_memory",
    "check_export_folders",
    "check_ffmpeg",
    "check_memory",
    "export_field",
    "export_memory",
    "export_workspace",
    "find_latest_workspace",
    "finish_replacements",
    "mp4_is_whole",
    "object_name",
    "recorded_options",
    "render_turntable",
    "resolve_workspace",
    "stage_memory",
    "turntable_poses",
    "write_all_atomically",
]
