"""Running-cell masking for video (VideoMAE V2, Wang et al. 2023, P65): the decoder's mask of dual
masking. Every 2 x 2 spatial cell hides the same share of its four tokens in every time slice, and
the hidden slots shift by one place from one slice to the next, so over a few slices every place is
kept and the kept tokens are spread evenly in space and time.

The four slots of a cell are read row-major (top-left, top-right, bottom-left, bottom-right). A
cell hides `k = round(4 * ratio)` of them: in time slice t, slot s is hidden when
`(s + t + offset) % 4 < k`, with one `offset` in 0..3 drawn per row (VideoMAE V2's
`RunningCellMaskingGenerator` picks one of its four precomputed maps uniformly). Each row of a
`t x h x w` segment (h, w even) hides exactly `t * (h / 2) * (w / 2) * k` tokens: the count is
rounded per cell, not per segment (ratio 0.5 hides exactly half).

In VideoMAE V2, True here means "not reconstructed": the decoder predicts the tokens this mask keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Masker

CELL = 4  # slots of a 2 x 2 cell


@dataclass(frozen=True)
class RunningCellMask(Masker):
    def _shape(self, segment) -> tuple[int, int, int]:
        if segment.kind != "video":
            raise ValueError(f"RunningCellMask needs a video segment, {segment.name!r} is {segment.kind}")
        t, h, w = segment.shape
        if h % 2 or w % 2:
            raise ValueError(f"RunningCellMask tiles 2x2 cells: segment {segment.name!r} is {h}x{w} in space")
        return t, h, w

    def count(self, segment, ratio):
        t, h, w = self._shape(segment)
        return t * (h // 2) * (w // 2) * torch.round(ratio * CELL).long()

    def scores(self, segment, counts, generator, **context):
        t, h, w = self._shape(segment)
        b = counts.shape[0]
        hidden_slots = counts // (t * (h // 2) * (w // 2))  # k per row
        slot = (torch.arange(h) % 2).view(h, 1) * 2 + (torch.arange(w) % 2).view(1, w)  # [h, w]
        offset = torch.randint(CELL, (b, 1, 1, 1), generator=generator)
        phase = (slot.view(1, 1, h, w) + torch.arange(t).view(1, t, 1, 1) + offset) % CELL  # [B, t, h, w]
        hidden = phase < hidden_slots.view(b, 1, 1, 1)
        return hidden.double().reshape(b, t * h * w)
