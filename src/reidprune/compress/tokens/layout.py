"""Deprecated location (kept for one release): the method now lives in `reidprune.models.tokens.layout`."""

from reidprune.models.tokens.layout import (
    BackboneLayout,
    find_backbone,
)

__all__ = ["BackboneLayout", "find_backbone"]
