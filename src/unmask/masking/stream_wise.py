"""The stream-wise mask of SoundStorm (Borsos et al. 2023, "SoundStorm: Efficient Parallel Audio
Generation", arXiv:2305.09636, section 3.2) that MaskGCT's semantic-to-acoustic stage trains with (Wang et
al. 2024, arXiv:2409.00750, section 3.3): each row learns one residual-VQ stream k, given the coarser
streams and none of the finer ones.

Layout: a `streams` segment `S x T`, flattened stream-major. For each row:
- a stream k is drawn uniformly from 0..S-1;
- streams before k are given whole, streams after k hidden whole;
- stream k hides exactly max(1, round(m T)) places, drawn uniformly, m the row's `ratio` (the objective's
  cosine schedule, as in SoundStorm and MaskGCT).
The loss reads the hidden places of stream k only (`targets`, as `objectives.MagnetTokenModeling` asks).
It is MAGNeT's stage mask (`masking/magnet.py`) with single tokens at an exact count instead of spans at
an expected rate, so `stage` and `targets` are MAGNeT's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import hide_top, uniform
from .magnet import MagnetMask


@dataclass(frozen=True)
class StreamWiseMask(MagnetMask):
    """(layout, batch_size, *, ratio, generator) -> Bool[B, N]: SoundStorm's stream-wise mask of the streams
    segment `segment` (module docstring); other segments are given. ratio: float or Float[B]."""

    segment: str = "streams"
    span_len: int = 1  # single tokens; kept from MagnetMask, not a setting here

    def __post_init__(self):
        if self.span_len != 1:
            raise ValueError(f"StreamWiseMask hides single tokens (span_len 1), got span_len={self.span_len!r}")

    def span_mask(self, rates: torch.Tensor, length: int, generator) -> torch.Tensor:
        """rates: Float64[B] -> Bool[B, T] with exactly max(1, round(m T)) places hidden per row, uniformly."""
        counts = torch.round(rates * length).long().clamp(min=1)
        return hide_top(uniform((len(rates), length), generator), counts)
