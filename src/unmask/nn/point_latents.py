"""Continuous tokens of a point cloud, for masked autoregression over continuous latents (MAR-3D, Chen et
al. 2025, "MAR-3D: Progressive Masked Auto-regressor for High-Resolution 3D Generation",
arXiv:2503.20519; MAR, Li et al. 2024, arXiv:2406.11838).

MAR-3D encodes a mesh into continuous latent tokens with a (pyramid) VAE; here a cloud is cut into G
groups (FPS centres + kNN, `point_groups.py`) and each group becomes one token of 3 + d numbers: its
centre, and a d-number latent of its shape from a small point-group autoencoder (a mini-PointNet,
`pointnet.py`, encodes the k points relative to the centre; an MLP decodes the latent back to k
points; trained with the Chamfer distance, `chamfer.py`). The centre stays explicit because it is
what places a group in the cloud; the latent only has to say what the patch looks like (a flat disc
at some angle, an edge, a corner), which d = 8 numbers hold well at k = 32. Every channel of the
token is then standardised (mean 0, std 1 over the training tokens), as MAR scales its VAE latents,
so the diffusion head's noise has the data's scale.

    ae = GroupAutoencoder(latent=8, group_size=32)       # train with objectives/mar.py: GroupAutoencoding
    latents = PointLatents(ae).fit(train_groups)         # standardisation from PointGroups
    tokens = latents.encode(groups)                      # Float[B, G, 3 + d]
    clouds = latents.decode(tokens)                      # Float[B, G * k, 3]
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UnmaskError
from .chamfer import chamfer_l2
from .point_groups import PointGroups
from .pointnet import MiniPointNet


class GroupAutoencoder(nn.Module):
    """groups Float[..., k, 3] (relative to their centres) <-> latents Float[..., d]."""

    def __init__(self, latent: int = 8, group_size: int = 32, width: int = 32, hidden: int = 128):
        super().__init__()
        if min(latent, group_size, width, hidden) < 1:
            raise ValueError(f"latent, group_size, width and hidden must be >= 1, got "
                             f"{latent}, {group_size}, {width}, {hidden}")
        self.latent, self.group_size = latent, group_size
        self.encoder = MiniPointNet(latent, width)
        self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                     nn.Linear(hidden, 3 * group_size))

    def encode(self, groups: torch.Tensor) -> torch.Tensor:
        return self.encoder(groups)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Float[..., d] -> Float[..., k, 3]."""
        return self.decoder(latents).view(*latents.shape[:-1], self.group_size, 3)

    def reconstruction_error(self, groups: torch.Tensor) -> torch.Tensor:
        """Float[...]: the Chamfer distance (L2) between each group and its reconstruction."""
        return chamfer_l2(self.decode(self.encode(groups)), groups)


class PointLatents(nn.Module):
    """A trained `GroupAutoencoder` plus the standardisation of the (centre, latent) tokens."""

    def __init__(self, autoencoder: GroupAutoencoder):
        super().__init__()
        self.autoencoder = autoencoder
        self.channels = 3 + autoencoder.latent
        self.register_buffer("mean", torch.zeros(self.channels))
        self.register_buffer("std", torch.ones(self.channels))
        self.ready = False

    @torch.no_grad()
    def raw(self, groups: PointGroups, chunk: int = 4096) -> torch.Tensor:
        """Float[B, G, 3 + d]: centre, then latent, before standardisation (the encoder in eval mode)."""
        was = self.autoencoder.training
        self.autoencoder.eval()
        flat = groups.points.reshape(-1, *groups.points.shape[-2:])  # [B * G, k, 3]
        z = torch.cat([self.autoencoder.encode(part) for part in flat.split(chunk)])
        self.autoencoder.train(was)
        return torch.cat([groups.centres, z.view(*groups.centres.shape[:-1], -1)], dim=-1)

    @torch.no_grad()
    def fit(self, groups: PointGroups) -> PointLatents:
        x = self.raw(groups).reshape(-1, self.channels)
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-6))
        self.ready = True
        return self

    def _check(self) -> None:
        if not self.ready:
            raise UnmaskError("the point latents have no standardisation yet: call fit(train_groups) first")

    def encode(self, groups: PointGroups) -> torch.Tensor:
        """PointGroups ([B, G, k, 3], [B, G, 3]) -> standardised tokens Float[B, G, 3 + d]."""
        self._check()
        return (self.raw(groups) - self.mean) / self.std

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Float[B, G, 3 + d] standardised tokens -> clouds Float[B, G * k, 3]: each group's decoded
        points around its centre."""
        self._check()
        if tokens.shape[-1] != self.channels:
            raise ValueError(f"tokens must have {self.channels} channels (3 + latent), got {tuple(tokens.shape)}")
        x = tokens * self.std + self.mean
        centres, z = x[..., :3], x[..., 3:]
        was = self.autoencoder.training
        self.autoencoder.eval()
        points = self.autoencoder.decode(z) + centres.unsqueeze(-2)  # [B, G, k, 3]
        self.autoencoder.train(was)
        return points.reshape(tokens.shape[0], -1, 3)
