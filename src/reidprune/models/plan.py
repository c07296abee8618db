"""CompressionPlan: what a compression step removed, and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from reidprune.errors import CheckpointError


@dataclass
class CompressionPlan:
    """One compression step, saved with the model and shown in the report.

    method: e.g. "token-amg", "head-entropy", "filter-bafd".
    rate: the fraction removed that was asked for.
    details: JSON-able per-layer decisions (heads kept per block, tokens kept per block, kept
      filter indices per conv, ...) and, where cheap, the scores behind them.
    previous: the earlier steps of a cascade or of an iterative schedule (token after head, head
      round 3 after rounds 1 and 2, ...), oldest first, each a flat {"method", "rate", "details"}
      dict: the history grows by one entry per step, never nests.
    """

    method: str
    rate: float
    details: dict[str, Any] = field(default_factory=dict)
    previous: list[dict[str, Any]] = field(default_factory=list)

    def step(self) -> dict[str, Any]:
        """This step alone, without its history: what a later step keeps in its `previous`."""
        return {"method": self.method, "rate": self.rate, "details": self.details}

    def to_dict(self) -> dict[str, Any]:
        return {**self.step(), "previous": [dict(entry) for entry in self.previous]}

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
        # older files nest each history entry's own history: read it flat
        return cls(**flat_plan(values))

    def then(self, method: str, rate: float, details: dict[str, Any]) -> CompressionPlan:
        """The plan after a further step, keeping this one as history."""
        return CompressionPlan(method, rate, details, [*self.previous, self.step()])


def flat_plan(values: dict[str, Any]) -> dict[str, Any]:
    """A plan dict with a flat history, also for model.json files written before the fix.

    Those stored every history entry with its own `previous` inside (so the file doubled per
    round). Their top-level `previous` already lists every earlier step in order, each nested
    `previous` only repeats a prefix of it, so dropping the nested lists loses nothing."""
    previous = values.get("previous") or []
    return {
        **values,
        "previous": [{k: v for k, v in entry.items() if k != "previous"} for entry in previous],
    }


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
