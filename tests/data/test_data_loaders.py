"""Transforms (checked against torchvision's v2 kernels), the dataset, the cache, and the loaders."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from fixtures import make_imagefolder_tree, make_market_tree, market_names
from torchvision.transforms.v2 import functional as F

from reidprune.data import build_dataset, build_loaders
from reidprune.data.config import DataConfig
from reidprune.data.datasets import ImageDataset
from reidprune.data.images import ImageReader
from reidprune.data.transforms import Normalize, TrainAugment, erase, erasing_box, shift_crop
from reidprune.errors import DataError

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.fixture
def market(tmp_path: Path) -> Path:
    """6 training identities x 2 cameras x 2 images, 16 x 8 JPEGs."""
    return make_market_tree(tmp_path / "m", train=market_names(range(1, 7), cameras=[1, 2], per_camera=2))


def small_cfg(root: Path, **changes) -> DataConfig:  # type: ignore[no-untyped-def]
    base = DataConfig(
        format="market1501", root=str(root), height=32, width=16, batch_size=4, num_instances=2,
        test_batch_size=3, num_workers=0, pad=2,
    )  # fmt: skip
    return replace(base, **changes)


def test_shift_crop_equals_torchvision_pad_and_crop() -> None:
    image = torch.randint(0, 256, (3, 12, 6), dtype=torch.uint8)
    for top in range(-3, 4):
        for left in range(-3, 4):
            expected = F.crop(image, top, left, 12, 6)  # zero-fills outside the image
            padded = F.crop(F.pad(image, [3]), top + 3, left + 3, 12, 6)  # Pad(3) + crop
            out = torch.full_like(image, 7)
            assert torch.equal(shift_crop(image, top, left, out), expected)
            assert torch.equal(expected, padded)


def test_normalize_and_erase_equal_torchvision() -> None:
    images = torch.randint(0, 256, (2, 3, 8, 4), dtype=torch.uint8)
    expected = F.normalize(F.to_dtype(images, torch.float32, scale=True), MEAN, STD)
    ours = Normalize(MEAN, STD)(images)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    erased = erase(ours.clone(), [(1, 2, 3, 2), (0, 0, 0, 0)])
    torch.testing.assert_close(erased[0], F.erase(ours[0], 1, 2, 3, 2, torch.tensor(0.0)))
    assert torch.equal(erased[1], ours[1])


def test_train_augment_flips_like_torchvision() -> None:
    image = torch.randint(0, 256, (3, 8, 4), dtype=torch.uint8)
    cfg = DataConfig(flip_prob=1.0, pad=0, random_erasing=0.0)
    out = torch.empty_like(image)
    assert TrainAugment(cfg)(image, random.Random(0), out) == (0, 0, 0, 0)
    assert torch.equal(out, F.horizontal_flip(image))


def test_erasing_box_inside_image_with_area_and_ratio_in_range() -> None:
    for seed in range(200):
        box = erasing_box(random.Random(seed), 64, 32)
        if box is None:
            continue
        top, left, h, w = box
        assert top >= 0 and top + h <= 64 and left >= 0 and left + w <= 32
        assert 0.02 * 64 * 32 * 0.5 <= h * w <= 0.33 * 64 * 32 * 1.5  # rounding of h and w
        assert 0.2 <= h / w <= 5.0


def test_bad_augmentation_settings() -> None:
    with pytest.raises(DataError, match=r"data\.flip_prob=1\.5: expected a probability"):
        TrainAugment(DataConfig(flip_prob=1.5))
    with pytest.raises(DataError, match=r"interpolation 'nearest'"):
        ImageReader(8, 4, "nearest")


def test_batches_are_dicts_with_the_agreed_keys(market: Path) -> None:
    cfg = small_cfg(market)
    splits = build_dataset(cfg)
    loaders = build_loaders(cfg, splits, seed=0)
    loaders.set_epoch(0)
    batch = next(iter(loaders.train))
    assert set(batch) == {"image", "label", "pid", "camid", "index"}
    assert batch["image"].shape == (4, 3, 32, 16) and batch["image"].dtype == torch.float32
    for key in ("label", "pid", "camid", "index"):
        assert batch[key].dtype == torch.int64 and batch[key].shape == (4,)
    assert batch["label"].tolist() == [splits.labels[p] for p in batch["pid"].tolist()]
    query = next(iter(loaders.query))
    # the fixture's query pids 3 and 5 are also training pids: still no label outside training
    assert query["pid"].tolist() == [3, 5] and query["label"].tolist() == [-1, -1]
    assert query["index"].tolist() == [0, 1]
    assert loaders.val_query is None and loaders.val is None


def test_test_transform_is_deterministic_and_unaugmented(market: Path) -> None:
    cfg = small_cfg(market, cache_images=False)
    splits = build_dataset(cfg)
    loaders = build_loaders(cfg, splits)
    first = torch.cat([b["image"] for b in loaders.gallery])
    second = torch.cat([b["image"] for b in loaders.gallery])
    assert torch.equal(first, second)
    reader, normalize = ImageReader(32, 16), Normalize(MEAN, STD)
    assert torch.equal(first[0], normalize(reader(splits.gallery[0].path)))


def test_cache_gives_identical_tensors(market: Path) -> None:
    cfg = small_cfg(market)
    splits = build_dataset(cfg)
    reader, normalize, augment = ImageReader(32, 16), Normalize(MEAN, STD), TrainAugment(cfg)
    plain = ImageDataset(splits.train, reader, normalize, splits.labels, augment)
    cached = ImageDataset(splits.train, reader, normalize, splits.labels, augment)
    cached.cache()
    assert cached.images is not None and cached.images.shape == (len(splits.train), 3, 32, 16)
    keys = [(i, 1000 + i) for i in range(len(splits.train))]
    a, b = plain.__getitems__(keys), cached.__getitems__(keys)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(cached[(3, 42)]["image"], plain[(3, 42)]["image"])
    assert not torch.equal(cached[(3, 42)]["image"], cached[(3, 43)]["image"])  # the seed drives augmentation


def test_same_batches_with_and_without_workers(market: Path) -> None:
    cfg = small_cfg(market, cache_images=False)
    splits = build_dataset(cfg)

    def epoch(workers: int) -> list[dict[str, torch.Tensor]]:
        loaders = build_loaders(replace(cfg, num_workers=workers), splits, seed=3)
        loaders.set_epoch(2)
        return list(loaders.train)

    main, worker = epoch(0), epoch(1)
    assert len(main) == len(worker) > 0
    for a, b in zip(main, worker, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_mid_epoch_reproduces_the_remaining_batches(market: Path) -> None:
    cfg = small_cfg(market)
    splits = build_dataset(cfg)
    loaders = build_loaders(cfg, splits, seed=1)
    loaders.set_epoch(5)
    full = list(loaders.train)
    again = build_loaders(cfg, splits, seed=1)  # a restarted job
    again.set_epoch(5)
    again.set_start(2)
    rest = list(again.train)
    assert len(rest) == len(full) - 2
    for a, b in zip(full[2:], rest, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["index"], b["index"])


def test_ddp_shares_are_disjoint(market: Path) -> None:
    cfg = small_cfg(market, batch_size=2, num_instances=1)
    splits = build_dataset(cfg)
    seen = []
    for rank in range(2):
        loaders = build_loaders(cfg, splits, seed=0, rank=rank, world_size=2)
        loaders.set_epoch(0)
        seen.append({i for b in loaders.train for i in b["index"].tolist()})
        assert loaders.gallery is not None
        assert [i for b in loaders.gallery for i in b["index"].tolist()] == list(
            range(rank, len(splits.gallery), 2)
        )
    assert seen[0] and seen[1] and not seen[0] & seen[1]


def test_distributed_needs_a_process_group(market: Path) -> None:
    cfg = small_cfg(market)
    with pytest.raises(
        DataError, match=r"distributed=True\) needs an initialised torch\.distributed process group"
    ):
        build_loaders(cfg, build_dataset(cfg), distributed=True)


def test_cache_budget_falls_back_to_decoding_with_a_warning(market: Path) -> None:
    cfg = small_cfg(market, cache_max_gb=1e-9)
    with pytest.warns(UserWarning) as caught:
        loaders = build_loaders(cfg, build_dataset(cfg))
    assert [str(w.message).split(":")[0] for w in caught] == [
        "not caching split 'train'",
        "not caching split 'query'",
        "not caching split 'gallery'",
    ]
    assert loaders.train is not None and loaders.train.dataset.images is None  # type: ignore[attr-defined]
    assert len(list(loaders.gallery)) == 2  # type: ignore[arg-type]  # 5 images, batches of 3


def test_classification_loaders_shuffle_and_validate(tmp_path: Path) -> None:
    root = make_imagefolder_tree(tmp_path / "cls")
    cfg = small_cfg(root, format="imagefolder", batch_size=2)
    loaders = build_loaders(cfg, build_dataset(cfg))
    loaders.set_epoch(0)
    batches = list(loaders.train)
    assert len(batches) == 2  # 4 images / batch 2
    assert sorted(i for b in batches for i in b["index"].tolist()) == [0, 1, 2, 3]
    val = next(iter(loaders.val))  # type: ignore[arg-type]
    assert val["label"].tolist() == [0] and val["camid"].tolist() == [0]
    assert loaders.query is None


def test_unknown_sampler(market: Path) -> None:
    cfg = small_cfg(market, sampler="balanced")
    with pytest.raises(DataError, match=r"data\.sampler='balanced': expected one of auto, pk, shuffle"):
        build_loaders(cfg, build_dataset(cfg))
