"""Values of the SDS guidance that the equation tests leave open: validation boundaries, the
time range's edges, Perp-Neg with no prompt direction, a non-finite render, and what
``set_prompt`` / ``predict_noise`` hand the U-Net."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dreamtext.cameras import ViewThresholds
from dreamtext.errors import DreamtextError
from dreamtext.guidance import (
    GuidanceConfig,
    ScoreDistillation,
    StableDiffusionGuidance,
    compiler_error,
    make_guidance,
    perp_neg_guidance,
    sample_timesteps,
    sd_alphas_cumprod,
)

# ----------------------------------------------------------------------------------------------
# GuidanceConfig.validate at its boundaries


@pytest.mark.parametrize(
    "cfg",
    [
        GuidanceConfig(guidance_scale=0.0),  # ε̂ = ε_c, plain conditional SDS
        GuidanceConfig(views=ViewThresholds(overhead=60.0, bottom=60.0)),  # "≤", no side band
        GuidanceConfig(views=ViewThresholds(front_end=180.0, back_start=180.0)),  # "≤"
        GuidanceConfig(t_anneal_end=0.0),  # [0, 1] is closed
    ],
)
def test_settings_on_the_documented_boundaries_are_accepted(cfg):
    cfg.validate()


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (GuidanceConfig(views=ViewThresholds(front_start=60.0, front_end=60.0)), "front_start <"),
        (GuidanceConfig(guidance_scale=4e38), "past float32's range"),
        (GuidanceConfig(perp_neg_weights={"side": {"front": math.nan}}), "perp_neg_weights"),
        (GuidanceConfig(perp_neg_weights={"side": {"front": math.inf}}), "perp_neg_weights"),
        (GuidanceConfig(perp_neg_weights={"side": {"front": True}}), "perp_neg_weights"),
    ],
)
def test_settings_just_past_the_documented_boundaries_are_refused(cfg, message):
    with pytest.raises(DreamtextError, match=message):
        cfg.validate()


# ----------------------------------------------------------------------------------------------
# Timesteps


def test_a_single_time_range_draws_that_time():
    t = sample_timesteps(50, (0.5, 0.5), 1000, generator=torch.Generator().manual_seed(0))
    assert set(t.tolist()) == {500}


def test_an_anneal_end_below_t_min_anneals_towards_t_min():
    """e = clamp(0, 0.1, 0.9) = 0.1; at r = 0.5, t_max = 0.9 − 0.5 (0.9 − 0.1) = 0.5 → 500
    (not 0.9 − 0.5 · 0.9 = 0.45)."""
    gen = torch.Generator().manual_seed(0)
    t = sample_timesteps(20000, (0.1, 0.9), 1000, 0.5, True, gen, anneal_end=0.0)
    assert int(t.max()) == 500 and int(t.min()) == 100


# ----------------------------------------------------------------------------------------------
# Perp-Neg with no prompt direction


def test_perp_neg_with_a_zero_prompt_direction_subtracts_the_whole_negative():
    """Δ = 0: the projection onto Δ is 0, so Δ_k^⊥ = Δ_k = (0, 1) and
    ε̂ = ε_c + s (0 − w Δ_k) = (0, 0) + 5 (0, −2) = (0, −10), not NaN (a skipped step)."""
    uncond = cond = torch.zeros(1, 1, 1, 2)
    negative = torch.tensor([0.0, 1.0]).reshape(1, 1, 1, 1, 2)
    out = perp_neg_guidance(uncond, cond, negative, torch.tensor([[2.0]]), 5.0)
    torch.testing.assert_close(out, torch.tensor([0.0, -10.0]).reshape(1, 1, 1, 2))


# ----------------------------------------------------------------------------------------------
# A render that is not finite, under a prior whose prediction stays finite


class FinitePrior(ScoreDistillation):
    def set_prompt(self, prompt: str, negative: str = "") -> None:
        pass

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return images * 2 - 1

    def predict_noise(self, x_t, t, labels):
        return torch.zeros_like(x_t), torch.zeros_like(x_t)


def test_a_non_finite_render_is_skipped_even_when_the_prediction_is_finite():
    prior = FinitePrior(GuidanceConfig())
    images = torch.rand(1, 3, 4, 4)
    images[0, 0, 0, 0] = math.nan
    images.requires_grad_(True)
    loss, info = prior.sds_loss(images, ["front"])
    loss.backward()
    assert float(loss.detach()) == 0.0 and info["skipped"] == 1.0
    assert torch.equal(images.grad, torch.zeros_like(images))
    assert prior.skipped_steps == 1


# ----------------------------------------------------------------------------------------------
# What predict_noise hands the U-Net


def test_v_prediction_uses_each_samples_own_time(tiny_sd_v_path: Path):
    """Two samples at t = 100 and 900: each row's ε = √ᾱ_t v + √(1 − ᾱ_t) x_t with its own t."""
    guidance = StableDiffusionGuidance(GuidanceConfig(model=str(tiny_sd_v_path)))
    guidance.set_prompt("a sphere")
    torch.manual_seed(6)
    x_t, t = torch.randn(2, 4, 32, 32), torch.tensor([100, 900])
    prediction = guidance.predict_noise(x_t, t, ["side", "side"])
    _, cond = guidance.prompts.get(["side", "side"])
    with torch.no_grad():
        v = guidance.unet(x_t, t, encoder_hidden_states=cond).sample
    ab = guidance.alphas_cumprod[t][:, None, None, None]
    torch.testing.assert_close(prediction.cond, ab.sqrt() * v + (1 - ab).sqrt() * x_t)


# ----------------------------------------------------------------------------------------------
# What set_prompt encodes


def test_the_negative_prompt_is_the_unconditional_embedding(tiny_sd_path: Path):
    """With --negative "a cat", ε_u is predicted on the embedding of "a cat" (the one "a cat" gets
    as a prompt, view-independent), not on the empty prompt's."""
    cfg = GuidanceConfig(model=str(tiny_sd_path), view_dependent=False)
    guidance = StableDiffusionGuidance(cfg)
    guidance.set_prompt("a cat")
    cat = guidance.prompts.get(["front"])[1]
    guidance.set_prompt("a dog")
    empty = guidance.prompts.get(["front"])[0]
    guidance.set_prompt("a dog", negative="a cat")
    uncond = guidance.prompts.get(["front"])[0]
    torch.testing.assert_close(uncond, cat)
    assert not torch.allclose(uncond, empty)


def test_without_view_dependent_prompts_every_view_gets_the_prompt(tiny_sd_path: Path):
    """view_dependent off (with the default Perp-Neg weights left in the config, Perp-Neg off):
    the front and back views share one embedding, and nothing is refused."""
    cfg = GuidanceConfig(model=str(tiny_sd_path), view_dependent=False)
    guidance = StableDiffusionGuidance(cfg)
    guidance.set_prompt("a dog")
    _, cond = guidance.prompts.get(["front", "back"])
    torch.testing.assert_close(cond[0], cond[1])


def test_split_side_views_get_prompts_of_their_own(tiny_sd_path: Path):
    cfg = GuidanceConfig(model=str(tiny_sd_path), views=ViewThresholds(split_sides=True))
    guidance = StableDiffusionGuidance(cfg)
    guidance.set_prompt("a dog")
    _, cond = guidance.prompts.get(["left side", "right side", "front"])
    assert not torch.allclose(cond[0], cond[2])


# ----------------------------------------------------------------------------------------------
# Routing and errors


def test_a_model_folder_whose_name_starts_with_builtin_is_not_the_builtin_prior(tmp_path: Path):
    """Only ``builtin:…`` is the built-in prior; a folder named ``builtinsd`` is a model path."""
    with pytest.raises(DreamtextError, match="does not exist"):
        make_guidance(GuidanceConfig(model=str(tmp_path / "builtinsd")))
    with pytest.raises(DreamtextError, match="does not exist"):
        make_guidance(GuidanceConfig(model="builtinsd"))


def test_inductors_errors_are_the_compilers():
    inductor = type("LoweringException", (Exception,), {"__module__": "torch._inductor.exc"})
    dynamo = type("BackendCompilerFailed", (Exception,), {"__module__": "torch._dynamo.exc"})
    assert compiler_error(inductor("x")) and compiler_error(dynamo("x"))
    assert not compiler_error(RuntimeError("x"))


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory"),
        RuntimeError("CUDA error: out of memory"),
        RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    ],
)
def test_out_of_memory_while_checking_the_compiled_encoder_stays_out_of_memory(error):
    """Running out of memory is not "torch.compile does not build the VAE encoder", whichever
    of CUDA's ways says so (the trainer then saves a checkpoint and names the fixes)."""

    def encoder(images):
        raise error

    guidance = object.__new__(StableDiffusionGuidance)
    guidance.models = SimpleNamespace(encode_images=lambda images: images * 2)
    guidance._encoder = encoder
    with pytest.raises(type(error)) as raised:
        guidance._check_encoder(torch.rand(1, 3, 4, 4))
    assert raised.value is error


def test_the_default_schedule_is_stable_diffusions_scaled_linear_one():
    """ᾱ_t = Π_{s≤t} (1 − β_s), β = linspace(√0.00085, √0.012, 1000)²: ᾱ_0 = 1 − 0.00085, and every
    ᾱ_t is what diffusers' own scheduler of that config computes (the other tests take the
    schedule from this function, so they cannot see a wrong β or an index off by one)."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
    )
    ab = sd_alphas_cumprod()
    assert ab.shape == (1000,)
    assert float(ab[0]) == pytest.approx(1.0 - 0.00085, rel=1e-7)
    assert torch.allclose(ab, scheduler.alphas_cumprod.float(), rtol=1e-5, atol=0.0)


def test_perp_neg_keeps_the_part_of_a_negative_that_points_against_the_prompt():
    """Δ = ε_c − ε_u = (1, 0), a negative's Δ_k = (−1, 1): ⟨Δ_k, Δ⟩ / ‖Δ‖² = −1 (signed), so
    Δ_k^⊥ = (−1, 1) + (1, 0) = (0, 1) and ε̂ = ε_c + 1 · (Δ − Δ_k^⊥) = (1, 0) + (1, −1) = (2, −1).
    Projecting with |⟨Δ_k, Δ⟩| would subtract (−2, 1) and give (4, −1)."""
    eps_uncond = torch.zeros(1, 2, 1, 1)
    eps_cond = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    eps_neg = torch.tensor([-1.0, 1.0]).view(1, 1, 2, 1, 1)
    guided = perp_neg_guidance(eps_uncond, eps_cond, eps_neg, torch.ones(1, 1), 1.0)
    torch.testing.assert_close(guided.flatten(), torch.tensor([2.0, -1.0]))
