"""Optimisers with parameter groups, and learning-rate schedules computed per optimiser step.

A schedule is always built *for* an optimiser (`make_scheduler(optimizer, ...)`): an iterative
pruning schedule that creates a fresh optimiser per round must also create a fresh schedule, so
that each round gets its own warm-up and decay (the AMG TransReID seed bound its cosine schedule
to the pre-pruning optimiser, and its fine-tuning silently ran at a constant lr).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from reidprune.errors import TrainingError
from reidprune.train.config import TrainConfig

# parameters that act like biases: an additive offset per token, never decayed in ViT recipes
EMBEDDING_NAMES = ("pos_embed", "cls_token", "dist_token", "reg_token", "sie_embed")


def is_norm_or_bias(name: str, param: nn.Parameter) -> bool:
    """1-D parameters (biases, norm scales) and additive token embeddings."""
    return param.ndim <= 1 or name.rsplit(".", 1)[-1] in EMBEDDING_NAMES


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Split the trainable parameters into groups with their own lr and weight decay.

    - "decay": weights (>= 2-D), lr = cfg.lr, weight decay = cfg.weight_decay;
    - "no_decay": norm scales and token embeddings, lr = cfg.lr, decay = weight_decay_norm_bias;
    - "bias": every *.bias, lr = cfg.lr * cfg.bias_lr_factor, decay = weight_decay_norm_bias.
    weight_decay_norm_bias None means 0 for Adam/AdamW and weight_decay for SGD (TransReID).
    Frozen parameters (requires_grad False) are left out. Empty groups are dropped.
    """
    norm_bias_wd = cfg.weight_decay_norm_bias
    if norm_bias_wd is None:
        norm_bias_wd = cfg.weight_decay if cfg.optimizer == "sgd" else 0.0
    groups: dict[str, dict[str, Any]] = {
        "decay": {"name": "decay", "params": [], "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        "no_decay": {"name": "no_decay", "params": [], "lr": cfg.lr, "weight_decay": norm_bias_wd},
        "bias": {
            "name": "bias",
            "params": [],
            "lr": cfg.lr * cfg.bias_lr_factor,
            "weight_decay": norm_bias_wd,
        },
    }
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.endswith(".bias") or name == "bias":
            key = "bias"
        elif is_norm_or_bias(name, param):
            key = "no_decay"
        else:
            key = "decay"
        groups[key]["params"].append(param)
    return [g for g in groups.values() if g["params"]]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> Optimizer:
    """A fresh optimiser over `model`'s trainable parameters (see `param_groups`)."""
    groups = param_groups(model, cfg)
    if not groups:
        raise TrainingError(f"{type(model).__name__} has no trainable parameters (all requires_grad=False)")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "adam":  # coupled L2 decay, as the AMG LA-Transformer seed
        return torch.optim.Adam(groups, lr=cfg.lr)
    raise TrainingError(f"train.optimizer='{cfg.optimizer}': expected sgd, adamw or adam")


@dataclass
class LRSchedule:
    """lr factor as a function of the optimiser step (0-based); plain fields, so it checkpoints.

    Linear warm-up from `warmup_factor` to 1 over `warmup_steps`, then
    cosine: 1 -> min_factor over the remaining steps; step: gamma ** (milestones passed);
    constant: 1. The step schedule's decay also applies during warm-up.
    """

    kind: str
    total_steps: int
    warmup_steps: int = 0
    warmup_factor: float = 1.0
    min_factor: float = 0.0
    milestone_steps: list[int] = field(default_factory=list)
    gamma: float = 0.1

    def __call__(self, step: int) -> float:
        warm = 1.0
        if step < self.warmup_steps:
            warm = self.warmup_factor + (1.0 - self.warmup_factor) * step / self.warmup_steps
        if self.kind == "constant":
            return warm
        if self.kind == "step":
            return warm * self.gamma ** sum(step >= m for m in self.milestone_steps)
        if step < self.warmup_steps:
            return warm
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_schedule(cfg: TrainConfig, steps_per_epoch: int, epochs: int | None = None) -> LRSchedule:
    epochs = cfg.epochs if epochs is None else epochs
    if cfg.scheduler not in ("cosine", "step", "constant"):
        raise TrainingError(f"train.scheduler='{cfg.scheduler}': expected cosine, step or constant")
    if steps_per_epoch <= 0:
        raise TrainingError(f"cannot build an lr schedule for {steps_per_epoch} steps per epoch")
    if cfg.scheduler == "step" and not cfg.step_milestones:
        raise TrainingError("train.scheduler=step needs train.step_milestones (epochs), e.g. [40, 70]")
    return LRSchedule(
        kind=cfg.scheduler,
        total_steps=epochs * steps_per_epoch,
        warmup_steps=max(0, cfg.warmup_epochs) * steps_per_epoch,
        warmup_factor=cfg.warmup_factor,
        min_factor=cfg.min_lr_factor,
        milestone_steps=[m * steps_per_epoch for m in (cfg.step_milestones or [])],
        gamma=cfg.step_gamma,
    )


def make_scheduler(
    optimizer: Optimizer, cfg: TrainConfig, steps_per_epoch: int, epochs: int | None = None
) -> LambdaLR:
    """A fresh per-step schedule bound to `optimizer`; call `.step()` after every optimiser step.

    Sets each group's lr to its base lr times the factor at step 0 (the warm-up start). The base
    lr is the group's `initial_lr` when an earlier scheduler set one (a re-used optimiser restarts
    from its original lr, not from where the last schedule left it), else its current lr.
    """
    return LambdaLR(optimizer, make_schedule(cfg, steps_per_epoch, epochs))


def check_scheduler(optimizer: Optimizer, scheduler: Any, model: nn.Module) -> None:
    """Refuse a scheduler bound to another optimiser, or an optimiser over another model's parameters."""
    if scheduler is not None and getattr(scheduler, "optimizer", None) is not optimizer:
        raise TrainingError(
            "the lr scheduler is bound to a different optimiser than the one in use; build it with "
            "make_scheduler(optimizer, ...) for this optimiser (a stale scheduler leaves the lr constant)"
        )
    own = {id(p) for p in model.parameters()}
    foreign = sum(1 for g in optimizer.param_groups for p in g["params"] if id(p) not in own)
    if foreign:
        raise TrainingError(
            f"the optimiser holds {foreign} parameter(s) that are not in the model being trained "
            "(an optimiser built before pruning is stale); build a fresh one with make_optimizer(model, cfg)"
        )
