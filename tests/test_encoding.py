"""The pure-torch hash grid against straightforward references of tiny-cuda-nn's arithmetic, its
lean autograd function, and backend selection. Every backend against the reference:
test_encoding_backends.py."""

import math
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import dreamtext.encoding as encoding_module
from dreamtext.encoding import (
    GridLayout,
    HashGridEncoding,
    TcnnHashGrid,
    TritonHashGrid,
    _LeanHashGrid,
    _self_check,
    features_and_jacobian,
    level_cells,
    make_encoding,
    to_unit_cube,
)
from dreamtext.errors import DreamtextError

# 4 levels, resolutions 4..16: every level fits a 2^14-row table, so all are indexed densely.
DENSE_CFG = dict(num_levels=4, level_dim=2, log2_hashmap_size=14, base_resolution=4)
# Resolutions 8..64 in a 2^9-row table: level 0 (8^3 = 512 cells) is dense, the rest hashed.
HASHED_CFG = dict(num_levels=3, level_dim=2, log2_hashmap_size=9, base_resolution=8)


def _random_table(enc: HashGridEncoding, seed: int = 0) -> None:
    """Features of order one, so interpolation errors are not hidden by the 1e-4 init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        enc.params.copy_(torch.rand(enc.params.shape, generator=g) * 2 - 1)


def _tcnn_rows(num_levels, base, finest, log2_size):
    """tiny-cuda-nn's per-level row counts, written out directly: round res^3 up to a multiple
    of 8, then cap at the table size."""
    b = math.exp(math.log(finest / base) / (num_levels - 1))
    rows = []
    for level in range(num_levels):
        scale = 2.0 ** (level * math.log2(b)) * base - 1.0
        res = math.ceil(scale) + 1
        rows.append(min((res**3 + 7) // 8 * 8, 2**log2_size))
    return rows


def _trilinear_reference(enc: HashGridEncoding, u: torch.Tensor, level_value) -> torch.Tensor:
    """Features of every level by hand; ``level_value(level, ix, iy, iz) -> [F]`` is a cell's value.

    Positions are rounded to float32 like the CUDA code, ``p = u · scale + 0.5``.
    """
    out = []
    for level, scale in enumerate(enc.layout.scales):
        feats = []
        for p in u.tolist():
            pos = [
                float(np.float32(np.float32(c) * np.float32(scale)) + np.float32(0.5)) for c in p
            ]
            cell = [math.floor(c) for c in pos]
            t = [c - f for c, f in zip(pos, cell, strict=True)]
            acc = torch.zeros(enc.level_dim, dtype=torch.float64)
            for dx in (0, 1):
                for dy in (0, 1):
                    for dz in (0, 1):
                        w = (
                            (t[0] if dx else 1 - t[0])
                            * (t[1] if dy else 1 - t[1])
                            * (t[2] if dz else 1 - t[2])
                        )
                        corner = (cell[0] + dx, cell[1] + dy, cell[2] + dz)
                        acc += w * level_value(level, *corner).double()
            feats.append(acc)
        out.append(torch.stack(feats))
    return torch.cat(out, dim=1).float()


def test_level_rows_follow_tcnn_rounding_rule():
    enc = HashGridEncoding(finest_resolution=2048.0)
    rows = [enc.layout.level_size(level) for level in range(16)]
    assert rows == _tcnn_rows(16, 16, 2048.0, 19)
    assert enc.layout.resolutions[:6] == (16, 23, 31, 43, 59, 81)
    assert rows[1] == 12168  # 23^3 = 12167 rounded up to a multiple of 8
    assert rows[5] == 2**19  # 81^3 > 2^19: hashed
    assert enc.params.numel() == 2 * sum(rows)
    assert enc.output_dim == 32


# Both ways through the grid: the lean autograd function and the plain differentiable reference.
PATHS = [
    pytest.param(lambda enc, x: enc(x), id="lean"),
    pytest.param(lambda enc, x: enc.reference_forward(x), id="reference"),
]


@pytest.mark.parametrize("run", PATHS)
def test_dense_levels_match_dense_grid_reference(run):
    enc = HashGridEncoding(finest_resolution=16.0, bound=1.0, **DENSE_CFG)
    assert not any(enc.layout.hashed)
    _random_table(enc)
    table = enc.params.detach().view(-1, 2)
    grids = []
    for level, res in enumerate(enc.layout.resolutions):
        # The dense grid G[z, y, x] read from the level's rows; interior points never wrap.
        start = enc.layout.offsets[level]
        grids.append(table[start : start + res**3].view(res, res, res, 2))
    g = torch.Generator().manual_seed(1)
    u = torch.randint(0, 54, (6, 3), generator=g) / 64.0  # exact in float32, interior cells
    expected = _trilinear_reference(enc, u, lambda lvl, x, y, z: grids[lvl][z, y, x])
    got = run(enc, u * 2.0 - 1.0)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("run", PATHS)
def test_hashed_levels_match_per_point_prime_xor_hash(run):
    enc = HashGridEncoding(finest_resolution=64.0, **HASHED_CFG)
    assert enc.layout.hashed == (False, True, True)
    _random_table(enc, seed=2)
    table = enc.params.detach().view(-1, 2)
    size = 2**9

    def value(level, x, y, z):
        if level == 0:
            res = enc.layout.resolutions[0]
            row = (x + y * res + z * res * res) % enc.layout.level_size(0)
        else:
            h = (x * 1) ^ (y * 2654435761 % 2**32) ^ (z * 805459861 % 2**32)
            row = (h % 2**32) % size
        return table[enc.layout.offsets[level] + row]

    # The last point sits on the far corner: its upper corners lie at coordinate ``res`` and wrap.
    u = torch.tensor([[9, 45, 27], [58, 3, 42], [64, 64, 64]]) / 64.0
    expected = _trilinear_reference(enc, u, value)
    torch.testing.assert_close(run(enc, u * 2.0 - 1.0), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("log2_size", [19, 22])
def test_hashed_rows_equal_the_uint32_hash_with_int32_and_int64_arithmetic(log2_size):
    """Rows of a hashed level at resolution 4000: a 2^19 table takes the int32 path
    (4002 · 2^19 < 2^31), a 2^22 one the int64 path; both equal tiny-cuda-nn's uint32 hash."""
    size, scale = 1 << log2_size, 3999.0
    layout = GridLayout(scales=(scale,), resolutions=(4000,), offsets=(0, size), hashed=(True,))
    u = torch.tensor([[0.0, 0.5, 1.0], [0.9999, 0.123, 0.77], [1.0, 1.0, 1.0]])
    rows, frac = level_cells(u.t().contiguous(), layout, 0)
    expected_rows = []
    for point in u.tolist():
        cell = [math.floor(c * scale + 0.5) for c in point]
        for k in range(8):
            x, y, z = (cell[d] + (k >> d & 1) for d in range(3))
            h = (x * 1 ^ y * 2654435761 ^ z * 805459861) % 2**32
            expected_rows.append(h % size)
    assert rows.dtype == torch.int32
    assert rows.t().reshape(-1).tolist() == expected_rows
    torch.testing.assert_close(frac.t(), u * scale + 0.5 - torch.floor(u * scale + 0.5))


def test_points_outside_bound_are_clamped():
    enc = HashGridEncoding(finest_resolution=16.0, bound=0.5, **DENSE_CFG)
    _random_table(enc)
    inside = torch.tensor([[0.5, -0.5, 0.2]])
    outside = torch.tensor([[3.0, -0.9, 0.2]])
    torch.testing.assert_close(enc(outside), enc(inside))


@pytest.mark.parametrize("run", PATHS)
def test_gradient_reaches_only_the_eight_corner_rows_of_each_level(run):
    enc = HashGridEncoding(finest_resolution=16.0, **DENSE_CFG)
    _random_table(enc)
    u = torch.tensor([[20, 33, 17]]) / 64.0
    run(enc, u * 2.0 - 1.0).sum().backward()
    touched = enc.params.grad.view(-1, 2).abs().sum(dim=1).nonzero().flatten()
    expected = set()
    for level, (scale, res) in enumerate(
        zip(enc.layout.scales, enc.layout.resolutions, strict=True)
    ):
        cell = [math.floor(c * scale + 0.5) for c in u[0].tolist()]
        for dx in (0, 1):
            for dy in (0, 1):
                for dz in (0, 1):
                    x, y, z = cell[0] + dx, cell[1] + dy, cell[2] + dz
                    expected.add(enc.layout.offsets[level] + x + y * res + z * res * res)
    assert set(touched.tolist()) == expected
    assert len(expected) == 8 * 4
    # Each feature of a row gets that corner's trilinear weight; the weights of a level sum to 1.
    grad = enc.params.grad.view(-1, 2)
    torch.testing.assert_close(grad[:, 0], grad[:, 1])
    assert grad[:, 0].sum().item() == pytest.approx(4.0, abs=1e-5)


def test_table_initialised_small_and_uniform():
    enc = HashGridEncoding(finest_resolution=16.0, **DENSE_CFG)
    assert enc.params.abs().max().item() <= 1e-4
    assert enc.params.std().item() == pytest.approx(1e-4 / math.sqrt(3), rel=0.05)


def test_input_gradient_matches_finite_differences():
    enc = HashGridEncoding(finest_resolution=16.0, **DENSE_CFG).double()
    _random_table(enc)
    x = torch.tensor([[0.11, -0.23, 0.37]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: enc(p), (x,), eps=1e-6, atol=1e-4)


def test_make_encoding_torch_backend_on_cpu():
    enc = make_encoding("auto", device="cpu", finest_resolution=16.0, **DENSE_CFG)
    assert enc.backend == "torch"
    assert enc(torch.zeros(5, 3)).shape == (5, enc.output_dim)


def test_make_encoding_tcnn_without_cuda_names_the_torch_fallback():
    with pytest.raises(DreamtextError, match="--encoding torch"):
        make_encoding("tcnn", device="cpu", finest_resolution=16.0, **DENSE_CFG)


def test_lean_backward_is_the_exact_adjoint_of_its_forward():
    """The features are linear in the table, so the table gradient is checked in float64
    against finite differences, hashed levels included."""
    # Resolutions 4 and 8 in a 2^6-row table: level 0 is dense, level 1 hashed.
    enc = HashGridEncoding(2, 2, log2_hashmap_size=6, base_resolution=4, finest_resolution=8.0)
    enc = enc.double()
    assert enc.layout.hashed == (False, True)
    g = torch.Generator().manual_seed(5)
    u = torch.rand(40, 3, generator=g, dtype=torch.float64)
    table = torch.rand(enc.params.shape, generator=g, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: _LeanHashGrid.apply(u, p, enc), (table,))


def test_lean_function_gives_the_same_result_in_chunks(monkeypatch):
    enc = HashGridEncoding(finest_resolution=64.0, **HASHED_CFG)
    _random_table(enc, seed=6)
    x = torch.rand(50, 3) * 2.0 - 1.0
    w = torch.randn(50, enc.output_dim)
    whole = enc(x)
    (whole * w).sum().backward()
    grad = enc.params.grad.clone()
    enc.zero_grad()
    monkeypatch.setattr(encoding_module, "CHUNK_POINTS", 7)
    chunked = enc(x)
    (chunked * w).sum().backward()
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(enc.params.grad, grad, atol=1e-6, rtol=0)


def test_grid_stays_float32_under_autocast():
    enc = HashGridEncoding(finest_resolution=16.0, **DENSE_CFG)
    _random_table(enc)
    x = torch.rand(10, 3) * 2.0 - 1.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lean = enc(x)
        reference = enc(x.requires_grad_(True))
    assert lean.dtype == reference.dtype == torch.float32
    torch.testing.assert_close(lean, enc.reference_forward(x).detach(), atol=1e-6, rtol=0)


def test_importing_the_package_does_not_import_triton():
    code = (
        "import sys, dreamtext.encoding, dreamtext.field, dreamtext.checkpoint; "
        "from dreamtext.encoding import make_encoding; make_encoding('auto'); "
        "assert 'triton' not in sys.modules, 'triton was imported'"
    )
    root = Path(__file__).parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=root)


def test_make_encoding_auto_on_cpu_is_the_torch_grid_even_with_the_triton_interpreter(
    monkeypatch,
):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert make_encoding("auto", device="cpu", **DENSE_CFG).backend == "torch"


def test_make_encoding_triton_on_cpu_without_the_interpreter_names_the_fix(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(DreamtextError, match=r"needs a CUDA device.*--encoding torch"):
        make_encoding("triton", device="cpu", **DENSE_CFG)


def test_make_encoding_triton_rejects_feature_counts_its_kernels_cannot_tile():
    with pytest.raises(DreamtextError, match=r"level_dim 1, 2, 4 or 8.*--encoding torch"):
        make_encoding("triton", device="cpu", **{**DENSE_CFG, "level_dim": 3})


class _WrongGrid(HashGridEncoding):
    backend = "broken"

    def _encode(self, u):
        return super()._encode(u.flip(0))


class _CrashingGrid(HashGridEncoding):
    backend = "broken"

    def _encode(self, u):
        raise RuntimeError("Failed to find C compiler. Please specify via CC\nmore detail")


def test_self_check_rejects_a_backend_that_disagrees_with_the_reference():
    with pytest.raises(DreamtextError, match=r"disagrees with the torch reference.*encoding torch"):
        _self_check(_WrongGrid(finest_resolution=64.0, **HASHED_CFG))


def test_self_check_turns_a_kernel_build_failure_into_one_line():
    with pytest.raises(DreamtextError, match=r"RuntimeError: Failed to find C compiler\. Please"):
        _self_check(_CrashingGrid(finest_resolution=64.0, **HASHED_CFG))


def test_self_check_passes_the_torch_grid_and_the_triton_grid():
    _self_check(HashGridEncoding(finest_resolution=64.0, **HASHED_CFG))
    if encoding_module.triton_interpreter_on() or torch.cuda.is_available():
        pytest.importorskip("triton")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        _self_check(TritonHashGrid(finest_resolution=64.0, **HASHED_CFG).to(device))


def test_unit_cube_maps_the_scene_onto_zero_one():
    x = torch.tensor([[-2.0, 0.0, 2.0], [-9.0, 1.0, 9.0]])
    assert to_unit_cube(x, 2.0).tolist() == [[0.0, 0.5, 1.0], [0.0, 0.75, 1.0]]


def test_make_encoding_rejects_unknown_kind():
    with pytest.raises(DreamtextError, match="--encoding"):
        make_encoding("cuda", device="cpu")


class _FakeTcnnEncoding(torch.nn.Module):
    """Stands in for ``tinycudann.Encoding`` on CPU: reads [0, 1]^3 inputs from ``self.params``
    with the torch grid (bound 0.5 maps [−0.5, 0.5] onto [0, 1])."""

    def __init__(self, n_input_dims, encoding_config, dtype):
        super().__init__()
        c = encoding_config
        assert (n_input_dims, c["otype"], c["type"], dtype) == (3, "Grid", "Hash", torch.float32)
        levels, base = c["n_levels"], c["base_resolution"]
        finest = base * c["per_level_scale"] ** (levels - 1)
        self.grid = HashGridEncoding(
            levels, c["n_features_per_level"], c["log2_hashmap_size"], base, finest, bound=0.5
        )
        self.params = torch.nn.Parameter(torch.zeros_like(self.grid.params))

    def forward(self, u):
        assert u.min() >= 0 and u.max() <= 1
        return torch.func.functional_call(self.grid, {"params": self.params}, (u - 0.5,))


def test_tcnn_wrapper_shares_one_table_and_state_dict_with_the_torch_grid(monkeypatch):
    monkeypatch.setitem(
        sys.modules, "tinycudann", types.SimpleNamespace(Encoding=_FakeTcnnEncoding)
    )
    cfg = dict(finest_resolution=64.0, bound=2.0, **HASHED_CFG)
    tcnn_grid, torch_grid = TcnnHashGrid(**cfg), HashGridEncoding(**cfg)
    _random_table(torch_grid, seed=4)
    tcnn_grid.load_state_dict(torch_grid.state_dict())
    assert list(tcnn_grid.state_dict()) == ["params"]
    x = torch.tensor([[0.3, -1.7, 1.1], [5.0, 0.0, -3.0]])  # the second point lies outside
    torch.testing.assert_close(tcnn_grid(x), torch_grid(x))
    tcnn_grid(x).sum().backward()
    assert tcnn_grid.params.grad.abs().sum() > 0


@pytest.mark.parametrize("level_dim", [1, 2, 4])
@pytest.mark.parametrize("cfg", [DENSE_CFG, HASHED_CFG], ids=["dense", "hashed"])
def test_features_and_jacobian_match_the_reference_and_its_gradient(monkeypatch, cfg, level_dim):
    """``features_and_jacobian``: the lean features, and ``∂f/∂x`` equal to autograd's gradient of
    :meth:`reference_forward` (zero along an axis where the point is clamped onto the cube),
    in several chunks."""
    monkeypatch.setattr(encoding_module, "CHUNK_POINTS", 16)
    enc = HashGridEncoding(**{**cfg, "level_dim": level_dim}, finest_resolution=32.0, bound=1.5)
    _random_table(enc)
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(40, 3, generator=g) * 2 - 1) * 1.8  # about a sixth outside per axis
    features, jacobian = features_and_jacobian(enc, x)
    torch.testing.assert_close(features, enc(x).detach(), atol=1e-6, rtol=0)
    xr = x.clone().requires_grad_(True)
    reference = enc.reference_forward(xr)
    columns = [
        torch.autograd.grad(reference[:, j].sum(), xr, retain_graph=True)[0]
        for j in range(enc.output_dim)
    ]
    torch.testing.assert_close(jacobian, torch.stack(columns, dim=1), atol=1e-4, rtol=1e-5)
    outside = x.abs() > 1.5
    assert outside.any() and (jacobian.permute(0, 2, 1)[outside] == 0).all()
    assert jacobian.abs().max() > 1.0  # slopes of order s_l / 2b, not a zero array


@pytest.mark.parametrize("cfg", [DENSE_CFG, HASHED_CFG], ids=["dense", "hashed"])
def test_jacobian_table_gradient_is_the_reference_double_backward(monkeypatch, cfg):
    """Features and Jacobian are linear in the table: their backward (one index_add_ of corner
    weights and weight slopes) equals autograd through the reference's ``∂f/∂x`` built with
    ``create_graph``."""
    monkeypatch.setattr(encoding_module, "CHUNK_POINTS", 16)
    enc = HashGridEncoding(**cfg, finest_resolution=32.0)
    _random_table(enc)
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(30, 3, generator=g) * 2 - 1) * 1.1
    w_f = torch.randn(30, enc.output_dim, generator=g)
    w_j = torch.randn(30, enc.output_dim, 3, generator=g)
    features, jacobian = features_and_jacobian(enc, x)
    (grad,) = torch.autograd.grad((features * w_f).sum() + (jacobian * w_j).sum(), enc.params)
    xr = x.clone().requires_grad_(True)
    reference = enc.reference_forward(xr)
    total = (reference * w_f).sum()
    for j in range(enc.output_dim):
        (column,) = torch.autograd.grad(reference[:, j].sum(), xr, create_graph=True)
        total = total + (column * w_j[:, j]).sum()
    (expected,) = torch.autograd.grad(total, enc.params)
    torch.testing.assert_close(grad, expected, atol=1e-4, rtol=1e-5)
    assert expected.abs().max() > 1.0


def test_jacobian_of_a_table_holding_the_x_coordinate_is_the_scale():
    """A dense level whose rows hold their corner's x index interpolates ``p_x = u_x s + 0.5``:
    ``∂f/∂x = s / 2b`` along x and 0 along y and z."""
    enc = HashGridEncoding(
        num_levels=1,
        level_dim=1,
        log2_hashmap_size=14,
        base_resolution=8,
        finest_resolution=8.0,
        bound=2.0,
    )
    res = enc.layout.resolutions[0]
    with torch.no_grad():
        enc.params.copy_((torch.arange(enc.params.numel()) % res).float())
    x = (torch.rand(20, 3) * 2 - 1) * 1.2  # u ≤ 0.8: no corner wraps around
    features, jacobian = features_and_jacobian(enc, x)
    scale = enc.layout.scales[0]
    torch.testing.assert_close(features[:, 0], (x[:, 0] + 2.0) / 4.0 * scale + 0.5)
    expected = torch.tensor([scale / 4.0, 0.0, 0.0]).expand(20, 3)
    torch.testing.assert_close(jacobian[:, 0], expected, atol=1e-5, rtol=0)


def test_make_encoding_triton_names_the_fix_for_a_triton_too_old_for_its_kernels(monkeypatch):
    fake = types.ModuleType("triton")
    fake.__version__ = "2.3.1"  # PyTorch 2.3's: no tl.floor
    monkeypatch.setitem(sys.modules, "triton", fake)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(DreamtextError, match=r"triton 3\.0 or later .*not 2\.3\.1.*encoding torch"):
        make_encoding("triton", device="cpu", **DENSE_CFG)
    for version in ("3.0.0", "3.6.0+git9f1c2a", "10.1"):
        fake.__version__ = version
        assert encoding_module._triton_problem(torch.device("cpu"), 2) is None


def test_release_of_reads_the_first_two_numbers_of_a_version():
    assert encoding_module.release_of("3.2.0+git1234") == (3, 2)
    assert encoding_module.release_of("10") == (10, 0)
    assert encoding_module.release_of("") == (0, 0)


class _WrongGradientGrid(HashGridEncoding):
    """Right features, twice the table gradient: a backward kernel that adds each corner twice."""

    backend = "broken"

    def _encode(self, u):
        out = super()._encode(u)
        return out + (out - out.detach())


def test_self_check_rejects_a_backend_whose_table_gradient_disagrees():
    with pytest.raises(DreamtextError, match=r"disagrees with the torch reference.*encoding torch"):
        _self_check(_WrongGradientGrid(finest_resolution=64.0, **HASHED_CFG))


def test_make_encoding_triton_refuses_kernels_that_disagree_with_the_reference(monkeypatch):
    """``--encoding triton`` is built only after its self-check passes: a kernel that
    miscompiles on this device is a one-line error naming the fix, not silently wrong features."""
    pytest.importorskip("triton")
    if not (encoding_module.triton_interpreter_on() or torch.cuda.is_available()):
        pytest.skip("no GPU and TRITON_INTERPRET is not set")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    encode = TritonHashGrid._encode
    monkeypatch.setattr(TritonHashGrid, "_encode", lambda self, u: encode(self, u.flip(0)))
    with pytest.raises(DreamtextError, match=r"triton encoding disagrees.*--encoding torch"):
        make_encoding("triton", device=device, finest_resolution=64.0, **HASHED_CFG)


class _SlightlyWrongGrid(HashGridEncoding):
    """Features off by 1% of the table's largest value (a kernel reading a neighbouring row of a
    near-constant table), gradients right."""

    backend = "broken"

    def _encode(self, u):
        return super()._encode(u) + 0.01 * self.params.detach().abs().max()


def test_self_check_rejects_features_off_by_more_than_its_stated_tolerance():
    """The self-check's features agree within 1e-3 of the table's largest value: 1e-2 fails."""
    with pytest.raises(DreamtextError, match=r"disagrees with the torch reference"):
        _self_check(_SlightlyWrongGrid(finest_resolution=64.0, **HASHED_CFG))


@pytest.mark.parametrize("value", ["1", "true", "ON", "yes", "y"])  # triton 3.9: all true
def test_the_triton_interpreter_is_on_for_the_values_triton_reads_as_true(value, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", value)
    assert encoding_module.triton_interpreter_on()
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not encoding_module.triton_interpreter_on()


def test_auto_falling_back_from_a_failed_triton_self_check_says_so_in_one_line(monkeypatch, capsys):
    """On CUDA, `--encoding auto` whose Triton grid failed its self-check said so by
    `warnings.warn`: two lines on stderr in `text`, `image` and `batch` (``.../field.py:325:
    UserWarning: ...`` and the source line ``self.encoding = make_encoding(``). It is one
    ``dreamtext:`` line, as the CLI prints the package's other warnings."""
    from dreamtext.cli import show_progress_messages

    class _Built(torch.nn.Module):
        def __init__(self, **cfg):
            super().__init__()

        def to(self, device):  # a CPU stands in for the GPU
            return self

    def failed(grid):
        raise DreamtextError("the Triton hash grid disagrees with the reference")

    monkeypatch.setattr(encoding_module, "check_encoding", lambda *args: None)
    monkeypatch.setattr(encoding_module, "_triton_problem", lambda *args: None)
    monkeypatch.setattr(encoding_module, "_self_check", failed)
    monkeypatch.setattr(encoding_module, "_tcnn_available", lambda device: False)
    monkeypatch.setattr(encoding_module, "TritonHashGrid", _Built)
    monkeypatch.setattr(encoding_module, "HashGridEncoding", _Built)
    show_progress_messages()
    make_encoding("auto", device="cuda", **DENSE_CFG)
    assert capsys.readouterr().err.splitlines() == [
        "dreamtext: the Triton hash grid disagrees with the reference; falling back to another "
        "encoding"
    ]


@pytest.mark.parametrize("cfg", [DENSE_CFG, HASHED_CFG], ids=["dense", "hashed"])
def test_the_jacobian_on_the_faces_of_the_cube_is_the_references(cfg):
    """A point exactly on a face, x_d = ±b, is inside the scene: the lookup is not clamped there,
    and ``∂f/∂x_d`` is the slope autograd gives :meth:`reference_forward`, not zero."""
    enc = HashGridEncoding(**cfg, finest_resolution=32.0, bound=1.5)
    _random_table(enc)
    x = torch.tensor([[1.5, 0.2, -0.3], [-1.5, 0.4, 0.1], [0.3, 1.5, -1.5]])
    _, jacobian = features_and_jacobian(enc, x)
    xr = x.clone().requires_grad_(True)
    reference = enc.reference_forward(xr)
    columns = [
        torch.autograd.grad(reference[:, j].sum(), xr, retain_graph=True)[0]
        for j in range(enc.output_dim)
    ]
    expected = torch.stack(columns, dim=1)
    assert expected.abs().amax(dim=1).min() > 0  # autograd's slope on the face is not zero
    torch.testing.assert_close(jacobian, expected, atol=1e-4, rtol=1e-5)
