"""MaskGIT decoding (Chang et al. 2022): propose every hidden token at once, keep the most confident,
re-hide the rest; the schedule sets how many stay hidden.

After step j of T, `min(prev - 1, max(1, floor(N0 * gamma((j + 1) / T))))` tokens stay hidden (N0:
hidden at the start, prev: hidden before the step), so every step commits at least one token, and
the last step commits all. Confidence is log p(proposal) plus Gumbel noise scaled by
`choice_temperature * (1 - r)`, annealed to zero (MaskGIT's "choice temperature"). Committed tokens
never change. `order="random"` ignores confidence: with a linear schedule and T = N it commits one
uniformly chosen token per step, which samples the model's joint exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..masking.base import hide_top
from ..schedules import Schedule
from . import checks
from .categorical import categorical_logp, gumbel


@dataclass
class MaskGITState:
    step: int
    n0: list[int]  # hidden tokens per row at the start


@dataclass(frozen=True)
class MaskGITSampler:
    steps: int = 12
    schedule: Schedule = field(default_factory=lambda: Schedule("cosine"))
    temperature: float = 1.0
    choice_temperature: float = 1.0
    order: str = "confidence"  # or "random"

    def __post_init__(self):
        checks.integer(self, "steps")
        checks.function(self, "schedule")
        checks.real(self, "temperature")
        checks.real(self, "choice_temperature")
        checks.one_of(self, "order", ("confidence", "random"))

    def start(self, hidden: torch.Tensor) -> MaskGITState:
        return MaskGITState(step=0, n0=hidden.sum(1).tolist())

    def progress(self, state: MaskGITState) -> float:
        return state.step / self.steps

    def keep_hidden(self, state: MaskGITState, prev: torch.Tensor) -> torch.Tensor:
        """Tokens per row that stay hidden after this step. prev: Long[B] hidden now."""
        if state.step >= self.steps - 1:
            return torch.zeros_like(prev)
        r = (state.step + 1) / self.steps
        n0 = torch.tensor(state.n0, dtype=torch.float64)
        target = torch.floor(n0 * self.schedule(r)).long().to(prev.device)
        return torch.minimum(prev - 1, target.clamp(min=1)).clamp(min=0)

    def step(self, logits, tokens, state: MaskGITState, generator=None):
        mask_id = logits.shape[-1]
        hidden = tokens == mask_id
        keep = self.keep_hidden(state, hidden.sum(1))
        proposals = tokens.clone()
        drawn, logp = categorical_logp(logits, self.temperature, generator, where=hidden)  # [M]
        proposals[hidden] = drawn
        if self.order == "random":
            score = torch.rand(drawn.shape, generator=generator, dtype=torch.float64)
        else:
            r = (state.step + 1) / self.steps
            score = logp
            if self.choice_temperature > 0:
                noise = gumbel(drawn.shape, generator, device=score.device)
                score = score + self.choice_temperature * (1 - r) * noise
        # the `keep` lowest-confidence proposals go back under the mask; committed ones never do
        lowness = torch.full(tokens.shape, float("-inf"), dtype=torch.float64, device=tokens.device)
        lowness[hidden] = -score
        rehide = hide_top(lowness, keep)
        out = proposals.masked_fill(rehide, mask_id)
        return out, MaskGITState(state.step + 1, state.n0)
