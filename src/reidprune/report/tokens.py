"""Per-block kept-token maps: which patches each transformer block still processes, over an image.

Only static token plans can be drawn, because they are the same for every image:
- AMG (`arch.tokens.method == "amg"`): per block the kept original positions; a pruned patch is
  left out of the block's keys and values ("kv") or skips the block entirely ("skip");
- Prune-and-Merge with a sparse plan: per block the segment of every patch (-1 = pruned); patches
  sharing a segment are merged into one token.
Top-k (EViT) and ToMe choose tokens per image at run time, and dense PM plans store only counts:
for those `token_states` returns None and the reason, which the report prints instead.

The patch grid is drawn as an even (rows x cols) partition of the input image; with an overlapping
patch embedding (stride < patch size) each cell stands for its patch's centre region.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reidprune.report.mosaic import Mosaic

KEPT, MERGED, PRUNED = 0, 1, 2
# RGBA overlays per state: pruned patches dimmed to near black, merged ones tinted blue
OVERLAY = {KEPT: (0.0, 0.0, 0.0, 0.0), MERGED: (0.15, 0.35, 0.95, 0.38), PRUNED: (0.0, 0.0, 0.0, 0.74)}


def _grid(arch: Any) -> tuple[int, int]:
    size, patch = list(arch.img_size), int(arch.patch_size)
    stride = int(getattr(arch, "stride", patch) or patch)
    return (size[0] - patch) // stride + 1, (size[1] - patch) // stride + 1


def token_states(arch: Any) -> tuple[list[np.ndarray] | None, str]:
    """Per backbone block an int array (rows, cols) of KEPT / MERGED / PRUNED, and a one-line
    description; (None, reason) when the model has no static token plan."""
    if getattr(arch, "family", None) != "vit":
        return None, f"a {getattr(arch, 'family', 'non-ViT')} model: token reduction does not apply"
    spec = getattr(arch, "tokens", None)
    if not spec:
        return None, "no token reduction: every block processes all patches"
    rows, cols = _grid(arch)
    patches = rows * cols
    method = spec.get("method")
    states: list[np.ndarray] = []
    if method == "amg":
        for kept in spec["kept"]:
            state = np.zeros(patches, dtype=np.int64)
            if kept is not None:
                state[:] = PRUNED
                positions = np.asarray([p for p in kept if p >= 1], dtype=np.int64) - 1
                state[positions] = KEPT
            states.append(state.reshape(rows, cols))
        effect = "are left out of the keys and values" if spec.get("mode") == "kv" else "skip the block"
        return (
            states,
            f"AMG ({spec.get('mode')}): static masks, the same for every image; dimmed patches {effect}",
        )
    if method == "pm" and not spec.get("dense"):
        for segment in spec.get("segments") or []:
            state = np.zeros(patches, dtype=np.int64)
            if segment is not None:
                seg = np.asarray(segment, dtype=np.int64)
                ids, counts = np.unique(seg[seg >= 0], return_counts=True)
                shared = set(ids[counts > 1].tolist())
                state[np.isin(seg, list(shared))] = MERGED
                state[seg < 0] = PRUNED
            states.append(state.reshape(rows, cols))
        return (
            states,
            "Prune-and-Merge: dimmed patches are pruned (skip the block), blue ones merged with neighbours",
        )
    if method == "pm":
        return (
            None,
            "Prune-and-Merge with dense merge matrices (imported checkpoint): only token counts are stored",
        )
    if method == "topk":
        return None, "top-k (EViT) keeps different tokens for every image at run time: no static token map"
    if method == "tome":
        return None, "ToMe merges different tokens for every image at run time: no static token map"
    return None, f"token method '{method}' has no static token map"


def shade(image: np.ndarray, state: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 image with the (rows, cols) token states laid over it: pruned cells dimmed,
    merged cells tinted, thin light lines on the cell boundaries."""
    height, width = image.shape[:2]
    rows, cols = state.shape
    cell_row = np.arange(height) * rows // height
    cell_col = np.arange(width) * cols // width
    overlay = np.asarray([OVERLAY[KEPT], OVERLAY[MERGED], OVERLAY[PRUNED]])[state[cell_row][:, cell_col]]
    alpha = overlay[..., 3:]
    out = image.astype(np.float64) * (1 - alpha) + overlay[..., :3] * 255 * alpha
    edge_rows = np.flatnonzero(np.diff(cell_row)) + 1
    edge_cols = np.flatnonzero(np.diff(cell_col)) + 1
    out[edge_rows] = out[edge_rows] * 0.6 + 255 * 0.4
    out[:, edge_cols] = out[:, edge_cols] * 0.6 + 255 * 0.4
    return out.round().clip(0, 255).astype(np.uint8)


def token_map_figure(states: list[np.ndarray], images: list[tuple[str, np.ndarray]]) -> bytes:
    """Rows = sample images, columns = backbone blocks; each panel shows the image with the block's
    pruned patches dimmed (and merged ones tinted), titled with the patches it still processes.

    images: (label, (H, W, 3) uint8 at the model's input size) pairs. Returns PNG bytes.
    """
    height, width = images[0][1].shape[:2]
    mosaic = Mosaic(len(images), len(states), height, width, border=0, gap=4, header=24, left=34)
    for r, (label, image) in enumerate(images):
        mosaic.row_label(r, label)
        for b, state in enumerate(states):
            mosaic.place(r, b, shade(image, state))
            if r == 0:
                mosaic.title(r, b, f"block {b}\n{int((state != PRUNED).sum())}/{state.size}")
    return mosaic.png()
