"""Dream decoding (Ye et al. 2025, "Dream 7B"): time runs from 1 to eps over `steps` steps; from t to
s, `floor(n * (1 - s / t))` of the n hidden tokens are committed (all of them at the last step),
chosen by a score of the model's certainty: `maskgit_plus` (probability of the drawn token),
`topk_margin` (top-1 minus top-2 probability) or `entropy` (negative entropy).

Scores come from the tempered, nucleus-filtered distribution the tokens are drawn from, as in
Dream's `sample_tokens`. With `alg_temp > 0` the places are drawn without replacement with
probability softmax(score / alg_temp) instead of taken greedily. Two choices of ours: n is each
row's own hidden count (Dream averages it over the batch, so a row's result depended on its batch
mates), and tied scores are broken at random (Dream's top-k breaks them left to right, which makes
decoding autoregressive once top-p saturates the probabilities). Dream's `origin` algorithm is
`AncestralSampler`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import checks
from .categorical import nucleus_draw
from .select import sample_top

ALGORITHMS = {"maskgit_plus": "probability", "topk_margin": "margin", "entropy": "entropy"}


@dataclass
class DreamState:
    step: int


@dataclass(frozen=True)
class DreamSampler:
    steps: int = 512
    alg: str = "entropy"
    alg_temp: float = 0.0
    temperature: float = 0.2
    top_p: float = 0.95
    eps: float = 1e-3

    def __post_init__(self):
        checks.integer(self, "steps")
        checks.one_of(self, "alg", sorted(ALGORITHMS))
        checks.real(self, "alg_temp")
        checks.real(self, "temperature")
        checks.real(self, "top_p", 0.0, 1.0, lo_open=True)
        checks.real(self, "eps", 0.0, 1.0, lo_open=True, hi_open=True)

    def start(self, hidden: torch.Tensor) -> DreamState:
        return DreamState(step=0)

    def progress(self, state: DreamState) -> float:
        return state.step / self.steps

    def share(self, step: int) -> float:
        """1 - s/t for the step from t to s on linspace(1, eps, steps + 1); 1 at the last step."""
        if step >= self.steps - 1:
            return 1.0
        t = 1 - step * (1 - self.eps) / self.steps
        s = 1 - (step + 1) * (1 - self.eps) / self.steps
        return 1 - s / t

    def step(self, logits, tokens, state: DreamState, generator=None):
        """logits: [B, N, V]; tokens: Long[B, N] (mask id V at hidden places)."""
        mask_id = logits.shape[-1]
        hidden = tokens == mask_id
        share = self.share(state.step)
        count = (hidden.sum(1).double() * share).floor().long() if share < 1 else hidden.sum(1)
        # greedy choice: a row's places that cannot be among its `count` surest are not read
        best = count if self.alg_temp == 0 else None
        drawn, score = nucleus_draw(logits, self.top_p, self.temperature, generator, ALGORITHMS[self.alg], hidden,
                                    best)
        scores = torch.full(tokens.shape, float("-inf"), dtype=torch.float64, device=tokens.device)
        scores[hidden] = score
        commit = sample_top(scores, count, self.alg_temp, generator)
        proposals = tokens.clone()
        proposals[hidden] = drawn
        return torch.where(commit, proposals, tokens), DreamState(state.step + 1)


