"""Values of the samplers and the occupancy grid, derived by hand from their documented equations
(dreamtext/samplers.py's docstrings), for the lines the conformance suite leaves loose."""

import torch
from analytic_field import EmptyField

from dreamtext.samplers import DenseSampler, OccupancyGrid, OccupancySampler


class FogField(EmptyField):
    """σ = 0.01 everywhere in the cube of bound 1."""

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x),), 0.01, dtype=x.dtype, device=x.device)


def marcher(**overrides) -> OccupancySampler:
    """A small occupancy marcher without a grid or thresholds: every step is kept."""
    settings = dict(
        march_steps=8,
        window=4,
        alpha_threshold=0.0,
        transmittance_threshold=0.0,
        min_near=0.05,
        grid=None,
        chunk_rays=16,
        chunk_points=64,
    )
    settings.update(overrides)
    return OccupancySampler(**settings)


def test_a_field_empty_everywhere_leaves_every_cell_occupied() -> None:
    # g = max(decay · 0, 0) = 0 in every cell and min(τ, mean g) = 0, so g ≥ 0 holds everywhere:
    # a field whose density vanished is still sampled everywhere and can grow back.
    grid = OccupancyGrid(resolution=4, decay=0.95, threshold=10.0)
    grid.update(EmptyField(bound=1.0), chunk_points=1 << 10)
    assert grid.occupied.all()


def test_dense_samples_without_perturb_are_the_middles_of_k_equal_bins() -> None:
    # A ray from z = 2 down −z through the cube of bound 1: near 1, far 3. K = 4 stratified
    # samples at ξ = ½: t_k = 1 + (k + ½) / 4 · 2 = 1.25, 1.75, 2.25, 2.75; each interval ends
    # at the next sample, the last at far.
    sampler = DenseSampler(
        num_steps=4, upsample_steps=0, min_near=0.05, grid=None, chunk_rays=16, chunk_points=64
    )
    origins, directions = torch.tensor([[0.0, 0.0, 2.0]]), torch.tensor([[0.0, 0.0, -1.0]])
    samples, _ = sampler.sample(EmptyField(bound=1.0), origins, directions, perturb=False)
    torch.testing.assert_close(samples.t_starts, torch.tensor([1.25, 1.75, 2.25, 2.75]))
    torch.testing.assert_close(samples.t_ends, torch.tensor([1.75, 2.25, 2.75, 3.0]))
    assert samples.ray_indices.tolist() == [0, 0, 0, 0]


def test_cell_index_floors_each_coordinate_and_clamps_only_outside_points() -> None:
    # R = 4 over [−1, 1]^3: cell i spans [−1 + i/2, −1 + (i + 1)/2) on each axis; the flat index
    # is (i R + j) R + k, the order the update's meshgrid fills the grid in.
    grid = OccupancyGrid(resolution=4, decay=0.95, threshold=10.0)
    points = torch.tensor(
        [
            [-0.99, -0.99, -0.99],  # the corner cell (0, 0, 0)
            [-0.9, 0.1, 0.6],  # (0, 2, 3)
            [0.6, -0.4, -0.9],  # (3, 1, 0)
            [0.99, 0.99, 0.99],  # (3, 3, 3)
            [-1.5, 2.0, 0.2],  # outside: clamped to (0, 3, 2)
        ]
    )
    expected = [0, (0 * 4 + 2) * 4 + 3, (3 * 4 + 1) * 4 + 0, 63, (0 * 4 + 3) * 4 + 2]
    assert grid.cell_index(points, 1.0).tolist() == expected


def test_marcher_steps_without_perturb_tile_near_to_far_and_end_at_far() -> None:
    # Zero thresholds keep every step of a ray through a thin fog (σ = 0.01 everywhere; near 1,
    # far 3 through the cube of bound 1): nothing is pruned and the ray never stops. The cuts
    # are e_k = near + (k + ½) dt; the first step starts at near and the last one is cut at
    # far: consecutive, and their lengths add up to far − near = 2.
    sampler = marcher()
    origins, directions = torch.tensor([[0.0, 0.0, 2.0]]), torch.tensor([[0.0, 0.0, -1.0]])
    samples, _ = sampler.sample(FogField(), origins, directions, perturb=False)
    dt = 2.0 * 3.0**0.5 / 8
    assert samples.t_starts[0].item() == 1.0
    torch.testing.assert_close(samples.t_ends[0], torch.tensor(1.0 + 0.5 * dt))
    torch.testing.assert_close(samples.t_starts[1:], samples.t_ends[:-1])
    assert samples.t_ends[-1].item() == 3.0
    torch.testing.assert_close(samples.deltas.sum(), torch.tensor(2.0))
