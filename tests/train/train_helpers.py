"""A tiny re-ID model and in-memory data sets for the training tests (no files, no registry models).

TinyReID: (B, 3, 8, 4) images -> flatten -> Linear -> BatchNorm -> ReLU -> Dropout = pre-neck
feature (B, dim); BNNeck -> one linear classifier per head. Train mode returns logits, features and
the embedding; eval mode only the embedding, like reidprune's re-ID models. Dropout makes the
model consume the global torch generator, so exact resume is tested against it.

PatternIds: identity i is a fixed random pattern; each sample adds noise and a random flip drawn
from a generator seeded by (seed, epoch, position in the epoch), as reidprune's data pipeline does.
GlobalRngIds: the same images, but the noise comes from torch's global generator (like a plain
torchvision transform), for the generic-loader resume path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from reidprune.models.output import ModelOutput
from reidprune.models.registry import register_family

H, W = 8, 4


@dataclass
class TinyArch:
    family: str = "tiny_test"
    img_size: list[int] = field(default_factory=lambda: [H, W])
    num_classes: int = 6
    dim: int = 16
    heads: int = 1
    dropout: float = 0.2
    num_cameras: int = 0


class TinyReID(nn.Module):
    def __init__(self, arch: TinyArch | None = None, **kwargs: Any) -> None:
        super().__init__()
        arch = arch or TinyArch(**kwargs)
        self.arch = arch
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(3 * H * W, arch.dim),
            nn.BatchNorm1d(arch.dim),
            nn.ReLU(),
            nn.Dropout(arch.dropout),
        )
        self.neck = nn.BatchNorm1d(arch.dim)
        self.classifiers = nn.ModuleList(nn.Linear(arch.dim, arch.num_classes) for _ in range(arch.heads))

    def forward(self, images: Tensor, camids: Tensor | None = None) -> ModelOutput:
        feature = self.body(images)
        normed = self.neck(feature)
        if not self.training:
            return ModelOutput(embedding=normed)
        return ModelOutput(
            embedding=normed,
            logits=[c(normed) for c in self.classifiers],
            features=[feature] * len(self.classifiers),
        )


register_family("tiny_test", TinyArch, TinyReID)


def tiny_model(seed: int = 0, **kwargs: Any) -> TinyReID:
    torch.manual_seed(seed)
    return TinyReID(**kwargs)


def _patterns(num_ids: int) -> Tensor:
    g = torch.Generator().manual_seed(1234)
    return torch.rand(num_ids, 3, H, W, generator=g)


class PatternIds(Dataset):
    """num_ids x per_id samples; indexed by (index, epoch, position) tuples from `PKBatches`."""

    def __init__(self, num_ids: int = 6, per_id: int = 4, seed: int = 7) -> None:
        self.patterns = _patterns(num_ids)
        self.pids = [i // per_id for i in range(num_ids * per_id)]
        self.seed = seed

    def __len__(self) -> int:
        return len(self.pids)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Tensor]:
        index, epoch, position = key
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 10_007 + position)
        image = self.patterns[self.pids[index]] + 0.3 * torch.randn(3, H, W, generator=g)
        if torch.rand((), generator=g) < 0.5:
            image = image.flip(-1)
        return _sample(image, self.pids[index], index)


class PKBatches:
    """Batches of p identities x k samples, reshuffled per epoch from (seed, epoch); resumable.

    Sharded like a distributed sampler: rank r takes the global batches r, r + world_size, ...
    """

    def __init__(
        self, pids: list[int], p: int = 2, k: int = 4, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        self.pids, self.p, self.k, self.seed = pids, p, k, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, batch_index: int) -> None:
        self.start = batch_index

    def __len__(self) -> int:
        return len(set(self.pids)) // self.p // self.world_size

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        ids = sorted(set(self.pids))
        order = [ids[i] for i in torch.randperm(len(ids), generator=g).tolist()]
        by_id = {i: [j for j, p in enumerate(self.pids) if p == i] for i in ids}
        batches = []
        for b in range(len(ids) // self.p):
            chosen = order[b * self.p : (b + 1) * self.p]
            indices = [
                by_id[i][j] for i in chosen for j in torch.randperm(len(by_id[i]), generator=g)[: self.k]
            ]
            batches.append([(idx, self.epoch, b * self.p * self.k + pos) for pos, idx in enumerate(indices)])
        mine = batches[self.rank :: self.world_size][: len(self)]
        yield from mine[self.start :]


class GlobalRngIds(PatternIds):
    """Integer-indexed; noise and flips from torch's global generator."""

    def __getitem__(self, index: int) -> dict[str, Tensor]:  # type: ignore[override]
        image = self.patterns[self.pids[index]] + 0.3 * torch.randn(3, H, W)
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        return _sample(image, self.pids[index], index)


class EvalIds(PatternIds):
    """Integer-indexed, deterministic (noise fixed per index): for validation splits."""

    def __getitem__(self, index: int) -> dict[str, Tensor]:  # type: ignore[override]
        g = torch.Generator().manual_seed(99_991 + index)
        return _sample(
            self.patterns[self.pids[index]] + 0.5 * torch.randn(3, H, W, generator=g), self.pids[index], index
        )


def _sample(image: Tensor, pid: int, index: int) -> dict[str, Tensor]:
    return {
        "image": image,
        "label": torch.tensor(pid),
        "pid": torch.tensor(pid),
        "camid": torch.tensor(index % 2),
        "index": torch.tensor(index),
    }


def pk_loaders(
    num_ids: int = 6,
    per_id: int = 4,
    p: int = 2,
    k: int = 4,
    rank: int = 0,
    world_size: int = 1,
    **extra: Any,
) -> SimpleNamespace:
    """Loaders with a resumable PK batch sampler (the fast resume path)."""
    data = PatternIds(num_ids, per_id)
    train = DataLoader(data, batch_sampler=PKBatches(data.pids, p, k, rank=rank, world_size=world_size))
    return SimpleNamespace(train=train, **extra)


def shuffle_loaders(num_ids: int = 6, per_id: int = 4, batch_size: int = 8) -> SimpleNamespace:
    """A plain shuffling DataLoader with global-generator augmentation (the replay resume path)."""
    train = DataLoader(GlobalRngIds(num_ids, per_id), batch_size=batch_size, shuffle=True, drop_last=True)
    return SimpleNamespace(train=train)
