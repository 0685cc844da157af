"""The one categorical draw every sampler uses, in float64.

Float32 Gumbel noise cannot exceed about 16.6 (its uniforms have 2^-24 resolution), so a token whose
logit is about 19.4 below the best can never win and the whole tail is under-sampled: a lower
effective temperature (Zheng et al. 2024, "Masked diffusion models are secretly time-agnostic masked
models and exploit inaccurate categorical sampling", P39). We draw by inverse CDF on float64
probabilities with one float64 uniform per row: exact to float64 rounding, and one random number per
row instead of one per (row, token).
"""

from __future__ import annotations

import torch


def categorical(
    logits: torch.Tensor, temperature: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw one token per row from softmax(logits / temperature).

    logits: [..., V] float (-inf allowed; not all -inf). temperature 0 means argmax.
    Returns Long[...].
    """
    if temperature == 0 and logits.shape[-1] > 0:  # no log-probability to compute beside it
        return logits.argmax(-1)
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
        rows = torch.nonzero(where.reshape(-1)).squeeze(1)
        flat = logits.reshape(-1, logits.shape[-1])
        if rows.numel() == flat.shape[0]:
            rows = None  # everything is drawn: no gather
    else:
        rows, flat = None, logits
    if temperature == 0 or logits.numel() == 0:
        picked = flat if rows is None else flat[rows]
        tokens = picked.argmax(-1)
        return tokens, token_logp(picked, tokens).double()
    shape = logits.shape[:-1] if rows is None else rows.shape
    u = torch.rand(shape, generator=generator, dtype=torch.float64, device=logits.device)
    return _inverse_cdf(flat, u, temperature, rows)


def inverse_cdf(logits: torch.Tensor, u: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The token whose float64 CDF interval holds u. logits: [..., V]; u: Float64[...] in [0, 1).

    Token v is returned for u in [F(v-1), F(v)), an interval as wide as its probability.
    """
    return _inverse_cdf(logits, u, temperature)[0]


# float64 rows are processed a few hundred at a time: a whole [M, V] float64 buffer is fresh memory
# on every call and touching it costs more than the arithmetic; a block of about 1 MB stays in cache
_BLOCK_ELEMENTS = 2**17


def _inverse_cdf(logits: torch.Tensor, u: torch.Tensor, temperature: float,
                 index: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws for every row of logits [..., V], or for the rows `index` (Long[M]) of its flat view."""
    v = logits.shape[-1]
    flat, uf = logits.reshape(-1, v), u.reshape(-1)
    m = flat.shape[0] if index is None else index.shape[0]
    tokens = torch.empty(m, dtype=torch.long, device=logits.device)
    logp = torch.empty(m, dtype=torch.float64, device=logits.device)
    rows = max(16, _BLOCK_ELEMENTS // v)  # at least 16: a loop step per row costs more for huge V
    for lo in range(0, m, rows):
        block = flat[lo : lo + rows] if index is None else flat.index_select(0, index[lo : lo + rows])
        top = block.amax(-1, keepdim=True).double()  # the max needs no wider copy; amax skips the argmax
        x = block.to(torch.float64, copy=True)  # never the caller's tensor: it is changed in place below
        if temperature != 1:
            x.div_(temperature)
            top.div_(temperature)
        cdf = x.sub_(top).exp_().cumsum_(-1)
        total = cdf[:, -1:]
        # u * total rounded up to total would pick past the last token that has any mass
        target = torch.minimum(uf[lo : lo + rows, None] * total, torch.nextafter(total, torch.zeros_like(total)))
        # first index whose cdf exceeds the target; zero-probability tokens are flat steps, never chosen
        picked = torch.searchsorted(cdf, target, right=True)
        tokens[lo : lo + rows] = picked.squeeze(1)
        chosen = block.gather(1, picked).double().div_(temperature)
        logp[lo : lo + rows] = (chosen - top - total.log()).squeeze(1)
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


def nucleus_draw(
    logits: torch.Tensor, top_p: float, temperature: float = 1.0, generator: torch.Generator | None = None,
    score: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`categorical(nucleus(logits / temperature, top_p))`, read from the sorted nucleus, with no scatter back.

    The nucleus is a prefix of the tokens sorted by probability (ties by index), so the draw, its
    probability, the top-1 minus top-2 margin and the entropy of the renormalised nucleus are all read
    in sorted order. On the CPU a row's top K tokens are found first (`topk`, K = 8 then 64, not a
    sort of all V); where the nucleus ends strictly inside them (its last token more likely than the
    K-th), they are the whole prefix, and the row is read from them; any other row is sorted whole
    (and every row on an accelerator, where the sort is one kernel). Both read the same
    float64 probabilities (normalised over the unsorted row), so which path a row takes never changes
    its token or scores. Temperature 0: no scaling and the most likely token (the first, as argmax
    breaks ties). One float64 uniform per row, as `categorical`; the same u picks a token by the CDF
    of the sorted nucleus, so draws match `categorical(nucleus(...))` in distribution, not token for token.

    logits: [..., V]; score: None, "probability", "margin" or "entropy" (nats, negated so that higher
    means surer), all under the renormalised nucleus. Returns (Long[...], Float64[...] or None).
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
    flat = logits.reshape(-1, v)
    m, device = flat.shape[0], logits.device
    u = torch.rand(m, generator=generator, dtype=torch.float64, device=device) if temperature > 0 else None
    tokens = torch.empty(m, dtype=torch.long, device=device)
    scores = torch.empty(m, dtype=torch.float64, device=device) if score else None
    rows = max(16, _BLOCK_ELEMENTS // v)
    # the top-K reads are for the CPU, where a sort of V is the cost; on an accelerator the sort is one
    # kernel, and choosing the rows to read again would wait for the device
    tiers = [k for k in _NUCLEUS_TOP_K if k < v] if top_p < 1 and device.type == "cpu" else []
    for lo in range(0, m, rows):
        block = flat[lo : lo + rows]
        scaled = block.to(torch.float64, copy=True)  # never the caller's tensor: it is changed in place
        if temperature not in (0, 1):
            scaled.div_(temperature)
        weights = scaled.sub_(scaled.amax(-1, keepdim=True)).exp_()  # exp(x - max x), every path reads these
        norm = weights.sum(-1, keepdim=True)
        pending = torch.arange(len(block), device=device)
        if tiers:  # the nucleus's size n is at least top_p / max p, and top_p^2 / sum p^2 (Cauchy-Schwarz)
            least = top_p * norm[:, 0]
            least = torch.maximum(least, least.square() / torch.linalg.vector_norm(weights, dim=-1).square())
        for k in tiers:  # try K only where n may be below K
            low = least[pending] < k
            tried = pending[low]
            values, order = block[tried].topk(k, dim=-1)
            order, by_index = order.sort(dim=-1)  # ties in id order, as the stable full sort puts them
            values, by_value = values.gather(-1, by_index).sort(dim=-1, descending=True, stable=True)
            order = order.gather(-1, by_value)
            kept = _read_sorted(weights[tried[:, None], order] / norm[tried], order, top_p, u, lo + tried, tokens,
                                scores, score)
            # right where the nucleus ends inside the K, its last token more likely than the K-th
            inside = ((kept < k) & (values.gather(1, kept - 1) > values[:, -1:])).squeeze(1)
            pending = torch.cat((pending[~low], tried[~inside]))
        order = block[pending].sort(dim=-1, descending=True, stable=True)[1]  # often no row left
        _read_sorted(weights[pending[:, None], order] / norm[pending], order, top_p, u, lo + pending, tokens,
                     scores, score)
    shape = logits.shape[:-1]
    return tokens.reshape(shape), None if scores is None else scores.reshape(shape)


def _read_sorted(probs, order, top_p, u, rows, tokens, scores, score) -> torch.Tensor:
    """Write the draw (and score) of `rows` from their most likely tokens in order: `probs`
    (Double[r, W], W = V or a top-K prefix, normalised over the whole row) and `order` (their ids).
    Returns the nucleus size found in the W, Long[r, 1]."""
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
        # H = log(mass) - sum_{j<k} p_j log p_j / mass over the kept prefix
        plogp = torch.xlogy(probs, probs).cumsum_(-1).gather(1, kept - 1)
        scores[rows] = (plogp / mass - mass.log()).squeeze(1)
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
