"""The mask-ratio distribution of SeiT++ (Lee et al. 2024, "SeiT++: masked token modeling improves
storage-efficient training", arXiv:2312.10105), taken from MAGE (Li et al. 2023, arXiv:2211.09117):
the share of tokens hidden is drawn from a normal of mean 0.55 and spread 0.25 truncated to
[0.5, 1], so a model pre-trained by masked token modeling always sees at least half of each token
grid hidden, and sometimes all of it.

`TruncatedNormalRatio` maps float64 uniforms u in [0, 1] to ratios by the inverse CDF,

    ratio(u) = mu + sigma * Phi^-1(Phi(alpha) + u * (Phi(beta) - Phi(alpha))),
    alpha = (low - mu) / sigma, beta = (high - mu) / sigma,

so it is what `MaskedTokenModeling` calls to turn its uniforms into ratios (its `schedule=`): the
objective draws u ~ U(0, 1) per row from the step's generator and any exact-count masker (`RandomMask`)
hides round(ratio * L) tokens of the row. The reference code (naver-ai/seit, `models_mtm.py`) draws
one ratio per batch with scipy's `truncnorm` and hides ceil(ratio * L); here each row draws its own
and the count is the library's round (DESIGN: a ratio means round(ratio * n)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _phi(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


@dataclass(frozen=True)
class TruncatedNormalRatio:
    """The normal N(mean, std^2) truncated to [low, high], as a map from uniforms to mask ratios."""

    low: float = 0.5
    high: float = 1.0
    mean: float = 0.55
    std: float = 0.25

    def __post_init__(self):
        if not 0 <= self.low < self.high <= 1:
            raise ValueError(f"need 0 <= low < high <= 1, got low={self.low}, high={self.high}")
        if not self.std > 0:
            raise ValueError(f"std must be > 0, got {self.std}")

    def __call__(self, u: torch.Tensor | float) -> torch.Tensor:
        """u: Float64[...] in [0, 1] -> ratios Float64[...] in [low, high] (the inverse CDF)."""
        u = torch.as_tensor(u, dtype=torch.float64).clamp(0.0, 1.0)
        a, b = _cdf(self.alpha), _cdf(self.beta)
        x = self.mean + self.std * torch.special.ndtri(a + u * (b - a))
        return x.clamp(self.low, self.high)  # ndtri's last bits may step past a bound

    def draw(self, shape, generator: torch.Generator | None = None) -> torch.Tensor:
        """Float64[shape] ratios from float64 uniforms of `generator`."""
        return self(torch.rand(shape, generator=generator, dtype=torch.float64))

    @property
    def alpha(self) -> float:
        return (self.low - self.mean) / self.std

    @property
    def beta(self) -> float:
        return (self.high - self.mean) / self.std

    def expected(self) -> float:
        """The distribution's mean: mu + sigma (phi(alpha) - phi(beta)) / (Phi(beta) - Phi(alpha))."""
        z = _cdf(self.beta) - _cdf(self.alpha)
        return self.mean + self.std * (_phi(self.alpha) - _phi(self.beta)) / z
