"""Where a model's attention layers are, and which architecture field holds each one's head count.

Attention layers are found by type (`models.vit.Attention`) and mapped by module path:
  ``...blocks.{i}.attn``  -> ``arch.num_heads[i]``      (depth i)
  ``...b1...attn``        -> ``arch.jpm_num_heads[0]``  (TransReID JPM global branch)
  ``...b2...attn``        -> ``arch.jpm_num_heads[1]``  (TransReID JPM local branch)
In `models/vit_models.py` these are ``backbone.blocks.{i}.attn``, ``head.b1.block.attn`` and
``head.b2.block.attn``. A JPM model's backbone stops one layer short: b1 and b2 are the two copies
of the last transformer layer, so both sit at depth len(num_heads).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

from reidprune.errors import CompressionError
from reidprune.models.vit import Attention

_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.attn$")
_JPM = re.compile(r"(?:^|\.)b([12])\.(?:.*\.)?attn$")


@dataclass(frozen=True)
class HeadSlot:
    """One attention layer: its module path, the arch list entry holding its head count, its depth."""

    path: str
    field: str
    index: int
    depth: int
    num_heads: int
    head_dim: int


def arch_heads(arch: object, field: str) -> list[int]:
    """The per-layer head counts held by `arch.<field>`; an unset jpm_num_heads means the ViTArch
    default (the last backbone block's count, `ViTArch.branch_heads`)."""
    values = getattr(arch, field, None)
    if values is None and field == "jpm_num_heads" and hasattr(arch, "branch_heads"):
        values = arch.branch_heads()
    if not isinstance(values, list | tuple):
        raise CompressionError(
            f"the architecture {type(arch).__name__} has no list field '{field}' to record head counts"
        )
    return [int(v) for v in values]


def head_slots(model: nn.Module) -> list[HeadSlot]:
    """Every attention layer of `model`, ordered by depth (backbone blocks, then JPM branches).

    Raises CompressionError for a model without `.arch`, without attention layers, or with an
    attention layer whose path maps to no architecture field, or whose head count disagrees
    with the architecture (the model was changed behind its arch's back).
    """
    arch = getattr(model, "arch", None)
    if arch is None:
        raise CompressionError(
            f"{type(model).__name__} has no .arch; head pruning rebuilds the model from its "
            "architecture, so it needs a model built by reidprune.models"
        )
    attentions = [(p, m) for p, m in model.named_modules() if isinstance(m, Attention)]
    if not attentions:
        raise CompressionError(f"{type(model).__name__} ({arch.family}) has no attention layers to prune")
    slots: list[HeadSlot] = []
    jpm: list[tuple[str, int, Attention]] = []
    for path, module in attentions:
        if match := _BLOCK.search(path):
            field, index = "num_heads", int(match.group(1))
            slots.append(HeadSlot(path, field, index, index, module.num_heads, module.head_dim))
        elif match := _JPM.search(path):
            jpm.append((path, int(match.group(1)) - 1, module))
        else:
            raise CompressionError(
                f"attention layer '{path}' of {arch.family}: no architecture field for its head count "
                "(expected a path ending in 'blocks.<i>.attn', 'b1...attn' or 'b2...attn')"
            )
    jpm_depth = len(arch_heads(arch, "num_heads"))
    slots += [HeadSlot(p, "jpm_num_heads", i, jpm_depth, m.num_heads, m.head_dim) for p, i, m in jpm]
    seen: dict[tuple[str, int], str] = {}
    for slot in slots:
        if (slot.field, slot.index) in seen:
            raise CompressionError(
                f"attention layers '{seen[slot.field, slot.index]}' and '{slot.path}' both map to "
                f"arch.{slot.field}[{slot.index}]"
            )
        seen[slot.field, slot.index] = slot.path
        values = arch_heads(arch, slot.field)
        if slot.index >= len(values) or values[slot.index] != slot.num_heads:
            found = values[slot.index] if slot.index < len(values) else "no entry"
            raise CompressionError(
                f"attention layer '{slot.path}' has {slot.num_heads} heads but arch.{slot.field}"
                f"[{slot.index}] is {found}; the model does not match its architecture"
            )
    return sorted(slots, key=lambda s: (s.depth, s.field != "num_heads", s.index))
