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


class HalfNaNField(FogField):
    """σ NaN where x < 0 (a field whose MLP overflowed float32 there), 20 elsewhere."""

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x[:, 0] < 0, torch.nan, 20.0).to(x.dtype)


def test_a_nan_density_leaves_its_cell_occupied_and_its_value_finite() -> None:
    # torch.maximum kept a NaN σ in the grid for good, and g ≥ τ is false for NaN: every cell a
    # diverged field made NaN drew no sample again, so the run trained on, unchanged, with no
    # NaN for its divergence check to see. A NaN σ keeps decay · g (fmax) and its cell occupied.
    grid = OccupancyGrid(resolution=4, decay=0.5, threshold=10.0)
    grid.update(FogField(bound=1.0), chunk_points=1 << 10)  # g = 0.01 everywhere
    grid.update(HalfNaNField(bound=1.0), chunk_points=1 << 10)
    nan_half = grid.density[:2]  # cells i = 0, 1: x < 0
    torch.testing.assert_close(nan_half, torch.full_like(nan_half, 0.005))
    assert torch.equal(grid.density[2:], torch.full_like(grid.density[2:], 20.0))
    assert grid.occupied.all()  # the NaN half, and the other at g = 20 ≥ min(10, mean)
    # The field finite again: g = 0.01 and 10, τ' = min(10, mean 5.005); only the NaN half is empty.
    grid.update(FogField(bound=1.0), chunk_points=1 << 10)
    assert not grid.occupied[:2].any() and grid.occupied[2:].all()


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


def test_cell_index_is_int32_and_puts_edge_and_far_points_in_the_edge_cells() -> None:
    # R = 32 over [−1, 1]^3 (the built-in preset's grid): coordinate v = (x + 1) · 16, cell
    # clamp(⌊v⌋, 0, 31). x = ±1 exactly are v = 0 and v = 32 (the first and the last cell); a
    # point just inside +1 is still cell 31. Far outside, x = 1e30 is v = 1.6e31, past int64:
    # converted before clamping it wrapped to the integer minimum and landed in cell 0, the
    # opposite corner; clamped first it is cell 31. A NaN coordinate gives cell 0.
    grid = OccupancyGrid(resolution=32, decay=0.95, threshold=10.0)
    points = torch.tensor(
        [
            [-1.0, -1.0, -1.0],  # (0, 0, 0)
            [1.0, 1.0, 1.0],  # (31, 31, 31)
            [0.99999, -1.0, 1.0],  # (31, 0, 31)
            [-0.96875, 0.0, 0.96875],  # v = 0.5, 16, 31.5: (0, 16, 31)
            [1e30, -1e30, 3e9],  # (31, 0, 31)
            [float("nan"), 0.0, float("inf")],  # (0, 16, 31)
        ]
    )
    index = grid.cell_index(points, 1.0)
    assert index.dtype == torch.int32
    flat = [(i * 32 + j) * 32 + k for i, j, k in [(0, 0, 0), (31, 31, 31), (31, 0, 31)]]
    flat += [(0 * 32 + 16) * 32 + 31, (31 * 32 + 0) * 32 + 31, (0 * 32 + 16) * 32 + 31]
    assert index.tolist() == flat


def test_is_occupied_reads_each_points_cell_and_keeps_the_points_shape() -> None:
    # R = 2 over [−1, 1]^3, only cell (1, 0, 1) (flat index 5) occupied: points [2, 2, 3] give
    # [2, 2] answers, true exactly for the points in that cell.
    grid = OccupancyGrid(resolution=2, decay=0.95, threshold=10.0)
    grid.occupied.zero_()
    grid.occupied[1, 0, 1] = True
    points = torch.tensor(
        [
            [[0.5, -0.5, 0.5], [-0.5, -0.5, 0.5]],
            [[0.5, 0.5, 0.5], [0.9, -0.9, 0.1]],
        ]
    )
    assert grid.is_occupied(points, 1.0).tolist() == [[True, False], [False, True]]


def test_dense_intervals_skip_empty_cells_and_keep_their_own_bounds() -> None:
    # Two rays down −z through the cube of bound 1 (near 1, far 3), K = 4 at ξ = ½: starts
    # 1.25, 1.75, 2.25, 2.75 at z = 0.75, 0.25, −0.25, −0.75. A 2-cell grid with only z > 0
    # occupied (cells k = 1) keeps the first two intervals of each ray, with their own ends.
    grid = OccupancyGrid(resolution=2, decay=0.95, threshold=10.0)
    grid.occupied.zero_()
    grid.occupied[:, :, 1] = True
    sampler = DenseSampler(
        num_steps=4, upsample_steps=0, min_near=0.05, grid=grid, chunk_rays=16, chunk_points=64
    )
    origins = torch.tensor([[0.5, 0.5, 2.0], [-0.5, -0.5, 2.0]])
    directions = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    samples, _ = sampler.sample(EmptyField(bound=1.0), origins, directions, perturb=False)
    assert samples.ray_indices.tolist() == [0, 0, 1, 1]
    assert samples.t_starts.tolist() == [1.25, 1.75, 1.25, 1.75]
    assert samples.t_ends.tolist() == [1.75, 2.25, 1.75, 2.25]


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


def test_the_near_plane_is_stable_dreamfusions_helper_default():
    """No sample closer to the camera than 0.05. The thesis (ch. 6.1) gives no near plane; its
    code is "a forked version at March 2023, from a Stable-Dreamfusion" (ch. 6.1.2), whose
    nerf/renderer.py (ashawkey/stable-dreamfusion e496e35, 2023-03-31) has
    ``def near_far_from_bound(rays_o, rays_d, bound, type='cube', min_near=0.05):`` and
    ``near = torch.clamp(near, min=min_near)``. (Its renderer passed ``opt.min_near``, whose
    ``main.py`` default was then ``parser.add_argument('--min_near', type=float, default=0.1,
    ...)``: this pins the helper's value that dreamtext took, not that one.)"""
    import inspect

    from dreamtext.renderer import RenderConfig
    from dreamtext.samplers import near_far_from_bound

    assert RenderConfig().min_near == 0.05
    assert inspect.signature(near_far_from_bound).parameters["min_near"].default == 0.05
    # From the cube's centre the slab entry is behind the camera: the near plane is the bound.
    origin, direction = torch.zeros(1, 3, dtype=torch.float64), torch.tensor([[0.0, 0.0, 1.0]])
    near, far, hit = near_far_from_bound(origin, direction.double(), 1.0)
    assert (near.item(), far.item(), hit.item()) == (0.05, 1.0, True)


def test_sample_pdf_adds_nerfs_epsilon_to_every_weight():
    """``pdf_k = (w_k + ε) / Σ_j (w_j + ε)`` with ε = 1e-5: stable-dreamfusion's nerf/renderer.py
    (e496e35, the thesis's base code, ch. 6.1.2), "This implementation is from NeRF":
    ``weights = weights + 1e-5  # prevent nans``. Two bins [0, 1], [1, 2] of weights 1 and 0,
    one evenly placed sample (u = ½): it falls in the first bin, whose pdf is
    (1 + ε) / (1 + 2ε), at t = ½ (1 + 2ε) / (1 + ε) = 0.500005 (1e-6 gives 0.5000005)."""
    from dreamtext.samplers import sample_pdf

    edges = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64)
    weights = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    t = sample_pdf(edges, weights, 1, perturb=False)
    eps = 1e-5
    assert abs(t.item() - 0.5 * (1 + 2 * eps) / (1 + eps)) < 1e-9
