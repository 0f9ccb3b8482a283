"""Subnormal floats in a CPU training step: where they occur, and what flushing them saves.

    dreamtext text "a colorful cube" --model builtin:shapes --threads 1
    python benchmarks/subnormals.py workspace/a_colorful_cube                  # from last.pt
    python benchmarks/subnormals.py workspace/a_colorful_cube --checkpoint step_000500.pt

A float32 below 2⁻¹²⁶ ≈ 1.18e-38 (other than 0) is subnormal; an x86 instruction that reads or
writes one takes a microcode assist, many times slower than the same instruction on normal
values. ``torch.set_flush_denormal(True)`` sets the thread's MXCSR to read them as 0 and to write
0 in their place. It sets the calling thread only: OpenMP's worker threads copy it only when they
start after it, so the timing here runs on one thread, where toggling it between arms is whole
(and where libgomp's spinning, which this script cannot shorten as the CLI does with
``GOMP_SPINCOUNT`` before it imports torch, has no team to wait for).

From a copy of the run's checkpoint (the workspace is not written):

1. One training step with every operator's float inputs counted (a ``TorchDispatchMode``), by
   the dreamtext source line that called it, and the field's gradients, weights and Adam moments
   after the update. Views and fresh allocations are left out (their memory is not yet written).
2. ``--steps`` training steps with and without flushing, alternated ``--reps`` times from the same
   state (the same cameras, noise and updates), timed by the process's CPU time (user + sys), so
   that a machine's load drifts through both arms alike; and the loss each arm ends at.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from dreamtext.inputs import spin_briefly

# Before torch loads libgomp, which reads it once: the CLI's short spin count (README, Speed).
spin_briefly(os.environ)
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

from dreamtext import trainer  # noqa: E402
from dreamtext.config import TrainConfig, resolve_config  # noqa: E402

# Operators that only alias or allocate: their inputs are counted where they are computed on.
NOT_ARITHMETIC = {
    "view", "_unsafe_view", "select", "slice", "detach", "alias", "as_strided", "t", "transpose",
    "expand", "unsqueeze", "squeeze", "permute", "split", "unbind", "view_as_complex",
    "view_as_real", "new_empty", "empty_like", "empty", "new_zeros", "zeros", "zeros_like",
    "fill_", "zero_", "clone", "copy_", "_to_copy",
}  # fmt: skip


def subnormal_count(t: Any) -> tuple[int, int]:
    """``(subnormal, all)`` elements of a floating-point tensor: ``0 < |x| < finfo.tiny``."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.numel() == 0:
        return 0, 0
    a = t.detach().abs()
    return int(((a > 0) & (a < torch.finfo(t.dtype).tiny)).sum()), t.numel()


def caller_line() -> str:
    """The innermost dreamtext source line on the stack (``module.py:line:function``)."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_code.co_filename
        if "/dreamtext/" in name:
            return f"{name.split('/dreamtext/')[-1]}:{frame.f_lineno}:{frame.f_code.co_name}"
        frame = frame.f_back
    return "?"


class SubnormalInputs(TorchDispatchMode):
    """Counts the subnormal float inputs of every arithmetic operator run under it:
    ``table["mul @ encoding.py:318:backward"] = [calls, subnormal, elements]``."""

    def __init__(self) -> None:
        super().__init__()
        self.table: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] not in NOT_ARITHMETIC:
            row = self.table[f"{func.__name__.split('.')[0]} @ {caller_line()}"]
            row[0] += 1
            for t in tree_flatten((args, kwargs))[0]:
                subnormal, elements = subnormal_count(t)
                row[1] += subnormal
                row[2] += elements
        return func(*args, **(kwargs or {}))


def state_counts(run: trainer.Run) -> dict[str, tuple[int, int]]:
    """Subnormal elements of each field parameter, its gradient and its optimiser state."""
    counts = {}
    for name, p in run.field.named_parameters():
        counts[f"weight {name}"] = subnormal_count(p)
        if p.grad is not None:
            counts[f"grad {name}"] = subnormal_count(p.grad)
        for key, value in run.optimizer.state.get(p, {}).items():
            counts[f"{key} {name}"] = subnormal_count(value)
    return counts


def count_step(run: trainer.Run, rows: int) -> None:
    """Print where one training step meets subnormal inputs (:class:`SubnormalInputs`)."""
    grads: dict[str, tuple[int, int]] = {}
    update = trainer.optimizer_step

    def counted_update(r: trainer.Run, finite: bool) -> bool:
        with torch.utils._python_dispatch._disable_current_modes():
            grads.update({k: v for k, v in state_counts(r).items() if k.startswith("grad")})
        return update(r, finite)

    trainer.optimizer_step = counted_update
    mode = SubnormalInputs()
    try:
        with mode:
            trainer.train_step(run)
    finally:
        trainer.optimizer_step = update
    total = sum(r[1] for r in mode.table.values())
    elements = sum(r[2] for r in mode.table.values())
    print(f"step {run.step}: {total:,} subnormal inputs of {elements:,} ({total / elements:.1e})")
    for key, (calls, subnormal, n) in sorted(mode.table.items(), key=lambda kv: -kv[1][1])[:rows]:
        if subnormal:
            print(f"  {subnormal:>9,} of {n:>11,} ({subnormal / n:.1e})  {calls:>3} calls  {key}")
    after = {k: v for k, v in state_counts(run).items() if not k.startswith("grad")}
    for key, (subnormal, n) in {**grads, **after}.items():
        if subnormal:
            print(f"  {subnormal:>9,} of {n:>11,}  {key}")


def time_arms(run: trainer.Run, steps: int, reps: int) -> dict[str, list[float]]:
    """CPU seconds of ``steps`` training steps (each with its occupancy refresh) from the same
    state, flushing subnormals (``on``) and not (``off``), alternated ``reps`` times."""
    state = copy.deepcopy(trainer.checkpoint_state(run))
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    for rep in range(reps):
        for arm in ("off", "on") if rep % 2 == 0 else ("on", "off"):
            trainer.restore(run, copy.deepcopy(state))
            torch.set_flush_denormal(arm == "on")
            start = time.process_time()
            for _ in range(steps):
                record = trainer.train_step(run)
                trainer.refresh_occupancy(run)
            seconds[arm].append(time.process_time() - start)
            print(f"  {arm:>3}: {seconds[arm][-1]:.2f} s, loss {record['loss']!r}", flush=True)
    torch.set_flush_denormal(False)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path, help="a text→3D run's folder")
    parser.add_argument("--checkpoint", default="last.pt", help="a file in its checkpoints/")
    parser.add_argument("--steps", type=int, default=60, help="steps an arm")
    parser.add_argument("--reps", type=int, default=6, help="times each arm runs")
    parser.add_argument("--rows", type=int, default=12, help="operators listed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not torch.set_flush_denormal(False):
        sys.exit("this CPU build of torch cannot flush subnormals (set_flush_denormal)")
    with tempfile.TemporaryDirectory() as folder:
        workspace = Path(folder) / "run"
        shutil.copytree(args.workspace, workspace)
        if args.checkpoint != "last.pt":
            shutil.copy(
                workspace / "checkpoints" / args.checkpoint, workspace / "checkpoints" / "last.pt"
            )
        saved = json.loads((workspace / "config.json").read_text())
        saved["workspace"] = str(workspace)
        fields = TrainConfig.__dataclass_fields__
        cfg = resolve_config({}, base={k: v for k, v in saved.items() if k in fields})
        run = trainer.build_run(cfg, resume=True)
        state = copy.deepcopy(trainer.checkpoint_state(run))
        count_step(run, args.rows)
        trainer.restore(run, state)
        print(f"CPU time of {args.steps} steps from step {run.step}, one thread:")
        seconds = time_arms(run, args.steps, args.reps)
    off, on = statistics.median(seconds["off"]), statistics.median(seconds["on"])
    print(f"median: off {off:.2f} s, on {on:.2f} s ({(off - on) / off:+.1%} with flushing)")


if __name__ == "__main__":
    main()
