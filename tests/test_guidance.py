"""Score distillation: the SDS equations, the shared step, and SDS with Stable Diffusion."""

import re
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import pipeline_variant

from dreamtext.cameras import CameraRange, ViewThresholds
from dreamtext.errors import DreamtextError
from dreamtext.guidance import (
    GuidanceConfig,
    ScoreDistillation,
    StableDiffusionGuidance,
    classifier_free_guidance,
    make_guidance,
    perp_neg_guidance,
    sample_timesteps,
    sd_alphas_cumprod,
    sds_loss,
    sds_weight,
    v_to_epsilon,
)

# ----------------------------------------------------------------------------------------------
# The equations


@pytest.mark.parametrize("batch", [1, 3])
def test_sds_loss_gradient_is_weighted_noise_residual_over_batch(batch):
    torch.manual_seed(0)
    latents = torch.randn(batch, 4, 8, 8, requires_grad=True)
    eps_hat, noise = torch.randn(batch, 4, 8, 8), torch.randn(batch, 4, 8, 8)
    w = torch.rand(batch)
    sds_loss(latents, eps_hat, noise, w).backward()
    expected = w[:, None, None, None] * (eps_hat - noise) / batch
    torch.testing.assert_close(latents.grad, expected)


def test_sds_loss_value_is_half_the_squared_gradient_norm():
    torch.manual_seed(1)
    latents = torch.randn(2, 4, 8, 8)
    eps_hat, noise, w = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([0.3, 0.9])
    loss = sds_loss(latents, eps_hat, noise, w)
    expected = 0.5 * ((w[:, None, None, None] * (eps_hat - noise)) ** 2).sum() / 2
    torch.testing.assert_close(loss, expected)


def test_classifier_free_guidance_is_the_thesis_form_conditional_plus_scaled_difference():
    """Eq. 3.8 / 5.1: ε̂ = ε_c + s (ε_c − ε_u). With s = 0 it is the conditional prediction, and
    ``s`` here is ``s + 1`` in diffusers' ε_u + s (ε_c − ε_u)."""
    uncond, cond = torch.tensor([1.0, -2.0]), torch.tensor([3.0, 0.0])
    torch.testing.assert_close(
        classifier_free_guidance(uncond, cond, 7.5), torch.tensor([18.0, 15.0])
    )
    torch.testing.assert_close(classifier_free_guidance(uncond, cond, 0.0), cond)
    diffusers_form = uncond + 1001.0 * (cond - uncond)
    torch.testing.assert_close(classifier_free_guidance(uncond, cond, 1000.0), diffusers_form)


def test_v_to_epsilon_recovers_the_noise_of_a_v_target():
    torch.manual_seed(2)
    x0, eps = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    ab = torch.tensor([0.9813, 0.5, 0.00584])
    a, s = ab.sqrt()[:, None, None, None], (1 - ab).sqrt()[:, None, None, None]
    x_t = a * x0 + s * eps
    v = a * eps - s * x0  # the v-prediction target (Salimans & Ho 2022)
    torch.testing.assert_close(v_to_epsilon(v, x_t, ab), eps)


def _perp_neg_inputs():
    uncond = torch.zeros(1, 1, 1, 2)
    cond = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2)
    return uncond, cond


def test_perp_neg_ignores_a_negative_parallel_to_the_prompt():
    uncond, cond = _perp_neg_inputs()
    parallel = torch.tensor([3.0, 0.0]).reshape(1, 1, 1, 1, 2)
    out = perp_neg_guidance(uncond, cond, parallel, torch.tensor([[2.0]]), 5.0)
    torch.testing.assert_close(out, classifier_free_guidance(uncond, cond, 5.0))


def test_perp_neg_subtracts_the_perpendicular_part_of_a_negative():
    uncond, cond = _perp_neg_inputs()
    negative = torch.tensor([4.0, 1.0]).reshape(1, 1, 1, 1, 2)  # perpendicular part (0, 1)
    out = perp_neg_guidance(uncond, cond, negative, torch.tensor([[2.0]]), 5.0)
    expected = cond + 5.0 * torch.tensor([1.0, -2.0]).reshape(1, 1, 1, 2)  # ε_c + s (Δ − w Δ⊥)
    torch.testing.assert_close(out, expected)


def test_perp_neg_projects_with_the_squared_norm_of_the_prompt_direction():
    """Δ = (2, 0), Δ_k = (4, 1): Δ_k^⊥ = Δ_k − (Δ_k·Δ / ‖Δ‖²) Δ = (0, 1), and
    ε̂ = ε_c + s (Δ − w Δ^⊥) = (2, 0) + 5 (2, −2) = (12, −10). With ‖Δ‖ = 1 (the test above)
    ‖Δ‖ and ‖Δ‖² agree, so only a longer Δ tells the projection from a wrong one."""
    uncond = torch.zeros(1, 1, 1, 2)
    cond = torch.tensor([2.0, 0.0]).reshape(1, 1, 1, 2)
    negative = torch.tensor([4.0, 1.0]).reshape(1, 1, 1, 1, 2)
    out = perp_neg_guidance(uncond, cond, negative, torch.tensor([[2.0]]), 5.0)
    torch.testing.assert_close(out, torch.tensor([12.0, -10.0]).reshape(1, 1, 1, 2))


def test_perp_neg_sums_its_weighted_negatives():
    """Two negatives, Δ^⊥ = (0, 1) and (0, −3), weights 2 and 1, Δ = (1, 0):
    Δ − Σ_k w_k Δ_k^⊥ = (1, 1), so ε̂ = (1, 0) + 5 (1, 1) = (6, 5); a mean over the negatives
    gives (3.5, 2.5)."""
    uncond = torch.zeros(1, 1, 1, 2)
    cond = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2)
    negatives = torch.tensor([[4.0, 1.0], [0.0, -3.0]]).reshape(1, 2, 1, 1, 2)
    out = perp_neg_guidance(uncond, cond, negatives, torch.tensor([[2.0, 1.0]]), 5.0)
    torch.testing.assert_close(out, torch.tensor([6.0, 5.0]).reshape(1, 1, 1, 2))


def test_each_perp_neg_negative_is_predicted_at_its_own_samples_time_and_latents():
    """A batch of two views with two negatives each: the U-Net's rows are [uncond × 2,
    cond × 2, the negatives of view 0, those of view 1], so their times are
    [t0, t1, t0, t1, t0, t0, t1, t1] and the negatives' latents [x0, x0, x1, x1]; ``repeat`` in
    place of ``repeat_interleave`` gave view 0's second negative view 1's time (or latents)."""
    from types import SimpleNamespace

    seen = {}

    class Unet:
        def __call__(self, x, t, encoder_hidden_states):
            seen["t"], seen["x"] = t.clone(), x.clone()
            return SimpleNamespace(sample=torch.zeros_like(x))

    class Prompts:
        def get(self, labels):
            return torch.zeros(len(labels), 3, 4), torch.ones(len(labels), 3, 4)

        def negatives(self, labels):
            return torch.full((len(labels), 2, 3, 4), 2.0), torch.ones(len(labels), 2)

    guidance = object.__new__(StableDiffusionGuidance)
    guidance.cfg = GuidanceConfig(perp_neg=True)
    guidance.prompts, guidance.unet, guidance.prediction_type = Prompts(), Unet(), "epsilon"
    guidance.models = SimpleNamespace(unet=None, unet_input=lambda x: x)
    x_t = torch.stack([torch.zeros(4, 2, 2), torch.ones(4, 2, 2)])
    guidance.predict_noise(x_t, torch.tensor([100, 700]), ["side", "back"])
    assert seen["t"].tolist() == [100, 700, 100, 700, 100, 100, 700, 700]
    assert seen["x"][4:].flatten(1).mean(1).tolist() == [0.0, 0.0, 1.0, 1.0]


def test_perp_neg_without_negatives_is_classifier_free_guidance():
    torch.manual_seed(3)
    uncond, cond = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    out = perp_neg_guidance(uncond, cond, torch.empty(2, 0, 4, 8, 8), torch.empty(2, 0), 7.5)
    torch.testing.assert_close(out, classifier_free_guidance(uncond, cond, 7.5))


def test_sds_weights():
    ab = torch.tensor([0.9, 0.25])
    torch.testing.assert_close(sds_weight(ab, "sds"), torch.tensor([0.1, 0.75]))
    torch.testing.assert_close(sds_weight(ab, "uniform"), torch.ones(2))
    with pytest.raises(DreamtextError, match="weighting"):
        sds_weight(ab, "cosine")


@pytest.mark.parametrize(
    ("views", "message"),
    [
        ({"front_start": -30.0, "front_end": 30.0}, "0 ≤ front_start < front_end ≤ back_start"),
        ({"front_start": 330.0, "front_end": 30.0}, "a range across 0°"),
        ({"back_start": 40.0}, "got front 0-60, back 40-240"),
        ({"back_end": 400.0}, "≤ 360"),
        ({"overhead": 160.0}, "0 ≤ overhead ≤ bottom ≤ 180"),
        ({"bottom": 200.0}, "0 ≤ overhead ≤ bottom ≤ 180"),
        ({"front_end": "60"}, "guidance.views.front_end must be degrees, got '60'"),
    ],
)
def test_view_ranges_that_view_of_cannot_read_are_refused(views, message):
    """A front from -30 to 30 (or 330 to 30) was accepted, and view_of, which reads the azimuth
    in [0, 360) in order, labelled 330-360 a side view (or gave no front view at all)."""
    with pytest.raises(DreamtextError, match=re.escape(message)):
        GuidanceConfig(views=ViewThresholds(**views)).validate()


@pytest.mark.parametrize("below", [10.0, 30.0, 151.0, True, "90"])
def test_views_below_outside_the_side_views_polar_range_is_refused(below):
    with pytest.raises(DreamtextError, match=r"guidance.views.below must be a polar angle"):
        GuidanceConfig(views=ViewThresholds(below=below)).validate()
    GuidanceConfig(views=ViewThresholds(below=90.0)).validate()
    GuidanceConfig(views=ViewThresholds(below=150.0)).validate()


def test_timesteps_cover_exactly_the_configured_range():
    t = sample_timesteps(20000, (0.02, 0.98), 1000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64
    assert int(t.min()) == 20 and int(t.max()) == 980


def test_annealing_shrinks_the_upper_end_linearly():
    gen = torch.Generator().manual_seed(0)
    half = sample_timesteps(20000, (0.02, 0.98), 1000, 0.5, True, gen, anneal_end=0.5)
    done = sample_timesteps(20000, (0.02, 0.98), 1000, 1.0, True, gen, anneal_end=0.5)
    assert int(half.max()) == 740 and int(done.max()) == 500
    assert int(half.min()) == int(done.min()) == 20


def test_annealing_never_raises_the_upper_end_and_the_top_time_is_in_the_schedule():
    """An anneal end above t_max (the default 0.5 with t_range [0.02, 0.4]) widened the range:
    t up to 900 for [0.02, 0.3] and an end of 0.9. And t_min 0.9996 drew t = 1000, one past
    the schedule's last time (an IndexError at the first step)."""
    gen = torch.Generator().manual_seed(0)
    for ratio in (0.0, 0.5, 1.0):
        t = sample_timesteps(5000, (0.02, 0.3), 1000, ratio, True, gen, anneal_end=0.9)
        assert int(t.max()) == 300
    top = sample_timesteps(100, (0.9996, 1.0), 1000, generator=gen)
    assert set(top.tolist()) == {999}


def test_annealing_past_the_end_of_training_stays_at_the_anneal_end():
    """A progress above 1 (a caller's step past its iters) keeps t_max at the anneal end (500),
    not past it (260 at 1.5)."""
    generator = torch.Generator().manual_seed(0)
    t = sample_timesteps(4000, (0.02, 0.98), 1000, 1.5, True, generator, anneal_end=0.5)
    assert int(t.max()) == 500


def test_without_annealing_progress_does_not_matter():
    t = sample_timesteps(20000, (0.02, 0.98), 1000, 1.0, False, torch.Generator().manual_seed(0))
    assert int(t.max()) == 980


def test_timesteps_are_reproducible_from_the_generator():
    a = sample_timesteps(8, (0.02, 0.98), 1000, generator=torch.Generator().manual_seed(5))
    b = sample_timesteps(8, (0.02, 0.98), 1000, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_inverted_t_range_is_a_user_error():
    with pytest.raises(DreamtextError, match="t_range"):
        sample_timesteps(1, (0.9, 0.1), 1000)


# ----------------------------------------------------------------------------------------------
# The shared step, on a toy prior in pixel space


class ToyPrior(ScoreDistillation):
    """ε(x_t; ∅) = 0, ε(x_t; y) = x_t (or NaN when ``broken``); records what it was asked."""

    def __init__(self, cfg: GuidanceConfig, broken: bool = False):
        super().__init__(cfg)
        self.broken = broken
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def set_prompt(self, prompt: str, negative: str = "") -> None:
        pass

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return images * 2 - 1

    def predict_noise(self, x_t, t, labels):
        self.seen.append((x_t.clone(), t.clone()))
        cond = torch.full_like(x_t, float("nan")) if self.broken else x_t
        return torch.zeros_like(x_t), cond


def test_shared_step_gradient_is_weighted_guided_residual():
    prior = ToyPrior(GuidanceConfig(guidance_scale=3.0))
    images = torch.rand(2, 3, 4, 4, requires_grad=True)
    loss, info = prior.sds_loss(images, ["front", "side"], 0.0)
    loss.backward()
    ((x_t, t),) = prior.seen
    ab = sd_alphas_cumprod()[t][:, None, None, None]
    x0 = images.detach() * 2 - 1
    noise = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
    eps_hat = x_t + 3.0 * (x_t - 0.0)  # ε_c + s (ε_c − ε_u), eq. 3.8
    # d loss / d images = d loss / d x0 · 2 (x0 = 2 images − 1)
    expected = 2 * (1 - ab) * (eps_hat - noise) / 2
    torch.testing.assert_close(images.grad, expected, rtol=1e-4, atol=1e-5)
    assert info["skipped"] == 0.0
    assert info["t"] == pytest.approx(float(t.float().mean()))
    assert info["w"] == pytest.approx(float((1 - ab).mean()))


def test_non_finite_prediction_is_skipped_and_counted():
    prior = ToyPrior(GuidanceConfig(), broken=True)
    images = torch.rand(1, 3, 4, 4, requires_grad=True)
    loss, info = prior.sds_loss(images, ["front"])
    loss.backward()
    assert float(loss.detach()) == 0.0 and info["skipped"] == 1.0
    assert torch.equal(images.grad, torch.zeros_like(images))
    prior.sds_loss(images, ["front"])
    assert prior.skipped_steps == 2


def test_generator_state_restores_the_same_step():
    prior = ToyPrior(GuidanceConfig())
    images = torch.rand(1, 3, 4, 4)
    prior.seed(7)
    state = prior.get_state()
    first, _ = prior.sds_loss(images, ["front"])
    second, _ = prior.sds_loss(images, ["front"])
    prior.set_state(state)
    again, _ = prior.sds_loss(images, ["front"])
    assert torch.equal(first, again) and not torch.equal(first, second)


def test_make_guidance_sends_builtin_models_to_the_prior(monkeypatch):
    import dreamtext.prior

    sentinel, calls = object(), []

    def fake(cfg, device, **run):
        calls.append(run)
        return sentinel

    monkeypatch.setattr(dreamtext.prior, "make_builtin_prior", fake)
    cameras = CameraRange(radius_range=(2.0, 2.0))
    cfg = GuidanceConfig(model="builtin:shapes")
    assert make_guidance(cfg, "cpu", None, cameras, (24, 32)) is sentinel
    assert calls == [{"cameras": cameras, "height": 24, "width": 32}]


# ----------------------------------------------------------------------------------------------
# Stable Diffusion on the tiny random pipelines


@pytest.fixture(scope="module")
def sd(tiny_sd_path: Path) -> StableDiffusionGuidance:
    return StableDiffusionGuidance(GuidanceConfig(model=str(tiny_sd_path)))


def test_sds_loss_gives_finite_gradients_on_the_render(sd: StableDiffusionGuidance):
    sd.set_prompt("a red castle")
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    loss, info = sd.sds_loss(images, ["front", "back"], 0.3)
    loss.backward()
    assert torch.isfinite(loss) and info["skipped"] == 0.0
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert 20 <= info["t"] <= 980


def test_render_is_encoded_to_scaled_posterior_mean(sd: StableDiffusionGuidance):
    images = torch.rand(1, 3, 64, 64)
    expected = sd.vae.encode(images * 2 - 1).latent_dist.mean * 0.18215
    torch.testing.assert_close(sd.encode_images(images), expected)


def test_v_prediction_model_is_converted_to_epsilon(tiny_sd_v_path: Path):
    guidance = StableDiffusionGuidance(GuidanceConfig(model=str(tiny_sd_v_path)))
    assert guidance.prediction_type == "v_prediction"
    guidance.set_prompt("a sphere")
    torch.manual_seed(4)
    x_t, t = torch.randn(1, 4, 32, 32), torch.tensor([500])
    prediction = guidance.predict_noise(x_t, t, ["side"])
    _, cond = guidance.prompts.get(["side"])
    with torch.no_grad():
        v = guidance.unet(x_t, t, encoder_hidden_states=cond).sample
    ab = guidance.alphas_cumprod[500]
    torch.testing.assert_close(prediction.cond, ab.sqrt() * v + (1 - ab).sqrt() * x_t)


def test_perp_neg_negative_is_the_front_view_prediction(tiny_sd_path: Path):
    guidance = StableDiffusionGuidance(GuidanceConfig(model=str(tiny_sd_path), perp_neg=True))
    guidance.set_prompt("a dog")
    torch.manual_seed(5)
    x_t, t = torch.randn(1, 4, 32, 32), torch.tensor([300])
    side = guidance.predict_noise(x_t, t, ["side"])
    front = guidance.predict_noise(x_t, t, ["front"])
    assert side.negatives.shape == (1, 1, 4, 32, 32)
    torch.testing.assert_close(side.negatives[:, 0], front.cond, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(side.negative_weights, torch.tensor([[2.0]]))


def test_after_set_prompt_the_guidance_holds_embeddings_not_a_text_encoder(
    tiny_sd_path: Path, tmp_path: Path
):
    path = tmp_path / "learned_embeds.safetensors"
    save_file({"<dt-toy>": torch.randn(1, 32)}, str(path))
    cfg = GuidanceConfig(model=str(tiny_sd_path), textual_inversion=str(path))
    guidance = StableDiffusionGuidance(cfg)
    private_encoder = weakref.ref(guidance._text.text_encoder)
    guidance.set_prompt("a photo of <dt-toy>")
    assert guidance._text is None and private_encoder() is None
    assert guidance.prompts.get(["front"])[1].shape == (1, 77, 32)


def test_a_second_prompt_is_encoded_without_reading_the_disk(
    sd: StableDiffusionGuidance, count_loads
):
    sd.set_prompt("a cube")
    cube = sd.prompts.get(["front"])[1]
    sd.set_prompt("a sphere")
    assert not torch.allclose(cube, sd.prompts.get(["front"])[1])
    assert count_loads == []


def test_textual_inversion_token_changes_the_embedding(tiny_sd_path: Path, tmp_path: Path):
    conds = []
    for seed in (0, 1):
        path = tmp_path / f"learned_embeds_{seed}.safetensors"
        save_file(
            {"<dt-toy>": torch.randn(1, 32, generator=torch.Generator().manual_seed(seed))},
            str(path),
        )
        cfg = GuidanceConfig(model=str(tiny_sd_path), textual_inversion=str(path))
        guidance = StableDiffusionGuidance(cfg)
        assert len(guidance.tokenizer("<dt-toy>", add_special_tokens=False).input_ids) == 1
        guidance.set_prompt("a photo of <dt-toy>")
        conds.append(guidance.prompts.get(["front"])[1])
    assert not torch.allclose(conds[0], conds[1])


def test_unknown_hub_id_offline_names_the_local_folder_fix():
    with pytest.raises(DreamtextError, match=r"--model /path/to/folder") as error:
        StableDiffusionGuidance(GuidanceConfig(model="nobody/no-such-model"))
    assert "nobody/no-such-model" in str(error.value)


def test_missing_local_folder_is_a_user_error(tmp_path: Path):
    with pytest.raises(DreamtextError, match="does not exist"):
        StableDiffusionGuidance(GuidanceConfig(model=str(tmp_path / "missing")))


def test_folder_that_is_not_stable_diffusion_is_a_user_error(tmp_path: Path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(DreamtextError, match="lacks vae, text_encoder, tokenizer, scheduler"):
        StableDiffusionGuidance(GuidanceConfig(model=str(tmp_path)))


def test_unsupported_prediction_type_is_a_user_error(tiny_sd_path: Path, tmp_path: Path):
    edits = {"prediction_type": "sample"}
    folder = pipeline_variant(tiny_sd_path, tmp_path / "x0", scheduler=edits)
    with pytest.raises(DreamtextError, match="'sample'"):
        StableDiffusionGuidance(GuidanceConfig(model=str(folder)))


def test_fp16_on_cpu_is_a_user_error(tiny_sd_path: Path):
    with pytest.raises(DreamtextError, match="--fp16 needs a CUDA GPU"):
        StableDiffusionGuidance(GuidanceConfig(model=str(tiny_sd_path), fp16=True), "cpu")
