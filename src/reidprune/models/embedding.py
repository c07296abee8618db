"""A plain (B, 3, H, W) -> (B, D) embedder for any model, for a user's loop, ONNX or a tracker.

    embedder = reidprune.models.feature_extractor(model)
    features = embedder(images)            # (B, D) Tensor, always computed in eval mode

reidprune models: the `ModelOutput.embedding` of eval mode, i.e. the vector evaluation ranks with
(after the BNNeck where there is one; camera ids default to 0 for SIE models). Any other module
(a torchvision / timm / torchreid CNN, pruned or not): its penultimate feature, i.e. the output
with its last registered nn.Linear (the classifier) replaced by nn.Identity, or the layer named
by `classifier`.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

from reidprune.errors import CompressionError
from reidprune.models.forward import embedding_of, forward_model


class FeatureExtractor(nn.Module):
    """Wraps a model; forward(images, camids=None) -> (B, D) embedding. The wrapped model stays in
    eval mode whatever `.train()` is called with (it is an embedder, not a training module)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def train(self, mode: bool = True) -> FeatureExtractor:
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, images: Tensor, camids: Tensor | None = None) -> Tensor:
        output = forward_model(self.model, images, camids)
        if isinstance(output, list | tuple):  # e.g. torchreid's (logits, feature) in training mode
            output = output[-1]
        return embedding_of(output)


def _returns_model_output(model: nn.Module) -> bool:
    return getattr(model, "arch", None) is not None


def _last_linear(model: nn.Module) -> str:
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise CompressionError(
            f"{type(model).__name__} has no nn.Linear classifier to remove; pass classifier='name' "
            "of the output layer, or a model that already returns its feature"
        )
    return names[-1]


def feature_extractor(model: nn.Module, classifier: str | None = None) -> FeatureExtractor:
    """A copy of `model` that returns its (B, D) re-ID embedding as a plain Tensor (see the module
    docstring). classifier: name of the output layer of a foreign model to drop (default: its last
    nn.Linear). The input model is not changed."""
    twin = copy.deepcopy(model)
    if not _returns_model_output(twin):
        name = classifier or _last_linear(twin)
        parent_name, _, child = name.rpartition(".")
        try:
            parent = twin.get_submodule(parent_name)
            getattr(parent, child)
        except AttributeError:
            raise CompressionError(f"classifier '{name}': no such layer in {type(model).__name__}") from None
        setattr(parent, child, nn.Identity())
    return FeatureExtractor(twin)
