"""Compress to a budget: search per-block token, head and filter counts under a cost target.

    small, plan = reidprune.compress.to_budget(model, calib_loader, target_gmacs=2.5)

Modules: `sketch` (what a plan changes, the cost model's input), `cost` (the `CostModel`
protocol and the GMACs cost model), `candidates` (the search space: units and their importance,
and applying a plan to a model), `search` (the greedy search), `proxy` (the distillation proxy
that compares plans), `api` (`to_budget`). docs/budget_search.md describes the algorithm.
"""
