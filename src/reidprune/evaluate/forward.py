"""Deprecated path (one release): the forward helpers live in `reidprune.models.forward`, so that the
model layer (feature extractors) and measure use them without importing evaluate."""

from reidprune.models.forward import (
    autocast_for,
    embedding_of,
    forward_model,
    input_size_for,
    logits_of,
    model_device,
    model_dtype,
    model_input_size,
    takes_any_input_size,
    use_model_input_size,
    uses_cameras,
)

__all__ = [
    "autocast_for",
    "embedding_of",
    "forward_model",
    "input_size_for",
    "logits_of",
    "model_device",
    "model_dtype",
    "model_input_size",
    "takes_any_input_size",
    "use_model_input_size",
    "uses_cameras",
]
