"""The rule that a model's classifier fits the data it is trained or fine-tuned on.

`reidprune train` and `reidprune prune` (whose fine-tuning trains the same classifier) both call
`check_classifier`, so the same model and data are accepted or refused alike by both.
"""

from __future__ import annotations

from torch import nn

from reidprune.errors import TrainingError


def check_classifier(model: nn.Module, num_classes: int, weights: str, data_root: str) -> None:
    """Raise TrainingError when `model`'s classifier (arch.num_classes) does not have exactly the
    `num_classes` identities / classes of the training split of `data_root` (e.g. DeiT's 1000-way
    ImageNet head on a 5-class ImageFolder: its logits would not mean these classes)."""
    own = getattr(getattr(model, "arch", None), "num_classes", num_classes)
    if own != num_classes:
        raise TrainingError(
            f"model.weights={weights}: the model has {own} classes but the training split of "
            f"{data_root} has {num_classes} identities / classes; its classifier is trained on that "
            "split, so the two must match (start from weights trained on this data set)"
        )
