"""Multiply-accumulate counts with torch's FlopCounterMode on the real input shape.

Whatever the model computes in eval mode is counted (reduced token counts, pruned heads and
channels, merge matrices): FlopCounterMode sees every matmul, convolution and attention kernel.
It does not count element-wise work (softmax, LayerNorm, GELU, adds). GMACs = FLOPs / 2 / 1e9, as
the papers' "FLOPs" are multiply-accumulates.

"Blocks" are the repeated units the seeds' analytic counters cover: transformer blocks
(modules named ``blocks.N``, and TransReID's last-block branches ``b1`` / ``b2``) and, for CNNs,
the residual stages (``layerN``). Patch embedding / stem, heads and necks are outside them.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from reidprune.evaluate.forward import forward_model, model_device, model_dtype, model_input_size

BLOCK_NAME = re.compile(r"(?:^|\.)(?:blocks\.\d+|b1|b2|layer\d+)$")


def block_names(model: nn.Module) -> list[str]:
    """Names of the outermost modules that count as blocks, in module order."""
    names = []
    for name, _ in model.named_modules():
        if BLOCK_NAME.search(name) and not any(name.startswith(outer + ".") for outer in names):
            names.append(name)
    return names


def count_gmacs(
    model: nn.Module, input_size: tuple[int, int] | None = None, batch: int = 1
) -> dict[str, Any]:
    """GMACs per image of one eval-mode forward pass on a random (batch, 3, H, W) input.

    input_size: (H, W); default `model.arch.img_size`. The input is created on the model's device
    and dtype; a model built on the "meta" device is counted without computing anything (only
    for models whose control flow does not depend on values). Camera ids are zeros for models
    with a camera embedding.
    Returns {"gmacs", "blocks_gmacs", "per_block": [{"name", "gmacs"}], "input_size", "batch"}.
    """
    height, width = input_size if input_size is not None else model_input_size(model)
    device = model_device(model)
    images = torch.randn(batch, 3, height, width, device=device, dtype=model_dtype(model))
    camids = torch.zeros(batch, dtype=torch.long, device=device)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), counter:
            forward_model(model, images, camids)
    finally:
        model.train(was_training)
    by_module = counter.get_flop_counts()
    root = type(model).__name__

    def gmacs_of(name: str) -> float:
        ops = by_module.get(f"{root}.{name}", {})
        return sum(ops.values()) / 2 / batch / 1e9

    per_block = [{"name": name, "gmacs": gmacs_of(name)} for name in block_names(model)]
    return {
        "gmacs": counter.get_total_flops() / 2 / batch / 1e9,
        "blocks_gmacs": sum(b["gmacs"] for b in per_block),
        "per_block": per_block,
        "input_size": [int(height), int(width)],
        "batch": batch,
    }
