"""Budget searches in the report: plan.json / verify.json read, the frontier (searched vs uniform plans
against latency measured on the searches' deployment runtime) and the per-block allocation drawn."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from reidprune.budget.api import to_budget
from reidprune.config import load_config, save_config
from reidprune.models import load, save
from reidprune.report import build_report, load_run
from reidprune.report.budget import allocation_figure, budget_rows, category, frontier_figure, read_budget
from tiny_models import tiny_resnet, tiny_vit

IMG_ALT = re.compile(r'<img src="data:image/png;base64,[^"]+" alt="([^"]+)"')
PNG = b"\x89PNG"


def _batches() -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [{"image": torch.randn(4, 3, 64, 32, generator=gen), "label": torch.tensor([0, 0, 1, 1])}]


def _verify(speedup: float, target: float) -> dict:
    shortfall = 1.0 - speedup / target
    return {
        "target": {"kind": "speedup", "value": target, "unit": "ms"},
        "measured": {"original": 2.0, "compressed": 2.0 / speedup, "speedup": speedup, "unit": "ms"},
        "shortfall": shortfall,
        "missed": shortfall > 0.07,
    }


@pytest.fixture(scope="module")
def budget_run(report_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prune run laid out as `prune.method: budget` writes it, next to the report fixtures' token-amg
    run and from the same trained model; its plan names a PyTorch batch-1 deployment (timed quickly)."""
    amg = report_runs["amg"]
    cfg = load_config(amg / "config.yaml")
    dense = load(cfg.model.weights)
    small, plan = to_budget(dense, _batches(), target_speedup=1.6, runtime="gmacs", calib_batches=1)
    plan["deployment"] = {"runtime": "torch", "batch": 1, "threads": 1}  # what a latency search records
    run = tmp_path_factory.mktemp("budget") / "budget-x1.6"
    cfg.name, cfg.prune.method = "budget-x1.6", "budget"
    cfg.prune.options = {"target_speedup": 1.6, "runtime": "torch", "batch": 1, "threads": 1}
    save_config(cfg, run)
    metrics = json.loads((amg / "metrics.json").read_text())
    pruned = {**metrics["pruned"], "test": {k: v - 1.0 for k, v in metrics["pruned"]["test"].items()}}
    save(small, run / "model", metadata={"test": pruned["test"]})
    (run / "metrics.json").write_text(
        json.dumps({**metrics, "name": cfg.name, "method": "budget", "pruned": pruned, "plan": None})
    )
    (run / "plan.json").write_text(json.dumps(plan))
    (run / "verify.json").write_text(json.dumps(_verify(1.5, 1.6)))
    return run


def test_a_budget_run_carries_its_plan_and_verification(budget_run: Path, report_runs) -> None:
    run = load_run(budget_run)
    assert run.kind == "prune" and run.budget is not None
    assert run.budget["verify"]["measured"]["speedup"] == 1.5  # verify.json merged into the plan
    assert category(run.main, run) == "searched (budget)"
    assert category(run.entries[0], run) == "unpruned"
    amg = load_run(report_runs["amg"])
    assert amg.budget is None and category(amg.main, amg) == "token-amg"
    (row,) = budget_rows([run, amg])
    assert row["verdict"] == "met" and row["deployment"] == "torch b1 t1"
    assert row["measured_speedup"] == 1.5 and row["shortfall"] == pytest.approx(1 - 1.5 / 1.6)


def test_no_frontier_without_a_searched_run(report_runs) -> None:
    runs = [load_run(report_runs["amg"]), load_run(report_runs["dense"])]
    for run in runs:
        for entry in run.entries:
            entry.latency_ms = 1.0
    assert frontier_figure(runs, "mAP", "ms") is None


def test_allocation_of_vit_and_resnet_plans(tmp_path: Path) -> None:
    _, vit_plan = to_budget(tiny_vit(), _batches(), target_speedup=1.5, runtime="gmacs", calib_batches=1)
    blocks = vit_plan["blocks"]
    assert all(b["kept_tokens"] <= b["tokens"] and b["heads"] <= b["dense_heads"] for b in blocks)
    assert allocation_figure(vit_plan).startswith(PNG)
    _, cnn_plan = to_budget(tiny_resnet(seed=0).eval(), target_speedup=1.5, runtime="gmacs")
    assert "widths" in cnn_plan["blocks"][0]
    assert allocation_figure(cnn_plan).startswith(PNG)
    assert allocation_figure({**cnn_plan, "blocks": []}) is None
    (tmp_path / "plan.json").write_text("{not json")
    assert read_budget(tmp_path) is None  # a broken file is not a budget plan
    (tmp_path / "plan.json").write_text(json.dumps({"method": "token-amg"}))
    assert read_budget(tmp_path) is None


def test_report_shows_the_budget_part_with_deployment_latency(
    budget_run: Path, report_runs, tmp_path: Path
) -> None:
    out = build_report(
        [report_runs["amg"], budget_run],
        tmp_path / "report.html",
        retrieval=False,
        token_images=0,
        min_time=0.1,
    )
    html = out.read_text()
    assert 'id="budget"' in html and "Compressed to a budget" in html
    alts = IMG_ALT.findall(html)
    assert "frontier: accuracy versus measured latency, searched and uniform plans" in alts
    assert f"per-block allocation of {budget_run.name}" in alts
    assert "the searched runs&#39; deployment" in html or "the searched runs' deployment" in html
    assert ">met<" in html and "1.500" in html


@pytest.mark.parametrize(
    ("verify", "verdict"),
    [
        ({}, "-"),
        ({"missed": True, "overshot": False}, "missed"),
        ({"missed": False, "overshot": True}, "exceeded"),
        ({"missed": False}, "met"),  # written before "overshot" existed
    ],
)
def test_the_verdict_says_missed_exceeded_or_met(verify: dict, verdict: str) -> None:
    from reidprune.report.budget import _verdict

    assert _verdict(verify) == verdict
