"""Constrained sampling by adaptive weighted rejection (AWRS; Lipkin et al. 2025, "Fast controlled
generation from language models with adaptive weighted rejection sampling", arXiv:2504.05410, P24):
test tokens against an expensive constraint in the order of one set of Gumbel keys, i.e. sampling without
replacement, so the first accepted token is an exact draw from p restricted to the valid tokens and
usually only a few tokens are ever tested; alongside, return an unbiased estimate of the valid mass
Z = sum of p over valid tokens, the importance weight a sequential Monte Carlo sampler needs.

The weight (our derivation of the recursive estimator): with R the probability of the rejected
tokens and x the accepted one, test one more token y in key order and return
p(x) + (1 - R - p(x)) [y valid]. Given the rejections, p(x) is what is known and the rest of the
untested mass is valid in proportion estimated by one draw from it, so E[weight] = Z exactly. No
valid token gives weight 0 (log-weight -inf). At most V constraint calls.

`token_masking` is the baseline the paper measures against (locally constrained decoding): test all
V tokens, then draw from p restricted to the valid ones; the same draw, with the exact Z as weight,
for V constraint calls per token. benchmarks/awrs_efficiency.py counts both.

`ConstrainedSampler` runs MaskGIT's schedule (random or confidence order) with every committed token
drawn by AWRS (or by token masking, `draw="masking"`) under `constraint(tokens: Long[N], position,
token) -> bool`, one place after another so each sees the ones committed before it; the
log-weights add up per row in the state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from ..schedules import Schedule
from . import checks
from .categorical import categorical, gumbel
from .confidence import log_probs


class ConstrainedDraw(NamedTuple):
    """One constrained draw: the token (-1 when no token is valid), the log of the weight (an
    estimate of log Z for AWRS, the exact log Z for token masking; -inf when no token is valid) and
    how many times the constraint was called."""

    token: int
    log_weight: float
    calls: int


def awrs(logits: torch.Tensor, accepts: Callable[[int], bool], temperature: float = 1.0,
         generator: torch.Generator | None = None) -> ConstrainedDraw:
    """One constrained draw by AWRS. logits: [V] float; accepts(token) -> bool."""
    if not temperature > 0:  # NaN too
        raise ValueError(f"AWRS needs a temperature > 0, got {temperature}")
    logp = log_probs(logits, temperature)
    keys = logp + gumbel(logp.shape, generator, device=logp.device)
    order = keys.argsort(descending=True).tolist()
    p = logp.exp().tolist()
    rejected, calls, token = 0.0, 0, -1
    for i, v in enumerate(order):
        if p[v] == 0:
            break  # keys of -inf: every token left has probability 0
        calls += 1
        if accepts(v):
            token = v
            rest = order[i + 1 :]
            break
        rejected += p[v]
    if token < 0:
        return ConstrainedDraw(-1, float("-inf"), calls)
    tail = max(0.0, 1.0 - rejected - p[token])
    weight = p[token]
    if rest and p[rest[0]] > 0:
        calls += 1
        weight += tail if accepts(rest[0]) else 0.0
    return ConstrainedDraw(token, math.log(weight), calls)


def token_masking(logits: torch.Tensor, accepts: Callable[[int], bool], temperature: float = 1.0,
                  generator: torch.Generator | None = None) -> ConstrainedDraw:
    """The same draw by token masking: accepts(token) for all V tokens, then one float64 draw from p
    restricted to the valid ones; the weight is the exact Z. logits: [V] float."""
    if not temperature > 0:  # NaN too
        raise ValueError(f"token masking needs a temperature > 0, got {temperature}")
    valid = torch.tensor([bool(accepts(v)) for v in range(logits.shape[-1])], device=logits.device)
    logp = log_probs(logits, temperature)
    log_z = torch.logsumexp(logp.masked_fill(~valid, float("-inf")), -1)
    if not log_z > float("-inf"):
        return ConstrainedDraw(-1, float("-inf"), len(valid))
    token = categorical(logp.masked_fill(~valid, float("-inf")), 1.0, generator)
    return ConstrainedDraw(int(token), float(log_z), len(valid))


@dataclass
class ConstrainedState:
    step: int
    n0: list[int]
    log_weight: list[float]
    constraint_calls: int


@dataclass(frozen=True)
class ConstrainedSampler:
    """constraint(tokens: Long[N] of one row, position: int, token: int) -> bool."""

    constraint: Callable[[torch.Tensor, int, int], bool]
    steps: int = 12
    schedule: Schedule = field(default_factory=lambda: Schedule("cosine"))
    temperature: float = 1.0
    order: str = "random"  # or "confidence": places with the highest max probability first
    draw: str = "awrs"  # or "masking": test every token (the baseline; same draws in law, V calls each)

    def __post_init__(self):
        checks.function(self, "constraint")
        checks.integer(self, "steps")
        checks.function(self, "schedule")
        checks.real(self, "temperature", 0.0, lo_open=True)  # AWRS draws need a temperature > 0
        checks.one_of(self, "order", ("random", "confidence"))
        checks.one_of(self, "draw", ("awrs", "masking"))

    def start(self, hidden: torch.Tensor) -> ConstrainedState:
        return ConstrainedState(0, hidden.sum(1).tolist(), [0.0] * hidden.shape[0], 0)

    def progress(self, state: ConstrainedState) -> float:
        return state.step / self.steps

    def step(self, logits, tokens, state: ConstrainedState, generator=None):
        """logits: [B, N, V]; tokens: Long[B, N] (mask id V at hidden places)."""
        mask_id = logits.shape[-1]
        hidden = tokens == mask_id
        left = hidden.sum(1)
        if state.step >= self.steps - 1:
            keep = torch.zeros_like(left)
        else:
            target = torch.floor(torch.tensor(state.n0, dtype=torch.float64)
                                 * self.schedule((state.step + 1) / self.steps)).long()
            keep = torch.minimum(left - 1, target.to(left.device).clamp(min=1)).clamp(min=0)
        if self.order == "random":
            score = torch.rand(tokens.shape, generator=generator, dtype=torch.float64, device=tokens.device)
        else:
            score = log_probs(logits, self.temperature).max(-1).values
        score = score.masked_fill(~hidden, float("-inf"))
        out = tokens.clone()
        weights = list(state.log_weight)
        calls = state.constraint_calls
        draw = awrs if self.draw == "awrs" else token_masking
        for b in range(tokens.shape[0]):
            n = int(left[b] - keep[b])
            if n <= 0:
                continue
            for pos in score[b].topk(n).indices.tolist():
                row = out[b]
                token, logw, used = draw(logits[b, pos], lambda v, row=row, pos=pos: self.constraint(row, pos, v),
                                         self.temperature, generator)
                calls += used
                weights[b] += logw
                # with no valid token the row's weight is -inf; the unconstrained best keeps it finite
                out[b, pos] = token if token >= 0 else int(logits[b, pos].argmax())
        return out, ConstrainedState(state.step + 1, state.n0, weights, calls)
