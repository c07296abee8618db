"""Fine-tuning options of the PM-ViT (DeiT) recipe: mixup / cutmix, and freezing parts of the model.

- Mixup / CutMix (`train.mixup`, `train.cutmix` = the Beta alphas, `train.mixup_prob`,
  `train.mixup_switch_prob`) use timm's `Mixup` (an optional dependency: `pip install
  'reidprune[train]'`), in its per-batch mode. It mixes the images and turns the labels into soft
  targets (B, C), label smoothing (`train.label_smoothing`) included; the ID loss is then the
  cross-entropy against those targets. Mixed images have no single identity, so the triplet loss
  is refused with them (`train.triplet_weight` must be 0: a classification recipe).
- `train.freeze`: module-name prefixes ("patch_embed", "blocks.0"; relative to the model or to its
  backbone) whose parameters get requires_grad False, so the optimiser leaves them out; the
  trained model keeps them frozen. Buffers (BatchNorm running statistics) still update in train
  mode.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from reidprune.errors import TrainingError
from reidprune.train.config import TrainConfig


def uses_mixup(cfg: TrainConfig) -> bool:
    return cfg.mixup > 0 or cfg.cutmix > 0


def make_mixup(cfg: TrainConfig, model: nn.Module) -> Any | None:
    """timm's Mixup for the configured alphas, or None when both are 0."""
    if not uses_mixup(cfg):
        return None
    if cfg.triplet_weight > 0:
        raise TrainingError(
            f"train.mixup={cfg.mixup} / train.cutmix={cfg.cutmix} mix two classes per image, but the "
            "triplet loss needs one identity per image: set train.triplet_weight=0"
        )
    num_classes = getattr(getattr(model, "arch", None), "num_classes", 0)
    if not num_classes:
        raise TrainingError(
            "train.mixup / train.cutmix need a model with a classifier (arch.num_classes > 0)"
        )
    try:
        from timm.data import Mixup
    except ImportError:
        raise TrainingError(
            "train.mixup / train.cutmix use timm's Mixup, and timm is not installed: "
            "pip install 'reidprune[train]' (or timm)"
        ) from None
    return Mixup(
        mixup_alpha=cfg.mixup,
        cutmix_alpha=cfg.cutmix,
        prob=cfg.mixup_prob,
        switch_prob=cfg.mixup_switch_prob,
        mode="batch",
        label_smoothing=cfg.label_smoothing,
        num_classes=num_classes,
    )


def mix_batch(mixup: Any, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(B, 3, H, W) images and (B,) labels -> mixed images (in place) and (B, C) soft targets."""
    if images.shape[0] % 2:
        raise TrainingError(
            f"train.mixup / train.cutmix pair each image with the batch's mirror order and need an even "
            f"batch, got {images.shape[0]} images (set data.batch_size even, or drop the last batch)"
        )
    return mixup(images, labels)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def freeze(model: nn.Module, prefixes: list[str]) -> list[str]:
    """Set requires_grad False on the parameters under each module-name prefix; returns their names.

    A prefix is relative to the model or to its `backbone` (so timm's names work for our ViTs:
    "patch_embed" = backbone.patch_embed). "blocks.1" matches blocks.1 and blocks.1.*, not
    blocks.10. A prefix that matches no parameter is a TrainingError naming it.
    """
    names = [name for name, _ in model.named_parameters()]
    chosen: set[str] = set()
    for prefix in prefixes:
        hits = [n for n in names if prefix and (_under(n, prefix) or _under(n, f"backbone.{prefix}"))]
        if not hits:
            known = sorted(
                {".".join(n.split(".")[:2] if n.startswith("backbone.") else n.split(".")[:1]) for n in names}
            )
            raise TrainingError(
                f"train.freeze: '{prefix}' names no parameter of {type(model).__name__} "
                f"(its modules: {', '.join(known)})"
            )
        chosen.update(hits)
    for name, param in model.named_parameters():
        if name in chosen:
            param.requires_grad_(False)
    return sorted(chosen)
