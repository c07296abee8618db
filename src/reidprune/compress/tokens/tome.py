"""Deprecated location (kept for one release): the method now lives in `reidprune.models.tokens.tome`."""

from reidprune.models.tokens.tome import (
    ToMeReducer,
    TomeSpec,
    bipartite_matching,
    merge_tokens,
    tome_max_r,
)

__all__ = ["ToMeReducer", "TomeSpec", "bipartite_matching", "merge_tokens", "tome_max_r"]
