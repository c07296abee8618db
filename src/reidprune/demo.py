"""`run_demo()`: the whole mission on the embedded data set, end to end, on a fresh machine.

    synthetic data -> baseline (train) -> AMG tokens / entropy heads / Prune-and-Merge (prune +
    fine-tune with distillation from the baseline) -> test mAP / rank-1 -> params, GMACs,
    batch-64 throughput and batch-1 latency side by side -> ONNX export checked in ONNX Runtime -> HTML report

Everything lands in one output folder; a second run reuses the data, the baseline and every
finished variant (and says so), so only missing pieces are computed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reidprune.config import ExperimentConfig, load_config

DEFAULT_CONFIG = Path(__file__).with_name("demo.yaml")  # packaged with reidprune
RESNET18_CONFIG = Path(__file__).with_name("demo_resnet18.yaml")


@dataclass(frozen=True)
class Variant:
    """One compressed model of the demo: a name and the overrides that make its prune job."""

    name: str
    overrides: tuple[str, ...]


# Fine-tuning of every variant distils from the baseline (soft KD, the AMG seeds' alpha / tau).
DISTILL = ("train.distill=soft", "train.distill_alpha=0.2", "train.distill_tau=1.0", "train.lr=0.0005")
VARIANTS: tuple[Variant, ...] = (
    Variant(
        "token-amg-40", ("prune.method=token-amg", "prune.rate=0.4", "prune.options={mode: kv}", *DISTILL)
    ),
    Variant("head-entropy-50", ("prune.method=head-entropy", "prune.rate=0.5", *DISTILL)),
    Variant("token-pm-40", ("prune.method=token-pm", "prune.rate=0.4", *DISTILL)),
)
# The CNN demo: 50 % of every internal conv's filters removed by each criterion, then extracted.
FILTER_VARIANTS: tuple[Variant, ...] = tuple(
    Variant(f"filter-{name}-50", (f"prune.method=filter-{name}", "prune.rate=0.5", *DISTILL))
    for name in ("hfp", "sfp", "fpgm", "bafd")
)
# --model: (packaged baseline config, variants, sub-folder of the output folder)
DEMOS: dict[str, tuple[Path, tuple[Variant, ...], str]] = {
    "vit": (DEFAULT_CONFIG, VARIANTS, ""),
    "resnet18": (RESNET18_CONFIG, FILTER_VARIANTS, "resnet18"),
}


@dataclass
class DemoResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    report: Path | None = None
    output_dir: Path = Path("demo_output")


def _say(message: str, log: Callable[[str], None] | None) -> None:
    if log is not None:
        log(message)


def _baseline(cfg: ExperimentConfig, log: Callable[[str], None] | None) -> Path:
    from reidprune.train.experiment import train_experiment

    out = Path(cfg.output_dir)
    final = out / "final"
    if (final / "model.json").is_file() and (out / "metrics.json").is_file():
        _say(f"reusing the baseline in {out} (delete it to retrain)", log)
        return out
    _say(f"training the baseline {cfg.model.name} for {cfg.train.epochs} epochs -> {out}", log)
    train_experiment(cfg)
    return out


def _variant(
    cfg_path: Path,
    base_overrides: list[str],
    baseline: Path,
    variant: Variant,
    root: Path,
    log: Callable[[str], None] | None,
) -> Path:
    from reidprune.compress.experiment import prune_experiment

    out = root / variant.name
    if (out / "metrics.json").is_file() and (out / "model" / "model.json").is_file():
        _say(f"reusing {variant.name} in {out}", log)
        return out
    cfg = load_config(
        cfg_path,
        [
            *base_overrides,
            *variant.overrides,
            f"name=demo_{variant.name}",
            f"output_dir={out}",
            f"model.weights={baseline / 'final'}",
        ],
    )
    _say(f"compressing: {variant.name} (then {cfg.prune.final_epochs} epochs of distillation) -> {out}", log)
    prune_experiment(cfg)
    return out


def run_demo(
    output_dir: str | Path = "demo_output",
    config: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    variants: tuple[Variant, ...] | None = None,
    export: bool = True,
    report: bool = True,
    log: Callable[[str], None] | None = print,
    model: str = "vit",
) -> DemoResult:
    """Run (or resume) the demo into `output_dir`; returns the summary rows (one per model).

    model: "vit" (LA-Transformer tiny; AMG tokens, entropy heads, Prune-and-Merge) or "resnet18"
    (HFP / SFP / FPGM / BAFD filters, in output_dir/resnet18); both share output_dir/data.
    config / variants: replace the packaged baseline config / the model's variants.
    """
    import torch

    from reidprune.errors import ConfigError
    from reidprune.measure import benchmark_speed
    from reidprune.models.serialization import load

    if model not in DEMOS:
        raise ConfigError(f"demo model {model!r}: expected one of {', '.join(DEMOS)}")
    default_config, default_variants, subfolder = DEMOS[model]
    variants = default_variants if variants is None else variants
    root = Path(output_dir) / subfolder
    cfg_path = Path(config) if config is not None else default_config
    base_overrides = [f"data.root={Path(output_dir) / 'data'}", *overrides]
    cfg = load_config(cfg_path, [*base_overrides, f"output_dir={root / 'baseline'}"])
    baseline = _baseline(cfg, log)
    runs = [baseline] + [_variant(cfg_path, base_overrides, baseline, v, root, log) for v in variants]

    base_metrics = json.loads((baseline / "metrics.json").read_text())
    base_model = load(baseline / "final")
    models = {"baseline": (base_model, base_metrics["test"]["final"])}
    for run, variant in zip(runs[1:], variants, strict=True):
        metrics = json.loads((run / "metrics.json").read_text())
        models[variant.name] = (load(run / "model"), metrics["pruned"]["test"])

    _say("measuring params, GMACs, batch-64 throughput and batch-1 latency", log)
    threads = torch.get_num_threads()
    result = DemoResult(output_dir=root)
    base_speed: dict[str, Any] | None = None
    for name, (model, test) in models.items():
        from reidprune.compress.experiment import model_cost

        cost = model_cost(model)
        # deploy form: BatchNorm folded into the convs (what ONNX Runtime runs; ViTs are unchanged)
        speed = benchmark_speed(model, batch_size=64, min_time=1.0, threads=threads, deploy=True)
        base_speed = base_speed or speed
        result.rows.append(
            {
                "model": name,
                "params (M)": cost["params"] / 1e6,
                "GMACs": cost["gmacs"],
                "latency b1 (ms)": speed["latency_ms_b1"],
                # batch 1 of a model this small is mostly per-op overhead; batch 64 shows the compute saved
                "speed-up b1": base_speed["latency_ms_b1"] / speed["latency_ms_b1"],
                "speed-up b64": speed["throughput_ips"] / base_speed["throughput_ips"],
                "mAP": test["mAP"],
                "rank-1": test["rank1"],
            }
        )
    if export:
        from reidprune.export import export_onnx

        for name, (model, _) in models.items():
            target = root / "onnx" / f"{name}.onnx"
            if target.is_file():
                _say(f"reusing {target}", log)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            export_onnx(model, target)
            _say(f"exported {name} -> {target} (checked against ONNX Runtime)", log)
    if report:
        from reidprune.report import build_report

        result.report = build_report(runs, root / "report.html")
        _say(f"report: {result.report}", log)
    (root / "summary.json").write_text(json.dumps(result.rows, indent=2))
    return result
