"""What the `dreamtext` flags become, value by value: the overrides a command passes on, the
bounds of the number flags, and the words of the one-line refusals (expected values from the
help texts and the thesis, not from the code's output)."""

import shlex

import pytest

from dreamtext.cli import build_parser, text_overrides


def parse(*argv):
    return build_parser().parse_args([str(a) for a in argv])


def test_no_export_reaches_the_config_as_export_false():
    """``--no-export``: "do not export the mesh and turntable at the end"."""
    from dreamtext.config import resolve_config

    args = parse("text", "a red cube", "--model", "builtin:shapes", "--no-export")
    assert text_overrides(args)["export"] is False
    assert resolve_config(text_overrides(args)).export is False
    plain = parse("text", "a red cube", "--model", "builtin:shapes")
    assert "export" not in text_overrides(plain)
    assert resolve_config(text_overrides(plain)).export is True


def test_t_range_keeps_the_order_it_was_typed_in():
    """``--t-range T_MIN T_MAX``: the first number is the lower end of the diffusion time."""
    from dreamtext.config import resolve_config

    args = parse("text", "a red cube", "--model", "builtin:shapes", "--t-range", 0.3, 0.7)
    assert resolve_config(text_overrides(args)).guidance.t_range == (0.3, 0.7)


@pytest.mark.parametrize(("flag", "key"), [("--fp16", "fp16"), ("--bf16", "bf16")])
def test_each_precision_flag_sets_its_own_setting(flag, key):
    """And turns the other precision off, over a --config's or a resumed run's."""
    args = parse("text", "a castle", flag)
    guidance = text_overrides(args)["guidance"]
    other = "bf16" if key == "fp16" else "fp16"
    assert guidance == {key: True, other: False}


def test_learning_rate_and_batch_size_and_seed_reach_the_config():
    from dreamtext.config import resolve_config

    argv = ["text", "a red cube", "--model", "builtin:shapes", "--lr", 0.05]
    cfg = resolve_config(text_overrides(parse(*argv, "--batch-size", 3, "--seed", 7)))
    assert (cfg.lr, cfg.batch_size, cfg.seed) == (0.05, 3, 7)


def test_view_prompts_stay_the_configs_unless_the_flag_turns_them_off():
    """``--no-view-prompt`` turns the view suffixes off; without it a config file's choice
    stands (the flag's default is no override at all)."""
    plain = text_overrides(parse("text", "a castle"))
    assert "view_dependent" not in plain.get("guidance", {})
    off = text_overrides(parse("text", "a castle", "--no-view-prompt"))
    assert off["guidance"]["view_dependent"] is False


@pytest.mark.parametrize(
    "argv",
    [
        ["text", "a castle", "--iters", "1"],
        ["text", "a castle", "--iters", "10000000"],  # ITERS_MAX, "at most 10,000,000"
        ["text", "a castle", "--epochs", "1"],
        ["text", "a castle", "--epochs", "100000"],  # 100,000 epochs of 100 = ITERS_MAX
        ["text", "a castle", "--seed", "0"],
        ["text", "a castle", "--seed", str(2**32 - 1)],  # the help's "0 to 4294967295"
        ["text", "a castle", "--t-range", "0", "1"],
        ["text", "a castle", "--guidance", "1e-9"],
        ["image", "mug.png", "--descriptor-iters", "0"],
        ["image", "mug.png", "--descriptor-iters", "10000000"],
        ["describe", "mug.png", "--max-words", "0"],
        ["view", "--port", "0"],  # "0 picks a free one"
        ["view", "--port", "65535"],
        ["batch", "p.txt", "--shard", "0/1"],
        ["batch", "p.txt", "--shard", "3/4"],
    ],
)
def test_the_ends_of_each_flags_range_are_accepted(argv):
    parse(*argv)  # argparse exits on a refusal


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["text", "a castle", "--iters", "10000001"], "from 1 to 10000000"),
        (["text", "a castle", "--epochs", "100001"], "from 1 to 100000"),
        (["text", "a castle", "--seed", str(2**32)], "from 0 to 4294967295"),
        (["text", "a castle", "--h", "0"], "must be positive and finite, got 0"),
        (["text", "a castle", "--t-range", "0", "1.0001"], "from 0 to 1"),
        (["image", "mug.png", "--descriptor-iters", "-1"], "from 0 to 10000000"),
        (["describe", "mug.png", "--max-words", "-1"], "must be at least 0, got -1"),
        (["view", "--port", "65536"], "from 0 to 65535"),
        (["view", "--port", "-1"], "from 0 to 65535"),
        (["batch", "p.txt", "--shard", "4/4"], "must be K/N with 0 ≤ K < N"),
    ],
)
def test_just_past_each_end_is_refused_in_one_line(capsys, argv, words):
    with pytest.raises(SystemExit) as stop:
        parse(*argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert words in err


def test_a_share_is_read_as_k_of_n():
    from dreamtext.flagtypes import shard_pair

    assert shard_pair(" 1 / 4 ") == (1, 4)
    assert shard_pair("0/1") == (0, 1)
    assert shard_pair("4/4") is None
    assert shard_pair("5/4") is None


def run_main(argv, capsys):
    from dreamtext.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as done:
        code = done.code
    return code, capsys.readouterr().err


def test_a_word_after_a_flag_given_with_its_value_is_a_piece_of_the_prompt(capsys):
    """``--out=runs`` carries its own value, so the words after it are the prompt's."""
    code, err = run_main(["text", "a", "--out=runs", "red", "cube"], capsys)
    assert code == 2
    assert 'quote the prompt when it has spaces: "a red cube"' in err
    assert "the output folder's flag is --workspace" in err


@pytest.mark.parametrize(
    ("argv", "again"),
    [
        (["text", "a red cube", "--diverse"], "run the same command again"),
        (["text", "a red cube", "--resume"], "run the same command again"),
        (["text", "a red cube", "--overwrite"], "run the same command again"),
        (
            ["text", "a red cube"],
            "run the same command again, with --resume if the run has a checkpoint",
        ),
        (["export"], "run the same command again"),
    ],
)
def test_the_interrupted_line_says_how_each_command_goes_on(argv, again):
    """A ``--diverse`` run resumes on its own and refuses ``--resume`` (early_text)."""
    from dreamtext.cli import interrupted_line

    assert interrupted_line(parse(*argv)) == f"dreamtext {argv[0]}: interrupted; {again}"


def test_a_stopped_overwrite_is_not_told_to_add_resume(tmp_path, monkeypatch, capsys):
    """``text --overwrite`` stopped before its training loop (loading) was told "run the same
    command again, with --resume if the run has a checkpoint": --resume beside --overwrite is
    refused, and the checkpoint there is the run it replaces. The same command runs."""
    from dreamtext import trainer

    monkeypatch.chdir(tmp_path)
    command = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "1", "--no-export"]
    assert run_main(command, capsys)[0] == 0  # the run that --overwrite replaces
    real = trainer.train

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "train", stopped)
    code, err = run_main([*command, "--overwrite"], capsys)
    assert (code, err) == (130, "dreamtext text: interrupted; run the same command again\n")
    code, err = run_main([*command, "--overwrite", "--resume"], capsys)
    assert code == 2 and "give --resume or --overwrite, not both" in err
    monkeypatch.setattr(trainer, "train", real)
    assert run_main([*command, "--overwrite"], capsys)[0] == 0


def test_a_batch_interrupted_in_a_slurm_array_task_says_the_task_may_be_requeued(monkeypatch):
    """A stop before the batch's loop (loading) in a task of the SLURM job script: the
    script requeues a task stopped at its time limit; "run the batch again" alone ran it twice."""
    from dreamtext.cli import interrupted_line

    argv = parse("batch", "p.txt")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    alone = (
        "dreamtext batch: interrupted; run the batch again to go on (finished prompts are skipped)"
    )
    assert interrupted_line(argv) == alone
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    assert interrupted_line(argv) == (
        f"{alone}; a task of dreamtext's SLURM job script (batch --sbatch-script) stopped at "
        "its time limit, or preempted, is requeued and does that by itself"
    )


def test_image_passes_the_images_name_without_its_suffix_and_the_flags_on(tmp_path, monkeypatch):
    """Until DreamText has learned its sentence, an image run's prompt is the image's name
    (``mug`` for mug.png); ``--overwrite`` and ``--descriptor-iters`` reach the run."""
    from PIL import Image

    import dreamtext.imageto3d
    from dreamtext.cli import cmd_image

    image = tmp_path / "mug.png"
    Image.new("RGB", (16, 16), (200, 30, 30)).save(image)
    seen = {}

    def run_image(path, options, cfg, overwrite=False, note=None):
        seen.update(path=path, prompt=cfg.prompt, overwrite=overwrite, seed=cfg.seed)
        seen["descriptor_iters"] = options.descriptor.iters
        return tmp_path / "w"

    monkeypatch.setattr(dreamtext.imageto3d, "run_image", run_image)
    argv = ["image", image, "--workspace", tmp_path / "w", "--overwrite", "--seed", 9]
    assert cmd_image(parse(*argv, "--descriptor-iters", 7)) == 0
    assert seen == {
        "path": str(image),
        "prompt": "mug",
        "overwrite": True,
        "seed": 9,
        "descriptor_iters": 7,
    }


def test_batch_passes_its_root_share_lock_timeout_and_overwrite_on(tmp_path, monkeypatch):
    """``--workspace`` is the batch's root (no run's folder), the rest of BatchOptions as
    typed; an interrupted batch exits 130 whatever its records say."""
    from types import SimpleNamespace

    import dreamtext.batch
    from dreamtext.cli import cmd_batch

    seen = {}

    def run_batch(prompts, overrides, preset, config, options):
        seen.update(prompts=prompts, overrides=overrides, options=options)
        return SimpleNamespace(
            records=[], not_started=[], overwrite=False, interrupted=True, finished_not_visited=[]
        )

    monkeypatch.setattr(dreamtext.batch, "run_batch", run_batch)
    argv = ["batch", "p.txt", "--workspace", tmp_path / "root", "--shard", "1/3"]
    argv += ["--lock-timeout", "30", "--overwrite", "--iters", "5"]
    assert cmd_batch(parse(*argv)) == 130
    options = seen["options"]
    assert (options.root, options.shard) == (tmp_path / "root", "1/3")
    assert (options.lock_timeout, options.overwrite) == (30.0, True)
    assert seen["overrides"] == {"iters": 5}  # no "workspace": each prompt gets its own


def test_without_torch_only_a_memory_error_is_running_out_of_memory(monkeypatch):
    """``view`` runs without torch: a MemoryError there is the one-line "out of memory"."""
    import sys

    from dreamtext.cli import memory_that_ran_out

    monkeypatch.delitem(sys.modules, "torch")
    assert memory_that_ran_out(MemoryError()) == "memory"
    assert memory_that_ran_out(ValueError("no")) is None


def test_a_resume_reads_its_runs_config_json_without_the_line_for_its_resumes(
    tmp_path, monkeypatch, capsys
):
    """A resume continues the run its config.json records, resumes and all: the line that says
    a run from such a file "is not that run again" is for a new run only."""
    import json

    from dreamtext.cli import early_text
    from dreamtext.errors import DreamtextError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    record = {
        "prompt": "a cube",
        "workspace": "run",
        "resumes": [{"step": 5, "changed": {"lr": [0.01, 0.02]}}],
    }
    (tmp_path / "run" / "config.json").write_text(json.dumps(record))
    (tmp_path / "presets.yaml").write_text("presets: [fitfusion]\n")
    files = ["--config", "run/config.json", "--config", "presets.yaml"]
    for resume in (["--resume", "--workspace", "run"], []):
        with pytest.raises(DreamtextError, match=r"'presets' in presets\.yaml"):
            early_text(parse("text", "a cone", *resume, *files))
        said = capsys.readouterr().err
        assert ("resumes changed lr at step 5" in said) is not bool(resume), said


@pytest.mark.parametrize(
    ("diverse", "again"), [(False, "continue with --resume"), (True, "run the same command again")]
)
def test_an_interrupted_text_run_exits_130_and_says_how_it_goes_on(
    tmp_path, monkeypatch, capsys, diverse, again
):
    """Ctrl-C in training: exit 130 (the shell's 128 + SIGINT) and the way on; a --diverse run
    refuses --resume (it resumes by itself)."""
    import dreamtext.imageto3d
    import dreamtext.trainer
    from dreamtext.cli import cmd_text
    from dreamtext.interrupts import TrainingInterrupted

    def stop(*args, **kwargs):
        raise TrainingInterrupted(3, tmp_path / "w" / "checkpoints" / "step_000003.pt")

    monkeypatch.setattr(dreamtext.trainer, "train", stop)
    monkeypatch.setattr(dreamtext.imageto3d, "run_diverse", stop)
    argv = ["text", "a red cube", "--workspace", tmp_path / "w"]
    argv += ["--diverse"] if diverse else ["--model", "builtin:shapes"]
    assert cmd_text(parse(*argv)) == 130
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("dreamtext: ")
    assert captured.err.endswith(f"; {again}\n")


def test_describe_runs_on_the_device_resolved_for_it():
    from dreamtext.cli import describe_options
    from dreamtext.describe import DescribeOptions

    args = parse("describe", "mug.png", "--max-words", 3, "--noun", "mug")
    options = describe_options(args, "cpu")
    assert (options.device, options.max_words, options.noun) == ("cpu", 3, "mug")
    assert describe_options(args).device == DescribeOptions().device


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["image", ""], "IMAGE is empty (an unset shell variable?); give it a path"),
        (["view", ""], "WORKSPACE_OR_ROOT is empty (an unset shell variable?); give it a path"),
        (["batch", ""], "PROMPTS_FILE is empty (an unset shell variable?); give it a path"),
        (
            ["text", "a cube", "--model", ""],
            "--model is empty (an unset shell variable?); give it a model id or folder",
        ),
        (["view", "--host", ""], "--host is empty (an unset shell variable?); give it an address"),
    ],
)
def test_an_empty_path_is_named_as_the_usage_line_names_it(argv, line):
    from dreamtext.cli import refuse_empty_paths
    from dreamtext.errors import DreamtextError

    with pytest.raises(DreamtextError) as refused:
        refuse_empty_paths(parse(*argv))
    assert str(refused.value).startswith(line)


def test_a_word_list_path_starting_with_a_tilde_is_in_the_home_folder(tmp_path, monkeypatch):
    from pathlib import Path

    from dreamtext.cli import expand_home

    monkeypatch.setenv("HOME", str(tmp_path))
    args = expand_home(parse("describe", "~/mug.png", "--nouns", "~/nouns.txt"))
    assert args.nouns == tmp_path / "nouns.txt" and isinstance(args.nouns, Path)
    assert args.image == str(tmp_path / "mug.png")


def test_describe_on_the_cpu_checks_its_image_before_anything_loads(tmp_path, monkeypatch):
    """``--device cpu`` needs no torch to resolve: the early checks go on to the image."""
    from dreamtext.cli import early_describe
    from dreamtext.errors import DreamtextError

    monkeypatch.chdir(tmp_path)
    for device in (["--device", "cpu"], ["--device", "auto"], []):
        with pytest.raises(DreamtextError, match=r"missing\.png"):
            early_describe(parse("describe", "missing.png", *device))


def test_resume_takes_the_current_folder_name_where_both_names_exist(tmp_path, monkeypatch):
    """A prompt with non-ASCII letters: an older dreamtext named its folder by the ASCII slug;
    where the current slug's folder exists, that one is the run's."""
    from pathlib import Path

    from dreamtext.cli import _resume_folder

    monkeypatch.chdir(tmp_path)
    args = parse("text", "a café", "--resume")
    assert _resume_folder(args) == Path("workspace/a_café")
    (tmp_path / "workspace" / "a_caf").mkdir(parents=True)
    assert _resume_folder(args) is None  # the older name only: told apart with torch
    (tmp_path / "workspace" / "a_café").mkdir()
    assert _resume_folder(args) == Path("workspace/a_café")


def test_resume_leaves_a_run_folder_named_in_nfd_to_the_lookup_that_finds_it(tmp_path, monkeypatch):
    """``text "Crème brûlée" --resume`` where the run's folder came from a Mac's HFS+ (named in
    NFD): it said "nothing to resume in workspace/crème_brûlée: no config.json"."""
    import unicodedata
    from pathlib import Path

    from dreamtext.cli import _resume_folder

    monkeypatch.chdir(tmp_path)
    args = parse("text", "Crème brûlée", "--resume")
    assert _resume_folder(args) == Path("workspace/crème_brûlée")
    (tmp_path / "workspace" / unicodedata.normalize("NFD", "crème_brûlée")).mkdir(parents=True)
    assert _resume_folder(args) is None  # prompt_workspace finds it, reading its config.json


def test_export_names_the_runs_own_options_and_what_a_flag_replaced(tmp_path, monkeypatch, capsys):
    """Only the options the run recorded away from the defaults are named; one a flag
    replaced shows ``old → new`` in the flag's own words (``--threshold auto``)."""
    import json

    import dreamtext.export
    from dreamtext.cli import cmd_export

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    recorded = {"resolution": 96, "threshold": 5.0, "formats": ["glb", "ply"]}
    (run / "config.json").write_text(json.dumps({"prompt": "x", "export_options": recorded}))
    seen = {}

    class Result:  # ExportResult's parts cmd_export reads
        step = None
        out_dir = run

        def summary(self):
            return "exported"

    def export_workspace(workspace, options, progress=None, completes_work=False, checked=False):
        seen.update(workspace=workspace, options=options)
        return Result()

    monkeypatch.setattr(dreamtext.export, "export_workspace", export_workspace)
    args = parse("export", "--workspace", run, "--resolution", 128, "--threshold", "auto")
    assert cmd_export(args) == 0
    out, err = capsys.readouterr()
    assert out == "exported\n"
    assert err == (
        "dreamtext: the run's export options: resolution 96 → 128, threshold 5.0 → auto, "
        "formats glb,ply (flags override them)\n"
    )
    options = seen["options"]
    assert (options.resolution, options.threshold, tuple(options.formats)) == (
        128,
        None,
        ("glb", "ply"),
    )


def test_mesh_is_no_video_and_refused_beside_video():
    from dreamtext.cli import early_export
    from dreamtext.errors import DreamtextError

    args = parse("export", "--mesh")
    early_export(args)
    assert args.video is False
    plain = parse("export")
    early_export(plain)
    assert plain.video is None  # the run's own choice, else the default
    both_say_none = parse("export", "--mesh", "--no-video")  # the same request twice
    early_export(both_say_none)
    assert both_say_none.video is False
    with pytest.raises(DreamtextError, match=r"give --mesh .* or --video, not both"):
        early_export(parse("export", "--mesh", "--video"))


@pytest.mark.parametrize(
    ("status", "words"),
    [
        ({"step": 7}, "process 123 is still training {run} (step 7): this exports its newest"),
        (None, "process 123 is starting a run in {run}: this exports the newest checkpoint"),
    ],
)
def test_export_of_a_live_run_says_whether_it_trains_or_is_starting(
    tmp_path, monkeypatch, capsys, status, words
):
    import dreamtext.export
    import dreamtext.runstatus
    from dreamtext.cli import cmd_export

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")

    class Result:  # ExportResult's parts cmd_export reads
        step = None
        out_dir = run

        def summary(self):
            return "exported"

    monkeypatch.setattr(dreamtext.export, "export_workspace", lambda *a, **k: Result())
    monkeypatch.setattr(dreamtext.runstatus, "live_run", lambda workspace: (123, status))
    assert cmd_export(parse("export", "--workspace", run)) == 0
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith("dreamtext: " + words.format(run=run))


def checkpointed_record(tmp_path, **record):
    """``tmp_path/run`` holding a config.json of ``record`` (and its workspace) beside an empty
    ``checkpoints/last.pt``: a run a command takes as checkpointed without reading it."""
    import json

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    (run / "config.json").write_text(json.dumps({**record, "workspace": str(run)}))
    return run


def test_a_resume_of_another_prompts_run_is_refused_naming_that_prompt(tmp_path, monkeypatch):

    import dreamtext.trainer
    from dreamtext.cli import cmd_text
    from dreamtext.errors import DreamtextError

    run = checkpointed_record(tmp_path, prompt="a red cube", guidance={"model": "builtin:shapes"})
    monkeypatch.setattr(dreamtext.trainer, "train", lambda *a, **k: pytest.fail("trained"))
    args = parse("text", "a blue cone", "--resume", "--workspace", run, "--seed", "5")
    with pytest.raises(DreamtextError) as refused:
        cmd_text(args)
    assert str(refused.value) == (
        f"{run} holds a run of 'a red cube'; resume it with that prompt, or drop --resume and pass "
        "--workspace NEW_FOLDER for this prompt"
    )


def test_a_resume_of_a_diverse_run_with_its_prompt_names_the_diverse_command(tmp_path, capsys):
    """``text "a mug" --resume`` of the ``--diverse`` run of "a mug" was told to resume it with
    the learned sentence its config.json records; without --resume the line names the
    ``--diverse`` command that continues it, as README says such runs go on."""

    from dreamtext.cli import main

    run = checkpointed_record(
        tmp_path, prompt="An image of a <descriptor> mug", diverse={"prompt": "a mug", "seed": 3}
    )
    assert main(["text", "a mug", "--resume", "--workspace", str(run)]) == 2
    command = f"dreamtext text 'a mug' --diverse --seed 3 --workspace {shlex.quote(str(run))}"
    assert capsys.readouterr().err == (
        f"dreamtext: error: {run} holds the --diverse run of 'a mug'; `{command}` continues it, "
        "or drop --resume and pass --workspace NEW_FOLDER for this prompt\n"
    )


def test_a_resume_typed_without_diverse_names_the_diverse_run_beside(tmp_path, monkeypatch, capsys):
    """``text "a mug" --resume`` where only ``workspace/a_mug_diverse_seed3`` holds a run of
    "a mug": the line said to drop --resume and start a new run (hours of a plain text→3D run
    instead of the --diverse one to go on)."""
    import json
    from pathlib import Path

    from dreamtext.cli import main

    monkeypatch.chdir(tmp_path)
    run = Path("workspace") / "a_mug_diverse_seed3"
    run.mkdir(parents=True)
    record = {"prompt": "a mug", "workspace": str(run), "diverse": {"prompt": "a mug", "seed": 3}}
    (run / "config.json").write_text(json.dumps(record))
    assert main(["text", "a mug", "--resume"]) == 2
    command = f"dreamtext text 'a mug' --diverse --seed 3 --workspace {shlex.quote(str(run))}"
    assert capsys.readouterr().err == (
        "dreamtext: error: nothing to resume in workspace/a_mug: no config.json; "
        f"{run} holds the --diverse run of 'a mug'; `{command}` continues it, or drop --resume "
        "to start a new text→3D run\n"
    )
    assert main(["text", "a cup", "--resume"]) == 2
    assert capsys.readouterr().err == (
        "dreamtext: error: nothing to resume in workspace/a_cup: no config.json; drop --resume "
        "to start a new run\n"
    )


def make_run_record(run, prompt, checkpoint=True):
    import json

    (run / "checkpoints").mkdir(parents=True)
    if checkpoint:
        (run / "checkpoints" / "last.pt").write_bytes(b"")
    (run / "config.json").write_text(json.dumps({"prompt": prompt, "workspace": str(run)}))


def test_a_resume_trains_on_the_prompt_its_run_recorded(tmp_path, monkeypatch):
    """An accent typed as a combining mark names the same run (NFC), which goes on with the
    prompt it recorded, not the other spelling (the text encoder sees other tokens)."""
    import unicodedata

    import dreamtext.trainer
    from dreamtext.cli import cmd_text

    run = tmp_path / "run"
    recorded = "a café"
    make_run_record(run, recorded)
    seen = {}

    def train(cfg, **kwargs):
        seen.update(prompt=cfg.prompt, resume=kwargs.get("resume"))
        return run

    monkeypatch.setattr(dreamtext.trainer, "train", train)
    typed = unicodedata.normalize("NFD", recorded)
    assert typed != recorded
    assert cmd_text(parse("text", typed, "--resume", "--workspace", run)) == 0
    assert seen == {"prompt": recorded, "resume": True}


def test_resume_finds_the_run_its_config_file_names_and_needs_a_checkpoint(tmp_path, monkeypatch):
    """``text P --resume --config RUN/config.json`` continues RUN (the folder the same command
    without --resume trains in); a run of P without a checkpoint has nothing to go on from."""
    from dreamtext.cli import _saved_config
    from dreamtext.errors import DreamtextError

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "elsewhere"
    make_run_record(run, "a red cube")
    args = parse("text", "a red cube", "--resume", "--config", run / "config.json")
    assert _saved_config(args)["workspace"] == str(run)
    bare = tmp_path / "bare"
    make_run_record(bare, "a red cube", checkpoint=False)
    with pytest.raises(DreamtextError, match="checkpoint"):
        _saved_config(parse("text", "a red cube", "--resume", "--workspace", bare))


def test_an_output_flag_is_pointed_to_workspace_only_where_the_command_has_it(capsys):
    """``view`` writes its pages with ``--static`` and has no ``--workspace``."""
    code, err = run_main(["view", "--output", "site"], capsys)
    assert code == 2
    assert "--workspace" not in err
    code, err = run_main(["export", "-o", "run"], capsys)
    assert code == 2
    assert "the output folder's flag is --workspace" in err


def test_early_batch_leaves_a_list_with_image_lines_to_the_batch(tmp_path, monkeypatch):
    """An ``image:`` line is opened by the batch itself, which with the built-in prior says it
    needs Stable Diffusion: the early check must not refuse it as an unknown caption first."""
    from dreamtext.cli import early_batch

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    (tmp_path / "p.txt").write_text("a red cube\nimage:mug.png\n")
    assert early_batch(parse("batch", "p.txt", "--model", "builtin:shapes")) is None


def test_a_blank_prompt_is_left_to_the_commands_own_line(tmp_path, monkeypatch):
    """A blank prompt has no folder of its own (an empty slug falls back to workspace/run):
    the workspace check leaves it to the config's "the prompt is empty", not a refusal that
    the fallback folder holds another prompt's run."""
    import json

    from dreamtext.cli import check_text_workspace

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "workspace" / "run"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"prompt": "a red cube", "workspace": str(run)}))
    assert check_text_workspace(parse("text", "   ")) is None


def test_a_diverse_run_leaves_the_prompts_own_folder_unchecked(tmp_path):
    """--diverse writes into <workspace>_diverse_seed<N>, never into the folder a single run of
    the prompt would take: another prompt's run there is no reason to refuse it."""
    import json

    from dreamtext.cli import check_text_workspace

    other = tmp_path / "run"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"prompt": "a blue sphere"}), encoding="utf-8")
    check_text_workspace(parse("text", "a red cube", "--diverse", "--workspace", str(other)))


def test_output_cut_by_its_reader_exits_1_without_a_traceback(monkeypatch, capsys):
    """`dreamtext view --static site | true`: a BrokenPipeError is the exit status Python's docs
    give a program whose output was cut (1, as their SIGPIPE note's sys.exit(1)), no line."""
    from dreamtext import cli

    def cut(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "cmd_view", cut)
    assert cli.main(["view"]) == 1
    assert "Traceback" not in capsys.readouterr().err


def test_the_newest_runs_folder_named_with_an_escape_reaches_the_terminal_as_its_escapes(
    tmp_path, monkeypatch, capsys
):
    """`dreamtext export` with no --workspace names the newest run under workspace/, a folder
    it found by listing: one named with ``ESC ] 0 ; x BEL`` (by another tool) went raw into
    its "exporting the most recent run" line and its error, and the terminal retitled its
    window. Each line now writes such a character as its escape, and stays one line."""
    import unicodedata

    from dreamtext.cli import main

    monkeypatch.chdir(tmp_path)
    make_run_record(tmp_path / "workspace" / "\x1b]0;x\x07\nb", "a cat")  # an empty last.pt
    assert main(["export", "--no-video"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1] for line in lines] == [" exporting the most recent run", " error"]
    for line in lines:
        assert not any(unicodedata.category(c) == "Cc" for c in line), repr(line)
        assert "workspace/\\x1b]0;x\\x07\\x0ab" in line


def test_a_resume_that_could_not_write_is_told_to_copy_the_run(tmp_path, monkeypatch, capsys):
    """``text --resume`` whose disk filled outside the training steps was told "or pick a
    folder you can write (--workspace)": --resume --workspace NEW has nothing to resume. The
    line says to copy the run and continue it there, which resumes."""
    import errno
    import shutil

    from dreamtext import trainer

    monkeypatch.chdir(tmp_path)
    command = ["text", "a red cube", "--model", "builtin:shapes", "--h", "16", "--no-export"]
    assert run_main([*command, "--iters", "1", "--workspace", "run"], capsys)[0] == 0
    real = trainer.train

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "run/config.json")

    monkeypatch.setattr(trainer, "train", disk_full)
    resume = [*command, "--iters", "2", "--resume", "--workspace"]
    code, err = run_main([*resume, "run"], capsys)
    assert code == 2 and err.rstrip().endswith(
        "copy the run to a folder you can write and continue it there with --resume "
        "--workspace COPY"
    ), err
    assert "pick a folder you can write (--workspace)" not in err
    monkeypatch.setattr(trainer, "train", real)
    code, err = run_main([*resume, "new"], capsys)  # the old line's advice
    assert code == 2 and "nothing to resume in new" in err, err
    shutil.copytree("run", "copy")
    assert run_main([*resume, "copy"], capsys)[0] == 0
