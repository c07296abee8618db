"""Soft filter pruning during training: SFP, FPGM and BAFD as training-engine callbacks.

All three re-select filters on the current weights after every epoch; selected filters keep
receiving gradients, so they may regrow (soft pruning):
- sfp: the floor(n * rate) smallest-L2 filters per layer are set to zero (conv slice, BN gamma
  and beta).
- fpgm: the same with the smallest summed distance to the other filters.
- bafd: the per-layer rates were fixed once, before training, by the block redundancy ranking;
  the selected filters (greedy kNN local power) are multiplied by `decay` each epoch, and the
  last selection is set to exactly zero at the end of training.

Defaults follow the BAFD repository (masks after each epoch only, BN gamma/beta masked too).
Note what masking BN implies: a zeroed channel of an internal conv feeds its ReLU exactly 0,
whose gradient is 0, so with `mask_bn=True` such filters receive no gradient and do NOT regrow;
only block-output convs (scope "bafd"), whose output meets the residual sum, can come back.
Options that reproduce he-y's originals (BAFD reading §4, B13): `mask_bn=False` zeroes the conv
slices only during training (the channel then outputs its BN shift, so gradients flow and the
filters can regrow; the final selection is zeroed with its BN at the end so that extraction is
exact); `at_start=True` also masks before the first epoch; `hold_zeros=True` re-applies the
zeros after every optimiser step, so masked filters stay zero within an epoch (FPGM's gradient
mask). he-y SFP = (mask_bn=False, at_start=True); he-y FPGM = the same plus hold_zeros=True.
Under DistributedDataParallel every rank selects on identical weights, so the masks agree
without communication.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from reidprune.compress.filters.bafd import filters_to_prune
from reidprune.compress.filters.criteria import select_bafd, select_fpgm, select_in_slices, select_sfp
from reidprune.compress.filters.extraction import copy_model, extract_pruned
from reidprune.compress.filters.targets import ConvTarget, conv_weight, scale_filters, unwrap
from reidprune.errors import CompressionError

SOFT_METHODS = ("sfp", "fpgm", "bafd")


class SoftFilterPruning:
    """Callback that selects and zeroes (sfp, fpgm) or decays (bafd) filters after each epoch.

    It implements every hook of `reidprune.train.callbacks.Callback` (and state_dict /
    load_state_dict for exact resume) without importing train: the engine calls callbacks by their
    hook names, and compress and train stay independent layers.

    targets: the prunable convs; rates: conv name -> fraction of its filters removed.
    The engine passes itself to every hook; `engine.model` is the model being trained
    (DataParallel / DDP wrappers are looked through).
    """

    def __init__(
        self,
        method: str,
        targets: list[ConvTarget],
        rates: dict[str, float],
        *,
        rate: float,
        decay: float = 0.3,
        k: int = 2,
        efficient: bool = False,
        at_start: bool = False,
        hold_zeros: bool = False,
        mask_bn: bool = True,
        details: dict[str, Any] | None = None,
    ) -> None:
        if method not in SOFT_METHODS:
            raise CompressionError(f"soft filter pruning method '{method}': expected one of {SOFT_METHODS}")
        if method == "bafd" and not 0.0 <= decay < 1.0:
            raise CompressionError(f"bafd decay {decay}: expected a factor in [0, 1)")
        self.method = method
        self.targets = targets
        self.rates = dict(rates)
        self.rate = rate
        self.decay = decay if method == "bafd" else 0.0
        self.k = k
        self.efficient = efficient
        self.at_start = at_start
        self.hold_zeros = hold_zeros
        self.mask_bn = mask_bn or method == "bafd"  # BAFD must decay BN too (BAFD reading §3.5)
        self.details = details or {}
        self.selected: dict[str, list[int]] = {}  # conv name -> filters selected last time
        self.epochs_done = 0
        self.finished = False

    # ----------------------------------------------------------------- selection
    def select(self, model: nn.Module, target: ConvTarget) -> Tensor:
        weight = conv_weight(model, target)
        rate = self.rates[target.conv]
        count = filters_to_prune(weight.shape[0], rate)

        def criterion(w: Tensor, c: int) -> Tensor:
            if self.method == "sfp":
                return select_sfp(w, c)
            if self.method == "fpgm":
                return select_fpgm(w, c)
            return select_bafd(w, c, k=self.k, efficient=self.efficient, layer_rate=rate)

        # a grouped conv reads these filters: the same positions in each slice (ConvTarget.groups)
        return select_in_slices(criterion, weight, count, target.groups)

    def apply(self, model: nn.Module) -> None:
        """Select on the current weights, then zero (sfp, fpgm) or decay (bafd) the selection."""
        model = unwrap(model)
        for target in self.targets:
            index = self.select(model, target)
            self.selected[target.conv] = index.tolist()
            scale_filters(model, target, index, self.decay, with_bn=self.mask_bn)

    def hard_zero(self, model: nn.Module) -> None:
        """Set the last selection (conv slices, BN gamma and beta) to exactly zero: BAFD's end of
        training, and for sfp/fpgm the BN part when `mask_bn=False`. Selects first if nothing
        was selected yet."""
        model = unwrap(model)
        if not self.selected:
            self.apply(model)
        for target in self.targets:
            scale_filters(model, target, torch.tensor(self.selected[target.conv], dtype=torch.long), 0.0)
        self.finished = True

    def snapshot(self, model: nn.Module) -> nn.Module:
        """What `train.save_every` keeps: a copy with the current selection set to exactly zero, the
        full-size model with zero filters that the BAFD seed saves as net_{k}.pth."""
        twin = copy_model(model)
        for target in self.targets:
            index = self.selected.get(target.conv, [])
            scale_filters(twin, target, torch.tensor(index, dtype=torch.long), 0.0)
        return twin

    # ----------------------------------------------------------------- engine hooks
    def on_train_start(self, engine: Any) -> None:
        if self.at_start and self.epochs_done == 0 and not self.selected:
            self.apply(engine.model)

    def on_step_end(self, engine: Any) -> None:
        if not self.hold_zeros or not self.selected:
            return
        model = unwrap(engine.model)
        for target in self.targets:
            index = self.selected[target.conv]
            if index:
                scale_filters(model, target, torch.tensor(index, dtype=torch.long), 0.0, self.mask_bn)

    def on_epoch_end(self, engine: Any, epoch: int) -> None:
        self.apply(engine.model)
        self.epochs_done = epoch + 1

    def on_train_end(self, engine: Any) -> None:
        self.hard_zero(engine.model)

    # ----------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "rates": dict(self.rates),
            "selected": {name: list(idx) for name, idx in self.selected.items()},
            "epochs_done": self.epochs_done,
            "finished": self.finished,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("method") != self.method:
            raise CompressionError(
                f"resume: the checkpoint's filter pruning method is '{state.get('method')}', "
                f"this run uses '{self.method}'"
            )
        if set(state["rates"]) != set(self.rates):
            raise CompressionError(
                "resume: the checkpoint prunes different convs than this run "
                f"({sorted(set(state['rates']) ^ set(self.rates))[:5]} differ); use the same scope"
            )
        # BAFD's rates were ranked on the weights at the start of the run: take them from the
        # checkpoint rather than re-ranking the partly trained weights
        self.rates = {name: float(r) for name, r in state["rates"].items()}
        self.selected = {name: [int(i) for i in idx] for name, idx in state["selected"].items()}
        self.epochs_done = int(state["epochs_done"])
        self.finished = bool(state.get("finished", False))

    # ----------------------------------------------------------------- result
    def extract(self, model: nn.Module, **kwargs: Any) -> tuple[nn.Module, Any]:
        """The smaller model after training: hard-zero the selection (if training did not end
        through `on_train_end`), then `extract_pruned` with this schedule in the plan."""
        if not self.finished:
            self.hard_zero(model)
        return extract_pruned(
            model, method=f"filter-{self.method}", rate=self.rate, details=self.plan_details(), **kwargs
        )

    def plan_details(self) -> dict[str, Any]:
        """JSON-able description of the schedule (for the CompressionPlan of the extracted model)."""
        return {
            "criterion": self.method,
            "rates": dict(self.rates),
            "decay": self.decay,
            "k": self.k,
            "efficient": self.efficient,
            "at_start": self.at_start,
            "hold_zeros": self.hold_zeros,
            "mask_bn": self.mask_bn,
            "epochs": self.epochs_done,
            **self.details,
        }
