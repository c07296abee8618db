"""The training engine: one loop for training from scratch, fine-tuning after pruning, and distillation.

    result = fit(model, loaders, cfg.train, "runs/x", teacher=original, callbacks=[sfp], resume=True)

Per step: forward (AMP when configured), the frozen teacher once under no_grad, every loss term
(`losses.compute_losses`), a NaN/inf check naming the term, backward (GradScaler for fp16),
optional gradient clipping, optimiser step, per-step lr schedule, `on_step_end` callbacks, and an
optional mid-epoch checkpoint. Per epoch: `on_epoch_end` callbacks, validation on held-out
identities (never the test split), the best model by that metric, and a checkpoint.

Exact resume: the checkpoint holds every generator's state and the data position. On resume the
loader's iterator is created first (it draws its worker seed from the global generator, as in the
uninterrupted run), then the saved generator states are restored. Samplers that provide
`set_start(batch_index)` (reidprune's) jump to the batch; for any other loader the epoch is
replayed from its saved start-of-epoch generator state and the finished batches are skipped, which
reproduces shuffling and augmentation drawn from torch's generators exactly (slower: the skipped
batches are loaded again).

Distributed: under torchrun every rank runs this loop on its shard (the data engineer's samplers
shard by rank), the model is wrapped in DistributedDataParallel, logged losses are averaged over
ranks, BN buffers are synced from rank 0 at each epoch end, and only rank 0 writes logs,
checkpoints, the best model and progress bars. Validation (`validation.py`): with sharded
validation loaders every rank embeds its shard and rank 0 ranks the gathered features; otherwise
rank 0 evaluates alone; the metrics are broadcast so that every rank agrees on the best epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.optim import Optimizer

from reidprune.atomic import temporary_file
from reidprune.errors import TrainingError
from reidprune.models.checkpoint_io import CheckpointError, load_state_dict_checked
from reidprune.models.output import ModelOutput
from reidprune.train import checkpoint as ckpt
from reidprune.train.config import TrainConfig, check_train_config
from reidprune.train.distributed import (
    all_gather_objects,
    all_reduce_mean,
    barrier,
    broadcast_buffers,
    dist_info,
    resolve_device,
)
from reidprune.train.finetune import freeze, make_mixup, mix_batch
from reidprune.train.log import JsonlLog, TrainProgress
from reidprune.train.losses import compute_losses, uses_teacher
from reidprune.train.optim import check_scheduler, make_optimizer, make_scheduler
from reidprune.train.teacher import freeze_teacher, teacher_forward
from reidprune.train.validation import validate_classification, validate_reid

LOG_NAME = "train_log.jsonl"
CHECKPOINT_NAME = "checkpoints/last.pt"
BEST_DIR = "best"
BEST_WEIGHTS = "best.safetensors"  # for models without an architecture (not built by the registry)
# bookkeeping settings that do not change the training trajectory; anything else must match on resume
RESUME_MAY_CHANGE = frozenset(
    {
        "log_every",
        "progress",
        "checkpoint_every",
        "checkpoint_every_steps",
        "eval_every",
        "teacher",
        "save_every",
    }
)


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


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _get(loaders: Any, name: str) -> Any:
    if isinstance(loaders, Mapping):
        return loaders.get(name)
    return getattr(loaders, name, None)


def _position_targets(loader: Any) -> list[Any]:
    """Objects of a loader that may take `set_epoch` / `set_start`: batch sampler, sampler, data set."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    found: list[Any] = []
    for obj in (
        batch_sampler,
        getattr(batch_sampler, "sampler", None),
        getattr(loader, "sampler", None),
        getattr(loader, "dataset", None),
    ):
        if obj is not None and all(obj is not seen for seen in found):
            found.append(obj)
    return found


def _arch_json(model: nn.Module) -> str | None:
    arch = getattr(model, "arch", None)
    if arch is None:
        return None
    from reidprune.models.registry import arch_to_dict

    return json.dumps(arch_to_dict(arch), sort_keys=True)


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
        self.train_model: nn.Module = model
        self.mixup: Any = None
        self.amp_dtype: torch.dtype | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.steps_per_epoch = 0
        self.log = JsonlLog(self.output_dir / LOG_NAME, enabled=self.is_main)
        self._epoch_sums: dict[str, float] = {}
        self._epoch_count = 0
        self._epoch_rng: dict[str, Any] | None = None
        self._pending_rng: dict[str, Any] | None = None
        self._pending_epoch_rng: dict[str, Any] | None = None
        self._progress = TrainProgress(enabled=False)

    # ------------------------------------------------------------------ set-up
    @property
    def checkpoint_path(self) -> Path:
        return self.output_dir / CHECKPOINT_NAME

    def _train_loader(self) -> Any:
        loader = _get(self.loaders, "train")
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
        state = self._read_resume_state(resume)
        if state is not None:
            self._adopt_architecture(state)
        self.model.to(self.device)
        freeze(self.model, cfg.freeze)  # before the optimiser, which leaves frozen parameters out
        self.mixup = make_mixup(cfg, self.model)
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
        self.amp_dtype = resolve_amp(cfg.amp, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.train_model = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.ddp_find_unused_parameters,
            )
        if state is not None:
            self._load_state(state)
        else:
            seed_everything(self.seed + self.rank)

    def _read_resume_state(self, resume: bool | str | Path) -> dict[str, Any] | None:
        if resume is False or resume is None:
            return None
        path = self.checkpoint_path if resume is True else Path(resume)
        if resume is True and not path.is_file():
            self.log.write("note", step=0, message=f"no checkpoint at {path}; starting from scratch")
            return None
        return ckpt.load_checkpoint(path)

    def _adopt_architecture(self, state: dict[str, Any]) -> None:
        """A checkpoint of a different (e.g. pruned) architecture rebuilds the model from it."""
        saved = state.get("arch")
        if saved is None or saved == _arch_json(self.model):
            return
        if self.optimizer is not None:
            raise TrainingError(
                "the checkpoint holds a different architecture than the model passed in, so the given "
                "optimiser cannot be used; pass optimizer=None to resume"
            )
        from reidprune.models.plan import CompressionPlan
        from reidprune.models.registry import build

        self.model = build(json.loads(saved))
        if state.get("plan"):
            self.model.compression_plan = CompressionPlan.from_dict(json.loads(state["plan"]))  # type: ignore[assignment]
        self.train_model = self.model

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a resume needs; collective under DDP (gathers every rank's generators)."""
        assert self.optimizer is not None and self.scheduler is not None and self.scaler is not None
        plan = getattr(self.model, "compression_plan", None)
        return {
            "arch": _arch_json(self.model),
            "plan": json.dumps(plan.to_dict()) if plan is not None else None,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": all_gather_objects(ckpt.rng_state()),
            "epoch_rng": all_gather_objects(self._epoch_rng),
            "epoch": self.epoch,
            "batch_index": self.batch_index,
            "step": self.step,
            "epoch_sums": dict(self._epoch_sums),
            "epoch_count": self._epoch_count,
            "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else {} for cb in self.callbacks],
            "best": self.best,
            "metrics": self.metrics,
            "history": self.history,
            "world_size": self.world_size,
            "seed": self.seed,
            "train_config": dataclasses.asdict(self.cfg),
        }

    def save_checkpoint(self) -> Path:
        state = self.state_dict()
        if self.is_main:
            ckpt.save_checkpoint(state, self.checkpoint_path)
        return self.checkpoint_path

    def _check_same_settings(self, saved: dict[str, Any], where: str) -> None:
        """Resuming with other training settings would not continue the same run; say which differ."""
        current = dataclasses.asdict(self.cfg)
        # keys newer than the checkpoint held their default value in it
        saved = {**dataclasses.asdict(TrainConfig()), **saved}
        changed = [
            f"{key}: checkpoint {saved.get(key)!r}, now {value!r}"
            for key, value in current.items()
            if key not in RESUME_MAY_CHANGE and saved.get(key) != value
        ]
        if changed:
            raise CheckpointError(
                f"{where}: resumed with different train settings ({'; '.join(changed)}). Resume with the "
                "checkpoint's settings, or start a new run from the saved model"
            )

    def _load_state(self, state: dict[str, Any]) -> None:
        assert self.optimizer is not None and self.scheduler is not None and self.scaler is not None
        where = str(self.checkpoint_path)
        self._check_same_settings(state["train_config"], where)
        load_state_dict_checked(self.model, state["model"], strict=True, where=where)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as err:
            raise CheckpointError(f"{where}: optimiser state does not fit this optimiser ({err})") from None
        self.scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        saved_callbacks = state["callbacks"]
        if len(saved_callbacks) != len(self.callbacks):
            raise CheckpointError(
                f"{where}: saved with {len(saved_callbacks)} callback(s), resumed with {len(self.callbacks)}"
            )
        for cb, cb_state in zip(self.callbacks, saved_callbacks, strict=True):
            if hasattr(cb, "load_state_dict"):
                cb.load_state_dict(cb_state)
        self.epoch, self.batch_index, self.step = state["epoch"], state["batch_index"], state["step"]
        self._epoch_sums = dict(state["epoch_sums"])
        self._epoch_count = state["epoch_count"]
        self.best, self.metrics, self.history = state["best"], dict(state["metrics"]), list(state["history"])
        if state["world_size"] == self.world_size:
            self._pending_rng = state["rng"][self.rank]
            self._pending_epoch_rng = state["epoch_rng"][self.rank]
        else:  # generators of another world size cannot be mapped; continue reproducibly, not exactly
            seed_everything(self.seed + self.rank + 1_000_003 * self.step)
            self.log.write(
                "note",
                step=self.step,
                message=f"resumed on {self.world_size} ranks from a {state['world_size']}-rank run: not bit-exact",
            )
        self.resumed = True
        self.log.truncate_after(self.step)
        self.log.write("resume", epoch=self.epoch, batch=self.batch_index, step=self.step)

    def _save_best(self) -> Path:
        if getattr(self.model, "arch", None) is not None:
            from reidprune.models.serialization import save

            target = self.output_dir / BEST_DIR
            save(self.model, target, metadata={"epoch": self.epoch, **(self.best or {})})
            return target
        target = self.output_dir / BEST_WEIGHTS
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in self.model.state_dict().items()}
        with temporary_file(target) as tmp:
            save_file(tensors, str(tmp))
        return target

    def _save_snapshot(self) -> Path:
        """train.save_every: the model after `self.epoch` epochs in output_dir/epoch_{epoch}/. A callback
        with `snapshot(model)` gives the form to keep (soft pruning: its selection set to zero)."""
        from reidprune.models.serialization import save

        model = self.model
        for cb in self.callbacks:
            if hasattr(cb, "snapshot"):
                model = cb.snapshot(model)
        return save(model, self.output_dir / f"epoch_{self.epoch}", metadata={"epochs": self.epoch})

    @property
    def best_path(self) -> Path | None:
        if self.best is None:
            return None
        if getattr(self.model, "arch", None) is not None:
            return self.output_dir / BEST_DIR
        return self.output_dir / BEST_WEIGHTS

    # ------------------------------------------------------------------ validation
    def validation_kind(self) -> str | None:
        if _get(self.loaders, "val_query") is not None and _get(self.loaders, "val_gallery") is not None:
            return "reid"
        if _get(self.loaders, "val") is not None:
            return "classification"
        return None

    def metric_name(self) -> str | None:
        kind = self.validation_kind()
        if kind is None:
            return None
        if self.cfg.select_metric != "auto":
            return self.cfg.select_metric
        return "mAP" if kind == "reid" else "top1"

    def validate(self) -> dict[str, float]:
        """Metrics on the held-out validation split (percent); {} without one. Same on every rank."""
        kind = self.validation_kind()
        if kind is None:
            return {}
        was_training = self.model.training
        self.model.eval()
        try:
            if kind == "reid":
                from reidprune.evaluate.config import EvalConfig

                metrics = validate_reid(
                    self.model,
                    _get(self.loaders, "val_query"),
                    _get(self.loaders, "val_gallery"),
                    self.eval_cfg or EvalConfig(),
                )
            else:
                metrics = validate_classification(self.model, _get(self.loaders, "val"))
        finally:
            self.model.train(was_training)
        name = self.metric_name()
        if name not in metrics:
            raise TrainingError(
                f"train.select_metric='{name}' is not among the validation metrics {sorted(metrics)}"
            )
        return {k: v for k, v in metrics.items() if isinstance(v, int | float)}

    # ------------------------------------------------------------------ the loop
    def run(self, resume: bool | str | Path = False) -> FitResult:
        self._setup(resume)
        cfg = self.cfg
        if cfg.save_every > 0 and getattr(self.model, "arch", None) is None:
            raise TrainingError("train.save_every saves reidprune model folders: the model needs an .arch")
        if not self.resumed:
            self.log.write(
                "start",
                step=0,
                epochs=cfg.epochs,
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
                    for i, g in enumerate(self.optimizer.param_groups)  # type: ignore[union-attr]
                ],
            )
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

    def _epoch_iterator(self, loader: Any) -> Iterator[Any]:
        """Position the loader at (epoch, batch_index), create its iterator, restore the generators."""
        start = self.batch_index
        targets = _position_targets(loader)
        for obj in targets:
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(self.epoch)
        starter = next((obj for obj in targets if hasattr(obj, "set_start")), None)
        if starter is not None:
            starter.set_start(start)
        if self._pending_rng is not None and start == 0:
            # checkpoint at an epoch boundary: its generators are those at the start of this epoch
            ckpt.set_rng_state(self._pending_rng)
            self._pending_rng = None
        replay = start > 0 and starter is None
        if replay and self._pending_epoch_rng is not None:
            ckpt.set_rng_state(self._pending_epoch_rng)
        self._epoch_rng = ckpt.rng_state() if start == 0 or replay else self._pending_epoch_rng
        iterator = iter(loader)
        if replay:
            for _ in range(start):
                next(iterator)
            self.log.write("note", step=self.step, message=f"replayed {start} batches to resume mid-epoch")
        if self._pending_rng is not None:
            ckpt.set_rng_state(self._pending_rng)
            self._pending_rng = None
        self._pending_epoch_rng = None
        return iterator

    def _train_epoch(self) -> None:
        loader = self._train_loader()
        self.model.train()
        iterator = self._epoch_iterator(loader)
        self._progress.start_epoch(
            self.epoch, self.cfg.epochs, self.steps_per_epoch, completed=self.batch_index
        )
        window: dict[str, float] = {}
        window_steps, window_images, window_start = 0, 0, time.perf_counter()
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
            values, lr, grad_norm = self._train_step(batch)
            images = int(batch["image"].shape[0]) * self.world_size
            self.batch_index += 1
            self.step += 1
            for cb in self.callbacks:
                cb.on_step_end(self)
            for name, value in values.items():
                window[name] = window.get(name, 0.0) + value
                self._epoch_sums[name] = self._epoch_sums.get(name, 0.0) + value
            self._epoch_count += 1
            window_steps += 1
            window_images += images
            self._progress.advance(values["loss"], images / max(time.perf_counter() - tic, 1e-9))
            last = self.batch_index == self.steps_per_epoch
            if self.cfg.log_every > 0 and (self.step % self.cfg.log_every == 0 or last):
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                record = {k: v / window_steps for k, v in window.items()}
                if grad_norm is not None:
                    record["grad_norm"] = grad_norm
                self.log.write(
                    "step",
                    epoch=self.epoch,
                    step=self.step,
                    batch=self.batch_index,
                    lr=lr,
                    images_per_s=window_images / elapsed,
                    **record,
                )
                window, window_steps, window_images, window_start = {}, 0, 0, time.perf_counter()
            if self.cfg.checkpoint_every_steps > 0 and self.step % self.cfg.checkpoint_every_steps == 0:
                self.save_checkpoint()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _train_step(self, batch: Mapping[str, Tensor]) -> tuple[dict[str, float], float, float | None]:
        """One optimiser step. Returns (loss terms averaged over ranks, lr used, grad norm or None)."""
        assert self.optimizer is not None and self.scheduler is not None and self.scaler is not None
        images = batch["image"].to(self.device, non_blocking=True)
        labels = batch["label"].to(self.device, non_blocking=True)
        camids = batch.get("camid")
        camids = camids.to(self.device, non_blocking=True) if camids is not None else None
        if self.mixup is not None:  # labels become (B, C) soft targets
            images, labels = mix_batch(self.mixup, images, labels)
        lr = float(self.optimizer.param_groups[0]["lr"])
        with self._autocast():
            output = self.train_model(images, camids=camids)
            if not isinstance(output, ModelOutput):
                raise TrainingError(
                    f"{type(self.model).__name__} returned {type(output).__name__}, not ModelOutput"
                )
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
                f"non-finite loss at step {self.step + 1} (epoch {self.epoch}, batch {self.batch_index}): "
                f"term '{term}' = {values[term]}; last lr = {lr:.3g}. Lower train.lr, enable train.grad_clip, "
                "or check the data"
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
        return values, lr, grad_norm

    def _finish_epoch(self) -> None:
        cfg = self.cfg
        finished = self.epoch
        broadcast_buffers(self.model)
        for cb in self.callbacks:
            cb.on_epoch_end(self, finished)
        last = finished + 1 == cfg.epochs
        record: dict[str, Any] = {
            "epoch": finished,
            "step": self.step,
            "lr": float(self.optimizer.param_groups[0]["lr"]),  # type: ignore[union-attr]
            **{k: v / max(self._epoch_count, 1) for k, v in self._epoch_sums.items()},
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
                        self._save_best()
                    record["best"] = True
                self.log.write("val", epoch=finished, step=self.step, **metrics)
                self.model.train()
        self.history.append(record)
        self.log.write("epoch", **record)
        self._progress.note(
            f"epoch {finished + 1}/{cfg.epochs}: loss {record.get('loss', float('nan')):.4f}"
            + (
                f", val {self.metric_name()} {self.metrics[self.metric_name()]:.2f}"
                if "val" in record
                else ""
            )
        )
        self.epoch, self.batch_index = finished + 1, 0
        self._epoch_sums, self._epoch_count = {}, 0
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
