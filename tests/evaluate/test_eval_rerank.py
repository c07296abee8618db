"""k-reciprocal re-ranking: agreement with a dense per-row reading of the paper, and its effect."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_helpers import clustered_features, random_layout

from reidprune.errors import DataError
from reidprune.evaluate import EvalConfig, Features, RerankBlocks, reid_metrics


def dense_rerank(q: np.ndarray, g: np.ndarray, k1: int, k2: int, lam: float, metric: str) -> np.ndarray:
    """Zhong et al. 2017 with dense (N, N) matrices and per-row loops, in float64."""
    x = np.concatenate([q, g]).astype(np.float64)
    n, nq = len(x), len(q)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        d = 1 - x @ x.T
    else:
        sq = (x**2).sum(1)
        d = sq[:, None] + sq[None, :] - 2 * x @ x.T
    d = d / d.max(axis=1, keepdims=True)
    rank = np.argsort(d, axis=1, kind="stable")

    def reciprocal(i: int, k: int) -> np.ndarray:
        return np.array([j for j in rank[i, :k] if i in rank[j, :k]])

    v = np.zeros((n, n))
    for i in range(n):
        r = reciprocal(i, k1 + 1)
        members = list(r)
        for c in r:
            half = reciprocal(c, round(k1 / 2) + 1)
            if len(np.intersect1d(half, r)) > 2 / 3 * len(half):
                members += list(half)
        members = np.unique(members)
        w = np.exp(-d[i, members])
        v[i, members] = w / w.sum()
    v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    jaccard = np.stack(
        [1 - np.minimum(v[i], v[nq:]).sum(1) / np.maximum(v[i], v[nq:]).sum(1) for i in range(nq)]
    )
    return (1 - lam) * jaccard + lam * d[:nq, nq:]


@pytest.mark.parametrize(
    ("seed", "k1", "k2", "metric", "chunk"),
    [
        (0, 4, 1, "euclidean", 3),
        (1, 6, 3, "euclidean", 64),
        (2, 5, 2, "cosine", 7),
        (3, 20, 6, "euclidean", 16),
    ],
)
def test_matches_dense_reading_of_the_paper(seed: int, k1: int, k2: int, metric: str, chunk: int) -> None:
    rng = np.random.default_rng(seed)
    q_pids, g_pids, _, _ = random_layout(rng, 12, 50, num_ids=6, num_cams=2)
    q, g = clustered_features(rng, q_pids), clustered_features(rng, g_pids)
    blocks = RerankBlocks(torch.from_numpy(q), torch.from_numpy(g), k1, k2, 0.3, metric, chunk)
    got = torch.cat([block.clone() for _, block in blocks]).numpy()
    np.testing.assert_allclose(got, dense_rerank(q, g, k1, k2, 0.3, metric), atol=2e-6)


def test_neighbourhood_structure_fixes_a_wrong_nearest_neighbour() -> None:
    # the query (identity 1) lies next to a lone negative whose own neighbours are identity 2's
    # cluster, while identity 1's cluster is slightly farther away but shares its neighbourhood
    query = Features(torch.tensor([[0.0, 0.0]]), [1], [0])
    points = [
        (-0.9, 0),
        (1.0, 0),
        (1.1, 0.3),
        (1.1, -0.3),
        (1.3, 0),
        (-2.0, 0),
        (-2.1, 0.3),
        (-2.1, -0.3),
        (-2.3, 0),
    ]
    gallery = Features(torch.tensor(points), [2, 1, 1, 1, 1, 2, 2, 2, 2], [1] * 9)
    cfg = EvalConfig(ranks=[1], rerank_k1=4, rerank_k2=1)
    assert reid_metrics(query, gallery, cfg)["rank1"] == 0.0
    reranked = reid_metrics(query, gallery, EvalConfig(ranks=[1], rerank=True, rerank_k1=4, rerank_k2=1))
    assert reranked["rank1"] == 100.0 and reranked["mAP"] == 100.0


def test_lambda_one_keeps_the_original_ranking() -> None:
    rng = np.random.default_rng(5)
    q_pids, g_pids, q_cams, g_cams = random_layout(rng, 20, 80, num_ids=8, num_cams=3)
    q = Features(torch.from_numpy(clustered_features(rng, q_pids, noise=1.0)), q_pids, q_cams)
    g = Features(torch.from_numpy(clustered_features(rng, g_pids, noise=1.0)), g_pids, g_cams)
    plain = reid_metrics(q, g, EvalConfig())
    assert reid_metrics(q, g, EvalConfig(rerank=True, rerank_lambda=1.0, rerank_k1=6)) == plain


def test_exact_gallery_copy_of_the_query_stays_first() -> None:
    rng = np.random.default_rng(6)
    feats = torch.from_numpy(rng.standard_normal((30, 8)).astype(np.float32))
    query = Features(feats[:1], [1], [0])
    gallery = Features(torch.cat([feats[1:], feats[:1]]), [2] * 29 + [1], [1] * 30)
    result = reid_metrics(query, gallery, EvalConfig(rerank=True, rerank_k1=5, rerank_k2=2, ranks=[1]))
    assert result["rank1"] == 100.0


def test_refuses_above_the_memory_bound() -> None:
    feats = torch.randn(10, 4)
    with pytest.raises(
        DataError, match=r"re-ranking 20 images needs about .* GiB, above eval.rerank_max_memory_gb"
    ):
        RerankBlocks(feats, feats, max_memory_gb=1e-6)


def test_bad_parameters_are_errors() -> None:
    feats = torch.randn(10, 4)
    with pytest.raises(ValueError, match="k1 >= 1 and k2 >= 1"):
        RerankBlocks(feats, feats, k1=0)
    with pytest.raises(ValueError, match=r"lambda must lie in \[0, 1\]"):
        RerankBlocks(feats, feats, lambda_value=1.5)


def test_bad_settings_name_the_keys() -> None:
    from reidprune.config import ConfigError

    feats = Features(torch.randn(4, 3), [1, 2, 3, 4], [0, 0, 1, 1])
    with pytest.raises(ConfigError, match=r"eval\.rerank_k1=0"):
        reid_metrics(feats, feats, EvalConfig(rerank=True, rerank_k1=0))
