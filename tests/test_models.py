"""The model loader: Stable Diffusion's parts read once per process, shared, never changed."""

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
from safetensors.torch import save_file
from tiny_models import TINY_TRAIN, pipeline_variant

import dreamtext.models as models_module
from dreamtext.checkpoint import load_checkpoint
from dreamtext.cli import main
from dreamtext.descriptor import DescriptorOptions, DescriptorTrainer
from dreamtext.errors import DreamtextError
from dreamtext.guidance import GuidanceConfig, StableDiffusionGuidance
from dreamtext.models import COMPILE_MODES, load_for, load_stable_diffusion, use_channels_last

PARTS = ["unet", "vae", "tokenizer", "text_encoder"]


def test_loads_the_pipeline_folder_frozen(tiny_sd_path: Path):
    models = load_stable_diffusion(str(tiny_sd_path))
    assert models.prediction_type == "epsilon"
    assert models.resolution == 64
    assert models.scaling_factor == pytest.approx(0.18215)
    for module in (models.unet, models.vae, models.text_encoder):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())


def test_alphas_cumprod_come_from_the_saved_scheduler(tiny_sd_path: Path):
    models = load_stable_diffusion(str(tiny_sd_path))
    assert float(models.alphas_cumprod[20]) == pytest.approx(0.9813, abs=1e-4)
    assert float(models.alphas_cumprod[980]) == pytest.approx(0.00584, abs=1e-5)


def test_a_linear_schedule_in_the_folder_is_honoured(tiny_sd_path: Path, tmp_path: Path):
    edits = {"beta_schedule": "linear", "beta_end": 0.02}
    folder = pipeline_variant(tiny_sd_path, tmp_path / "linear", scheduler=edits)
    models = load_stable_diffusion(str(folder))
    expected = torch.cumprod(1 - torch.linspace(0.00085, 0.02, 1000, dtype=torch.float64), 0)
    torch.testing.assert_close(models.alphas_cumprod, expected.float())


def test_native_resolution_follows_the_configs(tiny_sd_path: Path, tmp_path: Path):
    folder = pipeline_variant(tiny_sd_path, tmp_path / "small", unet={"sample_size": 24})
    models = load_stable_diffusion(str(folder))
    assert models.resolution == 24 * 2
    assert models.encode_images(torch.rand(1, 3, 100, 100)).shape == (1, 4, 24, 24)


def test_one_load_per_model_dtype_and_device(tiny_sd_path: Path, tmp_path: Path, count_loads):
    first = load_stable_diffusion(str(tiny_sd_path), "cpu", torch.float32)
    again = load_stable_diffusion(str(tiny_sd_path), torch.device("cpu"))
    assert again is first
    assert sorted(count_loads) == sorted(PARTS)
    same_folder = tiny_sd_path / ".." / tiny_sd_path.name  # named another way
    assert load_stable_diffusion(str(same_folder)) is first
    other = pipeline_variant(tiny_sd_path, tmp_path / "other")
    assert load_stable_diffusion(str(other)) is not first
    assert len(count_loads) == 2 * len(PARTS)


def test_a_load_of_another_model_releases_the_one_before(
    tiny_sd_path: Path, tmp_path: Path, count_loads
):
    """A notebook's runs on several models kept every one loaded (SD 2.1: 5 GB in fp32 each):
    now the process keeps the last, and the one before is freed once its runs are done."""
    first = weakref.ref(load_stable_diffusion(str(tiny_sd_path)).unet)
    other = pipeline_variant(tiny_sd_path, tmp_path / "other")
    kept = load_stable_diffusion(str(other))
    gc.collect()
    assert first() is None
    assert list(models_module._LOADED.values()) == [kept]
    assert load_stable_diffusion(str(other)) is kept  # the last one is still shared
    assert len(count_loads) == 2 * len(PARTS)


def test_held_models_stay_loaded_through_the_load_of_another(
    tiny_sd_path: Path, tmp_path: Path, count_loads
):
    """A batch holds the models of its later lines (hold_models): loaded once, however its
    lines switch between them; released once no line needs them."""
    first = load_stable_diffusion(str(tiny_sd_path))
    models_module.hold_models([str(tiny_sd_path / ".." / tiny_sd_path.name)])
    load_stable_diffusion(str(pipeline_variant(tiny_sd_path, tmp_path / "other")))
    assert load_stable_diffusion(str(tiny_sd_path)) is first
    assert len(count_loads) == 2 * len(PARTS)
    released = weakref.ref(first.unet)
    del first
    models_module.hold_models()
    models_module.release_stable_diffusion()
    gc.collect()
    assert released() is None and models_module._LOADED == {}


def test_a_released_models_tokenizer_is_freed_with_it(
    tiny_sd_path: Path, tmp_path: Path, count_loads
):
    """The tokenizers read for the early length checks (read_tokenizer), which a load shares,
    stayed in the process after their model was released, one per model ever checked or
    loaded (about 8 MiB each with CLIP's 49,408 tokens: benchmarks/tokenizer_memory.py)."""
    first = load_stable_diffusion(str(tiny_sd_path))
    released = weakref.ref(first.tokenizer)
    del first
    other = pipeline_variant(tiny_sd_path, tmp_path / "other")
    load_stable_diffusion(str(other))
    gc.collect()
    assert released() is None
    assert list(models_module._TOKENIZERS) == [str(other.resolve())]


def test_tokenizers_read_alone_are_kept_for_the_load_and_held_models_only(
    tiny_sd_path: Path, tmp_path: Path, count_loads, monkeypatch
):
    """A tokenizer read alone serves the load of its model that follows the checks (read once)
    and a batch's later lines (held); one of a model neither loaded nor held goes at the next
    load of another model."""
    monkeypatch.setattr(models_module, "_HELD", dict(models_module._HELD))
    later, never, checked = (
        pipeline_variant(tiny_sd_path, tmp_path / name) for name in ("later", "never", "checked")
    )
    models_module.hold_models([str(later)])
    models_module.read_tokenizer(str(later))
    alone = weakref.ref(models_module.read_tokenizer(str(never)))
    tokenizer = models_module.read_tokenizer(str(checked))
    assert load_stable_diffusion(str(checked)).tokenizer is tokenizer
    gc.collect()
    assert alone() is None
    assert sorted(models_module._TOKENIZERS) == sorted(
        str(path.resolve()) for path in (later, checked)
    )
    assert count_loads.count("tokenizer") == 3


def test_a_released_model_on_cuda_gives_its_memory_back_to_the_gpu(tiny_sd_path: Path, monkeypatch):
    """The CUDA cache's blocks of a released model return to the GPU (free_memory on that
    device: torch.cuda.empty_cache), where other processes and the next model can use them."""
    on_cuda = copy.copy(load_stable_diffusion(str(tiny_sd_path)))  # releasing what was loaded
    freed = []
    monkeypatch.setattr(models_module, "free_memory", freed.append)
    on_cuda.device = torch.device("cuda:0")
    monkeypatch.setitem(models_module._LOADED, ("elsewhere", torch.float16, "cuda:0"), on_cuda)
    models_module.release_stable_diffusion([str(tiny_sd_path)])
    assert freed == [torch.device("cuda:0")]
    assert list(models_module._LOADED) == [(str(tiny_sd_path.resolve()), torch.float32, "cpu")]


def test_loads_are_logged_with_their_time(tiny_sd_path: Path, count_loads, caplog):
    with caplog.at_level(logging.INFO, logger="dreamtext"):
        load_stable_diffusion(str(tiny_sd_path))
        load_stable_diffusion(str(tiny_sd_path))
    loaded = [r.getMessage() for r in caplog.records if "loaded Stable Diffusion" in r.message]
    assert len(loaded) == 1 and loaded[0].endswith(" s")


def test_diffusers_parts_are_loaded_memory_lean(tiny_sd_path: Path, count_loads, monkeypatch):
    seen = {}
    real = models_module._from_pretrained

    def record(cls, path, subfolder, **kwargs):
        seen[subfolder] = kwargs
        return real(cls, path, subfolder, **kwargs)

    monkeypatch.setattr(models_module, "_from_pretrained", record)
    load_stable_diffusion(str(tiny_sd_path))
    assert seen["unet"]["low_cpu_mem_usage"] and seen["vae"]["low_cpu_mem_usage"]


def test_guidance_descriptor_and_second_prompt_share_one_load(tiny_sd_path: Path, count_loads):
    cfg = GuidanceConfig(model=str(tiny_sd_path))
    guidance = StableDiffusionGuidance(cfg)
    guidance.set_prompt("a red cube")
    DescriptorTrainer(guidance.models, "a", ["red"], "cube", DescriptorOptions())
    second = StableDiffusionGuidance(cfg)
    second.set_prompt("a blue sphere")
    assert second.unet is guidance.unet
    assert sorted(count_loads) == sorted(PARTS)


def _vocab_and_table(models):
    return len(models.tokenizer), models.text_encoder.get_input_embeddings().weight.clone()


def test_added_tokens_never_reach_the_shared_text_side(tiny_sd_path: Path, tmp_path: Path):
    models = load_stable_diffusion(str(tiny_sd_path))
    vocab, table = _vocab_and_table(models)
    path = tmp_path / "learned_embeds.safetensors"
    save_file({"<dt-toy>": torch.randn(2, 32)}, str(path))
    cfg = GuidanceConfig(model=str(tiny_sd_path), textual_inversion=str(path))
    StableDiffusionGuidance(cfg).set_prompt("a photo of <dt-toy>")
    trainer = DescriptorTrainer(models, "a", ["red"], "cube", DescriptorOptions(lr=1e-2))
    trainer.placeholders.write_to_table()
    assert len(trainer.tokenizer) == vocab + 1
    new_vocab, new_table = _vocab_and_table(models)
    assert new_vocab == vocab and torch.equal(new_table, table)


def test_the_text_encoder_waits_where_it_is_used_on_the_cpu(tiny_sd_path: Path):
    models = load_stable_diffusion(str(tiny_sd_path))
    assert models.offload_device == torch.device("cpu")
    with models.text_encoder_on_device() as encoder:
        assert encoder is models.text_encoder
    assert next(models.text_encoder.parameters()).device.type == "cpu"


@pytest.mark.parametrize(
    ("setting", "device", "dtype", "expected"),
    [
        (None, "cuda", torch.float16, True),
        (None, "cuda", torch.bfloat16, True),
        (None, "cuda", torch.float32, False),
        (None, "cpu", torch.float32, False),
        (False, "cuda", torch.float16, False),
        (True, "cpu", torch.float32, True),
    ],
)
def test_channels_last_is_on_by_default_for_half_precision_on_cuda(
    setting, device, dtype, expected
):
    assert use_channels_last(setting, torch.device(device), dtype) is expected


def _is_channels_last(module) -> bool:
    return module.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


def test_memory_options_follow_the_newest_config(tiny_sd_path: Path):
    on = GuidanceConfig(
        model=str(tiny_sd_path),
        attention_slicing=True,
        vae_slicing=True,
        vae_tiling=True,
        channels_last=True,
    )
    models = load_for(on)
    assert models.vae.use_slicing and models.vae.use_tiling and models.channels_last
    assert _is_channels_last(models.unet) and _is_channels_last(models.vae.encoder)
    processors = {type(p).__name__ for p in models.unet.attn_processors.values()}
    assert processors == {"SlicedAttnProcessor"}
    latents = models.encode_images(torch.rand(1, 3, 64, 64))
    assert torch.isfinite(latents).all()

    models = load_for(GuidanceConfig(model=str(tiny_sd_path)))
    assert not (models.vae.use_slicing or models.vae.use_tiling or models.channels_last)
    assert not _is_channels_last(models.unet) and not _is_channels_last(models.vae.encoder)
    processors = {type(p).__name__ for p in models.unet.attn_processors.values()}
    assert processors == {"AttnProcessor2_0"}


def test_channels_last_gives_the_same_sds_prediction(tiny_sd_path: Path):
    x_t = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([400])
    predictions = []
    for channels_last in (False, True):
        cfg = GuidanceConfig(model=str(tiny_sd_path), channels_last=channels_last)
        guidance = StableDiffusionGuidance(cfg)
        guidance.set_prompt("a red cube")
        predictions.append(guidance.predict_noise(x_t, t, ["front"]).cond)
    torch.testing.assert_close(predictions[0], predictions[1], rtol=1e-4, atol=1e-5)


def test_compile_is_ignored_with_a_warning_on_the_cpu(tiny_sd_path: Path, caplog):
    cfg = GuidanceConfig(model=str(tiny_sd_path), compile=True)
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        guidance = StableDiffusionGuidance(cfg)
    assert guidance.unet is guidance.models.unet
    assert any("--compile" in r.getMessage() for r in caplog.records)


def test_a_unet_torch_compile_cannot_build_is_one_line_naming_the_fix(
    tiny_sd_path: Path, monkeypatch
):
    """A compiled U-Net's compiler errors (dynamo's and inductor's, raised at its first call)
    become a DreamtextError that says to run with --no-compile; the model's own errors, and
    any error of an eager U-Net, stay what they are."""
    guidance = StableDiffusionGuidance(GuidanceConfig(model=str(tiny_sd_path)))
    guidance.set_prompt("a red cube")
    x_t, t = torch.randn(1, 4, 32, 32), torch.tensor([400])
    failed = type("BackendCompilerFailed", (RuntimeError,), {"__module__": "torch._dynamo.exc"})

    def raising(error):
        def unet(*args, **kwargs):
            raise error

        return unet

    guidance.unet = raising(failed("backend='inductor' raised:\nRuntimeError: no C compiler"))
    with pytest.raises(DreamtextError) as error:
        guidance.predict_noise(x_t, t, ["front"])
    assert str(error.value) == (
        "torch.compile does not build the U-Net here (BackendCompilerFailed: backend='inductor' "
        "raised:): run with --no-compile"
    )
    guidance.unet = raising(torch.OutOfMemoryError("CUDA out of memory"))
    with pytest.raises(torch.OutOfMemoryError):  # the trainer's own handling takes it
        guidance.predict_noise(x_t, t, ["front"])
    # The models are shared by the process (load_for's cache): replaced for this test only.
    monkeypatch.setattr(guidance.models, "unet", raising(failed("not from a compiled U-Net")))
    guidance.unet = guidance.models.unet
    with pytest.raises(failed):
        guidance.predict_noise(x_t, t, ["front"])


def test_compile_on_cuda_compiles_the_unet_once(tiny_sd_path: Path, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module, **_: compiled.append(module) or "compiled")
    on_cuda = copy.copy(load_stable_diffusion(str(tiny_sd_path)))
    on_cuda.device = torch.device("cuda")  # the decision only, no kernel runs
    on_cuda._compiled = {}  # not the shared instance's
    assert on_cuda.sds_unet(compile=True) == "compiled"
    assert on_cuda.sds_unet(compile=True) == "compiled"
    assert compiled == [on_cuda.unet]
    assert on_cuda.sds_unet(compile=False) is on_cuda.unet


def test_the_compile_flag_reaches_the_guidance_config():
    from dreamtext.cli import build_parser, text_overrides

    args = build_parser().parse_args(["text", "a cube", "--compile"])
    guidance = text_overrides(args)["guidance"]
    # The U-Net, the VAE encoder, both replayed as CUDA graphs, and the field's MLPs.
    assert guidance == {"compile": True, "compile_vae": True, "compile_mode": "reduce-overhead"}
    assert guidance["compile_mode"] in COMPILE_MODES
    assert text_overrides(args)["render"] == {"compile_field": True}
    args = build_parser().parse_args(["text", "a cube"])
    assert "compile" not in text_overrides(args).get("guidance", {})
    assert "render" not in text_overrides(args)  # the config's default: "auto"
    args = build_parser().parse_args(["text", "a cube", "--no-compile"])
    guidance = text_overrides(args)["guidance"]
    assert (guidance["compile"], guidance["compile_vae"]) == (False, False)
    assert "compile_mode" not in guidance  # nothing compiles: the config's mode stays
    assert text_overrides(args)["render"] == {"compile_field": False}


def test_the_field_compiles_on_cuda_only(monkeypatch, caplog):
    """``render.compile_field`` compiles the field's MLPs where the field is on CUDA; elsewhere
    the field runs eagerly: with a warning when ``--compile`` asked (as the U-Net's is
    ignored), silently for ``"auto"``, the default."""
    from dreamtext import factory
    from dreamtext.config import resolve_config
    from dreamtext.field import FieldConfig, NeRFField

    small = FieldConfig(num_levels=2, log2_hashmap_size=8, hidden_dim=8, num_blocks=1)
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        field = factory.build_field(small, "cpu", compile=True)
    assert not field.compiled
    assert any("--compile" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        assert not factory.build_field(small, "cpu", compile="auto").compiled
    assert caplog.records == []
    compiled = []

    class OnCuda(NeRFField):  # the decision only: the field stays on the CPU
        def __init__(self, cfg, device=None):
            super().__init__(cfg, "cpu")

        def compile_mlps(self, backend="inductor", remedy="run with --no-compile"):
            compiled.append((backend, remedy))

    monkeypatch.setattr(factory, "NeRFField", OnCuda)
    monkeypatch.setattr(factory, "_AUTO_COMPILE_FAILED", [])  # whatever ran before in here
    factory.build_field(small, "cuda", torch.float16)
    factory.build_field(small, "cuda", torch.float16, compile=False)
    assert compiled == []
    factory.build_field(small, "cuda", torch.float16, compile=True)
    assert compiled == [("inductor", "run with --no-compile")]
    factory.build_field(small, "cuda", torch.float16, compile="auto")
    assert compiled[-1] == ("inductor", factory.AUTO_COMPILE_FALLBACK)
    cfg = resolve_config({"prompt": "a cube"})
    assert cfg.render.compile_field == "auto"
    monkeypatch.setattr(factory, "build_field", lambda *a: compiled.append(a[3]))
    monkeypatch.setattr(factory, "build_renderer", lambda *a: None)
    factory.build_parts(cfg, torch.device("cuda"), with_guidance=False, with_optimizer=False)
    assert compiled[-1] == "auto"  # build_parts passes the config's setting on
    cfg = resolve_config({"prompt": "a cube", "render": {"compile_field": True}})
    factory.build_parts(cfg, torch.device("cuda"), with_guidance=False, with_optimizer=False)
    assert compiled[-1] is True
    # Where nothing compiles, build_parts says so in its one line and builds the field eager.
    factory.build_parts(cfg, torch.device("cpu"), with_guidance=False, with_optimizer=False)
    assert compiled[-1] is False


def test_auto_falls_back_to_the_eager_mlps_where_compiling_fails(monkeypatch, caplog):
    """``"auto"`` on CUDA: MLPs that torch.compile cannot build (a backend that raises, as a
    missing Triton or C compiler does) leave the field eager, with one warning that says so and
    how to skip the try; ``--compile`` (``True``) makes the same failure the run's error."""
    from dreamtext import factory
    from dreamtext.errors import DreamtextError
    from dreamtext.field import FieldConfig, NeRFField

    def broken_backend(graph, example_inputs):
        raise RuntimeError("no working C compiler")

    compile_mlps = NeRFField.compile_mlps

    class OnCuda(NeRFField):  # the field stays on the CPU; the compiler is a broken one
        def __init__(self, cfg, device=None):
            super().__init__(cfg, "cpu")

        def compile_mlps(self, backend="inductor", **kwargs):
            compile_mlps(self, backend=broken_backend, **kwargs)

    monkeypatch.setattr(factory, "NeRFField", OnCuda)
    monkeypatch.setattr(factory, "_AUTO_COMPILE_FAILED", [])
    small = FieldConfig(num_levels=2, log2_hashmap_size=8, hidden_dim=8, num_blocks=1)
    torch._dynamo.reset()
    with caplog.at_level(logging.WARNING, logger="dreamtext"):
        field = factory.build_field(small, "cuda", compile="auto")
        # A batch's next prompt in the same process: no second try, no second warning.
        assert not factory.build_field(small, "cuda", compile="auto").compiled
    assert not field.compiled
    x = torch.rand(16, 3) - 0.5
    sigma, albedo = field(x)  # the eager MLPs answer
    assert sigma.shape == (16,) and albedo.shape == (16, 3)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1
    assert messages[0].startswith("torch.compile does not build the field's MLPs here (")
    # torch.compile's BackendCompilerFailed quoted by the error it wraps, not its own first line
    assert "(BackendCompilerFailed: RuntimeError: no working C compiler)" in messages[0]
    assert messages[0].endswith(factory.AUTO_COMPILE_FALLBACK)
    torch._dynamo.reset()
    with pytest.raises(DreamtextError, match=r"run with --no-compile$"):
        factory.build_field(small, "cuda", compile=True)
    torch._dynamo.reset()


def test_a_resume_whose_field_does_not_compile_here_is_told_no_compile(
    tmp_path, monkeypatch, capsys
):
    """A run trained with --compile, resumed where torch.compile cannot build the field's MLPs,
    was told to "run without --compile": its config.json keeps render.compile_field true, so the
    resume without the flag failed the same way. The line names --no-compile, which resumes."""
    from virtual_cuda import virtual_cuda

    from dreamtext.field import NeRFField

    def broken_backend(graph, example_inputs):
        raise RuntimeError("no working C compiler")

    compile_mlps = NeRFField.compile_mlps
    workspace = tmp_path / "run"
    command = ["text", "a red cube", "--model", "builtin:shapes", "--device", "cuda"]
    command += ["--h", "16", "--no-export", "--encoding", "torch", "--workspace", str(workspace)]
    with virtual_cuda():
        monkeypatch.setattr(NeRFField, "compile_mlps", lambda self, **kwargs: None)
        assert main([*command, "--iters", "1", "--compile"]) == 0  # compiled on its GPU
        saved = json.loads((workspace / "config.json").read_text())
        assert saved["render"]["compile_field"] is True
        monkeypatch.setattr(
            NeRFField,
            "compile_mlps",
            lambda self, **kwargs: compile_mlps(self, backend=broken_backend, **kwargs),
        )
        torch._dynamo.reset()
        capsys.readouterr()
        resume = [*command, "--iters", "2", "--resume"]
        assert main(resume) == 2  # without --compile, as the old line said
        err = capsys.readouterr().err
        assert "torch.compile does not build the field's MLPs here" in err, err
        assert err.rstrip().endswith("run with --no-compile"), err
        assert main([*resume, "--no-compile"]) == 0, capsys.readouterr().err
    torch._dynamo.reset()
    assert load_checkpoint(workspace / "checkpoints" / "last.pt")["step"] == 2


@pytest.mark.parametrize("value", ["on", "yes", 1, None])
def test_compile_field_takes_true_false_or_auto(value):
    from dreamtext.config import resolve_config
    from dreamtext.errors import DreamtextError

    with pytest.raises(DreamtextError, match=r"render\.compile_field must be true, false or auto"):
        resolve_config({"prompt": "a cube", "render": {"compile_field": value}})


def hub_failure_without_network() -> OSError:
    """The chain diffusers and transformers raise when the hub cannot be reached and the files
    are not cached: a consequence ("does not appear to have a file named ...") caused by
    huggingface_hub's LocalEntryNotFoundError caused by the network error."""
    import socket

    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        try:
            try:
                raise socket.gaierror(-2, "Name or service not known")
            except OSError as network:
                raise LocalEntryNotFoundError("not in the local cache") from network
        except LocalEntryNotFoundError as missing:
            raise OSError(
                "m does not appear to have a file named scheduler_config.json."
            ) from missing
    except OSError as error:
        return error


def test_a_load_without_network_says_the_hub_was_not_reached(tmp_path, monkeypatch):
    """Without network a hub id failed with "... does not appear to have a file named
    scheduler_config.json", which sends the user looking for a broken model."""
    from huggingface_hub import constants

    from dreamtext.errors import DreamtextError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def unreachable(*args, **kwargs):
        raise hub_failure_without_network()

    monkeypatch.setattr(models_module, "_from_pretrained", unreachable)
    monkeypatch.setattr(
        "diffusers.DDPMScheduler.load_config", staticmethod(unreachable), raising=True
    )
    with pytest.raises(DreamtextError) as error:
        load_stable_diffusion("someone/some-model")
    message = str(error.value)
    assert (
        "the Hugging Face hub could not be reached: [Errno -2] Name or service not known" in message
    )
    assert "does not appear" not in message and "\n" not in message
    other = OSError("m does not appear to have a file named unet/config.json.")
    assert models_module.hub_unreachable(other) is None  # a real missing file keeps its words
    assert "does not appear" in models_module._hub_error_message("m", other)


def test_clip_without_network_says_the_hub_was_not_reached(monkeypatch):
    from huggingface_hub import constants
    from transformers import CLIPProcessor

    from dreamtext.describe import ClipEncoder
    from dreamtext.errors import DreamtextError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # as the hub read it at import

    def unreachable(*args, **kwargs):
        raise hub_failure_without_network()

    monkeypatch.setattr(CLIPProcessor, "from_pretrained", unreachable)
    with pytest.raises(DreamtextError, match=r"could not be reached \(\[Errno -2\] Name or"):
        ClipEncoder("openai/clip-vit-base-patch32", "cpu")


def test_the_model_revision_is_the_cached_snapshot_a_hub_id_loads(tmp_path, tiny_sd_path):
    """A run records which commit of a hub model it loaded: the snapshot that the cache's
    ``refs/main`` names (where ``from_pretrained`` reads the files offline)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--someone--some-model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    (snapshot / "unet").mkdir(parents=True)
    # What the loaders fetch (each part by its subfolder): no model_index.json, whose absence
    # left the revision None for a model dreamtext downloaded itself.
    (snapshot / "unet" / "config.json").write_text("{}")
    assert models_module.model_revision("someone/some-model", cache_dir=tmp_path) == commit
    (snapshot / "unet" / "config.json").unlink()
    (snapshot / "model_index.json").write_text("{}")  # a whole pipeline's download
    assert models_module.model_revision("someone/some-model", cache_dir=tmp_path) == commit
    assert models_module.model_revision("someone/other-model", cache_dir=tmp_path) is None
    assert models_module.model_revision(str(tiny_sd_path), cache_dir=tmp_path) is None
    assert models_module.model_revision("builtin:shapes", cache_dir=tmp_path) is None


def test_the_clip_revision_is_the_cached_snapshot_of_its_config(tmp_path, tiny_clip_path):
    """CLIP's commit is found as Stable Diffusion's is, by the file every load reads (a CLIP
    repository's top-level config.json, which model_revision does not look for); a local folder
    has no commit and is named by its folder."""
    from tiny_clip import write_clip

    commit = "fedcba9876543210fedcba9876543210fedcba98"
    repo = tmp_path / "models--someone--tiny-clip"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = write_clip(repo / "snapshots" / commit)
    found = models_module.clip_revision("someone/tiny-clip", cache_dir=tmp_path)
    assert found == (commit, str(snapshot))
    assert models_module.model_revision("someone/tiny-clip", cache_dir=tmp_path) is None
    assert models_module.clip_revision("someone/other-clip", cache_dir=tmp_path) == (None, None)
    local = models_module.clip_revision(str(tiny_clip_path), cache_dir=tmp_path)
    assert local == (None, str(tiny_clip_path.resolve()))


def test_a_folder_of_fp16_variant_weights_alone_loads(tmp_path, tiny_sd_path):
    """A folder saved with ``variant="fp16"`` (``model.fp16.safetensors`` ...), which diffusers
    reads with ``variant="fp16"``, was refused as "damaged or incomplete"."""
    import shutil

    folder = tmp_path / "sd-fp16"
    shutil.copytree(tiny_sd_path, folder)
    for weights in list(folder.rglob("*.safetensors")):
        weights.rename(weights.with_name(weights.name.replace(".safetensors", ".fp16.safetensors")))
    assert models_module.local_variant(str(folder), "unet") == "fp16"
    assert models_module.local_variant(str(folder), "tokenizer") is None
    assert models_module.local_variant(str(tiny_sd_path), "unet") is None
    loaded = load_stable_diffusion(str(folder), "cpu")
    plain = load_stable_diffusion(str(tiny_sd_path), "cpu")
    for name, tensor in plain.unet.state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[name], tensor), name


def folder_with_unet(tiny_sd_path: Path, dest: Path, **unet_edits) -> Path:
    """A copy of the tiny pipeline (links) whose U-Net is a fresh one with ``unet_edits`` to its
    constructor arguments, saved with weights that fit them."""
    import tiny_models

    folder = pipeline_variant(tiny_sd_path, dest)
    for link in (folder / "unet").iterdir():
        link.unlink()
    unet = tiny_models.tiny_unet()
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    type(unet)(**{**config, **unet_edits}).save_pretrained(folder / "unet")
    return folder


@pytest.mark.parametrize(
    ("edits", "words"),
    [
        (  # SDXL: pooled text and image-size embeddings from a second text encoder
            {
                "addition_embed_type": "text_time",
                "addition_time_embed_dim": 8,
                "projection_class_embeddings_input_dim": 80,
            },
            "SDXL-style",
        ),
        (  # an upscaler / unCLIP: class labels
            {"class_embed_type": "projection", "projection_class_embeddings_input_dim": 32},
            "class labels",
        ),
        ({"cross_attention_dim": 64}, "attends to 64-wide text embeddings"),
    ],
)
def test_a_unet_that_needs_other_conditioning_is_refused_at_load(
    tiny_sd_path: Path, tmp_path: Path, edits: dict, words: str
):
    """These folders have every part an SD folder has: they loaded, and the first training step
    failed inside the U-Net with a traceback, after the workspace was written."""
    from dreamtext.errors import DreamtextError

    folder = folder_with_unet(tiny_sd_path, tmp_path / "other", **edits)
    with pytest.raises(DreamtextError, match=words) as error:
        load_stable_diffusion(str(folder))
    assert "\n" not in str(error.value)


def test_a_damaged_local_folder_names_its_part_not_the_hub(tiny_sd_path: Path, tmp_path: Path):
    """A half-copied folder was reported as "HF_HUB_OFFLINE is set and it is not in the Hugging
    Face cache; download it once with network", which has nothing to do with a local folder."""
    from dreamtext.errors import DreamtextError

    folder = pipeline_variant(tiny_sd_path, tmp_path / "damaged")
    weights = next((folder / "unet").glob("*.safetensors"))
    data = weights.read_bytes()
    weights.unlink()
    weights.write_bytes(data[: len(data) // 2])  # the link replaced by half the file
    with pytest.raises(DreamtextError) as error:
        load_stable_diffusion(str(folder))
    message = str(error.value)
    assert message.startswith("could not load the unet of")
    assert "damaged or incomplete" in message
    assert "HF_HUB_OFFLINE" not in message and "cache" not in message


def test_a_model_folder_this_user_may_not_read_is_named_not_called_damaged(
    tmp_path: Path, monkeypatch
):
    """chmod 000 on the folder was 'Permission denied (…/unet); free disk space or pick a folder
    you can write (--workspace)'; on one part, 'the folder's files are damaged or incomplete:
    copy or download the model again'. Root reads anything, so the refusal is simulated."""
    import os

    for part in models_module.SD_SUBFOLDERS:
        (tmp_path / "sd" / part).mkdir(parents=True)
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: Path(p).name != "unet" and real_access(p, mode)
    )
    with pytest.raises(DreamtextError) as raised:
        models_module.locate_model(str(tmp_path / "sd"))
    message = str(raised.value)
    assert f"cannot read the model folder {tmp_path / 'sd' / 'unet'} (permission denied)" in message
    assert "read access" in message and "damaged" not in message


def test_vae_checkpointing_gives_the_same_gradients_keeping_a_fraction(
    tiny_sd_path: Path, monkeypatch
):
    """``guidance.vae_checkpointing``: the SDS step's encode gives the same latents and the same
    gradient to the render (what it saves in memory: ``test_encoder_memory_benchmark.py``), and
    checkpoints the down blocks one ResNet block and one downsampler at a time (the tiny
    VAE: 1 + 1 in the first block, 1 in the second). Off again with the next config; an encode
    without a graph checkpoints nothing."""
    import torch.utils.checkpoint

    images = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    plain = encode_with_gradient(
        load_for(GuidanceConfig(model=str(tiny_sd_path))).encode_images, images
    )
    calls = []
    real = torch.utils.checkpoint.checkpoint

    def counting(function, *args, **kwargs):
        calls.append(type(getattr(function, "__self__", function)).__name__)
        return real(function, *args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    models = load_for(GuidanceConfig(model=str(tiny_sd_path), vae_checkpointing=True))
    assert models.vae.encoder.gradient_checkpointing
    checkpointed = encode_with_gradient(models.encode_images, images)
    # The mid-block (a ResNet block, attention, a ResNet block) checkpoints its second ResNet
    # block itself, and is not checkpointed again around it.
    assert calls == ["ResnetBlock2D", "Downsample2D", "ResnetBlock2D", "ResnetBlock2D"]
    torch.testing.assert_close(checkpointed[0], plain[0], rtol=0, atol=0)
    torch.testing.assert_close(checkpointed[1], plain[1], rtol=1e-6, atol=1e-7)
    assert plain[1].abs().max() > 0
    calls.clear()
    with torch.no_grad():
        models.encode_images(images)
    assert calls == []

    models = load_for(GuidanceConfig(model=str(tiny_sd_path)))
    assert not models.vae.encoder.gradient_checkpointing
    encode_with_gradient(models.encode_images, images)
    assert calls == []


def test_a_text_run_with_vae_checkpointing_trains_the_same_field(tmp_path: Path, tiny_sd_path):
    """``dreamtext text`` with ``guidance: {vae_checkpointing: true}`` in its config file trains
    what the run without it trains, loss for loss and weight for weight (the same gradients),
    and records the setting in config.json."""
    runs = {}
    for on in (False, True):
        settings = {**TINY_TRAIN, "preview_every": 0, "checkpoint_every": 3}
        settings["guidance"] = {"vae_checkpointing": on}
        config = tmp_path / f"{on}.yaml"
        config.write_text(yaml.safe_dump(settings))
        workspace = tmp_path / f"run_{on}"
        argv = ["text", "a cube", "--model", str(tiny_sd_path), "--config", str(config)]
        assert main([*argv, "--iters", "3", "--seed", "3", "--workspace", str(workspace)]) == 0
        saved = json.loads((workspace / "config.json").read_text())
        assert saved["guidance"]["vae_checkpointing"] is on
        lines = (workspace / "log.jsonl").read_text().splitlines()
        runs[on] = ([json.loads(line)["loss"] for line in lines], workspace)
    assert runs[True][0] == runs[False][0] and len(runs[True][0]) == 3
    fields = [load_checkpoint(runs[on][1] / "checkpoints" / "last.pt")["field"] for on in runs]
    assert len(fields[0]) > 5
    for name, value in fields[0].items():
        torch.testing.assert_close(fields[1][name], value, rtol=0, atol=0)
