"""Importing torchvision and BAFD ResNet checkpoints (with and without zero filters)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from reidprune.compress.filters import prunable_convs
from reidprune.compress.filters.criteria import select_sfp
from reidprune.compress.filters.recover import create_pruned_from_checkpoint
from reidprune.compress.filters.targets import zero_filters
from reidprune.models import create, create_from_checkpoint, load_checkpoint
from reidprune.models.checkpoint_io import CheckpointError

SMALL = [64, 32]


def eval_out(model: torch.nn.Module, images: torch.Tensor):
    model.eval()
    with torch.no_grad():
        return model(images)


def bafd_checkpoint(path, num_classes: int = 5, zero_half: bool = False) -> torch.nn.Module:
    """Write a file shaped like the BAFD seed's ft_net state dict; return the model it came from."""
    model = create("resnet18_bafd", img_size=SMALL, num_classes=num_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.bias.normal_(0, 0.1)
    if zero_half:  # what BAFD's last epoch leaves: zero conv slices with zero BN gamma and beta
        for target in prunable_convs(model, "bafd"):
            weight = model.get_submodule(target.conv).weight
            zero_filters(model, target, select_sfp(weight, int(weight.shape[0] * 0.75)))
    state = {}
    for key, value in model.state_dict().items():
        state[key if key.startswith("classifier.") else f"model.{key}"] = value
    state["model.fc.weight"] = torch.randn(1000, 512)  # the seed's unused ImageNet classifier
    state["model.fc.bias"] = torch.zeros(1000)
    torch.save(state, path)
    return model


def test_torchvision_checkpoint_loads_and_matches(tmp_path):
    theirs = torchvision.models.resnet18().eval()
    torch.save(theirs.state_dict(), tmp_path / "resnet18.pth")
    ours = create("resnet18")
    result = load_checkpoint(ours, tmp_path / "resnet18.pth")
    assert result.format == "torchvision" and result.initialised == []
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(eval_out(ours, images).logits[0], theirs(images), atol=1e-5, rtol=0)


def test_imagenet_backbone_into_a_reid_model_initialises_only_the_head(tmp_path):
    theirs = torchvision.models.resnet50()
    state = {k: v for k, v in theirs.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": state}, tmp_path / "old_torchvision.pth")  # old files lack the counters
    ours = create_from_checkpoint("resnet50_reid", tmp_path / "old_torchvision.pth", num_classes=751)
    assert ours.arch.num_classes == 751 and ours.arch.last_stride == 1
    assert torch.equal(ours.layer4[2].conv3.weight, theirs.layer4[2].conv3.weight)
    result = load_checkpoint(ours, tmp_path / "old_torchvision.pth")
    assert {"bottleneck.weight", "classifier.weight", "bn1.num_batches_tracked"} <= set(result.initialised)


def test_bafd_checkpoint_loads_with_its_classifier_and_drops_the_unused_fc(tmp_path):
    source = bafd_checkpoint(tmp_path / "net_last.pth", num_classes=5)
    ours = create_from_checkpoint("resnet18_bafd", tmp_path / "net_last.pth", img_size=SMALL)
    assert ours.arch.num_classes == 5 and not hasattr(ours, "fc")
    images = torch.randn(2, 3, *SMALL)
    assert torch.equal(eval_out(ours, images).embedding, eval_out(source, images).embedding)


def test_bafd_checkpoint_with_zero_filters_yields_the_small_model(tmp_path):
    source = bafd_checkpoint(tmp_path / "net_last.pth", zero_half=True)
    small, plan = create_pruned_from_checkpoint("resnet18_bafd", tmp_path / "net_last.pth", img_size=SMALL)
    assert small.layer2[0].conv1.weight.shape[0] == 128 - 96
    assert small.layer2[0].conv2.weight.shape[:2] == (32, 32)
    assert len(small.arch.branch_channels[2]) == 32  # layer2.0's branch writes 32 of 128 channels
    assert plan.method == "filter-zeros" and plan.details["removed_filters"] == 2880
    images = torch.randn(2, 3, *SMALL)
    assert torch.allclose(eval_out(small, images).embedding, eval_out(source, images).embedding, atol=1e-5)


def test_a_small_model_without_its_channel_indices_is_refused(tmp_path):
    model = create("resnet18_bafd", img_size=SMALL, num_classes=5)
    state = {f"model.{k}" if not k.startswith("classifier.") else k: v for k, v in model.state_dict().items()}
    state["model.layer1.0.conv2.weight"] = state["model.layer1.0.conv2.weight"][:16]
    for key in ("weight", "bias", "running_mean", "running_var"):
        state[f"model.layer1.0.bn2.{key}"] = state[f"model.layer1.0.bn2.{key}"][:16]
    torch.save(state, tmp_path / "hfp_small.pth")
    with pytest.raises(CheckpointError, match=r"layer1\.0\.conv2\.weight has 16 of 64"):
        create_from_checkpoint("resnet18_bafd", tmp_path / "hfp_small.pth", img_size=SMALL)


def test_a_checkpoint_of_another_depth_is_refused(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match="basic ResNet with blocks per stage"):
        create_from_checkpoint("resnet50", tmp_path / "r18.pth")


def test_foreign_keys_are_refused_with_a_sample(tmp_path):
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a ResNet checkpoint"):
        load_checkpoint(create("resnet18"), tmp_path / "other.pth")
