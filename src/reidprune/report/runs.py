"""What a report shows of one run directory: its configuration, metrics and models.

Three kinds of directory are understood:
- a prune job (`reidprune prune`): config.yaml, metrics.json with "unpruned" and "pruned" entries
  ({"test": {...}, "params", "attn_params", "gmacs", "blocks_gmacs"}), "plan", and model/;
- a train job (`reidprune train`): config.yaml, metrics.json with "test": {"final", "best"}, final/, best/;
- a bare model directory (model.json + weights.safetensors); test metrics from its metadata if any;
- a `reidprune compress` output folder (plan.json + model/, no metrics).
A folder with a budget plan (plan.json, verify.json: `prune.method: budget` or `reidprune compress`)
also carries it as `Run.budget` (`report/budget.py`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reidprune.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

COST_KEYS = ("params", "attn_params", "gmacs", "blocks_gmacs")


@dataclass
class Entry:
    """One row of the metrics table: a model of a run (unpruned / pruned / final / best / model).

    test: test-split metrics in percent (mAP, rank1, ... or top1, top5); None when not evaluated.
    model_dir: where the model is saved (None: not saved, e.g. an unpruned foreign checkpoint).
    latency_ms: PyTorch batch-1 latency of the deploy form (BatchNorm folded, channels_last) measured
      for the report (None when not measured).
    int8: the run folder's static INT8 note (`export.int8_summary`: mAP, rank1 in percent and
      ONNX Runtime batch-1 latency_ms of the calibrated QDQ graph) when it was measured on this
      entry's model, else None.
    """

    run: str
    variant: str
    model_dir: Path | None
    test: dict[str, float] | None
    cost: dict[str, float] = field(default_factory=dict)
    latency_ms: float | None = None
    note: str | None = None
    int8: dict[str, Any] | None = None
    deploy_ms: float | None = None  # latency on the budget searches' deployment runtime (report/budget.py)

    @property
    def label(self) -> str:
        return f"{self.run} ({self.variant})"


@dataclass
class Run:
    """A run directory, read. `main` is the entry whose model the report draws (pruned / final / model)."""

    name: str
    path: Path
    kind: str  # "prune" | "train" | "model"
    config_text: str | None
    config: Any  # ExperimentConfig | None
    metrics: dict[str, Any]
    entries: list[Entry]
    plan: dict[str, Any] | None
    main: Entry
    budget: dict[str, Any] | None = None  # plan.json (+ verify.json) of a budget search

    @property
    def method(self) -> str:
        if self.plan:
            return str(self.plan.get("method", ""))
        return "none"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None


def _numbers(values: dict[str, Any] | None) -> dict[str, float] | None:
    if not values:
        return None
    return {k: float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _config(path: Path) -> tuple[str | None, Any]:
    from reidprune.config import load_config

    file = path / "config.yaml"
    if not file.is_file():
        return None, None
    try:
        return file.read_text(), load_config(file)
    except ConfigError as err:
        # a config written by another reidprune version is still worth showing as text
        log.warning("%s: shown as text only, it does not load (%s)", file, err)
        return file.read_text(), None


def _saved_plan(model_dir: Path) -> dict[str, Any] | None:
    from reidprune.models.serialization import read_description

    return read_description(model_dir).get("plan")


def load_run(path: str | Path, name: str | None = None) -> Run:
    """Read a prune / train run directory, a model directory or a compress output folder (see the
    module docstring); the main entry carries the run's static INT8 note when there is a current one."""
    from reidprune.export.int8_summary import read_int8_note
    from reidprune.report.budget import read_budget

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory not found: {path}")
    run = _load_run(path, name or path.name)
    run.main.int8 = read_int8_note(run.path, run.main.model_dir)
    run.budget = read_budget(path)
    return run


def _load_run(path: Path, name: str) -> Run:
    from reidprune.models.serialization import is_model_dir, read_description

    text, cfg = _config(path)
    metrics_file = path / "metrics.json"
    metrics = _read_json(metrics_file) if metrics_file.is_file() else {}

    if "pruned" in metrics and "unpruned" in metrics:
        model_dir = path / "model"
        unpruned_dir = _model_dir_or_none(cfg.model.weights if cfg is not None else None)
        entries = [
            Entry(
                name,
                "unpruned",
                unpruned_dir,
                _numbers(metrics["unpruned"].get("test")),
                _cost(metrics["unpruned"]),
            ),
            Entry(
                name,
                "pruned",
                model_dir if is_model_dir(model_dir) else None,
                _numbers(metrics["pruned"].get("test")),
                _cost(metrics["pruned"]),
            ),
        ]
        plan = metrics.get("plan") or (_saved_plan(model_dir) if is_model_dir(model_dir) else None)
        return Run(name, path, "prune", text, cfg, metrics, entries, plan, entries[1])

    if isinstance(metrics.get("test"), dict) and ("final" in metrics["test"] or "best" in metrics["test"]):
        entries = []
        for variant in ("final", "best"):
            folder = path / variant
            result = metrics["test"].get(variant)
            if is_model_dir(folder) or result:
                entries.append(
                    Entry(name, variant, folder if is_model_dir(folder) else None, _numbers(result))
                )
        if not entries:
            raise CheckpointError(f"{path}: metrics.json names no final/best results and final/ is missing")
        main = entries[0]
        plan = _saved_plan(main.model_dir) if main.model_dir is not None else None
        return Run(name, path, "train", text, cfg, metrics, entries, plan, main)

    if is_model_dir(path):
        description = read_description(path)
        test = (description.get("metadata") or {}).get("test")
        entry = Entry(name, "model", path, _numbers(test))
        return Run(name, path, "model", text, cfg, metrics, [entry], description.get("plan"), entry)

    if (path / "plan.json").is_file() and is_model_dir(path / "model"):  # `reidprune compress`
        description = read_description(path / "model")
        test = (description.get("metadata") or {}).get("test")
        entry = Entry(name, "compressed", path / "model", _numbers(test))
        return Run(name, path, "compress", text, cfg, metrics, [entry], description.get("plan"), entry)

    raise CheckpointError(
        f"{path}: not a run directory (expected metrics.json from `reidprune prune` or `reidprune train`, "
        "or a model directory with model.json)"
    )


def _model_dir_or_none(weights: str | None) -> Path | None:
    from reidprune.models.serialization import is_model_dir

    return Path(weights) if weights and is_model_dir(weights) else None


def _cost(values: dict[str, Any]) -> dict[str, float]:
    return {k: float(values[k]) for k in COST_KEYS if isinstance(values.get(k), int | float)}


def fill_costs(run: Run) -> None:
    """Params and GMACs for entries whose metrics.json lacks them, counted on the saved model."""
    from reidprune.measure import count_gmacs, count_params
    from reidprune.models import load

    for entry in run.entries:
        if all(k in entry.cost for k in COST_KEYS) or entry.model_dir is None:
            continue
        model = load(entry.model_dir)
        macs = count_gmacs(model)
        entry.cost = {**count_params(model), "gmacs": macs["gmacs"], "blocks_gmacs": macs["blocks_gmacs"]}


def unpruned_model_for_timing(run: Run) -> Any:
    """The unpruned model of a prune run, for latency only: its saved directory when model.weights is
    one, else the configured registry model with random weights (latency does not depend on weight
    values; the architecture is the pruned model's before compression). None when it cannot be built."""
    from reidprune import models
    from reidprune.models.serialization import read_description

    entry = run.entries[0]
    if entry.model_dir is not None:
        return models.load(entry.model_dir)
    if run.config is None or run.main.model_dir is None:
        return None
    pruned_arch = read_description(run.main.model_dir)["arch"]
    cfg = run.config
    size = pruned_arch.get("img_size") or (
        [cfg.data.height, cfg.data.width] if cfg.data.height and cfg.data.width else None
    )
    kwargs = {
        "num_classes": int(pruned_arch.get("num_classes", 0)),
        **({"img_size": list(size)} if size else {}),
        **cfg.model.kwargs,
    }
    try:
        return models.create(cfg.model.name, **kwargs).eval()
    except (ConfigError, KeyError, TypeError, ValueError):
        return None
