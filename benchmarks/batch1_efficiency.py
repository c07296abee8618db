"""B1 at batch 1 in the exported graph: does every token reducer keep its GMACs saving in ONNX
Runtime and OpenVINO?

ViT-S re-ID (D 384, 12 blocks x 6 heads of 64, MLP 1536, 256x128 input, 16 px patches: 128
patches + CLS, BNNeck head), random weights, against the same model reduced by each method at a
rate giving about 40 % fewer GMACs (AMG kv can only drop keys / values, so its saving is smaller):

  amg-kv     AMG, keys / values for the kept tokens only (random static masks, fixed seed)
  amg-skip   AMG, pruned tokens skip the block (random static masks, fixed seed)
  topk       EViT top-k by CLS attention at blocks 3, 6, 9 (dynamic per image, static count)
  pm         Prune-and-Merge (static plans from a short calibration on synthetic images)
  tome       ToMe bipartite merging, constant r per block (dynamic per image, static count)
  heads      50 % of the heads removed: a reference without any token bookkeeping

Every model is exported by `export_onnx` at a static batch of 1 with shape folding (`fold=True`),
checked against PyTorch (1e-4 of the output scale), converted to OpenVINO IR (checked again),
and timed at batch 1 with `--threads` CPU threads (set OMP_NUM_THREADS to match), dense and
reduced interleaved in the same rounds (`measure.timing.interleaved_times`), medians reported:

  efficiency = (dense ms / reduced ms) / (dense GMACs / reduced GMACs)       target >= 0.90

`--profile` also runs ONNX Runtime's profiler (SessionOptions.enable_profiling) on every graph and
prints a per-op-type time table (ms per run) for the dense and the reduced graphs.
`--smoke`: a tiny ViT (seconds; what the tests run). Writes benchmarks/results/batch1_efficiency.json.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/batch1_efficiency.py [--threads 2] [--min-time 120] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latency_model import vit as vit_s_reid
from reidprune.cli.common import print_table, write_json
from reidprune.compress.heads import prune_heads
from reidprune.compress.tokens import prune_tokens
from reidprune.export.onnx import export_onnx
from reidprune.export.runtime import OnnxModel
from reidprune.measure import count_gmacs
from reidprune.measure.timing import cpu_name, interleaved_times, model_call, summarize_ms, torch_threads
from reidprune.models import create

TARGET = 0.90
RESULT = Path(__file__).resolve().parent / "results" / "batch1_efficiency.json"
# method -> (prune_tokens method or "heads", rate, options); rates give about 0.6 of the dense GMACs
REDUCERS: dict[str, tuple[str, float, dict[str, Any]]] = {
    "amg-kv": ("amg", 0.6, {"mode": "kv", "selection": "random"}),
    "amg-skip": ("amg", 0.4, {"mode": "skip", "selection": "random"}),
    "topk": ("topk", 0.4, {}),
    "pm": ("pm", 0.4, {}),
    "tome": ("tome", 0.4, {}),
    "heads": ("heads", 0.5, {}),
}


def vit(smoke: bool) -> nn.Module:
    """ViT-S/16 re-ID at 256x128 (BNNeck, 751 classes), or a tiny one for --smoke."""
    torch.manual_seed(0)
    if smoke:
        return create(
            "vit_tiny_reid",
            img_size=[64, 32],
            patch_size=8,
            embed_dim=64,
            num_heads=[2] * 4,
            head_dim=32,
            mlp_hidden=[128] * 4,
            num_classes=10,
            drop_path=0.0,
        ).eval()
    return vit_s_reid(smoke=False)


def calibration(model: nn.Module, batches: int = 2, size: int = 4) -> list[dict[str, torch.Tensor]]:
    """Synthetic images and labels: the plan's token counts matter for speed, not which tokens."""
    gen = torch.Generator().manual_seed(0)
    height, width = model.arch.img_size
    classes = model.arch.num_classes
    return [
        {
            "image": torch.randn(size, 3, height, width, generator=gen),
            "label": torch.randint(0, classes, (size,), generator=gen),
            "camid": torch.zeros(size, dtype=torch.long),
        }
        for _ in range(batches)
    ]


def reduce(model: nn.Module, name: str) -> nn.Module:
    method, rate, options = REDUCERS[name]
    if method == "heads":
        return prune_heads(model, "magnitude", rate=rate)[0].eval()
    data = calibration(model) if method == "pm" else None
    return prune_tokens(model, method, rate, data, **options)[0].eval()


def export(model: nn.Module, folder: Path, name: str, runtimes: list[str]) -> dict[str, Any]:
    """Static batch-1 ONNX graph (+ OpenVINO IR), both checked against PyTorch."""
    onnx_path = folder / f"{name}.onnx"
    report = export_onnx(model, onnx_path, batch=1, fold=True)
    out: dict[str, Any] = {
        "onnx": str(onnx_path),
        "onnx_max_diff": report.check.max_abs_diff if report.check else None,
        "nodes": op_counts(onnx_path),
    }
    if "openvino" in runtimes:
        from reidprune.export.openvino import export_openvino

        info = export_openvino(model, onnx_path, folder / f"{name}.xml", batch_sizes=[1])
        out["openvino"] = info["path"]
        out["openvino_max_diff"] = info["check"]["max_abs_diff"]
    return out


def op_counts(path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = defaultdict(int)
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] += 1
    return dict(sorted(counts.items()))


def runner(graph: dict[str, Any], runtime: str, threads: int) -> nn.Module:
    if runtime == "onnxruntime":
        return OnnxModel(graph["onnx"], threads=threads, spinning=False)
    from reidprune.export.openvino import OpenVinoModel

    return OpenVinoModel(graph["openvino"], threads=threads)


def profile_ops(paths: dict[str, str], threads: int, runs: int) -> dict[str, dict[str, float]]:
    """{graph: {op type: ms per run}} from ONNX Runtime's profiler (after its graph optimisations),
    every graph's runs interleaved so that machine load hits them alike; 3 warm-up runs left out."""
    import numpy as np
    import onnxruntime as ort

    from reidprune.export.wrapper import IMAGES

    with tempfile.TemporaryDirectory(prefix="reidprune-profile-") as tmp:
        sessions = {}
        for name, path in paths.items():
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(tmp) / name.replace("@", "_"))
            options.log_severity_level = 3
            sessions[name] = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        shape = next(iter(sessions.values())).get_inputs()[0].shape
        feed = {IMAGES: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
        for _ in range(3 + runs):
            for session in sessions.values():
                session.run(None, feed)
        files = {name: Path(session.end_profiling()) for name, session in sessions.items()}
        return {name: _per_op(json.loads(path.read_text()), runs) for name, path in files.items()}


def _per_op(events: list[dict[str, Any]], runs: int) -> dict[str, float]:
    # the timed runs start with the 4th model_run event
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    cutoff = starts[3] if len(starts) > 3 else 0
    per_op: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= cutoff:
            per_op[event["args"]["op_name"]] += event["dur"]
    return {op: us / runs / 1e3 for op, us in sorted(per_op.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of every runtime")
    parser.add_argument("--min-time", type=float, default=120.0, help="seconds of interleaved rounds")
    parser.add_argument("--runtimes", nargs="+", default=["onnxruntime", "openvino"])
    parser.add_argument("--only", nargs="*", choices=sorted(REDUCERS), help="measure only these reducers")
    parser.add_argument("--smoke", action="store_true", help="a tiny ViT and short timing (seconds)")
    parser.add_argument(
        "--profile", action="store_true", help="ONNX Runtime per-op-type profile of every graph"
    )
    parser.add_argument("--profile-runs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--keep", type=Path, help="also save the graphs (and graphs.json) in this folder")
    parser.add_argument(
        "--compare",
        type=Path,
        help="a --keep folder of an earlier version: its graphs join the same interleaved rounds as 'NAME@before'",
    )
    args = parser.parse_args()
    if os.environ.get("OMP_NUM_THREADS") != str(args.threads):
        print(
            f"note: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} differs from --threads {args.threads}"
        )

    start = time.perf_counter()
    names = args.only or list(REDUCERS)
    dense = vit(args.smoke)
    models = {"dense": dense, **{name: reduce(dense, name) for name in names}}
    gmacs = {name: count_gmacs(model)["gmacs"] for name, model in models.items()}
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="reidprune-b1-") as tmp, torch_threads(args.threads):
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        graphs = {name: export(model, folder, name, args.runtimes) for name, model in models.items()}
        if args.keep:
            write_json(folder / "graphs.json", graphs)
        if args.compare:
            earlier = json.loads((args.compare / "graphs.json").read_text())
            for name in list(models):
                if name in earlier:
                    graphs[f"{name}@before"] = earlier[name]
                    gmacs[f"{name}@before"] = gmacs[name]
        fns = {
            (name, runtime): model_call(runner(graph, runtime, args.threads), 1)
            for name, graph in graphs.items()
            for runtime in args.runtimes
        }
        min_time = 3.0 if args.smoke else args.min_time
        times = interleaved_times(fns, min_time=min_time, max_rounds=None if not args.smoke else 50)
        profiles = (
            profile_ops({n: g["onnx"] for n, g in graphs.items()}, args.threads, args.profile_runs)
            if args.profile
            else {}
        )
    stats = {key: summarize_ms(samples) for key, samples in times.items()}
    for name in graphs:
        base = "dense@before" if name.endswith("@before") else "dense"
        row: dict[str, Any] = {
            "gmacs": gmacs[name],
            "gmacs_ratio": gmacs["dense"] / gmacs[name],
            "nodes": graphs[name]["nodes"],
            "onnx_max_diff": graphs[name]["onnx_max_diff"],
        }
        if "openvino_max_diff" in graphs[name]:
            row["openvino_max_diff"] = graphs[name]["openvino_max_diff"]
        for runtime in args.runtimes:
            ms = stats[(name, runtime)]["median_ms"]
            speedup = stats[(base, runtime)]["median_ms"] / ms
            row[runtime] = {
                "median_ms": ms,
                "p90_ms": stats[(name, runtime)]["p90_ms"],
                "speedup": speedup,
                "efficiency": speedup / row["gmacs_ratio"],
            }
        if name in profiles:
            row["ort_profile_ms"] = profiles[name]
        rows[name] = row
    table = []
    for name, row in rows.items():
        line = {"model": name, "GMACs": row["gmacs"], "GMACs x": row["gmacs_ratio"]}
        for runtime in args.runtimes:
            short = "ORT" if runtime == "onnxruntime" else "OV"
            line[f"{short} ms"] = row[runtime]["median_ms"]
            line[f"{short} eff"] = row[runtime]["efficiency"]
        table.append(line)
    rounds = len(next(iter(times.values())))
    load = os.getloadavg()
    print_table(
        f"B1 batch 1, {args.threads} thread(s), {cpu_name()}, medians of {rounds} interleaved rounds, "
        f"load {load[0]:.2f}",
        table,
    )
    if profiles:
        print_profiles(profiles)
    reducers = [n for n in names if n != "heads"]
    summary = {
        "target": {
            "efficiency_min": TARGET,
            "efficiency": "(dense ms / reduced ms) / (dense GMACs / reduced GMACs)",
        },
        "all_pass": all(rows[n][r]["efficiency"] >= TARGET for n in reducers for r in args.runtimes),
        "settings": {
            "smoke": args.smoke,
            "threads": args.threads,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "batch": 1,
            "export": "export_onnx(batch=1, fold=True), opset 18",
            "runtimes": args.runtimes,
            "rounds": rounds,
            "compare": str(args.compare) if args.compare else None,  # NAME@before rows: that folder's graphs
            "device_name": cpu_name(),
            "load_average": list(load),
            "rates": {n: {"method": REDUCERS[n][0], "rate": REDUCERS[n][1], **REDUCERS[n][2]} for n in names},
            "torch": torch.__version__,
        },
        "models": rows,
        "seconds": time.perf_counter() - start,
    }
    if not args.smoke or args.out != RESULT:
        write_json(args.out, summary)
        print(f"wrote {args.out}")
    print(f"all reducers >= {TARGET} in every runtime: {summary['all_pass']} ({summary['seconds']:.0f} s)")


def print_profiles(profiles: dict[str, dict[str, float]]) -> None:
    """One table: op types (rows, by dense time) x graphs (columns), ms per run."""
    ops = sorted(
        {op for p in profiles.values() for op in p},
        key=lambda op: -max(p.get(op, 0) for p in profiles.values()),
    )
    rows = [{"op": op, **{name: p.get(op, 0.0) for name, p in profiles.items()}} for op in ops]
    rows.append({"op": "total", **{name: sum(p.values()) for name, p in profiles.items()}})
    print_table("ONNX Runtime profile, ms per run by op type", rows)


if __name__ == "__main__":
    main()
