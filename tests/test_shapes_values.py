"""Ray casts and the dataset's camera grid of dreamtext.shapes, against values derived by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dreamtext import shapes
from dreamtext.cameras import CameraRange, ViewThresholds, view_of


def test_a_ray_up_the_cylinders_axis_hits_its_bottom_cap_first() -> None:
    # From y = −2 straight up: the bottom cap y = −0.4 at t = 1.6 (the top one is at 2.4).
    t = shapes.cast("cylinder", torch.tensor([[0.0, -2.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]]))
    torch.testing.assert_close(t, torch.tensor([1.6]))


def test_a_surface_behind_the_ray_origin_is_not_hit() -> None:
    # From the sphere's top (y = 0.5) and from outside it (y = 1), looking up (+y): the sphere is
    # all behind, so both miss (inf); looking down from y = 1 hits it at t = 0.5.
    origins = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.5 + 1e-4, 0.0]])
    directions = torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0], [0.0, 1.0, 0.0]])
    t = shapes.cast("sphere", origins, directions)
    assert math.isinf(t[0]) and math.isinf(t[2])
    torch.testing.assert_close(t[1], torch.tensor(0.5))


def test_a_full_turn_of_azimuths_has_36_cameras_ten_degrees_apart_without_repeating_its_end():
    # azimuth_range [0, 360]: 0, 10, …, 350 (360 is 0 again), at each polar angle 60, 70, 80.
    cameras = CameraRange(polar_range=(60.0, 80.0), azimuth_range=(0.0, 360.0), box_fraction=0.0)
    poses = shapes.dataset_poses(cameras)
    pairs = list(zip(poses.polar.tolist(), poses.azimuth.tolist(), strict=True))
    assert len(pairs) == len(set(pairs)) == 3 * 36
    assert sorted({round(a, 4) for a in poses.azimuth.tolist()}) == [10.0 * i for i in range(36)]


def test_dataset_cameras_take_the_middles_of_the_radius_and_field_of_view_ranges():
    # The thesis's radius U[1.0, 1.5] and a field of view U[40°, 50°]: 1.25 and 45°, every
    # camera at that distance from the origin it looks at.
    cameras = CameraRange(
        polar_range=(60.0, 80.0), radius_range=(1.0, 1.5), fovy_range=(40.0, 50.0)
    )
    poses = shapes.dataset_poses(cameras)
    torch.testing.assert_close(poses.radius, torch.full((len(poses),), 1.25))
    torch.testing.assert_close(poses.fovy, torch.full((len(poses),), 45.0))
    torch.testing.assert_close(poses.eye.norm(dim=-1), torch.full((len(poses),), 1.25))


SMALL = CameraRange(polar_range=(60.0, 80.0), azimuth_range=(0.0, 60.0), box_fraction=0.0)


def test_a_cache_file_whose_arrays_disagree_in_length_is_rendered_again(tmp_path, caplog):
    # Every array holds one entry per image; a file whose captions are one short (of another
    # writer, or damaged) is not the dataset: it is rendered again and written over.
    first = shapes.load_dataset(SMALL, 8, 8, directory=tmp_path)
    (path,) = tmp_path.glob("shapes-*.npz")
    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["captions"] = arrays["captions"][:-1]
    np.savez(path.with_suffix(""), **arrays)
    again = shapes.load_dataset(SMALL, 8, 8, directory=tmp_path)
    assert again.captions == first.captions and torch.equal(again.images, first.images)
    assert "damaged" in caplog.text
    assert shapes._read_cache(path) is not None  # written over, whole


def test_the_cache_file_is_readable_by_everyone_like_any_cache_file(tmp_path):
    # mkstemp makes its file 0600; the cache is shared (another user's run, a shared
    # DREAMTEXT_CACHE) and written 0644.
    shapes.load_dataset(SMALL, 8, 8, directory=tmp_path)
    (path,) = tmp_path.glob("shapes-*.npz")
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    "views",
    [
        ViewThresholds(front_start=1.0, front_end=9.0),
        ViewThresholds(back_start=181.0, back_end=183.5),
        ViewThresholds(split_sides=True, front_end=62.0, back_start=68.0),
        ViewThresholds(below=115.0, bottom=119.0),
        ViewThresholds(below=101.0, bottom=108.0),
        ViewThresholds(front_start=37.3, front_end=37.4),  # float32 rounds 37.3 below itself
    ],
)
def test_every_view_band_a_training_camera_can_be_in_has_dataset_images(views):
    """A band between two of the dataset's 10° grid angles had no image, and a run stopped at
    its first camera there. Swept every 0.5° over the default camera range (polar 0°-120°, any
    azimuth), as float32 as the dataset's own angles: every label met is one the dataset has."""
    poses = shapes.dataset_poses(CameraRange(), views)
    has = {
        view_of(p, a, views).label
        for p, a in zip(poses.polar.tolist(), poses.azimuth.tolist(), strict=True)
    }
    sweep = np.arange(0.0, 360.0, 0.5, dtype=np.float32)
    met = {
        view_of(float(p), float(a), views).label
        for p in np.arange(0.0, 120.5, 0.5, dtype=np.float32)
        for a in sweep
    }
    # A front band no 0.5° step meets (the last case): a camera just inside it.
    met.add(view_of(60.0, float(np.float32(views.front_start + 0.05)), views).label)
    assert met <= has, met - has


def test_the_default_view_bands_add_no_angle_to_the_dataset_grid():
    """Every default band holds grid angles: the dataset (and its cache's key) is the one from
    before bands narrower than the grid were covered."""
    for views in (ViewThresholds(), ViewThresholds(split_sides=True), ViewThresholds(below=100.0)):
        assert shapes.band_angles(CameraRange(), views) == ([], [])
    assert len(shapes.dataset_poses(CameraRange())) == 13 * 36
