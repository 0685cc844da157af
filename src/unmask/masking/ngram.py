"""N-gram masking (ERNIE-Gram, Xiao et al. 2021, P73): hide contiguous n-grams of whole words, so the
model must predict a multi-word unit (on code: `self.items`, `os.path.join`) from outside context
rather than from its own other words.

Words are runs of equal `word_ids` (as in `WholeWordMask`). Anchor words are visited in random order;
at each, n is drawn from `probs` (n = 1..len(probs); default P(n) proportional to 1/n up to 3, our
choice: ERNIE-Gram takes n-grams up to length 3 from a lexicon found by a t-test, which is not
modelled here) and the n words from the anchor on form one candidate. Candidates that overlap hidden
tokens or overrun the budget are skipped; the count is exact, round(ratio * L), with the same top-up
rule as `WholeWordMask`. ERNIE-Gram's explicit n-gram identity prediction (one [MASK] per n-gram and
an n-gram vocabulary) changes the sequence length and the output space; it is not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import uniform
from .words import SpanFillMask, runs


@dataclass(frozen=True)
class NGramMask(SpanFillMask):
    probs: tuple[float, ...] = (6 / 11, 3 / 11, 2 / 11)  # P(n) for n = 1, 2, 3: proportional to 1/n

    def __post_init__(self):
        if not self.probs or any(p < 0 for p in self.probs) or abs(sum(self.probs) - 1) > 1e-6:
            raise ValueError(f"NGramMask probs must be >= 0 and sum to 1, got {self.probs}")

    def spans(self, ids, generator):
        words = runs(ids)
        order = uniform(len(words), generator).argsort().tolist()
        cdf = torch.tensor(self.probs, dtype=torch.float64).cumsum(0)
        u = uniform(len(words), generator)
        sizes = (torch.searchsorted(cdf, u * cdf[-1], right=True) + 1).clamp(max=len(self.probs)).tolist()
        out = []
        for j in order:
            last = min(j + sizes[j], len(words)) - 1
            start = words[j][0]
            out.append((start, words[last][0] + words[last][1] - start))
        return out
