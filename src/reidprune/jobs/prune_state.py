"""What a prune job keeps to resume after a kill: the last finished round, in output_dir/prune_state/.

    prune_state/round{k}/   reidprune model folder of the model after round k (model.json holds the
                            compression plan so far, weights.safetensors the fine-tuned weights)
    prune_state/state.pt    {"rounds_done": k, "model": "round{k}", "stages": [...], "rng": [per rank]}

Rank 0 writes the model folder (atomically), then state.pt (atomic rename), then removes the older
round's folder: a kill at any point leaves one complete state, and the disk holds one model. The
running round's fine-tuning resumes from its own training checkpoint (output_dir/round{k}/checkpoints).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from reidprune.errors import CompressionError
from reidprune.train.checkpoint import load_resume_state, rng_state, save_resume_state, set_rng_state
from reidprune.train.distributed import all_gather_objects, dist_info

STATE_DIR = "prune_state"
STATE_FILE = "state.pt"
KIND = "reidprune-prune-rounds"
_ROUND = re.compile(r"round\d+")


@dataclass
class RoundState:
    """The schedule after `rounds_done` finished rounds (model carries its `compression_plan`)."""

    rounds_done: int
    model: nn.Module
    stages: list[dict[str, Any]]
    rng: list[dict[str, Any]]  # every rank's generators when the round finished, in rank order


def can_save(model: nn.Module) -> bool:
    """Only reidprune models (with an .arch) have a folder format to resume from."""
    return getattr(model, "arch", None) is not None


def save_round(
    output_dir: str | Path, rounds_done: int, model: nn.Module, stages: list[dict[str, Any]]
) -> None:
    """Record that `rounds_done` rounds are finished (collective under torchrun: gathers generators)."""
    from reidprune.models.serialization import save

    rng = all_gather_objects(rng_state())
    if not dist_info().is_main:
        return
    folder = Path(output_dir) / STATE_DIR
    name = f"round{rounds_done}"
    save(model, folder / name, metadata={"rounds_done": rounds_done})
    state = {"kind": KIND, "rounds_done": rounds_done, "model": name, "stages": stages, "rng": rng}
    save_resume_state(state, folder / STATE_FILE)
    for old in folder.iterdir():
        if old.is_dir() and _ROUND.fullmatch(old.name) and old.name != name:
            shutil.rmtree(old)


def load_round(output_dir: str | Path, device: Any = None) -> RoundState | None:
    """The last finished round saved in output_dir, or None when no round has finished yet."""
    from reidprune.models.loading import load_model

    folder = Path(output_dir) / STATE_DIR
    path = folder / STATE_FILE
    if not path.is_file():
        return None
    state = load_resume_state(path)
    if state.get("kind") != KIND:
        raise CompressionError(f"{path}: not a prune job's round state (expected kind '{KIND}')")
    model = load_model(folder / state["model"], map_location=device or "cpu")
    if getattr(model, "compression_plan", None) is None:
        raise CompressionError(f"{folder / state['model']}: the saved round has no compression plan")
    return RoundState(int(state["rounds_done"]), model, list(state["stages"]), list(state["rng"]))


def restore_generators(saved: RoundState) -> bool:
    """Put this rank's generators back as they were when the round finished; False (nothing
    restored) when the state was saved by another number of ranks."""
    info = dist_info()
    if len(saved.rng) != info.world_size:
        return False
    set_rng_state(saved.rng[info.rank])
    return True
