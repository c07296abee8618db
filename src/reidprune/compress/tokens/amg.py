"""Deprecated location (kept for one release): the method now lives in `reidprune.models.tokens.amg`."""

from reidprune.models.tokens.amg import (
    AMG_MODES,
    DEFAULT_DEPTH_DISCOUNT,
    AmgSpec,
    KeyValueReducer,
    SkipReducer,
    select_lowest,
    select_random,
    uniform_counts,
)

__all__ = [
    "AMG_MODES",
    "DEFAULT_DEPTH_DISCOUNT",
    "AmgSpec",
    "KeyValueReducer",
    "SkipReducer",
    "select_lowest",
    "select_random",
    "uniform_counts",
]
