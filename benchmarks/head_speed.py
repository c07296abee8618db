"""B2: does removing attention heads buy the speed its MAC count promises?

ViT-S (D 384, 12 blocks x 6 heads of 64, MLP 1536) at 256x128 (16x8 patches + CLS = 129 tokens),
on the CPU, against the same model with 3 of 6 heads removed in every block (50 % of the heads,
physically: q/k/v rows and proj columns sliced by `compress.heads.remove_heads`).

  efficiency = measured speed-up / (baseline GMACs / pruned GMACs)     target >= 0.90

at batch 64 (throughput) and batch 1 (latency). GMACs = FlopCounterMode FLOPs / 2 per image
(`reidprune.measure.count_gmacs`). Timing is side by side: the two models run alternately, one
forward each, in ABBA order, after a warm-up, under `torch.inference_mode`, so that load from
other processes on a shared machine hits both alike. The speed-up is the median over pairs of
baseline / pruned wall time. Reported next to it: the ratio of the fastest forwards, and the same
median on process CPU time (with one thread, the work done, which preemption by other processes
does not inflate). Writes benchmarks/results/head_speed.json and prints a table.

    .venv/bin/python benchmarks/head_speed.py [--threads 2 1] [--pairs-b64 6] [--pairs-b1 60]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from reidprune.cli.common import print_table, write_json
from reidprune.compress.heads import head_slots, remove_heads
from reidprune.measure import count_gmacs, count_params
from reidprune.measure.speed import cpu_name
from reidprune.models import create

TARGET = 0.90
# printed columns (short names keep the table inside 80 columns) -> result keys
SHORT = {
    "thr": "threads",
    "batch": "batch",
    "base ms": "base_ms",
    "pruned ms": "pruned_ms",
    "speedup": "speedup",
    "MACs x": "mac_ratio",
    "eff": "efficiency",
    "cpu eff": "cpu_time_efficiency",
    "pass": "pass",
}
RESULT = Path(__file__).resolve().parent / "results" / "head_speed.json"


def vit_small() -> nn.Module:
    return create("deit_small_patch16_224", img_size=[256, 128], num_classes=0).eval()


def half_heads(model: nn.Module) -> nn.Module:
    """Keep heads 0-2 of 6 in every block: exactly 50 % of the heads, the same in every block."""
    return remove_heads(model, {slot.path: [0, 1, 2] for slot in head_slots(model)}).eval()


def paired_times(
    models: tuple[nn.Module, nn.Module], batch: int, pairs: int, warmup: int
) -> tuple[list[list[float]], list[list[float]]]:
    """(wall seconds, process CPU seconds) per forward of each model, measured alternately in ABBA order."""
    images = torch.randn(batch, 3, 256, 128)
    wall: list[list[float]] = [[], []]
    cpu: list[list[float]] = [[], []]
    with torch.inference_mode():
        for model in models:
            for _ in range(warmup):
                model(images)
        for i in range(pairs):
            for which in (0, 1) if i % 2 == 0 else (1, 0):
                start_wall, start_cpu = time.perf_counter(), time.process_time()
                models[which](images)
                wall[which].append(time.perf_counter() - start_wall)
                cpu[which].append(time.process_time() - start_cpu)
    return wall, cpu


def median_ratio(base: list[float], pruned: list[float]) -> float:
    return statistics.median(b / p for b, p in zip(base, pruned, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[2], help="CPU intra-op thread counts (CI class: 2)"
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 1], choices=[64, 1])
    parser.add_argument("--pairs-b64", type=int, default=6, help="timed pairs at batch 64")
    parser.add_argument("--pairs-b1", type=int, default=60, help="timed pairs at batch 1")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    torch.manual_seed(0)
    load_start = os.getloadavg()[0]  # other processes on a shared machine disturb timings

    base = vit_small()
    pruned = half_heads(base)
    gmacs = [count_gmacs(m)["gmacs"] for m in (base, pruned)]
    params = [count_params(m) for m in (base, pruned)]
    mac_ratio = gmacs[0] / gmacs[1]

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch, pairs, warmup in ((64, args.pairs_b64, 1), (1, args.pairs_b1, 5)):
            if batch not in args.batches:
                continue
            (base_s, pruned_s), (base_cpu, pruned_cpu) = paired_times((base, pruned), batch, pairs, warmup)
            speedup = median_ratio(base_s, pruned_s)
            cpu_speedup = median_ratio(base_cpu, pruned_cpu)
            rows.append(
                {
                    "threads": threads,
                    "batch": batch,
                    "pairs": pairs,
                    "base_ms": statistics.median(base_s) * 1e3,
                    "pruned_ms": statistics.median(pruned_s) * 1e3,
                    "base_ips": batch / statistics.median(base_s),
                    "pruned_ips": batch / statistics.median(pruned_s),
                    "speedup": speedup,
                    "speedup_fastest": min(base_s) / min(pruned_s),
                    "cpu_time_speedup": cpu_speedup,
                    "mac_ratio": mac_ratio,
                    "efficiency": speedup / mac_ratio,
                    "cpu_time_efficiency": cpu_speedup / mac_ratio,
                    "pass": speedup / mac_ratio >= TARGET,
                }
            )

    result = {
        "benchmark": "B2 head pruning efficiency",
        "target": f"efficiency >= {TARGET} at batch 64 and batch 1",
        "model": "ViT-S/16 (deit_small_patch16_224 shape), 256x128, 129 tokens",
        "pruning": "3 of 6 heads removed in each of 12 blocks (36 of 72 heads)",
        "heads": {"base": list(base.arch.num_heads), "pruned": list(pruned.arch.num_heads)},
        "gmacs_per_image": {"base": gmacs[0], "pruned": gmacs[1]},
        "params": {"base": params[0], "pruned": params[1]},
        "device": "cpu",
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
        "dtype": "float32",
        "torch": torch.__version__,
        "timing": "speedup = median over ABBA pairs of baseline / pruned wall time (inference_mode); "
        "speedup_fastest = ratio of the fastest forwards; cpu_time_speedup = the same median on process "
        "CPU time, which preemption by other processes does not inflate",
        "rows": rows,
        "pass": all(r["pass"] for r in rows),
    }
    write_json(args.out, result)
    print_table(
        f"B2 head pruning, ViT-S 256x128 on the CPU, GMACs/image {gmacs[0]:.3f} -> {gmacs[1]:.3f}",
        [{short: row[key] for short, key in SHORT.items()} for row in rows],
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
