"""Reading foreign checkpoints safely, and loading state dicts with errors that say what is wrong."""

from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from reidprune.errors import CheckpointError

# Keys under which training scripts nest the weights (timm/DeiT "model", TransReID plain,
# torchreid "state_dict", EMA variants).
NESTED_KEYS = ("state_dict", "model", "model_state_dict", "module", "net", "state_dict_ema", "model_ema")


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Read a foreign .pth/.pt/.safetensors file into a flat {name: tensor} dict, without pickle code.

    .pth files are opened with ``torch.load(weights_only=True)``; a file that needs arbitrary
    pickled objects is refused with an explanation rather than executed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        # argparse.Namespace (the training arguments many checkpoints carry, e.g. PM-ViT) is a plain
        # attribute container, and numpy integers are plain numbers: allowing them executes no code
        with torch.serialization.safe_globals([argparse.Namespace, *numpy_number_globals()]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = _error_line(err, REFUSALS)
        if not any(marker in detail for marker in REFUSALS):  # not a pickle at all: random bytes, text
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({detail})") from None
        raise CheckpointError(refused_pickle(path, err)) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, IndexError, ValueError) as err:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_error_line(err)})") from None
    return unwrap_state_dict(obj, where=str(path))


# How torch's weights-only unpickler words a refusal; each names the global or class it refused.
REFUSALS = ("Unsupported global", "but got <class", "unrecognized function", "is blocked")


def numpy_number_globals() -> list[Any]:
    """What unpickling numpy integer / bool scalars and arrays of them needs, and nothing more.

    The AMG seeds store per-block head counts (`heads`, `dims`) as numpy int64 scalars and, after a
    token -> head cascade, `channels` as an int64 array (amg.md §3.4, §3.5). numpy 1.x pickles
    name `numpy.core.multiarray`, numpy 2.x `numpy._core.multiarray`. Only integer and bool dtype
    classes are allowed, so a float, string or object scalar / array is still refused (its dtype
    cannot be rebuilt).
    """
    try:
        import numpy as np
    except ImportError:  # then no file can hold numpy objects that we could read either
        return []
    scalar = np.int64(0).__reduce__()[0]
    reconstruct = np.zeros(1).__reduce__()[0]
    allowed: list[Any] = [np.dtype, np.ndarray]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed += [(scalar, f"{module}.scalar"), (reconstruct, f"{module}._reconstruct")]
    kinds = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
    allowed += [type(np.dtype(kind)) for kind in kinds]  # e.g. numpy.dtypes.Int64DType
    return allowed


def refused_pickle(path: str | Path, err: BaseException) -> str:
    """What to say about a pickle that `torch.load(weights_only=True)` refused: which class it needs,
    that it was not loaded, and how to get a weights-only file (never how to load it unsafely)."""
    # "Unsupported global: GLOBAL a.b.C" or "... but got <class 'a.b.C'>", as torch words it
    found = re.search(r"GLOBAL ([\w.]+)|<class '([\w.]+)'>", str(err))
    what = (
        f"an object of class {found.group(1) or found.group(2)}"
        if found
        else "an object that is not a tensor"
    )
    return (
        f"{path}: not loaded: the file holds code or objects other than weights ({what}), and reidprune "
        "never unpickles those. Re-save only the weights, torch.save(model.state_dict(), path), "
        "where the file was made"
    )


def read_safetensors(path: str | Path, device: str = "cpu") -> dict[str, Tensor]:
    """Read a .safetensors file; a truncated or corrupt one is a CheckpointError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError) as err:
        raise CheckpointError(
            f"{path}: not a readable safetensors file, truncated or corrupt ({_error_line(err)})"
        ) from None


def _error_line(err: BaseException, prefer: tuple[str, ...] = ()) -> str:
    """The most telling non-empty line of an exception message (torch's are long)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    preferred = [line for line in lines if any(p in line for p in prefer)]
    return (preferred or lines or [type(err).__name__])[0]


def unwrap_state_dict(obj: Any, where: str = "checkpoint") -> dict[str, Tensor]:
    """Find the {name: tensor} mapping inside a training checkpoint's nested dicts."""
    for _ in range(4):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, Tensor) for v in obj.values()):
            return dict(obj)
        if isinstance(obj, nn.Module):
            return obj.state_dict()
        if isinstance(obj, Mapping):
            nested = next(
                (obj[k] for k in NESTED_KEYS if k in obj and isinstance(obj[k], Mapping | nn.Module)), None
            )
            if nested is None:
                break
            obj = nested
    if isinstance(obj, Mapping):
        tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
        if tensors:
            return tensors
        raise CheckpointError(f"{where}: no tensors found; top-level keys: {sorted(map(str, obj))[:20]}")
    raise CheckpointError(f"{where}: expected a dict of tensors, found {type(obj).__name__}")


def strip_prefix(state: Mapping[str, Tensor], prefixes: tuple[str, ...] = ("module.",)) -> dict[str, Tensor]:
    """Remove DataParallel / wrapper prefixes that every key carries."""
    out = dict(state)
    for prefix in prefixes:
        if out and all(k.startswith(prefix) for k in out):
            out = {k[len(prefix) :]: v for k, v in out.items()}
    return out


def load_state_dict_checked(
    model: nn.Module, state: Mapping[str, Tensor], *, strict: bool = True, where: str = "checkpoint"
) -> tuple[list[str], list[str]]:
    """Load `state` into `model`, naming every missing, unexpected or mis-shaped key.

    Returns (missing, unexpected) when strict is False. Shape mismatches are always errors.
    """
    own = model.state_dict()
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    problems = []
    if mismatched:
        problems.append("shape mismatch:\n  " + "\n  ".join(mismatched))
    if strict and missing:
        problems.append(f"missing keys ({len(missing)}): " + ", ".join(missing[:30]))
    if strict and unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): " + ", ".join(unexpected[:30]))
    if problems:
        raise CheckpointError(f"{where} does not fit {type(model).__name__}:\n" + "\n".join(problems))
    model.load_state_dict(dict(state), strict=False)
    return missing, unexpected
