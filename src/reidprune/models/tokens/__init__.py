"""ViT token reduction in the model layer: specs, reducers and planning, one module per method.

`attach_reducers(model, arch.tokens)` is what the ViT family's build calls; the method table
(`methods.METHODS`) finds each method's module. Calibration (the data pass that gives AMG and
Prune-and-Merge their scores) and the public `prune_tokens` live in `reidprune.compress.tokens`.
"""

from reidprune.models.tokens.layout import BackboneLayout, find_backbone
from reidprune.models.tokens.method import Scores, TokenMethod
from reidprune.models.tokens.methods import (
    ALIASES,
    METHODS,
    TokenSpec,
    attach_reducers,
    current_spec,
    method_named,
    parse_spec,
)

__all__ = [
    "ALIASES",
    "METHODS",
    "BackboneLayout",
    "Scores",
    "TokenMethod",
    "TokenSpec",
    "attach_reducers",
    "current_spec",
    "find_backbone",
    "method_named",
    "parse_spec",
]
