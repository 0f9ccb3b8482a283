"""Host syncs of whole training steps of a real-sized run, counted on the CPU under virtual CUDA.

    python benchmarks/host_syncs.py                          # default field 64 px, FitFusion 256 px
    python benchmarks/host_syncs.py --configs default-64 --steps 3 --sites

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

The grid's refresh every 16 steps (one ``.item()`` and its cell jitter) runs as the trainer runs
it, after the step, and is not counted. The optimiser runs as on the CPU (its per-tensor loop).
On 2 shared cores a 64 px step took 2-30 s, a 256 px one 45-310 s, at about 6 GB peak RSS
(benchmarks/RESULTS.md, "Host syncs of real-sized training steps").
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from sync_sites import by_file, march_rounds, sync_sites  # noqa: E402
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


def run_config(name: str, shading: str, workspace: Path) -> dict:
    """The overrides of config ``name`` with ``shading`` on virtual CUDA (module docstring)."""
    if shading not in SHADINGS:
        raise ValueError(f"shading must be one of {SHADINGS}, got {shading!r}")
    _, size = CONFIGS[name]
    shaded = {} if shading == "albedo" else {"albedo_epochs": 0, "shading_probs": [0.0, 0.0, 1.0]}
    return {
        "prompt": "a red cube",
        "workspace": str(workspace),
        "device": "cuda",
        "h": size,
        "w": size,
        "batch_size": 1,
        "export": False,
        "guidance": {"model": "builtin:shapes"},
        "field": {**dataclasses.asdict(FieldConfig()), "encoding": "torch"},
        "render": dataclasses.asdict(RenderConfig()),
        **shaded,
    }


def count_steps(name: str, shading: str, grid: str, steps: int) -> list[StepCount]:
    """``steps`` training steps of config ``name``, each counted (see the module docstring)."""
    preset, _ = CONFIGS[name]
    counts = []
    with tempfile.TemporaryDirectory() as tmp, virtual_cuda() as mode:
        cfg = resolve_config(run_config(name, shading, Path(tmp) / "run"), preset=preset)
        run = trainer.build_run(cfg)
        if grid == "refreshed":
            run.renderer.update_occupancy(run.field, 0)
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
    parser.add_argument("--sites", action="store_true", help="list each step's syncs by line")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    counts = []
    for name in args.configs:
        for shading in args.shadings:
            for grid in args.grids:
                counts += count_steps(name, shading, grid, args.steps)
                print(f"counted {name} {shading} {grid}", file=sys.stderr, flush=True)
    print(table(counts))
    if args.sites:
        for c in counts:
            kinds = ", ".join(f"{kind} {n}" for kind, n in c.syncs.most_common())
            print(f"\n{c.config} {c.shading} grid {c.grid}, step {c.step}: {kinds}")
            for site, n in sorted(c.sites.items(), key=lambda kv: (-kv[1], kv[0])):
                print(f"  {n:5d}  {site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
