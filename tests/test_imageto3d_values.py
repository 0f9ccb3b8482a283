"""Value tests of the image→3D stages' choices (mutation round 67P): whether the descriptor
trains, and to which step, from what the workspace holds."""

import json

import pytest

from dreamtext.imageto3d import descriptor_plan, image_run_fixed, unread_words


def _record(workspace, **record):
    folder = workspace / "descriptor"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sentence.json").write_text(json.dumps(record))


def test_a_trained_record_whose_learned_file_is_gone_trains_the_descriptor_again(tmp_path):
    """sentence.json says trained, but learned_embeds.safetensors was deleted: reusing it would
    start text→3D on a file that is not there."""
    _record(tmp_path, sentence="An image of a cube", trained_sentence="t", descriptor_iters=4)
    assert descriptor_plan(tmp_path, 4, overwrite=False) == (True, 4)
    (tmp_path / "descriptor" / "learned_embeds.safetensors").write_bytes(b"")
    assert descriptor_plan(tmp_path, 4, overwrite=False) == (False, 4)
    assert descriptor_plan(tmp_path, 2, overwrite=False) == (False, 4)  # fewer: kept at 4


def test_an_overwrite_of_a_finished_run_checks_the_text_stage_before_it_writes(
    tmp_path, monkeypatch
):
    """``--overwrite`` trains text→3D again: its settings (memory, model, encoding) must be
    checked before the old run is removed, finished or not."""
    from dreamtext import imageto3d

    _record(tmp_path, sentence="An image of a cube")  # the search is done: CLIP is not asked
    # and the descriptor trained: its token is not checked again
    (tmp_path / "descriptor" / "learned_embeds.safetensors").write_bytes(b"")
    checked = []
    monkeypatch.setattr(imageto3d, "_text_stage_done", lambda workspace, cfg: True)
    monkeypatch.setattr(
        imageto3d, "check_text_stage", lambda cfg, device, resume: checked.append(resume)
    )
    # The texts' lengths, read with the model's tokenizer, are its own check's (no config here).
    monkeypatch.setattr(imageto3d, "check_lengths_first", lambda *args: None)
    options = imageto3d.ImageOptions()
    imageto3d.check_stages(tmp_path, None, options, "cpu", overwrite=False)
    assert checked == []
    imageto3d.check_stages(tmp_path, None, options, "cpu", overwrite=True)
    assert checked == [False]


def test_a_text_stage_that_goes_on_from_its_checkpoint_is_checked_as_a_resume(
    tmp_path, monkeypatch
):
    """`dreamtext image` again on a run whose text→3D stage has a checkpoint resumes it, with
    its field: a field too large for the memory was told to lower field.log2_hashmap_size,
    which the resume then refused to change. Without a checkpoint, or with --overwrite, the
    stage starts afresh and may lower it."""
    from dreamtext import imageto3d

    _record(tmp_path, sentence="An image of a cube")
    (tmp_path / "descriptor" / "learned_embeds.safetensors").write_bytes(b"")
    checked = []
    monkeypatch.setattr(imageto3d, "_text_stage_done", lambda workspace, cfg: False)
    monkeypatch.setattr(
        imageto3d, "check_text_stage", lambda cfg, device, resume: checked.append(resume)
    )
    # The texts' lengths, read with the model's tokenizer, are its own check's (no config here).
    monkeypatch.setattr(imageto3d, "check_lengths_first", lambda *args: None)
    options = imageto3d.ImageOptions()
    imageto3d.check_stages(tmp_path, None, options, "cpu", overwrite=False)
    monkeypatch.setattr(imageto3d, "can_resume", lambda workspace: True)
    imageto3d.check_stages(tmp_path, None, options, "cpu", overwrite=False)
    imageto3d.check_stages(tmp_path, None, options, "cpu", overwrite=True)
    assert checked == [False, True, False]


def test_an_overwrite_of_a_finished_run_trains_text_to_3d_again(
    tmp_path, tiny_sd_path, monkeypatch
):
    """``--overwrite`` removes the finished run and trains text→3D from scratch: it must not
    then "reuse" the checkpoint it has just removed."""
    from test_imageto3d import _config, _fail, _finished_workspace

    from dreamtext import imageto3d

    image, _ = _finished_workspace(tmp_path, iters=2)
    trained = []
    monkeypatch.setattr(imageto3d, "check_text_stage", lambda cfg, device, resume: None)
    monkeypatch.setattr(imageto3d, "train_descriptor", _fail)
    monkeypatch.setattr("dreamtext.trainer.train", lambda cfg, **kw: trained.append(kw))
    imageto3d.run_image(image, None, _config(tmp_path, tiny_sd_path), overwrite=True)
    assert trained == [
        {
            "resume": False,
            "resume_with": imageto3d.IMAGE_RESUME,
            "start_again": imageto3d.OVERWRITE_SAME_SEED,
            "resume_changed": None,  # as resume_with
        }
    ]


def test_more_descriptor_steps_without_its_checkpoint_is_refused(tmp_path):
    """Trained to step 2, asked for 4, but descriptor/checkpoints/last.pt is gone: there is
    nothing to train on from, and a descriptor trained from scratch is another one."""
    import pytest

    from dreamtext.errors import DreamtextError

    _record(tmp_path, sentence="An image of a cube", trained_sentence="t", descriptor_iters=2)
    (tmp_path / "descriptor" / "learned_embeds.safetensors").write_bytes(b"")
    with pytest.raises(DreamtextError, match=r"has no checkpoint .* to train on from step 2"):
        descriptor_plan(tmp_path, 4, overwrite=False)


def test_diverse_prefers_the_new_folder_of_its_prompt_to_an_ascii_one_of_before(
    tmp_path, monkeypatch
):
    """Both ``workspace/café_seed…`` (letters kept) and the ASCII folder of earlier versions
    exist: the run continues in the new one, the one it wrote last."""
    import dreamtext.imageto3d as imageto3d
    from dreamtext.config import resolve_config

    monkeypatch.setattr(imageto3d, "DEFAULT_WORKSPACE_ROOT", tmp_path)
    cfg = resolve_config({"prompt": "un café rouge", "seed": 3})
    cfg.workspace = ""
    folder, legacy, _ = imageto3d._slug_folders(cfg.prompt, "_diverse_seed3")
    assert folder != legacy
    legacy.mkdir()
    (legacy / "config.json").write_text(json.dumps({"diverse": {"prompt": "un café rouge"}}))
    assert imageto3d.diverse_workspace(cfg, named=False) == str(legacy)
    folder.mkdir()
    assert imageto3d.diverse_workspace(cfg, named=False) == str(folder)


def test_diverse_finds_its_run_in_the_folder_a_slug_cut_inside_a_letter_named(
    tmp_path, monkeypatch
):
    """A long prompt whose 60-character cut fell inside its last letter (``…ते`` cut to ``…त``)
    ran ``--diverse`` in ``workspace/…त_diverse_seed2`` before cuts kept letters whole: the rerun
    continues there, and a text run found in the old ``workspace/…त`` (the default workspace of
    the prompt) does not make ``--diverse`` train in the text run's folder."""
    import dreamtext.imageto3d as imageto3d
    from dreamtext.config import resolve_config

    monkeypatch.setattr(imageto3d, "DEFAULT_WORKSPACE_ROOT", tmp_path)
    prompt = "a" * 59 + "ते"
    cfg = resolve_config({"prompt": prompt, "seed": 2})
    old_text_run = tmp_path / ("a" * 59 + "त")
    cfg.workspace = str(old_text_run)
    new = tmp_path / ("a" * 59 + "_diverse_seed2")
    assert imageto3d.diverse_workspace(cfg, named=False) == str(new)
    old = tmp_path / ("a" * 59 + "त_diverse_seed2")
    old.mkdir()
    (old / "config.json").write_text(
        json.dumps({"diverse": {"prompt": prompt, "seed": 2}}), encoding="utf-8"
    )
    assert imageto3d.diverse_workspace(cfg, named=False) == str(old)
    assert imageto3d.diverse_workspace(cfg, named=True) == str(old_text_run)


def test_a_descriptor_stopped_exactly_at_the_steps_asked_gets_no_past_note(tmp_path, capsys):
    """A checkpoint at step 3 with --descriptor-iters 3 is not "past" it: the training ends at
    3 without a note; at --descriptor-iters 2 it is kept at 3, with the note."""
    from dreamtext.descriptor import _atomic_torch_save
    from dreamtext.imageto3d import _past_stop

    checkpoint = tmp_path / "descriptor" / "checkpoints" / "last.pt"
    checkpoint.parent.mkdir(parents=True)
    _atomic_torch_save({"step": 3}, checkpoint)
    assert _past_stop(tmp_path, 3) == 3
    assert "past" not in capsys.readouterr().err
    assert _past_stop(tmp_path, 2) == 3
    assert "stopped at step 3 already, past --descriptor-iters 2" in capsys.readouterr().err


def test_a_words_file_no_stage_reads_is_named_on_a_diverse_rerun_too(tmp_path):
    """``text P --diverse`` sampled its image with file A (recorded in the diverse section); the
    same command with file B reuses that image and reads B in no stage: B is named, as for an
    image run. The file the sample read, and a run's own learned file, are not."""
    from dreamtext.config import resolve_config

    a, b = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    own = str(tmp_path / "run" / "descriptor" / "learned_embeds.safetensors")

    def cfg(words):
        return resolve_config(
            {"prompt": "a photo of <my-cat>", "guidance": {"textual_inversion": words}}
        )

    sampled_with_a = {"diverse": {"textual_inversion": a}}
    assert unread_words(cfg(a), sampled_with_a) is None
    assert unread_words(cfg(b), sampled_with_a) == b
    assert unread_words(cfg(b), {"diverse": {"textual_inversion": None}}) == b
    assert unread_words(cfg(b), None) == b
    assert unread_words(cfg(own), None) is None
    assert unread_words(cfg(None), sampled_with_a) is None


def _run_with_sections(tmp_path, sections, record=None):
    """A workspace whose config.json holds ``sections`` (and sentence.json ``record``)."""
    workspace = tmp_path / "run"
    workspace.mkdir()
    (workspace / "config.json").write_text(json.dumps(sections))
    if record is not None:
        (workspace / "descriptor").mkdir()
        (workspace / "descriptor" / "sentence.json").write_text(json.dumps(record))
    return workspace


def test_image_options_layer_the_run_then_config_files_then_flags(tmp_path):
    """The defaults, the run's config.json, each --config file over the one before, then the
    flags: each layer wins over the one before for what it names and leaves the rest."""
    from pathlib import Path

    from dreamtext.imageto3d import resolve_image_options

    run = {
        "image_to_3d": {
            "describe": {"max_words": 4, "noun": "chair", "nouns": "/w/nouns.txt"},
            "descriptor": {"iters": 9, "lr": 0.01, "seed": 3},
        },
        "diverse": {"sample_steps": 20, "sample_guidance_scale": 5.0, "seed": 8},
    }
    workspace = _run_with_sections(tmp_path, run)
    first = {"image_to_3d": {"descriptor": {"iters": 5, "seed": 4}}, "diverse": {"sample_steps": 7}}
    second = {"image_to_3d": {"descriptor": {"iters": 6}}}
    flags = {
        "configs": [("a.json", first), ("b.json", second)],
        "describe": {"max_words": 3},
        "descriptor": {"iters": 11},
    }
    options = resolve_image_options(flags, workspace)
    assert (options.describe.max_words, options.describe.noun) == (3, "chair")
    assert options.describe.nouns == Path("/w/nouns.txt")
    descriptor = options.descriptor
    assert (descriptor.iters, descriptor.lr, descriptor.seed) == (11, 0.01, 4)
    assert (options.sample_steps, options.sample_guidance_scale) == (7, 5.0)
    without_flags = resolve_image_options({"configs": flags["configs"]}, workspace)
    assert without_flags.descriptor.iters == 6


def test_a_finished_describe_keeps_the_options_it_ran_with_over_flags_and_files(tmp_path):
    """sentence.json's options are the describe stage's once it is done: the stage is reused."""
    from dreamtext.imageto3d import resolve_image_options

    run = {"image_to_3d": {"describe": {"max_words": 4}, "descriptor": {"iters": 9}}}
    record = {"options": {"max_words": 2, "noun": "mug"}}
    workspace = _run_with_sections(tmp_path, run, record)
    configs = [("a.json", {"image_to_3d": {"describe": {"max_words": 6, "noun": "cube"}}})]
    flags = {"configs": configs, "describe": {"max_words": 5, "noun": "vase"}, "descriptor": {}}
    options = resolve_image_options(flags, workspace)
    assert (options.describe.max_words, options.describe.noun) == (2, "mug")
    assert options.descriptor.iters == 9


def test_a_run_from_before_the_stage_sections_starts_from_its_records_steps(tmp_path):
    """No image_to_3d section: sentence.json's integer step count is the base; a boolean
    (``true``) is no step count and leaves the default."""
    from dreamtext.imageto3d import resolve_image_options

    workspace = _run_with_sections(tmp_path, {}, {"descriptor_iters": 7})
    assert resolve_image_options({}, workspace).descriptor.iters == 7
    (workspace / "descriptor" / "sentence.json").write_text(json.dumps({"descriptor_iters": True}))
    assert resolve_image_options({}, workspace).descriptor.iters == 10_000


@pytest.mark.parametrize(
    ("section", "line"),
    [
        (
            {"image_to_3d": {"descriptor": {"iters": -1}}},
            "image_to_3d.descriptor.iters in a.yaml must be from 0 to 10,000,000, got -1",
        ),
        (
            {"image_to_3d": {"descriptor": {"iters": 20_000_000}}},
            "image_to_3d.descriptor.iters in a.yaml must be from 0 to 10,000,000, got 20000000",
        ),
        (
            {"image_to_3d": {"descriptor": {"batch_size": 0}}},
            "image_to_3d.descriptor.batch_size in a.yaml must be 1 or more, got 0",
        ),
        (
            {"image_to_3d": {"describe": {"batch_size": 0}}},
            "image_to_3d.describe.batch_size in a.yaml must be 1 or more, got 0",
        ),
        (
            {"image_to_3d": {"describe": {"max_words": -1}}},
            "image_to_3d.describe.max_words in a.yaml must be 0 or more, got -1",
        ),
        (
            {"image_to_3d": {"descriptor": {"lr": 0.0}}},
            "image_to_3d.descriptor.lr in a.yaml must be above 0, got 0.0",
        ),
        (
            {"image_to_3d": {"descriptor": {"lr": 1e38}}},
            "image_to_3d.descriptor.lr in a.yaml must be at most 3.4e+37 (Adam's first step, "
            "10 × lr, must fit float32), got 1e+38",
        ),
        (
            {"image_to_3d": {"descriptor": {"log_every": -1}}},
            "image_to_3d.descriptor.log_every in a.yaml must be 0 or more, got -1",
        ),
        (
            {"image_to_3d": {"descriptor": {"augment": {"flip_p": 1.5}}}},
            "image_to_3d.descriptor.augment.flip_p in a.yaml must be from 0 to 1, got 1.5",
        ),
        (
            {"image_to_3d": {"descriptor": {"augment": {"jitter": 0.6}}}},
            "image_to_3d.descriptor.augment.jitter in a.yaml must be from 0 to 0.5, got 0.6",
        ),
        (
            {"image_to_3d": {"descriptor": {"augment": {"blur_kernel": 4}}}},
            "image_to_3d.descriptor.augment.blur_kernel in a.yaml must be odd, got 4",
        ),
        (
            {"image_to_3d": {"descriptor": {"augment": {"blur_sigma": [2.0, 0.1]}}}},
            "image_to_3d.descriptor.augment.blur_sigma in a.yaml must be [low, high] with low ≤ "
            "high, got [2.0, 0.1]",
        ),
        (
            {"diverse": {"sample_steps": 0}},
            "diverse.sample_steps in a.yaml must be 1 or more, got 0",
        ),
        (
            {"image_to_3d": {"descriptor": {"token": ""}}},
            "image_to_3d.descriptor.token in a.yaml must be one word without spaces (the default "
            "is '<descriptor>'), got ''",
        ),
        (
            {"image_to_3d": {"descriptor": {"token": "<my token>"}}},
            "image_to_3d.descriptor.token in a.yaml must be one word without spaces (the default "
            "is '<descriptor>'), got '<my token>'",
        ),
        (
            {"image_to_3d": {"descriptor": {"token": "<my\ttoken>"}}},
            "image_to_3d.descriptor.token in a.yaml must be one word without spaces (the default "
            "is '<descriptor>'), got '<my\\ttoken>'",
        ),
    ],
)
def test_image_options_out_of_range_in_a_config_file_are_refused_naming_the_key(
    tmp_path, section, line
):
    """Only their types were checked: a descriptor batch of 0 or a describe batch of 0 was a
    traceback after the sentence search, `iters: -1` was refused after it as --descriptor-iters
    (a flag not given), 20,000,000 steps passed --descriptor-iters' cap, `sample_steps: 0` was
    a traceback in the sampler; each was recorded in config.json for the next run. An empty
    descriptor token trained, then text→3D wrote its vectors between every two characters of the
    prompt and refused it as "550 tokens"."""
    from dreamtext.errors import DreamtextError
    from dreamtext.imageto3d import resolve_image_options

    workspace = _run_with_sections(tmp_path, {})
    with pytest.raises(DreamtextError) as refused:
        resolve_image_options({"configs": [("a.yaml", section)]}, workspace)
    assert str(refused.value) == line


def test_a_bad_image_option_a_later_layer_replaces_is_not_refused_and_one_kept_names_its_file(
    tmp_path,
):
    """The value checked is the one the run uses, named after the layer that set it last."""
    from dreamtext.errors import DreamtextError
    from dreamtext.imageto3d import resolve_image_options

    run = {"image_to_3d": {"descriptor": {"iters": -1, "batch_size": 0}}}
    workspace = _run_with_sections(tmp_path, run)
    flags = {"configs": [("a.yaml", {"image_to_3d": {"descriptor": {"batch_size": 2}}})]}
    options = resolve_image_options({**flags, "descriptor": {"iters": 3}}, workspace)
    assert (options.descriptor.iters, options.descriptor.batch_size) == (3, 2)
    # 0 turns the descriptor's log lines, checkpoints and previews off: taken.
    off = {"log_every": 0, "checkpoint_every": 0, "preview_every": 0}
    layers = {"configs": [("b.yaml", {"image_to_3d": {"descriptor": {**off, "batch_size": 1}}})]}
    options = resolve_image_options({**layers, "descriptor": {"iters": 3}}, workspace)
    assert options.descriptor.log_every == 0
    with pytest.raises(DreamtextError, match=r"iters in .*config\.json must be from 0"):
        resolve_image_options(flags, workspace)


def test_a_noun_typed_with_other_spacing_is_the_same_noun_not_an_ignored_flag(tmp_path):
    """`describe IMG --noun "coffee   mug"`, then `image IMG --noun "coffee mug"`: the search
    used "coffee mug" both times, but the rerun named --noun as ignored (the record kept the
    spaces as typed); sentence.json records the words as the search read them."""
    from dreamtext.describe import DescribeOptions, used_options
    from dreamtext.imageto3d import ignored_flags

    recorded = used_options(DescribeOptions(noun="coffee   mug", quantifier=" a  few"))
    assert (recorded["noun"], recorded["quantifier"]) == ("coffee mug", "a few")
    _record(tmp_path, options={"noun": "coffee   mug", "quantifier": "a  few"})  # an older one
    assert ignored_flags(tmp_path, {"noun": "coffee mug", "quantifier": "a few"}) == []
    assert ignored_flags(tmp_path, {"noun": " tea  mug"}) == [
        "--noun tea mug (the run's: coffee mug)"
    ]


def test_image_run_fixed_frees_the_field_but_keeps_the_seed_that_trained_the_descriptor(tmp_path):
    """A resumed image run keeps seed, field and grid (resolve_config's defaults, ``{}``); with
    ``--overwrite``, or before text→3D has a checkpoint, only the seed is kept, where the
    descriptor has learned words or a checkpoint. Before that (stopped in describe, killed
    before the descriptor's first checkpoint) another seed was refused as "the run keeps its
    descriptor, which its seed trained", of a descriptor that did not exist."""
    started = tmp_path / "started"
    (started / "checkpoints").mkdir(parents=True)
    (started / "checkpoints" / "last.pt").write_bytes(b"")
    (started / "descriptor").mkdir()
    (started / "descriptor" / "learned_embeds.safetensors").write_bytes(b"")
    assert image_run_fixed(started, False, "image") == {}
    assert image_run_fixed(started, True, "image") == {
        "fixed": ("seed",),
        "kept": "image --overwrite keeps the run's descriptor, which its seed trained",
    }
    training = tmp_path / "training"
    (training / "descriptor" / "checkpoints").mkdir(parents=True)
    (training / "descriptor" / "checkpoints" / "last.pt").write_bytes(b"")
    assert image_run_fixed(training, False, "image") == {
        "fixed": ("seed",),
        "kept": "the run keeps its descriptor, which its seed trained",
    }
    (training / "descriptor" / "checkpoints" / "last.pt").unlink()
    assert image_run_fixed(training, False, "image") == {"fixed": ()}
    assert image_run_fixed(training, True, "image") == {"fixed": ()}
    assert image_run_fixed(tmp_path / "new", False, "image") == {"fixed": ()}


def test_a_word_list_edited_since_the_reused_search_is_named_among_the_ignored(tmp_path):
    """`image IMG --nouns n.txt` again, n.txt edited since the search found the sentence in it:
    the stage is reused (the edit changes nothing), but the note of ignored flags was silent,
    the path being the same; it names the list, edited since the search."""
    from dreamtext.describe import DescribeOptions, used_options, word_lists_record
    from dreamtext.imageto3d import ignored_flags

    nouns = tmp_path / "n.txt"
    nouns.write_text("mug\nbox\n")
    options = DescribeOptions(nouns=nouns)
    lists = word_lists_record(options, ["mug", "box"], ["red"])
    _record(tmp_path, options=used_options(options), word_lists=lists)
    assert ignored_flags(tmp_path, {"nouns": str(nouns)}) == []
    nouns.write_text("mug\nbox\ncup\n")
    [line] = ignored_flags(tmp_path, {"nouns": str(nouns)})
    assert line.startswith(f"--nouns {nouns.resolve()} (2 words") and "now 3," in line
    assert line.endswith("edited since the search")
    nouns.unlink()  # gone: the reused stage does not read it, and nothing is refused
    assert ignored_flags(tmp_path, {"nouns": str(nouns)}) == []


def test_a_word_list_piped_in_again_is_named_among_the_ignored_only_for_other_words(tmp_path):
    """`image IMG --nouns <(grep ...)` again once its search is done: the note of ignored flags
    named every pipe, as '--nouns /proc/<pid>/fd/pipe:[<inode>] (the run's: /proc/...)', its
    words the same or not. A list piped in again is the list the search read piped in: named
    only where its words differ."""
    import os

    from dreamtext.describe import DescribeOptions, used_options, word_lists_record
    from dreamtext.imageto3d import ignored_flags

    def pipe_of(words):
        read, write = os.pipe()
        os.write(write, ("\n".join(words) + "\n").encode())
        os.close(write)
        return read, f"/dev/fd/{read}"

    first, path = pipe_of(["mug", "box"])
    options = DescribeOptions(nouns=path)
    lists = word_lists_record(options, ["mug", "box"], ["red"])
    _record(tmp_path, options=used_options(options), word_lists=lists)
    os.close(first)
    same, path = pipe_of(["mug", "box"])
    assert ignored_flags(tmp_path, {"nouns": path}) == []
    other, path = pipe_of(["mug", "box", "cup"])
    [line] = ignored_flags(tmp_path, {"nouns": path})
    assert line.startswith("--nouns piped in (2 words") and "now 3," in line
    assert line.endswith("other words than the search read")
    os.close(same)
    os.close(other)


def test_a_word_list_path_that_is_not_there_is_not_taken_for_a_pipe(tmp_path):
    """A path that names nothing (a typo, a list deleted since) is no pipe: taken for one, a
    rerun's `--nouns typo.txt` of a run whose list was piped in read as that list piped in
    again and was named nowhere among the ignored flags, and a deleted list given through a
    linked folder was named as another list than the one (resolved) the search recorded."""
    import os

    from dreamtext.describe import DescribeOptions, used_options, word_lists_record
    from dreamtext.imageto3d import ignored_flags
    from dreamtext.inputs import word_list_path

    missing = tmp_path / "typo.txt"
    assert word_list_path(missing) == (str(missing.resolve()), False)
    read, write = os.pipe()
    os.close(write)
    piped = tmp_path / "piped"
    options = DescribeOptions(nouns=f"/dev/fd/{read}")
    lists = word_lists_record(options, ["mug", "box"], ["red"])
    _record(piped, options=used_options(options), word_lists=lists)
    os.close(read)
    [line] = ignored_flags(piped, {"nouns": str(missing)})
    assert line.startswith(f"--nouns {missing.resolve()} (the run's: ")
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    nouns = real / "n.txt"
    nouns.write_text("mug\nbox\n")
    options = DescribeOptions(nouns=nouns)
    lists = word_lists_record(options, ["mug", "box"], ["red"])
    _record(tmp_path / "file", options=used_options(options), word_lists=lists)
    nouns.unlink()
    assert ignored_flags(tmp_path / "file", {"nouns": str(tmp_path / "link" / "n.txt")}) == []


def test_a_list_piped_in_where_the_search_read_a_file_is_named_among_the_ignored(tmp_path):
    """`image IMG --nouns <(grep ...)` again once a search that read nouns.txt is done: the
    pipe is another list than the one the search read, which the reused stage keeps: the note
    names it with the run's file (it is no edit of that file)."""
    import os

    from dreamtext.describe import DescribeOptions, used_options, word_lists_record
    from dreamtext.imageto3d import ignored_flags

    nouns = tmp_path / "nouns.txt"
    nouns.write_text("mug\nbox\n")
    options = DescribeOptions(nouns=str(nouns))
    _record(
        tmp_path,
        options=used_options(options),
        word_lists=word_lists_record(options, ["mug", "box"], ["red"]),
    )
    read, write = os.pipe()
    os.write(write, b"mug\nbox\ncup\n")
    os.close(write)
    try:
        [line] = ignored_flags(tmp_path, {"nouns": f"/dev/fd/{read}"})
    finally:
        os.close(read)
    assert line == f"--nouns /dev/fd/{read} (the run's: {nouns.resolve()})", line


def test_a_character_device_given_as_a_word_list_is_piped():
    """`--nouns /dev/stdin` typed at a terminal, or any character device: read once, as a
    pipe is, and named as given, not resolved (/dev/stdin resolves to the terminal's
    /dev/pts/N, another at every login)."""
    from dreamtext.inputs import word_list_identity, word_list_path

    assert word_list_path("/dev/null") == ("/dev/null", True)
    assert word_list_identity("/dev/null", ["mug"])["piped"] is True


def test_a_config_file_naming_another_list_over_a_piped_one_is_not_refused(tmp_path):
    """A run whose --nouns was piped in, resumed before its search with a --config file that
    names a list file: that file is read, not the pipe, so the resume is not refused for it;
    without it, the refusal says to pass --nouns again."""
    import os

    from dreamtext.config import TrainConfig
    from dreamtext.describe import DescribeOptions
    from dreamtext.errors import DreamtextError
    from dreamtext.imageto3d import ImageOptions, record_config, resolve_image_options

    image = tmp_path / "mug.png"
    image.write_bytes(b"")
    workspace = tmp_path / "ws"
    workspace.mkdir()
    read, write = os.pipe()
    os.write(write, b"mug\nbox\n")
    os.close(write)
    piped = f"/dev/fd/{read}"
    try:
        options = ImageOptions(describe=DescribeOptions(nouns=piped))
        record_config(workspace, TrainConfig(workspace=str(workspace)), image, options)
    finally:
        os.close(read)
    nouns = tmp_path / "nouns.txt"
    nouns.write_text("mug\nbox\n")
    layer = ("more.yaml", {"image_to_3d": {"describe": {"nouns": str(nouns)}}})
    given = resolve_image_options({"configs": [layer]}, workspace)
    assert given.describe.nouns == nouns
    with pytest.raises(DreamtextError, match=r"--nouns was piped in .* pass --nouns again"):
        resolve_image_options({}, workspace)
    # A --config file of other settings leaves the recorded pipe the list: refused all the same.
    other = ("more.yaml", {"image_to_3d": {"descriptor": {"iters": 5}}})
    with pytest.raises(DreamtextError, match=r"--nouns was piped in .* pass --nouns again"):
        resolve_image_options({"configs": [other]}, workspace)
