"""Which convs of a ResNet filter pruning acts on, and how a filter is zeroed or decayed.

Scopes:
- "internal" (default): the convs inside each residual block whose outputs stay inside the
  block (BasicBlock conv1; Bottleneck conv1 and conv2). Block output widths are untouched, so
  the physically smaller network needs no scatter into the residual stream.
- "bafd": every conv the BAFD seed masks: the internal convs, each block's last conv (its
  removed outputs stop contributing to those residual channels, which keep their width), and
  the stem when layer1.0 has a projection shortcut (ResNet-50). Downsample convs never.

Pruning a filter always acts on the conv slice AND the following BatchNorm's gamma and beta:
with gamma = beta = 0 the channel's BN output is exactly 0 in eval mode, which is what makes
the later physical removal exact. BN running statistics are left alone.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from reidprune.errors import CompressionError
from reidprune.models.resnet import (
    ResNet,
    block_names,
    internal_conv_names,
    last_conv_name,
    stem_prunable,
)

SCOPES = ("internal", "bafd")


@dataclass(frozen=True)
class ConvTarget:
    """A prunable conv: its module name, its BatchNorm's name, its block ("" for the stem) and role.

    groups: the conv's filters form this many equal slices that lose the same positions (a grouped
    conv reads them, or the conv is grouped itself; see criteria.select_in_slices); 1 = any filters.
    """

    conv: str
    bn: str
    block: str
    role: str  # "stem" | "internal" | "branch" (last conv of a block)
    groups: int = 1


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DataParallel / DistributedDataParallel wrapper."""
    if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
        return model.module
    return model


def require_resnet(model: nn.Module) -> ResNet:
    model = unwrap(model)
    if not isinstance(model, ResNet):
        raise CompressionError(
            f"filter pruning needs a reidprune ResNet (family 'resnet'), got {type(model).__name__}"
        )
    return model


def prunable_convs(model: nn.Module, scope: str = "internal") -> list[ConvTarget]:
    """The convs pruned under `scope`, in forward order."""
    if scope not in SCOPES:
        raise CompressionError(f"filter pruning scope '{scope}': expected one of {list(SCOPES)}")
    arch = require_resnet(model).arch
    targets = []
    if scope == "bafd" and stem_prunable(arch):
        targets.append(ConvTarget("conv1", "bn1", "", "stem"))
    for block in block_names(arch):
        for conv in internal_conv_names(arch):
            targets.append(ConvTarget(f"{block}.{conv}", f"{block}.bn{conv[-1]}", block, "internal"))
        if scope == "bafd":
            conv = last_conv_name(arch)
            targets.append(ConvTarget(f"{block}.{conv}", f"{block}.bn{conv[-1]}", block, "branch"))
    return targets


def input_sources(model: nn.Module) -> dict[str, str]:
    """conv name -> the conv whose outputs it reads, for the convs whose inputs pruning slices: the
    later convs of each block, and (when the stem is pruned) layer1.0's conv1 and projection."""
    arch = require_resnet(model).arch
    source = {"layer1.0.conv1": "conv1", "layer1.0.downsample.0": "conv1"}
    for block in block_names(arch):
        convs = [*internal_conv_names(arch), last_conv_name(arch)]
        for before, after in itertools.pairwise(convs):
            source[f"{block}.{after}"] = f"{block}.{before}"
    return source


def conv_weight(model: nn.Module, target: ConvTarget) -> Tensor:
    return unwrap(model).get_submodule(target.conv).weight


@torch.no_grad()
def scale_filters(
    model: nn.Module, target: ConvTarget, index: Tensor, factor: float, with_bn: bool = True
) -> None:
    """Multiply the conv slices W[index] (and BN gamma[index], beta[index]) by `factor` in place."""
    if index.numel() == 0:
        return
    model = unwrap(model)
    conv, bn = model.get_submodule(target.conv), model.get_submodule(target.bn)
    params = (conv.weight, bn.weight, bn.bias) if with_bn else (conv.weight,)
    for param in params:
        idx = index.to(param.device)
        if factor == 0.0:
            param.index_fill_(0, idx, 0.0)  # exact zeros, also for inf/nan entries
        else:
            param[idx] = param[idx] * factor


def zero_filters(model: nn.Module, target: ConvTarget, index: Tensor) -> None:
    scale_filters(model, target, index, 0.0)
