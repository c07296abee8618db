"""One optimiser step of training, with nothing about epochs, logging or checkpoints.

    step = TrainStep(model, optimizer, scheduler, cfg, device, amp_dtype=resolve_amp(cfg.amp, device))
    out = step(batch, at="step 1 (epoch 0, batch 0)")   # out.values["loss"], out.lr, out.grad_norm

In order: mixup / CutMix of the batch (when configured), forward under autocast (AMP), the frozen
teacher once under no_grad, every loss term (`losses.compute_losses`), the terms averaged over
ranks and checked for NaN / inf (naming the term), backward through the GradScaler (fp16 only),
optional gradient clipping, optimiser step and the per-step lr schedule.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from reidprune.errors import TrainingError
from reidprune.models.output import ModelOutput
from reidprune.train.config import TrainConfig
from reidprune.train.distributed import all_reduce_mean
from reidprune.train.finetune import mix_batch
from reidprune.train.losses import compute_losses, uses_teacher
from reidprune.train.teacher import freeze_teacher, teacher_forward


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `train.amp` on `device`, or None for full precision."""
    if amp == "off":
        return None
    if amp == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if device.type != "cuda":
            raise TrainingError(f"train.amp=fp16 needs a CUDA device (training on {device}); use bf16 or off")
        return torch.float16
    raise TrainingError(f"train.amp='{amp}': expected auto, off, bf16 or fp16")


@dataclass
class StepOutput:
    values: dict[str, float]  # every loss term ("loss" is the total), averaged over ranks
    lr: float  # the learning rate of the first parameter group during this step
    grad_norm: float | None  # before clipping; None without train.grad_clip


@dataclass
class TrainStep:
    """Runs one step on `model` (the model itself, or its DistributedDataParallel wrapper).

    The grad scaler is created here because only fp16 needs one; its state goes into checkpoints.
    """

    model: nn.Module
    optimizer: Optimizer
    scheduler: Any
    cfg: TrainConfig
    device: torch.device
    amp_dtype: torch.dtype | None = None
    teacher: nn.Module | None = None
    mixup: Any = None  # from `finetune.make_mixup`
    scaler: torch.amp.GradScaler = field(init=False)

    def __post_init__(self) -> None:
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def __call__(self, batch: Mapping[str, Tensor], at: str) -> StepOutput:
        """batch: `image` (B,3,H,W), `label` (B,), optional `camid` (B,). at: where the run is, for errors."""
        images = batch["image"].to(self.device, non_blocking=True)
        labels = batch["label"].to(self.device, non_blocking=True)
        camids = batch.get("camid")
        camids = camids.to(self.device, non_blocking=True) if camids is not None else None
        if self.mixup is not None:  # labels become (B, C) soft targets
            images, labels = mix_batch(self.mixup, images, labels)
        lr = float(self.optimizer.param_groups[0]["lr"])
        with self._autocast():
            output = self.model(images, camids=camids)
            if not isinstance(output, ModelOutput):
                name = type(getattr(self.model, "module", self.model)).__name__
                raise TrainingError(f"{name} returned {type(output).__name__}, not ModelOutput")
            teacher_out = None
            if self.teacher is not None and uses_teacher(self.cfg):
                freeze_teacher(self.teacher)  # a callback may have called .train() on it
                teacher_out = teacher_forward(self.teacher, images, camids)
            terms = compute_losses(output, labels, self.cfg, teacher_out)
        names = list(terms)
        stacked = all_reduce_mean(torch.stack([terms[k].detach().float() for k in names]))
        values = dict(zip(names, stacked.tolist(), strict=True))
        bad = [k for k in names if not math.isfinite(values[k])]
        if bad:
            term = next((k for k in bad if k != "loss"), "loss")
            raise TrainingError(
                f"non-finite loss at {at}: term '{term}' = {values[term]}; last lr = {lr:.3g}. Lower "
                "train.lr, enable train.grad_clip, or check the data"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(terms["loss"]).backward()
        grad_norm = None
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return StepOutput(values, lr, grad_norm)
