"""Two CPU processes under torchrun (gloo): replicas stay identical, rank 0 alone writes, resume is exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reidprune.train.log import read_log

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.slow
def test_two_process_ddp_replicas_agree_and_resume_exactly(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    proc = subprocess.run(
        [*cmd, str(WORKER), str(tmp_path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    weights = {
        name: load_file(tmp_path / f"{name}.safetensors")
        for name in ("ref_rank0", "ref_rank1", "resumed_rank0", "resumed_rank1")
    }
    for key, value in weights["ref_rank0"].items():
        assert torch.equal(value, weights["ref_rank1"][key]), f"replicas differ at {key}"
        assert torch.equal(value, weights["resumed_rank0"][key]), f"resume differs at {key}"
        assert torch.equal(value, weights["resumed_rank1"][key]), f"resume differs on rank 1 at {key}"
    # 8 identities, 2 per batch, 2 ranks -> 2 steps per epoch; one log line per step, written once
    steps = [r["step"] for r in read_log(tmp_path / "ref" / "train_log.jsonl") if r["event"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in (tmp_path / "ref" / "checkpoints").iterdir()) == ["last.pt"]
    # sharded validation (features gathered in dataset order) equals one process on the whole split
    for rank in (0, 1):
        val = json.loads((tmp_path / f"val_rank{rank}.json").read_text())
        assert val["sharded"] == val["whole"]
        assert val["sharded"]["num_queries"] == 16
