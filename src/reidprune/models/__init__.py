"""Models: the registry of named architectures, their families, checkpoints and the own format."""

from reidprune.models import import_resnet as _import_resnet  # noqa: F401  (registers the ResNet importer)
from reidprune.models import import_tokens as _import_tokens  # noqa: F401  (AMG / PM token state)
from reidprune.models import import_vit as _import_vit  # noqa: F401  (registers the ViT importer)
from reidprune.models import resnet as _resnet  # noqa: F401  (registers the ResNet family)
from reidprune.models import vit_models as _vit_models  # noqa: F401  (registers the ViT family)
from reidprune.models.checkpoints import create_from_checkpoint, load_checkpoint, register_importer
from reidprune.models.embedding import FeatureExtractor, feature_extractor
from reidprune.models.foreign import build_foreign
from reidprune.models.output import ModelOutput
from reidprune.models.registry import arch_config, build, create, list_models, register, register_family
from reidprune.models.serialization import load, save
from reidprune.models.timm_convert import from_timm

__all__ = [
    "FeatureExtractor",
    "ModelOutput",
    "arch_config",
    "build",
    "build_foreign",
    "create",
    "create_from_checkpoint",
    "feature_extractor",
    "from_timm",
    "list_models",
    "load",
    "load_checkpoint",
    "register",
    "register_family",
    "register_importer",
    "save",
]
