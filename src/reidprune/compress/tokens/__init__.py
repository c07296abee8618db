"""ViT token reduction: one interface, four methods (ALGORITHMS.md §3).

    student, plan = prune_tokens(model, method="amg", rate=0.4, data=calib_loader, mode="kv")
    student, plan = prune_tokens(model, method="topk", rate=0.4)           # EViT-style, dynamic
    student, plan = prune_tokens(model, method="pm", rate=0.4, data=calib_loader)
    student, plan = prune_tokens(model, method="tome", rate=0.4)           # or r=8

`prune_tokens` never modifies `model`: it returns a new model whose `arch.tokens` holds the complete
spec (see `spec.py` for the schema), so `reidprune.save` / `reidprune.load` rebuild it exactly;
`attach_reducers(model, spec)` is what the ViT family's build function calls for that.

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
import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from reidprune.compress.calibration import calibrate
from reidprune.compress.tokens.amg import (
    KeyValueReducer,
    SkipReducer,
    select_lowest,
    select_random,
    uniform_counts,
)
from reidprune.compress.tokens.layout import BackboneLayout, find_backbone
from reidprune.compress.tokens.pm import (
    RESTORES,
    DensePruneMergeReducer,
    PruneMergeReducer,
    block_plan,
    select_pm,
)
from reidprune.compress.tokens.scores import TaylorKeyScore, normalise_scores, scores_by_position
from reidprune.compress.tokens.spec import (
    AmgSpec,
    PmSpec,
    TokenSpec,
    TomeSpec,
    TopkSpec,
    parse_spec,
    tome_max_r,
)
from reidprune.compress.tokens.tome import ToMeReducer
from reidprune.compress.tokens.topk import TopKReducer, default_locations, keep_count
from reidprune.errors import CompressionError
from reidprune.models.plan import CompressionPlan, plan_of

__all__ = [
    "METHOD_OPTIONS",
    "TaylorKeyScore",
    "attach_reducers",
    "current_spec",
    "prune_tokens",
]

# options each method accepts besides the calibration ones (loss_fn, max_batches, teacher, device, stochastic)
METHOD_OPTIONS: dict[str, dict[str, Any]] = {
    "amg": {"mode": None, "depth_discount": None, "selection": "taylor", "seed": 0, "min_keep": 1},
    "topk": {"locations": None, "fuse": False},
    "pm": {"prune_rate": 0.1, "depth_discount": 0.025, "min_keep": 1, "restore": "residual"},
    "tome": {"r": None, "prop_attn": True},
}
NEEDS_DATA = {"amg", "pm"}
DEFAULT_DEPTH_DISCOUNT = {"kv": 0.03, "skip": 0.015}  # LA / TransReID seeds (amg.md §2.2)
_ALIASES = {
    "token-amg": "amg",
    "token-topk": "topk",
    "attn-topk": "topk",
    "token-pm": "pm",
    "token-tome": "tome",
}


def current_spec(model: nn.Module) -> TokenSpec | None:
    """The token spec attached to `model`'s backbone, or None."""
    return getattr(find_backbone(model).vit, "token_spec", None)


def attach_reducers(model: nn.Module, spec: Mapping[str, Any] | TokenSpec | None) -> TokenSpec | None:
    """Validate `spec` against `model`'s backbone and set every block's reducer (in place).

    spec: an `arch.tokens` dict (schema in `spec.py`), a parsed spec, or None (remove all reducers).
    Learnable reducer weights (Prune-and-Merge) start from neutral values; the state dict that is
    loaded next fills them. Raises CompressionError when the spec does not fit the model.
    """
    layout = find_backbone(model)
    parsed = parse_spec(spec, layout.depth, layout.num_tokens) if spec is not None else None
    _attach(layout, parsed)
    return parsed


def _attach(
    layout: BackboneLayout, spec: TokenSpec | None, pm_weights: Mapping[int, torch.Tensor] | None = None
) -> None:
    reducers: list[nn.Module | None] = [None] * layout.depth
    if isinstance(spec, AmgSpec):
        if spec.mode == "kv":
            reducers = [KeyValueReducer(k) if k is not None else None for k in spec.kept]
        else:
            reducers = [SkipReducer(k, spec.num_tokens) if k is not None else None for k in spec.kept]
    elif isinstance(spec, TopkSpec):
        reducers = [TopKReducer(k, spec.fuse) if k is not None else None for k in spec.keep]
    elif isinstance(spec, TomeSpec):
        reducers = [ToMeReducer(r, spec.prop_attn) if r > 0 else None for r in spec.r]
    elif isinstance(spec, PmSpec) and spec.dense:
        reducers = [
            DensePruneMergeReducer(c, spec.num_tokens) if c is not None else None for c in spec.tokens or ()
        ]
    elif isinstance(spec, PmSpec):
        weights = pm_weights or {}
        reducers = [
            PruneMergeReducer(s, weights.get(i), spec.restore) if s is not None else None
            for i, s in enumerate(spec.segments or ())
        ]
    for block, reducer in zip(layout.blocks, reducers, strict=True):
        if reducer is not None:
            param = next(block.parameters(), None)
            if param is not None:
                reducer = reducer.to(param.device)
        block.reducer = reducer
    layout.vit.token_spec = spec


def _method_name(method: str) -> str:
    name = _ALIASES.get(method, method)
    if name not in METHOD_OPTIONS:
        raise CompressionError(
            f"unknown token method {method!r}; expected one of {', '.join(METHOD_OPTIONS)}"
        )
    return name


def _check_rate(rate: Any) -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= float(rate) < 1.0:
        raise CompressionError(f"token pruning rate must be a number in [0, 1); got {rate!r}")
    return float(rate)


def _options(method: str, options: Mapping[str, Any]) -> dict[str, Any]:
    defaults = METHOD_OPTIONS[method]
    unknown = set(options) - set(defaults)
    if unknown:
        raise CompressionError(
            f"unknown option(s) {sorted(unknown)} for token method '{method}'; "
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

    method: "amg" | "topk" | "pm" | "tome" (also "token-amg", ...). rate: see the module docstring.
    data: calibration loader (batch dicts) for amg and pm; loss_fn / max_batches / teacher /
      device / stochastic go to `compress.calibration.calibrate`.
    statistic: instead of data, a `TaylorKeyScore` already filled by a `calibrate` pass on this
      model (one pass can feed it and the head-entropy statistic together).
    options, per method (defaults in METHOD_OPTIONS):
      amg:  mode "kv" (all queries, fewer keys/values) | "skip" (pruned tokens skip the block);
            depth_discount c (default 0.03 kv, 0.015 skip); selection "taylor" | "random" (seeded
            by `seed`; with data, random positions at AMG's per-block counts, i.e. equal GMACs;
            without data, counts spread evenly); min_keep patch tokens per block (>= 1).
      topk: locations (0-based blocks; default EViT's 4/7/10 of 12 scaled to depth); fuse.
      pm:   prune_rate (default 0.1, at most rate); depth_discount (0.025); min_keep centres;
            restore "residual" (default: merged patches keep their stream and get their segment's
            update) | "projection" (the paper's pseudo-inverse restore); see tokens/pm.py.
      tome: r (int, or one int per block); prop_attn (proportional attention).
    """
    method = _method_name(method)
    rate = _check_rate(rate)
    opts = _options(method, options)
    layout = find_backbone(model)
    existing = getattr(layout.vit, "token_spec", None)
    if existing is not None and not (method == "amg" and isinstance(existing, AmgSpec)):
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
    if method == "amg":
        _check_amg_options(opts, existing)
    elif method == "topk":
        _check_locations(opts["locations"], layout.depth)
    elif method == "pm":
        _check_pm_options(opts, rate)
    elif method == "tome":
        _check_tome_options(opts, layout)
    if statistic is not None and not isinstance(statistic, TaylorKeyScore):
        raise CompressionError(f"statistic must be a filled TaylorKeyScore; got {type(statistic).__name__}")
    if statistic is not None and method not in NEEDS_DATA:
        raise CompressionError(f"token method '{method}' uses no calibration statistic")
    if statistic is not None and data is not None:
        raise CompressionError("give calibration data or a filled statistic, not both")
    if statistic is not None:
        data = ()  # the plan builders take the scores from the statistic
    if method in NEEDS_DATA and data is None and not (method == "amg" and opts["selection"] == "random"):
        raise CompressionError(f"token method '{method}' needs calibration data (data=loader of batch dicts)")
    if isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 0:
        raise CompressionError(f"max_batches must be an int >= 0 (0 = the whole loader); got {max_batches}")

    where = f"token spec ({method})"
    spec: dict[str, Any] | TokenSpec | None = None
    if method == "topk":  # data-free plans are checked before the model is copied
        spec, details = _plan_topk(layout, rate, opts)
        spec = parse_spec(spec, layout.depth, layout.num_tokens, where=where)
    elif method == "tome":
        spec, details = _plan_tome(layout, rate, opts)
        spec = parse_spec(spec, layout.depth, layout.num_tokens, where=where)

    new_model = copy.deepcopy(model)
    new_layout = find_backbone(new_model)
    calib = {
        "statistic": statistic,
        "loss_fn": loss_fn,
        "max_batches": max_batches,
        "teacher": teacher,
        "device": device,
        "stochastic": stochastic,
    }
    pm_weights: dict[int, torch.Tensor] = {}
    if method == "amg":
        spec, details = _plan_amg(new_model, new_layout, existing, rate, data, opts, calib)
    elif method == "pm":
        spec, details, pm_weights = _plan_pm(new_model, new_layout, rate, data, opts, calib)
    spec = parse_spec(spec, new_layout.depth, new_layout.num_tokens, where=where)
    _attach(new_layout, spec, pm_weights)
    if arch is not None:
        new_model.arch = dataclasses.replace(arch, tokens=spec.to_dict())
    previous = plan_of(model)
    name = f"token-{method}"
    plan = (
        previous.then(name, rate, details) if previous is not None else CompressionPlan(name, rate, details)
    )
    new_model.compression_plan = plan
    return new_model, plan


# ----------------------------------------------------------------------------------------------- amg


def _check_amg_options(opts: dict[str, Any], existing: TokenSpec | None) -> None:
    if opts["mode"] is None:
        opts["mode"] = existing.mode if isinstance(existing, AmgSpec) else "kv"
    if opts["mode"] not in DEFAULT_DEPTH_DISCOUNT:
        raise CompressionError(f"amg mode must be 'kv' or 'skip'; got {opts['mode']!r}")
    if isinstance(existing, AmgSpec) and existing.mode != opts["mode"]:
        raise CompressionError(
            f"the model's AMG masks use mode '{existing.mode}'; a further round cannot switch to '{opts['mode']}'"
        )
    if opts["selection"] not in ("taylor", "random"):
        raise CompressionError(f"amg selection must be 'taylor' or 'random'; got {opts['selection']!r}")
    if opts["depth_discount"] is None:
        opts["depth_discount"] = DEFAULT_DEPTH_DISCOUNT[opts["mode"]]
    _check_number(opts["depth_discount"], "depth_discount", 0.0, 1.0)
    if isinstance(opts["min_keep"], bool) or not isinstance(opts["min_keep"], int) or opts["min_keep"] < 1:
        raise CompressionError(
            f"min_keep must be an int >= 1 (CLS alone keeps no patch); got {opts['min_keep']!r}"
        )


def _check_number(value: Any, name: str, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise CompressionError(f"{name} must be a number in [{low}, {high}]; got {value!r}")


def _alive(spec: AmgSpec | None, depth: int, num_tokens: int) -> torch.Tensor:
    """(L, N) bool: which positions each block currently keeps."""
    alive = torch.ones(depth, num_tokens, dtype=torch.bool)
    if spec is not None:
        for i, kept in enumerate(spec.kept):
            if kept is not None:
                alive[i] = False
                alive[i, list(kept)] = True
    return alive


def _calibrated_scores(
    model: nn.Module, layout: BackboneLayout, key_positions: list[Any], data: Any, calib: dict[str, Any]
) -> tuple[torch.Tensor, list[bool], dict[str, int]]:
    names = [layout.attn_name(i) for i in range(layout.depth)]
    stat = calib.pop("statistic")
    if stat is None:
        stat = TaylorKeyScore(names)
        summary = calibrate(model, data, [stat], **calib)
        seen = {"batches": summary.batches, "images": summary.images}
    else:  # filled by a calibration pass shared with other statistics (e.g. head entropy)
        seen = {"batches": max(stat.calls.values(), default=0), "images": -1}
    raw = scores_by_position(stat, names, key_positions, layout.num_tokens)
    scored = [name in stat.sums for name in names]
    if not any(scored):
        raise CompressionError(
            "calibration reached none of the backbone blocks (" + ", ".join(names[:2]) + ", ...); "
            "the model does not run its ViT blocks, or the statistic was collected on another model"
        )
    return raw, scored, seen


def _plan_amg(
    model: nn.Module,
    layout: BackboneLayout,
    existing: AmgSpec | None,
    rate: float,
    data: Any,
    opts: dict[str, Any],
    calib: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    depth, n_tok = layout.depth, layout.num_tokens
    alive = _alive(existing, depth, n_tok)
    calibration: dict[str, int] = {}
    if data is not None:
        keys = list(existing.kept) if existing is not None else [None] * depth
        raw, scored, calibration = _calibrated_scores(model, layout, keys, data, calib)
    else:
        raw = torch.where(alive, 0.0, float("nan")).double()
        raw[:, 0] = float("nan")
        scored = [True] * depth
    raw[torch.tensor([not s for s in scored])] = float("nan")
    scored_rank = torch.cumsum(torch.tensor(scored, dtype=torch.long), 0) - 1
    discount = 1.0 - opts["depth_discount"] * scored_rank.double()
    values = normalise_scores(raw, discount)
    n_scored = sum(scored)
    n_remove = math.floor(layout.num_patches * n_scored * rate)
    if opts["selection"] == "taylor":
        remove = select_lowest(values, n_remove, opts["min_keep"])
    else:
        gen = torch.Generator().manual_seed(int(opts["seed"]))
        if data is not None:
            per_block = select_lowest(values, n_remove, opts["min_keep"]).sum(dim=1)
        else:
            per_block = torch.zeros(depth, dtype=torch.long)
            per_block[torch.tensor(scored)] = uniform_counts(n_remove, n_scored)
        remove = select_random(values, per_block, gen, opts["min_keep"])
    alive &= ~remove
    kept = [None if bool(row.all()) else torch.nonzero(row).flatten().tolist() for row in alive]
    spec = {"method": "amg", "mode": opts["mode"], "num_tokens": n_tok, "kept": kept}
    details = {
        "mode": opts["mode"],
        "selection": opts["selection"],
        "depth_discount": opts["depth_discount"],
        "removed_pairs": n_remove,
        "scored_blocks": [i for i, s in enumerate(scored) if s],
        "kept_tokens": [int(row.sum()) for row in alive],
        "calibration": calibration,
        "scores": _json_scores(values) if data is not None else None,
    }
    return spec, details


def _json_scores(values: torch.Tensor) -> list[list[float | None]]:
    return [[None if math.isnan(v) else round(v, 6) for v in row] for row in values.tolist()]


# ---------------------------------------------------------------------------------------------- topk


def _check_locations(locations: Any, depth: int) -> None:
    if locations is None:
        return
    if not isinstance(locations, list | tuple) or not locations:
        raise CompressionError(f"topk locations must be a non-empty list of block indices; got {locations!r}")
    for loc in locations:
        if isinstance(loc, bool) or not isinstance(loc, int) or not 0 <= loc < depth:
            raise CompressionError(
                f"topk location {loc!r} is not a block index of this backbone (0..{depth - 1})"
            )
    if len(set(locations)) != len(locations):
        raise CompressionError(f"topk locations repeat a block: {list(locations)}")


def _plan_topk(
    layout: BackboneLayout, rate: float, opts: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    locations = (
        sorted(opts["locations"]) if opts["locations"] is not None else default_locations(layout.depth)
    )
    fuse = bool(opts["fuse"])
    keep: list[int | None] = [None] * layout.depth
    current = layout.num_patches
    for loc in locations:
        k = keep_count(current, 1.0 - rate)
        if k < current:
            keep[loc] = k
            current = k + int(fuse)
    spec = {"method": "topk", "num_tokens": layout.num_tokens, "fuse": fuse, "keep": keep}
    details = {"locations": locations, "keep_rate": 1.0 - rate, "fuse": fuse, "kept_tokens": keep}
    return spec, details


# ------------------------------------------------------------------------------------------------ pm


def _check_pm_options(opts: dict[str, Any], rate: float) -> None:
    _check_number(opts["prune_rate"], "prune_rate", 0.0, 1.0)
    _check_number(opts["depth_discount"], "depth_discount", 0.0, 1.0)
    opts["prune_rate"] = min(float(opts["prune_rate"]), rate)
    if isinstance(opts["min_keep"], bool) or not isinstance(opts["min_keep"], int) or opts["min_keep"] < 1:
        raise CompressionError(f"min_keep must be an int >= 1; got {opts['min_keep']!r}")
    if opts["restore"] not in RESTORES:
        raise CompressionError(f"pm restore must be one of {', '.join(RESTORES)}; got {opts['restore']!r}")


def _plan_pm(
    model: nn.Module,
    layout: BackboneLayout,
    rate: float,
    data: Any,
    opts: dict[str, Any],
    calib: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[int, torch.Tensor]]:
    depth, patches = layout.depth, layout.num_patches
    raw, scored, calibration = _calibrated_scores(model, layout, [None] * depth, data, calib)
    discount = 1.0 - opts["depth_discount"] * torch.arange(depth, dtype=torch.float64)
    values = normalise_scores(raw, discount)[:, 1:]
    rows = [i for i, s in enumerate(scored) if s]
    n_keep = len(rows) * math.floor(patches * (1.0 - rate))
    n_prune = len(rows) * math.floor(patches * opts["prune_rate"])
    pruned, centre = select_pm(values[rows], n_prune, n_keep, opts["min_keep"])
    segments: list[list[int] | None] = [None] * depth
    weights: dict[int, torch.Tensor] = {}
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
        "merged_tokens": [1 + len(c) if c is not None else layout.num_tokens for c in centres],
        "pruned_tokens": [int(pruned[r].sum()) for r in range(len(rows))],
        "centres": centres,
        "calibration": calibration,
    }
    return spec, details, weights


# ---------------------------------------------------------------------------------------------- tome


def _check_tome_options(opts: dict[str, Any], layout: BackboneLayout) -> None:
    r = opts["r"]
    if r is None:
        return
    values = r if isinstance(r, list | tuple) else [r]
    if isinstance(r, list | tuple) and len(r) != layout.depth:
        raise CompressionError(f"tome r has {len(r)} entries for {layout.depth} blocks")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CompressionError(f"tome r must be ints >= 0; got {value!r}")


def _plan_tome(
    layout: BackboneLayout, rate: float, opts: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    r = opts["r"]
    if r is None:
        # constant r removing about `rate` of the (block, patch) pairs: P L - r L^2 / 2 = (1 - rate) P L
        r = round(2.0 * rate * layout.num_patches / layout.depth)
    schedule, current = [], layout.num_tokens
    for i in range(layout.depth):
        ri = r[i] if isinstance(r, list | tuple) else min(r, tome_max_r(current))
        schedule.append(int(ri))
        current -= int(ri)
    spec = {
        "method": "tome",
        "num_tokens": layout.num_tokens,
        "prop_attn": bool(opts["prop_attn"]),
        "r": schedule,
    }
    details = {"r": schedule, "prop_attn": bool(opts["prop_attn"]), "final_tokens": current}
    return spec, details
