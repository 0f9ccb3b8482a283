"""Kernel launches and host syncs of one NeRF training step, counted on the CPU.

    python benchmarks/launch_count.py                    # default field, 64 px, both shadings
    python benchmarks/launch_count.py --sizes 64 256 --sites   # and where the syncs are

A 64 px step on a big GPU is short enough that launching kernels, not running them, can set its
pace: the issue's H200 profile had one guidance call at 50 ms wall for 34 ms of GPU work and
2,872 kernels. Without a GPU this counts what such a step asks of the host, for one training
render of the freshly initialised default field (one random camera, ``loss = mean(rgb)``: the
NeRF alone) and its backward pass, built by ``dreamtext.factory`` and run through
``VolumeRenderer.render_train`` as in the trainer, with the MLP in one piece per call as on CUDA:

* **backend ops** by stage (the sampler, the rest of the render, backward): every op that
  reaches a kernel, views and bare allocations excluded, counted with a ``TorchDispatchMode``.
  On CUDA each is about one kernel launch.
* **hash-grid calls**, apart: the torch grid runs dozens of ops a level, which the Triton
  backend on CUDA replaces with two launches a call (dense and hashed levels) forward and three
  backward (with the zeroed gradient table). The op counts leave the grid's own ops out.
* **host syncs**: calls from dreamtext's code that make the host wait for a CUDA device —
  ``.item()``, ``.tolist()``, ``.cpu()``, ``bool()``/``int()``/``float()`` of a tensor,
  ``nonzero``, boolean-mask indexing and writes (not those torch makes a ``masked_fill_``),
  ``bincount``, ``unique``, ``repeat_interleave`` with
  tensor repeats — by stage, and by call site with ``--sites``.

The optimiser step is left out (on the CPU Adam runs its per-tensor loop; on CUDA its
multi-tensor kernels), and so is the guidance (its launches are the diffusion model's).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sys
import traceback
from pathlib import Path
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

import dreamtext.field as field_module  # noqa: E402
from dreamtext.cameras import sample_poses  # noqa: E402
from dreamtext.config import resolve_config  # noqa: E402
from dreamtext.encoding import _LeanHashGrid  # noqa: E402
from dreamtext.factory import build_field, build_renderer  # noqa: E402
from dreamtext.samplers import OccupancySampler  # noqa: E402

PACKAGE = str(ROOT / "dreamtext")
# Ops that allocate or alias without a kernel.
NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}
# Tensor methods and torch functions that wait for the device when the tensor is on CUDA.
SYNC_METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")
SYNC_FUNCTIONS = ("nonzero", "bincount", "unique", "unique_consecutive", "masked_select")


def _has_bool_mask(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


def _mask_write_syncs(tensor, index, value) -> bool:
    """Whether ``tensor[index] = value`` waits for the device: a boolean mask written through
    syncs (its ``nonzero``) unless torch makes it a ``masked_fill_`` (one mask, a value of one
    element on the host, such as a Python number, and no other index tensor;
    tests/virtual_cuda.py says where in torch)."""
    if not _has_bool_mask(index):
        return False
    items = index if isinstance(index, tuple) else (index,)
    arrays = [i for i in items if isinstance(i, torch.Tensor) and i.dim() > 0]
    host_scalar = not isinstance(value, torch.Tensor) or (
        value.device.type == "cpu" and value.numel() == 1
    )
    return not (len(arrays) == 1 and host_scalar)  # the one array is the mask


class LaunchCounter(TorchDispatchMode):
    """Counts backend ops and host syncs under ``with counter:``, each under ``counter.stage``.

    ``ops[(stage, op)]``: ops that reach a kernel; the grid's own ops go to stage ``"grid"``.
    ``syncs[(stage, site)]``: sync calls made directly by dreamtext's code (``site`` is
    ``file.py:line``). ``grid_calls["forward" | "backward"]``: calls of the torch grid function.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stage = "render"
        self.ops: collections.Counter = collections.Counter()
        self.syncs: collections.Counter = collections.Counter()
        self.grid_calls: collections.Counter = collections.Counter()
        self._in_grid = 0
        self._patches = contextlib.ExitStack()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if not func.is_view and name not in NO_KERNEL and name != "_local_scalar_dense":
            self.ops[("grid" if self._in_grid else self.stage, name)] += 1
        return func(*args, **(kwargs or {}))

    def total(self, stage: str) -> int:
        return sum(n for (s, _), n in self.ops.items() if s == stage)

    def sync_total(self, stage: str | None = None) -> int:
        return sum(n for (s, _), n in self.syncs.items() if stage is None or s == stage)

    def _note_sync(self) -> None:
        caller = traceback.extract_stack(limit=3)[0]  # the frame that called the tensor method
        if caller.filename.startswith(PACKAGE) and not self._in_grid:
            self.syncs[(self.stage, f"{Path(caller.filename).name}:{caller.lineno}")] += 1

    def _wrap(self, owner, name: str, when=None) -> None:
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            if when is None or when(*args, **kwargs):
                self._note_sync()
            return original(*args, **kwargs)

        self._patches.enter_context(mock.patch.object(owner, name, counted))

    def _grid(self, kind: str, original):
        def counted(ctx, *args):
            self.grid_calls[kind] += 1
            self._in_grid += 1
            try:
                return original(ctx, *args)
            finally:
                self._in_grid -= 1

        return staticmethod(counted)

    def __enter__(self):
        for name in SYNC_METHODS:
            self._wrap(torch.Tensor, name)
        for name in SYNC_FUNCTIONS:
            self._wrap(torch, name)
        self._wrap(torch.Tensor, "nonzero")
        self._wrap(torch.Tensor, "__getitem__", lambda tensor, index: _has_bool_mask(index))
        self._wrap(torch.Tensor, "__setitem__", _mask_write_syncs)
        for owner in (torch, torch.Tensor):
            self._wrap(
                owner,
                "repeat_interleave",
                lambda x, repeats=None, *a, **k: (
                    isinstance(repeats, torch.Tensor) and k.get("output_size") is None
                ),
            )
        for kind in ("forward", "backward"):
            method = self._grid(kind, getattr(_LeanHashGrid, kind))
            self._patches.enter_context(mock.patch.object(_LeanHashGrid, kind, method))
        sample = OccupancySampler.sample

        def sampling(sampler, *args, **kwargs):
            stage, self.stage = self.stage, "sampler"
            try:
                return sample(sampler, *args, **kwargs)
            finally:
                self.stage = stage

        self._patches.enter_context(mock.patch.object(OccupancySampler, "sample", sampling))
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._patches.close()


def count_step(size: int, shading: str, seed: int = 0) -> LaunchCounter:
    """One training render + backward of a fresh default field at ``size`` px, counted (after an
    uncounted warm-up step on the same camera)."""
    cfg = resolve_config({"prompt": "launches", "h": size, "w": size, "device": "cpu"})
    torch.manual_seed(seed)
    with (
        mock.patch.object(field_module, "CPU_QUERY_PIECE", 1 << 62),
        mock.patch.object(field_module, "CPU_NO_GRAD_PIECE", 1 << 62),
    ):
        field = build_field(cfg.field, "cpu")
        renderer = build_renderer(cfg.render, "cpu").train()
        renderer.update_occupancy(field, 0)
        poses = sample_poses(1, cfg.cameras, torch.Generator().manual_seed(seed))
        counter = LaunchCounter()
        for counted in (False, True):
            field.zero_grad(set_to_none=True)
            with counter if counted else contextlib.nullcontext():
                counter.stage = "render"
                render = renderer.render_train(field, poses, size, size, shading=shading)
                loss = render.images().mean()
                counter.stage = "backward"
                render.backward(loss, {"entropy": 1e-4, "orientation": 1e-2})
        counter.backprop = "deferred" if render.deferred else "direct"
        counter.samples_per_ray = render.num_samples / (size * size)
    return counter


def table(rows: list[tuple[int, str, LaunchCounter]]) -> str:
    header = (
        "| px | shading | backprop | kept samples a ray | sampler ops | render ops | backward ops "
        "| grid calls (fwd / bwd) | host syncs (sampler / render / backward) |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for size, shading, c in rows:
        syncs = " / ".join(str(c.sync_total(s)) for s in ("sampler", "render", "backward"))
        lines.append(
            f"| {size} | {shading} | {c.backprop} | {c.samples_per_ray:.1f} | "
            f"{c.total('sampler')} | {c.total('render')} | {c.total('backward')} | "
            f"{c.grid_calls['forward']} / {c.grid_calls['backward']} | {syncs} |"
        )
    return header + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64])
    parser.add_argument("--shadings", nargs="+", default=["albedo", "lambertian"])
    parser.add_argument("--sites", action="store_true", help="list the host syncs by call site")
    args = parser.parse_args(argv)
    rows = [(s, shading, count_step(s, shading)) for s in args.sizes for shading in args.shadings]
    print(table(rows))
    if args.sites:
        for size, shading, counter in rows:
            print(f"\n{size} px {shading}: host syncs by call site")
            for (stage, site), n in sorted(counter.syncs.items(), key=lambda kv: -kv[1]):
                print(f"  {n:5d}  {stage:9s} {site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
