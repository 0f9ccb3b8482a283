"""The measures of benchmarks/command_startup.py (what a command costs to start)."""

from __future__ import annotations

from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("command_startup", "command_startup_benchmark")


def test_module_names_are_every_module_of_the_package_but_main(bench):
    names = bench.module_names(REPO)
    assert {"dreamtext", "dreamtext.config", "dreamtext.view", "dreamtext.view.static"} <= set(
        names
    )
    assert "dreamtext.__main__" not in names and "dreamtext.view.__init__" not in names
    assert len(names) == len(set(names))


def test_a_help_is_measured_and_imports_no_heavy_library(bench):
    """The peak is the command's own, whatever the process that measures it holds: a child's
    ru_maxrss counts what it was forked from until its exec, and a pytest worker holding the
    test models (1.3 GB, here 300 MB more) made `export --help` read 1.3 GB on CI."""
    held = bytearray(300 << 20)  # touched: resident in this process
    held[:: 1 << 12] = b"\x01" * len(held[:: 1 << 12])
    wall, rss = bench.run_command(["export", "--help"], REPO)
    del held
    assert 0 < wall < 60 and 5_000 < rss < 200_000  # KiB: a Python process, not torch's
    assert bench.heavy_imports(["export", "--help"], REPO) == set()
    assert bench.heavy_imports(["view", "--help"], REPO) == set()


def test_import_time_reads_the_modules_cumulative_time(bench):
    seconds = bench.import_time("dreamtext.flagtypes", REPO)
    assert 0 < seconds < 30
