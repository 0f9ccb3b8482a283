"""Value tests of the model loader's decisions (mutation round 67P): which --model values are a
folder, a hub id or a refusal, which dtype a flag means, what the process cache keys on."""

from pathlib import Path

import pytest
import torch

import dreamtext.models as models_module
from dreamtext.errors import DreamtextError
from dreamtext.guidance import GuidanceConfig
from dreamtext.models import locate_model, resolve_dtype

CUDA = torch.device("cuda")  # a device object only: nothing runs on it here
CPU = torch.device("cpu")


def test_a_bare_name_that_is_no_folder_is_refused_as_a_missing_folder(tmp_path, monkeypatch):
    """A hub id is ``owner/name``; a bare ``sd21`` (a typo of a folder in the current directory)
    is a folder that does not exist, not a hub id to look up in the cache."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DreamtextError, match="model folder 'sd21' does not exist"):
        locate_model("sd21")
    with pytest.raises(DreamtextError, match="does not exist"):
        locate_model("a/b/c")
    assert locate_model("owner/name") == "owner/name"


def test_a_folder_without_one_of_the_parts_is_refused_naming_the_part(tmp_path):
    folder = tmp_path / "sd"
    for sub in ("unet", "vae", "text_encoder", "tokenizer"):
        (folder / sub).mkdir(parents=True)
    with pytest.raises(DreamtextError, match=r"it lacks scheduler\)"):
        locate_model(str(folder))
    (folder / "scheduler").mkdir()
    assert locate_model(str(folder)) == str(folder.resolve())


@pytest.mark.parametrize(
    ("flags", "dtype"),
    [({}, torch.float32), ({"fp16": True}, torch.float16), ({"bf16": True}, torch.bfloat16)],
)
def test_each_precision_flag_gives_its_own_dtype_on_cuda(flags, dtype):
    assert resolve_dtype(GuidanceConfig(**flags), CUDA) == dtype


@pytest.mark.parametrize("flag", ["fp16", "bf16"])
def test_either_half_precision_flag_is_refused_on_the_cpu_naming_that_flag(flag):
    with pytest.raises(DreamtextError, match=f"--{flag} needs a CUDA GPU") as refused:
        resolve_dtype(GuidanceConfig(**{flag: True}), CPU)
    assert resolve_dtype(GuidanceConfig(), CPU) == torch.float32
    # A GPU run resumed on a laptop records it with no flag typed, which leaving out the flag
    # does not turn off: the line names where it comes from and the flag that turns it off.
    assert str(refused.value).endswith(
        f"(guidance.{flag} is on, by --{flag}, a --config file or the resumed run's config.json);"
        f" to run in fp32 on the CPU, give --fp32 (without --{flag})"
    )


def _offline_failure() -> OSError:
    """What a loader raises for a hub id that is not cached: its consequence, caused by
    huggingface_hub's LocalEntryNotFoundError."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        try:
            raise LocalEntryNotFoundError("cannot find the requested files in the local cache")
        except LocalEntryNotFoundError as missing:
            raise OSError("m does not appear to have a file named config.json.") from missing
    except OSError as error:
        return error


def test_with_hf_hub_offline_set_the_message_names_it_not_an_unreachable_hub(monkeypatch):
    """HF_HUB_OFFLINE=1 makes every uncached file a LocalEntryNotFoundError; the line names the
    setting the user can change, not a network that was never tried."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    message = models_module._hub_error_message("someone/model", _offline_failure())
    assert "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache" in message
    assert "could not be reached" not in message


def test_the_files_check_refuses_an_uncached_hub_id_offline_and_passes_what_can_load(
    tiny_sd_path, tmp_path, monkeypatch
):
    """What a batch asks of the models of its lines after the first, without loading them: a
    hub id that HF_HUB_OFFLINE keeps out of reach gets the load's own line; a cached one, a
    diffusers folder, and any hub id where the hub may be asked pass."""
    from huggingface_hub import constants

    from dreamtext.models import check_model_files

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DreamtextError) as refused:
        check_model_files("someone/model")
    assert str(refused.value) == (
        "could not load Stable Diffusion 'someone/model' (HF_HUB_OFFLINE is set and it is not in "
        "the Hugging Face cache); download it once with network, or pass a local diffusers "
        "folder with --model /path/to/folder"
    )
    check_model_files(str(tiny_sd_path))
    with pytest.raises(DreamtextError, match="lacks unet"):
        check_model_files(str(tmp_path))
    cached = tmp_path / "empty_cache" / "models--someone--model"
    commit = "0123456789abcdef0123456789abcdef01234567"  # the hub's snapshots are commit hashes
    (cached / "snapshots" / commit / "unet").mkdir(parents=True)
    (cached / "snapshots" / commit / "unet" / "config.json").write_text("{}")
    (cached / "refs").mkdir()
    (cached / "refs" / "main").write_text(commit)
    check_model_files("someone/model")  # in the cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    check_model_files("other/model")  # the load may download it


def test_a_unet_whose_blocks_attend_to_another_width_than_the_encoder_is_refused():
    """``cross_attention_dim`` may be one per block: each must be the text encoder's width."""
    from diffusers.configuration_utils import FrozenDict

    unet = FrozenDict(cross_attention_dim=(32, 64))
    text = FrozenDict(hidden_size=32)
    with pytest.raises(DreamtextError, match="attends to"):
        models_module.check_text_to_image_unet("m", unet, text)
    models_module.check_text_to_image_unet("m", FrozenDict(cross_attention_dim=(32, 32)), text)
    models_module.check_text_to_image_unet("m", FrozenDict(cross_attention_dim=32), text)


def test_sharded_variant_weights_are_read_as_that_variant(tmp_path):
    """``save_pretrained(..., variant="fp16")`` of a big part writes shards
    ``NAME.fp16-00001-of-00002.safetensors``: the folder holds only fp16 weights all the same."""
    unet = tmp_path / "unet"
    unet.mkdir()
    for k in (1, 2):
        (unet / f"diffusion_pytorch_model.fp16-0000{k}-of-00002.safetensors").write_bytes(b"")
    (unet / "diffusion_pytorch_model.safetensors.index.fp16.json").write_text("{}")
    assert models_module.local_variant(str(tmp_path), "unet") == "fp16"
    (unet / "diffusion_pytorch_model-00001-of-00002.safetensors").write_bytes(b"")
    assert models_module.local_variant(str(tmp_path), "unet") is None  # plain ones too


def _with_scheduler(tiny_sd_path: Path, dest: Path, **edits) -> Path:
    """A linked copy of the tiny pipeline whose scheduler config has ``edits``, a value of
    ``None`` removing that key."""
    import json

    from tiny_models import pipeline_variant

    folder = pipeline_variant(tiny_sd_path, dest)
    path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    path.unlink()
    for key, value in edits.items():
        config.pop(key, None)
        if value is not None:
            config[key] = value
    path.write_text(json.dumps(config))
    return folder


def test_a_model_that_predicts_the_clean_sample_is_refused(tiny_sd_path, tmp_path):
    """SDS here turns an epsilon or v prediction into epsilon; an x0 ("sample") model would be
    read as one of them and train on a wrong gradient."""
    folder = _with_scheduler(tiny_sd_path, tmp_path / "x0", prediction_type="sample")
    with pytest.raises(DreamtextError, match="predicts 'sample'"):
        models_module.load_stable_diffusion(str(folder))


def test_a_scheduler_config_without_a_prediction_type_is_epsilon(tiny_sd_path, tmp_path):
    """SD 1.x's scheduler configs predate the key; diffusers' default for them is epsilon."""
    folder = _with_scheduler(tiny_sd_path, tmp_path / "old", prediction_type=None)
    assert models_module.load_stable_diffusion(str(folder)).prediction_type == "epsilon"


def test_an_inpainting_unet_is_refused_at_load(tiny_sd_path, tmp_path):
    """An inpainting U-Net takes 9 input channels (latents, mask, masked image), not 4."""
    import tiny_models

    folder = tiny_models.pipeline_variant(tiny_sd_path, tmp_path / "inpaint")
    for link in (folder / "unet").iterdir():
        link.unlink()
    unet = tiny_models.tiny_unet()
    config = {k: v for k, v in unet.config.items() if not k.startswith("_")}
    type(unet)(**{**config, "in_channels": 9}).save_pretrained(folder / "unet")
    with pytest.raises(DreamtextError, match="9-channel U-Net"):
        models_module.load_stable_diffusion(str(folder))


def test_renders_are_encoded_from_minus_one_to_one_times_the_latent_scale(tiny_sd_path):
    """SD's VAE was trained on images in [−1, 1]; its latents are scaled by
    ``vae.config.scaling_factor`` for the U-Net (the posterior mean, no sampling)."""
    models = models_module.load_stable_diffusion(str(tiny_sd_path))
    size = models.resolution
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = models.encode_images(images)
        mean = models.vae.encode(images * 2 - 1).latent_dist.mean
    scale = models.vae.config.scaling_factor
    assert scale != 1.0  # the tiny model's, so that a missing scale shows
    torch.testing.assert_close(got, mean * scale)


def test_the_sampling_pipeline_is_ddim_on_the_models_schedule_without_clipping(
    tiny_sd_path, tmp_path
):
    """SD's latents range well past [−1, 1]; DDIM's default ``clip_sample`` (on, where a PNDM
    config does not name it, as SD 2.x's does not) would clip every predicted latent."""
    from diffusers import DDIMScheduler

    folder = _with_scheduler(tiny_sd_path, tmp_path / "sd2", clip_sample=None)
    models = models_module.load_stable_diffusion(str(folder))
    assert "clip_sample" not in models.scheduler_config
    scheduler = models.pipeline().scheduler
    assert isinstance(scheduler, DDIMScheduler)
    assert scheduler.config.clip_sample is False
    torch.testing.assert_close(scheduler.alphas_cumprod.float(), models.alphas_cumprod.cpu())


# -- mutation round 69L ------------------------------------------------------------------------


def test_a_relative_folder_path_that_does_not_exist_is_refused_not_sent_to_the_hub(
    tmp_path, monkeypatch
):
    """``./sd21`` has one slash, as a hub id does, but names a folder: a typo of it is a missing
    folder, not an id to look up in the Hugging Face cache."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DreamtextError, match=r"model folder '\./sd21' does not exist"):
        locate_model("./sd21")


def test_a_half_precision_load_on_the_cpu_is_refused_naming_the_gpu(tiny_sd_path):
    """Callers that name the dtype themselves (not through --fp16) are refused too, before any
    weights are read."""
    with pytest.raises(DreamtextError, match="needs a CUDA GPU"):
        models_module.load_stable_diffusion(str(tiny_sd_path), "cpu", torch.float16)


@pytest.mark.parametrize(
    "conditioning", [{"num_class_embeds": 1000}, {"class_embed_type": "timestep"}]
)
def test_a_unet_conditioned_on_class_labels_is_refused(conditioning):
    """SD 2.x's x4 upscaler conditions on a noise level through ``num_class_embeds``, unCLIP
    through ``class_embed_type``: either alone is a U-Net dreamtext cannot drive."""
    from diffusers.configuration_utils import FrozenDict

    unet = FrozenDict(cross_attention_dim=32, **conditioning)
    with pytest.raises(DreamtextError, match="class labels"):
        models_module.check_text_to_image_unet("m", unet, FrozenDict(hidden_size=32))


def test_the_latent_scale_is_the_folders_vae_scaling_factor(tiny_sd_path, tmp_path):
    """A VAE saved with another ``scaling_factor`` (SD 1.x/2.x: 0.18215) scales its latents by
    that one: the U-Net was trained on latents of unit variance under it."""
    from tiny_models import pipeline_variant

    folder = pipeline_variant(tiny_sd_path, tmp_path / "scaled", vae={"scaling_factor": 0.5})
    models = models_module.load_stable_diffusion(str(folder))
    assert models.scaling_factor == 0.5
    images = torch.rand(1, 3, models.resolution, models.resolution)
    with torch.no_grad():
        got = models.encode_images(images)
        mean = models.vae.encode(images * 2 - 1).latent_dist.mean
    torch.testing.assert_close(got, mean * 0.5)


def test_a_render_twice_the_native_size_is_averaged_over_two_by_two_pixels(tiny_sd_path):
    """Bilinear resizing without corner alignment (PyTorch's and stable-dreamfusion's) halves a
    size by sampling between each pixel pair: each pixel of the result is the mean of a 2×2
    block."""
    models = models_module.load_stable_diffusion(str(tiny_sd_path))
    size = models.resolution
    images = torch.rand(1, 3, 2 * size, 2 * size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = models.encode_images(images)
        want = models.encode_images(torch.nn.functional.avg_pool2d(images, 2))
    torch.testing.assert_close(got, want)


def test_the_clip_encoder_takes_each_runs_batch_size_and_is_forgotten_by_clear_cache(
    monkeypatch,
):
    """One CLIP per process, but a later run's smaller batch (to fit memory) is the one used;
    ``clear_cache`` drops it, so the next use loads it again."""
    from dreamtext import describe

    built = []

    class FakeClip:
        def __init__(self, model, device, batch_size):
            built.append(batch_size)
            self.model, self.batch_size = torch.nn.Linear(1, 1), batch_size

    monkeypatch.setattr(describe, "ClipEncoder", FakeClip)
    monkeypatch.setattr(models_module, "_CLIP", {})
    with models_module.clip_encoder("clip", "cpu", batch_size=256) as encoder:
        assert encoder.batch_size == 256
    with models_module.clip_encoder("clip", "cpu", batch_size=8) as encoder:
        assert encoder.batch_size == 8
    assert built == [256]
    models_module.clear_cache()
    with models_module.clip_encoder("clip", "cpu", batch_size=8):
        pass
    assert built == [256, 8]


def test_a_model_folder_that_cannot_be_entered_is_named_not_called_damaged(tmp_path, monkeypatch):
    """``chmod a-x`` on a part: its names can be listed but no file in it opened, which is a
    permission to fix, not damaged files. Root enters anything, so the refusal is simulated."""
    import os

    for part in models_module.SD_SUBFOLDERS:
        (tmp_path / "sd" / part).mkdir(parents=True)
    real_access = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode: not (Path(p).name == "vae" and mode & os.X_OK) and real_access(p, mode),
    )
    with pytest.raises(DreamtextError, match=r"cannot read the model folder .*vae \(permission"):
        locate_model(str(tmp_path / "sd"))


def test_an_unreachable_hub_is_found_through_an_implicit_exception_context():
    """A loader that raises its own ``OSError`` inside ``except`` (no ``from``) chains the hub's
    error as ``__context__`` only; the network's words are still the innermost error's."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        try:
            try:
                raise ConnectionError("[Errno -2] Name or service not known")
            except ConnectionError as network:
                raise LocalEntryNotFoundError("cannot reach the hub") from network
        except LocalEntryNotFoundError:
            raise OSError("m does not appear to have a file named config.json.")  # noqa: B904
    except OSError as error:
        failure = error
    assert failure.__cause__ is None
    assert models_module.hub_unreachable(failure) == "[Errno -2] Name or service not known"


def test_a_second_precision_of_one_model_is_a_second_load_in_that_precision(
    tiny_sd_path, monkeypatch
):
    """A batch whose prompts ask for fp32 and then bf16 gets each in its own dtype, not the
    first one's from the process cache (the CPU refusal is lifted, as the memory model does)."""
    monkeypatch.setattr(models_module, "check_precision", lambda dtype, device: None)
    first = models_module.load_stable_diffusion(str(tiny_sd_path), "cpu", torch.float32)
    half = models_module.load_stable_diffusion(str(tiny_sd_path), "cpu", torch.bfloat16)
    assert half is not first
    assert next(half.unet.parameters()).dtype == torch.bfloat16
    assert next(first.unet.parameters()).dtype == torch.float32


def _offline_with_cache(monkeypatch, hub: Path) -> None:
    """HF_HUB_OFFLINE=1 with ``hub`` as the Hugging Face cache, as the hub reads them (its
    constants, read at import) and in the environment; no model loaded before."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models_module.clear_cache()


def test_offline_a_damaged_model_in_the_hub_cache_is_called_damaged_not_missing(
    tiny_sd_path, tmp_path, monkeypatch
):
    """HF_HUB_OFFLINE=1 and a hub id whose weights in the cache were cut short (an interrupted
    download): the line said "it is not in the Hugging Face cache", sending the user to
    download a model they have, and naming nothing of the file that does not load."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--some-model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_sd_path, repo / "snapshots" / commit)
    weights = next((repo / "snapshots" / commit / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])
    _offline_with_cache(monkeypatch, tmp_path / "hub")
    with pytest.raises(DreamtextError) as refusal:
        models_module.load_stable_diffusion("someone/some-model")
    message = str(refusal.value)
    assert message.startswith(
        "could not load Stable Diffusion 'someone/some-model' from the Hugging Face cache ("
    )
    assert "diffusion_pytorch_model" in message
    # Deleted first: the hub client returns a file it has as it is, damaged or not.
    assert f"its cached files are damaged or incomplete: delete {repo} and download it again" in (
        message
    )
    assert "not in the Hugging Face cache" not in message
    assert "\n" not in message


def test_offline_a_hub_model_cached_as_its_fp16_variant_alone_loads(
    tiny_sd_path, tmp_path, monkeypatch
):
    """A hub id whose cache holds only the fp16 variant (``model.fp16.safetensors`` ...: what
    ``StableDiffusionPipeline.from_pretrained(id, variant="fp16")`` downloads, the form the
    diffusers docs give; SD 2.1-base has it) loads those files, as the same files in a folder
    do. The weights check read them, then the load asked the cache for the plain ones and
    refused: "it is not in the Hugging Face cache" (online it would download 5 GB more)."""
    import shutil

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--some-model"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_sd_path, repo / "snapshots" / commit)
    for weights in list((repo / "snapshots" / commit).rglob("*.safetensors")):
        weights.rename(weights.with_name(weights.name.replace(".safetensors", ".fp16.safetensors")))
    _offline_with_cache(monkeypatch, tmp_path / "hub")
    loaded = models_module.load_stable_diffusion("someone/some-model")
    plain = models_module.load_stable_diffusion(str(tiny_sd_path))
    for name, tensor in plain.unet.state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[name], tensor), name
    for name, tensor in plain.text_encoder.state_dict().items():
        assert torch.equal(loaded.text_encoder.state_dict()[name], tensor), name


@pytest.mark.parametrize("model", ["someone/my model", "someone/--model"])
def test_offline_an_id_the_cache_has_no_repo_of_is_not_in_the_cache(tmp_path, monkeypatch, model):
    """A typo'd id (or a folder name with a space that does not exist) fails without a
    LocalEntryNotFoundError in its chain: it is not in the cache, not a damaged cached model."""

    _offline_with_cache(monkeypatch, tmp_path / "hub")
    with pytest.raises(DreamtextError) as refusal:
        models_module.load_stable_diffusion(model)
    message = str(refusal.value)
    assert "(HF_HUB_OFFLINE is set and it is not in the Hugging Face cache)" in message
    assert "damaged" not in message


def test_the_clip_encoder_is_on_the_device_for_the_block_and_on_the_cpu_after(monkeypatch):
    """The sentence search runs on the run's device; between image runs CLIP waits on the CPU so
    that it holds no GPU memory while Stable Diffusion trains."""
    from dreamtext import describe

    moves = []

    class FakeModel:
        def to(self, device):
            moves.append(str(device))
            return self

    class FakeClip:
        def __init__(self, model, device, batch_size):
            self.model, self.batch_size, self.device = FakeModel(), batch_size, device

    freed = []
    monkeypatch.setattr(describe, "ClipEncoder", FakeClip)
    monkeypatch.setattr(models_module, "_CLIP", {})
    monkeypatch.setattr(models_module, "free_memory", freed.append)
    with models_module.clip_encoder("clip", "cuda:0") as encoder:
        assert (encoder.device, moves) == (torch.device("cuda:0"), ["cuda:0"])
    assert (encoder.device, moves) == (torch.device("cpu"), ["cuda:0", "cpu"])
    assert freed == [torch.device("cuda:0")]


def test_a_unet_config_naming_a_block_diffusers_lacks_is_one_line_naming_the_unet(
    tiny_sd_path, tmp_path
):
    """diffusers refuses an unknown block type with a ValueError ("... does not exist."): a
    damaged folder, to be named in one line like any other, not a traceback."""
    import json

    import tiny_models

    folder = tiny_models.pipeline_variant(tiny_sd_path, tmp_path / "odd")
    config_path = folder / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.unlink()
    blocks = len(config["down_block_types"])
    config_path.write_text(json.dumps({**config, "down_block_types": ["NoSuchBlock2D"] * blocks}))
    with pytest.raises(DreamtextError) as refusal:
        models_module.load_stable_diffusion(str(folder))
    assert str(refusal.value).startswith("could not load the unet of")


def test_load_for_takes_the_precision_it_is_given_over_the_configs(tiny_sd_path):
    """``dtype`` given: the config's precision flags (float32 on the CPU) are not read, so a
    half-precision ``dtype`` on the CPU is refused as such."""
    config = GuidanceConfig(model=str(tiny_sd_path))
    with pytest.raises(DreamtextError, match=r"torch\.float16 needs a CUDA GPU"):
        models_module.load_for(config, "cpu", torch.float16)


def test_the_encoder_is_compiled_on_cuda_only_and_in_the_mode_asked(tiny_sd_path, monkeypatch):
    import copy

    calls = []
    monkeypatch.setattr(torch, "compile", lambda part, **kw: calls.append(kw) or "compiled")
    loaded = models_module.load_stable_diffusion(str(tiny_sd_path))
    assert loaded.sds_encoder(compile=True) == loaded.encode_images  # the CPU: eager
    assert calls == []
    on_cuda = copy.copy(loaded)
    on_cuda.device, on_cuda._compiled = torch.device("cuda"), {}  # the decision only
    assert on_cuda.sds_unet(compile=True, mode="max-autotune") == "compiled"
    assert calls[-1]["mode"] == "max-autotune"


def with_weights(tiny_sd_path: Path, dest: Path, subfolder: str, edit) -> Path:
    """A copy of the tiny pipeline (links) whose ``subfolder`` weights file holds
    ``edit(its bytes)``."""
    from tiny_models import pipeline_variant

    folder = pipeline_variant(tiny_sd_path, dest)
    weights = next((folder / subfolder).glob("*.safetensors"))
    data = weights.read_bytes()
    weights.unlink()
    weights.write_bytes(edit(data))
    return folder


def tensors_edit(edit):
    """An edit of a safetensors file's bytes by ``edit`` of its ``{name: tensor}``."""
    from safetensors.torch import load, save

    return lambda data: save(edit(load(data)), metadata={"format": "pt"})


def _drop(name: str):
    return tensors_edit(lambda tensors: {k: v for k, v in tensors.items() if not k.endswith(name)})


def _cut_rows(name: str):
    return tensors_edit(
        lambda tensors: {k: (v[:16] if k.endswith(name) else v) for k, v in tensors.items()}
    )


@pytest.mark.parametrize(
    ("subfolder", "edit", "problem"),
    [
        ("unet", lambda data: data[:-1000], "is cut short: "),
        ("unet", lambda data: data + bytes(100), "is longer than its tensors: "),
        ("unet", lambda data: data[:500], "is cut short inside its header: 500 bytes"),
        # These three ended the load in a traceback (a meta tensor copied; a size mismatch
        # raised as RuntimeError; safetensors' own error) ...
        ("unet", _drop("conv_in.weight"), "lacks the tensor conv_in.weight"),
        ("text_encoder", lambda data: data[:-10], "is cut short: "),
        (
            "text_encoder",
            _cut_rows("layers.0.self_attn.q_proj.weight"),
            "holds encoder.layers.0.self_attn.q_proj.weight of shape [16, 32] where the "
            "config.json beside it makes it [32, 32]",
        ),
        # ... and this one loaded, the missing tensor left at random values.
        (
            "text_encoder",
            _drop("layers.0.self_attn.q_proj.weight"),
            "lacks the tensor encoder.layers.0.self_attn.q_proj.weight",
        ),
    ],
)
def test_a_damaged_weight_file_is_one_line_naming_it_before_any_weight_is_read(
    tiny_sd_path, tmp_path, count_loads, subfolder, edit, problem
):
    """Its header against its length and its part's config: no tensor is read."""
    folder = with_weights(tiny_sd_path, tmp_path / "damaged", subfolder, edit)
    weights = next((folder / subfolder).glob("*.safetensors"))
    with pytest.raises(DreamtextError) as refusal:
        models_module.load_stable_diffusion(str(folder))
    message = str(refusal.value)
    assert message.startswith(f"could not load the {subfolder} of '{folder}' ({weights} {problem}")
    assert message.endswith(
        "); the folder's files are damaged or incomplete: copy or download the model again"
    )
    assert "\n" not in message
    assert count_loads == []


def test_weights_under_the_names_older_libraries_wrote_pass_the_check(tiny_sd_path, tmp_path):
    """A VAE's attention as query/key/value/proj_attn (diffusers renames them on load) and a
    text encoder's tensors under "text_model." (transformers 4's names, SD's own files; 5
    strips it on load) are no damage: both load."""
    import shutil

    from safetensors.torch import load_file

    from dreamtext.models import check_model_weights

    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}

    def old_attention(tensors):
        renamed = {}
        for name, tensor in tensors.items():
            for new, before in old.items():
                name = name.replace(f".attentions.0.{new}.", f".attentions.0.{before}.")
            renamed[name] = tensor
        return renamed

    folder = with_weights(tiny_sd_path, tmp_path / "old", "vae", tensors_edit(old_attention))
    with_prefix = tensors_edit(lambda tensors: {f"text_model.{k}": v for k, v in tensors.items()})
    with_weights(tiny_sd_path, tmp_path / "old_text", "text_encoder", with_prefix)
    shutil.rmtree(folder / "text_encoder")
    shutil.copytree(tmp_path / "old_text" / "text_encoder", folder / "text_encoder", symlinks=True)
    check_model_weights(str(folder))
    loaded = models_module.load_stable_diffusion(str(folder))
    original = load_file(tiny_sd_path / "text_encoder" / "model.safetensors")
    for name, tensor in original.items():
        assert torch.equal(loaded.text_encoder.state_dict()[name], tensor), name


def test_sd21_base_as_the_hub_holds_its_weights_passes_the_check(tmp_path):
    """The default model's own files pass: SD 2.1-base's three safetensors files as the hub
    holds them (tests/sd21_base_weights.json: every tensor's name, dtype and shape, saved by
    diffusers 0.10 and transformers 4.25, its VAE attention as query/key/value/proj_attn, its
    text encoder under "text_model." with an int64 position_ids), written with their data a
    sparse hole and each exactly as long as the hub's file. A refusal here refuses every user's
    default model; the check is no formality on them: one tensor gone is named."""
    from sd21_layout import read_layout, write_model

    from dreamtext.models import check_model_weights

    layout = read_layout()
    folder = tmp_path / "sd21-base"
    lengths = write_model(folder, layout)
    assert lengths == {name: file["hub_length"] for name, file in layout["files"].items()}
    unet = folder / "unet" / "diffusion_pytorch_model.safetensors"
    if unet.stat().st_blocks * 512 > 2**24:
        pytest.skip("this file system has no sparse files (3.5 GB a U-Net file)")
    check_model_weights(str(folder))

    text_encoder = layout["files"]["text_encoder/model.safetensors"]["shapes"]
    del text_encoder["text_model.final_layer_norm.bias"]
    write_model(folder, layout)
    weights = folder / "text_encoder" / "model.safetensors"
    with pytest.raises(DreamtextError, match=f"{weights} lacks the tensor final_layer_norm.bias"):
        check_model_weights(str(folder))


def test_a_sharded_part_is_checked_shard_by_shard(tiny_sd_path, tmp_path):
    """Weights in shards (``save_pretrained(max_shard_size=...)``: an index and its files) pass
    whole, and one shard cut short or gone is named."""
    import shutil

    from diffusers import UNet2DConditionModel

    from dreamtext.models import check_model_weights

    folder = tmp_path / "sharded"
    shutil.copytree(tiny_sd_path, folder)
    shutil.rmtree(folder / "unet")
    unet = UNet2DConditionModel.from_pretrained(tiny_sd_path / "unet")
    unet.save_pretrained(folder / "unet", max_shard_size="2MB")
    shards = sorted((folder / "unet").glob("*-of-*.safetensors"))
    assert len(shards) == 3
    check_model_weights(str(folder))
    shards[1].write_bytes(shards[1].read_bytes()[:-8])
    with pytest.raises(DreamtextError, match=f"{shards[1]} is cut short: "):
        check_model_weights(str(folder))
    shards[1].unlink()
    with pytest.raises(DreamtextError, match=rf"{shards[1]} is missing \(its index lists it\)"):
        check_model_weights(str(folder))
