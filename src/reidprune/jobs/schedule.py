"""Iterative prune / fine-tune schedules for every compression method (ALGORITHMS.md §4, §5): the
compress steps (`reidprune.compress`) between `fit` calls (`reidprune.train`).

ViT tokens and heads (the AMG seeds' driver, with its bugs fixed):

    rounds x (calibrate -> prune this round's share -> fresh optimiser -> finetune_epochs)
    -> final_epochs of fine-tuning with a fresh optimiser

Each `fit` call builds its own optimiser and per-step schedule, so no scheduler is ever bound to
the optimiser of a model that no longer exists. The teacher is the unpruned model, frozen, in
eval mode (the engine enforces both). When the data has a validation split (held-out training
identities), the final model is the best final-stage epoch by validation mAP, never by test mAP.

CNN filters:
- hfp: prune once on the trained weights, extract the small model, fine-tune it;
- sfp / fpgm / bafd: train the full-size model for final_epochs with the soft-pruning callback
  (zero / decay selected filters after every epoch, hard zero at the end), then extract.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from reidprune.compress.schedule import check_prune_config
from reidprune.models.loading import load_model
from reidprune.models.plan import CompressionPlan
from reidprune.train import fit


@dataclass
class ScheduleResult:
    """The compressed model, its plan, and what each stage of the schedule did."""

    model: nn.Module
    plan: CompressionPlan
    stages: list[dict[str, Any]] = field(default_factory=list)


def run_schedule(
    model: nn.Module,
    cfg: Any,
    loaders: Any,
    output_dir: str | Path,
    *,
    teacher: nn.Module | None = None,
    device: Any = None,
) -> ScheduleResult:
    """Compress `model` as `cfg.prune` says, fine-tuning with `cfg.train`; `model` is not modified.

    cfg: an ExperimentConfig (sections prune, train, eval and seed are used).
    loaders: `reidprune.data.Loaders`; `train` also serves the calibration passes.
    teacher: the frozen unpruned model for distillation (default: a copy of `model`).
    """
    family, name = check_prune_config(cfg.prune)
    output_dir = Path(output_dir)
    teacher = teacher if teacher is not None else copy.deepcopy(model)
    if family == "filter":
        return _filter_schedule(model, name, cfg, loaders, output_dir, teacher, device)
    return _vit_schedule(model, family, name, cfg, loaders, output_dir, teacher, device)


def finetune(
    model: nn.Module,
    epochs: int,
    cfg: Any,
    loaders: Any,
    directory: Path,
    teacher: nn.Module,
    device: Any,
    callbacks: tuple[Any, ...] = (),
    select_best: bool = False,
    keep_files: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """`fit` for `epochs` with a fresh optimiser; returns (model, stage record).

    keep_files=False removes the stage's resume checkpoint and best model once it is done (its log
    stays): a prune job never resumes a finished round, and with one ViT-B checkpoint (weights +
    optimiser, about 1 GB) per round a 57-round schedule would otherwise fill a disk."""
    train_cfg = dataclasses.replace(cfg.train, epochs=epochs)
    result = fit(
        model,
        loaders,
        train_cfg,
        directory,
        teacher=teacher,
        callbacks=callbacks,
        eval_cfg=cfg.eval,
        device=device,
        seed=cfg.seed,
    )
    record = {
        "epochs": epochs,
        "output_dir": str(directory),
        "best_metric": result.best_metric,
        "best_epoch": result.best_epoch,
        "metric_name": result.metric_name,
    }
    trained = result.model
    if select_best and result.best_path is not None and (Path(result.best_path) / "model.json").is_file():
        plan = getattr(trained, "compression_plan", None)
        trained = load_model(
            result.best_path,
            map_location=next(trained.parameters()).device,
            allow_import=cfg.model.allow_import,
        )
        if plan is not None:
            trained.compression_plan = plan
        record["selected"] = f"best epoch {result.best_epoch} by validation {result.metric_name}"
    else:
        record["selected"] = "last epoch"
    if not keep_files:
        if result.checkpoint is not None:
            Path(result.checkpoint).unlink(missing_ok=True)
        best = Path(result.best_path) if result.best_path is not None else None
        if best is not None and best.is_dir():
            shutil.rmtree(best)
        elif best is not None:
            best.unlink(missing_ok=True)
    return trained, record


def _vit_schedule(
    model: nn.Module,
    family: str,
    name: str,
    cfg: Any,
    loaders: Any,
    output_dir: Path,
    teacher: nn.Module,
    device: Any,
) -> ScheduleResult:
    from reidprune.compress.heads import prune_heads
    from reidprune.compress.heads.layout import head_slots
    from reidprune.compress.heads.selection import split_rounds
    from reidprune.compress.tokens import prune_tokens

    prune = cfg.prune
    options = dict(prune.options)
    student, plan = model, None
    stages: list[dict[str, Any]] = []
    if family == "head":
        total_heads = sum(slot.num_heads for slot in head_slots(model))
        per_round = split_rounds(total_heads, prune.rate, prune.rounds)
    for index in range(prune.rounds):
        if family == "token":
            student, plan = prune_tokens(
                student,
                method=name,
                rate=prune.rate / prune.rounds,
                data=loaders.train,
                max_batches=prune.calib_batches,
                device=device,
                **options,
            )
        else:
            student, plan = prune_heads(
                student,
                method=name,
                num_remove=per_round[index],
                data=loaders.train if name == "entropy" else None,
                max_batches=prune.calib_batches,
                device=device,
                seed=cfg.seed + index,
                **options,
            )
        stage: dict[str, Any] = {"stage": f"round {index + 1}/{prune.rounds}", "method": prune.method}
        if prune.finetune_epochs > 0:
            student, record = finetune(
                student,
                prune.finetune_epochs,
                cfg,
                loaders,
                output_dir / f"round{index + 1}",
                teacher,
                device,
                keep_files=False,
            )
            stage.update(record)
        stages.append(stage)
    if prune.final_epochs > 0:
        student, record = finetune(
            student, prune.final_epochs, cfg, loaders, output_dir / "final", teacher, device, select_best=True
        )
        stages.append({"stage": "final", **record})
    assert plan is not None
    student.compression_plan = plan
    return ScheduleResult(student.eval(), plan, stages)


def _filter_schedule(
    model: nn.Module,
    name: str,
    cfg: Any,
    loaders: Any,
    output_dir: Path,
    teacher: nn.Module,
    device: Any,
) -> ScheduleResult:
    from reidprune.compress.filters import filter_pruning_callback, prune_filters

    prune = cfg.prune
    options = dict(prune.options)
    stages: list[dict[str, Any]] = []
    if name == "hfp":
        small, plan = prune_filters(model, "hfp", prune.rate, **options)
        stages.append({"stage": "prune once", "method": prune.method})
        if prune.final_epochs > 0:
            small, record = finetune(
                small,
                prune.final_epochs,
                cfg,
                loaders,
                output_dir / "final",
                teacher,
                device,
                select_best=True,
            )
            small.compression_plan = plan
            stages.append({"stage": "final", **record})
        return ScheduleResult(small.eval(), plan, stages)
    callback = filter_pruning_callback(model, name, prune.rate, **options)
    trained, record = finetune(
        copy.deepcopy(model),
        prune.final_epochs,
        cfg,
        loaders,
        output_dir / "soft",
        teacher,
        device,
        callbacks=(callback,),
    )
    stages.append({"stage": "soft pruning", "method": prune.method, **record})
    small, plan = callback.extract(trained)
    stages.append({"stage": "extract", "removed_filters": plan.details.get("removed_filters")})
    return ScheduleResult(small.eval(), plan, stages)
