"""Cameras: the thesis's pose ranges (ch. 6.1.5), view labels (ch. 6.1.7), pinhole rays."""

import math

import pytest
import torch

from dreamtext.cameras import (
    VIEW_LABELS,
    CameraRange,
    ViewThresholds,
    angles_from_position,
    box_outside_ranges,
    get_rays,
    look_at,
    orbit_poses,
    position_from_angles,
    sample_poses,
    view_of,
    with_view,
)


@pytest.mark.parametrize(
    ("polar", "azimuth", "label"),
    [
        (0.0, 0.0, "overhead"),
        (29.99, 100.0, "overhead"),  # overhead overrides side
        (29.99, 10.0, "overhead"),  # ... and front
        (30.0, 10.0, "front"),  # 30° is no longer overhead
        (90.0, 0.0, "front"),
        (90.0, 59.99, "front"),
        (90.0, 60.0, "side"),
        (90.0, 179.99, "side"),
        (90.0, 180.0, "back"),
        (90.0, 239.99, "back"),
        (90.0, 240.0, "side"),
        (90.0, 359.99, "side"),
        (90.0, 360.0, "front"),  # wraps to 0
        (90.0, -10.0, "side"),  # = 350
        (149.99, 200.0, "back"),
        (150.0, 200.0, "bottom"),  # bottom overrides back
        (180.0, 30.0, "bottom"),
    ],
)
def test_view_labels_at_the_thesis_boundaries(polar, azimuth, label):
    assert view_of(polar, azimuth).label == label


def test_view_suffix_is_appended_to_the_prompt():
    view = view_of(90.0, 200.0)
    assert view.suffix == ", back view"
    assert with_view("a castle", view.label) == "a castle, back view"
    assert "a castle" + view.suffix == with_view("a castle", view.label)


def test_view_thresholds_are_configurable():
    wide_front = ViewThresholds(front_end=90.0)
    assert view_of(90.0, 75.0).label == "side"
    assert view_of(90.0, 75.0, wide_front).label == "front"


@pytest.mark.parametrize(
    ("azimuth", "label"),
    [
        (30.0, "front"),
        (60.0, "right side"),
        (90.0, "right side"),
        (179.9, "right side"),
        (200.0, "back"),
        (240.0, "left side"),
        (300.0, "left side"),
        (359.9, "left side"),
    ],
)
def test_split_sides_name_the_side_the_camera_is_on(azimuth, label):
    split = ViewThresholds(split_sides=True)
    assert view_of(90.0, azimuth, split).label == label
    assert view_of(10.0, azimuth, split).label == "overhead"  # overhead still overrides
    assert set(split.labels) == {"front", "left side", "right side", "back", "overhead", "bottom"}
    assert "side" in ViewThresholds().labels and "left side" not in ViewThresholds().labels


@pytest.mark.parametrize(
    ("polar", "azimuth", "label"),
    [
        (89.99, 30.0, "front"),
        (90.0, 30.0, "front below"),  # from `below` on
        (100.0, 90.0, "right side below"),
        (100.0, 200.0, "back below"),
        (100.0, 300.0, "left side below"),
        (10.0, 30.0, "overhead"),
        (150.0, 30.0, "bottom"),  # bottom still overrides
    ],
)
def test_views_from_below_get_labels_of_their_own(polar, azimuth, label):
    below = ViewThresholds(split_sides=True, below=90.0)
    assert view_of(polar, azimuth, below).label == label
    assert view_of(polar, azimuth, below).suffix == f", {label} view"
    assert (
        view_of(polar, azimuth, ViewThresholds(split_sides=True)).label == label.split(" below")[0]
    )


def test_the_labels_of_views_from_below_are_every_label_view_of_gives():
    for split in (False, True):
        below = ViewThresholds(split_sides=split, below=90.0)
        given = {view_of(p, a, below).label for p in range(0, 181, 5) for a in range(0, 360, 10)}
        assert given == set(below.labels)
        assert below.labels[: len(ViewThresholds(split_sides=split).labels)] == (
            ViewThresholds(split_sides=split).labels
        )
    assert set(ViewThresholds(below=90.0).labels) - set(VIEW_LABELS) == {
        "front below",
        "side below",
        "back below",
    }


def test_spherical_position_convention_and_its_inverse():
    eye = position_from_angles(
        torch.tensor([90.0, 0.0]), torch.tensor([0.0, 0.0]), torch.tensor([2.0, 1.0])
    )
    assert torch.allclose(eye[0], torch.tensor([0.0, 0.0, 2.0]), atol=1e-6)  # φ = 0 is +z
    assert torch.allclose(eye[1], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)  # θ = 0 is +y
    polar = torch.tensor([10.0, 45.0, 100.0, 170.0])
    azimuth = torch.tensor([5.0, 90.0, 200.0, 359.0])
    p, a, r = angles_from_position(position_from_angles(polar, azimuth, torch.full((4,), 1.3)))
    assert torch.allclose(p, polar, atol=1e-4)
    assert torch.allclose(a, azimuth, atol=1e-3)
    assert torch.allclose(r, torch.full((4,), 1.3), atol=1e-6)


def test_sampled_cameras_stay_in_the_thesis_ranges():
    poses = sample_poses(4000, CameraRange(), torch.Generator().manual_seed(0))
    assert poses.radius.min() >= 1.0 - 1e-5 and poses.radius.max() <= 1.5 + 1e-5
    assert poses.fovy.min() >= 40.0 and poses.fovy.max() <= 70.0
    # ... and fill them: 4000 uniform draws come within 1/100 of each end (a range of 44-70°,
    # or 40-63°, stayed inside 40-70° and passed).
    assert poses.fovy.min() < 40.3 and poses.fovy.max() > 69.7
    # Box half: y ≥ 0 (θ ≤ 90°); angle half: up to 30° below the horizon (θ ≤ 120°).
    assert poses.polar.min() >= 0.0 and poses.polar.max() <= 120.0 + 1e-3
    below = (poses.polar > 90.0).float().mean()
    assert 0.1 < below < 0.2  # only the angle half (½ × 30/120 = 12.5 %) goes below the horizon
    assert poses.azimuth.min() >= 0.0 and poses.azimuth.max() < 360.0
    # All four quadrants of azimuth are used.
    quadrant_counts = torch.bincount((poses.azimuth // 90).long(), minlength=4)
    assert quadrant_counts.min() > 800


def test_sampled_cameras_look_at_the_origin():
    poses = sample_poses(64, CameraRange(), torch.Generator().manual_seed(1))
    forward = -poses.c2w[:, :3, 2]
    to_origin = torch.nn.functional.normalize(-poses.eye, dim=-1)
    assert torch.allclose(forward, to_origin, atol=1e-5)
    rotation = poses.c2w[:, :3, :3]
    eye3 = torch.eye(3).expand_as(rotation)
    assert torch.allclose(rotation.transpose(1, 2) @ rotation, eye3, atol=1e-5)


def test_sampling_is_reproducible_with_a_seeded_generator():
    a = sample_poses(8, generator=torch.Generator().manual_seed(3))
    b = sample_poses(8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.c2w, b.c2w)


def test_look_at_keeps_a_valid_basis_straight_overhead():
    c2w = look_at(torch.tensor([[0.0, 2.0, 0.0], [0.0, -2.0, 0.0]]))
    assert torch.isfinite(c2w).all()
    assert torch.allclose(
        -c2w[:, :3, 2], torch.tensor([[0.0, -1.0, 0.0], [0.0, 1.0, 0.0]]), atol=1e-6
    )


def test_centre_ray_points_at_the_origin_and_corner_rays_span_the_fov():
    poses = orbit_poses(1, polar=90.0, radius=2.0, fovy=60.0)
    rays_o, rays_d = get_rays(poses.c2w, poses.fovy, 2, 2)
    assert rays_o.shape == (1, 2, 2, 3) and rays_d.shape == (1, 2, 2, 3)
    centre = rays_d[0].reshape(-1, 3).mean(0)
    assert torch.allclose(
        torch.nn.functional.normalize(centre, dim=0), torch.tensor([0.0, 0.0, -1.0]), atol=1e-5
    )
    # A 1-row image: its single ray row sits at the vertical centre; the top edge of a tall image
    # is fovy/2 above the axis.
    _, tall = get_rays(poses.c2w, poses.fovy, 1001, 1)
    top = tall[0, 0, 0]
    angle = torch.rad2deg(torch.acos(-top[2]))
    assert abs(float(angle) - 30.0) < 0.1
    assert top[1] > 0  # image row 0 is up (+y)


def test_orbit_poses_are_evenly_spaced():
    poses = orbit_poses(6, polar=60.0, radius=1.2)
    assert torch.allclose(poses.azimuth, torch.arange(6) * 60.0, atol=1e-4)
    p, _, r = angles_from_position(poses.eye)
    assert torch.allclose(p, torch.full((6,), 60.0), atol=1e-4)
    assert torch.allclose(r, torch.full((6,), 1.2), atol=1e-5)


def test_orbit_poses_about_a_target_circle_it_and_look_at_it():
    target = torch.tensor([0.1, -0.3, 0.2])
    poses = orbit_poses(4, polar=60.0, radius=1.5, target=(0.1, -0.3, 0.2))
    p, _, r = angles_from_position(poses.eye - target)
    assert torch.allclose(p, torch.full((4,), 60.0), atol=1e-4)
    assert torch.allclose(r, torch.full((4,), 1.5), atol=1e-5)
    forward = -poses.c2w[:, :3, 2]
    to_target = torch.nn.functional.normalize(target - poses.eye, dim=-1)
    assert torch.allclose(forward, to_target, atol=1e-5)


def test_poses_slice_and_move_keep_every_field_together():
    poses = orbit_poses(6, polar=60.0)
    part = poses[2:4].to("cpu")
    assert len(part) == 2
    assert torch.equal(part.azimuth, poses.azimuth[2:4])
    assert torch.equal(part.c2w, poses.c2w[2:4])
    assert torch.equal(part.fovy, poses.fovy[2:4]) and torch.equal(part.radius, poses.radius[2:4])


def test_box_cameras_outside_the_angle_ranges_are_warned_about():
    """Box cameras ignore polar_range and azimuth_range: with the default box_fraction 0.5 and
    azimuth_range [0, 180], a quarter of the cameras were behind it, without a word."""
    behind = CameraRange(azimuth_range=(0.0, 180.0))
    poses = sample_poses(4000, behind, torch.Generator().manual_seed(0))
    assert 0.2 < (poses.azimuth > 180.0).float().mean() < 0.3
    said = box_outside_ranges(behind)
    assert said is not None and "cameras.azimuth_range [0.0, 180.0]" in said
    assert "set cameras.box_fraction to 0" in said and "polar_range" not in said
    above = box_outside_ranges(CameraRange(polar_range=(30.0, 100.0)))
    assert above is not None and "cameras.polar_range [30.0, 100.0]" in above
    assert box_outside_ranges(CameraRange()) is None  # the thesis's ranges hold the box
    assert box_outside_ranges(CameraRange(azimuth_range=(0.0, 180.0), box_fraction=0.0)) is None


# --- formulas on values: each guards a one-character change the tests above let through ---


def test_rays_of_a_camera_on_the_x_axis_use_its_rotation_not_its_transpose():
    """Guards against ``einsum("bhwk,bkc->bhwc")`` (rays rotated by Rᵀ instead of R).

    orbit_poses(1, polar=90, start=90, radius=2): eye = 2 (sin90 sin90, cos90, sin90 cos90) =
    (2, 0, 0). look_at: back = +x, right = (+y) × (+x) = (0, 0, −1), up = back × right = +y.
    A 1 × 2 image at fovy 90: f = H / (2 tan 45°) = 0.5. Pixel (0, 1) looks along camera-space
    ((1.5 − 1)/0.5, −(0.5 − 0.5)/0.5, −1) = (1, 0, −1), i.e. world right − back =
    (−1, 0, −1)/√2; pixel (0, 0) along −right − back = (−1, 0, 1)/√2. Both point towards the
    origin (x component < 0). With Rᵀ they were (1, 0, ±1)/√2: away from the object. The
    project's ray test uses only a camera on +z, whose R is the identity.
    """
    poses = orbit_poses(1, polar=90.0, radius=2.0, fovy=90.0, start=90.0)
    torch.testing.assert_close(poses.eye[0], torch.tensor([2.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    _, rays_d = get_rays(poses.c2w, poses.fovy, 1, 2)
    expected = torch.tensor(
        [[-math.sqrt(0.5), 0.0, math.sqrt(0.5)], [-math.sqrt(0.5), 0.0, -math.sqrt(0.5)]]
    )
    torch.testing.assert_close(rays_d[0, 0], expected, atol=1e-6, rtol=0)


def test_a_camera_straight_below_has_the_basis_its_neighbours_tend_to():
    """Guards against dropping ``world_up *= sign(back_y)``.

    Just off the bottom pole, eye = (0, −1, ε): back ≈ (0, −1, ε), right = (+y) × back ≈ +x,
    up = back × right ≈ (0, ε, 1) → +z. So the camera exactly below (eye (0, −2, 0)) must have
    right = (1, 0, 0), up = (0, 0, 1), back = (0, −1, 0); without the sign its reference is −z
    and the image turns 180° (right = −x, up = −z) compared with its neighbours.
    """
    c2w = look_at(torch.tensor([[0.0, -2.0, 0.0], [0.0, -2.0, 1e-3]]))
    expected = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]]).T
    torch.testing.assert_close(c2w[0, :3, :3], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(c2w[1, :3, :3], expected, atol=1e-3, rtol=0)


def test_each_sampled_camera_has_its_own_radius_across_the_range():
    """Guards against ``eye = direction * radius.mean()``.

    radius ~ U[1, 1.5] per camera: of 4000 cameras, the chance that none is below 1.05 is
    0.9^4000 ≈ 0 (and the same above 1.45); with one shared radius all are ≈ 1.25.
    """
    poses = sample_poses(4000, CameraRange(), torch.Generator().manual_seed(0))
    radius = poses.eye.norm(dim=-1)
    assert float(radius.min()) < 1.05 and float(radius.max()) > 1.45
    assert 0.12 < float(radius.std()) < 0.17  # 0.5 / √12 = 0.144


def test_a_polar_range_that_holds_the_box_gets_no_warning():
    """Guards against ``high < 120`` for ``high < 90`` in box_outside_ranges.

    Box cameras have θ ∈ [0°, 90°]; polar_range (0, 100) holds all of them, so no warning;
    (0, 80) does not (θ ∈ (80°, 90°] is outside), so it warns.
    """
    assert box_outside_ranges(CameraRange(polar_range=(0.0, 100.0))) is None
    assert box_outside_ranges(CameraRange(polar_range=(0.0, 90.0))) is None
    said = box_outside_ranges(CameraRange(polar_range=(0.0, 80.0)))
    assert said is not None and "cameras.polar_range [0.0, 80.0]" in said
