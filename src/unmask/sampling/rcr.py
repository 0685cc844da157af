"""Running-confidence remasking, RCR (He et al. 2025, "MDPO: overcoming the training-inference
divide of masked diffusion language models", P6): every step fills all hidden places of the current
block, remembers each token's confidence from the step that last committed it, and hides again the
committed tokens whose remembered confidence is lowest, so an early token committed with low
confidence can still be revised later; plain low-confidence remasking freezes it.

Blocks are LLaDA's semi-autoregressive blocks with `steps // blocks` steps each (at least one). A
block of M hidden tokens keeps `floor(M * gamma((i + 1) / S))` hidden after its step i (MaskGIT's
schedules; none after the last step). Tokens of earlier blocks compete for re-hiding too, as in
MDPO's code. Given tokens and blocks not reached yet are never hidden (MDPO's code marks them with
confidence 1.0, which ties with a fully confident model; here they are excluded outright).
The running confidences live in the state as lists (null where this sampler committed nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..schedules import Schedule
from . import blocks, checks
from .categorical import categorical
from .confidence import KINDS, confidence, log_probs
from .select import commit_top


@dataclass
class RCRState:
    start: list[int]
    block: list[int]
    step: list[int]
    size: list[int]
    steps_per_block: list[int]
    running: list[list[float | None]]


@dataclass(frozen=True)
class RCRSampler:
    steps: int = 64
    block_length: int | None = 32
    schedule: Schedule = field(default_factory=lambda: Schedule("linear"))
    temperature: float = 0.0
    confidence: str = "probability"

    def __post_init__(self):
        checks.integer(self, "steps")
        checks.integer(self, "block_length", none=True)
        checks.function(self, "schedule")
        checks.real(self, "temperature")
        checks.one_of(self, "confidence", KINDS)

    def start(self, hidden: torch.Tensor) -> RCRState:
        per_row = [max(1, self.steps // max(n, 1)) for n in blocks.blocks_per_row(hidden, self.block_length)]
        running = [[None] * hidden.shape[1] for _ in range(hidden.shape[0])]
        return RCRState(**blocks.start_cursor(hidden, self.block_length), steps_per_block=per_row, running=running)

    def revisable(self, state: RCRState) -> torch.Tensor:
        """Bool[B, N]: places this sampler committed (it may hide them again)."""
        return torch.tensor([[c is not None for c in row] for row in state.running], dtype=torch.bool)

    def kept_hidden(self, size: torch.Tensor, step: torch.Tensor, per_block: torch.Tensor) -> torch.Tensor:
        """Long[B]: hidden places of the block left after step `step` (sum of the later steps' counts)."""
        r = (step + 1).double() / per_block.double()
        keep = torch.floor(size.double() * self.schedule(r.cpu()).to(size.device)).long()
        return torch.where(step >= per_block - 1, torch.zeros_like(keep), keep)

    def next_block(self, state: RCRState, hidden: torch.Tensor) -> torch.Tensor:
        """Long[B]: the block each row's next step decodes (for `BlockCached`)."""
        per_block = torch.tensor(state.steps_per_block, device=hidden.device)
        return blocks.advance(hidden, state, self.block_length, per_block)[0].block

    def step(self, logits, tokens, state: RCRState, generator=None):
        """logits: [B, N, V]; tokens: Long[B, N] (mask id V at hidden places)."""
        mask_id = logits.shape[-1]
        device = tokens.device
        hidden = tokens == mask_id
        per_block = torch.tensor(state.steps_per_block, device=device)
        cur, _ = blocks.advance(hidden, state, self.block_length, per_block)
        ids = blocks.state_block_ids(state.start, tokens.shape[1], self.block_length, device)
        reached = (ids >= 0) & (ids <= cur.block.unsqueeze(1))
        fill = hidden & reached
        at = logits[fill]
        drawn = categorical(at, self.temperature, generator)
        running = torch.tensor([[float("nan") if c is None else c for c in row] for row in state.running],
                               dtype=torch.float64, device=device)
        running[fill] = confidence(log_probs(at, self.temperature), drawn, self.confidence)
        out = tokens.clone()
        out[fill] = drawn
        keep = self.kept_hidden(cur.size, cur.step, per_block)
        mine = reached & ~torch.isnan(running)  # committed by this sampler, so free to revise
        lowness = (-running).masked_fill(~mine, float("-inf"))
        out = out.masked_fill(commit_top(lowness, keep, generator), mask_id)
        cur.step = cur.step + hidden.any(1)
        # the cursor and the running confidences in one read (floats hold the cursor's counts exactly)
        keys = ("start", "block", "step", "size")
        both = torch.cat([torch.stack([getattr(cur, k) for k in keys], 1).double(), running], 1).tolist()
        listed = [[None if c != c else c for c in row[4:]] for row in both]
        cursor = {k: [int(row[i]) for row in both] for i, k in enumerate(keys)}
        return out, RCRState(**cursor, steps_per_block=state.steps_per_block, running=listed)
