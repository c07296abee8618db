"""The token-reduction method table, and what the model layer does with a spec.

Adding a method: one module (its spec, options, checks, planning and reducers, ending with
`METHOD = TokenMethod(...)`) and one entry in `METHODS`. Every name a method is known by (its
aliases included) is defined by its `TokenMethod`, nowhere else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from reidprune.errors import CompressionError
from reidprune.models.tokens import amg, pm, tome, topk
from reidprune.models.tokens.layout import BackboneLayout, find_backbone
from reidprune.models.tokens.method import TokenMethod
from reidprune.models.tokens.spec import spec_error

METHODS: dict[str, TokenMethod] = {m.name: m for m in (amg.METHOD, topk.METHOD, pm.METHOD, tome.METHOD)}
ALIASES: dict[str, str] = {alias: m.name for m in METHODS.values() for alias in m.aliases}

TokenSpec = amg.AmgSpec | topk.TopkSpec | pm.PmSpec | tome.TomeSpec
_COMMON_KEYS = frozenset({"method", "num_tokens", "num_prefix_tokens"})


def method_named(name: str) -> TokenMethod:
    """The method called `name` or one of its aliases ("token-amg", ...); CompressionError otherwise."""
    method = METHODS.get(ALIASES.get(name, name)) if isinstance(name, str) else None
    if method is None:
        raise CompressionError(f"unknown token method {name!r}; expected one of {', '.join(METHODS)}")
    return method


def parse_spec(
    values: Mapping[str, Any] | TokenSpec,
    depth: int,
    num_tokens: int,
    where: str = "arch.tokens",
    num_prefix_tokens: int = 1,
) -> TokenSpec:
    """Validate a spec dict against a backbone with `depth` blocks and `num_tokens` tokens, the
    first `num_prefix_tokens` of them prefix tokens (class, distillation, registers)."""
    if isinstance(values, TokenSpec):
        values = values.to_dict()
    if not isinstance(values, Mapping):
        raise spec_error(where, f"expected a dict, got {type(values).__name__}")
    name = values.get("method")
    if name not in METHODS:
        raise spec_error(where, f"'method' must be one of {', '.join(METHODS)}; got {name!r}")
    method = METHODS[name]
    allowed = method.spec_keys | _COMMON_KEYS
    unknown = set(values) - allowed
    if unknown:
        raise spec_error(
            where, f"unknown keys {sorted(unknown)} for method '{name}' (expected {sorted(allowed)})"
        )
    spec_tokens = values.get("num_tokens")
    if spec_tokens != num_tokens:
        raise spec_error(
            where,
            f"num_tokens={spec_tokens!r} but the backbone has {num_tokens} tokens "
            f"({num_prefix_tokens} prefix + patches); "
            "the spec was made for another input size or patch layout",
        )
    prefix = values.get("num_prefix_tokens", 1)
    if prefix != num_prefix_tokens:
        raise spec_error(
            where,
            f"num_prefix_tokens={prefix!r} but the backbone has {num_prefix_tokens} prefix tokens "
            "(class, distillation, registers); the spec was made for another backbone",
        )
    spec = method.parse(values, depth, num_tokens, where, num_prefix_tokens)
    return dataclasses.replace(spec, num_prefix_tokens=num_prefix_tokens)


def parse_for(
    layout: BackboneLayout, spec: Mapping[str, Any] | TokenSpec, where: str = "arch.tokens"
) -> TokenSpec:
    """parse_spec against the backbone `layout` describes."""
    return parse_spec(spec, layout.depth, layout.num_tokens, where, layout.num_prefix_tokens)


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
    parsed = parse_for(layout, spec) if spec is not None else None
    attach(layout, parsed)
    return parsed


def attach(
    layout: BackboneLayout, spec: TokenSpec | None, weights: Mapping[int, torch.Tensor] | None = None
) -> None:
    """Set every block's reducer from a parsed spec (None removes them); weights: initial reducer
    weights by block index, from the method's plan."""
    reducers: list[nn.Module | None] = [None] * layout.depth
    if spec is not None:
        reducers = list(METHODS[spec.method].reducers(spec, layout, weights or {}))
    for block, reducer in zip(layout.blocks, reducers, strict=True):
        if reducer is not None:
            param = next(block.parameters(), None)
            if param is not None:
                reducer = reducer.to(param.device)
        block.reducer = reducer
    layout.vit.token_spec = spec
