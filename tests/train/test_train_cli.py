"""`reidprune train` end to end on a tiny generated data set (Market-1501 layout) with a tiny ViT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import reidprune
from reidprune.cli import _register, app
from reidprune.config import load_config
from reidprune.data import build_dataset, build_loaders
from reidprune.jobs.loading import job_model
from reidprune.train import BaseCallback, fit
from reidprune.train.log import read_log

CONFIG = """
name: tiny
seed: 0
device: cpu
data:
  format: synth
  synth_ids: 12
  val_ids: 2
  height: 32
  width: 16
  batch_size: 8
  num_instances: 4
  test_batch_size: 32
  num_workers: 0
model:
  name: vit_tiny_reid
  kwargs: {depth: 2}
train:
  epochs: 2
  optimizer: adamw
  lr: 0.001
  warmup_epochs: 1
  progress: false
  log_every: 5
"""


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    path = root / "tiny.yaml"
    text = CONFIG.replace("  format: synth\n", f"  format: synth\n  root: {root / 'synth'}\n")
    path.write_text(text + f"output_dir: {root / 'run'}\n")
    return path


def _invoke(*args: str):
    _register()
    return CliRunner().invoke(app, ["train", *args], catch_exceptions=False)


@pytest.mark.slow
def test_train_cli_trains_selects_on_validation_and_reports_test(config_file: Path) -> None:
    result = _invoke("--config", str(config_file))
    assert result.exit_code == 0, result.output
    run = config_file.parent / "run"
    for name in ("config.yaml", "train_log.jsonl", "metrics.json", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["select_metric"] == "mAP" and metrics["best_epoch"] in (0, 1)
    assert metrics["test_split"] == "query/gallery"
    for which in ("final", "best"):
        assert 0.0 < metrics["test"][which]["mAP"] <= 100.0
    best = reidprune.load(run / "best")
    final = reidprune.load(run / "final")
    assert best.arch.num_classes == final.arch.num_classes == metrics["data"]["num_classes"] == 4
    epochs = [r for r in read_log(run / "train_log.jsonl") if r["event"] == "val"]
    assert len(epochs) == 2  # validated every epoch on the held-out identities

    # --resume on a finished run continues from its last checkpoint: nothing left to train
    again = _invoke("--config", str(config_file), "--resume")
    assert again.exit_code == 0, again.output
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["steps"] == metrics["steps"]
    reloaded = reidprune.load(run / "final")
    for key, value in final.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key


def test_train_cli_reports_bad_settings_in_one_line(config_file: Path) -> None:
    result = _invoke("--config", str(config_file), "train.optimizer=lamb", "train.epochs=1")
    assert result.exit_code == 2
    assert "train.optimizer='lamb'" in result.output
    assert "Traceback" not in result.output


class _KillAt(BaseCallback):
    def __init__(self, step: int | None) -> None:
        self.step = step

    def on_step_end(self, engine) -> None:
        if engine.step == self.step:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_is_exact_with_the_real_data_pipeline(config_file: Path, tmp_path: Path) -> None:
    """PK sampler + random crop / flip / erasing in a DataLoader worker: killed mid-epoch and resumed
    gives the uninterrupted run's weights exactly."""
    overrides = ["data.num_workers=1", "data.val_ids=0", "train.epochs=1", "train.checkpoint_every_steps=4"]
    cfg = load_config(config_file, overrides)
    splits = build_dataset(cfg.data)

    def run(out: Path, kill_at: int | None = None, resume: bool = False):
        torch.manual_seed(0)
        model = job_model(cfg, cfg.model.weights, splits.num_classes).train()
        loaders = build_loaders(cfg.data, splits, seed=cfg.seed)
        return fit(model, loaders, cfg.train, out, callbacks=[_KillAt(kill_at)], resume=resume, seed=cfg.seed)

    reference = run(tmp_path / "ref")
    assert reference.steps > 6
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", kill_at=6)
    resumed = run(tmp_path / "killed", resume=True)
    assert resumed.steps == reference.steps
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_distillation_from_the_cli_needs_a_trained_teacher(config_file: Path, tmp_path: Path) -> None:
    result = _invoke("--config", str(config_file), "train.distill=soft", f"output_dir={tmp_path / 'run'}")
    assert result.exit_code == 2
    assert "needs a trained teacher" in result.output
