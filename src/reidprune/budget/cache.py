"""Measured latencies kept on disk, one JSON file per machine setting, so later predictions are instant.

A file holds the points measured for one (CPU model string, runtime and its version, threads,
batch): ``{"setting": {...}, "points": {signature: milliseconds}}``. A signature names one timed
probe exactly ("attn|dim=384|head_dim=64|bias=1|heads=6|q=129|kv=65"), so any grid that needs the
point finds it. The file is rewritten atomically (`reidprune.atomic.write_json`), merging what
another process wrote meanwhile, so a killed or concurrent run never leaves a broken table.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reidprune.atomic import write_json

# 5: a steady-state load meter of the probes' size (`probes.LoadMeter`; 4: a small one timed cold);
# 4: probes timed in steady state (`measure.timing`; 3: right after other probes, cold for small
# ones); 3: the load meter timed cold (2: warm, ~1.5x too fast). Older files are re-measured.
FORMAT = 5


@dataclass(frozen=True)
class Setting:
    """Where the figures hold: the machine, the runtime (with version), its threads and the batch."""

    device: str  # CPU model string, or the GPU name for CUDA
    runtime: str  # "onnxruntime" | "torch" | "cuda"
    version: str
    threads: int
    batch: int

    def slug(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return (
            f"{self.runtime}-b{self.batch}-t{self.threads}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
        )


def cache_subdir(name: str) -> Path:
    """$REIDPRUNE_CACHE/<name>, else ~/.cache/reidprune/<name>: where reidprune keeps what it measured."""
    root = os.environ.get("REIDPRUNE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "reidprune") / name


def default_cache_dir() -> Path:
    """$REIDPRUNE_CACHE/latency, else ~/.cache/reidprune/latency."""
    return cache_subdir("latency")


class LatencyCache:
    """Milliseconds per probe signature for one `Setting`, backed by a JSON file.

    path: a JSON file, or a folder that holds one file per setting (default `default_cache_dir()`).
    """

    def __init__(self, setting: Setting, path: str | Path | None = None) -> None:
        self.setting = setting
        where = Path(path).expanduser() if path is not None else default_cache_dir()
        self.path = where if where.suffix == ".json" else where / f"{setting.slug()}.json"
        self.points: dict[str, float] = self._read()
        self.measured = 0  # points measured (not read) by this process

    def _read(self) -> dict[str, float]:
        if not self.path.is_file():
            return {}
        try:
            payload = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(
                f"{self.path}: not a readable latency table ({err}); delete it to re-measure"
            ) from None
        stored = payload.get("setting") if isinstance(payload, dict) else None
        if stored != asdict(self.setting):
            raise ValueError(
                f"{self.path}: holds figures for {stored}, not for {asdict(self.setting)}; "
                "give another file or a folder"
            )
        if payload.get("format") != FORMAT:  # figures timed another way: not comparable, start afresh
            return {}
        points = payload.get("points", {})
        return {str(k): float(v) for k, v in points.items()}

    def __contains__(self, signature: str) -> bool:
        return signature in self.points

    def get(self, signature: str) -> float | None:
        return self.points.get(signature)

    def put(self, signature: str, ms: float) -> None:
        self.points[signature] = float(ms)
        self.measured += 1

    def save(self) -> Path:
        """Write the table (merged with points another process saved meanwhile) atomically."""
        merged = {**self._read(), **self.points}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload: dict[str, Any] = {"format": FORMAT, "setting": asdict(self.setting), "points": merged}
        write_json(self.path, payload)
        self.points = merged
        return self.path
