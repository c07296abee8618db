"""Every config in configs/ runs as configured: benchmarks/run_configs.py on the cheap ones.

The runner changes only data (tiny trees in the config's own layout, batch 4) and epochs (1); the
rounds, rates, options, models and input sizes are the recipe's. The full set (ViT-B recipes with
33 and 57 head rounds included) is `python benchmarks/run_configs.py`.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from reidprune.config import load_config

ROOT = Path(__file__).resolve().parents[1]
# the flagship 24-round head recipe (after its baseline) and one filter recipe in MSMT17's layout; the
# other 37 run in `python benchmarks/run_configs.py` (benchmarks/results/run_configs.json), which
# would take the suite's whole time budget
CHEAP = [
    "amg_la/la_tiny_occluded_duke_head67.yaml",  # 24 head rounds, after its baseline
    "bafd/bafd_resnet18_msmt17.yaml",
]


def runner():  # type: ignore[no-untyped-def]
    name = "reidprune_benchmarks_run_configs"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "run_configs.py")
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules[name]


def test_only_epochs_and_data_are_shrunk(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "configs" / "amg_la" / "la_tiny_occluded_duke_head67.yaml")
    overrides = runner().shrunk(cfg, tmp_path / "data", tmp_path / "out")
    assert overrides == [
        f"data.root={tmp_path / 'data'}",
        "data.batch_size=4",
        "data.num_instances=2",
        "data.test_batch_size=4",
        "data.num_workers=0",
        f"output_dir={tmp_path / 'out'}",
        "train.progress=false",
        "prune.finetune_epochs=1",
        "prune.final_epochs=1",
        "prune.calib_batches=1",
    ]
    shrunk = load_config(ROOT / "configs" / "amg_la" / "la_tiny_occluded_duke_head67.yaml", overrides)
    assert (shrunk.prune.rounds, shrunk.prune.rate, shrunk.prune.options) == (
        24,
        0.67,
        {"depth_weight": 0.02},
    )
    assert (shrunk.model, shrunk.data.height, shrunk.data.width) == (cfg.model, 224, 224)


def test_every_config_is_selected_and_listed() -> None:
    paths = runner().config_paths()
    assert len(paths) == len(list((ROOT / "configs").rglob("*.yaml"))) >= 40
    assert [runner().rel(p) for p in runner().config_paths("bafd/hfp_*")] == [
        "bafd/hfp_resnet18_duke.yaml",
        "bafd/hfp_resnet18_market.yaml",
        "bafd/hfp_resnet18_msmt17.yaml",
    ]


@pytest.mark.slow
def test_cheap_configs_run_as_configured(tmp_path: Path) -> None:
    module = runner()
    results = module.run_configs([ROOT / "configs" / c for c in CHEAP], tmp_path)
    failed = {r["config"]: r.get("error", "")[-400:] for r in results if not r["ok"]}
    assert not failed, failed
    assert {r["config"] for r in results} == {*CHEAP, "baselines/la_tiny_occluded_duke.yaml"}

    saved = json.loads((tmp_path / "runs/amg_la/la_tiny_occluded_duke_head67/model/model.json").read_text())
    assert saved["arch"]["num_heads"] == [1] * 12  # 24 of 36 heads, one per round, each block keeps one
    plan = saved["plan"]
    assert len(plan["previous"]) == 23 and all("previous" not in step for step in plan["previous"])
    head67 = next(r for r in results if r["config"] == CHEAP[0])
    assert head67["plan_chars"] < 24 * 6000  # linear: 24 entries of at most ~6 kB each
