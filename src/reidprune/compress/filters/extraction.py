"""Physically remove zero filters: a ResNet with masked channels -> the smaller ResNet.

A channel is *removable* when its BatchNorm output is identically zero in eval mode: beta = 0
and either gamma = 0 or (the conv slice is all zero and the running mean is 0). That is what
every filter-pruning method here leaves behind (conv slice, gamma and beta zeroed), and what a
BAFD checkpoint with zero filters holds.

Removal per conv kind (downsample convs are never touched, residual widths never change):
- internal conv of a block: its filters and BN entries are sliced, and so are the input
  channels of the next conv in the block;
- last conv of a block: its kept filters write only their residual channels
  (`ResNetArch.branch_channels`, added with index_add, BAFD-style);
- stem (only when layer1.0 has a projection): sliced, with the inputs of layer1.0.conv1 and
  layer1.0.downsample.0.

Every conv keeps at least one (zero) channel, so the architecture stays buildable. The result
is checked numerically against the masked model (eval mode, seeded random input) before it is
returned; a mismatch raises CompressionError.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from reidprune.compress.filters.targets import require_resnet, unwrap
from reidprune.errors import CompressionError
from reidprune.models.checkpoint_io import load_state_dict_checked
from reidprune.models.plan import CompressionPlan, plan_of
from reidprune.models.registry import build
from reidprune.models.resnet import (
    ResNet,
    ResNetArch,
    block_names,
    block_out_width,
    default_mid_widths,
    internal_conv_names,
    last_conv_name,
    resolved_branch_channels,
    resolved_mid_widths,
    stem_prunable,
)

BN_KEYS = ("weight", "bias", "running_mean", "running_var")


def removable_channels(state: dict[str, Tensor], conv: str, bn: str) -> Tensor:
    """(n,) bool: channels of `conv` whose BN output is exactly zero in eval mode."""
    weight = state[f"{conv}.weight"]
    gamma, beta, mean = state[f"{bn}.weight"], state[f"{bn}.bias"], state[f"{bn}.running_mean"]
    conv_zero = (weight.reshape(weight.shape[0], -1) == 0).all(1)
    return (beta == 0) & ((gamma == 0) | (conv_zero & (mean == 0)))


def _kept(state: dict[str, Tensor], conv: str, bn: str) -> Tensor:
    removable = removable_channels(state, conv, bn)
    kept = (~removable).nonzero().flatten()
    if kept.numel() == 0:  # keep one zero channel so the conv still exists
        kept = torch.zeros(1, dtype=torch.long)
    return kept


def _slice_out(state: dict[str, Tensor], conv: str, bn: str, kept: Tensor) -> None:
    state[f"{conv}.weight"] = state[f"{conv}.weight"][kept]
    for key in BN_KEYS:
        state[f"{bn}.{key}"] = state[f"{bn}.{key}"][kept]


def _slice_in(state: dict[str, Tensor], conv: str, kept: Tensor) -> None:
    state[f"{conv}.weight"] = state[f"{conv}.weight"][:, kept]


def plan_extraction(model: ResNet) -> tuple[ResNetArch, dict[str, Tensor], dict[str, dict[str, Any]]]:
    """The smaller architecture, its state dict, and per conv {"filters": n, "kept": [...]}.

    Kept indices refer to the channels of `model` (already-pruned models are sliced further).
    """
    arch = model.arch
    # advanced indexing copies the sliced tensors; untouched ones are copied by load_state_dict
    state = {k: v.detach() for k, v in model.state_dict().items()}
    mids, branches = resolved_mid_widths(arch), resolved_branch_channels(arch)
    layers: dict[str, dict[str, Any]] = {}

    def record(conv: str, n: int, kept: Tensor) -> None:
        layers[conv] = {"filters": n, "kept": kept.tolist()}

    stem_width = arch.stem_width
    if stem_prunable(arch):
        kept = _kept(state, "conv1", "bn1")
        record("conv1", arch.stem_width, kept)
        if kept.numel() < arch.stem_width:
            _slice_out(state, "conv1", "bn1", kept)
            _slice_in(state, "layer1.0.conv1", kept)
            _slice_in(state, "layer1.0.downsample.0", kept)
            stem_width = kept.numel()

    stages = [s for s, n in enumerate(arch.layers) for _ in range(n)]
    new_branches: list[list[int]] = []
    for i, block in enumerate(block_names(arch)):
        convs = [*internal_conv_names(arch), last_conv_name(arch)]
        for j, name in enumerate(convs[:-1]):
            conv, bn = f"{block}.{name}", f"{block}.bn{name[-1]}"
            kept = _kept(state, conv, bn)
            record(conv, mids[i][j], kept)
            if kept.numel() < mids[i][j]:
                _slice_out(state, conv, bn, kept)
                _slice_in(state, f"{block}.{convs[j + 1]}", kept)
                mids[i][j] = kept.numel()
        conv, bn = f"{block}.{convs[-1]}", f"{block}.bn{convs[-1][-1]}"
        width = block_out_width(arch, stages[i])
        current = torch.tensor(branches[i]) if branches[i] is not None else torch.arange(width)
        kept = _kept(state, conv, bn)
        record(conv, len(current), kept)
        if kept.numel() < len(current):
            _slice_out(state, conv, bn, kept)
            current = current[kept]
        new_branches.append([] if len(current) == width else current.tolist())

    new_arch = dataclasses.replace(
        arch,
        stem_width=stem_width,
        mid_widths=[] if mids == default_mid_widths(arch) else mids,
        branch_channels=new_branches if any(new_branches) else [],
        img_size=list(arch.img_size),
        layers=list(arch.layers),
        stage_planes=list(arch.stage_planes),
    )
    return new_arch, state, layers


@torch.no_grad()
def check_same_outputs(
    reference: nn.Module,
    candidate: nn.Module,
    input_size: tuple[int, int] | list[int] | None = None,
    batch: int = 2,
    tolerance: float = 1e-5,
) -> float:
    """Run both models in eval mode on one seeded random batch; raise CompressionError unless
    every output (embedding, each logits tensor) agrees within tolerance * max(1, max |ref|).

    Returns the largest relative deviation found. The models' train/eval modes are restored.
    """
    size = list(input_size or reference.arch.img_size)  # type: ignore[union-attr]
    param = next(reference.parameters())
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, *size, generator=generator).to(param.device, param.dtype)
    modes = (reference.training, candidate.training)
    reference.eval()
    candidate.eval()
    try:
        ref, out = reference(images), candidate(images)
    finally:
        reference.train(modes[0])
        candidate.train(modes[1])
    worst = 0.0
    pairs = [("embedding", ref.embedding, out.embedding)]
    pairs += [(f"logits[{i}]", a, b) for i, (a, b) in enumerate(zip(ref.logits, out.logits, strict=True))]
    for name, a, b in pairs:
        if a.shape != b.shape:
            raise CompressionError(f"extraction check: {name} shape {tuple(b.shape)} != {tuple(a.shape)}")
        scale = max(1.0, a.abs().max().item())
        deviation = (a - b).abs().max().item() / scale
        worst = max(worst, deviation)
        if not deviation <= tolerance:
            raise CompressionError(
                f"extraction check failed: {name} of the extracted model differs from the masked model "
                f"by {deviation:.3g} (relative to max |output| {scale:.3g}; tolerance {tolerance:g}). "
                "Some removed channel did not output exactly zero."
            )
    return worst


def extract_pruned(
    model: nn.Module,
    *,
    method: str = "filter-extract",
    rate: float | None = None,
    details: dict[str, Any] | None = None,
    check: bool = True,
    check_size: tuple[int, int] | list[int] | None = None,
    tolerance: float = 1e-5,
) -> tuple[nn.Module, CompressionPlan]:
    """Build the physically smaller ResNet from a model whose pruned filters are zero.

    Any other CNN module goes through `compress.filters.graph.extract_graph` (Torch-Pruning), with
    `check_size` as its trace and check input (H, W), default 256x128.

    The input model is not changed. `method`/`rate`/`details` go into the CompressionPlan
    (`rate` defaults to the fraction of scanned filters that were removed). The new model is
    checked against the masked one (eval mode, input of `check_size` [H, W], default the arch's
    img_size) before it is returned. Returns (small_model, plan); small_model.compression_plan
    is the plan, chained after any plan the input carried.
    """
    if not isinstance(unwrap(model), ResNet):  # any other CNN: Torch-Pruning's dependency graph
        from reidprune.compress.filters.graph import extract_graph

        return extract_graph(
            model,
            method=method,
            rate=rate,
            details=details,
            input_size=check_size,
            check=check,
            tolerance=tolerance,
        )
    source = require_resnet(model)
    new_arch, state, layers = plan_extraction(source)
    small = build(new_arch)
    load_state_dict_checked(small, state, strict=True, where="extracted ResNet state")
    param = next(source.parameters())
    small = small.to(param.device, param.dtype).train(source.training)
    total = sum(v["filters"] for v in layers.values())
    removed = sum(v["filters"] - len(v["kept"]) for v in layers.values())
    info: dict[str, Any] = {
        "layers": {name: v for name, v in layers.items() if len(v["kept"]) < v["filters"]},
        "filters": total,
        "removed_filters": removed,
        **(details or {}),
    }
    if check:
        info["check_max_rel_deviation"] = check_same_outputs(source, small, check_size, tolerance=tolerance)
    asked = removed / total if rate is None else rate
    previous = plan_of(source)
    plan = previous.then(method, asked, info) if previous else CompressionPlan(method, asked, info)
    small.compression_plan = plan  # type: ignore[assignment]
    return small, plan


def copy_model(model: nn.Module) -> ResNet:
    """A deep copy of a reidprune ResNet (arch and plan included)."""
    source = require_resnet(model)
    twin = copy.deepcopy(source)
    return twin
