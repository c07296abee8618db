"""Loading weights into reidprune models: own model directories and foreign checkpoints.

Foreign formats differ per family (timm / TransReID / LA-Transformer / AMG for ViTs, torchvision /
BAFD for ResNets), so each family registers an importer here:

    register_importer("vit", import_state, arch_from_state)

- ``import_state(model, state, strict, where) -> LoadResult`` maps a flat {name: tensor} dict onto
  the built model (renaming keys, resizing what may be resized) and loads it, naming every
  missing / unexpected / mis-shaped key on failure;
- ``arch_from_state(state, base_arch) -> arch`` (optional) adapts an architecture to a checkpoint
  whose shapes record structural changes (pruned heads per block, number of classes, cameras), so
  that ``create_from_checkpoint`` can build the right model before loading.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from reidprune.models.checkpoint_io import (
    CheckpointError,
    load_state_dict_checked,
    read_checkpoint,
    read_safetensors,
)
from reidprune.models.registry import arch_config, arch_from_dict, arch_to_dict, build


@dataclass
class LoadResult:
    """What a load did.

    format: the detected source format ("reidprune", "timm", "transreid", "la-transformer", ...).
    missing / unexpected: keys left out (only non-empty with strict=False).
    initialised: model keys the source cannot provide by design (e.g. a re-ID head when loading an
      ImageNet backbone); they keep their initialisation.
    resized: keys whose tensors were resampled to the model's shape (position embeddings).
    """

    format: str
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)


Importer = Callable[[nn.Module, dict[str, Tensor], bool, str], LoadResult]
ArchFromState = Callable[[Mapping[str, Tensor], Any], Any]

_IMPORTERS: dict[str, Importer] = {}
_ARCH_FROM_STATE: dict[str, ArchFromState] = {}


def register_importer(family: str, fn: Importer, arch_from_state: ArchFromState | None = None) -> None:
    """Register the foreign-checkpoint importer (and optional shape-based arch inference) of a family."""
    _IMPORTERS[family] = fn
    if arch_from_state is not None:
        _ARCH_FROM_STATE[family] = arch_from_state


def _family(model: nn.Module) -> str:
    arch = getattr(model, "arch", None)
    if arch is None:
        raise TypeError(f"{type(model).__name__} has no .arch; build it with reidprune.models.create")
    return str(arch.family)


def _importer(family: str) -> Importer:
    if family not in _IMPORTERS:
        known = ", ".join(sorted(_IMPORTERS)) or "none"
        raise CheckpointError(f"no checkpoint importer for model family '{family}' (importers: {known})")
    return _IMPORTERS[family]


def _load_model_dir(model: nn.Module, directory: Path, strict: bool) -> LoadResult:
    from reidprune.models.serialization import WEIGHTS, read_description

    description = read_description(directory)
    # through the dataclass: fields added since the file was written take their defaults
    saved, own = (
        arch_to_dict(arch_from_dict(description["arch"], where=str(directory))),
        arch_to_dict(model.arch),
    )
    differing = sorted(k for k in set(saved) | set(own) if saved.get(k) != own.get(k))
    if differing:
        detail = "; ".join(f"{k}: saved {saved.get(k)!r} vs model {own.get(k)!r}" for k in differing[:6])
        raise CheckpointError(
            f"{directory} holds a different architecture ({detail}); "
            "rebuild it with reidprune.models.load(directory) instead"
        )
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{directory}: {WEIGHTS} is missing")
    missing, unexpected = load_state_dict_checked(
        model, read_safetensors(weights), strict=strict, where=str(weights)
    )
    return LoadResult("reidprune", missing=missing, unexpected=unexpected)


def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = True) -> LoadResult:
    """Load weights into a built model from a reidprune model directory or a foreign checkpoint file.

    Foreign files are read without executing pickled code (weights_only) and their keys are mapped by
    the importer of ``model.arch.family``. strict=True: any missing or unexpected key is an error that
    names the keys; shape mismatches are always errors naming both shapes.
    """
    path = Path(path)
    if path.is_dir():
        return _load_model_dir(model, path, strict)
    return import_state(model, read_checkpoint(path), strict=strict, where=str(path))


def import_state(
    model: nn.Module, state: Mapping[str, Tensor], strict: bool = True, where: str = "checkpoint"
) -> LoadResult:
    """Like load_checkpoint, for a {name: tensor} dict already in memory."""
    return _importer(_family(model))(model, dict(state), strict, where)


def arch_from_checkpoint_state(state: Mapping[str, Tensor], base_arch: Any) -> Any:
    """The architecture `base_arch` adapted to the shapes of `state` (identity if the family cannot)."""
    fn = _ARCH_FROM_STATE.get(str(base_arch.family))
    return fn(state, base_arch) if fn is not None else base_arch


def create_from_checkpoint(name: str, path: str | Path, strict: bool = True, **kwargs: Any) -> nn.Module:
    """Build registry entry `name` shaped like the checkpoint at `path`, and load it.

    A reidprune model directory is rebuilt from its own model.json (name and kwargs are not needed).
    For foreign files the architecture of ``create(name, **kwargs)`` is adapted to the checkpoint's
    shapes first (e.g. AMG head-pruned blocks, number of classes), then the weights are loaded.
    """
    path = Path(path)
    if path.is_dir():
        from reidprune.models.serialization import load

        return load(path)
    state = read_checkpoint(path)
    arch = arch_from_checkpoint_state(state, arch_config(name, **kwargs))
    model = build(arch)
    import_state(model, state, strict=strict, where=str(path))
    return model
