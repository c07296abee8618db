"""Training losses for re-ID and classification: task losses and distillation from a teacher.

Shapes: B = batch size, C = classes, D = feature dimension. Every function returns a scalar
(0-dim) tensor. Functions that take lists average over the model's heads (one logit tensor per
classifier, one feature tensor per head; see `ModelOutput`).

`compute_losses` combines them as configured in `TrainConfig` and returns every term separately,
so that the engine can log each one:

    total = id_w * ID + tri_w * TRIPLET + alpha * KD + emb_w * EMBED_KD + rel_w * RELATION_KD
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from reidprune.errors import TrainingError
from reidprune.models.output import ModelOutput

if TYPE_CHECKING:
    from reidprune.train.config import TrainConfig


def _shapes(tensors: Sequence[Tensor]) -> str:
    return "[" + ", ".join(str(tuple(t.shape)) for t in tensors) + "]"


def id_loss(logits: Sequence[Tensor], labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy with optional label smoothing, averaged over classifier heads.

    logits: list of (B, C) tensors; labels: (B,) long in [0, C), or (B, C) soft targets (mixup /
    cutmix, which already hold the smoothing, so `label_smoothing` is not applied again).
    """
    if labels.dim() == 2:
        label_smoothing = 0.0
    if not logits:
        raise TrainingError(
            "the model returned no logits in train mode, so there is no ID loss; set train.id_loss_weight=0"
        )
    terms = [F.cross_entropy(z.float(), labels, label_smoothing=label_smoothing) for z in logits]
    return torch.stack(terms).mean()


def pairwise_euclidean(x: Tensor) -> Tensor:
    """(B, D) -> (B, B) Euclidean (not squared) distances; the clamp keeps sqrt's gradient finite at 0."""
    sq = x.pow(2).sum(dim=1, keepdim=True)
    d2 = sq + sq.t() - 2.0 * (x @ x.t())
    return d2.clamp_min(1e-12).sqrt()


def batch_hard_triplet(features: Tensor, labels: Tensor, margin: float = 0.3) -> Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) on one feature tensor.

    features: (B, D); labels: (B,). For each anchor the farthest same-label sample (d_ap; the anchor
    itself, at distance 0, when it has no other positive) and the nearest other-label sample (d_an).
    margin > 0: mean(max(0, d_ap - d_an + margin)); margin <= 0: soft margin mean(log(1 + exp(d_ap - d_an))).
    """
    if features.shape[0] != labels.shape[0]:
        raise TrainingError(f"triplet: {features.shape[0]} features for {labels.shape[0]} labels")
    dist = pairwise_euclidean(features.float())
    same = labels[:, None] == labels[None, :]
    if bool(same.all()):
        raise TrainingError(
            f"triplet: every sample of the batch has the same label ({int(labels[0])}); batch-hard mining "
            "needs at least two identities per batch (use the PK identity sampler)"
        )
    d_ap = dist.masked_fill(~same, float("-inf")).amax(dim=1)
    d_an = dist.masked_fill(same, float("inf")).amin(dim=1)
    if margin > 0:
        return F.relu(d_ap - d_an + margin).mean()
    return F.softplus(d_ap - d_an).mean()


def triplet_loss(features: Sequence[Tensor], labels: Tensor, margin: float = 0.3) -> Tensor:
    """`batch_hard_triplet` averaged over heads. features: list of (B, D_i)."""
    if not features:
        raise TrainingError(
            "the model returned no features in train mode, so there is no triplet loss; "
            "set train.triplet_weight=0 (e.g. for classification data)"
        )
    return torch.stack([batch_hard_triplet(f, labels, margin) for f in features]).mean()


def soft_distill(student: Tensor, teacher: Tensor, tau: float = 1.0, reduction: str = "batchmean") -> Tensor:
    """tau^2 * KL(softmax(teacher / tau) || softmax(student / tau)) for one head.

    student, teacher: (B, C) logits. reduction "batchmean" divides the summed KL by B; "elements"
    divides by B * C (DeiT and the AMG / PM seeds), i.e. it is C times smaller.
    """
    log_p_s = F.log_softmax(student.float() / tau, dim=1)
    log_p_t = F.log_softmax(teacher.float() / tau, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="sum", log_target=True)
    if reduction == "batchmean":
        denominator = student.shape[0]
    elif reduction == "elements":
        denominator = student.numel()
    else:
        raise TrainingError(f"train.distill_reduction='{reduction}': expected batchmean or elements")
    return kl * (tau * tau) / denominator


def hard_distill(student: Tensor, teacher: Tensor) -> Tensor:
    """Cross-entropy of the student (B, C) against the teacher's argmax class (B,)."""
    return F.cross_entropy(student.float(), teacher.argmax(dim=1))


def check_heads(student: Sequence[Tensor], teacher: Sequence[Tensor], what: str) -> None:
    """Teacher and student must have the same number of heads with the same shapes, else TrainingError."""
    same = len(student) == len(teacher) and all(
        tuple(s.shape) == tuple(t.shape) for s, t in zip(student, teacher, strict=False)
    )
    if not same:
        raise TrainingError(
            f"teacher and student {what} do not match: student has {len(student)} head(s) of shapes "
            f"{_shapes(student)}, teacher has {len(teacher)} head(s) of shapes {_shapes(teacher)} "
            "(a teacher must have the same classes and heads as the student)"
        )


def logit_distill(
    student: Sequence[Tensor],
    teacher: Sequence[Tensor],
    kind: str = "soft",
    tau: float = 1.0,
    reduction: str = "batchmean",
) -> Tensor:
    """Soft or hard logit distillation averaged over heads. student/teacher: lists of (B, C)."""
    if not student or not teacher:
        raise TrainingError(
            f"logit distillation needs logits from both models in train mode; the student returned "
            f"{len(student)} and the teacher {len(teacher)} logit tensors"
        )
    check_heads(student, teacher, "logits")
    if kind == "soft":
        terms = [soft_distill(s, t, tau, reduction) for s, t in zip(student, teacher, strict=True)]
    elif kind == "hard":
        terms = [hard_distill(s, t) for s, t in zip(student, teacher, strict=True)]
    else:
        raise TrainingError(f"train.distill='{kind}': expected none, soft or hard")
    return torch.stack(terms).mean()


def embedding_distill(student: Tensor, teacher: Tensor, kind: str = "mse") -> Tensor:
    """Match student features to the teacher's. student, teacher: (B, D).

    mse: mean over elements of (s - t)^2; cosine: mean over the batch of 1 - cos(s, t).
    """
    check_heads([student], [teacher], "embeddings")
    if kind == "mse":
        return F.mse_loss(student.float(), teacher.float())
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=1)).mean()
    raise TrainingError(f"train.embed_distill='{kind}': expected none, mse or cosine")


def similarity_matrix(x: Tensor) -> Tensor:
    """(B, D) -> (B, B) cosine similarities of the L2-normalised rows."""
    x = F.normalize(x.float(), dim=1)
    return x @ x.t()


def relation_distill(student: Tensor, teacher: Tensor) -> Tensor:
    """Relational distillation: mean squared difference of the (B, B) cosine-similarity matrices.

    Works across feature dimensions (student (B, D_s), teacher (B, D_t)): only how the batch's
    samples relate to each other is transferred, which is what retrieval ranks by.
    """
    if student.shape[0] != teacher.shape[0]:
        raise TrainingError(
            f"relation distillation: student batch {tuple(student.shape)} vs teacher {tuple(teacher.shape)}"
        )
    return F.mse_loss(similarity_matrix(student), similarity_matrix(teacher))


def _targets(output: ModelOutput, target: str) -> list[Tensor]:
    if target == "embedding":
        return [output.embedding]
    if target == "features":
        return list(output.features)
    raise TrainingError(f"train.embed_distill_target='{target}': expected embedding or features")


def uses_teacher(cfg: TrainConfig) -> bool:
    """Whether the configured losses need a teacher forward pass."""
    return cfg.distill != "none" or cfg.embed_distill != "none" or cfg.relation_distill_weight > 0


def compute_losses(
    student: ModelOutput, labels: Tensor, cfg: TrainConfig, teacher: ModelOutput | None = None
) -> dict[str, Tensor]:
    """Every configured loss term (unweighted) plus "loss", the weighted total used for backward.

    student/teacher: train-mode outputs for the same batch; labels: (B,) long.
    Keys: "id", "triplet", "kd", "embed_kd", "relation_kd" (those that are on), and "loss".
    """
    terms: dict[str, Tensor] = {}
    weighted: list[Tensor] = []
    if cfg.id_loss_weight > 0:
        terms["id"] = id_loss(student.logits, labels, cfg.label_smoothing)
        weighted.append(cfg.id_loss_weight * terms["id"])
    if cfg.triplet_weight > 0:
        terms["triplet"] = triplet_loss(student.features, labels, cfg.triplet_margin)
        weighted.append(cfg.triplet_weight * terms["triplet"])
    if uses_teacher(cfg):
        if teacher is None:
            raise TrainingError(
                f"distillation is configured (distill={cfg.distill}, embed_distill={cfg.embed_distill}, "
                f"relation_distill_weight={cfg.relation_distill_weight}) but no teacher was given"
            )
        if cfg.distill != "none":
            terms["kd"] = logit_distill(
                student.logits, teacher.logits, cfg.distill, cfg.distill_tau, cfg.distill_reduction
            )
            weighted.append(cfg.distill_alpha * terms["kd"])
        pairs: list[tuple[Tensor, Tensor]] = []
        if cfg.embed_distill != "none" or cfg.relation_distill_weight > 0:
            s_list = _targets(student, cfg.embed_distill_target)
            t_list = _targets(teacher, cfg.embed_distill_target)
            if len(s_list) != len(t_list) or not s_list:
                raise TrainingError(
                    f"teacher and student {cfg.embed_distill_target} do not match: student has "
                    f"{len(s_list)} head(s) of shapes {_shapes(s_list)}, teacher has {len(t_list)} "
                    f"head(s) of shapes {_shapes(t_list)}"
                )
            pairs = list(zip(s_list, t_list, strict=True))
        if cfg.embed_distill != "none":
            terms["embed_kd"] = torch.stack(
                [embedding_distill(s, t, cfg.embed_distill) for s, t in pairs]
            ).mean()
            weighted.append(cfg.embed_distill_weight * terms["embed_kd"])
        if cfg.relation_distill_weight > 0:
            terms["relation_kd"] = torch.stack([relation_distill(s, t) for s, t in pairs]).mean()
            weighted.append(cfg.relation_distill_weight * terms["relation_kd"])
    if not weighted:
        raise TrainingError(
            "every loss weight is 0: nothing to train (check train.*_weight and train.distill)"
        )
    terms["loss"] = torch.stack(weighted).sum()
    return terms
