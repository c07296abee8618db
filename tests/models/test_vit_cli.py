"""`reidprune models list` / `reidprune models info`."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from reidprune.cli import models as models_cli
from reidprune.models import create, save
from reidprune.models.plan import CompressionPlan


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """test root"""

    models_cli.register(app)
    return app


def test_models_list_shows_names_params_and_input_size():
    result = CliRunner().invoke(_app(), ["models", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    line = next(row for row in result.output.splitlines() if "deit_tiny_patch16_224" in row)
    assert "5.72" in line and "224x224" in line and "linear" in line
    assert "transreid_base" in result.output and "128x64" in result.output


def test_models_info_of_a_saved_model_shows_heads_and_plan(tmp_path):
    model = create("vit_tiny_reid", num_heads=[3, 1], depth=2)
    model.compression_plan = CompressionPlan("head-entropy", 0.33, {})
    save(model, tmp_path / "pruned")
    result = CliRunner().invoke(_app(), ["models", "info", str(tmp_path / "pruned")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "[3, 1]" in result.output and "head-entropy" in result.output


def test_models_info_of_an_unknown_name_is_one_clear_error():
    result = CliRunner().invoke(_app(), ["models", "info", "vit_huge"])
    assert result.exit_code == 2
    assert "unknown model 'vit_huge'" in result.output
