"""Batch samplers for training: P identities x K images (re-ID) or plain shuffling (classification).

Both are *batch* samplers (`DataLoader(dataset, batch_sampler=...)`) and share one contract:

- Deterministic from (seed, epoch): call `set_epoch(epoch)` before each epoch. The epoch's global
  list of batches is computed from a numpy generator seeded with (seed, epoch) alone.
- DDP-aware: rank r of world_size W takes global batches r, r + W, r + 2W, ... of the first
  W * (len // W), so ranks get disjoint images and the same number of batches. `batch_size` is
  per rank.
- Resumable: `set_start(b)` makes the next iteration begin at this rank's batch b of the current
  epoch (then later epochs start at 0 again); the batches are exactly those an uninterrupted
  epoch would have produced from b on. `len()` is always the full epoch.
- Each element is `(dataset_index, sample_seed)`; the seed is a function of (seed, epoch, global
  position) only, and the dataset draws that sample's augmentation from it. So a resumed or
  re-sharded run, or one with another worker count, augments every sample identically.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from reidprune.errors import DataError

Batch = list[tuple[int, int]]


class EpochBatchSampler(Sampler[Batch]):
    """Shared machinery: global batches per epoch, rank sharding, sample seeds, start offset."""

    def __init__(self, batch_size: int, seed: int, rank: int, world_size: int) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size={batch_size}: expected >= 1")
        if seed < 0:
            raise DataError(f"seed={seed}: expected >= 0")
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"rank {rank} of world_size {world_size}: expected 0 <= rank < world_size")
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._start = 0
        self._cached: tuple[int, list[Batch]] | None = None

    def global_batches(self, rng: np.random.Generator) -> list[list[int]]:
        """Every batch of the epoch for all ranks together, as dataset indices."""
        raise NotImplementedError

    def num_global_batches(self) -> int:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise DataError(f"epoch={epoch}: expected >= 0")
        self.epoch = epoch

    def set_start(self, batch_index: int) -> None:
        """Begin the next iteration at this rank's batch `batch_index` of the current epoch."""
        if not 0 <= batch_index <= len(self):
            raise DataError(f"set_start({batch_index}): expected 0..{len(self)} (batches in this epoch)")
        self._start = batch_index

    def __len__(self) -> int:
        return self.num_global_batches() // self.world_size

    def __iter__(self) -> Iterator[Batch]:
        start, self._start = self._start, 0
        yield from self.rank_batches()[start:]

    def rank_batches(self) -> list[Batch]:
        """This rank's batches of the current epoch, with their sample seeds (computed once per epoch)."""
        if self._cached is None or self._cached[0] != self.epoch:
            order_seq, seed_seq = np.random.SeedSequence([self.seed, self.epoch]).spawn(2)
            batches = self.global_batches(np.random.default_rng(order_seq))
            seeds = np.random.default_rng(seed_seq).integers(0, 2**62, size=(len(batches), self.batch_size))
            kept = len(self) * self.world_size
            mine = [
                list(zip(batches[b], seeds[b].tolist(), strict=True))
                for b in range(self.rank, kept, self.world_size)
            ]
            self._cached = (self.epoch, mine)
        return self._cached[1]


class PKSampler(EpochBatchSampler):
    """P = batch_size / K identities per batch, K = num_instances images of each, listed
    identity by identity (images 0..K-1 of the first identity, then K of the next, ...).

    Per epoch each identity's images are shuffled and cut into chunks of K (an identity with
    fewer than K images is topped up by drawing from its own images with replacement, as in
    torchreid; leftover images short of a chunk wait for another epoch). Chunks are dealt to
    batches so that no batch holds an identity twice. The number of batches is the largest L
    with sum_i min(chunks_i, L) >= P * L: it depends only on the data, so every epoch (and every
    rank) has the same length. Each image is used at most once per epoch.

    pids: the identity (or label) of every dataset item, in dataset order.
    """

    def __init__(
        self,
        pids: Sequence[int],
        batch_size: int,
        num_instances: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(batch_size, seed, rank, world_size)
        if num_instances < 1 or batch_size % num_instances:
            raise DataError(
                f"batch_size={batch_size}, num_instances={num_instances}: the batch must hold a whole "
                "number of identities (batch_size divisible by num_instances >= 1)"
            )
        by_pid: dict[int, list[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            by_pid[pid].append(index)
        self.k = num_instances
        self.p = batch_size // num_instances
        self.indices = [np.asarray(by_pid[pid]) for pid in sorted(by_pid)]
        most = max((len(ix) for ix in self.indices), default=0)
        if self.k > most:
            raise DataError(
                f"num_instances={self.k} images per identity requested, but no identity has more than {most}"
            )
        if self.p > len(self.indices):
            raise DataError(
                f"batch_size={batch_size} / num_instances={self.k} = {self.p} identities per batch "
                f"requested, but the training split has only {len(self.indices)} identities"
            )
        self.chunks = np.array([max(1, len(ix) // self.k) for ix in self.indices])
        self._length = _max_batches(self.chunks, self.p)
        if self._length < world_size:
            raise DataError(
                f"PK sampling makes {self._length} batches per epoch, fewer than world_size={world_size}"
            )

    def num_global_batches(self) -> int:
        return self._length

    def global_batches(self, rng: np.random.Generator) -> list[list[int]]:
        length, k = self._length, self.k
        sequence: list[np.ndarray] = []  # chunks, each identity's chunks next to each other
        for i in rng.permutation(len(self.indices)):
            images = rng.permutation(self.indices[i])
            if len(images) < k:
                images = np.concatenate([images, rng.choice(images, size=k - len(images), replace=True)])
            count = min(len(images) // k, length)
            sequence += [images[c * k : (c + 1) * k] for c in range(count)]
        # chunk m goes to batch m % length: an identity's run of <= length consecutive chunks
        # lands in distinct batches, and the first P * length chunks fill every batch exactly
        batches = [
            np.concatenate([sequence[b + m * length] for m in range(self.p)]).tolist() for b in range(length)
        ]
        return [batches[b] for b in rng.permutation(length)]


class ShuffleSampler(EpochBatchSampler):
    """A fresh permutation of all items per epoch, cut into full batches (the last partial one dropped)."""

    def __init__(
        self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        super().__init__(batch_size, seed, rank, world_size)
        if num_items < batch_size * world_size:
            raise DataError(
                f"{num_items} training items cannot fill one batch of {batch_size} on each of {world_size} rank(s)"
            )
        self.num_items = num_items

    def num_global_batches(self) -> int:
        return self.num_items // self.batch_size

    def global_batches(self, rng: np.random.Generator) -> list[list[int]]:
        order = rng.permutation(self.num_items)
        b = self.batch_size
        return [order[i * b : (i + 1) * b].tolist() for i in range(self.num_global_batches())]


class ShardSampler(Sampler[int]):
    """Evaluation under DDP: rank r reads items r, r + W, ... in order (no padding, no duplicates).
    Batches carry `index`, so gathered features can be put back in dataset order."""

    def __init__(self, num_items: int, rank: int, world_size: int) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise DataError(f"rank {rank} of world_size {world_size}: expected 0 <= rank < world_size")
        self.num_items, self.rank, self.world_size = num_items, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.num_items, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.num_items, self.world_size))


def _max_batches(chunks: np.ndarray, p: int) -> int:
    """Largest L with sum_i min(chunks_i, L) >= p * L: how many batches of p distinct identities
    the chunks can fill. The slack sum_i min(chunks_i, L) - p * L is concave in L and 0 at L = 0,
    so the condition holds on a prefix of L values: binary search its end."""
    best, low, high = 0, 1, int(chunks.sum()) // p
    while low <= high:
        mid = (low + high) // 2
        if np.minimum(chunks, mid).sum() >= p * mid:
            best, low = mid, mid + 1
        else:
            high = mid - 1
    return best
