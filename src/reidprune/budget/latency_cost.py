"""The search's latency cost model: milliseconds of a plan from the runtime latency model's tables.

    costs = LatencyCostModel.for_model(model, "onnxruntime", batch=1, threads=2)
    costs.predict(sketch)      # ms per batch; a pure table look-up, no timing, no forward pass

Built once from the dense model: every table the search can touch is measured (or read from the
cache) up front by `budget.latency.LatencyModel` - the ViT attention and MLP halves, the token
reducers' extra cost (both AMG modes, or the top-k / ToMe table over the tokens entering a block:
`token_kinds`), the stem / head fixed cost, the calibration scale; the ResNet per-block width
tables, stem and head, and the calibration's per-block offsets. `predict` then only interpolates,
with the same formulas (`latency.vit_block_ms`, `latency.resnet_block_ms`) and summation order as
`LatencyModel.predict`, so that the prediction for a sketch equals the latency model's prediction
for the model the plan produces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import nn

from reidprune.budget.latency import (
    AMG_KINDS,
    DROP_KINDS,
    METER,
    Grid,
    LatencyModel,
    Table,
    VitBlockTables,
    resnet_block_ms,
    resnet_offsets,
    vit_backbone,
    vit_block_ms,
)
from reidprune.budget.sketch import CnnSketch, Sketch, VitSketch
from reidprune.errors import CompressionError


class LatencyCostModel:
    """Milliseconds per batch on one runtime setting (see the module docstring). Build with `for_model`."""

    unit = "ms"

    def __init__(
        self,
        call_ms: float,
        fixed_ms: float,
        scale: float,
        *,
        vit_blocks: list[VitBlockTables] | None = None,
        hidden: list[int] | None = None,
        cnn_blocks: list[Table] | None = None,
        cnn_offsets: list[float] | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.call_ms = call_ms
        self.fixed_ms = fixed_ms
        self.scale = scale
        self.vit_blocks = vit_blocks
        self.hidden = hidden
        self.cnn_blocks = cnn_blocks
        self.cnn_offsets = cnn_offsets or [0.0] * len(cnn_blocks or [])  # calibration, per block
        self.info = info or {}
        # (block, what its cost depends on) -> ms: a search step changes one or two blocks of a
        # plan, so the others are looked up again and again (B13: 12 s of 15 s were interpolation)
        self._memo: dict[tuple[Any, ...], float] = {}

    @classmethod
    def for_model(
        cls,
        model: nn.Module,
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
        token_kinds: Sequence[str] = AMG_KINDS,
    ) -> LatencyCostModel:
        """Measure (or read from the cache) every table a plan of `model` can need; token_kinds: the
        reducers the search's plans use ("amg-kv", "amg-skip", "topk", "tome")."""
        unknown = sorted(set(token_kinds) - {*AMG_KINDS, *DROP_KINDS})
        if unknown:
            raise ValueError(f"token_kinds {unknown}: expected among {', '.join((*AMG_KINDS, *DROP_KINDS))}")
        with LatencyModel(
            runtime, batch, threads, cache=cache, grid=grid, measure=measure, min_time=min_time,
            chain=chain, calibrate=calibrate, calib_time=calib_time,
        ) as lm:  # fmt: skip
            model = model.eval()
            scale, calibration = lm.scale(model)
            call = lm.call_ms()
            info = {
                "setting": asdict(lm.setting),
                "cache": str(lm.cache.path),
                "calibration": calibration,
                "chain": chain,
                "grid": asdict(lm.grid),
            }
            if vit_backbone(model, required=False) is not None:
                tables = lm.vit_tables(model, kinds=token_kinds)
                hidden = [int(b.mlp.fc1.out_features) for b in vit_backbone(model).blocks]
                built = cls(
                    call, tables["fixed_ms"], scale, vit_blocks=tables["blocks"], hidden=hidden, info=info
                )
            else:
                tables = lm.resnet_tables(model)
                built = cls(
                    call, tables["stem_ms"] + tables["head_ms"], scale, cnn_blocks=tables["blocks"],
                    cnn_offsets=resnet_offsets(tables, calibration), info=info,
                )  # fmt: skip
            built.info["measured_points"] = lm.cache.measured
            built.info["meter_reference_ms"] = lm.cache.get(METER) if lm.normalise else None
        return built

    def block_ms(self, sketch: Sketch) -> list[float]:
        """Calibrated milliseconds of every block the sketch describes."""
        if isinstance(sketch, VitSketch):
            if self.vit_blocks is None or self.hidden is None or len(sketch.heads) != len(self.vit_blocks):
                raise CompressionError("latency cost model: the sketch does not describe this ViT's blocks")
            out = []
            for i, (tables, hidden, n, c, h) in enumerate(
                zip(self.vit_blocks, self.hidden, sketch.tokens, sketch.kept, sketch.heads, strict=True)
            ):
                key = (i, n, c, h, sketch.method, sketch.mode)
                if key in self._memo:
                    out.append(self._memo[key])
                    continue
                if c >= n:
                    geo = {"kind": "dense", "queries": n, "keys": n, "mlp_tokens": n}
                elif sketch.method in DROP_KINDS:  # attention on all tokens, MLP on those left
                    geo = {"kind": sketch.method, "queries": n, "keys": n, "mlp_tokens": c}
                elif sketch.mode == "kv":
                    geo = {"kind": "amg-kv", "queries": n, "keys": c, "mlp_tokens": n}
                else:
                    geo = {"kind": "amg-skip", "queries": c, "keys": c, "mlp_tokens": c}
                if geo["kind"] != "dense" and geo["kind"] not in {*tables.reducer_ms, *tables.reducer_tables}:
                    raise CompressionError(
                        f"latency cost model: built without the '{geo['kind']}' reducer's table "
                        "(for_model(token_kinds=...))"
                    )
                geo |= {"tokens_in": n, "heads": h, "hidden": hidden}
                self._memo[key] = vit_block_ms(tables, geo, self.scale)
                out.append(self._memo[key])
            return out
        if (
            not isinstance(sketch, CnnSketch)
            or self.cnn_blocks is None
            or len(sketch.widths) != len(self.cnn_blocks)
        ):
            raise CompressionError("latency cost model: the sketch does not describe this CNN's blocks")
        out = []
        for i, (table, widths, offset) in enumerate(
            zip(self.cnn_blocks, sketch.widths, self.cnn_offsets, strict=True)
        ):
            key = (i, tuple(widths))
            if key not in self._memo:
                self._memo[key] = resnet_block_ms(table, widths, self.scale, offset)
            out.append(self._memo[key])
        return out

    def predict(self, sketch: Sketch) -> float:
        return self.call_ms + self.fixed_ms + sum(self.block_ms(sketch))

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "latency",
            "unit": self.unit,
            "call_ms": self.call_ms,
            "fixed_ms": self.fixed_ms,
            "scale": self.scale,
            **self.info,
        }
