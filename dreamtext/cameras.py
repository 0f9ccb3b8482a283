"""Cameras: pose sampling (thesis ch. 6.1.5), view labels (ch. 6.1.7) and pinhole rays.

Conventions used everywhere in dreamtext:

* World frame: +y up, the object centred at the origin.
* A camera position in spherical coordinates (radius r, polar angle θ from +y, azimuth φ) is
  ``p = r · (sin θ sin φ, cos θ, sin θ cos φ)``: φ = 0 is the +z axis, θ = 0 straight overhead.
* Camera-to-world matrices follow OpenGL: the camera looks down its local −z, +y is up, +x right.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from dreamtext.devices import to_device

VIEW_LABELS: tuple[str, ...] = ("front", "side", "back", "overhead", "bottom")
# The labels the polar angle alone gives, whatever the azimuth (no " below" form).
POLAR_LABELS: tuple[str, ...] = ("overhead", "bottom")
# With ``ViewThresholds.split_sides`` the two side ranges get their own labels.
SPLIT_VIEW_LABELS: tuple[str, ...] = (
    "front",
    "right side",
    "back",
    "left side",
    "overhead",
    "bottom",
)


@dataclass
class ViewThresholds:
    """Angle ranges (degrees) of the view labels, ch. 6.1.7.

    Ranges are half-open ``[lo, hi)``: overhead is θ < ``overhead``, bottom θ ≥ ``bottom``;
    front is φ ∈ [front_start, front_end), back φ ∈ [back_start, back_end); everything else is side.
    Overhead and bottom override the azimuth labels.

    The thesis's single "side" label covers both sides of the object, so a side view never says
    which one it sees. ``split_sides`` names them: φ ∈ [front_end, back_start) is "right side"
    (the camera on +x at φ = 90°, to the right of a viewer facing the front) and the rest
    "left side".

    ``below`` (off: ``None``, as in the thesis): cameras at θ ≥ ``below`` (and under ``bottom``)
    get labels of their own, the azimuth label with " below" ("front below", "left side below"),
    so a view from under the horizon has its own prompt (and, with the built-in prior, its own
    image set) instead of sharing the one of the views from above. Perp-Neg's default weights
    give them their own: a side or back view from below pushes away from "front below".
    """

    overhead: float = 30.0
    bottom: float = 150.0
    front_start: float = 0.0
    front_end: float = 60.0
    back_start: float = 180.0
    back_end: float = 240.0
    split_sides: bool = False
    below: float | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        """Every label :func:`view_of` can give with these thresholds."""
        labels = SPLIT_VIEW_LABELS if self.split_sides else VIEW_LABELS
        if self.below is None:
            return labels
        azimuthal = [label for label in labels if label not in POLAR_LABELS]
        return (*labels, *(f"{label} below" for label in azimuthal))


def every_view_label() -> tuple[str, ...]:
    """Every label any :class:`ViewThresholds` can give: the thesis's, the split sides', and the
    " below" form of each azimuth label."""
    labels = tuple(dict.fromkeys((*VIEW_LABELS, *SPLIT_VIEW_LABELS)))
    return (*labels, *(f"{label} below" for label in labels if label not in POLAR_LABELS))


@dataclass
class CameraRange:
    """Where training cameras may be, ch. 6.1.5.

    ``box_fraction`` of the poses come from a uniform box ``x, z ∈ [−1, 1], y ∈ [0, 1]`` normalised
    to unit length; the rest from angles with θ ∈ ``polar_range`` (0–120°: 90° above the horizon to
    30° below) and φ ∈ ``azimuth_range``. ``jitter`` (world units) perturbs the eye by
    ``N(0, jitter²)`` per axis and the look-at point by half that, ``N(0, (jitter/2)²)``: the
    view stays roughly on the object. The view's angles and its label are those of the
    perturbed eye.
    """

    radius_range: tuple[float, float] = (1.0, 1.5)
    fovy_range: tuple[float, float] = (40.0, 70.0)
    polar_range: tuple[float, float] = (0.0, 120.0)
    azimuth_range: tuple[float, float] = (0.0, 360.0)
    box_fraction: float = 0.5
    jitter: float = 0.0


# The polar angles of the cameras :func:`sample_poses` draws from the box (its y ∈ [0, 1]: the
# upper half); their azimuth is any.
BOX_POLAR_RANGE = (0.0, 90.0)


def box_outside_ranges(cameras: CameraRange) -> str | None:
    """The warning for cameras drawn from the box (``box_fraction > 0``, the thesis's sampler)
    that the angle ranges do not hold: box cameras have polar angles in [0°, 90°] and any
    azimuth, whatever ``polar_range`` and ``azimuth_range`` say (with the default 0.5 and
    ``azimuth_range [0, 180]``, a quarter of the cameras are behind it); ``None`` where the
    ranges hold the box, or there is none."""
    if cameras.box_fraction <= 0:
        return None
    low, high = cameras.polar_range
    a, b = cameras.azimuth_range
    outside = []
    if low > BOX_POLAR_RANGE[0] or high < BOX_POLAR_RANGE[1]:
        outside.append(f"cameras.polar_range {[low, high]}")
    if b - a < 360.0:
        outside.append(f"cameras.azimuth_range {[a, b]}")
    if not outside:
        return None
    return (
        f"dreamtext: warning: cameras.box_fraction {cameras.box_fraction:g} draws that share of "
        "the cameras from the box (polar angle 0-90°, any azimuth), outside "
        f"{' and '.join(outside)}: set cameras.box_fraction to 0 to keep every camera inside "
        "the ranges"
    )


class View(NamedTuple):
    label: str
    suffix: str


@dataclass
class Poses:
    """A batch of cameras. ``c2w: [B, 4, 4]``; angles in degrees, ``azimuth ∈ [0, 360)``."""

    c2w: Tensor
    polar: Tensor
    azimuth: Tensor
    radius: Tensor
    fovy: Tensor

    @property
    def eye(self) -> Tensor:
        """Camera positions ``[B, 3]``."""
        return self.c2w[:, :3, 3]

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def to(self, device: torch.device | str) -> Poses:
        """The cameras on ``device``; from the host to a GPU without waiting for it
        (:func:`~dreamtext.devices.to_device`): cameras are drawn on the host, mid-run."""
        return Poses(*(to_device(t, device) for t in self._tensors()))

    def __getitem__(self, index: slice) -> Poses:
        """Cameras ``index`` (a slice) of the batch."""
        return Poses(*(t[index] for t in self._tensors()))

    def _tensors(self) -> tuple[Tensor, ...]:
        return (self.c2w, self.polar, self.azimuth, self.radius, self.fovy)


def view_of(polar: float, azimuth: float, thresholds: ViewThresholds | None = None) -> View:
    """The view label of a camera at polar angle θ and azimuth φ (degrees), and its prompt suffix.

    This is the only place a pose becomes words: prompts, the built-in prior's captions and the
    logs all call it, so they always agree.
    """
    t = thresholds or ViewThresholds()
    azimuth = azimuth % 360.0
    if polar < t.overhead:
        label = "overhead"
    elif polar >= t.bottom:
        label = "bottom"
    elif t.front_start <= azimuth < t.front_end:
        label = "front"
    elif t.back_start <= azimuth < t.back_end:
        label = "back"
    elif not t.split_sides:
        label = "side"
    elif t.front_end <= azimuth < t.back_start:
        label = "right side"
    else:
        label = "left side"
    if t.below is not None and polar >= t.below and label not in POLAR_LABELS:
        label = f"{label} below"
    return View(label, f", {label} view")


def with_view(prompt: str, label: str) -> str:
    """``"a castle"`` + ``"front"`` → ``"a castle, front view"``."""
    return f"{prompt}, {label} view"


def position_from_angles(polar: Tensor, azimuth: Tensor, radius: Tensor) -> Tensor:
    """``p = r (sin θ sin φ, cos θ, sin θ cos φ)`` for angles in degrees; returns ``[B, 3]``."""
    th, ph = torch.deg2rad(polar), torch.deg2rad(azimuth)
    return (
        torch.stack(
            [torch.sin(th) * torch.sin(ph), torch.cos(th), torch.sin(th) * torch.cos(ph)], dim=-1
        )
        * radius[..., None]
    )


def angles_from_position(eye: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Inverse of :func:`position_from_angles`: ``(polar, azimuth ∈ [0, 360), radius)``, degrees."""
    radius = eye.norm(dim=-1)
    polar = torch.rad2deg(torch.acos((eye[..., 1] / radius.clamp_min(1e-12)).clamp(-1.0, 1.0)))
    azimuth = torch.rad2deg(torch.atan2(eye[..., 0], eye[..., 2])) % 360.0
    return polar, azimuth, radius


def look_at(eye: Tensor, target: Tensor | None = None) -> Tensor:
    """OpenGL camera-to-world matrices ``[B, 4, 4]``: cameras at ``eye [B, 3]`` facing ``target``.

    Columns: right, up, back (= −forward), position. World up is +y; a camera straight above or
    below the target uses +z as its reference instead, so the basis never degenerates.
    """
    if target is None:
        target = torch.zeros_like(eye)
    back = torch.nn.functional.normalize(eye - target, dim=-1)
    world_up = torch.zeros_like(eye)
    world_up[..., 1] = 1.0
    degenerate = back[..., 1].abs() > 1.0 - 1e-6
    world_up[degenerate] = torch.tensor([0.0, 0.0, -1.0], dtype=eye.dtype, device=eye.device)
    world_up[degenerate, :] *= torch.sign(back[degenerate, 1:2])
    right = torch.nn.functional.normalize(torch.cross(world_up, back, dim=-1), dim=-1)
    up = torch.cross(back, right, dim=-1)
    c2w = torch.eye(4, dtype=eye.dtype, device=eye.device).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, up, back, eye
    return c2w


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator | None) -> Tensor:
    return torch.rand(n, generator=generator) * (hi - lo) + lo


def sample_poses(
    n: int, cameras: CameraRange | None = None, generator: torch.Generator | None = None
) -> Poses:
    """Sample ``n`` training cameras looking at the origin, as in ch. 6.1.5.

    radius ~ U[r0, r1]; for a ``box_fraction`` of the batch the direction is ``normalise(u)`` with
    ``u_x, u_z ~ U[−1, 1], u_y ~ U[0, 1]``; for the rest θ ~ U[polar_range], φ ~ U[azimuth_range].
    """
    c = cameras or CameraRange()
    radius = _uniform(n, *c.radius_range, generator)
    fovy = _uniform(n, *c.fovy_range, generator)
    from_box = torch.rand(n, generator=generator) < c.box_fraction
    box = torch.rand(n, 3, generator=generator) * 2.0 - 1.0
    box[:, 1] = (box[:, 1] + 1.0) / 2.0
    box_dir = torch.nn.functional.normalize(box, dim=-1)
    polar = _uniform(n, *c.polar_range, generator)
    azimuth = _uniform(n, *c.azimuth_range, generator)
    angle_dir = position_from_angles(polar, azimuth, torch.ones(n))
    direction = torch.where(from_box[:, None], box_dir, angle_dir)
    eye = direction * radius[:, None]
    target = torch.zeros_like(eye)
    if c.jitter > 0:
        eye = eye + torch.randn(n, 3, generator=generator) * c.jitter
        target = target + torch.randn(n, 3, generator=generator) * c.jitter * 0.5
    polar, azimuth, radius = angles_from_position(eye)
    return Poses(look_at(eye, target), polar, azimuth, radius, fovy)


def orbit_poses(
    n: int,
    polar: float = 75.0,
    radius: float = 1.3,
    fovy: float = 55.0,
    start: float = 0.0,
    target: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> Poses:
    """``n`` cameras evenly spaced in azimuth on one circle (previews, turntables, evaluation),
    looking at ``target``: ``eye = target + p(polar, azimuth, radius)`` (angles and radius are
    taken about the target)."""
    azimuth = start + torch.arange(n, dtype=torch.float32) * (360.0 / n)
    pol, rad = torch.full((n,), float(polar)), torch.full((n,), float(radius))
    centre = torch.tensor(target, dtype=torch.float32).expand(n, 3)
    eye = centre + position_from_angles(pol, azimuth, rad)
    return Poses(look_at(eye, centre), pol, azimuth % 360.0, rad, torch.full((n,), float(fovy)))


def focal_from_fovy(fovy_deg: Tensor | float, height: int) -> Tensor:
    """Pinhole focal length in pixels: ``f = H / (2 tan(fovy / 2))``."""
    fovy = torch.as_tensor(fovy_deg, dtype=torch.float32)
    return height / (2.0 * torch.tan(torch.deg2rad(fovy) / 2.0))


def get_rays(c2w: Tensor, fovy: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """World-space rays through pixel centres of a pinhole camera.

    Returns ``rays_o, rays_d: [B, H, W, 3]`` with unit ``rays_d``. Pixel (i, j) looks along
    camera-space ``((j + ½ − W/2) / f, −(i + ½ − H/2) / f, −1)``.
    """
    device, dtype = c2w.device, c2w.dtype
    focal = focal_from_fovy(fovy.to(torch.float32), height).to(device=device, dtype=dtype)
    i, j = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype) + 0.5,
        torch.arange(width, device=device, dtype=dtype) + 0.5,
        indexing="ij",
    )
    f = focal[:, None, None]
    dirs = torch.stack(
        [(j - width / 2.0) / f, -(i - height / 2.0) / f, -torch.ones_like(j).expand_as(f * j)], -1
    )
    rays_d = torch.einsum("bhwk,bck->bhwc", dirs, c2w[:, :3, :3])
    rays_d = torch.nn.functional.normalize(rays_d, dim=-1)
    rays_o = c2w[:, None, None, :3, 3].expand_as(rays_d)
    return rays_o, rays_d


__all__ = [
    "BOX_POLAR_RANGE",
    "POLAR_LABELS",
    "SPLIT_VIEW_LABELS",
    "VIEW_LABELS",
    "CameraRange",
    "Poses",
    "View",
    "ViewThresholds",
    "angles_from_position",
    "box_outside_ranges",
    "every_view_label",
    "focal_from_fovy",
    "get_rays",
    "look_at",
    "orbit_poses",
    "position_from_angles",
    "sample_poses",
    "view_of",
    "with_view",
]
