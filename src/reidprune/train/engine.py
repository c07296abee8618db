"""The training engine: one loop for training from scratch, fine-tuning after pruning, and distillation.

    result = fit(model, loaders, cfg.train, "runs/x", teacher=original, callbacks=[sfp], resume=True)

This module is the loop; each part it ties together reads alone:
    step.py        one optimiser step: forward (AMP), teacher, losses, NaN check, backward, clipping
    log.py         train_log.jsonl records, loss means, the progress bar
    resume.py      what a checkpoint holds and how a run continues from it bit for bit
    checkpoint.py  the checkpoint file: atomic, pickle-free; generator capture
    validation.py  metrics on held-out identities (never the test split)
    snapshots.py   the saved models: best/, epoch_{k}/

Per step: the optimiser step, `on_step_end` callbacks, a "step" record every train.log_every
steps and an optional mid-epoch checkpoint. Per epoch: `on_epoch_end` callbacks, validation, the
best model by that metric, and a checkpoint.

Distributed: under torchrun every rank runs this loop on its shard (the data engineer's samplers
shard by rank), the model is wrapped in DistributedDataParallel, logged losses are averaged over
ranks, BN buffers are synced from rank 0 at each epoch end, and only rank 0 writes logs,
checkpoints, the best model and progress bars. Validation (`validation.py`): with sharded
validation loaders every rank embeds its shard and rank 0 ranks the gathered features; otherwise
rank 0 evaluates alone; the metrics are broadcast so that every rank agrees on the best epoch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from reidprune.errors import TrainingError
from reidprune.train import resume as resuming
from reidprune.train import snapshots
from reidprune.train.checkpoint import load_resume_state, save_resume_state
from reidprune.train.checkpoint import seed_everything as seed_everything
from reidprune.train.config import TrainConfig, check_train_config
from reidprune.train.distributed import (
    all_gather_objects,
    barrier,
    broadcast_buffers,
    dist_info,
    resolve_device,
)
from reidprune.train.finetune import freeze, make_mixup
from reidprune.train.log import JsonlLog, LossMeter, TrainProgress
from reidprune.train.losses import uses_teacher
from reidprune.train.optim import check_scheduler, make_optimizer, make_scheduler
from reidprune.train.resume import RESUME_MAY_CHANGE as RESUME_MAY_CHANGE
from reidprune.train.step import TrainStep
from reidprune.train.step import resolve_amp as resolve_amp
from reidprune.train.teacher import freeze_teacher
from reidprune.train.validation import loader_of, metric_name, validate

# seed_everything, resolve_amp and RESUME_MAY_CHANGE are imported "as" themselves: callers (jobs,
# tests) import them from this module, where they used to live

LOG_NAME = "train_log.jsonl"
CHECKPOINT_NAME = "checkpoints/last.pt"
BEST_DIR = snapshots.BEST_DIR
BEST_WEIGHTS = snapshots.BEST_WEIGHTS


@dataclass
class FitResult:
    """What `fit` hands back. metrics are in percent (mAP, rank1, top1)."""

    model: nn.Module  # the trained model (rebuilt from the checkpoint's architecture on resume), eval mode
    steps: int
    epochs: int
    metric_name: str | None  # the validation metric used for selection, None without validation data
    best_metric: float | None
    best_epoch: int | None  # 0-based
    last_metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch
    best_path: Path | None = None  # best model: a reidprune model dir (or .safetensors without .arch)
    checkpoint: Path | None = None
    optimizer: Optimizer | None = None  # to continue with the same optimiser state (fit(optimizer=...))


class Engine:
    """State of one training run. Callbacks see: model (unwrapped), optimizer, scheduler, teacher,
    device, cfg, loaders, epoch (0-based, the running one), step (optimiser steps done), batch_index
    (next batch of the epoch), metrics (last validation), resumed, rank, world_size, output_dir."""

    def __init__(
        self,
        model: nn.Module,
        loaders: Any,
        cfg: TrainConfig,
        output_dir: str | Path,
        teacher: nn.Module | None = None,
        callbacks: Sequence[Any] = (),
        *,
        eval_cfg: Any = None,
        optimizer: Optimizer | None = None,
        scheduler: Any = None,
        device: str | torch.device | None = None,
        seed: int = 0,
    ) -> None:
        if teacher is not None and teacher is model:
            raise TrainingError(
                "the teacher must be a separate (frozen) copy of the model, not the model itself"
            )
        self.model = model
        self.loaders = loaders
        self.cfg = cfg
        self.output_dir = Path(output_dir)
        self.teacher = teacher
        self.callbacks = list(callbacks)
        self.eval_cfg = eval_cfg
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.device = resolve_device(device)
        self.seed = seed
        info = dist_info()
        self.rank, self.world_size = info.rank, info.world_size
        self.is_main = info.is_main
        self.epoch = 0
        self.step = 0
        self.batch_index = 0
        self.metrics: dict[str, float] = {}
        self.best: dict[str, Any] | None = None
        self.history: list[dict[str, Any]] = []
        self.resumed = False
        self.train_model: nn.Module = model  # what runs forward: the model or its DDP wrapper
        self.train_step: TrainStep | None = None
        self.steps_per_epoch = 0
        self.log = JsonlLog(self.output_dir / LOG_NAME, enabled=self.is_main)
        self.losses = LossMeter()
        self.generators = resuming.Generators()
        self._progress = TrainProgress(enabled=False)

    @property
    def checkpoint_path(self) -> Path:
        return self.output_dir / CHECKPOINT_NAME

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        return self.train_step.scaler if self.train_step is not None else None

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return self.train_step.amp_dtype if self.train_step is not None else None

    # ------------------------------------------------------------------ set-up
    def _train_loader(self) -> Any:
        loader = loader_of(self.loaders, "train")
        if loader is None:
            raise TrainingError("loaders.train is missing: nothing to train on")
        try:
            n = len(loader)
        except TypeError:
            raise TrainingError(
                f"the training loader ({type(loader).__name__}) has no length; the per-step lr schedule "
                "and exact resume need one"
            ) from None
        if n == 0:
            dataset = getattr(loader, "dataset", None)
            size = len(dataset) if dataset is not None and hasattr(dataset, "__len__") else "?"
            raise TrainingError(
                f"the training loader yields no batches (data set of {size} images, batch size "
                f"{getattr(loader, 'batch_size', '?')}); check data.root and data.batch_size"
            )
        return loader

    def _count_steps(self, loader: Any) -> int:
        steps = len(loader)
        if self.cfg.max_steps_per_epoch > 0:
            steps = min(steps, self.cfg.max_steps_per_epoch)
        if self.world_size > 1:
            counts = all_gather_objects(steps)
            if len(set(counts)) != 1:
                raise TrainingError(
                    f"ranks have different numbers of batches per epoch {counts}; the distributed sampler "
                    "must give every rank the same number (drop or pad the remainder)"
                )
        return steps

    def _setup(self, resume: bool | str | Path) -> None:
        cfg = self.cfg
        check_train_config(cfg)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        loader = self._train_loader()
        path = resuming.resume_path(resume, self.checkpoint_path, self.log)
        state = load_resume_state(path) if path is not None else None
        if state is not None:
            self.model = self.train_model = resuming.adopt_architecture(
                self.model, state, optimizer_given=self.optimizer is not None
            )
        self.model.to(self.device)
        freeze(self.model, cfg.freeze)  # before the optimiser, which leaves frozen parameters out
        mixup = make_mixup(cfg, self.model)
        if self.teacher is not None:
            freeze_teacher(self.teacher).to(self.device)
        elif uses_teacher(cfg):
            raise TrainingError(
                f"distillation is configured (train.distill={cfg.distill}, embed_distill={cfg.embed_distill}, "
                f"relation_distill_weight={cfg.relation_distill_weight}) but no teacher was given"
            )
        self.steps_per_epoch = self._count_steps(loader)
        if self.optimizer is None:
            self.optimizer = make_optimizer(self.model, cfg)
        if self.scheduler is None:
            self.scheduler = make_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        check_scheduler(self.optimizer, self.scheduler, self.model)
        amp_dtype = resolve_amp(cfg.amp, self.device)
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.train_model = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.ddp_find_unused_parameters,
            )
        self.train_step = TrainStep(
            self.train_model,
            self.optimizer,
            self.scheduler,
            cfg,
            self.device,
            amp_dtype=amp_dtype,
            teacher=self.teacher,
            mixup=mixup,
        )
        if state is not None:
            resuming.restore(self, state, where=str(path))
        else:
            seed_everything(self.seed + self.rank)

    # ------------------------------------------------------------------ saving
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs (`resume.capture`); collective under DDP."""
        return resuming.capture(self)

    def save_checkpoint(self) -> Path:
        state = self.state_dict()
        if self.is_main:
            save_resume_state(state, self.checkpoint_path)
        return self.checkpoint_path

    def _save_snapshot(self) -> Path:
        """train.save_every: the model after `self.epoch` epochs. A callback with `snapshot(model)`
        gives the form to keep (soft pruning: its selection set to zero)."""
        model = self.model
        for cb in self.callbacks:
            if hasattr(cb, "snapshot"):
                model = cb.snapshot(model)
        return snapshots.save_epoch(model, self.output_dir, self.epoch)

    @property
    def best_path(self) -> Path | None:
        return snapshots.best_path(self.model, self.output_dir) if self.best is not None else None

    # ------------------------------------------------------------------ validation
    def metric_name(self) -> str | None:
        return metric_name(self.loaders, self.cfg)

    def validate(self) -> dict[str, float]:
        """Metrics on the held-out validation split (percent); {} without one. Same on every rank."""
        return validate(self.model, self.loaders, self.cfg, self.eval_cfg)

    # ------------------------------------------------------------------ the loop
    def run(self, resume: bool | str | Path = False) -> FitResult:
        self._setup(resume)
        cfg = self.cfg
        if cfg.save_every > 0 and getattr(self.model, "arch", None) is None:
            raise TrainingError("train.save_every saves reidprune model folders: the model needs an .arch")
        if not self.resumed:
            self._log_start()
        for cb in self.callbacks:
            cb.on_train_start(self)
        with TrainProgress(enabled=cfg.progress and self.is_main) as self._progress:
            while self.epoch < cfg.epochs:
                self._train_epoch()
                self._finish_epoch()
        for cb in self.callbacks:
            cb.on_train_end(self)
        if self.teacher is not None:
            freeze_teacher(self.teacher)
        barrier()
        self.model.eval()
        self.log.write("end", step=self.step, epoch=self.epoch, best=self.best)
        return FitResult(
            model=self.model,
            steps=self.step,
            epochs=self.epoch,
            metric_name=self.metric_name(),
            best_metric=self.best["value"] if self.best else None,
            best_epoch=self.best["epoch"] if self.best else None,
            last_metrics=dict(self.metrics),
            history=list(self.history),
            best_path=self.best_path,
            checkpoint=self.checkpoint_path if self.checkpoint_path.is_file() else None,
            optimizer=self.optimizer,
        )

    def _log_start(self) -> None:
        assert self.optimizer is not None
        self.log.write(
            "start",
            step=0,
            epochs=self.cfg.epochs,
            steps_per_epoch=self.steps_per_epoch,
            world_size=self.world_size,
            device=str(self.device),
            amp=str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else "off",
            param_groups=[
                {
                    "name": g.get("name", str(i)),
                    "params": len(g["params"]),
                    "lr": g.get("initial_lr", g["lr"]),
                }
                for i, g in enumerate(self.optimizer.param_groups)
            ],
        )

    def _train_epoch(self) -> None:
        assert self.train_step is not None
        loader = self._train_loader()
        self.model.train()
        iterator = self.generators.epoch_iterator(loader, self.epoch, self.batch_index, self.log, self.step)
        self._progress.start_epoch(
            self.epoch, self.cfg.epochs, self.steps_per_epoch, completed=self.batch_index
        )
        self.losses.start_window()
        while self.batch_index < self.steps_per_epoch:
            try:
                batch = next(iterator)
            except StopIteration:
                if self.batch_index == 0:
                    raise TrainingError(
                        f"epoch {self.epoch}: the training loader yielded no batches"
                    ) from None
                break
            tic = time.perf_counter()
            out = self.train_step(
                batch, at=f"step {self.step + 1} (epoch {self.epoch}, batch {self.batch_index})"
            )
            images = int(batch["image"].shape[0]) * self.world_size
            self.batch_index += 1
            self.step += 1
            for cb in self.callbacks:
                cb.on_step_end(self)
            self.losses.add(out.values, images)
            self._progress.advance(out.values["loss"], images / max(time.perf_counter() - tic, 1e-9))
            last = self.batch_index == self.steps_per_epoch
            if self.cfg.log_every > 0 and (self.step % self.cfg.log_every == 0 or last):
                record = self.losses.take_window()
                if out.grad_norm is not None:
                    record["grad_norm"] = out.grad_norm
                self.log.write(
                    "step", epoch=self.epoch, step=self.step, batch=self.batch_index, lr=out.lr, **record
                )
            if self.cfg.checkpoint_every_steps > 0 and self.step % self.cfg.checkpoint_every_steps == 0:
                self.save_checkpoint()

    def _finish_epoch(self) -> None:
        assert self.optimizer is not None
        cfg = self.cfg
        finished = self.epoch
        broadcast_buffers(self.model)
        for cb in self.callbacks:
            cb.on_epoch_end(self, finished)
        last = finished + 1 == cfg.epochs
        record: dict[str, Any] = {
            "epoch": finished,
            "step": self.step,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            **self.losses.epoch_means(),
        }
        if (cfg.eval_every > 0 and (finished + 1) % cfg.eval_every == 0) or last:
            metrics = self.validate()
            if metrics:
                self.metrics = metrics
                record["val"] = metrics
                name = self.metric_name()
                value = metrics[name]  # type: ignore[index]
                if self.best is None or value > self.best["value"]:
                    self.best = {"metric": name, "value": value, "epoch": finished}
                    if self.is_main:
                        snapshots.save_best(self.model, self.output_dir, {"epoch": finished, **self.best})
                    record["best"] = True
                self.log.write("val", epoch=finished, step=self.step, **metrics)
                self.model.train()
        self.history.append(record)
        self.log.write("epoch", **record)
        summary = f"epoch {finished + 1}/{cfg.epochs}: loss {record.get('loss', float('nan')):.4f}"
        if "val" in record:
            summary += f", val {self.metric_name()} {self.metrics[self.metric_name()]:.2f}"  # type: ignore[index]
        self._progress.note(summary)
        self.epoch, self.batch_index = finished + 1, 0
        self.losses.end_epoch()
        if cfg.save_every > 0 and self.epoch % cfg.save_every == 0 and self.is_main:
            self._save_snapshot()
        if last or (cfg.checkpoint_every > 0 and (finished + 1) % cfg.checkpoint_every == 0):
            self.save_checkpoint()


def fit(
    model: nn.Module,
    loaders: Any,
    cfg: TrainConfig,
    output_dir: str | Path,
    teacher: nn.Module | None = None,
    callbacks: Sequence[Any] = (),
    resume: bool | str | Path = False,
    *,
    eval_cfg: Any = None,
    optimizer: Optimizer | None = None,
    scheduler: Any = None,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> FitResult:
    """Train `model` on `loaders.train` for `cfg.epochs` epochs; see the module docstring.

    loaders: an object (or dict) with `train` and optionally `val_query` + `val_gallery` (re-ID
      validation on held-out identities) or `val` (classification); batches are dicts with
      `image` (B,3,H,W), `label` (B,), `camid` (B,).
    teacher: a frozen copy of the uncompressed model, needed when cfg.distill / embed_distill /
      relation_distill_weight ask for distillation; `fit` freezes it (see `teacher.py`).
    callbacks: `train.callbacks.Callback`s, called in order.
    resume: False; True = continue from output_dir/checkpoints/last.pt when it exists (start fresh
      otherwise); or the path of a checkpoint.
    eval_cfg: an `EvalConfig` for validation (defaults otherwise).
    optimizer / scheduler: None builds fresh ones (`make_optimizer`, `make_scheduler`); pass an
      optimiser to keep its state across calls (its scheduler is then built fresh for it).
    device: "auto"/None (this rank's GPU or the CPU), "cpu", "cuda:1", ...
    seed: seeds torch / NumPy / random with seed + rank at the start of a fresh run.

    Output (rank 0): output_dir/train_log.jsonl, output_dir/checkpoints/last.pt, and the best model
    by validation metric in output_dir/best/ (reidprune format; best.safetensors for a model without
    `.arch`); with cfg.save_every = N also the model after every N epochs in output_dir/epoch_{k}/.
    """
    engine = Engine(
        model,
        loaders,
        cfg,
        output_dir,
        teacher,
        callbacks,
        eval_cfg=eval_cfg,
        optimizer=optimizer,
        scheduler=scheduler,
        device=device,
        seed=seed,
    )
    return engine.run(resume)
