"""Uniform random masks: exact count by argsort of noise (MAE, He et al. 2022; MaskGIT), and the
Bernoulli mask whose count is only right in expectation (BERT's collator, masked diffusion)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layout import Layout
from .base import Masker, ratio_per_segment, uniform


@dataclass(frozen=True)
class RandomMask(Masker):
    """Hide exactly round(ratio * L) tokens of each segment, chosen uniformly at random."""

    def scores(self, segment, counts, generator, **context):
        return uniform((counts.shape[0], segment.length), generator)


@dataclass(frozen=True)
class BernoulliMask(Masker):
    """Hide each token independently with probability `ratio` (the count varies by row)."""

    def __call__(self, layout: Layout, batch_size: int, *, ratio=0.5, generator=None, **context):
        chosen = self.eligible(layout)
        ratios = ratio_per_segment(ratio, batch_size, len(chosen))
        mask = torch.zeros(batch_size, layout.n, dtype=torch.bool)
        for i, (segment, where) in enumerate(chosen):
            draws = uniform((batch_size, segment.length), generator)
            mask[:, where] = draws < ratios[:, i : i + 1]
        return mask


def random_mask(layout: Layout, batch_size: int, *, ratio=0.5, generator=None, segments=None):
    """Function form of `RandomMask`."""
    return RandomMask(segments)(layout, batch_size, ratio=ratio, generator=generator)
