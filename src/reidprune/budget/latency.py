"""Predicted latency of a (compressed) model on its deployment runtime, from measured cost tables.

    prediction = predict_latency(model, runtime="onnxruntime", batch=1, threads=2)
    prediction["predicted_ms"], prediction["blocks"]          # whole model, and per block
    measure_latency(model, runtime="onnxruntime", batch=1, threads=2)["median_ms"]

Whole-model latency = one runtime call + stem and head (fixed) + the sum over blocks, each term
measured by timing isolated probes (`budget.probes`) on the runtime, net of the call overhead:

- ViT block = attention half (queries, keys / values, heads) + MLP half (tokens, hidden width)
  [+ the reducer's own work]. The halves come from tables measured on a grid: tokens at fractions
  of the model's token count, keys at fractions of the queries, heads at {1, H/2, H} and MLP widths
  at fractions of the full width, interpolated multilinearly on a monotone grid (`budget.grid`).
  What a reducer changes is read from the token spec (`reidprune.compress.tokens.current_spec`):
  AMG kv (all queries, kept keys), AMG skip (only kept tokens go through), top-k (attention on all,
  MLP on the kept), ToMe (attention on all, MLP on the merged), PM (both on the merged tokens).
  AMG, top-k and ToMe reducers add their own work as an extra measured once per model family (AMG:
  a fixed ms per kind; top-k / ToMe: a table over the tokens entering the block, `_drop_extra`),
  so that every plan of the budget search is priced from tables alone. A PM block is timed once as
  it is, and what it costs beyond the two halves is kept as a fraction, which PM blocks not yet
  timed reuse.
- ResNet block = a table over its internal conv widths (bottleneck conv1 x conv2, basic conv1) for
  each (block type, input channels, spatial size, stage width, stride), built from the block class.
- Stem and head: a ViT with its blocks removed (patch embedding, CLS / position / camera
  embeddings, final norm, pooling, BNNeck / JPM / LA head); a ResNet's conv stem and its pooling
  and head, timed separately.

Two things keep the sum of isolated pieces close to the whole graph:

- chains: a ViT half is timed as `chain` identical copies in a row, each fed the previous one's
  output as in the real graph, and divided by `chain` (one isolated op on a tiny input stays in
  cache and hides the cost of reading its weights and activations);
- calibration: once per (setting, architecture) the dense model of the family is measured whole
  (`measure_latency`, the exported graph; cached with the points, `whole|...`). ViT: the blocks'
  share of it divided by the predicted blocks' sum; that scale multiplies every block's cost, so
  the dense model is predicted as measured and a compressed one carries the same correction. The
  graph is timed next to its own dense halves and brought to the tables' rounds by their ratio
  (`_wholes(anchors=)`), and all of a ViT family's points are timed in one set of rounds
  (`_collected`), so that the scale and the reducers' extras compare figures of one load.
  ResNet: a second reference with every internal width halved is measured whole too
  (`half_width_reference`, `whole|...|mids=half`, timed in the same rounds), and a block costs
  scale x (table - offset), the offset proportional to the block's input + output elements (at
  most its cheapest table point): an isolated probe pays for feeding its input and copying out
  its output (and, on ONNX Runtime, reordering both to and from the blocked conv layout), which
  do not shrink with the widths and which the whole graph pays less of; a single scale made them
  shrink and priced pruned blocks too high (x1.5 / x2 plans ran x1.55 / x2.18). Scale and offset
  are fitted so that both references are predicted as measured (`budget.calibration`; the
  one-point scale when that is degenerate); the prediction's "calibration" says what was fitted.
  AMG reducers (the search's token masks) cost a fixed extra per block (their gathers), timed once
  per kind on a block of the family's full size keeping half of its tokens.

- load meter: every point is timed in the same interleaved rounds as one fixed workload, and kept
  as the median per-round ratio times that workload's (cached) time, so that points timed minutes
  apart on a machine whose load changes stay comparable (`LatencyModel._time`); the meter is
  timed in steady state like the probes and is work of their kind and size (`probes.LoadMeter`).

Every timed point is cached per (CPU model, runtime and version, threads, batch) in a JSON file
(`budget.cache`), so a second prediction for any plan of the same model family measures nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from reidprune.budget.cache import LatencyCache, Setting
from reidprune.budget.calibration import block_offsets, fit_two_point, one_point
from reidprune.budget.grid import check_grid, interpolate, monotone
from reidprune.budget.probes import (
    AttentionProbe,
    BlockProbe,
    CallOverhead,
    EmbeddingProbe,
    FeatureMapHead,
    IdentityBlock,
    LoadMeter,
    MlpProbe,
)
from reidprune.budget.runtimes import Runner, setting_for
from reidprune.measure.timing import interleaved_times
from reidprune.models.forward import model_input_size
from reidprune.models.vit import VisionTransformer

Probe = Callable[[], tuple[nn.Module, tuple[Tensor, ...]]]  # builds (module, example inputs) on demand


@dataclass(frozen=True)
class Grid:
    """Where the tables are measured, as fractions of the model's full size (1.0 always included)."""

    token_fractions: tuple[float, ...] = (0.125, 0.25, 0.5, 0.75, 1.0)
    kv_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    head_fractions: tuple[float, ...] = (0.0, 0.5, 1.0)  # 0.0 = one head
    width_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)


# two points per axis: a quick, rougher table (`--coarse-grid`; the tests and --smoke benchmarks)
COARSE_GRID = Grid(
    token_fractions=(0.5, 1.0), kv_fractions=(0.5, 1.0), head_fractions=(0.0, 1.0), width_fractions=(0.5, 1.0)
)


def axis(full: int, fractions: Sequence[float], low: int = 1) -> list[int]:
    """Grid values: ceil(f * full) for every fraction, at least `low`, always `full`, increasing."""
    return sorted({max(low, min(full, math.ceil(f * full - 1e-9))) for f in fractions} | {full})


@dataclass
class BlockCost:
    """One block's geometry and predicted milliseconds (net of the call overhead, calibrated)."""

    index: int
    kind: str  # "dense" | "amg-kv" | "amg-skip" | "topk" | "tome" | "pm" | "bottleneck" | "basic"
    ms: float
    geometry: dict[str, int] = field(default_factory=dict)
    approximate: bool = False  # True when part of the figure is estimated, not measured for this geometry


@dataclass(frozen=True)
class Table:
    """Measured milliseconds on a rectilinear grid, made monotone; `at(point)` interpolates."""

    axes: tuple[tuple[float, ...], ...]
    values: np.ndarray

    def __post_init__(self) -> None:
        check_grid(self.axes, self.values)

    def at(self, point: Sequence[float]) -> float:
        return interpolate(self.axes, self.values, point, check=False)


AMG_KINDS = ("amg-kv", "amg-skip")
DROP_KINDS = ("topk", "tome")  # reducers that shorten the sequence: extra ms over the tokens entering
METER = "load-meter"  # the load meter's name among timed callables and its cached milliseconds


@dataclass(frozen=True)
class VitBlockTables:
    """What one ViT block's cost is read from: its two halves' tables, the AMG reducers' extra ms and
    the top-k / ToMe reducers' extra ms over the tokens entering the block."""

    attention: Table
    mlp: Table
    reducer_ms: dict[str, float]  # AMG kind -> extra milliseconds of its gathers (uncalibrated)
    reducer_tables: dict[str, Table] = field(default_factory=dict)  # top-k / ToMe kind -> extra ms


def vit_block_ms(tables: VitBlockTables, geo: dict[str, Any], scale: float) -> float:
    """Calibrated milliseconds of a ViT block of `geo` (vit_geometry's keys); dense, AMG, top-k and
    ToMe kinds (top-k / ToMe: attention on the tokens entering, MLP on those left, plus the
    reducer's extra at `tokens_in`).

    The one formula both `LatencyModel.predict` and the search's cost model use, so they agree exactly."""
    raw = tables.attention.at([geo["queries"], geo["keys"] / geo["queries"], geo["heads"]])
    raw += tables.mlp.at([geo["mlp_tokens"], geo["hidden"]])
    kind = geo["kind"]
    if kind in tables.reducer_tables:
        raw += tables.reducer_tables[kind].at([geo["tokens_in"]])
    elif kind in DROP_KINDS:
        raise LookupError(f"no '{kind}' reducer table was built for this block (vit_tables(kinds=...))")
    return scale * (raw + tables.reducer_ms.get(kind, 0.0))


def resnet_block_ms(table: Table, mids: Sequence[int], scale: float, offset: float = 0.0) -> float:
    """Calibrated milliseconds of a ResNet block of internal widths `mids`: scale * (table - offset),
    never below 0; offset = the fitted per-element offset times the block's I/O (`resnet_offsets`).

    The one formula both `LatencyModel.predict` and the search's cost model use, so they agree exactly."""
    return scale * max(0.0, table.at(mids) - offset)


def resnet_offsets(tables: dict[str, Any], calibration: dict[str, Any] | None) -> list[float]:
    """Per block of `resnet_tables`, the table milliseconds the calibration takes off before scaling:
    its offset per element times the block's I/O, at most the block's cheapest point."""
    per_io = (calibration or {}).get("offset_ms_per_element", 0.0)
    return block_offsets(per_io, tables["io"], [float(t.values.min()) for t in tables["blocks"]])


class LatencyModel:
    """Cost tables for one setting (runtime, batch, threads on this machine), measured on demand.

    cache: a JSON file or a folder (default ~/.cache/reidprune/latency). measure=False: never time
    anything, raise when a needed table point is missing. min_time: seconds to time each point.
    chain: copies of a ViT half timed in a row (see the module doc). calibrate: correct block
    costs by whole measurements of the family's dense model (and, for a ResNet, its half-width
    reference), calib_time seconds each (measure=False and not cached: scale 1; a ResNet's half
    reference not cached: the dense one's scale alone). normalise: time every point against a
    fixed load meter (`_time`).
    """

    def __init__(
        self,
        runtime: str = "onnxruntime",
        batch: int = 1,
        threads: int | None = None,
        *,
        cache: str | Path | None = None,
        grid: Grid | None = None,
        measure: bool = True,
        min_time: float = 0.3,
        chain: int = 4,
        calibrate: bool = True,
        calib_time: float = 2.0,
        normalise: bool = True,
    ) -> None:
        if isinstance(chain, bool) or not isinstance(chain, int) or chain < 1:
            raise ValueError(f"chain={chain!r}: expected an int >= 1")
        self.setting: Setting = setting_for(runtime, batch, threads)
        self.cache = LatencyCache(self.setting, cache)
        self.grid = grid or Grid()
        self.measure = measure
        self.min_time = min_time
        self.chain = chain
        self.calibrate = calibrate
        self.calib_time = calib_time
        self.normalise = normalise
        self._runner: Runner | None = None
        self._meter: Callable[[], Any] | None = None
        # while collecting (`_collected`): missing points by signature -> (probe, chain, net), not timed
        self._pending: dict[str, tuple[Probe, int, bool]] | None = None

    # -- measuring ---------------------------------------------------------------------------
    def __enter__(self) -> LatencyModel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Save newly measured points and release the runtime's temporary files."""
        if self.cache.measured:
            self.cache.save()
        if self._runner is not None:
            self._runner.__exit__(None, None, None)
            self._runner, self._meter = None, None

    def _missing(self, signature: str) -> LookupError:
        return LookupError(
            f"{signature}: not in the latency table {self.cache.path}; predict with measure=True "
            "(or without --no-measure) once to time it"
        )

    def point(self, signature: str, probe: Probe, net: bool = True, chain: int = 1) -> float:
        """Milliseconds of the probe named `signature` (net of the call overhead when `net`);
        chain > 1: the probe's module is repeated `chain` times in a row and the time divided."""
        value = self.cache.get(signature)
        if value is None and self._pending is not None and self.measure:
            self._pending[signature] = (probe, chain, net and signature != "call")
            return 0.0  # a placeholder: the collecting pass's figures are thrown away
        if value is None:
            if not self.measure:
                raise self._missing(signature)
            module, inputs = probe()
            if chain > 1:
                module = nn.Sequential(module, *(copy.deepcopy(module) for _ in range(chain - 1)))
            value = self._time(self.runner.callable(module, inputs), self.min_time)
            if net and signature != "call":
                value = max(0.0, value - self.call_ms())
            value /= chain
            self.cache.put(signature, value)
        return value

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            self._runner = Runner(self.setting).__enter__()
        return self._runner

    def _time(self, fn: Callable[[], Any], min_time: float) -> float:
        return self._time_many({"fn": fn}, min_time)["fn"]

    def _time_many(self, fns: dict[str, Callable[[], Any]], min_time: float) -> dict[str, float]:
        """Milliseconds of one call of every callable, all timed in the same interleaved rounds (a
        whole table under one load). normalise: a fixed load meter (`LoadMeter`) runs in the same
        rounds and each figure is the median per-round ratio times the meter's cached milliseconds,
        so that a table timed while other processes slowed the machine by 2x is not 2x too slow;
        else the plain medians. The meter runs in steady state as every probe does (`LoadMeter`
        says why it is not timed cold)."""
        run = self.runner
        if not self.normalise:
            times = interleaved_times(fns, min_time=min_time, warmup=2, min_rounds=5, device=run.device)
            return {name: statistics.median(samples) * 1e3 for name, samples in times.items()}
        if self._meter is None:
            self._meter = meter_call(run, self.setting.batch)
        meter = self._meter
        reference = self.cache.get(METER)
        if reference is None:
            samples = interleaved_times(
                {METER: meter},
                min_time=max(1.0, 4 * self.min_time),
                warmup=2,
                min_rounds=5,
                device=run.device,
            )[METER]
            reference = statistics.median(samples) * 1e3
            self.cache.put(METER, reference)
        times = interleaved_times(
            {**fns, METER: meter}, min_time=min_time, warmup=2, min_rounds=5, device=run.device
        )
        return {name: at_meter_reference(times[name], times[METER], reference) for name in fns}

    def _fill(
        self, shape: tuple[int, ...], entries: list[tuple[tuple[int, ...], str, Probe]], chain: int
    ) -> np.ndarray:
        """A table of the given shape from (index, signature, probe) entries; the points not cached
        are timed together in the same interleaved rounds (one table, one load), net of the call."""
        missing = {sig: probe for _, sig, probe in entries if sig not in self.cache}
        if missing and self._pending is not None and self.measure:
            self._pending.update({sig: (probe, chain, True) for sig, probe in missing.items()})
            return np.zeros(shape)  # a placeholder: the collecting pass's figures are thrown away
        if missing:
            if not self.measure:
                raise self._missing(next(iter(missing)))
            self._time_points({sig: (probe, chain, True) for sig, probe in missing.items()})
        values = np.zeros(shape)
        for index, sig, _ in entries:
            values[index] = self.cache.points[sig]
        return values

    def _time_points(self, points: dict[str, tuple[Probe, int, bool]]) -> None:
        """Time and cache the (probe, chain, net) points by signature, all in the same interleaved
        rounds (one load), each net of the call overhead when `net`, per copy of a chain."""
        if not points:
            return
        call = self.call_ms() if any(net for _, _, net in points.values()) else 0.0
        fns = {}
        for sig, (probe, chain, _) in points.items():
            module, inputs = probe()
            if chain > 1:
                module = nn.Sequential(module, *(copy.deepcopy(module) for _ in range(chain - 1)))
            fns[sig] = self.runner.callable(module, inputs)
        for sig, value in self._time_many(fns, self.min_time * len(fns)).items():
            _, chain, net = points[sig]
            self.cache.put(sig, max(0.0, value - (call if net else 0.0)) / chain)

    def _collected(self, build: Callable[[], Any]) -> Any:
        """`build()` with every point it needs timed first, all in ONE set of interleaved rounds:
        a first pass only collects the missing points (`point` / `_fill` return placeholders),
        then they are timed together, then `build` runs on the cache. Tables timed in separate
        rounds disagreed by up to 10 % even through the load meter, and a reducer's extra (a
        block minus its halves) took the whole disagreement."""
        if not self.measure or self._pending is not None:
            return build()
        self.call_ms()  # the overhead every other point is net of, first
        self._pending = {}
        try:
            build()
            pending = self._pending
        finally:
            self._pending = None
        self._time_points(pending)
        return build()

    def call_ms(self) -> float:
        """What one runtime call costs with (almost) nothing to compute."""
        return self.point("call", lambda: (CallOverhead(), (torch.zeros(self.setting.batch, 8),)), net=False)

    def _tokens(self, dim: int, n: int) -> tuple[Tensor]:
        return (torch.randn(self.setting.batch, n, dim),)

    def _chained(self, signature: str) -> str:
        return f"{signature}|chain={self.chain}" if self.chain > 1 else signature

    # -- ViT tables --------------------------------------------------------------------------
    def _attention_point(
        self, dim: int, head_dim: int, bias: bool, geo: tuple[int, int, int]
    ) -> tuple[str, Probe]:
        """(signature, probe) of the attention half at (queries, keys, heads) = geo, chained."""
        q, kv, h = geo
        sig = f"attn|dim={dim}|head_dim={head_dim}|bias={int(bias)}|heads={h}|q={q}|kv={kv}"
        return self._chained(sig), lambda: (
            AttentionProbe(dim, h, head_dim, bias, q, kv),
            self._tokens(dim, q),
        )

    def _mlp_point(self, dim: int, hidden: int, tokens: int) -> tuple[str, Probe]:
        """(signature, probe) of the MLP half of width `hidden` on `tokens` tokens, chained."""
        sig = f"mlp|dim={dim}|hidden={hidden}|n={tokens}"
        return self._chained(sig), lambda: (MlpProbe(dim, hidden), self._tokens(dim, tokens))

    def attention_table(self, dim: int, head_dim: int, bias: bool, full: tuple[int, int]) -> Table:
        """Attention half over (queries, keys / queries, heads) in a model of (tokens, heads) = full."""
        tokens_axis = axis(full[0], self.grid.token_fractions, 2)
        heads_axis = axis(full[1], self.grid.head_fractions)
        kv_axis = sorted(set(self.grid.kv_fractions) | {1.0})
        entries = []
        for i, q in enumerate(tokens_axis):
            for j, f in enumerate(kv_axis):
                kv = max(1, math.ceil(f * q - 1e-9))
                for k, h in enumerate(heads_axis):
                    entries.append(((i, j, k), *self._attention_point(dim, head_dim, bias, (q, kv, h))))
        values = self._fill((len(tokens_axis), len(kv_axis), len(heads_axis)), entries, self.chain)
        return Table((tuple(tokens_axis), tuple(kv_axis), tuple(heads_axis)), monotone(values))

    def attention_ms(
        self, dim: int, head_dim: int, bias: bool, full: tuple[int, int], geo: tuple[int, int, int]
    ) -> float:
        """Attention half with (queries, keys, heads) = geo, in a model of (tokens, heads) = full."""
        queries, keys, heads = geo
        return self.attention_table(dim, head_dim, bias, full).at([queries, keys / queries, heads])

    def mlp_table(self, dim: int, full: tuple[int, int]) -> Table:
        """MLP half over (tokens, hidden width) in a model of (tokens, hidden) = full."""
        tokens_axis = axis(full[0], self.grid.token_fractions, 2)
        width_axis = axis(full[1], self.grid.width_fractions)
        entries = [
            ((i, j), *self._mlp_point(dim, w, n))
            for i, n in enumerate(tokens_axis)
            for j, w in enumerate(width_axis)
        ]
        values = self._fill((len(tokens_axis), len(width_axis)), entries, self.chain)
        return Table((tuple(tokens_axis), tuple(width_axis)), monotone(values))

    def mlp_ms(self, dim: int, full: tuple[int, int], geo: tuple[int, int]) -> float:
        """MLP half with (tokens, hidden) = geo, in a model of (tokens, hidden) = full."""
        return self.mlp_table(dim, full).at(list(geo))

    def vit_tables(self, model: nn.Module, kinds: Sequence[str] = ()) -> dict[str, Any]:
        """The tables every block of `model`'s family is priced from (see `vit_block_ms`):
        {"blocks": [VitBlockTables], "fixed_ms", "full": (tokens, heads, hidden)}; `kinds`: AMG /
        top-k / ToMe kinds whose reducer extra is timed too (those of the model's own blocks always
        are; top-k and ToMe with the model's own fuse / prop_attn, else without fusion and with
        proportional attention, as the budget search builds them). Every point not cached is timed
        in one set of rounds (`_collected`)."""
        return self._collected(lambda: self._vit_tables(model, kinds))

    def _vit_tables(self, model: nn.Module, kinds: Sequence[str]) -> dict[str, Any]:
        backbone = vit_backbone(model)
        geometry = vit_geometry(model)
        dim = backbone.embed_dim
        head_dim = backbone.blocks[0].attn.head_dim
        bias = backbone.blocks[0].attn.qkv.bias is not None
        full = (
            backbone.num_tokens,
            max(dim // head_dim, *(g["heads"] for g in geometry)),
            max(4 * dim, *(g["hidden"] for g in geometry)),
        )
        attention = self.attention_table(dim, head_dim, bias, full[:2])
        mlp = self.mlp_table(dim, (full[0], full[2]))
        wanted = {*kinds, *(g["kind"] for g in geometry)}
        reducers = {
            kind: self._amg_extra(kind, backbone, full, attention, mlp)
            for kind in sorted(wanted & set(AMG_KINDS))
        }
        drops = {
            kind: self._drop_extra(kind, backbone, full, attention, mlp, _drop_variant(model, kind))
            for kind in sorted(wanted & set(DROP_KINDS))
        }
        tables = VitBlockTables(attention, mlp, reducers, drops)
        fixed = self.point(
            f"vit-fixed|{_arch_key(model, ('num_heads', 'mlp_hidden', 'tokens'))}",
            lambda: _vit_fixed(model, self.setting.batch),
        )
        return {"blocks": [tables] * len(geometry), "fixed_ms": fixed, "full": full}

    def _amg_extra(
        self, kind: str, backbone: VisionTransformer, full: tuple[int, int, int], attention: Table, mlp: Table
    ) -> float:
        """Extra ms of an AMG reducer's gathers: a full-size block keeping half of its tokens, timed
        whole, minus its two halves from the tables (the same for every block of the family)."""
        n, heads, hidden = full
        kept = max(2, math.ceil(n / 2))
        block = backbone.blocks[0]
        sig = (
            f"reducer|{kind}|dim={backbone.embed_dim}|head_dim={block.attn.head_dim}|"
            f"bias={int(block.attn.qkv.bias is not None)}|heads={heads}|hidden={hidden}|n={n}|kept={kept}"
        )
        whole = self.point(
            self._chained(sig),
            lambda: (_amg_block(kind, backbone, heads, hidden, kept), self._tokens(backbone.embed_dim, n)),
            chain=self.chain,
        )
        queries = n if kind == "amg-kv" else kept
        halves = attention.at([queries, kept / queries, heads]) + mlp.at([queries, hidden])
        return max(0.0, whole - halves)

    def _drop_extra(
        self,
        kind: str,
        backbone: VisionTransformer,
        full: tuple[int, int, int],
        attention: Table,
        mlp: Table,
        variant: dict[str, bool],
    ) -> Table:
        """Extra ms of a top-k / ToMe reducer over the tokens entering its block (token axis of the
        grid). At each point a full-size block of the family that removes about half of its tokens
        (top-k keeps half of the patches, ToMe merges half of what it can) and the same block
        without its reducer are timed once, unchained (a sequence that shrinks cannot be chained),
        in the same rounds: the block costs `dense halves x with / without` (the table halves of
        the dense block, scaled by the reducer's measured ratio), and what that exceeds the
        reduced block's halves (attention on all tokens, MLP on those left) is the extra."""
        n_full, heads, hidden = full
        block = backbone.blocks[0]
        dim, head_dim = backbone.embed_dim, block.attn.head_dim
        shape = f"dim={dim}|head_dim={head_dim}|bias={int(block.attn.qkv.bias is not None)}|heads={heads}|hidden={hidden}"
        options = "|".join(f"{k}={int(v)}" for k, v in sorted(variant.items()))
        tokens_axis = axis(n_full, self.grid.token_fractions, 3)
        entries = []
        for i, t in enumerate(tokens_axis):
            build = lambda t=t, reduce=True: (  # noqa: E731
                BlockProbe(_drop_block(kind, backbone, heads, hidden, t, variant if reduce else None)),
                self._tokens(dim, t),
            )
            entries.append(((i, 0), f"reducer|{kind}|{options}|{shape}|n={t}", build))
            entries.append(((i, 1), f"block|{shape}|n={t}", lambda t=t, b=build: b(t, False)))
        timed = self._fill((len(tokens_axis), 2), entries, 1)
        extra = []
        for (with_reducer, without), t in zip(timed, tokens_axis, strict=True):
            attn = attention.at([t, 1.0, heads])
            dense = attn + mlp.at([t, hidden])
            reduced = attn + mlp.at([_drop_left(kind, t, variant), hidden])
            ratio = with_reducer / without if without > 0 else 1.0
            extra.append(max(0.0, ratio * dense - reduced))
        return Table((tuple(tokens_axis),), monotone(np.array(extra)))

    def predict_vit(self, model: nn.Module) -> dict[str, Any]:
        backbone = vit_backbone(model)
        tables = self.vit_tables(model)
        scale, calibration = self.scale(model)
        blocks = []
        for i, (block, table, geo) in enumerate(
            zip(backbone.blocks, tables["blocks"], vit_geometry(model), strict=True)
        ):
            kind = geo.pop("kind")
            if kind == "dense" or kind in AMG_KINDS or kind in DROP_KINDS:
                cost = BlockCost(i, kind, vit_block_ms(table, {**geo, "kind": kind}, scale), geo)
            else:  # PM: priced at the dense block of the same tokens in, scaled by the reducer's fraction
                dense = {**geo, "kind": "dense", "queries": geo["tokens_in"], "keys": geo["tokens_in"]}
                cost = BlockCost(
                    i, kind, vit_block_ms(table, {**dense, "mlp_tokens": geo["tokens_in"]}, 1.0), geo
                )
                self._add_reducer(cost, block, backbone.embed_dim)
                cost.ms *= scale
            blocks.append(cost)
        fixed = tables["fixed_ms"]
        return self._total(fixed, blocks, {"fixed_ms": fixed, "calibration": calibration})

    def _add_reducer(self, cost: BlockCost, block: nn.Module, dim: int) -> None:
        """PM: the block's two halves times the fraction its reducer costs over the same
        block without it, both timed once as they are (a reducer that drops tokens cannot be chained);
        measured for this exact geometry when allowed, else the fraction of the nearest block of the
        same kind."""
        geo = cost.geometry
        sig = f"reducer|{cost.kind}|dim={dim}|head_dim={block.attn.head_dim}|" + "|".join(
            f"{k}={v}" for k, v in sorted(geo.items())
        )
        key = f"overhead|{cost.kind}|dim={dim}|n="
        if sig in self.cache or self.measure:
            measured = self.point(
                sig, lambda: (BlockProbe(copy.deepcopy(block)), self._tokens(dim, geo["tokens_in"]))
            )
            dense = self.point(
                f"block|dim={dim}|head_dim={block.attn.head_dim}|heads={geo['heads']}|hidden={geo['hidden']}"
                f"|n={geo['tokens_in']}",
                lambda: (BlockProbe(_without_reducer(block)), self._tokens(dim, geo["tokens_in"])),
            )
            fraction = measured / max(dense, 1e-9)
            self.cache.points[f"{key}{geo['tokens_in']}"] = fraction
            cost.ms *= fraction
            return
        known = {int(k[len(key) :]): v for k, v in self.cache.points.items() if k.startswith(key)}
        if known:
            nearest = min(known, key=lambda n: abs(n - geo["tokens_in"]))
            cost.ms *= known[nearest]
        cost.approximate = True

    # -- ResNet tables -----------------------------------------------------------------------
    def resnet_tables(self, model: nn.Module) -> dict[str, Any]:
        """Per residual block a table over its internal widths, plus the stem and head:
        {"blocks": [Table], "geometry": [dict], "io": [input + output elements], "stem_ms", "head_ms"}."""
        from reidprune.models.resnet import resolved_mid_widths

        arch = model.arch
        shapes = _block_inputs(model)
        mids_all = resolved_mid_widths(arch)
        tables, geometry = [], []
        stage_of = [s for s, n in enumerate(arch.layers) for _ in range(n)]
        for i, (name, block) in enumerate(model.blocks):
            c_in, height, width = shapes[name]
            planes = arch.stage_planes[stage_of[i]]
            stride = max(m.stride[0] for m in block.modules() if isinstance(m, nn.Conv2d))
            kind = type(block).__name__.lower()
            key = f"{kind}|in={c_in}|size={height}x{width}|planes={planes}|stride={stride}"
            axes = [axis(planes, self.grid.width_fractions) for _ in mids_all[i]]
            shape = tuple(len(a) for a in axes)
            entries = []
            for index in np.ndindex(*shape):
                mids = [axes[d][j] for d, j in enumerate(index)]
                entries.append((
                    index,
                    f"{key}|mids={','.join(map(str, mids))}",
                    lambda b=type(block), mids=mids, c_in=c_in, planes=planes, stride=stride, h=height, w=width: (
                        b(c_in, planes, mids, stride, None),
                        (torch.randn(self.setting.batch, c_in, h, w),),
                    ),
                ))  # fmt: skip
            values = self._fill(shape, entries, 1)
            tables.append(Table(tuple(tuple(a) for a in axes), monotone(values)))
            geometry.append(
                {
                    "kind": kind,
                    "in": c_in,
                    "height": height,
                    "width": width,
                    "planes": planes,
                    "stride": stride,
                }
            )
        c_last, h_last, w_last = shapes["avgpool"]
        # what a probe feeds in and copies out (the calibration's offset is proportional to it)
        outputs = [*(shapes[name] for name, _ in model.blocks[1:]), shapes["avgpool"]]
        io = [
            self.setting.batch * (math.prod(shapes[name]) + math.prod(out))
            for (name, _), out in zip(model.blocks, outputs, strict=True)
        ]
        stem = self.point(
            f"resnet-stem|width={arch.stem_width}|img={'x'.join(map(str, model_input_size(model)))}",
            lambda: (nn.Sequential(*copy.deepcopy([model.conv1, model.bn1, model.relu, model.maxpool])), (_images(model, self.setting.batch),)),
        )  # fmt: skip
        head = self.point(
            f"resnet-head|{_arch_key(model, ('mid_widths', 'branch_channels', 'stem_width', 'layers'))}|map={c_last}x{h_last}x{w_last}",
            lambda: (FeatureMapHead(copy.deepcopy(model)), (torch.randn(self.setting.batch, c_last, h_last, w_last),)),
        )  # fmt: skip
        return {"blocks": tables, "geometry": geometry, "io": io, "stem_ms": stem, "head_ms": head}

    def predict_resnet(self, model: nn.Module) -> dict[str, Any]:
        from reidprune.models.resnet import resolved_branch_channels, resolved_mid_widths

        tables = self.resnet_tables(model)
        scale, calibration = self.scale(model)
        mids_all, branches = resolved_mid_widths(model.arch), resolved_branch_channels(model.arch)
        offsets = resnet_offsets(tables, calibration)
        blocks = []
        for i, (table, geo) in enumerate(zip(tables["blocks"], tables["geometry"], strict=True)):
            geo = dict(geo)
            kind = geo.pop("kind")
            geo |= {f"mid{j + 1}": m for j, m in enumerate(mids_all[i])}
            ms = resnet_block_ms(table, mids_all[i], scale, offsets[i])
            # a BAFD branch writing fewer channels is priced as if it wrote all: an upper bound
            blocks.append(BlockCost(i, kind, ms, geo, approximate=branches[i] is not None))
        stem, head = tables["stem_ms"], tables["head_ms"]
        extra = {"fixed_ms": stem + head, "stem_ms": stem, "head_ms": head, "calibration": calibration}
        return self._total(stem + head, blocks, extra)

    # -- calibration -------------------------------------------------------------------------
    def scale(self, model: nn.Module) -> tuple[float, dict[str, Any] | None]:
        """(scale of block costs, what it came from) for `model`'s family (module doc). ViT: the
        dense reference measured whole, its blocks' share divided by their predicted sum. ResNet: a
        half-width reference too, and an offset per element of block input + output fitted with
        the scale so that both are predicted as measured ("offset_ms_per_element", applied by
        `resnet_offsets`; `budget.calibration`)."""
        if not self.calibrate:
            return 1.0, None
        if vit_backbone(model, required=False) is not None:
            return self._vit_scale(model)
        return self._resnet_scale(model)

    def _vit_scale(self, model: nn.Module) -> tuple[float, dict[str, Any]]:
        reference = dense_reference(model)
        signature = f"whole|vit|{_arch_key(reference, ('num_heads', 'mlp_hidden', 'tokens'))}"
        tables = self.vit_tables(reference)
        geos = vit_geometry(reference)
        blocks = sum(vit_block_ms(t, g, 1.0) for t, g in zip(tables["blocks"], geos, strict=True))
        backbone = vit_backbone(reference)
        attn = backbone.blocks[0].attn
        tokens, heads, hidden = tables["full"]
        dim, bias = backbone.embed_dim, attn.qkv.bias is not None
        anchors = {
            sig: (probe, self.chain)
            for sig, probe in (
                self._attention_point(dim, attn.head_dim, bias, (tokens, tokens, heads)),
                self._mlp_point(dim, hidden, tokens),
            )
        }
        wholes = self._wholes({signature: reference}, anchors)
        if signature not in wholes:
            return 1.0, {"scale": 1.0, "calibrated": False}
        whole = wholes[signature]
        value = one_point(whole - self.call_ms() - tables["fixed_ms"], blocks)
        return value, {
            "scale": value,
            "calibrated": True,
            "method": "one-point",
            "reference_measured_ms": whole,
            "reference_blocks_ms": blocks,
        }

    def _resnet_scale(self, model: nn.Module) -> tuple[float, dict[str, Any]]:
        """Two-point fit on the dense and the half-width reference (`calibration.fit_two_point`)."""
        from reidprune.models.resnet import resolved_mid_widths

        references = {"dense": dense_reference(model), "half": half_width_reference(model)}
        key = f"whole|resnet|{_arch_key(references['dense'], ('mid_widths', 'branch_channels'))}"
        signatures = {"dense": key, "half": f"{key}|mids=half"}
        tables = self.resnet_tables(references["dense"])  # the half widths lie in the same tables
        mids = {name: resolved_mid_widths(ref.arch) for name, ref in references.items()}
        table_ms = {
            name: sum(t.at(m) for t, m in zip(tables["blocks"], widths, strict=True))
            for name, widths in mids.items()
        }
        wholes = self._wholes({signatures[name]: ref for name, ref in references.items()})
        if signatures["dense"] not in wholes:
            return 1.0, {"scale": 1.0, "calibrated": False}
        call, fixed = self.call_ms(), tables["stem_ms"] + tables["head_ms"]
        measured = {name: wholes[sig] for name, sig in signatures.items() if sig in wholes}
        blocks = {name: ms - call - fixed for name, ms in measured.items()}
        fit = fit_two_point(
            (blocks["dense"], table_ms["dense"]),
            (blocks["half"], table_ms["half"]) if "half" in blocks else None,
            tables["io"],
            [float(t.values.min()) for t in tables["blocks"]],  # no block's cheapest point below 0
        )
        info: dict[str, Any] = {
            "scale": fit.scale,
            "calibrated": True,
            "method": fit.method,
            "offset_ms_per_element": fit.offset_per_io,
            "fallback": fit.fallback,
        }
        offsets = resnet_offsets(tables, info)
        info["offset_ms"] = fit.scale * sum(offsets)  # what the calibrated blocks lose in all
        for name, prefix in (("dense", "reference"), ("half", "half_reference")):
            predicted = sum(
                resnet_block_ms(t, m, fit.scale, o)
                for t, m, o in zip(tables["blocks"], mids[name], offsets, strict=True)
            )
            info |= {
                f"{prefix}_measured_ms": measured.get(name),
                f"{prefix}_blocks_ms": table_ms[name],
                f"{prefix}_predicted_ms": call + fixed + predicted,
            }
        return fit.scale, info

    def _wholes(
        self, references: dict[str, nn.Module], anchors: dict[str, tuple[Probe, int]] | None = None
    ) -> dict[str, float]:
        """Measured milliseconds of whole reference models by cache signature; those not cached are
        timed together in the same interleaved rounds (calib_time each; not when measure=False).

        anchors: cached table points (signature -> (probe, chain)) timed again in the same rounds;
        each whole is then brought to the tables' rounds by their ratio (cached / now), so that the
        calibration compares the whole graph with its pieces under one load, not through the load
        meter: a ViT-S whole graph normalised by the meter came out 27 % above the same graph next
        to its chained blocks, and the scale carried the whole error."""
        missing = {sig: ref for sig, ref in references.items() if sig not in self.cache}
        if missing and self.measure:
            fns = {sig: self._whole_call(ref) for sig, ref in missing.items()}
            anchors = {sig: point for sig, point in (anchors or {}).items() if sig in self.cache}
            for sig, (probe, chain) in anchors.items():
                module, inputs = probe()
                module = nn.Sequential(module, *(copy.deepcopy(module) for _ in range(chain - 1)))
                fns[f"anchor|{sig}"] = self.runner.callable(module, inputs)
            timed = self._time_many(fns, self.calib_time * len(fns))
            factor = 1.0
            if anchors:
                call = self.call_ms()
                now = sum(max(0.0, timed[f"anchor|{sig}"] - call) / anchors[sig][1] for sig in anchors)
                factor = sum(self.cache.points[sig] for sig in anchors) / now if now > 0 else 1.0
            for sig in missing:
                self.cache.put(sig, timed[sig] * factor)
        return {sig: self.cache.points[sig] for sig in references if sig in self.cache}

    def _whole_call(self, model: nn.Module) -> Callable[[], Any]:
        """The whole model as deployed on the runtime (the exported graph on ONNX Runtime)."""
        inputs = (_images(model, self.setting.batch), torch.zeros(self.setting.batch, dtype=torch.long))
        if self.setting.runtime == "onnxruntime":
            return _exported_call(model, inputs, self.setting, self.runner)
        return self.runner.callable(EmbeddingProbe(model), inputs)

    # -- whole model -------------------------------------------------------------------------
    def predict(self, model: nn.Module) -> dict[str, Any]:
        """Predicted milliseconds of one forward of `model` at the setting's batch (see the module doc)."""
        model = model.eval()
        if vit_backbone(model, required=False) is not None:
            return self.predict_vit(model)
        if _is_resnet(model):
            return self.predict_resnet(model)
        raise TypeError(
            f"{type(model).__name__}: the latency model knows reidprune ViTs and ResNets; measure other "
            "models with measure_latency"
        )

    def _total(self, fixed: float, blocks: list[BlockCost], extra: dict[str, Any]) -> dict[str, Any]:
        call = self.call_ms()
        return {
            "predicted_ms": call + fixed + sum(b.ms for b in blocks),
            "call_ms": call,
            **extra,
            "blocks_ms": sum(b.ms for b in blocks),
            "blocks": [asdict(b) for b in blocks],
            "approximate": any(b.approximate for b in blocks),
            "setting": asdict(self.setting),
            "cache": str(self.cache.path),
            "measured_points": self.cache.measured,
            "meter_reference_ms": self.cache.get(METER) if self.normalise else None,
        }


# -- reading a model ---------------------------------------------------------------------------
def _is_resnet(model: nn.Module) -> bool:
    return type(model).__name__ == "ResNet" and hasattr(model, "blocks")


def dense_reference(model: nn.Module) -> nn.Module:
    """The family's dense model: `model`'s architecture with every head, MLP width, token and
    filter it may have lost restored (random weights: latency does not depend on their values)."""
    arch = model.arch
    if vit_backbone(model, required=False) is not None:
        backbone = vit_backbone(model)
        head_dim = backbone.blocks[0].attn.head_dim
        depth = len(backbone.blocks)
        heads = max(backbone.embed_dim // head_dim, *arch.num_heads)
        hidden = max(4 * backbone.embed_dim, *arch.mlp_hidden)
        changes: dict[str, Any] = {
            "num_heads": [heads] * depth,
            "mlp_hidden": [hidden] * depth,
            "tokens": None,
        }
    elif _is_resnet(model):
        changes = {"mid_widths": [], "branch_channels": []}
    else:
        raise TypeError(f"{type(model).__name__}: no dense reference for this model family")
    return _seeded_build(dataclasses.replace(arch, **changes))


def half_width_reference(model: nn.Module) -> nn.Module:
    """A ResNet's `dense_reference` with every internal conv width halved (rounded up): the second
    whole measurement of its calibration (`budget.calibration`)."""
    from reidprune.models.resnet import default_mid_widths

    if not _is_resnet(model):
        raise TypeError(f"{type(model).__name__}: a half-width reference is built for ResNets only")
    arch = dataclasses.replace(model.arch, mid_widths=[], branch_channels=[])
    mids = [[math.ceil(m / 2) for m in widths] for widths in default_mid_widths(arch)]
    return _seeded_build(dataclasses.replace(arch, mid_widths=mids))


def _seeded_build(arch: Any) -> nn.Module:
    """`registry.build(arch)` in eval mode from a fixed seed (random weights: latency does not depend on them)."""
    from reidprune.models.registry import build

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build(arch).eval()


def _without_reducer(block: nn.Module) -> nn.Module:
    dense = copy.deepcopy(block)
    dense.reducer = None
    return dense


def _one_block_vit(backbone: VisionTransformer, heads: int, hidden: int, tokens: int) -> nn.Module:
    """A one-block ViT of `backbone`'s family (width, head dim, qkv bias) on `tokens` tokens (one
    prefix token): the carrier of the reducer blocks timed on their own."""
    from reidprune.models import create

    block = backbone.blocks[0]
    return create(
        "vit_tiny_reid", img_size=[tokens - 1, 1], patch_size=1, depth=1, embed_dim=backbone.embed_dim,
        num_heads=[heads], head_dim=block.attn.head_dim, mlp_hidden=[hidden], num_classes=0,
        qkv_bias=block.attn.qkv.bias is not None,
    )  # fmt: skip


def _amg_block(kind: str, backbone: VisionTransformer, heads: int, hidden: int, kept: int) -> nn.Module:
    """A full-size block of `backbone`'s family with an AMG reducer keeping `kept` spread-out tokens."""
    from reidprune.compress.tokens import attach_reducers

    n = backbone.num_tokens
    one = _one_block_vit(backbone, heads, hidden, n)
    positions = [0, *np.unique(np.linspace(1, n - 1, kept - 1).round().astype(int)).tolist()]
    mode = "kv" if kind == "amg-kv" else "skip"
    attach_reducers(one, {"method": "amg", "mode": mode, "num_tokens": n, "kept": [positions]})
    return BlockProbe(vit_backbone(one).blocks[0])


def _drop_variant(model: nn.Module, kind: str) -> dict[str, bool]:
    """The options a top-k / ToMe reducer's cost depends on: the model's own when its token spec is
    of that kind, else the budget search's (top-k without fusion, ToMe with proportional attention)."""
    from reidprune.compress.tokens import current_spec

    spec = current_spec(model)
    if kind == "topk":
        fuse = spec.fuse if spec is not None and spec.method == "topk" else False
        return {"fuse": fuse, "class_token": vit_backbone(model).cls_token is not None}
    return {"prop_attn": spec.prop_attn if spec is not None and spec.method == "tome" else True}


def _drop_left(kind: str, tokens: int, variant: dict[str, bool]) -> int:
    """Tokens the reference block of `_drop_extra` leaves of `tokens` (one prefix token)."""
    from reidprune.models.tokens.tome import tome_max_r

    if kind == "topk":
        return 1 + max(1, (tokens - 1) // 2) + int(variant["fuse"])
    return tokens - max(1, tome_max_r(tokens) // 2)


def _drop_block(
    kind: str,
    backbone: VisionTransformer,
    heads: int,
    hidden: int,
    tokens: int,
    variant: dict[str, bool] | None,
) -> nn.Module:
    """A block of `backbone`'s family on `tokens` tokens (one prefix token) with the reference top-k /
    ToMe reducer of `_drop_extra` (variant None: without a reducer)."""
    from reidprune.models.tokens.tome import ToMeReducer
    from reidprune.models.tokens.topk import TopKReducer

    new = vit_backbone(_one_block_vit(backbone, heads, hidden, tokens)).blocks[0]
    if variant is not None:
        left = _drop_left(kind, tokens, variant)
        if kind == "topk":
            new.reducer = TopKReducer(
                left - 1 - int(variant["fuse"]), variant["fuse"], 1, variant["class_token"]
            )
        else:
            new.reducer = ToMeReducer(tokens - left, variant["prop_attn"], 1)
    return new


def vit_backbone(model: nn.Module, required: bool = True) -> VisionTransformer | None:
    """The model's VisionTransformer backbone (`model.backbone`, or the model itself)."""
    for candidate in (model, getattr(model, "backbone", None)):
        if isinstance(candidate, VisionTransformer):
            return candidate
    if required:
        raise TypeError(f"{type(model).__name__} has no VisionTransformer backbone")
    return None


def vit_geometry(model: nn.Module) -> list[dict[str, Any]]:
    """Per backbone block: kind, tokens_in, queries, keys, mlp_tokens, tokens_out, heads, hidden.

    The token counts follow the model's token spec (`reidprune.compress.tokens.current_spec`);
    heads and MLP width are read from the block's modules (head and MLP pruning change them).
    """
    from reidprune.compress.tokens import current_spec

    backbone = vit_backbone(model)
    spec = current_spec(model)
    depth, n = len(backbone.blocks), backbone.num_tokens
    if spec is None and any(getattr(b, "reducer", None) is not None for b in backbone.blocks):
        raise ValueError(
            f"{type(model).__name__}: its blocks carry token reducers but the model has no token spec"
        )
    out = []
    current = n
    for i, block in enumerate(backbone.blocks):
        kind, queries, keys, mlp, after = "dense", current, current, current, current
        if spec is not None and spec.method == "amg" and spec.kept[i] is not None:
            kept = len(spec.kept[i])
            if spec.mode == "kv":
                kind, keys = "amg-kv", kept
            else:
                kind, queries, keys, mlp = "amg-skip", kept, kept, kept
        elif spec is not None and spec.method == "topk" and spec.keep[i] is not None:
            kind, after = "topk", backbone.num_prefix_tokens + spec.keep[i] + int(spec.fuse)
            mlp = after
        elif spec is not None and spec.method == "tome" and spec.r[i] > 0:
            kind, after = "tome", current - spec.r[i]
            mlp = after
        elif spec is not None and spec.method == "pm":
            merged = spec.merged_counts()[i]
            if merged != n or (not spec.dense and spec.segments[i] is not None):
                kind, queries, keys, mlp = "pm", merged, merged, merged
        elif spec is not None and spec.method not in ("amg", "topk", "tome", "pm"):
            raise ValueError(f"token method {spec.method!r}: the latency model does not know it yet")
        out.append(
            {
                "kind": kind,
                "tokens_in": current,
                "queries": queries,
                "keys": keys,
                "mlp_tokens": mlp,
                "tokens_out": after,
                "heads": int(block.attn.num_heads),
                "hidden": int(block.mlp.fc1.out_features),
            }
        )
        current = after
    if len(out) != depth:
        raise AssertionError("one geometry per block")
    return out


def _arch_key(model: nn.Module, drop: Sequence[str]) -> str:
    """A short digest of the architecture without the fields compression changes."""
    from reidprune.models.registry import arch_to_dict

    values = {k: v for k, v in arch_to_dict(model.arch).items() if k not in drop}
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _images(model: nn.Module, batch: int) -> Tensor:
    height, width = model_input_size(model)
    return torch.randn(batch, 3, height, width)


def _vit_fixed(model: nn.Module, batch: int) -> tuple[nn.Module, tuple[Tensor, ...]]:
    """The model without its backbone blocks: stem and head only."""
    stripped = copy.deepcopy(model)
    backbone = vit_backbone(stripped)
    backbone.blocks = nn.ModuleList(IdentityBlock() for _ in backbone.blocks)
    return EmbeddingProbe(stripped), (_images(model, batch), torch.zeros(batch, dtype=torch.long))


def _block_inputs(model: nn.Module) -> dict[str, tuple[int, int, int]]:
    """(C, H, W) entering every residual block and the final pooling, from one batch-1 forward."""
    shapes: dict[str, tuple[int, int, int]] = {}
    names = [name for name, _ in model.blocks] + ["avgpool"]
    hooks = [
        model.get_submodule(name).register_forward_pre_hook(
            lambda _m, args, name=name: shapes.__setitem__(name, tuple(args[0].shape[1:]))
        )
        for name in names
    ]
    try:
        with torch.inference_mode():
            model(_images(model, 1))
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def predict_latency(
    model: nn.Module,
    runtime: str = "onnxruntime",
    batch: int = 1,
    threads: int | None = None,
    *,
    cache: str | Path | None = None,
    measure: bool = True,
    min_time: float = 0.3,
    grid: Grid | None = None,
    chain: int = 4,
    calibrate: bool = True,
    calib_time: float = 2.0,
) -> dict[str, Any]:
    """Predicted latency (ms) of one forward of `model` at `batch` on `runtime` ("onnxruntime",
    "torch", "cuda"); points missing from the cached tables are timed first (measure=False: raise;
    an uncached calibration is then skipped, scale 1). chain / calibrate / calib_time: `LatencyModel`."""
    with LatencyModel(
        runtime, batch, threads, cache=cache, grid=grid, measure=measure, min_time=min_time,
        chain=chain, calibrate=calibrate, calib_time=calib_time,
    ) as lm:  # fmt: skip
        return lm.predict(model)


def measure_latency(
    model: nn.Module,
    runtime: str = "onnxruntime",
    batch: int = 1,
    threads: int | None = None,
    *,
    min_time: float = 2.0,
) -> dict[str, Any]:
    """Measured latency of the whole model exported to `runtime` (the graph `export_onnx` writes for
    ONNX Runtime; the deploy form for PyTorch), the median of timed calls (`measure.timing`)."""
    measured = measure_side_by_side({"model": model}, runtime, batch, threads, min_time=min_time)
    return {**measured["model"], "setting": measured["setting"]}


def meter_call(run: Runner, batch: int) -> Callable[[], Any]:
    """The load meter (`LoadMeter`) at `batch`, ready to call on `run`'s runtime."""
    return run.callable(LoadMeter(), (torch.zeros(batch, LoadMeter.TOKENS, LoadMeter.DIM),))


def at_meter_reference(samples: Sequence[float], meter: Sequence[float], reference_ms: float) -> float:
    """Milliseconds of the timed calls `samples` at the load of the meter's reference: the median
    per-round ratio to the meter timed in the same rounds, times the reference."""
    ratios = [a / b for a, b in zip(samples, meter, strict=True) if b > 0]
    return statistics.median(ratios) * reference_ms


def measure_side_by_side(
    models: dict[str, nn.Module],
    runtime: str = "onnxruntime",
    batch: int = 1,
    threads: int | None = None,
    *,
    min_time: float = 2.0,
    min_rounds: int = 5,
    graphs: dict[str, str | Path] | None = None,
    meter_reference_ms: float | None = None,
) -> dict[str, Any]:
    """{name: {median_ms, p90_ms, rounds}, "setting": ...} of several whole models on `runtime`,
    timed in the same interleaved rounds (`measure.timing.interleaved_times`), so that their ratios
    hold on a busy machine, for about min_time seconds and at least min_rounds rounds. graphs: where
    to write a model's ONNX graph (ONNX Runtime; default a temporary folder), checked against PyTorch
    when given.

    meter_reference_ms: the load meter's cached time of the tables that made a prediction (its
    "meter_reference_ms"). The meter is then timed in the same rounds, as for the tables, and
    every model gets "normalised_ms" (median per-round model / meter ratio x the reference: the
    model's time at the load the tables are expressed in, comparable with the prediction on a
    machine whose load has changed since) and the result a "load" (meter now / reference)."""
    from reidprune.measure.timing import summarize_ms

    setting = setting_for(runtime, batch, threads)
    graphs = dict(graphs or {})
    fns = {}
    with Runner(setting) as run:
        for name, model in models.items():
            model = model.eval()
            inputs = (_images(model, batch), torch.zeros(batch, dtype=torch.long))
            if runtime == "onnxruntime":
                fns[name] = _exported_call(model, inputs, setting, run, graphs.get(name))
            else:
                fns[name] = run.callable(EmbeddingProbe(model), inputs)
        if meter_reference_ms is not None:
            fns[METER] = meter_call(run, batch)
        times = interleaved_times(fns, min_time=min_time, warmup=3, min_rounds=min_rounds, device=run.device)
    meter = times.pop(METER, None)
    out: dict[str, Any] = {
        name: {**summarize_ms(samples), "rounds": len(samples)} for name, samples in times.items()
    }
    if meter is not None and meter_reference_ms is not None:
        for name, samples in times.items():
            out[name]["normalised_ms"] = at_meter_reference(samples, meter, meter_reference_ms)
        out["load"] = statistics.median(meter) * 1e3 / meter_reference_ms
    return {**out, "setting": asdict(setting)}


def _exported_call(
    model: nn.Module,
    inputs: tuple[Tensor, Tensor],
    setting: Setting,
    run: Runner,
    path: str | Path | None = None,
) -> Callable[[], Any]:
    """An ONNX Runtime session on the graph `export_onnx` writes (to `path`, checked, when given),
    called on fixed inputs."""
    from reidprune.export.onnx import export_onnx
    from reidprune.export.runtime import create_session
    from reidprune.export.wrapper import CAMIDS, IMAGES

    target = Path(path) if path is not None else run.folder / f"model{len(list(run.folder.iterdir()))}.onnx"
    report = export_onnx(model, target, check=path is not None)
    session = create_session(report.path, threads=setting.threads, spinning=False)
    given = {IMAGES: inputs[0].numpy(), CAMIDS: inputs[1].numpy()}
    feeds = {item.name: given[item.name] for item in session.get_inputs()}
    return lambda: session.run(None, feeds)
