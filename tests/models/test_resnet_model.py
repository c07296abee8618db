"""ResNet family: torchvision equivalence, per-layer widths, heads, registry entries."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torchvision

from reidprune.config import ConfigError
from reidprune.models import build, create, list_models
from reidprune.models.resnet import ResNetArch, block_names, feature_dim


@pytest.mark.parametrize(("depth", "params"), [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032)])
def test_classification_entries_have_torchvision_parameter_counts(depth, params):
    model = create(f"resnet{depth}")
    assert sum(p.numel() for p in model.parameters()) == params
    assert list(model.state_dict()) == list(getattr(torchvision.models, f"resnet{depth}")().state_dict())


@pytest.mark.parametrize("depth", [18, 50])
def test_outputs_equal_torchvision_after_loading_its_state_dict(depth):
    theirs = getattr(torchvision.models, f"resnet{depth}")().eval()
    ours = create(f"resnet{depth}").eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = ours(images)
        assert torch.allclose(out.logits[0], theirs(images), atol=1e-5, rtol=0)
    assert out.embedding.shape == (2, feature_dim(ours.arch))


def test_reid_entries_default_to_256x128_last_stride_1_and_bnneck():
    arch = create("resnet50_reid").arch
    assert arch.img_size == [256, 128] and arch.last_stride == 1 and arch.head == "bnneck"
    assert arch.num_cameras == 0
    model = create("resnet18_reid", img_size=[64, 32])
    assert model.forward_features(torch.randn(1, 3, 64, 32)).shape == (1, 512, 4, 2)  # stride 16


def test_bnneck_head_train_and_eval_outputs():
    model = create("resnet18_reid", img_size=[64, 32], num_classes=5)
    assert not model.bottleneck.bias.requires_grad  # BoT: neck bias frozen
    assert model.classifier.bias is None
    images = torch.randn(3, 3, 64, 32)
    train = model.train()(images, camids=torch.zeros(3, dtype=torch.long))
    assert [t.shape for t in train.logits] == [(3, 5)]
    assert [t.shape for t in train.features] == [(3, 512)]
    model.eval()
    with torch.no_grad():
        out = model(images)
        pooled = torch.flatten(model.avgpool(model.forward_features(images)), 1)
    assert out.logits == [] and out.features == []
    assert torch.allclose(out.embedding, model.bottleneck(pooled))


def test_bafd_head_is_the_seeds_classblock_with_unit_norm_features():
    model = create("resnet18_bafd", img_size=[64, 32], num_classes=751)
    keys = [k for k in model.state_dict() if k.startswith("classifier.")]
    assert keys == [
        "classifier.add_block.0.weight",
        "classifier.add_block.0.bias",
        "classifier.add_block.0.running_mean",
        "classifier.add_block.0.running_var",
        "classifier.add_block.0.num_batches_tracked",
        "classifier.classifier.0.weight",
        "classifier.classifier.0.bias",
    ]
    assert model.arch.last_stride == 2  # the seed keeps the torchvision stride
    images = torch.randn(2, 3, 64, 32)
    model.eval()
    with torch.no_grad():
        out = model(images)
        pooled = torch.flatten(model.avgpool(model.forward_features(images)), 1)
        bn = model.classifier.add_block(pooled)
    assert torch.allclose(out.embedding, bn / (bn.norm(dim=1, keepdim=True) + 1e-8))
    assert torch.allclose(out.embedding.norm(dim=1), torch.ones(2), atol=1e-5)
    train = model.train()(images)
    # the seed classifies the normalised feature
    assert torch.allclose(train.logits[0], model.classifier.classifier(train.embedding))


def test_layumi_bottleneck_variant_of_the_bafd_head():
    model = create("resnet50_bafd", img_size=[64, 32], num_classes=10, bottleneck_dim=512)
    names = [n for n, _ in model.classifier.add_block.named_children()]
    assert names == ["0", "1", "2"]  # Linear, BatchNorm1d, Dropout(0.5)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 32)).embedding.shape == (2, 512)


def test_per_layer_widths_build_a_narrower_network():
    base = create("resnet50_reid", img_size=[64, 32]).arch
    mids = [[16, 8]] * sum(base.layers)
    arch = dataclasses.replace(base, mid_widths=mids, stem_width=32)
    model = build(arch)
    assert model.conv1.weight.shape[0] == 32
    assert model.layer1[0].downsample[0].weight.shape[1] == 32
    assert model.layer3[2].conv2.weight.shape == (8, 16, 3, 3)
    assert model.layer3[2].conv3.weight.shape == (1024, 8, 1, 1)
    assert model(torch.randn(2, 3, 64, 32)).embedding.shape == (2, 2048)


def test_branch_channels_add_the_pruned_branch_into_its_residual_channels():
    base = create("resnet18_reid", img_size=[32, 16], stage_planes=[4, 8, 8, 8]).arch
    branches = [[] for _ in block_names(base)]
    branches[1] = [0, 2]  # layer1.1 writes residual channels 0 and 2 only
    model = build(dataclasses.replace(base, branch_channels=branches)).eval()
    block = model.layer1[1]
    assert block.conv2.weight.shape[0] == 2
    x = torch.randn(1, 4, 8, 4)
    with torch.no_grad():
        branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
        expected = x.clone()
        expected[:, [0, 2]] += branch
        assert torch.allclose(block(x), torch.relu(expected))


def test_invalid_architectures_are_refused_with_the_field_named():
    base = create("resnet18_reid").arch
    with pytest.raises(ConfigError, match="mid_widths"):
        build(dataclasses.replace(base, mid_widths=[[64]]))
    with pytest.raises(ConfigError, match="stem_width"):
        build(dataclasses.replace(base, stem_width=32))  # BasicBlock: the stem is the residual stream
    with pytest.raises(ConfigError, match="branch_channels"):
        build(dataclasses.replace(base, branch_channels=[[3, 1]] + [[]] * 7))
    with pytest.raises(ConfigError, match="head"):
        build(dataclasses.replace(base, head="mlp"))
    with pytest.raises(ConfigError, match="num_clases"):
        create("resnet18_reid", num_clases=3)


def test_registry_lists_every_resnet_entry():
    names = set(list_models())
    for depth in (18, 34, 50):
        assert {f"resnet{depth}", f"resnet{depth}_reid", f"resnet{depth}_bafd"} <= names


def test_arch_round_trips_through_a_dict():
    arch = create("resnet50_reid", num_classes=751).arch
    assert isinstance(arch, ResNetArch)
    assert build(dataclasses.asdict(arch)).arch == arch
