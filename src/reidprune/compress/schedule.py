"""Which compression methods exist and which options each takes: the checks a prune job runs before
any work (`check_prune_config`). The schedule that prunes and fine-tunes in rounds is
`reidprune.jobs.schedule.run_schedule`, above both compress and train.
"""

from __future__ import annotations

import inspect
from typing import Any

from reidprune.compress.config import PruneConfig
from reidprune.errors import CompressionError

FAMILIES = ("token", "head", "filter")
# the joint search under a latency / GMACs budget (`reidprune.budget.to_budget`): one method, two names
BUDGET_METHODS = ("budget", "budget-search")
BUDGET_TARGETS = ("target_speedup", "target_latency_ms", "target_gmacs")
# prune.options of the budget method: the keywords of `to_budget` a YAML can hold (the schedule passes
# data, calib_batches, seed and device itself; cost_model is an object) and the verification's
# (verify, verify_time, tolerance, replan). Kept here, not read from `to_budget`, because compress sits below
# budget (tests/budget/test_budget_config.py checks that the two agree).
BUDGET_OPTIONS = frozenset(
    {
        *BUDGET_TARGETS,
        "runtime",
        "batch",
        "threads",
        "latency",
        "correction",
        "head_weights",
        "token_method",
        "token_mode",
        "min_tokens",
        "min_heads",
        "criterion",
        "importance",
        "sensitivity_points",
        "sensitivity_images",
        "sensitivity_stages",
        "sensitivity_cache",
        "verify",
        "verify_time",
        "tolerance",
        "replan",
    }
)
# prune.options.token_method: how the search reduces ViT tokens (budget.candidates.TOKEN_METHODS)
BUDGET_TOKEN_METHODS = ("amg", "topk", "tome")
# prune.options.importance: the search's group losses (budget.api.IMPORTANCE)
BUDGET_IMPORTANCE = ("sensitivity", "scores")
# prune.options.latency: options of the runtime latency model (grid: "coarse" | "full")
BUDGET_LATENCY_OPTIONS = frozenset({"cache", "grid", "min_time", "chain", "calibrate", "calib_time"})


def split_method(method: str) -> tuple[str, str]:
    """'token-amg' -> ('token', 'amg'), 'budget' / 'budget-search' -> ('budget', 'search'); raises
    CompressionError for anything else."""
    if method in BUDGET_METHODS:
        return "budget", "search"
    family, _, name = method.partition("-")
    if family not in FAMILIES or not name:
        raise _unknown_method(method)
    return family, name


def _unknown_method(method: str) -> CompressionError:
    return CompressionError(
        f"prune.method='{method}': expected token-amg|token-topk|token-pm|token-tome, "
        "head-entropy|head-magnitude|head-random, filter-hfp|filter-sfp|filter-fpgm|filter-bafd or budget"
    )


# Arguments the schedule passes to the methods itself, or that are objects rather than YAML values:
# never keys of prune.options.
SCHEDULE_ARGS = frozenset(
    {"data", "max_batches", "device", "seed", "statistic", "loss_fn", "teacher", "check_size"}
)


def _keyword_only(fn: Any) -> set[str]:
    return {p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY}


def method_options(method: str) -> set[str]:
    """The keys `prune.options` may hold for `method` ("token-amg", "head-entropy", ...): what the
    function the schedule calls takes besides the arguments the schedule passes itself. Raises
    CompressionError for a method that does not exist."""
    family, name = split_method(method)
    if family == "budget":
        return set(BUDGET_OPTIONS)
    if family == "token":
        from reidprune.compress.tokens import METHOD_OPTIONS, prune_tokens

        if name in METHOD_OPTIONS:  # amg's `seed` is its own: the schedule passes no seed to tokens
            return (_keyword_only(prune_tokens) - SCHEDULE_ARGS) | set(METHOD_OPTIONS[name])
    elif family == "head":
        from reidprune.compress.heads.prune import METHODS, prune_heads

        if name in METHODS:
            return _keyword_only(prune_heads) - SCHEDULE_ARGS
    else:
        from reidprune.compress.filters.api import METHODS, filter_pruning_callback, prune_filters

        if name in METHODS:
            return _keyword_only(prune_filters if name == "hfp" else filter_pruning_callback) - SCHEDULE_ARGS
    raise _unknown_method(method)


def check_prune_config(cfg: PruneConfig) -> tuple[str, str]:
    """Validate the schedule before any work is done: method, rate, rounds, epochs and options."""
    family, name = split_method(cfg.method)
    accepted = method_options(cfg.method)
    for key in cfg.options:
        if key not in accepted:
            raise CompressionError(
                f"prune.options.{key} is not an option of {cfg.method}; it accepts "
                f"{', '.join(sorted(accepted)) or 'no options'} (options written for another method "
                "must be removed when prune.method changes)"
            )
    if not 0.0 <= cfg.rate < 1.0:
        raise CompressionError(f"prune.rate={cfg.rate}: expected a fraction removed in [0, 1)")
    if cfg.rounds < 1:
        raise CompressionError(f"prune.rounds={cfg.rounds}: expected at least 1")
    for key in ("finetune_epochs", "final_epochs", "calib_batches"):
        if getattr(cfg, key) < 0:
            raise CompressionError(f"prune.{key}={getattr(cfg, key)}: expected >= 0")
    if family == "filter" and name != "hfp" and cfg.final_epochs < 1:
        raise CompressionError(
            f"prune.method={cfg.method} prunes softly during training: set prune.final_epochs >= 1"
        )
    if family == "token" and name != "amg" and cfg.rounds != 1:
        raise CompressionError(
            f"prune.method={cfg.method} is applied once: use prune.rounds=1 (only token-amg has rounds)"
        )
    if family == "filter" and cfg.rounds != 1:
        raise CompressionError("filter pruning runs in one stage: prune.rounds must be 1")
    if family == "budget":
        check_budget_options(cfg)
    return family, name


def check_verify_options(options: dict[str, Any]) -> None:
    """The verification's options of the budget method (`jobs.budget`), refused with their key."""
    for key in ("verify", "replan"):
        if key in options and not isinstance(options[key], bool):
            raise CompressionError(f"prune.options.{key}={options[key]!r}: expected true or false")
    if "verify_time" in options:
        time = options["verify_time"]
        if isinstance(time, bool) or not isinstance(time, int | float) or time <= 0:
            raise CompressionError(f"prune.options.verify_time={time!r}: expected positive seconds")
    if "tolerance" in options:
        tol = options["tolerance"]
        if isinstance(tol, bool) or not isinstance(tol, int | float) or not 0 <= tol < 1:
            raise CompressionError(f"prune.options.tolerance={tol!r}: expected a fraction in [0, 1)")
    if options.get("replan", False) and not options.get("verify", True):
        raise CompressionError("prune.options.replan re-plans from a measurement: it needs verify: true")


def check_budget_options(cfg: PruneConfig) -> None:
    """The budget method's own rules: one target, no rate, one round, a known token method, a latency
    mapping of known keys."""
    targets = [key for key in BUDGET_TARGETS if cfg.options.get(key) is not None]
    if len(targets) != 1:
        raise CompressionError(
            f"prune.method={cfg.method}: set exactly one of prune.options.{{{', '.join(BUDGET_TARGETS)}}}; "
            f"got {', '.join(targets) or 'none'}"
        )
    value = cfg.options[targets[0]]
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise CompressionError(f"prune.options.{targets[0]}={value!r}: expected a positive number")
    if cfg.rate != 0.0:
        raise CompressionError(
            f"prune.rate={cfg.rate}: prune.method={cfg.method} removes what its target needs; leave the rate 0"
        )
    if cfg.rounds != 1:
        raise CompressionError(f"prune.method={cfg.method} searches once: prune.rounds must be 1")
    token_method = cfg.options.get("token_method", "amg")
    if token_method not in BUDGET_TOKEN_METHODS:
        raise CompressionError(
            f"prune.options.token_method={token_method!r}: expected one of {', '.join(BUDGET_TOKEN_METHODS)}"
        )
    importance = cfg.options.get("importance", "sensitivity")
    if importance not in BUDGET_IMPORTANCE:
        raise CompressionError(
            f"prune.options.importance={importance!r}: expected one of {', '.join(BUDGET_IMPORTANCE)}"
        )
    check_verify_options(cfg.options)
    latency = cfg.options.get("latency")
    if latency is None:
        return
    if not isinstance(latency, dict):
        raise CompressionError(
            f"prune.options.latency={latency!r}: expected a mapping, e.g. {{grid: coarse}}"
        )
    unknown = sorted(set(latency) - BUDGET_LATENCY_OPTIONS)
    if unknown:
        raise CompressionError(
            f"prune.options.latency.{unknown[0]} is not a latency model option; it accepts "
            f"{', '.join(sorted(BUDGET_LATENCY_OPTIONS))}"
        )
    if latency.get("grid") not in (None, "coarse", "full"):
        raise CompressionError(
            f"prune.options.latency.grid={latency['grid']!r}: expected coarse (2 points per axis) or full"
        )
