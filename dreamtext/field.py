"""The NeRF field (thesis ch. 6.1.3, 6.1.6): hash grid + residual MLP for density and albedo, a
density blob around the origin, a background MLP on the view direction, and surface normals.

    x [N, 3] ──► hash grid [N, L·F] ──► linear → 4 residual blocks (SiLU) → linear ──► raw [N, 4]
    raw[:, 0] + blob(x) ──► softplus | exp ──► σ [N]        sigmoid(raw[:, 1:]) ──► albedo [N, 3]
    dirs [N, 3] ──► frequencies ──► 2 × 64 ReLU ──► sigmoid ──► background [N, 3]

With ``density_head: separate`` (not the thesis's design; an option) ``raw[:, 0]`` comes from a
small MLP of its own on the same grid features (linear → SiLU → linear) and the residual MLP
gives the albedo logits only, so a density-only query (normals by differences, the occupancy
grid, the marcher's pruning pass, mesh extraction) skips the residual MLP.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from dreamtext.devices import COMPILE_REMEDY, compiled_agrees, memory_that_ran_out
from dreamtext.encoding import (
    ENCODING_KINDS,
    features_and_jacobian,
    grid_layout,
    make_encoding,
    per_level_scale,
)
from dreamtext.errors import DreamtextError, cause_line

DENSITY_ACTIVATIONS: tuple[str, ...] = ("softplus", "exp")
# "random": the trainer draws a solid colour per image; the field itself shows background_color.
BACKGROUNDS: tuple[str, ...] = ("mlp", "white", "black", "color", "random")
# Finite differences of the density: forward (3 extra density queries, reusing σ(x)) or central
# (6); or the exact gradient ("analytic": the grid's Jacobian through the MLP's input gradient).
# "finite_difference" and "autograd" are the older names of "central_difference" and "analytic",
# kept so old checkpoints load.
NORMAL_METHODS: tuple[str, ...] = (
    "forward_difference",
    "central_difference",
    "analytic",
    "finite_difference",
    "autograd",
)
# Where σ's logit comes from: the residual MLP that also gives the albedo (the thesis, ch. 6.1.3),
# or a small MLP of its own on the grid features.
DENSITY_HEADS: tuple[str, ...] = ("shared", "separate")
# The older names, and the method each now means.
_NORMAL_ALIASES = {"finite_difference": "central_difference", "autograd": "analytic"}
# The background MLP sees the view direction d and sin/cos(2^k π d) for k < BG_FREQUENCIES: enough
# for a smooth sky, too few to paint the object into the background.
BG_FREQUENCIES = 4
# exp's gradient is clamped above this raw density, as in stable-dreamfusion's trunc_exp.
EXP_GRAD_CLAMP = 15.0
# Densities above this are opaque to any ray through them (σ·δ ≫ 1 for every step size used);
# larger ones, and an overflowed exp (inf), are set to it where differences of densities are
# taken (normals; the export's grid), which would otherwise be ∞ − ∞ = NaN.
MAX_DENSITY = 1e6
# On the CPU the field's MLP runs on at most this many points at a time. Its activations are then
# 3 MiB a tensor, which the allocator reuses and the core's cache holds, instead of hundreds of MiB
# mapped, zero-filled and unmapped for every operation: measured on 2 cores (default field, 2^19
# points) the whole query went from 4.1 to 1.9 µs a point without gradients, 8.6 → 5.5 µs with
# forward + backward, at 2^15 points a piece. 2^13 then made σ, albedo and normals with forward +
# backward (2^17 points) 11% faster with forward differences and 15-20% with analytic normals,
# whose input gradient is elementwise passes; σ and albedo alone the same. The hash grid is
# faster on large batches (0.94 µs a point at 2^19 against 1.7 at 2^15) and keeps one backward
# call, so it is not split. GPUs take the whole batch at once.
CPU_QUERY_PIECE = 1 << 13
# Without autograd the MLP overwrites its own activations (:meth:`NeRFField._mlp_no_grad`) and
# takes pieces small enough for the core's cache: 2^13 points, 3 MiB a tensor. Measured on 2 cores
# (default field, 2^19 points, no grad): 1.1-1.6 µs a point in 2^15 pieces out of place, 0.72-0.89
# in place in 2^13 pieces.
CPU_NO_GRAD_PIECE = 1 << 13
# A graph over more points than this recomputes each MLP piece's activations in backward rather
# than keeping them (~7 KB a point of the default field: 2^16 points keep ~450 MB, a fresh field's
# 339,364-sample step 2.3 GB, the peak of `dreamtext image` with the tiny models). Below it they
# are kept: recomputing every step's pieces cost the README's first run (2^13-2^14 points a query
# in most of its steps, never past 0.9 GB) ~5 s of its ~50 s of CPU, measured both ways.
CPU_RECOMPUTE_POINTS = 1 << 16
# Fewer rows than this go to the eager MLP even when it is compiled: torch.compile specialises
# row counts 0 and 1 (one more graph each, against its limit of graphs per function).
MIN_COMPILED_ROWS = 2


class Field(Protocol):
    """What the renderer, the occupancy grid and the exporter ask of a field (ARCHITECTURE.md).

    ``bound``: the scene is ``[−bound, bound]^3``. ``density(x [N, 3]) → σ [N]``;
    ``forward(x) → (σ [N], albedo [N, 3])``; ``normals(x, sigma=None) → [N, 3]`` unit outward
    normals (``sigma``, when given, is ``density(x)`` already computed, which forward differences
    reuse); ``background(dirs [N, 3]) → [N, 3]``. A field may also have
    ``forward_with_normals(x) → (σ, albedo, normals)`` and ``joint_normals``, true when that one
    call costs less than ``forward`` then ``normals`` (:class:`NeRFField` with analytic
    normals): the renderer then uses it.
    """

    bound: float

    def density(self, x: Tensor) -> Tensor: ...

    def __call__(self, x: Tensor) -> tuple[Tensor, Tensor]: ...

    def normals(self, x: Tensor, sigma: Tensor | None = None) -> Tensor: ...

    def background(self, dirs: Tensor) -> Tensor: ...


MAX_LOG2_HASHMAP_SIZE = 24


@dataclass
class FieldConfig:
    """The field's architecture; defaults follow the thesis (ch. 6.1.3, 6.1.6), stable-dreamfusion.

    ``finest_resolution_factor × bound`` is the finest hash-grid resolution. The blob
    ``d = blob_density (1 − |x| / blob_radius)`` is added to the raw density before the activation.
    ``normal_eps`` is the finite-difference step (world units); ``normals`` picks forward
    differences (the default: 3 density queries per normal), central differences (6; the most
    accurate angles) or the analytic gradient (the fastest on the CPU, the worst shading: 1.3-2×
    forward differences' error on fitted shapes, ``benchmarks/normal_quality.py``; measured in
    benchmarks/RESULTS.md). The hash table trains at ``lr × encoding_lr_scale``.

    ``density_head``: ``shared`` (the thesis: σ's logit is the residual MLP's first output) or
    ``separate`` (σ's logit from ``linear(L·F → density_hidden_dim) → SiLU → linear(→ 1)`` on the
    grid features, as threestudio's implicit volume has; the residual MLP then gives the albedo
    only). With ``separate`` a density query costs the grid and that small MLP, so normals by
    differences cost far less (benchmarks/RESULTS.md, "A density head of its own").
    """

    bound: float = 1.0
    num_levels: int = 16
    level_dim: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    finest_resolution_factor: float = 2048.0
    encoding: str = "auto"
    hidden_dim: int = 96
    num_blocks: int = 4
    bg_hidden_dim: int = 64
    bg_num_layers: int = 2
    density_activation: str = "softplus"
    blob_density: float = 10.0
    blob_radius: float = 0.5
    background: str = "mlp"
    background_color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    normals: str = "forward_difference"
    normal_eps: float = 1e-2
    encoding_lr_scale: float = 10.0
    density_head: str = "shared"
    density_hidden_dim: int = 64

    def __post_init__(self) -> None:
        self.background_color = tuple(float(c) for c in self.background_color)
        self.validate()

    def validate(self) -> None:
        """Raise a :class:`DreamtextError` naming the first value a user got wrong."""
        choices = {
            "encoding": ENCODING_KINDS,
            "density_activation": DENSITY_ACTIVATIONS,
            "background": BACKGROUNDS,
            "normals": NORMAL_METHODS,
            "density_head": DENSITY_HEADS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise DreamtextError(
                    f"field.{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        if len(self.background_color) != 3 or not all(
            0.0 <= c <= 1.0 for c in self.background_color
        ):
            raise DreamtextError(
                "field.background_color must be three numbers in [0, 1], got "
                f"{list(self.background_color)}"
            )
        if self.bound <= 0 or self.blob_radius <= 0 or self.normal_eps <= 0:
            raise DreamtextError("field.bound, field.blob_radius and field.normal_eps must be > 0")
        sizes = ("num_levels", "level_dim", "base_resolution", "hidden_dim", "bg_hidden_dim")
        for name in ("density_hidden_dim", *sizes):
            if getattr(self, name) < 1:
                raise DreamtextError(
                    f"field.{name} must be a positive integer, got {getattr(self, name)}"
                )
        # The hash grid's levels grow from base_resolution to finest_resolution_factor × bound
        # (per_level_scale takes its logarithm: 0 or below was a math domain error mid-build).
        if not self.finest_resolution_factor * self.bound >= self.base_resolution:
            raise DreamtextError(
                "field.finest_resolution_factor × field.bound (the finest hash-grid resolution, "
                f"{self.finest_resolution_factor:g} × {self.bound:g}) must be at least "
                f"field.base_resolution ({self.base_resolution})"
            )
        if self.num_blocks < 0 or self.bg_num_layers < 0:
            raise DreamtextError("field.num_blocks and field.bg_num_layers must be ≥ 0")
        # Instant-NGP's tables range over T = 2^14 ... 2^24 (Müller et al. 2022, Table 1); 2^24
        # is already 1.1 GB of float32 for the default 16 levels × 2 features (the coarse levels
        # are dense and smaller: grid_parameters), 4.3 GB with its gradient and Adam's moments,
        # and larger failed at allocation.
        if not 1 <= self.log2_hashmap_size <= MAX_LOG2_HASHMAP_SIZE:
            raise DreamtextError(
                f"field.log2_hashmap_size must be in [1, {MAX_LOG2_HASHMAP_SIZE}] (a table of "
                f"2^{MAX_LOG2_HASHMAP_SIZE} entries a level at most), got {self.log2_hashmap_size}"
            )


def field_config_to_dict(cfg: FieldConfig) -> dict[str, Any]:
    """A plain, JSON- and checkpoint-safe dict of ``cfg`` (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def field_config_from_dict(data: dict[str, Any]) -> FieldConfig:
    """Inverse of :func:`field_config_to_dict` (lists become tuples again)."""
    known = {f.name for f in dataclasses.fields(FieldConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise DreamtextError(
            f"unknown field config keys {unknown}: the checkpoint comes from another dreamtext "
            "version; re-export with that version"
        )
    return FieldConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def mlp_memory_at_least(
    cfg: FieldConfig,
    queries: int,
    value_bytes: int = 2,
    eager: bool = False,
    parameter_bytes: int = 16,
) -> int:
    """Bytes the field's MLPs need at the least in a training step whose graph holds ``queries``
    field queries at once: every parameter with its gradient and the optimiser's state
    (``parameter_bytes`` each: 16 B for Adam's two moments in float32, 24 B for Adan's four
    values), and per query what autograd keeps of each layer, ``value_bytes`` a value: the
    input of each linear layer (the residual MLP's, the density head's), which its weight's
    gradient needs, and with ``eager`` (no compiled MLP fusing a block) each block's LayerNorm
    and SiLU inputs too. ``field.num_blocks`` and ``field.hidden_dim`` multiply both; the hash
    grid (:func:`grid_parameters`), the background MLP (once a ray) and every other activation
    are left out."""
    features, width = cfg.num_levels * cfg.level_dim, cfg.hidden_dim
    outputs = 3 if cfg.density_head == "separate" else 4
    # input layer, blocks (linear W h + b and LayerNorm's scale and shift), output layer
    parameters = (features + 1) * width + cfg.num_blocks * (width + 3) * width
    parameters += (width + 1) * outputs
    kept_a_block = 3 if eager else 1
    values = features + (kept_a_block * cfg.num_blocks + 1) * width
    if cfg.density_head == "separate":
        parameters += (features + 2) * cfg.density_hidden_dim + 1
        values += cfg.density_hidden_dim
    return parameter_bytes * parameters + value_bytes * values * queries


def grid_parameters(cfg: FieldConfig) -> int:
    """The hash table's values in a field of ``cfg``: the rows of the layout every backend
    builds (:func:`~dreamtext.encoding.grid_layout`, from ``base_resolution`` to
    ``finest_resolution_factor × bound`` as :class:`NeRFField` asks for it) × ``level_dim``.
    16 levels × 2 features: 12.2 M values at ``log2_hashmap_size`` 19, 266 M at 24 (1.1 GB of
    float32 each for the table, its gradient and each of Adam's two moments). A Python loop
    over the levels: a run checks its MLP's size (``num_levels × level_dim`` inputs) first."""
    base = int(cfg.base_resolution)
    scale = per_level_scale(base, cfg.finest_resolution_factor * cfg.bound, cfg.num_levels)
    layout = grid_layout(cfg.num_levels, base, scale, cfg.log2_hashmap_size)
    return layout.num_rows * cfg.level_dim


def normal_method(name: str) -> str:
    """The normal method ``name`` means: itself, or what an older name now is called."""
    return _NORMAL_ALIASES.get(name, name)


def _mlp_pieces(features: Tensor) -> tuple[Tensor, ...]:
    """The rows the MLP takes at once: on the CPU pieces of ``CPU_QUERY_PIECE`` points with a
    graph, ``CPU_NO_GRAD_PIECE`` without; elsewhere all of them."""
    if features.device.type != "cpu":
        return (features,)
    return features.split(CPU_QUERY_PIECE if torch.is_grad_enabled() else CPU_NO_GRAD_PIECE)


class _TruncExp(torch.autograd.Function):
    """``exp(x)`` whose gradient uses ``exp(min(x, 15))``, so a large raw density cannot blow up
    the update. The backward is made of differentiable ops, so it works under double backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * density_slope(x, "exp")


def activate_density(raw: Tensor, kind: str) -> Tensor:
    """``σ = softplus(raw)`` or ``σ = exp(raw)`` (truncated gradient)."""
    if kind == "softplus":
        return F.softplus(raw)
    return _TruncExp.apply(raw)


def density_slope(raw: Tensor, kind: str) -> Tensor:
    """``dσ/draw``: ``sigmoid(raw)`` for softplus, ``exp(min(raw, 15))`` for exp (the same
    truncation as :func:`activate_density`'s gradient)."""
    if kind == "softplus":
        return torch.sigmoid(raw)
    return torch.exp(raw.clamp(max=EXP_GRAD_CLAMP))


def silu_slope(s: Tensor, silu: Tensor | None = None) -> Tensor:
    """``d SiLU(s)/ds = σ(s) (1 + s (1 − σ(s))) = SiLU(s) + σ(s) (1 − SiLU(s))``, ``σ`` the
    logistic function (``silu``: ``SiLU(s)`` when already computed)."""
    silu = F.silu(s) if silu is None else silu
    return torch.addcmul(silu, torch.sigmoid(s), 1.0 - silu)


def frequency_encoding(d: Tensor, num_frequencies: int = BG_FREQUENCIES) -> Tensor:
    """``γ(d) = (d, sin(2^k π d), cos(2^k π d))_{k < K}``: ``[N, 3]`` → ``[N, 3 + 6K]``."""
    freqs = (2.0 ** torch.arange(num_frequencies, device=d.device, dtype=d.dtype)) * math.pi
    angles = (d[:, None, :] * freqs[:, None]).flatten(1)  # [N, 3K], N = 0 too (a -1 failed)
    return torch.cat([d, torch.sin(angles), torch.cos(angles)], dim=-1)


class ResidualBlock(nn.Module):
    """``h ↦ SiLU(h + LayerNorm(W h + b))``: a residual block (He et al. 2016), SiLU (ch. 6.1.3)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, h: Tensor) -> Tensor:
        return F.silu(h + self.norm(self.linear(h)))

    def forward_in_place(self, h: Tensor) -> Tensor:
        """The same values as :meth:`forward` (``h`` is added last, in the same order of terms),
        computed in the block's own new buffer: only without autograd."""
        return F.silu(self.norm(self.linear(h)).add_(h), inplace=True)


class NeRFField(nn.Module):
    """Density and albedo of the scene cube ``[−bound, bound]^3``, plus its background.

    ``raw = MLP(grid(x))``; ``σ = act(raw_0 + v (1 − |x| / b))``; ``albedo = sigmoid(raw_1..3)``.
    Points outside the cube are clamped onto it for the grid lookup (the blob still sees them).
    """

    def __init__(self, cfg: FieldConfig, device: torch.device | str | None = None) -> None:
        super().__init__()
        cfg.validate()  # presets and the CLI set fields after construction
        self.cfg = cfg
        self.bound = float(cfg.bound)
        self.encoding = make_encoding(
            cfg.encoding,
            device=device,
            num_levels=cfg.num_levels,
            level_dim=cfg.level_dim,
            log2_hashmap_size=cfg.log2_hashmap_size,
            base_resolution=cfg.base_resolution,
            finest_resolution=cfg.finest_resolution_factor * cfg.bound,
            bound=cfg.bound,
        )
        self.input_layer = nn.Linear(self.encoding.output_dim, cfg.hidden_dim)
        self.blocks = nn.Sequential(*(ResidualBlock(cfg.hidden_dim) for _ in range(cfg.num_blocks)))
        separate = cfg.density_head == "separate"
        # With a density head of its own the residual MLP gives the three albedo logits only.
        self.output_layer = nn.Linear(cfg.hidden_dim, 3 if separate else 4)
        self.density_net = (
            nn.Sequential(
                nn.Linear(self.encoding.output_dim, cfg.density_hidden_dim),
                nn.SiLU(),
                nn.Linear(cfg.density_hidden_dim, 1),
            )
            if separate
            else None
        )
        self.background_net = self._background_mlp(cfg) if cfg.background == "mlp" else None
        # Mixed precision of the MLPs on CUDA (set by dreamtext.factory from --fp16 / --bf16).
        self.mlp_dtype: torch.dtype | None = None
        # torch.compile'd MLPs by name ("mlp", "density"), set by :meth:`compile_mlps`.
        self._compiled: dict[str, Callable[[Tensor], Tensor]] = {}
        self.to(device if device is not None else "cpu")

    @staticmethod
    def _background_mlp(cfg: FieldConfig) -> nn.Sequential:
        """``bg_num_layers`` hidden ReLU layers, ``bg_hidden_dim`` wide, on ``γ(d)``; RGB logits."""
        layers: list[nn.Module] = []
        width = 3 + 6 * BG_FREQUENCIES
        for _ in range(cfg.bg_num_layers):
            layers += [nn.Linear(width, cfg.bg_hidden_dim), nn.ReLU()]
            width = cfg.bg_hidden_dim
        layers.append(nn.Linear(width, 3))
        return nn.Sequential(*layers)

    @property
    def encoding_backend(self) -> str:
        """``"torch"``, ``"triton"`` or ``"tcnn"``: which grid implementation this field runs
        on."""
        return self.encoding.backend

    def _raw(self, x: Tensor) -> Tensor:
        """``x: [N, 3]`` → raw MLP output ``[N, 4]`` float32 (density logit, albedo logits).

        The hash grid runs in float32; with ``mlp_dtype`` set (``--fp16`` / ``--bf16`` on CUDA;
        the tests set it on the CPU too) the MLP runs under autocast in that precision on ``x``'s
        device and its output is cast back to float32. On the CPU the MLP runs on
        ``CPU_QUERY_PIECE`` points at a time, ``CPU_NO_GRAD_PIECE`` when no graph is built.
        """
        features = self.encoding(x)
        raw = self._in_pieces("mlp", features)
        if self.density_net is None:
            return raw
        return torch.cat([self._density_logit(features)[:, None], raw], dim=1)

    def compile_mlps(self, backend: str = "inductor", remedy: str = COMPILE_REMEDY) -> None:
        """``torch.compile`` the residual MLP and the separate density head, if any (the grid,
        the blob and the activations stay eager), with a dynamic row count: one graph with its
        backward and one without a graph per MLP, each with the autocast of ``mlp_dtype`` inside,
        whatever the number of points. Eagerly each layer's bias, LayerNorm (float32 under
        autocast), residual sum, SiLU and casts are separate passes over ``[N, hidden_dim]``;
        compiled they are a fused kernel or two a block. Values are the eager MLP's up to
        rounding. ``backend``: torch.compile's (``aot_eager`` traces without generating code:
        the tests' CPU check of the wiring).

        The compiled MLPs are built here, not in the first step, and checked against the eager
        ones (:meth:`_check_compiled`): a compiler that is missing or fails, or code that
        computes something else, is a :class:`DreamtextError` that ends with ``remedy`` (what
        the user can do), and the MLPs stay eager."""
        self._compiled = {"mlp": torch.compile(self._mlp_out, dynamic=True, backend=backend)}
        if self.density_net is not None:
            self._compiled["density"] = torch.compile(
                self._density_out, dynamic=True, backend=backend
            )
        try:
            with warnings.catch_warnings():
                # Inductor's once-a-process hint, at the first compile on an Ampere or newer
                # GPU, to let float32 matrix products use TF32: the MLPs' precision is the run's
                # (--fp16 / --bf16 autocast, else float32), and with "auto" on CUDA by default a
                # float32 run would print it unasked.
                warnings.filterwarnings("ignore", message="TensorFloat32 tensor cores")
                self._check_compiled(remedy=remedy)
        except DreamtextError:
            self._compiled = {}
            raise

    def _check_compiled(self, rows: int = 64, remedy: str = COMPILE_REMEDY) -> None:
        """Run each compiled MLP on ``rows`` random grid features, with its backward (gradients
        of a random weighting of the outputs with respect to the features and the MLP's
        parameters) and without a graph, against the eager MLP: values and gradients within 5%
        of their largest magnitude (compiled against eager in bf16, the default field on the
        CPU: up to 1.1%; fp16 rounds 8× finer; wrong code is off by about the values
        themselves)."""
        device = self.input_layer.weight.device
        g = torch.Generator().manual_seed(0)
        features = (torch.rand(rows, self.encoding.output_dim, generator=g) * 2 - 1).to(device)
        eager_of = {"mlp": self._mlp_out, "density": self._density_out}
        params = [p for p in self.parameters() if p.requires_grad]
        try:
            for name, compiled in self._compiled.items():
                results = []
                for run in (eager_of[name], compiled):
                    leaf = features.clone().requires_grad_(True)
                    with torch.enable_grad():
                        out = run(leaf)
                        draw = torch.Generator().manual_seed(1)  # the same for both runs
                        weights = torch.rand(out.shape, generator=draw).to(device)
                        grads = torch.autograd.grad(
                            (out * weights).sum(), [leaf, *params], allow_unused=True
                        )
                    with torch.no_grad():
                        plain = run(features)
                    results.append((out.detach(), plain, *[x for x in grads if x is not None]))
                for want, got in zip(*results, strict=True):
                    if not compiled_agrees(got, want):
                        raise DreamtextError(
                            f"torch.compile's field MLP ({name}) disagrees with the eager one "
                            f"on this device: {remedy}"
                        )
        except DreamtextError:
            raise
        except Exception as err:  # compiler and driver errors come in many types
            if memory_that_ran_out(err) is not None:  # the run's, not the compiler's
                raise
            raise DreamtextError(
                f"torch.compile does not build the field's MLPs here ({cause_line(err)}): {remedy}"
            ) from err

    @property
    def compiled(self) -> bool:
        """Whether :meth:`compile_mlps` has compiled the MLPs."""
        return bool(self._compiled)

    def _in_precision(self, mlp: Callable[[Tensor], Tensor], features: Tensor) -> Tensor:
        """``mlp(features)`` under :meth:`_mlp_precision` (``mlp_dtype``'s autocast when it is
        set), in float32."""
        with self._mlp_precision(features.device.type):
            return mlp(features).float()

    def _mlp_out(self, features: Tensor) -> Tensor:
        """:meth:`_mlp` in :meth:`_in_precision`: what is compiled."""
        return self._in_precision(self._mlp, features)

    def _density_out(self, features: Tensor) -> Tensor:
        """The density head in :meth:`_in_precision`: what is compiled."""
        assert self.density_net is not None
        return self._in_precision(self.density_net, features)

    def _in_pieces(self, name: str, features: Tensor) -> Tensor:
        """The MLP ``name`` (``"mlp"``, ``"density"``) on ``features``: compiled when
        :meth:`compile_mlps` has run (and there are at least :data:`MIN_COMPILED_ROWS`), else
        eagerly in :func:`_mlp_pieces`, under ``mlp_dtype``'s autocast when it is set (then cast
        back to float32), the pieces joined."""
        compiled = self._compiled.get(name)
        if compiled is not None and features.shape[0] >= MIN_COMPILED_ROWS:
            return compiled(features)
        mlp: Callable[[Tensor], Tensor]
        if name == "density":
            assert self.density_net is not None
            mlp = self.density_net
        else:
            mlp = self._mlp if torch.is_grad_enabled() else self._mlp_no_grad
        pieces = _mlp_pieces(features)
        if len(features) > CPU_RECOMPUTE_POINTS and torch.is_grad_enabled():
            # Each piece's activations are recomputed in backward rather than kept: a graph over
            # every query held ~6 KiB a query (1.5-2.5 GB for the 2^18 samples of a 64 px step
            # on a fresh field). The graph is the same, so are the gradients, bit for bit.
            # Reentrant: the forward records one node a piece, not one a layer. The layers'
            # small nodes, kept between pieces whose 3 MiB activations were freed, split those
            # holes, and glibc's heap grew by a piece's activations at every piece (339k
            # samples: 1.5 GB of RSS for 0.2 GB live). It needs an input that takes a gradient.
            reentrant = features.requires_grad
            parts = [
                checkpoint(self._in_precision, mlp, piece, use_reentrant=reentrant)
                for piece in pieces
            ]
        else:
            parts = [self._in_precision(mlp, piece) for piece in pieces]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _density_logit(self, features: Tensor) -> Tensor:
        """σ's logit from the separate density head: grid features ``[N, L·F]`` → ``[N]``."""
        assert self.density_net is not None
        return self._in_pieces("density", features)[:, 0]

    def _density_head_with_input_gradient(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """The separate head's ``raw_0 = w_2ᵀ SiLU(a) + b_2``, ``a = W_1 f + b_1``, and
        ``∂raw_0/∂f = (w_2 ⊙ SiLU'(a)) W_1``: ``[n]`` and ``[n, L·F]``, float32, both
        differentiable."""
        assert self.density_net is not None
        first, _, last = self.density_net
        pre = first(features).float()
        raw = last(F.silu(pre)).float()[:, 0]
        grad = (last.weight[0].float() * silu_slope(pre)) @ first.weight.float()
        return raw, grad

    def _with_input_gradient(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """``raw [n, 4]`` and ``∂raw_0/∂features [n, L·F]`` from whichever network gives σ."""
        if self.density_net is None:
            return self._mlp_with_input_gradient(features)
        raw, grad = self._density_head_with_input_gradient(features)
        mlp = self._mlp if torch.is_grad_enabled() else self._mlp_no_grad
        return torch.cat([raw[:, None], mlp(features).float()], dim=1), grad

    def _mlp_precision(self, device_type: str) -> contextlib.AbstractContextManager:
        """Autocast to ``mlp_dtype`` when it is set, else nothing."""
        if self.mlp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.mlp_dtype)

    def _mlp(self, features: Tensor) -> Tensor:
        """``linear → SiLU → residual blocks → linear``: grid features ``[N, L·F]`` → ``[N, 4]``."""
        return self.output_layer(self.blocks(F.silu(self.input_layer(features))))

    def _mlp_no_grad(self, features: Tensor) -> Tensor:
        """:meth:`_mlp`'s function, each layer overwriting the activations it reads: only for
        calls that build no graph."""
        h = F.silu(self.input_layer(features), inplace=True)
        for block in self.blocks:
            h = block.forward_in_place(h)
        return self.output_layer(h)

    def _mlp_with_input_gradient(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`_mlp`'s output ``raw [n, 4]`` and ``∂raw_0/∂features [n, L·F]``, both as
        differentiable ops (so training back-propagates through the gradient too).

        Forward, per block: ``l = W h + b``, ``x̂ = (l − μ) r`` with ``r = 1/√(var + ε)``,
        ``s = h + γ x̂ + β``, ``h' = SiLU(s)``. Backward from ``g = ∂raw_0/∂h_last = W_out[0]``,
        per block in reverse: ``g_s = g SiLU'(s)``, ``g_x̂ = γ g_s``,
        ``g_l = r (g_x̂ − mean(g_x̂) − x̂ mean(g_x̂ x̂))``, ``g ← g_s + g_l W``; finally
        ``∂raw_0/∂features = (g SiLU'(a_0)) W_in`` where ``a_0`` is the input layer's output.
        LayerNorm is written out (its ``r`` carries a gradient) and ``SiLU'(s)`` as
        ``h' + σ(s)(1 − h')``: elementwise passes, not matrix products, bound this on the CPU.
        LayerNorm statistics and the elementwise terms run in float32 under autocast.
        """
        pre = self.input_layer(features).float()  # a_0
        h = F.silu(pre)
        saved = []
        for block in self.blocks:
            linear = block.linear(h).float()
            # LayerNorm written out: r is needed with its gradient (native_layer_norm passes
            # none back through its rstd), and the variance in two passes (Tensor.var over the
            # last dim is ~18× slower on the CPU).
            centred = linear - linear.mean(dim=-1, keepdim=True)
            rstd = torch.rsqrt(centred.square().mean(dim=-1, keepdim=True) + block.norm.eps)
            normed = centred * rstd
            s = torch.addcmul(block.norm.bias, normed, block.norm.weight).add_(h)
            h = F.silu(s)
            saved.append((silu_slope(s, h), normed, rstd))
        raw = self.output_layer(h).float()
        grad = self.output_layer.weight[0].float().expand_as(h)
        for block, (slope, normed, rstd) in zip(
            reversed(self.blocks), reversed(saved), strict=True
        ):
            grad_s = grad * slope
            grad_normed = grad_s * block.norm.weight
            centred = grad_normed - grad_normed.mean(dim=-1, keepdim=True)
            along = (grad_normed * normed).mean(dim=-1, keepdim=True)
            grad_linear = torch.addcmul(centred, normed, along, value=-1.0).mul_(rstd)
            grad = torch.addmm(grad_s, grad_linear, block.linear.weight.to(grad_linear.dtype))
        grad_pre = grad * silu_slope(pre)
        return raw, (grad_pre @ self.input_layer.weight).float()

    def _analytic(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``z = raw_0 + d(x)``, ``raw [N, 4]`` and ``∇σ(x) = act'(z) (J_grid(x)ᵀ ∂raw_0/∂f +
        ∇d(x))``: ``x: [N, 3]``, float32 out.

        ``J_grid = ∂f/∂x`` comes from :func:`features_and_jacobian`, ``∂raw_0/∂f`` from
        :meth:`_mlp_with_input_gradient` (or the separate density head's
        :meth:`_density_head_with_input_gradient`), and the blob's gradient is
        ``∇d = −(v / b) x / |x|``.
        On the CPU the MLP runs in pieces, as in :meth:`_raw`.
        """
        features, jacobian = features_and_jacobian(self.encoding, x)
        with self._mlp_precision(x.device.type):
            parts = [self._with_input_gradient(piece) for piece in _mlp_pieces(features)]
        raw = torch.cat([part[0] for part in parts])
        grad_features = torch.cat([part[1] for part in parts])
        xf = x.float()
        z = raw[:, 0] + self.blob(xf)
        blob_grad = F.normalize(xf, dim=-1, eps=1e-12) * (
            -self.cfg.blob_density / self.cfg.blob_radius
        )
        grad_z = (grad_features[:, :, None] * jacobian.float()).sum(dim=1) + blob_grad
        return z, raw, density_slope(z, self.cfg.density_activation)[:, None] * grad_z

    def blob(self, x: Tensor) -> Tensor:
        """Density bias of ch. 6.1.6 (eq. 6.1): ``d = v (1 − |x| / b)``, ``x: [N, 3]`` → ``[N]``.

        Added to the raw density before softplus or exp, as in the Stable-DreamFusion fork; the
        "Sigmoid" ch. 6.1.6 names would cap σ at 1 (README, the paragraph on the field)."""
        return self.cfg.blob_density * (1.0 - x.norm(dim=-1) / self.cfg.blob_radius)

    def density(self, x: Tensor) -> Tensor:
        """``σ = act(raw_0(x) + d(x))``: ``x: [N, 3]`` → ``σ: [N]`` (≥ 0). With a separate
        density head the residual MLP does not run."""
        if self.density_net is None:
            raw = self._raw(x)[:, 0]
        else:
            raw = self._density_logit(self.encoding(x))
        return activate_density(raw + self.blob(x), self.cfg.density_activation)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x: [N, 3]`` → ``(σ: [N], albedo: [N, 3] in [0, 1])``."""
        raw = self._raw(x)
        sigma = activate_density(raw[:, 0] + self.blob(x), self.cfg.density_activation)
        return sigma, torch.sigmoid(raw[:, 1:])

    def normals(self, x: Tensor, sigma: Tensor | None = None) -> Tensor:
        """Unit outward normals ``n = −∇σ / |∇σ|``: ``x: [N, 3]`` → ``[N, 3]``.

        ``forward_difference``: ``∂σ/∂x_i ≈ (σ(x + ε e_i) − σ(x)) / ε``, three density queries
        (``sigma``, when given, is ``σ(x)`` and is reused). ``central_difference``:
        ``(σ(x + ε e_i) − σ(x − ε e_i)) / 2ε``, six queries. ``analytic``: the exact gradient
        (:meth:`_analytic`: one grid lookup with its Jacobian and one pass of the MLP
        with its input gradient; ``sigma`` is not needed). The differences take densities
        capped at :data:`MAX_DENSITY`, so an infinite one gives a normal, not NaN. All stay
        differentiable w.r.t. the
        field's parameters, so the orientation regulariser and shading train through them, and
        all work under ``no_grad`` and ``inference_mode``. Where ``∇σ = 0`` the normal is zero.
        """
        method = normal_method(self.cfg.normals)
        eps = self.cfg.normal_eps
        offsets = eps * torch.eye(3, device=x.device, dtype=x.dtype)
        if method == "forward_difference":
            ahead = self.density((x[:, None, :] + offsets).reshape(-1, 3)).view(x.shape[0], 3)
            centre = self.density(x) if sigma is None else sigma
            centre = centre.to(ahead.dtype).clamp(max=MAX_DENSITY)
            grad = (ahead.clamp(max=MAX_DENSITY) - centre[:, None]) / eps
        elif method == "analytic":
            grad = self._analytic(x)[2]
        else:  # central differences
            probes = torch.cat([x[:, None, :] + offsets, x[:, None, :] - offsets])  # [2N, 3, 3]
            density = self.density(probes.reshape(-1, 3)).view(2, x.shape[0], 3)
            density = density.clamp(max=MAX_DENSITY)
            grad = (density[0] - density[1]) / (2.0 * eps)
        return F.normalize(-grad, dim=-1, eps=1e-12)

    @property
    def joint_normals(self) -> bool:
        """Whether :meth:`forward_with_normals` costs less than :meth:`forward` then
        :meth:`normals`: with analytic normals, which compute σ and albedo on the way."""
        return normal_method(self.cfg.normals) == "analytic"

    def forward_with_normals(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x: [N, 3]`` → ``(σ [N], albedo [N, 3], normals [N, 3])``: :meth:`forward` and
        :meth:`normals` together. Analytic normals take all three from one grid lookup and one
        pass of the MLP (the σ and albedo that pass computes anyway); the differences reuse
        ``σ(x)``."""
        if not self.joint_normals:
            sigma, albedo = self(x)
            return sigma, albedo, self.normals(x, sigma)
        z, raw, grad = self._analytic(x)
        sigma = activate_density(z, self.cfg.density_activation)
        return sigma, torch.sigmoid(raw[:, 1:]), F.normalize(-grad, dim=-1, eps=1e-12)

    @property
    def normal_queries(self) -> int:
        """Density queries one normal counts as when sizing chunks: 3, 6 for central
        differences, 4 for analytic normals. Their one pass with σ and albedo keeps 21.9 KB a
        point for backward against 6.6 for a plain query and 16.7 for forward differences'
        three (default field, saved-tensor hooks), so a replay piece of ``chunk_points / 5``
        points holds about as much as forward differences' ``chunk_points / 4``."""
        if normal_method(self.cfg.normals) == "central_difference":
            return 6
        return 4 if self.joint_normals else 3

    def background(self, dirs: Tensor) -> Tensor:
        """Colour where rays along ``dirs: [N, 3]`` leave the scene → ``[N, 3]`` in [0, 1]."""
        if self.background_net is not None:
            d = F.normalize(dirs, dim=-1)
            return torch.sigmoid(self.background_net(frequency_encoding(d)))
        colour = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}.get(
            self.cfg.background, self.cfg.background_color
        )
        # Filled on the device (torch.tensor(colour, device=...) copied it up from the host, and
        # CUDA's host waited for the queue to do that once a render).
        rgb = torch.stack([dirs.new_full((), float(c)) for c in colour])
        return rgb.expand(dirs.shape[0], 3)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser groups: the hash table at ``lr × encoding_lr_scale``, the MLPs at ``lr``."""
        mlps = [p for name, p in self.named_parameters() if not name.startswith("encoding.")]
        return [
            {
                "params": list(self.encoding.parameters()),
                "lr": lr * self.cfg.encoding_lr_scale,
                "name": "encoding",
            },
            {"params": mlps, "lr": lr, "name": "mlp"},
        ]


__all__ = [
    "BACKGROUNDS",
    "DENSITY_ACTIVATIONS",
    "DENSITY_HEADS",
    "NORMAL_METHODS",
    "Field",
    "FieldConfig",
    "NeRFField",
    "ResidualBlock",
    "activate_density",
    "density_slope",
    "field_config_from_dict",
    "field_config_to_dict",
    "frequency_encoding",
    "grid_parameters",
]
