"""`prune_experiment(cfg)`: the whole `reidprune prune` job from one ExperimentConfig.

data -> trained model (model.weights: a reidprune model directory or a foreign checkpoint) ->
frozen copy as teacher -> `run_schedule` (prune / fine-tune rounds, final fine-tuning) -> test
evaluation of the unpruned and the compressed model -> params and GMACs of both ->
output_dir/{config.yaml, model/, metrics.json, round*/, final/} (+ masked/ with prune.save_masked).

Under torchrun (`torchrun --nproc_per_node N -m reidprune prune ...`) every rank runs the job on its
shard: the PK sampler shards identities as in training, calibration statistics are summed over the
ranks (every rank builds the same plan, checked each round), fine-tuning runs DDP, and rank 0 alone
writes. `resume=True` continues a killed job from its last finished step (`jobs/schedule.py`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from reidprune.atomic import write_json
from reidprune.compress.schedule import check_prune_config
from reidprune.config import ExperimentConfig, save_config
from reidprune.errors import CompressionError
from reidprune.jobs.evaluation import evaluate_test
from reidprune.jobs.loading import job_model
from reidprune.jobs.schedule import run_schedule
from reidprune.jobs.setup import claimed_output_dir, job_splits

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


def prune_experiment(cfg: ExperimentConfig, overwrite: bool = False, resume: bool = False) -> dict[str, Any]:
    """Run the pruning job described by `cfg`; returns (and writes, on rank 0) metrics.json's content.

    output_dir is locked for the run; a folder that holds another run is refused unless `resume`
    (the same config: continue from its last finished step) or `overwrite` (its run outputs are
    removed first).
    """
    from reidprune.train.config import check_train_config
    from reidprune.train.distributed import init_distributed

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
    created = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    info = init_distributed(cfg.device)
    try:
        with claimed_output_dir(cfg, info, resume=resume, overwrite=overwrite):
            return _prune(cfg, info, resume)
    finally:
        # a group this call created ends with it (a caller's group is the caller's to close)
        if created and info.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _prune(cfg: ExperimentConfig, info: Any, resume: bool) -> dict[str, Any]:
    from reidprune.data import build_loaders
    from reidprune.models.forward import use_model_input_size
    from reidprune.models.serialization import save
    from reidprune.train.distributed import barrier, resolve_device
    from reidprune.train.engine import seed_everything

    device = resolve_device(cfg.device)
    out = Path(cfg.output_dir)
    seed_everything(cfg.seed)
    splits = job_splits(cfg.data, info)
    if not splits.train:
        raise CompressionError(
            f"data.root={cfg.data.root}: calibration and fine-tuning need a training split"
        )
    model = job_model(cfg, cfg.model.weights, splits.num_classes).to(device)
    use_model_input_size(cfg.data, model)
    loaders = build_loaders(cfg.data, splits, distributed=info.enabled, seed=cfg.seed)
    # the teacher is the model as loaded, unless train.teacher names another (e.g. the original model
    # in step 2 of a head -> token cascade)
    teacher = job_model(cfg, cfg.train.teacher, splits.num_classes) if cfg.train.teacher else model
    teacher = copy.deepcopy(teacher).to(device).eval()
    if info.is_main:
        save_config(cfg, out)

    before = {"test": evaluate_test(model, loaders, cfg), **model_cost(model)}
    result = run_schedule(model, cfg, loaders, out, teacher=teacher, device=device, resume=resume)
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
    if info.is_main:
        save(result.model, out / MODEL_DIR, metadata={"test": after["test"], "method": cfg.prune.method})
        if cfg.prune.save_masked:
            from reidprune.compress.filters.masked import masked_model

            masked = masked_model(model, result.model, result.plan)
            save(masked, out / MASKED_DIR, metadata={"method": cfg.prune.method, "form": "zero filters"})
        write_json(out / METRICS_JSON, summary)
    barrier()
    return summary
