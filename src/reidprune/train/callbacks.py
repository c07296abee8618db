"""Hooks the training engine calls, so that compression methods can act during training.

Soft filter pruning (SFP, FPGM, BAFD) zeroes or decays filters after each epoch; iterative
schedules prune between rounds. They implement `Callback`; the engine calls every hook in order.
Callbacks that hold state implement `state_dict` / `load_state_dict`, so that resume is exact.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Callback(Protocol):
    def on_train_start(self, engine: Any) -> None: ...

    def on_step_end(self, engine: Any) -> None:
        """After the optimiser step (masks that must stay zero are re-applied here)."""

    def on_epoch_end(self, engine: Any, epoch: int) -> None:
        """After each epoch, before validation and the checkpoint of that epoch."""

    def on_train_end(self, engine: Any) -> None: ...


class BaseCallback:
    """No-op implementations; subclass and override what you need."""

    def on_train_start(self, engine: Any) -> None:
        pass

    def on_step_end(self, engine: Any) -> None:
        pass

    def on_epoch_end(self, engine: Any, epoch: int) -> None:
        pass

    def on_train_end(self, engine: Any) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
