"""Feature extraction and evaluation from features or from a model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eval_helpers import TinyEmbedder, batches, clustered_features, random_layout, reference_protocol

from reidprune.errors import DataError
from reidprune.evaluate import (
    EvalConfig,
    Features,
    distmat_metrics,
    evaluate_reid,
    extract_features,
    pairwise_distance,
    reid_metrics,
)


def _images(n: int = 7) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.randn(n, 3, 4, 4), torch.arange(n) % 3 + 1, torch.arange(n) % 2


def test_features_are_normalised_embeddings_in_loader_order() -> None:
    model = TinyEmbedder()
    images, pids, camids = _images()
    feats = extract_features(model, batches(images, pids, camids))
    with torch.no_grad():
        expected = F.normalize(model.lin(images.flatten(1)), dim=1)
    torch.testing.assert_close(feats.features, expected)
    assert feats.features.dtype == torch.float32
    assert torch.equal(feats.pids, pids) and torch.equal(feats.camids, camids)
    raw = extract_features(model, batches(images, pids, camids), normalize=False)
    torch.testing.assert_close(raw.features, model.lin(images.flatten(1)).detach())


def test_flip_sums_image_and_mirror_then_normalises() -> None:
    model = TinyEmbedder()
    images, pids, camids = _images()
    feats = extract_features(model, batches(images, pids, camids), flip=True)
    with torch.no_grad():
        both = model.lin(images.flatten(1)) + model.lin(torch.flip(images, dims=[3]).flatten(1))
    torch.testing.assert_close(feats.features, F.normalize(both, dim=1))


def test_camids_reach_only_models_with_cameras_and_mode_is_restored() -> None:
    images, pids, camids = _images()
    plain = TinyEmbedder().train()
    extract_features(plain, batches(images, pids, camids))
    assert all(c is None for c in plain.seen_camids)
    assert plain.modes == [False] * 3 and plain.training
    sie = TinyEmbedder(num_cameras=2)
    extract_features(sie, batches(images, pids, camids))
    assert torch.equal(torch.cat(sie.seen_camids), camids)


def test_amp_is_ignored_on_cpu() -> None:
    model = TinyEmbedder()
    images, pids, camids = _images()
    loader = batches(images, pids, camids)
    assert torch.equal(
        extract_features(model, loader, amp=True).features, extract_features(model, loader).features
    )


def test_plain_module_returning_a_tensor() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 3))
    images, pids, camids = _images()
    feats = extract_features(model, batches(images, pids, camids), normalize=False)
    torch.testing.assert_close(feats.features, model(images).detach())


def test_empty_loader_is_an_error() -> None:
    with pytest.raises(DataError, match="no batches"):
        extract_features(TinyEmbedder(), [])


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_feature_metrics_equal_the_reference_on_the_same_distances(metric: str) -> None:
    rng = np.random.default_rng(3)
    q_pids, g_pids, q_cams, g_cams = random_layout(rng, 40, 150, num_ids=10, num_cams=3)
    q = Features(torch.from_numpy(clustered_features(rng, q_pids)), q_pids, q_cams)
    g = Features(torch.from_numpy(clustered_features(rng, g_pids)), g_pids, g_cams)
    cfg = EvalConfig(metric=metric, query_chunk=16)
    got = reid_metrics(q, g, cfg, with_cmc=True)
    dist = pairwise_distance(q.features, g.features, metric, chunk=16)
    assert got == distmat_metrics(dist, q_pids, g_pids, q_cams, g_cams, cfg, with_cmc=True)
    expected = reference_protocol(dist.numpy(), q_pids, g_pids, q_cams, g_cams)
    assert got["mAP"] == pytest.approx(100 * expected["mAP"], abs=1e-9)
    assert set(got) >= {"mAP", "mINP", "rank1", "rank5", "rank10", "num_queries", "num_skipped_queries"}


def test_distances_follow_their_definitions() -> None:
    q, g = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 0.0], [6.0, 8.0], [-3.0, -4.0]])
    torch.testing.assert_close(pairwise_distance(q, g, "euclidean"), torch.tensor([[25.0, 25.0, 100.0]]))
    torch.testing.assert_close(pairwise_distance(q, g[1:], "cosine"), torch.tensor([[0.0, 2.0]]))


def test_evaluate_reid_runs_the_model_on_both_splits() -> None:
    torch.manual_seed(1)
    model = TinyEmbedder(dim=16)
    images, pids, camids = _images(12)
    result = evaluate_reid(
        model, batches(images, pids, camids), batches(images, pids, 1 - camids), EvalConfig(flip=True)
    )
    q = extract_features(model, batches(images, pids, camids), flip=True)
    g = extract_features(model, batches(images, pids, 1 - camids), flip=True)
    assert result == reid_metrics(q, g, EvalConfig())


def test_bad_feature_sets_are_errors() -> None:
    good = Features(torch.randn(4, 3), [1, 2, 3, 4], [0, 0, 0, 0])
    empty = Features(torch.zeros(0, 3), [], [])
    with pytest.raises(DataError, match="query set is empty"):
        reid_metrics(empty, good)
    with pytest.raises(DataError, match="gallery set is empty"):
        reid_metrics(good, empty)
    short = Features(torch.randn(4, 3), [1, 2, 3], [0, 0, 0])
    with pytest.raises(DataError, match=r"gallery: 4 features but \(3,\) pids"):
        reid_metrics(good, short)
    nan = Features(torch.randn(4, 3), [1, 2, 3, 4], [1, 1, 1, 1])
    nan.features[2, 1] = float("nan")
    with pytest.raises(DataError, match="gallery features: 1 of 4 rows contain NaN or inf"):
        reid_metrics(good, nan)
    with pytest.raises(DataError, match="3 dimensions, gallery features 5"):
        reid_metrics(good, Features(torch.randn(4, 5), [1, 2, 3, 4], [1, 1, 1, 1]))
    with pytest.raises(DataError, match="none of the 4 queries has a valid match"):
        reid_metrics(good, Features(torch.randn(4, 3), [1, 2, 3, 4], [0, 0, 0, 0]))  # same cameras only


def test_features_too_large_for_float32_distances_are_an_error() -> None:
    good = Features(torch.randn(4, 3), [1, 2, 3, 4], [0, 0, 0, 0])
    huge = Features(torch.full((4, 3), 1e19), [1, 2, 3, 4], [1, 1, 1, 1])
    with pytest.raises(DataError, match=r"gallery features: a squared norm of .* would overflow float32"):
        reid_metrics(good, huge)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_gemm_backends_agree_and_each_ranks_like_the_reference(metric: str) -> None:
    from reidprune.evaluate.distance import DistanceBlocks, onednn_gemm_available

    rng = np.random.default_rng(4)
    q_pids, g_pids, q_cams, g_cams = random_layout(rng, 30, 120, num_ids=10, num_cams=3)
    q, g = (
        torch.from_numpy(clustered_features(rng, q_pids)),
        torch.from_numpy(clustered_features(rng, g_pids)),
    )
    matrices = []
    for onednn in sorted({False, onednn_gemm_available()}):
        blocks = DistanceBlocks(q, g, metric, chunk=7)
        blocks.onednn = onednn
        dist = torch.cat([block.clone() for _, block in blocks])
        got = distmat_metrics(dist, q_pids, g_pids, q_cams, g_cams)
        expected = reference_protocol(dist.numpy(), q_pids, g_pids, q_cams, g_cams)
        assert got["mAP"] == pytest.approx(100 * expected["mAP"], abs=1e-9)
        matrices.append(dist)
    torch.testing.assert_close(matrices[0], matrices[-1], atol=1e-5, rtol=1e-5)
