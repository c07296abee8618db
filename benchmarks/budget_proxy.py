"""Does the budget search's proxy rank plans like their mAP after fine-tuning does? (issue 15, part 2)

For one trained model and data set: several candidate plans (every --budgets fraction of the dense
GMACs x every --head-weights weighting of heads against tokens; ViT), each scored by the proxy
(`budget.proxy.EmbeddingProxy`: cosine distance of its embeddings to the unpruned model's on the
calibration images), then fine-tuned for --epochs with soft distillation from the unpruned model
and evaluated on held-out VALIDATION identities of the training split (data.val_ids; never the
test split). Reports the Spearman rank correlation between -proxy and validation mAP over all
plans (>= 6 needed), and per budget.

    python benchmarks/budget_proxy.py --model runs/vit/final --data-root data/market1501 --val-ids 100 --epochs 5 \
        --config runs/vit/config.yaml --set train.lr=0.0005 train.distill_alpha=0.2

--config: the model's training config (its optimiser, loss, augmentation and input size are what
the plans are fine-tuned with; default: the library defaults, whose SGD recipe suits a ViT-B
fine-tune, not a tiny model trained with Adam); --set: further overrides (e.g. the demo's
distillation settings). --val-ids must equal the held-out identities the model was trained
without, or the "validation" identities were seen in training.
    python benchmarks/budget_proxy.py --smoke      # tiny random ViT on a generated set: checks the script runs
Writes benchmarks/results/budget_proxy.json (--smoke: budget_proxy_smoke.json).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from reidprune.cli.common import print_table, write_json

RESULTS = Path(__file__).parent / "results"


def ranks(values: list[float]) -> list[float]:
    """Ranks 1..n, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rho (Pearson on ranks); None with fewer than 3 pairs or a constant side."""
    if len(a) < 3:
        return None
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb) if va and vb else None


def setup(args: argparse.Namespace, workdir: Path) -> tuple[Any, Any, Any]:
    """(cfg, loaders, model) for the benchmark; --smoke builds a tiny set and a random tiny ViT."""
    import reidprune
    from reidprune.config import load_config
    from reidprune.data import build_dataset, build_loaders
    from reidprune.evaluate.forward import use_model_input_size
    from reidprune.models import create

    overrides = [f"data.val_ids={args.val_ids}", f"data.batch_size={args.batch_size}", "data.num_workers=0"]
    if args.smoke:
        root = workdir / "synth"  # generated on first use
        overrides += [
            f"data.root={root}",
            "data.format=synth",
            "data.synth_ids=20",
            "data.height=64",
            "data.width=32",
        ]
    else:
        overrides += [f"data.root={args.data_root}", "data.format=auto"]
    cfg = load_config(
        args.config,
        [*overrides, f"seed={args.seed}", "device=" + args.device, "train.distill=soft", *args.set],
    )
    splits = build_dataset(cfg.data)
    if args.smoke:
        torch.manual_seed(0)
        model = create(
            "vit_tiny_reid",
            depth=3,
            img_size=[64, 32],
            patch_size=8,
            embed_dim=32,
            head_dim=8,
            num_heads=[4, 4, 4],
            mlp_hidden=[64, 64, 64],
            num_classes=splits.num_classes,
        )
    else:
        model = reidprune.load(args.model)
    use_model_input_size(cfg.data, model)
    return cfg, build_loaders(cfg.data, splits, seed=args.seed), model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a reidprune ViT model directory (trained)")
    parser.add_argument("--data-root", help="data set with a training split")
    parser.add_argument(
        "--val-ids", type=int, default=100, help="training identities held out for validation"
    )
    parser.add_argument(
        "--budgets", type=float, nargs="+", default=[0.8, 0.6, 0.5], help="fractions of dense GMACs"
    )
    parser.add_argument("--head-weights", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--epochs", type=int, default=5, help="distillation fine-tuning epochs per plan")
    parser.add_argument("--calib-batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--config", type=Path, default=None, help="the model's training config (YAML)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--smoke", action="store_true", help="tiny random ViT on a generated set, 1 epoch")
    args = parser.parse_args()
    if args.smoke:
        args.val_ids, args.epochs, args.batch_size, args.budgets = 4, 1, 8, [0.8, 0.6]
    elif not (args.model and args.data_root):
        parser.error("--model and --data-root are required (or --smoke)")

    from reidprune.budget.api import take_batches
    from reidprune.budget.candidates import apply_plan, vit_space
    from reidprune.budget.cost import GmacsCostModel
    from reidprune.budget.proxy import EmbeddingProxy
    from reidprune.budget.search import greedy_search
    from reidprune.evaluate import evaluate_reid
    from reidprune.jobs.schedule import finetune
    from reidprune.train.distributed import resolve_device

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cfg, loaders, model = setup(args, workdir)
        if loaders.val_query is None or loaders.val_gallery is None:
            raise SystemExit("no validation identities: raise --val-ids")
        device = resolve_device(args.device)
        model = model.to(device)
        batches = take_batches(loaders.train, args.calib_batches, args.seed)
        start = time.perf_counter()
        space = vit_space(model, batches, mode="skip")
        costs = GmacsCostModel.for_model(model)
        proxy = EmbeddingProxy(model, batches)
        dense = costs.predict(space.sketch([0] * len(space.groups)))
        search_s = time.perf_counter() - start
        rows = []
        for budget in args.budgets:
            for weight in args.head_weights:
                result = greedy_search(space, costs, budget * dense, {"tokens": 1.0, "heads": weight})
                candidate = apply_plan(model, space, result.removed)
                score = proxy(candidate)
                teacher = copy.deepcopy(model).eval()
                tuned, _ = finetune(
                    candidate,
                    args.epochs,
                    cfg,
                    loaders,
                    workdir / f"b{budget}_w{weight}",
                    teacher,
                    device,
                    keep_files=False,
                )
                val = evaluate_reid(tuned, loaders.val_query, loaders.val_gallery, cfg.eval, device=device)
                rows.append(
                    {
                        "budget": budget,
                        "head_weight": weight,
                        "GMACs": result.cost,
                        "proxy": score,
                        "val_mAP": val["mAP"],
                        "heads": list(tuned.arch.num_heads),
                    }
                )
    rho = spearman([-r["proxy"] for r in rows], [r["val_mAP"] for r in rows])
    per_budget = {
        str(b): spearman(
            [-r["proxy"] for r in rows if r["budget"] == b], [r["val_mAP"] for r in rows if r["budget"] == b]
        )
        for b in args.budgets
    }
    print_table("budget proxy vs validation mAP after fine-tuning", rows)
    payload = {
        "smoke": args.smoke,
        "model": args.model,
        "data_root": args.data_root,
        "epochs": args.epochs,
        "config": str(args.config) if args.config else None,
        "overrides": args.set,
        "plans": rows,
        "spearman_all": rho,
        "spearman_per_budget": per_budget,
        "scoring_s": search_s,
    }
    out = RESULTS / ("budget_proxy_smoke.json" if args.smoke else "budget_proxy.json")
    print(f"Spearman(-proxy, val mAP) over {len(rows)} plans: {rho}; wrote {write_json(out, payload)}")


if __name__ == "__main__":
    main()
