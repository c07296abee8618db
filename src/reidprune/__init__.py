"""reidprune: prune person re-ID and image-recognition networks for edge devices."""

from reidprune.models import create, load, save

__version__ = "0.1.0"
__all__ = ["__version__", "create", "load", "save"]
