"""Will TensorRT's ONNX parser take this graph? What a CPU can check, and an engine build on a GPU.

    report = check_tensorrt("out/model.onnx")     # static shapes, opset, ops, input types
    report.passed, report.problems                # each problem names the node / input and why
    info = build_engine("out/model.onnx")         # needs the `tensorrt` package and a CUDA GPU

The op list is TensorRT 8.5's (data in `tensorrt_ops.py`, with its source): a graph that passes
here uses only ops and opsets that TensorRT 8.5 and every later release parse. Checked without a
GPU: every input and output shape is static (TensorRT engines here are built for one batch size),
the default-domain opset is at most 17, no op of another domain (ONNX Runtime's com.microsoft
contrib ops), every op is in the supported list, the documented restrictions that can be read off
the graph (TopK's K, Slice / Squeeze / Unsqueeze axes and CumSum's axis constant; Conv weights
constant; no MaxPool indices output; QuantizeLinear / DequantizeLinear zero points zero), and
input types TensorRT binds (INT64 inputs, e.g. `camids`, are cast down to INT32 by the parser:
a note, not a problem). What only TensorRT itself can tell (kernel availability, shapes it
computes) needs `build_engine` on a GPU.

`reidprune export --check tensorrt` exports with the defaults this needs (static batch 1, opset
16, where LayerNormalization is still decomposed into ops TensorRT 8.5 parses) and runs the check.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from reidprune.export.errors import ExportError
from reidprune.export.tensorrt_ops import MAX_OPSET, SOURCE, SUPPORTED_OPS, TENSORRT_VERSION

# opset for graphs meant for TensorRT: 17 adds LayerNormalization, which TensorRT 8.5 cannot parse
DEFAULT_OPSET = 16
# ONNX element types a TensorRT network input can have (TensorProto enum names); INT64 / DOUBLE
# inputs are cast down by the parser (a note); anything else is refused
INPUT_TYPES = {"FLOAT", "FLOAT16", "INT32", "INT8", "BOOL", "UINT8"}
CAST_DOWN = {"INT64": "INT32", "DOUBLE": "FLOAT"}
# node input positions that TensorRT 8.5 requires to be constant (initializer or Constant node)
CONSTANT_INPUTS = {
    "TopK": (1, "K"),
    "Slice": (3, "axes"),
    "Squeeze": (1, "axes"),
    "Unsqueeze": (1, "axes"),
    "CumSum": (1, "axis"),
    "Conv": (1, "weights W"),
    "ConvTranspose": (1, "weights W"),
}
RESIZE_MODES = {"nearest", "linear"}
RESIZE_TRANSFORMS = {
    "half_pixel",
    "pytorch_half_pixel",
    "tf_half_pixel_for_nn",
    "asymmetric",
    "align_corners",
}
SHOWN_NODES = 5  # node names listed per problem


@dataclass
class TensorRTReport:
    """What `check_tensorrt` found. problems: one line each (op / input and node names); passed:
    no problems. notes: what TensorRT handles with a warning (INT64 inputs cast down)."""

    path: str
    tensorrt_version: str = TENSORRT_VERSION
    source: str = SOURCE
    opset: int | None = None
    max_opset: int = MAX_OPSET
    inputs: list[dict[str, Any]] = field(default_factory=list)
    op_counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def message(self) -> str:
        """One line: passed, or the problems joined by '; '."""
        if self.passed:
            return f"{self.path}: parseable by TensorRT {self.tensorrt_version} (checked on the CPU)"
        return f"{self.path}: not parseable by TensorRT {self.tensorrt_version}: " + "; ".join(self.problems)


def check_tensorrt(path: str | Path) -> TensorRTReport:
    """Check the ONNX graph at `path` against TensorRT 8.5's parser (see the module docstring)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as err:  # a damaged file: protobuf's own error types
        raise ExportError(f"{path}: not a readable ONNX graph: {type(err).__name__}: {err}") from None
    report = TensorRTReport(path=str(path))
    _check_opsets(model, report)
    _check_values(model, report)
    graph = model.graph
    constants = {i.name for i in graph.initializer} | {
        out for node in _nodes(graph) if node.op_type == "Constant" for out in node.output
    }
    dequantized = {
        n.output[0] for n in _nodes(graph) if n.op_type == "DequantizeLinear" and n.input[0] in constants
    }
    unsupported: dict[str, list[str]] = {}
    foreign: dict[str, list[str]] = {}
    restricted: dict[str, list[str]] = {}
    for index, node in enumerate(_nodes(graph)):
        name = node.name or f"#{index} ({node.op_type})"
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        report.op_counts[key] = report.op_counts.get(key, 0) + 1
        if node.domain not in ("", "ai.onnx"):
            foreign.setdefault(key, []).append(name)
            continue
        if node.op_type not in SUPPORTED_OPS:
            unsupported.setdefault(node.op_type, []).append(name)
            continue
        for why in _restrictions(node, constants | dequantized, _initializer_values(graph)):
            restricted.setdefault(why, []).append(name)
    for op, names in sorted(unsupported.items()):
        report.problems.append(f"op {op} is not supported by TensorRT's ONNX parser ({_names(names)})")
    for op, names in sorted(foreign.items()):
        report.problems.append(
            f"op {op} is not a standard ONNX op; TensorRT parses none of its domain ({_names(names)})"
        )
    for why, names in sorted(restricted.items()):
        report.problems.append(f"{why} ({_names(names)})")
    report.op_counts = dict(sorted(report.op_counts.items()))
    return report


def require_tensorrt(path: str | Path) -> TensorRTReport:
    """`check_tensorrt`, raising ExportError with every problem in one line when it fails."""
    report = check_tensorrt(path)
    if not report.passed:
        raise ExportError(report.message())
    return report


def _nodes(graph: Any) -> Iterable[Any]:
    """Every node, those in If / Loop / Scan subgraphs included."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.g is not None and attribute.g.node:
                yield from _nodes(attribute.g)
            for sub in attribute.graphs:
                yield from _nodes(sub)


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN_NODES])
    more = f" and {len(names) - SHOWN_NODES} more" if len(names) > SHOWN_NODES else ""
    return f"{len(names)} node{'s' if len(names) != 1 else ''}: {shown}{more}"


def _check_opsets(model: Any, report: TensorRTReport) -> None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            report.opset = int(entry.version)
    if report.opset is None:
        report.problems.append("the graph imports no default-domain opset")
    elif report.opset > MAX_OPSET:
        report.problems.append(
            f"opset {report.opset}: TensorRT {TENSORRT_VERSION} parses opsets up to {MAX_OPSET} "
            f"(export with --opset {DEFAULT_OPSET})"
        )


def _check_values(model: Any, report: TensorRTReport) -> None:
    """Static shapes on every input and output; input element types TensorRT can bind."""
    import onnx

    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    for kind, values in (("input", graph.input), ("output", graph.output)):
        for value in values:
            if kind == "input" and value.name in initializers:
                continue  # old exporters list initializers as inputs too
            tensor = value.type.tensor_type
            dims = [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim
            ]
            dtype = onnx.TensorProto.DataType.Name(tensor.elem_type) if tensor.elem_type else "UNDEFINED"
            if kind == "input":
                report.inputs.append({"name": value.name, "shape": dims, "dtype": dtype})
            if not tensor.HasField("shape") or any(not isinstance(d, int) or d < 1 for d in dims):
                report.problems.append(
                    f"{kind} '{value.name}' has shape {dims}: TensorRT engines here need static shapes "
                    "(export with --batch 1, or the batch size to deploy)"
                )
            if kind != "input":
                continue
            if dtype in CAST_DOWN:
                report.notes.append(
                    f"input '{value.name}' is {dtype}: TensorRT's parser casts it to {CAST_DOWN[dtype]} "
                    "(values must fit)"
                )
            elif dtype not in INPUT_TYPES:
                report.problems.append(
                    f"input '{value.name}' is {dtype}: a TensorRT network input must be one of "
                    f"{', '.join(sorted(INPUT_TYPES | set(CAST_DOWN)))}"
                )


def _initializer_values(graph: Any) -> dict[str, Any]:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.name and _small(i)}


def _small(tensor: Any) -> bool:
    count = 1
    for d in tensor.dims:
        count *= d
    return count <= 4096  # zero points and scales; skip the weights


def _restrictions(node: Any, constants: set[str], values: dict[str, Any]) -> list[str]:
    """The documented per-op restrictions of TensorRT 8.5's parser this node breaks."""
    broken = []
    rule = CONSTANT_INPUTS.get(node.op_type)
    if rule is not None:
        position, what = rule
        if len(node.input) > position and node.input[position] and node.input[position] not in constants:
            broken.append(f"{node.op_type}: {what} must be a constant (initializer), here it is computed")
    if node.op_type == "MaxPool" and len([o for o in node.output if o]) > 1:
        broken.append("MaxPool: the Indices output is not supported")
    if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
        zero = values.get(node.input[2])
        if zero is None or zero.any():
            which = "y_zero_point" if node.op_type == "QuantizeLinear" else "x_zero_point"
            broken.append(
                f"{node.op_type}: {which} must be zero (symmetric int8); "
                "asymmetric uint8 activations are not supported"
            )
    if node.op_type == "Resize":
        attrs = {a.name: a.s.decode() for a in node.attribute if a.s}
        if attrs.get("mode", "nearest") not in RESIZE_MODES:
            broken.append(f"Resize: mode '{attrs['mode']}' (supported: {', '.join(sorted(RESIZE_MODES))})")
        transform = attrs.get("coordinate_transformation_mode", "half_pixel")
        if transform not in RESIZE_TRANSFORMS:
            broken.append(f"Resize: coordinate_transformation_mode '{transform}' is not supported")
    return broken


def tensorrt_available() -> str | None:
    """None when the `tensorrt` package imports and a CUDA GPU is present, else why not (one line)."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the `tensorrt` Python package is not installed"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU"
    return None


def build_engine(
    path: str | Path, engine_path: str | Path | None = None, fp16: bool = False
) -> dict[str, Any]:
    """Parse the graph with TensorRT's own ONNX parser and build an engine (needs `tensorrt` + a GPU).

    engine_path: also write the serialised engine there (atomically). Returns {"tensorrt",
    "seconds", "engine_bytes", "fp16", "engine_path"}; raises ExportError naming the parser errors.
    """
    why = tensorrt_available()
    if why is not None:
        raise ExportError(f"{path}: cannot build a TensorRT engine: {why}")
    import tensorrt as trt

    path = Path(path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # required before TensorRT 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    start = time.perf_counter()
    if not parser.parse(path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"{path}: TensorRT's ONNX parser refused the graph: {'; '.join(errors)}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ExportError(
            f"{path}: TensorRT parsed the graph but could not build an engine (see its log above)"
        )
    data = bytes(engine)
    if engine_path is not None:
        from reidprune.atomic import write_bytes

        write_bytes(engine_path, data)
    return {
        "tensorrt": trt.__version__,
        "seconds": time.perf_counter() - start,
        "engine_bytes": len(data),
        "fp16": fp16,
        "engine_path": str(engine_path) if engine_path is not None else None,
    }
