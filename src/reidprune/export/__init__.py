"""Edge deployment: ONNX export checked against ONNX Runtime, INT8 quantisation, ORT-backed evaluation.

    report = export_onnx(model, "out/model.onnx")            # eval-mode embedding (+ logits), checked
    info = quantize_int8("out/model.onnx", "out/model.int8.onnx")
    metrics = evaluate_reid(OnnxModel("out/model.int8.onnx"), query, gallery, EvalConfig())
    rows = bench_models([("dense", model), ("pruned", pruned)])  # params, GMACs, torch vs ORT, interleaved
    reader = ImageCalibrationReader(calibration_loader(cfg), "out/model.onnx")      # training images
    info = quantize_static_int8("out/model.onnx", "out/model.int8-static.onnx", reader)  # QDQ
    info = convert_fp16("out/model.onnx", "out/model.fp16.onnx")
    info = export_openvino(model, "out/model.onnx", "out/model.xml")  # IR, checked; OpenVinoModel runs it
    report = check_tensorrt("out/model.onnx")      # TensorRT's ONNX parser: opset, ops, static shapes

Exports resolve lazily (onnx, onnxruntime and openvino load only when used).
"""

from __future__ import annotations

from reidprune._lazy import lazy_exports

_EXPORTS = {
    "ExportError": "reidprune.export.errors",
    "ExportReport": "reidprune.export.onnx",
    "CheckResult": "reidprune.export.onnx",
    "export_onnx": "reidprune.export.onnx",
    "check_onnx": "reidprune.export.onnx",
    "write_export_json": "reidprune.export.onnx",
    "OnnxModel": "reidprune.export.runtime",
    "create_session": "reidprune.export.runtime",
    "quantize_int8": "reidprune.export.quantize",
    "evaluate_variants": "reidprune.export.accuracy",
    "bench_models": "reidprune.export.benchmark",
    "variant_latency": "reidprune.export.benchmark",
    "GraphModel": "reidprune.export.runtime",
    "ImageCalibrationReader": "reidprune.export.static_int8",
    "calibration_loader": "reidprune.export.static_int8",
    "quantize_static_int8": "reidprune.export.static_int8",
    "convert_fp16": "reidprune.export.fp16",
    "OpenVinoModel": "reidprune.export.openvino",
    "convert_openvino": "reidprune.export.openvino",
    "export_openvino": "reidprune.export.openvino",
    "interleaved_times": "reidprune.measure.timing",
    "TensorRTReport": "reidprune.export.tensorrt",
    "check_tensorrt": "reidprune.export.tensorrt",
    "build_engine": "reidprune.export.tensorrt",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
