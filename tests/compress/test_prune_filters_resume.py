"""A killed filter-pruning job resumed with --resume ends bit for bit where an uninterrupted one does
(CPU): soft pruning (its callback's selection travels in the training checkpoint) killed in its
second epoch, and hfp killed in its final fine-tuning of the extracted model."""

from __future__ import annotations

from pathlib import Path

import pytest
from prune_ddp_helpers import assert_same_job, killed_and_resumed, write_job

from reidprune.train.log import read_log

# (method, extra overrides, the stage directory killed). The stages run 2 epochs of 3 steps with a
# checkpoint after every step; the job is killed after step 4, the first step of the second epoch
# (after the callback has selected, and decayed or zeroed, filters once), so 2 steps remain
STEPS = "train.max_steps_per_epoch=3"
CASES = {
    "bafd": ("filter-bafd", [], "soft"),
    # zeros held after every step with the selection of the last epoch end: a resume that lost the
    # callback's selection would not hold them after step 5, and step 6 would see other weights (with
    # at_start the callback would select again at the start of the resumed run, on weights whose
    # selection is zero, and hide the loss)
    "fpgm-hold-zeros": ("filter-fpgm", ["prune.options={mask_bn: false, hold_zeros: true}"], "soft"),
    "hfp": ("filter-hfp", [], "final"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_killed_filter_job_resumes_to_the_uninterrupted_result(
    tmp_path: Path, synth_root, case: str
) -> None:
    method, overrides, stage = CASES[case]
    config = write_job(tmp_path, synth_root, method, 0.5, final_epochs=2)
    uninterrupted, resumed = killed_and_resumed(config, tmp_path, f"{stage}-step4", (STEPS, *overrides))
    assert resumed["plan"]["details"]["removed_filters"] > 0
    assert_same_job(resumed, uninterrupted, tmp_path / "killed", tmp_path / "ref")
    # the stage continued from its step-4 checkpoint: it trained once up to there and resumed once
    events = read_log(tmp_path / "killed" / stage / "train_log.jsonl")
    assert [r["step"] for r in events if r["event"] == "resume"] == [4]
    assert [r["event"] for r in events].count("start") == 1
    steps = [r["step"] for r in events if r["event"] == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]
