"""Shared by the distributed / resumable prune job tests: a tiny token-, head- or filter-pruning job
config, a 1-process reference on the same global batches as a 2-process job, and deterministic kills."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import reidprune
from tiny_models import tiny_resnet, tiny_vit

# tiny_models.TINY_VIT with no BNNeck and no drop-path: batch norm normalises each rank's batch alone
# (DDP without SyncBatchNorm) and each rank draws its own drop-path masks, which one process on the
# union batch cannot reproduce
NO_BATCH_COUPLING = {"head": "linear", "drop_path": 0.0}

# ID loss and soft distillation are means over the batch's images (the triplet loss mines within a
# rank's batch), so the 2-rank job and one process on the union of their batches take the same steps
CONFIG = """
name: ddp-prune
device: cpu
seed: 3
data: {{format: synth, root: {root}, synth_ids: 4, height: {height}, width: {width}, batch_size: 4,
        num_instances: 2, num_workers: 0, val_ids: 0}}
model: {{name: {model}, weights: {weights}}}
train: {{optimizer: sgd, lr: 0.05, warmup_epochs: 0, triplet_weight: 0.0, distill: soft,
         max_steps_per_epoch: 2, checkpoint_every_steps: 1, progress: false, log_every: 1}}
prune: {{method: {method}, rate: {rate}, rounds: {rounds}, finetune_epochs: 1, final_epochs: {final_epochs},
        calib_batches: 2}}
output_dir: {out}
"""


def assert_same_plan(got: Any, expected: Any, where: str = "plan") -> None:
    """Plans (dicts) equal, their scores (floats, rounded to 6 digits) within float tolerance."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), where
        for key in expected:
            assert_same_plan(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert_same_plan(a, b, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, abs=5e-6), where
    else:
        assert got == expected, where


def write_job(
    tmp_path: Path, synth_root: Path, method: str = "token-amg", rate: float = 0.25, final_epochs: int = 1
) -> Path:
    """A dense tiny model in tmp_path/dense and a job config for it; returns the config's path.

    Token and head methods prune a tiny ViT in 2 rounds of 1 epoch; filter methods (one stage) a
    tiny ResNet-18 with the BAFD pruning scope. Every stage runs 2 steps an epoch and saves a
    training checkpoint after each step."""
    dense = tmp_path / "dense"
    filters = method.startswith("filter-")
    name = "resnet18_bafd" if filters else "vit_tiny_reid"
    model = tiny_resnet(name, seed=0, num_classes=2) if filters else tiny_vit(name, **NO_BATCH_COUPLING)
    if not dense.exists():
        reidprune.save(model, dense)
    height, width = model.arch.img_size
    path = tmp_path / f"{method}.yaml"
    path.write_text(
        CONFIG.format(
            root=synth_root,
            height=height,
            width=width,
            model=name,
            weights=dense,
            method=method,
            rate=rate,
            rounds=1 if filters else 2,
            final_epochs=final_epochs,
            out=tmp_path / "run",
        )
    )
    return path


def killed_and_resumed(
    config: Path, root: Path, where: str, overrides: tuple[str, ...] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The prune job of `config` (with `overrides`) run uninterrupted into root/ref, and killed at
    `where` (`kill_at`) into root/killed then resumed there; returns both results."""
    from reidprune.config import load_config
    from reidprune.jobs.prune import prune_experiment

    def job(name: str, resume: bool = False) -> dict[str, Any]:
        return prune_experiment(load_config(config, [*overrides, f"output_dir={root / name}"]), resume=resume)

    uninterrupted = job("ref")
    kill_at(where)
    with pytest.raises(KeyboardInterrupt):
        job("killed")
    assert not (root / "killed" / "metrics.json").exists()
    return uninterrupted, job("killed", resume=True)


def _stages(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in stage.items() if k != "output_dir"} for stage in metrics["stages"]]


def assert_same_job(got: dict[str, Any], expected: dict[str, Any], got_dir: Path, expected_dir: Path) -> None:
    """Two prune jobs' results (metrics.json contents) and saved models are equal bit for bit: plan,
    stage records (but their folders), test metrics and costs, weights."""
    assert got["plan"] == expected["plan"]
    assert _stages(got) == _stages(expected)
    assert got["pruned"] == expected["pruned"]
    weights = load_file(got_dir / "model" / "weights.safetensors")
    reference = load_file(expected_dir / "model" / "weights.safetensors")
    assert weights.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(value, weights[key]), f"weights differ at {key}"


class _BothSamplers:
    """set_epoch / set_start of every rank's PK sampler at once (what the engine positions)."""

    def __init__(self, samplers: list[Any]) -> None:
        self.samplers = samplers

    def set_epoch(self, epoch: int) -> None:
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    def set_start(self, batch_index: int) -> None:
        for sampler in self.samplers:
            sampler.set_start(batch_index)

    def __len__(self) -> int:
        return len(self.samplers[0])


class UnionLoader:
    """One process's loader whose batch k is the union of every rank's batch k (rank order)."""

    def __init__(self, loaders: list[Any]) -> None:
        self.loaders = loaders
        self.batch_sampler = _BothSamplers([loader.batch_sampler for loader in loaders])

    def __len__(self) -> int:
        return len(self.loaders[0])

    def __iter__(self):
        for parts in zip(*self.loaders, strict=True):
            yield {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def one_process_reference(config: Path, output_dir: Path, world_size: int = 2) -> Any:
    """`run_schedule` in this process on the union of `world_size` ranks' batches, from the job's
    model and teacher; returns the ScheduleResult."""
    from reidprune.config import load_config
    from reidprune.data import build_dataset, build_loaders
    from reidprune.jobs.loading import job_model
    from reidprune.jobs.schedule import run_schedule
    from reidprune.models.forward import use_model_input_size

    cfg = load_config(config, [f"output_dir={output_dir}"])
    splits = build_dataset(cfg.data)
    model = job_model(cfg, cfg.model.weights, splits.num_classes)
    use_model_input_size(cfg.data, model)
    shards = [
        build_loaders(cfg.data, splits, seed=cfg.seed, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    loaders = copy.copy(shards[0])
    loaders.train = UnionLoader([shard.train for shard in shards])
    return run_schedule(model, cfg, loaders, output_dir, teacher=copy.deepcopy(model).eval(), device="cpu")


def kill_at(where: str) -> None:
    """Make the next prune job raise KeyboardInterrupt at `where`: "round{k}" (just after round k is
    saved) or "{stage}-step{n}" (just after the training checkpoint of step n in the stage directory
    `stage`: "round2", "final", "soft")."""
    from reidprune.jobs import prune_state
    from reidprune.train.engine import Engine

    real_save_round, real_checkpoint = prune_state.save_round, Engine.save_checkpoint

    def save_round(output_dir, rounds_done, model, stages):  # type: ignore[no-untyped-def]
        real_save_round(output_dir, rounds_done, model, stages)
        if where == f"round{rounds_done}":
            restore()
            raise KeyboardInterrupt

    def save_checkpoint(engine):  # type: ignore[no-untyped-def]
        path = real_checkpoint(engine)
        if where == f"{engine.output_dir.name}-step{engine.step}":
            restore()
            raise KeyboardInterrupt
        return path

    def restore() -> None:
        prune_state.save_round, Engine.save_checkpoint = real_save_round, real_checkpoint

    prune_state.save_round, Engine.save_checkpoint = save_round, save_checkpoint  # type: ignore[method-assign]
