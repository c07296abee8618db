"""What the CLI verbs feed a saved model: its own input size unless the user sets one it can take,
and the model inside a run directory when given the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reidprune import models
from reidprune.cli import _register, app
from reidprune.cli.model_dirs import resolve_model_dir
from reidprune.config import load_config
from reidprune.data.config import DataConfig, requested_size
from reidprune.errors import CheckpointError, ConfigError
from reidprune.models.forward import input_size_for
from tiny_models import vit_arch

# a 2-block ViT built for 32 x 16 (8 px patches: a 4 x 2 grid); the data defaults are 256 x 128
SMALL_VIT = vit_arch(depth=2, img_size=(32, 16), num_classes=3)  # market_root's training identities 2, 7, 11
QUIET = ["data.num_workers=0", "data.test_batch_size=4"]


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    _register()
    return CliRunner()


@pytest.fixture
def vit_dir(tmp_path: Path) -> Path:
    return models.save(models.create("vit_tiny_reid", **SMALL_VIT), tmp_path / "vit32x16")


def _error(runner: CliRunner, args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    return " ".join(result.output.split())


# ---- input size ----


def test_requested_size_is_none_unless_set() -> None:
    assert requested_size(DataConfig()) is None
    assert requested_size(DataConfig(height=64, width=32)) == (64, 32)
    with pytest.raises(ConfigError, match=r"data.height=64, data.width=None: set both"):
        requested_size(DataConfig(height=64))


def test_input_size_for_a_vit_and_a_cnn() -> None:
    vit = models.create("vit_tiny_reid", **SMALL_VIT)
    assert input_size_for(vit, None, "--input-size") == (32, 16)
    assert input_size_for(vit, (32, 16), "--input-size") == (32, 16)
    with pytest.raises(
        ConfigError, match=r"--input-size 64x32: the model takes only its own input size 32x16"
    ):
        input_size_for(vit, (64, 32), "--input-size")
    cnn = models.create("resnet18_reid", num_classes=3)
    assert input_size_for(cnn, (64, 32), "--input-size") == (64, 32)  # global pooling takes any size


def test_eval_feeds_the_model_its_own_size(
    runner: CliRunner, vit_dir: Path, market_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval.json"
    args = ["eval", str(vit_dir), "--data-format", "market1501", "--data-root", str(market_root), *QUIET]
    result = runner.invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["data"]["input_size"] == [32, 16]


def test_eval_refuses_a_size_the_model_cannot_take(
    runner: CliRunner, vit_dir: Path, market_root: Path
) -> None:
    args = ["eval", str(vit_dir), "--data-format", "market1501", "--data-root", str(market_root), *QUIET]
    message = _error(runner, [*args, "data.height=64", "data.width=32"])
    assert "data.height x data.width 64x32: the model takes only its own input size 32x16" in message


def test_measure_refuses_a_size_the_model_cannot_take(runner: CliRunner, vit_dir: Path) -> None:
    message = _error(runner, ["measure", str(vit_dir), "--no-speed", "--input-size", "64x32"])
    assert "--input-size 64x32: the model takes only its own input size 32x16" in message


@pytest.mark.slow
def test_prune_without_a_size_uses_the_models(vit_dir: Path, market_root: Path, tmp_path: Path) -> None:
    from reidprune.jobs.prune import prune_experiment

    cfg = load_config(
        overrides=[
            "data.format=market1501",
            f"data.root={market_root}",
            *QUIET,
            "data.batch_size=4",
            "data.num_instances=2",
            f"model.weights={vit_dir}",
            "prune.method=token-topk",
            "prune.rate=0.3",
            "prune.final_epochs=0",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    summary = prune_experiment(cfg)
    assert summary["pruned"]["gmacs"] < summary["unpruned"]["gmacs"]
    saved = load_config(tmp_path / "run" / "config.yaml")
    assert (saved.data.height, saved.data.width) == (32, 16)


# ---- data format ----


def test_eval_detects_the_data_format_of_data_root(
    runner: CliRunner, vit_dir: Path, market_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval.json"
    result = runner.invoke(
        app, ["eval", str(vit_dir), "--data-root", str(market_root), *QUIET, "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert f"{market_root}: detected the market1501 layout" in " ".join(result.output.split())
    assert json.loads(out.read_text())["data"]["format"] == "market1501"


def test_eval_asks_for_the_format_of_an_unknown_layout(
    runner: CliRunner, vit_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "photos").mkdir()
    message = _error(runner, ["eval", str(vit_dir), "--data-root", str(tmp_path / "photos"), *QUIET])
    assert f"cannot tell the data set format of {tmp_path / 'photos'}" in message
    assert "pass the format explicitly (--data-format / data.format: one of market1501, dukemtmc" in message


# ---- run directories ----


def test_a_run_directory_resolves_to_its_model(vit_dir: Path, tmp_path: Path) -> None:
    train_run, prune_run = tmp_path / "train_run", tmp_path / "prune_run"
    vit = models.load(vit_dir)
    models.save(vit, train_run / "final")
    models.save(vit, train_run / "best")
    models.save(vit, prune_run / "model")
    models.save(vit, prune_run / "final")  # a prune run's final/ is its fine-tuning; model/ is the result
    assert resolve_model_dir(vit_dir) == vit_dir
    assert resolve_model_dir(train_run, quiet=True) == train_run / "final"
    assert resolve_model_dir(prune_run, quiet=True) == prune_run / "model"
    with pytest.raises(
        CheckpointError, match=r"nor a run directory with model/model.json / final/model.json"
    ):
        resolve_model_dir(tmp_path)


def test_measure_accepts_a_run_directory_and_says_which_model(
    runner: CliRunner, vit_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "baseline"
    models.save(models.load(vit_dir), run / "final")
    out = tmp_path / "cost.json"
    result = runner.invoke(app, ["measure", str(run), "--no-speed", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert f"using the final model, {run / 'final'}" in " ".join(result.output.split())
    params = sum(p.numel() for p in models.load(vit_dir).parameters())
    assert json.loads(out.read_text())["models"][0]["params"] == params
