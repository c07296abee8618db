"""Eval section of the experiment config."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EvalConfig:
    metric: str = "euclidean"  # euclidean (squared) | cosine
    flip: bool = False  # average features of the image and its horizontal flip
    normalize: bool = True  # L2-normalise features before distances
    rerank: bool = False  # k-reciprocal re-ranking (Zhong et al. 2017)
    rerank_k1: int = 20
    rerank_k2: int = 6
    rerank_lambda: float = 0.3
    # re-ranking keeps sparse (Q+G)-row neighbourhoods; refuse rather than swap above this many GiB
    rerank_max_memory_gb: float = 4.0
    ranks: list[int] = field(default_factory=lambda: [1, 5, 10])
    max_rank: int = 50
    query_chunk: int = 1024  # queries per distance block (bounds memory at MSMT17 scale)
