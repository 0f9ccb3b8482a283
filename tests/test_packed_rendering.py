"""Packed samples: the compositor's segmented sums, the occupancy marcher's pruning, bounded
renders without gradients, and deferred backprop giving the one-pass gradients."""

import math

import pytest
import torch
import torch.nn.functional as F
from test_renderer import BallField, Counting, SlabField, renderer, two_cameras

from dreamtext.compositing import accumulate, exclusive_segment_sum, packed_weights
from dreamtext.field import FieldConfig, NeRFField
from dreamtext.regularisers import regularisers, weighted_sum
from dreamtext.renderer import RenderConfig, VolumeRenderer
from dreamtext.samplers import SAMPLERS, RaySamples

LAMBDAS = {"entropy": 0.3, "opacity": 0.2, "orientation": 0.5}
# The gradient tests run on a GPU where there is one (a GPU session runs this file as it is).
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def ragged(counts: list[int]) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))


def test_exclusive_segment_sum_restarts_at_every_ray() -> None:
    values = torch.tensor([1.0, 2.0, 3.0, 10.0, 20.0, 5.0])
    rays = ragged([3, 2, 0, 1])
    out = exclusive_segment_sum(values, rays, num_rays=4)
    assert torch.equal(out, torch.tensor([0.0, 1.0, 3.0, 0.0, 10.0, 0.0]))


def test_exclusive_segment_sum_gradient_is_the_segmented_suffix_sum() -> None:
    values = torch.rand(7, dtype=torch.float64, requires_grad=True)
    rays = ragged([4, 3])
    assert torch.autograd.gradcheck(lambda v: exclusive_segment_sum(v, rays, 2), (values,))
    exclusive_segment_sum(values, rays, 2).sum().backward()
    # Sample j feeds every later sample of its ray: 3, 2, 1, 0 and 2, 1, 0.
    assert torch.equal(values.grad, torch.tensor([3.0, 2, 1, 0, 2, 1, 0], dtype=torch.float64))


def test_packed_weights_equal_the_per_ray_quadrature() -> None:
    torch.manual_seed(0)
    counts = [5, 1, 0, 8, 3]
    rays = ragged(counts)
    sigma = torch.rand(len(rays)) * 5
    deltas = torch.rand(len(rays)) * 0.2
    weights, transmittance, alpha = packed_weights(sigma, deltas, rays, len(counts))
    start = 0
    for n in (c for c in counts if c):
        s, d = sigma[start : start + n], deltas[start : start + n]
        t = torch.exp(-torch.cat([torch.zeros(1), torch.cumsum(s * d, 0)[:-1]]))
        a = 1 - torch.exp(-s * d)
        torch.testing.assert_close(weights[start : start + n], t * a)
        torch.testing.assert_close(transmittance[start : start + n], t)
        torch.testing.assert_close(alpha[start : start + n], a)
        start += n
    opacity = accumulate(weights, rays, len(counts))
    assert opacity[2] == 0.0
    assert (opacity <= 1.0).all()


def test_packed_weights_keep_float32_precision_over_many_samples() -> None:
    # A million samples whose running sum reaches 1e6: each ray's own sums stay exact.
    n_rays, per_ray = 10_000, 100
    rays = torch.arange(n_rays).repeat_interleave(per_ray)
    optical = torch.full((n_rays * per_ray,), 0.01)
    out = exclusive_segment_sum(optical, rays, n_rays).view(n_rays, per_ray)
    expected = torch.arange(per_ray) * 0.01
    torch.testing.assert_close(out[-1], expected, atol=1e-6, rtol=0)


def test_an_infinite_density_is_opaque_and_leaves_every_ray_after_it_exact() -> None:
    """An ``exp`` density that overflowed (σ = inf), or a huge finite one, is an opaque sample:
    its α is 1 and nothing behind it is seen. It made the transmittance NaN (∞ − ∞ in the
    prefix sum), and a huge finite one swamped the float64 prefix sum of the rays after it."""
    counts = [3, 2, 2]
    rays = ragged(counts)
    sigma = torch.tensor([0.5, math.inf, 0.3, 1e30, 2.0, 0.7, 0.2])
    deltas = torch.full((7,), 0.1)
    weights, transmittance, alpha = packed_weights(sigma, deltas, rays, 3)
    assert torch.isfinite(weights).all() and torch.isfinite(transmittance).all()
    assert alpha[1] == 1.0 and alpha[3] == 1.0
    assert transmittance[2] < 1e-20 and transmittance[4] < 1e-20
    torch.testing.assert_close(weights[1], transmittance[1])  # all that reaches it stops there
    alone = packed_weights(sigma[5:], deltas[5:], torch.zeros(2, dtype=torch.long), 1)
    for got, expected in zip((weights, transmittance, alpha), alone, strict=True):
        torch.testing.assert_close(got[5:], expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("sampler", ["dense", "occupancy"])
def test_a_field_with_infinite_density_renders_finite_images_and_gradients(sampler: str) -> None:
    """A ball whose density overflowed to inf: the samplers and the compositor render it as an
    opaque ball, and its gradients are finite (they were NaN and poisoned the optimiser)."""
    ball = BallField(sigma=math.inf, half_width=0.4)
    vr = renderer(sampler, **({"upsample_steps": 8} if sampler == "dense" else {}))
    out = vr.render(ball, two_cameras(), 16, 16, shading="albedo", perturb=False)
    for key in ("rgb", "opacity", "depth"):
        assert torch.isfinite(out[key]).all(), key
    assert out["opacity"].max() == 1.0 and out["opacity"].min() == 0.0
    out["rgb"].sum().backward()
    assert torch.isfinite(ball.albedo.grad).all() and (ball.albedo.grad > 0).all()
    assert torch.isfinite(ball.sigma.grad)


def test_marcher_stops_behind_an_opaque_surface() -> None:
    slab = SlabField(sigma=1000.0, half_width=0.25)
    opaque = Counting(slab)
    rays_o = torch.tensor([[0.0, 0.0, 2.0], [0.3, -0.2, 2.0]])
    rays_d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    vr = renderer("occupancy", march_steps=512, march_window=8, occupancy_grid=True)
    vr.update_occupancy(slab, step=0)  # the slab's cells, |z| < 0.25, are the occupied ones
    with torch.no_grad():
        out = vr.render_rays(opaque, rays_o, rays_d)
    assert out["opacity"].min() > 0.999
    # Each ray crosses ~74 occupied steps of the slab (dt = 2√3/512); it stops after one round
    # of 8, and the empty space before the slab costs no query.
    assert opaque.points == 2 * 8
    samples, values = vr.sampler.sample(opaque, rays_o, rays_d, perturb=False)
    _, transmittance, alpha = packed_weights(values.sigma, samples.deltas, samples.ray_indices, 2)
    assert (transmittance > 1e-4).all() and (alpha > 1e-4).all()
    assert len(samples) < 10


class CallCounting(torch.nn.Module):
    """Wraps a field; counts its ``forward`` calls (one a marcher round, as chunks stay whole)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.bound, self.calls = inner, inner.bound, 0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        return self.inner(x)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.density(x)


@pytest.mark.parametrize("window", [2, 4])
def test_the_marchers_widening_rounds_keep_the_same_samples_in_fewer_rounds(window) -> None:
    """Each round takes ``march_window_growth`` times the occupied steps of the one before, so a
    ray through fog (a fresh field: no ray stops before the far side) takes O(log n) rounds for
    its n steps instead of n / window; which steps are kept does not depend on the rounds, so
    without ``perturb`` the samples and their values are those of a fixed window."""
    torch.manual_seed(0)
    fog = NeRFField(FieldConfig(num_levels=4, log2_hashmap_size=12, hidden_dim=16))
    rays_o = torch.tensor([[0.0, 0.0, 2.5]]).expand(24, 3)
    rays_d = F.normalize(torch.randn(24, 3) * 0.15 + torch.tensor([0.0, 0.0, -1.0]), dim=-1)
    marched = {}
    for growth in (1, 2, 3):
        vr = renderer("occupancy", march_steps=128, march_window=window, march_window_growth=growth)
        counting = CallCounting(fog)
        samples, values = vr.sampler.sample(counting, rays_o, rays_d, perturb=False)
        marched[growth] = (samples, values, counting.calls)
    fixed_samples, fixed_values, fixed_rounds = marched[1]
    steps = torch.bincount(fixed_samples.ray_indices, minlength=24)
    assert (steps > 30).sum() >= 16  # most rays keep tens of faint samples: none stops early
    assert fixed_rounds >= steps.max() // window
    for growth in (2, 3):
        samples, values, rounds = marched[growth]
        assert torch.equal(samples.ray_indices, fixed_samples.ray_indices)
        assert torch.equal(samples.t_starts, fixed_samples.t_starts)
        assert torch.equal(samples.t_ends, fixed_samples.t_ends)
        torch.testing.assert_close(values.sigma, fixed_values.sigma)
        torch.testing.assert_close(values.albedo, fixed_values.albedo)
        # window · (1 + g + g² + …) steps after r rounds: at most one round more than log_g
        assert rounds <= math.ceil(math.log(steps.max() / window * (growth - 1) + 1, growth)) + 1
        assert rounds * 3 < fixed_rounds, (growth, rounds, fixed_rounds)


def test_marcher_with_zero_thresholds_keeps_every_step_to_the_far_side() -> None:
    """Thresholds of 0 (allowed by the config) turn pruning and early termination off: every
    step through the opaque slab is kept, where the defaults stop after a few."""
    slab = SlabField(sigma=1000.0, half_width=0.25)
    rays_o = torch.tensor([[0.0, 0.0, 2.0]])
    rays_d = torch.tensor([[0.0, 0.0, -1.0]])
    vr = renderer(
        "occupancy",
        march_steps=512,
        occupancy_grid=True,
        alpha_threshold=0.0,
        transmittance_threshold=0.0,
    )
    vr.update_occupancy(slab, step=0)
    samples, _ = vr.sampler.sample(slab, rays_o, rays_d, perturb=False)
    dt = 2.0 * math.sqrt(3.0) / 512
    # The occupied cells are the slab's, |z| ≤ 0.25 (a boundary of the 64³ grid's cells): 74 steps.
    assert len(samples) == pytest.approx(0.5 / dt, abs=1.5)
    with torch.no_grad():
        assert vr.render_rays(slab, rays_o, rays_d)["opacity"].item() > 0.999


def test_marcher_queries_only_occupied_cells() -> None:
    ball = BallField(sigma=20.0, half_width=0.3)
    counting = Counting(ball)
    vr = renderer("occupancy", occupancy_grid=True, grid_resolution=16)
    vr.update_occupancy(ball, step=0)
    queried = []
    original = counting.forward

    def record(x):
        queried.append(x)
        return original(x)

    counting.forward = record
    vr.render(counting, two_cameras(), 8, 8)
    points = torch.cat(queried)
    assert len(points) > 0
    assert vr.grid.is_occupied(points, 1.0).all()


@pytest.mark.parametrize("shading", ["albedo", "textureless"])
def test_marcher_renders_what_the_dense_reference_renders(shading: str) -> None:
    field = NeRFField(FieldConfig(num_levels=4, log2_hashmap_size=10, hidden_dim=16, num_blocks=1))
    poses = two_cameras()
    dense = renderer("dense", num_steps=512, upsample_steps=0).render(
        field, poses, 6, 6, shading=shading
    )
    marched = renderer("occupancy", march_steps=1024).render(field, poses, 6, 6, shading=shading)
    assert dense["opacity"].max() > 0.5
    torch.testing.assert_close(marched["rgb"], dense["rgb"], atol=1e-2, rtol=0)
    torch.testing.assert_close(marched["opacity"], dense["opacity"], atol=1e-2, rtol=0)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_renders_without_gradients_never_exceed_chunk_points(sampler: str) -> None:
    field = Counting(BallField(sigma=10.0, half_width=0.6))
    vr = renderer(sampler, num_steps=64, upsample_steps=16, march_steps=128, chunk_points=300)
    with torch.no_grad():
        vr.render(field, two_cameras(), 10, 10, shading="lambertian")
    assert 0 < field.largest_call <= 300
    field.largest_call = 0
    vr.update_occupancy(field, step=0)
    assert field.largest_call <= 300


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_render_without_gradients_samples_chunk_size_rays_at_a_time(sampler: str) -> None:
    """A turntable's 4 frames at 512 px sampled all of their ~1 M rays before compositing any:
    every sample of the image was held at once (2.3 GB). Now no sampling pass gets more than
    ``chunk_size`` rays, and the images (and both shadings of a preview) are the same."""
    field = small_field(1)
    settings = {"num_steps": 32, "upsample_steps": 8, "march_steps": 96}
    whole = renderer(sampler, **settings)
    pieces = renderer(sampler, **settings, chunk_size=37)  # 2 × 12 × 12 = 288 rays: 8 pieces
    largest = []
    sample = pieces.sampler.sample

    def counted(field, origins, directions, perturb):
        largest.append(len(origins))
        return sample(field, origins, directions, perturb)

    pieces.sampler.sample = counted
    with torch.no_grad():
        expected = whole.render(field, two_cameras(), 12, 12, shading="lambertian")
        got = pieces.render(field, two_cameras(), 12, 12, shading="lambertian")
        assert max(largest) == 37 and sum(largest) == 288
        for key in ("rgb", "opacity", "depth", "normals"):
            torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=0)
        assert expected["opacity"].max() > 0.5
        largest.clear()
        both = ("albedo", "textureless")
        expected = whole.render_shadings(field, two_cameras(), 12, 12, both)
        got = pieces.render_shadings(field, two_cameras(), 12, 12, both)
        assert max(largest) == 37 and sum(largest) == 288
        for shading in both:
            torch.testing.assert_close(
                got[shading]["rgb"], expected[shading]["rgb"], atol=1e-6, rtol=0
            )


def test_normals_are_computed_only_at_the_kept_samples() -> None:
    field = Counting(SlabField(sigma=1000.0, half_width=0.25))
    rays_o = torch.tensor([[0.0, 0.0, 2.0]])
    rays_d = torch.tensor([[0.0, 0.0, -1.0]])
    vr = renderer("occupancy")
    samples, _ = vr.sampler.sample(field, rays_o, rays_d, perturb=False)
    vr.render_rays(field, rays_o, rays_d, shading="lambertian")
    assert field.normal_points == len(samples) < 10


def small_field(seed: int = 0, **overrides) -> NeRFField:
    torch.manual_seed(seed)
    field = NeRFField(
        FieldConfig(
            **{
                "num_levels": 4,
                "log2_hashmap_size": 10,
                "hidden_dim": 16,
                "num_blocks": 1,
                "blob_radius": 0.6,
                **overrides,
            }
        ),
        device=DEVICE,
    )
    with torch.no_grad():
        field.encoding.params.uniform_(-0.3, 0.3)
    return field


def gradients_of(
    field: NeRFField, mode: str, sampler: str, shading: str, chunk: int, recompute: bool = True
):
    """Parameter gradients of ``⟨g, rgb⟩ + Σ λ loss`` for a fixed image gradient g."""
    torch.manual_seed(1)
    cfg = RenderConfig(
        sampler=sampler,
        num_steps=24,
        upsample_steps=8,
        march_steps=96,
        occupancy_grid=False,
        grad_chunk_points=chunk,
        recompute_field=recompute,
    )
    vr = VolumeRenderer(cfg).to(DEVICE).train()
    field.zero_grad(set_to_none=True)
    poses = two_cameras(1.6)
    render = vr.render_train(field, poses, 7, 5, shading=shading, backprop=mode)
    images = render.images()
    g = torch.linspace(-1, 1, images.numel(), device=images.device).view_as(images)
    loss = (images * g).sum()
    render.backward(loss, LAMBDAS)
    grads = {n: p.grad.clone() for n, p in field.named_parameters() if p.grad is not None}
    return grads, render


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("shading", ["albedo", "lambertian"])
def test_deferred_backprop_gives_the_one_pass_gradients(sampler: str, shading: str) -> None:
    field = small_field()
    direct, one = gradients_of(field, "direct", sampler, shading, chunk=1 << 20)
    deferred, chunked = gradients_of(field, "deferred", sampler, shading, chunk=200)
    assert not one.deferred and chunked.deferred
    assert chunked.chunks > 3
    assert direct.keys() == deferred.keys() and "encoding.params" in direct
    for name, grad in direct.items():
        # Chunks sum the same terms in another order: float32 rounding only.
        error = (deferred[name] - grad).norm() / grad.norm()
        assert error < 1e-4, (name, float(error))
    torch.testing.assert_close(chunked.outputs["rgb"], one.outputs["rgb"].detach())
    for key in ("loss_entropy", "loss_opacity", "loss_orientation"):
        torch.testing.assert_close(chunked.outputs[key], one.outputs[key].detach())


@pytest.mark.parametrize("normals", ["central_difference", "analytic"])
def test_deferred_backprop_gives_the_one_pass_gradients_with_other_normals(normals: str) -> None:
    """Central differences and analytic normals do not reuse σ(x): the replayed normals give
    it no gradient."""
    field = small_field()
    field.cfg.normals = normals
    direct, _ = gradients_of(field, "direct", "occupancy", "lambertian", chunk=1 << 20)
    deferred, chunked = gradients_of(field, "deferred", "occupancy", "lambertian", chunk=200)
    assert chunked.deferred and chunked.chunks > 3
    for name, grad in direct.items():
        error = (deferred[name] - grad).norm() / grad.norm()
        assert error < 1e-4, (name, float(error))


@pytest.mark.parametrize("normals", ["forward_difference", "analytic"])
def test_deferred_backprop_with_a_separate_density_head_gives_the_one_pass_gradients(
    normals: str,
) -> None:
    """σ from a density head of its own: the replay trains it, the table and the residual MLP
    as the one-pass render does. Forward differences run in float64: their quotient
    ``(σ(x + ε e_i) − σ(x)) / ε`` turns float32's rounding of σ into ~1e-4 of the head's
    output-weight gradient, which differs between two orders of summation; in float64 the two
    agree to ~1e-13. (Analytic normals have float32 outputs by design.)"""
    dtype = torch.float64 if normals == "forward_difference" else torch.float32
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        field = small_field(
            encoding="torch", density_head="separate", density_hidden_dim=8, normals=normals
        )
        direct, _ = gradients_of(field, "direct", "occupancy", "lambertian", chunk=1 << 20)
        deferred, chunked = gradients_of(field, "deferred", "occupancy", "lambertian", chunk=200)
    finally:
        torch.set_default_dtype(default)
    assert chunked.deferred and chunked.chunks > 3
    assert {"density_net.0.weight", "blocks.0.linear.weight", "encoding.params"} <= direct.keys()
    assert direct["density_net.0.weight"].dtype == dtype
    # Compositing sums in float32 whatever the field's type: on the CPU both renders sum a ray
    # in the same order, bit for bit; CUDA's atomic adds may round a ray's sums differently.
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10 if DEVICE.type == "cpu" else 1e-5
    for name, grad in direct.items():
        error = (deferred[name] - grad).norm() / grad.norm()
        assert error < tolerance, (name, float(error))


def test_auto_backprop_defers_only_large_renders() -> None:
    field = small_field()
    cfg = RenderConfig(march_steps=96, occupancy_grid=False, grad_chunk_points=500)
    vr = VolumeRenderer(cfg).to(DEVICE)
    small = vr.render_train(field, two_cameras()[:1], 2, 2)
    large = vr.render_train(field, two_cameras(), 12, 12)
    assert not small.deferred
    assert large.deferred


def test_regularisers_of_chunks_add_up_to_the_whole() -> None:
    opacity = torch.rand(10)
    orientation = torch.rand(10)
    whole = regularisers({"opacity": opacity, "orientation": orientation})
    parts = [
        regularisers({"opacity": opacity[s], "orientation": orientation[s]}, num_rays=10)
        for s in (slice(0, 3), slice(3, 10))
    ]
    for key, value in whole.items():
        torch.testing.assert_close(sum(p[key] for p in parts), value)
    total = weighted_sum(whole, {"entropy": 2.0, "opacity": 0.0, "orientation": 1.0})
    torch.testing.assert_close(total, 2.0 * whole["loss_entropy"] + whole["loss_orientation"])


def test_ray_samples_slice_by_ray_and_renumber() -> None:
    samples = RaySamples(ragged([2, 0, 3]), torch.arange(5.0), torch.arange(5.0) + 1, 3)
    part = samples.rays(1, 3)
    assert part.num_rays == 2
    assert torch.equal(part.ray_indices, torch.tensor([1, 1, 1]))
    assert torch.equal(part.t_starts, torch.tensor([2.0, 3.0, 4.0]))
    assert math.isclose(float(part.deltas.sum()), 3.0)


@pytest.mark.parametrize(
    ("shading", "normals"),
    [
        ("albedo", "forward_difference"),
        ("lambertian", "forward_difference"),
        ("lambertian", "analytic"),
    ],
)
def test_recomputing_the_field_gives_the_same_gradients_and_keeps_little(
    shading: str, normals: str
) -> None:
    """What a training render keeps for its backward pass, counted with saved-tensor hooks
    between the render and ``backward``: with recomputation only tens of bytes per sample,
    analytic normals included (their gradient's own graph is rebuilt piece by piece too)."""
    torch.manual_seed(0)
    # The default field (16 levels, 4 × 96 MLP) with the normals under test.
    field = NeRFField(FieldConfig(normals=normals), device=DEVICE)
    kept, grads = {}, {}
    for recompute in (False, True):
        saved = 0

        def count(tensor):
            nonlocal saved
            saved += tensor.numel() * tensor.element_size()
            return tensor

        cfg = RenderConfig(march_steps=96, occupancy_grid=False, recompute_field=recompute)
        vr = VolumeRenderer(cfg).to(DEVICE).train()
        field.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        with torch.autograd.graph.saved_tensors_hooks(count, lambda t: t):
            render = vr.render_train(field, two_cameras(1.6), 7, 5, shading=shading)
        assert not render.deferred
        images = render.images()
        g = torch.linspace(-1, 1, images.numel(), device=DEVICE).view_as(images)
        render.backward((images * g).sum(), {})
        kept[recompute] = saved / render.num_samples
        grads[recompute] = {
            n: p.grad.clone() for n, p in field.named_parameters() if p.grad is not None
        }
    for name, grad in grads[False].items():
        error = (grads[True][name] - grad).norm() / grad.norm()
        assert error < 1e-5, name
    # Without recomputation each query keeps its MLP activations (KiB); with it, only the
    # compositing's per-sample values remain.
    assert kept[False] > 15 * kept[True]
    assert kept[True] < 400


class LargestCall(torch.nn.Module):
    """Wraps a field and records the largest number of points any query asked about, and the
    number of points all queries asked about."""

    def __init__(self, inner: NeRFField) -> None:
        super().__init__()
        self.inner, self.bound, self.largest, self.points = inner, inner.bound, 0, 0

    def _count(self, x):
        self.largest = max(self.largest, x.shape[0])
        self.points += x.shape[0]

    def forward(self, x):
        self._count(x)
        return self.inner(x)

    def density(self, x):
        self._count(x)
        return self.inner.density(x)

    def normals(self, x, sigma=None):
        return NeRFField.normals(self, x, sigma)

    @property
    def cfg(self):
        return self.inner.cfg

    @property
    def normal_queries(self):
        return self.inner.normal_queries

    def background(self, dirs):
        return self.inner.background(dirs)


@pytest.mark.parametrize("mode", ["direct", "deferred"])
def test_a_recomputed_training_render_queries_at_most_chunk_points_at_once(mode: str) -> None:
    """Forward, pruning and the recomputation in backward all run the field on at most
    ``chunk_points`` points per call, so a training render's peak is one piece of the field."""
    field = LargestCall(small_field())
    cfg = RenderConfig(march_steps=96, occupancy_grid=False, chunk_points=64)
    vr = VolumeRenderer(cfg).to(DEVICE)
    render = vr.train().render_train(
        field, two_cameras(), 9, 9, shading="lambertian", backprop=mode
    )
    assert render.num_samples > 10 * 64 and render.deferred == (mode == "deferred")
    render.backward(render.images().mean(), LAMBDAS)
    assert 0 < field.largest <= 64
    assert field.inner.encoding.params.grad.abs().sum() > 0


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_deferred_shaded_render_runs_the_field_no_more_than_a_direct_one(sampler: str) -> None:
    """The deferred replay takes σ, albedo and normals from its render without gradients and
    runs the field again only in backward, as the direct render's recomputation does: per
    sample, both query the field at the same number of points (the dense sampler's and the
    marcher's own passes included). Before, the replay's forward ran the normals (and, behind
    the dense sampler, the field) once more."""
    points = {}
    for mode, chunk in (("direct", 1 << 20), ("deferred", 200)):
        field = LargestCall(small_field())
        _, render = gradients_of(field, mode, sampler, "lambertian", chunk)
        assert render.deferred == (mode == "deferred") and render.chunks > (mode == "deferred")
        points[mode] = (field.points, render.num_samples)
    assert points["deferred"] == points["direct"]


@pytest.mark.parametrize(("normals", "lookups"), [("forward_difference", 4), ("analytic", 1)])
def test_the_training_replay_looks_up_the_grid_once_a_sample_with_analytic_normals(
    normals: str, lookups: int, monkeypatch
) -> None:
    """Backward of a shaded training render replays σ, albedo and normals: forward
    differences look the grid up at the sample and its three neighbours; analytic normals take
    all three from one lookup with its Jacobian (``joint_normals``), not one lookup for σ and
    albedo and another for the normals."""
    import dreamtext.field as field_module

    field = small_field()
    field.cfg.normals = normals
    points = {"plain": 0, "jacobian": 0}
    grid, jacobian = field.encoding.forward, field_module.features_and_jacobian

    def plain(x):
        points["plain"] += x.shape[0]
        return grid(x)

    def with_jacobian(encoding, x):
        points["jacobian"] += x.shape[0]
        return jacobian(encoding, x)

    monkeypatch.setattr(field.encoding, "forward", plain)
    monkeypatch.setattr(field_module, "features_and_jacobian", with_jacobian)
    vr = VolumeRenderer(RenderConfig(march_steps=96, occupancy_grid=False)).to(DEVICE).train()
    render = vr.render_train(field, two_cameras(1.6), 7, 5, shading="lambertian")
    images = render.images()
    points.update(plain=0, jacobian=0)  # count the backward pass only
    render.backward(images.mean(), LAMBDAS)
    assert render.num_samples > 20
    assert sum(points.values()) == lookups * render.num_samples
    assert points["jacobian"] == (render.num_samples if normals == "analytic" else 0)
    assert field.encoding.params.grad.abs().sum() > 0


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_every_hash_grid_backend_renders_and_trains_like_the_reference(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The renderer conformance for hash-grid backends: the same field state gives the same
    training render and the same parameter gradients on every backend (Triton through its CPU
    interpreter here, compiled on a GPU)."""
    from dreamtext.encoding import triton_interpreter_on

    block = None
    if backend == "triton":
        pytest.importorskip("triton")
        if DEVICE.type == "cpu" and not triton_interpreter_on():
            pytest.skip("no GPU and TRITON_INTERPRET is not set")
        if DEVICE.type == "cpu":
            # The interpreter runs a launch's programs one after another, each op paying ~0.1 ms
            # of Python whatever the block's size: 1,024 points a program instead of the GPU's
            # 128 make 8x fewer programs (1,288 took 240 s of CPU). The kernels are the same.
            import dreamtext.encoding_triton as encoding_triton

            monkeypatch.setattr(encoding_triton, "BLOCK", 1024)
            block = encoding_triton.BLOCK
    reference = small_field(encoding="torch")  # "auto" is Triton itself on CUDA
    config = dict(num_levels=4, log2_hashmap_size=10, hidden_dim=16, num_blocks=1, blob_radius=0.6)
    other = NeRFField(FieldConfig(**config, encoding=backend), device=DEVICE)
    other.load_state_dict(reference.state_dict())
    assert other.encoding_backend == backend
    expected, expected_render = gradients_of(
        reference, "direct", "occupancy", "lambertian", 1 << 20
    )
    got, got_render = gradients_of(other, "direct", "occupancy", "lambertian", 1 << 20)
    if block is not None:  # the launches still span several blocks, the last one partial
        assert got_render.num_samples > 2 * block and got_render.num_samples % block
    torch.testing.assert_close(
        got_render.outputs["rgb"], expected_render.outputs["rgb"], atol=1e-5, rtol=1e-5
    )
    for name, grad in expected.items():
        error = (got[name] - grad).norm() / grad.norm()
        assert error < 1e-4, (name, float(error))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["direct", "deferred"])
def test_a_half_precision_mlp_trains_like_float32(dtype: torch.dtype, mode: str) -> None:
    """``--fp16`` / ``--bf16``: the MLP runs in half precision under autocast (on the CPU here,
    on CUDA in a run), the grid and the compositing stay float32, and a shaded training render
    gives the float32 gradients up to the half type's rounding (bf16 keeps 8 bits: its
    gradient of a sum that mostly cancels, such as a LayerNorm bias's, is the least exact; its
    whole-gradient cosine moved between 0.98 and 0.996 with the thread count)."""
    reference = small_field()
    half = small_field()
    half.load_state_dict(reference.state_dict())
    half.mlp_dtype = dtype
    seen = []
    half.input_layer.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    expected, want = gradients_of(reference, mode, "occupancy", "lambertian", chunk=300)
    got, render = gradients_of(half, mode, "occupancy", "lambertian", chunk=300)
    assert render.deferred == (mode == "deferred")
    assert seen and set(seen) == {dtype}
    assert render.outputs["rgb"].dtype == torch.float32
    assert expected.keys() == got.keys() and "encoding.params" in got
    assert all(grad.dtype == torch.float32 for grad in got.values())
    flat = [torch.cat([grads[name].flatten() for name in expected]) for grads in (expected, got)]
    assert F.cosine_similarity(*flat, dim=0) > (0.9995 if dtype == torch.float16 else 0.97)
    grid = F.cosine_similarity(
        got["encoding.params"].flatten(), expected["encoding.params"].flatten(), dim=0
    )
    assert grid > 0.99
    atol = 1e-3 if dtype == torch.float16 else 1e-2
    torch.testing.assert_close(
        render.outputs["rgb"], want.outputs["rgb"].detach(), atol=atol, rtol=0
    )


@pytest.mark.parametrize("normals", ["forward_difference", "central_difference", "analytic"])
def test_the_orientation_loss_trains_through_the_deferred_backward(normals: str) -> None:
    """Minimising the orientation loss alone, through the replayed (deferred) backward, turns
    the normals a camera sees towards it, whichever kind of normals the field has: the
    regulariser still works with every method the renderer replays."""
    field = small_field(seed=3)
    field.cfg.normals = normals
    with torch.no_grad():  # a rough field, many of whose visible normals face away
        field.encoding.params.uniform_(-1.0, 1.0)
    optimizer = torch.optim.Adam(field.parameters(), lr=3e-2)
    vr = VolumeRenderer(RenderConfig(march_steps=64, occupancy_grid=False)).to(DEVICE).train()
    cameras = two_cameras(1.6)
    losses = []
    for _ in range(16):
        render = vr.render_train(
            field, cameras, 8, 8, shading="lambertian", perturb=False, backprop="deferred"
        )
        images = render.images()
        losses.append(render.outputs["loss_orientation"].item())
        optimizer.zero_grad(set_to_none=True)
        render.backward(images.sum() * 0.0, {"entropy": 0.0, "opacity": 0.0, "orientation": 1.0})
        optimizer.step()
    assert losses[0] > 0.02
    assert losses[-1] < 0.5 * losses[0]


def _gradients_at_loss_scale(backprop: str, loss_scale: float) -> dict[str, torch.Tensor]:
    field = small_field()
    torch.manual_seed(1)
    cfg = RenderConfig(march_steps=96, occupancy_grid=False, grad_chunk_points=200)
    render = (
        VolumeRenderer(cfg)
        .train()
        .render_train(field, two_cameras(1.6), 7, 5, shading="lambertian", backprop=backprop)
    )
    images = render.images()
    weights = torch.linspace(-1, 1, images.numel()).view_as(images)
    render.backward((images * weights).sum(), LAMBDAS, loss_scale)
    return {n: p.grad.clone() for n, p in field.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("backprop", ["direct", "deferred"])
def test_a_loss_scale_scales_every_gradient_the_regularisers_included(backprop):
    """fp16 training passes its GradScaler's scale s: the gradients are those of
    s (L_sds + Σ λ L_reg), s times those at s = 1, so that unscaling gives the regularisers
    their weight (unscaled, they were 65,536 times too weak)."""
    plain, scaled = _gradients_at_loss_scale(backprop, 1.0), _gradients_at_loss_scale(backprop, 4.0)
    for name, grad in plain.items():
        error = (scaled[name] - 4.0 * grad).norm() / (4.0 * grad).norm()
        assert error < 1e-4, (name, float(error))


def test_the_density_decay_is_a_mean_over_the_points():
    """σ = e − 1 everywhere: log(1 + σ) = 1 at every point, so the loss is 1 whatever the
    number of points (a sum made lambda_density mean 4,096 times more)."""
    from dreamtext.regularisers import density_decay

    class Constant(torch.nn.Module):
        def density(self, x):
            return torch.full((x.shape[0],), math.e - 1.0)

    assert density_decay(Constant(), torch.zeros(4096, 3)).item() == pytest.approx(1.0)


def test_the_entropy_of_an_opaque_ray_is_finite():
    """An opaque ray's opacity is 1.0 exactly in float32: its entropy is that of 1 − 1e-5,
    −(1 − ε) log₂(1 − ε) − ε log₂ ε = 1.81e-4 bits, with a finite gradient (0 · log 0 is NaN)."""
    from dreamtext.regularisers import entropy_per_ray

    opacity = torch.tensor([0.0, 1.0], requires_grad=True)
    entropy = entropy_per_ray(opacity)
    entropy.sum().backward()
    torch.testing.assert_close(entropy, torch.full((2,), 1.8053e-4), rtol=5e-3, atol=0)
    assert torch.isfinite(opacity.grad).all()


def test_the_occupancy_update_asks_a_random_point_of_each_cell():
    """Cell centres alone miss a sheet thinner than a cell between two of them: the update
    asks a uniform point in each cell (its position within the cell spreads, std ≈ 0.29)."""
    from dreamtext.samplers import OccupancyGrid

    asked = []

    class Recording(torch.nn.Module):
        bound = 1.0

        def density(self, x):
            asked.append(x.clone())
            return torch.zeros(x.shape[0])

    torch.manual_seed(0)
    OccupancyGrid(8, 0.95, 10.0).update(Recording(), 1 << 12)
    within = ((torch.cat(asked) + 1.0) * 4.0) % 1.0  # the position within its cell, per axis
    assert within.std() > 0.2 and (within - 0.5).abs().max() > 0.4
