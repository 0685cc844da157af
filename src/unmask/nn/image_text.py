"""Image patches and words as tokens of one sequence (single-stream vision-language Transformers:
UNITER, Chen et al. 2020; M3AE, Geng et al. 2022): each patch a linear map of its pixels plus a
fixed 2-D sin-cos position, each word a learned embedding plus a fixed 1-D sin-cos position, and a
learned type embedding per modality, so one Transformer reads both.

    image(patches [B, L, p*p*C]) -> [B, L, D]      text(tokens Long[B, T], 0..V, V = mask) -> [B, T, D]
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn

from ..layout import Layout
from .embedding import sincos_nd
from .patch import PatchEmbed, patch_layout

IMAGE, TEXT = 0, 1  # type ids


@dataclass(frozen=True)
class ImageTextConfig:
    image_size: int = 32  # square images
    channels: int = 1
    patch: int = 4
    vocab_size: int = 16  # V data tokens; the mask token is id V
    text_length: int = 8  # T word slots per caption (padded)
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0

    # axes of the sin-cos positions: each takes sin and cos of dim / (2 * axes) frequencies
    SINCOS_AXES = 2

    def __post_init__(self):
        if self.patch < 1 or self.image_size % self.patch:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch {self.patch}")
        for f in fields(self):
            if f.type == "int" and getattr(self, f.name) < 1:
                raise ValueError(f"{f.name} must be >= 1, got {getattr(self, f.name)}")
        axes = self.SINCOS_AXES
        if self.dim % self.heads or self.dim % (2 * axes):
            raise ValueError(f"dim {self.dim} must be divisible by heads ({self.heads}) and by {2 * axes} "
                             f"({axes}-D sin-cos)")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def patches(self) -> int:
        """L, patch tokens per image."""
        return self.grid * self.grid

    @property
    def patch_dim(self) -> int:
        return self.patch * self.patch * self.channels

    @property
    def layout(self) -> Layout:
        """The patch grid, then the text: segments 'patches' and 'text'."""
        return patch_layout(self.image_size, self.image_size, self.patch) + Layout.seq(self.text_length, name="text")


class ImageTextEmbed(nn.Module):
    def __init__(self, cfg: ImageTextConfig):
        super().__init__()
        self.cfg = cfg
        self.patch = PatchEmbed(cfg.patch_dim, cfg.dim)
        self.word = nn.Embedding(cfg.vocab_size + 1, cfg.dim)  # + the mask token
        self.modality = nn.Embedding(2, cfg.dim)
        self.register_buffer("image_pos", sincos_nd((cfg.grid, cfg.grid), cfg.dim).unsqueeze(0), persistent=False)
        self.register_buffer("text_pos", sincos_nd((cfg.text_length,), cfg.dim).unsqueeze(0), persistent=False)

    def image(self, patches: torch.Tensor) -> torch.Tensor:
        """patches: Float[B, L, p*p*C] -> [B, L, D]."""
        if patches.shape[1:] != (self.cfg.patches, self.cfg.patch_dim):
            raise ValueError(f"patches must be [B, {self.cfg.patches}, {self.cfg.patch_dim}], "
                             f"got {tuple(patches.shape)}")
        return self.patch(patches) + self.image_pos + self.modality.weight[IMAGE]

    def text(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: Long[B, T] in 0..V -> [B, T, D]."""
        if tokens.shape[1] != self.cfg.text_length:
            raise ValueError(f"tokens must be [B, {self.cfg.text_length}], got {tuple(tokens.shape)}")
        return self.word(tokens) + self.text_pos + self.modality.weight[TEXT]
