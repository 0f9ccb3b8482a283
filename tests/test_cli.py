"""The `dreamtext` command as a user runs it: help, an end-to-end run, and bad input."""

import contextlib
import errno
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_early import refused_without_torch
from tiny_models import TINY_SIZES, TINY_TRAIN

from dreamtext.cli import build_parser, main
from dreamtext.errors import DreamtextError


def run_cli(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "dreamtext.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def tiny_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_TRAIN))
    return path


@pytest.fixture(scope="session")
def tiny_sizes(tmp_path_factory):
    """:data:`TINY_SIZES` as a --config file, outside every test's tmp_path: for built-in runs
    that check a line, a path or a status, not what the preset's 32 px renders make."""
    path = tmp_path_factory.mktemp("tiny_sizes") / "tiny_sizes.yaml"
    path.write_text(yaml.safe_dump(TINY_SIZES))
    return path


def assert_one_line_user_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_describe_help_names_the_files_it_writes_in_the_workspace():
    """It said "writes W/descriptor/sentence.json", W being the docstrings' name of a run folder."""
    describe = build_parser()._subparsers._group_actions[0].choices["describe"]
    text = " ".join(describe.format_help().split())
    assert "W/" not in text
    assert "writes descriptor/sentence.json (with a copy of the image" in text
    assert "status.json in the workspace" in text


@pytest.mark.parametrize("command", ["text", "image", "batch"])
def test_compile_help_says_a_resume_keeps_the_recorded_compile_and_no_compile_turns_it_off(command):
    """A resume or rerun keeps the --compile its config.json records (README, "Useful flags"):
    the help said only that --no-compile keeps the field's MLPs eager, so a user who resumed a
    compiled run without the flag was not told it compiles again, nor how to stop it."""
    parser = build_parser()._subparsers._group_actions[0].choices[command]
    text = " ".join(parser.format_help().split())
    line = (
        "A resume or rerun keeps the --compile its config.json records; --no-compile turns it off"
    )
    assert line in text


def test_help_lists_every_subcommand_and_the_text_flags(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for command in ("text", "export", "describe", "image"):
        assert command in out
    text_help = build_parser()._subparsers._group_actions[0].choices["text"].format_help()
    for flag in (
        "--workspace",
        "--model",
        "--preset",
        "--config",
        "--guidance",
        "--h",
        "--w",
        "--iters",
        "--epochs",
        "--lr",
        "--seed",
        "--device",
        "--fp16",
        "--negative",
        "--resume",
        "--encoding",
        "--no-export",
        "--side-views",
    ):
        assert flag in text_help


def _help_defaults(command: str) -> dict[str, str]:
    """``{"--flag": "text in its help's last [brackets]"}`` for every flag of ``command``."""
    parser = build_parser()._subparsers._group_actions[0].choices[command]
    out = {}
    for action in parser._actions:
        text = action.help or ""
        if action.option_strings and text.endswith("]") and "[" in text:
            out[action.option_strings[0]] = text[text.rindex("[") + 1 : -1]
    return out


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def test_help_defaults_in_brackets_are_the_configs_defaults():
    """What `--help` prints in brackets is what a run without the flag gets (README and help
    drifted before: the descriptor's 5000 → 10,000 steps, the export's --decimate)."""
    from dreamtext.batch import BatchOptions
    from dreamtext.config import TrainConfig
    from dreamtext.describe import DescribeOptions
    from dreamtext.descriptor import DescriptorOptions
    from dreamtext.export import ExportOptions

    cfg, describe, descriptor = TrainConfig(), DescribeOptions(), DescriptorOptions()
    numbers = {
        "--guidance": cfg.guidance.guidance_scale,
        "--h": cfg.h,
        "--w": cfg.w,
        "--iters": cfg.iters,
        "--lr": cfg.lr,
        "--batch-size": cfg.batch_size,
        "--seed": cfg.seed,
        "--max-words": describe.max_words,
        "--descriptor-iters": descriptor.iters,
    }
    for command in ("text", "image", "batch"):
        shown = _help_defaults(command)
        for flag, value in numbers.items():
            assert _number(shown[flag]) == value, (command, flag, shown[flag])
        assert [float(t) for t in shown["--t-range"].split()] == list(cfg.guidance.t_range)
        assert shown["--model"].replace(" ", "") == cfg.guidance.model
        assert shown["--clip"] == describe.clip
        assert shown["--device"] == cfg.device
        assert shown["--encoding"] == cfg.field.encoding
    export, options = _help_defaults("export"), ExportOptions()
    for flag, value in (
        ("--resolution", options.resolution),
        ("--decimate", options.decimate),
        ("--texture-size", options.texture_size),
        ("--video-size", options.video_size),
        ("--frames", options.frames),
    ):
        assert _number(export[flag]) == value, (flag, export[flag])
    assert _number(_help_defaults("batch")["--lock-timeout"]) == BatchOptions().lock_timeout


def test_help_states_the_builtin_presets_own_defaults():
    from dreamtext.config import resolve_config

    cfg = resolve_config({"prompt": "a red cube", "guidance": {"model": "builtin:shapes"}})
    t_min, t_max = cfg.guidance.t_range
    expected = (
        f"{cfg.h} px, {cfg.iters} iterations, lr {cfg.lr:g}, batch {cfg.batch_size}, "
        f"guidance {cfg.guidance.guidance_scale:g}, t-range {t_min:g} {t_max:g}, "
        f"{'split' if cfg.guidance.views.split_sides else 'one'} side views"
    )
    assert cfg.h == cfg.w
    text = build_parser()._subparsers._group_actions[0].choices["text"]
    (group,) = [g for g in text._action_groups if g.title == "text→3D"]
    assert expected in group.description, group.description


def test_help_says_which_column_of_the_thesis_the_defaults_are_and_where_fitfusion_is():
    """The bare defaults (guidance 100) are Stable-DreamFusion's column of the thesis's Table 5.1;
    the help called them just "the thesis's", whose own method FitFusion uses guidance 1000."""
    from dreamtext.config import TrainConfig, preset_path, read_yaml

    cfg, fitfusion = TrainConfig(), read_yaml(preset_path("fitfusion"))
    sdf = f"Stable-DreamFusion settings (Table 5.1: {cfg.h} px, guidance "
    sdf += f"{cfg.guidance.guidance_scale:g}, {cfg.iters // 100} epochs)"
    ff = f"--preset fitfusion gives its FitFusion ones ({fitfusion['h']} px, guidance "
    ff += f"{fitfusion['guidance']['guidance_scale']:g}, {fitfusion['iters'] // 100} epochs)"
    for command in ("text", "image", "batch"):
        parser = build_parser()._subparsers._group_actions[0].choices[command]
        (group,) = [g for g in parser._action_groups if g.title == "text→3D"]
        assert sdf in group.description and ff in group.description, group.description


def test_image_help_names_the_image_workspace_it_uses(tmp_path):
    from dreamtext.imageto3d import default_workspace

    image_help = build_parser()._subparsers._group_actions[0].choices["image"].format_help()
    assert "workspace/<image name>" in " ".join(image_help.split())
    assert "<slug of the prompt>" not in image_help
    assert default_workspace(tmp_path / "My Mug.png").as_posix() == "workspace/my_mug"


def test_image_help_offers_no_builtin_prior_which_image_refuses(tmp_path, capsys):
    image_help = build_parser()._subparsers._group_actions[0].choices["image"].format_help()
    assert "builtin" not in image_help
    text_help = build_parser()._subparsers._group_actions[0].choices["text"].format_help()
    assert "builtin:shapes" in text_help and "builtin-shapes" in text_help
    image = tmp_path / "mug.png"
    Image.new("RGB", (16, 16), "red").save(image)
    for flags in (["--model", "builtin:shapes"], ["--preset", "builtin-shapes"]):
        code = main(["image", str(image), "--workspace", str(tmp_path / "ws"), *flags])
        assert code == 2
        assert "needs a Stable Diffusion model" in capsys.readouterr().err
    assert not (tmp_path / "ws").exists()


def test_the_builtin_prior_preset_on_stable_diffusion_is_said_once(
    tmp_path, tiny_sd_path, capsys, monkeypatch
):
    """`text --preset builtin-shapes --model SD` (or a builtin:shapes run's config.json as
    --config) trained Stable Diffusion silently at the prior's 32 px, guidance 4, albedo only."""
    trained = []
    monkeypatch.setattr("dreamtext.trainer.train", lambda cfg, **k: trained.append(cfg) or "ws")
    flags = ["--model", str(tiny_sd_path), "--workspace", str(tmp_path / "ws")]
    assert main(["text", "a red cube", "--preset", "builtin-shapes", *flags]) == 0
    err = capsys.readouterr().err
    assert err == (
        "dreamtext: the preset builtin-shapes is the built-in prior's (32 px, guidance 4, albedo "
        f"only); Stable Diffusion ({tiny_sd_path}) trains with it under your flags: leave it out "
        "(--preset, or a builtin:shapes run's config.json as --config) for Stable Diffusion's "
        "own defaults\n"
    )
    assert trained[0].guidance.guidance_scale == 4.0  # warned, not changed
    for preset in (["--preset", "fitfusion"], []):  # Stable Diffusion's own: nothing to say
        assert main(["text", "a red cube", *preset, *flags]) == 0
        assert capsys.readouterr().err == ""
    assert main(["text", "a red cube", "--preset", "builtin-shapes", *flags[2:]]) == 0
    assert capsys.readouterr().err == ""  # the prior's own preset


def test_the_builtin_prior_preset_on_stable_diffusion_is_said_by_batch_and_image_too(
    tmp_path, tiny_sd_path, capsys, monkeypatch
):
    """`batch` and `image` with `--preset builtin-shapes --model SD` trained at the prior's
    settings without the word `text` says."""
    warning = (
        "dreamtext: the preset builtin-shapes is the built-in prior's (32 px, guidance 4, albedo "
        f"only); Stable Diffusion ({tiny_sd_path}) trains with it under your flags: leave it out "
        "(--preset, or a builtin:shapes run's config.json as --config) for Stable Diffusion's "
        "own defaults\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("dreamtext.trainer.train", lambda cfg, **k: "ws")
    monkeypatch.setattr("dreamtext.batch.check_model", lambda cfg, *lines: None)
    monkeypatch.setattr("dreamtext.imageto3d.run_image", lambda *a, **k: tmp_path / "ws")
    Path("list.txt").write_text("a red cube\na blue cube\n", encoding="utf-8")
    flags = ["--preset", "builtin-shapes", "--model", str(tiny_sd_path), "--no-export"]
    assert main(["batch", "list.txt", *flags, "--workspace", "runs"]) == 0
    assert capsys.readouterr().err.count(warning) == 1  # once for the batch
    Image.new("RGB", (64, 64), (200, 30, 30)).save("red.png")
    assert main(["image", "red.png", *flags, "--workspace", "img"]) == 0
    assert warning in capsys.readouterr().err


def test_text_end_to_end_on_the_tiny_pipeline(tmp_path, tiny_sd_path, tiny_yaml):
    workspace = tmp_path / "castle"
    result = run_cli(
        "text",
        "a castle",
        "--model",
        tiny_sd_path,
        "--config",
        tiny_yaml,
        "--iters",
        3,
        "--workspace",
        workspace,
        "--guidance",
        50,
        "--seed",
        3,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(workspace)
    config = json.loads((workspace / "config.json").read_text())
    assert (config["iters"], config["seed"], config["h"]) == (3, 3, 16)
    assert config["guidance"]["guidance_scale"] == 50.0
    assert len((workspace / "log.jsonl").read_text().splitlines()) == 3
    assert (workspace / "checkpoints" / "last.pt").is_file()
    resumed = run_cli(
        "text",
        "a castle",
        "--model",
        tiny_sd_path,
        "--workspace",
        workspace,
        "--resume",
        "--iters",
        4,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((workspace / "log.jsonl").read_text().splitlines()[-1])["step"] == 4


def test_epochs_are_hundred_iterations(tmp_path):
    args = build_parser().parse_args(["text", "a castle", "--epochs", "2"])
    from dreamtext.cli import text_overrides

    assert text_overrides(args)["iters"] == 200


@pytest.mark.parametrize("command", ["image", "batch"])
def test_descriptor_iters_zero_is_passed_on_as_zero_steps(command):
    """0 was refused by the flag ("a positive integer") while descriptor.py, and a --config
    file's descriptor.iters, took it: the placeholders stay the words they start from."""
    from dreamtext.cli import image_overrides

    args = build_parser().parse_args([command, "in.png", "--descriptor-iters", "0"])
    assert image_overrides(args)["descriptor"] == {"iters": 0}


@pytest.mark.parametrize("command", ["describe", "image", "batch"])
def test_adjust_is_off_unless_asked_and_reaches_the_search(command):
    """The thesis's search (5.2.1) appends words only; --adjust adds the replacing pass."""
    from dreamtext.cli import describe_options, image_overrides

    plain = build_parser().parse_args([command, "in.png"])
    asked = build_parser().parse_args([command, "in.png", "--adjust"])
    assert (describe_options(plain).adjust, describe_options(asked).adjust) == (False, True)
    if command != "describe":
        assert "adjust" not in image_overrides(plain)["describe"]
        assert image_overrides(asked)["describe"]["adjust"] is True


def test_descriptor_iters_zero_without_diverse_is_refused_as_for_diverse_only(capsys):
    code, err = run_main(["text", "a castle", "--descriptor-iters", 0], capsys)
    assert code == 2
    assert "--descriptor-iters: for --diverse's image only" in err


@pytest.mark.parametrize(("flag", "split"), [("split", True), ("one", False)])
def test_side_views_flag_sets_split_side_labels_over_the_preset(flag, split):
    from dreamtext.cli import text_overrides
    from dreamtext.config import resolve_config

    argv = ["text", "a red cube", "--model", "builtin:shapes", "--side-views", flag]
    cfg = resolve_config(text_overrides(build_parser().parse_args(argv)))
    assert cfg.guidance.views.split_sides is split
    assert cfg.guidance.views.front_end == 60.0  # the other thresholds keep their values


def test_builtin_preset_splits_side_labels_by_default():
    from dreamtext.config import resolve_config

    cfg = resolve_config({"prompt": "a red cube", "guidance": {"model": "builtin:shapes"}})
    assert cfg.guidance.views.split_sides
    assert not resolve_config({"prompt": "a castle"}).guidance.views.split_sides


def run_main(args, capsys):
    """``dreamtext ARGS`` in this process: (exit code, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as done:  # argparse's own exit
        code = done.code
    return code, capsys.readouterr().err


def make_run(monkeypatch, cwd, *args):
    """``dreamtext ARGS`` typed in ``cwd``, run in this process: a run the test then refuses or
    resumes through :func:`run_cli`. A CLI process of its own would spend ~9 s of CPU importing
    torch again only to make it."""
    monkeypatch.chdir(cwd)
    assert main([str(a) for a in args]) == 0


def assert_user_error(code, stderr, *fragments):
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["text", ""], ["prompt is empty"]),
        (["text", "a castle", "--iters", "0"], ["--iters", "from 1 to 10000000, got 0"]),
        # Refused as the config field guidance.t_range, once torch had loaded.
        (
            ["text", "a castle", "--t-range", "0.8", "0.2"],
            ["argument --t-range: T_MIN must be below T_MAX, got 0.8 0.2"],
        ),
        (["image", "mug.png", "--t-range", "0.5", "0.5"], ["--t-range: T_MIN must be below"]),
        # 10^12 was accepted: past 2^24 Adam's float32 step counter stops counting, and the
        # progress bar's ETA was centuries.
        (["text", "a castle", "--iters", str(10**12)], ["--iters", "from 1 to 10000000"]),
        (["text", "a castle", "--epochs", str(10**10)], ["--epochs", "from 1 to 100000"]),
        (
            ["image", "mug.png", "--descriptor-iters", str(10**12)],
            ["--descriptor-iters", "from 0 to 10000000"],
        ),
        (["text", "a castle", "--h", "-3"], ["--h", "positive"]),
        (["text", "a castle", "--w", "0"], ["--w", "positive"]),
        (["text", "a castle", "--guidance", "inf"], ["--guidance", "finite"]),
        (["text", "a castle", "--lr", "nan"], ["--lr", "finite"]),
        # Adam's first step overflowed float32: a torch traceback once training had started.
        (
            ["text", "a red cube", "--model", "builtin:shapes", "--lr", "1e300"],
            ["--lr is too large (1e+300): Adam's steps would overflow float32 above 3.4e+36"],
        ),
        # torch.manual_seed raised an overflow traceback once the run had started.
        (["text", "a castle", "--seed", str(2**64)], ["--seed", "0 to 4294967295"]),
        (["text", "a castle", "--seed", "-1"], ["--seed", "0 to 4294967295"]),
        # Named the config field 'guidance.t_range' instead of the flag the user typed.
        (["text", "a castle", "--t-range", "nan", "0.5"], ["--t-range", "from 0 to 1"]),
        (["text", "a castle", "--t-range", "0.2", "1.5"], ["--t-range", "from 0 to 1"]),
        (["export", "--workspace", "workspace/run", "--threshold", "nan"], ["--threshold"]),
        # Said "expected a positive number" only, though `auto` (the default) is accepted too.
        (
            ["export", "--workspace", "run", "--threshold", "abc"],
            ["--threshold", "a positive number or auto, got 'abc'"],
        ),
        (["export", "--workspace", "run", "--threshold", "-1"], ["or auto, got '-1'"]),
        # Refused by ExportOptions.validate only after torch had loaded (10-15 s).
        (["export", "--workspace", "workspace/run", "--resolution", "4"], ["--resolution", "8"]),
        (["export", "--workspace", "workspace/run", "--texture-size", "1"], ["--texture", "8"]),
        (["export", "--workspace", "run", "--video-size", "129"], ["--video-size", "even"]),
        (["export", "--workspace", "run", "--video-size", "8"], ["--video-size", "16"]),
        (["export", "--workspace", "run", "--frames", "30"], ["--frames", "60"]),
        # Refused without the value or "(see ... --help)", unlike every other flag.
        (
            ["describe", "mug.png", "--max-words", "-1"],
            ["--max-words: must be at least 0, got -1", "(see dreamtext describe --help)"],
        ),
        (["image", "mug.png", "--max-words", "many"], ["--max-words: expected an integer"]),
        (["view", "--port", "70000"], ["--port: must be from 0 to 65535, got 70000"]),
        (["text", "a castle", "--preset", "nope"], ["unknown preset"]),
        (["text", "a castle", "--model", "/no/such/folder"], ["/no/such/folder"]),
        (["text", "a castle", "--model", "nobody/no-such-model"], ["--model"]),
        (["text", "a castle", "--iters", "5", "--epochs", "1"], ["not both"]),
        (["text", "a castle", "--resume"], ["nothing to resume"]),
        (["text", "a castle", "--resume", "--overwrite"], ["--resume or --overwrite"]),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path, monkeypatch, capsys, args, fragments
):
    monkeypatch.chdir(tmp_path)
    assert_user_error(*run_main(args, capsys), *fragments)
    assert not (tmp_path / "workspace").exists()


def test_a_config_files_lr_too_large_for_float32_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("big.yaml").write_text("lr: 1.0e+38\nfield:\n  encoding_lr_scale: 1\n")
    args = [*BUILTIN_RUN, "--config", "big.yaml"]
    assert_user_error(
        *run_main(args, capsys),
        "config field 'lr' (in big.yaml) is too large (1e+38)",
        "above 3.4e+37",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.yaml"]


def test_a_config_files_iters_above_the_limit_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("long.yaml").write_text("iters: 1000000000000\n")
    args = [*BUILTIN_RUN, "--config", "long.yaml"]
    code, err = run_main(args, capsys)
    assert_user_error(
        code,
        err,
        "config field 'iters' (in long.yaml) must be at most 10,000,000",
        "got 1000000000000",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.yaml"]
    from dreamtext.config import TrainConfig, validate

    validate(TrainConfig(prompt="a red cube", iters=10_000_000))  # the limit itself runs


def test_resume_finds_a_run_in_the_folder_an_ascii_slug_named(tmp_path, monkeypatch, capsys):
    """``text "一只猫"`` ran in ``workspace/run`` before slugs kept non-Latin letters."""
    monkeypatch.chdir(tmp_path)
    old = tmp_path / "workspace" / "run"
    old.mkdir(parents=True)
    config = {"prompt": "一只猫", "guidance": {"model": "builtin:shapes"}}
    (old / "config.json").write_text(json.dumps(config), encoding="utf-8")
    code, err = run_main(["text", "一只猫", "--resume"], capsys)
    assert_user_error(code, err, "nothing to resume in workspace/run:", "last.pt")
    code, err = run_main(["text", "一只狗", "--resume"], capsys)
    assert_user_error(code, err, "nothing to resume in workspace/一只狗:", "no config.json")


def test_a_user_error_in_a_real_process_has_no_traceback(tmp_path):
    result = run_cli("text", "a castle", "--model", tmp_path / "missing", cwd=tmp_path)
    assert_one_line_user_error(result, "missing")
    assert not (tmp_path / "workspace").exists()


def test_fp16_without_cuda_is_a_user_error(tmp_path, monkeypatch, capsys, tiny_sd_path):
    monkeypatch.chdir(tmp_path)
    code, err = run_main(["text", "a castle", "--model", tiny_sd_path, "--fp16"], capsys)
    assert_user_error(code, err, "--fp16", "CUDA")
    assert not (tmp_path / "workspace").exists()


@pytest.mark.parametrize("device", ["mps", "xpu", "meta"])
def test_a_device_dreamtext_does_not_run_on_is_one_line_before_anything_loads(
    tmp_path, monkeypatch, capsys, device
):
    """``--device mps`` was a valid torch device, and the run failed later with a traceback."""
    monkeypatch.chdir(tmp_path)
    code, err = run_main([*BUILTIN_RUN, "--device", device], capsys)
    assert_user_error(code, err, f"device {device} (asked for by --device, ", "runs on cpu or cuda")
    assert not (tmp_path / "workspace").exists()


@pytest.mark.parametrize("device", ["tpu", "mps"])
def test_a_device_refusal_names_every_form_the_help_lists(tmp_path, monkeypatch, capsys, device):
    """``--device tpu`` said "use auto, cpu or cuda" where ``--help`` lists ``cuda:N`` too."""
    monkeypatch.chdir(tmp_path)
    code, err = run_main([*BUILTIN_RUN, "--device", device], capsys)
    assert_user_error(code, err, "--device", device)
    assert err.strip().endswith("; use auto, cpu, cuda or cuda:N"), err
    assert "auto, cpu, cuda or cuda:N [auto]" in build_parser().commands["text"].format_help()


def test_cuda_from_a_config_file_without_a_gpu_is_not_called_a_flag(tmp_path, monkeypatch, capsys):
    """A config file's `device: cuda` (or a GPU node's run resumed here) was "--device cuda was
    asked for", of a flag the user never typed."""
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gpu.yaml").write_text("device: cuda\n")
    code, err = run_main([*BUILTIN_RUN, "--config", "gpu.yaml"], capsys)
    assert_user_error(
        code,
        err,
        "dreamtext: error: device cuda was asked for (by --device, a --config file's `device:` "
        "or the resumed run's config.json) but no CUDA GPU is visible; pass --device cpu",
    )


@pytest.mark.parametrize("device", ["tpu", "mps"])
def test_a_bad_device_from_a_config_file_is_not_called_a_flag(
    tmp_path, monkeypatch, capsys, device
):
    """A config file's `device: tpu` was "unknown --device 'tpu'", of a flag never typed."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dev.yaml").write_text(f"device: {device}\n")
    code, err = run_main([*BUILTIN_RUN, "--config", "dev.yaml"], capsys)
    assert_user_error(code, err, device, "(asked for by --device, a --config file's `device:`")
    assert "--device " + device not in err and "--device '" not in err
    assert not (tmp_path / "workspace").exists()


def test_cuda_without_a_gpu_names_the_flag_to_pass_instead(tmp_path, monkeypatch, capsys):
    """It said "...; use cpu": a value, not the flag that takes it."""
    monkeypatch.chdir(tmp_path)
    code, err = run_main([*BUILTIN_RUN, "--device", "cuda"], capsys)
    assert_user_error(code, err, "no CUDA GPU is visible; use --device cpu")
    assert not (tmp_path / "workspace").exists()


def test_a_gpu_index_must_be_visible_and_becomes_the_current_device(monkeypatch):
    """``--device cuda:N`` on a machine (or under a CUDA_VISIBLE_DEVICES) with fewer GPUs is a
    user error, not CUDA's "invalid device ordinal" deep in model loading; a visible one is made
    current. ``torch.cuda`` is replaced: no GPU here."""
    from dreamtext.devices import resolve_device
    from dreamtext.errors import DreamtextError

    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert current == [torch.device("cuda", 1)]
    assert resolve_device("cuda") == torch.device("cuda") and len(current) == 1
    with pytest.raises(
        DreamtextError, match=r"--device cuda:2: .* 2 CUDA GPU\(s\), cuda:0 to cuda:1"
    ):
        resolve_device("cuda:2")


def test_free_memory_empties_the_cuda_cache_only_where_cuda_is_used(monkeypatch):
    """One helper frees memory for the trainer's out-of-memory path, the batch loop and the
    model stages: with no device it empties the cache whenever CUDA is present; with a device,
    only for a CUDA one. ``torch.cuda`` is replaced: no GPU here."""
    from dreamtext.devices import free_memory

    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    for available in (False, True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda a=available: a)
        free_memory(torch.device("cpu"))
        assert emptied == []
        free_memory(torch.device("cuda", 0))
        free_memory()
        assert len(emptied) == (2 if available else 1)
        emptied.clear()


@pytest.fixture
def cuda_build_on_linux(monkeypatch):
    """torch as a CUDA build on native Linux whose CUDA has not started (no GPU here)."""
    import platform

    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    native = platform.uname()._replace(release="6.8.0-49-generic")
    monkeypatch.setattr(platform, "uname", lambda: native)


def test_expandable_segments_are_asked_for_unless_the_user_set_up_the_allocator(
    monkeypatch, cuda_build_on_linux
):
    """The allocator's setting goes in the variable this torch reads, only where it can work,
    and never over a user's own setting."""
    from dreamtext.devices import use_expandable_segments

    environ = {}
    assert use_expandable_segments(environ) == "PYTORCH_ALLOC_CONF"
    assert environ == {"PYTORCH_ALLOC_CONF": "expandable_segments:True"}
    for users in (
        {"PYTORCH_ALLOC_CONF": "expandable_segments:False"},
        {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:128"},
    ):
        environ = dict(users)
        assert use_expandable_segments(environ) is None
        assert environ == users
    monkeypatch.setattr(torch, "__version__", torch.torch_version.TorchVersion("2.4.1+cu121"))
    environ = {}
    assert use_expandable_segments(environ) == "PYTORCH_CUDA_ALLOC_CONF"
    assert environ == {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    import platform

    wsl = platform.uname()._replace(release="5.15.167.4-microsoft-standard-WSL2")
    too_late, windows, under_wsl, cpu_build = (
        (torch.cuda, "is_initialized", lambda: True),
        (sys, "platform", "win32"),
        (platform, "uname", lambda: wsl),
        (torch.version, "cuda", None),
    )
    for where, name, value in (too_late, windows, under_wsl, cpu_build):
        with monkeypatch.context() as m:
            m.setattr(where, name, value)
            environ = {}
            assert use_expandable_segments(environ) is None
            assert environ == {}
    environ = {"WSL_DISTRO_NAME": "Ubuntu"}  # WSL, whatever its kernel says
    assert use_expandable_segments(environ) is None
    assert environ == {"WSL_DISTRO_NAME": "Ubuntu"}


def test_model_commands_set_up_the_gpu_allocator_before_cuda_starts(
    monkeypatch, tmp_path, capsys, cuda_build_on_linux
):
    """`dreamtext export` (any command that loads torch) asks for expandable segments; `view`,
    which runs without torch, leaves the environment alone."""
    missing = tmp_path / "no-run"
    for command, expected in (
        # --static: a server of a folder not made yet waits for it (a batch about to make it).
        (["view", missing, "--static", tmp_path / "site"], None),
        (["export", "--workspace", missing], "expandable_segments:True"),
    ):
        environ = {}
        monkeypatch.setattr(os, "environ", environ)
        code, err = run_main(command, capsys)
        assert_user_error(code, err, str(missing))
        assert environ.get("PYTORCH_ALLOC_CONF") == expected


def test_unreadable_config_is_a_user_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("h: [unclosed\n")
    code, err = run_main(["text", "a castle", "--config", bad], capsys)
    assert_user_error(code, err, "not valid YAML")


def test_workspace_holding_another_prompt_is_refused(tmp_path, capsys, tiny_sd_path, tiny_yaml):
    workspace = tmp_path / "ws"
    common = [
        "--model",
        tiny_sd_path,
        "--config",
        tiny_yaml,
        "--iters",
        1,
        "--workspace",
        workspace,
    ]
    code, err = run_main(["text", "a castle", *common], capsys)
    assert code == 0, err
    before = sorted(p.name for p in workspace.rglob("*"))
    assert_user_error(*run_main(["text", "a dog", *common], capsys), "a castle", "--resume")
    assert sorted(p.name for p in workspace.rglob("*")) == before


@pytest.fixture
def red_square_and_vocabulary(tmp_path):
    from PIL import Image

    pixels = np.zeros((48, 48, 4), dtype=np.uint8)
    pixels[12:36, 12:36] = (220, 30, 30, 255)
    image = tmp_path / "red_cube.png"
    Image.fromarray(pixels, "RGBA").save(image)
    nouns, adjectives = tmp_path / "nouns.txt", tmp_path / "adjectives.txt"
    nouns.write_text("cube\nsphere\nchair\n")
    adjectives.write_text("red\nblue\nshiny\n")
    return image, ["--nouns", nouns, "--adjectives", adjectives, "--max-words", 2]


def test_describe_prints_the_sentence_and_records_it(
    tmp_path, capsys, tiny_clip_path, red_square_and_vocabulary, holder
):
    image, vocabulary = red_square_and_vocabulary
    workspace = tmp_path / "described"
    code = main(
        ["describe", str(image), "--clip", str(tiny_clip_path), "--workspace", str(workspace)]
        + [str(v) for v in vocabulary]
    )
    out = capsys.readouterr().out.strip()
    assert code == 0
    record = json.loads((workspace / "descriptor" / "sentence.json").read_text())
    assert out == record["sentence"]
    assert out.startswith(f"An image of {record['quantifier']} ") and out.endswith(record["noun"])
    # A workspace another process holds (its run, still loading) is refused in one line.
    other = holder(workspace)
    args = ["describe", image, "--clip", tiny_clip_path, "--workspace", workspace]
    code, err = run_main(args, capsys)
    assert code == 2 and f"in use: process {other.pid}" in err and err.count("\n") == 1


def test_a_sigterm_once_the_sentence_is_written_changes_nothing(
    tmp_path, capsys, tiny_clip_path, red_square_and_vocabulary, monkeypatch
):
    """`dreamtext describe` stopped once its sentence.json is written and status.json says
    finished: "run the same command again to search again from the start", exit 130, of a
    search that had found and recorded its sentence. Now the sentence printed, exit 0."""
    image, vocabulary = red_square_and_vocabulary
    workspace = tmp_path / "described"
    sent = _stop_after_finished(monkeypatch, signal.SIGTERM)
    args = ["describe", image, "--clip", tiny_clip_path, "--workspace", workspace, *vocabulary]
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert sent == [signal.SIGTERM]
    assert code == 0, err
    assert "interrupted" not in err
    record = json.loads((workspace / "descriptor" / "sentence.json").read_text())
    assert out == record["sentence"] + "\n"
    status = json.loads((workspace / "status.json").read_text())
    assert (status["state"], status["phase"]) == ("finished", "describe")


def test_image_runs_every_stage_from_the_command_line(
    tmp_path, capsys, tiny_clip_path, tiny_sd_path, tiny_yaml, red_square_and_vocabulary
):
    image, vocabulary = red_square_and_vocabulary
    workspace = tmp_path / "from_image"
    args = ["image", image, "--clip", tiny_clip_path, "--model", tiny_sd_path, "--config"]
    args += [tiny_yaml, "--iters", 2, "--descriptor-iters", 2, "--workspace", workspace]
    code, err = run_main([*args, *vocabulary], capsys)
    assert code == 0, err
    record = json.loads((workspace / "descriptor" / "sentence.json").read_text())
    config = json.loads((workspace / "config.json").read_text())
    assert config["prompt"] == record["trained_sentence"]
    assert config["guidance"]["textual_inversion"].endswith("learned_embeds.safetensors")
    assert (workspace / "checkpoints" / "last.pt").is_file()


# A mistake's line comes before torch and diffusers are imported: that import took 7 s of CPU
# and 455 MB here, tens of seconds on a cluster's network home directory, for each of these.
EARLY_MISTAKES = [
    (
        ["batch", "nofile.txt"],
        "prompts file nofile.txt does not exist; pass a text file with one prompt per line",
    ),
    (
        ["batch", "afolder"],
        "prompts file afolder is a folder; pass a text file with one prompt per line",
    ),
    (["describe", "afolder"], "afolder is a folder, not an image; pass a PNG, JPEG or WebP file"),
    (["describe", "nothere.png"], "image not found: nothere.png (check the path)"),
    (["image", "nothere.png"], "image not found: nothere.png (check the path)"),
    # A prompt given to image was told only to check its path.
    (
        ["image", "a red mug"],
        'image not found: a red mug; for a text prompt, run: dreamtext text "a red mug"',
    ),
    # ... as was one given to describe.
    (
        ["describe", "a red mug"],
        'image not found: a red mug; for a text prompt, run: dreamtext text "a red mug"',
    ),
    (["image", "my mug.jpg"], "image not found: my mug.jpg (check the path)"),
    (["image", "afolder/a mug"], "image not found: afolder/a mug (check the path)"),
    (
        ["text", "x", "--config", "nope.yaml"],
        "config file 'nope.yaml' does not exist; check the --config path",
    ),
    # A folder was "cannot read config file 'afolder': [Errno 21] Is a directory: 'afolder'".
    (
        ["text", "x", "--config", "afolder"],
        "config file 'afolder' is a folder; pass --config a YAML file (e.g. a run's config.json)",
    ),
    (
        ["text", "x", "--config", "bad.yaml"],
        "config file 'bad.yaml' is not valid YAML (line 2); fix it",
    ),
    (
        ["text", "x", "--preset", "nope"],
        "unknown preset 'nope'; available presets: builtin-shapes, fitfusion, stable-dreamfusion",
    ),
    (["text", "x", "--iters", "5", "--epochs", "2"], "give --iters or --epochs, not both"),
    (["batch", "p.txt", "--iters", "5", "--epochs", "2"], "give --iters or --epochs, not both"),
    (["text", "x", "--fp32", "--fp16"], "give --fp32 or --fp16, not both"),
    (["image", "x.png", "--fp32", "--bf16"], "give --fp32 or --bf16, not both"),
    (["batch", "p.txt", "--fp16", "--fp32"], "give --fp32 or --fp16, not both"),
]


@pytest.mark.parametrize(
    ("argv", "line"), EARLY_MISTAKES, ids=[" ".join(argv) for argv, _ in EARLY_MISTAKES]
)
def test_a_mistyped_path_or_flag_is_refused_before_torch_is_imported(tmp_path, argv, line):
    (tmp_path / "afolder").mkdir()
    (tmp_path / "bad.yaml").write_text("a: [1\n")
    assert refused_without_torch(tmp_path, argv) == f"dreamtext: error: {line}\n"
    assert not (tmp_path / "workspace").exists()


def test_an_image_moved_from_its_run_is_still_named_with_the_runs_copy(tmp_path, capsys):
    """The early check leaves ``image OLD_PATH`` to the run in the workspace, whose line names
    the copy to continue from."""
    from dreamtext.imageto3d import keep_source_copy

    image = tmp_path / "mug.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image)
    workspace = tmp_path / "run"
    (workspace / "descriptor").mkdir(parents=True)
    record = {"sentence": "An image of a mug", "image": str(image.resolve())}
    (workspace / "descriptor" / "sentence.json").write_text(json.dumps(record))
    copy = keep_source_copy(image, workspace)
    image.unlink()
    code, err = run_main(["image", image, "--workspace", workspace], capsys)
    assert code == 2
    assert err == (
        f"dreamtext: error: image not found: {image}; to continue the run in {workspace}, pass "
        f"its copy and its folder: dreamtext image {shlex.quote(str(copy))} --workspace "
        f"{shlex.quote(str(workspace))} (or the "
        "image's new path in place of the copy)\n"
    )


@pytest.mark.parametrize("command", ["describe", "image"])
def test_a_fully_transparent_image_is_one_line_and_no_workspace(tmp_path, capsys, command):
    image = tmp_path / "erased.png"
    Image.new("RGBA", (16, 16), (0, 0, 0, 0)).save(image)
    workspace = tmp_path / "run"
    code, err = run_main([command, image, "--workspace", workspace], capsys)
    assert_user_error(code, err, "erased.png", "is blank", "pass an image that shows the object")
    assert not workspace.exists()


@pytest.mark.parametrize("command", ["describe", "image"])
def test_an_image_in_a_folder_the_user_may_not_enter_is_not_a_write_error(
    tmp_path, capsys, refuse_stat, command
):
    """Its line was "Permission denied (PATH); pick a folder you can write (--workspace)", of an
    image that could not be read (patched: root reads any folder)."""
    image = tmp_path / "home" / "mug.png"
    workspace = tmp_path / "run"
    refuse_stat(image)
    code, err = run_main([command, image, "--workspace", workspace], capsys)
    assert_user_error(code, err, f"cannot read {image}: permission denied", "chmod")
    assert "--workspace" not in err
    assert not workspace.exists()


def test_image_with_a_missing_file_is_a_user_error(tmp_path, capsys, tiny_sd_path):
    missing = tmp_path / "nowhere.png"
    code, err = run_main(["image", missing, "--model", tiny_sd_path], capsys)
    assert_user_error(code, err, "nowhere.png")


@pytest.mark.parametrize(
    ("command", "fixes", "absent"),
    [
        (["image", "mug.png"], ["--fp16", "--device cpu"], ["--h/--w"]),
        (["describe", "mug.png"], ["--device cpu"], ["--fp16", "--h/--w"]),
    ],
)
def test_out_of_gpu_memory_anywhere_is_one_line_with_the_commands_own_fixes(
    monkeypatch, capsys, command, fixes, absent
):
    from dreamtext import cli

    def run_out(args):
        raise torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
            "11.76 GiB of which 1.02 GiB is free.\nOf the allocated memory ..."
        )

    monkeypatch.setattr(cli, f"cmd_{command[0]}", run_out)
    code, err = run_main(command, capsys)
    assert_user_error(code, err, f"`dreamtext {command[0]}`", "Tried to allocate 2.00 GiB", *fixes)
    for fix in absent:
        assert fix not in err
    assert "capacity" not in err


@pytest.mark.parametrize(
    ("error", "detail"),
    [
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                "allocate memory: you tried to allocate 3221225472 bytes. Error code 12 "
                "(Cannot allocate memory)"
            ),
            "tried to allocate 3072 MiB",
        ),
        (MemoryError(), None),
    ],
    ids=["cpu-allocator", "memory-error"],
)
def test_out_of_host_memory_anywhere_is_one_line_naming_what_to_reduce(
    monkeypatch, capsys, error, detail
):
    """ulimit -v or a full RAM: torch's CPU allocator raises a RuntimeError, numpy a
    MemoryError; both were tracebacks (exit 1)."""
    from dreamtext import cli

    def run_out(args):
        raise error

    monkeypatch.setattr(cli, "cmd_image", run_out)
    code, err = run_main(["image", "mug.png"], capsys)
    expected = ["out of memory in `dreamtext image`", "close other programs"]
    assert_user_error(code, err, *expected, *([detail] if detail else []))
    assert "GPU" not in err and "--fp16" not in err and "enforce" not in err
    assert "--h/--w" not in err  # it is used by the render alone, which has a line of its own
    assert "--config" not in err and "render sizes" not in err


def test_out_of_memory_with_a_config_file_names_its_sizes_too(tmp_path, monkeypatch, capsys):
    """A config's field.hidden_dim of 4096 ran the host out of memory while the field was
    built; the line named only --h/--w, which was not the cause."""
    from dreamtext import cli

    def run_out(args):
        raise MemoryError()

    config = tmp_path / "big.yaml"
    config.write_text("field: {hidden_dim: 4096}\n")
    monkeypatch.setattr(cli, "cmd_text", run_out)
    code, err = run_main(["text", "a red cube", "--config", str(config)], capsys)
    assert_user_error(code, err, f"run again with smaller field or render sizes in {config}")


def test_a_render_whose_rays_alone_cannot_fit_is_refused_before_anything_is_written(
    tmp_path, monkeypatch, capsys, tiny_sizes
):
    """--h 100000 wrote a workspace and a step-0 checkpoint, then ran out of memory; a size that
    nearly fit swapped for minutes in its first step. 1 KiB a ray at least (its samples for the
    backward pass): 2048² px, batch 2 is 8.6 GB, refused where 1 GB is available; 16 px (0.5 MB)
    goes on."""
    from dreamtext import trainer

    cfg = SimpleNamespace(h=256, w=256, batch_size=2)
    assert trainer.render_memory_at_least(cfg) == 1024 * 2 * 256 * 256  # 134 MB
    monkeypatch.setattr(trainer, "available_memory", lambda: 10**9)
    workspace = tmp_path / "big"
    args = ["text", "a red cube", "--model", "builtin:shapes", "--no-export"]
    code, err = run_main([*args, "--h", "2048", "--workspace", workspace], capsys)
    assert_user_error(code, err, "--h 2048", "at least 8.6 GB of memory", "1.0 GB is available")
    assert not workspace.exists()
    one_step = ["--iters", "1", "--config", tiny_sizes, "--workspace", workspace]
    code, err = run_main([*args, *one_step], capsys)
    assert code == 0, err


def test_a_batch_whose_rays_alone_cannot_fit_names_the_batch_size(tmp_path, monkeypatch, capsys):
    """`--batch-size 100000` where its rays cannot fit was told to "lower --h" alone: the batch
    multiplies the rays as the render's area does."""
    from dreamtext import trainer

    monkeypatch.setattr(trainer, "available_memory", lambda: 10**9)
    workspace = tmp_path / "big"
    args = ["text", "a red cube", "--model", "builtin:shapes", "--workspace", workspace]
    code, err = run_main([*args, "--batch-size", "100000"], capsys)
    assert_user_error(
        code,
        err,
        "--h 32 --w 32 with batch 100000: its rays and their samples need at least 104.9 GB",
        "; lower --batch-size or --h",
    )
    assert "default" not in err  # builtin:shapes' batch is 2, not the 1 it quoted
    assert not workspace.exists()


def test_a_batch_the_system_would_kill_is_refused_on_a_machine_of_22_gb(
    tmp_path, monkeypatch, capsys
):
    """`--batch-size 100000 --h 32` passed the check on this 22 GB machine (48 B a ray: 4.9 GB)
    and the system killed it in its first step (peak RSS grows 1.2-2.7 KB a ray there:
    benchmarks/RESULTS.md); a batch whose samples fit goes on."""
    from dreamtext import trainer

    monkeypatch.setattr(trainer, "available_memory", lambda: 22 * 10**9)
    args = ["text", "a red cube", "--model", "builtin:shapes", "--no-export"]
    workspace = tmp_path / "run"
    code, err = run_main([*args, "--batch-size", "100000", "--workspace", workspace], capsys)
    assert_user_error(code, err, "at least 104.9 GB of memory and 22.0 GB is available")
    assert not workspace.exists()
    cfg = SimpleNamespace(h=32, w=32, batch_size=768)  # measured: 4.5 GB peak
    assert trainer.render_memory_at_least(cfg) < 4.5e9


def test_other_errors_still_raise(monkeypatch, capsys):
    from dreamtext import cli

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli, "cmd_describe", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["describe", "mug.png"])


def test_typing_the_training_command_again_does_not_wipe_the_run(tmp_path, monkeypatch, tiny_sizes):
    args = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "3", "--no-export"]
    args += ["--config", tiny_sizes]
    make_run(monkeypatch, tmp_path, *args)
    last = tmp_path / "workspace" / "a_red_cube" / "checkpoints" / "last.pt"
    saved = last.read_bytes()
    again = run_cli(*args, "--iters", "2", cwd=tmp_path)
    # The run finished: --resume alone would have nothing to train.
    assert_one_line_user_error(
        again, "already holds a run of this prompt, finished at step 3", "--resume --iters N"
    )
    assert last.read_bytes() == saved
    make_run(monkeypatch, tmp_path, *args, "--iters", "2", "--overwrite")
    assert last.read_bytes() != saved


BUILTIN_RUN = ["text", "a red cube", "--model", "builtin:shapes", "--no-export"]


def test_a_run_typed_again_from_its_own_config_json_is_pointed_beside_it_not_to_overwrite(
    tmp_path, monkeypatch, tiny_sizes
):
    """``text PROMPT --config RUN/config.json`` without --workspace trains in RUN (the file names
    it): the refusal offered --overwrite, which deletes the run the user means to reproduce, and
    the --resume it offered looked in workspace/<prompt> instead of RUN."""
    run = tmp_path / "run"
    first = ["--iters", "2", "--config", tiny_sizes, "--workspace", run]
    make_run(monkeypatch, tmp_path, *BUILTIN_RUN, *first)
    last = run / "checkpoints" / "last.pt"
    saved = last.read_bytes()
    config = run / "config.json"
    again = run_cli("text", "a red cube", "--config", config, cwd=tmp_path)
    assert_one_line_user_error(
        again,
        f"--config {config} is the record of the run in {run}, finished at step 2",
        "--resume --iters N (above 2) to train it further",
    )
    assert "--workspace NEW_FOLDER to train it again beside it" in again.stderr
    assert "--overwrite" not in again.stderr
    other = run_cli("text", "a blue cube", "--config", config, cwd=tmp_path)
    assert_one_line_user_error(other, "run of 'a red cube'", "--workspace NEW_FOLDER")
    assert "--resume" not in other.stderr and "--overwrite" not in other.stderr
    assert last.read_bytes() == saved
    # the --resume it names continues that run, as --workspace RUN --resume does
    resumed = run_cli(
        "text", "a red cube", "--config", config, "--resume", "--iters", "3", cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == str(run)
    assert torch.load(last, weights_only=True)["step"] == 3
    assert not (tmp_path / "workspace").exists()


def test_resume_takes_the_new_learning_rate_and_config_file_and_records_them(
    tmp_path, monkeypatch, tiny_sizes
):
    make_run(monkeypatch, tmp_path, *BUILTIN_RUN, "--iters", "2", "--config", tiny_sizes)
    config = tmp_path / "more_logs.yaml"
    config.write_text("log_every: 1\n")
    again = run_cli(
        *BUILTIN_RUN, "--iters", "4", "--resume", "--lr", "0.5", "--config", config, cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    workspace = tmp_path / "workspace" / "a_red_cube"
    # said on stderr, not only recorded (a resume said nothing of what it changed)
    notes = [line for line in again.stderr.splitlines() if "other settings" in line]
    assert notes == [
        f"dreamtext: resuming {workspace.relative_to(tmp_path)} with other settings than it ran "
        "with, from its last checkpoint on: iters 2 → 4; lr 0.02 → 0.5; log_every 10 → 1"
    ], again.stderr
    recorded = json.loads((workspace / "config.json").read_text())
    assert (recorded["lr"], recorded["log_every"]) == (0.5, 1)
    state = torch.load(workspace / "checkpoints" / "last.pt", weights_only=True)
    # The hash table trains at lr × encoding_lr_scale, the MLPs at lr.
    assert sorted(g["lr"] for g in state["optimizer"]["param_groups"]) == [0.5, 5.0]
    steps = [
        json.loads(line)["step"] for line in (workspace / "log.jsonl").read_text().splitlines()
    ]
    assert steps == [2, 3, 4]  # log_every 10 (the preset's) before, 1 after


def test_a_resume_after_an_attempt_killed_before_its_checkpoint_names_no_change_it_lost(
    tmp_path, monkeypatch, tiny_sizes
):
    """An attempt killed (SIGKILL) before its first checkpoint had rewritten config.json with
    its settings and a resumes entry: the next resume's line named changes against those
    (lr 0.5 → 0.02) though every kept step ran at 0.02, and resumes kept the lost entries."""
    make_run(monkeypatch, tmp_path, *BUILTIN_RUN, "--iters", "2", "--config", tiny_sizes)
    workspace = tmp_path / "workspace" / "a_red_cube"
    record = json.loads((workspace / "config.json").read_text())
    ran_on = record["ran_on"]
    lost = {"step": 2, "changed": {"lr": [0.02, 0.5]}, "ran_on_before": ran_on}
    other_machine = {**ran_on, "host": "elsewhere"}
    # A second lost attempt, resumed from the first lost one's step 3: what ran up to step 2,
    # the checkpoint kept, is the first lost entry's ran_on_before, not this one's.
    lost_too = {"step": 3, "changed": {}, "ran_on_before": {**ran_on, "host": "a third"}}
    resumes = [lost, lost_too]
    killed = {**record, "lr": 0.5, "iters": 300, "ran_on": other_machine, "resumes": resumes}
    (workspace / "config.json").write_text(json.dumps(killed))
    again = run_cli(*BUILTIN_RUN, "--iters", "4", "--resume", "--lr", "0.02", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    notes = [line for line in again.stderr.splitlines() if "other settings" in line]
    assert notes == [
        f"dreamtext: resuming {workspace.relative_to(tmp_path)} with other settings than it ran "
        "with, from its last checkpoint on: iters 2 → 4"
    ], again.stderr
    resumes = json.loads((workspace / "config.json").read_text())["resumes"]
    assert resumes == [{"step": 2, "changed": {"iters": [2, 4]}, "ran_on_before": ran_on}]


def test_a_resume_asking_fewer_iters_than_its_step_does_not_say_it_changes_them(
    tmp_path, monkeypatch, tiny_sizes
):
    # The run keeps its step as its iters (a resume never shortens a run): the line said
    # "iters 3 → 2" of a run that status.json and config.json then gave 3 steps. With nothing
    # left to train, --lr 0.5 trains no step: it was said to apply "from its last checkpoint
    # on" and recorded as the run's lr in config.json (and the checkpoint saved at the end),
    # so a run from that config.json was not this one.
    make_run(monkeypatch, tmp_path, *BUILTIN_RUN, "--iters", "3", "--config", tiny_sizes)
    again = run_cli(*BUILTIN_RUN, "--iters", "2", "--resume", "--lr", "0.5", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    workspace = tmp_path / "workspace" / "a_red_cube"
    assert "other settings" not in again.stderr, again.stderr
    assert (
        "already at step 3 of 3; nothing to train, so these are not used: lr 0.02 → 0.5 (train "
        "on with a larger --iters)"
    ) in again.stderr
    recorded = json.loads((workspace / "config.json").read_text())
    assert (recorded["iters"], recorded["lr"]) == (3, 0.02)
    assert recorded["resumes"][-1]["changed"] == {}
    saved = torch.load(workspace / "checkpoints" / "last.pt", weights_only=True)
    assert saved["config"]["lr"] == 0.02
    assert sorted(g["lr"] for g in saved["optimizer"]["param_groups"]) == [0.02, 0.2]
    # only iters asked lower: nothing changes, nothing is said
    third = run_cli(*BUILTIN_RUN, "--iters", "1", "--lr", "0.5", "--resume", cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert "other settings" not in third.stderr, third.stderr


def test_a_finished_resume_that_falls_back_to_an_earlier_checkpoint_trains_with_its_flags(
    tmp_path, monkeypatch, tiny_sizes
):
    """last.pt of a finished run that does not restore (a field tensor missing) and --resume
    --lr 0.5: the settings were set back to last.pt's before it failed, so the fall-back to
    step 1, which trains step 2, recorded lr 0.02 and said no change, and trained at 0.5."""
    from dreamtext.checkpoint import DIGEST, with_digest

    config = tmp_path / "every.yaml"
    config.write_text("checkpoint_every: 1\nkeep_checkpoints: 5\n")
    args = (*BUILTIN_RUN, "--iters", "2", "--config", str(tiny_sizes), "--config", str(config))
    make_run(monkeypatch, tmp_path, *args)
    workspace = tmp_path / "workspace" / "a_red_cube"
    last = workspace / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state.pop(DIGEST, None)
    state["field"].pop(next(iter(state["field"])))
    torch.save(with_digest(state), last)
    again = run_cli(*args, "--resume", "--lr", "0.5", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "from its last checkpoint on: lr 0.02 → 0.5" in again.stderr, again.stderr
    recorded = json.loads((workspace / "config.json").read_text())
    assert recorded["lr"] == 0.5 and recorded["resumes"][-1]["changed"] == {"lr": [0.02, 0.5]}
    saved = torch.load(last, weights_only=True)
    assert saved["config"]["lr"] == 0.5
    assert sorted(g["lr"] for g in saved["optimizer"]["param_groups"]) == [0.5, 5.0]


def test_resume_refuses_to_change_the_seed_or_the_field_before_loading_anything(
    tmp_path, monkeypatch, tiny_sizes
):
    make_run(monkeypatch, tmp_path, *BUILTIN_RUN, "--iters", "2", "--config", tiny_sizes)
    last = tmp_path / "workspace" / "a_red_cube" / "checkpoints" / "last.pt"
    saved = last.read_bytes()
    seeded = run_cli(*BUILTIN_RUN, "--iters", "4", "--resume", "--seed", "5", cwd=tmp_path)
    assert_one_line_user_error(seeded, "seed 0 → 5", "--overwrite")
    wider = tmp_path / "wider.yaml"
    wider.write_text("field:\n  hidden_dim: 48\n")
    widened = run_cli(*BUILTIN_RUN, "--iters", "4", "--resume", "--config", wider, cwd=tmp_path)
    assert_one_line_user_error(widened, "field.hidden_dim 16 → 48")
    assert last.read_bytes() == saved


def test_a_checkpoint_that_does_not_fit_the_config_is_one_line_not_a_state_dict_error(tmp_path):
    """A path that resumes without reading config.json first (batch, image) meets the same
    refusal in the trainer."""
    from dreamtext.config import resolve_config
    from dreamtext.trainer import train

    overrides = {"prompt": "a red cube", "guidance": {"model": "builtin:shapes"}, "iters": 2}
    overrides.update(TINY_SIZES, workspace=str(tmp_path / "run"), export=False)
    train(resolve_config(overrides))
    overrides.update(iters=3, field={**TINY_SIZES["field"], "hidden_dim": 48})
    with pytest.raises(DreamtextError, match=r"field\.hidden_dim 16 → 48"):
        train(resolve_config(overrides), resume=True)


def test_ctrl_c_in_the_export_says_the_run_is_saved_and_how_to_finish_it(
    tmp_path, monkeypatch, capsys, tiny_sizes
):
    from dreamtext import trainer

    def interrupted_export(run):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "export_trained", interrupted_export)
    monkeypatch.chdir(tmp_path)
    args = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "2"]
    code, err = run_main([*args, "--config", tiny_sizes], capsys)
    assert code == 130
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("dreamtext: interrupted in the export, after step 2; saved ")
    )
    assert err.strip().endswith("; continue with --resume")
    status = json.loads((tmp_path / "workspace" / "a_red_cube" / "status.json").read_text())
    assert (status["state"], status["phase"]) == ("interrupted", "export")


def test_ctrl_c_in_the_final_previews_says_the_run_is_saved_and_how_to_go_on(
    tmp_path, monkeypatch, capsys, tiny_sizes
):
    """The final previews render after the training loop's signal handling has ended (minutes
    on a CPU for a fuzzy field); a stop there said only 'with --resume if the run has a
    checkpoint', of a run trained to its end and saved."""
    from dreamtext import trainer

    save_preview = trainer.save_preview

    def interrupted_final_preview(run, path, **kwargs):
        if path.name == "final.png":
            raise KeyboardInterrupt
        save_preview(run, path, **kwargs)

    monkeypatch.setattr(trainer, "save_preview", interrupted_final_preview)
    monkeypatch.chdir(tmp_path)
    args = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "2", "--no-export"]
    code, err = run_main([*args, "--config", tiny_sizes], capsys)
    assert code == 130
    last = err.strip().splitlines()[-1]
    assert last.startswith("dreamtext: interrupted after step 2; saved ")
    assert last.endswith("checkpoints/last.pt; continue with --resume")
    status = json.loads((tmp_path / "workspace" / "a_red_cube" / "status.json").read_text())
    assert (status["state"], status["step"]) == ("interrupted", 2)


def bar_closed_by_a_stop(tqdm: type, terminated: list[int]) -> type:
    """``tqdm`` whose text→3D bar raises SIGTERM as it closes full, once (its step appended to
    ``terminated``): a stop after the training loop's last look at its flag."""

    class BarClosedByAStop(tqdm):
        def close(self):
            text_bar = getattr(self, "desc", "").startswith("text→3D")
            if text_bar and self.n == self.total and not terminated:
                terminated.append(self.n)
                signal.raise_signal(signal.SIGTERM)
            super().close()

    return BarClosedByAStop


@pytest.mark.parametrize("sent_again", [False, True])
def test_a_stop_after_the_loops_last_look_stops_before_the_export_and_resume_exports(
    tmp_path, monkeypatch, capsys, tiny_sizes, sent_again
):
    """A SIGTERM that lands after the training loop last read its stop flag (as it closes its
    bar) stopped nothing: the run went on to its final preview and export, minutes that a
    scheduler stopping it does not give. It stops there as a stop in the last step does: the
    last step saved, no export begun, 130; the srun's SIGTERM sent again while that checkpoint
    is saved (``sent_again``) cuts nothing short; ``--resume`` then trains nothing and exports."""
    from dreamtext import trainer

    terminated, exports, saves = [], [], []

    BarClosedByAStop = bar_closed_by_a_stop(trainer.tqdm, terminated)

    save_checkpoint = trainer.save_checkpoint

    def save_sent_again(workspace, state, **kwargs):
        saves.append(state["step"])
        if sent_again and terminated and len(saves) == 1:
            signal.raise_signal(signal.SIGTERM)  # the srun's, passing the stop on
        return save_checkpoint(workspace, state, **kwargs)

    monkeypatch.setattr(trainer, "tqdm", BarClosedByAStop)
    monkeypatch.setattr(trainer, "save_checkpoint", save_sent_again)
    monkeypatch.setattr(trainer, "export_trained", lambda run: exports.append(run.step))
    monkeypatch.chdir(tmp_path)
    args = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "3"]
    code, err = run_main([*args, "--config", tiny_sizes], capsys)
    run = tmp_path / "workspace" / "a_red_cube"
    assert (code, terminated, exports, saves) == (130, [3], [], [3]), err
    last = err.strip().splitlines()[-1]
    assert last == (
        f"dreamtext: interrupted before the export, after step 3; saved "
        f"{Path('workspace/a_red_cube/checkpoints/last.pt')}; continue with --resume"
    )
    status = json.loads((run / "status.json").read_text())
    assert (status["state"], status["step"]) == ("interrupted", 3)
    assert not (run / "previews" / "final.png").exists()
    code, err = run_main([*args, "--config", tiny_sizes, "--resume"], capsys)
    assert (code, exports) == (0, [3]), err
    assert "already at step 3 of 3; nothing to train" in err


def test_a_stop_after_the_loops_last_look_stops_train_called_from_python(
    tmp_path, monkeypatch, tiny_sizes
):
    """trainer.train() called from Python, outside a command's signal handling: a SIGTERM
    after the loop's last look at its flag is that loop's alone (no command records it), and
    the run stops there all the same, its last step saved, before its final preview and
    export."""
    from dreamtext import trainer
    from dreamtext.checkpoint import load_checkpoint
    from dreamtext.config import resolve_config
    from dreamtext.interrupts import TrainingInterrupted

    terminated, exports = [], []

    BarClosedByAStop = bar_closed_by_a_stop(trainer.tqdm, terminated)

    monkeypatch.setattr(trainer, "tqdm", BarClosedByAStop)
    monkeypatch.setattr(trainer, "export_trained", lambda run: exports.append(run.step))
    workspace = tmp_path / "a_red_cube"
    overrides = {"prompt": "a red cube", "workspace": str(workspace), "iters": 3}
    cfg = resolve_config(overrides, preset="builtin-shapes", config_file=tiny_sizes)
    with pytest.raises(TrainingInterrupted) as stopped:
        trainer.train(cfg)
    assert (terminated, exports) == ([3], [])
    assert (stopped.value.step, stopped.value.before_export) == (3, True)
    assert load_checkpoint(workspace / "checkpoints" / "last.pt")["step"] == 3
    assert not (workspace / "previews" / "final.png").exists()


def test_a_stop_during_the_end_of_trainings_save_saves_it_and_stops_before_the_export(
    tmp_path, monkeypatch, capsys, tiny_sizes
):
    """A SIGTERM (and the srun's sent again) while the training's last step is saved after its
    loop (iters no multiple of checkpoint_every) was raised into that save: the run ended at
    step 0, no checkpoint, every step since the last periodic one lost, and --resume refused.
    It is noted as a stop in the loop is: the step saved, no export begun, 130, and --resume
    trains nothing and exports."""
    from dreamtext import trainer
    from dreamtext.checkpoint import load_checkpoint

    sent, exports = [], []
    save_checkpoint = trainer.save_checkpoint

    def save_stopped(workspace, state, **kwargs):
        if not sent:
            sent.append(state["step"])
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)  # the srun's, passing the stop on
        return save_checkpoint(workspace, state, **kwargs)

    monkeypatch.setattr(trainer, "save_checkpoint", save_stopped)
    monkeypatch.setattr(trainer, "export_trained", lambda run: exports.append(run.step))
    monkeypatch.chdir(tmp_path)
    args = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "3"]
    code, err = run_main([*args, "--config", tiny_sizes], capsys)
    run = tmp_path / "workspace" / "a_red_cube"
    assert (code, sent, exports) == (130, [3], []), err
    assert err.strip().splitlines()[-1] == (
        f"dreamtext: interrupted before the export, after step 3; saved "
        f"{Path('workspace/a_red_cube/checkpoints/last.pt')}; continue with --resume"
    )
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
    code, err = run_main([*args, "--config", tiny_sizes, "--resume"], capsys)
    assert (code, exports) == (0, [3]), err


# A text run of the tiny field whose export is small: its mesh as PLY alone, no turntable.
TINY_EXPORTED = {
    **TINY_TRAIN,
    "preview_every": 0,
    "export": True,
    "export_options": {"resolution": 16, "formats": ["ply"], "video": False},
}


def _signal_once(signum):
    """The signals sent (a list) and a function that sends ``signum`` to this process the first
    time it is called."""
    sent = []

    def send() -> None:
        if not sent:
            sent.append(signum)
            signal.raise_signal(signum)

    return sent, send


def _stop_after_the_export(monkeypatch, signum) -> list:
    """Send ``signum`` to this process as the export's summary is made: every file of the
    export is in place (mesh/ swapped in), the line saying so not yet printed."""
    from dreamtext.export import ExportResult

    sent, send = _signal_once(signum)
    real = ExportResult.summary

    def summary(self):
        send()
        return real(self)

    monkeypatch.setattr(ExportResult, "summary", summary)
    return sent


def _stop_after_finished(monkeypatch, signum) -> list:
    """Send ``signum`` to this process once status.json says ``finished`` (held back by the
    write's block until it is whole, then delivered)."""
    from dreamtext.runstatus import StatusTracker

    sent, send = _signal_once(signum)
    real = StatusTracker.write

    def write(self, state, *args, **kwargs):
        real(self, state, *args, **kwargs)
        if state == "finished":
            send()

    monkeypatch.setattr(StatusTracker, "write", write)
    return sent


@pytest.mark.parametrize(
    ("signum", "stop_at", "flags"),
    [
        (signal.SIGTERM, _stop_after_the_export, []),
        (signal.SIGINT, _stop_after_finished, []),
        (signal.SIGTERM, _stop_after_finished, ["--no-export"]),
    ],
    ids=[
        "SIGTERM once the export's files are in place",
        "Ctrl-C once finished is recorded",
        "SIGTERM once a run without an export is recorded finished",
    ],
)
def test_a_stop_once_the_runs_work_is_complete_changes_nothing(
    tmp_path, monkeypatch, capsys, signum, stop_at, flags
):
    """A hangup, Ctrl-C or SIGTERM that lands after the run's last file is in place: the run was
    recorded "interrupted in the export" (status.json interrupted, phase export) with every file
    written and the summary printed, or, past status.json's finished, the command exited 130 with
    "interrupted; run the same command again, with --resume if the run has a checkpoint". Now
    the records say finished, the command prints its workspace and exits 0, as without it."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_EXPORTED))
    workspace = tmp_path / "run"
    sent = stop_at(monkeypatch, signum)
    args = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "2", "--config", config]
    code = main([str(a) for a in [*args, "--workspace", workspace, *flags]])
    out, err = capsys.readouterr()
    assert sent == [signum]
    assert (code, out) == (0, f"{workspace}\n"), err
    assert "interrupted" not in err
    status = json.loads((workspace / "status.json").read_text())
    assert (status["state"], status["step"]) == ("finished", 2)
    if not flags:
        assert status["phase"] == "export"
        assert "exported " in err and (workspace / "mesh" / "mesh.ply").is_file()


def test_a_stop_once_the_exports_files_are_in_place_changes_nothing(tmp_path, monkeypatch, capsys):
    """`dreamtext export` of a run stopped in its export, its files swapped in and a SIGTERM
    then, before the run is recorded finished: exit 130, "dreamtext export: interrupted; run
    the same command again", the run still "interrupted" in its export. Now it is finished, the
    summary printed, exit 0."""
    from dreamtext import runstatus, trainer

    def interrupted_export(run):
        raise KeyboardInterrupt

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_EXPORTED))
    workspace = tmp_path / "run"
    args = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "2", "--config", config]
    with monkeypatch.context() as patch:
        patch.setattr(trainer, "export_trained", interrupted_export)
        assert main([str(a) for a in [*args, "--workspace", workspace]]) == 130
    capsys.readouterr()
    sent, send = _signal_once(signal.SIGTERM)
    real = runstatus.finish_cut_export

    def finish_after_a_stop(*a, **k):
        send()
        return real(*a, **k)

    monkeypatch.setattr(runstatus, "finish_cut_export", finish_after_a_stop)
    code = main(["export", "--workspace", str(workspace)])
    out, err = capsys.readouterr()
    assert sent == [signal.SIGTERM]
    assert code == 0, err
    assert "interrupted" not in err and out.startswith(f"exported {workspace} (step 2)")
    status = json.loads((workspace / "status.json").read_text())
    assert (status["state"], status["phase"]) == ("finished", "export")


@contextlib.contextmanager
def live_run_status(workspace: Path, **status) -> Iterator[subprocess.Popen]:
    """A live process of this machine (a sleeper) written into ``workspace``'s status.json with
    ``status`` over what the file held, as a run another terminal runs; killed as the block
    ends. Yields the process."""
    from dreamtext.processes import HOST, process_start
    from dreamtext.runstatus import read_status, write_status

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {"host": HOST, "pid": sleeper.pid, "pid_start": process_start(sleeper.pid)}
        write_status(workspace, {**(read_status(workspace) or {}), **status, **record})
        yield sleeper
    finally:
        sleeper.kill()
        sleeper.wait()


def test_export_of_a_run_another_process_trains_says_so(tmp_path, capsys, holder):
    """An export while the run trains is allowed (a look at it so far); it said nothing of the
    run's own export replacing its files, nor which step the mesh is of."""
    from dreamtext.config import resolve_config
    from dreamtext.trainer import train

    overrides = {"prompt": "a red cube", "guidance": {"model": "builtin:shapes"}, "iters": 2}
    overrides.update(TINY_SIZES, workspace=str(tmp_path / "run"))
    workspace = train(resolve_config(overrides))
    args = ["export", "--workspace", workspace, "--resolution", 32, "--formats", "ply"]
    code, err = run_main([*args, "--no-video"], capsys)
    assert code == 0 and "still training" not in err
    with live_run_status(workspace, state="running", phase="train") as sleeper:
        code, err = run_main([*args, "--no-video"], capsys)
    assert code == 0
    assert f"process {sleeper.pid} is still training {workspace} (step 2)" in err
    assert json.loads((workspace / "mesh" / "mesh.json").read_text())["step"] == 2
    # A run still loading (text --overwrite, say) holds the lock before status.json says so.
    starting = holder(workspace)
    code, err = run_main([*args, "--no-video"], capsys)
    assert code == 0 and f"process {starting.pid} is starting a run in {workspace}" in err
    # Before its first checkpoint: not "train first with dreamtext text PROMPT".
    (workspace / "checkpoints" / "last.pt").rename(tmp_path / "last.pt")
    code, err = run_main([*args, "--no-video"], capsys)
    assert_user_error(code, err, f"process {starting.pid} is training it", "export once it has")


@pytest.mark.parametrize(
    ("export", "phase", "said"),
    [
        (False, "train", "still training"),
        (True, "export", "exporting"),
    ],
)
def test_export_beside_a_live_run_says_what_that_run_does_at_its_end(
    tmp_path, capsys, export, phase, said
):
    """`dreamtext export` of a run training with --no-export said "the run's own export
    replaces these files when it ends": it exports nothing, and the mesh stayed at the step
    exported beside it. A run in its own export was "still training"."""
    from dreamtext.config import resolve_config
    from dreamtext.trainer import train

    overrides = {"prompt": "a red cube", "guidance": {"model": "builtin:shapes"}, "iters": 2}
    config = {**overrides, **TINY_SIZES, "export": False, "workspace": str(tmp_path / "run")}
    workspace = train(resolve_config(config))
    if export:
        config_file = workspace / "config.json"
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "export": True}))
    args = ["export", "--workspace", workspace, "--resolution", 32, "--formats", "ply"]
    with live_run_status(workspace, state="running", phase=phase) as sleeper:
        code, err = run_main([*args, "--no-video"], capsys)
    assert code == 0, err
    assert f"process {sleeper.pid} is {said} {workspace} (step 2)" in err
    assert ("the run's own export replaces these files" in err) is export
    assert ("started with --no-export" in err) is not export


def test_export_of_an_image_run_before_text_to_3d_says_to_go_on_with_image(tmp_path, capsys):
    """`dreamtext export` of describe's folder (or an image run stopped in its descriptor) said
    "train first with `dreamtext text PROMPT`", which starts another run beside it."""
    workspace = tmp_path / "mug"
    (workspace / "descriptor").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(workspace / "descriptor" / "source.png")
    code, err = run_main(["export", "--workspace", str(workspace), "--no-video"], capsys)
    assert_user_error(
        code, err, "is an image→3D run that has not started text→3D", "`dreamtext image IMAGE`"
    )
    assert "dreamtext text PROMPT" not in err
    assert sorted(p.name for p in workspace.rglob("*")) == ["descriptor", "source.png"]


@pytest.mark.parametrize("phase", ["describe", "descriptor"])
def test_export_during_an_image_runs_first_stages_does_not_say_it_trains(tmp_path, capsys, phase):
    """`dreamtext export` while `describe` (or `image` before text→3D) ran in the folder said
    "process N is training it and saves one every checkpoint_every steps": a sentence search
    never saves a field's checkpoint."""
    workspace = tmp_path / "ball"
    (workspace / "descriptor").mkdir(parents=True)
    status = {"state": "running", "phase": phase, "step": 0, "iters": 0}
    with live_run_status(workspace, **status) as sleeper:
        code, err = run_main(["export", "--workspace", workspace, "--no-video"], capsys)
    assert_user_error(code, err, f"process {sleeper.pid} is in its {phase} stage", "text→3D")
    assert "checkpoint_every" not in err


@pytest.mark.parametrize("command", ["text", "view"])
def test_a_path_name_too_long_is_one_line(tmp_path, capsys, command):
    """A folder name over 255 bytes (--workspace, --static) was an OSError traceback (ENAMETOOLONG),
    before anything loaded."""
    long = tmp_path / ("x" * 300)
    run = tmp_path / "runs" / "a_red_cube"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"prompt": "a red cube"}')
    args = {
        "text": ["text", "a red cube", "--model", "builtin:shapes", "--workspace", long],
        "view": ["view", run, "--static", long],
    }[command]
    code, err = run_main(args, capsys)
    assert_user_error(code, err, "File name too long", "give a shorter path")


def test_a_quoted_tilde_in_a_path_is_the_home_folder(tmp_path, monkeypatch, capsys, tiny_yaml):
    """A shell expands ~ only at a word's start: --workspace=~/runs/cube (or a quoted "~/…")
    reached dreamtext as typed and made a folder named "~" in the current one, while --model
    and image paths were expanded (probe-res). (The tiny field: the default one's table, its
    gradient and Adam's state peaked ~0.44 GB above the test's start, for a folder's name.)"""
    from dreamtext.cli import build_parser, expand_home

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    args = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "1", "--no-export"]
    args += ["--config", str(tiny_yaml)]
    code, err = run_main([*args, "--workspace=~/runs/cube"], capsys)
    assert code == 0, err
    assert (tmp_path / "home" / "runs" / "cube" / "config.json").is_file()
    assert not (tmp_path / "~").exists()
    parsed = expand_home(
        build_parser().parse_command_line(["view", "~/a", "b", "--static", "~/site"])
    )
    assert parsed.folders == [str(tmp_path / "home" / "a"), "b"]
    assert parsed.static == str(tmp_path / "home" / "site")
    text = expand_home(build_parser().parse_command_line(["text", "~ a cube", "--config", "~/c"]))
    assert text.prompt == "~ a cube" and text.config == [str(tmp_path / "home" / "c")]


def test_ctrl_c_anywhere_else_is_one_line_and_exit_130(monkeypatch, capsys):
    from dreamtext import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_export", interrupted)
    assert run_main(["export"], capsys) == (
        130,
        "dreamtext export: interrupted; run the same command again\n",
    )


@pytest.mark.parametrize(
    ("argv", "next_step"),
    [
        (
            ["text", "a red cube"],
            "run the same command again, with --resume if the run has a checkpoint",
        ),
        (["text", "a red cube", "--resume"], "run the same command again"),
        (["describe", "mug.png"], "run the same command again to search again from the start"),
        (
            ["image", "mug.png"],
            "run the same command again to go on (it reuses the stages that finished)",
        ),
        (["batch", "prompts.txt"], "run the batch again to go on (finished prompts are skipped)"),
    ],
)
def test_ctrl_c_outside_the_training_loops_says_how_to_go_on(argv, next_step, monkeypatch, capsys):
    """describe's and image's 'interrupted' line said nothing of what to do next."""
    from dreamtext import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, f"cmd_{argv[0]}", interrupted)
    assert run_main(argv, capsys) == (130, f"dreamtext {argv[0]}: interrupted; {next_step}\n")


def test_ctrl_c_while_the_libraries_load_is_one_line(monkeypatch, capsys):
    """Importing torch and diffusers takes seconds before a command starts; a Ctrl-C then
    printed a KeyboardInterrupt traceback from the imports."""
    from dreamtext import cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "quiet_libraries", interrupted)
    assert run_main(["export"], capsys) == (
        130,
        "dreamtext export: interrupted; run the same command again\n",
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "w/checkpoints/last.pt"), 2),
        (OSError(errno.EFBIG, "File too large", "w/checkpoints/last.pt"), 2),  # ulimit -f
        (PermissionError(errno.EACCES, "Permission denied", "w/config.json"), 2),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "dreamtext/x.yaml"), None),
    ],
)
def test_a_full_disk_or_a_refused_write_is_one_line_other_os_errors_raise(
    monkeypatch, capsys, error, expected
):
    from dreamtext import cli

    def failing(args):
        raise error

    monkeypatch.setattr(cli, "cmd_export", failing)
    monkeypatch.setattr(cli, "cmd_text", failing)
    if expected is None:  # a file of ours that is missing is a bug: keep its traceback
        with pytest.raises(FileNotFoundError):
            main(["export"])
        return
    code, err = run_main(["text", "a castle"], capsys)
    assert_user_error(code, err, error.strerror, error.filename, "--workspace")
    # "free disk space" was said to a refused write and a file-size limit too
    assert ("free space on that disk" in err) == (error.errno == errno.ENOSPC)
    # export's --workspace names the run it writes into: another one would not help
    code, err = run_main(["export"], capsys)
    assert_user_error(code, err, error.strerror, error.filename, "copy the run to a disk")
    assert "--workspace" not in err
    # image: a new folder runs its finished stages (the sentence, the descriptor) again
    monkeypatch.setattr(cli, "cmd_image", failing)
    code, err = run_main(["image", "mug.png"], capsys)
    assert_user_error(code, err, error.strerror, error.filename, "--workspace")
    assert err.endswith(
        "pick a folder you can write (--workspace), where the stages that finished here run "
        "again; once fixed, the same command goes on from them\n"
    )


# The errors of a failing disk or file server: errno, what the system calls it, what to do.
FAILING_FILE_SYSTEMS = [
    (errno.EIO, "check that disk or file server (an I/O error: the system log says more)"),
    (errno.ESTALE, "run the command again once the file server is back (a stale NFS file handle"),
    (errno.ENOTCONN, "mount that file system again (its network or FUSE connection is gone)"),
]


@pytest.mark.parametrize(("number", "fix"), FAILING_FILE_SYSTEMS, ids=["EIO", "ESTALE", "ENOTCONN"])
def test_a_failing_disk_or_file_server_in_a_run_is_one_line_that_fits_it(
    tmp_path, monkeypatch, capsys, tiny_sizes, number, fix
):
    """EIO, ESTALE and ENOTCONN in `text` were a traceback: main knew only full disks and
    refused writes, and said "free disk space or …" to those. The run records its failure as
    for any error; nothing else changes (no checkpoint is saved for it)."""
    import dreamtext.trainer as trainer

    workspace, real_step = tmp_path / "run", trainer.train_step
    log = workspace / "log.jsonl"

    def failing(run):
        if run.step == 3:
            raise OSError(number, os.strerror(number), str(log))
        return real_step(run)

    monkeypatch.setattr(trainer, "train_step", failing)
    argv = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "5"]
    code, err = run_main([*argv, "--config", tiny_sizes, "--workspace", workspace], capsys)
    said = [line for line in err.splitlines() if line.startswith("dreamtext")]  # not the bar's
    assert code == 2 and "Traceback" not in err and len(said) == 1, err
    assert said[0].startswith(f"dreamtext: error: {os.strerror(number)} ({log}); {fix}")
    assert said[0].endswith(" or pick a folder you can write (--workspace)")
    status = json.loads((workspace / "status.json").read_text())
    assert (status["state"], status["step"]) == ("failed", 3)
    assert status["error"].startswith(f"OSError: [Errno {number}]")
    assert not (workspace / "checkpoints").exists()


def test_a_full_disk_in_training_after_a_checkpoint_says_to_resume_it(
    tmp_path, monkeypatch, capsys, tiny_sizes
):
    """A checkpoint's save that filled the disk at step 4, with step 2's saved and whole, said
    "free space on that disk (or quota) or pick a folder you can write (--workspace)": a new
    run there trains it again from the start. It says to resume the saved run, which then
    goes on from step 2 once there is room."""
    import dreamtext.trainer as trainer

    workspace, real_save = tmp_path / "run", trainer.save_checkpoint
    last = workspace / "checkpoints" / "last.pt"

    def full_at_step_4(folder, state, keep=3):
        if state["step"] == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(last))
        return real_save(folder, state, keep)

    config = tmp_path / "every2.yaml"
    config.write_text("checkpoint_every: 2\npreview_every: 0\n")
    argv = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "6", "--no-export"]
    argv += ["--config", str(tiny_sizes), "--config", str(config), "--workspace", str(workspace)]
    monkeypatch.setattr(trainer, "save_checkpoint", full_at_step_4)
    code, err = run_main(argv, capsys)
    said = [line for line in err.splitlines() if line.startswith("dreamtext")]  # not the bar's
    assert code == 2 and "Traceback" not in err and len(said) == 1, err
    assert said[0] == (
        f"dreamtext: error: No space left on device ({last}); the run is saved at step 2: free "
        "space on that disk (or quota), then resume it with --resume"
    )
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    code, err = run_main([*argv, "--resume"], capsys)
    assert code == 0, err
    assert torch.load(last, weights_only=True)["step"] == 6


@pytest.mark.parametrize(
    ("number", "fix"),
    [(errno.ENOSPC, "free space on that disk (or quota)"), *FAILING_FILE_SYSTEMS[:1]],
    ids=["ENOSPC", "EIO"],
)
def test_a_full_or_failing_disk_in_a_runs_own_export_says_to_export_the_trained_run(
    tmp_path, monkeypatch, capsys, tiny_sizes, number, fix
):
    """The run had trained to its end and saved its checkpoint when its export failed to write,
    and the line said "... or pick a folder you can write (--workspace)": a new run there trains
    it again from the start. It says to export the saved run once the disk is fixed."""
    import dreamtext.trainer as trainer

    workspace = tmp_path / "run"
    glb = workspace / ".export-partial-x" / "mesh" / "mesh.glb"

    def failing_export(run):
        raise OSError(number, os.strerror(number), str(glb))

    monkeypatch.setattr(trainer, "export_trained", failing_export)
    argv = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "3"]
    code, err = run_main([*argv, "--config", tiny_sizes, "--workspace", workspace], capsys)
    said = [line for line in err.splitlines() if line.startswith("dreamtext")]  # not the bar's
    assert code == 2 and "Traceback" not in err and len(said) == 1, err
    checkpoint = workspace / "checkpoints" / "last.pt"
    assert said[0] == (
        f"dreamtext: error: {os.strerror(number)} ({glb}) in the export; the run trained to step "
        f"3 and is saved ({checkpoint}): {fix}, then run `dreamtext export --workspace "
        f"{shlex.quote(str(workspace))}` (or copy the run to a disk with room, or one you can "
        "write, and export it there)"
    )
    # The command it names is one `dreamtext` takes, for this very run.
    named = shlex.split(said[0].split("`")[1])
    assert named[0] == "dreamtext"
    assert Path(build_parser().parse_command_line(named[1:]).workspace) == workspace
    assert torch.load(checkpoint, weights_only=True)["step"] == 3
    status = json.loads((workspace / "status.json").read_text())
    assert (status["state"], status["phase"]) == ("failed", "export")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["view", "--bogus"], "dreamtext view: unrecognized arguments: --bogus "),
        (["batch", "p.txt", "--nope"], "dreamtext batch: unrecognized arguments: --nope "),
        (["--bogus"], "dreamtext: "),
        (["text"], "dreamtext text: the following arguments are required: prompt "),
    ],
)
def test_a_usage_error_names_the_command_and_its_help(capsys, args, line):
    code, err = run_main(args, capsys)
    command = " ".join(["dreamtext", *[a for a in args[:1] if not a.startswith("-")]])
    assert_user_error(code, err, line, f"(see {command} --help)")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["text", "-red", "--model", "builtin:shapes"],
            "dreamtext text: the following arguments are required: prompt; a prompt that starts "
            "with - goes last, after --: dreamtext text --model builtin:shapes -- -red ",
        ),
        (
            ["describe", "-my", "--clip", "c"],
            "dreamtext describe: the following arguments are required: image; an image that "
            "starts with - goes last, after --: dreamtext describe --clip c -- -my ",
        ),
        (["text", "--bogus"], "dreamtext text: the following arguments are required: prompt "),
        (["text", "-", "--iters"], None),
        (["text", "-O"], None),  # Stable-DreamFusion's flag, typed from habit: no prompt "-O"
    ],
)
def test_a_one_word_prompt_that_starts_with_a_dash_is_told_to_go_after_two_dashes(
    capsys, args, line
):
    """`dreamtext text "-red"` said only that the prompt was missing: argparse took it for an
    unknown flag. A misspelt long flag keeps its line; a lone `-` is no flag, and `-O` no prompt."""
    code, err = run_main(args, capsys)
    if line is None:
        assert "goes last" not in err
        return
    command = args[0]
    assert_user_error(code, err, line, f"(see dreamtext {command} --help)")


@pytest.mark.parametrize(
    ("args", "dashed"),
    [
        (["text", "-red"], "-red"),
        (["text", "--model", "builtin:shapes", "-red"], "-red"),
        (["text", "--negative", "-blurry photo", "-red"], "-red"),
        (["text", "--negative=-blurry", "-red", "--iters", "2"], "-red"),
        (["image", "-x.png", "--iters", "2", "--no-export"], "-x.png"),
        (["batch", "-p.txt", "--iters", "2"], "-p.txt"),
    ],
)
def test_the_command_a_dashed_positional_is_told_to_type_parses(capsys, args, dashed):
    """`dreamtext text --negative "-blurry photo" -red` was told to type `dreamtext text
    --negative -red -- '-blurry photo'`, which failed again (--negative: expected one argument):
    the command the line names takes the dashed word as its positional."""
    code, err = run_main(args, capsys)
    assert_user_error(code, err, "goes last, after --: dreamtext ")
    named = shlex.split(err.split("after --: ")[1].split(" (see ")[0])
    parsed = build_parser().parse_command_line(named[1:])
    positional = {"text": "prompt", "image": "image", "batch": "prompts"}[args[0]]
    assert (parsed.command, getattr(parsed, positional)) == (args[0], dashed)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["text", "-red", "-red"], "-red is no flag of dreamtext text: a prompt"),
        (["text", "-red", "-blue"], "-red and -blue are no flags of dreamtext text: a prompt"),
        (["text", "-red", "--itres"], "-red is no flag of dreamtext text: a prompt"),
        (["describe", "-x.png", "-y.png"], "-x.png and -y.png are no flags of dreamtext describe"),
        (["batch", "-a.txt", "-b.txt"], "-a.txt and -b.txt are no flags of dreamtext batch"),
    ],
)
def test_two_dashed_words_or_a_misspelt_flag_beside_one_name_no_command(capsys, args, named):
    """`dreamtext text -red -blue` (or `-red -red`, or `-red --itres`) was told to type `dreamtext
    text -blue -- -red`, which failed again: no single command is right, so the line names the
    words that are no flags, and says where a dashed prompt goes, without a command."""
    code, err = run_main(args, capsys)
    assert_user_error(code, err, named, "starts with - goes last, after --")
    assert "after --:" not in err


@pytest.mark.parametrize(
    ("args", "hint", "typed"),
    [
        (
            ["view", "-runs"],
            "; a WORKSPACE_OR_ROOT that starts with - goes last, after --: dreamtext view -- "
            "-runs ",
            ["view", "--", "-runs"],
        ),
        (
            ["view", "--port", "0", "-runs"],
            "; a WORKSPACE_OR_ROOT that starts with - goes last, after --: dreamtext view --port 0 "
            "-- -runs ",
            ["view", "--port", "0", "--", "-runs"],
        ),
        (
            ["export", "-runs", "--mesh"],
            "; name the folder with --workspace=-runs ",
            ["export", "--workspace=-runs", "--mesh"],
        ),
        (["view", "-r"], None, None),  # a short flag mistyped, no folder
    ],
)
def test_a_folder_that_starts_with_a_dash_is_told_how_to_be_named(capsys, args, hint, typed):
    """`dreamtext view -runs` and `export -runs` (a folder made with `mkdir -- -runs`) said only
    "unrecognized arguments: -runs": view's folders may be left out, so no "required" line gave
    the hint that text, image, describe and batch give. The command the line names parses."""
    code, err = run_main(args, capsys)
    dashed = next(word for word in args[1:] if word.startswith("-") and word[1] != "-")
    assert_user_error(code, err, f"dreamtext {args[0]}: unrecognized arguments: {dashed}")
    if hint is None:
        assert "starts with -" not in err and "name the folder" not in err
        return
    assert hint in err
    parsed = build_parser().parse_command_line(typed)
    assert "-runs" in (parsed.workspace if args[0] == "export" else parsed.folders)


def test_export_given_the_run_as_a_positional_says_to_pass_it_with_workspace(capsys):
    """`dreamtext export workspace/a_cat`, as `view` and `image` take their paths, was refused
    as "unrecognized arguments: workspace/a_cat" alone: the line names the folder's flag."""
    code, err = run_main(["export", "workspace/a_cat", "--no-video"], capsys)
    assert_user_error(
        code,
        err,
        "dreamtext export: unrecognized arguments: workspace/a_cat; name the folder with "
        "--workspace workspace/a_cat (see dreamtext export --help)",
    )


def test_an_export_flag_is_named_after_its_option():
    """The table spelled each flag beside its option (``"texture_size", "--texture-size"``):
    two names to keep in step, where the option's gives the flag."""
    from dreamtext.exportflags import EXPORT_FLAGS, ExportFlag

    row = ExportFlag("texture_size", "texture size in pixels")
    assert row.flag == "--texture-size"
    assert row.words(64) == ["--texture-size", "64"]
    assert ExportFlag("video", "the turntable", switch=True).words(False) == ["--no-video"]
    export = build_parser()._subparsers._group_actions[0].choices["export"]
    for row in EXPORT_FLAGS:  # argparse stores each flag back under its option's name
        [action] = [a for a in export._actions if row.flag in a.option_strings]
        assert action.dest == row.option


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["text", "a red cube", "--resume", "20000"],
            "dreamtext text: unrecognized arguments: 20000; --resume takes no value (it is on or"
            " off), not 20000 ",
        ),
        (
            ["text", "a red cube", "--res", "128"],  # argparse's abbreviation of --resume
            "dreamtext text: unrecognized arguments: 128; --resume takes no value",
        ),
        (
            ["image", "mug.png", "--adjust", "1"],
            "dreamtext image: unrecognized arguments: 1; --adjust takes no value",
        ),
        (  # the value is the prompt's word too: its first place is the prompt's
            ["text", "yes", "--model", "builtin:shapes", "--perp-neg", "yes"],
            "dreamtext text: unrecognized arguments: yes; --perp-neg takes no value (it is on or"
            " off), not yes ",
        ),
        (
            ["text", "a cube", "--workspace", "yes", "--fp16", "yes"],
            "dreamtext text: unrecognized arguments: yes; --fp16 takes no value",
        ),
    ],
)
def test_a_value_given_to_an_on_off_flag_is_named_so_not_a_piece_of_the_prompt(capsys, args, line):
    """`text "a red cube" --resume 20000` said to quote the prompt as "a red cube 20000": the
    prompt was quoted; the word was a value for a flag that takes none."""
    code, err = run_main(args, capsys)
    assert_user_error(code, err, line)
    assert "quote the" not in err


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["text", "a", "red", "cube", "--model", "builtin:shapes"],
            "dreamtext text: unrecognized arguments: red cube; quote the prompt when it has"
            ' spaces: "a red cube" ',
        ),
        (
            ["describe", "my", "mug.png", "--bogus"],
            "dreamtext describe: unrecognized arguments: mug.png --bogus; quote the image when it"
            ' has spaces: "my mug.png" ',
        ),
    ],
)
def test_words_left_over_from_an_unquoted_prompt_or_path_say_to_quote_it(capsys, args, line):
    """`dreamtext text a red cube` said only "unrecognized arguments: red cube"; a newcomer
    did not see that the shell had split the prompt."""
    code, err = run_main(args, capsys)
    assert_user_error(code, err, line, f"(see dreamtext {args[0]} --help)")


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["text", "a red cube", "--itters", "5"],
            "dreamtext text: unrecognized arguments: --itters 5; did you mean --iters? ",
        ),
        (
            ["export", "--workspace", "w", "--texturesize", "64"],
            "dreamtext export: unrecognized arguments: --texturesize 64; did you mean"
            " --texture-size? ",
        ),
        (
            ["text", "a red cube", "--out", "runs/cube"],
            "dreamtext text: unrecognized arguments: --out runs/cube; the output folder's flag is"
            " --workspace ",
        ),
        (
            ["batch", "p.txt", "--output-dir=runs"],
            "dreamtext batch: unrecognized arguments: --output-dir=runs; the output folder's flag"
            " is --workspace ",
        ),
        (["view", "--bogus"], "dreamtext view: unrecognized arguments: --bogus (see"),
        # image has no --resume (its reruns resume): "did you mean --preset?" misled.
        (
            ["image", "mug.png", "--resume"],
            "dreamtext image: unrecognized arguments: --resume; the same command without --resume"
            " continues the run (finished stages are skipped) ",
        ),
        # Nor has batch: "did you mean --preset?" misled there too.
        (
            ["batch", "p.txt", "--resume"],
            "dreamtext batch: unrecognized arguments: --resume; the same command without --resume"
            " goes on (finished prompts are skipped, an interrupted one resumes) ",
        ),
    ],
)
def test_an_unknown_flag_names_the_flag_it_is_close_to(capsys, args, line):
    """`--itters 5` was refused with a hint to quote the prompt as "a red cube 5", and `--out
    DIR` with one to quote it as "a red cube DIR": the word after an unknown flag is its value,
    and the hint names the flag the user meant."""
    code, err = run_main(args, capsys)
    assert_user_error(code, err, line, f"(see dreamtext {args[0]} --help)")
    assert "quote the" not in err


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["image", "mug.png", "--port", "8000"],
            "dreamtext image: unrecognized arguments: --port 8000; --port is a flag of dreamtext "
            "view, not of dreamtext image ",
        ),
        (
            ["text", "a red cube", "--resolution=64"],
            "dreamtext text: unrecognized arguments: --resolution=64; --resolution is a flag of "
            "dreamtext export, not of dreamtext text ",
        ),
        (
            ["export", "--workspace", "w", "--iters", "5"],
            "dreamtext export: unrecognized arguments: --iters 5; --iters is a flag of dreamtext "
            "text, image and batch, not of dreamtext export ",
        ),
        (
            ["--texture-size", "64", "text", "a red cube"],
            "dreamtext text: unrecognized arguments: --texture-size; --texture-size is a flag of "
            "dreamtext export, not of dreamtext text ",
        ),
    ],
)
def test_a_flag_of_another_command_names_the_commands_it_belongs_to(capsys, args, line):
    """`dreamtext image mug.png --port 8000` said "did you mean --export?", and `text ...
    --resolution 64` (export's flag) only that it was unrecognized: the line names the commands
    that take the flag."""
    code, err = run_main(args, capsys)
    command = next(word for word in args if not word.startswith("-") and not word.isdigit())
    assert_user_error(code, err, line, f"(see dreamtext {command} --help)")
    assert "did you mean" not in err


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["text", "--prompt=a red cube", "--model", "builtin:shapes"],
            "dreamtext text: unrecognized arguments: --prompt=a red cube; the prompt takes no "
            "flag: dreamtext text 'a red cube' ... ",
        ),
        (
            ["text", "--prompt", "a red cube", "--model", "builtin:shapes"],
            "dreamtext text: unrecognized arguments: --prompt; the prompt takes no flag: "
            "dreamtext text PROMPT ... ",
        ),
        (
            ["image", "--image=my mug.png"],
            "dreamtext image: unrecognized arguments: --image=my mug.png; the image takes no "
            "flag: dreamtext image 'my mug.png' ... ",
        ),
        (
            ["batch", "--prompts", "p.txt"],
            "dreamtext batch: unrecognized arguments: --prompts; the prompts file takes no flag: "
            "dreamtext batch PROMPTS_FILE ... ",
        ),
        # One word, no space: argparse takes it for an unknown flag and said only "the
        # following arguments are required: prompt", before any word was left over.
        (
            ["text", "--prompt=cube", "--model", "builtin:shapes"],
            "dreamtext text: the following arguments are required: prompt; the prompt takes no "
            "flag: dreamtext text cube ... ",
        ),
        (
            ["batch", "--prompts-file=p.txt", "--model", "builtin:shapes"],
            "dreamtext batch: the following arguments are required: PROMPTS_FILE; the prompts "
            "file takes no flag: dreamtext batch p.txt ... ",
        ),
        (  # the positional's metavar, its dashes for underscores
            ["batch", "--prompts-file", "p.txt"],
            "dreamtext batch: unrecognized arguments: --prompts-file; the prompts file takes no "
            "flag: dreamtext batch PROMPTS_FILE ... ",
        ),
        (
            ["text", "--negatve=blurry photo", "--model", "builtin:shapes"],
            "dreamtext text: unrecognized arguments: --negatve=blurry photo; did you mean "
            "--negative? ",
        ),
    ],
)
def test_a_positional_given_by_a_flag_is_refused_naming_the_positional(
    tmp_path, monkeypatch, capsys, args, line
):
    """`dreamtext text --prompt="a red cube"` trained the prompt "--prompt=a red cube" (in
    workspace/prompt_a_red_cube): argparse takes a word with a space for a positional. The
    word is an unknown flag; `--prompt` is told that the prompt takes no flag."""
    monkeypatch.chdir(tmp_path)
    code, err = run_main(args, capsys)
    assert_user_error(code, err, line, f"(see dreamtext {args[0]} --help)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["view", "--workspace", "runs"],
            "dreamtext view: unrecognized arguments: --workspace; the workspace or root takes no "
            "flag: dreamtext view WORKSPACE_OR_ROOT ... ",
        ),
        (
            ["view", "--root=my runs"],
            "dreamtext view: unrecognized arguments: --root=my runs; the workspace or root takes "
            "no flag: dreamtext view 'my runs' ... ",
        ),
    ],
)
def test_view_given_its_folder_by_a_flag_names_its_positional(capsys, args, line):
    """`dreamtext view --workspace runs` was told "--workspace is a flag of dreamtext text,
    export, describe, image and batch, not of dreamtext view": true, and no way on, where the
    folder is view's positional (WORKSPACE_OR_ROOT)."""
    code, err = run_main(args, capsys)
    assert_user_error(code, err, line, "(see dreamtext view --help)")
    assert "is a flag of" not in err


@pytest.mark.parametrize(
    ("args", "line", "typed"),
    [
        (
            ["text", "--style=photo a red cube", "--model", "builtin:shapes"],
            "dreamtext text: unrecognized arguments: --style=photo a red cube; a prompt that "
            "starts with - goes last, after --: dreamtext text --model builtin:shapes -- "
            "'--style=photo a red cube' ",
            ["text", "--model", "builtin:shapes", "--", "--style=photo a red cube"],
        ),
        (
            ["describe", "--x=my 1.png"],
            "dreamtext describe: unrecognized arguments: --x=my 1.png; an image that starts with "
            "- goes last, after --: dreamtext describe -- '--x=my 1.png' ",
            ["describe", "--", "--x=my 1.png"],
        ),
    ],
)
def test_a_dashed_positional_like_no_flag_is_told_to_go_after_two_dashes(
    tmp_path, monkeypatch, capsys, args, line, typed
):
    """`dreamtext text "--style=photo a red cube"` (a prompt argparse took as one, which trained
    before FLAG_WITH_VALUE) was refused as "unrecognized arguments: --style=photo a red cube"
    alone, no flag of any command named and no way to give such a prompt; the line says where
    it goes, as for `-red`, and the command it writes parses."""
    monkeypatch.chdir(tmp_path)
    code, err = run_main(args, capsys)
    assert_user_error(code, err, line, f"(see dreamtext {args[0]} --help)")
    assert list(tmp_path.iterdir()) == []
    parsed = build_parser().parse_command_line(typed)
    assert typed[-1] in (getattr(parsed, "prompt", None), getattr(parsed, "image", None))


@pytest.mark.parametrize(
    "args",
    [
        ["text", "--", "-red", "--iters", "2"],
        ["text", "--", "-red", "--iters=2", "--no-export"],
        ["image", "--", "-mug.png", "--iters", "2"],
    ],
)
def test_a_flag_typed_after_two_dashes_is_told_to_go_before_them(capsys, args):
    """`dreamtext text -- -red --iters 2` (the dashed prompt's hint says "goes last, after --")
    was "unrecognized arguments: --iters 2; did you mean --iters?", naming the flag typed."""
    code, err = run_main(args, capsys)
    assert_user_error(
        code,
        err,
        "; --iters goes before --, after which no word is a flag ",
        f"(see dreamtext {args[0]} --help)",
    )
    assert "did you mean" not in err


@pytest.mark.parametrize(
    ("args", "flag", "word"),
    [
        (["--", "-runs", "--static", "x"], "--static", "--static"),
        (["--", "-runs", "--port=0"], "--port", "--port=0"),
        (["--", "-h"], "-h", "-h"),
    ],
)
def test_a_flag_of_view_after_two_dashes_is_told_to_go_before_them(
    capsys, monkeypatch, args, flag, word
):
    """`dreamtext view -- -runs --static x`: view's folders take every word after `--`, so
    --static and x were folders ("no folder -runs, --static, x yet") and it served on 8000."""
    monkeypatch.setattr("dreamtext.cli.cmd_view", lambda parsed: pytest.fail("it served"))
    code, err = run_main(["view", *args], capsys)
    assert_user_error(
        code,
        err,
        f"dreamtext view: {flag} goes before --, after which no word is a flag (a folder "
        f"named {word}: ./{word}) (see dreamtext view --help)",
    )


@pytest.mark.parametrize("command", [["text", "a red cube"], ["batch", "p.txt"]])
def test_two_presets_are_refused_and_the_same_one_twice_is_that_one(capsys, command):
    """`--preset fitfusion --preset stable-dreamfusion` trained with stable-dreamfusion alone
    (config.json's presets left fitfusion out) without a word, where `--config` files stack."""
    code, err = run_main([*command, "--preset", "fitfusion", "--preset=stable-dreamfusion"], capsys)
    assert_user_error(
        code,
        err,
        f"dreamtext {command[0]}: argument --preset: give one preset, not fitfusion and "
        "stable-dreamfusion; a --config file applies over it ",
    )
    args = build_parser().parse_command_line([*command, *["--preset", "fitfusion"] * 2])
    assert args.preset == "fitfusion"


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (
            ["text", "a cube", "--negative", "-blurry"],
            "; a value that starts with - is written --negative=-blurry ",
        ),
        (
            ["text", "a cube", "--neg", "-blurry"],
            "; a value that starts with - is written --neg=-blurry ",
        ),
        (
            ["image", "mug.png", "--workspace", "-runs"],
            "; a value that starts with - is written --workspace=-runs ",
        ),
        (["text", "a cube", "--negative", "--iters", "5"], None),  # a value left out
        (["text", "a cube", "--negative"], None),
        (["text", "--negative", "--", "-red"], None),  # `--` is no flag to give -red to
    ],
)
def test_a_flags_value_that_starts_with_a_dash_is_told_to_follow_an_equals_sign(capsys, args, hint):
    """`--negative -blurry` said only "argument --negative: expected one argument": argparse
    takes a word that starts with - for a flag; `--negative=-blurry` is read as its value."""
    code, err = run_main(args, capsys)
    flag = "--workspace" if "--workspace" in args else "--negative"
    assert_user_error(code, err, f"argument {flag}: expected one argument")
    if hint is None:
        assert "starts with -" not in err
    else:
        assert hint in err
        value = hint.split("written ")[1].strip()
        parsed = build_parser().parse_command_line([*args[:2], value])
        assert getattr(parsed, flag[2:]) == args[-1]


def test_a_word_after_two_dashes_that_looks_like_a_flag_is_the_prompt():
    args = build_parser().parse_command_line(["text", "--", "--prompt=a red cube"])
    assert args.prompt == "--prompt=a red cube"


@pytest.mark.parametrize(
    ("word", "meant"),
    [("txt", "text"), ("exprot", "export"), ("veiw", "view"), ("TEXT", "text"), ("Batch", "batch")],
)
def test_a_misspelt_command_names_the_command_it_is_close_to(capsys, word, meant):
    """`dreamtext txt "a cat"` listed all six commands as argparse's "invalid choice", and so
    did `dreamtext TEXT "a cat"` (Caps Lock), which is no closer to `text` to difflib."""
    code, err = run_main([word, "a cat"], capsys)
    assert_user_error(
        code,
        err,
        f"dreamtext: unknown command '{word}'; did you mean {meant}? (see dreamtext --help)",
    )


@pytest.mark.parametrize(
    ("args", "flag", "command"),
    [
        (["--workspace", "texts", "text", "a red cube"], "--workspace", "text"),
        (["--iters", "5", "text", "a red cube"], "--iters", "text"),
        (["--port=9000", "view", "runs"], "--port", "view"),
    ],
)
def test_a_commands_flag_typed_before_the_command_says_where_it_goes(capsys, args, flag, command):
    """`dreamtext --workspace texts text "a red cube"` said "unknown command 'texts'; did you
    mean text?" (the user had typed text), and `--iters 5 text` "invalid choice: '5'":
    argparse took the flag's value for the command."""
    code, err = run_main(args, capsys)
    assert_user_error(
        code,
        err,
        f"dreamtext: {flag} goes after the command: dreamtext {command} ... {flag} ...",
    )
    assert "unknown command" not in err and "invalid choice" not in err


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["-o", "runs", "text", "a red cube"],
            "dreamtext text: unrecognized arguments: -o; the output folder's flag is --workspace",
        ),
        (["--bogus", "text", "a red cube"], "dreamtext text: unrecognized arguments: --bogus"),
        (
            ["--itrs", "5", "text", "a red cube"],
            "dreamtext text: unrecognized arguments: --itrs; did you mean --iters?",
        ),
    ],
)
def test_a_flag_before_the_command_that_the_command_does_not_take_is_its_unknown_flag(
    capsys, args, line
):
    """`dreamtext --bogus text` said "--bogus goes after the command", of a flag no command
    takes; a short one (`-o runs`) went past the check as the command `runs`."""
    code, err = run_main(args, capsys)
    assert_user_error(code, err, f"{line} (see dreamtext text --help)")
    assert "goes after the command" not in err


def test_a_misspelt_top_level_flag_names_the_flag_it_is_close_to(capsys):
    """`dreamtext --verison` said only that a COMMAND is required."""
    code, err = run_main(["--verison"], capsys)
    assert_user_error(
        code,
        err,
        "dreamtext: unrecognized arguments: --verison; did you mean --version? (see dreamtext"
        " --help)",
    )


def test_a_command_close_to_none_is_argparses_list_of_choices(capsys):
    code, err = run_main(["castle"], capsys)
    assert_user_error(code, err, "dreamtext: argument COMMAND: invalid choice: 'castle'", "'text'")


@pytest.mark.parametrize("under", [False, True])
def test_a_workspace_that_cannot_be_a_folder_is_one_line_before_the_prior_loads(
    tmp_path, monkeypatch, capsys, under
):
    (tmp_path / "afile").write_text("")
    workspace = tmp_path / "afile" / "run" if under else tmp_path / "afile"
    from dreamtext import prior

    monkeypatch.setattr(prior, "load_dataset", lambda *a, **k: pytest.fail("prior loaded"))
    code, err = run_main([*BUILTIN_RUN, "--workspace", workspace], capsys)
    assert_user_error(code, err, f"{tmp_path / 'afile'} is a file", "--workspace")


@pytest.mark.parametrize(
    ("text", "says"), [("[]", "is not a run config"), ("{bad", "is unreadable")]
)
def test_a_workspace_whose_config_json_is_not_a_runs_is_one_line_before_the_prior_loads(
    tmp_path, monkeypatch, capsys, text, says
):
    """A JSON list there was a traceback (``list.get``); broken JSON failed only after the prior
    loaded, leaving a status.json behind."""
    workspace = tmp_path / "run"
    workspace.mkdir()
    (workspace / "config.json").write_text(text)
    from dreamtext import prior

    monkeypatch.setattr(prior, "load_dataset", lambda *a, **k: pytest.fail("prior loaded"))
    code, err = run_main([*BUILTIN_RUN, "--workspace", workspace], capsys)
    assert_user_error(code, err, f"{workspace / 'config.json'} {says}", "delete it")
    assert [p.name for p in workspace.iterdir()] == ["config.json"]


def test_a_workspace_without_write_permission_is_one_line(tmp_path, monkeypatch, capsys):
    """Root writes anywhere, so the refusal is simulated at ``os.access``."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode)
    )
    code, err = run_main([*BUILTIN_RUN, "--workspace", locked / "run"], capsys)
    assert_user_error(code, err, f"cannot write in {locked} (permission denied)")
    assert not (locked / "run").exists()


def test_an_image_export_may_not_read_is_named_not_a_folder_to_write(tmp_path, monkeypatch, capsys):
    """`export --workspace mug.png` where mug.png is another user's (mode 600) and its run's
    folder records it: the refused read was answered "copy the run to a disk with room (or one
    you can write)". Root reads anything, so the refusal is simulated at ``read_bytes`` and
    ``os.access``."""
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (8, 8)).save("mug.png")
    run = tmp_path / "workspace" / "mug"
    run.mkdir(parents=True)
    (run / "config.json").write_text(
        json.dumps({"image_to_3d": {"image": str(tmp_path / "x.png")}})
    )
    real_read, real_access = Path.read_bytes, os.access

    def read_bytes(path):
        if path.name == "mug.png":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    monkeypatch.setattr(
        os, "access", lambda path, mode: Path(path).name != "mug.png" and real_access(path, mode)
    )
    code, err = run_main(["export", "--workspace", "mug.png"], capsys)
    assert_user_error(
        code,
        err,
        "Permission denied (mug.png); you may not read it: ask its owner",
        "chmod a+r mug.png",
    )
    assert "disk with room" not in err


def pretend_read_only(monkeypatch, folder: Path) -> None:
    """``folder`` as on a read-only mount, where access() fails (EROFS) and statvfs says
    ST_RDONLY: simulated at ``os.access`` and ``os.statvfs``, since a test cannot mount."""
    real_access, real_statvfs = os.access, os.statvfs
    monkeypatch.setattr(
        os, "access", lambda path, mode: Path(path) != folder and real_access(path, mode)
    )
    monkeypatch.setattr(
        os,
        "statvfs",
        lambda path: (
            SimpleNamespace(f_flag=os.ST_RDONLY) if Path(path) == folder else real_statvfs(path)
        ),
    )


def test_a_workspace_on_a_read_only_file_system_says_so_not_permission_denied(
    tmp_path, monkeypatch, capsys
):
    """access() fails alike on a read-only mount (EROFS), where chmod cannot help: the line said
    "permission denied" (seen with a read-only bind mount); simulated at ``os.access`` and
    ``os.statvfs`` since a test cannot mount."""
    locked = tmp_path / "ro"
    locked.mkdir()
    pretend_read_only(monkeypatch, locked)
    code, err = run_main([*BUILTIN_RUN, "--workspace", locked / "run"], capsys)
    assert_user_error(code, err, f"cannot write in {locked} (a read-only file system)")
    assert not (locked / "run").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["image", "mug.png"],
        ["text", "a mug", "--diverse"],
        ["text", "a mug"],
        ["describe", "mug.png"],
        ["export"],
    ],
    ids=lambda argv: " ".join(argv),
)
def test_an_empty_workspace_of_a_single_run_is_one_line(tmp_path, monkeypatch, capsys, argv):
    """`--workspace "$RUN"` with RUN unset: image checked the current folder but ran in
    workspace/<image>, text trained into its default folder; each says the flag is empty
    before it checks or writes anything."""
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 64), (200, 30, 30)).save("mug.png")
    code, err = run_main([*argv, "--workspace", ""], capsys)
    assert_user_error(code, err, "--workspace is empty (an unset shell variable?)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mug.png"]


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["describe", "mug.png", "--device", ""], "--device is empty (an unset shell variable?)"),
        (["view", ".", "--host", ""], "--host is empty (an unset shell variable?)"),
        (["describe", "mug.png", "--nouns", ""], "argument --nouns: is empty (an unset shell"),
        (["text", "a mug", "--diverse", "--adjectives", ""], "argument --adjectives: is empty"),
    ],
)
def test_an_empty_device_host_or_word_list_is_one_line(tmp_path, monkeypatch, capsys, argv, line):
    """`describe --device ""` ran on auto, `view --host ""` listened on every network
    interface, and `--nouns ""` (Path("") is ".") was "cannot read word list . (Is a
    directory)"."""
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 64), (200, 30, 30)).save("mug.png")
    code, err = run_main(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and line in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mug.png"]


@pytest.mark.parametrize("command", ["describe", "image"])
def test_an_image_path_that_is_no_file_says_what_it_is(tmp_path, monkeypatch, capsys, command):
    """`describe /dev/null`, a named pipe or a dangling link said "image not found: PATH (check
    the path)" of a path that is there."""
    monkeypatch.chdir(tmp_path)
    os.mkfifo("pipe.png")
    os.symlink("gone.png", "link.png")
    code, err = run_main([command, "pipe.png"], capsys)
    assert_user_error(code, err, "pipe.png is not a file (a device or a pipe)")
    code, err = run_main([command, "/dev/null"], capsys)
    assert_user_error(code, err, "/dev/null is not a file (a device or a pipe)")
    code, err = run_main([command, "link.png"], capsys)
    assert_user_error(code, err, "image not found: link.png is a link to gone.png, which does")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.png", "pipe.png"]


def test_a_disk_too_full_for_the_lock_record_leaves_no_folder_and_no_lock(
    tmp_path, monkeypatch, capsys
):
    """`describe` on a full disk said "No space left on device" and left the new workspace/big/
    holding a `.dreamtext.lock`: the lock file was made, its record could not be written."""
    from dreamtext import processes

    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (64, 64), (200, 30, 30)).save("big.png")

    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    class FullDiskFile:
        """A file on a full disk: made, but its writes fail, and its close (which flushes what
        was buffered) fails too, after closing the file."""

        def __init__(self, path, *args, **kwargs):
            self.file = open(path, *args, **kwargs)  # noqa: SIM115

        def __getattr__(self, name):
            return getattr(self.file, name)

        write = flush = full

        def close(self):
            self.file.close()
            full()

    def open_on_a_full_disk(path, *args, **kwargs):
        if Path(path).name == processes.LOCK_NAME:
            return FullDiskFile(path, *args, **kwargs)
        return open(path, *args, **kwargs)

    monkeypatch.setattr(processes, "open", open_on_a_full_disk, raising=False)
    code, err = run_main(["describe", "big.png", "--clip", "no-such-clip"], capsys)
    assert_user_error(code, err, "No space left on device", "free space")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png"]


def test_a_thread_count_far_above_the_cpus_is_one_line_before_anything_runs(
    tmp_path, monkeypatch, capsys
):
    """`export --threads 100000` printed an out-of-memory line and crashed with a segfault (exit
    139): libgomp cannot start that many threads. 4 a CPU is the most taken."""
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.delenv("DREAMTEXT_THREADS", raising=False)
    code, err = run_main(["export", "--workspace", tmp_path / "run", "--threads", 100000], capsys)
    assert_user_error(
        code,
        err,
        "--threads 100000 is more than 4 threads for each of this machine's 2 CPUs, which only "
        "slows torch down; ask for at most 8 (2, one a CPU, is usually the fastest)",
    )
    monkeypatch.setenv("DREAMTEXT_THREADS", "9")
    code, err = run_main([*BUILTIN_RUN, "--workspace", tmp_path / "run"], capsys)
    assert_user_error(code, err, "DREAMTEXT_THREADS=9 is more than 4 threads")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("DREAMTEXT_THREADS", "8")  # the most taken
    from dreamtext.cli import choose_cpu_threads

    args = SimpleNamespace(threads=None)
    choose_cpu_threads(args)
    assert args.cpu_threads == (8, "DREAMTEXT_THREADS")


def test_a_resume_on_a_read_only_run_says_to_copy_the_run_not_to_pass_another_folder(
    tmp_path, monkeypatch, capsys
):
    """`text --resume` of a run on a read-only mount said "pass --workspace a folder you can
    write", where a new folder has nothing to resume; a new run there may go elsewhere."""
    from dreamtext.trainer import check_workspace

    run = tmp_path / "a_red_cube"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"x")
    (run / "config.json").write_text(json.dumps({"prompt": "a red cube"}))
    pretend_read_only(monkeypatch, run)
    with pytest.raises(DreamtextError) as refused:
        check_workspace(run, "a red cube", resume=True)
    assert str(refused.value) == (
        f"cannot write in {run} (a read-only file system); copy the run to a folder you can "
        "write and resume it with --workspace COPY"
    )
    with pytest.raises(DreamtextError, match=r"; pass --workspace a folder you can write$"):
        check_workspace(run, "a red cube", resume=False, overwrite=True)
    assert sorted(p.name for p in run.rglob("*")) == ["checkpoints", "config.json", "last.pt"]


def test_a_folder_that_refuses_new_folders_though_access_allows_them_is_one_line(
    tmp_path, monkeypatch, capsys
):
    """As root, ``--workspace /proc/x`` passed the ``os.access`` check and then failed to make
    the folder: a traceback of ``FileNotFoundError: '/proc/x'``. Simulated here (for any user,
    who is taken for root) by a folder whose ``mkdir`` fails as /proc's does."""
    monkeypatch.setattr(os, "geteuid", lambda: 0, raising=False)
    proc = tmp_path / "proc"
    proc.mkdir()
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if Path(path).parent == proc:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    code, err = run_main([*BUILTIN_RUN, "--workspace", proc / "x"], capsys)
    assert_user_error(
        code,
        err,
        f"cannot make {proc / 'x'}: {proc} takes no new folders (No such file or directory); "
        "pass --workspace a folder you can write",
    )
    assert list(proc.iterdir()) == []


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0 or not os.path.isdir("/proc/self"),
    reason="only root gets past the access check of /proc",
)
@pytest.mark.parametrize("command", ["text", "describe", "image"])
def test_a_workspace_under_proc_is_one_line_as_root(
    command, tmp_path, capsys, tiny_sd_path, tiny_clip_path
):
    """The walkthrough's own case, for each command that makes a workspace."""
    image = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (200, 30, 30)).save(image)
    args = {
        "text": BUILTIN_RUN,
        "describe": ["describe", image, "--clip", tiny_clip_path],
        "image": ["image", image, "--model", tiny_sd_path, "--clip", tiny_clip_path],
    }[command]
    code, err = run_main([*args, "--workspace", "/proc/dreamtext-x"], capsys)
    assert_user_error(code, err, "cannot make /proc/dreamtext-x: /proc takes no new folders")


def test_text_prints_only_the_workspace_on_stdout_and_makes_files_others_can_read(
    tmp_path, monkeypatch, tiny_sizes
):
    quick = tmp_path / "quick.yaml"
    quick.write_text("export_options:\n  video: false\n  resolution: 32\n")
    args = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "2"]
    args += ["--config", tiny_sizes, "--config", quick]
    make_run(monkeypatch, tmp_path, *args)
    again = run_cli(*args, "--resume", cwd=tmp_path)  # "nothing to train", then the export
    assert again.returncode == 0, again.stderr
    assert again.stdout == "workspace/a_red_cube\n"
    assert "nothing to train" in again.stderr and "faces" in again.stderr
    workspace = tmp_path / again.stdout.strip()
    old = os.umask(0o022)
    os.umask(old)
    for name in ("config.json", "status.json", "checkpoints/last.pt", "mesh/mesh.glb"):
        assert (workspace / name).stat().st_mode & 0o777 == 0o666 & ~old, name


def test_sigterm_while_stable_diffusion_loads_before_describe_is_one_line_and_exit_130(
    tmp_path, tiny_sd_path, tiny_clip_path, red_square_and_vocabulary
):
    """The image command loads Stable Diffusion up front, before any stage has a signal handler
    of its own: SIGTERM there killed the process (-15) with nothing said."""
    image, _ = red_square_and_vocabulary
    script = tmp_path / "sigterm_in_load.py"
    script.write_text(
        "import os, signal, sys, time\n"
        "import dreamtext.imageto3d as imageto3d\n"
        "def load_for(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
        "imageto3d.load_for = load_for\n"
        "from dreamtext.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    workspace = tmp_path / "run"
    args = ["image", image, "--model", tiny_sd_path, "--clip", tiny_clip_path]
    args += ["--workspace", workspace]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (result.returncode, result.stderr) == (
        130,
        "dreamtext image: interrupted; run the same command again to go on (it reuses the "
        "stages that finished)\n",
    )
    assert not workspace.exists()


def test_the_hubs_retry_warnings_stay_off_stderr():
    """Without network huggingface_hub warns "Retrying in 8s [Retry 4/5]" ten times before the
    load fails; dreamtext's one line says what happened (models.hub_unreachable)."""
    import logging

    from dreamtext.models import quiet_model_libraries

    logger = logging.getLogger("huggingface_hub.utils._http")
    before = logging.getLogger("huggingface_hub").level
    try:
        quiet_model_libraries()
        assert not logger.isEnabledFor(logging.WARNING)
    finally:
        logging.getLogger("huggingface_hub").setLevel(before)


def test_the_hubs_download_bars_stay_on_and_the_libraries_loading_bars_off(monkeypatch):
    """transformers' switch for its loading bars turns off the hub's download bars too, so the
    first run of a hub model downloaded its gigabytes without a word; the user's
    HF_HUB_DISABLE_PROGRESS_BARS still turns them off."""
    import huggingface_hub.constants
    import huggingface_hub.utils as hub_utils
    import transformers.utils.logging

    from dreamtext.models import quiet_model_libraries

    was_disabled = hub_utils.are_progress_bars_disabled()
    try:
        quiet_model_libraries("diffusers", "transformers")
        assert not hub_utils.are_progress_bars_disabled()
        assert not transformers.utils.logging.is_progress_bar_enabled()
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_PROGRESS_BARS", True)
        quiet_model_libraries("diffusers", "transformers")
        assert hub_utils.are_progress_bars_disabled()
    finally:
        monkeypatch.undo()
        (hub_utils.disable_progress_bars if was_disabled else hub_utils.enable_progress_bars)()


def run_listing_model_libraries(folder: Path, argv: list) -> subprocess.CompletedProcess:
    """``dreamtext ARGV`` in a fresh interpreter in ``folder``, which prints as its last line of
    stdout the model libraries it imported."""
    code = (
        "import sys; from dreamtext.cli import main; rc = main(sys.argv[1:]); "
        "print(sorted({'diffusers', 'transformers', 'huggingface_hub'} & set(sys.modules))); "
        "sys.exit(rc)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = str(Path(__file__).parents[1])
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, argv)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_builtin_run_its_export_and_view_import_no_model_library(tmp_path):
    """Every command imported diffusers', transformers' and huggingface_hub's logging at start to
    quieten them, about 3 s of CPU here beside torch's 2 s, where a built-in prior's run (the
    README's first), ``export`` and ``view`` never use them."""
    commands = [
        [*BUILTIN_RUN, "--iters", "2", "--workspace", "run"],
        ["export", "--workspace", "run", "--resolution", "32", "--texture-size", "64"],
        ["view", ".", "--static", "site"],
    ]
    for argv in commands:
        done = run_listing_model_libraries(tmp_path, argv)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == "[]", argv
    assert (tmp_path / "site" / "index.html").is_file()


def test_a_fresh_process_on_stable_diffusion_and_clip_prints_only_its_own_lines(
    tmp_path, tiny_sd_path, tiny_clip_path, tiny_yaml, red_square_and_vocabulary
):
    """The model libraries are quietened where dreamtext imports them, before the import:
    transformers showed a "Loading weights" bar for each part it loads, and logged
    "[transformers] `CLIPImageProcessor` requires torchvision" while diffusers' pipeline (the
    diverse image's sampler) imported."""
    import re

    _, vocabulary = red_square_and_vocabulary
    argv = ["text", "a red cube", "--diverse", "--model", tiny_sd_path, "--clip", tiny_clip_path]
    argv += ["--config", tiny_yaml, "--iters", 2, "--descriptor-iters", 2, "--no-export"]
    done = run_listing_model_libraries(tmp_path, [*argv, *vocabulary, "--workspace", "run"])
    assert done.returncode == 0, done.stderr
    ours = re.compile(r"(dreamtext|diverse image|describe|descriptor|text→3D '.*'|preview \S+): ")
    lines = [line for line in re.split(r"[\r\n]", done.stderr) if line.strip()]
    assert lines and [line for line in lines if not ours.match(line)] == []
    assert "describe: " in done.stderr  # the CLIP search ran


def test_several_config_files_apply_in_order(tmp_path, monkeypatch, capsys, tiny_sizes):
    """A second ``--config`` replaced the first, silently: its settings were all lost."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gpu.yaml").write_text("log_every: 2\nrender:\n  march_steps: 128\n")
    (tmp_path / "run.yaml").write_text("log_every: 5\nlr: 0.01\n")
    args = [*BUILTIN_RUN, "--iters", "4", "--config", tiny_sizes]
    args += ["--config", "gpu.yaml", "--config", "run.yaml"]
    code, err = run_main([*args, "--lr", "0.03"], capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "workspace" / "a_red_cube" / "config.json").read_text())
    assert config["render"]["march_steps"] == 128  # gpu.yaml's, over tiny_sizes' 64
    assert config["h"] == TINY_SIZES["h"]  # a key only the first file has
    assert config["log_every"] == 5  # the second file over the first
    assert config["lr"] == 0.03  # a flag over both


@pytest.mark.parametrize("encoding", ["tcnn", "triton"])
def test_an_encoding_that_cannot_run_here_is_one_line_before_the_model_loads(
    tmp_path, monkeypatch, capsys, tiny_sd_path, encoding
):
    """It was found when the field was built, after Stable Diffusion had loaded (minutes)."""
    from dreamtext import models

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        models, "load_stable_diffusion", lambda *a, **k: pytest.fail("the model loaded")
    )
    code, err = run_main(
        ["text", "a castle", "--model", tiny_sd_path, "--encoding", encoding], capsys
    )
    assert_user_error(code, err, f"the {encoding} encoding", "use --encoding torch")
    assert not (tmp_path / "workspace").exists()


def test_a_prompt_typed_with_combining_accents_is_the_same_run(
    tmp_path, monkeypatch, capsys, tiny_sd_path, tiny_yaml
):
    """An accent typed as a combining mark (NFD, as some keyboards and file names give it) named
    the NFC prompt's folder but was refused there as another prompt's run. (In this process: two
    CLI processes of their own spent ~9 s of CPU each importing torch and diffusers again.)"""
    nfc, nfd = "Crème brûlée", "Cre\u0300me bru\u0302le\u0301e"
    run = ["--model", tiny_sd_path, "--config", tiny_yaml, "--no-export"]
    make_run(monkeypatch, tmp_path, "text", nfc, *run, "--iters", "2")
    capsys.readouterr()
    code, err = run_main(["text", nfd, *run, "--iters", "2"], capsys)
    assert_user_error(code, err, "already holds a run of this prompt, finished at step 2")
    code, err = run_main(["text", nfd, "--resume", "--iters", "3"], capsys)
    assert code == 0, err
    assert [p.name for p in (tmp_path / "workspace").iterdir()] == ["crème_brûlée"]
    status = json.loads((tmp_path / "workspace" / "crème_brûlée" / "status.json").read_text())
    assert (status["state"], status["step"]) == ("finished", 3)


@pytest.mark.parametrize("under", [False, True])
def test_a_workspace_through_a_link_to_nothing_is_one_line_before_the_prior_loads(
    tmp_path, monkeypatch, capsys, under
):
    """A link to a folder that was moved away: the check walked past it to its writable parent,
    and the first write (status.json's mkdir) was a FileExistsError traceback (exit 1)."""
    (tmp_path / "gone").symlink_to(tmp_path / "moved")
    workspace = tmp_path / "gone" / "run" if under else tmp_path / "gone"
    from dreamtext import prior

    monkeypatch.setattr(prior, "load_dataset", lambda *a, **k: pytest.fail("prior loaded"))
    code, err = run_main([*BUILTIN_RUN, "--workspace", workspace], capsys)
    assert_user_error(code, err, f"{tmp_path / 'gone'} is a link to", "does not exist")
    assert not (tmp_path / "moved").exists()


def test_a_line_break_in_a_folder_to_make_is_refused(tmp_path, monkeypatch, capsys):
    """``--workspace $'runs\\nx'`` (a name pasted with its line break) made a folder of that
    name."""
    monkeypatch.chdir(tmp_path)
    code, err = run_main([*BUILTIN_RUN, "--workspace", "runs\nx"], capsys)
    assert_user_error(code, err, "--workspace holds the control character U+000A", "character 5")
    code, err = run_main(["view", ".", "--static", "site\r"], capsys)
    assert_user_error(code, err, "--static holds the control character U+000D")
    assert list(tmp_path.iterdir()) == []


def test_a_workspace_name_that_is_not_utf8_is_refused_before_anything_is_written(
    tmp_path, monkeypatch, capsys
):
    """``--workspace $'caf\\xe9'`` (a folder named on a Latin-1 system): Python reads the byte
    as a lone surrogate, and writing config.json, which records the path as UTF-8, was a
    UnicodeEncodeError traceback after status.json was written; `batch` failed each line so and
    `export` of such a run called its whole checkpoint "not a whole checkpoint"."""
    monkeypatch.chdir(tmp_path)
    code, err = run_main([*BUILTIN_RUN, "--workspace", "runs/caf\udce9"], capsys)
    assert_user_error(code, err, "--workspace holds a byte that is not UTF-8 text (0xE9)")
    assert_user_error(code, err, "at character 9", "rename")
    code, err = run_main(["export", "--workspace", "caf\udce9"], capsys)
    assert_user_error(code, err, "--workspace holds a byte that is not UTF-8 text (0xE9)")
    assert list(tmp_path.iterdir()) == []


def test_export_of_a_newest_run_whose_folder_name_is_not_utf8_is_refused_before_reading_it(
    tmp_path, monkeypatch, capsys
):
    """``dreamtext export`` without --workspace, where the newest run is in ``workspace/caf\\xe9``
    (copied from a Latin-1 system): torch cannot open a checkpoint named so, and the export
    meshed the run, then said its whole last.pt was "not a whole checkpoint". It is refused as
    --workspace of such a name is, naming the run."""
    monkeypatch.chdir(tmp_path)
    checkpoints = tmp_path / "workspace" / "caf\udce9" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.pt").write_bytes(b"a checkpoint")
    before = sorted(tmp_path.rglob("*"))
    code, err = run_main(["export"], capsys)
    assert_user_error(code, err, "the most recent run, workspace/caf\\xe9, is in a folder")
    assert_user_error(code, err, "not UTF-8 text (0xE9)", "rename the folder")
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("resume", [[], ["--resume"]])
def test_a_config_workspace_the_locale_cannot_name_is_one_line(tmp_path, resume):
    """A --config file (UTF-8) naming ``workspace: runs/一座`` under a locale that is not UTF-8
    (``LC_ALL=C`` with ``PYTHONUTF8=0``; ``LANG=en_US`` of ISO-8859-1): a UnicodeEncodeError
    traceback from os.path.realpath, before anything loaded."""
    (tmp_path / "c.yaml").write_text("workspace: runs/一座\n", encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUTF8": "0", "LC_ALL": "C"}
    done = subprocess.run(
        [sys.executable, "-m", "dreamtext.cli", *BUILTIN_RUN, "--config", "c.yaml", *resume],
        cwd=tmp_path, env=env, capture_output=True, timeout=300,
    )  # fmt: skip
    err = done.stderr.decode("ascii")
    assert_user_error(done.returncode, err, "config file 'c.yaml' names the workspace runs/")
    assert_user_error(done.returncode, err, "locale's encoding (ascii)", "UTF-8 locale")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["text", "café".encode(), "--model", "builtin:shapes"], "the prompt"),
        ([*BUILTIN_RUN, "--workspace", "runs/café".encode()], "--workspace"),
    ],
)
def test_utf8_typed_under_a_locale_that_is_not_is_told_to_change_the_locale(tmp_path, argv, said):
    """``PYTHONUTF8=0 LC_ALL=C dreamtext text "café"`` typed in a UTF-8 terminal: Python reads
    the command line as ASCII, and the line said the bytes were not UTF-8 text and to set the
    terminal to UTF-8, which it was."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUTF8": "0", "LC_ALL": "C"}
    done = subprocess.run(
        [sys.executable, "-m", "dreamtext.cli", *argv], cwd=tmp_path, env=env,
        capture_output=True, timeout=300,
    )  # fmt: skip
    err = done.stderr.decode("ascii")
    assert_user_error(done.returncode, err, f"{said} is UTF-8 text, which Python read in this")
    assert_user_error(done.returncode, err, "locale's encoding (ascii)", "LC_ALL=C.UTF-8")
    assert list(tmp_path.iterdir()) == []


def test_a_byte_that_is_not_utf8_in_a_utf8_locale_still_says_so(tmp_path):
    """A Latin-1 terminal's ``café`` (byte 0xE9) under a UTF-8 locale is no UTF-8 text."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LC_ALL": "C.UTF-8"}
    done = subprocess.run(
        [sys.executable, "-m", "dreamtext.cli", "text", b"caf\xe9", "--model", "builtin:shapes"],
        cwd=tmp_path, env=env, capture_output=True, timeout=300,
    )  # fmt: skip
    err = done.stderr.decode()
    assert_user_error(done.returncode, err, "holds a byte that is not UTF-8 text (0xE9)")


@pytest.mark.parametrize("command", ["describe", "image"])
def test_an_image_name_that_is_not_utf8_is_refused_before_anything_is_written(
    tmp_path, monkeypatch, capsys, tiny_clip_path, tiny_sd_path, command
):
    """``describe $'mug\\xe9.png'``: sentence.json records the image's path as UTF-8 text, and
    writing it was a UnicodeEncodeError traceback after the search, leaving a workspace."""
    monkeypatch.chdir(tmp_path)
    image = "mug\udce9.png"
    Image.new("RGB", (32, 32), "white").save(image)
    models = ["--clip", tiny_clip_path] + (["--model", tiny_sd_path] if command == "image" else [])
    code, err = run_main([command, image, *models], capsys)
    assert_user_error(code, err, "IMAGE holds a byte that is not UTF-8 text (0xE9)")
    assert_user_error(code, err, "at character 4", "rename the file")
    assert sorted(p.name for p in tmp_path.iterdir()) == [image]


@pytest.mark.parametrize(
    ("flag", "what"), [("--model", "folder"), ("--clip", "folder"), ("--nouns", "file")]
)
def test_a_model_or_vocabulary_name_that_is_not_utf8_is_refused_before_anything_is_written(
    tmp_path, monkeypatch, capsys, tiny_clip_path, tiny_sd_path, flag, what
):
    """``--model $'sd\xe9'`` (a folder named on a Latin-1 system): config.json records it as
    UTF-8 text, and writing it was a UnicodeEncodeError traceback after the model was loaded,
    leaving a workspace with status.json; ``describe --nouns $'nouns\xe9.txt'`` the same at
    sentence.json after the search; and ``--clip`` a SafetensorError traceback ("Path ... is
    not valid UTF-8"). Now one line, before anything is written."""
    monkeypatch.chdir(tmp_path)
    named = {"--model": tiny_sd_path, "--clip": tiny_clip_path, "--nouns": None}[flag]
    odd = f"odd\udce9{'.txt' if named is None else ''}"
    if named is None:
        Path(odd).write_text("cube\nmug\n")
    else:
        os.symlink(named, odd)
    if flag == "--model":
        argv = ["text", "a colorful cube", "--model", odd, "--iters", "1", "--no-export"]
    else:
        Image.new("RGB", (32, 32), "white").save("mug.png")
        argv = ["describe", "mug.png", "--clip", tiny_clip_path, flag, odd]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = run_main([*argv, "--workspace", "run"], capsys)
    assert_user_error(code, err, f"{flag} holds a byte that is not UTF-8 text (0xE9)")
    assert_user_error(code, err, "at character 4", f"rename the {what}")
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("command", ["text", "describe", "image"])
def test_a_symlink_loop_is_named_in_one_line(tmp_path, monkeypatch, capsys, command):
    """A loop (l1 → l2 → l1) as text's --workspace or as describe's or image's image was a
    RuntimeError traceback (Path.resolve on a loop), exit 1; where it was caught, the line
    called it "a link to l2, which does not exist" of an l2 that does."""
    monkeypatch.chdir(tmp_path)
    os.symlink("l2", "l1")
    os.symlink("l1", "l2")
    if command == "text":
        code, err = run_main([*BUILTIN_RUN, "--workspace", "l1"], capsys)
        assert_user_error(code, err, "l1 is a link that leads back to itself (l1 → l2 → …)")
        assert "point it at a folder" in err
    else:
        code, err = run_main([command, "l1"], capsys)
        assert_user_error(code, err, "image not found: l1 is a link that leads back to itself")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l1", "l2"]


def test_a_run_in_the_folder_of_runs_or_inside_a_run_is_refused_in_one_line(
    tmp_path, monkeypatch, capsys, tiny_yaml
):
    """`text --workspace workspace` made the folder of runs one run (the viewer then showed that
    run alone), and `--workspace RUN/mesh` a run inside a run, which RUN's export replaces."""
    common = ["--model", "builtin:shapes", "--iters", "2", "--config", tiny_yaml, "--no-export"]
    make_run(monkeypatch, tmp_path, "text", "a red cube", *common)
    files = sorted(str(p) for p in (tmp_path / "workspace").rglob("*"))
    for workspace, message in [
        ("workspace", "workspace holds runs (a_red_cube): a run needs a folder of its own; "
         "pass --workspace workspace/NEW_FOLDER"),
        ("workspace/a_red_cube/mesh", "workspace/a_red_cube/mesh is inside the run in "
         "workspace/a_red_cube: a run needs a folder of its own; pass --workspace a folder "
         "outside it"),
    ]:  # fmt: skip
        result = run_cli("text", "a blue cube", *common, "--workspace", workspace, cwd=tmp_path)
        assert_one_line_user_error(result, message)
        code, err = run_main(["describe", "x.png", "--workspace", workspace], capsys)
        assert code == 2 and "a run needs a folder of its own" in err
    assert sorted(str(p) for p in (tmp_path / "workspace").rglob("*")) == files


def test_a_copied_run_whose_model_folder_moved_is_refused_in_one_line_naming_model(
    tmp_path, tiny_sd_path, capsys
):
    """A run copied elsewhere (its config.json names the model folder by its absolute path),
    resumed after that folder moved: the refusal came after a line saying the run resumed with
    other settings, as if it went on."""
    import shutil

    model = shutil.copytree(tiny_sd_path, tmp_path / "sd")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY_TRAIN, "preview_every": 0}))
    run = ["text", "a red cube", "--config", str(config), "--iters", "2"]
    assert main([*run, "--model", str(model), "--workspace", str(tmp_path / "run")]) == 0
    copy = shutil.copytree(tmp_path / "run", tmp_path / "elsewhere" / "run")
    model.rename(tmp_path / "sd.moved")
    capsys.readouterr()
    again = ["text", "a red cube", "--workspace", str(copy), "--resume", "--iters", "4"]
    assert main(again) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"model folder '{model}' does not exist" in err[0], err
    assert "--model" in err[0]
    assert main([*again, "--model", str(tmp_path / "sd.moved")]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "other settings" in line]
    assert len(notes) == 1 and "guidance.model" in notes[0]


def test_sigterm_mid_render_drops_that_step_saves_the_last_whole_one_and_exits_130(
    tmp_path, monkeypatch, capsys, tiny_sizes
):
    """A SIGTERM was honoured only between steps: a step too big to end (``--h 4096``) ran on
    past a scheduler's stop until SIGKILL, leaving status.json "running" and nothing saved. It
    now stops at the sampler's next chunk of rays, without that step's update."""
    import signal

    from dreamtext import samplers, trainer
    from dreamtext.checkpoint import load_checkpoint

    real_step, real_sample = trainer.train_step, samplers.DenseSampler._sample
    armed = []

    def step(run):
        if run.step == 1:
            armed.append(True)  # the signal lands in step 2's first chunk of rays
        return real_step(run)

    def sample(self, *args, **kwargs):
        if armed:
            armed.clear()
            signal.raise_signal(signal.SIGTERM)
        return real_sample(self, *args, **kwargs)

    chunked = tmp_path / "chunked.yaml"
    chunked.write_text("render: {chunk_size: 64}\n")  # 8 chunks of rays a 16 px render
    monkeypatch.setattr(trainer, "train_step", step)
    monkeypatch.setattr(samplers.DenseSampler, "_sample", sample)
    monkeypatch.chdir(tmp_path)
    chunked_run = [*BUILTIN_RUN, "--config", tiny_sizes, "--config", chunked]
    code, err = run_main([*chunked_run, "--iters", "3"], capsys)
    assert code == 130, err
    assert "interrupted after step 1; saved " in err.strip().splitlines()[-1]
    workspace = tmp_path / "workspace" / "a_red_cube"
    status = json.loads((workspace / "status.json").read_text())
    assert (status["state"], status["step"]) == ("interrupted", 1)
    saved = load_checkpoint(workspace / "checkpoints" / "last.pt")
    assert saved["step"] == 1
    monkeypatch.setattr(trainer, "train_step", real_step)
    monkeypatch.setattr(samplers.DenseSampler, "_sample", real_sample)
    code, err = run_main([*chunked_run, "--iters", "1", "--workspace", "one"], capsys)
    assert code == 0, err
    one_step = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")["field"]
    for key, value in one_step.items():  # the field is step 1's: step 2's update was dropped
        assert torch.equal(saved["field"][key], value), key


@pytest.mark.parametrize("where", [".", "empty"])
def test_export_of_a_folder_without_a_run_says_what_is_missing_and_what_to_run(
    tmp_path, monkeypatch, capsys, where
):
    """`export --workspace .` in an empty folder said only "no checkpoint at
    checkpoints/last.pt: train first"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    shown = f". ({tmp_path.resolve()})" if where == "." else "empty"
    code, err = run_main(["export", "--workspace", where], capsys)
    assert_user_error(
        code,
        err,
        f"{shown} is not a dreamtext run: it has no config.json and no checkpoints/last.pt; ",
        "make a run with `dreamtext text PROMPT` or `dreamtext image IMAGE`, then pass "
        "--workspace its folder (they go under workspace/; `dreamtext export` alone exports "
        "the newest there)",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
    assert list((tmp_path / "empty").iterdir()) == []


def test_export_of_a_run_stopped_before_its_first_checkpoint_says_to_train_it(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    Path("run").mkdir()
    Path("run/config.json").write_text(json.dumps({"prompt": "a red cube"}))
    code, err = run_main(["export", "--workspace", "run"], capsys)
    assert_user_error(code, err, "no checkpoint at run/checkpoints/last.pt: train first")


def test_the_top_level_help_gives_the_readmes_first_run_and_where_each_commands_flags_are():
    """`dreamtext --help` lists the commands but not their flags: it says where they are, and its
    offline first run is the README's, a command the parser takes."""
    import re

    text = " ".join(build_parser().format_help().split())
    assert "dreamtext COMMAND --help" in text
    first_run = re.search(r"Offline first run: (dreamtext text .+? --model builtin:shapes)", text)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert f"```bash\n{first_run.group(1)}\n```" in readme
    args = build_parser().parse_command_line(shlex.split(first_run.group(1))[1:])
    assert (args.command, args.prompt, args.model) == ("text", "a colorful cube", "builtin:shapes")


def run_with_stdout_closed(command: list[str], cwd: Path, unbuffered: bool):
    """``python -m dreamtext COMMAND`` whose stdout is a pipe its reader closed before anything
    was written (`| true`), stdout buffered as a user's is or not (PYTHONUNBUFFERED)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONUNBUFFERED", None)
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    read, write = os.pipe()
    os.close(read)
    done = subprocess.run(
        [sys.executable, "-m", "dreamtext", *command],
        cwd=cwd,
        env=env,
        stdout=write,
        stderr=subprocess.PIPE,
    )
    os.close(write)
    return done


@pytest.mark.parametrize("unbuffered", [False, True])
def test_a_closed_stdout_is_no_traceback(tmp_path, unbuffered):
    """`dreamtext view RUNS --static site | true`: the site was written, then the path's print
    raised BrokenPipeError with a traceback; with stdout buffered (no PYTHONUNBUFFERED, as a
    user's is) Python's flush at exit then printed "Exception ignored ... BrokenPipeError" and
    the status was 120."""
    run = tmp_path / "runs" / "a_red_cube"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"prompt": "a red cube", "iters": 2}))
    (run / "status.json").write_text(json.dumps({"state": "finished", "step": 2, "iters": 2}))
    done = run_with_stdout_closed(["view", "runs", "--static", "site"], tmp_path, unbuffered)
    assert done.stderr.decode() == ""
    assert done.returncode == 1
    assert (tmp_path / "site" / "index.html").is_file()


@pytest.mark.parametrize("unbuffered", [False, True])
@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_into_a_closed_stdout_says_nothing_on_stderr(tmp_path, flag, unbuffered):
    """`dreamtext --help | true` printed "Exception ignored ... BrokenPipeError" (status 120).
    With stdout unbuffered (PYTHONUNBUFFERED) it exited 0, where a buffered stdout exited 1:
    argparse drops the error of its write, and only the buffered flush after it told it."""
    done = run_with_stdout_closed([flag], tmp_path, unbuffered=unbuffered)
    assert done.stderr.decode() == ""
    assert done.returncode == 1


@pytest.mark.parametrize("command", [["--help"], ["--version"], ["text", "--help"]])
def test_help_and_version_are_printed_once(capsys, command):
    """The parser's own write of ``--help`` and ``--version`` to stdout (which lets a closed
    stdout's BrokenPipeError through) writes the text once, and nothing to stderr."""
    from dreamtext import __version__
    from dreamtext.cli import main

    with pytest.raises(SystemExit) as stop:
        main(command)
    assert stop.value.code in (0, None)
    out, err = capsys.readouterr()
    assert err == ""
    if command == ["--version"]:
        assert out == f"dreamtext {__version__}\n"
    else:
        assert out.startswith("usage: ") and out.count("usage: ") == 1


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_a_command_started_without_a_stdout_ends_without_a_traceback(flag):
    """`dreamtext --version >&-` (no file descriptor 1: Python's ``sys.stdout`` is ``None``)
    ended in an AttributeError traceback from the flush of stdout at the command's end."""
    done = subprocess.run(
        [sys.executable, "-m", "dreamtext", flag],
        stderr=subprocess.PIPE,
        preexec_fn=lambda: os.close(1),
        timeout=120,
    )
    assert "Traceback" not in done.stderr.decode()
    assert done.returncode == 0


def test_a_batch_whose_table_cannot_be_printed_keeps_its_line_and_status(monkeypatch, capsys):
    """`dreamtext batch prompts.txt | head -1`, interrupted: the table's print to the closed
    stdout raised BrokenPipeError, which lost the line naming the prompts not started and
    turned the status 130 (what a scheduler requeues on) into 1."""
    from dreamtext import batch, cli

    stopped = SimpleNamespace(records=[{}], not_started=[2, 3], overwrite=False, interrupted=True)
    monkeypatch.setattr(batch, "run_batch", lambda *args: stopped)
    monkeypatch.setattr(batch, "summary_table", lambda records: "line status")
    monkeypatch.setattr(batch, "not_started_line", lambda entries, overwrite: "2 not started")

    class ClosedStdout:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):  # not the test process's own stdout to point at /dev/null
            raise OSError("no file descriptor")

    monkeypatch.setattr(sys, "stdout", ClosedStdout())
    code = cli.cmd_batch(build_parser().parse_command_line(["batch", "prompts.txt"]))
    assert code == cli.EXIT_INTERRUPTED
    assert "2 not started" in capsys.readouterr().err


def test_a_closed_stdout_after_ctrl_c_is_not_taken_for_an_interrupt():
    """`dreamtext view RUNS | head -1`, then Ctrl-C: the server's "stopped" line met the closed
    stdout, and the BrokenPipeError, coming after a signal, was taken for a library's mangled
    interrupt ("dreamtext view: interrupted", 130) instead of a cut output."""
    import signal

    from dreamtext.cli import _sigterm_raises_while_loading

    with pytest.raises(BrokenPipeError), _sigterm_raises_while_loading() as received:
        received.append(signal.SIGINT)
        raise BrokenPipeError(32, "Broken pipe")


def test_batch_names_a_root_it_cannot_write_in_before_reading_the_prompts_file(
    capsys, monkeypatch, tmp_path
):
    """The early check names the workspace root first, as run_batch's own check would after the
    prompts file: a read-only root and a prompts file that is not there are two fixes, and the
    one that stops every line comes first, before any model loads."""
    from dreamtext import inputs

    read_only = OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path))
    monkeypatch.setattr(inputs, "root_write_error", lambda root: read_only)
    code, err = run_main(["batch", tmp_path / "missing.txt", "--workspace", tmp_path], capsys)
    assert_user_error(code, err, f"cannot write in --workspace {tmp_path}: ")


def test_a_finished_no_export_run_resumed_with_export_makes_its_mesh(
    tmp_path, monkeypatch, capsys, tiny_sizes
):
    """A run trained with --no-export, typed again with --resume, said "nothing to train" and
    wrote no mesh (so did `--resume --iters N`, which its refusal offered); `text` had no way to
    ask for the mesh. --export asks; the refusal names `dreamtext export`."""
    config = tmp_path / "small.yaml"
    config.write_text(
        yaml.safe_dump({"export_options": {"resolution": 16, "formats": ["ply"], "video": False}})
    )
    args = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "2"]
    args += ["--config", tiny_sizes, "--config", config]
    make_run(monkeypatch, tmp_path, *args, "--no-export")
    capsys.readouterr()
    run = tmp_path / "workspace" / "a_red_cube"
    code, err = run_main(args, capsys)
    assert_user_error(
        code,
        err,
        "finished at step 2 with no mesh (--no-export; `dreamtext export --workspace "
        "workspace/a_red_cube` makes it)",
    )
    make_run(monkeypatch, tmp_path, *args, "--resume")  # the run's choice is kept
    assert not (run / "mesh").exists()
    assert json.loads((run / "config.json").read_text())["export"] is False
    make_run(monkeypatch, tmp_path, *args, "--resume", "--export")
    assert (run / "mesh" / "mesh.ply").is_file()
    assert json.loads((run / "mesh" / "mesh.json").read_text())["step"] == 2
    assert json.loads((run / "config.json").read_text())["export"] is True


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--lr", "-1e-3"], "argument --lr: must be positive and finite, got -1e-3"),
        (["--lr", "-inf"], "argument --lr: must be positive and finite, got -inf"),
        (["--guidance", "-1E2"], "argument --guidance: must be 0 or more and finite, got -1E2"),
        (["--seed", "-1e3"], "argument --seed: expected an integer seed, got '-1e3'"),
    ],
)
def test_a_negative_number_in_exponent_form_gets_the_flags_own_refusal(capsys, args, line):
    """argparse took `-1e-3` for a flag: "argument --lr: expected one argument", of a flag that
    was given one; `--lr -0.001` got the flag's own line."""
    code, err = run_main(["text", "a red cube", *args], capsys)
    assert_user_error(code, err, f"dreamtext text: {line} (see dreamtext text --help)")


def test_a_negative_shard_gets_the_shards_own_refusal(capsys):
    code, err = run_main(["batch", "prompts.txt", "--shard", "-1/2"], capsys)
    assert_user_error(code, err, "dreamtext batch: argument --shard: must be K/N with 0 ≤ K < N")


def test_perp_neg_without_view_prompts_is_refused_before_any_model_loads(
    tmp_path, monkeypatch, capsys
):
    """`--perp-neg --no-view-prompt` was refused by the text side once Stable Diffusion had
    loaded, as "turn view_dependent on", a key no flag names."""
    from dreamtext import models

    def never(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_for", never)
    monkeypatch.chdir(tmp_path)
    code, err = run_main(["text", "a red cube", "--perp-neg", "--no-view-prompt"], capsys)
    assert_user_error(
        code,
        err,
        "dreamtext: error: --perp-neg needs view-dependent prompts: drop --no-view-prompt (or "
        "guidance.view_dependent: false in a --config file)",
    )
    assert not (tmp_path / "workspace").exists()


def test_perp_neg_without_view_prompts_is_only_ignored_with_the_built_in_prior(
    tmp_path, monkeypatch, capsys, tiny_sizes
):
    """The built-in prior ignores --perp-neg (with a warning): its runs with --no-view-prompt
    trained, and one recorded so must still resume."""
    monkeypatch.chdir(tmp_path)
    args = [*BUILTIN_RUN, "--iters", "1", "--perp-neg", "--no-view-prompt", "--config", tiny_sizes]
    code, err = run_main(args, capsys)
    assert code == 0, err
    assert "--perp-neg does not apply to the built-in prior; ignored" in err


@pytest.mark.parametrize("byte", [0x80, 0xFF])
def test_the_first_and_the_last_byte_that_is_not_utf8_are_refused(
    tmp_path, monkeypatch, capsys, byte
):
    """Each byte 0x80-0xFF that is not UTF-8 text is one lone surrogate (U+DC80-U+DCFF), the
    ends of the range included: a name with 0x80 reached config.json and its traceback."""
    monkeypatch.chdir(tmp_path)
    code, err = run_main([*BUILTIN_RUN, "--workspace", "runs/caf" + chr(0xDC00 + byte)], capsys)
    assert_user_error(code, err, f"--workspace holds a byte that is not UTF-8 text (0x{byte:02X})")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv", [["--help"], ["text", "a red cube", "--model", "builtin:shapes", "--workspace", "ws"]]
)
def test_native_windows_is_refused_with_one_line_before_anything_runs(
    argv, monkeypatch, capsys, tmp_path
):
    """On native Windows `dreamtext text ...` ended in a ModuleNotFoundError traceback (the
    trainer imports ``resource``), and its liveness check, ``os.kill(pid, 0)``, would have sent
    Ctrl-C to the process group: every command says to run it under WSL 2 instead."""
    from dreamtext import __main__ as entry
    from dreamtext.cli import EXIT_USAGE

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(sys, "argv", ["dreamtext", *argv])
    assert entry.run() == EXIT_USAGE == entry.EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [entry.NATIVE_WINDOWS]
    assert "WSL 2" in err
    assert list(tmp_path.iterdir()) == []


def test_a_resume_while_a_run_there_still_loads_says_it_is_in_use(tmp_path, capsys, holder):
    """`--resume` of a folder in which another run (a colleague's, in a lab's shared folder) was
    still loading its models said "nothing to resume: no config.json; drop --resume to start a
    new run", and dropping it only led to "in use"."""
    theirs = holder(tmp_path / "run")
    code, err = run_main([*BUILTIN_RUN, "--workspace", tmp_path / "run", "--resume"], capsys)
    assert_user_error(
        code, err, f"{tmp_path / 'run'} is in use: process {theirs.pid} on this machine"
    )


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
@pytest.mark.parametrize("unbuffered", [False, True])
@pytest.mark.parametrize("flag", [["--help"], ["--version"], ["batch", "--sbatch-script"]])
def test_help_into_an_unwritable_stdout_is_one_line_and_status_2(flag, unbuffered):
    """`dreamtext --help > /dev/full` (a full disk): buffered, a traceback from the flush at the
    end, "Exception ignored" and status 120; unbuffered, status 0 and the help lost. The SLURM
    job script (`batch --sbatch-script > job.sbatch`) is written alike."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1" if unbuffered else ""}
    if not unbuffered:
        env.pop("PYTHONUNBUFFERED")
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "dreamtext", *flag],
            stdout=full,
            stderr=subprocess.PIPE,
            env=env,
            timeout=120,
        )
    lines = done.stderr.decode().splitlines()
    assert done.returncode == 2, lines
    assert lines == [
        "dreamtext: error: No space left on device (writing the output); send the output where "
        "it can be written (a disk with room, the terminal)"
    ]
