"""``dreamtext batch LIST --status``: where every line of a list stands, across all its workers.

    prompts file ──► entries and their folders (as the batch names them)
        each entry: its config (the batch's flags over its run's own, as the batch resolves it)
            ──► finished? its lock held by a live worker? status.json? a checkpoint? batch.jsonl?
    ──► one state per line, the counts, and each unfinished line's own command

Read-only: it loads no model, claims no lock and writes nothing, so it can be run beside the
workers (a login node, another user's results). A line's state comes from what its run recorded,
judged by the batch's own tests: :func:`~dreamtext.batch.finished_here` with the config the batch
would run it with (a higher ``--iters`` makes a finished line one to continue), a lock whose
holder :meth:`~dreamtext.batch.WorkspaceLock.stale_reason` would leave alone (running), the run's
``status.json``, its checkpoints, and the newest ``batch.jsonl`` record of a line that failed
before its run wrote anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamtext.batch import (
    BATCH_LOG,
    BatchLog,
    BatchOptions,
    Entry,
    WorkspaceLock,
    _relative,
    entry_configs,
    finished_here,
    line_again,
    line_flags,
    lock_path,
    own_run_config,
    read_prompts,
    select_share,
)
from dreamtext.checkpoint import can_resume
from dreamtext.config import TrainConfig, run_owner
from dreamtext.errors import shorten
from dreamtext.inputs import check_root, parse_shard
from dreamtext.processes import run_alive
from dreamtext.runfiles import read_once, read_status, running_elsewhere
from dreamtext.runstatus import run_finished, saved_step

# The states a line can be in, in the order they are counted.
LINE_STATES = ("finished", "running", "interrupted", "to continue", "failed", "not started")


@dataclass(frozen=True)
class LineState:
    """Where one line of the list stands: its ``state`` (one of :data:`LINE_STATES`), what its
    run records that says so (``detail``), and for a line the batch would still train, the
    line's own command that goes on with it (``command``; ``None`` for finished and running)."""

    entry: Entry
    state: str
    detail: str
    command: str | None


def list_status(
    prompts_file: str | Path,
    overrides: dict[str, Any],
    preset: str | None = None,
    config_file: str | Path | Sequence[str | Path] | None = None,
    options: BatchOptions | None = None,
) -> list[LineState]:
    """The state of every line of ``prompts_file`` (of share ``options.shard`` alone where it is
    given; never the SLURM array task's own: a status is of the whole list), with the folders
    and settings the batch of these ``overrides``, ``preset`` and ``config_file`` would use:
    each line's own run's recorded settings under the batch's flags
    (:func:`~dreamtext.batch.own_run_config`). Reads files only."""
    options = options or BatchOptions()
    root = Path(options.root)
    check_root(root)
    with read_once():  # each run's files read once for all the questions asked of them
        entries = read_prompts(prompts_file, root)
        share = select_share(entries, parse_shard(options.shard) if options.shard else None)
        # Read, not trained: the lines' configs share their sections, not each a deep copy.
        configs = entry_configs(share, overrides, preset, config_file, shared=True)
        resolved: dict[str, tuple[TrainConfig, list[str]]] = {}
        configs = [
            own_run_config(e, cfg, overrides, preset, config_file, resolved, shared=True)[0]
            for e, cfg in zip(share, configs, strict=True)
        ]
        log = BatchLog(root / BATCH_LOG, from_start=True)
        claim = WorkspaceLock(root / ".status", options.lock_timeout)  # whose measure of staleness
        return [line_state(e, cfg, claim, log, root) for e, cfg in zip(share, configs, strict=True)]


def line_state(
    entry: Entry, cfg: TrainConfig, claim: WorkspaceLock, log: BatchLog, root: Path
) -> LineState:
    """Where ``entry`` stands with ``cfg``, the config the batch runs it with. In this order:
    failed where the batch fails it before anything (its folder is a file, or holds another
    prompt's run); finished where the batch skips it; running where a worker holds its lock and
    ``claim`` (a worker's claim, with its ``--lock-timeout``) would not take it over, or a live
    process runs it (its ``status.json`` names one of this machine, or of another with no batch
    lock beside it); failed where its ``status.json`` says so; to continue where its run
    finished short of ``cfg`` (a lower ``--iters``, no mesh yet); interrupted where the run is
    there unfinished; failed where its newest ``batch.jsonl`` record failed before its run
    wrote any file (``log``); else not started."""
    workspace = entry.workspace
    finished = finished_here(entry, cfg)
    again = None if finished else line_again(entry, False).strip("`")
    if workspace.exists() and not workspace.is_dir():
        return LineState(entry, "failed", "a file is where its run folder goes", again)
    owner = run_owner(workspace)
    if owner is not None and owner != entry.key:
        what = f"image {owner[1]}" if owner[0] == "image" else f"'{owner[1]}'"
        return LineState(entry, "failed", f"its folder holds a run of {what}: move it away", None)
    if finished:
        return LineState(entry, "finished", "", None)
    status = read_status(workspace)
    stale = None
    try:
        held = WorkspaceLock.read(lock_path(workspace))
    except PermissionError:  # another user's lock (umask 077): claimed, its holder unknown
        return LineState(entry, "running", f"{lock_path(workspace).name} cannot be read", None)
    if held is not None:
        info, age = held
        stale = claim.stale_reason(info, age)
        if stale is None:
            task = f" (SLURM task {info['slurm']})" if info.get("slurm") else ""
            holder = f"claimed by {info.get('host', '?')} pid {info.get('pid', '?')}{task}"
            detail = f"{holder}, refreshed {age:.0f} s ago"
            if (status or {}).get("state") == "running":  # its own, not a stopped one's before it
                detail += f"; {progress(status, cfg.iters)}"
            return LineState(entry, "running", detail, None)
    pid = running_elsewhere(status, workspace)
    state = (status or {}).get("state")
    if pid is not None or (held is None and state == "running" and run_alive(status, workspace)):
        host = "this machine" if pid is not None else (status or {}).get("host", "?")
        where = f"process {status.get('pid')} on {host}"  # type: ignore[union-attr]
        return LineState(entry, "running", f"{where}, {progress(status, cfg.iters)}", None)
    if state == "failed":
        return LineState(entry, "failed", shorten(str(status.get("error") or "failed"), 80), again)
    if owner == entry.key:
        if run_finished(workspace, 0):
            step = (status or {}).get("step")
            detail = (
                f"finished at step {step}, short of --iters {cfg.iters}"
                if not run_finished(workspace, cfg.iters)
                else "trained, without its mesh"
            )
            detail += "" if can_resume(workspace) else "; no checkpoint: trains again"
            return LineState(entry, "to continue", detail, again)
        detail = progress(status, cfg.iters) if status is not None else "no status.json"
        if stale is not None:
            detail += f"; its worker's lock is stale ({stale})"
        elif state == "running":
            detail += f"; its process {status.get('pid')} is gone"  # type: ignore[union-attr]
        if can_resume(workspace):
            step = saved_step(workspace)
            detail += f"; resumes from step {step}" if step is not None else "; resumes"
        else:
            detail += "; no checkpoint: starts again"
        return LineState(entry, "interrupted", detail, again)
    failure = log.failed_since_start(_relative(workspace, root))
    if failure is not None:
        return LineState(entry, "failed", shorten(failure, 80), again)
    return LineState(entry, "not started", "", again)


def progress(status: dict[str, Any] | None, iters: int) -> str:
    """``step 12 of 20 (train)``: how far a run's ``status.json`` says it got, of its own
    ``iters`` (the batch's ``iters`` where it records none)."""
    status = status or {}
    phase = f" ({status['phase']})" if status.get("phase") else ""
    return f"step {status.get('step', '?')} of {status.get('iters', iters)}{phase}"


def status_report(states: Sequence[LineState], list_file: str | Path, root: Path) -> str:
    """The counts by state, then a table of every line that is not finished (line, state,
    folder, what its run records, and the line's own command where the batch would train it).
    The same batch command goes on with all of them; the line's own command, run with its
    other flags, with that line alone."""
    counts = Counter(s.state for s in states)
    said = ", ".join(f"{counts[name]} {name}" for name in LINE_STATES if counts[name])
    n = len(states)
    said = said or "none in this share"  # --shard K/N with more shares than lines
    lines = [f"{list_file}: {n} line{'s' if n != 1 else ''} under {root}: {said}"]
    rows = [
        (str(s.entry.line), s.state, _relative(s.entry.workspace, root), s.detail, s.command or "")
        for s in states
        if s.state != "finished"
    ]
    if rows:
        header = ("line", "state", "folder", "recorded", "its own command")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
        for row in [header, *rows]:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            lines.append("  ".join([*cells, row[-1]]).rstrip())
    kinds = {s.entry.kind: line_flags(s.entry) for s in states if s.command}
    if kinds:
        lines_of = {"image": "an image line", "text": "a text line"}
        flags = " or ".join(
            f"{flags} for {lines_of[kind]}" if len(kinds) > 1 else flags
            for kind, flags in sorted(kinds.items())
        )
        lines.append(
            "the batch command run again goes on with every line that is not finished (a "
            f"finished one is skipped); a line's own command, with {flags}, with that line alone"
        )
    return "\n".join(lines)


def status_exit_code(states: Sequence[LineState]) -> int:
    """0 where every line is finished, else 1."""
    return 0 if all(s.state == "finished" for s in states) else 1


__all__ = ["LINE_STATES", "LineState", "list_status", "status_exit_code", "status_report"]
