"""Small ResNets (tiny_models.tiny_resnet) and a minimal training loop for the filter-pruning tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tiny_models import tiny_resnet

__all__ = ["FakeEngine", "tiny_resnet", "train_epochs"]


@dataclass
class FakeEngine:
    """What a callback may read from the training engine: the model and the epoch."""

    model: nn.Module
    epoch: int = 0
    callbacks: list[Any] = field(default_factory=list)


def train_epochs(engine: FakeEngine, epochs: int, steps: int = 2, seed: int = 0) -> None:
    """A deterministic SGD loop that calls the callback hooks in engine order.

    The data of epoch e depends only on (seed, e), so a run resumed at epoch e sees what an
    uninterrupted run sees; plain SGD has no optimiser state to resume.
    """
    model = engine.model
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    h, w = model.arch.img_size
    model.train()
    for cb in engine.callbacks:
        cb.on_train_start(engine)
    start = engine.epoch
    for epoch in range(start, start + epochs):
        engine.epoch = epoch
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        for _ in range(steps):
            images = torch.randn(4, 3, h, w, generator=g)
            labels = torch.randint(0, model.arch.num_classes, (4,), generator=g)
            out = model(images)
            loss = nn.functional.cross_entropy(out.logits[0], labels) + out.features[0].pow(2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            for cb in engine.callbacks:
                cb.on_step_end(engine)
        for cb in engine.callbacks:
            cb.on_epoch_end(engine, epoch)
        engine.epoch = epoch + 1
