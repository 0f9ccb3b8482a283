"""benchmarks/encoder_memory.py: the SDS encode's peak memory with and without
guidance.vae_checkpointing, measured on the CPU's allocator."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("encoder_memory", "encoder_memory_benchmark")


def test_checkpointing_lowers_the_encoders_peak_for_the_same_gradient(
    bench, tiny_sd_path: Path, tmp_path: Path, capsys
):
    """The tiny VAE's encode with its backward: the checkpointed one peaks lower (it keeps the
    blocks' inputs and recomputes one ResNet block at a time) and gives the same gradient."""
    out = tmp_path / "RESULTS.md"
    argv = ["--vae-config", str(tiny_sd_path / "vae" / "config.json"), "--render", "24"]
    assert bench.main([*argv, "--repeats", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")
        for line in printed.splitlines()
        if line.startswith(("| off |", "| on |"))
    }
    off, on = float(rows["off"][1]), float(rows["on"][1])
    assert 0 < on < 0.8 * off
    assert float(rows["on"][4].strip(" |")) < 1e-6
    assert "## The VAE encoder's peak with and without vae_checkpointing (CPU)" in out.read_text()


def test_the_cpu_peak_is_the_most_live_bytes_above_the_start(bench):
    """4 MiB tensors: a and b, a freed, c, then b + c: 12 MiB at the peak (b, c and the sum),
    whatever was allocated before."""
    before = torch.ones(1 << 20)

    def run():
        a = torch.ones(1 << 20)
        b = torch.ones(1 << 20)
        del a
        c = torch.ones(1 << 20)
        return b + c

    peak, result = bench.cpu_peak(run)
    assert peak == pytest.approx(12.0, abs=0.01)
    assert float(result[0]) == 2.0 and before.numel() == 1 << 20
