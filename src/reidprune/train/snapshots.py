"""The models a run saves, and which one to use: `reidprune eval RUN_DIR --which-epoch k | last | best`.

The counterpart of the BAFD seed's `--which_epoch` (net_{k}.pth / net_last.pth). A run folder holds
    epoch_{k}/  the model after k epochs (train.save_every = N keeps every N-th)
    best/       the best epoch by validation
    final/      the model at the end of `reidprune train` (model/ for `reidprune prune`)
Prune jobs train in stage folders (soft/, final/, round*/), so epoch_{k}/ is also looked for one
level down; an epoch found in more than one stage must be asked for through its stage folder.
A model without an `.arch` (not built by the registry) keeps only its best weights, as best.safetensors.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

from reidprune.atomic import temporary_file
from reidprune.errors import CheckpointError, ConfigError
from reidprune.models.serialization import is_model_dir, save

SNAPSHOT = re.compile(r"^epoch_(\d+)$")
LAST_DIRS = ("final", "model")  # `reidprune train`, `reidprune prune`
BEST_DIR = "best"
BEST_WEIGHTS = "best.safetensors"


def best_path(model: nn.Module, run_dir: str | Path) -> Path:
    """Where `save_best` writes `model`'s best form in run_dir."""
    return Path(run_dir) / (BEST_DIR if getattr(model, "arch", None) is not None else BEST_WEIGHTS)


def save_best(model: nn.Module, run_dir: str | Path, metadata: dict[str, Any]) -> Path:
    """The model as best/ (a reidprune model folder), or its weights as best.safetensors without an arch."""
    target = best_path(model, run_dir)
    if getattr(model, "arch", None) is not None:
        return save(model, target, metadata=metadata)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with temporary_file(target) as tmp:
        save_file(tensors, str(tmp))
    return target


def save_epoch(model: nn.Module, run_dir: str | Path, epochs: int) -> Path:
    """The model after `epochs` epochs as run_dir/epoch_{epochs}/ (train.save_every)."""
    return save(model, Path(run_dir) / f"epoch_{epochs}", metadata={"epochs": epochs})


def snapshots(run_dir: str | Path) -> dict[int, list[Path]]:
    """Epoch k -> the epoch_{k}/ model folders in run_dir and its direct subfolders."""
    run_dir = Path(run_dir)
    found: dict[int, list[Path]] = {}
    for folder in [run_dir, *sorted(p for p in run_dir.iterdir() if p.is_dir())]:
        for child in sorted(folder.iterdir()):
            match = SNAPSHOT.match(child.name)
            if match and is_model_dir(child):
                found.setdefault(int(match.group(1)), []).append(child)
    return found


def choose_snapshot(run_dir: str | Path, which: str) -> Path:
    """The model folder `which` names in run_dir: an epoch number k, "last" or "best"."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: not a run folder")
    which = which.strip()
    if which == "best":
        if is_model_dir(run_dir / "best"):
            return run_dir / "best"
        raise CheckpointError(f"{run_dir}: no best/ model (it needs a validation split, data.val_ids > 0)")
    found = snapshots(run_dir)
    if which == "last":
        for name in LAST_DIRS:
            if is_model_dir(run_dir / name):
                return run_dir / name
        if found:
            return _only(found, max(found), run_dir)
        raise CheckpointError(f"{run_dir}: no final/, model/ or epoch_k/ model")
    if not which.isdigit():
        raise ConfigError(f"--which-epoch {which}: expected an epoch number, last or best")
    epoch = int(which)
    if epoch not in found:
        kept = ", ".join(str(k) for k in sorted(found)) or "none (set train.save_every)"
        raise CheckpointError(f"{run_dir}: no snapshot of epoch {epoch}; snapshots kept: {kept}")
    return _only(found, epoch, run_dir)


def _only(found: dict[int, list[Path]], epoch: int, run_dir: Path) -> Path:
    if len(found[epoch]) > 1:
        where = ", ".join(str(p.parent) for p in found[epoch])
        raise CheckpointError(
            f"{run_dir}: epoch {epoch} was saved by several stages ({where}); give the stage folder"
        )
    return found[epoch][0]
