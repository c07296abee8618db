"""OpenVINO: the checked ONNX graph converted to OpenVINO IR (.xml + .bin), checked again, and run.

    report = export_onnx(model, "out/model.onnx")
    info = export_openvino(model, "out/model.onnx", "out/model.xml")   # converted + checked vs PyTorch
    metrics = evaluate_reid(OpenVinoModel("out/model.xml"), query, gallery, EvalConfig())

The IR is made from the ONNX graph (`openvino.convert_model`), so every model that exports to ONNX
converts; a QDQ (static INT8) ONNX graph converts to an INT8 IR (OpenVINO reads QuantizeLinear /
DequantizeLinear pairs as its own FakeQuantize and runs the quantised layers in int8). The
reidprune metadata (architecture, signature) travels in the IR's rt_info. Inference runs on the
CPU with `INFERENCE_PRECISION_HINT=f32`: without it OpenVINO runs bf16 on CPUs that have it,
and the 1e-4 check against PyTorch would fail for a reason that is not the graph's.

OpenVINO is an optional extra (`pip install 'reidprune[openvino]'`); without it every function
here raises ExportError saying so.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from reidprune.export.errors import ExportError
from reidprune.export.runtime import META_ARCH, META_SIGNATURE, GraphModel, arch_from_metadata
from reidprune.export.wrapper import CAMIDS, EMBEDDING, IMAGES

RT_INFO = "reidprune"  # rt_info section holding the ONNX graph's reidprune metadata
MISSING = "OpenVINO is not installed: pip install 'reidprune[openvino]' (PyPI package openvino)"


def require_openvino() -> Any:
    """The `openvino` module, or ExportError naming the extra to install."""
    try:
        import openvino
    except ImportError:
        raise ExportError(MISSING) from None
    return openvino


def convert_openvino(src: str | Path, dst: str | Path, *, fp16: bool = False) -> dict[str, Any]:
    """Convert the ONNX graph `src` to OpenVINO IR at `dst` (.xml; the weights go to the .bin beside it).

    fp16: store the weights as float16 (half the .bin; OpenVINO decompresses them on the CPU and
    runs fp16 on GPUs). Returns {"path", "bin", "bytes", "fp16", "openvino"}.
    """
    ov = require_openvino()
    import onnx

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"ONNX file not found: {src}")
    if dst.suffix != ".xml":
        raise ExportError(f"{dst}: an OpenVINO IR path must end in .xml")
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        model = ov.convert_model(str(src))
    except Exception as err:  # OpenVINO raises its own exception types for unsupported graphs
        raise ExportError(f"{src}: OpenVINO cannot convert the graph: {err}") from None
    for prop in onnx.load(str(src), load_external_data=False).metadata_props:
        if prop.key.startswith(RT_INFO + "."):
            model.set_rt_info(prop.value, [RT_INFO, prop.key[len(RT_INFO) + 1 :]])
    ov.save_model(model, str(dst), compress_to_fp16=fp16)
    weights = dst.with_suffix(".bin")
    return {
        "path": str(dst),
        "bin": str(weights),
        "bytes": dst.stat().st_size + weights.stat().st_size,
        "fp16": fp16,
        "openvino": ov.__version__,
    }


def export_openvino(
    model: nn.Module,
    onnx_path: str | Path,
    dst: str | Path,
    *,
    fp16: bool = False,
    check: bool = True,
    approximate: bool = False,
    batch_sizes: list[int] | None = None,
    tolerance: float = 1e-4,
    seed: int = 0,
) -> dict[str, Any]:
    """Convert the checked ONNX graph of `model` to IR at `dst` and compare OpenVINO with PyTorch
    (`check_onnx`'s comparison and bound). Raises ExportError when the IR is off by more than
    `tolerance` x max(1, output scale); for approximations (fp16, or `approximate` for a quantised
    graph) the deviation is reported, not enforced. batch_sizes: default [1, 3] for a dynamic batch, else the static batch.
    Returns `convert_openvino`'s dict + "check" (CheckResult as a dict)."""
    from reidprune.export.onnx import check_onnx

    info = convert_openvino(onnx_path, dst, fp16=fp16)
    if not check:
        return info
    runner = OpenVinoModel(dst, threads=1)
    sizes = batch_sizes or ([runner.static_batch] if runner.static_batch else [1, 3])
    result = check_onnx(model, dst, batch_sizes=sizes, tolerance=tolerance, seed=seed, session=runner)
    info["check"] = dataclasses.asdict(result)
    if not (fp16 or approximate) and not result.passed:
        raise ExportError(
            f"{dst}: OpenVINO differs from PyTorch by {result.max_abs_diff:.3g} (allowed "
            f"{result.bound:.3g} = {tolerance:g} x max(1, output scale {result.scale:.3g})); the IR is wrong"
        )
    return info


class OpenVinoModel(GraphModel):
    """An OpenVINO IR (.xml) or ONNX file compiled for the CPU, called like a reidprune model
    (see `GraphModel`). threads: inference threads (default: torch's current setting, so OpenVINO,
    ONNX Runtime and PyTorch are compared on the same number of cores); one stream, latency hint.
    precision: the CPU's inference precision ("f32"; "bf16" / "f16" where the CPU has them)."""

    def __init__(self, path: str | Path, threads: int | None = None, precision: str = "f32") -> None:
        super().__init__()
        ov = require_openvino()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"OpenVINO model not found: {self.path}")
        core = ov.Core()
        try:
            model = core.read_model(str(self.path))
        except Exception as err:
            raise ExportError(f"{self.path}: OpenVINO cannot read the model: {err}") from None
        meta = {
            f"{RT_INFO}.{key}": model.get_rt_info([RT_INFO, key]).astype(str)
            for key in (META_ARCH[len(RT_INFO) + 1 :], META_SIGNATURE[len(RT_INFO) + 1 :])
            if model.has_rt_info([RT_INFO, key])
        }
        # the ONNX frontend may name an input after the node that reads it; ours are in the name set
        names = [self._name(port) for port in model.inputs]
        shapes = {
            name: [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
            for name, port in zip(names, model.inputs, strict=True)
        }
        self.arch = arch_from_metadata(meta, shapes, self.path)
        self.input_names = names
        self.output_names = [self._name(port) for port in model.outputs]
        self._check_names()
        self.static_batch = shapes[IMAGES][0]
        config = {
            "INFERENCE_NUM_THREADS": int(threads) if threads else torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_PRECISION_HINT": precision,
        }
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as err:
            raise ExportError(f"{self.path}: OpenVINO cannot compile the model for the CPU: {err}") from None
        self.request = self.compiled.create_infer_request()

    @staticmethod
    def _name(port: Any) -> str:
        """The port's name as exported: the ONNX frontend also names ports after the nodes that
        produce or read them ("/Cast_output_0"); those start with a slash."""
        names = sorted(port.get_names())
        known = [n for n in (IMAGES, CAMIDS, EMBEDDING) if n in names]
        return (known or [n for n in names if not n.startswith("/")] or [port.get_any_name()])[0]

    def run(self, output_names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self.request.infer(feed)
        by_name = {self._name(port): value for port, value in results.items()}
        # copies: the request reuses its output buffers on the next call
        return [np.array(by_name[name], dtype=np.float32) for name in output_names]
