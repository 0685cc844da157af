"""GenMol's confidence sampler (Lee et al. 2025, "GenMol: A Drug Discovery Generalist with Discrete
Diffusion", P11): MaskGIT's step with exactly one token committed per step.

Every hidden token is drawn from softmax(logits / temperature); its confidence is the log-probability
of the drawn token plus Gumbel noise scaled by `choice_temperature` (GenMol's "randomness") times
(1 - (i + 1) / steps), annealed to zero (GenMol anneals by 1 - i / (steps - 1), the same line one step
earlier); the most confident hidden token of each row is committed. GenMol runs as many steps as the
row with most hidden tokens (`for_canvas`), so each row is filled one token at a time. MaskGIT's
schedule cannot give that count exactly: floor(n0 * (1 - r)) rounds 12 * (1 - 5/12) down to 6.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .maskgit import MaskGITSampler, MaskGITState


@dataclass(frozen=True)
class GenMolSampler(MaskGITSampler):
    def keep_hidden(self, state: MaskGITState, prev: torch.Tensor) -> torch.Tensor:
        """One fewer hidden token per row each step; none after the last step. prev: Long[B]."""
        if state.step >= self.steps - 1:
            return torch.zeros_like(prev)
        return (prev - 1).clamp(min=0)

    @staticmethod
    def for_canvas(canvas: torch.Tensor, mask_id: int, temperature: float = 1.0,
                   randomness: float = 0.5) -> GenMolSampler:
        """The sampler for `canvas` (Long[B, N]): as many steps as its row with most hidden tokens."""
        steps = max(1, int((canvas == mask_id).sum(1).max()))
        return GenMolSampler(steps, temperature=temperature, choice_temperature=randomness)
