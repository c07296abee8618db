"""Physical head removal: slice q/k/v rows and proj columns, rebuild the model from its new arch.

Nothing is masked: the pruned model is built from an architecture with fewer heads per layer
(`arch.num_heads`, `arch.jpm_num_heads`) and loads the sliced weights strictly, so
`reidprune.save` / `load` and ONNX export see an ordinary, smaller model. head_dim, the softmax
scale, the embedding width, norms, MLPs and any token reducers are untouched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from reidprune.compress.heads.layout import HeadSlot, arch_heads, head_slots
from reidprune.errors import CompressionError
from reidprune.models.checkpoint_io import CheckpointError, load_state_dict_checked
from reidprune.models.registry import build
from reidprune.models.vit import Attention


def slice_qkv(tensor: Tensor, num_heads: int, head_dim: int, keep: Tensor) -> Tensor:
    """qkv weight (3*H*d, D) or bias (3*H*d,) -> (3*h'*d, ...) keeping heads `keep` of q, k and v.

    Rows are ordered (q|k|v, head, channel) as in timm, so each head is a block of d rows in each
    of the three groups.
    """
    rest = tensor.shape[1:]
    kept = tensor.reshape(3, num_heads, head_dim, *rest)[:, keep]
    return kept.reshape(3 * keep.numel() * head_dim, *rest).clone()


def slice_proj(weight: Tensor, num_heads: int, head_dim: int, keep: Tensor) -> Tensor:
    """proj weight (D, H*d) -> (D, h'*d): the kept heads' column blocks, in order."""
    out_dim = weight.shape[0]
    return weight.reshape(out_dim, num_heads, head_dim)[:, keep].reshape(out_dim, -1).clone()


def _check_keep(slot: HeadSlot, kept: Sequence[int]) -> Tensor:
    values = [int(i) for i in kept]
    if not values:
        raise CompressionError(f"attention layer '{slot.path}': cannot remove all {slot.num_heads} heads")
    if sorted(set(values)) != values or values[0] < 0 or values[-1] >= slot.num_heads:
        raise CompressionError(
            f"attention layer '{slot.path}': kept heads {values} must be distinct ascending indices in "
            f"[0, {slot.num_heads})"
        )
    return torch.tensor(values, dtype=torch.long)


def remove_heads(model: nn.Module, keep: Mapping[str, Sequence[int]]) -> nn.Module:
    """A new model in which attention layer `path` has only the heads `keep[path]` (ascending).

    Layers not named in `keep` keep all their heads. The input model is not modified; the new one
    has its own copy of every weight and the same device, dtype, per-module train/eval modes and
    requires_grad flags. Returns the new model (without a compression plan; `prune_heads` adds it).
    """
    slots = {slot.path: slot for slot in head_slots(model)}
    unknown = sorted(set(keep) - set(slots))
    if unknown:
        raise CompressionError(f"not attention layers of this model: {unknown}; known: {sorted(slots)}")
    kept = {path: _check_keep(slots[path], heads) for path, heads in keep.items()}

    state = model.state_dict()  # views; loading copies them into the new model's own tensors
    fields = {name: arch_heads(model.arch, name) for name in {s.field for s in slots.values()}}
    for path, index in kept.items():
        slot = slots[path]
        h, d = slot.num_heads, slot.head_dim
        state[f"{path}.qkv.weight"] = slice_qkv(state[f"{path}.qkv.weight"], h, d, index)
        if f"{path}.qkv.bias" in state:
            state[f"{path}.qkv.bias"] = slice_qkv(state[f"{path}.qkv.bias"], h, d, index)
        state[f"{path}.proj.weight"] = slice_proj(state[f"{path}.proj.weight"], h, d, index)
        fields[slot.field][slot.index] = index.numel()

    arch = dataclasses.replace(model.arch, **fields)
    pruned = build(arch)
    try:
        load_state_dict_checked(pruned, state, strict=True, where="head-pruned weights")
    except CheckpointError as err:
        raise CompressionError(
            f"the rebuilt {arch.family} model does not take the sliced weights: {err}"
        ) from None
    _check_rebuilt(model, pruned, slots, kept)
    for name, param in pruned.named_parameters():
        param.requires_grad_(model.get_parameter(name).requires_grad)
    modes = {name: module.training for name, module in model.named_modules()}
    for name, module in pruned.named_modules():  # per module: a frozen BN may sit in eval mode
        module.training = modes.get(name, model.training)
    reference = next(model.parameters())
    return pruned.to(device=reference.device, dtype=reference.dtype)


def _check_rebuilt(
    model: nn.Module, pruned: nn.Module, slots: Mapping[str, HeadSlot], kept: Mapping[str, Tensor]
) -> None:
    """The arch fields must have produced exactly the intended layers (same head_dim and scale)."""
    for path, slot in slots.items():
        old, new = model.get_submodule(path), pruned.get_submodule(path)
        assert isinstance(old, Attention)
        expected = kept[path].numel() if path in kept else slot.num_heads
        if not isinstance(new, Attention) or (new.num_heads, new.head_dim, new.scale) != (
            expected,
            old.head_dim,
            old.scale,
        ):
            raise CompressionError(
                f"rebuilding {model.arch.family} from arch.{slot.field} did not give layer '{path}' "
                f"{expected} heads of dim {old.head_dim} with scale {old.scale}"
            )
