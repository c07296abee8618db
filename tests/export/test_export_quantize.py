"""Dynamic INT8 quantisation: the graph runs, keeps its metadata, and its accuracy is measured."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from export_helpers import inputs, outputs_of, resnet, vit_bnneck

from reidprune.export import OnnxModel, evaluate_variants, export_onnx, quantize_int8
from reidprune.export.accuracy import data_config


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    model = vit_bnneck()
    path = tmp_path_factory.mktemp("quant") / "model.onnx"
    export_onnx(model, path)
    return model, path


def test_int8_graph_runs_and_keeps_the_architecture(exported, tmp_path) -> None:
    model, path = exported
    info = quantize_int8(path, tmp_path / "model.int8.onnx")
    assert info["integer_ops"].get("MatMulInteger", 0) > 0  # the linear layers now run in int8
    assert info["bytes"] < info["fp32_bytes"]
    int8 = OnnxModel(info["path"])
    assert int8.arch == model.arch
    images, _ = inputs(model, 3)
    got = int8(images).embedding
    expected = outputs_of(model, images, None).embedding
    assert got.shape == expected.shape and torch.isfinite(got).all()
    # int8 is an approximation of the same function, not another one
    assert torch.nn.functional.cosine_similarity(got, expected).min() > 0.9


def test_int8_resnet_quantises_its_convolutions(tmp_path) -> None:
    path = tmp_path / "resnet.onnx"
    export_onnx(resnet(), path)
    info = quantize_int8(path, tmp_path / "resnet.int8.onnx")
    assert info["integer_ops"].get("ConvInteger", 0) > 0


def test_accuracy_of_pytorch_fp32_and_int8_side_by_side(exported, tmp_path, synth_root) -> None:
    model, path = exported
    int8 = quantize_int8(path, tmp_path / "model.int8.onnx")["path"]
    cfg = data_config(synth_root, model.arch.img_size)
    cfg.data.num_workers = 0
    results = evaluate_variants({"pytorch": model, "fp32": OnnxModel(path), "int8": OnnxModel(int8)}, cfg)
    assert set(results) == {"pytorch", "fp32", "int8"}
    for metrics in results.values():
        assert 0.0 <= metrics["mAP"] <= 100.0 and 0.0 <= metrics["rank1"] <= 100.0
        assert metrics["num_queries"] == results["pytorch"]["num_queries"] > 0
    # the fp32 graph computes the same features (to 1e-6), hence the same ranking
    assert results["fp32"]["mAP"] == pytest.approx(results["pytorch"]["mAP"], abs=1e-3)


def test_data_config_takes_the_model_input_size(synth_root) -> None:
    cfg = data_config(synth_root, [32, 16])
    assert (cfg.data.root, cfg.data.format, cfg.data.height, cfg.data.width) == (
        str(synth_root),
        "auto",
        32,
        16,
    )


def test_data_config_names_a_missing_path(tmp_path) -> None:
    from reidprune.errors import DataError

    with pytest.raises(DataError, match="nowhere"):
        data_config(tmp_path / "nowhere", [32, 16])
