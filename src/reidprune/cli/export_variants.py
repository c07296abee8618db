"""The extra graphs of `reidprune export`: static INT8 / FP16 ONNX graphs and OpenVINO IR, each
checked (or, for approximations, its deviation reported) against PyTorch, and the variants that
`--data` evaluates and times side by side."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from reidprune.errors import ConfigError

DEFAULT_CALIBRATION_IMAGES = 256


def quantize_graph(
    net: nn.Module,
    target: Path,
    quantize: str,
    *,
    batch: int | None,
    data: str | None,
    data_format: str | None,
    calibration_images: int,
    tolerance: float,
    extra: dict[str, Any],
) -> tuple[Path, dict[str, Any]]:
    """Write the int8-static or fp16 graph next to `target`; returns (its path, its table row) and
    puts its info (with the deviation from PyTorch) under extra["quantized"]."""
    from reidprune.export.onnx import check_onnx

    if quantize == "int8-static":
        if data is None:
            raise ConfigError("--quantize int8-static: needs --data (training images to calibrate on)")
        from reidprune.export.accuracy import data_config
        from reidprune.export.static_int8 import (
            ImageCalibrationReader,
            calibration_loader,
            quantize_static_int8,
        )

        cfg = data_config(data, net.arch.img_size, data_format)  # type: ignore[union-attr]
        reader = ImageCalibrationReader(calibration_loader(cfg, calibration_images), target)
        path = target.with_name(f"{target.stem}.int8-static.onnx")
        info = quantize_static_int8(target, path, reader)
        label = f"int8 static (QDQ, {info['calibration_images']} calibration images)"
    else:
        from reidprune.export.fp16 import convert_fp16

        path = target.with_name(f"{target.stem}.fp16.onnx")
        info = convert_fp16(target, path)
        label = "fp16 (float32 inputs / outputs)"
    deviation = check_onnx(net, path, batch_sizes=[batch or 3], tolerance=tolerance)
    info["deviation"] = dataclasses.asdict(deviation)
    extra["quantized"] = {"mode": quantize, **info}
    return path, _row(path, label, info["bytes"], deviation.max_abs_diff, "not required (approximation)")


def openvino_graphs(
    net: nn.Module,
    target: Path,
    quantized: Path | None,
    quantize: str,
    *,
    tolerance: float,
    extra: dict[str, Any],
) -> tuple[dict[str, Path], list[dict[str, Any]]]:
    """OpenVINO IR next to `target`: model.xml from the fp32 graph (checked to `tolerance`), and the
    quantised form: the int8 graph converted (OpenVINO runs QDQ as int8), or for fp16 the fp32
    graph with float16 weights. Returns ({variant name: .xml path}, table rows)."""
    from reidprune.export.openvino import export_openvino

    paths: dict[str, Path] = {}
    rows = []
    info = export_openvino(net, target, target.with_suffix(".xml"), tolerance=tolerance)
    extra["openvino"] = {"fp32": info}
    paths["openvino fp32"] = Path(info["path"])
    rows.append(_row(Path(info["path"]), "openvino", info["bytes"], info["check"]["max_abs_diff"], "passed"))
    if quantize != "none":
        src = target if quantize == "fp16" else quantized
        assert src is not None
        xml = target.with_name(f"{target.stem}.{quantize}.xml")
        qinfo = export_openvino(net, src, xml, fp16=quantize == "fp16", approximate=True, tolerance=tolerance)
        extra["openvino"][quantize] = qinfo
        paths[f"openvino {quantize}"] = xml
        rows.append(
            _row(xml, f"openvino {quantize}", qinfo["bytes"], qinfo["check"]["max_abs_diff"], "not required")
        )
    return paths, rows


def _row(path: Path, exporter: str, size: int, diff: float, check: str) -> dict[str, Any]:
    return {
        "graph": str(path),
        "exporter": exporter,
        "MB": size / 1e6,
        "max |ORT-torch|": diff,
        "check": check,
    }


def graph_variants(
    net: nn.Module, fp32: Path, quantized: Path | None, quantize: str, openvino: dict[str, Path]
) -> dict[str, nn.Module]:
    """{variant name: model} for the accuracy / latency table: PyTorch, ONNX fp32 [+ quantised],
    OpenVINO fp32 [+ quantised]. The graphs' runtimes do not busy-wait between calls."""
    from reidprune.export.runtime import OnnxModel

    variants: dict[str, nn.Module] = {"pytorch": net, "onnx fp32": OnnxModel(fp32, spinning=False)}
    if quantized is not None:
        variants[f"onnx {quantize}"] = OnnxModel(quantized, spinning=False)
    if openvino:
        from reidprune.export.openvino import OpenVinoModel

        variants.update({name: OpenVinoModel(path) for name, path in openvino.items()})
    return variants
