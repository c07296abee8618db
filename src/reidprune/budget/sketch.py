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

    tokens: tokens entering the block, CLS included (AMG static masks never drop tokens from the
      sequence, so this stays 1 + P everywhere).
    kept: mode "kv": tokens projected to keys / values (every token stays a query and goes through
      the MLP); mode "skip": tokens that go through the block at all. CLS included.
    heads: attention heads of the block.
    """

    tokens: tuple[int, ...]
    kept: tuple[int, ...]
    heads: tuple[int, ...]
    mode: str = "kv"

    family = "vit"


@dataclass(frozen=True)
class CnnSketch:
    """Per residual block of a ResNet (layer1.0, layer1.1, ..., layer4.N): the widths of its
    internal convs (BasicBlock: conv1; Bottleneck: conv1, conv2). Block output widths never change."""

    widths: tuple[tuple[int, ...], ...]

    family = "cnn"


Sketch = VitSketch | CnnSketch
