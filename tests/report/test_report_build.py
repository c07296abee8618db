"""The HTML report: runs read, every section present, images embedded, nothing fetched from a network."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from reidprune.cli import _register, app
from reidprune.data.records import ImageRecord
from reidprune.errors import CheckpointError
from reidprune.models.vit_models import ViTArch
from reidprune.report import load_run, token_states
from reidprune.report.retrieval import pick_queries
from reidprune.report.tokens import KEPT, MERGED, PRUNED, shade

IMG_SRC = re.compile(r'<img src="([^"]+)"')


def test_prune_run_has_unpruned_and_pruned_entries(report_runs) -> None:
    run = load_run(report_runs["amg"])
    assert run.kind == "prune" and run.method == "token-amg"
    assert [e.variant for e in run.entries] == ["unpruned", "pruned"]
    assert run.entries[0].model_dir == Path(run.config.model.weights)  # the trained model it started from
    assert run.main is run.entries[1] and run.main.model_dir == report_runs["amg"] / "model"
    assert run.entries[1].cost["gmacs"] < run.entries[0].cost["gmacs"]


def test_train_run_and_model_dir(report_runs) -> None:
    train = load_run(report_runs["dense"])
    assert train.kind == "train" and [e.variant for e in train.entries] == ["final"]
    assert train.main.test is not None and "mAP" in train.main.test
    bare = load_run(report_runs["topk"])
    assert bare.kind == "model" and bare.method == "token-topk" and bare.main.test is not None


def test_a_folder_that_is_no_run_is_named(tmp_path) -> None:
    with pytest.raises(CheckpointError, match=str(tmp_path)):
        load_run(tmp_path)


def test_report_holds_every_section(report_page: Path) -> None:
    html = report_page.read_text()
    for text in (
        "Metrics",
        "Accuracy versus cost",
        "Ranked retrieval",
        "Kept tokens per block",
        "config.yaml",
    ):
        assert text in html
    # one row per model: amg unpruned + pruned, dense final, topk model
    assert len(re.findall(r'<tr class="(?:unpruned|pruned|final|model)"', html)) == 4
    assert "AMG (skip): static masks" in html
    assert "no static token map" in html  # top-k picks tokens per image
    assert "no token reduction" in html


def test_report_is_self_contained(report_page: Path) -> None:
    html = report_page.read_text()
    assert "<script" not in html
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)
    sources = IMG_SRC.findall(html)
    # 2 plots + per run a retrieval list, + token maps for the AMG run only
    assert len(sources) == 2 + 3 + 1
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as image:
            assert image.format == "PNG" and min(image.size) > 50


def test_report_cli_uses_each_runs_own_data(report_runs, tmp_path) -> None:
    _register()
    out = tmp_path / "cli.html"
    args = ["report", str(report_runs["amg"]), str(report_runs["dense"]), "--out", str(out), "--no-latency"]
    result = CliRunner().invoke(app, [*args, "--queries", "2", "--top", "3"])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "latency not measured" in html and "top 3 of" in html


def test_report_says_why_retrieval_is_missing(report_runs, tmp_path) -> None:
    from reidprune.report import build_report

    # the bare model directory has no config.yaml: without --data its test split is unknown
    out = build_report([report_runs["topk"]], tmp_path / "r.html", latency=False)
    assert "no config.yaml in the run and no --data" in out.read_text()


def test_amg_spec_gives_per_block_states() -> None:
    arch = ViTArch(
        img_size=[16, 8], patch_size=4, stride=4, num_heads=[1, 1], mlp_hidden=[4, 4], embed_dim=8, head_dim=8
    )
    arch.tokens = {"method": "amg", "mode": "kv", "num_tokens": 9, "kept": [[0, 1, 4, 8], None]}
    states, note = token_states(arch)
    expected = np.full((4, 2), PRUNED)
    expected.flat[[0, 3, 7]] = KEPT  # positions 1, 4, 8 are patches 0, 3, 7 in raster order
    assert np.array_equal(states[0], expected)
    assert np.array_equal(states[1], np.zeros((4, 2), dtype=int))
    assert "kv" in note


def test_pm_spec_marks_pruned_and_merged() -> None:
    arch = ViTArch(
        img_size=[8, 8], patch_size=4, stride=4, num_heads=[1], mlp_hidden=[4], embed_dim=8, head_dim=8
    )
    arch.tokens = {"method": "pm", "num_tokens": 5, "dense": False, "segments": [[0, 0, -1, 1]]}
    states, _ = token_states(arch)
    assert states[0].tolist() == [[MERGED, MERGED], [PRUNED, KEPT]]


@pytest.mark.parametrize(("tokens", "reason"), [(None, "no token reduction"), ({"method": "tome"}, "ToMe")])
def test_models_without_static_masks_say_so(tokens, reason: str) -> None:
    arch = ViTArch(
        img_size=[8, 8],
        patch_size=4,
        stride=4,
        num_heads=[1],
        mlp_hidden=[4],
        embed_dim=8,
        head_dim=8,
        tokens=tokens,
    )
    states, note = token_states(arch)
    assert states is None and reason in note


def test_shade_dims_pruned_cells_only() -> None:
    image = np.full((4, 4, 3), 200, dtype=np.uint8)
    out = shade(image, np.array([[KEPT, PRUNED]]))
    assert out[1, 0].tolist() == [200, 200, 200]  # inside a kept cell: untouched
    assert (out[1, 3] < 60).all()  # inside a pruned cell: dimmed to near black


def test_queries_are_distinct_identities_spread_evenly() -> None:
    records = [ImageRecord(f"{i}.jpg", pid, 0) for i, pid in enumerate([5, 5, 1, 9, 1, 3, 7])]
    # identities sorted 1, 3, 5, 7, 9; first query of each at 2, 5, 0, 6, 3
    assert pick_queries(records, 2) == [2, 0]
    assert pick_queries(records, 9) == [2, 5, 0, 6, 3]
