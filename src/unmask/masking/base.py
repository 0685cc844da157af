"""The masker contract and the one primitive every exact-count masker uses.

A masker maps `(layout, batch_size, *, ratio, generator, **context)` to a mask `Bool[B, N]`,
True = hidden. Counts are exact and per segment: segment s of length L gets `round(ratio * L)`
hidden tokens in every row (Python's rounding, half to even). A masker only says *which* tokens: it
gives each token of a segment a priority and the `count` highest are hidden (`hide_top`). Segments
not named in `segments` are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layout import Layout, Segment


def hide_top(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Hide the `counts[b]` highest-scored tokens of row b.

    scores: [B, L] float; counts: [B] int (clamped to [0, L]). Returns Bool[B, L].
    """
    order = scores.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return ranks < counts.clamp(0, scores.shape[1]).unsqueeze(1)


def uniform(shape, generator: torch.Generator | None, device=None) -> torch.Tensor:
    """Float64 uniforms on [0, 1): the noise that breaks ties between equal priorities."""
    return torch.rand(shape, generator=generator, dtype=torch.float64, device=device)


def ratio_per_segment(ratio, batch_size: int, n_segments: int) -> torch.Tensor:
    """float | [B] | [B, S] -> Float64[B, S]; every value must lie in [0, 1]."""
    r = torch.as_tensor(ratio, dtype=torch.float64)
    if r.ndim == 0:
        r = r.expand(batch_size, n_segments)
    elif r.ndim == 1:
        if r.shape[0] != batch_size:
            raise ValueError(f"ratio has {r.shape[0]} rows for a batch of {batch_size}")
        r = r.unsqueeze(1).expand(batch_size, n_segments)
    elif r.shape != (batch_size, n_segments):
        raise ValueError(f"ratio must be a float, [B] or [B, {n_segments}], got {tuple(r.shape)}")
    if torch.isnan(r).any() or (r < 0).any() or (r > 1).any():
        raise ValueError("mask ratio must lie in [0, 1]")
    return r


@dataclass(frozen=True)
class Masker:
    """Base of exact-count maskers. Subclasses give `scores` (and, if needed, `count`)."""

    segments: tuple[str, ...] | None = None  # segments that may be hidden; None: all

    def eligible(self, layout: Layout) -> list[tuple[Segment, slice]]:
        names = layout.names if self.segments is None else tuple(self.segments)
        for name in names:
            layout.segment(name)  # raises a KeyError naming the segments that exist
        return [(s, layout.slice(s.name)) for s in layout.segments if s.name in names]

    def count(self, segment: Segment, ratio: torch.Tensor) -> torch.Tensor:
        """Hidden tokens per row for one segment: round(ratio * length). ratio: [B] float64."""
        return torch.round(ratio * segment.length).long()

    def scores(self, segment: Segment, counts: torch.Tensor, generator, **context) -> torch.Tensor:
        """Priorities [B, L] for one segment: higher is hidden first."""
        raise NotImplementedError

    def __call__(self, layout: Layout, batch_size: int, *, ratio=0.5, generator=None, **context):
        chosen = self.eligible(layout)
        ratios = ratio_per_segment(ratio, batch_size, len(chosen))
        mask = torch.zeros(batch_size, layout.n, dtype=torch.bool)
        for i, (segment, where) in enumerate(chosen):
            counts = self.count(segment, ratios[:, i])
            scores = self.scores(segment, counts, generator, **context)
            mask[:, where] = hide_top(scores, counts)
        return mask
