"""Checkpoints: atomic writes, pickle-free loads, and rebuilding a trained field.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so ``torch.load(...,
weights_only=True)`` reads it without unpickling arbitrary objects:
``{"step", "field", "optimizer", "renderer", "rng", "config", "field_config", "encoding_backend",
"run_id", "digest"}``. ``digest`` is a checksum of everything else in it (:func:`state_digest`):
torch checks none of a tensor's bytes when it loads one, so without it a byte changed on the way
(a disk, a file server, a copy) would resume or export as garbage without a word.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import secrets
import sys
import tempfile
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any, BinaryIO

import torch

from dreamtext.devices import memory_that_ran_out
from dreamtext.errors import ENVIRONMENT_ERRNOS, DreamtextError, check_a_file, copy_file
from dreamtext.errors import naming_the_file as naming_the_file  # re-exported
from dreamtext.inputs import CHECKPOINT_DIR as _CHECKPOINT_DIR
from dreamtext.inputs import LAST_CHECKPOINT, LAST_STEP_RECORD
from dreamtext.latestrun import step_files  # listed without torch, for the newest run
from dreamtext.processes import remove_stale_temps as remove_stale_temps  # re-exported
from dreamtext.runfiles import check_writable as check_writable  # re-exported
from dreamtext.runfiles import file_mode as file_mode  # re-exported
from dreamtext.runfiles import recorded_step, step_record

# Named in dreamtext.inputs, whose checks before the torch import look for them too.
CHECKPOINT_DIR = _CHECKPOINT_DIR
LAST = LAST_CHECKPOINT
# The key of a checkpoint's checksum, and the hash it is saved with: sha256 runs on the CPU's SHA
# instructions (x86 SHA-NI, ARMv8): 1.3 GB/s here, 0.11 s for a default-field checkpoint, where
# blake2b took 0.32 s.
DIGEST = "digest"
DIGEST_ALGORITHM = "sha256"
# Hash-grid backends that run only on CUDA (the CPU's Triton interpreter is for tests).
CUDA_BACKENDS = ("tcnn", "triton")


def is_cuda(device: str | torch.device) -> bool:
    return torch.device(device).type == "cuda"


def checkpoint_dir(workspace: Path) -> Path:
    return Path(workspace) / CHECKPOINT_DIR


def atomic_write_bytes(
    path: Path,
    write: Any,
    before_replace: Callable[[], None] | None = None,
    replace: Callable[[str, Path], None] = os.replace,
) -> None:
    """Call ``write(file_object)`` on a temp file beside ``path``, then rename it into place
    (with the mode of :func:`file_mode`) by ``replace(temp, path)``: ``os.replace``, or for a
    command's last file :func:`dreamtext.interrupts.rename_completing_work`. ``before_replace``:
    called when the new file is written, right before it replaces the old one.

    A crash or Ctrl-C mid-write leaves the old file (or none), never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:  # named .last.pt.k2j4x9ab.tmp, a name the user never saw
        raise OSError(error.errno, error.strerror, str(path)) from error
    try:
        with naming_the_file(path), os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        if before_replace is not None:
            before_replace()
        replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_whole(write: Callable[[memoryview], int], data: bytes, path: Path) -> None:
    """Write all of ``data`` with ``write`` (an unbuffered file's, or ``os.write`` on a
    descriptor), an ``OSError`` naming ``path``: a write that fits only in part (a full disk or
    quota, a file-size limit) writes less, and the next one raises why."""
    rest = memoryview(data)
    with naming_the_file(path):
        while rest:
            rest = rest[write(rest) :]


def _json_value(value: Any) -> Any:
    """``value``, or ``None`` for a float that is not finite (JSON has no NaN or infinity)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def append_log_line(log: BinaryIO, path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` to ``log`` (the unbuffered ``log.jsonl`` at ``path``) as one whole line,
    or nothing: a write that does not fit (a full disk or quota, a file-size limit) is cut back
    off and raised naming ``path``. (A buffered file kept the rest, the closing retried it and
    its second, nameless error replaced the first; and a torn line stayed.) A value that is NaN
    or infinite (a diverged step's loss) is written as ``null``: Python's ``NaN`` and
    ``Infinity`` are not JSON, and a strict reader (JavaScript's ``JSON.parse``) refused the
    line."""
    data = (json.dumps({k: _json_value(v) for k, v in record.items()}) + "\n").encode("utf-8")
    end = log.seek(0, os.SEEK_END)
    try:
        write_whole(log.write, data, path)
    except OSError:
        with suppress(OSError):
            log.truncate(end)
        raise


def _give_name(source: Path, name: Path) -> None:
    """Make ``name`` (replacing any file there) a hard link of ``source``, or a copy of it where
    the file system has no hard links; ``source`` keeps its own name."""
    tmp = name.with_name(f".{name.name}.{secrets.token_hex(4)}.tmp")
    try:
        os.link(source, tmp)
    except OSError:
        try:
            copy_file(source, tmp)
        except OSError as error:  # a full disk named .step_000040.pt.3f9a0c1e.tmp
            if error.filename == str(tmp):
                raise OSError(error.errno, error.strerror, str(name)) from error
            raise
    try:
        os.replace(tmp, name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def save_checkpoint(workspace: Path, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``state`` as ``checkpoints/last.pt`` and return that path; the ``last.pt`` it
    replaces, of an earlier step, stays as ``step_XXXXXX.pt``, and the newest ``keep − 1`` of
    those older steps are kept: ``keep`` checkpoints in all, no two of them the same state (a
    default-field checkpoint is 148 MB). Step files of ``state``'s step or later are removed:
    they are of a run rolled back to an earlier step (a resume removes them already,
    :func:`remove_later_steps`), and would pass for the newest.

    The old ``last.pt`` gets its step file name (a hard link) before the new one replaces it, so
    at every instant ``last.pt`` is a whole checkpoint. The state is written straight into the
    temp file (:func:`save_into`), not serialised in memory first: that copy was the size of the
    file, 1.9 GB more peak memory for a table of 2^24 rows × 16 levels × 4 features with Adam
    (3.1 GB with Adan). A full disk raises ``OSError`` (ENOSPC), which the CLI reports in one
    line. The file holds ``state`` and its checksum (:func:`with_digest`), so that a load can
    tell a file damaged since (:func:`load_checkpoint`)."""
    folder = checkpoint_dir(workspace)
    last = folder / LAST
    step = int(state["step"])
    saved = with_digest(state)
    previous = checkpoint_step(last)

    def keep_previous() -> None:
        if previous is not None and previous < step and keep > 1:
            _give_name(last, step_path(folder, previous))

    atomic_write_bytes(last, lambda f: save_into(saved, f, step), before_replace=keep_previous)
    # Its step, for the CLI to name without torch (dreamtext.runfiles.recorded_step). Not a
    # failed save where it cannot be written: a record not of this last.pt is not believed, and
    # the CLI reads the checkpoint instead.
    record = step_record(last, step)
    with contextlib.suppress(OSError):
        atomic_write_bytes(folder / LAST_STEP_RECORD, lambda f: f.write(record))
    steps = step_files(folder)
    older = [p for s, p in steps if s < step]
    for old in older[: max(0, len(older) - (keep - 1))]:
        old.unlink(missing_ok=True)
    remove_later_steps(workspace, step - 1)
    # A checkpoint write that was killed (a scheduler's grace period can end during the save of
    # its SIGTERM) left a hidden temp file the size of a checkpoint, which no later write replaces.
    remove_stale_temps(folder, r"step_\d+\.pt|last\.pt|last\.step\.json")
    return last


class _FirstError:
    """A file whose first write error is kept (``error``): torch's writer takes it for a short
    write and raises ``RuntimeError("unexpected pos ...")`` of its own later, a traceback. A
    ``KeyboardInterrupt`` too: a second Ctrl-C during the save of a stopped run lands in a
    write (its handler runs in this Python code, or in the write that EINTR interrupted)."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.error = file, None

    def write(self, data: Any) -> int:
        try:
            return self.file.write(data)
        except BaseException as error:
            self.error = self.error or error
            raise

    def flush(self) -> None:
        self.file.flush()


def save_into(state: dict[str, Any], file: BinaryIO, step: int) -> None:
    """``torch.save(state, file)``, the bytes of a save into memory, where a write the disk or
    the memory refuses raises that ``OSError`` (a full disk: the CLI's one line, naming the file
    through :func:`atomic_write_bytes`) or a ``MemoryError`` (the CLI's out-of-memory line,
    :func:`dreamtext.devices.memory_that_ran_out`), and a Ctrl-C in a write its
    ``KeyboardInterrupt``, not torch's "unexpected pos ..."."""
    writer = _FirstError(file)
    handled = sys.exc_info()[1]  # the save of a step that stopped (StepStopped) or ran out
    try:
        torch.save(state, writer)
    except RuntimeError as error:
        late = error.__context__  # a Ctrl-C as the write began, before its try
        if writer.error is None and isinstance(late, KeyboardInterrupt) and late is not handled:
            writer.error = late
        if writer.error is not None and not isinstance(writer.error, MemoryError):
            raise writer.error from None  # a full disk, a Ctrl-C: what it is, not torch's words
        if isinstance(writer.error, MemoryError) or isinstance(error.__context__, MemoryError):
            raise MemoryError(f"serialising the checkpoint of step {step}") from error
        raise


def state_digest(state: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` (:data:`DIGEST_ALGORITHM`): a hash of everything ``state`` holds, in
    its order: each tensor's dtype, shape and bytes, and each other value's type and ``repr``.
    What ``torch.save`` writes and ``torch.load(..., weights_only=True)`` reads back hashes
    alike, on any device."""
    digest = hashlib.new(DIGEST_ALGORITHM)
    _feed(digest, state)
    return f"{DIGEST_ALGORITHM}:{digest.hexdigest()}"


# Values whose repr is the same after a save and load (a dtype's "torch.float32"); any other
# leaf counts by its type alone, so that no address in a repr can fail a whole file.
_REPR_TYPES = (str, int, float, bool, type(None), bytes, torch.dtype, torch.device)


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        # Flat bytes of the logical tensor (a view of it, for a contiguous CPU tensor: no copy).
        data = value.detach().cpu().resolve_conj().resolve_neg().contiguous().reshape(-1)
        digest.update(f"tensor {data.dtype} {tuple(value.shape)};".encode())
        digest.update(data.view(torch.uint8).numpy())
    elif isinstance(value, Mapping):  # a dict, or a state_dict's OrderedDict
        digest.update(f"dict {len(value)};".encode())
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(f"{'list' if isinstance(value, list) else 'tuple'} {len(value)};".encode())
        for item in value:
            _feed(digest, item)
    else:
        text = repr(value) if isinstance(value, _REPR_TYPES) else ""
        digest.update(f"{type(value).__name__} {len(text)};{text}".encode("utf-8", "replace"))


def with_digest(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with its :func:`state_digest` under :data:`DIGEST`, to be saved as one object:
    the checksum is in the same file, written by the same atomic rename."""
    return {**state, DIGEST: state_digest(state)}


def digest_fails(state: Any) -> bool:
    """Whether ``state``, as loaded, fails the checksum saved in it (:func:`with_digest`), which
    this takes out of it. A checkpoint saved without one (an older dreamtext's) cannot be
    checked and passes."""
    if not isinstance(state, dict) or DIGEST not in state:
        return False
    return state.pop(DIGEST) != state_digest(state)


def remove_later_steps(workspace: Path, step: int) -> list[Path]:
    """Remove the step files past ``step`` of the workspace's checkpoints and return them: a run
    that goes on from ``step`` (a resume from a step file copied over ``last.pt``, or from the
    newest whole one when ``last.pt`` was unreadable) left them on a branch it no longer follows,
    and they would pass for its newest checkpoints (the one to fall back to, the ones ``keep``
    counts)."""
    later = [p for s, p in step_files(checkpoint_dir(workspace)) if s > step]
    for path in later:
        path.unlink(missing_ok=True)
    return later


def step_path(folder: Path, step: int) -> Path:
    """``folder/step_XXXXXX.pt``: the checkpoint of ``step`` once a newer one is ``last.pt``."""
    return Path(folder) / f"step_{int(step):06d}.pt"


# The words of the system's refusal to map a file it has no memory or address space for
# (ENOMEM: a `ulimit -v`), in torch's "unable to mmap N bytes from file <...>: Cannot allocate
# memory (12)".
_MAP_REFUSED = os.strerror(errno.ENOMEM)


def _mapped_state(path: Path) -> Any:
    """The checkpoint at ``path``, memory-mapped (its tensors are not read). A map the system
    refuses for memory is a ``MemoryError``: a whole checkpoint is no missing or damaged one."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "unable to mmap" in str(error) and _MAP_REFUSED in str(error):
            raise MemoryError(f"memory-mapping {path}") from error
        raise


def checkpoint_step(path: Path) -> int | None:
    """The step of the checkpoint at ``path``, or ``None`` without a readable one. Memory-mapped
    (:func:`_mapped_state`), so its tensors are not read."""
    try:
        return int(_mapped_state(path)["step"])
    except MemoryError:
        raise
    except Exception:  # missing, truncated or foreign: no step to keep it under
        return None


def checkpoint_run(path: Path) -> str | None:
    """The ``run_id`` of the checkpoint at ``path``: the identity a run draws when it starts and
    keeps through its resumes (``trainer.Run.run_id``), ``""`` for a checkpoint from before runs
    had one; ``None`` without a readable checkpoint. Memory-mapped (:func:`_mapped_state`), so
    its tensors are not read; a map the memory refuses is a ``MemoryError``, not "unreadable"
    (an export under a ``ulimit -v`` said its whole last.pt was "not a whole checkpoint")."""
    try:
        return str(_mapped_state(path).get("run_id", ""))
    except MemoryError:
        raise
    except Exception:  # missing, truncated or foreign: no run's
        return None


# What every text→3D run checkpoint holds (``trainer.checkpoint_state``), and what reloading one
# needs: ``load_run`` reads the last three, a resume all of them.
RUN_KEYS = ("step", "field", "optimizer", "renderer", "rng", "config", "field_config")


class UnreadableCheckpoint(DreamtextError):
    """A checkpoint file that is not a whole checkpoint: truncated (a full disk, a copy or sync
    cut short), damaged, another tool's, or one that does not restore. ``why`` says which, in
    words; an older whole checkpoint can stand in for it (``dreamtext.trainer.restore_newest``).
    Not for a whole file that this machine cannot read (permission denied, out of memory)."""

    def __init__(self, message: str, path: Path, why: str) -> None:
        super().__init__(message)
        self.path = Path(path)
        self.why = why


def load_checkpoint(
    path: Path, map_location: str | torch.device = "cpu", required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Load a checkpoint without unpickling code (``weights_only=True``). A file that cannot be
    read, that fails its checksum (:func:`digest_fails`), or that lacks one of the ``required``
    keys, is an :class:`UnreadableCheckpoint` that names the newest whole checkpoint of its
    folder to go on from (:func:`newest_whole_step`). The state comes without its checksum."""
    path = Path(path)
    if path.is_dir():  # "train first" of a run with its step files beside it misled
        raise DreamtextError(
            f"{path} is a folder, not a checkpoint; move it out of {path.parent}, and --resume "
            "goes on from the newest step file there"
        )
    if not path.is_file():
        raise DreamtextError(f"no checkpoint at {path}; train first with `dreamtext text PROMPT`")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except PermissionError as exc:  # a whole checkpoint this user may not read: keep it
        raise DreamtextError(
            f"cannot read checkpoint {path} ({exc.strerror}); give this user read access to it "
            "(its owner can: chmod a+r) and run again"
        ) from None
    except Exception as exc:  # a corrupt or foreign file, not a bug of ours
        if memory_that_ran_out(exc) is not None:  # the machine's, and said as such by the CLI
            raise
        if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
            # A disk or file server failing (EIO, a stale NFS handle), not the file: it may be
            # whole, and a resume must not go on from an older one (its first save would
            # replace it). The CLI's one line names the fix.
            raise
        why = f"a truncated or damaged file: {type(exc).__name__}"
        raise UnreadableCheckpoint(
            f"cannot read checkpoint {path} ({why}); {_instead(path, required)}", path, why
        ) from None
    if digest_fails(state):
        why = "a damaged file: its checksum does not match"
        raise UnreadableCheckpoint(
            f"cannot read checkpoint {path} ({why}); {_instead(path, required)}", path, why
        )
    missing = [key for key in required if not isinstance(state, dict) or key not in state]
    if missing:
        why = f"it lacks {', '.join(missing)}"
        raise UnreadableCheckpoint(
            f"{path} is not a dreamtext run checkpoint ({why}); {_instead(path, required)}",
            path,
            why,
        )
    return state


def newest_whole_step(
    folder: Path, required: tuple[str, ...] = RUN_KEYS
) -> tuple[Path, int] | None:
    """The newest step file of ``folder`` that loads whole (:func:`is_whole`), and its step;
    ``None`` when none does."""
    for step, path in reversed(step_files(folder)):
        if is_whole(path, step, required):
            return path, step
    return None


# is_whole's verdicts: the file's path → (its identity, the keys asked for, the verdict). A
# batch asks up to four times per line whether its run can be resumed, and each asking read a
# 148 MB step file in full; a file the same since (the same inode, size and times) is not read
# again. Checkpoints are written by a rename, never in place, and a copy over one (cp without
# --remove-destination) changes its times.
_WHOLE: dict[str, tuple[tuple[int, ...], tuple[str, ...], bool]] = {}


def is_whole(path: Path, step: int, required: tuple[str, ...] = RUN_KEYS) -> bool:
    """Whether the checkpoint at ``path`` loads whole: it loads, passes its checksum
    (:func:`digest_fails`), has every ``required`` key and holds ``step``. Read in full, not
    memory-mapped, so that every byte of its tensors is read and checked; once per process
    while the file stays the same (:data:`_WHOLE`)."""
    try:
        stat = os.stat(path)
    except OSError:
        return False
    identity = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    known = _WHOLE.get(str(path))
    if known is not None and known[:2] == (identity, required):
        return known[2]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged: the caller tries the one before
        if memory_that_ran_out(exc) is not None:
            raise
        # A disk or file server failing says nothing of the file: ask again next time.
        if not isinstance(exc, OSError) or exc.errno not in ENVIRONMENT_ERRNOS:
            _WHOLE[str(path)] = (identity, required, False)
        return False
    whole = (
        not digest_fails(state)
        and isinstance(state, dict)
        and all(key in state for key in required)
        and isinstance(state.get("step"), int)
        and state["step"] == step
    )
    _WHOLE[str(path)] = (identity, required, whole)
    return whole


def _instead(path: Path, required: tuple[str, ...] = ()) -> str:
    """What to do about an unreadable checkpoint: go on from the newest whole one, if any."""
    if path.name != LAST or not step_files(path.parent):
        return "delete it to start over"
    whole = newest_whole_step(path.parent, required)
    if whole is None:
        return "no earlier checkpoint of the run is whole: train it again with --overwrite"
    return go_on_from(*whole)


def go_on_from(other: Path, step: int) -> str:
    """How to go on from the whole step file ``other`` (of ``step``) of a run whose ``last.pt``
    is unreadable or missing: resume, or copy it over ``last.pt``."""
    return (
        f"its newest whole checkpoint is {other} (step {step}): resuming the run (text "
        "--resume, or the same image or batch command) goes on from it and trains the steps "
        f"after it again; or copy it over {LAST} (cp --remove-destination) to use step {step} "
        "as it is"
    )


def last_checkpoint(workspace: Path) -> Path:
    return checkpoint_dir(workspace) / LAST


def check_checkpoint_files(workspace: Path, steps: bool = True) -> None:
    """Refuse a run whose ``last.pt`` or (with ``steps``: a training, which prunes and removes
    them) a step file is a folder or other non-file (made or copied by hand): an export said
    "train first" or "last.pt is missing", and a training stopped with an IsADirectoryError
    traceback removing it."""
    folder = checkpoint_dir(workspace)
    for path in [folder / LAST, *(path for _, path in step_files(folder) if steps)]:
        check_a_file(path, "a checkpoint")


def can_resume(workspace: Path) -> bool:
    """Whether ``workspace`` holds a checkpoint that a resume goes on from, and that a new run
    would delete: ``checkpoints/last.pt`` (whole or not: the resume says which), or, where it is
    missing (deleted by hand, a copy or sync cut short), a whole step file
    (:func:`newest_whole_step`), which the resume goes on from as for an unreadable ``last.pt``
    (``dreamtext.trainer.restore_newest``). Step files that are all damaged hold nothing to keep."""
    if last_checkpoint(workspace).is_file():
        return True
    return newest_whole_step(checkpoint_dir(workspace)) is not None


def last_reads(workspace: Path, whole: bool = True) -> bool:
    """Whether a finished run's ``checkpoints/last.pt`` reads, so that the run can be exported
    again and needs no resume: it loads whole (:func:`is_whole`; with ``whole`` off, only its
    step, which tells a missing or truncated file and costs a batch of a thousand finished
    lines no full reads), or the run has no checkpoint to go on from (:func:`can_resume`:
    deleted to save space). Otherwise a resume goes on from the newest whole step file, as the
    export's refusal says (:func:`go_on_from`).

    With ``whole`` off the step is its save's record where that is of this very file
    (:func:`~dreamtext.runfiles.recorded_step`: its size and last bytes, a stat and a 64 KiB
    read), else the checkpoint's, memory-mapped: unpickling one took ~10 ms, twice for each
    finished line, so a rerun of a batch of 5,000 finished lines spent 1.5 minutes on them."""
    if not whole and recorded_step(workspace) is not None:
        return True
    last = last_checkpoint(workspace)
    step = checkpoint_step(last)
    if step is not None and (not whole or is_whole(last, step)):
        return True
    return not can_resume(workspace)


def resume_step(workspace: Path) -> int | None:
    """The step a resume of ``workspace`` goes on from: that of ``checkpoints/last.pt`` where it
    loads whole (:func:`is_whole`: read in full, to tell a changed byte), else that of its
    newest whole step file (:func:`newest_whole_step`), as ``dreamtext.trainer.restore_newest``
    falls back; ``None`` without either."""
    last = last_checkpoint(workspace)
    step = checkpoint_step(last)
    if step is not None and is_whole(last, step):
        return step
    whole = newest_whole_step(checkpoint_dir(workspace))
    return None if whole is None else whole[1]


def load_run(
    workspace: Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """Rebuild the trained field and renderer of a workspace from its newest checkpoint.

    Returns ``(field, renderer, config_dict)``, both modules in eval mode on ``device``; the
    renderer has the run's render settings and its trained occupancy grid. The field is built with
    the encoding backend that wrote the checkpoint when it runs here, else with the torch one off
    CUDA and the ``auto`` choice on CUDA (all read the same parameter table).
    """
    # Read on the CPU: the modules below copy what they need to ``device``, and the optimiser's
    # moments and the random generators' states never reach it.
    return run_from_state(read_run_checkpoint(workspace), device)


def read_run_checkpoint(workspace: Path) -> dict[str, Any]:
    """The newest checkpoint of a text→3D run (``last.pt``), on the CPU, with every key that
    :func:`run_from_state` reads."""
    return load_checkpoint(last_checkpoint(workspace), required=RUN_KEYS)


def run_from_state(
    state: dict[str, Any], device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """:func:`load_run`'s field, renderer and config from a run checkpoint already read
    (:func:`read_run_checkpoint`), so that a caller can keep what else it holds (its step)."""
    from dreamtext.config import apply_overrides, fill_from_presets, fill_missing
    from dreamtext.factory import build_field, build_renderer
    from dreamtext.field import field_config_from_dict
    from dreamtext.renderer import RenderConfig

    config = dict(state["config"])
    # An older dreamtext's checkpoint lacks the settings added since: the run had its presets'
    # (a builtin:shapes run: an exp density), as a resume of it takes them, not the defaults;
    # and one from before there was a choice of sampler was rendered by the dense one.
    config, _ = fill_from_presets(config)
    field_cfg = field_config_from_dict(
        fill_missing(state["field_config"], config.get("field") or {})
    )
    cuda_backend = field_cfg.encoding in CUDA_BACKENDS
    if cuda_backend and not is_cuda(device):
        field_cfg.encoding = "torch"  # the CUDA backends read the same parameter table
    try:
        field = build_field(field_cfg, device)
    except DreamtextError:
        if not cuda_backend:
            raise
        # This GPU machine lacks the backend that trained the run (or it failed its
        # self-check): whichever of the others runs here reads the same table.
        field_cfg.encoding = "auto"
        field = build_field(field_cfg, device)
    field.load_state_dict(state["field"])
    render_cfg = RenderConfig()
    apply_overrides(render_cfg, config["render"], "the checkpoint's config")
    renderer = build_renderer(render_cfg, device)
    renderer.load_state_dict(state["renderer"])
    return field.eval(), renderer.eval(), config


def load_field(workspace: Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """The trained ``NeRFField`` of a workspace (see :func:`load_run`) and the run's config."""
    field, _, config = load_run(workspace, device)
    return field, config
