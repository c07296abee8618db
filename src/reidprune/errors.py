"""Error types raised where bad input enters; the CLI prints them as one clear line."""

from __future__ import annotations

from reidprune.config import ConfigError
from reidprune.models.checkpoint_io import CheckpointError
from reidprune.models.registry import UnknownModelError


class DataError(ValueError):
    """A data set folder, file name, image or sampler request that does not fit what was expected."""


class CompressionError(ValueError):
    """A compression request that cannot apply to this model (bad rate, missing blocks, plan mismatch)."""


class TrainingError(RuntimeError):
    """Training cannot go on (NaN loss, empty data, teacher/student mismatch)."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    CheckpointError,
    UnknownModelError,
    DataError,
    CompressionError,
    TrainingError,
    FileNotFoundError,
)
