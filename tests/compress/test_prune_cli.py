"""`reidprune prune` from the command line: refusals before any work, and the console table."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import reidprune
from reidprune.cli import _register, app
from tiny_models import tiny_vit

TOKEN_CONFIG = """
name: tokens
device: cpu
data: {{format: synth, root: {root}, synth_ids: 4, height: 64, width: 32, batch_size: 8, num_workers: 0}}
model: {{name: vit_tiny_reid, weights: {weights}}}
prune:
  method: token-amg
  rate: 0.25
  final_epochs: 0
  options: {{mode: kv, depth_discount: 0.03}}
output_dir: {out}
"""


@pytest.fixture
def token_config(tmp_path: Path, synth_root: Path) -> Path:
    weights = reidprune.save(tiny_vit(), tmp_path / "dense")
    path = tmp_path / "tokens.yaml"
    path.write_text(TOKEN_CONFIG.format(root=synth_root, weights=weights, out=tmp_path / "run"))
    return path


def _invoke(*args: str):
    _register()
    return CliRunner(env={"COLUMNS": "200"}).invoke(app, ["prune", *args], catch_exceptions=False)


def test_options_of_the_configured_method_are_refused_for_another_method(token_config: Path) -> None:
    result = _invoke("-c", str(token_config), "--method", "head-entropy")
    assert result.exit_code == 2, result.output
    assert "prune.options.mode is not an option of head-entropy; it accepts depth_weight, stochastic" in (
        " ".join(result.output.split())
    )
    assert "Traceback" not in result.output
    assert not (token_config.parent / "run").exists(), "refused before any work"


def test_a_folder_with_a_killed_prune_job_is_refused_without_resume(token_config: Path) -> None:
    state = token_config.parent / "run" / "prune_state"
    state.mkdir(parents=True)
    result = _invoke("-c", str(token_config))
    assert result.exit_code == 2, result.output
    assert "already holds a run (prune_state); pass --resume to continue it" in " ".join(
        result.output.split()
    )
    assert sorted(p.name for p in state.parent.iterdir()) == ["prune_state"], "refused before any work"


@pytest.mark.slow
def test_the_table_shows_attention_params_before_and_after(token_config: Path) -> None:
    head_config = token_config.with_name("heads.yaml")
    head_config.write_text(
        token_config.read_text().replace("  options: {mode: kv, depth_discount: 0.03}\n", "")
    )
    result = _invoke("-c", str(head_config), "--method", "head-magnitude", "--rate", "0.5")
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "params (M)" in line)
    columns = [c.strip() for c in header.strip("┃│ ").split("┃")]
    # a tiny model's MACs are shown in MMACs (the CLI tables switch below 0.1 G)
    assert columns[:4] == ["model", "params (M)", "MSA params (M)", "MMACs"]
    # per head: q/k/v 3 x 8 x 32 + 3 x 8 bias, proj 32 x 8 = 1048; per block a proj bias of 32
    rows = {line.split()[1]: line for line in result.output.splitlines() if "pruned" in line}
    assert "0.00638" in rows["unpruned"]  # 6 heads: 6 x 1048 + 3 x 32 = 6384
    assert "0.00324" in rows["pruned"]  # 3 heads: 3 x 1048 + 3 x 32 = 3240
