"""Chamfer distance between point sets, the reconstruction loss of Point-MAE (Pang et al. 2022,
`ChamferDistanceL2`): the mean over predicted points of the squared distance to the nearest true
point, plus the mean over true points of the squared distance to the nearest predicted point.

It is symmetric, invariant to the order of the points within each set, and zero exactly when every
point of each set coincides with a point of the other.
"""

from __future__ import annotations

import torch

from .point_groups import squared_distances


def chamfer_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred: Float[..., P, 3], target: Float[..., Q, 3] -> Float[...]: one distance per pair of sets."""
    if pred.shape[:-2] != target.shape[:-2] or pred.shape[-1] != 3 or target.shape[-1] != 3:
        raise ValueError(f"point sets must be [..., P, 3] and [..., Q, 3] with the same leading dims, "
                         f"got {tuple(pred.shape)} and {tuple(target.shape)}")
    d = squared_distances(pred.float(), target.float())  # [..., P, Q]
    return d.amin(dim=-1).mean(dim=-1) + d.amin(dim=-2).mean(dim=-1)
