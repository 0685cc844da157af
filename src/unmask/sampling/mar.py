"""MAR's generation over continuous tokens (Li et al. 2024, arXiv:2406.11838; MAR-3D, Chen et al. 2025,
arXiv:2503.20519): reveal the hidden tokens in a random order, a schedule's worth per step, each
revealed token drawn by the diffusion head from the condition z the transformer computed for its
place; tokens already revealed (and tokens given in the canvas) never change.

The counts are MaskGIT's (Chang et al. 2022), as MAR takes them: after step j of T,
`min(prev - 1, max(1, floor(N0 * gamma((j + 1) / T))))` tokens stay hidden, 0 after the last step, with
gamma the cosine schedule by default. They come from `MaskGITSampler.keep_hidden` itself, so the
discrete decoding loop and this one share one rule. Continuous tokens cannot go through
`generate` (a canvas of Long ids with a mask id, logits over a vocabulary), hence this short loop.

MAR fixes one random order per row at the start and reveals the next tokens of it; here the tokens to
reveal are drawn uniformly among those still hidden at each step, which is the same distribution.

    out = generate_continuous(model, canvas, hidden, MARSampler(steps=16), generator=g)
    out.tokens       # Float[B, N, C], every place filled
    out.revealed_at  # Long[B, N]: the step that revealed each place, -1 for given ones

`model` needs `condition(tokens, hidden) -> (z Float[B, M, Dz] at index.ids_hidden, index)` and
`sample_tokens(z Float[R, Dz], temperature=, generator=, steps=, clip=) -> Float[R, C]` (`objectives/mar.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from ..masking.base import hide_top, uniform
from ..schedules import Schedule
from . import checks
from .maskgit import MaskGITSampler, MaskGITState


@dataclass(frozen=True)
class MARSampler:
    steps: int = 16  # MAR: 64 steps for 256 tokens
    schedule: Schedule = field(default_factory=lambda: Schedule("cosine"))
    temperature: float = 1.0  # scales the noise of the diffusion head's steps
    head_steps: int | None = None  # the head's DDPM steps; None: its own default
    clip: float | None = None  # clamp the head's x0 estimates to [-clip, clip]; None: off, as MAR

    def __post_init__(self):
        checks.integer(self, "steps")
        checks.function(self, "schedule")
        checks.real(self, "temperature")
        if self.head_steps is not None and not (isinstance(self.head_steps, int) and self.head_steps >= 1):
            raise ValueError(f"MARSampler.head_steps must be None or an integer >= 1, got {self.head_steps!r}")
        if self.clip is not None:
            checks.real(self, "clip", lo=0.0, lo_open=True)

    def hidden_after(self, n0: int) -> list[int]:
        """Tokens still hidden after each step, starting from n0 hidden, until none is (MaskGIT's rule,
        computed by `MaskGITSampler.keep_hidden`)."""
        counter = MaskGITSampler(steps=self.steps, schedule=self.schedule)
        left, out = torch.tensor([n0]), []
        while int(left[0]) > 0:
            left = counter.keep_hidden(MaskGITState(step=len(out), n0=[n0]), left)
            out.append(int(left[0]))
        return out

    def reveal_counts(self, n0: int) -> list[int]:
        """Tokens revealed at each step; they sum to n0."""
        before = [n0, *self.hidden_after(n0)]
        return [a - b for a, b in zip(before, before[1:], strict=False)]


class ContinuousGeneration(NamedTuple):
    tokens: torch.Tensor  # Float[B, N, C]
    revealed_at: torch.Tensor  # Long[B, N]: the step that revealed each place; -1 where the canvas gave it
    steps: int  # model calls made


@torch.no_grad()
def generate_continuous(model, canvas: torch.Tensor, hidden: torch.Tensor, sampler: MARSampler, *,
                        generator: torch.Generator | None = None,
                        on_step: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
                        ) -> ContinuousGeneration:
    """Fill the `hidden` places (Bool[B, N], the same count in every row: the encoder drops hidden
    tokens) of `canvas` (Float[B, N, C]; hidden places are never read). `on_step(before, after,
    revealed)` sees each step's tokens and the places it revealed. The reveal order comes from
    `generator` (float64 uniforms on the host), as do the head's draws."""
    if canvas.ndim != 3 or hidden.shape != canvas.shape[:2] or hidden.dtype != torch.bool:
        raise ValueError(f"canvas must be Float[B, N, C] and hidden Bool[B, N], got {tuple(canvas.shape)} "
                         f"and {hidden.dtype} {tuple(hidden.shape)}")
    hidden = hidden.cpu()  # the masks live on the host, where the encoder indexes them without a wait
    counts = hidden.sum(1)
    if counts.numel() and not (counts == counts[0]).all():
        raise ValueError(f"every row must hide the same number of tokens, got {sorted(set(counts.tolist()))}")
    n0 = int(counts[0]) if counts.numel() else 0
    tokens = canvas.clone()
    revealed_at = torch.full(hidden.shape, -1, dtype=torch.long)
    left = sampler.hidden_after(n0)
    for step, keep in enumerate(left):
        z, index = model.condition(tokens, hidden)  # [B, M, Dz] at index.ids_hidden (ascending)
        scores = uniform(hidden.shape, generator).masked_fill(~hidden, float("-inf"))
        stay = hide_top(scores, torch.full((hidden.shape[0],), keep)) & hidden  # a random `keep` stay hidden
        reveal = hidden & ~stay  # [B, N]
        pick = reveal.gather(1, index.ids_hidden.cpu())  # [B, M]: which conditions are used now
        # z[pick] and tokens[reveal] both run row by row over ascending places: the same order
        drawn = model.sample_tokens(z[pick.to(z.device)], temperature=sampler.temperature, generator=generator,
                                    steps=sampler.head_steps, clip=sampler.clip)  # [R, C]
        before = tokens
        tokens = tokens.clone()
        tokens[reveal.to(tokens.device)] = drawn.to(tokens.dtype)
        revealed_at[reveal] = step
        if on_step is not None:
            on_step(before, tokens, reveal)
        hidden = stay
    return ContinuousGeneration(tokens, revealed_at, len(left))
