"""Whole-word masking (BERT's later release, `do_whole_word_mask`; on code: whole identifiers and
operators): when a word is hidden, all of its sub-tokens are hidden, so a word cannot be guessed
from its own visible pieces.

Words come from the data as `word_ids: Long[B, N]` in the context: a run of equal ids in a row is one
word (`data/code.py` gives one id per Python lexical token). Words are taken in random order; a word
that would overrun the budget is skipped (as in BERT and transformers' 4.x whole-word collator), so
every taken word is whole. The count is exact, round(ratio * L): if only longer words are left when
the budget is not yet met, the rest is taken from the first remaining words in the same random order,
the one case where a word is split (at most one per row in practice, since one-token words such as
operators are common in code).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..layout import Layout
from .base import Masker, ratio_per_segment, uniform


def runs(ids: torch.Tensor) -> list[tuple[int, int]]:
    """(start, length) of each run of equal values in ids: Long[L]."""
    if ids.numel() == 0:
        return []
    starts = [0] + (torch.nonzero(ids[1:] != ids[:-1]).squeeze(1) + 1).tolist()
    ends = starts[1:] + [ids.numel()]
    return [(s, e - s) for s, e in zip(starts, ends, strict=True)]


def fill_spans(spans: list[tuple[int, int]], length: int, budget: int) -> torch.Tensor:
    """Hide whole spans, in the given order, skipping any that overlaps a hidden token or overruns the
    budget; then top up from the remaining spans' free tokens, in order, to exactly `budget`
    (or every token, if fewer). Returns Bool[length]."""
    hidden = torch.zeros(length, dtype=torch.bool)
    left = min(budget, length)
    for start, size in spans:
        if left == 0:
            break
        if size <= left and not hidden[start : start + size].any():
            hidden[start : start + size] = True
            left -= size
    for start, size in spans:
        if left == 0:
            break
        free = torch.nonzero(~hidden[start : start + size]).squeeze(1)[:left] + start
        hidden[free] = True
        left -= free.numel()
    if left:  # spans did not cover the row
        free = torch.nonzero(~hidden).squeeze(1)[:left]
        hidden[free] = True
    return hidden


@dataclass(frozen=True)
class SpanFillMask(Masker):
    """Base of maskers that hide whole spans of a row in a random order (`spans` gives them)."""

    context_key: str = "word_ids"

    def spans(self, ids: torch.Tensor, generator) -> list[tuple[int, int]]:
        raise NotImplementedError

    def row(self, ids: torch.Tensor, count: int, generator) -> torch.Tensor:
        return fill_spans(self.spans(ids, generator), ids.numel(), count)

    def __call__(self, layout: Layout, batch_size: int, *, ratio=0.15, generator=None, **context):
        if self.context_key not in context:
            raise ValueError(f"{type(self).__name__} needs `{self.context_key}` (Long[B, N]) in the batch")
        ids = context[self.context_key].cpu()
        if ids.shape != (batch_size, layout.n):
            raise ValueError(f"{self.context_key} must be [{batch_size}, {layout.n}], got {tuple(ids.shape)}")
        chosen = self.eligible(layout)
        ratios = ratio_per_segment(ratio, batch_size, len(chosen))
        mask = torch.zeros(batch_size, layout.n, dtype=torch.bool)
        for i, (segment, where) in enumerate(chosen):
            counts = self.count(segment, ratios[:, i]).tolist()
            for b in range(batch_size):
                mask[b, where] = self.row(ids[b, where], counts[b], generator)
        return mask


@dataclass(frozen=True)
class WholeWordMask(SpanFillMask):
    """Hide whole words (runs of equal `word_ids`) in random order; exact count per segment."""

    def spans(self, ids, generator):
        words = runs(ids)
        order = uniform(len(words), generator).argsort().tolist()
        return [words[j] for j in order]
