"""Test-time feature extraction: one retrieval vector per image, with optional flip averaging."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidprune.errors import DataError
from reidprune.models.forward import autocast_for, embedding_of, forward_model, model_device

MAX_SQUARED_NORM = 1e37


@dataclass
class Features:
    """Features of one evaluation split.

    features: (N, D) float32 on the CPU; pids, camids: (N,) long (original identity, 0-based camera).
    """

    features: Tensor
    pids: Tensor
    camids: Tensor

    def __post_init__(self) -> None:
        self.features = torch.as_tensor(self.features)
        self.pids = torch.as_tensor(self.pids, dtype=torch.long)
        self.camids = torch.as_tensor(self.camids, dtype=torch.long)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def check(self, name: str) -> None:
        """Raise DataError naming the split when shapes disagree, the split is empty or not finite."""
        f = self.features
        if f.ndim != 2:
            raise DataError(f"{name} features: expected a (N, D) matrix, got shape {tuple(f.shape)}")
        if f.shape[0] == 0:
            raise DataError(f"{name} set is empty: there is nothing to evaluate")
        if self.pids.shape != (f.shape[0],) or self.camids.shape != (f.shape[0],):
            raise DataError(
                f"{name}: {f.shape[0]} features but {tuple(self.pids.shape)} pids and "
                f"{tuple(self.camids.shape)} camids; expected one of each per feature"
            )
        if not f.is_floating_point():
            raise DataError(f"{name} features: expected floating point, got {f.dtype}")
        # squared norms are finite only when every entry is; bounding them keeps every squared
        # distance (<= 2 (|q|^2 + |g|^2)) inside float32
        largest = float(torch.linalg.vector_norm(f.float(), dim=1).max()) ** 2
        if largest <= MAX_SQUARED_NORM:
            return
        bad = int((~torch.isfinite(f)).any(dim=1).sum())
        if bad:
            raise DataError(
                f"{name} features: {bad} of {f.shape[0]} rows contain NaN or inf (a diverged model, "
                "or fp16 overflow); refusing to rank them"
            )
        raise DataError(
            f"{name} features: a squared norm of {largest:.3g} would overflow float32 distances "
            f"(limit {MAX_SQUARED_NORM:.0e}); normalise the features"
        )


def _embed(model: nn.Module, images: Tensor, camids: Tensor | None) -> Tensor:
    return embedding_of(forward_model(model, images, camids)).float()


@torch.inference_mode()
def extract_features(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    flip: bool = False,
    normalize: bool = True,
    device: str | torch.device | None = None,
    amp: bool | None = None,
) -> Features:
    """Embed every image of `loader` (batches: dicts with ``image`` (B,3,H,W), ``pid``, ``camid``).

    flip: use the sum of the embeddings of the image and of its horizontal flip (then normalise).
    normalize: L2-normalise each feature.
    device: where the model runs; None keeps the model where it is. The model is moved there.
    amp: bf16 autocast; None = on for CUDA. Never used on CPU.
    Returns features on the CPU in loader order. The model's train/eval mode is restored afterwards.
    """
    device = torch.device(device) if device is not None else model_device(model)
    model.to(device)
    amp = (device.type == "cuda") if amp is None else amp
    was_training = model.training
    model.eval()
    feats, pids, camids = [], [], []
    try:
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            cams = batch["camid"].to(device, non_blocking=True)
            with autocast_for(device, amp):
                emb = _embed(model, images, cams)
                if flip:
                    emb = emb + _embed(model, torch.flip(images, dims=[3]), cams)
            if normalize:
                emb = F.normalize(emb, dim=1)
            feats.append(emb.cpu())
            pids.append(batch["pid"].reshape(-1).long().cpu())
            camids.append(batch["camid"].reshape(-1).long().cpu())
    finally:
        model.train(was_training)
    if not feats:
        raise DataError("the loader yielded no batches: there are no images to extract features from")
    return Features(torch.cat(feats), torch.cat(pids), torch.cat(camids))
