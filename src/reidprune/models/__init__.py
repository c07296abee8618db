"""Models: the registry of named architectures, their families, checkpoints and the own format."""

from reidprune.models.output import ModelOutput
from reidprune.models.registry import arch_config, build, create, list_models, register, register_family
from reidprune.models.serialization import load, save

__all__ = [
    "ModelOutput",
    "arch_config",
    "build",
    "create",
    "list_models",
    "load",
    "register",
    "register_family",
    "save",
]
