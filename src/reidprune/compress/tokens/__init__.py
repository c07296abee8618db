"""ViT token reduction: one interface, four methods (ALGORITHMS.md §3).

    student, plan = prune_tokens(model, method="amg", rate=0.4, data=calib_loader, mode="kv")
    student, plan = prune_tokens(model, method="topk", rate=0.4)           # EViT-style, dynamic
    student, plan = prune_tokens(model, method="pm", rate=0.4, data=calib_loader)
    student, plan = prune_tokens(model, method="tome", rate=0.4)           # or r=8

`prune_tokens` never modifies `model`: it returns a new model whose `arch.tokens` holds the complete
spec (schema in `reidprune/models/tokens/spec.py`), so `reidprune.save` / `reidprune.load` rebuild
it exactly; `attach_reducers(model, spec)` (from `reidprune.models.tokens`) is what the ViT
family's build function calls for that. Each method (options, checks, planning, reducers) is one
module of `reidprune.models.tokens`, found through its method table; this module adds what needs
data: the calibration pass whose scores AMG and Prune-and-Merge plan from.

What `rate` means (always the fraction removed, in [0, 1)):
- amg: fraction of the P x L_s (patch, scored block) pairs removed, counted against the ORIGINAL
  pairs; calling again on an AMG model removes that many more (two rounds of 0.2 = 0.4 in all).
- topk: fraction of the tokens reaching a reduction block that it drops (keep rate 1 - rate).
- pm: 1 - keep_rate, the mean fraction of patches not processed as distinct tokens.
- tome: a constant r per block such that about this fraction of (block, patch) pairs is saved;
  `r=` overrides it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from reidprune.compress.calibration import calibrate
from reidprune.compress.tokens.scores import TaylorKeyScore, scores_by_position
from reidprune.errors import CompressionError
from reidprune.models.plan import CompressionPlan, plan_of
from reidprune.models.tokens import METHODS, Scores, TokenMethod, attach_reducers, current_spec, method_named
from reidprune.models.tokens.layout import BackboneLayout, find_backbone
from reidprune.models.tokens.methods import attach, parse_for

__all__ = [
    "METHOD_OPTIONS",
    "TaylorKeyScore",
    "attach_reducers",
    "current_spec",
    "prune_tokens",
]

# options each method accepts besides the calibration ones (loss_fn, max_batches, teacher, device, stochastic)
METHOD_OPTIONS: dict[str, dict[str, Any]] = {name: dict(m.options) for name, m in METHODS.items()}


def _check_rate(rate: Any) -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= float(rate) < 1.0:
        raise CompressionError(f"token pruning rate must be a number in [0, 1); got {rate!r}")
    return float(rate)


def _options(method: TokenMethod, options: Mapping[str, Any]) -> dict[str, Any]:
    defaults = method.options
    unknown = set(options) - set(defaults)
    if unknown:
        raise CompressionError(
            f"unknown option(s) {sorted(unknown)} for token method '{method.name}'; "
            f"it accepts {sorted(defaults)} (+ loss_fn, max_batches, teacher, device, stochastic)"
        )
    return {**defaults, **options}


def prune_tokens(
    model: nn.Module,
    method: str = "amg",
    rate: float = 0.4,
    data: Iterable[Mapping[str, Any]] | None = None,
    *,
    loss_fn: Any = None,
    max_batches: int = 0,
    teacher: nn.Module | None = None,
    device: torch.device | str | None = None,
    stochastic: bool = False,
    statistic: TaylorKeyScore | None = None,
    **options: Any,
) -> tuple[nn.Module, CompressionPlan]:
    """Return (a token-reduced copy of `model`, its CompressionPlan); `model` is not modified.

    method: "amg" | "topk" | "pm" | "tome", or an alias of one ("token-amg", ...; see each method's
      `TokenMethod.aliases`). rate: see the module docstring.
    data: calibration loader (batch dicts) for amg and pm; loss_fn / max_batches / teacher /
      device / stochastic go to `compress.calibration.calibrate`.
    statistic: instead of data, a `TaylorKeyScore` already filled by a `calibrate` pass on this
      model (one pass can feed it and the head-entropy statistic together).
    options, per method (defaults in METHOD_OPTIONS; each method module's docstring says more):
      amg:  mode "kv" (all queries, fewer keys/values) | "skip" (pruned tokens skip the block);
            depth_discount c (default 0.03 kv, 0.015 skip); selection "taylor" | "random" (seeded
            by `seed`; with data, random positions at AMG's per-block counts, i.e. equal GMACs;
            without data, counts spread evenly); min_keep patch tokens per block (>= 1).
      topk: locations (0-based blocks; default EViT's 4/7/10 of 12 scaled to depth); fuse.
      pm:   prune_rate (default 0.1, at most rate); depth_discount (0.025); min_keep centres;
            restore "residual" (default: merged patches keep their stream and get their segment's
            update) | "projection" (the paper's pseudo-inverse restore); see models/tokens/pm.py.
      tome: r (int, or one int per block); prop_attn (proportional attention).
    """
    token_method = method_named(method)
    name = token_method.name
    rate = _check_rate(rate)
    opts = _options(token_method, options)
    layout = find_backbone(model)
    existing = getattr(layout.vit, "token_spec", None)
    if existing is not None and not (token_method.repeatable and existing.method == name):
        raise CompressionError(
            f"the model already has '{existing.method}' token reduction; only AMG can be applied again "
            "(further rounds); start from a model without token reduction for another method"
        )
    arch = getattr(model, "arch", None)
    if arch is not None and not (
        dataclasses.is_dataclass(arch) and "tokens" in {f.name for f in dataclasses.fields(arch)}
    ):
        raise CompressionError(
            f"the architecture of this model ({type(arch).__name__}) has no 'tokens' field, so a token-reduced "
            "copy could not be saved and rebuilt"
        )
    token_method.check(opts, layout, rate, existing)
    uses = token_method.scores(opts)
    if statistic is not None and not isinstance(statistic, TaylorKeyScore):
        raise CompressionError(f"statistic must be a filled TaylorKeyScore; got {type(statistic).__name__}")
    if statistic is not None and uses == "none":
        raise CompressionError(f"token method '{name}' uses no calibration statistic")
    if statistic is not None and data is not None:
        raise CompressionError("give calibration data or a filled statistic, not both")
    if uses == "required" and data is None and statistic is None:
        raise CompressionError(f"token method '{name}' needs calibration data (data=loader of batch dicts)")
    if isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 0:
        raise CompressionError(f"max_batches must be an int >= 0 (0 = the whole loader); got {max_batches}")

    where = f"token spec ({name})"
    if uses == "none":  # data-free plans are checked before the model is copied
        spec, details, weights = token_method.plan(layout, rate, opts, existing, None)
        parse_for(layout, spec, where)
    new_model = copy.deepcopy(model)
    new_layout = find_backbone(new_model)
    if uses != "none":
        scores = None
        if data is not None or statistic is not None:
            calib = {
                "loss_fn": loss_fn,
                "max_batches": max_batches,
                "teacher": teacher,
                "device": device,
                "stochastic": stochastic,
            }
            keys = token_method.key_positions(existing, new_layout.depth)
            scores = _calibrated_scores(new_model, new_layout, keys, data, statistic, calib)
        spec, details, weights = token_method.plan(new_layout, rate, opts, existing, scores)
    parsed = parse_for(new_layout, spec, where)
    attach(new_layout, parsed, weights)
    if arch is not None:
        new_model.arch = dataclasses.replace(arch, tokens=parsed.to_dict())
    previous = plan_of(model)
    plan_name = f"token-{name}"
    plan = (
        previous.then(plan_name, rate, details)
        if previous is not None
        else CompressionPlan(plan_name, rate, details)
    )
    new_model.compression_plan = plan
    return new_model, plan


def _calibrated_scores(
    model: nn.Module,
    layout: BackboneLayout,
    key_positions: list[Any],
    data: Any,
    stat: TaylorKeyScore | None,
    calib: dict[str, Any],
) -> Scores:
    """Taylor key scores of every block by original position, from one calibration pass over `data`
    (or from `stat`, filled by a pass shared with other statistics, e.g. head entropy)."""
    names = [layout.attn_name(i) for i in range(layout.depth)]
    if stat is None:
        stat = TaylorKeyScore(names)
        summary = calibrate(model, data, [stat], **calib)
        seen = {"batches": summary.batches, "images": summary.images}
    else:
        seen = {"batches": max(stat.calls.values(), default=0), "images": -1}
    raw = scores_by_position(stat, names, key_positions, layout.num_tokens, layout.num_prefix_tokens)
    scored = [name in stat.sums for name in names]
    if not any(scored):
        raise CompressionError(
            "calibration reached none of the backbone blocks (" + ", ".join(names[:2]) + ", ...); "
            "the model does not run its ViT blocks, or the statistic was collected on another model"
        )
    return Scores(raw=raw, scored=scored, seen=seen)
