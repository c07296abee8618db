"""run_schedule / check_prune_config: long head schedules stay linear, options must fit the method."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
import torch

import reidprune.compress.heads as heads_api
from reidprune.compress.config import PruneConfig
from reidprune.compress.schedule import check_prune_config, method_options
from reidprune.config import ExperimentConfig
from reidprune.errors import CompressionError
from reidprune.jobs.schedule import run_schedule
from reidprune.models import create


def sixteen_heads_per_block() -> torch.nn.Module:
    """4 blocks x 16 heads of width 4 (64 heads, 60 removable) at a 64x32 input (8 patches)."""
    return create(
        "vit_tiny_reid",
        depth=4,
        num_heads=[16] * 4,
        head_dim=4,
        embed_dim=32,
        mlp_hidden=[32] * 4,
        img_size=[64, 32],
        patch_size=16,
        stride=16,
        num_classes=3,
    ).eval()


@pytest.mark.slow
def test_sixty_head_rounds_keep_the_plan_linear_and_fast(monkeypatch, tmp_path) -> None:
    sizes: list[int] = []
    real = heads_api.prune_heads

    def measured(*args, **kwargs):  # the plan's JSON after each round, checked as the rounds run
        pruned, plan = real(*args, **kwargs)
        sizes.append(len(json.dumps(plan.to_dict())))
        assert sizes[-1] <= len(sizes) * sizes[0], f"round {len(sizes)}: plan of {sizes} characters"
        return pruned, plan

    monkeypatch.setattr(heads_api, "prune_heads", measured)
    cfg = ExperimentConfig(seed=0, prune=PruneConfig("head-entropy", rate=60 / 64, rounds=60))
    batch = {"image": torch.randn(2, 3, 64, 32), "label": torch.tensor([0, 1]), "camid": torch.tensor([0, 1])}
    start = time.perf_counter()
    result = run_schedule(
        sixteen_heads_per_block(), cfg, SimpleNamespace(train=[batch]), tmp_path, device="cpu"
    )
    seconds = time.perf_counter() - start

    assert len(sizes) == 60 and seconds < 120  # a few seconds on an idle 2-core machine
    assert result.model.arch.num_heads == [1, 1, 1, 1]
    plan = result.plan.to_dict()
    assert len(plan["previous"]) == 59
    assert all(set(step) == {"method", "rate", "details"} for step in plan["previous"])
    assert [step["details"]["heads_before"] for step in plan["previous"]] == list(range(64, 5, -1))
    assert len(result.stages) == 60


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("token-amg", {"mode", "depth_discount", "selection", "seed", "min_keep", "stochastic"}),
        ("token-tome", {"r", "prop_attn", "stochastic"}),
        ("head-entropy", {"depth_weight", "stochastic"}),
        ("filter-hfp", {"scope", "k", "max_layer_rate", "rank_1x1", "efficient", "backend"}),
        (
            "filter-bafd",
            {
                "scope",
                "k",
                "decay",
                "max_layer_rate",
                "rank_1x1",
                "efficient",
                "at_start",
                "hold_zeros",
                "mask_bn",
                "input_size",
            },
        ),
    ],
)
def test_method_options_are_what_the_method_takes_besides_the_schedule_arguments(method, options) -> None:
    assert method_options(method) == options


def test_options_of_another_method_are_refused_naming_key_method_and_accepted_keys() -> None:
    cfg = PruneConfig("head-entropy", rate=0.25, options={"mode": "kv", "depth_discount": 0.03})
    with pytest.raises(CompressionError) as err:
        check_prune_config(cfg)
    assert str(err.value).startswith(
        "prune.options.mode is not an option of head-entropy; it accepts depth_weight, stochastic"
    )


def test_the_seed_is_set_by_the_schedule_not_by_head_options() -> None:
    with pytest.raises(CompressionError, match=r"prune\.options\.seed is not an option of head-random"):
        check_prune_config(PruneConfig("head-random", rate=0.25, options={"seed": 3}))


def test_an_unknown_method_of_a_known_family_is_refused() -> None:
    with pytest.raises(CompressionError, match=r"prune\.method='token-evit': expected token-amg"):
        check_prune_config(PruneConfig("token-evit", rate=0.25))


@pytest.mark.slow
def test_finished_rounds_keep_their_log_but_not_their_checkpoint(tmp_path, synth_root) -> None:
    from reidprune.config import load_config
    from reidprune.data import build_dataset, build_loaders

    cfg = load_config(
        overrides=[
            f"data.root={synth_root}",
            "data.format=synth",
            "data.synth_ids=4",
            "data.height=64",
            "data.width=32",
            "data.batch_size=4",
            "data.num_instances=2",
            "data.num_workers=0",
            "train.progress=false",
            "prune.method=head-magnitude",
            "prune.rate=0.25",
            "prune.rounds=2",
            "prune.finetune_epochs=1",
            "prune.final_epochs=1",
        ]
    )
    splits = build_dataset(cfg.data)
    loaders = build_loaders(cfg.data, splits, seed=0)
    model = create(
        "vit_tiny_reid",
        depth=2,
        num_heads=[4, 4],
        head_dim=8,
        embed_dim=32,
        mlp_hidden=[32, 32],
        img_size=[64, 32],
        patch_size=16,
        stride=16,
        num_classes=splits.num_classes,
    )
    result = run_schedule(model, cfg, loaders, tmp_path, device="cpu")

    assert sum(result.model.arch.num_heads) == 6  # one head per round
    for stage in ("round1", "round2"):
        assert (tmp_path / stage / "train_log.jsonl").is_file()
        assert not (tmp_path / stage / "checkpoints" / "last.pt").exists()
    assert (tmp_path / "final" / "checkpoints" / "last.pt").is_file()
