"""Filter pruning of any CNN module through Torch-Pruning's dependency graph.

reidprune's own ResNets have an exact hand-written path (targets.py / extraction.py); every other
CNN (torchvision ResNet / MobileNet / EfficientNet, timm ResNet / RegNet, torchreid OSNet, a
user's own) goes through `torch_pruning.DependencyGraph`, which knows which layers share a
channel (the conv's BN, a depthwise conv and its BN, an SE gate, the next convs' inputs).

Which convs are pruned ("internal", the default and only scope here): a conv that is not
depthwise, does not read the image and whose output-channel group touches only convs, BatchNorms
and element-wise ops other than add / sub. A residual add, a concat, a reshape or a Linear in the
group excludes the conv, so block outputs, the embedding width and every classifier keep their
shapes. A conv already covered by an earlier conv's group (an SE gate's expanding conv, a
depthwise conv) is not a separate target.

Grouped convs (RegNet, ResNeXt): a conv that a grouped conv reads, or a grouped conv itself, has
filters in G equal slices (G = the groups, the lcm when several grouped convs share the channels)
and loses the same positions in every slice (`ConvTarget.groups`, criteria.select_in_slices), so
each grouped conv keeps G groups of a smaller width. This is how Torch-Pruning's own pruners treat
grouped convs; its layer functions assume it (ConvPruner keeps the first slice's input positions).

The criteria are reidprune's (criteria.py, bafd.py), applied to the target conv's own weight,
all selected on the unpruned weights before anything is removed (as in the exact ResNet path).
BAFD's block-wise rate sharing groups targets by parent module.

Masking a filter (soft schedules, `zero_group`) zeroes the conv slice and gamma / beta of every
BatchNorm in its group, so the channel outputs exactly 0 through a depthwise conv too: removing
it afterwards does not change the output.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn

from reidprune.compress.filters.extraction import removable_channels
from reidprune.compress.filters.targets import ConvTarget, unwrap
from reidprune.errors import CompressionError
from reidprune.models.forward import embedding_of, model_device, model_dtype
from reidprune.models.plan import CompressionPlan, plan_of

DEFAULT_INPUT_SIZE = (256, 128)  # re-ID person crops (H, W)

# element-wise ops whose output channel mixes two tensors that must keep matching widths
_COUPLING_OPS = ("Add", "Sub", "Cat", "Stack", "Split", "View", "Reshape", "Flatten")


def torch_pruning() -> Any:
    try:
        import torch_pruning as tp
    except ImportError:
        raise CompressionError(
            "pruning a CNN that is not a reidprune ResNet needs Torch-Pruning: "
            "pip install 'reidprune[cnn]' (or torch-pruning)"
        ) from None
    return tp


def _first_tensor(output: Any) -> Tensor:
    if isinstance(output, list | tuple):
        return _first_tensor(output[0])
    return embedding_of(output)


def example_input(model: nn.Module, input_size: tuple[int, int] | list[int] | None) -> Tensor:
    height, width = input_size or DEFAULT_INPUT_SIZE
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(1, 3, int(height), int(width), generator=generator)
    return images.to(model_device(model), model_dtype(model))


def build_graph(model: nn.Module, input_size: tuple[int, int] | list[int] | None = None) -> Any:
    """The Torch-Pruning dependency graph of `model`, traced in eval mode on one (1, 3, H, W) input."""
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        raise CompressionError(
            f"filter pruning needs a CNN (a reidprune ResNet or a torchvision / timm / torchreid CNN); "
            f"{type(model).__name__} has no Conv2d"
        )
    tp = torch_pruning()
    was_training = model.training
    model.eval()
    try:
        return tp.DependencyGraph().build_dependency(
            model, example_inputs=example_input(model, input_size), output_transform=_first_tensor
        )
    except (RuntimeError, TypeError, ValueError) as err:
        raise CompressionError(
            f"tracing {type(model).__name__} on a (1, 3, {input_size or DEFAULT_INPUT_SIZE}) input failed "
            f"({err}); pass check_size=(H, W) / input_size=(H, W) that the model accepts"
        ) from None
    finally:
        model.train(was_training)


def _is_depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels == conv.out_channels


def _internal(group: Any) -> bool:
    for dep, _ in group:
        for node in (dep.source, dep.target):
            module = node.module
            if isinstance(module, nn.Conv2d | nn.BatchNorm2d):
                continue
            elif type(module).__name__ == "_ElementWiseOp":
                if any(op in node.name for op in _COUPLING_OPS):
                    return False
            else:  # Linear, concat, split, reshape, LayerNorm, ...: widths leave the block
                return False
    return True


def channel_groups(group: Any, root: nn.Conv2d) -> int:
    """Slices the root conv's filters form for the grouped convs in its group (1 = none): the lcm of
    their groups; 0 when that does not divide the channel count."""
    slices = root.groups if not _is_depthwise(root) else 1
    for dep, _ in group:
        module = dep.target.module
        if isinstance(module, nn.Conv2d) and module.groups > 1 and not _is_depthwise(module):
            slices = math.lcm(slices, module.groups)
    return slices if root.out_channels % slices == 0 else 0


def _out_convs(group: Any, tp: Any) -> list[nn.Conv2d]:
    return [
        dep.target.module
        for dep, _ in group
        if isinstance(dep.target.module, nn.Conv2d) and dep.handler == tp.prune_conv_out_channels
    ]


def _bns(group: Any) -> list[nn.BatchNorm2d]:
    found: list[nn.BatchNorm2d] = []
    for dep, _ in group:
        module = dep.target.module
        if isinstance(module, nn.BatchNorm2d) and all(module is not bn for bn in found):
            found.append(module)
    return found


def graph_targets(model: nn.Module, graph: Any) -> list[ConvTarget]:
    """The internal convs of `model` (see the module docstring), in module order.

    ConvTarget.bn is the BatchNorm right after the conv ("" when there is none); .block is the
    parent module's name (used by BAFD's rate sharing)."""
    tp = torch_pruning()
    names = {id(m): name for name, m in model.named_modules()}
    covered: set[int] = set()
    targets = []
    for name, conv in model.named_modules():
        if not isinstance(conv, nn.Conv2d) or _is_depthwise(conv) or id(conv) in covered:
            continue
        node = graph.module2node.get(conv)
        if node is None or not node.inputs:  # unused, or reads the image (the stem)
            continue
        group = graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=[0])
        covered.update(id(m) for m in _out_convs(group, tp))
        slices = channel_groups(group, conv)
        if not _internal(group) or slices == 0 or conv.out_channels // slices < 2:
            continue
        bns = _bns(group)
        bn = names[id(bns[0])] if bns else ""
        targets.append(ConvTarget(name, bn, name.rpartition(".")[0], "internal", slices))
    return targets


def _group(graph: Any, model: nn.Module, target: ConvTarget, index: list[int]) -> Any:
    tp = torch_pruning()
    return graph.get_pruning_group(model.get_submodule(target.conv), tp.prune_conv_out_channels, idxs=index)


@torch.no_grad()
def zero_group(graph: Any, model: nn.Module, target: ConvTarget, index: Tensor) -> None:
    """Zero filters `index` of the target conv and gamma / beta of those channels in every BN of its
    group, so that they output exactly 0 (also after a depthwise conv)."""
    if index.numel() == 0:
        return
    conv = model.get_submodule(target.conv)
    idx = index.to(conv.weight.device)
    conv.weight.index_fill_(0, idx, 0.0)
    if conv.bias is not None:
        conv.bias.index_fill_(0, idx, 0.0)
    for bn in _bns(_group(graph, model, target, index.tolist())):
        bn.weight.index_fill_(0, idx, 0.0)
        bn.bias.index_fill_(0, idx, 0.0)


def _kept_from_zeros(model: nn.Module, target: ConvTarget) -> Tensor:
    """Channels of the target that are not exactly zero after its BN (the soft schedules' masks)."""
    if not target.bn:
        weight = model.get_submodule(target.conv).weight
        removable = (weight.reshape(weight.shape[0], -1) == 0).all(1)
    else:
        state = {
            f"{target.conv}.weight": model.get_submodule(target.conv).weight.detach(),
            **{
                f"{target.bn}.{k}": v.detach() for k, v in model.get_submodule(target.bn).state_dict().items()
            },
        }
        removable = removable_channels(state, target.conv, target.bn)
    if target.groups > 1:  # a position goes only when it is zero in every slice
        removable = removable.reshape(target.groups, -1).all(0).repeat(target.groups)
    kept = (~removable).nonzero().flatten().cpu()
    if kept.numel():
        return kept
    return torch.arange(target.groups) * (removable.numel() // target.groups)  # position 0 of each slice


@torch.no_grad()
def compare_outputs(reference: nn.Module, candidate: nn.Module, images: Tensor, tolerance: float) -> float:
    """Largest deviation of candidate's eval output from reference's, relative to max(1, max |ref|);
    raises CompressionError above `tolerance`."""
    modes = (reference.training, candidate.training)
    reference.eval()
    candidate.eval()
    try:
        ref, out = _first_tensor(reference(images)), _first_tensor(candidate(images))
    finally:
        reference.train(modes[0])
        candidate.train(modes[1])
    if ref.shape != out.shape:
        raise CompressionError(f"extraction check: output shape {tuple(out.shape)} != {tuple(ref.shape)}")
    scale = max(1.0, ref.abs().max().item())
    deviation = (ref - out).abs().max().item() / scale
    if not deviation <= tolerance:
        raise CompressionError(
            f"extraction check failed: the pruned model's output differs from the masked model's by "
            f"{deviation:.3g} (relative; tolerance {tolerance:g})"
        )
    return deviation


def extract_graph(
    model: nn.Module,
    *,
    method: str = "filter-extract",
    rate: float | None = None,
    details: dict[str, Any] | None = None,
    input_size: tuple[int, int] | list[int] | None = None,
    check: bool = True,
    tolerance: float = 1e-5,
    removed: dict[str, Tensor] | None = None,
) -> tuple[nn.Module, CompressionPlan]:
    """Physically remove filters from a copy of `model` (not changed): `removed` (conv name -> indices),
    or else every internal filter that is exactly zero after its BN (what soft schedules leave).

    The removed channels are first zeroed through their whole group (see `zero_group`), and the
    pruned model is checked against that masked copy on one seeded input of `input_size` (H, W).
    Returns (small_model, plan); the plan lists per conv {"filters": n, "kept": [...]}.
    """
    tp = torch_pruning()
    masked = copy.deepcopy(unwrap(model))
    graph = build_graph(masked, input_size)
    targets = graph_targets(masked, graph)
    layers: dict[str, dict[str, Any]] = {}
    for target in targets:
        n = masked.get_submodule(target.conv).out_channels
        if removed is not None:
            drop = removed.get(target.conv, torch.zeros(0, dtype=torch.long))
            keep_mask = torch.ones(n, dtype=torch.bool)
            keep_mask[drop] = False
            slices = keep_mask.reshape(target.groups, -1)
            if not bool((slices == slices[:1]).all()):
                raise CompressionError(
                    f"{target.conv}: removed filters differ between its {target.groups} channel groups "
                    "(a grouped conv reads them); remove the same positions in every group"
                )
            if not keep_mask.any():
                keep_mask.reshape(target.groups, -1)[:, 0] = True
            kept = keep_mask.nonzero().flatten()
        else:
            kept = _kept_from_zeros(masked, target)
        layers[target.conv] = {"filters": n, "kept": kept.tolist()}
        gone = torch.tensor(sorted(set(range(n)) - set(kept.tolist())), dtype=torch.long)
        zero_group(graph, masked, target, gone)
    small = copy.deepcopy(masked)
    small_graph = build_graph(small, input_size)
    for target in targets:
        info = layers[target.conv]
        gone = sorted(set(range(info["filters"])) - set(info["kept"]))
        if gone:
            conv = small.get_submodule(target.conv)
            small_graph.get_pruning_group(conv, tp.prune_conv_out_channels, idxs=gone).prune()
    info: dict[str, Any] = {
        "backend": "torch-pruning",
        "layers": {name: v for name, v in layers.items() if len(v["kept"]) < v["filters"]},
        "filters": sum(v["filters"] for v in layers.values()),
        "removed_filters": sum(v["filters"] - len(v["kept"]) for v in layers.values()),
        **(details or {}),
    }
    if check:
        images = example_input(masked, input_size)
        info["check_max_rel_deviation"] = compare_outputs(masked, small, images, tolerance)
    asked = info["removed_filters"] / max(info["filters"], 1) if rate is None else rate
    previous = plan_of(model)
    plan = previous.then(method, asked, info) if previous else CompressionPlan(method, asked, info)
    small.compression_plan = plan  # type: ignore[assignment]
    return small, plan
