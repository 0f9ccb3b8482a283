"""The fp16 loss scaler at FitFusion's guidance (devices.fp16_loss_scaler), on virtual CUDA.

At guidance 1000 the SDS gradient overflows fp16 at the initial scale 2^16: the scaler halves it
step by step, skipping each step whose gradients overflowed, until it holds. These tests pin how
many steps that costs and what a skipped step does to the run.
"""

from __future__ import annotations

import math

import torch
from tiny_models import builtin_on_virtual_cuda
from virtual_cuda import virtual_cuda

from dreamtext import trainer
from dreamtext.config import resolve_config
from dreamtext.devices import FP16_GROWTH_INTERVAL, FP16_INIT_SCALE, fp16_loss_scaler

STEPS = 20
# The initial scale may halve down to 2^4 (about where the tiny models' gradients put it): 12
# skipped steps at most.
MOST_SKIPS = round(math.log2(FP16_INIT_SCALE / 2**4))


def test_the_scaler_starts_at_2_16_and_grows_every_2000_steps_in_fp16_only():
    scaler = fp16_loss_scaler(torch.float16, torch.device("cpu"))
    assert scaler.is_enabled() and scaler.get_scale() == FP16_INIT_SCALE == 2.0**16
    assert scaler.get_growth_interval() == FP16_GROWTH_INTERVAL == 2000
    assert not fp16_loss_scaler(torch.bfloat16, torch.device("cpu")).is_enabled()


def test_at_guidance_1000_the_scale_settles_within_12_skipped_steps(tmp_path):
    with virtual_cuda():
        # Cameras above the horizon only: the preset's views from below give a few gradients
        # larger than the rest, which overflow again after the scale has settled (at step 19).
        guidance = {"fp16": True, "guidance_scale": 1000.0, "views": {"below": None}}
        cameras = {"polar_range": [30.0, 80.0]}
        cfg = resolve_config(
            builtin_on_virtual_cuda(
                tmp_path / "run", guidance=guidance, iters=STEPS, cameras=cameras
            )
        )
        run = trainer.build_run(cfg)
        records = [trainer.train_step(run) for _ in range(STEPS)]
        final_scale = run.scaler.get_scale()
    skipped = [r["step"] for r in records if r.get("update_skipped")]
    assert 1 <= len(skipped) <= MOST_SKIPS, skipped
    assert max(skipped) <= STEPS - 3, skipped  # then it holds
    # Each skip halves the scale for the next step; a good step leaves it (growth after 2000).
    scales = [r["loss_scale"] for r in records] + [final_scale]
    assert scales[0] == FP16_INIT_SCALE
    for record, before, after in zip(records, scales[:-1], scales[1:], strict=True):
        assert after == (before / 2 if record.get("update_skipped") else before), record["step"]
    # A skipped step is a step of the run, not one of Adam's, and is counted.
    assert run.step == STEPS and run.skipped_updates == len(skipped)
    adam_steps = {int(state["step"]) for state in run.optimizer.state.values()}
    assert adam_steps == {STEPS - len(skipped)}
    assert list(run.recent_skips).count("gradients") == len(skipped)


def test_an_fp16_run_whose_noise_prediction_overflows_names_fp32_and_resumes_in_float32(
    tmp_path, monkeypatch, capsys
):
    """The line of a run whose ε̂ was NaN in fp16 said "continue with --resume ... or without
    --fp16": the resume, without the flag, took config.json's fp16 and ran in fp16 again. It
    names --fp32, and that command resumes the run in float32 (here ε̂ overflows in fp16 only)."""
    import json

    from dreamtext.cli import main
    from dreamtext.errors import DreamtextError
    from dreamtext.guidance import ScoreDistillation

    real = ScoreDistillation.sds_loss

    def overflows_in_fp16(self, *args, **kwargs):
        loss, info = real(self, *args, **kwargs)
        if self.cfg.fp16:
            info["skipped"] = torch.ones_like(info["skipped"])
            return loss * 0, info
        return loss, info

    monkeypatch.setattr(ScoreDistillation, "sds_loss", overflows_in_fp16)
    monkeypatch.setattr(trainer, "DIVERGED_AFTER", 3)
    monkeypatch.setattr(trainer, "DIVERGENCE_WINDOW", 4)
    workspace = tmp_path / "run"
    with virtual_cuda():
        cfg = resolve_config(builtin_on_virtual_cuda(workspace, guidance={"fp16": True}, iters=8))
        try:
            trainer.train(cfg)
        except DreamtextError as error:
            message = str(error)
        assert message.endswith(
            "continue with --resume and a smaller --guidance (this run's is 4) or --fp32 "
            "(without --fp16)"
        ), message
        capsys.readouterr()
        resume = ["text", "a red cube", "--resume", "--workspace", str(workspace)]
        assert main([*resume, "--fp32"]) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "guidance.fp16 true → false" in err, err
    config = json.loads((workspace / "config.json").read_text())
    assert (config["guidance"]["fp16"], config["guidance"]["bf16"]) == (False, False)
    assert config["ran_on"]["field_mlp_dtype"] == "float32"
    records = [json.loads(line) for line in (workspace / "log.jsonl").read_text().splitlines()]
    resumed = [r for r in records if r["step"] > 3]
    assert [r["step"] for r in resumed] == list(range(4, 9)), records
    assert not any(r["skipped"] or "loss_scale" in r for r in resumed), resumed
