"""Calibrated static INT8 (QDQ) and FP16 graphs: structure, closeness to fp32, accuracy side by side."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
from export_helpers import calibration, inputs, outputs_of, resnet, transreid_cameras, vit_bnneck

from reidprune.export import ExportError, OnnxModel, evaluate_variants, export_onnx
from reidprune.export.accuracy import data_config
from reidprune.export.fp16 import convert_fp16
from reidprune.export.static_int8 import ImageCalibrationReader, calibration_loader, quantize_static_int8


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b).min())


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    model = vit_bnneck()
    path = tmp_path_factory.mktemp("static") / "model.onnx"
    export_onnx(model, path)
    return model, path


@pytest.mark.parametrize("build", [vit_bnneck, resnet, transreid_cameras])
def test_static_int8_is_qdq_with_per_channel_weights(tmp_path, build) -> None:
    model = build()
    path = export_onnx(model, tmp_path / "model.onnx").path
    reader = ImageCalibrationReader(calibration(model, batches=2, size=4), path)
    info = quantize_static_int8(path, tmp_path / "model.int8-static.onnx", reader)
    assert info["calibration_images"] == 8 and info["per_channel"]
    assert info["qdq_nodes"]["QuantizeLinear"] > 0 and info["qdq_nodes"]["DequantizeLinear"] > 0
    graph = onnx.load(info["path"]).graph
    weights = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2}
    assert weights  # the weights are stored as int8 ...
    scales = {i.name: len(i.dims) for i in graph.initializer}
    per_channel = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights]
    assert per_channel and all(scales[n.input[1]] == 1 for n in per_channel)  # ... with one scale per channel
    quantized = OnnxModel(info["path"])
    assert quantized.arch == model.arch
    images, camids = inputs(model, 3)
    assert cosine(quantized(images, camids).embedding, outputs_of(model, images, camids).embedding) > 0.98


def test_calibration_reader_feeds_the_static_batch(tmp_path) -> None:
    model = vit_bnneck()
    path = export_onnx(model, tmp_path / "model.onnx", batch=3).path
    reader = ImageCalibrationReader(calibration(model, batches=2, size=4), path)
    feeds = list(iter(reader.get_next, None))
    assert [f["images"].shape for f in feeds] == [
        (3, 3, 32, 16)
    ] * 2  # 4 images per batch: one full chunk each
    assert reader.images == 6 and reader.get_next() is None
    reader.rewind()
    assert reader.get_next()["images"].shape == (3, 3, 32, 16) and reader.images == 3


def test_calibration_loader_reads_training_images_without_augmentation(synth_root) -> None:
    cfg = data_config(synth_root, [32, 16])
    cfg.data.num_workers = 0
    first = [b["image"] for b in calibration_loader(cfg, max_images=5, batch_size=2)]
    again = [b["image"] for b in calibration_loader(cfg, max_images=5, batch_size=2)]
    assert [tuple(x.shape) for x in first] == [(2, 3, 32, 16), (2, 3, 32, 16), (1, 3, 32, 16)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # no random augmentation


def test_static_int8_keeps_accuracy_on_the_test_split(exported, tmp_path, synth_root) -> None:
    model, path = exported
    cfg = data_config(synth_root, model.arch.img_size)
    cfg.data.num_workers = 0
    reader = ImageCalibrationReader(calibration_loader(cfg, max_images=16), path)
    int8 = quantize_static_int8(path, tmp_path / "model.int8-static.onnx", reader)
    results = evaluate_variants({"fp32": OnnxModel(path), "int8-static": OnnxModel(int8["path"])}, cfg)
    assert results["int8-static"]["num_queries"] == results["fp32"]["num_queries"] > 0
    assert abs(results["int8-static"]["mAP"] - results["fp32"]["mAP"]) <= 5.0


def test_bad_calibration_method_is_named(exported, tmp_path) -> None:
    _, path = exported
    with pytest.raises(ExportError, match="calibration method 'mse'"):
        quantize_static_int8(path, tmp_path / "q.onnx", ImageCalibrationReader([], path), method="mse")


def test_no_calibration_images_is_an_error(exported, tmp_path) -> None:
    _, path = exported
    with pytest.raises(ExportError, match="no calibration images"):
        quantize_static_int8(path, tmp_path / "q.onnx", ImageCalibrationReader([], path))


def test_fp16_graph_has_half_weights_and_float32_io(exported, tmp_path) -> None:
    model, path = exported
    info = convert_fp16(path, tmp_path / "model.fp16.onnx")
    assert info["float16_initializers"] > 0 and info["bytes"] < info["fp32_bytes"]
    graph = onnx.load(info["path"]).graph
    assert {v.type.tensor_type.elem_type for v in [*graph.input, *graph.output]} == {onnx.TensorProto.FLOAT}
    half = OnnxModel(info["path"])
    assert half.arch == model.arch
    images, _ = inputs(model, 3)
    expected = outputs_of(model, images, None).embedding
    got = half(images).embedding
    assert got.dtype == torch.float32
    assert float((got - expected).abs().max()) <= 1e-2 * max(1.0, float(expected.abs().max()))


@pytest.mark.parametrize(
    ("activations", "dtype"), [("uint8", onnx.TensorProto.UINT8), ("int8", onnx.TensorProto.INT8)]
)
def test_activation_type_is_chosen(exported, tmp_path, activations: str, dtype: int) -> None:
    model, path = exported
    reader = ImageCalibrationReader(calibration(model, batches=1, size=4), path)
    info = quantize_static_int8(path, tmp_path / "q.onnx", reader, activations=activations)
    assert info["activations"] == f"{activations}, static per tensor"
    graph = onnx.load(info["path"]).graph
    zero_points = {i.name: i.data_type for i in graph.initializer}
    quantize = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    assert quantize and {zero_points[n.input[2]] for n in quantize} == {dtype}


def test_bad_activation_type_is_named(exported, tmp_path) -> None:
    _, path = exported
    with pytest.raises(ExportError, match="activations 'int4'"):
        quantize_static_int8(path, tmp_path / "q.onnx", ImageCalibrationReader([], path), activations="int4")


def test_a_failed_static_quantisation_leaves_the_previous_graph(exported, tmp_path, monkeypatch) -> None:
    import onnxruntime.quantization as ort_quantization

    model, path = exported
    target = tmp_path / "model.int8-static.onnx"
    target.write_bytes(b"previous graph")

    def half_written(model_input, model_output, *args, **kwargs):
        Path(model_output).write_bytes(b"half a graph")  # written, then the quantiser fails
        raise RuntimeError("calibration went wrong")

    monkeypatch.setattr(ort_quantization, "quantize_static", half_written)
    reader = ImageCalibrationReader(calibration(model, batches=1, size=2), path)
    with pytest.raises(ExportError, match="static INT8 quantisation failed: RuntimeError: calibration went"):
        quantize_static_int8(path, target, reader)
    assert target.read_bytes() == b"previous graph"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name], "no temporary left behind"
