"""Token-reduction specs: what `arch.tokens` holds, so that `build(arch)` rebuilds a model.

Each method's spec dataclass and parser live in its own module; `methods.parse_spec` validates a
dict through the method table. This module holds the schema and the shared parsing helpers.

`arch.tokens` is a plain JSON dict; every per-block list has one entry per backbone block (None =
that block is not reduced). Positions are sequence indices in the ORIGINAL order: 0..p-1 = the
backbone's p prefix tokens (class, distillation, registers), then the P patches in raster order;
num_tokens = p + P. Every spec may hold "num_prefix_tokens": p, written only when p != 1 (a plain
ViT with one class token), so older specs read unchanged.

  {"method": "amg", "mode": "kv" | "skip", "num_tokens": N,
   "kept": [[0, 1, 4, ...] | None, ...]}          # sorted kept positions, prefix included
  {"method": "topk", "num_tokens": N, "fuse": bool,
   "keep": [int | None, ...]}                     # patch tokens kept after this block (prefix and
                                                  # the fused token not counted)
  {"method": "pm", "num_tokens": N, "dense": false,
   "segments": [[s_1, ..., s_P] | None, ...],     # segment (merged token) of every patch, -1 = pruned
   "restore": "residual" | "projection"}          # how merged patches get the block's result back
  {"method": "pm", "num_tokens": N, "dense": true,
   "tokens": [c_l | None, ...]}                   # dense merge / restore matrices (imported checkpoints)
  {"method": "tome", "num_tokens": N, "prop_attn": bool,
   "r": [int, ...]}                               # tokens merged away in each block
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reidprune.errors import CompressionError


def spec_error(where: str, message: str) -> CompressionError:
    return CompressionError(f"{where}: {message}")


def int_list(value: Any, where: str) -> list[int]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise spec_error(where, f"expected a list of ints, got {type(value).__name__}")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int):
            raise spec_error(where, f"expected ints, found {item!r}")
        out.append(int(item))
    return out


def with_prefix(values: dict[str, Any], num_prefix_tokens: int) -> dict[str, Any]:
    """A spec dict, with num_prefix_tokens only when it is not the plain ViT's 1."""
    return values if num_prefix_tokens == 1 else {**values, "num_prefix_tokens": num_prefix_tokens}


def per_block(values: Any, depth: int, where: str) -> list[Any]:
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise spec_error(where, f"expected a list with one entry per block, got {type(values).__name__}")
    if len(values) != depth:
        raise spec_error(where, f"has {len(values)} entries but the backbone has {depth} blocks")
    return list(values)
