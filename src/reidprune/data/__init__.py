"""Data: parsers for the standard re-ID layouts and ImageFolder, the synthetic generator,
transforms, identity (PK) and shuffling batch samplers, and loaders with an optional decoded-image cache.

    splits = build_dataset(cfg.data)                      # records: (path, pid, camid) per image
    loaders = build_loaders(cfg.data, splits, seed=cfg.seed)
    loaders.set_epoch(epoch)                              # before each training epoch
    for batch in loaders.train: batch["image"], batch["label"], batch["pid"], batch["camid"]

Exports are resolved lazily, so `reidprune.data.config` (imported by `reidprune.config`) stays
free of torch.
"""

from __future__ import annotations

from reidprune._lazy import lazy_exports

_EXPORTS = {
    "ImageRecord": "reidprune.data.records",
    "DatasetSplits": "reidprune.data.records",
    "build_dataset": "reidprune.data.build",
    "build_loaders": "reidprune.data.loaders",
    "Loaders": "reidprune.data.loaders",
    "DataConfig": "reidprune.data.config",
    "ImageDataset": "reidprune.data.datasets",
    "PKSampler": "reidprune.data.samplers",
    "ShuffleSampler": "reidprune.data.samplers",
    "ImageReader": "reidprune.data.images",
    "Normalize": "reidprune.data.transforms",
    "TrainAugment": "reidprune.data.transforms",
    "detect_layout": "reidprune.data.formats",
    "detect_format": "reidprune.data.formats",  # deprecated name of detect_layout (one release)
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
