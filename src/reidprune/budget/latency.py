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
  A reducer block is timed once as it is (its gathers, top-k, matching), and what it costs beyond
  the two halves is kept as a fraction, which blocks of the same kind not yet timed reuse.
- ResNet block = a table over its internal conv widths (bottleneck conv1 x conv2, basic conv1) for
  each (block type, input channels, spatial size, stage width, stride), built from the block class.
- Stem and head: a ViT with its blocks removed (patch embedding, CLS / position / camera
  embeddings, final norm, pooling, BNNeck / JPM / LA head); a ResNet's conv stem and its pooling
  and head, timed separately.

Every timed point is cached per (CPU model, runtime and version, threads, batch) in a JSON file
(`budget.cache`), so a second prediction for any plan of the same model family measures nothing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from reidprune.budget.cache import LatencyCache, Setting
from reidprune.budget.grid import interpolate, monotone
from reidprune.budget.probes import (
    AttentionProbe,
    BlockProbe,
    CallOverhead,
    EmbeddingProbe,
    FeatureMapHead,
    IdentityBlock,
    MlpProbe,
)
from reidprune.budget.runtimes import Runner, setting_for
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


def axis(full: int, fractions: Sequence[float], low: int = 1) -> list[int]:
    """Grid values: ceil(f * full) for every fraction, at least `low`, always `full`, increasing."""
    return sorted({max(low, min(full, math.ceil(f * full - 1e-9))) for f in fractions} | {full})


@dataclass
class BlockCost:
    """One block's geometry and predicted milliseconds (net of the call overhead)."""

    index: int
    kind: str  # "dense" | "amg-kv" | "amg-skip" | "topk" | "tome" | "pm" | "bottleneck" | "basic"
    ms: float
    geometry: dict[str, int] = field(default_factory=dict)
    approximate: bool = False  # True when part of the figure is estimated, not measured for this geometry


class LatencyModel:
    """Cost tables for one setting (runtime, batch, threads on this machine), measured on demand.

    cache: a JSON file or a folder (default ~/.cache/reidprune/latency). measure=False: never time
    anything, raise when a needed table point is missing. min_time: seconds to time each point.
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
    ) -> None:
        self.setting: Setting = setting_for(runtime, batch, threads)
        self.cache = LatencyCache(self.setting, cache)
        self.grid = grid or Grid()
        self.measure = measure
        self.min_time = min_time
        self._runner: Runner | None = None

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
            self._runner = None

    def point(self, signature: str, probe: Probe, net: bool = True) -> float:
        """Milliseconds of the probe named `signature` (net of the call overhead when `net`)."""
        value = self.cache.get(signature)
        if value is None:
            if not self.measure:
                raise LookupError(
                    f"{signature}: not in the latency table {self.cache.path}; predict with measure=True "
                    "(or without --no-measure) once to time it"
                )
            if self._runner is None:
                self._runner = Runner(self.setting).__enter__()
            module, inputs = probe()
            value = self._runner.time_ms(self._runner.callable(module, inputs), self.min_time)
            if net and signature != "call":
                value = max(0.0, value - self.call_ms())
            self.cache.put(signature, value)
        return value

    def call_ms(self) -> float:
        """What one runtime call costs with (almost) nothing to compute."""
        return self.point("call", lambda: (CallOverhead(), (torch.zeros(self.setting.batch, 8),)), net=False)

    def _tokens(self, dim: int, n: int) -> tuple[Tensor]:
        return (torch.randn(self.setting.batch, n, dim),)

    # -- ViT tables --------------------------------------------------------------------------
    def attention_ms(
        self, dim: int, head_dim: int, bias: bool, full: tuple[int, int], geo: tuple[int, int, int]
    ) -> float:
        """Attention half with (queries, keys, heads) = geo, in a model of (tokens, heads) = full."""
        tokens_axis = axis(full[0], self.grid.token_fractions, 2)
        heads_axis = axis(full[1], self.grid.head_fractions)
        kv_axis = sorted(set(self.grid.kv_fractions) | {1.0})
        values = np.zeros((len(tokens_axis), len(kv_axis), len(heads_axis)))
        for i, q in enumerate(tokens_axis):
            for j, f in enumerate(kv_axis):
                kv = max(1, math.ceil(f * q - 1e-9))
                for k, h in enumerate(heads_axis):
                    sig = f"attn|dim={dim}|head_dim={head_dim}|bias={int(bias)}|heads={h}|q={q}|kv={kv}"
                    values[i, j, k] = self.point(
                        sig,
                        lambda q=q, kv=kv, h=h: (
                            AttentionProbe(dim, h, head_dim, bias, q, kv),
                            self._tokens(dim, q),
                        ),
                    )
        queries, keys, heads = geo
        return interpolate(
            [tokens_axis, kv_axis, heads_axis], monotone(values), [queries, keys / queries, heads]
        )

    def mlp_ms(self, dim: int, full: tuple[int, int], geo: tuple[int, int]) -> float:
        """MLP half with (tokens, hidden) = geo, in a model of (tokens, hidden) = full."""
        tokens_axis = axis(full[0], self.grid.token_fractions, 2)
        width_axis = axis(full[1], self.grid.width_fractions)
        values = np.zeros((len(tokens_axis), len(width_axis)))
        for i, n in enumerate(tokens_axis):
            for j, w in enumerate(width_axis):
                values[i, j] = self.point(
                    f"mlp|dim={dim}|hidden={w}|n={n}",
                    lambda n=n, w=w: (MlpProbe(dim, w), self._tokens(dim, n)),
                )
        return interpolate([tokens_axis, width_axis], monotone(values), list(geo))

    def predict_vit(self, model: nn.Module) -> dict[str, Any]:
        backbone = vit_backbone(model)
        geometry = vit_geometry(model)
        full_tokens = backbone.num_tokens
        full_heads = max(
            backbone.embed_dim // backbone.blocks[0].attn.head_dim, *(g["heads"] for g in geometry)
        )
        full_hidden = max(4 * backbone.embed_dim, *(g["hidden"] for g in geometry))
        blocks = []
        for i, (block, geo) in enumerate(zip(backbone.blocks, geometry, strict=True)):
            attn = block.attn
            dim = backbone.embed_dim
            ms = self.attention_ms(
                dim, attn.head_dim, attn.qkv.bias is not None, (full_tokens, full_heads),
                (geo["queries"], geo["keys"], geo["heads"]),
            )  # fmt: skip
            ms += self.mlp_ms(dim, (full_tokens, full_hidden), (geo["mlp_tokens"], geo["hidden"]))
            cost = BlockCost(i, geo.pop("kind"), ms, geo)
            if cost.kind != "dense":
                self._add_reducer(cost, block, dim)
            blocks.append(cost)
        fixed = self.point(
            f"vit-fixed|{_arch_key(model, ('num_heads', 'mlp_hidden', 'tokens'))}",
            lambda: _vit_fixed(model, self.setting.batch),
        )
        return self._total(model, fixed, blocks, {"fixed_ms": fixed})

    def _add_reducer(self, cost: BlockCost, block: nn.Module, dim: int) -> None:
        """Add what the reducer costs beyond the two halves: measured for this exact geometry when
        allowed, else the fraction measured for the nearest block of the same kind."""
        geo = cost.geometry
        sig = f"reducer|{cost.kind}|dim={dim}|head_dim={block.attn.head_dim}|" + "|".join(
            f"{k}={v}" for k, v in sorted(geo.items())
        )
        if sig in self.cache or self.measure:
            measured = self.point(
                sig, lambda: (BlockProbe(copy.deepcopy(block)), self._tokens(dim, geo["tokens_in"]))
            )
            self.cache.points[f"overhead|{cost.kind}|dim={dim}|n={geo['tokens_in']}"] = measured / max(
                cost.ms, 1e-9
            )
            cost.ms = measured
            return
        prefix = f"overhead|{cost.kind}|dim={dim}|n="
        known = {int(k[len(prefix) :]): v for k, v in self.cache.points.items() if k.startswith(prefix)}
        if known:
            nearest = min(known, key=lambda n: abs(n - geo["tokens_in"]))
            cost.ms *= known[nearest]
        cost.approximate = True

    # -- ResNet tables -----------------------------------------------------------------------
    def predict_resnet(self, model: nn.Module) -> dict[str, Any]:
        from reidprune.models.resnet import resolved_branch_channels, resolved_mid_widths

        arch = model.arch
        shapes = _block_inputs(model)
        mids_all, branches = resolved_mid_widths(arch), resolved_branch_channels(arch)
        blocks = []
        stage_of = [s for s, n in enumerate(arch.layers) for _ in range(n)]
        for i, (name, block) in enumerate(model.blocks):
            c_in, height, width = shapes[name]
            planes = arch.stage_planes[stage_of[i]]
            stride = max(m.stride[0] for m in block.modules() if isinstance(m, nn.Conv2d))
            kind = type(block).__name__.lower()
            key = f"{kind}|in={c_in}|size={height}x{width}|planes={planes}|stride={stride}"
            axes = [axis(planes, self.grid.width_fractions) for _ in mids_all[i]]
            values = np.zeros([len(a) for a in axes])
            for index in np.ndindex(*values.shape):
                mids = [axes[d][j] for d, j in enumerate(index)]
                values[index] = self.point(
                    f"{key}|mids={','.join(map(str, mids))}",
                    lambda b=type(block), mids=mids, c_in=c_in, planes=planes, stride=stride, h=height, w=width: (
                        b(c_in, planes, mids, stride, None),
                        (torch.randn(self.setting.batch, c_in, h, w),),
                    ),
                )
            geo = {"in": c_in, "height": height, "width": width, "planes": planes, "stride": stride}
            geo |= {f"mid{j + 1}": m for j, m in enumerate(mids_all[i])}
            ms = interpolate(axes, monotone(values), mids_all[i])
            # a BAFD branch writing fewer channels is priced as if it wrote all: an upper bound
            blocks.append(BlockCost(i, kind, ms, geo, approximate=branches[i] is not None))
        c_last, h_last, w_last = shapes["avgpool"]
        stem = self.point(
            f"resnet-stem|width={arch.stem_width}|img={'x'.join(map(str, model_input_size(model)))}",
            lambda: (nn.Sequential(*copy.deepcopy([model.conv1, model.bn1, model.relu, model.maxpool])), (_images(model, self.setting.batch),)),
        )  # fmt: skip
        head = self.point(
            f"resnet-head|{_arch_key(model, ('mid_widths', 'branch_channels', 'stem_width', 'layers'))}|map={c_last}x{h_last}x{w_last}",
            lambda: (FeatureMapHead(copy.deepcopy(model)), (torch.randn(self.setting.batch, c_last, h_last, w_last),)),
        )  # fmt: skip
        return self._total(
            model, stem + head, blocks, {"fixed_ms": stem + head, "stem_ms": stem, "head_ms": head}
        )

    # -- whole model -------------------------------------------------------------------------
    def predict(self, model: nn.Module) -> dict[str, Any]:
        """Predicted milliseconds of one forward of `model` at the setting's batch (see the module doc)."""
        model = model.eval()
        if vit_backbone(model, required=False) is not None:
            return self.predict_vit(model)
        if type(model).__name__ == "ResNet" and hasattr(model, "blocks"):
            return self.predict_resnet(model)
        raise TypeError(
            f"{type(model).__name__}: the latency model knows reidprune ViTs and ResNets; measure other "
            "models with measure_latency"
        )

    def _total(
        self, model: nn.Module, fixed: float, blocks: list[BlockCost], extra: dict[str, float]
    ) -> dict[str, Any]:
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
        }


# -- reading a model ---------------------------------------------------------------------------
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
            kind, after = "topk", 1 + spec.keep[i] + int(spec.fuse)
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
) -> dict[str, Any]:
    """Predicted latency (ms) of one forward of `model` at `batch` on `runtime` ("onnxruntime",
    "torch", "cuda"); points missing from the cached tables are timed first (measure=False: raise)."""
    with LatencyModel(
        runtime, batch, threads, cache=cache, grid=grid, measure=measure, min_time=min_time
    ) as lm:
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
    from reidprune.measure.timing import interleaved_times, summarize_ms

    setting = setting_for(runtime, batch, threads)
    model = model.eval()
    with Runner(setting) as run:
        inputs = (_images(model, batch), torch.zeros(batch, dtype=torch.long))
        if runtime == "onnxruntime":
            fn = _exported_call(model, inputs, setting, run)
        else:
            fn = run.callable(EmbeddingProbe(model), inputs)
        times = interleaved_times({"model": fn}, min_time=min_time, warmup=3, min_rounds=5, device=run.device)
    return {**summarize_ms(times["model"]), "rounds": len(times["model"]), "setting": asdict(setting)}


def _exported_call(
    model: nn.Module, inputs: tuple[Tensor, Tensor], setting: Setting, run: Runner
) -> Callable[[], Any]:
    """An ONNX Runtime session on the graph `export_onnx` writes, called on fixed inputs."""
    from reidprune.export.onnx import export_onnx
    from reidprune.export.runtime import create_session
    from reidprune.export.wrapper import CAMIDS, IMAGES

    report = export_onnx(model, run.folder / "model.onnx", check=False)
    session = create_session(report.path, threads=setting.threads, spinning=False)
    given = {IMAGES: inputs[0].numpy(), CAMIDS: inputs[1].numpy()}
    feeds = {item.name: given[item.name] for item in session.get_inputs()}
    return lambda: session.run(None, feeds)
