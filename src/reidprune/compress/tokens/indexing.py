"""Deprecated location (kept for one release): the method now lives in `reidprune.models.tokens.indexing`."""

from reidprune.models.tokens.indexing import (
    take_rows,
)

__all__ = ["take_rows"]
