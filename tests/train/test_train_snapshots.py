"""train.save_every snapshots and `reidprune eval RUN_DIR --which-epoch k|last|best`."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from train_helpers import pk_loaders, tiny_model
from typer.testing import CliRunner

from reidprune import models
from reidprune.cli import _register, app
from reidprune.errors import CheckpointError, ConfigError, TrainingError
from reidprune.train import BaseCallback, fit
from reidprune.train.config import TrainConfig
from reidprune.train.snapshots import choose_snapshot


def cfg(**changes) -> TrainConfig:
    base = dict(epochs=4, optimizer="sgd", lr=0.05, warmup_epochs=0, progress=False, save_every=2)
    return TrainConfig(**{**base, **changes})


def test_save_every_keeps_the_model_after_every_nth_epoch(tmp_path: Path) -> None:
    result = fit(tiny_model(), pk_loaders(), cfg(), tmp_path)
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("epoch_"))
    assert kept == ["epoch_2", "epoch_4"]
    last, second = models.load(tmp_path / "epoch_4"), models.load(tmp_path / "epoch_2")
    final = result.model.state_dict()
    assert all(torch.equal(v, final[k]) for k, v in last.state_dict().items())
    assert not torch.equal(second.state_dict()["body.1.weight"], final["body.1.weight"])


class ZeroNeck(BaseCallback):
    """A callback that saves its own form of the model (as soft filter pruning zeroes its selection)."""

    def snapshot(self, model: torch.nn.Module) -> torch.nn.Module:
        twin = copy.deepcopy(model)
        torch.nn.init.zeros_(twin.neck.weight)
        return twin


def test_a_callback_with_snapshot_decides_what_is_saved(tmp_path: Path) -> None:
    result = fit(tiny_model(), pk_loaders(), cfg(epochs=2), tmp_path, callbacks=[ZeroNeck()])
    saved = models.load(tmp_path / "epoch_2")
    assert torch.equal(saved.neck.weight, torch.zeros(16))
    assert not torch.equal(result.model.neck.weight, torch.zeros(16))


def test_save_every_off_keeps_no_snapshot(tmp_path: Path) -> None:
    fit(tiny_model(), pk_loaders(), cfg(epochs=2, save_every=0), tmp_path)
    assert not any(p.name.startswith("epoch_") for p in tmp_path.iterdir())


def test_save_every_needs_a_model_with_an_arch(tmp_path: Path) -> None:
    model = tiny_model()
    del model.arch
    with pytest.raises(TrainingError, match=r"train\.save_every"):
        fit(model, pk_loaders(), cfg(), tmp_path)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run folder with snapshots of epochs 2 and 4 (each model tells its epoch by its seed)."""
    for epoch in (2, 4):
        models.save(tiny_model(seed=epoch), tmp_path / f"epoch_{epoch}")
    return tmp_path


def test_which_epoch_picks_a_snapshot_the_best_or_the_last(run_dir: Path) -> None:
    assert choose_snapshot(run_dir, "2") == run_dir / "epoch_2"
    assert choose_snapshot(run_dir, "last") == run_dir / "epoch_4"  # no final/: the latest snapshot
    models.save(tiny_model(), run_dir / "final")
    models.save(tiny_model(), run_dir / "best")
    assert choose_snapshot(run_dir, "last") == run_dir / "final"
    assert choose_snapshot(run_dir, "best") == run_dir / "best"


def test_which_epoch_finds_snapshots_of_a_prune_stage(tmp_path: Path) -> None:
    models.save(tiny_model(), tmp_path / "soft" / "epoch_3")
    models.save(tiny_model(), tmp_path / "model")
    assert choose_snapshot(tmp_path, "3") == tmp_path / "soft" / "epoch_3"
    assert choose_snapshot(tmp_path, "last") == tmp_path / "model"
    models.save(tiny_model(), tmp_path / "final" / "epoch_3")
    with pytest.raises(CheckpointError, match="epoch 3 was saved by several stages"):
        choose_snapshot(tmp_path, "3")
    assert choose_snapshot(tmp_path / "final", "3") == tmp_path / "final" / "epoch_3"


def test_which_epoch_refuses_what_the_run_does_not_hold(run_dir: Path) -> None:
    with pytest.raises(CheckpointError, match="no snapshot of epoch 3; snapshots kept: 2, 4"):
        choose_snapshot(run_dir, "3")
    with pytest.raises(CheckpointError, match="no best/ model"):
        choose_snapshot(run_dir, "best")
    with pytest.raises(ConfigError, match="expected an epoch number, last or best"):
        choose_snapshot(run_dir, "latest")


def test_eval_cli_takes_which_epoch(run_dir: Path) -> None:
    _register()
    result = CliRunner().invoke(app, ["eval", str(run_dir), "--which-epoch", "3"])
    assert result.exit_code == 2
    assert "no snapshot of epoch 3; snapshots kept: 2, 4" in " ".join(result.output.split())
