"""Soft filter pruning callbacks (SFP, FPGM, BAFD) driven by a minimal training loop."""

from __future__ import annotations

import copy

import pytest
import torch
from filters_helpers import FakeEngine, tiny_resnet, train_epochs

from batchnorm_helpers import randomise_bn
from reidprune.compress.filters import filter_pruning_callback, prunable_convs
from reidprune.compress.filters.bafd import filters_to_prune
from reidprune.compress.filters.extraction import removable_channels
from reidprune.errors import CompressionError


def zero_rows(model: torch.nn.Module, conv: str, bn: str) -> list[int]:
    """Filters whose conv slice, BN gamma and BN beta are all exactly zero."""
    state = model.state_dict()
    w = state[f"{conv}.weight"].flatten(1)
    zero = (w == 0).all(1) & (state[f"{bn}.weight"] == 0) & (state[f"{bn}.bias"] == 0)
    return zero.nonzero().flatten().tolist()


@pytest.mark.parametrize("method", ["sfp", "fpgm"])
def test_zeroing_methods_zero_floor_n_rate_filters_after_each_epoch(method):
    model = tiny_resnet()
    callback = filter_pruning_callback(model, method, rate=0.5)
    engine = FakeEngine(model, callbacks=[callback])
    train_epochs(engine, epochs=1)
    for target in callback.targets:
        n = model.get_submodule(target.conv).weight.shape[0]
        assert zero_rows(model, target.conv, target.bn) == callback.selected[target.conv]
        assert len(callback.selected[target.conv]) == filters_to_prune(n, 0.5) == n // 2


def test_zeroed_internal_filters_with_masked_bn_get_no_gradient():
    # gamma = beta = 0 makes the channel exactly 0 before its ReLU, whose gradient at 0 is 0
    model = tiny_resnet()
    callback = filter_pruning_callback(model, "sfp", rate=0.5)
    engine = FakeEngine(model)
    callback.on_epoch_end(engine, 0)
    target = callback.targets[0]
    assert zero_rows(model, target.conv, target.bn) == callback.selected[target.conv] != []
    _one_step(engine, callback)
    assert zero_rows(model, target.conv, target.bn) == callback.selected[target.conv]


@pytest.mark.parametrize("hold", [False, True])
def test_conv_only_masks_regrow_after_an_optimiser_step_unless_held(hold):
    model = tiny_resnet()
    callback = filter_pruning_callback(model, "sfp", rate=0.5, hold_zeros=hold, mask_bn=False)
    target = callback.targets[0]
    with torch.no_grad():  # a positive BN shift keeps the zeroed channels above their ReLU's kink
        model.get_submodule(target.bn).bias.fill_(0.1)
    engine = FakeEngine(model)
    callback.on_epoch_end(engine, 0)
    assert zero_convs(model, target.conv) == callback.selected[target.conv] != []
    _one_step(engine, callback)
    expected = callback.selected[target.conv] if hold else []  # gradients bring the filters back
    assert zero_convs(model, target.conv) == expected
    callback.on_train_end(engine)  # the final selection is zeroed with its BN, ready to extract
    assert zero_rows(model, target.conv, target.bn) == callback.selected[target.conv]


def zero_convs(model: torch.nn.Module, conv: str) -> list[int]:
    w = model.get_submodule(conv).weight.flatten(1)
    return (w == 0).all(1).nonzero().flatten().tolist()


def _one_step(engine: FakeEngine, callback) -> None:
    model = engine.model
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05)
    h, w = model.arch.img_size
    out = model(torch.randn(4, 3, h, w))
    loss = torch.nn.functional.cross_entropy(out.logits[0], torch.tensor([0, 1, 2, 3]))
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    callback.on_step_end(engine)


def test_bafd_decays_the_selection_by_decay_each_epoch_and_zeroes_it_at_the_end():
    model = tiny_resnet()
    randomise_bn(model)
    callback = filter_pruning_callback(model, "bafd", rate=0.5, decay=0.3)
    engine = FakeEngine(model)
    before = copy.deepcopy(model.state_dict())
    callback.on_epoch_end(engine, 0)
    after = model.state_dict()
    for target in callback.targets:
        sel = callback.selected[target.conv]
        rest = [i for i in range(before[f"{target.conv}.weight"].shape[0]) if i not in sel]
        for key in (f"{target.conv}.weight", f"{target.bn}.weight", f"{target.bn}.bias"):
            assert torch.allclose(after[key][sel], before[key][sel] * 0.3)
            assert torch.equal(after[key][rest], before[key][rest])
        # running statistics are left alone
        assert torch.equal(after[f"{target.bn}.running_var"], before[f"{target.bn}.running_var"])
    callback.on_train_end(engine)
    for target in callback.targets:
        removable = removable_channels(model.state_dict(), target.conv, target.bn)
        assert removable.nonzero().flatten().tolist() == callback.selected[target.conv]


def test_bafd_snapshot_is_a_copy_with_the_current_selection_zeroed():
    model = tiny_resnet()
    randomise_bn(model)
    callback = filter_pruning_callback(model, "bafd", rate=0.5, decay=0.3)
    callback.on_epoch_end(FakeEngine(model), 0)
    decayed = copy.deepcopy(model.state_dict())
    snapshot = callback.snapshot(model)
    assert all(torch.equal(v, decayed[k]) for k, v in model.state_dict().items())  # training goes on
    for target in callback.targets:
        assert zero_rows(snapshot, target.conv, target.bn) == callback.selected[target.conv]
        assert zero_rows(model, target.conv, target.bn) == []  # only decayed in the live model


def test_bafd_rates_are_fixed_before_training_and_the_cap_holds():
    model = tiny_resnet("resnet50_reid")
    callback = filter_pruning_callback(model, "bafd", rate=0.8, max_layer_rate=0.75, scope="bafd")
    rates = dict(callback.rates)
    train_epochs(FakeEngine(model, callbacks=[callback]), epochs=2, steps=1)
    assert callback.rates == rates
    for target in callback.targets:
        n = model.get_submodule(target.conv).weight.shape[0]
        assert len(callback.selected[target.conv]) <= int(0.75 * n)


def test_at_start_masks_before_the_first_epoch():
    model = tiny_resnet()
    callback = filter_pruning_callback(model, "fpgm", rate=0.25, at_start=True)
    callback.on_train_start(FakeEngine(model))
    target = callback.targets[0]
    assert zero_rows(model, target.conv, target.bn) == callback.selected[target.conv] != []


@pytest.mark.parametrize("method", ["sfp", "bafd"])
def test_resume_from_state_dicts_is_exact(method):
    torch.manual_seed(1)
    model = tiny_resnet()
    start = copy.deepcopy(model.state_dict())

    straight = filter_pruning_callback(model, method, rate=0.5, hold_zeros=method == "sfp")
    train_epochs(FakeEngine(model, callbacks=[straight]), epochs=2)

    resumed_model = tiny_resnet()
    resumed_model.load_state_dict(start)
    first = filter_pruning_callback(resumed_model, method, rate=0.5, hold_zeros=method == "sfp")
    train_epochs(FakeEngine(resumed_model, callbacks=[first]), epochs=1)
    saved_model, saved_callback = copy.deepcopy(resumed_model.state_dict()), first.state_dict()

    # a fresh process: new model, and a callback ranked on different weights until it loads its state
    fresh = tiny_resnet()
    fresh.load_state_dict(saved_model)
    second = filter_pruning_callback(fresh, method, rate=0.5, hold_zeros=method == "sfp")
    second.load_state_dict(saved_callback)
    train_epochs(FakeEngine(fresh, epoch=1, callbacks=[second]), epochs=1)

    assert second.state_dict() == straight.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key


def test_resume_refuses_another_method():
    model = tiny_resnet()
    state = filter_pruning_callback(model, "sfp", rate=0.5).state_dict()
    with pytest.raises(CompressionError, match="'sfp'"):
        filter_pruning_callback(model, "fpgm", rate=0.5).load_state_dict(state)


def test_callback_extract_gives_the_small_model_with_the_schedule_in_its_plan():
    model = tiny_resnet()
    callback = filter_pruning_callback(model, "bafd", rate=0.5)
    train_epochs(FakeEngine(model, callbacks=[callback]), epochs=1, steps=1)
    small, plan = callback.extract(model)
    assert plan.method == "filter-bafd" and plan.rate == 0.5
    assert plan.details["rates"] == callback.rates
    for target in callback.targets:
        kept = model.get_submodule(target.conv).weight.shape[0] - len(callback.selected[target.conv])
        assert small.get_submodule(target.conv).weight.shape[0] == kept


def test_bad_requests_are_refused():
    model = tiny_resnet()
    with pytest.raises(CompressionError, match="fraction removed"):
        filter_pruning_callback(model, "sfp", rate=1.0)
    with pytest.raises(CompressionError, match="prune_filters"):
        filter_pruning_callback(model, "hfp", rate=0.5)
    with pytest.raises(CompressionError, match="scope"):
        prunable_convs(model, "everything")
    with pytest.raises(CompressionError, match="ResNet"):
        filter_pruning_callback(torch.nn.Linear(2, 2), "sfp", rate=0.5)
