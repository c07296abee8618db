"""Model section of the experiment config: which registry entry, and which weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ModelConfig:
    name: str = "vit_tiny_reid"  # a name from `reidprune models list`
    # extra constructor arguments for the registry entry (e.g. {"stride": 12, "sie_cameras": 6})
    kwargs: dict[str, Any] = field(default_factory=dict)
    # a foreign .pth (timm, DeiT, TransReID, LA-Transformer, AMG, PM-ViT, BAFD, torchvision) or a
    # reidprune model directory (model.json + weights.safetensors); "" = random initialisation
    weights: str = ""
    strict: bool = True  # a missing or unexpected key is an error, not a warning
    # a saved foreign model (model.weights, train.teacher) whose base is a user's own
    # "package.module:factory" imports that module, i.e. runs its code: only for code you trust
    allow_import: bool = False
