"""Batch samplers: P x K structure, determinism, DDP sharding, exact mid-epoch resume, bad requests."""

from __future__ import annotations

from collections import Counter

import pytest

from reidprune.data.samplers import PKSampler, ShardSampler, ShuffleSampler, _max_batches
from reidprune.errors import DataError

# 6 identities with 9, 8, 5, 4, 2, 1 images (dataset order interleaved on purpose)
COUNTS = {10: 9, 11: 8, 12: 5, 13: 4, 14: 2, 15: 1}
PIDS = [pid for k in range(9) for pid, n in COUNTS.items() if k < n]


def indices(batch: list[tuple[int, int]]) -> list[int]:
    return [index for index, _ in batch]


def test_pk_batches_hold_p_identities_of_k_consecutive_images() -> None:
    sampler = PKSampler(PIDS, batch_size=6, num_instances=2, seed=3)
    batches = list(sampler)
    # chunks of 2: 4, 4, 2, 2, 1 (padded), 1 (padded) = 14; P = 3 -> max L with sum min(c, L) >= 3L is 4
    assert len(batches) == len(sampler) == 4
    for batch in batches:
        pids = [PIDS[i] for i in indices(batch)]
        groups = [pids[k : k + 2] for k in range(0, 6, 2)]
        assert all(g[0] == g[1] for g in groups)  # K consecutive images of one identity
        assert len({g[0] for g in groups}) == 3  # P distinct identities


def test_pk_uses_each_image_at_most_once_and_tops_up_small_identities() -> None:
    sampler = PKSampler(PIDS, batch_size=12, num_instances=4, seed=0)
    for epoch in range(5):
        sampler.set_epoch(epoch)
        used = Counter(i for batch in sampler for i in indices(batch))
        for index, times in used.items():
            if COUNTS[PIDS[index]] >= 4:
                assert times == 1
        # identity 15 has one image: when drawn, that image fills all 4 slots of its chunk
        only = PIDS.index(15)
        assert used.get(only, 0) in (0, 4)


def test_pk_length_is_the_same_every_epoch() -> None:
    sampler = PKSampler(PIDS, batch_size=6, num_instances=2, seed=1)
    lengths = set()
    for epoch in range(10):
        sampler.set_epoch(epoch)
        lengths.add(len(list(sampler)))
    assert lengths == {len(sampler)}


def test_max_batches_formula() -> None:
    import numpy as np

    assert _max_batches(np.array([4, 4, 2, 2, 1, 1]), 3) == 4
    assert _max_batches(np.array([10, 1, 1]), 2) == 2  # one big identity cannot pair with itself
    assert _max_batches(np.array([3, 3, 3, 3]), 4) == 3


def test_deterministic_from_seed_and_epoch() -> None:
    a, b = PKSampler(PIDS, 6, 2, seed=5), PKSampler(PIDS, 6, 2, seed=5)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)
    assert list(PKSampler(PIDS, 6, 2, seed=6)) != list(PKSampler(PIDS, 6, 2, seed=5))


def test_ddp_ranks_are_disjoint_equal_length_and_keep_sample_seeds() -> None:
    pids = [p for p in range(20) for _ in range(6)]
    single = PKSampler(pids, 8, 2, seed=9)
    ranks = [PKSampler(pids, 8, 2, seed=9, rank=r, world_size=3) for r in range(3)]
    for sampler in [single, *ranks]:
        sampler.set_epoch(4)
    shares = [list(s) for s in ranks]
    assert len({len(s) for s in shares}) == 1 and len(shares[0]) == len(single) // 3
    seen = [set(i for batch in share for i in indices(batch)) for share in shares]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    # rank r holds global batches r, r + 3, ... with the very same (index, sample_seed) pairs
    everything = list(single)
    for r, share in enumerate(shares):
        assert share == everything[r : 3 * len(share) : 3]


def test_set_start_resumes_the_same_sequence_then_next_epoch_starts_at_zero() -> None:
    sampler = PKSampler(PIDS, 6, 2, seed=2)
    sampler.set_epoch(7)
    full = list(sampler)
    sampler.set_start(3)
    assert list(sampler) == full[3:]
    assert list(sampler) == full  # set_start applies to one pass only
    resumed = PKSampler(PIDS, 6, 2, seed=2)  # a fresh process after a restart
    resumed.set_epoch(7)
    resumed.set_start(1)
    assert list(resumed) == full[1:]


def test_shuffle_sampler_covers_each_item_once_and_drops_the_partial_batch() -> None:
    sampler = ShuffleSampler(23, batch_size=5, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 4
    flat = [i for batch in batches for i in indices(batch)]
    assert len(flat) == len(set(flat)) == 20 and set(flat) <= set(range(23))
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_shuffle_sampler_ddp_and_resume() -> None:
    ranks = [ShuffleSampler(40, 4, seed=1, rank=r, world_size=2) for r in range(2)]
    shares = [list(s) for s in ranks]
    assert len(shares[0]) == len(shares[1]) == 5
    assert not set(i for b in shares[0] for i in indices(b)) & set(i for b in shares[1] for i in indices(b))
    ranks[1].set_start(2)
    assert list(ranks[1]) == shares[1][2:]


def test_sample_seeds_differ_within_an_epoch_and_between_epochs() -> None:
    sampler = ShuffleSampler(64, 8, seed=0)
    first = [s for batch in sampler for _, s in batch]
    sampler.set_epoch(1)
    second = [s for batch in sampler for _, s in batch]
    assert len(set(first)) == 64 and not set(first) & set(second)


def test_shard_sampler_splits_items_in_order() -> None:
    assert [list(ShardSampler(7, r, 3)) for r in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    assert len(ShardSampler(7, 1, 3)) == 2


# ---- requests that cannot be met ----


def test_k_larger_than_any_identity() -> None:
    with pytest.raises(
        DataError, match=r"num_instances=10 images per identity requested, but no identity has more than 9"
    ):
        PKSampler(PIDS, 20, 10)


def test_p_larger_than_identity_count() -> None:
    with pytest.raises(
        DataError, match=r"14 identities per batch requested, but the training split has only 6"
    ):
        PKSampler(PIDS, 28, 2)


def test_batch_not_divisible_by_k() -> None:
    with pytest.raises(DataError, match=r"batch_size=10, num_instances=4: .*divisible"):
        PKSampler(PIDS, 10, 4)


def test_too_few_batches_for_world_size() -> None:
    with pytest.raises(DataError, match=r"makes 4 batches per epoch, fewer than world_size=8"):
        PKSampler(PIDS, 6, 2, rank=0, world_size=8)


def test_shuffle_too_few_items() -> None:
    with pytest.raises(DataError, match=r"3 training items cannot fill one batch of 4 on each of 1 rank"):
        ShuffleSampler(3, 4)


def test_bad_rank_and_start() -> None:
    with pytest.raises(DataError, match=r"rank 2 of world_size 2"):
        ShuffleSampler(40, 4, rank=2, world_size=2)
    with pytest.raises(DataError, match=r"set_start\(9\): expected 0\.\.4"):
        PKSampler(PIDS, 6, 2).set_start(9)
