"""Reading foreign checkpoints safely, and loading state dicts with errors that say what is wrong."""

from __future__ import annotations

import argparse
import pickle
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
        # attribute container: allowing it executes no code
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        detail = _error_line(err, "Unsupported")
        if "Unsupported global" not in detail:  # not a pickle of objects at all: random bytes, text, JSON
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({detail})") from None
        raise CheckpointError(
            f"{path}: refused to unpickle: the file holds objects other than tensors and plain containers "
            f"({detail}). reidprune only reads weights-only checkpoints; re-save it with "
            "torch.save(model.state_dict(), path) in the environment that produced it"
        ) from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, IndexError, ValueError) as err:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_error_line(err)})") from None
    return unwrap_state_dict(obj, where=str(path))


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


def _error_line(err: BaseException, prefer: str = "") -> str:
    """The most telling non-empty line of an exception message (torch's are long)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    preferred = [line for line in lines if prefer and prefer in line]
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
