"""OpenVINO IR of every model family and compression method, checked against PyTorch, and timed
side by side with ONNX Runtime and PyTorch."""

from __future__ import annotations

import sys

import pytest
import torch
from export_helpers import COMPRESSED, FAMILIES, inputs, outputs_of, vit_bnneck

from reidprune.export import ExportError, bench_models, export_onnx

pytest.importorskip("openvino", reason="OpenVINO is an optional extra: pip install 'reidprune[openvino]'")

from reidprune.export.openvino import OpenVinoModel, convert_openvino, export_openvino

ALL = {**FAMILIES, **COMPRESSED}


@pytest.mark.parametrize("name", list(ALL))
def test_openvino_matches_pytorch(tmp_path, name: str) -> None:
    model = ALL[name]()
    onnx_path = export_onnx(model, tmp_path / "model.onnx").path
    info = export_openvino(model, onnx_path, tmp_path / "model.xml")
    check = info["check"]
    assert check["passed"] and check["batch_sizes"] == [1, 3]
    assert check["max_abs_diff"] <= 1e-4 * max(1.0, check["scale"])
    ir = OpenVinoModel(info["path"])
    assert ir.arch == model.arch  # the reidprune metadata travels in the IR
    # a batch size the check did not use, camids where the model takes them
    images, camids = inputs(model, 5)
    got, expected = ir(images, camids), outputs_of(model, images, camids)
    assert got.embedding.shape == expected.embedding.shape
    bound = 1e-4 * max(1.0, float(expected.embedding.abs().max()))
    assert float((got.embedding - expected.embedding).abs().max()) <= bound
    assert len(got.logits) == len(expected.logits)


def test_static_batch_graph_is_fed_in_chunks(tmp_path) -> None:
    model = vit_bnneck()
    onnx_path = export_onnx(model, tmp_path / "model.onnx", batch=2).path
    info = export_openvino(model, onnx_path, tmp_path / "model.xml")
    assert info["check"]["batch_sizes"] == [2]
    ir = OpenVinoModel(info["path"])
    assert ir.static_batch == 2
    images, _ = inputs(model, 3)
    assert torch.allclose(ir(images).embedding, outputs_of(model, images, None).embedding, atol=1e-4)


def test_fp16_ir_stores_half_weights_and_stays_close(tmp_path) -> None:
    model = vit_bnneck()
    onnx_path = export_onnx(model, tmp_path / "model.onnx").path
    fp32 = convert_openvino(onnx_path, tmp_path / "model.xml")
    half = export_openvino(model, onnx_path, tmp_path / "model.fp16.xml", fp16=True)
    assert (
        half["fp16"]
        and (tmp_path / "model.fp16.bin").stat().st_size < (tmp_path / "model.bin").stat().st_size
    )
    assert fp32["bytes"] > 0
    assert half["check"]["max_abs_diff"] < 1e-2 * max(1.0, half["check"]["scale"])


def test_ir_path_must_end_in_xml(tmp_path) -> None:
    onnx_path = export_onnx(vit_bnneck(), tmp_path / "model.onnx").path
    with pytest.raises(ExportError, match=r"model\.bin: an OpenVINO IR path must end in \.xml"):
        convert_openvino(onnx_path, tmp_path / "model.bin")


def test_missing_openvino_names_the_extra(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(ExportError, match=r"pip install 'reidprune\[openvino\]'"):
        convert_openvino(tmp_path / "model.onnx", tmp_path / "model.xml")
    with pytest.raises(ExportError, match="OpenVINO is not installed"):
        bench_models([("dense", vit_bnneck())], runtimes=("onnxruntime", "openvino"))


def test_bench_times_torch_ort_and_openvino_in_the_same_rounds() -> None:
    result = bench_models(
        [("dense", vit_bnneck())],
        batch_size=None,
        min_time=0.2,
        threads=1,
        runtimes=("onnxruntime", "openvino"),
    )
    row = result["models"][0]
    for prefix in ("torch", "ort", "openvino"):
        assert 0 < row[f"{prefix}_latency_ms_b1"] <= row[f"{prefix}_latency_ms_b1_p90"], prefix
    assert row["openvino_vs_torch"] == pytest.approx(
        row["openvino_latency_ms_b1"] / row["torch_latency_ms_b1"]
    )
    assert row["openvino_check"]["passed"] and row["onnx_check"]["passed"]
    assert result["settings"]["runtimes"] == ["torch", "onnxruntime", "openvino"]


def test_bench_rejects_an_unknown_runtime() -> None:
    with pytest.raises(ValueError, match="tensorrt"):
        bench_models([("dense", vit_bnneck())], runtimes=("tensorrt",))
