"""Accuracy of several variants of one model (PyTorch, fp32 ONNX, INT8 ONNX) on the same test split.

Every variant goes through `reidprune.evaluate` (the ONNX ones through `OnnxModel`), so the
numbers differ only by what the variants compute.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from torch import nn

from reidprune.config import ExperimentConfig, load_config
from reidprune.errors import DataError

EVAL_SPLITS = ("query", "gallery", "val_query", "val_gallery", "val")


def data_config(
    data: str | Path, img_size: list[int] | tuple[int, int], data_format: str | None = None
) -> ExperimentConfig:
    """An ExperimentConfig whose data section reads `data`: an experiment YAML (its data and eval
    sections) or a data set folder (format detected unless `data_format` is given). The input size
    is the model's (`img_size` [H, W]), whatever the YAML says."""
    path = Path(data)
    if path.is_file():
        cfg = load_config(path)
    elif path.is_dir():
        cfg = load_config()
        cfg.data.root = str(path)
        cfg.data.format = "auto"
    else:
        raise DataError(
            f"--data {data}: expected a data set folder or an experiment YAML file, found neither"
        )
    if data_format is not None:
        cfg.data.format = data_format
    cfg.data.height, cfg.data.width = int(img_size[0]), int(img_size[1])
    return cfg


def eval_loaders(cfg: ExperimentConfig) -> tuple[Any, Any]:
    """(splits, loaders) with loaders for the evaluation splits only (no training cache)."""
    from reidprune.data import build_dataset, build_loaders

    splits = build_dataset(cfg.data)
    only_eval = dataclasses.replace(splits, train=[], val_query=[], val_gallery=[])
    return splits, build_loaders(cfg.data, only_eval)


def evaluate_variants(variants: dict[str, nn.Module], cfg: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """{variant name: metrics in percent} on the test split of `cfg.data` (query / gallery for re-ID,
    val/ for classification sets), with `cfg.eval`'s protocol, on the CPU."""
    from reidprune.evaluate import evaluate_classification, evaluate_reid

    _, loaders = eval_loaders(cfg)
    results: dict[str, dict[str, Any]] = {}
    for name, model in variants.items():
        if loaders.query is not None and loaders.gallery is not None:
            metrics = evaluate_reid(model, loaders.query, loaders.gallery, cfg.eval, device="cpu")
        elif loaders.val is not None:
            metrics = evaluate_classification(model, loaders.val, device="cpu")
        else:
            raise DataError(f"data.root={cfg.data.root}: no query/gallery or val/ split to evaluate on")
        results[name] = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    return results
