"""I2P-MAE (Zhang et al., CVPR 2023, "Learning 3D Representations from 2D Pre-trained Models via
Image-to-Point Masked Autoencoders", arXiv:2212.06785): Point-MAE taught by a 2D network that has
seen the cloud's depth views. Two schemes:

- 2D-guided masking: which groups stay visible is drawn from softmax(2D saliency), so the salient
  ones are more likely visible (`masking/guided.py`, the saliency from `nn/view_features.py`);
- 2D-semantic reconstruction: after the decoder, each *visible* group regresses the 2D features
  back-projected to it (its views' features, concatenated), while each hidden group is rebuilt in
  3D as in Point-MAE:

    loss = mean Chamfer-L2 over hidden groups + weight * mean squared error over visible groups' 2D features

Weight 1 as in the release (`runner_pretrain.py`: loss_3d + loss_2d, `nn.MSELoss`). The decoder
reads every group (visible ones and mask tokens, in grid order), as the release's decoder does; its
outputs at the hidden groups go to Point-MAE's point head, those at the visible groups to a linear
2D head.

batch: the Point-MAE batch (`PointEncoder.batch_groups`) plus "saliency": Float[B, G] and
"image_features": Float[B, G, F], computed once per cloud (the clouds and the 2D network are fixed).
The release's targets are the 2D features of every point of a visible group (k x 3 views x C per
token); here the group's centre reads them (3 views x C per token).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..masking import Masker, RandomMask
from ..masking.guided import GuidedMask
from ..nn.chamfer import chamfer_l2
from ..nn.point_mae import PointEncoder
from ..nn.visible import gather_tokens
from .base import ObjectiveOutput, as_metric
from .point_mae import POINT_MAE_RATIO, PointMAE


def visible_feature_mse(pred: torch.Tensor, target: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the visible groups' 2D features (over groups and channels).
    pred: Float[B, K, F] at ids_keep; target: Float[B, G, F]; ids_keep: Long[B, K]."""
    return F.mse_loss(pred.float(), gather_tokens(target, ids_keep).float())


class I2PMAE(PointMAE):
    """`image_dim`: F, the width of the 2D targets. `guided=False` draws the mask uniformly (the
    2D-semantic term alone); `image_weight=0` leaves the guided mask alone."""

    def __init__(self, encoder: PointEncoder, image_dim: int, *, ratio: float = POINT_MAE_RATIO,
                 image_weight: float = 1.0, temperature: float = 1.0, guided: bool = True,
                 masker: Masker | None = None):
        if image_weight < 0:
            raise ValueError(f"the 2D term's weight must be >= 0, got {image_weight}")
        if image_dim < 1:
            raise ValueError(f"image_dim must be >= 1, got {image_dim}")
        masker = masker or (GuidedMask(temperature=temperature) if guided else RandomMask())
        super().__init__(encoder, masker, ratio=ratio)
        self.image_head = nn.Linear(encoder.config.decoder_dim, image_dim)
        self.image_dim = image_dim
        self.image_weight = image_weight
        self.temperature = temperature

    def draw_mask(self, batch_size: int, generator, device=None, **context) -> torch.Tensor:
        """Bool[B, G], True = hidden, in host memory; `saliency` (Float[B, G]) in the context for the guided mask."""
        mask = self.masker(self.layout, batch_size, ratio=self.ratio, generator=generator, **context)
        return mask.to(device, non_blocking=True) if device is not None else mask

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        groups = self.encoder.batch_groups(batch)
        target_2d = batch["image_features"]  # [B, G, F]
        if target_2d.shape != (*groups.centres.shape[:2], self.image_dim):
            raise ValueError(f"image_features must be [B, G, {self.image_dim}], got {tuple(target_2d.shape)}")
        mask = self.draw_mask(groups.points.shape[0], generator, saliency=batch["saliency"])
        encoded = self.encoder(groups, mask)
        index = encoded.index
        h = self.decoder.decoder(encoded, every=True, pos=self.decoder.pos(groups.centres))  # [B, G, Dd]
        hidden = gather_tokens(h, index.ids_hidden)  # [B, M, Dd]
        points = self.decoder.head(hidden).view(*hidden.shape[:2], self.encoder.group_size, 3)
        chamfer = chamfer_l2(points, gather_tokens(groups.points, index.ids_hidden)).mean()
        semantic = visible_feature_mse(self.image_head(gather_tokens(h, index.ids_keep)), target_2d, index.ids_keep)
        loss = chamfer + self.image_weight * semantic
        # the share of the guided mask's p that stays visible: K / G when p is uniform (or the mask random)
        probs = torch.softmax(batch["saliency"].float() / self.temperature, dim=-1)  # [B, G]
        kept_p = (probs * ~mask.to(probs.device, non_blocking=True)).sum(1).mean()
        return ObjectiveOutput(loss, {"loss": loss.detach(), "chamfer": chamfer.detach(),
                                      "semantic_2d": semantic.detach(),
                                      "visible_p_mass": as_metric(kept_p, loss)})
