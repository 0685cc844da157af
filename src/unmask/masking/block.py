"""BEiT block-wise masking (Bao et al. 2022), topped up to the exact count.

Rectangles of random area and aspect ratio are placed on the grid until the next one would overrun
the budget; the remaining count is filled with uniformly random tokens, so every row hides exactly
round(ratio * h * w). Works on `grid` and `streams` segments (2-D), and on each frame of a video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import Masker, uniform


@dataclass(frozen=True)
class BlockMask(Masker):
    min_area: int = 4  # BEiT: 16 on a 14x14 grid; scaled for small grids
    min_aspect: float = 0.3
    max_tries: int = 10

    def scores(self, segment, counts, generator, **context):
        if segment.kind not in ("grid", "streams"):
            raise ValueError(f"BlockMask needs a grid or streams segment, {segment.name!r} is {segment.kind}")
        h, w = segment.shape
        out = uniform((counts.shape[0], h * w), generator)  # top-up noise in [0, 1)
        for b, budget in enumerate(counts.tolist()):
            covered = self._blocks(h, w, budget, generator)
            out[b] += 1.0 + covered.flatten().double()  # blocks outrank every top-up token
        return out

    def _blocks(self, h: int, w: int, budget: int, generator) -> torch.Tensor:
        covered = torch.zeros(h, w, dtype=torch.bool)
        log_lo, log_hi = math.log(self.min_aspect), math.log(1 / self.min_aspect)
        while int(covered.sum()) < budget:
            left_over = budget - int(covered.sum())
            added = 0
            for _ in range(self.max_tries):
                u = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
                area = self.min_area + u[0] * max(left_over - self.min_area, 0)
                aspect = math.exp(log_lo + u[1] * (log_hi - log_lo))
                bh = int(round(math.sqrt(area * aspect)))
                bw = int(round(math.sqrt(area / aspect)))
                if not (0 < bh < h and 0 < bw < w):
                    continue
                top = int(u[2] * (h - bh + 1))
                lft = int(u[3] * (w - bw + 1))
                block = covered[top : top + bh, lft : lft + bw]
                new = int((~block).sum())
                if 0 < new <= left_over:
                    block.fill_(True)
                    added = new
                    break
            if added == 0:
                break
        return covered
