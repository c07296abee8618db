"""Static-count token reducers export to ONNX and match ONNX Runtime (1e-4)."""

from __future__ import annotations

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch
from tokens_helpers import batches, tiny_vit
from torch import Tensor, nn

from reidprune.compress.tokens import prune_tokens

METHODS = [
    ("amg", {"mode": "kv"}),
    ("amg", {"mode": "skip"}),
    ("topk", {"fuse": True}),
    ("pm", {}),
    ("tome", {}),
]


class TokensAndGrid(nn.Module):
    """Logits and the restored (B, 1 + P, D) token grid: every reducer op and the restore path."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        tokens, state = self.vit.forward_tokens(images)
        return self.vit.head(tokens[:, 0]), self.vit.restore_grid(tokens, state)


def _export_and_compare(model: nn.Module, path, dynamo: bool) -> None:
    wrapper = TokensAndGrid(model).eval()
    images = batches((2,))[0]["image"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (images,), str(path), dynamo=dynamo, input_names=["images"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    with torch.no_grad():
        expected = [t.numpy() for t in wrapper(images)]
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("method", "options"), METHODS)
def test_reduced_models_export_with_the_torchscript_exporter(tmp_path, method: str, options: dict) -> None:
    reduced, _ = prune_tokens(tiny_vit(), method, 0.4, batches(), **options)
    assert any(block.reducer is not None for block in reduced.blocks)
    _export_and_compare(reduced, tmp_path / "model.onnx", dynamo=False)


@pytest.mark.slow
def test_reduced_models_export_with_the_dynamo_exporter(tmp_path) -> None:
    reduced, _ = prune_tokens(tiny_vit(), "pm", 0.4, batches())
    _export_and_compare(reduced, tmp_path / "model.onnx", dynamo=True)
