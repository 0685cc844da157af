"""aMUSEd decoding (Patil et al. 2024, "aMUSEd: an open MUSE reproduction"): diffusers'
`AmusedScheduler.step` rule, and with `draw="diffusers"` its very draws, so that a model served by
diffusers gives the same tokens here.

The idea is MaskGIT's (Chang et al. 2022): draw every hidden token, keep the most confident, hide the
rest again. aMUSEd differs in details that this file keeps: the count to re-hide is
`floor(L * gamma(r) * starting_mask_ratio)` with L the full sequence length (not the hidden count
at the start), the choice temperature follows `linspace(a, b, T)` (a scalar a means
`linspace(a, 0.01, T)`), and the choice noise is drawn in the probabilities' dtype, then added in
float32 at least.

Two draws of the tokens, from the same distribution softmax(logits):
- `draw="inverse_cdf"` (the default): the shared float64 inverse-CDF draw (`categorical`), at hidden
  places only; the confidence is the drawn token's probability from that same draw.
- `draw="diffusers"`: diffusers' float32 `torch.multinomial`, so that with the same logits, of any
  float dtype, and the same `torch.Generator`, `step` returns what diffusers returns. On a CPU
  generator it is made at hidden places only (`multinomial_rows`): torch's multinomial is an
  exponential race over every place of the canvas, hidden or not, and the tokens it gives at the
  hidden places are reproduced from the same uniforms, token for token, with the generator left where
  the whole call leaves it. Every place's V uniforms must still be drawn, which at V = 1024 costs
  more than the rest of the step: diffusers' own cost, kept only where its tokens are wanted.
The counts, the schedule and the choice noise are the same in both.

Two deliberate differences, both where diffusers misbehaves: given tokens get confidence +inf (diffusers
uses the largest finite float, so a huge choice temperature can re-hide a given token), and a row with
nothing hidden is left alone (diffusers would re-hide one given token there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import checks
from .categorical import categorical_logp, float32_gumbel, float32_multinomial
from .multinomial_rows import multinomial_rows
from .select import flat_places, rows_where

DRAWS = ("diffusers", "inverse_cdf")


@dataclass
class AmusedState:
    step: int


@dataclass(frozen=True)
class AmusedSampler:
    """steps: T; schedule: "cosine" or "linear"; choice_temperature: (start, end) or a start that
    decays to 0.01; starting_mask_ratio: scales the re-hidden count (diffusers' img2img setting)."""

    steps: int = 12
    schedule: str = "cosine"
    choice_temperature: float | tuple[float, float] = (2.0, 0.0)
    starting_mask_ratio: float = 1.0
    draw: str = "inverse_cdf"

    def __post_init__(self):
        checks.integer(self, "steps")
        checks.one_of(self, "schedule", ("cosine", "linear"))
        temps = self.choice_temperature
        pair = isinstance(temps, (tuple, list)) and len(temps) == 2
        if not all(checks.is_real(t) and t >= 0 for t in (temps if pair else (temps,))):
            raise ValueError(f"AmusedSampler: choice_temperature must be a finite number >= 0 or a pair (start, "
                             f"end) of them, got {temps!r}")
        checks.real(self, "starting_mask_ratio", 0.0, 1.0)
        checks.one_of(self, "draw", DRAWS)

    def start(self, hidden: torch.Tensor) -> AmusedState:
        return AmusedState(step=0)

    def progress(self, state: AmusedState) -> float:
        return state.step / self.steps

    def temperatures(self) -> torch.Tensor:
        """Float32[T]: the choice temperature of each step, as diffusers' `set_timesteps` makes it."""
        t = self.choice_temperature
        if isinstance(t, (tuple, list)):
            return torch.linspace(t[0], t[1], self.steps)
        return torch.linspace(t, 0.01, self.steps)

    def step(self, logits, tokens, state: AmusedState, generator=None):
        """logits: [B, N, V] float; tokens: Long[B, N] with the mask id V at hidden places."""
        b, n, v = logits.shape
        unknown = tokens == v
        proposal, chosen = self._draw(logits, tokens, unknown, generator)
        j = state.step
        if j >= self.steps - 1:
            return proposal, AmusedState(j + 1)
        # float32 arithmetic on purpose: the re-hidden count must floor exactly as diffusers' does
        ratio = torch.tensor([[j + 1]], device=logits.device) / self.steps
        gamma = torch.cos(ratio * math.pi / 2) if self.schedule == "cosine" else 1 - ratio
        count = (n * (gamma * self.starting_mask_ratio)).floor()
        count = torch.minimum(unknown.sum(-1, keepdim=True) - 1, count)
        count = torch.maximum(torch.ones(1, device=logits.device), count)
        # a one-element temperature, not a 0-dim one: diffusers indexes its temperatures with a [1, 1] index,
        # so half-precision confidences are promoted to float32 there, and they must be here
        temperature = self.temperatures()[j : j + 1].to(logits.device)
        score = torch.log(chosen.clamp(1e-20)) + temperature * float32_gumbel(chosen, generator)
        score = score.masked_fill(~unknown, float("inf"))
        cut = score.sort(-1).values.gather(1, count.long().clamp(max=n - 1))
        rehide = (score < cut) & unknown.any(-1, keepdim=True)
        return proposal.masked_fill(rehide, v), AmusedState(j + 1)

    def _draw(self, logits, tokens, unknown, generator):
        """The proposal (Long[B, N]: the drawn token at hidden places) and the drawn tokens'
        probabilities ([B, N], in the dtype diffusers computes them in: its Gumbel noise is drawn in
        that dtype; the given places' values are never read)."""
        b, n, v = logits.shape
        if self.draw == "inverse_cdf":
            drawn, logp = categorical_logp(logits, 1.0, generator, where=unknown)
            chosen = torch.ones(b, n, device=logits.device).masked_scatter(unknown, logp.exp().float())
            return tokens.masked_scatter(unknown, drawn), chosen
        if (generator.device if generator is not None else logits.device).type != "cpu":
            # an accelerator's generator: its own multinomial at every place, as diffusers calls it
            probs = logits.softmax(-1)
            drawn = float32_multinomial(probs.reshape(-1, v), generator).view(b, n)
            proposal = torch.where(unknown, drawn, tokens)
            return proposal, probs.gather(-1, proposal.unsqueeze(-1)).squeeze(-1)
        # a CPU generator: diffusers' draw made at the hidden places only, with its tokens and generator
        rows = flat_places(unknown)
        probs = rows_where(logits, places=rows).softmax(-1)  # [M, V] in the logits' dtype, as diffusers'
        drawn = multinomial_rows(probs.float().cpu(), rows.cpu(), b * n, generator).to(logits.device)
        picked = probs.gather(-1, drawn.unsqueeze(-1)).squeeze(-1)
        chosen = torch.ones(b * n, dtype=probs.dtype, device=logits.device).index_copy_(0, rows, picked)
        return tokens.reshape(-1).index_copy(0, rows, drawn).view(b, n), chosen.view(b, n)
