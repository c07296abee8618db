"""Calling an arbitrary model the way reidprune models are called, and reading what it returns
(used by evaluate, measure, export and the feature extractor).

Every reidprune model takes ``forward(images, camids=None)`` and returns a `ModelOutput`; a plain
``nn.Module`` returning a tensor works too, so that evaluation and measurement stay generic.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

from reidprune.data.config import DataConfig, requested_size
from reidprune.errors import ConfigError
from reidprune.models.output import ModelOutput


def uses_cameras(model: nn.Module) -> bool:
    """True when the model's architecture has a camera embedding (TransReID SIE) that needs camids."""
    return int(getattr(getattr(model, "arch", None), "num_cameras", 0) or 0) > 0


def model_input_size(model: nn.Module) -> tuple[int, int]:
    """(H, W) the model was built for (`model.arch.img_size`); raises when the model does not say."""
    size = getattr(getattr(model, "arch", None), "img_size", None)
    if size is None:
        raise ValueError(f"{type(model).__name__} has no arch.img_size; pass input_size=(H, W) explicitly")
    return int(size[0]), int(size[1])


def takes_any_input_size(model: nn.Module) -> bool:
    """False for models built for one input size only: a ViT's position embedding fixes its token
    grid. CNNs pool globally and take other sizes."""
    from reidprune.models.vit import PatchEmbed

    return not any(isinstance(module, PatchEmbed) for module in model.modules())


def input_size_for(model: nn.Module, requested: tuple[int, int] | None, setting: str) -> tuple[int, int]:
    """(H, W) to feed `model`: `requested` (the user's `setting`, e.g. "--input-size") when given,
    else the model's own size. Raises ConfigError when the model cannot take `requested`."""
    if requested is None:
        return model_input_size(model)
    requested = (int(requested[0]), int(requested[1]))
    if not takes_any_input_size(model):
        own = model_input_size(model)
        if requested != own:
            raise ConfigError(
                f"{setting} {requested[0]}x{requested[1]}: the model takes only its own input size "
                f"{own[0]}x{own[1]} (its position embedding is fixed); drop the setting to use "
                f"{own[0]}x{own[1]}"
            )
    return requested


def use_model_input_size(data: DataConfig, model: nn.Module) -> tuple[int, int]:
    """Set `data.height` / `data.width` to the size the model is fed: the config's when it sets one
    the model takes, else the model's own (arch.img_size). Returns (H, W)."""
    height, width = input_size_for(model, requested_size(data), "data.height x data.width")
    data.height, data.width = height, width
    return height, width


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model without either."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32


def forward_model(model: nn.Module, images: Tensor, camids: Tensor | None = None) -> Any:
    """Run the model, passing camids only to models whose architecture uses cameras."""
    if uses_cameras(model):
        if camids is None:
            camids = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
        return model(images, camids=camids.to(images.device))
    return model(images)


def embedding_of(output: Any) -> Tensor:
    """(B, D) retrieval vector of a forward pass: `ModelOutput.embedding`, or the tensor itself."""
    if isinstance(output, ModelOutput):
        return output.embedding
    if isinstance(output, Tensor):
        return output
    raise TypeError(f"expected the model to return a ModelOutput or a Tensor, got {type(output).__name__}")


def logits_of(output: Any) -> Tensor:
    """(B, C) classification logits: the first classifier of a ModelOutput, or the tensor itself."""
    if isinstance(output, ModelOutput):
        if not output.logits:
            raise ValueError(
                "the model returned no logits in eval mode; classification evaluation needs a classifier "
                "head (a re-ID model returns only its embedding at test time)"
            )
        return output.logits[0]
    if isinstance(output, Tensor):
        return output
    raise TypeError(f"expected the model to return a ModelOutput or a Tensor, got {type(output).__name__}")


def autocast_for(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when `amp`; a no-op elsewhere (on CPUs it is slower and changes results)."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
