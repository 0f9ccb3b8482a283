"""guidance.compile_vae and guidance.compile_mode: the VAE encoder compiled with its backward, and
torch.compile's mode for the guidance's parts.

torch.compile's CUDA code cannot run here, so these tests let the models compile on the CPU with
the ``aot_eager_decomp_partition`` backend (the graphs dynamo captures, decomposed and split into
forward and backward as Inductor gets them, run by eager kernels; plain ``aot_eager`` stops in
the CPU's group norm, which wants the contiguous input that the decomposition never gives it):
the wiring, the check at the first call and the training loop through a compiled encoder, not
Inductor's code (which on the CPU builds the tiny encoder in ~30 s and matches it within 4e-7).
"""

import copy
import gc
import json
import logging
import weakref
from pathlib import Path

import pytest
import torch
import yaml
from encode_gradient import encode_with_gradient
from tiny_models import TINY_TRAIN, pipeline_variant

import dreamtext.models as models_module
from dreamtext.cli import main
from dreamtext.errors import DreamtextError
from dreamtext.guidance import GuidanceConfig, StableDiffusionGuidance
from dreamtext.models import load_stable_diffusion


@pytest.fixture
def compiles_on_the_cpu(monkeypatch):
    """The models compile on the CPU (``aot_eager_decomp_partition``), and this test gets its own
    loaded models (nothing it compiles stays in the process's cache)."""
    monkeypatch.setattr(models_module, "COMPILE_DEVICES", ("cuda", "cpu"))
    monkeypatch.setattr(models_module, "COMPILE_BACKEND", "aot_eager_decomp_partition")
    monkeypatch.setattr(models_module, "_LOADED", {})
    torch._dynamo.reset()
    yield monkeypatch
    torch._dynamo.reset()


def test_compile_vae_is_ignored_with_a_warning_on_the_cpu(tiny_sd_path: Path, caplog):
    cfg = GuidanceConfig(model=str(tiny_sd_path), compile_vae=True)
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        guidance = StableDiffusionGuidance(cfg)
    assert guidance._encoder == guidance.models.encode_images
    assert guidance._encoder_checked  # nothing compiled: nothing to check
    assert any("guidance.compile_vae" in r.getMessage() for r in caplog.records)


def test_compile_and_compile_vae_on_the_cpu_warn_in_one_line(tiny_sd_path: Path, caplog):
    """``--compile`` asks for both parts; where nothing compiles, the guidance warns once, naming
    the flag (it named guidance.compile_vae too, which --compile sets: no one typed it)."""
    cfg = GuidanceConfig(model=str(tiny_sd_path), compile=True, compile_vae=True)
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        guidance = StableDiffusionGuidance(cfg)
    assert guidance.unet is guidance.models.unet
    assert guidance._encoder == guidance.models.encode_images
    assert not guidance._cuda_graphs
    assert guidance.compiled == []  # what config.json's ran_on records: asked, not run
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["--compile: the guidance compiles for CUDA only; it runs eagerly here"]


def test_the_compiled_encoder_gives_the_eager_latents_and_gradients(
    tiny_sd_path: Path, compiles_on_the_cpu
):
    guidance = StableDiffusionGuidance(GuidanceConfig(model=str(tiny_sd_path), compile_vae=True))
    models = guidance.models
    assert guidance._encoder is models._compiled[("vae", "default")]
    assert not guidance._encoder_checked
    images = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    compiled = encode_with_gradient(guidance.encode_images, images)
    assert guidance._encoder_checked
    eager = encode_with_gradient(models.encode_images, images)
    for got, want in zip(compiled, eager, strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert eager[1].abs().max() > 0  # the gradient reaches the renders

    def checked_again(images):
        raise AssertionError("the check runs once")

    compiles_on_the_cpu.setattr(guidance, "_check_encoder", checked_again)
    again = encode_with_gradient(guidance.encode_images, images)
    torch.testing.assert_close(again[0], eager[0], rtol=1e-5, atol=1e-6)


def test_an_encoder_torch_compile_cannot_build_is_one_line_naming_the_setting(
    tiny_sd_path: Path, compiles_on_the_cpu
):
    def no_compiler(graph, example_inputs):
        raise RuntimeError("no C compiler")

    compiles_on_the_cpu.setattr(models_module, "COMPILE_BACKEND", no_compiler)
    guidance = StableDiffusionGuidance(GuidanceConfig(model=str(tiny_sd_path), compile_vae=True))
    images = torch.rand(1, 3, 24, 24, requires_grad=True)
    with pytest.raises(DreamtextError) as error:
        guidance.encode_images(images)
    assert str(error.value) == (
        "torch.compile does not build the VAE encoder here (BackendCompilerFailed: "
        "RuntimeError: no C compiler): run with --no-compile"
    )
    assert images.grad is None  # the run's render is not touched


def test_an_encoder_whose_compiled_code_disagrees_is_refused(
    tiny_sd_path: Path, compiles_on_the_cpu
):
    """A backend whose code computes something else (here: every output doubled) fails the
    first call's comparison with the eager encoder."""

    def doubled(graph, example_inputs):
        def run(*args):
            return [out * 2 if out.is_floating_point() else out for out in graph(*args)]

        return run

    compiles_on_the_cpu.setattr(models_module, "COMPILE_BACKEND", doubled)
    guidance = StableDiffusionGuidance(GuidanceConfig(model=str(tiny_sd_path), compile_vae=True))
    with pytest.raises(DreamtextError, match="VAE encoder disagrees with the eager one on this"):
        guidance.encode_images(torch.rand(1, 3, 24, 24))
    assert not guidance._encoder_checked


def test_compile_mode_reaches_torch_compile_once_per_part_and_mode(tiny_sd_path: Path, monkeypatch):
    calls = []

    def recording(target, **options):
        calls.append((target, options))
        return f"compiled {len(calls)}"

    monkeypatch.setattr(torch, "compile", recording)
    on_cuda = copy.copy(load_stable_diffusion(str(tiny_sd_path)))
    on_cuda.device = torch.device("cuda")  # the decision only, no kernel runs
    on_cuda._compiled = {}
    assert on_cuda.sds_unet(True, "reduce-overhead") == "compiled 1"
    assert on_cuda.sds_unet(True, "reduce-overhead") == "compiled 1"
    assert on_cuda.sds_unet(True) == "compiled 2"
    assert on_cuda.sds_encoder(True, "reduce-overhead") == "compiled 3"
    assert on_cuda.sds_encoder(False, "reduce-overhead") == on_cuda.encode_images
    assert calls[0] == (on_cuda.unet, {"backend": "inductor", "mode": "reduce-overhead"})
    assert calls[1] == (on_cuda.unet, {"backend": "inductor"})
    assert calls[2][0] == on_cuda.encode_images
    assert calls[2][1] == {"backend": "inductor", "dynamic": False, "mode": "reduce-overhead"}


@pytest.mark.parametrize("mode", ["max-autotune", "", None])
def test_an_unknown_compile_mode_is_refused(mode):
    with pytest.raises(DreamtextError, match=r"guidance\.compile_mode must be one of default, "):
        GuidanceConfig(compile_mode=mode).validate()


@pytest.mark.parametrize("mode", ["max-autotune", ""])
def test_an_unknown_encoder_compile_mode_is_refused(mode):
    with pytest.raises(DreamtextError, match=r"guidance\.compile_vae_mode must be one of default"):
        GuidanceConfig(compile_vae_mode=mode).validate()


def test_the_encoder_takes_its_own_mode_or_the_u_nets(tiny_sd_path: Path, compiles_on_the_cpu):
    """``compile_vae_mode`` sets the encoder's mode apart from the U-Net's (``None``: the same);
    each SDS call begins a new CUDA-graph iteration if either part is recorded as graphs."""
    modes = []

    def recording(graph, example_inputs, **options):
        modes.append(options.get("mode"))
        return graph

    compiles_on_the_cpu.setattr(models_module, "COMPILE_BACKEND", recording)
    graphs, plain = "reduce-overhead", "default"
    assert GuidanceConfig(compile_mode=graphs).vae_mode == graphs
    assert GuidanceConfig(compile_mode=graphs, compile_vae_mode=plain).vae_mode == plain
    images = torch.rand(1, 3, 24, 24, requires_grad=True)
    expected = {  # (U-Net's mode, encoder's mode) -> (whether SDS calls mark graph
        # iterations, the modes the first encode builds the encoder in: once per mode)
        (graphs, plain): (True, [None]),
        (plain, graphs): (True, [graphs]),
        (plain, plain): (False, []),  # the models' encoder of this mode is built already
    }
    for (unet_mode, vae_mode), (marks, built) in expected.items():
        cfg = GuidanceConfig(
            model=str(tiny_sd_path),
            compile=True,
            compile_vae=True,
            compile_mode=unet_mode,
            compile_vae_mode=vae_mode,
        )
        guidance = StableDiffusionGuidance(cfg)
        assert guidance._cuda_graphs is marks
        assert guidance.unet is guidance.models._compiled[("unet", unet_mode)]
        assert guidance._encoder is guidance.models._compiled[("vae", vae_mode)]
        modes.clear()
        guidance.encode_images(images)  # built at its first call, in the encoder's mode
        assert modes == built
    # The U-Net alone as graphs, the encoder eager: iterations are still marked.
    cfg = GuidanceConfig(model=str(tiny_sd_path), compile=True, compile_mode=graphs)
    assert StableDiffusionGuidance(cfg)._cuda_graphs


def test_a_text_run_trains_through_the_compiled_encoder(
    tmp_path: Path, tiny_sd_path: Path, compiles_on_the_cpu
):
    """``dreamtext text`` with ``guidance: {compile_vae: true}`` in a config file: the steps'
    backward passes go through the compiled encoder (its graphs are built once), the run ends
    as an eager one does, and config.json records the settings."""
    built = []

    def counting(graph, example_inputs):
        built.append(graph)
        return graph

    compiles_on_the_cpu.setattr(models_module, "COMPILE_BACKEND", counting)
    settings = {**TINY_TRAIN, "preview_every": 0, "export": False}
    settings["guidance"] = {**settings.get("guidance", {}), "compile_vae": True}
    config = tmp_path / "compiled.yaml"
    config.write_text(yaml.safe_dump(settings))
    workspace = tmp_path / "run"
    argv = ["text", "a cube", "--model", str(tiny_sd_path), "--config", str(config)]
    assert main([*argv, "--iters", "3", "--workspace", str(workspace)]) == 0
    assert len(built) == 1  # one graph of the encoder, compiled at the check, reused by 3 steps
    saved = json.loads((workspace / "config.json").read_text())
    assert saved["guidance"]["compile_vae"] is True
    assert saved["ran_on"]["guidance_compiled"] == ["vae_encoder"]
    assert saved["guidance"]["compile_mode"] == "default"
    lines = (workspace / "log.jsonl").read_text().splitlines()
    losses = [json.loads(line)["loss"] for line in lines]
    assert len(losses) == 3 and all(loss == loss for loss in losses)


def test_cuda_graphs_begin_an_iteration_at_each_sds_call(tiny_sd_path: Path, compiles_on_the_cpu):
    """With ``compile_mode: reduce-overhead`` the backend gets the mode, and each encode (one a
    SDS step) tells the recorded graphs a new iteration begins; without it, nothing does."""
    modes, begins = [], []

    def recording(graph, example_inputs, **options):
        modes.append(options.get("mode"))
        return graph

    compiles_on_the_cpu.setattr(models_module, "COMPILE_BACKEND", recording)
    compiles_on_the_cpu.setattr(
        torch.compiler, "cudagraph_mark_step_begin", lambda: begins.append(1)
    )
    cfg = GuidanceConfig(model=str(tiny_sd_path), compile_vae=True, compile_mode="reduce-overhead")
    guidance = StableDiffusionGuidance(cfg)
    images = torch.rand(1, 3, 24, 24, requires_grad=True)  # a render, as in training
    for _ in range(3):
        guidance.encode_images(images)
    assert modes == ["reduce-overhead"] and len(begins) == 3
    plain = StableDiffusionGuidance(GuidanceConfig(model=str(tiny_sd_path), compile_vae=True))
    plain.encode_images(images)
    assert len(begins) == 3


def test_a_batch_with_compile_builds_the_guidances_graphs_once(
    tmp_path: Path, tiny_sd_path: Path, tiny_clip_path: Path, compiles_on_the_cpu
):
    """``dreamtext batch --compile`` loads Stable Diffusion once and gives every prompt a new
    guidance over it: the U-Net and the encoder are compiled (and, on CUDA, recorded as graphs)
    at the first prompt, and the later prompts, an image line's descriptor training between
    them, reuse them without a recompile (no guard of a new guidance, prompt or field fails)."""
    from PIL import Image

    built: list[tuple[str, int]] = []

    def counting(graph, example_inputs, **options):
        built.append((options.get("mode"), len(example_inputs)))
        return graph

    compiles_on_the_cpu.setattr(models_module, "COMPILE_BACKEND", counting)
    compiles_on_the_cpu.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: None)
    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "mug.png")
    (tmp_path / "nouns.txt").write_text("mug\ncube\n")
    (tmp_path / "adjectives.txt").write_text("red\nblue\n")
    settings = {**TINY_TRAIN, "preview_every": 0, "export": False}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(settings))

    def batch(name: str, *lines: str) -> list[dict]:
        prompts = tmp_path / f"{name}.txt"
        prompts.write_text("".join(line + "\n" for line in lines))
        root = tmp_path / name
        args = [
            "batch", prompts, "--model", tiny_sd_path, "--clip", tiny_clip_path,
            "--config", config, "--iters", "2", "--compile", "--workspace", root,
            "--nouns", tmp_path / "nouns.txt", "--adjectives", tmp_path / "adjectives.txt",
            "--max-words", "2", "--descriptor-iters", "2",
        ]  # fmt: skip
        assert main(list(map(str, args))) == 0
        return [json.loads(line) for line in (root / "batch.jsonl").read_text().splitlines()]

    assert [r["status"] for r in batch("one", "a red cube")] == ["finished"]
    first = list(built)
    # Both parts, each with the mode --compile gives them.
    assert {mode for mode, _ in first} == {"reduce-overhead"} and len(first) >= 2
    compiles_on_the_cpu.setattr(models_module, "_LOADED", {})  # a new process: loads anew
    torch._dynamo.reset()
    built.clear()
    records = batch("three", "a red cube", "image:mug.png", "a blue cube")
    assert [r["status"] for r in records] == ["finished"] * 3
    assert built == first


def test_the_compiled_encoder_with_vae_checkpointing_gives_the_eager_gradients(
    tiny_sd_path: Path, compiles_on_the_cpu
):
    """``guidance.vae_checkpointing`` under ``compile_vae``: dynamo traces the encoder's
    checkpointed ResNet blocks (torch.utils.checkpoint as a higher-order op, its recompute
    moved into the compiled backward), the first call's check passes, and latents and
    gradients are the eager, uncheckpointed encoder's."""
    images = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    eager = encode_with_gradient(
        StableDiffusionGuidance(GuidanceConfig(model=str(tiny_sd_path))).models.encode_images,
        images,
    )
    cfg = GuidanceConfig(model=str(tiny_sd_path), compile_vae=True, vae_checkpointing=True)
    guidance = StableDiffusionGuidance(cfg)
    assert guidance.models.vae.encoder.gradient_checkpointing
    torch._dynamo.utils.counters.clear()
    compiled = encode_with_gradient(guidance.encode_images, images)
    assert guidance._encoder_checked
    # One graph, forward and backward: the checkpoints are traced, not broken at.
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    assert not torch._dynamo.utils.counters["graph_break"]
    for got, want in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_a_released_models_compiled_encoder_is_freed_with_it(
    tiny_sd_path: Path, tmp_path: Path, compiles_on_the_cpu
):
    """``--compile``'s VAE encoder, built and run with its backward, is freed with its model
    when a load of another releases it: what Dynamo keeps of it (the code cache on
    ``encode_images``, its guards) holds neither the module nor a weight, so no
    ``torch._dynamo.reset()`` is needed, which would drop every compiled function of the process
    (the field's MLPs too). Traced by the ``eager`` backend (1.6 s of CPU, where
    ``aot_eager_decomp_partition`` took 3.9 s); with that backend and Inductor, and for the
    compiled U-Net, ``python benchmarks/loaded_models.py --load-only --compile BACKEND``."""
    compiles_on_the_cpu.setattr(models_module, "COMPILE_BACKEND", "eager")
    models = load_stable_diffusion(str(tiny_sd_path))
    images = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    models.sds_encoder(True)(images.requires_grad_()).sum().backward()
    assert images.grad is not None and ("vae", "default") in models._compiled
    parts = (models, models.vae, *models.vae.parameters())
    released = [weakref.ref(part) for part in parts]
    del models, parts
    load_stable_diffusion(str(pipeline_variant(tiny_sd_path, tmp_path / "other")))
    gc.collect()
    assert [ref for ref in released if ref() is not None] == []
