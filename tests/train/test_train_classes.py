"""One classifier rule for `train` and `prune`: the model's classes must be the training split's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reidprune import models
from reidprune.config import load_config
from reidprune.data import build_dataset
from reidprune.errors import TrainingError
from reidprune.jobs.loading import job_model
from tiny_models import vit_arch

# a 2-block ViT with a plain linear classifier of 10 classes (as DeiT's 1000-way ImageNet head)
LINEAR_VIT = vit_arch(depth=2, img_size=(16, 8), head="linear", num_classes=10)


@pytest.fixture
def imagefolder(tmp_path: Path, make_imagefolder_tree) -> Path:  # type: ignore[no-untyped-def]
    return make_imagefolder_tree(tmp_path / "images")  # classes cat, dog


def _cfg(root: Path, weights: Path):  # type: ignore[no-untyped-def]
    cfg = load_config(
        overrides=[
            "data.format=imagefolder",
            f"data.root={root}",
            "model.name=vit_tiny_reid",
            f"model.weights={weights}",
        ]
    )
    cfg.data.height, cfg.data.width = LINEAR_VIT["img_size"]
    cfg.model.kwargs = {k: v for k, v in LINEAR_VIT.items() if k not in ("num_classes", "img_size")}
    return cfg


def test_prune_refuses_a_classifier_of_other_classes_as_train_does(imagefolder: Path, tmp_path: Path) -> None:
    model_dir = models.save(models.create("vit_tiny_reid", **LINEAR_VIT), tmp_path / "cls10")
    cfg = _cfg(imagefolder, model_dir)
    num_classes = build_dataset(cfg.data).num_classes
    assert num_classes == 2
    expected = rf"model.weights={model_dir}: the model has 10 classes but the training split of .* has 2"
    with pytest.raises(TrainingError, match=expected):
        job_model(cfg, cfg.model.weights, num_classes)  # what train and prune both start from


def test_prune_refuses_a_foreign_checkpoint_of_other_classes(imagefolder: Path, tmp_path: Path) -> None:
    """The seed-style case: a 10-class .pth (DeiT: 1000) pruned on a 2-class ImageFolder."""
    weights = tmp_path / "cls10.pth"
    torch.save(models.create("vit_tiny_reid", **LINEAR_VIT).state_dict(), weights)
    cfg = _cfg(imagefolder, weights)
    with pytest.raises(TrainingError, match=r"the model has 10 classes but the training split of .* has 2"):
        job_model(cfg, cfg.model.weights, 2)
