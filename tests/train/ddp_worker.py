"""Run by tests/train/test_train_ddp.py under `torchrun --nproc_per_node 2` (gloo, CPU).

Per rank: an uninterrupted run, a run killed at step 3, its resumption; each rank writes its final
weights to OUT/{ref,resumed}_rank{r}.safetensors for the test to compare. Then validation with
sharded loaders (reidprune's ShardSampler) against rank 0 evaluating the whole split alone, written
to OUT/val_rank{r}.json.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader
from train_helpers import EvalIds, pk_loaders, tiny_model

from reidprune.data.samplers import ShardSampler
from reidprune.evaluate import EvalConfig, evaluate_reid
from reidprune.train import BaseCallback, fit
from reidprune.train.config import TrainConfig
from reidprune.train.distributed import init_distributed
from reidprune.train.validation import validate_reid


class Killer(BaseCallback):
    def __init__(self, kill_at: int | None) -> None:
        self.kill_at = kill_at

    def on_step_end(self, engine) -> None:
        if engine.step == self.kill_at:
            raise KeyboardInterrupt


def main(out: Path) -> None:
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    assert info.world_size == 2, info
    cfg = TrainConfig(
        epochs=3, optimizer="sgd", lr=0.05, checkpoint_every_steps=2, progress=False, log_every=1
    )

    def run(name: str, kill_at: int | None = None, resume: bool = False):
        loaders = pk_loaders(num_ids=8, rank=info.rank, world_size=info.world_size)
        return fit(
            tiny_model(seed=0, num_classes=8),
            loaders,
            cfg,
            out / name,
            callbacks=[Killer(kill_at)],
            resume=resume,
            seed=5,
        )

    reference = run("ref")
    with contextlib.suppress(KeyboardInterrupt):
        run("killed", kill_at=3)
    resumed = run("killed", resume=True)
    for name, result in (("ref", reference), ("resumed", resumed)):
        tensors = {k: v.contiguous() for k, v in result.model.state_dict().items()}
        save_file(tensors, str(out / f"{name}_rank{info.rank}.safetensors"))
    model = resumed.model
    query, gallery = EvalIds(num_ids=8, per_id=2), EvalIds(num_ids=8, per_id=5)

    def shard(data):
        return DataLoader(data, batch_size=3, sampler=ShardSampler(len(data), info.rank, info.world_size))

    sharded = validate_reid(model, shard(query), shard(gallery), EvalConfig())
    whole = evaluate_reid(
        model, DataLoader(query, batch_size=3), DataLoader(gallery, batch_size=3), EvalConfig()
    )
    (out / f"val_rank{info.rank}.json").write_text(json.dumps({"sharded": sharded, "whole": whole}))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
