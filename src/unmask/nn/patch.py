"""Images as patch tokens (ViT, Dosovitskiy et al. 2021; MAE's pixel targets, He et al. 2022).

An image `[B, C, H, W]` is cut into non-overlapping `p x p` patches, read row-major over the
`(H / p) x (W / p)` grid; each patch flattens with the inner order (row in patch, column in patch,
channel), the order of MAE and of Hugging Face's ViTMAE, so `patchify` doubles as the pixel target.

    einops legend: b batch, c channels, gh gw grid rows and columns, ph pw rows and columns in a patch
    patchify:   b c (gh ph) (gw pw) -> b (gh gw) (ph pw c)
"""

from __future__ import annotations

import torch
from torch import nn

from ..layout import Layout


def _check(height: int, width: int, patch: int) -> None:
    if patch < 1 or height % patch or width % patch:
        raise ValueError(f"image {height}x{width} is not divisible into {patch}x{patch} patches")


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """images: Float[B, C, H, W] -> Float[B, L, p*p*C], L = (H/p)(W/p), inner order (ph, pw, c)."""
    b, c, h, w = images.shape
    _check(h, w, patch)
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(patches: torch.Tensor, patch: int, channels: int, height: int, width: int) -> torch.Tensor:
    """The inverse of `patchify`: Float[B, L, p*p*C] -> Float[B, C, H, W]."""
    _check(height, width, patch)
    b, n, d = patches.shape
    gh, gw = height // patch, width // patch
    if n != gh * gw or d != patch * patch * channels:
        raise ValueError(f"patches {tuple(patches.shape)} do not tile a {channels}x{height}x{width} image "
                         f"with {patch}x{patch} patches")
    x = patches.reshape(b, gh, gw, patch, patch, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(b, channels, height, width)


def patch_layout(height: int, width: int, patch: int, name: str = "patches") -> Layout:
    """The grid layout of the patch tokens, which maskers read."""
    _check(height, width, patch)
    return Layout.grid(height // patch, width // patch, name=name)


def patchify_video(videos: torch.Tensor, patch: int, tubelet: int) -> torch.Tensor:
    """videos: Float[B, C, T, H, W] -> Float[B, L, t*p*p*C] tubelets (VideoMAE, Tong et al. 2022),
    L = (T/t)(H/p)(W/p) read time-major then row-major, inner order (pt, ph, pw, c).

        einops: b c (gt pt) (gh ph) (gw pw) -> b (gt gh gw) (pt ph pw c)"""
    b, c, t, h, w = videos.shape
    _check(h, w, patch)
    if tubelet < 1 or t % tubelet:
        raise ValueError(f"{t} frames are not divisible into tubelets of {tubelet}")
    x = videos.reshape(b, c, t // tubelet, tubelet, h // patch, patch, w // patch, patch)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)
    return x.reshape(b, (t // tubelet) * (h // patch) * (w // patch), tubelet * patch * patch * c)


def unpatchify_video(tubelets: torch.Tensor, patch: int, tubelet: int, channels: int, frames: int, height: int,
                     width: int) -> torch.Tensor:
    """The inverse of `patchify_video`: Float[B, L, t*p*p*C] -> Float[B, C, T, H, W]."""
    _check(height, width, patch)
    b, n, d = tubelets.shape
    gt, gh, gw = frames // max(tubelet, 1), height // patch, width // patch
    if tubelet < 1 or frames % tubelet or n != gt * gh * gw or d != tubelet * patch * patch * channels:
        raise ValueError(f"tubelets {tuple(tubelets.shape)} do not tile a {channels}x{frames}x{height}x{width} video "
                         f"with {tubelet}x{patch}x{patch} tubelets")
    x = tubelets.reshape(b, gt, gh, gw, tubelet, patch, patch, channels)
    return x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, channels, frames, height, width)


class PatchEmbed(nn.Module):
    """A linear map of each flattened patch (the same map as ViT's stride-p convolution, whose
    weight `[D, C, p, p]` is this one's `[D, p*p*C]` permuted; for videos, VideoMAE's tubelet
    convolution). patches: [B, M, patch_dim] -> [B, M, D]; embedding only the patches that are given
    lets a drop-hidden encoder skip the hidden ones."""

    def __init__(self, patch_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(patch_dim, dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.proj(patches)
