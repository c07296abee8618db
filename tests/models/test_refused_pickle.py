"""A pickle that needs more than weights is refused with a plain message, never a hint to load it unsafely."""

from __future__ import annotations

import pytest
import torch

from reidprune.models import create, load_checkpoint
from reidprune.models.checkpoint_io import CheckpointError
from reidprune.train.checkpoint import load_resume_state as load_training_checkpoint


class TrainingArgs:
    """Not a tensor or a plain container: unpickling it would run this module's code."""

    def __init__(self) -> None:
        self.lr = 0.1


def _expected(path) -> str:
    return (
        f"{path}: not loaded: the file holds code or objects other than weights (an object of class "
        f"{__name__}.TrainingArgs), and reidprune never unpickles those. Re-save only the weights, "
        "torch.save(model.state_dict(), path), where the file was made"
    )


def test_a_foreign_checkpoint_with_objects_is_refused_naming_the_class(tmp_path):
    model = create("vit_tiny_reid", depth=1)
    path = tmp_path / "finetuned.pth"
    torch.save({"model": model.state_dict(), "args": TrainingArgs()}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(model, path)
    assert str(err.value) == _expected(path)


def test_a_training_checkpoint_with_objects_is_refused_naming_the_class(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"format": "reidprune-train", "args": TrainingArgs()}, path)
    with pytest.raises(CheckpointError) as err:
        load_training_checkpoint(path)
    assert str(err.value) == _expected(path)
    assert "weights_only" not in str(err.value)
