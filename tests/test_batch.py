"""`dreamtext batch`: one process for a list, skips and resumes, shares, locks, bad input."""

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import unicodedata
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tiny_models import TINY_TRAIN

import dreamtext.batch
import dreamtext.trainer as trainer
from dreamtext.batch import (
    HOST,
    Entry,
    LineModels,
    WorkspaceLock,
    parse_shard,
    read_prompts,
    requeued_task_runs,
    resolve_shard,
    select_share,
    shard_from_environment,
    summary_table,
)
from dreamtext.cli import main
from dreamtext.errors import DreamtextError
from dreamtext.runfiles import read_status, sentence_path
from dreamtext.runstatus import RunTakenOver

ROOT = Path(__file__).resolve().parent.parent
BUILTIN = ["--model", "builtin:shapes", "--iters", "20"]


@pytest.fixture(scope="session")
def shapes_cache(tmp_path_factory):
    """The built-in prior's rendered image set, cached once for the session (and subprocesses)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DREAMTEXT_CACHE", str(tmp_path_factory.mktemp("dreamtext_cache")))
        yield


@pytest.fixture(autouse=True)
def outside_slurm(monkeypatch):
    for name in list(os.environ):
        if name.startswith("SLURM_"):
            monkeypatch.delenv(name)


@pytest.fixture
def tiny_yaml(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY_TRAIN, "preview_every": 0, "log_every": 5}))
    return path


def prompts_file(tmp_path, *lines, name="prompts.txt"):
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


def mug_batch(tmp_path, tiny_sd_path, tiny_clip_path):
    """A list of one image line (a small red mug.png) and the batch command over it: its root,
    its arguments."""
    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "mug.png")
    root = tmp_path / "root"
    path = prompts_file(tmp_path, "image:mug.png")
    return root, [
        "batch",
        path,
        "--model",
        tiny_sd_path,
        "--clip",
        tiny_clip_path,
        "--workspace",
        root,
    ]


def rows(root):
    return [json.loads(line) for line in (root / "batch.jsonl").read_text().splitlines()]


def steps(workspace):
    return [json.loads(line)["step"] for line in (workspace / "log.jsonl").read_text().splitlines()]


def status(workspace):
    return json.loads((workspace / "status.json").read_text())


def ctrl_c_at_step(monkeypatch, step, workspace_name=None):
    """Ctrl-C right after ``step`` of the run in ``workspace_name`` (any run: ``None``); returns
    the real ``train_step`` to put back."""
    real_step = trainer.train_step

    def step_then_ctrl_c(run):
        record = real_step(run)
        if run.step == step and workspace_name in (None, run.workspace.name):
            signal.raise_signal(signal.SIGINT)
        return record

    monkeypatch.setattr(trainer, "train_step", step_then_ctrl_c)
    return real_step


def train_calls(monkeypatch) -> list[dict]:
    """The keyword arguments (``resume``, ``overwrite``) of each ``trainer.train`` call from now
    on, in order; the runs train as they would. Each call's ``resume_with`` must be the batch's
    (its lines that stop a run name no --resume, which batch lacks), and ``start_again`` and
    ``resume_changed`` the line's own commands, not the batch's --overwrite or flags; all three
    are left out."""
    calls, real_train = [], trainer.train
    told = ("resume_with", "start_again", "resume_changed")

    def train(cfg, **how):
        assert how.get("resume_with") == dreamtext.batch.BATCH_RESUME
        assert how["start_again"].command.startswith("`dreamtext ")
        assert how["resume_changed"].startswith("`dreamtext ")
        calls.append({key: value for key, value in how.items() if key not in told})
        return real_train(cfg, **how)

    monkeypatch.setattr(trainer, "train", train)
    return calls


def batch_process(*args, slurm=None, **popen):
    """``dreamtext batch ARGS`` in a process of its own, outside SLURM unless ``slurm`` gives its
    ``SLURM_*`` variables."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env = {k: v for k, v in env.items() if not k.startswith("SLURM_")} | (slurm or {})
    command = [sys.executable, "-m", "dreamtext.cli", "batch", *map(str, args)]
    return subprocess.Popen(command, env=env, text=True, **popen)


# ----------------------------------------------------------------------------------------------
# The list and its shares


def test_batch_is_a_subcommand_with_its_own_flags(capsys):
    with pytest.raises(SystemExit):
        main(["batch", "--help"])
    out = capsys.readouterr().out
    flags = ("PROMPTS_FILE", "--shard", "--lock-timeout", "--overwrite", "--model", "--clip")
    for flag in flags:
        assert flag in out


def test_prompts_file_lines_comments_images_and_names(tmp_path):
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "photos" / "mug.png")
    path = prompts_file(
        tmp_path,
        "# a comment",
        "a red cube",
        "",
        "  image: photos/mug.png",
        "a red cube",
        "A red cube!",
    )
    entries = read_prompts(path, tmp_path / "root")
    assert [(e.line, e.kind, e.workspace.name) for e in entries] == [
        (2, "text", f"a_red_cube_{sha('a red cube')}"),  # two lines' names clash: both hashed
        (4, "image", "mug"),
        (6, "text", f"a_red_cube_{sha('A red cube!')}"),  # line 5 repeats line 2: dropped
    ]
    assert entries[1].prompt == str(tmp_path / "photos" / "mug.png")
    assert entries[1].input == "  image: photos/mug.png"


def test_lines_differing_only_in_case_are_one_prompt_run_once(tmp_path, capsys):
    """``a red cube`` and ``A Red Cube`` have one folder name and are one prompt to Stable
    Diffusion's tokenizer, which lower-cases: both got a hashed folder and were trained twice."""
    path = prompts_file(tmp_path, "a red cube", "A Red Cube", "a blue cube", "A  BLUE cube")
    entries = read_prompts(path, tmp_path / "root")
    assert [(e.line, e.prompt, e.workspace.name) for e in entries] == [
        (1, "a red cube", "a_red_cube"),
        (3, "a blue cube", "a_blue_cube"),
    ]
    assert capsys.readouterr().err == (
        "batch: line 2 repeats line 1; it runs once\nbatch: line 4 repeats line 3; it runs once\n"
    )


def test_a_case_repeat_keeps_the_hashed_folder_an_earlier_batch_gave_its_first_line(tmp_path):
    root = tmp_path / "root"
    ran(root / f"a_red_cube_{sha('a red cube')}", "a red cube")
    ran(root / f"a_red_cube_{sha('A Red Cube')}", "A Red Cube")
    entries = read_prompts(prompts_file(tmp_path, "a red cube", "A Red Cube"), root)
    assert [e.workspace.name for e in entries] == [f"a_red_cube_{sha('a red cube')}"]


def test_a_run_of_the_prompt_in_other_case_is_the_lines_run(tmp_path, tiny_yaml, capsys):
    """``dreamtext text "A Red Cube"`` trained in a_red_cube, the folder of the line ``a red
    cube``, which is one prompt to Stable Diffusion's tokenizer (it lower-cases): the batch
    counted it as another prompt's run and trained the line again in a hashed folder."""
    root = tmp_path / "root"
    ran(root / "a_red_cube", "A Red Cube")
    path = prompts_file(tmp_path, "a red cube")
    entries = read_prompts(path, root)
    assert [(e.prompt, e.workspace.name) for e in entries] == [("A Red Cube", "a_red_cube")]
    args = ["batch", path, *BUILTIN, "--config", tiny_yaml, "--workspace", root, "--no-export"]
    assert main(list(map(str, args))) == 0
    assert [(r["input"], r["prompt"], r["status"]) for r in rows(root)] == [
        ("a red cube", "A Red Cube", "skipped")
    ]
    assert sorted(p.name for p in root.iterdir()) == ["a_red_cube", "batch.jsonl"]


def test_a_hashed_folder_an_earlier_batch_trained_the_line_in_stays_the_lines(tmp_path):
    """Before runs in other case counted, such a line trained in a hashed folder: that run
    stays the line's, the other-case run its own."""
    root = tmp_path / "root"
    ran(root / "a_red_cube", "A Red Cube")
    ran(root / f"a_red_cube_{sha('a red cube')}", "a red cube")
    entries = read_prompts(prompts_file(tmp_path, "a red cube"), root)
    assert [(e.prompt, e.workspace.name) for e in entries] == [
        ("a red cube", f"a_red_cube_{sha('a red cube')}")
    ]


def test_a_line_whose_case_was_edited_keeps_its_run_in_a_hashed_folder(tmp_path):
    """``a cat`` beside ``A cat!`` trained in a hashed folder; the line edited to ``A Cat``
    hashes to another name, and the batch trained the prompt again in a third folder (with
    ``A cat!`` gone, in ``a_cat``)."""
    root = tmp_path / "root"
    ran(root / f"a_cat_{sha('a cat')}", "a cat")
    ran(root / f"a_cat_{sha('A cat!')}", "A cat!")
    assert names(prompts_file(tmp_path, "A Cat", "A cat!"), root) == {
        "a cat": f"a_cat_{sha('a cat')}",
        "A cat!": f"a_cat_{sha('A cat!')}",
    }
    assert names(prompts_file(tmp_path, "A Cat"), root) == {"a cat": f"a_cat_{sha('a cat')}"}


def test_the_image_prefix_is_read_in_any_case(tmp_path):
    """``IMAGE:mug.png`` was a text prompt: hours of Stable Diffusion on a typo."""
    Image.new("RGB", (8, 8)).save(tmp_path / "mug.png")
    entries = read_prompts(prompts_file(tmp_path, "IMAGE:mug.png", "Image: mug.png"), tmp_path)
    assert [(e.kind, e.prompt) for e in entries] == [("image", str(tmp_path / "mug.png"))]


def test_an_image_line_in_a_folder_the_user_may_not_enter_is_its_own_line(tmp_path, refuse_stat):
    """Another user's home (mode 700): its line was "Permission denied (PATH); pick a folder you
    can write (--workspace)", of an image the batch could not read (patched: root reads any
    folder)."""
    image = tmp_path / "home" / "mug.png"
    refuse_stat(image)
    path = prompts_file(tmp_path, f"image:{image}")
    with pytest.raises(DreamtextError) as raised:
        read_prompts(path, tmp_path / "root")
    assert str(raised.value).startswith(f"{path}:1: cannot read {image}: permission denied;")


@pytest.mark.parametrize("quote", ['"', "'"])
def test_a_quoted_image_path_is_told_to_drop_the_quotes(tmp_path, quote):
    """``image:"my mug.png"``, quoted as in a shell: it was "image not found: .../"my mug.png"
    (check the path)", which did not say that the quotes are the trouble."""
    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "my mug.png")
    path = prompts_file(tmp_path, f"image:{quote}my mug.png{quote}")
    with pytest.raises(DreamtextError) as raised:
        read_prompts(path, tmp_path / "root")
    assert str(raised.value) == (
        f"{path}:1: image not found: {tmp_path / f'{quote}my mug.png{quote}'}; write the path "
        "without quotes: image:my mug.png"
    )


def sha(prompt):
    return hashlib.sha256(prompt.encode()).hexdigest()[:8]


def ran(workspace, prompt, iters=20):
    """``workspace`` as a finished, exported run of ``prompt`` leaves it (config.json,
    status.json and its mesh)."""
    (workspace / "mesh").mkdir(parents=True)
    config = {"prompt": prompt, "workspace": str(workspace), "iters": iters}
    (workspace / "config.json").write_text(json.dumps(config))
    (workspace / "status.json").write_text(json.dumps({"state": "finished", "step": iters}))
    (workspace / "mesh" / "mesh.glb").write_bytes(b"glTF")
    return workspace


def names(path, root):
    return {e.prompt: e.workspace.name for e in read_prompts(path, root)}


def test_names_of_clashing_prompts_do_not_depend_on_the_line_order(tmp_path):
    lines = ["一只猫", "a cat", "一只猫!", "A cat!"]  # the first two and the last two clash
    forward = names(prompts_file(tmp_path, *lines), tmp_path / "root")
    backward = names(prompts_file(tmp_path, *reversed(lines)), tmp_path / "root")
    assert (
        forward
        == backward
        == {
            "一只猫": f"一只猫_{sha('一只猫')}",
            "a cat": f"a_cat_{sha('a cat')}",
            "一只猫!": f"一只猫_{sha('一只猫!')}",
            "A cat!": f"a_cat_{sha('A cat!')}",
        }
    )


def test_prompts_in_other_scripts_get_folders_of_their_own_words(tmp_path):
    """Every non-Latin prompt was ``run`` (then ``run_<hash>``): folders no one could tell apart."""
    path = prompts_file(tmp_path, "一只猫", "一只狗", "Crème brûlée", "кот")
    assert names(path, tmp_path / "root") == {
        "一只猫": "一只猫",
        "一只狗": "一只狗",
        "Crème brûlée": "crème_brûlée",
        "кот": "кот",
    }


def test_a_rerun_keeps_the_folders_that_ascii_slugs_named(tmp_path):
    """Batches before Unicode slugs named a non-Latin prompt ``run`` or ``run_<hash>``, an
    accented one with its accents cut out: a rerun finds those runs instead of starting over."""
    root = tmp_path / "root"
    ran(root / "run", "一只猫")
    ran(root / f"run_{sha('一只狗')}", "一只狗")
    ran(root / "cr_me_br_l_e", "Crème brûlée")
    ran(root / "cr_me_br_l_e_line2", "crème brûlée!")
    path = prompts_file(tmp_path, "一只狗", "crème brûlée!", "一只猫", "Crème brûlée", "一只鸟")
    assert names(path, root) == {
        "一只狗": f"run_{sha('一只狗')}",
        "crème brûlée!": "cr_me_br_l_e_line2",
        "一只猫": "run",
        "Crème brûlée": "cr_me_br_l_e",
        "一只鸟": "一只鸟",
    }


def test_a_rerun_keeps_the_folder_a_slug_cut_inside_a_letter_named(tmp_path):
    """Before slugs were cut between whole letters, a long prompt whose 60th character was a
    letter of ते (ta + vowel sign e) got a folder ending in त: a rerun finds that run instead of
    training the prompt again beside it, in the folder ending before ते."""
    prompt, other = "a" * 59 + "\u0924\u0947", "b" * 59 + "\u0924\u0947"
    root = tmp_path / "root"
    ran(root / ("a" * 59 + "\u0924"), prompt)
    path = prompts_file(tmp_path, prompt, other)
    assert names(path, root) == {prompt: "a" * 59 + "\u0924", other: "b" * 59}


def test_a_run_in_a_folder_named_in_nfd_is_found_again(tmp_path):
    """A run copied from a Mac's HFS+ (rsync, scp) keeps the NFD name it was given there,
    ``crème_brûlée`` with combining accents: the batch trained the prompt again beside it, in a
    second folder that looks the same."""
    root = tmp_path / "root"
    ran(root / unicodedata.normalize("NFD", "crème_brûlée"), "Crème brûlée")
    ran(root / unicodedata.normalize("NFD", "café"), "a café")  # another prompt's: not taken
    path = prompts_file(tmp_path, "Crème brûlée", "Café")
    assert names(path, root) == {
        "Crème brûlée": unicodedata.normalize("NFD", "crème_brûlée"),
        "Café": "café",
    }


def test_a_slug_whose_nfd_form_is_too_long_for_a_file_name_is_named_as_before(tmp_path):
    """60 Hangul syllables (180 bytes) are 540 bytes in NFD: looking up that form's hashed
    folder was "File name too long"."""
    root = tmp_path / "root"
    root.mkdir()
    assert names(prompts_file(tmp_path, "한" * 60), root) == {"한" * 60: "한" * 60}


def test_a_run_in_an_nfd_folder_of_the_most_bytes_a_slug_may_have_is_found_again(tmp_path):
    """60 é are 180 bytes in NFD (e and U+0301 each), as long as a slug may be: a run copied
    from a Mac into that folder is the prompt's, not trained again beside it."""
    from dreamtext.inputs import SLUG_MAX_BYTES

    root = tmp_path / "root"
    decomposed = unicodedata.normalize("NFD", "é" * 60)
    assert len(decomposed.encode("utf-8")) == SLUG_MAX_BYTES == 180
    ran(root / decomposed, "é" * 60)
    assert names(prompts_file(tmp_path, "é" * 60), root) == {"é" * 60: decomposed}


def test_a_folder_holding_another_prompts_run_gives_the_prompt_a_hashed_name(tmp_path):
    root = tmp_path / "root"
    ran(root / "a_red_cube", "a red cube")
    path = prompts_file(tmp_path, "A red cube!", "a red cube", "a blue cube")
    assert names(path, root) == {
        "A red cube!": f"a_red_cube_{sha('A red cube!')}",
        "a red cube": "a_red_cube",  # its own run keeps its folder
        "a blue cube": "a_blue_cube",
    }


def test_a_rerun_keeps_the_folders_that_line_numbers_named(tmp_path):
    """Batches before hashed names gave the later of two clashing prompts ``<name>_line<N>``."""
    root = tmp_path / "root"
    ran(root / "a_red_cube", "a red cube")
    ran(root / "a_red_cube_line3", "A red cube!")
    path = prompts_file(tmp_path, "A red cube!", "a blue cube", "a red cube")  # edited, reordered
    assert names(path, root) == {
        "A red cube!": "a_red_cube_line3",
        "a blue cube": "a_blue_cube",
        "a red cube": "a_red_cube",
    }


def test_a_new_list_into_a_root_of_other_runs_lists_the_root_once(tmp_path, monkeypatch):
    """A list of n prompts names its workspaces with one listing of the root, not one per prompt
    (2,000 new prompts into a root of 2,000 runs took 18 s to read)."""
    root = tmp_path / "root"
    for i in range(20):
        ran(root / f"an_old_prompt_{i}", f"an old prompt {i}")
    ran(root / "a_new_prompt_3_line4", "a new prompt 3")  # named by an older batch: kept
    path = prompts_file(tmp_path, *(f"a new prompt {i}" for i in range(20)))
    listed, scandir = [], os.scandir
    monkeypatch.setattr(os, "scandir", lambda p=".": listed.append(Path(p)) or scandir(p))
    named = names(path, root)
    assert named["a new prompt 3"] == "a_new_prompt_3_line4"
    assert named["a new prompt 7"] == "a_new_prompt_7"
    assert listed.count(root) <= 1


def moved_image_run(tmp_path):
    """A finished image→3D run of ``tmp_path/old/mug.png`` in ``root/mug`` (its sentence record
    and its copy of the image), the image then moved to ``tmp_path/new``: the root, the old
    path."""
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(old / "mug.png")
    was = os.path.realpath(old / "mug.png")
    root = tmp_path / "root"
    run = ran(root / "mug", "mug")
    (run / "descriptor").mkdir()
    shutil.copy(old / "mug.png", run / "descriptor" / "source.png")
    (run / "descriptor" / "sentence.json").write_text(json.dumps({"image": was}))
    old.rename(new)
    return root, was


def test_an_image_deleted_after_its_run_names_the_run_not_only_the_path(tmp_path):
    """A finished line's image deleted (to save space) stopped the batch with "image not
    found: ... (check the path)", as a typo would, and new lines of the list could not run:
    the line now names the run that is there, and what to do."""
    root, _ = moved_image_run(tmp_path)
    (tmp_path / "old").mkdir()  # the list stays where its image is gone from
    path = prompts_file(tmp_path / "old", "image:mug.png")
    with pytest.raises(DreamtextError) as refusal:
        read_prompts(path, root)
    assert str(refusal.value) == (
        f"{path}:1: image not found: {tmp_path / 'old' / 'mug.png'}; its run {root / 'mug'} is "
        "there: put the image back to go on with it, or remove the line (the run stays)"
    )
    other = prompts_file(tmp_path / "new", "image:cup.png")  # no run: the path is what is wrong
    with pytest.raises(DreamtextError, match=r"image not found: .*cup\.png \(check the path\)$"):
        read_prompts(other, root)


def test_an_image_lines_run_is_found_again_after_the_image_was_moved(
    tmp_path, tiny_sd_path, capsys
):
    """The folder of a list and its images moved (or mounted elsewhere in a container):
    ``dreamtext image`` goes on with a run whose image moved (its copy has the same bytes), but
    the batch knew an image line's run by the image's path alone and trained the line again
    from scratch in ``mug_<hash>``, its finished run left aside without a word."""
    root, was = moved_image_run(tmp_path)
    path = prompts_file(tmp_path / "new", "image:mug.png")
    [entry] = read_prompts(path, root)
    assert (entry.workspace.name, entry.key) == ("mug", ("image", was))
    args = ["batch", path, "--model", tiny_sd_path, "--iters", "20", "--no-export"]
    assert main(list(map(str, [*args, "--workspace", root]))) == 0
    assert [(r["workspace"], r["status"]) for r in rows(root)] == [("mug", "skipped")]
    assert sorted(p.name for p in root.iterdir()) == ["batch.jsonl", "mug"]


@pytest.mark.parametrize("flag", [("--lr", "0.5"), ("--seed", "7")], ids=["lr", "seed"])
def test_an_image_line_finished_with_other_settings_is_not_told_to_use_overwrite(
    tmp_path, tiny_sd_path, capsys, flag
):
    """The line said "--overwrite trains it again with these", and the batch's --overwrite
    refuses a list with image lines; ``dreamtext image ... --overwrite`` is what does it, but
    for another seed, which it refuses (its descriptor, trained with the seed, is kept): that
    line says to move the folder away."""
    from dreamtext.config import resolve_config
    from dreamtext.descriptor import learned_embeds_path
    from dreamtext.imageto3d import image_run_fixed

    root, _ = moved_image_run(tmp_path)
    trained = {
        "prompt": "mug",
        "iters": 20,
        "export": False,
        "guidance": {"model": str(tiny_sd_path)},
    }
    cfg = resolve_config({**trained, "workspace": str(root / "mug")})
    (root / "mug" / "config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    learned_embeds_path(root / "mug").write_bytes(b"")  # the descriptor its seed trained
    path = prompts_file(tmp_path / "new", "image:mug.png")
    args = ["batch", path, "--model", tiny_sd_path, "--iters", "20", "--no-export", *flag]
    assert main(list(map(str, [*args, "--workspace", root]))) == 0
    [line] = [line for line in capsys.readouterr().err.splitlines() if "other settings" in line]
    image = tmp_path / "new" / "mug.png"
    assert "--overwrite trains it again" not in line
    if flag[0] == "--seed":
        with pytest.raises(DreamtextError, match="keeps the run's descriptor"):  # image's rule
            resolve_config(
                {**trained, "seed": 7, "workspace": str(root / "mug")},
                base=json.loads((root / "mug" / "config.json").read_text()),
                **image_run_fixed(root / "mug", True, "image"),
            )
        assert line.endswith(
            "skipped, its descriptor, which `dreamtext image --overwrite` keeps, was trained "
            f"with its seed: move {shlex.quote(str(root / 'mug'))} away and run the batch again "
            "to train it anew"
        ), line
        return
    assert line.endswith(
        f"skipped, `dreamtext image {shlex.quote(str(image))} --workspace "
        f"{shlex.quote(str(root / 'mug'))} --overwrite`, with the "
        "batch's other flags, trains its text→3D again with these"
    )


def test_a_copy_of_an_image_whose_run_still_has_its_image_is_an_image_of_its_own(tmp_path):
    """Only a run whose image is gone from its path is a moved image's: a copy of an image
    that is still there, or two copies of a moved one, get folders of their own."""
    root, _ = moved_image_run(tmp_path)
    shutil.copytree(tmp_path / "new", tmp_path / "copy")
    path = prompts_file(tmp_path, "image:new/mug.png", "image:copy/mug.png")
    assert [e.workspace.name for e in read_prompts(path, root)] == [
        f"mug_{sha(os.path.realpath(tmp_path / d / 'mug.png'))}" for d in ("new", "copy")
    ]
    (tmp_path / "new").rename(tmp_path / "old")  # back where the run recorded it
    path = prompts_file(tmp_path, "image:old/mug.png", "image:copy/mug.png")
    assert [e.workspace.name for e in read_prompts(path, root)] == [
        "mug",
        f"mug_{sha(os.path.realpath(tmp_path / 'copy' / 'mug.png'))}",
    ]


def test_a_byte_order_mark_before_the_first_line_is_ignored(tmp_path):
    """Windows editors start a UTF-8 file with a BOM: the comment stays a comment."""
    path = tmp_path / "prompts.txt"
    path.write_bytes("\ufeff# my prompts\r\na red cube\r\n".encode())
    [entry] = read_prompts(path, tmp_path / "root")
    assert (entry.line, entry.prompt, entry.input) == (2, "a red cube", "a red cube")


def test_an_image_line_naming_a_prompt_says_to_write_it_without_image(tmp_path):
    """It was told only that the image (``lists/a red mug``) is not found."""
    (tmp_path / "lists").mkdir()
    path = tmp_path / "lists" / "prompts.txt"
    path.write_text("a red cube\nimage:a red mug\n")
    with pytest.raises(DreamtextError) as refused:
        read_prompts(path, tmp_path / "root")
    assert str(refused.value) == (
        f"{path}:2: image not found: {tmp_path / 'lists' / 'a red mug'}; for a text prompt, "
        "write the line without 'image:'"
    )


@pytest.mark.parametrize("line", ["image:mug.png  # the red one", "IMAGE: mug.png #red"])
def test_a_comment_after_an_image_lines_path_says_where_comments_go(tmp_path, line):
    """``image:mug.png  # the red one`` was "image not found: ...; for a text prompt, write the
    line without 'image:'": a comment is not a prompt."""
    Image.new("RGB", (8, 8)).save(tmp_path / "mug.png")
    path = prompts_file(tmp_path, "a red cube", line)
    comment = line.partition(" #")[2]
    with pytest.raises(DreamtextError) as error:
        read_prompts(path, tmp_path / "root")
    assert str(error.value) == (
        f"{path}:2: image not found: {tmp_path / line.partition(':')[2].strip()}; a # starts a "
        f"comment only at the start of a line: put '#{comment}' on a line of its own"
    )


def test_image_lines_checked_up_front_are_not_decoded_again_by_their_runs(tmp_path, monkeypatch):
    """read_prompts opens every image line's image; each run then loads its own again
    (runfiles.check_image): only the last line's decode was kept."""
    from dreamtext.images import load_image

    for name in ("a.png", "b.png", "c.png"):
        Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / name)
    path = prompts_file(tmp_path, "image:a.png", "image:b.png", "image:c.png")
    opened = []
    real_open = Image.open
    monkeypatch.setattr(
        Image, "open", lambda fp, *a, **k: opened.append(fp) or real_open(fp, *a, **k)
    )
    entries = read_prompts(path, tmp_path / "root")
    for entry in entries:
        load_image(entry.prompt)
    assert len(opened) == 3


def test_an_image_line_after_a_byte_order_mark_is_an_image(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes("\ufeffimage:nope.png\r\n".encode())
    with pytest.raises(DreamtextError, match=r"prompts\.txt:1: image not found"):
        read_prompts(path, tmp_path / "root")


def test_a_byte_order_mark_at_the_start_of_a_later_line_is_ignored(tmp_path):
    """Two lists joined with ``cat``, the second saved by a Windows editor: its comment was
    trained as a prompt and its image line as a text prompt ``image_mug_png``."""
    path = tmp_path / "prompts.txt"
    path.write_bytes("a red cube\n\ufeff# the second list\r\na blue sphere\r\n".encode())
    entries = read_prompts(path, tmp_path / "root")
    assert [(e.line, e.prompt) for e in entries] == [(1, "a red cube"), (3, "a blue sphere")]
    path.write_bytes("a red cube\n\ufeffimage:nope.png\r\n".encode())
    with pytest.raises(DreamtextError, match=r"prompts\.txt:2: image not found"):
        read_prompts(path, tmp_path / "root")


def test_every_bad_image_line_is_named_at_once(tmp_path, capsys):
    """A list with three missing images was refused for the first alone: the user fixed it, ran
    the batch again, and was refused for the next. A repeated line's note, said before the
    refusal, made it two lines."""
    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    lines = ["a red cube", "image:nope.png", "a red cube", "image:ok.png", "image:bad.png"]
    path = prompts_file(tmp_path, *lines, "image:nope.png", "image:'gone.png'")
    with pytest.raises(DreamtextError) as refused:
        read_prompts(path, tmp_path / "root")
    assert str(refused.value).startswith(
        f"{path}:2: image not found: {tmp_path / 'nope.png'} (check the path); lines 5 (bad.png) "
        "and 7 ('gone.png') cannot be used either"
    )
    assert capsys.readouterr().err == ""
    path = prompts_file(tmp_path, "image:ok.png", "image:nope.png", "image:gone.png")
    with pytest.raises(DreamtextError, match=r":2: image not found: .*; line 3 \(gone.png\) "):
        read_prompts(path, tmp_path / "root")


def _entries(n):
    return [Entry(i + 1, f"p{i}", "text", f"p{i}", Path(f"p{i}")) for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_shares_partition_the_list(n):
    entries = _entries(7)
    shares = [select_share(entries, (k, n)) for k in range(n)]
    together = [e for share in shares for e in share]
    assert sorted(together, key=lambda e: e.line) == entries  # every entry exactly once
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert shares == [select_share(entries, (k, n)) for k in range(n)]  # deterministic


@pytest.mark.parametrize("text", ["3/2", "2/2", "x/y", "1", "-1/3", "1/0", "1/2/3"])
def test_bad_shards_are_user_errors(text):
    with pytest.raises(DreamtextError, match="--shard must be K/N"):
        parse_shard(text)


@pytest.mark.parametrize(
    ("env", "share"),
    [
        ({}, None),
        (
            {
                "SLURM_ARRAY_TASK_ID": "3",
                "SLURM_ARRAY_TASK_MIN": "0",
                "SLURM_ARRAY_TASK_COUNT": "4",
            },
            (3, 4),
        ),
        # --array=1-4: ids start at 1
        (
            {
                "SLURM_ARRAY_TASK_ID": "1",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_COUNT": "4",
            },
            (0, 4),
        ),
        # --array=10-14:2 (ids 10, 12, 14)
        (
            {
                "SLURM_ARRAY_TASK_ID": "14",
                "SLURM_ARRAY_TASK_MIN": "10",
                "SLURM_ARRAY_TASK_STEP": "2",
                "SLURM_ARRAY_TASK_COUNT": "3",
            },
            (2, 3),
        ),
        # no count: from min, max and step
        (
            {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "8"},
            (6, 8),
        ),
    ],
)
def test_slurm_variables_select_the_share(env, share):
    assert shard_from_environment(env) == share


def test_a_slurm_array_that_is_not_a_range_is_a_user_error():
    # --array=1,3,9: three tasks, ids not evenly spaced from 1
    env = {"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3"}
    with pytest.raises(DreamtextError, match="--shard K/N"):
        shard_from_environment(env)


@pytest.mark.parametrize("task", ["3", "5", "6"])
def test_every_task_of_a_slurm_array_list_refuses_it_alike(task):
    """--array=3,5,6 (failed tasks submitted again without --shard): tasks 3 and 5 ran shares
    0/3 and 2/3 of another partition and task 6 refused, so share 1/3 was run by none. The
    variables are those Slurm 22.05 set (RESULTS.md, "SLURM job arrays on a real SLURM")."""
    env = {
        "SLURM_ARRAY_TASK_ID": task,
        "SLURM_ARRAY_TASK_MIN": "3",
        "SLURM_ARRAY_TASK_MAX": "6",
        "SLURM_ARRAY_TASK_COUNT": "3",
        "SLURM_ARRAY_TASK_STEP": "1",
    }
    with pytest.raises(DreamtextError) as refused:
        shard_from_environment(env)
    assert str(refused.value) == (
        "this SLURM array (3 tasks, ids 3 to 6) is a list of ids, not a range a share can be "
        "read from; pass --shard K/N, or with dreamtext's SLURM job script (batch "
        "--sbatch-script) give SHARES (README, 'A SLURM cluster')"
    )


@pytest.mark.parametrize("task", ["0", "2", "4"])
def test_an_evenly_spaced_slurm_list_is_refused_as_a_list_not_for_its_spacing(task):
    """--array=0,2,4 on Slurm 22.05: MIN 0, MAX 4, COUNT 3 and STEP 1 (a list's step is always
    1). Its ids are evenly spaced, yet the refusal told the user task 4 was "not one of 3 evenly
    spaced tasks from 0" and to submit a range, without the SHARES the script takes a list by."""
    env = {
        "SLURM_ARRAY_TASK_ID": task,
        "SLURM_ARRAY_TASK_MIN": "0",
        "SLURM_ARRAY_TASK_MAX": "4",
        "SLURM_ARRAY_TASK_COUNT": "3",
        "SLURM_ARRAY_TASK_STEP": "1",
    }
    with pytest.raises(
        DreamtextError, match=r"^this SLURM array \(3 tasks, ids 0 to 4\) is a list .*SHARES"
    ):
        shard_from_environment(env)


@pytest.mark.parametrize(
    ("spec", "variables", "shares"),
    [
        # Recorded from Slurm 22.05 (benchmarks/slurm_local.sh): ID, MIN, MAX, COUNT, STEP
        ("0-3", [("0", "0", "3", "4", "1"), ("3", "0", "3", "4", "1")], [(0, 4), (3, 4)]),
        ("0-6:3", [("0", "0", "6", "3", "3"), ("6", "0", "6", "3", "3")], [(0, 3), (2, 3)]),
        # MAX is the last id the range holds (6), not the 7 of the submission
        ("0-7:3", [("3", "0", "6", "3", "3"), ("6", "0", "6", "3", "3")], [(1, 3), (2, 3)]),
        ("1-2%1", [("1", "1", "2", "2", "1"), ("2", "1", "2", "2", "1")], [(0, 2), (1, 2)]),
    ],
)
def test_the_variables_slurm_22_05_sets_give_each_task_its_share(spec, variables, shares):
    names = ("ID", "MIN", "MAX", "COUNT", "STEP")
    for values, share in zip(variables, shares, strict=True):
        env = {f"SLURM_ARRAY_TASK_{n}": v for n, v in zip(names, values, strict=True)}
        assert shard_from_environment(env) == share, spec


@pytest.mark.parametrize("step", ["0", "-2"])
@pytest.mark.parametrize("size", [{"COUNT": "1"}, {"MIN": "0", "MAX": "4"}])
def test_a_slurm_array_step_below_one_is_a_user_error(step, size):
    """SLURM_ARRAY_TASK_STEP=0 was a ZeroDivisionError traceback (with COUNT, and still without
    it, where the count is worked out from MAX and the step); a negative step gave a share."""
    env = {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_STEP": step}
    env.update({f"SLURM_ARRAY_TASK_{name}": value for name, value in size.items()})
    with pytest.raises(DreamtextError, match=f"SLURM_ARRAY_TASK_STEP is {step}, .*--shard K/N"):
        shard_from_environment(env)


@pytest.mark.parametrize(
    ("size", "said"),
    [({"COUNT": "0"}, "SLURM_ARRAY_TASK_COUNT 0"), ({"MIN": "5", "MAX": "3"}, "ids 5 to 3")],
)
def test_a_slurm_array_of_no_task_is_named_as_such(size, said):
    """It was "task 5 is not one of -1 evenly spaced tasks from 5"."""
    env = {"SLURM_ARRAY_TASK_ID": "5"}
    env.update({f"SLURM_ARRAY_TASK_{name}": value for name, value in size.items()})
    with pytest.raises(DreamtextError) as refusal:
        shard_from_environment(env)
    assert str(refusal.value).startswith(f"this SLURM array has no task ({said}); submit")


def test_the_shard_flag_wins_over_slurm():
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2"}
    assert resolve_shard("0/3", env) == (0, 3)
    assert resolve_shard(None, env) == (1, 2)


# ----------------------------------------------------------------------------------------------
# Locks


def _lock_file(path, age=0.0, **info):
    path.write_text(json.dumps({"host": HOST, "pid": 1, "started": "x", "token": "theirs", **info}))
    then = time.time() - age
    os.utime(path, (then, then))


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_held_workspace_keeps_other_workers_out_until_released(tmp_path):
    first, second = WorkspaceLock(tmp_path / "a", 60), WorkspaceLock(tmp_path / "a", 60)
    assert first.acquire()
    assert not second.acquire()
    assert f"{HOST} pid {os.getpid()}" in second.describe_holder()
    first.release()
    assert not (tmp_path / "a.lock").exists()
    assert second.acquire()
    second.release()


def test_prompts_of_long_four_byte_letters_get_workspaces_their_locks_fit(tmp_path):
    """60 letters of four bytes (𝓪, pasted "fancy text") made a 240-byte slug; with the hash
    of two prompts that share it and the lock's temp file, the name passed 255 bytes: both
    lines failed with 'OSError: [Errno 36] File name too long'."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("𝓪" * 60 + "𝓫" * 10 + "\n" + "𝓪" * 60 + "𝓬" * 10 + "\n", encoding="utf-8")
    entries = read_prompts(prompts, tmp_path / "root")
    assert len({e.workspace for e in entries}) == 2
    for entry in entries:
        entry.workspace.parent.mkdir(exist_ok=True)
        lock = WorkspaceLock(entry.workspace, 60)
        assert lock.acquire()
        entry.workspace.mkdir()
        lock.release()


def test_a_lock_whose_process_is_gone_is_taken_over(tmp_path):
    _lock_file(tmp_path / "a.lock", pid=_dead_pid())
    lock = WorkspaceLock(tmp_path / "a", 600)
    assert lock.acquire()
    assert json.loads((tmp_path / "a.lock").read_text())["token"] == lock.info["token"]
    lock.release()


@pytest.mark.skipif(
    not os.path.exists("/proc/sys/kernel/random/boot_id"), reason="no boot_id: not Linux"
)
def test_a_lock_last_refreshed_before_this_machine_booted_is_taken_over_at_once(tmp_path):
    """Since locks carry boot_id, a lock of this host from before its reboot was taken for a
    twin machine's, unchecked: its line waited for --lock-timeout. One refreshed since this
    boot (a twin's, alive) is still left to its holder."""
    boot = float(Path("/proc/stat").read_text().split("btime ")[1].split()[0])  # booted at
    since_boot = time.time() - boot
    theirs = {"pid": _dead_pid(), "boot_id": str(uuid.uuid4()), "refresh_s": 60.0}
    timeout = since_boot + 3600  # the lock is far from --lock-timeout old
    _lock_file(tmp_path / "a.lock", age=since_boot + 200, **theirs)  # 3 x 60 s: abandoned
    lock = WorkspaceLock(tmp_path / "a", timeout)
    assert lock.acquire()
    assert "ended with the machine's reboot" in lock.took_over["reason"]
    lock.release()
    _lock_file(tmp_path / "b.lock", age=min(30.0, since_boot / 2), **theirs)
    assert not WorkspaceLock(tmp_path / "b", timeout).acquire()


def test_a_lock_whose_pid_another_process_got_is_taken_over(tmp_path):
    """The lock recorded no process start time: after a reboot or a container's restart, an
    unrelated process with the dead worker's pid kept the prompt locked until --lock-timeout."""
    from dreamtext.processes import process_start

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = process_start(sleeper.pid)
        _lock_file(tmp_path / "a.lock", pid=sleeper.pid, pid_start=started)
        assert not WorkspaceLock(tmp_path / "a", 600).acquire()  # its worker: alive
        _lock_file(tmp_path / "a.lock", pid=sleeper.pid, pid_start=started - 1)
        lock = WorkspaceLock(tmp_path / "a", 600)
        assert lock.acquire()  # the pid is another process's now
        recorded = json.loads((tmp_path / "a.lock").read_text())
        assert recorded["pid_start"] == process_start(os.getpid())
        lock.release()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_another_hosts_lock_is_taken_over_only_when_older_than_the_timeout(tmp_path):
    _lock_file(tmp_path / "a.lock", age=30, host="elsewhere")
    assert not WorkspaceLock(tmp_path / "a", 60).acquire()
    _lock_file(tmp_path / "a.lock", age=90, host="elsewhere")
    lock = WorkspaceLock(tmp_path / "a", 60)
    assert lock.acquire()
    lock.release()


def test_a_shorter_lock_timeout_does_not_take_a_lock_its_holder_still_refreshes(tmp_path, capsys):
    """A worker at --lock-timeout 10 took over the lock of one at 200, which refreshes it every
    50 s, 14 s after its last refresh: the holder's run then stopped as taken over."""
    _lock_file(tmp_path / "a.lock", age=14, host="elsewhere", refresh_s=50.0)
    assert not WorkspaceLock(tmp_path / "a", 10).acquire()
    _lock_file(tmp_path / "a.lock", age=140, host="elsewhere", refresh_s=50.0)
    assert not WorkspaceLock(tmp_path / "a", 10).acquire()  # within 3 of its refreshes
    _lock_file(tmp_path / "a.lock", age=160, host="elsewhere", refresh_s=50.0)
    lock = WorkspaceLock(tmp_path / "a", 10)
    assert lock.acquire()
    assert "not refreshed for 160 s > 150 s, 3 of its holder's refresh intervals" in (
        capsys.readouterr().err
    )
    lock.release()


def test_a_stale_lock_another_worker_claims_first_is_not_recorded_as_taken_over(
    tmp_path, capsys, monkeypatch
):
    """A worker that broke a dead worker's lock, while a third worker claimed the workspace
    before it could, said "taking over" and recorded took_over for a line it skipped."""
    _lock_file(tmp_path / "a.lock", age=900, host="elsewhere")
    lock = WorkspaceLock(tmp_path / "a", 60)
    breaking = lock._break

    def break_then_lose(stale):
        broken = breaking(stale)
        _lock_file(tmp_path / "a.lock", host="elsewhere", token="third")  # fresh: the third's
        return broken

    monkeypatch.setattr(lock, "_break", break_then_lose)
    assert not lock.acquire()
    assert lock.took_over is None and lock.holder["token"] == "third"
    assert "taking over" not in capsys.readouterr().err


@pytest.mark.parametrize("record", ["", '{"host": "elsew', "[]"])
def test_a_lock_whose_record_cannot_be_read_is_taken_over_after_a_few_seconds(
    tmp_path, capsys, record
):
    """An empty lock (a full disk, or a worker killed between creating the file and writing it
    where there are no hard links) or a corrupt one kept its prompt for --lock-timeout (600 s)
    as 'claimed by ? pid ? since ?'. Its writer writes the record at once: a few seconds on, it
    never will, and no holder refreshes a lock it cannot read."""
    path = tmp_path / "a.lock"
    path.write_text(record)
    assert not WorkspaceLock(tmp_path / "a", 600).acquire()  # just made: the record may follow
    old = time.time() - 30
    os.utime(path, (old, old))
    lock = WorkspaceLock(tmp_path / "a", 600)
    assert lock.acquire()
    assert json.loads(path.read_text())["token"] == lock.info["token"]
    assert "record is empty or unreadable" in capsys.readouterr().err
    lock.release()


def test_a_lock_that_the_disk_has_no_room_for_is_not_left_empty(tmp_path, monkeypatch):
    """Without hard links the lock is made empty, then written: a full disk left a zero-length
    lock that kept the prompt from every worker."""

    def no_links(src, dst):
        raise OSError(errno.EPERM, "hard links not supported")

    real_fdopen = os.fdopen

    def full_disk(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        f.write = lambda text: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left"))
        return f

    monkeypatch.setattr(os, "link", no_links)
    monkeypatch.setattr(os, "fdopen", full_disk)
    with pytest.raises(OSError, match="No space"):
        WorkspaceLock(tmp_path / "a", 600).acquire()
    assert not (tmp_path / "a.lock").exists()


def test_a_lock_whose_temporary_file_the_disk_has_no_room_for_leaves_none(tmp_path, monkeypatch):
    """The lock's temporary file was written before the ``try`` that removes it: a full disk
    left an empty ``.a.lock.<token>.tmp`` in the batch's folder."""
    real_write_text = Path.write_text

    def full_disk(self, text, *args, **kwargs):
        if self.name.endswith(".tmp"):
            self.touch()  # opened, then the write fails
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError, match="No space"):
        WorkspaceLock(tmp_path / "a", 600).acquire()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_requeued_slurm_task_takes_over_its_own_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    # a sibling worker of the same task and incarnation (several GPUs in one job) keeps its lock
    _lock_file(tmp_path / "a.lock", host="node7", slurm="77_3", slurm_restart=1)
    assert not WorkspaceLock(tmp_path / "a", 600).acquire()
    # the task's own lock from before its requeue is taken over
    _lock_file(tmp_path / "a.lock", host="node7", slurm="77_3", slurm_restart=0)
    assert WorkspaceLock(tmp_path / "a", 600).acquire()


def test_a_held_lock_is_refreshed_and_not_removed_once_taken_over(tmp_path):
    lock = WorkspaceLock(tmp_path / "a", 0.4)  # refreshed every 0.1 s
    assert lock.acquire()
    claimed = (tmp_path / "a.lock").stat().st_mtime
    seen = {claimed}
    # Two refreshes, however long a loaded machine keeps the heartbeat's thread waiting.
    deadline = time.monotonic() + 120
    while len(seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
        seen.add((tmp_path / "a.lock").stat().st_mtime)
    assert len(seen) == 3 and min(seen) == claimed, "not refreshed twice within 2 minutes"
    _lock_file(tmp_path / "a.lock", host="elsewhere")  # as if another worker took it over
    lock.release()
    assert json.loads((tmp_path / "a.lock").read_text())["token"] == "theirs"


def _swap_in(path, age=0.0, **info):
    """Another worker's lock replaces the file at ``path`` in one step (renamed over it)."""
    tmp = path.with_name(path.name + ".swap")
    _lock_file(tmp, age, **info)
    os.replace(tmp, path)


def test_the_heartbeat_stops_refreshing_once_another_worker_holds_the_lock(tmp_path):
    lock = WorkspaceLock(tmp_path / "a", 0.2)  # checked every 0.05 s
    assert lock.acquire()
    _swap_in(tmp_path / "a.lock", age=100, host="elsewhere", pid=7)
    # The heartbeat checks every 0.05 s, unless a loaded machine keeps its thread waiting.
    deadline = time.monotonic() + 120
    while lock.lost is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert time.time() - (tmp_path / "a.lock").stat().st_mtime > 90  # theirs, not refreshed
    assert lock.lost["host"] == "elsewhere"
    with pytest.raises(RunTakenOver, match="lock taken over by elsewhere pid 7 "):
        lock.check()
    lock.release()
    assert json.loads((tmp_path / "a.lock").read_text())["token"] == "theirs"


def test_a_lock_moved_away_while_a_stale_one_is_broken_is_lost_by_its_holder(tmp_path, monkeypatch):
    """Three workers: ``first`` claims the workspace just after another worker broke the stale
    lock; ``breaker`` (which also saw the stale lock) renames first's fresh lock away, sees the
    token changed and puts it back, but ``third`` claimed the empty place in between."""
    lock_path = tmp_path / "a.lock"
    _lock_file(lock_path, pid=_dead_pid())
    first, breaker, third = (WorkspaceLock(tmp_path / "a", 600) for _ in range(3))
    real_rename, real_link = os.rename, os.link

    def rename(src, dst):
        if str(dst).endswith(".stale"):  # the breaker moves the lock away: first's by now
            Path(src).unlink()
            assert first.acquire()
        real_rename(src, dst)

    def link(src, dst):
        if str(src).endswith(".stale"):  # the breaker puts first's lock back: third was quicker
            assert third.acquire()
        real_link(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "link", link)
    assert not breaker.acquire()
    monkeypatch.undo()
    assert breaker.holder["token"] == third.info["token"]
    third.check()  # third holds the workspace
    with pytest.raises(RunTakenOver, match=f"lock taken over by {HOST} pid {os.getpid()}"):
        first.check()  # first finds third's token and stops
    first.release()
    assert json.loads(lock_path.read_text())["token"] == third.info["token"]
    third.release()
    assert not lock_path.exists()


def test_a_takeover_whose_new_lock_is_replaced_at_once_does_not_start(tmp_path, monkeypatch):
    lock_path = tmp_path / "a.lock"
    _lock_file(lock_path, pid=_dead_pid())
    breaker = WorkspaceLock(tmp_path / "a", 600)
    real_link = os.link

    def link(src, dst):
        real_link(src, dst)  # FileExistsError while the stale lock is there
        # the moment after breaker's claim: a worker that saw the stale lock too moves breaker's
        # lock away, and a third worker claims the workspace
        _swap_in(lock_path, host="elsewhere", pid=7, token="third")

    monkeypatch.setattr(os, "link", link)
    assert not breaker.acquire()
    monkeypatch.undo()
    assert breaker.holder["token"] == "third"
    assert json.loads(lock_path.read_text())["token"] == "third"


def test_a_lock_records_how_often_its_holder_refreshes_it(tmp_path):
    lock = WorkspaceLock(tmp_path / "a", 40)
    assert lock.acquire()
    assert json.loads((tmp_path / "a.lock").read_text())["refresh_s"] == 10.0
    lock.release()


@pytest.mark.parametrize(
    ("age", "refresh_s", "abandoned"),
    [(20, 5, True), (10, 5, False), (170, None, False), (190, None, True)],
)
def test_a_lock_looks_abandoned_after_three_of_its_holders_refresh_intervals(
    tmp_path, age, refresh_s, abandoned
):
    """Without ``refresh_s`` (an older dreamtext's lock) this worker's interval is used:
    min(60, 600 / 4) = 60 s, so 180 s."""
    extra = {} if refresh_s is None else {"refresh_s": refresh_s}
    _lock_file(tmp_path / "a.lock", age=age, host="node1", **extra)
    lock = WorkspaceLock(tmp_path / "a", 600)
    assert not lock.acquire()
    assert lock.looks_abandoned() is abandoned


def test_waiting_for_an_abandoned_lock_stops_when_its_holder_refreshes_it(tmp_path, monkeypatch):
    """A holder that was only slow (a paused node, an NFS server away) refreshes its lock again:
    the waiting worker leaves the line to it instead of waiting out --lock-timeout."""
    lock_file = tmp_path / "a.lock"
    _lock_file(lock_file, age=30, host="node1", refresh_s=5)
    entry = dreamtext.batch.Entry(1, "a", "text", "a", tmp_path / "a")
    naps = []

    def nap(seconds):
        naps.append(seconds)
        os.utime(lock_file)  # the holder's heartbeat

    monkeypatch.setattr(dreamtext.batch.time, "sleep", nap)
    assert dreamtext.batch.wait_for_abandoned_lock(entry, 600) is False
    assert naps == [5.05]
    _lock_file(lock_file, age=30, host="node1", refresh_s=5)
    monkeypatch.setattr(dreamtext.batch.time, "sleep", lambda _: _swap_in(lock_file, token="x"))
    assert dreamtext.batch.wait_for_abandoned_lock(entry, 600) is False  # claimed by another
    lock_file.unlink()
    assert dreamtext.batch.wait_for_abandoned_lock(entry, 600) is False  # released: it ran


def test_a_lock_whose_process_died_after_its_line_was_skipped_is_taken_over_at_the_end(
    tmp_path, monkeypatch
):
    """Two workers of one machine (one per GPU): the first was killed (the out-of-memory killer)
    after the second skipped its line, a second after its last refresh. At the end of its share
    the second looked again, found the lock refreshed lately and left the line untrained, its
    holder gone: exit 0, the line not trained, where a claim takes such a lock over at once."""
    _lock_file(tmp_path / "a.lock", age=1, pid=_dead_pid(), refresh_s=60.0)
    entry = dreamtext.batch.Entry(1, "a", "text", "a", tmp_path / "a")
    monkeypatch.setattr(dreamtext.batch.time, "sleep", lambda _: pytest.fail("waited"))
    assert dreamtext.batch.wait_for_abandoned_lock(entry, 600) is True
    _lock_file(tmp_path / "a.lock", age=1, refresh_s=60.0)  # pid 1: alive, its line left to it
    assert dreamtext.batch.wait_for_abandoned_lock(entry, 600) is False


def test_a_worker_that_stops_waiting_for_a_lock_says_it_left_the_line_to_its_holder(
    tmp_path, monkeypatch, capsys
):
    """Its log said "waiting 570 s for a.lock ... to pass --lock-timeout" and then nothing of
    the line, as though it took it over later; the table alone said it was skipped."""
    lock_file = tmp_path / "a.lock"
    entry = dreamtext.batch.Entry(1, "a", "text", "a", tmp_path / "a")

    def claimed(path):  # another worker's lock, renamed over it
        _swap_in(path, token="x")

    for heartbeat, how in ((os.utime, "was refreshed"), (claimed, "was claimed again")):
        _lock_file(lock_file, age=30, host="node1", refresh_s=5)
        monkeypatch.setattr(
            dreamtext.batch.time, "sleep", lambda _, beat=heartbeat: beat(lock_file)
        )
        assert dreamtext.batch.wait_for_abandoned_lock(entry, 600) is False
        waiting, left = capsys.readouterr().err.splitlines()
        assert waiting.startswith("batch: line 1: waiting ")
        assert left == (
            f"batch: line 1: a.lock {how} while this worker waited: its holder is alive; the "
            "line is left to it"
        )
    # A lock refreshed within its holder's interval at the first look: no wait, nothing said.
    _lock_file(lock_file, age=1, host="node1", refresh_s=5)
    assert dreamtext.batch.wait_for_abandoned_lock(entry, 600) is False
    assert capsys.readouterr().err == ""


def test_a_line_whose_lock_a_dead_node_left_is_taken_over_at_the_end_of_the_share(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """Two nodes, one results folder: node1 died mid-prompt, leaving its lock (not refreshed
    for 15 s, every 2 s while it lived). A worker on this host skipped the line, said nothing
    about it, and ended with exit 0: the prompt was left to a submission after --lock-timeout.
    Now it says why, runs its other lines, waits for the lock to time out, takes the line over
    and records whose lock it took over. (The lock is 15 s old again as the wait starts: line
    2's training, 4 s on a loaded machine, had aged it past the timeout, with no wait to say.)"""
    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"
    root.mkdir()
    lock = root / "a_red_cube.lock"
    # 10 s old: past 3 refreshes (6 s), and 9 s short of the --lock-timeout of 19 s however long
    # this batch takes to reach line 1 on a loaded machine (15 s left 4).
    _lock_file(lock, age=10, host="node1", pid=4242, slurm="7_1", refresh_s=2)
    real_wait = dreamtext.batch.wait_for_abandoned_lock

    def wait_at_15_s(entry, timeout):
        then = time.time() - 15
        os.utime(lock, (then, then))
        return real_wait(entry, timeout)

    monkeypatch.setattr(dreamtext.batch, "wait_for_abandoned_lock", wait_at_15_s)
    args = ["batch", path, *BUILTIN, "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, [*args, "--lock-timeout", "19"]))) == 0
    err = capsys.readouterr().err
    said = (
        r"line 1: claimed by node1 pid 4242 \(SLURM task 7_1\) since x \(a_red_cube\.lock\), "
        r"not refreshed for \d+ s: its worker may be gone"
    )
    assert re.search(said, err), err
    assert "line 1: waiting " in err
    skipped, other, taken = rows(root)
    assert (skipped["line"], skipped["status"]) == (1, "skipped")
    assert (other["line"], other["status"]) == (2, "finished")
    assert (taken["line"], taken["status"]) == (1, "finished")
    assert taken["took_over"]["host"] == "node1"
    assert taken["took_over"]["slurm"] == "7_1"
    assert taken["took_over"]["reason"].endswith("> --lock-timeout 19 s")
    assert status(root / "a_red_cube")["state"] == "finished"
    assert not (root / "a_red_cube.lock").exists()


def test_a_sigterm_while_waiting_for_an_abandoned_lock_stops_the_batch_as_interrupted(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """A task at its time limit (or scancel) while it waits out a dead node's lock: exit 130,
    so that the script requeues it, and the line's row says interrupted, not skipped."""
    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"
    root.mkdir()
    _lock_file(root / "a_red_cube.lock", age=200, host="node1", refresh_s=15)

    def interrupted(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(dreamtext.batch.time, "sleep", interrupted)
    args = ["batch", path, *BUILTIN, "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, [*args, "--lock-timeout", "600"]))) == 130
    assert (
        f"batch: {path}: line 1: interrupted while waiting for its lock; run the batch again to "
        "go on (finished lines are skipped)\n" in capsys.readouterr().err
    )
    assert [(r["line"], r["status"], r["stopped_batch"]) for r in rows(root)] == [
        (1, "skipped", False),
        (2, "finished", False),
        (1, "interrupted", True),
    ]
    assert json.loads((root / "a_red_cube.lock").read_text())["host"] == "node1"  # left as it was


def test_a_sigterm_while_waiting_for_a_lock_after_a_finished_line_stops_the_batch(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """The wait for a dead node's lock comes after line 2's run was complete, whose stops are
    only noted: the wait is more work, which a SIGTERM (the signal, sent while it waits) stops
    as before, exit 130 and the line interrupted."""
    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"
    root.mkdir()
    _lock_file(root / "a_red_cube.lock", age=200, host="node1", refresh_s=15)
    sent = []

    def sleep(_):
        assert not sent, "the wait went on past its SIGTERM"
        sent.append(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(dreamtext.batch.time, "sleep", sleep)
    args = ["batch", path, *BUILTIN, "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, [*args, "--lock-timeout", "600"]))) == 130
    assert f"batch: {path}: line 1: interrupted while waiting for its lock" in (
        capsys.readouterr().err
    )
    assert [(r["line"], r["status"]) for r in rows(root)] == [
        (1, "skipped"),
        (2, "finished"),
        (1, "interrupted"),
    ]


def test_a_stop_while_waiting_for_one_abandoned_lock_names_the_others_not_started(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """Two lines held by a dead node's worker, a SIGTERM while this worker waits out the first:
    the second, which it had said it would come back to, was named nowhere as not started (the
    not-started lines were taken past the first pass's records, of which there was one a line)."""
    path = prompts_file(tmp_path, "a red cube", "a blue sphere", "a green cone")
    root = tmp_path / "root"
    root.mkdir()
    for name in ("a_red_cube", "a_blue_sphere"):
        _lock_file(root / f"{name}.lock", age=200, host="node1", refresh_s=15)

    def interrupted(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(dreamtext.batch.time, "sleep", interrupted)
    args = ["batch", path, *BUILTIN, "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, [*args, "--lock-timeout", "600"]))) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "batch: 1 line not started (line 2); run the same command again to start it (finished "
        "lines are skipped, an interrupted one resumes)"
    ), err
    assert [(r["line"], r["status"]) for r in rows(root)] == [
        (1, "skipped"),
        (2, "skipped"),
        (3, "finished"),
        (1, "interrupted"),
    ]


def test_an_interrupted_wait_whose_record_does_not_fit_says_so_in_one_line(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """The record of a line interrupted while waiting for a dead node's lock goes through the
    same write as every line's: a full disk there stops the batch with one line naming it,
    not a traceback."""
    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"
    root.mkdir()
    _lock_file(root / "a_red_cube.lock", age=200, host="node1", refresh_s=15)
    real_append = dreamtext.batch.append_record

    def full_for_the_interrupted(log, record):
        if record["status"] == "interrupted":
            raise OSError(errno.ENOSPC, "No space left on device", str(log))
        real_append(log, record)

    def interrupted(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(dreamtext.batch, "append_record", full_for_the_interrupted)
    monkeypatch.setattr(dreamtext.batch.time, "sleep", interrupted)
    args = ["batch", path, *BUILTIN, "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, [*args, "--lock-timeout", "600"]))) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"batch: {path}: line 1: interrupted while waiting for its lock" in err
    assert f"batch: line 1: No space left on device ({root / 'batch.jsonl'}); " in err
    assert [(r["line"], r["status"]) for r in rows(root)] == [(1, "skipped"), (2, "finished")]


def test_a_run_still_held_by_the_worker_whose_lock_was_taken_over_is_named_so(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """A node cut off from Slurm, not from ROOT: its task was requeued on node2, which took over
    the lock of its earlier self at once, while node1's process went on training the line and
    held the run's own lock. The skip line said that process was 'not a worker of this batch'."""
    from dreamtext.errors import WorkspaceInUse

    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    root.mkdir()
    _lock_file(root / "a_red_cube.lock", age=100, host="node1", pid=25130, slurm="14_0")

    def in_use(entry, *args, **kwargs):
        raise WorkspaceInUse(entry.workspace, "process 25130 on node1")

    monkeypatch.setattr(dreamtext.batch, "run_one_retrying_stale", in_use)
    args = ["batch", path, *BUILTIN, "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, [*args, "--lock-timeout", "60"]))) == 0
    err = capsys.readouterr().err
    assert "not a worker of this batch" not in err
    assert (
        "process 25130 on node1 is running a run in it: most likely the worker whose lock this "
        "one took over (node1 pid 25130, SLURM task 14_0: not refreshed for 100 s > "
        "--lock-timeout 60 s), still alive"
    ) in err
    (record,) = rows(root)
    assert (record["status"], record["error"]) == ("skipped", "in use by process 25130 on node1")
    assert record["took_over"]["host"] == "node1"


def test_another_users_unreadable_claim_is_skipped_naming_its_owner_and_what_to_check(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """Another user's batch (umask 077) killed on this line left ROOT/<slug>.lock, mode 600. The
    line failed with "Permission denied (...); make that file writable for you again": that
    user's file, which no chmod of this user's changes. It is skipped as the run's own unreadable
    lock is (dreamtext.processes.unreadable_lock): its owner, and what to check and ask for.
    Simulated: reading the lock raises PermissionError, as for that user (root reads any file)."""
    import pwd

    from dreamtext import processes

    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"
    root.mkdir()
    claim = root / "a_red_cube.lock"
    _lock_file(claim, age=3600, host="node1", pid=4242)
    claim.chmod(0o600)
    read_text = Path.read_text

    def refusing(self, *args, **kwargs):
        if self == claim:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)

    real_open = open

    def refusing_open(file, *args, **kwargs):
        if str(file) == str(claim):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", refusing)
    monkeypatch.setattr(processes, "open", refusing_open, raising=False)
    args = ["batch", path, *BUILTIN, "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, [*args, "--lock-timeout", "60"]))) == 0
    err = capsys.readouterr().err
    owner = pwd.getpwuid(os.stat(claim).st_uid).pw_name
    assert "writable for you again" not in err
    assert (
        f"batch: line 1: {root / 'a_red_cube'} is in use: {owner}'s process (as far as can be "
        f"told) is running a run in it; skipped: its lock file {claim} is {owner}'s and you may "
        f"not read it"
    ) in err
    assert f"(ps -u {owner} -f on each machine that uses the folder)" in err
    assert [(r["line"], r["status"]) for r in rows(root)] == [(1, "skipped"), (2, "finished")]
    assert claim.exists()


def test_a_line_another_live_worker_holds_is_skipped_with_a_line_and_not_waited_for(
    tmp_path, tiny_yaml, shapes_cache, capsys
):
    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"
    root.mkdir()
    # Refreshed every 60 s by its worker: live for 3 minutes from its last refresh, however long
    # this batch takes to reach the line (refresh_s 2 looked abandoned after 6 s: on a loaded CI
    # machine the batch reached it later, waited out --lock-timeout 600 and trained the line).
    _lock_file(root / "a_red_cube.lock", age=1, host="node1", pid=4242, refresh_s=60)
    args = ["batch", path, *BUILTIN, "--config", tiny_yaml, "--workspace", root]
    start = time.monotonic()
    assert main(list(map(str, [*args, "--lock-timeout", "600"]))) == 0
    assert time.monotonic() - start < 120
    err = capsys.readouterr().err
    assert re.search(r"refreshed \d+ s ago: another worker runs it; skipped", err), err
    assert [(r["line"], r["status"], r["took_over"]) for r in rows(root)] == [
        (1, "skipped", None),
        (2, "finished", None),
    ]


def test_a_lock_renamed_away_for_a_moment_is_claimed_again_by_its_holder(tmp_path):
    lock = WorkspaceLock(tmp_path / "a", 600)
    assert lock.acquire()
    (tmp_path / "a.lock").rename(tmp_path / "checking")  # a worker checking whether it is stale
    lock.check()
    assert json.loads((tmp_path / "a.lock").read_text())["token"] == lock.info["token"]
    lock.release()
    assert not (tmp_path / "a.lock").exists()


# ----------------------------------------------------------------------------------------------
# Running a list (the built-in prior, 20 steps of a tiny field)


def test_a_failing_prompt_is_recorded_and_the_others_finish_then_skip(
    tmp_path, tiny_yaml, shapes_cache, capsys, monkeypatch
):
    """The line "a cat", which the built-in prior refuses only as its run starts: the batch's
    up-front checks of the prompts (the CLI's before torch, run_batch's) are left out, as for a
    prompt a Stable Diffusion model refuses."""
    import dreamtext.captions

    monkeypatch.setattr(dreamtext.batch, "check_builtin_prior", lambda *args: None)
    monkeypatch.setattr(dreamtext.captions, "check_builtin_prompt_lines", lambda *args: None)
    path = prompts_file(tmp_path, "a red cube", "a cat", "a blue sphere")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN, "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 1
    first = rows(root)
    assert [(r["line"], r["status"]) for r in first] == [
        (1, "finished"),
        (2, "failed"),
        (3, "finished"),
    ]
    assert "a cat" in first[1]["error"] and first[0]["error"] is None
    assert first[0]["its"] > 0 and first[0]["shard"] is None and first[0]["host"] == HOST
    assert first[0]["workspace"] == "a_red_cube"
    assert not (root / "a_cat").exists()
    out = capsys.readouterr().out
    assert "failed" in out and "a_cat" in out and "2 finished, 0 skipped, 1 failed" in out
    for name in ("a_red_cube", "a_blue_sphere"):
        assert status(root / name)["state"] == "finished" and steps(root / name)[-1] == 20

    finished_log = (root / "a_red_cube" / "log.jsonl").stat().st_mtime_ns
    assert main(list(map(str, args))) == 1
    again = rows(root)[3:]
    assert [r["status"] for r in again] == ["skipped", "failed", "skipped"]
    assert (root / "a_red_cube" / "log.jsonl").stat().st_mtime_ns == finished_log


@pytest.mark.skipif(not hasattr(torch, "AcceleratorError"), reason="torch < 2.8")
def test_a_cuda_error_stops_the_batch_with_its_record_and_a_rerun_goes_on(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """After CUDA's own error (here raised by hand) the process's GPU is unusable: the line is
    recorded as failed, even though freeing GPU memory fails too, and the batch stops instead
    of failing every later line; run again, it resumes that line and goes on."""
    from dreamtext import batch

    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"
    args = list(map(str, ["batch", path, *BUILTIN, "--config", tiny_yaml, "--workspace", root]))
    real_step, real_free = trainer.train_step, batch.free_memory

    def step_then_crash(run):
        if run.step == 10:
            raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
        return real_step(run)

    def free_on_a_broken_gpu():
        raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(trainer, "train_step", step_then_crash)
    monkeypatch.setattr(batch, "free_memory", free_on_a_broken_gpu)
    monkeypatch.setattr(batch, "runs_on_cuda", lambda cfg: True)  # as on the GPU it had
    assert main(args) == 1  # a failed line, not a disk's stop (2)
    [record] = rows(root)
    assert (record["status"], record["stopped_batch"]) == ("failed", True)
    assert record["error"].startswith("AcceleratorError: CUDA error: an illegal memory access")
    assert "the batch stops here" in capsys.readouterr().err
    assert not (root / "a_blue_sphere").exists() and not list(root.glob("*.lock"))

    monkeypatch.setattr(trainer, "train_step", real_step)
    monkeypatch.setattr(batch, "free_memory", real_free)
    assert main(args) == 0
    assert [r["status"] for r in rows(root)[1:]] == ["finished", "finished"]


def test_ctrl_c_saves_the_current_run_and_stops_the_batch(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch
):
    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"
    args = list(map(str, ["batch", path, *BUILTIN, "--config", tiny_yaml, "--workspace", root]))
    real_step = ctrl_c_at_step(monkeypatch, 3)
    assert main(args) == 130
    # stopped_batch was false here, though README says it tells whether the batch stopped at it
    assert [(r["status"], r["stopped_batch"]) for r in rows(root)] == [("interrupted", True)]
    assert status(root / "a_red_cube")["state"] == "interrupted"
    assert not (root / "a_blue_sphere").exists() and not list(root.glob("*.lock"))
    # as if the first attempt had trained for 1000 s: the card's time is that of both attempts
    interrupted = {**status(root / "a_red_cube"), "seconds": 1000.0}
    (root / "a_red_cube" / "status.json").write_text(json.dumps(interrupted))

    monkeypatch.setattr(trainer, "train_step", real_step)
    assert main(args) == 0
    assert [(r["status"], r["stopped_batch"]) for r in rows(root)[1:]] == [("finished", False)] * 2
    assert steps(root / "a_red_cube") == [*range(5, 21, 5)]
    assert 1000.0 < status(root / "a_red_cube")["seconds"] < 1100.0


def test_the_prompts_bar_does_not_count_an_interrupted_prompt_as_done(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """A one-line batch stopped by Ctrl-C ended with its bar at 1/1, 100%."""
    path = prompts_file(tmp_path, "a red cube")
    args = ["batch", path, *BUILTIN, "--config", tiny_yaml, "--workspace", tmp_path / "root"]
    ctrl_c_at_step(monkeypatch, 3)
    assert main(list(map(str, args))) == 130
    bars = re.findall(r"prompts:[^\r\n]*?(\d+)/1 ", capsys.readouterr().err)
    assert bars and bars[-1] == "0", bars


@pytest.mark.parametrize("checkpoint_every", [2, 100])
def test_a_second_ctrl_c_says_whether_the_rerun_resumes_or_starts_again(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys, checkpoint_every
):
    """A second Ctrl-C stops inside a step, without the step's checkpoint; the line said "run the
    batch again to resume" also when the run had no checkpoint to resume from."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    config = {**yaml.safe_load(tiny_yaml.read_text()), "checkpoint_every": checkpoint_every}
    tiny_yaml.write_text(yaml.safe_dump(config))
    real_step = trainer.train_step

    def twice_at_step_3(run):
        if run.step == 2:  # inside step 3: the first Ctrl-C sets the flag, the second raises
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        return real_step(run)

    monkeypatch.setattr(trainer, "train_step", twice_at_step_3)
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 130
    err = capsys.readouterr().err
    if checkpoint_every == 2:
        assert (
            f"batch: {path}: line 1: interrupted; run the batch again to resume from the last "
            "checkpoint" in err
        )
    else:
        assert (
            f"batch: {path}: line 1: interrupted before the run's first checkpoint; run the batch "
            "again to start it again" in err
        )
    assert rows(root)[-1]["status"] == "interrupted"


def _sigterm_once_finished(monkeypatch, workspace_name):
    """Send SIGTERM to this process once the run in ``workspace_name`` is recorded finished in
    its status.json (its last file, the final preview, in place). Returns the runs it was sent
    in."""
    from dreamtext.runstatus import StatusTracker

    real, sent = StatusTracker.write, []

    def write(self, state, *args, **kwargs):
        real(self, state, *args, **kwargs)
        if state == "finished" and Path(self.workspace).name == workspace_name and not sent:
            sent.append(workspace_name)
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(StatusTracker, "write", write)
    return sent


def test_a_sigterm_once_a_line_is_complete_stops_the_batch_with_that_line_finished(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """A stop between two lines, arriving once line 1's run was complete: its batch.jsonl row
    said interrupted (of a run whose status.json said finished); the batch stops before line 2
    as it did, exit 130, with line 2 named as not started."""
    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"
    sent = _sigterm_once_finished(monkeypatch, "a_red_cube")
    args = ["batch", path, *BUILTIN[:2], "--iters", "2", "--config", tiny_yaml]
    assert main(list(map(str, [*args, "--workspace", root]))) == 130
    err = capsys.readouterr().err
    assert sent == ["a_red_cube"]
    assert [(r["line"], r["status"]) for r in rows(root)] == [(1, "finished")]
    assert status(root / "a_red_cube")["state"] == "finished"
    assert not (root / "a_blue_sphere").exists()
    assert err.strip().splitlines()[-1].startswith("batch: 1 line not started (line 2); ")


@pytest.mark.parametrize("when", ["finished", "table", "table of skipped lines"])
def test_a_sigterm_once_the_last_line_is_complete_changes_nothing(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys, when
):
    """A stop once the batch's last line was complete (its run recorded finished, or the batch
    printing its table, after lines it trained or skipped as finished): exit 130 and
    "interrupted" of a batch with nothing left to run, whose rerun only skips every line. Now
    its own status, 0, and each line's row as without the stop."""
    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN[:2], "--iters", "2", "--config", tiny_yaml]
    args = list(map(str, [*args, "--workspace", root]))
    expected = ["finished", "finished"]
    if when == "table of skipped lines":
        assert main(args) == 0
        capsys.readouterr()
        expected += ["skipped", "skipped"]
    if when == "finished":
        sent = _sigterm_once_finished(monkeypatch, "a_blue_sphere")
    else:
        real, sent = dreamtext.batch.summary_table, []

        def summary_table(records):
            sent.append("table")
            signal.raise_signal(signal.SIGTERM)
            return real(records)

        monkeypatch.setattr(dreamtext.batch, "summary_table", summary_table)
    code = main(args)
    out, err = capsys.readouterr()
    assert len(sent) == 1
    assert code == 0, err
    assert "interrupted" not in err and "not started" not in err
    assert [r["status"] for r in rows(root)] == expected
    assert expected[-1] in out


def test_a_sigterm_as_the_last_skipped_lines_record_is_written_changes_nothing(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """A batch whose lines are all finished skips each one: a SIGTERM while the last line's
    record was appended (held back until it is whole) exited 130, "interrupted", of a batch that
    had visited and recorded every line and had nothing left. Now 0, each line's row as
    without the stop."""
    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN[:2], "--iters", "2", "--config", tiny_yaml]
    args = list(map(str, [*args, "--workspace", root]))
    assert main(args) == 0
    capsys.readouterr()
    real, sent = dreamtext.batch.log_record, []

    def log_record(log, record, entry, *rest, **kwargs):
        written = real(log, record, entry, *rest, **kwargs)
        if entry.line == 2:
            sent.append(entry.line)
            signal.raise_signal(signal.SIGTERM)
        return written

    monkeypatch.setattr(dreamtext.batch, "log_record", log_record)
    code = main(args)
    err = capsys.readouterr().err
    assert sent == [2]
    assert code == 0, err
    assert "interrupted" not in err
    assert [r["status"] for r in rows(root)] == ["finished", "finished", "skipped", "skipped"]


@pytest.mark.parametrize(
    ("trained", "at_line"),
    [(False, 1), (False, 2), (True, 1)],
    ids=["skipped-line-1", "skipped-line-2", "trained-line-1"],
)
def test_a_stop_between_lines_before_finished_lines_alone_says_so_in_one_line(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys, trained, at_line
):
    """A SIGTERM as a line's record is written (held back until it is whole), the line skipped
    as finished or trained by this batch, where every line after it was finished before the
    batch started: the batch stops there, 130, and nothing is left to start. It printed no line
    at all, the bar its last words; now one line names the lines it did not visit and that a
    rerun skips them."""
    lines = ["a red cube", "a blue sphere", "a green cone"]
    root = tmp_path / "root"
    common = [*BUILTIN[:2], "--iters", "2", "--config", tiny_yaml, "--workspace", root]
    before = prompts_file(tmp_path, *lines[trained:], name="before.txt")
    assert main(list(map(str, ["batch", before, *common]))) == 0
    capsys.readouterr()
    real, sent = dreamtext.batch.log_record, []

    def log_record(log, record, entry, *rest, **kwargs):
        written = real(log, record, entry, *rest, **kwargs)
        if entry.line == at_line and not sent:
            sent.append(entry.line)
            signal.raise_signal(signal.SIGTERM)
        return written

    monkeypatch.setattr(dreamtext.batch, "log_record", log_record)
    code = main(list(map(str, ["batch", prompts_file(tmp_path, *lines), *common])))
    err = capsys.readouterr().err
    assert (sent, code) == ([at_line], 130), err
    left, them = ("lines 2, 3", "them") if at_line == 1 else ("line 3", "it")
    said = [line for line in err.splitlines() if line.startswith("batch: interrupted before")]
    assert said == [
        f"batch: interrupted before {left}, finished before this batch started: nothing is "
        f"left to train (the same command again skips {them})"
    ]
    assert [r["line"] for r in rows(root)][-at_line:] == list(range(1, at_line + 1))


def test_sigterm_during_the_export_says_interrupted_and_a_rerun_exports(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    tiny_yaml.write_text(yaml.safe_dump({**yaml.safe_load(tiny_yaml.read_text()), "export": True}))
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    exports = []

    def terminated_in_export(run):
        exports.append(run.step)
        if len(exports) == 1:
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(trainer, "export_trained", terminated_in_export)
    assert main(list(map(str, args))) == 130
    err = capsys.readouterr().err
    assert f"batch: {path}: line 1: interrupted in the export, after step 5; saved " in err
    assert "; run the batch again to resume" in err
    assert (status(root / "a_red_cube")["state"], status(root / "a_red_cube")["phase"]) == (
        "interrupted",
        "export",
    )
    assert main(list(map(str, args))) == 0
    assert exports == [5, 5]  # the rerun trains nothing and exports
    assert [(r["status"], r["stopped_batch"]) for r in rows(root)] == [
        ("interrupted", True),
        ("finished", False),
    ]


def test_a_stop_after_a_lines_last_look_stops_the_batch_before_its_export(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """A SIGTERM after the training loop's last look at its stop flag (as it closes its bar)
    stopped nothing: the line went on to its export, then the batch to its next line. The line
    stops there, saved and not exported, and the batch with it; run again, it exports the line
    (training nothing) and trains the next."""
    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"
    tiny_yaml.write_text(yaml.safe_dump({**yaml.safe_load(tiny_yaml.read_text()), "export": True}))
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    sent, exports = [], []

    class BarClosedByAStop(trainer.tqdm):
        def close(self):
            text_bar = getattr(self, "desc", "").startswith("text→3D")
            if text_bar and self.n == self.total and not sent:
                sent.append(self.n)
                signal.raise_signal(signal.SIGTERM)
            super().close()

    monkeypatch.setattr(trainer, "tqdm", BarClosedByAStop)
    monkeypatch.setattr(trainer, "export_trained", lambda run: exports.append(run.cfg.prompt))
    assert main(list(map(str, args))) == 130
    err = capsys.readouterr().err
    assert (sent, exports) == ([5], []), err
    saved = root / "a_red_cube" / "checkpoints" / "last.pt"
    assert (
        f"batch: {path}: line 1: interrupted before the export, after step 5; saved {saved}; "
        "run the batch again to resume"
    ) in err
    assert not (root / "a_blue_sphere").exists()
    assert main(list(map(str, args))) == 0
    assert exports == ["a red cube", "a blue sphere"]
    assert [(r["line"], r["status"]) for r in rows(root)] == [
        (1, "interrupted"),
        (1, "finished"),
        (2, "finished"),
    ]


def test_the_summary_counts_every_status_of_its_rows():
    record = {"line": 1, "seconds": 1.0, "its": None, "gpu_mem_mib": None, "workspace": "a"}
    statuses = ["finished", "skipped", "failed", "interrupted", "interrupted"]
    records = [{**record, "status": s, "error": None} for s in statuses]
    assert summary_table(records).splitlines()[-1] == (
        "1 finished, 1 skipped, 1 failed, 2 interrupted"
    )


def test_a_run_whose_lock_is_taken_over_stops_and_the_batch_goes_on(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch
):
    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN, "--config", tiny_yaml, "--workspace", root]
    trained = []
    real_step = trainer.train_step

    def step_then_lose_the_lock(run):
        record = real_step(run)
        if run.workspace.name == "a_red_cube":
            trained.append(run.step)
            if run.step == 3:
                _swap_in(root / "a_red_cube.lock", host="elsewhere", pid=7)
        return record

    monkeypatch.setattr(trainer, "train_step", step_then_lose_the_lock)
    assert main(list(map(str, args))) == 0
    lost, other = rows(root)
    assert (lost["status"], lost["error"]) == (
        "interrupted",
        "lock taken over by elsewhere pid 7 (a_red_cube.lock)",
    )
    assert trained == [1, 2, 3, 4]  # stopped at its next check: the checkpoint at step 4
    assert status(root / "a_red_cube")["state"] == "running"  # left to the new holder
    assert json.loads((root / "a_red_cube.lock").read_text())["host"] == "elsewhere"
    assert other["status"] == "finished"


def test_an_image_line_taken_over_mid_search_writes_no_sentence(
    tmp_path, tiny_sd_path, tiny_clip_path, monkeypatch
):
    """Another worker took over an image line's workspace while its sentence search ran: the
    search went on and wrote sentence.json into the new holder's workspace."""
    import dreamtext.describe

    real_encode = dreamtext.describe.ClipEncoder.encode_texts

    def encode_then_lose_the_lock(self, texts):
        _swap_in(root / "mug.lock", host="elsewhere", pid=7)
        return real_encode(self, texts)

    monkeypatch.setattr(dreamtext.describe.ClipEncoder, "encode_texts", encode_then_lose_the_lock)
    root, args = mug_batch(tmp_path, tiny_sd_path, tiny_clip_path)
    # Small word lists: the search over the 3,696 default nouns took a minute and checks no more.
    (tmp_path / "nouns.txt").write_text("mug\ncube\n")
    (tmp_path / "adjectives.txt").write_text("red\nblue\n")
    args += ["--nouns", tmp_path / "nouns.txt", "--adjectives", tmp_path / "adjectives.txt"]
    args += ["--max-words", "2"]
    assert main(list(map(str, args))) == 0
    [record] = rows(root)
    assert (record["status"], record["error"]) == (
        "interrupted",
        "lock taken over by elsewhere pid 7 (mug.lock)",
    )
    assert not (root / "mug" / "descriptor" / "sentence.json").exists()
    assert status(root / "mug")["state"] == "running"  # left to the new holder


def test_slurm_array_variables_pick_the_share(tmp_path, tiny_yaml, shapes_cache, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")  # --array=1-2, the second task
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    path = prompts_file(tmp_path, "a red cube", "a blue cube", "a green cube")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN, "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 0
    assert [(r["line"], r["shard"], r["status"]) for r in rows(root)] == [(2, "1/2", "finished")]
    assert sorted(p.name for p in root.iterdir()) == ["a_blue_cube", "batch.jsonl"]


def test_a_slurm_restart_count_that_is_no_number_is_one_line_with_nothing_written(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """SLURM_RESTART_COUNT=x was a ValueError traceback at the first line's lock, after ROOT had
    been made."""
    monkeypatch.setenv("SLURM_JOB_ID", "57")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "x")
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN, "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 2
    assert capsys.readouterr().err == (
        "dreamtext: error: SLURM_RESTART_COUNT is 'x', not a number of restarts (SLURM sets 0, "
        "1, 2 ...); unset it, or set the count of this task's requeues\n"
    )
    assert not root.exists()


def test_a_killed_batch_resumes_from_its_last_checkpoint(tmp_path, tiny_yaml, shapes_cache):
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    args = [path, *BUILTIN[:2], "--iters", "30", "--config", tiny_yaml, "--workspace", root]
    worker = batch_process(*args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = root / "a_red_cube" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 600  # torch's import alone: a minute or more on a loaded machine
    while not checkpoint.is_file() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert checkpoint.is_file(), "no checkpoint within 10 minutes"
    assert worker.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert status(root / "a_red_cube")["state"] == "running"  # as the killed process left it
    assert (root / "a_red_cube.lock").is_file()  # held by a process that is gone

    again = batch_process(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = again.communicate(timeout=900)
    assert again.returncode == 0, err
    assert "taking over" in err
    assert [r["status"] for r in rows(root)] == ["finished"]
    assert steps(root / "a_red_cube") == [5, 10, 15, 20, 25, 30]
    assert status(root / "a_red_cube")["step"] == 30
    assert not (root / "a_red_cube.lock").exists()


def test_two_workers_on_one_list_train_each_prompt_once(tmp_path, tiny_yaml, shapes_cache):
    lines = ["a red cube", "a blue cube", "a green cube", "a red sphere"]
    path = prompts_file(tmp_path, *lines)
    root = tmp_path / "root"
    args = [path, *BUILTIN[:2], "--iters", "10", "--config", tiny_yaml, "--workspace", root]
    workers = [batch_process(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in "ab"]
    for worker in workers:
        _, err = worker.communicate(timeout=900)
        assert worker.returncode == 0, err
    records = rows(root)
    assert len(records) == 2 * len(lines)
    for line in range(1, len(lines) + 1):
        mine = sorted(r["status"] for r in records if r["line"] == line)
        assert mine == ["finished", "skipped"], (line, records)
    assert len({r["host"] for r in records}) == 1
    for name in ("a_red_cube", "a_blue_cube", "a_green_cube", "a_red_sphere"):
        assert steps(root / name) == [5, 10]  # trained once, start to end


def _old_batch_sh_run(workspace, step=20, iters=20, mesh=True):
    """A workspace as scripts/batch.sh left it: config, checkpoint, mesh, no status.json."""
    import torch

    (workspace / "checkpoints").mkdir(parents=True)
    (workspace / "config.json").write_text(json.dumps({"prompt": "a red cube", "iters": iters}))
    torch.save({"step": step}, workspace / "checkpoints" / "last.pt")
    if mesh:
        (workspace / "mesh").mkdir()
        (workspace / "mesh" / "mesh.glb").write_bytes(b"glTF")
    return workspace


@pytest.mark.parametrize(
    ("run", "asked", "finished"),
    [
        ({}, 20, True),
        ({}, 10, True),
        ({}, 30, False),  # asked for more iterations: it resumes
        ({"step": 15}, 20, False),  # stopped before its iters
        ({"step": 15}, 10, False),  # stopped before its own iters (20), past the asked 10
        ({"step": 15, "iters": 15}, 20, False),
        ({"mesh": False}, 20, False),  # trained but not exported
    ],
)
def test_a_run_of_the_old_batch_script_counts_as_finished_by_its_files(
    tmp_path, run, asked, finished
):
    from dreamtext.batch import is_finished
    from dreamtext.config import resolve_config

    workspace = _old_batch_sh_run(tmp_path / "a_red_cube", **run)
    cfg = resolve_config({"prompt": "a red cube", "workspace": str(workspace), "iters": asked})
    assert is_finished(cfg) is finished


def test_a_batch_skips_runs_the_old_batch_script_finished(tmp_path, tiny_yaml, shapes_cache):
    root = tmp_path / "root"
    workspace = _old_batch_sh_run(root / "a_red_cube")
    path = prompts_file(tmp_path, "a red cube")
    args = ["batch", path, *BUILTIN, "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 0
    assert [r["status"] for r in rows(root)] == ["skipped"]
    assert not (workspace / "log.jsonl").exists() and not (workspace / "status.json").exists()


def test_a_finished_line_whose_last_checkpoint_is_cut_short_is_not_done(tmp_path):
    """The export of a finished run with a truncated or missing last.pt says the same batch
    command goes on from its newest whole step file; the batch skipped the line as done."""
    import torch

    from dreamtext import batch
    from dreamtext.checkpoint import RUN_KEYS, with_digest
    from dreamtext.config import TrainConfig

    workspace = tmp_path / "a_red_cube"
    (workspace / "checkpoints").mkdir(parents=True)
    whole = with_digest({**{key: {} for key in RUN_KEYS}, "step": 2})
    last = workspace / "checkpoints" / "last.pt"
    torch.save(whole, last)
    torch.save(whole, workspace / "checkpoints" / "step_000002.pt")
    (workspace / "status.json").write_text(json.dumps({"state": "finished", "step": 2, "iters": 2}))
    cfg = TrainConfig(workspace=str(workspace), iters=2, export=False)
    assert batch.is_finished(cfg)
    last.write_bytes(last.read_bytes()[:100])
    assert not batch.is_finished(cfg)
    last.unlink()
    assert not batch.is_finished(cfg)
    shutil.rmtree(workspace / "checkpoints")  # none to go on from: done as it is
    assert batch.is_finished(cfg)


def test_a_finished_run_of_another_prompt_with_the_same_name_is_not_skipped(
    tmp_path, tiny_yaml, shapes_cache
):
    root = tmp_path / "root"
    ran(root / "a_red_cube", "A red cube!")  # from another list into the same root
    done = (root / "a_red_cube" / "status.json").read_text()
    path = prompts_file(tmp_path, "a red cube")
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 0
    [record] = rows(root)
    assert record["status"] == "finished"
    assert record["workspace"] == f"a_red_cube_{sha('a red cube')}"
    config = json.loads((root / record["workspace"] / "config.json").read_text())
    assert config["prompt"] == "a red cube"
    assert (root / "a_red_cube" / "status.json").read_text() == done  # untouched


def test_a_finished_run_in_the_entrys_folder_counts_only_for_its_own_prompt(tmp_path, capsys):
    """Whatever the names: a folder holding a finished run of another prompt is never skipped."""
    from dreamtext.batch import BatchOptions, entry_config, run_entry

    root = tmp_path / "root"
    ran(root / "a_red_cube", "a red cube")
    entry = Entry(1, "A red cube!", "text", "A red cube!", root / "a_red_cube")
    cfg = entry_config(entry, {"iters": 20, "guidance": {"model": "builtin:shapes"}}, None, None)
    record = run_entry(entry, cfg, BatchOptions(root=root), root, None)
    assert record["status"] == "failed"
    assert record["error"] == (
        f"{root / 'a_red_cube'} holds a run of 'a red cube'; move that folder away and run the "
        "batch again"
    )
    mine = Entry(1, "a red cube", "text", "a red cube", root / "a_red_cube")
    assert run_entry(mine, cfg, BatchOptions(root=root), root, None)["status"] == "skipped"


def test_a_skipped_run_with_other_settings_is_named_in_one_warning_line(
    tmp_path, tiny_yaml, shapes_cache, capsys
):
    """Each line names its own `dreamtext text PROMPT --workspace W --overwrite`, to run with
    its other text→3D flags: it said "--overwrite trains it again with these", and the batch's
    --overwrite trains every line of the list again (a_blue_cube's run replaced too)."""
    path = prompts_file(tmp_path, "a red cube", "a blue cube")
    root = tmp_path / "root"
    flags = [*BUILTIN[:2], "--iters", "5", "--config", tiny_yaml]
    args = list(map(str, ["batch", path, *flags, "--workspace", root]))
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 0  # same settings: skipped without a word
    assert "other settings" not in capsys.readouterr().err
    changed = ["--seed", "7", "--lr", "0.5", "--guidance", "50", "--iters", "3"]  # fewer iters: ok
    assert main([*args, *changed]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "other settings" in line]
    commands = {
        name: f"dreamtext text '{name.replace('_', ' ')}' --workspace "
        f"{shlex.quote(str(root / name))} --overwrite"
        for name in ("a_red_cube", "a_blue_cube")
    }
    assert warnings == [
        f"batch: line {n}: {root / name} finished with other settings (seed 0 → 7, lr 0.02 → 0.5, "
        f"guidance.guidance_scale 4.0 → 50.0); skipped, `{commands[name]}`, with its other "
        "text→3D flags, trains it again with these"
        for n, name in ((1, "a_red_cube"), (2, "a_blue_cube"))
    ]
    assert [r["status"] for r in rows(root)[4:]] == ["skipped", "skipped"]
    assert json.loads((root / "a_red_cube" / "config.json").read_text())["seed"] == 0
    blue = (root / "a_blue_cube" / "checkpoints" / "last.pt").read_bytes()
    assert main([*shlex.split(commands["a_red_cube"])[1:], *map(str, flags), *changed]) == 0
    trained = json.loads((root / "a_red_cube" / "config.json").read_text())
    assert (trained["seed"], trained["lr"], trained["iters"]) == (7, 0.5, 3)
    assert steps(root / "a_red_cube") == [3]  # from scratch
    assert (root / "a_blue_cube" / "checkpoints" / "last.pt").read_bytes() == blue
    assert main([*args, *changed]) == 0  # a_red_cube now skipped without a word
    [warning] = [line for line in capsys.readouterr().err.splitlines() if "other settings" in line]
    assert warning.startswith(f"batch: line 2: {root / 'a_blue_cube'} finished with other")


def test_an_unfinished_run_resumed_with_other_settings_gets_a_warning(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """A rerun that resumes an interrupted prompt with other flags says which settings change
    from its last checkpoint on (they used to apply without a word); one the checkpoint fixes
    (the seed) is refused for the batch before any line runs, not a warning."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN[:2], "--iters", "6", "--config", tiny_yaml, "--workspace", root]
    real_step = ctrl_c_at_step(monkeypatch, 3)
    assert main(list(map(str, args))) == 130
    monkeypatch.setattr(trainer, "train_step", real_step)
    capsys.readouterr()
    assert main(list(map(str, [*args, "--seed", "7"]))) == 2  # refused before it runs
    assert [r["status"] for r in rows(root)] == ["interrupted"]
    said = capsys.readouterr().err
    assert "seed 0 → 7" in said and "other settings" not in said
    assert main(list(map(str, [*args, "--lr", "0.5", "--guidance", "50"]))) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "other settings" in line]
    own = f"dreamtext text 'a red cube' --workspace {shlex.quote(str(root / 'a_red_cube'))}"
    assert warnings == [
        f"batch: line 1: {root / 'a_red_cube'} resumes with other settings than it started with "
        "(lr 0.02 → 0.5, guidance.guidance_scale 4.0 → 50.0); they apply from its last "
        f"checkpoint on, `{own} --overwrite`, with its other text→3D flags, trains it again "
        "from scratch with them"
    ]
    assert [r["status"] for r in rows(root)] == ["interrupted", "finished"]
    saved = json.loads((root / "a_red_cube" / "config.json").read_text())
    assert saved["lr"] == 0.5 and saved["guidance"]["guidance_scale"] == 50.0


def run_files(workspace):
    """The bytes of every file in ``workspace``, by path: what a refused rerun must leave."""
    return {p: p.read_bytes() for p in sorted(workspace.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def nothing_written(root, *names):
    """Check that the block leaves ``root``'s batch.jsonl and the files of its runs ``names``
    byte for byte as they were: what a batch refused before any line runs must leave."""
    before = {name: run_files(root / name) for name in names}
    log = (root / "batch.jsonl").read_bytes()
    yield
    assert (root / "batch.jsonl").read_bytes() == log
    assert {name: run_files(root / name) for name in names} == before


def test_a_rerun_without_the_preset_resumes_a_run_with_the_settings_it_had(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """As `text --resume`: the run's config.json, then the batch's preset, files and flags. The
    rerun without --preset fitfusion resumed the stopped line at guidance 4 (the built-in
    preset's) where it had trained at 1000, and trained a line it had finished on to 1000 steps
    (the built-in preset's iters) where the rerun gave no --iters."""
    path = prompts_file(tmp_path, "a red cube", "a blue cube")
    root = tmp_path / "root"
    first = ["batch", path, *BUILTIN[:2], "--config", tiny_yaml, "--workspace", root]
    real_step = ctrl_c_at_step(monkeypatch, 3, "a_blue_cube")
    assert main(list(map(str, [*first, "--preset", "fitfusion", "--iters", "6"]))) == 130
    monkeypatch.setattr(trainer, "train_step", real_step)
    capsys.readouterr()
    started = train_calls(monkeypatch)
    assert main(list(map(str, first))) == 0
    assert "other settings" not in capsys.readouterr().err
    assert started == [{"resume": True}]  # the finished line is skipped, not trained on
    assert [r["status"] for r in rows(root)] == ["finished", "interrupted", "skipped", "finished"]
    for name in ("a_red_cube", "a_blue_cube"):
        saved = json.loads((root / name / "config.json").read_text())
        assert saved["guidance"]["guidance_scale"] == 1000.0 and saved["iters"] == 6
        assert saved["presets"] == ["builtin-shapes", "fitfusion"]
        assert saved["prompt"] == name.replace("_", " ") and steps(root / name)[-1] == 6
    [resumed] = json.loads((root / "a_blue_cube" / "config.json").read_text())["resumes"]
    assert set(resumed["changed"]) <= {"workspace"}


def test_a_rerun_asking_what_a_checkpoint_fixes_is_refused_before_any_line_runs(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """A changed field or seed of a line to resume was that line's failure, after its model had
    loaded, told to pass --workspace NEW_FOLDER (the batch's root); the lines before it ran.
    Now one line names each line, its run and the settings, exit 2, nothing written. To train
    it anew it names the line's own `dreamtext text ... --overwrite`: the batch's --overwrite
    (which it named) trains a_red_cube's finished run again too."""
    path = prompts_file(tmp_path, "a red cube", "a blue cube", "a green cube")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN[:2], "--iters", "6", "--config", tiny_yaml, "--workspace", root]
    real_step = ctrl_c_at_step(monkeypatch, 3, "a_blue_cube")
    assert main(list(map(str, args))) == 130
    monkeypatch.setattr(trainer, "train_step", real_step)
    capsys.readouterr()
    levels = tmp_path / "levels.yaml"
    levels.write_text("field: {num_levels: 3}\n")
    with nothing_written(root, "a_red_cube", "a_blue_cube"):
        assert main(list(map(str, [*args, "--config", levels, "--seed", "7"]))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    blue = root / "a_blue_cube"
    command = f"dreamtext text 'a blue cube' --workspace {shlex.quote(str(blue))} --overwrite"
    assert err == [
        "dreamtext: error: a resumed run keeps its seed, optimizer, field and occupancy grid, but "
        f"the batch asks other ones of the runs it would resume: line 2 ({blue}): "
        "seed 0 → 7, field.num_levels 4 → 3; keep the runs' own (drop those flags or --config "
        f"settings: a run keeps what the batch does not give), or `{command}`, with its other "
        "text→3D flags, trains it alone again from scratch (the batch's --overwrite would train "
        "the list's 1 other run again too)"
    ]
    assert not (root / "a_green_cube").exists()
    red = (root / "a_red_cube" / "checkpoints" / "last.pt").read_bytes()
    flags = [*BUILTIN[:2], "--iters", "6", "--config", tiny_yaml, "--config", levels, "--seed", 7]
    assert main([*shlex.split(command)[1:], *map(str, flags)]) == 0
    saved = json.loads((blue / "config.json").read_text())
    assert (saved["seed"], saved["field"]["num_levels"], steps(blue)) == (7, 3, [5, 6])
    assert (root / "a_red_cube" / "checkpoints" / "last.pt").read_bytes() == red


def shapes_run(workspace, prompt, step):
    """``workspace`` as a run of ``prompt`` on the built-in prior (20 iterations) leaves it
    after ``step`` steps: its whole config.json and status.json, a checkpoint to resume before
    step 20, and its mesh at 20, where it finished."""
    from dreamtext.config import resolve_config

    ran(workspace, prompt)
    cfg = resolve_config(
        {"prompt": prompt, "workspace": str(workspace), "iters": 20}, preset="builtin-shapes"
    )
    (workspace / "config.json").write_text(json.dumps(dataclasses.asdict(cfg)))
    if step < 20:
        state = {"state": "interrupted", "step": step}
        (workspace / "status.json").write_text(json.dumps(state))
        (workspace / "checkpoints").mkdir()
        (workspace / "checkpoints" / "last.pt").write_bytes(b"step 2")
    return workspace


@pytest.mark.parametrize(
    ("task", "replaced"),
    [
        # share 0/2 (lines 1 and 3) holds no other run: it said "--overwrite trains them again
        # from scratch", and the array run with --overwrite replaced lines 2 and 4 too
        (
            "0",
            "each one's own `dreamtext text PROMPT --workspace ROOT/FOLDER --overwrite`, with its "
            "other text→3D flags, trains it alone again from scratch (the batch's --overwrite, "
            "which a job array gives every task, would train 2 other runs of the list again "
            "too: all in other shares)",
        ),
        # share 1/2 (lines 2 and 4): it said "the share's 1 other run"
        (
            "1",
            "`dreamtext text 'a blue cube' --workspace {blue} --overwrite`, with its "
            "other text→3D flags, trains it alone again from scratch (the batch's --overwrite, "
            "which a job array gives every task, would train 3 other runs of the list again "
            "too: 1 in this share, 2 in the others)",
        ),
    ],
)
def test_a_job_array_tasks_refusal_counts_the_runs_of_every_share_overwrite_replaces(
    tmp_path, monkeypatch, capsys, task, replaced
):
    """Each task of a job array sees its own share, and its refusal of a changed --seed counted
    only that share's other runs, which its way out (--overwrite, given to every task of the
    array run again) understated: the other shares' runs are replaced too."""
    path = prompts_file(tmp_path, "a red cube", "a blue cube", "a green cube", "a red sphere")
    root = tmp_path / "root"
    names = ["a_red_cube", "a_blue_cube", "a_green_cube", "a_red_sphere"]
    for line, name in enumerate(names):  # this task's lines stopped at step 2, but line 4
        stopped = line % 2 == int(task) and name != "a_red_sphere"
        shapes_run(root / name, name.replace("_", " "), 2 if stopped else 20)
    (root / "batch.jsonl").write_text("")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", task)
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    args = ["batch", path, *BUILTIN, "--seed", "7", "--workspace", root]
    with nothing_written(root, *names):
        assert main(list(map(str, args))) == 2
    [err] = capsys.readouterr().err.strip().splitlines()
    assert err.endswith(
        "keep the runs' own (drop those flags or --config settings: a run keeps what the batch "
        f"does not give), or {replaced.format(blue=shlex.quote(str(root / 'a_blue_cube')))}"
    ), err


def first_share_refusal(tmp_path, capsys, *flags: str) -> str:
    """The one line refusing `batch --seed 7` (with ``flags``) as the worker of the first of two
    shares, over two lines whose runs (seed 0) have checkpoints, the second in the other share:
    nothing written."""
    path = prompts_file(tmp_path, "a red cube", "a blue cube")
    root = tmp_path / "root"
    shapes_run(root / "a_red_cube", "a red cube", 2)
    shapes_run(root / "a_blue_cube", "a blue cube", 20)
    (root / "batch.jsonl").write_text("")
    args = ["batch", path, *BUILTIN, "--seed", "7", "--workspace", root, *flags]
    with nothing_written(root, "a_red_cube", "a_blue_cube"):
        assert main(list(map(str, args))) == 2
    [err] = capsys.readouterr().err.strip().splitlines()
    return err


def test_a_job_array_tasks_refusal_says_where_the_one_other_run_of_the_list_is(
    tmp_path, monkeypatch, capsys
):
    """Task 0 of 2 over two lines: its share holds no other run, the other share one, which
    the refusal called "1 other run of the list ...: all in other shares"."""
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    err = first_share_refusal(tmp_path, capsys)
    assert err.endswith(
        "(the batch's --overwrite, which a job array gives every task, would train 1 other run "
        "of the list again too: in another share)"
    ), err


def test_a_hand_started_shard_workers_refusal_does_not_speak_of_a_job_array(
    tmp_path, monkeypatch, capsys
):
    """A worker started by hand with --shard 0/2 (no SLURM_ARRAY_TASK_ID) is no task of a job
    array: its refusal said the batch's --overwrite was one "which a job array gives every
    task"; the other shares' runs are replaced where their workers are given it too."""
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    err = first_share_refusal(tmp_path, capsys, "--shard", "0/2")
    assert err.endswith(
        "(the batch's --overwrite, given to every share's worker, would train 1 other run of "
        "the list again too: in another share)"
    ), err


def two_cube_images(tmp_path):
    """``red_cube.png`` and ``blue_cube.png`` (a square of each colour on a clear 48 px image) in
    ``tmp_path``, with the nouns and adjectives files that describe them."""
    for name, colour in (("red_cube", (220, 30, 30, 255)), ("blue_cube", (30, 30, 220, 255))):
        rgba = np.zeros((48, 48, 4), dtype=np.uint8)
        rgba[12:36, 12:36] = colour
        Image.fromarray(rgba, "RGBA").save(tmp_path / f"{name}.png")
    (tmp_path / "nouns.txt").write_text("cube\nsphere\n")
    (tmp_path / "adjectives.txt").write_text("red\nblue\n")


def two_cubes_batch(tmp_path, tiny_sd_path, tiny_clip_path, tiny_yaml, monkeypatch, *flags):
    """A list of two image lines run with ``flags`` and stopped by Ctrl-C at step 2 of the
    second one's text→3D (the first finished, at 3 steps): the list's root and the command
    without ``flags``."""
    two_cube_images(tmp_path)
    path = prompts_file(tmp_path, "image:red_cube.png", "image:blue_cube.png")
    root = tmp_path / "root"
    args = [
        "batch", path, "--model", tiny_sd_path, "--clip", tiny_clip_path, "--config", tiny_yaml,
        "--workspace", root, "--nouns", tmp_path / "nouns.txt", "--adjectives",
        tmp_path / "adjectives.txt", "--max-words", "2", "--descriptor-iters", "3", "--iters", "3",
    ]  # fmt: skip
    args = list(map(str, args))
    real_step = ctrl_c_at_step(monkeypatch, 2, "blue_cube")
    assert main([*args, *map(str, flags)]) == 130
    monkeypatch.setattr(trainer, "train_step", real_step)
    return root, args


def test_an_image_line_resumes_with_the_settings_its_run_had(
    tmp_path, tiny_sd_path, tiny_clip_path, tiny_yaml, monkeypatch, capsys
):
    """As `dreamtext image` reruns: the run's config.json, then the batch's preset, files and
    flags. The rerun without --guidance 50 resumed the stopped image line at guidance 100 (the
    batch's flags alone; `dreamtext image` kept 50) and said the finished one had other
    settings."""
    root, args = two_cubes_batch(
        tmp_path, tiny_sd_path, tiny_clip_path, tiny_yaml, monkeypatch, "--guidance", "50"
    )
    capsys.readouterr()
    started = train_calls(monkeypatch)
    assert main(args) == 0
    assert "other settings" not in capsys.readouterr().err
    assert started == [{"resume": True}]
    assert [r["status"] for r in rows(root)] == ["finished", "interrupted", "skipped", "finished"]
    for name in ("red_cube", "blue_cube"):
        saved = json.loads((root / name / "config.json").read_text())
        assert saved["guidance"]["guidance_scale"] == 50.0 and steps(root / name)[-1] == 3
    [resumed] = json.loads((root / "blue_cube" / "config.json").read_text())["resumes"]
    assert set(resumed["changed"]) <= {"workspace"}


def test_image_lines_record_the_clip_commit_that_chose_their_sentences(
    tmp_path, tiny_sd_path, tiny_yaml, monkeypatch
):
    """A batch's image runs, which share one CLIP load, record in their config.json's ran_on
    the hub commit of that CLIP (clip_revision), as `dreamtext image` does: it was in their
    sentence.json alone."""
    from tiny_clip import cache_tiny_clip

    commit = cache_tiny_clip(tmp_path, monkeypatch)
    two_cube_images(tmp_path)
    path = prompts_file(tmp_path, "image:red_cube.png", "image:blue_cube.png")
    root = tmp_path / "root"
    args = [
        "batch", path, "--model", tiny_sd_path, "--clip", "someone/tiny-clip", "--config",
        tiny_yaml, "--workspace", root, "--nouns", tmp_path / "nouns.txt", "--adjectives",
        tmp_path / "adjectives.txt", "--max-words", "2", "--descriptor-iters", "2", "--iters", "2",
    ]  # fmt: skip
    assert main(list(map(str, args))) == 0
    for name in ("red_cube", "blue_cube"):
        ran_on = json.loads((root / name / "config.json").read_text())["ran_on"]
        assert ran_on["clip_revision"] == commit


@pytest.mark.parametrize("stage", ["text→3D", "descriptor"])
def test_an_image_line_asked_a_seed_its_run_keeps_is_refused_before_any_line_runs(
    tmp_path, tiny_sd_path, tiny_clip_path, tiny_yaml, monkeypatch, capsys, stage
):
    """Stopped in text→3D, the line failed after its model loaded, told to pass --workspace
    NEW_FOLDER, with seed 7 written into its config.json already (its checkpoint's is 0);
    stopped before text→3D's first checkpoint, it trained text→3D with seed 7 on a descriptor
    that seed 0 trained. Now one line, exit 2, nothing written, as `dreamtext image` refuses
    it."""
    root, args = two_cubes_batch(tmp_path, tiny_sd_path, tiny_clip_path, tiny_yaml, monkeypatch)
    if stage == "descriptor":  # as if stopped between the descriptor and text→3D
        shutil.rmtree(root / "blue_cube" / "checkpoints")
        (root / "blue_cube" / "status.json").unlink()
    capsys.readouterr()
    with nothing_written(root, "red_cube", "blue_cube"):
        assert main([*args, "--seed", "7"]) == 2
    why = " (which trained its descriptor)" if stage == "descriptor" else ""
    assert capsys.readouterr().err.strip().splitlines() == [
        "dreamtext: error: a resumed run keeps its seed, optimizer, field and occupancy grid, but "
        f"the batch asks other ones of the runs it would resume: line 2 ({root / 'blue_cube'}): "
        f"seed 0 → 7{why}; keep the runs' own (drop those flags or --config settings: a run "
        "keeps what the batch does not give), or move those runs' folders away to train them "
        "again from scratch"
    ]


def test_a_new_line_whose_model_cannot_load_is_refused_before_old_lines_resume_on_theirs(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys, count_loads
):
    """Run again without --model, the lines of builtin:shapes runs go on with it and the new
    line takes the default model, which HF_HUB_OFFLINE keeps from loading (an empty cache):
    only the first line to train was checked, so the stopped line trained on and the new one
    failed at its turn, exit 1. Now every model the lines use is checked by its files first:
    one line, exit 2, nothing written, no model loaded."""
    import huggingface_hub

    from dreamtext.models import DEFAULT_MODEL

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "no_cache"))
    path = prompts_file(tmp_path, "a red cube", "a blue cube")
    root = tmp_path / "root"
    args = ["batch", path, "--iters", "6", "--config", tiny_yaml, "--workspace", root]
    real_step = ctrl_c_at_step(monkeypatch, 3, "a_blue_cube")
    assert main(list(map(str, [*args, "--model", "builtin:shapes"]))) == 130
    monkeypatch.setattr(trainer, "train_step", real_step)
    capsys.readouterr()
    prompts_file(tmp_path, "a red cube", "a blue cube", "a green cube")
    with nothing_written(root, "a_red_cube", "a_blue_cube"):
        assert main(list(map(str, args))) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"dreamtext: error: line 3 ({root / 'a_green_cube'}): could not load Stable Diffusion "
        f"'{DEFAULT_MODEL}' (HF_HUB_OFFLINE is set and it is not in the Hugging Face cache); "
        "download it once with network, or pass a local diffusers folder with --model "
        "/path/to/folder"
    ]
    assert not (root / "a_green_cube").exists()
    assert count_loads == []


def test_a_stopped_line_whose_run_records_fp16_is_refused_before_a_new_line_ahead_trains(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """A stopped run's config.json says `guidance.fp16: true` (a GPU run moved to this CPU
    machine), and a new line comes before it: only the first line to train had its device and
    precision checked, so the rerun trained the new line and then failed the stopped one
    ("--fp16 needs a CUDA GPU"), exit 1. Now each line's own settings are checked first: one
    line naming the stopped line and its folder, exit 2, nothing written."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    args = ["batch", path, "--iters", "6", "--config", tiny_yaml, "--workspace", root]
    args += ["--model", "builtin:shapes"]
    real_step = ctrl_c_at_step(monkeypatch, 3)
    assert main(list(map(str, args))) == 130
    monkeypatch.setattr(trainer, "train_step", real_step)
    capsys.readouterr()
    config = root / "a_red_cube" / "config.json"
    recorded = json.loads(config.read_text())
    recorded["guidance"]["fp16"] = True
    config.write_text(json.dumps(recorded))
    prompts_file(tmp_path, "a blue cube", "a red cube")
    with nothing_written(root, "a_red_cube"):
        assert main(list(map(str, args))) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"dreamtext: error: line 2 ({root / 'a_red_cube'}): --fp16 needs a CUDA GPU "
        "(guidance.fp16 is on, by --fp16, a --config file or the resumed run's config.json); to "
        "run in fp32 on the CPU, give --fp32 (without --fp16)"
    ]
    assert not (root / "a_blue_cube").exists()
    # The batch again with the flag the line names: the stopped line resumes in float32 (its
    # config.json's fp16 is what a rerun without a precision flag kept), the new one trains.
    assert main([*map(str, args), "--fp32"]) == 0, capsys.readouterr().err
    for folder in ("a_red_cube", "a_blue_cube"):
        config = json.loads((root / folder / "config.json").read_text())
        assert (config["guidance"]["fp16"], config["guidance"]["bf16"]) == (False, False), folder
        assert status(root / folder)["state"] == "finished", folder
    resumes = json.loads((root / "a_red_cube" / "config.json").read_text())["resumes"]
    assert [resume["step"] for resume in resumes] == [3]


def cache_as_default_model(tmp_path, monkeypatch, model_path):
    """A Hugging Face cache whose only model is ``model_path`` under the default model's id."""
    from huggingface_hub import constants

    from dreamtext.models import DEFAULT_MODEL

    cache = tmp_path / "hub_cache"
    commit = "0" * 40
    stored = cache / f"models--{DEFAULT_MODEL.replace('/', '--')}"
    shutil.copytree(model_path, stored / "snapshots" / commit)
    (stored / "refs").mkdir()
    (stored / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def _builtin_run_stopped_at_step_3(
    tmp_path, tiny_yaml, tiny_sd_path, monkeypatch, capsys, count_loads
) -> tuple[Path, Path, list]:
    """A batch of "a red cube" on builtin:shapes stopped at step 3, with the tiny model cached as
    the default one (what a rerun without --model takes): the prompts file, the batch's root and
    its arguments without --model; the loads counted so far forgotten."""
    cache_as_default_model(tmp_path, monkeypatch, tiny_sd_path)
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    args = ["batch", path, "--iters", "6", "--config", tiny_yaml, "--workspace", root]
    real_step = ctrl_c_at_step(monkeypatch, 3)
    assert main(list(map(str, [*args, "--model", "builtin:shapes"]))) == 130
    monkeypatch.setattr(trainer, "train_step", real_step)
    capsys.readouterr()
    count_loads.clear()
    return path, root, args


def test_a_long_line_of_stable_diffusion_behind_a_builtin_run_is_refused_before_any_line_runs(
    tmp_path, tiny_yaml, tiny_sd_path, shapes_cache, monkeypatch, capsys, count_loads
):
    """Run again without --model, a stopped run of builtin:shapes resumes on it and a new line
    takes the default Stable Diffusion: the token lengths were checked with the first line's
    guidance and tokenizer, none for builtin:shapes, so the builtin line trained and the long
    line failed at its turn, exit 1. Now each model's lines are checked with its tokenizer,
    read alone (no weights loaded): one line, exit 2, nothing written."""
    path, root, args = _builtin_run_stopped_at_step_3(
        tmp_path, tiny_yaml, tiny_sd_path, monkeypatch, capsys, count_loads
    )
    long = "a red cube" + " with a very shiny golden handle" * 12
    prompts_file(tmp_path, "a red cube", long)
    with nothing_written(root, "a_red_cube"):
        assert main(list(map(str, args))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        f"dreamtext: error: {path}: line 2: the prompt with its view label is "
    )
    assert err[-1].endswith(
        "tokens, but the text encoder reads 77 (start and end included) "
        "and would cut off the rest; shorten the prompt"
    )
    assert sorted(p.name for p in root.iterdir()) == ["a_red_cube", "batch.jsonl"]
    assert count_loads == ["tokenizer"]


def test_a_damaged_weight_file_of_a_later_lines_model_is_refused_before_any_line_runs(
    tmp_path, tiny_yaml, tiny_sd_path, shapes_cache, monkeypatch, capsys, count_loads
):
    """Run again without --model, a stopped run of builtin:shapes resumes on it and a new line
    takes the default Stable Diffusion, whose cached U-Net weights were cut short: that model
    was checked by its files' presence, so the builtin line trained and the new line failed at
    its turn, exit 1. Now each model's weight files are checked by their headers against their
    configs (no tensor read): one line naming the file and what to do, exit 2, nothing
    written."""
    from dreamtext.models import DEFAULT_MODEL

    _, root, args = _builtin_run_stopped_at_step_3(
        tmp_path, tiny_yaml, tiny_sd_path, monkeypatch, capsys, count_loads
    )
    [snapshot] = (tmp_path / "hub_cache").glob("models--*/snapshots/*")
    weights = snapshot / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])  # an interrupted download
    prompts_file(tmp_path, "a red cube", "a blue cube")
    with nothing_written(root, "a_red_cube"):
        assert main(list(map(str, args))) == 2
    size = weights.stat().st_size
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"dreamtext: error: line 2 ({root / 'a_blue_cube'}): could not load Stable Diffusion "
        f"'{DEFAULT_MODEL}' from the Hugging Face cache ({weights} is cut short: {size:,} bytes "
        f"where its header describes {size + 1000:,}); its cached files are damaged or "
        f"incomplete: delete {snapshot.parent.parent} and download it again with network, or "
        "pass a local diffusers folder with --model /path/to/folder"
    )
    assert sorted(p.name for p in root.iterdir()) == ["a_red_cube", "batch.jsonl"]
    assert count_loads == []


def test_overwrite_trains_finished_and_interrupted_runs_again_from_scratch(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch
):
    path = prompts_file(tmp_path, "a red cube", "a blue cube")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN[:2], "--iters", "6", "--config", tiny_yaml, "--workspace", root]
    real_step = ctrl_c_at_step(monkeypatch, 3, "a_blue_cube")
    assert main(list(map(str, args))) == 130
    monkeypatch.setattr(trainer, "train_step", real_step)
    started = train_calls(monkeypatch)
    assert main(list(map(str, [*args, "--overwrite", "--seed", "3"]))) == 0
    assert [r["status"] for r in rows(root)] == ["finished", "interrupted", "finished", "finished"]
    assert started == [{"resume": False, "overwrite": True}] * 2
    for name in ("a_red_cube", "a_blue_cube"):
        assert steps(root / name) == [5, 6]  # one run from step 0
        assert json.loads((root / name / "config.json").read_text())["seed"] == 3


def slurm_variables(job, restarts):
    """The ``SLURM_*`` variables of attempt ``restarts`` (0: the first) of task 0 of array job
    ``job``."""
    return {
        "SLURM_ARRAY_JOB_ID": job,
        "SLURM_ARRAY_TASK_ID": "0",
        "SLURM_ARRAY_TASK_COUNT": "1",
        "SLURM_RESTART_COUNT": str(restarts),
    }


def slurm_task_env(monkeypatch, job, restarts):
    """This process as attempt ``restarts`` (0: the first) of task 0 of array job ``job``."""
    for name, value in slurm_variables(job, restarts).items():
        monkeypatch.setenv(name, value)


def test_a_requeued_slurm_task_with_overwrite_keeps_the_lines_it_trained_before_its_requeue(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """--overwrite discards older runs, not the ones this very job made before SLURM requeued
    it: it wiped and trained them all again at every requeue."""
    path = prompts_file(tmp_path, "a red cube", "a blue cube", "a green cube")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN[:2], "--iters", "6", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 0  # an older batch's runs of all three
    slurm_task_env(monkeypatch, "77", 0)
    real_step = ctrl_c_at_step(monkeypatch, 3, "a_blue_cube")  # preempted in line 2
    assert main(list(map(str, [*args, "--overwrite"]))) == 130
    monkeypatch.setattr(trainer, "train_step", real_step)
    slurm_task_env(monkeypatch, "77", 1)  # requeued
    started = train_calls(monkeypatch)
    capsys.readouterr()
    assert main(list(map(str, [*args, "--overwrite"]))) == 0
    assert (
        "batch: SLURM task 77_0 was requeued (restart 1): --overwrite leaves the 2 lines it "
        "trained before, finished ones skipped, an interrupted one resumed"
    ) in capsys.readouterr().err
    # line 1 skipped, line 2 resumed, line 3 (an older batch's run) trained again
    assert started == [{"resume": True}, {"resume": False, "overwrite": True}]
    attempts = [(r["line"], r["status"], r["slurm"], r["slurm_restart"]) for r in rows(root)]
    assert attempts[3:] == [
        (1, "finished", "77_0", 0),
        (2, "interrupted", "77_0", 0),
        (1, "skipped", "77_0", 1),
        (2, "finished", "77_0", 1),
        (3, "finished", "77_0", 1),
    ]
    assert attempts[:3] == [(n, "finished", None, None) for n in (1, 2, 3)]


def test_a_requeued_task_replaces_an_older_run_it_was_stopped_before_replacing(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch
):
    """A preemption's SIGTERM while the model loads (before --overwrite removed the older job's
    run) is recorded as interrupted like one mid-training, but the run in the folder is still
    the older one: the requeued task replaces it instead of resuming or skipping it."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN[:2], "--iters", "6", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 0  # an older job's finished run ...
    status = root / "a_red_cube" / "status.json"
    older = json.loads(status.read_text())
    status.write_text(json.dumps({**older, "pid": 1, "pid_start": 1}))  # ... by another process
    slurm_task_env(monkeypatch, "77", 0)

    def stopped_while_loading(*how, **where):
        raise KeyboardInterrupt

    real_parts = trainer.build_parts
    monkeypatch.setattr(trainer, "build_parts", stopped_while_loading)
    assert main(list(map(str, [*args, "--overwrite"]))) == 130
    assert rows(root)[-1]["status"] == "interrupted"
    monkeypatch.setattr(trainer, "build_parts", real_parts)
    slurm_task_env(monkeypatch, "77", 1)  # requeued
    started = train_calls(monkeypatch)
    assert main(list(map(str, [*args, "--overwrite"]))) == 0
    assert started == [{"resume": False, "overwrite": True}]


def test_a_new_slurm_job_with_overwrite_trains_the_runs_of_an_older_job_again(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch
):
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN[:2], "--iters", "6", "--config", tiny_yaml, "--workspace", root]
    slurm_task_env(monkeypatch, "77", 0)
    assert main(list(map(str, [*args, "--overwrite"]))) == 0
    slurm_task_env(monkeypatch, "78", 1)  # another job (requeued once): 77's run is an older one
    started = train_calls(monkeypatch)
    assert main(list(map(str, [*args, "--overwrite"]))) == 0
    assert started == [{"resume": False, "overwrite": True}]


def test_a_requeued_slurm_task_with_overwrite_resumes_the_line_it_was_killed_in(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """A task killed without warning (SIGKILL after the grace time, a node failure, the OOM
    killer) writes no record of the line it was in; its lock and status.json say it ran it, and
    the requeued task resumes it from its checkpoint instead of wiping hours of training."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    args = [path, *BUILTIN[:2], "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, ["batch", *args, "--iters", "6"]))) == 0  # an older batch's run
    args = [*args, "--iters", "30", "--overwrite"]
    worker = batch_process(
        *args, slurm=slurm_variables("77", 0), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    workspace = root / "a_red_cube"
    deadline = time.monotonic() + 600  # torch's import alone: a minute or more on a loaded machine
    past_a_checkpoint = False
    while worker.poll() is None and time.monotonic() < deadline:
        now = read_status(workspace) or {}
        if now.get("pid") == worker.pid and now["step"] >= 2:
            past_a_checkpoint = True
            break
        time.sleep(0.02)
    worker.send_signal(signal.SIGKILL)
    _, err = worker.communicate()
    assert past_a_checkpoint, f"not past its first checkpoint within 10 minutes: {err}"
    assert worker.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {err}"
    assert len(rows(root)) == 1  # the older batch's: the killed attempt recorded nothing

    slurm_task_env(monkeypatch, "77", 1)  # requeued
    started = train_calls(monkeypatch)
    first_steps, real_step = [], trainer.train_step
    monkeypatch.setattr(
        trainer, "train_step", lambda run: first_steps.append(run.step) or real_step(run)
    )
    capsys.readouterr()
    assert main(list(map(str, ["batch", *args]))) == 0
    assert "SLURM task 77_0 was requeued (restart 1): --overwrite leaves the 1 line" in (
        capsys.readouterr().err
    )
    assert started == [{"resume": True}]
    assert first_steps[0] >= 2  # on from its checkpoint, not from step 0
    assert status(workspace)["step"] == 30
    assert [(r["status"], r["slurm"]) for r in rows(root)[1:]] == [("finished", "77_0")]


@pytest.mark.parametrize(
    ("lock", "run", "kept"),
    [
        ({}, {}, True),  # the task's earlier attempt ran it past a step
        ({"slurm": "78_0"}, {}, False),  # another job's: --overwrite replaces it
        ({"slurm_restart": 1}, {}, False),  # this very attempt's (a worker sharing the task)
        ({}, {"pid": 2}, False),  # killed before its --overwrite replaced the older run
        ({}, {"step": 0}, False),  # killed before its first step: nothing to resume
    ],
)
def test_a_requeued_task_keeps_a_line_only_where_its_earlier_self_was_killed_running_it(
    tmp_path, monkeypatch, lock, run, kept
):
    root = tmp_path / "root"
    workspace = root / "a_red_cube"
    workspace.mkdir(parents=True)
    process = {"host": HOST, "pid": 1, "pid_start": 5}
    task = {"slurm": "77_0", "slurm_restart": 0, **process}
    _lock_file(root / "a_red_cube.lock", **{**task, **lock})
    (workspace / "status.json").write_text(
        json.dumps({"state": "running", "step": 4, "iters": 30, **process, **run})
    )
    slurm_task_env(monkeypatch, "77", 1)
    entries = [Entry(1, "a red cube", "text", "a red cube", workspace)]
    assert requeued_task_runs(root / "batch.jsonl", entries, root) == (
        {workspace} if kept else set()
    )


@pytest.mark.parametrize(
    ("flags", "again"),
    [
        (
            [],
            "run the same command again to start them (finished lines are skipped, an "
            "interrupted one resumes)",
        ),
        (
            ["--overwrite"],
            "run the same command again with --overwrite to train them anew (it trains the lines "
            "this one finished anew too), or without it to keep those (then lines with an earlier "
            "run resume it or are skipped)",
        ),
    ],
)
def test_an_interrupted_batch_names_the_lines_it_did_not_start(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys, flags, again
):
    """Ctrl-C (or SIGTERM) in line 2: the table lists the lines that ran, and lines 4 and 5
    were named nowhere (line 3 repeats line 1)."""
    path = prompts_file(
        tmp_path, "a red cube", "a blue cube", "a red cube", "a green cube", "a yellow cube"
    )
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN[:2], "--iters", "6", "--config", tiny_yaml, "--workspace", root]
    ctrl_c_at_step(monkeypatch, 3, "a_blue_cube")
    assert main(list(map(str, [*args, *flags]))) == 130
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"batch: 2 lines not started (lines 4, 5); {again}"
    assert not (root / "a_green_cube").exists()


def test_an_interrupted_batch_does_not_name_lines_finished_before_it_as_not_started(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """A rerun stopped in line 2 said "2 lines not started (lines 3, 4); run the same command
    again to start them" where line 4 had finished in the batch before: it is skipped, not
    started."""
    root = tmp_path / "root"
    flags = [*BUILTIN[:2], "--iters", "6", "--config", tiny_yaml, "--workspace", root]
    done = prompts_file(tmp_path, "a yellow cube", name="done.txt")
    assert main(list(map(str, ["batch", done, *flags]))) == 0
    path = prompts_file(tmp_path, "a red cube", "a blue cube", "a green cube", "a yellow cube")
    ctrl_c_at_step(monkeypatch, 3, "a_blue_cube")
    capsys.readouterr()
    assert main(list(map(str, ["batch", path, *flags]))) == 130
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        "batch: 1 line not started (line 3); run the same command again to start it "
        "(finished lines are skipped, an interrupted one resumes)"
    )


def test_the_lines_not_started_are_named_below_the_summary_table(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch
):
    """stdout and stderr in one file, as a SLURM task's log has them: the line naming what is
    left to do came above the table (stderr at once, the table on stdout after it), so the log
    ended with the table of what ran instead."""
    import io

    path = prompts_file(tmp_path, "a red cube", "a blue cube", "a green cube")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN[:2], "--iters", "6", "--config", tiny_yaml, "--workspace", root]
    ctrl_c_at_step(monkeypatch, 3, "a_red_cube")
    log = io.StringIO()
    monkeypatch.setattr(sys, "stdout", log)
    monkeypatch.setattr(sys, "stderr", log)
    assert main(list(map(str, args))) == 130
    lines = log.getvalue().splitlines()
    assert lines[-2:] == [
        "0 finished, 0 skipped, 0 failed, 1 interrupted",
        "batch: 2 lines not started (lines 2, 3); run the same command again to start them "
        "(finished lines are skipped, an interrupted one resumes)",
    ]


def test_an_interrupted_line_is_named_by_its_list_and_line_number(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """The line of a Ctrl-C said "batch: interrupted after step 2; saved ROOT/a_blue_cube/...",
    which of the list's lines it was left to the folder (a bare Ctrl-C's line names none): it
    names the list and the line's number, as the list's refusals do."""
    path = prompts_file(tmp_path, "a red cube", "a blue cube")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN[:2], "--iters", "3", "--config", tiny_yaml, "--workspace", root]
    ctrl_c_at_step(monkeypatch, 2, "a_blue_cube")
    assert main(list(map(str, args))) == 130
    err = capsys.readouterr().err
    assert (
        f"batch: {path}: line 2: interrupted after step 2; saved "
        f"{root}/a_blue_cube/checkpoints/last.pt; run the batch again to resume\n"
    ) in err


def test_a_slurm_array_task_stopped_says_the_array_script_may_requeue_it(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """A task of the SLURM job script (batch --sbatch-script) stopped at its time limit is requeued
    by the script (a preempted one by SLURM), and goes on by itself; its log said only "run the
    batch again" and "run the same command again", which ran the share twice. The SIGTERM is the
    same as a `scancel -s TERM`'s, which stays stopped: the lines say both."""
    for name, value in {"SLURM_JOB_ID": "78", "SLURM_ARRAY_JOB_ID": "77"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "1")
    path = prompts_file(tmp_path, "a red cube", "a blue cube")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN[:2], "--iters", "6", "--config", tiny_yaml, "--workspace", root]
    ctrl_c_at_step(monkeypatch, 3, "a_red_cube")
    assert main(list(map(str, args))) == 130
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("batch:")]
    note = (
        "; a task of dreamtext's SLURM job script (batch --sbatch-script) stopped at its time "
        "limit, or preempted, is requeued and does that by itself"
    )
    assert err[-2] == (
        f"batch: {path}: line 1: interrupted after step 3; saved "
        f"{root}/a_red_cube/checkpoints/last.pt; run the batch again to resume{note}"
    )
    assert err[-1] == (
        "batch: 1 line not started (line 2); run the same command again to start it (finished "
        f"lines are skipped, an interrupted one resumes){note}"
    )


def test_a_long_list_of_lines_not_started_is_cut_short():
    from dreamtext.batch import not_started_line

    entries = [Entry(n, "", "text", "", Path()) for n in range(3, 16)]
    assert not_started_line(entries[:1], False).startswith("batch: 1 line not started (line 3); ")
    assert not_started_line(entries, False).startswith(
        "batch: 13 lines not started (lines 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 and 3 more); "
    )


def test_overwrite_leaves_a_run_another_worker_of_the_batch_has_trained_again(tmp_path):
    """Workers sharing a list with --overwrite: a run whose status.json changed since the batch
    started was trained again by another of them, and is skipped."""
    from dreamtext.batch import BatchOptions, entry_config, run_entry

    root = tmp_path / "root"
    workspace = ran(root / "a_red_cube", "a red cube")
    entry = Entry(1, "a red cube", "text", "a red cube", workspace)
    cfg = entry_config(entry, {"iters": 20, "guidance": {"model": "builtin:shapes"}}, None, None)
    seen_at_start = {"state": "finished", "step": 20, "started": "2026-01-01T00:00:00+00:00"}
    options = BatchOptions(root=root, overwrite=True)
    assert run_entry(entry, cfg, options, root, None, seen_at_start)["status"] == "skipped"


def _failed_run(workspace, prompt, error):
    """``workspace`` as a run that failed at step 10 of 20 leaves it."""
    workspace.mkdir(parents=True)
    config = {"prompt": prompt, "workspace": str(workspace), "iters": 20}
    (workspace / "config.json").write_text(json.dumps(config))
    failed = {"state": "failed", "step": 10, "iters": 20, "error": error}
    (workspace / "status.json").write_text(json.dumps({**failed, "updated": "2026-12-01T10:00Z"}))
    return failed


def _entry_and_config(root, prompt):
    from dreamtext.batch import entry_config, workspace_name

    name = workspace_name(root, ("text", prompt), prompt.replace(" ", "_"), False)
    entry = Entry(1, prompt, "text", prompt, root / name)
    cfg = entry_config(entry, {"iters": 20, "guidance": {"model": "builtin:shapes"}}, None, None)
    return entry, cfg


def test_a_prompt_another_worker_failed_since_the_batch_started_is_not_run_again(
    tmp_path, monkeypatch
):
    """Workers sharing a list: the run's status.json says failed and did not at the start (or its
    batch.jsonl line failed: a prompt refused before the run wrote anything), so the failure is
    recorded once instead of once per worker."""
    import dreamtext.batch as batch

    trained = []
    monkeypatch.setattr(batch, "run_one", lambda entry, *rest, **how: trained.append(entry.line))
    root = tmp_path / "root"
    entry, cfg = _entry_and_config(root, "a red cube")
    others = batch.BatchLog(root / "batch.jsonl")  # this worker starts: nothing there yet
    _failed_run(entry.workspace, "a red cube", "torch.OutOfMemoryError: CUDA out of memory")
    record = batch.run_entry(entry, cfg, batch.BatchOptions(root=root), root, None, None, others)
    assert record["status"] == "skipped" and trained == []
    assert record["error"] == (
        "failed in another worker of this batch: torch.OutOfMemoryError: CUDA out of memory"
    )

    refused, cfg = _entry_and_config(root, "a blue cube")
    batch.append_record(root / "batch.jsonl", {"workspace": "a_blue_cube", "status": "failed"})
    record = batch.run_entry(refused, cfg, batch.BatchOptions(root=root), root, None, None, others)
    assert record["status"] == "skipped" and trained == []


def test_a_failed_prompts_record_is_written_before_its_lock_is_released(tmp_path, monkeypatch):
    """The record was appended after the lock was given back (and after a garbage collection):
    a worker claiming the prompt in between found neither a failed status.json (the model
    refused it before the run wrote one) nor the record, and failed it again (probe-scale)."""
    import dreamtext.batch as batch

    def refused(entry, *rest, **how):
        raise DreamtextError("the model refuses this prompt")

    monkeypatch.setattr(batch, "run_one", refused)
    root = tmp_path / "root"
    entry, cfg = _entry_and_config(root, "a red cube")
    seen_at_release = []
    release = batch.WorkspaceLock.release

    def watched_release(lock):
        log = root / "batch.jsonl"
        seen_at_release.append(log.read_text().splitlines() if log.exists() else [])
        release(lock)

    monkeypatch.setattr(batch.WorkspaceLock, "release", watched_release)
    log = root / "batch.jsonl"
    record = batch.run_entry(entry, cfg, batch.BatchOptions(root=root), root, None, log=log)
    assert record["status"] == "failed"
    assert [json.loads(line) for line in seen_at_release[0]] == [record]


def test_a_record_torn_by_a_full_disk_loses_only_itself_not_the_next_workers_record(
    tmp_path, monkeypatch
):
    """A record that fits only in part stays (other workers may have appended after it), without
    its newline: the next worker's record was glued onto it, and readers (the workers' own look
    at batch.jsonl, the viewer) dropped both as one line that is not JSON."""
    import dreamtext.batch as batch
    from dreamtext.view.workspaces import latest_batch_records

    log = tmp_path / "batch.jsonl"
    batch.append_record(log, {"workspace": "a_red_cube", "status": "finished"})
    others = batch.BatchLog(log)  # a worker that started before the disk filled up
    real_write, written = os.write, []

    def fits_in_part(fd, data):  # 10 bytes fit, then the disk is full
        if written:
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(real_write(fd, bytes(data[:10])))
        return written[-1]

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", fits_in_part)
        with pytest.raises(OSError, match="No space left"):
            batch.append_record(log, {"workspace": "a_blue_cube", "status": "finished"})
    batch.append_record(log, {"workspace": "a_cat", "status": "failed", "error": "refused"})
    lines = log.read_text().split("\n")
    assert lines[1] == '{"workspac' and lines[-1] == ""  # the torn one, on a line of its own
    assert json.loads(lines[2])["workspace"] == "a_cat"
    assert others.failed_since_start("a_cat") == "refused"
    assert sorted(latest_batch_records(tmp_path)) == ["a_cat", "a_red_cube"]

    batch.append_record(log, {"workspace": "a_cat", "status": "finished"})  # ends in a newline
    assert log.read_text().split("\n")[3:] == ['{"workspace": "a_cat", "status": "finished"}', ""]


def test_a_batch_log_this_worker_may_append_to_but_not_read_still_gets_its_record(
    tmp_path, monkeypatch
):
    """The look at the file's end needs it open for reading too; without that, the record is
    appended as before (a torn line before it then glues onto it)."""
    import dreamtext.batch as batch

    log = tmp_path / "batch.jsonl"
    log.write_text('{"workspace": "a_red_cube"}\n')
    real_open = os.open

    def append_only(path, flags, *mode):
        if flags & os.O_RDWR and Path(path) == log:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *mode)

    monkeypatch.setattr(os, "open", append_only)
    batch.append_record(log, {"workspace": "a_blue_cube"})
    monkeypatch.undo()
    assert [json.loads(line)["workspace"] for line in log.read_text().splitlines()] == [
        "a_red_cube",
        "a_blue_cube",
    ]


def test_a_prompt_that_failed_before_the_batch_started_is_tried_again(tmp_path, monkeypatch):
    import dreamtext.batch as batch

    trained = []
    monkeypatch.setattr(batch, "run_one", lambda entry, *rest, **how: trained.append(entry.line))
    root = tmp_path / "root"
    entry, cfg = _entry_and_config(root, "a red cube")
    _failed_run(entry.workspace, "a red cube", "torch.OutOfMemoryError: CUDA out of memory")
    batch.append_record(root / "batch.jsonl", {"workspace": "a_red_cube", "status": "failed"})
    before = batch.read_status(entry.workspace)
    others = batch.BatchLog(root / "batch.jsonl")  # the failure is older than this worker
    record = batch.run_entry(entry, cfg, batch.BatchOptions(root=root), root, None, before, others)
    assert record["status"] == "finished" and trained == [1]


def test_a_folder_where_batch_jsonl_goes_is_refused_before_any_line(tmp_path, tiny_yaml, capsys):
    """The first record's append failed with an IsADirectoryError traceback, after the first
    line had trained: no record, no summary."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    (root / "batch.jsonl").mkdir(parents=True)
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"dreamtext: error: {root / 'batch.jsonl'} is not a file; a batch appends a record of "
        "each line to it: move it away and run the batch again"
    ]
    assert sorted(p.name for p in root.iterdir()) == ["batch.jsonl"]


def test_a_file_where_a_prompts_folder_goes_fails_that_prompt_and_the_batch_goes_on(
    tmp_path, tiny_yaml, shapes_cache, capsys
):
    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"
    root.mkdir()
    (root / "a_red_cube").write_text("notes")
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 1
    failed, finished = rows(root)
    assert (failed["status"], finished["status"]) == ("failed", "finished")
    message = f"{root / 'a_red_cube'} is a file, where this prompt's run folder goes; move it away"
    assert failed["error"].startswith(message)
    err = capsys.readouterr().err
    assert f"batch: line 1 failed: {message}" in err and "Traceback" not in err
    assert (root / "a_red_cube").read_text() == "notes" and not (root / "a_red_cube.lock").exists()


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.EACCES, "Permission denied"),
        OSError(errno.EFBIG, "File too large"),  # ulimit -f
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"),
    ],
    ids=["refused-write", "file-too-large", "out-of-memory"],
)
def test_a_line_the_machine_fails_is_recorded_in_one_line_without_a_traceback(
    tmp_path, tiny_yaml, shapes_cache, capsys, monkeypatch, error
):
    """A full disk or RAM is not a bug of dreamtext's: each line it failed printed a traceback."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"

    def step_then_fail(run):
        raise error

    monkeypatch.setattr(trainer, "train_step", step_then_fail)
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 1
    (failed,) = rows(root)
    assert failed["status"] == "failed"
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"batch: line 1 failed: {failed['error']}" in err
    if "allocate" in str(error):
        # dreamtext batch has no --resume, which the line named; the batch run again with a
        # smaller setting changes every line it resumes: the line's own command changes its own.
        own = f"`dreamtext text 'a red cube' --workspace {shlex.quote(str(root / 'a_red_cube'))}"
        assert f"; resume with {own} --resume` after one of: " in failed["error"], failed["error"]


@pytest.mark.parametrize(
    ("number", "text", "fix"),
    [
        (errno.EFBIG, "File too large", "raise the file-size limit (ulimit -f"),
        (errno.EACCES, "Permission denied", "make that file writable for you again"),
    ],
    ids=["file-too-large", "refused-write"],
)
def test_a_file_system_error_of_one_line_names_its_file_and_the_fix(
    tmp_path, tiny_yaml, shapes_cache, capsys, monkeypatch, number, text, fix
):
    """Under ``ulimit -f`` each line failed with ``OSError: [Errno 27] File too large: 'ROOT/
    a_red_cube/checkpoints/last.pt'``, Python's repr of the error and no word of what to do,
    where `dreamtext text` names the fix."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"

    def fail(run):
        raise OSError(number, text, str(run.workspace / "checkpoints" / "last.pt"))

    monkeypatch.setattr(trainer, "train_step", fail)
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 1
    (failed,) = rows(root)
    checkpoint = root / "a_red_cube" / "checkpoints" / "last.pt"
    assert failed["error"].startswith(f"{text} ({checkpoint}); {fix}"), failed["error"]
    assert failed["error"].endswith("then run the batch again to retry this line")
    err = capsys.readouterr().err
    assert f"batch: line 1 failed: {failed['error']}" in err and "Traceback" not in err


@pytest.mark.parametrize("byte", [0x80, 0xE9, 0xFF])
def test_an_image_line_in_a_folder_whose_name_is_not_utf8_is_one_line(tmp_path, capsys, byte):
    """``batch $'lists\\xe9/list.txt'`` with ``image:mug.png``: the image's path, taken from the
    list's folder, held the byte as a lone surrogate, and naming its run was a UnicodeEncodeError
    traceback. The ends of the range (0x80, 0xFF) too."""
    folder = tmp_path / ("lists" + chr(0xDC00 + byte))
    folder.mkdir()
    Image.new("RGB", (32, 32), "red").save(folder / "mug.png")
    (folder / "list.txt").write_text("image:mug.png\n")
    root = tmp_path / "root"
    code = main(["batch", str(folder / "list.txt"), "--workspace", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "list.txt:1: the image's path" in err
    assert f"holds a byte that is not UTF-8 text (0x{byte:02X}); rename its folder or file" in err
    assert not root.exists()


@pytest.mark.parametrize(
    ("line", "what"),
    [("ａ ｒｅｄ ｃｕｂｅ", "the run's folder"), ("image:一.png", "the image's path")],
)
def test_a_line_whose_folder_or_image_the_locale_cannot_name_is_one_line(tmp_path, line, what):
    """A list's lines are UTF-8; under a locale that is not (``LC_ALL=C`` with
    ``PYTHONUTF8=0`` here; ``LANG=en_US`` of ISO-8859-1 on a cluster), a fullwidth prompt's
    folder or a CJK image's path cannot be a file name, and the batch was a UnicodeEncodeError
    traceback at its first file. It is the list's one line, exit 2, nothing written."""
    Image.new("RGB", (32, 32), "red").save(tmp_path / "一.png")
    path = tmp_path / "list.txt"
    path.write_text(line + "\n", encoding="utf-8")
    root = tmp_path / "root"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "PYTHONUTF8": "0"}
    env["LC_ALL"] = "C"
    command = [sys.executable, "-m", "dreamtext.cli", "batch", str(path), "--workspace", str(root)]
    done = subprocess.run([*command, "--model", "builtin:shapes"], env=env, capture_output=True)
    err = done.stderr.decode("ascii")
    assert done.returncode == 2 and len(err.strip().splitlines()) == 1, err
    assert f"list.txt:1: {what} " in err
    assert "cannot be a file name in this locale's encoding (ascii)" in err, err
    assert "UTF-8 locale" in err
    assert not root.exists()


SPACE = "free space on that disk (or quota) or pass --workspace a folder elsewhere"


@pytest.mark.parametrize(
    "number, text, advice",
    [
        (errno.ENOSPC, "No space left on device", SPACE),
        (errno.EDQUOT, "Disk quota exceeded", SPACE),
        (
            errno.EROFS,
            "Read-only file system",
            "make that file system writable again (a disk error can make the system remount it "
            "read-only: ask its administrator) or pass --workspace a folder elsewhere",
        ),
        (
            errno.EIO,
            "Input/output error",
            "check that disk or file server (an I/O error: the system log says more) or pass "
            "--workspace a folder elsewhere",
        ),
        (
            errno.ENOTCONN,
            "Transport endpoint is not connected",
            "mount that file system again (its network or FUSE connection is gone) or pass "
            "--workspace a folder elsewhere",
        ),
    ],
    ids=["disk-full", "quota", "read-only", "io-error", "mount-gone"],
)
def test_a_full_or_failing_disk_stops_the_batch_in_one_line_and_the_same_command_goes_on(
    tmp_path, tiny_yaml, shapes_cache, capsys, monkeypatch, number, text, advice
):
    """Every line after a full disk failed the same way, each after loading its models; after a
    file system gone read-only or failing too (each with a traceback for an I/O error)."""
    path = prompts_file(tmp_path, "a red cube", "a blue sphere", "a green cone")
    root = tmp_path / "root"
    real_step = trainer.train_step

    def disk_full_at_step_3_of_line_2(run):
        if run.workspace.name == "a_blue_sphere" and run.step == 3:
            raise OSError(number, text, str(run.workspace / "log.jsonl"))
        return real_step(run)

    monkeypatch.setattr(trainer, "train_step", disk_full_at_step_3_of_line_2)
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 2
    first, second = rows(root)
    assert (first["status"], second["status"]) == ("finished", "failed")
    assert second["error"].startswith(f"OSError: [Errno {number}] {text}")
    assert not (root / "a_green_cone").exists()
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "batch:" in line]
    assert len(said) == 1 and "Traceback" not in err
    assert said[0].endswith(
        f"batch: line 2: {text} ({root / 'a_blue_sphere' / 'log.jsonl'}); the batch stops here, "
        f"as every next line would fail the same way: {advice}, then run the same command again "
        "(line 2 resumes from its last checkpoint, finished lines are kept)"
    )

    trained = []

    def counted_step(run):  # space freed
        trained.append((run.workspace.name, run.step))
        return real_step(run)

    monkeypatch.setattr(trainer, "train_step", counted_step)
    assert main(list(map(str, args))) == 0
    assert [r["status"] for r in rows(root)[2:]] == ["skipped", "finished", "finished"]
    # on from its checkpoint at step 2
    assert [step for name, step in trained if name == "a_blue_sphere"] == [2, 3, 4]
    assert status(root / "a_green_cone")["state"] == "finished"


def test_a_batch_record_that_does_not_fit_stops_the_batch(
    tmp_path, tiny_yaml, shapes_cache, capsys, monkeypatch
):
    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"

    def disk_full(log, record):
        raise OSError(errno.ENOSPC, "No space left on device", str(log))

    monkeypatch.setattr(dreamtext.batch, "append_record", disk_full)
    args = ["batch", path, *BUILTIN[:2], "--iters", "2", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 2
    assert status(root / "a_red_cube")["state"] == "finished"
    assert not (root / "a_blue_sphere").exists()
    out, err = capsys.readouterr()
    said = [line for line in err.splitlines() if "batch:" in line]
    assert len(said) == 1 and "Traceback" not in err
    assert f"batch: line 1: No space left on device ({root / 'batch.jsonl'}); " in said[0]
    assert "(line 1 finished, finished lines are kept)" in said[0]
    assert "1 finished, 0 skipped, 0 failed" in out


def test_a_file_system_gone_read_only_stops_the_batch_with_its_summary_in_one_line(
    tmp_path, tiny_yaml, shapes_cache, capsys, monkeypatch
):
    """Read-only from step 3 of line 1 on: the record and the lock's removal fail as well. The
    lock's error replaced the line's, and the batch ended in a second line without its table."""
    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"
    real_step, real_unlink = trainer.train_step, Path.unlink
    read_only = []

    def refused(path):
        return OSError(errno.EROFS, "Read-only file system", str(path))

    def goes_read_only_at_step_3(run):
        if run.step == 3:
            read_only.append(True)
        if read_only:
            raise refused(run.workspace / "log.jsonl")
        return real_step(run)

    def unlink(path, missing_ok=False):
        if read_only:
            raise refused(path)
        return real_unlink(path, missing_ok=missing_ok)

    def append_record(log, record):
        raise refused(log)

    monkeypatch.setattr(trainer, "train_step", goes_read_only_at_step_3)
    monkeypatch.setattr(Path, "unlink", unlink)
    monkeypatch.setattr(dreamtext.batch, "append_record", append_record)
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 2
    out, err = capsys.readouterr()
    said = [line for line in err.splitlines() if "batch:" in line or "error" in line]
    assert len(said) == 1 and "Traceback" not in err
    assert f"batch: line 1: Read-only file system ({root / 'a_red_cube' / 'log.jsonl'})" in said[0]
    assert "0 finished, 0 skipped, 1 failed" in out
    assert not (root / "a_blue_sphere").exists()


def refuse_writes_in_root_from(monkeypatch, root, start, also_records=False):
    """From when ``start()`` says so, ROOT refuses new files (a chmod of it; a worker's lock
    file is the first made there), and with ``also_records`` the appends to batch.jsonl too
    (an expired Kerberos ticket refuses everything). Root bypasses permission bits, so they are
    refused here where the batch makes them."""
    import tempfile

    real_mkstemp, real_append = tempfile.mkstemp, dreamtext.batch.append_record
    real_create = WorkspaceLock._create

    def refused(path):
        return PermissionError(errno.EACCES, "Permission denied", str(path))

    def mkstemp(*args, dir=None, **kwargs):
        if start() and Path(dir) == root:
            raise refused(Path(dir) / ".dreamtext-write-check.x")
        return real_mkstemp(*args, dir=dir, **kwargs)

    def create(lock):
        if start():
            raise refused(lock.path.with_name(f".{lock.path.name}.x.tmp"))
        return real_create(lock)

    def append_record(log, record):
        if start() and also_records:
            raise refused(log)
        return real_append(log, record)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(WorkspaceLock, "_create", create)
    monkeypatch.setattr(dreamtext.batch, "append_record", append_record)


@pytest.mark.parametrize("also_records", [False, True], ids=["chmod", "kerberos-expired"])
def test_a_workspace_root_refusing_writes_mid_batch_stops_it_in_one_line_with_its_summary(
    tmp_path, tiny_yaml, shapes_cache, capsys, monkeypatch, also_records
):
    """ROOT made unwritable while line 1 trains: every next line failed at its lock, one by one
    (exit 1), or, its records refused too, the batch ended in a second line without its table."""
    path = prompts_file(tmp_path, "a red cube", "a blue sphere", "a green cone")
    root = tmp_path / "root"
    real_step = trainer.train_step
    refusing = []

    def refused_from_step_3_of_line_1(run):
        if run.step == 3:
            refusing.append(True)
        return real_step(run)

    monkeypatch.setattr(trainer, "train_step", refused_from_step_3_of_line_1)
    refuse_writes_in_root_from(monkeypatch, root, lambda: bool(refusing), also_records)
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 2
    out, err = capsys.readouterr()
    said = [line for line in err.splitlines() if "batch:" in line or "error" in line]
    assert len(said) == 1 and "Traceback" not in err
    fix = (
        f"make {root} writable for you again (its permissions, or on NFS or AFS a Kerberos "
        "ticket that expired: kinit) or pass --workspace a folder elsewhere"
    )
    if also_records:  # line 1's record is refused: it stops there, finished
        assert said[0].endswith(
            f"batch: line 1: cannot write in --workspace {root}: Permission denied; the batch "
            f"stops here, as every next line would fail the same way: {fix}, then run the same "
            "command again (line 1 finished, finished lines are kept)"
        )
        assert "1 finished, 0 skipped, 0 failed" in out
        assert not (root / "batch.jsonl").exists()
    else:  # line 2 cannot make its lock
        assert said[0].startswith(
            f"batch: line 2: cannot write in --workspace {root}: Permission denied; the batch "
            f"stops here, as every next line would fail the same way: {fix}, then run"
        )
        assert "1 finished, 0 skipped, 1 failed" in out
        assert [(r["line"], r["status"]) for r in rows(root)] == [(1, "finished"), (2, "failed")]
    assert status(root / "a_red_cube")["state"] == "finished"
    assert not (root / "a_blue_sphere").exists() and not (root / "a_green_cone").exists()

    monkeypatch.setattr(trainer, "train_step", real_step)
    refusing.clear()  # writable again: the same command goes on
    assert main(list(map(str, args))) == 0
    assert [r["status"] for r in rows(root)[-3:]] == ["skipped", "finished", "finished"]


def test_a_refused_write_in_one_run_folder_fails_that_line_only_where_root_is_writable(
    tmp_path, tiny_yaml, shapes_cache, capsys, monkeypatch
):
    """ROOT is looked at, not the errno alone: another user's run folder stays one line's."""
    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"
    real_step = trainer.train_step

    def refused_in_line_1(run):
        if run.workspace.name == "a_red_cube":
            raise PermissionError(errno.EACCES, "Permission denied", str(run.workspace))
        return real_step(run)

    monkeypatch.setattr(trainer, "train_step", refused_in_line_1)
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 1
    assert [r["status"] for r in rows(root)] == ["failed", "finished"]
    assert not any(r["stopped_batch"] for r in rows(root))


def test_a_record_refused_where_root_is_writable_stops_the_batch_with_its_summary(
    tmp_path, tiny_yaml, shapes_cache, capsys, monkeypatch
):
    """batch.jsonl alone refused (made read-only for its owner): every next record would be
    too; the batch ended in a traceback-less line without its table."""
    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"

    def refused(log, record):
        raise PermissionError(errno.EACCES, "Permission denied", str(log))

    monkeypatch.setattr(dreamtext.batch, "append_record", refused)
    args = ["batch", path, *BUILTIN[:2], "--iters", "2", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 2
    out, err = capsys.readouterr()
    said = [line for line in err.splitlines() if "batch:" in line or "error" in line]
    assert len(said) == 1 and "Traceback" not in err
    assert said[0].startswith(
        f"batch: line 1: Permission denied ({root / 'batch.jsonl'}); the batch stops here, as "
        "every next line would fail the same way: make that file writable for you again or "
        "pass --workspace a folder elsewhere, then run"
    )
    assert "1 finished, 0 skipped, 0 failed" in out and not (root / "a_blue_sphere").exists()


def test_a_read_only_file_system_linked_from_one_run_folder_fails_only_that_line(
    tmp_path, tiny_yaml, shapes_cache, capsys, monkeypatch
):
    """Line 2's folder is a link to another disk, which goes read-only: every other line is on
    ROOT's, which is fine, and goes on (the batch stopped at line 2)."""
    path = prompts_file(tmp_path, "a red cube", "a blue sphere", "a green cone")
    root = tmp_path / "root"
    other_disk = tmp_path / "scratch" / "blue"
    other_disk.mkdir(parents=True)
    root.mkdir()
    (root / "a_blue_sphere").symlink_to(other_disk)
    real_step, real_file_system = trainer.train_step, dreamtext.batch._file_system

    def another_device_under_scratch(place):  # the test's disks are one; a mount's are not
        device = real_file_system(place)
        scratch = os.path.realpath(place).startswith(str(tmp_path / "scratch"))
        return device + 1 if scratch and device is not None else device

    def read_only_at_step_3_of_line_2(run):
        if run.workspace.name == "a_blue_sphere" and run.step == 3:
            raise OSError(errno.EROFS, "Read-only file system", str(run.workspace / "log.jsonl"))
        return real_step(run)

    monkeypatch.setattr(dreamtext.batch, "_file_system", another_device_under_scratch)
    monkeypatch.setattr(trainer, "train_step", read_only_at_step_3_of_line_2)
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 1
    assert [r["status"] for r in rows(root)] == ["finished", "failed", "finished"]
    out, err = capsys.readouterr()
    said = [line for line in err.splitlines() if "batch:" in line]
    assert len(said) == 1 and "Traceback" not in err
    assert said[0] == (
        f"batch: line 2 failed: Read-only file system ({root / 'a_blue_sphere' / 'log.jsonl'}), "
        f"on another file system than --workspace {root} (its run folder, or a folder in it, is "
        "a link there): make that file system writable again (a disk error can make the system "
        "remount it read-only: ask its administrator), then run the same command again to go on "
        "with it; the other lines go on"
    )
    assert "2 finished, 0 skipped, 1 failed" in out


def test_a_stale_file_handle_tries_the_line_once_more_from_its_last_checkpoint(
    tmp_path, tiny_yaml, shapes_cache, capsys, monkeypatch
):
    """An NFS server that failed over: the line failed, though a second look finds its files."""
    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"
    real_step = trainer.train_step
    trained, stale = [], []

    def stale_once_at_step_3_of_line_1(run):
        if run.workspace.name == "a_red_cube" and run.step == 3 and not stale:
            stale.append(True)
            raise OSError(errno.ESTALE, "Stale file handle", str(run.workspace / "log.jsonl"))
        trained.append((run.workspace.name, run.step))
        return real_step(run)

    monkeypatch.setattr(trainer, "train_step", stale_once_at_step_3_of_line_1)
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 0
    assert [r["status"] for r in rows(root)] == ["finished", "finished"]
    # on from its checkpoint at step 2
    assert [step for name, step in trained if name == "a_red_cube"] == [0, 1, 2, 2, 3, 4]
    said = [line for line in capsys.readouterr().err.splitlines() if "batch:" in line]
    assert said == [
        f"batch: line 1: Stale file handle ({root / 'a_red_cube' / 'log.jsonl'}); trying the "
        "line once more (a file server that failed over or restarted gives its files new "
        "handles)"
    ]


def test_a_handle_stale_twice_fails_its_line_and_the_batch_goes_on(
    tmp_path, tiny_yaml, shapes_cache, capsys, monkeypatch
):
    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"
    real_step = trainer.train_step
    attempts = []

    def always_stale_in_line_1(run):
        if run.workspace.name == "a_red_cube" and run.step == 3:
            attempts.append(run.step)
            raise OSError(errno.ESTALE, "Stale file handle", str(run.workspace / "log.jsonl"))
        return real_step(run)

    monkeypatch.setattr(trainer, "train_step", always_stale_in_line_1)
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 1
    assert len(attempts) == 2
    assert [r["status"] for r in rows(root)] == ["failed", "finished"]
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "number, text",
    [
        (errno.EACCES, "Permission denied"),  # another user's folder
        (errno.EROFS, "Read-only file system"),
        (errno.ENOSPC, "No space left on device"),
    ],
)
def test_a_workspace_root_the_batch_cannot_write_in_is_refused_before_the_first_line(
    tmp_path, capsys, monkeypatch, number, text
):
    """Every line failed on it one after another (at its lock file, beside its run folder)."""
    import tempfile

    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    root = tmp_path / "root"
    root.mkdir()

    def refused(*args, dir=None, **kwargs):
        raise OSError(number, text, str(Path(dir) / ".dreamtext-write-check.x"))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    args = ["batch", path, *BUILTIN, "--workspace", root]
    assert main(list(map(str, args))) == 2
    [said] = capsys.readouterr().err.strip().splitlines()
    space = "free space on its disk (or quota) or " if number == errno.ENOSPC else ""
    assert said == (
        f"dreamtext: error: cannot write in --workspace {root}: {text}; {space}pass a folder "
        "you can write to"
    )
    assert list(root.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# Stable Diffusion: one load for the whole list, image lines too


def test_a_batch_switching_models_loads_each_once_and_releases_one_no_later_line_needs(
    tmp_path, tiny_yaml, tiny_sd_path, count_loads, monkeypatch
):
    """Lines 1 and 3 resume their runs on their own model, line 2 takes the batch's (the
    default, here a copy of the tiny model): the process kept every model it loaded, so the
    batch loaded each once, and held line 2's after its turn, through line 3 and after the
    batch. Now it still loads each once, in the same order, and releases line 2's model
    before line 3 runs; line 3's, the last, stays loaded as a run's does."""
    import gc
    import weakref

    import dreamtext.models as models

    path = prompts_file(tmp_path, "a red cube", "a red sphere")
    root = tmp_path / "root"
    args = ["batch", path, "--iters", "2", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, [*args, "--model", tiny_sd_path]))) == 0
    default = tmp_path / "default_model"
    shutil.copytree(tiny_sd_path, default)
    cache_as_default_model(tmp_path, monkeypatch, default)
    models.clear_cache()
    count_loads.clear()
    loaded: list[weakref.ref] = []
    names: list[str] = []
    real_init = models.StableDiffusionModels.__init__

    def init(self, model, *args, **kwargs):
        real_init(self, model, *args, **kwargs)
        loaded.append(weakref.ref(self))
        names.append(model)

    monkeypatch.setattr(models.StableDiffusionModels, "__init__", init)
    alive_at_start: list[list[bool]] = []
    real_run_one = dreamtext.batch.run_one

    def run_one(entry, *args, **kwargs):
        gc.collect()
        alive_at_start.append([ref() is not None for ref in loaded])
        real_run_one(entry, *args, **kwargs)

    monkeypatch.setattr(dreamtext.batch, "run_one", run_one)
    prompts_file(tmp_path, "a red cube", "a blue cube", "a red sphere")
    assert main(list(map(str, [*args, "--iters", "3"]))) == 0
    assert [r["status"] for r in rows(root)][-3:] == ["finished"] * 3
    assert names == [str(tiny_sd_path), models.DEFAULT_MODEL]
    # each tokenizer once: read alone for the lines' prompts before line 1 ran (read_tokenizer),
    # then taken by its model's load
    assert Counter(count_loads) == {"unet": 2, "vae": 2, "text_encoder": 2, "tokenizer": 2}
    # line 1 on the tiny model (loaded by the checks); line 2 loads the default, the tiny one
    # held for line 3; line 3 reuses the tiny one, the default released
    assert alive_at_start == [[True], [True], [True, False]]
    gc.collect()
    assert [ref() is not None for ref in loaded] == [True, False]
    assert [m.model for m in models._LOADED.values()] == [str(tiny_sd_path)]


def test_a_line_skipped_for_a_lock_keeps_its_models_for_the_second_pass(monkeypatch):
    """Before each line the batch holds the models of the lines after it and of those skipped
    for another worker's lock (run again after the others), and releases the rest: line a,
    skipped, keeps model A through line b; line b's model and CLIP are released before a runs
    again."""
    import dreamtext.models as models

    held, kept = [], []
    monkeypatch.setattr(models, "hold_models", lambda sd=(), clip=(): held.append((sd, clip)))
    monkeypatch.setattr(models, "release_stable_diffusion", lambda keep=(): kept.append(keep))
    monkeypatch.setattr(models, "release_clip", lambda keep=(): None)
    a = Entry(1, "a red cube", "text", "a red cube", Path("a"))
    b = Entry(2, "a blue cube", "text", "a blue cube", Path("b"))
    needs = {
        a.workspace: (frozenset({"A"}), frozenset()),
        b.workspace: (frozenset({"B"}), frozenset({"clip"})),
    }
    lines = LineModels([a, b], needs)
    lines.before(a, first_pass=True)
    lines.after(a, {"status": "skipped", "error": "claimed by another worker"})
    lines.before(b, first_pass=True)
    lines.after(b, {"status": "finished", "error": None})
    lines.before(a, first_pass=False)
    assert held == [({"B"}, {"clip"}), ({"A"}, set()), (set(), set())]
    assert kept == [{"A"}, {"B"}, {"A"}]


def test_a_batch_loads_each_model_once(
    tmp_path, tiny_yaml, tiny_sd_path, tiny_clip_path, count_loads, monkeypatch
):
    import dreamtext.describe

    clips = []

    class CountedClip(dreamtext.describe.ClipEncoder):
        def __init__(self, *args, **kwargs):
            clips.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(dreamtext.describe, "ClipEncoder", CountedClip)
    two_cube_images(tmp_path)
    lines = ["a red cube", "image:red_cube.png", "a blue sphere", "image:blue_cube.png"]
    path = prompts_file(tmp_path, *lines)
    root = tmp_path / "root"
    args = [
        "batch", path, "--model", tiny_sd_path, "--guidance", "10", "--iters", "2",
        "--config", tiny_yaml, "--workspace", root, "--clip", tiny_clip_path,
        "--nouns", tmp_path / "nouns.txt", "--adjectives", tmp_path / "adjectives.txt",
        "--max-words", "2", "--descriptor-iters", "2",
    ]  # fmt: skip
    assert main(list(map(str, args))) == 0
    records = rows(root)
    assert [r["status"] for r in records] == ["finished"] * 4
    assert records[1]["kind"] == "image" and records[1]["workspace"] == "red_cube"
    assert records[1]["prompt"].startswith("An image of")  # the learned sentence
    assert sorted(count_loads) == ["text_encoder", "tokenizer", "unet", "vae"]
    assert len(clips) == 1


# ----------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written


def test_a_bad_shard_is_one_line_on_stderr(tmp_path):
    path = prompts_file(tmp_path, "a red cube")
    worker = batch_process(
        path, "--shard", "3/2", "--workspace", tmp_path / "root",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 2
    assert err.strip().splitlines() == [
        "dreamtext batch: argument --shard: must be K/N with 0 ≤ K < N (e.g. 0/4 for the first "
        "of four shares), got '3/2' (see dreamtext batch --help)"
    ]
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize(
    ("workspace", "message"),
    [("afile.txt", "--workspace {} is a file; pass a folder"),
     ("afile.txt/sub", "--workspace {} is inside the file afile.txt; pass a folder")],
)  # fmt: skip
def test_a_workspace_root_that_is_or_lies_in_a_file_is_a_one_line_error(
    tmp_path, capsys, monkeypatch, workspace, message
):
    monkeypatch.chdir(tmp_path)
    path = prompts_file(tmp_path, "a red cube")
    Path("afile.txt").write_text("notes")
    assert main(["batch", str(path), "--model", "builtin:shapes", "--workspace", workspace]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["dreamtext: error: " + message.format(workspace)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile.txt", "prompts.txt"]
    assert Path("afile.txt").read_text() == "notes"


@pytest.mark.parametrize(
    ("workspace", "message"),
    [("ws/a_red_cube", "--workspace {} is the folder of a run; "),
     ("ws/a_red_cube/sub", "--workspace {} is inside the run in ws/a_red_cube; ")],
)  # fmt: skip
def test_a_workspace_root_that_is_or_lies_in_a_run_is_a_one_line_error(
    tmp_path, capsys, monkeypatch, workspace, message
):
    """The batch's runs would be runs inside a run, which the viewer does not show."""
    monkeypatch.chdir(tmp_path)
    path = prompts_file(tmp_path, "a red cube")
    run = Path("ws") / "a_red_cube"
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"state": "finished"}))
    assert main(["batch", str(path), "--model", "builtin:shapes", "--workspace", workspace]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "dreamtext: error: " + message.format(workspace) + "batch's --workspace is the folder "
        "that holds its runs: pass a folder outside any run"
    ]
    assert sorted(p.name for p in run.iterdir()) == ["status.json"]


@pytest.mark.parametrize(
    ("lines", "extra", "message"),
    [
        (None, [], "does not exist"),
        (["", "# only a comment"], [], "holds no prompts"),
        (["a red cube", "image:missing.png"], [], "prompts.txt:2: image not found"),
        (["image:bad.png"], [], "not an image"),
        (["image:"], [], "names no image"),
        (['image:""'], [], "names no image"),  # was told to write it without quotes: image:
        (["image:ok.png"], ["--model", "builtin:shapes"], "needs a Stable Diffusion model"),
        (
            ["a red cube"],
            ["--model", "builtin:shapes", "--negative", "a dog"],
            "the negative prompt (--negative, guidance.negative): the built-in prior does not "
            'know "a dog"',
        ),
        (["a red cube"], ["--iters", "5", "--epochs", "1"], "--iters or --epochs"),
        (["a red cube"], ["--model", "no/such-model"], "could not load Stable Diffusion"),
        (["a red cube"], ["--model", "builtin:shapes", "--fp16"], "--fp16 needs a CUDA GPU"),
        (
            ["a red cube", "a blue cube"],
            ["--model", "builtin:shapes", "--device", "cpu", "--encoding", "tcnn"],
            "the tcnn encoding needs a CUDA device",
        ),  # each prompt used to fail on it, with a batch.jsonl line
        (["a red cube", "image:ok.png"], ["--overwrite"], "--overwrite trains text prompts again"),
    ],
)
def test_bad_input_is_a_one_line_error_before_anything_is_written(
    tmp_path, capsys, lines, extra, message
):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    path = tmp_path / "missing.txt" if lines is None else prompts_file(tmp_path, *lines)
    root = tmp_path / "root"
    assert main(["batch", str(path), "--workspace", str(root), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not root.exists()


def test_prompts_the_builtin_prior_does_not_know_refuse_the_batch_before_any_line_trains(
    tmp_path, capsys
):
    """Each such line failed as its run started, after the lines before it had trained, while
    `dreamtext text` refuses the prompt up front. The line names every unknown line, a few of
    them with their prompts; captions are matched as the prior matches them (case, a full stop)."""
    lines = ["a red cube", "a purple dragon", "A Blue Sphere.", "a cat", "the moon", "a dog"]
    path = prompts_file(tmp_path, *lines)
    root = tmp_path / "root"
    args = ["batch", path, "--model", "builtin:shapes", "--iters", "3", "--workspace", root]
    assert main(list(map(str, args))) == 2
    [said] = capsys.readouterr().err.strip().splitlines()
    assert said.startswith(
        f'dreamtext: error: {path}: builtin:shapes does not know the prompts of lines 2 ("a '
        'purple dragon"), 4 ("a cat"), 5 ("the moon") and 1 more line; it knows "a COLOUR SHAPE"'
    )
    assert said.endswith("change those lines, or pass --model with a Stable Diffusion model "
                         "(a diffusers hub id or folder)")  # fmt: skip
    assert not root.exists()


def test_an_image_line_under_the_builtin_prior_names_the_prompts_file(tmp_path, capsys):
    """The line said "line 2 is an image, ..." without the file, while an unknown caption's line
    names it ("p.txt: builtin:shapes does not know ...")."""
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "mug.png")
    path = prompts_file(tmp_path, "a red cube", "image:mug.png")
    root = tmp_path / "root"
    args = ["batch", path, "--model", "builtin:shapes", "--workspace", root]
    assert main(list(map(str, args))) == 2
    [said] = capsys.readouterr().err.strip().splitlines()
    assert said.startswith(f"dreamtext: error: {path}: line 2 is an image, which needs a Stable ")
    assert not root.exists()


def test_a_prompt_the_builtin_prior_does_not_know_refuses_every_share_of_the_list(tmp_path, capsys):
    """Not only the share that holds it: the workers of one list refuse it alike."""
    path = prompts_file(tmp_path, "a red cube", "a blue cube", "a cat")
    root = tmp_path / "root"
    for share in ("0/3", "1/3", "2/3"):
        args = ["batch", path, "--model", "builtin:shapes", "--shard", share, "--workspace", root]
        assert main(list(map(str, args))) == 2
        [said] = capsys.readouterr().err.strip().splitlines()
        assert 'does not know the prompt of line 3 ("a cat")' in said
        assert "change that line" in said
    assert not root.exists()


def test_an_empty_share_refuses_the_list_and_its_settings_as_the_other_shares_do(tmp_path, capsys):
    """More workers than lines (--shard 3/4 of 3 prompts): the worker whose share is empty
    checked nothing and ended 0 where its siblings refused the list or its --config (exit 2)."""
    path = prompts_file(tmp_path, "a red cube", "a blue cube", "a cat")
    root = tmp_path / "root"
    args = ["batch", path, "--model", "builtin:shapes", "--shard", "3/4", "--workspace", root]
    assert main(list(map(str, args))) == 2
    [said] = capsys.readouterr().err.strip().splitlines()
    assert 'does not know the prompt of line 3 ("a cat")' in said
    bad = tmp_path / "bad.yaml"
    bad.write_text("renderr: {march_steps: 8}\n", encoding="utf-8")
    good = prompts_file(tmp_path, "a red cube", name="good.txt")
    args = ["batch", good, "--model", "builtin:shapes", "--shard", "1/2", "--workspace", root]
    assert main([*map(str, args), "--config", str(bad)]) == 2
    [said] = capsys.readouterr().err.strip().splitlines()
    assert "unknown config field 'renderr'" in said
    assert not root.exists()


def test_an_empty_share_says_so_in_one_line_with_no_bar_and_no_table(tmp_path, capsys):
    """--shard 1/2 of a list of one prompt printed "share 1/2: 0 of 1 prompts", a bar of
    "0prompt" and a table of no lines; a single worker's list of no prompts says it holds
    none. The share says so in the same words and ends 0 (the other share trains the line),
    writing nothing."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    args = ["batch", path, "--model", "builtin:shapes", "--shard", "1/2", "--workspace", root]
    assert main(list(map(str, args))) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines() == [
        f"batch: share 1/2 of {path} holds no prompts (the list has 1 for 2 shares); nothing to do"
    ]
    assert not root.exists()


def test_an_empty_share_loads_no_model_and_ends_0_whatever_the_model(tmp_path, capsys):
    """As README says of a SLURM array with more tasks than lines: such a task checks the list
    and its settings as its siblings do (above), not the model, which it would load for nothing;
    its siblings refuse a --model folder that does not exist (exit 2), it ends 0."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    model = tmp_path / "no-such-model"
    args = ["batch", path, "--model", model, "--shard", "1/2", "--workspace", root]
    assert main(list(map(str, args))) == 0
    assert "holds no prompts" in capsys.readouterr().err
    args = ["batch", path, "--model", model, "--shard", "0/2", "--workspace", root]
    assert main(list(map(str, args))) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not root.exists()


def test_a_list_the_builtin_prior_refuses_is_refused_before_each_lines_config_is_made(
    tmp_path, monkeypatch, capsys
):
    """The configs of every line of the share (a deep copy each: 6 s of a 50,000-line list,
    half the wait for the refusal) were made before the list was checked."""
    import dreamtext.batch

    def made(*args, **kwargs):
        raise AssertionError("every line's config made before the list was checked")

    monkeypatch.setattr(dreamtext.batch, "entry_configs", made)
    path = prompts_file(tmp_path, "a red cube", "a cat")
    args = ["batch", path, "--model", "builtin:shapes", "--workspace", tmp_path / "root"]
    assert main(list(map(str, args))) == 2
    assert 'line 2 ("a cat")' in capsys.readouterr().err


def test_lines_are_numbered_as_an_editor_numbers_them(tmp_path, capsys):
    """A form feed (a page break pasted from a document) or U+2028 made a line of its own, and
    the lines after it were named by numbers one too high."""
    path = tmp_path / "prompts.txt"
    path.write_text("a red cube\x0c\r\na blue cube\u2028\na cat\n", encoding="utf-8")
    args = ["batch", path, "--model", "builtin:shapes", "--workspace", tmp_path / "root"]
    assert main(list(map(str, args))) == 2
    assert 'the prompt of line 3 ("a cat")' in capsys.readouterr().err


@pytest.mark.parametrize(
    ("encoding", "why"),
    [
        # Windows' "Unicode" text: it said only "'utf-8' codec can't decode byte 0x8c in
        # position 1: invalid start byte".
        ("utf-16", "invalid start byte: byte 0xFF on line 1"),
        # `iconv -t UTF-16LE` writes no byte order mark: its ASCII decodes as UTF-8 with a NUL
        # beside each letter, and the line was "prompts.txt:1: the line holds the control
        # character U+0000 (NUL) at character 2; remove it", a character no editor shows.
        ("utf-16-le", "UTF-16 without a byte order mark: a NUL byte beside each letter"),
    ],
    ids=["with-bom", "without-bom"],
)
def test_a_utf16_prompts_file_says_to_save_it_as_utf8(tmp_path, capsys, encoding, why):
    path = tmp_path / "prompts.txt"
    path.write_bytes("a red cube\na blue sphere\n".encode(encoding))
    root = tmp_path / "root"
    assert main(["batch", str(path), "--model", "builtin:shapes", "--workspace", str(root)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"dreamtext: error: prompts file {path} is not UTF-8 text ({why}); save it as UTF-8 "
        "text with one prompt per line"
    ]
    assert not root.exists()


def test_a_byte_that_is_not_utf8_is_named_by_its_line(tmp_path, capsys):
    """A Latin-1 "café" deep in a list was "invalid continuation byte at byte 26": an offset
    no editor shows, counted after the file's BOM."""
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"\xef\xbb\xbfa red cube\r\na blue cube\r\na caf\xe9\r\n")
    assert (
        main(["batch", str(path), "--model", "builtin:shapes", "--workspace", str(tmp_path)]) == 2
    )
    assert capsys.readouterr().err.strip().splitlines() == [
        f"dreamtext: error: prompts file {path} is not UTF-8 text (invalid continuation byte: "
        "byte 0xE9 on line 3); save it as UTF-8 text with one prompt per line"
    ]


def test_a_prompts_file_that_is_a_folder_says_so(tmp_path, capsys):
    """`dreamtext batch .` said "cannot read prompts file .: [Errno 21] Is a directory: '.'"."""
    root = tmp_path / "root"
    code = main(["batch", str(tmp_path), "--model", "builtin:shapes", "--workspace", str(root)])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"dreamtext: error: prompts file {tmp_path} is a folder; pass a text file with one "
        "prompt per line"
    ]
    assert not root.exists()


def test_an_image_line_that_fails_before_its_text_stage_says_in_which_stage(
    tmp_path, tiny_sd_path, tiny_clip_path, monkeypatch, capsys
):
    """The descriptor training and describe wrote no status.json, so the batch's line and
    summary could only say 'failed', after hours of a 5000-step descriptor training."""
    import dreamtext.imageto3d
    from dreamtext.processes import this_process
    from dreamtext.runstatus import now_iso, write_status

    def fails_in_descriptor(image, options, cfg, resume_with, start_again, resume_changed):
        # As the stages' own status.json is: this process's, started by this attempt.
        mine = {**this_process(), "started": now_iso()}
        write_status(cfg.workspace, {"state": "failed", "phase": "descriptor", "step": 40, **mine})
        raise DreamtextError("the descriptor broke")

    monkeypatch.setattr(dreamtext.imageto3d, "run_image", fails_in_descriptor)
    root, args = mug_batch(tmp_path, tiny_sd_path, tiny_clip_path)
    assert main(list(map(str, args))) == 1
    [record] = rows(root)
    assert (record["status"], record["phase"]) == ("failed", "descriptor")
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[:4] == ["1", "failed", "in", "descriptor"]


@pytest.mark.parametrize(
    ("flag", "message"),
    [("--clip", "dreamtext: error: CLIP folder {} does not exist"),
     ("--nouns", "dreamtext: error: cannot read word list {}")],
)  # fmt: skip
def test_the_sentence_search_of_image_lines_is_checked_before_any_line_trains(
    tmp_path, tiny_sd_path, tiny_yaml, capsys, count_loads, flag, message
):
    """A bad --clip or word list failed every image line only when the batch reached it, after
    the text lines before it had trained (hours each with Stable Diffusion). A missing --clip
    folder was found only after Stable Diffusion had loaded (its "loaded" line came first)."""
    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "mug.png")
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "mug.png")
    path = prompts_file(tmp_path, "a red cube", "image:mug.png")
    root, missing = tmp_path / "root", tmp_path / "missing"
    args = ["batch", path, "--model", tiny_sd_path, "--config", tiny_yaml, "--iters", "1"]
    assert main(list(map(str, [*args, "--workspace", root, flag, missing]))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message.format(missing)), err
    assert count_loads == []
    assert not root.exists()


def test_a_run_finished_without_its_export_is_exported_when_the_batch_asks_for_one(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """A list trained with --no-export, run again without it, was skipped ("finished with other
    settings (export false → true) ... --overwrite trains it again"): no mesh without training
    every prompt again from scratch."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 0  # tiny.yaml: export false
    exports = []

    def fake_export(run):
        exports.append(run.step)
        (run.workspace / "mesh").mkdir()
        (run.workspace / "mesh" / "mesh.glb").write_bytes(b"glTF")

    monkeypatch.setattr(trainer, "export_trained", fake_export)
    tiny_yaml.write_text(yaml.safe_dump({**yaml.safe_load(tiny_yaml.read_text()), "export": True}))
    capsys.readouterr()
    assert main(list(map(str, args))) == 0
    assert exports == [5]  # exported at its last step, nothing trained again
    assert steps(root / "a_red_cube") == [5]
    err = capsys.readouterr().err
    assert f"batch: line 1: {root / 'a_red_cube'} finished without a mesh; exporting it" in err
    assert "other settings" not in err
    assert main(list(map(str, args))) == 0  # now it has its mesh
    assert exports == [5]
    assert [r["status"] for r in rows(root)] == ["finished", "finished", "skipped"]


def fake_mesh_export(exports: list[int]):
    """An ``export_trained`` that records each step it exports in ``exports`` and writes only
    ``mesh/mesh.glb`` and the ``mesh/mesh.json`` of that step (what a batch reads)."""

    def fake_export(run):
        exports.append(run.step)
        (run.workspace / "mesh").mkdir(exist_ok=True)
        (run.workspace / "mesh" / "mesh.glb").write_bytes(b"glTF")
        (run.workspace / "mesh" / "mesh.json").write_text(json.dumps({"step": run.step}))

    return fake_export


def test_a_run_continued_without_its_export_is_exported_again_when_the_batch_asks(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """Finished with its mesh at --iters 5, continued to 8 with --no-export: the batch at 8
    with the export skipped it as finished, its mesh still of step 5."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    exports = []
    monkeypatch.setattr(trainer, "export_trained", fake_mesh_export(exports))
    tiny_yaml.write_text(yaml.safe_dump({**yaml.safe_load(tiny_yaml.read_text()), "export": True}))
    args = ["batch", path, *BUILTIN[:2], "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, [*args, "--iters", "5"]))) == 0
    assert main(list(map(str, [*args, "--iters", "8", "--no-export"]))) == 0
    assert exports == [5]
    capsys.readouterr()
    assert main(list(map(str, [*args, "--iters", "8"]))) == 0
    assert exports == [5, 8]  # nothing trained again
    assert steps(root / "a_red_cube") == [5, 8]
    err = capsys.readouterr().err
    expected = "finished with the mesh of an earlier step; exporting it again"
    assert f"batch: line 1: {root / 'a_red_cube'} {expected}" in err
    assert main(list(map(str, [*args, "--iters", "8"]))) == 0  # now its mesh is of step 8
    assert exports == [5, 8]


def test_a_run_continued_to_a_higher_iters_is_not_said_to_be_only_exported(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """Finished with its mesh at --iters 5, asked for 8: the batch trains it on and says so;
    "finished with the mesh of an earlier step; exporting it again" is the line of a run that
    needs only its export, not of one that trains."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    monkeypatch.setattr(trainer, "export_trained", fake_mesh_export([]))
    tiny_yaml.write_text(yaml.safe_dump({**yaml.safe_load(tiny_yaml.read_text()), "export": True}))
    args = ["batch", path, *BUILTIN[:2], "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, [*args, "--iters", "5"]))) == 0
    capsys.readouterr()
    assert main(list(map(str, [*args, "--iters", "8"]))) == 0
    err = capsys.readouterr().err
    assert "finished at step 5; continuing to --iters 8" in err
    assert "exporting it" not in err


def test_an_export_only_attempt_records_no_speed_and_says_training_settings_do_not_apply(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """A run trained with --no-export and run again for its mesh trains nothing: its record had
    the earlier training's it/s, and a changed --lr was said to apply "from its last checkpoint
    on", though no step is trained."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 0  # tiny.yaml: export false
    assert rows(root)[0]["its"] is not None

    def fake_export(run):
        (run.workspace / "mesh").mkdir()
        (run.workspace / "mesh" / "mesh.glb").write_bytes(b"glTF")

    monkeypatch.setattr(trainer, "export_trained", fake_export)
    tiny_yaml.write_text(yaml.safe_dump({**yaml.safe_load(tiny_yaml.read_text()), "export": True}))
    capsys.readouterr()
    assert main(list(map(str, [*args, "--lr", "0.5"]))) == 0
    assert steps(root / "a_red_cube") == [5]  # nothing trained
    err = capsys.readouterr().err
    own = f"dreamtext text 'a red cube' --workspace {shlex.quote(str(root / 'a_red_cube'))}"
    assert (
        f"batch: line 1: {root / 'a_red_cube'} is trained and only exported, so these settings "
        f"do not apply to it (lr 0.02 → 0.5); `{own} --overwrite`, with its other "
        "text→3D flags, trains it again from scratch with them"
    ) in err
    assert "resumes with other settings" not in err
    record = rows(root)[-1]
    assert record["status"] == "finished" and record["its"] is None


def test_a_retry_that_fails_before_its_run_starts_records_no_phase_of_the_old_run(
    tmp_path, tiny_yaml, shapes_cache, capsys
):
    """A finished run continued to a higher --iters whose checkpoints are all damaged fails
    while it loads them, before it writes a status of its own: its record took the phase and
    GPU memory of the finished run's status.json, and the summary said "failed in train"."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN[:2], "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, [*args, "--iters", "4"]))) == 0
    # The finished run as an earlier process left it (this test runs both in one, in a second).
    earlier = {**status(root / "a_red_cube"), "pid": 1, "started": "2026-01-01T00:00:00+00:00"}
    (root / "a_red_cube" / "status.json").write_text(json.dumps(earlier))
    assert earlier["phase"] is not None
    checkpoints = root / "a_red_cube" / "checkpoints"
    for step_file in checkpoints.glob("step_*"):
        step_file.unlink()
    (checkpoints / "last.pt").write_bytes(b"\0" * 1000)
    capsys.readouterr()
    assert main(list(map(str, [*args, "--iters", "6"]))) == 1
    err = capsys.readouterr().err
    assert "cannot resume" in err and "failed in" not in err
    record = rows(root)[-1]
    assert record["status"] == "failed"
    assert record["phase"] is None and record["gpu_mem_mib"] is None and record["its"] is None


def test_a_finished_run_continued_to_a_higher_iters_is_said_and_recorded(
    tmp_path, tiny_yaml, shapes_cache, capsys
):
    """A higher --iters trains a finished run on (iters is not compared): it said nothing, and
    the summary showed only "finished", so nothing told why a run the batch could have skipped
    trained again. The line that is skipped says nothing of it."""
    path = prompts_file(tmp_path, "a red cube", "a blue cube")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN[:2], "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, [*args, "--iters", "5"]))) == 0
    blue = ["text", "a blue cube", *BUILTIN[:2], "--iters", "10", "--config", tiny_yaml]
    assert main(list(map(str, [*blue, "--resume", "--workspace", root / "a_blue_cube"]))) == 0
    capsys.readouterr()
    assert main(list(map(str, [*args, "--iters", "10"]))) == 0
    out, err = capsys.readouterr()
    red = root / "a_red_cube"
    assert f"batch: line 1: {red} finished at step 5; continuing to --iters 10\n" in err
    assert "line 2" not in err
    assert steps(red) == [5, 10]
    again = rows(root)[2:]
    assert [(r["status"], r["continued_from"]) for r in again] == [
        ("finished", 5),
        ("skipped", None),
    ]
    assert "finished (from step 5)" in out
    assert rows(root)[0]["continued_from"] is None


def test_a_run_a_batch_only_exports_keeps_its_own_iters_in_status_and_config_json(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch
):
    """A run trained by hand to step 10 without a mesh, then exported by a batch with --iters 5:
    status.json said ``iters`` 5 beside ``step`` 10 (and config.json iters 5), the batch's, not
    the run's."""
    root = tmp_path / "root"
    text = ["text", "a red cube", *BUILTIN[:2], "--iters", "10", "--config", tiny_yaml]
    assert main(list(map(str, [*text, "--workspace", root / "a_red_cube"]))) == 0
    monkeypatch.setattr(trainer, "export_trained", lambda run: None)
    tiny_yaml.write_text(yaml.safe_dump({**yaml.safe_load(tiny_yaml.read_text()), "export": True}))
    path = prompts_file(tmp_path, "a red cube")
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 0
    assert [r["status"] for r in rows(root)] == ["finished"]
    done = status(root / "a_red_cube")
    assert (done["state"], done["step"], done["iters"]) == ("finished", 10, 10)
    config = json.loads((root / "a_red_cube" / "config.json").read_text())
    assert config["iters"] == 10 and "iters" not in config["resumes"][-1]["changed"]


def test_a_run_whose_export_was_killed_mid_swap_gets_its_mesh_back_without_a_new_export(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """A kill between an export's two renames leaves no mesh/ (the old one moved aside, the new
    one waiting): the batch exported the finished run again, minutes at a large resolution."""
    from dreamtext.export import OLD_PREFIX, READY_PREFIX

    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    tiny_yaml.write_text(yaml.safe_dump({**yaml.safe_load(tiny_yaml.read_text()), "export": True}))
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    exports = []

    def fake_export(run):
        exports.append(run.step)
        (run.workspace / "mesh").mkdir()
        (run.workspace / "mesh" / "mesh.glb").write_bytes(b"old")

    monkeypatch.setattr(trainer, "export_trained", fake_export)
    assert main(list(map(str, args))) == 0
    run = root / "a_red_cube"
    (run / "mesh").rename(run / (OLD_PREFIX + "mesh"))  # cut between the two renames
    ready = run / (READY_PREFIX + "abc12345")
    (ready / "mesh").mkdir(parents=True)
    (ready / "mesh" / "mesh.glb").write_bytes(b"new")
    capsys.readouterr()
    assert main(list(map(str, args))) == 0
    assert exports == [5]  # not exported again
    assert (run / "mesh" / "mesh.glb").read_bytes() == b"new"
    assert not list(run.glob(".export-*"))
    assert [r["status"] for r in rows(root)] == ["finished", "skipped"]
    assert "exporting it" not in capsys.readouterr().err


def test_a_run_finished_without_its_export_and_checkpoints_is_skipped_with_a_warning(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """Checkpoints removed to save space: there is nothing to export from, and resuming would
    train the run again from scratch (it did, saying "exporting it")."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 0  # tiny.yaml: export false
    shutil.rmtree(root / "a_red_cube" / "checkpoints")
    monkeypatch.setattr(trainer, "export_trained", lambda run: pytest.fail("exported"))
    tiny_yaml.write_text(yaml.safe_dump({**yaml.safe_load(tiny_yaml.read_text()), "export": True}))
    capsys.readouterr()
    assert main(list(map(str, args))) == 0
    assert steps(root / "a_red_cube") == [5]  # not trained again
    assert [r["status"] for r in rows(root)] == ["finished", "skipped"]
    own = f"dreamtext text 'a red cube' --workspace {shlex.quote(str(root / 'a_red_cube'))}"
    warning = (
        f"batch: line 1: {root / 'a_red_cube'} finished without a mesh and has no checkpoint "
        f"left to export it from; skipped, `{own} --overwrite`, with its other text→3D flags, "
        "trains it again\n"
    )
    assert capsys.readouterr().err.count(warning) == 1
    # Asked other settings too: one line says both (two lines named the same command).
    assert main(list(map(str, [*args, "--lr", "0.5"]))) == 0
    [line] = [line for line in capsys.readouterr().err.splitlines() if "batch: line" in line]
    assert line == (
        f"batch: line 1: {root / 'a_red_cube'} finished without a mesh and has no checkpoint "
        "left to export it from, and with other settings (lr 0.02 → 0.5); skipped, "
        f"`{own} --overwrite`, with its other text→3D flags, trains it again with these"
    )


def test_a_run_finished_without_an_export_is_skipped_quietly_by_a_batch_that_asks_for_none(
    tmp_path, tiny_yaml, shapes_cache, capsys
):
    """A list trained with --no-export (tiny.yaml: export false), run again the same way: the
    run is finished as asked and skipped without a word, not told that it "finished without a
    mesh and has no checkpoint left to export it from" (it has both its checkpoints and no need
    of a mesh)."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN[:2], "--iters", "5", "--config", tiny_yaml, "--workspace", root]
    assert main(list(map(str, args))) == 0
    capsys.readouterr()
    assert main(list(map(str, args))) == 0
    assert [r["status"] for r in rows(root)] == ["finished", "skipped"]
    assert "without a mesh" not in capsys.readouterr().err


def test_a_finished_run_with_other_export_settings_is_pointed_at_dreamtext_export(tmp_path, capsys):
    """Export settings need no training, so the advice is the export command, not --overwrite
    (which trains the run again from scratch)."""
    from dreamtext.batch import BatchOptions, entry_config, run_entry
    from dreamtext.config import config_to_dict

    root = tmp_path / "root"
    workspace = ran(root / "a_red_cube", "a red cube")
    entry = Entry(1, "a red cube", "text", "a red cube", workspace)
    flags = {"iters": 20, "guidance": {"model": "builtin:shapes"}}
    saved = config_to_dict(entry_config(entry, flags, None, None))
    (workspace / "config.json").write_text(json.dumps(saved))
    resolution = saved["export_options"]["resolution"]
    cfg = entry_config(entry, {**flags, "export_options": {"resolution": 64}}, None, None)
    assert run_entry(entry, cfg, BatchOptions(root=root), root, None)["status"] == "skipped"
    assert capsys.readouterr().err.strip().splitlines() == [
        f"batch: line 1: {workspace} finished with other settings (export_options.resolution "
        f"{resolution} → 64); skipped, dreamtext export --workspace "
        f"{shlex.quote(str(workspace))} --resolution 64 "
        "exports it again with these"
    ]


def test_the_export_command_batch_suggests_exports_with_the_lines_settings(tmp_path):
    """The suggested ``dreamtext export`` is a command to paste: the folder quoted (a batch root
    with a space), and every changed export option a flag, since a re-export otherwise takes the
    run's recorded options. Parsed back with the CLI's own parser and resolved as cmd_export
    resolves it, it gives the line's options."""
    import shlex

    from dreamtext.batch import entry_config, export_command
    from dreamtext.cli import build_parser

    workspace = tmp_path / "my runs" / "a_red_cube"
    entry = Entry(1, "a red cube", "text", "a red cube", workspace)
    wanted = {
        "resolution": 64,
        "decimate": 0,
        "texture_size": 128,
        "formats": ["glb", "ply"],
        "video": False,
        "threshold": 5.0,
        "frames": 90,
        "video_size": 128,
    }
    cfg = entry_config(entry, {"export_options": wanted}, None, None)
    changed = [f"export_options.{name} x → y" for name in wanted]
    words = shlex.split(export_command(workspace, cfg, changed))
    assert words[:2] == ["dreamtext", "export"]
    args = build_parser().parse_command_line(words[1:])
    assert Path(args.workspace) == workspace
    assert (args.resolution, args.decimate, args.texture_size) == (64, 0, 128)
    assert (args.formats, args.video, args.threshold) == ("glb,ply", False, 5.0)
    assert (args.frames, args.video_size) == (90, 128)
    none = entry_config(entry, {"export_options": {"threshold": None, "video": True}}, None, None)
    lines = ["export_options.threshold 5.0 → None", "export_options.video"]
    assert shlex.split(export_command(workspace, none, lines))[4:] == [
        "--threshold", "auto", "--video",
    ]  # fmt: skip


# A value of every export option unlike its default (and for threshold and video, the other way).
_CHANGED_EXPORT_OPTIONS = {
    "resolution": [64],
    "threshold": [5.0, None],
    "decimate": [0],
    "texture_size": [128],
    "formats": [["glb", "ply"]],
    "video": [False, True],
    "video_size": [128],
    "frames": [90],
    "device": ["cpu"],
}


@pytest.mark.parametrize(
    ("name", "value"),
    [(name, value) for name, values in _CHANGED_EXPORT_OPTIONS.items() for value in values],
)
def test_every_export_option_survives_batchs_command_and_the_export_parser(tmp_path, name, value):
    """For each export option: the ``dreamtext export`` command batch suggests for a changed
    option, parsed by the CLI's own parser and laid over other recorded options as cmd_export
    lays it, gives the line's value (and only that option changes)."""
    import shlex

    from dreamtext.batch import entry_config, export_command
    from dreamtext.cli import build_parser
    from dreamtext.export import ExportOptions
    from dreamtext.exportflags import apply_export_flags

    workspace = tmp_path / "my runs" / "a_red_cube"
    entry = Entry(1, "a red cube", "text", "a red cube", workspace)
    # A config's export_options.device is refused (never read); the flag still carries one.
    cfg = entry_config(
        entry, {"export_options": {name: value}} if name != "device" else {}, None, None
    )
    if name == "device":
        cfg.export_options.device = value
    words = shlex.split(export_command(workspace, cfg, [f"export_options.{name} x → y"]))
    args = build_parser().parse_command_line(words[1:])
    recorded = ExportOptions(threshold=2.0, video=False)  # what the run's own export used
    apply_export_flags(args, recorded)
    wanted = dataclasses.replace(ExportOptions(threshold=2.0, video=False), **{name: value})
    assert Path(args.workspace) == workspace
    assert dataclasses.asdict(recorded) == {
        **dataclasses.asdict(wanted),
        "formats": tuple(wanted.formats),
    }


def test_every_export_option_has_a_flag():
    """Each ``ExportOptions`` field is a row of the export flag table, so it is a flag of
    ``dreamtext export`` and batch's command can name it; an option added without its row
    fails here."""
    from dreamtext.cli import build_parser
    from dreamtext.export import ExportOptions
    from dreamtext.exportflags import EXPORT_FLAGS

    options = {row.option for row in EXPORT_FLAGS}
    assert options == {field.name for field in dataclasses.fields(ExportOptions)}
    assert len(options) == len(EXPORT_FLAGS)  # one row each
    export = build_parser().commands["export"]
    flags = {flag for action in export._actions for flag in action.option_strings}
    assert {row.flag for row in EXPORT_FLAGS} <= flags
    assert _CHANGED_EXPORT_OPTIONS.keys() == {row.option for row in EXPORT_FLAGS}


SLURM_SCRIPT = ROOT / "dreamtext" / "data" / "slurm_array.sbatch"
# Array task 3 of job 41 (SLURM_JOB_ID 57, the id scancel takes), as SLURM sets it for the script.
TASK_41_3 = {"SLURM_ARRAY_JOB_ID": "41", "SLURM_ARRAY_TASK_ID": "3"}


def stand_ins(tmp_path, scripts: dict[str, str]) -> dict[str, str]:
    """Stand-ins for SLURM's tools (``{"srun": "bash body", ...}``) in ``tmp_path/bin``, and the
    PATH that finds them before the system's, as the environment of a run of the script. The
    bodies name paths ``shlex.quote``d: the test's folder may hold a space (TMPDIR)."""
    tools = tmp_path / "bin"
    tools.mkdir(exist_ok=True)
    for name, body in scripts.items():
        (tools / name).write_text(f"#!/bin/bash\n{body}\n")
        (tools / name).chmod(0o755)
    return {"PATH": f"{tools}:/usr/bin:/bin"}


def warned_of_the_time_limit(tmp_path, scripts: dict[str, str], **popen) -> subprocess.Popen:
    """The script as task 41_3 of job 57 over ``scripts``' stand-ins, whose srun writes its pid
    to ``tmp_path/step.pid`` once it runs: started, and sent the time limit's warning (USR1)
    once its step runs."""
    env = {**stand_ins(tmp_path, scripts), **TASK_41_3, "SLURM_JOB_ID": "57"}
    args = ["bash", SLURM_SCRIPT, "prompts.txt", "/shared/runs"]
    task = subprocess.Popen(args, env=env, cwd=tmp_path, **popen)
    ready = tmp_path / "step.pid"
    deadline = time.monotonic() + 30
    while not (ready.exists() and ready.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    task.send_signal(signal.SIGUSR1)
    return task


@pytest.mark.parametrize("batch_exit", [0, 1, 130, 138])
def test_the_slurm_script_runs_the_batch_as_a_step_with_its_cpus(tmp_path, batch_exit):
    """dreamtext/data/slurm_array.sbatch with stand-ins for srun and scontrol: dreamtext batch runs
    as a job step with the task's CPUs (srun does not pass them on by itself in every Slurm
    version), and its exit status is the task's. A batch stopped by a SIGTERM that is not the time
    limit's (exit 130: `scancel -s TERM`, which signals the step and leaves the script running) is
    not requeued: on Slurm 22.05 such a task came back to the queue 2 minutes after it was stopped.
    A step that ends with 138 itself (128 + USR1's number) is not taken for the time limit's
    interrupted `wait`, which the script waits on again: it ends at once."""
    calls = tmp_path / "calls.txt"
    log = shlex.quote(str(calls))
    scripts = {
        name: f'echo "{name} $*" >> {log}\nexit {code}'
        for name, code in (("srun", batch_exit), ("scontrol", 0))
    }
    env = {**stand_ins(tmp_path, scripts), **TASK_41_3}
    args = ["bash", SLURM_SCRIPT, "prompts.txt", "/shared/runs", "--fp16"]
    done = subprocess.run(args, env={**env, "SLURM_CPUS_PER_TASK": "4"}, cwd=tmp_path, timeout=30)
    assert done.returncode == batch_exit
    assert calls.read_text().splitlines() == [
        "srun --kill-on-bad-exit=1 --cpus-per-task=4 dreamtext batch prompts.txt --workspace "
        "/shared/runs --fp16",
    ]


def test_the_slurm_script_passes_the_time_limits_warning_on_and_requeues_the_task(tmp_path):
    """The time limit's warning reaches the script as USR1 (``--signal=B:USR1@180``): it sends
    the step SIGTERM through scancel, the batch checkpoints and exits 130, and the script
    requeues the task, the one way a stopped task goes back to the queue."""
    calls, ready = tmp_path / "calls.txt", tmp_path / "step.pid"
    log, pid = shlex.quote(str(calls)), shlex.quote(str(ready))
    scripts = {
        # the step: runs until SIGTERM, then exits as an interrupted batch does
        "srun": f'echo "srun $*" >> {log}\ntrap "exit 130" TERM\necho $$ > {pid}\n'
        "while :; do sleep 0.1; done",
        "scancel": f'echo "scancel $*" >> {log}\nkill -TERM "$(cat {pid})"',
        "scontrol": f'echo "scontrol $*" >> {log}',
    }
    task = warned_of_the_time_limit(tmp_path, scripts)
    assert task.wait(timeout=30) == 130
    assert calls.read_text().splitlines() == [
        "srun --kill-on-bad-exit=1 --cpus-per-task=1 dreamtext batch prompts.txt --workspace "
        "/shared/runs",
        "scancel --signal=TERM 57",
        "scontrol requeue 41_3",
    ]


def test_the_slurm_script_requeues_the_task_when_the_step_stopped_before_scancel_returned(
    tmp_path,
):
    """scancel returns once slurmctld answers, which may be after the step has saved and
    stopped: the script asked `kill -0` whether the step still ran before waiting for it again,
    found it gone, and ended with the interrupted `wait`'s 138, the task not requeued."""
    calls, ready = tmp_path / "calls.txt", tmp_path / "step.pid"
    log, pid = shlex.quote(str(calls)), shlex.quote(str(ready))
    scripts = {
        # the step: stops at once on SIGTERM, as an interrupted batch does
        "srun": f"echo \"srun $*\" >> {log}\ntrap 'kill $!; exit 130' TERM\necho $$ > {pid}\n"
        "sleep 1000 & wait $!",
        # returns once the script has reaped the stopped step
        "scancel": f'echo "scancel $*" >> {log}\nstep=$(cat {pid})\nkill -TERM "$step"\n'
        'while kill -0 "$step" 2> /dev/null; do sleep 0.02; done',
        "scontrol": f'echo "scontrol $*" >> {log}',
    }
    task = warned_of_the_time_limit(tmp_path, scripts)
    assert task.wait(timeout=30) == 130
    requeued = ["scancel --signal=TERM 57", "scontrol requeue 41_3"]
    assert calls.read_text().splitlines()[1:] == requeued


def test_the_slurm_script_asks_scancel_again_where_it_fails_at_the_time_limit(tmp_path):
    """A busy slurmctld fails scancel ("Socket timed out on send/recv operation"): the script
    ended at once with 1 (set -e in the trap), its step still running without its SIGTERM and
    the task not requeued. It asks again 5 s later (not srun, which answers a SIGTERM with
    SIGKILL to the step)."""
    calls, ready = tmp_path / "calls.txt", tmp_path / "step.pid"
    failed = tmp_path / "scancel-failed"
    log, pid, flag = (shlex.quote(str(path)) for path in (calls, ready, failed))
    scripts = {
        "srun": f"echo \"srun $*\" >> {log}\ntrap 'kill $!; exit 130' TERM\necho $$ > {pid}\n"
        "sleep 1000 & wait $!",
        # fails once, then stops the step
        "scancel": f'echo "scancel $*" >> {log}\n'
        f'if [[ ! -e {flag} ]]; then touch {flag}; echo "scancel: error: Socket timed out" '
        f'>&2; exit 1; fi\nkill -TERM "$(cat {pid})"',
        "scontrol": f'echo "scontrol $*" >> {log}',
    }
    task = warned_of_the_time_limit(
        tmp_path, scripts, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        assert task.wait(timeout=60) == 130
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(task.pid, signal.SIGKILL)  # the step (and its sleep) the old script left
    asked = ["scancel --signal=TERM 57"] * 2 + ["scontrol requeue 41_3"]
    assert calls.read_text().splitlines()[1:] == asked


# `scontrol show job 57` of a task started at 23:23:26, as Slurm 22.05 prints it (its lines
# that the script reads), with its PreemptTime.
SHOW_JOB = """JobId=57 ArrayJobId=41 ArrayTaskId=3 JobName=dreamtext
   JobState=RUNNING Reason=None Dependency=(null)
   Requeue=1 Restarts=1 BatchFlag=1 Reboot=0 ExitCode=0:0
   SubmitTime=2026-12-07T23:20:28 EligibleTime=2026-12-07T23:23:23
   AccrueTime=2026-12-07T23:23:23
   StartTime=2026-12-07T23:23:26 EndTime=2026-12-07T23:25:24 Deadline=N/A
   PreemptEligibleTime=2026-12-07T23:23:26 PreemptTime={}
"""


@pytest.mark.parametrize(
    ("preempt_time", "requeued"),
    [
        ("2026-12-07T23:24:23", True),  # in this run: its grace time began
        ("2026-12-07T23:23:26", True),  # in the second this run started (times are to 1 s)
        ("None", False),  # never preempted: `scancel -s TERM`
        ("2026-12-07T23:21:19", False),  # the run before this one's requeue
    ],
)
def test_the_slurm_script_requeues_a_task_preempted_in_its_grace_time(
    tmp_path, preempt_time, requeued
):
    """Preempted on a partition with a GraceTime, the step gets SIGTERM and the script nothing;
    the batch saves and exits 130 within the grace time, and Slurm 22.05 ended the task FAILED,
    never requeued. The script reads the preemption from `scontrol show job` (PreemptTime, at or
    after this run's StartTime) and requeues the task; a stop that was no preemption of this
    run leaves it stopped."""
    calls = tmp_path / "calls.txt"
    log = shlex.quote(str(calls))
    shown = shlex.quote(SHOW_JOB.format(preempt_time))
    scripts = {
        "srun": f'echo "srun $*" >> {log}\nexit 130',
        "scontrol": f'echo "scontrol $*" >> {log}\n[[ $1 == show ]] && printf %s {shown}\nexit 0',
    }
    env = {**stand_ins(tmp_path, scripts), **TASK_41_3, "SLURM_JOB_ID": "57"}
    args = ["bash", SLURM_SCRIPT, "prompts.txt", "/shared/runs"]
    done = subprocess.run(args, env=env, cwd=tmp_path, timeout=30)
    assert done.returncode == 130
    assert calls.read_text().splitlines()[1:] == ["scontrol show job 57"] + (
        ["scontrol requeue 41_3"] if requeued else []
    )


@pytest.mark.parametrize(
    ("exit_code", "job"),
    [
        (1, {"SLURM_JOB_ID": "57"}),  # it ended by itself (a line failed): nothing to go on with
        (0, {"SLURM_JOB_ID": "57"}),  # every line done as the preemption came
        (130, {}),  # run by hand outside SLURM and stopped (Ctrl-C): no job to requeue
    ],
)
def test_the_slurm_script_requeues_no_task_whose_batch_it_cannot_go_on_with(
    tmp_path, exit_code, job
):
    """A preempted task whose batch ended by itself (exit 0, or 1 for a failed line) is not
    requeued: its requeue would run a finished share again. The script run with no job
    (`bash slurm_array.sbatch ...` by hand) asks scontrol nothing and exits as its batch did,
    without an unbound variable (set -u)."""
    calls = tmp_path / "calls.txt"
    log = shlex.quote(str(calls))
    shown = shlex.quote(SHOW_JOB.format("2026-12-07T23:24:23"))
    scripts = {
        "srun": f'echo "srun $*" >> {log}\nexit {exit_code}',
        "scontrol": f'echo "scontrol $*" >> {log}\n[[ $1 == show ]] && printf %s {shown}\nexit 0',
    }
    env = {**stand_ins(tmp_path, scripts), **TASK_41_3, **job}
    args = ["bash", SLURM_SCRIPT, "prompts.txt", "/shared/runs"]
    done = subprocess.run(args, env=env, cwd=tmp_path, timeout=30, capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (exit_code, "")
    assert calls.read_text().splitlines()[1:] == []


def test_the_slurm_script_reads_the_preemption_in_slurms_standard_time_format(tmp_path):
    """A SLURM_TIME_FORMAT of the user's (sbatch passes the submitting shell's environment on;
    `man scontrol`: "%a %T" prints "Mon 12:34:56") made scontrol's StartTime and PreemptTime
    "Mon" to the script, no date: a task preempted in its grace time was not requeued. The
    script asks scontrol for its standard format."""
    calls = tmp_path / "calls.txt"
    log = shlex.quote(str(calls))
    standard = shlex.quote(SHOW_JOB.format("2026-12-07T23:24:23"))
    custom = shlex.quote(SHOW_JOB.format("Mon 23:24:23").replace("2026-12-07T", "Mon "))
    show = (
        f'[[ "${{SLURM_TIME_FORMAT:-standard}}" == standard ]] && printf %s {standard} '
        f"|| printf %s {custom}"
    )
    scripts = {
        "srun": f'echo "srun $*" >> {log}\nexit 130',
        "scontrol": f'echo "scontrol $*" >> {log}\n[[ $1 == show ]] && {{ {show}; }}\nexit 0',
    }
    env = {**stand_ins(tmp_path, scripts), **TASK_41_3, "SLURM_JOB_ID": "57"}
    env["SLURM_TIME_FORMAT"] = "%a %T"
    args = ["bash", SLURM_SCRIPT, "prompts.txt", "/shared/runs"]
    done = subprocess.run(args, env=env, cwd=tmp_path, timeout=30)
    assert done.returncode == 130
    assert calls.read_text().splitlines()[1:] == ["scontrol show job 57", "scontrol requeue 41_3"]


def test_the_slurm_script_requeues_a_preempted_job_that_is_no_array_by_its_id(tmp_path):
    """A job submitted without an array (its --array line taken out) has no SLURM_ARRAY_JOB_ID:
    under `set -u` the requeue of a preempted one ended the script with 1, "unbound variable",
    the task FAILED and not requeued. It requeues the job by its own id."""
    calls = tmp_path / "calls.txt"
    log = shlex.quote(str(calls))
    shown = shlex.quote(SHOW_JOB.format("2026-12-07T23:24:23"))
    scripts = {
        "srun": f'echo "srun $*" >> {log}\nexit 130',
        "scontrol": f'echo "scontrol $*" >> {log}\n[[ $1 == show ]] && printf %s {shown}\nexit 0',
    }
    env = {**stand_ins(tmp_path, scripts), "SLURM_JOB_ID": "57"}
    args = ["bash", SLURM_SCRIPT, "prompts.txt", "/shared/runs"]
    done = subprocess.run(args, env=env, cwd=tmp_path, timeout=30, capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (130, "")
    assert calls.read_text().splitlines()[1:] == ["scontrol show job 57", "scontrol requeue 57"]


def test_the_slurm_script_asks_for_the_time_limits_warning_as_usr1_to_itself():
    """``--signal=TERM@180`` signalled the step, where the script could not tell the time limit
    from `scancel -s TERM`: it requeued the task either way."""
    script = SLURM_SCRIPT.read_text()
    assert re.findall(r"^#SBATCH --signal=(\S+)", script, re.MULTILINE) == ["B:USR1@180"]


def test_the_slurm_script_gives_each_task_its_share_of_shares_for_a_list_of_tasks(tmp_path):
    """`SHARES=8 sbatch --array=3,5 ...` submits two failed tasks of an --array=0-7 job again:
    each takes its share of eight (the array's own variables make a list of ids no range)."""
    calls = tmp_path / "calls.txt"
    log = shlex.quote(str(calls))
    env = {**stand_ins(tmp_path, {"srun": f'echo "srun $*" >> {log}'}), "SHARES": "8"}
    env["SLURM_ARRAY_JOB_ID"] = "41"
    for task in ("3", "5"):
        args = ["bash", SLURM_SCRIPT, "prompts.txt", "/shared/runs", "--fp16"]
        done = subprocess.run(args, env={**env, "SLURM_ARRAY_TASK_ID": task}, cwd=tmp_path)
        assert done.returncode == 0
    assert calls.read_text().splitlines() == [
        f"srun --kill-on-bad-exit=1 --cpus-per-task=1 dreamtext batch prompts.txt --workspace "
        f"/shared/runs --shard {task}/8 --fp16"
        for task in (3, 5)
    ]


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ([], "give the prompts file and the results folder first"),
        (["prompts.txt"], "give the prompts file and the results folder first"),
        (["prompts.txt", "--workspace", "runs", "--fp16"], "'--workspace' is a flag, where"),
        (["--model", "builtin:shapes"], "'--model' is a flag, where"),
    ],
)
def test_the_slurm_script_without_its_prompts_file_and_root_is_one_line_and_exit_2(
    tmp_path, args, why
):
    """Both missing was bash's `line 44: 1: usage: ...` and exit 1, the status of a task whose
    prompt failed; a flag in their place ran the batch, which refused a `--workspace` it had
    been given a folder for ("argument --workspace: expected one argument")."""
    calls = tmp_path / "calls.txt"
    log = shlex.quote(str(calls))
    env = {**stand_ins(tmp_path, {"srun": f'echo "srun $*" >> {log}'}), **TASK_41_3}
    done = subprocess.run(
        ["bash", SLURM_SCRIPT, *args], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 2
    usage = "sbatch slurm_array.sbatch PROMPTS_FILE ROOT [dreamtext batch flags]"
    assert re.fullmatch(rf"slurm_array\.sbatch: {why}.*: {re.escape(usage)}\n", done.stderr)
    assert not calls.exists()


def slurm_array(spec, job="41"):
    """The ``SLURM_*`` variables of each task of ``sbatch --array=SPEC`` (``0-7``, ``1-7:2``,
    ``3,5``), as SLURM sets them: the task's id and the array's min, max, count and step (1 for
    a list)."""
    if "," in spec:
        ids, step = sorted(int(i) for i in spec.split(",")), 1
    else:
        span, _, every = spec.partition(":")
        first, _, last = span.partition("-")
        step = int(every or 1)
        ids = list(range(int(first), int(last or first) + 1, step))
    array = {
        "SLURM_ARRAY_JOB_ID": job,
        "SLURM_ARRAY_TASK_MIN": str(ids[0]),
        "SLURM_ARRAY_TASK_MAX": str(ids[-1]),
        "SLURM_ARRAY_TASK_COUNT": str(len(ids)),
        "SLURM_ARRAY_TASK_STEP": str(step),
    }
    return [{**array, "SLURM_ARRAY_TASK_ID": str(i)} for i in ids]


def sbatch_shares(tmp_path, spec, shares):
    """Each task of ``SHARES=SHARES sbatch --array=SPEC slurm_array.sbatch``, with an
    srun that only says what it was given: the ``--shard`` each task's batch got, and each
    task's exit status and stderr."""
    path = stand_ins(tmp_path, {"srun": 'echo "$*"'})
    done = [
        subprocess.run(
            ["bash", SLURM_SCRIPT, "prompts.txt", "/shared/runs"],
            env={**path, "SHARES": shares, **task},
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        for task in slurm_array(spec)
    ]
    shards = [re.findall(r"--shard (\S+)", d.stdout) for d in done]
    return shards, [(d.returncode, d.stderr) for d in done]


@pytest.mark.parametrize(
    ("spec", "shares"),
    [
        ("0-7", "8"),
        ("1-8", "8"),  # was 1/8 … 7/8 and 8/8 refused: share 0 run by no task
        ("5-12", "8"),  # was 5/8, 6/8, 7/8 and the other five refused
        ("0-14:2", "8"),  # was 0/8, 2/8, 4/8, 6/8 and four refused
        ("3-10", "3-10"),
        ("1-15:2", "1-15:2"),
    ],
)
def test_shares_split_the_list_exactly_once_over_any_whole_array(tmp_path, spec, shares):
    """SHARES with the whole array, however it is numbered: share K of N is the K-th task's,
    each of 0 … N−1 once. The script took share TASK_ID/SHARES, right only from 0 in steps of 1."""
    shards, ends = sbatch_shares(tmp_path, spec, shares)
    assert ends == [(0, "")] * 8
    assert shards == [[f"{k}/8"] for k in range(8)]


@pytest.mark.parametrize(
    ("spec", "shares", "wanted"),
    [
        ("3,5", "8", ["3/8", "5/8"]),  # tasks 3 and 5 of --array=0-7
        ("3,5", "1-8", ["2/8", "4/8"]),  # of --array=1-8: were 3/8 and 5/8, shares 2 and 4 lost
        ("4,10", "0-14:2", ["2/8", "5/8"]),  # of --array=0-14:2
        ("2-4", "1-8", ["1/8", "2/8", "3/8"]),  # a range of some tasks
    ],
)
def test_some_tasks_submitted_again_run_the_shares_they_had_in_the_first_array(
    tmp_path, spec, shares, wanted
):
    shards, ends = sbatch_shares(tmp_path, spec, shares)
    assert {end for end in ends} == {(0, "")}
    assert shards == [[shard] for shard in wanted]


@pytest.mark.parametrize(
    ("spec", "shares", "why"),
    [
        ("6-9", "8", r"this array's 4 tasks \(6 to 9\) are neither the 8 shares of SHARES=8 nor"),
        ("3,5", "3", r"this array's 2 tasks \(3 to 5\) are neither the 3 shares of SHARES=3 nor"),
        ("3,5", "0-14:2", r"are neither the 8 shares of SHARES=0-14:2 nor tasks of the array"),
        ("0-1", "x", "SHARES=x is neither a number of shares nor an --array range"),
        ("0-1", "0", "SHARES=0 is neither a number of shares nor an --array range"),
        ("0-1", "5-2", "SHARES=5-2 is not a range of array ids"),
        ("0-1", "1-8:0", "SHARES=1-8:0 is not a range of array ids"),
    ],
)
def test_shares_that_do_not_fit_the_array_are_refused_by_every_task_alike(
    tmp_path, spec, shares, why
):
    """A SHARES that would leave lines out or run some twice: one line, exit 2, no batch."""
    shards, ends = sbatch_shares(tmp_path, spec, shares)
    assert shards == [[]] * len(ends)
    for code, err in ends:
        assert code == 2
        assert re.fullmatch(rf"slurm_array\.sbatch: .*{why}.*SHARES=1-8\)\n", err), err


def test_the_slurm_script_trains_every_line_once_over_an_array_from_1(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """`SHARES=3 sbatch --array=1-3` over seven prompts: bash runs the script for each task with
    SLURM's variables, its srun keeps the command it is given, and that command runs in this
    process with the task's variables (a process of its own per task took a minute here,
    importing torch). Each line is trained once, by the task whose share holds it, and each
    task's table counts its own. Before, task 3 asked for share 3/3 (refused) and lines 1, 4
    and 7 were trained by none."""
    colours = ("red", "blue", "green", "yellow", "orange", "purple")
    path = prompts_file(tmp_path, *[f"a {colour} cube" for colour in colours], "a red sphere")
    root = tmp_path / "root"
    steps_of = tmp_path / "steps"
    steps_of.mkdir()
    steps = shlex.quote(str(steps_of))
    path_env = stand_ins(
        tmp_path, {"srun": f"printf '%s\\0' \"$@\" > {steps}/$SLURM_ARRAY_TASK_ID"}
    )
    flags = [*BUILTIN[:2], "--iters", "2", "--config", tiny_yaml, "--no-export"]
    tables = []
    for task in slurm_array("1-3"):
        env = {**path_env, "SHARES": "3", **task}
        done = subprocess.run(["bash", SLURM_SCRIPT, path, root, *flags], env=env, cwd=tmp_path)
        assert done.returncode == 0
        step = (steps_of / task["SLURM_ARRAY_TASK_ID"]).read_text().split("\0")[:-1]
        assert step[:3] == ["--kill-on-bad-exit=1", "--cpus-per-task=1", "dreamtext"]
        for name, value in task.items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        assert main(step[3:]) == 0
        tables.append(capsys.readouterr().out.splitlines())
    records = sorted(rows(root), key=lambda r: r["line"])
    assert [(r["line"], r["shard"], r["slurm"]) for r in records] == [
        (line, f"{(line - 1) % 3}/3", f"41_{(line - 1) % 3 + 1}") for line in range(1, 8)
    ]
    assert {r["status"] for r in records} == {"finished"}
    assert [table[-1] for table in tables] == [
        "3 finished, 0 skipped, 0 failed, 0 interrupted",
        "2 finished, 0 skipped, 0 failed, 0 interrupted",
        "2 finished, 0 skipped, 0 failed, 0 interrupted",
    ]
    assert [[row.split()[0] for row in table[1:-1]] for table in tables] == [
        ["1", "4", "7"],
        ["2", "5"],
        ["3", "6"],
    ]


def test_a_prompt_another_command_is_running_is_skipped_not_failed(
    tmp_path, tiny_yaml, shapes_cache, holder, capsys
):
    """A `dreamtext text` of the prompt's workspace runs it (it holds the workspace's lock, not
    a batch lock): the line was 'failed in train', with the other run's phase, the advice
    '--workspace NEW_FOLDER' and exit 1, and other workers sharing the list then skipped it as
    failed. Now it is skipped as a line another worker holds is, naming the process."""
    root = tmp_path / "root"
    other = holder(root / "a_red_cube")
    args = ["batch", str(prompts_file(tmp_path, "a red cube", "a blue cube")), *BUILTIN]
    code = main([*args, "--config", str(tiny_yaml), "--workspace", str(root)])
    err = capsys.readouterr().err
    assert code == 0, err
    line1, line2 = rows(root)
    assert line1["status"] == "skipped" and line1["phase"] is None
    assert line1["error"] == f"in use by process {other.pid} on this machine"
    assert "not a worker of this batch; skipped" in err and "NEW_FOLDER" not in err
    assert line2["status"] == "finished"


def test_the_preset_and_config_files_are_read_once_per_batch_not_once_per_prompt(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch
):
    """Every line parsed the built-in prior's preset and each --config file again (18 ms a
    prompt here), and said a config file's warning once per line."""
    import dreamtext.config
    import dreamtext.inputs

    path = prompts_file(tmp_path, "a red cube", "a blue sphere", "a green cone")
    read = []
    real_read = dreamtext.inputs.read_yaml
    for module in (dreamtext.config, dreamtext.inputs):
        monkeypatch.setattr(module, "read_yaml", lambda p: read.append(p) or real_read(p))
    args = ["batch", path, *BUILTIN, "--config", tiny_yaml, "--workspace", tmp_path / "root"]
    assert main(list(map(str, [*args, "--no-export"]))) == 0
    # once for the runs; the CLI reads the --config files' stage sections once too, and before
    # torch is imported their stage sections and settings once each (early_batch); the model
    # and negative prompt, for the built-in prior's captions, once before torch is imported and
    # once by run_batch
    assert Counter(Path(p).name for p in read) == {"builtin-shapes.yaml": 1, "tiny.yaml": 6}


def test_the_configs_resolved_once_are_each_lines_own(tmp_path, tiny_yaml):
    from dreamtext.batch import entry_config, entry_configs, read_prompts

    path = prompts_file(tmp_path, "a red cube", "image:mug.png", "a blue sphere")
    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "mug.png")
    entries = read_prompts(path, tmp_path / "root")
    overrides = {"iters": 20, "lr": 0.03, "guidance": {"model": "builtin:shapes"}}
    once = entry_configs(entries, overrides, None, tiny_yaml)
    each = [entry_config(e, overrides, None, tiny_yaml) for e in entries]
    assert once == each and [c.prompt for c in once] == ["a red cube", "mug", "a blue sphere"]
    assert len({id(c.guidance) for c in once}) == 3  # no line shares a part of another's


def test_the_configs_of_runs_resolved_once_are_each_lines_own(tmp_path):
    """Two interrupted runs of the same recorded settings resolve once (own_run_config's
    ``resolved``): each line still gets its own config, no part shared, as its run may change
    it; batch --status, which only reads them (``shared``), lets them share."""
    from dreamtext.batch import entry_configs, own_run_config, read_prompts

    path = prompts_file(tmp_path, "a red cube", "a blue cube")
    root = tmp_path / "root"
    shapes_run(root / "a_red_cube", "a red cube", 12)
    shapes_run(root / "a_blue_cube", "a blue cube", 12)
    entries = read_prompts(path, root)
    overrides = {"iters": 20, "guidance": {"model": "builtin:shapes"}}
    for shared in (False, True):
        fresh = entry_configs(entries, overrides, None, None, shared=shared)
        resolved, settings = {}, {}
        owns = [
            own_run_config(e, cfg, overrides, None, None, resolved, settings, shared=shared)
            for e, cfg in zip(entries, fresh, strict=True)
        ]
        assert len(resolved) == 1 and len(settings) == 2  # one resolution for both
        red, blue = (cfg for cfg, *_ in owns)
        assert (red.prompt, blue.prompt) == ("a red cube", "a blue cube")
        assert (red.guidance is blue.guidance) is shared
        assert (red.field is blue.field) is shared


def test_a_batch_on_the_cpu_does_not_collect_garbage_after_every_line(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch
):
    """gc.collect() after each line took 0.4 s and found no tensor: a run on the CPU frees its
    memory when it returns. A run on a GPU still gives the CUDA cache back."""
    from dreamtext import batch
    from dreamtext.config import TrainConfig

    collected = []
    monkeypatch.setattr(batch, "free_memory", lambda: collected.append(1))
    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    args = ["batch", path, *BUILTIN, "--config", tiny_yaml, "--workspace", tmp_path / "root"]
    assert main(list(map(str, [*args, "--device", "cpu", "--no-export"]))) == 0
    assert collected == []
    assert batch.runs_on_cuda(TrainConfig(device="cuda:1"))
    assert not batch.runs_on_cuda(TrainConfig(device="cpu"))


def test_an_empty_workspace_is_one_line_not_the_default_root(tmp_path, monkeypatch, capsys):
    """`--workspace "$ROOT"` with ROOT unset reached the batch as "", which read as no
    --workspace: the sweep trained into ./workspace/ and said nothing."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.txt").write_text("a red cube\n")
    argv = ["batch", "prompts.txt", "--model", "builtin:shapes", "--iters", "1", "--no-export"]
    assert main([*argv, "--workspace", ""]) == 2
    err = capsys.readouterr().err
    assert (
        err == "dreamtext: error: --workspace is empty (an unset shell variable?); give it a path\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.txt"]


def test_a_line_too_long_for_the_text_encoder_is_refused_before_any_line_trains(
    tmp_path, tiny_sd_path, tiny_yaml, capsys
):
    """A prompt the text encoder would cut off failed only when its turn came, after the lines
    before it had trained (hours each on a cluster); the sweep then ended with exit 1."""
    long = "a " + "red " * 80 + "cube"
    path = prompts_file(tmp_path, "a red cube", long)
    root = tmp_path / "root"
    args = ["batch", path, "--model", tiny_sd_path, "--config", tiny_yaml, "--iters", "1"]
    assert main(list(map(str, [*args, "--workspace", root, "--no-export"]))) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"dreamtext: error: {path}: line 2: the prompt with its view label is ")
    assert err.endswith("tokens, but the text encoder reads 77 (start and end included) and would "
                        "cut off the rest; shorten the prompt")  # fmt: skip
    assert not root.exists()


def test_a_list_read_from_a_pipe_trains_its_lines(tmp_path, tiny_yaml, shapes_cache, capsys):
    """`dreamtext batch <(grep cube prompts.txt)` (or /dev/stdin) said the list "holds no
    prompts": the early checks read the pipe, and the batch, reading it again, found it empty."""
    read, write = os.pipe()
    os.write(write, b"a red cube\n")
    os.close(write)
    try:
        argv = ["batch", f"/dev/fd/{read}", *BUILTIN[:2], "--iters", "1", "--no-export"]
        argv += ["--config", str(tiny_yaml), "--workspace", str(tmp_path / "root")]
        assert main(argv) == 0
    finally:
        os.close(read)
    assert "1 finished, 0 skipped, 0 failed" in capsys.readouterr().out
    assert (tmp_path / "root" / "a_red_cube" / "status.json").is_file()


def test_an_interrupted_attempt_that_trained_records_its_speed(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys
):
    """A batch stopped at step 8 (a preempted SLURM task) recorded it/s null and its table said
    "-", though log.jsonl held the attempt's speed."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN, "--config", tiny_yaml, "--workspace", root, "--no-export"]
    ctrl_c_at_step(monkeypatch, 8)
    assert main(list(map(str, args))) == 130
    [record] = rows(root)
    logged = json.loads((root / "a_red_cube" / "log.jsonl").read_text().splitlines()[-1])
    assert record["status"] == "interrupted" and record["its"] == logged["its"] > 0
    table = capsys.readouterr().out.splitlines()[1].split()
    assert table[:4] == ["1", "interrupted", "in", "train"] and table[5] == f"{logged['its']:.2f}"


def test_a_line_stopped_under_overwrite_says_how_a_rerun_treats_its_new_run(tmp_path):
    """Under --overwrite the line's advice was "run the batch again to resume": a rerun with
    --overwrite starts it anew; and a line stopped before its overwrite began was told to
    resume from the last checkpoint, the old run's."""
    from dreamtext.batch import interruption_line
    from dreamtext.checkpoint import RUN_KEYS, save_checkpoint
    from dreamtext.interrupts import TrainingInterrupted

    workspace = tmp_path / "a_red_cube"
    save_checkpoint(workspace, {**{key: {} for key in RUN_KEYS}, "step": 3})
    entry = Entry(1, "a red cube", "text", "a red cube", workspace)
    stop = TrainingInterrupted(3, workspace / "checkpoints" / "last.pt")
    assert interruption_line(entry, stop) == f"{stop}; run the batch again to resume"
    assert interruption_line(entry, stop, overwrite=True) == (
        f"{stop}; run the batch again without --overwrite to resume (with --overwrite it starts "
        "anew)"
    )
    assert interruption_line(entry, KeyboardInterrupt(), overwrite=True) == (
        "interrupted; run the batch again without --overwrite to resume from the last checkpoint "
        "(with --overwrite it starts anew)"
    )
    assert interruption_line(entry, KeyboardInterrupt(), overwrite=True, begun=False) == (
        "interrupted before its --overwrite began; run the batch again with --overwrite to train "
        "it anew"
    )


def test_an_image_line_stopped_after_its_search_says_a_rerun_goes_on_from_it(tmp_path):
    """A Ctrl-C between an image line's stages (its descriptor saved, text→3D starting) was
    "interrupted before the run's first checkpoint; run the batch again to start it again",
    where the rerun reuses the sentence and the trained descriptor."""
    from dreamtext.batch import interruption_line
    from dreamtext.descriptor import learned_embeds_path

    workspace = tmp_path / "mug"
    entry = Entry(1, "image:mug.png", "image", str(tmp_path / "mug.png"), workspace)
    assert interruption_line(entry, KeyboardInterrupt()) == (
        "interrupted before the run's first checkpoint; run the batch again to start it again"
    )
    sentence_path(workspace).parent.mkdir(parents=True)
    sentence_path(workspace).write_text('{"sentence": "An image of a mug"}')
    assert interruption_line(entry, KeyboardInterrupt()) == (
        "interrupted before text→3D's first checkpoint; run the batch again to go on from the "
        "sentence found"
    )
    (workspace / "descriptor" / "checkpoints").mkdir()
    (workspace / "descriptor" / "checkpoints" / "last.pt").write_bytes(b"")
    assert interruption_line(entry, KeyboardInterrupt()).endswith(
        "go on from the sentence found and the descriptor's last checkpoint"
    )
    learned_embeds_path(workspace).write_bytes(b"")
    assert interruption_line(entry, KeyboardInterrupt()).endswith(
        "go on from the sentence found and the trained descriptor"
    )


@pytest.mark.parametrize("swallowed", [False, True])
def test_a_stop_between_two_lines_keeps_the_records_and_starts_no_next_line(
    tmp_path, tiny_yaml, shapes_cache, monkeypatch, capsys, swallowed
):
    """A SIGTERM after a line's run returned, while its record was written, escaped the batch:
    the finished line had no record, and no summary or not-started line was printed. One whose
    KeyboardInterrupt a library swallowed let the next line be claimed and started."""
    import dreamtext.interrupts as interrupts

    path = prompts_file(tmp_path, "a red cube", "a blue cube")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN[:2], "--iters", "2", "--config", tiny_yaml, "--workspace", root]
    real_append, calls = dreamtext.batch.append_record, []

    def append_then_stop(log, record):
        real_append(log, record)
        calls.append(1)
        if len(calls) == 1:
            if swallowed:  # the handler ran, its KeyboardInterrupt lost in a __del__
                interrupts._REQUEST["stop"] = True
            else:
                signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(dreamtext.batch, "append_record", append_then_stop)
    assert main(list(map(str, args))) == 130
    assert [(r["line"], r["status"]) for r in rows(root)] == [(1, "finished")]
    assert not (root / "a_blue_cube").exists()
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("batch: 1 line not started (line 2); run the same command again")


def test_an_old_batch_script_run_with_an_unreadable_status_json_is_not_finished(tmp_path):
    """Only a run from before status.json counts by its files: one whose status.json is there
    but cannot be read (cut short, damaged) is not known to have finished."""
    from dreamtext.batch import is_finished
    from dreamtext.config import resolve_config

    workspace = _old_batch_sh_run(tmp_path / "a_red_cube")
    (workspace / "status.json").write_text('{"state": "fini')
    cfg = resolve_config({"prompt": "a red cube", "workspace": str(workspace), "iters": 20})
    assert is_finished(cfg) is False


def test_a_record_takes_the_runs_figures_only_from_a_status_written_since_the_attempt_began(
    tmp_path,
):
    """_record: a status.json this very process wrote before the attempt started (an earlier
    run_batch in the same process) is the old run's, not this attempt's."""
    from dreamtext.batch import Entry, _record
    from dreamtext.processes import this_process
    from dreamtext.runstatus import now_iso

    root = tmp_path / "root"
    entry = Entry(1, "a red cube", "text", "a red cube", root / "a_red_cube")
    entry.workspace.mkdir(parents=True)
    figures = {"state": "finished", "step": 4, "iters": 4, "phase": "export", "gpu_mem_mib": 9.0}
    old = {**figures, "started": "2020-01-01T00:00:00+00:00", **this_process()}
    (entry.workspace / "status.json").write_text(json.dumps(old))
    failed = {"status": "failed", "error": "cannot resume"}
    started = now_iso()
    record = _record(entry, root, None, failed, True, started, time.perf_counter())
    assert (record["phase"], record["step"], record["gpu_mem_mib"]) == (None, None, None)
    ours = {**figures, "started": started, **this_process()}
    (entry.workspace / "status.json").write_text(json.dumps(ours))
    record = _record(entry, root, None, failed, True, started, time.perf_counter())
    assert (record["phase"], record["step"], record["gpu_mem_mib"]) == ("export", 4, 9.0)


def test_only_a_run_finished_short_of_the_asked_iters_is_continued_from_its_step(tmp_path):
    """continued_step: the step a finished run is trained on from, where --iters asks for more;
    none for one finished at --iters or beyond (a batch that only exports it continues
    nothing), nor for a run not finished."""
    from dreamtext.batch import continued_step

    workspace = tmp_path / "a_red_cube"
    (workspace / "checkpoints").mkdir(parents=True)
    (workspace / "checkpoints" / "last.pt").write_bytes(b"a checkpoint")
    done = {"state": "finished", "step": 4, "iters": 4, "phase": "export"}
    (workspace / "status.json").write_text(json.dumps(done))
    assert continued_step(workspace, 6) == 4
    assert continued_step(workspace, 4) is None
    assert continued_step(workspace, 3) is None
    (workspace / "status.json").write_text(json.dumps({**done, "state": "interrupted"}))
    assert continued_step(workspace, 6) is None


def test_a_skip_recorded_after_another_workers_failure_does_not_hide_it(tmp_path):
    """BatchLog: a worker that skipped the line (its lock was held) made no attempt: the
    failure before it is still the line's newest attempt; a later attempt that ran ends it."""
    from dreamtext.batch import BatchLog, append_record

    log = tmp_path / "batch.jsonl"
    log.write_text(json.dumps({"workspace": "old", "status": "failed", "error": "before"}) + "\n")
    others = BatchLog(log)
    append_record(log, {"workspace": "a_red_cube", "status": "failed", "error": "CUDA error"})
    append_record(log, {"workspace": "a_red_cube", "status": "skipped", "error": "claimed by x"})
    assert others.failed_since_start("a_red_cube") == "CUDA error"
    assert others.failed_since_start("old") is None  # failed before this worker started
    append_record(log, {"workspace": "a_red_cube", "status": "finished", "error": None})
    assert others.failed_since_start("a_red_cube") is None


def test_a_requeued_task_keeps_the_lines_its_earlier_attempts_trained_and_no_others(
    tmp_path, monkeypatch
):
    """requeued_task_runs: this task's records of a lower restart count that finished a line,
    or were interrupted in it past step 0; not this attempt's own count's, nor another task's,
    nor an attempt stopped before its first step (the older run was still there)."""
    from dreamtext.batch import Entry, requeued_task_runs

    slurm_task_env(monkeypatch, "77", 2)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    root = tmp_path / "root"
    names = ["finished", "trained", "not_trained", "this_attempt", "other_task"]
    share = [Entry(i, n, "text", n, root / n) for i, n in enumerate(names, start=1)]
    records = [
        {"workspace": "finished", "slurm": "77_0", "slurm_restart": 0, "status": "finished"},
        {"workspace": "trained", "slurm": "77_0", "slurm_restart": 1, "status": "interrupted"},
        {"workspace": "not_trained", "slurm": "77_0", "slurm_restart": 1, "status": "interrupted"},
        {"workspace": "this_attempt", "slurm": "77_0", "slurm_restart": 2, "status": "finished"},
        {"workspace": "other_task", "slurm": "77_1", "slurm_restart": 0, "status": "finished"},
    ]
    steps = {"trained": 5, "not_trained": 0}
    root.mkdir()
    with open(root / "batch.jsonl", "w") as log:
        for record in records:
            step = steps.get(record["workspace"], 9)
            log.write(json.dumps({**record, "error": None, "step": step}) + "\n")
    kept = requeued_task_runs(root / "batch.jsonl", share, root)
    assert kept == {root / "finished", root / "trained"}


def test_overwrite_leaves_a_run_another_worker_trained_again_while_this_one_took_its_lock(
    tmp_path, monkeypatch
):
    """Workers sharing a list with --overwrite: the run's status.json changed while this worker
    claimed its lock (another worker had trained it again and released the lock), so it is
    skipped, not trained from scratch a second time."""
    from dreamtext.batch import BatchOptions, WorkspaceLock, entry_config, run_entry

    root = tmp_path / "root"
    workspace = ran(root / "a_red_cube", "a red cube")
    seen_at_start = json.loads((workspace / "status.json").read_text())
    entry = Entry(1, "a red cube", "text", "a red cube", workspace)
    cfg = entry_config(entry, {"iters": 20, "guidance": {"model": "builtin:shapes"}}, None, None)
    acquire = WorkspaceLock.acquire

    def acquire_after_another_worker(lock):
        retrained = {"state": "finished", "step": 20, "started": "2026-01-01T00:00:00+00:00"}
        (workspace / "status.json").write_text(json.dumps(retrained))
        return acquire(lock)

    monkeypatch.setattr(WorkspaceLock, "acquire", acquire_after_another_worker)
    trained = []
    monkeypatch.setattr(
        dreamtext.batch, "run_one_retrying_stale", lambda *a, **k: trained.append(k)
    )
    options = BatchOptions(root=root, overwrite=True)
    assert run_entry(entry, cfg, options, root, None, seen_at_start)["status"] == "skipped"
    assert trained == []


def test_a_run_without_a_checkpoint_gets_no_warning_that_it_resumes(tmp_path, capsys):
    """A run folder with its config.json but no checkpoint (stopped before its first one)
    starts again from scratch with the batch's settings: nothing resumes, so no warning says
    so; once it has a checkpoint, its changed settings are named."""
    from dreamtext.batch import entry_config, warn_resuming_with_other_settings
    from dreamtext.config import write_run_config

    workspace = tmp_path / "root" / "a_red_cube"
    workspace.mkdir(parents=True)
    entry = Entry(1, "a red cube", "text", "a red cube", workspace)
    flags = {"iters": 20, "guidance": {"model": "builtin:shapes"}}
    write_run_config(workspace, entry_config(entry, flags, None, None))
    cfg = entry_config(entry, {**flags, "lr": 0.5}, None, None)
    capsys.readouterr()
    warn_resuming_with_other_settings(entry, cfg)
    assert capsys.readouterr().err == ""
    (workspace / "checkpoints").mkdir()
    (workspace / "checkpoints" / "last.pt").write_bytes(b"a checkpoint")
    warn_resuming_with_other_settings(entry, cfg)
    assert "resumes with other settings than it started with (lr 0.02 → 0.5)" in (
        capsys.readouterr().err
    )


def test_a_stop_between_two_lines_retried_for_their_locks_starts_no_next_one(tmp_path, monkeypatch):
    """_run_share's second pass (lines skipped for a lock that looked abandoned): a Ctrl-C or
    SIGTERM that came while a line's record was written (held back, so no line records it)
    stops the pass before it waits for the next line's lock."""
    from dreamtext import interrupts
    from dreamtext.batch import BatchOptions, _run_share

    root = tmp_path / "root"
    share = [Entry(n, f"p{n}", "text", f"p{n}", root / f"p{n}") for n in (1, 2)]
    held = {"status": "skipped", "error": "claimed by node1 pid 5", "stopped_batch": False}
    waited = []

    def wait(entry, timeout):
        waited.append(entry.line)
        return True

    def attempt(entry, cfg):
        if len(calls) >= len(share):  # the second pass: a signal lands as the record is written
            interrupts._REQUEST["stop"] = True
            calls.append(entry.line)
            return {"status": "finished", "error": None, "stopped_batch": False}
        calls.append(entry.line)
        return dict(held)

    calls = []
    monkeypatch.setattr(dreamtext.batch, "wait_for_abandoned_lock", wait)

    class Bar:
        def set_postfix_str(self, text):
            pass

        def update(self, n):
            pass

    records, not_reached = [], []
    with interrupts.sigterm_interrupts():
        _run_share(
            share,
            [None, None],
            records,
            attempt,
            Bar(),
            BatchOptions(root=root),
            root,
            None,
            not_reached,
            root / "list.txt",
        )
    assert waited == [1] and calls == [1, 2, 1]
    assert not_reached == share[1:]  # line 2, held too, was not come back to


def test_a_batch_log_this_user_may_not_write_is_refused_before_any_line(tmp_path, monkeypatch):
    """check_batch_log: ROOT/batch.jsonl that this process may not write (another user's, a
    chmod) is one line before the first line trains, not a stop after it. (Root may write any
    file, so the permission is the one os.access answers.)"""
    from dreamtext.batch import check_batch_log

    log = tmp_path / "batch.jsonl"
    check_batch_log(log)  # not there yet: the first record makes it
    log.write_text("")
    check_batch_log(log)
    real = os.access
    monkeypatch.setattr(
        dreamtext.batch.os, "access", lambda p, mode: False if Path(p) == log else real(p, mode)
    )
    with pytest.raises(DreamtextError, match=r"^cannot write .*batch.jsonl .*make it writable"):
        check_batch_log(log)


@pytest.mark.parametrize("text", ["3", "[1, 2]", '"fast"', '{"its": "12.5"}', '{"its": true}'])
def test_a_damaged_last_log_line_gives_no_its_not_a_traceback(text):
    """The summary's it/s comes from the run's last log.jsonl line: one that is JSON but no
    record (a number, a list: a file damaged by hand or by a disk) or whose ``its`` is no
    number raised AttributeError in the batch's record instead of leaving it/s empty."""
    from dreamtext.batch import _last_its

    assert _last_its(text) is None
    assert _last_its('{"step": 3, "its": 12.5}') == 12.5


@pytest.mark.parametrize(
    ("data", "last"),
    [
        (b'{"step": 1}\n{"step": 2}\n', '{"step": 2}'),
        (b'{"step": 1}\n{"step": 2', '{"step": 2'),  # torn by a kill
        (b'{"step": 1}\r\n{"step": 2}\r\n', '{"step": 2}'),
        (b'{"step": 1}\n\n', ""),
        (b'{"step": 1}\n', '{"step": 1}'),
        (b"", None),
        (b'{"view": "\xff"}\n', None),  # not UTF-8
        (b'{"a": "\xc3\xa9"}\n' + b"x" * 9000 + b"\n", "x" * 9000),  # longer than a block
        (b"y" * 4096 + b"\n", "y" * 4096),  # one line, a block and its newline: its first byte too
        # The first byte of the block read last is inside a character of the line before.
        (b"{" + "\u00e9".encode() * 3001 + b'}\n{"step": 12}\n', '{"step": 12}'),
    ],
)
def test_a_logs_state_is_its_last_line(tmp_path, data, last):
    from dreamtext.batch import _log_state

    (tmp_path / "log.jsonl").write_bytes(data)
    assert _log_state(tmp_path) == last
    assert _log_state(tmp_path / "missing") is None


def test_a_logs_state_reads_its_end_not_the_whole_log(tmp_path):
    """Each line of a batch looks at its run's last log line twice: the whole log was read,
    37 MB for a run of 100,000 records, so a rerun of a batch of finished runs read every log
    in full, twice."""
    from dreamtext.batch import _log_state

    io_file = Path("/proc/self/io")
    if not io_file.is_file():
        pytest.skip("no /proc/self/io to count the bytes read")
    record = json.dumps({"step": 10, "loss": 0.5, "view": "front", "its": 4.0})
    (tmp_path / "log.jsonl").write_text((record + "\n") * 20000, encoding="utf-8")

    def bytes_read() -> int:
        text = io_file.read_text()
        return int(re.search(r"^rchar: (\d+)$", text, re.M).group(1))

    before = bytes_read()
    assert _log_state(tmp_path) == record
    assert bytes_read() - before < 64 * 1024  # the log is ~1.3 MB


@pytest.mark.parametrize("text", ["[]", "7", '{"sentence": 5}', '{"sentence": ""}'])
def test_a_damaged_sentence_record_gives_the_image_line_its_path(tmp_path, text):
    """An image line's prompt in the batch's record is the sentence DreamText learned; a
    sentence.json that is JSON but no record of one raised AttributeError (or put a number in
    the record's prompt) instead of giving the line's image path."""
    from dreamtext.batch import _prompt_of
    from dreamtext.describe import sentence_path

    entry = dreamtext.batch.Entry(1, "image:mug.png", "image", "mug.png", tmp_path / "mug")
    path = sentence_path(entry.workspace)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    assert _prompt_of(entry) == "mug.png"
    path.write_text('{"sentence": "a red mug", "trained_sentence": "a <w1> mug"}', encoding="utf-8")
    assert _prompt_of(entry) == "a <w1> mug"


def test_a_diverged_text_line_is_told_the_command_that_trains_it_alone_again(
    tmp_path, tiny_yaml, monkeypatch, capsys
):
    """A line whose weights overflowed was told "... or start again with --overwrite and another
    --seed": the batch's --overwrite trains every text line of the list again, a_red_cube's
    finished run too. It names its own `dreamtext text ... --overwrite`, which trains that line
    alone; the batch then skips both."""
    root, sphere = tmp_path / "root", tmp_path / "root" / "a_blue_sphere"
    flags = ["--model", "builtin:shapes", "--config", tiny_yaml, "--no-export"]
    both = prompts_file(tmp_path, "a red cube", "a blue sphere")
    assert main(list(map(str, ["batch", both, *flags, "--workspace", root, "--iters", 2]))) == 0
    finished = (root / "a_red_cube" / "checkpoints" / "last.pt").read_bytes()
    one = prompts_file(tmp_path, "a blue sphere", name="one.txt")
    capsys.readouterr()
    with monkeypatch.context() as m:
        m.setattr(trainer, "DIVERGED_AFTER", 3)
        m.setattr(trainer, "DIVERGENCE_WINDOW", 4)
        args = ["batch", one, *flags, "--workspace", root, "--iters", 8, "--lr", "1e30"]
        assert main(list(map(str, args))) == 1
    [line] = [line for line in capsys.readouterr().err.splitlines() if "failed:" in line]
    command = f"dreamtext text 'a blue sphere' --workspace {shlex.quote(str(sphere))} --overwrite"
    assert line.endswith(
        f"or start again with `{command}` (with its other text→3D flags) and another --seed"
    ), line
    again = [*shlex.split(command)[1:], *map(str, flags), "--iters", "8", "--lr", "0.01"]
    assert main([*again, "--seed", "7"]) == 0
    assert status(sphere)["state"] == "finished" and steps(sphere)[-1] == 8
    assert json.loads((sphere / "config.json").read_text())["seed"] == 7
    assert (root / "a_red_cube" / "checkpoints" / "last.pt").read_bytes() == finished
    assert main(list(map(str, ["batch", both, *flags, "--workspace", root, "--iters", 2]))) == 0
    assert [r["status"] for r in rows(root)][-2:] == ["skipped", "skipped"]


def test_a_line_whose_mesh_has_nan_density_is_told_its_own_command_with_a_smaller_lr(
    tmp_path, tiny_yaml, monkeypatch, capsys
):
    """A line whose export at the end found NaN in the density grid (its renders finite) was
    told "train again with a smaller --lr", no command: the batch with --lr resumes every
    unfinished line with it, and this one's field is trained. It names its own `dreamtext text
    ... --overwrite`, which trains it again with the smaller --lr."""
    from test_export import _nan_density_grid

    root, cube = tmp_path / "root", tmp_path / "root" / "a_red_cube"
    config = {**yaml.safe_load(tiny_yaml.read_text()), "export": True}
    options = {"video": False, "resolution": 32}
    tiny_yaml.write_text(yaml.safe_dump({**config, "export_options": options}))
    flags = ["--model", "builtin:shapes", "--config", tiny_yaml, "--iters", 2]
    one = prompts_file(tmp_path, "a red cube")
    with monkeypatch.context() as m:
        _nan_density_grid(m)
        assert main(list(map(str, ["batch", one, *flags, "--workspace", root]))) == 1
    [line] = [line for line in capsys.readouterr().err.splitlines() if "failed:" in line]
    assert line.startswith("batch: line 1 failed: the field's density is NaN at 1 of "), line
    command = f"dreamtext text 'a red cube' --workspace {shlex.quote(str(cube))} --overwrite"
    assert line.endswith(
        f"; start again with `{command}` (with its other text→3D flags) and a smaller --lr "
        "(this run's is 0.02)"
    ), line
    again = [*shlex.split(command)[1:], *map(str, flags), "--lr", "0.01", "--no-export"]
    assert main(again) == 0
    assert status(cube)["state"] == "finished"
    assert json.loads((cube / "config.json").read_text())["lr"] == 0.01


def test_a_diverged_line_is_told_its_own_resume_not_the_batch_with_a_smaller_lr(
    tmp_path, tiny_yaml, monkeypatch, capsys
):
    """A line whose gradients were NaN was told "continue with the batch run again (it resumes
    this line) and a smaller --lr": the batch with --lr resumes every unfinished line with it, and
    said of each finished one "finished with other settings (lr ...); skipped, --overwrite trains
    it again". It names its own `dreamtext text PROMPT --workspace W --resume`, which goes on with
    the smaller --lr alone; the batch then skips both lines with nothing to say."""
    root = tmp_path / "root"
    cube, sphere = root / "a_red_cube", root / "a_blue_sphere"
    path = prompts_file(tmp_path, "a red cube", "a blue sphere")
    batch = ["batch", path, "--model", "builtin:shapes", "--config", tiny_yaml, "--no-export"]
    batch = list(map(str, [*batch, "--workspace", root, "--iters", 4]))
    real_step = trainer.optimizer_step
    with monkeypatch.context() as m:  # a blue sphere's gradients are never finite
        m.setattr(
            trainer,
            "optimizer_step",
            lambda run, finite: real_step(run, finite and run.workspace != sphere),
        )
        m.setattr(trainer, "DIVERGED_AFTER", 3)
        m.setattr(trainer, "DIVERGENCE_WINDOW", 4)
        assert main(batch) == 1
    [line] = [line for line in capsys.readouterr().err.splitlines() if "failed:" in line]
    command = f"dreamtext text 'a blue sphere' --workspace {shlex.quote(str(sphere))} --resume"
    assert f"; continue with `{command}` and a smaller --lr (this run's is " in line, line
    assert "the batch run again" not in line, line
    finished = (cube / "checkpoints" / "last.pt").read_bytes()
    assert main([*shlex.split(command)[1:], "--lr", "0.001"]) == 0
    assert status(sphere)["state"] == "finished" and steps(sphere)[-1] == 4
    capsys.readouterr()
    assert main(batch) == 0
    assert [r["status"] for r in rows(root)][-2:] == ["skipped", "skipped"]
    assert "batch: line" not in capsys.readouterr().err
    assert (cube / "checkpoints" / "last.pt").read_bytes() == finished


def test_an_image_line_is_told_what_trains_it_again_not_the_batchs_overwrite(
    tmp_path, tiny_sd_path, tiny_clip_path, tiny_yaml, monkeypatch, capsys
):
    """An image line whose weights overflowed was told "or start again with --overwrite and
    another --seed", and one asked more descriptor steps after text→3D began "add --overwrite,
    or pass --workspace NEW_FOLDER": the batch's --overwrite refuses image lines, its
    --workspace is the list's root, and `image --overwrite` keeps the seed that trained the
    descriptor. The first is told to continue with its own `dreamtext image IMAGE --workspace W`
    and a smaller --lr (the batch run again with it changed every line it resumed), the second
    the line's own `dreamtext image ... --overwrite`; both then finish."""
    two_cube_images(tmp_path)
    path = prompts_file(tmp_path, "image:red_cube.png")
    root, cube = tmp_path / "root", tmp_path / "root" / "red_cube"
    flags = [
        "--model", tiny_sd_path, "--clip", tiny_clip_path, "--config", tiny_yaml, "--nouns",
        tmp_path / "nouns.txt", "--adjectives", tmp_path / "adjectives.txt", "--max-words", "2",
    ]  # fmt: skip
    flags = list(map(str, flags))
    batch = ["batch", str(path), *flags, "--workspace", str(root)]
    assert main([*batch, "--descriptor-iters", "3", "--iters", "2"]) == 0
    capsys.readouterr()
    with monkeypatch.context() as m:
        m.setattr(trainer, "DIVERGED_AFTER", 3)
        m.setattr(trainer, "DIVERGENCE_WINDOW", 4)
        assert main([*batch, "--descriptor-iters", "3", "--iters", "8", "--lr", "1e30"]) == 1
    [line] = [line for line in capsys.readouterr().err.splitlines() if "failed:" in line]
    assert "--seed" not in line and "--overwrite" not in line, line
    image = shlex.quote(str(tmp_path / "red_cube.png"))
    goes_on = f"dreamtext image {image} --workspace {shlex.quote(str(cube))}"
    assert line.endswith(
        f"continue from it with `{goes_on}` and a smaller --lr (this run's is 1e+30)"
    ), line
    assert main([*shlex.split(goes_on)[1:], "--iters", "4", "--lr", "0.01"]) == 0
    assert status(cube)["state"] == "finished" and steps(cube)[-1] == 4

    assert main([*batch, "--descriptor-iters", "4", "--iters", "6"]) == 1
    [line] = [line for line in capsys.readouterr().err.splitlines() if "failed:" in line]
    command = f"dreamtext image {image} --workspace {shlex.quote(str(cube))} --overwrite"
    assert line.endswith(f"run `{command}` (with the batch's other flags)"), line
    again = [*shlex.split(command)[1:], *flags, "--descriptor-iters", "4", "--iters", "6"]
    assert main(again) == 0
    assert json.loads(sentence_path(cube).read_text())["descriptor_iters"] == 4
    assert status(cube)["state"] == "finished" and steps(cube)[-1] == 6
    assert main([*batch, "--descriptor-iters", "4", "--iters", "6"]) == 0
    assert rows(root)[-1]["status"] == "skipped"


# ----------------------------------------------------------------------------------------------
# batch --status


def tree(root):
    """Every path under ``root`` with its bytes and mtime: what a read-only command must leave."""
    return {
        p: (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def held_lock(workspace, **info):
    """``workspace``'s batch lock as a live worker of this process holds it (``info`` over
    that record)."""
    from dreamtext.processes import this_process

    record = {**this_process(), "started": "2026-01-01T00:00:00+00:00", "slurm": "88_1"}
    record |= {"token": uuid.uuid4().hex, "refresh_s": 150.0, **info}
    dreamtext.batch.lock_path(workspace).write_text(json.dumps(record))


def status_row_while_another_process_locks(run, path, root, capsys) -> str:
    """Line 1's row of `batch PATH --status` while another process holds ``run``'s own lock
    (the one its `dreamtext text` takes), as a run of another machine sharing the folder does."""
    from dreamtext.processes import LOCK_NAME

    (run / LOCK_NAME).write_text("")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1]); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
         str(run / LOCK_NAME)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        args = ["batch", path, *BUILTIN, "--workspace", root, "--status"]
        assert main(list(map(str, args))) == 1
        return status_rows(capsys)["1"]
    finally:
        holder.kill()
        holder.wait()


def five_states(tmp_path):
    """A list of five lines under ``root``: finished, running (its lock held), interrupted at
    step 12 with a checkpoint, failed (status.json), not started; its path and root."""
    lines = ["a red cube", "a blue cube", "a green cube", "a red sphere", "a blue sphere"]
    path = prompts_file(tmp_path, *lines)
    root = tmp_path / "root"
    shapes_run(root / "a_red_cube", "a red cube", 20)
    shapes_run(root / "a_blue_cube", "a blue cube", 4)
    held_lock(root / "a_blue_cube")
    shapes_run(root / "a_green_cube", "a green cube", 12)
    shapes_run(root / "a_red_sphere", "a red sphere", 7)
    failed = {"state": "failed", "step": 7, "error": "RuntimeError: the field overflowed"}
    (root / "a_red_sphere" / "status.json").write_text(json.dumps(failed))
    (root / "batch.jsonl").write_text("")
    return path, root


def test_status_counts_every_line_by_what_its_run_recorded_and_writes_nothing(tmp_path, capsys):
    path, root = five_states(tmp_path)
    before = tree(root)
    assert main(list(map(str, ["batch", path, *BUILTIN, "--workspace", root, "--status"]))) == 1
    assert tree(root) == before
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"{path}: 5 lines under {root}: 1 finished, 1 running, 1 interrupted, 1 failed, "
        "1 not started"
    )
    rows = {line.split()[0]: line for line in out[2:7]}
    assert "1" not in rows  # a finished line needs nothing
    claimed = r"2 +running +a_blue_cube +claimed by \S+ pid \d+ \(SLURM task 88_1\)"
    assert re.match(claimed, rows["2"]), rows["2"]
    green = shlex.quote(str(root / "a_green_cube"))
    assert rows["3"].split()[:4] == ["3", "interrupted", "a_green_cube", "step"], rows["3"]
    assert rows["3"].endswith(f"dreamtext text 'a green cube' --workspace {green} --resume")
    assert "; resumes" in rows["3"] and "no checkpoint" not in rows["3"], rows["3"]
    assert "RuntimeError: the field overflowed" in rows["4"]
    red_sphere = shlex.quote(str(root / "a_red_sphere"))
    assert rows["4"].endswith(f"'a red sphere' --workspace {red_sphere} --resume"), rows["4"]
    sphere = shlex.quote(str(root / "a_blue_sphere"))
    assert rows["5"].endswith(f"dreamtext text 'a blue sphere' --workspace {sphere}"), rows["5"]


def run_file_reads(monkeypatch):
    """A Counter, filled as the block's code reads files: (run folder, file name) of every
    ``config.json`` and ``status.json`` read."""
    reads = Counter()
    read_text = Path.read_text

    def counting(path, *args, **kwargs):
        if path.name in ("config.json", "status.json"):
            reads[path.parent.name, path.name] += 1
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counting)
    return reads


def test_status_reads_each_runs_config_json_twice_and_its_status_json_once(
    tmp_path, monkeypatch, capsys
):
    """Whose run a folder holds, its settings, finished?, resumable?: each question read the
    run's config.json again (8 to 11 reads of each, 2 to 3 of status.json); one status reads
    each file once for all of them (runfiles.read_once), config.json twice (whose run it is,
    then the settings to resolve), and a third time for a line the batch would resume from
    its checkpoint (interrupted, failed), whose recorded settings the row compares with the
    batch's (batch.resumed_with_other_settings): a third read of those few rather than
    holding every run's settings (184 MB more for 9,000 runs)."""
    path, root = five_states(tmp_path)
    reads = run_file_reads(monkeypatch)
    assert main(list(map(str, ["batch", path, *BUILTIN, "--workspace", root, "--status"]))) == 1
    runs = [name for name in os.listdir(root) if (root / name).is_dir()]
    assert len(runs) == 4
    resumed = {"a_green_cube", "a_red_sphere"}
    for name in runs:
        assert reads[name, "config.json"] == 2 + (name in resumed), (name, reads)
        assert reads[name, "status.json"] == 1, (name, reads)


def test_a_batch_reads_a_finished_lines_config_json_five_times_at_most(
    tmp_path, monkeypatch, capsys
):
    """The batch's start asks the same questions of every run as the status (14 reads of a
    finished line's config.json in all, the line's skip included); its lines' own looks read
    afresh, after the start's block: a worker may have written the file meanwhile."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    shapes_run(root / "a_red_cube", "a red cube", 20)
    reads = run_file_reads(monkeypatch)
    assert main(list(map(str, ["batch", path, *BUILTIN, "--workspace", root]))) == 0
    assert reads["a_red_cube", "config.json"] <= 5, reads


def test_read_once_reads_a_run_again_after_its_block(tmp_path):
    from dreamtext.runfiles import read_once

    run = shapes_run(tmp_path / "a_red_cube", "a red cube", 12)
    with read_once():
        assert read_status(run)["step"] == 12
        (run / "status.json").write_text(json.dumps({"state": "interrupted", "step": 13}))
        assert read_status(run)["step"] == 12  # one pass sees one state of the run
    assert read_status(run)["step"] == 13


def test_status_exits_0_once_every_line_is_finished_and_a_higher_iters_unfinishes_it(
    tmp_path, capsys
):
    """The flags decide "finished" as the batch's would: a run finished at 20 steps is one to
    continue for --iters 30, which the batch trains on."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    from dreamtext.checkpoint import RUN_KEYS, save_checkpoint

    save_checkpoint(
        shapes_run(root / "a_red_cube", "a red cube", 20), {k: {} for k in RUN_KEYS} | {"step": 20}
    )
    status = ["batch", str(path), *BUILTIN[:2], "--workspace", str(root), "--status"]
    assert main([*status, "--iters", "20"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{path}: 1 line under {root}: 1 finished"]
    # No --iters: the run keeps its own 20, not the built-in preset's 1000, as the batch reads it.
    assert main(status) == 0
    capsys.readouterr()
    assert main([*status, "--iters", "30"]) == 1
    row = capsys.readouterr().out.splitlines()[2]
    assert "to continue  a_red_cube  finished at step 20, short of --iters 30" in row, row
    assert row.endswith("--resume")


def test_status_reads_a_lock_whose_process_is_gone_as_an_interrupted_line(tmp_path, capsys):
    """A worker killed (kill -9, the out-of-memory killer) leaves its lock: the batch takes it
    over at once (WorkspaceLock.stale_reason), so the line is not running."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    shapes_run(root / "a_red_cube", "a red cube", 12)
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    held_lock(root / "a_red_cube", pid=gone.pid)
    args = ["batch", path, *BUILTIN, "--workspace", root, "--status"]
    assert main(list(map(str, args))) == 1
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("1 ")]
    assert "interrupted" in row and f"its process {gone.pid} on" in row, row


def test_status_names_a_line_that_failed_before_its_run_wrote_anything(tmp_path, capsys):
    """Its only record is batch.jsonl's, whose newest attempt of the line failed."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    root.mkdir()
    record = {"workspace": "a_red_cube", "status": "failed", "error": "OSError: no such model"}
    skipped = {"workspace": "a_red_cube", "status": "skipped", "error": "claimed by x"}
    (root / "batch.jsonl").write_text(json.dumps(record) + "\n" + json.dumps(skipped) + "\n")
    assert main(list(map(str, ["batch", path, *BUILTIN, "--workspace", root, "--status"]))) == 1
    out = capsys.readouterr().out
    assert "1 failed" in out and "OSError: no such model" in out


def status_rows(capsys):
    """The rows of a status's table, by line number."""
    return {
        line.split()[0]: line
        for line in capsys.readouterr().out.splitlines()
        if line.split() and line.split()[0].isdigit()
    }


def test_status_reads_a_copied_running_run_as_the_batch_does(tmp_path, capsys):
    """A folder copied while its run ran: its status.json names a live process of this machine,
    which runs the original, and no one holds the copy's own lock: the batch takes the line
    (runfiles.running_elsewhere), which the status called running (its own test, run_alive,
    asked the process alone). Both decide by batch.look_at_line now."""
    from dreamtext.processes import BOOT_ID, HOST, LOCK_NAME, PID_NAMESPACE, process_start

    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    run = shapes_run(root / "a_red_cube", "a red cube", 12)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {"host": HOST, "pid": sleeper.pid, "pid_start": process_start(sleeper.pid)}
        record |= {"pid_ns": PID_NAMESPACE, "boot_id": BOOT_ID}
        (run / "status.json").write_text(json.dumps({"state": "running", "step": 12, **record}))
        (run / LOCK_NAME).write_text(json.dumps(record))  # copied, held by no one
        from dreamtext.runfiles import running_elsewhere

        assert running_elsewhere(read_status(run), run) is None  # the batch trains it
        args = ["batch", path, *BUILTIN, "--workspace", root, "--status"]
        assert main(list(map(str, args))) == 1
        row = status_rows(capsys)["1"]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert row.split()[1] == "interrupted", row
    assert f"its process {sleeper.pid} on {HOST} holds no lock" in row, row


def test_status_reads_a_run_of_a_live_process_here_without_a_lock_file_as_running(tmp_path, capsys):
    """A run whose status.json names a live process of this machine, on a file system without
    locks (no lock file to ask): its start refuses a second run of the folder, so the line is
    running, by that process, with its progress."""
    from dreamtext.processes import BOOT_ID, HOST, PID_NAMESPACE, process_start

    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    run = shapes_run(root / "a_red_cube", "a red cube", 12)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = {"host": HOST, "pid": sleeper.pid, "pid_start": process_start(sleeper.pid)}
        record |= {"pid_ns": PID_NAMESPACE, "boot_id": BOOT_ID}
        running = {"state": "running", "step": 12, "iters": 20, **record}
        (run / "status.json").write_text(json.dumps(running))
        args = ["batch", path, *BUILTIN, "--workspace", root, "--status"]
        assert main(list(map(str, args))) == 1
        row = status_rows(capsys)["1"]
    finally:
        sleeper.kill()
        sleeper.wait()
    expected = rf"1 +running +a_red_cube +process {sleeper.pid} on this machine, step 12 of 20"
    assert re.fullmatch(expected, row), row


def test_status_reads_a_run_whose_own_lock_another_process_holds_as_running(tmp_path, capsys):
    """Another machine's `dreamtext text` of the folder (status.json running, its host's): its
    run's lock, held (where the file system's locks reach across machines), makes the batch
    skip the line (the run's start refuses it); the status said interrupted, "its process 4242
    is gone", a process it cannot see."""

    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    run = shapes_run(root / "a_red_cube", "a red cube", 12)
    running = {"state": "running", "step": 12, "iters": 20, "host": "node-b", "pid": 4242}
    (run / "status.json").write_text(json.dumps(running))
    row = status_row_while_another_process_locks(run, path, root, capsys)
    assert row.split()[1] == "running", row
    assert "process 4242 on node-b, step 12 of 20" in row, row


def test_status_makes_a_lines_own_command_only_for_lines_that_show_one(
    tmp_path, monkeypatch, capsys
):
    """line_again (a look at the line's checkpoints) was made before the line's state was
    known, and thrown away for a running line."""
    import dreamtext.batchstatus

    path, root = five_states(tmp_path)
    made = []
    real = dreamtext.batchstatus.line_again
    monkeypatch.setattr(
        dreamtext.batchstatus, "line_again", lambda e, fresh: made.append(e.line) or real(e, fresh)
    )
    assert main(list(map(str, ["batch", path, *BUILTIN, "--workspace", root, "--status"]))) == 1
    assert sorted(made) == [3, 4, 5]  # interrupted, failed, not started: not 2, running


def test_status_shows_a_line_with_an_unreadable_config_json_as_failed_and_goes_on(tmp_path, capsys):
    """Its config.json not JSON, or holding a value this dreamtext refuses: the status stopped
    at it (exit 2, "line 2 (...): config field 'seed' must be int"). Now that line is failed,
    its file and what is wrong with it named, and the other lines shown: as the batch, which
    fails both lines and trains the others."""
    path, root = five_states(tmp_path)
    (root / "a_green_cube" / "config.json").write_text("{not json")
    recorded = json.loads((root / "a_red_sphere" / "config.json").read_text())
    (root / "a_red_sphere" / "config.json").write_text(json.dumps({**recorded, "seed": "x"}))
    assert main(list(map(str, ["batch", path, *BUILTIN, "--workspace", root, "--status"]))) == 1
    rows = status_rows(capsys)
    green = root / "a_green_cube" / "config.json"
    assert rows["3"].split()[1] == "failed", rows["3"]
    assert f"{green} is unreadable; move that folder away and run the batch again" in rows["3"]
    assert rows["4"].split()[1] == "failed", rows["4"]
    assert "config field 'seed' must be int, got 'x'" in rows["4"], rows["4"]
    assert rows["4"].endswith("to train the line anew, and run the batch again"), rows["4"]
    assert "line 4 (" not in rows["4"], rows["4"]  # the row is line 4's: said once
    assert rows["5"].split()[1:3] == ["not", "started"] and "running" in rows["2"]


def test_a_batch_fails_a_line_whose_config_json_is_unreadable_and_trains_the_others(
    tmp_path, capsys
):
    """What the status says of that line (failed, the file named) is what the batch does."""
    path = prompts_file(tmp_path, "a red cube", "a blue cube")
    root = tmp_path / "root"
    run = shapes_run(root / "a_red_cube", "a red cube", 12)
    (run / "config.json").write_text("{not json")
    assert main(list(map(str, ["batch", path, *BUILTIN, "--workspace", root]))) == 1
    err = capsys.readouterr().err
    assert f"batch: line 1 failed: {run / 'config.json'} is unreadable; move that folder" in err
    assert read_status(root / "a_blue_cube")["state"] == "finished"


def refused_run_configs(root):
    """Two runs under ``root`` whose config.json holds what this dreamtext refuses: line 1's
    (``a red cube``, interrupted at step 12) a seed that is not an int, line 2's (``a green
    cube``, finished) a field a later dreamtext wrote; their folders."""
    red = shapes_run(root / "a_red_cube", "a red cube", 12)
    green = shapes_run(root / "a_green_cube", "a green cube", 20)
    for run, change in ((red, {"seed": "x"}), (green, {"future_setting": 1})):
        recorded = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**recorded, **change}))
    return red, green


def test_a_batch_fails_a_line_whose_runs_config_json_holds_a_refused_value_and_trains_the_rest(
    tmp_path, capsys
):
    """A line's own run whose config.json holds a value this dreamtext refuses refused the
    whole list before anything trained (exit 2, "line 1 (...): config field 'seed' must be
    int"): 499 good lines waited for one bad record. Now each such line fails at its turn with
    its one line (the file and the fix), finished or not, its run untouched; the others train,
    and the batch ends 1, as for any failed line."""
    path = prompts_file(tmp_path, "a red cube", "a green cube", "a blue cube")
    root = tmp_path / "root"
    red, green = refused_run_configs(root)
    kept = run_files(red), run_files(green)
    assert main(list(map(str, ["batch", path, *BUILTIN, "--workspace", root]))) == 1
    err = capsys.readouterr().err
    said_red = (
        "config field 'seed' must be int, got 'x' (in the workspace's config.json); correct "
        f"{red / 'config.json'}, or move {red} away to train the line anew, and run the batch "
        "again"
    )
    assert f"batch: line 1 failed: {said_red}\n" in err, err
    said_green = re.search(r"batch: line 2 failed: (.*)\n", err)[1]
    assert said_green.startswith("unknown config field 'future_setting' in the workspace's")
    assert said_green.endswith(f"correct {green / 'config.json'}, or move {green} away to train "
                               "the line anew, and run the batch again")  # fmt: skip
    records = {r["line"]: r for r in rows(root)}
    assert (records[1]["status"], records[1]["error"]) == ("failed", said_red)
    assert (records[2]["status"], records[2]["error"]) == ("failed", said_green)
    assert records[3]["status"] == "finished"
    assert read_status(root / "a_blue_cube")["state"] == "finished"
    assert (run_files(red), run_files(green)) == kept  # nor a lock left beside them
    assert sorted(p.name for p in root.glob("*.lock")) == []


def test_status_shows_a_line_the_batch_fails_for_its_runs_config_json_in_the_batchs_words(
    tmp_path, capsys
):
    """The status said such a line was failed and that "the batch refuses the list for it";
    the batch now fails that line alone: the row says what the batch's line says (one
    decision, look_at_line's), and the line's own command is not offered (it is refused too)."""
    path = prompts_file(tmp_path, "a red cube", "a green cube", "a blue cube")
    root = tmp_path / "root"
    red, green = refused_run_configs(root)
    assert main(list(map(str, ["batch", path, *BUILTIN, "--workspace", root, "--status"]))) == 1
    shown = status_rows(capsys)
    said_red = (
        "config field 'seed' must be int, got 'x' (in the workspace's config.json); correct "
        f"{red / 'config.json'}, or move {red} away to train the line anew, and run the batch "
        "again"
    )
    assert shown["1"].split()[1] == "failed" and "refuses the list" not in shown["1"]
    assert shown["1"].endswith(f"  {said_red}"), shown["1"]
    assert shown["2"].split()[1] == "failed" and "future_setting" in shown["2"]
    assert shown["2"].rstrip().endswith(f"or move {green} away to train the line anew, and run "
                                        "the batch again")  # fmt: skip
    assert shown["3"].split()[1:3] == ["not", "started"]


def test_a_line_refused_for_its_runs_config_json_stops_neither_its_share_nor_the_others(
    tmp_path, monkeypatch, capsys
):
    """A job array of 2 tasks over 3 lines, line 1's run's config.json refused: its task
    (lines 1 and 3) refused its whole share (exit 2), nothing trained. Now it fails line 1,
    trains line 3 and ends 1; the other share (--shard 1/2, by hand) trains line 2, ends 0."""
    path = prompts_file(tmp_path, "a red cube", "a blue cube", "a green sphere")
    root = tmp_path / "root"
    red = shapes_run(root / "a_red_cube", "a red cube", 12)
    recorded = json.loads((red / "config.json").read_text())
    (red / "config.json").write_text(json.dumps({**recorded, "seed": "x"}))
    args = ["batch", path, *BUILTIN, "--workspace", root]
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    assert main(list(map(str, args))) == 1
    assert "batch: line 1 failed: config field 'seed' must be int" in capsys.readouterr().err
    assert read_status(root / "a_green_sphere")["state"] == "finished"
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    monkeypatch.delenv("SLURM_ARRAY_TASK_COUNT")
    assert main(list(map(str, [*args, "--shard", "1/2"]))) == 0
    assert read_status(root / "a_blue_cube")["state"] == "finished"
    assert {r["line"]: r["status"] for r in rows(root)} == {
        1: "failed",
        2: "finished",
        3: "finished",
    }


def test_status_names_the_settings_a_lines_run_keeps_that_the_batch_refuses_the_list_for(
    tmp_path, capsys
):
    """A --seed other than an interrupted run's: the batch refuses the list (its run keeps its
    seed); the status showed the line as interrupted, resuming, and said nothing of it."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    shapes_run(root / "a_red_cube", "a red cube", 12)
    args = ["batch", path, *BUILTIN, "--workspace", root, "--status", "--seed", "7"]
    assert main(list(map(str, args))) == 1
    row = status_rows(capsys)["1"]
    assert "the batch refuses the list for it: seed 0 → 7 (its run keeps them)" in row, row


def test_status_names_the_settings_the_batch_resumes_a_line_with_that_it_only_warns_of(
    tmp_path, capsys
):
    """--lr 0.01 --guidance 50 --h 48 over runs of lr 0.02, guidance 4, 32 px: the batch resumes
    the interrupted one with them from its last checkpoint, and exports the trained one without
    its mesh, which they do not apply to, warning of each; the status said nothing of either,
    and its rows offered the lines' own `--resume`. Each row names them now, three and a count,
    the same settings as the batch's warning."""
    path = prompts_file(tmp_path, "a red cube", "a blue cube")
    root = tmp_path / "root"
    shapes_run(root / "a_red_cube", "a red cube", 12)
    blue = shapes_run(root / "a_blue_cube", "a blue cube", 20)
    shutil.rmtree(blue / "mesh")
    (blue / "checkpoints").mkdir()
    (blue / "checkpoints" / "last.pt").write_bytes(b"step 20")
    flags = ["--lr", "0.01", "--guidance", "50", "--h", "48"]
    args = ["batch", path, *BUILTIN, "--workspace", root, *flags]
    assert main(list(map(str, [*args, "--status"]))) == 1
    shown = status_rows(capsys)
    changed = "lr 0.02 → 0.01, h 32 → 48, w 32 → 48 and 1 more"
    assert f"; resumes; other settings from its last checkpoint on: {changed}  " in shown["1"]
    assert (
        f"trained, without its mesh; only exported, so these do not apply: {changed}  "
        in (shown["2"])
    )
    [entry] = read_prompts(prompts_file(tmp_path, "a red cube", name="one.txt"), root)
    overrides = {"iters": 20, "lr": 0.01, "h": 48, "guidance": {"guidance_scale": 50.0}}
    fresh = dreamtext.batch.entry_config(entry, overrides, None, None)
    cfg, _, _ = dreamtext.batch.own_run_config(entry, fresh, overrides, None, None)
    dreamtext.batch.warn_resuming_with_other_settings(entry, cfg)
    said = capsys.readouterr().err
    assert "(lr 0.02 → 0.01, h 32 → 48, w 32 → 48, guidance.guidance_scale 4.0 → 50.0)" in said


def test_status_names_no_refusal_for_a_run_trained_anew_or_for_a_line_without_conflicts(
    tmp_path, capsys
):
    """--seed 7 --iters 30 over a run of seed 0 finished at 20 steps without a checkpoint: the
    batch trains it again from scratch with the batch's settings (nothing of it to keep), so it
    does not refuse the list for it and the row says nothing of a refusal; a failed run with a
    checkpoint does refuse it, and its row says so; a line whose run keeps nothing the batch
    asks otherwise says nothing."""
    path = prompts_file(tmp_path, "a red cube", "a blue cube", "a green cube")
    root = tmp_path / "root"
    shapes_run(root / "a_red_cube", "a red cube", 20)  # finished, no checkpoint kept
    shapes_run(root / "a_blue_cube", "a blue cube", 12)
    failed = {"state": "failed", "step": 12, "error": "RuntimeError: the field overflowed"}
    (root / "a_blue_cube" / "status.json").write_text(json.dumps(failed))
    status = ["batch", path, *BUILTIN, "--workspace", root, "--status", "--iters", "30"]
    seven = [*status, "--seed", "7"]
    assert main(list(map(str, seven))) == 1
    rows = status_rows(capsys)
    assert rows["1"].split()[1:3] == ["to", "continue"], rows["1"]
    assert "no checkpoint: trains again" in rows["1"], rows["1"]
    assert "refuses" not in rows["1"], rows["1"]
    assert rows["2"].split()[1] == "failed", rows["2"]
    refused = "the field overflowed; the batch refuses the list for it: seed 0 → 7"
    assert refused in rows["2"], rows["2"]
    shapes_run(root / "a_green_cube", "a green cube", 12)
    assert main(list(map(str, status))) == 1
    assert not [row for row in status_rows(capsys).values() if "refuses" in row]


def test_status_of_a_run_whose_status_json_cannot_be_read_says_so(tmp_path, capsys):
    """A status.json cut short (a disk full as it was written): the line is interrupted, and
    the row says the file cannot be read, not that there is none."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    (shapes_run(root / "a_red_cube", "a red cube", 12) / "status.json").write_text('{"sta')
    assert main(list(map(str, ["batch", path, *BUILTIN, "--workspace", root, "--status"]))) == 1
    row = status_rows(capsys)["1"]
    assert row.split()[1] == "interrupted", row
    assert "status.json cannot be read (its resume writes it anew); resumes" in row, row


def test_status_reads_a_line_whose_batch_lock_cannot_be_read_as_running(
    tmp_path, capsys, monkeypatch
):
    """Another user's worker holds the line's lock, which this user cannot read (umask 077):
    the line is claimed, by a holder it cannot name, as a worker of the batch leaves it."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    shapes_run(root / "a_red_cube", "a red cube", 12)
    held_lock(root / "a_red_cube")

    def unreadable(cls, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(dreamtext.batch.WorkspaceLock, "read", classmethod(unreadable))
    assert main(list(map(str, ["batch", path, *BUILTIN, "--workspace", root, "--status"]))) == 1
    row = status_rows(capsys)["1"]
    assert re.fullmatch(r"1 +running +a_red_cube +a_red_cube\.lock cannot be read", row), row


def test_status_shows_no_progress_of_a_stopped_run_whose_own_lock_another_process_holds(
    tmp_path, capsys
):
    """Another process holds the run's own lock, its status.json an earlier, stopped run's
    (interrupted at step 12): the line is running, by a process the status cannot name, and
    the stopped run's step is not shown as that process's progress. The line's detail names
    no line of the list either, where the status reads a config.json it refuses."""

    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    run = shapes_run(root / "a_red_cube", "a red cube", 12)
    row = status_row_while_another_process_locks(run, path, root, capsys)
    assert re.fullmatch(r"1 +running +a_red_cube +another process", row), row


def test_status_with_overwrite_is_refused_in_one_line(tmp_path, capsys):
    path = prompts_file(tmp_path, "a red cube")
    args = ["batch", path, "--workspace", tmp_path / "root", "--status", "--overwrite"]
    assert main(list(map(str, args))) == 2
    [err] = capsys.readouterr().err.splitlines()
    assert err.startswith("dreamtext: error: give --status") and "--overwrite" in err
    assert not (tmp_path / "root").exists()


def table_rows(out):
    """The rows of ``batch --status``'s table (after its counts and header), by line number."""
    return {line.split()[0]: line for line in out.splitlines()[2:] if line[:1].isdigit()}


def test_status_fails_a_line_whose_folder_is_a_file_or_holds_another_prompts_run(
    tmp_path, capsys, monkeypatch
):
    """The batch fails both lines before anything, and the row says it as the batch does
    (:func:`dreamtext.batch.look_at_line`'s refusal): a file where the run folder goes, and a
    folder holding another prompt's run (one made there after the list named it); moving it away
    mends either, and the batch again goes on: no command of the line's own."""
    import dreamtext.batchstatus

    path = prompts_file(tmp_path, "a red cube", "a blue cube")
    root = tmp_path / "root"
    root.mkdir()
    entries = dreamtext.batch.read_prompts(path, root)
    monkeypatch.setattr(dreamtext.batchstatus, "read_prompts", lambda *_: entries)
    (root / "a_red_cube").write_text("")
    ran(root / "a_blue_cube", "a green cube")
    assert main(list(map(str, ["batch", path, *BUILTIN, "--workspace", root, "--status"]))) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"{path}: 2 lines under {root}: 2 failed", out
    rows = table_rows(out)
    red = re.escape(str(root / "a_red_cube"))
    pattern = rf"1 +failed +a_red_cube +{red} is a file, where this prompt's run folder goes; "
    assert re.fullmatch(pattern + "move it away and run the batch again", rows["1"]), rows
    blue = re.escape(str(root / "a_blue_cube"))
    moved = rf"2 +failed +a_blue_cube +{blue} holds a run of 'a green cube'; move that folder away"
    assert re.fullmatch(moved + " and run the batch again", rows["2"]), rows["2"]


def test_status_shows_a_claimed_lines_progress_only_from_its_running_status(tmp_path, capsys):
    """A held lock's line is running; its status.json's step is shown where that file is the
    worker's own (running), not where it is an earlier, stopped run's (interrupted at 4)."""
    path = prompts_file(tmp_path, "a red cube", "a blue cube")
    root = tmp_path / "root"
    for name, prompt in (("a_red_cube", "a red cube"), ("a_blue_cube", "a blue cube")):
        shapes_run(root / name, prompt, 4)
        held_lock(root / name)
    running = {"state": "running", "step": 9, "iters": 20, "phase": "train"}
    (root / "a_blue_cube" / "status.json").write_text(json.dumps(running))
    assert main(list(map(str, ["batch", path, *BUILTIN, "--workspace", root, "--status"]))) == 1
    rows = table_rows(capsys.readouterr().out)
    assert re.search(r"running +a_red_cube +claimed by .*, refreshed \d+ s ago$", rows["1"])
    assert rows["2"].endswith(" s ago; step 9 of 20 (train)"), rows["2"]


def another_machines_run(workspace, prompt, step):
    """``workspace`` as a run of ``prompt`` that process 4242 of machine node17 runs to 40 steps
    (its status.json), interrupted before at ``step`` with a checkpoint (:func:`shapes_run`)."""
    from dreamtext.processes import this_process

    shapes_run(workspace, prompt, step)
    node17 = {**this_process(), "host": "node17", "boot_id": "f" * 32, "pid": 4242}
    status = {**node17, "state": "running", "step": step + 1, "iters": 40, "phase": "train"}
    (workspace / "status.json").write_text(json.dumps(status))
    return node17


def test_status_reads_a_run_another_machine_records_running_without_a_lock_as_the_batch_does(
    tmp_path, capsys
):
    """Its process cannot be looked for from here, and no lock says it runs (a run holds its
    own lock, which reaches across machines where the file system's locks do): the batch
    resumes it, so the line is interrupted, and the row does not call that process gone."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    another_machines_run(root / "a_red_cube", "a red cube", 12)
    assert main(list(map(str, ["batch", path, *BUILTIN, "--workspace", root, "--status"]))) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"{path}: 1 line under {root}: 1 interrupted"
    row = table_rows(out)["1"]
    assert "; its process 4242 on node17 holds no lock; resumes" in row, row
    assert "is gone" not in row, row


def test_status_reads_a_running_status_whose_process_is_gone_as_interrupted(tmp_path, capsys):
    """status.json says running, but its process of this machine is gone (killed without a
    word) and no worker holds the line: it goes on from its checkpoint."""
    from dreamtext.processes import this_process

    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    shapes_run(root / "a_red_cube", "a red cube", 12)
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    status = {**this_process(), "pid": gone.pid, "state": "running", "step": 13}
    (root / "a_red_cube" / "status.json").write_text(json.dumps(status))
    assert main(list(map(str, ["batch", path, *BUILTIN, "--workspace", root, "--status"]))) == 1
    row = table_rows(capsys.readouterr().out)["1"]
    assert row.split()[:3] == ["1", "interrupted", "a_red_cube"], row
    assert f"step 13 of 20; its process {gone.pid} is gone; resumes" in row, row


def test_status_of_a_share_without_lines_says_so_and_exits_0(tmp_path, capsys):
    """--shard 1/2 of a one-line list: the share is empty, which is finished."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    args = ["batch", path, *BUILTIN, "--workspace", root, "--status", "--shard", "1/2"]
    assert main(list(map(str, args))) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{path}: 0 lines under {root}: none in this share"
    ]


@pytest.mark.parametrize(
    ("flags", "state"), [([], "interrupted"), (["--lock-timeout", "3600"], "running")]
)
def test_status_judges_a_late_lock_by_the_lock_timeout_its_workers_take_it_over_after(
    tmp_path, capsys, flags, state
):
    """A live holder's lock not refreshed for 700 s: a worker of the default --lock-timeout
    (600 s) takes it over, so the line is to go on; one of --lock-timeout 3600 leaves it."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    shapes_run(root / "a_red_cube", "a red cube", 12)
    held_lock(root / "a_red_cube")
    late = time.time() - 700
    os.utime(dreamtext.batch.lock_path(root / "a_red_cube"), (late, late))
    args = ["batch", path, *BUILTIN, "--workspace", root, "--status", *flags]
    assert main(list(map(str, args))) == 1
    row = table_rows(capsys.readouterr().out)["1"]
    assert row.split()[:3] == ["1", state, "a_red_cube"], row


def test_status_of_a_run_finished_short_without_a_checkpoint_says_it_trains_again(tmp_path, capsys):
    """Finished at 20 steps with no checkpoint kept, for --iters 30: it starts over."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    shapes_run(root / "a_red_cube", "a red cube", 20)
    args = ["batch", path, *BUILTIN[:2], "--iters", "30", "--workspace", root, "--status"]
    assert main(list(map(str, args))) == 1
    row = table_rows(capsys.readouterr().out)["1"]
    cube = shlex.quote(str(root / "a_red_cube"))
    assert "finished at step 20, short of --iters 30; no checkpoint: trains again" in row, row
    assert row.endswith(f"dreamtext text 'a red cube' --workspace {cube}"), row


def test_status_reads_a_line_whose_stale_lock_its_worker_left_as_interrupted(tmp_path, capsys):
    """node17's worker stopped refreshing its lock two hours ago (the node went down), its
    status.json still running: a worker's claim takes the lock over, so the line is to go on."""
    path = prompts_file(tmp_path, "a red cube")
    root = tmp_path / "root"
    node17 = another_machines_run(root / "a_red_cube", "a red cube", 12)
    held_lock(root / "a_red_cube", **node17)
    hours_ago = time.time() - 7200
    os.utime(dreamtext.batch.lock_path(root / "a_red_cube"), (hours_ago, hours_ago))
    assert main(list(map(str, ["batch", path, *BUILTIN, "--workspace", root, "--status"]))) == 1
    row = table_rows(capsys.readouterr().out)["1"]
    assert row.split()[:3] == ["1", "interrupted", "a_red_cube"], row
    assert "its worker's lock is stale (not refreshed for 72" in row and row.endswith("--resume")


def test_status_names_the_flags_of_each_kind_of_line_a_mixed_list_holds(tmp_path, capsys):
    """An image line's own command takes the batch's other flags, a text line's its text→3D
    ones: the closing line names both, each for its kind."""
    Image.new("RGB", (8, 8), "red").save(tmp_path / "mug.png")
    path = prompts_file(tmp_path, "a red cube", f"image:{tmp_path / 'mug.png'}")
    args = ["batch", path, *BUILTIN, "--workspace", tmp_path / "root", "--status"]
    assert main(list(map(str, args))) == 1
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.endswith(
        "a line's own command, with the batch's other flags for an image line or its other "
        "text→3D flags for a text line, with that line alone"
    ), last
