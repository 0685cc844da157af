"""Fast-dLLM's key/value caches for block decoding (Wu et al. 2025, "Fast-dLLM: training-free
acceleration of diffusion LLM by enabling KV cache and parallel decoding", arXiv:2505.22618): when a
row enters a block, one read of the whole sequence refreshes every position's keys and values; the
block's other steps re-read fewer positions against them.

- `prefix`: the steps re-read the current block and everything after it; the prompt and the finished
  blocks are served from the cache (they do not change inside a block).
- `dual`: the steps re-read the current block only; the later, still hidden blocks are served from
  the cache too, stale by what the block has committed since the refresh (the approximation the
  paper measures to cost little accuracy for much speed).

`BlockCached(sampler, mode)` wraps any sampler; its steps are the sampler's own, so the tokens are the
sampler's whenever the cached keys and values equal fresh ones. The block is the sampler's
(`block_length` and `next_block`, as LLaDA, threshold and RCR decoding have); a sampler without
blocks decodes its hidden places as one block, so only the prompt is cached. Places a step hides
again (RCR) are re-read wherever they lie, and `generate` adds every place whose token changed since
its keys and values were computed.

Every decision is a row's own: a row's refresh and its re-read places depend only on its own state,
and a refresh is a re-read of all its places, so a row's tokens do not depend on what else is in the
batch. The reads need a denoiser with full and light reads (`kv_cache.CachedDenoiser`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from . import blocks, checks

MODES = ("prefix", "dual")


@dataclass
class BlockCachedState:
    inner: Any  # the wrapped sampler's state
    start: list[int]  # each row's first hidden position at the start
    cached_block: list[int]  # the block each row's cache was last refreshed or read for (-1: none yet)


@dataclass(frozen=True)
class BlockCached:
    sampler: Any
    mode: str = "dual"

    requires_cache = True  # `generate` refuses a denoiser without full and light reads

    def __post_init__(self):
        checks.one_of(self, "mode", MODES)
        if not (hasattr(self.sampler, "start") and hasattr(self.sampler, "step")):
            raise ValueError(f"BlockCached wraps a sampler (with start and step), got {type(self.sampler).__name__}")

    @property
    def block_length(self) -> int | None:
        return getattr(self.sampler, "block_length", None)

    def start(self, hidden: torch.Tensor) -> BlockCachedState:
        first = blocks.first_hidden(hidden)
        return BlockCachedState(self.sampler.start(hidden), first.tolist(), [-1] * hidden.shape[0])

    def next_block(self, state: BlockCachedState, hidden: torch.Tensor) -> torch.Tensor:
        """Long[B]: the block each row's next step decodes (0 for a sampler without blocks)."""
        if hasattr(self.sampler, "next_block"):
            return self.sampler.next_block(state.inner, hidden)
        return torch.zeros(hidden.shape[0], dtype=torch.long, device=hidden.device)

    def light_queries(self, state: BlockCachedState, hidden: torch.Tensor) -> torch.Tensor:
        """Bool[B, N]: the places the next read computes; all of a row's places when it enters a block."""
        ids = blocks.state_block_ids(state.start, hidden.shape[1], self.block_length, hidden.device)
        block = self.next_block(state, hidden).unsqueeze(1)  # [B, 1]
        queries = (ids >= block) if self.mode == "prefix" else (ids == block)
        refresh = block != torch.tensor(state.cached_block, dtype=torch.long, device=hidden.device).unsqueeze(1)
        return queries | hidden & (ids <= block) | refresh

    def step(self, logits, tokens, state: BlockCachedState, generator=None):
        new, inner = self.sampler.step(logits, tokens, state.inner, generator)
        # a block sampler's state names the block its step decoded; without blocks it is block 0
        block = list(inner.block) if hasattr(self.sampler, "next_block") else [0] * len(state.start)
        return new, BlockCachedState(inner, state.start, block)

    def __getattr__(self, name: str):
        # `progress` and `revisable`, where the wrapped sampler has them, read its own state
        if name != "sampler" and name in ("progress", "revisable") and hasattr(self.sampler, name):
            method = getattr(self.sampler, name)
            return lambda state, *args: method(state.inner, *args)
        raise AttributeError(name)
