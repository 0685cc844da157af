"""Point-BERT (Yu et al., CVPR 2022, P60): masked point modeling. A tokenizer gives every point group
a discrete code; the groups' embeddings enter the encoder with the hidden ones replaced by a mask
embedding (BERT-style, `hide="replace"`: hidden centres keep their positions), and a linear head
predicts the code of each hidden group; the loss is the cross-entropy over hidden groups.

- tokenizer: `nn/point_tokenizer.py` (k-means over patch moments, in place of Point-BERT's dVAE);
- masking: a share drawn uniformly in [0.25, 0.45] at each step (Point-BERT's range), the same for
  every cloud of the batch (the encoder needs one hidden count per batch), groups chosen by the
  masker (`RandomMask` by default; Point-BERT masks blocks of neighbouring centres);
- Point-BERT's auxiliary MoCo loss on mixed point clouds is left out.

batch: {"points": Float[B, N, 3]} (or pre-grouped, see `PointEncoder.batch_groups`) -> ObjectiveOutput.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..masking import Masker, RandomMask
from ..nn.heads import LogitsHead
from ..nn.point_groups import PointGroups
from ..nn.point_mae import PointEncoder
from ..nn.point_tokenizer import PointTokenizer
from .base import ObjectiveOutput, as_metric
from .masked_token import hidden_ce_mean

POINT_BERT_RATIO = (0.25, 0.45)  # Point-BERT's mask_ratio range


class PointBERT(nn.Module):
    def __init__(self, encoder: PointEncoder, tokenizer: PointTokenizer, masker: Masker | None = None, *,
                 ratio: tuple[float, float] = POINT_BERT_RATIO):
        super().__init__()
        if encoder.config.hide != "replace":
            raise ValueError(f"Point-BERT's encoder reads every group, hidden ones as a mask embedding "
                             f"(hide='replace'), got {encoder.config.hide!r}")
        lo, hi = ratio
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"ratio must be a range 0 < lo <= hi < 1, got {ratio}")
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.masker = masker or RandomMask()
        self.ratio = (lo, hi)
        self.head = LogitsHead(encoder.config.dim, tokenizer.codes)

    @property
    def layout(self):
        return self.encoder.layout

    def draw_mask(self, batch_size: int, generator, device=None) -> torch.Tensor:
        """Bool[B, G], True = hidden; one share in [lo, hi] for the whole batch. On the host, where
        the masker draws it (the encoder indexes it there), unless `device` asks for a copy."""
        lo, hi = self.ratio
        r = lo + (hi - lo) * torch.rand((), generator=generator, dtype=torch.float64)  # a host tensor, never read
        mask = self.masker(self.layout, batch_size, ratio=r, generator=generator)
        return mask.to(device, non_blocking=True) if device is not None else mask

    def prediction(self, groups: PointGroups, mask: torch.Tensor, codes: torch.Tensor | None = None):
        """(loss, accuracy) of predicting `codes` (Long[B, G], default the tokenizer's) at hidden
        groups: the mean cross-entropy over hidden groups (0 when none is) and the share predicted
        right (nan when none is), both 0-dim tensors."""
        codes = self.tokenizer(groups.points) if codes is None else codes
        tokens = self.encoder(groups, mask).tokens[:, self.encoder.prefix :]  # [B, G, D]
        hidden = mask.to(tokens.device, non_blocking=True)
        logits = self.head(tokens, where=hidden)  # [M, V]
        targets = codes[hidden]
        loss = hidden_ce_mean(F.cross_entropy(logits.float(), targets, reduction="none"), hidden)
        with torch.no_grad():
            accuracy = (logits.argmax(-1) == targets).float().mean()
        return loss, accuracy

    def features(self, points) -> torch.Tensor:
        """Float[B, N, 3] or PointGroups -> Float[B, G, D]: the encoder's tokens, every group visible."""
        return self.encoder.features(points)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        groups = self.encoder.batch_groups(batch)
        mask = self.draw_mask(groups.points.shape[0], generator)
        loss, accuracy = self.prediction(groups, mask)
        return ObjectiveOutput(loss, {"loss": loss.detach(), "code_accuracy": accuracy,
                                      "hidden_share": as_metric(mask.float().mean(), loss)})
