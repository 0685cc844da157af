"""Training an acoustic tokenizer (SoundStream's residual VQ, Zeghidour et al. 2021, arXiv:2107.03312,
on log-mel frames): reconstruct the frames through the quantized bottleneck.

- loss: the mean squared error of the log-mel reconstruction over the valid frames of each utterance
  (all frames when the batch gives no lengths; frames after an utterance's end hold silence and are
  not scored), plus the residual VQ's loss (its stages' codebook + beta commitment terms, summed);
- metrics: loss, mse, and the codes' perplexity and used share, means over the stages.

batch: {"mel": Float[B, T, n_mels], "lengths": Long[B] (optional, valid frames)} -> ObjectiveOutput.
The step's generator draws dead-code restarts, so a resumed run restarts the same codes as an unbroken one.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn.audio_tokenizer import AcousticTokenizer
from .base import ObjectiveOutput


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Float[B, T, F] twice, lengths Long[B] or None -> the mean squared error over frames t < lengths."""
    error = (prediction.float() - target.float()).pow(2)
    if lengths is None:
        return error.mean()
    valid = torch.arange(error.shape[1], device=error.device)[None, :] < lengths.to(error.device)[:, None]
    return (error * valid[..., None]).sum() / (valid.sum() * error.shape[-1]).clamp(min=1)


class AcousticTokenizerTraining(nn.Module):
    """The reconstruction objective around an `AcousticTokenizer`."""

    def __init__(self, tokenizer: AcousticTokenizer):
        super().__init__()
        self.tokenizer = tokenizer

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        mel = batch["mel"]
        out = self.tokenizer(mel, generator=generator)
        mse = masked_mse(out.reconstruction, mel.to(out.reconstruction.device), batch.get("lengths"))
        loss = mse + out.codebook_loss
        metrics = {"loss": loss.detach(), "mse": mse.detach(), "perplexity": out.perplexity.detach(),
                   "used_share": out.used_share.detach()}
        return ObjectiveOutput(loss, metrics)
