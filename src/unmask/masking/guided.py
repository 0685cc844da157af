"""2D-guided masks (I2P-MAE, Zhang et al. 2023, "Learning 3D Representations from 2D Pre-trained
Models via Image-to-Point Masked Autoencoders", arXiv:2212.06785): the tokens a 2D network finds
salient are more likely to stay visible, so the encoder sees the significant structures and rebuilds
the rest from them.

Data-driven: the saliency comes from the context as `saliency: Float[B, L]` (I2P-MAE: the 2D
network's attention back-projected to the point tokens, `nn/view_features.py`). The probabilities
are p = softmax(saliency / temperature) over the tokens of a row; the K = L - round(ratio * L)
visible tokens are a draw of K from p without replacement (the release, `mask_2D_guided`, draws a
whole permutation with `torch.multinomial(softmax(saliency), L, replacement=False)` and keeps its
first K; the first K of such a permutation are distributed as the top K of log p + Gumbel noise,
which is what is drawn here, in float64). Temperature 1 is the release's rule. Salient tokens are
sampled, not taken top-K: a token of low saliency can stay visible, and the mask differs per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Masker
from .selective import gumbel_keys


@dataclass(frozen=True)
class GuidedMask(Masker):
    temperature: float = 1.0
    context_key: str = "saliency"

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"GuidedMask temperature must be > 0, got {self.temperature}")

    def probabilities(self, saliency: torch.Tensor) -> torch.Tensor:
        """Float64[B, L]: softmax(saliency / temperature), each token's chance of being the first visible one."""
        return torch.softmax(saliency.double() / self.temperature, dim=-1)

    def scores(self, segment, counts, generator, **context):
        if self.context_key not in context:
            raise ValueError(f"GuidedMask needs `{self.context_key}` (Float[B, L], one value per token) in the context")
        saliency = torch.as_tensor(context[self.context_key]).detach().cpu()
        if saliency.shape != (counts.shape[0], segment.length):
            raise ValueError(f"{self.context_key} must be [{counts.shape[0]}, {segment.length}] for segment "
                             f"{segment.name!r}, got {tuple(saliency.shape)}")
        # the visible tokens are the top K keys, so the hidden ones are the lowest: hide_top hides the highest
        return -gumbel_keys(saliency, self.temperature, generator)
