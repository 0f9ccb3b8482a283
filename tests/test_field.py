"""NeRFField: blob bias, activations, normals, backgrounds, optimiser groups, config round trip."""

import math

import pytest
import torch
import torch.nn.functional as F

from dreamtext.errors import DreamtextError
from dreamtext.field import (
    FieldConfig,
    NeRFField,
    activate_density,
    density_slope,
    field_config_from_dict,
    field_config_to_dict,
    frequency_encoding,
)

# A small grid and MLP: the behaviours under test do not depend on the sizes.
SMALL = dict(
    num_levels=4,
    log2_hashmap_size=12,
    base_resolution=4,
    finest_resolution_factor=32.0,
    hidden_dim=16,
    num_blocks=2,
    bg_hidden_dim=8,
    encoding="torch",
)


def small_field(**overrides) -> NeRFField:
    torch.manual_seed(0)
    return NeRFField(FieldConfig(**{**SMALL, **overrides}))


def blob_only(**overrides) -> NeRFField:
    """A field whose MLP outputs zero: σ is the activated blob alone, albedo 0.5."""
    field = small_field(**overrides)
    with torch.no_grad():
        field.output_layer.weight.zero_()
        field.output_layer.bias.zero_()
    return field


def random_points(n: int, scale: float = 0.9) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return (torch.rand(n, 3, generator=g) * 2 - 1) * scale


@pytest.mark.parametrize(
    ("activation", "act"), [("softplus", F.softplus), ("exp", torch.exp)], ids=["softplus", "exp"]
)
def test_blob_is_added_before_the_activation(activation, act):
    field = blob_only(density_activation=activation)
    on_shell = torch.tensor([[0.5, 0.0, 0.0], [0.0, -0.3, 0.4]])  # |p| = b = 0.5
    origin = torch.zeros(1, 3)
    assert field.density(origin).item() == pytest.approx(act(torch.tensor(10.0)).item(), rel=1e-5)
    torch.testing.assert_close(field.density(on_shell), act(torch.zeros(2)))
    far = torch.tensor([[0.0, 0.75, 0.0]])  # d = 10 (1 − 1.5) = −5
    assert field.density(far).item() == pytest.approx(act(torch.tensor(-5.0)).item(), rel=1e-5)


def test_forward_returns_density_and_albedo_in_unit_range():
    field = small_field()
    x = random_points(64)
    sigma, albedo = field(x)
    assert sigma.shape == (64,) and albedo.shape == (64, 3)
    assert (sigma >= 0).all()
    assert (albedo >= 0).all() and (albedo <= 1).all()
    torch.testing.assert_close(sigma, field.density(x))


def test_zeroed_mlp_gives_grey_albedo():
    _, albedo = blob_only()(random_points(8))
    torch.testing.assert_close(albedo, torch.full((8, 3), 0.5))


def test_points_outside_bound_use_the_clamped_grid_features():
    field = small_field(density_activation="exp", bound=0.5)
    outside = torch.tensor([[0.9, -2.0, 0.1]])
    clamped = torch.tensor([[0.5, -0.5, 0.1]])
    # log σ − blob recovers the MLP's raw density logit.
    raw_out = field.density(outside).log() - field.blob(outside)
    raw_clamped = field.density(clamped).log() - field.blob(clamped)
    torch.testing.assert_close(raw_out, raw_clamped)


def test_finest_resolution_scales_with_bound():
    field = small_field(bound=2.0)
    assert field.encoding.finest_resolution == 64.0
    assert field.encoding.layout.resolutions[-1] == 64
    assert field.bound == 2.0


NORMALS = ["forward_difference", "central_difference", "analytic", "finite_difference", "autograd"]


@pytest.mark.parametrize("method", NORMALS)
def test_normals_of_the_blob_point_outward(method):
    field = blob_only(normals=method, normal_eps=1e-4 if method == "forward_difference" else 1e-3)
    x = random_points(32, scale=0.6)
    x = x[x.norm(dim=-1) > 0.05]  # the blob has a kink at the origin
    n = field.normals(x)
    torch.testing.assert_close(n, F.normalize(x, dim=-1), atol=1e-3, rtol=0)
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(len(x)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", NORMALS)
def test_normals_where_the_exp_density_overflowed_are_not_nan(method):
    """σ = exp(blob) overflows to inf inside |x| < 0.3 (blob 400 · (1 − |x| / 0.5) > 88.7): the
    differences there were ∞ − ∞ = NaN, which made every shaded render and the orientation loss
    NaN. Inside, the normal is zero (no direction) or outward; around it, outward."""
    field = blob_only(normals=method, density_activation="exp", blob_density=400.0)
    x = random_points(64, scale=0.45)
    x = x[x.norm(dim=-1) > 0.05]
    sigma = field.density(x)
    assert torch.isinf(sigma).any() and torch.isfinite(sigma).any()
    n = field.normals(x)
    assert torch.isfinite(n).all()
    length = n.norm(dim=-1)
    assert (length <= 1 + 1e-5).all()
    outward = (n * F.normalize(x, dim=-1)).sum(-1)
    assert (outward[length > 0.5] > 0.0).all()  # steep: differences bend it, never inward
    dense = (sigma > 1.0) & (sigma < 100.0)  # where σ and its neighbours are below the cap
    assert dense.any() and (length[dense] > 0.99).all()


@pytest.mark.parametrize("method", NORMALS)
def test_normals_are_differentiable_for_the_orientation_loss(method):
    field = small_field(normals=method)
    with torch.no_grad():
        field.encoding.params.uniform_(-0.5, 0.5)
    x = random_points(16, scale=0.6)
    view_dir = torch.tensor([0.0, 0.0, -1.0])
    loss = ((field.normals(x) * view_dir).sum(-1).clamp_min(0) ** 2).mean()
    loss.backward()
    assert field.encoding.params.grad.abs().sum() > 0
    assert field.input_layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("method", NORMALS)
@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode], ids=["no_grad", "inf"])
def test_normals_work_without_grad_and_are_detached(method, mode):
    field = blob_only(normals=method, normal_eps=1e-4 if method == "forward_difference" else 1e-3)
    x = random_points(8, scale=0.6)
    with mode():
        n = field.normals(x)
    assert not n.requires_grad
    torch.testing.assert_close(n, F.normalize(x, dim=-1), atol=1e-3, rtol=0)


@pytest.mark.parametrize("method", ["forward_difference", "central_difference"])
def test_analytic_and_finite_difference_normals_agree_on_a_smooth_field(method):
    fd = blob_only(normals=method, normal_eps=1e-3)
    with torch.no_grad():  # a grid-driven, non-radial perturbation of the blob
        fd.encoding.params.uniform_(-1.0, 1.0)
        fd.output_layer.weight.normal_(0, 0.5)
    ag = blob_only(normals="analytic")
    ag.load_state_dict(fd.state_dict())
    x = random_points(64, scale=0.4)
    x = x[x.norm(dim=-1) > 0.1]
    close = (fd.normals(x) - ag.normals(x)).norm(dim=-1) < 1e-2
    assert close.float().mean() > 0.75  # a step across a grid cell face changes the slope
    assert (ag.normals(x) - F.normalize(x, dim=-1)).norm(dim=-1).mean() > 0.05


def test_background_mlp_is_in_unit_range():
    field = small_field()
    dirs = torch.randn(50, 3) * 3.0  # unnormalised directions are allowed
    bg = field.background(dirs)
    assert bg.shape == (50, 3)
    assert (bg >= 0).all() and (bg <= 1).all()
    assert bg.std() > 0  # depends on the direction


@pytest.mark.parametrize(
    ("mode", "colour"),
    [
        ("white", (1.0, 1.0, 1.0)),
        ("black", (0.0, 0.0, 0.0)),
        ("color", (0.2, 0.4, 0.6)),
        ("random", (0.2, 0.4, 0.6)),
    ],
)
def test_fixed_backgrounds_return_their_colour(mode, colour):
    field = small_field(background=mode, background_color=(0.2, 0.4, 0.6))
    bg = field.background(torch.randn(5, 3))
    torch.testing.assert_close(bg, torch.tensor(colour).expand(5, 3))
    assert field.background_net is None


def test_param_groups_put_the_table_at_scaled_lr():
    field = small_field(encoding_lr_scale=10.0)
    table_group, mlp_group = field.param_groups(1e-3)
    assert table_group["lr"] == pytest.approx(1e-2)
    assert mlp_group["lr"] == pytest.approx(1e-3)
    assert [p is field.encoding.params for p in table_group["params"]] == [True]
    grouped = {id(p) for p in table_group["params"]} | {id(p) for p in mlp_group["params"]}
    assert grouped == {id(p) for p in field.parameters()}
    assert len(table_group["params"]) + len(mlp_group["params"]) == len(list(field.parameters()))


def test_default_architecture_follows_the_thesis():
    cfg = FieldConfig(encoding="torch", log2_hashmap_size=12)
    field = NeRFField(cfg)
    assert len(field.blocks) == 4
    assert field.input_layer.out_features == 96 and field.output_layer.in_features == 96
    hidden = [m for m in field.background_net if isinstance(m, torch.nn.Linear)][:-1]
    assert [m.out_features for m in hidden] == [64, 64]
    assert field.encoding.output_dim == 32
    assert field.encoding_backend == "torch"


def test_field_config_round_trips_through_a_plain_dict():
    cfg = FieldConfig(bound=1.5, background="color", background_color=(0.1, 0.2, 0.3))
    data = field_config_to_dict(cfg)
    assert data["background_color"] == [0.1, 0.2, 0.3]
    assert field_config_from_dict(data) == cfg


def test_field_config_from_dict_rejects_unknown_keys():
    data = {**field_config_to_dict(FieldConfig()), "num_heads": 4}
    with pytest.raises(DreamtextError, match="num_heads"):
        field_config_from_dict(data)


@pytest.mark.parametrize(
    "bad",
    [
        {"background": "sky"},
        {"density_activation": "relu"},
        {"normals": "sobel"},
        {"encoding": "cuda"},
        {"blob_radius": 0.0},
    ],
)
def test_invalid_config_values_are_user_errors(bad):
    with pytest.raises(DreamtextError):
        FieldConfig(**bad)


def test_field_validates_values_set_after_construction():
    cfg = FieldConfig(**SMALL)
    cfg.background = "sky"  # as a preset or CLI override would
    with pytest.raises(DreamtextError, match=r"field\.background"):
        NeRFField(cfg)


def test_tcnn_field_on_cpu_names_the_torch_encoding():
    with pytest.raises(DreamtextError, match="--encoding torch"):
        NeRFField(FieldConfig(**{**SMALL, "encoding": "tcnn"}))


def test_state_dict_holds_one_flat_table():
    field = small_field()
    keys = [k for k in field.state_dict() if k.startswith("encoding.")]
    assert keys == ["encoding.params"]
    assert field.state_dict()["encoding.params"].dim() == 1
    assert math.isfinite(field.state_dict()["encoding.params"].sum().item())


def test_forward_differences_reuse_the_given_density_and_query_three_points():
    field = blob_only(normals="forward_difference", normal_eps=1e-4)
    x = random_points(10, scale=0.6)
    calls = []
    original = field.density
    field.density = lambda p: calls.append(p.shape[0]) or original(p)
    sigma = original(x)
    with_sigma = field.normals(x, sigma)
    assert calls == [30]
    torch.testing.assert_close(with_sigma, field.normals(x))
    assert field.normal_queries == 3
    assert blob_only(normals="central_difference").normal_queries == 6
    assert blob_only(normals="analytic").normal_queries == 4


def test_queries_without_a_graph_run_the_in_place_mlp_in_its_own_pieces(monkeypatch):
    """Without autograd the MLP runs in place, in pieces of ``CPU_NO_GRAD_PIECE`` points, and gives
    the graph-building MLP's values (up to the rounding of other matmul sizes); with autograd the
    ordinary MLP runs."""
    import dreamtext.field as field_module

    field = small_field()
    x = random_points(23)
    sigma, albedo = field(x)
    monkeypatch.setattr(field_module, "CPU_NO_GRAD_PIECE", 7)
    calls: dict[str, list[int]] = {"graph": [], "no_grad": []}
    for name, key in (("_mlp", "graph"), ("_mlp_no_grad", "no_grad")):
        original = getattr(field, name)

        def counted(f, original=original, key=key):
            calls[key].append(f.shape[0])
            return original(f)

        monkeypatch.setattr(field, name, counted)
    with torch.no_grad():
        sigma_n, albedo_n = field(x)
    assert calls == {"graph": [], "no_grad": [7, 7, 7, 2]}
    torch.testing.assert_close(sigma_n, sigma.detach())
    torch.testing.assert_close(albedo_n, albedo.detach())
    field(x)[0].sum().backward()
    assert calls["graph"] == [23]


def test_cpu_queries_run_the_mlp_in_pieces_with_the_same_values_and_gradients(monkeypatch):
    """Above ``CPU_QUERY_PIECE`` points the MLP runs piecewise; outputs and parameter gradients
    are those of one pass over all points, and each piece is at most the piece size."""
    import dreamtext.field as field_module

    field = small_field()
    x = random_points(23)
    sigma, albedo = field(x)
    (sigma.sum() + albedo.square().sum()).backward()
    whole = {name: p.grad.clone() for name, p in field.named_parameters() if p.grad is not None}
    field.zero_grad(set_to_none=True)

    monkeypatch.setattr(field_module, "CPU_QUERY_PIECE", 5)
    sizes = []
    original = field._mlp
    monkeypatch.setattr(field, "_mlp", lambda f: sizes.append(f.shape[0]) or original(f))
    sigma_p, albedo_p = field(x)
    assert sizes == [5, 5, 5, 5, 3]
    (sigma_p.sum() + albedo_p.square().sum()).backward()
    torch.testing.assert_close(sigma_p, sigma)
    torch.testing.assert_close(albedo_p, albedo)
    for name, p in field.named_parameters():
        if name in whole:
            torch.testing.assert_close(p.grad, whole[name], msg=name)


def test_cpu_queries_recomputed_in_backward_record_no_layer_of_the_mlp(monkeypatch):
    """Above ``CPU_RECOMPUTE_POINTS`` points the forward records one autograd node a MLP piece,
    not one a layer: the layers' small nodes, kept between pieces whose activations were freed,
    split those holes, and glibc's heap grew by a piece's activations at every piece (1.5 GB of
    RSS for 0.2 GB live in `dreamtext image`'s first step with the tiny models)."""
    import dreamtext.field as field_module

    field = small_field(hidden_dim=64)
    monkeypatch.setattr(field_module, "CPU_QUERY_PIECE", 8)
    monkeypatch.setattr(field_module, "CPU_RECOMPUTE_POINTS", 39)
    sigma, albedo = field(random_points(40))

    names, seen, stack = [], set(), [sigma.grad_fn, albedo.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    assert sum("Checkpoint" in name for name in names) == 5  # one a piece of 8 points
    assert not [name for name in names if "Addmm" in name or "LayerNorm" in name]


def test_cpu_queries_with_a_graph_keep_no_activations_of_the_mlp_pieces(monkeypatch):
    """Above ``CPU_RECOMPUTE_POINTS`` points each MLP piece's activations are recomputed in
    backward, not kept: the graph holds less than four hidden layers' activations a point (kept,
    every layer's were: 1.5-2.5 GB on a fresh default field's 64 px step, the peak of `dreamtext
    image` with the tiny models), and the parameter gradients are the kept graph's, bit for bit.
    At or below it they are kept (recomputed, the README's first run took ~10% more CPU)."""
    import dreamtext.field as field_module

    field = small_field(hidden_dim=64)
    x = random_points(40)
    monkeypatch.setattr(field_module, "CPU_QUERY_PIECE", 8)

    def bytes_kept_a_point() -> float:
        kept: list[int] = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            kept.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            field(x)
        return sum(kept) / len(x)

    monkeypatch.setattr(field_module, "CPU_RECOMPUTE_POINTS", 40)
    assert bytes_kept_a_point() > 4 * 64 * 4  # at the bound: every layer's activations kept
    monkeypatch.setattr(field_module, "CPU_RECOMPUTE_POINTS", 39)
    # Kept: the points, the grid's corners, each piece's input. Before, 6,988 bytes a point.
    assert bytes_kept_a_point() < 4 * 64 * 4  # four hidden layers' activations a point
    sigma, albedo = field(x)
    (sigma.sum() + albedo.square().sum()).backward()
    recomputed = {
        name: p.grad.clone() for name, p in field.named_parameters() if p.grad is not None
    }
    field.zero_grad(set_to_none=True)

    features = field.encoding(x)
    raw = torch.cat([field._mlp(piece) for piece in features.split(8)])  # every piece kept
    sigma_k = activate_density(raw[:, 0] + field.blob(x), field.cfg.density_activation)
    (sigma_k.sum() + torch.sigmoid(raw[:, 1:]).square().sum()).backward()
    assert torch.equal(sigma_k, sigma)
    for name, p in field.named_parameters():
        if name in recomputed:
            assert torch.equal(p.grad, recomputed[name]), name


def textured_field(**overrides) -> NeRFField:
    """A small field with a grid, LayerNorm and output of order one: every term of ∇σ counts."""
    field = small_field(**overrides)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        field.encoding.params.copy_(torch.rand(field.encoding.params.shape, generator=g) * 2 - 1)
        for block in field.blocks:
            block.norm.weight.copy_(1.0 + 0.3 * torch.randn(block.norm.weight.shape, generator=g))
            block.norm.bias.copy_(0.3 * torch.randn(block.norm.bias.shape, generator=g))
        field.output_layer.weight.mul_(5.0)
    return field


@pytest.mark.parametrize("activation", ["softplus", "exp"])
def test_analytic_normals_are_the_exact_gradient_and_train_like_it(activation):
    """``analytic`` normals equal ``−∇σ/|∇σ|`` from autograd through the reference grid, and the
    parameters' gradients of a loss on them equal autograd's double backward."""
    field = textured_field(normals="analytic", density_activation=activation)
    g = torch.Generator().manual_seed(6)
    x = (torch.rand(64, 3, generator=g) * 2 - 1) * 1.1  # some outside the cube
    weights = torch.randn(64, 3, generator=g)
    xr = x.clone().requires_grad_(True)  # the encoding takes its reference path
    (grad_sigma,) = torch.autograd.grad(field.density(xr).sum(), xr, create_graph=True)
    expected = F.normalize(-grad_sigma, dim=-1, eps=1e-12)
    normals = field.normals(x)
    torch.testing.assert_close(normals, expected, atol=1e-5, rtol=0)
    params = [p for name, p in field.named_parameters() if not name.startswith("background")]
    got = torch.autograd.grad((normals * weights).sum(), params, allow_unused=True)
    want = torch.autograd.grad((expected * weights).sum(), params, allow_unused=True)
    for (name, _), a, b in zip(field.named_parameters(), got, want, strict=False):
        if name == "output_layer.bias":  # normalising removes the slope it scales: ~0 either way
            continue
        scale = b.abs().max().item()
        assert scale > 1e-3, name
        torch.testing.assert_close(a, b, atol=1e-5 * scale, rtol=1e-4, msg=name)


@pytest.mark.parametrize("head", ["shared", "separate"])
def test_analytic_normals_under_autocast_stay_close_to_float32(head):
    """With ``mlp_dtype`` set (``--bf16``; run on the CPU here) the MLP's matrix products run in
    bfloat16 and the normals come out float32, within bfloat16's rounding of the exact ones."""
    field = textured_field(normals="analytic", density_head=head)
    x = random_points(64, scale=0.6)
    exact = field.normals(x)
    field.mlp_dtype = torch.bfloat16
    half = field.normals(x)
    assert half.dtype == torch.float32
    assert (half - exact).norm(dim=-1).median() < 0.05


@pytest.mark.parametrize("method", ["forward_difference", "central_difference", "analytic"])
def test_forward_with_normals_is_forward_and_normals_together(method, monkeypatch):
    """``forward_with_normals`` gives :meth:`forward`'s σ and albedo and :meth:`normals`, and
    trains the same; analytic normals take all three from one grid lookup and no other query."""
    field = textured_field(normals=method)
    g = torch.Generator().manual_seed(8)
    x = (torch.rand(48, 3, generator=g) * 2 - 1) * 1.1  # some outside the cube
    weights = [torch.randn(48, *shape, generator=g) for shape in ((), (3,), (3,))]
    params = [p for name, p in field.named_parameters() if not name.startswith("background")]

    def loss_and_grads(outputs):
        loss = sum((out * w).sum() for out, w in zip(outputs, weights, strict=True))
        return outputs, torch.autograd.grad(loss, params, allow_unused=True)

    calls = {"grid": 0}
    grid = field.encoding.forward
    monkeypatch.setattr(
        field.encoding, "forward", lambda p: calls.__setitem__("grid", 1) or grid(p)
    )
    together, got = loss_and_grads(field.forward_with_normals(x))
    assert calls["grid"] == (method != "analytic")  # analytic: only features_and_jacobian
    assert field.joint_normals == (method == "analytic")
    sigma, albedo = field(x)
    apart, want = loss_and_grads((sigma, albedo, field.normals(x, sigma)))
    for a, b in zip(together, apart, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for (name, _), a, b in zip(field.named_parameters(), got, want, strict=False):
        if b is None:
            assert a is None, name
            continue
        scale = b.abs().max().item()
        torch.testing.assert_close(a, b, atol=1e-5 * max(scale, 1e-3), rtol=1e-4, msg=name)


def separate_field(**overrides) -> NeRFField:
    """A textured field whose σ comes from a density head of its own."""
    field = textured_field(density_head="separate", density_hidden_dim=8, **overrides)
    with torch.no_grad():
        field.density_net[0].weight.mul_(4.0)  # order-one logits: every term of ∇σ counts
    return field


@pytest.mark.parametrize("grad", [True, False], ids=["graph", "no_grad"])
def test_a_separate_density_head_gives_sigma_without_the_residual_mlp(grad, monkeypatch):
    """``σ = act(w_2ᵀ SiLU(W_1 f + b_1) + b_2 + d(x))`` on the grid features ``f``; the residual
    MLP gives the three albedo logits and never runs for a density query."""
    field = separate_field()
    x = random_points(40)
    assert field.output_layer.out_features == 3 and field.density_net[0].out_features == 8
    first, _, last = field.density_net
    with torch.no_grad():
        f = field.encoding(x)
        logit = (F.silu(f @ first.weight.T + first.bias) @ last.weight.T + last.bias)[:, 0]
        blob = 10.0 * (1 - x.norm(dim=-1) / 0.5)
        albedo = torch.sigmoid(field._mlp(f))
    with torch.set_grad_enabled(grad):
        sigma, got_albedo = field(x)
        torch.testing.assert_close(sigma, F.softplus(logit + blob), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_albedo, albedo, atol=1e-6, rtol=1e-5)

        def refuse(features):
            raise AssertionError("the residual MLP ran for a density query")

        monkeypatch.setattr(field, "_mlp", refuse)
        monkeypatch.setattr(field, "_mlp_no_grad", refuse)
        torch.testing.assert_close(field.density(x), sigma)
        normals = field.normals(x, sigma)  # forward differences: three density queries
    assert normals.shape == (40, 3) and normals.requires_grad == grad


def test_a_separate_density_head_trains_sigma_and_albedo_apart():
    """σ's gradient reaches the density head and the table, not the residual MLP; the albedo's
    reaches the residual MLP and the table, not the density head."""
    field = separate_field()
    x = random_points(32)
    sigma, albedo = field(x)
    mlp = ("input_layer.", "blocks.", "output_layer.")
    for out, used, unused in ((sigma, ("density_net.",), mlp), (albedo, mlp, ("density_net.",))):
        field.zero_grad(set_to_none=True)
        out.sum().backward(retain_graph=True)
        for name, p in field.named_parameters():
            if name.startswith(used) or name == "encoding.params":
                assert p.grad is not None and p.grad.abs().sum() > 0, name
            elif name.startswith(unused):
                assert p.grad is None or not p.grad.any(), name


@pytest.mark.parametrize("activation", ["softplus", "exp"])
def test_analytic_normals_with_a_separate_density_head_are_the_exact_gradient(activation):
    """The head's input gradient ``(w_2 ⊙ SiLU'(a)) W_1`` through the grid's Jacobian gives
    autograd's ``−∇σ/|∇σ|``, and trains like autograd's double backward."""
    field = separate_field(normals="analytic", density_activation=activation)
    g = torch.Generator().manual_seed(9)
    x = (torch.rand(64, 3, generator=g) * 2 - 1) * 1.1
    weights = torch.randn(64, 3, generator=g)
    xr = x.clone().requires_grad_(True)
    (grad_sigma,) = torch.autograd.grad(field.density(xr).sum(), xr, create_graph=True)
    expected = F.normalize(-grad_sigma, dim=-1, eps=1e-12)
    normals = field.normals(x)
    torch.testing.assert_close(normals, expected, atol=1e-5, rtol=0)
    assert (normals - F.normalize(x, dim=-1)).norm(dim=-1).mean() > 0.05  # not the blob alone
    params = dict(field.named_parameters())
    names = ["encoding.params", "density_net.0.weight", "density_net.0.bias"]
    names.append("density_net.2.weight")
    got = torch.autograd.grad((normals * weights).sum(), [params[n] for n in names])
    want = torch.autograd.grad((expected * weights).sum(), [params[n] for n in names])
    for name, a, b in zip(names, got, want, strict=True):
        scale = b.abs().max().item()
        assert scale > 1e-3, name
        torch.testing.assert_close(a, b, atol=1e-5 * scale, rtol=1e-4, msg=name)
    sigma, albedo, joint = field.forward_with_normals(x)
    torch.testing.assert_close(joint, normals, atol=1e-6, rtol=0)
    torch.testing.assert_close((sigma, albedo), field(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bad", [{"density_head": "tiny"}, {"density_hidden_dim": 0}])
def test_density_head_values_are_user_errors(bad):
    with pytest.raises(DreamtextError, match="density_h"):
        FieldConfig(**bad)


@pytest.mark.parametrize("head", ["shared", "separate"])
@pytest.mark.parametrize("mlp_dtype", [None, torch.bfloat16])
def test_compiled_mlps_give_the_eager_fields_values_and_gradients(head, mlp_dtype):
    """``compile_mlps`` (traced by torch.compile without code generation here: ``aot_eager``)
    gives the eager field's σ, albedo and normals and the same gradients, with and without a
    graph, at any number of points: one graph per MLP and grad mode, not one per size."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eager = textured_field(density_head=head)
    eager.mlp_dtype = mlp_dtype
    compiled = textured_field(density_head=head)
    compiled.load_state_dict(eager.state_dict())
    compiled.mlp_dtype = mlp_dtype
    compiled.compile_mlps(backend="aot_eager")
    assert compiled.compiled and not eager.compiled
    names = [name for name, _ in eager.named_parameters() if not name.startswith("background")]
    calls = []
    for field in (eager, compiled):
        for n in (40, 17, 333, 1):
            x = random_points(n, scale=0.8)
            sigma, albedo = field(x)
            normals = field.normals(x, sigma)
            loss = (sigma.sum() + (albedo * 0.3).sum() + (normals[:, 0] * 2).sum()) / n
            params = dict(field.named_parameters())
            grads = torch.autograd.grad(loss, [params[name] for name in names], allow_unused=True)
            with torch.no_grad():
                density = field.density(x)
            calls.append((sigma, albedo, normals, density, grads))
    half = len(calls) // 2
    tolerance = dict(atol=1e-5, rtol=1e-4) if mlp_dtype is None else dict(atol=1e-2, rtol=1e-2)
    for want, got in zip(calls[:half], calls[half:], strict=True):
        for a, b in zip(want[:4], got[:4], strict=True):
            assert a.dtype == b.dtype == torch.float32
            torch.testing.assert_close(b, a, **tolerance)
        for a, b in zip(want[4], got[4], strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(b, a, **tolerance)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    # Each MLP with and without a graph, built by compile_mlps's check, and no more after it.
    assert graphs == (4 if head == "separate" else 2)


def test_more_compiled_fields_in_one_process_compile_no_more_graphs():
    """A batch builds a field a prompt in one process, and render.compile_field "auto" compiles
    each on CUDA: the later fields reuse the first one's graphs (with and without autograd), so
    a batch compiles once and stays clear of torch.compile's limit of graphs per function."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    for seed in range(4):
        torch.manual_seed(seed)
        field = small_field()
        field.compile_mlps(backend="aot_eager")
        x = random_points(30 + seed)
        sigma, albedo = field(x)
        (sigma.sum() + albedo.sum()).backward()
        with torch.no_grad():
            field.density(random_points(7 + seed))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2


def test_a_field_without_compile_mlps_runs_nothing_compiled(monkeypatch):
    """Eager is the default: ``torch.compile`` is not called unless ``compile_mlps`` is."""
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("compiled"))
    field = small_field()
    field(random_points(8))
    assert not field.compiled


def test_compile_mlps_keeps_inductors_tf32_hint_to_itself(monkeypatch):
    """With the field compiled by default on CUDA, Inductor's once-a-process hint about TF32
    (its first compile on an Ampere or newer GPU) would reach every float32 run unasked: it is
    filtered while the MLPs are built, and other warnings still get out."""
    import warnings

    def hinting(fn, **kwargs):
        def run(features):
            warnings.warn(
                "TensorFloat32 tensor cores for float32 matrix multiplication available but "
                "not enabled. Consider setting `torch.set_float32_matmul_precision('high')`",
                stacklevel=1,
            )
            warnings.warn("something else", stacklevel=1)
            return fn(features)

        return run

    monkeypatch.setattr(torch, "compile", hinting)
    field = small_field()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        field.compile_mlps()
    assert field.compiled
    messages = {str(w.message) for w in caught}
    assert messages == {"something else"}


def test_running_out_of_gpu_memory_while_checking_the_compiled_mlps_stays_out_of_memory(
    monkeypatch,
):
    """CUDA's out-of-memory error in the compiled MLPs' check was "torch.compile does not build
    the field's MLPs" (and under compile "auto", a silent fall back to eager)."""
    error = RuntimeError("CUDA error: out of memory")

    def failing(fn, **kwargs):
        def run(features):
            raise error

        return run

    field = small_field()
    monkeypatch.setattr(torch, "compile", failing)
    with pytest.raises(RuntimeError) as raised:
        field.compile_mlps()
    assert raised.value is error


def test_compile_mlps_checks_what_it_built_against_the_eager_mlps(monkeypatch):
    """A compiler that fails, or compiled code that computes something else, is one line that
    says to run without ``--compile``, at ``compile_mlps`` (not in the middle of a step), and
    the field stays eager."""

    def failing(fn, **kwargs):
        def run(features):
            raise RuntimeError("Failed to find C compiler. Please specify via CC\nmore")

        return run

    field = small_field()
    monkeypatch.setattr(torch, "compile", failing)
    with pytest.raises(DreamtextError) as error:
        field.compile_mlps()
    assert str(error.value) == (
        "torch.compile does not build the field's MLPs here (RuntimeError: Failed to find C "
        "compiler. Please specify via CC): run with --no-compile"
    )
    assert not field.compiled
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: lambda x: fn(x) * 1.2)
    with pytest.raises(DreamtextError, match=r"disagrees with the eager one.*with --no-compile"):
        field.compile_mlps()
    assert not field.compiled
    # Rounding is not disagreement: 1% off passes, as bf16 code can be.
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: lambda x: fn(x) * 1.01)
    field.compile_mlps()
    assert field.compiled


def test_a_render_of_no_rays_is_empty_not_an_error():
    """The background MLP's frequency encoding reshaped [0, 3, K] with a -1: a RuntimeError
    for a render of zero rays (or zero cameras), whatever the sampler."""
    from dreamtext.renderer import RenderConfig, VolumeRenderer

    field = small_field()
    for sampler in ("occupancy", "dense"):
        renderer = VolumeRenderer(RenderConfig(sampler=sampler)).eval()
        with torch.no_grad():
            out = renderer.render_rays(field, torch.zeros(0, 3), torch.zeros(0, 3))
        assert out["rgb"].shape == (0, 3) and out["opacity"].shape[0] == 0


# --- formulas on values: each guards a one-character change the tests above let through ---


def test_exp_density_gradient_is_truncated_at_15_not_earlier():
    """Guards against a smaller ``EXP_GRAD_CLAMP``.

    σ = exp(raw), dσ/draw = exp(min(raw, 15)): at raw = 10 it is e^10 = 22026.47, at raw = 20
    it is e^15 = 3269017.4 (the forward value stays e^20).
    """
    raw = torch.tensor([10.0, 20.0], requires_grad=True)
    sigma = activate_density(raw, "exp")
    sigma.sum().backward()
    torch.testing.assert_close(raw.grad, torch.tensor([22026.465, 3269017.5]), rtol=1e-5, atol=0)
    torch.testing.assert_close(
        density_slope(torch.tensor([10.0, 20.0]), "exp"), torch.tensor([22026.465, 3269017.5])
    )


def test_softplus_slope_is_the_logistic_of_raw():
    """Guards against ``sigmoid(-raw)``. d softplus(r)/dr = 1/(1 + e^−r): at r = 2,
    0.880797; at r = −2, 0.119203. (Its only caller normalises the gradient, so this is the
    public function's contract, not a rendered difference.)"""
    torch.testing.assert_close(
        density_slope(torch.tensor([2.0, -2.0]), "softplus"),
        torch.tensor([0.880797, 0.119203]),
        rtol=0,
        atol=1e-6,
    )


def test_frequency_encoding_values():
    """Guards against dropping ``π`` from γ: a checkpoint's background MLP read other
    inputs than it was trained on.

    γ(d) = (d, sin(2^k π d), cos(2^k π d)), K = 1, d = (0.5, 0.25, 0):
    (0.5, 0.25, 0, sin(π/2)=1, sin(π/4)=0.70711, 0, cos(π/2)=0, cos(π/4)=0.70711, 1).
    """
    got = frequency_encoding(torch.tensor([[0.5, 0.25, 0.0]]), 1)
    want = torch.tensor([[0.5, 0.25, 0.0, 1.0, math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5), 1.0]])
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_background_depends_on_the_direction_only():
    """Guards against dropping ``F.normalize(dirs)`` in background: the background is
    the colour where a ray *along* ``dirs`` leaves, so background(3 d) = background(d)."""
    field = small_field()
    d = torch.tensor([[0.3, -0.5, 0.81], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(field.background(3.0 * d), field.background(d))


def test_forward_difference_normals_step_one_hundredth_by_default():
    """Guards against another default ``normal_eps`` (the step of the differences, 1e-2 world
    units) and against a forward difference taken the other way.

    Blob only, exp activation: σ(p) = exp(10 (1 − |p| / 0.5)). At x = (0.3, 0.1, 0) the
    normal is −normalize(σ(x + 0.01 e_i) − σ(x)), written out here from that formula."""
    field = blob_only(density_activation="exp")
    assert field.cfg.normal_eps == 1e-2
    x = [0.3, 0.1, 0.0]

    def sigma(p):
        return math.exp(10.0 * (1.0 - math.sqrt(sum(c * c for c in p)) / 0.5))

    grad = []
    for i in range(3):
        ahead = list(x)
        ahead[i] += 0.01
        grad.append(sigma(ahead) - sigma(x))
    norm = math.sqrt(sum(g * g for g in grad))
    want = torch.tensor([[-g / norm for g in grad]])
    got = field.normals(torch.tensor([x]))
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)


def test_background_mlp_reads_four_frequencies_of_the_direction():
    """Guards against another ``BG_FREQUENCIES``: a checkpoint's background MLP takes
    γ(d) = (d, sin(2^k π d), cos(2^k π d)) for k < 4, 3 + 6 · 4 = 27 inputs, and a field
    built with another count cannot load it."""
    field = small_field()
    assert field.background_net[0].in_features == 27
    assert frequency_encoding(torch.zeros(2, 3)).shape == (2, 27)


@pytest.mark.parametrize(
    "bad",
    [
        {"normal_eps": 0.0},  # the differences divide by it
        {"background_color": (1.5, 0.0, 0.0)},
        {"log2_hashmap_size": 25},
    ],
)
def test_boundary_config_values_are_user_errors(bad):
    with pytest.raises(DreamtextError):
        FieldConfig(**bad)


@pytest.mark.parametrize(
    "good",
    [
        # The finest resolution equal to the coarsest: one resolution for every level.
        {"finest_resolution_factor": 4.0, "base_resolution": 4},
        {"log2_hashmap_size": 24},  # the largest table allowed
        {"num_blocks": 0},  # linear → SiLU → linear: no residual block
    ],
)
def test_boundary_config_values_are_allowed(good):
    FieldConfig(**{**SMALL, **good})
