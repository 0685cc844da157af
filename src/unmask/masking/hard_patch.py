"""Hard-patch masks (HPM, Wang et al., CVPR 2023, P3): hide the patches a loss predictor expects to
be hardest to reconstruct, so the model learns to pose itself hard problems.

Data-driven: the predicted losses come from the context as `scores: Float[B, L]` (one value per
token of the one segment it masks), never from a model. Of the round(ratio * L) hidden tokens, the
`int(count * hard_share)` with the highest scores are hidden for sure (HPM's `n_hard`), the rest are
drawn uniformly from the other tokens; `hard_share = 0` is plain random masking. HPM raises the
share from 0 to 0.5 over training (easy to hard): `hard_share_at(progress)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Masker, hide_top, uniform

HPM_FINAL_SHARE = 0.5  # HPM's alpha_t reaches 0.5 of the hidden tokens at the end of training


def hard_share_at(progress: float, final: float = HPM_FINAL_SHARE) -> float:
    """HPM's linear easy-to-hard schedule: the share of hidden tokens chosen by predicted loss at
    training progress in [0, 1] (HPM: alpha_t = 0.5 (epoch + 1) / epochs, here per step)."""
    return final * min(max(progress, 0.0), 1.0)


@dataclass(frozen=True)
class HardPatchMask(Masker):
    hard_share: float = HPM_FINAL_SHARE
    context_key: str = "scores"

    def __post_init__(self):
        if not 0.0 <= self.hard_share <= 1.0:
            raise ValueError(f"HardPatchMask hard_share must lie in [0, 1], got {self.hard_share}")

    def scores(self, segment, counts, generator, **context):
        if self.context_key not in context:
            raise ValueError(f"HardPatchMask needs `{self.context_key}` (predicted losses, Float[B, L]) in the context")
        predicted = torch.as_tensor(context[self.context_key]).detach().cpu().double()
        if predicted.shape != (counts.shape[0], segment.length):
            raise ValueError(f"{self.context_key} must be [{counts.shape[0]}, {segment.length}] for segment "
                             f"{segment.name!r}, got {tuple(predicted.shape)}")
        n_hard = torch.floor(counts.double() * self.hard_share).long()
        hard = hide_top(predicted, n_hard)
        return uniform(predicted.shape, generator) + hard.double()  # the hard ones outrank the rest
