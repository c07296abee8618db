"""Run by tests/compress/test_prune_ddp.py under `torchrun --nproc_per_node 2` (gloo, CPU).

argv: CONFIG OUT. Per rank: the prune job of CONFIG uninterrupted into OUT/ref, then killed in
round 2 just after its first training checkpoint into OUT/killed and resumed there. Rank 0 writes
the outputs; every rank writes its final weights to OUT/{ref,resumed}_rank{r}.safetensors.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch
from prune_ddp_helpers import kill_at
from safetensors.torch import save_file

from reidprune.config import load_config
from reidprune.jobs.prune import prune_experiment
from reidprune.models.loading import load_model
from reidprune.train.distributed import barrier, init_distributed


def main(config: Path, out: Path) -> None:
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    assert info.world_size == 2, info

    def job(name: str, resume: bool = False) -> None:
        prune_experiment(load_config(config, [f"output_dir={out / name}"]), resume=resume)

    job("ref")
    kill_at("round2-step1")
    with contextlib.suppress(KeyboardInterrupt):
        job("killed")
    barrier()
    job("killed", resume=True)
    for name, folder in (("ref", "ref"), ("resumed", "killed")):
        model = load_model(out / folder / "model")
        tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(out / f"{name}_rank{info.rank}.safetensors"))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
