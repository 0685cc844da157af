"""Point-CMAE (Ren et al., ACCV 2024, P58): Point-MAE with an explicit contrast inside it. Each cloud
is masked twice (no other augmentation); one weight-shared encoder reads both visible sets, two
decoders of the same structure reconstruct the hidden groups of their own view, and for every group
hidden in *both* views the two decoders' features should agree:

    loss = CD(view 1) + CD(view 2) + weight * mean over co-hidden groups of (1 - cos(f1, f2))

The second mask is a `TwinMask` of the first: independent of it by default, as in the released code
(Amazingren/Point-CMAE `models/Point_CMAE.py`, two calls of the same random masker), or with a set
share of shared hidden groups (`overlap`). The features are each decoder's output before its point
head. The release averages 1 - cos over every pair (co-hidden group of view 1, any group of view 2);
this follows the paper's sentence instead: a group is compared with itself in the other view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..masking import Masker, TwinMask
from ..nn.point_mae import PointDecoder, PointEncoder
from .base import ObjectiveOutput
from .mae import masked_mean
from .point_mae import POINT_MAE_RATIO, PointMAE


def place(features: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    """features: Float[B, M, D] at places ids: Long[B, M] -> Float[B, n, D], zeros elsewhere."""
    out = features.new_zeros(features.shape[0], n, features.shape[-1])
    return out.scatter(1, ids.unsqueeze(-1).expand_as(features), features)


def co_hidden_contrast(first: torch.Tensor, second: torch.Tensor, both: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(first, second) over the places where `both` is True (0 where none is).
    first, second: Float[B, G, D]; both: Bool[B, G]."""
    return masked_mean(1 - F.cosine_similarity(first.float(), second.float(), dim=-1), both)


class PointCMAE(PointMAE):
    def __init__(self, encoder: PointEncoder, masker: Masker | None = None, *, ratio: float = POINT_MAE_RATIO,
                 overlap: float | None = None, weight: float = 1.0):
        super().__init__(encoder, masker, ratio=ratio)
        if weight < 0:
            raise ValueError(f"the contrast weight must be >= 0, got {weight}")
        self.twin = TwinMask(overlap=overlap)
        self.second_decoder = PointDecoder(encoder.config, encoder.group_size)
        self.weight = weight

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        groups = self.encoder.batch_groups(batch)
        b, n, device = groups.points.shape[0], self.layout.n, groups.points.device
        first = self.draw_mask(b, generator)  # masks on the host: the encoder indexes them there
        second = self.twin(self.layout, b, ratio=self.ratio, generator=generator, first=first)
        rec1 = self.reconstruction(groups, first)
        rec2 = self.reconstruction(groups, second, decoder=self.second_decoder)
        f1 = place(rec1.decoded.features, rec1.encoded.index.ids_hidden, n)
        f2 = place(rec2.decoded.features, rec2.encoded.index.ids_hidden, n)
        both = (first & second).to(device, non_blocking=True)
        contrast = co_hidden_contrast(f1, f2, both)
        loss = rec1.loss + rec2.loss + self.weight * contrast
        return ObjectiveOutput(loss, {"loss": loss.detach(), "chamfer": (rec1.loss.detach() + rec2.loss.detach()) / 2,
                                      "contrast": contrast.detach(), "co_hidden": both.float().sum(1).mean()})
