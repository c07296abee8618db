"""Foreign ResNet checkpoints -> reidprune ResNets: key mapping, shapes -> architecture.

Supported sources (after stripping a DataParallel "module." prefix):
- "torchvision": ImageNet ResNets (`conv1`, `bn1`, `layer*`, `fc`); our parameter names are
  torchvision's, so the keys map one to one. Old torchvision files without BN
  `num_batches_tracked` load too (the counters keep their initial value).
- "bafd": the BAFD seed's `ft_net` (`model.*` = torchvision ResNet, `classifier.add_block.*`,
  `classifier.classifier.0.*`); `model.` is stripped and the seed's unused 1000-way
  `model.fc.*` is dropped unless the target model has a "linear" head. Checkpoints with zero
  filters (soft pruning) load at full size;
  `reidprune.compress.filters.recover.create_pruned_from_checkpoint` then extracts the smaller
  model from their zero filters.
- "reidprune": a state dict of our own model (`bottleneck.*`, `classifier.*`), same names.

Backbone keys (stem, stages) are matched strictly. Head keys are matched by what the model
has: a head key the source holds is loaded (its shape must fit); a head key the source lacks
keeps its initialisation (an ImageNet backbone loaded into a re-ID model) and is reported in
`LoadResult.initialised`; source head keys the model does not have are dropped.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from reidprune.models.checkpoint_io import (
    CheckpointError,
    load_state_dict_checked,
    strip_prefix,
)
from reidprune.models.checkpoints import LoadResult, register_importer
from reidprune.models.resnet import (
    ResNetArch,
    block_names,
    block_out_width,
    default_mid_widths,
    internal_conv_names,
    last_conv_name,
    validate_arch,
)

BACKBONE = re.compile(r"^(conv1|bn1|layer\d+)\.")


def resnet_checkpoint_format(state: Mapping[str, Tensor], where: str = "checkpoint") -> str:
    if "model.conv1.weight" in state:
        return "bafd"
    if "conv1.weight" in state and "layer1.0.conv1.weight" in state:
        return "torchvision" if "fc.weight" in state or not _head_keys(state) else "reidprune"
    sample = ", ".join(sorted(state)[:8])
    raise CheckpointError(
        f"{where}: not a ResNet checkpoint this importer knows: expected keys like conv1.weight, "
        f"layer1.0.conv1.weight (torchvision / reidprune) or model.conv1.weight (BAFD); found {sample}"
    )


def _head_keys(state: Mapping[str, Any]) -> list[str]:
    return [k for k in state if not BACKBONE.match(k)]


def to_model_names(state: Mapping[str, Tensor], head: str, where: str = "checkpoint") -> tuple[str, dict]:
    """(format, state renamed to our keys). `head` is the target model's head type."""
    state = strip_prefix(state, ("module.",))
    fmt = resnet_checkpoint_format(state, where)
    if fmt == "bafd":
        renamed = {(k[len("model.") :] if k.startswith("model.") else k): v for k, v in state.items()}
        if head != "linear":  # the seed keeps torchvision's fc in the module but never uses it
            renamed = {k: v for k, v in renamed.items() if not k.startswith("fc.")}
        return fmt, renamed
    return fmt, dict(state)


def import_resnet_state(model: nn.Module, state: dict[str, Tensor], strict: bool, where: str) -> LoadResult:
    """Importer registered for family "resnet" (see reidprune.models.checkpoints)."""
    arch: ResNetArch = model.arch  # type: ignore[assignment]
    fmt, renamed = to_model_names(state, arch.head, where)
    own = model.state_dict()
    own_head = set(_head_keys(own))
    initialised = sorted(k for k in own_head if k not in renamed)
    # old torchvision files predate BN's num_batches_tracked counter
    initialised += sorted(
        k for k in own if k.endswith("num_batches_tracked") and k not in renamed and k not in own_head
    )
    loadable = {k: v for k, v in renamed.items() if BACKBONE.match(k) or k in own_head}
    for key in initialised:
        loadable[key] = own[key]
    _check_pruned_shapes(arch, loadable, where)
    missing, unexpected = load_state_dict_checked(model, loadable, strict=strict, where=where)
    return LoadResult(fmt, missing=missing, unexpected=unexpected, initialised=initialised)


def _check_pruned_shapes(arch: ResNetArch, state: Mapping[str, Tensor], where: str) -> None:
    """A physically narrowed block output cannot be rebuilt from shapes alone: say so clearly."""
    stages = [s for s, n in enumerate(arch.layers) for _ in range(n)]
    branches = arch.branch_channels or [[] for _ in stages]
    for i, block in enumerate(block_names(arch)):
        key = f"{block}.{last_conv_name(arch)}.weight"
        width = block_out_width(arch, stages[i])
        if key in state and state[key].shape[0] < width and not branches[i]:
            raise CheckpointError(
                f"{where}: {key} has {state[key].shape[0]} of {width} output channels: a small model whose "
                "block outputs were removed (e.g. the BAFD seed's HFP net_last.pth). Which residual "
                "channels it writes is not stored in the file; load the full-size checkpoint with zero "
                "filters instead, a reidprune model directory (it records them), or, for an HFP small "
                "model, reidprune.compress.filters.recover.create_pruned_from_checkpoint(name, path, "
                "original=the model it was pruned from)"
            )


def resnet_arch_from_state(state: Mapping[str, Tensor], base: ResNetArch) -> ResNetArch:
    """`base` adapted to the checkpoint: stem / internal conv widths and the classifier size.

    Block type and depth must match the base architecture; a different head type in the source
    leaves the base head (and its number of classes) alone.
    """
    state = strip_prefix(state, ("module.",))
    _, renamed = to_model_names(state, base.head, "checkpoint")
    has_conv3 = any(k.endswith(".conv3.weight") for k in renamed)
    block = "bottleneck" if has_conv3 else "basic"
    layers = [
        len({m.group(1) for k in renamed if (m := re.match(rf"^layer{s + 1}\.(\d+)\.", k))}) for s in range(4)
    ]
    if block != base.block or layers != list(base.layers):
        raise CheckpointError(
            f"checkpoint holds a {block} ResNet with blocks per stage {layers}; the chosen model is a "
            f"{base.block} ResNet with {list(base.layers)} (pick resnet18/34 for basic, resnet50 for bottleneck)"
        )
    mids = [
        [int(renamed[f"{b}.{c}.weight"].shape[0]) for c in internal_conv_names(base)]
        for b in block_names(base)
    ]
    changes: dict[str, Any] = {"stem_width": int(renamed["conv1.weight"].shape[0])}
    changes["mid_widths"] = [] if mids == default_mid_widths(base) else mids
    changes.update(head_from_state(renamed, base))
    arch = dataclasses.replace(base, **changes)
    validate_arch(arch)
    return arch


def head_from_state(state: Mapping[str, Tensor], base: ResNetArch) -> dict[str, Any]:
    if base.head == "linear" and "fc.weight" in state:
        return {"num_classes": int(state["fc.weight"].shape[0])}
    if base.head == "bnneck" and "bottleneck.weight" in state:
        return {
            "num_classes": int(state["classifier.weight"].shape[0]) if "classifier.weight" in state else 0
        }
    if base.head == "bafd" and "classifier.add_block.0.weight" in state:
        first = state["classifier.add_block.0.weight"]
        fc = state.get("classifier.classifier.0.weight")
        return {
            "bottleneck_dim": int(first.shape[0]) if first.dim() == 2 else 0,
            "num_classes": int(fc.shape[0]) if fc is not None else 0,
        }
    return {}


register_importer("resnet", import_resnet_state, resnet_arch_from_state)
