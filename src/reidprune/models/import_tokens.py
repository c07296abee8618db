"""Token-reduction state in foreign checkpoints -> `arch.tokens` specs (+ our reducer weight names).

Registered with the ViT importer's extension point (`import_vit.register_extra_importer`): the
claimer sees the state already renamed to our names and converts the keys it understands.

- AMG (amg.md §2.2-2.4): a boolean `backbone.blocks.{l}.attn.token_index` of length N per pruned
  block (index 0 = CLS). LA-Transformer checkpoints prune keys and values ("kv") with masks in
  original order. TransReID checkpoints skip tokens ("skip"), and their masks are written in the
  order the sequence has reached block l: every earlier block moved its kept tokens to the front.
  `amg_kept_positions` undoes that permutation, so the spec holds original positions.
  TransReID's JPM copies of the last block (`head.b1.block`, `head.b2.block`) carry a mask too,
  but the seed never applies it (`disable_index = True`: the branches run every token, and b2
  runs on chunks shorter than the mask): their spec is "no reduction" and the masks are dropped.
- Prune-and-Merge (pm.md §3, §6.2): `backbone.blocks.{l}.attn.merge_matrix` (c_l, N),
  `recover_matrix` (N, c_l), `token_mask` (N,) and an unused `bias` (c_l,). When the matrices
  still have the plan's sparsity pattern (every patch in at most one merged token, the CLS row and
  column untouched, R non-zero only where M is) they become a sparse spec and per-token weights;
  otherwise (dense after fine-tuning) a dense spec that keeps the matrices as they are.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from reidprune.models.checkpoint_io import CheckpointError

_TOKEN_INDEX = re.compile(r"^backbone\.blocks\.(\d+)\.attn\.token_index$")
_BRANCH_TOKEN_INDEX = re.compile(r"^head\.b[12]\.block\.attn\.token_index$")
_MERGE = re.compile(r"^backbone\.blocks\.(\d+)\.attn\.merge_matrix$")
PINV_TOLERANCE = 1e-6  # relative size below which a pseudo-inverse entry counts as a structural zero


def amg_kept_positions(masks: Sequence[Tensor | None], permuted: bool) -> list[list[int] | None]:
    """Original kept positions (CLS first, increasing) of every block from AMG token masks.

    masks: per block a (N,) bool mask (None = block not pruned). permuted: the masks are in the
    running order of TransReID's token-skip blocks, where each block outputs [kept, skipped].
    """
    order: Tensor | None = None
    kept: list[list[int] | None] = []
    for mask in masks:
        if mask is None:
            kept.append(None)
            continue
        mask = mask.bool().flatten().cpu()
        if order is None:
            order = torch.arange(mask.numel())
        if mask.numel() != order.numel():
            raise CheckpointError(
                f"AMG token masks have different lengths ({mask.numel()} vs {order.numel()})"
            )
        if not bool(mask[0]):
            raise CheckpointError("an AMG token mask removes position 0 (CLS)")
        positions = order[mask] if permuted else torch.nonzero(mask).flatten()
        kept.append(None if bool(mask.all()) else sorted(positions.tolist()))
        if permuted:
            order = torch.cat([order[mask], order[~mask]])
    return kept


def pm_sparse_plan(merge: Tensor, recover: Tensor, mask: Tensor) -> tuple[list[int], Tensor, Tensor] | None:
    """(segment (P,), merge weight (P,), restore weight (P,)) when M / R have the plan's pattern, else None.

    merge: (c, N), recover: (N, c), mask: (N,). Segment ids are M's rows minus one (-1 = pruned).
    """
    c, n = merge.shape
    if recover.shape != (n, c) or mask.shape != (n,):
        raise CheckpointError(
            f"Prune-and-Merge shapes do not fit: M {tuple(merge.shape)}, R {tuple(recover.shape)}, mask {tuple(mask.shape)}"
        )
    m, r = merge.detach().double().cpu(), recover.detach().double().cpu()
    # R was computed with an SVD pseudo-inverse: its structural zeros are only zero up to round-off
    r = torch.where(r.abs() <= PINV_TOLERANCE * r.abs().max().clamp_min(1e-30), torch.zeros_like(r), r)
    unit = torch.zeros(n, dtype=torch.float64)
    unit[0] = 1.0
    if not (torch.equal(m[0], unit) and torch.equal(m[:, 0], unit[:c])):
        return None
    if not (torch.allclose(r[0], unit[:c], atol=1e-6) and torch.allclose(r[:, 0], unit, atol=1e-6)):
        return None
    patches = m[1:, 1:]  # (c - 1, P)
    nonzero = patches != 0
    per_patch = nonzero.sum(dim=0)
    member = per_patch == 1
    if bool((per_patch > 1).any()) or not bool(nonzero.any(dim=1).all()):
        return None
    if not torch.equal(member, mask[1:].detach().bool().cpu()):
        return None
    if bool(((r[1:, 1:] != 0) & ~nonzero.t()).any()):
        return None
    segment = torch.where(member, nonzero.double().argmax(dim=0), torch.full((n - 1,), -1, dtype=torch.long))
    rows = segment.clamp(min=0)
    columns = torch.arange(n - 1)
    weight = torch.where(member, patches[rows, columns], torch.zeros(n - 1, dtype=torch.float64))
    restore = torch.where(member, r[1:, 1:][columns, rows], torch.zeros(n - 1, dtype=torch.float64))
    return segment.tolist(), weight.float(), restore.float()


_BLOCK = re.compile(r"^backbone\.blocks\.(\d+)\.")


def _block_count(state: dict[str, Tensor]) -> int:
    """Backbone blocks in the checkpoint (the claimer runs before the architecture is fitted to it)."""
    return 1 + max((int(m.group(1)) for k in state if (m := _BLOCK.match(k))), default=-1)


def claim_amg(state: dict[str, Tensor], arch: Any) -> tuple[dict[str, Tensor], Any]:
    state = {k: v for k, v in state.items() if not _BRANCH_TOKEN_INDEX.match(k)}  # see the module doc
    found = {int(m.group(1)): k for k in state if (m := _TOKEN_INDEX.match(k))}
    if not found:
        return state, arch
    depth = _block_count(state)
    masks = [state[found[i]] if i in found else None for i in range(depth)]
    # the masks fix the token count; building the model checks it against the input size and stride
    n = int(masks[min(found)].numel())
    skip = arch.head == "transreid"  # TransReID-based AMG (entropy248/AMG) skips tokens; LA prunes K/V
    kept = amg_kept_positions(masks, permuted=skip)
    out = {k: v for k, v in state.items() if k not in found.values()}
    if all(k is None for k in kept):
        return out, arch
    spec = {"method": "amg", "mode": "skip" if skip else "kv", "num_tokens": n, "kept": kept}
    return out, dataclasses.replace(arch, tokens=spec)


def claim_pm(state: dict[str, Tensor], arch: Any) -> tuple[dict[str, Tensor], Any]:
    found = {int(m.group(1)) for k in state if (m := _MERGE.match(k))}
    if not found:
        return state, arch
    depth = _block_count(state)
    n = int(state[f"backbone.blocks.{min(found)}.attn.merge_matrix"].shape[1])
    out = dict(state)
    plans: dict[int, tuple[list[int], Tensor, Tensor] | None] = {}
    dense_parts: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
    for i in sorted(found):
        prefix = f"backbone.blocks.{i}.attn."
        try:
            merge, recover, mask = (
                out.pop(prefix + name) for name in ("merge_matrix", "recover_matrix", "token_mask")
            )
        except KeyError as err:
            raise CheckpointError(f"Prune-and-Merge block {i}: {err.args[0]} is missing") from None
        out.pop(prefix + "bias", None)  # computed by PM-ViT but never used (pm.md §3)
        if merge.shape[1] != n:
            raise CheckpointError(
                f"{prefix}merge_matrix has {merge.shape[1]} columns, block {min(found)}'s {n}"
            )
        dense_parts[i] = (merge, recover, mask)
        plans[i] = pm_sparse_plan(merge, recover, mask)
    if all(p is not None for p in plans.values()):
        segments: list[list[int] | None] = [None] * depth
        for i, plan in plans.items():
            assert plan is not None
            segment, weight, restore = plan
            segments[i] = segment
            member = torch.tensor([s >= 0 for s in segment])
            out[f"backbone.blocks.{i}.reducer.merge_weight"] = weight[member]
            out[f"backbone.blocks.{i}.reducer.restore_weight"] = restore[member]
        # released checkpoints were trained with the paper's pseudo-inverse restore
        spec = {
            "method": "pm",
            "num_tokens": n,
            "dense": False,
            "segments": segments,
            "restore": "projection",
        }
    else:
        tokens: list[int | None] = [None] * depth
        for i, (merge, recover, mask) in dense_parts.items():
            tokens[i] = int(merge.shape[0])
            out[f"backbone.blocks.{i}.reducer.merge_matrix"] = merge
            out[f"backbone.blocks.{i}.reducer.recover_matrix"] = recover
            out[f"backbone.blocks.{i}.reducer.token_mask"] = mask.float()
        spec = {"method": "pm", "num_tokens": n, "dense": True, "tokens": tokens}
    return out, dataclasses.replace(arch, tokens=spec)


def _register() -> None:
    from reidprune.models.import_vit import register_extra_importer

    register_extra_importer(claim_amg)
    register_extra_importer(claim_pm)


_register()
