"""ReCAP, reused context-aware prediction (arXiv 2505.19089, NeurIPS 2025, P22):
between full reads, cheap steps re-read only the group of places being decoded, against the cached
keys and values of all other places, so later tokens of a group see the earlier ones for about
n_group / N of a full read.

Base schedule: T steps, MaskGIT's pow-2.5 schedule, hidden after base step j = floor(N0 (1 - ((j+1)/T)^2.5))
with at least one token per step (a zero count takes one from the last step; rows with fewer hidden
places than steps commit one per step). The first `pre_full` base steps are plain full steps; after
them every full read is followed by `cache_steps` light reads, so there are
`pre_full + ceil((T - pre_full) / (1 + cache_steps))` full reads. At a full read, every hidden place
gets a proposal drawn at temperature 1 and a confidence log p + c g (Gumbel g, c = choice_temperature
(1 - (k + 1) / K) at group k of K); the group is the most confident places, as many as its base steps
commit, in confidence order. A one-step group commits those proposals; a longer group commits its
first base step's share drawn from the full logits, and each light read draws the next share. The
sampling temperature of base step j goes from 1 to `temperature`, 1 - (1 - temperature) sqrt(j / (T - 1)),
as in ReCAP's script (which draws one-step groups at temperature 1; so do we).

Light reads need a denoiser with cached K/V (`kv_cache.CachedDenoiser`); with any other denoiser the
loop reads fully, which gives the same tokens a cache would if nothing depended on context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import checks
from .categorical import categorical, categorical_logp, gumbel


@dataclass
class ReCAPState:
    group: int  # index of the current group of base steps
    sub: int  # base steps of the group already taken (0: the next read is full)
    counts: list[list[int]]  # per row, tokens committed by each base step
    order: list[list[int]]  # per row, the group's places in confidence order
    taken: list[int]  # per row, places of `order` already committed


@dataclass(frozen=True)
class ReCAPSampler:
    steps: int = 32
    pre_full: int = 12
    cache_steps: int = 1
    choice_temperature: float = 5.5
    temperature: float = 0.7

    def __post_init__(self):
        checks.integer(self, "steps")
        checks.integer(self, "pre_full", 0, self.steps)
        checks.integer(self, "cache_steps", 0)
        checks.real(self, "choice_temperature")
        checks.real(self, "temperature", 0.0, lo_open=True)

    # schedules ---------------------------------------------------------------------------------
    def groups(self) -> list[list[int]]:
        """Base steps merged into each full read: singles first, then runs of 1 + cache_steps."""
        singles = [[j] for j in range(self.pre_full)]
        run = 1 + self.cache_steps
        return singles + [list(range(j, min(j + run, self.steps))) for j in range(self.pre_full, self.steps, run)]

    @property
    def full_reads(self) -> int:
        return self.pre_full + math.ceil((self.steps - self.pre_full) / (1 + self.cache_steps))

    def base_counts(self, n0: int) -> list[int]:
        """Tokens committed by each base step for n0 hidden places; they add up to n0."""
        t = self.steps
        if n0 < t:
            return [1] * n0 + [0] * (t - n0)
        left = [math.floor(n0 * (1 - (j / t) ** 2.5)) for j in range(t)]
        counts = [left[j] - left[j + 1] for j in range(t - 1)]
        counts.append(n0 - sum(counts))
        for j in range(t - 1):
            if counts[j] == 0:
                counts[j], counts[-1] = 1, counts[-1] - 1
        while min(counts) < 1:  # the script's fix can empty the last step; borrow from the largest
            low, big = counts.index(min(counts)), counts.index(max(counts))
            counts[low], counts[big] = counts[low] + 1, counts[big] - 1
        return counts

    def sampling_temperature(self, j: int) -> float:
        frac = j / (self.steps - 1) if self.steps > 1 else 0.0
        return self.temperature + (1 - math.sqrt(frac)) * (1 - self.temperature)

    # the contract ------------------------------------------------------------------------------
    def start(self, hidden: torch.Tensor) -> ReCAPState:
        b = hidden.shape[0]
        counts = [self.base_counts(n) for n in hidden.sum(1).tolist()]
        return ReCAPState(0, 0, counts, [[] for _ in range(b)], [0] * b)

    def progress(self, state: ReCAPState) -> float:
        groups = self.groups()
        return groups[state.group][state.sub] / self.steps if state.group < len(groups) else 1.0

    def light_queries(self, state: ReCAPState, hidden: torch.Tensor) -> torch.Tensor | None:
        """The whole current group (its committed and pending places), or None for a full read."""
        if state.sub == 0:
            return None
        queries = torch.zeros_like(hidden)
        for b, places in enumerate(state.order):
            queries[b, places] = True
        return queries

    def step(self, logits, tokens, state: ReCAPState, generator=None):
        """logits: [B, N, V]; tokens: Long[B, N] (mask id V at hidden places)."""
        groups = self.groups()
        group = groups[state.group]
        base = group[state.sub]
        order, taken = state.order, list(state.taken)
        out = tokens.clone()
        if state.sub == 0:
            order, taken, proposals = self.choose_group(logits, tokens, state, group, generator)
            if len(group) == 1:  # ReCAP's script commits the confidence draws of one-step groups
                for b, places in enumerate(order):
                    out[b, places] = proposals[b, places]
                return out, self.next(state, groups, order, [len(p) for p in order])
        rows, places = [], []
        for b, row in enumerate(order):
            share = row[taken[b] : taken[b] + state.counts[b][base]]
            rows += [b] * len(share)
            places += share
            taken[b] += len(share)
        if places:
            rows_t = torch.tensor(rows, device=tokens.device)
            places_t = torch.tensor(places, device=tokens.device)
            out[rows_t, places_t] = categorical(logits[rows_t, places_t], self.sampling_temperature(base), generator)
        return out, self.next(state, groups, order, taken)

    def choose_group(self, logits, tokens, state: ReCAPState, group: list[int], generator):
        """Proposals at temperature 1 and the group: the most confident hidden places."""
        mask_id = logits.shape[-1]
        hidden = tokens == mask_id
        drawn, score = categorical_logp(logits, 1.0, generator, where=hidden)
        c = self.choice_temperature * (1 - (state.group + 1) / len(self.groups()))
        if c > 0:
            score = score + c * gumbel(score.shape, generator, device=score.device)
        scores = torch.full(tokens.shape, float("-inf"), dtype=torch.float64, device=tokens.device)
        scores[hidden] = score
        proposals = tokens.clone()
        proposals[hidden] = drawn
        ranked = scores.argsort(1, descending=True).tolist()
        order = [ranked[b][: sum(state.counts[b][j] for j in group)] for b in range(tokens.shape[0])]
        return order, [0] * tokens.shape[0], proposals

    def next(self, state: ReCAPState, groups, order, taken) -> ReCAPState:
        sub = state.sub + 1
        if sub >= len(groups[state.group]):
            b = len(order)
            return ReCAPState(state.group + 1, 0, state.counts, [[] for _ in range(b)], [0] * b)
        return ReCAPState(state.group, sub, state.counts, order, taken)
