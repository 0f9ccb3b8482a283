"""Fields with known answers, for testing mesh extraction and export without training anything.

``SphereField`` follows the field contract of ARCHITECTURE.md (``bound``, ``density``, ``forward``,
``normals``, ``background``). Its density is a linear ramp across the sphere of radius ``radius``:
``σ(x) = σ_max · clamp((r + w/2 − |x|) / w, 0, 1)``, so the iso-surface ``σ = σ_max / 2`` is exactly
the sphere ``|x| = r``, and marching cubes interpolates a linear profile without bias.

``SolidField`` (``noisy_ball``, ``hollow_shell``, ``noisy_torus``) is opaque from its surface on,
with a noisy or empty inside that no ray sees: the renders show the solid, of known volume, and a
single density iso-level would cut inner shells out of its inside.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from dreamtext.cameras import get_rays

ALBEDO = (0.8, 0.3, 0.2)


def constant_albedo(colour: tuple[float, float, float]) -> Callable[[Tensor], Tensor]:
    def albedo(x: Tensor) -> Tensor:
        return torch.tensor(colour, dtype=x.dtype, device=x.device).expand(len(x), 3)

    return albedo


def direction_albedo(x: Tensor) -> Tensor:
    """A colour that differs in every direction, ``0.5 + 0.4 x / |x|``, to catch UV mix-ups."""
    return 0.5 + 0.4 * torch.nn.functional.normalize(x, dim=-1)


class SphereField(torch.nn.Module):
    def __init__(
        self,
        radius: float = 0.5,
        sigma_max: float = 100.0,
        width: float = 0.1,
        bound: float = 1.0,
        albedo: Callable[[Tensor], Tensor] | None = None,
        centre: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ) -> None:
        super().__init__()
        self.radius, self.sigma_max, self.width, self.bound = radius, sigma_max, width, bound
        self.centre = torch.tensor(centre)
        self.albedo = albedo or constant_albedo(ALBEDO)

    def density(self, x: Tensor) -> Tensor:
        ramp = (self.radius + self.width / 2 - (x - self.centre).norm(dim=-1)) / self.width
        return self.sigma_max * ramp.clamp(0.0, 1.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.density(x), self.albedo(x)

    def normals(self, x: Tensor) -> Tensor:
        return torch.nn.functional.normalize(x - self.centre, dim=-1)

    def background(self, dirs: Tensor) -> Tensor:
        return torch.ones_like(dirs)


class EmptyField(SphereField):
    """No density anywhere."""

    def density(self, x: Tensor) -> Tensor:
        return torch.zeros(len(x), dtype=x.dtype, device=x.device)


class SphereTracer:
    """A tiny stand-in for ``VolumeRenderer.render``: exact ray–sphere hits, albedo shading.

    It renders ``SphereField``s only, so the export tests do not depend on the real renderer.
    """

    def __init__(self) -> None:
        self.calls: list[int] = []

    def render(self, field, poses, height, width, shading="albedo", background=None, **_) -> dict:
        self.calls.append(len(poses))
        rays_o, rays_d = get_rays(poses.c2w, poses.fovy, height, width)
        rays_o = rays_o - field.centre
        b = (rays_o * rays_d).sum(-1)
        c = (rays_o * rays_o).sum(-1) - field.radius**2
        disc = b * b - c
        hit = disc > 0
        depth = torch.where(hit, -b - disc.clamp_min(0).sqrt(), torch.zeros_like(b))
        points = rays_o + depth[..., None] * rays_d
        normals = torch.nn.functional.normalize(points, dim=-1) * hit[..., None]
        albedo = field.albedo((points + field.centre).reshape(-1, 3)).reshape(points.shape)
        bg = torch.ones(3) if background is None else torch.as_tensor(background).float()
        rgb = torch.where(hit[..., None], albedo, bg.expand_as(albedo))
        return {"rgb": rgb, "opacity": hit.float(), "depth": depth, "normals": normals}


def white_noise(x: Tensor) -> Tensor:
    """A repeatable value in [0, 1) per point, uncorrelated between neighbouring points."""
    k = torch.tensor([12.9898, 78.233, 37.719], dtype=x.dtype, device=x.device)
    h = torch.sin(x @ k) * 43758.5453
    return h - torch.floor(h)


class SolidField(SphereField):
    """Density ``sigma`` (times white noise in [0, 1) when ``noisy``) inside a solid, 0 outside.

    ``inside(x: [N, 3]) -> bool [N]``; ``volume``: the solid's. With ``σ = 1000`` a ray turns half
    opaque within a thousandth of a unit of entering the solid, so the renders see the solid's
    outer surface, whatever the density inside: a noisy core, or a cavity.
    """

    def __init__(
        self,
        inside: Callable[[Tensor], Tensor],
        volume: float,
        sigma: float = 1000.0,
        noisy: bool = True,
    ) -> None:
        super().__init__()
        self.inside, self.volume, self.sigma, self.noisy = inside, volume, sigma, noisy

    def density(self, x: Tensor) -> Tensor:
        sigma = self.sigma * self.inside(x).to(x.dtype)
        return sigma * white_noise(x) if self.noisy else sigma


def noisy_ball(radius: float = 0.5) -> SolidField:
    return SolidField(lambda x: x.norm(dim=-1) <= radius, 4 / 3 * math.pi * radius**3)


def hollow_shell(radius: float = 0.5, cavity: float = 0.35) -> SolidField:
    """A ball with an empty spherical cavity: seen from outside, the whole ball."""

    def inside(x: Tensor) -> Tensor:
        r = x.norm(dim=-1)
        return (r <= radius) & (r >= cavity)

    return SolidField(inside, 4 / 3 * math.pi * radius**3, noisy=False)


def noisy_torus(major: float = 0.4, minor: float = 0.15) -> SolidField:
    """A ring about y; its hole is seen from above and below, so it stays open."""

    def inside(x: Tensor) -> Tensor:
        rho = x[:, [0, 2]].norm(dim=-1)
        return (rho - major) ** 2 + x[:, 1] ** 2 <= minor**2

    return SolidField(inside, 2 * math.pi**2 * major * minor**2)
