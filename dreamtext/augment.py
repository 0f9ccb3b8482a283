"""Image augmentations for descriptor training (thesis ch. 6.1.9), in kornia (pure torch).

Each training step sees a differently augmented copy of the input image, so the learned words
describe the object rather than its pose, lighting or framing. The thesis's torchvision pipeline,
in its order: horizontal flip (p 0.5); rotation ±10° with white fill (p 0.9); Gaussian blur, kernel
5, σ ∈ [0.1, 2] (p 0.25); crop to 0.8 of the side, resized back (p 0.5); grayscale (p 0.1); colour
jitter 0.1 for brightness, contrast, saturation and hue (p 0.5, ``RandomApply``'s default); resize
to the model's resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia.augmentation as K
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn


@dataclass
class AugmentConfig:
    """Probabilities and ranges of ch. 6.1.9 (defaults are the thesis's)."""

    flip_p: float = 0.5
    rotation_degrees: float = 10.0
    rotation_p: float = 0.9
    blur_kernel: int = 5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_p: float = 0.25
    crop_fraction: float = 0.8
    crop_p: float = 0.5
    grayscale_p: float = 0.1
    jitter: float = 0.1
    jitter_p: float = 0.5


def image_to_tensor(image: Image.Image, size: int) -> Tensor:
    """RGB image → ``[1, 3, size, size]`` in [0, 1]: padded to a square with white, then resized.

    Padding instead of cropping keeps the whole object; white matches the background that the
    image loader composites transparency on.
    """
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)
    x = pixels.permute(2, 0, 1)[None]
    height, width = x.shape[-2:]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    x = F.pad(x, (left, side - width - left, top, side - height - top), value=1.0)
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class ImageAugmentation(nn.Module):
    """``images: [B, 3, H, W]`` in [0, 1] → augmented ``[B, 3, size, size]`` in [0, 1]."""

    def __init__(self, size: int, cfg: AugmentConfig | None = None):
        super().__init__()
        cfg = cfg or AugmentConfig()
        self.size = size
        self.crop_fraction = cfg.crop_fraction
        self.crop_p = cfg.crop_p
        self.flip = K.RandomHorizontalFlip(p=cfg.flip_p)
        # Zero padding, applied to x − 1 (see ``rotate``): kornia's own white fill (fill_value)
        # needs kornia 0.8.3, which needs Python 3.11.
        self.rotation = K.RandomAffine(degrees=cfg.rotation_degrees, p=cfg.rotation_p)
        self.blur = K.RandomGaussianBlur(
            (cfg.blur_kernel, cfg.blur_kernel), cfg.blur_sigma, p=cfg.blur_p
        )
        self.grayscale = K.RandomGrayscale(p=cfg.grayscale_p)
        j = cfg.jitter
        self.jitter = K.ColorJitter(j, j, j, j, p=cfg.jitter_p)

    def crop(self, x: Tensor) -> Tensor:
        """Each image with probability ``crop_p``: a random ``crop_fraction`` window, resized back.

        Drawn from torch's global generator, like kornia's own parameters.
        """
        height, width = x.shape[-2:]
        h, w = round(height * self.crop_fraction), round(width * self.crop_fraction)
        out = []
        for image in x.split(1):
            if float(torch.rand(())) < self.crop_p:
                top = int(torch.randint(0, height - h + 1, ()))
                left = int(torch.randint(0, width - w + 1, ()))
                window = image[..., top : top + h, left : left + w]
                image = F.interpolate(window, size=(height, width), mode="bilinear")
            out.append(image)
        return torch.cat(out)

    def rotate(self, x: Tensor) -> Tensor:
        """Each image with probability ``rotation_p``: rotated, the corners filled with white.

        Bilinear resampling is linear with weights that sum to 1, and zero padding adds nothing,
        so ``R(x − 1) + 1`` is ``R(x)`` with 1 (white) wherever the rotation reaches outside.
        """
        return self.rotation(x - 1.0) + 1.0

    @torch.no_grad()
    def forward(self, images: Tensor, seed: int) -> Tensor:
        """Augment with a fixed ``seed`` (the same seed gives the same copy; global RNG untouched).

        Runs on the CPU so that a seed means the same augmentation on every device.
        """
        device = images.device
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only: torch.manual_seed would reseed every GPU's too, which
            # fork_rng(devices=[]) does not put back.
            torch.random.default_generator.manual_seed(seed)
            x = images.detach().float().cpu()
            x = self.flip(x)
            x = self.rotate(x)
            x = self.blur(x)
            x = self.crop(x)
            x = self.grayscale(x)
            x = self.jitter(x).clamp(0.0, 1.0)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        return x.to(device)
