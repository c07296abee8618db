"""models.feature_extractor: a plain (B, D) embedder for reidprune and foreign models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from reidprune.models import build_foreign, create, feature_extractor
from reidprune.models.forward import embedding_of

sys.path.insert(0, str(Path(__file__).parents[1] / "export"))
from export_helpers import TINY_VIT

IMAGES = torch.randn(3, 3, 32, 16, generator=torch.Generator().manual_seed(0))


def _reid_models():
    torch.manual_seed(0)
    yield pytest.param(create("vit_tiny_reid", **TINY_VIT), id="vit_bnneck")
    yield pytest.param(
        create("resnet18_reid", img_size=[32, 16], stage_planes=[8, 8, 16, 16], num_classes=4), id="resnet"
    )


@pytest.mark.parametrize("model", list(_reid_models()))
def test_a_reidprune_model_gives_its_eval_embedding_even_in_train_mode(model):
    embedder = feature_extractor(model).train()
    with torch.no_grad():
        expected = embedding_of(model.eval()(IMAGES))
        got = embedder(IMAGES)
    assert isinstance(got, torch.Tensor)
    assert got.shape == (3, model.arch.embed_dim if hasattr(model.arch, "embed_dim") else expected.shape[1])
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_a_foreign_cnn_gives_the_input_of_its_classifier():
    model = build_foreign("torchvision:mobilenet_v3_small", num_classes=7).eval()
    seen = {}
    model.classifier[3].register_forward_hook(lambda _m, args, _out: seen.update(x=args[0]))
    with torch.no_grad():
        model(IMAGES)
        got = feature_extractor(model)(IMAGES)
    assert got.shape == (3, 1024)
    torch.testing.assert_close(got, seen["x"], rtol=0, atol=0)
    assert isinstance(model.classifier[3], torch.nn.Linear)  # the caller's model is untouched


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript exporter's notices
@pytest.mark.parametrize(
    "model",
    [
        pytest.param(lambda: create("vit_tiny_reid", **TINY_VIT), id="vit_bnneck"),
        pytest.param(lambda: build_foreign("torchvision:mobilenet_v3_small", num_classes=7), id="mobilenet"),
    ],
)
def test_the_embedder_exports_to_onnx_and_onnx_runtime_agrees(model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    embedder = feature_extractor(model())
    path = tmp_path / "embedder.onnx"
    torch.onnx.export(embedder, (IMAGES,), str(path), dynamo=False, input_names=["images"], opset_version=17)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"images": IMAGES.numpy()})
    with torch.no_grad():
        expected = embedder(IMAGES)
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-4)
