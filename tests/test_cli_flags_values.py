"""The `dreamtext` flags' own refusals and values (dreamtext.flagtypes and the flags the CLI
builds from it), second mutation pass: expected values from the help texts, README.md and the
thesis, not from the code's output."""

import pytest

from dreamtext.cli import build_parser
from dreamtext.errors import DreamtextError


def parse(*argv):
    return build_parser().parse_args([str(a) for a in argv])


def refusal(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as stop:
        parse(*argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    return err


@pytest.mark.parametrize(
    ("flag", "bound"), [("--guidance", "0 or more and finite"), ("--lr", "positive and finite")]
)
@pytest.mark.parametrize("text", ["inf", "1e999"])
def test_an_infinite_float_flag_is_refused_as_not_finite(capsys, flag, bound, text):
    """A float flag takes finite values only (flagtypes.positive's line "must be positive and
    finite", non_negative's "0 or more and finite"): infinity is no learning rate or guidance
    scale."""
    err = refusal(capsys, "text", "a castle", flag, text)
    assert f"must be {bound}, got {text}" in err


def test_a_guidance_scale_of_0_is_taken_as_a_config_files_is_and_below_0_refused(capsys):
    """`--guidance 0` (the conditional prediction alone, diffusers' scale 1) was refused as not
    positive, while `guidance.guidance_scale: 0` in a config file ran."""
    assert parse("text", "a castle", "--guidance", "0").guidance == 0.0
    err = refusal(capsys, "text", "a castle", "--guidance", "-0.5")
    assert "argument --guidance: must be 0 or more and finite, got -0.5" in err


def test_view_and_batch_defaults_are_the_readmes():
    """README.md: `dreamtext view` opens http://127.0.0.1:8000/; `--lock-timeout` seconds
    (600 by default)."""
    from dreamtext.cli import early_view

    view = parse("view")
    early_view(view)
    assert (view.port, view.host) == (8000, "127.0.0.1")
    assert parse("batch", "p.txt").lock_timeout == 600.0


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--port", "9000"], "--port"), (["--port", "0", "--host", "0.0.0.0"], "--port and --host")],
)
def test_view_static_with_a_port_or_host_is_refused_not_ignored(capsys, tmp_path, flags, named):
    """`view --static OUT --port 9000` wrote OUT and exited 0, the port left out without a word."""
    from dreamtext.cli import main

    assert main(["view", str(tmp_path), "--static", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err
    assert err == f"dreamtext: error: give --static (files, no server) or {named}, not both\n"
    assert not (tmp_path / "out").exists()


def test_equal_ends_of_the_t_range_are_refused(capsys):
    """`--t-range T_MIN T_MAX`: T_MIN must be below T_MAX, an empty range included."""
    err = refusal(capsys, "text", "a castle", "--t-range", "0.5", "0.5")
    assert "T_MIN must be below T_MAX, got 0.5 0.5" in err


def test_epochs_are_a_hundred_iterations_each():
    """--epochs' help: "sets --iters = epochs × 100"."""
    from dreamtext.cli import text_overrides

    assert text_overrides(parse("text", "a castle", "--epochs", "3"))["iters"] == 300


@pytest.mark.parametrize(("word", "split"), [("one", False), ("split", True)])
def test_side_views_reach_the_config(word, split):
    from dreamtext.cli import text_overrides

    out = text_overrides(parse("text", "a castle", "--side-views", word))
    assert out["guidance"]["views"] == {"split_sides": split}


@pytest.mark.parametrize(("flag", "other"), [("fp16", "bf16"), ("bf16", "fp16")])
def test_a_precision_flag_overrides_a_config_files_other_precision(tmp_path, flag, other):
    """README: "Explicit flags override `--config`": `--fp16` over a config's `bf16: true` (or a
    resumed run's) was "give --fp16 or --bf16, not both", a flag the user never gave."""
    from dreamtext.cli import text_overrides
    from dreamtext.config import resolve_config

    path = tmp_path / "half.yaml"
    path.write_text(f"guidance:\n  {other}: true\n")
    overrides = text_overrides(parse("text", "a castle", f"--{flag}"))
    cfg = resolve_config(overrides, config_file=path)
    assert getattr(cfg.guidance, flag) is True
    assert getattr(cfg.guidance, other) is False
    both = text_overrides(parse("text", "a castle", "--fp16", "--bf16"))
    with pytest.raises(DreamtextError, match="give --fp16 or --bf16, not both"):
        resolve_config(both)
    path.write_text("guidance:\n  fp16: true\n  bf16: true\n")  # the file was not named
    with pytest.raises(DreamtextError) as refused:
        resolve_config({"prompt": "a castle"}, config_file=path)
    assert str(refused.value) == (
        f"give --fp16 or --bf16, not both (guidance.fp16 (in {path}) and guidance.bf16 (in "
        f"{path}) are both on)"
    )


@pytest.mark.parametrize("recorded", ["fp16", "bf16"])
@pytest.mark.parametrize(
    "command", [["text", "a castle", "--resume"], ["image", "castle.png"], ["batch", "p.txt"]]
)
def test_fp32_turns_off_the_half_precision_a_run_recorded(tmp_path, recorded, command):
    """A resume or rerun resolves over the run's config.json, where a flag left out overrides
    nothing: without --fp16 a run recorded in fp16 stayed in fp16 (the diverged run's line said
    "continue with --resume ... or without --fp16"). --fp32 turns either half precision off,
    of the run's config.json and of a --config file alike."""
    from dreamtext.cli import text_overrides
    from dreamtext.config import config_to_dict, resolve_config

    def overrides(*flags):  # image and batch name the prompt apart from the flags
        return {"prompt": "a castle", **text_overrides(parse(*command, *flags))}

    base = config_to_dict(resolve_config({"prompt": "a castle", "guidance": {recorded: True}}))
    kept = resolve_config(overrides(), base=base)
    assert getattr(kept.guidance, recorded) is True
    turned_off = resolve_config(overrides("--fp32"), base=base)
    assert (turned_off.guidance.fp16, turned_off.guidance.bf16) == (False, False)
    path = tmp_path / "half.yaml"
    path.write_text(f"guidance:\n  {recorded}: true\n")
    from_file = resolve_config(overrides("--fp32"), config_file=path)
    assert (from_file.guidance.fp16, from_file.guidance.bf16) == (False, False)


@pytest.mark.parametrize("flag", ["--fp16", "--bf16"])
def test_fp32_with_a_half_precision_flag_is_refused(flag):
    from dreamtext.cli import text_overrides

    with pytest.raises(DreamtextError) as refused:
        text_overrides(parse("text", "a castle", "--fp32", flag))
    assert str(refused.value) == f"give --fp32 or {flag}, not both"


def test_compile_compiles_the_guidance_and_the_field_and_no_compile_neither():
    """--compile: the U-Net, the VAE encoder and the field's MLPs, the guidance replayed as CUDA
    graphs (reduce-overhead); --no-compile keeps the field's MLPs eager too."""
    from dreamtext.cli import text_overrides

    on = text_overrides(parse("text", "a castle", "--compile"))
    assert on["guidance"]["compile"] is True
    assert on["guidance"]["compile_vae"] is True
    assert on["guidance"]["compile_mode"] == "reduce-overhead"
    assert on["render"] == {"compile_field": True}
    off = text_overrides(parse("text", "a castle", "--no-compile"))
    assert off["guidance"]["compile"] is False
    assert off["guidance"]["compile_vae"] is False
    assert "compile_mode" not in off["guidance"]
    assert off["render"] == {"compile_field": False}
    assert "render" not in text_overrides(parse("text", "a castle"))


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["--iters", "5", "--epochs", "1"], "give --iters or --epochs, not both"),
        (["--resume", "--overwrite"], "give --resume or --overwrite, not both"),
        (
            ["--diverse", "--resume"],
            "--diverse runs resume on their own (in workspace/<prompt>_diverse_seed<N>): run the "
            "same command again without --resume",
        ),
        (  # it named the default folder, where --workspace put the run elsewhere
            ["--diverse", "--resume", "--workspace", "mine"],
            "--diverse runs resume on their own (in mine): run the same command again "
            "without --resume",
        ),
    ],
)
def test_conflicting_flags_are_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, line):
    from dreamtext.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["text", "a castle", "--model", "builtin:shapes", *argv])
    assert code == 2
    assert capsys.readouterr().err == f"dreamtext: error: {line}\n"


def test_zero_describe_and_descriptor_flags_reach_their_options():
    """`--max-words 0` (the placeholders keep the words they start from) and
    `--descriptor-iters 0` (text→3D on the sentence's own words) are values, not unset flags
    whose defaults (15, 10000) stand."""
    from dreamtext.cli import describe_options, image_overrides

    args = parse("image", "mug.png", "--max-words", "0", "--descriptor-iters", "0")
    assert describe_options(args).max_words == 0
    out = image_overrides(args)
    assert out["describe"] == {"max_words": 0}
    assert out["descriptor"] == {"iters": 0}
    assert image_overrides(parse("image", "mug.png"))["descriptor"] == {}
