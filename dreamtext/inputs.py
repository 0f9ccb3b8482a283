"""The files and folders a command line names, read and checked without torch.

The CLI checks them before it imports torch and the model libraries (seconds, hundreds of MB; tens
of seconds on a cluster's network file system), so that a mistyped path or a broken YAML file is
its one line at once: presets and ``--config`` YAML files (:func:`read_yaml`), a batch's prompts
file (:func:`read_prompt_lines`) and ``--workspace ROOT`` (:func:`check_root`), and the folder
names of prompts and images (:func:`slugify`), whether this machine can have a CUDA GPU at
all (:func:`no_cuda_here`), and the CPU threads a run gets and how OpenMP's idle threads wait
(:func:`cpu_threads`, :func:`spin_briefly`), which must be settled before torch loads (and what
libgomp read of them then, :func:`openmp_wait_read`).
:mod:`dreamtext.config`, :mod:`dreamtext.batch` and :mod:`dreamtext.devices` use the same
functions, so the lines are the same either way.
"""

from __future__ import annotations

import difflib
import errno
import functools
import hashlib
import os
import re
import shlex
import shutil
import stat
import sys
import tempfile
import unicodedata
from collections.abc import Mapping, MutableMapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from dreamtext.errors import DreamtextError, utf8_locale_fix
from dreamtext.flagtypes import SHARD_FORM, shard_pair
from dreamtext.processes import LOCK_NAME, enclosing_run, is_run_folder, read_status_json
from dreamtext.prompts_text import is_prompt_line

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


def _preset_files() -> dict[str, Path]:
    """Each preset's name and file: the ``*.yaml`` files of :func:`preset_dirs`."""
    return {p.stem: p for d in preset_dirs() if d.is_dir() for p in d.glob("*.yaml") if p.is_file()}


def available_presets() -> list[str]:
    return sorted(_preset_files())


def preset_path(name: str) -> Path:
    """The file of the preset ``name``: a name of :func:`available_presets`, never a path (a
    file of one's own is a ``--config``, checked as one)."""
    files = _preset_files()
    if name in files:
        return files[name]
    known = ", ".join(sorted(files)) or "none found"
    # A file in the current folder (`--preset mine.yaml`) has no separator to tell it by.
    is_file = "/" in name or "\\" in name or name.endswith((".yaml", ".yml"))
    hint = " (a file of your own goes in --config FILE)" if is_file else ""
    raise DreamtextError(f"unknown preset '{name}'; available presets: {known}{hint}")


class DuplicateKey(yaml.YAMLError):
    """A YAML mapping with a key twice (``key``, at 1-based ``lines``)."""

    def __init__(self, key: Any, *lines: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.lines = key, lines


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers as YAML 1.2 does. PyYAML follows YAML 1.1, whose
    floats need a dot and a signed exponent (``5.0e-3``), so ``lr: 5e-3`` was the string
    ``'5e-3'``, and refused as one; and whose integers with a leading 0 are octal (``seed: 010``
    was 8) and ``12:30`` base 60 (750). Here ``5e-3`` and ``1e3`` are floats, ``010`` is 10,
    ``0o10`` 8, ``0x10`` 16, and ``12:30`` a string. Digits may be grouped with ``_``
    (``1_000``), as PyYAML allows. Booleans keep YAML 1.1's words (``yes``, ``on``)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """A mapping, refusing a key it has twice (:class:`DuplicateKey`): PyYAML keeps the
        last, so a config that wrote ``guidance:`` twice lost every setting of the first
        section without a word."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # << *anchor: its keys may be set again
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise DuplicateKey(key, seen[key] + 1, key_node.start_mark.line + 1)
                seen[key] = key_node.start_mark.line
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """A node's value; a tag its value does not fit (``seed: !!int 1.5``, ``lr: !!float
        fast``, ``!!bool maybe``), whose constructor fails with a Python error and no line, is a
        YAML error at the node's line."""
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            value = node.value if isinstance(node, yaml.ScalarNode) else "this value"
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.tag.rsplit(':', 1)[-1]} does not fit {value!r}", node.start_mark
            ) from exc

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
        text = read_text_once(Path(path), encoding="utf-8")
        if utf16_without_bom(text):
            raise DreamtextError(
                f"config file '{path}' is not UTF-8 text ({UTF16_WITHOUT_BOM}); save it as UTF-8"
            )
        data = yaml.load(text, Loader=_Loader)
    except FileNotFoundError:
        raise DreamtextError(
            f"config file '{path}' does not exist; check the --config path"
        ) from None
    except DuplicateKey as twice:
        first, second = twice.lines
        where = f"line {first}" if first == second else f"lines {first} and {second}"
        raise DreamtextError(
            f"config file '{path}' sets '{twice.key}' twice ({where}), and only the second "
            "would count; merge them"
        ) from None
    except UnicodeDecodeError as error:  # a UTF-16 file (PowerShell's `>`), a Latin-1 one
        raise DreamtextError(
            f"config file '{path}' is not UTF-8 text ({not_utf8_where(error)}); save it as UTF-8"
        ) from None
    except IsADirectoryError:
        raise DreamtextError(
            f"config file '{path}' is a folder; pass --config a YAML file (e.g. a run's "
            "config.json)"
        ) from None
    except OSError as exc:
        raise DreamtextError(f"cannot read config file '{path}': {exc}") from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        at = f" (line {line + 1})" if line is not None else ""
        if isinstance(exc, yaml.constructor.ConstructorError) and exc.context is None:
            at = at[:-1] + f": {exc.problem})" if at else f" ({exc.problem})"  # a tag's value
        raise DreamtextError(f"config file '{path}' is not valid YAML{at}; fix it") from None
    except RecursionError:  # PyYAML composes nested collections recursively: `[[[[…` deep
        raise DreamtextError(
            f"config file '{path}' nests its lists or mappings too deeply to read; fix it"
        ) from None
    except (ValueError, TypeError, KeyError, AttributeError):
        # A collection's tag its value does not fit (`!!set [1]`): built after its node, where
        # _Loader.construct_object does not see it.
        raise DreamtextError(
            f"config file '{path}' is not valid YAML (a value its tag does not fit); fix it"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DreamtextError(f"config file '{path}' must hold a mapping of field: value")
    return data


def config_files_list(config_file: str | Path | Sequence[str | Path] | None) -> list[Path]:
    """``--config``'s files as a list (one file, several, or none)."""
    if isinstance(config_file, (str, Path)):
        config_file = [config_file]
    return [Path(path) for path in config_file or ()]


def own_config_file(
    config_file: str | Path | Sequence[str | Path] | None, workspace: str | Path
) -> Path | None:
    """The ``--config`` file that lies in ``workspace`` (the folder the command runs in), such
    as ``RUN/config.json`` typed without ``--workspace``: the run recorded there is the one the
    command would continue or replace, not a new one beside it. ``None`` when none does."""
    # os.path.realpath, not Path.resolve: a symlink loop there raises RuntimeError (a traceback
    # before the checks that name it in one line).
    folder = Path(os.path.realpath(workspace))
    return next(
        (
            path
            for path in config_files_list(config_file)
            if Path(os.path.realpath(path)).parent == folder
        ),
        None,
    )


def configured_workspace(
    config_file: str | Path | Sequence[str | Path] | None, run_records: bool = True
) -> str | None:
    """The ``workspace`` the ``--config`` files name (the last that names one; a run's
    config.json names its own folder: :func:`dreamtext.processes.is_run_folder`), ``None`` when
    none does: where a command without ``--workspace`` runs, and so where its ``--resume``
    looks. Without ``run_records`` a file named config.json, a run's record, names none
    (``image IMG --config RUN/config.json`` takes RUN's options for IMG's own folder)."""
    named = []
    for path in config_files_list(config_file):
        if not run_records and path.name == "config.json":
            continue
        name = read_yaml(path).get("workspace")
        if isinstance(name, str) and name and path.name == "config.json":
            name = str(path.parent) if is_run_folder(path.parent) else name
        if isinstance(name, str) and name:
            try:  # a file's UTF-8 name under a locale that is not: a traceback at its first use
                os.fsencode(name)
            except UnicodeEncodeError:
                raise DreamtextError(
                    f"config file '{path}' names the workspace {name}, which cannot be a file "
                    f"name in {utf8_locale_fix()} or pass --workspace"
                ) from None
            named.append(os.path.expanduser(name))
    return named[-1] if named else None


# Where an image→3D run keeps its learned tokens, in its folder (dreamtext.descriptor).
RUN_LEARNED_EMBEDS = ("descriptor", "learned_embeds.safetensors")


def _moved_not_changed(name: str, values: Any) -> bool:
    """Whether a resume's change of ``name`` (``[old, new]``) left every step's settings as they
    were: the iterations, where the run is (``workspace``), the export after the last step
    (``export``, ``export_options.*``: config.json keeps the ones it ran with), or the path of
    its own learned tokens (the run folder moved: :func:`dreamtext.config.own_learned_embeds`)."""
    if name in ("iters", "workspace", "export") or name.startswith("export_options."):
        return True
    paths = values if isinstance(values, list) else []
    own = [isinstance(p, str) and Path(p).parts[-2:] == RUN_LEARNED_EMBEDS for p in paths]
    return name == "guidance.textual_inversion" and len(own) == 2 and all(own)


def resumes_line(path: Path, data: dict[str, Any]) -> str | None:
    """The line for stderr when ``data``, the ``--config`` file ``path``, is the config.json of a
    run whose ``resumes`` changed more than where it is and how long it runs: a run started from
    it trains every step with the last settings, so it is not that run again. ``None`` else.
    With ``guidance.t_anneal`` how long it runs is a step's setting too: the timesteps anneal
    over ``iters``, so each step before a resume that changed it drew them on another schedule."""
    guidance = data.get("guidance")
    anneals = isinstance(guidance, dict) and guidance.get("t_anneal") is True
    changed = {
        f"{name} at step {resume.get('step')}"
        for resume in data.get("resumes") or []
        if isinstance(resume, dict) and isinstance(resume.get("changed"), dict)
        for name, values in resume["changed"].items()
        if not _moved_not_changed(name, values) or (name == "iters" and anneals)
    }
    if not changed:
        return None
    return (
        f"dreamtext: {path} is of a run whose resumes changed {', '.join(sorted(changed))}: "
        "this run trains every step with its last settings, so it is not that run again"
    )


def refuse_recorded_presets(path: Path, data: dict[str, Any]) -> None:
    """A ``--config`` YAML (not a run's config.json) may not hold ``presets``: that is a record
    of what a run was built on, and a preset is named with ``--preset``. A run's config.json
    copied under another name (it holds ``ran_on``) is told to keep its name, by which it is
    read as a run's record."""
    if "presets" not in data:
        return
    fix = "name a preset with --preset NAME"
    if "ran_on" in data:
        fix = (
            "a copy of a run's config.json is read as one under that name only: copy it as "
            "config.json into a folder of its own (or delete its presets line)"
        )
    raise DreamtextError(
        f"'presets' in {path} is what a run's config.json records it was built on; {fix}"
    )


# Keys a user types for a field of another name: the flag's name, not a config field's.
FIELD_FOR = {"epochs": "iters (100 an epoch: `epochs: 200` is `iters: 20000`)"}


def unknown_field(
    where: str,
    key: Any,
    names: list[str],
    prefix: str,
    source: str,
    elsewhere: Sequence[str] = (),
) -> str:
    """The line for a config key that is no field: the field of that name in another section
    (``elsewhere``: ``guidance_scale`` at the top level is ``guidance.guidance_scale``), the
    field a flag's name stands for (:data:`FIELD_FOR`), else the nearest field's name when one
    is close, and the fields there are (a run's config.json holds them all, with their
    values)."""
    if elsewhere:
        return f"unknown config field '{where}' in {source}; did you mean '{elsewhere[0]}'?"
    if not prefix and key in FIELD_FOR:
        return f"unknown config field '{where}' in {source}; did you mean {FIELD_FOR[key]}?"
    # `presets` is a record of the run (a --config holding it is refused): not one to offer.
    names = [name for name in names if prefix or name != "presets"]
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
    if close:
        return f"unknown config field '{where}' in {source}; did you mean '{prefix}{close[0]}'?"
    section = f"section '{prefix[:-1]}'" if prefix else "top level"
    return (
        f"unknown config field '{where}' in {source}; the {section} has: {', '.join(names)} "
        "(a run's config.json lists every field with its value)"
    )


# The keys of the stage sections; ``image``, ``word_lists`` (what the search's word lists held)
# and ``diverse``'s ``prompt``, ``seed`` and ``textual_inversion`` (the learned words its sample
# read) are records of the run (its input), the others options of its stages.
STAGE_KEYS = {
    "image_to_3d": ("image", "describe", "descriptor", "word_lists"),
    "diverse": (
        "prompt",
        "seed",
        "sample_steps",
        "sample_guidance_scale",
        "image",
        "textual_inversion",
    ),
}
# The records among them: the run's input, which the command line gives, not an option to set.
STAGE_RECORDS = frozenset({"image", "prompt", "seed", "textual_inversion", "word_lists"})


def config_file_stage_sections(
    config_file: str | Path | Sequence[str | Path] | None,
) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    """The :data:`STAGE_SECTIONS` of the ``--config`` files, as ``(file, {section: mapping})``
    in their order (a file without them is left out): a run's config.json records them, so
    that ``image IMG --config RUN/config.json`` runs the stages with the run's options
    (:func:`dreamtext.imageto3d.resolve_image_options`); a YAML may give them too. A section
    that is no mapping, or a key no section has, is a :class:`DreamtextError`
    (:func:`stage_sections`)."""
    out = []
    for path in config_files_list(config_file):
        sections = stage_sections(read_yaml(path), str(path))
        if sections:
            out.append((str(path), sections))
    return out


def stage_sections(data: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """The :data:`STAGE_SECTIONS` of one config file's ``data`` (``source``: the file, for the
    refusal), ``{}`` for none. A section that is no mapping, or a key of a section that is none
    of its :data:`STAGE_KEYS`, is a :class:`DreamtextError`; the keys inside its options are
    :func:`dreamtext.imageto3d.check_stage_sections`' to check."""
    sections = {}
    for name in STAGE_SECTIONS:
        if name not in data:
            continue
        section = data[name]
        if not isinstance(section, dict):
            raise DreamtextError(f"config section '{name}' in {source} must be a mapping")
        for key in section:
            if key not in STAGE_KEYS[name]:
                raise DreamtextError(
                    unknown_field(f"{name}.{key}", key, list(STAGE_KEYS[name]), f"{name}.", source)
                )
        sections[name] = section
    return sections


# The most UTF-8 bytes of a slug: 60 CJK letters. Names made from it must stay under the 255
# bytes of a file name: batch's ``<slug>_<8 hex>`` and the temp file of its lock beside it,
# ``.<that>.lock.<32 hex>.tmp`` (232 bytes), and ``--diverse``'s ``<slug>_diverse_seed<N>``.
SLUG_MAX_BYTES = 180
VIRAMA = 9  # the canonical combining class of a virama (halant), which joins two letters


def slugify(prompt: str, max_length: int = 60, whole_letters: bool = True) -> str:
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
    what batch adds to the name. Cut there, a letter goes with its marks, or not at all: the
    cut fell between them (``…ते`` cut to ``…त``, another letter), or after a virama, which
    joins its letter to the next (``स्ते``: the slug ended in a bare ``स्``). The marks are
    those of category M: a Devanagari or Thai vowel sign has combining class 0
    (``unicodedata.combining``), which tells only a virama (class 9). ``whole_letters=False``:
    the name earlier versions cut so (:func:`split_letter_slug`)."""
    normal = unicodedata.normalize("NFC", prompt)
    kept = "".join(c if unicodedata.category(c)[0] in "LNM" else " " for c in normal.lower())
    words = "_".join(kept.split())
    end = min(len(words), max_length)
    while end > 0 and (
        len(words[:end].encode("utf-8")) > SLUG_MAX_BYTES
        or (whole_letters and end < len(words) and _inside_a_letter(words, end))
    ):
        end -= 1
    slug = words[:end]
    if slug.rstrip("_"):
        return slug.rstrip("_")
    if not normal.strip():
        return "run"
    return f"run_{hashlib.sha256(normal.encode('utf-8')).hexdigest()[:8]}"


def _inside_a_letter(words: str, end: int) -> bool:
    """Whether a cut of ``words`` before index ``end`` parts a letter from its marks, or a virama
    from the letter it joins its own to."""
    return (
        unicodedata.category(words[end])[0] == "M"
        or unicodedata.combining(words[end - 1]) == VIRAMA
    )


def earlier_slugs(prompt: str) -> tuple[str, str]:
    """The folder names earlier versions of dreamtext gave ``prompt`` where :func:`slugify` now
    gives another: :func:`ascii_slug` (before slugs kept non-ASCII letters) and
    :func:`split_letter_slug` (before a cut kept a letter with its marks). Only looked up, so
    that a run made then is found again; either may equal the slug."""
    return ascii_slug(prompt), split_letter_slug(prompt)


def split_letter_slug(prompt: str) -> str:
    """The folder name dreamtext gave a long prompt before :func:`slugify` cut it between whole
    letters: its last letter's marks cut off (``…त`` for ``…ते``), or a bare virama at its end.
    Only looked up, so that a run made then is found again (:func:`prompt_workspace`)."""
    return slugify(prompt, whole_letters=False)


def ascii_slug(prompt: str, max_length: int = 60) -> str:
    """The folder name dreamtext gave a prompt before :func:`slugify` kept letters of every
    script: ASCII letters and digits only (``"Crème brûlée"`` → ``cr_me_br_l_e``, every
    non-Latin prompt → ``run``). Only looked up, so that a run made then is found again
    (:func:`prompt_workspace`)."""
    slug = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")
    return slug[:max_length].rstrip("_") or "run"


def owner_value(kind: str, prompt: str) -> str:
    """How :func:`dreamtext.config.run_owner` names a run's prompt: the prompt NFC-normalised
    for text→3D (an accent typed as a combining mark is the same prompt, in the same folder:
    :func:`slugify`), the image's absolute path for image→3D."""
    if kind == "image":
        return os.path.realpath(prompt)  # as Path.resolve, without its RuntimeError on a loop
    return unicodedata.normalize("NFC", prompt)


def write_elsewhere(workspace: str | Path, go_on: str) -> str:
    """What to do where ``workspace`` cannot be written (the ``fix`` of
    :func:`dreamtext.runfiles.check_writable`): a folder that holds a run
    (:func:`dreamtext.processes.is_run_folder`) is copied and the run goes on in the copy
    (``go_on``: the command that goes on there), as another folder would start it over; a new
    run just goes elsewhere."""
    if is_run_folder(Path(workspace)):
        return f"copy the run to a folder you can write and {go_on} with --workspace COPY"
    return "pass --workspace a folder you can write"


def same_prompt(recorded: object, prompt: str) -> bool:
    """Whether ``recorded`` (a run's prompt, read from its files) is the text prompt ``prompt``,
    up to Unicode normalisation (:func:`owner_value`)."""
    return isinstance(recorded, str) and owner_value("text", recorded) == owner_value(
        "text", prompt
    )


# A word of a prompts file's line that may be a command-line flag (``--iters``, ``--seed=3``): a
# space or the line's start before it, then ``--`` and a letter; its name ends at ``=``.
FLAG_IN_LINE = re.compile(r"(?<!\S)(--[A-Za-z][\w-]*)")


@functools.cache
def batch_flags() -> frozenset[str]:
    """The flags ``dreamtext batch`` takes (``--iters``, ``--no-export``, ...), from its parser.
    A word of a prompt that starts with ``--`` but is none of them (``a --weird-- style``) is
    words of the prompt."""
    from dreamtext.cli import build_parser  # the CLI's own parser: no list to keep in step

    batch = build_parser().commands["batch"]
    return frozenset(flag for flag in batch._option_string_actions if flag.startswith("--"))


# The text of each input file that is not a regular file (a pipe: `dreamtext batch
# <(grep cube prompts.txt)`, `--config <(...)`, `--nouns <(...)`, /dev/stdin), read once per
# process: the early checks and the command both read it, and a pipe's second reader got
# nothing ("holds no prompts", "word list is empty", a --config silently of no settings).
# Keyed by the path and the pipe's own identity (device, inode), not the path alone: a later
# pipe given the same descriptor number (/dev/fd/63 again) is another file.
_READ_ONCE: dict[tuple[Path, int, int], str] = {}


def not_utf8_where(error: UnicodeDecodeError) -> str:
    """What a file's :class:`UnicodeDecodeError` found, and on which line as an editor numbers it
    (``invalid start byte: byte 0xFF on line 2``): a byte offset (counted after a BOM) is hard to
    find in an editor."""
    line = len(re.split(rb"\r\n|\r|\n", error.object[: error.start]))
    return f"{error.reason}: byte 0x{error.object[error.start]:02X} on line {line}"


UTF16_WITHOUT_BOM = "UTF-16 without a byte order mark: a NUL byte beside each letter"


def utf16_without_bom(text: str) -> bool:
    """Whether ``text``, read as UTF-8, is UTF-16 saved without a byte order mark (``iconv -t
    UTF-16LE``, Python's ``utf-16-le``): its ASCII letters read as UTF-8 with a NUL beside each.
    A prompts file's line was refused for "the control character U+0000", to be removed, and a
    config file as "not valid YAML", where neither shows in an editor."""
    return "\x00" in text and text.count("\x00") * 3 >= len(text)


def read_text_once(path: Path, encoding: str = "utf-8-sig") -> str:
    """``path``'s text; a pipe's (not a regular file) is read once per process and kept
    (:data:`_READ_ONCE`). Errors are ``read_text``'s, for the caller to word."""
    path = Path(path)
    if path.is_file():
        return path.read_text(encoding=encoding)
    try:
        stat = path.stat()
    except OSError:
        return path.read_text(encoding=encoding)  # raises the error the caller words
    key = (path, stat.st_dev, stat.st_ino)
    if key not in _READ_ONCE:
        _READ_ONCE[key] = path.read_text(encoding=encoding)
    return _READ_ONCE[key]


def read_prompt_lines(path: Path) -> list[str]:
    """The lines of a prompts file, as :func:`dreamtext.batch.read_prompts` reads them; a file
    that is missing, not UTF-8 or unreadable, or whose prompt holds a command-line flag
    (:func:`refuse_flags_in_lines`), is a :class:`DreamtextError`."""
    try:
        # utf-8-sig: files saved by Windows editors start with a BOM, which strip() keeps.
        # Lines end at a newline only (\r\n and \r read as one), as editors, wc and sed number
        # them: splitlines() also split at a form feed or U+2028, and the messages named lines
        # after it by numbers the file does not have.
        # A BOM at the start of a later line (files joined with cat, the second saved by a
        # Windows editor) made "\ufeff# note" a prompt and "\ufeffimage:mug.png" a text one.
        text = read_text_once(path)
    except FileNotFoundError:
        raise DreamtextError(
            f"prompts file {path} does not exist; pass a text file with one prompt per line"
        ) from None
    except IsADirectoryError:
        raise DreamtextError(
            f"prompts file {path} is a folder; pass a text file with one prompt per line"
        ) from None
    except UnicodeDecodeError as error:
        raise DreamtextError(
            f"prompts file {path} is not UTF-8 text ({not_utf8_where(error)}); save it as UTF-8 "
            "text with one prompt per line"
        ) from None
    except OSError as error:
        raise DreamtextError(f"cannot read prompts file {path}: {error}") from None
    if utf16_without_bom(text):
        raise DreamtextError(
            f"prompts file {path} is not UTF-8 text ({UTF16_WITHOUT_BOM}); save it as UTF-8 "
            "text with one prompt per line"
        )
    lines = [line.lstrip("\ufeff") for line in text.split("\n")]
    refuse_flags_in_lines(path, lines)
    return lines


def refuse_flags_in_lines(path: Path, lines: list[str]) -> None:
    """A prompt line (``#`` comments aside) holding a command-line flag, ``a red cube --iters
    5``: a batch takes the whole line as the prompt, so the flag would be trained as words of it
    (hours of a run that is not what was asked), never applied."""
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if text.startswith("#"):
            continue
        flags = [word for word in FLAG_IN_LINE.findall(text) if word in batch_flags()]
        if flags:
            raise DreamtextError(
                f"{path}:{number}: '{flags[0]}' is a command-line flag, not words of a prompt: "
                "a prompts file holds prompts only, one per line; put flags on the dreamtext "
                "batch command line (or in a --config file)"
            )


IMAGE_PREFIX = "image:"
"""A prompts file's line ``image:PATH`` is an image→3D run of the image at ``PATH``."""


def plain_prompt_lines(lines: list[str]) -> bool:
    """Whether :func:`dreamtext.batch.read_prompts` takes ``lines`` (a prompts file's) as they
    are, without a word on stderr and without opening a file: at least one prompt, no
    ``image:`` line, and no prompt twice (compared as it compares them: :func:`repeat_key`)."""
    texts = [raw.strip() for raw in lines]
    texts = [text for text in texts if is_prompt_line(text)]
    if not texts or any(text[: len(IMAGE_PREFIX)].lower() == IMAGE_PREFIX for text in texts):
        return False
    keys = {repeat_key("text", " ".join(text.split())) for text in texts}
    return len(keys) == len(texts)


def repeat_key(kind: str, prompt: str) -> tuple[str, str]:
    """What two lines of a prompts file share when the second repeats the first: the kind and
    :func:`owner_value` of the prompt (spaces collapsed by the caller), a text prompt in lower
    case. ``a red cube`` and ``A Red Cube`` are one prompt to Stable Diffusion's CLIP tokenizer,
    which lower-cases, and get one folder name (:func:`slugify`): two runs of them trained one
    prompt twice."""
    value = owner_value(kind, prompt)
    return kind, (value.lower() if kind == "text" else value)


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` → ``(K, N)`` with ``0 ≤ K < N`` (:func:`dreamtext.flagtypes.shard_pair`; the
    CLI's ``--shard`` refuses another at parsing, :func:`dreamtext.flagtypes.shard`)."""
    pair = shard_pair(text)
    if pair is None:
        raise DreamtextError(f"--shard must be {SHARD_FORM}; got '{text}'")
    return pair


def shard_from_environment(env: Mapping[str, str]) -> tuple[int, int] | None:
    """The share of a SLURM job-array task, or ``None`` outside one.

    ``K = (SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP`` and ``N =
    SLURM_ARRAY_TASK_COUNT``, so ``--array=0-7``, ``--array=1-8`` and ``--array=0-14:2`` all give
    the shares 0/8 … 7/8. An array that is not such a range (``--array=1,5,6``) is an error,
    in every one of its tasks (its ``SLURM_ARRAY_TASK_MAX`` is not ``MIN + (COUNT − 1) ×
    STEP``).
    """
    if "SLURM_ARRAY_TASK_ID" not in env:
        return None
    try:
        task = int(env["SLURM_ARRAY_TASK_ID"])
        first = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        step = int(env.get("SLURM_ARRAY_TASK_STEP", 1) or 1)
        last = int(env["SLURM_ARRAY_TASK_MAX"]) if "SLURM_ARRAY_TASK_MAX" in env else None
        given = int(env["SLURM_ARRAY_TASK_COUNT"]) if "SLURM_ARRAY_TASK_COUNT" in env else None
        if given is None and last is None:
            raise KeyError("SLURM_ARRAY_TASK_MAX")
    except (KeyError, ValueError):
        raise DreamtextError(
            "cannot read this SLURM array task's share from SLURM_ARRAY_TASK_ID/_MIN/_COUNT; "
            "pass --shard K/N"
        ) from None
    # Checked before the count is worked out from it: a step of 0 divided by zero.
    if step < 1:
        raise DreamtextError(
            f"SLURM_ARRAY_TASK_STEP is {step}, not a step of an array range; submit the array "
            "as a range (--array=0-7) or pass --shard K/N"
        )
    count = given if given is not None else (last - first) // step + 1
    if count < 1:
        said = f"SLURM_ARRAY_TASK_COUNT {given}" if given is not None else f"ids {first} to {last}"
        raise DreamtextError(
            f"this SLURM array has no task ({said}); submit the array as a range "
            "(--array=0-7) or pass --shard K/N"
        )
    index, off_step = divmod(task - first, step)
    # --array=3,5,6 (a list, as when only some tasks of an array are submitted again) has its
    # last id elsewhere than a range of COUNT ids from MIN would: every task refuses it alike,
    # rather than some running a share of a partition that leaves lines out. Slurm 22.05 sets
    # STEP=1 for every list, so --array=0,2,4 (MIN 0, MAX 4, COUNT 3) is refused too, though
    # its ids are evenly spaced: the message names the array, not the task's spacing.
    if last is not None and last != first + (count - 1) * step:
        raise DreamtextError(
            f"this SLURM array ({count} tasks, ids {first} to {last}) is a list of ids, not a "
            "range a share can be read from; pass --shard K/N, or with dreamtext's SLURM job "
            "script (batch --sbatch-script) give SHARES (README, 'A SLURM cluster')"
        )
    if off_step or not 0 <= index < count:
        raise DreamtextError(
            f"SLURM array task {task} is not one of {count} evenly spaced tasks from {first}; "
            "submit the array as a range (--array=0-7) or pass --shard K/N"
        )
    return index, count


SBATCH_SCRIPT = "slurm_array.sbatch"
"""The SLURM job-array script in ``dreamtext/data/``: one task per share of a prompts file, each
task's batch a job step, requeued at its time limit (README, "A SLURM cluster")."""


def sbatch_script() -> bytes:
    """The bytes of :data:`SBATCH_SCRIPT` as installed with the package, which
    ``dreamtext batch --sbatch-script`` prints: a wheel has no ``scripts/`` folder, so the script
    lives in the package, and a checkout reads the same file."""
    return resources.files("dreamtext").joinpath("data", SBATCH_SCRIPT).read_bytes()


# What a batch stopped by SIGTERM adds to "run the batch again" inside a SLURM array task, where
# the task may come back by itself: the job script (SBATCH_SCRIPT) requeues a task its time limit
# stopped, and SLURM (--requeue) a preempted one. The batch cannot tell those from a
# `scancel -s TERM`, which stays stopped: all three are one SIGTERM, and the script passes
# nothing on (its USR1 trap turns the limit's warning into that SIGTERM).
REQUEUE_NOTE = (
    "; a task of dreamtext's SLURM job script (batch --sbatch-script) stopped at its time "
    "limit, or preempted, is requeued and does that by itself"
)


def requeue_note(env: Mapping[str, str]) -> str:
    """:data:`REQUEUE_NOTE` inside a SLURM array task (``SLURM_ARRAY_JOB_ID``), ``""`` outside."""
    return REQUEUE_NOTE if "SLURM_ARRAY_JOB_ID" in env else ""


def resolve_shard(flag: str | None, env: Mapping[str, str]) -> tuple[int, int] | None:
    """``--shard`` when given, else the SLURM array task's share, else ``None`` (the whole list)."""
    return parse_shard(flag) if flag is not None else shard_from_environment(env)


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


def link_loops(path: Path) -> bool:
    """Whether following the link ``path`` leads back to it (``l1 → l2 → l1``)."""
    try:
        os.stat(path)
    except OSError as error:
        return error.errno == errno.ELOOP
    return False


def unreachable_link(path: Path) -> str:
    """What the link ``path``, whose target cannot be reached, is: a link to a path that does
    not exist, or one that leads back to itself (:func:`link_loops`), which was "a link to l2,
    which does not exist" of an ``l2`` that does."""
    if link_loops(path):
        return f"a link that leads back to itself ({path} → {os.readlink(path)} → …)"
    return f"a link to {os.readlink(path)}, which does not exist"


def unreadable_image(path: Path) -> DreamtextError:
    """The line for an image ``path`` this user may not read: the file's mode (``chmod 000``) or
    a folder on its way that the user may not enter (another user's home, mode 700)."""
    return DreamtextError(
        f"cannot read {path}: permission denied; make it readable (chmod, or ask its owner) "
        "or pass a copy you can read"
    )


def check_image_reachable(path: Path) -> None:
    """Refuse an image ``path`` in a folder this user may not enter, which ``Path.exists`` and
    ``is_dir`` raise a PermissionError of: the CLI called that a failed write ("pick a folder
    you can write (--workspace)")."""
    try:
        path.stat()
    except PermissionError:
        raise unreadable_image(path) from None
    except OSError:  # no such file, a broken link: for the caller to say
        pass


def check_image_path(path: Path) -> None:
    """Refuse a ``path`` that is a folder or no file, or one in a folder this user may not enter,
    as :func:`load_image` does first (the CLI checks this before it imports torch)."""
    check_image_reachable(path)
    if path.is_dir():
        raise DreamtextError(f"{path} is a folder, not an image; pass a PNG, JPEG or WebP file")
    if path.exists() and not path.is_file():  # "image not found" named a path that is there
        raise DreamtextError(
            f"{path} is not a file (a device or a pipe); pass a PNG, JPEG or WebP file"
        )
    if path.is_symlink() and not path.exists():
        raise DreamtextError(f"image not found: {path} is {unreachable_link(path)}")
    if not path.is_file():
        raise DreamtextError(f"image not found: {path}{prompt_hint(path) or ' (check the path)'}")


# Suffixes of image files a user may hold (not only those load_image reads): a name with one is a
# path, however it is spelled.
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jfif", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def reads_like_prompt(path: Path) -> bool:
    """Whether an image ``path`` reads like a prompt rather than a path: words with spaces, no
    folder, no image suffix (``dreamtext image "a red mug"``, a batch line ``image:a red mug``)."""
    text = str(path)
    return (
        any(char.isspace() for char in text)
        and "/" not in text
        and os.sep not in text
        and path.suffix.lower() not in PICTURE_SUFFIXES
    )


def prompt_hint(path: Path) -> str:
    """For an image ``path`` that does not exist: ``; for a text prompt, run: dreamtext text
    "..."`` where it reads like a prompt (:func:`reads_like_prompt`), else ``""``."""
    if not reads_like_prompt(path):
        return ""
    text = str(path)
    quoted = shlex.quote(text) if any(char in text for char in '"$`\\') else f'"{text}"'
    return f"; for a text prompt, run: dreamtext text {quoted}"


def no_cuda_error(name: str, half: str | None = None) -> DreamtextError:
    """The line for ``--device NAME`` (``cuda``, ``cuda:N``) where no CUDA GPU is visible;
    ``half``: the half-precision flag the command has (``--fp16``, ``--bf16``), which the CPU
    refuses beside ``--device cpu``, so the line says to drop it."""
    fix = f"--device cpu --fp32 (without {half})" if half else "--device cpu"
    return DreamtextError(f"--device {name} was asked for but no CUDA GPU is visible; use {fix}")


# What a machine that can run CUDA (or torch's ROCm build, whose GPUs are torch.cuda's too) shows
# before any library is loaded: the NVIDIA driver's files (nvidia0, nvidiactl, nvidia-uvm, ...),
# a Jetson's integrated GPU, AMD's compute driver, WSL's GPU bridge.
GPU_DEVICE_FILES = ("proc/driver/nvidia", "dev/nvhost-ctrl-gpu", "dev/nvgpu", "dev/kfd", "dev/dxg")
GPU_PCI_VENDORS = ("0x10de", "0x1002")  # NVIDIA, AMD


def no_cuda_here(
    root: Path = Path("/"), environ: Mapping[str, str] | None = None, platform: str | None = None
) -> bool:
    """Whether this machine certainly has no GPU that torch could use as ``cuda``, known without
    importing torch: Linux (not WSL) whose PCI bus lists no NVIDIA or AMD device, with no NVIDIA
    driver loaded (``/proc/driver/nvidia``, ``/dev/nvidia*``), no Jetson, ROCm or WSL GPU device
    file, and no ``nvidia-smi`` on the ``PATH``. ``False`` (not known) wherever any of these is
    there or cannot be read: a GPU whose driver is not loaded yet (CUDA loads it on first use) is
    still on the PCI bus. ``root``, ``environ``, ``platform``: the file system root, the
    environment and ``sys.platform``, for tests."""
    environ = os.environ if environ is None else environ
    if (platform or sys.platform) != "linux" or "WSL_DISTRO_NAME" in environ:
        return False
    if any((root / name).exists() for name in GPU_DEVICE_FILES):
        return False
    try:
        if any(name.startswith("nvidia") for name in os.listdir(root / "dev")):
            return False
        pci = root / "sys" / "bus" / "pci" / "devices"
        vendors = [(pci / name / "vendor").read_text().strip() for name in os.listdir(pci)]
    except OSError:
        return False
    if not vendors or any(vendor in GPU_PCI_VENDORS for vendor in vendors):
        return False
    return shutil.which("nvidia-smi", path=environ.get("PATH", os.defpath)) is None


# Where a run keeps its checkpoints and says how it stands: named here, where no torch is
# imported, and taken from here by dreamtext.checkpoint (CHECKPOINT_DIR, LAST) and
# dreamtext.runstatus (STATUS).
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
RUN_STATUS = "status.json"


# Beside last.pt: its step and the file it was written as (dreamtext.runfiles.step_record), so
# that a refusal names the step without torch reading the checkpoint.
LAST_STEP_RECORD = "last.step.json"


def no_checkpoint_error(workspace: Path) -> DreamtextError:
    """The line for ``text --resume`` in a run that holds no checkpoint to go on from."""
    return DreamtextError(
        f"nothing to resume in {workspace}: no checkpoints/last.pt; drop --resume to start a "
        "new run"
    )


def holds_no_checkpoint(workspace: Path) -> bool:
    """Whether ``workspace`` certainly holds no checkpoint that a resume goes on from, known
    without torch and without reading one: no ``checkpoints/last.pt`` and no ``step_*`` file
    beside it (so :func:`dreamtext.checkpoint.can_resume` is ``False``: its fallback reads step
    files only), and no run that may be about to write one: no lock file
    (:func:`dreamtext.processes.claim_workspace`: a run loading, or one killed before it could
    remove it) and no ``status.json`` that says ``running``. ``False`` wherever any of these is
    there or cannot be read: the resume's own checks then decide."""
    try:
        names = os.listdir(workspace / CHECKPOINT_DIR)
    except FileNotFoundError:
        names = []
    except OSError:  # not a folder, not readable: not known
        return False
    if any(name == LAST_CHECKPOINT or name.startswith("step_") for name in names):
        return False
    if os.path.lexists(workspace / LOCK_NAME):
        return False
    status = workspace / RUN_STATUS
    if not os.path.lexists(status):
        return True
    try:
        state = read_status_json(status).get("state")
    except (OSError, ValueError, RecursionError, AttributeError):
        return False
    return state != "running"


def read_vocabulary(path: str | Path | None, default: str) -> list[str]:
    """Words of a file, one per line (blank lines and ``#`` comments skipped), in file order.

    A UTF-8 byte order mark (Windows Notepad writes one) is not part of the first word.
    ``path=None`` reads the list shipped in ``dreamtext/data/<default>``. A file that cannot be
    read names the flag that gives it (``--nouns`` for ``nouns.txt``): a run's config.json
    records the file by its path, which a copy of the run on another machine may not have.
    """
    if path is None:
        text = resources.files("dreamtext").joinpath("data", default).read_text(encoding="utf-8")
        source = f"dreamtext/data/{default}"
    else:
        try:
            text = read_text_once(Path(path))
        except (OSError, UnicodeDecodeError) as error:
            reason = "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else error.strerror
            flag = "--" + Path(default).stem
            raise DreamtextError(
                f"cannot read word list {path} ({reason or error}); pass {flag} with the "
                "word list's path"
            ) from None
        source = str(path)
    lines = [" ".join(line.split("#", 1)[0].split()) for line in text.splitlines()]
    for number, word in enumerate(lines, start=1):
        check_word_length(word, f"word list {source}:{number}: the word")
    words = list(dict.fromkeys(line for line in lines if line))
    if not words:
        raise DreamtextError(f"word list {source} is empty; give a file with one word per line")
    return words


def word_list_path(path: str | Path) -> tuple[str, bool]:
    """How a record names word list ``path``: ``(file, piped)``. A pipe (a shell's ``<(...)``, a
    pipe into ``/dev/stdin``, a FIFO; a terminal or a socket alike) is piped: read once, by this
    process alone, and named as given, made absolute. Resolved, a pipe was
    ``/proc/<pid>/fd/pipe:[<inode>]``, a name that never held a file and another at every run,
    so no rerun compared its words. Anything else is its absolute path, links resolved: a
    regular file (``/dev/stdin`` redirected from one too), and a path that names nothing (a
    typo, a list deleted since), which taken for a pipe read as the run's list piped in again."""
    given = Path(path)
    try:
        mode = given.stat().st_mode
    except OSError:  # nothing there, or not looked into: a file's name all the same
        mode = 0
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode):
        return os.path.abspath(given), True
    return str(given.resolve()), False


def word_list_identity(path: str | Path | None, words: Sequence[str]) -> dict[str, object]:
    """What identifies a sentence-search word list, as a record holds it: its ``file``
    (:func:`word_list_path`; ``None`` for the shipped list), the number of ``words`` and the
    ``sha256`` of the words as the search reads them (:func:`read_vocabulary`'s, joined by
    newlines): a comment, a blank line or a repeated word changes no search, so none changes
    the digest. A list that was piped in also has ``"piped": true``."""
    digest = hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()
    file, piped = (None, False) if path is None else word_list_path(path)
    identity: dict[str, object] = {"file": file, "words": len(words), "sha256": digest}
    return {**identity, "piped": True} if piped else identity


WORD_MAX_BYTES = 64
"""The longest word (in UTF-8 bytes) a sentence-search vocabulary, ``--noun`` or ``--quantifier``
may hold. CLIP (and Stable Diffusion's text encoder, which the descriptor's sentence goes to)
reads 77 tokens of a sentence, start and end included, and a BPE token holds at least one byte:
a word this long always fits in "An image of <quantifier> <noun>" (3 + 3 + 64 + 2 tokens at
most); the shipped lists' longest is 20. A 5,000-character word made a sentence CLIP cut short,
noun and all. (The search itself keeps every sentence within 77 tokens:
:func:`dreamtext.describe.search_sentence`.)"""


def check_word_length(word: str, what: str) -> None:
    """Refuse ``word`` (``what`` names it: a flag, or a word list's file and line) longer than
    :data:`WORD_MAX_BYTES` bytes of UTF-8."""
    size = len(word.encode("utf-8"))
    if size > WORD_MAX_BYTES:
        shown = word if len(word) <= 24 else word[:20] + "…"
        raise DreamtextError(
            f"{what} {shown!r} is {size} bytes long; CLIP reads at most 77 tokens of a "
            f"sentence, so a word may have {WORD_MAX_BYTES} bytes at most: shorten it"
        )


def check_search_options(
    max_words: int,
    quantifier: str | None,
    noun: str | None,
    nouns: str | Path | None,
    adjectives: str | Path | None,
) -> tuple[list[str], list[str]]:
    """Refuse sentence-search options no search can use (``--max-words`` below 0, an empty
    ``--noun`` or ``--quantifier``, an unreadable or empty word list: :func:`read_vocabulary`);
    return the nouns and adjectives (:func:`dreamtext.describe.check_options`)."""
    if max_words < 0:
        raise DreamtextError("--max-words must be 0 or more")
    if quantifier is not None and not quantifier.strip():
        raise DreamtextError("--quantifier is empty; give one such as 'a' or 'some'")
    if noun is not None and not noun.strip():
        raise DreamtextError("--noun is empty; give one such as 'mug', or leave it out to search")
    for flag, word in (("--quantifier", quantifier), ("--noun", noun)):
        if word is not None:
            check_word_length(" ".join(word.split()), flag)
    return read_vocabulary(nouns, "nouns.txt"), read_vocabulary(adjectives, "adjectives.txt")


# The guidance settings :func:`layered_guidance` reads.
GUIDANCE_READ_EARLY = ("model", "negative")


def layered_guidance(
    flags: Mapping[str, object],
    preset: str | None,
    config_file: str | Path | Sequence[str | Path] | None,
    base: Mapping[str, object] | None = None,
) -> dict[str, str] | None:
    """``guidance.model`` and ``guidance.negative`` of a new run as
    :func:`dreamtext.config.resolve_config` resolves them, read without torch: each flag's value
    (``flags``: ``{"model": ..., "negative": ...}``, ``None`` where not given), else that of the
    last of ``--preset`` and the ``--config`` files that gives it, else ``""`` (the default
    model is no built-in one, the default negative prompt empty); of a resumed run, whose
    config.json is ``base``, else the run's. ``None`` where this cannot tell: a value that is
    no string (resolve_config refuses it), or a run's config.json that lacks one (its presets
    fill it in)."""
    values: dict[str, object] = {name: flags.get(name) for name in GUIDANCE_READ_EARLY}
    unset = [name for name, value in values.items() if value is None]
    if unset:
        layers = [] if base is None else [(base, True)]
        layers += [] if preset is None else [(read_yaml(preset_path(preset)), False)]
        layers += [
            (read_yaml(path), path.name == "config.json") for path in config_files_list(config_file)
        ]
        found: dict[str, object] = {name: "" for name in unset}
        for data, record in layers:
            guidance = data.get("guidance")
            guidance = guidance if isinstance(guidance, dict) else {}
            if record and any(name not in guidance for name in unset):
                return None
            found.update({name: guidance[name] for name in unset if name in guidance})
        values.update(found)
    if not all(isinstance(value, str) for value in values.values()):
        return None
    return values  # type: ignore[return-value]


# The OpenMP settings a user may have made, which dreamtext then leaves as they are:
# libgomp (the OpenMP of torch's Linux wheels) reads them when torch loads it.
OPENMP_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


# Where Linux shows this process's cgroup CPU limits (the container's own cgroup in a container).
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path | None = None) -> int | None:
    """The CPUs a cgroup CPU quota allows this process (``docker run --cpus 2``, a Kubernetes CPU
    limit), rounded up: ``ceil(quota / period)`` from cgroup v2's ``cpu.max`` (``"200000
    100000"``) or v1's ``cpu/cpu.cfs_quota_us`` and ``cpu.cfs_period_us``; ``None`` where there
    is no quota (``max``, ``-1``) or nothing can be read. A quota leaves the CPU affinity at
    every core of the machine, so without this torch would run one thread per core there, each
    given a fraction of the quota."""
    root = CGROUP_ROOT if root is None else root
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        quota_us, period_us = int(quota), int(period)
    except ValueError:  # "max": no quota
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return max(1, -(-quota_us // period_us))


def usable_cpus(environ: Mapping[str, str], affinity: int | None = None) -> tuple[int, str]:
    """How many CPUs this process may use, and where that comes from: a SLURM task's
    ``SLURM_CPUS_PER_TASK`` (no more than its affinity), else the CPUs the process may run on
    (``os.sched_getaffinity``: a cgroup cpuset, ``taskset``), else ``os.cpu_count()``; either no
    more than a cgroup CPU quota allows (:func:`cgroup_cpu_limit`, source ``"cgroup quota"``).
    ``affinity``: the affinity's count, for tests."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cpus, source = (affinity, "affinity") if affinity else (os.cpu_count() or 1, "cpu_count")
    slurm = environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isascii() and slurm.isdigit() and int(slurm) >= 1:  # "²".isdigit() but not int
        cpus, source = min(int(slurm), cpus), "SLURM_CPUS_PER_TASK"
    limit = cgroup_cpu_limit()
    if limit is not None and limit < cpus:
        return limit, "cgroup quota"
    return cpus, source


def threads_asked_for(flag: int | None, environ: Mapping[str, str]) -> tuple[int, str] | None:
    """The CPU threads the user asked dreamtext for, and where: ``--threads`` (``flag``), else
    ``DREAMTEXT_THREADS``; ``None`` where neither asks."""
    if flag is not None:
        return flag, "--threads"
    text = environ.get("DREAMTEXT_THREADS")
    if text is None:
        return None
    digits = text.strip()
    if not (digits.isascii() and digits.isdigit()) or int(digits) < 1:
        raise DreamtextError(
            f"DREAMTEXT_THREADS must be a whole number of CPU threads, at least 1; got "
            f"'{text}' (unset it for one thread per CPU this process may use)"
        )
    return int(text), "DREAMTEXT_THREADS"


# More torch threads than this for each CPU of the machine only take turns on its CPUs, slower
# than fewer; in the tens of thousands libgomp cannot start them ("Thread creation failed") and
# the process crashed (a segfault after a misleading out-of-memory line).
MAX_THREADS_PER_CPU = 4


def check_thread_count(threads: int | None, source: str, cpus: int | None = None) -> None:
    """Refuse a thread count the user asked for (``--threads``, ``DREAMTEXT_THREADS``) above
    ``MAX_THREADS_PER_CPU`` times the machine's CPUs (``cpus``, default ``os.cpu_count()``)."""
    if threads is None or source not in ("--threads", "DREAMTEXT_THREADS"):
        return
    cpus = cpus or os.cpu_count() or 1
    if threads <= MAX_THREADS_PER_CPU * cpus:
        return
    asked = f"--threads {threads}" if source == "--threads" else f"DREAMTEXT_THREADS={threads}"
    raise DreamtextError(
        f"{asked} is more than {MAX_THREADS_PER_CPU} threads for each of this machine's {cpus} "
        f"CPUs, which only slows torch down; ask for at most {MAX_THREADS_PER_CPU * cpus} "
        f"({cpus}, one a CPU, is usually the fastest)"
    )


def cpu_threads(
    flag: int | None, environ: Mapping[str, str], affinity: int | None = None
) -> tuple[int | None, str]:
    """The CPU threads torch should use, and what chose them: ``--threads``, else
    ``DREAMTEXT_THREADS`` (:func:`threads_asked_for`), else the user's ``OMP_NUM_THREADS``
    (``None``: torch reads it itself, as it always has), else the CPUs this process may use
    (:func:`usable_cpus`).

    torch's default is one thread per CPU of the machine's affinity; on a SLURM node without
    CPU binding that is every core of the node, however few the job was given."""
    asked = threads_asked_for(flag, environ)
    if asked is not None:
        return asked
    omp = environ.get("OMP_NUM_THREADS", "")
    if omp.strip():
        if not openmp_thread_count(omp):
            # libgomp warns ("Invalid value for environment variable OMP_NUM_THREADS") and
            # ignores it: torch then took one thread per CPU of the machine, not of the SLURM
            # task, and ran_on said OMP_NUM_THREADS chose them.
            raise DreamtextError(
                f"OMP_NUM_THREADS must be a whole number of CPU threads, at least 1; got "
                f"'{omp}' (OpenMP ignores it; unset it for one thread per CPU this process may "
                "use, or pass --threads N)"
            )
        return None, "OMP_NUM_THREADS"
    return usable_cpus(environ, affinity)


# The largest count or size a run takes: torch's integers (and libgomp's counts) are 64-bit.
INT64_MAX = 2**63 - 1


def openmp_thread_count(text: str) -> bool:
    """Whether ``text`` is an ``OMP_NUM_THREADS`` that libgomp takes: a count of 1 or more, or a
    comma-separated list of them (one for each level of nested parallelism; ``4,2``), each with
    spaces and a ``+`` around it allowed."""
    for item in text.split(","):
        digits = item.strip().removeprefix("+")
        if not (digits.isascii() and digits.isdigit()) or not 1 <= int(digits) <= INT64_MAX:
            return False  # libgomp reads a count into a signed 64-bit integer
    return True


# The spin count dreamtext gives libgomp when the user chose none: how many times a thread that
# waits for its team checks before it sleeps. libgomp's own default is 300,000 (0 with
# OMP_WAIT_POLICY=PASSIVE).
SHORT_SPIN_COUNT = "1000"


def spin_briefly(environ: MutableMapping[str, str]) -> bool:
    """Let idle OpenMP threads spin only briefly before they sleep (``GOMP_SPINCOUNT=1000``) unless
    the user has chosen a wait policy or spin count; returns whether it was set. Call it before
    torch is imported: libgomp reads it once, when it is loaded.

    libgomp's default lets a thread that waits for its team spin for about 300,000 checks. On a
    CPU that other processes share, the spinning thread takes the core that the thread it waits
    for needs: ``benchmarks/RESULTS.md`` (stop 44) measured ``builtin:shapes`` steps 14-40×
    slower that way at a load average of 6-13 on two cores. Sleeping at once
    (``OMP_WAIT_POLICY=PASSIVE``) cures that but costs an idle machine a kernel wake-up at each
    parallel region (400 steps: 31.3 s against 21.0 s, imports included); 1,000 checks keep an
    idle machine's speed (22.0 s), and two runs sharing two cores were both done in 17.3-19.1 s
    against the default's 44-45 s (``benchmarks/openmp_wait.sh``)."""
    if any(environ.get(name) for name in OPENMP_WAIT_VARIABLES):
        return False
    environ["GOMP_SPINCOUNT"] = SHORT_SPIN_COUNT
    return True


# What libgomp read of OPENMP_WAIT_VARIABLES when torch loaded it in this process: the
# environment right before dreamtext imported torch (:func:`torch_loads_with`); ``None`` until
# then, and for good where torch was loaded before dreamtext could look.
_openmp_wait_at_load: dict[str, str | None] | None = None

# What a run records of a setting libgomp read before dreamtext could look.
UNKNOWN = "unknown"


def torch_loads_with(environ: Mapping[str, str]) -> None:
    """Record the OpenMP wait settings of ``environ`` as those libgomp reads (when torch is
    imported, which loads it): call it right before importing torch. Nothing where torch is
    imported already: its libgomp read the environment of then."""
    global _openmp_wait_at_load
    if "torch" not in sys.modules:
        _openmp_wait_at_load = {name: environ.get(name) for name in OPENMP_WAIT_VARIABLES}


def openmp_wait_read() -> dict[str, str | None]:
    """``OMP_WAIT_POLICY`` and ``GOMP_SPINCOUNT`` as libgomp read them when torch loaded it
    (``None``: unset, libgomp's default), recorded by :func:`torch_loads_with`. Where Python
    imported torch before dreamtext could look (a notebook, a script), libgomp does not read them
    again, so what the environment holds now (set since, by hand) need not be what it runs with:
    each is then as :func:`openmp_wait_inferred` finds it."""
    if _openmp_wait_at_load is None:
        return openmp_wait_inferred()
    return dict(_openmp_wait_at_load)


def openmp_wait_inferred() -> dict[str, str | None]:
    """The OpenMP wait settings libgomp read as torch loaded it before dreamtext was imported, as
    far as they are known: each that holds the same value (or is unset in both) in the
    environment the process started with (:func:`start_environment`) and in the environment
    when dreamtext first looked once torch was loaded (``dreamtext.ENVIRON_AT_IMPORT``: at
    dreamtext's first import, else now), which torch's load lies between. One that differs was
    set or changed in between, before that load or after it: :data:`UNKNOWN`, as is each where
    the start environment cannot be read (not Linux). A setting changed and changed back in
    between is taken for the one it was at both ends. Before, every such run recorded
    :data:`UNKNOWN`, a ``GOMP_SPINCOUNT`` exported before Python started too."""
    import dreamtext

    start = start_environment()
    if start is None:
        return dict.fromkeys(OPENMP_WAIT_VARIABLES, UNKNOWN)
    seen = dreamtext.ENVIRON_AT_IMPORT if dreamtext.ENVIRON_AT_IMPORT is not None else os.environ
    return {
        name: start.get(name) if start.get(name) == seen.get(name) else UNKNOWN
        for name in OPENMP_WAIT_VARIABLES
    }


# Where Linux shows the environment a process started with: the kernel's copy, which changes
# made since (os.environ's, through putenv) leave as it was.
START_ENVIRON = Path("/proc/self/environ")


def start_environment(path: Path = START_ENVIRON) -> dict[str, str] | None:
    """The environment this process started with (``path``: :data:`START_ENVIRON`), ``None``
    where it cannot be read. Of a name given twice the first counts, as for ``getenv``."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    environ: dict[str, str] = {}
    for entry in data.split(b"\0"):
        name, equals, value = entry.partition(b"=")
        if equals and name:
            environ.setdefault(os.fsdecode(name), os.fsdecode(value))
    return environ


def default_spin_line(threads: int, environ: Mapping[str, str]) -> str | None:
    """The line that tells Python which imported torch before dreamtext (a notebook, a script)
    how to keep torch's idle CPU threads from spinning, where they spin: ``threads`` (torch's)
    is more than one and libgomp was loaded with neither ``OMP_WAIT_POLICY`` nor
    ``GOMP_SPINCOUNT`` (:func:`openmp_wait_read`; read :data:`UNKNOWN`, neither is in
    ``environ`` now, so neither was then). ``None`` otherwise: the CLI sets the spin count
    itself (:func:`spin_briefly`), and one thread has no team to wait for.

    libgomp reads the settings only when torch loads it, so nothing in the process can change
    them after: the line says what to set before ``import torch``. A script that imported torch
    first took 54.2-64.6 s of CPU (user+sys) for 60 ``builtin:shapes`` steps on 2 threads at a
    load average of 10-11, against 9.5-10.0 s with ``GOMP_SPINCOUNT=1000`` in its environment
    (``benchmarks/RESULTS.md``, stop 83)."""
    if threads < 2:
        return None
    read = openmp_wait_read()
    if any(value not in (None, UNKNOWN) for value in read.values()):
        return None
    if UNKNOWN in read.values() and any(environ.get(name) for name in OPENMP_WAIT_VARIABLES):
        return None
    return (
        f"dreamtext: torch was imported before dreamtext could set GOMP_SPINCOUNT="
        f"{SHORT_SPIN_COUNT}, so its {threads} CPU threads spin while they wait, which on a shared "
        f"CPU costs several times the CPU time; set os.environ['GOMP_SPINCOUNT'] = "
        f"'{SHORT_SPIN_COUNT}' before the first `import torch` (or export it before starting "
        "Python or Jupyter)"
    )
