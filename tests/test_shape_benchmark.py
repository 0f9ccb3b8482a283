"""The measures of benchmarks/shapes.py (voxel IoU of a trained field against a primitive)."""

from __future__ import annotations

import pytest
import torch
from analytic_field import SphereField
from benchmark_scripts import load_benchmark

from dreamtext import shapes


@pytest.fixture(scope="module")
def bench():
    module = load_benchmark("shapes", "shape_benchmark")
    # Coarser than the benchmark's 64³ grid and 5° turns, to keep the tests fast.
    module.IOU_RESOLUTION, module.ROTATION_STEP_DEG = 32, 15.0
    return module


def test_occupancy_of_an_opaque_sphere_is_the_sphere(bench):
    occupied, points = bench.field_occupancy(
        SphereField(radius=0.5, sigma_max=1000.0, width=0.02), bound=1.0
    )
    iou, _ = bench.best_iou(occupied, points, "sphere")
    rivals = {s: bench.best_iou(occupied, points, s)[0] for s in shapes.SHAPES if s != "sphere"}
    assert iou > 0.9
    assert max(rivals.values()) < iou


def test_occupancy_ignores_a_faint_halo_light_passes_through(bench):
    """Density too thin to stop half the light (optical depth < ln 2 across it) is not occupied."""
    faint = SphereField(radius=0.5, sigma_max=0.5)  # optical depth through the centre ≈ 0.5
    occupied, _ = bench.field_occupancy(faint, bound=1.0)
    assert not occupied.any()


def test_best_iou_undoes_a_turn_about_y(bench):
    axis = torch.linspace(-0.95, 0.95, 24)
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    turned_cube = shapes.inside("cube", bench.rotate_y(points, -30.0))
    iou, yaw = bench.best_iou(turned_cube, points, "cube")
    assert iou == pytest.approx(1.0)
    assert yaw % 90.0 == pytest.approx(30.0)  # the cube looks the same every 90°


def test_a_run_takes_the_field_and_render_settings_over_the_preset(bench, tmp_path, monkeypatch):
    seen = {}

    class Stop(Exception):
        pass

    def fake_train(cfg, overwrite=False):
        seen["cfg"], seen["overwrite"] = cfg, overwrite
        raise Stop

    monkeypatch.setattr(bench, "train", fake_train)
    with pytest.raises(Stop):
        bench.run(
            "a red cube",
            "split sides",
            tmp_path,
            0,
            {"sampler": "dense"},
            {"density_head": "separate"},
        )
    cfg = seen["cfg"]
    assert seen["overwrite"]  # a rerun of the benchmark in the same --root trains afresh
    assert cfg.field.density_head == "separate" and cfg.render.sampler == "dense"
    assert cfg.field.num_levels == 8  # the rest is still the builtin-shapes preset's


def test_a_run_takes_guidance_settings_under_the_rows_view_settings(bench, tmp_path, monkeypatch):
    """``--guidance``: its view thresholds reach the run's config beside the row's own view
    settings (split_sides), and the model stays the built-in prior."""
    seen = []

    class Stop(Exception):
        pass

    def fake_train(cfg, overwrite=False):
        seen.append(cfg)
        raise Stop

    monkeypatch.setattr(bench, "train", fake_train)
    given = {"views": {"bottom": 90, "split_sides": True}, "model": "elsewhere"}
    for views in ("split sides", "one side", "off"):
        with pytest.raises(Stop):
            bench.run("a colorful cube", views, tmp_path, 0, guidance=given)
    split, one, off = seen
    assert [c.guidance.views.bottom for c in seen] == [90.0] * 3
    assert [c.guidance.model for c in seen] == ["builtin:shapes"] * 3
    assert split.guidance.views.split_sides and off.guidance.views.split_sides
    assert not one.guidance.views.split_sides  # the row's setting wins over the given one
    assert not off.guidance.view_dependent and split.guidance.view_dependent
    assert given == {"views": {"bottom": 90, "split_sides": True}, "model": "elsewhere"}
    # Without --guidance the preset's thresholds stand.
    with pytest.raises(Stop):
        bench.run("a red cube", "split sides", tmp_path, 0)
    assert seen[-1].guidance.views.bottom == 150.0 and seen[-1].guidance.views.split_sides


def test_the_mesh_column_reads_the_exported_glbs_y_range_and_the_tail_below(bench, tmp_path):
    import trimesh

    (tmp_path / "mesh").mkdir()
    box = trimesh.creation.box(bounds=[[-0.4, -0.6, -0.4], [0.4, 0.42, 0.4]])
    box.export(tmp_path / "mesh" / "mesh.glb")
    low, high = bench.mesh_y_range(tmp_path)
    assert (low, high) == pytest.approx((-0.6, 0.42))
    result = bench.Result(
        "a red cube",
        "split sides",
        0.7,
        "cylinder",
        0.6,
        0.0,
        20.0,
        30.0,
        (low, high),
        shapes.y_extent("cube"),
    )
    assert result.tail == pytest.approx(0.2)
    assert "-0.600 … 0.420 (-0.40 … 0.40) | 0.200" in bench.table([result])
