"""Training the motion tokenizer (`nn/motion_tokenizer.py`, a VQ-VAE per body part as in MMM,
Pinyoanuntapong et al. 2024, arXiv:2312.03596): reconstruct the feature windows through the codes.

- loss: the mean squared error over every frame and feature, each feature divided by its training
  standard deviation (so root velocities, metres per frame, weigh as much as rotations), plus the parts'
  VQ losses (summed);
- metrics: loss, mse (the normalised one), the codes' perplexity and used share (means over parts).

batch: {"motion": Float[B, T, F]} -> ObjectiveOutput. The step's generator draws dead-code restarts.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn.motion_tokenizer import MotionTokenizer
from .base import ObjectiveOutput


class MotionTokenizerTraining(nn.Module):
    """The reconstruction objective around a `MotionTokenizer`."""

    def __init__(self, tokenizer: MotionTokenizer):
        super().__init__()
        self.tokenizer = tokenizer

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        x = batch["motion"]
        out = self.tokenizer(x, generator=generator)
        scale = self.tokenizer.scale().to(out.reconstruction.dtype)
        mse = ((out.reconstruction - x.to(out.reconstruction.device)) / scale).pow(2).mean()
        loss = mse + out.codebook_loss
        metrics = {"loss": loss.detach(), "mse": mse.detach(), "perplexity": out.perplexity.detach(),
                   "used_share": out.used_share.detach()}
        return ObjectiveOutput(loss, metrics)
