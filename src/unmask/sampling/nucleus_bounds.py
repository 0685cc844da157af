"""An upper bound on the entropy score of a top-p nucleus from a few sums over the whole row (CPU).

Dream's decoding (Ye et al. 2025) ranks hidden places by the negative entropy of their nucleus
(Holtzman et al. 2020) and keeps the best few; a place that cannot be among them need not be read.
The grouping rule of entropy splits the row's distribution p into the nucleus N (mass m) and the
tail T (mass 1 - m):

    H(p) = h(m) + m H(N) + (1 - m) H(T),    h(m) = -m log m - (1 - m) log(1 - m),

so the score -H(N) = (h(m) + (1 - m) H(T) - H(p)) / m, and H(T) <= log |T|. H(p) is one dot product
of the weights with their exponents. |T| is at most V - C, where C counts the tokens heavier than a
threshold tau whose mass above it is below top_p: all of them are in the nucleus. tau is guessed
from the row's first two moments as the nucleus's edge under a log-normal model of the weights,
a little above it; where the mass above the guess reaches top_p the bound is not given (ok False)
and the caller bounds that row otherwise. The guess only decides how tight the bound is, never
whether it holds.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch

# how far above the log-normal model's edge tau is put, in standard deviations of the log-weights: a
# little above it, so that the mass above tau is below top_p in most rows the model fits
_ABOVE_EDGE = 0.05


def tail_entropy_bound(weights, exponents, norm, square, top_p: float, above: torch.Tensor):
    """An upper bound on the negative entropy of each row's renormalised nucleus, as `nucleus_draw`
    scores it. weights: [r, V] float32 or float64, the top one 1; exponents: their exponents
    (log-weights, the same shape and dtype); norm: Double[r, 1], the weights' totals; square:
    Double[r], the sums of their squares; above: scratch memory of weights' shape and dtype.
    Returns (Double[r], Bool[r], Double[r]): the bound, where it is given (elsewhere the bound is
    +inf), and how many tokens the nucleus surely holds above its last one (counted where it is given).

    Float rounding is allowed for: the float32 sums are off by at most V ulps of their magnitude,
    and the weights' total by as much, which moves the grouping rule's terms by at most that times
    their slopes."""
    r, v = weights.shape
    z = norm[:, 0]
    ulp = v * torch.finfo(weights.dtype).eps / 2
    dot = torch.linalg.vecdot(weights, exponents).double()  # sum of w log w
    entropy = z.log() - dot / z
    # log-normal model: log w ~ N(mu, s^2) gives s^2 = log(V sum w^2 / (sum w)^2) and an edge at the
    # (1 - top_p) quantile of log w under p, which is N(mu + s^2, s^2)
    spread = torch.log(v * square / z.square()).clamp_(min=0).sqrt_()
    level = (z / v).log() + spread.square() / 2 + (_ABOVE_EDGE - NormalDist().inv_cdf(top_p)) * spread
    tau = level.exp().clamp_(max=1)
    torch.gt(weights, tau[:, None].to(weights.dtype), out=above)
    heavy = torch.linalg.vecdot(weights, above).double()
    count = above.sum(-1, dtype=torch.float64) if v >= 2**24 else above.sum(-1).double()  # float32 counts to 2^24
    # every token above tau has less than top_p before it (float64 sums of w / total in the read
    # differ from this float32 sum by less than its V ulps), so the nucleus holds them all and goes
    # on below tau: its last token weighs at most tau, and m < top_p + tau / total
    ok = heavy < top_p * z * (1 - ulp - 1e-12)
    low = top_p - 1e-9
    high = (top_p + tau / z + 1e-9).clamp_(max=1)
    tail = torch.log((v - count).clamp_(min=1))  # H(T) <= log |T|, |T| <= V - count
    peak = torch.minimum(torch.full_like(high, max(0.5, low)), high)  # h's largest over [low, high]
    h = -(peak * peak.log() + (1 - peak) * torch.log1p(-peak).nan_to_num_(0.0))
    # each term at its largest over m in [low, high]: h(m) / m at most max h / low, (1 - m) log|T| / m
    # falls with m, -H(p) / m rises with it (H(p) >= 0)
    bound = h / low + (1 - low) * tail / low - entropy / high
    slack = 1e-6 + ulp * (dot.abs() / z + (tail - (1 - high).clamp(min=ulp).log() + 2) / low)
    bound = (bound + slack).clamp_(max=0)
    return torch.where(ok, bound, math.inf), ok, count
