"""dreamtext.devices: the device lines and the memory that ran out, by their docstrings."""

from __future__ import annotations

import types

import pytest
import torch

from dreamtext.errors import DreamtextError


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_any_cuda_device_without_a_gpu_names_the_flag_to_pass(monkeypatch, name):
    """``cuda:N`` where no GPU is visible is the same line as ``cuda``, not "this process sees 0
    CUDA GPU(s), cuda:0 to cuda:-1"."""
    from dreamtext.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(
        DreamtextError,
        match=rf"^--device {name} was asked for but no CUDA GPU is visible; use --device cpu$",
    ):
        resolve_device(name)


def test_a_gpu_is_described_by_its_name_and_memory_in_gib(monkeypatch):
    from dreamtext.devices import describe_device

    props = types.SimpleNamespace(name="NVIDIA H100", total_memory=80 * 2**30 + 2**29)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    assert describe_device(torch.device("cuda", 0)) == "NVIDIA H100, 80.5 GiB"


@pytest.mark.parametrize(
    ("error", "memory"),
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "GPU memory"),
        (MemoryError(), "memory"),
        (
            RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8"),
            "memory",
        ),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), None),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), None),
        (ValueError("can't allocate memory"), None),
    ],
)
def test_the_memory_that_ran_out(error, memory):
    from dreamtext.devices import memory_that_ran_out

    assert memory_that_ran_out(error) == memory


def test_another_error_passes_through_the_out_of_memory_block():
    from dreamtext.devices import out_of_memory_is_a_user_error

    with (
        pytest.raises(RuntimeError, match="shapes"),
        out_of_memory_is_a_user_error(lambda memory: f"ran out of {memory}"),
    ):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    with (
        pytest.raises(DreamtextError, match=r"^ran out of GPU memory$"),
        out_of_memory_is_a_user_error(lambda memory: f"ran out of {memory}"),
    ):
        raise torch.OutOfMemoryError("CUDA out of memory")


def test_compiled_code_agrees_within_five_percent_of_the_largest_magnitude():
    """|got − want| ≤ 0.05 · max|want| everywhere: want's largest is 2, so 0.09 off passes,
    0.11 off anywhere fails, as does a result of the wrong sign."""
    from dreamtext.devices import compiled_agrees

    want = torch.tensor([1.0, -2.0, 0.0], dtype=torch.bfloat16)
    assert compiled_agrees(want + torch.tensor([0.09, -0.09, 0.09]), want)
    assert not compiled_agrees(want + torch.tensor([0.0, 0.0, 0.11]), want)
    assert not compiled_agrees(-want, want)
    assert compiled_agrees(torch.zeros(3), torch.zeros(3))


def test_running_out_of_memory_frees_it_before_the_line_is_made(monkeypatch):
    """explain is called after the failed work's memory is freed (it may save a checkpoint)."""
    import dreamtext.devices as devices

    events = []
    monkeypatch.setattr(devices, "free_memory", lambda device=None: events.append("freed"))

    def explain(memory: str) -> str:
        events.append("explained")
        return f"out of {memory}"

    with (
        pytest.raises(DreamtextError, match=r"^out of memory$"),
        devices.out_of_memory_is_a_user_error(explain),
    ):
        raise MemoryError
    assert events == ["freed", "explained"]
