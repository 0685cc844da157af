"""MMM's training rule (Pinyoanuntapong et al. 2024, "MMM: Generative Masked Motion Model",
arXiv:2312.03596): each motion hides exactly round(r n) of its n motion tokens, r ~ U(0.5, 1) per row,
and the cross-entropy reads every motion token, hidden or not.

As exitudio/MMM's `train_t2m_trans.py`: the ratio is uniform on [`low`, 1] (0.5 there), not a cosine
schedule; the tokens to hide are a uniform random choice (a random permutation there; here the exact-count
`RandomMask` over the motion segment, so n counts the motion tokens of every body-part stream together,
and the condition prefix is never hidden); the loss is the mean cross-entropy over all motion tokens
(`score_all=True`: with fixed-length windows its per-sequence mean then batch mean is the plain mean) or,
as MaskGIT, over the hidden ones only (`score_all=False`). MMM's optional random-code pre-corruption
(`pkeep`) is off by default there and left out here.

Sampling is MaskGIT's confidence order (`sampling.MaskGITSampler`); editing (in-betweening, outpainting,
body-part edits) is a canvas with mask ids only where the motion is to be made.
"""

from __future__ import annotations

import torch
from torch import nn

from ..masking import Masker
from .masked_token import MaskedTokenModeling


class MMMTokenModeling(MaskedTokenModeling):
    """batch: {"tokens": Long[B, N]} -> ObjectiveOutput; `masker` names the motion segment(s)."""

    def __init__(self, model: nn.Module, masker: Masker, *, low: float = 0.5, score_all: bool = True, **options):
        if not 0 < low <= 1:
            raise ValueError(f"low must lie in (0, 1], got {low}")
        super().__init__(model, masker, **options)
        self.low, self.score_all = low, score_all
        scored = torch.zeros(self.layout.n, dtype=torch.bool)
        for _, where in self.masker.eligible(self.layout):
            scored[where] = True
        self.motion_places = scored  # Bool[N], host: the masker's mask lives on the host too

    def draw_ratio(self, batch_size: int, generator) -> torch.Tensor:
        """Float64[B]: r ~ U(low, 1)."""
        return self.low + (1.0 - self.low) * torch.rand(batch_size, generator=generator, dtype=torch.float64)

    def scored(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.motion_places.expand_as(hidden) if self.score_all else hidden
