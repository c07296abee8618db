"""`build_dataset(cfg)`: parse the configured layout, optionally drop unreadable images, hold out
validation identities, and relabel the training identities to 0..C-1."""

from __future__ import annotations

import os
from dataclasses import replace

from reidprune.data.config import DataConfig
from reidprune.data.formats import FORMATS, detect_layout, parse
from reidprune.data.records import DatasetSplits, ImageRecord, relabel
from reidprune.data.synth import ensure as ensure_synth
from reidprune.data.validation import hold_out
from reidprune.errors import DataError


def build_dataset(cfg: DataConfig) -> DatasetSplits:
    """Records of every split of the data set described by `cfg` (format, root, val_ids, skip_corrupt).

    format "synth" generates the Market-1501-layout set into `cfg.root` first when it is missing;
    format "auto" detects the layout. With `cfg.skip_corrupt`, every image is decoded once here
    and unreadable ones are dropped with a warning (listed in `splits.skipped`); otherwise an
    unreadable image raises DataError when it is first decoded (cache fill or first use).
    """
    fmt = cfg.format
    if fmt == "auto":
        fmt = detect_layout(cfg.root)
    if fmt not in FORMATS:
        raise DataError(f"data.format='{fmt}': expected one of {', '.join(FORMATS)} or auto")
    if fmt == "synth":
        ensure_synth(cfg.root, cfg.synth_ids, cfg.synth_occluded, cfg.synth_seed)
        splits = replace(parse("market1501", cfg.root), format="synth")
    else:
        splits = parse(fmt, cfg.root)
    if cfg.skip_corrupt:
        splits = _drop_unreadable(splits, threads=min(8, os.cpu_count() or 1))
    return finalize(splits, cfg.val_ids)


def finalize(splits: DatasetSplits, val_ids: int = 0) -> DatasetSplits:
    """Hold out `val_ids` training identities (re-ID only), relabel training pids and count cameras."""
    if splits.task == "classification":
        if val_ids:
            raise DataError(
                f"data.val_ids={val_ids} holds out identities of a re-ID set; imagefolder sets "
                "validate on their own val/ split: set data.val_ids=0"
            )
        return replace(
            splits,
            num_classes=len(splits.class_names),
            num_cameras=0,
            labels={i: i for i in range(len(splits.class_names))},
        )
    train, val_query, val_gallery = hold_out(splits.train, val_ids)
    labels = relabel(r.pid for r in train)
    every = [*train, *splits.query, *splits.gallery, *val_query, *val_gallery]
    return replace(
        splits,
        train=train,
        val_query=val_query,
        val_gallery=val_gallery,
        num_classes=len(labels),
        num_cameras=1 + max(r.camid for r in every),
        labels=labels,
    )


def _drop_unreadable(splits: DatasetSplits, threads: int) -> DatasetSplits:
    from reidprune.data.images import find_unreadable, warn_skipped  # decoding stack only when needed

    names = splits.present()
    every = [r.path for name in names for r in splits.split(name)]
    bad = set(find_unreadable(every, threads))
    if not bad:
        return splits
    skipped = sorted(bad)
    warn_skipped(skipped)
    kept: dict[str, list[ImageRecord]] = {}
    for name in names:
        kept[name] = [r for r in splits.split(name) if r.path not in bad]
        if not kept[name]:
            raise DataError(f"empty split: every image of split '{name}' in {splits.root} is unreadable")
    return replace(splits, skipped=skipped, **kept)
