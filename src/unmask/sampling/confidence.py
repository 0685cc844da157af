"""How sure the model is of a proposal, three ways, in float64: the probability of the proposed token
(MaskGIT: Chang et al. 2022, arXiv:2202.04200; LLaDA: Nie et al. 2025, arXiv:2502.09992; Fast-dLLM:
Wu et al. 2025, arXiv:2505.22618), the margin between the two most likely tokens (Dream's
`topk_margin`: Ye et al. 2025, arXiv:2508.15487), and the negative entropy (Dream's `entropy`;
dParallel: Chen et al. 2025, arXiv:2509.26488). Higher always means surer."""

from __future__ import annotations

import torch

from .categorical import EXP_FLOOR, first_argmax

KINDS = ("probability", "margin", "entropy")


def log_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature) in float64; temperature 0 reads as 1 (argmax decoding still
    reports the model's own probabilities). logits: [..., V] -> Float64[..., V]."""
    scaled = logits.double() / temperature if temperature > 0 else logits.double()
    return scaled.log_softmax(-1)


def surety(logits: torch.Tensor, drawn: torch.Tensor, measure: str = "probability") -> torch.Tensor:
    """The probability of each row's `drawn` token under softmax(logits), or each row's negative
    entropy in nats, without a float64 log-softmax over V: the row's max is subtracted in the logits'
    own dtype and exp is taken there (clamped 87 nats below the top). The probability's normaliser is
    summed there too (positive terms: right to a relative 1e-6, and a float64 sum would first convert
    the whole buffer), the entropy's sums in float64. Equal to `confidence(log_probs(logits), drawn,
    measure)` within 1e-6 relative (tested), and cheaper on a CPU, where exp in float64 is slow.
    logits: Float[M, V]; drawn: Long[M]. Returns Float64[M], with no gradient."""
    if measure not in ("probability", "entropy"):
        raise ValueError(f"measure must be 'probability' or 'entropy', got {measure!r}")
    logits = logits.detach()
    top = logits.amax(-1, keepdim=True)
    # the shifted logits, clamped at the float32 floor so that no exp meets a subnormal (the slow path
    # of `categorical.shifted_weights`); a -inf token then weighs 1.6e-38 of the top's, nothing here.
    # Fresh [M, V] buffers are the cost on a CPU: one for the probability, two for the entropy
    floor = EXP_FLOOR[torch.float64 if logits.dtype == torch.float64 else torch.float32]
    shifted = logits - top
    if measure == "probability":  # the drawn token's shifted logit first (exact below the floor too)
        picked = shifted.gather(-1, drawn.unsqueeze(-1)).squeeze(-1).double().exp_()
        return picked / shifted.clamp_(min=floor).exp_().sum(-1).double()
    weights = shifted.clamp_(min=floor).exp()
    # float64 sums here: a low entropy is log(total) - spread / total with total near 1, and a float32
    # total's last bit would be its whole size. H = log total - sum_j w_j z_j / total, with z the
    # clamped shifted logits
    total = weights.sum(-1, dtype=torch.float64)
    spread = shifted.mul_(weights).sum(-1, dtype=torch.float64)
    return spread / total - total.log()


def top_probability(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's most likely token (the first, as argmax: `categorical(logits, 0)`) and its probability
    under softmax(logits), read off one softmax over V in float32 (float64 for float64 logits): a fused
    kernel, where exp, a sum and a division cost about twice as much on a CPU. Within 1e-6 relative
    of `surety(logits, drawn, "probability")` (tested), and a row's value never depends on the others.
    logits: Float[M, V]. Returns (Long[M], Float64[M])."""
    logits = logits.detach()
    drawn = first_argmax(logits)
    probs = logits.softmax(-1, dtype=torch.float64 if logits.dtype == torch.float64 else torch.float32)
    return drawn, probs.gather(-1, drawn.unsqueeze(-1)).squeeze(-1).double()


def entropy(logp: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of each row of log-probabilities [..., V] -> [...]; -inf entries count 0."""
    p = logp.exp()
    return -(p * logp.masked_fill(p == 0, 0.0)).sum(-1)


def confidence(logp: torch.Tensor, drawn: torch.Tensor, kind: str = "probability") -> torch.Tensor:
    """logp: Float64[M, V] log-probabilities; drawn: Long[M] proposals. Returns Float64[M]."""
    if kind == "probability":
        return logp.gather(-1, drawn.unsqueeze(-1)).squeeze(-1).exp()
    if kind == "margin":
        top = logp.topk(min(2, logp.shape[-1]), -1).values.exp()
        return top[:, 0] - (top[:, 1] if top.shape[1] > 1 else 0.0)
    if kind == "entropy":
        return -entropy(logp)
    raise ValueError(f"confidence must be one of {KINDS}, got {kind!r}")
