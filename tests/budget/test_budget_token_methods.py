"""The budget search over top-k (EViT) drops and ToMe merges: what the scores rank, chained plans
that stay buildable, one removal path, targets met end to end, and an exported graph that runs."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import torch
from budget_helpers import batches, tiny_vit

from reidprune.budget.api import to_budget
from reidprune.budget.candidates import SearchSpace, apply_plan, vit_space
from reidprune.budget.cost import GmacsCostModel
from reidprune.budget.reduction_scores import ClsAttentionMass, merge_losses
from reidprune.budget.search import greedy_search
from reidprune.errors import CompressionError
from reidprune.measure.flops import count_gmacs
from reidprune.models.tokens.tome import bipartite_matching

METHODS = ["topk", "tome"]


@pytest.fixture(scope="module")
def spaces() -> dict[str, tuple[Any, SearchSpace]]:
    """Per method: a 3-block ViT of 3 heads (32 patches + CLS) and its search space."""
    out = {}
    for method in METHODS:
        model = tiny_vit(heads=3)
        out[method] = (model, vit_space(model, batches(), token_method=method))
    return out


@pytest.fixture(scope="module")
def searched() -> dict[str, tuple[Any, Any, dict[str, Any], float]]:
    """Per method: (dense model, to_budget result, plan, target GMACs) at 60 % of the dense GMACs."""
    out = {}
    for method in METHODS:
        model = tiny_vit(heads=3)
        target = 0.6 * count_gmacs(model)["gmacs"]
        small, plan = to_budget(model, batches(), target_gmacs=target, token_method=method)
        out[method] = (model, small, plan, target)
    return out


def _tokens(space: SearchSpace, per_block: list[int]) -> list[int]:
    """A plan removing per_block[i] tokens in block i and no head."""
    return [per_block[g.block] if g.kind == "tokens" else 0 for g in space.groups]


def test_class_attention_mass_is_the_sorted_mean_per_image() -> None:
    stat = ClsAttentionMass(["blocks.0.attn"], num_prefix_tokens=1)
    attn = torch.zeros(2, 2, 4, 4)
    attn[0, :, 0] = torch.tensor([[0.4, 0.1, 0.3, 0.2], [0.2, 0.1, 0.5, 0.2]])  # head mean .3 .1 .4 .2
    attn[1, :, 0] = torch.tensor([0.1, 0.6, 0.2, 0.1])  # both heads
    stat.update("blocks.0.attn", attn)
    stat.update("blocks.1.attn", attn)  # not a layer it scores
    # per image, the patches' masses (CLS left out) ascending: (.1, .2, .4) and (.1, .2, .6)
    assert stat.mean("blocks.0.attn").tolist() == pytest.approx([0.1, 0.2, 0.5])
    with pytest.raises(CompressionError, match=r"did not reach 'blocks\.1\.attn'"):
        ClsAttentionMass(["blocks.1.attn"]).mean("blocks.1.attn")


def test_merge_losses_rank_the_merges_as_tome_makes_them() -> None:
    keys = torch.randn(3, 2, 9, 4, generator=torch.Generator().manual_seed(0))
    losses = merge_losses(keys)
    assert losses.shape == (3, 4)  # 5 A tokens, CLS among them: 4 may merge
    assert bool((losses[:, 1:] >= losses[:, :-1]).all())
    metric = keys.mean(dim=1)
    metric = metric / metric.norm(dim=-1, keepdim=True)
    for r in range(1, 5):
        _, src, dst = bipartite_matching(keys.mean(dim=1), r)
        similarity = (
            metric[:, ::2].gather(1, src[..., None].expand(-1, -1, 4))
            * metric[:, 1::2].gather(1, dst[..., None].expand(-1, -1, 4))
        ).sum(-1)
        merged = (1 - similarity.double()).sort(dim=1).values
        assert torch.allclose(merged, losses[:, :r], atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_a_chained_sketch_carries_every_removal_into_the_later_blocks(method: str, spaces) -> None:  # type: ignore[no-untyped-def]
    _, space = spaces[method]
    sketch = space.sketch(_tokens(space, [4, 3, 2]))
    assert sketch.method == method
    assert sketch.tokens == (33, 29, 26) and sketch.kept == (29, 26, 24)
    assert sketch.heads == (3, 3, 3)


def test_top_k_can_only_drop_what_leaves_min_tokens_patches() -> None:
    model = tiny_vit(heads=3)
    space = vit_space(model, batches(), token_method="topk", min_tokens=4)
    index = {g.block: i for i, g in enumerate(space.groups) if g.kind == "tokens"}
    removed = _tokens(space, [20, 0, 0])
    assert space.capacity(removed, index[2]) == 32 - 4 - 20
    assert space.feasible(_tokens(space, [20, 0, 8])) and not space.feasible(_tokens(space, [20, 0, 9]))
    assert space.sketch(space.most_removed()).tokens == (33, 5, 5)  # all dropped in block 0


def test_tome_merges_at_most_half_of_the_tokens_entering_a_block(spaces) -> None:  # type: ignore[no-untyped-def]
    _, space = spaces["tome"]
    index = {g.block: i for i, g in enumerate(space.groups) if g.kind == "tokens"}
    assert space.capacity(_tokens(space, [0, 0, 0]), index[0]) == 16  # 17 A tokens, CLS never merges
    # block 2 merges 6: it needs 13 tokens; block 1 merges 8: it needs 17, so block 0 may merge 12
    removed = _tokens(space, [0, 8, 6])
    assert space.capacity(removed, index[0]) == 12
    assert space.feasible(_tokens(space, [12, 8, 6])) and not space.feasible(_tokens(space, [13, 8, 6]))
    assert space.sketch(space.most_removed()).tokens == (33, 17, 9)


@pytest.mark.parametrize("method", METHODS)
def test_searched_plans_are_buildable_and_a_tighter_budget_never_costs_more(method: str, spaces) -> None:  # type: ignore[no-untyped-def]
    model, space = spaces[method]
    costs = GmacsCostModel.for_model(model)
    dense = costs.predict(space.sketch([0] * len(space.groups)))
    floor = costs.predict(space.sketch(space.most_removed()))
    targets = [f * dense for f in (0.9, 0.8, 0.7, 0.6, 0.5)] + [floor]
    results = [greedy_search(space, costs, t) for t in targets]
    for target, result in zip(targets, results, strict=True):
        assert space.feasible(result.removed) and result.cost <= target
        apply_plan(model, space, result.removed)  # its token spec is valid for the backbone
    spent = [r.cost for r in results]
    assert spent == sorted(spent, reverse=True) and len(set(spent)) == len(spent)
    assert spent[-1] == pytest.approx(floor)  # the cheapest plan is reached (moves to earlier blocks)
    for looser, tighter in itertools.pairwise(r.removed for r in results[:4]):  # one removal path
        assert all(t >= s for s, t in zip(looser, tighter, strict=True))


@pytest.mark.parametrize("method", METHODS)
def test_to_budget_meets_a_gmacs_target_with_top_k_or_tome(method: str, searched) -> None:  # type: ignore[no-untyped-def]
    model, small, plan, target = searched[method]
    measured = count_gmacs(small)["gmacs"]
    assert measured == pytest.approx(plan["predicted_cost"], rel=1e-9) and measured <= target
    assert measured > 0.55 * count_gmacs(model)["gmacs"]  # no more than a few units below the target
    spec = small.arch.tokens
    assert spec["method"] == method and plan["search"]["token_method"] == method
    assert plan["search"]["space"]["token_method"] == method
    removed = "dropped_tokens" if method == "topk" else "merged_tokens"
    assert sum(b[removed] for b in plan["blocks"]) > 0
    for block, after in itertools.pairwise(plan["blocks"]):
        assert after["tokens"] == block["kept_tokens"] == block["tokens"] - block[removed]
    if method == "tome":
        assert spec["r"] == [b["merged_tokens"] for b in plan["blocks"]]
    else:
        assert spec["keep"] == [b["kept_tokens"] - 1 if b["dropped_tokens"] else None for b in plan["blocks"]]
    assert [b["heads"] for b in plan["blocks"]] == small.arch.num_heads
    assert small.eval()(torch.randn(2, 3, 64, 32)).embedding.shape == (2, 32)


@pytest.mark.parametrize("method", METHODS)
def test_a_searched_top_k_or_tome_model_exports_to_a_graph_that_runs(
    method: str, searched, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from reidprune.export.onnx import export_onnx

    _, small, _, _ = searched[method]
    report = export_onnx(small, tmp_path / "model.onnx")
    assert report.check is not None and report.check.passed  # ONNX Runtime agrees with PyTorch


def test_an_unknown_token_method_is_refused_in_one_line() -> None:
    with pytest.raises(CompressionError) as err:
        to_budget(tiny_vit(), [], target_gmacs=1.0, token_method="evit")
    assert str(err.value) == "token_method='evit': expected one of amg, topk, tome"
