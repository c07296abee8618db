"""B3: does removing ResNet filters buy the speed its MAC count promises?

ResNet-50 re-ID model (`resnet50_reid`: last stride 1, BNNeck) at 256x128 on the CPU, three ways
in the same run:
- unpruned;
- masked: 50 % of the filters of every internal conv (Bottleneck conv1 and conv2) zeroed with
  their BN gamma/beta, as soft pruning leaves the network during training (same MACs, no speed-up);
- extracted: the physically smaller network `compress.filters.prune_filters(model, "hfp", 0.5)`
  builds from those zeros (checked numerically against the masked one before timing).

  efficiency = measured speed-up / (baseline GMACs / extracted GMACs)     target >= 0.80

at batch 64 (throughput) and batch 1 (latency). GMACs = FlopCounterMode FLOPs / 2 per image
(`reidprune.measure.count_gmacs`; BN, ReLU and adds are not MACs). Each model is timed in four
execution settings, the same for all three models:
- "eager": as built (NCHW tensors, BatchNorm as separate ops);
- "channels_last": NHWC memory format for weights and input (no layout reorders around oneDNN);
- "deploy": the library's inference form `reidprune.measure.prepare_for_inference` (every
  BatchNorm folded into its conv, channels_last), the form `reidprune measure` times by default
  and close to the graph ONNX Runtime executes;
- "onnxruntime": the graph `reidprune export` writes (`export_onnx`, checked against PyTorch),
  run by ONNX Runtime on the CPU with the same threads: the edge runtime, which also fuses each
  conv with its ReLU and residual add.
BN and the residual-width adds do not shrink when internal filters are removed, so the more of
that element-wise work a setting leaves, the lower the efficiency.

Timing is side by side: the three models run in turn, one forward each, the order rotating every
round, after a warm-up, under `torch.inference_mode`; a speed-up is the median over rounds of
(baseline time / other time). `--clock wall` (default) measures wall time with `--threads`
intra-op threads, the CI-class protocol for an otherwise idle machine. On a machine shared with
other jobs, `--clock thread` measures the calling thread's CPU time with one intra-op thread
(all work then runs on that thread), which other processes' load barely disturbs. Writes
benchmarks/results/filter_speed.json and prints a table.

    .venv/bin/python benchmarks/filter_speed.py [--clock wall|thread] [--threads 2]
        [--rounds-b64 3] [--rounds-b1 20] [--settings eager,channels_last,deploy,onnxruntime]
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from reidprune.cli.common import print_table, write_json
from reidprune.compress.filters import prunable_convs, prune_filters
from reidprune.compress.filters.extraction import copy_model
from reidprune.compress.filters.targets import zero_filters
from reidprune.export import OnnxModel, export_onnx
from reidprune.measure import count_gmacs, count_params, prepare_for_inference
from reidprune.models import create

TARGET = 0.80
RATE = 0.5
RESULT = Path(__file__).resolve().parent / "results" / "filter_speed.json"
NAMES = ("unpruned", "masked", "extracted")
SETTINGS = ("eager", "channels_last", "deploy", "onnxruntime")


def masked_copy(model: nn.Module, plan_layers: dict[str, dict]) -> nn.Module:
    """The unpruned model with the filters the plan removed set to zero (conv, BN gamma, beta)."""
    masked = copy_model(model)
    for target in prunable_convs(masked, "internal"):
        layer = plan_layers[target.conv]
        removed = sorted(set(range(layer["filters"])) - set(layer["kept"]))
        zero_filters(masked, target, torch.tensor(removed, dtype=torch.long))
    return masked.eval()


def prepare(model: nn.Module, setting: str, workdir: Path, threads: int) -> nn.Module:
    """The model as run in `setting`; a converted copy must give the same embedding."""
    if setting == "eager":
        return model
    if setting == "onnxruntime":  # the exported graph (checked against PyTorch by export_onnx)
        path = workdir / f"resnet50-{id(model)}.onnx"
        export_onnx(model, path)
        return OnnxModel(path, threads=threads, spinning=False)
    if setting == "deploy":
        converted = prepare_for_inference(model, channels_last=True)
        if any(isinstance(m, nn.BatchNorm2d) for m in converted.modules()):
            raise RuntimeError("deploy: prepare_for_inference left a BatchNorm2d unfolded")
    else:
        converted = copy.deepcopy(model).to(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 256, 128)
    with torch.inference_mode():
        want, got = model(images).embedding, converted(images.to(memory_format=torch.channels_last)).embedding
    deviation = ((want - got).abs().max() / want.abs().max().clamp_min(1.0)).item()
    if deviation > 1e-4:
        raise RuntimeError(f"{setting}: converted model deviates by {deviation:.3g}")
    return converted


def rotating_times(
    models: list[nn.Module], images: torch.Tensor, rounds: int, warmup: int, clock: Callable[[], float]
) -> list[list[float]]:
    """Seconds per forward of each model; each round runs every model once, in a rotated order."""
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for model in models:
            for _ in range(warmup):
                model(images)
        for r in range(rounds):
            order = [(r + i) % len(models) for i in range(len(models))]
            if r % 2:
                order.reverse()
            for which in order:
                start = clock()
                models[which](images)
                times[which].append(clock() - start)
    return times


def median_ratio(base: list[float], other: list[float]) -> float:
    return statistics.median(b / o for b, o in zip(base, other, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for --clock wall (CI: 2)")
    parser.add_argument("--rounds-b64", type=int, default=3, help="timed rounds at batch 64")
    parser.add_argument("--rounds-b1", type=int, default=20, help="timed rounds at batch 1")
    parser.add_argument(
        "--settings", default=",".join(SETTINGS), help="comma-separated subset of " + ", ".join(SETTINGS)
    )
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()
    settings = [s for s in args.settings.split(",") if s]
    if not set(settings) <= set(SETTINGS):
        parser.error(f"--settings: expected names from {SETTINGS}, got {settings}")
    threads = 1 if args.clock == "thread" else args.threads
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    torch.manual_seed(0)
    torch.set_num_threads(threads)

    base = create("resnet50_reid", img_size=[256, 128]).eval()
    extracted, plan = prune_filters(base, "hfp", RATE, scope="internal")
    extracted.eval()
    masked = masked_copy(base, plan.details["layers"])
    models = [base, masked, extracted]
    gmacs = [count_gmacs(m)["gmacs"] for m in models]
    params = [count_params(m)["params"] for m in models]
    mac_ratio = gmacs[0] / gmacs[2]

    rows, results = [], {}
    workdir = Path(tempfile.mkdtemp(prefix="filter-speed-"))
    for setting in settings:
        prepared = [prepare(m, setting, workdir, threads) for m in models]
        results[setting] = {}
        for batch, rounds, warmup in ((64, args.rounds_b64, 1), (1, args.rounds_b1, 5)):
            images = torch.randn(batch, 3, 256, 128)
            if setting in ("channels_last", "deploy"):
                images = images.to(memory_format=torch.channels_last)
            times = rotating_times(prepared, images, rounds, warmup, clock)
            speedup = {name: median_ratio(times[0], t) for name, t in zip(NAMES, times, strict=True)}
            efficiency = speedup["extracted"] / mac_ratio
            results[setting][f"batch{batch}"] = {
                "ms_per_forward_median": {
                    n: statistics.median(t) * 1e3 for n, t in zip(NAMES, times, strict=True)
                },
                "speedup_vs_unpruned": speedup,
                "efficiency": efficiency,
                "rounds": rounds,
                "passes_target": efficiency >= TARGET,
            }
            for i, name in enumerate(NAMES):
                rows.append(
                    {
                        "setting": setting,
                        "batch": batch,
                        "model": name,
                        "GMACs/img": gmacs[i],
                        "ms/forward": statistics.median(times[i]) * 1e3,
                        "speed-up": speedup[name],
                        "efficiency": speedup[name] / (gmacs[0] / gmacs[i]),
                    }
                )
            print(f"{setting} batch {batch}: efficiency {efficiency:.3f}", flush=True)

    payload = {
        "benchmark": "B3 filter pruning efficiency",
        "target": TARGET,
        "definition": "efficiency = measured speed-up / (baseline GMACs / extracted GMACs); "
        "speed-up = median over rotating rounds of baseline time / extracted time",
        "model": "resnet50_reid (last stride 1, BNNeck), input 256x128, eval, float32",
        "pruning": f"hfp, rate {RATE} (fraction removed) of every internal conv (conv1, conv2)",
        "gmacs_per_image": dict(zip(NAMES, gmacs, strict=True)),
        "params": dict(zip(NAMES, params, strict=True)),
        "mac_ratio": mac_ratio,
        "extraction_check_max_rel_deviation": plan.details["check_max_rel_deviation"],
        "results": results,
        "passes_target": {
            s: all(r["passes_target"] for r in by_batch.values()) for s, by_batch in results.items()
        },
        "settings": {
            "clock": "thread CPU time (time.thread_time)"
            if args.clock == "thread"
            else "wall (perf_counter)",
            "threads": threads,
            "device": "cpu",
            "deploy_form": "reidprune.measure.prepare_for_inference (BN folded, channels_last)",
            "onnxruntime": "reidprune.export.export_onnx graph in OnnxModel (ORT CPU, same threads, no spinning)",
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "load_average_at_end": list(_loadavg()),
        },
    }
    shutil.rmtree(workdir, ignore_errors=True)
    write_json(args.out, payload)
    title = f"B3 filter pruning, ResNet-50 256x128, CPU, {threads} thread(s), {args.clock} clock (target >= {TARGET})"
    print_table(title, rows)
    for setting, by_batch in results.items():
        for key, r in by_batch.items():
            verdict = "PASS" if r["passes_target"] else "FAIL"
            print(f"{setting} {key}: efficiency {r['efficiency']:.3f} -> {verdict}")
    print(f"wrote {args.out}")


def _loadavg() -> tuple[float, ...]:
    try:
        return os.getloadavg()
    except OSError:
        return ()


if __name__ == "__main__":
    main()
