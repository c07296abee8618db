"""Tiny runs for the report tests, built once per session on the shared synthetic data set."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from reidprune.compress.tokens import prune_tokens
from reidprune.config import load_config, save_config
from reidprune.measure import count_gmacs, count_params
from reidprune.models import save
from tiny_models import tiny_vit


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Tiny models run faster on one CPU thread than on two fighting over shared cores."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _cost(model: torch.nn.Module) -> dict[str, float]:
    macs = count_gmacs(model)
    return {**count_params(model), "gmacs": macs["gmacs"], "blocks_gmacs": macs["blocks_gmacs"]}


def _evaluate(model: torch.nn.Module, cfg) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from reidprune.evaluate import evaluate_reid
    from reidprune.export.accuracy import eval_loaders

    _, loaders = eval_loaders(cfg)
    metrics = evaluate_reid(model, loaders.query, loaders.gallery, cfg.eval, device="cpu")
    return {k: v for k, v in metrics.items() if isinstance(v, int | float)}


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory: pytest.TempPathFactory, synth_root: Path) -> dict[str, Path]:
    """Three run directories laid out as the jobs write them:
    "amg": a prune job (config.yaml, metrics.json with unpruned / pruned, model/; the unpruned model
    saved in the directory its model.weights names), "dense": a train job (final/), and "topk": a
    bare model directory whose metadata holds its test metrics."""
    with one_thread():
        return _make_runs(tmp_path_factory.mktemp("runs"), synth_root)


def _make_runs(root: Path, synth_root: Path) -> dict[str, Path]:
    cfg = load_config(
        overrides=[
            f"data.root={synth_root}",
            "data.format=synth",
            "data.synth_ids=4",
            "data.height=64",
            "data.width=32",
            "data.num_workers=0",
            "model.name=vit_tiny_reid",
            "name=amg",
        ]
    )
    dense = tiny_vit()  # vit_tiny_reid's structure at 64 x 32 with 8 px patches, from seed 0
    pruned, plan = prune_tokens(dense, "amg", 0.4, mode="skip", selection="random")
    dense_test, pruned_test = _evaluate(dense, cfg), _evaluate(pruned, cfg)

    amg = root / "amg"
    cfg.model.weights = str(save(dense, root / "trained"))
    save_config(cfg, amg)
    save(pruned, amg / "model", metadata={"test": pruned_test})
    metrics = {
        "name": "amg",
        "method": "token-amg",
        "rate": 0.4,
        "unpruned": {"test": dense_test, **_cost(dense)},
        "pruned": {"test": pruned_test, **_cost(pruned)},
        "plan": plan.to_dict(),
    }
    (amg / "metrics.json").write_text(json.dumps(metrics))

    train = root / "dense"
    cfg.model.weights, cfg.name = "", "dense"
    save_config(cfg, train)
    save(dense, train / "final")
    (train / "metrics.json").write_text(
        json.dumps({"name": "dense", "test": {"final": dense_test, "best": None}})
    )

    topk, _ = prune_tokens(dense, "topk", 0.4)
    bare = save(topk, root / "topk", metadata={"test": _evaluate(topk, cfg)})
    return {"amg": amg, "dense": train, "topk": bare}


@pytest.fixture(scope="session")
def report_page(
    report_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, synth_root: Path
) -> Path:
    """The report of the three runs (the bare model directory reads its data through --data)."""
    from reidprune.report import build_report

    out = tmp_path_factory.mktemp("report") / "report.html"
    with one_thread():
        return build_report(list(report_runs.values()), out, data=str(synth_root), min_time=0.3)
