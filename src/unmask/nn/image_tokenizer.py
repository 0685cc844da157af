"""An image tokenizer: a small convolutional autoencoder whose bottleneck is quantized, so each image
becomes an h x w grid of discrete codes that a masked token model can hide and predict (the first
stage of MaskGIT, Chang et al. 2022, arXiv:2202.04200, and of BEiT's targets, Bao et al. 2021,
arXiv:2106.08254, at toy scale).

The quantizer is a part chosen by the config: `quantizer="vq"` (VQ-VAE, van den Oord et al. 2017,
arXiv:1711.00937, `VectorQuantizer` with dead-code restarts) or `"fsq"` (Mentzer et al. 2023,
arXiv:2309.15505, `FSQ`: no codebook to learn, no loss term).

    encoder   images [B, C, H, W] -> conv3x3 -> log2(downsample) x [GN, SiLU, conv4x4 /2, GN, SiLU,
              conv3x3] -> GN, SiLU, conv1x1 -> z [B, D, h, w]      (h = H / downsample)
    quantizer z -> codes [B, D, h, w], tokens Long[B, h, w]
    decoder   mirrors the encoder with 4x4 transposed convs (x2 each) -> Float[B, C, H, W]

Images are float in [0, 1] or uint8 in [0, 255] (divided by 255); reconstructions are float on the
[0, 1] scale (not clamped, so the MSE sees the decoder's own output).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
from torch import nn

from .quantizers import FSQ, VectorQuantizer

QUANTIZERS = ("vq", "fsq")
NORM_GROUPS = 8  # GroupNorm groups: width must be a multiple


@dataclass(frozen=True)
class ImageTokenizerConfig:
    """`codes`, `code_dim`, `beta`, `restart_after` set the VQ quantizer; `levels` the FSQ one (its
    code size is len(levels), its codebook prod(levels)); each is ignored by the other quantizer.
    The defaults give 8 x 8 tokens of 32 x 32 images; FSQ's (8, 6, 5) is the paper's choice for about
    2^8 codes."""

    image_size: int = 32
    channels: int = 1
    width: int = 64
    downsample: int = 4
    quantizer: str = "vq"
    codes: int = 256
    code_dim: int = 16
    beta: float = 0.25
    restart_after: int = 32
    levels: tuple[int, ...] = (8, 6, 5)

    def __post_init__(self):
        object.__setattr__(self, "levels", tuple(self.levels))
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {', '.join(QUANTIZERS)}, got {self.quantizer!r}")
        for name in ("image_size", "channels", "code_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.width < NORM_GROUPS or self.width % NORM_GROUPS:
            raise ValueError(f"width must be a positive multiple of {NORM_GROUPS} (GroupNorm groups), got {self.width}")
        d = self.downsample
        if d < 1 or d & (d - 1) or self.image_size % d:
            raise ValueError(f"downsample must be a power of two that divides image_size={self.image_size}, got {d}")
        if self.codes < 2:
            raise ValueError(f"codes must be >= 2, got {self.codes}")
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta}")
        if self.restart_after < 0:
            raise ValueError(f"restart_after must be >= 0 (0 turns dead-code restarts off), got {self.restart_after}")
        if not self.levels or any(isinstance(n, bool) or not isinstance(n, int) or n < 2 for n in self.levels):
            raise ValueError(f"levels must be a non-empty tuple of integers >= 2, got {self.levels}")

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w): the token grid."""
        side = self.image_size // self.downsample
        return side, side

    @property
    def codebook_size(self) -> int:
        return self.codes if self.quantizer == "vq" else math.prod(self.levels)

    @property
    def embed_dim(self) -> int:
        """D: the size of a code vector (code_dim for VQ, len(levels) for FSQ)."""
        return self.code_dim if self.quantizer == "vq" else len(self.levels)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["levels"] = list(self.levels)
        return d

    @staticmethod
    def from_dict(d: dict) -> ImageTokenizerConfig:
        known = {f.name for f in fields(ImageTokenizerConfig)}
        for key in d:
            if key not in known:
                raise ValueError(f"unknown image tokenizer config key {key!r}; known keys: {', '.join(sorted(known))}")
        d = dict(d)
        if "levels" in d:
            d["levels"] = tuple(d["levels"])
        return ImageTokenizerConfig(**d)


class TokenizerOutput(NamedTuple):
    reconstruction: torch.Tensor  # Float[B, C, H, W], [0, 1] scale
    tokens: torch.Tensor  # Long[B, h, w]
    codebook_loss: torch.Tensor  # scalar: VQ's codebook + commitment loss; 0 for FSQ
    perplexity: torch.Tensor  # 0-dim: of the batch's tokens
    used_share: torch.Tensor  # 0-dim: share of the codebook in the batch's tokens


def _act(width: int) -> list[nn.Module]:
    return [nn.GroupNorm(NORM_GROUPS, width), nn.SiLU()]


def _encoder(cfg: ImageTokenizerConfig) -> nn.Sequential:
    w = cfg.width
    layers: list[nn.Module] = [nn.Conv2d(cfg.channels, w, 3, padding=1)]
    for _ in range(int(math.log2(cfg.downsample))):
        layers += [*_act(w), nn.Conv2d(w, w, 4, stride=2, padding=1), *_act(w), nn.Conv2d(w, w, 3, padding=1)]
    return nn.Sequential(*layers, *_act(w), nn.Conv2d(w, cfg.embed_dim, 1))


def _decoder(cfg: ImageTokenizerConfig) -> nn.Sequential:
    w = cfg.width
    layers: list[nn.Module] = [nn.Conv2d(cfg.embed_dim, w, 3, padding=1)]
    for _ in range(int(math.log2(cfg.downsample))):
        layers += [*_act(w), nn.Conv2d(w, w, 3, padding=1), *_act(w), nn.ConvTranspose2d(w, w, 4, stride=2, padding=1)]
    return nn.Sequential(*layers, *_act(w), nn.Conv2d(w, cfg.channels, 3, padding=1))


class ImageTokenizer(nn.Module):
    """images [B, C, H, W] <-> tokens Long[B, h, w] in [0, codebook_size)."""

    def __init__(self, config: ImageTokenizerConfig):
        super().__init__()
        self.config = config
        self.encoder = _encoder(config)
        self.decoder = _decoder(config)
        if config.quantizer == "vq":
            self.quantizer = VectorQuantizer(config.codes, config.code_dim, config.beta, config.restart_after)
        else:
            self.quantizer = FSQ(config.levels)

    @property
    def grid(self) -> tuple[int, int]:
        return self.config.grid

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def bits_per_image(self) -> float:
        """h * w * log2(codebook size): what one image costs as tokens."""
        h, w = self.grid
        return h * w * math.log2(self.codebook_size)

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Uint8[B, C, H, W] (0..255) or Float[B, C, H, W] ([0, 1]) -> Float[B, C, H, W] in [0, 1],
        on the tokenizer's device; the shape is checked against the config."""
        c, s = self.config.channels, self.config.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (c, s, s):
            raise ValueError(f"images must be [B, {c}, {s}, {s}], got shape {tuple(images.shape)}")
        device = self.decoder[0].weight.device
        if images.dtype == torch.uint8:
            return images.to(device, non_blocking=True).float() / 255.0
        if not images.is_floating_point():
            raise ValueError(f"images must be uint8 (0..255) or float ([0, 1]), got {images.dtype}")
        return images.to(device, non_blocking=True)

    def quantize(self, images: torch.Tensor, generator: torch.Generator | None = None):
        """images -> (Quantized with quantized [B, h, w, D], pixels Float[B, C, H, W])."""
        x = self.pixels(images)
        z = self.encoder(x * 2.0 - 1.0).permute(0, 2, 3, 1)  # [B, h, w, D], channels last for the quantizer
        return self.quantizer(z, generator=generator), x

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (uint8 or float in [0, 1]) [B, C, H, W] -> tokens Long[B, h, w]. In training mode a
        VQ quantizer may restart dead codes here: call it in eval mode to read tokens."""
        return self.quantize(images)[0].indices

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens Long[B, h, w] -> Float[B, h, w, D]: the code vectors (what the decoder reads)."""
        return self.quantizer.indices_to_codes(tokens)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens Long[B, h, w] -> Float[B, C, H, W] on the [0, 1] scale."""
        return self.decode_codes(self.embed(tokens))

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Float[B, h, w, D] -> Float[B, C, H, W]. Made contiguous first: a channels-last input would
        take another convolution kernel, and `decode(encode(x))` would differ from `forward(x)` in the
        last bits."""
        return self.decoder(codes.permute(0, 3, 1, 2).contiguous())

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> TokenizerOutput:
        """Encode, quantize (straight-through) and decode; `generator` draws VQ's dead-code restarts.
        In eval mode `reconstruction` equals `decode(encode(images))` exactly."""
        q, _ = self.quantize(images, generator)
        reconstruction = self.decode_codes(q.quantized)
        return TokenizerOutput(reconstruction, q.indices, q.loss, q.perplexity, q.used_share)
