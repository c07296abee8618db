"""reidprune's own model format: model.json (architecture + compression plan) + weights.safetensors.

No pickle anywhere: the architecture is plain JSON validated against the family's dataclass, the
weights are safetensors. Files are written to temporary names and renamed, so an interrupted save
never leaves a half-written model behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from reidprune.compress.plan import CompressionPlan, plan_of
from reidprune.models.checkpoint_io import CheckpointError, load_state_dict_checked, read_safetensors
from reidprune.models.registry import arch_from_dict, arch_to_dict, build

FORMAT = "reidprune"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"


def _atomic_write_bytes(target: Path, data: bytes) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)


def save(model: nn.Module, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write `model` to `directory` as model.json + weights.safetensors. Returns the directory."""
    arch = getattr(model, "arch", None)
    if arch is None:
        raise TypeError(
            f"{type(model).__name__} has no .arch; only models built by reidprune.models can be saved"
        )
    if getattr(model, "deploy_folded", False):
        raise CheckpointError(
            f"{type(model).__name__} has its BatchNorm folded into its convs (reidprune.measure."
            "fold_batchnorm / prepare_for_inference): its weights no longer match its arch, so it "
            "cannot be saved; save the model before folding and fold it again after loading"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    plan = plan_of(model)
    description = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": arch_to_dict(arch),
        "plan": plan.to_dict() if plan is not None else None,
        "metadata": metadata or {},
    }
    # safetensors refuses shared storage; every tensor gets its own contiguous copy
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    tmp_weights = directory / f".{WEIGHTS}.tmp"
    save_file(tensors, str(tmp_weights), metadata={"format": FORMAT})
    os.replace(tmp_weights, directory / WEIGHTS)
    _atomic_write_bytes(directory / MODEL_JSON, json.dumps(description, indent=2).encode())
    return directory


def read_description(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / MODEL_JSON
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a reidprune model directory (no {MODEL_JSON})")
    try:
        description = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(description, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got a {type(description).__name__}")
    if description.get("format") != FORMAT or not isinstance(description.get("arch"), dict):
        raise CheckpointError(f"{path}: expected keys 'format'='{FORMAT}' and 'arch' (an object)")
    version = description.get("format_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{path}: key 'format_version': expected an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {version} is newer than this reidprune "
            f"understands ({FORMAT_VERSION}); upgrade reidprune"
        )
    if not isinstance(description.get("metadata", {}), dict):
        raise CheckpointError(f"{path}: key 'metadata': expected an object")
    if description.get("plan") is not None:
        CompressionPlan.from_dict(description["plan"], where=f"{path}: key 'plan'")
    return description


def load(directory: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model saved by `save`, weights included, in eval mode."""
    directory = Path(directory)
    description = read_description(directory)
    arch = arch_from_dict(description["arch"], where=str(directory / MODEL_JSON))
    model = build(arch)
    if description.get("plan"):
        model.compression_plan = CompressionPlan.from_dict(
            description["plan"], where=str(directory / MODEL_JSON)
        )  # type: ignore[assignment]
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{directory}: {WEIGHTS} is missing")
    state = read_safetensors(weights, device=str(map_location))
    load_state_dict_checked(model, state, strict=True, where=str(weights))
    return model.to(map_location).eval()


def is_model_dir(path: str | Path) -> bool:
    return (Path(path) / MODEL_JSON).is_file()
