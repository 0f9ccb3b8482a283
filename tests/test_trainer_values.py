"""The trainer's per-step choices (shading, lights) against the thesis (ch. 6.1.4) and the
config's documented meaning, for settings other than the defaults."""

import json
import os
import types

import pytest
import torch
from tiny_models import TINY_SIZES, TINY_TRAIN

import dreamtext.trainer as trainer
from dreamtext.cameras import sample_poses
from dreamtext.config import resolve_config
from dreamtext.trainer import light_positions, shading_for_step, train


def test_shading_probs_are_albedo_textureless_lambertian_in_that_order() -> None:
    # config.py: shading_probs = (albedo, textureless, lambertian); all weight on one of them
    # gives only that shading once the albedo epochs are over.
    rng = torch.Generator().manual_seed(0)
    for probs, name in [
        ((1.0, 0.0, 0.0), "albedo"),
        ((0.0, 1.0, 0.0), "textureless"),
        ((0.0, 0.0, 1.0), "lambertian"),
    ]:
        cfg = resolve_config({"prompt": "x", "albedo_epochs": 0, "shading_probs": list(probs)})
        assert {shading_for_step(s, cfg, rng) for s in range(1, 50)} == {name}


def test_albedo_epochs_count_hundred_step_epochs_from_step_one() -> None:
    # An epoch is 100 iterations: albedo_epochs 2 is steps 1-200 in albedo, step 201 shaded.
    cfg = resolve_config({"prompt": "x", "albedo_epochs": 2, "shading_probs": [0.0, 1.0, 0.0]})
    rng = torch.Generator().manual_seed(0)
    assert shading_for_step(200, cfg, rng) == "albedo"
    assert shading_for_step(201, cfg, rng) == "textureless"


def test_light_jitter_is_the_standard_deviation_of_the_light_around_the_camera() -> None:
    rng = torch.Generator().manual_seed(0)
    poses = sample_poses(20000, generator=torch.Generator().manual_seed(1))
    offsets = light_positions(poses, 0.25, rng) - poses.eye
    assert offsets.mean(dim=0).abs().max() < 0.01
    torch.testing.assert_close(offsets.std(dim=0), torch.full((3,), 0.25), atol=0.01, rtol=0)


def _tiny(tmp_path, model, **overrides):
    return resolve_config(
        {
            **TINY_TRAIN,
            "prompt": "a red sphere",
            "workspace": str(tmp_path / "run"),
            "guidance": {"model": str(model)},
            "preview_every": 0,
            **overrides,
        }
    )


def _records(workspace):
    return [json.loads(line) for line in (workspace / "log.jsonl").read_text().splitlines()]


def test_a_runs_log_lines_hold_the_total_loss_and_its_last_step(
    tmp_path, tiny_sd_path, monkeypatch
):
    # loss = L_SDS + λ_e L_entropy + λ_o L_opacity + λ_n L_orientation + λ_d L_density (the
    # trainer's step), and samples_per_ray is per ray; the guidance sees step k of N as
    # progress k / N; lines every log_every steps and at the last one.
    real = trainer.build_parts
    ratios = []

    def build(cfg, device):
        parts = real(cfg, device)
        inner = parts.guidance.sds_loss

        def sds_loss(images, labels, step_ratio):
            ratios.append(step_ratio)
            return inner(images, labels, step_ratio)

        parts.guidance.sds_loss = sds_loss
        return parts

    monkeypatch.setattr(trainer, "build_parts", build)
    lambdas = {"entropy": 0.5, "opacity": 0.25, "orientation": 2.0, "density": 3.0}
    cfg = _tiny(
        tmp_path,
        tiny_sd_path,
        iters=3,
        log_every=2,
        checkpoint_every=3,
        render={**TINY_TRAIN["render"], "sampler": "dense"},
        **{f"lambda_{name}": value for name, value in lambdas.items()},
    )
    records = _records(train(cfg))
    assert ratios == [1 / 3, 2 / 3, 1.0]
    assert [r["step"] for r in records] == [2, 3]
    for r in records:
        total = r["loss_sds"] + sum(lam * r[f"loss_{name}"] for name, lam in lambdas.items())
        assert r["loss"] == pytest.approx(total, rel=1e-5, abs=1e-6)
        assert r["loss_density"] > 0
        assert r["skipped"] == 0.0 and r["skipped_total"] == 0  # every ε̂ was finite
        # The dense sampler without a refreshed grid: at most 16 + 4 samples on each ray.
        assert 0 < r["samples_per_ray"] <= 16 + 4


def test_a_resumed_runs_speed_counts_only_its_own_steps(tmp_path, tiny_sd_path, monkeypatch):
    # Resumed at step 2 and logged at step 3, 10 s later: 1 step / 10 s = 0.1 it/s (not the
    # 3 steps of the run over this attempt's 10 s).
    train(_tiny(tmp_path, tiny_sd_path, iters=2, checkpoint_every=2))
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
    workspace = train(_tiny(tmp_path, tiny_sd_path, iters=3, checkpoint_every=2), resume=True)
    last = _records(workspace)[-1]
    assert last["step"] == 3 and last["its"] == pytest.approx(0.1)


def test_the_density_decay_adds_lambda_times_its_gradient(tmp_path, tiny_sd_path, monkeypatch):
    # One step's gradients with λ_d = 1, 2, 3 (all else the same, CPU, one seed): the decay's
    # part grows linearly with λ_d, so g(2) − g(1) = g(3) − g(2) ≠ 0.
    grads = {}

    def record(lam):
        def step(run, finite):
            grads[lam] = torch.cat(
                [p.grad.flatten() for p in run.field.parameters() if p.grad is not None]
            )
            return True

        return step

    for lam in (1.0, 2.0, 3.0):
        monkeypatch.setattr(trainer, "optimizer_step", record(lam))
        train(_tiny(tmp_path / str(lam), tiny_sd_path, iters=1, lambda_density=lam))
    first, second = grads[2.0] - grads[1.0], grads[3.0] - grads[2.0]
    assert first.abs().max() > 0
    torch.testing.assert_close(first, second, rtol=1e-3, atol=1e-6)


def test_random_backgrounds_are_one_colour_per_image_each_step(tmp_path, tiny_sd_path, monkeypatch):
    # field.background "random": the trainer draws a solid colour per image ([B, 3] in [0, 1])
    # and renders on it, a new one each step.
    real = trainer.build_parts
    seen = []

    def build(cfg, device):
        parts = real(cfg, device)
        inner = parts.renderer.render_train

        def render_train(*args, **kwargs):
            seen.append(kwargs["background"])
            return inner(*args, **kwargs)

        parts.renderer.render_train = render_train
        return parts

    monkeypatch.setattr(trainer, "build_parts", build)
    field = {**TINY_TRAIN["field"], "background": "random"}
    train(_tiny(tmp_path, tiny_sd_path, iters=2, batch_size=2, field=field))
    assert len(seen) == 2 and all(b is not None and b.shape == (2, 3) for b in seen)
    assert all(float(b.min()) >= 0 and float(b.max()) <= 1 for b in seen)
    assert not torch.equal(seen[0], seen[1])


def test_a_resume_asking_fewer_steps_keeps_the_runs_own_length(tmp_path, tiny_sd_path):
    # Trained to step 3, resumed with --iters 2: the run is not shortened; its config.json and
    # status.json say 3 steps, beside its step 3.
    train(_tiny(tmp_path, tiny_sd_path, iters=3, checkpoint_every=3))
    workspace = train(_tiny(tmp_path, tiny_sd_path, iters=2, checkpoint_every=3), resume=True)
    config = json.loads((workspace / "config.json").read_text())
    status = json.loads((workspace / "status.json").read_text())
    assert config["iters"] == 3 and (status["iters"], status["step"]) == (3, 3)


def test_the_old_final_preview_is_gone_while_a_resumed_run_trains_on(
    tmp_path, tiny_sd_path, monkeypatch
):
    # final.png is the picture of the run's end; once it trains on from there, it is not.
    train(_tiny(tmp_path, tiny_sd_path, iters=2, checkpoint_every=2))
    final = tmp_path / "run" / "previews" / "final.png"
    assert final.is_file()
    real, present = trainer.train_step, []

    def step(run):
        present.append(final.exists())
        return real(run)

    monkeypatch.setattr(trainer, "train_step", step)
    train(_tiny(tmp_path, tiny_sd_path, iters=3, checkpoint_every=2), resume=True)
    assert present == [False] and final.is_file()  # and written again at the new end


def test_a_resume_keeps_the_preview_of_the_step_it_goes_on_from(tmp_path, tiny_sd_path):
    # Checkpoint and preview at step 2; a resume from step 2 removes what lies past it only.
    train(_tiny(tmp_path, tiny_sd_path, iters=2, checkpoint_every=2, preview_every=2))
    previews = tmp_path / "run" / "previews"
    assert (previews / "step_000002.png").is_file()
    train(_tiny(tmp_path, tiny_sd_path, iters=3, checkpoint_every=2, preview_every=2), resume=True)
    assert (previews / "step_000002.png").is_file()


def test_a_resume_restores_the_runs_skip_counts_and_runs_its_pending_grid_refresh(
    tmp_path, tiny_sd_path, monkeypatch
):
    # The counts the end-of-run lines report ("skipped N steps ...") and a grid refresh that ran
    # out of memory go through the checkpoint: a resume has the same counts and runs the refresh.
    run = trainer.build_run(_tiny(tmp_path / "a", tiny_sd_path, iters=5))
    run.step, run.skipped_updates, run.occupancy_pending = 3, 2, True
    run.guidance.skipped_steps = 4
    state = trainer.checkpoint_state(run)
    other = trainer.build_run(_tiny(tmp_path / "b", tiny_sd_path, iters=5))
    refreshed = []
    monkeypatch.setattr(
        other.renderer, "update_occupancy", lambda field, step: refreshed.append(step)
    )
    trainer.restore(other, state)
    assert (other.step, other.skipped_updates, other.guidance.skipped_steps) == (3, 2, 4)
    assert refreshed == [3]


def test_a_resume_trains_on_with_its_own_learning_rate(tmp_path, tiny_sd_path):
    # --lr on --resume: every group's rate is this run's (each group keeps its ratio to --lr),
    # not the checkpoint's.
    old = trainer.build_run(_tiny(tmp_path / "a", tiny_sd_path, lr=0.01))
    old_rates = [group["lr"] for group in old.optimizer.param_groups]
    new = trainer.build_run(_tiny(tmp_path / "b", tiny_sd_path, lr=0.002))
    trainer.restore(new, trainer.checkpoint_state(old))
    rates = [group["lr"] for group in new.optimizer.param_groups]
    assert rates == pytest.approx([rate * 0.2 for rate in old_rates])


def test_a_resume_from_a_checkpoint_of_one_parameter_at_a_time_adam_steps_all_at_once(
    tmp_path, tiny_sd_path
):
    # A checkpoint saved before Adam was built with foreach=True records foreach None, which on
    # the CPU steps one parameter at a time (two temporaries a value where the memory check
    # counts one): the resumed optimiser steps as this version builds it.
    old = trainer.build_run(_tiny(tmp_path / "a", tiny_sd_path))
    state = trainer.checkpoint_state(old)
    for group in state["optimizer"]["param_groups"]:
        group["foreach"] = None
    new = trainer.build_run(_tiny(tmp_path / "b", tiny_sd_path))
    trainer.restore(new, state)
    assert [group["foreach"] for group in new.optimizer.param_groups] == [True, True]


def test_status_json_says_the_step_of_each_checkpoint_between_log_lines(
    tmp_path, tiny_sd_path, monkeypatch
):
    # Logged every 4 steps, checkpointed every 2: at step 3's start the run is saved at step 2,
    # and status.json says so (not the step 0 it started at).
    real, seen = trainer.train_step, []
    status = tmp_path / "run" / "status.json"

    def step(run):
        seen.append(json.loads(status.read_text())["step"])
        return real(run)

    monkeypatch.setattr(trainer, "train_step", step)
    train(_tiny(tmp_path, tiny_sd_path, iters=3, log_every=4, checkpoint_every=2))
    assert seen == [0, 0, 2]


def test_steps_without_finite_guidance_are_counted_in_the_log_and_at_the_end(
    tmp_path, tiny_sd_path, capsys
):
    # --guidance 1e308: every ε̂ overflows, so each of the 3 steps is skipped by the guidance
    # (its regularisers still update the field): skipped_total counts 1, 2, 3 and the run's end
    # says 3; no update was skipped.
    cfg = _tiny(tmp_path, tiny_sd_path, iters=3, checkpoint_every=3)
    cfg.guidance.guidance_scale = 1e308
    records = _records(train(cfg))
    assert [(r["skipped"], r["skipped_total"]) for r in records] == [(1.0, 1), (1.0, 2), (1.0, 3)]
    assert not any(r.get("update_skipped") for r in records)
    err = capsys.readouterr().err
    assert "dreamtext: skipped 3 steps with non-finite guidance\n" in err
    assert "non-finite gradients" not in err


def test_steps_whose_update_was_skipped_are_counted_at_the_end(
    tmp_path, tiny_sd_path, monkeypatch, capsys
):
    # NaN gradients from step 2 of 3 on: steps 2 and 3 skip their update, and the run says 2.
    from dreamtext.guidance import ScoreDistillation

    real, calls = ScoreDistillation.sds_loss, []

    def nan_from_step_2(self, *args, **kwargs):
        loss, info = real(self, *args, **kwargs)
        calls.append(1)
        return (loss * float("nan") if len(calls) >= 2 else loss), info

    monkeypatch.setattr(ScoreDistillation, "sds_loss", nan_from_step_2)
    records = _records(train(_tiny(tmp_path, tiny_sd_path, iters=3, checkpoint_every=3)))
    assert [r.get("update_skipped", False) for r in records] == [False, True, True]
    err = capsys.readouterr().err
    assert "dreamtext: skipped the update of 2 steps with non-finite gradients\n" in err


def test_a_resume_from_an_earlier_step_removes_the_files_of_the_steps_past_it(
    tmp_path, tiny_sd_path, monkeypatch
):
    # Trained to step 4 (a checkpoint and a preview every step; last.pt and step files 2-3 kept),
    # then step_000002.pt copied over last.pt: the resume goes on from step 2, so the checkpoint
    # of step 3 and the previews of steps 3 and 4 are of a branch it left, gone before it trains
    # step 3 again; step 2's stay.
    import shutil

    overrides = {"iters": 4, "checkpoint_every": 1, "preview_every": 1}
    workspace = train(_tiny(tmp_path, tiny_sd_path, **overrides))
    checkpoints, previews = workspace / "checkpoints", workspace / "previews"
    shutil.copyfile(checkpoints / "step_000002.pt", checkpoints / "last.pt")
    real, seen = trainer.train_step, []

    def step(run):
        if not seen:
            seen.append(
                (
                    sorted(p.name for p in checkpoints.glob("step_*.pt")),
                    sorted(p.name for p in previews.glob("step_*.png")),
                )
            )
        return real(run)

    monkeypatch.setattr(trainer, "train_step", step)
    train(_tiny(tmp_path, tiny_sd_path, **overrides), resume=True)
    assert seen == [(["step_000002.pt"], ["step_000001.png", "step_000002.png"])]


def test_a_stop_during_a_preview_saves_that_step_and_ends_the_run(
    tmp_path, tiny_sd_path, monkeypatch
):
    # Ctrl-C while step 2's preview renders: step 2 is whole, so the run stops there with its
    # checkpoint (not at its next checkpoint, step 5) and leaves no half preview.
    from dreamtext.checkpoint import load_checkpoint
    from dreamtext.interrupts import StepStopped, TrainingInterrupted

    def stopped(run, path, **kwargs):
        raise StepStopped

    monkeypatch.setattr(trainer, "save_preview", stopped)
    cfg = _tiny(tmp_path, tiny_sd_path, iters=5, checkpoint_every=5, preview_every=2)
    with pytest.raises(TrainingInterrupted) as error:
        train(cfg)
    workspace = tmp_path / "run"
    assert error.value.step == 2
    assert load_checkpoint(workspace / "checkpoints" / "last.pt")["step"] == 2
    assert [r["step"] for r in _records(workspace)] == [1, 2]


def test_a_resume_goes_on_with_the_loss_scale_the_run_had_reached(
    tmp_path, tiny_sd_path, monkeypatch
):
    # fp16: the scaler's scale (halved after each skipped step from 2^16) is the run's state,
    # so a resume goes on with the scale it had, not 2^16 again.
    scaler = lambda dtype, device: torch.amp.GradScaler("cpu", enabled=True)  # noqa: E731
    monkeypatch.setattr(trainer, "fp16_loss_scaler", scaler)
    run = trainer.build_run(_tiny(tmp_path / "a", tiny_sd_path))
    run.scaler.scale(torch.ones(()))  # the scaler makes its scale on first use
    run.scaler.update(128.0)
    other = trainer.build_run(_tiny(tmp_path / "b", tiny_sd_path))
    trainer.restore(other, trainer.checkpoint_state(run))
    assert other.scaler.get_scale() == 128.0


def test_a_second_resume_from_the_same_step_replaces_the_first_ones_record(tmp_path, tiny_sd_path):
    # Resumed at step 2 and trained to 4, then step_000002.pt copied over last.pt and resumed at
    # step 2 again: the first resume's steps are lost, so config.json keeps one resume, at step 2.
    import shutil

    train(_tiny(tmp_path, tiny_sd_path, iters=2, checkpoint_every=2))
    workspace = train(_tiny(tmp_path, tiny_sd_path, iters=4, checkpoint_every=2), resume=True)
    checkpoints = workspace / "checkpoints"
    shutil.copyfile(checkpoints / "step_000002.pt", checkpoints / "last.pt")
    train(_tiny(tmp_path, tiny_sd_path, iters=4, checkpoint_every=2), resume=True)
    resumes = json.loads((workspace / "config.json").read_text())["resumes"]
    assert [r["step"] for r in resumes] == [2]


def test_a_ctrl_c_after_last_pt_is_replaced_leaves_status_naming_its_step(tmp_path, monkeypatch):
    """A second Ctrl-C that lands after save_checkpoint replaced last.pt (here in the write of
    its step record) left run.saved_step at the step before, so the interrupted status.json
    named a step other than the checkpoint's, the one a resume goes on from."""
    from dreamtext import checkpoint
    from dreamtext.runfiles import read_status
    from dreamtext.runstatus import track_status

    run = types.SimpleNamespace(
        workspace=tmp_path, step=5, saved_step=3, cfg=types.SimpleNamespace(keep_checkpoints=3)
    )
    monkeypatch.setattr(trainer, "checkpoint_state", lambda run: {"step": run.step})

    def ctrl_c(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "step_record", ctrl_c)
    with (
        pytest.raises(KeyboardInterrupt),
        track_status(
            tmp_path, 10, lambda: run.step, torch.device("cpu"), saved=lambda: run.saved_step
        ),
    ):
        trainer.save_run_checkpoint(run)
    assert checkpoint.checkpoint_step(checkpoint.last_checkpoint(tmp_path)) == 5
    assert read_status(tmp_path)["state"] == "interrupted"
    assert read_status(tmp_path)["step"] == 5


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="Linux's peak reset")
def test_a_batch_lines_table_clause_weighs_its_own_peak_not_an_earlier_lines():
    """table_fix weighed the table against the process's peak RSS: in a batch, an earlier
    line's larger peak (here 1.5 GiB held and freed) hid the clause naming the table's keys
    from a later line's out-of-memory line, where that table (279 MB) is most of its peak."""
    from peak_growth import run_measured

    script = (
        "from dreamtext.config import resolve_config\n"
        "from dreamtext.trainer import reset_memory_peak, table_fix\n"
        "cfg = resolve_config({'prompt': 'a cube'})\n"
        "earlier_line = b'x' * (3 * 2**29)\n"
        "del earlier_line\n"
        "reset_memory_peak()\n"  # what a batch does at each line's start
        "print(repr(table_fix(cfg, 'memory')))\n"
    )
    assert "field.log2_hashmap_size" in run_measured(script)


def _builtin_tiny(tmp_path, **overrides):
    """A run of the built-in prior at :data:`TINY_SIZES`, no export."""
    return resolve_config(
        {
            **TINY_SIZES,
            "prompt": "a red cube",
            "guidance": {"model": "builtin:shapes"},
            "workspace": str(tmp_path / "run"),
            "export": False,
            **overrides,
        }
    )


def _rendered_previews(monkeypatch):
    """The names of the previews :func:`trainer.save_preview` renders from now on, in order."""
    real, names = trainer.save_preview, []

    def counted(run, path, **kwargs):
        names.append(path.name)
        real(run, path, **kwargs)

    monkeypatch.setattr(trainer, "save_preview", counted)
    return names


def test_the_final_preview_of_a_step_the_loop_previewed_is_its_copy_not_a_second_render(
    tmp_path, monkeypatch
):
    """Every preset's iters is a multiple of its preview_every: the last step's preview and
    final.png were two renders of the same field from the same cameras, the same bytes (a
    10,000-step run of the built-in prior), the second minutes on a CPU for a fuzzy field."""
    rendered = _rendered_previews(monkeypatch)
    workspace = train(_builtin_tiny(tmp_path, iters=4, preview_every=2, checkpoint_every=2))
    previews = workspace / "previews"
    assert rendered == ["step_000002.png", "step_000004.png"]
    assert (previews / "final.png").read_bytes() == (previews / "step_000004.png").read_bytes()


def test_the_final_preview_of_a_step_without_one_is_rendered(tmp_path, monkeypatch):
    rendered = _rendered_previews(monkeypatch)
    workspace = train(_builtin_tiny(tmp_path, iters=3, preview_every=2, checkpoint_every=3))
    assert rendered == ["step_000002.png", "final.png"]
    assert (workspace / "previews" / "final.png").is_file()


def test_a_runs_checkpoints_stay_at_keep_while_its_previews_and_log_grow_with_its_steps(
    tmp_path,
):
    """What a long run leaves (README, "A workspace holds"): ``keep_checkpoints`` checkpoints
    whatever the number of saves; one preview per ``preview_every`` steps and one log line per
    ``log_every`` steps, for good."""
    workspace = train(
        _builtin_tiny(
            tmp_path, iters=12, checkpoint_every=1, keep_checkpoints=2, preview_every=3, log_every=2
        )
    )
    checkpoints = sorted(p.name for p in (workspace / "checkpoints").iterdir())
    assert checkpoints == ["last.pt", "last.step.json", "step_000011.pt"]
    previews = sorted(p.name for p in (workspace / "previews").iterdir())
    assert previews == ["final.png", *(f"step_{step:06d}.png" for step in (3, 6, 9, 12))]
    assert [r["step"] for r in _records(workspace)] == [2, 4, 6, 8, 10, 12]
