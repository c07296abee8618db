"""Distributed and resumable prune jobs: 2 CPU processes (gloo) build the plan of one process on
the same global batches and end with its weights; a killed job resumed with --resume is exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from prune_ddp_helpers import (
    assert_same_job,
    assert_same_plan,
    killed_and_resumed,
    one_process_reference,
    write_job,
)
from safetensors.torch import load_file

from reidprune.train.log import read_log

HERE = Path(__file__).parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _env() -> dict[str, str]:
    src = str(HERE.parents[1] / "src")
    path = os.pathsep.join(
        p for p in (src, str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")) if p
    )
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def _assert_close(weights: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
    assert weights.keys() == reference.keys()
    for key, value in reference.items():
        torch.testing.assert_close(weights[key], value, rtol=1e-4, atol=1e-5, msg=f"weights differ at {key}")


@pytest.mark.slow
def test_two_process_token_job_builds_the_plan_and_weights_of_one_process(tmp_path: Path, synth_root) -> None:
    config = write_job(tmp_path, synth_root, "token-amg", 0.25)
    cli = [*TORCHRUN, "-m", "reidprune", "prune", "-c", str(config)]
    proc = subprocess.run(cli, env=_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("compressed model in") == 1, "rank 0 alone reports"

    reference = one_process_reference(config, tmp_path / "one")
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert_same_plan(metrics["plan"], reference.plan.to_dict())
    assert len(metrics["plan"]["previous"]) == 1  # two rounds
    weights = load_file(run / "model" / "weights.safetensors")
    _assert_close(weights, {k: v.contiguous() for k, v in reference.model.state_dict().items()})
    # one log line per step, written once (rank 0): 2 steps per epoch of each round's stage
    for stage in ("round1", "round2", "final"):
        steps = [r["step"] for r in read_log(run / stage / "train_log.jsonl") if r["event"] == "step"]
        assert steps == [1, 2], stage
        assert not (run / stage / "checkpoints" / "last.pt").exists() or stage == "final"
    assert sorted(p.name for p in (run / "prune_state").iterdir()) == ["round2", "state.pt"]


@pytest.mark.slow
def test_two_process_head_job_matches_one_process_and_resumes_exactly(tmp_path: Path, synth_root) -> None:
    config = write_job(tmp_path, synth_root, "head-entropy", 0.5)
    out = tmp_path / "out"
    out.mkdir()
    worker = [str(HERE / "ddp_prune_worker.py"), str(config), str(out)]
    proc = subprocess.run([*TORCHRUN, *worker], env=_env(), capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    ranks = {
        name: load_file(out / f"{name}.safetensors")
        for name in ("ref_rank0", "ref_rank1", "resumed_rank0", "resumed_rank1")
    }
    for key, value in ranks["ref_rank0"].items():
        assert torch.equal(value, ranks["ref_rank1"][key]), f"replicas differ at {key}"
        assert torch.equal(value, ranks["resumed_rank0"][key]), f"resume differs at {key}"
        assert torch.equal(value, ranks["resumed_rank1"][key]), f"resume differs on rank 1 at {key}"
    reference = one_process_reference(config, tmp_path / "one")
    metrics = json.loads((out / "ref" / "metrics.json").read_text())
    assert_same_plan(metrics["plan"], reference.plan.to_dict())
    assert sum(metrics["plan"]["details"]["num_heads"]) == 3  # 6 heads, rate 0.5
    _assert_close(ranks["ref_rank0"], {k: v.contiguous() for k, v in reference.model.state_dict().items()})
    resumed = json.loads((out / "killed" / "metrics.json").read_text())
    assert resumed["plan"] == metrics["plan"]


@pytest.mark.slow
@pytest.mark.parametrize("where", ["round1", "round2-step1"])
def test_a_killed_token_job_resumes_to_the_uninterrupted_result(
    tmp_path: Path, synth_root, where: str
) -> None:
    config = write_job(tmp_path, synth_root, "token-amg", 0.25)
    uninterrupted, resumed = killed_and_resumed(config, tmp_path, where)
    assert_same_job(resumed, uninterrupted, tmp_path / "killed", tmp_path / "ref")
    # finished rounds keep their log but drop their checkpoint; the state holds the last round only
    for stage in ("round1", "round2"):
        assert (tmp_path / "killed" / stage / "train_log.jsonl").is_file()
        assert not (tmp_path / "killed" / stage / "checkpoints" / "last.pt").exists()
    assert sorted(p.name for p in (tmp_path / "killed" / "prune_state").iterdir()) == ["round2", "state.pt"]
    # what was finished was not run again: round 1 trained once; round 2 continued from its checkpoint
    round1 = [r["event"] for r in read_log(tmp_path / "killed" / "round1" / "train_log.jsonl")]
    assert round1.count("start") == 1 and "resume" not in round1
    round2 = read_log(tmp_path / "killed" / "round2" / "train_log.jsonl")
    resumes = [r["step"] for r in round2 if r["event"] == "resume"]
    assert resumes == ([1] if where == "round2-step1" else [])
