"""The module that is exported: a reidprune model in eval mode, returning plain tensors.

ONNX graphs take and return tensors, not `ModelOutput`s. `ExportWrapper` fixes what the graph
computes: the eval-mode retrieval embedding (exactly what `reidprune.evaluate` ranks with) and,
for classification models, the eval-mode logits. Camera ids are a second input only for models
whose architecture has a camera embedding (TransReID SIE, `arch.num_cameras > 0`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from reidprune.models.forward import forward_model, model_input_size, uses_cameras
from reidprune.models.output import ModelOutput

IMAGES = "images"
CAMIDS = "camids"
EMBEDDING = "embedding"


@dataclass(frozen=True)
class Signature:
    """Names of the graph's inputs and outputs, and the image size it was built for.

    inputs: ("images",) or ("images", "camids"); images float32 (B, 3, H, W), camids int64 (B,).
    outputs: ("embedding",) or ("embedding", "logits") (one "logits_i" per classifier when several).
    output_dims: the shape of each output without the batch axis, e.g. ((768,), (751,)).
    """

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    output_dims: tuple[tuple[int, ...], ...]
    img_size: tuple[int, int]
    num_cameras: int

    @property
    def num_logits(self) -> int:
        return len(self.outputs) - 1


def logits_names(count: int) -> tuple[str, ...]:
    return ("logits",) if count == 1 else tuple(f"logits_{i}" for i in range(count))


def signature_of(model: nn.Module) -> Signature:
    """What the exported graph of `model` takes and returns, found by one eval-mode forward pass
    on a batch of 1 (whether logits exist in eval mode depends on the head, not on a flag)."""
    height, width = model_input_size(model)
    cameras = int(model.arch.num_cameras) if uses_cameras(model) else 0  # type: ignore[union-attr]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            images, camids = example_inputs(model, batch=1)
            out = forward_model(model, images, camids)
    finally:
        model.train(was_training)
    if isinstance(out, ModelOutput):
        tensors = [out.embedding, *out.logits]
    elif isinstance(out, Tensor):
        tensors = [out]
    else:
        raise TypeError(f"expected the model to return a ModelOutput or a Tensor, got {type(out).__name__}")
    count = len(tensors) - 1
    return Signature(
        inputs=(IMAGES, CAMIDS) if cameras else (IMAGES,),
        outputs=(EMBEDDING, *logits_names(count)) if count else (EMBEDDING,),
        output_dims=tuple(tuple(int(d) for d in t.shape[1:]) for t in tensors),
        img_size=(height, width),
        num_cameras=cameras,
    )


def example_inputs(model: nn.Module, batch: int, seed: int = 0) -> tuple[Tensor, Tensor | None]:
    """Seeded random inputs: images (batch, 3, H, W) ~ N(0, 1) (the scale of normalised images) and,
    for camera-aware models, camids (batch,) drawn from 0..num_cameras-1 (else None)."""
    height, width = model_input_size(model)
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, height, width, generator=gen)
    if not uses_cameras(model):
        return images, None
    cameras = int(model.arch.num_cameras)  # type: ignore[union-attr]
    return images, torch.randint(0, cameras, (batch,), generator=gen)


class ExportWrapper(nn.Module):
    """forward(images, [camids]) -> embedding (B, D) [, logits (B, C) ...], always in eval mode."""

    def __init__(self, model: nn.Module, signature: Signature) -> None:
        super().__init__()
        self.model = model
        self.signature = signature
        self.eval()

    def train(self, mode: bool = True) -> ExportWrapper:
        # the graph is the inference graph: dropout, drop-path and BN statistics stay frozen
        return super().train(False)

    def forward(self, images: Tensor, camids: Tensor | None = None) -> Tensor | tuple[Tensor, ...]:
        out = forward_model(self.model, images, camids)
        if not isinstance(out, ModelOutput):
            return out
        if self.signature.num_logits == 0:
            return out.embedding
        return (out.embedding, *out.logits[: self.signature.num_logits])
