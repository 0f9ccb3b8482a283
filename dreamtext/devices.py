"""Which torch device a run uses, and running out of its memory."""

from __future__ import annotations

import gc
import os
import platform
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

import torch
from torch.torch_version import TorchVersion

from dreamtext.errors import DreamtextError
from dreamtext.flagtypes import DEVICE_FORMS
from dreamtext.inputs import default_spin_line, openmp_wait_read
from dreamtext.progress import say


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cuda`` without a GPU is a user error.

    ``cuda:N`` must name a visible GPU, and becomes the current CUDA device: libraries that
    launch on the current device (tiny-cuda-nn, memory statistics) then use the run's GPU.
    The CPU, in Python that imported torch first, may say how to keep its threads from spinning
    (:func:`warn_if_threads_spin`).
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        # Not always a flag: a GPU node's run (its config.json) or config file carries its
        # `device: cuda` to a machine without one (cli.check_cuda_flag refuses a flag where the
        # machine certainly has no GPU; here torch says so).
        raise DreamtextError(
            f"device {name} was asked for ({ASKED_BY}) but no CUDA GPU is visible; pass "
            "--device cpu"
        )
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DreamtextError(
            f"unknown device '{name}' (asked for {ASKED_BY}); use {DEVICE_FORMS}"
        ) from None
    if device.type not in ("cpu", "cuda"):  # mps, xpu, ...: never run, so not offered
        raise DreamtextError(
            f"device {name} (asked for {ASKED_BY}): dreamtext runs on cpu or cuda; use "
            f"{DEVICE_FORMS}"
        )
    if device.type == "cpu":
        warn_if_threads_spin()
    if device.type == "cuda" and device.index is not None:
        count = torch.cuda.device_count()
        if device.index >= count:
            raise DreamtextError(
                f"--device {name}: this process sees {count} CUDA GPU(s), cuda:0 to "
                f"cuda:{count - 1} (CUDA_VISIBLE_DEVICES renumbers them); use one of those"
            )
        torch.cuda.set_device(device)
    return device


# Whether this process has said :func:`default_spin_line`'s line: once is enough.
_spin_said = False


def warn_if_threads_spin() -> None:
    """Say once in the process, on stderr, how to keep torch's idle CPU threads from spinning
    where they spin (:func:`dreamtext.inputs.default_spin_line`: Python that imported torch
    before dreamtext, with libgomp's default spin count and more than one thread)."""
    global _spin_said
    line = None if _spin_said else default_spin_line(torch.get_num_threads(), os.environ)
    if line is not None:
        say(line)
        _spin_said = True


# Where a device name reaches resolve_device from: not always a flag.
ASKED_BY = "by --device, a --config file's `device:` or the resumed run's config.json"


# The variables that configure torch's GPU caching allocator: PYTORCH_ALLOC_CONF from torch 2.9
# on (the older name is then read too, with a deprecation warning), PYTORCH_CUDA_ALLOC_CONF before.
ALLOCATOR_VARIABLES = ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF")
EXPANDABLE_SEGMENTS = "expandable_segments:True"


def use_expandable_segments(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Let torch's CUDA caching allocator grow its memory segments in place
    (``expandable_segments:True``) unless the user has configured the allocator; returns the
    variable set, or ``None`` when nothing was set.

    A training step's packed samples change in number every step, so its tensors change in size
    every step: the very pattern that leaves the default allocator's fixed-size segments
    fragmented, reserving memory that no tensor uses. With expandable segments one segment per
    pool grows and shrinks by pages instead (``benchmarks/allocator_model.py`` models both).
    Set only for a CUDA build of torch on native Linux, and only before CUDA is initialised (the
    allocator reads its settings when it starts): not on Windows, which torch does not support
    it on, nor under WSL, where the driver can refuse the virtual-memory calls it makes (pytorch
    issue 192330: the first allocation fails). ``PYTORCH_ALLOC_CONF=expandable_segments:False``
    turns it off. ``environ``: the environment to change (``os.environ``).
    """
    environ = os.environ if environ is None else environ
    if any(name in environ for name in ALLOCATOR_VARIABLES):
        return None
    if torch.version.cuda is None or not sys.platform.startswith("linux") or under_wsl(environ):
        return None
    if torch.cuda.is_initialized():
        return None
    name = ALLOCATOR_VARIABLES[0 if TorchVersion(torch.__version__) >= (2, 9) else 1]
    environ[name] = EXPANDABLE_SEGMENTS
    return name


# What chose the CPU threads of this process (:func:`use_cpu_threads`): ``None`` where nothing
# did (a library caller of the trainer), and torch's own default stands.
_cpu_threads_from: str | None = None


def use_cpu_threads(threads: int | None, source: str) -> None:
    """Run torch's CPU work on ``threads`` threads (``None``: leave torch's count, which it read
    from the user's ``OMP_NUM_THREADS``); ``source`` is what chose them
    (:func:`dreamtext.inputs.cpu_threads`), recorded by :func:`cpu_threads_record`."""
    global _cpu_threads_from
    if threads is not None:
        torch.set_num_threads(threads)
    _cpu_threads_from = source


def cpu_threads_record() -> dict[str, Any]:
    """What a run's ``ran_on`` records of its CPU threads: how many torch uses, what chose them
    (``--threads``, ``DREAMTEXT_THREADS``, ``OMP_NUM_THREADS``, ``SLURM_CPUS_PER_TASK``,
    ``affinity``, ``caller``: the count of Python that imported torch before ``main``; ``None``:
    torch's default) and how OpenMP's idle threads wait: ``OMP_WAIT_POLICY`` and
    ``GOMP_SPINCOUNT`` as libgomp read them when torch loaded it (``None``: libgomp's default,
    which spins 300,000 checks; where torch was imported before dreamtext could look, those the
    process started with, unchanged since, else ``"unknown"``:
    :func:`dreamtext.inputs.openmp_wait_read`)."""
    wait = openmp_wait_read()
    return {
        "cpu_threads": torch.get_num_threads(),
        "cpu_threads_from": _cpu_threads_from,
        "omp_wait_policy": wait["OMP_WAIT_POLICY"],
        "gomp_spincount": wait["GOMP_SPINCOUNT"],
    }


def describe_device(device: torch.device) -> str:
    """What ``device`` is, in words: ``"NVIDIA H200, 139.8 GiB"`` for a GPU, ``"x86_64 CPU, 2
    threads"`` for the CPU (the threads torch uses)."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name}, {props.total_memory / 2**30:.1f} GiB"
    return f"{platform.machine() or 'unknown'} CPU, {torch.get_num_threads()} threads"


def software_versions(more: tuple[str, ...] = ()) -> dict[str, str | None]:
    """The versions a run's numbers depend on: Python, torch (and its CUDA, ``None`` on a CPU
    build), and dreamtext's model libraries, then those of the distributions ``more`` names (an
    export's mesh libraries: :data:`dreamtext.export.MESH_LIBRARIES`); ``None`` where one is
    not installed."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    for package in ("dreamtext", "diffusers", "transformers", "triton", *more):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions


def under_wsl(environ: Mapping[str, str]) -> bool:
    """Whether this Linux runs under Windows (WSL): its kernel's release names Microsoft, or
    WSL set ``WSL_DISTRO_NAME`` in ``environ``."""
    return "WSL_DISTRO_NAME" in environ or "microsoft" in platform.uname().release.lower()


# fp16 loss scaling (fp16_loss_scaler): torch's defaults, chosen by measurement (RESULTS.md,
# "fp16 loss scaler", 2026-12-03).
FP16_INIT_SCALE = 2.0**16
FP16_GROWTH_INTERVAL = 2000


def fp16_loss_scaler(dtype: torch.dtype, device: torch.device) -> torch.amp.GradScaler:
    """Dynamic loss scaling for a backward pass through ``dtype`` modules: on for fp16, whose
    small gradients underflow otherwise (bf16 has float32's range and needs none). The loss is
    multiplied by ``s`` before backward, the gradients divided by ``s`` before the optimiser; a
    step whose gradients overflow is skipped and ``s`` halved, and ``s`` doubles after
    ``growth_interval`` steps in a row without one.

    Why ``s_0 = 2^16`` and 2000 steps (torch's defaults) for SDS: the SDS gradient is
    ``w(t) (ε̂ − ε)`` with ``ε̂ − ε = (ε_c − ε) + s_g (ε_c − ε_u)``, so it grows with the guidance
    scale ``s_g``; at 1000 (FitFusion) it is ~1000 |ε_c − ε_u| per latent element, and fp16
    (largest 65,504) holds ``s · |grad|`` only for ``s`` up to ~2^4-2^7. Measured on the tiny
    pipeline under virtual CUDA at 64 px: guidance 1000 skips 12 of its first 17 steps while
    ``s`` halves from 2^16 to 2^4, then none (the built-in prior: 11, to 2^5). That search costs
    each run at most log2(2^16 / s) ≈ 12 steps of its 10,000, once. A lower ``s_0`` would save
    some of them, but is wrong the other way, silently: a gradient below fp16's smallest
    (6e-8) becomes 0 without an overflow to show it, and ``s`` only grows by 2 every
    ``growth_interval`` steps, so a low guidance (small gradients) would train on flushed
    gradients for thousands of steps. A shorter ``growth_interval`` finds a growing gradient's
    scale sooner but, once at the largest safe ``s``, skips one step in every interval (at 20:
    5% of the steps; at 2000: 0.05%). A skipped step still counts as a step of the run (its
    length, t-annealing and shading schedules follow the step; there is no learning-rate
    schedule) but not as one of Adam's (its bias correction); it is logged with
    ``update_skipped`` and counted in ``skipped_updates``."""
    return torch.amp.GradScaler(
        device.type,
        init_scale=FP16_INIT_SCALE,
        growth_interval=FP16_GROWTH_INTERVAL,
        enabled=dtype == torch.float16,
    )


# A training (text→3D, the descriptor) that learned nothing in DIVERGED_AFTER of its last
# DIVERGENCE_WINDOW steps (their update skipped, fp16's loss scaler's skips among them; in
# text→3D also steps whose ε̂ was not finite) has diverged: it saves and stops. Half the window
# leaves room for the ~16 steps the scaler skips while it finds its scale (fp16_loss_scaler).
DIVERGED_AFTER = 50
DIVERGENCE_WINDOW = 100


# What a run whose compiled code cannot be built or disagrees with the eager code does: the
# flag that turns off every compile setting (guidance.compile, guidance.compile_vae,
# render.compile_field). Leaving out --compile did not: a --config file or the resumed run's
# config.json (a rerun's too) keeps them on.
COMPILE_REMEDY = "run with --no-compile"


# How far compiled code may stray from the eager code it replaces, as a share of the eager
# result's largest magnitude: compiled against eager in bf16 differ by up to 1.1% (the default
# field's MLP on the CPU), fp16 rounds 8× finer, and wrong code is off by about the values.
COMPILED_TOLERANCE = 0.05


def compiled_agrees(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Whether a compiled function's result ``got`` is the eager ``want``: ``|got − want| ≤
    COMPILED_TOLERANCE · max |want|`` everywhere (compared in float32)."""
    want = want.float()
    scale = want.abs().max().clamp_min(1e-12)
    return torch.allclose(got.float(), want, rtol=0, atol=COMPILED_TOLERANCE * scale)


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``tensor`` moved to ``device`` without making the host wait for the GPU.

    A CUDA copy from pageable host memory synchronises the stream first (torch's
    ``memcpy_and_sync``), so a small tensor drawn on the host mid-step (noise, times, a camera)
    would wait for every kernel queued before it. On CUDA it is pinned and copied with
    ``non_blocking=True`` (torch's pinned-memory allocator keeps the staging buffer until the copy
    is done); elsewhere, or for a tensor already on a GPU, a plain ``.to``.
    """
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def free_memory(device: torch.device | None = None) -> None:
    """Collect unreachable tensors and return the CUDA cache's free blocks to the GPU (after
    dropping a stage's modules, or after a failed step). ``device=None``: whenever CUDA is
    present; otherwise only when ``device`` is a CUDA device."""
    gc.collect()
    if torch.cuda.is_available() if device is None else device.type == "cuda":
        torch.cuda.empty_cache()


# How torch's CPU allocator reports a failed allocation (c10's alloc_cpu.cpp): a RuntimeError
# "DefaultCPUAllocator: can't allocate memory: you tried to allocate N bytes", not a MemoryError.
CPU_ALLOCATION_FAILED = "can't allocate memory"


# How CUDA reports a full GPU outside torch's caching allocator (whose error is
# torch.OutOfMemoryError): a RuntimeError from a CUDA call (cudaErrorMemoryAllocation, such as
# a library's workspace) or from cuBLAS creating its handle on the first matmul.
CUDA_ALLOCATION_FAILED = ("CUDA error: out of memory", "CUBLAS_STATUS_ALLOC_FAILED")


def memory_that_ran_out(error: BaseException) -> str | None:
    """``"GPU memory"`` for CUDA's out-of-memory errors (torch's allocator's, and CUDA's own
    from outside it: :data:`CUDA_ALLOCATION_FAILED`), ``"memory"`` for the host's (Python's
    and numpy's ``MemoryError``, torch's CPU allocator's ``RuntimeError``: RAM full, or a
    ``ulimit -v`` / cgroup limit reached), ``None`` for any other error. torch.compile's
    ``BackendCompilerFailed`` (memory that ran out while Inductor built or tuned its kernels) is
    judged by the error it wraps (``inner_exception``), not taken for a compiler's failure."""
    inner = getattr(error, "inner_exception", None)
    if isinstance(inner, BaseException) and inner is not error:
        return memory_that_ran_out(inner)
    if isinstance(error, torch.OutOfMemoryError):
        return "GPU memory"
    if isinstance(error, RuntimeError) and any(t in str(error) for t in CUDA_ALLOCATION_FAILED):
        return "GPU memory"
    if isinstance(error, MemoryError) or (
        isinstance(error, RuntimeError) and CPU_ALLOCATION_FAILED in str(error)
    ):
        return "memory"
    return None


@contextmanager
def out_of_memory_is_a_user_error(explain: Callable[[str], str]) -> Iterator[None]:
    """Run the body; if the GPU or the host runs out of memory there, free what the failed work
    held and raise a :class:`DreamtextError` whose one line is ``explain(memory)``, ``memory``
    being :func:`memory_that_ran_out`'s ``"GPU memory"`` or ``"memory"``.

    ``explain`` is called after the memory is freed, so it may save files (a checkpoint) and
    name them. Any other error passes through unchanged.
    """
    try:
        yield
    except (MemoryError, RuntimeError) as error:  # torch.OutOfMemoryError is a RuntimeError
        memory = memory_that_ran_out(error)
        if memory is None:
            raise
        # handled below, outside the except block, so its frames' tensors can be freed
    else:
        return
    free_memory()
    raise DreamtextError(explain(memory))
