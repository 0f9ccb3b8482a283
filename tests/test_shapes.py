"""The built-in prior's primitives: occupancy, ray casting, rendering and the cached dataset."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
import torch

from dreamtext import shapes
from dreamtext.cameras import (
    CameraRange,
    ViewThresholds,
    get_rays,
    orbit_poses,
    view_of,
    with_view,
)
from dreamtext.errors import DreamtextError

INSIDE_CASES = {
    "cube": ([(0.39, -0.39, 0.39), (0.0, 0.0, 0.0)], [(0.41, 0.0, 0.0), (0.0, 0.0, -0.45)]),
    "sphere": ([(0.49, 0.0, 0.0), (0.28, 0.28, 0.28)], [(0.36, 0.36, 0.0), (0.0, -0.51, 0.0)]),
    "cylinder": ([(0.34, 0.39, 0.0), (0.0, -0.39, 0.2)], [(0.0, 0.41, 0.0), (0.3, 0.0, 0.2)]),
    "cone": ([(0.0, 0.44, 0.0), (0.44, -0.44, 0.0)], [(0.1, 0.3, 0.0), (0.0, -0.46, 0.0)]),
    "torus": ([(0.4, 0.0, 0.0), (0.0, 0.14, -0.4)], [(0.0, 0.0, 0.0), (0.56, 0.0, 0.0)]),
}


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_inside_follows_the_issue_dimensions(shape):
    points_in, points_out = INSIDE_CASES[shape]
    assert shapes.inside(shape, torch.tensor(points_in)).all()
    assert not shapes.inside(shape, torch.tensor(points_out)).any()


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_y_extent_is_the_lowest_and_highest_point_inside(shape):
    low, high = shapes.y_extent(shape)
    axis = torch.linspace(-0.6, 0.6, 121)
    points = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    ys = points[shapes.inside(shape, points), 1]
    assert float(ys.min()) == pytest.approx(low, abs=0.011)
    assert float(ys.max()) == pytest.approx(high, abs=0.011)


def _march_first_inside(shape: str, rays_o, rays_d, far: float = 3.0, n: int = 3000):
    """Reference: the first of n evenly spaced samples along each ray that is inside the shape."""
    ts = torch.linspace(0.0, far, n, dtype=torch.float64)
    points = rays_o[:, None].double() + ts[None, :, None] * rays_d[:, None].double()
    occupied = shapes.inside(shape, points.reshape(-1, 3)).reshape(len(rays_o), n)
    first = torch.where(occupied.any(1), ts[occupied.int().argmax(1)], math.inf)
    return occupied.any(1), first


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_cast_finds_the_first_surface_a_dense_march_finds(shape):
    poses = orbit_poses(3, polar=55.0, radius=1.8, fovy=45.0, start=10.0)
    rays_o, rays_d = get_rays(poses.c2w, poses.fovy, 24, 24)
    rays_o, rays_d = rays_o.reshape(-1, 3), rays_d.reshape(-1, 3)
    hit_ref, t_ref = _march_first_inside(shape, rays_o, rays_d)
    t = shapes.cast(shape, rays_o, rays_d)
    hit = torch.isfinite(t)
    # Rays that only graze a surface within the march's 1 mm step may disagree; nothing else.
    assert (hit != hit_ref).float().mean() < 0.005
    both = hit & hit_ref
    assert both.sum() > 100
    assert torch.allclose(t[both].double(), t_ref[both], atol=2e-3)


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_a_rendered_pixel_is_coloured_iff_its_ray_hits_the_shape(shape):
    poses = orbit_poses(2, polar=65.0, radius=1.8, fovy=45.0, start=30.0)
    image = shapes.render(shapes.Primitive(shape, "blue"), poses, 16, 16, supersample=1)
    rays_o, rays_d = get_rays(poses.c2w, poses.fovy, 16, 16)
    hit_ref, _ = _march_first_inside(shape, rays_o.reshape(-1, 3), rays_d.reshape(-1, 3))
    coloured = (image.reshape(-1, 3) < 0.999).any(-1)
    assert (coloured != hit_ref).sum() <= 1
    blue = torch.tensor(shapes.COLOURS["blue"])
    assert torch.allclose(image.reshape(-1, 3)[coloured], blue.expand(int(coloured.sum()), 3))


def test_supersampling_gives_soft_edges_and_pure_interiors():
    poses = orbit_poses(1, polar=90.0, radius=1.8, fovy=45.0)
    image = shapes.render(shapes.Primitive("sphere", "red"), poses, 32, 32, supersample=2)[0]
    assert torch.allclose(image[16, 16], torch.tensor(shapes.COLOURS["red"]))
    assert torch.allclose(image[0, 0], torch.ones(3))
    # The green channel goes from 1 (white) to 0.15 (red) through mixed pixels around the outline.
    green = image[..., 1]
    assert ((green > 0.2) & (green < 0.95)).sum() >= 16
    assert image[..., 0].min() >= 0.85 - 1e-6


@pytest.mark.parametrize(
    ("polar", "azimuth", "colour"),
    [
        (90.0, 0.0, "blue"),
        (90.0, 90.0, "red"),
        (90.0, 180.0, "orange"),
        (90.0, 270.0, "green"),
        (5.0, 0.0, "yellow"),
        (175.0, 0.0, "purple"),
    ],
)
def test_colorful_cube_faces_have_their_colours(polar, azimuth, colour):
    poses = orbit_poses(1, polar=polar, radius=1.8, fovy=45.0, start=azimuth)
    image = shapes.render(shapes.Primitive("cube", shapes.COLORFUL), poses, 9, 9, supersample=1)
    assert torch.allclose(image[0, 4, 4], torch.tensor(shapes.COLOURS[colour]))


def test_captions_cover_every_colour_shape_pair_and_the_colorful_cube():
    names = shapes.captions()
    assert len(names) == len(shapes.COLOURS) * len(shapes.SHAPES) + 1
    assert "a red cube" in names and "an orange torus" in names and "a colorful cube" in names


def test_find_primitive_normalises_case_article_and_full_stop():
    assert shapes.find_primitive("A Orange  Cone.") == shapes.Primitive("cone", "orange")


@pytest.mark.parametrize(
    "prompt",
    [
        "a red \u200bcube",
        "\ufeffa red cube",
        "a red cu\u00adbe",
        "\uff41 red cube",
        "a red cube\u2060",
    ],
)
def test_find_primitive_ignores_invisible_format_characters_and_compatibility_forms(prompt):
    """A zero-width space, a BOM from ``"$(cat prompt.txt)"`` or a soft hyphen made the refusal
    quote a prompt that reads exactly like a caption it lists."""
    assert shapes.find_primitive(prompt) == shapes.Primitive("cube", "red")


def test_unknown_caption_is_a_user_error_naming_the_known_captions_in_one_short_phrase():
    with pytest.raises(DreamtextError) as err:
        shapes.find_primitive("a castle")
    said = str(err.value)
    assert "a castle" in said and '"a COLOUR SHAPE"' in said and '"a colorful cube"' in said
    # every colour and shape is named, not each of the 31 captions (a 600-character line)
    assert all(colour in said for colour in shapes.COLOURS)
    assert all(shape in said for shape in shapes.SHAPES)
    assert '"a green torus"' not in said and len(said) < 250


SMALL = CameraRange(
    polar_range=(60.0, 85.0),
    azimuth_range=(0.0, 360.0),
    box_fraction=0.0,
    radius_range=(1.8, 1.8),
    fovy_range=(40.0, 50.0),
)


def test_dataset_cameras_are_at_most_ten_degrees_apart_over_the_range():
    poses = shapes.dataset_poses(SMALL)
    polars = sorted(set(poses.polar.tolist()))
    azimuths = sorted(set(poses.azimuth.tolist()))
    assert polars[0] == pytest.approx(60.0) and polars[-1] == pytest.approx(85.0)
    assert max(b - a for a, b in pairwise(polars)) <= 10.0 + 1e-4
    gaps = [b - a for a, b in pairwise(azimuths)] + [360.0 - azimuths[-1] + azimuths[0]]
    assert max(gaps) <= 10.0 + 1e-4
    assert torch.allclose(poses.fovy, torch.tensor(45.0))
    assert torch.allclose(poses.radius, torch.tensor(1.8))


def test_box_cameras_extend_the_dataset_to_the_upper_hemisphere():
    cams = CameraRange(polar_range=(60.0, 85.0), box_fraction=0.5)
    polars = shapes.dataset_poses(cams).polar
    assert polars.min() == pytest.approx(0.0) and polars.max() == pytest.approx(90.0)


def test_dataset_captions_each_image_with_its_view_of_label(tmp_path):
    data = shapes.load_dataset(SMALL, 8, 8, directory=tmp_path)
    n_views = len(shapes.dataset_poses(SMALL))
    assert data.images.shape == (n_views * len(shapes.captions()), 3, 8, 8)
    for i in range(0, len(data.captions), 7):
        label = view_of(float(data.polar[i]), float(data.azimuth[i])).label
        assert data.captions[i] == with_view(data.objects[i], label)
    labels = {c.split(", ")[1] for c in data.captions}
    assert labels == {"front view", "side view", "back view"}


def test_dataset_captions_use_the_split_side_labels_when_asked(tmp_path):
    split = ViewThresholds(split_sides=True)
    data = shapes.load_dataset(SMALL, 8, 8, split, directory=tmp_path)
    for caption, azimuth in zip(data.captions, data.azimuth, strict=True):
        if 60.0 <= float(azimuth) < 180.0:
            assert caption.endswith(", right side view")
        elif float(azimuth) >= 240.0:
            assert caption.endswith(", left side view")


def test_dataset_captions_views_from_below_with_labels_of_their_own(tmp_path):
    low = CameraRange(
        polar_range=(80.0, 100.0), box_fraction=0.0, radius_range=(1.8, 1.8), fovy_range=(45, 45)
    )
    below = ViewThresholds(split_sides=True, below=90.0)
    data = shapes.load_dataset(low, 8, 8, below, directory=tmp_path)
    for caption, obj, polar, azimuth in zip(
        data.captions, data.objects, data.polar, data.azimuth, strict=True
    ):
        assert caption == with_view(obj, view_of(float(polar), float(azimuth), below).label)
        assert caption.endswith(" below view") == (float(polar) >= 90.0)
    assert {c.split(", ")[1] for c in data.captions} == {
        f"{label}{low} view"
        for label in ("front", "right side", "back", "left side")
        for low in ("", " below")
    }


def test_dataset_cache_keys_are_those_written_before_views_below_existed():
    """A cache of the preset's dataset stays valid: ``below`` off leaves the key as it was."""
    key = shapes._cache_key(CameraRange(), 32, 32, ViewThresholds(split_sides=True))
    assert key == "b3f9608926032176"
    assert shapes._cache_key(
        CameraRange(), 32, 32, ViewThresholds(split_sides=True, below=90.0)
    ) not in (key, shapes._cache_key(CameraRange(), 32, 32, ViewThresholds(below=90.0)))


def test_dataset_pixels_are_single_rays_like_the_trainers(tmp_path):
    """No antialiasing: a one-colour primitive's image holds only its colour and white."""
    data = shapes.load_dataset(SMALL, 8, 8, directory=tmp_path)
    red = torch.tensor(shapes.COLOURS["red"])
    images = data.images[[i for i, o in enumerate(data.objects) if o == "a red sphere"]]
    pixels = images.permute(0, 2, 3, 1).reshape(-1, 3)
    is_red = (pixels - red).abs().max(-1).values < 1 / 255
    is_white = (pixels - 1).abs().max(-1).values < 1 / 255
    assert (is_red | is_white).all() and is_red.any() and is_white.any()


def test_dataset_is_cached_once_and_reloaded_identically(tmp_path):
    first = shapes.load_dataset(SMALL, 8, 8, directory=tmp_path)
    files = list(tmp_path.glob("shapes-*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    second = shapes.load_dataset(SMALL, 8, 8, directory=tmp_path)
    assert torch.equal(first.images, second.images)
    assert first.captions == second.captions
    other = shapes.load_dataset(SMALL, 8, 12, directory=tmp_path)
    assert other.images.shape[-1] == 12 and len(list(tmp_path.glob("shapes-*.npz"))) == 2


def test_a_cache_that_cannot_be_written_costs_a_warning_not_the_run(tmp_path, caplog):
    """HOME=/nonexistent, a read-only or full cache disk: the images were rendered already; the
    run stopped there (exit 2, 'Permission denied (…/.cache/dreamtext); … pick a folder you can
    write (--workspace)', which names the wrong folder)."""
    blocked = tmp_path / "a file"
    blocked.write_text("")
    fresh = shapes.load_dataset(SMALL, 8, 8, directory=blocked / "cache")
    assert torch.equal(fresh.images, shapes.load_dataset(SMALL, 8, 8, directory=tmp_path).images)
    assert "DREAMTEXT_CACHE" in caplog.text and str(blocked / "cache") in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".npz") == ["a file"]


def test_box_cameras_get_images_from_every_azimuth_whatever_the_azimuth_range():
    """Box cameras take any azimuth: with ``azimuth_range [0, 120]`` one behind the object was a
    "back" view the dataset had none of, and the run stopped at step 2."""
    box = CameraRange(polar_range=(60.0, 85.0), azimuth_range=(0.0, 120.0), box_fraction=0.5)
    poses = shapes.dataset_poses(box)
    assert poses.azimuth.min() == 0.0 and poses.azimuth.max() >= 350.0
    labels = {
        view_of(float(p), float(a)).label for p, a in zip(poses.polar, poses.azimuth, strict=True)
    }
    assert {"front", "side", "back", "overhead"} <= labels
    full = CameraRange(polar_range=(60.0, 85.0), azimuth_range=(0.0, 360.0), box_fraction=0.5)
    assert shapes._cache_key(box, 8, 8, None) == shapes._cache_key(full, 8, 8, None)
    no_box = CameraRange(polar_range=(60.0, 85.0), azimuth_range=(0.0, 120.0), box_fraction=0.0)
    assert shapes.dataset_poses(no_box).azimuth.max() <= 120.0


@pytest.mark.parametrize("damage", ["empty", "truncated", "other arrays"])
def test_a_damaged_cache_file_is_rendered_again_and_written_over(tmp_path, caplog, damage):
    """A cache file cut short (a full disk, a crash before its data reached the disk) was read
    with no error handling: every later run of these cameras ended in a traceback (EOFError,
    BadZipFile), for good, since the file was never rebuilt."""
    first = shapes.load_dataset(SMALL, 8, 8, directory=tmp_path)
    (path,) = tmp_path.glob("shapes-*.npz")
    whole = path.read_bytes()
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated":
        path.write_bytes(whole[: len(whole) // 2])
    else:
        np.savez(path.with_suffix(""), images=np.zeros((2, 3, 8, 8), np.uint8))
    again = shapes.load_dataset(SMALL, 8, 8, directory=tmp_path)
    assert torch.equal(again.images, first.images) and again.captions == first.captions
    assert "damaged" in caplog.text and str(path) in caplog.text
    assert path.read_bytes() != b"" and shapes._read_cache(path) is not None  # written over


def test_no_home_folder_for_the_cache_costs_a_warning_not_the_run(monkeypatch, caplog):
    """HOME unset for a user without a passwd entry: Path.home() raised RuntimeError (a
    traceback, exit 1) where the docstring promised a warning."""
    for name in ("DREAMTEXT_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(shapes.Path, "home", staticmethod(no_home))
    assert shapes.cache_dir() is None
    data = shapes.load_dataset(SMALL, 8, 8)
    assert data.images.shape[1:] == (3, 8, 8)
    assert "no home folder" in caplog.text and "DREAMTEXT_CACHE" in caplog.text


def test_coverage_is_the_fraction_of_each_pixel_the_shape_covers():
    poses = orbit_poses(1, polar=90.0, radius=1.8, fovy=45.0)
    cover = shapes.coverage("cube", poses, 16, 16)[0]
    image = shapes.render(shapes.Primitive("cube", "blue"), poses, 16, 16)[0]
    assert cover[8, 8] == 1 and cover[0, 0] == 0
    # A pixel's colour is the coverage-weighted mix of the albedo and the white background.
    blue = torch.tensor(shapes.COLOURS["blue"])
    assert torch.allclose(image, cover[..., None] * blue + (1 - cover[..., None]), atol=1e-6)
    assert ((cover > 0) & (cover < 1)).any()
