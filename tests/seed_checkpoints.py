"""State dicts in the seeds' own key names, built from a reidprune model (for foreign-checkpoint tests).

- `la_checkpoint`: AMG-LA / LA-Transformer (`model.*` timm ViT, `classifier{k}.add_block.*`), with
  AMG's boolean `token_index` masks on the given blocks.
- `pm_checkpoint`: PM-ViT (timm naming, nested under "model", with `channels`), with the
  Prune-and-Merge matrices of the given blocks.
"""

from __future__ import annotations

from typing import Any

import torch


def la_checkpoint(model: torch.nn.Module, masks: dict[int, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An LA-Transformer state dict of an `la_*` model; masks: {block: (N,) bool token_index}."""
    state = {}
    for key, value in model.state_dict().items():
        key = key.replace("backbone.", "model.", 1)
        key = key.replace("head.classifiers.", "classifier", 1)
        for ours, theirs in (
            (".reduce.", ".add_block.0."),
            (".bn.", ".add_block.1."),
            (".fc.", ".classifier.0."),
        ):
            if key.startswith("classifier"):
                key = key.replace(ours, theirs, 1)
        state[key] = value.clone()
    for block, mask in masks.items():  # AMG registers the mask as a (non-trainable) parameter
        state[f"model.blocks.{block}.attn.token_index"] = mask
    return state


def pm_checkpoint(model: torch.nn.Module, matrices: dict[int, tuple]) -> dict[str, Any]:
    """A PM-ViT checkpoint of a linear-head ViT; matrices: {block: (merge, recover, token_mask)}."""
    state = {
        k.replace("backbone.", "", 1).replace("head.classifiers.0.", "head."): v
        for k, v in model.state_dict().items()
    }
    for block, (merge, recover, mask) in matrices.items():
        prefix = f"blocks.{block}.attn."
        state[prefix + "merge_matrix"], state[prefix + "recover_matrix"] = merge, recover
        state[prefix + "token_mask"] = mask
        state[prefix + "bias"] = torch.zeros(merge.shape[0])
    return {"model": state, "channels": [m[0].shape[0] for m in matrices.values()]}
