"""Heads that turn ViT tokens into re-ID (or classification) outputs.

Every head is called as ``head(tokens, state, backbone) -> ModelOutput`` with the backbone's
output tokens (B, N_cur, D) and the TokenState the blocks left behind. Heads that take one image
feature use ``backbone.pool(tokens, state)`` (the CLS token, or the global average); heads that need patch positions
(LA stripes, TransReID JPM) first call ``backbone.restore_grid`` so that they see the original
raster order whatever the reducers did.

Each head exposes ``necks`` (BNNecks, possibly empty) and ``classifiers`` (possibly empty when
num_classes = 0) as ModuleLists, so training code can find and reset them uniformly.

- LinearHead: classification (timm / DeiT / MAE): logits = Linear(pooled feature); a distilled DeiT
  (backbone with a dist_token) has a second classifier on the distillation token (timm's head_dist)
  and its logits are the mean of both, as timm gives them in eval.
- BNNeckHead: the strong re-ID baseline (Luo et al. 2019, "Bag of Tricks"): pooled feature -> BatchNorm with a
  frozen zero bias -> bias-free classifier; retrieval with the feature before or after the BN.
- LAHead: LA-Transformer (Sharma et al. 2021): patch tokens averaged into horizontal stripes (one
  per grid row), each blended with the CLS token as (g + lambda * p) / (1 + lambda) and classified by
  its own ClassBlock; retrieval with the unblended stripes, each L2-normalised / sqrt(n), concatenated.
- JPMHead: TransReID (He et al. 2021) jigsaw patch module: a global branch (copy of the last block +
  norm) and a local branch (another copy) run on shifted, shuffled chunks of patch tokens, each
  feature with its own BNNeck and classifier; retrieval with [g, l_1/k, ..., l_k/k].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidprune.models.output import ModelOutput
from reidprune.models.vit import Block, TokenState, VisionTransformer


class BNNeck(nn.BatchNorm1d):
    """BatchNorm1d with weight 1, bias 0 and the bias frozen (it would only shift all features alike)."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)
        self.bias.requires_grad_(False)


def reid_classifier(dim: int, num_classes: int) -> nn.Linear:
    """Bias-free ID classifier with small N(0, 0.001) weights (TransReID / BoT initialisation)."""
    layer = nn.Linear(dim, num_classes, bias=False)
    nn.init.normal_(layer.weight, std=0.001)
    return layer


class ClassBlock(nn.Module):
    """Part classifier of LA-Transformer / PCB: Linear(D -> bottleneck) -> BN -> Dropout -> Linear(-> C)."""

    def __init__(self, dim: int, num_classes: int, bottleneck: int = 256, dropout: float = 0.5) -> None:
        super().__init__()
        self.reduce = nn.Linear(dim, bottleneck)
        self.bn = nn.BatchNorm1d(bottleneck)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(bottleneck, num_classes)
        nn.init.kaiming_normal_(self.reduce.weight, a=0, mode="fan_out")
        nn.init.zeros_(self.reduce.bias)
        nn.init.normal_(self.bn.weight, 1.0, 0.02)
        nn.init.zeros_(self.bn.bias)
        nn.init.normal_(self.fc.weight, std=0.001)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, D) -> (B, C) logits."""
        return self.fc(self.dropout(self.bn(self.reduce(x))))


class LinearHead(nn.Module):
    """Classification: logits = Linear(pooled feature), which is also the embedding (pre-logits).

    distilled: classifiers[0] reads the CLS token and classifiers[1] the distillation token (timm's
    `head` and `head_dist`); the logits are their mean (timm's eval output, also used in training).
    """

    def __init__(self, dim: int, num_classes: int, distilled: bool = False) -> None:
        super().__init__()
        self.necks = nn.ModuleList()
        self.distilled = distilled
        count = (2 if distilled else 1) if num_classes > 0 else 0
        self.classifiers = nn.ModuleList(nn.Linear(dim, num_classes) for _ in range(count))
        for layer in self.classifiers:
            nn.init.trunc_normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, tokens: Tensor, state: TokenState, backbone: VisionTransformer) -> ModelOutput:
        feature = backbone.pool(tokens, state)
        if self.distilled and len(self.classifiers) == 2:
            cls, dist = self.classifiers
            logits = [(cls(tokens[:, 0]) + dist(tokens[:, 1])) / 2]
        else:
            logits = [classifier(feature) for classifier in self.classifiers]
        return ModelOutput(embedding=feature, logits=logits, features=[feature] if self.training else [])


class BNNeckHead(nn.Module):
    """Pooled feature -> BNNeck -> classifier. neck_feat: retrieve with the feature "before" or "after" the BN."""

    def __init__(self, dim: int, num_classes: int, neck_feat: str = "after") -> None:
        super().__init__()
        self.neck_feat = neck_feat
        self.necks = nn.ModuleList([BNNeck(dim)])
        self.classifiers = nn.ModuleList([reid_classifier(dim, num_classes)] if num_classes > 0 else [])

    def forward(self, tokens: Tensor, state: TokenState, backbone: VisionTransformer) -> ModelOutput:
        feature = backbone.pool(tokens, state)
        normed = self.necks[0](feature)
        embedding = normed if self.neck_feat == "after" else feature
        if not self.training:
            return ModelOutput(embedding=embedding)
        logits = [classifier(normed) for classifier in self.classifiers]
        return ModelOutput(embedding=embedding, logits=logits, features=[feature])


def row_stripes(patches: Tensor, num_parts: int) -> Tensor:
    """(B, P, D) raster-order patch tokens -> (B, num_parts, D) means of consecutive token runs.

    With num_parts = grid rows every stripe is one row of the patch grid (LA-Transformer's 14 parts
    of a 14x14 grid); otherwise this is LA's adaptive average pooling over the token axis.
    """
    b, p, d = patches.shape
    if p % num_parts == 0:
        return patches.reshape(b, num_parts, p // num_parts, d).mean(dim=2)
    return F.adaptive_avg_pool1d(patches.transpose(1, 2), num_parts).transpose(1, 2)


class LAHead(nn.Module):
    """Locally-aware head of LA-Transformer.

    Training: stripes p_k blended with the CLS token g as (g + lmbd * p_k) / (1 + lmbd), one ClassBlock
    each; features = the blended stripes. Retrieval: stripes (unblended unless blend_at_test), each
    L2-normalised and divided by sqrt(n), concatenated -> (B, n * D) with unit norm.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int,
        num_parts: int,
        lmbd: float = 8.0,
        bottleneck: int = 256,
        dropout: float = 0.5,
        blend_at_test: bool = False,
    ) -> None:
        super().__init__()
        self.num_parts = num_parts
        self.lmbd = lmbd
        self.blend_at_test = blend_at_test
        self.necks = nn.ModuleList()
        self.classifiers = nn.ModuleList(
            [ClassBlock(dim, num_classes, bottleneck, dropout) for _ in range(num_parts)]
            if num_classes > 0
            else []
        )

    def blend(self, cls: Tensor, parts: Tensor) -> Tensor:
        """cls (B, D), parts (B, n, D) -> globally enhanced parts (B, n, D)."""
        return (cls.unsqueeze(1) + self.lmbd * parts) / (1.0 + self.lmbd)

    def forward(self, tokens: Tensor, state: TokenState, backbone: VisionTransformer) -> ModelOutput:
        grid = backbone.restore_grid(tokens, state)
        cls = grid[:, 0]
        parts = row_stripes(grid[:, backbone.num_prefix_tokens :], self.num_parts)
        blended = self.blend(cls, parts)
        test_parts = blended if self.blend_at_test else parts
        embedding = (F.normalize(test_parts, dim=-1) / math.sqrt(self.num_parts)).flatten(1)
        if not self.training:
            return ModelOutput(embedding=embedding)
        features = list(blended.unbind(1))
        logits = [classifier(f) for classifier, f in zip(self.classifiers, features, strict=False)]
        return ModelOutput(embedding=embedding, logits=logits, features=features)


def jigsaw_shuffle(patches: Tensor, shift: int, groups: int) -> Tensor:
    """TransReID's shift + patch shuffle of (B, P, D) patch tokens (CLS excluded).

    Shift: rotate left by (shift - 1) positions (TransReID's `shift` counts the CLS slot).
    Shuffle: pad to a multiple of `groups` by repeating the second-to-last token (TransReID's
    fallback for an odd count), split into `groups` consecutive groups and interleave them.
    Returns (B, P', D) with P' = P rounded up to a multiple of groups.
    """
    rotate = (shift - 1) % patches.shape[1]
    x = torch.cat([patches[:, rotate:], patches[:, :rotate]], dim=1)
    pad = (-x.shape[1]) % groups
    if pad:
        x = torch.cat([x, x[:, -2:-1].expand(-1, pad, -1)], dim=1)
    b, p, d = x.shape
    return x.reshape(b, groups, p // groups, d).transpose(1, 2).reshape(b, p, d)


class JPMBranch(nn.Module):
    """A copy of the last transformer block followed by its own LayerNorm (TransReID b1 / b2)."""

    def __init__(self, block: Block, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.block = block
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        x, _ = self.block(x)
        return self.norm(x)


class JPMHead(nn.Module):
    """TransReID's global branch (b1) + jigsaw patch module (b2 on k chunks) + 1 + k BNNecks.

    Expects the backbone's tokens BEFORE a final norm (the backbone of a JPM model has no norm).
    Training: logits and pre-BN features [g, l_1..l_k]. Retrieval: concat[g, l_1/k, ..., l_k/k] with
    the features before the BN (neck_feat "before", TransReID's test setting) or after.
    """

    def __init__(
        self,
        b1: JPMBranch,
        b2: JPMBranch,
        dim: int,
        num_classes: int,
        shift: int = 5,
        shuffle_groups: int = 2,
        num_local: int = 4,
        rearrange: bool = True,
        neck_feat: str = "before",
    ) -> None:
        super().__init__()
        self.b1 = b1
        self.b2 = b2
        self.shift = shift
        self.shuffle_groups = shuffle_groups
        self.num_local = num_local
        self.rearrange = rearrange
        self.neck_feat = neck_feat
        self.necks = nn.ModuleList(BNNeck(dim) for _ in range(1 + num_local))
        self.classifiers = nn.ModuleList(
            [reid_classifier(dim, num_classes) for _ in range(1 + num_local)] if num_classes > 0 else []
        )

    def local_features(self, grid: Tensor) -> Tensor:
        """(B, 1 + P, D) raster-order tokens -> (B, k, D) CLS outputs of b2 on the k chunks."""
        cls, patches = grid[:, :1], grid[:, 1:]
        chunk = patches.shape[1] // self.num_local  # from the unpadded count, as TransReID
        if self.rearrange:
            patches = jigsaw_shuffle(patches, self.shift, self.shuffle_groups)
        b, _, d = patches.shape
        chunks = patches[:, : chunk * self.num_local].reshape(b, self.num_local, chunk, d)
        # all k chunks through b2 in one batched call: (B * k, 1 + chunk, D)
        seqs = torch.cat([cls.unsqueeze(1).expand(-1, self.num_local, -1, -1), chunks], dim=2)
        out = self.b2(seqs.reshape(b * self.num_local, 1 + chunk, d))
        return out[:, 0].reshape(b, self.num_local, d)

    def forward(self, tokens: Tensor, state: TokenState, backbone: VisionTransformer) -> ModelOutput:
        grid = backbone.restore_grid(tokens, state)
        features = [self.b1(grid)[:, 0], *self.local_features(grid).unbind(1)]
        normed = [neck(f) for neck, f in zip(self.necks, features, strict=True)]
        chosen = normed if self.neck_feat == "after" else features
        embedding = torch.cat([chosen[0], *(f / self.num_local for f in chosen[1:])], dim=1)
        if not self.training:
            return ModelOutput(embedding=embedding)
        logits = [classifier(f) for classifier, f in zip(self.classifiers, normed, strict=False)]
        return ModelOutput(embedding=embedding, logits=logits, features=features)
