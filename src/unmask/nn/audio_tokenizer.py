"""An acoustic tokenizer: a small 1-D convolutional autoencoder over log-mel frames whose bottleneck is
quantized by a residual VQ, so an utterance becomes `stages` parallel streams of discrete codes (the
acoustic tokens of SoundStream, Zeghidour et al. 2021, arXiv:2107.03312, at toy scale and on mel
frames rather than waveforms). Stage 0 carries the coarse content; each further stage codes what the
earlier ones left, which is what MAGNeT and MaskGCT's acoustic stage predict stream by stream.

    encoder   mel [B, T, n_mels] -> normalise per mel bin -> conv3 -> 2 x residual [GN, SiLU, conv3]
              -> (down = 2: conv4 /2) -> GN, SiLU, conv1 -> z [B, T / down, D]
    quantizer ResidualVQ: z -> codes Long[B, stages, T / down], their summed code vectors
    decoder   conv3 -> (down = 2: transposed conv4 x2) -> 2 x residual [GN, SiLU, conv3] -> GN, SiLU,
              conv3 -> de-normalise -> mel [B, T, n_mels]

The per-bin mean and standard deviation (buffers `mel_mean`, `mel_std`, saved with the weights) are
set once from the training frames (`set_normalisation`) before training.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
from torch import nn

from .quantizers import ResidualVQ

NORM_GROUPS = 8  # GroupNorm groups: width must be a multiple
DOWNSAMPLES = (1, 2)


@dataclass(frozen=True)
class AcousticTokenizerConfig:
    n_mels: int = 40
    width: int = 64
    down: int = 2
    stages: int = 3
    codes: int = 64
    code_dim: int = 32
    beta: float = 0.25
    restart_after: int = 32

    def __post_init__(self):
        for name in ("n_mels", "code_dim", "stages"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.width < NORM_GROUPS or self.width % NORM_GROUPS:
            raise ValueError(f"width must be a positive multiple of {NORM_GROUPS} (GroupNorm groups), got {self.width}")
        if self.down not in DOWNSAMPLES:
            raise ValueError(f"down must be one of {DOWNSAMPLES}, got {self.down}")
        if self.codes < 2:
            raise ValueError(f"codes must be >= 2, got {self.codes}")
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta}")
        if self.restart_after < 0:
            raise ValueError(f"restart_after must be >= 0 (0 turns dead-code restarts off), got {self.restart_after}")

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> AcousticTokenizerConfig:
        known = {f.name for f in fields(AcousticTokenizerConfig)}
        for key in d:
            if key not in known:
                raise ValueError(f"unknown acoustic tokenizer config key {key!r}; "
                                 f"known keys: {', '.join(sorted(known))}")
        return AcousticTokenizerConfig(**d)


class AcousticTokenizerOutput(NamedTuple):
    reconstruction: torch.Tensor  # Float[B, T, n_mels] log-mel
    codes: torch.Tensor  # Long[B, stages, T / down]
    codebook_loss: torch.Tensor  # scalar: the stages' VQ losses, summed
    perplexity: torch.Tensor  # 0-dim: mean over stages
    used_share: torch.Tensor  # 0-dim: mean over stages


class Residual(nn.Module):
    """x + conv3(SiLU(GN(x))) on Float[B, W, T]."""

    def __init__(self, width: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(NORM_GROUPS, width), nn.SiLU(), nn.Conv1d(width, width, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _head(width: int, out: int, kernel: int) -> list[nn.Module]:
    return [nn.GroupNorm(NORM_GROUPS, width), nn.SiLU(), nn.Conv1d(width, out, kernel, padding=kernel // 2)]


class AcousticTokenizer(nn.Module):
    """log-mel Float[B, T, n_mels] <-> codes Long[B, stages, T / down] (T a multiple of `down`)."""

    def __init__(self, config: AcousticTokenizerConfig):
        super().__init__()
        self.config = config
        w, d = config.width, config.down
        shrink = [nn.Conv1d(w, w, 4, stride=2, padding=1)] if d == 2 else []
        grow = [nn.ConvTranspose1d(w, w, 4, stride=2, padding=1)] if d == 2 else []
        self.encoder = nn.Sequential(nn.Conv1d(config.n_mels, w, 3, padding=1), Residual(w), Residual(w),
                                     *shrink, *_head(w, config.code_dim, 1))
        self.decoder = nn.Sequential(nn.Conv1d(config.code_dim, w, 3, padding=1), *grow, Residual(w), Residual(w),
                                     *_head(w, config.n_mels, 3))
        self.quantizer = ResidualVQ(config.stages, config.codes, config.code_dim, config.beta, config.restart_after)
        self.register_buffer("mel_mean", torch.zeros(config.n_mels))
        self.register_buffer("mel_std", torch.ones(config.n_mels))

    @property
    def stages(self) -> int:
        return self.config.stages

    @property
    def codebook_size(self) -> int:
        """Codes per stage."""
        return self.config.codes

    @torch.no_grad()
    def set_normalisation(self, mel: torch.Tensor) -> None:
        """mel: Float[M, T, n_mels] training frames -> per-bin mean and std (floored at 1e-3 so a bin
        that is always silent does not divide by zero)."""
        flat = mel.reshape(-1, self.config.n_mels).double()
        self.mel_mean.copy_(flat.mean(0))
        self.mel_std.copy_(flat.std(0).clamp(min=1e-3))

    def _check(self, mel: torch.Tensor) -> torch.Tensor:
        n, d = self.config.n_mels, self.config.down
        if mel.ndim != 3 or mel.shape[-1] != n or mel.shape[1] % d:
            raise ValueError(f"mel must be Float[B, T, {n}] with T a multiple of {d}, got shape {tuple(mel.shape)}")
        return mel.to(self.mel_mean.device, non_blocking=True)

    def quantize(self, mel: torch.Tensor, generator: torch.Generator | None = None):
        """mel Float[B, T, n_mels] -> Quantized (quantized Float[B, T / down, D], indices Long[B, T / down, stages])."""
        x = ((self._check(mel) - self.mel_mean) / self.mel_std).transpose(1, 2)  # [B, n_mels, T]
        z = self.encoder(x).transpose(1, 2)  # [B, T / down, D], channels last for the quantizer
        return self.quantizer(z, generator=generator)

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """mel Float[B, T, n_mels] -> codes Long[B, stages, T / down]. In training mode the quantizer may
        restart dead codes here: call it in eval mode to read codes."""
        return self.quantize(mel).indices.transpose(1, 2)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes Long[B, s, T / down], the first s <= stages streams -> mel Float[B, T, n_mels]. With
        s < stages the later stages count as zero: the coarser reconstruction."""
        return self.decode_vectors(self.quantizer.embed(codes.transpose(1, 2)))

    def decode_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        """Float[B, T / down, D] -> Float[B, T, n_mels]. Made contiguous first, so `decode(encode(x))`
        takes the same convolution kernels as `forward(x)` and equals it exactly."""
        y = self.decoder(vectors.transpose(1, 2).contiguous()).transpose(1, 2)  # [B, T, n_mels]
        return y * self.mel_std + self.mel_mean

    def forward(self, mel: torch.Tensor, generator: torch.Generator | None = None) -> AcousticTokenizerOutput:
        """Encode, quantize (straight-through) and decode; `generator` draws dead-code restarts. In eval
        mode `reconstruction` equals `decode(encode(mel))` exactly."""
        q = self.quantize(mel, generator)
        return AcousticTokenizerOutput(self.decode_vectors(q.quantized), q.indices.transpose(1, 2), q.loss,
                                       q.perplexity, q.used_share)
