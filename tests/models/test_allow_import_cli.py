"""CLI --allow-import: a saved foreign model built by a user's own factory loads only with the flag."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import reidprune
from reidprune.cli import _register, app
from reidprune.models import build_foreign

FACTORY = """
from torch import nn


def tiny_cnn(width=4):
    return nn.Sequential(
        nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 2),
    )
"""


@pytest.fixture
def user_model_dir(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    (tmp_path / "my_factories.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_foreign("my_factories:tiny_cnn", allow_import=True, width=4)
    return reidprune.save(model, tmp_path / "user_model")


def test_measure_loads_a_users_own_model_only_with_allow_import(user_model_dir, tmp_path) -> None:
    _register()
    args = ["measure", str(user_model_dir), "--no-speed", "--input-size", "16x16"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "--allow-import" in refused.output
    out = tmp_path / "cost.json"
    allowed = CliRunner().invoke(app, [*args, "--allow-import", "--json", str(out)])
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(out.read_text())["models"][0]["params"] == 3 * 4 * 9 + 4 + 2 * 4 + 4 * 2 + 2


def test_models_info_shows_a_users_own_model_only_with_allow_import(user_model_dir) -> None:
    _register()
    refused = CliRunner().invoke(app, ["models", "info", str(user_model_dir)])
    assert refused.exit_code == 2 and "--allow-import" in refused.output
    allowed = CliRunner().invoke(app, ["models", "info", str(user_model_dir), "--allow-import"])
    assert allowed.exit_code == 0, allowed.output
    assert (
        "my_factories:tiny_cnn" in allowed.output and str(3 * 4 * 9 + 4 + 2 * 4 + 4 * 2 + 2) in allowed.output
    )


def test_a_job_loads_a_users_own_model_only_with_model_allow_import(user_model_dir) -> None:
    # prune / train take their model through the config (model.weights), not a CLI flag
    from reidprune.config import ExperimentConfig
    from reidprune.errors import CheckpointError
    from reidprune.jobs.loading import job_model

    cfg = ExperimentConfig()
    with pytest.raises(CheckpointError, match="allow_import"):
        job_model(cfg, str(user_model_dir), num_classes=2)
    cfg.model.allow_import = True
    model = job_model(cfg, str(user_model_dir), num_classes=2)
    assert model[-1].out_features == 2


@pytest.mark.parametrize("verb", [["eval"], ["export"], ["bench"], ["measure"], ["models", "info"]])
def test_every_verb_that_loads_a_saved_model_takes_allow_import(verb: list[str]) -> None:
    _register()
    result = CliRunner().invoke(app, [*verb, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--allow-import" in result.output
