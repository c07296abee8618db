"""`reidprune compress` end to end on the embedded synthetic set (GMACs and ONNX Runtime latency
targets, with the verification), `reidprune latency`'s cached tables, and the one-line refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import reidprune
from reidprune.cli import _register, app
from reidprune.measure.flops import count_gmacs
from reidprune.models import create
from tiny_models import TINY_VIT


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return reidprune.save(create("vit_tiny_reid", **TINY_VIT), tmp_path / "dense")


def _invoke(*args: str, command: str = "compress"):  # type: ignore[no-untyped-def]
    _register()
    return CliRunner(env={"COLUMNS": "200"}).invoke(app, [command, *args], catch_exceptions=False)


# quick latency tables: 2 points per axis, 1 ms per point, one thread
QUICK = ["--threads", "1", "--coarse-grid", "--point-time", "0.001"]


def test_compress_writes_the_plan_and_a_loadable_model(
    model_dir: Path, synth_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = [str(model_dir), "--data-root", str(synth_root), "--target-speedup", "1.5", "--runtime", "gmacs"]
    result = _invoke(
        *args, "--out", str(out), "--calib-batches", "2", "data.num_workers=0", "data.batch_size=8"
    )
    assert result.exit_code == 0, result.output
    plan = json.loads((out / "plan.json").read_text())
    small = reidprune.load(out / "model")
    measured = count_gmacs(small)["gmacs"]
    assert plan["measured_gmacs"] == pytest.approx(measured, rel=1e-9)
    assert plan["original_gmacs"] / measured >= 1.5
    assert [b["heads"] for b in plan["blocks"]] == small.arch.num_heads
    assert small.compression_plan.method == "budget-search"
    again = _invoke(*args, "--out", str(out), "data.num_workers=0", "data.batch_size=8")
    assert again.exit_code == 2 and "pass --overwrite" in again.output


@pytest.mark.parametrize("method", ["topk", "tome"])
def test_compress_searches_top_k_or_tome_tokens_and_exports_them(
    method: str, model_dir: Path, synth_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = _invoke(
        str(model_dir), "--data-root", str(synth_root), "--target-speedup", "1.3", "--runtime", "gmacs",
        "--token-method", method, "--out", str(out), "--calib-batches", "2", "data.num_workers=0",
        "data.batch_size=8",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    plan = json.loads((out / "plan.json").read_text())
    assert plan["search"]["token_method"] == method
    small = reidprune.load(out / "model")
    assert small.arch.tokens["method"] == method
    assert plan["original_gmacs"] / count_gmacs(small)["gmacs"] >= 1.3
    # verified on counted GMACs, after export_onnx wrote the graph and checked it against PyTorch
    assert plan["verify"]["onnx"] == str(out / "model.onnx") and (out / "model.onnx").is_file()


@pytest.mark.slow
def test_compress_fine_tunes_with_distillation(model_dir: Path, synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _invoke(
        str(model_dir),
        "--data-root",
        str(synth_root),
        "--target-gmacs",
        str(0.8 * count_gmacs(reidprune.load(model_dir))["gmacs"]),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--calib-batches",
        "2",
        "data.num_workers=0",
        "data.batch_size=8",
    )
    assert result.exit_code == 0, result.output
    plan = json.loads((out / "plan.json").read_text())
    assert plan["finetune"]["epochs"] == 1 and plan["finetune"]["distill"] == "soft"
    small = reidprune.load(out / "model")
    assert count_gmacs(small)["gmacs"] == pytest.approx(plan["predicted_cost"], rel=1e-9)


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        (["--target-gmacs", "1", "--target-speedup", "2"], "give exactly one budget target"),
        (["--target-latency-ms", "3", "--runtime", "gmacs"], "needs a latency runtime"),
        (["--target-speedup", "1.5", "--runtime", "tensorrt"], "runtime 'tensorrt'"),
        (["--target-speedup", "1.5", "--tolerance", "1.5"], "--tolerance 1.5"),
        (["--target-gmacs", "1e-9"], "cannot be reached"),
        (
            ["--target-gmacs", "1", "--token-method", "evit"],
            "--token-method='evit': expected one of amg, topk, tome",
        ),
        (
            ["--target-gmacs", "1", "--importance", "taylor"],
            "--importance taylor: expected one of sensitivity, scores",
        ),
    ],
)
def test_compress_errors_are_one_line(
    model_dir: Path, synth_root: Path, tmp_path: Path, targets: list[str], expected: str
) -> None:
    out = tmp_path / "out"
    result = _invoke(
        str(model_dir),
        "--data-root",
        str(synth_root),
        *targets,
        "--out",
        str(out),
        "data.num_workers=0",
        "data.batch_size=8",
    )
    assert result.exit_code == 2, result.output
    assert expected in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not out.exists(), "nothing written"


def test_latency_cli_builds_the_table_once_and_then_measures_nothing(model_dir: Path, tmp_path: Path) -> None:
    cache, report = tmp_path / "tables", tmp_path / "latency.json"
    args = [str(model_dir), "--runtime", "torch", *QUICK, "--calib-time", "0.01", "--cache", str(cache)]
    first = _invoke(*args, "--no-check", "--json", str(report), command="latency")
    assert first.exit_code == 0, first.output
    prediction = json.loads(report.read_text())["prediction"]
    table = Path(prediction["cache"])
    stored = json.loads(table.read_text())["points"]
    assert prediction["measured_points"] == len(stored) > 0
    assert any(k.startswith("whole|vit|") for k in stored), "the calibration measurement is cached"
    again = _invoke(*args, "--no-measure", "--min-time", "0.01", "--json", str(report), command="latency")
    assert again.exit_code == 0, again.output
    result = json.loads(report.read_text())
    assert result["prediction"]["measured_points"] == 0
    assert result["prediction"]["predicted_ms"] == prediction["predicted_ms"]
    assert json.loads(table.read_text())["points"] == stored and result["measured"]["median_ms"] > 0
    # compared at the tables' load: the meter of the tables timed in the same rounds
    measured = result["measured"]
    assert measured["load"] > 0 and measured["normalised_ms"] > 0
    assert result["error_pct"] == pytest.approx(
        100 * (prediction["predicted_ms"] / measured["normalised_ms"] - 1)
    )
    assert "at the tables' load" in again.output


@pytest.mark.slow  # 5-15 s each: tables, search, export and timing on ONNX Runtime
@pytest.mark.parametrize("family", ["vit", "resnet"])
def test_compress_to_a_speedup_on_onnxruntime_verifies_the_exported_model(
    family: str, synth_root: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    # both big enough for their blocks to outweigh the stem, head and call overhead at batch 1
    if family == "vit":
        size = {"img_size": [128, 64], "embed_dim": 64, "head_dim": 16, "num_heads": [4] * 3}
        built = create("vit_tiny_reid", **{**TINY_VIT, **size, "mlp_hidden": [256] * 3})
    else:
        built = create("resnet18_reid", img_size=[128, 64], stage_planes=[32, 32, 64, 64], num_classes=2)
    source, out = reidprune.save(built, tmp_path / "dense"), tmp_path / "out"
    result = _invoke(
        str(source), "--data-root", str(synth_root), "--target-speedup", "1.3", "--runtime", "onnxruntime",
        *QUICK, "--latency-cache", str(tmp_path / "tables"), "--verify-time", "0.2", "--out", str(out),
        "--calib-batches", "2", "data.num_workers=0", "data.batch_size=8",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    plan = json.loads((out / "plan.json").read_text())
    assert plan["target"] == {"kind": "speedup", "value": 1.3, "cost": pytest.approx(plan["dense_cost"] / 1.3),
                              "unit": "ms", "correction": 1.0}  # fmt: skip
    assert plan["predicted_speedup"] >= 1.3 and plan["cost_model"]["kind"] == "latency"
    verify = plan["verify"]
    assert verify == json.loads((out / "verify.json").read_text())
    assert verify["predicted"]["speedup"] == plan["predicted_speedup"]
    measured = verify["measured"]
    assert measured["unit"] == "ms" and measured["setting"]["runtime"] == "onnxruntime"
    assert measured["speedup"] == pytest.approx(measured["original"] / measured["compressed"])
    assert verify["missed"] == (verify["shortfall"] > 0.07)
    # the tables' load meter was timed in the same rounds: both models also at the tables' load
    assert plan["cost_model"]["meter_reference_ms"] > 0 and measured["load"] > 0
    assert set(measured["normalised_ms"]) == {"original", "compressed"}
    assert ("MISSED the target" in result.output) == verify["missed"]
    assert verify["gmacs"]["compressed"] == pytest.approx(plan["measured_gmacs"])
    assert (out / "model.onnx").is_file() and verify["onnx"] == str(out / "model.onnx")
    assert reidprune.load(out / "model").compression_plan.method == "budget-search"


@pytest.mark.parametrize("second", ["met", "missed"])
def test_replan_corrects_an_exceeded_target_before_fine_tuning_and_keeps_the_better_plan(
    second: str, model_dir: Path, synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--replan measures the searched model, searches once more with the measured correction when
    it exceeds (or misses) the target, and keeps the re-planned model unless that one misses while
    the first did not; then the kept model is verified. Measurements are faked (timing is never
    asserted in tests); search, fine-tuning (none here), export and files are real."""
    import reidprune.budget.api as api
    import reidprune.budget.verify as verify

    corrections: list[float] = []
    real_search = api.to_budget

    def search(*args, **kwargs):  # type: ignore[no-untyped-def]
        corrections.append(kwargs["correction"])
        return real_search(*args, **kwargs)

    verdicts = iter(
        [
            {"shortfall": -0.25, "missed": False, "overshot": True, "correction": 0.8},
            {"shortfall": 0.0 if second == "met" else 0.2, "missed": second == "missed", "overshot": False,
             "correction": 1.0},
            {"shortfall": 0.0, "missed": False, "overshot": False, "correction": 1.0},  # the final check
        ]
    )  # fmt: skip
    written: list[object] = []

    def fake_verify(original, small, plan, *, onnx_path=None, min_time=2.0, tolerance=0.07):  # type: ignore[no-untyped-def]
        written.append(onnx_path)
        return {
            "target": {k: plan["target"][k] for k in ("kind", "value", "unit")},
            "tolerance": tolerance,
            "predicted": {"original": plan["dense_cost"], "compressed": plan["predicted_cost"],
                          "speedup": plan["predicted_speedup"], "unit": plan["target"]["unit"]},
            "measured": {"original": 1.0, "compressed": 1.0, "unit": "GMACs", "speedup": 1.0},
        } | next(verdicts)  # fmt: skip

    monkeypatch.setattr(api, "to_budget", search)
    monkeypatch.setattr(verify, "verify_budget", fake_verify)
    out = tmp_path / "out"
    result = _invoke(
        str(model_dir), "--data-root", str(synth_root), "--target-speedup", "1.5", "--runtime", "gmacs",
        "--replan", "--out", str(out), "--calib-batches", "2", "data.num_workers=0", "data.batch_size=8",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert corrections == [1.0, 0.8]
    assert written == [None, None, out / "model.onnx"]  # two measurements before the verification
    assert "target EXCEEDED by 25.0 %" in result.output
    assert "re-planning once with the measured correction x0.800" in result.output
    plan = json.loads((out / "plan.json").read_text())
    replan = plan["replan"]
    assert replan["replanned"] and replan["first"]["overshot"]
    if second == "met":
        assert replan["kept"] == "second" and plan["target"]["correction"] == 0.8
    else:
        assert "keeping the first one" in result.output
        assert (
            replan["kept"] == "first" and plan["target"]["correction"] == 1.0 and replan["second"]["missed"]
        )
    saved = reidprune.load(out / "model")
    assert plan["measured_gmacs"] == pytest.approx(count_gmacs(saved)["gmacs"], rel=1e-9)
    assert json.loads((out / "verify.json").read_text()) == plan["verify"]
    refused = _invoke(str(model_dir), "--data-root", str(synth_root), "--target-speedup", "1.5", "--replan",
                      "--no-verify", "--out", str(tmp_path / "other"))  # fmt: skip
    assert refused.exit_code == 2 and "--replan" in refused.output and "--verify" in refused.output
