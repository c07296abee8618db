"""Parameter groups, per-step schedules, and schedules that follow the optimiser actually in use."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from reidprune.errors import TrainingError
from reidprune.train.config import TrainConfig
from reidprune.train.optim import LRSchedule, check_scheduler, make_optimizer, make_scheduler, param_groups


class Embedder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


def _names(model: nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_param_groups_split_decay_norms_and_biases() -> None:
    model = Embedder()
    cfg = TrainConfig(optimizer="adamw", lr=0.1, weight_decay=0.05, bias_lr_factor=2.0)
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    assert _names(model, groups["decay"]) == {"proj.weight"}
    assert _names(model, groups["no_decay"]) == {"pos_embed", "norm.weight"}
    assert _names(model, groups["bias"]) == {"proj.bias", "norm.bias"}
    assert groups["decay"]["weight_decay"] == 0.05
    assert groups["no_decay"]["weight_decay"] == 0.0  # AdamW default: no decay on norms / embeddings
    assert groups["bias"]["lr"] == pytest.approx(0.2)
    # SGD (TransReID) decays biases and norms too, unless told otherwise
    sgd = {g["name"]: g for g in param_groups(model, TrainConfig(optimizer="sgd", weight_decay=1e-4))}
    assert sgd["bias"]["weight_decay"] == 1e-4
    explicit = TrainConfig(optimizer="sgd", weight_decay=1e-4, weight_decay_norm_bias=0.0)
    assert all(g["weight_decay"] == 0.0 for g in param_groups(model, explicit) if g["name"] != "decay")


def test_make_optimizer_kinds() -> None:
    model = Embedder()
    sgd = make_optimizer(model, TrainConfig(optimizer="sgd", momentum=0.8, nesterov=True))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.8 and sgd.defaults["nesterov"]
    assert isinstance(make_optimizer(model, TrainConfig(optimizer="adamw")), torch.optim.AdamW)
    with pytest.raises(TrainingError, match=r"train\.optimizer='lamb'"):
        make_optimizer(model, TrainConfig(optimizer="lamb"))


def test_cosine_schedule_with_linear_warmup() -> None:
    s = LRSchedule("cosine", total_steps=10, warmup_steps=2, warmup_factor=0.1, min_factor=0.0)
    assert [s(0), s(1), s(2)] == pytest.approx([0.1, 0.55, 1.0])
    assert s(6) == pytest.approx(0.5)  # half-way through the 8 cosine steps
    assert s(10) == pytest.approx(0.0, abs=1e-12)
    floor = LRSchedule("cosine", total_steps=10, warmup_steps=0, min_factor=0.2)
    assert floor(10) == pytest.approx(0.2)


def test_step_and_constant_schedules() -> None:
    step = LRSchedule("step", total_steps=30, milestone_steps=[10, 20], gamma=0.1)
    assert [step(9), step(10), step(19), step(20)] == pytest.approx([1.0, 0.1, 0.1, 0.01])
    const = LRSchedule("constant", total_steps=30, warmup_steps=4, warmup_factor=0.0)
    assert [const(0), const(2), const(4), const(29)] == pytest.approx([0.0, 0.5, 1.0, 1.0])


def test_schedule_is_per_step_from_epoch_config() -> None:
    model = Embedder()
    cfg = TrainConfig(
        optimizer="sgd", lr=1.0, epochs=4, warmup_epochs=1, warmup_factor=0.5, min_lr_factor=0.0
    )
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, steps_per_epoch=2)  # warm-up 2 steps, cosine over 6
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.5, 0.75] + [0.5 * (1 + math.cos(math.pi * k / 6)) for k in range(6)]
    assert lrs == pytest.approx(expected)


def test_fresh_optimizer_gets_a_fresh_warmup() -> None:
    cfg = TrainConfig(optimizer="sgd", lr=1.0, epochs=2, warmup_epochs=1, warmup_factor=0.1)
    model = Embedder()
    old_opt = make_optimizer(model, cfg)
    old_sched = make_scheduler(old_opt, cfg, steps_per_epoch=5)
    for _ in range(7):
        old_opt.step()
        old_sched.step()
    assert old_opt.param_groups[0]["lr"] < 1.0  # decaying
    # a pruning round: new model, new optimiser, new schedule -> starts again at the warm-up
    pruned = Embedder()
    new_opt = make_optimizer(pruned, cfg)
    new_sched = make_scheduler(new_opt, cfg, steps_per_epoch=5)
    assert new_sched.optimizer is new_opt
    assert new_opt.param_groups[0]["lr"] == pytest.approx(0.1)
    assert old_opt.param_groups[0]["lr"] != pytest.approx(0.1)  # the old one is untouched
    check_scheduler(new_opt, new_sched, pruned)
    with pytest.raises(TrainingError, match="bound to a different optimiser"):
        check_scheduler(new_opt, old_sched, pruned)
    with pytest.raises(TrainingError, match="not in the model being trained"):
        check_scheduler(old_opt, old_sched, pruned)


def test_reused_optimizer_restarts_from_its_original_lr() -> None:
    cfg = TrainConfig(optimizer="sgd", lr=1.0, epochs=1, warmup_epochs=0, min_lr_factor=0.0)
    model = Embedder()
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, steps_per_epoch=4)
    for _ in range(4):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    make_scheduler(opt, cfg, steps_per_epoch=4)
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)


def test_step_schedule_needs_milestones() -> None:
    opt = make_optimizer(Embedder(), TrainConfig())
    with pytest.raises(TrainingError, match="step_milestones"):
        make_scheduler(opt, TrainConfig(scheduler="step"), steps_per_epoch=3)


def test_prefix_tokens_of_converted_vits_are_not_decayed() -> None:
    # DeiT's distillation token and the register tokens are additive embeddings like cls_token
    model = nn.Module()
    for name in ("cls_token", "dist_token", "reg_token"):
        setattr(model, name, nn.Parameter(torch.zeros(1, 2 if name == "reg_token" else 1, 4)))
    model.proj = nn.Linear(4, 4, bias=False)
    groups = {g["name"]: g for g in param_groups(model, TrainConfig(optimizer="adamw", weight_decay=0.05))}
    assert _names(model, groups["no_decay"]) == {"cls_token", "dist_token", "reg_token"}
    assert _names(model, groups["decay"]) == {"proj.weight"}
