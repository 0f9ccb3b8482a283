"""Run one ``dreamtext`` command in this process, then print the peak GPU memory of its parts.

    python benchmarks/phase_peaks.py text "a red cube" --model builtin:shapes --device cuda \\
        --iters 100 --no-export --workspace /tmp/run
    python benchmarks/phase_peaks.py export --workspace /tmp/run --no-video --device cuda

The command runs as ``dreamtext ARGS`` would (``dreamtext.__main__.run``: same handlers, same
allocator settings). Afterwards one line gives, in MiB of reserved CUDA memory (torch's
``max_memory_reserved``, which leaves out the CUDA context that nvidia-smi counts):

- ``steps``: the training steps' peak, the largest ``gpu_mem_mib`` of the lines the command
  added to the workspace's ``log.jsonl`` (since the training loop started; a preview every
  ``preview_every`` steps falls in it). A resume's log keeps its earlier attempts' lines, whose
  peak was another process's: they are left out. A command that trains nothing (``export``)
  reads the whole log;
- ``run``: ``status.json``'s ``gpu_mem_mib`` for the last attempt, written when it ended: the
  steps, the final preview and, unless ``--no-export``, the export;
- ``process``: this process's peak since the statistics were last reset: for ``text``, from the
  training loop's start on (as ``run``); for ``export``, its whole work, loading included.

Issue 9's target is that no part of a run (previews, export) peaks above its steps. Off CUDA, or
where a file is missing, a figure is ``-``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def log_lines(workspace: Path) -> list[str]:
    """The lines of the workspace's ``log.jsonl`` (none where it has none)."""
    log = workspace / "log.jsonl"
    return log.read_text().splitlines() if log.is_file() else []


def added_lines(before: list[str], after: list[str]) -> list[str]:
    """The lines of ``after`` that a command added to a log that held ``before``: those past the
    lines both begin with (a resume first drops the lines past its checkpoint's step, then
    appends its own); all of ``after`` where it added none (an export trains nothing)."""
    kept = 0
    while kept < min(len(before), len(after)) and before[kept] == after[kept]:
        kept += 1
    return after[kept:] or after


def recorded_peaks(workspace: Path, before: list[str] | None = None) -> dict[str, float | None]:
    """``steps`` (the largest ``gpu_mem_mib`` of the log.jsonl lines added since it held
    ``before``, :func:`added_lines`; of all of them without ``before``) and ``run``
    (status.json's), in MiB; ``None`` where the workspace has no such figure."""
    lines = log_lines(workspace)
    if before is not None:
        lines = added_lines(before, lines)
    figures = [json.loads(line).get("gpu_mem_mib") for line in lines]
    figures = [figure for figure in figures if figure is not None]
    steps = max(figures) if figures else None
    status = workspace / "status.json"
    run = json.loads(status.read_text()).get("gpu_mem_mib") if status.is_file() else None
    return {"steps": steps, "run": run}


def peaks_line(peaks: dict[str, float | None]) -> str:
    """``phase peaks (MiB reserved): steps 900, run 1400, process 1400`` (``-``: none)."""
    shown = ", ".join(
        f"{name} {'-' if value is None else f'{value:.0f}'}" for name, value in peaks.items()
    )
    return f"phase peaks (MiB reserved): {shown}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from dreamtext.cli import build_parser

    args = build_parser().parse_args(argv)  # a bad command line exits 2 before anything runs
    import torch

    from dreamtext.__main__ import run

    workspace = getattr(args, "workspace", None)
    before = log_lines(Path(workspace)) if workspace else []
    sys.argv = ["dreamtext", *argv]
    code = run()
    peaks = recorded_peaks(Path(workspace), before) if workspace else {"steps": None, "run": None}
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    peaks["process"] = torch.cuda.max_memory_reserved() / 2**20 if cuda else None
    print(peaks_line(peaks), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
