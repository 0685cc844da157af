"""Mask classification against frozen text embeddings, trained as Mask-Adapter trains its adapter
(Li et al. 2025, "Mask-Adapter: The Devil is in the Masks for Open-Vocabulary Segmentation",
arXiv:2412.04533): the backbone and its text embeddings stay frozen; only the head that turns
(features, mask) into an embedding learns, from ground-truth masks and from perturbed copies of them
(the paper's mixed-mask training), with a cross-entropy over cosine logits on both and the
mask-consistency loss pulling each perturbed mask's embedding to its ground-truth mask's.

The paper's perturbed masks are the frozen segmenter's own proposals matched to a ground-truth mask
at IoU > 0.7; with no segmenter here, `jitter_masks` makes them: each mask is shifted and dilated or
eroded at random, and a draw whose IoU with the truth falls in the asked range is kept.

batch: {"masks": Bool[B, Q, H, W], "labels": Long[B, Q] (-1: an empty slot), and either
"features": Float[B, D, h, w] (the frozen backbone's, computed once) or "images" with a `backbone`}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.mask_adapter import MaskAdapterOutput, mask_consistency_loss, mask_pool, text_logits
from .base import ObjectiveOutput, as_metric


def _shift(masks: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """masks: Bool[N, H, W]; dy, dx: Long[N] -> each mask moved by (dy, dx), what leaves the canvas lost."""
    n, H, W = masks.shape
    ys = torch.arange(H, device=masks.device) - dy[:, None]  # [N, H], the source row of each row
    xs = torch.arange(W, device=masks.device) - dx[:, None]
    inside = ((ys >= 0) & (ys < H))[:, :, None] & ((xs >= 0) & (xs < W))[:, None, :]
    rows = torch.arange(n, device=masks.device)[:, None, None]
    return masks[rows, ys.clamp(0, H - 1)[:, :, None], xs.clamp(0, W - 1)[:, None, :]] & inside


def _grow(m: torch.Tensor) -> torch.Tensor:
    """m: Bool[N, H, W] -> dilated by a 3x3 square: OR with the neighbours along rows, then columns
    (boolean ORs of slices: on a CPU several times faster than a max pool over floats)."""
    v = m.clone()
    v[:, 1:] |= m[:, :-1]
    v[:, :-1] |= m[:, 1:]
    h = v.clone()
    h[:, :, 1:] |= v[:, :, :-1]
    h[:, :, :-1] |= v[:, :, 1:]
    return h


def _shrink(m: torch.Tensor) -> torch.Tensor:
    """m: Bool[N, H, W] -> eroded by a 3x3 square, the outside of the canvas counting as background."""
    out = ~_grow(~m)
    out[:, [0, -1], :] = False
    out[:, :, [0, -1]] = False
    return out


def _morph(masks: torch.Tensor, radius: torch.Tensor, most: int) -> torch.Tensor:
    """masks: Bool[N, H, W]; radius: Long[N] in [-most, most] -> each dilated by a (2r+1)-square where
    r > 0, eroded by one where r < 0. r 3x3 steps make a (2r+1)-square; every mask takes every step
    and keeps its own, so nothing is read from the device to group them."""
    grown = shrunk = out = masks
    for r in range(1, most + 1):
        grown, shrunk = _grow(grown), _shrink(shrunk)
        out = torch.where((radius == r)[:, None, None], grown, out)
        out = torch.where((radius == -r)[:, None, None], shrunk, out)
    return out


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a, b: Bool[..., H, W] -> Float[...]: |a & b| / |a | b| (0 where both are empty)."""
    inter = (a & b).flatten(-2).sum(-1).float()
    union = (a | b).flatten(-2).sum(-1).float()
    return inter / union.clamp_min(1)


def jitter_masks(masks: torch.Tensor, iou: tuple[float, float] = (0.7, 0.95), *,
                 generator: torch.Generator | None = None, tries: int = 16, shift: int = 4,
                 radius: int = 2) -> torch.Tensor:
    """masks: Bool[B, Q, H, W] -> Bool[B, Q, H, W], each a perturbed copy of its mask: `tries`
    candidates per mask (a dilation or erosion of up to `radius` pixels, then a shift of up to
    `shift` pixels each way, both scaled by one uniform strength per candidate), one drawn
    uniformly among those whose IoU with the mask lies in `iou`; where none does, the one nearest
    the range. An empty mask stays empty."""
    lo, hi = iou
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"iou must be (low, high) with 0 <= low <= high <= 1, got {iou}")
    if masks.ndim != 4 or masks.dtype != torch.bool:
        raise ValueError(f"masks must be Bool[B, Q, H, W], got {masks.dtype} of shape {tuple(masks.shape)}")
    if tries < 1 or shift < 0 or radius < 0:
        raise ValueError(f"need tries >= 1, shift >= 0, radius >= 0; got {tries}, {shift}, {radius}")
    B, Q, H, W = masks.shape
    n = B * Q * tries
    # one strength per candidate scales its shift and radius, so that small and large moves are
    # both tried: small objects need small ones to stay in range, large ones large moves to leave it
    strength = torch.rand(n, generator=generator)
    draws = ((torch.rand(2, n, generator=generator) * 2 - 1) * strength * (shift + 0.5)).round().long()
    radii = ((torch.rand(n, generator=generator) * 2 - 1) * strength * (radius + 0.5)).round().long()
    noise = torch.rand(B, Q, tries, generator=generator)
    dev = masks.device
    base = masks.unsqueeze(2).expand(B, Q, tries, H, W).reshape(n, H, W)
    cand = _shift(_morph(base, radii.to(dev), radius), draws[0].to(dev), draws[1].to(dev)).view(B, Q, tries, H, W)
    score = mask_iou(cand, masks.unsqueeze(2))  # [B, Q, tries]
    miss = (lo - score).clamp_min(0) + (score - hi).clamp_min(0)  # 0 inside the range
    # inside the range: a uniform pick (noise in [0, 1)); outside: ranked below, nearest first
    rank = torch.where(miss == 0, noise.to(dev), -1 - miss)
    best = rank.argmax(-1)  # [B, Q]
    out = cand.gather(2, best.view(B, Q, 1, 1, 1).expand(B, Q, 1, H, W)).squeeze(2)
    return out & masks.flatten(-2).any(-1)[..., None, None]


class PooledProjection(nn.Module):
    """The mask-pooling baseline given a trainable linear map (identity at the start, so before any
    step it is training-free mask pooling). (features [B, D, h, w], masks [B, Q, H, W]) -> [B, Q, D]."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        with torch.no_grad():
            self.proj.weight.copy_(torch.eye(dim))
            self.proj.bias.zero_()

    def forward(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self.proj(mask_pool(features, masks))


class MaskClassification(nn.Module):
    """Trains `head` ((features, masks) -> [B, Q, D] or MaskAdapterOutput) to classify masks against
    the frozen `text` embeddings [C, D] by cosine times `scale`. jitter_iou: the IoU range of the
    perturbed masks (the paper's match threshold is IoU > 0.7); consistency: the weight of the
    mask-consistency loss (0 turns it off); backbone: images [B, 3, H, W] -> features, frozen."""

    def __init__(self, head: nn.Module, text: torch.Tensor, scale: float, *, backbone: nn.Module | None = None,
                 jitter_iou: tuple[float, float] = (0.7, 0.95), consistency: float = 1.0):
        super().__init__()
        if text.ndim != 2:
            raise ValueError(f"text must be [C, D], got shape {tuple(text.shape)}")
        if consistency < 0:
            raise ValueError(f"consistency must be >= 0, got {consistency}")
        self.head, self.backbone = head, backbone
        self.register_buffer("text", text.detach().clone())
        self.scale, self.jitter_iou, self.consistency = float(scale), tuple(jitter_iou), float(consistency)
        if backbone is not None:
            backbone.requires_grad_(False)
            backbone.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.backbone is not None:
            self.backbone.eval()  # frozen: its norms and dropouts stay as they were trained
        return self

    def features(self, batch: dict) -> torch.Tensor:
        if "features" in batch:
            return batch["features"]
        if self.backbone is None:
            raise ValueError("the batch has no 'features' and the objective no backbone to compute them")
        with torch.no_grad():
            return self.backbone(batch["images"])

    def embed(self, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        out = self.head(features, masks)
        return out.embeddings if isinstance(out, MaskAdapterOutput) else out

    def logits(self, features: torch.Tensor, masks: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """[B, Q, C] cosine logits against `text` (default: the training text embeddings)."""
        return text_logits(self.embed(features, masks), self.text if text is None else text, self.scale)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        masks, labels = batch["masks"], batch["labels"]
        feats = self.features(batch)
        jittered = jitter_masks(masks, self.jitter_iou, generator=generator)
        Q = masks.shape[1]
        emb = self.embed(feats, torch.cat([masks, jittered], dim=1))  # one pass over both: [B, 2Q, D]
        logits = text_logits(emb, self.text, self.scale)
        both = torch.cat([labels, labels], dim=1)
        ce = F.cross_entropy(logits.flatten(0, 1), both.flatten(), ignore_index=-1)
        valid = labels >= 0
        cos = mask_consistency_loss(emb[:, Q:], emb[:, :Q], valid)
        right = (logits.argmax(-1) == both).float()
        w = valid.float()
        metrics = {"ce": as_metric(ce, ce), "consistency": as_metric(cos, ce),
                   "acc_gt": as_metric((right[:, :Q] * w).sum() / w.sum().clamp_min(1), ce),
                   "acc_jitter": as_metric((right[:, Q:] * w).sum() / w.sum().clamp_min(1), ce)}
        return ObjectiveOutput(ce + self.consistency * cos, metrics)
