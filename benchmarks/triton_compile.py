"""Compile the Triton hash-grid kernels for NVIDIA GPUs, without one, and report what they use.

    python benchmarks/triton_compile.py [--arch 75 80 86 89 90 120] [--level-dim 2]
                                        [--num-levels 16] [--log2-hashmap-size 19]
                                        [--json FILE] [--out FILE]

The tests run the kernels of :mod:`dreamtext.encoding_triton` in Triton's CPU interpreter, which
checks their arithmetic but not that Triton's compiler accepts them. This script runs that
compiler as a GPU would at the first launch, for each ``--arch`` (compute capability × 10: 75
Turing, 80 A100, 86 RTX 30xx such as the 12 GB RTX 3060, 89 RTX 40xx, 90 H100 / H200, 120
RTX 50xx such as the 12 GB RTX 5070; 100 is the B200), through
``triton.compile`` with a ``GPUTarget``: Triton's own LLVM and ``ptxas`` build the cubin; no GPU
or CUDA driver is needed. Each kernel (forward, backward) is built for both launches of a grid,
its dense and its hashed levels, with the arguments that
:func:`dreamtext.encoding_triton.kernel_arguments` gives the real launch: the same pointer and
integer types, and the 16-byte alignment hints that Triton takes from torch's allocations.

Per build, read from the cubin with the ``cuobjdump`` Triton ships: registers a thread, local
memory a thread (``LOCAL`` > 0 means register spills), shared memory (static, and what Triton
allocates at launch for moving a tensor between thread layouts), the number of machine (SASS)
instructions and of barriers among them (a layout change through shared memory needs them), and
the atomic instructions, counted (``RED``: an add that returns nothing, the cheap kind; ``ATOM``
would wait for the old value). The backward is built with the atomics its launch picks for that
architecture and this Triton (:func:`dreamtext.encoding_triton.vector_atomics_for`).

``warps/SM`` is how many warps of ``num_warps`` the registers let one SM hold (65,536
registers, allocated per warp in units of 256), at most the architecture's limit (32 on sm_75,
48 on sm_86 / sm_89 / sm_120, 64 on sm_80 / sm_90 / sm_100): a gather-bound kernel hides memory
latency with warps. Triton releases drop and add architectures, so a failed build prints its
error in one line instead of stopping the others.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

DEFAULT_ARCHES = (75, 80, 86, 89, 90, 120)
# Resident warps an SM holds at most, by compute capability × 10 (CUDA programming guide, table
# of technical specifications).
MAX_WARPS_PER_SM = {75: 32, 80: 64, 86: 48, 87: 48, 89: 48, 90: 64, 100: 64, 120: 48}
REGISTERS_PER_SM = 65536
REGISTER_UNIT = 256  # registers are allocated to a warp in units of 256
NUM_WARPS = 4  # Triton's default; encoding_triton launches with it
TRITON_TYPES = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.int64: "i64",
    torch.int32: "i32",
}


def triton_type(value) -> str:
    """Triton's signature type of a launch argument: ``*fp32`` for a float32 tensor, ``i32`` for
    an int that fits 32 bits (``i64`` otherwise), as the runtime types them."""
    if isinstance(value, torch.Tensor):
        return "*" + TRITON_TYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"no Triton type for {type(value).__name__}")


def signature_of(arg_names: list[str], args: tuple, constexprs: dict) -> tuple[dict, list[int]]:
    """The kernel's signature ``{name: type}`` (``constexpr`` for compile-time arguments) and the
    indices of its pointer arguments whose address is a multiple of 16 (Triton's alignment hint)."""
    signature = {}
    aligned = []
    positional = iter(args)
    for index, name in enumerate(arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
            continue
        value = next(positional)
        signature[name] = triton_type(value)
        if isinstance(value, torch.Tensor) and value.data_ptr() % 16 == 0:
            aligned.append(index)
    return signature, aligned


def warps_per_sm(registers: int, arch: int, num_warps: int = NUM_WARPS) -> int:
    """Warps of ``num_warps``-warp programs an SM holds when registers are the limit:
    ``⌊65536 / (⌈32 r / 256⌉ · 256 · num_warps)⌋ · num_warps``, at most the architecture's limit."""
    per_warp = -(-registers * 32 // REGISTER_UNIT) * REGISTER_UNIT
    programs = REGISTERS_PER_SM // (per_warp * num_warps)
    return min(programs * num_warps, MAX_WARPS_PER_SM.get(arch, 64))


def parse_resources(text: str, kernel_name: str) -> dict[str, int]:
    """``REG``, ``STACK``, ``SHARED`` and ``LOCAL`` of ``kernel_name`` in ``cuobjdump
    --dump-resource-usage`` output."""
    pattern = (
        rf"Function {re.escape(kernel_name)}:\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)"
    )
    match = re.search(pattern, text)
    if match is None:
        raise ValueError(f"no resource line for {kernel_name} in cuobjdump's output")
    registers, stack, shared, local = (int(v) for v in match.groups())
    return {"registers": registers, "stack": stack, "shared": shared, "local": local}


def sass_opcodes(sass: str) -> list[str]:
    """The opcodes of ``cuobjdump -sass`` output, in order (predicates such as ``@!P0`` dropped)."""
    return re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", sass)


def atomic_opcodes(opcodes: list[str]) -> list[str]:
    """The distinct atomic opcodes among ``opcodes``, sorted: ``RED…`` (an add that returns
    nothing, fire-and-forget) or ``ATOM…`` (one that waits for the old value)."""
    return sorted({op for op in opcodes if op.startswith(("RED", "ATOM"))})


def _tool(name: str) -> str | None:
    import triton

    root = Path(triton.__file__).parent
    # Where Triton keeps its CUDA tools: backends/ since 3.0, third_party/ before.
    for folder in (root / "backends" / "nvidia" / "bin", root / "third_party" / "cuda" / "bin"):
        if (folder / name).exists():
            return str(folder / name)
    return shutil.which(name)


def kernel_source(kernel, args: tuple, constexprs: dict):
    """``triton.compiler.ASTSource`` of one launch, in the form this Triton version takes: 3.3
    and later name the arguments and give alignment as ``tt.divisibility`` attributes; 3.2 takes
    an ``AttrsDescriptor`` of hints; 2.3 to 3.1 number the arguments and leave the compile-time
    ones out of the signature."""
    from triton.compiler import ASTSource

    signature, aligned = signature_of(kernel.arg_names, args, constexprs)
    try:
        from triton.backends.compiler import AttrsDescriptor  # triton 3.2
    except ImportError:  # triton.backends is missing before 3.0
        pass
    else:
        hints = AttrsDescriptor.from_hints({index: 16 for index in aligned})
        return ASTSource(kernel, signature, constexprs, hints)
    try:
        from triton.compiler.compiler import AttrsDescriptor  # triton 2.3-3.1
    except ImportError:
        attrs = {(index,): [["tt.divisibility", 16]] for index in aligned}
        return ASTSource(kernel, signature, constexprs, attrs)
    index = {name: i for i, name in enumerate(kernel.arg_names)}
    numbered = {index[name]: kind for name, kind in signature.items() if kind != "constexpr"}
    constants = {index[name]: value for name, value in constexprs.items()}
    return ASTSource(kernel, numbered, constants, AttrsDescriptor(divisible_by_16=set(aligned)))


def error_summary(err: Exception, width: int = 300) -> str:
    """One line for a failed build: the error's type, its first line (a Triton compile error's
    place in the kernel) and its last (what is wrong there)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    text = " … ".join(lines[:1] + lines[-1:]) if len(lines) > 1 else "".join(lines)
    return f"{type(err).__name__}: {text}"[:width]


def compile_kernel(kernel, args: tuple, constexprs: dict, arch: int) -> dict:
    """Build ``kernel`` for ``sm_<arch>`` and read its resources: a row of the report."""
    import triton

    try:
        from triton.backends.compiler import GPUTarget
    except ImportError:  # triton 2.x names a target by a tuple
        target = ("cuda", arch)
    else:
        target = GPUTarget("cuda", arch, 32)
    source = kernel_source(kernel, args, constexprs)
    try:
        compiled = triton.compile(source, target=target)
    except Exception as err:  # compiler errors come in many types
        return {"compiled": False, "error": error_summary(err)}
    row = {"compiled": True, "cubin_bytes": len(compiled.asm["cubin"])}
    cuobjdump = _tool("cuobjdump")
    if cuobjdump is not None:
        with tempfile.TemporaryDirectory() as folder:
            cubin = Path(folder) / "kernel.cubin"
            cubin.write_bytes(compiled.asm["cubin"])
            usage, sass = (
                subprocess.run(
                    [cuobjdump, flag, str(cubin)], capture_output=True, text=True, check=True
                ).stdout
                for flag in ("--dump-resource-usage", "--dump-sass")
            )
        row.update(parse_resources(usage, kernel.__name__))
        row["warps_per_sm"] = warps_per_sm(row["registers"], arch)
        opcodes = sass_opcodes(sass)
        row["instructions"] = len(opcodes)
        row["barriers"] = sum(op.startswith("BAR") for op in opcodes)
        row["atomics"] = atomic_opcodes(opcodes)
        row["atomic_instructions"] = sum(op.startswith(("RED", "ATOM")) for op in opcodes)
    # Shared memory Triton allocates at launch (layout conversions), beside any static use.
    metadata = getattr(compiled, "metadata", None)
    dynamic = getattr(metadata, "shared", None) if metadata is not None else None
    if dynamic is None:
        dynamic = getattr(compiled, "shared", 0)
    row["shared"] = row.get("shared", 0) + int(dynamic)
    return row


def report(arches: list[int], grid_config: dict) -> list[dict]:
    """Build both kernels for each launch of a grid with ``grid_config`` on each arch."""
    from dreamtext.encoding import HashGridEncoding
    from dreamtext.encoding_triton import (
        hash_grid_backward_kernel,
        hash_grid_forward_kernel,
        kernel_arguments,
        launch_groups,
        vector_atomics_for,
    )

    grid = HashGridEncoding(**grid_config)
    points = 1 << 18
    u = torch.empty(points, 3)
    features = torch.empty(points, grid.output_dim)
    table = grid.params.detach()
    rows = []
    for arch in arches:
        # The backward's atomics as the launch picks them on this architecture.
        vector = vector_atomics_for(divmod(arch, 10))
        kernels = (
            ("forward", hash_grid_forward_kernel, table, features, {}),
            ("backward", hash_grid_backward_kernel, features, torch.empty_like(table),
             {"VECTOR_ATOMICS": vector}),
        )  # fmt: skip
        for name, kernel, source, target, extra in kernels:
            for first_level, count, hashed in launch_groups(grid):
                args, constexprs = kernel_arguments(
                    grid, u, source, target, first_level, hashed, **extra
                )
                row = compile_kernel(kernel, args, constexprs, arch)
                row.update(arch=arch, kernel=name, levels="hashed" if hashed else "dense")
                if "VECTOR_ATOMICS" in extra:
                    row["vector_atomics"] = extra["VECTOR_ATOMICS"]
                row["level_count"] = count
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def section(rows: list[dict], command: str, triton_version: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    head = (
        f"## Triton hash-grid kernels, compiled without a GPU (issue 9) — triton {triton_version} "
        f"— {stamp}\n\n`{command}` (torch {torch.__version__}), num_warps {NUM_WARPS}:\n\n"
        "| arch | kernel | levels | compiled | registers | local (spills) | shared | warps/SM "
        "| SASS instructions | barriers | atomics |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for row in rows:
        if not row["compiled"]:
            lines.append(
                f"| sm_{row['arch']} | {row['kernel']} | {row['levels']} | no: "
                f"{row['error'].replace('|', '/')} | | | | | | | |"
            )
            continue
        atomics = ", ".join(f"`{a}`" for a in row.get("atomics", [])) or "none"
        if row.get("atomic_instructions"):
            atomics = f"{row['atomic_instructions']} × {atomics}"
        lines.append(
            f"| sm_{row['arch']} | {row['kernel']} | {row['levels']} | yes | "
            f"{row.get('registers', '?')} | {row.get('local', '?')} | {row.get('shared', '?')} | "
            f"{row.get('warps_per_sm', '?')} | {row.get('instructions', '?')} | "
            f"{row.get('barriers', '?')} | {atomics} |"
        )
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--arch",
        nargs="+",
        type=int,
        default=list(DEFAULT_ARCHES),
        help="compute capabilities × 10 to build for [75 80 86 89 90 120]",
    )
    parser.add_argument("--level-dim", type=int, default=2, help="features a level [2]")
    parser.add_argument("--num-levels", type=int, default=16, help="grid levels [16]")
    parser.add_argument("--log2-hashmap-size", type=int, default=19, help="log2 rows a level [19]")
    parser.add_argument("--json", type=Path, default=None, help="write the rows to this file")
    parser.add_argument("--out", type=Path, default=None, help="append the section to this file")
    args = parser.parse_args(argv)
    # The kernels must be built by the compiler, not wrapped for the interpreter: Triton reads
    # this when dreamtext.encoding_triton defines them.
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        import triton
        from triton.compiler import ASTSource  # noqa: F401
        from triton.runtime.jit import JITFunction
    except ImportError:
        parser.error("needs the triton package, 2.3 or later: pip install triton")
    from dreamtext.encoding_triton import hash_grid_forward_kernel

    if not isinstance(hash_grid_forward_kernel, JITFunction):
        parser.error("the kernels were defined for Triton's interpreter: unset TRITON_INTERPRET")
    grid_config = {
        "num_levels": args.num_levels,
        "level_dim": args.level_dim,
        "log2_hashmap_size": args.log2_hashmap_size,
    }
    rows = report(args.arch, grid_config)
    words = sys.argv[1:] if argv is None else argv
    command = " ".join(["python", "benchmarks/triton_compile.py", *words])
    text = section(rows, command, triton.__version__)
    print(text)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    if args.out is not None:
        with args.out.open("a", encoding="utf-8") as handle:
            handle.write("\n" + text)


if __name__ == "__main__":
    main()
