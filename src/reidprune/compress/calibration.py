"""One calibration pass that feeds every attention statistic (token scores, head entropies).

`calibrate` runs a model over a loader with `Attention.probe` set on every attention layer (the
backbone blocks and any other, e.g. TransReID's JPM copies `b1`/`b2`, found by module type and
named by module path). For every batch and every call of a layer it hands the post-softmax
attention probabilities, and when a statistic asks for it their gradient of the task loss, to
each statistic:

    stat.update(name, attn, grad)
      name: module path of the attention layer, e.g. "backbone.blocks.3.attn"
      attn: (B, H, N_q, N_k) float32, detached
      grad: (B, H, N_q, N_k) float32 = dLoss/dattn, or None when `stat.needs_grad` is False

What the pass does, and why:
- Mode. Models return their training outputs (logits, features) only in training mode, and the
  task loss needs logits, so the model runs in training mode -- but by default with dropout,
  stochastic depth and batch norm switched to their eval behaviour: the scores are then
  deterministic and no running statistic of the model changes (the seeds ran fully in train
  mode and updated the BN statistics; amg.md §12.9). `stochastic=True` reproduces the seeds'
  train-mode pass; the model's buffers are restored afterwards, so it is still not modified.
  Every module's mode, every `probe` and every `requires_grad` flag are restored at the end.
- Gradients with `torch.autograd.grad` with respect to the attention tensors only: nothing is
  accumulated into `.grad`, no optimiser steps, no AMP and no loss scaling (fp32 throughout).
  Parameters are made to require grad during the pass so that gradients reach every layer even
  for a frozen model.
- The teacher (for a distillation loss) runs once per batch under no_grad, in the same mode.
- Every batch counts, the ragged last one included; `max_batches` > 0 stops early.
- When no statistic needs gradients the pass runs under no_grad and needs no labels.
- Under torchrun (an initialised process group of more than one rank) each rank passes over its
  own shard of the data, then every statistic's `all_reduce()` combines the ranks (sums and
  counts), so every rank ends with the statistics of one pass over all ranks' images and prunes
  identically. A statistic without `all_reduce` is refused there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidprune.compress.ranks import all_reduce_sum, world_size
from reidprune.errors import CompressionError
from reidprune.models.output import ModelOutput
from reidprune.models.vit import Attention, DropPath

LossFn = Callable[[Any, Mapping[str, Any], Any], Tensor]


@runtime_checkable
class AttentionStatistic(Protocol):
    """What `calibrate` feeds. `update` may be called several times per batch for one layer
    (a layer that runs several times per forward, e.g. TransReID's JPM local branch)."""

    needs_grad: bool

    def update(self, name: str, attn: Tensor, grad: Tensor | None) -> None: ...

    # optional, needed under torchrun: `all_reduce(self) -> None` sums the ranks' statistics


@dataclass
class CalibrationSummary:
    """batches (this rank's) / images seen (all ranks' under torchrun), and the module paths of the attention layers that ran, in call order."""

    batches: int = 0
    images: int = 0
    layers: list[str] = field(default_factory=list)


def all_logits(output: Any) -> list[Tensor]:
    """Every classifier's logits of a forward pass (`ModelOutput.logits`, or a bare logits tensor);
    `models.forward.logits_of` gives only the first one, as a Tensor."""
    if isinstance(output, ModelOutput):
        return list(output.logits)
    if isinstance(output, Tensor):
        return [output]
    raise CompressionError(
        f"calibration: cannot find logits in a model output of type {type(output).__name__}"
    )


def default_loss(output: Any, batch: Mapping[str, Any], teacher_output: Any = None) -> Tensor:
    """Task loss of the calibration pass: cross-entropy averaged over the model's classifiers,
    plus (with a teacher) soft distillation KL(teacher || student) at temperature 1, batchmean.

    output / teacher_output: `ModelOutput` (or a logits tensor); batch["label"]: (B,) long.
    """
    logits = all_logits(output)
    if not logits:
        raise CompressionError(
            "calibration needs a task loss but the model returned no logits in training mode; "
            "pass loss_fn=(output, batch, teacher_output) -> scalar"
        )
    if "label" not in batch:
        raise CompressionError(
            "calibration: the batch has no 'label' entry for the default loss; pass loss_fn"
        )
    labels = batch["label"]
    loss = torch.stack([F.cross_entropy(z.float(), labels) for z in logits]).mean()
    if teacher_output is not None:
        teacher_logits = all_logits(teacher_output)
        if len(teacher_logits) != len(logits):
            raise CompressionError(
                f"calibration: the teacher has {len(teacher_logits)} classifiers, the model {len(logits)}"
            )
        kd = [
            F.kl_div(
                F.log_softmax(z.float(), -1),
                F.log_softmax(t.float(), -1),
                reduction="batchmean",
                log_target=True,
            )
            for z, t in zip(logits, teacher_logits, strict=True)
        ]
        loss = loss + torch.stack(kd).mean()
    return loss


def _is_stochastic(module: nn.Module) -> bool:
    """Modules whose training behaviour is random or updates running statistics."""
    return isinstance(module, nn.modules.dropout._DropoutNd | DropPath | nn.modules.batchnorm._NormBase) or (
        type(module).__name__ == "DropPath"
    )


class _ModeGuard:
    """Puts a model into calibration mode and restores modes, probes, grad flags and buffers."""

    def __init__(self, model: nn.Module, stochastic: bool, need_grad: bool) -> None:
        self.model = model
        self.stochastic = stochastic
        self.need_grad = need_grad

    def __enter__(self) -> nn.Module:
        m = self.model
        self.modes = {mod: mod.training for mod in m.modules()}
        self.grad_flags = {p: p.requires_grad for p in m.parameters()}
        self.buffers = {name: b.detach().clone() for name, b in m.named_buffers()} if self.stochastic else {}
        m.train()
        if not self.stochastic:
            for mod in m.modules():
                if _is_stochastic(mod):
                    mod.eval()
        if self.need_grad:
            for p in m.parameters():
                p.requires_grad_(True)
        return m

    def __exit__(self, *exc: object) -> None:
        for mod, mode in self.modes.items():
            mod.training = mode
        for p, flag in self.grad_flags.items():
            p.requires_grad_(flag)
        if self.buffers:
            with torch.no_grad():
                for name, b in self.model.named_buffers():
                    if name in self.buffers:
                        b.copy_(self.buffers[name])


def attention_layers(model: nn.Module) -> dict[str, Attention]:
    """Every attention layer of `model`, by module path ("backbone.blocks.0.attn", "b1.attn", ...)."""
    return {name: mod for name, mod in model.named_modules() if isinstance(mod, Attention)}


def _to_device(batch: Any, device: torch.device) -> dict[str, Any]:
    if not isinstance(batch, Mapping):
        raise CompressionError(
            f"calibration: a batch must be a dict with 'image' (and 'label', 'camid'); got {type(batch).__name__}"
        )
    if "image" not in batch:
        raise CompressionError(f"calibration: the batch has no 'image' entry (keys: {sorted(batch)})")
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _forward(model: nn.Module, batch: Mapping[str, Any]) -> Any:
    return model(batch["image"].float(), camids=batch.get("camid"))


def calibrate(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    statistics: Iterable[AttentionStatistic],
    *,
    loss_fn: LossFn | None = None,
    max_batches: int = 0,
    device: torch.device | str | None = None,
    teacher: nn.Module | None = None,
    stochastic: bool = False,
) -> CalibrationSummary:
    """Run `model` over `loader` and feed every statistic (see the module docstring).

    loader: any iterable of batch dicts (`image` (B,3,H,W), `label` (B,), optional `camid` (B,)).
    loss_fn: (output, batch, teacher_output) -> scalar; default `default_loss`.
    max_batches: 0 = the whole loader.
    device: where batches go; default the model's device (the model is not moved).
    teacher: optional frozen model, run once per batch under no_grad; its output is passed to loss_fn.
    stochastic: True = seeds' train-mode pass (dropout / drop-path / BN batch statistics active).
    Returns a `CalibrationSummary`. The model is left exactly as it was (modes, flags, buffers, probes).
    """
    statistics = list(statistics)
    if not statistics:
        raise CompressionError("calibrate: no statistics to collect")
    if world_size() > 1:
        alone = [type(s).__name__ for s in statistics if not hasattr(s, "all_reduce")]
        if alone:
            raise CompressionError(
                f"calibrate under torchrun ({world_size()} ranks): {', '.join(alone)} has no all_reduce() "
                "to combine the ranks' shards; every rank would prune with other numbers"
            )
    if max_batches < 0:
        raise CompressionError(f"calibrate: max_batches must be >= 0 (0 = all), got {max_batches}")
    layers = attention_layers(model)
    if not layers:
        raise CompressionError(
            f"calibrate: {type(model).__name__} has no attention layers (models.vit.Attention)"
        )
    need_grad = any(s.needs_grad for s in statistics)
    loss_fn = loss_fn or default_loss
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)

    summary = CalibrationSummary()
    recorded: list[tuple[str, Tensor]] = []

    def make_probe(name: str) -> Callable[[Tensor], Tensor]:
        def probe(attn: Tensor) -> Tensor:
            recorded.append((name, attn))
            return attn

        return probe

    old_probes = {name: layer.probe for name, layer in layers.items()}
    teacher_guard = _ModeGuard(teacher, stochastic, need_grad=False) if teacher is not None else None
    try:
        for name, layer in layers.items():
            layer.probe = make_probe(name)
        with _ModeGuard(model, stochastic, need_grad), torch.autocast(device.type, enabled=False):
            if teacher_guard is not None:
                teacher_guard.__enter__()
            for index, raw in enumerate(loader):
                if max_batches and index >= max_batches:
                    break
                batch = _to_device(raw, device)
                recorded.clear()
                with torch.set_grad_enabled(need_grad):
                    output = _forward(model, batch)
                    grads: list[Tensor | None] = [None] * len(recorded)
                    if need_grad:
                        teacher_output = None
                        if teacher is not None:
                            with torch.no_grad():
                                teacher_output = _forward(teacher, batch)
                        loss = loss_fn(output, batch, teacher_output)
                        if not torch.isfinite(loss):
                            raise CompressionError(f"calibration: the loss is {loss.item()} at batch {index}")
                        grads = list(
                            torch.autograd.grad(loss, [a for _, a in recorded], materialize_grads=True)
                        )
                for (name, attn), grad in zip(recorded, grads, strict=True):
                    attn = attn.detach().float()
                    grad = grad.detach().float() if grad is not None else None
                    for stat in statistics:
                        stat.update(name, attn, grad if stat.needs_grad else None)
                    if summary.batches == 0 and name not in summary.layers:
                        summary.layers.append(name)
                summary.batches += 1
                summary.images += int(batch["image"].shape[0])
    finally:
        for name, layer in layers.items():
            layer.probe = old_probes[name]
        if teacher_guard is not None and hasattr(teacher_guard, "modes"):
            teacher_guard.__exit__(None, None, None)
        recorded.clear()
    if summary.batches == 0:
        raise CompressionError("calibration: the loader yielded no batches")
    if world_size() > 1:
        for stat in statistics:
            stat.all_reduce()
        summary.images = int(all_reduce_sum(torch.tensor([float(summary.images)])).item())
    return summary
