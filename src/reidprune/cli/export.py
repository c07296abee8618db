"""`reidprune export --model DIR --format onnx|openvino [--out PATH] [--opset N] [--batch dynamic|N]
[--quantize int8|int8-static|fp16] [--data ROOT|YAML] [--check tensorrt [--engine]]`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.markup import escape

from reidprune.cli.common import console, ensure_writable, err_console, print_table, user_errors
from reidprune.cli.model_dirs import ALLOW_IMPORT_HELP

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("onnx", "openvino")
QUANTIZE = ("none", "int8", "int8-static", "fp16")
CHECKS = ("tensorrt",)


def export_errors(fn: F) -> F:
    """`user_errors`, plus export failures (ExportError) as one red line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from reidprune.export.errors import ExportError

        try:
            return fn(*args, **kwargs)
        except ExportError as err:
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, markup=True)
            raise typer.Exit(code=2) from None

    return user_errors(wrapper)  # type: ignore[return-value]


def parse_batch(text: str) -> int | None:
    """ "dynamic" -> None, "N" -> N (>= 1)."""
    from reidprune.errors import ConfigError

    if text == "dynamic":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"--batch {text}: expected 'dynamic' or a batch size >= 1")
    return value


def json_path_for(onnx_path: Path) -> Path:
    """export.json next to model.onnx; <stem>.export.json next to any other name."""
    name = "export.json" if onnx_path.name == "model.onnx" else f"{onnx_path.stem}.export.json"
    return onnx_path.with_name(name)


def export_command(
    model: Path = typer.Option(
        ...,
        "--model",
        "-m",
        help="a reidprune model directory (model.json + weights), or a prune / train run directory",
    ),
    fmt: str = typer.Option(
        "onnx", "--format", "-f", help="onnx | openvino (also IR .xml/.bin from the checked ONNX graph)"
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="graph file (or folder for model.onnx); default MODEL/model.onnx"
    ),
    opset: int | None = typer.Option(
        None,
        "--opset",
        help="ONNX opset (14..20; the dynamo exporter needs >= 18); default 18, 16 with --check tensorrt",
    ),
    batch: str | None = typer.Option(
        None, "--batch", help="'dynamic' or a static batch size; default dynamic, 1 with --check tensorrt"
    ),
    quantize: str = typer.Option(
        "none",
        "--quantize",
        help="none | int8 (dynamic) | int8-static (QDQ, calibrated on --data's training images) | fp16",
    ),
    calibration_images: int = typer.Option(
        256, "--calibration-images", help="training images that calibrate int8-static"
    ),
    exporter: str = typer.Option(
        "auto", "--exporter", help="auto (TorchScript, dynamo on failure) | torchscript | dynamo"
    ),
    tolerance: float = typer.Option(1e-4, "--tolerance", help="allowed |ORT - torch| / max(1, output scale)"),
    data: str | None = typer.Option(
        None,
        "--data",
        help="data set folder or experiment YAML: evaluate and time torch / fp32 / quantised side by side",
    ),
    data_format: str | None = typer.Option(None, "--data-format", help="data set format (default: detect)"),
    allow_import: bool = typer.Option(False, "--allow-import", help=ALLOW_IMPORT_HELP),
    check: str | None = typer.Option(
        None,
        "--check",
        help="tensorrt: export for TensorRT (static batch, shapes folded) and check the graph against "
        "TensorRT's ONNX parser (opset, ops, static shapes); fails naming the offending nodes",
    ),
    engine: bool = typer.Option(
        False, "--engine", help="with --check tensorrt: also build a TensorRT engine (needs tensorrt + a GPU)"
    ),
) -> None:
    """Export a saved model's eval-mode retrieval embedding (+ logits) to ONNX, checked against ONNX Runtime
    (and to OpenVINO IR, checked against OpenVINO)."""
    import dataclasses

    from reidprune.cli.export_variants import openvino_graphs, quantize_graph
    from reidprune.cli.model_dirs import resolve_model_dir
    from reidprune.errors import ConfigError
    from reidprune.export.onnx import check_onnx, export_onnx, model_dir_sha256, write_export_json
    from reidprune.export.quantize import quantize_int8
    from reidprune.models import load

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if quantize not in QUANTIZE:
        raise ConfigError(f"--quantize {quantize}: expected one of {', '.join(QUANTIZE)}")
    if check is not None and check not in CHECKS:
        raise ConfigError(f"--check {check}: expected one of {', '.join(CHECKS)}")
    if engine and check != "tensorrt":
        raise ConfigError("--engine: needs --check tensorrt")
    tensorrt = check == "tensorrt"
    if tensorrt:
        from reidprune.export.tensorrt import DEFAULT_OPSET, tensorrt_available

        opset = DEFAULT_OPSET if opset is None else opset
        batch = "1" if batch is None else batch
        if batch == "dynamic":
            raise ConfigError("--batch dynamic: --check tensorrt needs a static batch (e.g. --batch 1)")
        why = tensorrt_available() if engine else None
        if why is not None:
            raise ConfigError(f"--engine: cannot build a TensorRT engine here: {why}")
    opset = 18 if opset is None else opset
    static = parse_batch(batch or "dynamic")
    model = resolve_model_dir(model)
    if fmt == "openvino":
        from reidprune.export.openvino import require_openvino

        require_openvino()  # before the export, not after it
    if quantize == "int8-static" and data is None:
        raise ConfigError("--quantize int8-static: needs --data (training images to calibrate on)")
    target = out if out is not None else model / "model.onnx"
    if target.is_dir() or not target.suffix:
        target = target / "model.onnx"  # a folder was given
    ensure_writable(target, option="--out")
    net = load(model, allow_import=allow_import)
    extra: dict[str, Any] = {"model_dir": str(model), "model_sha256": model_dir_sha256(model)}
    # the graph lands only after its check passed; export.json is rewritten last, with what follows
    report = export_onnx(
        net,
        target,
        opset=opset,
        batch=static,
        exporter=exporter,
        tolerance=tolerance,
        json_path=json_path_for(target),
        extra=extra,
        fold=tensorrt,
    )
    if tensorrt:  # before the variants: a graph TensorRT cannot take stops here, naming its nodes
        extra["tensorrt"], failure = _tensorrt(target, engine)
        if failure is not None:
            from reidprune.export.errors import ExportError

            write_export_json(report, json_path_for(target), extra)
            raise ExportError(
                f"{failure} (the ONNX graph is kept; {json_path_for(target).name} has the report)"
            )
    check = report.check
    rows = [
        {
            "graph": str(target),
            "exporter": report.exporter,
            "opset": report.opset,
            "batch": str(report.batch),
            "MB": report.file_bytes / 1e6,
            "max |ORT-torch|": check.max_abs_diff if check else None,
            "check": "passed" if check and check.passed else "-",
        }
    ]
    quantized_path = None
    if quantize == "int8":
        quantized_path = target.with_name(f"{target.stem}.int8.onnx")
        info = quantize_int8(target, quantized_path)
        deviation = check_onnx(net, quantized_path, batch_sizes=[static or 3], tolerance=tolerance)
        info["deviation"] = dataclasses.asdict(deviation)
        extra["quantized"] = info
        rows.append(
            {
                "graph": str(quantized_path),
                "exporter": "int8 dynamic",
                "opset": report.opset,
                "batch": str(report.batch),
                "MB": info["bytes"] / 1e6,
                "max |ORT-torch|": deviation.max_abs_diff,
                "check": "not required (quantised)",
            }
        )
    elif quantize != "none":
        quantized_path, row = quantize_graph(
            net,
            target,
            quantize,
            batch=static,
            data=data,
            data_format=data_format,
            calibration_images=calibration_images,
            tolerance=tolerance,
            extra=extra,
        )
        rows.append(row)
    ir_paths: dict[str, Path] = {}
    if fmt == "openvino":
        ir_paths, ir_rows = openvino_graphs(
            net, target, quantized_path, quantize, tolerance=tolerance, extra=extra
        )
        rows.extend(ir_rows)
    print_table(
        "ONNX export (inputs: " + ", ".join(f"{i['name']} {i['shape']}" for i in report.inputs) + ")", rows
    )
    if data is not None:
        extra["accuracy"] = _accuracy(net, target, quantized_path, data, data_format, quantize, ir_paths)
    console.print(f"wrote {write_export_json(report, json_path_for(target), extra)}")


def _tensorrt(graph: Path, engine: bool) -> tuple[dict[str, Any], str | None]:
    """Check `graph` against TensorRT's ONNX parser; with `engine` (and a passing check) also build
    model.engine next to it. Returns the report for export.json and, when it failed, its message."""
    from reidprune.export.tensorrt import build_engine, check_tensorrt

    report = check_tensorrt(graph)
    result: dict[str, Any] = report.to_dict()
    for note in report.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    if not report.passed:
        return result, report.message()
    console.print(
        f"TensorRT {report.tensorrt_version} parser check passed: opset {report.opset}, "
        f"{sum(report.op_counts.values())} nodes of {len(report.op_counts)} op types, static shapes",
        highlight=False,
    )
    if engine:
        result["engine"] = build_engine(graph, graph.with_suffix(".engine"))
        console.print(f"TensorRT {result['engine']['tensorrt']} built {graph.with_suffix('.engine')}")
    return result, None


def _accuracy(
    net: Any,
    fp32: Path,
    quantized: Path | None,
    data: str,
    data_format: str | None,
    quantize: str = "int8",
    openvino: dict[str, Path] | None = None,
) -> dict[str, Any]:
    from reidprune.cli.export_variants import graph_variants
    from reidprune.export.accuracy import data_config, evaluate_variants
    from reidprune.measure.timing import latency_ms

    cfg = data_config(data, net.arch.img_size, data_format)
    variants = graph_variants(net, fp32, quantized, quantize, openvino or {})
    results = evaluate_variants(variants, cfg)
    latency = latency_ms(variants, batch=1)
    keys = [k for k in ("mAP", "rank1", "rank5", "mINP", "top1", "top5") if k in next(iter(results.values()))]
    print_table(
        f"accuracy on {cfg.data.root} (test split, percent) and batch-1 latency (interleaved medians)",
        [
            {"variant": name, **{k: m[k] for k in keys}, "b1 (ms)": latency[name]["median_ms"]}
            for name, m in results.items()
        ],
    )
    return {
        "data": {"root": cfg.data.root, "format": cfg.data.format},
        "metrics": results,
        "latency_b1": latency,
    }


def register(app: typer.Typer) -> None:
    app.command("export")(export_errors(export_command))
