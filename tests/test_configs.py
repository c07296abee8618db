"""Every experiment YAML under configs/ is a valid recipe that the code it reaches accepts.

Each file is loaded with `load_config` (unknown keys and wrong types fail there), run through the
light validators, and its model name, constructor arguments, data format, sampler and pruning
options are checked against the code that will consume them. The pruning options are passed to
the real method on a tiny stand-in of the configured architecture (same registry entry, same head
and block counts, narrow widths and a small input), so no ViT-B or full ResNet is ever built.
The seed recipes (every sub-folder) must also say what they reproduce, name their own path in
their run command, and be listed in configs/README.md; cascades must chain to an existing config.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from reidprune.compress.filters import filter_pruning_callback, prune_filters
from reidprune.compress.heads import prune_heads, split_rounds
from reidprune.compress.schedule import check_prune_config, method_options, split_method
from reidprune.compress.tokens import prune_tokens
from reidprune.config import ExperimentConfig, load_config
from reidprune.data.formats import FORMATS
from reidprune.data.images import INTERPOLATIONS
from reidprune.data.loaders import SAMPLERS
from reidprune.models import arch_config, build, list_models
from reidprune.train.config import check_train_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
RECIPE_FOLDERS = ("amg_la", "amg_transreid", "bafd", "pm_vit", "baselines")
ALL_CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))
RECIPES = [p for p in ALL_CONFIGS if p.parent != CONFIG_DIR]  # configs/demo.yaml is the demo, not a recipe


def _rel(path: Path) -> str:
    return path.relative_to(CONFIG_DIR).as_posix()


@functools.cache
def _load_once(path: Path) -> ExperimentConfig:
    return load_config(path)


def _load(path: Path) -> ExperimentConfig:
    return copy.deepcopy(_load_once(path))


PRUNE_CONFIGS = [p for p in ALL_CONFIGS if _load(p).prune.method != "none"]

# Training identities (re-ID) or classes of the real data sets: what `job_model` passes as num_classes.
NUM_CLASSES = {"market1501": 751, "dukemtmc": 702, "occluded_duke": 702, "msmt17": 1041, "imagefolder": 1000}


def _arch(cfg: ExperimentConfig, img_size: list[int] | None = None) -> Any:
    """The configured architecture as `job_model` would create it (no module is built)."""
    return arch_config(
        cfg.model.name,
        num_classes=NUM_CLASSES.get(cfg.data.format, 751),
        img_size=img_size or [cfg.data.height, cfg.data.width],
        **cfg.model.kwargs,
    )


def _total_heads(arch: Any) -> int:
    return sum(arch.num_heads) + (sum(arch.branch_heads()) if arch.uses_jpm else 0)


# ----------------------------------------------------------------------------------------------- loading


def test_every_recipe_folder_holds_configs() -> None:
    for folder in RECIPE_FOLDERS:
        assert sorted((CONFIG_DIR / folder).glob("*.yaml")), f"configs/{folder}/ has no YAML"


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=_rel)
def test_config_loads_and_validates(path: Path) -> None:
    cfg = _load(path)
    check_train_config(cfg.train)
    if cfg.prune.method != "none":
        check_prune_config(cfg.prune)
        assert cfg.model.weights, "pruning starts from a trained model: model.weights must be set"
    assert cfg.data.format in (*FORMATS, "auto")
    assert cfg.data.sampler in SAMPLERS
    assert cfg.data.interpolation in INTERPOLATIONS
    if cfg.data.sampler == "pk" or (cfg.data.sampler == "auto" and cfg.data.format != "imagefolder"):
        assert cfg.data.batch_size % cfg.data.num_instances == 0, "a PK batch holds whole identities"
    assert cfg.model.name in list_models()
    arch = _arch(cfg)  # rejects unknown constructor arguments
    assert list(arch.img_size) == [cfg.data.height, cfg.data.width]


def test_output_dirs_are_unique() -> None:
    outputs = [_load(p).output_dir for p in ALL_CONFIGS]
    assert len(outputs) == len(set(outputs))


# ----------------------------------------------------------------------------------- method options


@pytest.mark.parametrize("path", PRUNE_CONFIGS, ids=_rel)
def test_prune_options_are_keys_the_method_takes(path: Path) -> None:
    cfg = _load(path)
    unknown = set(cfg.prune.options) - method_options(cfg.prune.method)
    assert not unknown, f"{cfg.prune.method} does not take {sorted(unknown)}"


def _small_size(arch: Any) -> list[int]:
    """An input giving a 4 x 2 patch grid (3 x 3 for square inputs) at the arch's patch size and stride."""
    rows, cols = (4, 2) if arch.img_size[0] > arch.img_size[1] else (3, 3)
    return [arch.patch_size + arch.stride * (rows - 1), arch.patch_size + arch.stride * (cols - 1)]


def _vit_stand_in(cfg: ExperimentConfig) -> torch.nn.Module:
    """The configured ViT registry entry with its head and block counts, at width 32 and a small input."""
    arch = _arch(cfg)
    arch = _arch(cfg, _small_size(arch))
    blocks = len(arch.num_heads)
    return build(dataclasses.replace(arch, embed_dim=32, head_dim=8, mlp_hidden=[32] * blocks))


def _batch(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    height, width = model.arch.img_size
    labels = torch.tensor([0, 0, 1, 1])
    return {
        "image": torch.randn(4, 3, height, width),
        "label": labels,
        "pid": labels,
        "camid": torch.tensor([0, 1, 0, 1]),
        "index": torch.arange(4),
    }


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The stand-ins are tiny: one intra-op thread is faster than two fighting over a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("path", PRUNE_CONFIGS, ids=_rel)
def test_prune_method_accepts_the_options(path: Path, one_thread: None) -> None:
    """One real pruning step with the config's method, rate and options, on a tiny stand-in model."""
    cfg = _load(path)
    prune = cfg.prune
    family, name = split_method(prune.method)
    options = dict(prune.options)
    if family == "budget":
        _budget_step(cfg, options)
        return
    if family == "filter":
        arch = dataclasses.replace(_arch(cfg), img_size=[64, 32], stage_planes=[8, 8, 8, 8], stem_width=8)
        model = build(arch)
        if name == "hfp":
            small, plan = prune_filters(model, name, prune.rate, **options)
        else:  # select once on the current weights, hard-zero, extract: what the end of training does
            small, plan = filter_pruning_callback(model, name, prune.rate, **options).extract(model)
        assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    else:
        model = _vit_stand_in(cfg)
        data = [_batch(model)]
        if family == "token":
            small, plan = prune_tokens(model, name, prune.rate / prune.rounds, data=data, **options)
            assert small.arch.tokens is not None
        else:
            small, plan = prune_heads(model, name, num_remove=1, data=data, **options)
            assert _total_heads(small.arch) == _total_heads(model.arch) - 1
    assert plan.method == prune.method


def _budget_step(cfg: ExperimentConfig, options: dict[str, Any]) -> None:
    """The budget search with the config's options on the stand-in, its cost counted in GMACs (the
    latency tables would be timed on this machine: tests/budget covers them); the latency options
    must be keywords of the latency model."""
    from reidprune.budget.api import to_budget
    from reidprune.budget.latency_cost import LatencyCostModel
    from reidprune.jobs.budget import VERIFY_KEYS

    latency = options.pop("latency", None) or {}
    assert set(latency) <= set(inspect.signature(LatencyCostModel.for_model).parameters)
    for key in VERIFY_KEYS:
        options.pop(key, None)
    model = _vit_stand_in(cfg)
    options["runtime"] = "gmacs"
    if "target_latency_ms" in options:  # a latency in ms has no GMACs meaning: ask for a plain speed-up
        options.pop("target_latency_ms")
        options["target_speedup"] = 1.2
    small, plan = to_budget(model, [_batch(model)], calib_batches=1, **options)
    assert plan["predicted_speedup"] >= 1.0 and small.compression_plan.method == "budget-search"


# ------------------------------------------------------------------------- what the recipes remove

# Heads the seeds remove (amg.md §3.3, §6): AMG-LA counts all 12 blocks; AMG-TransReID counts the
# 11 (base) / 7 (small) backbone blocks; reidprune also counts the two JPM copies, so the TransReID
# rates are chosen to remove the same number.
HEADS_REMOVED = {
    "amg_la/la_tiny_occluded_duke_head67.yaml": 24,  # floor(36 * 0.67)
    "amg_la/la_tiny_occluded_duke_h15t25_step1_head15.yaml": 5,  # floor(36 * 0.15)
    "amg_la/la_base_market_head40.yaml": 57,  # floor(144 * 0.40)
    "amg_la/la_base_market_h25t25_step2_head25.yaml": 36,  # floor(144 * 0.25)
    "amg_transreid/transreid_base_market_h25t25_step1_head25.yaml": 33,  # floor(132 * 0.25)
    "amg_transreid/transreid_base_occluded_duke_h25t25_step1_head25.yaml": 33,
    "amg_transreid/transreid_small_occluded_duke_h40t40_step2_head40.yaml": 22,  # floor(56 * 0.40)
}

# (patch, block) pairs the seeds remove: floor(P * L_s * rate) over the scored blocks (amg.md §2.2).
TOKEN_PAIRS_REMOVED = {
    "amg_la/la_tiny_occluded_duke_token40.yaml": 940,  # 196 * 12 * 0.40
    "amg_la/la_tiny_occluded_duke_h15t25_step2_token25.yaml": 588,  # 196 * 12 * 0.25
    "amg_la/la_base_market_token40.yaml": 940,
    "amg_la/la_base_market_h25t25_step1_token25.yaml": 588,
    "amg_transreid/transreid_base_market_h25t25_step2_token25.yaml": 577,  # 210 * 11 * 0.25
    "amg_transreid/transreid_base_occluded_duke_h25t25_step2_token25.yaml": 665,  # 242 * 11 * 0.25
    "amg_transreid/transreid_small_occluded_duke_h40t40_step1_token40.yaml": 677,  # 242 * 7 * 0.40
}


@pytest.mark.parametrize("rel", sorted(HEADS_REMOVED))
def test_head_recipes_remove_as_many_heads_as_the_seed(rel: str) -> None:
    cfg = _load(CONFIG_DIR / rel)
    per_round = split_rounds(_total_heads(_arch(cfg)), cfg.prune.rate, cfg.prune.rounds)
    assert sum(per_round) == HEADS_REMOVED[rel]
    assert min(per_round) >= 1, "every round removes at least one head"


@pytest.mark.parametrize("rel", sorted(TOKEN_PAIRS_REMOVED))
def test_token_recipes_remove_as_many_pairs_as_the_seed(rel: str) -> None:
    cfg = _load(CONFIG_DIR / rel)
    arch = _arch(cfg)
    rows, cols = arch.grid_size
    assert math.floor(rows * cols * len(arch.num_heads) * cfg.prune.rate) == TOKEN_PAIRS_REMOVED[rel]
    expected_mode = "skip" if arch.head == "transreid" else "kv"  # TransReID version vs paper / LA version
    assert cfg.prune.options["mode"] == expected_mode


def test_every_amg_recipe_is_in_the_count_tables() -> None:
    amg = {_rel(p) for p in PRUNE_CONFIGS if p.parent.name.startswith("amg_")}
    assert amg == set(HEADS_REMOVED) | set(TOKEN_PAIRS_REMOVED)


# --------------------------------------------------------------------------------- cascades and docs


@functools.cache
def _producers() -> dict[str, ExperimentConfig]:
    """Model directories that configs write: output_dir/model (prune) or output_dir/{final,best} (train)."""
    produced = {}
    for path in ALL_CONFIGS:
        cfg = _load(path)
        subdirs = ("model",) if cfg.prune.method != "none" else ("final", "best")
        for sub in subdirs:
            produced[f"{cfg.output_dir}/{sub}"] = cfg
    return produced


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=_rel)
def test_weights_from_runs_come_from_another_config(path: Path) -> None:
    cfg = _load(path)
    if not cfg.model.weights.startswith("runs/"):
        return
    producer = _producers().get(cfg.model.weights.rstrip("/"))
    assert producer is not None, f"no config writes {cfg.model.weights}"
    assert producer.model.name == cfg.model.name and producer.model.kwargs == cfg.model.kwargs
    assert (producer.data.format, producer.data.root) == (cfg.data.format, cfg.data.root)
    assert producer.data.val_ids == cfg.data.val_ids, "held-out identities change the class count"


@pytest.mark.parametrize("path", RECIPES, ids=_rel)
def test_recipe_header_says_what_it_reproduces(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("# Reproduces: ")
    header = text.split("\nname:", 1)[0]
    assert "\n# Run" in header
    assert f"configs/{_rel(path)}" in header, "the run command names this file"


def test_readme_lists_every_recipe() -> None:
    readme = (CONFIG_DIR / "README.md").read_text()
    missing = [_rel(p) for p in RECIPES if _rel(p) not in readme]
    assert not missing, f"configs/README.md does not list {missing}"
