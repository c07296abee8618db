"""`reidprune compress MODEL_DIR --data-root D --target-gmacs G | --target-speedup S | --target-latency-ms T --out DIR`."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import typer

from reidprune.cli.common import console, ensure_writable, print_table, user_errors, write_json

PLAN_JSON = "plan.json"
MODEL_DIR = "model"
ONNX_FILE = "model.onnx"
VERIFY_JSON = "verify.json"


def compress_command(
    model: str = typer.Argument(..., help="a reidprune model directory (from `reidprune train` or `prune`)"),
    overrides: list[str] | None = typer.Argument(
        None, help="dotted overrides for data and fine-tuning, e.g. data.batch_size=32 train.lr=1e-4"
    ),
    data_root: str = typer.Option(..., "--data-root", help="data set folder; its training split calibrates"),
    data_format: str | None = typer.Option(
        None,
        "--data-format",
        help="market1501 | dukemtmc | msmt17 | reid_folder | synth | ... (default: detected)",
    ),
    target_gmacs: float | None = typer.Option(None, "--target-gmacs", help="GMACs per image of the result"),
    target_speedup: float | None = typer.Option(
        None, "--target-speedup", help="cost(original) / cost(result) on --runtime (gmacs = GMACs ratio)"
    ),
    target_latency_ms: float | None = typer.Option(
        None, "--target-latency-ms", help="milliseconds per batch on --runtime"
    ),
    runtime: str = typer.Option(
        "onnxruntime", "--runtime", help="deployment runtime of latency targets: onnxruntime | torch | gmacs"
    ),
    batch: int = typer.Option(1, "--batch", help="deployment batch size of latency targets"),
    threads: int | None = typer.Option(None, "--threads", help="deployment CPU threads of latency targets"),
    out: Path = typer.Option(
        ..., "--out", "-o", help="output folder: plan.json, model/, model.onnx and verify.json"
    ),
    epochs: int = typer.Option(
        0, "--epochs", help="distillation fine-tuning epochs from the original (0 = none)"
    ),
    calib_batches: int = typer.Option(8, "--calib-batches", help="training batches for scores and proxy"),
    token_method: str = typer.Option(
        "amg", "--token-method", help="ViT token reduction searched: amg (static masks) | topk (EViT) | tome"
    ),
    token_mode: str = typer.Option("skip", "--token-mode", help="AMG token masks: skip | kv"),
    importance: str = typer.Option(
        "sensitivity",
        "--importance",
        help="group losses: sensitivity (measured on calibration images) | scores (no extra passes)",
    ),
    seed: int = typer.Option(0, "--seed", help="data order and fine-tuning seed"),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda[:N]"),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="replace a plan.json / model/ already in --out"
    ),
    verify: bool = typer.Option(
        True, "--verify/--no-verify", help="export the result and measure it against the original"
    ),
    tolerance: float = typer.Option(
        0.07, "--tolerance", help="relative distance from the target that counts as missing (or exceeding) it"
    ),
    replan: bool = typer.Option(
        False,
        "--replan",
        help="measure the searched model before fine-tuning; when it misses (or exceeds) the target by "
        "more than --tolerance, search once more with the measured correction",
    ),
    verify_time: float = typer.Option(
        2.0, "--verify-time", help="seconds of interleaved timing of original and result"
    ),
    latency_cache: Path | None = typer.Option(
        None,
        "--latency-cache",
        help="latency tables: a JSON file or a folder (default ~/.cache/reidprune/latency)",
    ),
    point_time: float = typer.Option(0.3, "--point-time", help="seconds timing each latency table point"),
    coarse_grid: bool = typer.Option(
        False, "--coarse-grid", help="latency tables on 2 points per axis: quick, rougher"
    ),
) -> None:
    """Compress a model to a budget: search per-block tokens (AMG masks, top-k drops or ToMe merges)
    and heads (ViT) or filter widths (ResNet) jointly, write the plan and the compressed model, optionally fine-tune it with distillation."""
    from reidprune import models
    from reidprune.budget.api import IMPORTANCE, check_token_method, resolve_target, to_budget
    from reidprune.budget.latency import COARSE_GRID
    from reidprune.budget.verify import search_with_replan, summary_line, verify_budget
    from reidprune.cli.eval import _data_config
    from reidprune.cli.model_dirs import resolve_model_dir
    from reidprune.config import ConfigError, load_config
    from reidprune.data import build_dataset, build_loaders
    from reidprune.errors import DataError
    from reidprune.measure.flops import count_gmacs
    from reidprune.models.forward import use_model_input_size
    from reidprune.models.loading import is_saved_model
    from reidprune.models.serialization import save
    from reidprune.train.distributed import resolve_device
    from reidprune.train.engine import seed_everything

    resolve_target(target_speedup, target_latency_ms, target_gmacs)  # refused before any work
    check_token_method(token_method, "--token-method")
    if importance not in IMPORTANCE:
        raise ConfigError(f"--importance {importance}: expected one of {', '.join(IMPORTANCE)}")
    if epochs < 0:
        raise ConfigError(f"--epochs {epochs}: expected >= 0")
    if not 0 <= tolerance < 1:
        raise ConfigError(f"--tolerance {tolerance}: expected a fraction in [0, 1), e.g. 0.07")
    if replan and not verify:
        raise ConfigError("--replan re-plans from a measurement: it needs --verify (the default)")
    if point_time <= 0 or verify_time <= 0:
        raise ConfigError("--point-time and --verify-time: expected positive seconds")
    ensure_writable(out, directory=True, option="--out")
    if not overwrite and any((out / name).exists() for name in (PLAN_JSON, MODEL_DIR, ONNX_FILE)):
        raise ConfigError(
            f"--out {out} already holds a plan.json, model/ or model.onnx; pass --overwrite to replace them"
        )
    if not is_saved_model(model):
        raise ConfigError(f"{model}: not a reidprune model directory (no model.json)")
    extra = list(overrides or [])
    cfg = _data_config(load_config(None, extra), data_format, data_root, data_format is None)
    cfg.seed = seed
    if epochs and not any(o.startswith("train.distill=") for o in extra):
        cfg.train.distill = "soft"  # fine-tuning distils from the original unless told otherwise
    torch_device = resolve_device(device or cfg.device)
    seed_everything(seed)
    splits = build_dataset(cfg.data)
    if not splits.train:
        raise DataError(f"--data-root {cfg.data.root}: calibration needs a training split")
    original = models.load(resolve_model_dir(model), map_location=torch_device)
    use_model_input_size(cfg.data, original)
    loaders = build_loaders(cfg.data, splits, seed=seed)
    latency = {"cache": latency_cache, "min_time": point_time, "grid": COARSE_GRID if coarse_grid else None}

    def search(correction: float) -> tuple[Any, dict[str, Any]]:
        """Search, aiming at target / correction."""
        return to_budget(
            original,
            loaders.train,
            target_speedup=target_speedup,
            target_latency_ms=target_latency_ms,
            target_gmacs=target_gmacs,
            runtime=runtime,
            batch=batch,
            threads=threads,
            latency=latency,
            correction=correction,
            calib_batches=calib_batches,
            token_method=token_method,
            token_mode=token_mode,
            importance=importance,
            seed=seed,
            device=torch_device,
        )

    def measure(small: Any, plan: dict[str, Any]) -> dict[str, Any]:
        """The searched model timed against the original (copies on the CPU; no graph written)."""
        return verify_budget(
            copy.deepcopy(original).cpu(), copy.deepcopy(small).cpu(), plan, min_time=verify_time,
            tolerance=tolerance,
        )  # fmt: skip

    if verify and replan:  # speed does not depend on the weights: re-plan before fine-tuning
        small, plan = search_with_replan(search, measure, console.print)
    else:
        small, plan = search(1.0)
    out.mkdir(parents=True, exist_ok=True)
    if epochs:
        from reidprune.jobs.schedule import finetune

        searched = small.compression_plan
        teacher = copy.deepcopy(original).eval()
        small, record = finetune(
            small, epochs, cfg, loaders, out / "finetune", teacher, torch_device, select_best=True
        )
        small.compression_plan = searched
        plan["finetune"] = {**record, "distill": cfg.train.distill}
    small = small.eval()
    report = None
    if verify:
        report = verify_budget(
            original.cpu(),
            small.cpu(),
            plan,
            onnx_path=out / ONNX_FILE,
            min_time=verify_time,
            tolerance=tolerance,
        )
        console.print(summary_line(report))
        plan["verify"] = report
        write_json(out / VERIFY_JSON, report)
    plan["measured_gmacs"] = float(count_gmacs(small)["gmacs"])
    plan["original_gmacs"] = float(count_gmacs(original)["gmacs"])
    save(small, out / MODEL_DIR, metadata={"method": "budget-search", "target": plan["target"]})
    write_json(out / PLAN_JSON, plan)
    unit = plan["target"]["unit"]
    rows = [
        {"model": "original", f"predicted {unit}": plan["dense_cost"], "GMACs": plan["original_gmacs"]},
        {"model": "compressed", f"predicted {unit}": plan["predicted_cost"], "GMACs": plan["measured_gmacs"]},
    ]
    if report is not None:
        for row, name in zip(rows, ("original", "compressed"), strict=True):
            row[f"measured {report['measured']['unit']}"] = report["measured"][name]
    print_table(f"{model}: budget {plan['target']['kind']} {plan['target']['value']:g} ({unit})", rows)
    where = f"plan in {out / PLAN_JSON}, compressed model in {out / MODEL_DIR}"
    console.print(where + (f", ONNX graph {out / ONNX_FILE}" if report is not None else ""))
    if report is not None and report["missed"]:
        console.print(f"[bold red]{summary_line(report)}[/bold red]")


def register(app: typer.Typer) -> None:
    app.command("compress")(user_errors(compress_command))
