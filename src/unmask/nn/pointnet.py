"""The mini-PointNet that embeds one point group as one token (Point-MAE's `Encoder`, Pang et al.
2022, after PointNet, Qi et al. 2017): a shared per-point MLP, a max-pool over the group, the pooled
vector concatenated back to every point, a second shared MLP, and a final max-pool. The result does
not depend on the order of the points within a group.

Point-MAE's widths are 3 -> 128 -> 256, then 512 -> 512 -> C; here they are 3 -> w -> 2w, then
4w -> 4w -> C with `width` w (32 by default), to fit a one-core budget.
"""

from __future__ import annotations

import torch
from torch import nn


class MiniPointNet(nn.Module):
    """groups: Float[..., k, 3] -> tokens Float[..., dim]."""

    def __init__(self, dim: int, width: int = 32):
        super().__init__()
        if dim < 1 or width < 1:
            raise ValueError(f"dim and width must be >= 1, got {dim}, {width}")
        self.first = nn.Sequential(nn.Linear(3, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Linear(width, 2 * width))
        self.second = nn.Sequential(nn.Linear(4 * width, 4 * width), nn.BatchNorm1d(4 * width), nn.ReLU(),
                                    nn.Linear(4 * width, dim))

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        if groups.ndim < 3 or groups.shape[-1] != 3:
            raise ValueError(f"groups must be Float[..., k, 3], got shape {tuple(groups.shape)}")
        lead, k = groups.shape[:-2], groups.shape[-2]
        m = groups[..., 0, 0].numel()
        h = self.first(groups.reshape(m * k, 3)).view(m, k, -1)  # BatchNorm over every point of the batch
        pooled = h.amax(dim=1, keepdim=True).expand_as(h)
        h = self.second(torch.cat([pooled, h], dim=-1).view(m * k, -1)).view(m, k, -1)
        return h.amax(dim=1).view(*lead, -1)
