"""`run_demo()`: the whole mission on the embedded data set, end to end, on a fresh machine.

    synthetic data -> baseline (train) -> AMG tokens / entropy heads / Prune-and-Merge / a joint
    token + head plan searched for 1.5x at batch 1 in ONNX Runtime (prune + fine-tune with
    distillation from the baseline) -> test mAP / rank-1 -> ONNX export checked in
    ONNX Runtime -> static INT8 (QDQ, calibrated on training images) of the baseline and of the
    variant with the best mAP, evaluated on the test split -> params, GMACs, batch-64 throughput
    (PyTorch) and batch-1 latency (ONNX Runtime, fp32 and INT8) side by side -> HTML report

Everything lands in one output folder (locked while a demo runs in it); a second run reuses the
data, the baseline, every finished variant and every exported graph made with the same settings
from the same models (and says so), and redoes the rest, saying why (settings changed, input model
changed, a piece missing). Settings are compared through each run's config.yaml, models and
graphs through their content (sha256), never through file ages.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reidprune.atomic import folder_lock, write_json
from reidprune.config import ExperimentConfig, load_config

DEFAULT_CONFIG = Path(__file__).with_name("demo.yaml")  # packaged with reidprune
RESNET18_CONFIG = Path(__file__).with_name("demo_resnet18.yaml")
# how the demo exports its graphs (export_onnx's arguments; stored in each graph's export.json)
EXPORT_SETTINGS: dict[str, Any] = {"opset": 18, "batch": None, "exporter": "auto"}
STAMP = "demo.json"  # in each run folder: digests of the models it was made from


BUDGET_VARIANT = "budget-x1.2-b1-ort"


@dataclass(frozen=True)
class Variant:
    """One compressed model of the demo: a name and the overrides that make its prune job
    ("{output}" in an override stands for the demo's output folder)."""

    name: str
    overrides: tuple[str, ...]


# Fine-tuning of every variant distils from the baseline (soft KD, the AMG seeds' alpha / tau).
DISTILL = ("train.distill=soft", "train.distill_alpha=0.2", "train.distill_tau=1.0", "train.lr=0.0005")
VARIANTS: tuple[Variant, ...] = (
    Variant(
        "token-amg-40", ("prune.method=token-amg", "prune.rate=0.4", "prune.options={mode: kv}", *DISTILL)
    ),
    Variant("head-entropy-50", ("prune.method=head-entropy", "prune.rate=0.5", *DISTILL)),
    # merge only (no token skips a block): on this 4-block model a token that skips a whole block
    # costs more accuracy than merging it (benchmarks/pm_accuracy.py, 10 distillation epochs: mAP
    # 62.3 vs 59.9 with the paper's prune_rate 0.1; unpruned 65.3)
    Variant(
        "token-pm-40",
        ("prune.method=token-pm", "prune.rate=0.4", "prune.options={prune_rate: 0.0}", *DISTILL),
    ),
    # compressed to a budget: 1.2x faster at batch 1 in ONNX Runtime (this machine, torch's threads),
    # tokens and heads searched jointly per block (docs/budget_search.md). This model is ~1.4 ms at
    # batch 1, half of it fixed per-op cost: 1.5x is about its fastest plan (2 tokens and 1 head
    # per block, mAP ~5), 1.2x keeps the baseline's mAP within a point (B12). Coarse latency tables
    # timed briefly and, with the measured sensitivity curves, cached in the output folder (a rerun
    # reuses them); no verification step: the demo's own side-by-side timing measures every model
    Variant(
        BUDGET_VARIANT,
        (
            "prune.method=budget",
            "prune.options={target_speedup: 1.2, runtime: onnxruntime, batch: 1, verify: false, "
            "sensitivity_cache: '{output}/sensitivity', latency: "
            "{grid: coarse, min_time: 0.02, calib_time: 0.5, cache: '{output}/latency'}}",
            *DISTILL,
        ),
    ),
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
    rows: list[dict[str, Any]] = field(default_factory=list)  # baseline first, then the variants
    report: Path | None = None
    output_dir: Path = Path("demo_output")

    def compared(self, columns: Sequence[str] = ("model", "GMACs", "mAP", "rank-1")) -> list[dict[str, Any]]:
        """The rows cut to `columns`, each with its "mAP change" against the baseline (first row)."""
        base_map = self.rows[0]["mAP"]
        return [{**{c: row[c] for c in columns}, "mAP change": row["mAP"] - base_map} for row in self.rows]


def _say(message: str, log: Callable[[str], None] | None) -> None:
    if log is not None:
        log(message)


def _changes(
    out: Path, cfg: ExperimentConfig, outputs: tuple[str, ...], inputs: dict[str, str], ignore: frozenset[str]
) -> str | None:
    """Why the run in `out` cannot be reused for `cfg`: an output missing, a setting of its
    config.yaml that differs (but `ignore`), or an input model that changed since it was made;
    "" when it can be reused, None when there is no run to reuse."""
    from reidprune.run_folder import CONFIG_NAME, config_differences, read_saved_config

    missing = [name for name in (CONFIG_NAME, *outputs) if not (out / name).is_file()]
    if missing:
        return f"{missing[0]} is missing" if (out / CONFIG_NAME).is_file() else None
    changed = config_differences(read_saved_config(out / CONFIG_NAME), cfg, ignore)
    if changed:
        return "settings changed (" + "; ".join(changed) + ")"
    try:
        made_from = json.loads((out / STAMP).read_text()).get("inputs")
    except (OSError, ValueError):
        made_from = None
    if made_from != inputs:
        return "its input model changed since it was made" if made_from else f"{STAMP} is missing"
    return ""


def _reuse_or_redo(
    what: str,
    out: Path,
    cfg: ExperimentConfig,
    outputs: tuple[str, ...],
    inputs: dict[str, str],
    log: Any,
    ignore: frozenset[str] = frozenset({"train.progress"}),
) -> bool:
    """True (and says so) when `out` holds this very run; else says why it is redone."""
    why = _changes(out, cfg, outputs, inputs, ignore)
    if why == "":
        _say(f"reusing {what} in {out} (delete it to redo)", log)
        return True
    if why is not None:
        _say(f"redoing {what} in {out}: {why}", log)
    return False


def _baseline(cfg: ExperimentConfig, log: Callable[[str], None] | None) -> Path:
    from reidprune.jobs.train import train_experiment

    out = Path(cfg.output_dir)
    # the prune section is the variants' business: it does not change the baseline
    ignore = frozenset({"train.progress", "prune."})
    if _reuse_or_redo("the baseline", out, cfg, ("final/model.json", "metrics.json"), {}, log, ignore):
        return out
    _say(f"training the baseline {cfg.model.name} for {cfg.train.epochs} epochs -> {out}", log)
    train_experiment(cfg, overwrite=True)  # the demo owns its folders: a stale or broken run goes
    write_json(out / STAMP, {"inputs": {}})
    return out


def _variant(
    cfg_path: Path,
    base_overrides: list[str],
    baseline: Path,
    variant: Variant,
    root: Path,
    log: Callable[[str], None] | None,
) -> Path:
    from reidprune.export.onnx import model_dir_sha256
    from reidprune.jobs.prune import prune_experiment

    out = root / variant.name
    cfg = load_config(
        cfg_path,
        [
            *base_overrides,
            *(o.replace("{output}", str(root)) for o in variant.overrides),
            f"name=demo_{variant.name}",
            f"output_dir={out}",
            f"model.weights={baseline / 'final'}",
        ],
    )
    inputs = {"model.weights": model_dir_sha256(baseline / "final")}
    if _reuse_or_redo(variant.name, out, cfg, ("model/model.json", "metrics.json"), inputs, log):
        return out
    _say(f"compressing: {variant.name} (then {cfg.prune.final_epochs} epochs of distillation) -> {out}", log)
    prune_experiment(cfg, overwrite=True)
    write_json(out / STAMP, {"inputs": inputs})
    return out


def _export_graph(model: Any, target: Path, model_dir: Path) -> None:
    """Export and check `model` (saved in `model_dir`) to `target`, with `target`'s export.json naming
    the model files' digest and the export settings (what `_graph_is_current` compares)."""
    from reidprune.export import export_onnx
    from reidprune.export.onnx import model_dir_sha256

    export_onnx(
        model,
        target,
        **EXPORT_SETTINGS,
        json_path=target.with_name(f"{target.stem}.export.json"),
        extra={
            "model_dir": str(model_dir),
            "model_sha256": model_dir_sha256(model_dir),
            "settings": EXPORT_SETTINGS,
        },
    )


def _graph_is_current(graph: Path, model_dir: Path) -> bool:
    """True when `graph` is the complete, checked export of the model now in `model_dir` with the
    demo's export settings: its export.json (written only after the check passed) names the graph's own
    hash, the model files' digest and the settings. File ages say nothing about a truncated graph."""
    from reidprune.export.onnx import file_sha256, model_dir_sha256

    report = graph.with_name(f"{graph.stem}.export.json")
    if not (graph.is_file() and report.is_file()):
        return False
    try:
        info = json.loads(report.read_text())
    except ValueError:
        return False
    return (
        info.get("settings") == EXPORT_SETTINGS
        and info.get("sha256") == file_sha256(graph)
        and info.get("model_sha256") == model_dir_sha256(model_dir)
    )


def _measure_speed(
    models: dict[str, tuple[Any, Any]],
    onnx_dir: Path | None,
    min_time: float,
    int8: dict[str, Path] | None = None,
) -> dict[str, dict[str, float]]:
    """Median seconds per batch-64 PyTorch forward (deploy form: BatchNorm folded, channels_last)
    and per batch-1 forward (ONNX Runtime on the exported graphs when `onnx_dir` is given, else
    PyTorch; "int8": ONNX Runtime on the static INT8 graphs of `int8`, {name: graph}), every model
    timed in interleaved rounds so that machine load hits them alike."""
    import torch

    from reidprune.measure import prepare_for_inference
    from reidprune.measure.timing import interleaved_times, model_call

    threads = torch.get_num_threads()
    fns = {}
    for name, (model, _) in models.items():
        deployed = prepare_for_inference(model)
        fns[(name, "b64")] = model_call(deployed, 64, channels_last=True)
        if onnx_dir is not None:
            from reidprune.export.runtime import OnnxModel

            # no busy-waiting pool threads: they would take the cores from the next timed call
            session = OnnxModel(onnx_dir / f"{name}.onnx", threads=threads, spinning=False)
            fns[(name, "b1")] = model_call(session, 1)
        else:
            fns[(name, "b1")] = model_call(deployed, 1, channels_last=True)
    for name, graph in (int8 or {}).items():
        from reidprune.export.runtime import OnnxModel

        fns[(name, "int8")] = model_call(OnnxModel(graph, threads=threads, spinning=False), 1)
    samples = interleaved_times(fns, min_time=min_time)
    times: dict[str, dict[str, float]] = {name: {} for name in models}
    for (name, kind), values in samples.items():
        times[name][kind] = statistics.median(values)
    return times


def _target_speedup(run: Path) -> float | None:
    """The speed-up a budget run was searched for (its plan.json), None for the other runs."""
    plan = run / "plan.json"
    if not plan.is_file():
        return None
    target = json.loads(plan.read_text()).get("target", {})
    return float(target["value"]) if target.get("kind") == "speedup" else None


def _static_int8(
    cfg: ExperimentConfig,
    models: dict[str, tuple[Any, Any]],
    onnx_dir: Path,
    log: Callable[[str], None] | None,
) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Static INT8 graphs of the baseline and of the variant with the best test mAP, calibrated on
    training images, and their test metrics: {name: (graph, {"mAP", "rank1", "calibration_images"})}."""
    from reidprune.export.accuracy import evaluate_variants
    from reidprune.export.int8_summary import static_int8_graph
    from reidprune.export.runtime import OnnxModel

    variants = [name for name in models if name != "baseline"]
    chosen = ["baseline"]
    if variants:
        chosen.append(max(variants, key=lambda name: models[name][1]["mAP"]))
    out: dict[str, tuple[Path, dict[str, Any]]] = {}
    for name in chosen:
        graph, info = static_int8_graph(onnx_dir / f"{name}.onnx", cfg)
        _say(
            f"static INT8 of {name}: {'reused' if info['reused'] else 'calibrated and quantised'} -> {graph}",
            log,
        )
        metrics = evaluate_variants({name: OnnxModel(graph)}, cfg)[name]
        figures = {"mAP": metrics["mAP"], "rank1": metrics["rank1"]}
        out[name] = (graph, {**figures, "calibration_images": info.get("calibration_images")})
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
    timing_seconds: float = 4.0,
) -> DemoResult:
    """Run (or resume) the demo into `output_dir`; returns the summary rows (one per model).

    model: "vit" (LA-Transformer tiny; AMG tokens, entropy heads, Prune-and-Merge) or "resnet18"
    (HFP / SFP / FPGM / BAFD filters, in output_dir/resnet18); both share output_dir/data.
    config / variants: replace the packaged baseline config / the model's variants.
    timing_seconds: about how long the side-by-side speed measurement runs in all.
    """
    from reidprune.errors import ConfigError

    if model not in DEMOS:
        raise ConfigError(f"demo model {model!r}: expected one of {', '.join(DEMOS)}")
    default_config, default_variants, subfolder = DEMOS[model]
    variants = default_variants if variants is None else variants
    root = Path(output_dir) / subfolder
    cfg_path = Path(config) if config is not None else default_config
    base_overrides = [f"data.root={Path(output_dir) / 'data'}", *overrides]
    cfg = load_config(cfg_path, [*base_overrides, f"output_dir={root / 'baseline'}"])
    with folder_lock(root):  # one demo per folder at a time
        return _run(cfg, cfg_path, base_overrides, root, variants, export, report, log, timing_seconds)


def _run(
    cfg: ExperimentConfig,
    cfg_path: Path,
    base_overrides: list[str],
    root: Path,
    variants: tuple[Variant, ...],
    export: bool,
    report: bool,
    log: Callable[[str], None] | None,
    timing_seconds: float,
) -> DemoResult:
    from reidprune.jobs.prune import model_cost
    from reidprune.models.loading import load_model

    baseline = _baseline(cfg, log)
    runs = [baseline] + [_variant(cfg_path, base_overrides, baseline, v, root, log) for v in variants]

    base_metrics = json.loads((baseline / "metrics.json").read_text())
    base_model = load_model(baseline / "final")
    models = {"baseline": (base_model, base_metrics["test"]["final"])}
    model_dirs = {"baseline": baseline / "final"}
    for run, variant in zip(runs[1:], variants, strict=True):
        metrics = json.loads((run / "metrics.json").read_text())
        models[variant.name] = (load_model(run / "model"), metrics["pruned"]["test"])
        model_dirs[variant.name] = run / "model"

    result = DemoResult(output_dir=root)
    if export:
        for name, (model, _) in models.items():
            target = root / "onnx" / f"{name}.onnx"
            if _graph_is_current(target, model_dirs[name]):
                _say(f"reusing {target}", log)
                continue
            _export_graph(model, target, model_dirs[name])
            _say(f"exported {name} -> {target} (checked against ONNX Runtime)", log)
    int8 = _static_int8(cfg, models, root / "onnx", log) if export else {}
    runtime = "ORT" if export else "torch"
    _say(f"timing side by side: batch-64 throughput (PyTorch), batch-1 latency ({runtime})", log)
    graphs = {name: path for name, (path, _) in int8.items()}
    times = _measure_speed(models, root / "onnx" if export else None, timing_seconds, graphs)
    base = times["baseline"]
    run_dirs = dict(zip(models, runs, strict=True))
    for name, (model, test) in models.items():
        cost = model_cost(model)
        row = {
            "model": name,
            "params (M)": cost["params"] / 1e6,
            "GMACs": cost["gmacs"],
            "mAP": test["mAP"],
            "rank-1": test["rank1"],
            "x b64": base["b64"] / times[name]["b64"],
            f"b1 {runtime} (ms)": times[name]["b1"] * 1e3,
            "x b1": base["b1"] / times[name]["b1"],
            "target x b1": _target_speedup(run_dirs[name]),
        }
        if export:
            quantised = int8[name][1] if name in int8 else None
            row["INT8 b1 (ms)"] = times[name]["int8"] * 1e3 if quantised else None
            row["INT8 mAP"] = quantised["mAP"] if quantised else None
            if quantised:
                from reidprune.export.int8_summary import write_int8_note

                figures = {
                    **quantised,
                    "latency_ms": row["INT8 b1 (ms)"],
                    "fp32_latency_ms": row["b1 ORT (ms)"],
                }
                write_int8_note(run_dirs[name], model_dirs[name], figures)
        result.rows.append(row)
    if report:
        from reidprune.report import build_report

        result.report = build_report(runs, root / "report.html")
        _say(f"report: {result.report}", log)
    write_json(root / "summary.json", result.rows)
    return result
