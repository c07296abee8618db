"""AMG token masks and Prune-and-Merge matrices in foreign checkpoints become token specs."""

from __future__ import annotations

import pytest
import torch
from tokens_helpers import tiny_vit

from reidprune.compress.tokens import attach_reducers
from reidprune.compress.tokens.pm import dense_matrices
from reidprune.models import create, create_from_checkpoint
from reidprune.models.checkpoint_io import CheckpointError
from reidprune.models.import_tokens import amg_kept_positions, pm_sparse_plan
from seed_checkpoints import la_checkpoint, pm_checkpoint

SMALL = {
    "embed_dim": 32,
    "head_dim": 16,
    "patch_size": 8,
    "stride": 8,
    "img_size": [32, 16],
    "num_classes": 5,
}


def _mask(*bits: int) -> torch.Tensor:
    return torch.tensor(bits, dtype=torch.bool)


def test_la_masks_are_original_positions() -> None:
    kept = amg_kept_positions([_mask(1, 0, 1, 1, 0), None, _mask(1, 1, 1, 1, 1)], permuted=False)
    assert kept == [[0, 2, 3], None, None]


def test_transreid_masks_are_undone_through_the_running_permutation() -> None:
    # block 0 keeps originals {0, 2, 3}: the sequence becomes [0, 2, 3, 1, 4];
    # block 1's mask is over that order: it keeps slots 0, 1, 3 = originals 0, 2, 1
    kept = amg_kept_positions([_mask(1, 0, 1, 1, 0), _mask(1, 1, 0, 1, 0)], permuted=True)
    assert kept == [[0, 2, 3], [0, 1, 2]]
    with pytest.raises(CheckpointError, match="CLS"):
        amg_kept_positions([_mask(0, 1, 1)], permuted=False)


def test_transreid_token_skipping_equals_our_skip_reducers() -> None:
    model = tiny_vit(heads=(2, 2, 2))
    masks = [
        _mask(1, 0, 1, 1, 0, 1, 1, 0, 1),
        _mask(1, 1, 0, 1, 1, 0, 1, 1, 0),
        _mask(1, 1, 1, 0, 0, 1, 0, 1, 1),
    ]
    x = model.embed(torch.randn(2, 3, 16, 8))
    # TransReID's forward: each block outputs [block(kept), skipped] in the running order
    seq, order = x, torch.arange(9)
    for block, mask in zip(model.blocks, masks, strict=True):
        seq = torch.cat([block.forward_dense(seq[:, mask]), seq[:, ~mask]], dim=1)
        order = torch.cat([order[mask], order[~mask]])
    reference = torch.empty_like(seq)
    reference[:, order] = seq
    kept = amg_kept_positions(masks, permuted=True)
    attach_reducers(model, {"method": "amg", "mode": "skip", "num_tokens": 9, "kept": kept})
    out, _ = model.run_blocks(x)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)


def test_amg_la_checkpoint_builds_a_kv_pruned_model(tmp_path) -> None:
    original = create("la_tiny", num_heads=[2, 1], depth=2, **SMALL).eval()
    masks = {1: _mask(1, 1, 0, 0, 1, 1, 1, 0, 1)}
    path = tmp_path / "amg_la.pth"
    torch.save(la_checkpoint(original, masks), path)
    model = create_from_checkpoint("la_tiny", path, **SMALL).eval()
    assert model.arch.tokens == {
        "method": "amg",
        "mode": "kv",
        "num_tokens": 9,
        "kept": [None, [0, 1, 4, 5, 6, 8]],
    }
    attach_reducers(original, model.arch.tokens)
    images = torch.randn(2, 3, 32, 16)
    torch.testing.assert_close(model(images).embedding, original(images).embedding, rtol=0, atol=0)


def _dense_reference(
    model: torch.nn.Module, matrices: dict[int, tuple], images: torch.Tensor
) -> torch.Tensor:
    x = model.backbone.embed(images)
    for i, block in enumerate(model.backbone.blocks):
        if i in matrices:
            merge, recover, mask = matrices[i]
            x = recover @ block.forward_dense(merge @ x) + x * (1 - mask).view(1, -1, 1)
        else:
            x = block.forward_dense(x)
    return model.head.classifiers[0](model.backbone.norm(x)[:, 0])


def test_prune_merge_checkpoint_with_its_plan_pattern_becomes_sparse(tmp_path) -> None:
    original = create("deit_tiny_patch16_224", num_heads=[2, 2], depth=2, **SMALL).eval()
    segment = [0, 0, 1, -1, 1, 2, 2, -1]
    merge, _, mask = dense_matrices(segment, torch.tensor([1.0, 0.5, 0.25, 0.0, 1.0, 0.75, 1.0, 0.0]))
    matrices = {1: (merge, torch.linalg.pinv(merge), mask)}  # PM-ViT's SVD pseudo-inverse
    path = tmp_path / "pm.pth"
    torch.save(pm_checkpoint(original, matrices), path)
    model = create_from_checkpoint("deit_tiny_patch16_224", path, **SMALL).eval()
    assert model.arch.tokens == {
        "method": "pm",
        "num_tokens": 9,
        "dense": False,
        "segments": [None, segment],
        "restore": "projection",  # released checkpoints were trained with the pseudo-inverse
    }
    images = torch.randn(2, 3, 32, 16)
    torch.testing.assert_close(model(images).logits[0], _dense_reference(original, matrices, images))


def test_prune_merge_checkpoint_with_dense_matrices_stays_dense(tmp_path) -> None:
    original = create("deit_tiny_patch16_224", num_heads=[2, 2], depth=2, **SMALL).eval()
    merge, recover, mask = dense_matrices([0, 0, 1, -1, 1, 2, 2, -1], torch.rand(8) + 0.5)
    merge = merge + 0.01 * torch.randn_like(merge)  # fine-tuned: every entry moved
    matrices = {0: (merge, recover, mask)}
    path = tmp_path / "pm_dense.pth"
    torch.save(pm_checkpoint(original, matrices), path)
    model = create_from_checkpoint("deit_tiny_patch16_224", path, **SMALL).eval()
    assert model.arch.tokens == {"method": "pm", "num_tokens": 9, "dense": True, "tokens": [4, None]}
    images = torch.randn(2, 3, 32, 16)
    torch.testing.assert_close(model(images).logits[0], _dense_reference(original, matrices, images))


def test_sparse_pattern_detection() -> None:
    merge, restore, mask = dense_matrices([1, 0, -1, 0], torch.tensor([1.0, 1.0, 0.0, 0.5]))
    segment, weight, restore_w = pm_sparse_plan(merge, restore, mask)
    assert segment == [1, 0, -1, 0]
    assert weight.tolist() == [1.0, 1.0, 0.0, 0.5]
    torch.testing.assert_close(restore_w, torch.tensor([1.0, 0.8, 0.0, 0.4]))
    shared = merge.clone()
    shared[2, 2] = 0.3  # patch 1 in two merged tokens: not a plan
    assert pm_sparse_plan(shared, restore, mask) is None
