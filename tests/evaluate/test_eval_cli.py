"""`reidprune eval` and `reidprune measure` end to end on a tiny Market-1501-layout folder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from reidprune import models
from reidprune.cli import _register, app
from reidprune.data import DataConfig, build_dataset, build_loaders
from reidprune.evaluate import EvalConfig, evaluate_reid

SMALL = ["data.height=32", "data.width=16", "data.num_workers=0", "data.test_batch_size=4"]


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 identities x 2 cameras: 1 query and 2 gallery images each, 2 training images, plus a
    distractor (0000) and a junk image (-1) in the gallery; JPEG names as in Market-1501."""
    root = tmp_path_factory.mktemp("market")
    rng = np.random.default_rng(0)
    for folder in ("bounding_box_train", "bounding_box_test", "query"):
        (root / folder).mkdir()

    def write(folder: str, pid: int, cam: int, frame: int) -> None:
        pixels = rng.integers(0, 255, (32, 16, 3), dtype=np.uint8)
        name = f"{pid:04d}_c{cam}s1_{frame:06d}_00.jpg" if pid >= 0 else f"-1_c{cam}s1_{frame:06d}_00.jpg"
        Image.fromarray(pixels).save(root / folder / name)

    for pid in (1, 2, 3, 4):
        for cam in (1, 2):
            write("query", pid, cam, 10 * pid + cam)
            write("bounding_box_test", pid, cam, 100 + 10 * pid + cam)
            write("bounding_box_test", pid, cam, 200 + 10 * pid + cam)
            write("bounding_box_train", pid + 10, cam, 300 + 10 * pid + cam)
    write("bounding_box_test", 0, 1, 999)
    write("bounding_box_test", -1, 2, 998)
    return root


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    _register()
    return CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = models.create("vit_tiny_reid", num_classes=4, img_size=[32, 16])
    return models.save(model, tmp_path_factory.mktemp("model") / "tiny")


@pytest.mark.slow
def test_eval_model_dir_matches_the_python_api(
    runner: CliRunner, market: Path, model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "metrics.json"
    args = ["eval", str(model_dir), *SMALL, "--data-format", "market1501", "--data-root", str(market)]
    result = runner.invoke(app, [*args, "--flip", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "mAP" in result.output
    payload = json.loads(out.read_text())
    assert payload["task"] == "reid" and payload["eval"]["flip"] is True
    data = DataConfig(
        format="market1501", root=str(market), height=32, width=16, num_workers=0, test_batch_size=4
    )
    loaders = build_loaders(data, dataclasses.replace(build_dataset(data), train=[]))
    expected = evaluate_reid(models.load(model_dir), loaders.query, loaders.gallery, EvalConfig(flip=True))
    assert payload["metrics"] == pytest.approx(expected)
    assert payload["metrics"]["num_queries"] == 8 and payload["metrics"]["num_skipped_queries"] == 0


@pytest.mark.slow
def test_eval_registry_name_with_foreign_weights(
    runner: CliRunner, market: Path, model_dir: Path, tmp_path: Path
) -> None:
    weights = tmp_path / "tiny.pth"
    torch.save(models.load(model_dir).state_dict(), weights)
    out_dir, out_pth = tmp_path / "dir.json", tmp_path / "pth.json"
    common = [
        *SMALL,
        "--data-format",
        "market1501",
        "--data-root",
        str(market),
        "--rerank",
        "eval.rerank_k1=3",
    ]
    assert runner.invoke(app, ["eval", str(model_dir), *common, "--json", str(out_dir)]).exit_code == 0
    result = runner.invoke(
        app, ["eval", "vit_tiny_reid", *common, "--weights", str(weights), "--json", str(out_pth)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out_pth.read_text())["metrics"] == json.loads(out_dir.read_text())["metrics"]


def _error(runner: CliRunner, args: list[str]) -> str:
    """The error message of a failing command, unwrapped from the console's line breaks."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    return " ".join(result.output.split())


def test_eval_errors_are_one_line(runner: CliRunner, market: Path, tmp_path: Path) -> None:
    args = [*SMALL, "--data-format", "market1501", "--data-root", str(market)]
    assert "not a reidprune model directory" in _error(runner, ["eval", str(tmp_path), *args])
    assert "set data.val_ids > 0" in _error(runner, ["eval", "vit_tiny_reid", *args, "--split", "val"])
    assert "eval.metric='l1'" in _error(runner, ["eval", "vit_tiny_reid", *args, "--metric", "l1"])


def test_measure_counts_and_json(runner: CliRunner, model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    result = runner.invoke(app, ["measure", str(model_dir), "--no-speed", "--json", str(out)])
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text())["models"][0]
    tiny = models.load(model_dir)
    assert row["model"] == str(model_dir) and "speed" not in row
    assert row["params"] == sum(p.numel() for p in tiny.parameters())
    assert row["input_size"] == [32, 16]
    assert [b["name"] for b in row["per_block"]] == [f"backbone.blocks.{i}" for i in range(6)]
    result = runner.invoke(
        app, ["measure", "resnet18_reid", "--no-speed", "--input-size", "64x32", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text())["models"][0]
    assert row["input_size"] == [64, 32]
    assert [b["name"] for b in row["per_block"]] == ["layer1", "layer2", "layer3", "layer4"]


def test_measure_speed_and_bad_size(runner: CliRunner, model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    args = ["measure", str(model_dir), "--batch-size", "2", "--min-time", "0.01", "--threads", "1"]
    result = runner.invoke(app, [*args, "--json", str(out)])
    assert result.exit_code == 0, result.output
    speed = json.loads(out.read_text())["models"][0]["speed"]
    assert speed["batch_size"] == 2 and speed["threads"] == 1 and speed["throughput_ips"] > 0
    assert "expected HxW" in _error(runner, ["measure", str(model_dir), "--input-size", "32by16"])
