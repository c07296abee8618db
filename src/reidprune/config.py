"""Experiment configuration: YAML files validated into typed dataclasses, dotted overrides.

One `ExperimentConfig` drives every job (train, prune, eval, demo). Each section is a dataclass
owned by the package that uses it; this module only composes them, loads YAML into them with
OmegaConf (which rejects unknown keys and wrong types, naming the key), applies
`section.key=value` overrides from the command line, and writes the resolved config next to the
outputs so that every result can be reproduced.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from reidprune.atomic import write_text
from reidprune.compress.config import PruneConfig
from reidprune.data.config import DataConfig
from reidprune.errors import ConfigError  # reidprune.config.ConfigError stays importable: the same class
from reidprune.evaluate.config import EvalConfig
from reidprune.models.config import ModelConfig
from reidprune.schema import check_device, describe, structured  # check_device: re-exported
from reidprune.train.config import TrainConfig

T = TypeVar("T")
__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "check_device",
    "load_config",
    "replace",
    "save_config",
    "structured",
    "to_yaml",
]


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    output_dir: str = "runs/experiment"
    seed: int = 0
    device: str = "auto"  # "auto" picks cuda when present, else cpu
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> ExperimentConfig:
    """Load an experiment YAML (or the defaults when `path` is None) and apply dotted overrides.

    overrides: strings like ``train.lr=1e-4`` or ``data.root=/datasets/market1501``.
    """
    base = OmegaConf.structured(ExperimentConfig)
    layers: list[Any] = [base]
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            layers.append(OmegaConf.load(path))
        except Exception as err:  # yaml errors carry line numbers; keep them
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}': expected section.key=value, e.g. train.lr=1e-4")
    if overrides:
        layers.append(OmegaConf.from_dotlist(list(overrides)))
    try:
        merged = OmegaConf.merge(*layers)
        config: ExperimentConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as err:
        where = str(path) if path is not None else "override"
        raise ConfigError(f"{where}: {describe(err)}") from None
    check_device(config.device)
    return config


def to_yaml(config: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def save_config(config: Any, directory: str | Path, filename: str = "config.yaml") -> Path:
    """Write the resolved config next to a job's outputs."""
    return write_text(Path(directory) / filename, to_yaml(config))


def replace(config: T, **changes: Any) -> T:
    return dataclasses.replace(config, **changes)  # type: ignore[type-var]
