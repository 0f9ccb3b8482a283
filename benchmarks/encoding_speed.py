"""Time the hash grid forward and backward and count the bytes it keeps for backward, per backend.

    python benchmarks/encoding_speed.py [--device cpu|cuda] [--points N ...] [--repeats 3]
                                        [--backends reference torch triton
                                                    triton-per-feature tcnn]

The grid is the default field's: 16 levels × 2 features, table 2^19, resolutions 16–2048.
``reference`` is the plain differentiable path (``HashGridEncoding.reference_forward``, the grid
as it was before the lean function); ``torch``, ``triton`` and ``tcnn`` are ``make_encoding``'s
backends, and one that cannot run on the device is skipped with the reason (triton on the CPU
would only run in Triton's interpreter, which says nothing about speed). ``triton-per-feature``
is triton with the backward's atomics one feature at a time, as GPUs before sm_90 run it: on an
sm_90 GPU, where ``triton`` uses vector atomics, the two rows are the A/B of that choice
(``dreamtext.encoding_triton.vector_atomics_for``).

Per backend and batch size, the best of ``--repeats`` runs after one warm-up:
- ``fwd+bwd``: ``grid(x).square().sum().backward()``, wall seconds and, on the CPU, the process's
  CPU seconds (less distorted than wall time on a shared, busy machine; on CUDA the host spins in
  ``synchronize`` for the whole time, so that column is left empty);
- ``fwd no-grad``: the forward alone under ``torch.no_grad`` (previews, export, occupancy);
- ``kept B/pt``: bytes of the tensors autograd keeps for backward, per point (counted with
  ``torch.autograd.graph.saved_tensors_hooks``, distinct storages, the table itself excluded);
- on CUDA, ``peak MiB``: the most memory allocated during forward+backward above what was
  allocated before it.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from dreamtext.inputs import spin_briefly

# Before torch loads libgomp, which reads it once: the CLI's short spin count (README, Speed).
spin_briefly(os.environ)
import torch  # noqa: E402

from dreamtext.encoding import make_encoding  # noqa: E402
from dreamtext.errors import DreamtextError  # noqa: E402

BACKENDS = ("reference", "torch", "triton", "triton-per-feature", "tcnn")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_of(run: Callable[[], None], repeats: int, device: torch.device) -> tuple[float, float]:
    """Best (wall, CPU) seconds of ``run()`` over ``repeats`` runs after one warm-up."""
    best, best_cpu = float("inf"), float("inf")
    for i in range(repeats + 1):
        synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        synchronize(device)
        if i > 0:
            best = min(best, time.perf_counter() - start)
            best_cpu = min(best_cpu, time.process_time() - start_cpu)
    return best, best_cpu


def kept_bytes(grid: torch.nn.Module, fn: Callable, x: torch.Tensor) -> int:
    """Bytes of distinct storages autograd saves for backward in ``fn(x)``, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in grid.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            storages[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(x)
    del out
    return sum(storages.values())


def measure(grid: torch.nn.Module, fn: Callable, n: int, repeats: int, device: torch.device):
    """(fwd+bwd wall, fwd+bwd CPU, no-grad forward wall, kept bytes/point, peak MiB | None)."""
    x = torch.rand(n, 3, device=device) * 2.0 - 1.0

    def fwd_bwd() -> None:
        grid.zero_grad(set_to_none=True)
        fn(x).square().sum().backward()

    def fwd() -> None:
        with torch.no_grad():
            fn(x)

    wall, cpu = best_of(fwd_bwd, repeats, device)
    fwd_wall, _ = best_of(fwd, repeats, device)
    per_point = kept_bytes(grid, fn, x) / n
    peak = None
    if device.type == "cuda":
        grid.zero_grad(set_to_none=True)
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fwd_bwd()
        synchronize(device)
        peak = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    grid.zero_grad(set_to_none=True)
    return wall, cpu, fwd_wall, per_point, peak


def build(name: str, device: torch.device) -> tuple[torch.nn.Module, Callable]:
    """The grid and the function to time for one row of the table."""
    if name.startswith("triton") and device.type != "cuda":
        raise DreamtextError("triton is timed on CUDA only (on the CPU it runs in an interpreter)")
    kind = {"reference": "torch", "triton-per-feature": "triton"}.get(name, name)
    grid = make_encoding(kind, device=device)
    if name == "triton-per-feature":
        grid.vector_atomics = False
    return grid, (grid.reference_forward if name == "reference" else grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--points",
        type=int,
        nargs="+",
        help="batch sizes [65536 262144 on the CPU, 262144 1048576 on CUDA]",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here")
    points = args.points or ([262144, 1048576] if device.type == "cuda" else [65536, 262144])
    torch.manual_seed(0)
    print(f"hash grid on {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    columns = ["backend", "points", "fwd+bwd wall s", "fwd+bwd CPU s", "fwd no-grad s"]
    print("| " + " | ".join([*columns, "kept B/pt", "peak MiB"]) + " |")
    print("|---" * (len(columns) + 2) + "|")
    for name in args.backends:
        try:
            grid, fn = build(name, device)
        except DreamtextError as err:
            print(f"| {name} | skipped: {err} | | | | | |")
            continue
        for n in points:
            wall, cpu, fwd_wall, per_point, peak = measure(grid, fn, n, args.repeats, device)
            peak_text = "" if peak is None else f"{peak:.0f}"
            cpu_text = "" if device.type == "cuda" else f"{cpu:.3f}"
            print(
                f"| {name} | {n} | {wall:.3f} | {cpu_text} | {fwd_wall:.3f} | {per_point:.0f} "
                f"| {peak_text} |",
                flush=True,
            )
        del grid, fn
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
