"""An HFP small-model file (the BAFD seed's L1_train.py net_last.pth) rebuilt with its original."""

from __future__ import annotations

import pytest
import torch

from reidprune.compress.filters import prune_filters
from reidprune.compress.filters.recover import create_pruned_from_checkpoint
from reidprune.models import create
from reidprune.models.checkpoint_io import CheckpointError

ARCH = {"img_size": [32, 16], "stage_planes": [8, 8, 16, 16]}
# layer1.0.conv1's 8 filters get these L1 norms: at rate 0.5 HFP keeps the four largest (8, 7, 6, 5)
L1_NORMS = [3.0, 8.0, 1.0, 6.0, 2.0, 7.0, 5.0, 4.0]


def original_file(path, seed: int = 0) -> torch.nn.Module:
    """An 'ImageNet' backbone saved with torchvision's names and 1000-way fc; returns it with a head."""
    torch.manual_seed(seed)
    model = create("resnet18_bafd", num_classes=5, **ARCH)
    with torch.no_grad():
        weight = model.layer1[0].conv1.weight
        weight /= weight.abs().sum((1, 2, 3), keepdim=True)
        weight *= torch.tensor(L1_NORMS).view(-1, 1, 1, 1)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    torch.save({**state, "fc.weight": torch.randn(1000, 16), "fc.bias": torch.zeros(1000)}, path)
    return model


def seed_small_file(path, original: torch.nn.Module) -> torch.nn.Module:
    """HFP at rate 0.5 on the seed's layer list, then 'fine-tuning' (every weight moved by about 5 %),
    saved as the seed saves ResNet_small: no kept indices, plus its unused 1000-way fc."""
    small, _ = prune_filters(original, "hfp", 0.5, scope="bafd")
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in small.parameters():
            param += 0.05 * param.std() * torch.randn(param.shape, generator=generator)
    torch.save({**small.state_dict(), "fc.weight": torch.randn(1000, 16), "fc.bias": torch.zeros(1000)}, path)
    return small


def test_hfp_small_file_and_its_original_give_the_extracted_model(tmp_path):
    original = original_file(tmp_path / "resnet18.pth")
    tuned = seed_small_file(tmp_path / "net_last.pth", original)
    small, plan = create_pruned_from_checkpoint(
        "resnet18_bafd", tmp_path / "net_last.pth", original=tmp_path / "resnet18.pth", rate=0.5, **ARCH
    )
    assert plan.method == "filter-hfp"
    assert plan.details["layers"]["layer1.0.conv1"]["kept"] == [1, 3, 5, 6]
    assert plan.details["layers"]["layer2.0.conv2"]["kept"] == tuned.arch.branch_channels[2]
    assert small.arch == tuned.arch
    assert plan.details["agreement"] == 1.0
    ours, theirs = small.state_dict(), tuned.state_dict()
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)
    images = torch.randn(2, 3, 32, 16)
    small.eval(), tuned.eval()
    with torch.no_grad():
        assert torch.equal(small(images).embedding, tuned(images).embedding)


def test_hfp_small_file_with_another_original_is_refused(tmp_path):
    seed_small_file(tmp_path / "net_last.pth", original_file(tmp_path / "resnet18.pth", seed=0))
    original_file(tmp_path / "other.pth", seed=1)
    with pytest.raises(CheckpointError, match="probably not the one this small model was pruned from"):
        create_pruned_from_checkpoint(
            "resnet18_bafd", tmp_path / "net_last.pth", original=tmp_path / "other.pth", **ARCH
        )


def test_hfp_small_file_with_another_rate_is_refused(tmp_path):
    seed_small_file(tmp_path / "net_last.pth", original_file(tmp_path / "resnet18.pth"))
    with pytest.raises(
        CheckpointError, match=r"layer1\.0\.conv1 keeps 4 of 8 filters; HFP at rate 0\.25 keeps 6"
    ):
        create_pruned_from_checkpoint(
            "resnet18_bafd", tmp_path / "net_last.pth", original=tmp_path / "resnet18.pth", rate=0.25, **ARCH
        )


@pytest.mark.slow
def test_models_extract_cli_rebuilds_a_full_width_hfp_small_model(tmp_path):
    from typer.testing import CliRunner

    from reidprune import models
    from reidprune.cli import _register, app

    torch.manual_seed(0)
    original = create("resnet18_bafd", num_classes=5)  # the seed's widths: the CLI takes no kwargs
    state = {k: v for k, v in original.state_dict().items() if not k.startswith("classifier.")}
    torch.save(state, tmp_path / "resnet18.pth")
    tuned = seed_small_file(tmp_path / "net_last.pth", original)
    _register()
    args = [
        "models",
        "extract",
        "resnet18_bafd",
        str(tmp_path / "net_last.pth"),
        "--out",
        str(tmp_path / "small"),
    ]
    result = CliRunner().invoke(app, [*args, "--original", str(tmp_path / "resnet18.pth"), "--rate", "0.5"])
    assert result.exit_code == 0, result.output
    small = models.load(tmp_path / "small")
    assert small.arch == tuned.arch
    assert all(torch.equal(v, tuned.state_dict()[k]) for k, v in small.state_dict().items())
