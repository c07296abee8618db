"""Top-k accuracy of classification models."""

from __future__ import annotations

import pytest
import torch
from eval_helpers import batches
from torch import Tensor, nn

from reidprune.errors import DataError
from reidprune.evaluate import evaluate_classification
from reidprune.models.output import ModelOutput

# image i carries its logits in pixel [0, 0, 0, :6]: 6 classes, 4 images
LOGITS = torch.tensor(
    [
        [9.0, 1, 2, 3, 4, 5],  # label 0: top-1 hit
        [9.0, 8, 7, 6, 5, 4],  # label 4: 5th best -> top-5 hit only
        [9.0, 8, 7, 6, 5, 4],  # label 5: 6th best -> miss
        [0.0, 0, 0, 0, 0, 1],  # label 5: top-1 hit
    ]
)
LABELS = torch.tensor([0, 4, 5, 5])


class LogitReader(nn.Module):
    def __init__(self, as_output: bool) -> None:
        super().__init__()
        self.as_output = as_output
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, images: Tensor) -> ModelOutput | Tensor:
        logits = images[:, 0, 0, :6] * self.scale
        return ModelOutput(embedding=logits, logits=[logits]) if self.as_output else logits


def _loader() -> list[dict[str, Tensor]]:
    images = torch.zeros(4, 3, 6, 6)
    images[:, 0, 0, :] = LOGITS
    return batches(images, LABELS, torch.zeros(4, dtype=torch.long), size=3)


@pytest.mark.parametrize("as_output", [True, False])
def test_top1_and_top5_in_percent(as_output: bool) -> None:
    result = evaluate_classification(LogitReader(as_output), _loader())
    assert result["top1"] == 50.0
    assert result["top5"] == 75.0
    assert result["num_images"] == 4


def test_re_id_model_without_logits_is_explained() -> None:
    class EmbeddingOnly(nn.Module):
        def forward(self, images: Tensor) -> ModelOutput:
            return ModelOutput(embedding=images.flatten(1))

    with pytest.raises(ValueError, match="returned no logits in eval mode"):
        evaluate_classification(EmbeddingOnly(), _loader())


def test_empty_loader_is_an_error() -> None:
    with pytest.raises(DataError, match="no images"):
        evaluate_classification(LogitReader(True), [])
