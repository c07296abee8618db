"""FP16 graphs: the fp32 ONNX graph with float16 weights and computation, float32 inputs / outputs.

    info = convert_fp16("out/model.onnx", "out/model.fp16.onnx")

Uses ONNX Runtime's own float16 converter (`onnxruntime.transformers.float16`, shipped with
onnxruntime, so no extra package): every float tensor and node becomes float16 except the ops
ONNX Runtime has no float16 kernel for, which keep float32 behind Cast nodes; `keep_io_types`
leaves the graph's inputs and outputs float32, so callers feed and read the same arrays as for
the fp32 graph. FP16 halves the file and is the native precision of GPUs, iGPUs and NPUs; on an
x86 CPU without fp16 arithmetic ONNX Runtime runs it mostly through casts, so it is not faster
there (measured, not assumed: `reidprune export --quantize fp16 --data`). For OpenVINO IR the
equivalent is `convert_openvino(..., fp16=True)` (float16 weights, the device picks the precision).
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from reidprune.export.errors import ExportError


def convert_fp16(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Write the float16 version of the fp32 graph `src` to `dst` (inputs / outputs stay float32).
    The reidprune metadata is carried over. Returns {"path", "bytes", "fp32_bytes",
    "float16_initializers", "casts"}."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from reidprune.export.onnx import write_metadata
    from reidprune.export.quantize import _quiet

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"ONNX file not found: {src}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    proto = onnx.load(str(src))
    try:
        with _quiet():
            half = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False)
    except Exception as err:  # the converter raises plain Exceptions for graphs it cannot handle
        raise ExportError(f"{src}: FP16 conversion failed: {type(err).__name__}: {err}") from None
    onnx.save(half, str(dst))
    write_metadata(dst, {p.key: p.value for p in proto.metadata_props})
    graph = onnx.load(str(dst), load_external_data=False).graph
    types = collections.Counter(t.data_type for t in graph.initializer)
    return {
        "path": str(dst),
        "bytes": dst.stat().st_size,
        "fp32_bytes": src.stat().st_size,
        "float16_initializers": types.get(onnx.TensorProto.FLOAT16, 0),
        "float32_initializers": types.get(onnx.TensorProto.FLOAT, 0),
        "casts": sum(n.op_type == "Cast" for n in graph.node),
    }
