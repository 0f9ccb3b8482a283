"""``status.json``: where a run stands, for ``dreamtext batch``, ``dreamtext view`` and people.

    {"state": "running" | "finished" | "failed" | "interrupted", "step": int, "iters": int,
     "started": iso8601, "updated": iso8601, "error": str | null, "seconds": float,
     "gpu_mem_mib": float | null,
     "phase": "sample" | "describe" | "descriptor" | "train" | "export",
     "stages": {stage: {"seconds": float, "gpu_mem_mib": float | null}},
     "total_seconds": float, "peak_gpu_mem_mib": float | null, "host": str, "pid": int,
     "pid_start": int | null, "pid_ns": int | null, "boot_id": str | null, "saved_step": int | null}

The trainer wraps a run in :func:`track_status`, which writes the file atomically when the run
starts, when it ends (``finished``, written after the export), when it fails (with the error's
first line) and when it is interrupted (Ctrl-C, SIGTERM). ``failed`` keeps the step it failed at
and adds ``saved_step``, the step of the checkpoint ``--resume`` goes on from (``null`` where none
was saved, or for a stage without checkpoints: a full disk at step 14 of a run saved at step 10
said step 14 alone); ``interrupted`` records the saved step as its ``step``. In between, the
trainer calls :func:`update_status` at every log line and checkpoint, which refreshes ``step``,
``seconds``, ``gpu_mem_mib`` and ``updated``, and once more with ``phase="export"`` right before
the export. A stage without steps to report at (``describe``, ``sample``) is given a
``heartbeat`` instead: a thread rewrites its ``running`` status every
:data:`HEARTBEAT_SECONDS`, so that one killed without warning (SIGKILL) still records the time
it ran. The export at the end of a run has one too (:func:`status_heartbeat`): it writes its
files into hidden staging folders for minutes (a 256^3 density grid, a turntable on a CPU), and
a ``running`` status that none of the run's files refreshed for 10 minutes is what ``dreamtext
view`` shows as "no change for N min".
``phase`` is the stage the run is in, or for an ended run the stage it ended in.
The block's last write holds Ctrl-C and SIGTERM back until it is whole
(:func:`~dreamtext.interrupts.signals_held`): a second signal would leave ``running`` behind.

An image→3D run's stages before text→3D are tracked the same way, each in a block of its own that
does not finish the run (``finishes=False``: at its end the file says ``running``, and the next
stage takes over): ``--diverse``'s image sampling (``sample``), the CLIP sentence search
(``describe``), the descriptor training (``descriptor``; ``step`` and ``iters`` are then the
descriptor's). ``state`` is that stage's: an image run that failed in its descriptor training
reads ``failed`` with ``phase: "descriptor"``. ``dreamtext describe`` alone is a run of that one
stage: ``running`` in phase ``describe``, then ``finished`` (or ``failed``, ``interrupted``) in
it, ``step`` and ``iters`` 0; an image→3D run that reuses its sentence counts its time.

``seconds`` is the stage's time over all its attempts: a resumed stage (one that starts past step
0) adds its own to the ``seconds`` its status.json held, a stage that starts at step 0 counts from
0. ``started`` is when this attempt started; ``gpu_mem_mib`` is the peak reserved CUDA memory of
the attempt, ``null`` off CUDA.

What the whole run cost, every stage and attempt: ``stages`` has each stage's ``seconds`` and its
peak ``gpu_mem_mib`` over its attempts (stages are ``sample``, ``describe``, ``descriptor`` and
``train``, which includes its export; a text→3D run has only ``train``); ``total_seconds`` is
their sum and ``peak_gpu_mem_mib`` their largest. A stage that runs again from its start (an
image run's text→3D with ``--overwrite``) replaces its own record and drops the later stages'.

``host`` and ``pid`` name the process that wrote the file. A run that another live process of
this machine is running (``running`` with its ``pid``) is refused by :func:`track_status`, and
by the commands before they load anything (:func:`check_not_running`); a ``running`` whose process
is gone was killed without warning (SIGKILL), and the viewer says so.

A caller of ``train`` that must be able to stop a run (``dreamtext batch``, whose lock on a
workspace can be taken over) registers a check with :func:`guard_run`; every status update calls
it, and a check that raises :class:`RunTakenOver` stops the run without writing ``status.json``
again (the workspace is another worker's now). A stage without status updates (the sentence
search) calls the checks itself (:func:`check_guards`) between its pieces of work.
"""

from __future__ import annotations

import errno
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import torch

from dreamtext.checkpoint import (
    atomic_write_bytes,
    can_resume,
    checkpoint_step,
    last_checkpoint,
    write_whole,
)
from dreamtext.errors import UNREADABLE_JSON, DreamtextError, WorkspaceInUse, check_a_file
from dreamtext.inputs import RUN_STATUS
from dreamtext.interrupts import TrainingInterrupted, after_a_stop, signals_held
from dreamtext.processes import (
    claim_workspace,
    folder_inode,
    now_iso,
    run_alive,
    same_process,
    this_process,
    workspace_holder,
)
from dreamtext.runfiles import STATES as STATES  # re-exported
from dreamtext.runfiles import check_not_running, read_status, recorded_step, running_elsewhere

STATUS = RUN_STATUS  # named in dreamtext.inputs, whose checks before torch read it too
PHASES = ("sample", "describe", "descriptor", "train", "export")
# The phases a tracker starts in: a run's stages (``train`` goes on into ``export``).
STAGES = PHASES[:-1]
# How often a stage without steps (a sentence search, image sampling) rewrites its ``running``
# status: a search stopped without warning then records its time to within this.
HEARTBEAT_SECONDS = 10.0
# The meshes an export writes (any of them, by --formats), under the workspace's mesh/.
MESH_FILES = ("mesh.glb", "mesh.obj", "mesh.ply")


class RunTakenOver(Exception):
    """Raised by a :func:`guard_run` check when another worker has taken the run's workspace
    over: the run stops at once, and leaves ``status.json`` to the new holder."""


def error_line(error: BaseException) -> str:
    """One line for a failed run: a user error's message, else ``Type: first line``."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, DreamtextError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


# A disk that refuses a new file for want of space (the temp file of an atomic write).
FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def write_status(workspace: str | Path, status: dict[str, Any]) -> None:
    """Write ``status`` to ``workspace/status.json`` atomically (a temp file renamed into place)."""
    text = json.dumps(status, indent=2) + "\n"
    atomic_write_bytes(Path(workspace) / STATUS, lambda f: f.write(text.encode("utf-8")))


def write_last_status(workspace: str | Path, status: dict[str, Any]) -> None:
    """:func:`write_status` for a run's last write (``failed``, ``interrupted``), which a full
    disk (or quota) must not lose: it refuses the atomic write's temp file, and status.json
    stayed ``running``, which the viewer showed as a process killed without warning. Then
    status.json is overwritten in the disk space it holds already (:func:`overwrite_in_place`);
    the full disk's error is raised only where that does not fit."""
    try:
        write_status(workspace, status)
    except OSError as error:
        if error.errno not in FULL_DISK_ERRNOS:
            raise
        compact = json.dumps(status, separators=(",", ":")) + "\n"
        if not overwrite_in_place(Path(workspace) / STATUS, compact.encode("utf-8")):
            raise


def overwrite_in_place(path: Path, data: bytes) -> bool:
    """Overwrite the file at ``path`` with ``data`` where ``data`` fits in the disk blocks the
    file holds (``st_blocks`` × 512 bytes), which a full disk does not refuse: no block is
    allocated. Returns whether it wrote; ``False`` where ``data`` is larger, the file is gone or
    the write is refused.

    Not atomic, so made as short and as whole as it can be: ``data`` (JSON) is padded with
    spaces to the old file's length, so that the file is whole the moment the one write ends (no
    truncation after it, which left the new record followed by the old one's tail); a write
    refused part way (a copy-on-write file system allocates even to overwrite) writes the old
    record back, so status.json is the old one or the new one, whole. A reader that comes during
    the write re-reads it (:func:`dreamtext.processes.read_status_json`)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        old = _read_all(fd)
        if len(data) > os.fstat(fd).st_blocks * 512:
            return False
        padded = data + b" " * (len(old) - len(data))
        try:
            _write_at_start(fd, padded, path)
        except OSError:
            with suppress(OSError):  # it allocates too: the file stays torn, as before
                _write_at_start(fd, old, path)
                os.ftruncate(fd, len(old))  # what the new record wrote past the old one's end
            return False
        os.fsync(fd)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def _read_all(fd: int) -> bytes:
    """The whole file open as ``fd``, from its start."""
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 16, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _write_at_start(fd: int, data: bytes, path: Path) -> None:
    """Write ``data`` over the start of the file open as ``fd`` (:func:`write_whole`)."""
    os.lseek(fd, 0, os.SEEK_SET)
    write_whole(lambda rest: os.write(fd, rest), data, path)


def run_finished(workspace: str | Path, iters: int, needs_mesh: bool = False) -> bool:
    """Whether the run in ``workspace`` finished (trained and exported) at ``iters`` steps or more.

    ``status.json`` says so when there is one; with ``needs_mesh`` (the run asked of it exports
    one) a mesh (:data:`MESH_FILES`) must be there too, for a run trained with ``--no-export``
    finished without one, unless it has no checkpoint left to export it from (its checkpoints
    were removed to save space: resuming would train it again from scratch). A run from before
    status.json (the old ``scripts/batch.sh``) counts as finished when ``checkpoints/last.pt``
    reached both ``iters`` and the run's own ``iters`` (``config.json``) and ``mesh/mesh.glb`` is
    there.
    """
    workspace = Path(workspace)
    status = read_status(workspace)
    if status is not None:
        step = status.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            return False  # another tool's file, or one edited by hand: no step it finished at
        if needs_mesh and not has_mesh(workspace, step) and can_resume(workspace):
            return False
        return status["state"] == "finished" and step >= iters
    if (workspace / STATUS).exists() or not (workspace / "mesh" / "mesh.glb").is_file():
        return False
    try:
        own_iters = json.loads((workspace / "config.json").read_text(encoding="utf-8"))["iters"]
    except (OSError, *UNREADABLE_JSON, KeyError, TypeError):
        return False
    step = saved_step(workspace)
    return step is not None and isinstance(own_iters, int) and step >= max(own_iters, iters)


def has_mesh(workspace: str | Path, step: Any = None) -> bool:
    """Whether the run's export wrote a mesh (any of :data:`MESH_FILES`); with ``step`` (the
    run's, an ``int``), one of that step or later, as its ``mesh/mesh.json`` says where it says:
    a finished run continued with ``--no-export`` keeps the mesh of its earlier end."""
    mesh = Path(workspace) / "mesh"
    if not any((mesh / name).is_file() for name in MESH_FILES):
        return False
    try:
        exported = json.loads((mesh / "mesh.json").read_text(encoding="utf-8")).get("step")
    except (OSError, *UNREADABLE_JSON, AttributeError):
        return True  # an export from before mesh.json, or one cut short: its step is not known
    numbers = all(isinstance(n, int) and not isinstance(n, bool) for n in (step, exported))
    return not numbers or exported >= step


def finish_cut_export(workspace: str | Path, step: int) -> bool:
    """After ``dreamtext export`` of ``step``: a run whose own export at its end was cut short at
    that step (``status.json`` ``interrupted`` in phase ``export``, or ``running`` there with its
    process gone from this machine: SIGKILL) is finished now, as README's "``--resume`` (or
    ``dreamtext export``) finishes it" says; it read interrupted in the viewer with its mesh
    there, and a batch rerun exported it again. Returns whether it rewrote the status (the rest
    of it kept). A run that another machine's process may still be exporting is left alone.

    Written under the workspace's lock (:func:`~dreamtext.processes.claim_workspace`), as every
    writer of status.json does, so that a holder of the lock can tell a temp file of status.json
    for a killed writer's; a run that holds it now (one that started meanwhile) keeps its own."""
    if not _cut_export(read_status(workspace), step, workspace):
        return False
    with ExitStack() as held:
        try:
            held.enter_context(claim_workspace(workspace))
        except WorkspaceInUse:
            return False
        status = read_status(workspace)
        if not _cut_export(status, step, workspace):
            return False
        finished = {"state": "finished", "error": None, "updated": now_iso()}
        write_status(workspace, {**status, **finished})
    return True


def _cut_export(status: dict[str, Any] | None, step: int, workspace: str | Path) -> bool:
    """Whether ``status`` (``workspace``'s) is of a run whose export at ``step`` was cut short
    (:func:`finish_cut_export`); one of a twin machine whose clock runs behind is not
    (:func:`~dreamtext.processes.run_alive`)."""
    if status is None or status.get("phase") != "export" or status.get("step") != step:
        return False
    return status["state"] == "interrupted" or (
        status["state"] == "running" and run_alive(status, workspace) is False
    )


def saved_step(workspace: str | Path) -> int | None:
    """The step of ``checkpoints/last.pt``, or ``None`` without a readable one: its save's
    record where that is of this very file (:func:`~dreamtext.runfiles.recorded_step`), else
    the checkpoint's own (a torch load: 20-50 ms each, for every interrupted line of a
    ``batch --status``)."""
    step = recorded_step(workspace)
    return step if step is not None else checkpoint_step(last_checkpoint(Path(workspace)))


def live_run(workspace: str | Path) -> tuple[int, dict[str, Any] | None] | None:
    """Another live process of this machine running a run in ``workspace``: its pid and the
    ``status.json`` that says so (:func:`running_elsewhere`), or ``None`` for the status while
    the run holds the workspace's lock but has not written one yet (it still loads:
    :func:`~dreamtext.processes.workspace_holder`). ``None`` when no such process runs."""
    status = read_status(workspace)
    pid = running_elsewhere(status, workspace)
    if pid is not None:
        return pid, status
    holder = workspace_holder(workspace)
    return None if holder is None else (holder, None)


def peak_gpu_mib(device: torch.device) -> float | None:
    """Peak reserved CUDA memory since the last reset, in MiB; ``None`` off CUDA."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_reserved(device) / 2**20, 1)


def _key(workspace: str | Path) -> str:
    return os.path.abspath(workspace)


class StatusTracker:
    """Writes one run attempt's ``status.json``; see :func:`track_status`. ``earlier_seconds``:
    the time of the run's earlier attempts, when this one resumes it. ``phase``: the stage it
    starts in (one of :data:`PHASES`)."""

    def __init__(
        self,
        workspace: str | Path,
        iters: int,
        step: Callable[[], int],
        device: torch.device,
        phase: str = "train",
    ) -> None:
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        self.workspace = Path(workspace)
        self.iters = int(iters)
        self.step = step
        self.device = device
        self.phase = phase
        self.stage = phase
        self.started, self.start = now_iso(), time.perf_counter()
        before = read_status(self.workspace)
        # A resumed stage (past step 0) goes on from the attempts of that stage.
        resumed = int(step()) > 0 and _stage_of((before or {}).get("phase")) == self.stage
        earlier = before if resumed else None
        self.earlier_seconds = _finite((earlier or {}).get("seconds")) or 0.0
        # The stage's peak over all its attempts (its stages entry), not the last attempt's
        # alone (gpu_mem_mib): a third attempt forgot the first's.
        stage_before = ((earlier or {}).get("stages") or {}).get(self.stage)
        peaks = [
            _finite((earlier or {}).get("gpu_mem_mib")),
            _finite(stage_before.get("gpu_mem_mib")) if isinstance(stage_before, dict) else None,
        ]
        known = [peak for peak in peaks if peak is not None]
        self.earlier_peak = max(known) if known else None
        self.earlier_stages = _earlier_stages(before, self.stage)
        self._written: tuple[int, str] | None = None
        self._writing = threading.Lock()  # the heartbeat's thread writes too

    def write(
        self,
        state: str,
        error: str | None = None,
        step: int | None = None,
        saved_step: int | None = None,
    ) -> None:
        """Write ``state`` at ``step``, by default the run's (``self.step()``); ``failed`` with
        ``saved_step``, the step of the checkpoint a resume goes on from (``None``: none known).
        A run's end (``failed``, ``interrupted``) is written on a full disk too where it fits
        (:func:`write_last_status`)."""
        with self._writing:
            self._write(state, error, step, saved_step)

    def _write(
        self, state: str, error: str | None, step: int | None = None, saved_step: int | None = None
    ) -> None:
        step = int(self.step()) if step is None else step
        status = {
            "state": state,
            "step": step,
            "iters": self.iters,
            "started": self.started,
            "updated": now_iso(),
            "error": error,
            "seconds": round(self.earlier_seconds + time.perf_counter() - self.start, 3),
            "gpu_mem_mib": peak_gpu_mib(self.device),
            "phase": self.phase,
            **this_process(),
            # Which folder this is: a copy made while the run runs carries this file, and the
            # viewer tells it from the run's own folder (processes.copied_folder).
            "folder_inode": folder_inode(self.workspace),
            **({"saved_step": saved_step} if state == "failed" else {}),
        }
        peak = status["gpu_mem_mib"]
        if self.earlier_peak is not None:
            peak = max(peak or 0.0, self.earlier_peak)
        stages = {
            **self.earlier_stages,
            self.stage: {"seconds": status["seconds"], "gpu_mem_mib": peak},
        }
        write = write_last_status if state in ("failed", "interrupted") else write_status
        write(self.workspace, {**status, **_whole_run(stages)})
        self._written = (step, self.phase)

    def run_guards(self) -> None:
        """Call the checks :func:`guard_run` registered for the workspace (they raise to stop)."""
        check_guards(self.workspace)

    def update(self, phase: str | None = None) -> None:
        """Run the workspace's guards, then rewrite ``running`` with the current step, time and
        memory (and ``phase`` when given). Nothing is written when neither the step nor the phase
        changed since the last write, so a checkpoint on a log line's step costs no second write."""
        self.run_guards()
        if phase is not None:
            if phase not in PHASES:
                raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
            self.phase = phase
        if self._written != (int(self.step()), self.phase):
            self.write("running")


@contextmanager
def _heartbeat(tracker: StatusTracker, every: float | None) -> Iterator[list[Exception]]:
    """Rewrite ``tracker``'s ``running`` status every ``every`` seconds from a thread while
    inside the block (nothing when ``every`` is ``None``). The thread stops at the block's end,
    before the block's last status is written, and for good once a guard of the workspace
    (:func:`guard_run`) raises (the workspace is another worker's) or a write fails (a full
    disk: the block's own last write says so). Yields the list that holds what a guard raised
    in the thread, for :func:`track_status` to raise in the main thread at the block's end."""
    lost: list[Exception] = []
    if every is None:
        yield lost
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            try:
                tracker.run_guards()
            except Exception as error:  # the block's end raises it in the main thread
                lost.append(error)
                return
            try:
                tracker.write("running")
            except Exception:  # the main thread's next write reports a failed one
                return

    thread = threading.Thread(target=beat, name="dreamtext-status-heartbeat", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        # A second Ctrl-C / SIGTERM must not cut this wait short: a beat still under way would
        # then write "running" after the block's last status. It is delivered after the wait.
        with signals_held():
            thread.join()


def _finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else ``None``."""
    valid = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if valid and math.isfinite(value) else None


def _stage_of(phase: Any) -> str:
    """The stage a status.json's ``phase`` belongs to (``export`` is text→3D's, ``train``)."""
    return phase if phase in STAGES else "train"


def _whole_run(stages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """status.json's whole-run figures of ``stages``: themselves, ``total_seconds`` (their sum)
    and ``peak_gpu_mem_mib`` (their largest, ``null`` when none was measured)."""
    peaks = [v["gpu_mem_mib"] for v in stages.values() if v["gpu_mem_mib"] is not None]
    return {
        "stages": stages,
        "total_seconds": round(sum(v["seconds"] for v in stages.values()), 3),
        "peak_gpu_mem_mib": max(peaks) if peaks else None,
    }


def restart_stage(workspace: str | Path, stage: str) -> None:
    """Rewrite ``status.json`` for ``stage`` run again from its start (an image run's text→3D
    with ``--overwrite``): it keeps the stages before ``stage`` (:func:`_earlier_stages`) and
    says ``running`` in the last of them, as between two stages of a first run, so the old
    attempt's ``finished`` no longer counts. Without earlier stages the file is removed."""
    path = Path(workspace) / STATUS
    earlier = _earlier_stages(read_status(workspace), stage)
    if not earlier:
        path.unlink(missing_ok=True)
        return
    phase = max(earlier, key=PHASES.index)
    status = {
        "state": "running",
        "step": 0,
        "iters": 0,
        "started": now_iso(),
        "updated": now_iso(),
        "error": None,
        "seconds": earlier[phase]["seconds"],
        "gpu_mem_mib": earlier[phase]["gpu_mem_mib"],
        "phase": phase,
        **this_process(),
        "folder_inode": folder_inode(workspace),
    }
    write_status(workspace, {**status, **_whole_run(earlier)})


def _earlier_stages(earlier: dict[str, Any] | None, stage: str) -> dict[str, dict[str, Any]]:
    """The ``stages`` of an earlier status.json that an attempt at ``stage`` keeps: the stages
    before it (an image run's sentence search and descriptor, before its text→3D). Its own
    record the tracker writes anew (a resumed stage adds the earlier attempts' time to it); the
    stages after it are dropped, as a stage that runs again makes them anew. A status.json from
    before ``stages`` were recorded gives its one stage (``phase``'s)."""
    if earlier is None:
        return {}
    recorded = earlier.get("stages")
    if not isinstance(recorded, dict):
        recorded = {_stage_of(earlier.get("phase")): earlier}
    kept = {}
    for name, figures in recorded.items():
        if name in STAGES and PHASES.index(name) < PHASES.index(stage):
            seconds = _finite(figures.get("seconds")) if isinstance(figures, dict) else None
            if seconds is not None:
                kept[name] = {
                    "seconds": seconds,
                    "gpu_mem_mib": _finite(figures.get("gpu_mem_mib")),
                }
    return kept


_ACTIVE: dict[str, StatusTracker] = {}
_GUARDS: dict[str, list[Callable[[], None]]] = {}


def check_guards(workspace: str | Path) -> None:
    """Call the checks :func:`guard_run` registered for a run in ``workspace``; one raises
    :class:`RunTakenOver` when another worker has taken it over. A stage without steps (the
    sentence search) calls this between its pieces of work, to stop before it writes into a
    workspace that is no longer its own."""
    for check in list(_GUARDS.get(_key(workspace), ())):
        check()


@contextmanager
def ends_between_stages(workspace: str | Path) -> Iterator[None]:
    """Around a run of several stages (image→3D): a Ctrl-C / SIGTERM or an error that lands
    between two of them (the next one loading its model or checking its settings), where no
    stage's :func:`track_status` records it, leaves ``status.json`` ``interrupted`` (an error a
    library made of a stop too: :func:`~dreamtext.interrupts.after_a_stop`), or
    ``failed`` with :func:`error_line`, instead of the last stage's ``running`` (which the viewer
    reads as a process killed without warning). A status.json of another process, or of a run
    that ended, is left as it is, and so is a run another worker took over."""
    try:
        yield
    except RunTakenOver:
        raise
    except (KeyboardInterrupt, Exception) as error:
        status = read_status(workspace)
        if same_process(status, this_process()) and status["state"] == "running":
            ended = (
                {"state": "interrupted"}
                if isinstance(error, TrainingInterrupted) or after_a_stop(error)
                else {"state": "failed", "error": error_line(error)}
            )
            with signals_held(drop=True):
                write_last_status(workspace, {**status, **ended, "updated": now_iso()})
        raise


def update_status(workspace: str | Path, phase: str | None = None) -> None:
    """:meth:`StatusTracker.update` of the run tracked in ``workspace``; nothing when none is."""
    tracker = _ACTIVE.get(_key(workspace))
    if tracker is not None:
        tracker.update(phase)


def tracked_phase(workspace: str | Path) -> str | None:
    """The phase of the run tracked in ``workspace`` (:func:`update_status`'s), which its
    ``interrupted`` status records; ``None`` when none is tracked."""
    tracker = _ACTIVE.get(_key(workspace))
    return None if tracker is None else tracker.phase


@contextmanager
def guard_run(workspace: str | Path, check: Callable[[], None]) -> Iterator[None]:
    """Call ``check()`` at every status update of a run in ``workspace`` while inside the block;
    it raises (:class:`RunTakenOver`) to stop the run."""
    key = _key(workspace)
    _GUARDS.setdefault(key, []).append(check)
    try:
        yield
    finally:
        _GUARDS[key].remove(check)
        if not _GUARDS[key]:
            del _GUARDS[key]


@contextmanager
def status_heartbeat(workspace: str | Path) -> Iterator[Callable[[], None]]:
    """Rewrite the ``running`` status of the run tracked in ``workspace`` every
    :data:`HEARTBEAT_SECONDS` while inside the block, for work of the run that reaches no
    :func:`update_status` for minutes (its export). Yields a check for that work to call on the
    way: it raises what a guard of the workspace (:func:`guard_run`) raised in the heartbeat's
    thread (the workspace is another worker's now); the block's end raises it too. Nothing is
    written, and the check passes, when no run is tracked in ``workspace``."""
    tracker = _ACTIVE.get(_key(workspace))
    if tracker is None:
        yield lambda: None
        return
    with _heartbeat(tracker, HEARTBEAT_SECONDS) as lost:

        def still_ours() -> None:
            if lost:
                raise lost[0]

        yield still_ours
    still_ours()


@contextmanager
def track_status(
    workspace: str | Path,
    iters: int,
    step: Callable[[], int],
    device: torch.device,
    interrupted: tuple[type[BaseException], ...] = (KeyboardInterrupt,),
    phase: str = "train",
    finishes: bool = True,
    heartbeat: float | None = None,
    saved: Callable[[], int] | None = None,
) -> Iterator[StatusTracker]:
    """Keep ``workspace/status.json`` up to date around a run; ``step()`` reads the run's step.

    Yields the :class:`StatusTracker`, which :func:`update_status` also finds by the workspace.
    Exceptions pass through: those in ``interrupted`` are recorded as ``interrupted``,
    :class:`RunTakenOver` not at all, anything else as ``failed`` with :func:`error_line`.
    ``phase``: the stage the block starts in. ``finishes``: whether the block's end finishes the
    run (text→3D and its export); a stage that another follows (``sample``, ``describe``,
    ``descriptor``) ends it ``running``. ``heartbeat``: for a stage that calls no
    :func:`update_status`, rewrite ``running`` every so many seconds (:func:`_heartbeat`).
    ``saved()``: the step of the checkpoint a rerun goes on from (0: none), which ``interrupted``
    records as its step (a second Ctrl-C stops at once, before the checkpoint of the step it cut
    is saved, and ``step()`` would put status.json ahead of that checkpoint) and ``failed`` as
    its ``saved_step`` beside the step it failed at.
    """
    status = Path(workspace) / STATUS
    check_a_file(status, "a run's status")  # its first write: a traceback
    check_not_running(workspace)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    tracker = StatusTracker(workspace, iters, step, device, phase)
    key = _key(workspace)
    tracker.run_guards()
    tracker.write("running")
    _ACTIVE[key] = tracker
    lost: list[Exception] = []
    try:
        with _heartbeat(tracker, heartbeat) as lost:
            yield tracker
    except RunTakenOver:
        raise
    except interrupted:
        if not lost:  # a workspace taken over is the new holder's to record
            # A second Ctrl-C / SIGTERM must not cut this write short (status.json would stay
            # "running"); the run is stopping for the first already, so it is dropped. A full
            # disk that refuses it even in place (write_last_status) does not replace the
            # interrupt with its error: that said "pick a folder you can write (--workspace)",
            # exit 2, and not where the run is saved; the resume names a disk still full.
            with signals_held(drop=True), suppress(OSError):
                tracker.write("interrupted", step=None if saved is None else int(saved()))
        raise
    except Exception as error:
        if not lost and after_a_stop(error):
            # An error made of a stop's KeyboardInterrupt by a library it landed in: the CLI
            # says "interrupted" of it (run_command), which status.json said "failed".
            with signals_held(drop=True), suppress(OSError):
                tracker.write("interrupted", step=None if saved is None else int(saved()))
        elif not lost:
            # A full disk fails this write too: its error replaced the run's, whose line said
            # "pick a folder you can write (--workspace)" where the run is saved and resumes.
            # The run's error stands. status.json is overwritten in place where it fits
            # (write_last_status); else it stays "running", which the viewer shows as ended
            # without a record of how.
            # Its step is where it failed; saved_step where a resume goes on from (0: none).
            saved_step = None if saved is None else int(saved()) or None
            with signals_held(), suppress(OSError):
                tracker.write("failed", error_line(error), saved_step=saved_step)
        raise
    finally:
        if _ACTIVE.get(key) is tracker:
            del _ACTIVE[key]
    if lost:  # the heartbeat's guard found the workspace another worker's: stop here
        raise lost[0]
    with signals_held():  # a signal meanwhile interrupts once the state is written whole
        tracker.write("finished" if finishes else "running")
