"""benchmarks/launch_count.py: what it counts as a kernel launch and as a host sync."""

from __future__ import annotations

import pytest
import torch
from benchmark_scripts import load_benchmark

from dreamtext.compositing import segment_starts
from dreamtext.field import FieldConfig, NeRFField
from dreamtext.samplers import OccupancySampler, RaySamples


@pytest.fixture(scope="module")
def launch_count():
    return load_benchmark("launch_count", "launch_count")


def test_kernels_are_counted_and_views_and_allocations_are_not(launch_count):
    a = torch.arange(6.0)
    with launch_count.LaunchCounter() as counter:
        b = a.view(2, 3)
        torch.empty(3)
        (b + 1).t().contiguous()
    assert counter.total("render") == 2  # the add and the copy into a contiguous layout
    assert counter.sync_total() == 0


def test_syncs_are_counted_where_dreamtext_makes_them(launch_count):
    samples = RaySamples(torch.tensor([0, 0, 1]), torch.zeros(3), torch.ones(3), 2)
    value = torch.tensor(1.0)
    with launch_count.LaunchCounter() as counter:
        samples.rays(1, 2)  # reads two offsets on the host
        value.item()  # made here, not by dreamtext
        # The segment offsets are binary searches: their size is known without a sync.
        segment_starts(samples.ray_indices, 2)
    ((_, site),) = counter.syncs
    assert counter.sync_total() == 2 and site.startswith("samplers.py:")


def test_a_mask_written_through_syncs_unless_torch_makes_it_a_masked_fill(
    launch_count, monkeypatch
):
    monkeypatch.setattr(launch_count, "PACKAGE", __file__)  # count this file's calls
    x, mask = torch.zeros(4, 2), torch.tensor([True, False, True, False])
    with launch_count.LaunchCounter() as counter:
        x[mask] = 1.0  # masked_fill_: no wait
        x[mask, 1] = torch.tensor(2.0)  # one host element, the mask the one index tensor
        x[mask] = torch.tensor([3.0, 4.0])  # index_put_: the mask's nonzero waits
        x[mask, torch.tensor([0, 1])] = 5.0  # a second index tensor: index_put_
        x[1:] = 6.0  # no mask
    assert counter.sync_total() == 2
    assert x.tolist() == [[5.0, 4.0], [6.0, 6.0], [6.0, 6.0], [6.0, 6.0]]


def test_the_marcher_waits_for_the_device_twice_a_round(launch_count):
    """One sync to list the round's steps, one to read how many samples it keeps, how many rays
    march on and the next round's span (plus one for the rays that hit the scene and the first
    span)."""
    torch.manual_seed(0)
    field = NeRFField(FieldConfig(num_levels=4, log2_hashmap_size=12, hidden_dim=16))
    sampler = OccupancySampler(
        march_steps=64,
        window=4,
        alpha_threshold=1e-4,
        transmittance_threshold=1e-4,
        min_near=0.05,
        grid=None,
        chunk_rays=1 << 16,
        chunk_points=1 << 16,
    )
    origins = torch.tensor([[0.0, 0.0, 2.5]]).expand(32, 3)
    directions = torch.nn.functional.normalize(
        torch.randn(32, 3) * 0.1 + torch.tensor([0, 0, -1.0])
    )
    with launch_count.LaunchCounter() as counter:
        samples, _ = sampler.sample(field, origins, directions, perturb=True)
    rounds = counter.grid_calls["forward"]  # one field query a round
    assert len(samples) > 0 and rounds >= 3
    assert counter.sync_total("sampler") == 2 * rounds + 1
    # The grid's own ops are counted apart from the sampler's.
    assert counter.total("grid") > 0
    assert all(stage in ("sampler", "grid") for stage, _ in counter.ops)


def test_a_step_is_counted_by_stage(launch_count, capsys):
    assert launch_count.main(["--sizes", "8", "--shadings", "lambertian", "--sites"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| 8 | lambertian |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2] == "direct"
    sampler_ops, render_ops, backward_ops = (int(c) for c in cells[4:7])
    assert sampler_ops > 0 and render_ops > 0 and backward_ops > 0
    forward, backward = (int(c) for c in cells[7].split("/"))
    assert forward >= 2 and backward >= 2  # the replays: σ and albedo, and the normals
    assert "samplers.py:" in out
