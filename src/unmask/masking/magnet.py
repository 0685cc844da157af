"""MAGNeT's training mask (Ziv et al. 2024, "Masked Audio Generation using a Single Non-Autoregressive
Transformer", arXiv:2401.04577, section 3 and appendix C): each row learns one codebook stream at a
time, given the streams before it and none after it, with the stream itself hidden in spans.

Layout: a `streams` segment `S x T`, flattened stream-major (stream s holds the segment's places
`s * T ... (s + 1) * T - 1`). For each row:
- a stage k is drawn uniformly from 0..S-1 (audiocraft's solver draws one stage per batch; one per row
  gives the same expectation with less variance between steps);
- streams before k are given whole, streams after k are hidden whole;
- stream k is hidden in spans at the rate m the objective passes as `ratio` (MAGNeT's
  m = cos(pi u / 2), u ~ U(0, 1), is the default cosine `Schedule` of `MaskedTokenModeling`): a number
  s of span starts is drawn uniformly without replacement from the T places, and each start hides
  itself and the `span_len - 1` places after it (cut at the stream's end). Spans overlap, so s is
  chosen so that the *expected* covered share is m: s random starts leave a given run of L places
  free with probability C(T - L, s) / C(T, s), so the share is about 1 - C(T - L, s) / C(T, s)
  (appendix C; exact for every place but the first L - 1, which fewer starts can reach), inverted by
  a lookup table over m in {0, 0.01, ..., 1} that takes the fewest starts whose share reaches m
  (`starts_for_rate`, as audiocraft's `_calc_mean_maskrate_to_u_LUT`), and at least one start.

Not an exact-count masker: the hidden count of stream k varies around its expectation (DESIGN.md's
exact counts hold for the maskers in `base.py`). What is exact is the stage structure, which is why
`stage` and `targets` can read it back from a mask alone: k is the first stream with a hidden place
(at least one start, and the earlier streams are given), and the loss of MAGNeT is scored on the
hidden places of stream k only (`targets`; `objectives.MagnetTokenModeling`), not on the later
streams, which are hidden only so that the model learns stream k without them. The paper's restricted
attention window for stages above 0 is left out.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from ..layout import Layout
from .base import ratio_per_segment, uniform

RATE_STEPS = 100  # the lookup table's resolution: m in {0, 1/100, ..., 1}


def span_rate(length: int, span_len: int, starts: int) -> float:
    """1 - C(T - L, s) / C(T, s): the chance that a run of L = `span_len` places of a stream of
    T = `length` holds at least one of s uniform starts (MAGNeT's appendix C mask rate)."""
    free = 1.0
    for j in range(starts):  # C(T - L, s) / C(T, s) = prod_j (T - L - j) / (T - j), free of overflow
        free *= max(length - span_len - j, 0) / (length - j)
    return 1.0 - free


@functools.cache
def starts_for_rate(length: int, span_len: int) -> tuple[int, ...]:
    """The lookup table: entry i is the fewest starts s in 0..T-1 with span_rate(s) >= i / 100 (T - 1
    when none reaches it), for i = 0..100."""
    rates = [span_rate(length, span_len, s) for s in range(length)]
    table = []
    for i in range(RATE_STEPS + 1):
        s = next((s for s, r in enumerate(rates) if r >= i / RATE_STEPS), length - 1)
        table.append(s)
    return tuple(table)


@dataclass(frozen=True)
class MagnetMask:
    """(layout, batch_size, *, ratio, generator) -> Bool[B, N]: MAGNeT's stage-and-span mask of the
    streams segment `segment` (module docstring); other segments are given. ratio: float or Float[B],
    the span mask rate m of each row's stage stream."""

    segment: str = "streams"
    span_len: int = 3  # MAGNeT: 3 tokens, 60 ms at EnCodec's 50 Hz

    def __post_init__(self):
        if not isinstance(self.span_len, int) or self.span_len < 1:
            raise ValueError(f"MagnetMask span_len must be an integer >= 1, got {self.span_len!r}")

    def shape(self, layout: Layout) -> tuple[int, int, slice]:
        """(streams S, length T, the segment's places in the layout)."""
        seg = layout.segment(self.segment)
        if seg.kind != "streams":
            raise ValueError(f"MagnetMask hides a streams segment; {self.segment!r} is a {seg.kind} segment")
        s, t = seg.shape
        return s, t, layout.slice(self.segment)

    def span_mask(self, rates: torch.Tensor, length: int, generator) -> torch.Tensor:
        """rates: Float64[B] -> Bool[B, T]: round(100 m)'s table entry of starts (at least 1), drawn
        uniformly without replacement, each extended by span_len - 1 places to its right."""
        table = torch.tensor(starts_for_rate(length, self.span_len))
        starts = table[torch.round(rates * RATE_STEPS).long()].clamp(min=1)  # [B]
        order = uniform((len(rates), length), generator).argsort(dim=1)  # a random permutation per row
        begin = order < starts[:, None]  # [B, T], exactly starts[b] True per row
        hidden = begin.clone()
        for shift in range(1, self.span_len):
            hidden[:, shift:] |= begin[:, :-shift]  # a span running past the end is cut there
        return hidden

    def __call__(self, layout: Layout, batch_size: int, *, ratio=0.5, generator=None, **context) -> torch.Tensor:
        s, t, where = self.shape(layout)
        rates = ratio_per_segment(ratio, batch_size, 1)[:, 0]  # [B] float64
        stage = torch.randint(0, s, (batch_size,), generator=generator)  # [B]
        streams = torch.arange(s)
        spans = self.span_mask(rates, t, generator)  # [B, T]
        hidden = (streams[None, :, None] > stage[:, None, None]).expand(batch_size, s, t).clone()  # [B, S, T]
        hidden[streams[None, :] == stage[:, None]] = spans
        mask = torch.zeros(batch_size, layout.n, dtype=torch.bool)
        mask[:, where] = hidden.reshape(batch_size, s * t)
        return mask

    def stage(self, layout: Layout, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: Bool[B, N] made by this masker -> Long[B], each row's stage (the first stream with a
        hidden place; S for a row with none)."""
        s, t, where = self.shape(layout)
        any_hidden = hidden[:, where].reshape(-1, s, t).any(-1)  # [B, S]
        first = torch.where(any_hidden, torch.arange(s, device=hidden.device), s)
        return first.min(dim=1).values

    def targets(self, layout: Layout, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: Bool[B, N] -> Bool[B, N], the places MAGNeT's loss reads: the hidden places of each
        row's stage stream (a subset of `hidden`)."""
        s, t, where = self.shape(layout)
        stage = self.stage(layout, hidden)
        streams = torch.arange(s, device=hidden.device).repeat_interleave(t)  # [S * T], each place's stream
        out = torch.zeros_like(hidden)
        out[:, where] = hidden[:, where] & (streams[None, :] == stage[:, None])
        return out
