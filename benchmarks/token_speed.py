"""B1: does token reduction buy the speed its MAC count promises, for every reducer?

ViT-S (D 384, 12 blocks x 6 heads of 64, MLP 1536) at 256x128 (16x8 patches + CLS = 129 tokens),
on the CPU, against the same model reduced to keep about 60 % of the tokens:

  dense-81-tokens  reference: the same dense ViT at 160x128 (81 tokens); its "efficiency" is what
            plain attention + MLP make of a 0.63x token count, a ceiling for every reducer below
  amg-kv    AMG rate 0.4, keys/values only for the kept tokens (LA semantics; queries and MLP keep
            all tokens, so the MAC saving is small and the test is that it is not lost to overhead)
  amg-skip  AMG rate 0.4, pruned tokens skip the whole block (TransReID semantics)
  topk      EViT-style top-k by CLS attention, keep 0.6 at blocks 4, 7, 10
  pm        Prune-and-Merge, keep 0.6, prune 0.1 (sparse merge / restore)
  tome      ToMe bipartite merging, r = 9 per block

  efficiency = measured speed-up / (baseline GMACs / reduced GMACs)     target >= 0.90

at batch 64 (throughput) and batch 1 (latency). GMACs = FlopCounterMode FLOPs / 2 per image
(`reidprune.measure.count_gmacs`). AMG and PM plans come from a real calibration pass (random
images and labels: the scores do not matter for speed, the token counts do). Timing is side by
side: baseline and reduced model run alternately, one forward each, in ABBA order, after a
warm-up, under `torch.inference_mode`, so that load from other processes hits both alike; the
speed-up is the median over pairs of (baseline time / reduced time). Writes
benchmarks/results/token_speed.json and prints a table.

On a machine shared with other busy processes, elapsed time with 2 threads is distorted (a thread
that loses its core stalls every parallel region); `--threads 1 --clock cpu` times the compute
thread's CPU time instead, which such load inflates much less (memory-bandwidth contention still
shows). The 1-minute load average at the end of the run is recorded in the JSON.

    .venv/bin/python benchmarks/token_speed.py [--threads 2] [--pairs-b64 6] [--pairs-b1 60]
    .venv/bin/python benchmarks/token_speed.py --threads 1 --clock cpu --out results/token_speed_cpu.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from reidprune.cli.common import print_table, write_json
from reidprune.compress.tokens import prune_tokens
from reidprune.measure import count_gmacs
from reidprune.models import create

TARGET = 0.90
RATE = 0.4  # keep about 0.6
RESULT = Path(__file__).resolve().parent / "results" / "token_speed.json"
REDUCERS = {
    # reference, not a reducer: the same dense ViT on 160x128 (10x8 patches, 81 tokens = 0.63 of 129),
    # i.e. how much of a token-count cut plain attention + MLP turn into time on this machine
    "dense-81-tokens": ("dense", {}),
    "amg-kv": ("amg", {"mode": "kv"}),
    "amg-skip": ("amg", {"mode": "skip"}),
    "topk": ("topk", {}),
    "pm": ("pm", {}),
    "tome": ("tome", {}),
}


def vit_small(img_size: tuple[int, int] = (256, 128)) -> nn.Module:
    # 10 classes: calibration needs logits; the classifier's cost is negligible
    return create("deit_small_patch16_224", img_size=list(img_size), num_classes=10).eval()


def calibration_batches(count: int = 2, batch: int = 8) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [
        {
            "image": torch.randn(batch, 3, 256, 128, generator=gen),
            "label": torch.randint(0, 10, (batch,), generator=gen),
        }
        for _ in range(count)
    ]


def token_counts(model: nn.Module) -> list[int]:
    """Tokens entering each block's MLP for one random image (a cheap cross-check of the plan)."""
    counts: list[int] = []
    hooks = [
        block.mlp.register_forward_hook(lambda m, i, o: counts.append(i[0].shape[1]))
        for block in model.backbone.blocks
    ]
    with torch.inference_mode():
        model(torch.randn(1, 3, 256, 128))
    for hook in hooks:
        hook.remove()
    return counts


def paired_times(
    models: tuple[nn.Module, nn.Module], batch: int, pairs: int, warmup: int, clock=time.perf_counter
) -> list[list[float]]:
    """Seconds per forward for each model (on its own input size), measured alternately in ABBA order."""
    images = [torch.randn(batch, 3, *model.arch.img_size) for model in models]
    times: list[list[float]] = [[], []]
    with torch.inference_mode():
        for model, x in zip(models, images, strict=True):
            for _ in range(warmup):
                model(x)
        for i in range(pairs):
            order = (0, 1) if i % 2 == 0 else (1, 0)
            for which in order:
                start = clock()
                models[which](images[which])
                times[which].append(clock() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU intra-op threads (CI class: 2)")
    parser.add_argument("--pairs-b64", type=int, default=6, help="timed pairs at batch 64")
    parser.add_argument("--pairs-b1", type=int, default=60, help="timed pairs at batch 1")
    parser.add_argument("--only", nargs="*", choices=sorted(REDUCERS), help="measure only these reducers")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time (the target); cpu: the thread's CPU time, a cross-check that other "
        "processes' load cannot distort (needs --threads 1)",
    )
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu measures one thread's CPU time; use it with --threads 1")
    clock = time.perf_counter if args.clock == "wall" else time.thread_time
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    base = vit_small()
    base_gmacs = count_gmacs(base)
    data = calibration_batches()
    rows, plans = [], {}
    for name in args.only or REDUCERS:
        method, options = REDUCERS[name]
        if method == "dense":
            reduced = vit_small((160, 128))
        else:
            reduced, _ = prune_tokens(
                base, method, RATE, data if method in ("amg", "pm") else None, **options
            )
            reduced.eval()
        gmacs = count_gmacs(reduced)
        mac_ratio = base_gmacs["gmacs"] / gmacs["gmacs"]
        if method != "dense":
            plans[name] = {"rate": RATE, "options": options, "mlp_tokens_per_block": token_counts(reduced)}
        for batch, pairs, warmup in ((64, args.pairs_b64, 1), (1, args.pairs_b1, 5)):
            times = paired_times((base, reduced), batch, pairs, warmup, clock)
            speedup = statistics.median(b / r for b, r in zip(times[0], times[1], strict=True))
            rows.append(
                {
                    "reducer": name,
                    "batch": batch,
                    "pairs": pairs,
                    "base_gmacs": base_gmacs["gmacs"],
                    "gmacs": gmacs["gmacs"],
                    "base_ms": statistics.median(times[0]) * 1e3,
                    "reduced_ms": statistics.median(times[1]) * 1e3,
                    "speedup": speedup,
                    "mac_ratio": mac_ratio,
                    "efficiency": speedup / mac_ratio,
                    "pass": speedup / mac_ratio >= TARGET if method != "dense" else None,  # reference row
                }
            )
            print(f"{name} batch {batch}: speed-up {speedup:.3f}, MAC ratio {mac_ratio:.3f}", flush=True)

    result = {
        "benchmark": "B1 token reduction efficiency",
        "target": f"efficiency >= {TARGET} at batch 64 and batch 1",
        "model": "ViT-S/16 (deit_small_patch16_224 shape), 256x128, 129 tokens",
        "reduction": f"rate {RATE} (keep about 0.6) with each reducer",
        "plans": plans,
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "threads": args.threads,
        "dtype": "float32",
        "torch": torch.__version__,
        "timing": "median over ABBA pairs of baseline/reduced forward time, inference_mode",
        "clock": "elapsed (wall) time" if args.clock == "wall" else "CPU time of the (single) compute thread",
        "load_average_1min": os.getloadavg()[0],
        "rows": rows,
        "pass": all(r["pass"] for r in rows if r["pass"] is not None),
    }
    write_json(args.out, result)
    print_table(
        f"B1 token reduction, ViT-S 256x128, base {base_gmacs['gmacs']:.3f} GMACs, "
        f"{args.threads} thread(s), {args.clock} clock",
        rows,
        ["reducer", "batch", "gmacs", "base_ms", "reduced_ms", "speedup", "mac_ratio", "efficiency", "pass"],
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
