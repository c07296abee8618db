"""Data section of the experiment config."""

from __future__ import annotations

from dataclasses import dataclass, field

from reidprune.errors import ConfigError


@dataclass
class DataConfig:
    # market1501 | dukemtmc | occluded_duke | msmt17 | reid_folder | imagefolder | synth | auto (detect)
    format: str = "synth"
    root: str = "data/synth_market"
    # input size; None: the model's own (arch.img_size, e.g. 224x224 for DeiT / LA, 256x128 for
    # TransReID), which the jobs fill in once the model is built
    height: int | None = None
    width: int | None = None
    # training sampler: P identities x K images per batch (re-ID); plain shuffling for imagefolder.
    # batch_size is per process (per rank under DDP).
    batch_size: int = 64
    num_instances: int = 4
    sampler: str = "auto"  # auto (pk for re-ID, shuffle for imagefolder) | pk | shuffle
    test_batch_size: int = 128
    num_workers: int = 2
    cache_images: bool = True  # keep decoded images in memory (re-ID sets are small)
    cache_max_gb: float = 16.0  # splits whose cache would pass this total are decoded per epoch instead
    skip_corrupt: bool = False  # skip unreadable images with a warning and a count instead of failing
    # augmentation
    flip_prob: float = 0.5
    pad: int = 10
    random_erasing: float = 0.5
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    interpolation: str = "bilinear"  # bilinear | bicubic
    # identities held out from the training split for validation (checkpoint selection)
    val_ids: int = 0
    # synth generator (format=synth: generated into root when missing)
    synth_ids: int = 120
    synth_occluded: bool = False
    synth_seed: int = 0


def requested_size(cfg: DataConfig) -> tuple[int, int] | None:
    """(height, width) when the config sets the input size, None when it leaves it to the model."""
    if cfg.height is None and cfg.width is None:
        return None
    if cfg.height is None or cfg.width is None:
        raise ConfigError(
            f"data.height={cfg.height}, data.width={cfg.width}: set both, or neither to use the model's "
            "input size"
        )
    return int(cfg.height), int(cfg.width)
