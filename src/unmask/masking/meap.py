"""MEAP's input masking (Mask-Enhanced Autoregressive Prediction, Zhuang et al. 2025, P12): a few
input positions of a next-token predictor are replaced by [MASK] while its targets stay the clean
next tokens, which the paper finds sharpens attention for key-information retrieval at no extra cost.

As in the reference pretraining script, one set of positions is drawn per step and shared by every
row of the batch, with count max(1, floor(ratio * L)) (ratio 0.15; `floor`, not round, and at least
one: MEAP's rule, a documented exception to round(ratio * L); ratio 0 hides nothing). The objective
that reads it is `objectives/autoregressive.py` (`input_masker=`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Masker, uniform


@dataclass(frozen=True)
class MeapMask(Masker):
    def count(self, segment, ratio):
        n = torch.floor(ratio * segment.length).long()
        return torch.where(ratio > 0, n.clamp(min=1), n)

    def scores(self, segment, counts, generator, **context):
        shared = uniform((1, segment.length), generator)  # one draw for the whole batch
        return shared.expand(counts.shape[0], segment.length)

