"""CUDA code paths run on the CPU, with CUDA's device rules enforced.

A CPU build of torch cannot make a CUDA tensor, so without a GPU the ``--device cuda`` branches of
dreamtext (autocast, ``channels_last``, the text encoder waiting on the CPU, memory logging, the
Triton launch, CUDA random states) never run, and the commonest first-GPU-run bug goes unseen: a
tensor left on the CPU meeting one on the GPU ("Expected all tensors to be on the same device").
Under :func:`virtual_cuda` a tensor put on CUDA (``device="cuda"``, ``.to("cuda")``, ``.cuda()``,
a module's ``.to``) is a CPU tensor that remembers it lives on the GPU: it reports ``cuda:0`` as
its device, so the code under test takes its CUDA branches, and every torch call that mixes such a
tensor with a host tensor raises :class:`DeviceMismatch` where CUDA would raise, as does
``.numpy()`` of a GPU tensor and a CPU generator drawing GPU numbers.

What counts as a host tensor: one made by a factory without a device (``torch.zeros(3)``,
``torch.tensor(...)``), moved with ``.cpu()`` / ``.to("cpu")``, loaded with
``torch.load(map_location="cpu")`` (without ``map_location`` a tensor comes back where it was
saved), or never seen by the mode (``torch.from_numpy``) while its memory is the CPU's. 0-dim
tensors mix freely, as CPU scalars do on CUDA. Copies, moves and indexing take tensors on either
side, as on CUDA, and a tensor written into (``copy_``, ``add_``, ``+=``) keeps its device.

``torch.autocast("cuda", ...)`` runs the CPU's autocast, which lowers the same matrix products and
convolutions to fp16 / bf16, plus CUDA's float32 list on GPU tensors: the ops that CUDA's
autocast runs in float32 whatever their inputs (:data:`CUDA_AUTOCAST_FP32`: ``exp``,
``softplus``, ``layer_norm``, ``sum``, ``softmax``, ...) and that the CPU's leaves in half
precision, so code after them sees float32 where it would on a GPU.

Host syncs are counted (:attr:`VirtualCuda.syncs`): the calls that make the CPU wait for the GPU's
queue to drain on CUDA. Reading a GPU tensor on the host (``.item()``, ``bool()``, ``float()``,
``int()``, ``.tolist()``, ``torch.equal``, ``allclose``, formatting it, a copy to the host),
asking for a data-dependent shape (``nonzero``, ``torch.where(cond)``, indexing with a boolean
mask, ``masked_select``, ``unique``, ``bincount``, ``repeat_interleave`` by a tensor of repeats
without ``output_size``), and a copy from pageable host memory to the GPU without
``non_blocking=True`` from pinned memory (torch's CUDA copy then synchronises the stream:
``memcpy_and_sync``). ``pin_memory()`` of a host tensor is the tensor itself here.

Indexing follows torch's own code (``THPVariable_setitem``, ``index_put_``'s
``canDispatchToMaskedFill``, ``masked_fill__cuda``). A boolean mask *written* through
(``t[mask] = v``, ``index_put_`` with a mask) syncs as a read does (its ``nonzero``), unless torch
turns it into a ``masked_fill_``: one mask on the tensor's device, no ``accumulate``, and a value
of one element in host memory (a Python number is one: ``t[mask] = 0.0`` does not sync, ``t[mask]
= gpu_scalar`` does). Any other write through index tensors copies a one-element host value up
first (``index_put_``'s ``value.to(self.device())``: ``t[ids] = 0.0`` waits), and a host value
written into one element (``t[0] = 1.0``: ``copy_to``'s ``copy_``; a wider slice is filled
without a wait) is copied up too (pytorch#186482 proposes a fill there). ``masked_fill_`` with a
GPU tensor as its value reads it (``value.item()``), as ``fill_`` of a host tensor does; a 0-dim
integer or boolean GPU tensor as an index is read (``tensor.item()``) to select; a host index
tensor, or a host tensor written in, is copied up from pageable memory.

Not emulated: speed, memory (``torch.cuda.max_memory_reserved`` is 0), and anything compiled
(Triton kernels run in Triton's interpreter when ``TRITON_INTERPRET=1`` is set before triton is
imported).

Run any ``dreamtext`` command, or a benchmark script, this way::

    python tests/virtual_cuda.py text "a red cube" --model builtin:shapes --device cuda --iters 20
    python tests/virtual_cuda.py benchmarks/sds_step.py --model tiny --device cuda --sizes 64
"""

from __future__ import annotations

import collections
import contextlib
import re
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

# Where a tensor lives, as an attribute of its Python object: torch keeps a tensor's Python object
# (and so this attribute) alive as long as the tensor, once the object has attributes of its own.
TAG = "_virtual_device"
GPU, HOST = "cuda", "cpu"
ELSEWHERE = "other"  # the meta device: not ours to place or check
CUDA_DEVICE = torch.device("cuda", 0)

# Torch calls that take tensors on different devices on CUDA too: copies and moves, indexing a GPU
# tensor with CPU indices, metadata checks.
CROSS_DEVICE = frozenset(
    {
        "to",
        "cuda",
        "cpu",
        "copy_",
        "__getitem__",
        "__setitem__",
        "_has_compatible_shallow_copy_type",
        "is_same_size",
    }
)


# The ops CUDA's autocast runs in float32 (torch's autocast op reference, "CUDA Ops that can
# autocast to float32", and those it runs with dtype=float32: sum, prod, cumsum, softmax, ...),
# by the names a torch function mode sees; the CPU's autocast leaves them in fp16 / bf16.
CUDA_AUTOCAST_FP32 = frozenset(
    {
        "__pow__",
        "__rpow__",
        "__rdiv__",
        "__rtruediv__",
        "acos",
        "asin",
        "cosh",
        "erfinv",
        "exp",
        "expm1",
        "log",
        "log10",
        "log2",
        "log1p",
        "reciprocal",
        "rsqrt",
        "sinh",
        "tan",
        "pow",
        "softplus",
        "layer_norm",
        "group_norm",
        "norm",
        "normalize",
        "cosine_similarity",
        "cdist",
        "dist",
        "pdist",
        "renorm",
        "logsumexp",
        "mse_loss",
        "l1_loss",
        "smooth_l1_loss",
        "huber_loss",
        "kl_div",
        "nll_loss",
        "cross_entropy",
        "binary_cross_entropy_with_logits",
        "prod",
        "sum",
        "cumsum",
        "cumprod",
        "softmax",
        "log_softmax",
    }
)
HALF_DTYPES = (torch.float16, torch.bfloat16)

# Calls that write into their first argument, which keeps its device whatever it is given.
IN_PLACE_OPERATORS = re.compile(
    r"__i(add|sub|mul|truediv|floordiv|mod|pow|and|or|xor|lshift|rshift|matmul)__"
)


def _in_place(name: str) -> bool:
    """``add_``, ``copy_``, ``__iadd__``, ...; not the ``_foreach_*_`` ops, which write lists."""
    return (name.endswith("_") and not name.startswith("_")) or bool(
        IN_PLACE_OPERATORS.fullmatch(name)
    )


# GPU tensor reads that wait for the GPU (the result is needed on the host).
HOST_READS = frozenset(
    {
        "item",
        "__bool__",
        "__float__",
        "__int__",
        "__index__",
        "__complex__",
        "tolist",
        "is_nonzero",
        "equal",
        "allclose",
        "__contains__",
        "__format__",
        "__repr__",
        "__str__",
    }
)
# GPU calls whose output size depends on the data: the host waits to learn it.
DATA_DEPENDENT_SHAPES = frozenset(
    {"nonzero", "masked_select", "unique", "unique_consecutive", "argwhere", "bincount"}
)
# Calls that index a tensor: (tensor, index[, value]) and index_put's (tensor, indices, values).
INDEXING = frozenset({"__getitem__", "__setitem__", "index_put_", "index_put"})


class DeviceMismatch(RuntimeError):
    """What CUDA would have raised: tensors on two devices in one call, or a GPU tensor to numpy."""


class VirtualCudaGenerator(torch.Generator):
    """``torch.Generator(device="cuda")``: a CPU generator that says it is the GPU's."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return CUDA_DEVICE


def place(tensor: torch.Tensor) -> str | None:
    """``"cuda"``, ``"cpu"`` or ``None`` (never seen by the mode) for ``tensor``."""
    return getattr(tensor, TAG, None)


def _mark(value: Any, where: str | None) -> Any:
    if where in (GPU, HOST) and isinstance(value, torch.Tensor):
        object.__setattr__(value, TAG, where)
    return value


def _device_type(device: Any) -> str:
    if isinstance(device, int):  # a GPU index
        return GPU
    return torch.device(device).type


def _is_host(tensor: torch.Tensor) -> bool:
    where = place(tensor)
    return where == HOST or (where is None and tensor.device.type == "cpu")


def _is_mask(tensor: torch.Tensor) -> bool:
    return tensor.dtype in (torch.bool, torch.uint8) and tensor.dim() > 0


def _index_syncs(
    name: str, tensor: torch.Tensor, index: Any, value: Any, accumulate: bool
) -> collections.Counter[str]:
    """The syncs of indexing GPU ``tensor`` with ``index`` (reading it, or writing ``value``
    into it, as ``__setitem__`` / ``index_put_`` do): see the module docstring."""
    syncs: collections.Counter[str] = collections.Counter()
    indices = [t for t in tree_flatten(index)[0] if isinstance(t, torch.Tensor)]
    for t in indices:
        if t.dim() == 0 and place(t) == GPU and not t.is_floating_point():
            syncs["item"] += 1  # handleDimInMultiDimIndexing: tensor.item<int64_t>()
    masks = [t for t in indices if _is_mask(t)]
    writes = name != "__getitem__"
    # canDispatchToMaskedFill: one mask on the tensor's device, a one-element host value
    host_value = isinstance(value, int | float | bool) or (
        isinstance(value, torch.Tensor) and _is_host(value) and value.numel() == 1
    )
    arrays = [t for t in indices if t.dim() > 0]
    filled = (
        writes
        and not accumulate
        and host_value
        and len(arrays) == 1
        and len(masks) == 1
        and place(masks[0]) == GPU
    )
    if not filled:
        syncs["boolean mask"] += len(masks)  # nonzero (a host mask's: copied up)
        syncs["to gpu"] += sum(1 for t in arrays if not _is_mask(t) and _is_host(t))
    if writes and isinstance(value, torch.Tensor) and value.dim() > 0 and _is_host(value):
        syncs["to gpu"] += 1  # the values copied up from pageable memory
    elif writes and host_value and not filled:
        # index_put_ sends a one-element host value .to(self.device()) first; without index
        # tensors, copy_to copies it (copy_) into one element and fills (fill_) a wider slice
        one_element = not indices and tensor[index].dim() == 0
        syncs["to gpu"] += bool(arrays) or one_element
    return +syncs  # the kinds that synced


def _describe(tensors: list[torch.Tensor]) -> str:
    return ", ".join(f"{place(t) or 'cpu'} {list(t.shape)}" for t in tensors)


def _in_float32_on_the_gpu(tree: Any) -> Any:
    """``tree`` with its fp16 / bf16 GPU tensors as float32 (CUDA autocast's float32 policy), the
    copies marked as GPU tensors; host tensors as they are (CUDA's autocast leaves them)."""
    if not any(place(t) == GPU for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)):
        return tree

    def widen(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and place(value) == GPU and value.dtype in HALF_DTYPES:
            return _mark(value.float(), GPU)
        return value

    return tree_map(widen, tree)


class VirtualCuda(TorchFunctionMode):
    """The torch-function mode behind :func:`virtual_cuda`; ``calls`` counts the torch calls that
    touched GPU tensors (``"cuda"``) and host ones only (``"cpu"``); ``syncs`` counts the host
    syncs CUDA would make, by kind (``"item"``, ``"__bool__"``, ``"nonzero"``, ``"to host"``,
    ``"to gpu"``, ...; module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = {GPU: 0, HOST: 0}
        self.syncs: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        owner = getattr(getattr(func, "__self__", None), "__name__", "")
        if name == "__get__":
            return self._get(owner, func, args)
        if name == "__set__" and owner == "data":  # param.data = moved (Module.to)
            func(*args)
            _mark(args[0], place(args[1]))
            # A setter gives None: torch's setter never releases what this returns, and a
            # returned tensor (a module's every parameter, on .to) outlived the module.
            return None
        if name == "get_device":
            return 0 if place(args[0]) == GPU else -1
        if name == "numpy" and place(args[0]) == GPU:
            raise DeviceMismatch(
                "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the "
                "tensor to host memory first."
            )
        if name == "pin_memory" and place(args[0]) != GPU:
            return _mark(args[0], HOST)
        if name == "is_pinned":
            return place(args[0]) != GPU
        func, args, kwargs, target = self._placement(func, name, args, kwargs)
        self._count_sync(name, args, kwargs, target)
        if name in CUDA_AUTOCAST_FP32 and torch.is_autocast_enabled("cpu"):
            args, kwargs = _in_float32_on_the_gpu((args, kwargs))
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        arrays = [t for t in tensors if t.dim() > 0]
        on_gpu = any(place(t) == GPU for t in arrays)
        if on_gpu and name not in CROSS_DEVICE and any(_is_host(t) for t in arrays):
            raise DeviceMismatch(
                f"{name}: Expected all tensors to be on the same device, but found at least two "
                f"devices, cuda:0 and cpu! ({_describe(arrays)})"
            )
        self._check_generator(name, kwargs.get("generator"), target, on_gpu)
        out = func(*args, **kwargs)
        if target is None:  # where its inputs are; a factory without a device: the host
            places = {place(t) for t in tensors}
            target = GPU if GPU in places else HOST if HOST in places or not tensors else None
        if target in self.calls:
            self.calls[target] += 1
        return tree_map(lambda value: _mark(value, target), out)

    def _count_sync(self, name: str, args: tuple, kwargs: dict, target: str | None) -> None:
        """Count the host sync this call would make on CUDA (see the module docstring)."""
        if name in ("tensor", "as_tensor") and target == GPU:  # host data copied up
            self.syncs["to gpu"] += 1
        tensor = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if tensor is None:
            return
        source = place(tensor)
        if name == "fill_" and source != GPU and len(args) > 1:
            if isinstance(args[1], torch.Tensor) and place(args[1]) == GPU:
                self.syncs["item"] += 1  # fill_ from another device: value.item()
            return
        if name == "copy_" and len(args) > 1 and isinstance(args[1], torch.Tensor):
            if source == GPU and _is_host(args[1]) and not kwargs.get("non_blocking", False):
                self.syncs["to gpu"] += 1
            elif source != GPU and place(args[1]) == GPU:
                self.syncs["to host"] += 1
            return
        if source == GPU and (name in HOST_READS or name in DATA_DEPENDENT_SHAPES):
            self.syncs[name] += 1
        elif source == GPU and name in INDEXING and len(args) > 1:
            value = args[2] if len(args) > 2 else kwargs.get("values")
            accumulate = args[3] if len(args) > 3 else kwargs.get("accumulate", False)
            self.syncs.update(_index_syncs(name, tensor, args[1], value, bool(accumulate)))
        elif source == GPU and name == "where" and len(args) == 1 and not kwargs:
            self.syncs["nonzero"] += 1  # torch.where(condition): nonzero(as_tuple=True)
        elif source == GPU and name in ("masked_fill_", "masked_fill"):
            value = args[2] if len(args) > 2 else kwargs.get("value")
            if isinstance(value, torch.Tensor) and place(value) == GPU:
                self.syncs["item"] += 1  # masked_fill__cuda(Tensor value): value.item()
        elif source == GPU and name == "repeat_interleave":
            repeats = args[1] if len(args) > 1 else kwargs.get("repeats", tensor)
            if isinstance(repeats, torch.Tensor) and kwargs.get("output_size") is None:
                self.syncs["repeat_interleave"] += 1  # the output's length: repeats.sum()
        elif name in ("to", "cpu", "cuda") and target in (GPU, HOST) and source != target:
            if target == HOST and source == GPU:
                self.syncs["to host"] += 1
            elif target == GPU and not kwargs.get("non_blocking", False):
                self.syncs["to gpu"] += 1

    def _get(self, attribute: str, func, args) -> Any:
        """Property reads: the device a tensor reports, and tensors read off it (``.grad``,
        ``.T``, ``.data``) on its device."""
        tensor = args[0]
        if attribute == "device":
            return CUDA_DEVICE if place(tensor) == GPU else func(*args)
        if attribute == "is_cuda":
            return place(tensor) == GPU
        if attribute == "is_cpu":
            return place(tensor) != GPU and func(*args)
        value = func(*args)
        if isinstance(value, torch.Tensor) and place(value) is None:
            _mark(value, place(tensor))
        return value

    def _placement(self, func, name: str, args: tuple, kwargs: dict):
        """The call with every CUDA device replaced by the CPU, and where its outputs live
        (``None``: where its inputs are; a tensor written into keeps its own place)."""
        if name in ("cuda", "cpu"):
            tensor = args[0]
            wanted = GPU if name == "cuda" else HOST
            if place(tensor) == wanted or (wanted == HOST and place(tensor) is None):
                return (lambda t: t), (tensor,), {}, wanted
            return torch.Tensor.clone, (tensor,), {}, wanted
        if name == "to":
            return self._to(func, args, kwargs)
        if "device" in kwargs:
            kind = HOST if kwargs["device"] is None else _device_type(kwargs["device"])
            if kind == GPU:
                return func, args, {**kwargs, "device": "cpu"}, GPU
            return func, args, kwargs, kind if kind == HOST else ELSEWHERE
        if _in_place(name) and args and isinstance(args[0], torch.Tensor):
            return func, args, kwargs, place(args[0]) or HOST  # e.g. a CPU param.copy_(gpu)
        return func, args, kwargs, None

    def _to(self, func, args: tuple, kwargs: dict):
        """``tensor.to(device | other | dtype, ...)``: a copy when the tensor changes sides, so
        the tensor left behind keeps its place."""
        tensor, rest, device = args[0], list(args[1:]), kwargs.get("device")
        for i, arg in enumerate(rest):
            if isinstance(arg, torch.Tensor):  # .to(other): other's device and dtype
                device, rest[i] = (CUDA_DEVICE if place(arg) == GPU else "cpu"), arg.dtype
            elif isinstance(arg, str | torch.device | int) and not isinstance(arg, bool):
                device = arg
                if _device_type(arg) == GPU:
                    rest[i] = "cpu"
        if device is None:
            return func, (tensor, *rest), kwargs, None
        kind = _device_type(device)
        if kind not in (GPU, HOST):
            return func, (tensor, *rest), kwargs, ELSEWHERE
        if kind == GPU and "device" in kwargs:
            kwargs = {**kwargs, "device": "cpu"}
        if kind != (place(tensor) or HOST):
            kwargs = {**kwargs, "copy": True}
        return func, (tensor, *rest), kwargs, kind

    @staticmethod
    def _check_generator(name: str, generator, target: str | None, on_gpu: bool) -> None:
        if generator is None:
            return
        gpu_numbers = target == GPU or (target is None and on_gpu)
        if gpu_numbers != isinstance(generator, VirtualCudaGenerator):
            wanted, found = ("cuda", "cpu") if gpu_numbers else ("cpu", "cuda")
            raise DeviceMismatch(
                f"{name}: Expected a '{wanted}' device type for generator but found '{found}'"
            )


@contextlib.contextmanager
def virtual_cuda(capability: tuple[int, int] = (8, 6)) -> Iterator[VirtualCuda]:
    """Inside, torch says it has one 12 GiB CUDA GPU of compute ``capability`` (an RTX 30xx by
    default), and :class:`VirtualCuda` enforces its device rules on CPU tensors (module
    docstring)."""
    real_generator, real_parameter = torch.Generator, torch.nn.Parameter.__new__
    real_autocast, real_load = torch.autocast.__init__, torch.load

    class GeneratorType(type):
        # torch.Generator as code inside sees it: a class (annotations such as
        # `torch.Generator | None` still work) whose instances are torch's own generators
        def __call__(cls, device: Any = "cpu") -> torch.Generator:
            if _device_type(device) == GPU:
                return VirtualCudaGenerator()
            return real_generator(device)

        def __instancecheck__(cls, instance: Any) -> bool:
            return isinstance(instance, real_generator)

    class Generator(metaclass=GeneratorType):
        pass

    def parameter(cls, data=None, requires_grad=True, **attributes):
        # accelerate re-creates parameters with their __dict__ (our tag) as keyword arguments
        where = attributes.pop(TAG, None)
        made = real_parameter(cls, data, requires_grad, **attributes)
        return _mark(made, place(data) if data is not None and place(data) else where)

    def autocast(self, device_type: str, *args, **kwargs) -> None:
        real_autocast(self, "cpu" if device_type == GPU else device_type, *args, **kwargs)

    def load(f, map_location=None, *args, **kwargs):
        # A saved tensor's Python attributes, our tag among them, are pickled with it: without
        # map_location it comes back where it was saved, as on CUDA; with one, it goes there.
        try:
            where = None if map_location is None else _device_type(map_location)
        except (TypeError, RuntimeError):  # a dict or a function: left where it was saved
            where = None
        if where == GPU:
            map_location = "cpu"
        loaded = real_load(f, map_location, *args, **kwargs)
        return loaded if where is None else tree_map(lambda value: _mark(value, where), loaded)

    def set_rng_state(state: torch.Tensor, device: Any = "cuda") -> None:
        if place(state) == GPU or state.dtype != torch.uint8:
            raise DeviceMismatch("set_rng_state takes a CPU torch.ByteTensor")

    properties = SimpleNamespace(
        name="virtual CUDA (CPU)", major=capability[0], minor=capability[1], total_memory=12 << 30
    )
    cuda = torch.cuda
    patches = [
        mock.patch.object(cuda, "is_available", lambda: True),
        mock.patch.object(cuda, "is_initialized", lambda: True),
        mock.patch.object(cuda, "device_count", lambda: 1),
        mock.patch.object(cuda, "current_device", lambda: 0),
        mock.patch.object(cuda, "set_device", lambda device: None),
        mock.patch.object(cuda, "device", lambda device=None: contextlib.nullcontext()),
        mock.patch.object(cuda, "get_device_capability", lambda device=None: capability),
        mock.patch.object(cuda, "get_device_name", lambda device=None: properties.name),
        mock.patch.object(cuda, "get_device_properties", lambda device=None: properties),
        mock.patch.object(cuda, "set_per_process_memory_fraction", lambda f, device=None: None),
        mock.patch.object(cuda, "memory_allocated", lambda device=None: 0),
        mock.patch.object(cuda, "synchronize", lambda device=None: None),
        mock.patch.object(cuda, "empty_cache", lambda: None),
        mock.patch.object(cuda, "memory_reserved", lambda device=None: 0),
        mock.patch.object(cuda, "max_memory_reserved", lambda device=None: 0),
        mock.patch.object(cuda, "max_memory_allocated", lambda device=None: 0),
        mock.patch.object(cuda, "reset_peak_memory_stats", lambda device=None: None),
        mock.patch.object(cuda, "get_rng_state", lambda device="cuda": torch.get_rng_state()),
        mock.patch.object(cuda, "set_rng_state", set_rng_state),
        mock.patch.object(torch, "Generator", Generator),
        mock.patch.object(torch.nn.Parameter, "__new__", parameter),
        mock.patch.object(torch.autocast, "__init__", autocast),
        mock.patch.object(torch, "load", load),
    ]
    if hasattr(torch.optim.Optimizer, "_accelerator_graph_capture_health_check"):
        # On a CUDA build of torch without a usable driver, the optimisers' check for a CUDA
        # graph being captured asks the driver for the current stream, and fails.
        patches.append(
            mock.patch.object(
                torch.optim.Optimizer, "_accelerator_graph_capture_health_check", lambda self: None
            )
        )
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        yield stack.enter_context(VirtualCuda())


def main(argv: list[str] | None = None) -> int:
    """``dreamtext ARGS``, or ``SCRIPT.py ARGS`` (a benchmark), under :func:`virtual_cuda`;
    prints what the mode saw."""
    argv = sys.argv[1:] if argv is None else argv
    with virtual_cuda() as mode:
        try:
            if argv and argv[0].endswith(".py"):
                script = Path(argv[0]).resolve()
                sys.argv = [str(script), *argv[1:]]
                sys.path.insert(0, str(script.parent))  # its sibling modules, as `python` does
                runpy.run_path(str(script), run_name="__main__")
                status = 0
            else:
                from dreamtext import cli

                status = cli.main(argv)
        except SystemExit as stop:
            status = stop.code if isinstance(stop.code, int) else 1
    print(
        f"virtual CUDA: {mode.calls[GPU]} torch calls on the GPU, {mode.calls[HOST]} on the host",
        file=sys.stderr,
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
