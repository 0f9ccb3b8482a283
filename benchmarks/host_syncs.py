"""Host syncs of whole training steps of a real-sized run, counted on the CPU under virtual CUDA,
or on a real GPU by torch's sync debug mode.

    python benchmarks/host_syncs.py                          # default field 64 px, FitFusion 256 px
    python benchmarks/host_syncs.py --configs default-64 --steps 3 --sites
    python benchmarks/host_syncs.py --device cuda --sync-debug --warmup 3 --steps 2

On CUDA every read of a GPU value on the host (``.item()``, ``int()``, ``.tolist()``, ``nonzero``,
a boolean mask, a blocking copy) waits for every queued kernel. ``tests/virtual_cuda.py`` counts
those reads for code run on the CPU with CUDA's device rules (``tests/sync_sites.py`` files them
under the dreamtext line that made them); this script runs :func:`dreamtext.trainer.train_step`
with the default field and renderer (on the torch hash grid: Triton's kernels would run in its
slow interpreter) and the built-in prior (``builtin:shapes``: no Stable Diffusion needed), and
prints for each step its syncs, those of ``samplers.py``, and the occupancy marcher's rounds:

* ``default-64``: the default config at 64 px; ``fitfusion-256``: ``--preset fitfusion`` (256 px).
  The built-in prior's preset (its small field, the dense sampler, 32 px) is put back to the
  defaults, so both render with the occupancy marcher, as an SD run does; batch size 1.
* shading ``albedo``, or ``lambertian`` (a shaded step: normals, lights).
* grid ``occupied``: every cell occupied, as in a run's first ``grid_update_every`` (16) steps;
  ``refreshed``: the occupancy grid refreshed once from the fresh field before the first step.

The grid's refresh every 16 steps (its cell jitter) runs as the trainer runs it, after the step,
and is not counted. The optimiser runs as on the CPU (its per-tensor loop).

``--device cuda --sync-debug`` runs the same steps on a real GPU (``benchmarks/gpu_session.sh
syncdebug``), after ``--warmup`` uncounted steps, under ``torch.cuda.set_sync_debug_mode("warn")``:
torch then warns at each call that makes the host wait (its ``memcpy_and_sync``, a stream or
device synchronise), and each warning is filed under the dreamtext line on the stack when it was
raised, with that line's text, so a GPU session confirms or refutes the virtual counts (that
``nonzero_static`` does not wait, for one). ``--device cpu --sync-debug`` runs the same code on
the CPU, where nothing warns: a check that it runs.
On 2 shared cores a 64 px step took 2-30 s, a 256 px one 45-310 s, at about 6 GB peak RSS
(benchmarks/RESULTS.md, "Host syncs of real-sized training steps").
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import linecache
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from dreamtext.inputs import spin_briefly  # noqa: E402

# Before torch loads libgomp, which reads it once: the CLI's short spin count (README, Speed).
spin_briefly(os.environ)
import torch  # noqa: E402
from sync_sites import PACKAGE, by_file, march_rounds, sync_sites  # noqa: E402
from virtual_cuda import virtual_cuda  # noqa: E402

from dreamtext import trainer  # noqa: E402
from dreamtext.config import resolve_config  # noqa: E402
from dreamtext.field import FieldConfig  # noqa: E402
from dreamtext.renderer import RenderConfig  # noqa: E402

CONFIGS: dict[str, tuple[str | None, int]] = {
    "default-64": (None, 64),
    "fitfusion-256": ("fitfusion", 256),
}
SHADINGS = ("albedo", "lambertian")
GRIDS = ("occupied", "refreshed")
DEVICES = ("virtual-cuda", "cuda", "cpu")
# What torch's sync debug mode warns (c10/cuda: warn_or_error_on_sync).
SYNC_WARNING = "called a synchronizing CUDA operation"


@dataclasses.dataclass
class StepCount:
    """What one counted training step made the host wait for."""

    config: str
    shading: str
    grid: str
    step: int
    syncs: Counter
    sites: Counter
    rounds: int
    seconds: float
    loss: float

    @property
    def total(self) -> int:
        return sum(self.syncs.values())


def run_config(name: str, shading: str, workspace: Path, device: str = "cuda") -> dict:
    """The overrides of config ``name`` with ``shading`` on ``device`` (``"cuda"``: a real or a
    virtual GPU; module docstring)."""
    if shading not in SHADINGS:
        raise ValueError(f"shading must be one of {SHADINGS}, got {shading!r}")
    _, size = CONFIGS[name]
    shaded = {} if shading == "albedo" else {"albedo_epochs": 0, "shading_probs": [0.0, 0.0, 1.0]}
    return {
        "prompt": "a red cube",
        "workspace": str(workspace),
        "device": device,
        "h": size,
        "w": size,
        "batch_size": 1,
        "export": False,
        "guidance": {"model": "builtin:shapes"},
        "field": {**dataclasses.asdict(FieldConfig()), "encoding": "torch"},
        "render": dataclasses.asdict(RenderConfig()),
        **shaded,
    }


def count_steps(name: str, shading: str, grid: str, steps: int, warmup: int = 0) -> list[StepCount]:
    """``steps`` training steps of config ``name`` on virtual CUDA, each counted, after
    ``warmup`` uncounted ones (see the module docstring)."""
    preset, _ = CONFIGS[name]
    counts = []
    with tempfile.TemporaryDirectory() as tmp, virtual_cuda() as mode:
        cfg = resolve_config(run_config(name, shading, Path(tmp) / "run"), preset=preset)
        run = trainer.build_run(cfg)
        if grid == "refreshed":
            run.renderer.update_occupancy(run.field, 0)
        for _ in range(warmup):
            trainer.train_step(run)
            trainer.refresh_occupancy(run)
        for _ in range(steps):
            mode.syncs.clear()
            start = time.perf_counter()
            with sync_sites(mode) as sites, march_rounds() as rounds:
                record = trainer.train_step(run)
            seconds = time.perf_counter() - start
            trainer.refresh_occupancy(run)  # as the trainer's loop does; not counted
            counts.append(
                StepCount(
                    name, shading, grid, record["step"], Counter(mode.syncs), sites,
                    rounds["rounds"], seconds, record["loss"],
                )
            )  # fmt: skip
    return counts


@contextlib.contextmanager
def sync_warnings(device: torch.device) -> Iterator[Counter[str]]:
    """Inside, on CUDA under ``torch.cuda.set_sync_debug_mode("warn")``, each sync torch warns of
    is counted by the dreamtext line on the stack when it warned (``"samplers.py:412"``; ``"?"``
    outside the package); other warnings are shown as usual. On another device nothing syncs,
    nothing warns and the count stays empty."""
    sites: Counter[str] = Counter()
    show = warnings.showwarning

    def file_it(message, category, filename, lineno, file=None, line=None) -> None:
        if SYNC_WARNING not in str(message):
            show(message, category, filename, lineno, file, line)
            return
        ours = [f for f in traceback.extract_stack() if f.filename.startswith(PACKAGE)]
        sites[f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")  # every sync, not the first one per line
        warnings.showwarning = file_it
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the steps before this one have ended
            torch.cuda.set_sync_debug_mode("warn")
        try:
            yield sites
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
                torch.cuda.synchronize(device)


def debug_steps(
    name: str, shading: str, grid: str, steps: int, warmup: int, device: str
) -> list[StepCount]:
    """``steps`` training steps of config ``name`` on ``device`` (a real GPU: ``"cuda"``), each
    under torch's sync debug mode, after ``warmup`` uncounted ones (module docstring)."""
    preset, _ = CONFIGS[name]
    counts = []
    with tempfile.TemporaryDirectory() as tmp:
        overrides = run_config(name, shading, Path(tmp) / "run", device=device)
        run = trainer.build_run(resolve_config(overrides, preset=preset))
        if grid == "refreshed":
            run.renderer.update_occupancy(run.field, 0)
        for _ in range(warmup):  # CUDA's start, cuDNN's and the allocator's first calls
            trainer.train_step(run)
            trainer.refresh_occupancy(run)
        for _ in range(steps):
            start = time.perf_counter()
            with sync_warnings(run.device) as sites, march_rounds() as rounds:
                record = trainer.train_step(run)
            seconds = time.perf_counter() - start
            trainer.refresh_occupancy(run)
            counts.append(
                StepCount(
                    name, shading, grid, record["step"], Counter({"sync debug": sites.total()}),
                    sites, rounds["rounds"], seconds, record["loss"],
                )
            )  # fmt: skip
    return counts


def site_text(site: str) -> str:
    """The source text of ``"samplers.py:412"``, for a log read without the tree beside it."""
    name, _, line = site.rpartition(":")
    if not name or not line.isdigit():
        return ""
    return linecache.getline(f"{PACKAGE}{name}", int(line)).strip()


def table(counts: list[StepCount]) -> str:
    lines = [
        "| config | shading | grid | step | march rounds | host syncs | samplers.py | other "
        "| step (s) | loss |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in counts:
        sampler = by_file(c.sites)["samplers.py"]
        lines.append(
            f"| {c.config} | {c.shading} | {c.grid} | {c.step} | {c.rounds} | {c.total} | "
            f"{sampler} | {c.total - sampler} | {c.seconds:.1f} | {c.loss!r} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--shadings", nargs="+", choices=SHADINGS, default=list(SHADINGS))
    parser.add_argument("--grids", nargs="+", choices=GRIDS, default=list(GRIDS))
    parser.add_argument("--steps", type=int, default=1, help="steps counted per case")
    parser.add_argument("--warmup", type=int, default=0, help="uncounted steps before them")
    parser.add_argument("--sites", action="store_true", help="list each step's syncs by line")
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="virtual-cuda",
        help="virtual-cuda: count on the CPU (the default); cuda / cpu: run there (--sync-debug)",
    )
    parser.add_argument(
        "--sync-debug",
        action="store_true",
        help="count with torch.cuda.set_sync_debug_mode('warn') (with --device cuda or cpu)",
    )
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    if args.sync_debug != (args.device != "virtual-cuda"):
        parser.error("--sync-debug goes with --device cuda or cpu, and only with them")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU here")
    counts = []
    for name in args.configs:
        for shading in args.shadings:
            for grid in args.grids:
                if args.sync_debug:
                    case = debug_steps(name, shading, grid, args.steps, args.warmup, args.device)
                else:
                    case = count_steps(name, shading, grid, args.steps, args.warmup)
                counts += case
                print(f"counted {name} {shading} {grid}", file=sys.stderr, flush=True)
                if args.sync_debug:  # each case's rows as soon as they are measured
                    print(table(case) + "\n" + sites_text(case), flush=True)
    if not args.sync_debug:
        print(table(counts))
        if args.sites:
            print(sites_text(counts))
    return 0


def sites_text(counts: list[StepCount]) -> str:
    """Each step's syncs, by kind, then one row per dreamtext line that synced, with its text."""
    out = []
    for c in counts:
        kinds = ", ".join(f"{kind} {n}" for kind, n in c.syncs.most_common()) or "none"
        out.append(f"\n{c.config} {c.shading} grid {c.grid}, step {c.step}: {kinds}")
        for site, n in sorted(c.sites.items(), key=lambda kv: (-kv[1], kv[0])):
            out.append(f"  {n:5d}  {site:<18}  {site_text(site)}")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
