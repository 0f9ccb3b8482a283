"""Volume rendering of a field over packed samples: sampler → field → shader → compositor.

    cameras ──► rays [N] ──► sampler (no grad) ──► RaySamples [S] (+ σ, albedo when it marched)
                               field(x) [S] ──► normals [S] (only where needed) ──► shade [S]
                               compositor: w_i = T_i α_i per ray ──► rgb, opacity, depth [N]

* **Samplers** (:mod:`dreamtext.samplers`): the occupancy-grid marcher (default), which evaluates
  the field without gradients and keeps only samples that can contribute, or the dense
  stratified + importance sampler (the reference). ``RenderConfig.sampler`` picks one.
* **Shading** (thesis ch. 6.1.4): albedo ``c = a``; lambertian ``c = a (r + (1 − r) max(0, n·l))``;
  textureless the same with ``a = 1``; ``r`` the ambient ratio. Normals are computed only at the
  kept samples, and only for shaded renders or ``need_normals``.
* **Compositing** (:mod:`dreamtext.compositing`): segmented transmittance and weights in float32.
* **Regularisers** (:mod:`dreamtext.regularisers`) are computed from the per-ray outputs.

Memory is bounded by *field queries*, not rays:

* without gradients (previews, turntables, evaluation) the field sees at most ``chunk_points``
  points per call, counting normal queries;
* a training render (:meth:`VolumeRenderer.render_train`) either builds one graph over all kept
  samples ("direct"), or, when that graph would hold more than ``grad_chunk_points`` field
  queries, defers: it renders the image without a graph, lets the caller take the SDS gradient on
  the image, then re-renders ray chunks of at most ``grad_chunk_points`` queries with a graph
  and back-propagates ``∂L/∂rgb`` chunk by chunk ("deferred"). Both give the same gradients; the
  deferred one peaks at one chunk whatever the resolution.

``VolumeRenderer`` is an ``nn.Module`` so that its occupancy grid follows ``.to(device)`` and
``state_dict()``. Samples are jittered (``perturb``) in ``train()`` mode unless a call says
otherwise.
"""

from __future__ import annotations

import bisect
import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from dreamtext.cameras import Poses, get_rays, orbit_poses
from dreamtext.compositing import accumulate, packed_weights
from dreamtext.errors import DreamtextError
from dreamtext.field import Field
from dreamtext.interrupts import raise_if_stop_in_step
from dreamtext.regularisers import regularisers, weighted_sum
from dreamtext.samplers import (
    SAMPLERS,
    DenseSampler,
    OccupancyGrid,
    OccupancySampler,
    RaySamples,
    SampleValues,
    near_far_from_bound,
    sample_pdf,
)

SHADINGS: tuple[str, ...] = ("albedo", "lambertian", "textureless")
BACKPROP_MODES: tuple[str, ...] = ("auto", "direct", "deferred")
# Per-ray outputs of the compositor, and the image-shaped ones of render().
RAY_OUTPUTS: tuple[str, ...] = ("rgb", "opacity", "depth", "normals", "orientation")


# The most steps the occupancy marcher divides a ray's way through the scene into
# (RenderConfig.validate says why).
MARCH_STEPS_MAX = 4096


@dataclass
class RenderConfig:
    """Sampling, occupancy-grid and memory settings (defaults measured in benchmarks/RESULTS.md).

    * ``sampler``: ``"occupancy"`` (march occupied cells, prune, early termination) or ``"dense"``
      (the reference: ``num_steps`` stratified + ``upsample_steps`` importance samples per ray).
    * ``march_steps``: the marcher's step is ``dt = 2√3 · bound / march_steps`` (that many steps
      along the cube's diagonal; 256 gives dt = 0.0135 for bound 1, threestudio's DreamFusion
      step for objects of this size); ``march_window`` occupied steps per ray are evaluated in
      the first round, ``march_window_growth`` times more in each round after (1 keeps it
      fixed; rounds, not samples, change: fewer rounds, fewer waits for the GPU).
    * ``alpha_threshold``, ``transmittance_threshold``: the marcher keeps a sample only if
      ``α_i`` and ``T_i`` exceed them, and stops a ray once ``T`` falls to the second (what the
      rest of the ray adds is then at most ``T ≤ 1e-3`` of the colour: a quarter of an 8-bit
      level). Measured against no pruning (``benchmarks/pruning.py``): on fitted shapes 1.7-3.8×
      fewer samples, images within 0.12 levels, gradients within 0.14%; ``T`` 1e-3 instead of
      1e-4 takes 18-19% fewer samples, ``α`` 1e-3 instead of 1e-4 about 1% for 5-8× the error.
    * ``min_near``: no sample closer to the camera than this.
    * ``chunk_size``: rays per sampling pass; ``chunk_points``: field queries per call without
      gradients (grid updates, previews, turntables).
    * ``backprop``: ``"direct"`` (one graph), ``"deferred"`` (image first, then chunked
      re-render + backward) or ``"auto"`` (deferred when the graph would hold more than
      ``grad_chunk_points`` field queries). With ``recompute_field`` a sample keeps ~50 bytes
      (``benchmarks/memory_model.py`` at 512 px: a direct albedo step of ~24 M samples allocated
      1.2 GB more than the deferred one), so the default 2^25 holds up to ~1.6 GiB: on an H200
      FitFusion's shaded 256 px step (~4.3 M samples, 17 M queries) ran direct at 3.64 it/s
      against 2.94 deferred at 2^22, with peaks of 4.8 and 4.7 GiB (compiled field and U-Net;
      benchmarks/RESULTS.md, 2026-12-04).
    * ``recompute_field``: keep only the query points of the field for backward and evaluate the
      field again there, ``chunk_points`` queries at a time (activation checkpointing): tens of
      bytes per query instead of several KiB, for one more forward pass of the field. With it
      off, lower ``grad_chunk_points`` to about ``2^19``: each query then keeps ~3-6 KiB.
    * ``occupancy_grid``: skip samples in empty cells of a ``grid_resolution^3`` grid, refreshed
      every ``grid_update_every`` steps with decay ``grid_decay`` and threshold
      ``density_threshold`` (see :class:`~dreamtext.samplers.OccupancyGrid`).
    * ``need_normals``: compute normals even for albedo shading (normal maps, orientation loss).
    * ``compile_field``: ``torch.compile`` the field's MLPs on CUDA: seconds of compiling and
      a check before the first step, then faster field queries
      (:meth:`~dreamtext.field.NeRFField.compile_mlps`; on an H200 FitFusion's albedo steps
      went from 5.1 to 8.4 it/s, benchmarks/RESULTS.md). ``"auto"`` (the default) compiles on
      CUDA and falls back to the eager MLPs with a warning where that fails; ``true``
      (``--compile``) makes a failure an error; ``false`` (``--no-compile``) never compiles.
      Off CUDA the MLPs stay eager (Inductor's CPU code is slower than the eager pieces).
    """

    sampler: str = "occupancy"
    num_steps: int = 64
    upsample_steps: int = 32
    march_steps: int = 256
    march_window: int = 16
    march_window_growth: int = 2
    alpha_threshold: float = 1e-4
    transmittance_threshold: float = 1e-3
    min_near: float = 0.05
    chunk_size: int = 65536
    chunk_points: int = 1 << 19
    backprop: str = "auto"
    grad_chunk_points: int = 1 << 25
    recompute_field: bool = True
    occupancy_grid: bool = True
    grid_resolution: int = 64
    grid_decay: float = 0.95
    density_threshold: float = 10.0
    grid_update_every: int = 16
    need_normals: bool = False
    compile_field: bool | str = "auto"

    def validate(self) -> None:
        """Raise a :class:`DreamtextError` naming the first setting a user got wrong."""
        if self.sampler not in SAMPLERS:
            raise DreamtextError(
                f"render.sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}"
            )
        if self.backprop not in BACKPROP_MODES:
            raise DreamtextError(
                f"render.backprop must be one of {', '.join(BACKPROP_MODES)}, got {self.backprop!r}"
            )
        positive = (
            "num_steps",
            "march_steps",
            "march_window",
            "march_window_growth",
            "chunk_size",
            "chunk_points",
            "grid_update_every",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise DreamtextError(
                    f"render.{name} must be a positive integer, got {getattr(self, name)}"
                )
        # Time and memory grow with the steps a ray takes through what is occupied (every cell,
        # at a run's start): at 32 px, batch 2, on a 2-core CPU three steps took 19 s at 256
        # steps, 98 s and 4 GB at 4096, and at 65536 over 4 min and 14 GB (1e12 ran for ever).
        # 4096 is 16× the default and already steps finer than the default field's finest
        # hash-grid cell (2 / 2048 world units, against 2√3 / 4096).
        if self.march_steps > MARCH_STEPS_MAX:
            raise DreamtextError(
                f"render.march_steps must be at most {MARCH_STEPS_MAX:,} (16× the default "
                f"{RenderConfig.march_steps}; time and memory grow with it), got {self.march_steps}"
            )
        # The dense sampler's samples a ray, likewise: `num_steps: 1e12` got past the memory
        # checks (a deferred backward holds a chunk of them) and ran out of memory at step 0.
        for name in ("num_steps", "upsample_steps"):
            if getattr(self, name) > MARCH_STEPS_MAX:
                raise DreamtextError(
                    f"render.{name} must be at most {MARCH_STEPS_MAX:,} (the dense sampler's "
                    f"samples a ray; the default is {getattr(RenderConfig, name)}), got "
                    f"{getattr(self, name)}"
                )
        if self.grad_chunk_points <= 0 or self.grid_resolution <= 0:
            raise DreamtextError("render.grad_chunk_points and render.grid_resolution must be > 0")
        if self.upsample_steps < 0:
            raise DreamtextError("render.upsample_steps must be ≥ 0")
        if not self.min_near >= 0.0:
            raise DreamtextError(f"render.min_near must be ≥ 0, got {self.min_near:g}")
        if not 0.0 < self.grid_decay <= 1.0:
            raise DreamtextError("render.grid_decay must be in (0, 1]")
        if not (isinstance(self.compile_field, bool) or self.compile_field == "auto"):
            raise DreamtextError(
                f"render.compile_field must be true, false or auto, got {self.compile_field!r}"
            )
        for name in ("alpha_threshold", "transmittance_threshold"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise DreamtextError(f"render.{name} must be in [0, 1)")


@dataclass
class RayBundle:
    """Flat rays: ``origins, directions, light_dirs: [N, 3]``; ``backgrounds: [N, 3]`` or
    ``None`` (the field's background)."""

    origins: Tensor
    directions: Tensor
    light_dirs: Tensor
    backgrounds: Tensor | None = None

    def __len__(self) -> int:
        return self.origins.shape[0]

    def __getitem__(self, index: slice) -> RayBundle:
        bg = self.backgrounds[index] if self.backgrounds is not None else None
        return RayBundle(self.origins[index], self.directions[index], self.light_dirs[index], bg)


def shade(
    albedo: Tensor,
    normals: Tensor | None,
    light_dir: Tensor | None,
    shading: str,
    ambient_ratio: float,
) -> Tensor:
    """Sample colours under one of the three shadings of DreamFusion (thesis ch. 6.1.4).

    albedo ``c = a``; lambertian ``c = a (r + (1 − r) max(0, n·l))``; textureless the same with
    ``a = 1`` (white), so only the geometry shows. ``r`` is the ambient ratio.

    Args:
        albedo, normals: ``[..., 3]`` (normals may be ``None`` for albedo shading).
        light_dir: unit vectors towards the light, ``[..., 3]`` (may be ``None`` for albedo
            shading).

    Returns:
        ``[..., 3]`` colours.
    """
    if shading == "albedo":
        return albedo
    if normals is None or light_dir is None:
        raise ValueError(f"{shading} shading needs normals and light directions")
    diffuse = (normals * light_dir).sum(dim=-1, keepdim=True).clamp_min(0.0)
    lighting = ambient_ratio + (1.0 - ambient_ratio) * diffuse
    if shading == "textureless":
        return lighting.expand_as(albedo)
    return albedo * lighting


def _check_shading(shading: str) -> None:
    if shading not in SHADINGS:
        raise DreamtextError(f"unknown shading '{shading}'; use one of {', '.join(SHADINGS)}")


class VolumeRenderer(nn.Module):
    """Renders a :class:`~dreamtext.field.Field`; see the module docstring for the pipeline."""

    def __init__(self, cfg: RenderConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or RenderConfig()
        self.cfg.validate()
        cfg = self.cfg
        self.grid = OccupancyGrid(cfg.grid_resolution, cfg.grid_decay, cfg.density_threshold)
        grid = self.grid if cfg.occupancy_grid else None
        if cfg.sampler == "dense":
            self.sampler: DenseSampler | OccupancySampler = DenseSampler(
                cfg.num_steps,
                cfg.upsample_steps,
                cfg.min_near,
                grid,
                cfg.chunk_size,
                cfg.chunk_points,
            )
        else:
            self.sampler = OccupancySampler(
                cfg.march_steps,
                cfg.march_window,
                cfg.alpha_threshold,
                cfg.transmittance_threshold,
                cfg.min_near,
                grid,
                cfg.chunk_size,
                cfg.chunk_points,
                cfg.march_window_growth,
            )

    def update_occupancy(self, field: Field, step: int) -> bool:
        """Refresh the occupancy grid when ``step`` is a multiple of ``grid_update_every``.

        Returns whether it updated (never when ``cfg.occupancy_grid`` is off).
        """
        if not self.cfg.occupancy_grid or step % self.cfg.grid_update_every != 0:
            return False
        self.grid.update(field, self.cfg.chunk_points)
        return True

    def with_grid_refreshed(self, field: Field, step: int) -> VolumeRenderer:
        """The renderer to show a field trained ``step`` steps with: this one, or while its
        occupancy grid has not had its first refresh (``step < grid_update_every``) a copy with
        the grid refreshed once. Until then every cell counts as occupied, so every ray marches
        and queries the whole scene: a 3-step run of the default field previewed from 6.6
        million field queries, with a refreshed grid from 2.7 million plus the refresh's 262,144,
        images within 10 levels of 255 (mean 1.5). A copy, so that the run's grid (its
        checkpoint, a resume) stays as it was; the refresh draws its jitter from a forked
        generator, so that the run's random numbers stay as they were too. Used by the previews
        (:func:`dreamtext.trainer.preview_renderer`) and the export's turntable
        (:func:`dreamtext.export.export_field`)."""
        cfg = self.cfg
        if not cfg.occupancy_grid or step >= cfg.grid_update_every:
            return self
        renderer = copy.deepcopy(self)
        device = self.grid.density.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            renderer.update_occupancy(field, cfg.grid_update_every)
        return renderer

    # ------------------------------------------------------------------------------------------
    # Rays

    def camera_rays(
        self,
        poses: Poses,
        height: int,
        width: int,
        light_positions: Tensor | None = None,
        background: Tensor | None = None,
    ) -> RayBundle:
        """The ``B·H·W`` rays of ``poses``, camera-major, on the occupancy grid's device.

        The light of a ray is a point light at ``light_positions[b]`` seen from the ray's point
        closest to the scene centre: ``l = normalise(L − p)``, ``p = o − (o·d) d``. A light at the
        camera therefore gives exactly ``l = −d`` (a headlight) on every ray heading towards the
        centre; ``None`` puts it there. ``background``: ``[3]``, ``[B, 3]`` or ``[B, H, W, 3]``.
        """
        device = self.grid.density.device
        n_cams = len(poses)
        rays_o, rays_d = get_rays(poses.c2w.to(device), poses.fovy.to(device), height, width)
        if light_positions is None:
            light_positions = poses.eye
        closest = rays_o - (rays_o * rays_d).sum(dim=-1, keepdim=True) * rays_d
        light = light_positions.to(device=device, dtype=rays_o.dtype)[:, None, None, :]
        light_dir = nn.functional.normalize(light - closest, dim=-1)
        bg = None
        if background is not None:
            bg = torch.as_tensor(background, dtype=rays_o.dtype, device=device)
            if bg.dim() == 2:  # one colour per camera
                bg = bg[:, None, None, :]
            bg = bg.expand(n_cams, height, width, 3).reshape(-1, 3)
        flat = [a.reshape(-1, 3) for a in (rays_o, rays_d, light_dir)]
        return RayBundle(*flat, bg)

    # ------------------------------------------------------------------------------------------
    # Field → shading → compositing

    def _needs_normals(self, shading: str) -> bool:
        return self.cfg.need_normals or shading != "albedo"

    def _queries_per_sample(self, field: Field, shading: str) -> int:
        normals = getattr(field, "normal_queries", 6) if self._needs_normals(shading) else 0
        return 1 + normals

    def composite(
        self,
        field: Field,
        rays: RayBundle,
        samples: RaySamples,
        shading: str,
        ambient_ratio: float,
        values: SampleValues | None = None,
        collect: list[SampleValues] | None = None,
    ) -> dict[str, Tensor]:
        """Shade and composite ``samples`` of ``rays`` in one pass (differentiable when grad is on).

        ``values``: the field's density and albedo (and normals) at the samples, already computed
        without gradients (the marcher's); ``None`` queries the field. ``collect`` (renders
        without gradients): a list that gets the field's values at these samples, normals
        included when the shading computed them. Returns per-ray ``rgb [N, 3]``,
        ``opacity [N]``, ``depth [N]`` (``Σ w_i t_i``, not divided by the opacity: empty rays
        have depth 0), ``normals [N, 3]`` (``Σ w_i n_i``) and ``orientation [N]``
        (``Σ_i stopgrad(w_i) max(0, n_i·d)²``).
        """
        n = len(rays)
        ray_indices = samples.ray_indices
        x = samples.positions(rays.origins, rays.directions)
        with_normals = self._needs_normals(shading)
        sigma, albedo, normals = self._query(field, x, with_normals, values)
        if collect is not None:
            collect.append(SampleValues(sigma.float(), albedo.float(), normals))
        weights, _, _ = packed_weights(sigma, samples.deltas, ray_indices, n)
        normal_image = rays.origins.new_zeros(n, 3)
        orientation = rays.origins.new_zeros(n)
        # Per-sample ray and light directions only where normals use them: albedo shading
        # reads neither, and each gather is [S, 3] copied every step.
        if normals is not None:
            directions = rays.directions.index_select(0, ray_indices)
            normal_image = accumulate(weights[:, None] * normals, ray_indices, n)
            facing_away = (normals * directions).sum(dim=-1).clamp_min(0.0) ** 2
            orientation = accumulate(weights.detach() * facing_away, ray_indices, n)
        light_dirs = rays.light_dirs.index_select(0, ray_indices) if shading != "albedo" else None
        colour = shade(albedo.float(), normals, light_dirs, shading, ambient_ratio)
        opacity = accumulate(weights, ray_indices, n)
        background = rays.backgrounds
        if background is None:
            background = field.background(rays.directions)
        rgb = accumulate(weights[:, None] * colour, ray_indices, n)
        rgb = rgb + (1.0 - opacity[:, None]) * background.float()
        depth = accumulate(weights * samples.t_starts, ray_indices, n)
        return {
            "rgb": rgb,
            "opacity": opacity,
            "depth": depth,
            "normals": normal_image,
            "orientation": orientation,
        }

    def _query(
        self, field: Field, x: Tensor, with_normals: bool, values: SampleValues | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``σ [S]``, ``albedo [S, 3]`` and (when asked) ``normals [S, 3]`` at ``x [S, 3]``.

        The field runs without a graph, one piece of at most ``cfg.chunk_points`` queries
        (normals counted) at a time, only for what ``values`` (the sampler's σ and albedo, or a
        render's σ, albedo and normals) does not already hold. With gradients on and
        ``cfg.recompute_field``, those values become differentiable outputs of the field
        (:class:`_ReplayField`): autograd keeps only ``x`` and the outputs, and the backward
        pass runs the field again piece by piece (normals with σ and albedo), instead of keeping
        every activation of the hash grid and the MLP for every query (a few KiB per sample), so
        the peak is one piece's activations, whatever the number of samples. Without
        ``recompute_field`` the field runs once with a graph.
        """

        def normals_of(points: Tensor, sigma: Tensor) -> Tensor:
            return field.normals(points, sigma).float()

        per_sample = self._queries_per_sample(field, "lambertian") if with_normals else 1
        size = max(self.cfg.chunk_points // per_sample, 1)
        grad = torch.is_grad_enabled()
        if grad and (not self.cfg.recompute_field or x.shape[0] == 0):
            out = query_field(field, x, with_normals)  # one graph that keeps every activation
            return out[0], out[1], (out[2] if with_normals else None)
        # What the field gives at the samples, without a graph (what `values` has is reused).
        with torch.no_grad():
            if values is None:
                out = in_pieces(lambda points: query_field(field, points, with_normals), size, x)
                values = SampleValues(out[0], out[1], out[2] if with_normals else None)
            elif with_normals and values.normals is None:
                (normals,) = in_pieces(normals_of, size, x, values.sigma)
                values = SampleValues(values.sigma, values.albedo, normals)
        if not grad:
            return values.sigma, values.albedo, values.normals if with_normals else None
        # The same values as outputs of the field, whose backward runs it again piece by piece.
        return replay_field(field, x, values, size, with_normals)

    def sample_chunks(
        self, samples: RaySamples, points_per_sample: int, budget: int
    ) -> list[tuple[range, RaySamples, int, int]]:
        """Split the rays into consecutive ranges whose samples cost at most ``budget`` field
        queries (a ray costing more gets a range of its own) and at most ``chunk_size`` rays.

        Returns, per range, the rays, their samples (renumbered from 0) and where those samples
        start and stop in ``samples``. Samples that fit in one range are that range, with no
        read of their offsets (their count is the host's: a shape); others are split at the
        offsets read to the host once for them (:meth:`RaySamples.host_offsets`; on CUDA one
        sync for every chunking of the same samples, not two a chunk).
        """
        per_chunk = max(budget // max(points_per_sample, 1), 1)
        n = samples.num_rays
        if len(samples) <= per_chunk and n <= self.cfg.chunk_size:
            # What the loop below gives for offsets ending at len(samples) ≤ per_chunk
            return [(range(0, n), samples, 0, len(samples))] if n > 0 else []
        offsets = samples.host_offsets()
        chunks, start = [], 0
        while start < n:
            limit = offsets[start] + per_chunk
            stop = bisect.bisect_right(offsets, limit) - 1
            stop = min(max(stop, start + 1), start + self.cfg.chunk_size, n)
            part = samples.rays(start, stop, offsets)
            chunks.append((range(start, stop), part, offsets[start], offsets[stop]))
            start = stop
        return chunks

    @torch.no_grad()
    def composite_bounded(
        self,
        field: Field,
        rays: RayBundle,
        samples: RaySamples,
        shading: str,
        ambient_ratio: float,
        values: SampleValues | None = None,
        collect: list[SampleValues] | None = None,
    ) -> dict[str, Tensor]:
        """:meth:`composite` without gradients, at most ``chunk_points`` field queries a call."""
        queries = self._queries_per_sample(field, shading) - (0 if values is None else 1)
        parts = []
        for chunk, part, lo, hi in self.sample_chunks(samples, queries, self.cfg.chunk_points):
            raise_if_stop_in_step()  # Ctrl-C ends a step this big between chunks, not after it
            vals = values.slice(lo, hi) if values is not None else None
            sub = rays[chunk.start : chunk.stop]
            parts.append(self.composite(field, sub, part, shading, ambient_ratio, vals, collect))
        if not parts:
            return self.composite(field, rays, samples, shading, ambient_ratio, values, collect)
        return _joined(parts)

    # ------------------------------------------------------------------------------------------
    # Public entry points

    def render_rays(
        self,
        field: Field,
        rays_o: Tensor,
        rays_d: Tensor,
        shading: str = "albedo",
        light_dir: Tensor | None = None,
        ambient_ratio: float = 0.1,
        background: Tensor | None = None,
        perturb: bool | None = None,
    ) -> dict[str, Tensor]:
        """Render ``N`` rays: per-ray outputs of :meth:`composite` plus the regularisers
        ``loss_entropy``, ``loss_opacity``, ``loss_orientation`` (scalars).

        With gradients enabled the result is one differentiable pass over the kept samples;
        without, the work is bounded by ``chunk_points`` field queries per call.

        Args:
            rays_o, rays_d: ``[N, 3]``, ``rays_d`` unit length.
            shading: ``"albedo"``, ``"lambertian"`` or ``"textureless"``.
            light_dir: ``[N, 3]`` unit vectors towards the light; ``None`` lights along ``−rays_d``.
            ambient_ratio: ``r`` of the shading.
            background: ``[N, 3]`` or ``[3]``; ``None`` uses ``field.background(rays_d)``.
            perturb: jitter the samples; ``None`` jitters in ``train()`` mode only.
        """
        _check_shading(shading)
        if light_dir is None:
            light_dir = -rays_d
        bg = None
        if background is not None:
            bg = torch.as_tensor(background, dtype=rays_o.dtype, device=rays_o.device)
            bg = bg.expand(rays_o.shape[0], 3)
        rays = RayBundle(rays_o, rays_d, light_dir, bg)
        out = self._render_bundle(field, rays, shading, ambient_ratio, perturb)
        out.update(regularisers(out))
        return out

    def _render_bundle(
        self,
        field: Field,
        rays: RayBundle,
        shading: str,
        ambient_ratio: float,
        perturb: bool | None,
    ) -> dict[str, Tensor]:
        perturb = self.training if perturb is None else perturb
        if torch.is_grad_enabled():
            samples, values = self.sampler.sample(field, rays.origins, rays.directions, perturb)
            return self.composite(field, rays, samples, shading, ambient_ratio, values)
        parts = []
        for piece in self._ray_pieces(rays):
            samples, values = self.sampler.sample(field, piece.origins, piece.directions, perturb)
            parts.append(
                self.composite_bounded(field, piece, samples, shading, ambient_ratio, values)
            )
        return _joined(parts)

    def _ray_pieces(self, rays: RayBundle) -> list[RayBundle]:
        """``rays`` in consecutive pieces of ``chunk_size`` rays, each sampled and composited
        before the next is sampled: a render without gradients holds one piece's samples,
        not the whole image's. The sampler marches ``chunk_size`` rays a pass and draws its
        random phases in order, so the samples are the ones one bundle would get. (A
        turntable's 4 frames at 512 px held all of their ~1 M rays' samples: 2.3 GB more than
        at 64 px, benchmarks/RESULTS.md "Stop 62".)"""
        size = self.cfg.chunk_size
        return [rays[start : start + size] for start in range(0, len(rays), size)] or [rays]

    def render(
        self,
        field: Field,
        poses: Poses,
        height: int,
        width: int,
        shading: str = "albedo",
        light_positions: Tensor | None = None,
        ambient_ratio: float = 0.1,
        background: Tensor | None = None,
        perturb: bool | None = None,
    ) -> dict[str, Tensor]:
        """Render ``B`` cameras at ``height × width`` (see :meth:`composite` for the maths and
        :meth:`camera_rays` for the lights).

        Differentiable in one pass when gradients are enabled (training uses
        :meth:`render_train` instead, which bounds its memory); otherwise bounded by
        ``chunk_points`` field queries per call.

        Returns:
            ``rgb [B, H, W, 3]``, ``opacity [B, H, W]``, ``depth [B, H, W]``,
            ``normals [B, H, W, 3]``, ``orientation [B, H, W]`` and the regulariser scalars.
        """
        _check_shading(shading)
        rays = self.camera_rays(poses, height, width, light_positions, background)
        out = self._render_bundle(field, rays, shading, ambient_ratio, perturb)
        out.update(regularisers(out))
        return _to_images(out, (len(poses), height, width))

    @torch.no_grad()
    def render_shadings(
        self,
        field: Field,
        poses: Poses,
        height: int,
        width: int,
        shadings: tuple[str, ...],
        ambient_ratio: float = 0.1,
        perturb: bool | None = None,
    ) -> dict[str, dict[str, Tensor]]:
        """:meth:`render` of the same cameras in each of ``shadings`` (lit from the cameras, on
        the field's background), without gradients: ``{shading: images}``, the images those
        renders give, for the work of one. The rays are sampled and the field queried once
        (normals once, by the first shading that needs them); only shading and compositing run
        per shading. Previews show one object both in albedo and textureless: each render
        marched the rays again."""
        for shading in shadings:
            _check_shading(shading)
        rays = self.camera_rays(poses, height, width)
        perturb = self.training if perturb is None else perturb
        parts: dict[str, list[dict[str, Tensor]]] = {shading: [] for shading in shadings}
        for piece in self._ray_pieces(rays):  # one piece's samples at a time
            samples, values = self.sampler.sample(field, piece.origins, piece.directions, perturb)
            # A shading with normals first: the values it collects hold them for the rest.
            for shading in sorted(shadings, key=lambda name: not self._needs_normals(name)):
                collected: list[SampleValues] = []
                out = self.composite_bounded(
                    field, piece, samples, shading, ambient_ratio, values, collected
                )
                if collected:  # else no sample: nothing to reuse
                    values = SampleValues.cat(collected)
                parts[shading].append(out)
        shape = (len(poses), height, width)
        return {shading: _to_images(_joined(parts[shading]), shape) for shading in shadings}

    def render_train(
        self,
        field: Field,
        poses: Poses,
        height: int,
        width: int,
        shading: str = "albedo",
        light_positions: Tensor | None = None,
        ambient_ratio: float = 0.1,
        background: Tensor | None = None,
        perturb: bool = True,
        backprop: str | None = None,
    ) -> TrainingRender:
        """A training render whose backward pass is bounded (see the module docstring).

        ``backprop`` overrides ``cfg.backprop``. The caller takes ``images()``, computes its SDS
        loss on them, and calls ``backward(loss, lambdas)``.
        """
        _check_shading(shading)
        mode = backprop or self.cfg.backprop
        if mode not in BACKPROP_MODES:
            raise DreamtextError(f"backprop must be one of {', '.join(BACKPROP_MODES)}")
        rays = self.camera_rays(poses, height, width, light_positions, background)
        samples, values = self.sampler.sample(field, rays.origins, rays.directions, perturb)
        per_sample = self._queries_per_sample(field, shading)
        if mode == "auto":
            too_big = len(samples) * per_sample > self.cfg.grad_chunk_points
            mode = "deferred" if too_big else "direct"
        shape = (len(poses), height, width)
        if mode == "direct":
            out = self.composite(field, rays, samples, shading, ambient_ratio, values)
            return TrainingRender(out, shape, len(samples))
        # The replay re-renders these samples with a graph: what the field gives there now
        # (normals too) becomes its forward values, so it runs the field only in backward.
        collected: list[SampleValues] = []
        out = self.composite_bounded(
            field, rays, samples, shading, ambient_ratio, values, collected
        )
        if values is None:  # the dense sampler: keep what the field gave
            values = SampleValues.cat(collected)
        elif collected[0].normals is not None:
            normals = torch.cat([part.normals for part in collected])
            values = SampleValues(values.sigma, values.albedo, normals)
        replay = _Replay(self, field, rays, samples, values, shading, ambient_ratio, per_sample)
        return TrainingRender(out, shape, len(samples), replay)


def all_finite(tensors: list[Tensor], device: torch.device) -> Tensor:
    """Whether every value of ``tensors`` is free of NaN and ±inf: a 0-dim bool tensor on
    ``device``, not read."""
    # A NaN or ±inf is the least or the greatest value (aminmax propagates NaN): two values a
    # tensor, where torch.isfinite(t) made temporaries of 7 B a value (|t| and three masks),
    # 1.1 GB for a table of 2^24 rows × 16 levels × 4 features: the peak of an Adan run's step.
    tensors = [t for t in tensors if t.numel()]  # aminmax of none is an error
    checks = [torch.isfinite(torch.stack(torch.aminmax(t))).all() for t in tensors]
    return torch.stack(checks).all() if checks else torch.ones((), dtype=torch.bool, device=device)


# The render that checks a field's weights (renders_finite): one camera of the previews' circle
# (polar angle 70°), this many pixels a side.
CHECK_RENDER_PX, CHECK_POLAR = 8, 70.0


def renders_finite(
    field: Field, renderer: VolumeRenderer, radius: float, fovy: float, device: torch.device
) -> bool:
    """Whether ``field``'s parameters are free of NaN and ±inf and a :data:`CHECK_RENDER_PX`²
    render of it (one camera at ``radius`` with vertical field of view ``fovy`` in degrees, polar
    angle :data:`CHECK_POLAR`, no jitter) is free of NaN and ±inf pixels: weights that
    overflowed float32 may stay finite while the MLP's activations overflow and every pixel is
    NaN, and a render of a few rays misses a NaN table entry they do not reach. One host read."""
    poses = orbit_poses(1, polar=CHECK_POLAR, radius=radius, fovy=fovy).to(device)
    side = CHECK_RENDER_PX
    with torch.no_grad():
        rgb = renderer.render(field, poses, side, side, perturb=False)["rgb"]
        return bool(all_finite([*field.parameters(), rgb], device))


def _joined(parts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """The per-ray outputs (:data:`RAY_OUTPUTS`) of consecutive pieces of rays, joined."""
    if len(parts) == 1:
        return parts[0]
    return {key: torch.cat([part[key] for part in parts]) for key in RAY_OUTPUTS}


def in_pieces(
    fn: Callable[..., Tensor | tuple[Tensor, ...]], size: int, *inputs: Tensor
) -> tuple[Tensor, ...]:
    """``fn`` (a tensor or a tuple of tensors out) on consecutive pieces of at most ``size``
    rows of ``inputs``, its outputs joined."""
    outputs = []
    for piece in zip(*(t.split(size) for t in inputs), strict=True):
        raise_if_stop_in_step()
        outputs.append(fn(*piece))
    outputs = [out if isinstance(out, tuple) else (out,) for out in outputs]
    return tuple(torch.cat(parts) for parts in zip(*outputs, strict=True))


def query_field(field: Field, x: Tensor, with_normals: bool) -> tuple[Tensor, ...]:
    """``(σ [S], albedo [S, 3])`` of ``field`` at ``x [S, 3]``, and ``normals [S, 3]`` (float32)
    when ``with_normals``: from ``field.forward_with_normals`` where the field's
    ``joint_normals`` says one pass gives all three, else ``field(x)`` then
    ``field.normals(x, σ)``."""
    if with_normals and getattr(field, "joint_normals", False):
        sigma, albedo, normals = field.forward_with_normals(x)
        return sigma, albedo, normals.float()
    sigma, albedo = field(x)
    if not with_normals:
        return sigma, albedo
    return sigma, albedo, field.normals(x, sigma).float()


class _ReplayField(torch.autograd.Function):
    """Field outputs computed earlier without gradients, whose backward runs the field again.

    Forward returns ``values`` (``σ, albedo`` and optionally ``normals``) as given, with no field
    evaluation. Backward runs the field again at the saved points, ``piece`` points at a time,
    and back-propagates the incoming gradients through each piece into the field's parameters
    (accumulated in their ``.grad``, as ``loss.backward()`` does). Normals that get a gradient
    are replayed first, from the saved ``σ(x)`` as a leaf (forward differences reuse it), and
    their gradient with respect to it is added to σ's before σ and albedo are replayed: one
    piece's graph at a time. A field with ``joint_normals`` (analytic normals) replays all three
    from one pass instead. ``anchor`` is one of the field's parameters: it makes the outputs part
    of the graph; its own returned gradient is ``None`` because the pieces put theirs in place.
    """

    @staticmethod
    def forward(ctx, anchor, x, field, piece, *values):
        ctx.field, ctx.piece = field, piece
        # σ(x) too when there are normals: they are replayed from it.
        ctx.save_for_backward(*((x, values[0]) if len(values) == 3 else (x,)))
        return tuple(value.clone() for value in values)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        x, *sigma = ctx.saved_tensors
        field = ctx.field
        grad_normals = grads[2] if len(grads) == 3 else None
        joint = grad_normals is not None and getattr(field, "joint_normals", False)
        with torch.enable_grad():
            for start in range(0, x.shape[0], ctx.piece):
                raise_if_stop_in_step()
                piece = slice(start, start + ctx.piece)
                wanted = [None if grad is None else grad[piece] for grad in grads]
                if grad_normals is not None and not joint:
                    centre = sigma[0][piece].detach().requires_grad_(True)
                    normals = field.normals(x[piece], centre).float()
                    torch.autograd.backward(normals, grad_normals[piece])
                    if centre.grad is not None:
                        wanted[0] = centre.grad if wanted[0] is None else wanted[0] + centre.grad
                outputs = query_field(field, x[piece], joint)
                pairs = [
                    (out.float(), grad)
                    for out, grad in zip(outputs, wanted, strict=False)
                    if grad is not None
                ]
                if pairs:
                    torch.autograd.backward(*zip(*pairs, strict=True))
        return (None,) * (4 + len(grads))


def trainable_anchor(field: Field) -> Tensor | None:
    """One of the field's trainable parameters (``None`` if it has none): the input that puts a
    replay's outputs in the graph (see :class:`_ReplayField`)."""
    parameters = field.parameters() if isinstance(field, nn.Module) else ()
    return next((p for p in parameters if p.requires_grad), None)


def replay_field(
    field: Field, x: Tensor, values: SampleValues, piece: int, with_normals: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """``values`` (σ, albedo and, ``with_normals``, normals) as differentiable outputs of
    ``field`` at ``x`` (see :class:`_ReplayField`); normals ``None`` without them."""
    outputs = (values.sigma, values.albedo) + ((values.normals,) if with_normals else ())
    anchor = trainable_anchor(field)
    if anchor is not None:
        outputs = _ReplayField.apply(anchor, x, field, piece, *outputs)
    return outputs[0], outputs[1], outputs[2] if with_normals else None


@dataclass
class _Replay:
    """What a deferred training render needs to re-render its rays with a graph."""

    renderer: VolumeRenderer
    field: Field
    rays: RayBundle
    samples: RaySamples
    values: SampleValues | None
    shading: str
    ambient_ratio: float
    per_sample: int

    def backward(self, grad_rgb: Tensor, lambdas: dict[str, float], loss_scale: float) -> int:
        """Re-render ray chunks with a graph and back-propagate
        ``Σ_r ⟨∂L/∂rgb_r, rgb_r⟩ + s Σ_name λ_name Σ_{r ∈ chunk} ℓ_name(r) / N`` per chunk, whose
        parameter gradients sum to those of the one-pass loss (``∂L/∂rgb`` already carries the
        loss scale ``s``). Returns the number of chunks."""
        renderer, samples = self.renderer, self.samples
        n = len(self.rays)
        chunks = renderer.sample_chunks(samples, self.per_sample, renderer.cfg.grad_chunk_points)
        for chunk, part, lo, hi in chunks:
            raise_if_stop_in_step()
            out = renderer.composite(
                self.field,
                self.rays[chunk.start : chunk.stop],
                part,
                self.shading,
                self.ambient_ratio,
                self.values.slice(lo, hi) if self.values is not None else None,
            )
            loss = (out["rgb"] * grad_rgb[chunk.start : chunk.stop]).sum()
            regs = weighted_sum(regularisers(out, num_rays=n), lambdas)
            (loss + loss_scale * regs).backward()
        return len(chunks)


class TrainingRender:
    """The result of :meth:`VolumeRenderer.render_train`.

    ``outputs``: image-shaped renders (as :meth:`VolumeRenderer.render` returns) and the
    regulariser scalars ``loss_entropy``, ``loss_opacity``, ``loss_orientation``. ``deferred``
    says whether the graph is built later, in chunks, by :meth:`backward`; ``num_samples`` is the
    number of samples the field is evaluated at with gradients.
    """

    def __init__(
        self,
        outputs: dict[str, Tensor],
        shape: tuple[int, int, int],
        num_samples: int,
        replay: _Replay | None = None,
    ) -> None:
        outputs.update(regularisers(outputs))
        self.outputs = _to_images(outputs, shape)
        self.num_samples = num_samples
        self.replay = replay
        self._images: Tensor | None = None
        self.chunks = 1

    @property
    def deferred(self) -> bool:
        return self.replay is not None

    def images(self) -> Tensor:
        """The renders as ``[B, 3, H, W]``: carrying the graph (direct) or a leaf that collects
        the gradient the caller's loss puts on the image (deferred)."""
        if self._images is None:
            images = self.outputs["rgb"].permute(0, 3, 1, 2)
            if self.deferred:
                images = images.detach().requires_grad_(True)
            self._images = images
        return self._images

    def backward(self, loss: Tensor, lambdas: dict[str, float], loss_scale: float = 1.0) -> Tensor:
        """Back-propagate ``s (loss + Σ_name λ_name loss_name)`` into the field.

        ``loss`` is the caller's loss on :meth:`images` (the SDS loss); ``lambdas`` maps a
        regulariser name (``entropy``, ``opacity``, ``orientation``) to its weight; ``s`` is a
        loss scale (fp16 training: the gradients are unscaled before the optimiser step). Returns
        the unscaled total loss (detached).
        """
        regs = weighted_sum(self.outputs, lambdas)
        if not self.deferred:
            total = loss + regs
            (total * loss_scale).backward()
            return total.detach()
        images = self.images()
        (loss * loss_scale).backward()
        grad = images.grad if images.grad is not None else torch.zeros_like(images)
        grad_rgb = grad.permute(0, 2, 3, 1).reshape(-1, 3)
        self.chunks = self.replay.backward(grad_rgb, lambdas, loss_scale)
        return (loss + regs).detach()


def _to_images(out: dict[str, Tensor], shape: tuple[int, int, int]) -> dict[str, Tensor]:
    """Per-ray outputs ``[B·H·W, …]`` → images ``[B, H, W, …]`` (scalars pass through)."""
    images = dict(out)
    for key in RAY_OUTPUTS:
        if key in images:
            images[key] = images[key].reshape(*shape, *images[key].shape[1:])
    return images


__all__ = [
    "BACKPROP_MODES",
    "SHADINGS",
    "OccupancyGrid",
    "RayBundle",
    "RenderConfig",
    "TrainingRender",
    "VolumeRenderer",
    "near_far_from_bound",
    "sample_pdf",
    "shade",
]
