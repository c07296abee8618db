"""The zero-filter (masked) full-size model of an extracted ResNet: the inverse of extraction.

The BAFD seed saves its pruned models at full size with the pruned filters set to zero (net_last.pth)
and extracts the small model only at test time; some tools expect that form. `masked_model` puts a
small model's weights back into the architecture it was extracted from:
- kept filters (and their BN entries) at their original positions, as recorded in the plan's
  "layers" ({conv: {"filters": n, "kept": [...]}}, indices into the full model's channels);
- removed filters: conv slice, BN gamma and beta zero (running mean 0, running var 1), so the
  channel outputs exactly zero, as in the seed's files;
- the input columns of a conv that read removed channels: zero (they multiply zeros anyway).
The result gives the small model's outputs; `check=True` verifies that numerically.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from reidprune.compress.filters.extraction import check_same_outputs, copy_model
from reidprune.compress.filters.targets import input_sources
from reidprune.errors import CompressionError
from reidprune.models.checkpoint_io import load_state_dict_checked
from reidprune.models.plan import CompressionPlan
from reidprune.models.resnet import ResNet


def _conv_of(module: str) -> str:
    """The conv whose output channels a module's tensors follow: bn2 -> conv2, downsample.1 -> .0."""
    module = re.sub(r"(^|\.)bn(\d)$", r"\1conv\2", module)
    return re.sub(r"downsample\.1$", "downsample.0", module)


def masked_model(full: nn.Module, small: nn.Module, plan: CompressionPlan, check: bool = True) -> ResNet:
    """`small` (extracted from `full` with `plan`) at `full`'s size, the removed filters zero.

    full: the model before extraction; only its architecture is used. Returns a new model carrying
    `plan`; neither input is changed.
    """
    masked = copy_model(full)
    layers = plan.details.get("layers")
    if not isinstance(layers, dict):
        raise CompressionError(
            f"plan of method {plan.method} lists no kept filters: not a filter-pruned model"
        )
    kept = {name: torch.tensor(entry["kept"], dtype=torch.long) for name, entry in layers.items()}
    inputs = input_sources(masked)
    small_state = small.state_dict()
    state: dict[str, Tensor] = {}
    for key, like in masked.state_dict().items():
        value = small_state[key].detach()
        if value.shape == like.shape:
            state[key] = value.clone()
            continue
        module, _, leaf = key.rpartition(".")
        conv = _conv_of(module)
        filled = torch.ones_like(like) if leaf == "running_var" else torch.zeros_like(like)
        rows = _index(kept, conv, value.shape[0], like.shape[0], key).to(like.device)
        if like.dim() == 4:  # conv weight: outputs and inputs may both be sliced
            cols = _index(kept, inputs.get(conv, ""), value.shape[1], like.shape[1], key).to(like.device)
            filled[rows[:, None], cols[None, :]] = value
        else:
            filled[rows] = value
        state[key] = filled
    load_state_dict_checked(masked, state, strict=True, where="masked ResNet state")
    masked.compression_plan = plan  # type: ignore[assignment]
    if check:
        check_same_outputs(masked, small)
    return masked


def _index(kept: dict[str, Tensor], conv: str, size: int, full: int, key: str) -> Tensor:
    if size == full:
        return torch.arange(full)
    if conv not in kept or len(kept[conv]) != size:
        raise CompressionError(
            f"{key}: {size} of {full} channels, but the plan records no matching kept filters for '{conv}'"
        )
    return kept[conv]
