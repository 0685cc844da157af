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
from .confidence import surety
from .select import commit_top, rows_where

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
        return blocks.advance(hidden, state, self.block_length)[0].block

    def step(self, logits, tokens, state: ThresholdState, generator=None):
        """logits: [B, N, V]; tokens: Long[B, N] (mask id V at hidden places)."""
        mask_id = logits.shape[-1]
        hidden = tokens == mask_id
        cur, in_block = blocks.advance(hidden, state, self.block_length)
        eligible = hidden & in_block
        at = rows_where(logits, eligible)
        drawn = categorical(at, self.temperature, generator)
        if self.measure == "confidence":
            sure = surety(at, drawn, "probability")
            passes = sure >= self.threshold
        else:
            sure = surety(at, drawn, "entropy")
            passes = -sure <= self.threshold
        scores = torch.full(tokens.shape, float("-inf"), dtype=torch.float64, device=tokens.device)
        scores[eligible] = sure
        accept = torch.zeros_like(hidden)
        accept[eligible] = passes
        commit = accept | commit_top(scores, torch.ones_like(cur.step), generator)
        proposals = tokens.clone()
        proposals[eligible] = drawn
        cur.step = cur.step + hidden.any(1).long()
        return torch.where(commit, proposals, tokens), ThresholdState(**cur.lists())
