"""`prune.method: budget` in experiment configs: its options agree with `to_budget`, bad settings are
refused before any work, and a prune job searches, fine-tunes, verifies and writes plan.json."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch

import reidprune
from reidprune.budget.api import IMPORTANCE, to_budget
from reidprune.budget.candidates import TOKEN_METHODS
from reidprune.budget.latency_cost import LatencyCostModel
from reidprune.compress.config import PruneConfig
from reidprune.compress.schedule import (
    BUDGET_IMPORTANCE,
    BUDGET_LATENCY_OPTIONS,
    BUDGET_TOKEN_METHODS,
    SCHEDULE_ARGS,
    check_prune_config,
    method_options,
)
from reidprune.config import load_config
from reidprune.errors import CompressionError
from reidprune.jobs.budget import VERIFY_KEYS
from reidprune.models import create
from tiny_models import TINY_VIT


def test_budget_options_are_to_budgets_keywords_and_the_checks() -> None:
    keywords = {p.name for p in inspect.signature(to_budget).parameters.values() if p.kind is p.KEYWORD_ONLY}
    from_config = keywords - SCHEDULE_ARGS - {"cost_model", "calib_batches"}
    assert method_options("budget") == from_config | set(VERIFY_KEYS)
    assert method_options("budget-search") == method_options("budget")
    latency = set(inspect.signature(LatencyCostModel.for_model).parameters) - {
        "cls",
        "model",
        "runtime",
        "batch",
        "threads",
        "measure",
        "token_kinds",  # set by to_budget from token_method
    }
    assert latency == BUDGET_LATENCY_OPTIONS


def test_the_config_knows_the_search_token_methods_and_importances() -> None:
    assert BUDGET_TOKEN_METHODS == TOKEN_METHODS
    assert BUDGET_IMPORTANCE == IMPORTANCE


@pytest.mark.parametrize(
    ("prune", "message"),
    [
        (PruneConfig("budget", options={}), "set exactly one of prune.options"),
        (
            PruneConfig("budget", options={"target_speedup": 2.0, "target_gmacs": 1.0}),
            "got target_speedup, target_gmacs",
        ),
        (PruneConfig("budget", options={"target_speedup": -1}), "target_speedup=-1: expected a positive"),
        (PruneConfig("budget", rate=0.3, options={"target_gmacs": 1.0}), "leave the rate 0"),
        (PruneConfig("budget", rounds=2, options={"target_gmacs": 1.0}), "prune.rounds must be 1"),
        (
            PruneConfig("budget", options={"target_gmacs": 1.0, "latency": {"points": 3}}),
            "prune.options.latency.points is not a latency model option",
        ),
        (
            PruneConfig("budget", options={"target_gmacs": 1.0, "latency": {"grid": "fine"}}),
            "latency.grid='fine': expected coarse",
        ),
        (
            PruneConfig("budget", options={"target_gmacs": 1.0, "rate": 0.2}),
            "prune.options.rate is not an option",
        ),
        (
            PruneConfig("budget", options={"target_gmacs": 1.0, "token_method": "evit"}),
            "prune.options.token_method='evit': expected one of amg, topk, tome",
        ),
        (
            PruneConfig("budget", options={"target_gmacs": 1.0, "importance": "taylor"}),
            "prune.options.importance='taylor': expected one of sensitivity, scores",
        ),
        (
            PruneConfig("budget", options={"target_gmacs": 1.0, "tolerance": 1.5}),
            "prune.options.tolerance=1.5: expected a fraction in [0, 1)",
        ),
        (
            PruneConfig("budget", options={"target_gmacs": 1.0, "verify_time": None}),
            "prune.options.verify_time=None: expected positive seconds",
        ),
        (
            PruneConfig("budget", options={"target_gmacs": 1.0, "verify": "no"}),
            "prune.options.verify='no': expected true or false",
        ),
    ],
)
def test_bad_budget_settings_are_refused_in_one_line(prune: PruneConfig, message: str) -> None:
    with pytest.raises(CompressionError, match=None) as err:
        check_prune_config(prune)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_budget_prune_job_searches_fine_tunes_and_verifies(synth_root: Path, tmp_path: Path) -> None:
    from reidprune.jobs.prune import prune_experiment

    torch.manual_seed(0)
    # big enough for its blocks to outweigh the stem, head and call overhead at batch 1 (as the CLI test)
    size = {
        "img_size": [128, 64],
        "embed_dim": 64,
        "head_dim": 16,
        "num_heads": [4] * 3,
        "mlp_hidden": [256] * 3,
    }
    weights = reidprune.save(create("vit_tiny_reid", **{**TINY_VIT, **size}), tmp_path / "dense")
    out = tmp_path / "run"
    options = (
        "{target_speedup: 1.3, runtime: onnxruntime, batch: 1, threads: 1, verify_time: 0.2,"
        f" latency: {{grid: coarse, min_time: 0.001, calib_time: 0.05, cache: {tmp_path / 'tables'}}}}}"
    )
    cfg = load_config(
        overrides=[
            "data.format=synth",
            f"data.root={synth_root}",
            "data.synth_ids=4",
            "data.height=128",
            "data.width=64",
            "data.num_workers=0",
            "data.batch_size=8",
            "data.num_instances=4",
            "train.progress=false",
            "train.distill=soft",
            f"model.weights={weights}",
            "prune.method=budget",
            "prune.final_epochs=1",
            "prune.calib_batches=2",
            f"prune.options={options}",
            f"output_dir={out}",
        ]
    )
    before = torch.get_num_threads()
    try:
        summary = prune_experiment(cfg)
    finally:
        torch.set_num_threads(before)
    plan = json.loads((out / "plan.json").read_text())
    verify = json.loads((out / "verify.json").read_text())
    assert plan["target"] == {**plan["target"], "kind": "speedup", "value": 1.3, "unit": "ms"}
    assert plan["predicted_speedup"] >= 1.3
    assert plan["finetune"]["distill"] == "soft" and plan["verify"] == verify
    assert verify["measured"]["speedup"] > 0 and isinstance(verify["missed"], bool)
    assert (out / "model.onnx").is_file()
    assert [s["stage"] for s in summary["stages"]] == ["budget search", "final", "verify"]
    small = reidprune.load(out / "model")
    assert small.compression_plan.method == "budget-search"
    assert [b["heads"] for b in plan["blocks"]] == small.arch.num_heads
    assert summary["pruned"]["gmacs"] < summary["unpruned"]["gmacs"]


def _job_config(synth_root: Path, tmp_path: Path, options: str):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    weights = reidprune.save(create("vit_tiny_reid", **TINY_VIT), tmp_path / "dense")
    return load_config(
        overrides=[
            "data.format=synth",
            f"data.root={synth_root}",
            "data.synth_ids=4",
            "data.num_workers=0",
            "data.batch_size=8",
            "data.num_instances=4",
            "train.progress=false",
            f"model.weights={weights}",
            "prune.method=budget",
            "prune.final_epochs=0",
            "prune.calib_batches=2",
            f"prune.options={options}",
            f"output_dir={tmp_path / 'run'}",
        ]
    )


def test_a_prune_job_searches_the_token_method_of_its_options(synth_root: Path, tmp_path: Path) -> None:
    from reidprune.jobs.prune import prune_experiment

    out = tmp_path / "run"
    cfg = _job_config(
        synth_root, tmp_path, "{target_speedup: 1.3, runtime: gmacs, token_method: tome, verify: false}"
    )
    prune_experiment(cfg)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["search"]["token_method"] == "tome" and plan["predicted_speedup"] >= 1.3
    assert reidprune.load(out / "model").arch.tokens["method"] == "tome"


def test_a_job_re_plans_an_exceeded_target_before_fine_tuning(
    synth_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """options.replan: the searched model is measured, found faster than asked (faked measurement),
    searched again with the correction (times any correction given) and the new plan is kept."""
    import reidprune.budget.api as api
    import reidprune.budget.verify as verify
    from reidprune.jobs.prune import prune_experiment

    corrections: list[float] = []
    real_search = api.to_budget

    def search(*args, **kwargs):  # type: ignore[no-untyped-def]
        corrections.append(kwargs["correction"])
        return real_search(*args, **kwargs)

    verdicts = iter([(-0.3, True, 0.7), (0.01, False, 1.0), (0.01, False, 1.0)])

    def fake_verify(original, small, plan, *, onnx_path=None, min_time=2.0, tolerance=0.07):  # type: ignore[no-untyped-def]
        shortfall, overshot, correction = next(verdicts)
        return {
            "target": {k: plan["target"][k] for k in ("kind", "value", "unit")},
            "tolerance": tolerance,
            "predicted": {"speedup": plan["predicted_speedup"]},
            "measured": {"original": 1.0, "compressed": 1.0, "unit": "GMACs", "speedup": 1.0},
            "shortfall": shortfall,
            "missed": False,
            "overshot": overshot,
            "correction": correction,
        }

    monkeypatch.setattr(api, "to_budget", search)
    monkeypatch.setattr(verify, "verify_budget", fake_verify)
    cfg = _job_config(
        synth_root, tmp_path, "{target_speedup: 1.5, runtime: gmacs, correction: 0.9, replan: true}"
    )
    prune_experiment(cfg)
    assert corrections == [0.9, pytest.approx(0.9 * 0.7)]
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    assert plan["replan"]["kept"] == "second" and plan["replan"]["first"]["overshot"]
    assert plan["target"]["correction"] == pytest.approx(0.63) and plan["verify"]["shortfall"] == 0.01


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("{target_speedup: 1.5, runtime: gmacs, replan: yes-please}", "prune.options.replan='yes-please'"),
        ("{target_speedup: 1.5, runtime: gmacs, replan: true, verify: false}", "needs verify: true"),
        ("{target_speedup: 1.5, runtime: gmacs, verify_time: 0}", "prune.options.verify_time=0"),
    ],
)
def test_bad_verification_options_name_their_key(
    options: str, message: str, synth_root: Path, tmp_path: Path
) -> None:
    from reidprune.jobs.prune import prune_experiment

    with pytest.raises(CompressionError, match=message):
        prune_experiment(_job_config(synth_root, tmp_path, options))
