"""`prune_experiment(cfg)`: the whole `reidprune prune` job from one ExperimentConfig.

data -> trained model (model.weights: a reidprune model directory or a foreign checkpoint) ->
frozen copy as teacher -> `run_schedule` (prune / fine-tune rounds, final fine-tuning) -> test
evaluation of the unpruned and the compressed model -> params and GMACs of both ->
output_dir/{config.yaml, model/, metrics.json, round*/, final/} (+ masked/ with prune.save_masked).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from reidprune.atomic import folder_lock, write_json
from reidprune.compress.schedule import check_prune_config
from reidprune.config import ExperimentConfig, save_config
from reidprune.errors import CompressionError
from reidprune.jobs.evaluation import evaluate_test
from reidprune.jobs.loading import job_model
from reidprune.jobs.schedule import run_schedule
from reidprune.run_folder import prepare_output_dir

METRICS_JSON = "metrics.json"
MODEL_DIR = "model"
MASKED_DIR = "masked"


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


def _refuse_distributed() -> None:
    """Every torchrun rank would run the whole job into the same output_dir: refuse before any work."""
    world = os.environ.get("WORLD_SIZE", "1").strip() or "1"
    if world != "1":
        raise CompressionError(
            f"reidprune prune runs in one process, but WORLD_SIZE={world} (torchrun?): distributed "
            "prune jobs do not exist yet, so every rank would run the whole job into one output_dir; "
            "run it without torchrun (one device)"
        )


def prune_experiment(cfg: ExperimentConfig, overwrite: bool = False) -> dict[str, Any]:
    """Run the pruning job described by `cfg`; returns (and writes) metrics.json's content.

    output_dir is locked for the run; a folder that holds another run is refused unless `overwrite`
    (its run outputs are removed first).
    """
    from reidprune.train.config import check_train_config

    _refuse_distributed()
    family, _ = check_prune_config(cfg.prune)
    check_train_config(cfg.train)  # the fine-tuning settings, before any data or model is loaded
    if cfg.prune.save_masked and family != "filter":
        raise CompressionError(
            "prune.save_masked=true: only filter pruning has a zero-filter full-size form, "
            f"not prune.method={cfg.prune.method}"
        )
    if not cfg.model.weights:
        raise CompressionError(
            "model.weights is empty: pruning starts from a trained model (a reidprune model directory "
            "from `reidprune train`, or a foreign checkpoint such as a TransReID .pth)"
        )
    with folder_lock(cfg.output_dir):
        prepare_output_dir(cfg, overwrite=overwrite)
        return _prune(cfg)


def _prune(cfg: ExperimentConfig) -> dict[str, Any]:
    from reidprune.data import build_dataset, build_loaders
    from reidprune.models.forward import use_model_input_size
    from reidprune.models.serialization import save
    from reidprune.train.distributed import resolve_device
    from reidprune.train.engine import seed_everything

    device = resolve_device(cfg.device)
    out = Path(cfg.output_dir)
    seed_everything(cfg.seed)
    splits = build_dataset(cfg.data)
    if not splits.train:
        raise CompressionError(
            f"data.root={cfg.data.root}: calibration and fine-tuning need a training split"
        )
    model = job_model(cfg, cfg.model.weights, splits.num_classes).to(device)
    use_model_input_size(cfg.data, model)
    loaders = build_loaders(cfg.data, splits, seed=cfg.seed)
    # the teacher is the model as loaded, unless train.teacher names another (e.g. the original model
    # in step 2 of a head -> token cascade)
    teacher = job_model(cfg, cfg.train.teacher, splits.num_classes) if cfg.train.teacher else model
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
    if cfg.prune.save_masked:
        from reidprune.compress.filters.masked import masked_model

        masked = masked_model(model, result.model, result.plan)
        save(masked, out / MASKED_DIR, metadata={"method": cfg.prune.method, "form": "zero filters"})
    write_json(out / METRICS_JSON, summary)
    return summary
