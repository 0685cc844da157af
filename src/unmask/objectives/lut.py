"""Learning with Unmasked Tokens (LUT, Kim et al., ECCV 2024, P1): MAE's pixel loss trains the hidden
places, while the visible tokens get their own, broader-context signal: the pooled visible tokens of
a masked view must predict what an EMA teacher makes of the whole image.

- two masked views of each image with disjoint visible sets (`DisjointViewMask`, as LUT's one shuffle
  cut into ids[:K] and ids[K:2K]); MAE's loss on the first view's hidden patches;
- student: mean of a view's visible encoder tokens -> projection MLP -> prediction MLP;
  teacher: EMA copy of encoder and projection, reading the whole image -> mean -> projection;
- BYOL loss 2 - 2 cos(q, z) per view, averaged; total = L_mae + weight * L_unmasked (LUT: 0.25).

LUT also augments the two views differently (crops, colour); these 8x8 digits are not augmented, so
the views differ by their masks only. The teacher moves after each training call by
`teacher <- m teacher + (1 - m) student` (fixed m; BYOL and LUT ramp m towards 1).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..masking import DisjointViewMask, Masker, RandomMask
from ..nn.mae import MaskedAutoencoder
from .base import ObjectiveOutput
from .mae import MaskedAutoencoding

LUT_WEIGHT = 0.25  # LUT's PRETRAIN.md: w_bc


def mlp(dim: int, hidden: int, out: int) -> nn.Sequential:
    """BYOL's two-layer head: Linear, BatchNorm, ReLU, Linear."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out))


def byol_loss(q: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """2 - 2 cos(q, z), averaged over rows. q, z: Float[B, E]; z is a target (detached)."""
    return (2 - 2 * F.cosine_similarity(q, z.detach(), dim=-1)).mean()


class UnmaskedTokenLearning(MaskedAutoencoding):
    def __init__(self, model: MaskedAutoencoder, masker: Masker | None = None, *, ratio: float = 0.75,
                 norm_pix: bool = True, weight: float = LUT_WEIGHT, momentum: float = 0.99,
                 proj_dim: int = 64, hidden: int = 256):
        super().__init__(model, masker or RandomMask(), ratio=ratio, norm_pix=norm_pix)
        if ratio < 0.5:
            raise ValueError(f"LUT's two views have disjoint visible sets only for ratio >= 0.5, got {ratio}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        dim = model.config.dim
        self.second_view = DisjointViewMask()
        self.weight, self.momentum = weight, momentum
        self.projector = mlp(dim, hidden, proj_dim)
        self.predictor = mlp(proj_dim, hidden, proj_dim)
        self.teacher_encoder = copy.deepcopy(model.encoder).requires_grad_(False)
        self.teacher_projector = copy.deepcopy(self.projector).requires_grad_(False)

    @torch.no_grad()
    def update_teacher(self) -> None:
        pairs = [(self.teacher_encoder, self.model.encoder), (self.teacher_projector, self.projector)]
        for teacher, student in pairs:
            for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
                t.lerp_(s, 1 - self.momentum)
            for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
                t.copy_(s)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        images = batch["images"]
        b = images.shape[0]
        first = self.draw_mask(b, generator)
        second = self.second_view(self.layout, b, ratio=self.ratio, generator=generator, first=first)
        rec, _, out = self.reconstruction(images, first)
        view2 = self.model.encoder(images, second)
        prefix = self.model.encoder.prefix
        pooled = torch.cat([out.encoded.tokens[:, prefix:].mean(1), view2.tokens[:, prefix:].mean(1)])  # [2B, D]
        q = self.predictor(self.projector(pooled))
        with torch.no_grad():
            self.teacher_projector.train(self.training)
            z = self.teacher_projector(self.teacher_encoder(images).tokens[:, prefix:].mean(1))  # [B, E]
        unmasked = byol_loss(q, z.repeat(2, 1))
        loss = rec + self.weight * unmasked
        if self.training:
            self.update_teacher()
        return ObjectiveOutput(loss, {"loss": loss.detach(), "reconstruction": rec.detach(),
                                      "unmasked": unmasked.detach()})
