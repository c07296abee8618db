"""The budget method of a prune job (`prune.method: budget`): search, fine-tune, verify.

    prune:
      method: budget
      final_epochs: 10
      calib_batches: 8
      options: {target_speedup: 1.5, runtime: onnxruntime, batch: 1, threads: 2}

search (`budget.to_budget` on the training loader, under cfg.seed) -> output_dir/plan.json ->
`final_epochs` of fine-tuning with the job's distillation settings (best epoch by validation mAP
when there is a validation split) -> unless `options.verify` is false: the result exported to
output_dir/model.onnx and timed side by side with the original on the target runtime ->
output_dir/verify.json (also in plan.json under "verify" and in the job's stages). A miss beyond
`options.tolerance` (or a result faster than the target by more than it) is logged as a warning;
the job still finishes (the numbers say by how much). `options.replan: true` measures the searched
model before fine-tuning and searches once more with the measured correction when it misses or
exceeds the target (`budget.verify.search_with_replan`; plan.json "replan").

The searched model is saved as a finished round (`prune_state`), so a resumed job continues the
fine-tuning of the same plan instead of searching again. The search times latency tables on this
machine, so it runs on one process: under torchrun it is refused.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

from torch import nn

from reidprune.atomic import write_json
from reidprune.errors import CompressionError
from reidprune.jobs import prune_state
from reidprune.jobs.schedule import ScheduleResult, drop_resume_files, final_finetune, position_loader
from reidprune.train.distributed import dist_info

log = logging.getLogger(__name__)

PLAN_JSON = "plan.json"
VERIFY_JSON = "verify.json"
ONNX_FILE = "model.onnx"
VERIFY_KEYS = {"verify": True, "verify_time": 2.0, "tolerance": 0.07, "replan": False}


def latency_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """prune.options.latency as `to_budget(latency=)` takes it: grid "coarse" -> COARSE_GRID."""
    from reidprune.budget.latency import COARSE_GRID

    latency = dict(options or {})
    grid = latency.pop("grid", None)
    if grid == "coarse":
        latency["grid"] = COARSE_GRID
    return latency


def budget_schedule(
    model: nn.Module,
    cfg: Any,
    loaders: Any,
    output_dir: Path,
    teacher: nn.Module,
    device: Any,
    resume: bool,
) -> ScheduleResult:
    """Run the budget method of `cfg.prune` on `model` (not modified); see the module docstring."""
    from reidprune.budget.api import to_budget
    from reidprune.budget.verify import search_with_replan

    if dist_info().enabled:
        raise CompressionError(
            f"prune.method={cfg.prune.method} times latency tables on one machine: run it without torchrun"
        )
    prune = cfg.prune
    options = dict(prune.options)
    # checked with the config (compress.schedule.check_verify_options), before any work
    checks = {key: options.pop(key, default) for key, default in VERIFY_KEYS.items()}
    latency = latency_options(options.pop("latency", None))
    saved = prune_state.load_round(output_dir, device) if resume else None
    if saved is not None:
        small, stages = saved.model, saved.stages
        prune_state.restore_generators(saved)
        plan = json.loads((output_dir / PLAN_JSON).read_text())
    else:

        def search(correction: float) -> tuple[nn.Module, dict[str, Any]]:
            position_loader(loaders.train, 0)  # both searches calibrate on the same batches
            given = options.get("correction", 1.0)
            return to_budget(
                model,
                loaders.train,
                latency=latency,
                calib_batches=prune.calib_batches,
                seed=cfg.seed,
                device=device,
                **{**options, "correction": given * correction},
            )

        if checks["replan"]:
            small, plan = search_with_replan(search, lambda s, p: _measure(model, s, p, checks), log.info)
        else:
            small, plan = search(1.0)
        stages = [
            {
                "stage": "budget search",
                "method": prune.method,
                "target": plan["target"],
                "predicted_cost": plan["predicted_cost"],
                "predicted_speedup": plan["predicted_speedup"],
            }
        ]
        write_json(output_dir / PLAN_JSON, plan)
        prune_state.save_round(output_dir, 1, small, stages)
    searched = small.compression_plan
    small, record = final_finetune(small, searched, cfg, loaders, output_dir, teacher, device, stages, resume)
    if record is not None:
        plan["finetune"] = {**record, "distill": cfg.train.distill}
    small = small.eval()
    if checks["verify"]:
        report = _verify(model, small, plan, output_dir, checks)
        stages.append({"stage": "verify", **report})
    write_json(output_dir / PLAN_JSON, plan)
    drop_resume_files(output_dir / "final")
    return ScheduleResult(small, searched, stages)


def _measure(
    model: nn.Module,
    small: nn.Module,
    plan: dict[str, Any],
    checks: dict[str, Any],
    onnx_path: Path | None = None,
) -> dict[str, Any]:
    """Time `small` against `model` on the plan's runtime (both copied to the CPU; `verify_budget`)."""
    from reidprune.budget.verify import verify_budget

    return verify_budget(
        copy.deepcopy(model).cpu().eval(),
        copy.deepcopy(small).cpu().eval(),
        plan,
        onnx_path=onnx_path,
        min_time=float(checks["verify_time"]),
        tolerance=float(checks["tolerance"]),
    )


def _verify(
    model: nn.Module, small: nn.Module, plan: dict[str, Any], output_dir: Path, checks: dict[str, Any]
) -> dict[str, Any]:
    """Export `small` and time it against `model` on the plan's runtime; verify.json."""
    from reidprune.budget.verify import summary_line

    report = _measure(model, small, plan, checks, output_dir / ONNX_FILE)
    plan["verify"] = report
    write_json(output_dir / VERIFY_JSON, report)
    line = summary_line(report)
    (log.warning if report["missed"] or report["overshot"] else log.info)(line)
    return report
