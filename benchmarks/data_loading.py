"""B6: training-data throughput with the decoded-image cache vs decoding every epoch.

Both modes read the embedded synthetic set (Market-1501 layout, 128 x 64 JPEGs) through the same
PK sampler and the same training augmentation at 256 x 128 (resize, flip, pad + crop,
normalise, random erasing); they differ only in `data.cache_images`. Measured side by side in
one run, per DataLoader worker count, as images/s over whole epochs after one warm-up epoch;
the cache's one-time fill is reported separately. Target: cached / uncached >= 3x, checked on
the first --workers entry (default 0: the pipeline's own per-image cost on one core; with
workers, the batches' trip through shared memory to the main process is added to both modes).

    python benchmarks/data_loading.py [--ids 120] [--epochs 3] [--workers 0 2]
Writes benchmarks/results/data_loading.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from reidprune.cli.common import print_table, write_json
from reidprune.data import build_dataset, build_loaders
from reidprune.data.config import DataConfig

TARGET = 3.0
RESULTS = Path(__file__).parent / "results" / "data_loading.json"


def timed_epoch(loaders, epoch: int) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    """(images, seconds) of one pass over the training loader."""
    loaders.set_epoch(epoch)
    start = time.perf_counter()
    images = sum(batch["image"].shape[0] for batch in loaders.train)
    return images, time.perf_counter() - start


def compare(cfg: DataConfig, splits, epochs: int) -> dict:  # type: ignore[no-untyped-def]
    """Cached vs uncached images/s, epochs interleaved (so load changes hit both alike), after one
    warm-up epoch each; plus the one-time cache fill."""
    start = time.perf_counter()
    cached = build_loaders(replace(cfg, cache_images=True), splits, seed=0)
    fill_s = time.perf_counter() - start
    decoded = build_loaders(replace(cfg, cache_images=False), splits, seed=0)
    totals = {"cached": [0, 0.0], "decoded": [0, 0.0]}
    for epoch in range(epochs + 1):
        for name, loaders in (("cached", cached), ("decoded", decoded)):
            images, seconds = timed_epoch(loaders, epoch)
            if epoch > 0:  # epoch 0 warms up workers and the allocator
                totals[name][0] += images
                totals[name][1] += seconds
    rate = {name: images / seconds for name, (images, seconds) in totals.items()}
    return {
        "workers": cfg.num_workers,
        "decode_every_epoch_img_s": round(rate["decoded"], 1),
        "cached_img_s": round(rate["cached"], 1),
        "ratio": round(rate["cached"] / rate["decoded"], 2),
        "cache_fill_s": round(fill_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ids", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument(
        "--root", default=None, help="existing synthetic set (default: generate into a temp dir)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # the loaders' work is per image; keep one core per process

    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or str(Path(tmp) / "synth")
        base = DataConfig(format="synth", root=root, synth_ids=args.ids, height=256, width=128, batch_size=64)
        start = time.perf_counter()
        splits = build_dataset(base)
        generate_s = time.perf_counter() - start
        rows = [compare(replace(base, num_workers=workers), splits, args.epochs) for workers in args.workers]
    ratio = rows[0]["ratio"]
    payload = {
        "benchmark": "B6 data loading: decoded-image cache vs decoding every epoch",
        "target": f"cached / uncached images/s >= {TARGET}",
        "ratio": ratio,
        "passed": ratio >= TARGET,
        "setup": {
            "images_per_epoch": len(splits.train),
            "size": [base.height, base.width],
            "augmentation": "flip 0.5, pad 10 + crop, normalise, random erasing 0.5",
            "batch_size": base.batch_size,
            "epochs_timed": args.epochs,
            "synth_ids": args.ids,
            "synth_generation_s": round(generate_s, 2),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "rows": rows,
    }
    write_json(RESULTS, payload)
    print_table("B6 data loading (images/s, 256x128 with augmentation)", rows)
    verdict = "PASS" if payload["passed"] else "FAIL"
    print(
        f"B6 ratio (workers={rows[0]['workers']}): {ratio:.2f}x (target >= {TARGET}x) {verdict}; wrote {RESULTS}"
    )


if __name__ == "__main__":
    main()
