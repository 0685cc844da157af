"""A top-p draw read from buckets of the weights, with no sort of the vocabulary (CPU).

Nucleus sampling (Holtzman et al. 2020, "The curious case of neural text degeneration") keeps the
most likely tokens whose mass before each is below top-p; read from a sort of all V, that sort is
nearly all the cost when the nucleus is a large share of V, as it is for a flat (untrained or high
temperature) distribution, and Dream's decoding (Ye et al. 2025) reads one at every hidden place of
every step. Here each row's weights go into buckets by the leading bits of their floats (8
buckets for each factor of 2 below the top weight, 1; one last bucket for all below about 2^-32): a
bucket holds only tokens less likely than those of the buckets before it, so the sorted order is
bucket by bucket. One pass sums each bucket's weight; the nucleus ends in the first bucket whose cumulative
mass reaches top-p, and only that bucket's tokens, and those of the bucket the uniform falls in, are
put in order (most likely first, ties by id), as the sort would put them.

The token set, the draw for a given uniform and the scores are those of the sorted read up to the
float64 rounding of the sums (they are summed bucket by bucket, not token by token): a token on the
nucleus's edge or the draw's may differ only where a sum lies within a few ulps of top-p or of the
uniform's target. Every sum reads only its own row, so a row's result never depends on its batch
mates.
"""

from __future__ import annotations

import torch

from .scratch import scratch

_SHARE_BITS = 3  # 2^3 buckets for each factor of 2 of the weight
_FACTORS = 32  # of 2 below the top weight; every lighter token (and every weight 0) shares one last bucket
BUCKETS = (_FACTORS << _SHARE_BITS) + 1


def bucket_ids(weights: torch.Tensor) -> torch.Tensor:
    """Long[r, V]: each weight's bucket, 0 for the top weight 1, never smaller for a lighter weight: k
    for weights in [2^-e (1 + j / 8), 2^-e (1 + (j + 1) / 8)) with k = 8 e - j, and BUCKETS - 1 (256)
    for every weight below 2^-32 * 9 / 8, 0 included. weights: float32 or float64 in [0, 1]; the
    bucket is read off the float's exponent and the leading 3 bits of its mantissa. The result is
    scratch memory (`scratch`), valid until the next call on this thread."""
    if weights.dtype == torch.float64:
        bits, shift = weights.view(torch.int64), 52 - _SHARE_BITS
    else:
        bits, shift = weights.view(torch.int32), 23 - _SHARE_BITS
    one = int(torch.tensor(1.0, dtype=weights.dtype).view(bits.dtype)) >> shift
    below = torch.bitwise_right_shift(bits, shift, out=scratch("bits", bits.shape, bits.dtype))
    below = torch.sub(one, below, out=below).clamp_(0, BUCKETS - 1)
    return scratch("buckets", bits.shape, torch.long).copy_(below)  # scatter_add_ reads int32 ids 9x slower


def members(ids: torch.Tensor, which: torch.Tensor, block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens in bucket which[i] of each row i, most likely first (by the logits `block`, ties by
    id): Long[r, K] (each row's tokens, then token 0) and the counts, Long[r]."""
    r, v = ids.shape
    inside = torch.eq(ids, which[:, None], out=scratch("inside", ids.shape, torch.bool))
    at = inside.view(-1).nonzero()[:, 0]  # row by row, ids in order
    row = at.div(v, rounding_mode="floor")
    count = torch.bincount(row, minlength=r)
    width = max(int(count.max()), 1) if len(at) else 1  # a CPU tensor: this path runs only on the CPU
    place = torch.arange(len(at)) - (count.cumsum(0) - count)[row]
    # each row's tokens in id order, padded with -inf after them: a stable sort puts the padding last
    values = torch.full((r, width), float("-inf"), dtype=block.dtype)
    values[row, place] = block.reshape(-1)[at]
    tokens = torch.zeros(r, width, dtype=torch.long)
    tokens[row, place] = at - row * v
    return tokens.gather(1, values.sort(dim=1, descending=True, stable=True)[1]), count


def _in_order(ids, which, block, weights, norm):
    """Bucket which[i]'s tokens of each row in sorted order, their probabilities (0 past the row's
    count) and whether each place holds a token: Long[r, K], Double[r, K], Bool[r, K]."""
    tokens, count = members(ids, which, block)
    valid = torch.arange(tokens.shape[1]) < count[:, None]
    probs = weights.gather(1, tokens).double().masked_fill_(~valid, 0.0) / norm
    return tokens, probs, valid


def _by_bucket(ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Double[r, BUCKETS]: the float64 sum of each row's values in each bucket."""
    wide = values if values.dtype == torch.float64 else scratch("wide", values.shape, torch.float64).copy_(values)
    return torch.zeros(len(ids), BUCKETS, dtype=torch.float64).scatter_add_(1, ids, wide)


def _start(ends: torch.Tensor, bucket: torch.Tensor) -> torch.Tensor:
    """Double[r, 1]: the mass before each row's bucket."""
    return ends.gather(1, (bucket - 1).clamp(min=0)).masked_fill_(bucket == 0, 0.0)


def _draw(ids, ends, crossing, kept, mass, block, weights, norm, u):
    """The first token whose cumulative mass passes u * mass (u None: 0, the most likely token, the
    lowest id among ties), in the first bucket whose mass passes it, at the latest the nucleus's edge
    bucket, and its probability: Long[r], Double[r, 1]."""
    target = torch.zeros_like(mass) if u is None else \
        torch.minimum(u[:, None] * mass, torch.nextafter(mass, torch.zeros_like(mass)))
    bucket = torch.searchsorted(ends, target, right=True).clamp_(max=crossing)
    found, q, ok = _in_order(ids, bucket[:, 0], block, weights, norm)
    last = torch.where(bucket == crossing, kept, ok.sum(1, keepdim=True)) - 1
    at = ((_start(ends, bucket) + q.cumsum(1) <= target) & ok).sum(1, keepdim=True).clamp_(max=last)
    return found.gather(1, at)[:, 0], q.gather(1, at)


def _edge(ids, weights, norm, top_p):
    """Each row's cumulative bucket masses (Double[r, BUCKETS]), the bucket its nucleus ends in and the
    mass before it (Long[r, 1], Double[r, 1]). The nucleus ends in the first bucket whose mass through it
    reaches top_p: every token before it has less than top_p before it, every token after it at least top_p."""
    ends = _by_bucket(ids, weights).div_(norm).cumsum_(1)
    crossing = (ends < top_p).sum(1, keepdim=True).clamp_(max=BUCKETS - 1)
    return ends, crossing, _start(ends, crossing)


def _head_terms(ids, terms, crossing):
    """Double[r, 1]: the float64 sum of each row's terms (weight * exponent) in the buckets before its edge."""
    return _by_bucket(ids, terms).masked_fill_(torch.arange(BUCKETS) >= crossing, 0.0).sum(1, keepdim=True)


def _upper_logs() -> torch.Tensor:
    """Double[BUCKETS]: the log of each bucket's upper end: bucket k = 8 e - j holds weights below
    2^-e (1 + (j + 1) / 8), the last one below 2^-32 * 9 / 8."""
    k = torch.arange(BUCKETS, dtype=torch.float64)
    e = torch.ceil(k / (1 << _SHARE_BITS))
    j = e * (1 << _SHARE_BITS) - k
    return (torch.exp2(-e) * (1 + (j + 1) / (1 << _SHARE_BITS))).log()


_UPPER_LOGS = _upper_logs()


def entropy_bound(weights, norm, exponents, top_p: float) -> torch.Tensor:
    """Double[r]: an upper bound on each row's `read_bucketed` entropy score (negated, as there), with
    no read of the edge bucket's members: the buckets before the edge give their exact sum of weight *
    exponent (the same float64 sums `read_bucketed` adds); of the edge bucket only some tokens are
    kept, each with an exponent below the log of the bucket's upper end hi, and the nucleus's mass m
    lies between top_p and top_p + hi / total (its last token had less than top_p before it). Each term
    of the score is taken at its largest over that range. A bucket spans a factor 9/8, so the bound
    exceeds the score by at most log(9/8) times the edge bucket's share of the nucleus (about 0.003
    nats for an untrained model's flat rows at T 0.2, top-p 0.95, where the scores spread by 0.07).
    Arguments as `read_bucketed`'s."""
    ids = bucket_ids(weights)
    ends, crossing, base = _edge(ids, weights, norm, top_p)
    head = _head_terms(ids, exponents().mul_(weights), crossing)
    # a kept edge token's exponent is below log(hi) but for the float32 exp's and product's rounding
    # (about 1e-7 relative), allowed for with room to spare
    upper = _UPPER_LOGS[crossing]
    per_weight = upper + 1e-6 * (1 + upper.abs())
    low = torch.full_like(base, top_p - 1e-9)  # the sums' float64 rounding, far larger than it is
    high = torch.minimum(top_p + upper.exp() / norm, ends.gather(1, crossing)) + 1e-9
    # score = head / (total m) + (1 - base / m) * (mean exponent of the kept edge tokens) - log(total m);
    # head <= 0, so the first term is largest at the largest m and the last at the smallest
    edge = torch.maximum((1 - base / low) * per_weight, (1 - base / high) * per_weight)
    return (head / (norm * high) + edge - (norm * low).log()).clamp_(max=0)[:, 0]


def read_bucketed(block, weights, norm, exponents, u, top_p: float, score: str | None, draw: bool = True):
    """Draw from the nucleus of each row. block: [r, V] logits; weights: [r, V] (float32 or float64,
    the top one 1); norm: Double[r, 1], the weights' totals; exponents: a function giving the weights'
    exponents (the shifted logits, [r, V] of the weights' dtype, which may be written), asked for only
    for the entropy; u: Double[r] uniforms, or None for the most likely token. score as `nucleus_draw`'s. Returns
    (Long[r], Double[r] or None). draw=False (a margin or entropy score, which the draw does not
    change): the scores only, every token -2."""
    ids = bucket_ids(weights)
    ends, crossing, base = _edge(ids, weights, norm, top_p)
    edge, probs, valid = _in_order(ids, crossing[:, 0], block, weights, norm)
    inner = probs.cumsum(1)
    kept = ((base + (inner - probs) < top_p) & valid).sum(1, keepdim=True).clamp_(min=1)
    mass = base + inner.gather(1, kept - 1)
    if not draw:
        if score not in ("margin", "entropy"):
            raise ValueError(f"only a margin or an entropy can be read without the draw, not {score!r}")
        tokens = torch.full((len(block),), -2, dtype=torch.long)
    else:
        tokens, p = _draw(ids, ends, crossing, kept, mass, block, weights, norm, u)
    if score is None:
        return tokens, None
    if score == "probability":
        return tokens, (p / mass)[:, 0]
    p1 = 1 / norm  # the top weight is 1
    if score == "margin":
        # more than one token: the edge keeps two, or bucket 0 (the top token) lies before the edge
        several = (kept > 1) | (crossing > 0)
        second = weights.topk(2, dim=-1)[0][:, 1:].double() / norm
        return tokens, ((p1 - torch.where(several, second, 0.0)) / mass)[:, 0]
    # negative entropy of the renormalised nucleus as the sorted read computes it: the sum of
    # weight * exponent over the nucleus (each product in the weights' dtype, summed in float64)
    terms = exponents().mul_(weights)
    head = _head_terms(ids, terms, crossing)
    tail = terms.gather(1, edge).double().masked_fill_(torch.arange(edge.shape[1]) >= kept, 0.0).sum(1, keepdim=True)
    return tokens, ((head + tail) * p1 / mass - (mass / p1).log())[:, 0]
