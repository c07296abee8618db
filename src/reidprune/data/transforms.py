"""Augmentation and normalisation on image tensors (equal to torchvision.transforms.v2's kernels).

Every transform starts from the uint8 (3, H, W) image that `images.ImageReader` already resized
to the target size, so the same code serves cached and uncached loading.

Training (torchreid / TransReID recipe): horizontal flip -> zero-pad by `pad` and crop back to
(H, W) at a random offset -> float, normalise by mean/std -> random erasing (Zhong et al.
2020: area 2-33 % of the image, aspect ratio 0.3-3.3, erased to 0 = the mean colour).
Test: float + normalise only; never a random flip.

Speed (benchmark B6): the cached path must cost far less than decoding, so per-sample work is
one uint8 copy straight into the batch (flip + pad/crop fused in `shift_crop`; plain torch ops,
whose results the tests compare with torchvision's v2 kernels F.horizontal_flip / F.crop /
F.erase / F.normalize), and normalisation runs once per batch, vectorised, then erasing.

Randomness comes from an explicit `random.Random` per sample, never from the global torch RNG:
the samplers give each sample a seed that is a function of (seed, epoch, position), so a
sample's augmentation is the same whatever the worker count, world size or resume point.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch

from reidprune.data.config import DataConfig
from reidprune.errors import DataError

ERASE_SCALE = (0.02, 0.33)
ERASE_RATIO = (0.3, 3.3)


class Normalize:
    """uint8 (..., 3, H, W) -> float32, (x / 255 - mean) / std: the whole deterministic test transform.

    Works on one image or a batch; the loaders apply it to whole batches (one vectorised pass).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise DataError(f"mean {list(mean)} / std {list(std)}: expected 3 values each, std > 0")
        self.mean, self.std = list(mean), list(std)
        # x * scale + shift == (x / 255 - mean) / std
        self.scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(3, 1, 1)
        self.shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)]).view(3, 1, 1)

    def __call__(self, image: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """out: optional float32 tensor of image's shape to write into (e.g. a shared-memory batch)."""
        out = image.to(torch.float32) if out is None else out.copy_(image)
        return out.mul_(self.scale).add_(self.shift)


NO_ERASE = (0, 0, 0, 0)


class TrainAugment:
    """Random flip and pad + crop of a uint8 (3, H, W) image written into `out`; returns the
    random-erasing box (top, left, h, w), NO_ERASE for none, to apply after normalisation.

    Randomness only from `rng`, drawn in a fixed order: flip, crop offset, erasing.
    """

    def __init__(self, cfg: DataConfig) -> None:
        for name in ("flip_prob", "random_erasing"):
            value = getattr(cfg, name)
            if not 0.0 <= value <= 1.0:
                raise DataError(f"data.{name}={value}: expected a probability in [0, 1]")
        if cfg.pad < 0:
            raise DataError(f"data.pad={cfg.pad}: expected >= 0 pixels")
        self.flip_prob = cfg.flip_prob
        self.pad = cfg.pad
        self.erase_prob = cfg.random_erasing

    def __call__(
        self, image: torch.Tensor, rng: random.Random, out: torch.Tensor
    ) -> tuple[int, int, int, int]:
        height, width = image.shape[-2:]
        if rng.random() < self.flip_prob:
            image = image.flip(-1)
        top = left = 0
        if self.pad:
            top, left = rng.randint(-self.pad, self.pad), rng.randint(-self.pad, self.pad)
        shift_crop(image, top, left, out)
        box = erasing_box(rng, height, width) if rng.random() < self.erase_prob else None
        return box or NO_ERASE


def shift_crop(image: torch.Tensor, top: int, left: int, out: torch.Tensor) -> torch.Tensor:
    """out[:, y, x] = image[:, y + top, x + left], 0 where that lies outside the image.

    The same as torchvision's F.crop(image, top, left, H, W) (which zero-pads out-of-range
    pixels), i.e. Pad(p) + crop at (top + p, left + p), but written straight into `out` (a batch
    slot) with one copy. image, out: (C, H, W) of one dtype and size.
    """
    height, width = image.shape[-2:]
    y0, y1 = max(0, -top), min(height, height - top)
    x0, x1 = max(0, -left), min(width, width - left)
    if top or left:
        out.zero_()
    if y0 < y1 and x0 < x1:
        out[:, y0:y1, x0:x1] = image[:, y0 + top : y1 + top, x0 + left : x1 + left]
    return out


def erase(images: torch.Tensor, boxes: Sequence[tuple[int, int, int, int]]) -> torch.Tensor:
    """Set each image's box (top, left, h, w) to 0 in place (as F.erase with value 0). images: (B, C, H, W)."""
    for image, (top, left, h, w) in zip(images, boxes, strict=True):
        if h and w:
            image[:, top : top + h, left : left + w] = 0.0
    return images


def erasing_box(
    rng: random.Random,
    height: int,
    width: int,
    scale: tuple[float, float] = ERASE_SCALE,
    ratio: tuple[float, float] = ERASE_RATIO,
    attempts: int = 10,
) -> tuple[int, int, int, int] | None:
    """A random-erasing rectangle (top, left, h, w) in pixels, or None when no try fits.

    Area uniform in scale * H * W, aspect ratio h / w log-uniform in `ratio` (Zhong et al.).
    """
    area = height * width
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(log_low, log_high))
        h = round(math.sqrt(target * aspect))
        w = round(math.sqrt(target / aspect))
        if 0 < h < height and 0 < w < width:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    return None
