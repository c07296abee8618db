"""Exact resume: what a training checkpoint holds, and how a run continues from it bit for bit.

    state = capture(engine)              # collective under DDP: gathers every rank's generators
    restore(engine, state, where=path)   # once the model, optimiser, scheduler and scaler exist

A checkpoint holds the weights and architecture, optimiser / scheduler / grad-scaler state, the
data position (epoch, next batch), the callbacks' state, the best result so far and every random
generator. The generators come back at the start of the next epoch (`Generators.epoch_iterator`):
the loader's iterator is created first (it draws its worker seed from the global generator, as in
the uninterrupted run), then the saved states are restored. Samplers that provide
`set_start(batch_index)` (reidprune's) jump to the batch; for any other loader the epoch is
replayed from its saved start-of-epoch generator state and the finished batches are skipped, which
reproduces shuffling and augmentation drawn from torch's generators exactly (slower: the skipped
batches are loaded again).

The file itself (atomic write, weights_only read, generator capture) is `checkpoint.py`'s job.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from reidprune.errors import TrainingError
from reidprune.models.checkpoint_io import CheckpointError, load_state_dict_checked
from reidprune.train.checkpoint import rng_state, seed_everything, set_rng_state
from reidprune.train.config import TrainConfig
from reidprune.train.distributed import all_gather_objects
from reidprune.train.log import JsonlLog

if TYPE_CHECKING:
    from reidprune.train.engine import Engine

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


def resume_path(resume: bool | str | Path | None, default: Path, log: JsonlLog) -> Path | None:
    """The checkpoint `fit(resume=...)` asks for; None to start fresh (resume=True without a checkpoint)."""
    if resume is False or resume is None:
        return None
    path = default if resume is True else Path(resume)
    if resume is True and not path.is_file():
        log.write("note", step=0, message=f"no checkpoint at {path}; starting from scratch")
        return None
    return path


def arch_json(model: nn.Module) -> str | None:
    arch = getattr(model, "arch", None)
    if arch is None:
        return None
    from reidprune.models.registry import arch_to_dict

    return json.dumps(arch_to_dict(arch), sort_keys=True)


def adopt_architecture(model: nn.Module, state: dict[str, Any], optimizer_given: bool) -> nn.Module:
    """`model`, or a model rebuilt from the checkpoint when its architecture differs (a pruned model
    resumes as itself, whatever the caller built)."""
    saved = state.get("arch")
    if saved is None or saved == arch_json(model):
        return model
    if optimizer_given:
        raise TrainingError(
            "the checkpoint holds a different architecture than the model passed in, so the given "
            "optimiser cannot be used; pass optimizer=None to resume"
        )
    from reidprune.models.plan import CompressionPlan
    from reidprune.models.registry import build

    rebuilt = build(json.loads(saved))
    if state.get("plan"):
        rebuilt.compression_plan = CompressionPlan.from_dict(json.loads(state["plan"]))  # type: ignore[assignment]
    return rebuilt


def check_same_settings(cfg: TrainConfig, saved: dict[str, Any], where: str) -> None:
    """Resuming with other training settings would not continue the same run; say which differ."""
    current = dataclasses.asdict(cfg)
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


def position_targets(loader: Any) -> list[Any]:
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


class Generators:
    """The random generators' part of resume, for this rank.

    `epoch_start` is their state when the running epoch's iterator was created (saved, so that a
    loader without `set_start` can replay the epoch); a restored checkpoint's states wait in
    `_saved` / `_saved_epoch` until the next `epoch_iterator`.
    """

    def __init__(self) -> None:
        self.epoch_start: dict[str, Any] | None = None
        self._saved: dict[str, Any] | None = None
        self._saved_epoch: dict[str, Any] | None = None

    def state(self) -> dict[str, Any]:
        """Every rank's generators now and at the epoch start (collective under DDP)."""
        return {"rng": all_gather_objects(rng_state()), "epoch_rng": all_gather_objects(self.epoch_start)}

    def restore_later(self, rng: dict[str, Any], epoch_rng: dict[str, Any] | None) -> None:
        self._saved, self._saved_epoch = rng, epoch_rng

    def epoch_iterator(self, loader: Any, epoch: int, start: int, log: JsonlLog, step: int) -> Iterator[Any]:
        """Position the loader at (epoch, batch `start`), create its iterator, restore the generators."""
        targets = position_targets(loader)
        for obj in targets:
            if hasattr(obj, "set_epoch"):
                obj.set_epoch(epoch)
        starter = next((obj for obj in targets if hasattr(obj, "set_start")), None)
        if starter is not None:
            starter.set_start(start)
        if self._saved is not None and start == 0:
            # checkpoint at an epoch boundary: its generators are those at the start of this epoch
            set_rng_state(self._saved)
            self._saved = None
        replay = start > 0 and starter is None
        if replay and self._saved_epoch is not None:
            set_rng_state(self._saved_epoch)
        self.epoch_start = rng_state() if start == 0 or replay else self._saved_epoch
        iterator = iter(loader)
        if replay:
            for _ in range(start):
                next(iterator)
            log.write("note", step=step, message=f"replayed {start} batches to resume mid-epoch")
        if self._saved is not None:
            set_rng_state(self._saved)
            self._saved = None
        self._saved_epoch = None
        return iterator


def capture(engine: Engine) -> dict[str, Any]:
    """Everything a resume needs; collective under DDP (gathers every rank's generators)."""
    assert engine.optimizer is not None and engine.scheduler is not None and engine.scaler is not None
    model = engine.model
    plan = getattr(model, "compression_plan", None)
    return {
        "arch": arch_json(model),
        "plan": json.dumps(plan.to_dict()) if plan is not None else None,
        "model": model.state_dict(),
        "optimizer": engine.optimizer.state_dict(),
        "scheduler": engine.scheduler.state_dict(),
        "scaler": engine.scaler.state_dict(),
        **engine.generators.state(),
        "epoch": engine.epoch,
        "batch_index": engine.batch_index,
        "step": engine.step,
        **engine.losses.state_dict(),
        "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else {} for cb in engine.callbacks],
        "best": engine.best,
        "metrics": engine.metrics,
        "history": engine.history,
        "world_size": engine.world_size,
        "seed": engine.seed,
        "train_config": dataclasses.asdict(engine.cfg),
    }


def restore(engine: Engine, state: dict[str, Any], where: str) -> None:
    """Put a `capture`d state back into `engine` (its model already has the saved architecture)."""
    assert engine.optimizer is not None and engine.scheduler is not None and engine.scaler is not None
    check_same_settings(engine.cfg, state["train_config"], where)
    load_state_dict_checked(engine.model, state["model"], strict=True, where=where)
    try:
        engine.optimizer.load_state_dict(state["optimizer"])
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{where}: optimiser state does not fit this optimiser ({err})") from None
    engine.scheduler.load_state_dict(state["scheduler"])
    if state["scaler"]:
        engine.scaler.load_state_dict(state["scaler"])
    saved_callbacks = state["callbacks"]
    if len(saved_callbacks) != len(engine.callbacks):
        raise CheckpointError(
            f"{where}: saved with {len(saved_callbacks)} callback(s), resumed with {len(engine.callbacks)}"
        )
    for cb, cb_state in zip(engine.callbacks, saved_callbacks, strict=True):
        if hasattr(cb, "load_state_dict"):
            cb.load_state_dict(cb_state)
    engine.epoch, engine.batch_index, engine.step = state["epoch"], state["batch_index"], state["step"]
    engine.losses.load_state_dict(state)
    engine.best, engine.metrics = state["best"], dict(state["metrics"])
    engine.history = list(state["history"])
    if state["world_size"] == engine.world_size:
        engine.generators.restore_later(state["rng"][engine.rank], state["epoch_rng"][engine.rank])
    else:  # generators of another world size cannot be mapped; continue reproducibly, not exactly
        seed_everything(engine.seed + engine.rank + 1_000_003 * engine.step)
        engine.log.write(
            "note",
            step=engine.step,
            message=f"resumed on {engine.world_size} ranks from a {state['world_size']}-rank run: not bit-exact",
        )
    engine.resumed = True
    engine.log.truncate_after(engine.step)
    engine.log.write("resume", epoch=engine.epoch, batch=engine.batch_index, step=engine.step)
