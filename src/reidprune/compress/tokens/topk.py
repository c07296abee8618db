"""Deprecated location (kept for one release): the method now lives in `reidprune.models.tokens.topk`."""

from reidprune.models.tokens.topk import (
    TopKReducer,
    TopkSpec,
    carried_positions,
    cls_attention,
    default_locations,
    keep_count,
)

__all__ = ["TopKReducer", "TopkSpec", "carried_positions", "cls_attention", "default_locations", "keep_count"]
