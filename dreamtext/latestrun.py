"""Which run ``dreamtext export`` without ``--workspace`` exports: the newest under
``workspace/``, found from the checkpoint files' names and times.

Torch-free, so the CLI finds it before the export's imports (torch: seconds) and its progress
record (:mod:`dreamtext.exportprogress`) shows in ``dreamtext view`` from the start, as for an
export named by ``--workspace``. Only a run whose ``last.pt`` is missing needs a step file read
whole (``dreamtext.checkpoint.newest_whole_step``: torch): the caller passes that check in, and
:func:`newest_run_unread` answers only where it is not needed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from dreamtext.errors import DreamtextError
from dreamtext.inputs import CHECKPOINT_DIR, LAST_CHECKPOINT, RUN_LEARNED_EMBEDS
from dreamtext.runfiles import saved_time

# ``newest_whole_step(folder)``: the newest step file of a checkpoints folder that loads whole,
# and its step; ``None`` when none does.
WholeStep = Callable[[Path], tuple[Path, int] | None]


def step_files(folder: Path, suffix: str = ".pt") -> list[tuple[int, Path]]:
    """``(step, path)`` of every ``step_XXXXXX{suffix}`` in ``folder``, oldest first: the
    checkpoints, or with ``".png"`` a run's previews."""
    found = (
        (int(m[1]), p)
        for p in Path(folder).glob(f"step_*{suffix}")
        if (m := re.fullmatch(rf"step_(\d+){re.escape(suffix)}", p.name))
    )
    return sorted(found)


def descriptors(checkpoints: Path) -> bool:
    """Whether the ``checkpoints/`` folder ``checkpoints`` is an image run's descriptor's
    (``RUN/descriptor/checkpoints``, beside the ``sentence.json`` its describe wrote): the
    stage's learned tokens, not a run of its own to export."""
    folder = checkpoints.parent
    return folder.name == RUN_LEARNED_EMBEDS[0] and (folder / "sentence.json").is_file()


def newest_run(root: Path, newest_whole_step: WholeStep) -> Path:
    """The run under ``root`` whose newest checkpoint was written most recently: its
    ``checkpoints/last.pt`` (dated by its save, :func:`~dreamtext.runfiles.saved_time`: a run
    copied in with ``cp -r`` is not the newest for the copy's time), or, where that is missing
    (deleted by hand, a copy or sync cut short), its newest whole step file, as a resume goes on
    from (``newest_whole_step``), dated by its own time. Such a run's step files are read only
    when one of them is newer than every ``last.pt``."""
    root = Path(root)
    written: dict[Path, float] = {}  # checkpoints/ folder → when its newest checkpoint was
    step_only: dict[Path, float] = {}  # those without last.pt → when their newest step file was
    if root.is_dir():
        for last in root.glob(f"**/{CHECKPOINT_DIR}/{LAST_CHECKPOINT}"):
            # A folder named last.pt is no checkpoint (checkpoint.can_resume says the same).
            if last.is_file() and not descriptors(last.parent):
                written[last.parent] = saved_time(last)
        for step_file in root.glob(f"**/{CHECKPOINT_DIR}/step_*.pt"):
            if (
                step_file.parent not in written
                and step_file.is_file()
                and not descriptors(step_file.parent)
            ):
                mtime = step_file.stat().st_mtime
                step_only[step_file.parent] = max(mtime, step_only.get(step_file.parent, mtime))
    for folder in sorted(step_only, key=step_only.__getitem__, reverse=True):
        if written and step_only[folder] <= max(written.values()):
            break  # no whole step file of these is newer
        whole = newest_whole_step(folder)
        if whole is not None:
            written[folder] = whole[0].stat().st_mtime
    if not written:
        raise DreamtextError(
            f"no trained run under {root}/ (no checkpoints/last.pt): train one with "
            "`dreamtext text PROMPT` or pass --workspace"
        )
    return max(written, key=written.__getitem__).parent


class _NeedsReading(Exception):
    """A step file would have to be read whole to tell the newest run."""


def newest_run_unread(root: Path) -> Path | None:
    """:func:`newest_run`'s answer where it reads no step file (the newest checkpoint under
    ``root`` is a ``last.pt``); ``None`` where it would read one, or finds no run (the export
    finds it, or says why not, after its imports)."""

    def needs_reading(folder: Path) -> None:
        raise _NeedsReading(folder)

    try:
        return newest_run(root, needs_reading)
    except (_NeedsReading, DreamtextError):
        return None


def runs_in(folder: Path) -> list[tuple[float, Path]]:
    """``(time of its newest checkpoint file, run folder)`` of each run directly under
    ``folder`` that holds a checkpoint file: ``last.pt`` or a step file (a run whose ``last.pt``
    was deleted or not copied; not read here, the export of it says whether one is whole)."""
    runs = []
    for checkpoints in sorted(folder.glob(f"*/{CHECKPOINT_DIR}")) if folder.is_dir() else []:
        if descriptors(checkpoints):
            continue
        files = [checkpoints / LAST_CHECKPOINT] + [path for _, path in step_files(checkpoints)]
        times = [path.stat().st_mtime for path in files if path.is_file()]
        if times:
            runs.append((max(times), checkpoints.parent))
    return runs
