"""B-latency: the latency model's predicted whole-model latency against the measured one.

Models (random weights: latency does not depend on their values): ViT-S/16 re-ID at 256x128
(D 384, 12 blocks x 6 heads, MLP 1536, CLS + BNNeck) dense and compressed by every token method,
by head pruning and by heads + tokens together; ResNet-50 re-ID at 256x128 dense and with 50 % of
its internal filters removed (HFP, extracted). For each model and batch, `reidprune.budget.
predict_latency` sums the cost tables measured on the runtime (the first model fills the tables;
the others mostly reuse them), and `measure_side_by_side` times the exported whole model in the
same interleaved rounds as its family's dense model (median of timed calls, `reidprune.measure.
timing`), so that the speed-up error (predicted vs measured dense / model ratio) holds even on a
busy machine where absolute times drift between models. The tables are calibrated once per batch by the dense
model measured whole (`LatencyModel.scale`); each row also shows the uncalibrated prediction (the
raw sum of the isolated probes) to show what the calibration corrects.

Predictions are in the tables' unit: milliseconds at the load under which the load meter's reference
was cached (every table point is timed next to the meter and scaled by it). The side-by-side rounds
time the same meter (cold, as for the tables), so each measurement is also brought to that load
("measured_ms": median per-round model / meter ratio x the reference; "load": meter now /
reference). On this shared 2-core machine the same model measured 1.15-1.6x apart minutes apart
(session 5), so absolute milliseconds only compare at one load. "error_vs_raw_pct" compares the
prediction with the plain median, "error_at_current_load_pct" the prediction times the load with it.

  target: |predicted / measured - 1| <= 10 % for every model at batch 1 and 64 (at the tables' load)

Writes benchmarks/results/latency_model.json and prints a table. --smoke runs tiny models with a
coarse grid in seconds (a check that the script works, not a result; written elsewhere).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/latency_model.py [--runtime onnxruntime]
        [--batch 1 64] [--threads 2] [--min-time 5] [--min-rounds 15] [--point-time 0.5] [--calib-time 5] [--chain 4]
        [--cache DIR] [--smoke]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from reidprune.budget import Grid, measure_side_by_side, predict_latency
from reidprune.cli.common import print_table, write_json
from reidprune.compress.filters import prune_filters
from reidprune.compress.heads import prune_heads
from reidprune.compress.tokens import prune_tokens
from reidprune.models import create

TARGET_PCT = 10.0
RESULT = Path(__file__).resolve().parent / "results" / "latency_model.json"
SMOKE_GRID = Grid(
    token_fractions=(0.5, 1.0), kv_fractions=(0.5, 1.0), head_fractions=(0.0, 1.0), width_fractions=(0.5, 1.0)
)


def vit(smoke: bool) -> nn.Module:
    if smoke:
        # every head a 32-wide embedding holds (32 / 8) and MLP 4 x 32: the dense reference itself
        size = {"img_size": [32, 16], "patch_size": 4, "embed_dim": 32, "num_heads": [4] * 3, "head_dim": 8}
        return create("vit_tiny_reid", depth=3, mlp_hidden=[128] * 3, num_classes=5, **size).eval()
    return create(
        "vit_tiny_reid", img_size=[256, 128], patch_size=16, embed_dim=384, num_heads=[6] * 12, head_dim=64,
        mlp_hidden=[1536] * 12, num_classes=751, drop_path=0.0,
    ).eval()  # fmt: skip


def resnet(smoke: bool) -> nn.Module:
    if smoke:
        return create("resnet18_reid", img_size=[32, 16], stage_planes=[8, 8, 16, 16], num_classes=4).eval()
    return create("resnet50_reid", num_classes=751).eval()


def calibration(model: nn.Module) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    height, width = model.arch.img_size
    classes = model.arch.num_classes
    return [
        {
            "image": torch.randn(4, 3, height, width, generator=gen),
            "label": torch.randint(0, classes, (4,), generator=gen),
            "camid": torch.zeros(4, dtype=torch.long),
        }
        for _ in range(2)
    ]


def models(smoke: bool) -> list[tuple[str, Callable[[], nn.Module]]]:
    torch.manual_seed(0)
    v, r = vit(smoke), resnet(smoke)
    heads = lambda: prune_heads(v, "magnitude", rate=0.5)[0]  # noqa: E731
    built: list[tuple[str, Callable[[], nn.Module]]] = [
        ("vit", lambda: v),
        ("amg-kv-40", lambda: prune_tokens(v, "amg", 0.4, mode="kv", selection="random")[0]),
        ("amg-skip-40", lambda: prune_tokens(v, "amg", 0.4, mode="skip", selection="random")[0]),
        ("heads-50", heads),
        ("heads-50+topk-40", lambda: prune_tokens(heads(), "topk", 0.4)[0]),
        ("pm-40", lambda: prune_tokens(v, "pm", 0.4, calibration(v))[0]),
        ("tome-40", lambda: prune_tokens(v, "tome", 0.4)[0]),
        ("topk-40", lambda: prune_tokens(v, "topk", 0.4)[0]),
        ("resnet", lambda: r),
        ("resnet-f50", lambda: prune_filters(r, "hfp", 0.5)[0]),
    ]
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime", default="onnxruntime", help="onnxruntime | torch | cuda")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-time", type=float, default=5.0, help="seconds timing each whole model")
    parser.add_argument(
        "--min-rounds",
        type=int,
        default=15,
        help="side-by-side rounds at least (a batch-64 call takes seconds)",
    )
    parser.add_argument("--point-time", type=float, default=0.5, help="seconds timing each table point")
    parser.add_argument(
        "--calib-time", type=float, default=5.0, help="seconds timing the dense model that calibrates"
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=None,
        help="only these rows' models (default all; e.g. resnet resnet-f50)",
    )
    parser.add_argument("--chain", type=int, default=4, help="copies of a ViT half timed in a row")
    parser.add_argument(
        "--cache", type=Path, default=None, help="latency tables (default: a fresh temporary folder)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny models, coarse grid: checks the script only"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="results JSON (default results/latency_model.json)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.min_time, args.point_time = min(args.min_time, 0.5), min(args.point_time, 0.02)
        args.min_rounds = min(args.min_rounds, 5)
        args.calib_time = min(args.calib_time, 0.5)
    out = args.out or (Path(tempfile.gettempdir()) / "latency_model.smoke.json" if args.smoke else RESULT)

    start = time.perf_counter()
    rows, table = [], []
    with tempfile.TemporaryDirectory(prefix="reidprune-latency-bench-") as tmp:
        cache = args.cache or Path(tmp)
        built = models(args.smoke)
        dense_models = {False: dict(built)["vit"]().eval(), True: dict(built)["resnet"]().eval()}
        for name, build in built:
            if args.models is not None and name not in args.models:
                continue
            model = build().eval()
            for batch in args.batch:
                tic = time.perf_counter()
                options = {
                    "cache": cache, "min_time": args.point_time, "chain": args.chain,
                    "grid": SMOKE_GRID if args.smoke else None,
                }  # fmt: skip
                predicted = predict_latency(
                    model, args.runtime, batch, args.threads, calib_time=args.calib_time, **options
                )
                predict_s = time.perf_counter() - tic
                raw = predict_latency(model, args.runtime, batch, args.threads, calibrate=False, **options)
                dense = dense_models[name.startswith("resnet")]
                timed = measure_side_by_side(
                    {"dense": dense, "model": model},
                    args.runtime,
                    batch,
                    args.threads,
                    min_time=args.min_time,
                    min_rounds=args.min_rounds,
                    meter_reference_ms=predicted["meter_reference_ms"],
                )
                measured = timed["model"]
                reference = predict_latency(
                    dense, args.runtime, batch, args.threads, measure=False, **options
                )
                speedup = timed["dense"]["median_ms"] / measured["median_ms"]
                predicted_speedup = reference["predicted_ms"] / predicted["predicted_ms"]
                # the prediction is in the tables' load (the meter's reference): compare it with the
                # measurement brought to that load by the meter timed in the same rounds
                error = 100 * (predicted["predicted_ms"] / measured["normalised_ms"] - 1)
                raw_error = 100 * (raw["predicted_ms"] / measured["normalised_ms"] - 1)
                row = {
                    "model": name,
                    "batch": batch,
                    "predicted_ms": predicted["predicted_ms"],
                    "measured_ms": measured["normalised_ms"],
                    "measured_raw_ms": measured["median_ms"],
                    "load": timed["load"],
                    "measured_p90_ms": measured["p90_ms"],
                    "error_pct": error,
                    "error_at_current_load_pct": 100
                    * (predicted["predicted_ms"] * timed["load"] / measured["median_ms"] - 1),
                    "error_vs_raw_pct": 100 * (predicted["predicted_ms"] / measured["median_ms"] - 1),
                    "measured_speedup": speedup,
                    "predicted_speedup": predicted_speedup,
                    "speedup_error_pct": 100 * (predicted_speedup / speedup - 1),
                    "uncalibrated_ms": raw["predicted_ms"],
                    "uncalibrated_error_pct": raw_error,
                    "scale": predicted["calibration"]["scale"],
                    "pass": abs(error) <= TARGET_PCT,
                    "approximate": predicted["approximate"],
                    "points_timed": predicted["measured_points"],
                    "predict_seconds": predict_s,
                    "prediction": predicted,
                }
                rows.append(row)
                table.append(
                    {
                        k: row[k]
                        for k in (
                            "model",
                            "batch",
                            "predicted_ms",
                            "measured_ms",
                            "load",
                            "error_pct",
                            "error_vs_raw_pct",
                            "uncalibrated_error_pct",
                            "speedup_error_pct",
                            "scale",
                            "points_timed",
                        )
                    }
                    | {"pass": "yes" if row["pass"] else "NO"}
                )
                print(
                    f"{name} b{batch}: predicted {row['predicted_ms']:.3f} ms, measured "
                    f"{row['measured_ms']:.3f} ms ({error:+.1f} %; uncalibrated {raw_error:+.1f} %), speed-up "
                    f"predicted x{predicted_speedup:.3f} measured x{speedup:.3f}",
                    flush=True,
                )
    setting = rows[0]["prediction"]["setting"]
    print_table(
        f"latency model on {args.runtime} {setting['version']}, {args.threads} threads, {setting['device']}"
        + (" (SMOKE: tiny models, not a result)" if args.smoke else ""),
        table,
    )
    summary = {
        "target": {"abs_error_pct_max": TARGET_PCT},
        "settings": {"point_time": args.point_time, "calib_time": args.calib_time, "chain": args.chain},
        "smoke": args.smoke,
        "all_pass": all(r["pass"] for r in rows),
        "worst_error_pct": max(abs(r["error_pct"]) for r in rows),
        "worst_speedup_error_pct": max(abs(r["speedup_error_pct"]) for r in rows),
        "rows": rows,
        "seconds": time.perf_counter() - start,
    }
    print(
        f"all pass: {summary['all_pass']}, worst |error| {summary['worst_error_pct']:.1f} % (target <= "
        f"{TARGET_PCT} %), worst speed-up error {summary['worst_speedup_error_pct']:.1f} %"
    )
    write_json(out, summary)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
