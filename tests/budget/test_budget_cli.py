"""`reidprune compress` end to end on the embedded synthetic set, and its one-line refusals."""

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


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    _register()
    return CliRunner(env={"COLUMNS": "200"}).invoke(app, ["compress", *args], catch_exceptions=False)


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
        (["--target-latency-ms", "3", "--runtime", "onnxruntime"], "needs the latency model"),
        (["--target-gmacs", "1e-9"], "cannot be reached"),
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
