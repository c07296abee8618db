"""What every job does first, on every rank: claim its output folder and read its data set."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from reidprune.atomic import FolderLockedError, folder_lock
from reidprune.config import ExperimentConfig
from reidprune.data.config import DataConfig
from reidprune.data.records import DatasetSplits
from reidprune.errors import ConfigError
from reidprune.run_folder import prepare_output_dir
from reidprune.train.distributed import DistInfo, barrier, broadcast_object


@contextlib.contextmanager
def claimed_output_dir(
    cfg: ExperimentConfig, info: DistInfo, *, resume: bool, overwrite: bool
) -> Iterator[None]:
    """Hold output_dir's lock for the job (rank 0 writes) after checking it holds no other run
    (`run_folder.prepare_output_dir`); rank 0's refusal is raised on every rank, so all stop."""
    with contextlib.ExitStack() as held:
        refusal = None
        if info.is_main:
            try:
                held.enter_context(folder_lock(cfg.output_dir))
                prepare_output_dir(cfg, resume=resume, overwrite=overwrite)
            except (ConfigError, FolderLockedError) as err:
                refusal = err
        refusal = broadcast_object(refusal)
        if refusal is not None:
            raise refusal
        yield


def job_splits(data: DataConfig, info: DistInfo) -> DatasetSplits:
    """The data set's splits; rank 0 reads it first, since it may generate the synthetic set that
    the other ranks then read."""
    from reidprune.data import build_dataset

    splits = build_dataset(data) if info.is_main else None
    barrier()
    return splits if splits is not None else build_dataset(data)
