"""`prune_heads`: one head-pruning step (score -> select globally -> remove physically).

An iterative schedule calls it once per round with `num_remove=split_rounds(...)[r]`, fine-tuning
in between; a single call with `rate` removes that fraction of the model's current heads at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from reidprune.compress.calibration import calibrate
from reidprune.compress.heads.importance import HeadEntropy, head_magnitude, random_scores
from reidprune.compress.heads.layout import HeadSlot, head_slots
from reidprune.compress.heads.removal import remove_heads
from reidprune.compress.heads.selection import amg_depth_weights, check_rate, heads_to_remove, select_removal
from reidprune.errors import CompressionError
from reidprune.models.plan import CompressionPlan, plan_of

METHODS = ("entropy", "magnitude", "random")
# the names PruneConfig.method spells them with: the one place head-method aliases are defined
ALIASES = {f"head-{name}": name for name in METHODS}
DEFAULT_DEPTH_WEIGHT = 0.02  # AMG LA version's delta; its TransReID version used 0.005


def prune_heads(
    model: nn.Module,
    method: str = "entropy",
    rate: float | None = None,
    num_remove: int | None = None,
    data: Iterable[Any] | None = None,
    *,
    statistic: HeadEntropy | None = None,
    depth_weight: float = DEFAULT_DEPTH_WEIGHT,
    seed: int = 0,
    max_batches: int = 0,
    device: torch.device | str | None = None,
    stochastic: bool = False,
) -> tuple[nn.Module, CompressionPlan]:
    """Remove attention heads network-wide; returns (new_model, plan) and leaves `model` untouched.

    method (also spelt "head-entropy", ... as in PruneConfig.method):
      "entropy"   AMG: map entropy (bits) of each head's dataset-mean attention map, times the depth
                  weight 1 + depth_weight * k (k = index of the block among blocks with > 1 head);
                  the highest weighted entropies are removed.
      "magnitude" the lowest L2 norms of a head's q/k/v rows + proj columns are removed.
      "random"    uniform random choice, reproducible from `seed`.
    rate: fraction of the model's current heads (all attention layers, JPM branches included) to
      remove in this step: floor(rate * heads) heads, rate in [0, 1). Give `rate` or `num_remove`.
    num_remove: exact number of heads to remove (what an iterative schedule passes per round).
    data: calibration batches for "entropy" (a DataLoader of batch dicts); every batch is used.
    statistic: an already filled `HeadEntropy` from a calibration pass shared with token pruning;
      replaces `data`.
    max_batches / device / stochastic: passed to `compress.calibration.calibrate` (0 = all batches;
      default the model's device; stochastic=True = the seeds' train-mode pass). The pass needs no
      labels: the entropy statistic takes no gradient.

    Every attention layer keeps at least one head. Token reducers (arch.tokens) and all other
    architecture fields are kept. The new model's `compression_plan` records, per layer, the kept
    and removed head indices and the scores. Raises CompressionError before any work for an
    unknown method, a rate outside [0, 1), a count the layers cannot give up, a model without
    attention layers, or "entropy" without data.
    """
    method = ALIASES.get(method, method) if isinstance(method, str) else method
    if method not in METHODS:
        raise CompressionError(f"head pruning method '{method}': expected one of {', '.join(METHODS)}")
    if (rate is None) == (num_remove is None):
        raise CompressionError(
            "head pruning: give exactly one of rate= (a fraction) or num_remove= (a count)"
        )
    if method == "entropy" and data is None and statistic is None:
        raise CompressionError("head pruning 'entropy' needs calibration data (data=) or a filled statistic=")
    if not math.isfinite(depth_weight):
        raise CompressionError(f"depth_weight={depth_weight!r}: expected a finite number")
    slots = head_slots(model)
    total = sum(s.num_heads for s in slots)
    if rate is not None:
        count = heads_to_remove(total, check_rate(rate))
    elif isinstance(num_remove, bool) or not isinstance(num_remove, int) or num_remove < 0:
        raise CompressionError(f"num_remove={num_remove!r}: expected an integer >= 0")
    else:
        count = num_remove
    _check_count(slots, count)

    if method == "entropy":
        if statistic is None:
            statistic = HeadEntropy()
            calibrate(model, data, [statistic], max_batches=max_batches, device=device, stochastic=stochastic)
        scores, priorities, extra = _entropy_priorities(slots, statistic, depth_weight)
    elif method == "magnitude":
        scores = [head_magnitude(model.get_submodule(s.path)) for s in slots]
        priorities = [-s for s in scores]  # weakest first
        extra = {}
    else:
        scores = random_scores([s.num_heads for s in slots], seed)
        priorities, extra = scores, {"seed": seed}

    removed = select_removal(priorities, count)
    keep = {
        slot.path: [h for h in range(slot.num_heads) if h not in gone]
        for slot, gone in zip(slots, removed, strict=True)
    }
    pruned = remove_heads(model, keep)
    details = {
        "criterion": method,
        "heads_before": total,
        "num_removed": count,
        **extra,
        "num_heads": list(pruned.arch.num_heads),
        "jpm_num_heads": list(getattr(pruned.arch, "jpm_num_heads", []) or []),
        "layers": [
            {
                "path": slot.path,
                "heads_before": slot.num_heads,
                "kept": keep[slot.path],
                "removed": gone,
                "scores": [round(float(v), 6) for v in score],
            }
            for slot, gone, score in zip(slots, removed, scores, strict=True)
        ],
    }
    asked = float(rate) if rate is not None else count / total
    previous = plan_of(model)
    plan = (
        previous.then(f"head-{method}", asked, details)
        if previous is not None
        else CompressionPlan(f"head-{method}", asked, details)
    )
    pruned.compression_plan = plan  # type: ignore[assignment]
    return pruned, plan


def _check_count(slots: list[HeadSlot], count: int) -> None:
    removable = sum(s.num_heads - 1 for s in slots)
    if count > removable:
        raise CompressionError(
            f"cannot remove {count} heads: the {len(slots)} attention layers have "
            f"{sum(s.num_heads for s in slots)} heads and each keeps at least one, so at most "
            f"{removable} can go"
        )


def _entropy_priorities(
    slots: list[HeadSlot], statistic: HeadEntropy, depth_weight: float
) -> tuple[list[Tensor], list[Tensor], dict[str, Any]]:
    """Entropies (bits), depth-weighted removal priorities, and what the plan records."""
    entropies = statistic.entropies()
    missing = [s.path for s in slots if s.path not in entropies]
    if missing:
        raise CompressionError(
            f"head entropy: the calibration pass recorded no attention maps for {missing}; "
            f"recorded: {sorted(entropies)}"
        )
    for slot in slots:
        if entropies[slot.path].numel() != slot.num_heads:
            raise CompressionError(
                f"head entropy: layer '{slot.path}' has {slot.num_heads} heads but its statistic has "
                f"{entropies[slot.path].numel()} (calibrated on a different model?)"
            )
    scores = [entropies[s.path] for s in slots]
    weights = amg_depth_weights([s.depth for s in slots], [s.num_heads for s in slots], depth_weight)
    priorities = [score * w for score, w in zip(scores, weights, strict=True)]
    extra = {
        "depth_weight": depth_weight,
        "calibration_maps": {s.path: statistic.num_maps(s.path) for s in slots},
    }
    return scores, priorities, extra
