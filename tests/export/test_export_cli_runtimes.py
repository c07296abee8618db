"""`reidprune export --format openvino / --quantize int8-static|fp16` and `reidprune bench --runtime openvino`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from export_helpers import resnet, vit_bnneck
from typer.testing import CliRunner

from reidprune.cli import _register, app
from reidprune.models import save

runner = CliRunner()
_register()


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"vit": save(vit_bnneck(), root / "vit"), "resnet": save(resnet(), root / "resnet")}


def test_openvino_static_int8_with_accuracy_and_latency(model_dirs, tmp_path, synth_root) -> None:
    pytest.importorskip("openvino", reason="OpenVINO is an optional extra: pip install 'reidprune[openvino]'")
    out = tmp_path / "vit.onnx"
    args = ["export", "-m", str(model_dirs["vit"]), "-o", str(out), "--format", "openvino"]
    args += ["--quantize", "int8-static", "--data", str(synth_root), "--calibration-images", "8"]
    # its own process: after OpenVINO has timed a graph in a process that also ran data-loader
    # workers, a later subprocess spawn in that process crashed the interpreter (SIGSEGV), which
    # would take the rest of the suite down with it
    result = subprocess.run([sys.executable, "-m", "reidprune", *args], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in ("vit.onnx", "vit.int8-static.onnx", "vit.xml", "vit.bin", "vit.int8-static.xml"):
        assert (tmp_path / name).is_file(), name
    info = json.loads((tmp_path / "vit.export.json").read_text())
    assert info["quantized"]["mode"] == "int8-static" and info["quantized"]["calibration_images"] == 8
    assert info["openvino"]["fp32"]["check"]["passed"]
    variants = ["pytorch", "onnx fp32", "onnx int8-static", "openvino fp32", "openvino int8-static"]
    assert list(info["accuracy"]["metrics"]) == variants
    assert list(info["accuracy"]["latency_b1"]) == variants
    assert all(v["median_ms"] > 0 for v in info["accuracy"]["latency_b1"].values())
    metrics = info["accuracy"]["metrics"]
    assert metrics["openvino fp32"]["mAP"] == pytest.approx(metrics["pytorch"]["mAP"], abs=1e-3)


def test_fp16_export(model_dirs, tmp_path) -> None:
    out = tmp_path / "resnet.onnx"
    result = runner.invoke(
        app, ["export", "-m", str(model_dirs["resnet"]), "-o", str(out), "--quantize", "fp16"]
    )
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "resnet.export.json").read_text())
    assert info["quantized"]["mode"] == "fp16" and info["quantized"]["float16_initializers"] > 0
    assert info["quantized"]["deviation"]["max_abs_diff"] < 1e-2 * max(
        1.0, info["quantized"]["deviation"]["scale"]
    )


def test_static_int8_needs_data(model_dirs, tmp_path) -> None:
    args = [
        "export",
        "-m",
        str(model_dirs["vit"]),
        "-o",
        str(tmp_path / "m.onnx"),
        "--quantize",
        "int8-static",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "--quantize int8-static: needs --data" in result.output
    assert not (tmp_path / "m.onnx").exists()  # refused before exporting anything


def test_bench_runtime_openvino(model_dirs, tmp_path) -> None:
    pytest.importorskip("openvino", reason="OpenVINO is an optional extra: pip install 'reidprune[openvino]'")
    path = tmp_path / "bench.json"
    args = ["bench", str(model_dirs["vit"]), "--batch-size", "2", "--min-time", "0.2", "--threads", "1"]
    result = runner.invoke(app, [*args, "--runtime", "openvino", "--json", str(path)])
    assert result.exit_code == 0, result.output
    row = json.loads(path.read_text())["models"][0]
    assert (
        row["ort_latency_ms_b1"] > 0 and row["openvino_latency_ms_b1"] > 0 and row["torch_latency_ms_b1"] > 0
    )
    assert row["openvino_check"]["passed"]


def test_bench_rejects_an_unknown_runtime(model_dirs) -> None:
    result = runner.invoke(app, ["bench", str(model_dirs["vit"]), "--runtime", "tensorrt"])
    assert result.exit_code == 2 and "--runtime tensorrt" in result.output


def test_openvino_format_without_openvino_names_the_extra(model_dirs, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    out = tmp_path / "m.onnx"
    result = runner.invoke(
        app, ["export", "-m", str(model_dirs["vit"]), "-o", str(out), "--format", "openvino"]
    )
    assert result.exit_code == 2
    assert "pip install 'reidprune[openvino]'" in result.output
    assert not out.exists()  # refused before exporting anything
