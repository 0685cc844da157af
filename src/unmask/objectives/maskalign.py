"""MaskAlign, "Stare at What You See" (Xue et al., CVPR 2023, P33): no decoder, no mask tokens and no
pixel target; the student encodes only the visible tokens and aligns its features with a frozen
teacher's features of the *whole* image at those same places.

- dynamic alignment: the student's per-block outputs are mixed by a learnable (teacher layers x
  student layers) matrix, initialised to the identity plus 0.01 (MaskAlign's "linear" fusion), and a
  LayerNorm + Linear head per teacher layer maps them to the teacher's width;
- targets: the teacher's per-block tokens at the visible places, whitened by a parameter-free
  LayerNorm (MaskAlign's `target_norm="whiten"`);
- loss: MSE per aligned layer, averaged over layers ("mean" weights). Random masks (MaskAlign also
  offers teacher-attention masks).

batch: {"images": Float[B, C, H, W]}; the teacher is a `MaskedEncoder` (here trained inside the recipe).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..masking import Masker, RandomMask
from ..nn.mae import MAEConfig, MaskedEncoder, init_mae
from ..nn.visible import gather_tokens
from .base import ObjectiveOutput, as_metric
from .mimic import frozen, teacher_tokens


class MaskAlign(nn.Module):
    def __init__(self, cfg: MAEConfig, teacher: MaskedEncoder, masker: Masker | None = None, *,
                 ratio: float = 0.75):
        super().__init__()
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"MaskAlign ratio must lie in [0, 1), got {ratio}")
        self.encoder = MaskedEncoder(cfg)
        init_mae(self.encoder)
        self.teacher = frozen(teacher)
        self.masker = masker or RandomMask()
        self.ratio = ratio
        s, t = cfg.depth, len(teacher.transformer.blocks)
        fusion = torch.full((t, s), 0.01)
        fusion[torch.arange(min(s, t)) + max(t - s, 0), torch.arange(min(s, t)) + max(s - t, 0)] += 1.0
        self.fusion = nn.Parameter(fusion)
        self.heads = nn.ModuleList(nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, teacher.cfg.dim))
                                   for _ in range(t))

    @property
    def layout(self):
        return self.encoder.cfg.layout

    def draw_mask(self, batch_size: int, generator, device=None) -> torch.Tensor:
        """Bool[B, L], True = hidden: on the host, where the masker draws it, unless `device` asks."""
        mask = self.masker(self.layout, batch_size, ratio=self.ratio, generator=generator)
        return mask.to(device, non_blocking=True) if device is not None else mask

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images).tokens[:, self.encoder.prefix :]

    def alignment_loss(self, student: list[torch.Tensor], teacher: list[torch.Tensor],
                       ids_keep: torch.Tensor) -> torch.Tensor:
        """student: S x [B, K, D] visible tokens; teacher: T x [B, L, Dt] whole-image tokens."""
        stacked = torch.stack(student)  # [S, B, K, D]
        mixed = torch.einsum("ts,sbkd->tbkd", self.fusion, stacked)
        losses = [F.mse_loss(head(m), gather_tokens(target, ids_keep))
                  for head, m, target in zip(self.heads, mixed, teacher, strict=True)]
        return torch.stack(losses).mean()

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        images = batch["images"]
        mask = self.draw_mask(images.shape[0], generator)
        out = self.encoder(images, mask, return_layers=True)
        student = [h[:, self.encoder.prefix :] for h in out.layers]
        loss = self.alignment_loss(student, teacher_tokens(self.teacher, images, layers=True), out.index.ids_keep)
        return ObjectiveOutput(loss, {"loss": loss.detach(), "hidden_share": as_metric(mask.float().mean(), loss)})
