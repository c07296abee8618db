"""`reidprune bench MODEL_DIR... [--batch-size 64] [--threads N] [--min-time S] [--runtime openvino]
[--json PATH]`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from reidprune.cli.common import console, ensure_writable, print_table, write_json
from reidprune.cli.export import export_errors
from reidprune.cli.model_dirs import ALLOW_IMPORT_HELP, resolve_model_dir, unique_names


def bench_command(
    model_dirs: list[Path] = typer.Argument(
        ..., metavar="MODEL_DIR...", help="reidprune model directories (or prune / train run directories)"
    ),
    batch_size: int = typer.Option(
        64, "--batch-size", help="PyTorch throughput batch; latency is at batch 1"
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads for both runtimes (default: torch's)"
    ),
    min_time: float = typer.Option(2.0, "--min-time", help="seconds of interleaved timed rounds in all"),
    onnx: bool = typer.Option(True, "--onnx/--no-onnx", help="also export and time ONNX Runtime at batch 1"),
    runtime: list[str] = typer.Option(
        [],
        "--runtime",
        help="openvino: also time OpenVINO at batch 1 (IR from the checked ONNX graph), repeatable; "
        "ONNX Runtime and PyTorch are always timed in the same rounds",
    ),
    json_path: Path | None = typer.Option(None, "--json", help="also write the results to this JSON file"),
    allow_import: bool = typer.Option(False, "--allow-import", help=ALLOW_IMPORT_HELP),
) -> None:
    """Several saved models side by side, in one process, timings interleaved: params, GMACs, PyTorch
    throughput and batch-1 latency, ONNX Runtime (and OpenVINO) batch-1 latency (CPU)."""
    from reidprune.errors import ConfigError
    from reidprune.export.benchmark import RUNTIMES, bench_models
    from reidprune.models import load

    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: expected >= 1")
    bad = [r for r in runtime if r not in RUNTIMES]
    if bad:
        raise ConfigError(f"--runtime {bad[0]}: expected one of {', '.join(RUNTIMES)}")
    if runtime and not onnx:
        raise ConfigError("--runtime needs the ONNX graph: drop --no-onnx")
    runtimes = ["onnxruntime", *(r for r in RUNTIMES[1:] if r in runtime)]
    if json_path is not None:
        ensure_writable(json_path, option="--json")
    dirs = [resolve_model_dir(p) for p in model_dirs]
    models = [
        (name, load(d, allow_import=allow_import)) for name, d in zip(unique_names(dirs), dirs, strict=True)
    ]
    result = bench_models(
        models, batch_size=batch_size, onnx=onnx, threads=threads, min_time=min_time, runtimes=runtimes
    )
    for row, d in zip(result["models"], dirs, strict=True):
        row["model_dir"] = str(d)
    print_table(
        f"bench (cpu, {result['settings']['threads']} threads, float32, interleaved medians); "
        "GMACs = FlopCounterMode FLOPs / 2",
        [_row(r, batch_size) for r in result["models"]],
    )
    if json_path is not None:
        console.print(f"wrote {write_json(json_path, result)}")


def _row(r: dict[str, Any], batch_size: int) -> dict[str, Any]:
    row = {
        "model": r["name"],
        "params (M)": r["params"] / 1e6,
        "GMACs": r["gmacs"],
        f"torch img/s b{batch_size}": r.get("torch_throughput_ips"),
        "torch b1 (ms)": r.get("torch_latency_ms_b1"),
    }
    if "ort_latency_ms_b1" in r:
        row["ORT b1 (ms)"] = r["ort_latency_ms_b1"]
        row["ORT/torch"] = r["ort_vs_torch"]
        row["max |ORT-torch|"] = (r.get("onnx_check") or {}).get("max_abs_diff")
    if "openvino_latency_ms_b1" in r:
        row["OpenVINO b1 (ms)"] = r["openvino_latency_ms_b1"]
        row["OpenVINO/torch"] = r["openvino_vs_torch"]
        row["max |OV-torch|"] = (r.get("openvino_check") or {}).get("max_abs_diff")
    return row


def register(app: typer.Typer) -> None:
    app.command("bench")(export_errors(bench_command))
