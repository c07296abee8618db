"""GMACs do not depend on the attention kernel: hand counts from token counts, on CPU and meta.

torch picks the scaled-dot-product kernel by device and input: on CPU usually its flash kernel, on
meta the math path. torch's own counter counted the CPU flash kernel as zero, so a CPU count was
lower than a meta count; every count here is exact, whatever kernel runs.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from reidprune.compress.heads import remove_heads
from reidprune.compress.tokens import attach_reducers
from reidprune.measure import count_gmacs
from reidprune.measure.flops import ATTENTION_OPS
from reidprune.models import create
from tiny_models import tiny_vit

# tiny DeiT: 32x16 input, 8x8 patches -> 4x2 = 8 patches + CLS; D 16, 4 blocks of 3 heads x 8, MLP 24
PATCHES, PATCH_PIXELS, DIM, HEAD_DIM, MLP, CLASSES = 8, 3 * 8 * 8, 16, 8, 24, 5
TOKENS = 1 + PATCHES


def tiny_deit(heads: int = 3) -> nn.Module:
    return tiny_vit(
        "deit_tiny_patch16_224",
        depth=4,
        heads=heads,
        img_size=(32, 16),
        embed_dim=DIM,
        head_dim=HEAD_DIM,
        mlp=MLP,
        num_classes=CLASSES,
        stride=8,
    )


def hand_macs(blocks: list[tuple[int, int, int, int]], extra: int = 0) -> int:
    """MACs of the tiny DeiT from (queries, keys, MLP tokens, heads) per block.

    Patch embedding (P x 3*8*8 x D) and the classifier on CLS (D x classes) are outside the blocks.
    In a block, q is projected for every query and k / v for every key; attention is the two
    products q k^T and (weights) v per head; proj runs on the queries, the MLP (fc1, fc2) on the
    tokens left after the block's reduction. `extra`: the reducer's own products.
    """
    total = PATCHES * PATCH_PIXELS * DIM + DIM * CLASSES + extra
    for queries, keys, mlp_tokens, heads in blocks:
        inner = heads * HEAD_DIM
        total += queries * DIM * inner + keys * DIM * 2 * inner
        total += heads * (queries * keys * HEAD_DIM + queries * keys * HEAD_DIM)
        total += queries * inner * DIM
        total += mlp_tokens * 2 * DIM * MLP
    return total


def reduced(spec: dict) -> nn.Module:
    model = tiny_deit()
    attach_reducers(model, {"num_tokens": TOKENS, **spec})
    return model


def dense() -> tuple[nn.Module, int]:
    return tiny_deit(), hand_macs([(9, 9, 9, 3)] * 4)


def amg_kv() -> tuple[nn.Module, int]:
    # every token stays a query; keys / values only for the kept ones
    model = reduced({"method": "amg", "mode": "kv", "kept": [None, [0, 1, 2, 5, 6], [0, 3, 4], None]})
    return model, hand_macs([(9, 9, 9, 3), (9, 5, 9, 3), (9, 3, 9, 3), (9, 9, 9, 3)])


def amg_skip() -> tuple[nn.Module, int]:
    model = reduced({"method": "amg", "mode": "skip", "kept": [None, [0, 1, 2, 5, 6], [0, 3, 4], None]})
    return model, hand_macs([(9, 9, 9, 3), (5, 5, 5, 3), (3, 3, 3, 3), (9, 9, 9, 3)])


def topk() -> tuple[nn.Module, int]:
    # blocks 1 and 3 keep 4 / 2 patches + the fused token after attention: 9 -> 1 + 4 + 1 -> 1 + 2 + 1
    model = reduced({"method": "topk", "fuse": True, "keep": [None, 4, None, 2]})
    cls_rows = 3 * 9 * HEAD_DIM + 3 * 6 * HEAD_DIM  # CLS query over all keys, per head
    fused = 8 * DIM + 5 * DIM  # CLS-attention-weighted sum of the patch tokens
    return model, hand_macs([(9, 9, 9, 3), (9, 9, 6, 3), (6, 6, 6, 3), (6, 6, 4, 3)], cls_rows + fused)


def tome() -> tuple[nn.Module, int]:
    # r = 2, 2, 1 merged after attention: 9 -> 7 -> 5 -> 4 tokens
    model = reduced({"method": "tome", "prop_attn": True, "r": [2, 2, 1, 0]})
    matching = (5 * 4 + 4 * 3 + 3 * 2) * HEAD_DIM  # cosine similarity of sets A x B, head-averaged keys
    return model, hand_macs([(9, 9, 7, 3), (7, 7, 5, 3), (5, 5, 4, 3), (4, 4, 4, 3)], matching)


def pm() -> tuple[nn.Module, int]:
    # block 1: 3 segments, one patch pruned -> CLS + 3 tokens; block 2: 2 segments -> CLS + 2
    segments = [None, [0, 0, 1, 1, -1, 2, 2, 2], [0, 0, 0, 0, 1, 1, 1, 1], None]
    model = reduced({"method": "pm", "dense": False, "segments": segments, "restore": "residual"})
    return model, hand_macs([(9, 9, 9, 3), (4, 4, 4, 3), (3, 3, 3, 3), (9, 9, 9, 3)])


def heads_pruned() -> tuple[nn.Module, int]:
    model = remove_heads(tiny_deit(), {"backbone.blocks.0.attn": [1], "backbone.blocks.2.attn": [0, 2]})
    return model, hand_macs([(9, 9, 9, 1), (9, 9, 9, 3), (9, 9, 9, 2), (9, 9, 9, 3)])


MODELS = [dense, amg_kv, amg_skip, topk, tome, pm, heads_pruned]


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("make", MODELS, ids=lambda make: make.__name__)
def test_gmacs_equal_the_hand_count_from_token_counts(make, device: str) -> None:
    model, macs = make()
    result = count_gmacs(copy.deepcopy(model).to(device), batch=2)
    assert result["gmacs"] == pytest.approx(macs / 1e9, rel=1e-12)


@pytest.mark.parametrize("backend", [SDPBackend.MATH, SDPBackend.FLASH_ATTENTION])
@pytest.mark.parametrize("make", [dense, amg_kv, tome], ids=lambda make: make.__name__)
def test_gmacs_are_the_same_whichever_cpu_kernel_runs(make, backend: SDPBackend) -> None:
    model, macs = make()
    with sdpa_kernel(backend):  # FLASH_ATTENTION on CPU: aten._scaled_dot_product_flash_attention_for_cpu
        assert count_gmacs(model)["gmacs"] == pytest.approx(macs / 1e9, rel=1e-12)


class FlashForCpu(nn.Module):
    """(1, 3, 5, 3) input -> 2 heads of 4 dims, 5 queries over 3 keys, by the CPU flash op."""

    def forward(self, images: Tensor, camids: Tensor | None = None) -> Tensor:
        x = images.flatten()
        q = x[:40].reshape(1, 2, 5, 4)
        k = x[:24].reshape(1, 2, 3, 4)
        v = x[:24].reshape(1, 2, 3, 4)
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)[0]


def test_the_cpu_flash_op_called_directly_is_counted() -> None:
    # per head: q k^T 5 x 3 x 4 = 60, (weights) v 5 x 3 x 4 = 60
    assert count_gmacs(FlashForCpu(), input_size=(5, 3))["gmacs"] == pytest.approx(2 * 120 / 1e9)


def test_grouped_query_attention_counts_every_query_head() -> None:
    class Grouped(nn.Module):
        def forward(self, images: Tensor, camids: Tensor | None = None) -> Tensor:
            x = images.flatten()
            q, kv = x[:160].reshape(1, 4, 5, 8), x[:48].reshape(1, 2, 3, 8)
            return F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)

    # 4 query heads x (5 x 3 x 8 + 5 x 3 x 8)
    assert count_gmacs(Grouped(), input_size=(8, 20))["gmacs"] == pytest.approx(4 * 240 / 1e9)


def test_every_attention_op_of_this_torch_has_a_formula() -> None:
    # every registered aten op (torch.ops.aten lists only those already loaded): a kernel added by a
    # newer torch fails here instead of being counted as zero
    names = {name.split("::")[1].split(".")[0] for name in torch._C._dispatch_get_all_op_names()}
    variants = {n for n in names if "scaled_dot" in n and not n.endswith("_backward")}
    assert variants <= set(ATTENTION_OPS)


def test_deit_tiny_at_224_counts_the_same_on_cpu_and_meta() -> None:
    # 196 patches x 768 x 192 + 12 blocks x 197 tokens x (192 x 576 + 3 heads x 2 x 197 x 64 + 192 x 192
    # + 2 x 192 x 768) + 192 x 1000 = 1,253,683,200 MACs (a CPU count gave 1.075 G before the fix)
    macs = (
        196 * 768 * 192 + 12 * 197 * (192 * 576 + 3 * 2 * 197 * 64 + 192 * 192 + 2 * 192 * 768) + 192 * 1000
    )
    cpu = create("deit_tiny_patch16_224")
    with torch.device("meta"):
        meta = create("deit_tiny_patch16_224")
    assert count_gmacs(cpu)["gmacs"] == count_gmacs(meta)["gmacs"] == pytest.approx(macs / 1e9, rel=1e-12)
