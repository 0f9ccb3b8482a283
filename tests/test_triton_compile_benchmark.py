"""benchmarks/triton_compile.py: the Triton hash-grid kernels built by Triton's compiler for
NVIDIA GPUs, with no GPU here, and the resources read from the cubins."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from benchmark_scripts import BENCHMARKS, load_benchmark

from dreamtext.encoding import HashGridEncoding


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("triton_compile", "triton_compile_benchmark")


def test_launch_arguments_get_the_types_triton_gives_them(bench):
    pytest.importorskip("triton")
    from dreamtext.encoding_triton import kernel_arguments

    grid = HashGridEncoding(num_levels=4, level_dim=2, log2_hashmap_size=10)
    u = torch.empty(100, 3)
    features = torch.empty(100, grid.output_dim)
    args, constexprs = kernel_arguments(grid, u, grid.params.detach(), features, 1, True)
    names = [
        "u_ptr", "table_ptr", "out_ptr", "scales_ptr", "resolutions_ptr", "offsets_ptr",
        "sizes_ptr", "num_points", "first_level", "F", "OUT_DIM", "HASHED", "BLOCK",
    ]  # fmt: skip
    signature, aligned = bench.signature_of(names, args, constexprs)
    assert signature == {
        "u_ptr": "*fp32",
        "table_ptr": "*fp32",
        "out_ptr": "*fp32",
        "scales_ptr": "*fp32",
        "resolutions_ptr": "*i64",
        "offsets_ptr": "*i64",
        "sizes_ptr": "*i64",
        "num_points": "i32",
        "first_level": "i32",
        "F": "constexpr",
        "OUT_DIM": "constexpr",
        "HASHED": "constexpr",
        "BLOCK": "constexpr",
    }
    assert constexprs == {"F": 2, "OUT_DIM": 8, "HASHED": True, "BLOCK": 128}
    # torch's CPU allocations are 64-byte aligned: every pointer gets the 16-byte hint.
    assert aligned == [0, 1, 2, 3, 4, 5, 6]
    _, offset_view = bench.signature_of(["u_ptr"], (torch.empty(9)[1:],), {})
    assert offset_view == []  # 4 bytes past an aligned start: no hint
    assert bench.triton_type(2**31) == "i64"
    assert bench.triton_type(torch.empty(1, dtype=torch.float16)) == "*fp16"


def test_register_limited_warps_follow_the_allocation_granularity(bench):
    # 32 registers: 1,024 a warp, 16 four-warp programs = 64 warps; sm_86 holds only 48.
    assert bench.warps_per_sm(32, 90) == 64
    assert bench.warps_per_sm(32, 86) == 48
    # 33 registers round up to 1,280 a warp, like 40: 12 programs, 48 warps.
    assert bench.warps_per_sm(33, 90) == bench.warps_per_sm(40, 90) == 48
    # 48 registers: 1,536 a warp, 10 programs, 40 warps.
    assert bench.warps_per_sm(48, 86) == 40
    # 255 registers: 8,192 a warp (rounded), 2 programs, 8 warps.
    assert bench.warps_per_sm(255, 90) == 8


def test_resources_and_opcodes_are_read_from_cuobjdump_text(bench):
    usage = (
        "Resource usage:\n Common:\n  GLOBAL:11\n Function other_kernel:\n"
        "  REG:99 STACK:8 SHARED:0 LOCAL:8 CONSTANT[0]:600\n Function hash_grid_forward_kernel:\n"
        "  REG:40 STACK:0 SHARED:1024 LOCAL:0 CONSTANT[0]:608 TEXTURE:0\n"
    )
    assert bench.parse_resources(usage, "hash_grid_forward_kernel") == {
        "registers": 40,
        "stack": 0,
        "shared": 1024,
        "local": 0,
    }
    with pytest.raises(ValueError):
        bench.parse_resources(usage, "missing_kernel")
    sass = (
        "        /*0000*/                   MOV R1, c[0x0][0x28] ;\n"
        "                                                      /* 0x000fe40000000f00 */\n"
        "        /*0010*/              @!P0 RED.E.ADD.F32.FTZ.RN.STRONG.GPU [R2.64], R5 ;\n"
        "        /*0020*/               @P1 ATOMG.E.ADD.F32 R0, [R2.64], R5 ;\n"
        "        /*0030*/                   EXIT ;\n"
    )
    opcodes = bench.sass_opcodes(sass)
    assert opcodes == ["MOV", "RED.E.ADD.F32.FTZ.RN.STRONG.GPU", "ATOMG.E.ADD.F32", "EXIT"]
    assert bench.atomic_opcodes(opcodes) == ["ATOMG.E.ADD.F32", "RED.E.ADD.F32.FTZ.RN.STRONG.GPU"]


def _has_triton_nvidia_backend() -> bool:
    spec = importlib.util.find_spec("triton")
    if spec is None or spec.origin is None:
        return False
    return (Path(spec.origin).parent / "backends" / "nvidia" / "bin" / "cuobjdump").exists()


@pytest.mark.skipif(
    not _has_triton_nvidia_backend(), reason="triton with its NVIDIA backend is not installed"
)
def test_kernels_compile_for_an_rtx_3060_and_an_h100_without_spills_or_barriers(tmp_path):
    """Triton's real compiler (not its interpreter) builds both kernels, dense and hashed levels,
    for sm_86 (the 12 GB RTX 3060) and sm_90 (H100 / H200): no register spills, no layout
    changes through shared memory, and the backward's table gradient added with fire-and-forget
    RED instructions, two features at once on sm_90 (half the instructions)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")  # build afresh, not from a cache
    out = tmp_path / "rows.json"
    script = BENCHMARKS / "triton_compile.py"
    command = [sys.executable, str(script), "--arch", "86", "90", "--json", str(out)]
    subprocess.run(command, env=env, check=True, capture_output=True, timeout=300)
    rows = json.loads(out.read_text())
    built = {(row["arch"], row["kernel"], row["levels"]) for row in rows}
    assert built == {
        (arch, kernel, levels)
        for arch in (86, 90)
        for kernel in ("forward", "backward")
        for levels in ("dense", "hashed")
    }
    for row in rows:
        assert row["compiled"], row
        assert 0 < row["registers"] <= 255
        assert row["local"] == 0, f"{row['kernel']} {row['levels']} spills registers"
        assert row["barriers"] == 0 and row["shared"] == 0, row
        if row["kernel"] == "forward":
            assert row["atomics"] == []
        else:
            assert row["atomics"] and all(op.startswith("RED") for op in row["atomics"])
    backward = {(row["arch"], row["levels"]): row for row in rows if row["kernel"] == "backward"}
    for levels in ("dense", "hashed"):
        # 8 corners × 2 features: 16 scalar adds on sm_86, 8 vector ones on sm_90.
        assert backward[86, levels]["vector_atomics"] is False
        assert backward[86, levels]["atomic_instructions"] == 16
        assert backward[90, levels]["vector_atomics"] is True
        assert backward[90, levels]["atomic_instructions"] == 8
    assert sum(row["level_count"] for row in rows if row["kernel"] == "forward") == 32


def test_a_failed_build_is_summed_up_by_its_place_and_its_cause(bench):
    err = RuntimeError(
        'at 22:4:\n    acc = tl.zeros([BLOCK, F])\n    ^\nAssertionError("acc changes type")'
    )
    assert bench.error_summary(err) == (
        'RuntimeError: at 22:4: … AssertionError("acc changes type")'
    )
    assert bench.error_summary(ValueError("one line")) == "ValueError: one line"
    assert len(bench.error_summary(ValueError("x" * 1000))) == 300


def test_vector_atomics_only_where_the_gpu_and_triton_have_them():
    pytest.importorskip("triton")
    from dreamtext.encoding_triton import uses_vector_atomics, vector_atomics_for

    assert vector_atomics_for((9, 0), "3.2.0")
    assert vector_atomics_for((10, 0), "3.9.0+git1a2b3c")
    assert not vector_atomics_for((8, 6), "3.9.0")  # RTX 30xx: scalar float atomics only
    assert not vector_atomics_for((7, 5), "3.9.0")
    assert not vector_atomics_for((9, 0), "3.1.0")  # PyTorch 2.5's Triton: no red.v2 emitted
    assert not uses_vector_atomics(torch.device("cpu"))
    assert uses_vector_atomics(torch.device("cpu"), True)  # a grid's own choice wins
