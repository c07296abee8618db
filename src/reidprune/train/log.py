"""What a training run tells its user: JSON-lines records, the loss means they report, and a rich
progress bar (rank 0 only)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from reidprune.atomic import write_text


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN / inf
    return value


class JsonlLog:
    """Appends one JSON object per line to `path` (e.g. train_log.jsonl); `enabled=False` writes nothing.

    Every record has an "event" ("start", "step", "epoch", "val", "resume", "end") plus its fields.
    """

    def __init__(self, path: str | Path, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"event": event, **{k: _jsonable(v) for k, v in fields.items()}}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record, default=str) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records logged after `step` (by a run that was killed after its last checkpoint)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by the kill
                continue
            if record.get("step", 0) <= step:
                kept.append(line)
        write_text(self.path, "".join(f"{line}\n" for line in kept))


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """All records of a JSON-lines log."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class LossMeter:
    """Means of the loss terms over the log window (one "step" record) and over the epoch.

    The epoch sums go into checkpoints (`state_dict`), so that the mean of a resumed epoch still
    counts the batches trained before the interruption; the window starts afresh.
    """

    def __init__(self) -> None:
        self.epoch_sums: dict[str, float] = {}
        self.epoch_count = 0
        self.start_window()

    def start_window(self) -> None:
        self._window: dict[str, float] = {}
        self._steps, self._images, self._start = 0, 0, time.perf_counter()

    def add(self, values: dict[str, float], images: int) -> None:
        """One step's loss terms and the images it trained on (over all ranks)."""
        for name, value in values.items():
            self._window[name] = self._window.get(name, 0.0) + value
            self.epoch_sums[name] = self.epoch_sums.get(name, 0.0) + value
        self.epoch_count += 1
        self._steps += 1
        self._images += images

    def take_window(self) -> dict[str, float]:
        """images_per_s and each term's mean since the last call; starts the next window."""
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        record = {"images_per_s": self._images / elapsed}
        record.update({k: v / self._steps for k, v in self._window.items()})
        self.start_window()
        return record

    def epoch_means(self) -> dict[str, float]:
        return {k: v / max(self.epoch_count, 1) for k, v in self.epoch_sums.items()}

    def end_epoch(self) -> None:
        self.epoch_sums, self.epoch_count = {}, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch_sums": dict(self.epoch_sums), "epoch_count": self.epoch_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch_sums, self.epoch_count = dict(state["epoch_sums"]), state["epoch_count"]


class TrainProgress:
    """A per-epoch rich progress bar showing the loss and images/s; a no-op when disabled."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> TrainProgress:
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[speed]} img/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None

    def start_epoch(self, epoch: int, epochs: int, total: int, completed: int = 0) -> None:
        if self._progress is None:
            return
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(
            f"epoch {epoch + 1}/{epochs}", total=total, completed=completed, loss="-", speed="-"
        )

    def advance(self, loss: float, images_per_s: float) -> None:
        if self._progress is None or self._task is None:
            return
        self._progress.update(self._task, advance=1, loss=f"{loss:.4f}", speed=f"{images_per_s:.0f}")

    def note(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, highlight=False)
