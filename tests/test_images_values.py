"""Image loading edge values (dreamtext/images.py), derived by hand from its documented rules."""

import io

import numpy as np
import torch
from PIL import Image

from dreamtext.augment import image_to_tensor
from dreamtext.images import MIN_USEFUL_SIDE, load_image, pad_to_square, small_image_warning


def test_a_16_bit_transparent_gray_matches_the_16_bit_pixels_only(tmp_path):
    # tRNS gray 40000 (16-bit): only the pixels of exactly 40000 are transparent (white); 40100
    # scales to the same 8-bit gray, round(40100 · 255 / 65535) = 156, yet is opaque.
    path = tmp_path / "gray16.png"
    values = np.array([[40000, 40100, 0, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(path, transparency=40000)
    rgb = np.asarray(load_image(path))
    assert rgb[0, :, 0].tolist() == [255, 156, 0, 255]


def test_a_narrow_image_exactly_32_pixels_high_is_called_narrow_not_small(tmp_path):
    # 2048 × 32: the file has 32 pixels a side (enough), cut to 1024 on its longer side it is
    # 1024 × 16, so the warning is the narrow strip's and names the file's own size.
    path = tmp_path / "strip.png"
    Image.new("RGB", (2048, MIN_USEFUL_SIDE), (200, 30, 30)).save(path)
    image = load_image(path)
    assert image.size == (1024, 16)
    warning = small_image_warning(image, path)
    assert warning is not None and "(2048x32 pixels) is so narrow" in warning


def test_pad_to_square_centres_an_odd_margin_like_image_to_tensor(tmp_path):
    # 5 × 2 (width × height): side 5, margin 3 split (5 − 2) // 2 = 1 above and 2 below, the
    # same offsets image_to_tensor pads with, which at the square's own size resamples nothing.
    image = Image.new("RGB", (5, 2), (0, 0, 0))
    square = np.asarray(pad_to_square(image))
    assert square.shape == (5, 5, 3)
    assert square[:, 0, 0].tolist() == [255, 0, 0, 255, 255]
    tensor = (image_to_tensor(image, 5)[0].permute(1, 2, 0) * 255).round().to(torch.uint8)
    assert np.array_equal(tensor.numpy(), square)


def test_an_exif_orientation_is_applied(tmp_path):
    # Orientation 6: the stored 4 × 2 picture is shown turned 90° clockwise, 2 × 4, its stored
    # top-left pixel at the top right.
    path = tmp_path / "turned.png"
    stored = Image.new("RGB", (4, 2), (255, 255, 255))
    stored.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(path, exif=exif)
    image = load_image(path)
    assert image.size == (2, 4)
    assert np.asarray(image)[:, :, 1].tolist() == [[255, 0], [255, 255], [255, 255], [255, 255]]


def test_a_profile_of_another_colour_space_leaves_the_colours_and_warns_nothing(tmp_path, caplog):
    # A Lab profile in an RGB file does not describe its pixels: they are taken as they are.
    from PIL import ImageCms

    path = tmp_path / "lab.png"
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()
    Image.new("RGB", (4, 4), (200, 100, 50)).save(path, icc_profile=lab)
    assert np.asarray(load_image(path))[0, 0].tolist() == [200, 100, 50]
    assert "profile" not in caplog.text


def test_changing_a_loaded_image_leaves_the_next_load_of_its_file_as_it_is(tmp_path):
    path = tmp_path / "red.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    for _ in range(2):  # decoded, then from the images kept
        load_image(path).paste((0, 0, 255), (0, 0, 8, 8))  # a caller drawing on its copy
    assert np.asarray(load_image(path))[0, 0].tolist() == [200, 30, 30]


def test_a_one_bit_png_with_a_transparent_colour_is_on_white():
    """Pillow's 1-bit mode "1" with a tRNS value: its transparent pixels were black (convert
    ("RGB") drops the tRNS), so a white mask on a transparent ground read as a white object on
    black."""
    from dreamtext.images import _to_rgb_on_white

    image = Image.new("1", (8, 8), 1)  # a white ground, declared transparent below
    image.paste(0, (2, 2, 6, 6))  # a black square: opaque
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=1)
    rgb = np.asarray(_to_rgb_on_white(Image.open(io.BytesIO(buffer.getvalue()))))
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[3, 3].tolist() == [0, 0, 0]
    image = Image.new("1", (8, 8), 0)  # a black ground, declared transparent
    image.paste(1, (2, 2, 6, 6))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", transparency=0)
    rgb = np.asarray(_to_rgb_on_white(Image.open(io.BytesIO(buffer.getvalue()))))
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[3, 3].tolist() == [255, 255, 255]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width × height`` 8-bit gray pixels and holds none of them."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_one_pixel_above_the_limit_is_refused_as_a_bomb_and_the_limit_itself_is_not(tmp_path):
    # "Anything above this many pixels ... is refused before decoding": a 1 × (MAX + 1) claim is
    # a bomb; a 1 × MAX claim is decoded, and (holding no pixels) is a corrupt file instead.
    # MAX is Pillow's own default limit, Image.MAX_IMAGE_PIXELS = int(1024 · 1024 · 1024 // 4 // 3)
    # = 89,478,485 (written out: the test took images.MAX_PIXELS, so any limit passed).
    import pytest

    from dreamtext.errors import DreamtextError

    limit = 1024 * 1024 * 1024 // 4 // 3
    assert limit == 89_478_485
    above, at = tmp_path / "above.png", tmp_path / "at.png"
    above.write_bytes(_png_header_only(1, limit + 1))
    at.write_bytes(_png_header_only(1, limit))
    with pytest.raises(DreamtextError, match="decompression bomb"):
        load_image(above)
    with pytest.raises(DreamtextError) as error:
        load_image(at)
    assert "decompression bomb" not in str(error.value)


def test_an_image_of_exactly_the_useful_side_gets_no_warning(tmp_path):
    # Only an image *below* MIN_USEFUL_SIDE (32) pixels on a side is warned about.
    path = tmp_path / "square.png"
    Image.new("RGB", (MIN_USEFUL_SIDE, MIN_USEFUL_SIDE), (200, 30, 30)).save(path)
    assert small_image_warning(load_image(path), path) is None


def test_a_file_short_on_one_side_is_called_small_not_narrow(tmp_path):
    # 100 × 10: the file itself has only 10 pixels on its shorter side, under 32, so the warning
    # is the small image's ("is only 100x10 pixels"), not the narrow strip's.
    path = tmp_path / "short.png"
    Image.new("RGB", (100, 10), (200, 30, 30)).save(path)
    warning = small_image_warning(load_image(path), path)
    assert warning is not None and "is only 100x10 pixels" in warning
