"""Point-MAE (Pang et al., ECCV 2022, P52): masked autoencoding of point clouds. A cloud is cut into G
groups (FPS centres, k nearest points, relative to the centre); 60% of the groups are hidden at
random, the encoder reads the visible ones, and the decoder predicts the k points of each hidden
group; the loss is the Chamfer distance (L2) between predicted and true point sets of the hidden
groups, averaged over every hidden group of the batch.

batch: {"points": Float[B, N, 3]} (or pre-grouped, see `PointEncoder.batch_groups`) -> ObjectiveOutput.
The masker is any exact-count masker over the `seq` layout of G groups (`RandomMask` by default:
Point-MAE's `mask_type: rand`).

Point-MAE also augments each batch (random scale and translation); the clouds of `data/points.py`
are already drawn with random scales and rotations, so nothing is added here.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..masking import Masker, RandomMask
from ..nn.chamfer import chamfer_l2
from ..nn.mae import Encoded
from ..nn.point_groups import PointGroups
from ..nn.point_mae import DecodedGroups, PointDecoder, PointEncoder
from ..nn.visible import gather_tokens
from .base import ObjectiveOutput

POINT_MAE_RATIO = 0.6  # Point-MAE's cfgs/pretrain.yaml: mask_ratio


class PointReconstruction(NamedTuple):
    loss: torch.Tensor  # scalar: mean Chamfer distance over the hidden groups
    errors: torch.Tensor  # Float[B, M]: each hidden group's Chamfer distance, at index.ids_hidden
    encoded: Encoded
    decoded: DecodedGroups


class PointMAE(nn.Module):
    """Point-MAE's objective around a drop-hidden `PointEncoder` and one `PointDecoder`."""

    def __init__(self, encoder: PointEncoder, masker: Masker | None = None, *, ratio: float = POINT_MAE_RATIO):
        super().__init__()
        if encoder.config.hide != "drop":
            raise ValueError(f"Point-MAE's encoder reads the visible groups only (hide='drop'), got "
                             f"{encoder.config.hide!r}")
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"ratio must lie in (0, 1) so that some groups are hidden and some visible, got {ratio}")
        self.encoder = encoder
        self.decoder = PointDecoder(encoder.config, encoder.group_size)
        self.masker = masker or RandomMask()
        self.ratio = ratio

    @property
    def layout(self):
        return self.encoder.layout

    def draw_mask(self, batch_size: int, generator, device=None) -> torch.Tensor:
        """Bool[B, G], True = hidden: on the host, where the masker draws it (the encoder indexes it
        there without waiting for the device), unless `device` asks for a copy."""
        mask = self.masker(self.layout, batch_size, ratio=self.ratio, generator=generator)
        return mask.to(device, non_blocking=True) if device is not None else mask

    def reconstruction(self, groups: PointGroups, mask: torch.Tensor, target: torch.Tensor | None = None,
                       decoder: PointDecoder | None = None) -> PointReconstruction:
        """Encode the visible groups, decode the hidden ones (with `decoder`, default the first),
        and score them against `target` (Float[B, G, k, 3], default the groups' own points)."""
        target = groups.points if target is None else target
        encoded = self.encoder(groups, mask)
        decoded = (decoder or self.decoder)(encoded, groups.centres)
        truth = gather_tokens(target, encoded.index.ids_hidden)  # [B, M, k, 3]
        errors = chamfer_l2(decoded.points, truth)
        loss = errors.mean() if errors.numel() else decoded.points.sum() * 0.0
        return PointReconstruction(loss, errors, encoded, decoded)

    def features(self, points) -> torch.Tensor:
        """Float[B, N, 3] or PointGroups -> Float[B, G, D]: the encoder's tokens, every group visible."""
        return self.encoder.features(points)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        groups = self.encoder.batch_groups(batch)
        mask = self.draw_mask(groups.points.shape[0], generator)
        rec = self.reconstruction(groups, mask)
        return ObjectiveOutput(rec.loss, {"loss": rec.loss.detach(), "chamfer": rec.loss.detach()})
