"""The verification's verdict and re-planning correction, from given numbers (no timing)."""

from __future__ import annotations

import pytest

from reidprune.budget.verify import _against_target, keeps_replanned, summary_line

PREDICTED = {"original": 10.0, "compressed": 5.0, "speedup": 2.0, "unit": "ms"}


def _measured(original: float, compressed: float) -> dict:
    return {"original": original, "compressed": compressed, "unit": "ms", "speedup": original / compressed}


def test_a_speedup_missed_by_more_than_the_tolerance_is_flagged_with_its_correction() -> None:
    verdict = _against_target({"kind": "speedup", "value": 2.0}, PREDICTED, _measured(10.0, 6.0), 0.07)
    assert verdict["shortfall"] == pytest.approx(1 - (10 / 6) / 2)
    assert verdict["missed"] and verdict["correction"] == pytest.approx(2.0 / (10 / 6))
    report = {"target": {"kind": "speedup", "value": 2.0, "unit": "ms"}, "predicted": PREDICTED,
              "measured": _measured(10.0, 6.0), "tolerance": 0.07, **verdict}  # fmt: skip
    assert summary_line(report).startswith("MISSED the target by 16.7 %")


def test_within_the_tolerance_is_met() -> None:
    verdict = _against_target({"kind": "speedup", "value": 2.0}, PREDICTED, _measured(10.0, 5.3), 0.07)
    assert not verdict["missed"] and verdict["shortfall"] == pytest.approx(1 - (10 / 5.3) / 2)


def test_a_latency_target_corrects_by_measured_over_predicted() -> None:
    verdict = _against_target({"kind": "latency_ms", "value": 5.0}, PREDICTED, _measured(11.0, 5.5), 0.07)
    assert verdict["shortfall"] == pytest.approx(0.1) and verdict["missed"]
    assert verdict["correction"] == pytest.approx(1.1)


def test_a_measured_result_far_faster_than_asked_is_flagged_as_exceeded() -> None:
    """x2.5 measured for x2: the plan gave up accuracy the budget did not ask for; re-planning with
    the correction (predicted / measured speed-up < 1) aims at a slower plan."""
    verdict = _against_target({"kind": "speedup", "value": 2.0}, PREDICTED, _measured(10.0, 4.0), 0.07)
    assert verdict["shortfall"] == pytest.approx(-0.25)
    assert verdict["overshot"] and not verdict["missed"]
    assert verdict["correction"] == pytest.approx(2.0 / 2.5)
    report = {"target": {"kind": "speedup", "value": 2.0, "unit": "ms"}, "predicted": PREDICTED,
              "measured": _measured(10.0, 4.0), "tolerance": 0.07, **verdict}  # fmt: skip
    assert summary_line(report).startswith("target EXCEEDED by 25.0 %")
    latency = _against_target({"kind": "latency_ms", "value": 5.0}, PREDICTED, _measured(10.0, 4.0), 0.07)
    assert latency["overshot"] and latency["correction"] == pytest.approx(4.0 / 5.0)
    inside = _against_target({"kind": "speedup", "value": 2.0}, PREDICTED, _measured(10.0, 4.8), 0.07)
    assert not inside["overshot"] and not inside["missed"]


def test_a_counted_gmacs_plan_is_never_called_exceeded() -> None:
    counted = {"original": 10.0, "compressed": 3.0, "unit": "GMACs", "speedup": 10 / 3}
    verdict = _against_target({"kind": "gmacs", "value": 5.0}, PREDICTED, counted, 0.07)
    assert not verdict["overshot"] and not verdict["missed"] and verdict["correction"] == 1.0


def test_a_re_planned_model_is_kept_unless_it_falls_short_where_the_first_did_not() -> None:
    assert keeps_replanned(first_missed=False, second_missed=False)  # overshot, then met
    assert keeps_replanned(first_missed=True, second_missed=True)  # both short: the corrected one
    assert keeps_replanned(first_missed=True, second_missed=False)
    assert not keeps_replanned(first_missed=False, second_missed=True)  # too fast beats too slow
