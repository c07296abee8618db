"""What a training run tells its user: JSON-lines records and a rich progress bar (rank 0 only)."""

from __future__ import annotations

import json
import math
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
