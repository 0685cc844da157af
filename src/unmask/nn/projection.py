"""Multi-view depth maps of a point cloud and the way back from an image to the points (I2P-MAE,
Zhang et al. 2023, "Learning 3D Representations from 2D Pre-trained Models via Image-to-Point Masked
Autoencoders", arXiv:2212.06785): a cloud is seen along its three axes as three small depth images,
a 2D network reads them, and each 3D point (a group centre) reads back the 2D map at the pixel it
projects to.

    views = depth_views(points, size=32)           # points: Float[B, N, 3]
    views.images                                   # Float[B, 3, size, size], 0 = no point
    back_project(maps, views, centres)             # maps: Float[B, 3, C, h, w] -> Float[B, 3, G, C]

The three views follow I2P-MAE's released code (`I2P_MAE.forward`): (x, y) seen along z, (z, x) seen
along y, (y, z) seen along x. Each view is fitted to its cloud as there: the longer in-plane side
spans the image minus a one-pixel border and the cloud is centred. A pixel holds the depth of the
nearest point that falls on it or on its 8 neighbours (a 3 x 3 splat, as the release splats each point
on 5 x 5 pixels of 224 to close holes), scaled so the nearest point of the cloud is 1 and the farthest
0.2; pixels no point reaches are 0. The release instead sums the depths of the points on a pixel and
squashes the sum by a sigmoid. A map of any resolution (h, w) is read back after a bilinear resize to
size x size (the release upsamples bicubically to 224), at the pixel of each centre.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

# (first image axis, second image axis, depth axis) of each view, as coordinate indices
VIEW_AXES = ((0, 1, 2), (2, 0, 1), (1, 2, 0))
NEAR, FAR = 1.0, 0.2  # depth values of the nearest and farthest point; 0 = background


class DepthViews(NamedTuple):
    images: torch.Tensor  # Float[B, V, S, S]: depth maps, 0 where no point falls
    centre: torch.Tensor  # Float[B, V, 2]: the in-plane point that lands on the image's middle
    scale: torch.Tensor  # Float[B, V]: cloud units per pixel


def view_coordinates(points: torch.Tensor) -> torch.Tensor:
    """points: Float[B, N, 3] -> Float[B, V, N, 3]: (u, v, depth) of every point in each view."""
    return torch.stack([points[..., list(axes)] for axes in VIEW_AXES], dim=1)


def pixel_of(uv: torch.Tensor, centre: torch.Tensor, scale: torch.Tensor, size: int) -> torch.Tensor:
    """In-plane coordinates uv: Float[B, V, P, 2] -> Long[B, V, P, 2] (row, column) pixels, clamped to
    the image (a point outside the fitted frame reads the border)."""
    pix = torch.floor((uv - centre.unsqueeze(2)) / scale[..., None, None] + size / 2)
    return pix.long().clamp(0, size - 1)


def depth_views(points: torch.Tensor, size: int = 32) -> DepthViews:
    """The three depth maps of each cloud, each view fitted to the cloud. points: Float[B, N, 3]."""
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be Float[B, N, 3], got shape {tuple(points.shape)}")
    if size < 4:
        raise ValueError(f"depth maps need size >= 4 pixels, got {size}")
    xyz = view_coordinates(points.float())  # [B, V, N, 3]
    uv, depth = xyz[..., :2], xyz[..., 2]
    low, high = uv.amin(dim=2), uv.amax(dim=2)  # [B, V, 2]
    centre = (low + high) / 2
    scale = (high - low).amax(dim=-1).clamp_min(1e-6) / (size - 2)  # [B, V]: a one-pixel border
    pix = pixel_of(uv, centre, scale, size)  # [B, V, N, 2]
    d_low, d_high = depth.amin(dim=2, keepdim=True), depth.amax(dim=2, keepdim=True)
    value = NEAR - (NEAR - FAR) * (depth - d_low) / (d_high - d_low).clamp_min(1e-6)  # [B, V, N]
    b, v, n = value.shape
    images = value.new_zeros(b, v, size * size)
    for dr in (-1, 0, 1):  # the 3 x 3 splat; nearer points (larger values) win
        for dc in (-1, 0, 1):
            row = (pix[..., 0] + dr).clamp(0, size - 1)
            col = (pix[..., 1] + dc).clamp(0, size - 1)
            images = images.scatter_reduce(2, row * size + col, value, reduce="amax")
    return DepthViews(images.view(b, v, size, size), centre, scale)


def back_project(maps: torch.Tensor, views: DepthViews, xyz: torch.Tensor) -> torch.Tensor:
    """Each 3D point reads each view's map at the pixel it projects to.

    maps: Float[B, V, C, h, w] (a 2D network's features or saliency on the views' grid); views: the
    `DepthViews` the maps were computed from; xyz: Float[B, P, 3] (group centres) -> Float[B, V, P, C]."""
    b, v, c, h, w = maps.shape
    size = views.images.shape[-1]
    if v != len(VIEW_AXES) or views.images.shape[:2] != (b, v):
        raise ValueError(f"maps must be [B, {len(VIEW_AXES)}, C, h, w] for the views' batch, got {tuple(maps.shape)}")
    if (h, w) != (size, size):
        maps = F.interpolate(maps.flatten(0, 1), size=(size, size), mode="bilinear",
                             align_corners=False).view(b, v, c, size, size)
    pix = pixel_of(view_coordinates(xyz.to(maps.dtype))[..., :2], views.centre, views.scale, size)  # [B, V, P, 2]
    flat = (pix[..., 0] * size + pix[..., 1]).unsqueeze(2).expand(-1, -1, c, -1)  # [B, V, C, P]
    return maps.flatten(3).gather(3, flat).transpose(2, 3)  # [B, V, P, C]
