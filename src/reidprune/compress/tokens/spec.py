"""Deprecated location (kept for one release): token specs now live in `reidprune.models.tokens`
(shared schema in `models/tokens/spec.py`, each method's spec in its module, `parse_spec` in
`models/tokens/methods.py`)."""

from reidprune.models.tokens.amg import AMG_MODES, AmgSpec
from reidprune.models.tokens.methods import METHODS as _TABLE
from reidprune.models.tokens.methods import TokenSpec, parse_spec
from reidprune.models.tokens.pm import PmSpec
from reidprune.models.tokens.tome import TomeSpec, tome_max_r
from reidprune.models.tokens.topk import TopkSpec

METHODS = tuple(_TABLE)

__all__ = [
    "AMG_MODES",
    "METHODS",
    "AmgSpec",
    "PmSpec",
    "TokenSpec",
    "TomeSpec",
    "TopkSpec",
    "parse_spec",
    "tome_max_r",
]
