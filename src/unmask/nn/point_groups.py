"""Point patches (Point-MAE, Pang et al. 2022; Point-BERT, Yu et al. 2022): farthest point sampling
picks G centres, each centre's k nearest points form its group, and the group's points are taken
relative to the centre. Pure PyTorch and batched, in place of the CUDA kernels the reference code
calls (pointnet2 `furthest_point_sample`, `knn_cuda.KNN`).

    groups = group_points(points, groups=64, size=32)  # points: Float[B, N, 3]
    groups.points   # Float[B, G, k, 3], relative to the centre (the centre itself is one zero row)
    groups.centres  # Float[B, G, 3]
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class PointGroups(NamedTuple):
    points: torch.Tensor  # Float[B, G, k, 3], relative to the centres
    centres: torch.Tensor  # Float[B, G, 3]


def _check_points(points: torch.Tensor) -> None:
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be Float[B, N, 3], got shape {tuple(points.shape)}")


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a: Float[..., P, 3], b: Float[..., Q, 3] -> Float[..., P, Q], summed coordinate by coordinate
    (exact for equal points, unlike |a|^2 + |b|^2 - 2ab, and lighter than a [..., P, Q, 3] tensor)."""
    return sum((a[..., i].unsqueeze(-1) - b[..., i].unsqueeze(-2)).pow(2) for i in range(3))


def farthest_point_sample(points: torch.Tensor, count: int, start: int = 0) -> torch.Tensor:
    """Greedy farthest point sampling. points: Float[B, N, 3] -> Long[B, count].

    The first pick is point `start` (pointnet2's kernel starts at index 0); each next pick is the
    point whose squared distance to the nearest pick so far is largest (the first such index on a
    tie), so the picks are distinct while count <= N."""
    _check_points(points)
    b, n, _ = points.shape
    if not 1 <= count <= n:
        raise ValueError(f"count must lie in [1, {n}] for clouds of {n} points, got {count}")
    if not 0 <= start < n:
        raise ValueError(f"start must index a point of [0, {n}), got {start}")
    rows = torch.arange(b, device=points.device)
    picks = torch.empty(b, count, dtype=torch.long, device=points.device)
    nearest = torch.full((b, n), float("inf"), dtype=points.dtype, device=points.device)
    current = torch.full((b,), start, dtype=torch.long, device=points.device)
    for i in range(count):
        picks[:, i] = current
        nearest = torch.minimum(nearest, squared_distances(points[rows, current].unsqueeze(1), points)[:, 0])
        current = nearest.argmax(dim=1)
    return picks


def knn(queries: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """The k nearest points of each query, nearest first. queries: Float[B, G, 3], points:
    Float[B, N, 3] -> Long[B, G, k] (indices into N)."""
    _check_points(points)
    if not 1 <= k <= points.shape[1]:
        raise ValueError(f"k must lie in [1, {points.shape[1]}], got {k}")
    return squared_distances(queries, points).topk(k, dim=2, largest=False, sorted=True).indices


def gather_points(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """points: Float[B, N, C], idx: Long[B, *S] -> Float[B, *S, C]."""
    b = points.shape[0]
    flat = idx.reshape(b, -1)
    out = points.gather(1, flat.unsqueeze(-1).expand(-1, -1, points.shape[-1]))
    return out.view(*idx.shape, points.shape[-1])


def group_points(points: torch.Tensor, groups: int, size: int) -> PointGroups:
    """FPS centres, their `size` nearest points, relative to the centre (Point-MAE's `Group`)."""
    centres = gather_points(points, farthest_point_sample(points, groups))  # [B, G, 3]
    members = gather_points(points, knn(centres, points, size))  # [B, G, k, 3]
    return PointGroups(members - centres.unsqueeze(2), centres)
