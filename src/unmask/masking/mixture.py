"""A mixture of maskers: each row is masked by one of several maskers, drawn with fixed weights.

Image generators train on more than one kind of mask so that one network serves generation (random
masks) and editing (contiguous regions): MaskGIT (Chang et al. 2022, arXiv:2202.04200) inpaints and
outpaints with a network trained on random masks, and MAGE (Li et al. 2023, arXiv:2211.09117) and
BEiT's block-wise masks (Bao et al. 2022, arXiv:2106.08254) hide contiguous regions. A component
masks only its own segments: a row drawn by `BlockMask(("pixels",))` hides no label token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layout import Layout
from .base import Masker, ratio_per_segment


@dataclass(frozen=True)
class MixtureMask(Masker):
    """`maskers[k]` masks a row with probability `weights[k]` (default: equal). The ratio is given
    per segment of the union of the components' segments, and each component gets its own columns,
    and its own rows of the ratio and of any per-row context."""

    maskers: tuple[Masker, ...] = ()
    weights: tuple[float, ...] | None = None

    def __post_init__(self):
        if not self.maskers:
            raise ValueError("MixtureMask needs at least one masker")
        if self.weights is not None and (len(self.weights) != len(self.maskers) or min(self.weights) < 0
                                         or sum(self.weights) <= 0):
            raise ValueError(f"weights must be {len(self.maskers)} values >= 0 with a positive sum, got {self.weights}")

    def eligible(self, layout: Layout):
        if self.segments is not None:
            return super().eligible(layout)
        names = {s.name for m in self.maskers for s, _ in m.eligible(layout)}
        return [(s, layout.slice(s.name)) for s in layout.segments if s.name in names]

    def __call__(self, layout: Layout, batch_size: int, *, ratio=0.5, generator=None, **context):
        chosen = [s.name for s, _ in self.eligible(layout)]
        ratios = ratio_per_segment(ratio, batch_size, len(chosen))  # [B, S]
        weights = torch.tensor(self.weights or [1.0] * len(self.maskers), dtype=torch.float64)
        pick = torch.multinomial(weights, batch_size, replacement=True, generator=generator)  # [B]
        mask = torch.zeros(batch_size, layout.n, dtype=torch.bool)
        for k, masker in enumerate(self.maskers):
            rows = torch.nonzero(pick == k).squeeze(1)  # each component draws for its own rows only
            if len(rows) == 0:
                continue
            columns = [chosen.index(s.name) for s, _ in masker.eligible(layout) if s.name in chosen]
            mine = {key: v[rows] if torch.is_tensor(v) and v.shape[:1] == (batch_size,) else v
                    for key, v in context.items()}
            mask[rows] = masker(layout, len(rows), ratio=ratios[rows][:, columns], generator=generator, **mine)
        return mask
