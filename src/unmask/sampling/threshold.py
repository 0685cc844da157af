"""Threshold decoding: commit, in each step, every hidden token of the current block the model is
sure enough of, and always at least the surest one, so the number of steps adapts to the model.

Two measures of "sure enough": the probability of the proposed token at least `threshold`
(Fast-dLLM, Wu et al. 2025, "Fast-dLLM: training-free acceleration of diffusion LLM by KV cache and
parallel decoding"), or its predictive entropy at most `threshold` nats (dParallel, Chen et al.
2025, "dParallel: learnable parallel decoding for dLLMs", P8). Blocks are LLaDA's semi-autoregressive
blocks (`blocks.py`). A model that is certain everywhere fills a block in one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import blocks, checks
from .categorical import categorical
from .confidence import surety, top_probability
from .select import commit_best, flat_places, rows_where

MEASURES = ("confidence", "entropy")


@dataclass
class ThresholdState:
    start: list[int]
    block: list[int]
    step: list[int]
    size: list[int]


@dataclass(frozen=True)
class ThresholdSampler:
    threshold: float = 0.9
    measure: str = "confidence"
    block_length: int | None = 32
    temperature: float = 0.0

    def __post_init__(self):
        checks.one_of(self, "measure", MEASURES)
        if self.measure == "confidence":  # a probability
            checks.real(self, "threshold", 0.0, 1.0, lo_open=True)
        else:  # nats
            checks.real(self, "threshold")
        checks.integer(self, "block_length", none=True)
        checks.real(self, "temperature")

    def start(self, hidden: torch.Tensor) -> ThresholdState:
        return ThresholdState(**blocks.start_cursor(hidden, self.block_length))

    def next_block(self, state, hidden: torch.Tensor) -> torch.Tensor:
        """Long[B]: the block each row's next step decodes (for `BlockCached`)."""
        return blocks.filling_block(hidden, state, self.block_length)

    def step(self, logits, tokens, state: ThresholdState, generator=None):
        """logits: [B, N, V]; tokens: Long[B, N] (mask id V at hidden places)."""
        mask_id = logits.shape[-1]
        hidden = tokens == mask_id
        cur, in_block = blocks.advance(hidden, state, self.block_length)
        eligible = hidden & in_block
        places = flat_places(eligible)
        at = rows_where(logits, places=places)
        if self.measure == "confidence" and self.temperature == 0:
            drawn, sure = top_probability(at)  # the argmax and its probability, off one softmax
        else:
            drawn = categorical(at, self.temperature, generator)
            sure = surety(at, drawn, "probability" if self.measure == "confidence" else "entropy")
        least = self.threshold if self.measure == "confidence" else -self.threshold  # entropy at most the threshold
        scores = torch.full(tokens.shape, float("-inf"), dtype=torch.float64, device=tokens.device)
        scores.view(-1).index_copy_(0, places, sure)
        commit = (scores >= least) | commit_best(scores, generator)  # every sure enough one, and always the surest
        proposals = tokens.clone()
        proposals.view(-1).index_copy_(0, places, drawn)
        cur.step = cur.step + hidden.any(1)
        return torch.where(commit, proposals, tokens), ThresholdState(**cur.lists())
