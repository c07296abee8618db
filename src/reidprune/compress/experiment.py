"""`prune_experiment(cfg)`: the whole `reidprune prune` job from one ExperimentConfig.

data -> trained model (model.weights: a reidprune model directory or a foreign checkpoint) ->
frozen copy as teacher -> `run_schedule` (prune / fine-tune rounds, final fine-tuning) -> test
evaluation of the unpruned and the compressed model -> params and GMACs of both ->
output_dir/{config.yaml, model/, metrics.json, round*/, final/}.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

from reidprune.compress.schedule import check_prune_config, run_schedule
from reidprune.config import ExperimentConfig, save_config
from reidprune.errors import CompressionError

METRICS_JSON = "metrics.json"
MODEL_DIR = "model"


def model_cost(model: Any) -> dict[str, Any]:
    """Parameters (total, attention) and GMACs (total, blocks only) at the model's input size."""
    from reidprune.measure import count_gmacs, count_params

    params = count_params(model)
    macs = count_gmacs(model)
    return {
        "params": params["params"],
        "attn_params": params["attn_params"],
        "gmacs": macs["gmacs"],
        "blocks_gmacs": macs["blocks_gmacs"],
    }


def load_trained(cfg: ExperimentConfig, weights: str, num_classes: int) -> Any:
    """The trained model to compress: a reidprune model directory, or a foreign checkpoint into which
    `model.name` is shaped first (an AMG head-pruned TransReID, another number of classes, ...)."""
    from reidprune.models.checkpoints import create_from_checkpoint

    return create_from_checkpoint(
        cfg.model.name,
        weights,
        strict=cfg.model.strict,
        num_classes=num_classes,
        img_size=[cfg.data.height, cfg.data.width],
        **cfg.model.kwargs,
    )


def _refuse_distributed() -> None:
    """Every torchrun rank would run the whole job into the same output_dir: refuse before any work."""
    world = os.environ.get("WORLD_SIZE", "1").strip() or "1"
    if world != "1":
        raise CompressionError(
            f"reidprune prune runs in one process, but WORLD_SIZE={world} (torchrun?): distributed "
            "prune jobs do not exist yet, so every rank would run the whole job into one output_dir; "
            "run it without torchrun (one device)"
        )


def prune_experiment(cfg: ExperimentConfig) -> dict[str, Any]:
    """Run the pruning job described by `cfg`; returns (and writes) metrics.json's content."""
    from reidprune.data import build_dataset, build_loaders
    from reidprune.models.serialization import save
    from reidprune.train.distributed import resolve_device
    from reidprune.train.engine import seed_everything
    from reidprune.train.experiment import evaluate_test

    _refuse_distributed()
    check_prune_config(cfg.prune)
    if not cfg.model.weights:
        raise CompressionError(
            "model.weights is empty: pruning starts from a trained model (a reidprune model directory "
            "from `reidprune train`, or a foreign checkpoint such as a TransReID .pth)"
        )
    device = resolve_device(cfg.device)
    out = Path(cfg.output_dir)
    seed_everything(cfg.seed)
    splits = build_dataset(cfg.data)
    loaders = build_loaders(cfg.data, splits, seed=cfg.seed)
    if loaders.train is None:
        raise CompressionError(
            f"data.root={cfg.data.root}: calibration and fine-tuning need a training split"
        )
    model = load_trained(cfg, cfg.model.weights, splits.num_classes).to(device)
    # the teacher is the model as loaded, unless train.teacher names another (e.g. the original model
    # in step 2 of a head -> token cascade)
    teacher = load_trained(cfg, cfg.train.teacher, splits.num_classes) if cfg.train.teacher else model
    teacher = copy.deepcopy(teacher).to(device).eval()
    save_config(cfg, out)

    before = {"test": evaluate_test(model, loaders, cfg), **model_cost(model)}
    result = run_schedule(model, cfg, loaders, out, teacher=teacher, device=device)
    after = {"test": evaluate_test(result.model, loaders, cfg), **model_cost(result.model)}
    summary: dict[str, Any] = {
        "name": cfg.name,
        "method": cfg.prune.method,
        "rate": cfg.prune.rate,
        "unpruned": before,
        "pruned": after,
        "gmacs_ratio": before["gmacs"] / after["gmacs"] if after["gmacs"] else None,
        "stages": result.stages,
        "plan": result.plan.to_dict(),
    }
    save(result.model, out / MODEL_DIR, metadata={"test": after["test"], "method": cfg.prune.method})
    (out / METRICS_JSON).write_text(json.dumps(summary, indent=2, default=str))
    return summary
