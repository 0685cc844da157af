"""Tube masking for video (VideoMAE, Tong et al. 2022): the same spatial positions are hidden in
every time slice, so a hidden patch cannot be copied from its neighbour in time.

Each row hides exactly `t * round(ratio * h * w)` tokens of a `t x h x w` segment.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Masker, uniform


@dataclass(frozen=True)
class TubeMask(Masker):
    def count(self, segment, ratio):
        if segment.kind != "video":
            raise ValueError(f"TubeMask needs a video segment, {segment.name!r} is {segment.kind}")
        t, h, w = segment.shape
        return t * torch.round(ratio * h * w).long()

    def scores(self, segment, counts, generator, **context):
        t, h, w = segment.shape
        spatial = uniform((counts.shape[0], 1, h * w), generator)
        return spatial.expand(-1, t, -1).reshape(counts.shape[0], t * h * w)
