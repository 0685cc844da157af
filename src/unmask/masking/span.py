"""Span masking with geometric span lengths (SpanBERT, Joshi et al. 2020; MAGNeT-style spans).

Spans of length l ~ Geometric(p), clipped to `max_len`, start at uniformly random places along the
last axis (time for streams, the sequence for seq, a row for grids; spans never cross that axis's
end) until the count is covered; the last span is cut so the count is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Masker


@dataclass(frozen=True)
class SpanMask(Masker):
    p: float = 0.2  # SpanBERT: mean length 1/p clipped at 10 gives about 3.8
    max_len: int = 10

    def __post_init__(self):
        if not 0 < self.p <= 1:
            raise ValueError(f"SpanMask p must lie in (0, 1], got {self.p}")
        if self.max_len < 1:
            raise ValueError(f"SpanMask max_len must be >= 1, got {self.max_len}")

    def scores(self, segment, counts, generator, **context):
        length = segment.length
        line = segment.shape[-1]
        out = torch.zeros(counts.shape[0], length, dtype=torch.float64)
        for b, budget in enumerate(counts.tolist()):
            order = torch.zeros(length, dtype=torch.float64)
            covered, rank = 0, float(length)
            while covered < budget:
                u = torch.rand(2, generator=generator, dtype=torch.float64)
                # inverse CDF of the geometric law on {1, 2, ...}
                span = int(torch.ceil(torch.log1p(-u[0]) / torch.log1p(torch.tensor(-self.p))).clamp(min=1))
                span = min(span, self.max_len, line)
                start = int(u[1] * length)
                start -= max(0, (start % line) + span - line)  # keep the span on one line
                for i in range(start, start + span):
                    if order[i] == 0 and covered < budget:
                        order[i] = rank  # earlier spans get higher priority
                        rank -= 1
                        covered += 1
            out[b] = order
        return out
