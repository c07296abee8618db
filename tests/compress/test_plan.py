"""CompressionPlan history: one flat entry per step, also when read from files that nested it."""

from __future__ import annotations

import json

import reidprune
from reidprune.models import create
from reidprune.models.plan import CompressionPlan, flat_plan

STEPS = [
    ("token-amg", 0.1, {"kept_tokens": [5, 4]}),
    ("head-entropy", 0.2, {"num_heads": [2, 3]}),
    ("head-entropy", 0.3, {"num_heads": [2, 2]}),
]
FLAT = {
    "method": "head-entropy",
    "rate": 0.3,
    "details": {"num_heads": [2, 2]},
    "previous": [
        {"method": "token-amg", "rate": 0.1, "details": {"kept_tokens": [5, 4]}},
        {"method": "head-entropy", "rate": 0.2, "details": {"num_heads": [2, 3]}},
    ],
}


def three_steps() -> CompressionPlan:
    plan = CompressionPlan(*STEPS[0])
    for step in STEPS[1:]:
        plan = plan.then(*step)
    return plan


def nested_dict() -> dict:
    """What `then` + `to_dict` wrote before the fix: every history entry carries its own history."""
    first = {"method": "token-amg", "rate": 0.1, "details": {"kept_tokens": [5, 4]}, "previous": []}
    second = {"method": "head-entropy", "rate": 0.2, "details": {"num_heads": [2, 3]}, "previous": [first]}
    return {**FLAT, "previous": [first, second]}


def test_then_on_three_steps_gives_exactly_the_flat_history() -> None:
    assert three_steps().to_dict() == FLAT


def test_a_nested_history_from_an_older_file_is_read_flat() -> None:
    assert CompressionPlan.from_dict(nested_dict()) == three_steps()
    assert flat_plan(nested_dict()) == FLAT  # what the report shows for such a file


def test_an_older_model_json_with_a_nested_plan_loads_and_saves_flat(tmp_path) -> None:
    model = create("vit_tiny_reid", depth=1, num_classes=3)
    reidprune.save(model, tmp_path / "old")
    path = tmp_path / "old" / "model.json"
    description = json.loads(path.read_text())
    description["plan"] = nested_dict()
    path.write_text(json.dumps(description))

    loaded = reidprune.load(tmp_path / "old")
    assert loaded.compression_plan == three_steps()
    reidprune.save(loaded, tmp_path / "new")
    assert json.loads((tmp_path / "new" / "model.json").read_text())["plan"] == FLAT
