"""The sums of benchmarks/field_cost.py (what the field costs per sample, albedo against
shaded)."""

from __future__ import annotations

import json

import pytest
import torch
from benchmark_scripts import load_benchmark

from dreamtext.field import FieldConfig, NeRFField

SMALL = {"num_levels": 2, "log2_hashmap_size": 10, "hidden_dim": 8, "num_blocks": 1}


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("field_cost", "field_cost_benchmark")


def test_sums_follow_the_renderer_both_ways(bench):
    costs = {
        "σ, albedo, no graph": 1.0,
        "σ, albedo, fwd+bwd": 3.0,
        "normals, no graph": 3.0,
        "normals, fwd+bwd": 9.0,
        "grid, no graph": 0.5,
        "grid, fwd+bwd": 1.5,
    }
    summary = bench.summarise(costs, joint=False)
    assert summary["albedo"] == 4.0  # the image pass and the replay
    assert summary["shaded"] == 16.0  # plus the normals at both
    assert summary["ratio"] == 4.0
    # (16 + r) / (4 + r) ≤ 2 needs r ≥ 8.
    assert summary["rest_for_2x"] == 8.0
    assert (16.0 + 8.0) / (4.0 + 8.0) == 2.0
    joint = dict(costs)
    joint["σ, albedo, normals, no graph"] = 2.0
    joint["σ, albedo, normals, fwd+bwd"] = 5.0
    summary = bench.summarise(joint, joint=True)
    assert summary["shaded"] == 7.0  # one pass gives all three: no separate normals
    assert summary["rest_for_2x"] == 0.0  # already under 2× with nothing else


def test_every_part_is_timed_and_leaves_no_gradient(bench):
    x = torch.rand(64, 3) - 0.5
    for normals, joint in (("forward_difference", False), ("analytic", True)):
        field = NeRFField(FieldConfig(normals=normals, **SMALL))
        costs = bench.per_point_costs(field, x, repeats=1)
        assert ("σ, albedo, normals, fwd+bwd" in costs) is joint
        assert len(costs) == (8 if joint else 6)
        assert all(value > 0 for value in costs.values())
        assert all(p.grad is None for p in field.parameters())


def test_a_row_per_field_and_the_section_appended(bench, tmp_path, capsys):
    out = tmp_path / "RESULTS.md"
    fields = [json.dumps(SMALL), json.dumps({**SMALL, "density_head": "separate"})]
    argv = ["--points", "64", "--repeats", "1", "--mlp-precision", "bf16", "--out", str(out)]
    bench.main([*argv, "--field", *fields])
    text = out.read_text()
    assert "## Field cost per sample" in text
    rows = [line for line in text.splitlines() if line.startswith("| `{")]
    assert len(rows) == 2 and '"density_head": "separate"' in rows[1]
    assert "python benchmarks/field_cost.py --points 64" in text and "MLP bf16" in text
    assert "ratio" in capsys.readouterr().out


def test_compile_adds_a_compiled_row_per_field(bench, tmp_path, monkeypatch):
    """``--compile``: each field measured eagerly, then with its MLPs compiled (traced without
    code generation here: inductor's CPU code would take a minute to build)."""
    compile_mlps = NeRFField.compile_mlps
    backends = []

    def traced(self, backend="inductor"):
        backends.append(backend)
        compile_mlps(self, backend="aot_eager")

    monkeypatch.setattr(NeRFField, "compile_mlps", traced)
    out = tmp_path / "RESULTS.md"
    argv = ["--points", "32", "--repeats", "1", "--compile", "--out", str(out)]
    bench.main([*argv, "--field", json.dumps(SMALL)])
    rows = [line for line in out.read_text().splitlines() if line.startswith("| `{")]
    assert len(rows) == 2
    assert "compiled" not in rows[0] and rows[1].startswith(f"| `{json.dumps(SMALL)} compiled`")
    assert backends == ["inductor"]
