"""benchmarks/run_phases.py: a whole command's CPU split by phase."""

from __future__ import annotations

import pytest
import yaml
from benchmark_scripts import load_benchmark
from tiny_models import TINY_SIZES


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("run_phases", "run_phases_benchmark")


def test_a_short_run_reports_its_training_phases_within_the_whole(
    bench, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("DREAMTEXT_CACHE", str(tmp_path / "cache"))
    workspace = tmp_path / "red"
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_SIZES))  # phases, not the preset's size
    command = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "2", "--no-export"]
    command += ["--config", str(tmp_path / "tiny.yaml")]
    assert bench.main(["--", *command, "--workspace", str(workspace)]) == 0
    assert (workspace / "log.jsonl").is_file()
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        if line.startswith("| ") and not line.startswith("| phase"):
            name, seconds, share = line.strip("| ").split(" | ")
            rows[name.replace("&nbsp;", "")] = (float(seconds), float(share.rstrip("%")))
    total = rows["whole command"][0]
    steps = rows["training steps"][0]
    parts = ("render", "guidance (SDS loss)", "backward", "optimiser")
    assert 0 < steps < rows["training (trainer.train)"][0] <= total
    # Each phase that ran has its row (one that did not is left out); a phase of two steps can
    # round to 0.00 s (the optimiser's, on a fast machine).
    assert all(0 <= rows[part][0] <= steps for part in parts), out
    assert sum(rows[part][0] for part in parts) <= steps + 1e-6
    assert "export" not in rows  # --no-export: a phase that did not run is left out
