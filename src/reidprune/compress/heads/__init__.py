"""ViT head pruning: AMG entropy, magnitude and random importance; physical removal of whole heads.

pruned, plan = prune_heads(model, "entropy", rate=0.25, data=calib_loader)
per_round = split_rounds(total_heads=144, rate=0.25, rounds=36)  # heads per round of a schedule
"""

from reidprune.compress.heads.importance import HeadEntropy, head_magnitude, map_entropy, random_scores
from reidprune.compress.heads.layout import HeadSlot, head_slots
from reidprune.compress.heads.prune import DEFAULT_DEPTH_WEIGHT, METHODS, prune_heads
from reidprune.compress.heads.removal import remove_heads, slice_proj, slice_qkv
from reidprune.compress.heads.selection import (
    amg_depth_weights,
    heads_to_remove,
    select_removal,
    split_rounds,
)

__all__ = [
    "DEFAULT_DEPTH_WEIGHT",
    "METHODS",
    "HeadEntropy",
    "HeadSlot",
    "amg_depth_weights",
    "head_magnitude",
    "head_slots",
    "heads_to_remove",
    "map_entropy",
    "prune_heads",
    "random_scores",
    "remove_heads",
    "select_removal",
    "slice_proj",
    "slice_qkv",
    "split_rounds",
]
