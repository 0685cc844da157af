"""An upper bound on the entropy score of a top-p nucleus from a few sums over the whole row (CPU).

Dream's decoding (Ye et al. 2025) ranks hidden places by the negative entropy of their nucleus
(Holtzman et al. 2020) and keeps the best few; a place that cannot be among them need not be read.
With weights w = exp(e) (the top one 1, e <= 0) and the nucleus N of total weight M, the score is

    -H(N) = sum_N w e / M - log M.

Take a threshold tau whose heavier tokens A hold less than top_p of the mass: every token of A has
less than top_p before it, so A lies in N, and N goes on below tau with tokens D of exponent at most
log tau, D's weight being M - W_A. So sum_N w e <= S_A + (M - W_A) log tau, and

    -H(N) <= (S_A - W_A log tau) / M + log tau - log M,

which falls with M (S_A >= W_A log tau), and M >= top_p * total. Only W_A = sum_A w and S_A = sum_A w e
are read from the row. tau is guessed from the row's first two moments as the nucleus's edge under
a log-normal model of the weights, a little above it: then D is a small share of N and the bound is
within about 0.002 nats of the score on an untrained model's flat rows. Where the mass above the
guess reaches top_p the bound is not given (ok False) and the caller bounds that row otherwise. The
guess decides only how tight the bound is, never whether it holds.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch

# how far above the log-normal model's edge tau is put, in standard deviations of the log-weights: a
# little above it, so that the mass above tau is below top_p in the rows the model fits
_ABOVE_EDGE = 0.1


def threshold_bound(weights, exponents, norm, square, top_p: float, above: torch.Tensor):
    """An upper bound on the negative entropy of each row's renormalised nucleus, as `nucleus_draw`
    scores it. weights: [r, V] float32 or float64, the top one 1; exponents: their exponents
    (log-weights, the same shape and dtype); norm: Double[r, 1], the weights' totals; square:
    Double[r], the sums of their squares; above: scratch memory of weights' shape and dtype.
    Returns (Double[r], Bool[r], Double[r]): the bound, where it is given (elsewhere +inf), and how
    many tokens the nucleus surely holds before its last one (those of A, counted where it is given).

    Float rounding is allowed for: each float32 sum is off by at most V ulps of its magnitude, and an
    exponent exceeds the log of its float32 weight by at most a few ulps."""
    v = weights.shape[1]
    z = norm[:, 0]
    ulp = v * torch.finfo(weights.dtype).eps / 2
    # log-normal model: log w ~ N(mu, s^2) gives s^2 = log(V sum w^2 / (sum w)^2) and an edge at the
    # (1 - top_p) quantile of log w under p, which is N(mu + s^2, s^2)
    spread = torch.log(v * square / z.square()).clamp_(min=0).sqrt_()
    level = (z / v).log() + spread.square() / 2 + (_ABOVE_EDGE - NormalDist().inv_cdf(top_p)) * spread
    tau = level.exp().clamp_(max=1)
    # in place in `above` (a product made by vecdot would be fresh memory, slower to touch than to sum)
    torch.gt(weights, tau[:, None].to(weights.dtype), out=above)
    count = above.sum(-1, dtype=torch.float64) if v >= 2**24 else above.sum(-1).double()  # float32 counts to 2^24
    heavy = above.mul_(weights).sum(-1).double()  # W_A
    terms = above.mul_(exponents).sum(-1).double()  # S_A
    # A lies in the nucleus where its mass, read with the float64 sums of the draw, is below top_p
    ok = heavy < top_p * z * (1 - ulp - 1e-12)
    log_tau = tau.log()
    edge = log_tau + 1e-6 * (1 + log_tau.abs())  # a D token's exponent, rounding allowed for
    low = (top_p - 1e-9) * z  # M's least, the float64 sums' rounding allowed for
    rest = terms - heavy * edge  # S_A - W_A log tau, >= 0 but for rounding
    slack = 1e-6 + ulp * (terms.abs() + heavy * edge.abs()) / low
    bound = (torch.maximum(rest / low, rest / z) + edge - low.log() + slack).clamp_(max=0)
    return torch.where(ok, bound, math.inf), ok, count
