"""CNN filter pruning for ResNets: HFP, SFP, FPGM and BAFD criteria, soft masks, extraction.

`rate` is always the fraction of filters REMOVED.
"""

from reidprune.compress.filters.api import METHODS, filter_pruning_callback, prune_filters
from reidprune.compress.filters.extraction import check_same_outputs, extract_pruned
from reidprune.compress.filters.soft import SoftFilterPruning
from reidprune.compress.filters.targets import SCOPES, ConvTarget, prunable_convs

__all__ = [
    "METHODS",
    "SCOPES",
    "ConvTarget",
    "SoftFilterPruning",
    "check_same_outputs",
    "extract_pruned",
    "filter_pruning_callback",
    "prunable_convs",
    "prune_filters",
]
