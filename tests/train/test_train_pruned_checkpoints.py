"""`reidprune train` fine-tunes checkpoints that the seeds pruned (AMG-LA tokens, PM-ViT merges):
the model is built in the checkpoint's pruned architecture and distils from the given teacher."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import reidprune
from reidprune.cli import _register, app
from reidprune.compress.tokens.pm import dense_matrices
from reidprune.models import create
from reidprune.train.log import read_log
from seed_checkpoints import la_checkpoint, pm_checkpoint

SMALL = {"embed_dim": 32, "head_dim": 16, "patch_size": 8, "stride": 8, "depth": 2}
TRAIN = ["train.epochs=1", "train.lr=0.001", "train.warmup_epochs=0", "train.progress=false"]
DATA = ["data.height=32", "data.width=16", "data.num_workers=0", "data.val_ids=0", "data.test_batch_size=8"]


def _train(*overrides: str) -> None:
    _register()
    result = CliRunner().invoke(
        app, ["train", "device=cpu", *DATA, *TRAIN, *overrides], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output


def _kwargs(**extra: object) -> str:
    items = ", ".join(f"{k}: {v}" for k, v in {**SMALL, **extra}.items())
    return "model.kwargs={" + items + "}"


def _kd_of_the_epoch(run: Path) -> float:
    (epoch,) = [r for r in read_log(run / "train_log.jsonl") if r["event"] == "epoch"]
    return epoch["kd"]


@pytest.mark.slow
def test_train_fine_tunes_an_amg_la_token_pruned_checkpoint(market_root: Path, tmp_path: Path) -> None:
    # the market fixture trains on 3 identities; LA-Tiny-like: 2 blocks, 8 patches (N = 9)
    original = create("la_tiny", num_classes=3, img_size=[32, 16], num_heads=[2, 1], **SMALL)
    mask = torch.tensor([1, 1, 0, 0, 1, 1, 1, 0, 1], dtype=torch.bool)
    torch.save(
        {"state_dict": la_checkpoint(original, {}), "channels": None, "heads": None}, tmp_path / "la.pth"
    )
    pruned = {
        "state_dict": la_checkpoint(original, {1: mask}),
        "channels": [torch.tensor(9), torch.tensor(6)],
    }
    torch.save(pruned, tmp_path / "la_token.pth")
    run = tmp_path / "run"
    _train(
        f"data.root={market_root}",
        "data.format=market1501",
        "data.batch_size=4",
        "data.num_instances=2",
        "model.name=la_tiny",
        _kwargs(num_heads=[2, 1]),
        f"model.weights={tmp_path / 'la_token.pth'}",
        f"train.teacher={tmp_path / 'la.pth'}",
        "train.distill=soft",
        f"output_dir={run}",
    )
    final = reidprune.load(run / "final")
    assert final.arch.tokens == {
        "method": "amg",
        "mode": "kv",
        "num_tokens": 9,
        "kept": [None, [0, 1, 4, 5, 6, 8]],
    }
    assert not torch.equal(
        final.backbone.blocks[1].attn.qkv.weight, original.backbone.blocks[1].attn.qkv.weight
    )
    assert _kd_of_the_epoch(run) > 0.0


@pytest.mark.slow
def test_train_fine_tunes_a_pm_vit_checkpoint(imagefolder_root: Path, tmp_path: Path) -> None:
    original = create("deit_tiny_patch16_224", num_classes=2, img_size=[32, 16], num_heads=[2, 2], **SMALL)
    torch.save({"model": pm_checkpoint(original, {})["model"]}, tmp_path / "deit.pth")
    segment = [0, 0, 1, -1, 1, 2, 2, -1]
    merge, _, mask = dense_matrices(segment, torch.tensor([1.0, 0.5, 0.25, 0.0, 1.0, 0.75, 1.0, 0.0]))
    torch.save(pm_checkpoint(original, {1: (merge, torch.linalg.pinv(merge), mask)}), tmp_path / "pm.pth")
    run = tmp_path / "run"
    _train(
        f"data.root={imagefolder_root}",
        "data.format=imagefolder",
        "data.batch_size=2",
        "train.triplet_weight=0",  # classification: ID loss + distillation, as PM-ViT
        "model.name=deit_tiny_patch16_224",
        _kwargs(num_heads=[2, 2]),
        f"model.weights={tmp_path / 'pm.pth'}",
        f"train.teacher={tmp_path / 'deit.pth'}",
        "train.distill=soft",
        f"output_dir={run}",
    )
    final = reidprune.load(run / "final")
    assert final.arch.tokens == {
        "method": "pm",
        "num_tokens": 9,
        "dense": False,
        "segments": [None, segment],
        "restore": "projection",
    }
    assert _kd_of_the_epoch(run) > 0.0
