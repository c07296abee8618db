"""Named model configurations and the families that build them (timm-style registry).

A *family* turns an architecture dataclass into a module (`build`). A *registry entry* is a
named function returning such a dataclass from keyword arguments (`create("vit_tiny_reid",
num_classes=751)`). Every model built here carries its architecture as `model.arch`, which is
what `reidprune.save` writes to `model.json`, including what compression changed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn

from reidprune.errors import CheckpointError, CompressionError, ConfigError, UnknownModelError

_FAMILIES: dict[str, tuple[type, Callable[[Any], nn.Module]]] = {}
_ENTRIES: dict[str, Callable[..., Any]] = {}


def register_family(name: str, arch_type: type, build_fn: Callable[[Any], nn.Module]) -> None:
    """Register how to build modules of one family from its architecture dataclass."""
    if not dataclasses.is_dataclass(arch_type) or "family" not in {
        f.name for f in dataclasses.fields(arch_type)
    }:
        raise TypeError(f"{arch_type.__name__} must be a dataclass with a 'family' field")
    _FAMILIES[name] = (arch_type, build_fn)


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register `fn(**kwargs) -> architecture dataclass` under `name`."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _ENTRIES:
            raise ValueError(f"model name '{name}' is registered twice")
        _ENTRIES[name] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_ENTRIES)


def arch_config(name: str, **kwargs: Any) -> Any:
    """The architecture dataclass of a registry entry, without building the module."""
    if name not in _ENTRIES:
        raise UnknownModelError(f"unknown model '{name}'; known models: {', '.join(list_models())}")
    return _ENTRIES[name](**kwargs)


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build a registry entry, e.g. ``create("transreid_base", num_classes=751, img_size=(256, 128))``."""
    return build(arch_config(name, **kwargs))


def build(arch: Any) -> nn.Module:
    """Build a module from an architecture dataclass (or its dict form from model.json)."""
    if isinstance(arch, dict):
        arch = arch_from_dict(arch)
    family = getattr(arch, "family", None)
    if family not in _FAMILIES:
        raise UnknownModelError(
            f"unknown model family '{family}'; known families: {', '.join(sorted(_FAMILIES))}"
        )
    model = _FAMILIES[family][1](arch)
    model.arch = arch  # type: ignore[assignment]
    return model


def arch_to_dict(arch: Any) -> dict[str, Any]:
    return dataclasses.asdict(arch)


def arch_from_dict(values: dict[str, Any], *, where: str = "architecture") -> Any:
    """Validate a dict (from model.json or ONNX metadata) into the family's architecture dataclass.

    Every field is checked against its annotation and bounds (`arch_values`), then the model is
    built on the meta device, which allocates nothing, so that an architecture that cannot be built
    or would hold more than MAX_PARAMETERS numbers is refused before any memory is taken.
    Strings are kept exactly as saved (no interpolation). Raises CheckpointError naming `where`.
    """
    from reidprune.models.arch_values import arch_from_values

    if not isinstance(values, dict):
        raise CheckpointError(f"{where}: the architecture must be a JSON object, got {type(values).__name__}")
    family = values.get("family")
    if not isinstance(family, str) or family not in _FAMILIES:
        raise UnknownModelError(
            f"{where}: unknown model family '{family}'; known families: {', '.join(sorted(_FAMILIES))}"
        )
    arch = arch_from_values(_FAMILIES[family][0], values, where=where)
    _check_size(arch, where)
    return arch


# 16 GB of float32 weights; the largest ViTs used for re-ID (ViT-H) hold 0.63 G.
MAX_PARAMETERS = 4 * 10**9


def _check_size(arch: Any, where: str) -> None:
    import torch

    if "tokens" in {f.name for f in dataclasses.fields(arch)}:
        # a token-reduction spec adds no parameters, and its reducers build index tensors with
        # torch.nonzero, which the meta device cannot run: size the model without it (the real
        # build checks the spec)
        arch = dataclasses.replace(arch, tokens=None)
    try:
        with torch.device("meta"):
            model = _FAMILIES[arch.family][1](arch)
    except (ConfigError, CompressionError) as err:
        raise CheckpointError(f"{where}: {err}") from None
    except (ValueError, RuntimeError, ZeroDivisionError) as err:  # e.g. a zero width torch cannot build
        raise CheckpointError(
            f"{where}: this architecture cannot be built ({type(err).__name__}: {err})"
        ) from None
    count = sum(t.numel() for t in (*model.parameters(), *model.buffers()))
    if count > MAX_PARAMETERS:
        raise CheckpointError(
            f"{where}: the architecture would hold {count:,} numbers (at most {MAX_PARAMETERS:,} are "
            "accepted); check its sizes (embed_dim, widths, img_size, num_classes)"
        )
