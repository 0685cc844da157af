"""Mask-ratio schedules gamma(r) on [0, 1]: the share of tokens still hidden at progress r.

One definition serves both sides of the loop: training draws r ~ U(0, 1) and hides gamma(r) of the
tokens (MaskGIT, Chang et al. 2022), and samplers keep floor(N0 * gamma((j + 1) / T)) hidden after
step j. Every schedule has gamma(0) = 1, gamma(1) = 0 and is non-increasing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Schedule:
    """gamma(r) by name: `linear` 1 - r, `cosine` cos(pi r / 2), `power` 1 - r**p,
    `arccos` (2 / pi) arccos(r)."""

    name: str = "cosine"
    power: float = 2.0

    def __post_init__(self):
        if self.name not in _GAMMAS:
            raise ValueError(f"schedule must be one of {sorted(_GAMMAS)}, got {self.name!r}")
        if not self.power > 0:
            raise ValueError(f"schedule power must be > 0, got {self.power}")

    def __call__(self, r: torch.Tensor | float) -> torch.Tensor:
        r = torch.as_tensor(r, dtype=torch.float64).clamp(0.0, 1.0)
        return _GAMMAS[self.name](r, self.power).clamp(0.0, 1.0)


_GAMMAS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "linear": lambda r, p: 1.0 - r,
    "cosine": lambda r, p: torch.cos(r * (math.pi / 2)),
    "power": lambda r, p: 1.0 - r**p,
    "arccos": lambda r, p: torch.arccos(r) * (2 / math.pi),
}

SCHEDULES = tuple(sorted(_GAMMAS))
