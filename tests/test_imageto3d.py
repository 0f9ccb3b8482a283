"""Image→3D: describe → descriptor → text→3D → export, stages skipped when done; --diverse."""

import json
import re
import shlex
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from named_fixes import named_fixes_exist
from PIL import Image
from step_faults import weights_overflow_in_step
from tiny_models import TINY_TRAIN

import dreamtext.imageto3d as imageto3d
from dreamtext.checkpoint import load_checkpoint
from dreamtext.config import resolve_config
from dreamtext.describe import DescribeOptions, describe
from dreamtext.descriptor import DESCRIPTOR_TOKEN, DescriptorOptions
from dreamtext.errors import DreamtextError
from dreamtext.guidance import GuidanceConfig
from dreamtext.imageto3d import ImageOptions, run_diverse, run_image, sample_image
from dreamtext.inputs import config_file_stage_sections
from dreamtext.interrupts import TrainingInterrupted


def _config(tmp_path, model, **overrides):
    merged = {
        **TINY_TRAIN,
        "iters": 2,
        "preview_every": 0,
        "prompt": "replaced by the trained sentence",
        "workspace": str(tmp_path / "run"),
        "guidance": {"model": str(model), "guidance_scale": 10.0},
        **overrides,
    }
    return resolve_config(merged)


def _options(tmp_path, clip_path) -> ImageOptions:
    nouns, adjectives = tmp_path / "nouns.txt", tmp_path / "adjectives.txt"
    nouns.write_text("cube\nsphere\nchair\n")
    adjectives.write_text("red\nblue\nshiny\n")
    return ImageOptions(
        describe=DescribeOptions(
            clip=str(clip_path), nouns=nouns, adjectives=adjectives, max_words=2
        ),
        descriptor=DescriptorOptions(iters=2, checkpoint_every=0, preview_every=0),
    )


def _image(tmp_path) -> Image.Image:
    rgba = np.zeros((48, 48, 4), dtype=np.uint8)
    rgba[12:36, 12:36] = (220, 30, 30, 255)  # a red square on a transparent background
    path = tmp_path / "red_cube.png"
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def test_run_image_chains_every_stage_on_one_load_of_the_model(
    tmp_path, tiny_clip_path, tiny_sd_path, count_loads
):
    image = _image(tmp_path)
    workspace = run_image(
        image, _options(tmp_path, tiny_clip_path), _config(tmp_path, tiny_sd_path)
    )

    record = json.loads((workspace / "descriptor" / "sentence.json").read_text())
    assert record["sentence"].startswith(f"An image of {record['quantifier']} ")
    assert record["trained_sentence"] == (
        f"An image of {record['quantifier']} {DESCRIPTOR_TOKEN} {record['noun']}"
    )
    learned = workspace / "descriptor" / "learned_embeds.safetensors"
    assert learned.is_file()
    assert (workspace / "descriptor" / "source.png").read_bytes() == image.read_bytes()
    config = json.loads((workspace / "config.json").read_text())
    assert config["prompt"] == record["trained_sentence"]
    assert config["guidance"]["textual_inversion"] == str(learned)
    assert load_checkpoint(workspace / "checkpoints" / "last.pt")["step"] == 2
    # descriptor training and text→3D took their parts from one load
    assert sorted(count_loads) == ["text_encoder", "tokenizer", "unet", "vae"]


def test_run_image_releases_its_clip_once_the_sentence_is_found(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch
):
    """The CLIP serves the sentence search alone: it was kept (ViT-B/32: 0.6 GB) while the
    descriptor and text→3D trained, and after the run. Now it is freed before the descriptor
    trains; Stable Diffusion, which the stages after it use, stays loaded."""
    import gc
    import weakref

    import dreamtext.describe
    import dreamtext.models as models

    models.clear_cache()
    clips: list[weakref.ref] = []

    class TrackedClip(dreamtext.describe.ClipEncoder):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            clips.append(weakref.ref(self))

    monkeypatch.setattr(dreamtext.describe, "ClipEncoder", TrackedClip)
    alive: list[tuple[bool, int]] = []
    real = imageto3d.train_descriptor

    def train_descriptor(*args, **kwargs):
        gc.collect()
        alive.append((clips[0]() is not None, len(models._LOADED)))
        return real(*args, **kwargs)

    monkeypatch.setattr(imageto3d, "train_descriptor", train_descriptor)
    run_image(_image(tmp_path), _options(tmp_path, tiny_clip_path), _config(tmp_path, tiny_sd_path))
    assert len(clips) == 1
    assert alive == [(False, 1)]


@pytest.mark.parametrize(
    ("name", "format", "copy"),
    [
        ("photo", "PNG", "source.png"),  # no suffix
        ("photo.jfif", "JPEG", "source.jpg"),
        ("photo.JPEG", "JPEG", "source.jpg"),
        ("photo.png", "WEBP", "source.webp"),  # a misnamed file: its bytes decide
    ],
)
def test_the_source_copy_is_named_by_the_image_format(tmp_path, name, format, copy):
    image = tmp_path / name
    Image.new("RGB", (8, 8), (200, 30, 30)).save(image, format=format)
    target = imageto3d.keep_source_copy(image, tmp_path / "run")
    assert target == tmp_path / "run" / "descriptor" / copy
    assert target.read_bytes() == image.read_bytes()
    assert [p.name for p in target.parent.iterdir()] == [copy]


def test_every_supported_image_format_has_a_source_copy_name():
    from dreamtext.describe import SOURCE_SUFFIXES
    from dreamtext.images import SUPPORTED_FORMATS

    assert set(SOURCE_SUFFIXES) == set(SUPPORTED_FORMATS)


def _fail(*args, **kwargs):
    raise AssertionError("a finished stage ran again")


def _finished_workspace(tmp_path, iters, status=True):
    """A workspace whose describe and descriptor stages are done and text→3D reached ``iters``
    (and says so in status.json unless ``status`` is off)."""
    workspace = tmp_path / "run"
    (workspace / "descriptor").mkdir(parents=True)
    image = _image(tmp_path)
    record = {"image": str(image), "quantifier": "a", "noun": "cube", "words": ["red"]}
    record["trained_sentence"] = f"An image of a {DESCRIPTOR_TOKEN} cube"
    (workspace / "descriptor" / "sentence.json").write_text(json.dumps(record))
    (workspace / "descriptor" / "learned_embeds.safetensors").write_bytes(b"")
    (workspace / "checkpoints").mkdir()
    import torch

    from dreamtext.checkpoint import RUN_KEYS, with_digest

    whole = with_digest({**{key: {} for key in RUN_KEYS}, "step": iters})
    torch.save(whole, workspace / "checkpoints" / "last.pt")
    learned = str(workspace / "descriptor" / "learned_embeds.safetensors")
    saved = {"iters": iters, "guidance": {"textual_inversion": learned}}
    (workspace / "config.json").write_text(json.dumps(saved))
    if status:
        finished = {"state": "finished", "step": iters, "iters": iters}
        (workspace / "status.json").write_text(json.dumps(finished))
    return image, workspace


def test_finished_stages_are_skipped(tmp_path, tiny_sd_path, monkeypatch):
    image, workspace = _finished_workspace(tmp_path, iters=2)
    monkeypatch.setattr(imageto3d, "describe", _fail)
    monkeypatch.setattr(imageto3d, "train_descriptor", _fail)
    monkeypatch.setattr("dreamtext.trainer.train", _fail)
    assert run_image(image, None, _config(tmp_path, tiny_sd_path)) == workspace


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_a_finished_run_whose_last_checkpoint_is_damaged_goes_on_from_its_step_file(
    tmp_path, tiny_sd_path, monkeypatch, damage
):
    """The export of such a run says the same `dreamtext image` command goes on from its newest
    whole step file; that command said "text→3D: reusing …/last.pt" (the damaged file) and did
    nothing, and the export failed again."""
    image, workspace = _finished_workspace(tmp_path, iters=2)
    last = workspace / "checkpoints" / "last.pt"
    shutil.copy(last, workspace / "checkpoints" / "step_000002.pt")
    if damage == "missing":
        last.unlink()
    else:
        last.write_bytes(last.read_bytes()[:100])
    calls = []
    monkeypatch.setattr(imageto3d, "describe", _fail)
    monkeypatch.setattr(imageto3d, "train_descriptor", _fail)
    monkeypatch.setattr(
        "dreamtext.trainer.train",
        lambda cfg, resume, resume_with, start_again, resume_changed: calls.append(resume),
    )
    run_image(image, None, _config(tmp_path, tiny_sd_path))
    assert calls == [True]


def test_a_finished_run_whose_checkpoints_were_deleted_is_still_reused(
    tmp_path, tiny_sd_path, monkeypatch
):
    """No checkpoint to go on from (deleted to save space): nothing to resume; the run stays
    as it is."""
    image, workspace = _finished_workspace(tmp_path, iters=2)
    shutil.rmtree(workspace / "checkpoints")
    monkeypatch.setattr("dreamtext.trainer.train", _fail)
    assert run_image(image, None, _config(tmp_path, tiny_sd_path)) == workspace


def test_a_run_from_before_status_json_with_its_mesh_is_skipped(
    tmp_path, tiny_sd_path, monkeypatch
):
    image, workspace = _finished_workspace(tmp_path, iters=2, status=False)
    (workspace / "mesh").mkdir()
    (workspace / "mesh" / "mesh.glb").write_bytes(b"glTF")
    monkeypatch.setattr("dreamtext.trainer.train", _fail)
    assert run_image(image, None, _config(tmp_path, tiny_sd_path, export=True)) == workspace


def test_unfinished_text_stage_resumes_and_the_trainer_exports(tmp_path, tiny_sd_path, monkeypatch):
    image, _ = _finished_workspace(tmp_path, iters=2)
    calls = []
    monkeypatch.setattr(imageto3d, "describe", _fail)
    monkeypatch.setattr(imageto3d, "train_descriptor", _fail)
    monkeypatch.setattr(
        "dreamtext.trainer.train",
        lambda cfg, resume, resume_with, **_: calls.append((resume_with, cfg, resume)),
    )
    monkeypatch.setattr("dreamtext.export.export_workspace", _fail)
    run_image(image, None, _config(tmp_path, tiny_sd_path, iters=5, export=True))
    [(resume_with, cfg, resume)] = calls
    assert resume and cfg.iters == 5 and cfg.export
    # Its lines that stop it (out of memory, diverged) name no --resume, which image lacks.
    assert resume_with == imageto3d.IMAGE_RESUME
    assert cfg.prompt == f"An image of a {DESCRIPTOR_TOKEN} cube"


def test_the_trainers_export_of_an_image_run_is_titled_by_the_image(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch
):
    """Named after the trained sentence, the run's files held its placeholder token."""
    exports = []

    def fake_export(field, out_dir, options, **kwargs):
        exports.append(kwargs)
        return SimpleNamespace(summary=lambda: "exported")

    monkeypatch.setattr("dreamtext.trainer.export_field", fake_export)
    image = _image(tmp_path)
    run_image(
        image, _options(tmp_path, tiny_clip_path), _config(tmp_path, tiny_sd_path, export=True)
    )
    record = json.loads((tmp_path / "run" / "descriptor" / "sentence.json").read_text())
    [kwargs] = exports
    assert kwargs["title"] == "red_cube"  # red_cube.png
    assert kwargs["prompt"] == record["trained_sentence"]


def test_an_export_interrupted_after_training_is_redone_under_status_json(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch
):
    from dreamtext.batch import is_finished

    def fake_export(run_or_workspace, *args, **kwargs):
        workspace = getattr(run_or_workspace, "workspace", run_or_workspace)
        (workspace / "mesh").mkdir(exist_ok=True)
        (workspace / "mesh" / "mesh.glb").write_bytes(b"glTF")

    def ctrl_c(run):
        raise KeyboardInterrupt

    image, options = _image(tmp_path), _options(tmp_path, tiny_clip_path)
    cfg = _config(tmp_path, tiny_sd_path, export=True)
    monkeypatch.setattr("dreamtext.trainer.export_trained", ctrl_c)
    with pytest.raises(TrainingInterrupted, match="in the export"):
        run_image(image, options, cfg)
    status_path = tmp_path / "run" / "status.json"
    assert json.loads(status_path.read_text())["state"] == "interrupted"
    assert not is_finished(cfg)

    monkeypatch.setattr("dreamtext.trainer.export_trained", fake_export)
    monkeypatch.setattr("dreamtext.export.export_workspace", fake_export)
    workspace = run_image(image, options, cfg)
    done = json.loads(status_path.read_text())
    assert (done["state"], done["step"], done["phase"]) == ("finished", 2, "export")
    assert (workspace / "mesh" / "mesh.glb").is_file()
    assert is_finished(cfg)


def test_workspace_of_another_image_is_refused(tmp_path, tiny_sd_path):
    _finished_workspace(tmp_path, iters=2)
    other = tmp_path / "other.png"
    Image.new("RGB", (8, 8)).save(other)
    with pytest.raises(DreamtextError, match="--workspace"):
        run_image(other, None, _config(tmp_path, tiny_sd_path))


def test_bad_image_fails_before_any_model_loads(tmp_path, tiny_sd_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DreamtextError, match="not an image"):
        run_image(broken, None, _config(tmp_path, tiny_sd_path))
    assert not (tmp_path / "run").exists()


def test_an_image_run_holds_its_workspace_from_its_checks_on(tmp_path, tiny_sd_path, holder):
    """A second `image` on the same workspace, started before the first writes status.json
    (while it loads CLIP), is refused: both would have trained the same descriptor."""
    other = holder(tmp_path / "run")
    with pytest.raises(DreamtextError, match=f"in use: process {other.pid}"):
        run_image(_image(tmp_path), None, _config(tmp_path, tiny_sd_path))
    with pytest.raises(DreamtextError, match=f"in use: process {other.pid}"):
        run_diverse(_config(tmp_path, tiny_sd_path, prompt="a red cube"), None, named=True)


def test_builtin_prior_cannot_reconstruct_images(tmp_path, tiny_sd_path):
    cfg = _config(tmp_path, tiny_sd_path)
    cfg.guidance.model = "builtin:shapes"
    with pytest.raises(DreamtextError, match="Stable Diffusion"):
        run_image(_image(tmp_path), None, cfg)


def test_sampled_images_depend_on_the_seed(tmp_path, tiny_sd_path):
    def sample(seed, name):
        guidance = GuidanceConfig(model=str(tiny_sd_path))
        path = sample_image("a red cube", guidance, seed, tmp_path / name, steps=2)
        with Image.open(path) as image:
            return np.asarray(image)

    first, again, other = sample(1, "a.png"), sample(1, "b.png"), sample(2, "c.png")
    assert first.shape == (64, 64, 3)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_the_text_stage_keeps_its_checkpoint_of_finite_weights(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch
):
    """The text→3D stage's weights overflowed in step 3 of 4: it ended "trained" with last.pt of
    step 4, whose field renders NaN, over step 2's. Not saved: the line names step 2's and the
    rerun of the image command (which has no --resume) with a smaller --lr."""
    weights_overflow_in_step(monkeypatch, 3)
    cfg = _config(tmp_path, tiny_sd_path, iters=4)
    with pytest.raises(DreamtextError) as error:
        run_image(_image(tmp_path), _options(tmp_path, tiny_clip_path), cfg)
    message = str(error.value)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    assert f"{last} stays the checkpoint of step 2" in message, message
    assert f"{imageto3d.IMAGE_RESUME} and a smaller --lr" in message, message
    assert "--resume" not in message, message
    assert load_checkpoint(last)["step"] == 2


def test_a_descriptor_that_diverges_stops_the_image_run_before_text_to_3d(
    tmp_path, tiny_clip_path, tiny_sd_path
):
    """At image_to_3d.descriptor.lr 1e37 the descriptor's vectors overflow in step 1; checked
    only at its saves it trained on with NaN losses to step 500 (here: all 30 asked for). It
    stops in step 1 with the line naming a smaller descriptor lr, and no text→3D stage starts:
    no trained sentence, no embedding, no text→3D checkpoint. The line names the command the
    caller gives for a changed setting (``resume_changed``: a batch line's own `dreamtext image
    IMAGE --workspace W`; it said "run it again", the batch, whose --config reaches every image
    line it resumes)."""
    options = _options(tmp_path, tiny_clip_path)
    options.descriptor = replace(options.descriptor, iters=30, lr=1e37)
    own = "`dreamtext image mug.png --workspace root/mug`"
    with pytest.raises(DreamtextError) as error:
        run_image(_image(tmp_path), options, _config(tmp_path, tiny_sd_path), resume_changed=own)
    message = str(error.value)
    assert "reached a value of 1e+37 in step 1" in message, message
    assert f"; run {own} with a smaller image_to_3d.descriptor.lr in a --config" in message, message
    workspace = tmp_path / "run"
    status = json.loads((workspace / "status.json").read_text())
    assert (status["state"], status["phase"], status["step"]) == ("failed", "descriptor", 1)
    record = json.loads((workspace / "descriptor" / "sentence.json").read_text())
    assert "trained_sentence" not in record
    assert not (workspace / "descriptor" / "learned_embeds.safetensors").exists()
    assert not (workspace / "checkpoints").exists()


def test_the_lines_that_stop_a_diverse_run_name_its_own_command(
    tmp_path, tiny_sd_path, tiny_clip_path, monkeypatch
):
    """``text --diverse`` runs image→3D, whose lines (diverged, out of memory, weights not
    saved) said to run "the same `dreamtext image` command again", a command the user never
    typed."""
    seen = {}

    def fake_run_image(image_path, options, cfg, overwrite, sections, note, resume_with):
        seen["resume_with"] = resume_with
        return cfg.workspace

    monkeypatch.setattr(imageto3d, "run_image", fake_run_image)
    monkeypatch.chdir(tmp_path)
    cfg = resolve_config({"prompt": "a red cube", "guidance": {"model": str(tiny_sd_path)}})
    options = ImageOptions(describe=DescribeOptions(clip=str(tiny_clip_path)), sample_steps=2)
    run_diverse(cfg, options)
    assert "dreamtext text --diverse" in seen["resume_with"], seen


def test_diverse_runs_image_to_3d_on_a_sample_in_a_per_seed_workspace(
    tmp_path, tiny_sd_path, tiny_clip_path, monkeypatch
):
    seen = {}

    def fake_run_image(image_path, options, cfg, *more):
        seen.update(image=image_path, workspace=cfg.workspace)
        return cfg.workspace

    monkeypatch.setattr(imageto3d, "run_image", fake_run_image)
    monkeypatch.chdir(tmp_path)
    cfg = resolve_config(
        {"prompt": "a red cube", "seed": 3, "guidance": {"model": str(tiny_sd_path)}}
    )
    options = ImageOptions(describe=DescribeOptions(clip=str(tiny_clip_path)), sample_steps=2)
    workspace = run_diverse(cfg, options)
    assert workspace == "workspace/a_red_cube_diverse_seed3"
    assert seen["image"].is_file()
    assert seen["image"].parent.parent.as_posix() == workspace


def test_a_record_without_its_trained_sentence_trains_the_descriptor_again(
    tmp_path, tiny_sd_path, monkeypatch
):
    image, workspace = _finished_workspace(tmp_path, iters=2)
    record_path = workspace / "descriptor" / "sentence.json"
    record = json.loads(record_path.read_text())
    del record["trained_sentence"]  # as `dreamtext describe` used to leave it
    record_path.write_text(json.dumps(record))
    calls = []

    def fake_train_descriptor(image_path, workspace, guidance, options, device, rerun):
        calls.append(options.iters)
        trained = {**record, "trained_sentence": f"An image of a {DESCRIPTOR_TOKEN} cube"}
        record_path.write_text(json.dumps(trained))

    monkeypatch.setattr(imageto3d, "train_descriptor", fake_train_descriptor)
    monkeypatch.setattr("dreamtext.trainer.train", _fail)
    assert run_image(image, None, _config(tmp_path, tiny_sd_path)) == workspace
    assert len(calls) == 1


def test_the_workspace_of_a_text_run_is_refused_before_anything_is_written(
    tmp_path, tiny_sd_path, monkeypatch
):
    workspace = tmp_path / "run"
    workspace.mkdir()
    (workspace / "config.json").write_text(json.dumps({"prompt": "a red cube", "guidance": {}}))
    monkeypatch.setattr(imageto3d, "describe", _fail)
    with pytest.raises(DreamtextError, match=r"holds a text→3D run of 'a red cube'.*--workspace"):
        run_image(_image(tmp_path), None, _config(tmp_path, tiny_sd_path))
    assert [p.name for p in workspace.iterdir()] == ["config.json"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"field": {**TINY_TRAIN["field"], "encoding": "tcnn"}}, "tcnn encoding"),
        ({"guidance": {"fp16": True}}, "--fp16 needs a CUDA GPU"),
        ({"guidance": {"model": "/no/such/sd"}}, "does not exist"),
        ({"guidance": {"model": "NOT_AN_SD"}}, "not a diffusers"),
        # Memory the training renders or the export after them cannot have, which text refuses
        # at once: image refused it after the search and the descriptor (2 h on the thesis's GPU).
        ({"h": 100_000, "w": 100_000}, "--h 100000 --w 100000 with batch 1: its rays"),
        ({"export": True, "export_options": {"resolution": 2048}}, "the export after training"),
    ],
)
def test_text_stage_options_are_checked_before_the_sentence_search(
    tmp_path, tiny_sd_path, tiny_clip_path, monkeypatch, overrides, message
):
    (tmp_path / "NOT_AN_SD").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("dreamtext.export.available_memory", lambda: 4 * 2**30)
    guidance = {"model": str(tiny_sd_path), **overrides.pop("guidance", {})}
    cfg = _config(tmp_path, tiny_sd_path, guidance=guidance, **overrides)
    monkeypatch.setattr(imageto3d, "describe", _fail)
    with pytest.raises(DreamtextError, match=message):
        run_image(_image(tmp_path), _options(tmp_path, tiny_clip_path), cfg)
    assert not (tmp_path / "run").exists()


def test_an_ffmpeg_that_cannot_start_is_refused_before_the_sentence_search(
    tmp_path, tiny_sd_path, tiny_clip_path, monkeypatch
):
    """The turntable's ffmpeg was first asked for at the end of the text stage's export, after
    the search, the descriptor's training and the text→3D training."""
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(tmp_path / "no-ffmpeg"))
    monkeypatch.chdir(tmp_path)
    cfg = _config(tmp_path, tiny_sd_path, export=True)
    monkeypatch.setattr(imageto3d, "describe", _fail)
    with pytest.raises(DreamtextError, match=r"could not start .*export_options\.video: false"):
        run_image(_image(tmp_path), _options(tmp_path, tiny_clip_path), cfg)
    assert not (tmp_path / "run").exists()


def test_a_folder_named_as_an_export_file_is_refused_before_the_sentence_search(
    tmp_path, tiny_sd_path, tiny_clip_path, monkeypatch
):
    """A folder mesh/mesh.json in the workspace (a user's notes) was refused by the text stage
    (as a run's file, which a new run removes) after the search and the descriptor's training,
    and on a resume by the export, after the text→3D training too."""
    monkeypatch.chdir(tmp_path)
    notes = tmp_path / "run" / "mesh" / "mesh.json"
    notes.mkdir(parents=True)
    cfg = _config(tmp_path, tiny_sd_path, export=True)
    cfg.export_options.video = False
    monkeypatch.setattr(imageto3d, "describe", _fail)
    with pytest.raises(DreamtextError, match=r"mesh\.json is a folder, not a file of an export"):
        run_image(_image(tmp_path), _options(tmp_path, tiny_clip_path), cfg)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["mesh"]


@pytest.mark.parametrize("name", ["sentence.json", "learned_embeds.safetensors"])
def test_a_folder_in_place_of_a_descriptor_file_is_refused_before_the_sentence_search(
    tmp_path, tiny_sd_path, tiny_clip_path, monkeypatch, name
):
    """A folder descriptor/sentence.json or descriptor/learned_embeds.safetensors was an
    IsADirectoryError traceback where the search or the descriptor's training wrote it."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "run" / "descriptor" / name
    folder.mkdir(parents=True)
    monkeypatch.setattr(imageto3d, "describe", _fail)
    with pytest.raises(DreamtextError) as error:
        run_image(
            _image(tmp_path), _options(tmp_path, tiny_clip_path), _config(tmp_path, tiny_sd_path)
        )
    assert str(error.value) == (
        f"{folder} is a folder, not a run's file; move it out of {folder.parent} and run the "
        "command again"
    )


@pytest.mark.parametrize("token", ["cube", "Cube"])
def test_a_descriptor_token_that_is_a_word_is_refused_before_the_sentence_search(
    tmp_path, tiny_sd_path, tiny_clip_path, monkeypatch, token
):
    """`image_to_3d.descriptor.token: cube` (a word of the tokenizer) was refused only when the
    descriptor's training began, after the sentence search (minutes with a real CLIP), and left
    status.json failed in phase describe. `Cube` passed, the descriptor trained, and text→3D
    refused it ("token 'Cube' is already in the tokenizer"): the tokenizer lowercases a prompt,
    so the added token took the place of the word cube in any prompt."""
    monkeypatch.setattr(imageto3d, "describe", _fail)
    options = _options(tmp_path, tiny_clip_path)
    options.descriptor.token = token  # the tiny tokenizer holds cube</w>
    cfg = _config(tmp_path, tiny_sd_path)
    with pytest.raises(
        DreamtextError, match=rf"image_to_3d\.descriptor\.token '{token}' is already"
    ):
        run_image(_image(tmp_path), options, cfg)
    assert not (tmp_path / "run").exists()


def test_a_file_as_workspace_is_refused_before_the_search(tmp_path, tiny_sd_path, monkeypatch):
    (tmp_path / "afile").write_text("hi")
    monkeypatch.setattr(imageto3d, "describe", _fail)
    cfg = _config(tmp_path, tiny_sd_path, workspace=str(tmp_path / "afile"))
    with pytest.raises(DreamtextError, match="is a file"):
        run_image(_image(tmp_path), None, cfg)


def _cli_image(tmp_path, image, sd, clip, *flags):
    from dreamtext.cli import main

    nouns, adjectives = tmp_path / "nouns.txt", tmp_path / "adjectives.txt"
    common = ["--model", str(sd), "--clip", str(clip), "--nouns", str(nouns)]
    common += ["--adjectives", str(adjectives), "--max-words", "2", "--descriptor-iters", "2"]
    common += ["--workspace", str(tmp_path / "run"), "--h", "16", "--w", "16", "--no-export"]
    return main(["image", str(image), *common, *flags])


def _finished_tiny_run(tmp_path, tiny_sd_path, tiny_clip_path, capsys) -> Path:
    """A 2-step image run of the tiny field in ``tmp_path / "run"`` (its output read away), made
    with ``--config`` that a rerun leaves out; returns the image."""
    import yaml

    image = _image(tmp_path)
    _options(tmp_path, tiny_clip_path)  # writes the vocabulary files
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump({k: v for k, v in TINY_TRAIN.items() if k != "export"}))
    flags = ("--iters", "2", "--config", str(tiny))
    assert _cli_image(tmp_path, image, tiny_sd_path, tiny_clip_path, *flags) == 0
    capsys.readouterr()
    return image


def test_a_sigterm_once_the_image_run_is_recorded_finished_changes_nothing(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch, capsys
):
    """A stop once the text→3D stage has written its last file and status.json says finished:
    "dreamtext image: interrupted; run the same command again to go on", exit 130, of a run
    with nothing left to do. Now the command prints its workspace and exits 0."""
    import signal

    from dreamtext.runstatus import StatusTracker

    image = _image(tmp_path)
    _options(tmp_path, tiny_clip_path)  # writes the vocabulary files
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump({k: v for k, v in TINY_TRAIN.items() if k != "export"}))
    real, sent = StatusTracker.write, []

    def write(self, state, *args, **kwargs):
        real(self, state, *args, **kwargs)
        if state == "finished" and not sent:
            sent.append(state)
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(StatusTracker, "write", write)
    flags = ("--iters", "2", "--config", str(tiny))
    code = _cli_image(tmp_path, image, tiny_sd_path, tiny_clip_path, *flags)
    out, err = capsys.readouterr()
    assert sent == ["finished"]
    assert (code, out) == (0, f"{tmp_path / 'run'}\n"), err
    assert "interrupted" not in err
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert (status["state"], status["phase"], status["step"]) == ("finished", "train", 2)


def test_a_stop_in_a_rerun_of_a_finished_image_run_changes_nothing(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch, capsys
):
    """`dreamtext image` of a run whose every stage is done reuses them all and writes nothing:
    a SIGTERM while it said so exited 130 with "interrupted; run the same command again to go
    on", of a run with nothing to go on with. Now the workspace printed, exit 0, the run's
    status.json as it was."""
    import signal

    from dreamtext import imageto3d

    image = _finished_tiny_run(tmp_path, tiny_sd_path, tiny_clip_path, capsys)
    status = (tmp_path / "run" / "status.json").read_bytes()
    real, sent = imageto3d._note, []

    def note(line):
        real(line)
        if line.startswith("text→3D: reusing") and not sent:
            sent.append(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(imageto3d, "_note", note)
    code = _cli_image(tmp_path, image, tiny_sd_path, tiny_clip_path, "--iters", "2")
    out, err = capsys.readouterr()
    assert sent == [signal.SIGTERM]
    assert (code, out) == (0, f"{tmp_path / 'run'}\n"), err
    assert "interrupted" not in err
    assert (tmp_path / "run" / "status.json").read_bytes() == status


def _two_step_image_run(tmp_path, tiny_sd_path, tiny_clip_path, capsys):
    """``dreamtext image`` of a tiny image, 2 descriptor and 2 text→3D steps of the tests'
    tiny settings, exporting: ``(image, flags, exit code, stderr)``, the flags to run it again."""
    import yaml

    image = _image(tmp_path)
    _options(tmp_path, tiny_clip_path)  # writes the vocabulary files
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump({k: v for k, v in TINY_TRAIN.items() if k != "export"}))
    flags = ("--iters", "2", "--config", str(tiny), "--export")
    code = _cli_image(tmp_path, image, tiny_sd_path, tiny_clip_path, *flags)
    return image, flags, code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("stage", "bar", "said"),
    [
        ("descriptor", "descriptor", "descriptor training interrupted after step 2; saved {}"),
        ("trainer", "text→3D", "interrupted before the export, after step 2; saved {}"),
    ],
)
def test_a_stop_after_a_training_loops_last_look_stops_the_image_run_there(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch, capsys, stage, bar, said
):
    """A SIGTERM after the descriptor's or the text→3D loop's last look at its stop flag (as
    it closes its bar) stopped nothing: the run went on to text→3D (which trained one step and
    stopped there) or to its export. It stops where it landed, the step saved, and the same
    command goes on: the rerun trains nothing more of that stage and exports once."""
    import importlib
    import signal

    from dreamtext import trainer

    module = importlib.import_module(f"dreamtext.{stage}")
    sent, exports = [], []

    class BarClosedByAStop(module.tqdm):
        def close(self):
            if getattr(self, "desc", "").startswith(bar) and self.n == self.total and not sent:
                sent.append(self.n)
                signal.raise_signal(signal.SIGTERM)
            super().close()

    monkeypatch.setattr(module, "tqdm", BarClosedByAStop)
    monkeypatch.setattr(trainer, "export_trained", lambda run: exports.append(run.step))
    image, flags, code, err = _two_step_image_run(tmp_path, tiny_sd_path, tiny_clip_path, capsys)
    folder = tmp_path / "run" / ("descriptor" if stage == "descriptor" else "")
    checkpoint = folder / "checkpoints" / "last.pt"
    assert (code, sent, exports) == (130, [2], []), err
    assert err.strip().splitlines()[-1] == (
        f"dreamtext: {said.format(checkpoint)}; run the same command again to resume"
    )
    assert load_checkpoint(checkpoint)["step"] == 2
    text_stage = (tmp_path / "run" / "checkpoints").exists()
    assert text_stage == (stage == "trainer")  # no text→3D stage begun after the descriptor's
    assert _cli_image(tmp_path, image, tiny_sd_path, tiny_clip_path, *flags) == 0
    assert exports == [2]


def test_a_stop_during_the_descriptors_last_save_saves_it_and_stops_the_image_run_there(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch, capsys
):
    """A SIGTERM (and the srun's sent again) while the descriptor training saves its last step
    after its loop was raised into that save: the run stopped with no checkpoint of the
    descriptor, its steps since the last periodic one lost. It is noted as a stop in the loop
    is: the step saved, no text→3D stage begun, and the same command goes on from there."""
    import signal

    from dreamtext import descriptor, trainer

    sent, exports = [], []
    atomic_torch_save = descriptor._atomic_torch_save

    def save_stopped(state, path):
        if not sent:
            sent.append(state["step"])
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)  # the srun's, passing the stop on
        return atomic_torch_save(state, path)

    monkeypatch.setattr(descriptor, "_atomic_torch_save", save_stopped)
    monkeypatch.setattr(trainer, "export_trained", lambda run: exports.append(run.step))
    image, flags, code, err = _two_step_image_run(tmp_path, tiny_sd_path, tiny_clip_path, capsys)
    checkpoint = tmp_path / "run" / "descriptor" / "checkpoints" / "last.pt"
    assert (code, exports) == (130, []), err
    assert err.strip().splitlines()[-1] == (
        f"dreamtext: descriptor training interrupted after step {sent[0]}; saved {checkpoint}; "
        "run the same command again to resume"
    )
    assert load_checkpoint(checkpoint)["step"] == sent[0]
    assert not (tmp_path / "run" / "checkpoints").exists()  # no text→3D stage begun
    assert _cli_image(tmp_path, image, tiny_sd_path, tiny_clip_path, *flags) == 0
    assert exports == [2]


def test_a_rerun_resolves_over_the_runs_config_and_prints_only_the_workspace(
    tmp_path, tiny_clip_path, tiny_sd_path, capsys
):
    image = _finished_tiny_run(tmp_path, tiny_sd_path, tiny_clip_path, capsys)
    # the rerun leaves out --config: the run's config.json supplies the tiny field
    code = _cli_image(tmp_path, image, tiny_sd_path, tiny_clip_path, "--iters", "3")
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == f"{tmp_path / 'run'}\n"
    assert "describe: reusing" in err
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 3
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["field"]["num_levels"] == TINY_TRAIN["field"]["num_levels"]

    code = _cli_image(tmp_path, image, tiny_sd_path, tiny_clip_path, "--iters", "4", "--seed", "5")
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "seed 0 → 5" in err and "--workspace NEW_FOLDER" in err
    assert "--overwrite" not in err


def test_a_rerun_of_a_finished_run_names_the_settings_it_does_not_apply_and_records_none(
    tmp_path, tiny_clip_path, tiny_sd_path, capsys
):
    """`image IMG --lr 0.5` on a finished run trained nothing, said nothing of --lr and wrote
    lr 0.5 into config.json, which then no longer said how the run was trained."""
    image = _finished_tiny_run(tmp_path, tiny_sd_path, tiny_clip_path, capsys)
    config_path = tmp_path / "run" / "config.json"
    before = config_path.read_bytes()
    lr = json.loads(before)["lr"]

    code = _cli_image(tmp_path, image, tiny_sd_path, tiny_clip_path, "--lr", "0.5")
    out, err = capsys.readouterr()
    assert code == 0 and out == f"{tmp_path / 'run'}\n"
    assert "text→3D: reusing" in err
    assert f"other settings than these (lr {lr} → 0.5); they are not applied" in err
    assert "--overwrite" in err
    assert config_path.read_bytes() == before
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2

    assert _cli_image(tmp_path, image, tiny_sd_path, tiny_clip_path) == 0  # as it ran: no note
    assert "not applied" not in capsys.readouterr().err


def test_diverse_with_resume_says_diverse_runs_resume_by_the_same_command(
    tmp_path, tiny_sd_path, monkeypatch, capsys
):
    from dreamtext.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["text", "a red cube", "--diverse", "--resume", "--model", str(tiny_sd_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "run the same command again without --resume" in err
    assert not (tmp_path / "workspace").exists()


def test_flags_of_finished_stages_that_a_rerun_ignores_are_named(tmp_path):
    _, workspace = _finished_workspace(tmp_path, iters=2)
    record_path = workspace / "descriptor" / "sentence.json"
    record = json.loads(record_path.read_text())
    record.update(clip="openai/clip", max_words=2, descriptor_iters=2)
    record_path.write_text(json.dumps(record))
    given = {"noun": "dog", "quantifier": "a", "clip": None, "max_words": 2}
    assert imageto3d.ignored_flags(workspace, given) == ["--noun dog (the run's: cube)"]
    assert imageto3d.ignored_flags(tmp_path / "new", given) == []


def test_diverse_takes_the_sentence_search_flags_and_a_named_workspace(
    tmp_path, tiny_sd_path, tiny_clip_path, monkeypatch
):
    """`text --diverse` had no --clip (which its own error asked for) nor --descriptor-iters, and
    moved a --workspace equal to the default name to <name>_diverse_seed<N>."""
    from dreamtext.cli import main

    seen = {}

    def fake_run_image(image_path, options, cfg, *more):
        seen.update(workspace=cfg.workspace, clip=options.describe.clip)
        seen.update(iters=options.descriptor.iters, noun=options.describe.noun)
        return cfg.workspace

    monkeypatch.setattr(imageto3d, "run_image", fake_run_image)
    monkeypatch.setattr(imageto3d, "sample_image", lambda *a: a[3])
    monkeypatch.chdir(tmp_path)
    clip = str(tiny_clip_path)
    args = ["text", "a red cube", "--diverse", "--model", str(tiny_sd_path), "--clip", clip]
    named = ["--workspace", "workspace/a_red_cube", "--descriptor-iters", "7", "--noun", "cube"]
    assert main([*args, *named]) == 0
    assert seen == {
        "workspace": "workspace/a_red_cube",
        "clip": clip,
        "iters": 7,
        "noun": "cube",
    }
    assert main(args) == 0
    assert seen["workspace"] == "workspace/a_red_cube_diverse_seed0"


def test_sentence_search_flags_without_diverse_are_refused(tmp_path, monkeypatch, capsys):
    from dreamtext.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["text", "a red cube", "--clip", "my/clip", "--descriptor-iters", "3"]) == 2
    assert capsys.readouterr().err == (
        "dreamtext: error: --clip, --descriptor-iters: for --diverse's image only; add --diverse "
        "or drop them\n"
    )
    assert not (tmp_path / "workspace").exists()


def test_the_diverse_image_sampling_shows_a_progress_bar_on_stderr(tmp_path, tiny_sd_path, capsys):
    """50 denoising steps are minutes of a CPU's time; they ran in silence."""
    guidance = GuidanceConfig(model=str(tiny_sd_path))
    sample_image("a red cube", guidance, 0, tmp_path / "a.png", steps=3)
    out, err = capsys.readouterr()
    assert out == ""
    assert "diverse image" in err and "/3 [" in err


def test_the_describe_stage_says_in_status_json_where_it_stopped(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch
):
    """Ctrl-C during the CLIP search left no status.json: the viewer and a batch could not tell
    an image run stopped in describe from one that never started."""

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(imageto3d, "describe", ctrl_c)
    options, cfg = _options(tmp_path, tiny_clip_path), _config(tmp_path, tiny_sd_path)
    with pytest.raises(KeyboardInterrupt):
        run_image(_image(tmp_path), options, cfg)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert (status["state"], status["phase"]) == ("interrupted", "describe")


def test_a_ctrl_c_between_two_stages_leaves_the_run_interrupted(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch
):
    """Ctrl-C after the sentence search, before the descriptor's block started (its model
    loading), left status.json 'running' in phase describe with the process gone: the viewer
    read the run as killed without warning."""

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(imageto3d, "train_descriptor", ctrl_c)  # the second stage's start
    options, cfg = _options(tmp_path, tiny_clip_path), _config(tmp_path, tiny_sd_path)
    with pytest.raises(KeyboardInterrupt):
        run_image(_image(tmp_path), options, cfg)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert (status["state"], status["phase"]) == ("interrupted", "describe")
    assert (tmp_path / "run" / "descriptor" / "sentence.json").is_file()  # the rerun reuses it


def test_an_error_between_two_stages_leaves_the_run_failed(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch
):
    """An error before a stage's block started (text→3D's prompt too long for the text encoder,
    raised while its run was built) left status.json 'running' in the last stage's phase, with
    the process gone (exit 2): the viewer showed a live run, then a killed one, never the error."""

    def too_long(*args, **kwargs):
        raise DreamtextError("the prompt with its view label is 89 tokens")

    monkeypatch.setattr(imageto3d, "train_descriptor", too_long)  # the second stage's start
    options, cfg = _options(tmp_path, tiny_clip_path), _config(tmp_path, tiny_sd_path)
    with pytest.raises(DreamtextError):
        run_image(_image(tmp_path), options, cfg)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert (status["state"], status["phase"], status["error"]) == (
        "failed",
        "describe",
        "the prompt with its view label is 89 tokens",
    )


def test_the_image_is_in_the_run_folder_while_its_sentence_is_searched(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch
):
    """The copy was written once the search had ended: through the sentence search (an hour of
    a real CLIP's sentences on a CPU) the viewer's card had no image to show."""
    seen = []

    def searching(image_path, workspace, *args, **kwargs):
        seen.append(sorted(p.name for p in (workspace / "descriptor").iterdir()))
        raise KeyboardInterrupt

    monkeypatch.setattr(imageto3d, "describe", searching)
    image = _image(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_image(image, _options(tmp_path, tiny_clip_path), _config(tmp_path, tiny_sd_path))
    assert seen == [["source.png"]]
    copy = tmp_path / "run" / "descriptor" / "source.png"
    assert copy.read_bytes() == image.read_bytes()


def test_a_run_stopped_before_its_sentence_takes_the_edited_image_anew(tmp_path):
    """Nothing was made from the copy yet, so an image edited before the search is copied again;
    once the sentence is there the copy stays (the run's words are that image's)."""
    image = _image(tmp_path)
    workspace = tmp_path / "run"
    imageto3d.keep_source_copy(image, workspace)
    Image.new("RGB", (8, 8), (0, 0, 200)).save(image, format="JPEG")
    target = imageto3d.keep_source_copy(image, workspace, replace=True)
    assert [p.name for p in (workspace / "descriptor").iterdir()] == ["source.jpg"]
    assert target.read_bytes() == image.read_bytes()
    Image.new("RGB", (8, 8), (0, 200, 0)).save(image, format="JPEG")
    assert imageto3d.keep_source_copy(image, workspace).read_bytes() != image.read_bytes()


def test_the_diverse_sampling_says_in_status_json_that_it_failed(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("sampler broke")

    monkeypatch.setattr(imageto3d, "sample_image", broken)
    cfg = _config(tmp_path, tiny_sd_path, prompt="a red cube")
    with pytest.raises(RuntimeError):
        run_diverse(cfg, _options(tmp_path, tiny_clip_path), named=True)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert (status["state"], status["phase"]) == ("failed", "sample")
    assert status["error"] == "RuntimeError: sampler broke"


# --- config.json from the start; reruns over it; the descriptor trained on ---------------------


def test_config_json_records_the_stages_settings_before_the_first_stage_runs(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch
):
    """config.json was written only when text→3D started: a run stopped in describe or the
    descriptor had no record of its settings, and the describe / descriptor ones were nowhere."""

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(imageto3d, "describe", ctrl_c)
    image, options = _image(tmp_path), _options(tmp_path, tiny_clip_path)
    options.describe.noun, options.describe.quantifier = "cube", "some"
    with pytest.raises(KeyboardInterrupt):
        run_image(image, options, _config(tmp_path, tiny_sd_path, seed=3))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["prompt"] == "replaced by the trained sentence"  # until the descriptor is
    assert config["seed"] == 3 and config["guidance"]["model"] == str(tiny_sd_path)
    section = config["image_to_3d"]
    assert section["image"] == str(image.resolve())
    describe = section["describe"]
    assert (describe["clip"], describe["noun"], describe["quantifier"]) == (
        str(tiny_clip_path),
        "cube",
        "some",
    )
    assert describe["nouns"] == str((tmp_path / "nouns.txt").resolve())
    assert describe["max_words"] == 2 and "device" not in describe
    descriptor = section["descriptor"]
    assert (descriptor["iters"], descriptor["seed"], descriptor["lr"]) == (2, 3, 3e-4)
    assert descriptor["augment"]["flip_p"] == 0.5


def test_config_json_names_the_learned_file_of_a_relative_workspace_by_its_absolute_path(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch
):
    """``image IMG --workspace run`` recorded ``run/descriptor/learned_embeds.safetensors``, so
    ``text SENTENCE --config run/config.json`` typed from another directory did not find it."""
    monkeypatch.chdir(tmp_path)
    image, options = _image(tmp_path), _options(tmp_path, tiny_clip_path)
    (tmp_path / "run" / "descriptor").mkdir(parents=True)
    record = {"image": str(image), "trained_sentence": f"An image of a {DESCRIPTOR_TOKEN} cube"}
    (tmp_path / "run" / "descriptor" / "sentence.json").write_text(json.dumps(record))
    cfg = _config(tmp_path, tiny_sd_path, workspace="run")
    imageto3d.record_config(Path("run"), cfg, image, options)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    learned = tmp_path / "run" / "descriptor" / "learned_embeds.safetensors"
    assert config["guidance"]["textual_inversion"] == str(learned)


def test_an_image_run_from_another_runs_config_json_records_no_learned_file_of_that_run(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch
):
    """``image IMG --config OTHER/config.json --workspace NEW`` recorded OTHER's
    ``guidance.textual_inversion`` in NEW's config.json until NEW's own descriptor was trained:
    a rerun or resume from that record, or a reader of it, took another run's tokens."""
    from dreamtext.cli import main

    image, options = _image(tmp_path), _options(tmp_path, tiny_clip_path)
    other = tmp_path / "other"
    (other / "descriptor").mkdir(parents=True)
    record = {"image": str(image), "trained_sentence": f"An image of a {DESCRIPTOR_TOKEN} cube"}
    (other / "descriptor" / "sentence.json").write_text(json.dumps(record))
    (other / "descriptor" / "learned_embeds.safetensors").write_bytes(b"")
    imageto3d.record_config(
        other, _config(tmp_path, tiny_sd_path, workspace=str(other)), image, options
    )
    assert json.loads((other / "config.json").read_text())["guidance"]["textual_inversion"]

    def stop(*args, **kwargs):
        raise DreamtextError("stopped in describe")

    monkeypatch.setattr(imageto3d, "describe", stop)
    new = tmp_path / "new"
    args = ["image", str(image), "--config", str(other / "config.json"), "--workspace", str(new)]
    assert main(args) == 2
    config = json.loads((new / "config.json").read_text())
    assert config["guidance"]["textual_inversion"] is None
    assert config["prompt"] == image.stem


def test_the_text_stage_keeps_the_image_section_in_config_json(
    tmp_path, tiny_clip_path, tiny_sd_path
):
    workspace = run_image(
        _image(tmp_path), _options(tmp_path, tiny_clip_path), _config(tmp_path, tiny_sd_path)
    )
    config = json.loads((workspace / "config.json").read_text())
    assert config["prompt"].startswith("An image of") and config["encoding_backend"] == "torch"
    assert config["image_to_3d"]["descriptor"]["iters"] == 2


def test_diverse_records_its_prompt_and_sampler_before_it_samples(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch
):
    """`text --diverse`'s prompt and sampler settings appeared nowhere in its workspace."""

    def broken(*args, **kwargs):
        raise RuntimeError("sampler broke")

    monkeypatch.setattr(imageto3d, "sample_image", broken)
    cfg = _config(tmp_path, tiny_sd_path, prompt="a red cube", seed=4)
    with pytest.raises(RuntimeError):
        run_diverse(cfg, _options(tmp_path, tiny_clip_path), named=True)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    sample = str((tmp_path / "run" / "diverse" / "sample_seed4.png").resolve())
    assert config["diverse"] == {
        "prompt": "a red cube",
        "seed": 4,
        "sample_steps": 50,
        "sample_guidance_scale": 7.5,
        "image": sample,
        "textual_inversion": None,  # no learned words
    }
    assert config["prompt"] == "a red cube" and config["image_to_3d"]["image"] == sample


def test_diverse_checks_clip_before_it_samples_its_image(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch
):
    """It sampled for ~30 s, wrote the image, then failed on CLIP."""
    monkeypatch.setattr(imageto3d, "sample_image", _fail)
    options = _options(tmp_path, tiny_clip_path)
    options.describe.clip = str(tmp_path / "no_clip_here")
    cfg = _config(tmp_path, tiny_sd_path, prompt="a red cube")
    with pytest.raises(DreamtextError, match="no_clip_here does not exist"):
        run_diverse(cfg, options, named=True)
    assert not (tmp_path / "run").exists()


def test_diverse_with_a_clip_that_does_not_load_is_one_line_before_anything_loads(
    tmp_path, tiny_sd_path, monkeypatch, capsys
):
    from dreamtext.cli import main

    monkeypatch.setattr(imageto3d, "sample_image", _fail)
    monkeypatch.chdir(tmp_path)
    args = ["text", "a red cube", "--diverse", "--model", str(tiny_sd_path), "--clip", "./nope"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CLIP folder ./nope does not exist" in err
    assert not (tmp_path / "workspace").exists()


def _fake_sample(prompt, guidance, seed, out_path, *args):
    out_path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (200, 30, 30)).save(out_path)
    return out_path


def test_a_diverse_rerun_resolves_over_the_runs_config_and_recorded_options(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch, capsys
):
    """A rerun left out the first run's --config, --descriptor-iters and --clip: it took the
    defaults (and with them a field that does not fit the checkpoint)."""
    import yaml

    from dreamtext.cli import main

    seen = {}

    def fake_run_image(image_path, options, cfg, *more):
        seen.update(cfg=cfg, options=options)
        return cfg.workspace

    monkeypatch.setattr(imageto3d, "sample_image", _fake_sample)
    monkeypatch.setattr(imageto3d, "run_image", fake_run_image)
    monkeypatch.chdir(tmp_path)
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump(TINY_TRAIN))
    args = ["text", "a red cube", "--diverse", "--model", str(tiny_sd_path)]
    first = ["--config", str(tiny), "--clip", str(tiny_clip_path), "--descriptor-iters", "3"]
    assert main([*args, *first]) == 0
    assert main(args) == 0
    assert seen["cfg"].field.num_levels == TINY_TRAIN["field"]["num_levels"]
    assert seen["cfg"].workspace == "workspace/a_red_cube_diverse_seed0"
    assert seen["options"].describe.clip == str(tiny_clip_path)
    assert seen["options"].descriptor.iters == 3

    capsys.readouterr()
    named = ["--workspace", "workspace/a_red_cube_diverse_seed0"]
    assert main(["text", "a blue cube", "--diverse", "--model", str(tiny_sd_path), *named]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "holds the --diverse run of 'a red cube'; pass --workspace NEW_FOLDER" in err


def _trained_run(tmp_path, tiny_clip_path, tiny_sd_path):
    """A finished image run (no export): descriptor at step 2, text→3D at step 2."""
    image, options = _image(tmp_path), _options(tmp_path, tiny_clip_path)
    options.descriptor.log_every = 1
    run_image(image, options, _config(tmp_path, tiny_sd_path))
    return image, options, tmp_path / "run"


def _before_text_to_3d(workspace):
    """``workspace`` as if its run stopped between the descriptor and text→3D: no text→3D
    checkpoint, no status.json."""
    for path in [*(workspace / "checkpoints").iterdir(), workspace / "status.json"]:
        path.unlink()


def _rerun_descriptor_iters(tmp_path, tiny_sd_path, capsys, image, options, iters):
    """Rerun the image run with ``--descriptor-iters iters``; return what it wrote on stderr,
    the descriptor's recorded step and config.json's descriptor iters."""
    workspace = tmp_path / "run"
    capsys.readouterr()
    options.descriptor.iters = iters
    run_image(image, options, _config(tmp_path, tiny_sd_path))
    record = json.loads((workspace / "descriptor" / "sentence.json").read_text())
    config = json.loads((workspace / "config.json").read_text())
    return (
        capsys.readouterr().err,
        record["descriptor_iters"],
        config["image_to_3d"]["descriptor"]["iters"],
    )


def test_a_larger_descriptor_iters_trains_on_and_text_to_3d_starts_over_on_the_new_words(
    tmp_path, tiny_clip_path, tiny_sd_path
):
    """A larger --descriptor-iters on a finished descriptor only warned."""
    import torch
    from safetensors.torch import load_file

    image, options, workspace = _trained_run(tmp_path, tiny_clip_path, tiny_sd_path)
    learned = workspace / "descriptor" / "learned_embeds.safetensors"
    before = load_file(str(learned))[DESCRIPTOR_TOKEN]
    options.descriptor.iters = 4
    # text→3D trained on the step-2 words: training them on needs --overwrite
    refusal = r"step 2; to train the descriptor on to step 4 .*--overwrite"
    with pytest.raises(DreamtextError, match=refusal):
        run_image(image, options, _config(tmp_path, tiny_sd_path))
    assert load_checkpoint(workspace / "descriptor" / "checkpoints" / "last.pt")["step"] == 2

    run_image(image, options, _config(tmp_path, tiny_sd_path, iters=3), overwrite=True)
    assert load_checkpoint(workspace / "descriptor" / "checkpoints" / "last.pt")["step"] == 4
    log = (workspace / "descriptor" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log] == [1, 2, 3, 4]
    record = json.loads((workspace / "descriptor" / "sentence.json").read_text())
    assert record["descriptor_iters"] == 4
    assert not torch.equal(load_file(str(learned))[DESCRIPTOR_TOKEN], before)
    # text→3D started over (its log from step 1) on the new file, recorded in config.json
    text_log = (workspace / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in text_log] == [1, 2, 3]
    config = json.loads((workspace / "config.json").read_text())
    assert config["image_to_3d"]["descriptor"]["iters"] == 4
    assert config["guidance"]["textual_inversion"] == str(learned)
    assert learned.stat().st_mtime <= (workspace / "checkpoints" / "last.pt").stat().st_mtime


def test_a_smaller_descriptor_iters_keeps_the_descriptor_with_one_line(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch, capsys
):
    image, options, workspace = _trained_run(tmp_path, tiny_clip_path, tiny_sd_path)
    capsys.readouterr()
    monkeypatch.setattr(imageto3d, "train_descriptor", _fail)
    options.descriptor.iters = 1
    run_image(image, options, _config(tmp_path, tiny_sd_path))
    err = capsys.readouterr().err
    assert "descriptor: trained to step 2 already; --descriptor-iters 1 is fewer" in err
    config = json.loads((workspace / "config.json").read_text())
    assert config["image_to_3d"]["descriptor"]["iters"] == 2


def test_a_descriptor_stopped_past_a_smaller_descriptor_iters_is_kept_at_its_step(
    tmp_path, tiny_clip_path, tiny_sd_path, capsys
):
    """Stopped at step 2 and rerun with --descriptor-iters 1: the bar said 1/1 with no note,
    config.json recorded 1 where the tokens were step 2's (a rerun from it trains another
    descriptor), and the next rerun said --descriptor-iters 1, a flag it was not given, was
    fewer."""
    image, options, workspace = _trained_run(tmp_path, tiny_clip_path, tiny_sd_path)
    _before_text_to_3d(workspace)
    (workspace / "descriptor" / "learned_embeds.safetensors").unlink()  # as if stopped at 2
    record_path = workspace / "descriptor" / "sentence.json"
    record = json.loads(record_path.read_text())
    for key in ("trained_sentence", "descriptor_iters"):
        del record[key]
    record_path.write_text(json.dumps(record))
    err, step, recorded = _rerun_descriptor_iters(tmp_path, tiny_sd_path, capsys, image, options, 1)
    assert "descriptor: stopped at step 2 already, past --descriptor-iters 1; it is kept" in err
    assert (step, recorded) == (2, 2)


def test_a_descriptor_trained_on_and_stopped_past_a_smaller_iters_records_its_step(
    tmp_path, tiny_clip_path, tiny_sd_path, capsys
):
    """Trained to 2, trained on towards 6 and stopped at 4, then rerun with 3: it ended at
    step 4 (nothing to train), but config.json recorded 3, and a rerun from that record trained
    another descriptor."""
    image, options, workspace = _trained_run(tmp_path, tiny_clip_path, tiny_sd_path)
    _before_text_to_3d(workspace)
    options.descriptor.iters = 4
    run_image(image, options, _config(tmp_path, tiny_sd_path))
    _before_text_to_3d(workspace)
    record_path = workspace / "descriptor" / "sentence.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "descriptor_iters": 2}))  # stopped at 4 of 6
    err, step, recorded = _rerun_descriptor_iters(tmp_path, tiny_sd_path, capsys, image, options, 3)
    assert "descriptor: stopped at step 4 already, past --descriptor-iters 3; it is kept" in err
    assert (step, recorded) == (4, 4)


def test_a_descriptor_whose_text_stage_has_not_started_trains_on_without_overwrite(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch
):
    image, options, workspace = _trained_run(tmp_path, tiny_clip_path, tiny_sd_path)
    _before_text_to_3d(workspace)
    options.descriptor.iters = 3
    run_image(image, options, _config(tmp_path, tiny_sd_path))
    assert load_checkpoint(workspace / "descriptor" / "checkpoints" / "last.pt")["step"] == 3


def test_the_descriptor_refusal_from_the_command_line_is_one_line(
    tmp_path, tiny_clip_path, tiny_sd_path, capsys
):
    image = _image(tmp_path)
    _options(tmp_path, tiny_clip_path)  # writes the vocabulary files
    assert _cli_image(tmp_path, image, tiny_sd_path, tiny_clip_path, "--iters", "1") == 0
    capsys.readouterr()
    before = sorted(p.name for p in (tmp_path / "run").rglob("*"))
    code = _cli_image(
        tmp_path, image, tiny_sd_path, tiny_clip_path, "--iters", "1", "--descriptor-iters", "3"
    )
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "add --overwrite, or pass --workspace NEW_FOLDER" in err
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == before


def _recorded_run(tmp_path, tiny_clip_path, tiny_sd_path, folder):
    """``folder``/config.json as an image run writes it before its first stage
    (:func:`imageto3d.record_config`), with describe and descriptor options that are not the
    defaults; returns the image and those options."""
    image, options = _image(tmp_path), _options(tmp_path, tiny_clip_path)
    options.describe.noun, options.describe.quantifier = "cube", "some"
    augment = replace(options.descriptor.augment, flip_p=0.0)
    options.descriptor = replace(options.descriptor, iters=7, lr=0.01, augment=augment)
    folder.mkdir(parents=True)
    cfg = _config(tmp_path, tiny_sd_path, workspace=str(folder))
    imageto3d.record_config(folder, cfg, image, options)
    return image, options


def _capture_run_image(monkeypatch) -> dict:
    seen: dict = {}

    def fake_run_image(image_path, options, cfg, *more, note=None, **kwargs):
        seen.update(options=options, cfg=cfg, note=note)
        return cfg.workspace

    monkeypatch.setattr(imageto3d, "run_image", fake_run_image)
    return seen


def test_an_image_run_typed_again_from_its_config_json_takes_its_stage_options(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch
):
    """``image IMG --config RUN/config.json --workspace NEW`` dropped the file's ``image_to_3d``
    section: the describe and descriptor options took their defaults (the hub's CLIP, which
    fails offline; the built-in word lists; 10,000 descriptor steps at the default lr), so the
    rerun was not the run it was typed from."""
    from dreamtext.cli import main

    seen = _capture_run_image(monkeypatch)
    first = tmp_path / "first"
    image, recorded = _recorded_run(tmp_path, tiny_clip_path, tiny_sd_path, first)
    args = ["image", str(image), "--config", str(first / "config.json")]
    args += ["--workspace", str(tmp_path / "again")]
    assert main(args) == 0
    got = seen["options"]
    assert seen["cfg"].workspace == str(tmp_path / "again")
    assert got.describe.clip == str(tiny_clip_path)
    assert got.describe.nouns == recorded.describe.nouns.resolve()
    assert got.describe.adjectives == recorded.describe.adjectives.resolve()
    assert (got.describe.noun, got.describe.quantifier, got.describe.max_words) == (
        "cube",
        "some",
        2,
    )
    assert (got.descriptor.iters, got.descriptor.lr, got.descriptor.augment.flip_p) == (
        7,
        0.01,
        0.0,
    )
    # the flags still win over the file
    assert main([*args, "--descriptor-iters", "9", "--noun", "mug"]) == 0
    got = seen["options"]
    assert (got.descriptor.iters, got.describe.noun, got.descriptor.lr) == (9, "mug", 0.01)


def test_a_diverse_run_typed_again_from_its_config_json_takes_its_sampler_settings(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch
):
    from dreamtext.cli import main

    seen = {}

    def fake_run_diverse(cfg, options, *more, **kwargs):
        seen.update(options=options)
        return cfg.workspace

    monkeypatch.setattr(imageto3d, "run_diverse", fake_run_diverse)
    first = tmp_path / "first"
    image, _ = _recorded_run(tmp_path, tiny_clip_path, tiny_sd_path, first)
    config = json.loads((first / "config.json").read_text())
    config["diverse"] = {"prompt": "a red cube", "seed": 0, "sample_steps": 3}
    config["diverse"].update(sample_guidance_scale=5.0, image=str(image))
    (first / "config.json").write_text(json.dumps(config))
    args = ["text", "a red cube", "--diverse", "--config", str(first / "config.json")]
    assert main([*args, "--workspace", str(tmp_path / "again")]) == 0
    got = seen["options"]
    assert (got.sample_steps, got.sample_guidance_scale) == (3, 5.0)
    assert (got.describe.clip, got.descriptor.iters) == (str(tiny_clip_path), 7)


def test_a_batch_image_line_with_a_runs_config_json_takes_its_stage_options(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch
):
    from dreamtext.cli import main

    seen = _capture_run_image(monkeypatch)
    first = tmp_path / "first"
    image, _ = _recorded_run(tmp_path, tiny_clip_path, tiny_sd_path, first)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"image:{image}\n")
    root = tmp_path / "batch"
    code = main(
        ["batch", str(prompts), "--config", str(first / "config.json"), "--workspace", str(root)]
    )
    assert code == 0
    got = seen["options"]
    assert (got.describe.clip, got.describe.noun) == (str(tiny_clip_path), "cube")
    assert (got.descriptor.iters, got.descriptor.lr) == (7, 0.01)


def test_an_image_command_on_the_folder_of_its_own_config_json_says_it_continues_that_run(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch, capsys
):
    """``image IMG --config workspace/IMG/config.json`` (its default folder) reused every stage
    of the run and printed its folder, without a word that nothing was run again."""
    from dreamtext.cli import main

    seen = _capture_run_image(monkeypatch)  # which prints the note once its checks pass
    monkeypatch.chdir(tmp_path)
    folder = Path("workspace") / "red_cube"
    image, _ = _recorded_run(tmp_path, tiny_clip_path, tiny_sd_path, tmp_path / folder)
    assert main(["image", str(image), "--config", str(folder / "config.json")]) == 0
    note = seen["note"]
    assert f"--config {folder / 'config.json'} is the record of the run in {folder}" in note
    assert "pass --workspace NEW_FOLDER to run it again beside it" in note
    assert main(["image", str(image), "--workspace", "elsewhere"]) == 0
    assert seen["note"] is None


def test_an_image_run_refused_by_its_checks_does_not_say_it_continues(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch, capsys
):
    """The "this continues that run" note printed before the stage checks: a run they then
    refused (here its recorded noun list is gone) said it continued, and then that it could
    not."""
    from dreamtext.cli import main

    monkeypatch.chdir(tmp_path)
    folder = Path("workspace") / "red_cube"
    image, recorded = _recorded_run(tmp_path, tiny_clip_path, tiny_sd_path, tmp_path / folder)
    recorded.describe.nouns.unlink()
    capsys.readouterr()
    assert main(["image", str(image), "--config", str(folder / "config.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(recorded.describe.nouns.name) in err, err
    assert "continues that run" not in err


def test_config_describe_options_a_finished_describe_stage_ignores_are_named(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch, capsys
):
    """A rerun into a workspace whose sentence is found keeps that sentence's options: a
    ``--config`` file's other ones are named, as ignored flags are."""
    from dreamtext.cli import main

    seen = _capture_run_image(monkeypatch)
    image, recorded = _recorded_run(tmp_path, tiny_clip_path, tiny_sd_path, tmp_path / "first")
    workspace = tmp_path / "run"
    describe(image, workspace, replace(recorded.describe, noun="chair"))
    capsys.readouterr()
    config = tmp_path / "first" / "config.json"
    assert main(["image", str(image), "--config", str(config), "--workspace", str(workspace)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"image_to_3d.describe.noun cube in {config} (the run's: chair)" in err
    assert seen["options"].describe.noun == "chair"


def test_options_resolve_over_the_recorded_ones_and_old_runs_over_their_record(tmp_path):
    """A rerun without --descriptor-iters must not train a finished descriptor on to the
    default 10,000 steps: the recorded count is its base (for a run from before config.json's
    sections, sentence.json's)."""
    _, workspace = _finished_workspace(tmp_path, iters=2)
    record_path = workspace / "descriptor" / "sentence.json"
    record = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**record, "descriptor_iters": 7}))
    assert imageto3d.resolve_image_options({}, workspace).descriptor.iters == 7
    config = json.loads((workspace / "config.json").read_text())
    describe = {"clip": "my/clip", "nouns": "/w/nouns.txt"}
    config["image_to_3d"] = {"describe": describe, "descriptor": {"iters": 9, "lr": 0.01}}
    (workspace / "config.json").write_text(json.dumps(config))
    flags = {"describe": {"max_words": 3}, "descriptor": {"iters": 11}}
    options = imageto3d.resolve_image_options(flags, workspace)
    assert (options.describe.clip, options.describe.nouns) == ("my/clip", Path("/w/nouns.txt"))
    assert (options.describe.max_words, options.descriptor.iters) == (3, 11)
    assert options.descriptor.lr == 0.01


def test_a_rerun_records_the_describe_options_the_stage_ran_with_not_the_ignored_flags(
    tmp_path, tiny_clip_path
):
    """config.json's image_to_3d.describe recorded a rerun's --nouns and --max-words although the
    finished describe stage was reused, and the warning did not name --nouns."""
    image, options = _image(tmp_path), _options(tmp_path, tiny_clip_path)
    workspace = tmp_path / "run"
    describe(image, workspace, options.describe)
    other = tmp_path / "other_nouns.txt"
    other.write_text("mug\n")
    flags = {"describe": {"nouns": other, "max_words": 5}, "descriptor": {}}

    resolved = imageto3d.resolve_image_options(flags, workspace)
    assert resolved.describe.nouns == options.describe.nouns.resolve()
    assert resolved.describe.max_words == 2
    section = imageto3d.image_section(image, resolved)["describe"]
    assert section["nouns"] == str(options.describe.nouns.resolve())
    given = {"clip": None, "nouns": other, "adjectives": None, "noun": "cube", "max_words": 5}
    assert imageto3d.ignored_flags(workspace, given) == [
        f"--nouns {other.resolve()} (the run's: {options.describe.nouns.resolve()})",
        "--noun cube (the run's: not given)",
        "--max-words 5 (the run's: 2)",
    ]


def test_a_relative_clip_folder_is_recorded_as_an_absolute_path(
    tmp_path, tiny_clip_path, monkeypatch
):
    """A run interrupted in describe and typed again from another directory looked for
    --clip clip in the wrong place (or on the hub), as --model did before config's fix."""
    image, options = _image(tmp_path), _options(tmp_path, tiny_clip_path)
    monkeypatch.chdir(tiny_clip_path.parent)
    relative = replace(options.describe, clip=tiny_clip_path.name)
    flags = {"describe": {"clip": tiny_clip_path.name}, "descriptor": {}}
    resolved = imageto3d.resolve_image_options(flags, tmp_path / "new")
    assert resolved.describe.clip == str(tiny_clip_path.resolve())
    assert imageto3d.image_section(image, resolved)["describe"]["clip"] == resolved.describe.clip

    describe(image, tmp_path / "run", relative)
    record = json.loads((tmp_path / "run" / "descriptor" / "sentence.json").read_text())
    assert record["clip"] == record["options"]["clip"] == str(tiny_clip_path.resolve())
    given = {"clip": tiny_clip_path.name, "max_words": 2}
    assert imageto3d.ignored_flags(tmp_path / "run", given) == []


def _described_run(tmp_path):
    """An image, and a workspace whose describe stage ran on it (sentence.json and the run's
    copy of the image): ``(image, workspace, copy)``."""
    image = _image(tmp_path)
    workspace = tmp_path / "run"
    (workspace / "descriptor").mkdir(parents=True)
    record = {"sentence": "An image of a cube", "image": str(image.resolve())}
    (workspace / "descriptor" / "sentence.json").write_text(json.dumps(record))
    return image, workspace, imageto3d.keep_source_copy(image, workspace)


def test_a_run_whose_image_was_moved_continues_from_the_moved_file_or_the_runs_copy(tmp_path):
    """Once the image was moved or deleted, neither its old path, its new one nor the run's own
    copy was accepted: the only way on was --workspace NEW_FOLDER, from scratch."""
    image, workspace, copy = _described_run(tmp_path)
    moved = image.rename(tmp_path / "moved.png")

    command = f"dreamtext image {shlex.quote(str(copy))} --workspace {shlex.quote(str(workspace))}"
    with pytest.raises(DreamtextError, match=re.escape(command)):
        imageto3d.check_image(image, workspace)
    for path in (moved, copy):
        imageto3d.check_image(path, workspace)
        assert imageto3d.check_image_workspace(workspace, path) is None
    other = tmp_path / "other.png"
    Image.new("RGB", (48, 48), (0, 0, 255)).save(other)
    with pytest.raises(DreamtextError, match="holds the image→3D run of"):
        imageto3d.check_image_workspace(workspace, other)


def test_a_run_continued_from_its_copy_keeps_its_images_name_and_record(tmp_path):
    """Continued as the moved image's refusal says (`dreamtext image W/descriptor/source.png
    --workspace W`), the run recorded the copy as its image, and its export was titled
    "source" (the OBJ's `o source`, the GLB's node), not after the image."""
    from dreamtext.export import run_title

    image, workspace, copy = _described_run(tmp_path)
    cfg = resolve_config({"prompt": "cube", "workspace": str(workspace)})
    imageto3d.record_config(workspace, cfg, image, ImageOptions())
    image.rename(tmp_path / "moved.png")
    imageto3d.record_config(workspace, cfg, copy, ImageOptions())
    config = json.loads((workspace / "config.json").read_text())
    assert config["image_to_3d"]["image"] == str(image.resolve())
    assert run_title(workspace, cfg.prompt) == image.stem
    moved = tmp_path / "moved.png"  # its new path is recorded as the run's image
    imageto3d.record_config(workspace, cfg, moved, ImageOptions())
    config = json.loads((workspace / "config.json").read_text())
    assert config["image_to_3d"]["image"] == str(moved.resolve())


def test_a_diverse_workspace_of_another_seed_is_refused_naming_both_seeds(tmp_path):
    """The refusal named the other seed's sampled file as 'the image→3D run of …/
    sample_seed1.png', a file the user never gave, and not the --seed that would continue it."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    section = {"diverse": {"prompt": "a red cube", "seed": 1}}
    (workspace / "config.json").write_text(json.dumps(section))
    cfg = resolve_config({"prompt": "a red cube", "seed": 2, "workspace": str(workspace)})
    with pytest.raises(DreamtextError) as refusal:
        imageto3d.check_diverse_workspace(workspace, cfg)
    assert "with --seed 1" in str(refusal.value)
    assert "pass --seed 1 to continue it, or --workspace NEW_FOLDER for --seed 2" in str(
        refusal.value
    )


def test_an_image_edited_in_place_is_refused_naming_the_runs_copy(tmp_path):
    """Same path, new pixels: an interrupted descriptor went on training on the new image with
    the sentence found for the old one."""
    image, workspace, copy = _described_run(tmp_path)
    assert imageto3d.check_image_workspace(workspace, image) is None  # unchanged: continues
    Image.new("RGB", (48, 48), (0, 0, 255)).save(image)
    with pytest.raises(
        DreamtextError, match=f"has changed since .* or its copy {copy} to continue"
    ):
        imageto3d.check_image_workspace(workspace, image)
    assert imageto3d.check_image_workspace(workspace, copy) is None


def test_image_and_diverse_runs_in_folders_that_ascii_slugs_named_are_found_again(
    tmp_path, monkeypatch
):
    """Before Unicode slugs, ``crème.png`` ran in ``workspace/cr_me`` and ``--diverse`` of
    "Crème brûlée" in ``workspace/cr_me_br_l_e_diverse_seed1``: a rerun continues them there."""
    monkeypatch.chdir(tmp_path)
    assert imageto3d.default_workspace("crème.png").as_posix() == "workspace/crème"
    old = tmp_path / "workspace" / "cr_me" / "descriptor"
    old.mkdir(parents=True)
    record = {"image": str(tmp_path / "crème.png")}
    (old / "sentence.json").write_text(json.dumps(record), encoding="utf-8")
    assert imageto3d.default_workspace("crème.png").as_posix() == "workspace/cr_me"
    assert imageto3d.default_workspace("cràme.png").as_posix() == "workspace/cràme"

    cfg = resolve_config({"prompt": "Crème brûlée", "seed": 1})
    new = "workspace/crème_brûlée_diverse_seed1"
    assert imageto3d.diverse_workspace(cfg, named=False) == new
    diverse = tmp_path / "workspace" / "cr_me_br_l_e_diverse_seed1"
    diverse.mkdir()
    section = {"diverse": {"prompt": "Crème brûlée", "seed": 1}}
    (diverse / "config.json").write_text(json.dumps(section), encoding="utf-8")
    assert imageto3d.diverse_workspace(cfg, named=False) == diverse.relative_to(tmp_path).as_posix()
    other = resolve_config({"prompt": "Crème brûlée!", "seed": 1})
    assert imageto3d.diverse_workspace(other, named=False) == new


def test_overwriting_the_text_stage_keeps_the_earlier_stages_time_in_status(
    tmp_path, tiny_clip_path, tiny_sd_path
):
    """image --overwrite keeps describe and the descriptor but removed status.json, so the run's
    ``stages`` and ``total_seconds`` (the viewer's card) lost the sentence search's and the
    descriptor's time, and a descriptor trained on afterwards counted from 0."""
    image, options, workspace = _trained_run(tmp_path, tiny_clip_path, tiny_sd_path)
    before = json.loads((workspace / "status.json").read_text())["stages"]
    assert set(before) == {"describe", "descriptor", "train"}
    run_image(image, options, _config(tmp_path, tiny_sd_path, iters=3), overwrite=True)
    after = json.loads((workspace / "status.json").read_text())
    assert (after["state"], after["step"]) == ("finished", 3)
    assert set(after["stages"]) == {"describe", "descriptor", "train"}
    for stage in ("describe", "descriptor"):
        assert after["stages"][stage] == before[stage]
    assert after["total_seconds"] == pytest.approx(
        sum(s["seconds"] for s in after["stages"].values())
    )

    options.descriptor.iters = 4  # trains on from step 2: adds to its earlier time
    run_image(image, options, _config(tmp_path, tiny_sd_path, iters=3), overwrite=True)
    again = json.loads((workspace / "status.json").read_text())["stages"]
    assert again["describe"] == before["describe"]
    assert again["descriptor"]["seconds"] > before["descriptor"]["seconds"]


@pytest.mark.parametrize("moved", [False, True])
def test_the_workspace_check_reads_the_image_and_the_runs_copy_once_each(
    tmp_path, monkeypatch, moved
):
    """For a run whose image was moved, the check read the image twice (comparing it with the
    recorded file or the copy, then with the copy again), and the copy twice when the recorded
    file was gone: twice the megabytes of a large photo, at every rerun."""
    image, workspace, copy = _described_run(tmp_path)
    if moved:
        image = image.rename(tmp_path / "moved.png")
    reads = []
    read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda path: reads.append(path) or read_bytes(path))
    assert imageto3d.check_image_workspace(workspace, image) is None
    assert sorted(reads) == sorted([image, copy])


def _with_a_larger_field(tmp_path, image, workspace, tiny_sd_path, monkeypatch):
    """The image command over ``workspace`` with a config of a 4-level field, and the list of
    the configs ``run_image`` (faked) is called with."""
    ran = []
    monkeypatch.setattr(imageto3d, "run_image", lambda image, options, cfg, **kw: ran.append(cfg))
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text("field:\n  num_levels: 4\n")
    common = ["image", str(image), "--workspace", str(workspace), "--model", str(tiny_sd_path)]
    return [*common, "--config", str(bigger)], ran


def test_image_overwrite_may_change_the_field_but_not_the_seed_of_the_descriptor_it_keeps(
    tmp_path, tiny_sd_path, monkeypatch, capsys
):
    """``image --overwrite`` trains text→3D again from scratch on the descriptor the run keeps:
    a field of another size is a new run's setting; another seed is not (it trained that
    descriptor). Both were refused as 'a resumed run keeps its seed, field and occupancy grid'."""
    from dreamtext.cli import main

    image, workspace = _finished_workspace(tmp_path, 3)
    common, ran = _with_a_larger_field(tmp_path, image, workspace, tiny_sd_path, monkeypatch)
    assert main([*common, "--overwrite"]) == 0, capsys.readouterr().err
    assert ran[-1].field.num_levels == 4
    capsys.readouterr()
    assert main([*common, "--overwrite", "--seed", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "keeps the run's descriptor, which its seed trained" in err
    assert "seed 0 → 5" in err and "num_levels" not in err and "resumed" not in err
    assert main(common) == 2  # without --overwrite the run resumes: its field stays
    err = capsys.readouterr().err
    assert (
        "a resumed run keeps its seed, optimizer, field and occupancy grid" in err
        and "num_levels" in err
    )
    assert len(ran) == 1


def test_an_image_run_stopped_before_text_to_3d_may_change_its_field(
    tmp_path, tiny_sd_path, monkeypatch, capsys
):
    """Stopped in its descriptor stage, the run has no field yet: another field size was
    refused as 'a resumed run keeps its seed, field and occupancy grid', whose only way on was a
    new folder, which describes and trains the descriptor again. The seed stays: it trained the
    descriptor."""
    from dreamtext.cli import main

    image, workspace = _finished_workspace(tmp_path, 3, status=False)
    shutil.rmtree(workspace / "checkpoints")
    common, ran = _with_a_larger_field(tmp_path, image, workspace, tiny_sd_path, monkeypatch)
    assert main(common) == 0, capsys.readouterr().err
    assert ran[-1].field.num_levels == 4
    assert main([*common, "--seed", "5"]) == 2
    err = capsys.readouterr().err
    assert "the run keeps its descriptor, which its seed trained" in err and "seed 0 → 5" in err


def test_text_diverse_overwrite_may_change_the_field_as_image_overwrite_does(
    tmp_path, tiny_sd_path, monkeypatch, capsys
):
    """`--overwrite` says it does for --diverse what it does for image: text→3D from scratch on
    the kept descriptor. A wider field was refused for --diverse alone."""
    from dreamtext.cli import main

    image, workspace = _finished_workspace(tmp_path, 3)
    config = json.loads((workspace / "config.json").read_text())
    config["diverse"] = {"prompt": "a red cube", "seed": 0, "image": str(image)}
    (workspace / "config.json").write_text(json.dumps(config))
    (workspace / "diverse").mkdir()
    shutil.copy(image, imageto3d.diverse_image(workspace, 0))
    ran = []
    monkeypatch.setattr(imageto3d, "run_diverse", lambda cfg, *a, **kw: ran.append(cfg))
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text("field:\n  num_levels: 4\n")
    common = ["text", "a red cube", "--diverse", "--workspace", str(workspace)]
    common += ["--model", str(tiny_sd_path), "--config", str(bigger)]
    assert main([*common, "--overwrite"]) == 0, capsys.readouterr().err
    assert ran[-1].field.num_levels == 4
    assert main(common) == 2  # without --overwrite the run resumes: its field stays
    assert "a resumed run keeps its seed, optimizer, field" in capsys.readouterr().err


def test_a_diverse_run_into_a_text_runs_folder_is_refused_for_its_prompt(tmp_path):
    """The refusal ended 'for this image', where the user had typed a prompt, not an image."""
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "config.json").write_text(json.dumps({"prompt": "a cube"}))
    cfg = resolve_config({"prompt": "a red cube", "workspace": str(workspace)})
    with pytest.raises(DreamtextError) as refusal:
        imageto3d.check_diverse_workspace(workspace, cfg)
    assert str(refusal.value) == (
        f"{workspace} holds a text→3D run of 'a cube'; pass --workspace NEW_FOLDER for the "
        "--diverse run of 'a red cube'"
    )


def test_the_diverse_sample_reads_the_configs_learned_tokens(tmp_path, tiny_sd_path):
    """`text 'a photo of <my-cat>' --diverse` with guidance.textual_inversion sampled its image
    through the shared text side, without the learned word (read as plain sub-words): the same
    pixels as with no file at all. Using the tokens, or refusing the file, are both fine."""
    from safetensors.torch import save_file

    learned = tmp_path / "learned_embeds.safetensors"
    save_file(
        {"<my-cat>": torch.randn(1, 32, generator=torch.Generator().manual_seed(0)) * 5},
        str(learned),
    )
    prompt = "a photo of <my-cat>"
    with_file = GuidanceConfig(model=str(tiny_sd_path), textual_inversion=str(learned))
    try:
        a = sample_image(prompt, with_file, 0, tmp_path / "a.png", steps=3)
    except DreamtextError:
        return  # refused: fine
    plain = GuidanceConfig(model=str(tiny_sd_path))
    b = sample_image(prompt, plain, 0, tmp_path / "b.png", steps=3)
    assert not np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def _learned_words(path):
    """A ``guidance.textual_inversion`` file with one learned word, ``<my-cat>``."""
    from safetensors.torch import save_file

    save_file({"<my-cat>": torch.randn(1, 32, generator=torch.Generator().manual_seed(0))}, path)
    return path


def test_a_diverse_run_records_the_learned_words_its_sample_read_and_a_rerun_reads_them(
    tmp_path, tiny_sd_path, tiny_clip_path, monkeypatch, capsys
):
    """config.json's guidance section holds the run's own learned file (none before its
    descriptor is trained), so the user's file, which `a photo of <my-cat>`'s sample read, was
    recorded nowhere: the same command typed again without its --config (after a stop before
    the image was written) sampled `<my-cat>` as plain sub-words."""
    from dreamtext.cli import main

    monkeypatch.chdir(tmp_path)
    learned = _learned_words(tmp_path / "cat.safetensors")
    (tmp_path / "words.yaml").write_text("guidance:\n  textual_inversion: cat.safetensors\n")
    read = []

    def stop(prompt, guidance, *args, **kwargs):
        read.append(guidance.textual_inversion)
        raise DreamtextError("stopped before the image was written")

    monkeypatch.setattr(imageto3d, "sample_image", stop)
    args = ["text", "a photo of <my-cat>", "--diverse", "--model", str(tiny_sd_path)]
    args += ["--clip", str(tiny_clip_path), "--workspace", "run"]
    assert main([*args, "--config", "words.yaml"]) == 2
    assert main(args) == 2  # typed again without the file
    assert "stopped before the image was written" in capsys.readouterr().err
    assert read == [str(learned), str(learned)]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["diverse"]["textual_inversion"] == str(learned)
    assert config["guidance"]["textual_inversion"] is None  # the run has learned none yet
    # The record is one a --config may hold (a run's config.json is read as one).
    sections = config_file_stage_sections("run/config.json")
    assert sections[0][1]["diverse"]["textual_inversion"] == str(learned)


def test_the_learned_words_of_a_diverse_sample(tmp_path):
    """Which file `--diverse`'s sample reads, and what config.json's diverse section records."""
    workspace = tmp_path / "run"
    image = imageto3d.diverse_image(workspace, 0)
    own = imageto3d.learned_embeds_path(workspace)
    mine = str(tmp_path / "cat.safetensors")

    def words(given, recorded=imageto3d.NOT_RECORDED, sampled=False):
        shutil.rmtree(workspace, ignore_errors=True)
        image.parent.mkdir(parents=True)
        diverse = {"prompt": "a photo of <my-cat>", "seed": 0}
        if recorded is not imageto3d.NOT_RECORDED:
            diverse["textual_inversion"] = recorded
        (workspace / "config.json").write_text(json.dumps({"diverse": diverse}))
        if sampled:
            image.write_bytes(b"png")
        cfg = resolve_config({"prompt": "a photo of <my-cat>", "workspace": str(workspace)})
        cfg.guidance.textual_inversion = given
        return imageto3d.sample_words(workspace, cfg, image)

    assert words(mine) == mine
    assert words("cat.safetensors") == str(Path("cat.safetensors").resolve())  # absolute
    assert words(None) is None
    assert words(None, recorded=mine) == mine  # a rerun typed without the file
    assert words(str(own), recorded=mine) == mine  # config.json's guidance: the run's own
    assert words(str(own)) is None
    assert words("other.safetensors", recorded=mine).endswith("other.safetensors")
    # Sampled: the file it was sampled with, whatever the command gives now.
    assert words("other.safetensors", recorded=mine, sampled=True) == mine
    assert words(mine, recorded=None, sampled=True) is None
    assert words(mine, sampled=True) is imageto3d.NOT_RECORDED  # a run from before the record
    assert words(mine, recorded=7, sampled=True) is imageto3d.NOT_RECORDED  # edited by hand
    assert words(None, recorded=7) is None


def test_the_diverse_sample_reads_the_negative_prompt(tmp_path, tiny_sd_path):
    """`text P --diverse --negative N` sampled its image with an empty negative prompt."""
    neg = GuidanceConfig(model=str(tiny_sd_path), negative="blue sphere")
    a = sample_image("a red cube", neg, 0, tmp_path / "a.png", steps=3)
    plain = GuidanceConfig(model=str(tiny_sd_path))
    b = sample_image("a red cube", plain, 0, tmp_path / "b.png", steps=3)
    assert not np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))


def test_a_too_long_negative_prompt_is_refused_before_the_sentence_search(
    tmp_path, tiny_sd_path, tiny_clip_path, monkeypatch, capsys
):
    """`image IMG --negative <over 77 tokens>` was refused by the text→3D stage, after the
    sentence search and the descriptor training (10,000 steps by default) had run."""
    from dreamtext.cli import main

    def never(*args, **kwargs):
        raise AssertionError("the sentence search ran before the negative prompt was checked")

    monkeypatch.setattr(imageto3d, "describe", never)
    image = _image(tmp_path)
    args = [
        "image",
        str(image),
        "--model",
        str(tiny_sd_path),
        "--clip",
        str(tiny_clip_path),
        "--workspace",
        str(tmp_path / "run"),
        "--negative",
        "blurry " * 90,
    ]
    assert main(args) == 2
    assert "the negative prompt is" in capsys.readouterr().err
    assert not (tmp_path / "run" / "descriptor" / "sentence.json").exists()


LONG = "blurry " * 800  # 5,600 characters, 802 tokens


@pytest.mark.parametrize(
    ("command", "refusal"),
    [
        (["image", "IMAGE", "--negative", LONG], "the negative prompt is 802 tokens"),
        (["text", "a red cube", "--negative", LONG], "the negative prompt is 802 tokens"),
        (["text", "a red cube " * 40], "the prompt with its view label is 125 tokens"),
        (["text", "a red cube " * 40, "--diverse"], "the prompt is 122 tokens"),
        (
            ["image", "IMAGE", "--noun", "q" * 40, "--quantifier", "a", "--max-words", "0"],
            "the sentence to learn, 'An image of a <descriptor> " + "q" * 40 + "', is at least "
            "89 tokens with its view label",
        ),
    ],
    ids=["image-negative", "text-negative", "text-prompt", "diverse-prompt", "image-noun"],
)
def test_a_text_too_long_for_the_text_encoder_is_refused_before_any_model_loads(
    tmp_path, tiny_sd_path, tiny_clip_path, no_weight_loads, capsys, command, refusal
):
    """`image mug.png --negative <5,000 characters>` said "loaded Stable Diffusion ..." and
    only then refused the negative prompt (SD 2.1: 30-60 s of loading for a typo); `text` did
    likewise with a long prompt or negative prompt, `text --diverse` (after loading CLIP
    too) before its sample. A --noun whose sentence, once the descriptor writes its pieces,
    cannot fit was refused after both loads and the sentence search, its record left in the
    workspace. Each is one line, before any weight loads, with
    nothing written."""
    from dreamtext.cli import main

    image = str(_image(tmp_path))
    args = [image if word == "IMAGE" else word for word in command]
    args += ["--model", str(tiny_sd_path), "--workspace", str(tmp_path / "run")]
    if command[0] == "image" or "--diverse" in command:
        args += ["--clip", str(tiny_clip_path)]
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"dreamtext: error: {refusal}"), err
    assert not (tmp_path / "run").exists()


def test_a_quantifier_no_sentence_to_learn_fits_with_is_refused_before_any_model_loads(
    tmp_path, tiny_sd_path, tiny_clip_path, no_weight_loads, capsys
):
    """`image mug.png --quantifier Q` without --noun, where no noun of the list makes a sentence
    to learn that fits (counted at its least: test_descriptor's boundary test), loaded CLIP and
    Stable Diffusion, ran the search, and only then refused, its record left in the workspace.
    It is one line before any weight loads, with nothing written."""
    from dreamtext.cli import main

    nouns = tmp_path / "nouns.txt"
    nouns.write_text("apartment building\n", encoding="utf-8")
    args = ["image", str(_image(tmp_path)), "--quantifier", "q" * 52, "--nouns", str(nouns)]
    args += ["--model", str(tiny_sd_path), "--clip", str(tiny_clip_path)]
    assert main([*args, "--workspace", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"dreamtext: error: the sentence to learn, 'An image of {'q' * 52} <descriptor> <noun>', "
        "is at least 78 tokens with its view label whatever noun the search finds once its "
        "descriptor is written as the words' pieces, but the text encoder reads 77 (start and "
        "end included); give a shorter --quantifier or shorter --nouns"
    ]
    assert not (tmp_path / "run").exists()


def test_a_diverse_prompt_the_text_encoder_would_cut_off_is_refused_before_sampling(
    tmp_path, tiny_sd_path, tiny_clip_path, monkeypatch, capsys
):
    """`text <a 120-token prompt> --diverse` sampled its image from the prompt cut at 77 tokens
    without a word (the same prompt without --diverse is refused); no config.json is left."""
    from dreamtext.cli import main

    monkeypatch.setattr(imageto3d, "sample_image", _fail)
    monkeypatch.chdir(tmp_path)
    prompt = "a red cube " * 40
    clip = str(tiny_clip_path)
    args = ["text", prompt, "--diverse", "--model", str(tiny_sd_path), "--clip", clip]
    assert main([*args, "--workspace", "run"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("dreamtext: error: the prompt is "), err
    assert "would cut off the rest; shorten the prompt" in err[-1]
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_diverse_negative_prompt_its_learned_tokens_lengthen_past_the_limit_is_refused(
    tmp_path, tiny_sd_path, tiny_clip_path, monkeypatch, capsys
):
    """A negative prompt holding a learned token of 16 vectors: counted before the expansion
    (`<t>` as 3 sub-words) it is 1 + 3 + 60 + 1 = 65 tokens and passed; the sample read it
    expanded, 1 + 16 + 60 + 1 = 78, cut at 77 without a word."""
    from safetensors.torch import save_file

    from dreamtext.cli import main

    monkeypatch.setattr(imageto3d, "sample_image", _fail)
    monkeypatch.chdir(tmp_path)
    save_file({"<t>": torch.randn(16, 32)}, str(tmp_path / "t.safetensors"))
    guidance = {"textual_inversion": "t.safetensors", "negative": "<t>" + " a" * 60}
    (tmp_path / "words.yaml").write_text(yaml.safe_dump({"guidance": guidance}))
    args = ["text", "a red cube", "--diverse", "--model", str(tiny_sd_path)]
    args += ["--clip", str(tiny_clip_path), "--workspace", "run", "--config", "words.yaml"]
    assert main(args) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        "dreamtext: error: the negative prompt is 78 tokens, but the text encoder reads 77 "
        "(start and end included) and would cut off the rest; shorten the negative prompt"
    ), err
    assert not (tmp_path / "run" / "config.json").exists()


@pytest.mark.parametrize("own", [False, True])
def test_a_learned_words_file_an_image_run_does_not_read_is_named_once(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch, capsys, own
):
    """``image IMG --config C`` with C's ``guidance.textual_inversion`` a file of the user's
    (``<my-cat>``): the run learns its own words, so the file was dropped without a word. A run's
    own learned file (``RUN/descriptor/learned_embeds.safetensors``) is not the user's: no note."""
    from dreamtext.cli import main

    image = _image(tmp_path)
    folder = tmp_path / "other" / "descriptor" if own else tmp_path / "mine"
    folder.mkdir(parents=True)
    words = folder / ("learned_embeds.safetensors" if own else "my_cat.safetensors")
    words.write_bytes(b"")
    config = tmp_path / "c.json"
    guidance = {"model": str(tiny_sd_path), "textual_inversion": str(words)}
    config.write_text(json.dumps({**TINY_TRAIN, "iters": 2, "guidance": guidance}))

    def stop(*args, **kwargs):
        raise DreamtextError("stopped in describe")

    monkeypatch.setattr(imageto3d, "describe", stop)
    args = ["image", str(image), "--config", str(config), "--workspace", str(tmp_path / "new")]
    assert main([*args, "--clip", str(tiny_clip_path)]) == 2
    err = capsys.readouterr().err
    line = f"guidance.textual_inversion ({words}) is not read: an image run learns its own words"
    assert err.count(line) == (0 if own else 1), err
    assert "stopped in describe" in err


def test_a_diverse_sample_on_a_full_disk_names_its_file_and_leaves_no_part_of_it(
    tmp_path, tiny_sd_path, monkeypatch
):
    """`text --diverse` with its workspace on a full disk left ``diverse/sample_seed0.png.tmp``
    (0 or 8192 bytes: Pillow's buffer), and its error named no file."""
    import errno
    import os

    real_save = Image.Image.save

    def full_disk(self, fp, format=None, **params):
        if isinstance(fp, (str, os.PathLike)):  # a file name: Pillow opens the file itself
            with open(fp, "wb") as file:
                file.write(b"\x89PNG cut short")
        else:
            fp.write(b"\x89PNG cut short")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Image.Image, "save", full_disk)
    guidance = GuidanceConfig(model=str(tiny_sd_path))
    out = tmp_path / "diverse" / "sample_seed0.png"
    with pytest.raises(OSError) as raised:
        sample_image("a red cube", guidance, 0, out, steps=2)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(out)
    assert list(out.parent.iterdir()) == []
    monkeypatch.setattr(Image.Image, "save", real_save)


def test_a_descriptor_stopped_in_fp16_goes_on_in_float32_with_the_flag_its_line_names(
    tmp_path, tiny_clip_path, tiny_sd_path, monkeypatch, capsys
):
    """A descriptor whose fp16 loss scaler skipped 50 updates stops naming the same command
    with --bf16 or --fp32: its run's config.json records fp16, which the rerun resolves over,
    so a rerun without a precision flag stays in fp16 (here, on the CPU, refused as such),
    and with --fp32 the descriptor goes on from its checkpoint in float32."""
    from torch.amp import GradScaler

    from dreamtext import descriptor
    from dreamtext.descriptor import DescriptorTrainer

    image = _image(tmp_path)
    _options(tmp_path, tiny_clip_path)  # writes the vocabulary files
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(yaml.safe_dump({k: v for k, v in TINY_TRAIN.items() if k != "export"}))
    # fp16's scaler on the CPU, and every step's gradients infinite, as a U-Net that overflows
    # float16 gives them.
    monkeypatch.setattr(descriptor, "fp16_loss_scaler", lambda dtype, device: GradScaler("cpu"))

    def overflowing_loss(self, *batch):
        infinite = self.placeholders.vectors.sum() * float("inf")
        return infinite, {"loss_real": infinite.detach(), "loss_base": infinite.detach()}

    monkeypatch.setattr(DescriptorTrainer, "loss", overflowing_loss)
    flags = ("--iters", "2", "--config", str(tiny), "--descriptor-iters", "52")
    assert _cli_image(tmp_path, image, tiny_sd_path, tiny_clip_path, *flags) == 2
    err = capsys.readouterr().err
    assert "run the same command again with --bf16 or --fp32 (without --fp16)" in err, err
    workspace = tmp_path / "run"
    config = workspace / "config.json"
    recorded = json.loads(config.read_text())
    recorded["guidance"]["fp16"] = True  # as `--fp16` on a GPU records it
    config.write_text(json.dumps(recorded))
    monkeypatch.undo()

    rerun = ("--descriptor-iters", "52")
    assert _cli_image(tmp_path, image, tiny_sd_path, tiny_clip_path, *rerun) == 2
    assert "--fp16 needs a CUDA GPU" in capsys.readouterr().err  # the recorded fp16 stays
    code = _cli_image(tmp_path, image, tiny_sd_path, tiny_clip_path, *rerun, "--fp32")
    assert code == 0, capsys.readouterr().err
    guidance = json.loads(config.read_text())["guidance"]
    assert (guidance["fp16"], guidance["bf16"]) == (False, False)
    last = torch.load(workspace / "descriptor" / "checkpoints" / "last.pt", weights_only=True)
    assert (last["step"], last["skipped_updates"]) == (52, 50)  # no update skipped since
    log = workspace / "descriptor" / "log.jsonl"
    final = json.loads(log.read_text().splitlines()[-1])
    assert final["step"] == 52 and "loss_scale" not in final, final  # no scaler in float32
    record = json.loads((workspace / "descriptor" / "sentence.json").read_text())
    assert record["descriptor_iters"] == 52


@pytest.mark.parametrize("stage", ["search", "descriptor"])
def test_an_image_run_out_of_gpu_memory_before_text_to_3d_names_its_stages_own_fixes(
    tmp_path, tiny_sd_path, tiny_clip_path, monkeypatch, capsys, stage
):
    """Out of GPU memory in the CLIP sentence search or the descriptor training, `dreamtext
    image` said "run again with --fp16, a smaller --h/--w, --device cpu": text→3D's render
    size, which neither stage uses, and --fp16, which CLIP (float32) ignores. Each names its
    own batch (a key a --config sets), --fp16 where Stable Diffusion runs, and --device cpu."""
    from virtual_cuda import virtual_cuda

    from dreamtext import describe as describe_module
    from dreamtext import descriptor, models

    # Loaded on the virtual GPU: kept out of the models every later test reuses.
    monkeypatch.setattr(models, "_LOADED", {})
    monkeypatch.setattr(models, "_CLIP", {})

    def runs_out(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    if stage == "search":
        monkeypatch.setattr(describe_module.ClipEncoder, "encode_texts", runs_out)
    else:
        monkeypatch.setattr(descriptor.DescriptorTrainer, "train_step", runs_out)
    (tmp_path / "nouns.txt").write_text("cube\nsphere\n")
    (tmp_path / "adjectives.txt").write_text("red\nblue\n")
    config = tmp_path / "batch.yaml"
    config.write_text(yaml.safe_dump({"image_to_3d": {"descriptor": {"batch_size": 2}}}))
    image = _image(tmp_path)
    flags = ["--device", "cuda", "--encoding", "torch", "--no-compile", "--config", str(config)]
    with virtual_cuda():
        code = _cli_image(tmp_path, image, tiny_sd_path, tiny_clip_path, *flags)
    err = capsys.readouterr().err
    assert code == 2, err
    line = err.strip().splitlines()[-1]
    if stage == "search":
        expected = (
            "dreamtext: error: out of GPU memory in the sentence search (CLIP scoring 256 "
            "sentences at a time); free the GPU of other work, or run the same command again "
            "after one of: a smaller image_to_3d.describe.batch_size in a --config, --device cpu"
        )
    else:
        expected = (
            "dreamtext: error: out of GPU memory in the descriptor training (a batch of 2 at "
            "the model's resolution); free the GPU of other work, or run the same command "
            "again after one of: --fp16 (without --fp32), a smaller "
            "image_to_3d.descriptor.batch_size in a --config, --device cpu"
        )
    assert line == expected, err
    assert "--h/--w" not in err and "samples" not in err
    checked = named_fixes_exist(line, ["image", str(image)], tmp_path, tmp_path / "run")
    section = "describe" if stage == "search" else "descriptor"
    assert f"image_to_3d.{section}.batch_size" in checked and "--device" in checked, checked


def test_memory_lines_of_the_stages_before_text_to_3d_offer_what_fits_the_run():
    """A run in fp16 is not told --fp16 again, and its --device cpu comes with --fp32 (the CPU
    refuses half precision); a batch of 1 has no smaller one; the host's memory is told no
    --device cpu (the run is there) and no --fp16 (the GPU's)."""
    from dreamtext.imageto3d import descriptor_memory_line, search_memory_line

    half = resolve_config({"prompt": "a mug", "guidance": {"fp16": True}})
    options = ImageOptions()  # descriptor batch 1, search batch 256
    line = descriptor_memory_line("GPU memory", half, options, "X")
    assert line.endswith("or run X after one of: --device cpu --fp32"), line
    line = descriptor_memory_line("memory", resolve_config({"prompt": "a mug"}), options, "X")
    assert line == (
        "out of memory in the descriptor training (a batch of 1 at the model's resolution); "
        "close other programs, then run X"
    )
    line = search_memory_line("memory", half, options, "X")
    assert line.endswith(
        "close other programs, or run X after one of: a smaller "
        "image_to_3d.describe.batch_size in a --config"
    ), line


def test_a_batch_image_line_out_of_memory_in_its_descriptor_names_its_own_rerun_and_fixes(
    tmp_path, tiny_sd_path, tiny_clip_path, monkeypatch
):
    """A batch's image line out of GPU memory in its descriptor training was told to run its
    command "after one of: a smaller --h/--w, ..., fewer samples (...), a smaller
    render.grad_chunk_points": text→3D's render, which the descriptor does not use. It names
    the descriptor's fixes and its own `dreamtext image IMAGE --workspace W`."""
    from virtual_cuda import virtual_cuda

    from dreamtext import descriptor, models
    from dreamtext.cli import main

    monkeypatch.setattr(models, "_LOADED", {})  # loaded on the virtual GPU: not for later tests
    monkeypatch.setattr(models, "_CLIP", {})

    def runs_out(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(descriptor.DescriptorTrainer, "train_step", runs_out)
    monkeypatch.chdir(tmp_path)
    Path("nouns.txt").write_text("cube\nsphere\n")
    Path("adjectives.txt").write_text("red\nblue\n")
    image = _image(tmp_path)
    Path("list.txt").write_text(f"image:{image.name}\n")
    args = ["batch", "list.txt", "--model", str(tiny_sd_path), "--clip", str(tiny_clip_path)]
    args += ["--nouns", "nouns.txt", "--adjectives", "adjectives.txt", "--max-words", "2"]
    args += ["--descriptor-iters", "2", "--h", "16", "--w", "16", "--no-export"]
    args += ["--device", "cuda", "--encoding", "torch", "--no-compile", "--workspace", "runs"]
    with virtual_cuda():
        assert main(args) == 1
    record = json.loads(Path("runs/batch.jsonl").read_text().splitlines()[-1])
    assert record["error"] == (
        "out of GPU memory in the descriptor training (a batch of 1 at the model's resolution); "
        "free the GPU of other work, or run `dreamtext image red_cube.png --workspace "
        "runs/red_cube` after one of: --fp16 (without --fp32), --device cpu"
    )
    workspace = tmp_path / "runs/red_cube"
    assert named_fixes_exist(record["error"], ["image", str(image)], tmp_path, workspace) == [
        "--fp16",
        "--device",
        "cpu",
    ]


def test_an_image_runs_config_records_the_clip_commit_that_chose_its_sentence(
    tmp_path, tiny_sd_path, monkeypatch
):
    """config.json's ran_on held Stable Diffusion's hub commit (model_revision) but not
    CLIP's: two image runs whose sentences different CLIP commits scored could not be told
    apart by their config.json. It holds the commit sentence.json records (clip_revision)."""
    from tiny_clip import cache_tiny_clip

    commit = cache_tiny_clip(tmp_path, monkeypatch)
    options = _options(tmp_path, "someone/tiny-clip")
    workspace = run_image(_image(tmp_path), options, _config(tmp_path, tiny_sd_path))
    record = json.loads((workspace / "descriptor" / "sentence.json").read_text())
    assert record["ran_on"]["clip_revision"] == commit
    ran_on = json.loads((workspace / "config.json").read_text())["ran_on"]
    assert ran_on["clip_revision"] == commit
    # A text run's records no CLIP: it is not named.
    from dreamtext.trainer import train

    text_cfg = _config(tmp_path, tiny_sd_path, prompt="a red cube", workspace=str(tmp_path / "t"))
    text = json.loads((train(text_cfg) / "config.json").read_text())
    assert "clip_revision" not in text["ran_on"]
