"""`torch.multinomial(P, 1, generator=g)` at some rows of P only, with the same tokens and the generator
left where the whole call leaves it, on a CPU generator.

For one sample a row, torch's CPU multinomial is the exponential race: E = float32 Exp(1) noise shaped
like P, and the token is `argmax(P / E)` (the first index of the row's largest ratio). Each entry of E
is made, in row-major order, from one float64 uniform u of the generator as `float32(-log1p(-u))`,
with the C library's log1p; `torch.rand(..., dtype=float64)` reads the same uniforms off the generator.
So every uniform of P is still drawn (the generator must end where multinomial leaves it: a uniform
costs about a quarter of an exponential on a CPU), but the logarithms, the division and the argmax
are made at the wanted rows only. aMUSEd's sampler draws every place of the canvas, given ones too,
and keeps the hidden places' tokens (diffusers' `AmusedScheduler`); this gives those tokens for the
hidden places' share of the work.

The logarithms come from torch's vectorised log1p, which may differ from the C library's by an ulp
of float64. That moves the float32 value only where the float64 result lies next to a float32
rounding tie, so within `_TIE_ULPS` float64 ulps of one (about 6 entries in 10^8) the C library's own
log1p (`math.log1p`) is taken instead, and every entry of E equals torch's bit for bit.
"""

from __future__ import annotations

import math

import torch

# a float64 carries 29 more significand bits than a float32: the float32 rounding of a float64 is a
# tie when those bits read 1 followed by 28 zeros
_DROPPED = (1 << 29) - 1
_TIE = 1 << 28
_TIE_ULPS = 16  # two log1p implementations within an ulp each of the true value differ by two at most
_BLOCK = 1 << 18  # float64 uniforms drawn and read at a time (2 MB, in cache)


def exponentials(u: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """float32(-log1p(-u)) with the C library's log1p, for float64 uniforms u in [0, 1): torch's CPU
    Exp(1) noise for the same uniforms. out: a float64 buffer shaped like u for the work (optional).
    Returns Float32, shaped like u."""
    q64 = torch.neg(u, out=out).log1p_().neg_()  # -log1p(-0) is +0, as torch's -1 * log1p(-u) is
    # the low 29 bits within _TIE_ULPS of the tie, in three passes: (bits - (tie - ulps)) mod 2^29 <= 2 ulps
    near = q64.view(torch.int64).sub(_TIE - _TIE_ULPS).bitwise_and_(_DROPPED) <= 2 * _TIE_ULPS
    q = q64.float()
    at = near.view(-1).nonzero().squeeze(1)
    if at.shape[0]:  # rare: a few in 10^8 entries
        exact = [-math.log1p(-x) for x in u.reshape(-1)[at].tolist()]
        q.view(-1)[at] = torch.tensor(exact, dtype=torch.float64).float()
    return q


def multinomial_rows(probs: torch.Tensor, rows: torch.Tensor, total: int,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """`torch.multinomial(P, 1, generator=generator)[rows, 0]` for a float32 P of `total` rows whose
    rows `rows` are `probs`, and the generator advanced as that call advances it; the other rows' tokens
    are never made. probs: Float32[M, V] (non-negative, each row with a positive entry: softmax output;
    unchecked, where multinomial reads the tensor twice to check; `generate` refuses NaN logits itself);
    rows: Long[M], distinct, in [0, total). CPU generator (None: torch's default CPU generator) and
    CPU tensors. The uniforms are drawn a block of rows at a time, in order, so the float64 work stays
    in cache; one read of the blocks' bounds per call. Returns Long[M]."""
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"multinomial_rows reproduces torch's CPU draw; got a {generator.device.type} generator")
    if probs.dtype != torch.float32 or probs.ndim != 2 or probs.device.type != "cpu":
        raise ValueError(f"probs must be a CPU Float32[M, V], got {probs.dtype} {tuple(probs.shape)} on {probs.device}")
    if rows.shape != probs.shape[:1]:
        raise ValueError(f"rows must be Long[M] with M = {probs.shape[0]} (the rows of probs), got {tuple(rows.shape)}")
    v = probs.shape[1]
    rows, order = rows.sort()
    step = max(1, _BLOCK // max(v, 1))
    edges = torch.tensor([*range(0, total, step), total], dtype=rows.dtype)
    bounds = torch.searchsorted(rows, edges).tolist()  # the rows of each block, and none below 0 or from total
    if bounds[0] != 0 or bounds[-1] != len(rows):
        raise ValueError(f"rows must lie in [0, {total}) (total rows)")
    drawn = torch.empty_like(rows)
    work = torch.empty(min(step, total), v, dtype=torch.float64)
    for i, lo in enumerate(range(0, total, step)):
        u = torch.rand(min(step, total - lo), v, dtype=torch.float64, generator=generator)  # every row's, in order
        a, b = bounds[i], bounds[i + 1]
        if a == b:
            continue
        wanted = u if b - a == len(u) else u.index_select(0, rows[a:b] - lo)
        drawn[a:b] = (probs.index_select(0, order[a:b]) / exponentials(wanted, work[: b - a])).argmax(-1)
    return torch.empty_like(drawn).index_copy_(0, order, drawn)
