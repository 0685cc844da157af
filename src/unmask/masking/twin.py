"""The second of two masks of one example (Point-CMAE, Ren et al., ACCV 2024, P58): the same cloud is
masked twice, and the tokens hidden in both masks are the ones whose reconstructed features are pulled
together.

Data-driven: the first mask comes from the context as `first: Bool[B, N]`. The twin hides
round(ratio * L) tokens of each segment (as every exact-count masker), and how many of them the
first mask also hides is set by `overlap`:

- `overlap=None` (Point-CMAE's release draws both masks with the same random masker, independently):
  the twin ignores `first` and is a fresh uniform mask, so the shared count c1 * c2 / L is met only
  in expectation (hypergeometric);
- `overlap=s` in [0, 1]: exactly round(s * c2) of the twin's c2 hidden tokens are hidden in `first`
  too, clamped to what the counts allow, [max(0, c2 - (L - c1)), min(c2, c1)]; both parts are chosen
  uniformly. `s = 1` with equal counts repeats `first`; `s = 0` with c1 + c2 <= L hides disjoint sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Masker, hide_top, uniform


@dataclass(frozen=True)
class TwinMask(Masker):
    overlap: float | None = None  # share of the twin's hidden tokens also hidden in `first`; None: independent
    context_key: str = "first"

    def __post_init__(self):
        if self.overlap is not None and not 0.0 <= self.overlap <= 1.0:
            raise ValueError(f"TwinMask overlap must lie in [0, 1] or be None, got {self.overlap}")

    def shared_counts(self, counts: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
        """Long[B]: tokens hidden in both masks, for the twin's counts [B] and first Bool[B, L]."""
        c1, n = first.sum(1), first.shape[1]
        wanted = torch.round(self.overlap * counts.double()).long()
        return torch.minimum(torch.maximum(wanted, (counts - (n - c1)).clamp(min=0)), torch.minimum(counts, c1))

    def scores(self, segment, counts, generator, **context):
        if self.context_key not in context:
            raise ValueError(f"TwinMask needs `{self.context_key}` (the first mask, Bool[B, L]) in the context")
        first = torch.as_tensor(context[self.context_key]).cpu()
        b, n = counts.shape[0], segment.length
        if first.shape != (b, n) or first.dtype != torch.bool:
            raise ValueError(f"{self.context_key} must be Bool[{b}, {n}] for segment {segment.name!r}, "
                             f"got {first.dtype} {tuple(first.shape)}")
        noise = uniform((b, n), generator)
        if self.overlap is None:
            return noise
        # the shared tokens rank first (among the first mask's hidden ones), then the first mask's
        # visible ones, then its other hidden ones: the top `counts` hold exactly `shared` of `first`
        shared = hide_top(torch.where(first, noise, noise - 2.0), self.shared_counts(counts, first))
        return torch.where(shared, 3.0 + noise, torch.where(first, noise, 1.0 + noise))
