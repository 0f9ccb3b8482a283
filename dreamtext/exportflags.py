"""The ``dreamtext export`` options (:class:`ExportOptions`) and their flags: one row per option.

The table is the one place an export option meets its flag: the export parser adds its flags
from it (:func:`add_export_flags`), ``cmd_export`` lays the given ones over the run's recorded
options (:func:`apply_export_flags`), and ``dreamtext batch`` writes the ``dreamtext export``
command that re-exports a finished run with changed options (:func:`export_flag_words`). A new
export option is one row here. Torch-free: the flags are parsed and checked before the export's
imports (torch: seconds), and ``dreamtext.config`` takes :class:`ExportOptions` from here, not
from ``dreamtext.export`` (torch, trimesh and the mesh libraries: seconds for every command that
reads a config, ``batch --status`` included).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from dreamtext.errors import DreamtextError
from dreamtext.flagtypes import DEVICE_FORMS, within

# The mesh files an export can write (``--formats``; ``ExportOptions.formats``).
FORMATS: tuple[str, ...] = ("glb", "obj", "ply")


def _at_least(low: int, what: str) -> Callable[[str], int]:
    """An argparse ``type=``: an integer of at least ``low`` (the bounds of
    ``ExportOptions.validate``, checked before the export's imports)."""
    return within(int, low, math.inf, what)


def _video_size(text: str) -> int:
    """``--video-size``: an even number of pixels, at least 16 (H.264 in yuv420p halves the
    colour planes)."""
    size = _at_least(16, "an even integer of at least 16")(text)
    if size % 2:
        raise argparse.ArgumentTypeError(f"must be an even number of pixels, got {text}")
    return size


# The fewest faces a closed mesh has (a tetrahedron's): a smaller --decimate target cannot be
# reached, and the decimation kept every face, blaming "a non-manifold mesh".
MIN_DECIMATE = 4
# The fewest frames of a turntable (``--frames``; ``ExportOptions.frames``).
MIN_FRAMES = 60


def _face_count(text: str) -> int:
    """``--decimate``: a face count, or 0 for every face (as ``export_options.decimate: 0``); a
    closed mesh has at least :data:`MIN_DECIMATE`."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a face count (0 keeps every face), got '{text}'"
        )
    if 0 < value < MIN_DECIMATE:
        raise argparse.ArgumentTypeError(
            f"a closed mesh has at least {MIN_DECIMATE} faces (0 keeps every face), got '{text}'"
        )
    return value


def _threshold(text: str) -> float | str:
    """``--threshold``: a positive density, or ``auto`` for the renders' surface (the refusal
    names both: it once said only "a positive number")."""
    if text.strip().lower() == "auto":  # as --formats GLB is read as glb
        return "auto"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"expected a positive number or auto, got '{text}'")
    return value


def _format_list(text: str) -> str:
    """``--formats``' argument, refused when an entry is empty (``glb,,obj`` or a trailing
    comma: more likely a format lost in editing than one meant to be left out) or names no
    format of :data:`FORMATS`, so that every refusal of the flag is the parser's line, given
    before the export's imports (``ExportOptions.validate`` checks the names again, for
    config files)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: name formats, e.g. glb,ply")
    if any(not entry.strip() for entry in text.split(",")):
        raise argparse.ArgumentTypeError(
            f"has an empty entry in '{text}': name formats between single commas, e.g. glb,ply"
        )
    unknown = sorted(set(_formats(text)) - set(FORMATS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"has unknown formats {','.join(unknown)}: use a subset of {','.join(FORMATS)}"
        )
    return text


def _formats(text: str) -> tuple[str, ...]:
    """``--formats glb,ply`` as ``ExportOptions.formats`` (checked by its ``validate``), each
    format once (``glb,GLB`` recorded ``["glb", "glb"]`` in mesh.json)."""
    return tuple(dict.fromkeys(f.strip().lower() for f in text.split(",")))


def option_flag(option: str) -> str:
    """The ``dreamtext export`` flag of the ``ExportOptions`` field ``option``:
    ``texture_size`` → ``--texture-size`` (argparse stores it back as ``texture_size``)."""
    return "--" + option.replace("_", "-")


@dataclass
class ExportOptions:
    """What `dreamtext export` makes. ``threshold=None`` meshes what the renders show (the cells
    light from outside does not reach); a density ``threshold`` meshes the density above it."""

    resolution: int = 256
    threshold: float | None = None
    decimate: int = 50000
    texture_size: int = 1024
    formats: tuple[str, ...] = FORMATS
    video: bool = True
    frames: int = MIN_FRAMES
    video_size: int = 256
    device: str = "auto"

    def validate(
        self,
        source: str | None = None,
        source_of: Callable[[str], str | None] | None = None,
    ) -> None:
        """Raise ``DreamtextError`` naming the option to fix: its ``dreamtext export`` flag, or
        with ``source`` (a config file, a preset) its config field ``export_options.NAME``;
        ``source_of`` names where each option got its value (of several ``--config`` files, the
        one that set it: ``dreamtext.config.setting_source``), ``source`` where it does not
        know."""

        def name(option: str) -> str:
            where = source_of(f"export_options.{option}") if source_of is not None else None
            where = where or source
            if where is None:
                return option_flag(option)
            return f"config field 'export_options.{option}' (in {where})"

        if not self.formats:  # was "has unknown formats (none)": there were none to know
            raise DreamtextError(f"{name('formats')} is empty: name formats, e.g. [glb, ply]")
        unknown = sorted(set(self.formats) - set(FORMATS))
        if unknown:
            listed = ",".join(unknown)
            field = name("formats")
            what = (
                f"unknown {field} {listed}"
                if field.startswith("--")
                else f"{field} has unknown formats {listed}"
            )
            raise DreamtextError(f"{what}: use a subset of glb,obj,ply")
        if self.resolution < 8:
            raise DreamtextError(f"{name('resolution')} must be at least 8")
        if self.decimate < 0:
            raise DreamtextError(f"{name('decimate')} must be a face count, or 0 for every face")
        if 0 < self.decimate < MIN_DECIMATE:
            raise DreamtextError(
                f"{name('decimate')} must be at least {MIN_DECIMATE} (a closed mesh's fewest "
                f"faces), or 0 for every face; got {self.decimate}"
            )
        if self.texture_size < 8:
            raise DreamtextError(f"{name('texture_size')} must be at least 8")
        if self.threshold is not None and self.threshold <= 0:
            raise DreamtextError(f"{name('threshold')} must be a positive density")
        if self.video and self.frames < MIN_FRAMES:
            raise DreamtextError(
                f"a turntable needs at least {MIN_FRAMES} frames ({name('frames')})"
            )
        if source is not None and self.device != "auto":
            # The export at a run's end runs on the run's device, and `dreamtext export` on its
            # own --device (recorded_options drops a recorded one): a config's was never read.
            raise DreamtextError(
                f"{name('device')} is not read ('{self.device}'): the export at the end of a "
                "run runs on the run's --device, and `dreamtext export --device DEVICE` "
                "exports elsewhere; leave it out"
            )
        if self.video and (self.video_size < 16 or self.video_size % 2):
            raise DreamtextError(
                f"the video size ({name('video_size')}) must be an even number of pixels, "
                "at least 16"
            )


@dataclass(frozen=True)
class ExportFlag:
    """One export option's flag (:attr:`flag`, named after the option). ``type``: argparse's
    ``type=`` (``None``: the text as given); ``to_option``: the parsed flag as the option's value;
    ``to_text``: an option's value as the flag's argument. ``switch``: a ``--NAME`` /
    ``--no-NAME`` pair with no argument."""

    option: str
    help: str
    type: Callable[[str], Any] | None = None
    to_option: Callable[[Any], Any] = lambda value: value
    to_text: Callable[[Any], str] = str
    switch: bool = False

    @property
    def flag(self) -> str:
        return option_flag(self.option)

    def words(self, value: Any) -> list[str]:
        """The command-line words that set the option to ``value``."""
        if self.switch:
            return [self.flag if value else "--no-" + self.flag.removeprefix("--")]
        return [self.flag, self.to_text(value)]


# In --help's order. Unset flags keep what the run's own export used (its config.json's
# export_options), else the defaults in brackets.
EXPORT_FLAGS: tuple[ExportFlag, ...] = (
    ExportFlag(
        "resolution",
        "marching-cubes grid, at least 8 [256]",
        type=_at_least(8, "an integer of at least 8"),
    ),
    ExportFlag(
        "threshold",
        "mesh the density above this iso-level, cavities filled; auto: the surface the renders "
        "show, where light from outside falls to transmittance 1/2 [auto]",
        type=_threshold,
        to_option=lambda value: None if value == "auto" else value,
        to_text=lambda value: "auto" if value is None else str(value),
    ),
    ExportFlag(
        "decimate",
        "target face count, at least 4; 0 keeps every face [50000]",
        type=_face_count,
    ),
    ExportFlag(
        "texture_size",
        "texture size in pixels, at least 8; a power of two (512, 1024, 2048) suits every "
        "viewer (WebGL 1 does not mipmap other sizes) [1024]",
        type=_at_least(8, "an integer of at least 8"),
    ),
    ExportFlag(
        "formats",
        "comma-separated subset of glb,obj,ply [all]",
        type=_format_list,
        to_option=_formats,
        to_text=",".join,
    ),
    ExportFlag("video", "the turntable; --no-video skips it [on]", switch=True),
    ExportFlag(
        "video_size",
        "the turntable's two views side by side (albedo, depth), each VIDEO_SIZE pixels "
        "square: a video twice as wide as high; even, at least 16; its render time grows with "
        "its square (128 takes about a third of 256's) [256]",
        type=_video_size,
    ),
    ExportFlag(
        "frames",
        "turntable frames, one turn at 30 frames a second (60: 2 s), at least 60 [60]",
        type=_at_least(60, "an integer of at least 60"),
    ),
    ExportFlag("device", f"{DEVICE_FORMS} [auto]"),
)

BY_OPTION = {row.option: row for row in EXPORT_FLAGS}


def add_export_flags(parser: argparse.ArgumentParser) -> None:
    """The export options' flags, each unset (``None``) unless given."""
    for row in EXPORT_FLAGS:
        if row.switch:
            parser.add_argument(
                row.flag, action=argparse.BooleanOptionalAction, default=None, help=row.help
            )
        else:
            parser.add_argument(row.flag, type=row.type, help=row.help)


def apply_export_flags(args: argparse.Namespace, options: Any) -> None:
    """Set each of ``options``' fields (an ``ExportOptions``) whose flag ``args`` gives."""
    for row in EXPORT_FLAGS:
        value = getattr(args, row.option)
        if value is not None:
            setattr(options, row.option, row.to_option(value))


def export_flag_words(options: Any, names: Iterable[str]) -> list[str]:
    """The flags that set ``options``' fields named in ``names`` (an ``ExportOptions``'s), for
    a ``dreamtext export`` command."""
    return [word for name in names for word in BY_OPTION[name].words(getattr(options, name))]
