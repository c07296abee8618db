"""Extraction of the physically smaller ResNet, one-shot pruning, saving and reloading."""

from __future__ import annotations

import pytest
import torch
from filters_helpers import tiny_resnet

import reidprune
from batchnorm_helpers import randomise_bn
from reidprune.compress.filters import extract_pruned, prunable_convs, prune_filters
from reidprune.compress.filters.criteria import select_sfp
from reidprune.compress.filters.extraction import check_same_outputs
from reidprune.compress.filters.targets import zero_filters
from reidprune.errors import CompressionError
from reidprune.models import create


def mask_half(model: torch.nn.Module, scope: str) -> None:
    """Zero the smaller-L2 half of every prunable conv in place (conv slice, BN gamma and beta)."""
    for target in prunable_convs(model, scope):
        weight = model.get_submodule(target.conv).weight
        zero_filters(model, target, select_sfp(weight, weight.shape[0] // 2))


def outputs(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    model.eval()
    with torch.no_grad():
        out = model(images)
    return [out.embedding, *out.logits]


@pytest.mark.parametrize("name", ["resnet18_bafd", "resnet50_bafd"])
@pytest.mark.parametrize("scope", ["internal", "bafd"])
def test_extraction_reproduces_the_masked_model(name, scope):
    masked = create(name, img_size=[64, 32], num_classes=7)
    randomise_bn(masked)
    mask_half(masked, scope)
    small, plan = extract_pruned(masked)
    images = torch.randn(2, 3, 64, 32)
    for a, b in zip(outputs(masked, images), outputs(small, images), strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)
    for target in prunable_convs(masked, scope):
        full = masked.get_submodule(target.conv).weight.shape[0]
        assert small.get_submodule(target.conv).weight.shape[0] == full - full // 2
        assert len(plan.details["layers"][target.conv]["kept"]) == full - full // 2
    assert small.arch.mid_widths != []
    assert (small.arch.branch_channels != []) == (scope == "bafd")
    assert (small.arch.stem_width == 32) == (scope == "bafd" and name == "resnet50_bafd")


def test_extraction_of_an_unmasked_model_changes_nothing():
    model = tiny_resnet()
    small, plan = extract_pruned(model)
    assert small.arch == model.arch
    assert plan.details["removed_filters"] == 0
    assert plan.rate == 0.0


def test_a_second_extraction_slices_an_already_pruned_model_further():
    model = tiny_resnet("resnet50_reid")
    randomise_bn(model)
    mask_half(model, "bafd")
    once, _ = extract_pruned(model)
    mask_half(once, "bafd")
    twice, plan = extract_pruned(once)
    assert plan.previous and plan.previous[0]["method"] == "filter-extract"
    images = torch.randn(2, 3, 32, 16)
    assert torch.allclose(outputs(once, images)[0], outputs(twice, images)[0], atol=1e-5)
    # branch channels refer to the residual stream of the original network
    first = twice.arch.branch_channels[0]
    assert (
        set(first) <= set(once.arch.branch_channels[0])
        and len(first) == len(once.arch.branch_channels[0]) // 2
    )


def test_a_channel_that_only_looks_pruned_is_kept():
    # conv slice zero but BN shift non-zero: the channel outputs a constant, so it must stay
    model = tiny_resnet()
    randomise_bn(model)
    with torch.no_grad():
        model.layer1[0].conv1.weight[3].zero_()
    small, _ = extract_pruned(model)
    assert small.layer1[0].conv1.weight.shape[0] == model.layer1[0].conv1.weight.shape[0]


def test_the_check_rejects_a_model_that_does_not_match():
    a, b = tiny_resnet(), tiny_resnet()
    with pytest.raises(CompressionError, match="extraction check failed"):
        check_same_outputs(a, b)


@pytest.mark.parametrize("method", ["hfp", "sfp", "fpgm", "bafd"])
def test_prune_filters_returns_a_smaller_model_and_leaves_the_input_alone(method):
    model = tiny_resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small, plan = prune_filters(model, method, rate=0.5)
    assert plan.method == f"filter-{method}" and plan.rate == 0.5
    assert small.compression_plan is plan
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    assert plan.details["check_max_rel_deviation"] <= 1e-5


def test_hfp_keeps_the_largest_l1_filters():
    model = tiny_resnet()
    small, plan = prune_filters(model, "hfp", rate=0.5)
    weight = model.layer2[1].conv1.weight
    norms = weight.abs().flatten(1).sum(1)
    kept = plan.details["layers"]["layer2.1.conv1"]["kept"]
    assert kept == sorted(norms.argsort(descending=True)[: len(norms) // 2].tolist())
    assert torch.equal(small.layer2[1].conv1.weight, weight[kept])
    assert torch.equal(small.layer2[1].conv2.weight, model.layer2[1].conv2.weight[:, kept])


def test_resnet18_hfp_half_of_internal_filters_parameter_count():
    # torchvision ResNet-18 has 11,689,512 parameters; halving conv1 of all 8 BasicBlocks removes
    # half of conv1 + bn1 and half of conv2's inputs: 5,494,656 parameters (hand count per block)
    model = create("resnet18", img_size=[64, 64])
    small, _ = prune_filters(model, "hfp", rate=0.5)
    assert sum(p.numel() for p in small.parameters()) == 11_689_512 - 5_494_656


def test_extracted_models_save_and_reload_exactly(tmp_path):
    model = tiny_resnet("resnet50_bafd")
    randomise_bn(model)
    mask_half(model, "bafd")
    small, plan = extract_pruned(model)
    reidprune.save(small, tmp_path / "small")
    loaded = reidprune.load(tmp_path / "small")
    assert loaded.arch == small.arch
    assert loaded.compression_plan.to_dict() == plan.to_dict()
    images = torch.randn(2, 3, 32, 16)
    for a, b in zip(outputs(small, images), outputs(loaded, images), strict=True):
        assert torch.equal(a, b)


def test_bad_rates_and_methods_are_refused():
    model = tiny_resnet()
    with pytest.raises(CompressionError, match="fraction removed"):
        prune_filters(model, "hfp", rate=-0.1)
    with pytest.raises(CompressionError, match="method"):
        prune_filters(model, "l1", rate=0.5)
    with pytest.raises(CompressionError, match="max_layer_rate"):
        prune_filters(model, "bafd", rate=0.5, max_layer_rate=1.0)


def test_filter_methods_accept_the_config_spelling_with_prefix():
    """`prune_filters(m, "filter-hfp")` is `prune_filters(m, "hfp")`, as prune_tokens / prune_heads."""
    from reidprune.compress.filters import filter_pruning_callback

    torch.manual_seed(0)
    model = tiny_resnet()
    plain, plain_plan = prune_filters(model, "hfp", rate=0.5)
    prefixed, prefixed_plan = prune_filters(model, "filter-hfp", rate=0.5)
    assert prefixed_plan.to_dict() == plain_plan.to_dict()
    for a, b in zip(plain.state_dict().values(), prefixed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert filter_pruning_callback(model, "filter-bafd", rate=0.5).method == "bafd"
    with pytest.raises(CompressionError, match="'filter-l1'"):
        prune_filters(model, "filter-l1")
