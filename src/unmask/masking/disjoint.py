"""A second masked view whose visible tokens avoid the first view's (DMJD, Ma et al. 2023, P72;
LUT, Kim et al. ECCV 2024, P1): two views of one image that see different tokens, so together they
reconstruct more of it than one view does.

Data-driven: the first view's mask comes from the context as `first: Bool[B, N]`. The second view
hides the same count, round(ratio * L) per segment: `n_extra = int(min(pred_ratio - r, r) * L)` of
the first view's *visible* tokens (DMJD's `num_extra`, r = that row's ratio) and the rest from the
first view's hidden ones, each part chosen uniformly. With r >= 0.5 and pred_ratio = 1, every token
is hidden in at least one view and the two visible sets are disjoint (LUT's second view, visible =
ids[len_keep : 2 len_keep] of one shuffle, is the same law).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Masker, hide_top, uniform


@dataclass(frozen=True)
class DisjointViewMask(Masker):
    pred_ratio: float = 1.0  # share of tokens that the two views reconstruct together
    context_key: str = "first"

    def __post_init__(self):
        if not 0.0 <= self.pred_ratio <= 1.0:
            raise ValueError(f"DisjointViewMask pred_ratio must lie in [0, 1], got {self.pred_ratio}")

    def scores(self, segment, counts, generator, **context):
        if self.context_key not in context:
            raise ValueError(f"DisjointViewMask needs `{self.context_key}` (the first view, Bool[B, L]) in the context")
        first = torch.as_tensor(context[self.context_key]).cpu()
        b, n = counts.shape[0], segment.length
        if first.shape != (b, n) or first.dtype != torch.bool:
            raise ValueError(f"{self.context_key} must be Bool[{b}, {n}] for segment {segment.name!r}, "
                             f"got {first.dtype} {tuple(first.shape)}")
        extra = torch.tensor([int(math.floor(min(self.pred_ratio - c / n, c / n) * n + 1e-9)) if c else 0
                              for c in counts.tolist()]).clamp(min=0)
        extra = torch.minimum(extra, (~first).sum(1))
        # among the first view's visible tokens, `extra` chosen at random go first, then its hidden ones
        chosen = hide_top(uniform((b, n), generator) - first.double() * 2, extra)
        rest = torch.where(first, uniform((b, n), generator), torch.full((b, n), -1.0, dtype=torch.float64))
        return torch.where(chosen, 2.0 + uniform((b, n), generator), rest)
