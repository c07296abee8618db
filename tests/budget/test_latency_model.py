"""The latency model: tables built, cached and reloaded, every block kind covered, clear errors.

Timings are never asserted (a shared machine); the tests check what is measured, stored and reused.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import export_helpers as tiny
import pytest
import torch

from reidprune.budget import Grid, LatencyCache, LatencyModel, measure_latency, predict_latency, vit_geometry
from reidprune.budget.runtimes import setting_for

SMALL = Grid(
    token_fractions=(0.5, 1.0), kv_fractions=(0.5, 1.0), head_fractions=(0.0, 1.0), width_fractions=(0.5, 1.0)
)
FAST = {"runtime": "torch", "batch": 1, "threads": 1, "grid": SMALL, "min_time": 0.001, "calib_time": 0.01}
NO_TIMING = {k: v for k, v in FAST.items() if k not in ("min_time", "calib_time")}


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One table folder shared by the tests of this module (the dense tables are timed once)."""
    return tmp_path_factory.mktemp("latency")


def test_tables_are_built_cached_and_reloaded_without_measuring(table: Path) -> None:
    model = tiny.vit_bnneck()
    first = predict_latency(model, cache=table, **FAST)
    # 2 token counts x 2 key fractions x 2 head counts + 2 x 2 MLP points + call + stem/head
    # + the dense reference measured whole (calibration) + the load meter's reference time
    assert first["measured_points"] == 8 + 4 + 2 + 1 + 1
    assert first["calibration"]["calibrated"] and first["calibration"]["scale"] > 0
    assert first["predicted_ms"] == pytest.approx(first["call_ms"] + first["fixed_ms"] + first["blocks_ms"])
    again = predict_latency(model, cache=table, measure=False, **NO_TIMING)
    assert again["measured_points"] == 0 and again["predicted_ms"] == first["predicted_ms"]
    stored = json.loads(Path(first["cache"]).read_text())
    assert stored["setting"]["runtime"] == "torch" and stored["setting"]["batch"] == 1
    assert len(stored["points"]) == 16 and not list(Path(first["cache"]).parent.glob(".*tmp"))


@pytest.mark.parametrize(
    ("build", "kinds"),
    [
        (tiny.amg_kv, {"amg-kv"}),
        (tiny.amg_skip, {"amg-skip"}),
        (tiny.topk, {"topk", "dense"}),
        (tiny.tome, {"tome"}),
        (tiny.pm, {"pm", "dense"}),
        (tiny.heads, {"dense"}),
        (tiny.transreid_topk, {"topk", "dense"}),
    ],
)
def test_every_reducer_and_pruned_head_count_is_priced(table: Path, build, kinds: set[str]) -> None:  # type: ignore[no-untyped-def]
    model = build()
    result = predict_latency(model, cache=table, **FAST)
    assert {b["kind"] for b in result["blocks"]} <= kinds | {"dense"} and kinds & {
        b["kind"] for b in result["blocks"]
    }
    assert all(b["ms"] >= 0 for b in result["blocks"]) and result["predicted_ms"] > 0
    heads = [b["geometry"]["heads"] for b in result["blocks"]]
    assert heads == [int(block.attn.num_heads) for block in model.backbone.blocks]


def test_geometry_follows_the_token_spec() -> None:
    model = tiny.topk()  # fuse=True: 1 CLS + keep + 1 fused token leave a reduction block
    geo = vit_geometry(model)
    spec = model.backbone.token_spec
    for i, g in enumerate(geo):
        if spec.keep[i] is not None:
            assert g["tokens_out"] == g["mlp_tokens"] == 1 + spec.keep[i] + 1
        if i:
            assert g["tokens_in"] == geo[i - 1]["tokens_out"]
    kv = vit_geometry(tiny.amg_kv())
    assert all(g["queries"] == g["tokens_in"] and g["keys"] <= g["queries"] for g in kv)


def test_an_untimed_pm_geometry_reuses_the_measured_fraction(table: Path) -> None:
    model = tiny.pm()
    predict_latency(model, cache=table, **FAST)
    with LatencyModel(cache=table, measure=False, **NO_TIMING) as lm:
        costs = lm.predict(model)
        assert not costs["approximate"]  # every block's geometry is in the table
        lm.cache.points = {k: v for k, v in lm.cache.points.items() if not k.startswith("reducer|pm")}
        estimated = lm.predict(model)
    assert estimated["approximate"] and estimated["predicted_ms"] > 0


@pytest.mark.parametrize("method", ["topk", "tome"])
def test_top_k_and_tome_blocks_of_any_geometry_are_priced_from_the_tables(table: Path, method: str) -> None:
    from reidprune.compress.tokens import prune_tokens

    predict_latency(prune_tokens(tiny.vit_bnneck(), method, 0.4)[0], cache=table, **FAST)
    other = prune_tokens(tiny.vit_bnneck(), method, 0.7)[0].eval()  # other token counts everywhere
    with LatencyModel(cache=table, measure=False, **NO_TIMING) as lm:
        result = lm.predict(other)  # nothing to time: the reducer's extra is a table over tokens in
    blocks = [b for b in result["blocks"] if b["kind"] == method]
    assert blocks and not result["approximate"]
    for block in blocks:  # attention on the tokens entering, MLP on those left
        assert (
            block["geometry"]["queries"] == block["geometry"]["tokens_in"] > block["geometry"]["mlp_tokens"]
        )


def test_interpolated_block_cost_grows_with_tokens_keys_heads_and_width(table: Path) -> None:
    predict_latency(tiny.vit_bnneck(), cache=table, **FAST)
    with LatencyModel(cache=table, measure=False, **NO_TIMING) as lm:
        attn = [lm.attention_ms(32, 8, True, (33, 4), (q, q, 4)) for q in range(4, 34, 3)]
        keys = [lm.attention_ms(32, 8, True, (33, 4), (33, kv, 4)) for kv in range(4, 34, 3)]
        heads = [lm.attention_ms(32, 8, True, (33, 4), (33, 33, h)) for h in range(1, 5)]
        width = [lm.mlp_ms(32, (33, 128), (33, w)) for w in range(16, 129, 16)]
    for series in (attn, keys, heads, width):
        assert all(b >= a - 1e-12 for a, b in itertools.pairwise(series))


def test_resnet_blocks_are_priced_from_width_tables(tmp_path: Path) -> None:
    dense, pruned = tiny.resnet(), tiny.filters()
    full = predict_latency(dense, cache=tmp_path, **FAST)
    small = predict_latency(pruned, cache=tmp_path, **FAST)
    assert [b["kind"] for b in full["blocks"]] == ["basicblock"] * 8
    assert small["measured_points"] == 0  # the pruned widths fall inside the dense model's tables
    mids = [b["geometry"]["mid1"] for b in small["blocks"]]
    assert mids == [w[0] for w in pruned.arch.mid_widths]
    assert full["stem_ms"] >= 0 and full["head_ms"] >= 0


def test_whole_model_measurement_on_onnxruntime(tmp_path: Path) -> None:
    model = tiny.vit_bnneck()
    measured = measure_latency(model, "onnxruntime", 1, 1, min_time=0.01)
    assert 0 < measured["median_ms"] <= measured["p90_ms"] and measured["setting"]["runtime"] == "onnxruntime"
    grid = Grid(token_fractions=(1.0,), kv_fractions=(1.0,), head_fractions=(1.0,), width_fractions=(1.0,))
    predicted = predict_latency(
        model, "onnxruntime", 1, 1, cache=tmp_path, grid=grid, min_time=0.001, calib_time=0.01
    )
    assert predicted["measured_points"] == 4 + 2 and predicted["setting"]["version"]


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="runtime 'tensorrt'"):
        predict_latency(tiny.vit_bnneck(), "tensorrt")
    with pytest.raises(LookupError, match="not in the latency table"):
        predict_latency(tiny.vit_bnneck(), "torch", cache=tmp_path, measure=False)
    with pytest.raises(TypeError, match="knows reidprune ViTs and ResNets"):
        predict_latency(torch.nn.Linear(2, 2), "torch", cache=tmp_path)
    with pytest.raises(ValueError, match="batch 0"):
        predict_latency(tiny.vit_bnneck(), "torch", batch=0)
    other = tmp_path / "other.json"
    LatencyCache(setting_for("torch", 2, 1), other).save()
    with pytest.raises(ValueError, match="holds figures for"):
        LatencyCache(setting_for("torch", 1, 1), other)


def test_a_table_of_an_older_format_is_measured_afresh(tmp_path: Path) -> None:
    setting = setting_for("torch", 1, 1)
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"format": 1, "setting": dataclasses.asdict(setting), "points": {"call": 1.0}}))
    assert LatencyCache(setting, old).points == {}


def test_the_load_meter_is_timed_in_steady_state_for_its_reference_and_next_to_every_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The meter runs as the probes run (steady state, no cache flush before it): a small meter timed
    cold moved up to 1.6x between rounds and every normalised point moved with it."""
    import reidprune.budget.latency as latency

    seen: list[tuple] = []
    real = latency.interleaved_times

    def spy(fns, **kwargs):  # type: ignore[no-untyped-def]
        assert kwargs.get("steady", True), "probes are timed in steady state, as whole models are"
        assert not kwargs.get("before"), "nothing runs untimed before the meter"
        seen.append(tuple(fns))
        return real(fns, **kwargs)

    monkeypatch.setattr(latency, "interleaved_times", spy)
    with LatencyModel("torch", 1, 1, cache=tmp_path, min_time=0.001) as model:
        model.call_ms()
    assert seen, "nothing was timed"
    assert all(latency.METER in keys for keys in seen)
    assert seen[0] == (latency.METER,)  # the reference first, alone
    assert seen[1] == ("fn", latency.METER)  # then the point, next to the meter


def test_a_measurement_is_brought_to_the_tables_load_by_the_same_meter(
    table: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Predictions are in the meter reference's load: a side-by-side measurement given that reference
    times the meter in its rounds and reports each model at that load, and the load itself."""
    import statistics

    import reidprune.budget.latency as latency
    from reidprune.budget.latency import measure_side_by_side

    predicted = predict_latency(tiny.vit_bnneck(), cache=table, **FAST)
    reference = predicted["meter_reference_ms"]
    assert reference is not None and reference > 0
    samples: dict = {}
    real = latency.interleaved_times

    def spy(fns, **kwargs):  # type: ignore[no-untyped-def]
        assert kwargs.get("steady", True), "models are timed in steady state, as the tables' probes"
        assert not kwargs.get("before"), "the meter runs as it does next to the tables' probes"
        samples.update(real(fns, **kwargs))
        return {k: list(v) for k, v in samples.items()}

    monkeypatch.setattr(latency, "interleaved_times", spy)
    timed = measure_side_by_side(
        {"model": tiny.vit_bnneck()}, "torch", 1, 1, min_time=0.01, meter_reference_ms=reference
    )
    meter, model = samples[latency.METER], samples["model"]
    assert timed["load"] == pytest.approx(statistics.median(meter) * 1e3 / reference)
    ratio = statistics.median(a / b for a, b in zip(model, meter, strict=True))
    assert timed["model"]["normalised_ms"] == pytest.approx(ratio * reference)
    assert latency.METER not in timed
    monkeypatch.setattr(latency, "interleaved_times", real)
    plain = measure_side_by_side({"model": tiny.vit_bnneck()}, "torch", 1, 1, min_time=0.01)
    assert "load" not in plain and "normalised_ms" not in plain["model"]
    # a batch-64 call of a big model takes seconds: min_rounds keeps the medians from a handful
    longer = measure_side_by_side({"model": tiny.vit_bnneck()}, "torch", 1, 1, min_time=1e-6, min_rounds=9)
    assert longer["model"]["rounds"] == 9


def test_every_vit_table_point_is_timed_in_one_set_of_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attention and MLP tables, reducer blocks and the stem / head share one load: timed apart, a
    reducer's extra (its block minus its halves) took the tables' disagreement whole."""
    seen: list[set[str]] = []
    real = LatencyModel._time_many

    def spy(self, fns, min_time):  # type: ignore[no-untyped-def]
        seen.append(set(fns))
        return real(self, fns, min_time)

    monkeypatch.setattr(LatencyModel, "_time_many", spy)
    with LatencyModel(cache=tmp_path, **NO_TIMING, min_time=0.001) as model:
        tables = model.vit_tables(tiny.vit_bnneck(), kinds=("amg-skip", "topk"))
        assert seen[0] == {"fn"}  # the call overhead first: every other point is net of it
        kinds = {sig.split("|")[0] for sig in seen[1]}
        assert kinds == {"attn", "mlp", "reducer", "block", "vit-fixed"} and len(seen) == 2
        # the second pass read what the first one collected: real figures, no placeholders
        assert tables["fixed_ms"] == model.cache.points[next(s for s in seen[1] if s.startswith("vit-fixed"))]
        assert (
            tables["blocks"][0].attention.values.max() > 0 and tables["blocks"][0].reducer_ms["amg-skip"] >= 0
        )
        model.vit_tables(tiny.vit_bnneck(), kinds=("amg-skip", "topk"))
        assert len(seen) == 2  # all cached now


def test_the_vit_calibration_brings_the_whole_graph_to_the_tables_rounds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dense reference is timed next to its own dense halves; its cached time is scaled by how
    those halves' cached figures compare with their time in these rounds (not through the meter)."""
    real = LatencyModel._time_many
    calibration_rounds: list[dict[str, float]] = []
    whole_at_tables_load: list[float] = []

    def fake(self, fns, min_time):  # type: ignore[no-untyped-def]
        if not any(sig.startswith("whole|") for sig in fns):
            return real(self, fns, min_time)
        call = self.call_ms()
        # the halves run 2x slower than when their table was timed; the whole graph takes as long
        # as 12 of them then (a figure the scale does not clamp)
        halves = sum(
            self.cache.points[sig.removeprefix("anchor|")] for sig in fns if sig.startswith("anchor|")
        )
        out = {
            sig: 2 * self.cache.points[sig.removeprefix("anchor|")] * self.chain + call
            if sig.startswith("anchor|")
            else 24 * halves
            for sig in fns
        }
        whole_at_tables_load.append(12 * halves)
        calibration_rounds.append(out)
        return out

    monkeypatch.setattr(LatencyModel, "_time_many", fake)
    with LatencyModel(cache=tmp_path, **NO_TIMING, min_time=0.001) as model:
        scale, info = model.scale(tiny.vit_bnneck())
        net = whole_at_tables_load[0] - model.call_ms() - model.vit_tables(tiny.vit_bnneck())["fixed_ms"]
    assert scale == pytest.approx(net / info["reference_blocks_ms"])
    (rounds,) = calibration_rounds
    anchors = sorted(sig.split("|")[1] for sig in rounds if sig.startswith("anchor|"))
    assert anchors == ["attn", "mlp"]  # the dense reference's own halves
    assert info["reference_measured_ms"] == pytest.approx(whole_at_tables_load[0])
