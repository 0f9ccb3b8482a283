"""Conformance suite: every hash-grid backend against the reference.

The reference is :meth:`HashGridEncoding.reference_forward` (plain differentiable torch ops, itself
checked against tiny-cuda-nn's arithmetic written out by hand in test_encoding.py), run on a torch
grid holding the same table. Each backend must give the same features and the same table
gradients on dense and hashed levels, corners that wrap around, points on cell faces and outside
the scene, 1, 2 and 4 features per level and no points at all, and must share the state dict.

``torch`` runs everywhere; ``triton`` runs its kernels on CUDA, or on the CPU in Triton's
interpreter (tests/conftest.py sets ``TRITON_INTERPRET=1`` when there is no GPU: slow, so the
grids and point counts here are small); ``tcnn`` runs only where tiny-cuda-nn imports on CUDA.

Tolerances, for tables of values in [−1, 1]: features within 1e-6 and table gradients within 1e-5
(absolute): reordered float32 sums of 8 corners, and of a few hundred points per row, cost a few
ulps. On CUDA a kernel may fuse ``p = u·s + 0.5`` into one FMA (tiny-cuda-nn does), which moves
``p`` by up to an ulp of the finest scale; a point on a cell face may then land in the next cell,
its weights off by that much, so both tolerances grow by 8 ulps of the finest scale there.
"""

import math

import numpy as np
import pytest
import torch

import dreamtext.encoding as encoding_module
from dreamtext.encoding import (
    HashGridEncoding,
    _tcnn_available,
    features_and_jacobian,
    level_corners,
    make_encoding,
    to_unit_cube,
    triton_interpreter_on,
)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BACKENDS = ["torch", "triton", "tcnn"]

# 4 levels, resolutions 4..16, all dense; level 0 has scale 3, so a point at u = 1 sits in cell 3
# and its upper corners at coordinate 4 = res wrap around.
DENSE = dict(num_levels=4, log2_hashmap_size=14, base_resolution=4, finest_resolution=16.0)
# Resolutions 8..32 in a 2^9-row table: level 0 (8^3 = 512 cells) is dense, levels 1-2 hashed.
# Scales 7, 15, 31: u = 1/2 puts p on a cell face at every level.
HASHED = dict(num_levels=3, log2_hashmap_size=9, base_resolution=8, finest_resolution=32.0)


def build(kind: str, level_dim: int = 2, bound: float = 1.0, **cfg) -> torch.nn.Module:
    if kind == "tcnn" and not _tcnn_available(DEVICE):
        pytest.skip("tiny-cuda-nn needs CUDA and the tinycudann package")
    if kind == "triton":
        pytest.importorskip("triton")
        if DEVICE.type == "cpu" and not triton_interpreter_on():
            pytest.skip("no GPU and TRITON_INTERPRET is not set")
    return make_encoding(kind, device=DEVICE, level_dim=level_dim, bound=bound, **cfg)


def reference_of(grid: torch.nn.Module, level_dim: int, bound: float, **cfg) -> HashGridEncoding:
    """A torch grid holding ``grid``'s table (through the state dict), for reference_forward."""
    ref = HashGridEncoding(level_dim=level_dim, bound=bound, **cfg).to(DEVICE)
    ref.load_state_dict(grid.state_dict())
    return ref


def random_table(grid: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        grid.params.copy_(torch.rand(grid.params.shape, generator=g) * 2 - 1)


def points(n: int, bound: float, seed: int = 0) -> torch.Tensor:
    """``n`` random points in 1.2× the scene cube (some outside), then the special ones: the
    origin (a cell face at every level), the 8 cube corners (u ∈ {0, 1}: upper corners wrap on
    dense levels), points on the faces, and points far outside."""
    g = torch.Generator().manual_seed(seed)
    inside = (torch.rand(n, 3, generator=g) * 2.4 - 1.2) * bound
    corners = torch.tensor([[(k >> a & 1) * 2.0 - 1.0 for a in range(3)] for k in range(8)])
    faces = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.5, 0.0], [0.25, -1.0, 0.5], [0.0, 0.0, 0.0]])
    outside = torch.tensor([[5.0, 0.3, -0.2], [-3.0, -7.0, 9.0], [0.0, 1.5, 0.0]])
    return torch.cat([inside, (torch.cat([corners, faces, outside])) * bound]).to(DEVICE)


def tolerances(grid: torch.nn.Module) -> tuple[float, float]:
    """(features, table gradients) absolute tolerances; see the module docstring."""
    fma = 8 * float(np.spacing(np.float32(max(grid.layout.scales)))) if DEVICE.type == "cuda" else 0
    return 1e-6 + fma, 1e-5 + fma


def features_and_grad(fn, params: torch.Tensor, x: torch.Tensor, weights: torch.Tensor):
    """``fn(x)`` and ``∂(Σ weights · fn(x)) / ∂params``."""
    out = fn(x)
    (grad,) = torch.autograd.grad(out, params, weights)
    return out.detach(), grad


CASES = [
    pytest.param(DENSE, 2, id="dense"),
    pytest.param(HASHED, 1, id="hashed-F1"),
    pytest.param(HASHED, 2, id="hashed-F2"),
    pytest.param(HASHED, 4, id="hashed-F4"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("cfg", "level_dim"), CASES)
def test_features_and_table_gradients_match_the_reference(backend, cfg, level_dim):
    assert_matches_reference(backend, cfg, level_dim)


@pytest.mark.parametrize("vector", [False, True], ids=["per-feature", "vector"])
@pytest.mark.parametrize(("cfg", "level_dim"), CASES)
def test_triton_backward_gives_the_reference_gradient_with_either_atomics(cfg, level_dim, vector):
    """The backward kernel adds a point's features with one vector atomic per corner on sm_90
    and later, one feature at a time elsewhere: both forms, whatever this device would pick."""
    assert_matches_reference("triton", cfg, level_dim, vector_atomics=vector)


def assert_matches_reference(
    backend: str, cfg: dict, level_dim: int, vector_atomics: bool | None = None
) -> None:
    """``backend``'s features and table gradients on :func:`points` equal the reference's
    (``vector_atomics``: the triton grid's backward form, None for the device's own)."""
    bound = 0.75
    grid = build(backend, level_dim=level_dim, bound=bound, **cfg)
    if vector_atomics is not None:
        grid.vector_atomics = vector_atomics
    random_table(grid, seed=level_dim)
    ref = reference_of(grid, level_dim, bound, **cfg)
    x = points(150, bound, seed=1)
    weights = torch.randn(len(x), grid.output_dim, generator=torch.Generator().manual_seed(2))
    weights = weights.to(DEVICE)
    out, grad = features_and_grad(grid, grid.params, x, weights)
    ref_out, ref_grad = features_and_grad(ref.reference_forward, ref.params, x, weights)
    feature_tol, grad_tol = tolerances(grid)
    assert out.dtype == torch.float32
    assert out.shape == (len(x), cfg["num_levels"] * level_dim)
    torch.testing.assert_close(out, ref_out, atol=feature_tol, rtol=0)
    torch.testing.assert_close(grad, ref_grad, atol=grad_tol, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("cfg", "level_dim"), CASES)
def test_features_and_jacobian_match_the_reference_on_every_backend(backend, cfg, level_dim):
    """Analytic normals read ``features_and_jacobian`` off any backend's table: its features are
    the backend's, its Jacobian autograd's ``∂f/∂x`` through the reference (the special points
    included: cell faces, wrapped corners, the cube's faces, far outside)."""
    bound = 0.75
    grid = build(backend, level_dim=level_dim, bound=bound, **cfg)
    random_table(grid, seed=level_dim)
    ref = reference_of(grid, level_dim, bound, **cfg)
    x = points(60, bound, seed=5)
    features, jacobian = features_and_jacobian(grid, x)
    feature_tol, _ = tolerances(grid)
    with torch.no_grad():
        torch.testing.assert_close(features, grid(x), atol=feature_tol, rtol=0)
    xr = x.clone().requires_grad_(True)
    out = ref.reference_forward(xr)
    columns = [
        torch.autograd.grad(out[:, j].sum(), xr, retain_graph=True)[0] for j in range(out.shape[1])
    ]
    torch.testing.assert_close(jacobian, torch.stack(columns, dim=1), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_upper_corners_at_the_far_faces_wrap_around(backend):
    """u = 1 on dense level 0 (res 4): corner x = 4 is row ``4 + 4·4 + 4·16 − 64 = 20``."""
    grid = build(backend, **DENSE)
    random_table(grid, seed=3)
    x = torch.ones(1, 3, device=DEVICE)
    out, grad = features_and_grad(grid, grid.params, x, torch.ones(1, 8, device=DEVICE))
    ref = reference_of(grid, 2, 1.0, **DENSE)
    torch.testing.assert_close(out, ref.reference_forward(x).detach(), atol=1e-6, rtol=0)
    # p = 3.5 on every axis: all 8 corners weigh 1/8, corner 7 is the wrapped row 20.
    rows, weights = level_corners(torch.ones(3, 1, device=DEVICE), grid.layout, 0)
    assert rows[7].item() == 20
    assert weights[7].item() == pytest.approx(0.125)
    assert grad.view(-1, 2)[20, 0].item() == pytest.approx(0.125, abs=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_points_outside_the_scene_read_the_clamped_point(backend):
    grid = build(backend, bound=0.5, **HASHED)
    random_table(grid, seed=4)
    outside = torch.tensor([[3.0, -0.9, 0.2], [-0.6, 0.1, 40.0]], device=DEVICE)
    clamped = outside.clamp(-0.5, 0.5)
    w = torch.ones(2, grid.output_dim, device=DEVICE)
    out, grad = features_and_grad(grid, grid.params, outside, w)
    out_clamped, grad_clamped = features_and_grad(grid, grid.params, clamped, w)
    torch.testing.assert_close(out, out_clamped, atol=0, rtol=0)
    torch.testing.assert_close(grad, grad_clamped, atol=0, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_points_give_no_features_and_a_zero_gradient(backend):
    grid = build(backend, **HASHED)
    x = torch.empty(0, 3, device=DEVICE)
    out = grid(x)
    assert out.shape == (0, grid.output_dim)
    out.sum().backward()
    assert grid.params.grad is not None
    assert grid.params.grad.abs().sum().item() == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_dicts_interchange_with_the_torch_grid(backend):
    grid = build(backend, **HASHED)
    source = HashGridEncoding(**HASHED).to(DEVICE)
    random_table(source, seed=5)
    grid.load_state_dict(source.state_dict())
    assert list(grid.state_dict()) == ["params"]
    back = HashGridEncoding(**HASHED).to(DEVICE)
    back.load_state_dict(grid.state_dict())
    x = points(20, 1.0, seed=6)
    with torch.no_grad():
        torch.testing.assert_close(grid(x), source(x), atol=tolerances(grid)[0], rtol=0)
        torch.testing.assert_close(back(x), source(x), atol=0, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode], ids=["no_grad", "inf"])
def test_grid_runs_without_a_graph(backend, mode):
    grid = build(backend, **HASHED)
    random_table(grid, seed=7)
    x = points(30, 1.0, seed=8)
    with mode():
        out = grid(x)
    assert not out.requires_grad
    ref = reference_of(grid, 2, 1.0, **HASHED)
    expected = ref.reference_forward(x).detach()
    torch.testing.assert_close(out, expected, atol=tolerances(grid)[0], rtol=0)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_only_the_points_are_kept_for_backward(backend, monkeypatch):
    """12 bytes a point (the unit-cube coordinates in float32); the reference keeps its corner
    indices, weights and features (>10× more with 3 levels, ~200× with the default 16). The torch
    function's small calls, which keep their corners, are turned off here (next test)."""
    monkeypatch.setattr(encoding_module, "KEEP_CORNERS_BYTES", 0)
    grid = build(backend, **HASHED)
    n = 64
    x = points(n - 15, 1.0)
    params = {p.untyped_storage().data_ptr() for p in grid.parameters()}

    def kept(fn) -> int:
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            if t.untyped_storage().data_ptr() not in params:
                storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(x)
        return sum(storages.values())

    assert kept(grid) == n * 3 * 4
    assert kept(grid.reference_forward) > 10 * n * 3 * 4


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_points_that_need_a_gradient_take_the_differentiable_reference(backend):
    """Autograd normals differentiate the grid w.r.t. the points, and the orientation loss
    differentiates that again w.r.t. the table."""
    grid = build(backend, bound=0.5, **DENSE)
    random_table(grid, seed=9)
    x = points(10, 0.4, seed=10)[:10].requires_grad_(True)
    (dx,) = torch.autograd.grad(grid(x)[:, ::3].sum(), x, create_graph=True)
    (dparams,) = torch.autograd.grad(dx.square().sum(), grid.params)
    ref = reference_of(grid, 2, 0.5, **DENSE)
    (ref_dx,) = torch.autograd.grad(ref.reference_forward(x)[:, ::3].sum(), x, create_graph=True)
    (ref_dparams,) = torch.autograd.grad(ref_dx.square().sum(), ref.params)
    torch.testing.assert_close(dx, ref_dx)
    torch.testing.assert_close(dparams, ref_dparams)
    assert dparams.abs().sum() > 0


def test_suite_cases_cover_dense_and_hashed_levels():
    assert not any(HashGridEncoding(**DENSE).layout.hashed)
    assert HashGridEncoding(**HASHED).layout.hashed == (False, True, True)
    scales = HashGridEncoding(**HASHED).layout.scales
    assert all((0.5 * s + 0.5) == math.floor(0.5 * s + 0.5) for s in scales)
    u = to_unit_cube(torch.zeros(1, 3), 1.0)
    assert u.tolist() == [[0.5, 0.5, 0.5]]


def test_small_torch_calls_keep_their_corners_with_the_same_gradients(monkeypatch):
    """Under ``KEEP_CORNERS_BYTES`` the torch function keeps each level's corner indices and
    weights (64 bytes a point and level) and its backward reuses them; gradients are the same as
    when it recomputes them."""
    grid = build("torch", **HASHED)
    x = points(49, 1.0)
    n = x.shape[0]
    weights = torch.randn(n, grid.output_dim, generator=torch.Generator().manual_seed(1))
    weights = weights.to(DEVICE)

    def run() -> tuple[int, torch.Tensor]:
        saved = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved.append(t.numel() * t.element_size())
            return t

        grid.zero_grad(set_to_none=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = grid(x)
        (out * weights).sum().backward()
        return sum(saved), grid.params.grad.clone()

    levels = grid.num_levels
    kept_bytes, kept_grad = run()
    assert kept_bytes == n * 3 * 4 + levels * n * 64
    monkeypatch.setattr(encoding_module, "KEEP_CORNERS_BYTES", 0)
    lean_bytes, lean_grad = run()
    assert lean_bytes == n * 3 * 4
    torch.testing.assert_close(kept_grad, lean_grad)
    assert kept_grad.abs().sum() > 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("cfg", "level_dim"), CASES)
def test_a_broadcast_output_gradient_gives_the_reference_table_gradient(backend, cfg, level_dim):
    """``grid(x).sum()`` hands backward an expanded gradient (every stride 0) and ``grid(x) * w``
    with ``w: [1, L·F]`` a row-broadcast one: the kernels index ``∂L/∂out`` as a contiguous
    ``[N, L·F]`` tensor, so it must be made one. For the sum, every point puts weight 1 into each
    of its levels' features, so the gradient sums to ``N·L·F``."""
    grid = build(backend, level_dim=level_dim, **cfg)
    random_table(grid, seed=11)
    ref = reference_of(grid, level_dim, 1.0, **cfg)
    x = points(150, 1.0, seed=12)
    (grad_sum,) = torch.autograd.grad(grid(x).sum(), grid.params)
    assert grad_sum.sum().item() == pytest.approx(len(x) * grid.output_dim, rel=1e-5)
    (ref_sum,) = torch.autograd.grad(ref.reference_forward(x).sum(), ref.params)
    _, grad_tol = tolerances(grid)
    torch.testing.assert_close(grad_sum, ref_sum, atol=grad_tol, rtol=1e-6)
    w = torch.randn(1, grid.output_dim, generator=torch.Generator().manual_seed(13)).to(DEVICE)
    (grad_row,) = torch.autograd.grad((grid(x) * w).sum(), grid.params)
    (ref_row,) = torch.autograd.grad((ref.reference_forward(x) * w).sum(), ref.params)
    torch.testing.assert_close(grad_row, ref_row, atol=grad_tol, rtol=1e-6)


@pytest.mark.parametrize("vector", [False, True], ids=["per-feature", "vector"])
def test_the_triton_backward_runs_the_atomics_the_grid_chose(vector, monkeypatch):
    """``vector_atomics`` set on a grid picks the backward kernel's form; otherwise the test of
    the vector form above would run the per-feature kernel and check nothing new."""
    pytest.importorskip("triton")
    if DEVICE.type == "cpu" and not triton_interpreter_on():
        pytest.skip("no GPU and TRITON_INTERPRET is not set")
    import dreamtext.encoding_triton as encoding_triton

    grid = build("triton", **HASHED)
    grid.vector_atomics = vector
    launched = []
    launch = encoding_triton._launch

    def spy(kernel, *args, **extra):
        launched.append((kernel, extra))
        launch(kernel, *args, **extra)

    monkeypatch.setattr(encoding_triton, "_launch", spy)
    grid(points(5, 1.0)).sum().backward()
    backward_kernel = encoding_triton.hash_grid_backward_kernel
    backward = [extra for kernel, extra in launched if kernel is backward_kernel]
    assert backward == [{"VECTOR_ATOMICS": vector}]


def test_triton_takes_eight_features_per_level_as_check_encoding_promises():
    """``level_dim`` 8 is one of the counts the kernels tile (1, 2, 4 or 8): it builds and gives
    the reference's features and gradients."""
    assert_matches_reference("triton", HASHED, 8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_points_in_a_column_major_view_give_the_same_features_and_gradients(backend):
    """``x`` as a ``[N, 3]`` view of a ``[3, N]`` tensor (strides ``(1, N)``): elementwise ops keep
    that layout, so the unit-cube points reach the kernels column-major unless made contiguous."""
    grid = build(backend, **HASHED)
    random_table(grid, seed=14)
    x = points(150, 1.0, seed=15)
    x_view = x.t().contiguous().t()
    assert not x_view.is_contiguous()
    weights = torch.randn(len(x), grid.output_dim, generator=torch.Generator().manual_seed(16))
    out, grad = features_and_grad(grid, grid.params, x, weights.to(DEVICE))
    out_view, grad_view = features_and_grad(grid, grid.params, x_view, weights.to(DEVICE))
    torch.testing.assert_close(out_view, out, atol=0, rtol=0)
    torch.testing.assert_close(grad_view, grad, atol=1e-6, rtol=0)
