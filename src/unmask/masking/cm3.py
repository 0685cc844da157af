"""CM3's causally masked objective (Aghajanyan et al. 2022, P17; InCoder uses it for code): cut a few
spans out of a document, leave a sentinel `<mask:i>` in their place and append them at the end, each
after its sentinel and followed by an end token, so a left-to-right model learns to infill with the
whole document as context.

    source  = x with span i replaced by <mask:i>
    target  = <mask:0> span_0 <eos> <mask:1> span_1 <eos> ...
    example = source ++ target          (length L + 3n for n spans, before truncation)

Spans follow metaseq's `CausalMaskedDataset`: n ~ Poisson(lam) clamped to [0, max_spans]; a span's two
endpoints are uniform on [0, 1] scaled to the length (start rounded down, end rounded to nearest); for
n > 1, n^2 candidates are drawn and non-overlapping ones kept greedily until n; empty spans are
dropped; spans are sorted by start. The example is truncated to the window length, as metaseq's is
(to `tokens_per_sample`), and trained with ordinary next-token prediction over every position
(`objectives/autoregressive.py`). With n spans the example is 3n tokens longer than the window, so
the truncation always cuts its last 3n tokens: the last span's `<eos>` and the 3n - 1 tokens before
it (with a short last span, its sentinel and earlier spans' tokens too). A model therefore sees
`<eos>` only after the earlier spans; rows that must teach where an infill stops are built whole
(`masking/cm3_body.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def cm3_spans(length: int, n: int, generator=None) -> list[tuple[int, int]]:
    """Up to n sorted, non-overlapping, non-empty [start, end) spans of range(length)."""
    if n <= 0 or length <= 0:
        return []
    tries = 1 if n == 1 else n * n
    u = torch.rand(tries, 2, generator=generator, dtype=torch.float64).sort(dim=1).values
    kept: list[tuple[int, int]] = []
    for a, b in u.tolist():
        start, end = int(a * length), min(int(b * length + 0.5), length)
        if end <= start or any(start < e and s < end for s, e in kept):
            continue
        kept.append((start, end))
        if len(kept) == n:
            break
    return sorted(kept)


def cm3_transform(tokens: torch.Tensor, spans: list[tuple[int, int]], sentinels, eos: int) -> torch.Tensor:
    """tokens: Long[L]; spans sorted and disjoint. Returns Long[L + 3 * len(spans)]: source ++ target."""
    if len(spans) > len(sentinels):
        raise ValueError(f"{len(spans)} spans but only {len(sentinels)} sentinels")
    source, target, prev = [], [], 0
    for i, (start, end) in enumerate(spans):
        if start < prev or end <= start:
            raise ValueError(f"spans must be sorted, disjoint and non-empty, got {spans}")
        sentinel = tokens.new_tensor([sentinels[i]])
        source += [tokens[prev:start], sentinel]
        target += [sentinel, tokens[start:end], tokens.new_tensor([eos])]
        prev = end
    source.append(tokens[prev:])
    return torch.cat(source + target)


@dataclass(frozen=True)
class CausalMasking:
    """tokens Long[B, L] -> Long[B, L]: each row transformed with its own spans, truncated to L."""

    sentinels: tuple[int, ...]
    eos: int
    lam: float = 1.0  # CM3: Poisson(1)
    max_spans: int = 4

    def __post_init__(self):
        if self.lam < 0 or self.max_spans < 0 or self.max_spans > len(self.sentinels):
            raise ValueError(f"need lam >= 0 and 0 <= max_spans <= {len(self.sentinels)} sentinels, "
                             f"got lam={self.lam}, max_spans={self.max_spans}")

    def __call__(self, tokens: torch.Tensor, generator=None) -> torch.Tensor:
        b, length = tokens.shape
        counts = torch.poisson(torch.full((b,), float(self.lam), dtype=torch.float64), generator=generator)
        out = torch.empty_like(tokens)
        for row, n in enumerate(counts.clamp(max=self.max_spans).long().tolist()):
            spans = cm3_spans(length, n, generator)
            out[row] = cm3_transform(tokens[row], spans, self.sentinels, self.eos)[:length]
        return out
