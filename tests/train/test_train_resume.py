"""A run killed part-way and resumed ends with exactly the weights of an uninterrupted run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import pk_loaders, shuffle_loaders, tiny_model

from reidprune.models.checkpoint_io import CheckpointError
from reidprune.train import BaseCallback, fit
from reidprune.train.checkpoint import load_resume_state
from reidprune.train.config import TrainConfig
from reidprune.train.log import read_log


class Killer(BaseCallback):
    """Raises at a given step, like a job killed by the scheduler; counts steps it saw (state)."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.kill_at = kill_at
        self.seen = 0

    def on_step_end(self, engine) -> None:
        self.seen += 1
        if engine.step == self.kill_at:
            raise KeyboardInterrupt(f"killed at step {engine.step}")

    def state_dict(self) -> dict:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.seen = state["seen"]


def _cfg(**changes) -> TrainConfig:
    base = dict(
        epochs=3,
        optimizer="adamw",
        lr=0.01,
        warmup_epochs=1,
        checkpoint_every_steps=2,
        progress=False,
        log_every=1,
    )
    base.update(changes)
    return TrainConfig(**base)


def _run(out: Path, loaders_fn, kill_at: int | None = None, resume: bool = False, **changes):
    killer = Killer(kill_at)
    result = fit(tiny_model(), loaders_fn(), _cfg(**changes), out, callbacks=[killer], resume=resume, seed=3)
    return result, killer


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def _step_losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_log(out / "train_log.jsonl") if r["event"] == "step"}


@pytest.mark.parametrize(
    ("loaders_fn", "kill_at"),
    [
        (pk_loaders, 5),  # resumable sampler (set_epoch / set_start): jump to the batch; mid-epoch
        (shuffle_loaders, 5),  # plain shuffling DataLoader, global-RNG augmentation: replayed epoch
        (pk_loaders, 7),  # last checkpoint (step 6) at an epoch boundary
    ],
)
def test_killed_run_resumes_bit_for_bit(tmp_path: Path, loaders_fn, kill_at: int) -> None:
    reference, _ = _run(tmp_path / "ref", loaders_fn)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "killed", loaders_fn, kill_at=kill_at)
    saved = load_resume_state(tmp_path / "killed" / "checkpoints" / "last.pt")
    assert saved["step"] == kill_at - 1  # checkpoints every 2 steps
    resumed, killer = _run(tmp_path / "killed", loaders_fn, resume=True)
    assert resumed.steps == reference.steps == 9
    assert killer.seen == 9  # callback state came back with the checkpoint
    _assert_same_weights(reference.model, resumed.model)
    # the resumed log continues from the checkpoint and matches the reference step for step
    assert _step_losses(tmp_path / "killed") == _step_losses(tmp_path / "ref")
    assert resumed.history == reference.history


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_leftover_temp_file_does_not_break_resume(tmp_path: Path) -> None:
    reference, _ = _run(tmp_path / "ref", pk_loaders)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "killed", pk_loaders, kill_at=5)
    # a kill during a save leaves a half-written temp file (named after the dead pid) next to the
    # good checkpoint
    leftover = tmp_path / "killed" / "checkpoints" / f".last.pt.{_dead_pid()}.0123abcd.tmp"
    leftover.write_bytes(b"half a checkpoint")
    resumed, _ = _run(tmp_path / "killed", pk_loaders, resume=True)
    _assert_same_weights(reference.model, resumed.model)
    assert not leftover.exists()  # removed by the next save


def test_resume_without_checkpoint_starts_fresh(tmp_path: Path) -> None:
    result, _ = _run(tmp_path, pk_loaders, resume=True, epochs=1)
    assert result.steps == 3


def test_resume_rebuilds_the_saved_architecture(tmp_path: Path) -> None:
    """A pruned (here: narrower) model resumes as itself even if the caller builds the original."""
    narrow = tiny_model(dim=8)
    fit(narrow, pk_loaders(), _cfg(epochs=1), tmp_path, seed=3)
    result = fit(tiny_model(dim=16), pk_loaders(), _cfg(epochs=1), tmp_path, resume=True)
    assert result.model.arch.dim == 8
    _assert_same_weights(narrow, result.model)


def test_checkpoint_loads_weights_only_and_holds_the_state(tmp_path: Path) -> None:
    fit(tiny_model(), pk_loaders(), _cfg(epochs=1), tmp_path)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "epoch", "batch_index", "callbacks"} <= set(
        state
    )
    assert (state["epoch"], state["batch_index"], state["step"]) == (1, 0, 3)
    assert isinstance(state["rng"][0]["python"], tuple)


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    fit(tiny_model(), pk_loaders(), _cfg(epochs=1), tmp_path)
    with pytest.raises(CheckpointError, match=r"lr: checkpoint 0\.01, now 0\.02"):
        fit(tiny_model(), pk_loaders(), _cfg(epochs=1, lr=0.02, log_every=5), tmp_path, resume=True)


class NumpyState(BaseCallback):
    def state_dict(self) -> dict:
        return {"scores": np.zeros(3)}


def test_callback_state_must_be_plain(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"checkpoint\.callbacks\[0\]\.scores is a ndarray"):
        fit(tiny_model(), pk_loaders(), _cfg(epochs=1), tmp_path, callbacks=[NumpyState()])
