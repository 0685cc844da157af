"""A point-patch tokenizer for Point-BERT (Yu et al., CVPR 2022, P60): each group of k points (relative
to its centre) gets one discrete code, the target of masked point modeling.

Point-BERT learns its codebook with a dVAE (DGCNN encoder, 8192 codes, Gumbel-softmax, Chamfer
reconstruction). This one is simpler and fixed before pre-training: a group is described by the first
and second moments of its points (the mean offset, 3 numbers, and the 3 x 3 second-moment matrix, 6
numbers, off-diagonal entries times sqrt(2) so that distances are Frobenius distances), each number
standardised over the fitting groups; k-means (k-means++ seeding, then Lloyd steps) on those
descriptors gives `codes` centroids, and a group's code is its nearest centroid. The moments say
where a patch leans, how flat or elongated it is and how it is turned, which is what a patch's shape
class (face, edge, corner, curved sheet) shows at this scale.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import UnmaskError


def patch_descriptors(groups: torch.Tensor) -> torch.Tensor:
    """groups: Float[..., k, 3] -> Float[..., 9]: mean offset and the second-moment matrix (xx, yy, zz,
    then sqrt(2) xy, xz, yz)."""
    if groups.ndim < 2 or groups.shape[-1] != 3:
        raise ValueError(f"groups must be Float[..., k, 3], got shape {tuple(groups.shape)}")
    g = groups.double()
    m = torch.einsum("...ki,...kj->...ij", g, g) / g.shape[-2]  # [..., 3, 3]
    diag = torch.diagonal(m, dim1=-2, dim2=-1)
    off = math.sqrt(2) * torch.stack([m[..., 0, 1], m[..., 0, 2], m[..., 1, 2]], dim=-1)
    return torch.cat([g.mean(-2), diag, off], dim=-1)


def nearest(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """x: Float[M, F], centroids: Float[K, F] -> Long[M]: index of the nearest centroid."""
    return torch.cdist(x, centroids).argmin(dim=1)


def kmeans(x: torch.Tensor, k: int, *, steps: int = 30, generator: torch.Generator | None = None) -> torch.Tensor:
    """Float[M, F] -> centroids Float[K, F]: k-means++ seeding (Arthur & Vassilvitskii 2007), then
    `steps` Lloyd steps; a centroid that loses all its points stays where it was."""
    if not 1 <= k <= len(x):
        raise ValueError(f"k must lie in [1, {len(x)}] for {len(x)} points, got {k}")
    first = torch.randint(len(x), (1,), generator=generator)
    centroids = [x[first[0]]]
    d2 = (x - centroids[0]).pow(2).sum(1)
    for _ in range(1, k):  # each next seed is drawn with probability proportional to d^2
        pick = torch.multinomial(d2.double() + 1e-30, 1, generator=generator)[0]
        centroids.append(x[pick])
        d2 = torch.minimum(d2, (x - x[pick]).pow(2).sum(1))
    c = torch.stack(centroids)
    for _ in range(steps):
        assign = nearest(x, c)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).unsqueeze(1)
        c = torch.where(counts > 0, sums / counts.clamp(min=1), c)
    return c


class PointTokenizer(nn.Module):
    """groups Float[..., k, 3] -> codes Long[...] in [0, codes). `fit` first; the codebook is a set of
    buffers, saved with the model."""

    def __init__(self, codes: int = 64):
        super().__init__()
        if codes < 2:
            raise ValueError(f"a tokenizer needs >= 2 codes, got {codes}")
        self.codes = codes
        self.register_buffer("centroids", torch.zeros(codes, 9, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(9, dtype=torch.float64))
        self.register_buffer("std", torch.ones(9, dtype=torch.float64))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        # the same flag on the host, so a training step never reads the device to check it; it
        # follows the buffer when a state dict is loaded
        self.ready = False
        self.register_load_state_dict_post_hook(PointTokenizer._loaded)

    @staticmethod
    def _loaded(module: PointTokenizer, keys) -> None:
        module.ready = bool(module.fitted)

    @torch.no_grad()
    def fit(self, groups: torch.Tensor, generator: torch.Generator | None = None, steps: int = 30) -> PointTokenizer:
        """Learn the codebook from groups Float[..., k, 3] (e.g. every group of the training clouds)."""
        x = patch_descriptors(groups).reshape(-1, 9)
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp_min(1e-12))
        self.centroids.copy_(kmeans((x - self.mean) / self.std, self.codes, steps=steps, generator=generator))
        self.fitted.fill_(True)
        self.ready = True
        return self

    @torch.no_grad()
    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        if not self.ready:
            raise UnmaskError("the point tokenizer has no codebook yet: call fit(groups) first")
        x = patch_descriptors(groups)
        lead = x.shape[:-1]
        z = (x.reshape(-1, 9) - self.mean) / self.std
        return nearest(z, self.centroids).view(lead)
