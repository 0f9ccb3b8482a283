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
    line_again,
    line_flags,
    lock_path,
    look_at_line,
    own_run_config,
    read_prompts,
    refuses_resume,
    resumed_with_other_settings,
    select_share,
)
from dreamtext.checkpoint import can_resume
from dreamtext.config import TrainConfig, run_owner
from dreamtext.errors import shorten
from dreamtext.inputs import check_root, parse_shard
from dreamtext.processes import run_alive
from dreamtext.runfiles import RUN_STATUS, read_once, read_status
from dreamtext.runstatus import run_finished, saved_step

# The settings a row names of those a line's run resumes with changed, the others counted.
SETTINGS_SHOWN = 3

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
    (:func:`~dreamtext.batch.own_run_config`). A line whose run's ``config.json`` holds what
    this dreamtext refuses is failed, as the batch fails it, the others go on. Reads files
    only."""
    options = options or BatchOptions()
    root = Path(options.root)
    check_root(root)
    with read_once():  # each run's files read once for all the questions asked of them
        entries = read_prompts(prompts_file, root)
        share = select_share(entries, parse_shard(options.shard) if options.shard else None)
        # Read, not trained: the lines' configs share their sections, not each a deep copy.
        fresh = entry_configs(share, overrides, preset, config_file, shared=True)
        resolved: dict[str, tuple[TrainConfig, list[str]]] = {}
        log = BatchLog(root / BATCH_LOG, from_start=True)
        claim = WorkspaceLock(root / ".status", options.lock_timeout)  # whose measure of staleness
        states = []
        for entry, cfg in zip(share, fresh, strict=True):
            cfg, conflicts, refusal = own_run_config(
                entry, cfg, overrides, preset, config_file, resolved, shared=True
            )
            states.append(line_state(entry, cfg, claim, log, root, conflicts, refusal))
        return states


def line_state(
    entry: Entry,
    cfg: TrainConfig,
    claim: WorkspaceLock,
    log: BatchLog,
    root: Path,
    conflicts: Sequence[str] = (),
    refusal: str | None = None,
) -> LineState:
    """Where ``entry`` stands with ``cfg``, the config the batch runs it with. First what a
    worker with ``claim`` (its ``--lock-timeout``) finds there (:func:`look_at_line`, which the
    batch decides by): failed where the batch fails it (its folder is a file, holds another
    prompt's run or an unreadable ``config.json``, or ``refusal``: its run's ``config.json``
    holds what this dreamtext refuses); finished where it skips it; running where a
    worker holds its lock, or another live process runs it. Then by what its run recorded:
    failed where its ``status.json`` says so; to continue where its run finished short of
    ``cfg`` (a lower ``--iters``, no mesh yet); interrupted where the run is there unfinished;
    failed where its newest ``batch.jsonl`` record failed before its run wrote any file
    (``log``); else not started. ``conflicts``: the settings its run fixes that the batch asks
    otherwise (:func:`~dreamtext.batch.own_run_config`), named where the batch refuses the list
    for them (:func:`~dreamtext.batch.refuses_resume`); else the settings it resumes the line
    with changed, which it warns of (:func:`other_settings`)."""
    workspace = entry.workspace
    look = look_at_line(entry, cfg, claim, refusal=refusal)
    if look.refusal is not None:
        return LineState(entry, "failed", look.refusal, None)
    if look.finished:
        return LineState(entry, "finished", "", None)
    status = read_status(workspace)
    if look.holder == {}:  # another user's lock (umask 077): claimed, its holder unknown
        return LineState(entry, "running", f"{lock_path(workspace).name} cannot be read", None)
    if look.holder is not None:
        info = look.holder
        task = f" (SLURM task {info['slurm']})" if info.get("slurm") else ""
        holder = f"claimed by {info.get('host', '?')} pid {info.get('pid', '?')}{task}"
        detail = f"{holder}, refreshed {look.holder_age:.0f} s ago"
        if (status or {}).get("state") == "running":  # its own, not a stopped one's before it
            detail += f"; {progress(status, cfg.iters)}"
        return LineState(entry, "running", detail, None)
    state = (status or {}).get("state")
    if look.in_use is not None:
        doing = f", {progress(status, cfg.iters)}" if state == "running" else ""
        return LineState(entry, "running", f"{look.in_use}{doing}", None)
    settings = (  # refused, or only warned of
        f"; the batch refuses the list for it: {', '.join(conflicts)} (its run keeps them)"
        if refuses_resume(entry, conflicts)
        else other_settings(entry, cfg)
    )
    if state == "failed":
        error = shorten(str(status.get("error") or "failed"), 80)  # type: ignore[union-attr]
        return LineState(entry, "failed", error + settings, own_command(entry))
    if run_owner(workspace) == entry.key:
        if run_finished(workspace, 0):
            step = (status or {}).get("step")
            detail = (
                f"finished at step {step}, short of --iters {cfg.iters}"
                if not run_finished(workspace, cfg.iters)
                else "trained, without its mesh"
            )
            detail += "" if can_resume(workspace) else "; no checkpoint: trains again"
            return LineState(entry, "to continue", detail + settings, own_command(entry))
        if status is not None:
            detail = progress(status, cfg.iters)
        elif (workspace / RUN_STATUS).exists():
            detail = f"{RUN_STATUS} cannot be read (its resume writes it anew)"
        else:
            detail = f"no {RUN_STATUS}"
        if look.stale is not None:
            detail += f"; its worker's lock is stale ({look.stale})"
        elif state == "running":
            pid, alive = status.get("pid"), run_alive(status, workspace)  # type: ignore[union-attr]
            if alive is False:
                detail += f"; its process {pid} is gone"
            elif isinstance(pid, int):  # another machine's, which no lock here says runs
                detail += f"; its process {pid} on {status.get('host', '?')} holds no lock"  # type: ignore[union-attr]
        if can_resume(workspace):
            step = saved_step(workspace)
            detail += f"; resumes from step {step}" if step is not None else "; resumes"
        else:
            detail += "; no checkpoint: starts again"
        return LineState(entry, "interrupted", detail + settings, own_command(entry))
    failure = log.failed_since_start(_relative(workspace, root))
    again = own_command(entry)
    if failure is not None:
        return LineState(entry, "failed", shorten(failure, 80), again)
    return LineState(entry, "not started", "", again)


def other_settings(entry: Entry, cfg: TrainConfig) -> str:
    """``; other settings from its last checkpoint on: lr 0.02 → 0.01``: what the batch warns
    of, and does not refuse, when it resumes the line's run with ``cfg``
    (:func:`~dreamtext.batch.resumed_with_other_settings`), for a row of a line it would resume;
    ``; only exported, so these do not apply: ...`` for a run trained and only exported; the
    first :data:`SETTINGS_SHOWN` settings, the others counted. ``""`` where there are none."""
    changed, exported = resumed_with_other_settings(entry, cfg)
    if not changed:
        return ""
    shown = ", ".join(changed[:SETTINGS_SHOWN])
    if len(changed) > SETTINGS_SHOWN:
        shown += f" and {len(changed) - SETTINGS_SHOWN} more"
    if exported:
        return f"; only exported, so these do not apply: {shown}"
    return f"; other settings from its last checkpoint on: {shown}"


def own_command(entry: Entry) -> str:
    """The line's own command that goes on with ``entry`` alone (:func:`line_again`'s, without
    its backticks), for the table's last column."""
    return line_again(entry, False).strip("`")


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
