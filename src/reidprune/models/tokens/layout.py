"""Where the ViT backbone of a model is, and how its blocks are named in a calibration pass."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from reidprune.errors import CompressionError
from reidprune.models.vit import Block, VisionTransformer


@dataclass(frozen=True)
class BackboneLayout:
    """The (outermost) `VisionTransformer` inside a model.

    prefix: its module path followed by "." ("" when the model is the backbone itself).
    """

    vit: VisionTransformer
    prefix: str

    @property
    def blocks(self) -> list[Block]:
        return list(self.vit.blocks)

    @property
    def depth(self) -> int:
        return len(self.vit.blocks)

    @property
    def num_tokens(self) -> int:
        """Prefix tokens (class, distillation, registers) + P patch tokens."""
        return self.vit.num_tokens

    @property
    def num_prefix_tokens(self) -> int:
        """Leading tokens no reducer may drop or merge (positions 0..num_prefix_tokens-1)."""
        return self.vit.num_prefix_tokens

    @property
    def has_class_token(self) -> bool:
        return getattr(self.vit, "cls_token", None) is not None

    @property
    def num_patches(self) -> int:
        return self.vit.patch_embed.num_patches

    @property
    def grid_size(self) -> tuple[int, int]:
        return self.vit.grid_size

    def attn_name(self, index: int) -> str:
        """Module path of block `index`'s attention, as `calibrate` names it."""
        return f"{self.prefix}blocks.{index}.attn"


def find_backbone(model: nn.Module) -> BackboneLayout:
    """The outermost VisionTransformer in `model`; CompressionError when there is none."""
    found = [(name, mod) for name, mod in model.named_modules() if isinstance(mod, VisionTransformer)]
    if not found:
        raise CompressionError(
            f"token reduction needs a ViT backbone (models.vit.VisionTransformer); "
            f"{type(model).__name__} has none"
        )
    name, vit = min(found, key=lambda item: item[0].count(".") if item[0] else -1)
    return BackboneLayout(vit=vit, prefix=f"{name}." if name else "")
