"""All in Tokens (AiT: Ning et al. 2023, "All in Tokens: unifying output space of visual tasks via
soft token", arXiv:2301.02229): a dense output (here an object mask) is itself tokenized by a VQ
tokenizer trained on masks, a model predicts the mask's tokens from the image, and the mask is decoded
from the SOFT token, the softmax-weighted mix of codebook vectors, instead of the argmax code:

    soft code at a place = sum_k p_k e_k          p = softmax(logits), e = the codebook [K, D]
    mask                 = decode(soft codes) > 1/2

A one-hot p gives the argmax code exactly, so soft decoding only differs where the model is unsure.

`MaskTokenPredictor` reads the RGB pixels (a strided convolution stem down to the token grid, a small
Transformer, a linear head over the K codes) and predicts every place in one pass. AiT's other
training trick, mask augmentation (replacing a share of the teacher-forced input tokens of its
autoregressive decoder), needs an iterative decoder with token inputs; this one has none, so it is
not used. AiT's auxiliary loss on the decoded soft output is not used either: the loss is the
cross-entropy on the mask tokens alone.

batch: {"images": Uint8[B, 3, H, W], "tokens": Long[B, h * w] (the mask tokenizer's codes, row-major)}
-> ObjectiveOutput with metrics loss and accuracy (share of places whose argmax is the target code).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.image_tokenizer import ImageTokenizer
from ..nn.transformer import Transformer
from .base import ObjectiveOutput


def soft_codes(probs: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """probs Float[..., K] (rows sum to 1), codebook Float[K, D] -> Float[..., D]: sum_k p_k e_k."""
    return probs.to(codebook.dtype) @ codebook


def codebook_of(tokenizer: ImageTokenizer) -> torch.Tensor:
    """Float[K, D]: every code vector of the tokenizer, in index order (VQ's codebook, FSQ's grid)."""
    device = tokenizer.decoder[0].weight.device
    return tokenizer.embed(torch.arange(tokenizer.codebook_size, device=device))


def decode_soft(tokenizer: ImageTokenizer, probs: torch.Tensor) -> torch.Tensor:
    """probs Float[B, h, w, K] -> Float[B, C, H, W]: the decoder on the soft codes."""
    return tokenizer.decode_codes(soft_codes(probs, codebook_of(tokenizer)))


def decode_argmax(tokenizer: ImageTokenizer, probs: torch.Tensor) -> torch.Tensor:
    """probs (or logits) Float[B, h, w, K] -> Float[B, C, H, W]: the decoder on the most likely codes."""
    return tokenizer.decode(probs.argmax(-1))


def mask_iou(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bool[B, ...] x Bool[B, ...] -> Float[B]: |predicted & target| / |predicted | target| per row;
    1 where both are empty (nothing to find, nothing found)."""
    p, t = predicted.flatten(1), target.flatten(1)
    inter = (p & t).sum(1).float()
    union = (p | t).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


class MaskTokenPredictor(nn.Module):
    """images Uint8[B, C, H, W] -> logits Float[B, h * w, K]: log2(H / h) stride-2 4x4 convolutions
    (GELU between) to the token grid, a learned position embedding, `depth` Transformer blocks, a
    linear head over the `codes` mask codes."""

    def __init__(self, channels: int, image_size: int, grid: int, codes: int, dim: int = 64, depth: int = 2,
                 heads: int = 4):
        super().__init__()
        if image_size % grid or (image_size // grid) & (image_size // grid - 1):
            raise ValueError(f"image_size / grid must be a power of two, got {image_size} / {grid}")
        layers: list[nn.Module] = []
        width = channels
        for i in range(int(math.log2(image_size // grid))):
            layers += [nn.GELU()] if i else []
            layers.append(nn.Conv2d(width, dim, 4, stride=2, padding=1))
            width = dim
        self.stem = nn.Sequential(*layers) if layers else nn.Conv2d(channels, dim, 1)
        self.pos = nn.Parameter(torch.randn(1, grid * grid, dim) * 0.02)
        self.body = Transformer(dim, depth, heads)
        self.head = nn.Linear(dim, codes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        device = self.head.weight.device
        x = images.to(device).float() / 255.0 if images.dtype == torch.uint8 else images.to(device)
        x = self.stem(x * 2.0 - 1.0).flatten(2).transpose(1, 2) + self.pos  # [B, h * w, dim]
        return self.head(self.body(x))


class MaskTokenPrediction(nn.Module):
    """Cross-entropy of the mask's codes given the image."""

    def __init__(self, predictor: MaskTokenPredictor):
        super().__init__()
        self.predictor = predictor

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        logits = self.predictor(batch["images"])  # [B, h * w, K]
        target = batch["tokens"].to(logits.device)
        loss = F.cross_entropy(logits.float().flatten(0, 1), target.flatten())
        accuracy = (logits.argmax(-1) == target).float().mean()
        return ObjectiveOutput(loss, {"loss": loss.detach(), "accuracy": accuracy.detach()})
