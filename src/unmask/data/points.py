"""Point clouds of parametric shapes, sampled at run time and labelled by shape (the stand-in for
ShapeNet / ModelNet that Point-MAE, Point-BERT and Point-CMAE pre-train and probe on).

Each cloud: `points` points drawn uniformly by area on the surface of one of `SHAPES` (unit size,
centred), stretched by a random scale per axis (U[0.7, 1.3] by default), turned by a uniformly random
rotation, then normalised as Point-MAE's `pc_norm` does (minus the centroid, divided by the largest
radius) and jittered by Gaussian noise (std 0.01). Everything is drawn from one `torch.Generator`:
the same seed gives the same clouds.

    clouds = load("train", per_class=250, points=1024, seed=0)
    clouds.points  # Float[2000, 1024, 3]
    clouds.labels  # Long[2000], index into SHAPES; classes in order, per_class each
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SHAPES = ("sphere", "cube", "cylinder", "cone", "torus", "pyramid", "octahedron", "tetrahedron")
TORUS_RADII = (1.0, 0.4)  # ring radius R, tube radius r

_MESHES = {  # (vertices, triangles) of the flat-faced shapes
    "cube": ([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)],
             [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
              [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]),
    "pyramid": ([[-1, -1, -1], [1, -1, -1], [1, 1, -1], [-1, 1, -1], [0, 0, 1]],
                [[0, 1, 2], [0, 2, 3], [0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]]),
    "octahedron": ([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]],
                   [[a, b, c] for a in (0, 1) for b in (2, 3) for c in (4, 5)]),
    "tetrahedron": ([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], [[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]]),
}


@dataclass(frozen=True)
class PointClouds:
    points: torch.Tensor  # Float[M, N, 3]
    labels: torch.Tensor  # Long[M], index into SHAPES


def _uniform(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64)


def _mesh(name: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform by area on a triangle mesh: a triangle by its area, then reflected barycentric draws."""
    vertices, faces = _MESHES[name]
    tri = torch.tensor(vertices, dtype=torch.float64)[torch.tensor(faces)]  # [F, 3 corners, 3]
    areas = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=1)
    pick = tri[torch.multinomial(areas, n, replacement=True, generator=generator)]  # [n, 3, 3]
    u, v = _uniform(n, generator), _uniform(n, generator)
    flip = u + v > 1  # the reflection keeps the draw inside the triangle and uniform
    u, v = torch.where(flip, 1 - u, u), torch.where(flip, 1 - v, v)
    a, b, c = pick.unbind(1)
    return a + u.unsqueeze(1) * (b - a) + v.unsqueeze(1) * (c - a)


def _disk(n: int, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    r, t = _uniform(n, generator).sqrt(), 2 * math.pi * _uniform(n, generator)
    return torch.stack([r * t.cos(), r * t.sin(), z], dim=1)


def _torus(n: int, generator: torch.Generator) -> torch.Tensor:
    """Rejection on the tube angle: the area element grows with R + r cos(phi)."""
    big, small = TORUS_RADII
    out, have = [], 0
    while have < n:
        theta, phi = 2 * math.pi * _uniform(2 * n, generator), 2 * math.pi * _uniform(2 * n, generator)
        keep = _uniform(2 * n, generator) * (big + small) < big + small * phi.cos()
        ring = big + small * phi[keep].cos()
        out.append(torch.stack([ring * theta[keep].cos(), ring * theta[keep].sin(), small * phi[keep].sin()], 1))
        have += int(keep.sum())
    return torch.cat(out)[:n]


def surface(shape: str, n: int, generator: torch.Generator) -> torch.Tensor:
    """`n` points uniform by area on the canonical `shape` (about [-1, 1]^3). Float64[n, 3].

    sphere: radius 1; cube: [-1, 1]^3; cylinder: radius 1, z in [-1, 1], with caps; cone: base
    radius 1 at z = -1, apex at z = 1, with its base; torus: radii `TORUS_RADII` around z; pyramid:
    square base [-1, 1]^2 at z = -1, apex (0, 0, 1); octahedron: vertices +-e_i; tetrahedron: the
    regular one inscribed in the cube."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if shape in _MESHES:
        return _mesh(shape, n, generator)
    if shape == "sphere":
        x = torch.randn(n, 3, generator=generator, dtype=torch.float64)
        return x / x.norm(dim=1, keepdim=True)
    if shape == "torus":
        return _torus(n, generator)
    side_area = 4 * math.pi if shape == "cylinder" else math.pi * math.sqrt(5)  # cone: pi r l, l = sqrt(5)
    cap_area = 2 * math.pi if shape == "cylinder" else math.pi
    part = _uniform(n, generator) * (side_area + cap_area)
    t = 2 * math.pi * _uniform(n, generator)
    if shape == "cylinder":
        side = torch.stack([t.cos(), t.sin(), 2 * _uniform(n, generator) - 1], 1)
        cap = _disk(n, torch.where(_uniform(n, generator) < 0.5, -1.0, 1.0).double(), generator)
    else:  # the lateral area up to distance s from the apex grows with s^2
        s = _uniform(n, generator).sqrt()
        side = torch.stack([s * t.cos(), s * t.sin(), 1 - 2 * s], 1)
        cap = _disk(n, torch.full((n,), -1.0, dtype=torch.float64), generator)
    return torch.where((part < side_area).unsqueeze(1), side, cap)


def random_rotation(generator: torch.Generator) -> torch.Tensor:
    """A rotation uniform on SO(3) (Haar): QR of a Gaussian matrix, signs fixed by R's diagonal,
    det made +1. Float64[3, 3]."""
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def normalise(points: torch.Tensor) -> torch.Tensor:
    """[..., N, 3] -> [..., N, 3]: minus the centroid, divided by the largest distance from it."""
    centred = points - points.mean(dim=-2, keepdim=True)
    return centred / centred.norm(dim=-1).amax(dim=-1, keepdim=True).unsqueeze(-1).clamp_min(1e-12)


def make_clouds(per_class: int, points: int = 1024, *, generator: torch.Generator,
                scale: tuple[float, float] = (0.7, 1.3), noise: float = 0.01) -> PointClouds:
    """`per_class` clouds of every shape, in the order of SHAPES."""
    if per_class < 1 or points < 1:
        raise ValueError(f"per_class and points must be >= 1, got {per_class}, {points}")
    if not 0 < scale[0] <= scale[1] or noise < 0:
        raise ValueError(f"scale must be 0 < lo <= hi and noise >= 0, got scale={scale}, noise={noise}")
    clouds = []
    for shape in SHAPES:
        for _ in range(per_class):
            x = surface(shape, points, generator)
            stretch = scale[0] + (scale[1] - scale[0]) * _uniform(3, generator)
            x = normalise((x * stretch) @ random_rotation(generator).T)
            clouds.append(x + noise * torch.randn(points, 3, generator=generator, dtype=torch.float64))
    labels = torch.arange(len(SHAPES)).repeat_interleave(per_class)
    return PointClouds(torch.stack(clouds).float(), labels)


def load(split: str = "train", *, per_class: int = 250, points: int = 1024, seed: int = 0) -> PointClouds:
    """A split of clouds: 'train' and 'test' draw from different streams of `seed`, so the test
    clouds are held out (new scales, rotations, noise and surface points)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    g = torch.Generator().manual_seed(2 * seed + (split == "test"))
    return make_clouds(per_class, points, generator=g)
