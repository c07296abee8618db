"""B14: does filter pruning of a foreign CNN buy the ONNX Runtime speed its MAC count promises?

MobileNetV3-Large (torchvision) and OSNet-x1.0 (torchreid), random weights, at 256x128: the
unpruned model and `compress.prune_filters(model, "hfp", 0.5)` (50 % of the filters of every
internal conv removed through Torch-Pruning's dependency graph), both as the plain embedder
`models.feature_extractor` exported to ONNX and run by ONNX Runtime on the CPU at batch 1:

  efficiency = measured speed-up / (baseline GMACs / pruned GMACs)     target >= 0.80

GMACs = FlopCounterMode FLOPs / 2 per image (`reidprune.measure.count_gmacs`). Timing is side by
side: the two sessions run in turn, one forward each, the order rotating every round, after a
warm-up; the speed-up is the median over rounds of (baseline time / pruned time). `--clock thread`
measures the calling thread's CPU time with one intra-op thread (what other processes' load barely
disturbs on a shared machine); `--clock wall` wall time with `--threads`. Writes
benchmarks/results/foreign_cnn_speed.json and prints a table.

    .venv/bin/python benchmarks/foreign_cnn_speed.py [--clock wall|thread] [--threads 2] [--rounds 30]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from reidprune.cli.common import print_table, write_json
from reidprune.compress import prune_filters
from reidprune.export.runtime import create_session
from reidprune.measure import count_gmacs, count_params
from reidprune.models import build_foreign, feature_extractor

RESULT = Path(__file__).resolve().parent / "results" / "foreign_cnn_speed.json"
SIZE = (256, 128)
RATE = 0.5
MODELS = {"mobilenet_v3_large": "torchvision:mobilenet_v3_large", "osnet_x1_0": "torchreid:osnet_x1_0"}


def export(model: torch.nn.Module, path: Path) -> Path:
    embedder = feature_extractor(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            embedder,
            (torch.randn(1, 3, *SIZE),),
            str(path),
            dynamo=False,
            input_names=["images"],
            opset_version=17,
        )
    return path


def rotating_times(sessions: list, images, rounds: int, warmup: int, clock) -> list[list[float]]:
    for session in sessions:
        for _ in range(warmup):
            session.run(None, {"images": images})
    times: list[list[float]] = [[] for _ in sessions]
    for r in range(rounds):
        order = list(range(len(sessions)))
        order = order[r % len(order) :] + order[: r % len(order)]
        for i in order:
            start = clock()
            sessions[i].run(None, {"images": images})
            times[i].append(clock() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clock", choices=("wall", "thread"), default="thread")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for --clock wall")
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds at batch 1")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    threads = 1 if args.clock == "thread" else args.threads
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    images = torch.randn(1, 3, *SIZE).numpy()

    rows, results = [], {}
    workdir = Path(tempfile.mkdtemp(prefix="foreign-cnn-speed-"))
    for name, base in MODELS.items():
        model = build_foreign(base, num_classes=751).eval()
        pruned, plan = prune_filters(model, "hfp", RATE, check_size=SIZE)
        gmacs = [count_gmacs(m, SIZE)["gmacs"] for m in (model, pruned)]
        params = [count_params(m)["params"] for m in (model, pruned)]
        sessions = [
            create_session(export(m, workdir / f"{name}_{tag}.onnx"), threads=threads, spinning=False)
            for m, tag in ((model, "base"), (pruned, "pruned"))
        ]
        times = rotating_times(sessions, images, args.rounds, warmup=5, clock=clock)
        speedup = statistics.median(b / p for b, p in zip(times[0], times[1], strict=True))
        mac_ratio = gmacs[0] / gmacs[1]
        results[name] = {
            "base": base,
            "pruned_convs": len(plan.details["layers"]),
            "removed_filters": plan.details["removed_filters"],
            "filters": plan.details["filters"],
            "gmacs": {"base": gmacs[0], "pruned": gmacs[1]},
            "params": {"base": params[0], "pruned": params[1]},
            "ms_per_forward_median": {
                "base": statistics.median(times[0]) * 1e3,
                "pruned": statistics.median(times[1]) * 1e3,
            },
            "gmacs_ratio": mac_ratio,
            "speedup": speedup,
            "efficiency": speedup / mac_ratio,
        }
        rows.append(
            {
                "model": name,
                "GMACs base": gmacs[0],
                "GMACs pruned": gmacs[1],
                "ms base": results[name]["ms_per_forward_median"]["base"],
                "ms pruned": results[name]["ms_per_forward_median"]["pruned"],
                "GMACs ratio": mac_ratio,
                "speed-up": speedup,
                "efficiency": speedup / mac_ratio,
            }
        )
    payload = {
        "benchmark": "B14 foreign CNN filter pruning, ONNX Runtime batch 1",
        "input_size": list(SIZE),
        "rate_removed": RATE,
        "criterion": "hfp",
        "clock": args.clock,
        "threads": threads,
        "rounds": args.rounds,
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "target_efficiency": 0.8,
        "results": results,
    }
    write_json(args.out, payload)
    print_table(f"B14: 50 % internal filters, ONNX Runtime batch 1 ({args.clock} clock)", rows)


if __name__ == "__main__":
    main()
