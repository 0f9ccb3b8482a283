"""Ray casts and the dataset's camera grid of dreamtext.shapes, against values derived by hand."""

from __future__ import annotations

import math

import numpy as np
import torch

from dreamtext import shapes
from dreamtext.cameras import CameraRange


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
