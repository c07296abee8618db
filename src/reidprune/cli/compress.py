"""`reidprune compress MODEL_DIR --data-root D --target-gmacs G | --target-speedup S | --target-latency-ms T --out DIR`."""

from __future__ import annotations

import copy
from pathlib import Path

import typer

from reidprune.cli.common import console, ensure_writable, print_table, user_errors, write_json

PLAN_JSON = "plan.json"
MODEL_DIR = "model"


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
    out: Path = typer.Option(..., "--out", "-o", help="output folder: plan.json and model/"),
    epochs: int = typer.Option(
        0, "--epochs", help="distillation fine-tuning epochs from the original (0 = none)"
    ),
    calib_batches: int = typer.Option(8, "--calib-batches", help="training batches for scores and proxy"),
    token_mode: str = typer.Option("skip", "--token-mode", help="ViT token masks: skip | kv (AMG)"),
    seed: int = typer.Option(0, "--seed", help="data order and fine-tuning seed"),
    device: str | None = typer.Option(None, "--device", help="auto | cpu | cuda[:N]"),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="replace a plan.json / model/ already in --out"
    ),
) -> None:
    """Compress a model to a budget: search per-block tokens and heads (ViT) or filter widths (ResNet)
    jointly, write the plan and the compressed model, optionally fine-tune it with distillation."""
    from reidprune import models
    from reidprune.budget.api import resolve_target, to_budget
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
    if epochs < 0:
        raise ConfigError(f"--epochs {epochs}: expected >= 0")
    ensure_writable(out, directory=True, option="--out")
    if not overwrite and ((out / PLAN_JSON).exists() or (out / MODEL_DIR).exists()):
        raise ConfigError(
            f"--out {out} already holds a plan.json or model/; pass --overwrite to replace them"
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
    small, plan = to_budget(
        original,
        loaders.train,
        target_speedup=target_speedup,
        target_latency_ms=target_latency_ms,
        target_gmacs=target_gmacs,
        runtime=runtime,
        batch=batch,
        threads=threads,
        calib_batches=calib_batches,
        token_mode=token_mode,
        seed=seed,
        device=torch_device,
    )
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
    plan["measured_gmacs"] = float(count_gmacs(small)["gmacs"])
    plan["original_gmacs"] = float(count_gmacs(original)["gmacs"])
    save(small.eval(), out / MODEL_DIR, metadata={"method": "budget-search", "target": plan["target"]})
    write_json(out / PLAN_JSON, plan)
    unit = plan["target"]["unit"]
    print_table(
        f"{model}: budget {plan['target']['kind']} {plan['target']['value']:g} ({unit})",
        [
            {"model": "original", f"predicted {unit}": plan["dense_cost"], "GMACs": plan["original_gmacs"]},
            {
                "model": "compressed",
                f"predicted {unit}": plan["predicted_cost"],
                "GMACs": plan["measured_gmacs"],
            },
        ],
    )
    console.print(f"plan in {out / PLAN_JSON}, compressed model in {out / MODEL_DIR}")


def register(app: typer.Typer) -> None:
    app.command("compress")(user_errors(compress_command))
