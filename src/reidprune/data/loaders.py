"""`build_loaders(cfg, splits)`: DataLoaders for every split, batches as dicts.

Batch: `image` float32 (B, 3, H, W) normalised; `label` int64 (training label 0..C-1 in the
training split and classification splits; -1 in re-ID query / gallery / val_query / val_gallery);
`pid`, `camid` (0-based), `index` (position in the split) int64.

Training uses a batch sampler (`PKSampler` for re-ID, `ShuffleSampler` for classification;
`data.sampler` overrides), evaluation loaders read in order. Call `loaders.set_epoch(e)` before
each epoch and `loaders.set_start(b)` to resume inside one.

Decoded-image cache (`data.cache_images`): each split's images are decoded and resized to
(height, width) ONCE, in this (main) process, into one uint8 tensor before any DataLoader
worker exists; workers inherit it (fork: shared copy-on-write pages that are only read; spawn:
torch moves tensor storage to shared memory), so nothing is decoded again per worker or per
epoch, and only the random augmentation runs per sample. Workers are persistent so they are not
re-created every epoch either. Splits are cached in order (train first) while the total stays
within `data.cache_max_gb`; the others decode from disk with a warning. Under DDP every process
holds its own cache.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from reidprune.data.config import DataConfig, requested_size
from reidprune.data.datasets import ImageDataset, batch_collate
from reidprune.data.images import ImageReader
from reidprune.data.records import DatasetSplits
from reidprune.data.samplers import EpochBatchSampler, PKSampler, ShardSampler, ShuffleSampler
from reidprune.data.transforms import Normalize, TrainAugment
from reidprune.errors import ConfigError, DataError

EVAL_SPLITS = ("query", "gallery", "val_query", "val_gallery", "val")
SAMPLERS = ("auto", "pk", "shuffle")


@dataclass
class Loaders:
    """One DataLoader per split (None where the split is empty); `train` uses an epoch batch sampler."""

    train: DataLoader | None
    query: DataLoader | None = None
    gallery: DataLoader | None = None
    val_query: DataLoader | None = None
    val_gallery: DataLoader | None = None
    val: DataLoader | None = None

    @property
    def train_sampler(self) -> EpochBatchSampler:
        if self.train is None:
            raise DataError("no training split, so no training sampler")
        return self.train.batch_sampler  # type: ignore[return-value]

    def set_epoch(self, epoch: int) -> None:
        """Make the training batches of `epoch` (deterministic from (seed, epoch))."""
        self.train_sampler.set_epoch(epoch)

    def set_start(self, batch_index: int) -> None:
        """Resume: the next pass over `train` starts at this rank's batch `batch_index` of the current epoch."""
        self.train_sampler.set_start(batch_index)


def build_loaders(
    cfg: DataConfig,
    splits: DatasetSplits,
    distributed: bool = False,
    *,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
) -> Loaders:
    """DataLoaders for the splits of `build_dataset(cfg)`.

    distributed: shard training batches (and evaluation items, see `ShardSampler`) over the
    ranks of the initialised torch.distributed group; `rank` / `world_size` override it (tests).
    seed: the experiment seed; with the epoch it fixes batch composition and every augmentation.
    """
    rank, world_size = _rank_and_world(distributed, rank, world_size)
    if cfg.sampler not in SAMPLERS:
        raise DataError(f"data.sampler='{cfg.sampler}': expected one of {', '.join(SAMPLERS)}")
    size = requested_size(cfg)
    if size is None:
        raise ConfigError(
            "data.height / data.width are not set: set them, or let the job take the model's input size "
            "(reidprune.models.forward.use_model_input_size)"
        )
    reader = ImageReader(*size, cfg.interpolation)
    normalize = Normalize(cfg.mean, cfg.std)
    datasets: dict[str, ImageDataset] = {}
    if splits.train:
        datasets["train"] = ImageDataset(splits.train, reader, normalize, splits.labels, TrainAugment(cfg))
    # re-ID test pids may reuse training numbers for other people (MSMT17 lists restart at 0), so
    # only training records get labels; classification val records share the training classes
    eval_labels = splits.labels if splits.task == "classification" else None
    for name in EVAL_SPLITS:
        if splits.split(name):
            datasets[name] = ImageDataset(splits.split(name), reader, normalize, eval_labels)
    if cfg.cache_images:
        _fill_caches(datasets, cfg.cache_max_gb)

    common: dict[str, Any] = {
        "num_workers": cfg.num_workers,
        "pin_memory": torch.cuda.is_available(),
        "persistent_workers": cfg.num_workers > 0,
    }
    loaders = Loaders(train=None)
    if "train" in datasets:
        sampler = _train_sampler(cfg, splits, seed, rank, world_size)
        loaders.train = DataLoader(
            datasets["train"], batch_sampler=sampler, collate_fn=batch_collate, **common
        )
    for name in EVAL_SPLITS:
        if name in datasets:
            shard = ShardSampler(len(datasets[name]), rank, world_size) if world_size > 1 else None
            loader = DataLoader(
                datasets[name],
                cfg.test_batch_size,
                sampler=shard,
                shuffle=False,
                collate_fn=batch_collate,
                **common,
            )
            setattr(loaders, name, loader)
    return loaders


def _train_sampler(
    cfg: DataConfig, splits: DatasetSplits, seed: int, rank: int, world_size: int
) -> EpochBatchSampler:
    kind = cfg.sampler
    if kind == "auto":
        kind = "pk" if splits.task == "reid" else "shuffle"
    if kind == "pk":
        return PKSampler(
            [r.pid for r in splits.train], cfg.batch_size, cfg.num_instances, seed, rank, world_size
        )
    return ShuffleSampler(len(splits.train), cfg.batch_size, seed, rank, world_size)


def _fill_caches(datasets: dict[str, ImageDataset], max_gb: float) -> None:
    budget = max_gb * 2**30
    threads = min(8, os.cpu_count() or 1)
    used = 0
    for name, dataset in datasets.items():
        need = dataset.cache_bytes()
        if used + need > budget:
            warnings.warn(
                f"not caching split '{name}': {need / 2**30:.2f} GiB would pass data.cache_max_gb={max_gb} "
                f"({used / 2**30:.2f} GiB used); it is decoded from disk every epoch",
                stacklevel=3,
            )
            continue
        dataset.cache(threads)
        used += need


def _rank_and_world(distributed: bool, rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None or world_size is not None:
        return rank or 0, world_size or 1
    if not distributed:
        return 0, 1
    if not (dist.is_available() and dist.is_initialized()):
        raise DataError(
            "build_loaders(distributed=True) needs an initialised torch.distributed process group "
            "(launch with torchrun and call init_distributed first)"
        )
    return dist.get_rank(), dist.get_world_size()
