"""Dynamic INT8 quantisation of an exported graph (ONNX Runtime's `quantize_dynamic`).

Weights of MatMul / Conv / Gather nodes are stored as int8 (per tensor, or per output channel);
activations are quantised to uint8 at run time, per tensor, from their observed range. No
calibration data is needed, which is why it is the default for edge deployment of a checked
fp32 graph; its accuracy cost is measured, not assumed (`reidprune export --quantize int8 --data`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reidprune.atomic import temporary_file
from reidprune.export.errors import ExportError

INTEGER_OPS = ("MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul", "DynamicQuantizeLinear", "QAttention")


def quantize_int8(
    src: str | Path, dst: str | Path, *, per_channel: bool = False, op_types: list[str] | None = None
) -> dict[str, Any]:
    """Write the dynamically INT8-quantised version of the fp32 graph `src` to `dst`.

    op_types: node types to quantise (default: every type ONNX Runtime can quantise dynamically).
    The reidprune metadata of `src` (architecture, signature) is carried over, so `OnnxModel(dst)`
    works as for `src`. Returns {"path", "bytes", "fp32_bytes", "per_channel", "integer_ops": {op: count}}.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"ONNX file not found: {src}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="reidprune-quant-") as tmp, _quiet():
        source, prepared = _prepare(src, Path(tmp) / "prepared.onnx")
        # written under a temporary name and renamed when complete: a killed run leaves the old graph
        with temporary_file(dst, ".tmp.onnx") as written:
            try:
                quantize_dynamic(
                    source,
                    written,
                    weight_type=QuantType.QInt8,
                    per_channel=per_channel,
                    op_types_to_quantize=op_types,
                )
            except Exception as err:  # the quantiser raises plain Exceptions for graphs it cannot handle
                raise ExportError(
                    f"{src}: dynamic INT8 quantisation failed: {type(err).__name__}: {err}"
                ) from None
            carry_metadata(src, written)
    ops = count_ops(dst, INTEGER_OPS)
    return {
        "path": str(dst),
        "bytes": dst.stat().st_size,
        "fp32_bytes": src.stat().st_size,
        "per_channel": per_channel,
        "preprocessed": prepared,
        "weight_type": "int8",
        "activations": "uint8, dynamic per tensor",
        "integer_ops": ops,
    }


def carry_metadata(src: Path, dst: Path) -> None:
    """Copy the reidprune metadata (architecture, signature) of the fp32 graph `src` onto the quantised
    graph `dst`, so that `OnnxModel(dst)` works as for `src`."""
    import onnx

    from reidprune.export.onnx import write_metadata

    source = onnx.load(str(src), load_external_data=False)
    write_metadata(dst, {p.key: p.value for p in source.metadata_props})


def count_ops(path: Path, op_types: tuple[str, ...]) -> dict[str, int]:
    """How many nodes of each of `op_types` the graph at `path` holds, sorted by op type."""
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    return dict(sorted(collections.Counter(n.op_type for n in nodes if n.op_type in op_types).items()))


def _prepare(src: Path, out: Path) -> tuple[Path, bool]:
    """ONNX Runtime's recommended pre-processing (shape inference, graph clean-up), so that more
    nodes are recognised for quantisation; the raw graph is used when it fails. Returns (graph, done)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        # ONNX's own shape inference suffices for these graphs (only the batch axis is symbolic);
        # the symbolic pass gives up on some reducer graphs and then drops a debug file in the CWD
        quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
        return out, True
    except Exception:  # pre-processing is an optimisation; quantisation works without it
        return src, False


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantiser logs advice through the root logger and warns about opsets; neither is actionable here."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)
