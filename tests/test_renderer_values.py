"""Values of the renderer's rays, lights and chunking, derived by hand from the documented
equations of dreamtext/renderer.py (a second pass over the lines the other suites leave loose)."""

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dreamtext.cameras import Poses, look_at
from dreamtext.renderer import RenderConfig, VolumeRenderer


def camera_at(eye: tuple[float, float, float]) -> Poses:
    eyes = torch.tensor([eye])
    return Poses(
        look_at(eyes), torch.zeros(1), torch.zeros(1), torch.ones(1), torch.full((1,), 50.0)
    )


def test_a_light_off_the_camera_is_seen_from_the_rays_point_closest_to_the_centre() -> None:
    # One pixel: the ray is the optical axis, o = (0, 0, 2), d = (0, 0, −1). Its point closest
    # to the scene centre is p = o − (o·d) d = (0, 0, 0), so a light at L gives l = L / |L|,
    # not the direction from the camera (which would tilt it towards −z).
    vr = VolumeRenderer(RenderConfig(occupancy_grid=False))
    lights = {(1.0, 0.0, 0.0): (1.0, 0.0, 0.0), (0.0, 3.0, 0.0): (0.0, 1.0, 0.0)}
    for light, expected in lights.items():
        rays = vr.camera_rays(camera_at((0.0, 0.0, 2.0)), 1, 1, torch.tensor([light]))
        torch.testing.assert_close(rays.directions, torch.tensor([[0.0, 0.0, -1.0]]))
        torch.testing.assert_close(rays.light_dirs, torch.tensor([expected]))


def packed(counts: list[int]):
    from dreamtext.samplers import RaySamples

    rays = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    t = torch.arange(len(rays), dtype=torch.float32)
    return RaySamples(rays, t, t + 1.0, len(counts))


def test_sample_chunks_fill_the_budget_exactly_and_hold_at_most_chunk_size_rays() -> None:
    # Rays of 2 samples at 1 query each and a budget of 4 queries: two rays fill a chunk exactly
    # (offsets 0, 2, 4, … ; the chunk from ray r ends at the last offset ≤ offsets[r] + 4).
    vr = VolumeRenderer(RenderConfig(occupancy_grid=False, chunk_size=3))
    chunks = vr.sample_chunks(packed([2, 2, 2, 2]), points_per_sample=1, budget=4)
    assert [(c.start, c.stop, lo, hi) for c, _, lo, hi in chunks] == [(0, 2, 0, 4), (2, 4, 4, 8)]
    # A ray costing more than the budget gets a chunk of its own.
    chunks = vr.sample_chunks(packed([1, 6, 1]), points_per_sample=1, budget=4)
    assert [(c.start, c.stop) for c, *_ in chunks] == [(0, 1), (1, 2), (2, 3)]
    # Samples that fit the budget still come in chunks of at most chunk_size = 3 rays.
    chunks = vr.sample_chunks(packed([0, 1, 0, 1, 0, 1, 0]), points_per_sample=1, budget=100)
    assert [(c.start, c.stop, lo, hi) for c, _, lo, hi in chunks] == [
        (0, 3, 0, 1),
        (3, 6, 1, 3),
        (6, 7, 3, 3),
    ]


def test_auto_backprop_counts_the_normal_queries_of_a_shaded_render() -> None:
    # "auto" defers when the graph would hold more than grad_chunk_points field queries: S
    # samples cost S queries in albedo and S · (1 + normal_queries) = 4 S shaded. With a
    # budget of 2 S the albedo render runs direct and the lambertian one defers.
    from test_renderer import SlabField, two_cameras

    class Slab(SlabField):
        normal_queries = 3

    field, poses = Slab(), two_cameras()[:1]
    cfg = RenderConfig(sampler="dense", num_steps=8, upsample_steps=0, occupancy_grid=False)
    samples = VolumeRenderer(cfg).render_train(field, poses, 3, 3, perturb=False).num_samples
    assert samples > 0
    cfg.grad_chunk_points = 2 * samples
    vr = VolumeRenderer(cfg)
    assert not vr.render_train(field, poses, 3, 3, "albedo", perturb=False).deferred
    assert vr.render_train(field, poses, 3, 3, "lambertian", perturb=False).deferred


def test_a_grid_decay_of_one_is_allowed_and_only_values_in_0_1_are() -> None:
    # render.grid_decay must be in (0, 1]: 1 keeps the grid's maximum forever.
    RenderConfig(grid_decay=1.0).validate()
    for bad in (0.0, 1.01):
        try:
            RenderConfig(grid_decay=bad).validate()
        except Exception as error:  # a DreamtextError naming the setting
            assert "grid_decay" in str(error)
        else:
            raise AssertionError(f"grid_decay {bad} accepted")


def test_only_a_run_before_its_first_grid_refresh_previews_from_a_refreshed_copy() -> None:
    # The trainer refreshes the grid after step `grid_update_every` (16): from then on the
    # run's own renderer is the one to show; before it, a copy refreshed once.
    from analytic_field import EmptyField

    vr = VolumeRenderer(RenderConfig(grid_update_every=16, grid_resolution=4))
    field = EmptyField(bound=1.0)
    assert vr.with_grid_refreshed(field, 16) is vr
    assert vr.with_grid_refreshed(field, 15) is not vr


def test_render_rays_lights_along_minus_d_by_default_and_keeps_each_rays_background() -> None:
    from test_renderer import SlabField, rays_down_z

    # The slab's normal (0, 0, 1) faces rays going down −z; the default light −d = (0, 0, 1)
    # gives n·l = 1, so lambertian = a (r + (1 − r)) = a, the albedo.
    slab, (rays_o, rays_d) = SlabField(sigma=50.0), rays_down_z(3)
    vr = VolumeRenderer(RenderConfig(sampler="dense", num_steps=64, occupancy_grid=False)).eval()
    with torch.no_grad():
        lit = vr.render_rays(slab, rays_o, rays_d, "lambertian", ambient_ratio=0.1)
        flat = vr.render_rays(slab, rays_o, rays_d, "albedo")
    torch.testing.assert_close(lit["rgb"], flat["rgb"])
    # An empty scene shows each ray its own background colour ([N, 3]), in order.
    background = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    with torch.no_grad():
        out = vr.render_rays(SlabField(sigma=0.0), rays_o, rays_d, background=background)
    torch.testing.assert_close(out["rgb"], background)


def test_a_deferred_backward_returns_the_loss_plus_the_weighted_regularisers() -> None:
    # backward(loss, λ) returns loss + Σ λ_name loss_name, deferred or not.
    from test_renderer import SlabField, two_cameras

    cfg = RenderConfig(sampler="dense", num_steps=16, upsample_steps=0, occupancy_grid=False)
    lambdas = {"opacity": 2.0}
    totals = {}
    for mode in ("direct", "deferred"):
        render = VolumeRenderer(cfg).render_train(
            SlabField(), two_cameras()[:1], 3, 3, perturb=False, backprop=mode
        )
        loss = render.images().mean()
        expected = loss.detach() + 2.0 * render.outputs["loss_opacity"].detach()
        assert float(render.outputs["loss_opacity"].detach()) > 0.0
        totals[mode] = render.backward(loss, lambdas)
        torch.testing.assert_close(totals[mode], expected)
    torch.testing.assert_close(totals["deferred"], totals["direct"])


class RowGathers(TorchDispatchMode):
    """Records the shape of every gather (``index``, ``index_select``) under ``with``."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket.__name__ in ("index", "index_select"):
            self.shapes.append(tuple(out.shape))
        return out


def test_an_albedo_composite_gathers_no_ray_or_light_direction_per_sample() -> None:
    # Albedo shading reads neither d nor l at a sample: the only per-sample [S, 3] gathers are
    # x = o + t d's origin and direction. Normals (lambertian) need d (orientation) and l too.
    from analytic_field import SphereField

    from dreamtext.renderer import RayBundle
    from dreamtext.samplers import RaySamples

    class Sphere(SphereField):  # the renderer's normals(x, σ) signature
        def normals(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
            return super().normals(x)

    field = Sphere(radius=0.5)
    rays = RayBundle(torch.zeros(2, 3), torch.tensor([[0.0, 0.0, 1.0]] * 2), torch.ones(2, 3))
    ray_indices = torch.tensor([0, 0, 0, 1, 1])
    samples = RaySamples(ray_indices, torch.arange(5.0) / 10, torch.arange(1.0, 6.0) / 10, 2)
    vr = VolumeRenderer(RenderConfig(occupancy_grid=False))
    gathered = {}
    for shading in ("albedo", "lambertian"):
        with torch.no_grad(), RowGathers() as gathers:
            vr.composite(field, rays, samples, shading, 0.1)
        gathered[shading] = [shape for shape in gathers.shapes if shape == (5, 3)]
    assert len(gathered["albedo"]) == 2
    assert len(gathered["lambertian"]) == 4
