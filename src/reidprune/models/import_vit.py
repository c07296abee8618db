"""Foreign ViT checkpoints -> reidprune ViT models: key mapping as data, shapes -> architecture.

Supported sources (detected from their keys, after stripping a DataParallel "module." prefix):
- "timm": timm / DeiT ImageNet checkpoints (`patch_embed.*`, `blocks.*`, `norm.*`, `head.*`; the
  weights may be nested under "model"), and MAE fine-tunes / timm global_pool="avg" models, whose
  `fc_norm.*` replaces `norm.*` (global average pooling: `arch_from_checkpoint` sets it). `head.*` becomes the classifier of a classification model
  and is dropped for re-ID models, whose head (and camera embedding) keep their initialisation; for
  a TransReID JPM model the last block and norm initialise both b1 and b2 (as TransReID does).
- "transreid": TransReID (`base.*`, `b1.0/1.*`, `b2.0/1.*`, `bottleneck[_k].*`, `classifier[_k].*`,
  `base.sie_embed`); the unused `base.fc.*` and, with JPM, the unused last `base.blocks.*` / `base.norm.*`
  are dropped. AMG's TR checkpoints are TransReID checkpoints with fewer heads in some blocks.
- "la-transformer": LA-Transformer / AMG-LA (`model.*` = timm ViT, `classifier{k}.add_block.{0,1}`,
  `classifier{k}.classifier.0`); the duplicate top-level `cls_token` / `pos_embed` and timm's unused
  `model.head.*` are dropped.
- "reidprune": our own names (`backbone.*`, `head.*`), e.g. torch.save(model.state_dict()).

Position embeddings are resampled (bilinear) to the model's patch grid. Per-block head counts
(pruned checkpoints) are not in the keys but in the shapes: `arch_from_checkpoint` reads them, so
the model can be built to fit before loading.

Extension point: token-reduction state (AMG `attn.token_index` masks, Prune-and-Merge merge /
restore matrices) belongs to reidprune.compress. A module that understands such keys registers a
*claimer* with `register_extra_importer(fn)`; fn(state, arch) -> (state, arch) receives the state
already renamed to our names (e.g. `backbone.blocks.3.attn.token_index`), removes or converts the
keys it understands and returns the architecture with its `tokens` spec set.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from reidprune.models.checkpoint_io import CheckpointError, load_state_dict_checked, strip_prefix
from reidprune.models.checkpoints import LoadResult, register_importer
from reidprune.models.vit import resample_pos_embed
from reidprune.models.vit_models import ViTArch, validate_arch

# (pattern, replacement): the first pattern that matches a key renames it with re.sub; a tuple of
# replacements copies the tensor to several keys; None drops the key. Unmatched keys are kept.
Rule = tuple[str, str | tuple[str, ...] | None]

# Which source format a state dict is in: the first format with a key starting with the marker.
FORMAT_MARKERS: list[tuple[str, str]] = [
    ("reidprune", "backbone.patch_embed."),
    ("transreid", "base.patch_embed."),
    ("la-transformer", "model.patch_embed."),
    ("timm", "patch_embed."),
]

TRANSREID_RULES: list[Rule] = [
    (r"^base\.fc\.", None),  # TransReID's backbone keeps an unused ImageNet-size classifier
    (r"^base\.", "backbone."),
    (r"^b([12])\.0\.", r"head.b\1.block."),
    (r"^b([12])\.1\.", r"head.b\1.norm."),
    (r"^bottleneck\.", "head.necks.0."),
    (r"^bottleneck_(\d+)\.", r"head.necks.\1."),
    (r"^classifier\.", "head.classifiers.0."),
    (r"^classifier_(\d+)\.", r"head.classifiers.\1."),
]

LA_RULES: list[Rule] = [
    (r"^model\.head\.", None),  # timm's ImageNet classifier, unused by LA-Transformer
    (r"^(cls_token|pos_embed)$", None),  # LA registers model.cls_token / model.pos_embed a second time
    (r"^model\.", "backbone."),
    (r"^classifier(\d+)\.add_block\.0\.", r"head.classifiers.\1.reduce."),
    (r"^classifier(\d+)\.add_block\.1\.", r"head.classifiers.\1.bn."),
    (r"^classifier(\d+)\.classifier\.0\.", r"head.classifiers.\1.fc."),
]

# Model keys a backbone-only source (an ImageNet checkpoint) cannot provide: they keep their
# initialisation and are reported as such.
BACKBONE_ONLY_FORMATS = ("timm",)
NOT_IN_BACKBONE_CHECKPOINTS = (r"^head\.", r"^backbone\.sie_embed$")

StateClaimer = Callable[[dict[str, Tensor], ViTArch], tuple[dict[str, Tensor], ViTArch]]
EXTRA_IMPORTERS: list[StateClaimer] = []


def register_extra_importer(fn: StateClaimer) -> None:
    """Let another module claim checkpoint keys (token masks, merge matrices); see the module doc."""
    if fn not in EXTRA_IMPORTERS:
        EXTRA_IMPORTERS.append(fn)


def _last_block(state: Mapping[str, Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}blocks\.(\d+)\.")
    indices = [int(m.group(1)) for k in state if (m := pattern.match(k))]
    return max(indices) if indices else -1


def timm_rules(arch: ViTArch, state: Mapping[str, Tensor]) -> list[Rule]:
    linear = arch.head == "linear"
    rules: list[Rule] = [
        (r"^head\.", "head.classifiers.0." if linear else None),
        (r"^head_dist\.", "head.classifiers.1." if linear else None),  # distilled DeiT's second head
    ]
    if arch.uses_jpm:
        last = _last_block(state, "")
        rules += [
            (rf"^blocks\.{last}\.", ("head.b1.block.", "head.b2.block.")),
            (r"^norm\.", ("head.b1.norm.", "head.b2.norm.")),
        ]
    return [*rules, (r"^", "backbone.")]


def transreid_rules(arch: ViTArch, state: Mapping[str, Tensor]) -> list[Rule]:
    if not any(k.startswith("b1.") for k in state):
        return TRANSREID_RULES
    # with JPM TransReID runs base.blocks[:-1]; its last block and norm live on as b1 / b2
    last = _last_block(state, "base.")
    return [(rf"^base\.blocks\.{last}\.", None), (r"^base\.norm\.", None), *TRANSREID_RULES]


RULE_BUILDERS: dict[str, Callable[[ViTArch, Mapping[str, Tensor]], list[Rule]]] = {
    "reidprune": lambda arch, state: [],
    "transreid": transreid_rules,
    "la-transformer": lambda arch, state: LA_RULES,
    "timm": timm_rules,
}


def vit_checkpoint_format(state: Mapping[str, Tensor], where: str = "checkpoint") -> str:
    for name, marker in FORMAT_MARKERS:
        if any(k.startswith(marker) for k in state):
            return name
    sample = ", ".join(sorted(state)[:8])
    raise CheckpointError(
        f"{where}: not a ViT checkpoint this importer knows: expected keys like patch_embed.proj.weight "
        f"(timm/DeiT), base.* (TransReID), model.* (LA-Transformer) or backbone.* (reidprune); found {sample}"
    )


def rename(state: Mapping[str, Tensor], rules: list[Rule], where: str = "checkpoint") -> dict[str, Tensor]:
    """Apply the first matching rule to every key; error if two source keys land on one target."""
    compiled = [(re.compile(pattern), target) for pattern, target in rules]
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        targets: tuple[str, ...] = (key,)
        for pattern, target in compiled:
            if pattern.search(key):
                if target is None:
                    targets = ()
                else:
                    replacements = (target,) if isinstance(target, str) else target
                    targets = tuple(pattern.sub(r, key, count=1) for r in replacements)
                break
        for new in targets:
            if new in out:
                raise CheckpointError(f"{where}: keys '{origin[new]}' and '{key}' both map to '{new}'")
            out[new], origin[new] = value, key
    return out


def translate(
    state: Mapping[str, Tensor], arch: ViTArch, where: str = "checkpoint"
) -> tuple[str, dict[str, Tensor], ViTArch]:
    """Foreign state -> (format, state in reidprune names, arch after the extra importers)."""
    state = strip_prefix(state, ("module.",))
    fmt = vit_checkpoint_format(state, where)
    renamed = rename(state, RULE_BUILDERS[fmt](arch, state), where)
    for claim in EXTRA_IMPORTERS:
        renamed, arch = claim(renamed, arch)
    return fmt, renamed, arch


def _grid_for(num_patches: int, target: tuple[int, int], where: str) -> tuple[int, int]:
    """The (h, w) grid of a stored position embedding: square if possible, otherwise the factor
    pair whose aspect ratio is closest to the target grid's (e.g. 210 -> 21 x 10 for a 2:1 grid)."""
    side = math.isqrt(num_patches)
    if side * side == num_patches:
        return side, side
    pairs = [(h, num_patches // h) for h in range(1, num_patches + 1) if num_patches % h == 0]
    aim = math.log(target[0] / target[1])
    best = min(pairs, key=lambda hw: abs(math.log(hw[0] / hw[1]) - aim))
    if best[0] == 1 or best[1] == 1:
        raise CheckpointError(
            f"{where}: cannot tell the patch grid of a position embedding with {num_patches} patches"
        )
    return best


def _fit_pos_embed(state: dict[str, Tensor], model: nn.Module, where: str) -> list[str]:
    key = "backbone.pos_embed"
    backbone = model.backbone
    if key not in state or state[key].shape == backbone.pos_embed.shape:
        return []
    prefix = 0 if backbone.no_embed_class else backbone.num_prefix_tokens
    stored = state[key]
    if stored.ndim != 3 or stored.shape[-1] != backbone.pos_embed.shape[-1]:
        return []  # let the shape check report it with both shapes
    grid = backbone.grid_size
    old = _grid_for(stored.shape[1] - prefix, grid, where)
    state[key] = resample_pos_embed(stored, grid, old_grid=old, num_prefix=prefix)
    return [key]


def import_state(model: nn.Module, state: dict[str, Tensor], strict: bool, where: str) -> LoadResult:
    """The "vit" importer registered with reidprune.models.checkpoints."""
    arch: ViTArch = model.arch
    fmt, renamed, claimed_arch = translate(state, arch, where)
    if claimed_arch != arch:
        changed = [
            f.name for f in dataclasses.fields(arch) if getattr(arch, f.name) != getattr(claimed_arch, f.name)
        ]
        raise CheckpointError(
            f"{where}: the checkpoint changes the architecture ({', '.join(changed)}); build the model with "
            "reidprune.models.create_from_checkpoint(name, path) instead"
        )
    if "backbone.fc_norm.weight" in renamed and "backbone.fc_norm.weight" not in model.state_dict():
        raise CheckpointError(
            f"{where}: the checkpoint pools the patch tokens (fc_norm.*, e.g. an MAE fine-tune) but the model "
            "takes the CLS token; build it with global_pool='avg' (e.g. mae_base_patch16_224) or with "
            "reidprune.models.create_from_checkpoint(name, path)"
        )
    resized = _fit_pos_embed(renamed, model, where)
    initialised: list[str] = []
    if fmt in BACKBONE_ONLY_FORMATS:
        own = model.state_dict()
        patterns = [re.compile(p) for p in NOT_IN_BACKBONE_CHECKPOINTS]
        initialised = sorted(k for k in own if k not in renamed and any(p.search(k) for p in patterns))
        renamed.update({k: own[k] for k in initialised})
    missing, unexpected = load_state_dict_checked(
        model, renamed, strict=strict, where=f"{where} ({fmt} format)"
    )
    return LoadResult(fmt, missing=missing, unexpected=unexpected, initialised=initialised, resized=resized)


def _heads_of(state: Mapping[str, Tensor], prefix: str, head_dim: int, where: str) -> int:
    key = f"{prefix}attn.qkv.weight"
    rows = state[key].shape[0]
    if rows % (3 * head_dim):
        raise CheckpointError(f"{where}: {key} has {rows} rows, not a multiple of 3 x head_dim {head_dim}")
    return rows // (3 * head_dim)


def _timm_features(ours: Mapping[str, Tensor], arch: ViTArch) -> dict[str, Any]:
    """LayerScale, qk-norm and prefix tokens, from the keys (timm names under `backbone.`)."""
    changes: dict[str, Any] = {
        "qk_norm": "backbone.blocks.0.attn.q_norm.weight" in ours,
        "dist_token": "backbone.dist_token" in ours,
        "reg_tokens": int(ours["backbone.reg_token"].shape[1]) if "backbone.reg_token" in ours else 0,
    }
    gamma = ours.get("backbone.blocks.0.ls1.gamma")
    # the weights overwrite gamma; the value only has to switch LayerScale on
    changes["init_values"] = (arch.init_values or 1e-5) if gamma is not None else None
    if "backbone.cls_token" not in ours and "backbone.pos_embed" in ours:
        # timm allows no class token only with pooled patches
        changes.update(class_token=False, global_pool="avg", fc_norm="backbone.fc_norm.weight" in ours)
    return changes


def _no_embed_class(ours: Mapping[str, Tensor], arch: ViTArch) -> bool:
    """Whether the stored position embedding covers only the patches (DeiT-III, register models)."""
    prefix = int(arch.class_token) + int(arch.dist_token) + arch.reg_tokens
    if "backbone.pos_embed" not in ours or prefix == 0:
        return arch.no_embed_class
    rows = int(ours["backbone.pos_embed"].shape[1])
    patches = arch.grid_size[0] * arch.grid_size[1]
    if rows in (patches, patches + prefix):
        return rows == patches
    # another size (resampled on load): an ImageNet grid is square, with or without the prefix rows
    return _is_square(rows) and not _is_square(rows - prefix)


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def arch_from_checkpoint(
    state: Mapping[str, Tensor], base_arch: ViTArch, where: str = "checkpoint"
) -> ViTArch:
    """`base_arch` adjusted to the shapes in `state`: heads and MLP width per block (pruned checkpoints,
    e.g. AMG), the JPM branches' heads, qkv bias, global pooling (fc_norm), number of classes /
    cameras / LA parts."""
    _, ours, arch = translate(state, base_arch, where)
    blocks = _last_block(ours, "backbone.") + 1
    if blocks < 1:
        raise CheckpointError(f"{where}: no transformer blocks found")
    changes: dict[str, Any] = {
        "num_heads": [_heads_of(ours, f"backbone.blocks.{i}.", arch.head_dim, where) for i in range(blocks)],
        "mlp_hidden": [int(ours[f"backbone.blocks.{i}.mlp.fc1.weight"].shape[0]) for i in range(blocks)],
        "qkv_bias": "backbone.blocks.0.attn.qkv.bias" in ours,
    }
    proj = ours.get("backbone.patch_embed.proj.weight")
    if proj is not None:
        changes.update(
            embed_dim=int(proj.shape[0]), in_chans=int(proj.shape[1]), patch_size=int(proj.shape[2])
        )
    if "backbone.fc_norm.weight" in ours and "backbone.norm.weight" not in ours:
        changes.update(global_pool="avg", fc_norm=True)  # MAE / timm global_pool="avg"
    changes.update(_timm_features(ours, arch))
    sized = ViTArch(**{**dataclasses.asdict(arch), **changes})
    changes["no_embed_class"] = _no_embed_class(ours, sized)
    if "head.b1.block.attn.qkv.weight" in ours:
        if arch.head != "transreid":
            raise CheckpointError(
                f"{where}: the checkpoint has TransReID JPM branches (b1 / b2) but the model's head is "
                f"'{arch.head}'; use transreid_base / transreid_small"
            )
        changes["jpm"] = True
        changes["jpm_num_heads"] = [
            _heads_of(ours, f"head.{b}.block.", arch.head_dim, where) for b in ("b1", "b2")
        ]
    elif arch.uses_jpm and any(k.startswith("head.necks.") for k in ours):
        changes["jpm"], changes["jpm_num_heads"] = False, None  # a plain TransReID (BNNeck) checkpoint
    if "backbone.sie_embed" in ours:
        changes["num_cameras"] = int(ours["backbone.sie_embed"].shape[0])
    elif any(k.startswith(("head.necks.", "head.classifiers.")) for k in ours):
        changes["num_cameras"] = 0  # a complete trained model without camera embedding
    for key in ("head.classifiers.0.weight", "head.classifiers.0.fc.weight"):
        if key in ours:
            changes["num_classes"] = int(ours[key].shape[0])
    if arch.head == "la":
        parts = {int(m.group(1)) for k in ours if (m := re.match(r"^head\.classifiers\.(\d+)\.", k))}
        rows = ViTArch(**{**dataclasses.asdict(arch), **changes}).grid_size[0]
        if parts and len(parts) != rows:
            changes["head_options"] = {**arch.head_options, "num_parts": len(parts)}
    new = dataclasses.replace(arch, **changes)
    validate_arch(new)
    return new


register_importer("vit", import_state, lambda state, arch: arch_from_checkpoint(state, arch))
