"""`build_report(run_dirs, out)`: one self-contained HTML page comparing runs.

The page holds the configuration of each run, the metrics table (unpruned vs pruned), accuracy-
versus-GMACs and accuracy-versus-latency plots, ranked retrieval lists and per-block kept-token
maps; with budget searches among the runs, their target vs predicted vs measured speed-up, the
frontier (accuracy vs measured latency, searched vs uniform plans) and each searched plan's
per-block allocation (`report/budget.py`). Every image is embedded as a base64 PNG data URI and the styles are inline: the page opens
offline, with no network access and no scripts.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reidprune.atomic import write_text
from reidprune.errors import CheckpointError, ConfigError, DataError
from reidprune.report.runs import Entry, Run, fill_costs, load_run, unpruned_model_for_timing

log = logging.getLogger(__name__)

TEMPLATE = "report.html.j2"
METRIC_COLUMNS = (
    ("mAP", "mAP"),
    ("rank1", "rank-1"),
    ("rank5", "rank-5"),
    ("rank10", "rank-10"),
    ("mINP", "mINP"),
    ("top1", "top-1"),
    ("top5", "top-5"),
)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass
class RunSection:
    """What the page shows for one run beyond the table: its config, plan, retrieval and token maps."""

    run: Run
    plan_summary: list[tuple[str, str]] = field(default_factory=list)
    plan_json: str | None = None
    retrieval_png: str | None = None
    retrieval_note: str | None = None
    tokens_png: str | None = None
    tokens_note: str | None = None
    allocation_png: str | None = None  # per-block kept tokens / heads or widths of a searched plan


def build_report(
    run_dirs: list[str | Path],
    out: str | Path = "report.html",
    *,
    data: str | Path | None = None,
    data_format: str | None = None,
    latency: bool = True,
    retrieval: bool = True,
    num_queries: int = 4,
    top: int = 10,
    token_images: int = 2,
    min_time: float = 1.0,
    threads: int | None = None,
    title: str = "reidprune report",
) -> Path:
    """Write the report for `run_dirs` to `out` and return its path.

    data: a data set folder or experiment YAML used instead of each run's own data section for the
      retrieval lists and token-map images (e.g. when the runs were made on another machine).
    latency: measure the PyTorch batch-1 latency of every model in its deploy form (BatchNorm folded,
      channels_last: `prepare_for_inference`, as `reidprune measure` and `bench` time it), interleaved
      in this process (`min_time` seconds in all, `threads` CPU threads; default torch's setting),
      for the accuracy-versus-latency plot.
    retrieval: draw `num_queries` ranked lists of `top` gallery images per run (needs the test split).
    token_images: sample images the kept-token maps are drawn over.
    """
    if not run_dirs:
        raise ConfigError("no run directories given: pass at least one RUN_DIR")
    names = _names([Path(p) for p in run_dirs])
    runs = [load_run(p, name) for p, name in zip(run_dirs, names, strict=True)]
    for run in runs:
        fill_costs(run)
    latency_note = (
        _measure_latency(runs, min_time, threads) if latency else "latency not measured (--no-latency)"
    )
    sections = [_section(run, data, data_format, retrieval, num_queries, top, token_images) for run in runs]

    from reidprune.measure.units import macs_unit
    from reidprune.report.plots import accuracy_vs_cost

    rows = table_rows(runs)
    macs, macs_factor = macs_unit(v for row in rows for v in (row["gmacs"], row["blocks_gmacs"]))
    gmacs_png = accuracy_vs_cost(runs, "gmacs", f"{macs} per image", scale=macs_factor)
    latency_png = (
        accuracy_vs_cost(runs, "latency_ms", "PyTorch batch-1 latency, deploy form (ms)") if latency else None
    )
    budget = _budget_part(runs, latency, min_time)
    html = _render(
        title=title,
        runs=runs,
        sections=sections,
        columns=_columns(runs),
        rows=rows,
        macs=macs,
        macs_factor=macs_factor,
        gmacs_png=data_uri(gmacs_png) if gmacs_png else None,
        latency_png=data_uri(latency_png) if latency_png else None,
        latency_note=latency_note,
        int8=any(row["int8_map"] is not None for row in rows),
        **budget,
        generated=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        versions=_versions(),
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, html)
    return out


def _names(paths: list[Path]) -> list[str]:
    names = [p.resolve().name for p in paths]
    return [
        n if names.count(n) == 1 else f"{n} ({p.resolve().parent.name})"
        for n, p in zip(names, paths, strict=True)
    ]


def model_key(entry: Entry, run: Run) -> Any:
    """What identifies the model of `entry` across runs: its saved directory, or for the unpruned model
    of a prune run whose weights are not a model directory, the configured weights file; None when
    nothing does (the entry then stands alone)."""
    if entry.model_dir is not None:
        return ("dir", str(entry.model_dir.resolve()))
    if (
        run.kind == "prune"
        and entry.variant == "unpruned"
        and run.config is not None
        and run.config.model.weights
    ):
        return ("weights", str(Path(run.config.model.weights).resolve()), run.config.model.name)
    return None


def table_rows(runs: list[Run]) -> list[dict[str, Any]]:
    """One row per distinct (model, test metrics): the baseline that several prune runs start from
    (and the train run that made it) is shown once, its row naming the runs it is the unpruned model of."""
    rows: list[dict[str, Any]] = []
    seen: dict[Any, dict[str, Any]] = {}
    for run in runs:
        for entry in run.entries:
            key = model_key(entry, run)
            key = (key, tuple(sorted((entry.test or {}).items()))) if key is not None else None
            if key is not None and key in seen:
                seen[key]["same_as"].append(f"{run.name} ({entry.variant})")
                continue
            row = _row(entry, run)
            rows.append(row)
            if key is not None:
                seen[key] = row
    return rows


def _measure_latency(runs: list[Run], min_time: float, threads: int | None) -> str:
    """Batch-1 PyTorch latency of every entry with a buildable model, in its deploy form (BatchNorm
    folded, channels_last), interleaved; a model shared by several entries is timed once. Returns the
    page's note."""
    from reidprune.measure import deploy
    from reidprune.measure.timing import interleaved_times, model_call, summarize_ms, torch_threads

    models = _entry_models(runs)
    if not models:
        return "no saved model to time"
    # time the form that is deployed, as `reidprune measure` and `bench` do
    fns = {
        key: model_call(deploy.prepare_for_inference(model), 1, channels_last=True)
        for key, (_, model) in models.items()
    }
    with torch_threads(threads or None) as used:
        times = interleaved_times(fns, min_time=min_time)
    for key, (entries, _) in models.items():
        for entry in entries:
            entry.latency_ms = summarize_ms(times[key])["median_ms"]
    return (
        f"PyTorch, deploy form (BatchNorm folded, channels_last), batch 1, CPU, {used} threads, float32: median of "
        f"{len(next(iter(times.values())))} interleaved rounds, measured while this report was built"
    )


def _entry_models(runs: list[Run]) -> dict[Any, tuple[list[Entry], Any]]:
    """{model key: (entries showing that model, the model in eval mode)} for every buildable model."""
    from reidprune.models import load

    models: dict[Any, tuple[list[Entry], Any]] = {}
    for run in runs:
        for entry in run.entries:
            key = model_key(entry, run) or id(entry)
            if key in models:
                models[key][0].append(entry)
                continue
            if entry.model_dir is not None:
                model = load(entry.model_dir)
            elif run.kind == "prune" and entry.variant == "unpruned":
                model = unpruned_model_for_timing(run)
                entry.note = "latency of the configured architecture (weights are not saved in the run)"
            else:
                model = None
            if model is not None:
                models[key] = ([entry], model.eval())
    return models


def _budget_part(runs: list[Run], latency: bool, min_time: float) -> dict[str, Any]:
    """The page's "Compressed to a budget" part: one row per searched run and the frontier, its
    latency measured on the searches' deployment runtime when they share one (`report/budget.py`)."""
    from reidprune.report.budget import budget_rows, frontier_figure, measure_deployment, shared_deployment
    from reidprune.report.plots import accuracy_metrics

    rows = budget_rows(runs)
    if not rows:
        return {"budget_rows": [], "frontier_png": None, "frontier_note": ""}
    deployment = shared_deployment(runs) if latency else None
    if deployment is not None:
        note = measure_deployment(_entry_models(runs), deployment, min_time)
        xlabel = f"{deployment['runtime']} batch-{deployment.get('batch', 1)} latency (ms)"
    else:
        note = "PyTorch batch-1 latency of the table (the searched runs name no single latency deployment)"
        xlabel = "PyTorch batch-1 latency, deploy form (ms)"
    metrics = accuracy_metrics(runs)
    png = frontier_figure(runs, metrics[0], xlabel) if metrics and latency else None
    if not latency:
        note = "latency not measured (--no-latency): no frontier"
    return {"budget_rows": rows, "frontier_png": data_uri(png) if png else None, "frontier_note": note}


def _section(
    run: Run,
    data: str | Path | None,
    data_format: str | None,
    retrieval: bool,
    num_queries: int,
    top: int,
    token_images: int,
) -> RunSection:
    section = RunSection(run)
    if run.budget is not None:
        from reidprune.report.budget import allocation_figure

        png = allocation_figure(run.budget)
        section.allocation_png = data_uri(png) if png else None
    if run.plan:
        from reidprune.models.plan import flat_plan

        plan = flat_plan(run.plan)  # older model.json files nest the history in every entry
        section.plan_summary = _plan_summary(plan)
        section.plan_json = json.dumps(plan, indent=1, default=str)
    if run.main.model_dir is None:
        section.retrieval_note = section.tokens_note = "the run's model is not saved; nothing to draw"
        return section
    from reidprune.models import load

    model = load(run.main.model_dir)
    split_data, why = _test_data(run, model, data, data_format) if (retrieval or token_images) else (None, "")
    if retrieval and split_data is not None:
        from reidprune.report.retrieval import ranked_lists, retrieval_figure

        splits, loaders, cfg = split_data
        if loaders.query is None or loaders.gallery is None:
            section.retrieval_note = f"{cfg.data.root} has no query / gallery split (classification set)"
        else:
            lists = ranked_lists(model, splits, loaders, cfg.eval, num_queries, top)
            size = tuple(model.arch.img_size)
            section.retrieval_png = data_uri(retrieval_figure(lists, size))  # type: ignore[arg-type]
            section.retrieval_note = (
                f"{len(lists)} queries of {cfg.data.root} ({cfg.data.format}), top {top} of "
                f"{len(splits.gallery)} gallery images, {cfg.eval.metric} distance"
                + (", flip-averaged" if cfg.eval.flip else "")
                + "; same identity and camera left out (the protocol's junk)"
            )
    elif not retrieval:
        section.retrieval_note = "retrieval lists not drawn (--no-retrieval)"
    else:
        section.retrieval_note = why
    section.tokens_png, section.tokens_note = _token_maps(model, split_data, token_images, why)
    return section


def _test_data(run: Run, model: Any, data: str | Path | None, data_format: str | None) -> tuple[Any, str]:
    """((splits, loaders, cfg) of the test split, "") or (None, why not)."""
    from reidprune.export.accuracy import data_config, eval_loaders

    size = list(model.arch.img_size)
    if data is not None:
        cfg = data_config(data, size, data_format)
        if run.config is not None and Path(data).is_dir():
            cfg.eval = run.config.eval  # another copy of the data, ranked the way the run evaluated
    elif run.config is not None:
        cfg = run.config
        cfg.data.height, cfg.data.width = int(size[0]), int(size[1])
        if data_format is not None:
            cfg.data.format = data_format
        if not Path(cfg.data.root).is_dir():
            return None, f"the run's data set {cfg.data.root} is not here; pass --data ROOT"
    else:
        return None, "no config.yaml in the run and no --data: the test split is unknown"
    cfg.data.num_workers = 0
    cfg.data.cache_images = False
    try:
        splits, loaders = eval_loaders(cfg)
    except (DataError, ConfigError, CheckpointError) as err:
        return None, f"cannot read the test split: {err}"
    return (splits, loaders, cfg), ""


def _token_maps(model: Any, split_data: Any, count: int, why: str) -> tuple[str | None, str]:
    from reidprune.report.retrieval import pick_queries, thumbnail
    from reidprune.report.tokens import token_map_figure, token_states

    states, description = token_states(model.arch)
    if states is None or count < 1:
        return None, description
    height, width = (int(s) for s in model.arch.img_size)
    images: list[tuple[str, np.ndarray]] = []
    if split_data is not None:
        splits = split_data[0]
        records = splits.query or splits.val or splits.gallery
        chosen = [records[i] for i in pick_queries(records, count)]
        images = [(f"id {r.pid}", thumbnail(r.path, (height, width))) for r in chosen]
    if not images:
        # no data here: the masks are still worth seeing, over a neutral background
        images = [("(no image)", np.full((height, width, 3), 150, dtype=np.uint8))]
        description += f" (drawn without sample images: {why})"
    return data_uri(token_map_figure(states, images)), description


def _plan_summary(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """Readable (key, value) lines of a compression plan and its earlier steps, without the bulky scores."""
    lines = []
    for step in [*plan.get("previous", []), plan]:
        details = step.get("details") or {}
        shown = {
            k: v for k, v in details.items() if k not in ("scores", "layers", "calibration_maps", "centres")
        }
        text = ", ".join(f"{k}={_short(v)}" for k, v in shown.items())
        lines.append((f"{step.get('method')} rate={step.get('rate')}", text))
    return lines


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _columns(runs: list[Run]) -> list[tuple[str, str]]:
    present = {k for run in runs for e in run.entries for k in (e.test or {})}
    return [(key, label) for key, label in METRIC_COLUMNS if key in present]


def _row(entry: Entry, run: Run) -> dict[str, Any]:
    cost = entry.cost
    return {
        "run": run.name,
        "variant": entry.variant,
        "method": run.method if entry is run.main else "-",
        "params": cost.get("params"),
        "attn_params": cost.get("attn_params"),
        "gmacs": cost.get("gmacs"),
        "blocks_gmacs": cost.get("blocks_gmacs"),
        "test": entry.test or {},
        "latency_ms": entry.latency_ms,
        "int8_map": (entry.int8 or {}).get("mAP"),
        "int8_ms": (entry.int8 or {}).get("latency_ms"),
        "note": entry.note,
        "same_as": [],  # other runs' entries with this model and these results (see `table_rows`)
    }


def _versions() -> dict[str, str]:
    import torch

    import reidprune

    return {"reidprune": getattr(reidprune, "__version__", "?"), "torch": torch.__version__}


def _render(**context: Any) -> str:
    import jinja2

    from reidprune.measure.units import significant

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["millions"] = lambda v: "-" if v is None else f"{v / 1e6:.2f}"
    env.filters["num"] = lambda v, digits=2: "-" if v is None else f"{v:.{digits}f}"
    env.filters["macs"] = lambda v, factor=1.0: "-" if v is None else significant(v * factor)
    return env.get_template(TEMPLATE).render(**context)
