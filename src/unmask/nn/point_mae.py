"""Point-MAE's networks (Pang et al. 2022), built on the MAE encoder and decoder of `mae.py`: a point
cloud becomes G tokens, one per FPS + kNN group, each embedded by a mini-PointNet, and the position
of a token is an MLP of its group's centre (3 -> 128 -> width, GELU), per example.

    PointEncoder   points Float[B, N, 3] -> PointGroups; (groups, mask Bool[B, G]) -> Encoded
    PointDecoder   (Encoded, centres Float[B, G, 3]) -> DecodedGroups at the M hidden groups:
                   points Float[B, M, k, 3] (relative to their centres) and the decoder's features

The encoder reads the visible groups only (`hide="drop"`, Point-MAE) or every group with the hidden
ones as a mask embedding (`hide="replace"`, Point-BERT). Centre positions enter once, at the input
(Point-MAE adds them before every block). The decoder sees every centre, hidden ones included, as in
Point-MAE, where the hidden centres' positions reach the decoder.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..layout import Layout
from .mae import Encoded, MAEConfig, MAEDecoder, MaskedEncoder, init_mae
from .point_groups import PointGroups, group_points
from .pointnet import MiniPointNet


def centre_mlp(dim: int) -> nn.Sequential:
    """Point-MAE's positional embedding: Float[..., 3] -> Float[..., dim]."""
    return nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, dim))


class PointEncoder(nn.Module):
    """`cfg.image_size` is (G,) (`patch=1`): G groups of `group_size` points each."""

    def __init__(self, cfg: MAEConfig, group_size: int, width: int = 32):
        super().__init__()
        if len(cfg.image_size) != 1:
            raise ValueError(f"a point encoder takes image_size=(G,) groups, got {cfg.image_size}")
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.config = cfg
        self.group_size = group_size
        self.encoder = MaskedEncoder(cfg, embed=MiniPointNet(cfg.dim, width))
        self.pos = centre_mlp(cfg.dim)
        init_mae(self)

    @property
    def layout(self) -> Layout:
        return self.config.layout

    @property
    def prefix(self) -> int:
        return self.encoder.prefix

    def group(self, points: torch.Tensor) -> PointGroups:
        """Float[B, N, 3] -> G groups of `group_size` points around FPS centres."""
        return group_points(points, self.config.image_size[0], self.group_size)

    def batch_groups(self, batch: dict) -> PointGroups:
        """A training batch's groups: {"points": Float[B, N, 3]} grouped here, or {"groups":
        Float[B, G, k, 3], "centres": Float[B, G, 3]} grouped beforehand (FPS and kNN are
        deterministic, so a fixed set of clouds can be grouped once)."""
        if "groups" in batch:
            return PointGroups(batch["groups"], batch["centres"])
        if "points" not in batch:
            raise ValueError(f"a point batch needs 'points' or 'groups' and 'centres', got keys {sorted(batch)}")
        return self.group(batch["points"])

    def forward(self, groups: PointGroups, mask: torch.Tensor | None = None) -> Encoded:
        shape = (self.config.image_size[0], self.group_size, 3)
        if tuple(groups.points.shape[1:]) != shape:
            raise ValueError(f"groups must be [B, {shape[0]}, {shape[1]}, 3], got {tuple(groups.points.shape)}")
        return self.encoder.encode(groups.points, mask, pos=self.pos(groups.centres))

    def features(self, points: torch.Tensor | PointGroups) -> torch.Tensor:
        """Float[B, N, 3] (or their PointGroups) -> Float[B, G, D]: every group visible, class token
        left out (probes)."""
        groups = points if isinstance(points, PointGroups) else self.group(points)
        return self(groups).tokens[:, self.prefix :]


class DecodedGroups(NamedTuple):
    points: torch.Tensor  # Float[B, M, k, 3] at index.ids_hidden, relative to the centres
    features: torch.Tensor  # Float[B, M, decoder_dim]: the decoder's output before the point head


class PointDecoder(nn.Module):
    """An MAE decoder whose positions are an MLP of all G centres, then a linear head to k x 3
    coordinates per hidden group (Point-MAE's `increase_dim`)."""

    def __init__(self, cfg: MAEConfig, group_size: int):
        super().__init__()
        self.group_size = group_size
        self.decoder = MAEDecoder(cfg, out_dim=cfg.decoder_dim)
        self.decoder.head = nn.Identity()  # its features stay readable (Point-CMAE contrasts them)
        self.pos = centre_mlp(cfg.decoder_dim)
        self.head = nn.Linear(cfg.decoder_dim, 3 * group_size)
        init_mae(self)

    def forward(self, encoded: Encoded, centres: torch.Tensor) -> DecodedGroups:
        h = self.decoder(encoded, pos=self.pos(centres))  # [B, M, decoder_dim]
        return DecodedGroups(self.head(h).view(*h.shape[:2], self.group_size, 3), h)
