"""The zero-filter full-size form of an extracted ResNet (`--save-masked`)."""

from __future__ import annotations

import pytest
import torch
from filters_helpers import tiny_resnet

from batchnorm_helpers import randomise_bn
from reidprune.compress.filters import extract_pruned, prunable_convs, prune_filters
from reidprune.compress.filters.masked import masked_model
from reidprune.errors import CompressionError
from reidprune.models.plan import CompressionPlan


@pytest.mark.parametrize("name", ["resnet18_bafd", pytest.param("resnet50_bafd", marks=pytest.mark.slow)])
def test_masked_model_puts_the_kept_filters_back_and_zeroes_the_rest(name):
    model = tiny_resnet(name)
    randomise_bn(model)
    small, plan = prune_filters(model, "hfp", 0.5, scope="bafd")  # the R50 stem is pruned too
    with torch.no_grad():  # 'fine-tuning': the masked form must hold the small model's weights
        for param in small.parameters():
            param.add_(0.1)
    masked = masked_model(model, small, plan)  # checks that both give the same outputs
    assert masked.arch == model.arch and masked.compression_plan is plan
    state, small_state = masked.state_dict(), small.state_dict()
    for target in prunable_convs(model, "bafd"):
        kept = plan.details["layers"][target.conv]["kept"]
        removed = [i for i in range(state[f"{target.conv}.weight"].shape[0]) if i not in kept]
        for key in (f"{target.conv}.weight", f"{target.bn}.weight", f"{target.bn}.bias"):
            assert not state[key][removed].any()
        assert torch.equal(state[f"{target.bn}.running_mean"][kept], small_state[f"{target.bn}.running_mean"])
    # extracting the masked form gives the small model back, bit for bit
    again, _ = extract_pruned(masked)
    assert again.arch == small.arch
    assert all(torch.equal(v, small_state[k]) for k, v in again.state_dict().items())


def test_a_plan_without_kept_filters_is_refused():
    model = tiny_resnet()
    with pytest.raises(CompressionError, match="lists no kept filters"):
        masked_model(model, model, CompressionPlan("token-amg", 0.5, {}))


def prune_cli(*args: str):
    from typer.testing import CliRunner

    from reidprune.cli import _register, app

    _register()
    return CliRunner().invoke(app, ["prune", *args])


@pytest.mark.slow
def test_prune_save_masked_writes_the_zero_filter_model_next_to_the_small_one(tmp_path, market_root):
    from reidprune import models

    base = models.save(tiny_resnet("resnet18_bafd", num_classes=3), tmp_path / "base")  # 3 train ids
    out = tmp_path / "run"
    overrides = [
        f"data.root={market_root}",
        "data.format=market1501",
        "data.height=32",
        "data.width=16",
        "data.batch_size=4",
        "data.num_instances=2",
        "data.num_workers=0",
        "prune.final_epochs=1",
        "train.progress=false",
        f"output_dir={out}",
    ]
    result = prune_cli("-m", "filter-bafd", "-r", "0.5", "-w", str(base), "--save-masked", *overrides)
    assert result.exit_code == 0, result.output
    small, masked = models.load(out / "model"), models.load(out / "masked")
    assert masked.arch == models.load(base).arch
    assert small.arch != masked.arch
    assert extract_pruned(masked)[0].arch == small.arch  # the zero filters are the removed ones


def test_prune_save_masked_is_refused_for_token_methods(tmp_path):
    result = prune_cli("-m", "token-topk", "-r", "0.5", "-w", str(tmp_path), "--save-masked")
    assert result.exit_code == 2
    assert "only filter pruning has a zero-filter full-size form" in " ".join(result.output.split())
