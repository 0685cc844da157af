"""Span masking of latent speech frames (wav2vec 2.0, Baevski, Zhou, Mohamed, Auli 2020, "wav2vec 2.0:
A Framework for Self-Supervised Learning of Speech Representations", arXiv:2006.11477; used as is by
w2v-BERT, arXiv:2108.06209): hide runs of `span` consecutive frames starting at random places, so the
network cannot fill a hidden frame from its immediate neighbours.

wav2vec 2.0 makes each frame a span start with probability p = 0.065 and lets spans of M = 10 frames
overlap, which hides about half the frames in expectation. Here the share is an exact count
(DESIGN.md): round(ratio * valid) frames of each row are hidden, by spans of `span` frames whose
starts are drawn uniformly (a span never runs past the row's valid end, nor off its line), until the
count is covered; the last span is cut so the count is exact. ratio 0.5 with span 4 is the scaled
default for utterances of 24 to 48 frames.

Speech rows are padded: `lengths` (Long[B], in the context) is the number of valid time steps of each
row along the last axis (every line of a streams layout shares it); nothing beyond it is hidden, and
the count is of valid tokens. Without `lengths` every token is valid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layout import Layout
from .base import Masker, hide_top, ratio_per_segment


def valid_lengths(lengths, batch_size: int, line: int) -> torch.Tensor:
    """Long[B]: valid time steps per row along a line of `line` steps (all of them when lengths is None)."""
    if lengths is None:
        return torch.full((batch_size,), line, dtype=torch.long)
    lengths = torch.as_tensor(lengths).detach().cpu().long()
    if lengths.shape != (batch_size,):
        raise ValueError(f"lengths must be Long[{batch_size}], got shape {tuple(lengths.shape)}")
    return lengths.clamp(0, line)


def valid_counts(ratio: torch.Tensor, valid_tokens: torch.Tensor) -> torch.Tensor:
    """Long[B]: round(ratio * valid tokens) per row (Python's rounding, half to even). ratio: Float64[B]."""
    return torch.round(ratio * valid_tokens.double()).long()


def valid_tokens(valid: torch.Tensor, length: int, line: int) -> torch.Tensor:
    """Bool[B, L]: which tokens of a segment of `length` tokens in lines of `line` steps (row-major, time
    last) lie before each row's valid length `valid` (Long[B]) along the time axis."""
    return (torch.arange(length) % line).unsqueeze(0) < valid.unsqueeze(1)


@dataclass(frozen=True)
class Wav2VecSpanMask(Masker):
    span: int = 10  # wav2vec 2.0's M; the recipes here use 4 on 24-frame utterances

    def __post_init__(self):
        if self.span < 1:
            raise ValueError(f"Wav2VecSpanMask span must be >= 1, got {self.span}")

    def __call__(self, layout: Layout, batch_size: int, *, ratio=0.5, generator=None, lengths=None, **context):
        chosen = self.eligible(layout)
        ratios = ratio_per_segment(ratio, batch_size, len(chosen))
        mask = torch.zeros(batch_size, layout.n, dtype=torch.bool)
        for i, (segment, where) in enumerate(chosen):
            line = segment.shape[-1]
            valid = valid_lengths(lengths, batch_size, line)
            lines = segment.length // line
            counts = valid_counts(ratios[:, i], valid * lines)
            mask[:, where] = hide_top(self.span_order(segment.length, line, valid, counts, generator), counts)
        return mask

    def span_order(self, length: int, line: int, valid: torch.Tensor, counts: torch.Tensor,
                   generator) -> torch.Tensor:
        """Float64[B, L]: a positive priority on exactly counts[b] tokens of row b (earlier spans
        first), 0 elsewhere."""
        out = torch.zeros(counts.shape[0], length, dtype=torch.float64)
        lines = length // line
        for b, (budget, steps) in enumerate(zip(counts.tolist(), valid.tolist(), strict=True)):
            span = min(self.span, steps)
            covered, rank = 0, float(length)
            while covered < budget:
                u = torch.rand(2, generator=generator, dtype=torch.float64)
                first = int(u[0] * lines) * line + int(u[1] * (steps - span + 1))  # a line, then a start on it
                for i in range(first, first + span):
                    if out[b, i] == 0 and covered < budget:
                        out[b, i] = rank
                        rank -= 1
                        covered += 1
        return out
