"""Every error type reidprune raises for bad input, in one module that imports nothing of ours but
`reidprune.atomic` (which imports nothing of ours either).

They are raised where the bad value enters, naming the file, key or value and what was
expected; the CLI prints them as one line (exit code 2) instead of a traceback. This module is in
the base layer (tests/test_layers.py), so every package imports its errors from here, at module
level; `reidprune.config.ConfigError` is the same class.
"""

from __future__ import annotations

from reidprune.atomic import FolderLockedError  # the one writer's error; atomic imports nothing of ours


class ConfigError(ValueError):
    """A configuration file or override does not fit the schema; the message names the key."""


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit the model; the message names keys and shapes."""


class UnknownModelError(KeyError):
    """A model name or family that the registry does not know."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


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
    FolderLockedError,
)
