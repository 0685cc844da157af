"""Masked Thought (Chen et al. 2024, "Masked Thought: simply masking partial reasoning steps can
improve mathematical reasoning learning of language models", arXiv:2403.02178, P44): during
supervised fine-tuning each input token of the answer (the reasoning steps) is replaced by [MASK]
with probability p, while the labels stay the clean next tokens and the question is never masked, a
regulariser that makes the model lean less on exact earlier steps.

p grows linearly over training as in the authors' trainer:

    rate(step) = min(max_rate, max_rate * step / (steps * warmup_ratio + 1))

with `step` counted from 0 (the optimizer updates done), `steps` the run's total, `max_rate` 0.4 and
`warmup_ratio` 2/3 by default: the full rate from about two thirds of the way. Each token is drawn
independently (a Bernoulli mask, so counts vary by row), with float64 uniforms on the host from the
step's generator. The objective that reads it is `objectives/autoregressive.py` (`thought=`), which
keeps the draw to answer-side inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layout import Layout
from .random import BernoulliMask


@dataclass(frozen=True)
class MaskedThought:
    steps: int  # optimizer steps of the run: the ramp's length is a share of them
    max_rate: float = 0.4
    warmup_ratio: float = 2 / 3

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0 <= self.max_rate <= 1:
            raise ValueError(f"max_rate must lie in [0, 1], got {self.max_rate}")
        if not self.warmup_ratio > 0:
            raise ValueError(f"warmup_ratio must be > 0, got {self.warmup_ratio}")

    def rate(self, step: int) -> float:
        """The masking probability at optimizer step `step` (0 at the first)."""
        return min(self.max_rate, self.max_rate * step / (self.steps * self.warmup_ratio + 1))

    def __call__(self, layout: Layout, batch_size: int, *, step: int, generator=None) -> torch.Tensor:
        """Bool[B, N] on the host: each place True with probability `rate(step)`."""
        return BernoulliMask()(layout, batch_size, ratio=self.rate(step), generator=generator)
