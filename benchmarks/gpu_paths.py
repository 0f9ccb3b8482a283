"""The CUDA code paths that have never run on a GPU, each run once, as small as it goes.

    python benchmarks/gpu_paths.py                      (on CUDA: every path)
    python benchmarks/gpu_paths.py --only adan save     (some of them)
    DREAMTEXT_PATHS_DEVICE=cpu python benchmarks/gpu_paths.py   (this script's own check: the
        paths that run on the CPU too, the CUDA-only ones skipped with the reason)
    python benchmarks/gpu_paths.py --device virtual-cuda --only fp32   (a CUDA path's checks
        against tests/virtual_cuda.py's emulation, on the CPU; slow)

Every path drives the real command line (``dreamtext text`` / ``image``, each a process of its
own) on the built-in prior or tiny random models (tests/tiny_models.py, tests/tiny_clip.py,
written once into the work folder), and checks what the user would see: the exit status, the
line on stderr, the files left. A path that needs a fault a GPU will not produce on demand
(memory that runs out while torch.compile builds, a Triton grid that disagrees with the
reference, gradients that overflow fp16) gets it from a patch applied in that ``dreamtext``
process (:data:`PATCHES`), around the real CUDA code. Each path runs in a process group of its
own with its own time limit and ends with one line, ``NAME ok``, ``NAME FAIL <why>`` or ``NAME
skip <why>``, so a run cut short still tells which passed; each one's output goes to
``LOGS/paths_NAME.log`` (``$OUT`` on the device machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

SCRIPT = Path(__file__).resolve()
TESTS = SCRIPT.parents[1] / "tests"
RESULT = "gpu_paths result:"  # the last line a path's process prints: "ok" or "FAIL <why>"
KILL_GRACE_SECONDS = 15  # SIGTERM, then SIGKILL: the trainer saves a checkpoint on SIGTERM
MODELS_SECONDS = 30
PROMPT = "a red cube"


@dataclass
class Output:
    """A ``dreamtext`` command's exit status and what it wrote (stdout and stderr together)."""

    returncode: int
    stderr: str


class Failed(Exception):
    """What a path found wrong: its ``FAIL`` line's reason."""


def expect(condition: object, why: str) -> None:
    """Raise :class:`Failed` with ``why`` unless ``condition`` holds."""
    if not condition:
        raise Failed(why)


@dataclass
class Context:
    """What a path runs with: the device it runs on and the work folder (models, configs,
    workspaces, the built-in prior's cache)."""

    device: str
    work: Path
    virtual: bool = False  # ``cuda`` under tests/virtual_cuda.py's emulation, on the CPU
    path: str = ""  # the path running: its workspaces are its own

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def tiny_sd(self) -> Path:
        return self.work / "models" / "tiny_sd"

    @property
    def tiny_clip(self) -> Path:
        return self.work / "models" / "tiny_clip"

    def config(self, name: str) -> str:
        return str(self.work / "configs" / f"{name}.yaml")

    def workspace(self, name: str) -> Path:
        return self.work / "runs" / self.path / name


# The field and samples of tests/tiny_models.py's TINY_TRAIN, as a --config; 16 px renders.
TINY_FIELD = {
    "num_levels": 4,
    "log2_hashmap_size": 10,
    "base_resolution": 4,
    "finest_resolution_factor": 32.0,
    "hidden_dim": 16,
    "num_blocks": 1,
    "bg_hidden_dim": 8,
}
TINY_RENDER = {"num_steps": 16, "upsample_steps": 4, "march_steps": 64, "grid_resolution": 16}
CONFIGS = {
    "tiny": {
        "field": TINY_FIELD,
        "render": TINY_RENDER,
        "checkpoint_every": 2,
        "preview_every": 0,
        "log_every": 1,
    },
    "adan": {"optimizer": "adan"},
    "no_field_compile": {"render": {"compile_field": False}},
    # 128 levels × 8 features, up to 2^24 rows a level from resolution 16 to 2048: ~8.6 G
    # values, 171 GB with their gradients and Adam's state on CUDA (20 B a value), past an
    # H200's 139 GB and this machine's memory.
    "huge_grid": {
        "field": {
            "num_levels": 128,
            "level_dim": 8,
            "log2_hashmap_size": 24,
            "base_resolution": 16,
            "finest_resolution_factor": 2048.0,
        }
    },
    "descriptor_lr": {"image_to_3d": {"descriptor": {"lr": 1e37}}},
    "save_every_step": {"checkpoint_every": 1, "keep_checkpoints": 2},
    "weights_overflow": {"checkpoint_every": 2, "keep_checkpoints": 1},
}


def write_configs(work: Path) -> None:
    """:data:`CONFIGS` as ``work/configs/NAME.yaml`` (JSON, which YAML reads) and the sentence
    search's vocabularies."""
    (work / "configs").mkdir(parents=True, exist_ok=True)
    for name, config in CONFIGS.items():
        (work / "configs" / f"{name}.yaml").write_text(json.dumps(config))
    (work / "nouns.txt").write_text("cube\nsphere\n")
    (work / "adjectives.txt").write_text("red\nblue\n")


def write_models(work: Path) -> None:
    """The tiny Stable Diffusion and CLIP of the tests, and an image, into ``work``."""
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(TESTS))
    from tiny_clip import write_clip
    from tiny_models import write_tiny_sd

    write_tiny_sd(work / "models" / "tiny_sd")
    write_clip(work / "models" / "tiny_clip")
    rgba = np.zeros((48, 48, 4), dtype=np.uint8)
    rgba[12:36, 12:36] = (220, 30, 30, 255)
    Image.fromarray(rgba, "RGBA").save(work / "red.png")


def dreamtext(ctx: Context, *args: str, patch: str = "none", env: dict | None = None) -> Output:
    """``dreamtext ARGS`` in a process of its own (this script's ``--as-dreamtext``, which
    applies ``patch`` first), in the work folder; its output (stdout and stderr, as a terminal
    shows them) goes to this path's log as it comes, so that a path ended at its time limit
    leaves what its command said last."""
    command = [sys.executable, str(SCRIPT), "--as-dreamtext", patch, *args]
    print(f"$ dreamtext {shlex.join(args)}" + (f"   (patch: {patch})" if patch != "none" else ""))
    sys.stdout.flush()
    process = subprocess.Popen(
        command,
        cwd=ctx.work,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            "DREAMTEXT_CACHE": str(ctx.work / "cache"),
            **os.environ,
            **({"GPU_PATHS_VIRTUAL": "1"} if ctx.virtual else {}),
            **(env or {}),
        },
    )
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        sys.stdout.write(line)
        sys.stdout.flush()
    returncode = process.wait()
    print(f"exit {returncode}", flush=True)
    return Output(returncode, "".join(lines))


def error_lines(result: Output) -> list[str]:
    """The ``dreamtext: error:`` lines of a command's stderr."""
    return [line for line in result.stderr.splitlines() if line.startswith("dreamtext: error:")]


def one_error(result: Output, *parts: str) -> str:
    """The command's one error line, after checking it exited 2 without a traceback and that
    the line holds each of ``parts``."""
    expect(result.returncode == 2, f"exit {result.returncode}, not 2: {last_line(result)}")
    expect("Traceback" not in result.stderr, f"a traceback: {last_line(result)}")
    lines = error_lines(result)
    expect(len(lines) == 1, f"{len(lines)} error lines: {last_line(result)}")
    for part in parts:
        expect(part in lines[0], f"no {part!r} in: {lines[0]}")
    return lines[0]


def succeeded(result: Output) -> None:
    expect(result.returncode == 0, f"exit {result.returncode}: {last_line(result)}")


def last_line(result: Output) -> str:
    """What a failed command said: its error line, else its last line."""
    lines = error_lines(result) or result.stderr.strip().splitlines()
    return lines[-1][:300] if lines else "(no output)"


def text_args(ctx: Context, name: str, *more: str, model: str = "builtin:shapes") -> list[str]:
    """A tiny ``dreamtext text`` run of :data:`PROMPT` into workspace ``name`` on the device."""
    return [
        "text", PROMPT, "--model", model, "--device", ctx.device, "--h", "16",
        "--config", ctx.config("tiny"), "--workspace", str(ctx.workspace(name)), "--no-export",
        *emulated(ctx), *more,
    ]  # fmt: skip


def emulated(ctx: Context) -> list[str]:
    """Under the emulation, the torch hash grid (Triton's CPU interpreter would take minutes)
    and the field's MLPs eager (torch.compile fails there, after seconds of trying)."""
    if not ctx.virtual:
        return []
    return ["--encoding", "torch", "--config", ctx.config("no_field_compile")]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def raw_checkpoint(path: Path) -> dict:
    """``torch.load`` of a checkpoint as saved: its tensors on the devices they were saved from
    (``dreamtext.checkpoint.load_checkpoint`` maps them to the CPU)."""
    import torch

    return torch.load(path, weights_only=False)


# The paths. Each raises Failed (or anything) where the code misbehaves; its docstring says what
# it runs, and why that path had not run.


def path_builtin(ctx: Context) -> str:
    """The built-in prior on ``--device``: 4 steps and a resume to 6; ``ran_on`` names the
    device, the hash grid is Triton's on CUDA (auto), and the checkpoints are whole."""
    from dreamtext.checkpoint import load_checkpoint

    succeeded(dreamtext(ctx, *text_args(ctx, "builtin", "--iters", "4")))
    succeeded(dreamtext(ctx, *text_args(ctx, "builtin", "--iters", "6", "--resume")))
    config = read_json(ctx.workspace("builtin") / "config.json")
    expect(config["ran_on"]["device"] == ctx.device.split(":")[0], f"ran_on {config['ran_on']}")
    backend = config.get("encoding_backend")
    expect(backend == ("triton" if ctx.cuda else "torch"), f"encoding_backend {backend}")
    state = load_checkpoint(ctx.workspace("builtin") / "checkpoints" / "last.pt")
    expect(state["step"] == 6, f"last.pt holds step {state['step']}")
    return f"{config['ran_on'].get('device_name', '')}, encoding {backend}"


def path_adan(ctx: Context) -> str:
    """``optimizer: adan`` on the device (its clip factor a device tensor, its state beside the
    parameters): 4 steps, a resume to 6 that restores Adan's state, weights finite and moved."""
    import torch

    args = ("--config", ctx.config("adan"))
    succeeded(dreamtext(ctx, *text_args(ctx, "adan", "--iters", "4", *args)))
    last = ctx.workspace("adan") / "checkpoints" / "last.pt"
    before = raw_checkpoint(last)
    succeeded(dreamtext(ctx, *text_args(ctx, "adan", "--iters", "6", "--resume", *args)))
    after = raw_checkpoint(last)
    expect(after["step"] == 6, f"last.pt holds step {after['step']}")
    states = after["optimizer"]["state"].values()
    expect(states and all("exp_avg_diff" in s for s in states), "no Adan state in the checkpoint")
    expect(all(s["step"] == 6 for s in states), "Adan's step count is not 6 after the resume")
    moved = [
        not torch.equal(after["field"][k].cpu(), v.cpu())
        for k, v in before["field"].items()
        if v.is_floating_point()
    ]
    finite = all(torch.isfinite(v).all() for v in after["field"].values() if v.is_floating_point())
    expect(any(moved) and finite, f"weights moved {any(moved)}, finite {finite}")
    return "steps 4 and 6 saved, Adan's state resumed"


def path_save(ctx: Context) -> str:
    """A checkpoint saved straight from the device's tensors (torch.save into the temp file):
    each step's save, then the file read as saved (its tensors on the device), through
    ``load_checkpoint`` (the digest checked, on the CPU), and by a process that sees no GPU."""
    import torch

    from dreamtext.checkpoint import load_checkpoint

    more = ("--iters", "3", "--config", ctx.config("save_every_step"))
    succeeded(dreamtext(ctx, *text_args(ctx, "save", *more)))
    folder = ctx.workspace("save") / "checkpoints"
    names = sorted(p.name for p in folder.glob("*.pt"))
    expect(names == ["last.pt", "step_000002.pt"], f"checkpoint files {names}")
    raw = raw_checkpoint(folder / "last.pt")
    devices = {v.device.type for v in raw["field"].values() if isinstance(v, torch.Tensor)}
    expect(devices == {ctx.device.split(":")[0]}, f"field tensors saved from {devices}")
    state = load_checkpoint(folder / "last.pt")
    expect(state["step"] == 3, f"step {state['step']}")
    read_without_gpu = subprocess.run(
        [sys.executable, "-c", "import sys; from dreamtext.checkpoint import load_checkpoint; "
         "print(load_checkpoint(sys.argv[1])['step'])", str(folder / "last.pt")],
        capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )  # fmt: skip
    expect(read_without_gpu.stdout.strip() == "3", f"without a GPU: {read_without_gpu.stderr}")
    return f"tensors saved from {sorted(devices)}, read back on a host without a GPU"


def path_weights_check(ctx: Context) -> str:
    """The weights check of every save (``weights_render_finite``: a render of 8×8 rays on the
    device, the device's random state forked): the update of step 4, a checkpoint step,
    overflows the weights (patch ``weights_overflow``); the run stops as diverged, last.pt
    stays step 2's, which renders finite."""
    from dreamtext.checkpoint import load_checkpoint

    more = ("--iters", "20", "--config", ctx.config("weights_overflow"))
    result = dreamtext(ctx, *text_args(ctx, "weights", *more), patch="weights_overflow")
    last = ctx.workspace("weights") / "checkpoints" / "last.pt"
    one_error(result, "overflowed float32 in step 4", f"{last} stays the checkpoint of step 2")
    expect(load_checkpoint(last)["step"] == 2, "last.pt is not step 2's")
    return "step 4's overflowed weights not saved"


def path_field_memory(ctx: Context) -> str:
    """The field memory check with the device's total memory (on CUDA the GPU's: never run):
    a hash grid of 171 GB is refused in one line before the model loads, nothing written."""
    args = text_args(ctx, "huge", "--iters", "2", "--config", ctx.config("huge_grid"))
    had = "of GPU memory and the GPU has" if ctx.cuda else "of memory and"
    line = one_error(dreamtext(ctx, *args), "field's hash grid", had)
    expect(not ctx.workspace("huge").exists(), "the refused run wrote its workspace")
    return line.split("; ")[1]


def path_oom_compile(ctx: Context) -> str:
    """Memory that runs out while torch.compile builds (``BackendCompilerFailed`` wrapping
    CUDA's own out-of-memory error, from a real allocation the GPU refuses; patch
    ``compiler_out_of_memory``) is the out-of-memory line, not "torch.compile does not build":
    first where the field's MLPs compile (before the first step), then the U-Net's (in the
    first step, the trainer's handler: a checkpoint and the fixes)."""
    marker = ctx.work / "compiler_reached"
    env = {"GPU_PATHS_MARKER": str(marker)}
    lines = []
    for name, config in (("oom_field", "tiny"), ("oom_unet", "no_field_compile")):
        marker.unlink(missing_ok=True)
        args = text_args(ctx, name, "--iters", "2", "--compile", model=str(ctx.tiny_sd))
        args += ["--config", ctx.config(config)]
        result = dreamtext(ctx, *args, patch="compiler_out_of_memory", env=env)
        expect(marker.exists(), f"{name}: the compiler was never called")
        line = one_error(result, "out of GPU memory")
        expect("torch.compile does not build" not in line, f"{name}: {line}")
        lines.append(line)
    return "both out-of-memory lines"


def path_triton_fallback(ctx: Context) -> str:
    """``--encoding auto`` on CUDA whose Triton grid fails its self-check (the real kernels,
    their output shifted: patch ``triton_disagrees``) says so in one ``dreamtext:`` line, no
    warning, and the run trains on the torch grid."""
    result = dreamtext(ctx, *text_args(ctx, "fallback", "--iters", "2"), patch="triton_disagrees")
    succeeded(result)
    said = [line for line in result.stderr.splitlines() if "falling back" in line]
    expect(len(said) == 1 and said[0].startswith("dreamtext: "), f"fallback lines: {said}")
    # The warning it was: '.../field.py:325: UserWarning: ...' and its source line.
    expect("make_encoding(" not in result.stderr, "the fallback said as a Python warning")
    backend = read_json(ctx.workspace("fallback") / "config.json").get("encoding_backend")
    expect(backend == "torch", f"encoding_backend {backend}")
    return said[0][len("dreamtext: ") :][:120]


def image_args(ctx: Context, name: str, *more: str) -> list[str]:
    """A tiny ``dreamtext image`` run of red.png into workspace ``name`` on the device."""
    return [
        "image", "red.png", "--model", str(ctx.tiny_sd), "--clip", str(ctx.tiny_clip),
        "--nouns", "nouns.txt", "--adjectives", "adjectives.txt", "--max-words", "2",
        "--device", ctx.device, "--h", "16", "--iters", "2", "--config", ctx.config("tiny"),
        "--no-export", "--workspace", str(ctx.workspace(name)), *emulated(ctx), *more,
    ]  # fmt: skip


def path_descriptor_bound(ctx: Context) -> str:
    """The descriptor's per-step vector bound, read in the step's one copy from the device:
    at ``image_to_3d.descriptor.lr`` 1e37 the vectors pass 1e4 in step 1, which stops the
    training there, nothing saved, no text→3D stage."""
    args = image_args(
        ctx, "bound", "--descriptor-iters", "6", "--config", ctx.config("descriptor_lr")
    )
    one_error(dreamtext(ctx, *args), "reached a value of 1e+37 in step 1", "descriptor.lr")
    status = read_json(ctx.workspace("bound") / "status.json")
    got = (status["state"], status.get("phase"), status["step"])
    expect(got == ("failed", "descriptor", 1), f"status {got}")
    expect(not (ctx.workspace("bound") / "checkpoints").exists(), "text→3D started")
    return "stopped in step 1"


def path_descriptor_skips(ctx: Context) -> str:
    """The descriptor's fp16 skip window with ``GradScaler("cuda")``: every step's gradients
    infinite (patch ``descriptor_gradients_infinite``) make the scaler skip 50 updates, which
    save the checkpoint and stop naming --bf16; the rerun with --fp32 goes on from step 50 in
    float32 to the end, text→3D included. The end is step 51: one float32 step after the
    resume shows it trains on (under the emulation a step of the tiny U-Net took ~12 s)."""
    args = image_args(ctx, "skips", "--descriptor-iters", "51")
    result = dreamtext(ctx, *args, "--fp16", patch="descriptor_gradients_infinite")
    one_error(result, "in 50 of the 50 steps up to step 50", "fp16 loss scaler", "--bf16")
    descriptor = ctx.workspace("skips") / "descriptor"
    # Logged every 10 steps, each with the scale it ran at: 2^16, halved at every skip.
    records = [json.loads(line) for line in (descriptor / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records]
    expect(steps == [10, 20, 30, 40, 50], f"log lines of steps {steps}")
    expect(all(r["update_skipped"] for r in records), "a logged step not skipped")
    scales = [r["loss_scale"] for r in records]
    expect(scales == [2.0 ** (17 - step) for step in steps], f"loss scales {scales}")
    succeeded(dreamtext(ctx, *args, "--fp32"))
    expect((descriptor / "learned_embeds.safetensors").is_file(), "no learned embedding")
    # The rerun went on from step 50's checkpoint: its one line is the last step's.
    steps = [
        json.loads(line)["step"] for line in (descriptor / "log.jsonl").read_text().splitlines()
    ]
    expect(steps == [10, 20, 30, 40, 50, 51], f"log lines of steps {steps} after the rerun")
    config = read_json(ctx.workspace("skips") / "config.json")
    expect(not config["guidance"]["fp16"], "config.json keeps guidance.fp16")
    return "50 skips stopped it; --fp32 finished it"


def path_fp32(ctx: Context) -> str:
    """``--fp32`` over a run recorded in fp16: the built-in prior trains 2 steps with --fp16
    (the field's MLPs under CUDA's fp16 autocast, the loss scaler on), then ``--resume --fp32``
    goes on in float32, as config.json and the log's lines show."""
    name = "fp32"
    succeeded(dreamtext(ctx, *text_args(ctx, name, "--iters", "2", "--fp16")))
    ran_on = read_json(ctx.workspace(name) / "config.json")["ran_on"]
    expect(
        ran_on["field_mlp_dtype"] == "float16", f"fp16 run's MLPs in {ran_on['field_mlp_dtype']}"
    )
    result = dreamtext(ctx, *text_args(ctx, name, "--iters", "4", "--resume", "--fp32"))
    succeeded(result)
    expect("guidance.fp16 true → false" in result.stderr, "no 'guidance.fp16 true → false' line")
    config = read_json(ctx.workspace(name) / "config.json")
    expect(not config["guidance"]["fp16"], "config.json keeps guidance.fp16")
    expect(config["ran_on"]["field_mlp_dtype"] == "float32", f"ran_on {config['ran_on']}")
    log = ctx.workspace(name) / "log.jsonl"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    resumed = [r for r in records if r["step"] > 2]
    expect([r["step"] for r in resumed] == [3, 4], f"steps {[r['step'] for r in records]}")
    expect(not any("loss_scale" in r for r in resumed), "a loss scale after --fp32")
    return "resumed in float32"


@dataclass
class PathCheck:
    run: Callable[[Context], str]
    seconds: int
    cuda_only: str | None = None  # why it cannot run on the CPU
    not_emulated: str | None = None  # why it cannot run under tests/virtual_cuda.py
    models: bool = False  # needs the tiny models


# In run order; timeouts are upper bounds (a cold start of Python, torch and CUDA is ~5-10 s a
# process, and most paths start two or three).
PATHS: dict[str, PathCheck] = {
    "builtin": PathCheck(path_builtin, 45, not_emulated="it checks Triton's kernels ran"),
    "save": PathCheck(path_save, 20, not_emulated="emulated GPU tensors are saved as the CPU's"),
    "weights_check": PathCheck(path_weights_check, 25),
    "adan": PathCheck(path_adan, 30),
    "field_memory": PathCheck(path_field_memory, 15),
    "fp32": PathCheck(path_fp32, 30, "--fp16 is CUDA only"),
    "triton_fallback": PathCheck(
        path_triton_fallback,
        30,
        "the auto backend is torch off CUDA",
        "Triton's CPU interpreter takes minutes",
    ),
    "oom_compile": PathCheck(
        path_oom_compile,
        45,
        "the fault is CUDA's out-of-memory error",
        "torch.compile is not emulated",
        models=True,
    ),
    "descriptor_bound": PathCheck(path_descriptor_bound, 30, models=True),
    "descriptor_skips": PathCheck(path_descriptor_skips, 45, "--fp16 is CUDA only", models=True),
}


# Faults a GPU gives only by chance, applied in a `dreamtext` process before it runs.


def patch_weights_overflow() -> None:
    """Step 4's update overflows the weights (tests/step_faults.py's, as ``--lr 1e8`` does);
    the divergence window is 3 steps of 4, as tests/test_trainer.py's ``diverged_message``."""
    sys.path.insert(0, str(TESTS))
    from step_faults import weights_overflow_in_step

    from dreamtext import trainer

    trainer.DIVERGED_AFTER, trainer.DIVERGENCE_WINDOW = 3, 4
    weights_overflow_in_step(SimpleNamespace(setattr=setattr), 4)


def patch_compiler_out_of_memory() -> None:
    """Inductor's compile asks the GPU for 1 PiB first: CUDA's real out-of-memory error,
    raised inside torch.compile's backend (which wraps it). Leaves ``$GPU_PATHS_MARKER``."""
    import torch
    import torch._inductor.compile_fx as compile_fx

    def out_of_memory(*args, **kwargs):
        Path(os.environ["GPU_PATHS_MARKER"]).touch()
        torch.empty(2**50, dtype=torch.uint8, device="cuda")
        raise AssertionError("the GPU gave 1 PiB")

    compile_fx.compile_fx = out_of_memory


def patch_triton_disagrees() -> None:
    """The Triton grid's features shifted by 1 after its real kernels ran."""
    from dreamtext.encoding import TritonHashGrid

    real = TritonHashGrid.forward
    TritonHashGrid.forward = lambda self, x, *a, **k: real(self, x, *a, **k) + 1.0


def patch_descriptor_gradients_infinite() -> None:
    """Every descriptor step's loss infinite in the vectors, so their gradients are, as a U-Net
    that overflows fp16 gives; those steps skip the augmentation, the VAE and the U-Net
    (tests/test_descriptor.py's ``_fp16_steps_overflowing``): in fp16 on the CPU, under the
    emulation, a step of the tiny U-Net took ~20 s. The scaler's unscale, skip and scale are
    the real ones on the device."""
    import torch

    from dreamtext.descriptor import DescriptorTrainer

    DescriptorTrainer.noisy_batch = lambda self, image, step: (torch.zeros(()),) * 4

    def loss(self, *batch):
        infinite = self.placeholders.vectors.sum() * float("inf")
        return infinite, {"loss_real": infinite.detach(), "loss_base": infinite.detach()}

    DescriptorTrainer.loss = loss


PATCHES: dict[str, Callable[[], None]] = {
    "none": lambda: None,
    "weights_overflow": patch_weights_overflow,
    "compiler_out_of_memory": patch_compiler_out_of_memory,
    "triton_disagrees": patch_triton_disagrees,
    "descriptor_gradients_infinite": patch_descriptor_gradients_infinite,
}


def as_dreamtext(patch: str, args: list[str]) -> int:
    """``dreamtext ARGS`` in this process (``dreamtext.__main__.run``: its handlers, its exit
    status), after :data:`PATCHES`' ``patch``."""
    PATCHES[patch]()
    if os.environ.get("GPU_PATHS_VIRTUAL") == "1":
        sys.path.insert(0, str(TESTS))
        from virtual_cuda import main as virtual_cuda_main

        return virtual_cuda_main(args)
    from dreamtext.__main__ import run

    sys.argv = ["dreamtext", *args]
    return run()


def run_path(name: str, ctx: Context) -> int:
    """Run path ``name`` in this process, in workspaces of its own made anew (a work folder
    used again holds the last attempt's); its last line is :data:`RESULT`'s."""
    shutil.rmtree(ctx.work / "runs" / name, ignore_errors=True)
    ctx.path = name
    try:
        detail = PATHS[name].run(ctx) if name != "models" else write_models(ctx.work)
    except Failed as failure:
        print(f"{RESULT} FAIL {failure}", flush=True)
        return 1
    except Exception as error:  # a bug in the path, or the code it drives: its traceback above
        import traceback

        traceback.print_exc()
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        print(f"{RESULT} FAIL {type(error).__name__}: {first}", flush=True)
        return 1
    print(f"{RESULT} ok" + (f" ({detail})" if detail else ""), flush=True)
    return 0


def run_in_group(name: str, seconds: int, ctx: Context, log: Path) -> str:
    """Path ``name`` in a process group of its own, ended at ``seconds`` (SIGTERM, SIGKILL
    :data:`KILL_GRACE_SECONDS` later); returns its line's status and reason."""
    device = "virtual-cuda" if ctx.virtual else ctx.device
    command = [sys.executable, str(SCRIPT), "--one", name, "--device", device]
    command += ["--work", str(ctx.work)]
    start = time.monotonic()
    with log.open("w") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            process.wait(timeout=seconds)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=KILL_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    took = f"{time.monotonic() - start:.0f} s"
    results = [line for line in log.read_text().splitlines() if line.startswith(RESULT)]
    if results:  # a path killed after its line (ending the process took the time left) passed
        return f"{results[-1][len(RESULT) :].strip()} [{took}]"
    if timed_out:
        return f"FAIL timed out after {seconds} s (log: {log})"
    tail = log.read_text().strip().splitlines()
    return f"FAIL exit {process.returncode}: {tail[-1][:300] if tail else '(no output)'}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--as-dreamtext"]:
        return as_dreamtext(argv[1], argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--device",
        default=os.environ.get("DREAMTEXT_PATHS_DEVICE", "cuda"),
        help="cuda or cuda:N (the paths' device), cpu (those that run on a CPU: this script's "
        "own check), or virtual-cuda (the CUDA paths that tests/virtual_cuda.py emulates, on "
        "the CPU) [$DREAMTEXT_PATHS_DEVICE, else cuda]",
    )
    parser.add_argument("--only", nargs="+", choices=list(PATHS), help="these paths alone")
    parser.add_argument("--work", type=Path, help="work folder [a new temporary one]")
    parser.add_argument("--logs", type=Path, help="each path's log [$OUT, else the work folder]")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiply each path's time limit (a loaded CPU runs them slower) [1]",
    )
    parser.add_argument("--one", choices=["models", *PATHS], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device not in ("cpu", "virtual-cuda") and not args.device.startswith("cuda"):
        parser.error(f"--device cuda, cpu or virtual-cuda, not {args.device}")
    virtual = args.device == "virtual-cuda"
    device = "cuda" if virtual else args.device
    if args.one:
        return run_path(args.one, Context(device, args.work, virtual))
    work = args.work or Path(tempfile.mkdtemp(prefix="dreamtext-paths-"))
    work.mkdir(parents=True, exist_ok=True)
    logs = args.logs or Path(os.environ.get("OUT") or work)
    logs.mkdir(parents=True, exist_ok=True)
    ctx = Context(device, work, virtual)
    write_configs(work)
    names = args.only or list(PATHS)
    print(f"work folder {work}, logs in {logs}/paths_*.log", flush=True)
    models = "ok"
    runs = [name for name in names if ctx.cuda or not PATHS[name].cuda_only]
    if any(PATHS[name].models for name in runs if not (virtual and PATHS[name].not_emulated)):
        seconds = round(MODELS_SECONDS * args.time_scale)
        models = run_in_group("models", seconds, ctx, logs / "paths_models.log")
        print(f"models {models}", flush=True)
    failed = 0
    for name in names:
        path = PATHS[name]
        if path.cuda_only and not ctx.cuda:
            print(f"{name} skip needs CUDA: {path.cuda_only}", flush=True)
            continue
        if path.not_emulated and virtual:
            print(f"{name} skip not under virtual CUDA: {path.not_emulated}", flush=True)
            continue
        if path.models and not models.startswith("ok"):
            line = "FAIL the tiny models were not written"
        else:
            seconds = round(path.seconds * args.time_scale)
            line = run_in_group(name, seconds, ctx, logs / f"paths_{name}.log")
        failed += not line.startswith("ok")
        print(f"{name} {line}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
