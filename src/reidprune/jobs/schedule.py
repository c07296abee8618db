"""Iterative prune / fine-tune schedules for every compression method (ALGORITHMS.md §4, §5): the
compress steps (`reidprune.compress`) between `fit` calls (`reidprune.train`).

ViT tokens and heads (the AMG seeds' driver, with its bugs fixed):

    rounds x (calibrate -> prune this round's share -> fresh optimiser -> finetune_epochs)
    -> final_epochs of fine-tuning with a fresh optimiser

Each `fit` call builds its own optimiser and per-step schedule, so no scheduler is ever bound to
the optimiser of a model that no longer exists. The teacher is the unpruned model, frozen, in
eval mode (the engine enforces both). When the data has a validation split (held-out training
identities), the final model is the best final-stage epoch by validation mAP, never by test mAP.

Budget (`prune.method: budget`, docs/budget_search.md): one joint search over per-block tokens,
heads (ViT) or filter widths (ResNet) under the target (`budget.to_budget`, the calibration pass on
the training loader) -> plan.json -> final_epochs of fine-tuning -> the result exported to
model.onnx and timed side by side with the original on the target runtime -> verify.json.

CNN filters:
- hfp: prune once on the trained weights, extract the small model, fine-tune it;
- sfp / fpgm / bafd: train the full-size model for final_epochs with the soft-pruning callback
  (zero / decay selected filters after every epoch, hard zero at the end), then extract.

Under torchrun every `fit` runs DDP and every calibration pass is sharded and summed over the ranks
(`compress/calibration.py`), so every rank builds the same plan; each round checks that the ranks'
plans agree. Round k calibrates on epoch k of the training sampler, so a resumed round sees the
same batches. Only rank 0 writes.

Resume (`resume=True`): after each finished round the model (with its plan so far), the stage
records and every rank's generators are saved in output_dir/prune_state/ (`prune_state.py`); a
resumed schedule starts after the last finished round, redoes that round's calibration (the same
numbers from the same model and batches) and continues its fine-tuning from the round's training
checkpoint. A finished round drops its checkpoint and best model (one ViT-B checkpoint per round
would fill a disk over a long schedule); its log stays.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from reidprune.compress.schedule import check_prune_config
from reidprune.errors import CompressionError
from reidprune.jobs import prune_state
from reidprune.models.loading import load_model
from reidprune.models.plan import CompressionPlan
from reidprune.train import fit
from reidprune.train.distributed import all_gather_objects, dist_info
from reidprune.train.engine import CHECKPOINT_NAME
from reidprune.train.resume import position_targets
from reidprune.train.snapshots import BEST_DIR, BEST_WEIGHTS


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
    resume: bool = False,
) -> ScheduleResult:
    """Compress `model` as `cfg.prune` says, fine-tuning with `cfg.train`; `model` is not modified.

    cfg: an ExperimentConfig (sections prune, train, eval and seed are used).
    loaders: `reidprune.data.Loaders`; `train` also serves the calibration passes.
    teacher: the frozen unpruned model for distillation (default: a copy of `model`).
    resume: continue a killed schedule in output_dir from its last finished step (module docstring);
      `model` must be the same starting model.
    """
    family, name = check_prune_config(cfg.prune)
    output_dir = Path(output_dir)
    teacher = teacher if teacher is not None else copy.deepcopy(model)
    if family == "filter":
        return _filter_schedule(model, name, cfg, loaders, output_dir, teacher, device, resume)
    if family == "budget":
        from reidprune.jobs.budget import budget_schedule

        return budget_schedule(model, cfg, loaders, output_dir, teacher, device, resume)
    return _vit_schedule(model, family, name, cfg, loaders, output_dir, teacher, device, resume)


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
    resume: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """`fit` for `epochs` with a fresh optimiser; returns (model, stage record).

    keep_files=False removes the stage's resume checkpoint and best model once it is done (its log
    stays): a prune job never resumes a finished round, and with one ViT-B checkpoint (weights +
    optimiser, about 1 GB) per round a 57-round schedule would otherwise fill a disk.
    resume: continue from directory's training checkpoint when there is one (fresh otherwise)."""
    train_cfg = dataclasses.replace(cfg.train, epochs=epochs)
    result = fit(
        model,
        loaders,
        train_cfg,
        directory,
        teacher=teacher,
        callbacks=callbacks,
        resume=resume,
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
        drop_resume_files(directory)
    return trained, record


def drop_resume_files(directory: Path) -> None:
    """Remove a finished stage's training checkpoint and best model (rank 0; the log stays)."""
    if not dist_info().is_main:
        return
    (directory / CHECKPOINT_NAME).unlink(missing_ok=True)
    if (directory / BEST_DIR).is_dir():
        shutil.rmtree(directory / BEST_DIR)
    (directory / BEST_WEIGHTS).unlink(missing_ok=True)


def position_loader(loader: Any, epoch: int) -> None:
    """Put the loader's sampler at `epoch` (from its first batch), for a calibration pass that does
    not depend on what ran before it (a resumed round calibrates on the same batches)."""
    for obj in position_targets(loader):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)
        if hasattr(obj, "set_start"):
            obj.set_start(0)


def check_same_plan(plan: CompressionPlan, where: str) -> None:
    """CompressionError unless every rank built `plan` identically (collective under torchrun)."""
    if not dist_info().enabled:
        return
    mine = json.dumps(plan.to_dict(), sort_keys=True)
    plans = all_gather_objects(mine)
    differ = [rank for rank, other in enumerate(plans) if other != plans[0]]
    if differ:
        raise CompressionError(
            f"{where}: ranks {differ} built another compression plan than rank 0 (calibration statistics "
            "not identical across ranks); the replicas would differ, so the job stops"
        )


def final_finetune(
    model: nn.Module,
    plan: CompressionPlan,
    cfg: Any,
    loaders: Any,
    output_dir: Path,
    teacher: nn.Module,
    device: Any,
    stages: list[dict[str, Any]],
    resume: bool = False,
) -> tuple[nn.Module, dict[str, Any] | None]:
    """The last stage of every schedule: `prune.final_epochs` of fine-tuning into output_dir/final,
    keeping the best model when a validation split selects one; the result carries `plan` and its
    record is appended to `stages`. Returns (model, record), record None when final_epochs is 0."""
    if cfg.prune.final_epochs <= 0:
        return model, None
    tuned, record = finetune(
        model,
        cfg.prune.final_epochs,
        cfg,
        loaders,
        output_dir / "final",
        teacher,
        device,
        select_best=True,
        resume=resume,
    )
    tuned.compression_plan = plan
    stages.append({"stage": "final", **record})
    return tuned, record


def _vit_schedule(
    model: nn.Module,
    family: str,
    name: str,
    cfg: Any,
    loaders: Any,
    output_dir: Path,
    teacher: nn.Module,
    device: Any,
    resume: bool,
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
    start = 0
    saved = prune_state.load_round(output_dir, device) if resume else None
    if saved is not None:
        student, stages, start = saved.model, saved.stages, saved.rounds_done
        plan = student.compression_plan
        prune_state.restore_generators(saved)
        drop_resume_files(output_dir / f"round{start}")  # a kill between saving and dropping them
    for index in range(start, prune.rounds):
        position_loader(loaders.train, index)
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
        check_same_plan(plan, f"round {index + 1}/{prune.rounds}")
        stage: dict[str, Any] = {"stage": f"round {index + 1}/{prune.rounds}", "method": prune.method}
        directory = output_dir / f"round{index + 1}"
        if prune.finetune_epochs > 0:
            # the round's files go only once the round is saved: a kill in between resumes from them
            student, record = finetune(
                student, prune.finetune_epochs, cfg, loaders, directory, teacher, device, resume=resume
            )
            student.compression_plan = plan
            stage.update(record)
        stages.append(stage)
        if prune_state.can_save(student):
            prune_state.save_round(output_dir, index + 1, student, stages)
        drop_resume_files(directory)
    assert plan is not None
    student, _ = final_finetune(student, plan, cfg, loaders, output_dir, teacher, device, stages, resume)
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
    resume: bool,
) -> ScheduleResult:
    from reidprune.compress.filters import filter_pruning_callback, prune_filters

    prune = cfg.prune
    options = dict(prune.options)
    stages: list[dict[str, Any]] = []
    if name == "hfp":
        small, plan = prune_filters(model, "hfp", prune.rate, **options)
        stages.append({"stage": "prune once", "method": prune.method})
        small, _ = final_finetune(small, plan, cfg, loaders, output_dir, teacher, device, stages, resume)
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
        resume=resume,
    )
    stages.append({"stage": "soft pruning", "method": prune.method, **record})
    small, plan = callback.extract(trained)
    stages.append({"stage": "extract", "removed_filters": plan.details.get("removed_filters")})
    return ScheduleResult(small.eval(), plan, stages)
