"""The training engine on a tiny model: logs, teacher, NaN, validation-based selection, AMP."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from train_helpers import PatternIds, TinyReID, pk_loaders, tiny_model

import reidprune.evaluate
from reidprune.errors import TrainingError
from reidprune.train import BaseCallback, fit, make_optimizer
from reidprune.train.config import TrainConfig
from reidprune.train.engine import seed_everything
from reidprune.train.log import read_log
from reidprune.train.losses import compute_losses
from reidprune.train.teacher import is_frozen


def cfg(**changes) -> TrainConfig:
    base = dict(
        epochs=2, optimizer="sgd", lr=0.05, warmup_epochs=1, warmup_factor=0.1, progress=False, log_every=1
    )
    base.update(changes)
    return TrainConfig(**base)


def test_fit_trains_and_logs_every_term(tmp_path: Path) -> None:
    model = tiny_model()
    before = copy.deepcopy(model.state_dict())
    result = fit(model, pk_loaders(), cfg(), tmp_path)
    assert result.steps == 6 and result.epochs == 2  # 3 PK batches per epoch
    assert not torch.equal(before["body.1.weight"], result.model.state_dict()["body.1.weight"])
    assert not result.model.training
    records = read_log(tmp_path / "train_log.jsonl")
    steps = [r for r in records if r["event"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    assert {"id", "triplet", "loss", "lr", "epoch", "images_per_s"} <= set(steps[0])
    # the per-step schedule: warm-up starts at lr * warmup_factor
    assert steps[0]["lr"] == pytest.approx(0.005)
    assert [r["epoch"] for r in records if r["event"] == "epoch"] == [0, 1]
    assert (tmp_path / "checkpoints" / "last.pt").is_file()
    assert result.best_metric is None  # no validation split, no selection


def test_engine_steps_equal_a_plain_training_loop(tmp_path: Path) -> None:
    """zero_grad / forward / loss / backward / step, epoch by epoch: nothing else touches the weights."""
    c = cfg(epochs=3, scheduler="constant", warmup_epochs=0)
    result = fit(tiny_model(), pk_loaders(), c, tmp_path, seed=4)
    model, loaders = tiny_model().train(), pk_loaders()
    optimizer = make_optimizer(model, c)
    seed_everything(4)
    for epoch in range(3):
        loaders.train.batch_sampler.set_epoch(epoch)
        for batch in loaders.train:
            loss = compute_losses(model(batch["image"], camids=batch["camid"]), batch["label"], c)["loss"]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for key, value in model.state_dict().items():
        assert torch.equal(value, result.model.state_dict()[key]), key


class TrainTheTeacher(BaseCallback):
    """Misbehaves: puts the teacher back in train mode after every step."""

    def on_step_end(self, engine) -> None:
        engine.teacher.train()
        self.seen_grad = any(p.grad is not None for p in engine.teacher.parameters())


def test_teacher_stays_frozen_deterministic_and_gradient_free(tmp_path: Path) -> None:
    teacher = tiny_model(seed=1)
    teacher.train()
    snapshot = copy.deepcopy(teacher.state_dict())
    spy = TrainTheTeacher()
    fit(
        tiny_model(),
        pk_loaders(),
        cfg(distill="soft", distill_alpha=1.0, embed_distill="cosine", relation_distill_weight=1.0),
        tmp_path,
        teacher=teacher,
        callbacks=[spy],
    )
    assert not spy.seen_grad
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    # BN running statistics would have moved had the teacher run in train mode after the callback
    for key, value in snapshot.items():
        assert torch.equal(value, teacher.state_dict()[key]), key
    assert is_frozen(teacher)
    records = [r for r in read_log(tmp_path / "train_log.jsonl") if r["event"] == "step"]
    assert {"kd", "embed_kd", "relation_kd"} <= set(records[0])


def test_teacher_with_other_classes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"\(8, 6\).*\(8, 9\)"):
        fit(tiny_model(), pk_loaders(), cfg(distill="hard"), tmp_path, teacher=tiny_model(num_classes=9))


def test_distillation_without_teacher_fails_before_training(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="no teacher"):
        fit(tiny_model(), pk_loaders(), cfg(distill="soft"), tmp_path)


class Poison(BaseCallback):
    def on_step_end(self, engine) -> None:
        if engine.step == 2:
            with torch.no_grad():
                engine.model.classifiers[0].weight.fill_(float("nan"))


def test_nan_loss_names_step_term_and_lr(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match=r"step 3 .*term 'id' = nan; last lr = "):
        fit(tiny_model(), pk_loaders(), cfg(), tmp_path, callbacks=[Poison()])


def test_empty_data_set_is_a_clear_error(tmp_path: Path) -> None:
    empty = PatternIds(num_ids=0)
    loaders = SimpleNamespace(train=DataLoader(empty, batch_size=4))
    with pytest.raises(TrainingError, match="yields no batches"):
        fit(tiny_model(), loaders, cfg(), tmp_path)


def test_best_checkpoint_is_chosen_on_validation_never_on_test(tmp_path: Path, monkeypatch) -> None:
    val_query, val_gallery = object(), object()
    test_query, test_gallery = object(), object()
    scores = iter([10.0, 30.0, 20.0])
    weights_at_epoch = []

    def fake_evaluate_reid(model, query, gallery, eval_cfg):
        assert query is val_query and gallery is val_gallery, "validation must not touch the test split"
        assert not model.training
        weights_at_epoch.append(copy.deepcopy(model.state_dict()))
        return {"mAP": next(scores), "rank1": 50.0, "mINP": 1.0}

    monkeypatch.setattr(reidprune.evaluate, "evaluate_reid", fake_evaluate_reid, raising=False)
    loaders = pk_loaders(val_query=val_query, val_gallery=val_gallery, query=test_query, gallery=test_gallery)
    result = fit(tiny_model(), loaders, cfg(epochs=3), tmp_path)
    assert (result.metric_name, result.best_metric, result.best_epoch) == ("mAP", 30.0, 1)
    assert result.last_metrics["mAP"] == 20.0
    assert result.best_path == tmp_path / "best"
    best = reidprune.models.load(result.best_path)  # the own format, rebuilt from model.json
    for key, value in weights_at_epoch[1].items():
        assert torch.equal(best.state_dict()[key], value), key
    vals = [r for r in read_log(tmp_path / "train_log.jsonl") if r["event"] == "val"]
    assert [v["mAP"] for v in vals] == [10.0, 30.0, 20.0]


def test_models_without_arch_save_best_weights_as_safetensors(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(
        reidprune.evaluate, "evaluate_classification", lambda model, loader: {"top1": 1.0}, raising=False
    )
    model = tiny_model()
    del model.arch
    result = fit(model, pk_loaders(val=object()), cfg(epochs=1), tmp_path)
    assert result.metric_name == "top1" and result.best_path == tmp_path / "best.safetensors"
    assert set(load_file(result.best_path)) == set(model.state_dict())


def test_bf16_autocast_on_cpu_and_gradient_clipping(tmp_path: Path) -> None:
    result = fit(tiny_model(), pk_loaders(), cfg(epochs=1, amp="bf16", grad_clip=0.5), tmp_path)
    assert result.model.body[1].weight.dtype == torch.float32  # autocast, weights stay fp32
    steps = [r for r in read_log(tmp_path / "train_log.jsonl") if r["event"] == "step"]
    assert all(r["grad_norm"] >= 0 for r in steps)


def test_fp16_needs_a_gpu(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="fp16 needs a CUDA device"):
        fit(tiny_model(), pk_loaders(), cfg(amp="fp16"), tmp_path, device="cpu")


def test_multi_head_model_averages_heads(tmp_path: Path) -> None:
    result = fit(TinyReID(heads=3), pk_loaders(), cfg(epochs=1), tmp_path)
    assert result.steps == 3


def test_progress_bar_reports_epochs(tmp_path: Path, capsys) -> None:
    fit(tiny_model(), pk_loaders(), cfg(progress=True), tmp_path)
    err = capsys.readouterr().err
    assert "epoch 1/2: loss" in err and "epoch 2/2: loss" in err


def test_continuing_with_the_same_optimizer_restarts_its_schedule(tmp_path: Path) -> None:
    first = fit(tiny_model(), pk_loaders(), cfg(epochs=1), tmp_path / "a")
    second = fit(first.model.train(), pk_loaders(), cfg(epochs=1), tmp_path / "b", optimizer=first.optimizer)
    assert second.optimizer is first.optimizer
    steps = [r for r in read_log(tmp_path / "b" / "train_log.jsonl") if r["event"] == "step"]
    assert steps[0]["lr"] == pytest.approx(0.005)  # a fresh warm-up from the original base lr
