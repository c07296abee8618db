"""The deploy form of a model: BatchNorm folded into its convs, channels_last; measured and refused by save."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from typer.testing import CliRunner

from batchnorm_helpers import randomise_bn
from reidprune import models
from reidprune.cli import _register, app
from reidprune.compress.filters import prune_filters
from reidprune.errors import CheckpointError, CompressionError
from reidprune.measure import benchmark_speed, conv_bn_pairs, fold_batchnorm, prepare_for_inference
from reidprune.models.output import ModelOutput

SIZE = [64, 32]
NARROW = {"stage_planes": [8, 16, 16, 32]}  # the real block structure at a fraction of the cost


def _embed(model: nn.Module, images: Tensor) -> Tensor:
    with torch.inference_mode():
        return model(images).embedding


def _max_rel_diff(got: Tensor, want: Tensor) -> float:
    return ((got - want).abs().max() / want.abs().max()).item()


def _resnet(name: str, **kwargs: object) -> nn.Module:
    return randomise_bn(models.create(name, img_size=SIZE, **kwargs), seed=1).eval()


def _pruned(scope: str) -> nn.Module:
    pruned, _ = prune_filters(_resnet("resnet50_reid", **NARROW), "hfp", 0.5, scope=scope)
    return pruned.eval()


@pytest.mark.parametrize(
    "make",
    [
        lambda: _resnet("resnet18_reid"),  # full width
        lambda: _resnet("resnet50_reid", **NARROW),
        lambda: _resnet("resnet18_bafd", num_classes=3, **NARROW),
        lambda: _pruned("internal"),  # narrower internal convs
        lambda: _pruned("bafd"),  # also branch scatter (index_add) and a narrower stem
    ],
    ids=["resnet18_reid", "resnet50_reid", "resnet18_bafd", "pruned_internal", "pruned_bafd"],
)
def test_folded_resnet_gives_the_same_embedding_without_batchnorm2d(make) -> None:  # type: ignore[no-untyped-def]
    model = make()
    images = torch.randn(2, 3, *SIZE)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.Identity) for m in folded.modules()) == n_bn
    assert all(m.bias is not None for m in folded.modules() if isinstance(m, nn.Conv2d))
    assert folded.arch == model.arch and folded.deploy_folded is True and not folded.training
    assert _max_rel_diff(_embed(folded, images), _embed(model, images)) < 1e-5


def test_pairs_follow_the_dataflow_of_resnet18() -> None:
    model = models.create("resnet18_reid", img_size=SIZE).eval()
    expected = [("conv1", "bn1")]
    for stage in (1, 2, 3, 4):
        for block in (0, 1):
            name = f"layer{stage}.{block}"
            expected += [(f"{name}.conv1", f"{name}.bn1"), (f"{name}.conv2", f"{name}.bn2")]
            if stage > 1 and block == 0:  # projection shortcut, called after the branch
                expected.append((f"{name}.downsample.0", f"{name}.downsample.1"))
    assert conv_bn_pairs(model) == expected


def test_the_bnneck_batchnorm1d_stays() -> None:
    folded = fold_batchnorm(_resnet("resnet18_reid", **NARROW))
    assert isinstance(folded.bottleneck, nn.BatchNorm1d)


def test_the_input_model_is_not_changed() -> None:
    model = _resnet("resnet18_reid", **NARROW).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batchnorm(model)
    assert model.training and isinstance(model.bn1, nn.BatchNorm2d) and model.conv1.bias is None
    assert not hasattr(model, "deploy_folded")
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


class _ConvReadTwice(nn.Module):
    """The conv output feeds the BN and the residual add: folding would change the add."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x: Tensor) -> ModelOutput:
        y = self.conv(x)
        return ModelOutput(embedding=(self.bn(y) + y).flatten(1))


class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x: Tensor) -> ModelOutput:
        if x.sum() > 0:  # control flow on tensor values: torch.fx cannot trace it
            x = -x
        return ModelOutput(embedding=self.bn(self.conv(x)).flatten(1))


def test_a_conv_read_twice_is_not_folded() -> None:
    model = randomise_bn(_ConvReadTwice(), seed=1).eval()
    folded = fold_batchnorm(model)
    assert conv_bn_pairs(model) == [] and isinstance(folded.bn, nn.BatchNorm2d)
    assert not hasattr(folded, "deploy_folded")


def test_an_untraceable_cnn_is_refused_with_the_way_out() -> None:
    with pytest.raises(CompressionError, match=r"_DataDependent: .*torch.fx cannot trace.*--no-deploy"):
        fold_batchnorm(_DataDependent())


def test_a_vit_comes_back_as_an_unchanged_eval_copy() -> None:
    model = models.create("vit_tiny_reid", img_size=[32, 16]).train()
    images = torch.randn(2, 3, 32, 16)
    folded = fold_batchnorm(model)
    assert folded is not model and model.training and not folded.training
    assert not hasattr(folded, "deploy_folded")
    assert torch.equal(_embed(folded, images), _embed(model.eval(), images))


def test_prepare_for_inference_is_folded_and_channels_last() -> None:
    model = _resnet("resnet18_reid", **NARROW)
    prepared = prepare_for_inference(model)
    assert prepared.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(2, 3, *SIZE)
    got = _embed(prepared, images.contiguous(memory_format=torch.channels_last))
    assert _max_rel_diff(got, _embed(model, images)) < 1e-5
    assert prepare_for_inference(model, channels_last=False).conv1.weight.is_contiguous()


def test_save_refuses_a_folded_model(tmp_path: Path) -> None:
    folded = fold_batchnorm(_resnet("resnet18_reid", **NARROW))
    with pytest.raises(CheckpointError, match=r"BatchNorm folded .* save the model before folding"):
        models.save(folded, tmp_path / "folded")
    assert not (tmp_path / "folded").exists()


def test_benchmark_speed_times_the_deploy_form_and_leaves_the_model_alone() -> None:
    model = models.create("resnet18_reid", img_size=[32, 16], stage_planes=[8, 8, 16, 16]).train()
    result = benchmark_speed(model, batch_size=2, warmup=1, iters=1, latency_iters=1, deploy=True)
    assert result["deploy"] is True and result["throughput_ips"] > 0 and result["input_size"] == [32, 16]
    assert model.training and isinstance(model.bn1, nn.BatchNorm2d)
    assert benchmark_speed(model, batch_size=2, warmup=1, iters=1, latency_iters=1)["deploy"] is False


def test_cli_measure_deploy_is_the_default_and_reported(tmp_path: Path) -> None:
    _register()
    model = models.create("resnet18_reid", img_size=[32, 16], stage_planes=[8, 8, 16, 16])
    model_dir = models.save(model, tmp_path / "tiny")
    args = ["measure", str(model_dir), "--batch-size", "2", "--min-time", "0.01", "--threads", "1"]
    for flags, deploy in (([], True), (["--deploy"], True), (["--no-deploy"], False)):
        out = tmp_path / "cost.json"
        result = CliRunner().invoke(app, [*args, *flags, "--json", str(out)])
        assert result.exit_code == 0, result.output
        row = json.loads(out.read_text())["models"][0]
        assert row["deploy"] is deploy and row["speed"]["deploy"] is deploy
        assert row["params"] == sum(p.numel() for p in model.parameters())  # counts: the saved model
        assert ("BN folded" in result.output) is deploy
