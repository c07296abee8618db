"""The torch Dataset over a list of records: decoding (or the decoded-image cache) + transforms."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, get_worker_info

from reidprune.data.images import ImageReader, fill_cache
from reidprune.data.records import ImageRecord
from reidprune.data.transforms import NO_ERASE, Normalize, TrainAugment, erase

Key = int | tuple[int, int]


class ImageDataset(Dataset[dict[str, Any]]):
    """Images of `records` as batches: `__getitems__(keys)` (what DataLoader calls with a batch
    sampler or batch_size) returns the finished batch dict: `image` float32 (B, 3, H, W)
    normalised, `label` (training label, -1 for identities without one, e.g. query / gallery),
    `pid`, `camid`, `index` (position in `records`), all int64 (B,). `dataset[key]` is one item
    of the same, without the batch dimension.

    A key is an int index or `(index, sample_seed)` from the training samplers; with `augment`,
    the sample's random augmentation is drawn from `random.Random(sample_seed)` (an int key uses
    the index as its seed), so it never depends on worker processes or global RNG state.

    With `cache()`, images are decoded and resized once into a uint8 tensor (N, 3, H, W) and only
    the augmentation runs per sample; without it every sample is decoded from disk. Both give
    the same tensors for the same key.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        reader: ImageReader,
        normalize: Normalize,
        labels: dict[int, int] | None = None,
        augment: TrainAugment | None = None,
    ) -> None:
        self.records = list(records)
        self.reader = reader
        self.normalize = normalize
        self.labels = labels or {}
        self.augment = augment
        self.images: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.records)

    def cache_bytes(self) -> int:
        height, width = self.reader.size
        return len(self.records) * 3 * height * width

    def cache(self, threads: int = 2) -> None:
        """Decode + resize every image once, in the calling process (before any DataLoader worker starts)."""
        if self.images is None and self.records:
            self.images = fill_cache([r.path for r in self.records], self.reader, threads)

    def image(self, index: int) -> torch.Tensor:
        """uint8 (3, H, W) at the target size, from the cache or decoded from disk."""
        if self.images is not None:
            return self.images[index]
        return self.reader(self.records[index].path)

    def __getitems__(self, keys: Sequence[Key]) -> dict[str, torch.Tensor]:
        height, width = self.reader.size
        pixels = torch.empty((len(keys), 3, height, width), dtype=torch.uint8)
        boxes = []
        indices = []
        for slot, key in zip(pixels, keys, strict=True):
            index, sample_seed = key if isinstance(key, tuple) else (key, key)
            indices.append(index)
            if self.augment is None:
                slot.copy_(self.image(index))
                boxes.append(NO_ERASE)
            else:
                boxes.append(self.augment(self.image(index), random.Random(sample_seed), out=slot))
        records = [self.records[i] for i in indices]
        images = self.normalize(pixels, out=_batch_tensor(pixels.shape))
        return {
            "image": erase(images, boxes),
            "label": torch.tensor([self.labels.get(r.pid, -1) for r in records], dtype=torch.int64),
            "pid": torch.tensor([r.pid for r in records], dtype=torch.int64),
            "camid": torch.tensor([r.camid for r in records], dtype=torch.int64),
            "index": torch.tensor(indices, dtype=torch.int64),
        }

    def __getitem__(self, key: Key) -> dict[str, torch.Tensor]:
        return {name: value[0] for name, value in self.__getitems__([key]).items()}


def _batch_tensor(shape: torch.Size) -> torch.Tensor:
    """An empty float32 batch. Inside a DataLoader worker it is allocated straight in shared memory,
    as torch's default_collate does, so handing it to the main process costs no extra copy."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.float32)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * 4)
    return torch.empty(0, dtype=torch.float32).set_(storage, 0, shape)


def batch_collate(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """collate_fn for `ImageDataset`: its `__getitems__` already returns the finished batch."""
    return batch
