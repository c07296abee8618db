"""ResNet-18/34/50 with per-layer widths, torchvision parameter names and re-ID heads.

The architecture dataclass records every width that filter pruning can change, so that
`build(arch)` rebuilds a pruned network exactly:

- `mid_widths`: one list per residual block (in order layer1.0, layer1.1, ..., layer4.N) with the
  output widths of the block's internal convs: BasicBlock [conv1], Bottleneck [conv1, conv2].
- `branch_channels`: one list per block naming the residual-stream channels that the block's last
  conv (BasicBlock conv2, Bottleneck conv3) still writes; `[]` = all of them. This is BAFD-style
  block-output pruning: the residual stream keeps its full width and the branch output is added
  into the kept channels only, so the next block and the final feature keep their sizes.
- `stem_width`: output channels of the 7x7 stem; it can shrink only when layer1.0 has a
  projection (Bottleneck ResNets), because otherwise the stem output *is* the residual stream.

Heads (`head`):
- "linear": ImageNet classification, global average pool -> `fc`. torchvision state dicts load.
- "bnneck": BoT re-ID head, GAP -> BatchNorm1d `bottleneck` (bias frozen) -> `classifier`
  (no bias). The retrieval vector is the BN output.
- "bafd": the BAFD seed's ClassBlock (`classifier.add_block` = BatchNorm1d, then L2 normalisation,
  then `classifier.classifier.0` = Linear). The retrieval vector is the L2-normalised BN output,
  which is what the seed's test.py extracts. With `bottleneck_dim > 0` it is the layumi baseline
  block instead: Linear(C -> dim) + BatchNorm1d + Dropout(0.5) before the classifier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from reidprune.errors import ConfigError
from reidprune.models.output import ModelOutput
from reidprune.models.registry import register, register_family
from reidprune.schema import structured

HEADS = ("linear", "bnneck", "bafd")
BLOCKS = {"basic": 1, "bottleneck": 4}  # block type -> expansion of the block output


@dataclass
class ResNetArch:
    """Everything needed to build a (possibly pruned) ResNet exactly. JSON-able."""

    family: str = "resnet"
    block: str = "bottleneck"  # "basic" (ResNet-18/34) | "bottleneck" (ResNet-50/101/152)
    layers: list[int] = field(default_factory=lambda: [3, 4, 6, 3])  # blocks per stage
    img_size: list[int] = field(default_factory=lambda: [256, 128])  # [H, W] of the input
    num_classes: int = 0  # classifier outputs; 0 = no classifier (feature extractor)
    num_cameras: int = 0  # ResNets ignore camera ids; kept so every arch answers the same question
    head: str = "bnneck"  # "linear" | "bnneck" | "bafd"
    last_stride: int = 1  # stride of stage 4 (1 = re-ID standard, 2 = torchvision)
    stage_planes: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    stem_width: int = 64
    mid_widths: list[list[int]] = field(default_factory=list)  # [] = unpruned; see module docstring
    branch_channels: list[list[int]] = field(default_factory=list)  # [] = every branch writes all
    bottleneck_dim: int = 0  # "bafd" head only: 0 = BAFD seed block, > 0 = layumi Linear bottleneck


# ---------------------------------------------------------------------------------------------
# Derived quantities (pure functions of the arch)


def expansion(arch: ResNetArch) -> int:
    return BLOCKS[arch.block]


def block_names(arch: ResNetArch) -> list[str]:
    """Module names of the residual blocks in forward order, e.g. ["layer1.0", ..., "layer4.2"]."""
    return [f"layer{s + 1}.{b}" for s, n in enumerate(arch.layers) for b in range(n)]


def internal_conv_names(arch: ResNetArch) -> tuple[str, ...]:
    """The convs inside a block whose outputs stay inside the block."""
    return ("conv1",) if arch.block == "basic" else ("conv1", "conv2")


def last_conv_name(arch: ResNetArch) -> str:
    """The conv whose output is added to the residual stream."""
    return "conv2" if arch.block == "basic" else "conv3"


def block_out_width(arch: ResNetArch, stage: int) -> int:
    return arch.stage_planes[stage] * expansion(arch)


def feature_dim(arch: ResNetArch) -> int:
    return block_out_width(arch, len(arch.layers) - 1)


def default_mid_widths(arch: ResNetArch) -> list[list[int]]:
    widths = []
    for stage, n in enumerate(arch.layers):
        planes = arch.stage_planes[stage]
        widths += [[planes] * len(internal_conv_names(arch)) for _ in range(n)]
    return widths


def resolved_mid_widths(arch: ResNetArch) -> list[list[int]]:
    """`arch.mid_widths`, or the unpruned widths when it is empty."""
    return [list(w) for w in arch.mid_widths] if arch.mid_widths else default_mid_widths(arch)


def resolved_branch_channels(arch: ResNetArch) -> list[list[int] | None]:
    """Per block: the residual channels the branch writes, or None for all of them."""
    if not arch.branch_channels:
        return [None] * sum(arch.layers)
    return [list(c) if c else None for c in arch.branch_channels]


def validate_arch(arch: ResNetArch) -> None:
    """Raise ConfigError (a ValueError) naming the field when the architecture cannot be built."""
    if arch.block not in BLOCKS:
        raise ConfigError(f"ResNetArch.block: '{arch.block}' is not one of {sorted(BLOCKS)}")
    if arch.head not in HEADS:
        raise ConfigError(f"ResNetArch.head: '{arch.head}' is not one of {list(HEADS)}")
    if len(arch.layers) != len(arch.stage_planes) or not arch.layers or min(arch.layers) < 1:
        raise ConfigError(
            f"ResNetArch.layers {arch.layers} and stage_planes {arch.stage_planes}: expected one "
            "positive block count per stage"
        )
    if len(arch.img_size) != 2 or min(arch.img_size) < 1:
        raise ConfigError(f"ResNetArch.img_size: expected [H, W], got {arch.img_size}")
    if arch.last_stride not in (1, 2):
        raise ConfigError(f"ResNetArch.last_stride: expected 1 or 2, got {arch.last_stride}")
    if arch.head == "linear" and arch.num_classes < 1:
        raise ConfigError("ResNetArch: the 'linear' head needs num_classes >= 1")
    n_blocks, n_convs = sum(arch.layers), len(internal_conv_names(arch))
    if arch.mid_widths:
        if len(arch.mid_widths) != n_blocks or any(len(w) != n_convs for w in arch.mid_widths):
            raise ConfigError(
                f"ResNetArch.mid_widths: expected {n_blocks} lists of {n_convs} widths (one per block), "
                f"got {arch.mid_widths}"
            )
        if min(min(w) for w in arch.mid_widths) < 1:
            raise ConfigError("ResNetArch.mid_widths: every conv needs at least one filter")
    if arch.branch_channels:
        if len(arch.branch_channels) != n_blocks:
            raise ConfigError(
                f"ResNetArch.branch_channels: expected {n_blocks} lists, got {len(arch.branch_channels)}"
            )
        stages = [s for s, n in enumerate(arch.layers) for _ in range(n)]
        for i, (stage, chans) in enumerate(zip(stages, arch.branch_channels, strict=True)):
            width = block_out_width(arch, stage)
            if chans and (sorted(set(chans)) != list(chans) or chans[0] < 0 or chans[-1] >= width):
                raise ConfigError(
                    f"ResNetArch.branch_channels[{i}] ({block_names(arch)[i]}): expected sorted distinct "
                    f"channel indices in [0, {width}), got {chans}"
                )
    if arch.stem_width != arch.stage_planes[0] and not stem_prunable(arch):
        raise ConfigError(
            f"ResNetArch.stem_width {arch.stem_width}: the stem can only be narrower than "
            f"{arch.stage_planes[0]} when layer1.0 has a projection shortcut (Bottleneck ResNets)"
        )


def stem_prunable(arch: ResNetArch) -> bool:
    """True when layer1.0 has a projection shortcut, so the stem output feeds only convs."""
    return arch.stage_planes[0] != block_out_width(arch, 0)


# ---------------------------------------------------------------------------------------------
# Modules


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False)
    return conv, nn.BatchNorm2d(c_out)


class _Block(nn.Module):
    """Shared residual logic: shortcut, optional scatter of a pruned branch output, ReLU."""

    downsample: nn.Sequential | None

    def __init__(self, c_out: int, branch: list[int] | None) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.branch_width = c_out if branch is None else len(branch)
        # not persistent: the indices live in the arch, the state dict stays torchvision-shaped
        index = torch.tensor(branch if branch is not None else [], dtype=torch.long)
        self.register_buffer("branch_index", index, persistent=False)
        self.scatter = branch is not None

    def make_shortcut(self, c_in: int, c_out: int, stride: int) -> None:
        """Projection when the shape changes (registered after the convs: torchvision's key order)."""
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def residual(self, x: Tensor, out: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        if self.scatter:
            # the branch only writes its kept channels; the others pass the shortcut unchanged
            return self.relu(identity.index_add(1, self.branch_index, out))
        out += identity  # in place, as torchvision: `out` is a fresh BN output, saves an allocation
        return self.relu(out)


class BasicBlock(_Block):
    def __init__(
        self, c_in: int, planes: int, mids: list[int], stride: int, branch: list[int] | None
    ) -> None:
        super().__init__(planes, branch)
        self.conv1, self.bn1 = _conv_bn(c_in, mids[0], 3, stride)
        self.conv2, self.bn2 = _conv_bn(mids[0], self.branch_width, 3)
        self.make_shortcut(c_in, planes, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.residual(x, self.bn2(self.conv2(out)))


class Bottleneck(_Block):
    """torchvision v1.5 bottleneck: the stride sits on the 3x3 conv."""

    def __init__(
        self, c_in: int, planes: int, mids: list[int], stride: int, branch: list[int] | None
    ) -> None:
        super().__init__(planes * 4, branch)
        self.conv1, self.bn1 = _conv_bn(c_in, mids[0], 1)
        self.conv2, self.bn2 = _conv_bn(mids[0], mids[1], 3, stride)
        self.conv3, self.bn3 = _conv_bn(mids[1], self.branch_width, 1)
        self.make_shortcut(c_in, planes * 4, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.residual(x, self.bn3(self.conv3(out)))


class BafdClassBlock(nn.Module):
    """The BAFD seed's ClassBlock (parameter names `add_block.*`, `classifier.0.*`).

    bottleneck_dim = 0: add_block = BatchNorm1d(C); f = L2-normalise(BN(x)); logits = Linear(f).
    bottleneck_dim > 0 (layumi baseline): add_block = Linear(C, dim), BatchNorm1d(dim), Dropout(0.5);
    logits = Linear(add_block(x)); the retrieval feature is the L2-normalised add_block output.
    """

    def __init__(self, in_dim: int, num_classes: int, bottleneck_dim: int = 0) -> None:
        super().__init__()
        self.normalise_before_classifier = bottleneck_dim == 0
        dim = bottleneck_dim or in_dim
        layers: list[nn.Module] = []
        if bottleneck_dim:
            linear = nn.Linear(in_dim, dim)
            nn.init.kaiming_normal_(linear.weight, mode="fan_out")
            nn.init.zeros_(linear.bias)
            layers.append(linear)
        bn = nn.BatchNorm1d(dim)
        nn.init.normal_(bn.weight, 1.0, 0.02)
        nn.init.zeros_(bn.bias)
        layers.append(bn)
        if bottleneck_dim:
            layers.append(nn.Dropout(0.5))
        self.add_block = nn.Sequential(*layers)
        self.classifier = nn.Sequential()
        if num_classes > 0:
            fc = nn.Linear(dim, num_classes)
            nn.init.normal_(fc.weight, std=0.001)
            nn.init.zeros_(fc.bias)
            self.classifier.append(fc)

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """x: (B, C) pooled feature -> (logits list, (B, dim) unit-norm feature)."""
        f = self.add_block(x)
        f_unit = f / (f.norm(p=2, dim=1, keepdim=True) + 1e-8)
        if len(self.classifier) == 0:
            return [], f_unit
        return [self.classifier(f_unit if self.normalise_before_classifier else f)], f_unit


class ResNet(nn.Module):
    """torchvision-named ResNet with per-layer widths; forward(images, camids=None) -> ModelOutput."""

    def __init__(self, arch: ResNetArch) -> None:
        super().__init__()
        validate_arch(arch)
        self.arch = arch
        self.conv1 = nn.Conv2d(3, arch.stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(arch.stem_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        block_cls = BasicBlock if arch.block == "basic" else Bottleneck
        mids, branches = resolved_mid_widths(arch), resolved_branch_channels(arch)
        c_in, i = arch.stem_width, 0
        for stage, n in enumerate(arch.layers):
            stride = 1 if stage == 0 else 2
            if stage == len(arch.layers) - 1:
                stride = arch.last_stride
            blocks = []
            for b in range(n):
                planes = arch.stage_planes[stage]
                blocks.append(block_cls(c_in, planes, mids[i], stride if b == 0 else 1, branches[i]))
                c_in, i = planes * expansion(arch), i + 1
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        dim = feature_dim(arch)
        if arch.head == "linear":
            self.fc = nn.Linear(dim, arch.num_classes)
        elif arch.head == "bnneck":
            self.bottleneck = nn.BatchNorm1d(dim)
            self.bottleneck.bias.requires_grad_(False)  # BoT: the neck only rescales
            self.classifier = nn.Linear(dim, arch.num_classes, bias=False) if arch.num_classes else None
        else:
            self.classifier = BafdClassBlock(dim, arch.num_classes, arch.bottleneck_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.arch.head == "bnneck" and self.classifier is not None:
            nn.init.normal_(self.classifier.weight, std=0.001)
        if self.arch.head == "linear":  # torchvision's default Linear init
            bound = 1 / math.sqrt(self.fc.in_features)
            nn.init.uniform_(self.fc.weight, -bound, bound)
            nn.init.uniform_(self.fc.bias, -bound, bound)

    @property
    def blocks(self) -> list[tuple[str, _Block]]:
        """(name, block) for every residual block in forward order."""
        return [(name, self.get_submodule(name)) for name in block_names(self.arch)]  # type: ignore[misc]

    def forward_features(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, C, H/16 or H/32, W/16 or W/32) last-stage feature map."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        for stage in range(len(self.arch.layers)):
            x = getattr(self, f"layer{stage + 1}")(x)
        return x

    def forward(self, images: Tensor, camids: Tensor | None = None) -> ModelOutput:
        """images: (B, 3, H, W) normalised; camids are accepted and ignored."""
        pooled = torch.flatten(self.avgpool(self.forward_features(images)), 1)
        head = self.arch.head
        if head == "linear":
            return ModelOutput(embedding=pooled, logits=[self.fc(pooled)], features=[pooled])
        if head == "bnneck":
            neck = self.bottleneck(pooled)
            if not self.training:
                return ModelOutput(embedding=neck)
            logits = [self.classifier(neck)] if self.classifier is not None else []
            return ModelOutput(embedding=neck, logits=logits, features=[pooled])
        logits, unit = self.classifier(pooled)
        if not self.training:
            return ModelOutput(embedding=unit)
        return ModelOutput(embedding=unit, logits=logits, features=[pooled])


def build_resnet(arch: ResNetArch) -> ResNet:
    return ResNet(arch)


register_family("resnet", ResNetArch, build_resnet)


# ---------------------------------------------------------------------------------------------
# Registry entries

_DEPTHS = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]), 50: ("bottleneck", [3, 4, 6, 3])}


def resnet_arch(depth: int, **kwargs: Any) -> ResNetArch:
    """ResNetArch for depth 18/34/50 with field overrides (validated, unknown keys rejected)."""
    block, layers = _DEPTHS[depth]
    values = {"block": block, "layers": layers, **kwargs}
    if "img_size" in values:
        values["img_size"] = [int(v) for v in values["img_size"]]
    if "stage_planes" in values:  # a narrower network gets a matching stem unless told otherwise
        values.setdefault("stem_width", values["stage_planes"][0])
    arch = structured(ResNetArch, values, where=f"resnet{depth}")
    validate_arch(arch)
    return arch


def _register_depth(depth: int) -> None:
    @register(f"resnet{depth}")
    def classification(**kwargs: Any) -> ResNetArch:
        """torchvision ImageNet layout: 224x224, last stride 2, 1000-way `fc`."""
        defaults = {"head": "linear", "num_classes": 1000, "img_size": [224, 224], "last_stride": 2}
        return resnet_arch(depth, **{**defaults, **kwargs})

    @register(f"resnet{depth}_reid")
    def reid(**kwargs: Any) -> ResNetArch:
        """BoT-style re-ID model: 256x128, last stride 1, BNNeck; pass num_classes to train ID loss."""
        defaults = {"head": "bnneck", "img_size": [256, 128], "last_stride": 1}
        return resnet_arch(depth, **{**defaults, **kwargs})

    @register(f"resnet{depth}_bafd")
    def bafd(**kwargs: Any) -> ResNetArch:
        """The BAFD seed's ft_net: 256x128, last stride 2, BN + L2 ClassBlock (Market: num_classes=751)."""
        defaults = {"head": "bafd", "img_size": [256, 128], "last_stride": 2}
        return resnet_arch(depth, **{**defaults, **kwargs})


for _depth in _DEPTHS:
    _register_depth(_depth)


__all__ = [
    "BafdClassBlock",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "ResNetArch",
    "block_names",
    "build_resnet",
    "feature_dim",
    "internal_conv_names",
    "last_conv_name",
    "resnet_arch",
    "stem_prunable",
]
