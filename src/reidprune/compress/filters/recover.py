"""Recover which filters an HFP small model kept, from the model it was pruned from.

The BAFD seed's HFP (`L1_train.py`) zeroes the smallest-L1 filters of every prunable conv of the
original model, extracts the small ResNet and fine-tunes it; `net_last.pth` is that small model's
state dict. The kept filter indices are not in the file, yet the last conv of each block writes
its outputs into the residual channels they name, so the file alone cannot be rebuilt. The seed's
own `test_small.py` repeats the L1 selection on the original weights; so do we:

1. per prunable conv (the seed's layer list, scope "bafd"), the file's shape gives the number of
   kept filters m, and the kept filters are the m largest-L1 filters of the original (ties ->
   lower index). The rate is not needed (it is checked when given, as the seed's --prune_rate);
2. the original with the other filters zeroed is extracted (same code as every pruned model), and
   the file's fine-tuned weights are loaded into that architecture;
3. check: fine-tuning moves filters only a little, so each small filter should still be closer
   (cosine, over its kept input channels) to the original filter it was matched to than to any
   other. The fraction of filters for which that holds ("agreement") is recorded in the plan; below
   `min_agreement` the original is not the one the file was pruned from, and it is refused.

Why recompute rather than match filters by correlation alone: the L1 rule is what produced the
file, so on the right original it is exact whatever fine-tuning did, while a pure matching would
guess from how far the weights moved. The correlation is used only to detect a wrong original.
One known limit: the seed ranks float32 L1 sums, we rank float64 ones, so two filters whose norms
agree to float32 precision could swap; such a swap shows as a per-layer agreement below 1 in the plan.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from reidprune.compress.filters.bafd import filters_to_prune
from reidprune.compress.filters.criteria import flatten_filters, select_hfp
from reidprune.compress.filters.extraction import copy_model, extract_pruned
from reidprune.compress.filters.targets import (
    ConvTarget,
    conv_weight,
    input_sources,
    prunable_convs,
    zero_filters,
)
from reidprune.errors import CheckpointError
from reidprune.models.checkpoint_io import read_checkpoint
from reidprune.models.checkpoints import create_from_checkpoint, import_state
from reidprune.models.import_resnet import BACKBONE, head_from_state, resnet_arch_from_state, to_model_names
from reidprune.models.plan import CompressionPlan
from reidprune.models.registry import arch_config, build
from reidprune.models.resnet import ResNet


def agreement(original: Tensor, small: Tensor, kept: Tensor, kept_in: Tensor | None) -> Tensor:
    """(m,) bool: small filter j is closest (cosine) to original filter kept[j] among all n.

    original: (n, C, kh, kw); small: (m, C', kh, kw) with C' = len(kept_in) (None: all C inputs).
    """
    if kept_in is not None:
        original = original[:, kept_in]
    a = nn.functional.normalize(flatten_filters(small), dim=1)
    b = nn.functional.normalize(flatten_filters(original), dim=1)
    return (a @ b.T).argmax(1) == kept


def recover_hfp_small(
    original: nn.Module,
    small_state: Mapping[str, Tensor],
    *,
    rate: float | None = None,
    min_agreement: float = 0.5,
    where: str = "checkpoint",
    check_size: tuple[int, int] | list[int] | None = None,
    details: dict[str, Any] | None = None,
) -> tuple[ResNet, CompressionPlan]:
    """The extracted model of an HFP small-model state dict, given the original full-size model.

    original: the reidprune ResNet the small model was pruned from, with its original weights
      (e.g. ImageNet) and a head shaped like the small model's. It is not changed.
    small_state: the small model's state dict (the seed's ResNet_small names, or ours).
    rate: the seed's --prune_rate, checked against the file's widths when given.
    details: extra entries for the plan (e.g. where the original came from).
    Returns (small_model, plan) with the file's weights; the plan lists the kept filters.
    """
    masked = copy_model(original)
    _, renamed = to_model_names(small_state, masked.arch.head, where)
    targets = prunable_convs(masked, "bafd")
    _check_untouched(masked, renamed, {t.conv for t in targets}, where)
    kept: dict[str, Tensor] = {}
    for target in targets:
        weight = conv_weight(masked, target)
        n, m = weight.shape[0], _width(renamed, target, where)
        if not 0 < m <= n:
            raise CheckpointError(
                f"{where}: {target.conv}.weight has {m} filters; the original has {n}: "
                "not a small model of this original"
            )
        if rate is not None and filters_to_prune(n, rate) != n - m:
            raise CheckpointError(
                f"{where}: {target.conv} keeps {m} of {n} filters; HFP at rate {rate} keeps "
                f"{n - filters_to_prune(n, rate)}: pass the rate the model was pruned with"
            )
        removed = select_hfp(weight, n - m)
        mask = torch.ones(n, dtype=torch.bool)
        mask[removed] = False
        kept[target.conv] = mask.nonzero().flatten()
        zero_filters(masked, target, removed)
    scores = _agreement(original, renamed, targets, kept)
    total = sum(s.numel() for s in scores.values())
    overall = sum(int(s.sum()) for s in scores.values()) / max(total, 1)
    if overall < min_agreement:
        worst = min(scores, key=lambda name: scores[name].float().mean().item())
        raise CheckpointError(
            f"{where}: only {overall:.0%} of its filters are closest to the original filters the L1 "
            f"selection matched them to (worst: {worst}, {scores[worst].float().mean().item():.0%}); "
            "the original model is probably not the one this small model was pruned from"
        )
    info: dict[str, Any] = {
        "criterion": "hfp",
        "scope": "bafd",
        "source": where,
        "kept_from": "largest-L1 filters of the original, counts from the file's shapes",
        "agreement": overall,
        "agreement_per_layer": {name: s.float().mean().item() for name, s in scores.items()},
        **(details or {}),
    }
    small, plan = extract_pruned(masked, method="filter-hfp", rate=rate, details=info, check_size=check_size)
    import_state(small, small_state, strict=True, where=where)
    return small, plan


def _width(state: Mapping[str, Tensor], target: ConvTarget, where: str) -> int:
    key = f"{target.conv}.weight"
    if key not in state:
        raise CheckpointError(f"{where}: {key} is missing: not a ResNet small-model state dict")
    return int(state[key].shape[0])


def _check_untouched(model: nn.Module, state: Mapping[str, Tensor], pruned: set[str], where: str) -> None:
    """Convs HFP never prunes (downsample, and the stem of ResNet-18/34) must keep their width."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and name not in pruned:
            key = f"{name}.weight"
            if key in state and state[key].shape[0] != module.weight.shape[0]:
                raise CheckpointError(
                    f"{where}: {key} has {state[key].shape[0]} of {module.weight.shape[0]} filters, "
                    "but HFP never prunes that conv: not an HFP small model of this architecture"
                )


def _agreement(
    original: nn.Module, state: Mapping[str, Tensor], targets: list[ConvTarget], kept: dict[str, Tensor]
) -> dict[str, Tensor]:
    source = input_sources(original)
    scores = {}
    for target in targets:
        small = state[f"{target.conv}.weight"]
        kept_in = kept.get(source.get(target.conv, ""))
        if kept_in is not None and small.shape[1] != kept_in.numel():
            raise CheckpointError(
                f"{target.conv}.weight has {small.shape[1]} input channels; the previous conv keeps "
                f"{kept_in.numel()}: not a small model of this original"
            )
        scores[target.conv] = agreement(conv_weight(original, target), small, kept[target.conv], kept_in)
    return scores


def create_pruned_from_checkpoint(
    name: str,
    path: str | Path,
    *,
    original: str | Path | None = None,
    rate: float | None = None,
    check_size: list[int] | None = None,
    **kwargs: Any,
) -> tuple[nn.Module, Any]:
    """The physically smaller model of a pruned checkpoint. Returns (small_model, plan).

    - without `original`: `path` is full size with its pruned filters zero (a BAFD / SFP / FPGM
      net_last.pth); the zero filters are removed.
    - with `original`: `path` is the BAFD seed's HFP small model (L1_train.py's net_last.pth) and
      `original` the checkpoint it was pruned from (the torchvision ImageNet file, or the seed's
      --pretrained_dir model). The kept filters are recovered by repeating the L1 selection on the
      original (see `recover_hfp_small`); `rate` (the seed's --prune_rate) is
      checked against the file when given.
    """
    if original is None:
        full = create_from_checkpoint(name, path, **kwargs)
        return extract_pruned(
            full, method="filter-zeros", details={"source": str(path)}, check_size=check_size
        )
    small_state = read_checkpoint(path)
    source = read_checkpoint(original)
    arch = resnet_arch_from_state(source, arch_config(name, **kwargs))
    # the head (number of identities) is the small model's, the backbone the original's
    arch = dataclasses.replace(arch, **head_from_state(to_model_names(small_state, arch.head)[1], arch))
    full = build(arch)
    _, renamed = to_model_names(source, arch.head, str(original))
    import_state(
        full, {k: v for k, v in renamed.items() if BACKBONE.match(k)}, strict=True, where=str(original)
    )
    return recover_hfp_small(
        full,
        small_state,
        rate=rate,
        where=str(path),
        check_size=check_size,
        details={"original": str(original)},
    )
