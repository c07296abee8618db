"""The output folder of a train or prune job: one run per folder, one writer at a time.

A folder that already holds a run (its config.yaml, log, checkpoints or models) is refused unless
the job resumes it with the same config (`--resume`) or replaces it (`--overwrite`, which first
removes the old run's outputs so that nothing of it mixes with the new one). Files that no run
writes (notes, a README, other folders) are left alone and do not count as a run.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from reidprune.config import ExperimentConfig, to_yaml
from reidprune.errors import ConfigError

CONFIG_NAME = "config.yaml"
# what train (engine + experiment) and prune (schedule + experiment) write into output_dir
RUN_OUTPUTS = (
    CONFIG_NAME,
    "metrics.json",
    "train_log.jsonl",
    "checkpoints",
    "best",
    "best.safetensors",
    "final",
    "model",
    "masked",
    "soft",
    "prune_state",
    "plan.json",  # the budget method (jobs/budget.py)
    "verify.json",
    "model.onnx",
)
ROUND = re.compile(r"round\d+")
# settings that do not change what a resumed run computes (the engine checks the train ones again
# against the checkpoint)
RESUME_MAY_DIFFER = frozenset(
    {
        "name",
        "output_dir",
        "device",
        "data.num_workers",
        "train.log_every",
        "train.progress",
        "train.checkpoint_every",
        "train.checkpoint_every_steps",
        "train.save_every",
        "train.eval_every",
        "train.teacher",
    }
)


def run_outputs(directory: str | Path) -> list[str]:
    """The names in `directory` that a run wrote (sorted); empty for a missing or unrelated folder."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name in RUN_OUTPUTS or ROUND.fullmatch(p.name))


def _flat(values: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(values, dict):
        return {prefix: values}
    out: dict[str, Any] = {}
    for key, value in values.items():
        out.update(_flat(value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"))
    return out


def config_differences(
    saved: dict[str, Any], cfg: ExperimentConfig, ignore: frozenset[str] = frozenset()
) -> list[str]:
    """`key: saved -> now` for every setting of `cfg` that differs from the `saved` resolved config.
    ignore: dotted keys, or prefixes ending in "." (e.g. "prune.") for whole sections."""
    now = _flat(OmegaConf.to_container(OmegaConf.create(to_yaml(cfg))))
    before = _flat(saved)
    prefixes = tuple(key for key in ignore if key.endswith("."))
    return [
        f"{key}: {before.get(key)!r} -> {now.get(key)!r}"
        for key in sorted(set(now) | set(before))
        if key not in ignore and not key.startswith(prefixes) and before.get(key) != now.get(key)
    ]


def read_saved_config(path: Path) -> dict[str, Any]:
    try:
        saved = OmegaConf.to_container(OmegaConf.load(path))
    except Exception as err:  # omegaconf / yaml raise many types for a damaged file
        raise ConfigError(f"{path}: not a readable config ({str(err).splitlines()[0]})") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    return saved


def prepare_output_dir(cfg: ExperimentConfig, *, resume: bool = False, overwrite: bool = False) -> None:
    """Check (and with `overwrite` empty) cfg.output_dir before a job writes into it; ConfigError
    naming the folder and what it holds when it holds another run."""
    out = Path(cfg.output_dir)
    present = run_outputs(out)
    if not present:
        return
    if overwrite:
        for name in present:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return
    if resume:
        if (out / CONFIG_NAME).is_file():
            changed = config_differences(read_saved_config(out / CONFIG_NAME), cfg, RESUME_MAY_DIFFER)
            if changed:
                raise ConfigError(
                    f"output_dir {out}: --resume with another config than the run it holds "
                    f"({'; '.join(changed)}); resume with the run's {CONFIG_NAME}, or pass --overwrite to "
                    "replace the run"
                )
        return
    raise ConfigError(
        f"output_dir {out} already holds a run ({', '.join(present)}); pass --resume to continue it, "
        "--overwrite to replace it, or choose another output_dir"
    )
