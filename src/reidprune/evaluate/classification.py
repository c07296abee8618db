"""Top-k accuracy of classification models (ImageFolder validation sets)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from reidprune.errors import DataError
from reidprune.models.forward import autocast_for, forward_model, logits_of, model_device


@torch.inference_mode()
def evaluate_classification(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    device: str | torch.device | None = None,
    amp: bool | None = None,
) -> dict[str, float]:
    """Top-1 / top-5 accuracy in percent over `loader` (batches with ``image`` and ``label``).

    Uses the first classifier's logits (`ModelOutput.logits[0]`, or the returned tensor) in eval
    mode. With fewer than 5 classes, top-5 counts every prediction as a hit. The model's
    train/eval mode is restored afterwards.
    """
    device = torch.device(device) if device is not None else model_device(model)
    model.to(device)
    amp = (device.type == "cuda") if amp is None else amp
    was_training = model.training
    model.eval()
    correct1 = correct5 = total = 0
    try:
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            labels = batch["label"].to(device, non_blocking=True).reshape(-1)
            with autocast_for(device, amp):
                logits = logits_of(forward_model(model, images, batch.get("camid"))).float()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            hits = top == labels.unsqueeze(1)
            correct1 += int(hits[:, 0].sum())
            correct5 += int(hits.any(dim=1).sum())
            total += labels.numel()
    finally:
        model.train(was_training)
    if total == 0:
        raise DataError("the classification loader yielded no images")
    return {"top1": 100.0 * correct1 / total, "top5": 100.0 * correct5 / total, "num_images": total}
