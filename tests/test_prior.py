"""The ideal denoiser and the built-in prior as an SDS guidance model."""

from __future__ import annotations

import logging

import pytest
import torch

from dreamtext import prior as prior_module
from dreamtext import shapes
from dreamtext.cameras import CameraRange, ViewThresholds, view_of, with_view
from dreamtext.errors import DreamtextError
from dreamtext.guidance import GuidanceConfig, sd_alphas_cumprod
from dreamtext.prior import (
    ShapesPrior,
    dataset_size,
    ideal_denoiser,
    ideal_epsilon,
    make_builtin_prior,
    posterior_weights,
)


def _brute_force_denoiser(x_t, images, alpha_bar):
    """E[x_0 | x_t] written the slow way: every distance explicitly, weights normalised by hand."""
    out = []
    for x, ab in zip(x_t.double(), alpha_bar.double(), strict=True):
        d2 = torch.stack([((x - ab.sqrt() * xi.double()) ** 2).sum() for xi in images])
        logp = -d2 / (2 * (1 - ab))
        p = torch.exp(logp - logp.max())
        p = p / p.sum()
        out.append((p[:, None] * images.double()).sum(0))
    return torch.stack(out)


@pytest.fixture
def tiny_set():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(5, 12, generator=gen, dtype=torch.float64) * 2 - 1
    x0 = images[[1, 3]]
    return images, x0, gen


@pytest.mark.parametrize("t", [20, 300, 700, 980])
def test_ideal_denoiser_matches_brute_force(tiny_set, t):
    images, x0, gen = tiny_set
    ab = sd_alphas_cumprod().double()[[t, t]]
    x_t = ab.sqrt()[:, None] * x0 + (1 - ab).sqrt()[:, None] * torch.randn(
        x0.shape, generator=gen, dtype=torch.float64
    )
    expected = _brute_force_denoiser(x_t, images, ab)
    assert torch.allclose(ideal_denoiser(x_t, images, ab), expected, atol=1e-10)


def test_posterior_weights_sum_to_one_at_every_noise_level(tiny_set):
    images, x0, gen = tiny_set
    for t in (0, 100, 500, 999):
        ab = sd_alphas_cumprod().double()[[t, t]]
        x_t = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
        weights = posterior_weights(x_t, images, ab)
        assert weights.min() >= 0
        assert torch.allclose(weights.sum(-1), torch.ones(2, dtype=torch.float64))


def test_posterior_picks_the_nearest_image_as_noise_vanishes(tiny_set):
    images, _, gen = tiny_set
    query = images[2] + 0.05 * torch.randn(12, generator=gen, dtype=torch.float64)
    ab = sd_alphas_cumprod().double()[[0]]
    weights = posterior_weights(query[None] * ab.sqrt(), images, ab)
    assert weights[0, 2] > 1 - 1e-9
    assert torch.allclose(ideal_denoiser(query[None] * ab.sqrt(), images, ab)[0], images[2])


def test_posterior_is_uniform_as_noise_dominates(tiny_set):
    images, _, gen = tiny_set
    ab = torch.tensor([1e-8], dtype=torch.float64)
    weights = posterior_weights(torch.randn(1, 12, generator=gen, dtype=torch.float64), images, ab)
    assert torch.allclose(weights, torch.full_like(weights, 0.2), atol=1e-3)


def test_epsilon_and_denoised_image_recompose_x_t(tiny_set):
    images, x0, gen = tiny_set
    ab = sd_alphas_cumprod().double()[[150, 850]]
    x_t = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    eps = ideal_epsilon(x_t, images, ab)
    denoised = ideal_denoiser(x_t, images, ab)
    recomposed = ab.sqrt()[:, None] * denoised + (1 - ab).sqrt()[:, None] * eps
    assert torch.allclose(recomposed, x_t, atol=1e-10)


# A small camera range and image size keep the prior's dataset cheap to render in tests.
CAMERAS = CameraRange(
    polar_range=(70.0, 90.0),
    azimuth_range=(0.0, 360.0),
    box_fraction=0.0,
    radius_range=(1.8, 1.8),
    fovy_range=(45.0, 45.0),
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One dataset cache for the module: rendering it is the slow part."""
    return tmp_path_factory.mktemp("dreamtext_cache")


@pytest.fixture
def prior(cache_dir, monkeypatch):
    monkeypatch.setenv("DREAMTEXT_CACHE", str(cache_dir))

    def make(**overrides) -> ShapesPrior:
        cfg = GuidanceConfig(model="builtin:shapes", **overrides)
        return ShapesPrior(cfg, CAMERAS, 8, 8)

    return make


def test_conditional_set_is_the_prompt_seen_from_the_label_view(prior):
    p = prior()
    p.set_prompt("a red cube")
    data = p.dataset
    for label, images in p._cond.items():
        keep = [c == with_view("a red cube", label) for c in data.captions]
        expected = data.images[torch.tensor(keep)].flatten(1) * 2 - 1
        assert torch.equal(images, expected.double())
    assert set(p._cond) == {"front", "side", "back"}


def test_views_from_below_have_conditional_sets_of_their_own(prior):
    """With ``views.below`` at 80° the dataset's cameras from 80° on (of CAMERAS' 70-90°) are a
    set of their own per azimuth label, and a step seen from below denoises toward it."""
    p = prior(views=ViewThresholds(below=80.0))
    p.set_prompt("a red cube")
    assert set(p._cond) == {"front", "side", "back", "front below", "side below", "back below"}
    data = p.dataset
    for label, images in p._cond.items():
        rows = [
            i
            for i, (obj, polar) in enumerate(zip(data.objects, data.polar, strict=True))
            if obj == "a red cube"
            and view_of(float(polar), float(data.azimuth[i])).label == label.split(" below")[0]
            and (float(polar) >= 80.0) == label.endswith(" below")
        ]
        assert torch.equal(images, (data.images[rows].flatten(1) * 2 - 1).double())
    x_t = torch.zeros(2, 3, 8, 8)
    eps = p.predict_noise(x_t, torch.tensor([500, 500]), ["front below", "front"])
    assert not torch.equal(eps.cond[0], eps.cond[1])


def test_unconditional_set_is_every_view_of_the_object(prior):
    p = prior()
    p.set_prompt("a blue torus")
    keep = torch.tensor([o == "a blue torus" for o in p.dataset.objects])
    assert torch.equal(p._uncond, (p.dataset.images[keep].flatten(1) * 2 - 1).double())


def test_without_view_dependent_prompts_every_view_set_is_all_views(prior):
    p = prior(view_dependent=False)
    p.set_prompt("a blue torus")
    assert all(torch.equal(images, p._uncond) for images in p._cond.values())


def test_negative_prompt_sets_the_unconditional_set_and_empty_prompt_is_everything(prior):
    p = prior()
    p.set_prompt("a red cube", negative="a red sphere")
    keep = torch.tensor([o == "a red sphere" for o in p.dataset.objects])
    assert torch.equal(p._uncond, (p.dataset.images[keep].flatten(1) * 2 - 1).double())
    p.set_prompt("")
    assert p._uncond.shape[0] == len(p.dataset.objects)


def test_unknown_prompt_is_a_user_error_naming_the_captions(prior):
    p = prior()
    with pytest.raises(DreamtextError, match=r'"a hamburger".*"a COLOUR SHAPE" \(COLOUR: red'):
        p.set_prompt("a hamburger")


def test_unknown_builtin_model_is_a_user_error():
    with pytest.raises(DreamtextError, match="builtin:shapes"):
        make_builtin_prior(GuidanceConfig(model="builtin:animals"))


def test_noise_prediction_at_low_noise_recovers_the_view_image(prior):
    p = prior(guidance_scale=7.5)
    p.set_prompt("a green cone")
    data = p.dataset
    i = next(k for k, c in enumerate(data.captions) if c == "a green cone, side view")
    x0 = data.images[i : i + 1] * 2 - 1
    t = torch.tensor([50])
    ab = p.alphas_cumprod[t]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    label = view_of(float(data.polar[i]), float(data.azimuth[i])).label
    prediction = p.predict_noise(x_t, t, [label])
    assert torch.allclose(prediction.cond, noise, atol=1e-3)
    assert torch.allclose(prediction.uncond, noise, atol=1e-3)


def test_kept_squared_norms_give_the_same_bits_as_computed_ones(tiny_set):
    images, x0, gen = tiny_set
    ab = sd_alphas_cumprod().double()[[300, 700]]
    x_t = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    kept = prior_module.squared_norms(images)
    assert torch.equal(kept, (images * images).sum(-1))
    assert torch.equal(ideal_epsilon(x_t, images, ab, kept), ideal_epsilon(x_t, images, ab))


def test_a_step_computes_no_squared_norms_of_the_image_sets(prior, monkeypatch):
    # ‖x_i‖² of a set is the same at every step: made once by set_prompt, where computing it
    # in every noise prediction cost more than the prediction's matmul itself.
    p = prior()
    p.set_prompt("a green cone")
    expected = p.predict_noise(torch.zeros(2, 3, 8, 8), torch.tensor([500, 20]), ["front", "side"])
    calls = []
    computed = prior_module.squared_norms
    monkeypatch.setattr(prior_module, "squared_norms", lambda s: calls.append(s) or computed(s))
    again = p.predict_noise(torch.zeros(2, 3, 8, 8), torch.tensor([500, 20]), ["front", "side"])
    assert calls == []
    assert torch.equal(again.cond, expected.cond) and torch.equal(again.uncond, expected.uncond)


def test_sds_gradient_pulls_a_render_towards_the_prompt(prior):
    """A grey image's SDS gradient points towards the red cube's colours: descending it makes the
    image redder where the cube is."""
    p = prior(guidance_scale=1.0, t_range=(0.1, 0.5))
    p.set_prompt("a red cube")
    p.seed(0)
    images = torch.full((4, 3, 8, 8), 0.5, requires_grad=True)
    loss, info = p.sds_loss(images, ["front", "side", "back", "side"])
    loss.backward()
    step = -images.grad
    centre = step[:, :, 3:5, 3:5].mean(dim=(0, 2, 3))
    assert info["skipped"] == 0.0
    assert centre[0] > 0 and centre[1] < 0 and centre[2] < 0


def test_renders_of_another_size_are_resized_to_the_dataset(prior):
    p = prior()
    x = p.encode_images(torch.ones(2, 3, 16, 16))
    assert x.shape == (2, 3, 8, 8) and torch.allclose(x, torch.ones_like(x))


def test_dataset_images_of_the_prior_are_the_shapes_renders(prior):
    p = prior()
    poses = shapes.dataset_poses(CAMERAS)
    expected = shapes.render(
        shapes.Primitive("cube", "red"), poses, 8, 8, shapes.DATASET_SUPERSAMPLE
    ).permute(0, 3, 1, 2)
    got = p.dataset.images[: len(poses)]
    assert torch.allclose(got, expected, atol=1 / 255)


def test_sds_with_the_prior_grows_density_inside_the_sphere(cache_dir, tmp_path, monkeypatch):
    """A short SDS run from a field with no density blob: the trained density is higher inside
    "a red sphere" than around it."""
    from dreamtext import prior as prior_module
    from dreamtext.checkpoint import load_field
    from dreamtext.config import resolve_config
    from dreamtext.trainer import train

    monkeypatch.setenv("DREAMTEXT_CACHE", str(cache_dir))
    cameras = {
        "polar_range": list(CAMERAS.polar_range),
        "radius_range": list(CAMERAS.radius_range),
        "fovy_range": list(CAMERAS.fovy_range),
    }
    cfg = resolve_config(
        {
            "prompt": "a red sphere",
            "workspace": str(tmp_path / "sphere"),
            "iters": 60,
            "h": 8,
            "w": 8,
            "export": False,
            "preview_every": 0,
            "guidance": {"model": "builtin:shapes"},
            "field": {"blob_density": 0.0},
            "cameras": cameras,
        }
    )
    # The trainer hands the prior this run's cameras and size, so its images cover every view.
    built = []
    real = prior_module.make_builtin_prior
    monkeypatch.setattr(
        prior_module, "make_builtin_prior", lambda *a, **k: built.append(real(*a, **k)) or built[0]
    )
    field, _ = load_field(train(cfg))
    assert built[0].dataset.images.shape[-2:] == (8, 8)
    gen = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(2000, 3, generator=gen), dim=-1)
    radii = torch.rand(2000, 1, generator=gen)
    with torch.no_grad():
        inner = field.density(directions * radii * 0.35).mean()
        outer = field.density(directions * (0.7 + radii * 0.25)).mean()
    assert inner > 2 * outer


def _density_inside_after_a_short_run(workspace, cache_dir, monkeypatch, **settings) -> float:
    """Train "a red sphere" for 20 steps at 8 px and return the mean density within 0.2 of the
    centre: inside the start blob's opaque core, where no camera sees."""
    import json

    from dreamtext.checkpoint import load_field
    from dreamtext.config import resolve_config
    from dreamtext.trainer import train

    monkeypatch.setenv("DREAMTEXT_CACHE", str(cache_dir))
    cfg = resolve_config(
        {
            "prompt": "a red sphere",
            "workspace": str(workspace),
            "iters": 20,
            "lr": 0.02,
            "h": 8,
            "w": 8,
            "export": False,
            "preview_every": 0,
            "log_every": 1,
            "guidance": {"model": "builtin:shapes"},
            "cameras": {
                "polar_range": list(CAMERAS.polar_range),
                "radius_range": list(CAMERAS.radius_range),
                "fovy_range": list(CAMERAS.fovy_range),
            },
            **settings,
        }
    )
    field, _ = load_field(train(cfg))
    logged = [json.loads(line) for line in (workspace / "log.jsonl").read_text().splitlines()]
    steps = [r for r in logged if "loss_sds" in r]
    assert all(("loss_density" in r) == bool(settings) for r in steps)
    gen = torch.Generator().manual_seed(0)
    points = torch.nn.functional.normalize(torch.randn(500, 3, generator=gen), dim=-1) * 0.2
    with torch.no_grad():
        return float(field.density(points * torch.rand(500, 1, generator=gen)).mean())


def test_density_decay_clears_density_that_no_camera_sees(cache_dir, tmp_path, monkeypatch):
    """The renders give no gradient to density behind an opaque surface, so the start blob's
    core keeps its density; ``lambda_density`` (loss_density = mean log(1 + σ) at random points)
    lowers it. This is what leaves a tail under the built-in shapes' exported meshes."""
    kept = _density_inside_after_a_short_run(tmp_path / "plain", cache_dir, monkeypatch)
    decayed = _density_inside_after_a_short_run(
        tmp_path / "decay", cache_dir, monkeypatch, lambda_density=10.0
    )
    assert decayed < 0.5 * kept


def test_every_tensor_of_the_prior_follows_its_device(cache_dir, monkeypatch):
    """The prior's image set, schedule and noise all live on the device it is given: the meta
    device stands in for CUDA here, and mixing it with CPU tensors raises like CUDA does."""
    monkeypatch.setenv("DREAMTEXT_CACHE", str(cache_dir))
    on_meta = ShapesPrior(GuidanceConfig(model="builtin:shapes"), CAMERAS, 8, 8, device="meta")
    on_meta.set_prompt("a red sphere")
    tensors = {
        name: value for name, value in vars(on_meta).items() if isinstance(value, torch.Tensor)
    }
    tensors.update({f"cond[{k}]": v for k, v in on_meta._cond.items()})
    assert "_flat" in tensors and "alphas_cumprod" in tensors
    assert {name: t.device.type for name, t in tensors.items()} == dict.fromkeys(tensors, "meta")
    x_t = torch.zeros(2, 3, 8, 8, device="meta")
    t = torch.tensor([500, 20], device="meta")
    prediction = on_meta.predict_noise(x_t, t, ["front", "side"])
    assert prediction.cond.device.type == "meta" and prediction.cond.shape == x_t.shape


@pytest.mark.parametrize(
    ("size", "expected"),
    [((32, 32), (32, 32)), ((64, 64), (64, 64)), ((256, 256), (64, 64)), ((512, 256), (64, 32))],
)
def test_the_image_set_is_at_most_64_px_a_side_whatever_the_render_size(size, expected):
    """At FitFusion's 256 px the preset's 8,928 images would keep 14.0 GB of RAM (21 GB while
    loading)."""
    assert dataset_size(*size) == expected


def test_a_large_render_is_compared_with_the_image_set_at_its_own_size(cache_dir, monkeypatch):
    monkeypatch.setenv("DREAMTEXT_CACHE", str(cache_dir))
    monkeypatch.setattr(prior_module, "MAX_DATASET_SIZE", 8)
    p = ShapesPrior(GuidanceConfig(model="builtin:shapes"), CAMERAS, 16, 16)
    assert (p.height, p.width) == (8, 8) and p.dataset.images.shape[-2:] == (8, 8)
    assert p.encode_images(torch.ones(1, 3, 16, 16)).shape == (1, 3, 8, 8)


def test_flags_the_prior_cannot_use_are_named_in_a_warning(prior, caplog):
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        prior(perp_neg=True, compile=True)
    assert [r.getMessage() for r in caplog.records] == [
        "--perp-neg does not apply to the built-in prior; ignored",
        "--compile has no network of the built-in prior to compile; on CUDA it compiles the "
        "field's MLPs only",
    ]


def test_a_view_band_between_two_dataset_cameras_has_images_or_is_refused_before_training(prior):
    """guidance.views.front_start 1, front_end 9 (valid bands) fall between the dataset's cameras,
    10 degrees apart: its "front" had no image, and a run stopped at the first camera in the
    band, steps in, with "keep the cameras inside the preset's range" (they were inside it)."""
    p = prior(views=ViewThresholds(front_start=1.0, front_end=9.0))
    try:
        p.set_prompt("a red cube")
    except DreamtextError as error:  # refused before any step, naming the setting to change
        assert "guidance.views" in str(error)
        return
    reachable = {
        view_of(polar, azimuth / 2, p.cfg.views).label
        for polar in (70.0, 80.0, 90.0)
        for azimuth in range(720)
    }
    assert reachable <= set(p._cond), reachable - set(p._cond)
