"""MMDM's two masks over motion (Chen 2024, "Text-driven Human Motion Generation with Motion Masked
Diffusion Model", arXiv:2409.19686): hide whole time frames, or hide a group of joints (a body part)
over a span of frames.

Both work on a `streams` segment laid out body parts x time (`Layout.streams(P, T)`: part p holds
places p T .. p T + T - 1, as `recipes/motion_tokens.py`), one token per body part and frame.
- `TimeFrameMask`: exactly round(ratio T) frames, a uniform choice, every part of each hidden (so
  P round(ratio T) tokens);
- `BodyPartMask`: one part per row, uniform over the parts (or `parts`, indices into the streams), hidden
  over exactly round(ratio T) consecutive frames starting at a uniform place (so round(ratio T)
  tokens); with context `part=Long[B]` (or an int) the part is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layout import Layout
from .base import Masker, hide_top, ratio_per_segment, uniform


def _streams(segment) -> tuple[int, int]:
    if segment.kind != "streams":
        raise ValueError(f"motion masks need a streams segment (parts x time), {segment.name!r} is {segment.kind}")
    return segment.shape


@dataclass(frozen=True)
class TimeFrameMask(Masker):
    """Whole frames: every body part of round(ratio T) uniformly chosen frames."""

    def __call__(self, layout: Layout, batch_size: int, *, ratio=0.5, generator=None, **context):
        chosen = self.eligible(layout)
        ratios = ratio_per_segment(ratio, batch_size, len(chosen))
        mask = torch.zeros(batch_size, layout.n, dtype=torch.bool)
        for i, (segment, where) in enumerate(chosen):
            parts, frames = _streams(segment)
            counts = torch.round(ratios[:, i] * frames).long()
            hidden = hide_top(uniform((batch_size, frames), generator), counts)  # [B, T]
            mask[:, where] = hidden.repeat(1, parts)  # the same frames in every part's stream
        return mask


@dataclass(frozen=True)
class BodyPartMask(Masker):
    """One body part over round(ratio T) consecutive frames."""

    parts: tuple[int, ...] | None = None  # streams that may be hidden; None: all

    def __call__(self, layout: Layout, batch_size: int, *, ratio=0.5, generator=None, part=None, **context):
        chosen = self.eligible(layout)
        ratios = ratio_per_segment(ratio, batch_size, len(chosen))
        mask = torch.zeros(batch_size, layout.n, dtype=torch.bool)
        for i, (segment, where) in enumerate(chosen):
            parts, frames = _streams(segment)
            pool = torch.tensor(self.parts if self.parts is not None else range(parts))
            if pool.numel() == 0 or int(pool.min()) < 0 or int(pool.max()) >= parts:
                raise ValueError(f"BodyPartMask parts must be indices in 0..{parts - 1}, got {self.parts}")
            if part is None:
                picked = pool[(uniform(batch_size, generator) * len(pool)).long()]  # [B]
            else:
                picked = torch.as_tensor(part, dtype=torch.long).expand(batch_size)
            counts = torch.round(ratios[:, i] * frames).long()  # [B]
            start = (uniform(batch_size, generator) * (frames - counts + 1)).long()  # [B], span fits
            t = torch.arange(frames)
            span = (t >= start[:, None]) & (t < (start + counts)[:, None])  # [B, T]
            rows = torch.arange(parts)[None, :, None] == picked[:, None, None]  # [B, P, 1]
            mask[:, where] = (rows & span[:, None, :]).reshape(batch_size, parts * frames)
        return mask
