"""The measures of benchmarks/normal_quality.py (rendered normals against a primitive's)."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
from benchmark_scripts import load_benchmark

from dreamtext import shapes
from dreamtext.field import FieldConfig


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("normal_quality", "normal_quality_benchmark")


class _RadialSphere(torch.nn.Module):
    """A sharp sphere of the prior's radius whose normals are ``x / |x|`` (exact) or that turned
    by ``tilt`` radians about y, whatever ``cfg.normals`` says."""

    def __init__(self, tilt: float = 0.0) -> None:
        super().__init__()
        self.cfg = FieldConfig()
        self.bound = 1.0
        self.tilt = tilt

    def density(self, x):
        return 200.0 * torch.sigmoid((shapes.SPHERE_RADIUS - x.norm(dim=-1)) / 0.002)

    def forward(self, x):
        return self.density(x), torch.full_like(x, 0.5)

    def normals(self, x, sigma=None):
        c, s = math.cos(self.tilt), math.sin(self.tilt)
        turn = torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
        return torch.nn.functional.normalize(x, dim=-1) @ turn.T

    def background(self, dirs):
        return torch.zeros_like(dirs)


def _args(**overrides) -> argparse.Namespace:
    values = {"views": 2, "polar": 60.0, "size": 24, "eps": [0.01]}
    values.update(overrides)
    return argparse.Namespace(**values)


def test_sdfs_are_zero_on_the_surfaces_and_their_normals_point_out(bench):
    on_sphere = torch.tensor([[0.0, shapes.SPHERE_RADIUS, 0.0]])
    on_cube = torch.tensor([[shapes.CUBE_HALF, 0.1, -0.2]])
    on_torus = torch.tensor([[shapes.TORUS_MAJOR + shapes.TORUS_MINOR, 0.0, 0.0]])
    for shape, point, normal in (
        ("sphere", on_sphere, [0.0, 1.0, 0.0]),
        ("cube", on_cube, [1.0, 0.0, 0.0]),
        ("torus", on_torus, [1.0, 0.0, 0.0]),
    ):
        assert bench.sdf(shape, point).abs().item() < 1e-6
        assert bench.sdf(shape, point * 0.9).item() < 0 < bench.sdf(shape, point * 1.1).item()
        assert torch.allclose(bench.true_normals(shape, point), torch.tensor([normal]), atol=1e-6)
    # σ* is half of σ_max on the surface, ~σ_max inside and ~0 outside.
    density = bench.target_density("sphere", torch.cat([on_sphere, on_sphere * 0.9]), 50.0, 0.005)
    assert density[0].item() == pytest.approx(25.0)
    assert density[1].item() > 49.9


def test_training_points_are_half_near_the_surface(bench):
    points = bench.training_points("torus", 1000, 0.05, torch.Generator().manual_seed(0))
    assert points.shape == (1000, 3)
    assert (bench.sdf("torus", points[500:]).abs() < 0.05).all()
    assert (points.abs() <= 1.0).all()


def test_exact_normals_measure_near_zero_and_turned_ones_their_turn(bench):
    exact = bench.normal_errors(_RadialSphere(), "sphere", _args())
    assert set(exact) == {
        "forward_difference ε=0.01",
        "central_difference ε=0.01",
        "analytic",
    }
    for row in exact.values():
        assert row["pixels"] > 0.9 * row["covered"] > 0
        assert row["mean"] < 2.0
        assert row["shade"] < 0.02
    turned = bench.normal_errors(_RadialSphere(tilt=0.5), "sphere", _args())
    for row in turned.values():
        # 0.5 rad (28.6°) about y turns a normal by less the more it points along y.
        assert 10.0 < row["mean"] < 28.7
        assert row["shade"] > 0.05


def test_a_short_run_writes_one_row_per_method_and_step(bench, tmp_path, monkeypatch):
    out = tmp_path / "RESULTS.md"
    argv = ["--shapes", "sphere", "--steps", "2", "--points", "256", "--size", "16"]
    argv += ["--views", "1", "--eps", "0.005", "0.01", "--out", str(out), "--cache", str(tmp_path)]
    bench.main(argv)
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| sphere |")]
    assert len(rows) == 5  # two steps each for forward and central differences, analytic once
    assert "python benchmarks/normal_quality.py --shapes sphere" in text
    assert list(tmp_path.glob("sphere-*.pt"))  # the fitted field is cached

    def no_fitting(*args):
        raise AssertionError("the cached field should have been reused")

    monkeypatch.setattr(bench, "training_points", no_fitting)
    bench.main(argv)
    assert len(out.read_text().splitlines()) > len(text.splitlines())


def test_a_separate_density_head_is_fitted_and_cached_apart(bench, tmp_path):
    out = tmp_path / "RESULTS.md"
    argv = ["--shapes", "sphere", "--steps", "2", "--points", "256", "--size", "16", "--views"]
    argv += ["1", "--out", str(out), "--cache", str(tmp_path), "--density-head", "separate"]
    bench.main(argv)
    assert "density head: separate" in out.read_text()
    (cached,) = tmp_path.glob("sphere-*.pt")
    assert cached.name.endswith("-separate.pt")
    assert "density_net.0.weight" in torch.load(cached)["field"]


def test_normals_are_taken_in_each_mlp_precision_asked(bench, monkeypatch):
    """A row per method and precision, each taken with the field's ``mlp_dtype`` set to that
    precision, and the field left in float32 afterwards."""
    field = _RadialSphere()
    field.mlp_dtype = None
    seen = []
    original = field.normals

    def normals(x, sigma=None):
        seen.append(field.mlp_dtype)
        return original(x, sigma)

    monkeypatch.setattr(field, "normals", normals)
    rows = bench.normal_errors(field, "sphere", _args(precisions=["fp32", "bf16"]))
    assert set(rows) == {
        f"{method}, MLP {precision}"
        for method in ("forward_difference ε=0.01", "central_difference ε=0.01", "analytic")
        for precision in ("fp32", "bf16")
    }
    assert set(seen) == {None, torch.bfloat16}
    assert field.mlp_dtype is None
    for row in rows.values():
        assert row["mean"] < 2.0


def test_a_field_fitted_on_the_gpu_is_cached_in_host_memory(bench, tmp_path):
    """``sds_step.py --fitted`` on CUDA fits on the GPU (``args.device``): the training points
    follow the field there (virtual CUDA raises where a host tensor meets a GPU one), and the
    cache holds CPU tensors, which a machine without a GPU loads too."""
    from virtual_cuda import virtual_cuda

    args = bench.fit_settings(steps=2, points=256, cache=tmp_path, device="cuda")
    with virtual_cuda():
        field, rmse = bench.fit("sphere", args)
        assert field.encoding.params.device.type == "cuda"
    assert rmse > 0
    (cached,) = tmp_path.glob("sphere-*.pt")
    state = torch.load(cached, map_location=None)["field"]
    assert {value.device.type for value in state.values()} == {"cpu"}
    again, _ = bench.fit("sphere", args)  # from the cache, on the CPU
    assert torch.equal(again.encoding.params, state["encoding.params"])
