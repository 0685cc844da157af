"""A motion tokenizer with one token stream per body part: each part's features (`data.motion.BODY_PARTS`)
go through their own small 1-D convolutional VQ autoencoder, so a window of T frames becomes
Long[B, parts, T / down] codes, streams (body parts) x time.

MMM (Pinyoanuntapong et al. 2024, "MMM: Generative Masked Motion Model", arXiv:2312.03596) codes motion
with a VQ-VAE over short windows (temporal downsampling 4 at 20 fps); its body-part editing uses separate
codebooks for the upper and lower body. Here every part has its own codebook (a part's codes mean
nothing to another part), the windows are shorter (`down` 2 by default: the clips are tiny) and each
part's autoencoder is `nn/audio_tokenizer.AcousticTokenizer` with one VQ stage, its "mel bins" being the
part's features, normalised per feature by the training windows' mean and standard deviation
(`set_normalisation`).

    encode  x Float[B, T, F] -> codes Long[B, P, T / down]      (P = 5 parts, in BODY_PARTS order)
    decode  codes Long[B, P, T' ] -> x Float[B, T' * down, F]   (any T': the network is convolutional)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn

from ..data.motion import BODY_PARTS, F
from .audio_tokenizer import AcousticTokenizer, AcousticTokenizerConfig

PARTS = tuple(BODY_PARTS)


@dataclass(frozen=True)
class MotionTokenizerConfig:
    width: int = 32
    down: int = 2
    codes: int = 128
    code_dim: int = 16
    beta: float = 0.25
    restart_after: int = 32

    def part(self, name: str) -> AcousticTokenizerConfig:
        return AcousticTokenizerConfig(n_mels=len(BODY_PARTS[name]), width=self.width, down=self.down, stages=1,
                                       codes=self.codes, code_dim=self.code_dim, beta=self.beta,
                                       restart_after=self.restart_after)

    def to_dict(self) -> dict:
        return asdict(self)


class MotionTokenizerOutput(NamedTuple):
    reconstruction: torch.Tensor  # Float[B, T, F]
    codes: torch.Tensor  # Long[B, P, T / down]
    codebook_loss: torch.Tensor  # scalar: the parts' VQ losses, summed
    perplexity: torch.Tensor  # 0-dim: mean over parts
    used_share: torch.Tensor  # 0-dim: mean over parts


class MotionTokenizer(nn.Module):
    """Features Float[B, T, F] <-> codes Long[B, P, T / down], one VQ autoencoder per body part."""

    def __init__(self, config: MotionTokenizerConfig):
        super().__init__()
        for name, idx in BODY_PARTS.items():  # the decoder writes parts back by slices
            if list(idx) != list(range(idx[0], idx[-1] + 1)):
                raise ValueError(f"body part {name} must be a contiguous run of features")
        self.config = config
        self.parts = nn.ModuleDict({name: AcousticTokenizer(config.part(name)) for name in PARTS})

    @property
    def codebook_size(self) -> int:
        """Codes per part."""
        return self.config.codes

    @property
    def down(self) -> int:
        return self.config.down

    def _slice(self, name: str) -> slice:
        idx = BODY_PARTS[name]
        return slice(idx[0], idx[-1] + 1)

    @torch.no_grad()
    def set_normalisation(self, x: torch.Tensor) -> None:
        """x: Float[M, T, F] training windows -> each part's per-feature mean and std."""
        for name in PARTS:
            self.parts[name].set_normalisation(x[..., self._slice(name)])

    def scale(self) -> torch.Tensor:
        """Float[F]: the per-feature standard deviations, in feature order (for a normalised error)."""
        return torch.cat([self.parts[name].mel_std for name in PARTS])

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[-1] != F or x.shape[1] % self.down:
            raise ValueError(f"x must be Float[B, T, {F}] with T a multiple of {self.down}, got {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x Float[B, T, F] -> Long[B, P, T / down] (call in eval mode: training mode may restart codes)."""
        self._check(x)
        return torch.cat([self.parts[name].encode(x[..., self._slice(name)]) for name in PARTS], dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes Long[B, P, T'] -> Float[B, T' * down, F]."""
        if codes.ndim != 3 or codes.shape[1] != len(PARTS):
            raise ValueError(f"codes must be Long[B, {len(PARTS)}, T'], got {tuple(codes.shape)}")
        return torch.cat([self.parts[name].decode(codes[:, i:i + 1]) for i, name in enumerate(PARTS)], dim=-1)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> MotionTokenizerOutput:
        self._check(x)
        outs = [self.parts[name](x[..., self._slice(name)], generator) for name in PARTS]
        return MotionTokenizerOutput(torch.cat([o.reconstruction for o in outs], -1),
                                     torch.cat([o.codes for o in outs], 1),
                                     torch.stack([o.codebook_loss for o in outs]).sum(),
                                     torch.stack([o.perplexity for o in outs]).mean(),
                                     torch.stack([o.used_share for o in outs]).mean())
