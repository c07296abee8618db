"""Cost models: what a plan costs (GMACs, or milliseconds on a runtime), predicted from its sketch.

The search only needs `CostModel.predict(sketch) -> float` (called thousands of times, so it
must be cheap: a formula or a table look-up, never a forward pass) and `unit`. Two kinds:

- `GmacsCostModel` (here): exact multiply-accumulates per image, the same count as
  `reidprune.measure.count_gmacs` (FlopCounterMode: matmuls, convolutions, attention). Per block
  it is a closed formula in the sketch's numbers; what no plan changes (patch embedding / stem,
  downsample convs, necks, JPM branches) is one constant, measured once with `count_gmacs` on the
  dense model as its total minus the formula's dense blocks.
- `LatencyCostModel` (`budget/latency_cost.py`): milliseconds per batch on a runtime, read from the
  latency model's tables (`reidprune.budget.latency`, per-block tables timed on ONNX Runtime /
  PyTorch, cached per cpu, runtime, threads and batch). `latency_cost_model` is the one place that
  builds it.

To plug in another cost model, give an object with `unit` ("GMACs" or "ms"), `predict(sketch)`
and `describe() -> dict` (JSON-able, copied into plan.json); pass it as `to_budget(cost_model=)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from reidprune.budget.sketch import Sketch, VitSketch
from reidprune.errors import CompressionError

UNITS = ("GMACs", "ms")


@runtime_checkable
class CostModel(Protocol):
    """What the search asks of a cost model."""

    unit: str  # "GMACs" (per image) or "ms" (per batch on the target runtime)

    def predict(self, sketch: Sketch) -> float:
        """Predicted cost of the model the sketch describes, in `unit`."""
        ...

    def describe(self) -> dict[str, Any]:
        """JSON-able description for the plan (kind, runtime, batch, threads, table file, ...)."""
        ...


@dataclass(frozen=True)
class VitBlockShape:
    """The fixed numbers of one ViT block: embedding width, head dim, MLP hidden width."""

    dim: int
    head_dim: int
    mlp: int


@dataclass(frozen=True)
class ConvTerm:
    """One conv whose MACs depend on the plan: factor = kh * kw * H_out * W_out / groups.

    c_in / c_out: fixed channel counts, or None when the count is `in_width` / `out_width`, an
    index into the block's sketch widths."""

    factor: int
    c_in: int | None
    in_width: int | None
    c_out: int | None
    out_width: int | None

    def macs(self, widths: tuple[int, ...]) -> int:
        c_in = self.c_in if self.c_in is not None else widths[self.in_width]  # type: ignore[index]
        c_out = self.c_out if self.c_out is not None else widths[self.out_width]  # type: ignore[index]
        return self.factor * c_in * c_out


def vit_block_macs(
    shape: VitBlockShape,
    tokens: int,
    kept: int,
    heads: int,
    mode: str,
    method: str = "amg",
    class_token: bool = True,
) -> int:
    """MACs of one ViT block per image, as FlopCounterMode counts them.

    AMG kv: q for all `tokens`, k / v for `kept`, attention tokens x kept, proj and MLP for all
    tokens. AMG skip: the whole block on `kept` tokens only. top-k / ToMe: attention on all
    `tokens`, MLP on the `kept` ones, plus the reducer's own products when kept < tokens: top-k the
    class token's attention row (heads x tokens x head_dim; every query's without a class token),
    ToMe the bipartite similarity of the head-averaged keys (ceil(N/2) x floor(N/2) x head_dim).
    """
    inner = heads * shape.head_dim
    if method == "amg":
        if mode == "skip":
            tokens = kept
        return (
            tokens * shape.dim * inner  # q
            + kept * shape.dim * 2 * inner  # k, v
            + 2 * heads * tokens * kept * shape.head_dim  # q k^T and (weights) v
            + tokens * inner * shape.dim  # proj
            + 2 * tokens * shape.dim * shape.mlp  # fc1, fc2
        )
    macs = (
        3 * tokens * shape.dim * inner  # q, k, v
        + 2 * heads * tokens * tokens * shape.head_dim  # q k^T and (weights) v
        + tokens * inner * shape.dim  # proj
        + 2 * kept * shape.dim * shape.mlp  # fc1, fc2 on the tokens left
    )
    if kept < tokens:
        if method == "topk":
            macs += inner * tokens * (1 if class_token else tokens)
        elif method == "tome":
            macs += ((tokens + 1) // 2) * (tokens // 2) * shape.head_dim
        else:
            raise CompressionError(f"token method {method!r}: expected amg, topk or tome")
    return macs


class GmacsCostModel:
    """Exact GMACs per image of a plan (see the module docstring). Build with `for_model`."""

    unit = "GMACs"

    def __init__(
        self,
        fixed_gmacs: float,
        vit_blocks: list[VitBlockShape] | None = None,
        cnn_blocks: list[list[ConvTerm]] | None = None,
        class_token: bool = True,
    ) -> None:
        self.fixed_gmacs = fixed_gmacs
        self.vit_blocks = vit_blocks
        self.cnn_blocks = cnn_blocks
        self.class_token = class_token  # top-k ranks by the class token's row, else by every query's

    @classmethod
    def for_model(cls, model: nn.Module) -> GmacsCostModel:
        """The cost model of `model` (a dense-token reidprune ViT or a reidprune ResNet) at its input size."""
        from reidprune.budget.candidates import base_sketch, is_vit
        from reidprune.measure.flops import count_gmacs

        measured = count_gmacs(model)["gmacs"]
        if is_vit(model):
            from reidprune.compress.tokens.layout import find_backbone

            shapes = _vit_shapes(model)
            built = cls(0.0, vit_blocks=shapes, class_token=find_backbone(model).has_class_token)
        else:
            built = cls(0.0, cnn_blocks=_cnn_terms(model))
        built.fixed_gmacs = measured - built.blocks_gmacs(base_sketch(model))
        return built

    def block_gmacs(self, sketch: Sketch) -> list[float]:
        """GMACs of every block the sketch describes (the plan-dependent part only)."""
        if isinstance(sketch, VitSketch):
            if self.vit_blocks is None or len(sketch.heads) != len(self.vit_blocks):
                raise CompressionError("GMACs cost model: the sketch does not describe this ViT's blocks")
            return [
                vit_block_macs(shape, n, c, h, sketch.mode, sketch.method, self.class_token) / 1e9
                for shape, n, c, h in zip(
                    self.vit_blocks, sketch.tokens, sketch.kept, sketch.heads, strict=True
                )
            ]
        if self.cnn_blocks is None or len(sketch.widths) != len(self.cnn_blocks):
            raise CompressionError("GMACs cost model: the sketch does not describe this CNN's blocks")
        return [
            sum(term.macs(widths) for term in terms) / 1e9
            for terms, widths in zip(self.cnn_blocks, sketch.widths, strict=True)
        ]

    def blocks_gmacs(self, sketch: Sketch) -> float:
        return sum(self.block_gmacs(sketch))

    def predict(self, sketch: Sketch) -> float:
        return self.fixed_gmacs + self.blocks_gmacs(sketch)

    def describe(self) -> dict[str, Any]:
        return {"kind": "gmacs", "unit": self.unit, "fixed_gmacs": self.fixed_gmacs}


def _vit_shapes(model: nn.Module) -> list[VitBlockShape]:
    from reidprune.compress.tokens.layout import find_backbone

    return [
        VitBlockShape(block.attn.proj.out_features, block.attn.head_dim, block.mlp.fc1.out_features)
        for block in find_backbone(model).blocks
    ]


@torch.no_grad()
def _cnn_terms(model: nn.Module) -> list[list[ConvTerm]]:
    """Per residual block, the convs whose MACs the internal widths change, with their output sizes
    recorded by one eval forward pass on a zero image."""
    from reidprune.compress.filters.targets import require_resnet
    from reidprune.models.forward import forward_model, model_device, model_dtype, model_input_size
    from reidprune.models.resnet import block_names, internal_conv_names, last_conv_name

    net = require_resnet(model)
    arch = net.arch
    names = list(internal_conv_names(arch))
    convs = {
        (i, j): net.get_submodule(f"{block}.{conv}")
        for i, block in enumerate(block_names(arch))
        for j, conv in enumerate([*names, last_conv_name(arch)])
    }
    sizes: dict[tuple[int, int], int] = {}
    hooks = [
        conv.register_forward_hook(
            lambda _m, _i, out, key=key: sizes.__setitem__(key, int(out.shape[-2] * out.shape[-1]))
        )
        for key, conv in convs.items()
    ]
    height, width = model_input_size(model)
    was_training = model.training
    model.eval()
    try:
        forward_model(
            model, torch.zeros(1, 3, height, width, device=model_device(model), dtype=model_dtype(model))
        )
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    last = len(names)  # the last conv's index in the block
    blocks: list[list[ConvTerm]] = []
    for i in range(len(block_names(arch))):
        terms = []
        for j in range(last + 1):
            conv = convs[i, j]
            factor = conv.kernel_size[0] * conv.kernel_size[1] * sizes[i, j] // conv.groups
            terms.append(
                ConvTerm(
                    factor,
                    conv.in_channels if j == 0 else None,
                    None if j == 0 else j - 1,
                    conv.out_channels if j == last else None,
                    None if j == last else j,
                )
            )
        blocks.append(terms)
    return blocks


def latency_cost_model(
    model: nn.Module, runtime: str, batch: int = 1, threads: int | None = None, **options: Any
) -> CostModel:
    """The runtime latency cost model (milliseconds per batch) for `model`: the one place where the
    latency model (`reidprune.budget.latency`, per-block cost tables timed on the runtime and cached)
    plugs into the search. options: `LatencyCostModel.for_model`'s (cache, grid, min_time, chain,
    calibrate, calib_time, measure)."""
    from reidprune.budget.latency_cost import LatencyCostModel

    try:
        return LatencyCostModel.for_model(model, runtime, batch, threads, **options)
    except (ValueError, LookupError) as err:
        raise CompressionError(f"latency model for runtime '{runtime}': {err}") from None
