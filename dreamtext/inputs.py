"""The files and folders a command line names, read and checked without torch.

The CLI checks them before it imports torch and the model libraries (seconds, hundreds of MB; tens
of seconds on a cluster's network file system), so that a mistyped path or a broken YAML file is
its one line at once: presets and ``--config`` YAML files (:func:`read_yaml`), a batch's prompts
file (:func:`read_prompt_lines`) and ``--workspace ROOT`` (:func:`check_root`), and the folder
names of prompts and images (:func:`slugify`). :mod:`dreamtext.config` and :mod:`dreamtext.batch`
use the same functions, so the lines are the same either way.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

import yaml

from dreamtext.errors import DreamtextError
from dreamtext.processes import enclosing_run

DEFAULT_WORKSPACE_ROOT = Path("workspace")
"""Where runs go without ``--workspace``: ``workspace/<slug of the prompt or image>``."""

# Sections of a run's config.json that are not TrainConfig fields: the settings of the stages
# before text→3D, recorded by dreamtext.imageto3d from the start of such a run. ``image_to_3d``:
# ``{"image", "describe": DescribeOptions, "descriptor": DescriptorOptions}``; ``diverse``
# (``text --diverse``): ``{"prompt", "seed", "sample_steps", "sample_guidance_scale", "image"}``.
STAGE_SECTIONS = ("image_to_3d", "diverse")


def preset_dirs(package: Path | None = None) -> list[Path]:
    """Where presets live: the installed package's ``configs/``, else (a source checkout, where
    the presets sit beside the package) the checkout's ``configs/``. An installed package never
    looks beside itself: there, ``site-packages/configs/`` would be another distribution's."""
    here = package or Path(__file__).resolve().parent
    if (here / "configs").is_dir():
        return [here / "configs"]
    return [here.parent / "configs"]


def available_presets() -> list[str]:
    names = {p.stem for d in preset_dirs() if d.is_dir() for p in d.glob("*.yaml")}
    return sorted(names)


def preset_path(name: str) -> Path:
    for folder in preset_dirs():
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    known = ", ".join(available_presets()) or "none found"
    raise DreamtextError(f"unknown preset '{name}'; available presets: {known}")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers as YAML 1.2 does. PyYAML follows YAML 1.1, whose
    floats need a dot and a signed exponent (``5.0e-3``), so ``lr: 5e-3`` was the string
    ``'5e-3'``, and refused as one; and whose integers with a leading 0 are octal (``seed: 010``
    was 8) and ``12:30`` base 60 (750). Here ``5e-3`` and ``1e3`` are floats, ``010`` is 10,
    ``0o10`` 8, ``0x10`` 16, and ``12:30`` a string. Digits may be grouped with ``_``
    (``1_000``), as PyYAML allows. Booleans keep YAML 1.1's words (``yes``, ``on``)."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        """An integer scalar by YAML 1.2's rules: decimal, ``0o`` octal or ``0x`` hex."""
        text = str(self.construct_scalar(node)).replace("_", "")
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")
        if digits[:2] in ("0o", "0x"):
            return sign * int(digits[2:], 8 if digits[1] == "o" else 16)
        return sign * int(digits, 10)


_NUMBER_TAGS = ("tag:yaml.org,2002:float", "tag:yaml.org,2002:int")
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _NUMBER_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*|0o[0-7][0-7_]*|0x[0-9a-fA-F][0-9a-fA-F_]*)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a config YAML file into a dict, turning every failure into a one-line user error.
    Numbers are read as YAML 1.2 reads them (:class:`_Loader`)."""
    try:
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_Loader)
    except FileNotFoundError:
        raise DreamtextError(
            f"config file '{path}' does not exist; check the --config path"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DreamtextError(f"cannot read config file '{path}': {exc}") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        at = f" (line {line + 1})" if line is not None else ""
        raise DreamtextError(f"config file '{path}' is not valid YAML{at}; fix it") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DreamtextError(f"config file '{path}' must hold a mapping of field: value")
    return data


# The most UTF-8 bytes of a slug: 60 CJK letters. Names made from it must stay under the 255
# bytes of a file name: batch's ``<slug>_<8 hex>`` and the temp file of its lock beside it,
# ``.<that>.lock.<32 hex>.tmp`` (232 bytes), and ``--diverse``'s ``<slug>_diverse_seed<N>``.
SLUG_MAX_BYTES = 180


def slugify(prompt: str, max_length: int = 60) -> str:
    """A folder name for a prompt: its words (letters and digits of any script, lower case)
    joined by '_' (``"A castle!"`` → ``a_castle``, ``"Crème brûlée"`` → ``crème_brûlée``,
    ``"一座城堡"`` → ``一座城堡``), at most ``max_length`` characters. A prompt
    without letters or digits (``"🐱"``) is ``run_<8 hex digits of its SHA-256>``, so
    that two of them do not share a folder; a blank one is ``run``.

    The prompt is NFC-normalised first, so an accent typed as a combining mark gives the same
    folder as the precomposed letter. Combining marks stay with their letters: the vowel signs
    and viramas of Devanagari or Thai (``"नमस्ते"`` → ``नमस्ते``, not ``नमस_त``), Arabic's
    harakat, the dot of a lower-cased ``İ``. At most :data:`SLUG_MAX_BYTES` bytes in UTF-8 too:
    60 letters of four bytes each (``𝓪``, the letters of pasted "fancy text") left no room for
    what batch adds to the name."""
    normal = unicodedata.normalize("NFC", prompt)
    kept = "".join(c if unicodedata.category(c)[0] in "LNM" else " " for c in normal.lower())
    slug = "_".join(kept.split())[:max_length]
    while len(slug.encode("utf-8")) > SLUG_MAX_BYTES:
        slug = slug[:-1]
    if slug.rstrip("_"):
        return slug.rstrip("_")
    if not normal.strip():
        return "run"
    return f"run_{hashlib.sha256(normal.encode('utf-8')).hexdigest()[:8]}"


def ascii_slug(prompt: str, max_length: int = 60) -> str:
    """The folder name dreamtext gave a prompt before :func:`slugify` kept letters of every
    script: ASCII letters and digits only (``"Crème brûlée"`` → ``cr_me_br_l_e``, every
    non-Latin prompt → ``run``). Only looked up, so that a run made then is found again
    (:func:`prompt_workspace`)."""
    slug = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")
    return slug[:max_length].rstrip("_") or "run"


def read_prompt_lines(path: Path) -> list[str]:
    """The lines of a prompts file, as :func:`dreamtext.batch.read_prompts` reads them; a file
    that is missing, not UTF-8 or unreadable is a :class:`DreamtextError`."""
    try:
        # utf-8-sig: files saved by Windows editors start with a BOM, which strip() keeps.
        # Lines end at a newline only (\r\n and \r read as one), as editors, wc and sed number
        # them: splitlines() also split at a form feed or U+2028, and the messages named lines
        # after it by numbers the file does not have.
        return path.read_text(encoding="utf-8-sig").split("\n")
    except FileNotFoundError:
        raise DreamtextError(
            f"prompts file {path} does not exist; pass a text file with one prompt per line"
        ) from None
    except UnicodeDecodeError as error:
        raise DreamtextError(
            f"prompts file {path} is not UTF-8 text ({error.reason} at byte {error.start}); "
            "save it as UTF-8 text with one prompt per line"
        ) from None
    except OSError as error:
        raise DreamtextError(f"cannot read prompts file {path}: {error}") from None


def root_write_error(root: Path) -> OSError | None:
    """Why a file cannot be made, written and removed in ``root`` (the error, with ``root`` as
    its file), or ``None`` when it can: every line's lock and ``batch.jsonl`` go there."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".dreamtext-write-check.", dir=root)
        try:
            os.write(fd, b"\n")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as error:
        return OSError(error.errno, error.strerror or str(error), str(root))
    return None


def check_root(root: Path) -> None:
    """``--workspace ROOT`` is a folder, or nothing yet, inside a folder (not inside a file), and
    neither a run's folder nor inside one (:func:`dreamtext.processes.enclosing_run`): the
    batch's runs are its subfolders."""
    if root.exists() and not root.is_dir():
        raise DreamtextError(f"--workspace {root} is a file; pass a folder")
    run = enclosing_run(root)
    if run is not None:
        where = "is the folder of a run" if run == root else f"is inside the run in {run}"
        raise DreamtextError(
            f"--workspace {root} {where}; batch's --workspace is the folder that holds its "
            "runs: pass a folder outside any run"
        )
    for parent in root.parents:
        if parent.exists():
            if not parent.is_dir():
                raise DreamtextError(
                    f"--workspace {root} is inside the file {parent}; pass a folder"
                )
            return


def check_root_writable(root: Path) -> None:
    """A file can be made, written and removed in ``root`` (:func:`root_write_error`): a
    read-only file system, a folder of another user's or a full disk would otherwise fail every
    line, one after another."""
    error = root_write_error(root)
    if error is not None:
        space = error.errno in (errno.ENOSPC, errno.EDQUOT)
        raise DreamtextError(
            f"cannot write in --workspace {root}: {error.strerror}; "
            + ("free space on its disk (or quota) or " if space else "")
            + "pass a folder you can write to"
        )


def check_image_path(path: Path) -> None:
    """Refuse a ``path`` that is a folder or no file, as :func:`load_image` does first (the CLI
    checks this before it imports torch)."""
    if path.is_dir():
        raise DreamtextError(f"{path} is a folder, not an image; pass a PNG, JPEG or WebP file")
    if not path.is_file():
        raise DreamtextError(f"image not found: {path} (check the path)")
