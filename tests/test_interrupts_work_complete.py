"""A stop signal that lands the moment a command's last file is put in place: between the
rename that puts it there and the mark that the command's work is complete
(:func:`dreamtext.interrupts.rename_completing_work` makes them one step)."""

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from tiny_models import TINY_TRAIN

from dreamtext.cli import main

# A text run of the tiny field whose export is small: its mesh as PLY alone, no turntable.
TINY_EXPORTED = {
    **TINY_TRAIN,
    "preview_every": 0,
    "export": True,
    "export_options": {"resolution": 16, "formats": ["ply"], "video": False},
}
TEXT = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "2"]


def signal_inside_the_rename(
    monkeypatch: pytest.MonkeyPatch, signum: int, puts_in_place: Callable[[str], bool]
) -> list[int]:
    """Make the rename (``os.rename`` or ``os.replace``) whose destination's name
    ``puts_in_place`` accepts send ``signum`` to this process the moment it has renamed, before
    it returns: the earliest a stop can come once the file is in place. Returns the signals
    sent (one at most)."""
    sent: list[int] = []

    def renaming(real: Callable[..., None]) -> Callable[..., None]:
        def rename(source, destination, *args, **kwargs) -> None:
            real(source, destination, *args, **kwargs)
            if not sent and puts_in_place(Path(os.fsdecode(destination)).name):
                sent.append(signum)
                signal.raise_signal(signum)

        return rename

    monkeypatch.setattr(os, "rename", renaming(os.rename))
    monkeypatch.setattr(os, "replace", renaming(os.replace))
    return sent


def the_exports_commit(name: str) -> bool:
    """The rename that commits an export's files (its staged folder, ready to be swapped in)."""
    return name.startswith(".export-ready-")


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_EXPORTED))
    return path


@pytest.fixture
def red_square_and_words(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A red square on a transparent 48 px PNG and a two-noun, two-adjective vocabulary for
    describe: (image, nouns, adjectives)."""
    pixels = np.zeros((48, 48, 4), dtype=np.uint8)
    pixels[12:36, 12:36] = (220, 30, 30, 255)
    image = tmp_path / "red_cube.png"
    Image.fromarray(pixels, "RGBA").save(image)
    nouns, adjectives = tmp_path / "nouns.txt", tmp_path / "adjectives.txt"
    nouns.write_text("cube\nsphere\n")
    adjectives.write_text("red\nblue\n")
    return image, nouns, adjectives


def read_status(workspace: Path) -> dict:
    return json.loads((workspace / "status.json").read_text())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_as_a_runs_export_is_committed_leaves_it_finished(
    tmp_path, tiny_config, monkeypatch, capsys, signum
):
    """A stop inside the rename that commits the run's export: status.json read "interrupted" in
    phase export and the command exited 130, its every file written. Now finished, exit 0."""
    workspace = tmp_path / "run"
    sent = signal_inside_the_rename(monkeypatch, signum, the_exports_commit)
    code = main([*TEXT, "--config", str(tiny_config), "--workspace", str(workspace)])
    out, err = capsys.readouterr()
    assert sent == [signum]
    assert (code, out) == (0, f"{workspace}\n"), err
    assert "interrupted" not in err
    status = read_status(workspace)
    assert (status["state"], status["phase"], status["step"]) == ("finished", "export", 2)
    assert (workspace / "mesh" / "mesh.ply").is_file()
    assert not list(workspace.glob(".export-*"))  # the swap went on to its end


def test_a_stop_as_the_final_preview_of_a_run_without_export_lands_leaves_it_finished(
    tmp_path, tiny_config, monkeypatch, capsys
):
    """--no-export: final.png is the run's last file. A Ctrl-C inside its rename read
    "interrupted" and exited 130. Now finished, exit 0."""
    workspace = tmp_path / "run"
    sent = signal_inside_the_rename(monkeypatch, signal.SIGINT, lambda name: name == "final.png")
    args = [*TEXT, "--config", str(tiny_config), "--workspace", str(workspace), "--no-export"]
    code = main(args)
    out, err = capsys.readouterr()
    assert sent == [signal.SIGINT]
    assert (code, out) == (0, f"{workspace}\n"), err
    assert "interrupted" not in err
    assert (read_status(workspace)["state"], read_status(workspace)["step"]) == ("finished", 2)
    assert (workspace / "previews" / "final.png").is_file()


def test_a_stop_as_dreamtext_exports_files_are_committed_is_exit_0(
    tmp_path, tiny_config, monkeypatch, capsys
):
    """`dreamtext export` stopped inside the rename that commits its files: exit 130 and
    "interrupted", its files in place. Now its summary, exit 0."""
    workspace = tmp_path / "run"
    args = [*TEXT, "--config", str(tiny_config), "--workspace", str(workspace), "--no-export"]
    assert main(args) == 0
    capsys.readouterr()
    sent = signal_inside_the_rename(monkeypatch, signal.SIGTERM, the_exports_commit)
    code = main(["export", "--workspace", str(workspace)])
    out, err = capsys.readouterr()
    assert sent == [signal.SIGTERM]
    assert code == 0, err
    assert "interrupted" not in err and out.startswith(f"exported {workspace} (step 2)")
    assert (workspace / "mesh" / "mesh.ply").is_file()


def test_a_stop_as_describes_sentence_lands_is_exit_0(
    tmp_path, tiny_clip_path, red_square_and_words, monkeypatch, capsys
):
    """`dreamtext describe` stopped inside the rename of its sentence.json: status.json
    "interrupted" and exit 130 with the sentence recorded. Now finished, the sentence printed."""
    image, nouns, adjectives = red_square_and_words
    workspace = tmp_path / "described"
    sent = signal_inside_the_rename(
        monkeypatch, signal.SIGTERM, lambda name: name == "sentence.json"
    )
    args = ["describe", image, "--clip", tiny_clip_path, "--workspace", workspace]
    args += ["--nouns", nouns, "--adjectives", adjectives, "--max-words", 2]
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert sent == [signal.SIGTERM]
    assert code == 0, err
    record = json.loads((workspace / "descriptor" / "sentence.json").read_text())
    assert out == record["sentence"] + "\n"
    assert (read_status(workspace)["state"], read_status(workspace)["phase"]) == (
        "finished",
        "describe",
    )


def test_a_stop_in_a_second_run_inside_one_handler_block_stops_it(tmp_path, monkeypatch):
    """Two runs (``train()``) inside one handler block: the first marked the command's work
    complete at its last file, and a SIGTERM in the second's first step was noted and dropped,
    the second trained to its end. Each run's work starts anew (:func:`more_work`): it stops
    after that step, with its checkpoint."""
    from dreamtext import trainer
    from dreamtext.config import resolve_config
    from dreamtext.interrupts import TrainingInterrupted, sigterm_interrupts

    def config(name: str):
        return resolve_config(
            {
                **TINY_TRAIN,
                "prompt": "a red sphere",
                "workspace": str(tmp_path / name),
                "guidance": {"model": "builtin:shapes"},
                "iters": 3,
                "preview_every": 0,
            }
        )

    real_step, sent = trainer.train_step, []

    def step(run):
        result = real_step(run)
        if Path(run.workspace).name == "second" and not sent:
            sent.append(run.step)
            signal.raise_signal(signal.SIGTERM)
        return result

    monkeypatch.setattr(trainer, "train_step", step)
    with sigterm_interrupts():
        trainer.train(config("first"))
        with pytest.raises(TrainingInterrupted) as stop:
            trainer.train(config("second"))
    assert sent == [1]
    assert stop.value.step == 1
    assert read_status(tmp_path / "second")["state"] == "interrupted"


def test_a_stop_in_a_second_export_inside_one_handler_block_stops_it(
    tmp_path, tiny_config, monkeypatch, capsys
):
    """Two exports (``export_workspace``, as `dreamtext export` calls it) inside one handler
    block: the first marked the work complete as it committed its files, and a SIGTERM while
    the second loaded the run was noted and dropped, the second exported to its end. Each
    export's work starts anew: the second stops there."""
    from dreamtext import export
    from dreamtext.interrupts import sigterm_interrupts

    workspace = tmp_path / "run"
    args = [*TEXT, "--config", str(tiny_config), "--workspace", str(workspace), "--no-export"]
    assert main(args) == 0
    real_read, sent = export.read_exported_checkpoint, []

    def read(folder: Path) -> dict:
        if exported:
            sent.append(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
        return real_read(folder)

    exported: list[int | None] = []
    monkeypatch.setattr(export, "read_exported_checkpoint", read)
    with sigterm_interrupts():
        exported.append(export.export_workspace(workspace, completes_work=True).step)
        with pytest.raises(KeyboardInterrupt):
            exported.append(export.export_workspace(workspace, completes_work=True).step)
    assert (sent, exported) == ([signal.SIGTERM], [2])


def test_a_stop_in_a_second_search_inside_one_handler_block_stops_it(
    tmp_path, tiny_clip_path, red_square_and_words, monkeypatch
):
    """Two searches (``describe(status=True)``, as `dreamtext describe` calls it) inside one
    handler block: the first marked the work complete as its sentence.json landed, and a
    SIGTERM as the second kept its image's copy was noted and dropped, the second searched to
    its end and read "finished". Each search's work starts anew: the second stops there,
    "interrupted", with no sentence."""
    from dreamtext import describe
    from dreamtext.interrupts import sigterm_interrupts

    image, nouns, adjectives = red_square_and_words
    options = describe.DescribeOptions(
        clip=str(tiny_clip_path), nouns=nouns, adjectives=adjectives, max_words=2
    )
    real_copy, sent = describe.keep_source_copy, []

    def keep_copy(image_path, workspace, *args, **kwargs):
        if Path(workspace).name == "second" and not sent:
            sent.append(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
        return real_copy(image_path, workspace, *args, **kwargs)

    monkeypatch.setattr(describe, "keep_source_copy", keep_copy)
    with sigterm_interrupts():
        describe.describe(image, tmp_path / "first", options, status=True)
        with pytest.raises(KeyboardInterrupt):
            describe.describe(image, tmp_path / "second", options, status=True)
    assert sent == [signal.SIGTERM]
    assert read_status(tmp_path / "first")["state"] == "finished"
    assert read_status(tmp_path / "second")["state"] == "interrupted"
    assert not (tmp_path / "second" / "descriptor" / "sentence.json").exists()


def test_a_stop_noted_in_an_ended_block_does_not_stop_a_later_run_outside_one(tmp_path):
    """A stop that came once a block's work was complete is noted (the command ended finished);
    the block ended. A run started later outside any block (Python calling ``train()``, as the
    suite's tests and a notebook's next cell do) took that old note for a stop of its own and
    ended "interrupted after step 0". It trains to its end."""
    from dreamtext import trainer
    from dreamtext.__main__ import work_complete
    from dreamtext.config import resolve_config
    from dreamtext.interrupts import sigterm_interrupts

    with sigterm_interrupts():
        work_complete()
        signal.raise_signal(signal.SIGTERM)  # noted: the work was complete
    cfg = {**TINY_TRAIN, "prompt": "a red sphere", "workspace": str(tmp_path / "run")}
    cfg.update(guidance={"model": "builtin:shapes"}, iters=2, preview_every=0)
    workspace = trainer.train(resolve_config(cfg))
    assert read_status(workspace)["state"] == "finished"
    assert read_status(workspace)["step"] == 2
