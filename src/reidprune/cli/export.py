"""`reidprune export --model DIR --format onnx [--out PATH] [--opset N] [--batch dynamic|N]
[--quantize int8] [--data ROOT|YAML]`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from reidprune.cli.common import console, ensure_writable, err_console, print_table, user_errors

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ("onnx",)
QUANTIZE = ("none", "int8")


def export_errors(fn: F) -> F:
    """`user_errors`, plus export failures (ExportError) as one red line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from reidprune.export.errors import ExportError

        try:
            return fn(*args, **kwargs)
        except ExportError as err:
            err_console.print(f"[bold red]error:[/] {err}", highlight=False, markup=True)
            raise typer.Exit(code=2) from None

    return user_errors(wrapper)  # type: ignore[return-value]


def parse_batch(text: str) -> int | None:
    """ "dynamic" -> None, "N" -> N (>= 1)."""
    from reidprune.config import ConfigError

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
        ..., "--model", "-m", help="a reidprune model directory (model.json + weights)"
    ),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx"),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="graph file (or folder for model.onnx); default MODEL/model.onnx"
    ),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (14..20; the dynamo exporter needs >= 18)"),
    batch: str = typer.Option("dynamic", "--batch", help="'dynamic' or a static batch size"),
    quantize: str = typer.Option(
        "none", "--quantize", help="none | int8 (ONNX Runtime dynamic quantisation)"
    ),
    exporter: str = typer.Option(
        "auto", "--exporter", help="auto (TorchScript, dynamo on failure) | torchscript | dynamo"
    ),
    tolerance: float = typer.Option(1e-4, "--tolerance", help="allowed |ORT - torch| / max(1, output scale)"),
    data: str | None = typer.Option(
        None,
        "--data",
        help="data set folder or experiment YAML: evaluate torch / ONNX fp32 / INT8 side by side",
    ),
    data_format: str | None = typer.Option(None, "--data-format", help="data set format (default: detect)"),
) -> None:
    """Export a saved model's eval-mode retrieval embedding (+ logits) to ONNX, checked against ONNX Runtime."""
    import dataclasses

    from reidprune.config import ConfigError
    from reidprune.export.onnx import check_onnx, export_onnx, write_export_json
    from reidprune.export.quantize import quantize_int8
    from reidprune.models import load

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if quantize not in QUANTIZE:
        raise ConfigError(f"--quantize {quantize}: expected one of {', '.join(QUANTIZE)}")
    static = parse_batch(batch)
    target = out if out is not None else model / "model.onnx"
    if target.is_dir() or not target.suffix:
        target = target / "model.onnx"  # a folder was given
    ensure_writable(target, option="--out")
    net = load(model)
    report = export_onnx(net, target, opset=opset, batch=static, exporter=exporter, tolerance=tolerance)
    extra: dict[str, Any] = {"model_dir": str(model)}
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
    print_table(
        "ONNX export (inputs: " + ", ".join(f"{i['name']} {i['shape']}" for i in report.inputs) + ")", rows
    )
    if data is not None:
        extra["accuracy"] = _accuracy(net, target, quantized_path, data, data_format)
    console.print(f"wrote {write_export_json(report, json_path_for(target), extra)}")


def _accuracy(net: Any, fp32: Path, int8: Path | None, data: str, data_format: str | None) -> dict[str, Any]:
    from reidprune.export.accuracy import data_config, evaluate_variants
    from reidprune.export.runtime import OnnxModel

    cfg = data_config(data, net.arch.img_size, data_format)
    variants = {"pytorch": net, "onnx fp32": OnnxModel(fp32)}
    if int8 is not None:
        variants["onnx int8"] = OnnxModel(int8)
    results = evaluate_variants(variants, cfg)
    keys = [k for k in ("mAP", "rank1", "rank5", "mINP", "top1", "top5") if k in next(iter(results.values()))]
    print_table(
        f"accuracy on {cfg.data.root} (test split, percent)",
        [{"variant": name, **{k: m[k] for k in keys}} for name, m in results.items()],
    )
    return {"data": {"root": cfg.data.root, "format": cfg.data.format}, "metrics": results}


def register(app: typer.Typer) -> None:
    app.command("export")(export_errors(export_command))
