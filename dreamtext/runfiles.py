"""What a run's folder holds, read from its files without torch: its ``config.json``, its
``status.json``, its sentence record (``descriptor/sentence.json``) and its copy of its image, and
the checks built on them that refuse a folder holding another run (:func:`check_describe_workspace`,
:func:`check_image_workspace`) or one another process runs (:func:`check_not_running`), and an
image gone since its run copied it (:func:`check_image`).

The commands call these checks as their first steps, after the torch import; the CLI calls the same
functions before it (:mod:`dreamtext.cli`'s early checks), so that ``describe`` or ``image`` into a
folder of another run is its one line in a second, not after seconds of imports, and the lines are
the same either way. :mod:`dreamtext.checkpoint`, :mod:`dreamtext.runstatus`,
:mod:`dreamtext.config`, :mod:`dreamtext.describe` and :mod:`dreamtext.imageto3d` take them from
here.
"""

from __future__ import annotations

import contextlib
import contextvars
import glob
import hashlib
import json
import os
import shlex
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from dreamtext.errors import (
    UNREADABLE_JSON,
    DreamtextError,
    WorkspaceInUse,
    check_a_file,
    shell_word,
    what_stands,
)
from dreamtext.inputs import (
    CHECKPOINT_DIR,
    DEFAULT_WORKSPACE_ROOT,
    LAST_CHECKPOINT,
    LAST_STEP_RECORD,
    RUN_LEARNED_EMBEDS,
    RUN_STATUS,
    STAGE_SECTIONS,
    check_image_reachable,
    earlier_slugs,
    link_loops,
    owner_value,
    same_prompt,
    slugify,
    unreachable_link,
)
from dreamtext.processes import (
    LOCK_NAME,
    check_own_folder,
    lock_held,
    process_name,
    read_status_json,
    record_alive,
)


def file_mode(ordinary: int = 0o666) -> int:
    """The mode an ordinary new file gets here (``0o666`` less the umask, usually ``0o644``):
    ``mkstemp`` makes private ``0o600`` files, but a run's files are for the people it is shared
    with, on a cluster's file system too. ``ordinary=0o777``: a new folder's (``mkdir``'s, usually
    ``0o755``, where ``mkdtemp`` makes ``0o700``)."""
    umask = os.umask(0)
    os.umask(umask)
    return ordinary & ~umask


def check_writable(folder: Path, fix: str) -> None:
    """Raise a :class:`DreamtextError` unless ``folder`` is, or can be made, a folder this process
    can write in; ``fix`` says what to do instead. Checked before any work, so that a read-only
    or mistyped location costs a line, not a traceback after the work."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and not existing.is_symlink() and existing.parent != existing:
        existing = existing.parent
    if existing.is_symlink() and not existing.exists():  # no folder can be made in its place
        mend = "point it at a folder" if link_loops(existing) else "make that folder"
        raise DreamtextError(
            f"{folder} cannot be a folder: {existing} is {unreachable_link(existing)}; {mend}, "
            f"or {fix}"
        )
    if existing.exists() and not existing.is_dir():
        raise DreamtextError(
            f"{folder} cannot be a folder: {existing} is a file; move that file away, or {fix}"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        # access() fails alike for a mode bit and a file system mounted read-only (EROFS): name
        # the one it is, since chmod cannot help the second.
        try:
            read_only = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        why = "a read-only file system" if read_only else "permission denied"
        raise DreamtextError(f"cannot write in {existing} ({why}); {fix}")
    # For root, access() answers from the mode bits, which root bypasses: /proc and /sys pass it
    # and then refuse the folder (ENOENT, EPERM), as may a server that maps root to nobody. An
    # empty folder made and removed at once asks the file system itself, leaving nothing behind
    # (other users' access() is the file system's answer: their folders are not touched).
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".dreamtext-probe-", dir=existing))
    except OSError as error:
        why = error.strerror or type(error).__name__
        if existing == folder:
            raise DreamtextError(
                f"cannot write in {folder}: it takes no new files ({why}); {fix}"
            ) from None
        raise DreamtextError(
            f"cannot make {folder}: {existing} takes no new folders ({why}); {fix}"
        ) from None


# What each run's files said within a read_once() block, by (what, workspace); None outside.
# A ContextVar: a thread (a lock's heartbeat) starts outside any block and reads afresh.
_READ_ONCE: contextvars.ContextVar[dict[tuple[str, str], Any] | None] = contextvars.ContextVar(
    "dreamtext_read_once", default=None
)
_T = TypeVar("_T")


@contextlib.contextmanager
def read_once() -> Iterator[None]:
    """Within the block, what a run's files say (whose run it is: :func:`run_owner`; its
    ``status.json``: :func:`read_status`; its checkpoint's recorded step: :func:`recorded_step`)
    is read once per workspace: a pass over a list that asks each run several questions
    (whose is it, finished?, its settings, its lock's state: ``batch --status``, a batch's
    start) read each run's ``config.json`` about five times. Only around a pass that writes none
    of them: the block ends before a batch trains its first line, and any read after it (a
    worker's own writes, another worker's meanwhile) is afresh."""
    token = _READ_ONCE.set({})
    try:
        yield
    finally:
        _READ_ONCE.reset(token)


def _once(what: str, workspace: str | Path, read: Callable[[], _T]) -> _T:
    """``read()``; within :func:`read_once`, its first answer for ``what`` of ``workspace``."""
    cache = _READ_ONCE.get()
    if cache is None:
        return read()
    key = (what, os.fspath(workspace))
    if key not in cache:
        cache[key] = read()
    return cache[key]


# The states a status.json can record.
STATES = ("running", "finished", "failed", "interrupted")


def read_status(workspace: str | Path) -> dict[str, Any] | None:
    """The workspace's status, or ``None`` when there is none (or it is unreadable); read once
    within :func:`read_once` (each caller gets its own copy of the mapping)."""
    status = _once("status", workspace, lambda: _read_status(workspace))
    return None if status is None else dict(status)


def _read_status(workspace: str | Path) -> dict[str, Any] | None:
    try:
        data = read_status_json(Path(workspace) / RUN_STATUS)
    except (OSError, *UNREADABLE_JSON):
        return None
    return data if isinstance(data, dict) and data.get("state") in STATES else None


def running_elsewhere(status: dict[str, Any] | None, workspace: str | Path) -> int | None:
    """The process id of another process of this machine that ``status`` (``workspace``'s)
    says is running the run and that is alive, else ``None`` (a run ended, or recorded on
    another machine, or whose process is gone: killed without warning; or the folder is a copy
    of a running run, whose live process holds the original's lock, not this one's:
    :func:`~dreamtext.processes.lock_held`)."""
    if (status or {}).get("state") != "running" or status.get("pid") == os.getpid():
        return None
    if not record_alive(status) or lock_held(workspace) is False:
        return None
    return status["pid"]


def check_not_running(workspace: str | Path) -> None:
    """Refuse a workspace that another live process of this machine is running a run in (the
    same command typed in a second terminal): both would write its checkpoints and files."""
    status = read_status(workspace)
    pid = running_elsewhere(status, workspace)
    if pid is not None:
        raise WorkspaceInUse(
            workspace,
            f"{process_name(pid)} on this machine",
            f"its run ({status.get('phase')} phase, step {status.get('step')})",
        )


# Keys of config.json that a rewrite of the file keeps unless it gives them anew: besides the
# stage sections, records of what ran (not settings): the hash-grid backend, ``ran_on``
# (device, dtypes, host, model commit and versions of the process that trained it last) and
# ``resumes`` (each resume's step and the settings it changed:
# :func:`dreamtext.config.changed_settings`).
KEPT_KEYS = ("encoding_backend", "ran_on", "resumes", *STAGE_SECTIONS)


def read_config_json(path: Path, fix: str) -> dict[str, Any] | None:
    """The mapping a run's ``config.json`` at ``path`` holds, ``None`` when there is none; one
    that cannot be read, or is no mapping, is a :class:`DreamtextError` ending in ``fix``, as
    is a folder of that name (a resume said "no config.json")."""
    if not path.is_file():
        if os.path.lexists(path):
            raise DreamtextError(f"{path} is {what_stands(path)}, not a run config; {fix}")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, *UNREADABLE_JSON):
        raise DreamtextError(f"{path} is unreadable; {fix}") from None
    if not isinstance(data, dict):
        raise DreamtextError(f"{path} is not a run config; {fix}")
    return data


def recorded_settings(workspace: str | Path) -> dict[str, Any]:
    """The mapping a run's ``config.json`` holds, ``{}`` where it has none, cannot be read or
    holds no mapping: for what the record only adds to (a name, a hint), never for a resume's
    base, which :func:`read_config_json` refuses where it cannot be read."""
    try:
        data = json.loads((Path(workspace) / "config.json").read_text(encoding="utf-8"))
    except (OSError, *UNREADABLE_JSON):
        return {}
    return data if isinstance(data, dict) else {}


def own_learned_embeds(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``data``, a run's config.json read from the run's ``folder``, with the run's own learned
    tokens (``guidance.textual_inversion``, a ``…/descriptor/learned_embeds.safetensors``) named
    by the file in ``folder``. The record names it by the path it had when the run was made, so
    a run folder moved or copied since (another disk, another machine) resumed the text stage
    with the file of the folder it was copied from, or failed where that is gone."""
    guidance = data.get("guidance")
    recorded = guidance.get("textual_inversion") if isinstance(guidance, dict) else None
    own = folder.joinpath(*RUN_LEARNED_EMBEDS)
    its_own = isinstance(recorded, str) and Path(recorded).parts[-2:] == RUN_LEARNED_EMBEDS
    if its_own and own.is_file():
        guidance["textual_inversion"] = os.path.abspath(own)
    return data


def read_run_config(workspace: str | Path, fix: str) -> dict[str, Any] | None:
    """The run config a workspace recorded (its ``config.json``), as a resume base: ``None``
    when there is none, a :class:`DreamtextError` ending in ``fix`` when it cannot be read.
    The records of what ran (``encoding_backend``, ``ran_on``: not settings) and the
    :data:`STAGE_SECTIONS` (:func:`read_stage_sections`) are left out; the run's own learned
    tokens are the file in ``workspace`` (:func:`own_learned_embeds`)."""
    data = read_config_json(Path(workspace) / "config.json", fix)
    if data is None:
        return None
    for key in KEPT_KEYS:
        data.pop(key, None)
    return own_learned_embeds(data, Path(workspace))


def read_stage_sections(workspace: str | Path) -> dict[str, dict[str, Any]]:
    """The :data:`STAGE_SECTIONS` a workspace's ``config.json`` holds (``{}`` for a text→3D run,
    a run from before they were recorded, or no config.json)."""
    data = read_config_json(Path(workspace) / "config.json", "delete it or pass --workspace")
    return {k: data[k] for k in STAGE_SECTIONS if isinstance((data or {}).get(k), dict)}


def sentence_path(workspace: str | Path) -> Path:
    """``W/descriptor/sentence.json``: the sentence found, and once trained, the learned one."""
    return Path(workspace) / "descriptor" / "sentence.json"


def descriptor_checkpoint(workspace: str | Path) -> Path:
    """``W/descriptor/checkpoints/last.pt``: the descriptor's training, while it is unfinished."""
    return Path(workspace) / "descriptor" / "checkpoints" / "last.pt"


# The suffix of descriptor/source.<ext> for each format load_image accepts.
SOURCE_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp"}


def source_copy(workspace: str | Path) -> Path | None:
    """The run's copy of its image (``W/descriptor/source.<ext>``), ``None`` before it has one."""
    folder = Path(workspace) / "descriptor"
    copies = (folder / f"source{suffix}" for suffix in SOURCE_SUFFIXES.values())
    return next((copy for copy in copies if copy.is_file()), None)


def read_record(workspace: str | Path) -> dict | None:
    """The workspace's ``sentence.json`` as a dict, ``None`` when there is none; an unreadable
    one is a :class:`DreamtextError`."""
    path = sentence_path(workspace)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, *UNREADABLE_JSON) as error:
        raise DreamtextError(
            f"{path} is unreadable ({type(error).__name__}); delete it to describe the image "
            "again, or pass --workspace NEW_FOLDER"
        ) from None
    if not isinstance(record, dict):
        raise DreamtextError(f"{path} is not a sentence record; delete it or pass --workspace")
    return record


def search_clip_revision(workspace: str | Path) -> dict[str, str | None]:
    """``{"clip_revision": commit}`` for an image→3D run whose search has found its sentence:
    the hub commit of the CLIP that scored it, as its ``sentence.json`` recorded it (``None``
    for a ``--clip`` folder, a model not in the cache, or a record from before it was kept);
    ``{}`` for any other run (a text→3D run, which no CLIP made). A run's ``ran_on`` holds it
    beside Stable Diffusion's ``model_revision``."""
    try:
        record = read_record(workspace)
    except DreamtextError:  # the search's checks refuse it; here it only adds to a record
        return {}
    if record is None or "sentence" not in record:
        return {}
    ran_on = record.get("ran_on")
    revision = ran_on.get("clip_revision") if isinstance(ran_on, dict) else None
    return {"clip_revision": revision if isinstance(revision, str) else None}


def run_owner(workspace: Path) -> tuple[str, str] | None:
    """Whose run ``workspace`` holds: ``("image", absolute image path)`` for an image→3D run
    (``descriptor/sentence.json``, or before it config.json's ``image_to_3d`` section),
    ``("text", prompt)`` for a text→3D run (``config.json``), ``None`` when it holds neither (no
    folder, or a run that has not written them yet). Read once within :func:`read_once`."""
    return _once("owner", workspace, lambda: _run_owner(workspace))


def _run_owner(workspace: Path) -> tuple[str, str] | None:
    files: dict[Path, Any] = {}  # config.json read once for both of its keys
    for path, kind, keys in (
        (sentence_path(workspace), "image", ("image",)),
        (workspace / "config.json", "image", ("image_to_3d", "image")),
        (workspace / "config.json", "text", ("prompt",)),
    ):
        if path not in files:
            try:
                files[path] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, *UNREADABLE_JSON):
                files[path] = None
        value = files[path]
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str):
            return kind, owner_value(kind, value)
    return None


def prompt_workspace(root: Path, name: str, key: tuple[str, str]) -> Path:
    """The default workspace under ``root`` of the run ``key`` (:func:`run_owner`'s form) whose
    folder is named after ``name`` (the prompt, or the image file's stem): ``root/<slugify(name)>``,
    or a folder an earlier version named it (:func:`earlier_slugs`), or
    the slug in NFD, when
    that one holds this run and the slug's folder does not exist."""
    folder = root / slugify(name)
    # A folder named in NFD (a copy from a Mac's HFS+, which names files so, by rsync or scp)
    # looks like the slug but is another name on Linux: the prompt was trained again beside it.
    earlier = [root / slug for slug in earlier_slugs(name)]
    for other in (*earlier, root / unicodedata.normalize("NFD", folder.name)):
        if other != folder and not folder.exists() and run_owner(other) == key:
            return other
    return folder


def default_workspace(image_path: str | Path) -> Path:
    """``workspace/<image file name>``: where ``dreamtext describe`` and ``dreamtext image`` write
    by default, so that ``image`` reuses the sentence ``describe`` found."""
    key = ("image", owner_value("image", str(image_path)))
    return prompt_workspace(DEFAULT_WORKSPACE_ROOT, Path(image_path).stem, key)


# The folders a run makes in its workspace as it goes: a file of that name there (a user's
# `previews` notes) was a FileExistsError traceback at the first preview or checkpoint, after
# that many steps, none of them saved.
TRAINING_FOLDERS = ("checkpoints", "previews")
IMAGE_FOLDERS = ("descriptor", *TRAINING_FOLDERS)


def check_run_folders(workspace: str | Path, names: tuple[str, ...], fix: str) -> None:
    """:func:`check_writable` of each folder ``names`` a run will make in ``workspace``."""
    for name in names:
        check_writable(Path(workspace) / name, fix)


def check_describe_workspace(workspace: str | Path, image_path: str | Path) -> None:
    """Refuse, before any work, a workspace where a new sentence would wreck what is there: the
    record of another image, or of an image→3D run whose descriptor training has started (its
    checkpoints and learned tokens belong to the old sentence), or a text→3D run. A record of
    this image that no training has used yet is replaced."""
    workspace = Path(workspace)
    check_writable(workspace, "pass --workspace a folder you can write")
    check_run_folders(workspace, ("descriptor",), "pass --workspace a folder you can write")
    record = read_record(workspace)
    if record is None:
        # A text→3D run's folder (its config.json has no image→3D section): the sentence and
        # describe's status.json would make it read as an image run and hide its steps.
        saved = read_run_config(workspace, "delete it or pass --workspace NEW_FOLDER")
        if saved is not None and not read_stage_sections(workspace):
            raise DreamtextError(
                f"{workspace} holds the text→3D run of '{saved.get('prompt')}'; pass --workspace "
                f"NEW_FOLDER to describe {image_path}"
            )
    # config.json's image first: an image→3D run stopped in its describe stage has no
    # sentence yet, and another image's sentence and copy made its own image read as changed.
    previous = recorded_image(workspace)
    # The same bytes moved or copied elsewhere are this image, as for `image` (same_image).
    if previous is not None and not same_image(
        Path(image_path),
        Path(previous),
        *image_and_copy_bytes(Path(image_path), source_copy(workspace)),
    ):
        run = "image→3D run" if record is None else "sentence"
        raise DreamtextError(
            f"{workspace} holds the {run} of {previous}; pass --workspace NEW_FOLDER to "
            f"describe {image_path}"
        )
    if record is None:
        return
    trained = "trained_sentence" in record or descriptor_checkpoint(workspace).is_file()
    if trained:
        raise DreamtextError(
            f"{workspace} holds the image→3D run of '{record.get('sentence')}', whose descriptor "
            "training has started; to describe the image again, pass --workspace NEW_FOLDER"
        )


def same_image(
    image_path: Path, previous: Path, data: bytes | None, copy_data: bytes | None
) -> bool:
    """Whether ``image_path`` is the image of a run that recorded ``previous``: the same path,
    or the same bytes as that file or as the run's copy (:func:`source_copy`), so that a run
    whose image was moved or deleted continues from the moved file or the copy. ``data``: the
    bytes of ``image_path`` (``None`` when it is no file), ``copy_data`` the copy's (``None``
    without one): the caller reads each once."""
    if previous.resolve() == image_path.resolve():
        return True
    if data is None:
        return False
    return copy_data == data or (previous.is_file() and previous.read_bytes() == data)


def image_and_copy_bytes(image_path: Path, copy: Path | None) -> tuple[bytes | None, bytes | None]:
    """:func:`same_image`'s ``data`` and ``copy_data``: the bytes of ``image_path`` (``None``
    when it is no file) and of the run's ``copy`` (:func:`source_copy`; ``None`` without one,
    or without ``data``), each file read once."""
    data = image_path.read_bytes() if image_path.is_file() else None
    if data is None or copy is None:
        return data, None
    return data, data if copy.resolve() == image_path.resolve() else copy.read_bytes()


def recorded_image(workspace: Path) -> str | None:
    """The image the run in ``workspace`` recorded (config.json's ``image_to_3d``, else
    sentence.json's), ``None`` for a new run."""
    section = read_stage_sections(workspace).get("image_to_3d", {})
    return section.get("image") or (read_record(workspace) or {}).get("image")


def check_image(image_path: Path, workspace: Path) -> None:
    """:func:`~dreamtext.images.load_image`'s checks; an image that is gone since the run in
    ``workspace`` recorded it is named with the run's copy to pass instead (the run can continue
    from it), and one that reads like a prompt (``dreamtext image "a red mug"``) with
    ``dreamtext text``."""
    check_image_reachable(image_path)
    if not image_path.exists() and workspace.is_dir():
        previous, copy = recorded_image(workspace), source_copy(workspace)
        if previous is not None and copy is not None and Path(previous) == image_path.resolve():
            # The folder too: the default one is named after the image file passed, and the
            # copy's name (source.png) would start a new run in workspace/source.
            command = shlex.join(["dreamtext", "image", str(copy), "--workspace", str(workspace)])
            raise DreamtextError(
                f"image not found: {image_path}; to continue the run in {workspace}, pass its "
                f"copy and its folder: {command} (or the image's new path in place of the copy)"
            )
    # numpy and Pillow (a third of a second) only where an image is checked: `dreamtext view`
    # and `batch --status` import this module and open no image.
    from dreamtext.images import load_image

    load_image(image_path)  # with a prompt's hint (inputs.check_image_path)


def check_image_workspace(
    workspace: Path, image_path: Path, for_what: str = "this image"
) -> dict | None:
    """Refuse, before any work, a workspace that holds something other than this image's run:
    a file, a folder this process cannot write, the run of another image (:func:`same_image`),
    this image edited since the run copied it, or a text→3D run of some prompt (which the
    text→3D stage would otherwise continue as this image's). Returns the run's recorded
    ``config.json`` without its stage sections (``None`` before it has one). A run that another
    process of this machine is running is refused too (:func:`check_not_running`). ``for_what``
    ends the lines that ask for another folder (``text --diverse`` names its prompt's run)."""
    check_writable(workspace, "pass --workspace a folder you can write")
    check_run_folders(workspace, IMAGE_FOLDERS, "pass --workspace a folder you can write")
    # Written after the sentence search and the descriptor's training: a folder in their place
    # was an IsADirectoryError traceback there, the work done lost.
    for path in (sentence_path(workspace), Path(workspace).joinpath(*RUN_LEARNED_EMBEDS)):
        check_a_file(path, "a run's file")
    check_not_running(workspace)
    record = read_record(workspace)
    sections = read_stage_sections(workspace)
    previous = recorded_image(workspace)
    copy = source_copy(workspace)
    # Read only for a run that recorded an image (an image may be tens of megabytes).
    data, copy_data = (
        image_and_copy_bytes(image_path, copy) if previous is not None else (None, None)
    )
    if previous is not None and not same_image(image_path, Path(previous), data, copy_data):
        raise DreamtextError(
            f"{workspace} holds the image→3D run of {previous}; pass --workspace NEW_FOLDER "
            f"for {for_what}"
        )
    if copy_data is not None and copy_data != data:
        # Edited in place: the run's sentence and descriptor were made from the copy.
        raise DreamtextError(
            f"{image_path} has changed since the run in {workspace} started from it; pass "
            f"--workspace NEW_FOLDER for the new image, or its copy {copy} to continue the run"
        )
    saved = read_run_config(workspace, "delete it or pass --workspace NEW_FOLDER")
    if saved is None:
        return None
    # An image run's config.json: its stage sections, or for a run from before them the
    # learned embedding of a sentence record.
    learned = record is not None and saved.get("guidance", {}).get("textual_inversion")
    if not sections and not learned:
        raise DreamtextError(
            f"{workspace} holds a text→3D run of '{saved.get('prompt')}'; pass --workspace "
            f"NEW_FOLDER for {for_what}"
        )
    return saved


# The bytes at a checkpoint's end that name it: torch.save writes a zip file, whose central
# directory at the end holds the CRC-32 of every entry (the pickle with the step, each tensor).
IDENTITY_TAIL_BYTES = 65536


def _file_identity(path: Path) -> list[int | str]:
    """What changes when ``path`` is written again, replaced or copied over: its inode, size,
    modification time (a hard link to it, as the next save's ``step_*.pt``, changes none) and a
    hash of its last :data:`IDENTITY_TAIL_BYTES` (a copy of the same size, on a file system that
    keeps coarse times)."""
    with open(path, "rb") as file:
        stat = os.fstat(file.fileno())
        file.seek(max(0, stat.st_size - IDENTITY_TAIL_BYTES))
        tail = hashlib.sha256(file.read()).hexdigest()
    return [stat.st_ino, stat.st_size, stat.st_mtime_ns, tail]


def step_record(last: Path, step: int) -> bytes:
    """The contents of ``checkpoints/last.step.json`` (:data:`LAST_STEP_RECORD`) for the
    checkpoint ``last`` of ``step`` just written (:func:`dreamtext.checkpoint.save_checkpoint`
    writes it after the checkpoint): its step, and the file it was written as."""
    return json.dumps({"step": int(step), "file": _file_identity(last)}).encode("utf-8")


def recorded_step(workspace: str | Path) -> int | None:
    """The step of ``checkpoints/last.pt`` as its save recorded it (:func:`step_record`), read
    without torch; ``None`` without a record, or where ``last.pt`` is not the file the record
    was written for (written by a save killed before its record, copied over, truncated, or of
    a dreamtext from before the record): then only reading the checkpoint tells
    (:func:`dreamtext.checkpoint.resume_step`). Read once within :func:`read_once`."""
    return _once("step", workspace, lambda: _recorded_step(workspace))


def _recorded_step(workspace: str | Path) -> int | None:
    folder = Path(workspace) / CHECKPOINT_DIR
    try:
        record = json.loads((folder / LAST_STEP_RECORD).read_text(encoding="utf-8"))
        step, identity = record["step"], _file_identity(folder / LAST_CHECKPOINT)
    except (OSError, *UNREADABLE_JSON, TypeError, KeyError):
        return None
    if not isinstance(step, int) or isinstance(step, bool) or record.get("file") != identity:
        return None
    return step


def saved_time(last: Path) -> float:
    """When the checkpoint ``last`` (a run's ``checkpoints/last.pt``) was saved, in seconds since
    the epoch: its modification time as its save recorded it (:func:`step_record`) where ``last``
    holds the bytes of that save by its size and last :data:`IDENTITY_TAIL_BYTES`, though a copy
    (``cp -r``, ``scp -r`` without ``-p``) gave it a new inode and the copy's time; else its
    modification time now (no record, or a file copied over it since). Only a file whose inode
    or time changed since its record is read (64 KiB): ``export`` dates every run under
    ``workspace/``."""
    stat = os.stat(last)
    try:
        record = json.loads((last.parent / LAST_STEP_RECORD).read_text(encoding="utf-8"))
        inode, size, mtime_ns, tail = record["file"]
        if (inode, mtime_ns) == (stat.st_ino, stat.st_mtime_ns) or size != stat.st_size:
            return stat.st_mtime
        same = isinstance(mtime_ns, int) and tail == _file_identity(last)[3]
    except (OSError, *UNREADABLE_JSON, TypeError, KeyError, ValueError):
        return stat.st_mtime
    return mtime_ns / 1e9 if same and not isinstance(mtime_ns, bool) else stat.st_mtime


def other_prompt_error(workspace: Path, previous: str, own_config: Path | None) -> DreamtextError:
    """The line for a new run of a prompt in ``workspace``, which holds the run of ``previous``;
    ``own_config``: the ``--config`` file that is that run's record
    (:func:`dreamtext.inputs.own_config_file`), where the user typed that run again."""
    if own_config is not None:
        return DreamtextError(
            f"--config {own_config} is the record of the run of '{previous}' in {workspace}, "
            "where this command would train; pass --workspace NEW_FOLDER to train this "
            "prompt with its settings beside it"
        )
    return DreamtextError(
        f"{workspace} holds {_continued_by(workspace, previous)}, or pass --workspace NEW_FOLDER "
        "for this prompt"
    )


def resumed_other_prompt_error(workspace: Path, previous: str) -> DreamtextError:
    """The line for ``--resume`` of the run in ``workspace``, of ``previous``, with another
    prompt: an image→3D or ``--diverse`` run is continued by its own command
    (:func:`_continued_by`; the prompt typed is often the ``--diverse`` one, not the learned
    sentence the run records), any other run by that prompt with ``--resume``."""
    held = f"a run of '{previous}'; resume it with that prompt"
    if read_stage_sections(workspace):
        held = _continued_by(workspace, previous)
    return DreamtextError(
        f"{workspace} holds {held}, or drop --resume and pass --workspace NEW_FOLDER for this "
        "prompt"
    )


def diverse_run_beside(workspace: Path, prompt: str) -> str | None:
    """Where ``workspace`` (the folder ``text --resume`` of ``prompt`` looked in) holds no run
    but a ``--diverse`` run of ``prompt`` lies beside it, in ``<workspace>_diverse_seed<N>``:
    that folder and the command that continues it (:func:`_continued_by`; the first seed by
    name), for a resume typed without ``--diverse``; else ``None``."""
    pattern = f"{glob.escape(workspace.name)}_diverse_seed*"
    for found in sorted(workspace.parent.glob(pattern)):
        try:
            recorded = read_stage_sections(found).get("diverse", {}).get("prompt")
        except DreamtextError:  # an unreadable config.json: no run to name
            continue
        if same_prompt(recorded, prompt):
            return f"{found} holds {_continued_by(found, prompt)}"
    return None


def _continued_by(workspace: Path, previous: str) -> str:
    """What run ``workspace`` holds, and the command that continues it: ``--resume`` with another
    prompt is refused, and the text→3D stage of an image→3D or ``--diverse`` run is continued by
    that run's own command (its recorded image, or prompt and seed), not ``text --resume``."""
    sections = read_stage_sections(workspace)
    image = sections.get("image_to_3d", {}).get("image")
    diverse = sections.get("diverse", {})
    folder = shell_word(workspace)
    if isinstance(diverse.get("prompt"), str):
        prompt, seed = diverse["prompt"], diverse.get("seed")
        flags = f" --seed {seed}" if isinstance(seed, int) else ""
        command = f"dreamtext text {shlex.quote(prompt)} --diverse{flags} --workspace {folder}"
        return f"the --diverse run of '{prompt}'; `{command}` continues it"
    if isinstance(image, str):
        command = f"dreamtext image {shlex.quote(image)} --workspace {folder}"
        return f"the image→3D run of {image}; `{command}` continues it"
    return f"a run of '{previous}'; that prompt with --resume continues it"


def held_run_error(workspace: Path, step: int | None, own_config: Path | None) -> DreamtextError:
    """The line for a new run in ``workspace``, which holds a run of the same prompt with a
    checkpoint of ``step`` (``None``: none of its checkpoints loads whole, so that ``--resume``
    cannot go on) and no ``--overwrite``: typing the training command again must not wipe hours
    of training. ``own_config`` as for
    :func:`other_prompt_error`."""
    if step is None:
        # A checkpoint is there (can_resume), but none loads whole: `--resume` would refuse.
        again = "--overwrite to train it again from scratch"
        failing = "; if a disk or file server is failing, run the command again once it is back"
        if own_config is not None:
            return DreamtextError(
                f"--config {own_config} is the record of the run in {workspace}, where this "
                "command would train, and no checkpoint of it loads whole; pass --workspace "
                f"NEW_FOLDER to train it again beside it, or {again}{failing}"
            )
        return DreamtextError(
            f"{workspace} already holds a run of this prompt, but no checkpoint of it loads whole "
            f"(damaged or cut short), so --resume has nothing to go on from; pass {again}, or "
            f"--workspace NEW_FOLDER{failing}"
        )
    where = f" at step {step}"
    recorded = read_run_config(workspace, "delete it or pass --workspace") or {}
    iters = recorded.get("iters")
    resume = "--resume to continue it"
    if step is not None and isinstance(iters, int) and step >= iters:
        # A finished run: --resume alone has nothing to train ("already at step N of N"), but
        # exports one trained with --no-export (resolve_config: exporting is the command's).
        from dreamtext.runstatus import has_mesh

        where = f", finished at step {step}"
        resume = f"--resume --iters N (above {step}) to train it further"
        if not has_mesh(workspace, step):
            # Trained with --no-export, or its export at the end was cut short (a kill, a full
            # disk): either way the mesh is what is missing, not steps. `export` makes it
            # whatever the command (a --resume with the run's own config.json as --config keeps
            # its export: false).
            missing = "--no-export" if recorded.get("export") is False else "export cut short"
            command = f"dreamtext export --workspace {shell_word(workspace)}"
            where += f" with no mesh ({missing}; `{command}` makes it)"
    if own_config is not None:
        return DreamtextError(
            f"--config {own_config} is the record of the run in {workspace}{where}, where "
            "this command would train; pass --workspace NEW_FOLDER to train it again beside "
            f"it, or {resume}"
        )
    return DreamtextError(
        f"{workspace} already holds a run of this prompt{where}; pass {resume}, --overwrite "
        "to train it again from scratch, or --workspace NEW_FOLDER"
    )


def check_new_run_workspace(
    workspace: Path, prompt: str, overwrite: bool, own_config: Path | None
) -> None:
    """A new text→3D run's workspace as :func:`dreamtext.processes.claim_workspace` and
    :func:`dreamtext.trainer.check_workspace` check it, as far as they can be known without
    torch: its place, a folder this process can write, no run another process runs there, not
    the run of another prompt (:func:`other_prompt_error`), and without ``overwrite`` no
    checkpoint of this prompt's run whose step its save recorded (:func:`recorded_step`,
    :func:`held_run_error`). A workspace with a lock file (its holder may live: the claim asks)
    is left to the command, as is a checkpoint without that record (the trainer reads it)."""
    if os.path.lexists(workspace / LOCK_NAME):
        return
    check_own_folder(workspace)
    check_writable(workspace, "pass --workspace a folder you can write")
    check_run_folders(workspace, TRAINING_FOLDERS, "pass --workspace a folder you can write")
    check_not_running(workspace)
    previous = (read_run_config(workspace, "delete it or pass --workspace") or {}).get("prompt")
    if previous is not None and not same_prompt(previous, prompt):
        raise other_prompt_error(workspace, previous, own_config)
    step = None if overwrite else recorded_step(workspace)
    if step is not None:
        raise held_run_error(workspace, step, own_config)
