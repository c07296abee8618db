"""Deprecated path (one release): `CompressionPlan` lives in `reidprune.models.plan`, below the models
that save it. `reidprune.compress.CompressionPlan` stays the public name."""

from reidprune.models.plan import CompressionPlan, flat_plan, plan_of

__all__ = ["CompressionPlan", "flat_plan", "plan_of"]
