"""Camera values the other camera tests leave open, each derived by hand."""

import math

import torch

from dreamtext.cameras import CameraRange, get_rays, orbit_poses, sample_poses


def test_a_wide_image_spreads_its_columns_by_the_focal_of_its_height():
    """fovy 90° on a 1-pixel-high image: f = H / (2 tan 45°) = 0.5 px. The camera at azimuth 0
    (on +z) has the identity rotation, so the ray through column 2 of 3 is camera-space
    ((2.5 − 3/2) / 0.5, 0, −1) = (2, 0, −1), normalised: x is measured from the width's centre,
    in the height's focal."""
    poses = orbit_poses(1, polar=90.0, radius=2.0, fovy=90.0)
    _, rays_d = get_rays(poses.c2w, poses.fovy, 1, 3)
    expected = torch.tensor([2.0, 0.0, -1.0]) / math.sqrt(5.0)
    assert torch.allclose(rays_d[0, 0, 2], expected, atol=1e-6)
    assert torch.allclose(rays_d[0, 0, 1], torch.tensor([0.0, 0.0, -1.0]), atol=1e-6)


def test_an_orbit_past_a_full_turn_records_azimuths_in_0_to_360():
    """start 270°, two cameras 180° apart: 270° and 450° = 90° (Poses: azimuth ∈ [0, 360))."""
    poses = orbit_poses(2, start=270.0)
    assert torch.allclose(poses.azimuth, torch.tensor([270.0, 90.0]), atol=1e-4)


def test_jittered_cameras_look_past_the_origin_and_unjittered_ones_at_it():
    """A jittered look-at point moves each camera's line of sight off the origin; without jitter
    the line passes through it: the distance from the origin to the line is |eye × forward|."""

    def miss_distance(jitter: float) -> torch.Tensor:
        poses = sample_poses(256, CameraRange(jitter=jitter), torch.Generator().manual_seed(0))
        forward = -poses.c2w[:, :3, 2]
        return torch.linalg.cross(poses.eye, forward, dim=-1).norm(dim=-1)

    assert float(miss_distance(0.0).max()) < 1e-5
    assert float(miss_distance(0.1).mean()) > 0.01


def test_the_look_at_point_is_jittered_by_half_the_eyes_jitter():
    """CameraRange: the look-at point moves by N(0, (jitter/2)²) per axis. Cameras 100 units
    away (the eye's own jitter turns the line of sight by ~jitter/100, negligible) see along a
    line that misses the origin by the look-at point's offset across it: two of its three axes,
    so E[miss²] = 2 (jitter/2)² = jitter² / 2 (0.02 for jitter 0.2; a full-jitter look-at point
    gives 0.08). 4096 cameras estimate it within a few percent."""
    jitter = 0.2
    cameras = CameraRange(radius_range=(100.0, 100.0), jitter=jitter)
    poses = sample_poses(4096, cameras, torch.Generator().manual_seed(0))
    forward = -poses.c2w[:, :3, 2]
    miss = torch.linalg.cross(poses.eye, forward, dim=-1).norm(dim=-1)
    assert abs(float(miss.square().mean()) / (jitter**2 / 2) - 1.0) < 0.1


def test_an_orbits_default_field_of_view_is_the_reference_evaluation_cameras():
    """fovy 55°: the thesis's base code (stable-dreamfusion e496e35, ch. 6.1.2), nerf/provider.py,
    renders its evaluation circle with ``# fixed focal`` ``fov = (self.opt.fovy_range[1] +
    self.opt.fovy_range[0]) / 2`` of ``--fovy_range`` ``default=[40, 70]``, the training range
    dreamtext keeps too (CameraRange.fovy_range)."""
    assert CameraRange().fovy_range == (40.0, 70.0)
    assert orbit_poses(3).fovy.tolist() == [sum(CameraRange().fovy_range) / 2] * 3 == [55.0] * 3
