"""CompressionPlan: what a compression step removed, and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from reidprune.errors import CheckpointError


@dataclass
class CompressionPlan:
    """One compression step, saved with the model and shown in the report.

    method: e.g. "token-amg", "head-entropy", "filter-bafd".
    rate: the fraction removed that was asked for.
    details: JSON-able per-layer decisions (heads kept per block, tokens kept per block, kept
      filter indices per conv, ...) and, where cheap, the scores behind them.
    previous: the plans of earlier steps in a cascade (token after head, ...), oldest first.
    """

    method: str
    rate: float
    details: dict[str, Any] = field(default_factory=dict)
    previous: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Any, where: str = "compression plan") -> CompressionPlan:
        """The plan saved by `to_dict`; a malformed one (from a file) is a CheckpointError naming the key."""
        if not isinstance(values, dict):
            raise CheckpointError(f"{where}: expected an object, got {type(values).__name__}")
        unknown = sorted(str(k) for k in set(values) - set(_PLAN_KEYS))
        if unknown:
            raise CheckpointError(f"{where}: unknown key(s) {unknown}; known: {list(_PLAN_KEYS)}")
        for key, (kind, required) in _PLAN_KEYS.items():
            value = values.get(key)
            if key not in values and not required:
                continue
            if isinstance(value, bool) or not isinstance(value, kind):
                raise CheckpointError(f"{where}: key '{key}': expected {_KIND_NAMES[kind]}, got {value!r}")
        if not all(isinstance(step, dict) for step in values.get("previous", [])):
            raise CheckpointError(f"{where}: key 'previous': expected a list of plan objects")
        return cls(**values)

    def then(self, method: str, rate: float, details: dict[str, Any]) -> CompressionPlan:
        """The plan after a further step, keeping this one as history."""
        return CompressionPlan(method, rate, details, [*self.previous, self.to_dict()])


# key: (accepted types, required)
_PLAN_KEYS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "method": (str, True),
    "rate": ((int, float), True),
    "details": (dict, False),
    "previous": (list, False),
}
_KIND_NAMES = {str: "a string", (int, float): "a number", dict: "an object", list: "a list"}


def plan_of(model: Any) -> CompressionPlan | None:
    return getattr(model, "compression_plan", None)
