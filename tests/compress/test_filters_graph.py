"""Filter pruning of any CNN module through Torch-Pruning (compress.filters.graph)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import reidprune
from reidprune.compress.filters import filter_pruning_callback, prune_filters
from reidprune.compress.filters.extraction import extract_pruned
from reidprune.compress.filters.graph import extract_graph
from reidprune.errors import CompressionError
from reidprune.measure import count_gmacs
from reidprune.models import build_foreign

pytest.importorskip("torch_pruning")

from filters_helpers import FakeEngine, tiny_resnet, train_epochs

SIZE = (32, 32)

# (base, kwargs, slow): every CNN family the graph path supports, built small with random weights
FAMILIES = [
    ("torchvision:resnet18", {"num_classes": 5}, False),
    ("torchvision:mobilenet_v2", {"num_classes": 5, "width_mult": 0.25}, True),
    ("torchvision:mobilenet_v3_large", {"num_classes": 5}, True),
    ("torchvision:efficientnet_b0", {"num_classes": 5}, True),
    ("timm:resnet18", {"num_classes": 5}, True),
    ("torchreid:osnet_x0_25", {"num_classes": 5}, True),
]


def _has(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def _family_params():
    for base, kwargs, slow in FAMILIES:
        marks = [pytest.mark.slow] if slow else []
        if base.startswith("torchreid"):
            marks.append(pytest.mark.skipif(not _has("torchreid"), reason="torchreid not installed"))
        yield pytest.param(base, kwargs, id=base, marks=marks)


FAMILY_PARAMS = list(_family_params())


def _outputs(model: torch.nn.Module, seed: int = 3) -> torch.Tensor:
    images = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(images)


@pytest.mark.parametrize(("base", "kwargs"), FAMILY_PARAMS)
def test_half_of_internal_filters_pruned_runs_is_smaller_keeps_the_largest_l1_and_reloads_exactly(
    base, kwargs, tmp_path
):
    torch.manual_seed(0)
    model = build_foreign(base, **kwargs).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small, plan = prune_filters(model, "hfp", 0.5, check_size=SIZE)

    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input untouched
    assert count_gmacs(small, SIZE)["gmacs"] < 0.8 * count_gmacs(model, SIZE)["gmacs"]
    assert _outputs(small).shape == _outputs(model).shape
    assert plan.details["check_max_rel_deviation"] <= 1e-5  # equals the group-masked model
    # the first pruned conv, checked by hand: HFP keeps the n - floor(n/2) filters of largest L1
    name, layer = next(iter(plan.details["layers"].items()))
    weight = model.get_submodule(name).weight.detach()
    n = weight.shape[0]
    largest = torch.argsort(weight.abs().sum((1, 2, 3)), descending=True)[: n - n // 2]
    assert layer["kept"] == sorted(largest.tolist())
    assert small.get_submodule(name).out_channels == n - n // 2

    reidprune.save(small, tmp_path / "m")
    back = reidprune.load(tmp_path / "m")
    assert torch.equal(_outputs(back), _outputs(small))
    assert back.compression_plan.details["layers"] == plan.details["layers"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sfp", "fpgm", "bafd"])
def test_each_criterion_prunes_a_mobilenet(method):
    torch.manual_seed(0)
    model = build_foreign("torchvision:mobilenet_v2", num_classes=5, width_mult=0.25).eval()
    small, plan = prune_filters(model, method, 0.5, check_size=SIZE)
    assert plan.details["criterion"] == method
    assert 0 < plan.details["removed_filters"] < plan.details["filters"]
    assert count_gmacs(small, SIZE)["gmacs"] < count_gmacs(model, SIZE)["gmacs"]


@pytest.mark.parametrize("name", ["resnet18_reid", pytest.param("resnet50_reid", marks=pytest.mark.slow)])
@pytest.mark.parametrize("method", ["hfp", "fpgm", "bafd"])
def test_graph_path_on_a_reidprune_resnet_agrees_with_the_exact_path(name, method):
    torch.manual_seed(0)
    model = tiny_resnet(name).eval()
    exact, exact_plan = prune_filters(model, method, 0.5)
    graph, graph_plan = prune_filters(model, method, 0.5, backend="graph")
    assert graph_plan.details["layers"] == exact_plan.details["layers"]
    images = torch.randn(2, 3, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(
            graph.eval()(images).embedding, exact.eval()(images).embedding, rtol=0, atol=1e-5
        )


def test_both_paths_agree_on_bafd_efficient_with_block_shared_rates_above_one_half():
    # the efficient branch is chosen on each layer's (shared) rate in both paths, not on count / n
    torch.manual_seed(0)
    model = tiny_resnet().eval()
    exact, exact_plan = prune_filters(model, "bafd", 0.7, efficient=True)
    graph, graph_plan = prune_filters(model, "bafd", 0.7, efficient=True, backend="graph")
    assert graph_plan.details["layers"] == exact_plan.details["layers"]
    images = torch.randn(2, 3, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(
            graph.eval()(images).embedding, exact.eval()(images).embedding, rtol=0, atol=1e-5
        )


def test_soft_zeros_of_a_reidprune_resnet_extract_the_same_through_both_paths():
    torch.manual_seed(0)
    model = tiny_resnet()
    callback = filter_pruning_callback(model, "fpgm", 0.5)
    train_epochs(FakeEngine(model, callbacks=[callback]), epochs=2)
    callback.hard_zero(model)
    exact, exact_plan = extract_pruned(model)
    graph, graph_plan = extract_graph(model, input_size=(32, 16))
    assert graph_plan.details["layers"] == exact_plan.details["layers"]
    images = torch.randn(2, 3, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(
            graph.eval()(images).embedding, exact.eval()(images).embedding, rtol=0, atol=1e-5
        )


@pytest.mark.parametrize(
    ("base", "kwargs"),
    [
        ("torchvision:mobilenet_v2", {"num_classes": 5, "width_mult": 0.25}),
        pytest.param("torchvision:mobilenet_v3_small", {"num_classes": 5}, marks=pytest.mark.slow),  # SE
    ],
)
def test_the_soft_callback_masks_a_foreign_cnn_and_extracts_what_it_selected(base, kwargs):
    torch.manual_seed(0)
    model = build_foreign(base, **kwargs)
    callback = filter_pruning_callback(model, "sfp", 0.5, input_size=SIZE)
    callback.on_epoch_end(FakeEngine(model), 0)
    small, plan = callback.extract(model, check_size=SIZE)
    assert plan.details["layers"]
    for name, layer in plan.details["layers"].items():
        removed = set(callback.selected[name])
        assert layer["kept"] == [i for i in range(layer["filters"]) if i not in removed]
        assert small.get_submodule(name).out_channels == len(layer["kept"])


def test_resnet_only_scopes_and_unknown_backends_are_refused():
    with pytest.raises(CompressionError, match="scope 'bafd'"):
        prune_filters(build_foreign("torchvision:resnet18", num_classes=5), "hfp", 0.5, scope="bafd")
    with pytest.raises(CompressionError, match="backend 'onnx'"):
        prune_filters(tiny_resnet(), "hfp", 0.5, backend="onnx")


def _slices(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """(n, ...) -> (n / groups, groups * ...): the filters at one position of every group, joined."""
    return (
        weight.reshape(groups, weight.shape[0] // groups, -1)
        .transpose(0, 1)
        .reshape(weight.shape[0] // groups, -1)
    )


@pytest.mark.parametrize(
    "base",
    ["timm:regnetx_002", pytest.param("timm:regnety_002", marks=pytest.mark.slow)],  # Y: SE
)
def test_grouped_conv_networks_lose_the_same_positions_in_every_group_and_reload_exactly(base, tmp_path):
    torch.manual_seed(0)
    model = build_foreign(base, num_classes=5).eval()
    small, plan = prune_filters(model, "hfp", 0.5, check_size=SIZE)
    assert plan.details["check_max_rel_deviation"] <= 1e-5  # equals the group-masked model
    assert count_gmacs(small, SIZE)["gmacs"] < 0.6 * count_gmacs(model, SIZE)["gmacs"]
    # block s1.b1: conv1 (1x1) feeds conv2, a 3x3 conv of 3 groups of 8 channels; both lose the
    # 4 positions of smallest L1 summed over the 3 groups, in every group
    for name in ("s1.b1.conv1.conv", "s1.b1.conv2.conv"):
        weight = model.get_submodule(name).weight.detach()
        kept = torch.argsort(_slices(weight, 3).abs().sum(1), descending=True)[:4].sort().values
        assert (
            plan.details["layers"][name]["kept"]
            == (kept + 8 * torch.arange(3).unsqueeze(1)).flatten().tolist()
        )
    conv2 = small.get_submodule("s1.b1.conv2.conv")
    assert (conv2.groups, conv2.in_channels, conv2.out_channels) == (3, 12, 12)
    reidprune.save(small, tmp_path / "m")
    assert torch.equal(_outputs(reidprune.load(tmp_path / "m")), _outputs(small))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sfp", "fpgm", "bafd"])
def test_each_criterion_and_the_soft_callback_prune_a_regnet(method):
    torch.manual_seed(0)
    model = build_foreign("timm:regnetx_002", num_classes=5)
    small, plan = prune_filters(model, method, 0.5, check_size=SIZE)
    assert 0 < plan.details["removed_filters"] < plan.details["filters"]
    assert (
        plan.details["check_max_rel_deviation"] <= 1e-5
        and small.get_submodule("s1.b1.conv2.conv").groups == 3
    )
    callback = filter_pruning_callback(model, method, 0.5, input_size=SIZE)
    callback.on_epoch_end(FakeEngine(model), 0)
    callback.hard_zero(model)
    soft_small, soft_plan = callback.extract(model, check_size=SIZE)
    for name, layer in soft_plan.details["layers"].items():
        assert layer["kept"] == [i for i in range(layer["filters"]) if i not in set(callback.selected[name])]
        assert soft_small.get_submodule(name).out_channels == len(layer["kept"])
