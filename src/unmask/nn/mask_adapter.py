"""Mask-Adapter (Li, Cheng, Feng, Liu and Wang 2025, "Mask-Adapter: The Devil is in the Masks for
Open-Vocabulary Segmentation", arXiv:2412.04533, CVPR 2025): to classify a proposal mask with a frozen
vision-language backbone, do not average the backbone's dense features inside the mask (mask pooling);
let a light adapter read the features together with the mask and produce a few semantic activation
maps, normalised over space, and pool the features with those maps, so that what matters for the
class (inside the mask or around it) decides the pooled embedding.

Shapes (einops legend): B images, Q masks per image, D feature channels, h x w the feature grid,
H x W the mask (image) grid, M activation maps per mask.

- `mask_pool(features, masks)`: the baseline (FC-CLIP's mask pooling). The mask is area-resized to
  the feature grid, so each cell weighs by the share of its pixels inside the mask: exactly the mean,
  over the mask's pixels, of the feature of the cell each pixel falls in.
- `MaskAdapter`: as `mask_adapter_head.py` of hustvl/MaskAdapter. The mask, resized to (4h, 4w),
  goes through two stride-2 3x3 convs (LayerNorm2d, GELU) and a 1x1 conv to D channels, and is
  ADDED to the features; a 1x1 conv to `channels`, ConvNeXt blocks, a LayerNorm and a 1x1 conv give M
  maps per mask; `softmax(logsigmoid(maps))` over the h*w cells turns them into weights summing to
  one; each map pools the features; the M pooled vectors are averaged.
- `mask_consistency_loss`: 1 - cosine between the embedding of a perturbed mask and that of its
  ground-truth mask, the ground truth's side detached (the paper's `cosine_similarity_loss`).
- `text_logits`: cosine between embeddings and text embeddings, times a scale (CLIP's classifier).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def _check(features: torch.Tensor, masks: torch.Tensor) -> None:
    if features.ndim != 4:
        raise ValueError(f"features must be [B, D, h, w], got shape {tuple(features.shape)}")
    if masks.ndim != 4:
        raise ValueError(f"masks must be [B, Q, H, W], got shape {tuple(masks.shape)}")
    if masks.shape[0] != features.shape[0]:
        raise ValueError(f"features and masks differ in batch size: {features.shape[0]} vs {masks.shape[0]}")


def _area_resize(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """masks: [B, Q, H, W] bool/float -> [B, Q, h, w] float, the share of each cell inside the mask."""
    h, w = grid
    H, W = masks.shape[-2:]
    if H % h or W % w:
        raise ValueError(f"the mask grid {H}x{W} must be a multiple of the feature grid {h}x{w}")
    return F.adaptive_avg_pool2d(masks.float(), grid)


def mask_pool(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mean of the features inside each mask. features: [B, D, h, w] float; masks: [B, Q, H, W] bool
    or float in [0, 1], H, W multiples of h, w -> [B, Q, D]. An empty mask pools to zeros (the
    denominator is clamped rather than checked, so no value is read from the device)."""
    _check(features, masks)
    weights = _area_resize(masks, features.shape[-2:]).flatten(2)  # [B, Q, h*w]
    pooled = torch.einsum("bqn,bdn->bqd", weights, features.flatten(2))
    return pooled / weights.sum(-1, keepdim=True).clamp_min(1e-6)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a [B, C, h, w] map (SAM's mask-downscaling norm)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """Depthwise k x k conv, LayerNorm, 4x MLP, layer scale, residual (Liu et al. 2022, arXiv:2201.03545)."""

    def __init__(self, channels: int, kernel: int = 7, layer_scale: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))
        self.gamma = nn.Parameter(torch.full((channels,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mlp(self.norm(self.dwconv(x).permute(0, 2, 3, 1))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class MaskAdapterOutput(NamedTuple):
    embeddings: torch.Tensor  # [B, Q, D]: the mean over maps of the map-pooled features
    maps: torch.Tensor  # [B, Q, M, h, w]: the activation maps, each summing to 1 over h*w


class MaskAdapter(nn.Module):
    """(features [B, D, h, w], masks [B, Q, H, W]) -> MaskAdapterOutput. Only the adapter learns: the
    features come from a frozen backbone, and the pooled embedding lives in the backbone's space, so
    the backbone's text embeddings classify it.

    dim: D; maps: M (the paper: 16); channels: the width of the ConvNeXt blocks (the paper: 768);
    mask_channels: the mask branch's width (the paper: 16); blocks: ConvNeXt blocks (the paper: 3)."""

    def __init__(self, dim: int, maps: int = 16, channels: int = 64, mask_channels: int = 16, blocks: int = 3,
                 kernel: int = 7):
        super().__init__()
        # a LayerNorm over one channel outputs zeros, so the mask branch's first conv needs >= 2 channels
        if min(dim, maps, channels, blocks) < 1 or mask_channels < 8 or mask_channels % 4:
            raise ValueError(f"need dim, maps, channels, blocks >= 1 and mask_channels a multiple of 4, >= 8; "
                             f"got dim={dim}, maps={maps}, channels={channels}, blocks={blocks}, "
                             f"mask_channels={mask_channels}")
        self.dim, self.maps = dim, maps
        quarter = mask_channels // 4
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, quarter, 3, stride=2, padding=1), LayerNorm2d(quarter), nn.GELU(),
            nn.Conv2d(quarter, mask_channels, 3, stride=2, padding=1), LayerNorm2d(mask_channels), nn.GELU(),
            nn.Conv2d(mask_channels, dim, 1),
        )
        self.fuse = nn.Conv2d(dim, channels, 1)
        self.blocks = nn.Sequential(*(ConvNeXtBlock(channels, kernel) for _ in range(blocks)))
        self.norm = LayerNorm2d(channels)
        self.final = nn.Conv2d(channels, maps, 1)

    def forward(self, features: torch.Tensor, masks: torch.Tensor) -> MaskAdapterOutput:
        _check(features, masks)
        B, D, h, w = features.shape
        if D != self.dim:
            raise ValueError(f"features have {D} channels, the adapter was built for dim={self.dim}")
        Q = masks.shape[1]
        # the two stride-2 convs bring (4h, 4w) back to (h, w); the paper resizes bilinearly too
        m = F.interpolate(masks.flatten(0, 1).unsqueeze(1).float(), size=(4 * h, 4 * w), mode="bilinear",
                          align_corners=False)
        x = features.repeat_interleave(Q, dim=0) + self.mask_downscaling(m)  # [B*Q, D, h, w]
        logits = self.final(self.norm(self.blocks(self.fuse(x))))  # [B*Q, M, h, w]
        # logsigmoid before the softmax bounds each cell's logit above by 0, as in the paper
        weights = F.softmax(F.logsigmoid(logits).flatten(2), dim=-1)  # [B*Q, M, h*w]
        pooled = torch.bmm(weights, features.flatten(2).repeat_interleave(Q, dim=0).transpose(1, 2))  # [B*Q, M, D]
        embeddings = pooled.mean(1).view(B, Q, D)
        return MaskAdapterOutput(embeddings, weights.view(B, Q, self.maps, h, w))


def text_logits(embeddings: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """embeddings: [..., D]; text: [C, D] -> [..., C] = scale * cosine(embedding, text)."""
    if embeddings.shape[-1] != text.shape[-1]:
        raise ValueError(f"embeddings have {embeddings.shape[-1]} channels, the text embeddings {text.shape[-1]}")
    return scale * F.normalize(embeddings, dim=-1) @ F.normalize(text, dim=-1).T


def mask_consistency_loss(embeddings: torch.Tensor, reference: torch.Tensor,
                          valid: torch.Tensor | None = None) -> torch.Tensor:
    """1 - mean cosine between each perturbed mask's embedding and its ground-truth mask's, the
    reference detached (it is the target, as in the paper). embeddings, reference: [B, Q, D];
    valid: Bool[B, Q] (the pairs that exist; the paper averages over its zero-padded slots too)."""
    if embeddings.shape != reference.shape:
        raise ValueError(f"embeddings {tuple(embeddings.shape)} and reference {tuple(reference.shape)} differ")
    cos = F.cosine_similarity(embeddings, reference.detach(), dim=-1)  # [B, Q]
    if valid is None:
        return 1 - cos.mean()
    if valid.shape != cos.shape:
        raise ValueError(f"valid must be {tuple(cos.shape)}, got {tuple(valid.shape)}")
    w = valid.to(cos.dtype)
    return 1 - (cos * w).sum() / w.sum().clamp_min(1)
