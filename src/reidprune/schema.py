"""Validating plain values against a dataclass schema (OmegaConf), with one-line ConfigErrors.

Low in the layers (it imports only `reidprune.errors`), so that any package can validate its own
section or architecture without importing the experiment config that composes them all.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from reidprune.errors import ConfigError

T = TypeVar("T")


def structured(schema: type[T], values: dict[str, Any] | DictConfig | None = None, *, where: str = "") -> T:
    """Validate `values` against the dataclass `schema` and return an instance of it.

    Raises ConfigError naming `where` (a file or "override") and the offending key.
    """
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), values or {})
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        prefix = f"{where}: " if where else ""
        raise ConfigError(f"{prefix}{describe(err)}") from None


def describe(err: OmegaConfBaseException) -> str:
    """One line for an OmegaConf error: the key and the first line of its message."""
    key = getattr(err, "full_key", None)
    # OmegaConf appends "full_key: ... object_type=..." lines to its messages; one line is enough
    msg = (getattr(err, "msg", None) or str(err) or type(err).__name__).strip().splitlines()[0]
    return f"key '{key}': {msg}" if key else msg


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(name: str, key: str = "device") -> str:
    """Refuse a device name torch or this machine setup cannot mean (ConfigError naming `key`)."""
    if not isinstance(name, str) or not _DEVICE.fullmatch(name):
        raise ConfigError(f"{key}='{name}': expected auto, cpu, cuda, cuda:N or mps")
    return name
