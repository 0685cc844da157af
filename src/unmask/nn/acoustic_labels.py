"""Acoustic tokenizers that label log-mel patches for BEATs (Chen, Wu, Wang, Wu, Tompkins, Chen, Che,
Yu, Wei 2023, "BEATs: Audio Pre-Training with Acoustic Tokenizers", arXiv:2212.09058; OpenBEATs,
Bharadwaj et al. 2025, arXiv:2507.14129): the labels a masked-patch model learns to predict come
from a tokenizer, first a frozen random one, then one distilled from the model of the round before.

A patch is `frames` consecutive log-mel frames of all mels (2 x 40 = 80 values): BEATs cuts 16 x 16
time-frequency patches of 128-mel spectrograms; our utterances are 24 to 48 frames of 40 mels, so
a patch spans the whole band and 2 frames (23 ms), giving 12 to 24 patches an utterance.

- `RandomProjectionTokenizer` (BEATs' round 1): each patch, standardised, is projected by a fixed
  random matrix, and labelled with the nearest of a fixed random unit codebook by cosine. Buffers
  only, drawn from `seed`: never trained, saved with the model (the same construction as BEST-RQ's
  quantizer, Chiu et al. 2022, arXiv:2202.01855).
- `DistilledTokenizer` (BEATs' round 2 on): a small Transformer encoder + VQ-VAE's `VectorQuantizer`
  over L2-normalised outputs (BEATs' cosine codebook) labels each patch; during its training an
  estimator (a small Transformer) reads the quantized codes and must predict the teacher's (the
  round-1 model's) last-layer feature of each patch: `distillation_loss`, 1 - cosine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .quantizers import Quantized, VectorQuantizer
from .transformer import Transformer

FRAMES = 2  # log-mel frames per patch


def patches(mel: torch.Tensor, frames: int = FRAMES) -> torch.Tensor:
    """mel Float[B, T, M] -> Float[B, ceil(T / frames), frames * M]: consecutive frames side by side; a
    short last patch repeats its last frame."""
    short = -mel.shape[1] % frames
    if short:
        mel = torch.cat([mel, mel[:, -1:].expand(-1, short, -1)], 1)
    return mel.float().unflatten(1, (-1, frames)).flatten(2)


def patch_lengths(lengths: torch.Tensor, frames: int = FRAMES) -> torch.Tensor:
    """Long[B]: valid patches of rows with `lengths` valid frames (ceil(lengths / frames))."""
    return (lengths + frames - 1) // frames


def standardise(mel: torch.Tensor) -> torch.Tensor:
    """Float[B, T, M] -> each utterance at mean 0, spread 1 (log-mel values run about -11 to 5)."""
    return (mel - mel.mean(dim=(1, 2), keepdim=True)) / mel.std(dim=(1, 2), keepdim=True).clamp_min(1e-5)


class RandomProjectionTokenizer(nn.Module):
    """mel Float[B, T, mels] -> labels Long[B, ceil(T / frames)]; frozen (buffers), drawn from `seed`."""

    def __init__(self, mels: int = 40, codes: int = 64, code_dim: int = 16, frames: int = FRAMES, seed: int = 0):
        super().__init__()
        self.frames, self.codes = frames, codes
        g = torch.Generator().manual_seed(seed)
        width = frames * mels
        projection = torch.randn(width, code_dim, generator=g) * (2.0 / (width + code_dim)) ** 0.5  # Xavier
        self.register_buffer("projection", projection)
        self.register_buffer("codebook", F.normalize(torch.randn(codes, code_dim, generator=g), dim=1))

    @torch.no_grad()
    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = patches(mel, self.frames)
        z = F.normalize(F.layer_norm(x, x.shape[-1:]) @ self.projection, dim=-1)
        return (z @ self.codebook.t()).argmax(-1)  # the largest cosine: both sides are unit vectors


def distillation_loss(estimate: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid places (Bool[B, N]) of 1 - cos(estimate, teacher), both Float[B, N, D]: BEATs'
    tokenizer objective (it maximises the cosine; 1 - cos keeps the loss >= 0)."""
    cos = F.cosine_similarity(estimate.float(), teacher.float(), dim=-1)
    w = valid.to(cos.dtype)
    return ((1 - cos) * w).sum() / w.sum().clamp_min(1.0)


class DistilledTokenizer(nn.Module):
    """Encoder + cosine VQ (the tokenizer) and estimator (only for its training). mel Float[B, T, mels] ->
    labels Long[B, ceil(T / frames)] (`forward`, no gradients); `quantize(mel, generator)` -> Quantized
    over Float[B, N, code_dim]; `estimate(quantized)` -> Float[B, N, teacher_dim]."""

    def __init__(self, mels: int = 40, dim: int = 64, depth: int = 2, heads: int = 4, codes: int = 64,
                 code_dim: int = 16, teacher_dim: int = 64, frames: int = FRAMES, max_patches: int = 64, seed: int = 0):
        super().__init__()
        self.frames, self.codes = frames, codes
        self.embed = nn.Linear(frames * mels, dim)
        self.position = nn.Parameter(torch.randn(max_patches, dim) * 0.02)
        self.encoder = Transformer(dim, depth, heads)
        self.to_code = nn.Linear(dim, code_dim)
        self.quantizer = VectorQuantizer(codes, code_dim, seed=seed)
        self.from_code = nn.Linear(code_dim, dim)
        self.estimator = Transformer(dim, 1, heads)
        self.to_teacher = nn.Linear(dim, teacher_dim)

    def quantize(self, mel: torch.Tensor, generator: torch.Generator | None = None) -> Quantized:
        x = self.embed(patches(standardise(mel), self.frames))
        x = self.encoder(x + self.position[: x.shape[1]])
        return self.quantizer(F.normalize(self.to_code(x), dim=-1), generator)

    def estimate(self, quantized: torch.Tensor) -> torch.Tensor:
        x = self.from_code(quantized)
        return self.to_teacher(self.estimator(x + self.position[: x.shape[1]]))

    @torch.no_grad()
    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.quantize(mel).indices
