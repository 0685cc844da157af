"""BERT's 80/10/10 input corruption (Devlin et al. 2019): a mask says which tokens the loss scores;
this turns it into model inputs, where most hidden tokens become the mask token, some a random token
and some stay as they are, so the model cannot learn that only [MASK] places matter.

Kept apart from the maskers on purpose: any masker (random, whole-word, span, entity) chooses the
positions, and `BertCorruption` decides what the network sees there. The loss is still taken at every
hidden position, whatever its input became.

How it differs from Hugging Face's `DataCollatorForLanguageModeling` (transformers 4.x and 5.x):
- which tokens: the collator draws Bernoulli(0.15) per token, so a row of 128 hides Binomial(128,
  0.15) tokens (sometimes none); here the masker hides exactly round(0.15 * 128) = 19 in every row;
- the split: the collator draws Bernoulli(0.8) for [MASK], then Bernoulli(0.5) of the rest for a random
  token; with `exact=True` (default) each row with k hidden tokens gets exactly round(0.8 k) mask tokens
  and round(0.9 k) - round(0.8 k) random ones, chosen uniformly among its hidden positions (`exact=False`
  gives the collator's per-token draws);
- random tokens: the collator draws from the whole tokenizer vocabulary, special tokens, [PAD] and
  [MASK] included (transformers issue #15342); here they are drawn from the data ids
  `random_range = [lo, hi)` only (default all V data ids), never the mask id. A random draw may equal
  the original token (probability 1 / (hi - lo)), as in BERT.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import uniform


@dataclass(frozen=True)
class BertCorruption:
    """tokens Long[B, N], mask Bool[B, N] (True = hidden) -> inputs Long[B, N]."""

    p_mask: float = 0.8
    p_random: float = 0.1
    random_range: tuple[int, int] | None = None  # data ids random tokens come from; None: 0..mask_id-1
    exact: bool = True

    def __post_init__(self):
        if not (0 <= self.p_mask <= 1 and 0 <= self.p_random <= 1 and self.p_mask + self.p_random <= 1):
            raise ValueError(f"need p_mask, p_random >= 0 with p_mask + p_random <= 1, got "
                             f"{self.p_mask}, {self.p_random}")
        if self.random_range is not None and not 0 <= self.random_range[0] < self.random_range[1]:
            raise ValueError(f"random_range must be [lo, hi) with 0 <= lo < hi, got {self.random_range}")

    def branches(self, mask: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(to_mask, to_random), Bool[B, N] each, disjoint and inside `mask`; the rest of `mask` keeps."""
        u = uniform(mask.shape, generator).to(mask.device)  # drawn on the CPU: the generator's device
        if not self.exact:
            to_mask = mask & (u < self.p_mask)
            return to_mask, mask & ~to_mask & (u < self.p_mask + self.p_random)
        k = mask.sum(1, keepdim=True).double()
        n_mask = torch.round(self.p_mask * k)
        n_rand = torch.round((self.p_mask + self.p_random) * k) - n_mask
        # rank hidden tokens in random order; visible ones (score -1) rank after every hidden one
        order = u.masked_fill(~mask, -1.0).argsort(dim=1, descending=True)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(mask.shape[1], device=mask.device).expand_as(order))
        to_mask = mask & (ranks < n_mask)
        return to_mask, mask & ~to_mask & (ranks < n_mask + n_rand)

    def __call__(self, tokens: torch.Tensor, mask: torch.Tensor, mask_id: int, generator=None) -> torch.Tensor:
        lo, hi = self.random_range if self.random_range is not None else (0, mask_id)
        if hi > mask_id:
            raise ValueError(f"random_range {self.random_range} reaches the mask id {mask_id}")
        to_mask, to_random = self.branches(mask, generator)
        random_ids = torch.randint(lo, hi, tokens.shape, generator=generator).to(tokens.device)
        out = torch.where(to_random, random_ids, tokens)
        return out.masked_fill(to_mask, mask_id)
