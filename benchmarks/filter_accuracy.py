"""Filter pruning on the embedded data: ResNet-18 with 50 % of its internal filters removed by HFP,
SFP, FPGM and BAFD: test mAP, GMACs and measured speed-up of the extracted networks.

Recipe: `src/reidprune/demo_resnet18.yaml` (BoT-style ResNet-18 re-ID model, last stride 1, BNNeck,
64x32, trained from scratch for 30 epochs), the variants of `reidprune demo --model resnet18`:
- hfp: prune the trained weights once (smallest L1 filters), extract, fine-tune 10 epochs;
- sfp / fpgm / bafd: 10 epochs of training with the soft-pruning callback (zero / decay the
  selected filters after every epoch, hard zero at the end), then extract;
all with soft distillation from the unpruned baseline. Speed-ups are measured on the deploy form
(BatchNorm folded into the convs, channels_last; `reidprune.measure.prepare_for_inference`),
batch-1 latency and batch-64 throughput against the baseline in the same process.

Every job runs through `reidprune.demo.run_demo` into benchmarks/runs/embedded/resnet18 (reused
when the script runs again; delete it to recompute). Writes benchmarks/results/filter_accuracy.json.

Each method is fine-tuned with three seeds from the same baseline (`--seeds`): the spread shows how
much of a difference between methods is noise.

    .venv/bin/python benchmarks/filter_accuracy.py [--epochs 10] [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from reidprune.cli.common import print_table, write_json
from reidprune.demo import FILTER_VARIANTS, Variant, run_demo

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "filter_accuracy.json"


def variants(epochs: int, seeds: int) -> tuple[Variant, ...]:
    """Each method at each fine-tuning seed (seed 0 keeps the plain name, so earlier runs are reused)."""
    out = []
    for seed in range(seeds):
        suffix, extra = (f"-s{seed}", (f"seed={seed}",)) if seed else ("", ())
        # the epochs in the name: a run with other epochs is not mistaken for a finished one
        out += [Variant(f"{v.name}-kd{epochs}{suffix}", (*v.overrides, *extra)) for v in FILTER_VARIANTS]
    return tuple(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning / soft-pruning epochs")
    parser.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds per method (same baseline)")
    args = parser.parse_args()
    result = run_demo(
        HERE / "runs" / "embedded",  # -> runs/embedded/resnet18, data shared with the ViT benchmarks
        overrides=["train.progress=false", f"prune.final_epochs={args.epochs}"],
        model="resnet18",
        variants=variants(args.epochs, args.seeds),
        export=False,
        report=False,
    )
    base = result.rows[0]
    rows = [
        {
            **row,
            "GMACs ratio": base["GMACs"] / row["GMACs"],
            "mAP change": row["mAP"] - base["mAP"],
        }
        for row in result.rows
    ]
    print_table(
        "ResNet-18, 50 % internal filters removed (embedded data); x = speed-up of the deploy form "
        "(BN folded, channels_last) at batch 64 / batch 1",
        rows,
        ["model", "params (M)", "GMACs", "GMACs ratio", "mAP", "mAP change", "rank-1", "x b64", "x b1"],
    )
    summary = []
    for v in FILTER_VARIANTS:
        maps = [r["mAP"] for r in rows if r["model"].startswith(f"{v.name}-kd{args.epochs}")]
        summary.append(
            {
                "method": v.name,
                "seeds": len(maps),
                "mAP mean": statistics.mean(maps),
                "mAP min": min(maps),
                "mAP max": max(maps),
                "change (mean)": statistics.mean(maps) - base["mAP"],
            }
        )
    print_table(f"mAP over fine-tuning seeds (baseline {base['mAP']:.1f})", summary)
    write_json(
        RESULT,
        {
            "settings": {
                "recipe": "src/reidprune/demo_resnet18.yaml",
                "epochs": args.epochs,
                "seeds": args.seeds,
                "deploy": True,
            },
            "rows": rows,
            "summary": summary,
        },
    )
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
