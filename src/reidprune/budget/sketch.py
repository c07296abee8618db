"""What a compression plan changes in a model: the input of every cost model.

A sketch holds only the numbers the search varies; everything else about the model (embedding
width, head dim, MLP width, input size, stem, necks) is fixed when the cost model is built from
the dense model (`GmacsCostModel.for_model`, or the runtime latency model).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VitSketch:
    """Per backbone block of a ViT (one entry per `backbone.blocks[i]`).

    method: how tokens are reduced: "amg" (static masks), "topk" (EViT drops) or "tome" (merges).
    tokens: tokens entering the block, prefix (CLS) included. AMG never drops tokens from the
      sequence, so this stays p + P everywhere; top-k / ToMe: what earlier blocks left.
    kept: AMG mode "kv": tokens projected to keys / values (every token stays a query and goes
      through the MLP); mode "skip": tokens that go through the block at all. top-k / ToMe: tokens
      left after the block's attention, which go through its MLP and enter the next block (kept <
      tokens: the block runs a reducer). Prefix included.
    heads: attention heads of the block. mode: AMG's token mode (ignored by top-k / ToMe).
    """

    tokens: tuple[int, ...]
    kept: tuple[int, ...]
    heads: tuple[int, ...]
    mode: str = "kv"
    method: str = "amg"

    family = "vit"


@dataclass(frozen=True)
class CnnSketch:
    """Per residual block of a ResNet (layer1.0, layer1.1, ..., layer4.N): the widths of its
    internal convs (BasicBlock: conv1; Bottleneck: conv1, conv2). Block output widths never change."""

    widths: tuple[tuple[int, ...], ...]

    family = "cnn"


Sketch = VitSketch | CnnSketch
