"""The report's metrics table: a shared baseline shown once, MACs in one unit, latency of the deploy form."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from reidprune.config import load_config, save_config
from reidprune.measure import deploy
from reidprune.report import build
from reidprune.report.runs import Entry, Run, load_run

TEST = {"mAP": 50.0, "rank1": 60.0}


def _prune_run(name: str, baseline: Path, pruned_test: dict[str, float]) -> Run:
    entries = [
        Entry(name, "unpruned", baseline, dict(TEST), {"gmacs": 0.0103, "blocks_gmacs": 0.0099}),
        Entry(
            name,
            "pruned",
            Path(f"/runs/{name}/model"),
            pruned_test,
            {"gmacs": 0.00938, "blocks_gmacs": 0.009},
        ),
    ]
    return Run(
        name, Path(f"/runs/{name}"), "prune", None, None, {}, entries, {"method": "token-amg"}, entries[1]
    )


def test_a_baseline_shared_by_runs_is_one_row() -> None:
    """The demo's layout: the baseline train run, and two variants pruned from its final/."""
    final = Path("/runs/baseline/final")
    baseline = Entry("baseline", "final", final, dict(TEST))
    train = Run("baseline", final.parent, "train", None, None, {}, [baseline], None, baseline)
    runs = [train, _prune_run("amg_40", final, {"mAP": 48.0}), _prune_run("pm_30", final, {"mAP": 47.0})]
    rows = build.table_rows(runs)
    assert [(r["run"], r["variant"]) for r in rows] == [
        ("baseline", "final"),
        ("amg_40", "pruned"),
        ("pm_30", "pruned"),
    ]
    assert rows[0]["same_as"] == ["amg_40 (unpruned)", "pm_30 (unpruned)"]


def test_same_model_with_other_results_keeps_its_rows() -> None:
    """Evaluated on other data (other numbers), the same model is a different row."""
    final = Path("/runs/baseline/final")
    first, second = _prune_run("a", final, {"mAP": 1.0}), _prune_run("b", final, {"mAP": 2.0})
    second.entries[0].test = {"mAP": 40.0}
    rows = build.table_rows([first, second])
    assert [(r["run"], r["variant"]) for r in rows] == [
        ("a", "unpruned"),
        ("a", "pruned"),
        ("b", "unpruned"),
        ("b", "pruned"),
    ]


def _variant_of(report_runs: dict[str, Path], tmp_path: Path, name: str) -> Path:
    """A prune run laid out as the demo writes it: model.weights is the dense train run's final/."""
    run = tmp_path / name
    shutil.copytree(report_runs["amg"], run)
    cfg = load_config(run / "config.yaml")
    cfg.model.weights = str(report_runs["dense"] / "final")
    save_config(cfg, run)
    metrics = json.loads((run / "metrics.json").read_text())
    dense = json.loads((report_runs["dense"] / "metrics.json").read_text())
    metrics["unpruned"]["test"] = dense["test"]["final"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_latency_is_of_the_deploy_form_and_each_model_is_timed_once(
    report_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = [load_run(report_runs["dense"]), load_run(_variant_of(report_runs, tmp_path, "amg_copy"))]
    prepared = []

    def prepare(model, channels_last=True):  # type: ignore[no-untyped-def]
        prepared.append(model)
        return original(model, channels_last)

    original = deploy.prepare_for_inference
    monkeypatch.setattr(deploy, "prepare_for_inference", prepare)
    note = build._measure_latency(runs, min_time=0.05, threads=1)
    assert note.startswith("PyTorch, deploy form (BatchNorm folded, channels_last), batch 1")
    assert len(prepared) == 2  # the dense model (final of one run, unpruned of the other) and the pruned one
    dense_final, (unpruned, pruned) = runs[0].entries[0], runs[1].entries
    assert dense_final.latency_ms is not None and unpruned.latency_ms == dense_final.latency_ms
    assert pruned.latency_ms is not None


def test_report_shows_the_shared_baseline_once_in_one_macs_unit(
    report_runs: dict[str, Path], tmp_path: Path
) -> None:
    runs = [
        report_runs["dense"],
        _variant_of(report_runs, tmp_path, "v1"),
        _variant_of(report_runs, tmp_path, "v2"),
    ]
    page = build.build_report(runs, tmp_path / "r.html", latency=False, retrieval=False, token_images=0)
    html = page.read_text()
    table = html[html.index('<h2 id="metrics">') : html.index("</table>")]
    assert len(re.findall(r'<tr class="unpruned"', table)) == 0
    assert len(re.findall(r'<tr class="(?:final|pruned)"', table)) == 3  # dense final once, two pruned
    assert "also: v1 (unpruned), v2 (unpruned)" in table
    # the tiny ViT costs about 5 MMACs: the column is in MMACs, every value plain decimals
    assert "<th>MMACs</th>" in table and "<th>blocks MMACs</th>" in table
    values = re.findall(r'<td class="num">([^<]*)</td>', table)
    assert values and not any("e-" in v or "e+" in v for v in values)


def test_int8_columns_show_a_current_note_and_nothing_else(
    report_runs: dict[str, Path], tmp_path: Path
) -> None:
    from reidprune.export.int8_summary import write_int8_note

    dense = shutil.copytree(report_runs["dense"], tmp_path / "dense")  # the notes are written into it
    runs = [dense, _variant_of(report_runs, tmp_path, "v1")]
    page = build.build_report(runs, tmp_path / "plain.html", latency=False, retrieval=False, token_images=0)
    assert "INT8" not in page.read_text()  # no run measured INT8: no such columns

    variant = runs[1]
    write_int8_note(variant, variant / "model", {"mAP": 41.25, "rank1": 55.0, "latency_ms": 0.375})
    write_int8_note(runs[0], tmp_path / "v1" / "model", {"mAP": 12.0, "latency_ms": 9.0})  # another model's
    html = build.build_report(runs, tmp_path / "r.html", latency=False, retrieval=False, token_images=0)
    table = html.read_text()
    table = table[table.index('<h2 id="metrics">') : table.index("</table>")]
    assert "<th>INT8 mAP</th><th>INT8 b1 ORT (ms)</th>" in table
    pruned = table[table.index('<tr class="pruned"') :]
    assert '<td class="num">41.25</td><td class="num">0.38</td>' in pruned
    final = table[table.index('<tr class="final"') : table.index('<tr class="pruned"')]
    assert '<td class="num">-</td><td class="num">-</td>' in final  # a stale note is not shown
