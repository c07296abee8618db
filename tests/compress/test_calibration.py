"""compress.calibration: one pass feeding attention statistics (maps and dLoss/dmap)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tokens_helpers import TinyReID, batches, tiny_vit
from torch import Tensor

from reidprune.compress.calibration import AttentionStatistic, calibrate, default_loss
from reidprune.errors import CompressionError
from reidprune.models.vit import Attention


class Recorder:
    """Keeps every (name, attn, grad) it is given."""

    def __init__(self, needs_grad: bool) -> None:
        self.needs_grad = needs_grad
        self.calls: list[tuple[str, Tensor, Tensor | None]] = []

    def update(self, name: str, attn: Tensor, grad: Tensor | None) -> None:
        self.calls.append((name, attn, grad))


def test_recorder_is_an_attention_statistic() -> None:
    assert isinstance(Recorder(True), AttentionStatistic)


def test_maps_and_gradients_equal_a_manual_backward_pass() -> None:
    model = tiny_vit(heads=(2, 1, 2))
    batch = batches((4,))[0]
    stat = Recorder(needs_grad=True)
    calibrate(model, [batch], [stat])

    kept: dict[str, Tensor] = {}
    for name, layer in model.named_modules():
        if isinstance(layer, Attention):

            def probe(a: Tensor, name: str = name) -> Tensor:
                a.retain_grad()
                kept[name] = a
                return a

            layer.probe = probe
    F.cross_entropy(model(batch["image"]), batch["label"]).backward()

    assert [name for name, _, _ in stat.calls] == ["blocks.0.attn", "blocks.1.attn", "blocks.2.attn"]
    assert stat.calls[1][1].shape == (4, 1, 9, 9)  # (B, H, N_q, N_k) with the block's own head count
    for name, attn, grad in stat.calls:
        torch.testing.assert_close(attn, kept[name].detach(), rtol=0, atol=0)
        torch.testing.assert_close(grad, kept[name].grad, rtol=0, atol=0)


def test_every_batch_counts_including_the_ragged_last_one() -> None:
    stat = Recorder(needs_grad=True)
    summary = calibrate(tiny_vit(), batches((4, 4, 3)), [stat])
    assert (summary.batches, summary.images) == (3, 11)
    assert [a.shape[0] for name, a, _ in stat.calls if name == "blocks.0.attn"] == [4, 4, 3]


def test_max_batches_stops_early() -> None:
    summary = calibrate(tiny_vit(), batches((2, 2, 2)), [Recorder(False)], max_batches=2)
    assert summary.batches == 2


def test_statistics_without_gradients_get_none_and_need_no_labels() -> None:
    data = [{"image": b["image"]} for b in batches((2,))]
    stat = Recorder(needs_grad=False)
    calibrate(tiny_vit(), data, [stat])
    assert len(stat.calls) == 4 and all(grad is None for _, _, grad in stat.calls)


def test_mixed_statistics_get_gradients_only_when_asked() -> None:
    with_grad, without = Recorder(True), Recorder(False)
    calibrate(tiny_vit(), batches((2,)), [with_grad, without])
    assert all(g is not None for _, _, g in with_grad.calls)
    assert all(g is None for _, _, g in without.calls)


def test_the_model_is_left_exactly_as_it_was() -> None:
    model = TinyReID()
    model.eval()
    model.fc.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calibrate(model, batches(), [Recorder(True)])
    assert not model.training and not any(m.training for m in model.modules())
    assert not model.fc.weight.requires_grad and model.backbone.cls_token.requires_grad
    assert all(p.grad is None for p in model.parameters())  # autograd.grad: nothing accumulated
    assert all(m.probe is None for m in model.modules() if isinstance(m, Attention))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)  # BN running stats untouched


def test_default_pass_is_deterministic_despite_dropout_and_drop_path() -> None:
    model = TinyReID(drop_path=0.5)
    first, second = Recorder(True), Recorder(True)
    calibrate(model, batches((4,)), [first])
    calibrate(model, batches((4,)), [second])
    for (_, a1, g1), (_, a2, g2) in zip(first.calls, second.calls, strict=True):
        torch.testing.assert_close(a1, a2, rtol=0, atol=0)
        torch.testing.assert_close(g1, g2, rtol=0, atol=0)


def test_stochastic_pass_restores_batch_norm_statistics() -> None:
    model = TinyReID()
    before = model.bn.running_mean.clone()
    calibrate(model, batches(), [Recorder(True)], stochastic=True)
    torch.testing.assert_close(model.bn.running_mean, before, rtol=0, atol=0)


def test_teacher_runs_once_per_batch_without_gradients() -> None:
    teacher = TinyReID()
    calls: list[bool] = []
    teacher.register_forward_hook(lambda mod, inp, out: calls.append(torch.is_grad_enabled()))
    seen: list[object] = []

    def loss_fn(output, batch, teacher_output):
        seen.append(teacher_output)
        return default_loss(output, batch, teacher_output)

    teacher.eval()
    calibrate(TinyReID(), batches((2, 2, 1)), [Recorder(True)], teacher=teacher, loss_fn=loss_fn)
    assert calls == [False, False, False]
    assert all(out is not None and len(out.logits) == 1 for out in seen)  # training outputs: logits
    assert not any(m.training for m in teacher.modules())  # its modes are restored


def test_default_loss_with_teacher_adds_soft_distillation() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    teacher = torch.tensor([[0.0, 1.0, 0.0]])
    batch = {"label": torch.tensor([0])}
    ce = F.cross_entropy(logits, batch["label"])
    kl = (F.softmax(teacher, -1) * (F.log_softmax(teacher, -1) - F.log_softmax(logits, -1))).sum()
    torch.testing.assert_close(default_loss(logits, batch, teacher), ce + kl)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: calibrate(tiny_vit(), batches(), []), "no statistics"),
        (lambda: calibrate(torch.nn.Linear(2, 2), batches(), [Recorder(True)]), "no attention layers"),
        (lambda: calibrate(tiny_vit(), [(torch.zeros(1), 0)], [Recorder(True)]), "must be a dict"),
        (lambda: calibrate(tiny_vit(), [], [Recorder(True)]), "no batches"),
        (lambda: calibrate(tiny_vit(), batches(), [Recorder(True)], max_batches=-1), "max_batches"),
    ],
)
def test_bad_input_is_refused(make, message: str) -> None:
    with pytest.raises(CompressionError, match=message):
        make()


def test_a_model_without_logits_needs_a_loss_function() -> None:
    model = TinyReID()
    model.fc = torch.nn.Identity()

    class NoLogits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, images, camids=None):
            out = self.inner(images)
            out.logits = []
            return out

    with pytest.raises(CompressionError, match="no logits"):
        calibrate(NoLogits(), batches((2,)), [Recorder(True)])
