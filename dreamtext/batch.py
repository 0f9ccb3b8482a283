"""``dreamtext batch``: a list of prompts in one process, on one GPU, several, or a cluster.

    prompts file ──► entries (line, text prompt or ``image:PATH``) ──► this worker's share
        each entry:  finished? skip ─► claim ``<workspace>.lock`` ─► text→3D or image→3D ─► record
    ──► ROOT/batch.jsonl (one line per entry and attempt) and a printed table

The models are loaded once per process (:mod:`dreamtext.models` keeps them), so from the second
prompt on a run starts training at once. Each prompt gets the workspace ``dreamtext text`` would
give it, under the root folder, or that name with a short hash of the prompt where the name is
another prompt's (:func:`workspace_name`); a finished run of the prompt is skipped, an
interrupted one resumes from its last checkpoint, a failing one is recorded and the batch goes on.
Ctrl-C (or SIGTERM) checkpoints the current run and stops the batch; so does a full disk or quota,
a file system gone read-only or an I/O error, or a root folder that refuses writes (the lines
after it are left as they are, for the same command to go on with once there is space). A line
whose run folder links to another file system fails alone where that one fails; a stale NFS file
handle has its line tried once more.

Several workers can share one list. ``--shard K/N`` (or a SLURM job array's
``SLURM_ARRAY_TASK_ID`` / ``SLURM_ARRAY_TASK_COUNT``) gives each a disjoint share, and every
workspace is claimed by a lock file holding host, pid and start time, so that two workers never
train one prompt at the same time even when they run the same share. A lock is taken over when its
process is gone (same host; or last refreshed before this host booted, and not since for three of
its holder's refresh intervals: the reboot ended it), when it belongs to this very SLURM array
task (a requeued task), when its record cannot be read a few seconds after it was made (empty: a
full disk, or a writer killed between creating and writing it), or when its holder stopped
refreshing it for ``--lock-timeout`` seconds. A lock of another host cannot be checked but by its
age: one not refreshed for three of its holder's refresh intervals looks abandoned (a dead node),
and the worker that finds it comes back to that line after the rest of its share, waits for the
timeout and takes it over.
"""

from __future__ import annotations

import contextlib
import copy
import errno
import hashlib
import json
import os
import re
import shlex
import threading
import time
import traceback
import unicodedata
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dreamtext.__main__ import work_complete
from dreamtext.captions import BUILTIN_MODELS, check_builtin_prompt_lines
from dreamtext.checkpoint import can_resume, last_reads, write_whole
from dreamtext.config import (
    DEFAULT_WORKSPACE_ROOT,
    RESUME_FIXED,
    TrainConfig,
    builtin_preset_on_stable_diffusion,
    fill_from_presets,
    owner_value,
    read_run_config,
    resolve_config,
    resume_conflicts,
    run_owner,
    run_setting_changes,
    slugify,
)
from dreamtext.devices import free_memory, memory_that_ran_out
from dreamtext.errors import (
    ENVIRONMENT_ERRNOS,
    FILE_SYSTEM_FIXES,
    UNREADABLE_JSON,
    DreamtextError,
    StartAgain,
    WorkspaceInUse,
    file_system_fix,
    run_command,
    shell_word,
    shorten,
    shown_path,
    utf8_locale_fix,
    what_failed,
)
from dreamtext.exportflags import export_flag_words
from dreamtext.inputs import (
    IMAGE_PREFIX,
    SLUG_MAX_BYTES,
    check_root,
    check_root_writable,
    earlier_slugs,
    layered_guidance,
    parse_shard,
    read_prompt_lines,
    reads_like_prompt,
    repeat_key,
    requeue_note,
    resolve_shard,
    root_write_error,
    shard_from_environment,
)
from dreamtext.interrupts import (
    TrainingInterrupted,
    lines_from_end,
    more_work,
    signals_held,
    sigterm_interrupts,
    stop_requested,
    stops_as,
)
from dreamtext.processes import (
    HOST,
    earlier_boot,
    gone_process,
    lock_held,
    same_process,
    this_process,
    unreadable_lock,
)
from dreamtext.progress import bar_options, say, tqdm
from dreamtext.prompts_text import check_prompt_lines, first_undecoded_byte, is_prompt_line
from dreamtext.runfiles import (
    descriptor_checkpoint,
    read_config_json,
    read_once,
    running_elsewhere,
    sentence_path,
    source_copy,
)
from dreamtext.runstatus import (
    RunTakenOver,
    error_line,
    guard_run,
    has_mesh,
    now_iso,
    read_status,
    run_finished,
    saved_step,
)

if TYPE_CHECKING:
    from dreamtext.models import StableDiffusionModels

try:
    import fcntl
except ImportError:  # not a POSIX system: appends go unlocked
    fcntl = None  # type: ignore[assignment]

BATCH_LOG = "batch.jsonl"
# How the lines that stop a line's run (out of memory, diverged) say to go on from its
# checkpoint: `dreamtext batch` has no --resume; a rerun of the batch resumes the line.
BATCH_RESUME = "the batch run again (it resumes this line)"


# CUDA's own errors (torch ≥ 2.8). Most (an illegal address, a device-side assert, a lost GPU)
# leave the process's CUDA context unusable, so the batch stops at the first; running out of
# memory (torch.OutOfMemoryError, not one of them) does not, and the next line may fit; nor
# does the host's (devices.memory_that_ran_out).
GPU_ERRORS: tuple[type[BaseException], ...] = tuple(
    kind for kind in (getattr(torch, "AcceleratorError", None),) if kind is not None
)


# File-system errors after which every next line would fail the same way (after loading its
# prompt's models, and writing what fits), so the batch stops at the first, with what to do:
# a full disk or quota; a file system that went read-only (Linux remounts one so after a disk
# error); a disk or file server that fails to read or write (EIO); a network or FUSE mount whose
# connection is gone (ENOTCONN). Unless the file is in a run folder that is a link to another
# file system than ROOT's, and ROOT can still be written: then it is that line's own, and the
# batch goes on (:func:`batch_stop`). A stale NFS handle (ESTALE) is one file's (the line is tried
# once more, :func:`run_one_retrying_stale`); a file-size limit (EFBIG) or a refused write
# (EACCES, EPERM: a run folder of another user's) can be one line's own, and the batch goes on
# unless ROOT itself refuses a write too (a chmod, an expired Kerberos ticket); a --workspace ROOT
# the batch cannot write in is refused before the first line (check_root_writable).
BATCH_STOPPING_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ENOTCONN}
)
REFUSED = (errno.EACCES, errno.EPERM)


def stopped_for_file_system(record: dict[str, Any]) -> bool:
    """The line (or the writing of its record) met a file-system error every next line would
    meet too: the batch stopped there (:func:`batch_stop`). The record's ``stopped_batch`` is
    true for the line a Ctrl-C, a SIGTERM or an unusable GPU stopped the batch at too."""
    return (
        bool(record.get("stopped_batch"))
        and not stopped_by_user(record)
        and not gpu_unusable(record)
    )


def _file_system(path: Path) -> int | None:
    """The device number of the file system ``path`` is on, through links: that of its nearest
    folder that can be looked at where the file itself cannot (not made yet, or failing). The
    links are followed first, so that a run folder linking to a mount whose connection is gone
    is not taken for ROOT, its parent."""
    resolved = Path(os.path.realpath(path))
    for place in (resolved, *resolved.parents):
        try:
            return os.stat(place).st_dev
        except OSError:
            continue
    return None


def on_a_linked_file_system(error: OSError, entry: Entry, root: Path) -> bool:
    """``error``'s file is inside ``entry``'s run folder, and on another file system than
    ``root``'s (the folder, or one inside it, is a link to another disk or mount)."""
    if not error.filename:
        return False
    failed = Path(os.path.abspath(os.fsdecode(error.filename)))
    if not failed.is_relative_to(os.path.abspath(entry.workspace)):
        return False
    here, there = _file_system(root), _file_system(failed)
    return here is not None and there is not None and here != there


def batch_stop(
    error: BaseException, entry: Entry, root: Path, record_write: bool = False
) -> OSError | None:
    """The error with which ``error``, failing ``entry``, stops the batch, or ``None`` when the
    next lines can go on.

    A file-system error (:data:`~dreamtext.errors.ENVIRONMENT_ERRNOS`) first has ROOT looked at
    (:func:`root_write_error`): where ROOT refuses a write too (permissions changed, a Kerberos
    ticket expired, the disk full or gone read-only), every next line would fail at its lock, so
    the batch stops with ROOT's error. ROOT being writable, one of :data:`BATCH_STOPPING_ERRNOS`
    stops it unless its file is on another file system, through a link in the line's own run
    folder (:func:`on_a_linked_file_system`). ``record_write``: the error came from appending
    the line's record to ``batch.jsonl``, which every next line appends to as well, so any
    file-system error stops the batch."""
    if not isinstance(error, OSError) or error.errno not in ENVIRONMENT_ERRNOS:
        return None
    refused = root_write_error(root)
    if refused is not None:
        return refused
    if record_write:
        return error
    if error.errno in BATCH_STOPPING_ERRNOS and not on_a_linked_file_system(error, entry, root):
        return error
    return None


def at_root(error: OSError, root: Path) -> bool:
    """``error`` is ROOT's own (:func:`root_write_error`), not one file's."""
    return error.filename is not None and Path(os.fsdecode(error.filename)) == root


def stop_fix(error: OSError, root: Path) -> str:
    """What to do about ``error``, which stopped the batch: a refused write in ROOT (or in
    ``batch.jsonl``) gets its own, any other its file system's (:data:`BATCH_STOPPING_ERRNOS`)."""
    if error.errno in REFUSED:
        if at_root(error, root):
            return (
                f"make {root} writable for you again (its permissions, or on NFS or AFS a "
                "Kerberos ticket that expired: kinit) or pass --workspace a folder elsewhere"
            )
        return "make that file writable for you again or pass --workspace a folder elsewhere"
    return file_system_fix(error, "pass --workspace a folder elsewhere")


def batch_stop_line(entry: Entry, error: OSError, root: Path, finished: bool = False) -> str:
    """The one line with which such an error stops the batch at ``entry``: the error and its
    file (or ROOT, where ROOT itself refused a write), what to do, and that the same command, run
    again then, goes on from there."""
    try:
        resumes = can_resume(entry.workspace)
    except OSError:  # the disk that failed
        resumes = False
    if finished:
        this = f"line {entry.line} finished"
    elif resumes:
        this = f"line {entry.line} resumes from its last checkpoint"
    else:
        this = f"line {entry.line} starts again"
    if at_root(error, root):
        what = f"cannot write in --workspace {root}: {error.strerror}"
    else:
        what = what_failed(error)
    return (
        f"batch: line {entry.line}: {what}; the batch stops here, as every next line would fail "
        f"the same way: {stop_fix(error, root)}, then run the same command again ({this}, "
        "finished lines are kept)"
    )


def linked_failure_line(entry: Entry, error: OSError, root: Path) -> str:
    """The line of a :data:`BATCH_STOPPING_ERRNOS` error on another file system than ROOT's,
    reached through a link in the line's run folder: that line fails, the batch goes on."""
    return (
        f"batch: line {entry.line} failed: {what_failed(error)}, on another file system than "
        f"--workspace {root} (its run folder, or a folder in it, is a link there): "
        f"{FILE_SYSTEM_FIXES.get(error.errno, 'fix that file system')}, then run the same "
        "command again to go on with it; the other lines go on"
    )


def the_machines_state(error: BaseException) -> bool:
    """Whether ``error`` is the machine's, not a bug of dreamtext's: out of memory, a full disk
    or quota, a file-size limit, a refused write. Its one line in the record and on stderr says
    it all; a traceback would not help."""
    if memory_that_ran_out(error) is not None:
        return True
    return isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS


# ----------------------------------------------------------------------------------------------
# The list and the shares.


@dataclass(frozen=True)
class Entry:
    """One prompt of the list: ``line`` (1-based in the file), the raw ``input`` line, its
    ``kind`` (``"text"`` or ``"image"``), the ``prompt`` (the image's path for image lines) and
    the ``workspace`` it trains in."""

    line: int
    input: str
    kind: str
    prompt: str
    workspace: Path
    # An image line's run made before its image was moved: the path that run recorded.
    moved_from: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """What a run of this entry records (:func:`run_owner`): ``("text", prompt)``, or
        ``("image", absolute image path)``, the path before the image was moved where its run
        was made there (``moved_from``: :func:`moved_image_run`)."""
        return self.kind, self.moved_from or owner_value(self.kind, self.prompt)


def read_prompts(path: str | Path, root: Path) -> list[Entry]:
    """The entries of a prompts file: one prompt per line, ``image:PATH`` for an image (a
    relative PATH is taken from the prompts file's folder, or the current folder for a list read
    from a pipe: :func:`relative_images_folder`); blank lines and ``#`` comments are
    skipped. A line repeating an earlier one (up to case and spaces: :func:`repeat_key`) is
    dropped, the first one's text kept. Each entry's workspace under ``root`` is
    :func:`workspace_name`'s; where it holds a run of the prompt in other case (a ``dreamtext
    text "A Red Cube"`` for the line ``a red cube``), that run's text is kept the same way, so the
    run counts as the line's (:func:`_prompt_of_its_run`); where it holds the run of an image
    line's image made before the image was moved, that run is the line's
    (:func:`moved_image_run`). Every image is opened here, so a bad one stops the batch before
    anything is written."""

    path = Path(path)
    lines = read_prompt_lines(path)
    check_prompt_lines(path, lines)
    images_folder = relative_images_folder(path)
    found: list[Entry] = []  # workspaces named once the whole list is known
    seen: dict[tuple[str, str], int] = {}
    bad: dict[str, tuple[int, str]] = {}  # an image line's text: its line and refusal
    repeated: list[str] = []  # said once the list is known to be usable
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not is_prompt_line(text):
            continue
        kind, prompt = "text", " ".join(text.split())
        # Any case: with Stable Diffusion, 'Image:mug.png' trained as a text prompt is hours lost.
        if text[: len(IMAGE_PREFIX)].lower() == IMAGE_PREFIX:
            kind, image = "image", text[len(IMAGE_PREFIX) :].strip()
            try:
                prompt = str(_line_image(path, number, text, image, images_folder, root))
            except DreamtextError as error:
                if type(error) is not DreamtextError:
                    raise
                bad.setdefault(image, (number, str(error)))
                continue
        entry = Entry(number, raw.rstrip("\r"), kind, prompt, root)
        repeats = repeat_key(kind, prompt)
        if repeats in seen:
            repeated.append(f"batch: line {number} repeats line {seen[repeats]}; it runs once")
            continue
        seen[repeats] = number
        found.append(entry)
    if bad:
        # Every bad image line at once: a list with several was fixed one run at a time.
        (_, first), *others = bad.items()
        named = [f"{line} ({image})" for image, (line, _) in others]
        rest = " and ".join([", ".join(named[:-1]), named[-1]] if len(named) > 2 else named)
        also = f"; line{'s' * (len(others) > 1)} {rest} cannot be used either" if others else ""
        raise DreamtextError(first[1] + also)
    for note in repeated:
        _say(note)
    if not found:
        raise DreamtextError(
            f"prompts file {path} holds no prompts (blank lines and # comments "
            "are skipped); write one prompt per line"
        )
    slugs = [slugify(_name(e)) for e in found]
    uses = Counter(slugs)
    listed = folder_names(root)  # listed once: a list of n prompts costs n, not n²
    line_named, hashed = line_named_folders(root, listed), hashed_folders(root, listed)

    def named(entry: Entry, slug: str, moved: bool = True) -> Entry:
        name = workspace_name(
            root, entry.key, slug, uses[slug] > 1,
            earlier_slugs(_name(entry)), line_named, hashed, moved,
        )  # fmt: skip
        return _image_of_its_run(_prompt_of_its_run(replace(entry, workspace=root / name)))

    entries = [named(e, slug) for e, slug in zip(found, slugs, strict=True)]
    for entry in entries:
        refuse_unnameable(path, entry.line, "the run's folder", entry.workspace)
    # Two lines of one image's bytes, neither at the path a moved run recorded: neither is
    # that run's, as neither would be before the image moved.
    taken = Counter(e.workspace for e in entries)
    return [
        named(line, slug, moved=False) if e.moved_from and taken[e.workspace] > 1 else e
        for line, e, slug in zip(found, entries, slugs, strict=True)
    ]


def _line_image(
    path: Path, number: int, text: str, image: str, images_folder: Path, root: Path
) -> Path:
    """The image of the list ``path``'s line ``number`` (``text``, naming ``image``), opened; a
    :class:`DreamtextError` that starts ``PATH:LINE:`` and names what is wrong with it."""
    from dreamtext.images import load_image

    if not image.strip("'\"").strip():  # quotes of nothing: told to drop the quotes
        raise DreamtextError(f"{path}:{number}: '{text}' names no image; write image:PATH")
    image_path = Path(image).expanduser()
    if not image_path.is_absolute():
        image_path = images_folder / image_path
    refuse_unnameable(path, number, "the image's path", image_path)
    refuse_trailing_comment(path, number, image_path)
    stray = first_undecoded_byte(str(image_path))
    if stray is not None:  # a name given on a Latin-1 system: its run records it as UTF-8
        list_path, shown = (
            os.fsencode(p).decode("utf-8", "backslashreplace") for p in (path, image_path)
        )
        raise DreamtextError(
            f"{list_path}:{number}: the image's path {shown} holds a byte that is not UTF-8 "
            f"text (0x{stray[1]:02X}); rename its folder or file to a name in UTF-8"
        )
    quoted = len(image) > 1 and image[0] in "'\"" and image[-1] == image[0]
    if quoted and not os.path.exists(image_path):  # a shell's habit for "my mug.png"
        raise DreamtextError(
            f"{path}:{number}: image not found: {image_path}; write the path without "
            f"quotes: image:{image[1:-1]}"
        )
    # os.path.exists: False, where Path.exists raised, in a folder this user may not
    # enter (another user's home), which load_image then names.
    if not os.path.exists(image_path) and reads_like_prompt(Path(image)):
        raise DreamtextError(
            f"{path}:{number}: image not found: {image_path}; for a text prompt, write "
            "the line without 'image:'"
        )
    try:
        load_image(image_path)
    except DreamtextError as error:
        kept = run_of_missing_image(root, image_path)
        said = str(error)
        if kept is not None:
            said = (
                f"image not found: {image_path}; its run {kept} is there: put the image "
                "back to go on with it, or remove the line (the run stays)"
            )
        raise DreamtextError(f"{path}:{number}: {said}") from None
    return image_path


def refuse_unnameable(path: Path, number: int, what: str, name: Path) -> None:
    """Refuse the list ``path``'s line ``number`` when ``name`` (``what`` it is) holds a letter
    that the file system encoding cannot write: a list's lines are UTF-8, and under a locale
    that is not (``LANG=en_US`` of ISO-8859-1, ``LC_ALL=C`` with ``PYTHONUTF8=0``) a CJK or
    fullwidth line's folder or image was a UnicodeEncodeError traceback at its first file."""
    try:
        os.fsencode(name)
    except UnicodeEncodeError:
        raise DreamtextError(
            f"{path}:{number}: {what} {name} cannot be a file name in {utf8_locale_fix()}"
        ) from None


def refuse_trailing_comment(path: Path, number: int, image_path: Path) -> None:
    """Refuse an image line with a comment after its path (``image:mug.png  # the red one``)
    where the path before the `` #`` is an image: a ``#`` starts a comment only at a line's
    start, and the line was said to name no image and to be a text prompt, if anything."""
    before, hash_mark, comment = str(image_path).partition(" #")
    if not hash_mark or image_path.exists() or not Path(before.rstrip()).is_file():
        return
    raise DreamtextError(
        f"{path}:{number}: image not found: {image_path}; a # starts a comment only at the start "
        f"of a line: put '#{comment}' on a line of its own"
    )


def relative_images_folder(path: Path) -> Path:
    """The folder a prompts list's relative ``image:PATH`` is taken from: the list's own folder
    where it is a regular file, else (a pipe, ``/dev/stdin``, a shell's ``<(...)``) the current
    folder, not ``/dev/fd``. ``/dev/stdin`` redirected from a file is that file's folder."""
    if not path.is_file():
        return Path.cwd()
    if str(path).startswith(("/dev/", "/proc/")):  # stdin or a descriptor opened on a file
        opened = descriptor_file(path)
        return Path.cwd() if opened is None else opened.parent
    return path.parent


def descriptor_file(path: Path) -> Path | None:
    """The file the descriptor ``path`` (``/dev/stdin``, ``/dev/fd/N``) is open on: where the
    path is a link to it (Linux's ``/proc/self/fd/N``), else what ``fcntl(F_GETPATH)`` says
    (macOS, whose ``/dev/fd/N`` is no link); ``None`` where neither tells."""
    resolved = os.path.realpath(path)
    if not resolved.startswith(("/dev/", "/proc/")):
        return Path(resolved)
    if getattr(fcntl, "F_GETPATH", None) is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        named = fcntl.fcntl(fd, fcntl.F_GETPATH, bytes(1024))  # MAXPATHLEN
    except OSError:
        return None
    finally:
        os.close(fd)
    return Path(os.fsdecode(named.rstrip(b"\0")))


def same_up_to_case(owner: tuple[str, str] | None, key: tuple[str, str]) -> bool:
    """Whether a run recorded as ``owner`` (:func:`run_owner`) is one of the prompt ``key``
    (:attr:`Entry.key`) as two lines of a prompts file are one (:func:`repeat_key`): a text
    prompt in other case or spacing. Only the batch reads runs this way; ``dreamtext text`` keeps
    a run's prompt as typed."""
    if owner is None or owner[0] != key[0]:
        return False
    return repeat_key(owner[0], " ".join(owner[1].split())) == repeat_key(*key)


def _prompt_of_its_run(entry: Entry) -> Entry:
    """``entry`` with the text of the run in its workspace where that run is of the entry's
    prompt in other case (:func:`same_up_to_case`), as a line repeating another up to case keeps
    the first line's text: the run is then the line's to skip when finished, resume, export or
    replace with ``--overwrite``, without a second run of one prompt in a hashed folder."""
    owner = run_owner(entry.workspace)
    if owner is None or owner == entry.key or not same_up_to_case(owner, entry.key):
        return entry
    return replace(entry, prompt=owner[1])


def _image_of_its_run(entry: Entry) -> Entry:
    """``entry`` (an image line) with ``moved_from`` set where its workspace holds the run of
    its image made before the image was moved (:func:`moved_image_run`): that run is then the
    line's to skip, resume or export, as ``dreamtext image`` continues it from the new path."""
    if entry.kind != "image":
        return entry
    owner = run_owner(entry.workspace)
    if owner is None or owner == entry.key:
        return entry
    if not moved_image_run(entry.workspace, entry.prompt):
        return entry
    return replace(entry, moved_from=owner[1])


def moved_image_run(workspace: Path, image: str) -> bool:
    """Whether ``workspace`` holds the image→3D run of the image ``image`` made before the
    image was moved (a project folder moved or renamed, or mounted elsewhere in a container):
    the path the run recorded is no file any more, and the run's copy of its image
    (:func:`~dreamtext.runfiles.source_copy`) has ``image``'s bytes. ``dreamtext image``
    continues such a run (:func:`~dreamtext.runfiles.same_image`); the batch, which named
    folders by the path alone, trained the line again from scratch in a new folder."""
    owner = run_owner(workspace)
    if owner is None or owner[0] != "image" or owner[1] == owner_value("image", image):
        return False
    copy = source_copy(workspace)
    if copy is None or Path(owner[1]).is_file():
        return False
    try:
        return copy.read_bytes() == Path(image).read_bytes()
    except OSError:
        return False


def hashed_folders(root: Path, names: list[str] | None = None) -> dict[str, list[str]]:
    """The ``<name>_<8 hex digits>`` entries of ``root`` (:func:`workspace_name`'s hashed
    names), sorted, by ``<name>``; ``names``: :func:`folder_names` of ``root``, when the caller
    has listed it already."""
    return suffixed_folders(root, r"_[0-9a-f]{8}", names)


def line_named_folders(root: Path, names: list[str] | None = None) -> dict[str, list[str]]:
    """The ``<name>_line<N>`` entries of ``root`` (runs of batches that named clashes by their
    line number), sorted, by ``<name>``; ``names`` as for :func:`hashed_folders`."""
    return suffixed_folders(root, r"_line\d+", names)


def folder_names(root: Path) -> list[str]:
    """The entries of ``root``, sorted; none where ``root`` cannot be listed."""
    try:
        return sorted(entry.name for entry in os.scandir(root))
    except OSError:  # no root yet, or not a folder (check_root says so)
        return []


def suffixed_folders(
    root: Path, suffix: str, names: list[str] | None = None
) -> dict[str, list[str]]:
    """The entries of ``root`` (``names``, where the caller has listed it already) named
    ``<name>`` and then the regular expression ``suffix``, not hidden, sorted, by ``<name>``."""
    found: dict[str, list[str]] = {}
    for name in folder_names(root) if names is None else names:
        match = re.fullmatch(r"(.+)" + suffix, name)
        if match and not name.startswith("."):
            found.setdefault(match[1], []).append(name)
    return found


def run_of_missing_image(root: Path, image: Path) -> Path | None:
    """The run under ``root`` of ``image``, a path no file is at any more (a finished line's
    image deleted to save space): its folder ``<stem>`` or ``<stem>_<hash>`` (as
    :func:`workspace_name` names them) where that records ``image`` as its own; ``None``
    where ``image`` is there or has no run. Such a line stopped the batch as a mistyped path."""
    if os.path.lexists(image):
        return None
    key = ("image", owner_value("image", str(image)))
    slug = slugify(image.stem)
    for name in (slug, hashed_name(slug, key)):
        if run_owner(root / name) == key:
            return root / name
    return None


def hashed_name(slug: str, key: tuple[str, str]) -> str:
    """``<slug>_<8 hex digits>``: the folder of the run ``key`` whose slug is another's too
    (:func:`workspace_name`), the digits a hash of what the run records, the same in any
    line order."""
    return f"{slug}_{hashlib.sha256(key[1].encode('utf-8')).hexdigest()[:8]}"


def _name(entry: Entry) -> str:
    return Path(entry.prompt).stem if entry.kind == "image" else entry.prompt


def workspace_name(
    root: Path,
    key: tuple[str, str],
    slug: str,
    shared: bool,
    legacy: tuple[str, ...] = (),
    line_named: Mapping[str, list[str]] | None = None,
    hashed: Mapping[str, list[str]] | None = None,
    moved: bool = True,
) -> str:
    """The folder under ``root`` of the prompt (or image) ``key`` whose slug is ``slug``.

    It is ``slug``, the workspace ``dreamtext text`` would use, unless that folder holds another
    prompt's run or ``shared`` (another line of the list has the same slug: ``a cat`` and ``A
    cat!``, prompts that differ after 60 characters): then it is ``<slug>_<8 hex digits of the
    prompt's SHA-256>``. The name depends on the prompt and the folders there, never on the line
    order, so an edited or re-ordered list keeps each prompt's run. A folder that already holds
    this prompt's run keeps it: ``slug``, the hashed name, or a ``<slug>_line<N>`` of the batches
    that named clashes by their line number; and the same names made from ``legacy``, the slugs
    earlier versions gave the prompt (:func:`~dreamtext.config.ascii_slug`,
    :func:`~dreamtext.inputs.split_letter_slug`). Failing those, a folder ``slug`` (or a
    ``legacy`` one) holding a run of the prompt in other case
    (:func:`same_up_to_case`) is the prompt's, then such a hashed (given ``hashed``,
    :func:`hashed_folders` of ``root``) or line-named one, and for an image, with ``moved``, a
    folder ``slug`` or ``<slug>_<8 hex digits>`` holding its run made before the image was
    moved (:func:`moved_image_run`). ``line_named``: :func:`line_named_folders` of ``root``,
    when the caller has listed it already.
    """
    if line_named is None:
        line_named = line_named_folders(root)
    # The slug in NFD too: a run copied from a Mac's HFS+ keeps the folder name it gave it.
    # Not where that is longer than a slug may be (60 Hangul syllables: 540 bytes, whose
    # hashed name is too long for a file system to look up).
    decomposed = unicodedata.normalize("NFD", slug)
    decomposed = decomposed if len(decomposed.encode("utf-8")) <= SLUG_MAX_BYTES else None
    names = list(dict.fromkeys(n for n in (slug, *legacy, decomposed) if n))
    owners = {name: run_owner(root / name) for name in names}  # each config.json read once
    for name in names:
        if owners[name] == key:
            return name
        if (root / hashed_name(name, key)).exists():
            return hashed_name(name, key)
        for old in line_named.get(name, []):
            if run_owner(root / old) == key:
                return old
    for name in names:
        if same_up_to_case(owners[name], key):
            return name
    # A hashed folder (another line shared the slug, or the plain folder was another prompt's)
    # holding the prompt in other case: a line whose case was edited since keeps its run there.
    for name in names:
        for found in (*(hashed or {}).get(name, []), *line_named.get(name, [])):
            if same_up_to_case(run_owner(root / found), key):
                return found
    if key[0] == "image" and hashed is not None and moved:
        for name in names:
            for found in (name, *hashed.get(name, [])):
                if moved_image_run(root / found, key[1]):
                    return found
    taken = owners[slug] is not None
    return hashed_name(slug, key) if shared or taken else slug


def select_share(entries: list[Entry], shard: tuple[int, int] | None) -> list[Entry]:
    """Entries ``K, K + N, K + 2N, …`` of the list: shares ``0 … N − 1`` partition it, and
    neighbouring lines (often similar prompts, similar run times) are spread over the workers."""
    if shard is None:
        return list(entries)
    k, n = shard
    return entries[k::n]


# ----------------------------------------------------------------------------------------------
# Claiming a workspace.


def slurm_task() -> tuple[str | None, int]:
    """``("<job>_<task>", restarts)`` of this SLURM array task (``"<job>"`` for a plain job),
    ``(None, 0)`` outside SLURM. A requeued task keeps its id and counts one more restart, which
    is how it recognises the locks of its earlier, preempted self."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if job is None:
        return None, 0
    text = os.environ.get("SLURM_RESTART_COUNT", "").strip()
    if text and not (text.isascii() and text.isdigit()):
        raise DreamtextError(
            f"SLURM_RESTART_COUNT is '{text}', not a number of restarts (SLURM sets 0, 1, 2 ...); "
            "unset it, or set the count of this task's requeues"
        )
    restarts = int(text or 0)
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return (f"{job}_{task}" if task is not None else job), restarts


# A lock file whose record cannot be read (empty: its writer died, or the disk was full, between
# creating it and writing it; or corrupt) is stale once it is this many seconds old: its writer
# writes the record right after creating the file.
UNREADABLE_LOCK_AFTER_S = 10.0


# A lock its holder has not refreshed for this many of its refresh intervals looks abandoned
# (WorkspaceLock.looks_abandoned): a live holder refreshes it every interval, and NFS's cached
# attributes (acregmax, 60 s by default) can make a refresh look a minute late from elsewhere.
ABANDONED_AFTER_REFRESHES = 3


def refresh_interval(timeout: float) -> float:
    """Seconds between a held lock's refreshes: ``min(60, timeout / 4)``, so that a live holder
    refreshes it several times within any ``--lock-timeout``."""
    return min(60.0, timeout / 4)


def abandoned_after(info: Mapping[str, Any], timeout: float) -> float:
    """Seconds without a refresh after which the lock ``info`` looks abandoned:
    :data:`ABANDONED_AFTER_REFRESHES` of the refresh interval its holder recorded
    (``refresh_s``), or of this worker's where it recorded none (written by an older dreamtext)."""
    every = info.get("refresh_s")
    if not isinstance(every, (int, float)) or isinstance(every, bool) or every <= 0:
        every = refresh_interval(timeout)
    return ABANDONED_AFTER_REFRESHES * float(every)


def lock_path(workspace: Path) -> Path:
    """The file of :class:`WorkspaceLock`'s claim on ``workspace``: ``<workspace>.lock``."""
    return workspace.with_name(workspace.name + ".lock")


class WorkspaceLock:
    """An exclusive claim on a workspace: the file ``<workspace>.lock`` beside it.

    The file holds ``{"host", "pid", "pid_start", "pid_ns", "started", "slurm", "slurm_restart",
    "token", "refresh_s"}``, is written whole to a temp file and hard-linked into place (atomic,
    also on NFS), and refreshed (its mtime) every ``refresh_s = min(60, timeout / 4)`` seconds
    while held: a lock not refreshed for several of its holder's ``refresh_s`` looks abandoned
    (:meth:`looks_abandoned`), and one not refreshed for ``timeout`` is taken over.

    Taking over a stale lock is not atomic: a worker renames the stale file away, and may rename a
    fresh one instead (another worker broke the stale lock and claimed the workspace a moment
    earlier); it puts that one back, unless a third worker claimed the workspace meanwhile. So the
    file is the truth, and a holder keeps checking it: right after claiming, at every refresh, and
    at every status update of its run (:meth:`check`). A holder that finds another worker's token
    there has lost the workspace (``self.lost``): it stops refreshing and its run stops. One that
    finds no file (renamed away by a worker checking it) claims it again.
    """

    def __init__(self, workspace: Path, timeout: float) -> None:
        self.workspace = workspace
        self.path = lock_path(workspace)
        self.timeout = timeout
        self.interval = refresh_interval(timeout)
        slurm, restarts = slurm_task()
        self.info = {
            **this_process(),  # host, pid, pid_start: a pid reused later is not this worker
            "started": now_iso(),
            "slurm": slurm,
            "slurm_restart": restarts,
            "token": uuid.uuid4().hex,
            "refresh_s": self.interval,  # how often a live holder refreshes it, for the others
        }
        self.holder: dict[str, Any] | None = None
        self.holder_age = 0.0  # seconds since the holder last refreshed its lock
        # The stale lock this one replaced: its holder's record and why it was taken over.
        self.took_over: dict[str, Any] | None = None
        self.lost: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._mutex = threading.Lock()  # the heartbeat and the run both check the file

    def acquire(self) -> bool:
        """Claim the workspace; ``False`` (and ``self.holder`` set) when another worker holds it."""
        # The stale lock this worker broke: said and recorded (took_over) only once the claim
        # that follows is this worker's, as a third worker may claim the workspace in between.
        broken: dict[str, Any] | None = None
        for _ in range(5):
            if self._create():
                look, info = self._look()
                if look == "ours":
                    if broken is not None:
                        _say(f"batch: taking over {self.path} ({broken['reason']})")
                        self.took_over = broken
                    self._start_heartbeat()
                    return True
                if look == "theirs":  # moved away by a worker breaking the stale lock, replaced
                    self.holder, self.holder_age = info, 0.0
                    return False
                continue  # moved away by a worker checking it: claim it again
            try:
                held = self.read(self.path)
            except PermissionError as error:  # another user's (umask 077), its worker killed
                raise unreadable_lock(self.path, self.workspace) or error from None
            if held is None:  # released between our attempt and our look: try again
                continue
            info, age = held
            reason = self.stale_reason(info, age)
            if reason is None:
                self.holder, self.holder_age = info, age
                return False
            if self._break(info):
                kept = ("host", "pid", "slurm", "slurm_restart", "started")
                broken = {**{k: info.get(k) for k in kept}, "reason": reason}
        return False

    def refresh(self) -> bool:
        """Refresh the lock file's mtime if it is still ours; ``False`` once it is not (then
        ``self.lost`` holds the new holder's info and nothing is refreshed again)."""
        with self._mutex:
            if self.lost is not None:
                return False
            for _ in range(3):
                try:
                    look, info = self._look(touch=True)
                    if look == "missing":  # renamed away by a worker checking it: claim it again
                        self._create()
                        continue
                except OSError:  # a filesystem hiccup: look again at the next refresh
                    return True
                if look == "theirs":
                    self.lost = info
                    return False
                return True
            return True

    def check(self) -> None:
        """Raise :class:`RunTakenOver` when another worker has taken the workspace over (a run's
        status updates call this, through :func:`dreamtext.runstatus.guard_run`)."""
        if not self.refresh():
            raise RunTakenOver(self.describe_loss())

    def release(self) -> None:
        """Stop refreshing and remove the lock, unless another worker has taken it over."""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        if self.lost is not None:
            return
        # One that cannot be removed (a file system gone read-only or failing, which stops the
        # batch) is left: once this worker has ended, its process is gone and it is taken over.
        with contextlib.suppress(OSError):
            held = self.read(self.path)
            if held is not None and held[0].get("token") == self.info["token"]:
                self.path.unlink(missing_ok=True)

    def describe_holder(self) -> str:
        info = self.holder or {}
        task = f" (SLURM task {info['slurm']})" if info.get("slurm") else ""
        return (
            f"claimed by {info.get('host', '?')} pid {info.get('pid', '?')}{task} "
            f"since {info.get('started', '?')} ({self.path.name})"
        )

    def looks_abandoned(self) -> bool:
        """The holder found by :meth:`acquire` has not refreshed its lock for
        :data:`ABANDONED_AFTER_REFRESHES` of its refresh intervals: a live holder would have,
        so its worker is probably gone (a dead node, a killed task whose host cannot be asked),
        and the lock is taken over once ``timeout`` passes (:func:`wait_for_abandoned_lock`)."""
        return self.holder is not None and self.holder_age > abandoned_after(
            self.holder, self.timeout
        )

    def describe_loss(self) -> str:
        info = self.lost or {}
        return (
            f"lock taken over by {info.get('host', '?')} pid {info.get('pid', '?')} "
            f"({self.path.name})"
        )

    def _create(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{self.info['token']}.tmp")
        try:
            # Inside the try: a full disk left this empty file behind.
            tmp.write_text(json.dumps(self.info) + "\n", encoding="utf-8")
            return self._link_or_create(tmp)
        finally:
            tmp.unlink(missing_ok=True)

    def _link_or_create(self, tmp: Path) -> bool:
        """Make the lock file from ``tmp`` (this worker's, written whole) with a hard link, which
        fails where the file exists; where the filesystem has no hard links, by an exclusive
        create. Whether this worker made it."""
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: exclusive create instead
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                return False
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(json.dumps(self.info) + "\n")
            except BaseException:  # a full disk: no empty lock left to block the prompt
                self.path.unlink(missing_ok=True)
                raise
            return True

    def _look(self, touch: bool = False) -> tuple[str, dict[str, Any] | None]:
        """``("ours" | "theirs", contents)`` of the lock file, or ``("missing", None)``. With
        ``touch``, our file's mtime is refreshed through the very handle that was read, so a file
        swapped in meanwhile is never refreshed."""
        try:
            with open(self.path, "rb") as f:
                text = f.read().decode("utf-8", errors="replace")
                try:
                    info = json.loads(text)
                except UNREADABLE_JSON:
                    info = {}
                info = info if isinstance(info, dict) else {}
                if info.get("token") != self.info["token"]:
                    return "theirs", info
                if touch:
                    os.utime(f.fileno() if os.utime in os.supports_fd else self.path)
                return "ours", info
        except FileNotFoundError:
            return "missing", None

    @staticmethod
    def read(path: Path) -> tuple[dict[str, Any], float] | None:
        """``(contents, seconds since last refreshed)``; ``None`` if there is no such file."""
        try:
            age = time.time() - path.stat().st_mtime
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            info = json.loads(text)
        except UNREADABLE_JSON:
            info = {}
        return (info if isinstance(info, dict) else {}), age

    def stale_reason(self, info: dict[str, Any], age: float) -> str | None:
        """Why a lock ``info`` last refreshed ``age`` seconds ago is taken over by this claim
        (its holder's process gone from this machine, this SLURM task's earlier self, an empty
        record, ``timeout`` passed), or ``None`` where it is left to its holder."""
        slurm, restart = info.get("slurm"), info.get("slurm_restart")
        same_task = slurm is not None and slurm == self.info["slurm"]
        if same_task and isinstance(restart, int) and restart < self.info["slurm_restart"]:
            return f"it was this SLURM task's ({slurm}) before it was requeued"
        # Its mtime is its last refresh: one from before this machine booted, and abandoned by
        # the measure below (a twin's live refreshes can look a minute late through NFS's
        # attribute cache), is of a worker the reboot ended (processes.earlier_boot).
        late = abandoned_after(info, self.timeout)
        pid = gone_process(info, time.time() - age, late)
        if pid is not None:
            if earlier_boot(info, time.time() - age, late):
                return f"its process {pid} on {HOST} ended with the machine's reboot"
            return f"its process {pid} on {HOST} is gone"
        if not info and age > UNREADABLE_LOCK_AFTER_S:
            # Written whole when it is made (or right after, where there are no hard links):
            # its writer died or its disk was full, and no holder refreshes a lock it cannot read.
            return f"it is {age:.0f} s old and its record is empty or unreadable"
        # A holder refreshes on its own schedule (its --lock-timeout / 4, recorded as refresh_s):
        # a worker with a shorter --lock-timeout took a live lock between two of its refreshes.
        holders = abandoned_after(info, self.timeout)
        if age > max(self.timeout, holders):
            if holders <= self.timeout:
                return f"not refreshed for {age:.0f} s > --lock-timeout {self.timeout:g} s"
            return (
                f"not refreshed for {age:.0f} s > {holders:g} s, {ABANDONED_AFTER_REFRESHES} of "
                "its holder's refresh intervals"
            )
        return None

    def _break(self, stale: dict[str, Any]) -> bool:
        """Remove a stale lock. It is renamed away first and checked: if another worker replaced
        it in the meantime, theirs is put back. When a third worker claimed the workspace while
        it was away, theirs stays and the one renamed away is dropped: its holder finds the third
        worker's token at its next check and stops."""
        current = self.read(self.path)
        if current is None or current[0].get("token") != stale.get("token"):
            return False  # already replaced: no need to move it
        grave = self.path.with_name(f".{self.path.name}.{self.info['token']}.stale")
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return False
        taken = self.read(grave)
        if taken is not None and taken[0].get("token") != stale.get("token"):
            with contextlib.suppress(FileExistsError):
                os.link(grave, self.path)
            grave.unlink(missing_ok=True)
            return False
        grave.unlink(missing_ok=True)
        return True

    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.interval):
                if not self.refresh():
                    return  # taken over: the holder's lock is not ours to refresh

        self._heartbeat = threading.Thread(target=beat, name="dreamtext-lock", daemon=True)
        self._heartbeat.start()


# ----------------------------------------------------------------------------------------------
# Running the list.


@dataclass
class BatchOptions:
    """``root``: where the workspaces and ``batch.jsonl`` go. ``shard``: the ``--shard K/N`` text
    (``None``: SLURM's array task share when set, else the whole list). ``lock_timeout``: seconds
    after which an unrefreshed lock is taken over. ``image``: describe / descriptor flags of
    ``image:`` lines (``{"describe": {...}, "descriptor": {...}}``, over what each run recorded:
    :func:`dreamtext.imageto3d.resolve_image_options`). ``overwrite``: train every prompt of the
    share again from scratch (text lines only)."""

    root: Path = DEFAULT_WORKSPACE_ROOT
    shard: str | None = None
    lock_timeout: float = 600.0
    image: dict[str, Any] = field(default_factory=dict)
    overwrite: bool = False


def entry_config(
    entry: Entry,
    overrides: dict[str, Any],
    preset: str | None,
    config_file: str | Path | Sequence[str | Path] | None,
) -> TrainConfig:
    """The run's config: the batch's flags, with this entry's prompt and workspace. An image
    line's prompt is the image's name until DreamText learns its sentence (as ``dreamtext
    image``)."""
    mine = {**overrides, "prompt": _config_prompt(entry), "workspace": str(entry.workspace)}
    return resolve_config(mine, preset=preset, config_file=config_file)


def entry_configs(
    entries: list[Entry],
    overrides: dict[str, Any],
    preset: str | None,
    config_file: str | Path | Sequence[str | Path] | None,
    first: TrainConfig | None = None,
    shared: bool = False,
) -> list[TrainConfig]:
    """:func:`entry_config` of every entry, the preset and ``--config`` files read once for the
    batch: the entries differ only in their prompt and workspace, which the command line's layer
    sets over everything else, so the first entry's config with those two replaced is each
    other's. ``first``: the first entry's config, where it is made already. ``shared``: the
    configs share ``first``'s sections (guidance, field, ...), for a reader that changes none
    (``batch --status``: a deep copy of each of 10,000 lines' took a third of its time); a
    batch's lines each get their own, which their runs may change."""
    if not entries:
        return []
    if first is None:
        first = entry_config(entries[0], overrides, preset, config_file)
    own = (lambda cfg: cfg) if shared else copy.deepcopy
    return [first] + [
        replace(own(first), prompt=_config_prompt(e), workspace=str(e.workspace))
        for e in entries[1:]
    ]


def own_run_config(
    entry: Entry,
    fresh: TrainConfig,
    overrides: dict[str, Any],
    preset: str | None,
    config_file: str | Path | Sequence[str | Path] | None,
    resolved: dict[str, tuple[TrainConfig, list[str]]] | None = None,
    settings: dict[Path, str] | None = None,
    shared: bool = False,
) -> tuple[TrainConfig, list[str], str | None]:
    """The config a line's own run goes on with, resolved as its command's rerun resolves it:
    the run's ``config.json``, then ``preset``, the ``config_file`` files and the batch's flags
    over it, so that a setting the batch does not give keeps the run's value (a run of
    ``--preset fitfusion`` rerun without it keeps its guidance 1000, not the defaults' 100); and
    the settings asked that the run fixes (:func:`~dreamtext.config.resume_conflicts`:
    ``"seed 0 → 7"``), which refuse it. A text line's run (``text --resume``) counts when
    finished or with a checkpoint to resume, and fixes :data:`~dreamtext.config.RESUME_FIXED`;
    an image line's (``dreamtext image``) whenever it has a ``config.json``, and fixes what its
    stage does (:func:`dreamtext.imageto3d.image_run_fixed`: from its descriptor on the seed,
    from text→3D's first checkpoint on the seed, optimizer, field and grid). Anything else (no
    run of the entry's in its folder, a text run without a checkpoint, which starts again):
    ``fresh``, the batch's config, and none. The third value: where the run's ``config.json``
    holds what this dreamtext refuses (an unknown field, a value out of range), the one line
    the batch fails that line with (:func:`own_config_refusal`), with ``fresh`` and no
    conflicts: the line fails at its turn (:func:`look_at_line`), the other lines train.

    ``resolved``: the configs made so far, by the run's kind, fixed settings and recorded
    settings but its prompt and folder, which set nothing else: runs of one list mostly share
    them, and resolving each of 50,000 took 18 ms (the preset and --config files read again for
    each). ``settings``: where given, the key of ``resolved`` each line resolved by, by its
    folder (a line absent took ``fresh``): lines of one key differ in prompt and folder alone,
    which :func:`settings_groups` groups the up-front checks by. ``shared``: a config from
    ``resolved`` shares its sections with the lines of its key (:func:`entry_configs`)."""
    workspace = entry.workspace
    if run_owner(workspace) != entry.key:
        return fresh, [], None
    fixed = RESUME_FIXED
    if entry.kind == "image":
        from dreamtext.imageto3d import image_run_fixed

        fixed = image_run_fixed(workspace, False, "image").get("fixed", RESUME_FIXED)
    elif not (can_resume(workspace) or run_finished(workspace, 0)):
        return fresh, [], None
    try:
        base = read_run_config(workspace, "move that folder away and run the batch again")
    except DreamtextError as error:  # its line names the file and the fix
        return fresh, [], str(error)
    if base is None:
        return fresh, [], None
    prompt = _config_prompt(entry)
    recorded = {k: v for k, v in base.items() if k not in ("prompt", "workspace")}
    key = json.dumps([entry.kind, fixed, recorded])
    if settings is not None:
        settings[workspace] = key
    if resolved is not None and key in resolved:
        cfg, conflicts = resolved[key]
        cfg = cfg if shared else copy.deepcopy(cfg)
        return replace(cfg, prompt=prompt, workspace=str(workspace)), conflicts, None
    mine = {**overrides, "prompt": prompt, "workspace": str(workspace)}
    try:
        cfg = resolve_config(mine, preset=preset, config_file=config_file, base=base, fixed=())
    except DreamtextError as error:  # the run's config.json holds what this dreamtext refuses
        return fresh, [], own_config_refusal(workspace, error)
    conflicts = resume_conflicts(fill_from_presets(base)[0], cfg, fixed)
    if fixed == ("seed",) and conflicts:  # before text→3D's checkpoint: the descriptor's seed
        conflicts = [f"{conflicts[0]} (which trained its descriptor)"]
    if resolved is not None:
        resolved[key] = (cfg, conflicts)
    return cfg, conflicts, None


def own_config_refusal(workspace: Path, error: DreamtextError) -> str:
    """The one line with which the batch fails a line whose own run's ``config.json`` holds
    what this dreamtext refuses (``error``: an unknown field, one a later dreamtext wrote, a
    value out of range), and ``batch --status`` shows it: the file, what is wrong, the fix. The
    list's other lines train: one run's record does not refuse the batch."""
    return (
        f"{error}; correct {workspace / 'config.json'}, or move {workspace} away to train the "
        "line anew, and run the batch again"
    )


def refuses_resume(entry: Entry, conflicts: Sequence[str]) -> bool:
    """Whether the batch is refused for ``entry``, a line it would train, whose own run fixes
    the settings ``conflicts`` names (:func:`own_run_config`: ``"seed 0 → 7"``) that the batch
    asks otherwise: a text line's run it resumes (one with a checkpoint; one without starts
    again, with the batch's), an image line's stage (:func:`resume_conflicts_refusal`)."""
    return bool(conflicts) and (entry.kind == "image" or can_resume(entry.workspace))


def resume_conflicts_refusal(
    conflicts: Sequence[tuple[Entry, list[str]]],
    images: bool = False,
    others: int = 0,
    elsewhere: int = 0,
    array: bool = False,
) -> str:
    """The one line that refuses a batch whose lines to resume were asked for settings their
    runs fix (:func:`own_run_config`), naming each line (the first :data:`NOT_STARTED_SHOWN`),
    its run and the settings, before anything trains. ``images``: the list has image lines,
    so that its ``--overwrite`` is refused too: the way to train those runs anew is to move
    their folders away. ``others``: how many other lines of this worker's share hold a run,
    ``elsewhere``: how many lines of the list's other shares do, which the batch's
    ``--overwrite`` would train again too (a finished one's replaced): a job array (``array``:
    this worker is a task of one) gives every task the same flags, so its tasks together
    replace both; workers started by hand with ``--shard K/N`` do where each is given it. Where
    there are any, the line names each refused line's own `dreamtext text ... --overwrite`
    instead, and says how many runs are in this share and how many in the others."""
    shown = [
        f"line {entry.line} ({entry.workspace}): {', '.join(changed)}"
        for entry, changed in conflicts[:NOT_STARTED_SHOWN]
    ]
    more = len(conflicts) - len(shown)
    if images:
        anew = "move those runs' folders away to train them again from scratch"
    elif not others + elsewhere:
        anew = "--overwrite trains them again from scratch"
    else:
        command = (
            f"`{line_command(conflicts[0][0])}`"
            if len(conflicts) == 1
            else "each one's own `dreamtext text PROMPT --workspace ROOT/FOLDER --overwrite`"
        )
        total = others + elsewhere
        runs = f"{total} other run{'s' if total > 1 else ''}"
        if not elsewhere:
            replaced = f" would train the list's {runs} again too"
        else:
            where = f"{others} in this share, {elsewhere} in the others"
            if not others:
                where = "in another share" if elsewhere == 1 else "all in other shares"
            given = (
                "which a job array gives every task" if array else "given to every share's worker"
            )
            replaced = f", {given}, would train {runs} of the list again too: {where}"
        anew = (
            f"{command}, with {line_flags(conflicts[0][0])}, trains it alone again from "
            f"scratch (the batch's --overwrite{replaced})"
        )
    return (
        "a resumed run keeps its seed, optimizer, field and occupancy grid, but the batch asks "
        f"other ones of the runs it would resume: {'; '.join(shown)}"
        + (f"; and {more} more line{'s' if more > 1 else ''}" if more else "")
        + "; keep the runs' own (drop those flags or --config settings: a run keeps what the "
        f"batch does not give), or {anew}"
    )


def _config_prompt(entry: Entry) -> str:
    return (Path(entry.prompt).stem or "image") if entry.kind == "image" else entry.prompt


def finished_here(entry: Entry, cfg: TrainConfig) -> bool:
    """The entry's workspace holds a finished run (:func:`is_finished`) of this very prompt or
    image: a finished run of another prompt is not this one's."""
    return is_finished(cfg) and run_owner(entry.workspace) == entry.key


@dataclass(frozen=True)
class LineLook:
    """What a worker of the batch finds at a line before it trains it (:func:`look_at_line`).
    ``refusal``: why the batch fails the line (its one line, with the fix); ``finished``: it
    skips it; ``holder``: the record of a batch lock it leaves to its live holder, refreshed
    ``holder_age`` seconds ago (``{}``: another user's lock, which cannot be read); ``stale``:
    why it takes over the lock there; ``in_use``: who else runs the line's run (``process 7
    on this machine``), which the run refuses (a skip). None of them: it takes the line."""

    refusal: str | None = None
    finished: bool = False
    holder: dict[str, Any] | None = None
    holder_age: float = 0.0
    stale: str | None = None
    in_use: str | None = None


def look_at_line(
    entry: Entry,
    cfg: TrainConfig,
    claim: WorkspaceLock,
    fresh: bool = False,
    refusal: str | None = None,
) -> LineLook:
    """Whether a worker of the batch takes ``entry`` with ``cfg``, the config it runs it with,
    and if not why, as :func:`run_entry` decides and ``batch --status`` reports, in this order:
    it fails a line whose folder is a file, holds another prompt's run, or holds a
    ``config.json`` that cannot be read (the run's start refuses it) or whose run's own one holds
    what this dreamtext refuses (``refusal``: :func:`own_run_config`'s, finished or not: the
    batch cannot tell what it would do with it); it skips a finished one
    (:func:`finished_here`; not where ``fresh``: ``--overwrite`` trains it anew); it leaves a
    line whose lock ``claim`` would not take over (:meth:`WorkspaceLock.stale_reason`) to its
    holder; it skips a line another live process runs: one of this machine that its
    ``status.json`` names (:func:`~dreamtext.runfiles.running_elsewhere`), or one holding the
    run's own lock (:func:`~dreamtext.processes.lock_held`: another machine's, where the file
    system's locks reach across machines), which the run's start refuses. Reads files only:
    the worker then claims the line (:meth:`WorkspaceLock.acquire`, which judges a lock found
    meanwhile by the same measure)."""
    workspace = entry.workspace
    if workspace.exists() and not workspace.is_dir():
        return LineLook(
            refusal=f"{workspace} is a file, where this prompt's run folder goes; move it away "
            "and run the batch again"
        )
    owner = run_owner(workspace)
    if owner is not None and owner != entry.key:
        what = f"image {owner[1]}" if owner[0] == "image" else f"'{owner[1]}'"
        return LineLook(
            refusal=f"{workspace} holds a run of {what}; move that folder away and run the "
            "batch again"
        )
    if owner is None and os.path.lexists(workspace / "config.json"):
        try:  # one that does not say whose run it is: the run's start reads it first
            read_config_json(
                workspace / "config.json", "move that folder away and run the batch again"
            )
        except DreamtextError as error:
            return LineLook(refusal=str(error))
    if refusal is not None:
        return LineLook(refusal=refusal)
    if not fresh and finished_here(entry, cfg):
        return LineLook(finished=True)
    try:
        held = WorkspaceLock.read(lock_path(workspace))
    except PermissionError:  # another user's (umask 077): claimed, its holder unknown
        return LineLook(holder={})
    stale = None
    if held is not None:
        stale = claim.stale_reason(*held)
        if stale is None:
            return LineLook(holder=held[0], holder_age=held[1])
    status = read_status(workspace)
    pid = running_elsewhere(status, workspace)
    if pid is not None:
        return LineLook(stale=stale, in_use=f"process {pid} on this machine")
    if lock_held(workspace) is True:
        running = (status or {}).get("state") == "running"
        who = f"process {status.get('pid')} on {status.get('host', '?')}" if running else None  # type: ignore[union-attr]
        return LineLook(stale=stale, in_use=who or "another process")
    return LineLook(stale=stale)


def interruption_line(
    entry: Entry, stop: BaseException, overwrite: bool = False, begun: bool = True
) -> str:
    """What a Ctrl-C or SIGTERM left of the entry's run and how to go on. The trainer's
    :class:`TrainingInterrupted` names the checkpoint it saved; after a bare ``KeyboardInterrupt``
    (outside training: loading, the export; or a second Ctrl-C, which does not wait for the
    step's end) the run goes on from its newest checkpoint, if it has one.

    ``overwrite``: the line was being trained anew (``--overwrite``), which a rerun with
    ``--overwrite`` starts over: a rerun without it resumes the new run. ``begun``: its new run
    had started (its status.json is no longer the one from before the batch); where it had not,
    the checkpoint there is the old run's, and a rerun with ``--overwrite`` trains it anew."""
    if overwrite and not begun:
        return (
            "interrupted before its --overwrite began; run the batch again with --overwrite to "
            "train it anew"
        )
    without = " without --overwrite" if overwrite else ""
    anew = " (with --overwrite it starts anew)" if overwrite else ""
    if isinstance(stop, TrainingInterrupted):
        if stop.unsaved:  # its weights overflowed: the line says what to do (a smaller --lr)
            return str(stop)
        return f"{stop}; run the batch again{without} to resume{anew}"
    if can_resume(entry.workspace):
        return f"interrupted; run the batch again{without} to resume from the last checkpoint{anew}"
    kept = image_stages_kept(entry)
    if kept:
        return (
            "interrupted before text→3D's first checkpoint; run the batch again to go on from "
            + " and ".join(kept)
        )
    return "interrupted before the run's first checkpoint; run the batch again to start it again"


def image_stages_kept(entry: Entry) -> list[str]:
    """What an image line's stages before text→3D saved, which a rerun reuses: the sentence its
    search found, then the trained descriptor or the descriptor's last checkpoint. A stop
    between them (loading, saving, the text stage's start) was said to start the run again."""
    if entry.kind != "image" or not sentence_path(entry.workspace).is_file():
        return []
    from dreamtext.descriptor import learned_embeds_path

    if learned_embeds_path(entry.workspace).is_file():
        return ["the sentence found", "the trained descriptor"]
    if descriptor_checkpoint(entry.workspace).is_file():
        return ["the sentence found", "the descriptor's last checkpoint"]
    return ["the sentence found"]


def changed_setting_lines(entry: Entry, cfg: TrainConfig) -> list[str]:
    """``"name old → new"`` for every setting of ``cfg`` that differs from the run's in the
    entry's workspace (:func:`dreamtext.config.run_setting_changes`; for an image line without
    its learned sentence and token, which ``cfg`` does not know yet)."""
    return run_setting_changes(entry.workspace, cfg, learned=entry.kind == "image")


def export_command(workspace: Path, cfg: TrainConfig, changed: Sequence[str]) -> str:
    """The ``dreamtext export`` command that exports ``workspace`` with ``cfg``'s export options
    named in ``changed`` (lines ``"export_options.NAME old → new"``): a re-export takes the run's
    recorded options unless flags override them, so each changed one is a flag, and the folder
    is quoted for the shell."""
    names = [line.split(" ", 1)[0].removeprefix("export_options.") for line in changed]
    words = ["dreamtext", "export", "--workspace", str(workspace)]
    return shlex.join(words + export_flag_words(cfg.export_options, names))


def resumed_with_other_settings(entry: Entry, cfg: TrainConfig) -> tuple[list[str], bool]:
    """What the batch warns of, without refusing it, before it resumes the entry's unfinished
    run with ``cfg`` (:func:`warn_resuming_with_other_settings`; ``batch --status``'s row says
    it too): the settings that differ from the run's ``config.json`` (``"lr 0.02 → 0.01"``,
    :func:`changed_setting_lines`), and whether the run is trained and only exported (``True``:
    those named are its trained ones, which do not apply to it; else they all apply from its
    last checkpoint on). No settings where it has no checkpoint to resume (it starts again, with
    ``cfg``), or where ``cfg`` changes a setting the run keeps (the seed, the field: the batch
    refuses those, :func:`refuses_resume`, and the trainer too)."""
    if not can_resume(entry.workspace):
        return [], False
    changed = changed_setting_lines(entry, cfg)
    saved = read_run_config(entry.workspace, "") if changed else None
    if not changed or (saved is not None and resume_conflicts(saved, cfg)):
        return [], False
    if run_finished(entry.workspace, cfg.iters):  # trained, no mesh: only exported
        return [line for line in changed if not line.startswith("export_options.")], True
    return changed, False


def warn_resuming_with_other_settings(entry: Entry, cfg: TrainConfig) -> None:
    """Before an unfinished run is resumed: one warning line naming the settings the batch
    changes from its ``config.json`` (:func:`resumed_with_other_settings`), which apply from
    its last checkpoint on, or which a run trained and only exported does not take."""
    changed, exported = resumed_with_other_settings(entry, cfg)
    if not changed:
        return
    if exported:
        _say(
            f"batch: line {entry.line}: {entry.workspace} is trained and only exported, so "
            f"these settings do not apply to it ({', '.join(changed)}); "
            + retrain_advice(entry, "again from scratch with them", changed)
        )
        return
    _say(
        f"batch: line {entry.line}: {entry.workspace} resumes with other settings than it "
        f"started with ({', '.join(changed)}); they apply from its last checkpoint on, "
        + retrain_advice(entry, "again from scratch with them", changed)
    )


def retrain_advice(entry: Entry, how: str, changed: Sequence[str] = ()) -> str:
    """How the batch's warnings say to train the entry's run alone again from scratch (``how``:
    ``"again with these"``): its own `dreamtext text PROMPT --workspace W --overwrite`
    (:func:`line_command`; `dreamtext image IMAGE ...`, which trains an image line's text→3D
    again and keeps its sentence and descriptor), with :func:`line_flags`. The batch's
    ``--overwrite`` trained every text line of its share again, a finished one's run replaced,
    and refuses a list with image lines. An image line asked another seed (``changed``: lines
    ``"name old → new"``) is told to move its folder away: `image --overwrite` keeps the
    descriptor its seed trained, and refuses another ``--seed``."""
    if entry.kind == "image" and any(line.startswith("seed ") for line in changed):
        return (
            f"its descriptor, which `dreamtext image --overwrite` keeps, was trained with its "
            f"seed: move {shell_word(entry.workspace)} away and run the batch again to train "
            "it anew"
        )
    what = "its text→3D" if entry.kind == "image" else "it"
    return f"`{line_command(entry)}`, with {line_flags(entry)}, trains {what} {how}"


def line_command(entry: Entry, flag: str = "--overwrite") -> str:
    """``dreamtext text PROMPT --workspace W --overwrite`` (``image IMAGE`` for an image line):
    what trains the line's run alone again from scratch, in its folder; with another ``flag``
    (``--resume``; ``""``: none), what goes on with it (:func:`~dreamtext.errors.run_command`)."""
    return run_command(entry.kind, entry.prompt, entry.workspace, flag)


def line_resume(entry: Entry) -> str:
    """How the lines that stop the entry's run say to go on from its checkpoint with a setting
    changed (``... and a smaller --lr``): its own `dreamtext text PROMPT --workspace W --resume`
    (`dreamtext image IMAGE --workspace W`, which goes on by itself), which reads the run's
    recorded settings and changes that one for this line alone. The batch run again with the
    flag changed it for every line it resumed, and warned of every finished one that it
    finished with other settings."""
    return f"`{line_command(entry, '--resume' if entry.kind == 'text' else '')}`"


def line_again(entry: Entry, fresh: bool) -> str:
    """The line's own command that runs it as the batch was to (a line that failed before
    its training steps: out of memory loading its prior or building its field), for a
    setting changed for it alone: `dreamtext text PROMPT --workspace W --resume` where it has a
    checkpoint to go on from (``--overwrite`` where ``fresh``: the batch's --overwrite was to
    replace it), no flag where it has none (`--resume` is refused there), and
    `dreamtext image IMAGE --workspace W` for an image line, which goes on by itself. The batch
    run again with the setting changed changes it for every line it resumes or starts, and
    warns of every finished one that it finished with other settings. Where it goes on from
    what it saved (an image line, or a checkpoint not to replace), that is :func:`line_resume`."""
    if entry.kind == "text" and not can_resume(entry.workspace):
        return f"`{line_command(entry, '')}`"
    if entry.kind == "text" and fresh:
        return f"`{line_command(entry)}`"
    return line_resume(entry)


def line_start_again(entry: Entry) -> StartAgain:
    """How the lines that stop the entry's run for good (diverged, overflowed) say to train it
    again from scratch (:class:`~dreamtext.errors.StartAgain`): with its own command
    (:func:`line_command`), not the batch's ``--overwrite``, which trains every text line of the
    share again and refuses image lines; an image line keeps its seed, which trained its
    descriptor."""
    return StartAgain(
        f"`{line_command(entry)}` (with {line_flags(entry)})", seed=entry.kind != "image"
    )


def line_flags(entry: Entry) -> str:
    """Which of the batch's flags the line's own command (:func:`line_command`) is to be run
    with: an image line's, all the batch's others (``--shard`` and ``--lock-timeout`` are the
    batch's own); a text line's, its text→3D ones: `dreamtext text` refuses the sentence
    search's and the descriptor's (``--noun``, ``--descriptor-iters``: for ``--diverse``
    alone), which a batch takes for its image lines."""
    return "the batch's other flags" if entry.kind == "image" else "its other text→3D flags"


def is_finished(cfg: TrainConfig) -> bool:
    """The run's ``status.json`` says finished at ``cfg.iters`` or beyond (a finished run asked
    for more iterations resumes) and, when ``cfg.export`` asks for a mesh, the mesh is there (a
    run trained with ``--no-export`` resumes at its last step, which exports it); a run of the old
    ``scripts/batch.sh``, without ``status.json``, counts by its checkpoint and mesh
    (:func:`dreamtext.runstatus.run_finished`). A finished run whose ``last.pt`` is missing or
    cut short is not: its resume goes on from its newest whole step file, as the export's
    refusal says the batch command does (:func:`dreamtext.checkpoint.last_reads`)."""
    workspace = Path(cfg.workspace)
    finished = run_finished(workspace, cfg.iters, needs_mesh=cfg.export)
    return finished and last_reads(workspace, whole=False)


def continued_step(workspace: Path, iters: int) -> int | None:
    """The step a finished run in ``workspace`` ended at where the batch's ``iters`` is higher
    (``iters`` is in :data:`~dreamtext.config.NOT_COMPARED`: its resume trains on from there),
    else ``None``: a run that is not finished, or finished at ``iters`` or beyond, or has no
    checkpoint left to go on from."""
    if not run_finished(workspace, 0) or run_finished(workspace, iters):
        return None
    if not can_resume(workspace):
        return None
    status = read_status(workspace)
    return status["step"] if status is not None else saved_step(workspace)


@dataclass
class BatchRun:
    """What :func:`run_batch` did: ``records``, the ``batch.jsonl`` records it wrote, in order;
    ``not_started``, the lines of its share that a Ctrl-C or SIGTERM stopped it before and that
    were not finished when it started (none when it ran to the end, or stopped for its file
    system or GPU; a finished line after the stop is skipped when the batch runs again, not
    started); ``overwrite``, whether it ran
    with ``--overwrite`` (what :func:`not_started_line` tells the user to run next). The CLI
    prints that line below the summary table of ``records``: a log ends with what is left.
    ``finished_not_visited``: the lines of the share that the stop came before which were
    finished when it started, which a rerun skips (:func:`finished_not_visited_line`, the
    line of a stop that left none to start)."""

    records: list[dict[str, Any]]
    not_started: list[Entry]
    overwrite: bool = False
    # Ctrl-C or SIGTERM stopped it, in a line or between two (exit status 130).
    interrupted: bool = False
    finished_not_visited: list[Entry] = field(default_factory=list)


def run_batch(
    prompts_file: str | Path,
    overrides: dict[str, Any],
    preset: str | None = None,
    config_file: str | Path | Sequence[str | Path] | None = None,
    options: BatchOptions | None = None,
) -> BatchRun:
    """Run this worker's share of a prompts file; return the ``batch.jsonl`` records written
    and the lines of the share it did not start (:class:`BatchRun`).

    ``overrides``, ``preset``, ``config_file``: the text→3D settings of every run, as for
    ``dreamtext text``. Bad input (the file, the share, an image, a config, the model) is a
    :class:`DreamtextError` before anything is written.

    The process keeps the models of the lines still to run loaded from line to line and
    releases the others (:class:`LineModels`); after the batch, the last line's stay loaded,
    as a run's do (:func:`dreamtext.models.hold_models`).
    """
    from dreamtext.models import hold_models

    try:
        return _run_batch(prompts_file, overrides, preset, config_file, options)
    finally:
        hold_models()


def _run_batch(
    prompts_file: str | Path,
    overrides: dict[str, Any],
    preset: str | None,
    config_file: str | Path | Sequence[str | Path] | None,
    options: BatchOptions | None,
) -> BatchRun:
    """:func:`run_batch`, which releases the models its lines held at its end."""
    options = options or BatchOptions()
    root = Path(options.root)
    check_root(root)
    if root.is_dir():  # before minutes of loading a model (a new one is checked once made)
        check_root_writable(root)
        check_batch_log(root / BATCH_LOG)
    # The start reads every run to decide what to train, each run's files once (read_once):
    # the block ends before the first line trains, which every look from then on sees.
    with read_once():
        entries = read_prompts(prompts_file, root)
        images = [e.line for e in entries if e.kind == "image"]
        if options.overwrite and images:
            raise DreamtextError(
                f"--overwrite trains text prompts again, not image lines (line {images[0]}): "
                "remove those lines' folders to train them again, or drop --overwrite"
            )
        shard = resolve_shard(options.shard, os.environ)
        # Its restart count, read by every line's lock and record, before any is written.
        slurm_task()
        share = select_share(entries, shard)
        # The settings and the list are checked before every line's config is made (a list of
        # 50,000 lines takes seconds), and by a worker whose share is empty (more workers than
        # lines) too, as by every other: the workers of one list refuse it alike.
        # The built-in prior's captions, before the configs are made where the model and
        # negative prompt are known without them (as the CLI checks them before it imports
        # torch), else after.
        guidance = layered_guidance(overrides.get("guidance", {}), preset, config_file)
        known = guidance is not None
        if guidance is not None and guidance["model"] in BUILTIN_MODELS:
            check_builtin_prior(
                entries, guidance["model"], guidance["negative"], Path(prompts_file)
            )
        first = entry_config((share or entries)[0], overrides, preset, config_file)
        if not known and first.guidance.model.startswith("builtin:"):
            check_builtin_prior(
                entries, first.guidance.model, first.guidance.negative, Path(prompts_file)
            )
        configs = entry_configs(share, overrides, preset, config_file, first) if share else []
        # --overwrite retrains a run unless its status.json changes after this, when a worker
        # sharing the list (with --overwrite too) has trained it again already.
        before = {e.workspace: read_status(e.workspace) for e in share}
        others = BatchLog(root / BATCH_LOG)
        # A requeued SLURM task with --overwrite: the lines it trained again before its requeue are
        # this job's runs, not the older ones --overwrite discards; they are skipped or resumed.
        kept = requeued_task_runs(root / BATCH_LOG, share, root) if options.overwrite else set()
        overwrites = {e.workspace: options.overwrite and e.workspace not in kept for e in share}
        # A line's own run goes on with its recorded settings under the batch's, as `text --resume`.
        resolved: dict[str, tuple[TrainConfig, list[str]]] = {}
        settings: dict[Path, str] = {}
        owns = [
            (cfg, [], None)
            if overwrites[e.workspace]
            else own_run_config(e, cfg, overrides, preset, config_file, resolved, settings)
            for e, cfg in zip(share, configs, strict=True)
        ]
        configs = [cfg for cfg, _, _ in owns]
        # A line whose run's config.json holds what this dreamtext refuses fails at its turn,
        # with its own line (look_at_line); the checks before the first line leave it out.
        refusals = {
            e.workspace: refusal
            for e, (_, _, refusal) in zip(share, owns, strict=True)
            if refusal is not None
        }
        pending = [
            (e, cfg)
            for e, cfg in zip(share, configs, strict=True)
            if e.workspace not in refusals
            and (overwrites[e.workspace] or not finished_here(e, cfg))
        ]
        # Only a run that trains again is refused: a finished one skipped gets its warning line.
        # (An image line's conflicts are those of its stage: its descriptor's seed before text→3D's
        # first checkpoint.) A stop before a failing line leaves it to the next batch, as others.
        to_train = {e.workspace for e, _ in pending} | set(refusals)
        conflicts = [
            (e, changed)
            for e, (_, changed, _) in zip(share, owns, strict=True)
            if e.workspace in to_train and refuses_resume(e, changed)
        ]
        if conflicts:
            # --overwrite, the refusal's other way out, replaces the other runs of the share, and
            # a job array gives it to every task: the other shares' runs are counted too.
            named = {e.workspace for e, _ in conflicts}
            mine = {e.workspace for e in share}
            held = [e.workspace for e in entries if run_owner(e.workspace) == e.key]
            others = sum(w not in named and w in mine for w in held)
            elsewhere = sum(w not in mine for w in held)
            array = os.environ.get("SLURM_ARRAY_TASK_ID") is not None
            raise DreamtextError(
                resume_conflicts_refusal(conflicts, bool(images), others, elsewhere, array)
            )
    lines_models = LineModels(share, {e.workspace: line_models(e, c, options) for e, c in pending})
    if pending:
        # Once for the batch, as `text` and `image` say it once for their run.
        if (line := builtin_preset_on_stable_diffusion(pending[0][1])) is not None:
            _say(f"dreamtext: {line}")
        check_image_lines([e for e, _ in pending], options, load=False)
        videos = [cfg for _, cfg in pending if cfg.export and cfg.export_options.video]
        if videos:  # before the first line trains: every line's export would fail at its end
            from dreamtext.export import check_ffmpeg

            check_ffmpeg(videos[0].export_options, after_training=True)
        # A field too large is told what its resumed lines can change (their runs keep theirs).
        resuming = [
            e.line for e, _ in pending if not overwrites[e.workspace] and can_resume(e.workspace)
        ]
        check_other_models(pending)
        lines_models.hold_all()  # the checks load the first line's model and the CLIPs
        # The lines' own runs may differ in any setting: each check runs once per settings.
        # Where they do, a refusal names the first line of the settings it refuses.
        groups = settings_groups(pending, settings)
        named = len(groups) > 1
        check_prompt_lengths(groups, Path(prompts_file), options.image)  # before any load
        built: set[str] = set()
        for group in groups[1:]:
            with naming_line(group[0][0]):
                check_machine(group[0][1], *resumed_in(group, resuming), built)
        with naming_line(groups[0][0][0] if named else None):
            check_model(groups[0][0][1], *resumed_in(groups[0], resuming), built)
        check_image_lines([e for e, _ in pending], options)
    shard_text = f"{shard[0]}/{shard[1]}" if shard else None
    if shard is not None and not share:
        # More shares than prompts (an array larger than the list): this one has none, which
        # a bar of "0prompt" and a table of no lines did not say.
        _say(
            f"batch: share {shard_text} of {prompts_file} holds no prompts (the list has "
            f"{len(entries)} for {shard[1]} shares); nothing to do"
        )
        return BatchRun([], [], options.overwrite)
    if shard is not None:
        _say(f"batch: share {shard_text}: {len(share)} of {len(entries)} prompts")
    existed = root.is_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DreamtextError(
            f"cannot create --workspace {root}: {error.strerror or error}; pass a folder you "
            "can write to"
        ) from None
    if not existed:
        check_root_writable(root)
    records: list[dict[str, Any]] = []

    def attempt(entry: Entry, cfg: TrainConfig) -> dict[str, Any]:
        lines_models.before(entry, first_pass=len(records) < len(share))
        record = run_entry(
            entry,
            cfg,
            replace(options, overwrite=overwrites[entry.workspace]),
            root,
            shard_text,
            before[entry.workspace],
            others,
            log=root / BATCH_LOG,
            list_file=prompts_file,
            refusal=refusals.get(entry.workspace),
        )
        lines_models.after(entry, record)
        return record

    with (
        sigterm_interrupts(),  # a scheduler's preemption or time limit acts as Ctrl-C
        # Its start is a line in a log too: the first prompt may take minutes.
        tqdm(
            total=len(share),
            desc="prompts",
            unit="prompt",
            dynamic_ncols=True,
            show_start=True,
            **bar_options(),
        ) as bar,
    ):
        # A KeyboardInterrupt out of it came between two lines: no line of its own records it.
        not_reached: list[Entry] = []  # of the lines the second pass was to come back to
        with contextlib.suppress(KeyboardInterrupt):
            _run_share(
                share,
                configs,
                records,
                attempt,
                bar,
                options,
                root,
                shard_text,
                not_reached,
                prompts_file,
            )
            # Each line it ran has its record (all of them, or up to the one the batch stopped
            # at): a stop from here on changes neither them nor the batch's exit status.
            work_complete()
        # A Ctrl-C or SIGTERM between two lines (held back while a line's record was written,
        # or its KeyboardInterrupt swallowed) stopped the batch as one in a line does.
        between = stop_requested()
    unstarted = [*share[len(records) :], *not_reached]
    # One that came once every line had its record (the last one skipped as finished, or
    # failed, marks no work complete) stopped nothing: it exited 130 with nothing left.
    stopped = (between and bool(unstarted)) or any(stopped_by_user(r) for r in records)
    left = [e for e in unstarted if e.workspace in to_train] if stopped else []
    finished = [e for e in unstarted if e.workspace not in to_train] if stopped else []
    return BatchRun(records, left, options.overwrite, stopped, finished)


def _run_share(
    share: list[Entry],
    configs: list[TrainConfig],
    records: list[dict[str, Any]],
    attempt: Callable[[Entry, TrainConfig], dict[str, Any]],
    bar: Any,
    options: BatchOptions,
    root: Path,
    shard_text: str | None,
    not_reached: list[Entry],
    list_file: str | Path,
) -> None:
    """Run the lines of ``share`` in order, appending each one's record to ``records``, until
    a Ctrl-C or SIGTERM (in a line, or between two: :func:`stop_requested`) or a stop for the
    file system or GPU; then the lines skipped for a lock whose holder stopped refreshing it.
    Those that a stop in that second pass leaves unvisited go to ``not_reached``. ``list_file``:
    the prompts file, which the line of a stop while waiting for a lock names
    (:func:`list_line`)."""

    def unvisited(start: int) -> None:
        held = zip(share[start:], records[start:], strict=True)
        not_reached.extend(entry for entry, record in held if held_for(record))

    for entry, cfg in zip(share, configs, strict=True):
        more_work()  # a stop once the line before was complete (and since) stops the batch here
        if stop_requested():
            break  # a stop that came between two lines: the next one is not started
        bar.set_postfix_str(entry.workspace.name[:40])
        record = attempt(entry, cfg)
        records.append(record)
        if stopped_by_user(record):
            break  # not done: the bar does not count it
        bar.update(1)
        if record["stopped_batch"]:  # a full disk, an unusable GPU
            break
    else:
        # Lines skipped for a lock whose holder stopped refreshing it (a dead node's): this
        # worker waits for the lock to time out and runs them, rather than leaving them to
        # a later submission. A holder that refreshes its lock again is alive: skipped.
        for index, (entry, cfg) in enumerate(zip(share, configs, strict=True)):
            if not held_for(records[index]):
                continue
            more_work()
            if stop_requested():
                unvisited(index)
                break
            try:
                again = wait_for_abandoned_lock(entry, options.lock_timeout)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM while waiting
                result = {"status": "interrupted", "error": None}
                now = time.perf_counter()
                record = {
                    **_record(entry, root, shard_text, result, False, now_iso(), now),
                    "continued_from": None,
                    "stopped_batch": True,
                    "took_over": None,
                }
                _say(
                    f"batch: {list_line(entry, list_file)}: interrupted while waiting for its "
                    "lock; run the batch again to go on (finished lines are skipped)"
                    f"{requeue_note(os.environ)}"
                )
                records[index] = log_record(root / BATCH_LOG, record, entry, root)
                unvisited(index + 1)
                break
            if not again:
                continue
            bar.set_postfix_str(entry.workspace.name[:40])
            records[index] = record = attempt(entry, cfg)
            if record["stopped_batch"]:
                unvisited(index + 1)
                break


def list_line(entry: Entry, list_file: str | Path | None) -> str:
    """``prompts.txt: line 3``: where in the list ``entry`` is, as the lines of a Ctrl-C or
    SIGTERM name it, in a line's run or while waiting for its lock (as the list's refusals name
    a line); ``line 3`` where no ``list_file`` is given."""
    where = f"line {entry.line}"
    return where if list_file is None else f"{shown_path(list_file)}: {where}"


# How many line numbers of the lines a stopped batch did not start its one line names.
NOT_STARTED_SHOWN = 10


def not_started_line(entries: Sequence[Entry], overwrite: bool) -> str:
    """The line with which a batch stopped by Ctrl-C or SIGTERM names the lines of its share it
    did not start, and what running it again does. (A batch that stops for its file system says
    that in one line, :func:`batch_stop_line`.)"""
    many = len(entries) > 1
    them = "them" if many else "it"
    again = (
        # --overwrite trains every line anew, those this batch finished too; without it, lines
        # that had a run before this batch are resumed or skipped, not trained anew.
        f"run the same command again with --overwrite to train {them} anew (it trains the "
        f"lines this one finished anew too), or without it to keep those (then lines with an "
        "earlier run resume it or are skipped)"
        if overwrite
        else f"run the same command again to start {'them' if many else 'it'} (finished lines "
        "are skipped, an interrupted one resumes)"
    )
    which = line_numbers([e.line for e in entries])
    return f"batch: {len(entries)} line{'s' if many else ''} not started ({which}); {again}"


def finished_not_visited_line(entries: Sequence[Entry]) -> str:
    """The line of a batch that a Ctrl-C or SIGTERM stopped between two lines where every line
    it did not visit (``entries``) was finished before it started: nothing is left to train,
    and a rerun skips them. Without it such a batch exited 130 with no line at all."""
    them = "them" if len(entries) > 1 else "it"
    return (
        f"batch: interrupted before {line_numbers([e.line for e in entries])}, finished before "
        f"this batch started: nothing is left to train (the same command again skips {them})"
    )


def line_numbers(lines: Sequence[int]) -> str:
    """``line 3``, ``lines 3, 4``, ``lines 3, 4, ..., 12 and 3 more``: the first
    :data:`NOT_STARTED_SHOWN` of a list's line numbers."""
    shown = ", ".join(str(line) for line in lines[:NOT_STARTED_SHOWN])
    more = len(lines) - NOT_STARTED_SHOWN
    return (
        f"{'lines' if len(lines) > 1 else 'line'} {shown}{f' and {more} more' if more > 0 else ''}"
    )


def requeued_task_runs(log: Path, share: list[Entry], root: Path) -> set[Path]:
    """The workspaces of ``share`` that this SLURM task (:func:`slurm_task`), requeued, trained
    before its requeue: its earlier attempts' ``batch.jsonl`` records (the same task id, a lower
    restart count) finished them or were interrupted in them (a preemption's SIGTERM), or one was
    killed in without warning, which leaves no record (:func:`killed_before_requeue`). Empty
    outside SLURM and for a task's first attempt; one line on stderr says what is kept."""
    task, restarts = slurm_task()
    if task is None or restarts == 0:
        return set()
    by_name = {_relative(e.workspace, root): e.workspace for e in share}
    kept = {e.workspace for e in share if killed_before_requeue(e.workspace, task, restarts)}
    with contextlib.suppress(OSError), open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:  # a torn line
                continue
            if not isinstance(record, dict) or record.get("slurm") != task:
                continue
            earlier = record.get("slurm_restart")
            if not isinstance(earlier, int) or earlier >= restarts:
                continue
            ran = record.get("status") == "finished" or (
                record.get("status") == "interrupted"
                and record.get("error") is None
                and _trained_in(record)
            )
            if ran and record.get("workspace") in by_name:
                kept.add(by_name[record["workspace"]])
    if kept:
        _say(
            f"batch: SLURM task {task} was requeued (restart {restarts}): --overwrite leaves the "
            f"{len(kept)} line{'s' if len(kept) > 1 else ''} it trained before, finished ones "
            "skipped, an interrupted one resumed"
        )
    return kept


def _trained_in(record: dict[str, Any]) -> bool:
    """Whether the interrupted attempt of ``record`` had trained its line (its ``step``, the
    run's step in a status.json its own process wrote, past 0): one stopped before (the model
    loading) left the folder's older run, which its ``--overwrite`` had not replaced yet.
    Records written before ``step`` was recorded count as trained, as they did."""
    if "step" not in record:
        return True
    step = record["step"]
    return isinstance(step, int) and step > 0


def killed_before_requeue(workspace: Path, task: str, restarts: int) -> bool:
    """Whether this SLURM task ``task`` was running ``workspace``'s run when an earlier attempt of
    it (a lower restart count than ``restarts``) was killed without warning: SIGKILL after the
    preemption's grace time, a node failure, the OOM killer. Such a kill writes no
    ``batch.jsonl`` record, but leaves the attempt's lock (:class:`WorkspaceLock`, which names the
    task) and the ``status.json`` its process wrote. Both are needed, and that status past step
    0: a kill before the run's first step may have left the older run that ``--overwrite``
    replaces (the trainer removes it after writing its first status), which is no run of this
    job's, and a run of this job's at step 0 has nothing to resume."""
    try:
        held = WorkspaceLock.read(lock_path(workspace))
    except OSError:  # unreadable here: the line's claim says so when it comes to it
        return False
    if held is None:
        return False
    lock = held[0]
    earlier = lock.get("slurm_restart")
    if lock.get("slurm") != task or not isinstance(earlier, int) or earlier >= restarts:
        return False
    run = read_status(workspace) or {}
    step = run.get("step")
    return same_process(run, lock) and isinstance(step, int) and step > 0


def check_builtin_prior(
    entries: list[Entry], model: str, negative: str, prompts_file: Path
) -> None:
    """With a built-in prior (``--model builtin:shapes``), every line of the list, not only this
    worker's share (the workers of one list refuse it alike), is a caption it knows, as is
    ``--negative`` (:func:`dreamtext.captions.check_builtin_prompt_lines`): ``dreamtext text``
    refuses any other prompt before it writes anything, and a batch that found out line by line
    trained the lines before each, then recorded it failed. ``image:`` lines need Stable
    Diffusion (their prompt is the sentence DreamText learns)."""
    for entry in entries:
        if entry.kind == "image":
            raise DreamtextError(
                f"{prompts_file}: line {entry.line} is an image, which needs a Stable "
                f"Diffusion model, not "
                f"{model}; pass --model with a diffusers hub id or folder"
            )
    lines = [(entry.line, entry.prompt) for entry in entries]
    check_builtin_prompt_lines(model, lines, negative, prompts_file)


def settings_groups(
    pending: Sequence[tuple[Entry, TrainConfig]], settings: Mapping[Path, str]
) -> list[list[tuple[Entry, TrainConfig]]]:
    """The lines to train in groups of one config but their prompt and folder, the group of the
    first line first, each in the list's order: the up-front checks run once a group. Lines
    are grouped by ``settings`` (:func:`own_run_config`'s key of a line's own run, by folder;
    a line absent took the batch's config), a lookup a line, and groups whose configs are
    equal are merged (a run's recorded settings may resolve to the batch's)."""
    by_key: dict[str, list[tuple[Entry, TrainConfig]]] = {}
    for entry, cfg in pending:
        by_key.setdefault(settings.get(entry.workspace, ""), []).append((entry, cfg))
    groups: list[list[tuple[Entry, TrainConfig]]] = []
    shapes: list[TrainConfig] = []
    for group in by_key.values():
        shape = replace(group[0][1], prompt="", workspace="")
        if shape in shapes:
            merged = groups[shapes.index(shape)]
            merged += group
            merged.sort(key=lambda pair: pair[0].line)
        else:
            groups.append(group)
            shapes.append(shape)
    return groups


@contextlib.contextmanager
def naming_line(entry: Entry | None) -> Iterator[None]:
    """A :class:`DreamtextError` out of the block, prefixed with ``entry``'s line and folder
    (``line 2 (runs/a_cat): ...``; ``None``: as it is): the refusal of settings some lines'
    own runs have (a GPU run's ``guidance.fp16: true`` resumed on a CPU machine) names the
    line, where it was said only once that line's turn came, after the lines before it."""
    try:
        yield
    except DreamtextError as error:
        if entry is None:
            raise
        raise DreamtextError(f"line {entry.line} ({entry.workspace}): {error}") from None


def resumed_in(
    group: Sequence[tuple[Entry, TrainConfig]], resuming: Sequence[int]
) -> tuple[list[int], bool]:
    """The lines of ``group`` among ``resuming`` (the lines whose runs resume), and whether
    they are all of its lines: :func:`check_machine`'s ``resuming`` and ``all_resume``."""
    lines = {entry.line for entry, _ in group}
    resumed = [line for line in resuming if line in lines]
    return resumed, len(resumed) == len(lines)


# The Stable Diffusion models (hub ids or folders) and CLIP models a line's run loads.
Needs = tuple[frozenset[str], frozenset[str]]
NO_MODELS: Needs = (frozenset(), frozenset())


def line_models(entry: Entry, cfg: TrainConfig, options: BatchOptions) -> Needs:
    """The models the run of ``entry`` loads: its guidance's Stable Diffusion (none for a
    built-in prior) and, for an image line whose sentence is still to find, its search's CLIP
    (``--clip``, or its run's own: :func:`dreamtext.imageto3d.resolve_image_options`)."""
    from dreamtext.imageto3d import resolve_image_options

    model = cfg.guidance.model
    stable_diffusion = frozenset() if model.startswith("builtin:") else frozenset({model})
    clip: frozenset[str] = frozenset()
    if entry.kind == "image" and not sentence_path(entry.workspace).is_file():
        with contextlib.suppress(DreamtextError):  # a run's unreadable record: its line fails
            clip = frozenset({resolve_image_options(options.image, entry.workspace).describe.clip})
    return stable_diffusion, clip


class LineModels:
    """Which models a batch's lines still to run will load, so that before each line the
    process keeps those and the line's own and releases the rest
    (:func:`dreamtext.models.hold_models`, :func:`~dreamtext.models.release_stable_diffusion`):
    a batch whose lines switch between models (lines resume on their runs' own) loads each
    once, in the order it did when the process kept every model it ever loaded, and holds only
    those still to use. Lines skipped for another worker's lock are run again after the others
    (:func:`_run_share`): their models are kept for that second pass.

    ``needs``: the lines to train, by folder (:func:`line_models`); the others load nothing."""

    def __init__(self, share: Sequence[Entry], needs: Mapping[Path, Needs]) -> None:
        self.needs = needs
        self.position = {entry.workspace: index for index, entry in enumerate(share)}
        # Each model's last line: the line after which the first pass no longer needs it.
        self.last: dict[tuple[int, str], int] = {}
        for entry in share:
            for kind, models in enumerate(needs.get(entry.workspace, NO_MODELS)):
                for model in models:
                    self.last[kind, model] = self.position[entry.workspace]
        self.revisit: set[Path] = set()  # lines skipped for a lock, to run in the second pass

    def hold_all(self) -> None:
        """Hold every line's models: for the checks before the first line."""
        from dreamtext.models import hold_models

        models: list[set[str]] = [set(), set()]
        for kind, model in self.last:
            models[kind].add(model)
        hold_models(*models)

    def before(self, entry: Entry, first_pass: bool) -> None:
        """Before ``entry`` runs: hold the models of the lines after it (``first_pass``) and
        of those to run again, release the loaded ones that neither they nor it use."""
        from dreamtext.models import hold_models, release_clip, release_stable_diffusion

        index = self.position[entry.workspace]
        later: list[set[str]] = [set(), set()]
        if first_pass:
            for (kind, model), last in self.last.items():
                if last > index:
                    later[kind].add(model)
        for workspace in self.revisit - {entry.workspace}:
            for kind, models in enumerate(self.needs.get(workspace, NO_MODELS)):
                later[kind] |= models
        hold_models(*later)
        stable_diffusion, clip = self.needs.get(entry.workspace, NO_MODELS)
        release_stable_diffusion(stable_diffusion)
        release_clip(clip)

    def after(self, entry: Entry, record: dict[str, Any]) -> None:
        """``entry`` ran (``record``): skipped for a lock, it runs again in the second pass."""
        if held_for(record):
            self.revisit.add(entry.workspace)
        else:
            self.revisit.discard(entry.workspace)


def check_machine(
    cfg: TrainConfig,
    resuming: Sequence[int] = (),
    all_resume: bool = False,
    built: set[str] | None = None,
) -> torch.device:
    """The device, precision, memory and hash-grid backend of a run of ``cfg``: a field is built
    and dropped, so a wrong ``--fp16`` or ``--encoding`` on a CPU, or a render or field too large
    for the memory (:func:`dreamtext.trainer.check_field_memory`), stops the batch before it
    writes anything instead of failing its lines. ``resuming``: the lines whose runs resume,
    which keep their field (``all_resume``: every line of ``cfg`` to train), named where the
    field is too large: "lower field.log2_hashmap_size" refused them at their turn. ``built``:
    the fields built so far by a batch's calls (device and field settings), which are not built
    again: its configs mostly differ elsewhere (seed, guidance), and a field of the thesis's
    size (16 levels, 2^19 entries) cost 42 ms of CPU to build (20 configs: 0.85 s). Returns
    the run's device."""
    from dreamtext.devices import resolve_device
    from dreamtext.factory import build_field
    from dreamtext.models import resolve_dtype
    from dreamtext.trainer import check_field_memory, check_render_memory

    device = resolve_device(cfg.device)
    resolve_dtype(cfg.guidance, device)
    # Before the field is built: a table too large was allocated here, then refused every line.
    check_render_memory(cfg, device)
    check_field_memory(cfg, device, all_resume, line_numbers(resuming) if resuming else None)
    key = f"{device} {cfg.field!r}"
    if built is None or key not in built:
        build_field(cfg.field, device)  # an encoding that cannot run here raises
        if built is not None:
            built.add(key)
    return device


def check_model(
    cfg: TrainConfig,
    resuming: Sequence[int] = (),
    all_resume: bool = False,
    built: set[str] | None = None,
) -> StableDiffusionModels | None:
    """:func:`check_machine` of the first line to train, and its Stable Diffusion model, loaded
    here (the runs reuse it), so that a wrong ``--model`` stops the batch before it writes
    anything instead of failing every prompt. The lines' other models are checked by their
    files (:func:`check_other_models`), not loaded before their turn."""
    from dreamtext.models import load_for

    device = check_machine(cfg, resuming, all_resume, built)
    if cfg.guidance.model.startswith("builtin:"):
        return None
    return load_for(cfg.guidance, device)


def check_other_models(pending: Sequence[tuple[Entry, TrainConfig]]) -> None:
    """The files of every other Stable Diffusion model the lines to train use than the first
    line's, which :func:`check_model` loads next (:func:`dreamtext.models.check_model_files`,
    no load): lines resume on their runs' own model, and new lines take the batch's, so a rerun
    without ``--model`` of runs of builtin:shapes trained those and then failed its new lines at
    their turn, unable to load the default model. Their weight files too, by their headers
    against their configs (:func:`dreamtext.models.check_model_weights`, no tensor read): one cut
    short or of other shapes failed that model's first line at its turn, hours in. The refusal
    names the first line of each model."""
    from dreamtext.models import check_model_files, check_model_weights

    first = pending[0][1].guidance.model
    seen = {first} if not first.startswith("builtin:") else set()
    for entry, cfg in pending:
        model = cfg.guidance.model
        if model in seen or model.startswith("builtin:"):
            continue
        seen.add(model)
        try:
            check_model_files(model)
            check_model_weights(model)
        except DreamtextError as error:
            raise DreamtextError(f"line {entry.line} ({entry.workspace}): {error}") from None


def check_prompt_lengths(
    groups: Sequence[Sequence[tuple[Entry, TrainConfig]]],
    prompts_file: Path,
    image: dict[str, Any] | None = None,
) -> None:
    """Every text line still to train fits its text encoder with each of its view labels, as
    does its negative prompt (:func:`dreamtext.prompts.check_lengths`): a long line failed only
    when its turn came, hours into a sweep, after the lines before it. Each group of lines of
    one config (:func:`settings_groups`) is checked with its own model's tokenizer, learned
    tokens, negative prompt and labels, read alone (:func:`dreamtext.models.read_text_side`, no
    weights) before :func:`check_model` loads the first line's model, which a negative prompt
    too long came after; a first line of builtin:shapes left the other lines' unchecked. Image
    lines' prompts are the sentences still to learn: each line still to be described has its
    sentence to learn counted at its least, with its describe options (``image``:
    :attr:`BatchOptions.image`, over its run's), as ``dreamtext image`` counts it
    (:func:`dreamtext.imageto3d.check_lengths_first`); a --noun or --quantifier too long was
    refused at the line's turn, after the loads and its sentence search."""
    from dreamtext.cameras import with_view
    from dreamtext.imageto3d import check_lengths_first, resolve_image_options
    from dreamtext.models import read_text_side
    from dreamtext.prompts import check_lengths, expand_tokens

    sides: dict[tuple[str, str | None], tuple[Any, dict[str, str]]] = {}
    for group in groups:
        entry, cfg = group[0]
        guidance = cfg.guidance
        if guidance.model.startswith("builtin:"):
            continue
        # Image runs' own learned file is read by their run, which checks the negative prompt
        # with the model's tokenizer alone (imageto3d.check_text_stage), as it is here.
        images_only = group is not groups[0] and all(e.kind != "text" for e, _ in group)
        side = (guidance.model, None if images_only else guidance.textual_inversion)
        named = f"line {entry.line} ({entry.workspace}): " if len(groups) > 1 else ""
        try:
            if side not in sides:
                sides[side] = read_text_side(replace(guidance, textual_inversion=side[1]))
            tokenizer, expansions = sides[side]
            negative = expand_tokens(guidance.negative, expansions)
            check_lengths(tokenizer, [], negative, False)
        except DreamtextError as error:
            raise DreamtextError(f"{named}{error}") from None
        labels = guidance.views.labels if guidance.view_dependent else ("",)
        for entry, line_cfg in group:
            if entry.kind == "image":
                try:
                    options = resolve_image_options(image or {}, entry.workspace)
                except DreamtextError:  # a run's unreadable record: that line fails on its own
                    continue
                try:
                    check_lengths_first(entry.workspace, line_cfg, options, overwrite=False)
                except DreamtextError as error:
                    raise DreamtextError(f"{prompts_file}: line {entry.line}: {error}") from None
                continue
            prompt = expand_tokens(entry.prompt, expansions)
            texts = [with_view(prompt, label) if label else prompt for label in labels]
            try:
                check_lengths(tokenizer, texts, "", guidance.view_dependent)
            except DreamtextError as error:
                raise DreamtextError(f"{prompts_file}: line {entry.line}: {error}") from None


def check_image_lines(entries: list[Entry], options: BatchOptions, load: bool = True) -> None:
    """The sentence search of every image line still to be described: its options (word lists,
    ``--max-words``, ...), its ``--clip`` folder and, with ``load``, its CLIP, loaded here once
    per model (the runs reuse the load), so that a bad ``--clip`` stops the batch before it
    trains the text lines ahead of the images instead of failing every image line after them.
    Without ``load``, what needs no model: the batch asks it before Stable Diffusion loads."""
    from dreamtext.describe import check_clip_folder, check_options, sentence_path
    from dreamtext.imageto3d import resolve_image_options
    from dreamtext.models import clip_encoder

    for entry in entries:
        if entry.kind != "image" or sentence_path(entry.workspace).is_file():
            continue
        try:
            describe = resolve_image_options(options.image, entry.workspace).describe
        except DreamtextError:  # a run's unreadable record: that line fails on its own
            continue
        check_options(describe)
        check_clip_folder(describe.clip)
        if load:
            with clip_encoder(describe.clip, "cpu", describe.batch_size):
                pass


def run_entry(
    entry: Entry,
    cfg: TrainConfig,
    options: BatchOptions,
    root: Path,
    shard: str | None,
    before: dict[str, Any] | None = None,
    others: BatchLog | None = None,
    log: Path | None = None,
    list_file: str | Path | None = None,
    refusal: str | None = None,
) -> dict[str, Any]:
    """Skip, or claim and run, one entry; return its ``batch.jsonl`` record, appended to ``log``
    (when given) while the entry's lock is still held, so that the worker that claims it next
    finds the record (:func:`failed_meanwhile`). ``list_file``: the prompts file the entry is a
    line of, which the line of a Ctrl-C or SIGTERM names with the line's number. ``refusal``:
    why its run's ``config.json`` cannot be resumed (:func:`own_run_config`), which fails it.

    A finished run of the entry is skipped, with a warning when it used other settings
    (:func:`changed_setting_lines`). With ``options.overwrite`` it trains from scratch instead,
    unless its ``status.json`` is no longer ``before`` (what it was when the batch started): then
    another worker of this batch has trained it again, and it is skipped or resumed as without.
    An entry that another worker sharing the list failed since this batch started is skipped too
    (:func:`failed_meanwhile`; ``others`` follows their ``batch.jsonl`` records): the failure is
    recorded once, and running the batch again retries it. So is one another process, not a
    worker of this batch, is running (a ``dreamtext text`` of its workspace: ``WorkspaceInUse``).
    """
    from dreamtext.trainer import reset_memory_peak

    reset_memory_peak()  # an out-of-memory line's table clause weighs this line's peak alone
    started, start = now_iso(), time.perf_counter()
    log_before = _log_state(entry.workspace)
    result: dict[str, Any] = {"status": "skipped", "error": None}
    lock = WorkspaceLock(entry.workspace, options.lock_timeout)
    # stopped: a file-system error stopped the batch at this line (said once); ends_batch: a
    # Ctrl-C, SIGTERM or an unusable GPU did. Either is the record's stopped_batch.
    claimed = busy = stopped = ends_batch = fresh = False
    continued = None  # the step of a finished run this attempt trains on to cfg.iters
    try:
        # One look at the line, each file read once (the claim and the run read afresh), as
        # batch --status looks at it: look_at_line decides for both.
        with read_once():
            if run_owner(entry.workspace) in (None, entry.key):  # not another prompt's run
                finish_cut_export(entry.workspace)  # a finished run has its mesh back
            fresh = options.overwrite and read_status(entry.workspace) == before
            look = look_at_line(entry, cfg, lock, fresh, refusal)
        if look.refusal is not None:
            raise DreamtextError(look.refusal)
        if look.finished:
            line = finished_skip_line(entry, cfg)
            if line is not None:
                _say(line)
        elif not (claimed := lock.acquire()):
            result["error"] = lock.describe_holder()
            _say(held_line(entry, lock))
        else:
            # another worker may have finished (or, with --overwrite, retrained) it meanwhile
            fresh = options.overwrite and read_status(entry.workspace) == before
            failure = failed_meanwhile(entry, root, before, others)
            if failure is not None:
                result["error"] = f"failed in another worker of this batch: {failure}"
                _say(
                    f"batch: line {entry.line}: another worker of this batch failed it "
                    f"({shorten(failure, 80)}); skipped, run the batch again to retry it"
                )
            elif fresh or not finished_here(entry, cfg):
                if not fresh:
                    continued = continued_step(entry.workspace, cfg.iters)
                    if continued is not None:
                        _say(
                            f"batch: line {entry.line}: {entry.workspace} finished at step "
                            f"{continued}; continuing to --iters {cfg.iters}"
                        )
                    warn_resuming_with_other_settings(entry, cfg)
                    if run_finished(entry.workspace, cfg.iters) and cfg.export:
                        what = (
                            "with the mesh of an earlier step; exporting it again"
                            if has_mesh(entry.workspace)
                            else "without a mesh; exporting it"
                        )
                        _say(f"batch: line {entry.line}: {entry.workspace} finished {what}")
                # An error a library made of a stop's KeyboardInterrupt (a model's import cut
                # short) is the stop, as the CLI says: recorded "failed", with its traceback.
                with guard_run(entry.workspace, lock.check), stops_as(KeyboardInterrupt):
                    run_one_retrying_stale(entry, cfg, options, overwrite=fresh)
                result["status"] = "finished"
    except RunTakenOver as lost:
        result = {"status": "interrupted", "error": str(lost)}
        _say(f"batch: line {entry.line} stopped: {lost}")
    except (TrainingInterrupted, KeyboardInterrupt) as stop:
        ends_batch = True
        result = {"status": "interrupted", "error": None}
        begun = not fresh or read_status(entry.workspace) != before
        again = interruption_line(entry, stop, fresh, begun) + requeue_note(os.environ)
        # Which line of the list: "interrupted; run the batch again ..." named none, and a
        # checkpoint's folder is its prompt's, shortened.
        _say(f"batch: {list_line(entry, list_file)}: {again}")
    except WorkspaceInUse as in_use:  # a `dreamtext text` (not a worker of this batch) runs it
        busy = True
        result = {"status": "skipped", "error": f"in use by {in_use.holder}"}
        _say(in_use_line(entry, in_use, lock))
    except DreamtextError as error:
        result = {"status": "failed", "error": error_line(error)}
        _say(f"batch: line {entry.line} failed: {error}")
    except GPU_ERRORS as error:  # the process's CUDA context is unusable from here on
        ends_batch = True
        result = {"status": "failed", "error": error_line(error)}
        traceback.print_exc()
        _say(
            f"batch: line {entry.line} failed: {error_line(error)}; this process cannot use the "
            "GPU any more: the batch stops here (run it again to go on)"
        )
    except Exception as error:  # a bug: record it, keep the traceback
        result = {"status": "failed", "error": error_line(error)}
        if (memory := memory_that_ran_out(error)) is not None:
            # Out of memory outside the training steps (loading the prior, building the field),
            # whose own line names the fixes: this one was a bare "MemoryError". The render's
            # sizes, which the steps' line names, are not used there.
            from dreamtext.trainer import loading_memory_advice

            again = f"run {line_again(entry, fresh)} with {line_flags(entry)}"
            advice = loading_memory_advice(cfg, memory, again, line_start_again(entry))
            result["error"] = f"out of {memory} ({error_line(error)}); {advice}"
        stop = batch_stop(error, entry, root)
        if stop is not None:
            stopped = True
            _say(batch_stop_line(entry, stop, root))
        elif isinstance(error, OSError) and error.errno in BATCH_STOPPING_ERRNOS:
            _say(linked_failure_line(entry, error, root))  # another file system, through a link
        else:
            if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS:
                # This line's own (a file-size limit, another user's file): its file and fix.
                result["error"] = (
                    f"{what_failed(error)}; {stop_fix(error, root)}, then run the batch again "
                    "to retry this line"
                )
            elif not the_machines_state(error):
                traceback.print_exc()
            _say(f"batch: line {entry.line} failed: {result['error']}")
    except BaseException:  # SystemExit and the like: no record, the lock given back
        if claimed:
            lock.release()
        raise
    # A line skipped for another process's run: its status.json is that run's, not this line's.
    ours = claimed and lock.lost is None and not busy
    record = {
        **_record(entry, root, shard, result, ours, started, start, log_before),
        "continued_from": continued,
        "stopped_batch": stopped or ends_batch,
        # Whose stale lock this attempt took over, and why: a killed worker's, a dead node's.
        "took_over": lock.took_over,
    }
    # Held back until the record is written and the lock given back: a Ctrl-C or SIGTERM here,
    # after the line's run returned, left it without a record, and the batch without its summary.
    # It reaches the batch's loop as stop_requested(), which starts no next line.
    with contextlib.suppress(KeyboardInterrupt), signals_held():
        try:
            if log is not None:
                record = log_record(log, record, entry, root, said=stopped)  # before the lock goes
        finally:
            if claimed:
                lock.release()
                if runs_on_cuda(cfg):  # on the CPU the collection found nothing and took 0.4 s
                    with contextlib.suppress(Exception):  # a broken CUDA context raises here too
                        free_memory()
    return record


def check_batch_log(log: Path) -> None:
    """``ROOT/batch.jsonl``, to which each line's record is appended, is a file this process
    can append to, or is not there yet: a folder there (or a file it may not write) failed the
    first append, after the first line had trained, with a traceback and no summary."""
    if not os.path.lexists(log):
        return
    if not log.is_file():
        raise DreamtextError(
            f"{log} is not a file; a batch appends a record of each line to it: move it away "
            "and run the batch again"
        )
    if not os.access(log, os.W_OK):
        raise DreamtextError(
            f"cannot write {log} (a batch appends a record of each line to it): make it "
            "writable, or pass another --workspace"
        )


def log_record(
    log: Path, record: dict[str, Any], entry: Entry, root: Path, said: bool = False
) -> dict[str, Any]:
    """Append ``record`` to ``log`` (batch.jsonl) and return it. A write that fails for a reason
    that stops the batch (:func:`batch_stop`: a full disk, a file system gone read-only) returns
    it with that error and ``stopped_batch``, and says so in one line unless ``said`` (the line's
    own end already named that stop, and its error stays); any other ``OSError`` raises."""
    try:
        append_record(log, record)
    except OSError as error:
        stop = batch_stop(error, entry, root, record_write=True)
        if stop is None:
            raise
        if not said:
            finished = record["status"] == "finished"
            _say(batch_stop_line(entry, stop, root, finished=finished))
            record = {**record, "error": error_line(error), "stopped_batch": True}
    return record


def finished_skip_line(entry: Entry, cfg: TrainConfig) -> str | None:
    """The one line with which a batch skips the entry's finished run where it has something to
    say (``None`` where not): that the run has no mesh and no checkpoint left to export it from
    where ``cfg`` asks for a mesh, and which settings of ``cfg`` it finished with other values of
    (:func:`changed_setting_lines`); and how to apply them: `dreamtext export` for export settings
    alone (a run with a checkpoint to export from), else the line's own command
    (:func:`retrain_advice`). A run with both was told the same command in two lines."""
    changed = changed_setting_lines(entry, cfg)
    no_mesh = cfg.export and not has_mesh(entry.workspace)
    if not (changed or no_mesh):
        return None
    settings = f"with other settings ({', '.join(changed)})"
    if no_mesh:
        what = "without a mesh and has no checkpoint left to export it from"
        what += f", and {settings}" if changed else ""
    else:
        what = settings
    if not no_mesh and all(c.startswith("export_options.") for c in changed):
        # Export settings need no training: `dreamtext export` applies them.
        advice = f"{export_command(entry.workspace, cfg, changed)} exports it again with these"
    else:
        advice = retrain_advice(entry, "again with these" if changed else "again", changed)
    return f"batch: line {entry.line}: {entry.workspace} finished {what}; skipped, {advice}"


def in_use_line(entry: Entry, in_use: WorkspaceInUse, lock: WorkspaceLock) -> str:
    """The line with which a worker skips ``entry``, whose run another live process holds
    (:class:`WorkspaceInUse`). Where this worker has just taken over the line's lock
    (``lock.took_over``), that process is most likely the worker it took it from, still alive:
    a node that Slurm gave up for lost (its task requeued) while it went on writing ROOT, or a
    worker that stopped refreshing its lock but not running; else a ``dreamtext text`` of the
    workspace. Another user's lock that this user may not read (the run's or the line's claim,
    :func:`dreamtext.processes.unreadable_lock`) may be a killed run's, never to end: its line
    says what to check and whom to ask instead (``in_use.fix``)."""
    taken = lock.took_over
    if in_use.fix is not None:  # another user's lock, unreadable: it may never end by itself
        return f"batch: line {entry.line}: {in_use.situation}; skipped: {in_use.fix}"
    if taken is None:
        return (
            f"batch: line {entry.line}: {in_use.situation}, not a worker of this batch; "
            "skipped, run the batch again once it ends"
        )
    task = f", SLURM task {taken['slurm']}" if taken.get("slurm") else ""
    return (
        f"batch: line {entry.line}: {in_use.situation}: most likely the worker whose lock this "
        f"one took over ({taken.get('host')} pid {taken.get('pid')}{task}: {taken['reason']}), "
        "still alive (a node cut off from SLURM but not from the results folder, or a worker "
        "that stopped refreshing its lock); skipped, run the batch again once it ends"
    )


def held_line(entry: Entry, lock: WorkspaceLock) -> str:
    """The line with which a worker skips ``entry``, whose workspace ``lock`` found claimed:
    that the holder refreshed it lately (another worker runs it), or that it has not for long
    (:meth:`WorkspaceLock.looks_abandoned`), when this worker comes back to it after its other
    lines (:func:`wait_for_abandoned_lock`)."""
    holder = lock.describe_holder()
    if not lock.looks_abandoned():
        return (
            f"batch: line {entry.line}: {holder}, refreshed {lock.holder_age:.0f} s ago: "
            "another worker runs it; skipped"
        )
    return (
        f"batch: line {entry.line}: {holder}, not refreshed for {lock.holder_age:.0f} s: its "
        "worker may be gone (a dead node, a killed task); this worker comes back to it after "
        f"its other lines and takes it over once not refreshed for --lock-timeout "
        f"{lock.timeout:g} s"
    )


def wait_for_abandoned_lock(entry: Entry, timeout: float) -> bool:
    """Wait for the lock on ``entry``'s workspace, where it looks abandoned (not refreshed for
    :func:`abandoned_after` seconds), to be released or to pass ``timeout`` (taken over then);
    ``True`` when the line should be tried again. ``True`` at once where the lock is stale by
    a claim's own measure (:meth:`WorkspaceLock.stale_reason`: its holder's process is gone
    from this machine, refreshed lately or not). ``False`` at once where there is no lock any
    more (its holder, alive, has ended the line) or its holder refreshed it (alive after all),
    and as soon as another worker claims it."""
    path = lock_path(entry.workspace)
    first = WorkspaceLock.read(path)
    if first is None:
        return False
    claim = WorkspaceLock(entry.workspace, timeout)  # what this worker's claim takes over
    token, said = first[0].get("token"), False
    while True:
        held = WorkspaceLock.read(path)
        if held is None:
            return True
        info, age = held
        # A worker of this machine killed after this one skipped its line (the out-of-memory
        # killer, kill -9) refreshed its lock seconds before: it was left, the line not trained,
        # where this worker's claim takes it over at once.
        if claim.stale_reason(info, age) is not None:
            return True
        if info.get("token") != token or age <= abandoned_after(info, timeout):
            if said:  # the log's last word on the line was that this worker waits to take it
                how = "was claimed again" if info.get("token") != token else "was refreshed"
                _say(
                    f"batch: line {entry.line}: {path.name} {how} while this worker waited: "
                    "its holder is alive; the line is left to it"
                )
            return False
        if age > timeout:
            return True
        if not said:
            _say(
                f"batch: line {entry.line}: waiting {timeout - age:.0f} s for {path.name}, not "
                f"refreshed for {age:.0f} s, to pass --lock-timeout {timeout:g} s"
            )
            said = True
        # Looked at again every refresh of its holder's: a heartbeat that comes back is seen.
        every = abandoned_after(info, timeout) / ABANDONED_AFTER_REFRESHES
        time.sleep(min(timeout - age, every) + 0.05)


def runs_on_cuda(cfg: TrainConfig) -> bool:
    """Whether the run of ``cfg`` used a CUDA device, whose cached blocks the next line needs
    back (:func:`~dreamtext.devices.free_memory`). A run on the CPU leaves no reference cycles
    holding tensors: its memory went back when the run returned."""
    return cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())


def _record(
    entry: Entry,
    root: Path,
    shard: str | None,
    result: dict[str, Any],
    ran: bool,
    started: str,
    start: float,
    log_before: str | None = None,
) -> dict[str, Any]:
    """:func:`run_entry`'s ``batch.jsonl`` record; ``ran``: this worker held the entry's run
    to its end (its status.json is this attempt's); ``log_before``: the run's ``log.jsonl``
    when the attempt started (:func:`_log_state`), which an attempt that trained changed."""
    status = read_status(entry.workspace) if ran else None
    log_now = _log_state(entry.workspace)
    task, restarts = slurm_task()
    # The run's step where this attempt's own process wrote its status.json (since the attempt
    # started), else None: an attempt stopped before training (a SIGTERM while the model
    # loaded) left the folder's older run, which --overwrite had not yet replaced.
    own = same_process(status, this_process()) and str(status.get("started", "")) >= started
    return {
        "line": entry.line,
        "input": entry.input,
        "kind": entry.kind,
        "prompt": _prompt_of(entry),
        "workspace": _relative(entry.workspace, root),
        **result,
        "seconds": round(time.perf_counter() - start, 3),
        # An interrupted attempt that trained (a preempted SLURM task) has its speed too; one
        # that trained nothing (an export of a run trained with --no-export) has none.
        "its": _last_its(log_now)
        if (result["status"] == "finished" or (result["status"] == "interrupted" and own))
        and log_now != log_before
        else None,
        # Only this attempt's own: an attempt that failed before it wrote its status.json
        # (a damaged checkpoint) was recorded as "failed in export", the old run's phase.
        "gpu_mem_mib": status.get("gpu_mem_mib") if own else None,
        "phase": status.get("phase") if own else None,
        "step": status.get("step") if own else None,
        "started": started,
        "finished": now_iso(),
        "host": HOST,
        "shard": shard,
        # A requeued task tells its own earlier records from an older batch's by these
        # (requeued_task_runs).
        "slurm": task,
        "slurm_restart": restarts if task is not None else None,
    }


class BatchLog:
    """The ``batch.jsonl`` records appended after this worker started (by the workers sharing its
    list, and its own; with ``from_start``, all of them: ``batch --status``): which workspaces'
    newest such attempt failed. Each look reads on from
    where the last one stopped, so a list of any length costs one pass over the file."""

    def __init__(self, path: Path, from_start: bool = False) -> None:
        self.path = path
        try:
            self.offset = 0 if from_start else path.stat().st_size
        except OSError:
            self.offset = 0
        self.failed: dict[str, str] = {}  # workspace as recorded → its error
        self._partial = b""

    def failed_since_start(self, workspace: str) -> str | None:
        """The error of ``workspace``'s newest attempt since this worker started, if it failed."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return self.failed.get(workspace)
        self.offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            name = record.get("workspace") if isinstance(record, dict) else None
            if not isinstance(name, str) or record.get("status") == "skipped":
                continue
            if record.get("status") == "failed":
                self.failed[name] = str(record.get("error") or "failed")
            else:
                self.failed.pop(name, None)
        return self.failed.get(workspace)


def failed_meanwhile(
    entry: Entry, root: Path, before: dict[str, Any] | None, others: BatchLog | None
) -> str | None:
    """The error with which another worker sharing the list failed this entry since this worker
    started: its ``status.json`` says ``failed`` and is no longer ``before``, or (a failure before
    the run wrote one: a prompt the model refuses) its newest record in ``others`` failed.
    ``None`` when it did not; a run that failed before this batch started is tried again."""
    now = read_status(entry.workspace)
    if now is not None and now != before and now.get("state") == "failed":
        return str(now.get("error") or "failed")
    return others.failed_since_start(_relative(entry.workspace, root)) if others else None


def finish_cut_export(workspace: Path) -> None:
    """Finish the swap of an export killed after it had written all its files (its new mesh/
    waits in a hidden folder, the old one may be moved aside): the run then has its mesh again,
    and a finished run is skipped instead of exported a second time."""
    from dreamtext.export import REPLACED_OUTPUTS, finish_replacements

    if workspace.is_dir():  # as export and --overwrite call it
        finish_replacements(workspace, REPLACED_OUTPUTS)


def run_one(entry: Entry, cfg: TrainConfig, options: BatchOptions, overwrite: bool = False) -> None:
    """Train one entry: text→3D, resumed when it has a checkpoint (from scratch with
    ``overwrite``); or the image→3D chain."""
    if entry.kind == "image":
        from dreamtext.imageto3d import resolve_image_options, run_image

        image_options = resolve_image_options(options.image, entry.workspace)
        run_image(
            entry.prompt,
            image_options,
            cfg,
            resume_with=BATCH_RESUME,
            start_again=line_start_again(entry),
            resume_changed=line_resume(entry),
        )
        return
    from dreamtext.trainer import train

    again, changed = line_start_again(entry), line_resume(entry)
    if overwrite:
        train(
            cfg,
            resume=False,
            overwrite=True,
            resume_with=BATCH_RESUME,
            start_again=again,
            resume_changed=changed,
        )
    else:
        resume = can_resume(Path(cfg.workspace))
        train(
            cfg, resume=resume, resume_with=BATCH_RESUME, start_again=again, resume_changed=changed
        )


def run_one_retrying_stale(
    entry: Entry, cfg: TrainConfig, options: BatchOptions, overwrite: bool = False
) -> None:
    """:func:`run_one`, tried once more where it meets a stale NFS file handle (ESTALE): a file
    server that failed over or restarted, or a file replaced from another machine, leaves handles
    the server no longer knows, and the second try looks every file up afresh, resuming from the
    last checkpoint (from the start with ``overwrite``; an image line reuses the stages that
    finished). At once: while a hard-mounted server is away, its calls wait rather than fail. A
    second stale handle fails the line (or stops the batch, where ROOT itself is stale:
    :func:`batch_stop`)."""
    try:
        run_one(entry, cfg, options, overwrite=overwrite)
    except OSError as error:
        if error.errno != errno.ESTALE:
            raise
        _say(
            f"batch: line {entry.line}: {what_failed(error)}; trying the line once more (a file "
            "server that failed over or restarted gives its files new handles)"
        )
        run_one(entry, cfg, options, overwrite=overwrite)


def append_record(path: Path, record: dict[str, Any]) -> None:
    """One line appended in one write, so that workers sharing the file do not interleave.
    Unlike a run's own log (:func:`~dreamtext.checkpoint.append_log_line`), a line that does
    not fit is not cut back off: another worker may have appended after it. Instead the next
    record starts on a line of its own where the file does not end in a newline (a line torn by
    a full disk, or a writer killed mid-write), so that readers lose the torn line only, not the
    next one glued onto it. The look at the file's end and the write are one step under an
    ``flock`` of the file, where the file system has locks, so that two workers do not both add
    that newline (a blank line, which readers skip as well)."""
    data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    except PermissionError:  # a file this worker may append to but not read: no look at its end
        fd, readable = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666), False
    else:
        readable = True
    try:
        if fcntl is not None:
            with contextlib.suppress(OSError):  # no locks here (Lustre's noflock, NFS without)
                fcntl.flock(fd, fcntl.LOCK_EX)
        end = os.fstat(fd).st_size if readable else 0
        if end and os.pread(fd, 1, end - 1) != b"\n":
            data = b"\n" + data
        write_whole(lambda rest: os.write(fd, rest), data, path)
    finally:
        os.close(fd)  # drops the lock


def held_for(record: dict[str, Any]) -> bool:
    """The line was skipped because another worker's lock held its workspace
    (:meth:`WorkspaceLock.describe_holder`)."""
    return record["status"] == "skipped" and str(record["error"] or "").startswith("claimed by")


def gpu_unusable(record: dict[str, Any]) -> bool:
    """The line failed with CUDA's own error (an illegal address, a device-side assert, a lost
    GPU): every later line of this process would fail too."""
    error = record["error"] or ""
    return record["status"] == "failed" and any(
        error.startswith(f"{kind.__name__}:") for kind in GPU_ERRORS
    )


def stopped_by_user(record: dict[str, Any]) -> bool:
    """Ctrl-C or SIGTERM interrupted this line (and the batch). A line whose lock another worker
    took over is ``interrupted`` too, with the reason as its error, and the batch goes on."""
    return record["status"] == "interrupted" and record["error"] is None


def exit_code(records: list[dict[str, Any]]) -> int:
    """130 when the batch was interrupted (Ctrl-C, SIGTERM), 2 when it stopped for a full disk
    or quota, a read-only file system or an I/O error (:func:`stopped_for_file_system`), 1 when a
    prompt failed, else 0."""
    if any(stopped_by_user(r) for r in records):
        return 130
    if any(stopped_for_file_system(r) for r in records):
        return 2
    return 1 if any(r["status"] == "failed" for r in records) else 0


def summary_table(records: list[dict[str, Any]]) -> str:
    """The records as a plain-text table (line, status, time, it/s, GPU MiB, workspace, error)."""
    header = ("line", "status", "seconds", "it/s", "GPU MiB", "workspace", "error")
    rows = [
        (
            str(r["line"]),
            _status_cell(r),
            f"{r['seconds']:.1f}",
            f"{r['its']:.2f}" if r["its"] is not None else "-",
            f"{r['gpu_mem_mib']:.0f}" if r["gpu_mem_mib"] is not None else "-",
            r["workspace"],
            shorten(r["error"] or "", 80),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    statuses = ("finished", "skipped", "failed", "interrupted")
    counts = {s: sum(r["status"] == s for r in records) for s in statuses}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


def _status_cell(record: dict[str, Any]) -> str:
    """``failed in descriptor``: a run that ended before its end says in which stage (the
    ``phase`` of its status.json: sample, describe, descriptor, train, export);
    ``finished (from step 60)``: a run that had finished at a lower ``--iters`` and was trained
    on (``continued_from``)."""
    phase = record.get("phase")
    if record["status"] in ("failed", "interrupted") and phase:
        return f"{record['status']} in {phase}"
    if record["status"] == "finished" and record.get("continued_from") is not None:
        return f"finished (from step {record['continued_from']})"
    return record["status"]


def _say(message: str) -> None:
    """A progress message on stderr, printed above the progress bars."""
    say(message)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _prompt_of(entry: Entry) -> str:
    """The text prompt, or for an image line the sentence DreamText learned (once it has)."""
    if entry.kind == "image":
        from dreamtext.describe import sentence_path

        with contextlib.suppress(OSError, *UNREADABLE_JSON):
            record = json.loads(sentence_path(entry.workspace).read_text(encoding="utf-8"))
            if isinstance(record, dict):  # a damaged file can hold any JSON value
                sentence = record.get("trained_sentence") or record.get("sentence")
                return sentence if isinstance(sentence, str) and sentence else entry.prompt
    return entry.prompt


# How much of a log's end is read at a time, looking for its last line (a record is a few
# hundred bytes).
LOG_TAIL_BLOCK_BYTES = 4096


def _log_state(workspace: Path) -> str | None:
    """The last line of the run's ``log.jsonl``, ``None`` where there is none: an attempt that
    trained a step changed it (a resume rewrites the file up to its checkpoint, so its size and
    time are no sign). Read from the file's end back to the newline before that line: read
    whole, twice for every line of a batch, a rerun of 1,000 finished runs of 10,000 records
    each read 7 GB of logs before their records were written."""
    with (
        contextlib.suppress(OSError, UnicodeDecodeError, IndexError),
        open(workspace / "log.jsonl", "rb") as log,
    ):
        end = log.seek(0, os.SEEK_END)
        lines = lines_from_end(log, end, LOG_TAIL_BLOCK_BYTES)
        _, line = next(lines)
        if not line and end > 0:  # the file's last byte ends its last line
            line = next(lines)[1] + b"\n"
        return line.decode("utf-8").splitlines()[-1]
    return None


def _last_its(last_line: str | None) -> float | None:
    """it/s of the run's last ``log.jsonl`` record (its line, :func:`_log_state`)."""
    if last_line is None:
        return None
    with contextlib.suppress(*UNREADABLE_JSON):
        record = json.loads(last_line)
        its = record.get("its") if isinstance(record, dict) else None
        # A number, not a bool (JSON's true is an int to isinstance) or a damaged line's text.
        return its if isinstance(its, (int, float)) and not isinstance(its, bool) else None
    return None


__all__ = [
    "BatchOptions",
    "BatchRun",
    "Entry",
    "WorkspaceLock",
    "exit_code",
    "parse_shard",
    "read_prompts",
    "resolve_shard",
    "run_batch",
    "run_owner",
    "select_share",
    "shard_from_environment",
    "summary_table",
    "workspace_name",
]
