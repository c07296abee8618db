"""Deprecated location (kept for one release): the method now lives in `reidprune.models.tokens.pm`."""

from reidprune.models.tokens.pm import (
    RESTORES,
    BlockPlan,
    DensePruneMergeReducer,
    PmSpec,
    PruneMergeReducer,
    assign_segments,
    block_plan,
    dense_matrices,
    select_pm,
)

__all__ = [
    "RESTORES",
    "BlockPlan",
    "DensePruneMergeReducer",
    "PmSpec",
    "PruneMergeReducer",
    "assign_segments",
    "block_plan",
    "dense_matrices",
    "select_pm",
]
