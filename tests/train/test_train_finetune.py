"""PM-ViT fine-tuning options: mixup / cutmix through timm's Mixup, and frozen parameters."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import pk_loaders, tiny_model

import reidprune.train.step as step_module
from reidprune.errors import TrainingError
from reidprune.models import create
from reidprune.train import fit
from reidprune.train.config import TrainConfig
from reidprune.train.engine import seed_everything
from reidprune.train.finetune import freeze, make_mixup

timm_data = pytest.importorskip("timm.data")

MIX = dict(mixup=0.8, cutmix=1.0, mixup_prob=1.0, mixup_switch_prob=0.5, label_smoothing=0.1)


def cfg(**changes) -> TrainConfig:
    base = dict(epochs=1, optimizer="sgd", lr=0.05, warmup_epochs=0, progress=False, triplet_weight=0.0)
    return TrainConfig(**{**base, **changes})


def first_batch() -> dict[str, torch.Tensor]:
    loader = pk_loaders().train
    loader.batch_sampler.set_epoch(0)
    return next(iter(loader))


def test_a_mixup_step_trains_on_the_images_and_targets_of_timms_mixup(tmp_path: Path, monkeypatch) -> None:
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    model = tiny_model()
    model.register_forward_pre_hook(
        lambda _, args: seen.append((args[0].clone(), None)) if model.training else None
    )
    compute = step_module.compute_losses

    def record(output, labels, config, teacher=None):
        seen[-1] = (seen[-1][0], labels.clone())
        return compute(output, labels, config, teacher)

    monkeypatch.setattr(step_module, "compute_losses", record)
    fit(model, pk_loaders(), cfg(max_steps_per_epoch=1, **MIX), tmp_path, seed=3)

    batch = first_batch()
    seed_everything(3)  # the engine's seed for rank 0; timm's Mixup draws from NumPy's generator
    mixup = timm_data.Mixup(
        mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, label_smoothing=0.1, num_classes=6
    )
    images, targets = mixup(batch["image"].clone(), batch["label"])
    assert torch.equal(seen[0][0], images)
    assert torch.equal(seen[0][1], targets)
    assert targets.shape == (8, 6) and not torch.equal(images, batch["image"])  # really mixed


def test_soft_targets_take_no_second_label_smoothing() -> None:
    logits = [torch.randn(4, 6)]
    soft = torch.full((4, 6), 0.02).index_fill_(1, torch.tensor([2]), 0.9)
    expected = torch.sum(-soft * torch.log_softmax(logits[0], dim=1), dim=1).mean()
    from reidprune.train.losses import id_loss

    assert torch.allclose(id_loss(logits, soft, label_smoothing=0.1), expected)


def test_mixup_refuses_the_triplet_loss_and_odd_batches(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"set train\.triplet_weight=0"):
        make_mixup(cfg(triplet_weight=1.0, **MIX), tiny_model())
    loaders = pk_loaders(p=3, k=1, num_ids=6)  # 3 images a batch
    with pytest.raises(TrainingError, match="need an even batch, got 3 images"):
        fit(tiny_model(), loaders, cfg(**MIX), tmp_path)


def test_mixup_without_timm_says_how_to_install_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "timm.data", None)  # import fails as when timm is missing
    with pytest.raises(TrainingError, match=r"pip install 'reidprune\[train\]'"):
        make_mixup(cfg(**MIX), tiny_model())


def test_frozen_parameters_are_bit_identical_after_an_epoch_while_the_others_train(tmp_path: Path) -> None:
    model = tiny_model()
    before = copy.deepcopy(model.state_dict())
    result = fit(model, pk_loaders(), cfg(triplet_weight=1.0, freeze=["body.1", "neck"]), tmp_path)
    after = result.model.state_dict()
    for key in ("body.1.weight", "body.1.bias", "neck.weight", "neck.bias"):
        assert torch.equal(after[key], before[key])
    for key in ("body.2.weight", "classifiers.0.weight"):
        assert not torch.equal(after[key], before[key])
    optimised = {id(p) for group in result.optimizer.param_groups for p in group["params"]}
    assert id(result.model.body[1].weight) not in optimised and id(result.model.neck.weight) not in optimised


def test_freeze_prefixes_match_whole_module_names_also_under_the_backbone() -> None:
    vit = create("vit_tiny_reid", num_classes=4, img_size=[32, 16])
    trainable = {n: p.requires_grad for n, p in vit.named_parameters()}  # the BNNeck bias is fixed already
    frozen = freeze(vit, ["patch_embed", "blocks.1"])
    assert frozen == sorted(
        n for n, _ in vit.named_parameters() if n.startswith(("backbone.patch_embed.", "backbone.blocks.1."))
    )
    assert all(not p.requires_grad for n, p in vit.named_parameters() if n in frozen)
    assert all(p.requires_grad == trainable[n] for n, p in vit.named_parameters() if n not in frozen)


def test_a_freeze_prefix_that_matches_nothing_is_named(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"train\.freeze: 'blocks\.0' names no parameter of TinyReID"):
        fit(tiny_model(), pk_loaders(), cfg(freeze=["body", "blocks.0"]), tmp_path)
