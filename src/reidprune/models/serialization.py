"""reidprune's own model format: model.json (architecture + compression plan) + weights.safetensors.

No pickle anywhere: the architecture is plain JSON validated against the family's dataclass, the
weights are safetensors. `save` writes the whole folder under a temporary sibling name and swaps it
in (reidprune.atomic), so a reader or an interrupted save sees the old complete model or the new one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from reidprune.atomic import default_file_mode, restore_interrupted, temporary_folder
from reidprune.models import foreign
from reidprune.models.checkpoint_io import CheckpointError, load_state_dict_checked, read_safetensors
from reidprune.models.plan import CompressionPlan, plan_of
from reidprune.models.registry import arch_from_dict, arch_to_dict, build

FORMAT = "reidprune"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"


def _carry_over(old: Path, new: Path) -> None:
    """Other entries of a folder being replaced (e.g. an exported model.onnx) go into the new one;
    files as hard links where the file system allows, so nothing large is copied."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if not old.is_dir():
        return
    for item in old.iterdir():
        if item.name in (MODEL_JSON, WEIGHTS) or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, new / item.name, copy_function=link_or_copy)
        else:
            link_or_copy(str(item), str(new / item.name))


def save(model: nn.Module, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write `model` to `directory` as model.json + weights.safetensors. Returns the directory."""
    arch = getattr(model, "arch", None)
    if arch is None and foreign.is_foreign(model):  # torchvision / timm / torchreid CNN
        return foreign.save_foreign(model, directory, metadata)
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
    with temporary_folder(directory) as tmp:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        (tmp / MODEL_JSON).write_text(json.dumps(description, indent=2))
        for name in (WEIGHTS, MODEL_JSON):  # the usual mode (safetensors writes 0600), shareable
            os.chmod(tmp / name, default_file_mode())
        _carry_over(directory, tmp)
    return directory


def read_description(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    restore_interrupted(directory)  # a save killed between its two renames: the old model is back
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


def load(
    directory: str | Path, map_location: str | torch.device = "cpu", allow_import: bool = False
) -> nn.Module:
    """Rebuild a model saved by `save`, weights included, in eval mode. allow_import: let a foreign
    model whose base is a user's "package.module:factory" import that module."""
    directory = Path(directory)
    if (found := foreign.foreign_description(directory)) is not None:
        return foreign.load_foreign(directory, found, map_location, allow_import)
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
