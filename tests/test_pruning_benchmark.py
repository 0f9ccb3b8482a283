"""The measures of benchmarks/pruning.py (the marcher's thresholds against no pruning)."""

from __future__ import annotations

import sys

import pytest
from benchmark_scripts import BENCHMARKS, load_benchmark


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))  # it imports normal_quality.py, as run from there
    try:
        yield load_benchmark("pruning", "pruning_benchmark")
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_the_sweep_measures_every_pair_against_no_pruning(bench, tmp_path):
    out = tmp_path / "RESULTS.md"
    bench.main(["--shapes", "--views", "1", "--size", "12", "--out", str(out)])
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines()]
    rows = [[cell.strip() for cell in row] for row in rows if row and row[0].strip() == "fresh"]
    assert len(rows) == len(bench.THRESHOLDS)
    reference = rows[0]
    assert reference[1:3] == ["0", "0"]
    assert [float(v) for v in reference[5:]] == [0.0, 0.0, 0.0]  # itself
    samples = [float(row[3]) for row in rows]
    assert max(samples) == samples[0]  # pruning only removes samples
    # The fresh field's fog is never opaque enough for 1e-4 to cut anything; 1e-2 does, and
    # then the image and gradient differ.
    default = rows[bench.THRESHOLDS.index((1e-4, 1e-4))]
    assert float(default[3]) == samples[0] and float(default[7]) == 0.0
    coarse = rows[-1]
    assert float(coarse[3]) < samples[0]
    assert float(coarse[5]) > 1.0 and float(coarse[7]) > 1e-3


def test_fitted_fields_are_swept_with_the_fit_normal_quality_caches(bench, tmp_path, monkeypatch):
    """``--shapes sphere`` fits the field with normal_quality.py's settings (all of them: the
    fit also reads the density head and the device, which pruning.py once left out), shortened
    here to 2 steps."""
    import argparse

    real_fit, seen = bench.fit, []

    def short_fit(shape, args):
        seen.append(args)
        return real_fit(shape, argparse.Namespace(**{**vars(args), "steps": 2, "points": 256}))

    monkeypatch.setattr(bench, "fit", short_fit)
    out = tmp_path / "RESULTS.md"
    argv = ["--shapes", "sphere", "--views", "1", "--size", "8", "--cache", str(tmp_path)]
    bench.main([*argv, "--out", str(out)])
    (args,) = seen
    assert (args.steps, args.points, args.density_head, args.cache) == (
        800,
        1 << 14,
        "shared",
        tmp_path,
    )
    rows = [line for line in out.read_text().splitlines() if line.startswith("| sphere |")]
    assert len(rows) == len(bench.THRESHOLDS)
