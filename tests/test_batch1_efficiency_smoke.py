"""benchmarks/batch1_efficiency.py: the smoke mode (a tiny ViT) runs end to end, with the profile, and
its JSON holds every figure, so the full-size run cannot rot between runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "batch1_efficiency.py"


@pytest.mark.slow
def test_smoke_run_reports_efficiency_and_a_per_op_profile(tmp_path: Path) -> None:
    out = tmp_path / "b1.json"
    args = ["--smoke", "--threads", "1", "--runtimes", "onnxruntime", "--only", "pm", "tome"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--profile", "--profile-runs", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["models"]) == {"dense", "pm", "tome"}
    for name in ("pm", "tome"):
        row = result["models"][name]
        assert row["gmacs_ratio"] > 1.0  # the reducers compute less than the dense model
        assert row["onnx_max_diff"] < 1e-4
        assert row["onnxruntime"]["efficiency"] > 0 and row["onnxruntime"]["median_ms"] > 0
        assert "ScatterElements" not in row["nodes"]  # the lean graphs gather, they do not scatter
        assert row["ort_profile_ms"] and all(ms >= 0 for ms in row["ort_profile_ms"].values())
    assert result["settings"]["threads"] == 1 and result["settings"]["load_average"]
