"""B9 and B10: does AMG token pruning keep accuracy, and does its choice of tokens matter?

Both on the embedded synthetic data (no download), with the demo's baseline recipe
(`src/reidprune/demo.yaml`: LA-Transformer tiny, 64x32, 8x4 patches, 4 blocks of 3 heads, 60 epochs):

- B9, default embedded set: AMG removes 40 % of the (block, key token) pairs ("kv", the LA seed's
  mode) from the trained baseline, then 10 epochs of fine-tuning with soft distillation from it.
  Target: test mAP drop <= 1.0 point against the unpruned baseline.
- B10, occluded embedded set (`data.synth_occluded=true`: every query 20-50 % occluded, a
  baseline trained on that set): AMG 40 % against random token selection at AMG's per-block
  counts (the same kept tokens per block, so equal GMACs), three random seeds, each with the same
  fine-tuning; also both without any fine-tuning, where the selection alone decides.
  Target: AMG mAP higher than random; the gap (to the random mean) is reported.

Every job runs through `reidprune.demo.run_demo` (the same code as `reidprune demo`) into
benchmarks/runs/embedded and benchmarks/runs/embedded_occluded, which hold the data sets,
baselines and variants and are reused when the script runs again (delete them to recompute).
Results are deterministic for a seed on one machine. Writes benchmarks/results/token_accuracy.json.

    .venv/bin/python benchmarks/token_accuracy.py [--epochs 10] [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from reidprune.cli.common import print_table, write_json
from reidprune.demo import DISTILL, Variant, run_demo

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
RESULT = HERE / "results" / "token_accuracy.json"
B9_MAX_DROP = 1.0
AMG = ("prune.method=token-amg", "prune.rate=0.4", "prune.options={mode: kv}")


def variant(name: str, epochs: int, *options: str) -> Variant:
    return Variant(name, (*AMG, *options, *DISTILL, f"prune.final_epochs={epochs}"))


def random_options(seed: int) -> str:
    return f"prune.options={{mode: kv, selection: random, seed: {seed}}}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs after pruning")
    parser.add_argument("--seeds", type=int, default=3, help="random-selection seeds for B10")
    args = parser.parse_args()
    common = ["train.progress=false"]

    # B9: default embedded set
    b9 = run_demo(
        RUNS / "embedded",
        overrides=common,
        variants=(variant(f"amg-40-kd{args.epochs}", args.epochs), variant("amg-40-no-finetune", 0)),
        export=False,
        report=False,
    )
    b9_base = b9.rows[0]["mAP"]
    b9_amg = b9.rows[1]["mAP"]
    b9_met = b9_base - b9_amg <= B9_MAX_DROP
    print_table("B9: AMG 40 % (kv) on the embedded set", b9.compared())

    # B10: occluded embedded set, AMG vs random tokens at equal GMACs
    variants = [variant(f"amg-40-kd{args.epochs}", args.epochs), variant("amg-40-no-finetune", 0)]
    for seed in range(args.seeds):
        variants.append(variant(f"random-40-s{seed}-kd{args.epochs}", args.epochs, random_options(seed)))
        variants.append(variant(f"random-40-s{seed}-no-finetune", 0, random_options(seed)))
    b10 = run_demo(
        RUNS / "embedded_occluded",
        overrides=[*common, "data.synth_occluded=true"],
        variants=tuple(variants),
        export=False,
        report=False,
    )
    by_name = {r["model"]: r for r in b10.rows}
    b10_base = b10.rows[0]["mAP"]
    gaps = {}
    for tag in (f"kd{args.epochs}", "no-finetune"):
        randoms = [by_name[f"random-40-s{s}-{tag}"]["mAP"] for s in range(args.seeds)]
        amg = by_name[f"amg-40-{tag}"]["mAP"]
        gaps[tag] = {
            "amg_mAP": amg,
            "random_mAP": randoms,
            "random_mean": statistics.mean(randoms),
            "gap_to_mean": amg - statistics.mean(randoms),
            "gap_to_best_random": amg - max(randoms),
        }
    b10_met = all(g["gap_to_best_random"] > 0 for g in gaps.values())
    print_table("B10: AMG vs random tokens (equal GMACs), occluded embedded set", b10.compared())

    summary = [
        {
            "target": "B9",
            "what": "AMG 40 % + KD mAP drop",
            "value": b9_base - b9_amg,
            "goal": f"<= {B9_MAX_DROP}",
            "met": b9_met,
        },
        *(
            {
                "target": "B10",
                "what": f"AMG - random mAP ({tag})",
                "value": g["gap_to_mean"],
                "goal": "> 0 (vs every seed)",
                "met": g["gap_to_best_random"] > 0,
            }
            for tag, g in gaps.items()
        ),
    ]
    print_table("token accuracy targets", summary)
    write_json(
        RESULT,
        {
            "settings": {
                "recipe": "src/reidprune/demo.yaml",
                "finetune_epochs": args.epochs,
                "distillation": list(DISTILL),
                "random_seeds": args.seeds,
            },
            "b9": {"rows": b9.rows, "baseline_mAP": b9_base, "amg_mAP": b9_amg, "met": b9_met},
            "b10": {"rows": b10.rows, "baseline_mAP": b10_base, "gaps": gaps, "met": b10_met},
            "summary": summary,
        },
    )
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
