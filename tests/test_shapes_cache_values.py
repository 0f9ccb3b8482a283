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
