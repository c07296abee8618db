"""benchmarks/gpu_check.py: the smoke mode (every step on the CPU, tiny sizes) runs end to end and its
JSON holds every figure, so the GPU script cannot rot between the runs on a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
STEPS = [
    "environment",
    "data",
    "train_vit",
    "train_fp16",
    "prune_heads",
    "prune_tokens",
    "train_resnet",
    "prune_bafd",
    "eval_gpu_vs_cpu",
    "throughput",
    "onnx",
    "tensorrt",
    "ddp",
]


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.slow
def test_smoke_runs_every_step_and_writes_every_figure(tmp_path) -> None:
    out = tmp_path / "gpu_check.json"
    done = _run("--smoke", "--out", str(out), "--work", str(tmp_path / "work"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["passed"] and result["error"] is None and result["mode"] == "smoke"
    steps = result["steps"]
    assert list(steps) == STEPS
    for name, step in steps.items():
        assert step["status"] in ("ok", "skipped") and step["seconds"] >= 0, name
        if step["status"] == "skipped":
            assert step["reason"], name
    # the CUDA-only steps say why they were skipped, in the JSON and on the console
    assert {n for n, s in steps.items() if s["status"] == "skipped"} == {"train_fp16", "ddp"}
    assert "needs a CUDA device" in steps["train_fp16"]["reason"] and "needs 2 GPUs" in steps["ddp"]["reason"]
    assert "gpu-check: train_fp16 skipped" in done.stdout and "gpu-check: ddp skipped" in done.stdout
    assert steps["data"]["total"] > 0 and not steps["data"]["reused"]
    assert steps["train_vit"]["amp"] == "bfloat16" and steps["train_vit"]["losses"]
    assert 0.0 <= steps["train_vit"]["mAP"] <= 100.0
    for name, method in (
        ("prune_heads", "head-entropy"),
        ("prune_tokens", "token-amg"),
        ("prune_bafd", "filter-bafd"),
    ):
        step = steps[name]
        assert step["method"] == method and step["gmacs_ratio"] > 1.0, name
        assert {"params", "gmacs", "mAP", "rank1"} <= set(step["pruned"]), name
    assert steps["prune_bafd"]["pruned"]["params"] < steps["prune_bafd"]["unpruned"]["params"]  # extracted
    evaluation = steps["eval_gpu_vs_cpu"]
    assert (
        evaluation["metrics_device"] == evaluation["metrics_cpu"] and evaluation["max_abs_diff_points"] == 0.0
    )
    assert evaluation["cli_eval"]["mAP"] == pytest.approx(evaluation["metrics_cpu"]["mAP"])
    for family in ("vit", "resnet50"):
        bench = steps["throughput"][family]
        for form in ("eager", "compiled"):
            assert bench[f"{form}_efficiency"] == pytest.approx(
                bench[f"{form}_speedup"] / bench["gmacs_ratio"]
            )
            assert bench["baseline"][f"{form}_ips"] > 0 and bench["compressed"][f"{form}_ips"] > 0
    assert steps["onnx"]["cpu_check"]["passed"]
    if steps["onnx"]["cuda_provider"]["status"] == "skipped":
        assert "CUDAExecutionProvider" in steps["onnx"]["cuda_provider"]["reason"]
    for graph in ("vit_baseline", "vit_compressed", "resnet50_extracted"):
        assert steps["tensorrt"][graph]["passed"], graph
    assert result["seconds_total"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script would run the full check")
def test_without_a_gpu_the_gpu_mode_fails_loudly_and_writes_the_json(tmp_path) -> None:
    out = tmp_path / "gpu_check.json"
    done = _run("--out", str(out), "--work", str(tmp_path / "work"), timeout=120)
    assert done.returncode == 1
    assert "gpu-check FAILED at environment: no CUDA GPU visible to torch" in done.stderr
    assert "Traceback" not in done.stderr
    result = json.loads(out.read_text())
    assert not result["passed"] and result["error"]["step"] == "environment"
    assert result["steps"]["environment"]["status"] == "failed"
