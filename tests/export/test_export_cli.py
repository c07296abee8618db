"""`reidprune export` and `reidprune bench` on saved tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from export_helpers import amg_kv, transreid_cameras, vit_bnneck
from typer.testing import CliRunner

from reidprune.cli import _register, app
from reidprune.models import save

runner = CliRunner()
_register()


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "dense": save(vit_bnneck(), root / "dense"),
        "amg": save(amg_kv(), root / "amg"),
        "transreid": save(transreid_cameras(), root / "transreid"),
    }


def test_export_writes_graph_and_export_json(model_dirs) -> None:
    result = runner.invoke(app, ["export", "--model", str(model_dirs["transreid"]), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    info = json.loads((model_dirs["transreid"] / "export.json").read_text())
    assert (model_dirs["transreid"] / "model.onnx").is_file()
    assert info["opset"] == 18 and info["batch"] == "dynamic" and info["exporter"] == "torchscript"
    assert [i["name"] for i in info["inputs"]] == ["images", "camids"]
    assert info["check"]["passed"] and info["check"]["max_abs_diff"] <= info["check"]["bound"]


def test_export_quantised_with_accuracy(model_dirs, tmp_path, synth_root) -> None:
    out = tmp_path / "amg.onnx"
    args = ["export", "-m", str(model_dirs["amg"]), "-o", str(out), "--quantize", "int8", "--batch", "2"]
    result = runner.invoke(app, [*args, "--data", str(synth_root)])
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "amg.export.json").read_text())
    assert info["batch"] == 2 and (tmp_path / "amg.int8.onnx").is_file()
    assert info["quantized"]["integer_ops"]["MatMulInteger"] > 0
    metrics = info["accuracy"]["metrics"]
    assert set(metrics) == {"pytorch", "onnx fp32", "onnx int8"}
    assert metrics["onnx fp32"]["mAP"] == pytest.approx(metrics["pytorch"]["mAP"], abs=1e-3)
    assert "onnx int8" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch", "0"], "--batch 0"),
        (["--format", "tflite"], "--format tflite"),
        (["--quantize", "int4"], "--quantize int4"),
        (["--opset", "9"], "opset 9"),
    ],
)
def test_export_rejects_bad_options(model_dirs, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["export", "--model", str(model_dirs["dense"]), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_export_names_a_folder_that_is_no_model(tmp_path) -> None:
    result = runner.invoke(app, ["export", "--model", str(tmp_path)])
    assert result.exit_code == 2 and "model.json" in result.output


def test_bench_two_models_table_and_json(model_dirs, tmp_path) -> None:
    path = tmp_path / "bench.json"
    args = ["bench", str(model_dirs["dense"]), str(model_dirs["amg"]), "--batch-size", "2"]
    result = runner.invoke(app, [*args, "--min-time", "0.2", "--threads", "1", "--json", str(path)])
    assert result.exit_code == 0, result.output
    rows = json.loads(path.read_text())["models"]
    assert [r["name"] for r in rows] == ["dense", "amg"]
    assert all(r["ort_latency_ms_b1"] > 0 and r["torch_throughput_ips"] > 0 for r in rows)
    assert "dense" in result.output and "amg" in result.output
