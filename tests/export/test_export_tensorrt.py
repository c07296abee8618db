"""TensorRT readiness on the CPU: every exported form passes TensorRT 8.5's parser checks (opset, ops,
static shapes, constant K / axes), and a graph that would not parse is refused naming its nodes."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from export_helpers import (
    amg_kv,
    amg_skip,
    filters,
    heads,
    pm,
    resnet,
    tome,
    topk,
    transreid_cameras,
    vit_bnneck,
)
from onnx import TensorProto, helper
from typer.testing import CliRunner

from reidprune.cli import _register, app
from reidprune.export import ExportError, check_tensorrt, export_onnx
from reidprune.export.tensorrt import DEFAULT_OPSET, build_engine, require_tensorrt, tensorrt_available
from reidprune.export.tensorrt_ops import MAX_OPSET, SUPPORTED_OPS
from reidprune.models import save

_register()
runner = CliRunner(env={"COLUMNS": "200"})
BUILDS = {
    "dense-vit": vit_bnneck,
    "amg-kv": amg_kv,
    "amg-skip": amg_skip,
    "topk": topk,
    "tome": tome,
    "pm": pm,
    "heads": heads,
    "resnet": resnet,
    "resnet-extracted": filters,
    "transreid-cameras": transreid_cameras,
}


@pytest.mark.parametrize("name", list(BUILDS))
def test_every_exported_form_passes_the_tensorrt_parser_check(tmp_path, name: str) -> None:
    report = export_onnx(BUILDS[name](), tmp_path / "m.onnx", opset=DEFAULT_OPSET, batch=1, fold=True)
    assert report.check is not None and report.check.passed  # folding kept the outputs
    trt = check_tensorrt(report.path)
    assert trt.passed, trt.message()
    assert trt.opset == DEFAULT_OPSET <= MAX_OPSET and set(trt.op_counts) <= SUPPORTED_OPS
    assert all(i["shape"][0] == 1 for i in trt.inputs)
    if name == "transreid-cameras":  # SIE camera ids: int64, cast down by the parser
        assert trt.notes == ["input 'camids' is INT64: TensorRT's parser casts it to INT32 (values must fit)"]


def test_without_folding_topk_k_is_computed_and_named(tmp_path) -> None:
    path = export_onnx(topk(), tmp_path / "m.onnx", opset=DEFAULT_OPSET, batch=1).path
    trt = check_tensorrt(path)
    assert not trt.passed
    assert len(trt.problems) == 1 and trt.problems[0].startswith(
        "TopK: K must be a constant (initializer), here it is computed (2 nodes: /model/blocks.1/reducer/TopK"
    )


def test_opset_17_layernorm_and_dynamic_batch_are_named(tmp_path) -> None:
    path = export_onnx(vit_bnneck(), tmp_path / "m.onnx", opset=18).path
    trt = check_tensorrt(path)
    problems = " | ".join(trt.problems)
    assert "opset 18: TensorRT 8.5 parses opsets up to 17 (export with --opset 16)" in problems
    assert (
        "op LayerNormalization is not supported by TensorRT's ONNX parser (7 nodes: /model/blocks.0/"
        in problems
    )
    assert (
        "input 'images' has shape ['batch', 3, 32, 16]: TensorRT engines here need static shapes" in problems
    )
    with pytest.raises(ExportError, match=r"m\.onnx: not parseable by TensorRT 8\.5: opset 18"):
        require_tensorrt(path)


def _hand_made(path: Path) -> Path:
    """A graph with an op TensorRT 8.5 does not parse (Det), a contrib op and an asymmetric QDQ pair."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    scale = helper.make_tensor("scale", TensorProto.FLOAT, [], [0.1])
    zero = helper.make_tensor("zero", TensorProto.UINT8, [], [128])
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], name="quant"),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"], name="dequant"),
        helper.make_node("Det", ["dq"], ["det"], name="determinant"),
        helper.make_node("Gelu", ["det"], ["y"], name="gelu", domain="com.microsoft"),
    ]
    graph = helper.make_graph(nodes, "hand", [x], [y], initializer=[scale, zero])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 16), helper.make_opsetid("com.microsoft", 1)]
    )
    onnx.save(model, str(path))
    return path


def test_a_hand_made_graph_with_unsupported_ops_fails_naming_them(tmp_path) -> None:
    trt = check_tensorrt(_hand_made(tmp_path / "bad.onnx"))
    assert trt.op_counts == {"DequantizeLinear": 1, "QuantizeLinear": 1, "Det": 1, "com.microsoft.Gelu": 1}
    assert trt.problems == [
        "op Det is not supported by TensorRT's ONNX parser (1 node: determinant)",
        "op com.microsoft.Gelu is not a standard ONNX op; TensorRT parses none of its domain (1 node: gelu)",
        "DequantizeLinear: x_zero_point must be zero (symmetric int8); asymmetric uint8 activations are not "
        "supported (1 node: dequant)",
        "QuantizeLinear: y_zero_point must be zero (symmetric int8); asymmetric uint8 activations are not "
        "supported (1 node: quant)",
    ]
    with pytest.raises(ExportError, match=r"not parseable by TensorRT 8\.5: op Det is not supported"):
        require_tensorrt(tmp_path / "bad.onnx")


def test_a_missing_or_damaged_file_is_one_line(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="ONNX file not found"):
        check_tensorrt(tmp_path / "none.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a graph")
    with pytest.raises(ExportError, match=r"junk\.onnx: not a readable ONNX graph"):
        check_tensorrt(tmp_path / "junk.onnx")


def test_cli_check_tensorrt_exports_static_and_records_the_report(tmp_path) -> None:
    model = save(topk(), tmp_path / "topk")
    result = runner.invoke(app, ["export", "--model", str(model), "--check", "tensorrt"])
    assert result.exit_code == 0, result.output
    assert "TensorRT 8.5 parser check passed: opset 16" in result.output
    info = json.loads((model / "export.json").read_text())
    assert info["batch"] == 1 and info["opset"] == DEFAULT_OPSET and info["check"]["passed"]
    assert info["tensorrt"]["passed"] and info["tensorrt"]["source"].startswith("onnx/onnx-tensorrt")


def test_cli_check_tensorrt_fails_naming_the_nodes_and_keeps_the_report(tmp_path) -> None:
    model = save(vit_bnneck(), tmp_path / "dense")
    result = runner.invoke(app, ["export", "--model", str(model), "--check", "tensorrt", "--opset", "17"])
    assert result.exit_code == 2, result.output
    line = " ".join(result.output.split())
    assert (
        "error:" in line and "not parseable by TensorRT 8.5: op LayerNormalization is not supported" in line
    )
    assert "Traceback" not in result.output
    info = json.loads((model / "export.json").read_text())
    assert info["check"]["passed"] and not info["tensorrt"]["passed"]


def test_cli_refusals_are_one_line(tmp_path) -> None:
    model = save(vit_bnneck(), tmp_path / "dense")
    cases = {
        ("--check", "tensorrt", "--batch", "dynamic"): "--check tensorrt needs a static batch",
        ("--check", "openvino"): "--check openvino: expected one of tensorrt",
        ("--engine",): "--engine: needs --check tensorrt",
    }
    for args, message in cases.items():
        result = runner.invoke(app, ["export", "--model", str(model), *args])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert not (model / "model.onnx").exists(), "refused before exporting"


@pytest.mark.skipif(
    tensorrt_available() is None, reason="tensorrt and a GPU are present: the engine test runs"
)
def test_engine_needs_tensorrt_and_a_gpu(tmp_path) -> None:
    path = export_onnx(vit_bnneck(), tmp_path / "m.onnx", opset=DEFAULT_OPSET, batch=1, fold=True).path
    with pytest.raises(ExportError, match=r"m\.onnx: cannot build a TensorRT engine: "):
        build_engine(path)


@pytest.mark.skipif(
    tensorrt_available() is not None, reason=f"needs tensorrt and a GPU: {tensorrt_available()}"
)
def test_engine_builds_for_every_form(tmp_path) -> None:
    for name, build in BUILDS.items():
        path = export_onnx(build(), tmp_path / f"{name}.onnx", opset=DEFAULT_OPSET, batch=1, fold=True).path
        info = build_engine(path, tmp_path / f"{name}.engine")
        assert (
            info["engine_bytes"] > 0 and (tmp_path / f"{name}.engine").stat().st_size == info["engine_bytes"]
        )
