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
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if logits.shape[-1] == 0:
        raise ValueError("cannot draw from an empty vocabulary")
    if temperature == 0 or logits.numel() == 0:
        return logits.argmax(-1)
    u = torch.rand(logits.shape[:-1], generator=generator, dtype=torch.float64, device=logits.device)
    return inverse_cdf(logits, u, temperature)


def inverse_cdf(logits: torch.Tensor, u: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The token whose float64 CDF interval holds u. logits: [..., V]; u: Float64[...] in [0, 1).

    Token v is returned for u in [F(v-1), F(v)), an interval as wide as its probability.
    """
    flat = logits.reshape(-1, logits.shape[-1]).double() / temperature
    weights = (flat - flat.max(-1, keepdim=True).values).exp_()
    cdf = weights.cumsum_(-1)
    total = cdf[:, -1:]
    # u * total rounded up to total would pick past the last token that has any mass
    target = torch.minimum(u.reshape(-1, 1).double() * total, torch.nextafter(total, torch.zeros_like(total)))
    # first index whose cdf exceeds the target; zero-probability tokens are flat steps, never chosen
    return torch.searchsorted(cdf, target, right=True).reshape(logits.shape[:-1])


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
