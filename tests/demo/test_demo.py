"""The main job end to end on a tiny embedded data set, and its reuse of finished pieces."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from reidprune.demo import FILTER_VARIANTS, VARIANTS, DemoResult, Variant, run_demo
from reidprune.errors import ConfigError
from reidprune.run_folder import read_saved_config

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


# The tiny test model is mostly fixed cost (stem, head, per-op overhead): whether a latency target
# is reachable depends on how loaded the CI machine is while its tables are timed (x1.1 was refused
# once, x1.5 before). The end-to-end run keeps the budget variant (search, fine-tuning, target
# column) on the GMACs cost model, which is exact; the ONNX Runtime search is tested in tests/budget.
TEST_VARIANTS = tuple(
    Variant(v.name, tuple(o.replace("runtime: onnxruntime", "runtime: gmacs") for o in v.overrides))
    for v in VARIANTS
)


@pytest.mark.slow
def test_demo_runs_end_to_end_and_reuses_its_outputs(tmp_path: Path) -> None:
    messages: list[str] = []
    result = run_demo(
        tmp_path,
        overrides=TINY,
        variants=TEST_VARIANTS,
        report=False,
        log=messages.append,
        timing_seconds=0.5,
    )

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
    run_demo(
        tmp_path,
        overrides=TINY,
        variants=TEST_VARIANTS,
        report=False,
        log=messages.append,
        timing_seconds=0.5,
    )
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


def test_a_graph_is_reused_only_when_its_content_matches_the_model_and_settings(tmp_path: Path) -> None:
    import json as json_module

    from reidprune.demo import _export_graph, _graph_is_current
    from reidprune.models import create, save

    def tiny(seed: int):
        torch.manual_seed(seed)
        return create("vit_tiny_reid", depth=1, img_size=[32, 16], embed_dim=32, head_dim=16, num_classes=3)

    model_dir, graph = tmp_path / "model", tmp_path / "onnx" / "m.onnx"
    report = graph.with_name("m.export.json")
    model = tiny(0)
    save(model, model_dir)
    assert not _graph_is_current(graph, model_dir)  # not exported yet
    _export_graph(model, graph, model_dir)
    assert _graph_is_current(graph, model_dir)

    whole = graph.read_bytes()
    graph.write_bytes(whole[: len(whole) // 2])  # cut short (a full disk, a kill) but newer than the model
    assert not _graph_is_current(graph, model_dir)
    graph.write_bytes(whole)
    assert _graph_is_current(graph, model_dir)

    info = json_module.loads(report.read_text())
    report.write_text(json_module.dumps({**info, "settings": {**info["settings"], "opset": 17}}))
    assert not _graph_is_current(graph, model_dir)  # exported with other settings
    report.write_text(json_module.dumps(info))

    save(tiny(1), model_dir)  # the model was recomputed; the graph is still newer than nothing
    os.utime(graph)
    assert not _graph_is_current(graph, model_dir)


@pytest.mark.slow
def test_changed_overrides_redo_what_they_change_and_say_why(tmp_path: Path) -> None:
    variant = next(v for v in VARIANTS if v.name == "head-entropy-50")
    options = {"variants": (variant,), "export": False, "report": False, "timing_seconds": 0.2}
    run_demo(tmp_path, overrides=TINY, log=None, **options)

    messages: list[str] = []
    run_demo(tmp_path, overrides=[*TINY, "prune.final_epochs=2"], log=messages.append, **options)
    baseline, pruned = tmp_path / "baseline", tmp_path / variant.name
    assert messages[:3] == [
        f"reusing the baseline in {baseline} (delete it to redo)",
        f"redoing head-entropy-50 in {pruned}: settings changed (prune.final_epochs: 1 -> 2)",
        f"compressing: head-entropy-50 (then 2 epochs of distillation) -> {pruned}",
    ]

    messages.clear()
    run_demo(
        tmp_path, overrides=[*TINY, "prune.final_epochs=2", "data.val_ids=3"], log=messages.append, **options
    )
    assert messages[:4] == [
        f"redoing the baseline in {baseline}: settings changed (data.val_ids: 2 -> 3)",
        f"training the baseline la_tiny_reid for 1 epochs -> {baseline}",
        f"redoing head-entropy-50 in {pruned}: settings changed (data.val_ids: 2 -> 3)",
        f"compressing: head-entropy-50 (then 2 epochs of distillation) -> {pruned}",
    ]
    assert read_saved_config(baseline / "config.yaml")["data"]["val_ids"] == 3


def test_a_demo_folder_in_use_is_refused(tmp_path: Path) -> None:
    from reidprune.atomic import FolderLockedError, folder_lock

    with folder_lock(tmp_path), pytest.raises(FolderLockedError, match=rf"^{tmp_path} is in use"):
        run_demo(tmp_path, overrides=TINY, log=None)
    assert list(tmp_path.iterdir()) == []


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
