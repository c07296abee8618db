"""The one object every reidprune model returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class ModelOutput:
    """What a forward pass produced.

    embedding: (B, D) the retrieval feature (re-ID) or pre-logits feature (classification).
      In eval mode this is the exact vector used for ranking (after the neck, concatenated parts).
    logits: one (B, C) tensor per classifier head (LA-Transformer has 14, TransReID with JPM 5).
      Filled in training mode; in eval mode only for classification models (ImageFolder top-1).
    features: one (B, D_i) tensor per head, before any BNNeck: what triplet and embedding
      distillation losses use. Filled in training mode.
    """

    embedding: Tensor
    logits: list[Tensor] = field(default_factory=list)
    features: list[Tensor] = field(default_factory=list)
