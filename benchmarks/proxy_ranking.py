"""Does the budget search's proxy rank plans like their mAP after fine-tuning? Measured on the plans
B12 (`budget_quality.py`) has already pruned, fine-tuned and evaluated (issue 15, part 2).

The search compares candidate plans BEFORE fine-tuning with `budget.proxy.EmbeddingProxy` (mean
cosine distance of the plan's embeddings to the unpruned model's on training-split images) and
measures its sensitivity curves with the same proxy. Every B12 run folder holds, per plan, the
pruned model before fine-tuning (`prune_state/round1`), its mAP after 10 distillation epochs on
the test split (`summary.json`), its validation mAP (`metrics.json`, held-out training identities)
and its measured batch-1 speed-up. This script scores every plan with the proxy on the first
`--images` training images and reports Spearman's rho between -proxy and mAP:

- over all plans of a set (plans of every speed-up: mostly "how much was removed");
- within equal-latency groups, what the search needs: for each searched plan, itself and every
  uniform plan of the same seed measured within --window of its speed-up (groups of >= 3 plans),
  and the share of same-seed plan pairs within --window whose proxy order matches their mAP order.

  target (issue 15): rho > 0 over >= 6 plans, reported

Reads benchmarks/runs/budget_quality/<set> (run budget_quality.py first); writes
benchmarks/results/proxy_ranking.json and prints a table.

    .venv/bin/python benchmarks/proxy_ranking.py [--sets embedded embedded_occluded] [--images 256]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path
from typing import Any

import torch

from budget_proxy import spearman
from reidprune.cli.common import print_table, write_json

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs" / "budget_quality"
RESULT = HERE / "results" / "proxy_ranking.json"


def proxy_images(run: Path, images: int) -> list[dict[str, Any]]:
    """The first `images` training images of the set, in the loader's order under seed 0."""
    from reidprune.budget.api import first_images, take_batches
    from reidprune.config import load_config
    from reidprune.data import build_dataset, build_loaders

    cfg = load_config(run / "baseline" / "config.yaml", ["data.num_workers=0"])
    loaders = build_loaders(cfg.data, build_dataset(cfg.data), seed=0)
    batches = take_batches(loaders.train, 0 if images <= 0 else -(-images // cfg.data.batch_size), 0)
    return first_images(batches, images)


def score_set(run: Path, images: int) -> list[dict[str, Any]]:
    """Every fine-tuned plan of a B12 set: name, seed, kind, proxy, test / validation mAP, speed-up."""
    import reidprune
    from reidprune.budget.proxy import EmbeddingProxy

    summary = json.loads((run / "summary.json").read_text())
    rows = {r["model"]: r for r in (summary["rows"] if isinstance(summary, dict) else summary)}
    teacher = reidprune.load(run / "baseline" / "final").eval()
    proxy = EmbeddingProxy(teacher, proxy_images(run, images))
    plans = []
    for name, row in rows.items():
        pruned = run / name / "prune_state" / "round1"
        if name == "baseline" or not pruned.is_dir():
            continue
        metrics = json.loads((run / name / "metrics.json").read_text())
        final = next(s for s in metrics["stages"] if s.get("stage") == "final")
        with torch.no_grad():
            distance = proxy(reidprune.load(pruned).eval())
        plans.append(
            {
                "model": name,
                "seed": int(name.rsplit("-s", 1)[1]),
                "searched": name.startswith("budget-"),
                "proxy": distance,
                "mAP": row["mAP"],
                "val mAP": final["best_metric"],
                "x b1": row["x b1"],
            }
        )
    return plans


def rho(plans: list[dict[str, Any]], metric: str) -> float | None:
    return spearman([-p["proxy"] for p in plans], [p[metric] for p in plans])


def equal_latency(plans: list[dict[str, Any]], window: float, metric: str) -> dict[str, Any]:
    """Spearman within each searched plan's equal-latency group, and pairwise order agreement."""
    groups = []
    for searched in (p for p in plans if p["searched"]):
        group = [
            p for p in plans
            if p["seed"] == searched["seed"] and abs(p["x b1"] - searched["x b1"]) <= window
            and (p is searched or not p["searched"])
        ]  # fmt: skip
        if len(group) >= 3:
            groups.append({"around": searched["model"], "plans": len(group), "rho": rho(group, metric)})
    pairs = agree = 0
    for a, b in itertools.combinations(plans, 2):
        if a["seed"] != b["seed"] or abs(a["x b1"] - b["x b1"]) > window or a[metric] == b[metric]:
            continue
        pairs += 1
        agree += (a["proxy"] < b["proxy"]) == (a[metric] > b[metric])
    rhos = [g["rho"] for g in groups if g["rho"] is not None]
    return {
        "groups": groups,
        "mean rho": statistics.fmean(rhos) if rhos else None,
        "pairs": pairs,
        "pair agreement": agree / pairs if pairs else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=["embedded", "embedded_occluded"])
    parser.add_argument("--images", type=int, default=256, help="training images the proxy compares on")
    parser.add_argument("--window", type=float, default=0.05, help="equal latency: |speed-up difference| <=")
    parser.add_argument("--runs", type=Path, default=RUNS)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    torch.manual_seed(0)
    sets, table = {}, []
    for name in args.sets:
        plans = score_set(args.runs / name, args.images)
        entry: dict[str, Any] = {"plans": plans}
        for metric in ("mAP", "val mAP"):
            local = equal_latency(plans, args.window, metric)
            entry[metric] = {"rho all plans": rho(plans, metric), **local}
            table.append(
                {
                    "set": name,
                    "mAP after fine-tuning": "test" if metric == "mAP" else "validation",
                    "plans": len(plans),
                    "rho, all plans": rho(plans, metric),
                    "equal-latency groups": len(local["groups"]),
                    "mean rho in groups": local["mean rho"],
                    "pairs": local["pairs"],
                    "pair order agreement": local["pair agreement"],
                }
            )
        sets[name] = entry
    print_table(
        "Proxy ranking: -embedding distance to the teacher (before fine-tuning) vs mAP after 10 distillation "
        f"epochs, B12 plans; equal latency = same seed, speed-ups within {args.window}",
        table,
    )
    write_json(
        args.out,
        {
            "benchmark": "proxy ranking (issue 15)",
            "settings": {k: str(v) for k, v in vars(args).items()},
            "sets": sets,
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
