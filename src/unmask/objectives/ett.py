"""End-to-end vision tokenizer tuning (ETT: Wang et al. 2025, "End-to-end vision tokenizer tuning",
arXiv:2505.10562): the downstream model reads the tokenizer's codebook EMBEDDINGS instead of discrete
ids, so its loss reaches the tokenizer, and the tokenizer is tuned together with it, a reconstruction
loss kept on the tokenizer so that its codes still decode to the image.

    codes  = e[k] + (q - sg[q])       k = the nearest code, q = VQ's straight-through vector
                                      (value e[k] exactly; gradient to the codebook entry e[k] and,
                                      through q, to the encoder)
    loss   = downstream(codes) + w * (MSE(decode(q), x) + VQ's codebook and commitment loss)

The downstream task here is classification (`TokenClassifier`: a small Transformer over the h x w code
vectors, mean-pooled, and a linear head), the task where what the tokens keep of the image is scored
directly. `tune=False` is the baseline ETT improves on: the tokenizer frozen (no gradient, eval mode)
and the classifier reading its code embeddings alone.

batch: {"images": Uint8[B, C, H, W] (or float in [0, 1]), "labels": Long[B]} -> ObjectiveOutput with
metrics loss, ce, accuracy and mse (the batch's reconstruction error; with `tune=False` measured but
not trained).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.image_tokenizer import ImageTokenizer
from ..nn.quantizers import Quantized
from ..nn.transformer import Transformer
from .base import ObjectiveOutput


class TokenClassifier(nn.Module):
    """codes Float[B, h, w, D] -> logits Float[B, classes]: a linear map to `dim`, a learned position
    embedding per grid place, `depth` Transformer blocks, the mean over places, a linear head."""

    def __init__(self, code_dim: int, places: int, classes: int, dim: int = 64, depth: int = 2, heads: int = 4):
        super().__init__()
        self.proj = nn.Linear(code_dim, dim)
        self.pos = nn.Parameter(torch.randn(1, places, dim) * 0.02)
        self.body = Transformer(dim, depth, heads)
        self.head = nn.Linear(dim, classes)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        x = self.proj(codes.flatten(1, 2)) + self.pos  # [B, h * w, dim]
        return self.head(self.body(x).mean(1))


class EttCodes(NamedTuple):
    codes: torch.Tensor  # Float[B, h, w, D]: e[k], gradients to the codebook and the encoder
    quantized: Quantized  # the quantizer's output (straight-through vectors, indices, VQ loss)
    pixels: torch.Tensor  # Float[B, C, H, W]: the images on the [0, 1] scale


def ett_codes(tokenizer: ImageTokenizer, images: torch.Tensor, generator: torch.Generator | None = None) -> EttCodes:
    """images -> the code embeddings e[k] with gradients to the codebook (the lookup) and to the
    encoder (q's straight-through part, which adds exactly 0 to the value)."""
    q, x = tokenizer.quantize(images, generator)
    codes = tokenizer.embed(q.indices) + (q.quantized - q.quantized.detach())
    return EttCodes(codes, q, x)


class TokenizerTuning(nn.Module):
    """ETT around an `ImageTokenizer` and a `TokenClassifier`; `recon_weight` is w above. With
    `tune=False` the tokenizer gets no gradient (its parameters are frozen) and stays in eval mode
    (no VQ dead-code restarts) whatever mode the objective is put in."""

    def __init__(self, tokenizer: ImageTokenizer, classifier: TokenClassifier, recon_weight: float = 1.0,
                 tune: bool = True):
        super().__init__()
        if recon_weight < 0:
            raise ValueError(f"recon_weight must be >= 0, got {recon_weight}")
        self.tokenizer, self.classifier = tokenizer, classifier
        self.recon_weight, self.tune = recon_weight, tune
        if not tune:
            self.tokenizer.requires_grad_(False)
            self.tokenizer.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.tune:
            self.tokenizer.eval()
        return self

    def codes(self, images: torch.Tensor) -> torch.Tensor:
        """Float[B, h, w, D]: the code embeddings the classifier reads (no gradient to the tokenizer)."""
        return self.tokenizer.embed(self.tokenizer.encode(images))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Float[B, classes] of images Uint8[B, C, H, W]."""
        return self.classifier(self.codes(images))

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        images, labels = batch["images"], batch["labels"]
        if self.tune:
            codes, q, x = ett_codes(self.tokenizer, images, generator)
            mse = (self.tokenizer.decode_codes(q.quantized).float() - x.float()).pow(2).mean()
            recon = mse + q.loss
        else:
            with torch.no_grad():
                q, x = self.tokenizer.quantize(images)
                codes = self.tokenizer.embed(q.indices)
                mse = (self.tokenizer.decode_codes(codes).float() - x.float()).pow(2).mean()
            recon = mse.new_zeros(())
        logits = self.classifier(codes)
        labels = labels.to(logits.device)
        ce = F.cross_entropy(logits.float(), labels)
        loss = ce + self.recon_weight * recon
        accuracy = (logits.argmax(-1) == labels).float().mean()
        metrics = {"loss": loss.detach(), "ce": ce.detach(), "accuracy": accuracy.detach(), "mse": mse.detach()}
        return ObjectiveOutput(loss, metrics)
