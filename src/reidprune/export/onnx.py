"""ONNX export of reidprune models, checked against ONNX Runtime on the way out.

    report = export_onnx(model, "out/model.onnx")               # dynamic batch, opset 18, checked
    report = export_onnx(model, "out/model.onnx", batch=1)      # static batch 1

What is exported: the eval-mode retrieval embedding (+ logits for classification models), see
`wrapper.py`. Inputs `images` float32 (B, 3, H, W) and, for camera-aware models, `camids` int64 (B,).

Exporter: torch 2.15 has two. Both export every model reidprune builds or compresses (ViT with
linear / BNNeck / LA / TransReID-JPM heads and SIE cameras, AMG kv / skip, top-k, PM, ToMe,
head-pruned ViTs, ResNets with extracted filter pruning), with a dynamic batch axis, and give the
same ONNX Runtime latency within noise. "auto" uses the TorchScript exporter (`dynamo=False`)
first because it exports the same models 10-20x faster (0.3-1.2 s against 4-24 s for the tiny
test models on two cores) and writes one self-contained file; it falls back to the torch.export
exporter (`dynamo=True`, onnxscript) when the TorchScript one fails or is gone (it is deprecated).

Dynamic batch works for every token reducer: AMG kv / skip and PM use static per-block index
sets, ToMe merges a fixed r per block, and top-k keeps a fixed count k per image (which tokens
differs per image, their number does not), so no graph shape depends on the data. The image size
is fixed by the position embedding (`arch.img_size`).

The check: the graph and the PyTorch model run on the same seeded random input (batch 1 and 3
for a dynamic batch, the static batch otherwise); it passes when, for every output,
max |ORT - torch| <= tolerance * max(1, max |torch|). That is an absolute 1e-4 for outputs of
unit scale (normalised features) and a relative 1e-4 for larger ones (logits, BNNeck features
of magnitude 10-100), where float32 summation-order noise grows with the values.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from reidprune.atomic import temporary_file
from reidprune.export.errors import ExportError
from reidprune.export.runtime import META_ARCH, META_SIGNATURE, create_session
from reidprune.export.wrapper import CAMIDS, IMAGES, ExportWrapper, Signature, example_inputs, signature_of

EXPORTERS = ("auto", "torchscript", "dynamo")
DEFAULT_OPSET = 18
MIN_OPSET = {"torchscript": 14, "dynamo": 18}  # 14: scaled_dot_product_attention; 18: onnxscript's floor
MAX_OPSET = 20
TOLERANCE = 1e-4
META_PLAN = "reidprune.plan_method"


@dataclass
class CheckResult:
    """ONNX Runtime against PyTorch on the same seeded input.

    max_abs_diff: the largest |ORT - torch| over all outputs; scale: max |torch| of that output;
    bound = tolerance * max(1, scale); passed = max_abs_diff <= bound for every output.
    """

    passed: bool
    max_abs_diff: float
    scale: float
    bound: float
    tolerance: float
    batch_sizes: list[int]
    per_output: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class ExportReport:
    """What `export_onnx` wrote (also `export.json` next to the graph)."""

    path: str
    exporter: str
    opset: int
    batch: str | int
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    check: CheckResult | None
    seconds: float
    file_bytes: int
    versions: dict[str, str]
    fallback_reason: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""  # of the graph file: a report that does not match its graph is stale

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_opset(opset: int, exporter: str) -> None:
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter '{exporter}': expected one of {', '.join(EXPORTERS)}")
    low = MIN_OPSET["dynamo" if exporter == "dynamo" else "torchscript"]
    if isinstance(opset, bool) or not isinstance(opset, int) or not low <= opset <= MAX_OPSET:
        raise ExportError(
            f"opset {opset!r}: expected an int in {low}..{MAX_OPSET} for the {exporter} exporter"
        )


def check_batch(batch: int | None) -> None:
    if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
        raise ExportError(f"batch {batch!r}: expected None (dynamic) or an int >= 1")


def _export_torchscript(
    wrapper: ExportWrapper, args: tuple[Any, ...], path: Path, opset: int, dynamic: bool
) -> None:
    sig = wrapper.signature
    axes = {name: {0: "batch"} for name in (*sig.inputs, *sig.outputs)} if dynamic else None
    torch.onnx.export(
        wrapper,
        args,
        str(path),
        dynamo=False,
        input_names=list(sig.inputs),
        output_names=list(sig.outputs),
        dynamic_axes=axes,
        opset_version=opset,
        do_constant_folding=True,
    )


def _export_dynamo(
    wrapper: ExportWrapper, args: tuple[Any, ...], path: Path, opset: int, dynamic: bool
) -> None:
    sig = wrapper.signature
    shapes = None
    if dynamic:
        batch = torch.export.Dim("batch")
        shapes = {name: {0: batch} for name in sig.inputs}
    # the exporter prints its progress; a library call should not
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(
            wrapper,
            args,
            str(path),
            dynamo=True,
            input_names=list(sig.inputs),
            output_names=list(sig.outputs),
            dynamic_shapes=shapes,
            opset_version=opset,
            external_data=False,
            optimize=True,
        )


def _run_exporter(
    name: str, wrapper: ExportWrapper, args: tuple[Any, ...], path: Path, opset: int, dynamic: bool
) -> None:
    fn = _export_dynamo if name == "dynamo" else _export_torchscript
    with warnings.catch_warnings():
        # deprecation notices and tracer warnings about Python values are expected here; the
        # numerical check below is what tells whether the graph is right
        warnings.simplefilter("ignore")
        with torch.inference_mode(False), torch.no_grad():
            fn(wrapper, args, path, opset, dynamic)


def _value_info(values: Any) -> list[dict[str, Any]]:
    import onnx

    out = []
    for value in values:
        tensor = value.type.tensor_type
        dims = [d.dim_param if d.dim_param else int(d.dim_value) for d in tensor.shape.dim]
        out.append(
            {
                "name": value.name,
                "shape": dims,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name,
            }
        )
    return out


def fold_constants(path: str | Path) -> None:
    """Rewrite the graph at `path` (in place) with constant folding and shape-to-constant folding
    (ONNX Runtime's basic level: standard ONNX ops only, no contrib ops); a graph with static input
    shapes keeps no Shape -> Gather chains feeding TopK's K or Slice / Unsqueeze axes."""
    import onnxruntime as ort

    path = Path(path)
    folded = path.with_name(path.name + ".folded")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        folded.replace(path)
    finally:
        folded.unlink(missing_ok=True)


def write_metadata(path: str | Path, entries: dict[str, str], signature: Signature | None = None) -> None:
    """Add (or replace) string metadata_props of the ONNX file at `path`, in place; with `signature`,
    also state the outputs' non-batch sizes (the TorchScript exporter leaves some of them symbolic)."""
    import onnx

    proto = onnx.load(str(path))
    if signature is not None:
        for value in proto.graph.output:
            if value.name in signature.outputs:
                sizes = signature.output_dims[signature.outputs.index(value.name)]
                dims = value.type.tensor_type.shape.dim
                for dim, size in zip(list(dims)[1:], sizes, strict=False):
                    dim.Clear()
                    dim.dim_value = size
    kept = [p for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def _metadata(model: nn.Module, signature: Signature) -> dict[str, str]:
    from reidprune.models.plan import plan_of
    from reidprune.models.registry import arch_to_dict

    entries = {META_SIGNATURE: json.dumps(asdict(signature))}
    arch = getattr(model, "arch", None)
    if arch is not None:
        entries[META_ARCH] = json.dumps(arch_to_dict(arch))
    plan = plan_of(model)
    if plan is not None:
        entries[META_PLAN] = plan.method
    return entries


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    batch: int | None = None,
    exporter: str = "auto",
    check: bool = True,
    tolerance: float = TOLERANCE,
    seed: int = 0,
    json_path: str | Path | None = None,
    extra: dict[str, Any] | None = None,
    fold: bool = False,
) -> ExportReport:
    """Export `model` (a reidprune model; left in the train/eval mode it was in) to `path`.

    batch: None = dynamic batch axis; an int = that static batch. exporter: "auto" | "torchscript" |
    "dynamo" (see the module docstring). check: compare with ONNX Runtime and raise ExportError
    when the graph is off by more than `tolerance` (relative to the output scale, floor 1).
    fold: with a static batch, fold every shape computation into constants (ONNX Runtime's basic
    graph optimisations, standard ops only), as TensorRT needs (`tensorrt.py`: TopK's K constant).
    The graph carries the model's architecture and signature as ONNX metadata, so that
    `OnnxModel(path)` can be evaluated like the PyTorch model without the model directory.

    Nothing is left half-done: the graph is written under a temporary name and renamed onto `path`
    only after it passed the check (a failed or killed export leaves the previous file as it was);
    `json_path` (the report, plus `extra`) is removed before that rename and written after it, so it
    never describes another graph. A model that itself outputs NaN / Inf is refused before exporting.
    """
    import onnx

    check_opset(opset, exporter)
    check_batch(batch)
    if fold and batch is None:
        raise ExportError("fold=True needs a static batch (shapes are folded into constants)")
    path = Path(path)
    was_training = model.training
    try:
        signature = signature_of(model)
        wrapper = ExportWrapper(model, signature)
        check_finite(wrapper, model, path, seed)
    finally:
        model.train(was_training)
    start = time.perf_counter()
    with temporary_file(path, ".tmp.onnx") as tmp:
        try:
            wrapper.eval()  # the model back in eval mode for the trace
            # trace with 2 images: with 1 an exporter may fold broadcasts over the batch axis
            images, camids = example_inputs(model, batch if batch is not None else 2, seed=seed + 1)
            args = (images, camids) if camids is not None else (images,)
            used, reason = _export(wrapper, args, tmp, opset, batch is None, exporter, shown=path)
        finally:
            model.train(was_training)
        if fold:
            fold_constants(tmp)
        onnx.checker.check_model(str(tmp))
        write_metadata(tmp, _metadata(model, signature), signature)
        seconds = time.perf_counter() - start
        result = None
        if check:
            result = check_onnx(
                model, tmp, batch_sizes=[1, 3] if batch is None else [batch], tolerance=tolerance, seed=seed
            )
        if result is not None and not result.passed:
            raise ExportError(
                f"{path}: ONNX Runtime differs from PyTorch by {result.max_abs_diff:.3g} (allowed "
                f"{result.bound:.3g} = {tolerance:g} x max(1, output scale {result.scale:.3g})); the graph "
                "is wrong, so it was not written"
            )
        graph = onnx.load(str(tmp), load_external_data=False).graph
        report = ExportReport(
            path=str(path),
            exporter=used,
            opset=opset,
            batch="dynamic" if batch is None else batch,
            inputs=_value_info(graph.input),
            outputs=_value_info(graph.output),
            check=result,
            seconds=seconds,
            file_bytes=tmp.stat().st_size,
            versions=versions(),
            fallback_reason=reason,
            source=describe_source(model),
            sha256=file_sha256(tmp),
        )
        if json_path is not None:
            Path(json_path).unlink(missing_ok=True)  # the old report must not outlive the old graph
    if json_path is not None:
        write_export_json(report, json_path, extra)
    return report


def check_finite(wrapper: ExportWrapper, model: nn.Module, path: Path, seed: int = 0) -> None:
    """Refuse a model whose own PyTorch outputs hold NaN / Inf: no graph of it could pass the check,
    and the fault is in the model (diverged training, broken weights), not in the export."""
    images, camids = example_inputs(model, 2, seed=seed + 1)
    with torch.inference_mode():
        outputs = wrapper(images, camids)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    for name, value in zip(wrapper.signature.outputs, outputs, strict=True):
        if not bool(torch.isfinite(value).all()):
            kind = "NaN" if bool(torch.isnan(value).any()) else "Inf"
            raise ExportError(
                f"{path}: the PyTorch model itself outputs {kind} in '{name}' on a random input, before any "
                "export: its weights are broken (e.g. a training run that diverged); nothing was written"
            )


def model_dir_sha256(directory: str | Path) -> str:
    """One digest of a saved model's files (model.json + weights), to tell which model a graph is of."""
    from reidprune.models.serialization import MODEL_JSON, WEIGHTS

    digest = hashlib.sha256()
    for name in (MODEL_JSON, WEIGHTS):
        digest.update(f"{name}:{file_sha256(Path(directory) / name)}\n".encode())
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _export(
    wrapper: ExportWrapper,
    args: tuple[Any, ...],
    path: Path,
    opset: int,
    dynamic: bool,
    exporter: str,
    shown: Path | None = None,
) -> tuple[str, str | None]:
    """Run the chosen exporter ("auto": TorchScript, then dynamo) into `path` (errors name `shown`,
    the final name of a graph written under a temporary one). Returns (exporter used, why it fell back)."""
    order = ["torchscript", "dynamo"] if exporter == "auto" else [exporter]
    if exporter == "auto" and opset < MIN_OPSET["dynamo"]:
        order = ["torchscript"]
    failures = []
    for name in order:
        try:
            _run_exporter(name, wrapper, args, path, opset, dynamic)
            return name, "; ".join(failures) or None
        except Exception as err:  # exporters raise many types; each failure is reported below
            failures.append(f"{name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    raise ExportError(f"{shown or path}: ONNX export failed ({' | '.join(failures)})")


def check_onnx(
    model: nn.Module,
    path: str | Path,
    batch_sizes: list[int] | tuple[int, ...] = (1, 3),
    tolerance: float = TOLERANCE,
    seed: int = 0,
    session: Any = None,
) -> CheckResult:
    """Run the graph at `path` (ONNX Runtime, CPU) and `model` (PyTorch, eval) on the same seeded random
    input for each batch size and compare every output (see the module docstring for the bound).
    session: another runtime with ORT's `run(output_names, feed)` (e.g. an `OpenVinoModel`)."""
    if session is None:
        session = create_session(path, threads=1)  # the check inputs are tiny; one thread avoids contention
    was_training = model.training
    signature = signature_of(model)
    wrapper = ExportWrapper(model, signature)
    per_output: dict[str, dict[str, float]] = {}
    try:
        for i, size in enumerate(batch_sizes):
            images, camids = example_inputs(model, size, seed=seed + 100 + i)
            feed = {IMAGES: images.numpy()}
            if camids is not None:
                feed[CAMIDS] = camids.numpy()
            got = session.run(list(signature.outputs), feed)
            with torch.inference_mode():
                expected = wrapper(images, camids)
            expected = expected if isinstance(expected, tuple) else (expected,)
            for name, a, b in zip(signature.outputs, got, expected, strict=True):
                ref = b.float().cpu().numpy()
                if a.shape != ref.shape:
                    raise ExportError(
                        f"{path}: output '{name}' has shape {a.shape}, PyTorch gives {ref.shape}"
                    )
                diff = float(np.abs(a - ref).max()) if ref.size else 0.0
                scale = float(np.abs(ref).max()) if ref.size else 0.0
                if not math.isfinite(diff):
                    diff = math.inf
                entry = per_output.setdefault(name, {"max_abs_diff": 0.0, "scale": 0.0})
                entry["max_abs_diff"] = max(entry["max_abs_diff"], diff)
                entry["scale"] = max(entry["scale"], scale)
    finally:
        model.train(was_training)
    for entry in per_output.values():
        entry["bound"] = tolerance * max(1.0, entry["scale"])
        entry["rel_diff"] = entry["max_abs_diff"] / max(1.0, entry["scale"])
    worst = max(per_output.values(), key=lambda e: e["rel_diff"])
    return CheckResult(
        passed=all(e["max_abs_diff"] <= e["bound"] for e in per_output.values()),
        max_abs_diff=max(e["max_abs_diff"] for e in per_output.values()),
        scale=worst["scale"],
        bound=worst["bound"],
        tolerance=tolerance,
        batch_sizes=list(batch_sizes),
        per_output=per_output,
    )


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def describe_source(model: nn.Module) -> dict[str, Any]:
    """Family, head, token reduction and compression method of `model`, for export.json and tables."""
    from reidprune.models.plan import plan_of

    arch = getattr(model, "arch", None)
    tokens = getattr(arch, "tokens", None) or {}
    reduction = tokens.get("method")
    if reduction and tokens.get("mode"):
        reduction = f"{reduction} ({tokens['mode']})"
    plan = plan_of(model)
    return {
        "family": getattr(arch, "family", type(model).__name__),
        "head": getattr(arch, "head", None),
        "img_size": list(getattr(arch, "img_size", []) or []),
        "num_cameras": int(getattr(arch, "num_cameras", 0) or 0),
        "token_reduction": reduction,
        "compression": plan.method if plan is not None else None,
    }


def write_export_json(report: ExportReport, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    from reidprune.atomic import write_json

    return write_json(path, {**report.to_dict(), **(extra or {})})
