"""The renderer against closed forms, on small analytic fields that follow the Field contract.

Tests that take the ``sampler`` fixture are the conformance suite: every sampler (the dense
reference and the occupancy marcher) must pass them.
"""

import math

import pytest
import torch
from torch import Tensor, nn

from dreamtext.cameras import Poses, get_rays, look_at
from dreamtext.errors import DreamtextError
from dreamtext.renderer import RenderConfig, VolumeRenderer
from dreamtext.samplers import SAMPLERS, near_far_from_bound, sample_pdf

# Each sampler at a setting fine enough for the closed forms (within 1e-2).
SAMPLER_SETTINGS = {
    "dense": {"sampler": "dense", "num_steps": 256, "upsample_steps": 0},
    "occupancy": {"sampler": "occupancy", "march_steps": 512},
}


@pytest.fixture(params=SAMPLERS)
def sampler(request) -> str:
    return request.param


class SlabField(nn.Module):
    """``σ`` inside the slab ``|z| < a``, zero outside; constant albedo, normals and background."""

    def __init__(
        self,
        sigma: float = 2.0,
        half_width: float = 0.25,
        albedo: tuple[float, float, float] = (0.2, 0.6, 0.9),
        normal: tuple[float, float, float] = (0.0, 0.0, 1.0),
        background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__()
        self.bound = 1.0
        self.half_width = half_width
        self.sigma = nn.Parameter(torch.tensor(sigma))
        self.albedo = nn.Parameter(torch.tensor(albedo))
        self.normal = nn.Parameter(torch.tensor(normal))
        self.bg = torch.tensor(background)

    def density(self, x: Tensor) -> Tensor:
        return torch.where(x[:, 2].abs() < self.half_width, self.sigma, 0.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.density(x), self.albedo.expand(x.shape[0], 3)

    def normals(self, x: Tensor, sigma: Tensor | None = None) -> Tensor:
        return self.normal.expand(x.shape[0], 3)

    def background(self, dirs: Tensor) -> Tensor:
        return self.bg.expand(dirs.shape[0], 3)


class BoxField(SlabField):
    """``σ`` inside the cube ``max(|x|, |y|, |z|) < a``, zero outside."""

    def density(self, x: Tensor) -> Tensor:
        return torch.where(x.abs().amax(dim=-1) < self.half_width, self.sigma, 0.0)


class BallField(SlabField):
    """``σ`` inside the ball ``|x| < a``, zero outside."""

    def density(self, x: Tensor) -> Tensor:
        return torch.where(x.norm(dim=-1) < self.half_width, self.sigma, 0.0)


class Counting(nn.Module):
    """Wraps a field; counts the points ``forward`` and ``normals`` are asked about, and the
    largest single call of any of its queries."""

    def __init__(self, inner: SlabField) -> None:
        super().__init__()
        self.inner = inner
        self.bound = inner.bound
        self.points = 0
        self.normal_points = 0
        self.largest_call = 0

    def density(self, x: Tensor) -> Tensor:
        self.largest_call = max(self.largest_call, x.shape[0])
        return self.inner.density(x)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.points += x.shape[0]
        self.largest_call = max(self.largest_call, x.shape[0])
        return self.inner(x)

    def normals(self, x: Tensor, sigma: Tensor | None = None) -> Tensor:
        self.normal_points += x.shape[0]
        return self.inner.normals(x, sigma)

    def background(self, dirs: Tensor) -> Tensor:
        return self.inner.background(dirs)


def renderer(sampler: str = "dense", **overrides) -> VolumeRenderer:
    """An eval-mode renderer (deterministic samples) without the grid unless asked."""
    settings = {**SAMPLER_SETTINGS[sampler], "occupancy_grid": False}
    settings.update(overrides)
    return VolumeRenderer(RenderConfig(**settings)).eval()


def rays_down_z(n: int = 5) -> tuple[Tensor, Tensor]:
    """``n`` parallel rays from ``z = 2`` looking along ``−z`` through the slab."""
    xy = torch.linspace(-0.8, 0.8, n)
    rays_o = torch.stack([xy, xy.flip(0), torch.full((n,), 2.0)], dim=-1)
    rays_d = torch.tensor([0.0, 0.0, -1.0]).expand(n, 3)
    return rays_o, rays_d


def two_cameras(distance: float = 1.5) -> Poses:
    eye = torch.tensor([[0.0, 0.3, distance], [distance, 0.0, 0.0]])
    return Poses(
        look_at(eye), torch.zeros(2), torch.zeros(2), torch.ones(2), torch.full((2,), 50.0)
    )


def test_near_far_are_the_cube_entry_and_exit() -> None:
    rays_o = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 0.0], [2.0, 2.0, 2.0]])
    rays_d = torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [-1.0, -1.0, -1.0]]) / torch.tensor(
        [[1.0], [1.0], [math.sqrt(3.0)]]
    )
    near, far, hit = near_far_from_bound(rays_o, rays_d, bound=1.0, min_near=0.05)
    s3 = math.sqrt(3.0)
    assert torch.allclose(near, torch.tensor([1.0, 0.05, s3]), atol=1e-5)
    assert torch.allclose(far, torch.tensor([3.0, 1.0, 3.0 * s3]), atol=1e-5)
    assert hit.all()


def test_rays_that_miss_or_point_away_do_not_hit() -> None:
    rays_o = torch.tensor([[0.0, 2.0, 2.0], [0.0, 0.0, 2.0], [1.5, 0.0, 0.0]])
    rays_d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    near, far, hit = near_far_from_bound(rays_o, rays_d, bound=1.0)
    assert not hit.any()
    assert torch.equal(near, far)


def test_missed_rays_show_the_background_without_querying_the_field(sampler: str) -> None:
    field = Counting(SlabField(sigma=50.0))
    rays_o = torch.tensor([[0.0, 2.0, 2.0], [3.0, 0.0, 0.0]])
    rays_d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, 1.0]])
    out = renderer(sampler).render_rays(
        field, rays_o, rays_d, background=torch.tensor([0.3, 0.4, 0.5])
    )
    assert torch.equal(out["opacity"], torch.zeros(2))
    assert torch.allclose(out["rgb"], torch.tensor([0.3, 0.4, 0.5]).expand(2, 3))
    assert field.points == 0


def test_slab_opacity_and_colour_match_the_closed_form(sampler: str) -> None:
    sigma, a = 2.0, 0.25
    field = SlabField(sigma=sigma, half_width=a)
    rays_o, rays_d = rays_down_z()
    out = renderer(sampler).render_rays(field, rays_o, rays_d)
    opacity = 1.0 - math.exp(-sigma * 2.0 * a)
    expected_rgb = field.albedo.detach() * opacity + (1.0 - opacity) * field.bg
    assert torch.allclose(out["opacity"], torch.full((5,), opacity), atol=1e-2)
    assert torch.allclose(out["rgb"], expected_rgb.expand(5, 3), atol=1e-2)


def test_importance_samples_keep_the_closed_form() -> None:
    sigma, a = 2.0, 0.25
    field = SlabField(sigma=sigma, half_width=a)
    rays_o, rays_d = rays_down_z()
    out = renderer(num_steps=256, upsample_steps=64).render_rays(field, rays_o, rays_d)
    opacity = 1.0 - math.exp(-sigma * 2.0 * a)
    assert torch.allclose(out["opacity"], torch.full((5,), opacity), atol=1e-2)


def test_slab_depth_is_the_expected_termination_distance(sampler: str) -> None:
    sigma, a = 4.0, 0.25
    field = SlabField(sigma=sigma, half_width=a)
    rays_o, rays_d = rays_down_z()
    out = renderer(sampler).render_rays(field, rays_o, rays_d)
    # ∫_0^L σ e^{−σs} (t0 + s) ds with t0 the slab entry and L its thickness.
    t0, length = 2.0 - a, 2.0 * a
    decay = math.exp(-sigma * length)
    depth = t0 * (1.0 - decay) + 1.0 / sigma - decay * (length + 1.0 / sigma)
    assert torch.allclose(out["depth"], torch.full((5,), depth), atol=1e-2)


@pytest.mark.parametrize("perturb", [False, True])
def test_inverse_cdf_puts_all_samples_in_the_only_weighted_bin(perturb: bool) -> None:
    # Seeded: the ε of each empty bin leaves ~1% of random draws a sample outside the bin.
    torch.manual_seed(0)
    edges = torch.linspace(0.0, 1.0, 9).expand(4, 9)
    weights = torch.zeros(4, 8)
    weights[:, 3] = 1.0
    t = sample_pdf(edges, weights, 32, perturb)
    assert t.shape == (4, 32)
    assert ((t >= 3 / 8) & (t <= 4 / 8)).all()


def test_inverse_cdf_splits_samples_in_proportion_to_the_weights() -> None:
    edges = torch.tensor([[0.0, 1.0, 3.0]])
    weights = torch.tensor([[1.0, 3.0]])
    t = sample_pdf(edges, weights, 100, perturb=False)
    assert int((t < 1.0).sum()) == 25
    assert torch.all(t[:, 1:] >= t[:, :-1])


def test_occupancy_grid_is_all_occupied_before_the_first_update() -> None:
    vr = renderer(occupancy_grid=True, grid_resolution=8)
    assert vr.grid.occupied.all()


def test_occupancy_grid_updates_only_every_few_steps() -> None:
    vr = renderer(occupancy_grid=True, grid_resolution=8, grid_update_every=16)
    field = BallField(sigma=50.0, half_width=0.3)
    assert not vr.update_occupancy(field, 5)
    assert vr.grid.occupied.all()
    assert vr.update_occupancy(field, 32)
    assert not vr.grid.occupied.all()


def test_occupancy_grid_marks_the_ball_occupied_and_far_cells_empty() -> None:
    res, radius = 16, 0.3
    vr = renderer(occupancy_grid=True, grid_resolution=res)
    vr.update_occupancy(BallField(sigma=50.0, half_width=radius), step=0)
    centres = (torch.arange(res) + 0.5) / res * 2.0 - 1.0
    grid = torch.stack(torch.meshgrid(centres, centres, centres, indexing="ij"), dim=-1)
    distance = grid.norm(dim=-1)
    half_diagonal = math.sqrt(3.0) * (1.0 / res)
    inside = distance + half_diagonal < radius
    outside = distance - half_diagonal > radius
    assert inside.any()
    assert vr.grid.occupied[inside].all()
    assert not vr.grid.occupied[outside].any()


def test_grid_skipping_renders_the_same_image_from_fewer_queries(sampler: str) -> None:
    # The box is aligned with the 16^3 grid's cells, so every cell is fully in or fully out.
    box = BoxField(sigma=20.0, half_width=0.25, background=(0.0, 0.0, 0.0))
    eye = torch.tensor([[1.2, 0.7, 1.5]])
    poses = Poses(look_at(eye), torch.zeros(1), torch.zeros(1), torch.ones(1), torch.tensor([50.0]))
    dense, skipping = Counting(box), Counting(box)
    settings = {"num_steps": 64, "upsample_steps": 32, "march_steps": 256}
    without = renderer(sampler, **settings).render(dense, poses, 12, 12)
    vr = renderer(sampler, **settings, occupancy_grid=True, grid_resolution=16)
    vr.update_occupancy(box, step=0)
    with_grid = vr.render(skipping, poses, 12, 12)
    assert without["opacity"].max() > 0.9
    assert torch.allclose(with_grid["rgb"], without["rgb"], atol=1e-4)
    assert torch.allclose(with_grid["opacity"], without["opacity"], atol=1e-4)
    assert skipping.points < dense.points / 4


def test_lambertian_with_the_light_along_the_normal_equals_albedo(sampler: str) -> None:
    field = SlabField(sigma=3.0, normal=(0.0, 0.0, 1.0))
    rays_o, rays_d = rays_down_z()
    light = torch.tensor([0.0, 0.0, 1.0]).expand(5, 3)
    vr = renderer(sampler)
    lit = vr.render_rays(field, rays_o, rays_d, "lambertian", light, ambient_ratio=0.1)
    flat = vr.render_rays(field, rays_o, rays_d, "albedo")
    assert torch.allclose(lit["rgb"], flat["rgb"], atol=1e-5)


@pytest.mark.parametrize("light_direction", [(1.0, 0.0, 0.0), (0.0, 0.0, -1.0)])
def test_lambertian_lit_from_the_side_or_behind_leaves_the_ambient_part(
    light_direction: tuple[float, float, float], sampler: str
) -> None:
    field = SlabField(sigma=50.0, background=(0.0, 0.0, 0.0))
    rays_o, rays_d = rays_down_z()
    light = torch.tensor(light_direction).expand(5, 3)
    out = renderer(sampler).render_rays(
        field, rays_o, rays_d, "lambertian", light, ambient_ratio=0.25
    )
    expected = 0.25 * field.albedo.detach() * out["opacity"][:, None]
    assert torch.allclose(out["rgb"], expected, atol=1e-5)


def test_textureless_shading_of_a_red_field_is_grey(sampler: str) -> None:
    field = SlabField(sigma=50.0, albedo=(1.0, 0.0, 0.0), background=(0.0, 0.0, 0.0))
    rays_o, rays_d = rays_down_z()
    light = torch.tensor([0.0, math.sqrt(0.75), 0.5]).expand(5, 3)  # n·l = ½
    out = renderer(sampler).render_rays(
        field, rays_o, rays_d, "textureless", light, ambient_ratio=0.2
    )
    grey = (0.2 + 0.8 * 0.5) * out["opacity"]
    assert out["opacity"].min() > 0.99
    # Samples stop where T < 1e-4 (the transmittance threshold), which bounds the error.
    assert torch.allclose(out["rgb"], grey[:, None].expand(5, 3), atol=1e-4)


def test_default_light_in_render_is_a_headlight(sampler: str) -> None:
    field = SlabField(sigma=50.0, albedo=(0.5, 0.5, 0.5), background=(0.0, 0.0, 0.0))
    eye = torch.tensor([[0.0, 0.0, 2.0]])
    poses = Poses(look_at(eye), torch.zeros(1), torch.zeros(1), torch.ones(1), torch.tensor([40.0]))
    out = renderer(sampler).render(field, poses, 6, 6, shading="lambertian", ambient_ratio=0.0)
    _, rays_d = get_rays(poses.c2w, poses.fovy, 6, 6)
    expected = 0.5 * (-rays_d[..., 2]) * out["opacity"]
    assert torch.allclose(out["rgb"], expected[..., None].expand(1, 6, 6, 3), atol=1e-4)


def test_gradients_reach_the_field_parameters(sampler: str) -> None:
    field = SlabField(sigma=2.0)
    rays_o, rays_d = rays_down_z()
    vr = renderer(sampler, num_steps=32, upsample_steps=16, march_steps=128)
    out = vr.train().render_rays(field, rays_o, rays_d, "lambertian", -rays_d)
    (out["rgb"].sum() + out["loss_orientation"]).backward()
    assert field.sigma.grad is not None and field.sigma.grad.abs() > 0
    assert field.albedo.grad is not None and field.albedo.grad.abs().sum() > 0
    assert field.normal.grad is not None and field.normal.grad.abs().sum() > 0


def test_orientation_loss_is_zero_for_normals_facing_the_camera(sampler: str) -> None:
    field = SlabField(sigma=5.0, normal=(0.0, 0.0, 1.0))
    rays_o, rays_d = rays_down_z()
    out = renderer(sampler, need_normals=True).render_rays(field, rays_o, rays_d)
    assert out["loss_orientation"].item() == 0.0


def test_orientation_loss_counts_normals_facing_away(sampler: str) -> None:
    field = SlabField(sigma=5.0, normal=(0.0, 0.0, -1.0))
    rays_o, rays_d = rays_down_z()
    out = renderer(sampler, need_normals=True).render_rays(field, rays_o, rays_d)
    # Σ_i w_i (n·d)^2 with n·d = 1 is the opacity.
    assert out["loss_orientation"].item() == pytest.approx(out["opacity"].mean().item(), rel=1e-4)
    assert out["loss_orientation"].item() > 0.9


def test_normals_are_not_queried_for_albedo_shading(sampler: str) -> None:
    class NoNormals(SlabField):
        def normals(self, x: Tensor, sigma: Tensor | None = None) -> Tensor:
            raise AssertionError("normals queried")

    rays_o, rays_d = rays_down_z()
    out = renderer(sampler).render_rays(NoNormals(), rays_o, rays_d)
    assert torch.equal(out["normals"], torch.zeros(5, 3))
    assert out["loss_orientation"].item() == 0.0


def test_entropy_and_opacity_regularisers_on_half_transparent_rays(sampler: str) -> None:
    # σ · 2a = ln 2 makes every ray exactly half opaque: entropy 1 bit, opacity ½.
    field = SlabField(sigma=math.log(2.0) / 0.5, half_width=0.25)
    rays_o, rays_d = rays_down_z()
    out = renderer(sampler).render_rays(field, rays_o, rays_d)
    assert out["loss_opacity"].item() == pytest.approx(0.5, abs=1e-2)
    assert out["loss_entropy"].item() == pytest.approx(1.0, abs=1e-3)


def test_render_returns_images_and_eval_chunks_agree(sampler: str) -> None:
    field = BallField(sigma=10.0, half_width=0.5)
    poses = two_cameras()
    settings = {"num_steps": 32, "upsample_steps": 8, "march_steps": 128}
    whole = renderer(sampler, **settings).render(field, poses, 5, 7)
    small = {"chunk_size": 9, "chunk_points": 40}
    chunked = renderer(sampler, **settings, **small).render(field, poses, 5, 7)
    assert whole["rgb"].shape == (2, 5, 7, 3)
    assert whole["normals"].shape == (2, 5, 7, 3)
    assert whole["opacity"].shape == whole["depth"].shape == (2, 5, 7)
    for key in ("rgb", "opacity", "depth", "loss_entropy", "loss_opacity"):
        assert torch.allclose(whole[key], chunked[key], atol=1e-6)


def test_render_shadings_equals_one_render_each_for_the_queries_of_one(sampler: str) -> None:
    """Previews show each camera in albedo and textureless: one sampling and one field query
    (normals included) serve every shading, and each image is the one its own render gives."""
    poses = two_cameras()
    settings = {"num_steps": 32, "upsample_steps": 8, "march_steps": 128, "chunk_points": 40}
    shadings = ("albedo", "textureless", "lambertian")
    field = Counting(BallField(sigma=10.0, half_width=0.5))
    both = renderer(sampler, **settings).render_shadings(field, poses, 5, 7, shadings)
    points, normal_points = field.points, field.normal_points
    field.points = field.normal_points = 0
    textureless = renderer(sampler, **settings).render(field, poses, 5, 7, "textureless")
    assert (points, normal_points) == (field.points, field.normal_points)
    assert field.largest_call <= 40
    for shading in shadings:
        alone = renderer(sampler, **settings).render(field, poses, 5, 7, shading)
        for key in ("rgb", "opacity", "depth"):
            assert torch.equal(both[shading][key], alone[key]), (shading, key)
    assert torch.equal(both["textureless"]["rgb"], textureless["rgb"])


def test_training_mode_jitters_the_samples(sampler: str) -> None:
    field = BallField(sigma=10.0, half_width=0.5)
    rays_o, rays_d = rays_down_z()
    vr = renderer(sampler, num_steps=16, march_steps=64)
    first, second = (vr.train().render_rays(field, rays_o, rays_d)["depth"] for _ in range(2))
    assert not torch.equal(first, second)
    vr.eval()
    assert torch.equal(
        vr.render_rays(field, rays_o, rays_d)["depth"],
        vr.render_rays(field, rays_o, rays_d)["depth"],
    )


def test_unknown_shading_is_a_user_error() -> None:
    rays_o, rays_d = rays_down_z()
    with pytest.raises(DreamtextError, match="shading"):
        renderer().render_rays(SlabField(), rays_o, rays_d, shading="phong")


def test_perturb_argument_overrides_the_mode(sampler: str) -> None:
    field = BallField(sigma=10.0, half_width=0.5)
    rays_o, rays_d = rays_down_z()
    vr = renderer(sampler, num_steps=16, upsample_steps=4, march_steps=64)
    vr.eval()
    jittered = [vr.render_rays(field, rays_o, rays_d, perturb=True)["depth"] for _ in range(2)]
    assert not torch.equal(*jittered)
    vr.train()
    fixed = [vr.render_rays(field, rays_o, rays_d, perturb=False)["depth"] for _ in range(2)]
    assert torch.equal(*fixed)


def test_render_takes_one_background_colour_per_camera(sampler: str) -> None:
    empty = SlabField(sigma=0.0)
    eye = torch.tensor([[0.0, 0.0, 2.0], [2.0, 0.0, 0.0]])
    poses = Poses(
        look_at(eye), torch.zeros(2), torch.zeros(2), torch.ones(2), torch.full((2,), 50.0)
    )
    colours = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 1.0]])
    out = renderer(sampler, num_steps=8, march_steps=16).render(
        empty, poses, 3, 4, background=colours
    )
    assert torch.equal(out["rgb"], colours[:, None, None, :].expand(2, 3, 4, 3))


def test_occupancy_grid_keeps_a_faint_scene_occupied() -> None:
    # σ = 5 is below the threshold 10, but above the mean density, so the ball stays occupied.
    # The ball holds the centre cells whole (their far corners at √3 · 0.25 = 0.433 < 0.45):
    # at 0.4, a cell's one random point fell outside it at some random states (seed 86).
    vr = renderer(occupancy_grid=True, grid_resolution=8, density_threshold=10.0)
    vr.update_occupancy(BallField(sigma=5.0, half_width=0.45), step=0)
    centre_cells = vr.grid.occupied[3:5, 3:5, 3:5]
    assert centre_cells.all()
    assert not vr.grid.occupied[0, 0, 0]


def test_occupancy_grid_density_decays_where_the_field_emptied() -> None:
    vr = renderer(occupancy_grid=True, grid_resolution=8, grid_decay=0.95)
    vr.update_occupancy(BallField(sigma=50.0, half_width=0.4), step=0)
    before = vr.grid.density.clone()
    vr.update_occupancy(SlabField(sigma=0.0), step=0)
    assert torch.allclose(vr.grid.density, 0.95 * before)
    assert before.max() == 50.0


def test_importance_samples_refine_the_bin_a_surface_begins_in():
    """Each coarse bin's weight was of σ at its start, so the bin an opaque surface begins in
    drew no fine samples (they went inside the slab): the front surface's depth stayed at the
    coarse step's error (0.016 at 64 steps), and more fine samples made it worse."""
    slab = SlabField(sigma=1000.0, half_width=0.25)  # its front surface at t = 1.75
    origins, directions = rays_down_z(3)
    torch.manual_seed(0)
    errors = {}
    for upsample in (0, 32):
        config = RenderConfig(
            sampler="dense", num_steps=64, upsample_steps=upsample, occupancy_grid=False
        )
        renderer = VolumeRenderer(config).eval()
        with torch.no_grad():
            depths = [
                renderer.render_rays(slab, origins, directions, perturb=True)["depth"][1]
                for _ in range(100)
            ]
        errors[upsample] = (torch.stack(depths) - 1.75).abs().mean().item()
    assert errors[0] > 0.01 and errors[32] < 0.004, errors


# ----------------------------------------------------------------------------------------------
# Formulas on values: each of these caught a one-character change the tests above let through


def test_the_orientation_loss_turns_normals_and_leaves_density_alone():
    """DreamFusion's orientation term Σ stopgrad(w) max(0, n·d)²: without the stop-gradient
    it trains density down instead of turning the normals."""
    field = SlabField(sigma=5.0, normal=(0.0, 0.0, -1.0))  # facing away from the rays' origin
    rays_o, rays_d = rays_down_z()
    out = renderer("occupancy", need_normals=True).render_rays(field, rays_o, rays_d)
    out["loss_orientation"].backward()
    assert field.normal.grad is not None and field.normal.grad.abs().sum() > 0
    assert field.sigma.grad is None or field.sigma.grad.item() == 0.0


def test_the_orientation_loss_squares_the_cosine():
    """A normal 60° from the ray (n·d = ½): each ray's term is ¼ of its opacity (½ unsquared)."""
    field = SlabField(sigma=5.0, normal=(math.sqrt(0.75), 0.0, -0.5))
    rays_o, rays_d = rays_down_z()
    out = renderer("dense", need_normals=True).render_rays(field, rays_o, rays_d)
    expected = 0.25 * out["opacity"].mean().item()
    assert out["loss_orientation"].item() == pytest.approx(expected, rel=1e-4)


def test_depth_is_where_the_field_was_queried():
    """One opaque interval [1.0, 1.5], queried at its start (x = o + t_start d): depth 1.0."""
    from dreamtext.renderer import RayBundle
    from dreamtext.samplers import RaySamples

    field = SlabField(sigma=1000.0, half_width=5.0)
    rays = RayBundle(torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1.0]]), torch.zeros(1, 3))
    one = RaySamples(torch.zeros(1, dtype=torch.long), torch.tensor([1.0]), torch.tensor([1.5]), 1)
    with torch.no_grad():
        out = VolumeRenderer(RenderConfig(occupancy_grid=False)).composite(
            field, rays, one, "albedo", 0.1
        )
    assert out["depth"].item() == pytest.approx(1.0, abs=1e-6)


def test_the_background_term_carries_the_opacity_gradient():
    """A slab of thickness L = 0.5 on a white background: rgb = a (1 − e^{−σL}) + bg e^{−σL}, so
    ∂Σ_c rgb_c/∂σ = Σ_c (a_c − bg_c) L e^{−σL} = (1.7 − 3) · 0.5 · e^{−1} = −0.2391 at σ = 2.
    With the background's (1 − opacity) detached it is −0.79: SDS could not carve against the
    background."""
    field = SlabField(sigma=2.0, half_width=0.25)
    rays_o, rays_d = rays_down_z(1)
    renderer("dense").render_rays(field, rays_o, rays_d)["rgb"].sum().backward()
    expected = (0.2 + 0.6 + 0.9 - 3.0) * 0.5 * math.exp(-1.0)
    assert field.sigma.grad.item() == pytest.approx(expected, abs=5e-3)


def test_a_background_per_pixel_lands_on_its_pixel():
    """``background: [B, H, W, 3]`` on an empty scene is the image itself."""
    empty = SlabField(sigma=0.0)
    background = torch.rand(1, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    out = renderer("occupancy", march_steps=16).render(
        empty, two_cameras()[:1], 2, 3, background=background
    )
    assert torch.equal(out["rgb"], background)


def test_inverse_cdf_sampling_normalises_weights_that_sum_below_one():
    """Compositing weights sum to the ray's opacity (≤ 1): [0.1, 0.3] over bins [0, 1], [1, 3]
    split the samples as [1, 3] do, a quarter in the first bin."""
    t = sample_pdf(torch.tensor([[0.0, 1.0, 3.0]]), torch.tensor([[0.1, 0.3]]), 100, False)
    assert int((t < 1.0).sum()) == 25


def test_inverse_cdf_sampling_takes_evenly_spaced_quantiles():
    """Two equal bins [0, 1], [1, 2], two samples without jitter: u = ¼, ¾ → t = ½, 3/2."""
    t = sample_pdf(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[1.0, 1.0]]), 2, False)
    torch.testing.assert_close(t, torch.tensor([[0.5, 1.5]]))
