"""The inference form of a model: BatchNorm folded into the convs before it, NHWC memory format.

In eval mode a BatchNorm2d is a fixed per-channel affine map, so the conv feeding it can absorb it:
w' = w * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta
(`torch.nn.utils.fusion.fuse_conv_bn_eval`). That removes one full read and write of every
activation per conv, the element-wise work that does not shrink when filters are pruned, and it is
what ONNX Runtime does to an exported graph anyway. The measured speed of a CNN should therefore
be taken on this form (benchmarks/filter_speed.py: efficiency 0.68 eager -> 0.83 folded + NHWC).

Pairs are found on a torch.fx trace of the model, not by module names: the trace proves that the
BatchNorm reads the conv's output and that nothing else reads it, which is exactly when folding is
exact. It therefore holds for every ResNet here, pruned or extracted (per-layer widths, branch
scatter, narrowed stem) and for any future CNN whose forward is traceable, without a naming rule
to keep in sync. BatchNorm1d after pooling (the BNNeck) is not preceded by a conv and stays.
"""

from __future__ import annotations

import copy
from collections import Counter

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from reidprune.errors import CompressionError


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv name, batchnorm name) for every Conv2d whose only reader is a BatchNorm2d, in graph order.

    Traces `model` as it is (call it on an eval-mode model: `training` branches are followed).
    A module called more than once (shared weights) is never paired. Raises CompressionError
    when the model has a BatchNorm2d but cannot be traced.
    """
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return []
    try:
        graph = fx.Tracer().trace(model)
    except Exception as err:  # fx raises many types (TraceError, TypeError, ...) on dynamic control flow
        raise CompressionError(
            f"{type(model).__name__}: cannot find its conv-BatchNorm pairs, torch.fx cannot trace its "
            f"forward ({type(err).__name__}: {err}); measure it without folding (deploy=False, --no-deploy)"
        ) from None
    modules = dict(model.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.Conv2d):
            continue
        if len(node.users) != 1:
            continue
        (user,) = node.users
        if user.op != "call_module" or user.args[:1] != (node,) or len(user.args) + len(user.kwargs) != 1:
            continue
        bn = modules[user.target]
        conv = modules[node.target]
        if (
            isinstance(bn, nn.BatchNorm2d)
            and bn.running_mean is not None  # without running statistics it normalises per batch
            and bn.num_features == conv.out_channels
            and calls[node.target] == 1
            and calls[user.target] == 1
        ):
            pairs.append((str(node.target), str(user.target)))
    return pairs


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A new eval-mode model with every Conv2d -> BatchNorm2d pair folded into one conv with bias.

    The input model is not changed. Each folded BatchNorm becomes nn.Identity, so the module tree,
    `forward` and `model.arch` stay as they were and the output is the same up to float rounding
    (~1e-6 relative in float32). Models without such pairs (ViTs; a BNNeck BatchNorm1d) come back
    as an unchanged eval-mode copy. A folded model carries `deploy_folded = True`: its state dict
    no longer matches its arch, so `reidprune.save` refuses it (save the unfolded model instead).
    """
    folded = copy.deepcopy(model).eval()
    pairs = conv_bn_pairs(folded)
    for conv_name, bn_name in pairs:
        conv, bn = folded.get_submodule(conv_name), folded.get_submodule(bn_name)
        _replace(folded, conv_name, fuse_conv_bn_eval(conv, bn))  # type: ignore[arg-type]
        _replace(folded, bn_name, nn.Identity())
    if pairs:
        folded.deploy_folded = True  # type: ignore[assignment]
    return folded


def prepare_for_inference(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """`fold_batchnorm(model)`, with 4-D weights in channels_last (NHWC) memory format by default.

    NHWC lets the CPU (oneDNN) and GPU conv kernels run without layout reorders; with BN folded it
    measured fastest for ResNet-50 (benchmarks/filter_speed.py) and made no measurable difference
    for a ViT (only its patch embedding is a conv). Feed the result channels_last inputs
    (`images.to(memory_format=torch.channels_last)`), as `benchmark_speed(..., deploy=True)` does.
    """
    prepared = fold_batchnorm(model)
    if channels_last:
        prepared = prepared.to(memory_format=torch.channels_last)
    return prepared
