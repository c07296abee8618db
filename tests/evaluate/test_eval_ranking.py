"""The re-ID protocol: hand-computed cases, and agreement with a plain per-query reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eval_helpers import random_layout, reference_protocol

from reidprune.config import ConfigError
from reidprune.errors import DataError
from reidprune.evaluate import EvalConfig, distmat_metrics
from reidprune.evaluate import ranking as ranking_module

# One query of identity 1 seen by camera 0, against six gallery items (pid, camid, distance).
HAND_GALLERY_PIDS = [1, 2, 1, 0, 1, 3]
HAND_GALLERY_CAMS = [0, 0, 1, 2, 2, 1]


def test_hand_computed_protocol() -> None:
    # query 0 (pid 1, cam 0): item 0 is junk (same pid and camera); item 1 (same camera, other
    #   identity) and item 3 (distractor) stay; kept ranking 1,2,3,4,5 -> positives at ranks 2, 4:
    #   AP = (1/2 + 2/4) / 2 = 0.5, INP = 2/4.
    # query 1 (pid 2, cam 1): ranking 2,3,1,... -> its one positive (item 1) at rank 3: AP = INP = 1/3.
    # query 2 (pid 4): no gallery item of identity 4 -> skipped, and counted.
    dist = np.array(
        [
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            [0.9, 0.25, 0.1, 0.2, 0.3, 0.4],
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        ],
        dtype=np.float32,
    )
    result = distmat_metrics(
        dist, [1, 2, 4], HAND_GALLERY_PIDS, [0, 1, 0], HAND_GALLERY_CAMS, EvalConfig(ranks=[1, 2, 3, 5])
    )
    assert result["mAP"] == pytest.approx(100 * (0.5 + 1 / 3) / 2)
    assert result["mINP"] == pytest.approx(100 * (0.5 + 1 / 3) / 2)
    assert result["rank1"] == 0.0
    assert result["rank2"] == 50.0
    assert result["rank3"] == 100.0
    assert result["rank5"] == 100.0
    assert result["num_queries"] == 3
    assert result["num_skipped_queries"] == 1


def test_equal_distances_keep_gallery_order() -> None:
    # all three items at the same distance: the negative (index 0) ranks first, then the positives
    result = distmat_metrics(np.full((1, 3), 0.5, np.float32), [1], [2, 1, 1], [0], [1, 1, 2])
    assert result["mAP"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)
    assert result["rank1"] == 0.0
    # the same distances with the positives stored first rank them first
    result = distmat_metrics(np.full((1, 3), 0.5, np.float32), [1], [1, 1, 2], [0], [1, 2, 1])
    assert result["mAP"] == pytest.approx(100.0)
    assert result["rank1"] == 100.0


def test_negative_zero_ties_with_zero_and_negatives_order_before() -> None:
    # -0.0 and +0.0 are equal distances (gallery order decides); -1e-7 comes before both
    dist = np.array([[0.0, -0.0, -1e-7]], dtype=np.float32)
    result = distmat_metrics(dist, [1], [2, 1, 3], [0], [1, 1, 1], EvalConfig(ranks=[1, 2, 3]))
    assert result["rank2"] == 0.0
    assert result["rank3"] == 100.0  # order: item 2, item 0, item 1 (the positive)


def test_cmc_is_cut_at_max_rank_and_gallery_size() -> None:
    dist = np.arange(60, dtype=np.float32)[None]
    g_pids = np.full(60, 2)
    g_pids[55] = 1  # the only positive, at rank 56
    result = distmat_metrics(dist, [1], g_pids, [0], np.ones(60, int), EvalConfig(ranks=[50]), with_cmc=True)
    assert len(result["cmc"]) == 50
    assert result["rank50"] == 0.0
    assert result["mAP"] == pytest.approx(100 / 56)
    small = distmat_metrics(dist[:, :3], [1], [2, 2, 1], [0], [1, 1, 1], with_cmc=True)
    assert len(small["cmc"]) == 3
    assert small["rank5"] == 100.0 and small["rank10"] == 100.0


@pytest.mark.parametrize("seed", range(8))
def test_matches_reference_on_random_layouts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    num_q, num_g = int(rng.integers(5, 60)), int(rng.integers(20, 300))
    q_pids, g_pids, q_cams, g_cams = random_layout(rng, num_q, num_g, num_ids=12, num_cams=4)
    if seed % 2:  # coarse integer distances: many exact ties, including negative values
        dist = rng.integers(-3, 4, (num_q, num_g)).astype(np.float32)
    else:
        dist = rng.standard_normal((num_q, num_g)).astype(np.float32)
    expected = reference_protocol(dist, q_pids, g_pids, q_cams, g_cams)
    chunk = int(rng.integers(1, 20))
    got = distmat_metrics(dist, q_pids, g_pids, q_cams, g_cams, EvalConfig(query_chunk=chunk), with_cmc=True)
    assert got["num_queries"] - got["num_skipped_queries"] == expected["num_valid"]
    assert got["mAP"] == pytest.approx(100 * expected["mAP"], abs=1e-9)
    assert got["mINP"] == pytest.approx(100 * expected["mINP"], abs=1e-9)
    np.testing.assert_allclose(np.array(got["cmc"]) / 100, expected["cmc"], atol=1e-12)


def test_small_candidate_budget_gives_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(11)
    q_pids, g_pids, q_cams, g_cams = random_layout(rng, 30, 200, num_ids=8, num_cams=3)
    dist = rng.standard_normal((30, 200)).astype(np.float32)
    before = distmat_metrics(dist, q_pids, g_pids, q_cams, g_cams)
    monkeypatch.setattr(ranking_module, "CANDIDATE_BUDGET", 7)  # one row per group
    assert distmat_metrics(dist, q_pids, g_pids, q_cams, g_cams) == before


def test_input_matrix_is_not_modified() -> None:
    dist = torch.tensor([[0.1, 0.2, 0.3]])
    distmat_metrics(dist, [1], [1, 1, 2], [0], [0, 1, 1])
    assert torch.equal(dist, torch.tensor([[0.1, 0.2, 0.3]]))


def test_no_valid_match_anywhere_is_an_error() -> None:
    with pytest.raises(DataError, match="none of the 2 queries has a valid match"):
        # identity 1 is only seen by the query's own camera; identity 3 is not in the gallery
        distmat_metrics(np.zeros((2, 2), np.float32), [1, 3], [1, 2], [0, 0], [0, 0])


def test_bad_distance_matrices_are_errors() -> None:
    with pytest.raises(DataError, match=r"shape \(2, 3\) does not fit 2 query and 2 gallery"):
        distmat_metrics(np.zeros((2, 3), np.float32), [1, 2], [1, 2], [0, 0], [1, 1])
    with pytest.raises(DataError, match="NaN or inf"):
        distmat_metrics(np.array([[np.nan, 1.0]], np.float32), [1], [1, 2], [0], [1, 1])
    with pytest.raises(DataError, match="empty evaluation"):
        distmat_metrics(np.zeros((0, 2), np.float32), [], [1, 2], [], [1, 1])
    with pytest.raises(DataError, match="1 query / 2 gallery camids for 1 / 3 pids"):
        distmat_metrics(np.zeros((1, 3), np.float32), [1], [1, 2, 2], [0], [1, 1])


def test_bad_settings_name_the_key() -> None:
    dist = np.zeros((1, 2), np.float32)
    with pytest.raises(ConfigError, match=r"eval.ranks=\[1, 60\]"):
        distmat_metrics(dist, [1], [1, 2], [0], [1, 1], EvalConfig(ranks=[1, 60]))
    with pytest.raises(ConfigError, match=r"eval\.metric='l1'"):
        distmat_metrics(dist, [1], [1, 2], [0], [1, 1], EvalConfig(metric="l1"))


def test_float64_matrices_are_ranked_at_their_own_precision() -> None:
    # 1 + 1e-12 and 1 are equal in float32 (the positive would tie and win by index), not in float64
    dist = np.array([[1.0 + 1e-12, 1.0]], dtype=np.float64)
    result = distmat_metrics(dist, [1], [1, 2], [0], [1, 1], EvalConfig(ranks=[1]))
    assert result["rank1"] == 0.0 and result["mAP"] == 50.0
