"""`load_model`: the one way every job and verb gets its model.

    load_model("runs/baseline")                              # a run folder: its model/, final/ or best/
    load_model("runs/baseline/final", map_location="cuda")   # a reidprune model directory
    load_model("transreid_base", "vit_transreid_market.pth", model_cfg=cfg.model, data_cfg=cfg.data)
    load_model(cfg.model.name, num_classes=751, model_cfg=cfg.model, data_cfg=cfg.data)   # random

`reidprune train` (model.weights), `reidprune prune` (model.weights, train.teacher), `reidprune
eval` / `measure` (MODEL [--weights]) and the demo all call it, so a model directory, a run folder
or a foreign checkpoint means the same model everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from reidprune.data.config import DataConfig, requested_size
from reidprune.errors import CheckpointError, ConfigError
from reidprune.models.checkpoints import create_from_checkpoint
from reidprune.models.config import ModelConfig
from reidprune.models.registry import create
from reidprune.models.serialization import is_model_dir, load

# where the jobs leave their model, in the order looked at: prune runs write model/ (their final/
# holds fine-tuning logs), train runs final/ (and best/ when a validation split selected one)
RUN_MODEL_DIRS = {"model": "the compressed model", "final": "the final model", "best": "the best model"}


def run_model_dir(path: str | Path) -> Path | None:
    """The model directory inside run directory `path` (model/, else final/, else best/); None when
    `path` is itself a model directory or holds none of them."""
    path = Path(path)
    if is_model_dir(path):
        return None
    for name in RUN_MODEL_DIRS:
        if is_model_dir(path / name):
            return path / name
    return None


def resolve_model_dir(path: str | Path, *, log: Callable[[str], None] | None = None) -> Path:
    """`path` when it is a model directory, else the model of the run directory `path` (telling `log`
    which one was taken). Raises CheckpointError naming what was looked for."""
    path = Path(path)
    if is_model_dir(path):
        return path
    inner = run_model_dir(path)
    if inner is None:
        raise CheckpointError(
            f"{path}: not a reidprune model directory (no model.json) nor a run directory with "
            f"{' / '.join(f'{name}/model.json' for name in RUN_MODEL_DIRS)}"
        )
    if log is not None:
        log(f"{path} is a run directory: using {RUN_MODEL_DIRS[inner.name]}, {inner}")
    return inner


def is_saved_model(path: str | Path) -> bool:
    """True for a model directory or a run directory holding one (what `resolve_model_dir` accepts)."""
    return is_model_dir(path) or run_model_dir(path) is not None


def load_model(
    source: str | Path,
    weights: str | Path | None = None,
    *,
    model_cfg: ModelConfig | None = None,
    data_cfg: DataConfig | None = None,
    num_classes: int | None = None,
    map_location: Any = None,
    log: Callable[[str], None] | None = None,
    allow_import: bool = False,
) -> nn.Module:
    """The model `source` names, in eval mode, on `map_location` (default: the CPU).

    source: a reidprune model directory, a run directory holding one, or a registry name.
    weights: for a registry name: a foreign checkpoint (.pth / .safetensors), into whose shapes the
      entry is built first (pruned heads, AMG / PM token state, classes, filter widths), or a
      reidprune model directory / run directory (rebuilt from its own model.json: the name does not
      matter then). None: the registry entry with random weights.
    model_cfg: `strict` loading and the entry's extra arguments (`kwargs`) for a registry name.
    data_cfg: its data.height x data.width, when set, is the input size a registry entry is built for.
    num_classes: the classifier size of a registry entry whose weights do not fix it (model_cfg.kwargs
      may still set it).
    log: told which model of a run directory was taken.
    allow_import: let a saved foreign model whose base is a user's "package.module:factory" import
      that module (models/foreign.py; runs its code: only for models you trust).
    """
    if is_saved_model(source):
        if weights:
            raise ConfigError(
                f"{source} is a reidprune model directory with its own weights; drop --weights {weights}"
            )
        return load(
            resolve_model_dir(source, log=log),
            map_location=_saved_device(map_location),
            allow_import=allow_import,
        )
    if Path(source).exists():
        raise CheckpointError(
            f"{source}: not a reidprune model directory (no model.json), nor a run directory holding one, "
            "nor a registry name; a foreign checkpoint loads into a registry entry given with it, e.g. "
            "`reidprune eval transreid_base --weights model.pth`"
        )
    if weights and is_saved_model(weights):
        return load(
            resolve_model_dir(weights, log=log),
            map_location=_saved_device(map_location),
            allow_import=allow_import,
        )
    model_cfg = model_cfg if model_cfg is not None else ModelConfig(name=str(source))
    size = requested_size(data_cfg) if data_cfg is not None else None  # None: the entry's own size
    kwargs: dict[str, Any] = {
        **({"num_classes": num_classes} if num_classes else {}),
        **({"img_size": list(size)} if size is not None else {}),
        **model_cfg.kwargs,
    }
    if weights:
        model = create_from_checkpoint(str(source), weights, strict=model_cfg.strict, **kwargs)
    else:
        model = create(str(source), **kwargs)
    return model.to(_saved_device(map_location)).eval()


def _saved_device(map_location: Any) -> Any:
    return "cpu" if map_location is None else map_location
