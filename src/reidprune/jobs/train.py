"""`train_experiment(cfg)`: the whole `reidprune train` job from one ExperimentConfig.

data -> model (+ weights) -> fit (validation on held-out identities selects the best epoch) ->
test-split evaluation of the final and the best model (reported, never used for selection) ->
output_dir/{config.yaml, train_log.jsonl, checkpoints/last.pt, best/, final/, metrics.json}.

Works in one process or under `torchrun` (rank 0 writes; every rank trains and evaluates its shard).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reidprune.atomic import write_json
from reidprune.config import ExperimentConfig, save_config
from reidprune.errors import TrainingError
from reidprune.jobs.evaluation import evaluate_test
from reidprune.jobs.loading import job_model
from reidprune.jobs.setup import claimed_output_dir, job_splits
from reidprune.train.config import check_train_config
from reidprune.train.distributed import barrier, broadcast_object, init_distributed, resolve_device
from reidprune.train.engine import fit, seed_everything
from reidprune.train.losses import uses_teacher

METRICS_JSON = "metrics.json"
FINAL_DIR = "final"


def build_teacher(cfg: ExperimentConfig, model: nn.Module, num_classes: int) -> nn.Module | None:
    """train.teacher (a model directory or checkpoint), else, when distillation is on, a frozen copy
    of the model as loaded (the uncompressed starting point, as in the AMG and PM recipes)."""
    if not uses_teacher(cfg.train):
        return None
    if not cfg.train.teacher:
        if not cfg.model.weights:
            raise TrainingError(
                f"train.distill={cfg.train.distill} / embed_distill={cfg.train.embed_distill} needs a trained "
                "teacher: set train.teacher (a model directory) or model.weights (the teacher is then a "
                "frozen copy of the loaded model)"
            )
        return copy.deepcopy(model)
    return job_model(cfg, cfg.train.teacher, num_classes)  # the engine freezes it in eval mode


def train_experiment(cfg: ExperimentConfig, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Run the training job described by `cfg`; returns (and writes, on rank 0) metrics.json's content.

    output_dir is locked for the run (a second job into it is refused), and a folder that holds
    another run is refused unless `resume` (same config) or `overwrite` (its run outputs are removed).
    """
    check_train_config(cfg.train)
    info = init_distributed(cfg.device)
    with claimed_output_dir(cfg, info, resume=resume, overwrite=overwrite):
        return _train(cfg, info, resume)


def _train(cfg: ExperimentConfig, info: Any, resume: bool) -> dict[str, Any]:
    from reidprune.data import build_loaders
    from reidprune.models.forward import use_model_input_size
    from reidprune.models.loading import load_model
    from reidprune.models.serialization import save

    device = resolve_device(cfg.device)
    out = Path(cfg.output_dir)
    seed_everything(cfg.seed)
    splits = job_splits(cfg.data, info)
    if not splits.train:
        raise TrainingError(f"data.root={cfg.data.root}: the data set has no training split")
    model = job_model(cfg, cfg.model.weights, splits.num_classes).train()
    use_model_input_size(cfg.data, model)
    loaders = build_loaders(cfg.data, splits, distributed=info.enabled, seed=cfg.seed)
    teacher = build_teacher(cfg, model, splits.num_classes)
    if info.is_main:
        save_config(cfg, out)
    result = fit(
        model,
        loaders,
        cfg.train,
        out,
        teacher=teacher,
        resume=resume,
        eval_cfg=cfg.eval,
        device=device,
        seed=cfg.seed,
    )
    final = result.model
    test_final = evaluate_test(final, loaders, cfg)
    test_best = None
    # rank 0 decides, so that every rank joins the same collective evaluation (multi-node runs need
    # output_dir on a shared file system, as for resuming)
    if broadcast_object(result.best_path is not None and result.best_path.is_dir()):
        best = load_model(result.best_path, map_location=device, allow_import=cfg.model.allow_import)
        test_best = evaluate_test(best, loaders, cfg)
    summary: dict[str, Any] = {
        "name": cfg.name,
        "model": cfg.model.name,
        "data": {"format": splits.format, "root": splits.root, "num_classes": splits.num_classes},
        "steps": result.steps,
        "epochs": result.epochs,
        "select_metric": result.metric_name,
        "best_epoch": result.best_epoch,
        "val_best": result.best_metric,
        "val_last": result.last_metrics or None,
        "test_split": "query/gallery" if splits.query else ("val" if splits.val else None),
        "test": {"final": test_final, "best": test_best},
        "params": sum(p.numel() for p in final.parameters()),
    }
    if summary["test_split"] == "val":
        summary["note"] = "classification set: its val/ split both selects the best epoch and is reported"
    if info.is_main:
        save(final, out / FINAL_DIR, metadata={"steps": result.steps, "test": test_final})
        write_json(out / METRICS_JSON, summary)
    barrier()
    if info.enabled:
        torch.distributed.destroy_process_group()
    return summary
