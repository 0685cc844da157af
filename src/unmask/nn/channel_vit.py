"""The multi-channel ViT autoencoder of ChA-MAEViT (Pham, Caicedo and Plummer, NeurIPS 2025,
"ChA-MAEViT: Unifying Channel-Aware Masked Autoencoders and Multi-Channel Vision Transformers for
Improved Cross-Channel Learning", arXiv:2503.19331): every (channel, patch) pair is a token, so
attention can carry information across channels, and memory tokens give it room to do so.

- one patch projection, shared by all channels, maps a single-channel `p x p` patch to D;
- each channel adds its own learnable channel embedding (orthogonal init, as the paper's code), and
  every channel the same spatial position embedding (fixed sin-cos here);
- `memory_tokens` learnable tokens (after the optional class token) join the encoder and the
  decoder's input and are dropped at the output: they never get a prediction or a feature;
- the channel-aware decoder adds the encoder's channel embeddings (mapped to the decoder's width) to
  every decoder token, mask tokens included, beside the spatial positions; without it the decoder
  is MAE's, with fixed sin-cos positions over the (channel, row, column) grid.

    images [B, C, H, W] -> tokens [B, C * P, p * p], P = (H / p)(W / p), channel-major (layout streams C x P)
    ChannelEncoder       images, mask Bool[B, C * P] -> Encoded(tokens [B, prefix + K, D], index)
    ChannelAutoencoder   images, mask -> MAEOutput(pred [B, M, p * p] at the hidden tokens, encoded)
The encoder drops hidden tokens (MAE), so every row must hide the same count (`masking/channel_patch.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..layout import Layout
from .embedding import sincos_nd
from .mae import Encoded, MAEConfig, MAEDecoder, MAEOutput, init_mae
from .patch import PatchEmbed, patchify
from .transformer import Transformer
from .visible import gather_tokens, split_visible


@dataclass(frozen=True)
class ChannelViTConfig:
    image_size: tuple[int, int] = (16, 16)
    channels: int = 4
    patch: int = 4
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    decoder_dim: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 4
    memory_tokens: int = 0
    channel_aware_decoder: bool = True
    cls_token: bool = False

    def __post_init__(self):
        h, w = self.image_size
        if self.patch < 1 or h % self.patch or w % self.patch:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch={self.patch}")
        for name in ("channels", "dim", "depth", "heads", "decoder_dim", "decoder_depth", "decoder_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.memory_tokens < 0:
            raise ValueError(f"memory_tokens must be >= 0, got {self.memory_tokens}")

    @property
    def grid(self) -> tuple[int, int]:
        return self.image_size[0] // self.patch, self.image_size[1] // self.patch

    @property
    def patches_per_channel(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def patch_dim(self) -> int:
        """Values per token: one channel's p * p pixels."""
        return self.patch * self.patch

    @property
    def layout(self) -> Layout:
        return Layout.streams(self.channels, self.patches_per_channel, name="channel_patches")

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """Float[B, C, H, W] -> Float[B, C * P, p * p]: each channel's patches, channel-major; also
        the pixel targets."""
        b, c = images.shape[:2]
        if c != self.channels or tuple(images.shape[2:]) != tuple(self.image_size):
            raise ValueError(f"expected images [B, {self.channels}, {self.image_size[0]}, {self.image_size[1]}], "
                             f"got {list(images.shape)}")
        tokens = patchify(images.reshape(b * c, 1, *images.shape[2:]), self.patch)  # [B C, P, p p]
        return tokens.reshape(b, c * self.patches_per_channel, self.patch_dim)

    def to_dict(self) -> dict:
        return {**asdict(self), "image_size": list(self.image_size)}

    def decoder_config(self) -> MAEConfig:
        """MAE's decoder over the (channel, row, column) grid of single-channel patches."""
        return MAEConfig(image_size=(self.channels, *self.image_size), channels=1, patch=self.patch, dim=self.dim,
                         depth=self.depth, heads=self.heads, mlp_ratio=self.mlp_ratio, decoder_dim=self.decoder_dim,
                         decoder_depth=self.decoder_depth, decoder_heads=self.decoder_heads,
                         cls_token=self.cls_token)


def channel_positions(channel_embed: torch.Tensor, spatial: torch.Tensor) -> torch.Tensor:
    """channel_embed [C, D] + spatial [P, D] -> [1, C * P, D]: token (c, i) gets channel c's embedding
    plus patch i's position, the same position in every channel."""
    c, d = channel_embed.shape
    return (channel_embed.unsqueeze(1) + spatial.unsqueeze(0)).reshape(1, c * spatial.shape[0], d)


class ChannelEncoder(nn.Module):
    """Shared patch projection, channel embeddings, spatial sin-cos positions, optional class and
    memory tokens (the prefix, never hidden), then the Transformer on the visible tokens only."""

    def __init__(self, cfg: ChannelViTConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = PatchEmbed(cfg.patch_dim, cfg.dim)
        self.channel_embed = nn.Parameter(torch.zeros(cfg.channels, cfg.dim))
        self.register_buffer("pos", sincos_nd(cfg.grid, cfg.dim), persistent=False)  # [P, D]
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.dim)) if cfg.cls_token else None
        self.memory = nn.Parameter(torch.zeros(1, cfg.memory_tokens, cfg.dim)) if cfg.memory_tokens else None
        self.transformer = Transformer(cfg.dim, cfg.depth, cfg.heads, cfg.mlp_ratio)

    @property
    def prefix(self) -> int:
        """Tokens before the patch tokens: class token (if any), then memory tokens."""
        return int(self.cls is not None) + self.cfg.memory_tokens

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> Encoded:
        """images: Float[B, C, H, W]; mask: Bool[B, C * P], True = hidden (None: all visible), the same
        count per row, best in host memory (`nn/visible.py`)."""
        tokens = self.cfg.patchify(images)  # [B, L, p p]
        b, n = tokens.shape[:2]
        if mask is None:
            mask = torch.zeros(b, n, dtype=torch.bool)
        if mask.shape != (b, n):
            raise ValueError(f"mask must be [{b}, {n}] for these images, got {tuple(mask.shape)}")
        index = split_visible(mask).to(tokens.device)
        pos = channel_positions(self.channel_embed, self.pos)  # [1, L, D]
        x = self.embed(gather_tokens(tokens, index.ids_keep)) + gather_tokens(pos, index.ids_keep)  # [B, K, D]
        prefix = [t.expand(b, -1, -1) for t in (self.cls, self.memory) if t is not None]
        return Encoded(self.transformer(torch.cat([*prefix, x], dim=1)), index)


class ChannelAutoencoder(nn.Module):
    """ChA-MAEViT's network: `model(images, mask) -> MAEOutput`; `model.features(images)` for probes."""

    def __init__(self, cfg: ChannelViTConfig):
        super().__init__()
        self.config = cfg
        self.encoder = ChannelEncoder(cfg)
        self.decoder = MAEDecoder(cfg.decoder_config())
        self.decoder.prefix = self.encoder.prefix  # memory tokens ride in the prefix, as the class token does
        if cfg.channel_aware_decoder:
            self.channel_proj = nn.Linear(cfg.dim, cfg.decoder_dim, bias=False)
            self.register_buffer("decoder_pos", sincos_nd(cfg.grid, cfg.decoder_dim), persistent=False)  # [P, Dd]
        else:
            self.channel_proj = None
        init_mae(self)
        nn.init.orthogonal_(self.encoder.channel_embed)
        if self.encoder.memory is not None:
            nn.init.trunc_normal_(self.encoder.memory, std=0.02)

    @property
    def layout(self) -> Layout:
        return self.config.layout

    def decoder_positions(self) -> torch.Tensor | None:
        """[1, C * P, decoder_dim]: spatial positions plus the encoder's channel embeddings (channel-aware
        decoder); None: the MAE decoder's own (channel, row, column) sin-cos."""
        if self.channel_proj is None:
            return None
        return channel_positions(self.channel_proj(self.encoder.channel_embed), self.decoder_pos)

    def forward(self, images: torch.Tensor, mask: torch.Tensor, *, every: bool = False) -> MAEOutput:
        """pred: Float[B, M, p * p] at `encoded.index.ids_hidden` (every=True: [B, C * P, p * p] in order)."""
        encoded = self.encoder(images, mask)
        return MAEOutput(self.decoder(encoded, every=every, pos=self.decoder_positions()), encoded)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Float[B, C, H, W] -> Float[B, C * P, D]: every token visible, class and memory tokens left out."""
        return self.encoder(images).tokens[:, self.encoder.prefix :]
