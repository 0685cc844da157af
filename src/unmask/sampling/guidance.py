"""Classifier-free guidance (Ho & Salimans 2022) as a denoiser wrapper: read the model with and
without the condition and push the logits away from the unconditional ones,
`l = l_u + s * (l_c - l_u)`.

One parameter, the scale s, stands for every convention in use (MUSE: Chang et al. 2023,
arXiv:2301.00704; aMUSEd: Patil et al. 2024, arXiv:2401.01808; Meissonic: Bai et al. 2024,
arXiv:2410.08261; MAGNeT: Ziv et al. 2024, arXiv:2401.04577; LLaDA: Nie et al. 2025, arXiv:2502.09992;
ENAT: Ni et al. 2024, arXiv:2411.06959; Halton MaskGIT: Besnier et al. 2025, arXiv:2503.17076; ReCAP:
Liu et al. 2025, arXiv:2505.19089):
| code | written as | s |
|---|---|---|
| lucidrains MUSE, diffusers aMUSEd, Meissonic, MAGNeT | l_u + s (l_c - l_u) | s |
| MUSE paper | (1 + t) l_c - t l_u | 1 + t |
| LLaDA | l_u + (w + 1)(l_c - l_u) | w + 1 |
| ENAT, Halton MaskGIT, ReCAP | l_c + w (l_c - l_u) | 1 + w |
s = 1 is no guidance and costs no second pass.

Schedules read the sampler's `progress` r in [0, 1) (the share of decoding done before the step):
`constant` s; `increasing` 1 + (s - 1) r (MUSE's linearly increased t, ENAT's (step / T) w);
`decreasing` m s + (1 - m) s_min with m = cos(pi r / 2), MAGNeT's coefficient annealed with its mask
probability (with MAGNeT's sampler, r is the stage's tau and m is exactly audiocraft's mask_p).

The unconditional branch hides given positions (`hide`: LLaDA hides the prompt, the digits recipe
hides the label), drops condition keywords (`drop`), or replaces them (`negative`, MUSE's negative
prompt). When only positions are hidden, both branches go through the model in one doubled batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import checks

KINDS = ("constant", "increasing", "decreasing")
CONVENTIONS = {"s": lambda v: v, "1+t": lambda v: 1 + v, "w+1": lambda v: v + 1, "c+w": lambda v: 1 + v}


def guidance_scale(value: float, convention: str) -> float:
    """Map a published guidance number to our s: `s` (as is), `1+t` (MUSE), `w+1` (LLaDA), `c+w`
    (ENAT, Halton, ReCAP: l_c + w (l_c - l_u))."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {sorted(CONVENTIONS)}, got {convention!r}")
    return float(CONVENTIONS[convention](value))


@dataclass(frozen=True)
class GuidanceSchedule:
    kind: str = "constant"
    scale: float = 3.0
    min_scale: float = 1.0  # the `decreasing` schedule's end value (MAGNeT's min_cfg_coef)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"guidance schedule must be one of {KINDS}, got {self.kind!r}")
        checks.real(self, "scale", None)
        checks.real(self, "min_scale", None)

    def __call__(self, progress: torch.Tensor | float) -> torch.Tensor:
        """progress r: Float64[B] (or a float) in [0, 1] -> scale s per row, Float64[B]."""
        r = torch.as_tensor(progress, dtype=torch.float64)
        if self.kind == "constant":
            return torch.full_like(r, self.scale)
        if self.kind == "increasing":
            return 1 + (self.scale - 1) * r
        m = torch.cos(r * (math.pi / 2))
        return m * self.scale + (1 - m) * self.min_scale


@dataclass(frozen=True)
class ClassifierFreeGuidance:
    """denoiser(tokens: Long[B, N], **condition) -> logits [B, N, V]; wraps it into a guided one.

    hide: Bool[N] positions shown to the conditional branch only (needs `mask_id`).
    """

    denoiser: Callable[..., torch.Tensor]
    schedule: GuidanceSchedule = field(default_factory=GuidanceSchedule)
    hide: torch.Tensor | None = None
    mask_id: int | None = None
    drop: tuple[str, ...] = ()
    negative: dict | None = None

    def __post_init__(self):
        if self.hide is not None and self.mask_id is None:
            raise ValueError("hiding positions in the unconditional branch needs mask_id")
        if self.hide is None and not self.drop and self.negative is None:
            raise ValueError("the unconditional branch must differ: give hide, drop or negative")

    @property
    def uses_progress(self) -> bool:
        """Whether the loop must pass `progress` (and call at every step)."""
        return self.schedule.kind != "constant"

    def __call__(self, tokens: torch.Tensor, progress=None, **condition) -> torch.Tensor:
        b = tokens.shape[0]
        r = torch.zeros(b, dtype=torch.float64) if progress is None else torch.as_tensor(progress, dtype=torch.float64)
        s = self.schedule(r).expand(b)
        if bool((s == 1).all()):
            return self.denoiser(tokens, **condition)
        plain = tokens
        if self.hide is not None:
            plain = tokens.masked_fill(self.hide.to(tokens.device), self.mask_id)
        other = {k: v for k, v in condition.items() if k not in self.drop} | (self.negative or {})
        if not condition and not other:  # per-row condition tensors could not follow a doubled batch
            both = self.denoiser(torch.cat([tokens, plain]))
            cond, uncond = both[:b], both[b:]
        else:
            cond, uncond = self.denoiser(tokens, **condition), self.denoiser(plain, **other)
        return guide(cond, uncond, s.to(cond.device))


def guide(cond: torch.Tensor, uncond: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """l_c + (s - 1)(l_c - l_u), per row scale: Float[B]. A token the conditional branch rules out
    (-inf) stays out; where only the unconditional one rules it out, the conditional logit is used,
    since -inf - -inf would be NaN and +inf would be a certainty no branch stated."""
    diff = cond - uncond
    diff = torch.where(torch.isfinite(diff), diff, torch.zeros_like(diff))
    return cond + (scale.to(cond.dtype) - 1).view(-1, *([1] * (cond.ndim - 1))) * diff
