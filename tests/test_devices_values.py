"""dreamtext.devices: the device lines and the memory that ran out, by their docstrings."""

from __future__ import annotations

import types

import pytest
import torch

from dreamtext.errors import DreamtextError


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_any_cuda_device_without_a_gpu_names_the_flag_to_pass(monkeypatch, name):
    """``cuda:N`` where no GPU is visible is the same line as ``cuda``, not "this process sees 0
    CUDA GPU(s), cuda:0 to cuda:-1"; it names where else than a flag the setting comes from (a
    config file's `device: cuda` was "--device cuda was asked for", of a flag never typed)."""
    from dreamtext.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(
        DreamtextError,
        match=rf"^device {name} was asked for \(by --device, a --config file's `device:` or "
        r"the resumed run's config.json\) but no CUDA GPU is visible; pass --device cpu$",
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
        # CUDA's own allocation failures, outside torch's caching allocator: a library's
        # workspace on a full GPU, cuBLAS's handle on the first matmul.
        (RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be ..."), "GPU memory"),
        (
            RuntimeError(
                "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"
            ),
            "GPU memory",
        ),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), None),
        (RuntimeError("CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling cublasCreate"), None),
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


@pytest.mark.parametrize(("name", "count"), [("cuda:1", 1), ("cuda:2", 2), ("cuda:0", 0)])
def test_a_gpu_index_past_the_visible_ones_is_a_user_error(monkeypatch, name, count):
    """``cuda:N`` names one of cuda:0 to cuda:count-1; N = count is one past the last."""
    from dreamtext.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: pytest.fail("set"))
    with pytest.raises(DreamtextError, match=rf"^--device {name}: this process sees {count} "):
        resolve_device(name)


def test_no_allocator_setting_is_made_under_wsl(monkeypatch):
    """use_expandable_segments: not under WSL (WSL_DISTRO_NAME set), where the driver can
    refuse expandable segments; on native Linux with a CUDA build it is set."""
    import dreamtext.devices as devices

    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(devices.sys, "platform", "linux")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert devices.use_expandable_segments({"WSL_DISTRO_NAME": "Ubuntu"}) is None
    environ: dict[str, str] = {}
    if "microsoft" not in devices.platform.uname().release.lower():
        name = devices.use_expandable_segments(environ)
        assert name is not None and environ == {name: "expandable_segments:True"}


def test_the_loss_is_scaled_only_for_fp16():
    """fp16_loss_scaler: on for fp16; bf16 (float32's range) and float32 need no scaling."""
    from dreamtext.devices import fp16_loss_scaler

    cpu = torch.device("cpu")
    assert fp16_loss_scaler(torch.float16, cpu).is_enabled()
    assert not fp16_loss_scaler(torch.bfloat16, cpu).is_enabled()
    assert not fp16_loss_scaler(torch.float32, cpu).is_enabled()


def test_memory_that_ran_out_while_torch_compile_built_its_code_is_out_of_memory():
    """torch.compile wraps what its backend raised in ``BackendCompilerFailed``: a GPU that
    filled up while Inductor built or tuned the U-Net's, the encoder's or the field's kernels
    was "torch.compile does not build ... here: run without --compile", no checkpoint and no
    memory fix named, instead of the out-of-memory line."""
    from dreamtext.devices import memory_that_ran_out, out_of_memory_is_a_user_error
    from dreamtext.guidance import compiler_error

    def backend(graph, inputs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    compiled = torch.compile(lambda x: x * 2 + 1, backend=backend)
    with pytest.raises(RuntimeError) as caught:
        compiled(torch.ones(3))
    error = caught.value
    assert type(error).__module__.startswith("torch._dynamo")  # wrapped, as on a GPU
    assert memory_that_ran_out(error) == "GPU memory"
    assert not compiler_error(error)  # predict_noise lets it through to the out-of-memory line
    with (
        pytest.raises(DreamtextError, match=r"^ran out of GPU memory$"),
        out_of_memory_is_a_user_error(lambda memory: f"ran out of {memory}"),
    ):
        raise error
    failed = RuntimeError("no C compiler")
    failed.inner_exception = ValueError("cc not found")
    assert memory_that_ran_out(failed) is None
