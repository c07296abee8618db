"""B7: ONNX Runtime latency of every compressed model kind at batch 1, against PyTorch eager.

Models: a ViT-S-like re-ID model (D 384, 12 blocks x 6 heads of 64, MLP 1536, 256x128 input, 16 px
patches: 16x8 patches + CLS, CLS + BNNeck head) unpruned and compressed by every method, and
ResNet-50 (re-ID layout, 256x128) unpruned and with 50 % of its internal filters removed:

  vit            unpruned
  amg-kv-40      AMG tokens, 40 % of (block, patch) pairs, kv mode (fewer keys / values)
  amg-skip-40    AMG tokens, 40 %, skip mode (pruned tokens bypass the block)
  heads-50       50 % of the heads removed ("magnitude" importance)
  pm-40          Prune-and-Merge, keep rate 0.6
  tome-40        ToMe, constant r removing about 40 % of the (block, patch) pairs
  topk-40        EViT top-k, keep rate 0.6 at blocks 3, 6, 9
  resnet50       unpruned
  resnet50-f50   HFP, 50 % of every internal conv's filters, extracted

Weights are random: latency does not depend on their values. AMG uses its data-free random
selection (counts spread evenly over the blocks), heads the data-free magnitude criterion, and
PM's Taylor scores come from a calibration pass on random images. Every model is exported by
`reidprune.export.export_onnx` (TorchScript exporter, static batch 1 with shapes folded, opset 18) and checked against
PyTorch: max |ORT - torch| <= 1e-4 x max(1, output scale). Then `reidprune.export.bench_models`
times PyTorch eager and ONNX Runtime at batch 1 in the same process, interleaved (each round runs
every (model, runtime) pair once, in rotated order), with the same number of CPU threads, and
reports medians over rounds.

  target: ORT / PyTorch batch-1 latency <= 1.0 for every model, outputs within 1e-4

Writes benchmarks/results/onnx_latency.json and prints a table.

    .venv/bin/python benchmarks/onnx_latency.py [--threads 1 2] [--min-time 60]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from latency_model import vit as vit_s_reid
from reidprune.cli.common import print_table, write_json
from reidprune.compress.filters import prune_filters
from reidprune.compress.heads import prune_heads
from reidprune.compress.tokens import prune_tokens
from reidprune.export import bench_models
from reidprune.models import create

TARGET = 1.0
TOLERANCE = 1e-4
RESULT = Path(__file__).resolve().parent / "results" / "onnx_latency.json"


def vit_small_reid() -> nn.Module:
    """ViT-S/16 with the BNNeck re-ID head at 256x128 (751 Market identities)."""
    return vit_s_reid(smoke=False)


def calibration(batches: int = 2, size: int = 4) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [
        {
            "image": torch.randn(size, 3, 256, 128, generator=gen),
            "label": torch.randint(0, 751, (size,), generator=gen),
            "camid": torch.zeros(size, dtype=torch.long),
        }
        for _ in range(batches)
    ]


def models() -> list[tuple[str, nn.Module]]:
    torch.manual_seed(0)
    vit = vit_small_reid()
    resnet = create("resnet50_reid", num_classes=751).eval()
    return [
        ("vit", vit),
        ("amg-kv-40", prune_tokens(vit, "amg", 0.4, mode="kv", selection="random")[0]),
        ("amg-skip-40", prune_tokens(vit, "amg", 0.4, mode="skip", selection="random")[0]),
        ("heads-50", prune_heads(vit, "magnitude", rate=0.5)[0]),
        ("pm-40", prune_tokens(vit, "pm", 0.4, calibration())[0]),
        ("tome-40", prune_tokens(vit, "tome", 0.4)[0]),
        ("topk-40", prune_tokens(vit, "topk", 0.4)[0]),
        ("resnet50", resnet),
        ("resnet50-f50", prune_filters(resnet, "hfp", 0.5)[0]),
    ]


def run(built: list[tuple[str, nn.Module]], threads: int, min_time: float) -> dict:
    """One interleaved measurement of every model at `threads` CPU threads; prints its table."""
    result = bench_models(built, batch_size=None, onnx=True, threads=threads, min_time=min_time)
    rows = []
    for row in result["models"]:
        check = row["onnx_check"]
        row["within_tolerance"] = bool(check["passed"])
        row["pass"] = row["within_tolerance"] and row["ort_vs_torch"] <= TARGET
        rows.append(
            {
                "model": row["name"],
                "GMACs": row["gmacs"],
                "torch ms": row["torch_latency_ms_b1"],
                "ORT ms": row["ort_latency_ms_b1"],
                "ORT/torch": row["ort_vs_torch"],
                "max diff": check["max_abs_diff"],
                "pass": "yes" if row["pass"] else "NO",
            }
        )
    result["all_pass"] = all(r["pass"] for r in result["models"])
    print_table(
        f"B7 ONNX Runtime vs PyTorch eager, batch 1, {threads} thread(s), "
        f"{result['settings']['device_name']}, medians of {result['models'][0]['rounds']} interleaved rounds",
        rows,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="CPU thread counts to measure")
    parser.add_argument(
        "--min-time", type=float, default=60.0, help="seconds of interleaved rounds per setting"
    )
    args = parser.parse_args()

    start = time.perf_counter()
    built = [(name, model.eval()) for name, model in models()]
    runs = [run(built, threads, args.min_time) for threads in args.threads]
    summary = {
        "target": {"ort_vs_torch_max": TARGET, "tolerance": TOLERANCE, "relative_to": "max(1, output scale)"},
        "all_pass": all(r["all_pass"] for r in runs),
        "worst_ratio": max(m["ort_vs_torch"] for r in runs for m in r["models"]),
        "runs": runs,
        "seconds": time.perf_counter() - start,
    }
    print(
        f"all pass: {summary['all_pass']}, worst ORT/torch {summary['worst_ratio']:.3f} "
        f"(target <= {TARGET}; outputs |diff| <= {TOLERANCE} x max(1, scale))"
    )
    write_json(RESULT, summary)
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
