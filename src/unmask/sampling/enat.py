"""ENAT decoding (Ni et al. 2024, "ENAT: rethinking spatial-temporal interactions in token-based
image synthesis", P20): tokens that were visible at the previous step are not encoded again; their
features from earlier steps are reused and only newly revealed tokens (and the hidden ones) are read.

ENAT trains a network for this (`nn/enat.py`: visible tokens encoded apart from mask tokens, a
projection of the previous step's features; trained by `objectives/enat.py`). `ENATDenoiser` reads
that network: every read after the first encodes only the newly revealed tokens, beside the features
the earlier reads left, and decodes the hidden ones. The same reuse also runs on an ordinary masked
model through the loop's K/V cache (`kv_cache.py`): every read after the first is a light read of
the hidden places and the newly revealed ones, against the cached keys and values of tokens revealed
earlier, which are kept from the step that revealed them. That is exact when a visible token's keys
and values do not depend on the other tokens (a one-layer model) and an approximation otherwise, the
price of a network not trained for it. With either, `refresh_every` adds a full read every k steps.

ENAT's step rule: after step s of T (r = (s + 1) / T), floor(N0 cos(pi r / 2)) tokens stay hidden (no
one-token minimum, so a step may commit nothing); tokens are drawn at temperature
max(temperature (1 - r), 1e-3) and ranked by log p + choice_temperature (1 - r) Gumbel noise.
Defaults are ENAT's ImageNet-256 ones (8 steps, choice 1.5, sampling 6 with guidance 2.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..nn.enat import Previous
from . import checks
from .categorical import categorical_logp, gumbel
from .select import commit_top


@dataclass
class ENATState:
    step: int
    n0: list[int]


@dataclass(frozen=True)
class ENATSampler:
    steps: int = 8
    temperature: float = 6.0
    choice_temperature: float = 1.5
    reuse: bool = True
    refresh_every: int = 0  # 0: only the first read is full

    def __post_init__(self):
        checks.integer(self, "steps")
        checks.real(self, "temperature")
        checks.real(self, "choice_temperature")
        checks.boolean(self, "reuse")
        checks.integer(self, "refresh_every", 0)

    def start(self, hidden: torch.Tensor) -> ENATState:
        return ENATState(step=0, n0=hidden.sum(1).tolist())

    def progress(self, state: ENATState) -> float:
        return state.step / self.steps

    def light_queries(self, state: ENATState, hidden: torch.Tensor) -> torch.Tensor | None:
        if not self.reuse or (self.refresh_every and state.step % self.refresh_every == 0):
            return None
        return hidden  # the loop adds the places revealed since the cache was written

    def step(self, logits, tokens, state: ENATState, generator=None):
        """logits: [B, N, V]; tokens: Long[B, N] (mask id V at hidden places)."""
        mask_id = logits.shape[-1]
        hidden = tokens == mask_id
        r = (state.step + 1) / self.steps
        keep = torch.tensor([math.floor(n * math.cos(math.pi * r / 2)) if r < 1 else 0 for n in state.n0],
                            device=tokens.device)
        commit_count = (hidden.sum(1) - keep).clamp(min=0)
        temp = max(self.temperature * (1 - r), 1e-3)
        drawn, score = categorical_logp(logits, temp, generator, where=hidden)
        if self.choice_temperature > 0 and r < 1:
            score = score + self.choice_temperature * (1 - r) * gumbel(score.shape, generator, device=score.device)
        scores = torch.full(tokens.shape, float("-inf"), dtype=torch.float64, device=tokens.device)
        scores[hidden] = score
        proposals = tokens.clone()
        proposals[hidden] = drawn
        commit = commit_top(scores, commit_count, generator)
        return torch.where(commit, proposals, tokens), ENATState(state.step + 1, state.n0)


class ENATDenoiser:
    """An ENAT network (`nn.enat.ENATModel`) as a denoiser with full and light reads, for `generate`.

    `denoiser(tokens)` and `full(tokens)` encode every visible token; `light(tokens, queries, cache)`
    returns logits [M, V] at the M True places of `queries` (the hidden places and those revealed since
    the cache) and encodes only the visible places whose token differs from the cache's, reusing the
    cached features of the others. `encoded` lists, per read, the tokens of each row the encoder
    read (Long[B])."""

    def __init__(self, model):
        if not hasattr(model, "read"):
            raise ValueError(f"ENATDenoiser reads an nn.enat.ENATModel, got {type(model).__name__}")
        self.model = model
        self.encoded: list[torch.Tensor] = []

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.full(tokens)[0]

    def full(self, tokens: torch.Tensor) -> tuple[torch.Tensor, Previous]:
        out = self.model.read(tokens)
        self.encoded.append(out.encoded.sum(1))
        return out.logits, Previous(tokens.clone(), out.features)

    def light(self, tokens: torch.Tensor, queries: torch.Tensor, cache: Previous,
              width: int | None = None) -> tuple[torch.Tensor, Previous]:
        out = self.model.read(tokens, where=queries, prev=cache)
        self.encoded.append(out.encoded.sum(1))
        return out.logits, Previous(tokens.clone(), out.features)
