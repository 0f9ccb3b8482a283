"""image_to_tensor and the augmentations' last resize, against values derived by hand."""

import numpy as np
import torch
from PIL import Image

from dreamtext.augment import AugmentConfig, ImageAugmentation, image_to_tensor


def test_image_to_tensor_averages_detail_finer_than_its_pixels() -> None:
    # Columns alternating black and white, 48 px wide, taken to 16 px: each output pixel spans
    # three columns, so an antialiased resize gives a mix of both near grey (between 1/3 and 2/3
    # for any filter over those three), never pure black or white as a point sample would.
    columns = (np.arange(48) % 2 * 255).astype(np.uint8)
    image = Image.fromarray(np.repeat(np.tile(columns, (48, 1))[..., None], 3, axis=-1))
    x = image_to_tensor(image, 16)
    assert x.shape == (1, 3, 16, 16)
    assert x.min() > 0.25 and x.max() < 0.75
    torch.testing.assert_close(x.mean(), torch.tensor(0.5), atol=0.02, rtol=0)


def _only(**kwargs) -> AugmentConfig:
    off = dict(flip_p=0, rotation_p=0, blur_p=0, crop_p=0, grayscale_p=0, jitter_p=0)
    return AugmentConfig(**{**off, **kwargs})


def test_the_default_augmentations_are_the_thesis_pipeline() -> None:
    # Ch. 6.1.9: flip p 0.5; rotation ±10° p 0.9; blur kernel 5, σ ∈ [0.1, 2], p 0.25; crop 0.8
    # p 0.5; grayscale p 0.1; colour jitter 0.1 each under RandomApply's default p 0.5.
    cfg = AugmentConfig()
    assert (cfg.flip_p, cfg.rotation_degrees, cfg.rotation_p) == (0.5, 10.0, 0.9)
    assert (cfg.blur_kernel, tuple(cfg.blur_sigma), cfg.blur_p) == (5, (0.1, 2.0), 0.25)
    assert (cfg.crop_fraction, cfg.crop_p, cfg.grayscale_p) == (0.8, 0.5, 0.1)
    assert (cfg.jitter, cfg.jitter_p) == (0.1, 0.5)
    augment = ImageAugmentation(32)
    probabilities = [augment.flip.p, augment.rotation.p, augment.blur.p, augment.grayscale.p]
    assert [*probabilities, augment.jitter.p, augment.crop_p] == [0.5, 0.9, 0.25, 0.1, 0.5, 0.5]


def test_colour_jitter_shifts_the_hue() -> None:
    # Brightness, contrast and saturation keep a pure red's green and blue equal (it stays on
    # the red-grey line); only the hue jitter (0.1 of a turn) moves them apart.
    augment = ImageAugmentation(8, _only(jitter_p=1.0))
    red = torch.zeros(1, 3, 8, 8)
    red[:, 0] = 1.0
    outs = [augment(red, seed=s) for s in range(8)]
    spreads = [(out[:, 1] - out[:, 2]).abs().max().item() for out in outs]
    assert max(spreads) > 0.05


def test_blur_softens_a_sharp_line() -> None:
    # A one-pixel black line on white: σ up to 2 with a 5-pixel kernel spreads it to its
    # neighbours in some of the draws (σ 0.1 leaves it as it is).
    augment = ImageAugmentation(16, _only(blur_p=1.0))
    image = torch.ones(1, 3, 16, 16)
    image[..., 8] = 0.0
    outs = [augment(image, seed=s) for s in range(8)]
    assert any(out[..., 7].min().item() < 0.9 for out in outs)
    assert any(out[..., 8].max().item() > 0.1 for out in outs)


def test_the_last_resize_averages_detail_finer_than_the_output_pixels() -> None:
    # Every augmentation off: a 24 px image of alternating black and white columns taken to
    # 8 px spans three columns per output pixel, so an antialiased resize gives a mix of both
    # (between 1/3 and 2/3), never the pure black or white of a point sample.
    columns = (torch.arange(24) % 2).float()
    images = columns.expand(1, 3, 24, 24).clone()
    out = ImageAugmentation(8, _only())(images, seed=0)
    assert out.shape == (1, 3, 8, 8)
    assert out.min() > 0.25 and out.max() < 0.75
