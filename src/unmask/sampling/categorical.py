"""The one categorical draw every sampler uses, in float64.

Float32 Gumbel noise cannot exceed about 16.6 (its uniforms have 2^-24 resolution), so a token whose
logit is about 19.4 below the best can never win and the whole tail is under-sampled: a lower
effective temperature (Zheng et al. 2024, "Masked diffusion models are secretly time-agnostic masked
models and exploit inaccurate categorical sampling", P39). We draw by inverse CDF with one float64
uniform per row (one random number per row instead of one per (row, token)), on float64 sums of the
weights exp(logit - max): every token owns an interval of u as wide as its probability, to the
logits' own precision, down to 87 nats below the best token for float32 logits (where a float32
weight would turn subnormal) and 708 for float64 logits.
"""

from __future__ import annotations

import math

import torch

from .nucleus_bounds import threshold_bound
from .nucleus_buckets import entropy_bound, read_bucketed
from .scratch import scratch


def categorical(
    logits: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw one token per row from softmax(logits / temperature).

    logits: [..., V] float (-inf allowed; not all -inf). temperature 0 means argmax.
    Returns Long[...].
    """
    if temperature == 0 and logits.shape[-1] > 0:  # no log-probability to compute beside it
        return first_argmax(logits)
    return categorical_logp(logits, temperature, generator)[0]


def categorical_logp(
    logits: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None,
    where: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`categorical`, and the float64 log-probability of each drawn token under the distribution it
    was drawn from (under softmax(logits) for temperature 0). Returns (Long[...], Float64[...]).

    where: Bool[...] (logits' leading shape): draw only there and return Long[M], Float64[M] in
    row-major order, as `categorical_logp(logits[where])` would, without copying the logits.
    """
    if not temperature >= 0:  # NaN too
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if logits.shape[-1] == 0:
        raise ValueError("cannot draw from an empty vocabulary")
    if where is not None:
        flat = logits.reshape(-1, logits.shape[-1])
        rows = _drawn_rows(where, flat.shape[0])
    else:
        rows, flat = None, logits
    if temperature == 0 or logits.numel() == 0:
        picked = flat if rows is None else flat[rows]
        tokens = first_argmax(picked)
        return tokens, token_logp(picked, tokens).double()
    shape = logits.shape[:-1] if rows is None else rows.shape
    u = torch.rand(shape, generator=generator, dtype=torch.float64, device=logits.device)
    return _inverse_cdf(flat, u, temperature, rows)


def _drawn_rows(where: torch.Tensor, rows: int) -> torch.Tensor | None:
    """Long[M]: the True places of `where` as rows of the flattened logits (row-major), or None when
    all `rows` are drawn, so that nothing is gathered."""
    index = torch.nonzero(where.reshape(-1)).squeeze(1)
    return None if index.numel() == rows else index


def _chunks_at(grid: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
    """grid: [r, chunks, C]; at: Long[r, k] chunk indices. Returns [r, k, C], those chunks of each row."""
    return grid.gather(1, at[:, :, None].expand(-1, -1, grid.shape[2]))


_ARGMAX_CHUNK = 32
_ARGMAX_CHUNKED_FROM = 2**18


def first_argmax(logits: torch.Tensor) -> torch.Tensor:
    """`logits.argmax(-1)`: the first index of each row's largest value (NaN counts as largest, as in
    argmax). On a CPU, for V a multiple of 32 and at least 256 and 2^18 entries in all, the first chunk
    of 32 whose max is the row's max is found, then the first index inside it: the same index as
    argmax, about twice as fast there, where `argmax` over V costs many times `amax`.
    logits: [..., V] -> Long[...]."""
    v = logits.shape[-1]
    # below 2^18 entries (256 rows of 1024) the chunked read's dozen operations cost more than they save
    # beside a denoiser's read, whose weights and activations leave the loop's code and data out of cache
    if (logits.device.type != "cpu" or v % _ARGMAX_CHUNK or v < 8 * _ARGMAX_CHUNK
            or logits.numel() < _ARGMAX_CHUNKED_FROM):
        return logits.argmax(-1)
    flat = logits.reshape(-1, v)
    r, size = flat.shape[0], _ARGMAX_CHUNK
    grid = flat.view(r, v // size, size)
    chunk = grid.amax(-1).argmax(-1, keepdim=True)  # [r, 1]
    inside = _chunks_at(grid, chunk).squeeze(1).argmax(-1, keepdim=True)
    return (chunk * size + inside).reshape(logits.shape[:-1])


def inverse_cdf(logits: torch.Tensor, u: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The token whose float64 CDF interval holds u. logits: [..., V]; u: Float64[...] in [0, 1).

    Token v is returned for u in [F(v-1), F(v)), an interval as wide as its probability.
    """
    return _inverse_cdf(logits, u, temperature)[0]


# rows are processed a few hundred at a time: a whole [M, V] buffer is fresh memory on every call and
# touching it costs more than the arithmetic; a float32 block of about 2 MB stays in cache
_BLOCK_ELEMENTS = 2**19


# exp(x) for x at or below a floor becomes exactly 0: a float32 (float64) exp whose result would be
# subnormal, or whose input is -inf, takes a path many times slower on x86 CPUs, and a trained model's
# tempered logits reach that far. The input is clamped at the floor, and exp(floor), computed by the
# same kernel, is subtracted from every weight. exp(-87) is about 1.6e-38, the smallest normal float32
EXP_FLOOR = {torch.float32: -87.0, torch.float64: -708.0}
_FLOOR_CACHE: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def _floor(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(floor, exp(floor)) as 0-dim tensors of `dtype` on `device`, exp by that device's own kernel."""
    key = (dtype, device)
    if key not in _FLOOR_CACHE:
        floor = torch.full((), EXP_FLOOR[dtype], dtype=dtype, device=device)
        _FLOOR_CACHE[key] = floor, floor.exp()
    return _FLOOR_CACHE[key]


def shifted_logits(block: torch.Tensor, top: torch.Tensor, temperature: float, out: torch.Tensor) -> torch.Tensor:
    """(block - top) / temperature, at least the floor, written into `out` (block's shape, float32 or
    float64): the exponents of `shifted_weights`. Each op is exactly rounded, so an element gets the
    same value wherever it sits, in a whole row or among a few gathered tokens."""
    if block.dtype == out.dtype:
        torch.sub(block, top, out=out)
    else:  # half-precision logits: shift in out's precision, not in theirs
        out.copy_(block).sub_(top)
    if temperature != 1:
        out.div_(temperature)
    return out.clamp_(min=_floor(out.dtype, out.device)[0])


def shifted_weights(block: torch.Tensor, top: torch.Tensor, temperature: float, out: torch.Tensor,
                    exponents: torch.Tensor | None = None) -> torch.Tensor:
    """exp((block - top) / temperature) - exp(floor), at least 0, written into `out` (block's shape,
    float32 or float64; floor -87 or -708): a -inf logit weighs exactly 0, a token more than 87 nats
    below the top of a float32 row (708 for float64) 0 too, and every other weight is off by at most
    1.6e-38 (float32) of the top's. top: each row's max, [..., 1]. Every op here gives an element the
    same value wherever it sits in the tensor, so a row's weights never depend on its batch mates (exp2
    would be faster on a CPU, but its vectorised and scalar paths differ in the last bit). exponents:
    where to keep the exponents (`shifted_logits`, out's shape and dtype), or None."""
    if exponents is None:
        exponents = out
    torch.exp(shifted_logits(block, top, temperature, exponents), out=out)
    return out.sub_(_floor(out.dtype, out.device)[1]).clamp_(min=0)


def _inverse_cdf(logits: torch.Tensor, u: torch.Tensor, temperature: float,
                 index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws for every row of logits [..., V], or for the rows `index` (Long[M]) of its flat view.

    A row's weights are cut into chunks of C tokens; the chunk is found on the float64 cumulative sum
    of the chunk totals, the token on the float64 cumulative sum inside that chunk, scaled to the
    chunk's interval, so only V / C + C sums are sequential, not V. Weights are float32 for float32 (or
    narrower) logits, float64 for float64 logits. A float32 weight carries the relative error of a few
    float32 ulps that the logit itself carries (exp turns a logit's absolute error into the weight's
    relative error), and none is cut off above 87 nats below the row's best token. A chunk total of
    float32 weights is summed in float32: it sets the width of the chunk's interval to a relative 1e-6,
    and every token in it keeps its share of that width, so no token's interval shrinks by more.
    """
    v = logits.shape[-1]
    flat, uf = logits.detach().reshape(-1, v), u.reshape(-1)
    m = flat.shape[0] if index is None else index.shape[0]
    device = logits.device
    tokens = torch.empty(m, dtype=torch.long, device=device)
    logp = torch.empty(m, dtype=torch.float64, device=device)
    wide = torch.float64 if logits.dtype == torch.float64 else torch.float32
    size = min(v, 1 << max(5, v.bit_length() // 2))  # C about sqrt(V), at least 32: 32 for V = 1024
    chunks = -(-v // size)
    rows = max(16, _BLOCK_ELEMENTS // v)  # at least 16: a loop step per row costs more for huge V
    # one buffer for every block (fresh memory costs more than the arithmetic); its padding has no weight
    buffer = torch.empty((min(rows, m), chunks * size), dtype=wide, device=device)
    buffer[:, v:] = 0
    for lo in range(0, m, rows):
        block = flat[lo : lo + rows] if index is None else flat.index_select(0, index[lo : lo + rows])
        r = block.shape[0]
        padded = buffer[:r]
        top = block.amax(-1, keepdim=True)
        shifted_weights(block, top, temperature, padded[:, :v])  # never the caller's tensor
        grid = padded.view(r, chunks, size)
        ends = grid.sum(-1).double().cumsum_(-1)  # [r, chunks]: where each chunk's interval of u ends
        total = ends[:, -1:]
        zero = torch.zeros_like(total)
        # u * total rounded up to total would pick past the last token that has any mass
        target = torch.minimum(uf[lo : lo + r, None] * total, torch.nextafter(total, zero))
        # the first chunk whose interval ends beyond the target; a chunk of no weight has an empty one
        chunk = torch.searchsorted(ends, target, right=True)
        start = torch.where(chunk > 0, ends.gather(1, (chunk - 1).clamp_(min=0)), 0.0)
        share = (target - start) / (ends.gather(1, chunk) - start)  # how far into the chunk, in [0, 1)
        # inside the chunk, the first token whose float64 cumulative sum exceeds that share of the
        # chunk's; zero-weight tokens are flat steps, never chosen
        inside = _chunks_at(grid, chunk).squeeze(1).double().cumsum_(-1)
        mass = inside[:, -1:]
        rest = torch.minimum(share * mass, torch.nextafter(mass, zero))
        picked = chunk * size + torch.searchsorted(inside, rest, right=True)
        tokens[lo : lo + r] = picked.squeeze(1)
        chosen = (block.gather(1, picked).double() - top.double()) / temperature
        logp[lo : lo + r] = (chosen - total.log()).squeeze(1)
    shape = logits.shape[:-1] if index is None else index.shape
    return tokens.reshape(shape), logp.reshape(shape)


def gumbel(shape, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Float64 Gumbel(0, 1) noise, -log(-log U) with U in (0, 1)."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64, device=device)
    tiny = torch.finfo(torch.float64).tiny
    return -torch.log(-torch.log(u.clamp_(min=tiny)))


def token_logp(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature) at `tokens`. logits: [..., V], tokens: Long[...]."""
    scaled = logits.float() / temperature if temperature > 0 else logits.float()
    picked = scaled.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(scaled, dim=-1)


def nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches `top_p` (Holtzman et al.
    2020); the rest become -inf. logits: [..., V] float -> same shape. top_p >= 1 keeps everything.

    A token is kept when the mass of the tokens before it (more likely, or as likely with a lower id)
    is below `top_p`, so the most likely token always survives and ties are kept in id order.
    """
    if not 0 < top_p:
        raise ValueError(f"top_p must be > 0, got {top_p}")
    if top_p >= 1:
        return logits
    sorted_logits, order = logits.double().sort(dim=-1, descending=True, stable=True)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs
    drop_sorted = before >= top_p
    drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


_NUCLEUS_TOP_K = (8, 64)  # the top-K reads `nucleus_draw` tries, smallest first, before a sort of all V
# a row's most likely token is its whole nucleus when its probability p1 reaches top_p by this much: then
# the second token's mass before it, (p1 + p2) - p2 in float64, is surely not below top_p either
_SURE_MARGIN = 1e-12
# a score computed by `nucleus_draw` is within this of its exact value (the entropy reads log p as the
# weight's exponent, which the float32 exp rounds by up to 1.2e-7; float64 sums round far below it), so a
# row whose upper bound is below a known score by more cannot beat it
_BOUND_SLACK = 1e-6
# `nucleus_draw` with `best` takes its first pass in blocks of this many elements: it only sums over each
# row, so fewer, larger blocks save small operations (a flat Dream decoding's draws took 4% less time at
# 2^20 than at 2^19, while reading every row took 11% more)
_LAZY_BLOCK_ELEMENTS = 2**20
# `nucleus_draw` with `best` keeps every row's weights between its two passes up to this many elements
_KEPT_ELEMENTS = 2**24


def nucleus_draw(
    logits: torch.Tensor, top_p: float, temperature: float = 1.0, generator: torch.Generator | None = None,
    score: str | None = None, where: torch.Tensor | None = None, best: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`categorical(nucleus(logits / temperature, top_p))`, read from the sorted nucleus, with no scatter back.

    The nucleus is a prefix of the tokens sorted by probability (ties by index), so the draw, its
    probability, the top-1 minus top-2 margin and the entropy of the renormalised nucleus are all read
    in sorted order. On the CPU a row whose most likely token alone reaches `top_p` is read from its
    first argmax; the others' top K tokens are found first (`_top_k`, K = 8 then 64, not a
    sort of all V); where the nucleus ends strictly inside them (its last token more likely than the
    K-th), they are the whole prefix, and the row is read from them; any other row is read from
    buckets of its weights (`nucleus_buckets.read_bucketed`, no sort of V), or, on an accelerator
    (where the sort is one kernel), every row is sorted whole. All read the same weights
    (`shifted_weights`: float32 exps of the shifted logits, float64 for float64 logits) over the same
    total, in float64 from there on: the argmax, top-K and sort paths sum in the same order, so
    between them a row's path never changes its token or scores; the buckets sum bucket by bucket, so
    their scores equal the sort's to float64 rounding (1e-13 relative, tested) and their token too
    unless a sum lies within that of top_p or of the draw's target. The entropy reads each log p as
    its weight's exponent minus log(total): no log per token, and within 1.2e-7 of the entropy of the
    weights as the float32 exp rounds them. Logits with NaN are refused (ValueError) on the CPU from V = 9
    (below, every row is sorted whole and NaN is not looked for).
    Temperature 0: no scaling and the most likely token (the first, as argmax breaks ties). One float64
    uniform per row, as `categorical`; the same u picks a token by the CDF of the sorted nucleus, so
    draws match `categorical(nucleus(...))` in distribution, not token for token.

    logits: [..., V]; score: None, "probability", "margin" or "entropy" (nats, negated so that higher
    means surer), all under the renormalised nucleus. Returns (Long[...], Float64[...] or None).
    where: Bool[...] (logits' leading shape): draw only there and return Long[M], Float64[M] in
    row-major order, as `nucleus_draw(logits[where], ...)` would, without copying the logits.

    best: Long[B], for logits [B, N, V] and a score: the caller keeps only the best[b] highest scores of
    batch row b (as Dream's greedy choice of places does), so on the CPU (V > 8) a row is read only if
    it may be among them. Every row's most likely token has probability p1 = 1 / (its weights' total), known
    before any top-K read or sort, and the nucleus's mass m is at least top_p, so each score is at most
    a bound (`score_bound`): probability and margin at most min(1, p1 / top_p), negative entropy at most
    log(p1 / top_p) and log(sum p^2 / top_p^2) (min- and collision entropy bound it from below), and at
    most 0. For the entropy, a row whose nucleus may hold 8 tokens or more is bounded more tightly from
    the tokens above a threshold guessed near its nucleus's edge (`nucleus_bounds.threshold_bound`: a
    few sums over the row, within about 0.002 nats on an untrained model's flat rows), or, where that
    is not given and the nucleus is surely larger than the top-K reads, from buckets of its weights
    (`nucleus_buckets.entropy_bound`, within log(9/8) times the edge bucket's share). In each batch
    row the best[b] rows with the highest bounds (a one-token nucleus: its exact score) are read and
    drawn first; the best[b]-th of their scores, t, is a floor of the kept scores, so only the rows
    whose bound reaches t are read after them. The rest cannot be kept: token -1, score -inf. A
    margin does not depend on the draw, so rows read after the first from buckets for a margin are
    scored first and drawn only if their score is among their batch row's best[b] of all the scores
    read (ties included); the others also get token -1 and score -inf. Every row read has the token
    and score it has without `best`, and the uniforms are drawn as without it.
    """
    if not temperature >= 0:  # NaN too
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not 0 < top_p:
        raise ValueError(f"top_p must be > 0, got {top_p}")
    if score not in (None, "probability", "margin", "entropy"):
        raise ValueError(f"score must be None, 'probability', 'margin' or 'entropy', got {score!r}")
    v = logits.shape[-1]
    if v == 0:
        raise ValueError("cannot draw from an empty vocabulary")
    if best is not None and (score is None or logits.ndim != 3 or best.shape != logits.shape[:1]):
        raise ValueError(f"best needs a score and logits [B, N, V] with best Long[B]; got score {score!r}, "
                         f"logits {tuple(logits.shape)}, best {tuple(best.shape)}")
    flat = logits.detach().reshape(-1, v)
    index = None if where is None else _drawn_rows(where, flat.shape[0])
    m, device = (flat.shape[0] if index is None else index.shape[0]), logits.device
    u = torch.rand(m, generator=generator, dtype=torch.float64, device=device) if temperature > 0 else None
    tokens = torch.empty(m, dtype=torch.long, device=device)
    scores = torch.empty(m, dtype=torch.float64, device=device) if score else None
    # the top-K reads are for the CPU, where a sort of V is the cost; on an accelerator the sort is one
    # kernel, and choosing the rows to read again would wait for the device
    reads = top_p < 1 and device.type == "cpu"
    tiers = [k for k in _NUCLEUS_TOP_K if k < v] if reads else []
    wide = torch.float64 if logits.dtype == torch.float64 else torch.float32
    out = (u, tokens, scores, score, top_p, tiers, temperature or 1.0)
    lazy = best is not None and bool(tiers)  # below 9 tokens every row is sorted whole
    rows = max(16, (_LAZY_BLOCK_ELEMENTS if lazy else _BLOCK_ELEMENTS) // v)
    keep = lazy and m * v <= _KEPT_ELEMENTS  # the first pass's weights are read again, not made again
    buffer = torch.empty((m if keep else min(rows, m), v), dtype=wide, device=device)  # one for every block
    if lazy:
        later, norms = [], torch.empty(m, 1, dtype=torch.float64, device=device)
        squares = torch.empty(m, dtype=torch.float64, device=device) if score == "entropy" else None
        upper = torch.full((m,), float("inf"), dtype=torch.float64, device=device)
        leasts = torch.empty(m, dtype=torch.float64, device=device) if squares is not None else None
    for lo in range(0, m, rows):
        if index is None:
            block = flat[lo : lo + rows]
        else:  # copied into working memory: fresh memory is slower to touch than to copy into
            at = index[lo : lo + rows]
            block = torch.index_select(flat, 0, at, out=_work("logits", (len(at), v), flat.dtype, device))
        # the entropy's lazy read bounds rows from their weights and exponents, made together
        exponents = scratch("exponents", block.shape, wide) if lazy and score == "entropy" else None
        weights, norm = _weigh(block, temperature, buffer[lo:] if keep else buffer, exponents)
        pending = torch.arange(len(block), device=device)
        ordered = True  # pending is still 0, 1, ..., every row of the block in order
        if reads:
            # the top weight is 1, so max p = 1 / norm: where it alone reaches top_p, the nucleus is the
            # stable sort's first token, the first argmax; no top-K read is needed
            alone = 1 / norm[:, 0] >= top_p + _SURE_MARGIN
            single = pending[alone]
            if len(single):
                src = block if len(single) == len(block) else block.index_select(0, single)
                order = first_argmax(src).unsqueeze(1)
                _read_sorted(weights[single[:, None], order] / norm[single], order, top_p, u, lo + single, tokens,
                             scores, score, torch.zeros(len(single), 1, device=device))  # the top's exponent is 0
                pending, ordered = pending[~alone], False
            if lazy:  # read after every row's bound is known
                later.append(lo + pending)
                norms[lo : lo + len(block)] = norm
                if squares is not None:
                    squares[lo : lo + len(block)] = square = torch.linalg.vector_norm(weights, dim=-1).double().square()
                    # rows whose nucleus may be large get a bound of their own
                    least = leasts[lo : lo + len(block)] = _least_size(norm, square, top_p)
                    _bound_rows(weights, norm, square, exponents, pending[least[pending] >= tiers[0]], top_p,
                                upper[lo:], leasts[lo:], tiers[-1])
                continue
        _read_rest(block, weights, norm, pending, ordered, lo + pending, out)
    if lazy:
        rest = torch.cat(later)

        def read(at, draw=True):  # the rows `at` (slots), from the kept weights or made again
            for lo in range(0, len(at), rows):
                slots = at[lo : lo + rows]
                block = flat.index_select(0, slots if index is None else index[slots])
                weights, norm = (buffer.index_select(0, slots), norms[slots]) if keep else \
                    _weigh(block, temperature, buffer)
                _read_rest(block, weights, norm, torch.arange(len(block), device=device), True, slots, out, draw,
                           None if leasts is None else leasts[slots])

        place = torch.arange(m, device=device) if index is None else index  # in the flat [B * N] view
        batch, place, grid = place // logits.shape[1], place % logits.shape[1], logits.shape[:2]
        squared = None if squares is None else squares[rest] / norms[rest, 0].square()
        bound = torch.minimum(score_bound(score, 1 / norms[rest, 0], squared, top_p), upper[rest])
        known = scores.index_copy(0, rest, bound)  # the one-token nuclei's scores, the others' bounds
        count = best.to(device)
        # a few rows more than best[b] are read first: with tight bounds the rows that would be read second
        # are most often among them, and a second read is then not needed
        first = known >= _kth_largest(known, batch, place, grid, count + (count > 0) * (count // 8 + 2))[batch]
        # a margin or an entropy does not depend on the draw: the margin's rows read second get their score
        # first (token -2), their draw only if among their batch row's best[b] scores
        after = score == "margin"
        read(rest[first[rest]], draw=not after)  # most of these are kept
        # t: each batch row's best[b]-th score among those read first (+inf: none wanted; -inf: all were
        # read), a floor of the kept scores
        floor = _kth_largest(torch.where(first, scores, -math.inf), batch, place, grid, count)
        second = ~first[rest] & (bound >= floor[batch[rest]] - _BOUND_SLACK)
        read(rest[second], draw=not after)  # the entropy's bounds are tight: most of these are kept too
        skipped = rest[~first[rest] & ~second]
        tokens[skipped], scores[skipped] = -1, float("-inf")
        if after and (undrawn := tokens == -2).any():  # a CPU tensor: buckets are read only on the CPU
            wanted = undrawn & (scores >= _kth_largest(scores, batch, place, grid, count)[batch])
            read(wanted.nonzero()[:, 0])
            unwanted = undrawn & ~wanted
            tokens[unwanted], scores[unwanted] = -1, float("-inf")
    shape = logits.shape[:-1] if where is None else (m,)
    return tokens.reshape(shape), None if scores is None else scores.reshape(shape)


def _work(name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Working memory: `scratch` on the CPU (no fresh pages to fault in at every call), else fresh."""
    return scratch(name, shape, dtype) if device.type == "cpu" else torch.empty(shape, dtype=dtype, device=device)


def _weigh(block: torch.Tensor, temperature: float, buffer: torch.Tensor,
           exponents: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows' weights exp((x - max x) / T) (`shifted_weights`, T = 0 read as 1), written into the
    buffer's first rows (never the caller's tensor), and their totals, Float64[r, 1]; every path of
    `nucleus_draw` reads these. exponents: where to keep the weights' exponents too, or None."""
    weights = buffer[: len(block)]
    shifted_weights(block, block.amax(-1, keepdim=True), temperature or 1.0, weights, exponents)
    return weights, weights.sum(-1, keepdim=True).double()


def score_bound(score: str, p1: torch.Tensor, squared: torch.Tensor | None, top_p: float) -> torch.Tensor:
    """An upper bound on `nucleus_draw`'s score of a row from its top probability p1 (and, for the
    entropy, the sum of its squared probabilities, or None), given that the nucleus's mass m is at least
    top_p: the drawn token's probability and the margin are at most p1 / m (at most 1); the negative
    entropy is at most log(p1 / m) (min-entropy) and log(sum p^2 / m^2) (collision entropy of the
    nucleus, whose squares are among the row's), at most 0. All Float64[r]."""
    if score != "entropy":
        return (p1 / top_p).clamp(max=1)
    least = p1 / top_p if squared is None else torch.minimum(p1 / top_p, squared / top_p**2)
    return least.log().clamp(max=0)


def _least_size(norm: torch.Tensor, square: torch.Tensor, top_p: float) -> torch.Tensor:
    """Double[r]: a lower bound on each row's nucleus size n from its weights' total (norm, Double[r, 1];
    the top weight is 1) and sum of squares (Double[r]): n >= top_p / max p and n >= top_p^2 / sum p^2
    (Cauchy-Schwarz)."""
    least = top_p * norm[:, 0]
    return torch.maximum(least, least.square() / square)


def _bound_rows(weights, norm, square, exponents, rows, top_p, upper, least, wide_from) -> None:
    """Bound the entropy score of a block's `rows` (Long[r], block-local): from the tokens above a
    threshold (`nucleus_bounds.threshold_bound`, a few sums over each row) where that is given, which
    also raises the row's least nucleus size `least` to the tokens it surely holds; else, where the
    nucleus holds at least `wide_from` tokens (it is read from buckets), from buckets of the weights
    (`nucleus_buckets.entropy_bound`). Written at those rows of `upper` and `least` ([...], the block's
    slots first). weights, norm, square (Double[r]), exponents: the block's (`_weigh`). A bound holds
    for any row, so where most rows want one, every row of the block gets one and no rows are copied
    out."""
    if len(rows) == 0:
        return
    if norm.isnan().any():  # a CPU tensor: the bound is made only on the CPU
        raise ValueError("nucleus_draw: some logits are NaN")
    if 2 * len(rows) < len(weights):
        weights, norm, square, exponents = (weights.index_select(0, rows), norm[rows], square[rows],
                                            exponents.index_select(0, rows))
    else:
        rows = torch.arange(len(weights), device=weights.device)
    bound, ok, heavy = threshold_bound(weights, exponents, norm, square, top_p,
                                       scratch("above", weights.shape, weights.dtype))
    upper[rows] = torch.minimum(upper[rows], bound)
    least[rows] = wide = torch.where(ok, torch.maximum(least[rows], heavy + 1), least[rows])
    if (miss := ~ok & (wide >= wide_from)).any():  # a CPU tensor, as above
        miss = miss.nonzero()[:, 0]
        fine = entropy_bound(weights.index_select(0, miss), norm[miss], lambda: exponents.index_select(0, miss), top_p)
        upper[rows[miss]] = torch.minimum(upper[rows[miss]], fine)


def _kth_largest(values: torch.Tensor, batch: torch.Tensor, place: torch.Tensor, grid: tuple[int, int],
                 k: torch.Tensor) -> torch.Tensor:
    """Double[B]: the k[b]-th largest of the values of batch row b, k[b] taken as at most N (+inf where
    k[b] is 0, -inf where the row has fewer values). values: [M]; batch, place: Long[M], each value's
    place in the [B, N] grid; k: Long[B]."""
    padded = torch.full(grid, -math.inf, dtype=values.dtype, device=values.device).index_put_((batch, place), values)
    ranked = padded.sort(dim=1, descending=True).values
    return torch.where(k > 0, ranked.gather(1, (k - 1).clamp(0, grid[1] - 1)[:, None])[:, 0], math.inf)


def _exponents(values: torch.Tensor, top: torch.Tensor, temperature: float, wide: torch.dtype) -> torch.Tensor:
    """The weights' exponents (`shifted_logits`) of some of a row's logits, [r, W] of dtype `wide`."""
    return shifted_logits(values, top, temperature, torch.empty(values.shape, dtype=wide, device=values.device))


def _read_rest(block, weights, norm, pending, ordered, slots, out, draw=True, least=None) -> None:
    """Draw the `pending` rows of a block (block-local, Long[r]; `ordered`: all of them, in order) and
    write them at `slots` (Long[r]) of the outputs: from their top K tokens where the nucleus ends
    inside them, else (on the CPU) from buckets of their weights (`read_bucketed`; draw=False: the
    score only, token -2), else from a sort of all V. out: (u, tokens, scores, score, top_p, tiers,
    temperature). least: Double[r], a lower bound on each pending row's nucleus size (K is tried only
    below it), or None to take `_least_size`."""
    u, tokens, scores, score, top_p, tiers, temperature = out
    if len(pending) == 0:  # often every row of the block was a one-token nucleus
        return
    if tiers and least is None:
        least = _least_size(norm, torch.linalg.vector_norm(weights, dim=-1).double().square(), top_p)
        least = least if ordered else least[pending]
    for k in tiers:  # try K only where n may be below K
        low = least < k
        tried, at = pending[low], slots[low]
        if len(tried) == 0:
            continue
        values, order = _top_k(block if ordered and len(tried) == len(block) else block.index_select(0, tried), k)
        if (values[:, 1:] == values[:, :-1]).any():  # ties in id order, as the stable full sort puts them
            order, by_index = order.sort(dim=-1)
            values, by_value = values.gather(-1, by_index).sort(dim=-1, descending=True, stable=True)
            order = order.gather(-1, by_value)
        chosen = weights[tried[:, None], order]
        terms = chosen * _exponents(values, values[:, :1], temperature, weights.dtype) if score == "entropy" else None
        kept = _read_sorted(chosen / norm[tried], order, top_p, u, at, tokens, scores, score, terms)
        # right where the nucleus ends inside the K, its last token more likely than the K-th
        inside = ((kept < k) & (values.gather(1, kept - 1) > values[:, -1:])).squeeze(1)
        pending, slots, least = torch.cat((pending[~low], tried[~inside])), torch.cat((slots[~low], at[~inside])), \
            torch.cat((least[~low], least[low][~inside]))
        ordered = False
    if len(pending) == 0:  # often no row is left
        return
    rows, weights, norm = (block, weights, norm) if ordered else \
        (block.index_select(0, pending), weights.index_select(0, pending), norm[pending])
    if tiers:  # on the CPU, where reading a tensor waits for nothing
        if norm.isnan().any():
            raise ValueError("nucleus_draw: some logits are NaN")
        top = rows.amax(-1, keepdim=True)
        exponents = lambda: shifted_logits(rows, top, temperature, scratch("exponents", rows.shape, weights.dtype))  # noqa: E731
        drawn, read = read_bucketed(rows, weights, norm, exponents,
                                    None if u is None else u[slots], top_p, score, draw)
        tokens[slots] = drawn
        if score:
            scores[slots] = read
        return
    values, order = rows.sort(dim=-1, descending=True, stable=True)
    chosen = weights.gather(1, order)
    terms = chosen * _exponents(values, values[:, :1], temperature, weights.dtype) if score == "entropy" else None
    _read_sorted(chosen / norm, order, top_p, u, slots, tokens, scores, score, terms)


_TOP_K_CHUNK = 32


def _top_k(block: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`block.topk(k)` up to ties at the k-th value, faster on a CPU for k far below V: the k chunks
    of 32 tokens with the largest maxima are gathered and the top k read from them. Every token above
    the k-th largest value t is in those chunks (at most k - 1 chunks hold such a token, and each beats
    any chunk whose max is t or less), and the k-th value read is t itself, so the rows `nucleus_draw`
    reads from a top-k (its nucleus ends above the k-th value) read the same tokens.
    block: [r, V]. Returns (values, ids), [r, k] each, values in descending order."""
    r, v = block.shape
    size = _TOP_K_CHUNK
    if 8 * k * size > v:  # too few chunks to gain: at V = 1024, k = 8 the chunked read takes 1.6x topk's time
        return block.topk(k, dim=-1)
    chunks = -(-v // size)
    if chunks * size != v:
        block = torch.nn.functional.pad(block, (0, chunks * size - v), value=float("-inf"))
    grid = block.view(r, chunks, size)
    best = grid.amax(-1).topk(k, dim=-1)[1]  # [r, k]: the chunks with the largest maxima
    candidates = _chunks_at(grid, best).view(r, k * size)
    values, at = candidates.topk(k, dim=-1)
    ids = best.gather(1, at // size) * size + at % size
    return values, ids


def _read_sorted(probs, order, top_p, u, rows, tokens, scores, score, terms=None) -> torch.Tensor:
    """Write the draw (and score) of `rows` from their most likely tokens in order: `probs`
    (Double[r, W], W = V or a top-K prefix, normalised over the whole row), `order` (their ids) and,
    for the entropy, `terms` (weight * exponent of each, in the weights' dtype, [r, W]). Returns the
    nucleus size found in the W, Long[r, 1]."""
    cdf = probs.cumsum(-1)
    if top_p >= 1:
        kept = torch.full((cdf.shape[0], 1), cdf.shape[1], dtype=torch.long, device=cdf.device)
    else:  # the nucleus is the prefix whose mass before each token is below top_p
        kept = ((cdf - probs) < top_p).sum(-1, keepdim=True).clamp_(min=1)
    mass = cdf.gather(1, kept - 1)
    if u is None:
        at = torch.zeros_like(kept)
    else:
        target = torch.minimum(u[rows, None] * mass, torch.nextafter(mass, torch.zeros_like(mass)))
        at = torch.searchsorted(cdf, target, right=True)
    tokens[rows] = order.gather(1, at).squeeze(1)
    if score == "probability":
        scores[rows] = (probs.gather(1, at) / mass).squeeze(1)
    elif score == "margin":
        second = torch.where(kept > 1, probs[:, 1:2] if probs.shape[1] > 1 else 0.0, 0.0)
        scores[rows] = ((probs[:, :1] - second) / mass).squeeze(1)
    elif score == "entropy":
        # -H = sum q log q over the kept prefix, q = p / mass, with p = weight / norm and log p = exponent -
        # log(norm): sum(weight * exponent) / norm / mass - log(mass * norm), with 1 / norm = p1, the top's p.
        # The float32 exp rounds a weight by up to 1.2e-7 of it, so this is within 1.2e-7 of the entropy of
        # the weights as rounded, and needs no log of each p
        p1 = probs[:, :1]
        plogp = terms.double().cumsum_(-1).gather(1, kept - 1)
        scores[rows] = (plogp * p1 / mass - (mass / p1).log()).squeeze(1)
    return kept


# --- float32 draws of peer libraries, kept only for bit-compatibility --------------------------
# diffusers' aMUSEd scheduler draws tokens with torch.multinomial and its choice noise from float32
# uniforms. Reproducing its outputs for the same torch.Generator needs those very draws; they carry
# the float32 tail truncation described above (P39), so no other sampler uses them.


def float32_multinomial(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """torch.multinomial(probs, 1) row by row, on the generator's device. probs: [M, V] -> Long[M]."""
    device = probs.device
    if generator is not None:
        probs = probs.to(generator.device)
    if probs.device.type == "cpu" and probs.dtype != torch.float32:
        probs = probs.float()  # CPU multinomial has no half-precision kernel
    return torch.multinomial(probs, 1, generator=generator)[:, 0].to(device)


def float32_gumbel(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gumbel noise shaped and typed like `like` from uniforms of its dtype, clamped at 1e-20 (the
    convention of diffusers' aMUSEd scheduler)."""
    device = generator.device if generator is not None else like.device
    u = torch.zeros_like(like, device=device).uniform_(0, 1, generator=generator).to(like.device)
    return -torch.log((-torch.log(u.clamp(1e-20))).clamp(1e-20))
