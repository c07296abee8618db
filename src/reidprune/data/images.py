"""Reading images: file -> decoded, resized uint8 tensor (3, H, W), or a DataError naming the file.

Decoding and resizing happen here and nowhere else, so the cached path (decode + resize once)
and the uncached path (every epoch) produce the same tensors bit for bit.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from reidprune.errors import DataError

INTERPOLATIONS = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}


def decode(path: str) -> torch.Tensor:
    """The RGB pixels of an image file as uint8 (3, H, W); DataError when missing, truncated or not an image.

    Pillow decodes (torchvision's own decoders are deprecated since 0.29). A truncated file fails
    here unless someone set PIL.ImageFile.LOAD_TRUNCATED_IMAGES, which would pad it with grey.
    """
    try:
        with Image.open(path, formats=("JPEG", "PNG")) as image:
            rgb = np.array(image.convert("RGB"))  # a writable copy that torch may own
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: corrupt or truncated image ({err}); expected a readable JPEG/PNG") from None
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


class ImageReader:
    """Decode a file and resize it to (height, width): the deterministic part of every transform.

    Returns uint8 (3, height, width). Antialiased resize, so downscaling large crops does not alias.
    """

    def __init__(self, height: int, width: int, interpolation: str = "bilinear") -> None:
        if interpolation not in INTERPOLATIONS:
            raise DataError(f"interpolation '{interpolation}': expected one of {', '.join(INTERPOLATIONS)}")
        if height <= 0 or width <= 0:
            raise DataError(f"image size {height}x{width}: expected positive height and width")
        self.size = [height, width]
        self.mode = INTERPOLATIONS[interpolation]

    def __call__(self, path: str) -> torch.Tensor:
        image = decode(path)
        if list(image.shape[-2:]) == self.size:
            return image
        return F.resize(image, self.size, interpolation=self.mode, antialias=True)


def find_unreadable(paths: Sequence[str], threads: int = 2) -> list[str]:
    """Paths among `paths` that cannot be decoded (order kept). Decodes every file once, in threads
    (Pillow's decoders release the GIL)."""

    def bad(path: str) -> bool:
        try:
            decode(path)
        except DataError:
            return True
        return False

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        flags = list(pool.map(bad, paths))
    return [path for path, flag in zip(paths, flags, strict=True) if flag]


def fill_cache(paths: Sequence[str], reader: Callable[[str], torch.Tensor], threads: int = 2) -> torch.Tensor:
    """Decode and resize every image once into one uint8 tensor (N, 3, H, W).

    One contiguous tensor, not a list of tensors: DataLoader workers then share it (fork:
    copy-on-write pages that are never written; spawn: torch shares tensor storage), instead of
    touching a Python object per image.
    """
    first = reader(paths[0])
    cache = torch.empty((len(paths), *first.shape), dtype=torch.uint8)
    cache[0] = first

    def fill(i: int) -> None:
        cache[i] = reader(paths[i])

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        list(pool.map(fill, range(1, len(paths))))
    return cache


def warn_skipped(skipped: Sequence[str]) -> None:
    shown = ", ".join(skipped[:5]) + (" ..." if len(skipped) > 5 else "")
    warnings.warn(
        f"skipped {len(skipped)} unreadable image(s) (data.skip_corrupt=true): {shown}", stacklevel=3
    )
