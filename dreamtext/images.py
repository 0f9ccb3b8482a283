"""Safe image loading for the image→3D path: any PNG / JPEG / WebP, any mode, any size.

Every input image becomes an RGB ``PIL.Image`` on a white background (the thesis's objects are
photographed or rendered on white, and the augmentations pad with white), no larger than
``max_size`` on its longer side. Anything a user can get wrong (a missing path, a file that is
not an image, a truncated file, a decompression bomb, a blank image) is a ``DreamtextError`` with
one line.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dreamtext.errors import DreamtextError
from dreamtext.inputs import check_image_path, unreadable_image

log = logging.getLogger(__name__)

# Pillow decodes every pixel of an image it opens fully: a tiny PNG that claims 100k × 100k pixels
# would allocate tens of GB. Anything above this many pixels (Pillow's own default limit, written
# here so that no other code changing ``Image.MAX_IMAGE_PIXELS`` can lift it) is refused before
# decoding.
MAX_PIXELS = 89_478_485
# Pillow's modes of a 16-bit grayscale PNG ("I" in older Pillow): values 0 … 65535.
WIDE_GRAY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")
# "MPO": a JPEG carrying more pictures (a phone's depth map or gain map: Samsung, Android Ultra
# HDR photos), which Pillow opens as its first picture, a JPEG like any other.
SUPPORTED_FORMATS = ("PNG", "JPEG", "MPO", "WEBP")
JPEG_FORMATS = ("JPEG", "MPO")
DEFAULT_MAX_SIZE = 1024
# Below this many pixels on its shorter side an image is warned about, not refused: CLIP sees
# 224 x 224 and the descriptor the model's resolution (512 for SD 2.1-base), both upscaled from
# a few blurred pixels that hold no object to describe; yet a researcher may mean it (and tests
# use 8-pixel images to stay fast).
MIN_USEFUL_SIDE = 32
# The key in a loaded image's ``info`` of its file's size (width, height), upright.
SOURCE_SIZE = "dreamtext_source_size"


# The images load_image returned last, under their files' identity (:func:`_file_key`), the
# latest at the end: ``dreamtext image`` checks its image before torch is imported, again in the
# command and in ``run_image``, then its stages load it; ``batch`` checks every image line before
# its first run, then each run loads its image again. A 4000 × 3000 PNG took 0.5–1.5 s to decode
# each time (2 cores); kept, at most 1024 px a side, it is 3 MB.
_loaded: OrderedDict[tuple, Image.Image] = OrderedDict()
LOADED_KEPT = 8


def load_image(path: str | Path, max_size: int = DEFAULT_MAX_SIZE) -> Image.Image:
    """Open ``path`` as an RGB image composited on white, its longer side at most ``max_size``.

    Transparency (RGBA, LA, palette or grayscale with a transparent colour) is composited over
    white: ``rgb = alpha * rgb + (1 - alpha) * 255``. Grayscale, palette and CMYK become RGB. JPEGs
    are decoded at reduced resolution when they are much larger than ``max_size`` (``Image.draft``),
    then every image is shrunk with ``thumbnail``, which keeps the aspect ratio. A camera's EXIF
    orientation is applied so that the object stands the way the user sees it.

    Asked again for one of the last ``LOADED_KEPT`` files it returned, unchanged since
    (:func:`_file_key`), it returns a copy of that image rather than decode the file again.
    """
    path = Path(path)
    check_image_path(path)
    key = _file_key(path, max_size)
    if key is not None and key in _loaded:
        _loaded.move_to_end(key)
        return _loaded[key].copy()
    rgb = _load_image(path, max_size)
    if key is not None:
        _loaded[key] = rgb.copy()
        while len(_loaded) > LOADED_KEPT:
            _loaded.popitem(last=False)
    return rgb


def _file_key(path: Path, max_size: int) -> tuple | None:
    """The file at ``path`` as it is now (which file, its size, when it last changed) and the
    size asked for; ``None`` where it cannot be read (:func:`_load_image` says why). Taken
    before the file is read: a file changed while it is read has another key next time."""
    try:
        stat = path.stat()
    except OSError:
        return None
    when = (stat.st_mtime_ns, stat.st_ctime_ns)
    return (stat.st_dev, stat.st_ino, stat.st_size, *when, max_size)


def _load_image(path: Path, max_size: int) -> Image.Image:
    """:func:`load_image`'s decoding and checks, every time."""
    try:
        pillow_warnings: list[str] = []
        with open_unchecked(path, pillow_warnings) as image:
            for warning in pillow_warnings:
                # A damaged EXIF block (read by the open) may hold the camera's orientation.
                turned = "; if the object shows turned, save the image upright"
                log.warning(f"warning: {path}: {warning}{turned if 'EXIF' in warning else ''}")
            if image.format not in SUPPORTED_FORMATS:
                raise DreamtextError(
                    f"{path}: {image.format} images are not supported; use PNG, JPEG or WebP"
                )
            width, height = image.size
            if image.format in JPEG_FORMATS:
                # Decoded at 1/2, 1/4 or 1/8 of its size where that is still max_size or
                # more a side: a 108-megapixel phone photo decodes as 1.7 megapixels.
                image.draft("RGB", (max_size, max_size))
            if image.size[0] * image.size[1] > MAX_PIXELS:  # the pixels it decodes
                raise DreamtextError(
                    f"{path}: {width}x{height} pixels is too large (possible decompression"
                    f" bomb); resize it below {MAX_PIXELS} pixels"
                )
            wide_rgb = image.mode == "RGB" and any(
                getattr(tile, "args", None) == "RGB;16B" for tile in image.tile
            )
            image.load()
            if wide_rgb and isinstance(image.info.get("transparency"), tuple):
                # A 16-bit RGB PNG's tRNS key stays 16-bit while its pixels decode to their high
                # bytes: no pixel matched it, and its "transparent" colour showed.
                image.info["transparency"] = tuple(v >> 8 for v in image.info["transparency"])
            icc = image.info.get("icc_profile")
            upright = ImageOps.exif_transpose(image)
            if upright.mode == "CMYK":  # a CMYK profile applies to the CMYK pixels
                rgb = _to_rgb_on_white(in_srgb(upright, icc, path))
            else:  # an RGB one to the colours composited on white (white is white in both)
                rgb = in_srgb(_to_rgb_on_white(upright), icc, path)
    except DreamtextError:
        raise
    except UnidentifiedImageError:
        if _is_empty(path):  # a failed copy or download, which "not an image" did not say
            message = f"{path} is empty (0 bytes); copy or download the image again"
        elif damaged := _signature_format(path):  # a cut-off download, a flipped bit
            message = f"{path}: corrupt or truncated {damaged} file (Pillow cannot read it)"
        else:
            message = f"{path}: not an image Pillow can read; use PNG, JPEG or WebP"
        raise DreamtextError(message) from None
    except PermissionError:  # the file's mode: it was "corrupt or unreadable image"
        raise unreadable_image(path) from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DreamtextError(f"{path}: corrupt or unreadable image ({error})") from None
    if rgb.getextrema() == ((255, 255),) * 3:
        # A fully transparent PNG (a background remover that erased the object too) or a white
        # page: the sentence search and the descriptor would spend hours learning nothing.
        raise DreamtextError(
            f"{path}: the image is blank (every pixel white or transparent); pass an image "
            "that shows the object"
        )
    # The file's size, upright (small_image_warning); a JPEG's draft decodes it smaller only
    # where the file is twice max_size a side or more, far above any size that warning names.
    rgb.info[SOURCE_SIZE] = rgb.size
    rgb.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    return rgb


def _is_empty(path: Path) -> bool:
    """Whether the file at ``path`` holds no byte."""
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _signature_format(path: Path) -> str | None:
    """The supported format whose signature ``path`` starts with (PNG's eight bytes, JPEG's
    ``FF D8 FF``, WebP's ``RIFF....WEBP``), for a file Pillow could not identify: a damaged one
    of that format, not one of another; ``None`` for any other start."""
    try:
        with open(path, "rb") as file:
            head = file.read(12)
    except OSError:
        return None
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


@contextmanager
def open_unchecked(path: Path, notes: list[str] | None = None) -> Iterator[Image.Image]:
    """``Image.open`` without Pillow's own pixel limit, which counts a JPEG's pixels at full
    size: :func:`_load_image` checks the pixels it decodes against :data:`MAX_PIXELS` itself,
    before it decodes any. Nothing is decoded by the open. Pillow's warnings of the open ("Corrupt
    EXIF data. ...") are added to ``notes``, not shown: they were two lines on stderr naming
    Pillow's source file, once for each open."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image = Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if notes is not None:
        notes.extend(" ".join(str(warning.message).split()).rstrip(".") for warning in caught)
    with image:
        yield image


def pad_to_square(image: Image.Image) -> Image.Image:
    """``image`` in the middle of a white square of its longer side (the offsets of
    :func:`dreamtext.augment.image_to_tensor`'s padding: ``(side − size) // 2``); a square
    image as it is."""
    width, height = image.size
    side = max(width, height)
    if width == height:
        return image
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(image.convert("RGB"), ((side - width) // 2, (side - height) // 2))
    return square


def in_srgb(image: Image.Image, icc: bytes | None, path: str | Path) -> Image.Image:
    """An RGB or CMYK ``image`` whose file embeds the ICC profile ``icc`` (Display P3 from a
    phone, Adobe RGB from a camera, a press CMYK profile) as sRGB RGB, the colours CLIP and
    Stable Diffusion learned from: its numbers read as sRGB wash out saturated colours (P3
    (230, 200, 60) is sRGB (236, 199, 0)). Converted by littlecms (Pillow's ``ImageCms``),
    perceptual intent (an sRGB profile's numbers stay as they are). Unchanged: no profile, a
    profile of another colour space than the pixels' (a gray profile), or one littlecms cannot
    read (with a warning naming ``path``, the image's file: one of a batch's images)."""
    if not icc or image.mode not in ("RGB", "CMYK"):
        return image
    try:
        from PIL import ImageCms
    except ImportError:  # a Pillow built without littlecms
        return image
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if profile.profile.xcolor_space.strip() != image.mode:
            return image
        return ImageCms.profileToProfile(
            image, profile, ImageCms.createProfile("sRGB"), outputMode="RGB"
        )
    except (ImageCms.PyCMSError, OSError, ValueError) as error:
        log.warning(
            "warning: %s: its colour profile cannot be read (%s); its colours are taken as sRGB",
            path,
            error,
        )
        return image


def _to_rgb_on_white(image: Image.Image) -> Image.Image:
    """Any Pillow mode → RGB, transparent pixels composited on white.

    16-bit grayscale is scaled to 8 bits, ``v8 = round(v16 · 255 / 65535)``: Pillow's own
    conversion clips it instead, turning everything above 255 / 65535 white. Its transparent
    gray value (a PNG tRNS chunk), if any, stays transparent.
    """
    if image.mode in WIDE_GRAY_MODES:
        wide = np.asarray(image).astype(np.int64).clip(0, 65535)
        gray = ((wide * 255 + 32767) // 65535).astype(np.uint8)
        transparent = image.info.get("transparency")
        if isinstance(transparent, int):  # a tRNS gray value: those pixels are transparent
            alpha = np.where(wide == transparent, 0, 255).astype(np.uint8)
            image = Image.fromarray(np.stack([gray, alpha], axis=-1), "LA")
        else:
            image = Image.fromarray(gray, "L")
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode in ("1", "P", "L", "RGB") and "transparency" in image.info
    )
    if not has_alpha:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def small_image_warning(image: Image.Image, path: str | Path) -> str | None:
    """The warning for an image under :data:`MIN_USEFUL_SIDE` pixels on a side as
    :func:`load_image` returned it, else ``None``. The file's own size is the one named: where
    that is larger on both sides, only its longer side's cut to ``max_size`` made the shorter
    one that small (a long, narrow strip), and the warning says to crop it instead."""
    width, height = image.size
    if min(width, height) >= MIN_USEFUL_SIDE:
        return None
    file_width, file_height = image.info.get(SOURCE_SIZE, image.size)
    if min(file_width, file_height) < MIN_USEFUL_SIDE:
        return (
            f"warning: {path} is only {file_width}x{file_height} pixels; CLIP sees it upscaled "
            "to 224x224, so the sentence will describe little; pass an image at least "
            f"{MIN_USEFUL_SIDE} pixels on each side"
        )
    return (
        f"warning: {path} ({file_width}x{file_height} pixels) is so narrow that with its "
        f"longer side cut to {max(width, height)} pixels its shorter one is {min(width, height)}, "
        "and padded to a square the object is a thin strip; the sentence will describe little: "
        "crop the image nearer to a square around the object"
    )
