"""Boundaries and records of config resolution, each expected value worked out by hand from the
docstrings and comments of dreamtext/config.py (not read back from its output)."""

import json
import math

import pytest

from dreamtext.config import (
    TrainConfig,
    change_lines,
    config_to_dict,
    read_resumes,
    resolve_config,
    run_setting_changes,
    write_run_config,
)
from dreamtext.errors import DreamtextError

RUN = {"prompt": "a red cube", "workspace": "runs/a_red_cube"}


def test_a_bool_field_refuses_a_string_or_a_number(tmp_path):
    """``export: "no"`` (quoted) was kept as the string "no", which is true."""
    path = tmp_path / "mine.yaml"
    path.write_text('export: "no"\n')
    with pytest.raises(DreamtextError) as raised:
        resolve_config({"prompt": "x"}, config_file=path)
    assert str(raised.value) == f"config field 'export' must be bool, got 'no' (in {path})"
    path.write_text("guidance:\n  fp16: 1\n")
    with pytest.raises(DreamtextError, match=r"config field 'guidance.fp16' must be bool, got 1"):
        resolve_config({"prompt": "x"}, config_file=path)


def test_the_bounds_themselves_are_accepted():
    """Each bound a docstring or message states is inside: albedo_epochs 0 (shading from the
    start), ambient_ratio 1 ([0, 1]), the largest seed --seed takes (2^32 - 1)."""
    assert resolve_config({"prompt": "x", "albedo_epochs": 0}).albedo_epochs == 0
    assert resolve_config({"prompt": "x", "ambient_ratio": 1.0}).ambient_ratio == 1.0
    assert resolve_config({"prompt": "x", "seed": 2**32 - 1}).seed == 4294967295
    with pytest.raises(DreamtextError, match="must be from 0 to 4294967295, got 4294967296"):
        resolve_config({"prompt": "x", "seed": 2**32})


def test_a_t_range_of_one_time_is_refused():
    """``0 ≤ t_min < t_max ≤ 1``: equal ends are no range."""
    with pytest.raises(DreamtextError, match="0 ≤ t_min < t_max ≤ 1"):
        resolve_config({"prompt": "x", "guidance": {"t_range": [0.5, 0.5]}})


def test_shading_probabilities_that_sum_to_0_995_are_refused():
    with pytest.raises(DreamtextError, match="summing to 1"):
        resolve_config({"prompt": "x", "shading_probs": [0.5, 0.3, 0.195]})


def test_a_near_plane_past_the_whole_scene_is_refused_and_one_inside_it_runs(tmp_path):
    """Cameras within radius_range[1] = 1.5 of the centre, a box of bound 1 whose farthest corner
    lies √3 = 1.732 from it: no point of the box is 3.232 or more from any camera. A near plane
    there (render.min_near: 100 once ran to the end with 0 samples a ray) leaves nothing to
    sample; just below it, a ray towards the far corner still samples."""
    path = tmp_path / "far.yaml"
    path.write_text("render:\n  min_near: 3.233\n")
    with pytest.raises(DreamtextError) as raised:
        resolve_config({"prompt": "x", "cameras": {"radius_range": [1.0, 1.5]}}, config_file=path)
    assert str(raised.value) == (
        f"config field 'render.min_near' (in {path}) is 3.233, past the whole scene: every "
        "camera is within 1.5 of its centre, by config field 'cameras.radius_range', and the "
        "field's box reaches 1.73 beyond that (√3 × field.bound), so no "
        "ray would take a sample; make it less than 3.23 (the default is 0.05)"
    )
    cfg = resolve_config(
        {"prompt": "x", "cameras": {"radius_range": [1.0, 1.5]}, "render": {"min_near": 3.23}}
    )
    assert cfg.render.min_near == 3.23


def test_a_near_plane_exactly_at_the_scenes_far_end_is_refused():
    """At 1.5 + √3 (cameras within 1.5, a box of bound 1) a ray's far end is at most its near
    plane: no sample. The line says "make it less than", so that value is refused too."""
    with pytest.raises(DreamtextError, match="past the whole scene"):
        resolve_config(
            {
                "prompt": "x",
                "cameras": {"radius_range": [1.0, 1.5]},
                "render": {"min_near": 1.5 + math.sqrt(3.0)},
            }
        )


def test_the_largest_lr_counts_the_hash_tables_lr_scale():
    """Adam's first step is 10 lr, the hash table's 10 lr × encoding_lr_scale: with the scale
    10, float32's 3.4e38 allows lr up to 3.4e36, so 1e37 is refused; with the scale 1, 1e37 is
    below 3.4e37 and runs."""
    with pytest.raises(DreamtextError, match="too large"):
        resolve_config({"prompt": "x", "lr": 1e37, "field": {"encoding_lr_scale": 10.0}})
    assert resolve_config({"prompt": "x", "lr": 1e37, "field": {"encoding_lr_scale": 1.0}}).lr


def test_a_builtin_model_from_the_last_config_file_pulls_in_its_preset(tmp_path):
    """Of two config files naming a model the last counts, as for any setting; the built-in
    prior's preset (32 px) goes under it."""
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("guidance:\n  model: some/other-model\n")
    second.write_text("guidance:\n  model: builtin:shapes\n")
    cfg = resolve_config(dict(RUN), config_file=[first, second])
    assert cfg.guidance.model == "builtin:shapes"
    assert (cfg.h, cfg.w, cfg.presets) == (32, 32, ("builtin-shapes",))


def test_a_preset_given_again_on_a_resume_is_recorded_where_it_applied_last():
    """A run built on builtin-shapes then fitfusion, resumed with --preset builtin-shapes: that
    preset applied over the run's record (32 px), so it is the last of the record."""
    built = resolve_config({**RUN, "guidance": {"model": "builtin:shapes"}}, preset="fitfusion")
    assert built.presets == ("builtin-shapes", "fitfusion")
    again = resolve_config({}, preset="builtin-shapes", base=config_to_dict(built))
    assert again.h == 32
    assert again.presets == ("fitfusion", "builtin-shapes")


def test_an_export_option_refusal_names_the_config_file_not_the_builtin_preset(tmp_path):
    """The built-in prior's preset sets export_options too; the bad value is the file's."""
    path = tmp_path / "mine.yaml"
    path.write_text("export_options:\n  resolution: 4\n")
    with pytest.raises(DreamtextError) as raised:
        resolve_config({**RUN, "guidance": {"model": "builtin:shapes"}}, config_file=path)
    assert str(raised.value) == (
        f"config field 'export_options.resolution' (in {path}) must be at least 8"
    )


def _older(cfg: TrainConfig, drop: list[tuple[str, ...]]) -> dict:
    saved = config_to_dict(cfg)
    saved.pop("presets")
    for *sections, key in drop:
        section = saved
        for part in sections:
            section = section[part]
        del section[key]
    return saved


def test_a_run_from_before_the_sampler_choice_resumes_with_the_dense_sampler():
    """A config.json without render.sampler is of a run the dense sampler rendered (the
    default now is the occupancy marcher), whatever its presets."""
    assert TrainConfig().render.sampler == "occupancy"
    saved = {**_older(resolve_config(dict(RUN)), [("render", "sampler")]), "presets": []}
    assert resolve_config({}, base=saved).render.sampler == "dense"


def test_the_line_of_an_older_config_json_names_settings_not_the_presets_record(capsys):
    saved = _older(resolve_config(dict(RUN)), [("light_jitter",)])
    resolve_config({}, base=saved)
    err = capsys.readouterr().err
    assert "has no light_jitter and does not say" in err
    assert "presets" not in err


def test_a_changed_value_is_cut_past_40_characters_only():
    exactly = "a" * 38  # 40 characters as JSON, with its quotes
    longer = "a" * 39
    assert change_lines({"prompt": [exactly, "b"]}) == [f'prompt "{exactly}" → "b"']
    assert change_lines({"prompt": [longer, "b"]}) == [f'prompt "{"a" * 38}… → "b"']


def test_a_finished_runs_length_and_its_learned_tokens_are_no_change_to_warn_of(tmp_path):
    """NOT_COMPARED holds ``iters``: a finished run asked for more steps resumes; an image run's
    own learned tokens are left out when ``learned``."""
    ran = TrainConfig(prompt="a mug", iters=1000)
    ran.guidance.textual_inversion = "/old/descriptor/learned_embeds.safetensors"
    write_run_config(tmp_path, ran)
    now = TrainConfig(prompt="a mug", iters=2000, log_every=5)
    now.guidance.textual_inversion = "/new/descriptor/learned_embeds.safetensors"
    assert run_setting_changes(tmp_path, now, learned=True) == []
    lines = run_setting_changes(tmp_path, now, learned=False)
    assert len(lines) == 1 and lines[0].startswith('guidance.textual_inversion "/old/desc')
    now.lr = 2e-3
    assert run_setting_changes(tmp_path, now, learned=True) == ["lr 0.001 → 0.002"]


def test_an_older_runs_missing_setting_is_named_as_the_change_its_resume_makes(tmp_path):
    """A run of an older dreamtext, from before ``presets`` and ``guidance.views.below`` were
    recorded, had no views from below (``BEFORE_SETTINGS``): its resume takes them from here on
    and records ``guidance.views.below [null, 90.0]``, but a batch's warning of the settings it
    changes compared only those config.json has, and left that one out."""
    now = resolve_config({**RUN, "guidance": {"model": "builtin:shapes"}})
    assert now.guidance.views.below == 90.0  # the builtin-shapes preset's
    old = config_to_dict(now)
    del old["presets"], old["guidance"]["views"]["below"]
    (tmp_path / "config.json").write_text(json.dumps(old))
    assert run_setting_changes(tmp_path, now, learned=False) == ["guidance.views.below null → 90.0"]


def test_resumes_that_are_not_a_list_read_as_none(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"resumes": {"step": 5}}))
    assert read_resumes(tmp_path) == []


def test_an_export_option_refusal_names_the_config_file_that_set_it(tmp_path):
    """Of two --config files with export_options, the refusal named the last one, which did not
    set the bad value (the field's refusal named the right one)."""
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("export_options:\n  resolution: 4\n")
    second.write_text("export_options:\n  video_size: 64\n")
    with pytest.raises(DreamtextError) as refusal:
        resolve_config({"prompt": "a red cube"}, config_file=[first, second])
    assert str(refusal.value) == (
        f"config field 'export_options.resolution' (in {first}) must be at least 8"
    )


@pytest.mark.parametrize(("preset", "epochs"), [("stable-dreamfusion", 100), ("fitfusion", 200)])
def test_an_epoch_is_a_hundred_iterations_as_table_5_1_counts_them(preset, epochs):
    """Table 5.1 counts epochs (Stable DreamFusion 100, FitFusion 200); the presets give
    iterations, 10,000 and 20,000 (their comments): an epoch is 100 iterations, and so the
    default 10 albedo-only epochs (ch. 6.1.4) are steps 1 to 1,000."""
    import torch

    from dreamtext.trainer import shading_for_step

    cfg = resolve_config({"prompt": "x"}, preset=preset)
    assert cfg.iters == epochs * 100
    cfg.shading_probs = (0.0, 1.0, 0.0)  # after the albedo epochs: textureless only
    rng = torch.Generator().manual_seed(0)
    assert shading_for_step(1000, cfg, rng) == "albedo"
    assert shading_for_step(1001, cfg, rng) == "textureless"


def test_ten_million_iterations_are_taken_and_one_more_refused():
    """``iters`` must be at most 10,000,000 (500 × FitFusion's 20,000): the bound is inside."""
    assert resolve_config({"prompt": "x", "iters": 10_000_000}).iters == 10_000_000
    with pytest.raises(DreamtextError, match="at most 10,000,000"):
        resolve_config({"prompt": "x", "iters": 10_000_001})


def test_a_learning_rate_of_zero_is_refused():
    """An lr of 0 trains nothing: ``lr`` must be positive."""
    with pytest.raises(DreamtextError, match="--lr must be positive, got 0"):
        resolve_config({"prompt": "x", "lr": 0.0})


def test_the_ends_of_the_closed_ranges_are_accepted():
    """``0 ≤ t_min < t_max ≤ 1``, ambient_ratio in [0, 1], weights ≥ 0, box_fraction in [0, 1],
    a polar angle in [0°, 180°]: each closed end is a value a run may have."""
    cfg = resolve_config(
        {
            "prompt": "x",
            "ambient_ratio": 0.0,
            "light_jitter": 0.0,
            "lambda_entropy": 0.0,
            "lambda_orientation": 0.0,
            "guidance": {"t_range": [0.0, 1.0]},
            "cameras": {"box_fraction": 1.0, "polar_range": [0.0, 180.0]},
        }
    )
    assert cfg.guidance.t_range == (0.0, 1.0)
    assert (cfg.ambient_ratio, cfg.light_jitter, cfg.lambda_entropy) == (0.0, 0.0, 0.0)
    assert cfg.cameras.box_fraction == 1.0
    assert cfg.cameras.polar_range == (0.0, 180.0)


@pytest.mark.parametrize(
    ("cameras", "bound"),
    [({"radius_range": [0.0, 1.5]}, r"\(0, inf\)"), ({"fovy_range": [20.0, 180.0]}, r"\(0, 180\)")],
)
def test_the_ends_of_the_open_ranges_are_refused(cameras, bound):
    """A radius above 0 and a field of view in (0°, 180°): 0 and 180 themselves are no camera."""
    with pytest.raises(DreamtextError, match=bound):
        resolve_config({"prompt": "x", "cameras": cameras})


def test_a_whole_number_too_large_for_a_float_is_one_line_naming_its_file(tmp_path):
    """YAML reads ``lr: 1`` and 400 zeros as an int, which no float holds: math.isfinite raised
    OverflowError (a traceback, exit 1) where ``1e400`` got this line."""
    path = tmp_path / "huge.yaml"
    for sign in ("", "-"):  # the sign is no digit
        path.write_text(f"lr: {sign}1" + "0" * 400 + "\n")
        with pytest.raises(DreamtextError) as refusal:
            resolve_config(dict(RUN), config_file=[path])
        assert str(refusal.value) == (
            f"config field 'lr' must be a finite number, got a whole number of 401 digits "
            f"(in {path})"
        )


def test_the_file_of_a_setting_two_levels_deep_follows_its_whole_name(tmp_path):
    """``(in FILE)`` went after ``guidance.views``, inside the setting's name."""
    path = tmp_path / "mine.yaml"
    path.write_text("guidance:\n  views:\n    below: 200.0\n")
    with pytest.raises(DreamtextError) as refusal:
        resolve_config(dict(RUN), config_file=[path])
    assert str(refusal.value).startswith(f"guidance.views.below (in {path}) must be a polar angle")


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ("bound: 1.0e+30", "× config field 'field.bound' (in {path}) (2048 × 1e+30)"),
        ("finest_resolution_factor: 1.0e+30", "'field.finest_resolution_factor' (in {path}) ×"),
    ],
)
def test_a_hash_grid_finer_than_float32_positions_is_one_line_naming_its_file(
    tmp_path, section, named
):
    """``field.bound: 1e30`` (or such a finest_resolution_factor) passed validation and was a
    traceback (``Overflow when unpacking long long``) once the run had started; 2^24 cells an
    axis, what float32 positions tell apart, are taken."""
    path = tmp_path / "fine.yaml"
    path.write_text(f"field:\n  {section}\n")
    with pytest.raises(DreamtextError) as refusal:
        resolve_config(dict(RUN), config_file=[path])
    assert str(refusal.value).startswith("the finest hash-grid resolution, config field ")
    assert named.format(path=path) in str(refusal.value)
    assert "must be at most 16,777,216 (2^24" in str(refusal.value)
    path.write_text("field:\n  finest_resolution_factor: 8388608.0\n  bound: 2.0\n")
    assert resolve_config(dict(RUN), config_file=[path]).field.bound == 2.0


def test_a_count_past_64_bits_is_one_line_naming_its_file(tmp_path):
    """``render.num_steps: 1`` and 30 zeros, a YAML int, passed validation and was a traceback in
    torch (``Overflow when unpacking long long``) once the run had started."""
    path = tmp_path / "steps.yaml"
    path.write_text(f"render:\n  num_steps: 1{'0' * 30}\n")
    with pytest.raises(DreamtextError) as refusal:
        resolve_config(dict(RUN), config_file=[path])
    assert str(refusal.value) == (
        f"config field 'render.num_steps' (in {path}) must fit a 64-bit integer "
        "(±9,223,372,036,854,775,807), got a whole number of 31 digits"
    )
    path.write_text(f"render:\n  chunk_points: {2**63 - 1}\n")
    assert resolve_config(dict(RUN), config_file=[path]).render.chunk_points == 2**63 - 1


def test_an_empty_model_in_a_config_file_is_refused_naming_its_file(tmp_path):
    """``guidance: {model: ""}`` became the current folder (``Path("")``), refused once torch had
    loaded as "/the/current/folder is not a diffusers Stable Diffusion folder ... pass one with
    --model": a folder the user never named. ``--model ""`` is refused as empty."""
    path = tmp_path / "model.yaml"
    path.write_text('guidance:\n  model: ""\n')
    with pytest.raises(DreamtextError) as refusal:
        resolve_config(dict(RUN), config_file=[path])
    assert str(refusal.value) == (
        f"config field 'guidance.model' (in {path}) is empty; give it a model id or folder"
    )


def test_an_empty_list_of_export_formats_is_said_to_be_empty(tmp_path):
    """``export_options: {formats: []}`` was "has unknown formats (none)", as --formats '' is
    "is empty"."""
    path = tmp_path / "formats.yaml"
    path.write_text("export_options:\n  formats: []\n")
    with pytest.raises(DreamtextError) as refusal:
        resolve_config(dict(RUN), config_file=[path])
    assert str(refusal.value) == (
        f"config field 'export_options.formats' (in {path}) is empty: name formats, e.g. [glb, ply]"
    )


def test_a_negative_learning_rate_scale_of_the_hash_table_is_refused_naming_its_file(tmp_path):
    """``field: {encoding_lr_scale: -1}`` trained: Adam checks its default lr, not a group's, so
    the hash table climbed the loss without a word (a negative regulariser weight is refused
    for the same reason). 0, a table that does not train, is taken."""
    path = tmp_path / "scale.yaml"
    path.write_text("field:\n  encoding_lr_scale: -1.0\n")
    with pytest.raises(DreamtextError) as refusal:
        resolve_config(dict(RUN), config_file=[path])
    assert str(refusal.value).startswith(
        f"field.encoding_lr_scale (in {path}) must be ≥ 0 (the hash table trains at lr × it"
    )
    assert str(refusal.value).endswith("got -1")
    path.write_text("field:\n  encoding_lr_scale: 0.0\n")
    assert resolve_config(dict(RUN), config_file=[path]).field.encoding_lr_scale == 0.0


def test_a_refusal_of_two_settings_names_the_file_of_each(tmp_path):
    """`field: {base_resolution: 100000}` in a file, over the built-in preset's finest factor,
    was blamed on the preset alone: only the first setting a message named got its file."""
    path = tmp_path / "base.yaml"
    path.write_text("field:\n  base_resolution: 100000\n")
    with pytest.raises(DreamtextError) as refusal:
        resolve_config({**RUN, "presets": []}, preset="builtin-shapes", config_file=[path])
    assert str(refusal.value) == (
        "field.finest_resolution_factor (in preset 'builtin-shapes') × field.bound (the finest "
        "hash-grid resolution, 256 × 1) must be at least field.base_resolution (in "
        f"{path}) (100000)"
    )
