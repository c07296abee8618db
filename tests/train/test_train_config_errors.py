"""Unreadable training checkpoints and out-of-range train settings are refused with one clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reidprune.errors import CheckpointError, TrainingError
from reidprune.train.checkpoint import load_resume_state, save_resume_state
from reidprune.train.config import TrainConfig, check_train_config


def test_an_empty_checkpoint_is_named(tmp_path: Path) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"last\.pt: the training checkpoint is empty \(0 bytes\)"):
        load_resume_state(path)


def test_a_truncated_checkpoint_is_named(tmp_path: Path) -> None:
    path = save_resume_state({"model": {"w": torch.zeros(256)}}, tmp_path / "last.pt")
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(
        CheckpointError, match=r"last\.pt: not a readable training checkpoint, truncated or corrupt \("
    ):
        load_resume_state(path)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"label_smoothing": 1.5}, r"train\.label_smoothing=1\.5: expected a value in \[0, 1\)"),
        ({"label_smoothing": 1.0}, r"train\.label_smoothing=1\.0: expected a value in \[0, 1\)"),
        ({"label_smoothing": -0.1}, r"train\.label_smoothing=-0\.1: expected a value in \[0, 1\)"),
        ({"weight_decay": -1e-4}, r"train\.weight_decay=-0\.0001: expected >= 0"),
        ({"weight_decay_norm_bias": -1.0}, r"train\.weight_decay_norm_bias=-1\.0: expected >= 0"),
        ({"triplet_margin": -0.3}, r"train\.triplet_margin=-0\.3: expected >= 0"),
    ],
)
def test_out_of_range_settings_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        check_train_config(TrainConfig(**changes))


def test_edge_values_are_accepted() -> None:
    # 0 margin = soft-margin triplet; no decay and no smoothing are ordinary settings
    check_train_config(TrainConfig(label_smoothing=0.0, weight_decay=0.0, triplet_margin=0.0))
    check_train_config(TrainConfig(label_smoothing=0.99, weight_decay_norm_bias=None))


def test_the_old_checkpoint_names_warn_and_forward(tmp_path: Path) -> None:
    from reidprune.train.checkpoint import load_checkpoint, save_checkpoint

    with pytest.warns(DeprecationWarning, match="use save_resume_state"):
        path = save_checkpoint({"step": 3}, tmp_path / "last.pt")
    with pytest.warns(DeprecationWarning, match="use load_resume_state"):
        assert load_checkpoint(path)["step"] == 3
