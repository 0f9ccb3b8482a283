"""Which torch device a run uses, and running out of its memory."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from dreamtext.errors import DreamtextError


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cuda`` without a GPU is a user error.

    ``cuda:N`` must name a visible GPU, and becomes the current CUDA device: libraries that
    launch on the current device (tiny-cuda-nn, memory statistics) then use the run's GPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DreamtextError(f"--device {name} was asked for but no CUDA GPU is visible; use cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DreamtextError(f"unknown --device '{name}'; use auto, cpu or cuda") from None
    if device.type == "cuda" and device.index is not None:
        count = torch.cuda.device_count()
        if device.index >= count:
            raise DreamtextError(
                f"--device {name}: this process sees {count} CUDA GPU(s), cuda:0 to "
                f"cuda:{count - 1} (CUDA_VISIBLE_DEVICES renumbers them); use one of those"
            )
        torch.cuda.set_device(device)
    return device


def fp16_loss_scaler(dtype: torch.dtype, device: torch.device) -> torch.amp.GradScaler:
    """Dynamic loss scaling for a backward pass through ``dtype`` modules: on for fp16, whose
    small gradients underflow otherwise (bf16 has float32's range and needs none). The loss is
    multiplied by ``s`` before backward, the gradients divided by ``s`` before the optimiser; a
    step whose gradients overflow is skipped and ``s`` halved."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def free_memory(device: torch.device | None = None) -> None:
    """Collect unreachable tensors and return the CUDA cache's free blocks to the GPU (after
    dropping a stage's modules, or after a failed step). ``device=None``: whenever CUDA is
    present; otherwise only when ``device`` is a CUDA device."""
    gc.collect()
    if torch.cuda.is_available() if device is None else device.type == "cuda":
        torch.cuda.empty_cache()


@contextmanager
def out_of_gpu_memory_is_a_user_error(explain: Callable[[], str]) -> Iterator[None]:
    """Run the body; if CUDA runs out of memory there, free what the failed work held and raise
    a :class:`DreamtextError` whose one line is ``explain()``.

    ``explain`` is called after the memory is freed, so it may save files (a checkpoint) and
    name them. Any other error passes through unchanged.
    """
    try:
        yield
    except torch.OutOfMemoryError:
        pass  # handled below, outside the except block, so its frames' tensors can be freed
    else:
        return
    free_memory()
    raise DreamtextError(explain())
