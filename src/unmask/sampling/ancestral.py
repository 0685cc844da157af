"""Ancestral sampling of a masked diffusion model (MDLM, Sahoo et al. 2024), linear schedule.

Time runs from 1 to 0 over `steps` equal steps. From t to s = t - 1/steps, each hidden token is
revealed with probability (t - s) / t, and a revealed token is drawn from the denoiser. Steps that
reveal nothing leave the input unchanged, so the loop reuses the last logits (MDLM's cache): the
number of denoiser calls equals the number of distinct partly hidden states visited, whatever
`steps` is, for a denoiser that does not take the time as input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import checks
from .categorical import categorical


@dataclass
class AncestralState:
    step: int


@dataclass(frozen=True)
class AncestralSampler:
    steps: int = 128
    temperature: float = 1.0

    def __post_init__(self):
        checks.integer(self, "steps")
        checks.real(self, "temperature")

    def start(self, hidden: torch.Tensor) -> AncestralState:
        return AncestralState(step=0)

    def reveal_probability(self, step: int) -> float:
        t = 1 - step / self.steps
        s = max(1 - (step + 1) / self.steps, 0.0)
        return 1.0 if step >= self.steps - 1 else (t - s) / t

    def step(self, logits, tokens, state: AncestralState, generator=None):
        mask_id = logits.shape[-1]
        hidden = tokens == mask_id
        u = torch.rand(tokens.shape, generator=generator, dtype=torch.float64, device=tokens.device)
        reveal = hidden & (u < self.reveal_probability(state.step))
        out = tokens.clone()
        if reveal.any():
            out[reveal] = categorical(logits[reveal], self.temperature, generator)
        return out, AncestralState(state.step + 1)
