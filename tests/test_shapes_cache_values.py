"""The built-in prior's cached dataset (dreamtext.shapes.load_dataset), against values derived
by hand."""

from __future__ import annotations

import torch

from dreamtext import shapes
from dreamtext.cameras import CameraRange

SMALL = CameraRange(polar_range=(60.0, 80.0), azimuth_range=(0.0, 60.0), box_fraction=0.0)


def test_cached_images_round_each_colour_to_the_nearest_8_bit_level(tmp_path):
    # Red is 0.85 = 216.75 / 255: stored (and returned) as 217 / 255, the nearest level, not
    # cut down to 216 / 255; the white background is 255 / 255.
    data = shapes.load_dataset(SMALL, 8, 8, directory=tmp_path)
    images = data.images[[i for i, o in enumerate(data.objects) if o == "a red cube"]]
    levels = {round(v * 255.0, 3) for v in images[:, 0].reshape(-1).tolist()}
    assert levels == {217.0, 255.0}


def test_a_second_load_reads_the_cache_instead_of_rendering_again(tmp_path, monkeypatch):
    first = shapes.load_dataset(SMALL, 8, 8, directory=tmp_path)

    def render_again(*args, **kwargs):
        raise AssertionError("rendered again although the cache file was there")

    monkeypatch.setattr(shapes, "build_dataset", render_again)
    second = shapes.load_dataset(SMALL, 8, 8, directory=tmp_path)
    assert second.captions == first.captions and second.images.shape == first.images.shape


def test_a_cache_whose_compressed_data_is_damaged_is_rendered_again(tmp_path, monkeypatch):
    """A damaged run of bytes inside a compressed array (a bad sector) raises zlib.error, which
    escaped as a traceback in every later run of those cameras; it is damage like any other."""
    import zlib

    from dreamtext.cameras import CameraRange

    cameras = CameraRange(polar_range=(60.0, 70.0), azimuth_range=(0.0, 20.0), box_fraction=0.0)
    first = shapes.load_dataset(cameras, 8, 8, directory=tmp_path)

    def damaged(*args, **kwargs):
        raise zlib.error("Error -3 while decompressing data: invalid code lengths set")

    with monkeypatch.context() as m:
        m.setattr(shapes.np, "load", damaged)
        again = shapes.load_dataset(cameras, 8, 8, directory=tmp_path)
    assert torch.equal(again.images, first.images)


def test_cameras_whose_datasets_differ_have_different_cache_keys():
    """The key hashes every parameter that changes the images: cameras drawn from the box too
    (``box_fraction > 0``) add its polar angles 0-90 to a 60-80 range, so theirs is another
    dataset, and must not be read from the file of the cameras without the box."""
    full_circle = {"polar_range": (60.0, 80.0), "azimuth_range": (0.0, 360.0)}
    without_box = CameraRange(**full_circle, box_fraction=0.0)
    with_box = CameraRange(**full_circle, box_fraction=0.5)
    polars = {float(p) for p in shapes.dataset_poses(with_box).polar}
    assert 0.0 in polars and 0.0 not in {float(p) for p in shapes.dataset_poses(without_box).polar}
    assert shapes._cache_key(without_box, 8, 8, None) != shapes._cache_key(with_box, 8, 8, None)


def test_a_cache_written_before_band_angles_is_not_read_for_a_narrow_band():
    """A front band of 1°-9° holds no 10° grid azimuth, so the dataset adds one at its edge; the
    file an older version wrote for these settings (keyed by the parameters alone, no band
    angles) lacks those images and must not be read."""
    import hashlib

    from dreamtext.cameras import ViewThresholds

    narrow = ViewThresholds(front_start=1.0, front_end=9.0)
    assert shapes.band_angles(SMALL, narrow) != ([], [])
    params = (
        narrow,
        shapes.DATASET_VERSION,
        shapes.DATASET_SUPERSAMPLE,
        shapes.DATASET_STEP_DEG,
        8,
        8,
        (60.0, 80.0),
        (0.0, 60.0),
        (1.0, 1.5),
        (40.0, 70.0),
        False,
    )
    older = hashlib.sha1(repr(params).replace(", below=None)", ")").encode()).hexdigest()[:16]
    assert (
        shapes._cache_key(SMALL, 8, 8, None)
        == hashlib.sha1(
            repr((ViewThresholds(), *params[1:])).replace(", below=None)", ")").encode()
        ).hexdigest()[:16]
    )  # the parameters alone, where there are no band angles
    assert shapes._cache_key(SMALL, 8, 8, narrow) != older


def test_a_cache_file_of_nul_bytes_is_rendered_again(tmp_path, caplog):
    """A crash with its node can leave a file's blocks as NUL bytes: neither a zip nor an .npy
    file, which numpy refuses with a ValueError. It is damage like a cut file: rendered again
    and written over, not a traceback in every later run."""
    first = shapes.load_dataset(SMALL, 8, 8, directory=tmp_path)
    (path,) = tmp_path.glob("shapes-*.npz")
    path.write_bytes(bytes(4096))
    again = shapes.load_dataset(SMALL, 8, 8, directory=tmp_path)
    assert torch.equal(again.images, first.images) and "damaged" in caplog.text
    assert shapes._read_cache(path) is not None  # written over


def _rewrite(path, **changes):
    import numpy as np

    with np.load(path) as data:
        arrays = {name: data[name] for name in data.files}
    arrays.update(changes)
    np.savez(path.with_suffix(""), **arrays)  # numpy adds the .npz back


def test_a_cache_file_with_an_angle_per_image_missing_is_rendered_again(tmp_path, caplog):
    """Each image has its polar and azimuth angle: a file whose angle arrays are one short is
    not this dataset (the prior would pair images with the wrong cameras)."""
    first = shapes.load_dataset(SMALL, 8, 8, directory=tmp_path)
    (path,) = tmp_path.glob("shapes-*.npz")
    _rewrite(path, polar=first.polar[:-1].numpy(), azimuth=first.azimuth[:-1].numpy())
    again = shapes.load_dataset(SMALL, 8, 8, directory=tmp_path)
    assert len(again.polar) == len(again.azimuth) == len(first.captions)
    assert "damaged" in caplog.text


def test_a_cache_file_whose_images_are_not_n_by_3_by_h_by_w_is_rendered_again(tmp_path, caplog):
    """Images are [N, 3, H, W]; a file of [N, 3·H, W] arrays (another writer's layout) has
    the right count but is not images the prior can use."""
    first = shapes.load_dataset(SMALL, 8, 8, directory=tmp_path)
    (path,) = tmp_path.glob("shapes-*.npz")
    n = first.images.shape[0]
    flat = (first.images * 255).round().to(torch.uint8).reshape(n, 3 * 8, 8).numpy()
    _rewrite(path, images=flat)
    again = shapes.load_dataset(SMALL, 8, 8, directory=tmp_path)
    assert again.images.shape == (n, 3, 8, 8) and "damaged" in caplog.text


def test_the_cache_folder_and_its_parents_are_made(tmp_path):
    """``DREAMTEXT_CACHE`` may name a folder not made yet, several levels down."""
    deep = tmp_path / "a" / "b" / "cache"
    shapes.load_dataset(SMALL, 8, 8, directory=deep)
    assert len(list(deep.glob("shapes-*.npz"))) == 1


def test_a_cache_write_that_fails_leaves_no_temporary_file(tmp_path, monkeypatch, caplog):
    """A full disk mid-write is a warning, and the half-written temporary file is removed (each
    failing run left one more in the cache folder)."""
    import errno
    import os

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(shapes.np, "savez_compressed", full)
    data = shapes.load_dataset(SMALL, 8, 8, directory=tmp_path)
    assert len(data.captions) == data.images.shape[0] > 0
    assert list(tmp_path.iterdir()) == [] and "could not keep" in caplog.text


def test_the_cache_folder_is_xdg_cache_home_s_dreamtext_without_dreamtext_cache(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("DREAMTEXT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert shapes.cache_dir() == tmp_path / "xdg" / "dreamtext"
    monkeypatch.setenv("DREAMTEXT_CACHE", str(tmp_path / "mine"))
    assert shapes.cache_dir() == tmp_path / "mine"
