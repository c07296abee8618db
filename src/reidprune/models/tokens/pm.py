"""Prune-and-Merge (pm.md): static per-block plans that prune, merge and restore tokens.

Plan of block l (from gradient-weighted attention scores, pm.md §4):
- pruned tokens skip the block (identity shortcut);
- centres (the top scores, chosen by a global threshold over all blocks) are processed;
- every other patch is merged into the nearest centre in raster order, never past the end of
  its centre's row, with weight w_j = score_j / score_centre (the centre has weight 1).
Forward: z = M x (c_l x N merge), y = block(z), out = R y + pruned tokens, where R is the
closed-form pseudo-inverse of M (its rows have disjoint supports): R[j, a] = M[a, j] / ||M[a]||^2.

`PruneMergeReducer` stores only the non-zero weights (one merge and one restore weight per
merged patch) and applies M and R with index_add / gather: O(N D) per block instead of the dense
O(c N D) products, and fine-tuning keeps the sparsity pattern (pruned tokens keep skipping).

Two ways of giving the block's result back to the merged patches (`restore`):
- "projection" (the paper, pm.md §3): out = R y; a merged patch becomes w_j / ||w||^2 times its
  segment's output, i.e. its own residual stream is replaced by a scaled copy of the centre's.
- "residual" (reidprune's default): the segment is the weighted MEAN z_k of its patches, and each
  patch keeps its own stream and receives the segment's update: out_j = x_j + r_j (y_k - z_k), r_j
  initialised to 1 (ToMe's unmerge of the update). A singleton segment is exactly the dense block.
  Measured on the embedded set (benchmarks/pm_accuracy.py: LA-tiny, keep 0.6, merge only, test
  mAP 65.3 unpruned): 49.4 against 39.8 with projection before any fine-tuning, 62.3 against 58.7
  after 10 epochs of distillation. The projection wipes the identity of every merged patch, which
  re-ID's part-stripe pooling then averages in.
Options (prune_tokens): prune_rate (default 0.1, at most rate); depth_discount (0.025); min_keep
centres; restore "residual" | "projection". rate: 1 - keep_rate, the mean fraction of patches not
processed as distinct tokens.
`DensePruneMergeReducer` holds full trainable M, R and the token mask, only to run released
PM-ViT checkpoints whose matrices became dense during fine-tuning (pm.md §6.2, §10.1).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from reidprune.errors import CompressionError
from reidprune.models.tokens.indexing import exporting
from reidprune.models.tokens.layout import BackboneLayout
from reidprune.models.tokens.method import Plan, Scores, TokenMethod, check_number, normalise_scores
from reidprune.models.tokens.spec import int_list, per_block, spec_error, with_prefix
from reidprune.models.vit import Block, TokenHooks, TokenState


@dataclass(frozen=True)
class BlockPlan:
    """One block's plan over the P patches (raster order, 0-based patch indices).

    segment: (P,) long, the merged token (0..K-1, ordered by centre) of every patch, -1 = pruned.
    weight: (P,) float merge weights (1 at centres, 0 for pruned patches).
    centres: (K,) long patch index of each segment's centre.
    """

    segment: Tensor
    weight: Tensor
    centres: Tensor


def assign_segments(centres: Tensor, num_patches: int, grid_width: int) -> Tensor:
    """Segment of every patch: its nearest centre in raster order, clipped at the centre's row end.

    centres: (K,) sorted patch indices. Between consecutive centres k_a < k_b the boundary is
    ceil((k_a + k_b) / 2) (a tie goes to the right-hand centre), but never later than the first
    patch of the row after k_a's row. Patches before the first centre belong to it, patches after
    the last centre to the last one. Returns (P,) long in 0..K-1.
    """
    patches = torch.arange(num_patches)
    left = torch.searchsorted(centres, patches, right=True) - 1  # last centre <= patch, -1 if none
    left_c = left.clamp(min=0)
    right_c = (left + 1).clamp(max=centres.numel() - 1)
    k_a, k_b = centres[left_c], centres[right_c]
    boundary = torch.minimum((k_a + k_b + 1) // 2, (k_a // grid_width + 1) * grid_width)
    has_right = left + 1 < centres.numel()
    goes_right = has_right & (left >= 0) & (patches >= boundary)
    return torch.where(left < 0, torch.zeros_like(left), torch.where(goes_right, left + 1, left_c))


def block_plan(values: Tensor, pruned: Tensor, centre: Tensor, grid_width: int) -> BlockPlan:
    """Build one block's plan from its scores (P,), pruned (P,) bool and centre (P,) bool masks."""
    centres = torch.nonzero(centre).flatten()
    if centres.numel() == 0:
        raise CompressionError("a Prune-and-Merge block would keep no centre token")
    segment = assign_segments(centres, values.numel(), grid_width)
    weight = values / values[centres[segment]].clamp_min(torch.finfo(values.dtype).tiny)
    weight = torch.where(pruned, torch.zeros_like(weight), weight)
    weight = torch.where(centre, torch.ones_like(weight), weight)
    segment = torch.where(pruned, torch.full_like(segment, -1), segment)
    return BlockPlan(segment=segment, weight=weight.float(), centres=centres)


def select_pm(values: Tensor, n_prune: int, n_keep: int, min_keep: int = 1) -> tuple[Tensor, Tensor]:
    """Global Prune-and-Merge thresholds over all (block, patch) pairs.

    values: (L, P) normalised, depth-weighted scores of the planned blocks.
    Returns (pruned, centre) bool (L, P): the n_prune lowest pairs are pruned, the n_keep highest
    of the rest are centres; every block keeps at least min_keep centres (its top scores).
    Ties are broken by (block, patch) order.
    """
    total = values.numel()
    if n_prune + max(n_keep, min_keep * values.shape[0]) > total:
        raise CompressionError(f"keep ({n_keep}) + prune ({n_prune}) exceed the {total} (block, patch) pairs")
    protect = torch.zeros_like(values, dtype=torch.bool)
    if min_keep > 0:
        protect.scatter_(1, values.topk(min(min_keep, values.shape[1]), dim=1).indices, True)
    flat, protect = values.flatten(), protect.flatten()
    low_first = torch.argsort(torch.where(protect, torch.inf, flat), stable=True)
    pruned = torch.zeros(total, dtype=torch.bool)
    pruned[low_first[:n_prune]] = True
    # centres: the protected pairs, then the highest scores that were not pruned
    rank = torch.where(protect, torch.inf, torch.where(pruned, -torch.inf, flat))
    high_first = torch.argsort(rank, descending=True, stable=True)
    centre = torch.zeros(total, dtype=torch.bool)
    centre[high_first[: max(n_keep, int(protect.sum()))]] = True
    return pruned.view_as(values), centre.view_as(values)


def dense_matrices(segment: Sequence[int] | Tensor, weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Dense M (c, N), R (N, c) = closed-form pinv(M), and the token mask (N,) of a sparse plan."""
    segment = torch.as_tensor(segment, dtype=torch.long)
    k = int(segment.max()) + 1
    n = segment.numel() + 1
    merge = torch.zeros(k + 1, n, dtype=weight.dtype)
    merge[0, 0] = 1.0
    member = torch.nonzero(segment >= 0).flatten()
    merge[1 + segment[member], 1 + member] = weight[member]
    restore = merge.t() / merge.pow(2).sum(dim=1).unsqueeze(0)
    mask = torch.cat([torch.ones(1, dtype=weight.dtype), (segment >= 0).to(weight.dtype)])
    return merge, restore, mask


RESTORES = ("residual", "projection")


class PruneMergeReducer(TokenHooks):
    """Sparse Prune-and-Merge block. Trainable: `merge_weight`, `restore_weight` (one per member).

    segment: (P,) segment id per patch (-1 = pruned); weight: (P,) initial merge weights.
    restore: "residual" (members keep their stream and get the segment's update) or "projection"
    (the paper's R = pinv(M)); see the module docstring. The first num_prefix_tokens tokens
    (class, distillation, registers) go through the block as themselves.
    """

    def __init__(
        self,
        segment: Sequence[int],
        weight: Tensor | None = None,
        restore: str = "residual",
        num_prefix_tokens: int = 1,
    ) -> None:
        super().__init__()
        if restore not in RESTORES:
            raise CompressionError(f"pm restore must be one of {RESTORES}; got {restore!r}")
        seg = torch.as_tensor(list(segment), dtype=torch.long)
        member = torch.nonzero(seg >= 0).flatten()
        pruned = torch.nonzero(seg < 0).flatten()
        k = int(seg.max()) + 1
        p = int(num_prefix_tokens)
        n = seg.numel() + p
        self.num_segments = k
        self.num_prefix_tokens = p
        self.restore = restore
        self.register_buffer("members", member + p, persistent=False)  # sequence positions
        self.register_buffer("segment", seg[member], persistent=False)
        self.register_buffer("pruned", pruned + p, persistent=False)
        # rows of cat([y (p + K), x[pruned]]) that give each output position, and the scale slots
        source = torch.zeros(n, dtype=torch.long)
        source[:p] = torch.arange(p)
        source[member + p] = p + seg[member]
        source[pruned + p] = p + k + torch.arange(pruned.numel())
        self.register_buffer("source", source, persistent=False)
        scale_index = torch.zeros(n, dtype=torch.long)  # 0 -> a constant 1, 1 + i -> restore_weight[i]
        scale_index[member + p] = 1 + torch.arange(member.numel())
        self.register_buffer("scale_index", scale_index, persistent=False)
        # residual restore: rows of y - z per output position (a pruned one reads row 0 with scale 0,
        # so no zero rows are concatenated) and slots 0 -> 1, 1 -> 0, 2 + i -> restore_weight[i]
        update_index = source.clone()
        update_index[pruned + p] = 0
        self.register_buffer("update_index", update_index, persistent=False)
        update_scale = scale_index + 1
        update_scale[:p] = 0
        self.register_buffer("update_scale", update_scale, persistent=False)
        # exported graphs: each segment as a fixed number of slots (its members, padded with weight 0)
        self.register_buffer("slots", _segment_slots(seg[member], k), persistent=False)
        w = torch.ones(seg.numel()) if weight is None else torch.as_tensor(weight, dtype=torch.float32)
        w = w[member]
        norm = torch.zeros(k).index_add(0, seg[member], w.pow(2))
        self.merge_weight = nn.Parameter(w.clone())
        restore_init = w / norm[seg[member]] if restore == "projection" else torch.ones_like(w)
        self.restore_weight = nn.Parameter(restore_init)

    def extra_repr(self) -> str:
        return (
            f"tokens={self.num_prefix_tokens + self.num_segments}, merged={self.members.numel()}, "
            f"pruned={self.pruned.numel()}, restore={self.restore}"
        )

    def _segment_sum(self, values: Tensor, batch: int) -> Tensor:
        """(B, members, D) -> (B, K, D) sums per segment."""
        out = values.new_zeros(batch, self.num_segments, values.shape[-1])
        return out.index_add(1, self.segment, values)  # row-wise: several times faster than scatter_add

    def _merge_exported(self, x: Tensor, weight: Tensor) -> Tensor:
        """`before_attention` for an exported graph: the same z as one Gather, a Mul and a ReduceSum
        over (p + K, S) slots (the prefix tokens and the padded segments; the slot weights, divided
        by their segment's sum for "residual", are constants of the graph). ONNX has no index_add,
        and its ScatterElements (add) runs element by element in ONNX Runtime and OpenVINO."""
        b, _, d = x.shape
        k, s = self.slots.shape
        p = self.num_prefix_tokens
        flat = self.slots.flatten()
        slot_weight = torch.cat([weight, weight.new_zeros(1)]).index_select(0, flat).view(k, s)
        if self.restore == "residual":
            slot_weight = slot_weight / slot_weight.sum(dim=1, keepdim=True).clamp_min(1e-6)
        # prefix token i is a segment of its own: slot 0 holds it with weight 1, the others weight 0
        prefix = torch.zeros(p, s, dtype=torch.long, device=x.device)
        prefix[:, 0] = torch.arange(p, device=x.device)
        positions = torch.cat([self.members, self.members[:1]]).index_select(0, flat).view(k, s)
        positions = torch.cat([prefix, positions]).flatten()
        prefix_weight = torch.zeros(p, s, dtype=x.dtype, device=x.device)
        prefix_weight[:, 0] = 1.0
        slot_weight = torch.cat([prefix_weight, slot_weight]).view(1, p + k, s, 1)
        rows = x.index_select(1, positions).view(b, p + k, s, d)
        return (rows * slot_weight).sum(dim=2)

    def before_attention(self, block: Block, x: Tensor, state: TokenState) -> Tensor:
        """z = [prefix tokens, merged segments]: weighted sums (projection) or means (residual)."""
        weight = self.merge_weight.to(x.dtype)
        if exporting():
            return self._merge_exported(x, weight)
        merged = self._segment_sum(x.index_select(1, self.members) * weight.unsqueeze(-1), x.shape[0])
        if self.restore == "residual":
            # (1, K, 1) merge-weight sums; the floor keeps a segment whose weights decayed to 0 finite
            merged = merged / self._segment_sum(weight.view(1, -1, 1), 1).clamp_min(1e-6)
        return torch.cat([x[:, : self.num_prefix_tokens], merged], dim=1)

    def after_block(
        self, block: Block, x: Tensor, z: Tensor, y: Tensor, state: TokenState
    ) -> tuple[Tensor, TokenState]:
        if self.restore == "projection":
            scale = torch.cat([self.restore_weight.new_ones(1), self.restore_weight]).to(x.dtype)
            scale = scale.index_select(0, self.scale_index).unsqueeze(-1)
            out = torch.cat([y, x.index_select(1, self.pruned)], dim=1).index_select(1, self.source)
            return out * scale, state
        # pruned patches take no update (scale 0): they skip the block
        fixed = torch.tensor([1.0, 0.0], dtype=self.restore_weight.dtype, device=self.restore_weight.device)
        scale = torch.cat([fixed, self.restore_weight]).to(x.dtype)
        scale = scale.index_select(0, self.update_scale).unsqueeze(-1)
        return x + (y - z).index_select(1, self.update_index) * scale, state


def _segment_slots(segment: Tensor, k: int) -> Tensor:
    """(K, S) member indices of every segment (S = the largest segment), padded with M (a slot of
    weight 0). segment: (M,) the segment id of each member, in member order."""
    m = segment.numel()
    counts = torch.bincount(segment, minlength=k)
    order = torch.argsort(segment, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(m) - starts[segment[order]]
    slots = torch.full((k, max(1, int(counts.max()))), m, dtype=torch.long)
    slots[segment[order], rank] = order
    return slots


class DensePruneMergeReducer(TokenHooks):
    """Dense Prune-and-Merge block (released PM-ViT checkpoints): out = R block(M x) + (1 - m) x."""

    def __init__(self, tokens: int, num_tokens: int) -> None:
        super().__init__()
        merge = torch.zeros(tokens, num_tokens)
        merge[torch.arange(tokens), torch.arange(tokens)] = 1.0
        self.merge_matrix = nn.Parameter(merge)
        self.recover_matrix = nn.Parameter(merge.t().clone())
        self.register_buffer("token_mask", torch.ones(num_tokens))

    def extra_repr(self) -> str:
        return f"tokens={self.merge_matrix.shape[0]}, dense"

    def before_attention(self, block: Block, x: Tensor, state: TokenState) -> Tensor:
        return torch.matmul(self.merge_matrix.to(x.dtype), x)

    def after_block(
        self, block: Block, x: Tensor, z: Tensor, y: Tensor, state: TokenState
    ) -> tuple[Tensor, TokenState]:
        skip = x * (1.0 - self.token_mask.to(x.dtype)).view(1, -1, 1)
        return torch.matmul(self.recover_matrix.to(x.dtype), y) + skip, state


@dataclass(frozen=True)
class PmSpec:
    num_tokens: int
    dense: bool
    segments: tuple[tuple[int, ...] | None, ...] | None = None
    tokens: tuple[int | None, ...] | None = None
    restore: str = "projection"  # sparse only: "residual" | "projection" (absent in older specs)
    num_prefix_tokens: int = 1

    method = "pm"

    def to_dict(self) -> dict[str, Any]:
        if self.dense:
            return with_prefix(
                {
                    "method": "pm",
                    "num_tokens": self.num_tokens,
                    "dense": True,
                    "tokens": list(self.tokens or ()),
                },
                self.num_prefix_tokens,
            )
        return with_prefix(
            {
                "method": "pm",
                "num_tokens": self.num_tokens,
                "dense": False,
                "segments": [list(s) if s is not None else None for s in self.segments or ()],
                "restore": self.restore,
            },
            self.num_prefix_tokens,
        )

    def merged_counts(self) -> list[int]:
        """Tokens (prefix included) that each block's attention and MLP run on."""
        if self.dense:
            return [c if c is not None else self.num_tokens for c in self.tokens or ()]
        p = self.num_prefix_tokens
        return [p + max(s) + 1 if s is not None else self.num_tokens for s in self.segments or ()]


def _parse_pm(values: Mapping[str, Any], depth: int, num_tokens: int, where: str, prefix: int) -> PmSpec:
    patches = num_tokens - prefix
    dense = values.get("dense", False)
    if not isinstance(dense, bool):
        raise spec_error(where, f"'dense' must be true or false; got {dense!r}")
    if dense:
        tokens: list[int | None] = []
        for i, entry in enumerate(per_block(values.get("tokens"), depth, f"{where}.tokens")):
            if entry is not None and (
                isinstance(entry, bool) or not isinstance(entry, int) or not 2 <= entry <= num_tokens
            ):
                raise spec_error(
                    f"{where}.tokens[{i}]", f"expected an int in 2..{num_tokens} or null, got {entry!r}"
                )
            tokens.append(entry)
        if values.get("restore", "projection") != "projection":
            raise spec_error(f"{where}.restore", "dense merge / restore matrices restore by projection only")
        return PmSpec(num_tokens=num_tokens, dense=True, tokens=tuple(tokens))
    segments: list[tuple[int, ...] | None] = []
    for i, entry in enumerate(per_block(values.get("segments"), depth, f"{where}.segments")):
        if entry is None:
            segments.append(None)
            continue
        seg = int_list(entry, f"{where}.segments[{i}]")
        if len(seg) != patches:
            raise spec_error(f"{where}.segments[{i}]", f"has {len(seg)} entries for {patches} patches")
        used = sorted({s for s in seg if s >= 0})
        if not used:
            raise spec_error(f"{where}.segments[{i}]", "keeps no patch token")
        if min(seg) < -1 or used != list(range(len(used))):
            raise spec_error(f"{where}.segments[{i}]", "segment ids must be -1 (pruned) or 0..K-1, each used")
        segments.append(tuple(seg))
    restore = values.get("restore", "projection")
    if restore not in ("residual", "projection"):
        raise spec_error(f"{where}.restore", f"expected 'residual' or 'projection', got {restore!r}")
    return PmSpec(num_tokens=num_tokens, dense=False, segments=tuple(segments), restore=restore)


def _check(opts: dict[str, Any], layout: BackboneLayout, rate: float, existing: Any) -> None:
    check_number(opts["prune_rate"], "prune_rate", 0.0, 1.0)
    check_number(opts["depth_discount"], "depth_discount", 0.0, 1.0)
    opts["prune_rate"] = min(float(opts["prune_rate"]), rate)
    if isinstance(opts["min_keep"], bool) or not isinstance(opts["min_keep"], int) or opts["min_keep"] < 1:
        raise CompressionError(f"min_keep must be an int >= 1; got {opts['min_keep']!r}")
    if opts["restore"] not in RESTORES:
        raise CompressionError(f"pm restore must be one of {', '.join(RESTORES)}; got {opts['restore']!r}")


def _plan(
    layout: BackboneLayout, rate: float, opts: dict[str, Any], existing: Any, scores: Scores | None
) -> Plan:
    if scores is None:
        raise CompressionError("a Prune-and-Merge plan needs calibrated scores")
    depth, patches = layout.depth, layout.num_patches
    raw, scored = scores.raw, scores.scored
    discount = 1.0 - opts["depth_discount"] * torch.arange(depth, dtype=torch.float64)
    values = normalise_scores(raw, discount)[:, layout.num_prefix_tokens :]
    rows = [i for i, s in enumerate(scored) if s]
    n_keep = len(rows) * math.floor(patches * (1.0 - rate))
    n_prune = len(rows) * math.floor(patches * opts["prune_rate"])
    pruned, centre = select_pm(values[rows], n_prune, n_keep, opts["min_keep"])
    segments: list[list[int] | None] = [None] * depth
    weights: dict[int, Tensor] = {}
    centres: list[list[int] | None] = [None] * depth
    for row, i in enumerate(rows):
        if bool(centre[row].all()):
            continue  # every patch is its own centre: the block is unchanged
        plan = block_plan(values[i], pruned[row], centre[row], layout.grid_size[1])
        segments[i] = plan.segment.tolist()
        weights[i] = plan.weight
        centres[i] = plan.centres.tolist()
    spec = {
        "method": "pm",
        "num_tokens": layout.num_tokens,
        "dense": False,
        "segments": segments,
        "restore": opts["restore"],
    }
    details = {
        "restore": opts["restore"],
        "keep_rate": 1.0 - rate,
        "prune_rate": opts["prune_rate"],
        "depth_discount": opts["depth_discount"],
        "scored_blocks": rows,
        "merged_tokens": [
            layout.num_prefix_tokens + len(c) if c is not None else layout.num_tokens for c in centres
        ],
        "pruned_tokens": [int(pruned[r].sum()) for r in range(len(rows))],
        "centres": centres,
        "calibration": dict(scores.seen),
    }
    return with_prefix(spec, layout.num_prefix_tokens), details, weights


def _reducers(spec: PmSpec, layout: BackboneLayout, weights: Mapping[int, Tensor]) -> list[nn.Module | None]:
    if spec.dense:
        return [
            DensePruneMergeReducer(c, spec.num_tokens) if c is not None else None for c in spec.tokens or ()
        ]
    p = layout.num_prefix_tokens
    return [
        PruneMergeReducer(s, weights.get(i), spec.restore, p) if s is not None else None
        for i, s in enumerate(spec.segments or ())
    ]


METHOD = TokenMethod(
    name="pm",
    aliases=("token-pm",),
    options={"prune_rate": 0.1, "depth_discount": 0.025, "min_keep": 1, "restore": "residual"},
    spec_keys=frozenset({"dense", "segments", "tokens", "restore"}),
    parse=_parse_pm,
    check=_check,
    plan=_plan,
    reducers=_reducers,
    scores=lambda opts: "required",
)
