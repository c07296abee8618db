"""Measured sensitivity: how far each group's removals, on their own, move the model's embeddings.

    space = with_sensitivity(model, space, proxy, points=4)   # every group gets a `curve`

A group's normalised scores say WHICH of its units go first, but not what its units are worth
against another group's: one of a block's three heads and a third of its tokens both hold "a third
of the block's signal", yet removing them hurts the embeddings very differently, and a block
whose scores are concentrated looks nearly free to empty (seen on the demo ViT: the score-only
search kept 11 of 33 tokens in block 0 and one head in block 2, and lost 5-10 mAP against uniform
plans at the same latency). So for every group the model is built with only that group's first
n units removed, at `points` counts spread over what the group can lose, and scored by the
proxy (`proxy.EmbeddingProxy`: cosine distance to the teacher's embeddings). The curve through
(0, 0) and those points is the group's loss (`Group.loss`); every kind is then on one scale,
the proxy's, and the search trades a head for tokens by what each does to the embeddings.

Cost: groups x points eval passes over the proxy's images (the demo ViT: 8 groups x 4 points
on 64 images, about a second). The curves are kept on disk (`cache`: one JSON file per
fingerprint of the weights, the images, the groups and the points), so the searches of a
frontier, or a re-run, measure them once. Summing the groups' losses ignores how removals
interact; the search re-predicts the COST of every plan, and the proxy then compares whole
candidate plans.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reidprune.atomic import write_json
from reidprune.budget.cache import cache_subdir
from reidprune.budget.candidates import Curve, SearchSpace, apply_plan

MIN_SLOPE = 1e-9  # a removal is never free: equal proxies still order the groups by their scores
FORMAT = 1  # of the cached curves; files of another format are measured again


def default_cache_dir() -> Path:
    """$REIDPRUNE_CACHE/sensitivity, else ~/.cache/reidprune/sensitivity."""
    return cache_subdir("sensitivity")


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def fingerprint(
    model: nn.Module, batches: Sequence[Mapping[str, Any]], space: SearchSpace, points: int
) -> str:
    """What the curves depend on: the weights and architecture, the proxy's images (and cameras),
    the groups (units, order, step, capacity) and the number of points."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(_tensor_bytes(tensor))
    digest.update(repr(getattr(model, "arch", None)).encode())
    for batch in batches:
        for key in ("image", "camid"):
            if isinstance(batch.get(key), torch.Tensor):
                digest.update(key.encode())
                digest.update(_tensor_bytes(batch[key]))
    empty = [0] * len(space.groups)
    groups = [
        [g.kind, g.block, g.slot, g.name, list(g.order), g.step, space.capacity(empty, i)]
        for i, g in enumerate(space.groups)
    ]
    layout = [space.family, space.mode, space.token_method, space.num_prefix, points]
    digest.update(json.dumps([groups, layout]).encode())
    return digest.hexdigest()


def sample_counts(capacity: int, step: int, points: int) -> list[int]:
    """Up to `points` distinct removal counts in (0, capacity], evenly spread, multiples of `step`
    where possible, always ending at `capacity`."""
    if capacity <= 0:
        return []
    counts = set()
    for k in range(1, points + 1):
        n = round(capacity * k / points / step) * step
        counts.add(min(capacity, max(step, n)))
    counts.add(capacity)
    return sorted(counts)


def monotone_curve(counts: list[int], values: list[float]) -> Curve:
    """(count, loss) points, each at least MIN_SLOPE per unit above the previous (the proxy is not
    exactly monotone in the units removed; losing more never counts as gaining)."""
    out: list[tuple[int, float]] = []
    last_n, last_v = 0, 0.0
    for n, v in zip(counts, values, strict=True):
        last_v = max(float(v), last_v + MIN_SLOPE * (n - last_n))
        last_n = n
        out.append((n, last_v))
    return tuple(out)


def with_sensitivity(
    model: nn.Module,
    space: SearchSpace,
    proxy: Callable[[nn.Module], float],
    points: int = 4,
    cache: Path | None = None,
    key: str | None = None,
    base: Sequence[int] | None = None,
) -> SearchSpace:
    """A copy of `space` whose groups carry their measured loss curves (see the module docstring).

    base: a plan already chosen (a search stage, `staged_key`): each group's curve is then measured
    from it, the plan with the group's further removals against the plan itself, and joined to the
    group's current loss at base[g] (the part below base[g] is kept), so removals are priced where
    the search now stands: once blocks 2 and 3 have lost their tokens, block 1's tokens are worth
    more than they were on the dense model. With `cache` (a folder) and `key` (`fingerprint`, or
    `staged_key` with a base), curves stored under the key are read instead of measured, and
    measured ones are stored."""
    base = list(base) if base is not None else [0] * len(space.groups)
    path = cache / f"{key}.json" if cache is not None and key is not None else None
    curves = _read(path, len(space.groups))
    cached = curves is not None
    if curves is None:
        start = proxy(apply_plan(model, space, base)) if any(base) else 0.0
        curves = [
            _measure(model, space, proxy, points, index, base, start) for index in range(len(space.groups))
        ]
        if path is not None:
            write_json(
                path, {"format": FORMAT, "points": points, "curves": [list(map(list, c)) for c in curves]}
            )
    groups = [dataclasses.replace(g, curve=c) for g, c in zip(space.groups, curves, strict=True)]
    previous = space.info.get("importance", {})
    stages = previous.get("stages", 0) + 1 if previous.get("kind") == "sensitivity" else 1
    info = {
        **space.info,
        "importance": {"kind": "sensitivity", "points": points, "stages": stages, "cached": cached},
    }
    return dataclasses.replace(space, groups=groups, info=info)


def staged_key(key: str, base: Sequence[int], space: SearchSpace) -> str:
    """The cache key of curves measured from the plan `base` of the space fingerprinted by `key`,
    whose groups carry the curves the new ones continue (they keep their part below the base)."""
    curves = [g.curve for g in space.groups]
    return hashlib.sha256(json.dumps([key, list(base), curves]).encode()).hexdigest()


def _measure(
    model: nn.Module,
    space: SearchSpace,
    proxy: Callable[[nn.Module], float],
    points: int,
    index: int,
    base: list[int],
    start: float,
) -> Curve | None:
    group, done = space.groups[index], base[index]
    counts: list[int] = []
    if done:  # the curve below the base stays; the new part starts at the group's loss there
        counts = [n for n, _ in group.curve or () if n < done] + [done]
    values = [group.loss(n) for n in counts]
    anchor = group.loss(done)
    for extra in sample_counts(space.capacity(base, index), group.step, points):
        removed = base.copy()
        removed[index] += extra
        counts.append(done + extra)
        values.append(anchor + proxy(apply_plan(model, space, removed)) - start)
    if not counts:  # nothing removed and nothing removable: keep what the group had
        return group.curve
    return monotone_curve(counts, values)


def _read(path: Path | None, groups: int) -> list[Curve | None] | None:
    """The curves stored at `path`; None when there is no usable file (missing, unreadable, another
    format or group count: measured again and overwritten)."""
    if path is None or not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
        if payload.get("format") != FORMAT or len(payload["curves"]) != groups:
            return None
        return [
            None if curve is None else tuple((int(n), float(v)) for n, v in curve)
            for curve in payload["curves"]
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
