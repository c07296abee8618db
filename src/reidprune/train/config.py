"""Train section of the experiment config."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    epochs: int = 10
    optimizer: str = "adamw"  # sgd | adamw
    lr: float = 3e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9
    bias_lr_factor: float = 1.0
    scheduler: str = "cosine"  # cosine | step | constant
    warmup_epochs: int = 1
    warmup_factor: float = 0.01
    min_lr_factor: float = 0.002
    step_milestones: list[int] | None = None
    step_gamma: float = 0.1
    amp: str = "auto"  # auto (bf16/fp16 on GPU, off on CPU) | off | bf16 | fp16
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    # losses
    id_loss_weight: float = 1.0
    label_smoothing: float = 0.0
    triplet_weight: float = 1.0
    triplet_margin: float = 0.3  # <= 0 means soft margin
    # distillation from the uncompressed teacher
    distill: str = "none"  # none | soft | hard
    distill_alpha: float = 0.2
    distill_tau: float = 1.0
    distill_reduction: str = "batchmean"  # batchmean | elements
    embed_distill: str = "none"  # none | mse | cosine
    embed_distill_weight: float = 1.0
    relation_distill_weight: float = 0.0
    # bookkeeping
    eval_every: int = 1  # epochs between validations (0 = only at the end)
    checkpoint_every: int = 1
    log_every: int = 10  # steps between log lines
    max_steps_per_epoch: int = 0  # 0 = full epoch (useful for smoke runs)
