"""First-hitting sampling (Zheng et al. 2024, "Masked diffusion models are secretly time-agnostic
masked models ...", P39).

With n tokens hidden at time t under the linear schedule, each one's reveal time is uniform on
[0, t], so the next reveal happens at t * u^(1/n), u ~ U(0, 1), and reveals one uniformly chosen
hidden token. Each denoiser call therefore reveals exactly one token: exactly N calls for N hidden
tokens, and the same law as ancestral sampling with infinitely many steps. The times are kept in
the state for reporting; a denoiser that does not take time as input never needs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import checks
from .categorical import categorical


@dataclass
class FirstHittingState:
    t: list[float]  # current time per row


@dataclass(frozen=True)
class FirstHittingSampler:
    temperature: float = 1.0

    def __post_init__(self):
        checks.real(self, "temperature")

    def start(self, hidden: torch.Tensor) -> FirstHittingState:
        return FirstHittingState(t=[1.0] * hidden.shape[0])

    def step(self, logits, tokens, state: FirstHittingState, generator=None):
        mask_id = logits.shape[-1]
        hidden = tokens == mask_id
        n = hidden.sum(1)
        live = n > 0
        pick = torch.rand(tokens.shape, generator=generator, dtype=torch.float64, device=tokens.device)
        pos = pick.masked_fill(~hidden, -1.0).argmax(1)  # uniform among hidden places
        rows = torch.nonzero(live).squeeze(1)
        out = tokens.clone()
        out[rows, pos[rows]] = categorical(logits[rows, pos[rows]], self.temperature, generator)
        u = torch.rand(tokens.shape[0], generator=generator, dtype=torch.float64)
        t = torch.tensor(state.t, dtype=torch.float64)
        t = torch.where(live.cpu(), t * u ** (1.0 / n.cpu().clamp(min=1)), t)
        return out, FirstHittingState(t=t.tolist())
