"""Several models side by side in one process: parameters, GMACs, PyTorch, ONNX Runtime and OpenVINO speed.

Timings are interleaved: every round times each (model, runtime) pair once, in an order rotated
from round to round, and the medians over rounds are reported. On a shared, noisy machine a
slow spell then hits every pair alike, so the ratios between them stay meaningful even when the
absolute numbers drift. PyTorch runs eager in `torch.inference_mode`; ONNX Runtime runs the graph
exported by `export_onnx` (checked against PyTorch first) with the same number of CPU threads,
its pool threads told not to busy-wait between runs (they would steal cores from the next call);
OpenVINO (runtimes=("onnxruntime", "openvino")) runs the IR converted from that graph, checked
against PyTorch too, with the same threads, one stream and the latency hint.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reidprune.measure.timing import (
    cpu_name,
    interleaved_times,
    latency_ms,
    model_call,
    summarize_ms,
    torch_threads,
)

# the timing helpers live in `reidprune.measure.timing`; these names forward to them
__all__ = [
    "RUNTIMES",
    "bench_models",
    "interleaved_times",
    "ort_call",
    "summarize_ms",
    "torch_call",
    "variant_latency",
]

RUNTIMES = ("onnxruntime", "openvino")
PREFIX = {"torch_b1": "torch", "ort_b1": "ort", "openvino_b1": "openvino"}  # timed key -> row field prefix


def torch_call(model: nn.Module, batch: int, channels_last: bool = False) -> Callable[[], Any]:
    """A PyTorch forward on a fixed random batch (`measure.timing.model_call`)."""
    return model_call(model, batch, channels_last=channels_last)


def ort_call(onnx_model: nn.Module, batch: int) -> Callable[[], Any]:
    """A forward of an exported graph (`OnnxModel`, `OpenVinoModel`) on a fixed random batch."""
    return model_call(onnx_model, batch)


def variant_latency(
    variants: dict[str, nn.Module], *, batch: int = 1, min_time: float = 2.0, rounds: int | None = None
) -> dict[str, dict[str, float]]:
    """{name: median_ms, p90_ms} of one forward at `batch` for every variant (PyTorch models and
    exported graphs alike), timed in the same interleaved rounds (`measure.timing.latency_ms`)."""
    return latency_ms(variants, batch=batch, min_time=min_time, rounds=rounds)


def bench_models(
    models: Sequence[tuple[str, nn.Module]],
    *,
    batch_size: int | None = 64,
    onnx: bool = True,
    threads: int | None = None,
    min_time: float = 2.0,
    rounds: int | None = None,
    workdir: str | Path | None = None,
    opset: int | None = None,
    runtimes: Sequence[str] = ("onnxruntime",),
) -> dict[str, Any]:
    """Measure every (name, model) on the CPU, interleaved, in this process.

    batch_size: PyTorch throughput batch (None = no throughput measurement); batch-1 latency is
    always measured, for PyTorch and (onnx=True) each of `runtimes` ("onnxruntime", "openvino";
    OpenVINO runs the IR converted from the checked ONNX graph). threads: CPU threads for every
    runtime (default: torch's current setting). min_time: seconds the timed rounds should last
    in all (per measurement kind and model about min_time / number of timed calls per round).
    workdir: where the graphs are written (default: a temporary folder, deleted afterwards); they
      have a static batch of 1 with shapes folded (`export_onnx(batch=1, fold=True)`).
    Returns {"models": [one dict per model], "settings": {...}}: per model params, attn_params,
    gmacs, blocks_gmacs, torch_throughput_ips, torch_latency_ms_b1 (+ _p90), ort_latency_ms_b1
    (+ _p90), ort_vs_torch (ORT / PyTorch batch-1 latency; < 1 = ORT faster), onnx_check; with
    OpenVINO also openvino_latency_ms_b1 (+ _p90), openvino_vs_torch, openvino_check.
    """
    from reidprune.export.onnx import DEFAULT_OPSET, describe_source, export_onnx
    from reidprune.export.runtime import OnnxModel
    from reidprune.measure import count_gmacs, count_params

    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise ValueError(f"runtimes {unknown}: expected any of {', '.join(RUNTIMES)}")
    if "openvino" in runtimes and onnx:
        from reidprune.export.openvino import OpenVinoModel, export_openvino, require_openvino

        require_openvino()  # fail before the first export, not after it
    names = [name for name, _ in models]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    rows: dict[str, dict[str, Any]] = {}
    fns: dict[str, Callable[[], Any]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="reidprune-bench-") as tmp,
        torch_threads(threads) as used_threads,
    ):
        folder = Path(workdir) if workdir is not None else Path(tmp)
        for name, model in models:
            model = model.eval().to("cpu")
            params, macs = count_params(model), count_gmacs(model)
            rows[name] = {
                "name": name,
                **params,
                "gmacs": macs["gmacs"],
                "blocks_gmacs": macs["blocks_gmacs"],
                "input_size": macs["input_size"],
                "source": describe_source(model),
            }
            if batch_size is not None:
                fns[f"{name}\ttorch_batch"] = model_call(model, batch_size)
            fns[f"{name}\ttorch_b1"] = model_call(model, 1)
            if onnx:
                safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
                # the graphs are timed at batch 1 only: a static batch-1 graph with its shape
                # computations folded is what an edge deployment runs, and leaner than a dynamic one
                report = export_onnx(
                    model, folder / f"{safe}.onnx", opset=opset or DEFAULT_OPSET, batch=1, fold=True
                )
                rows[name]["onnx_check"] = dataclasses.asdict(report.check) if report.check else None
                rows[name]["exporter"] = report.exporter
                # no busy-waiting pool threads: they would take cores from the next timed call
                if "onnxruntime" in runtimes:
                    onnx_model = OnnxModel(report.path, threads=used_threads, spinning=False)
                    fns[f"{name}\tort_b1"] = model_call(onnx_model, 1)
                if "openvino" in runtimes:
                    ir = export_openvino(model, report.path, folder / f"{safe}.xml")
                    rows[name]["openvino_check"] = ir["check"]
                    fns[f"{name}\topenvino_b1"] = model_call(OpenVinoModel(ir["path"], used_threads), 1)
        times = interleaved_times(fns, rounds=rounds, min_time=min_time)
    for key, samples in times.items():
        name, what = key.split("\t")
        stats = summarize_ms(samples)
        row = rows[name]
        if what == "torch_batch":
            row["torch_throughput_ips"] = batch_size / (stats["median_ms"] / 1e3)  # type: ignore[operator]
        else:
            prefix = PREFIX[what]
            row[f"{prefix}_latency_ms_b1"] = stats["median_ms"]
            row[f"{prefix}_latency_ms_b1_p90"] = stats["p90_ms"]
        row.setdefault("rounds", len(samples))
    for row in rows.values():
        for prefix in ("ort", "openvino"):
            if f"{prefix}_latency_ms_b1" in row:
                row[f"{prefix}_vs_torch"] = row[f"{prefix}_latency_ms_b1"] / row["torch_latency_ms_b1"]
    settings = {
        "device": "cpu",
        "device_name": cpu_name(),
        "threads": used_threads,
        "batch_size": batch_size,
        "dtype": "float32",
        "min_time": min_time,
        "interleaved": True,
        "ort_spinning": False,
        "runtimes": ["torch", *runtimes] if onnx else ["torch"],
        "torch": torch.__version__,
    }
    return {"models": [rows[n] for n in names], "settings": settings}
