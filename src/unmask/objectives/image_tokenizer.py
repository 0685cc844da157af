"""Training an image tokenizer (VQ-VAE, van den Oord et al. 2017, arXiv:1711.00937; FSQ, Mentzer et
al. 2023, arXiv:2309.15505): reconstruct the image through the quantized bottleneck.

- loss: the mean squared error between the reconstruction and the image (over every pixel and
  channel, on the [0, 1] scale), plus the quantizer's own term (VQ's codebook + beta commitment loss;
  0 for FSQ);
- metrics: loss, mse, psnr = 10 log10(1 / mse) (peak 1) of the batch, the perplexity of the batch's
  tokens and the share of the codebook they use.

batch: {"images": Uint8[B, C, H, W] or Float[B, C, H, W] in [0, 1]} -> ObjectiveOutput. The step's
generator draws VQ's dead-code restarts, so a resumed run restarts the same codes as an unbroken one.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn.image_tokenizer import ImageTokenizer
from .base import ObjectiveOutput


def psnr(mse: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of images on the [0, 1] scale, from their mean squared error."""
    return -10.0 * torch.log10(mse.clamp(min=1e-10))  # 1e-10: a perfect copy reads 100 dB, not inf


class TokenizerTraining(nn.Module):
    """The reconstruction objective around an `ImageTokenizer`."""

    def __init__(self, tokenizer: ImageTokenizer):
        super().__init__()
        self.tokenizer = tokenizer

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        images = batch["images"]
        out = self.tokenizer(images, generator=generator)
        target = self.tokenizer.pixels(images)
        mse = (out.reconstruction.float() - target.float()).pow(2).mean()
        loss = mse + out.codebook_loss
        metrics = {"loss": loss.detach(), "mse": mse.detach(), "psnr": psnr(mse.detach()),
                   "perplexity": out.perplexity.detach(), "used_share": out.used_share.detach()}
        return ObjectiveOutput(loss, metrics)
