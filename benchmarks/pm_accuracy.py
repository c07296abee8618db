"""Prune-and-Merge accuracy: reidprune's residual restore against the paper's projection restore.

The paper (pm.md §3) restores the block's result with R = pinv(M): a merged patch becomes
w_j / ||w||^2 times its segment's output, so its own residual stream is replaced by a scaled copy
of the centre's. reidprune's default ("residual") merges a segment into the weighted MEAN of its
patches and gives each patch its own stream back plus the segment's update. This script measures
both on the embedded synthetic data with the demo's baseline (`src/reidprune/demo.yaml`: LA-tiny,
64x32, 4 blocks; the same baseline as token_accuracy.py and head_accuracy.py), keep rate 0.6
(rate 0.4), for:
- the paper's default prune_rate 0.1 (10 % of the patches skip each block) and merge only
  (prune_rate 0);
- without fine-tuning (the plan alone) and after 10 epochs of soft distillation from the baseline.
Every variant has the same token counts, hence the same GMACs.

Runs go through `reidprune.demo.run_demo` into benchmarks/runs/embedded (reused when the script
runs again). Writes benchmarks/results/pm_accuracy.json.

    .venv/bin/python benchmarks/pm_accuracy.py [--epochs 10]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from reidprune.cli.common import print_table, write_json
from reidprune.demo import DISTILL, Variant, run_demo

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "pm_accuracy.json"


def variant(restore: str, prune_rate: float, epochs: int) -> Variant:
    tag = "skip10" if prune_rate else "merge-only"
    name = f"pm-40-{restore}-{tag}-" + (f"kd{epochs}" if epochs else "no-finetune")
    return Variant(
        name,
        (
            "prune.method=token-pm",
            "prune.rate=0.4",
            f"prune.options={{restore: {restore}, prune_rate: {prune_rate}}}",
            *DISTILL,
            f"prune.final_epochs={epochs}",
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs after pruning")
    args = parser.parse_args()
    variants = tuple(
        variant(restore, prune_rate, epochs)
        for epochs in (0, args.epochs)
        for prune_rate in (0.1, 0.0)
        for restore in ("projection", "residual")
    )
    result = run_demo(
        HERE / "runs" / "embedded",
        overrides=["train.progress=false"],
        variants=variants,
        export=False,
        report=False,
    )
    base_map = result.rows[0]["mAP"]
    rows = result.compared()
    print_table("Prune-and-Merge keep 0.6: residual vs projection restore (embedded data)", rows)
    write_json(
        RESULT,
        {
            "settings": {
                "recipe": "src/reidprune/demo.yaml",
                "rate": 0.4,
                "finetune_epochs": args.epochs,
                "distillation": list(DISTILL),
            },
            "baseline_mAP": base_map,
            "rows": result.rows,
        },
    )
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
