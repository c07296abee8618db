"""Head pruning accuracy: entropy-guided selection (AMG) against magnitude and random selection.

On the embedded synthetic data (no download) with the demo's baseline recipe
(`src/reidprune/demo.yaml`: LA-Transformer tiny, 64x32, 4 blocks of 3 heads, 60 epochs), 50 % of
the heads (6 of 12; a block never loses its last one) are physically removed from the trained
baseline by each criterion, then fine-tuned for 10 epochs with soft distillation from it. All
variants remove the same number of heads, so they have the same parameters and GMACs; random
selection runs with three seeds. Each is also evaluated without fine-tuning, where the selection
alone decides. Reported: test mAP / rank-1 and the change against the unpruned baseline.

Every job runs through `reidprune.demo.run_demo` (the same code as `reidprune demo`) into
benchmarks/runs/embedded (shared with token_accuracy.py: one baseline), reused when the script
runs again. Writes benchmarks/results/head_accuracy.json.

    .venv/bin/python benchmarks/head_accuracy.py [--epochs 10] [--seeds 3] [--rate 0.5]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from reidprune.cli.common import print_table, write_json
from reidprune.demo import DISTILL, Variant, run_demo

HERE = Path(__file__).resolve().parent
RESULT = HERE / "results" / "head_accuracy.json"


def variant(criterion: str, rate: float, epochs: int, seed: int | None = None) -> Variant:
    tag = f"head-{criterion}-{round(rate * 100)}" + (f"-s{seed}" if seed is not None else "")
    tag += f"-kd{epochs}" if epochs else "-no-finetune"
    # the seed also drives random head selection (prune seed = run seed + round)
    seed_override = (f"seed={seed}",) if seed is not None else ()
    return Variant(
        tag,
        (
            f"prune.method=head-{criterion}",
            f"prune.rate={rate}",
            *DISTILL,
            f"prune.final_epochs={epochs}",
            *seed_override,
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs after pruning")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of random selection")
    parser.add_argument("--rate", type=float, default=0.5, help="fraction of heads removed")
    args = parser.parse_args()

    variants: list[Variant] = []
    for epochs in (args.epochs, 0):
        variants += [variant("entropy", args.rate, epochs), variant("magnitude", args.rate, epochs)]
        variants += [variant("random", args.rate, epochs, seed) for seed in range(args.seeds)]
    result = run_demo(
        HERE / "runs" / "embedded",
        overrides=["train.progress=false"],
        variants=tuple(variants),
        export=False,
        report=False,
    )
    base_map = result.rows[0]["mAP"]
    rows = result.compared(("model", "params (M)", "GMACs", "mAP", "rank-1"))
    print_table(f"head pruning {round(args.rate * 100)} %: entropy vs magnitude vs random", rows)

    by_name = {r["model"]: r["mAP"] for r in rows}
    pct = round(args.rate * 100)
    comparisons = {}
    for tag in (f"kd{args.epochs}", "no-finetune"):
        randoms = [by_name[f"head-random-{pct}-s{s}-{tag}"] for s in range(args.seeds)]
        entropy = by_name[f"head-entropy-{pct}-{tag}"]
        comparisons[tag] = {
            "entropy_mAP": entropy,
            "magnitude_mAP": by_name[f"head-magnitude-{pct}-{tag}"],
            "random_mAP": randoms,
            "entropy_vs_baseline": entropy - base_map,
            "entropy_vs_magnitude": entropy - by_name[f"head-magnitude-{pct}-{tag}"],
            "entropy_vs_random_mean": entropy - statistics.mean(randoms),
        }
    print_table(
        "entropy selection: mAP difference",
        [
            {"fine-tuning": tag, **{k: v for k, v in c.items() if k.startswith("entropy_vs")}}
            for tag, c in comparisons.items()
        ],
    )
    write_json(
        RESULT,
        {
            "settings": {
                "recipe": "src/reidprune/demo.yaml",
                "rate": args.rate,
                "finetune_epochs": args.epochs,
                "distillation": list(DISTILL),
                "random_seeds": args.seeds,
            },
            "baseline_mAP": base_map,
            "rows": result.rows,
            "comparisons": comparisons,
        },
    )
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
