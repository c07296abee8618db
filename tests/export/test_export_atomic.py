"""An export that fails, or is killed, leaves the previous graph and its export.json as they were."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from export_helpers import vit_bnneck
from typer.testing import CliRunner

import reidprune.export.onnx as onnx_export
from reidprune.cli import _register, app
from reidprune.export import ExportError, export_onnx
from reidprune.export.onnx import file_sha256, model_dir_sha256
from reidprune.models import save

_register()


def _good_graph(tmp_path: Path) -> tuple[Path, Path, bytes, bytes]:
    graph, report = tmp_path / "model.onnx", tmp_path / "export.json"
    export_onnx(vit_bnneck(), graph, json_path=report)
    return graph, report, graph.read_bytes(), report.read_bytes()


def test_the_report_is_written_after_the_graph_and_names_its_hash(tmp_path) -> None:
    graph, report, _, _ = _good_graph(tmp_path)
    info = json.loads(report.read_text())
    assert info["sha256"] == file_sha256(graph)
    assert info["path"] == str(graph) and info["check"]["passed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.json", "model.onnx"]


def test_a_graph_that_fails_its_check_replaces_nothing(tmp_path, monkeypatch) -> None:
    graph, report, old_graph, old_report = _good_graph(tmp_path)
    other = vit_bnneck()
    with torch.no_grad():
        other.head.necks[0].bias.add_(1.0)  # a different model, so a different graph
    real = onnx_export.check_onnx

    def failing_check(*args, **kwargs):
        return onnx_export.CheckResult(**{**real(*args, **kwargs).__dict__, "passed": False})

    monkeypatch.setattr(onnx_export, "check_onnx", failing_check)
    with pytest.raises(ExportError, match=r"model\.onnx: ONNX Runtime differs .* so it was not written"):
        export_onnx(other, graph, json_path=report)
    assert graph.read_bytes() == old_graph and report.read_bytes() == old_report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.json", "model.onnx"]


def test_an_export_killed_half_way_leaves_the_old_graph(tmp_path, monkeypatch) -> None:
    graph, report, old_graph, old_report = _good_graph(tmp_path)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # SIGINT / a kill arriving while the graph is being checked

    monkeypatch.setattr(onnx_export, "check_onnx", killed)
    with pytest.raises(KeyboardInterrupt):
        export_onnx(vit_bnneck(), graph, json_path=report)
    assert graph.read_bytes() == old_graph and report.read_bytes() == old_report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.json", "model.onnx"]


@pytest.mark.parametrize(("value", "kind"), [(math.nan, "NaN"), (math.inf, "Inf")])
def test_a_model_that_outputs_nan_is_named_as_the_fault_and_nothing_is_written(tmp_path, value, kind) -> None:
    model = vit_bnneck()
    with torch.no_grad():
        model.head.necks[0].bias[0] = value
    with pytest.raises(ExportError) as err:
        export_onnx(model, tmp_path / "model.onnx")
    assert str(err.value) == (
        f"{tmp_path / 'model.onnx'}: the PyTorch model itself outputs {kind} in 'embedding' on a random "
        "input, before any export: its weights are broken (e.g. a training run that diverged); nothing "
        "was written"
    )
    assert list(tmp_path.iterdir()) == []


def test_cli_export_json_names_the_model_files_it_came_from(tmp_path) -> None:
    model_dir = save(vit_bnneck(), tmp_path / "dense")
    result = CliRunner().invoke(app, ["export", "--model", str(model_dir)])
    assert result.exit_code == 0, result.output
    info = json.loads((model_dir / "export.json").read_text())
    assert info["model_sha256"] == model_dir_sha256(model_dir)
    assert info["sha256"] == file_sha256(model_dir / "model.onnx")
