"""timm Vision Transformers -> reidprune ViT models with the same outputs.

    model = reidprune.models.from_timm("deit3_small_patch16_224")            # random weights, no download
    model = reidprune.models.from_timm(timm_module)                          # a timm model in memory
    model = reidprune.models.from_timm(state_dict, "deit_small_distilled_patch16_224")
    model = reidprune.models.from_timm("vit_base_patch16_reg4_gap_256", timm_kwargs={"depth": 4})
    reid = reidprune.models.from_timm(timm_module, img_size=(256, 128), head="bnneck", num_classes=751)

The source is read as a module: its architecture comes from the timm layers themselves (their
types, shapes and flags), its weights from its state dict, whose names are reidprune's names under
`backbone.` (see models/vit.py). Supported: timm's `VisionTransformer` and `VisionTransformerDistilled`
(DeiT, DeiT distilled: the CLS and distillation tokens, logits = mean of `head` and `head_dist` as timm
gives them in eval), LayerScale (`init_values`, DeiT-III), qk-norm, register tokens, no class token with
pooled patches, `no_embed_class` position embeddings, `global_pool` "token" / "avg" with or without
fc_norm, any patch size, image size, depth and width. Anything else (another block, attention, MLP, norm
or pooling type, a missing bias) is refused with one line naming the timm class and the feature.

With the source's own size and the "linear" head, the converted model's `embedding` is timm's pre-logits
feature (`forward_head(..., pre_logits=True)`) and its `logits[0]` timm's output. `img_size` builds it for
another input size (the position embedding is resampled, bilinear, as `load_checkpoint` does); `head`
"bnneck" gives the re-ID head (CLS or pooled feature -> BNNeck -> ID classifier) with fresh weights.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from reidprune.errors import CheckpointError
from reidprune.models.checkpoint_io import load_state_dict_checked, strip_prefix
from reidprune.models.registry import build
from reidprune.models.vit import resample_pos_embed
from reidprune.models.vit_models import ViTArch, ViTReID

HEADS = ("linear", "bnneck")
# timm kwargs that would fetch weights; from_timm never downloads
_WEIGHT_KWARGS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path")


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise CheckpointError(
            "from_timm needs timm: pip install 'reidprune[train]' (or pip install timm)"
        ) from None
    return timm


def _create(name: str, kwargs: dict[str, Any]) -> nn.Module:
    refused = sorted(k for k in kwargs if k in _WEIGHT_KWARGS)
    if refused:
        raise CheckpointError(
            f"from_timm('{name}'): {refused} not accepted; weights are never downloaded (pass a state dict)"
        )
    return _timm().create_model(name, pretrained=False, **kwargs)


def _unwrap(state: Mapping[str, Any]) -> dict[str, Tensor]:
    """A training checkpoint's weights ({"model": ...} / {"state_dict": ...}), without "module."."""
    for key in ("model", "state_dict", "model_ema"):
        if isinstance(state.get(key), Mapping) and not isinstance(state.get(key), Tensor):
            return _unwrap(state[key])
    return strip_prefix(dict(state), ("module.",))


def _load_into(model: nn.Module, state: Mapping[str, Any], name: str) -> None:
    weights = _unwrap(state)
    # timm's own filter maps original DeiT / JAX names and resizes position embeddings to the model
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is not None:
        weights = filter_fn(weights, model)
    load_state_dict_checked(model, weights, strict=True, where=f"state dict for timm '{name}'")


def timm_name(model: nn.Module) -> str:
    """`TypeName 'registered_name'` of a timm model, for messages."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch = cfg.get("architecture") if isinstance(cfg, Mapping) else None
    return f"timm {type(model).__name__}" + (f" '{arch}'" if arch else "")


def _unsupported(model: nn.Module, feature: str) -> CheckpointError:
    return CheckpointError(f"from_timm: {timm_name(model)}: {feature} is not supported")


def _layer_norm_eps(model: nn.Module, module: nn.Module, where: str) -> float:
    # timm.layers.LayerNorm is an nn.LayerNorm; RmsNorm and friends compute something else
    if not isinstance(module, nn.LayerNorm) or not module.elementwise_affine or module.bias is None:
        raise _unsupported(model, f"{where} of type {type(module).__name__} (only an affine LayerNorm)")
    if len(module.normalized_shape) != 1:
        raise _unsupported(model, f"{where} over {tuple(module.normalized_shape)}")
    return float(module.eps)


def _block_arch(model: nn.Module, index: int, block: nn.Module) -> dict[str, Any]:
    """What one timm block contributes to the architecture; raises on anything else."""
    from timm.layers import Attention, LayerScale, Mlp
    from timm.models.vision_transformer import Block

    where = f"blocks.{index}"
    if type(block) is not Block:
        raise _unsupported(model, f"{where} of type {type(block).__name__} (only timm's pre-norm Block)")
    attn, mlp = block.attn, block.mlp
    if type(attn) is not Attention:
        raise _unsupported(model, f"{where}.attn of type {type(attn).__name__} (only timm's Attention)")
    if not isinstance(attn.norm, nn.Identity):
        raise _unsupported(model, f"{where}.attn.norm (scale_attn_norm)")
    if getattr(attn, "gate", None) is not None:
        raise _unsupported(model, f"{where}.attn.gate (gated attention)")
    if attn.proj.bias is None:
        raise _unsupported(model, f"{where}.attn.proj without bias (proj_bias=False)")
    if type(mlp) is not Mlp or not isinstance(mlp.act, nn.GELU) or mlp.act.approximate != "none":
        raise _unsupported(model, f"{where}.mlp of type {type(mlp).__name__} (only Mlp with exact GELU)")
    if not isinstance(mlp.norm, nn.Identity) or mlp.fc1.bias is None or mlp.fc2.bias is None:
        raise _unsupported(model, f"{where}.mlp with a norm or without biases")
    if not isinstance(mlp.fc1, nn.Linear) or not isinstance(mlp.fc2, nn.Linear):
        raise _unsupported(model, f"{where}.mlp with convolutional layers")
    scales = [isinstance(ls, LayerScale) for ls in (block.ls1, block.ls2)]
    if scales[0] != scales[1] or not all(
        isinstance(ls, LayerScale | nn.Identity) for ls in (block.ls1, block.ls2)
    ):
        raise _unsupported(model, f"{where}: LayerScale on only one branch")
    qk_norm = not isinstance(attn.q_norm, nn.Identity)
    eps = {
        _layer_norm_eps(model, block.norm1, f"{where}.norm1"),
        _layer_norm_eps(model, block.norm2, f"{where}.norm2"),
    }
    if qk_norm:
        for name in ("q_norm", "k_norm"):
            eps.add(_layer_norm_eps(model, getattr(attn, name), f"{where}.attn.{name}"))
    elif not isinstance(attn.k_norm, nn.Identity):
        raise _unsupported(model, f"{where}.attn: k_norm without q_norm")
    drop = getattr(block.drop_path1, "drop_prob", 0.0)
    return {
        "num_heads": int(attn.num_heads),
        "head_dim": int(attn.head_dim),
        "mlp_hidden": int(mlp.fc1.out_features),
        "qkv_bias": attn.qkv.bias is not None,
        "scale": float(attn.scale),
        "eps": eps,
        "layer_scale": scales[0],
        "init_values": float(getattr(block.ls1, "init_values", 1e-5)) if scales[0] else None,
        "qk_norm": qk_norm,
        "drop_path": float(drop),
    }


def _same(model: nn.Module, blocks: list[dict[str, Any]], key: str) -> Any:
    values = {str(b[key]) for b in blocks}
    if len(values) > 1:
        raise _unsupported(model, f"blocks with different {key} ({', '.join(sorted(values))})")
    return blocks[0][key]


def _check_embedding(model: nn.Module) -> None:
    from timm.layers import PatchEmbed

    if not isinstance(model.norm_pre, nn.Identity):
        raise _unsupported(model, "norm_pre (pre_norm=True)")
    embed = model.patch_embed
    if type(embed) is not PatchEmbed or not isinstance(embed.proj, nn.Conv2d):
        raise _unsupported(model, f"patch_embed of type {type(embed).__name__} (only timm's PatchEmbed)")
    proj = embed.proj
    if (
        proj.kernel_size != proj.stride
        or proj.kernel_size[0] != proj.kernel_size[1]
        or proj.padding != (0, 0)
    ):
        raise _unsupported(model, f"patch_embed.proj with kernel {proj.kernel_size}, stride {proj.stride}")
    if proj.bias is None or not isinstance(embed.norm, nn.Identity):
        raise _unsupported(
            model, "a patch embedding without bias or with a norm (pre_norm / embed_norm_layer)"
        )
    if getattr(embed, "dynamic_img_pad", False):
        raise _unsupported(model, "dynamic_img_pad")
    if model.pos_embed is None:
        raise _unsupported(model, "pos_embed='none'")


def timm_arch(model: nn.Module) -> ViTArch:
    """The ViTArch that reproduces timm VisionTransformer `model` at its own size, "linear" head."""
    from timm.models.vision_transformer import VisionTransformer as TimmViT

    if not isinstance(model, TimmViT):
        raise CheckpointError(
            f"from_timm: {timm_name(model)} is not a timm VisionTransformer (or DeiT); "
            "only the timm.models.vision_transformer family converts"
        )
    _check_embedding(model)
    if getattr(model, "attn_pool", None) is not None or model.global_pool not in ("token", "avg"):
        raise _unsupported(model, f"global_pool='{model.global_pool}'")
    if getattr(model, "pool_include_prefix", False):
        raise _unsupported(model, "pool_include_prefix=True")
    class_token = model.cls_token is not None
    if model.global_pool == "token" and not class_token:
        raise _unsupported(model, "class_token=False with global_pool='token'")
    norm, fc_norm = not isinstance(model.norm, nn.Identity), not isinstance(model.fc_norm, nn.Identity)
    if norm == fc_norm:
        raise _unsupported(model, "final_norm=False" if not norm else "both norm and fc_norm")
    dist = getattr(model, "dist_token", None) is not None
    reg_tokens = int(model.reg_token.shape[1]) if getattr(model, "reg_token", None) is not None else 0
    if dist and (reg_tokens or model.no_embed_class):
        raise _unsupported(model, "a distillation token with register tokens or no_embed_class")
    if dist and model.num_classes > 0 and not isinstance(getattr(model, "head_dist", None), nn.Linear):
        raise _unsupported(model, "a distilled model without a linear head_dist")
    if model.num_classes > 0 and not isinstance(model.head, nn.Linear):
        raise _unsupported(model, f"head of type {type(model.head).__name__}")
    blocks = [_block_arch(model, i, b) for i, b in enumerate(model.blocks)]
    if not blocks:
        raise _unsupported(model, "depth 0")
    eps = {e for b in blocks for e in b["eps"]}
    eps.add(
        _layer_norm_eps(model, model.fc_norm if fc_norm else model.norm, "fc_norm" if fc_norm else "norm")
    )
    if len(eps) > 1:
        raise _unsupported(model, f"norms with different eps {sorted(eps)}")
    head_dim = _same(model, blocks, "head_dim")
    scale = _same(model, blocks, "scale")
    embed = model.patch_embed
    return ViTArch(
        img_size=[int(s) for s in embed.img_size],
        patch_size=int(embed.proj.kernel_size[0]),
        stride=int(embed.proj.stride[0]),
        in_chans=int(embed.proj.in_channels),
        embed_dim=int(embed.proj.out_channels),
        num_heads=[b["num_heads"] for b in blocks],
        head_dim=head_dim,
        mlp_hidden=[b["mlp_hidden"] for b in blocks],
        qkv_bias=_same(model, blocks, "qkv_bias"),
        qk_scale=None if abs(scale - head_dim**-0.5) < 1e-12 else scale,
        norm_eps=eps.pop(),
        drop_path=max(b["drop_path"] for b in blocks),
        num_classes=int(model.num_classes),
        head="linear",
        global_pool=model.global_pool,
        fc_norm=fc_norm,
        init_values=_same(model, blocks, "init_values") if _same(model, blocks, "layer_scale") else None,
        qk_norm=_same(model, blocks, "qk_norm"),
        class_token=class_token,
        dist_token=dist,
        reg_tokens=reg_tokens,
        no_embed_class=bool(model.no_embed_class),
    )


def _state(model: nn.Module, keep_classifier: bool) -> dict[str, Tensor]:
    """timm names -> reidprune names: the backbone under `backbone.`, `head` / `head_dist` as classifiers."""
    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        for timm_head, ours in (("head.", "head.classifiers.0."), ("head_dist.", "head.classifiers.1.")):
            if key.startswith(timm_head):
                if keep_classifier:
                    out[ours + key[len(timm_head) :]] = value
                break
        else:
            out[f"backbone.{key}"] = value
    return out


def from_timm(
    source: nn.Module | Mapping[str, Any] | str,
    model_name: str | None = None,
    *,
    img_size: Sequence[int] | None = None,
    head: str = "linear",
    num_classes: int | None = None,
    head_options: dict[str, Any] | None = None,
    timm_kwargs: dict[str, Any] | None = None,
) -> ViTReID:
    """A reidprune ViT with the weights of a timm ViT (see the module doc), in the source's mode.

    source: a timm VisionTransformer module; a state dict (or a checkpoint holding one under "model")
      with `model_name`, the timm name it belongs to; or a timm name, built with random weights.
    timm_kwargs: for a name or a state dict, timm.create_model's keyword arguments (e.g. the source's
      own img_size, num_classes, depth); never `pretrained`.
    img_size: [H, W] of the converted model (default: the source's); the position embedding is resampled.
    head: "linear" (timm's classifier; logits as timm) or "bnneck" (re-ID head, fresh weights).
    num_classes: classes of the new head; with "linear" and the source's count (the default) the
      classifier weights are kept, otherwise the classifier is new. "bnneck" defaults to 0 (no classifier).
    """
    timm_kwargs = dict(timm_kwargs or {})
    if isinstance(source, str):
        if model_name is not None:
            raise CheckpointError(f"from_timm('{source}'): give model_name only with a state dict")
        timm_model = _create(source, timm_kwargs)
    elif isinstance(source, nn.Module):
        if model_name is not None or timm_kwargs:
            raise CheckpointError(
                f"from_timm: {type(source).__name__} is already built; model_name / timm kwargs apply "
                "only to a name or a state dict"
            )
        timm_model = source
    elif isinstance(source, Mapping):
        if model_name is None:
            raise CheckpointError("from_timm: a state dict needs model_name, the timm model it belongs to")
        timm_model = _create(model_name, timm_kwargs)
        _load_into(timm_model, source, model_name)
    else:
        raise CheckpointError(
            f"from_timm: expected a timm model, a state dict or a timm name, got {type(source).__name__}"
        )
    if head not in HEADS:
        raise CheckpointError(f"from_timm: head '{head}' is not one of {', '.join(HEADS)}")
    arch = timm_arch(timm_model)
    classes = num_classes if num_classes is not None else (arch.num_classes if head == "linear" else 0)
    keep_classifier = head == "linear" and classes == arch.num_classes
    target = dataclasses.replace(
        arch,
        img_size=[int(s) for s in img_size] if img_size is not None else arch.img_size,
        head=head,
        num_classes=int(classes),
        head_options=dict(head_options or {}),
    )
    model = build(target)
    state = _state(timm_model, keep_classifier)
    if target.grid_size != arch.grid_size:
        prefix = 0 if arch.no_embed_class else model.backbone.num_prefix_tokens
        state["backbone.pos_embed"] = resample_pos_embed(
            state["backbone.pos_embed"], target.grid_size, old_grid=arch.grid_size, num_prefix=prefix
        )
    own = model.state_dict()
    fresh = [k for k in own if k.startswith("head.") and k not in state]  # a new head keeps its init
    state.update({k: own[k] for k in fresh})
    with torch.no_grad():
        load_state_dict_checked(model, state, strict=True, where=f"from_timm ({timm_name(timm_model)})")
    return model.train(timm_model.training)
