"""Training checkpoints: atomic, pickle-free, complete enough to resume bit for bit.

A checkpoint is one `torch.save` file that holds only tensors and plain containers (dict, list,
tuple, str, int, float, bool, None), so it is read back with `torch.load(weights_only=True)` and
no code can hide in it. It holds the model weights and architecture (a pruned model resumes as
the pruned model), optimiser / scheduler / grad-scaler state, every random generator (torch, CUDA,
NumPy, Python `random`, per rank), the data position (epoch, next batch index), the callbacks'
state and the best validation result so far.

Writes go to a temporary file that is flushed, fsync'ed and renamed over the target, so a run
killed while saving leaves the previous checkpoint intact; a leftover temporary file is ignored
and overwritten by the next save.

`save_resume_state` / `load_resume_state` read and write the file; what goes into it is
`train/resume.py`'s job. Not to be confused with `reidprune.models.load_checkpoint(model, path)`,
which loads weights into a model.
"""

from __future__ import annotations

import pickle
import random
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from reidprune.atomic import temporary_file
from reidprune.models.checkpoint_io import CheckpointError, _error_line, refused_pickle

FORMAT = "reidprune-train"
FORMAT_VERSION = 1
PLAIN_TYPES = (str, int, float, bool, type(None), torch.dtype, torch.device)


def check_plain(obj: Any, where: str) -> None:
    """Raise CheckpointError unless `obj` is tensors and plain containers only (weights_only-loadable)."""
    if isinstance(obj, (Tensor, *PLAIN_TYPES)):
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, str | int):
                raise CheckpointError(f"{where}: key {key!r} is a {type(key).__name__}; expected str or int")
            check_plain(value, f"{where}.{key}")
        return
    if isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            check_plain(value, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"{where} is a {type(obj).__name__}; a checkpoint may only hold tensors, numbers, strings, "
        "None and lists / tuples / dicts of them (convert NumPy arrays with torch.from_numpy)"
    )


def save_resume_state(state: dict[str, Any], path: str | Path) -> Path:
    """Write `state` atomically to `path` (temp file + fsync + os.replace)."""
    path = Path(path)
    check_plain(state, "checkpoint")
    path.parent.mkdir(parents=True, exist_ok=True)
    with temporary_file(path) as tmp:
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, tmp)
    return path


def load_resume_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save_resume_state` with `weights_only=True`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training checkpoint not found: {path}")
    if path.stat().st_size == 0:  # torch raises an EOFError with an empty message for these
        raise CheckpointError(f"{path}: the training checkpoint is empty (0 bytes); it cannot be resumed")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(refused_pickle(path, err)) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError) as err:
        raise CheckpointError(
            f"{path}: not a readable training checkpoint, truncated or corrupt ({_error_line(err)})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a reidprune training checkpoint (expected format '{FORMAT}')")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {state['format_version']} is newer than this reidprune reads "
            f"({FORMAT_VERSION})"
        )
    return state


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Deprecated (removed in the next release): `save_resume_state`."""
    warnings.warn(
        "reidprune.train.checkpoint.save_checkpoint is deprecated; use save_resume_state",
        DeprecationWarning,
        stacklevel=2,
    )
    return save_resume_state(state, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Deprecated (removed in the next release): `load_resume_state`. The name clashed with
    `reidprune.models.load_checkpoint(model, path)`, which loads weights into a model."""
    warnings.warn(
        "reidprune.train.checkpoint.load_checkpoint is deprecated; use load_resume_state",
        DeprecationWarning,
        stacklevel=2,
    )
    return load_resume_state(path, map_location)


def seed_everything(seed: int) -> None:
    """Seed torch, NumPy and Python `random` (a fresh run; a resumed one restores `rng_state`)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every random generator this process uses, as tensors and plain values."""
    keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)[1:]
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    keys = np_state["keys"].cpu().numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, np_state["pos"], np_state["has_gauss"], np_state["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
