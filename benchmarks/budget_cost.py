"""B13 search cost: how long does the budget search take for ViT-S/16 re-ID 256x128 on 2 cores?

`reidprune.budget.to_budget` (target x2, batch 1, ONNX Runtime, 2 threads; random weights and
calibration images, `--calib-batches` batches of 4) is timed twice: first with an empty latency
cache (every table timed and every group's sensitivity curve measured: the first search on a
machine), then again with the tables and curves cached. The search itself (calibration pass,
greedy search per head weight, proxy) is in both.

  target: first run <= 5 minutes; cached <= 10 s

Writes benchmarks/results/budget_cost.json and prints a table. --smoke times a tiny ViT on a
coarse grid (a check that the script works, not a result; written to the temporary folder).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/budget_cost.py [--threads 2] [--point-time 0.3] [--smoke]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from latency_model import SMOKE_GRID, calibration, vit
from reidprune.budget.api import to_budget
from reidprune.cli.common import print_table, write_json

FIRST_MAX_S, CACHED_MAX_S = 300.0, 10.0
RESULT = Path(__file__).resolve().parent / "results" / "budget_cost.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=float, default=2.0)
    parser.add_argument("--runtime", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--point-time", type=float, default=0.3, help="seconds per latency table point (the CLI's default)"
    )
    parser.add_argument("--calib-time", type=float, default=2.0)
    parser.add_argument("--smoke", action="store_true", help="tiny ViT, coarse grid: checks the script only")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.smoke:
        args.point_time, args.calib_time, args.target = 0.005, 0.1, 1.2  # fixed costs dominate a tiny ViT
    out = args.out or (Path(tempfile.gettempdir()) / "budget_cost.smoke.json" if args.smoke else RESULT)
    torch.set_num_threads(args.threads)
    model = vit(args.smoke)
    data = calibration(model)
    rows = []
    with tempfile.TemporaryDirectory(prefix="budget_cost_") as cache:
        latency = {
            "cache": cache,
            "min_time": args.point_time,
            "calib_time": args.calib_time,
            "grid": SMOKE_GRID if args.smoke else None,
        }
        plans = []
        for run, limit in (("first (tables timed)", FIRST_MAX_S), ("cached tables", CACHED_MAX_S)):
            start = time.perf_counter()
            _, plan = to_budget(
                model,
                data,
                target_speedup=args.target,
                runtime=args.runtime,
                batch=1,
                threads=args.threads,
                latency=latency,
                calib_batches=0,
                sensitivity_cache=Path(cache) / "sensitivity",
            )
            seconds = time.perf_counter() - start
            plans.append(plan)
            importance = plan["search"]["space"]["importance"]
            rows.append(
                {
                    "run": run,
                    "seconds": seconds,
                    "limit s": limit,
                    "ok": seconds <= limit,
                    "sensitivity curves": "read" if importance.get("cached") else "measured",
                }
            )
            print(f"{run}: {seconds:.1f} s")
    rows[1]["same plan"] = plans[0]["blocks"] == plans[1]["blocks"]
    print_table(
        f"B13 search cost: ViT-S/16 256x128, target x{args.target:g}, batch 1, {args.runtime}, "
        f"{args.threads} threads" + (" (SMOKE: tiny ViT, not a result)" if args.smoke else ""),
        rows,
    )
    write_json(
        out,
        {
            "benchmark": "B13 search cost",
            "smoke": args.smoke,
            "settings": vars(args) | {"out": str(out)},
            "all_ok": all(r["ok"] for r in rows),
            "rows": rows,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
