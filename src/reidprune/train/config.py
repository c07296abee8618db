"""Train section of the experiment config."""

from __future__ import annotations

from dataclasses import dataclass, field

from reidprune.errors import TrainingError


@dataclass
class TrainConfig:
    epochs: int = 10
    optimizer: str = "adamw"  # sgd | adamw | adam
    lr: float = 3e-4
    weight_decay: float = 5e-4
    # weight decay of 1-D parameters (biases, norm weights) and of pos_embed / cls_token / sie_embed;
    # None: 0 for adam/adamw (the usual ViT recipe), `weight_decay` for sgd (TransReID decays everything)
    weight_decay_norm_bias: float | None = None
    momentum: float = 0.9
    nesterov: bool = False
    bias_lr_factor: float = 1.0  # lr multiplier of every *.bias (TransReID SGD uses 2)
    scheduler: str = "cosine"  # cosine | step | constant (computed per optimiser step)
    warmup_epochs: int = 1
    warmup_factor: float = 0.01  # lr factor at step 0, ramped linearly to 1 over the warm-up
    min_lr_factor: float = 0.002  # cosine ends at lr * min_lr_factor
    step_milestones: list[int] | None = None  # epochs at which `step` multiplies the lr by step_gamma
    step_gamma: float = 0.1
    amp: str = "auto"  # auto (bf16/fp16 on GPU, off on CPU) | off | bf16 | fp16
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    # losses
    id_loss_weight: float = 1.0
    label_smoothing: float = 0.0
    triplet_weight: float = 1.0
    triplet_margin: float = 0.3  # 0 means soft margin log(1 + exp(d_ap - d_an)); negative is refused
    # distillation from the uncompressed teacher
    teacher: str = ""  # CLI only: a reidprune model directory or a checkpoint to distil from ("" = none)
    distill: str = "none"  # none | soft | hard
    distill_alpha: float = 0.2
    distill_tau: float = 1.0
    distill_reduction: str = "batchmean"  # batchmean | elements (divide by B*C, the seeds' convention)
    embed_distill: str = "none"  # none | mse | cosine
    embed_distill_weight: float = 1.0
    embed_distill_target: str = "embedding"  # embedding | features (pre-neck, averaged over heads)
    relation_distill_weight: float = 0.0  # similarity-matrix distillation on the same target
    # PM-ViT (DeiT) fine-tuning options (see train/finetune.py); mixup / cutmix need timm
    mixup: float = 0.0  # mixup Beta alpha (0 = off); targets become soft, label_smoothing included
    cutmix: float = 0.0  # cutmix Beta alpha (0 = off)
    mixup_prob: float = 1.0  # probability that a batch is mixed at all
    mixup_switch_prob: float = 0.5  # with both on: probability of cutmix instead of mixup
    freeze: list[str] = field(default_factory=list)  # module-name prefixes kept fixed, e.g. [patch_embed]
    # bookkeeping
    eval_every: int = 1  # epochs between validations (0 = only at the end)
    select_metric: str = "auto"  # best-checkpoint metric: auto (mAP / top1) | mAP | rank1 | top1
    checkpoint_every: int = 1  # epochs between checkpoints (the last epoch is always saved)
    checkpoint_every_steps: int = 0  # also checkpoint every N optimiser steps (0 = off)
    save_every: int = 0  # keep the model after every N epochs in output_dir/epoch_{k}/ (0 = off)
    log_every: int = 10  # steps between log lines
    max_steps_per_epoch: int = 0  # 0 = full epoch (useful for smoke runs)
    progress: bool = True  # rich progress bar on rank 0
    deterministic: bool = False  # torch.use_deterministic_algorithms (bit-exact resume on GPU)
    ddp_find_unused_parameters: bool = False  # DistributedDataParallel: parameters unused in forward


CHOICES: dict[str, tuple[str, ...]] = {
    "optimizer": ("sgd", "adamw", "adam"),
    "scheduler": ("cosine", "step", "constant"),
    "amp": ("auto", "off", "bf16", "fp16"),
    "distill": ("none", "soft", "hard"),
    "distill_reduction": ("batchmean", "elements"),
    "embed_distill": ("none", "mse", "cosine"),
    "embed_distill_target": ("embedding", "features"),
}


def check_train_config(cfg: TrainConfig) -> None:
    """Raise TrainingError naming the first `train.<key>` whose value is not one of its choices."""
    for key, allowed in CHOICES.items():
        value = getattr(cfg, key)
        if value not in allowed:
            raise TrainingError(f"train.{key}='{value}': expected one of {', '.join(allowed)}")
    for key in (
        "epochs",
        "warmup_epochs",
        "eval_every",
        "checkpoint_every",
        "checkpoint_every_steps",
        "save_every",
    ):
        if getattr(cfg, key) < 0:
            raise TrainingError(f"train.{key}={getattr(cfg, key)}: expected >= 0")
    for key in ("mixup", "cutmix"):
        if getattr(cfg, key) < 0:
            raise TrainingError(f"train.{key}={getattr(cfg, key)}: expected a Beta alpha >= 0 (0 = off)")
    for key in ("mixup_prob", "mixup_switch_prob"):
        if not 0.0 <= getattr(cfg, key) <= 1.0:
            raise TrainingError(f"train.{key}={getattr(cfg, key)}: expected a probability in [0, 1]")
    if cfg.lr <= 0:
        raise TrainingError(f"train.lr={cfg.lr}: expected > 0")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise TrainingError(f"train.label_smoothing={cfg.label_smoothing}: expected a value in [0, 1)")
    for key in ("weight_decay", "weight_decay_norm_bias", "triplet_margin"):
        if (getattr(cfg, key) or 0.0) < 0:
            raise TrainingError(f"train.{key}={getattr(cfg, key)}: expected >= 0")
