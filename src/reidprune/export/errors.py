"""The error `reidprune.export` raises when a graph cannot be written or does not match PyTorch."""

from __future__ import annotations


class ExportError(ValueError):
    """An export request that cannot be met (bad option, exporter failure, ONNX Runtime mismatch);
    the message names the file or option and what was expected."""
