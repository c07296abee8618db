"""The static INT8 column of the demo table and the report: a calibrated QDQ graph of an exported model,
its test-split accuracy, and the `int8.json` note a run folder keeps of it.

    graph, info = static_int8_graph("out/onnx/baseline.onnx", cfg)        # reused when still current
    metrics = evaluate_variants({"int8": OnnxModel(graph)}, cfg)["int8"]  # mAP, rank1, ... (percent)
    write_int8_note(run_dir, model_dir, {"mAP": ..., "rank1": ..., "latency_ms": ...})
    read_int8_note(run_dir, model_dir)                                   # None when stale or absent

The note names the digest of the model files it was measured on; a note whose model changed since
(a run redone) is not read back, so a table never shows the INT8 figures of another model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reidprune.atomic import write_json

INT8_NOTE = "int8.json"  # in a run folder, next to metrics.json


def static_int8_graph(graph: str | Path, cfg: Any, images: int | None = None) -> tuple[Path, dict[str, Any]]:
    """The calibrated static INT8 (QDQ) graph of the fp32 ONNX graph `graph`, written next to it as
    NAME.int8-static.onnx and calibrated on up to `images` training images of `cfg.data` (default
    `static_int8.DEFAULT_CALIBRATION_IMAGES`) through the data pipeline. An earlier graph is reused
    when its NAME.int8-static.json names the same fp32 graph (sha256) and image count.
    Returns (path, quantize_static_int8's info + "reused")."""
    from reidprune.export.onnx import file_sha256
    from reidprune.export.static_int8 import (
        DEFAULT_CALIBRATION_IMAGES,
        ImageCalibrationReader,
        calibration_loader,
        quantize_static_int8,
    )

    graph = Path(graph)
    images = DEFAULT_CALIBRATION_IMAGES if images is None else images
    target = graph.with_name(f"{graph.stem}.int8-static.onnx")
    note = target.with_suffix(".json")
    wanted = {"source_sha256": file_sha256(graph), "max_calibration_images": images}
    if target.is_file() and note.is_file():
        try:
            info = json.loads(note.read_text())
        except ValueError:
            info = {}
        if all(info.get(k) == v for k, v in wanted.items()) and info.get("sha256") == file_sha256(target):
            return target, {**info, "reused": True}
    note.unlink(missing_ok=True)  # the old note must not outlive the old graph
    reader = ImageCalibrationReader(calibration_loader(cfg, max_images=images), graph)
    info = {**quantize_static_int8(graph, target, reader), **wanted, "sha256": file_sha256(target)}
    write_json(note, info)
    return target, {**info, "reused": False}


def write_int8_note(run_dir: str | Path, model_dir: str | Path, figures: dict[str, Any]) -> Path:
    """Write `figures` (mAP, rank1 in percent, latency_ms, ...) to RUN_DIR/int8.json, naming the model."""
    from reidprune.export.onnx import model_dir_sha256

    return write_json(Path(run_dir) / INT8_NOTE, {**figures, "model_sha256": model_dir_sha256(model_dir)})


def read_int8_note(run_dir: str | Path, model_dir: str | Path | None) -> dict[str, Any] | None:
    """RUN_DIR/int8.json when it was measured on the model now in `model_dir`, else None."""
    from reidprune.export.onnx import model_dir_sha256

    path = Path(run_dir) / INT8_NOTE
    if model_dir is None or not path.is_file():
        return None
    try:
        note = json.loads(path.read_text())
        current = model_dir_sha256(model_dir)
    except (OSError, ValueError):
        return None
    return note if isinstance(note, dict) and note.get("model_sha256") == current else None
