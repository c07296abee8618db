"""Each loss on a small case whose value is worked out by hand in the test."""

from __future__ import annotations

import math

import pytest
import torch

from reidprune.errors import TrainingError
from reidprune.models.output import ModelOutput
from reidprune.train.config import TrainConfig
from reidprune.train.losses import (
    batch_hard_triplet,
    compute_losses,
    embedding_distill,
    hard_distill,
    id_loss,
    logit_distill,
    relation_distill,
    soft_distill,
    triplet_loss,
)

LN3 = math.log(3.0)


def test_id_loss_averages_heads_and_smooths_labels() -> None:
    # head 1: p = [3/4, 1/4] -> CE(label 0) = ln(4/3); head 2: uniform -> ln 2
    heads = [torch.tensor([[LN3, 0.0]]), torch.tensor([[0.0, 0.0]])]
    label = torch.tensor([0])
    assert id_loss(heads, label).item() == pytest.approx((math.log(4 / 3) + math.log(2)) / 2, rel=1e-6)
    # smoothing eps: (1 - eps) * CE + eps * mean_c(-log p_c)
    eps = 0.5
    smoothed_head1 = (1 - eps) * math.log(4 / 3) + eps * (math.log(4 / 3) + math.log(4)) / 2
    assert id_loss(heads[:1], label, label_smoothing=eps).item() == pytest.approx(smoothed_head1, rel=1e-6)


def test_id_loss_without_logits_names_the_fix() -> None:
    with pytest.raises(TrainingError, match="id_loss_weight=0"):
        id_loss([], torch.tensor([0]))


# 1-D features 0, 1, 3, 5 with labels 0, 0, 1, 1; distances:
# d(0,1)=1 d(0,2)=3 d(0,3)=5 d(1,2)=2 d(1,3)=4 d(2,3)=2
# hardest positive / negative per anchor: (1, 3), (1, 2), (2, 2), (2, 4)
FEATS = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
LABELS = torch.tensor([0, 0, 1, 1])


def test_batch_hard_triplet_with_margin() -> None:
    # margin 1.5: relu(-0.5, 0.5, 1.5, -0.5) -> mean 0.5
    assert batch_hard_triplet(FEATS, LABELS, margin=1.5).item() == pytest.approx(0.5, abs=1e-5)


def test_batch_hard_triplet_soft_margin() -> None:
    gaps = [1 - 3, 1 - 2, 2 - 2, 2 - 4]
    expected = sum(math.log1p(math.exp(g)) for g in gaps) / 4
    assert batch_hard_triplet(FEATS, LABELS, margin=0.0).item() == pytest.approx(expected, abs=1e-5)


def test_triplet_averages_heads() -> None:
    loss = triplet_loss([FEATS, FEATS * 2], LABELS, margin=1.5)
    # doubled distances: relu(2-6+1.5, 2-4+1.5, 4-4+1.5, 4-8+1.5) = (0, 0, 1.5, 0) -> 0.375
    assert loss.item() == pytest.approx((0.5 + 0.375) / 2, abs=1e-5)


def test_triplet_needs_two_identities() -> None:
    with pytest.raises(TrainingError, match="PK identity sampler"):
        batch_hard_triplet(FEATS, torch.zeros(4, dtype=torch.long))


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def test_soft_distill_reductions_and_temperature() -> None:
    # row 0: teacher p = [3/4, 1/4], student uniform; row 1: identical -> KL 0
    student = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    teacher = torch.tensor([[LN3, 0.0], [1.0, 2.0]])
    kl = _kl([0.75, 0.25], [0.5, 0.5])
    assert soft_distill(student, teacher, 1.0, "batchmean").item() == pytest.approx(kl / 2, rel=1e-5)
    assert soft_distill(student, teacher, 1.0, "elements").item() == pytest.approx(kl / 4, rel=1e-5)
    # tau 2: teacher logits halved -> p = [sqrt3, 1] / (1 + sqrt3); the KL is scaled by tau^2 = 4
    s3 = math.sqrt(3.0)
    kl_t2 = _kl([s3 / (1 + s3), 1 / (1 + s3)], [0.5, 0.5])
    assert soft_distill(student, teacher, 2.0, "batchmean").item() == pytest.approx(4 * kl_t2 / 2, rel=1e-5)


def test_hard_distill_uses_the_teacher_argmax() -> None:
    # teacher says class 0; student p = [1/4, 3/4] -> CE = ln 4
    assert hard_distill(torch.tensor([[0.0, LN3]]), torch.tensor([[5.0, 1.0]])).item() == pytest.approx(
        math.log(4), rel=1e-6
    )


def test_logit_distill_averages_heads() -> None:
    student = [torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 0.0]])]
    teacher = [torch.tensor([[LN3, 0.0]]), torch.tensor([[0.0, 0.0]])]
    expected = _kl([0.75, 0.25], [0.5, 0.5]) / 2
    assert logit_distill(student, teacher, "soft").item() == pytest.approx(expected, rel=1e-5)


def test_teacher_with_other_classes_or_heads_is_refused_naming_shapes() -> None:
    student = [torch.zeros(2, 3)]
    with pytest.raises(TrainingError, match=r"student has 1 head\(s\) of shapes \[\(2, 3\)\].*\[\(2, 4\)\]"):
        logit_distill(student, [torch.zeros(2, 4)])
    with pytest.raises(TrainingError, match=r"teacher has 2 head\(s\)"):
        logit_distill(student, [torch.zeros(2, 3), torch.zeros(2, 3)])


def test_embedding_distill_mse_and_cosine() -> None:
    assert embedding_distill(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2), "mse").item() == pytest.approx(
        2.5
    )
    orthogonal = embedding_distill(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), "cosine")
    parallel = embedding_distill(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0]]), "cosine")
    assert orthogonal.item() == pytest.approx(1.0)
    assert parallel.item() == pytest.approx(0.0, abs=1e-7)


def test_relation_distill_compares_similarity_matrices_across_dimensions() -> None:
    # student similarities [[1, 0], [0, 1]], teacher (3-D) [[1, 1], [1, 1]] -> off-diagonal gaps 1 -> 2 / 4
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    teacher = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    assert relation_distill(student, teacher).item() == pytest.approx(0.5, abs=1e-6)


def test_compute_losses_weights_every_term_and_reports_each() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    student = ModelOutput(
        embedding=FEATS.repeat(1, 2), logits=[torch.tensor([[LN3, 0.0]] * 4)], features=[FEATS]
    )
    teacher = ModelOutput(embedding=torch.zeros(4, 2), logits=[torch.zeros(4, 2)], features=[FEATS])
    cfg = TrainConfig(
        id_loss_weight=2.0,
        triplet_weight=0.5,
        triplet_margin=1.5,
        distill="soft",
        distill_alpha=0.25,
        embed_distill="mse",
        embed_distill_weight=0.1,
        relation_distill_weight=3.0,
    )
    terms = compute_losses(student, labels, cfg, teacher)
    assert set(terms) == {"id", "triplet", "kd", "embed_kd", "relation_kd", "loss"}
    # id: labels 0,0,1,1 against p = [3/4, 1/4] -> (2 ln(4/3) + 2 ln 4) / 4
    assert terms["id"].item() == pytest.approx((math.log(4 / 3) + math.log(4)) / 2, rel=1e-6)
    assert terms["triplet"].item() == pytest.approx(0.5, abs=1e-5)
    assert terms["kd"].item() == pytest.approx(_kl([0.5, 0.5], [0.75, 0.25]), rel=1e-5)
    assert terms["embed_kd"].item() == pytest.approx((0 + 1 + 9 + 25) / 4)
    expected = (
        2.0 * terms["id"] + 0.5 * terms["triplet"] + 0.25 * terms["kd"] + 0.1 * terms["embed_kd"]
    ) + 3.0 * terms["relation_kd"]
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_distillation_without_teacher_is_an_error() -> None:
    out = ModelOutput(embedding=FEATS, logits=[torch.zeros(4, 2)], features=[FEATS])
    with pytest.raises(TrainingError, match="no teacher"):
        compute_losses(out, LABELS, TrainConfig(distill="soft"), None)
