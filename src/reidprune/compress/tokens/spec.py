"""Token-reduction specs: what `arch.tokens` holds, validated, so that `build(arch)` rebuilds a model.

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

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reidprune.errors import CompressionError

METHODS = ("amg", "topk", "pm", "tome")
AMG_MODES = ("kv", "skip")


def _fail(where: str, message: str) -> CompressionError:
    return CompressionError(f"{where}: {message}")


def _int_list(value: Any, where: str) -> list[int]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise _fail(where, f"expected a list of ints, got {type(value).__name__}")
    out = []
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int):
            raise _fail(where, f"expected ints, found {item!r}")
        out.append(int(item))
    return out


def _prefixed(values: dict[str, Any], num_prefix_tokens: int) -> dict[str, Any]:
    """A spec dict, with num_prefix_tokens only when it is not the plain ViT's 1."""
    return values if num_prefix_tokens == 1 else {**values, "num_prefix_tokens": num_prefix_tokens}


def _per_block(values: Any, depth: int, where: str) -> list[Any]:
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise _fail(where, f"expected a list with one entry per block, got {type(values).__name__}")
    if len(values) != depth:
        raise _fail(where, f"has {len(values)} entries but the backbone has {depth} blocks")
    return list(values)


@dataclass(frozen=True)
class AmgSpec:
    mode: str
    num_tokens: int
    kept: tuple[tuple[int, ...] | None, ...]
    num_prefix_tokens: int = 1

    method = "amg"

    def to_dict(self) -> dict[str, Any]:
        return _prefixed(
            {
                "method": "amg",
                "mode": self.mode,
                "num_tokens": self.num_tokens,
                "kept": [list(k) if k is not None else None for k in self.kept],
            },
            self.num_prefix_tokens,
        )

    def kept_counts(self) -> list[int]:
        """Tokens (prefix included) that each block processes as keys (kv) or at all (skip)."""
        return [len(k) if k is not None else self.num_tokens for k in self.kept]


@dataclass(frozen=True)
class TopkSpec:
    num_tokens: int
    keep: tuple[int | None, ...]
    fuse: bool
    num_prefix_tokens: int = 1

    method = "topk"

    def to_dict(self) -> dict[str, Any]:
        return _prefixed(
            {"method": "topk", "num_tokens": self.num_tokens, "fuse": self.fuse, "keep": list(self.keep)},
            self.num_prefix_tokens,
        )

    def token_counts(self) -> list[int]:
        """Tokens (prefix and fused included) entering each block."""
        counts, current = [], self.num_tokens
        for keep in self.keep:
            counts.append(current)
            if keep is not None:
                current = self.num_prefix_tokens + keep + int(self.fuse)
        return counts


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
            return _prefixed(
                {
                    "method": "pm",
                    "num_tokens": self.num_tokens,
                    "dense": True,
                    "tokens": list(self.tokens or ()),
                },
                self.num_prefix_tokens,
            )
        return _prefixed(
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


@dataclass(frozen=True)
class TomeSpec:
    num_tokens: int
    r: tuple[int, ...]
    prop_attn: bool
    num_prefix_tokens: int = 1

    method = "tome"

    def to_dict(self) -> dict[str, Any]:
        return _prefixed(
            {
                "method": "tome",
                "num_tokens": self.num_tokens,
                "prop_attn": self.prop_attn,
                "r": list(self.r),
            },
            self.num_prefix_tokens,
        )

    def token_counts(self) -> list[int]:
        """Tokens entering each block."""
        counts, current = [], self.num_tokens
        for r in self.r:
            counts.append(current)
            current -= r
        return counts


TokenSpec = AmgSpec | TopkSpec | PmSpec | TomeSpec


def tome_max_r(num_tokens: int, num_prefix_tokens: int = 1) -> int:
    """Most tokens one bipartite matching can merge away: every set-A (even position) token that
    is not a prefix token, as long as some set-B token is not a prefix token either."""
    if num_tokens // 2 <= num_prefix_tokens // 2:
        return 0
    return max(0, math.ceil(num_tokens / 2) - math.ceil(num_prefix_tokens / 2))


def parse_spec(
    values: Mapping[str, Any] | TokenSpec,
    depth: int,
    num_tokens: int,
    where: str = "arch.tokens",
    num_prefix_tokens: int = 1,
) -> TokenSpec:
    """Validate a spec dict against a backbone with `depth` blocks and `num_tokens` tokens, the
    first `num_prefix_tokens` of them prefix tokens (class, distillation, registers)."""
    if isinstance(values, AmgSpec | TopkSpec | PmSpec | TomeSpec):
        values = values.to_dict()
    if not isinstance(values, Mapping):
        raise _fail(where, f"expected a dict, got {type(values).__name__}")
    method = values.get("method")
    if method not in METHODS:
        raise _fail(where, f"'method' must be one of {', '.join(METHODS)}; got {method!r}")
    allowed = {
        "amg": {"method", "mode", "num_tokens", "kept"},
        "topk": {"method", "num_tokens", "fuse", "keep"},
        "pm": {"method", "num_tokens", "dense", "segments", "tokens", "restore"},
        "tome": {"method", "num_tokens", "prop_attn", "r"},
    }[method]
    allowed = allowed | {"num_prefix_tokens"}
    unknown = set(values) - allowed
    if unknown:
        raise _fail(
            where, f"unknown keys {sorted(unknown)} for method '{method}' (expected {sorted(allowed)})"
        )
    spec_tokens = values.get("num_tokens")
    if spec_tokens != num_tokens:
        raise _fail(
            where,
            f"num_tokens={spec_tokens!r} but the backbone has {num_tokens} tokens "
            f"({num_prefix_tokens} prefix + patches); "
            "the spec was made for another input size or patch layout",
        )
    p = values.get("num_prefix_tokens", 1)
    if p != num_prefix_tokens:
        raise _fail(
            where,
            f"num_prefix_tokens={p!r} but the backbone has {num_prefix_tokens} prefix tokens "
            "(class, distillation, registers); the spec was made for another backbone",
        )
    if method == "amg":
        spec: TokenSpec = _parse_amg(values, depth, num_tokens, where, p)
    elif method == "topk":
        spec = _parse_topk(values, depth, num_tokens, where, p)
    elif method == "pm":
        spec = _parse_pm(values, depth, num_tokens, num_tokens - p, where)
    else:
        spec = _parse_tome(values, depth, num_tokens, where, p)
    return dataclasses.replace(spec, num_prefix_tokens=num_prefix_tokens)


def _parse_amg(values: Mapping[str, Any], depth: int, num_tokens: int, where: str, prefix: int) -> AmgSpec:
    mode = values.get("mode")
    if mode not in AMG_MODES:
        raise _fail(where, f"amg 'mode' must be 'kv' or 'skip'; got {mode!r}")
    kept: list[tuple[int, ...] | None] = []
    for i, entry in enumerate(_per_block(values.get("kept"), depth, f"{where}.kept")):
        if entry is None:
            kept.append(None)
            continue
        positions = _int_list(entry, f"{where}.kept[{i}]")
        if positions[:prefix] != list(range(prefix)):
            first = "position 0" if prefix == 1 else f"positions 0..{prefix - 1}"
            raise _fail(
                f"{where}.kept[{i}]", f"must start with {first} (CLS is never removed, nor any prefix token)"
            )
        if any(b <= a for a, b in itertools.pairwise(positions)):
            raise _fail(f"{where}.kept[{i}]", "positions must be strictly increasing")
        if positions[-1] >= num_tokens:
            raise _fail(f"{where}.kept[{i}]", f"position {positions[-1]} is outside 0..{num_tokens - 1}")
        if len(positions) < prefix + 1:
            raise _fail(f"{where}.kept[{i}]", "keeps no patch token")
        kept.append(tuple(positions))
    return AmgSpec(mode=mode, num_tokens=num_tokens, kept=tuple(kept))


def _parse_topk(values: Mapping[str, Any], depth: int, num_tokens: int, where: str, prefix: int) -> TopkSpec:
    fuse = values.get("fuse", False)
    if not isinstance(fuse, bool):
        raise _fail(where, f"'fuse' must be true or false; got {fuse!r}")
    keep: list[int | None] = []
    current = num_tokens - prefix  # non-prefix tokens entering the block
    for i, entry in enumerate(_per_block(values.get("keep"), depth, f"{where}.keep")):
        if entry is None:
            keep.append(None)
            continue
        if isinstance(entry, bool) or not isinstance(entry, int):
            raise _fail(f"{where}.keep[{i}]", f"expected an int or null, got {entry!r}")
        if entry < 1:
            raise _fail(f"{where}.keep[{i}]", f"keeps {entry} patch tokens; at least 1 is needed")
        if entry >= current:
            raise _fail(f"{where}.keep[{i}]", f"keeps {entry} of the {current} tokens that reach block {i}")
        keep.append(int(entry))
        current = entry + int(fuse)
    return TopkSpec(num_tokens=num_tokens, keep=tuple(keep), fuse=fuse)


def _parse_pm(values: Mapping[str, Any], depth: int, num_tokens: int, patches: int, where: str) -> PmSpec:
    dense = values.get("dense", False)
    if not isinstance(dense, bool):
        raise _fail(where, f"'dense' must be true or false; got {dense!r}")
    if dense:
        tokens: list[int | None] = []
        for i, entry in enumerate(_per_block(values.get("tokens"), depth, f"{where}.tokens")):
            if entry is not None and (
                isinstance(entry, bool) or not isinstance(entry, int) or not 2 <= entry <= num_tokens
            ):
                raise _fail(
                    f"{where}.tokens[{i}]", f"expected an int in 2..{num_tokens} or null, got {entry!r}"
                )
            tokens.append(entry)
        if values.get("restore", "projection") != "projection":
            raise _fail(f"{where}.restore", "dense merge / restore matrices restore by projection only")
        return PmSpec(num_tokens=num_tokens, dense=True, tokens=tuple(tokens))
    segments: list[tuple[int, ...] | None] = []
    for i, entry in enumerate(_per_block(values.get("segments"), depth, f"{where}.segments")):
        if entry is None:
            segments.append(None)
            continue
        seg = _int_list(entry, f"{where}.segments[{i}]")
        if len(seg) != patches:
            raise _fail(f"{where}.segments[{i}]", f"has {len(seg)} entries for {patches} patches")
        used = sorted({s for s in seg if s >= 0})
        if not used:
            raise _fail(f"{where}.segments[{i}]", "keeps no patch token")
        if min(seg) < -1 or used != list(range(len(used))):
            raise _fail(f"{where}.segments[{i}]", "segment ids must be -1 (pruned) or 0..K-1, each used")
        segments.append(tuple(seg))
    restore = values.get("restore", "projection")
    if restore not in ("residual", "projection"):
        raise _fail(f"{where}.restore", f"expected 'residual' or 'projection', got {restore!r}")
    return PmSpec(num_tokens=num_tokens, dense=False, segments=tuple(segments), restore=restore)


def _parse_tome(values: Mapping[str, Any], depth: int, num_tokens: int, where: str, prefix: int) -> TomeSpec:
    prop_attn = values.get("prop_attn", True)
    if not isinstance(prop_attn, bool):
        raise _fail(where, f"'prop_attn' must be true or false; got {prop_attn!r}")
    r = _int_list(_per_block(values.get("r"), depth, f"{where}.r"), f"{where}.r")
    current = num_tokens
    for i, ri in enumerate(r):
        most = tome_max_r(current, prefix)
        if ri < 0 or ri > most:
            raise _fail(
                f"{where}.r[{i}]",
                f"r={ri} but block {i} sees {current} tokens; one matching merges 0..{most}",
            )
        current -= ri
    return TomeSpec(num_tokens=num_tokens, r=tuple(r), prop_attn=prop_attn)
