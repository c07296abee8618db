"""Multiply-accumulate counts with torch's FlopCounterMode on the real input shape.

Whatever the model computes in eval mode is counted (reduced token counts, pruned heads and
channels, merge matrices): FlopCounterMode sees every matmul, convolution and attention kernel.
It does not count element-wise work (softmax, LayerNorm, GELU, adds). GMACs = FLOPs / 2 / 1e9, as
the papers' "FLOPs" are multiply-accumulates.

Attention is counted the same whichever kernel `F.scaled_dot_product_attention` dispatches to
(math, CPU flash, CUDA flash / memory-efficient / cuDNN, MPS, fused backends): torch's counter has
no formula for some of them (torch 2.14 counts the CPU flash kernel, its usual choice on CPU, as
zero), so every variant gets `attention_flops` through `custom_mapping`. The meta device takes the
math path, so a meta count always agreed with the formula; a CPU count did not.

"Blocks" are the repeated units the seeds' analytic counters cover: transformer blocks
(modules named ``blocks.N``, and TransReID's last-block branches ``b1`` / ``b2``) and, for CNNs,
the residual stages (``layerN``). Patch embedding / stem, heads and necks are outside them.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from reidprune.models.forward import forward_model, model_device, model_dtype, model_input_size

# Every scaled-dot-product attention op whose first three arguments are q (..., Nq, d), k (..., Nk, d),
# v (..., Nk, dv); missing ones (older torch) are skipped. The composite ones decompose into one of
# the others, or into matmuls, before they are counted, so nothing is counted twice.
ATTENTION_OPS = (
    "scaled_dot_product_attention",
    "_scaled_dot_product_attention_math",
    "_scaled_dot_product_attention_math_for_mps",
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_fused_attention_overrideable",
    "_triton_scaled_dot_attention",
)

BLOCK_NAME = re.compile(r"(?:^|\.)(?:blocks\.\d+|b1|b2|layer\d+)$")


def attention_flops(
    query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    """FLOPs of softmax(q k^T) v: the two products q k^T and (weights) v, 2 FLOPs per MAC.

    Shapes q (B, H, Nq, d), k (B, Hk, Nk, d), v (B, Hk, Nk, dv): Nk keys may be fewer than the Nq
    queries (AMG kv); grouped-query k / v heads are broadcast to the H query heads.
    """
    *batch_heads, queries, dim = query_shape
    keys, value_dim = key_shape[-2], value_shape[-1]
    return 2 * math.prod(batch_heads) * queries * keys * (dim + value_dim)


def attention_formulas() -> dict[Any, Any]:
    """`FlopCounterMode(custom_mapping=...)` entries: `attention_flops` for every op in ATTENTION_OPS."""
    ops = (getattr(torch.ops.aten, name, None) for name in ATTENTION_OPS)
    return {op: attention_flops for op in ops if op is not None}


def find_blocks(model: nn.Module) -> list[str]:
    """Names of the outermost modules that count as blocks (any model), in module order.

    Not `models.resnet.block_names`, which lists a ResNet arch's residual blocks without a model.
    """
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
    counter = FlopCounterMode(display=False, custom_mapping=attention_formulas())
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

    per_block = [{"name": name, "gmacs": gmacs_of(name)} for name in find_blocks(model)]
    return {
        "gmacs": counter.get_total_flops() / 2 / batch / 1e9,
        "blocks_gmacs": sum(b["gmacs"] for b in per_block),
        "per_block": per_block,
        "input_size": [int(height), int(width)],
        "batch": batch,
    }
