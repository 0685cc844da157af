"""Text-to-image masked token modeling (Meissonic: Bai et al. 2024, arXiv:2410.08261, after MUSE:
Chang et al. 2023, arXiv:2301.00704): image tokens are hidden by a cosine-scheduled ratio and
predicted from the visible ones and a text prompt, and the prompt is dropped for a share of the rows
(Meissonic: 10%) so that one network is both the conditional and the unconditional model that
classifier-free guidance (`sampling/guidance.py`) pushes apart at sampling.

The prompt is a prefix segment of word tokens (`nn/text_condition.py`) that the masker never hides
and the loss never reads; a dropped prompt is the null prompt, every word position holding the mask
id, exactly what the guided sampler's unconditional branch shows the network (`hide` there). The
mask ratio reaches the network as its timestep through `ModelConfig.ratio_input`.

    objective = text_to_image(model, prompt_dropout=0.1)
    out = objective({"tokens": Long[B, L + h * w]})   # prompt words, then image tokens
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..masking import RandomMask
from ..masking.base import uniform
from ..schedules import Schedule
from .masked_token import MaskedTokenModeling

PROMPT, IMAGE = "prompt", "image"


@dataclass(frozen=True)
class PromptDropout:
    """A corruption (`MaskedTokenModeling(corruption=...)`): hidden tokens become the mask id, and in
    exactly round(share * B) rows, chosen uniformly at random, so do the prompt positions
    [start, stop). tokens: Long[B, N], mask: Bool[B, N] -> inputs Long[B, N]."""
    start: int
    stop: int
    share: float = 0.1

    def __post_init__(self):
        if not 0 <= self.share <= 1:
            raise ValueError(f"prompt dropout share must lie in [0, 1], got {self.share}")
        if not 0 <= self.start < self.stop:
            raise ValueError(f"prompt positions must be 0 <= start < stop, got [{self.start}, {self.stop})")

    def dropped(self, batch_size: int, generator=None) -> torch.Tensor:
        """Bool[B] on the host: the rows whose prompt is dropped, exactly round(share * B) of them."""
        count = round(self.share * batch_size)
        order = uniform((1, batch_size), generator).argsort(dim=1)[0]
        rows = torch.zeros(batch_size, dtype=torch.bool)
        rows[order[:count]] = True
        return rows

    def __call__(self, tokens: torch.Tensor, mask: torch.Tensor, mask_id: int, generator=None) -> torch.Tensor:
        inputs = tokens.masked_fill(mask, mask_id)
        rows = self.dropped(tokens.shape[0], generator).to(tokens.device, non_blocking=True)
        inputs[:, self.start:self.stop] = inputs[:, self.start:self.stop].masked_fill(rows[:, None], mask_id)
        return inputs


def text_to_image(model, prompt_dropout: float = 0.1, schedule: str = "cosine") -> MaskedTokenModeling:
    """The objective over a model whose layout is a `prompt` segment then an `image` segment: only
    image tokens are hidden (by `schedule`, an exact count per row) and scored."""
    where = model.config.layout.slice(PROMPT)
    return MaskedTokenModeling(model, RandomMask((IMAGE,)), Schedule(schedule),
                               corruption=PromptDropout(where.start, where.stop, prompt_dropout))
