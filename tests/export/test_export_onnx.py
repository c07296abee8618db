"""ONNX export of every model family and compression method, checked against ONNX Runtime."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import onnx
import pytest
import torch
from export_helpers import COMPRESSED, FAMILIES, inputs, outputs_of, transreid_cameras, vit_bnneck, vit_linear
from torch import Tensor, nn

from reidprune.export import ExportError, OnnxModel, check_onnx, export_onnx
from reidprune.models.output import ModelOutput

ALL = {**FAMILIES, **COMPRESSED}


def assert_same_embedding(onnx_model: OnnxModel, model: nn.Module, batch: int) -> None:
    images, camids = inputs(model, batch)
    got = onnx_model(images, camids)
    expected = outputs_of(model, images, camids)
    bound = 1e-4 * max(1.0, float(expected.embedding.abs().max()))
    assert got.embedding.shape == expected.embedding.shape
    assert float((got.embedding - expected.embedding).abs().max()) <= bound
    assert len(got.logits) == len(expected.logits)
    for a, b in zip(got.logits, expected.logits, strict=True):
        assert float((a - b).abs().max()) <= 1e-4 * max(1.0, float(b.abs().max()))


@pytest.mark.parametrize("name", list(ALL))
def test_export_matches_pytorch_with_a_dynamic_batch(tmp_path, name: str) -> None:
    model = ALL[name]()
    report = export_onnx(model, tmp_path / "model.onnx")
    assert report.check is not None and report.check.passed
    assert report.check.batch_sizes == [1, 3]
    assert report.batch == "dynamic"
    assert report.inputs[0]["shape"] == ["batch", 3, *model.arch.img_size]
    # a batch size the export check did not use: no batch constant is baked into the graph
    assert_same_embedding(OnnxModel(report.path), model, batch=5)


def test_export_check_is_within_the_documented_bound(tmp_path) -> None:
    report = export_onnx(vit_bnneck(), tmp_path / "model.onnx")
    entry = report.check.per_output["embedding"]
    assert entry["bound"] == pytest.approx(1e-4 * max(1.0, entry["scale"]))
    assert entry["max_abs_diff"] <= entry["bound"]


def test_camera_aware_models_take_camids(tmp_path) -> None:
    model = transreid_cameras()
    report = export_onnx(model, tmp_path / "model.onnx")
    assert [i["name"] for i in report.inputs] == ["images", "camids"]
    assert report.inputs[1] == {"name": "camids", "shape": ["batch"], "dtype": "int64"}
    # the camera embedding matters: other cameras give other embeddings, in the graph as in torch
    onnx_model = OnnxModel(report.path)
    images = inputs(model, 2)[0]
    zero = onnx_model(images, torch.tensor([0, 0])).embedding
    two = onnx_model(images, torch.tensor([2, 2])).embedding
    assert not torch.allclose(zero, two)
    assert torch.allclose(two, outputs_of(model, images, torch.tensor([2, 2])).embedding, atol=1e-4)


def test_classification_models_export_embedding_and_logits(tmp_path) -> None:
    report = export_onnx(vit_linear(), tmp_path / "model.onnx")
    assert report.outputs == [
        {"name": "embedding", "shape": ["batch", 32], "dtype": "float32"},
        {"name": "logits", "shape": ["batch", 5], "dtype": "float32"},
    ]


def test_reid_models_export_only_the_embedding(tmp_path) -> None:
    report = export_onnx(vit_bnneck(), tmp_path / "model.onnx")
    assert report.outputs == [{"name": "embedding", "shape": ["batch", 32], "dtype": "float32"}]


def test_static_batch_graph_is_fed_in_padded_chunks(tmp_path) -> None:
    model = transreid_cameras()
    report = export_onnx(model, tmp_path / "model.onnx", batch=2)
    assert report.batch == 2 and report.check.batch_sizes == [2]
    assert report.inputs[0]["shape"] == [2, 3, 32, 16]
    onnx_model = OnnxModel(report.path)
    assert onnx_model.static_batch == 2
    assert_same_embedding(onnx_model, model, batch=5)  # chunks of 2, 2 and 1 padded to 2


def test_graph_metadata_rebuilds_the_architecture(tmp_path) -> None:
    model = COMPRESSED["amg-kv"]()
    report = export_onnx(model, tmp_path / "model.onnx")
    onnx_model = OnnxModel(report.path)
    assert onnx_model.arch == model.arch
    assert report.source["token_reduction"] == "amg (kv)"
    assert report.source["compression"] == "token-amg"
    meta = {p.key: p.value for p in onnx.load(report.path).metadata_props}
    assert meta["reidprune.plan_method"] == "token-amg"


def test_export_leaves_the_model_in_its_mode(tmp_path) -> None:
    model = vit_bnneck().train()
    export_onnx(model, tmp_path / "model.onnx")
    assert model.training


def test_check_flags_a_graph_of_other_weights(tmp_path) -> None:
    path = tmp_path / "model.onnx"
    export_onnx(vit_bnneck(), path)
    other = vit_bnneck()
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in other.parameters():
            param.add_(0.1 * torch.randn(param.shape, generator=gen))
    result = check_onnx(other, path)
    assert not result.passed
    assert result.max_abs_diff > result.bound


@dataclass
class PlainArch:
    family: str = "plain"
    img_size: list[int] = field(default_factory=lambda: [8, 8])
    num_cameras: int = 0


class Drifting(nn.Module):
    """Its output depends on a Python counter that a traced graph freezes at export time."""

    def __init__(self) -> None:
        super().__init__()
        self.arch = PlainArch()
        self.conv = nn.Conv2d(3, 4, 8)
        self.calls = 0

    def forward(self, images: Tensor, camids: Tensor | None = None) -> ModelOutput:
        self.calls += 1
        return ModelOutput(embedding=self.conv(images).flatten(1) + float(self.calls))


def test_export_refuses_a_graph_that_does_not_match(tmp_path) -> None:
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(Drifting().eval(), tmp_path / "model.onnx", exporter="torchscript")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"opset": 9}, "opset 9"),
        ({"opset": 17, "exporter": "dynamo"}, "opset 17"),
        ({"batch": 0}, "batch 0"),
        ({"exporter": "tflite"}, "exporter 'tflite'"),
    ],
)
def test_bad_options_are_named(tmp_path, options: dict, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        export_onnx(vit_bnneck(), tmp_path / "model.onnx", **options)


def test_a_missing_graph_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.onnx"):
        OnnxModel(tmp_path / "missing.onnx")


@pytest.mark.slow
def test_the_dynamo_exporter_handles_cameras_and_jpm(tmp_path) -> None:
    model = transreid_cameras()
    report = export_onnx(model, tmp_path / "model.onnx", exporter="dynamo")
    assert report.exporter == "dynamo" and report.check.passed
    assert not (tmp_path / "model.onnx.data").exists()  # one self-contained file
    assert_same_embedding(OnnxModel(report.path), model, batch=5)


def test_exported_metadata_is_json_of_the_arch(tmp_path) -> None:
    model = vit_bnneck()
    report = export_onnx(model, tmp_path / "model.onnx")
    meta = {p.key: p.value for p in onnx.load(report.path).metadata_props}
    import json

    assert json.loads(meta["reidprune.arch"]) == dataclasses.asdict(model.arch)
    assert json.loads(meta["reidprune.signature"])["inputs"] == ["images"]
