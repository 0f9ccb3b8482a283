"""A run that runs out of memory mid-step and is resumed trains exactly as one that never did.

The checkpoint saved on running out of memory must hold what the run had before the failed step:
its random states (cameras, sample jitter, noise and times) and the guidance's skip count, not
the ones the failed step had already drawn, or the resumed run would draw other cameras and
noise from then on.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from tiny_models import TINY_TRAIN

import dreamtext.trainer as trainer
from dreamtext.checkpoint import load_checkpoint
from dreamtext.config import resolve_config
from dreamtext.errors import DreamtextError
from dreamtext.guidance import ScoreDistillation
from dreamtext.samplers import OccupancyGrid
from dreamtext.trainer import train

FAILS_IN_STEP = 4
ITERS = 6


def config(workspace, iters=ITERS, checkpoint_every=100, **top):
    return resolve_config(
        {
            **TINY_TRAIN,
            "prompt": "a red cube",
            "workspace": str(workspace),
            "iters": iters,
            "preview_every": 0,
            "checkpoint_every": checkpoint_every,
            "guidance": {"model": "builtin:shapes"},
            **top,
        }
    )


def outcome(workspace):
    """The trained field, the occupancy grid and every logged number but the speed."""
    state = load_checkpoint(workspace / "checkpoints" / "last.pt")
    records = [json.loads(line) for line in (workspace / "log.jsonl").read_text().splitlines()]
    for record in records:
        record.pop("its")
    return state, records


def assert_same_run(resumed, uninterrupted):
    (state, records), (expected, expected_records) = outcome(resumed), outcome(uninterrupted)
    assert state["step"] == expected["step"] == ITERS
    assert records == expected_records
    for part in ("field", "renderer"):
        for name, tensor in expected[part].items():
            assert torch.equal(state[part][name], tensor), (part, name)
    assert torch.equal(state["rng"]["torch"], expected["rng"]["torch"])
    assert torch.equal(state["rng"]["guidance"], expected["rng"]["guidance"])


def fail_once(monkeypatch, cls, name, when):
    """``cls.name`` runs as before, but its call number ``when`` runs (drawing what it draws)
    and then raises CUDA's out-of-memory error."""
    real, calls = getattr(cls, name), []

    def failing(self, *args, **kwargs):
        calls.append(1)
        result = real(self, *args, **kwargs)
        if len(calls) == when:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return result

    monkeypatch.setattr(cls, name, failing)


HOST_ALLOCATOR = "DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes"
CUDA_OUT_OF_MEMORY = "CUDA out of memory. Tried to allocate 2.00 GiB"


def adams_moments_run_out(monkeypatch, error: BaseException) -> list[int]:
    """Adam's first step raises ``error`` where it allocates a moment of a parameter
    (``torch.zeros_like``, in ``Adam._init_group``): the first update runs out making its state.
    Returns the list to which each step adds the number of values it updates."""
    real_step, real_zeros_like = torch.optim.Adam.step, torch.zeros_like
    updated = []

    def zeros_like(tensor, *args, **kwargs):
        if isinstance(tensor, torch.nn.Parameter):
            raise error
        return real_zeros_like(tensor, *args, **kwargs)

    def step(self, *args, **kwargs):
        updated.append(sum(p.numel() for group in self.param_groups for p in group["params"]))
        with pytest.MonkeyPatch.context() as m:
            m.setattr(torch, "zeros_like", zeros_like)
            return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    return updated


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("uninterrupted") / "run"
    train(config(workspace))
    return workspace


def test_a_resume_after_running_out_of_memory_mid_step_is_bit_exact(
    tmp_path, monkeypatch, uninterrupted
):
    workspace = tmp_path / "run"
    # The guidance of step 4 has drawn its time and noise, the renderer its jitter, the
    # cameras their poses, when memory runs out (its backward, say).
    fail_once(monkeypatch, ScoreDistillation, "sds_loss", FAILS_IN_STEP)
    with pytest.raises(DreamtextError, match=f"out of GPU memory after step {FAILS_IN_STEP - 1}"):
        train(config(workspace))
    monkeypatch.undo()
    assert load_checkpoint(workspace / "checkpoints" / "last.pt")["step"] == FAILS_IN_STEP - 1
    train(config(workspace), resume=True)
    assert_same_run(workspace, uninterrupted)


def test_a_resume_after_the_occupancy_refresh_ran_out_of_memory_is_bit_exact(
    tmp_path, monkeypatch, uninterrupted
):
    """The refresh after step 4 (grid_update_every 2) comes after the step's update: the step
    is kept, and the refresh runs first on resume, from the random state it had."""
    workspace = tmp_path / "run"

    def draw_then_fail(self, field, chunk_points):
        torch.rand(8)  # the refresh's jitter, drawn before its densities run out of memory
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    real, calls = OccupancyGrid.update, []

    def update(self, field, chunk_points):
        calls.append(1)
        if len(calls) == 2:
            return draw_then_fail(self, field, chunk_points)
        return real(self, field, chunk_points)

    monkeypatch.setattr(OccupancyGrid, "update", update)
    with pytest.raises(DreamtextError, match="out of GPU memory after step 4"):
        train(config(workspace))
    monkeypatch.undo()
    saved = load_checkpoint(workspace / "checkpoints" / "last.pt")
    assert saved["step"] == 4 and saved["occupancy_pending"]
    train(config(workspace), resume=True)
    assert_same_run(workspace, uninterrupted)


def test_memory_that_runs_out_in_adams_update_saves_no_half_updated_checkpoint(
    tmp_path, monkeypatch, uninterrupted
):
    """Adam allocates a temporary of every parameter's size at every step (``denom``, from
    ``torch._foreach_sqrt`` of the second moments: it steps all parameters at once) after it has
    written every moment: a checkpoint saved then as "after step 3" held half of step 4's
    update, and a resume from it trained another run. Nothing is saved; the resume goes on
    from the last checkpoint."""
    workspace = tmp_path / "run"
    real_step = trainer.optimizer_step

    def failing_step(run, finite):
        if run.step != FAILS_IN_STEP - 1:
            return real_step(run, finite)
        real_sqrt, calls = torch._foreach_sqrt, []

        def sqrt(tensors, *args, **kwargs):
            calls.append(len(tensors))  # every moment is written by now
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to")

        monkeypatch.setattr(torch, "_foreach_sqrt", sqrt)
        try:
            return real_step(run, finite)
        finally:
            monkeypatch.setattr(torch, "_foreach_sqrt", real_sqrt)
            assert calls, "Adam's update did not reach its square root"

    monkeypatch.setattr(trainer, "optimizer_step", failing_step)
    with pytest.raises(DreamtextError) as raised:
        train(config(workspace, checkpoint_every=2))
    assert str(raised.value).startswith(
        f"out of memory in the optimiser's update of step {FAILS_IN_STEP} (16x16 px, batch 2), "
        "which it left half done, so no checkpoint was saved; resume with --resume (from its "
        "last checkpoint, step 2) after one of: a smaller --h/--w, "
    )  # a later update's room is what the render holds beside the state its first one made
    monkeypatch.undo()
    assert load_checkpoint(workspace / "checkpoints" / "last.pt")["step"] == 2
    train(config(workspace, checkpoint_every=2), resume=True)
    assert_same_run(workspace, uninterrupted)


def test_a_batch_lines_update_out_of_memory_before_any_checkpoint_names_its_own_command(
    tmp_path, monkeypatch
):
    """Out of memory in the first update (Adam's state), with no checkpoint to resume, a batch
    line was told "run the command again after one of: ...": the batch, whose flag with the fix
    changes every line it resumes or starts. It names the line's own command (start_again's)."""
    from dreamtext.errors import StartAgain

    adams_moments_run_out(monkeypatch, RuntimeError(HOST_ALLOCATOR))
    own = "`dreamtext text 'a red cube' --workspace runs/a_red_cube --overwrite`"
    with pytest.raises(DreamtextError) as raised:
        train(config(tmp_path / "run"), start_again=StartAgain(own))
    assert "so no checkpoint was saved; that update makes the adam state (" in str(raised.value)
    assert str(raised.value).endswith(f"): close other programs and run {own}"), raised.value
    with pytest.raises(DreamtextError) as raised:  # `dreamtext text`'s own: the command again
        train(config(tmp_path / "other"))
    assert str(raised.value).endswith("): close other programs and run the command again")


@pytest.mark.parametrize("half", ["fp16", "bf16", None])
def test_a_run_already_in_half_precision_is_not_told_to_use_fp16(tmp_path, half):
    """A run in --fp16 (or --bf16) that ran out of GPU memory was told to resume "after one
    of: a smaller --h/--w, --fp16, …": a fix that changes nothing."""
    from tiny_models import builtin_on_virtual_cuda
    from virtual_cuda import virtual_cuda

    real = ScoreDistillation.sds_loss

    def runs_out(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    guidance = {half: True} if half else {}
    with virtual_cuda(), pytest.MonkeyPatch.context() as m:
        m.setattr(ScoreDistillation, "sds_loss", runs_out)
        cfg = resolve_config(
            builtin_on_virtual_cuda(tmp_path / "run", guidance, iters=3, preview_every=0)
        )
        with pytest.raises(DreamtextError) as raised:
            train(cfg)
    message = str(raised.value)
    assert "out of GPU memory after step 0" in message and "a smaller --h/--w" in message
    assert ("--fp16" in message) == (half is None), message
    # builtin:shapes' batch of 2 and its dense sampler: the batch is a lever left to an fp16
    # run, and the dense sampler's sample counts are num_steps and upsample_steps (it reads no
    # march_steps, which the line named).
    assert cfg.batch_size == 2 and cfg.render.sampler == "dense"
    assert "a smaller --batch-size, " in message, message
    assert "fewer samples (render.num_steps, render.upsample_steps)" in message, message
    assert "march_steps" not in message


@pytest.mark.parametrize(
    ("flags", "offered"), [({}, True), ({"fp16": True}, False), ({"bf16": True}, False)]
)
def test_the_line_for_memory_outside_training_offers_fp16_only_where_it_is_off(flags, offered):
    import argparse

    from dreamtext.cli import out_of_memory_line

    args = argparse.Namespace(
        command="text", fp16=False, bf16=False, h=64, w=64, device="cuda", config=None
    )
    vars(args).update(flags)
    error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    line = out_of_memory_line(args, error, "GPU memory")
    assert line.startswith("out of GPU memory in `dreamtext text` (CUDA out of memory. Tried")
    assert ("with --fp16" in line) == offered, line
    assert "--h/--w" not in line and "--device cpu" in line
    # The CPU refuses half precision: a run in it is told to give --fp32 there.
    assert ("--device cpu --fp32" in line) == (not offered), line


@pytest.mark.parametrize("source", ["config", "resume"])
def test_the_cli_line_offers_no_fp16_to_a_run_in_fp16_through_its_config_or_resume(
    tmp_path, capsys, source
):
    """Memory that runs out outside training gets the CLI's own line. A run in fp16 through
    ``--config`` (``guidance.fp16: true``) or through the run it resumes was told "run again
    with --fp16": only the flag itself was read."""
    import yaml
    from tiny_models import builtin_on_virtual_cuda
    from virtual_cuda import virtual_cuda

    from dreamtext import trainer
    from dreamtext.cli import main

    workspace = tmp_path / "run"
    command = ["text", "a red cube", "--model", "builtin:shapes", "--device", "cuda"]
    command += ["--h", "16", "--w", "16", "--iters", "2", "--workspace", str(workspace)]
    if source == "config":
        config = tmp_path / "half.yaml"
        config.write_text(yaml.safe_dump({"guidance": {"fp16": True}}))
        command += ["--config", str(config)]
    else:
        with virtual_cuda():
            run = builtin_on_virtual_cuda(workspace, {"fp16": True}, {"compile_field": False})
            train(resolve_config({**run, "iters": 1}))
        command = ["text", "a red cube", "--resume", "--workspace", str(workspace)]
        capsys.readouterr()  # the training's own lines

    def runs_out(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with virtual_cuda(), pytest.MonkeyPatch.context() as m:
        m.setattr(trainer, "train", runs_out)
        code = main(command)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("dreamtext: error: out of GPU memory in `dreamtext text`"), err
    assert "--device cpu --fp32" in err and "--fp16" not in err, err


def test_a_fp32_run_out_of_gpu_memory_is_told_fp16_in_place_of_fp32(tmp_path, capsys):
    """A run given --fp32 that ran out of GPU memory was told to resume "after one of: ...,
    --fp16, ...": --fp16 beside --fp32 is refused. The fix names --fp16 without --fp32, and
    the command it names resumes the run."""
    from virtual_cuda import virtual_cuda

    from dreamtext.cli import main

    workspace = tmp_path / "run"
    size = str(TINY_TRAIN["h"])
    command = ["text", "a red cube", "--model", "builtin:shapes", "--device", "cuda"]
    command += ["--h", size, "--w", size, "--iters", "3", "--workspace", str(workspace)]
    command += ["--encoding", "torch", "--no-compile"]  # Triton's interpreter takes minutes
    real = ScoreDistillation.sds_loss

    def runs_out(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with virtual_cuda():
        with pytest.MonkeyPatch.context() as m:
            m.setattr(ScoreDistillation, "sds_loss", runs_out)
            assert main([*command, "--fp32"]) == 2
        err = capsys.readouterr().err
        assert "out of GPU memory after step 0" in err, err
        assert "resume with --resume after one of: " in err and "--fp16 (without --fp32)" in err
        # What the old line said is refused; what the new one says runs.
        assert main([*command, "--resume", "--fp32", "--fp16"]) == 2
        assert "give --fp32 or --fp16, not both" in capsys.readouterr().err
        assert main([*command, "--resume", "--fp16"]) == 0, capsys.readouterr().err
    recorded = json.loads((workspace / "config.json").read_text())
    assert recorded["guidance"]["fp16"] is True
    assert load_checkpoint(workspace / "checkpoints" / "last.pt")["step"] == 3


@pytest.mark.parametrize(
    ("typed", "advice", "refused"),
    [
        ("--fp32", "--fp16 (without --fp32)", ["--fp32", "--fp16"]),
        ("--fp16", "--device cpu --fp32 (without --fp16)", ["--fp16", "--device", "cpu"]),
    ],
)
def test_the_cli_line_names_no_flag_refused_beside_the_precision_typed(
    tmp_path, capsys, typed, advice, refused
):
    """The CLI's line for GPU memory that ran out outside training said "run again with --fp16"
    to a command with --fp32, and "--device cpu" to one with --fp16: both refused beside what
    was typed. Each now names the flag to drop, and the command it names runs."""
    from virtual_cuda import virtual_cuda

    from dreamtext import trainer
    from dreamtext.cli import main

    command = ["text", "a red cube", "--model", "builtin:shapes", "--device", "cuda"]
    command += ["--h", "16", "--w", "16", "--iters", "1", "--no-export"]
    command += ["--encoding", "torch", "--no-compile"]

    def runs_out(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with virtual_cuda():
        with pytest.MonkeyPatch.context() as m:
            m.setattr(trainer, "train", runs_out)
            assert main([*command, "--workspace", str(tmp_path / "a"), typed]) == 2
        err = capsys.readouterr().err
        assert err.startswith("dreamtext: error: out of GPU memory in `dreamtext text`"), err
        assert f": {advice}" in err or f" {advice}," in err, err
        # The old advice added to the command typed is refused; the new one runs.
        assert main([*command, "--workspace", str(tmp_path / "b"), *refused]) == 2
        advised = advice.split(" (without")[0].split()  # and the flag typed dropped
        assert main([*command, "--workspace", str(tmp_path / "c"), *advised]) == 0


@pytest.mark.parametrize("batch_size", [1, 2])
def test_a_run_of_one_image_out_of_host_memory_is_not_told_a_smaller_batch(
    tmp_path, monkeypatch, batch_size
):
    """A CPU run out of memory was told "a smaller --batch-size" at any batch: a batch of 1 has
    none (--batch-size 0 is refused)."""
    real = ScoreDistillation.sds_loss

    def runs_out(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8")

    monkeypatch.setattr(ScoreDistillation, "sds_loss", runs_out)
    with pytest.raises(DreamtextError) as raised:
        train(config(tmp_path / "run", batch_size=batch_size))
    message = str(raised.value)
    assert message.startswith(f"out of memory after step 0 (16x16 px, batch {batch_size})")
    assert "a smaller --h/--w" in message and "close other programs" in message, message
    assert ("--batch-size" in message) == (batch_size > 1), message


@pytest.mark.parametrize("backprop", ["auto", "deferred", "direct"])
def test_a_direct_backward_is_not_told_to_lower_the_chunks_it_does_not_read(tmp_path, backprop):
    """render.grad_chunk_points bounds a deferred backward only: a run with render.backprop:
    direct was told "a smaller render.grad_chunk_points", which changed nothing. It is told to
    defer the backward; the others are told the chunk size."""
    from dreamtext.trainer import out_of_memory_fixes

    cfg = config(tmp_path / "run", render={**TINY_TRAIN["render"], "backprop": backprop})
    for memory in ("GPU memory", "memory"):
        fixes = out_of_memory_fixes(cfg, memory)
        assert ("a smaller render.grad_chunk_points" in fixes) == (backprop != "direct"), fixes
        assert ("render.backprop: deferred" in fixes) == (backprop == "direct"), fixes


def restore_runs_out(run, state):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_memory_that_runs_out_restoring_a_checkpoint_names_what_a_restore_allocates(
    tmp_path, capsys
):
    """A restore renders nothing: it makes the optimiser's state on the GPU beside the prior.
    Its line said "run again with --fp16, a smaller --h/--w, --device cpu", and --h/--w changes
    none of what it allocates. It names the state, and each fix it names resumes the run."""
    from virtual_cuda import virtual_cuda

    from dreamtext.cli import main

    workspace = tmp_path / "run"
    command = ["text", "a red cube", "--model", "builtin:shapes", "--device", "cuda"]
    command += ["--h", "16", "--w", "16", "--iters", "1", "--no-export"]
    command += ["--encoding", "torch", "--no-compile", "--workspace", str(workspace)]
    resume = ["text", "a red cube", "--resume", "--iters", "2", "--workspace", str(workspace)]
    with virtual_cuda():
        assert main(command) == 0
        capsys.readouterr()
        with pytest.MonkeyPatch.context() as m:
            m.setattr(trainer, "restore", restore_runs_out)
            assert main(resume) == 2
        err = capsys.readouterr().err
        assert err.startswith(
            f"dreamtext: error: out of GPU memory restoring the checkpoint of {workspace} ("
        ), err
        assert "field parameters, whose adam state needs" in err, err
        for render_fix in ("--h/--w", "samples", "grad_chunk", "--batch-size"):
            assert render_fix not in err, err
        assert err.rstrip().endswith(
            "; free the GPU of other work and resume with --resume, or resume with --resume "
            "and one of: --fp16 (without --fp32), --device cpu"
        ), err
        assert main([*resume, "--fp16"]) == 0, capsys.readouterr().err
    assert json.loads((workspace / "config.json").read_text())["guidance"]["fp16"] is True
    # The run now in fp16 is told --device cpu with --fp32, without which the CPU refuses it.
    with virtual_cuda(), pytest.MonkeyPatch.context() as m:
        m.setattr(trainer, "restore", restore_runs_out)
        assert main([*resume[:-3], "3", *resume[-2:]]) == 2
    err = capsys.readouterr().err
    assert err.rstrip().endswith("resume with --resume and one of: --device cpu --fp32"), err
    assert main([*resume[:-3], "3", *resume[-2:], "--device", "cpu", "--fp32"]) == 0
    assert load_checkpoint(workspace / "checkpoints" / "last.pt")["step"] == 3


def test_a_batch_line_out_of_memory_restoring_names_its_own_resume_and_no_render_fix(
    tmp_path, monkeypatch, capsys
):
    """A batch line whose restore ran out of GPU memory was told to run its command "after one
    of: a smaller --h/--w, ..., fewer samples (...), a smaller render.grad_chunk_points": the
    render's settings, which a restore does not use. It names its own resume with the fixes
    that change what a restore holds, and that command, with one of them, runs."""
    import shlex

    from virtual_cuda import virtual_cuda

    from dreamtext.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "list.txt").write_text("a red cube\n", encoding="utf-8")
    flags = ["--model", "builtin:shapes", "--no-export", "--device", "cuda", "--h", "16"]
    flags += ["--w", "16", "--encoding", "torch", "--no-compile"]
    batch = ["batch", "list.txt", *flags, "--workspace", "runs"]
    with virtual_cuda():
        assert main([*batch, "--iters", "1"]) == 0
        with monkeypatch.context() as m:
            m.setattr(trainer, "restore", restore_runs_out)
            assert main([*batch, "--iters", "2"]) == 1
        capsys.readouterr()
        log = (tmp_path / "runs" / "batch.jsonl").read_text().splitlines()
        error = json.loads(log[-1])["error"]
        command = "dreamtext text 'a red cube' --workspace runs/a_red_cube --resume"
        assert error.startswith("out of GPU memory restoring the checkpoint of runs/a_red_cube")
        assert error.endswith(
            f"; free the GPU of other work and resume with `{command}`, or resume with "
            f"`{command}` and one of: --fp16 (without --fp32), --device cpu"
        ), error
        for render_fix in ("--h/--w", "samples", "grad_chunk", "--batch-size"):
            assert render_fix not in error, error
        assert main([*shlex.split(command)[1:], "--iters", "2", "--fp16"]) == 0
    assert load_checkpoint(tmp_path / "runs/a_red_cube/checkpoints/last.pt")["step"] == 2


def test_host_memory_that_runs_out_restoring_names_no_render_fix(tmp_path, monkeypatch):
    """Out of the host's memory reading and restoring a checkpoint: the line names closing
    other programs and the resume, not the render's --h/--w and samples."""
    workspace = tmp_path / "run"
    train(config(workspace, iters=1))

    def runs_out(path, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(trainer, "load_checkpoint", runs_out)
    with pytest.raises(DreamtextError) as raised:
        train(config(workspace, iters=2), resume=True)
    message = str(raised.value)
    assert message.startswith(f"out of memory restoring the checkpoint of {workspace} ("), message
    assert "(the whole file is read into memory: " in message
    # A tiny field's state in kilobytes, not "0.0 GB".
    assert re.search(
        r"field parameters with their adam state, [1-9]\d* kB at least, beside the prior", message
    )
    assert message.endswith("; close other programs and resume with --resume"), message


def test_gpu_memory_that_runs_out_making_adams_state_names_the_state_and_a_loads_fixes(
    tmp_path, capsys
):
    """Adam's first update makes its two moments, 8 B a field parameter (and 4 B more while
    it updates), whatever the render's size. Its line named the render's fixes (a smaller
    --h/--w, fewer samples, smaller grad chunks), none of which shrinks that. It names the
    state's size and a load's fixes, each flag of which parses (--fp16 halves the prior beside
    the state, which stays float32)."""
    from named_fixes import named_fixes_exist
    from virtual_cuda import virtual_cuda

    from dreamtext.cli import main

    workspace = tmp_path / "run"
    command = ["text", "a red cube", "--model", "builtin:shapes", "--device", "cuda"]
    command += ["--h", "16", "--w", "16", "--iters", "1", "--no-export"]
    command += ["--encoding", "torch", "--no-compile", "--workspace", str(workspace)]
    with virtual_cuda(), pytest.MonkeyPatch.context() as m:
        updated = adams_moments_run_out(m, torch.OutOfMemoryError(CUDA_OUT_OF_MEMORY))
        assert main(command) == 2
    (parameters,) = updated  # the field's, each of which the state was being made for
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert not (workspace / "checkpoints" / "last.pt").exists()
    assert err.startswith(
        "dreamtext: error: out of GPU memory in the optimiser's first update, of step 1 (16x16 "
        "px, batch 2), which it left half done, so no checkpoint was saved; that update makes "
        f"the adam state (2 float32 values for each of the field's {parameters:,} parameters "
        f"and 1 more while it updates: {parameters * 12 / 1e6:.0f} MB, beside the prior; the "
        "render's settings do not "
        "change it, nor does --fp16, which halves the prior beside it): "
    ), err
    assert err.endswith(
        "): free the GPU of other work and run the command again, or run the command again and "
        "one of: --fp16 (without --fp32), --device cpu"
    ), err
    for render_fix in ("--h/--w", "samples", "grad_chunk", "--batch-size"):
        assert render_fix not in err, err
    assert named_fixes_exist(err, ["text", "a red cube"], tmp_path) == ["--fp16", "--device", "cpu"]


def test_a_bf16_run_out_of_gpu_memory_making_adams_state_is_not_told_fp16(tmp_path, capsys):
    """A run whose prior is in half precision already (--bf16; an --fp16 run's first update is
    the one its scaler skips) is not told that --fp16 would not help either, nor offered it:
    --device cpu with --fp32 is its fix."""
    from virtual_cuda import virtual_cuda

    from dreamtext.cli import main

    workspace = tmp_path / "run"
    command = ["text", "a red cube", "--model", "builtin:shapes", "--device", "cuda", "--bf16"]
    command += ["--h", "16", "--w", "16", "--iters", "1", "--no-export"]
    command += ["--encoding", "torch", "--no-compile", "--workspace", str(workspace)]
    with virtual_cuda(), pytest.MonkeyPatch.context() as m:
        adams_moments_run_out(m, torch.OutOfMemoryError(CUDA_OUT_OF_MEMORY))
        assert main(command) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "in the optimiser's first update" in err, err
    assert "the render's settings do not change it): free the GPU of other work" in err, err
    assert "--fp16" not in err and err.endswith("one of: --device cpu --fp32"), err


def test_host_memory_that_runs_out_making_the_state_of_a_large_table_names_the_tables_keys(
    tmp_path, monkeypatch
):
    """The first update of a run whose hash table is much of what the process held (0.1 GB of
    0.4) names the table's keys for a new run, each of which a --config sets, and no render
    fix; the host's memory is told no --fp16 and no --device cpu (it is the CPU's)."""
    from named_fixes import named_fixes_exist

    adams_moments_run_out(monkeypatch, RuntimeError(HOST_ALLOCATOR))
    monkeypatch.setattr(trainer, "memory_peak", lambda memory: 4 * 10**8)
    field = {**TINY_TRAIN["field"], "num_levels": 8, "base_resolution": 16}
    field |= {"finest_resolution_factor": 256.0, "log2_hashmap_size": 18, "level_dim": 4}
    with pytest.raises(DreamtextError) as raised:
        train(config(tmp_path / "run", iters=1, field=field))
    message = str(raised.value)
    assert message.startswith("out of memory in the optimiser's first update, of step 1"), message
    said = "the render's settings do not change it): close other programs and run the command again"
    assert said in message, message
    assert message.endswith(
        "; or, in a new run, lower field.log2_hashmap_size, field.num_levels or "
        "field.level_dim (the hash table, its gradient and the optimiser's state and update need "
        "at least 0.1 GB)"
    ), message
    for fix in ("--h/--w", "samples", "grad_chunk", "--batch-size", "--fp16", "--device"):
        assert fix not in message, message
    assert named_fixes_exist(message, ["text", "a red cube"], tmp_path) == [
        "field.log2_hashmap_size",
        "field.num_levels",
        "field.level_dim",
    ]


@pytest.mark.parametrize("configured", [False, True])
def test_gpu_memory_that_runs_out_loading_the_prior_names_a_loads_fixes(
    tmp_path, capsys, configured
):
    """`dreamtext text` out of GPU memory loading its prior was told "run again with --fp16, a
    smaller --h/--w, --device cpu": the render's size, which a load does not use. It names a
    load's fixes, as a batch line's and a restore's lines do (free the GPU, --fp16, --device
    cpu; a new run's smaller hash table or --config sizes), each flag and key of which exists."""
    from named_fixes import named_fixes_exist
    from virtual_cuda import virtual_cuda

    from dreamtext import factory
    from dreamtext.cli import main

    command = ["text", "a red cube", "--model", "builtin:shapes", "--device", "cuda"]
    command += ["--h", "16", "--w", "16", "--iters", "1", "--no-export"]
    command += ["--encoding", "torch", "--no-compile", "--workspace", str(tmp_path / "run")]
    expected = (
        "dreamtext: error: out of GPU memory in `dreamtext text` (CUDA out of memory. Tried to "
        "allocate 2.00 GiB); free the GPU of other work and run the command again, or run the "
        "command again and one of: --fp16, --device cpu"
    )
    named = ["--fp16", "--device", "cpu"]
    if configured:  # a table that is much of what the process held (0.1 GB of 0.4)
        big = tmp_path / "big.yaml"
        big.write_text("field:\n  log2_hashmap_size: 18\n  level_dim: 4\n")
        command += ["--config", str(big)]
        expected += (
            "; or, in a new run, lower field.log2_hashmap_size, field.num_levels or "
            "field.level_dim (the hash table, its gradient and the optimiser's state and update "
            f"need at least 0.1 GB); or, in a new run, smaller field sizes in {big}"
        )
        named += ["field.log2_hashmap_size", "field.num_levels", "field.level_dim"]

    def runs_out(*args, **kwargs):
        raise torch.OutOfMemoryError(CUDA_OUT_OF_MEMORY)

    with virtual_cuda(), pytest.MonkeyPatch.context() as m:
        m.setattr(factory, "build_guidance", runs_out)
        m.setattr(trainer, "memory_peak", lambda memory: 4 * 10**8)
        assert main(command) == 2
    err = capsys.readouterr().err
    assert err.rstrip() == expected, err
    assert named_fixes_exist(err, ["text", "a red cube"], tmp_path) == named


@pytest.mark.parametrize(
    ("memory", "half", "typed", "fixes"),
    [
        ("GPU memory", False, None, ("--fp16 (without --fp32)", "--device cpu")),
        ("GPU memory", False, [], ("--fp16", "--device cpu")),
        ("GPU memory", False, ["--fp32"], ("--fp16 (without --fp32)", "--device cpu")),
        ("GPU memory", True, None, ("", "--device cpu --fp32")),
        ("GPU memory", True, [], ("", "--device cpu --fp32")),
        ("GPU memory", True, ["--bf16"], ("", "--device cpu --fp32 (without --bf16)")),
        ("memory", False, None, ("", "")),
        ("memory", True, ["--fp16"], ("", "")),
    ],
)
def test_the_precision_fixes_of_a_run_out_of_memory(memory, half, typed, fixes):
    """One rule for every out-of-memory line: --fp16 once, for a run in float32 on the GPU
    (said to go without --fp32 unless the flags typed are known to lack it); --device cpu
    with --fp32 for a run in half precision, which the CPU refuses; neither for the host's."""
    from dreamtext.errors import precision_memory_fixes

    assert precision_memory_fixes(memory, half, typed) == fixes
