"""MAGNeT decoding (Ziv et al. 2024, "Masked Audio Generation using a Single Non-Autoregressive
Transformer", P2): streams (codebooks) are decoded one after another, each in its own number of
steps, and within a stream whole spans of `span_len` tokens are hidden again, the least probable
spans first.

Layout: a streams segment `streams x length`, flattened stream-major (stream s holds positions
`offset + s * length ... offset + (s + 1) * length - 1`, see `layout.py`). Spans are the
non-overlapping runs of `span_len` time steps of a stream (a shorter last span when `length` is not
a multiple; audiocraft trims those tokens instead, which would leave them hidden). A span is free if
it holds a hidden place at the start of its stage; given tokens inside it never change.

Stage k takes `steps[k]` steps. Step j has tau_j = j / (steps[k] - 1) and keeps
`max(int(cos(pi tau_j / 2) * free_spans), 1)` spans hidden while the model is read, so step 0 sees
every free span hidden and the last step one. After reading, hidden places are drawn at
temperature `temperature * (steps[k] - 1 - j) / steps[k]` (floored at 0.01, as audiocraft) through a
nucleus of `top_p`; each span drawn this step is scored `1 - max p` (`max`) or `sum -log p` (`prod`)
with p the tempered probabilities of its new tokens, and the next step's count of the highest-scored
of these spans is hidden again; spans kept earlier are never hidden again. MAGNeT's decreasing
guidance is `ClassifierFreeGuidance` with `GuidanceSchedule("decreasing", ...)`: its coefficient
reads `progress` = tau_j, exactly the mask probability audiocraft uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..layout import Layout
from . import checks
from .categorical import nucleus_draw
from .confidence import log_probs
from .select import commit_top

SCORINGS = ("max", "prod")


@dataclass
class MagnetState:
    stage: int
    step: int
    free_spans: list[int]  # per row: free spans of the current stage


@dataclass(frozen=True)
class MagnetSampler:
    streams: int
    length: int
    steps: tuple[int, ...] = (20, 10, 10, 10)
    span_len: int = 3
    temperature: float = 3.0
    anneal_temperature: bool = True
    top_p: float = 0.9
    span_scoring: str = "max"
    offset: int = 0

    def __post_init__(self):
        checks.integer(self, "streams")
        checks.integer(self, "length")
        steps = self.steps
        if not (isinstance(steps, (tuple, list)) and len(steps) == self.streams
                and all(checks.is_integer(s) and s >= 1 for s in steps)):
            raise ValueError(f"MagnetSampler: steps must be one integer >= 1 per stream ({self.streams} of them), "
                             f"got {steps!r}")
        checks.integer(self, "span_len", 1, self.length)
        checks.real(self, "temperature")
        checks.boolean(self, "anneal_temperature")
        checks.real(self, "top_p", 0.0, 1.0, lo_open=True)
        checks.one_of(self, "span_scoring", SCORINGS)
        checks.integer(self, "offset", 0)

    @staticmethod
    def for_layout(layout: Layout, segment: str, steps: tuple[int, ...], **settings) -> MagnetSampler:
        """The sampler for a `streams` segment of `layout`, e.g. `Layout.streams(4, 100)`."""
        seg = layout.segment(segment)
        if seg.kind != "streams":
            raise ValueError(f"segment {segment!r} is a {seg.kind} segment; MAGNeT decodes a streams segment")
        s, t = seg.shape
        return MagnetSampler(s, t, tuple(steps), offset=layout.slice(segment).start, **settings)

    # layout helpers ---------------------------------------------------------------------------
    @property
    def n_spans(self) -> int:
        return -(-self.length // self.span_len)

    def stream(self, k: int) -> slice:
        lo = self.offset + k * self.length
        return slice(lo, lo + self.length)

    def spans(self, places: torch.Tensor) -> torch.Tensor:
        """Bool[B, length] of one stream -> Bool[B, spans]: spans holding any True place."""
        b = places.shape[0]
        padded = places.new_zeros(b, self.n_spans * self.span_len)
        padded[:, : self.length] = places
        return padded.view(b, self.n_spans, self.span_len).any(-1)

    def places(self, spans: torch.Tensor) -> torch.Tensor:
        """Bool[B, spans] -> Bool[B, length]: every place of the chosen spans."""
        return spans.repeat_interleave(self.span_len, 1)[:, : self.length]

    # the contract -----------------------------------------------------------------------------
    def start(self, hidden: torch.Tensor) -> MagnetState:
        end = self.offset + self.streams * self.length
        if hidden.any() and hidden.shape[1] < end:
            raise ValueError(f"MAGNeT streams end at position {end}, but the canvas has {hidden.shape[1]}")
        outside = hidden.clone()
        outside[:, self.offset : end] = False
        if outside.any():
            raise ValueError("MAGNeT fills only its streams segment; a place outside it is hidden")
        return self.enter(hidden, 0)

    def enter(self, hidden: torch.Tensor, stage: int) -> MagnetState:
        """The first stage at or after `stage` that has something hidden."""
        while stage < self.streams and not hidden[:, self.stream(stage)].any():
            stage += 1
        free = self.spans(hidden[:, self.stream(stage)]).sum(1).tolist() if stage < self.streams else []
        return MagnetState(stage, 0, free)

    def tau(self, state: MagnetState) -> float:
        steps = self.steps[state.stage] if state.stage < self.streams else 1
        return state.step / (steps - 1) if steps > 1 else 0.0

    def progress(self, state: MagnetState) -> float:
        return self.tau(state)

    def hidden_spans(self, free: torch.Tensor, tau: float) -> torch.Tensor:
        """Long[B]: spans hidden at the step with time tau, max(int(cos(pi tau / 2) * free), 1)."""
        count = torch.floor(torch.tensor(math.cos(math.pi * tau / 2), dtype=torch.float64) * free.double()).long()
        return torch.where(free > 0, count.clamp(min=1), free)

    def step(self, logits, tokens, state: MagnetState, generator=None):
        """logits: [B, N, V]; tokens: Long[B, N] (mask id V at hidden places)."""
        mask_id = logits.shape[-1]
        k, j = state.stage, state.step
        where = self.stream(k)
        hidden = tokens[:, where] == mask_id  # [B, length]
        steps = self.steps[k]
        temp = self.temperature * (steps - 1 - j) / steps if self.anneal_temperature else self.temperature
        at = logits[:, where][hidden]
        logp = log_probs(at, max(temp, 1e-2))
        drawn = nucleus_draw(logp, self.top_p, 1.0, generator)[0]
        p = logp.gather(-1, drawn.unsqueeze(-1)).squeeze(-1).exp()
        stream = tokens[:, where].clone()
        stream[hidden] = drawn
        out = tokens.clone()
        out[:, where] = stream
        if j >= steps - 1:
            return out, self.enter(out == mask_id, k + 1)
        # span scores from this step's new tokens; spans not drawn now are never hidden again
        per_place = torch.full(hidden.shape, float("-inf"), dtype=torch.float64, device=tokens.device)
        if self.span_scoring == "max":
            per_place[hidden] = p  # reduced by max below, then turned into 1 - max p
        else:
            per_place[hidden] = -torch.log(p)
        padded = per_place.new_full((hidden.shape[0], self.n_spans * self.span_len), float("-inf"))
        padded[:, : self.length] = per_place
        spans = padded.view(-1, self.n_spans, self.span_len)
        if self.span_scoring == "max":
            score = 1 - spans.max(-1).values
        else:
            score = spans.masked_fill(spans == float("-inf"), 0.0).sum(-1)
        drawn_now = self.spans(hidden)
        score = score.masked_fill(~drawn_now, float("-inf"))
        free = torch.tensor(state.free_spans, device=tokens.device)
        count = self.hidden_spans(free, (j + 1) / (steps - 1))
        again = self.places(commit_top(score, count, generator)) & hidden
        stream = stream.masked_fill(again, mask_id)
        out[:, where] = stream
        return out, MagnetState(k, j + 1, state.free_spans)
