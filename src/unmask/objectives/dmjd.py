"""Disjoint Masking with Joint Distillation (DMJD, Ma et al. 2023, P72): each image is seen through
two masked views whose visible sets are disjoint, so one step reconstructs every token at least
once; and a visible branch also regresses the targets at the visible tokens (joint distillation).

- views: a random mask and `DisjointViewMask` (same count; with r >= 0.5 and pred_ratio 1 the views
  together hide every token), stacked along the batch;
- masked branch: MAE's decoder and loss on the hidden patches of both views;
- visible branch: a 3-layer MLP on the encoder's visible tokens regresses the same targets at the
  visible places, smooth-L1 with beta 2 (DMJD's visible loss);
- total = L_mim + theta * L_vis (theta = 1).

DMJD's targets are HOG features; here the pixel targets of the MAE objective (norm-pix if set).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..masking import DisjointViewMask, Masker
from ..nn.mae import MaskedAutoencoder
from ..nn.visible import gather_tokens
from .base import ObjectiveOutput, as_metric
from .mae import MaskedAutoencoding, patch_mse

DMJD_BETA = 2.0  # smooth-L1 beta of DMJD's visible loss


class DisjointMaskingJointDistillation(MaskedAutoencoding):
    def __init__(self, model: MaskedAutoencoder, masker: Masker | None = None, *, ratio: float = 0.75,
                 norm_pix: bool = True, theta: float = 1.0, pred_ratio: float = 1.0):
        super().__init__(model, masker, ratio=ratio, norm_pix=norm_pix)
        dim, out = model.config.dim, model.config.patch_dim
        self.second_view = DisjointViewMask(pred_ratio=pred_ratio)
        self.theta = theta
        self.visible_head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU(),
                                          nn.Linear(dim, out))

    def visible_loss(self, tokens: torch.Tensor, target: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """tokens: encoder tokens at the visible places [B, K, D]; target [B, L, P]."""
        pred = self.visible_head(tokens)
        return F.smooth_l1_loss(pred, gather_tokens(target, ids_keep), beta=DMJD_BETA)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        images = batch["images"]
        b = images.shape[0]
        first = self.draw_mask(b, generator)
        second = self.second_view(self.layout, b, ratio=self.ratio, generator=generator, first=first)
        masks = torch.cat([first, second])  # [2B, L], on the host: the encoder indexes it there
        both = torch.cat([images, images])
        target = self.targets(both)
        out = self.model(both, masks)
        mim = patch_mse(out.pred, gather_tokens(target, out.encoded.index.ids_hidden)).mean()
        vis = self.visible_loss(out.encoded.tokens[:, self.model.encoder.prefix :], target,
                                out.encoded.index.ids_keep)
        loss = mim + self.theta * vis
        covered = as_metric((first | second).float().mean(), loss)
        return ObjectiveOutput(loss, {"loss": loss.detach(), "reconstruction": mim.detach(), "visible": vis.detach(),
                                      "covered": covered})
