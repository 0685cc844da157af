"""LLaDA decoding (Nie et al. 2025, "Large Language Diffusion Models"): semi-autoregressive blocks,
each split evenly over a fixed number of steps; in every step the model proposes every hidden token
of the block and the `count` most confident (`low_confidence` remasking) or `count` uniformly chosen
ones (`random` remasking) are committed for good.

Per block of M hidden tokens and S = steps / blocks steps, step i commits M // S tokens plus one when
i < M % S (the linear schedule in expectation). Proposals are drawn at `temperature` (0: argmax);
the confidence is the untempered probability of the proposal, as in LLaDA's `generate.py`. With
`random` remasking and one token per step (steps = N) the sampler draws from the model's joint
exactly, in the left-to-right block order. LLaDA's guidance, with the prompt hidden in the
unconditional branch, is `ClassifierFreeGuidance(denoiser, scale=w + 1, hide=prompt)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import blocks, checks
from .categorical import categorical
from .confidence import confidence, log_probs
from .select import commit_top, flat_places, rows_where

REMASKING = ("low_confidence", "random")


@dataclass
class LLaDAState:
    start: list[int]
    block: list[int]
    step: list[int]
    size: list[int]
    steps_per_block: list[int]


@dataclass(frozen=True)
class LLaDASampler:
    steps: int = 128
    block_length: int | None = None
    remasking: str = "low_confidence"
    temperature: float = 0.0

    def __post_init__(self):
        checks.integer(self, "steps")
        checks.integer(self, "block_length", none=True)
        checks.one_of(self, "remasking", REMASKING)
        checks.real(self, "temperature")

    def start(self, hidden: torch.Tensor) -> LLaDAState:
        per_row = []
        for b, n_blocks in enumerate(blocks.blocks_per_row(hidden, self.block_length)):
            if n_blocks and self.steps % n_blocks:
                raise ValueError(f"steps ({self.steps}) must be a multiple of the number of blocks; row {b} "
                                 f"has {n_blocks} blocks of block_length {self.block_length}")
            per_row.append(self.steps // max(n_blocks, 1))
        return LLaDAState(**blocks.start_cursor(hidden, self.block_length), steps_per_block=per_row)

    def next_block(self, state, hidden: torch.Tensor) -> torch.Tensor:
        """Long[B]: the block each row's next step decodes (for `BlockCached`)."""
        return blocks.filling_block(hidden, state, self.block_length)

    def step(self, logits, tokens, state: LLaDAState, generator=None):
        """logits: [B, N, V]; tokens: Long[B, N] (mask id V at hidden places)."""
        mask_id = logits.shape[-1]
        hidden = tokens == mask_id
        cur, in_block = blocks.advance(hidden, state, self.block_length)
        eligible = hidden & in_block
        per_block = torch.tensor(state.steps_per_block, device=tokens.device)
        left = eligible.sum(1)
        count = blocks.even_split(cur.size, cur.step, per_block)
        # the last step of a block takes what is left, so the block always closes on time
        count = torch.where(cur.step >= per_block - 1, left, torch.minimum(count, left))
        places = flat_places(eligible)  # one nonzero for the read and both writes
        at = rows_where(logits, places=places)
        drawn = categorical(at, self.temperature, generator)
        if self.remasking == "random":
            score = torch.rand(drawn.shape, generator=generator, dtype=torch.float64, device=tokens.device)
        else:
            score = confidence(log_probs(at), drawn)
        scores = torch.full(tokens.shape, float("-inf"), dtype=torch.float64, device=tokens.device)
        scores.view(-1).index_copy_(0, places, score)
        proposals = tokens.clone()
        proposals.view(-1).index_copy_(0, places, drawn)
        commit = commit_top(scores, count, generator)
        out = torch.where(commit, proposals, tokens)
        cur.step = cur.step + hidden.any(1)
        return out, LLaDAState(**cur.lists(), steps_per_block=state.steps_per_block)
