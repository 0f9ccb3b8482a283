"""Multi-resolution hash encoding (Instant-NGP, Müller et al. 2022).

A point ``x ∈ [−bound, bound]^3`` is mapped to the unit cube and looked up in ``L`` grids of growing
resolution; each level trilinearly interpolates ``F`` trainable features from the 8 cells around the
point, and the levels are concatenated into a ``[N, L·F]`` feature vector.

Every backend follows tiny-cuda-nn's ``GridEncoding`` arithmetic step by step (float32 scales, cell
indexing, the prime-XOR hash, the per-level table layout) and reads one flat parameter ``params``,
so a checkpoint written by any backend loads into any other (state-dict key ``params``).
That arithmetic departs from the thesis's eq. 3.16-3.17 (Instant-NGP's paper), whose level ``l``
has ``N_l = ⌊N_min b^l⌋`` cells a side and corners ``⌊x N_l⌋``, ``⌈x N_l⌉``: tiny-cuda-nn (and
torch-ngp's grid encoder, which Stable-DreamFusion ran, with the same arithmetic) scales by
``s_l = N_min b^l − 1``, shifts by half a cell (``p = u s_l + ½``, corners ``⌊p⌋`` and
``⌊p⌋ + 1``) and stores ``⌈s_l⌉ + 1`` vertices a side (:func:`grid_layout`,
:func:`level_cells`). ``b`` (:func:`per_level_scale`) and the hash (eq. 3.18) are the thesis's.
The backends:

- :class:`HashGridEncoding` (``backend = "torch"``): pure PyTorch, what CPUs and CI run. Its
  autograd function keeps only the points for backward and recomputes corner rows and weights
  there, one level at a time. :meth:`HashGridEncoding.reference_forward`, the plain differentiable
  version, is the reference every backend is tested against, and the path taken when the points
  themselves need a gradient. :func:`features_and_jacobian` adds the features' spatial Jacobian
  (analytic normals), on any backend's table.
- :class:`TritonHashGrid` (``"triton"``): fused Triton kernels on CUDA
  (:mod:`dreamtext.encoding_triton`).
- :class:`TcnnHashGrid` (``"tcnn"``): tiny-cuda-nn's own kernels.

:func:`make_encoding` picks one; nothing here imports triton or tiny-cuda-nn at module level.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from dreamtext.errors import DreamtextError, cause_line

log = logging.getLogger(__name__)

# tiny-cuda-nn's spatial hash: h(x, y, z) = (x·1) XOR (y·2654435761) XOR (z·805459861) mod T.
HASH_PRIMES: tuple[int, int, int] = (1, 2654435761, 805459861)

ENCODING_KINDS: tuple[str, ...] = ("auto", "torch", "triton", "tcnn")

# Points per pass of the lean torch function. Its temporaries for one level (corner rows, weights,
# gathered features) take about 200 bytes a point, and the forward writes the levels into a
# level-major buffer of L·F·4 bytes a point (128 by default) before one copy into the output: a
# pass stays near 80 MB however many points come in. (Interpolating straight into the output's
# strided columns measured 3.5× slower than the buffer and its copy.)
CHUNK_POINTS = 1 << 18
# A call whose corner indices and weights (8 bytes a corner, 8 corners, every level) take at most
# this many bytes keeps them for backward instead of recomputing them. Small renders (the built-in
# preset: 32 px, ~10k points a step) then pay no recomputation, ~14% of a step; large ones (the
# default field at 64 px: ~150k samples, 150 MB of corners) keep only their points.
KEEP_CORNERS_BYTES = 1 << 24


@dataclass(frozen=True)
class GridLayout:
    """Where each level lives in the flat table, as tiny-cuda-nn lays it out.

    ``scales[l] = exp2(l · log2(per_level_scale)) · base_resolution − 1`` (float32),
    ``resolutions[l] = ceil(scales[l]) + 1``, and level ``l`` owns table rows
    ``offsets[l] .. offsets[l + 1]`` (one row = ``level_dim`` features).
    """

    scales: tuple[float, ...]
    resolutions: tuple[int, ...]
    offsets: tuple[int, ...]
    hashed: tuple[bool, ...]

    @property
    def num_rows(self) -> int:
        return self.offsets[-1]

    def level_size(self, level: int) -> int:
        return self.offsets[level + 1] - self.offsets[level]


def per_level_scale(base_resolution: int, finest_resolution: float, num_levels: int) -> float:
    """Growth factor between levels: ``b = exp(ln(N_max / N_min) / (L − 1))`` (thesis eq. 3.16)."""
    if num_levels == 1:
        return 1.0
    return math.exp(math.log(finest_resolution / base_resolution) / (num_levels - 1))


def grid_layout(
    num_levels: int, base_resolution: int, level_scale: float, log2_hashmap_size: int
) -> GridLayout:
    """The per-level scales, resolutions and table offsets of tiny-cuda-nn's hash grid.

    Rows in level ``l`` = ``min(round_up(res_l^3, 8), 2^log2_hashmap_size)``: a level whose dense
    grid fits in the table is indexed densely, the others through the hash. The scales are computed
    in float32 like the CUDA code, so the resolutions (``ceil``) agree with it.
    """
    log2_scale = np.log2(np.float32(level_scale))
    table_size = 1 << log2_hashmap_size
    scales, resolutions, offsets, hashed = [], [], [0], []
    for level in range(num_levels):
        scale = np.exp2(np.float32(level) * log2_scale) * np.float32(base_resolution)
        scale = np.float32(scale - np.float32(1.0))
        resolution = math.ceil(float(scale)) + 1
        dense_rows = resolution**3
        rows = min(-(-dense_rows // 8) * 8, table_size)
        scales.append(float(scale))
        resolutions.append(resolution)
        offsets.append(offsets[-1] + rows)
        hashed.append(dense_rows > rows)
    return GridLayout(tuple(scales), tuple(resolutions), tuple(offsets), tuple(hashed))


def to_unit_cube(x: Tensor, bound: float) -> Tensor:
    """``u = clamp((x + bound) / (2 bound), 0, 1)``: ``x: [N, 3]`` → ``u: [N, 3]``.

    Points outside the scene are clamped onto its boundary; tiny-cuda-nn would otherwise wrap
    negative cell coordinates around as unsigned integers.
    """
    return ((x + bound) / (2.0 * bound)).clamp(0.0, 1.0)


def level_cells(u_t: Tensor, layout: GridLayout, level: int) -> tuple[Tensor, Tensor]:
    """Rows (within the level) of the 8 corners around each point, and the point's fraction in
    its cell.

    ``u_t: [3, n]``, unit-cube points axis-major → ``rows: [8, n]`` (int32 where they fit),
    ``frac: [3, n]``. With ``p = u · s_l + 0.5``, cell ``c = floor(p)`` and fraction
    ``t = p − c``, corner ``k = k_x + 2 k_y + 4 k_z`` (tiny-cuda-nn's order) sits at
    ``(x, y, z) = c + (k_x, k_y, k_z)`` and has row ``(x + y·res + z·res²) mod size`` on a dense
    level (a corner at coordinate ``res`` wraps around, as in tiny-cuda-nn) and
    ``(x·π1 XOR y·π2 XOR z·π3) mod T`` on a hashed one.
    Corner-major outputs keep every elementwise op on contiguous rows of ``n`` values.
    """
    scale, res, size = layout.scales[level], layout.resolutions[level], layout.level_size(level)
    pos = u_t * scale + 0.5
    cell = torch.floor(pos)
    frac = pos.sub_(cell)
    # int32 indices make index_select and index_add_ about twice as fast on CPU.
    index_dtype = torch.int32 if 2 * size <= 2**31 else torch.int64
    if layout.hashed[level]:
        # The CUDA code multiplies and XORs in uint32. T = 2^k divides 2^32, so only the low k bits
        # of each product count, and those are the bits of c · (π mod T): with c ≤ res + 1 that
        # product fits int32 whenever (res + 2) · T ≤ 2^31 (every default level).
        mask = size - 1
        dtype = torch.int32 if (res + 2) * size <= 2**31 else torch.int64
        sides = []
        for c, prime in zip(cell.to(dtype), HASH_PRIMES, strict=True):
            step = prime & mask  # (c + 1) · π ≡ c · π + step (mod T)
            low = c * step
            sides.append(torch.stack([low, low + step]).bitwise_and_(mask))
        rows = _corners_first(*sides, torch.bitwise_xor).to(index_dtype)
    else:
        # rows ≤ res + res² + res³ < 2 · size: index_dtype holds every intermediate.
        cx, cy, cz = cell.to(index_dtype)
        base = cx + cy * res + cz * (res * res)
        # The 8 corners' offsets, made on the points' device: a list copied up from the host
        # (torch.tensor(list, device=...)) made CUDA's host wait for the queue, once a level.
        k = torch.arange(8, dtype=index_dtype, device=u_t.device)
        steps = (k & 1) + (k >> 1 & 1) * res + (k >> 2) * (res * res)
        rows = base[None, :] + steps[:, None]
        # One conditional subtraction is the modulo.
        rows = torch.where(rows >= size, rows - size, rows)
    return rows, frac


def corner_weights(frac: Tensor) -> Tensor:
    """Trilinear weights ``w_k = Π_d (t_d if k_d else 1 − t_d)``: ``frac: [3, n]`` → ``[8, n]``."""
    return _corners_first(*torch.stack([1.0 - frac, frac], dim=1), torch.mul)


def level_corners(u_t: Tensor, layout: GridLayout, level: int) -> tuple[Tensor, Tensor]:
    """Rows ``[8, n]`` (:func:`level_cells`) and trilinear weights ``[8, n]``
    (:func:`corner_weights`) of the 8 corners around each of the points ``u_t: [3, n]``."""
    rows, frac = level_cells(u_t, layout, level)
    return rows, corner_weights(frac)


def trilinear(corners: Tensor, frac: Tensor, out: Tensor) -> None:
    """``out = Σ_k w_k · corners_k`` as three interpolations, along x, then y, then z.

    ``corners: [8, n, F]`` in :func:`level_cells`'s order, ``frac: [3, n]``, ``out: [n, F]``
    (contiguous). ``lerp(a, b, t) = a + t (b − a)`` pairs corners differing in one axis, so the
    weights are never formed: equal to the weighted sum up to float rounding, with about half the
    memory traffic on the CPU.
    """
    _, t, _, along_y = _along_xy(corners, frac)
    torch.lerp(along_y[0], along_y[1], t[2], out=out.view(-1))


def _along_xy(corners: Tensor, frac: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The first two steps of :func:`trilinear`: ``corners [8, n, F]`` as ``c [z, y, x, n·F]``,
    the fractions per value ``t [3, n·F]``, and the corners interpolated along x
    (``[z, y, n·F]``), then along y (``[z, n·F]``)."""
    n, features = corners.shape[1:]
    c = corners.reshape(2, 2, 2, n * features)
    t = frac[:, :, None].expand(3, n, features).reshape(3, n * features)
    along_x = torch.lerp(c[:, :, 0], c[:, :, 1], t[0])
    along_y = torch.lerp(along_x[:, 0], along_x[:, 1], t[1])
    return c, t, along_x, along_y


def _corners_first(a: Tensor, b: Tensor, c: Tensor, op) -> Tensor:
    """Per-axis values of the lower and upper side ``[2, n]`` → the 8 corners ``[8, n]``, corner
    ``k`` taking the upper x value if bit 0 of ``k`` is set, y for bit 1, z for bit 2."""
    return op(op(a[None, None], b[None, :, None]), c[:, None, None]).view(8, -1)


def _flat_units(rows: Tensor) -> Tensor:
    """``[..., F]`` (contiguous) → a 1-D view of its values: complex pairs when ``F`` is even.

    Gathers and index_add_ along a 1-D tensor are many times faster on CPU than along the rows of
    a 2-D one, and pairs move 8 bytes per element; complex addition is exactly the per-feature sum
    a gradient needs, and a real weight times a complex pair scales both features.
    """
    if rows.shape[-1] % 2 == 1:
        return rows.view(-1)
    return torch.view_as_complex(rows.view(-1, 2))


def _units_per_row(features: int) -> int:
    return features if features % 2 == 1 else features // 2


def _unit_index(rows: Tensor, per_row: int) -> Tensor:
    """Row indices ``[M]`` → their units' indices in :func:`_flat_units`: ``[M · per_row]``."""
    if per_row == 1:
        return rows
    units = torch.arange(per_row, device=rows.device, dtype=rows.dtype)
    return (rows[:, None] * per_row + units).view(-1)


def _units_as_features(units: Tensor, features: int) -> Tensor:
    """Inverse of :func:`_flat_units` for ``[..., per_row]`` units → ``[..., F]`` real."""
    if features % 2 == 1:
        return units
    return torch.view_as_real(units).flatten(-2)


def _table_units(rows: Tensor, layout: GridLayout, level: int, per_row: int) -> Tensor:
    """A level's corner rows ``[8, n]`` → indices of their units in the whole flat table."""
    if layout.num_rows * per_row >= 2**31:
        rows = rows.long()
    return _unit_index((rows + layout.offsets[level]).view(-1), per_row)


def _gather_rows(table: Tensor, rows: Tensor) -> Tensor:
    """``table[rows]``: ``table: [R, F]``, ``rows: [M]`` → ``[M, F]``."""
    features = table.shape[1]
    units = _flat_units(table).index_select(0, _unit_index(rows, _units_per_row(features)))
    return _units_as_features(units.view(len(rows), -1), features)


class _LeanHashGrid(torch.autograd.Function):
    """Features of the unit-cube points ``u: [N, 3]``, keeping only ``u`` for backward.

    Forward, per level ``l``: ``f_l = Σ_k w_k · T[offset_l + row_k]`` (:func:`level_cells`,
    :func:`trilinear`).
    Backward recomputes rows and weights and accumulates
    ``∂L/∂T[offset_l + row_k] += w_k · ∂L/∂f_l`` in float32 (at least) with ``index_add_``, one
    level and one chunk of :data:`CHUNK_POINTS` points at a time, so neither pass holds more than
    one level's temporaries. A call whose corners take at most :data:`KEEP_CORNERS_BYTES` keeps
    them instead (one chunk, nothing recomputed). The input points get no gradient: the caller
    takes the reference path when they need one.
    """

    @staticmethod
    def forward(ctx, u: Tensor, params: Tensor, grid: HashGridEncoding) -> Tensor:
        ctx.grid = grid
        ctx.params_dtype = params.dtype
        F, layout = grid.level_dim, grid.layout
        per_row = _units_per_row(F)
        n_all = u.shape[0]
        small = n_all <= CHUNK_POINTS and n_all * grid.num_levels * 64 <= KEEP_CORNERS_BYTES
        keep = ctx.needs_input_grad[1] and small
        kept: list[Tensor] = []
        table = _flat_units(params.view(-1, F))  # [rows · per_row]
        out = u.new_empty(u.shape[0], grid.output_dim)
        for start in range(0, u.shape[0], CHUNK_POINTS):
            u_t = u[start : start + CHUNK_POINTS].t().contiguous()  # [3, n]
            n = u_t.shape[1]
            levels = u.new_empty(grid.num_levels, n, F)  # level-major: contiguous writes
            for level in range(grid.num_levels):
                rows, frac = level_cells(u_t, layout, level)  # [8, n], [3, n]
                index = _table_units(rows, layout, level, per_row)
                corners = _units_as_features(table.index_select(0, index), F).view(8, n, F)
                trilinear(corners, frac, levels[level])
                if keep:
                    kept += [index, corner_weights(frac)]
            out[start : start + n].view(n, grid.num_levels, F).copy_(levels.transpose(0, 1))
        ctx.save_for_backward(u, *kept)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor, None]:
        u, *kept = ctx.saved_tensors
        grid = ctx.grid
        F, layout = grid.level_dim, grid.layout
        per_row = _units_per_row(F)
        acc_dtype = torch.promote_types(ctx.params_dtype, torch.float32)
        grad = grad.to(acc_dtype)
        grad_table = torch.zeros(layout.num_rows * F, dtype=acc_dtype, device=u.device)
        grad_units = _flat_units(grad_table.view(-1, F))
        for start in range(0, u.shape[0], CHUNK_POINTS):
            n = min(CHUNK_POINTS, u.shape[0] - start)
            # Kept corners come from one chunk; otherwise they are recomputed from the points.
            u_t = None if kept else u[start : start + n].t().contiguous()
            for level in range(grid.num_levels):
                if u_t is None:
                    index, weights = kept[2 * level], kept[2 * level + 1]
                else:
                    rows, weights = level_corners(u_t, layout, level)
                    index = _table_units(rows, layout, level, per_row)
                grad_level = grad[start : start + n, level * F : (level + 1) * F].contiguous()
                values = weights.to(acc_dtype)[:, :, None] * grad_level  # [8, n, F], real
                grad_units.index_add_(0, index, _flat_units(values))
        return None, grad_table.to(ctx.params_dtype), None


def _corner_slopes(frac: Tensor) -> tuple[Tensor, Tensor]:
    """Trilinear weights ``w_k [8, n]`` and their derivatives ``∂w_k/∂t_d [3, 8, n]``.

    ``w_k = Π_e a_e(k)`` with ``a_e = t_e`` or ``1 − t_e``, so ``∂w_k/∂t_d = ±Π_{e≠d} a_e(k)``
    (``+`` where corner ``k`` takes the upper side along ``d``). ``frac: [3, n]``.
    """
    a = torch.stack([1.0 - frac, frac], dim=1)  # [3 axes, 2 sides, n]
    sign = torch.tensor([-1.0, 1.0], dtype=frac.dtype, device=frac.device)[:, None].expand_as(a[0])
    weights = _corners_first(*a, torch.mul)
    slopes = torch.stack(
        [
            _corners_first(sign, a[1], a[2], torch.mul),
            _corners_first(a[0], sign, a[2], torch.mul),
            _corners_first(a[0], a[1], sign, torch.mul),
        ]
    )
    return weights, slopes


def trilinear_with_slopes(corners: Tensor, frac: Tensor, out: Tensor, slopes: Tensor) -> None:
    """:func:`trilinear`'s ``out = Σ_k w_k c_k`` and its derivatives ``slopes[d] = ∂out/∂t_d``.

    ``corners: [8, n, F]``, ``frac: [3, n]``, ``out: [n, F]``, ``slopes: [3, n, F]``. The
    interpolation is linear along each axis, so ``∂out/∂t_x`` is the bilinear (y, z)
    interpolation of the corner differences along x, and likewise for y and z.
    """
    c, t, along_x, along_y = _along_xy(corners, frac)
    step_x = c[:, :, 1] - c[:, :, 0]  # [z, y, n·F]
    step_y = along_x[:, 1] - along_x[:, 0]  # [z, n·F]
    step_x = torch.lerp(step_x[:, 0], step_x[:, 1], t[1])  # [z, n·F]
    torch.lerp(along_y[0], along_y[1], t[2], out=out.view(-1))
    flat = slopes.view(3, -1)
    torch.lerp(step_x[0], step_x[1], t[2], out=flat[0])
    torch.lerp(step_y[0], step_y[1], t[2], out=flat[1])
    torch.sub(along_y[1], along_y[0], out=flat[2])


class _LeanGridJacobian(torch.autograd.Function):
    """Features of the points ``x: [N, 3]`` (world units) and their spatial Jacobian, keeping
    only ``x`` for backward.

    Per level ``l``: ``f_l = Σ_k w_k T_k`` and ``∂f_l/∂x_d = (s_l / 2b) Σ_k ∂w_k/∂t_d T_k`` where
    ``−b ≤ x_d ≤ b`` (0 outside, where the lookup is clamped onto the cube), ``s_l`` the level's
    scale, ``b`` the bound. Both are linear in the table, so backward is one ``index_add_`` of
    ``w_k ∂L/∂f_l + Σ_d ∂w_k/∂x_d ∂L/∂(∂f_l/∂x_d)`` per level and chunk, the rows and weights
    recomputed as in :class:`_LeanHashGrid`. The points get no gradient.
    """

    @staticmethod
    def forward(ctx, x: Tensor, params: Tensor, grid: nn.Module) -> tuple[Tensor, Tensor]:
        ctx.grid = grid
        ctx.params_dtype = params.dtype
        F, layout, levels = grid.level_dim, grid.layout, grid.num_levels
        table = _flat_units(params.view(-1, F))
        per_row = _units_per_row(F)
        features = x.new_empty(x.shape[0], levels * F)
        jacobian = x.new_empty(x.shape[0], levels * F, 3)
        for start in range(0, x.shape[0], CHUNK_POINTS):
            u_t, slope = _unit_points(x[start : start + CHUNK_POINTS], grid.bound)
            n = u_t.shape[1]
            level_features = x.new_empty(levels, n, F)
            level_slopes = x.new_empty(levels, 3, n, F)
            for level in range(levels):
                rows, frac = level_cells(u_t, layout, level)
                index = _table_units(rows, layout, level, per_row)
                corners = _units_as_features(table.index_select(0, index), F).view(8, n, F)
                trilinear_with_slopes(corners, frac, level_features[level], level_slopes[level])
                level_slopes[level] *= (slope * layout.scales[level])[:, :, None]
            chunk = slice(start, start + n)
            features[chunk].view(n, levels, F).copy_(level_features.transpose(0, 1))
            jacobian[chunk].view(n, levels, F, 3).copy_(level_slopes.permute(2, 0, 3, 1))
        ctx.save_for_backward(x)
        return features, jacobian

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_features: Tensor | None, grad_jacobian: Tensor | None):
        (x,) = ctx.saved_tensors
        grid = ctx.grid
        F, layout = grid.level_dim, grid.layout
        per_row = _units_per_row(F)
        acc_dtype = torch.promote_types(ctx.params_dtype, torch.float32)
        grad_table = torch.zeros(layout.num_rows * F, dtype=acc_dtype, device=x.device)
        grad_units = _flat_units(grad_table.view(-1, F))
        levels = grid.num_levels
        for start in range(0, x.shape[0], CHUNK_POINTS):
            u_t, slope = _unit_points(x[start : start + CHUNK_POINTS], grid.bound)
            n = u_t.shape[1]
            # Level-major copies of the incoming gradients ([L, n, F] and [L, 3, n, F]), made
            # once: a level's columns of the point-major ones are strided reads of every row.
            if grad_features is not None:
                grad_f = grad_features[start : start + n].to(acc_dtype).view(n, levels, F)
                grad_f = grad_f.transpose(0, 1).contiguous()
            if grad_jacobian is not None:
                grad_j = grad_jacobian[start : start + n].to(acc_dtype).view(n, levels, F, 3)
                grad_j = grad_j.permute(1, 3, 0, 2).contiguous()
            for level in range(levels):
                rows, frac = level_cells(u_t, layout, level)
                index = _table_units(rows, layout, level, per_row)
                weights, slopes = _corner_slopes(frac)
                values = x.new_zeros(8, n, F, dtype=acc_dtype)
                if grad_features is not None:
                    values += weights.to(acc_dtype)[:, :, None] * grad_f[level]
                if grad_jacobian is not None:
                    slopes = slopes * (slope * layout.scales[level])[:, None, :]
                    for d in range(3):
                        values += slopes[d].to(acc_dtype)[:, :, None] * grad_j[level, d]
                grad_units.index_add_(0, index, _flat_units(values))
        return None, grad_table.to(ctx.params_dtype), None


def _unit_points(x: Tensor, bound: float) -> tuple[Tensor, Tensor]:
    """``x: [n, 3]`` → unit-cube points axis-major ``[3, n]`` and ``∂u/∂x [3, n]``: ``1 / 2b``
    inside the scene along that axis, 0 where the point is clamped onto it."""
    x_t = x.t()
    inside = (x_t >= -bound) & (x_t <= bound)
    return to_unit_cube(x, bound).t().contiguous(), inside.to(x.dtype) / (2.0 * bound)


def features_and_jacobian(grid: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The grid's features ``[N, L·F]`` at ``x: [N, 3]`` (world units) and their Jacobian
    ``∂f/∂x: [N, L·F, 3]`` (:class:`_LeanGridJacobian`), in the table's precision.

    Runs in PyTorch on the table of any backend (they share one layout), so analytic normals
    work whichever grid computes the features.
    """
    params = grid.params
    with torch.autocast(x.device.type, enabled=False):
        return _LeanGridJacobian.apply(x.to(params.dtype), params, grid)


class HashGridEncoding(nn.Module):
    """Pure-PyTorch multi-resolution hash grid: ``x: [N, 3] ∈ [−bound, bound]^3`` → ``[N, L·F]``.

    For level ``l`` with scale ``s_l``: ``p = u · s_l + 0.5``, cell ``c = floor(p)``, fraction
    ``t = p − c``; the feature is ``Σ_corners Π_d (t_d or 1 − t_d) · table[offset_l + index(c +
    corner)]`` where ``index`` is ``x + y·res + z·res²`` (mod the level size) on dense levels and
    the prime-XOR hash (mod ``T``) on the others. The table is one flat parameter ``params`` of
    ``rows · F`` values, laid out as tiny-cuda-nn's, initialised ``U(−1e-4, 1e-4)``.

    ``forward`` runs the lean autograd function (it keeps 12 bytes a point for backward, the
    unit-cube points); when the points require grad it runs :meth:`reference_forward`, whose graph
    also differentiates w.r.t. the points, twice if needed. The grid always runs in the table's
    precision, autocast or not.
    """

    backend = "torch"

    def __init__(
        self,
        num_levels: int = 16,
        level_dim: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: int = 16,
        finest_resolution: float = 2048.0,
        bound: float = 1.0,
    ) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.level_dim = level_dim
        self.log2_hashmap_size = log2_hashmap_size
        self.base_resolution = int(base_resolution)
        self.finest_resolution = float(finest_resolution)
        self.bound = float(bound)
        self.per_level_scale = per_level_scale(self.base_resolution, finest_resolution, num_levels)
        self.layout = grid_layout(
            num_levels, self.base_resolution, self.per_level_scale, log2_hashmap_size
        )
        self.output_dim = num_levels * level_dim
        self.params = nn.Parameter(torch.empty(self.layout.num_rows * level_dim))
        nn.init.uniform_(self.params, -1e-4, 1e-4)

        # Dense levels come first (resolution grows with the level), so two groups suffice.
        self.num_dense = self.layout.hashed.index(True) if any(self.layout.hashed) else num_levels
        layout = self.layout
        self.register_buffer("scales", torch.tensor(layout.scales, dtype=torch.float32), False)
        self.register_buffer("resolutions", torch.tensor(layout.resolutions), False)
        self.register_buffer("offsets", torch.tensor(layout.offsets[:-1]), False)
        sizes = [layout.level_size(level) for level in range(num_levels)]
        self.register_buffer("sizes", torch.tensor(sizes), False)

    @property
    def table(self) -> Tensor:
        """The parameters as rows: ``[rows, F]``."""
        return self.params.view(-1, self.level_dim)

    def forward(self, x: Tensor) -> Tensor:
        """``x: [N, 3]`` (world units) → features ``[N, L·F]``, level-major like tiny-cuda-nn."""
        with torch.autocast(x.device.type, enabled=False):
            if x.requires_grad and torch.is_grad_enabled():
                return self.reference_forward(x)
            return self._encode(to_unit_cube(x.to(self.params.dtype), self.bound))

    def _encode(self, u: Tensor) -> Tensor:
        """The backend's autograd function: unit-cube points ``u: [N, 3]`` → ``[N, L·F]``."""
        return _LeanHashGrid.apply(u, self.params, self)

    def reference_forward(self, x: Tensor) -> Tensor:
        """The grid as plain differentiable torch ops: ``x: [N, 3]`` → ``[N, L·F]``.

        The reference for every backend. Autograd keeps its corner indices, weights and gathered
        features (about 2.5 KiB a point for 16 levels × 2 features) and differentiates w.r.t.
        ``x`` as well as the table.
        """
        u = to_unit_cube(x.to(self.params.dtype), self.bound)
        pos = u[:, None, :] * self.scales[None, :, None] + 0.5  # [N, L, 3]
        cell = torch.floor(pos)
        frac = pos - cell  # carries the gradient to x; floor has none
        index = self._corner_rows(cell.long())  # [N, L, 8]
        axis_weights = torch.stack([1.0 - frac, frac], dim=-1)  # [N, L, 3 axes, 2 sides]
        weights = _corner_combine(*axis_weights.unbind(dim=2), torch.mul)  # [N, L, 8]
        corners = self._gather(index.view(-1)).view(*index.shape, self.level_dim)
        features = torch.einsum("nlc,nlcf->nlf", weights, corners)
        return features.reshape(x.shape[0], self.output_dim)

    def _corner_rows(self, cell: Tensor) -> Tensor:
        """Table rows of the 8 corners of each cell: ``cell: [N, L, 3]`` (int64) → ``[N, L, 8]``.

        Dense levels: ``(x + y·res + z·res²) mod size``; a corner at coordinate ``res`` wraps
        around, as in tiny-cuda-nn. Hashed levels: ``(x·π1 XOR y·π2 XOR z·π3) mod T``; the CUDA
        code multiplies and XORs in uint32, and since ``T = 2^k`` divides ``2^32`` the low ``k``
        bits of the int64 products are the same as after the uint32 wraparound.
        """
        index = torch.empty(*cell.shape[:2], 8, dtype=torch.long, device=cell.device)
        nd = self.num_dense
        if nd > 0:
            res = self.resolutions[None, :nd]
            x, y, z = (cell[:, :nd, 0], cell[:, :nd, 1] * res, cell[:, :nd, 2] * res * res)
            steps = (1, res, res * res)
            rows = _corner_combine(*_sides(x, y, z, steps), torch.add)
            # rows ≤ res + res² + res³ < 2 · size, so one conditional subtraction is the modulo
            # (and much cheaper than an int64 division).
            size = self.sizes[None, :nd, None]
            torch.where(rows >= size, rows - size, rows, out=index[:, :nd])
        if nd < self.num_levels:
            px, py, pz = HASH_PRIMES
            x, y, z = (cell[:, nd:, 0] * px, cell[:, nd:, 1] * py, cell[:, nd:, 2] * pz)
            rows = _corner_combine(*_sides(x, y, z, HASH_PRIMES), torch.bitwise_xor)
            torch.bitwise_and(rows, self.sizes[None, nd:, None] - 1, out=index[:, nd:])
        return index.add_(self.offsets[None, :, None])

    def _gather(self, rows: Tensor) -> Tensor:
        """Table rows ``[M, F]`` at ``rows: [M]``, one differentiable gather for every level."""
        return _gather_rows(self.table, rows)

    def extra_repr(self) -> str:
        return (
            f"levels={self.num_levels}, level_dim={self.level_dim}, "
            f"log2_hashmap_size={self.log2_hashmap_size}, resolutions="
            f"{self.layout.resolutions[0]}..{self.layout.resolutions[-1]}, bound={self.bound}"
        )


def _sides(x: Tensor, y: Tensor, z: Tensor, steps) -> tuple[Tensor, Tensor, Tensor]:
    """Per-axis values of the lower and upper corner: ``v`` and ``v + step``, each ``[..., 2]``."""
    return tuple(
        torch.stack([v, v + step], dim=-1) for v, step in zip((x, y, z), steps, strict=True)
    )


def _corner_combine(a: Tensor, b: Tensor, c: Tensor, op) -> Tensor:
    """Combine per-axis corner values ``[..., 2]`` into the 8 corners ``[..., 8]``.

    Corner ``k`` takes the upper value along x if bit 0 of ``k`` is set, y for bit 1, z for bit 2,
    tiny-cuda-nn's corner order.
    """
    out = op(op(a[..., None, None, :], b[..., None, :, None]), c[..., :, None, None])
    return out.reshape(*a.shape[:-1], 8)


class TritonHashGrid(HashGridEncoding):
    """The same grid run by fused Triton kernels (:mod:`dreamtext.encoding_triton`).

    Forward: one program per block of points and level computes the cell, the 8 corner rows and
    weights and writes the level's features; backward recomputes them and atomically adds
    ``w_k · ∂L/∂f_l`` into a float32 table gradient. Only the unit-cube points are kept for
    backward. Table layout, state dict and :meth:`reference_forward` are
    :class:`HashGridEncoding`'s. Runs on CUDA, or on CPU tensors through Triton's (slow)
    interpreter when ``TRITON_INTERPRET=1`` was set before triton was imported.
    """

    backend = "triton"
    # How the backward adds a point's features into the table gradient: None picks by the GPU
    # (vector atomics from sm_90 on, dreamtext.encoding_triton.vector_atomics_for); True or False
    # forces one form, for tests and benchmarks/encoding_speed.py's A/B.
    vector_atomics: bool | None = None

    def _encode(self, u: Tensor) -> Tensor:
        from dreamtext.encoding_triton import TritonHashGridFunction

        if self.params.dtype != torch.float32:
            raise TypeError(f"the triton hash grid needs a float32 table, got {self.params.dtype}")
        return TritonHashGridFunction.apply(u.contiguous(), self.params, self)


class TcnnHashGrid(nn.Module):
    """The same grid evaluated by tiny-cuda-nn's CUDA kernels (float32 parameters).

    The table is this module's own ``params`` parameter, laid out exactly as
    :class:`HashGridEncoding`'s, so the two backends share state dicts. The tiny-cuda-nn module is
    held outside the module tree and pointed at that parameter, so it adds no second copy.
    """

    backend = "tcnn"

    def __init__(
        self,
        num_levels: int = 16,
        level_dim: int = 2,
        log2_hashmap_size: int = 19,
        base_resolution: int = 16,
        finest_resolution: float = 2048.0,
        bound: float = 1.0,
    ) -> None:
        super().__init__()
        import tinycudann

        self.num_levels = num_levels
        self.level_dim = level_dim
        self.bound = float(bound)
        self.output_dim = num_levels * level_dim
        self.per_level_scale = per_level_scale(int(base_resolution), finest_resolution, num_levels)
        self.layout = grid_layout(
            num_levels, int(base_resolution), self.per_level_scale, log2_hashmap_size
        )
        native = tinycudann.Encoding(
            n_input_dims=3,
            encoding_config={
                "otype": "Grid",
                "type": "Hash",
                "n_levels": num_levels,
                "n_features_per_level": level_dim,
                "log2_hashmap_size": log2_hashmap_size,
                "base_resolution": int(base_resolution),
                "per_level_scale": self.per_level_scale,
                "interpolation": "Linear",
            },
            dtype=torch.float32,
        )
        if native.params.numel() != self.layout.num_rows * level_dim:
            raise RuntimeError(
                f"tiny-cuda-nn grid has {native.params.numel()} parameters, the torch layout "
                f"{self.layout.num_rows * level_dim}: the layouts disagree"
            )
        self.params = nn.Parameter(torch.empty_like(native.params, dtype=torch.float32))
        nn.init.uniform_(self.params, -1e-4, 1e-4)
        native.params = self.params
        object.__setattr__(self, "_native", native)

    def forward(self, x: Tensor) -> Tensor:
        """``x: [N, 3]`` (world units, CUDA) → features ``[N, L·F]`` float32."""
        return self._native(to_unit_cube(x.float(), self.bound).contiguous()).float()


def _tcnn_available(device: torch.device) -> bool:
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401
    except (ImportError, OSError, RuntimeError):
        return False
    return True


# The oldest Triton whose compiler builds dreamtext.encoding_triton's kernels (PyTorch 2.4's).
MIN_TRITON = (3, 0)


def triton_interpreter_on() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET``, read by triton
    when a kernel is defined, so it must be set before :mod:`dreamtext.encoding_triton` loads)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes", "y")


def _triton_problem(device: torch.device, level_dim: int) -> str | None:
    """Why the triton backend cannot run on ``device``, or ``None`` when it can."""
    if level_dim not in (1, 2, 4, 8):
        return f"needs level_dim 1, 2, 4 or 8, not {level_dim}"
    if device.type == "cpu" and not triton_interpreter_on():
        return "needs a CUDA device (or TRITON_INTERPRET=1, Triton's slow CPU interpreter)"
    if device.type not in ("cpu", "cuda") or (
        device.type == "cuda" and not torch.cuda.is_available()
    ):
        return "needs a CUDA device"
    try:
        import triton
    except (ImportError, OSError, RuntimeError):
        return "needs the triton package (Linux CUDA builds of PyTorch ship it)"
    if release_of(getattr(triton, "__version__", "")) < MIN_TRITON:
        # Triton 2.x lacks tl.floor, which the kernels use (benchmarks/triton_compile.py).
        return (
            f"needs triton {'.'.join(map(str, MIN_TRITON))} or later (PyTorch 2.4 and later "
            f"ship it), not {triton.__version__}"
        )
    return None


def release_of(version: str) -> tuple[int, int]:
    """``(3, 2)`` of ``"3.2.0+git1234"``: a version's first two numbers, 0 where missing."""
    numbers = [int(part) for part in re.findall(r"\d+", version)[:2]]
    return tuple(numbers + [0] * (2 - len(numbers)))


def _self_check(grid: HashGridEncoding, num_points: int = 64) -> None:
    """Run a few points, some outside the scene, through ``grid`` and its reference path.

    A missing compiler or a broken driver shows up when the first kernel is built, not at import,
    and a kernel that miscompiles on some GPU gives wrong rows: either is a DreamtextError here.
    Features must agree within 1e-3 of the table's largest value (a wrong row is off by about the
    table's magnitude), table gradients within 1e-4 (they are sums of weights in [0, 1]).
    """
    g = torch.Generator().manual_seed(0)
    x = ((torch.rand(num_points, 3, generator=g) * 2.4 - 1.2) * grid.bound).to(grid.params.device)
    weights = torch.rand(num_points, grid.output_dim, generator=g).to(grid.params.device)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            fast = grid(x)
            (grad_fast,) = torch.autograd.grad(fast, grid.params, weights)
            ref = grid.reference_forward(x)
            (grad_ref,) = torch.autograd.grad(ref, grid.params, weights)
    except Exception as err:  # compiler and driver errors come in many types
        raise DreamtextError(
            f"the {grid.backend} encoding does not run here ({cause_line(err)}): use --encoding "
            "torch"
        ) from err
    scale = grid.params.detach().abs().max().item()
    if not (
        torch.allclose(fast, ref, rtol=0, atol=1e-3 * scale)
        and torch.allclose(grad_fast, grad_ref, rtol=0, atol=1e-4)
    ):
        raise DreamtextError(
            f"the {grid.backend} encoding disagrees with the torch reference on this device: "
            "use --encoding torch"
        )


def check_encoding(kind: str, device: torch.device, level_dim: int = 2) -> None:
    """Raise the :class:`DreamtextError` :func:`make_encoding` would for an unknown backend or
    one that cannot run on ``device``, without building anything: a run checks this before it
    loads its model, which takes minutes for Stable Diffusion."""
    if kind not in ENCODING_KINDS:
        raise DreamtextError(
            f"unknown encoding {kind!r}: use --encoding {', '.join(ENCODING_KINDS)}"
        )
    if kind == "triton":
        problem = _triton_problem(device, level_dim)
        if problem is not None:
            raise DreamtextError(f"the triton encoding {problem}: use --encoding torch")
    if kind == "tcnn" and not _tcnn_available(device):
        raise DreamtextError(
            "the tcnn encoding needs a CUDA device and the tinycudann package: use --encoding torch"
        )


def make_encoding(
    kind: str = "auto", *, device: torch.device | str | None = None, **cfg
) -> nn.Module:
    """Build the hash grid on ``device``.

    ``"torch"``: :class:`HashGridEncoding`. ``"triton"``: :class:`TritonHashGrid` (CUDA, or the
    CPU interpreter when ``TRITON_INTERPRET=1``), built only after a small self-check against the
    reference passes. ``"tcnn"``: :class:`TcnnHashGrid` (CUDA and tiny-cuda-nn). ``"auto"``: on
    CUDA triton when it imports and passes its self-check, else tcnn when it imports, else torch;
    on any other device torch. ``cfg`` holds :class:`HashGridEncoding`'s arguments; the module's
    ``.backend`` says which one was built. Asking for a backend that cannot run is a user error.
    """
    device = torch.device(device if device is not None else "cpu")
    level_dim = cfg.get("level_dim", 2)
    check_encoding(kind, device, level_dim)
    if kind == "torch" or (kind == "auto" and device.type != "cuda"):
        return HashGridEncoding(**cfg).to(device)
    if kind == "triton":
        grid = TritonHashGrid(**cfg).to(device)
        _self_check(grid)
        return grid
    if kind == "tcnn":
        return TcnnHashGrid(**cfg).to(device)
    # auto, on CUDA
    if _triton_problem(device, level_dim) is None:
        grid = TritonHashGrid(**cfg).to(device)
        try:
            _self_check(grid)
            return grid
        except DreamtextError as err:
            # One line (the CLI's "dreamtext: ..."), not a warning's two on stderr.
            log.warning("%s; falling back to another encoding", err)
    if _tcnn_available(device):
        return TcnnHashGrid(**cfg).to(device)
    return HashGridEncoding(**cfg).to(device)


__all__ = [
    "CHUNK_POINTS",
    "ENCODING_KINDS",
    "HASH_PRIMES",
    "GridLayout",
    "HashGridEncoding",
    "TcnnHashGrid",
    "TritonHashGrid",
    "check_encoding",
    "corner_weights",
    "features_and_jacobian",
    "grid_layout",
    "level_cells",
    "level_corners",
    "make_encoding",
    "per_level_scale",
    "release_of",
    "to_unit_cube",
    "trilinear",
    "trilinear_with_slopes",
    "triton_interpreter_on",
]
