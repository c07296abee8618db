"""The main job end to end on a tiny embedded data set, and its reuse of finished pieces."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from reidprune.demo import FILTER_VARIANTS, VARIANTS, DemoResult, run_demo
from reidprune.errors import ConfigError

TINY = [
    "data.synth_ids=24",
    "data.batch_size=32",
    "data.val_ids=2",
    "train.epochs=1",
    "train.eval_every=1",
    "train.progress=false",
    "prune.final_epochs=1",
    "prune.calib_batches=2",
]


@pytest.mark.slow
def test_demo_runs_end_to_end_and_reuses_its_outputs(tmp_path: Path) -> None:
    messages: list[str] = []
    result = run_demo(tmp_path, overrides=TINY, report=False, log=messages.append, timing_seconds=0.5)

    names = [row["model"] for row in result.rows]
    assert names == ["baseline", *(v.name for v in VARIANTS)]
    base = result.rows[0]
    assert base["x b1"] == 1.0 and base["x b64"] == 1.0  # speed-ups against the baseline itself
    for row in result.rows[1:]:
        assert row["GMACs"] < base["GMACs"]  # every variant computes less than the baseline
        assert 0.0 <= row["mAP"] <= 100.0
    heads = next(r for r in result.rows if r["model"] == "head-entropy-50")
    assert heads["params (M)"] < base["params (M)"]  # heads are physically removed
    for name in names:
        assert (tmp_path / "onnx" / f"{name}.onnx").is_file()
    assert json.loads((tmp_path / "summary.json").read_text()) == result.rows

    messages.clear()
    run_demo(tmp_path, overrides=TINY, report=False, log=messages.append, timing_seconds=0.5)
    assert any(m.startswith("reusing the baseline") for m in messages)
    assert sum(m.startswith("reusing ") for m in messages) == 1 + 2 * len(VARIANTS) + 1
    assert not any(m.startswith(("training", "compressing")) for m in messages)


@pytest.mark.slow
def test_resnet18_demo_extracts_smaller_networks_next_to_the_vit_demo(tmp_path: Path) -> None:
    tiny_cnn = [*TINY, "model.kwargs={stage_planes: [16, 32, 64, 128]}"]  # narrow: seconds, not minutes
    result = run_demo(
        tmp_path, overrides=tiny_cnn, model="resnet18", report=False, log=None, timing_seconds=0.5
    )

    assert result.output_dir == tmp_path / "resnet18"
    assert (tmp_path / "data").is_dir()  # the data set is shared with the ViT demo
    names = [row["model"] for row in result.rows]
    assert names == ["baseline", *(v.name for v in FILTER_VARIANTS)]
    base = result.rows[0]
    for row in result.rows[1:]:
        assert row["params (M)"] < 0.6 * base["params (M)"]  # half the internal filters are gone
        assert row["GMACs"] < base["GMACs"]
        assert (tmp_path / "resnet18" / "onnx" / f"{row['model']}.onnx").is_file()


def test_unknown_demo_model_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="demo model 'resnet9'"):
        run_demo(tmp_path, model="resnet9", log=None)
    assert not any(tmp_path.iterdir())


def test_a_graph_older_than_its_model_is_exported_again(tmp_path: Path) -> None:
    from reidprune.demo import _graph_is_current

    model_dir, graph = tmp_path / "model", tmp_path / "model.onnx"
    model_dir.mkdir()
    (model_dir / "weights.safetensors").write_bytes(b"w")
    assert not _graph_is_current(graph, model_dir)  # not exported yet
    graph.write_bytes(b"g")
    os.utime(model_dir / "weights.safetensors", (100.0, 100.0))
    os.utime(graph, (200.0, 200.0))
    assert _graph_is_current(graph, model_dir)
    os.utime(model_dir / "weights.safetensors", (300.0, 300.0))  # the model was recomputed since
    assert not _graph_is_current(graph, model_dir)


def test_compared_rows_give_the_map_change_against_the_baseline() -> None:
    rows = [
        {"model": "baseline", "GMACs": 1.0, "mAP": 60.0, "rank-1": 70.0, "x b1": 1.0},
        {"model": "pruned", "GMACs": 0.5, "mAP": 58.5, "rank-1": 69.0, "x b1": 1.6},
    ]
    compared = DemoResult(rows=rows).compared()
    assert compared == [
        {"model": "baseline", "GMACs": 1.0, "mAP": 60.0, "rank-1": 70.0, "mAP change": 0.0},
        {"model": "pruned", "GMACs": 0.5, "mAP": 58.5, "rank-1": 69.0, "mAP change": -1.5},
    ]
    assert DemoResult(rows=rows).compared(("model", "x b1"))[1] == {
        "model": "pruned",
        "x b1": 1.6,
        "mAP change": -1.5,
    }
