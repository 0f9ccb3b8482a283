"""Image loading: every input mode becomes RGB on white; bad files are one-line DreamtextErrors."""

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamtext import images
from dreamtext.errors import DreamtextError
from dreamtext.images import load_image


def _half_transparent_red(mode: str) -> Image.Image:
    """Left half opaque red, right half fully transparent (colour underneath: black)."""
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:, :4] = (255, 0, 0, 255)
    return Image.fromarray(rgba, "RGBA").convert(mode)


def test_rgba_png_is_composited_on_white(tmp_path):
    path = tmp_path / "cup.png"
    _half_transparent_red("RGBA").save(path)
    pixels = np.asarray(load_image(path))
    assert pixels.shape == (8, 8, 3)
    assert (pixels[:, :4] == (255, 0, 0)).all()
    assert (pixels[:, 4:] == 255).all()


def test_half_alpha_blends_halfway_to_white(tmp_path):
    path = tmp_path / "ghost.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 128)).save(path)
    pixels = np.asarray(load_image(path)).astype(int)
    assert np.abs(pixels - 127).max() <= 1


def test_gray_with_alpha_is_composited_on_white(tmp_path):
    path = tmp_path / "la.png"
    array = np.zeros((4, 4, 2), dtype=np.uint8)
    array[..., 0] = 50
    array[:2, :, 1] = 255
    Image.fromarray(array, "LA").save(path)
    pixels = np.asarray(load_image(path))
    assert (pixels[:2] == 50).all()
    assert (pixels[2:] == 255).all()


def test_palette_with_transparent_index_is_composited_on_white(tmp_path):
    path = tmp_path / "palette.png"
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 255] + [0, 255, 0] + [0] * (3 * 254))
    image.paste(1, (0, 0, 2, 4))
    image.save(path, transparency=0)
    pixels = np.asarray(load_image(path))
    assert (pixels[:, :2] == (0, 255, 0)).all()
    assert (pixels[:, 2:] == 255).all()


def test_grayscale_jpeg_becomes_three_equal_channels(tmp_path):
    path = tmp_path / "gray.jpg"
    Image.new("L", (16, 16), 90).save(path)
    image = load_image(path)
    assert image.mode == "RGB"
    pixels = np.asarray(image).astype(int)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    assert abs(pixels.mean() - 90) < 2


def test_webp_with_alpha_loads(tmp_path):
    path = tmp_path / "cup.webp"
    _half_transparent_red("RGBA").save(path, lossless=True)
    pixels = np.asarray(load_image(path))
    assert (pixels[:, :4] == (255, 0, 0)).all()
    assert (pixels[:, 4:] == 255).all()


def test_large_jpeg_is_downscaled_keeping_aspect(tmp_path):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (3000, 1500), (10, 200, 30)).save(path)
    image = load_image(path, max_size=512)
    assert image.size == (512, 256)
    assert np.abs(np.asarray(image).astype(int) - (10, 200, 30)).max() < 8


def test_a_phone_jpeg_with_more_pictures_in_it_loads_as_its_first(tmp_path):
    """Samsung and Android Ultra HDR photos carry a second picture (MPF): Pillow opens them as
    "MPO", which was refused as a format other than JPEG. Its copy in the run is a .jpg."""
    from dreamtext.describe import keep_source_copy

    path = tmp_path / "phone.jpg"
    first = Image.new("RGB", (3000, 1500), (10, 200, 30))
    first.save(path, format="MPO", save_all=True, append_images=[Image.new("RGB", (64, 64))])
    with Image.open(path) as opened:
        assert opened.format == "MPO"
    image = load_image(path, max_size=512)
    assert image.size == (512, 256)
    assert np.abs(np.asarray(image).astype(int) - (10, 200, 30)).max() < 8
    (tmp_path / "run" / "descriptor").mkdir(parents=True)
    assert keep_source_copy(path, tmp_path / "run").name == "source.jpg"


def test_small_image_is_not_upscaled(tmp_path):
    path = tmp_path / "small.png"
    Image.new("RGB", (20, 10), (1, 2, 3)).save(path)
    assert load_image(path, max_size=512).size == (20, 10)


@pytest.mark.parametrize("name", ["spin.png", "spin.webp"])
def test_an_animated_image_gives_its_first_frame(tmp_path, name):
    """As README's Image→3D section says."""
    path = tmp_path / name
    first, second = Image.new("RGB", (8, 8), (200, 30, 30)), Image.new("RGB", (8, 8), (0, 0, 255))
    first.save(path, save_all=True, append_images=[second], lossless=True)
    assert np.abs(np.asarray(load_image(path), dtype=int) - (200, 30, 30)).max() <= 2


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DreamtextError, match="not found"):
        load_image(tmp_path / "nope.png")


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello")
    with pytest.raises(DreamtextError, match="not an image"):
        load_image(path)


def test_an_empty_file_is_called_empty(tmp_path):
    """A copy or download that failed (disk full, a 404 saved by ``curl -o``): it was "not an
    image Pillow can read; use PNG, JPEG or WebP", of a file named mug.png."""
    path = tmp_path / "mug.png"
    path.write_bytes(b"")
    with pytest.raises(DreamtextError) as raised:
        load_image(path)
    assert str(raised.value) == f"{path} is empty (0 bytes); copy or download the image again"


def test_truncated_png_is_reported_corrupt(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DreamtextError, match="corrupt"):
        load_image(path)


@pytest.mark.parametrize(
    ("damage", "name", "kind"),
    [
        ("cut at 40 bytes", "mug.png", "PNG"),
        ("IHDR's checksum", "mug.png", "PNG"),
        ("cut at 12 bytes", "mug.webp", "WebP"),
        ("cut at 3 bytes", "mug.jpg", "JPEG"),
    ],
)
def test_a_damaged_file_of_a_supported_format_is_called_damaged(tmp_path, damage, name, kind):
    """A PNG cut off before its pixels (an interrupted download) or with a flipped bit in its
    header's checksum is one Pillow cannot identify: it was "not an image Pillow can read; use
    PNG, JPEG or WebP", the format it is. Cut lengths are inside each format's header."""
    path = tmp_path / name
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    data = bytearray(path.read_bytes())
    if damage.startswith("cut"):
        data = data[: int(damage.split()[2])]
    else:
        data[29] ^= 1  # 8 signature + 4 length + 4 "IHDR" + 13 data: the checksum's first byte
    path.write_bytes(bytes(data))
    with pytest.raises(DreamtextError) as raised:
        load_image(path)
    assert str(raised.value) == f"{path}: corrupt or truncated {kind} file (Pillow cannot read it)"


def test_a_jpeg_with_damaged_exif_is_one_warning_line(tmp_path, caplog):
    """An EXIF block cut short (an editor's or a phone's bug): Pillow's UserWarning was two lines
    on stderr naming its own TiffImagePlugin.py, twice per command."""
    import warnings

    path = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    exif = b"Exif\0\0MM\0*\0\0\0\x08\0\x05\x01\x12"  # 5 entries promised, 2 bytes of one
    segment = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
    data = path.read_bytes()
    path.write_bytes(data[:2] + segment + data[2:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = load_image(path)
    assert loaded.size == (8, 8)
    [line] = [record.getMessage() for record in caplog.records]
    assert line == (
        f"warning: {path}: Corrupt EXIF data. Expecting to read 12 bytes but only got 2; if the "
        "object shows turned, save the image upright"
    )


def _refused(path: Path) -> PermissionError:
    return PermissionError(13, "Permission denied", str(path))


def test_an_image_in_a_folder_the_user_may_not_enter_is_one_line(tmp_path, monkeypatch):
    """Another user's home (mode 700): the stat of the path is refused. It was a PermissionError
    traceback, which the CLI called a failed write ("pick a folder you can write (--workspace)").
    Patched, not chmod: root, who runs many CI containers, reads any file."""
    path = tmp_path / "home" / "mug.png"
    real_stat = Path.stat

    def stat(self, *args, **kwargs):
        if self == path:
            raise _refused(self)
        return real_stat(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    with pytest.raises(DreamtextError) as raised:
        load_image(path)
    assert str(raised.value) == (
        f"cannot read {path}: permission denied; make it readable (chmod, or ask its owner) or "
        "pass a copy you can read"
    )


def test_an_image_the_user_may_not_read_is_not_called_corrupt(tmp_path, monkeypatch):
    """``chmod 000 mug.png``: it was "corrupt or unreadable image ([Errno 13] ...)"."""
    import builtins

    path = tmp_path / "mug.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    real_open = builtins.open

    def open_(file, *args, **kwargs):
        if isinstance(file, (str, Path)) and os.fspath(file) == str(path):
            raise _refused(path)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_)
    with pytest.raises(DreamtextError) as raised:
        load_image(path)
    assert str(raised.value).startswith(f"cannot read {path}: permission denied;")


def test_unsupported_format_is_refused(tmp_path):
    path = tmp_path / "cup.bmp"
    Image.new("RGB", (4, 4)).save(path)
    with pytest.raises(DreamtextError, match="PNG, JPEG or WebP"):
        load_image(path)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    # A PNG header claiming 50,000 × 50,000 pixels with almost no data: decoding would need 7.5 GB.
    header = struct.pack(">IIBBBBB", 50_000, 50_000, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    with pytest.raises(DreamtextError, match="decompression bomb"):
        load_image(path)


def test_a_jpeg_is_counted_by_the_pixels_it_decodes(tmp_path, monkeypatch):
    """A 108-megapixel phone photo (12000 x 9000 JPEG) was refused as a possible decompression
    bomb by Pillow's own limit, which counts a JPEG at full size, though it decodes at 1/8 of it
    (Image.draft). Here the limits are 10,000 pixels and the JPEG 200 x 150 (30,000)."""
    from PIL import Image

    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    photo, drawing = tmp_path / "photo.jpg", tmp_path / "drawing.png"
    picture = Image.new("RGB", (200, 150), (200, 30, 30))
    picture.save(photo)
    picture.save(drawing)
    loaded = load_image(photo, max_size=64)  # decoded at 1/2: 100 x 75
    assert loaded.size == (64, 48)
    assert np.abs(np.asarray(loaded, dtype=int) - (200, 30, 30)).max() <= 4
    with pytest.raises(DreamtextError, match=r"200x150 pixels is too large.*below 10000 pixels"):
        load_image(drawing, max_size=64)
    assert Image.MAX_IMAGE_PIXELS == 10_000  # Pillow's limit as it was


def test_the_runs_copy_of_a_jpeg_over_pillows_limit_is_kept_without_its_check(
    tmp_path, monkeypatch
):
    """load_image accepted a 180-megapixel phone photo (decoded at 1/8), then the copy kept in
    the run (describe, image) opened it with Pillow's limit to read its format: a
    DecompressionBombError traceback over twice the limit, Pillow's "could be decompression bomb
    DOS attack" warning over it. Here the limit is 10,000 pixels and the JPEG 30,000."""
    import warnings

    from PIL import Image

    from dreamtext.describe import keep_source_copy

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    photo = tmp_path / "photo.jpeg"
    Image.new("RGB", (200, 150), (200, 30, 30)).save(photo)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        copy = keep_source_copy(photo, tmp_path / "run")
    assert copy == tmp_path / "run" / "descriptor" / "source.jpg"
    assert copy.read_bytes() == photo.read_bytes()
    assert Image.MAX_IMAGE_PIXELS == 10_000


def test_16_bit_grayscale_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "gradient16.png"
    gradient = np.linspace(0, 65535, 32).astype(np.uint16)
    Image.fromarray(np.tile(gradient, (4, 1))).save(path)
    pixels = np.asarray(load_image(path))
    expected = np.round(gradient / 257).astype(np.uint8)
    assert np.array_equal(pixels[0, :, 0], expected)
    assert (pixels[..., 0] == pixels[..., 2]).all()


def test_a_folder_is_reported_as_a_folder(tmp_path):
    folder = tmp_path / "photo.png"
    folder.mkdir()
    with pytest.raises(DreamtextError, match="is a folder, not an image"):
        load_image(folder)


def test_16_bit_grayscale_png_keeps_its_transparent_gray_value_transparent(tmp_path):
    """A 16-bit gray PNG with a tRNS chunk: its transparent pixels came out black."""
    path = tmp_path / "gray16_trns.png"
    values = np.array([[0, 65535, 32768, 0]], dtype=np.uint16)
    Image.fromarray(values).save(path, transparency=0)
    with Image.open(path) as saved:
        assert saved.info.get("transparency") == 0
    rgb = np.asarray(load_image(path))
    assert rgb[0, :, 0].tolist() == [255, 255, 128, 255]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_16_bit_rgb_png_keeps_its_transparent_colour_transparent(tmp_path):
    """A 16-bit RGB PNG with a tRNS colour: Pillow keeps the key in 16 bits while the pixels
    decode to 8, so no pixel matched it and the 'transparent' colour showed (18, 86, 154)."""
    key = (0x1234, 0x5678, 0x9ABC)
    pixels = np.zeros((4, 4, 3), np.uint16)
    pixels[:] = (0x8080, 0x4040, 0x2020)
    pixels[:, :2] = key
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", 4, 4, 16, 2, 0, 0, 0)  # 16-bit truecolour
    path = tmp_path / "rgb16_trns.png"
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"tRNS", struct.pack(">HHH", *key))
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )
    rgb = np.asarray(load_image(path))
    assert rgb[:, :2].tolist() == [[[255, 255, 255]] * 2] * 4
    assert rgb[:, 2:].tolist() == [[[0x80, 0x40, 0x20]] * 2] * 4


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _linear_srgb_profile() -> bytes:
    """An ICC v2 RGB display profile with sRGB's primaries (adapted to D50) and a linear tone
    curve (gamma 1): its file values are linear light, so grey 128 is sRGB's 188."""
    colorants = [(0.4361, 0.2225, 0.0139), (0.3851, 0.7169, 0.0971), (0.1431, 0.0606, 0.7141)]
    name = b"linear light\0"
    tags = [
        (b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(name)) + name + bytes(4 + 4 + 3 + 67)),
        (b"cprt", b"text\0\0\0\0none\0"),
        (b"wtpt", b"XYZ \0\0\0\0" + _s15(0.9642) + _s15(1.0) + _s15(0.8249)),
        *[
            (kind, b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in xyz))
            for kind, xyz in zip((b"rXYZ", b"gXYZ", b"bXYZ"), colorants, strict=True)
        ],
        *[(kind, b"curv\0\0\0\0" + struct.pack(">I", 0)) for kind in (b"rTRC", b"gTRC", b"bTRC")],
    ]
    table, data = struct.pack(">I", len(tags)), b""
    start = 128 + 4 + 12 * len(tags)
    for kind, body in tags:
        body += bytes(-len(body) % 4)
        table += kind + struct.pack(">II", start + len(data), len(body))
        data += body
    size = 128 + len(table) + len(data)
    header = (
        struct.pack(">I", size)
        + b"none"
        + bytes([2, 0x10, 0, 0])
        + b"mntrRGB XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(24)
        + bytes(8)
        + bytes(4)
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
    )
    return header + bytes(128 - len(header)) + table + data


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_an_embedded_colour_profile_is_converted_to_srgb(tmp_path, suffix):
    """A Display P3 or Adobe RGB photo's numbers were read as sRGB: saturated colours came out
    washed out for CLIP and the descriptor. Here the profile says the numbers are linear light."""
    pytest.importorskip("PIL.ImageCms")
    path = tmp_path / f"linear{suffix}"
    options = {"quality": 100, "subsampling": 0} if suffix == ".jpg" else {}
    Image.new("RGB", (16, 16), (128, 128, 128)).save(
        path, icc_profile=_linear_srgb_profile(), **options
    )
    grey = np.asarray(load_image(path))[8, 8].tolist()
    assert all(abs(v - 188) <= 1 for v in grey), grey  # 255 · encode(128 / 255) = 187.6
    # an sRGB profile, or none, leaves the numbers as they are
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for name, icc in (("srgb.png", srgb), ("none.png", None)):
        Image.new("RGB", (16, 16), (200, 60, 40)).save(tmp_path / name, icc_profile=icc)
        assert np.asarray(load_image(tmp_path / name))[8, 8].tolist() == [200, 60, 40]


def test_a_cmyk_jpeg_loads_as_its_rgb_colours(tmp_path):
    """A print shop's or Photoshop's CMYK JPEG (Pillow writes it as Adobe's inverted CMYK, as
    Photoshop does) becomes RGB: cyan is green and blue, 50 % black is mid grey, and the left half
    stays left."""
    cmyk = np.zeros((16, 16, 4), dtype=np.uint8)
    cmyk[:, :8, 0] = 255  # left: cyan
    cmyk[:, 8:, 3] = 128  # right: 50 % black
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "print.jpg", quality=100, subsampling=0)
    assert Image.open(tmp_path / "print.jpg").mode == "CMYK"
    rgb = np.asarray(load_image(tmp_path / "print.jpg")).astype(int)
    assert rgb.shape == (16, 16, 3)
    assert np.abs(rgb[8, 2] - (0, 255, 255)).max() <= 2, rgb[8, 2]
    assert np.abs(rgb[8, 13] - (127, 127, 127)).max() <= 2, rgb[8, 13]


def test_a_colour_profile_littlecms_cannot_read_is_a_warning_naming_the_image(tmp_path, caplog):
    """It named no file: of a batch's three images, which one was not said."""
    path = tmp_path / "broken.png"
    Image.new("RGB", (16, 16), (200, 60, 40)).save(path, icc_profile=b"not a profile" * 20)
    assert np.asarray(load_image(path))[8, 8].tolist() == [200, 60, 40]
    assert f"warning: {path}: its colour profile cannot be read (" in caplog.text


@pytest.mark.parametrize(
    ("name", "image"),
    [
        ("erased.png", Image.new("RGBA", (8, 8), (30, 200, 30, 0))),  # alpha 0 everywhere
        ("page.jpg", Image.new("RGB", (8, 8), "white")),
    ],
)
def test_a_blank_image_is_refused(tmp_path, name, image):
    """A fully transparent PNG composited on white was accepted: hours of sentence search and
    descriptor training on a white square."""
    path = tmp_path / name
    image.save(path)
    with pytest.raises(DreamtextError, match=r"is blank .* pass an image that shows the object"):
        load_image(path)


def test_an_image_with_one_visible_pixel_is_not_blank(tmp_path):
    path = tmp_path / "speck.png"
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    image.putpixel((3, 3), (200, 30, 30, 255))
    image.save(path)
    assert np.asarray(load_image(path))[3, 3].tolist() == [200, 30, 30]


def _count_opens(monkeypatch) -> list:
    opened = []
    real_open = Image.open

    def counting_open(fp, *args, **kwargs):
        opened.append(fp)
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    return opened


def test_an_unchanged_image_asked_for_again_is_not_decoded_again(tmp_path, monkeypatch):
    """``dreamtext image`` loaded its image three times before its first stage (the early
    check, the command's and run_image's): 0.5-1.5 s each for a 4000 x 3000 PNG."""
    path = tmp_path / "cup.png"
    _half_transparent_red("RGBA").save(path)
    opened = _count_opens(monkeypatch)
    first = load_image(path)
    first.paste((0, 0, 255), (0, 0, 8, 8))  # the caller's own copy
    again = load_image(path)
    assert len(opened) == 1
    assert np.asarray(again)[0, 0].tolist() == [255, 0, 0]
    assert load_image(path, max_size=4).size == (4, 4)  # another size: decoded
    assert len(opened) == 2


def _cups(folder: Path, count: int) -> list[Path]:
    paths = [folder / f"cup{i}.png" for i in range(count)]
    for i, path in enumerate(paths):
        Image.new("RGB", (8, 8), (200, i, 30)).save(path)
    return paths


def test_a_few_images_asked_for_again_are_each_decoded_once(tmp_path, monkeypatch):
    """``batch`` checks every image line, then each run loads its image again: with only the
    last image kept, every line but the last was decoded twice."""
    paths = _cups(tmp_path, 3)
    opened = _count_opens(monkeypatch)
    for path in paths:
        load_image(path)
    for i, path in enumerate(paths):
        assert np.asarray(load_image(path))[0, 0].tolist() == [200, i, 30]
    assert len(opened) == 3


def test_the_image_asked_for_least_recently_is_the_one_dropped(tmp_path, monkeypatch):
    from dreamtext.images import LOADED_KEPT

    paths = _cups(tmp_path, LOADED_KEPT + 1)
    opened = _count_opens(monkeypatch)
    for path in paths[:LOADED_KEPT]:
        load_image(path)
    load_image(paths[0])  # asked for again: now the latest
    load_image(paths[LOADED_KEPT])  # one too many: paths[1] goes
    load_image(paths[0])
    assert len(opened) == LOADED_KEPT + 1
    load_image(paths[1])
    assert len(opened) == LOADED_KEPT + 2


def test_an_image_changed_since_it_was_loaded_is_decoded_again(tmp_path, monkeypatch):
    path = tmp_path / "cup.png"
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)
    assert np.asarray(load_image(path))[0, 0].tolist() == [200, 30, 30]
    stat = path.stat()
    Image.new("RGB", (8, 8), (30, 30, 200)).save(path)  # the same size, in the same file
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and its time set back
    opened = _count_opens(monkeypatch)
    assert np.asarray(load_image(path))[0, 0].tolist() == [30, 30, 200]
    assert len(opened) == 1
