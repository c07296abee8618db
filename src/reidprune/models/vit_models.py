"""The "vit" model family: the architecture dataclass, the model module and the named configurations.

A `ViTArch` describes a model exactly, including what compression changed (heads per block,
token-reduction spec), so that ``build(arch)`` plus the saved weights reproduces it. The module
`ViTReID` is a `VisionTransformer` backbone (timm parameter names, no classifier) plus one of the
heads of `reid_heads` under ``model.head``.

Layout of a built model (the attribute names other modules rely on):
- ``model.backbone``: VisionTransformer; ``model.backbone.blocks[i].attn`` are the Attention modules
  whose heads ``arch.num_heads[i]`` counts; ``model.backbone.blocks[i].reducer`` is the token hook.
- ``model.head``: LinearHead | BNNeckHead | LAHead | JPMHead with ``necks`` and ``classifiers``.
- TransReID with JPM: the last transformer layer is NOT in the backbone; it lives twice, as
  ``model.head.b1.block`` (global branch) and ``model.head.b2.block`` (local branch), with heads
  ``arch.jpm_num_heads = [b1, b2]``; the backbone then has no final norm (b1 / b2 carry their own).
  So ``transreid_base`` has 11 backbone blocks + b1 + b2, as TransReID runs blocks[:-1] and then the
  copies of the last block.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from reidprune.errors import ConfigError
from reidprune.models.output import ModelOutput
from reidprune.models.registry import register, register_family
from reidprune.models.reid_heads import BNNeckHead, JPMBranch, JPMHead, LAHead, LinearHead
from reidprune.models.tokens import attach_reducers
from reidprune.models.vit import Block, VisionTransformer

HEADS = ("linear", "bnneck", "la", "transreid")


# Options each head understands, with their defaults (arch.head_options overrides them).
HEAD_OPTIONS: dict[str, dict[str, Any]] = {
    "linear": {},
    "bnneck": {"neck_feat": "after"},
    "la": {"lmbd": 8.0, "num_parts": 0, "bottleneck": 256, "dropout": 0.5, "blend_at_test": False},
    "transreid": {"neck_feat": "before", "shift": 5, "shuffle_groups": 2, "num_local": 4, "rearrange": True},
}


@dataclass
class ViTArch:
    """Everything needed to build a ViT model exactly (JSON-able; OmegaConf-compatible types).

    img_size: [H, W] input size; the patch grid is ((H - patch) // stride + 1, (W - patch) // stride + 1).
    num_heads / mlp_hidden: one entry per backbone block (head pruning changes num_heads; head_dim
      and the softmax scale stay as trained). With head="transreid" and jpm=True the last layer is
      not a backbone block: it is b1 / b2 with heads jpm_num_heads and MLP width mlp_hidden[-1].
    qk_scale: softmax scale; None = head_dim ** -0.5 (the old timm ViT-S of TransReID-small uses
      768 ** -0.5).
    head: "linear" (classification) | "bnneck" (CLS + BNNeck) | "la" (LA-Transformer stripes) |
      "transreid" (BNNeck, plus the jigsaw patch module when jpm=True); head_options override
      HEAD_OPTIONS[head].
    num_cameras: > 0 adds TransReID's camera embedding (SIE) scaled by sie_coef; camids are then
      required in forward.
    global_pool: the image feature of the "linear" / "bnneck" heads: "token" (CLS after the final
      norm) or "avg" (mean of the patch positions, MAE / timm global_pool="avg"); fc_norm: a
      LayerNorm after pooling instead of the final norm (None = only with "avg", as timm).
    tokens: token-reduction spec owned by reidprune.models.tokens (None = dense model).
    init_values / qk_norm / class_token / reg_tokens / no_embed_class: as timm's VisionTransformer
      keyword arguments of the same names (LayerScale when init_values is set, LayerNorm on queries
      and keys, prefix tokens, position embedding only on the patches); dist_token: DeiT's
      distillation token (timm's deit_*_distilled_*), read with the CLS token (mean of both; the
      "linear" head gets timm's second classifier head_dist). Extra prefix tokens and class_token=False
      need head "linear" or "bnneck". See reidprune.models.from_timm.
    """

    family: str = "vit"
    img_size: list[int] = field(default_factory=lambda: [224, 224])
    patch_size: int = 16
    stride: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    num_heads: list[int] = field(default_factory=lambda: [12] * 12)
    head_dim: int = 64
    mlp_hidden: list[int] = field(default_factory=lambda: [3072] * 12)
    qkv_bias: bool = True
    qk_scale: float | None = None
    norm_eps: float = 1e-6
    drop_path: float = 0.0
    num_cameras: int = 0
    sie_coef: float = 3.0
    num_classes: int = 1000
    head: str = "linear"
    jpm: bool = False
    jpm_num_heads: list[int] | None = None
    head_options: dict[str, Any] = field(default_factory=dict)
    tokens: dict[str, Any] | None = None
    global_pool: str = "token"
    fc_norm: bool | None = None
    init_values: float | None = None
    qk_norm: bool = False

    @property
    def num_prefix_tokens(self) -> int:
        """Class, distillation and register tokens before the patches."""
        return int(self.class_token) + int(self.dist_token) + self.reg_tokens

    class_token: bool = True
    dist_token: bool = False
    reg_tokens: int = 0
    no_embed_class: bool = False

    @property
    def grid_size(self) -> tuple[int, int]:
        return (
            (self.img_size[0] - self.patch_size) // self.stride + 1,
            (self.img_size[1] - self.patch_size) // self.stride + 1,
        )

    @property
    def uses_jpm(self) -> bool:
        return self.head == "transreid" and self.jpm

    @property
    def depth(self) -> int:
        """Transformer layers on the main path (backbone blocks, plus the JPM last layer)."""
        return len(self.num_heads) + (1 if self.uses_jpm else 0)

    def branch_heads(self) -> list[int]:
        """Heads of the JPM copies [b1, b2] (defaults to the last backbone block's count)."""
        if self.jpm_num_heads is not None:
            return list(self.jpm_num_heads)
        return [self.num_heads[-1] if self.num_heads else 12] * 2

    def options(self) -> dict[str, Any]:
        """The head's options: HEAD_OPTIONS[head] overridden by head_options."""
        return {**HEAD_OPTIONS.get(self.head, {}), **self.head_options}


def validate_arch(arch: ViTArch) -> None:
    """Raise ConfigError naming the field when the architecture cannot be built."""

    def fail(key: str, message: str) -> None:
        raise ConfigError(f"vit architecture: key '{key}': {message}")

    if arch.head not in HEADS:
        fail("head", f"'{arch.head}' is not one of {', '.join(HEADS)}")
    if arch.global_pool not in ("token", "avg"):
        fail("global_pool", f"expected 'token' or 'avg', got {arch.global_pool!r}")
    if (arch.global_pool != "token" or arch.fc_norm) and arch.head not in ("linear", "bnneck"):
        # the LA and TransReID heads read the CLS token and the patch grid themselves
        fail(
            "global_pool", f"'{arch.global_pool}' / fc_norm need head 'linear' or 'bnneck', not '{arch.head}'"
        )
    _validate_prefix(arch, fail)
    for key in ("patch_size", "in_chans", "embed_dim", "head_dim"):
        if getattr(arch, key) < 1:
            fail(key, f"expected >= 1, got {getattr(arch, key)}")
    if len(arch.img_size) != 2 or min(arch.img_size) < arch.patch_size:
        fail("img_size", f"expected [H, W] each >= patch_size {arch.patch_size}, got {list(arch.img_size)}")
    if arch.stride < 1 or arch.stride > arch.patch_size:
        fail("stride", f"expected 1 <= stride <= patch_size {arch.patch_size}, got {arch.stride}")
    _warn_uncovered(arch)
    if not arch.num_heads or min(arch.num_heads) < 1:
        fail("num_heads", f"every block needs at least one head, got {list(arch.num_heads)}")
    if len(arch.mlp_hidden) != len(arch.num_heads):
        fail("mlp_hidden", f"{len(arch.mlp_hidden)} entries for {len(arch.num_heads)} blocks (num_heads)")
    if arch.jpm and arch.head != "transreid":
        fail("jpm", f"the jigsaw patch module needs head='transreid', not '{arch.head}'")
    if arch.jpm_num_heads is not None and (len(arch.jpm_num_heads) != 2 or min(arch.jpm_num_heads) < 1):
        fail("jpm_num_heads", f"expected [b1_heads, b2_heads] each >= 1, got {list(arch.jpm_num_heads)}")
    unknown = set(arch.head_options) - set(HEAD_OPTIONS[arch.head])
    if unknown:
        fail(
            "head_options",
            f"unknown option(s) {sorted(unknown)} for head '{arch.head}'; "
            f"known: {sorted(HEAD_OPTIONS[arch.head]) or 'none'}",
        )
    if arch.uses_jpm:
        patches, local = arch.grid_size[0] * arch.grid_size[1], int(arch.options()["num_local"])
        if local < 1 or patches < local:
            fail(
                "head_options.num_local",
                f"{local} local branches need 1..{patches} patches ({arch.grid_size} grid)",
            )
    if arch.init_values is not None and (
        isinstance(arch.init_values, bool) or not isinstance(arch.init_values, int | float)
    ):
        fail("init_values", f"expected a number (LayerScale init) or null, got {arch.init_values!r}")
    if arch.num_classes < 0:
        fail("num_classes", f"expected >= 0 (0 = no classifier), got {arch.num_classes}")
    if arch.head == "la" and int(arch.options()["num_parts"]) < 0:
        fail("head_options.num_parts", "expected 0 (one stripe per grid row) or a positive count")


def _validate_prefix(arch: ViTArch, fail: Any) -> None:
    """Prefix tokens and pooling that fit together (timm refuses the same combinations)."""
    if isinstance(arch.reg_tokens, bool) or not isinstance(arch.reg_tokens, int) or arch.reg_tokens < 0:
        fail("reg_tokens", f"expected an int >= 0, got {arch.reg_tokens!r}")
    extra = arch.dist_token or arch.reg_tokens > 0 or not arch.class_token
    if extra and arch.head not in ("linear", "bnneck"):
        # the LA and TransReID heads take exactly the CLS token and then the patches
        fail(
            "head",
            f"'{arch.head}' reads one CLS token; dist_token / reg_tokens / class_token=False need 'linear' or 'bnneck'",
        )
    if not arch.class_token and arch.global_pool == "token":
        fail("class_token", "false needs global_pool 'avg' (the 'token' pool reads the class token)")
    if arch.dist_token and (arch.global_pool != "token" or arch.fc_norm):
        fail(
            "dist_token",
            "the distillation token is read with the CLS token: needs global_pool 'token' and no fc_norm",
        )
    if arch.dist_token and not arch.class_token:
        fail("dist_token", "needs class_token true")


def uncovered_pixels(arch: ViTArch) -> tuple[int, int]:
    """Rows at the bottom and columns at the right of the input that no patch covers."""
    return tuple((size - arch.patch_size) % arch.stride for size in arch.img_size)  # type: ignore[return-value]


def _warn_uncovered(arch: ViTArch) -> None:
    # With non-overlapping patches a remainder means the image size is not a multiple of the patch:
    # those pixels are silently cut off. Overlapping patches (TransReID's stride 12 at 256x128) leave a
    # few by design, as the seed models were trained, so they are not warned about.
    rows, cols = uncovered_pixels(arch)
    if arch.stride == arch.patch_size and (rows or cols):
        warnings.warn(
            f"vit architecture: img_size {list(arch.img_size)} is not a multiple of patch_size "
            f"{arch.patch_size}: the last {rows} pixel row(s) and {cols} column(s) are covered by no "
            "patch and ignored; use a size that is a multiple of the patch",
            UserWarning,
            stacklevel=3,
        )


class ViTReID(nn.Module):
    """ViT backbone + head. forward(images (B, 3, H, W), camids (B,) or None) -> ModelOutput.

    Train mode: logits (one per classifier), features (pre-neck, one per head branch), embedding.
    Eval mode: embedding = the exact retrieval vector; logits only for head="linear".
    """

    arch: ViTArch

    def __init__(self, arch: ViTArch) -> None:
        super().__init__()
        validate_arch(arch)
        jpm = arch.uses_jpm
        backbone_drop = arch.drop_path
        if jpm:
            # keep TransReID's linear drop-path ramp over all L layers: the backbone stops one short
            backbone_drop = arch.drop_path * (arch.depth - 2) / (arch.depth - 1)
        self.backbone = VisionTransformer(
            img_size=arch.img_size,
            patch_size=arch.patch_size,
            stride=arch.stride,
            in_chans=arch.in_chans,
            embed_dim=arch.embed_dim,
            num_heads=arch.num_heads,
            head_dim=arch.head_dim,
            mlp_hidden=arch.mlp_hidden,
            qkv_bias=arch.qkv_bias,
            qk_scale=arch.qk_scale,
            norm_eps=arch.norm_eps,
            drop_path=backbone_drop,
            num_cameras=arch.num_cameras,
            sie_coef=arch.sie_coef,
            num_classes=0,
            global_pool=arch.global_pool,
            fc_norm=arch.fc_norm,
            init_values=arch.init_values,
            qk_norm=arch.qk_norm,
            class_token=arch.class_token,
            dist_token=arch.dist_token,
            reg_tokens=arch.reg_tokens,
            no_embed_class=arch.no_embed_class,
        )
        self.head = _build_head(arch, self.backbone)

    def forward(self, images: Tensor, camids: Tensor | None = None) -> ModelOutput:
        tokens, state = self.backbone.forward_tokens(images, camids)
        return self.head(tokens, state, self.backbone)


def _branch(arch: ViTArch, heads: int) -> JPMBranch:
    scale = arch.qk_scale if arch.qk_scale is not None else arch.head_dim**-0.5
    block = Block(
        arch.embed_dim,
        heads,
        arch.head_dim,
        arch.mlp_hidden[-1],
        arch.qkv_bias,
        scale,
        arch.norm_eps,
        arch.drop_path,
        init_values=arch.init_values,
        qk_norm=arch.qk_norm,
    )
    _init_like_backbone(block)
    return JPMBranch(block, nn.LayerNorm(arch.embed_dim, eps=arch.norm_eps))


def _init_like_backbone(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _build_head(arch: ViTArch, backbone: VisionTransformer) -> nn.Module:
    opts = arch.options()
    dim, classes = arch.embed_dim, arch.num_classes
    if arch.head == "linear":
        return LinearHead(dim, classes, distilled=arch.dist_token)
    if arch.head == "la":
        parts = int(opts["num_parts"]) or backbone.grid_size[0]
        return LAHead(
            dim,
            classes,
            parts,
            lmbd=float(opts["lmbd"]),
            bottleneck=int(opts["bottleneck"]),
            dropout=float(opts["dropout"]),
            blend_at_test=bool(opts["blend_at_test"]),
        )
    neck_feat = str(opts["neck_feat"])
    if neck_feat not in ("before", "after"):
        raise ConfigError(
            f"vit architecture: head_options.neck_feat must be 'before' or 'after', got '{neck_feat}'"
        )
    if not arch.uses_jpm:
        return BNNeckHead(dim, classes, neck_feat=neck_feat)
    backbone.norm = nn.Identity()  # b1 / b2 carry the final norm
    b1_heads, b2_heads = arch.branch_heads()
    return JPMHead(
        _branch(arch, b1_heads),
        _branch(arch, b2_heads),
        dim,
        classes,
        shift=int(opts["shift"]),
        shuffle_groups=int(opts["shuffle_groups"]),
        num_local=int(opts["num_local"]),
        rearrange=bool(opts["rearrange"]),
        neck_feat=neck_feat,
    )


def build_vit(arch: ViTArch) -> ViTReID:
    """Build the module of a ViTArch; attaches token reducers when arch.tokens is set."""
    model = ViTReID(arch)
    model.arch = arch
    if arch.tokens is not None:
        attach_reducers(model, arch.tokens)
    return model


register_family("vit", ViTArch, build_vit)


def attention_params(arch: ViTArch, include_branches: bool = False) -> int:
    """Parameters of all q/k/v/proj layers, from the architecture alone (AMG's "MSA param" without
    the token-mask entries). include_branches adds the JPM copies b1 / b2."""
    heads = list(arch.num_heads) + (arch.branch_heads() if include_branches and arch.uses_jpm else [])
    d = arch.embed_dim
    per_head = 3 * arch.head_dim * d + arch.head_dim * d + (3 * arch.head_dim if arch.qkv_bias else 0)
    qk_norm = 4 * arch.head_dim if arch.qk_norm else 0  # q_norm and k_norm: weight + bias each
    return sum(h * per_head + d + qk_norm for h in heads)  # + d: proj bias, one per block


# ---------------------------------------------------------------------------------------------
# Named configurations. Uniform keyword arguments: num_classes, img_size, stride, num_cameras,
# drop_path, depth (transformer layers, JPM layer included); any other ViTArch field may be given
# too (e.g. num_heads=[3, 1, 2, ...], head_options={"neck_feat": "after"}).

_UNIFORM = ("num_classes", "img_size", "stride", "num_cameras", "drop_path", "depth")
_FIELDS = {f.name for f in dataclasses.fields(ViTArch)} - {"family"}


def _arch(
    name: str, spec: dict[str, Any], heads: int, mlp: int, depth: int, kwargs: dict[str, Any]
) -> ViTArch:
    unknown = set(kwargs) - set(_UNIFORM) - _FIELDS
    if unknown:
        raise ConfigError(
            f"model '{name}': unknown argument(s) {sorted(unknown)}; "
            f"expected {', '.join(_UNIFORM)} or a ViTArch field ({', '.join(sorted(_FIELDS))})"
        )
    depth = int(kwargs.pop("depth", depth))
    values = {**spec, **kwargs}
    jpm = values.get("head") == "transreid" and values.get("jpm", False)
    blocks = depth - 1 if jpm else depth
    if blocks < 1:
        raise ConfigError(f"model '{name}': depth {depth} leaves no backbone block")
    values.setdefault("num_heads", [heads] * blocks)
    values.setdefault("mlp_hidden", [mlp] * blocks)
    if jpm:
        values.setdefault("jpm_num_heads", [heads, heads])
    values["img_size"] = [int(s) for s in values.get("img_size", [224, 224])]
    values.setdefault("stride", values.get("patch_size", 16))
    options = dict(values.pop("head_defaults", {}))
    options.update(values.get("head_options", {}))
    values["head_options"] = options
    values["num_heads"] = [int(h) for h in values["num_heads"]]
    values["mlp_hidden"] = [int(m) for m in values["mlp_hidden"]]
    return ViTArch(**values)


def _classification(embed_dim: int) -> dict[str, Any]:
    return {"embed_dim": embed_dim, "head": "linear", "num_classes": 1000}


@register("deit_tiny_patch16_224")
def deit_tiny_patch16_224(**kwargs: Any) -> ViTArch:
    """DeiT-Ti/16 (Touvron et al. 2021): D 192, 12 blocks x 3 heads, 224x224, ImageNet classifier."""
    return _arch("deit_tiny_patch16_224", _classification(192), 3, 768, 12, kwargs)


@register("deit_small_patch16_224")
def deit_small_patch16_224(**kwargs: Any) -> ViTArch:
    """DeiT-S/16: D 384, 12 blocks x 6 heads, 224x224, ImageNet classifier."""
    return _arch("deit_small_patch16_224", _classification(384), 6, 1536, 12, kwargs)


@register("deit_base_patch16_224")
def deit_base_patch16_224(**kwargs: Any) -> ViTArch:
    """DeiT-B/16: D 768, 12 blocks x 12 heads, 224x224, ImageNet classifier."""
    return _arch("deit_base_patch16_224", _classification(768), 12, 3072, 12, kwargs)


@register("mae_base_patch16_224")
def mae_base_patch16_224(**kwargs: Any) -> ViTArch:
    """ViT-B/16 fine-tuned from MAE (He et al. 2022; PM-ViT-MAE-base): as vit_base_patch16_224, but the
    image feature is the mean of the patch tokens followed by fc_norm (no final norm on the tokens)."""
    spec = {**_classification(768), "global_pool": "avg", "fc_norm": True}
    return _arch("mae_base_patch16_224", spec, 12, 3072, 12, kwargs)


@register("vit_base_patch16_224")
def vit_base_patch16_224(**kwargs: Any) -> ViTArch:
    """ViT-B/16 (Dosovitskiy et al. 2021; timm vit_base_patch16_224): same shape as DeiT-B."""
    return _arch("vit_base_patch16_224", _classification(768), 12, 3072, 12, kwargs)


_TRANSREID = {
    "img_size": [256, 128],
    "stride": 12,
    "head": "transreid",
    "jpm": True,
    "num_classes": 751,
    "drop_path": 0.1,
    "sie_coef": 3.0,
}


@register("transreid_base")
def transreid_base(**kwargs: Any) -> ViTArch:
    """TransReID ViT-B/16 (He et al. 2021), Market setting: 256x128, overlapping stride 12 (21x10 patches),
    SIE when num_cameras > 0 (Market 6, Occluded-Duke 8 with stride 11), JPM (shift 5, 2 shuffle groups,
    4 local branches), BNNeck on 5 features, retrieval with the pre-BN features. 751 IDs by default."""
    return _arch("transreid_base", {**_TRANSREID, "embed_dim": 768}, 12, 3072, 12, kwargs)


@register("transreid_small")
def transreid_small(**kwargs: Any) -> ViTArch:
    """TransReID-small = the OLD timm ViT-S (vit_small_patch16_224 before DeiT): D 768, 8 layers x 8 heads
    of dim 96, MLP 2304, no qkv bias, softmax scale 768^-0.5; TransReID's head as transreid_base."""
    spec = {**_TRANSREID, "embed_dim": 768, "head_dim": 96, "qkv_bias": False, "qk_scale": 768**-0.5}
    return _arch("transreid_small", spec, 8, 2304, 8, kwargs)


_LA = {"img_size": [224, 224], "head": "la", "num_classes": 751}


@register("la_tiny")
def la_tiny(**kwargs: Any) -> ViTArch:
    """LA-Transformer (Sharma et al. 2021) on ViT-Ti/16 (AMG's LA-Tiny): 224x224, 14 row stripes,
    blend (g + 8p) / 9, one ClassBlock(256) per stripe, 751 IDs (Market) by default."""
    return _arch("la_tiny", {**_LA, "embed_dim": 192}, 3, 768, 12, kwargs)


@register("la_small")
def la_small(**kwargs: Any) -> ViTArch:
    """LA-Transformer on ViT-S/16 (D 384, 6 heads): the backbone AMG's LA train.py uses."""
    return _arch("la_small", {**_LA, "embed_dim": 384}, 6, 1536, 12, kwargs)


@register("la_base")
def la_base(**kwargs: Any) -> ViTArch:
    """LA-Transformer on ViT-B/16 (the original LA-Transformer Market model; AMG's LA-Base)."""
    return _arch("la_base", {**_LA, "embed_dim": 768}, 12, 3072, 12, kwargs)


# The tiny re-ID models for the embedded synthetic data: 128x64 input with 8x8 patches gives a
# 16x8 grid (128 patches, enough for token pruning to matter), D 192 with 3 heads of 64 (head
# pruning has something to choose from), 6 blocks and MLP ratio 2 keep a training step cheap on
# two CPU cores (about 0.27 GMACs per image).
_TINY_REID = {"img_size": [128, 64], "patch_size": 8, "embed_dim": 192, "num_classes": 751, "drop_path": 0.05}


@register("vit_tiny_reid")
def vit_tiny_reid(**kwargs: Any) -> ViTArch:
    """Tiny ViT for the synthetic data: 128x64, patch 8 (16x8 grid), D 192, 6 blocks x 3 heads, MLP 384,
    CLS + BNNeck (retrieval after the BN)."""
    return _arch("vit_tiny_reid", {**_TINY_REID, "head": "bnneck"}, 3, 384, 6, kwargs)


@register("la_tiny_reid")
def la_tiny_reid(**kwargs: Any) -> ViTArch:
    """vit_tiny_reid's backbone with the LA-Transformer head (16 row stripes, ClassBlock(128) each)."""
    spec = {**_TINY_REID, "head": "la", "head_defaults": {"bottleneck": 128}}
    return _arch("la_tiny_reid", spec, 3, 384, 6, kwargs)
