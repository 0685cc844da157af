"""Mimic before Reconstruct (MR-MAE, Gao et al. 2023, P5): the encoder's visible tokens regress a
teacher's features at the same places, while the decoder reconstructs pixels of the hidden ones;
the two targets sit on disjoint token sets, so they do not pull against each other.

- teacher: a frozen encoder reading the whole image (MR-MAE: CLIP and DINO; here an encoder trained
  inside the recipe, e.g. a plain MAE), its tokens whitened by a parameter-free LayerNorm;
- mimic loss: MSE between a linear head on the student's visible tokens and the teacher's tokens at
  those places (MR-MAE's high-level target at the encoder output);
- total = L_pixels(hidden) + weight * L_mimic(visible).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..masking import Masker
from ..nn.mae import MaskedAutoencoder, MaskedEncoder
from ..nn.visible import gather_tokens
from .base import ObjectiveOutput
from .mae import MaskedAutoencoding


def frozen(encoder: MaskedEncoder) -> MaskedEncoder:
    """The teacher, in eval mode and without gradients."""
    return encoder.eval().requires_grad_(False)


@torch.no_grad()
def teacher_tokens(teacher: MaskedEncoder, images: torch.Tensor, layers: bool = False):
    """Whitened teacher tokens of the whole image: Float[B, L, Dt], or a list of them per block."""
    teacher.eval()
    out = teacher(images, return_layers=layers)
    if layers:
        return [F.layer_norm(h[:, teacher.prefix :], h.shape[-1:]) for h in out.layers]
    tokens = out.tokens[:, teacher.prefix :]
    return F.layer_norm(tokens, tokens.shape[-1:])


class MimicBeforeReconstruct(MaskedAutoencoding):
    def __init__(self, model: MaskedAutoencoder, teacher: MaskedEncoder, masker: Masker | None = None, *,
                 ratio: float = 0.75, norm_pix: bool = True, weight: float = 1.0):
        super().__init__(model, masker, ratio=ratio, norm_pix=norm_pix)
        self.teacher = frozen(teacher)
        self.weight = weight
        self.mimic_head = nn.Linear(model.config.dim, teacher.cfg.dim)

    def mimic_loss(self, visible: torch.Tensor, target: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        """visible: student tokens [B, K, D]; target: teacher tokens [B, L, Dt]; MSE at ids_keep."""
        return F.mse_loss(self.mimic_head(visible), gather_tokens(target, ids_keep))

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        images = batch["images"]
        mask = self.draw_mask(images.shape[0], generator)
        rec, _, out = self.reconstruction(images, mask)
        visible = out.encoded.tokens[:, self.model.encoder.prefix :]
        mimic = self.mimic_loss(visible, teacher_tokens(self.teacher, images), out.encoded.index.ids_keep)
        loss = rec + self.weight * mimic
        return ObjectiveOutput(loss, {"loss": loss.detach(), "reconstruction": rec.detach(), "mimic": mimic.detach()})
