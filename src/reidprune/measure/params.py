"""Parameter counts: total, and attention-only (the "MSA param" column of the AMG tables)."""

from __future__ import annotations

from torch import nn


def is_attention(module: nn.Module) -> bool:
    """Self-attention layers: reidprune's ViT `Attention`, torch's MultiheadAttention, and any
    module whose class name ends in "Attention" (timm, torchvision)."""
    return isinstance(module, nn.MultiheadAttention) or type(module).__name__.endswith("Attention")


def count_params(model: nn.Module) -> dict[str, int]:
    """{"params": all parameters, "attn_params": parameters inside attention layers}.

    Attention parameters are the q/k/v and output projections (weights and biases) of every
    attention layer. Buffers (token masks, index tables) are not parameters and are never counted;
    shared parameters are counted once.
    """
    params = sum(p.numel() for p in model.parameters())
    seen: dict[int, int] = {}
    for module in model.modules():
        if is_attention(module):
            for p in module.parameters():
                seen[id(p)] = p.numel()
    return {"params": int(params), "attn_params": int(sum(seen.values()))}
