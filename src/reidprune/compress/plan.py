"""CompressionPlan: what a compression step removed, and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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
    def from_dict(cls, values: dict[str, Any]) -> CompressionPlan:
        unknown = set(values) - {"method", "rate", "details", "previous"}
        if unknown:
            raise ValueError(f"compression plan: unknown keys {sorted(unknown)}")
        return cls(**values)

    def then(self, method: str, rate: float, details: dict[str, Any]) -> CompressionPlan:
        """The plan after a further step, keeping this one as history."""
        return CompressionPlan(method, rate, details, [*self.previous, self.to_dict()])


def plan_of(model: Any) -> CompressionPlan | None:
    return getattr(model, "compression_plan", None)
