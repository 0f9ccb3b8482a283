"""Fused Triton kernels for the hash grid of :mod:`dreamtext.encoding`.

Imported only when a :class:`dreamtext.encoding.TritonHashGrid` runs, never at package import. On
CUDA the kernels compile for the GPU; with ``TRITON_INTERPRET=1`` in the environment before triton
is imported they run on CPU tensors in Triton's interpreter (slow: for tests only).

One program handles ``BLOCK`` points at one level ``l``. With ``p = u · s_l + 0.5``, cell
``c = floor(p)``, fraction ``t = p − c`` and, for corner ``k = k_x + 2 k_y + 4 k_z``, weight
``w_k = Π_d (t_d if k_d else 1 − t_d)`` and row ``r_k``::

    forward:   out[n, l·F : (l+1)·F]  = Σ_k w_k · T[offset_l + r_k]
    backward:  ∂L/∂T[offset_l + r_k] += w_k · ∂L/∂out[n, l·F : (l+1)·F]      (fp32 atomic adds)

``r_k`` is ``(x + y·res + z·res²) mod size`` on dense levels, in int64 (a corner at coordinate
``res`` wraps around), and tiny-cuda-nn's hash ``(x·1 XOR y·2654435761 XOR z·805459861) mod T`` in
uint32 arithmetic on hashed levels: exactly :func:`dreamtext.encoding.level_corners`. Dense and
hashed levels are separate launches (``HASHED`` is a compile-time constant), so neither pays for
the other's arithmetic. Table addresses are int64 throughout. The backward's atomics add a
point's ``F`` values at once on GPUs that have vector float atomics (sm_90 on), one feature at a
time elsewhere (:func:`vector_atomics_for`).
"""

from __future__ import annotations

import contextlib
import functools

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.autograd.function import once_differentiable

from dreamtext.encoding import release_of

# Points per program; the GPU session may tune it (with num_warps), the interpreter doesn't care.
BLOCK = 128


@triton.jit
def _axis(u_ptr, n, mask, AXIS: tl.constexpr, scale):
    """Cell coordinate (int32) and fraction along one axis: ``p = u·s + 0.5``, ``c = floor(p)``."""
    p = tl.load(u_ptr + n * 3 + AXIS, mask=mask, other=0.0) * scale + 0.5
    c = tl.floor(p)
    return c.to(tl.int32), p - c


@triton.jit
def _corner(cx, cy, cz, tx, ty, tz, res, size, K: tl.constexpr, HASHED: tl.constexpr):
    """Row within the level (int64) and trilinear weight of corner ``K``."""
    if K & 1:
        wx = tx
        x = cx + 1
    else:
        wx = 1.0 - tx
        x = cx
    if K & 2:
        wy = ty
        y = cy + 1
    else:
        wy = 1.0 - ty
        y = cy
    if K & 4:
        wz = tz
        z = cz + 1
    else:
        wz = 1.0 - tz
        z = cz
    if HASHED:
        # uint32 products wrap around like the CUDA code's; T = size is a power of two.
        hx = x.to(tl.uint32)
        hy = y.to(tl.uint32) * tl.full([], 2654435761, tl.uint32)
        hz = z.to(tl.uint32) * tl.full([], 805459861, tl.uint32)
        row = ((hx ^ hy ^ hz) & (size - 1).to(tl.uint32)).to(tl.int64)
    else:
        row = x.to(tl.int64) + y.to(tl.int64) * res + z.to(tl.int64) * res * res
        row = tl.where(row >= size, row - size, row)
    return row, wx * wy * wz


@triton.jit
def _block(
    u_ptr,
    scales_ptr,
    resolutions_ptr,
    offsets_ptr,
    sizes_ptr,
    num_points,
    first_level,
    BLOCK: tl.constexpr,
):
    """This program's level and block of points: their indices ``n``, mask, the level's
    resolution, table offset and size, and each point's cell and fraction per axis."""
    level = first_level + tl.program_id(1)
    n = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = n < num_points
    scale = tl.load(scales_ptr + level)
    res = tl.load(resolutions_ptr + level).to(tl.int64)
    offset = tl.load(offsets_ptr + level).to(tl.int64)
    size = tl.load(sizes_ptr + level).to(tl.int64)
    cx, tx = _axis(u_ptr, n, mask, 0, scale)
    cy, ty = _axis(u_ptr, n, mask, 1, scale)
    cz, tz = _axis(u_ptr, n, mask, 2, scale)
    return level, n, mask, res, offset, size, cx, cy, cz, tx, ty, tz


@triton.jit
def hash_grid_forward_kernel(
    u_ptr,
    table_ptr,
    out_ptr,
    scales_ptr,
    resolutions_ptr,
    offsets_ptr,
    sizes_ptr,
    num_points,
    first_level,
    F: tl.constexpr,
    OUT_DIM: tl.constexpr,
    HASHED: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """``out[n, l·F + f] = Σ_k w_k · table[(offset_l + r_k)·F + f]`` for a block of points."""
    level, n, mask, res, offset, size, cx, cy, cz, tx, ty, tz = _block(
        u_ptr, scales_ptr, resolutions_ptr, offsets_ptr, sizes_ptr, num_points, first_level, BLOCK
    )
    f = tl.arange(0, F)
    acc = tl.zeros([BLOCK, F], dtype=tl.float32)
    for k in tl.static_range(8):
        row, w = _corner(cx, cy, cz, tx, ty, tz, res, size, k, HASHED)
        value = tl.load(
            table_ptr + (offset + row)[:, None] * F + f[None, :], mask=mask[:, None], other=0.0
        )
        acc += w[:, None] * value
    tl.store(out_ptr + n[:, None] * OUT_DIM + level * F + f[None, :], acc, mask=mask[:, None])


@triton.jit
def hash_grid_backward_kernel(
    u_ptr,
    grad_out_ptr,
    grad_table_ptr,
    scales_ptr,
    resolutions_ptr,
    offsets_ptr,
    sizes_ptr,
    num_points,
    first_level,
    F: tl.constexpr,
    OUT_DIM: tl.constexpr,
    HASHED: tl.constexpr,
    BLOCK: tl.constexpr,
    VECTOR_ATOMICS: tl.constexpr,
):
    """``grad_table[(offset_l + r_k)·F + f] += w_k · grad_out[n, l·F + f]``, a block of points.

    With ``VECTOR_ATOMICS`` a point's ``F`` values go in one vector atomic per corner
    (``[BLOCK, F]`` tiles); without, feature by feature (``[BLOCK]`` tiles, see
    :func:`uses_vector_atomics`)."""
    level, n, mask, res, offset, size, cx, cy, cz, tx, ty, tz = _block(
        u_ptr, scales_ptr, resolutions_ptr, offsets_ptr, sizes_ptr, num_points, first_level, BLOCK
    )
    grad_row = grad_out_ptr + n * OUT_DIM + level * F
    if VECTOR_ATOMICS:
        f = tl.arange(0, F)
        grad = tl.load(grad_row[:, None] + f[None, :], mask=mask[:, None], other=0.0)
        for k in tl.static_range(8):
            row, w = _corner(cx, cy, cz, tx, ty, tz, res, size, k, HASHED)
            tl.atomic_add(
                grad_table_ptr + (offset + row)[:, None] * F + f[None, :],
                w[:, None] * grad,
                mask=mask[:, None],
                sem="relaxed",
            )
    else:
        for f in tl.static_range(F):
            grad = tl.load(grad_row + f, mask=mask, other=0.0)
            for k in tl.static_range(8):
                row, w = _corner(cx, cy, cz, tx, ty, tz, res, size, k, HASHED)
                tl.atomic_add(
                    grad_table_ptr + (offset + row) * F + f, w * grad, mask=mask, sem="relaxed"
                )


# Asked at every backward: read the version once per (GPU, Triton) pair.
@functools.cache
def vector_atomics_for(capability: tuple[int, int], triton_version: str | None = None) -> bool:
    """Whether the backward kernel adds a point's features with vector atomics on a GPU of
    compute ``capability``: from sm_90 on, where PTX has ``red.global.add.v2.f32`` (and ``v4``),
    with Triton 3.2 or later (``triton_version``, the installed one by default), which emits them.

    Otherwise the GPU or the compiler has scalar float atomics only, and the kernel adds feature
    by feature: a ``[BLOCK, F]`` tile would go through shared memory to change its thread layout
    at every corner (31 barriers a program, against none, with Triton 3.8+ on sm_86 and 3.0-3.1
    on sm_90; ``benchmarks/triton_compile.py``).
    """
    version = triton.__version__ if triton_version is None else triton_version
    return tuple(capability) >= (9, 0) and release_of(version) >= (3, 2)


def uses_vector_atomics(device: torch.device, choice: bool | None = None) -> bool:
    """The atomics of a backward on ``device``: ``choice`` when given (a grid's
    ``vector_atomics``), else :func:`vector_atomics_for` its GPU; in the CPU interpreter,
    per feature unless chosen."""
    if choice is not None:
        return choice
    return device.type == "cuda" and vector_atomics_for(torch.cuda.get_device_capability(device))


def launch_groups(grid) -> list[tuple[int, int, bool]]:
    """``(first_level, count, hashed)`` of each launch over ``grid`` (a
    :class:`dreamtext.encoding.HashGridEncoding`): its dense levels, then its hashed ones."""
    groups = ((0, grid.num_dense, False), (grid.num_dense, grid.num_levels - grid.num_dense, True))
    return [group for group in groups if group[1] > 0]


def kernel_arguments(
    grid, u: Tensor, source: Tensor, target: Tensor, first_level: int, hashed: bool, **extra
) -> tuple[tuple, dict]:
    """The positional and compile-time arguments of one launch of either kernel: ``u``, the
    tensor read (table or output gradient), the tensor written, the grid's level buffers, the
    point count and first level; ``F``, ``OUT_DIM``, ``HASHED``, ``BLOCK`` and the kernel's own
    ``extra`` ones (the backward's ``VECTOR_ATOMICS``)."""
    args = (
        u,
        source,
        target,
        grid.scales,
        grid.resolutions,
        grid.offsets,
        grid.sizes,
        u.shape[0],
        first_level,
    )
    constexprs = {"F": grid.level_dim, "OUT_DIM": grid.output_dim, "HASHED": hashed, "BLOCK": BLOCK}
    return args, {**constexprs, **extra}


def _launch(kernel, grid, u: Tensor, source: Tensor, target: Tensor, **extra) -> None:
    """Run ``kernel`` over every block of points, once for the dense and once for the hashed
    levels of ``grid`` (a :class:`dreamtext.encoding.HashGridEncoding`)."""
    device = torch.cuda.device(u.device) if u.is_cuda else contextlib.nullcontext()
    with device:
        for first, count, hashed in launch_groups(grid):
            args, constexprs = kernel_arguments(grid, u, source, target, first, hashed, **extra)
            kernel[(triton.cdiv(u.shape[0], BLOCK), count)](*args, **constexprs)


class TritonHashGridFunction(torch.autograd.Function):
    """``u: [N, 3]`` (unit cube, float32, contiguous), ``params`` (float32 table) → ``[N, L·F]``.

    Keeps only ``u`` for backward; the table gradient is a fresh float32 tensor filled by atomic
    adds. The points get no gradient (the module takes its reference path when they need one).
    """

    @staticmethod
    def forward(ctx, u: Tensor, params: Tensor, grid) -> Tensor:
        ctx.grid = grid
        ctx.save_for_backward(u)
        out = torch.empty(u.shape[0], grid.output_dim, device=u.device, dtype=torch.float32)
        if u.shape[0] > 0:
            _launch(hash_grid_forward_kernel, grid, u, params.detach(), out)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, None]:
        (u,) = ctx.saved_tensors
        grid = ctx.grid
        grad_table = torch.zeros_like(grid.params, dtype=torch.float32)
        if u.shape[0] > 0:
            _launch(
                hash_grid_backward_kernel,
                grid,
                u,
                grad.float().contiguous(),
                grad_table,
                VECTOR_ATOMICS=uses_vector_atomics(u.device, grid.vector_atomics),
            )
        return None, grad_table, None


__all__ = [
    "BLOCK",
    "TritonHashGridFunction",
    "hash_grid_backward_kernel",
    "hash_grid_forward_kernel",
    "kernel_arguments",
    "launch_groups",
    "uses_vector_atomics",
    "vector_atomics_for",
]
