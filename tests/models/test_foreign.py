"""Foreign CNNs: how their base is named, built and reloaded (models.foreign)."""

from __future__ import annotations

import json

import pytest
import torch

import reidprune
from reidprune.errors import CheckpointError
from reidprune.models import build_foreign
from reidprune.models.foreign import save_foreign


def _out(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)))


@pytest.mark.slow
def test_an_unpruned_torchvision_model_round_trips_with_its_base_and_layer_shapes(tmp_path):
    model = build_foreign("torchvision:resnet18", num_classes=3)
    reidprune.save(model, tmp_path)
    description = json.loads((tmp_path / "model.json").read_text())
    assert description["base"] == "torchvision:resnet18"
    assert description["kwargs"] == {"num_classes": 3}
    assert description["layers"]["layer1.0.conv1"] == {"in": 64, "out": 64, "groups": 1}
    assert description["layers"]["fc"] == {"in": 512, "out": 3}
    assert (tmp_path / "weights.safetensors").is_file()
    assert torch.equal(_out(reidprune.load(tmp_path)), _out(model))


def test_a_sliced_layer_is_rebuilt_at_its_saved_shape(tmp_path):
    model = build_foreign("torchvision:resnet18", num_classes=3)
    small, _ = reidprune.compress.prune_filters(model, "hfp", 0.75, check_size=(32, 32))
    reidprune.save(small, tmp_path)
    back = reidprune.load(tmp_path)
    assert back.layer1[0].conv1.weight.shape == (16, 64, 3, 3)
    assert back.layer1[0].bn1.running_mean.shape == (16,)
    assert back.layer1[0].conv2.in_channels == 16
    assert torch.equal(_out(back), _out(small))


def test_a_users_own_factory_needs_allow_import_to_build_and_to_load(tmp_path):
    with pytest.raises(CheckpointError, match="allow_import=True"):
        build_foreign("torchvision.models:resnet18", num_classes=3)
    model = build_foreign("torchvision.models:resnet18", allow_import=True, num_classes=3)
    reidprune.save(model, tmp_path)
    with pytest.raises(CheckpointError, match="allow_import=True"):
        reidprune.load(tmp_path)
    assert torch.equal(_out(reidprune.load(tmp_path, allow_import=True)), _out(model))


def test_weights_arguments_and_bad_bases_are_refused():
    with pytest.raises(CheckpointError, match="never downloaded"):
        build_foreign("timm:resnet18", pretrained=True)
    with pytest.raises(CheckpointError, match="expected 'library:name'"):
        build_foreign("resnet18")
    with pytest.raises(CheckpointError, match="does not say how to build its base"):
        save_foreign(torch.nn.Conv2d(3, 4, 1), "unused")


def test_a_saved_layer_that_the_base_lacks_is_named(tmp_path):
    reidprune.save(build_foreign("torchvision:resnet18", num_classes=3), tmp_path)
    description = json.loads((tmp_path / "model.json").read_text())
    description["layers"]["layer9.conv"] = {"in": 1, "out": 1, "groups": 1}
    (tmp_path / "model.json").write_text(json.dumps(description))
    with pytest.raises(CheckpointError, match=r"layer 'layer9\.conv' does not exist"):
        reidprune.load(tmp_path)
