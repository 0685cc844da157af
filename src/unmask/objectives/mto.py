"""Masked Token Optimization (MTO, Choi et al., ECCV 2024, P4), its recalibration part: in methods
that feed mask tokens to the encoder (SimMIM, BEiT; `hide="replace"`), mask tokens carry no data,
so the visible tokens should not be shaped by them. Here every visible query is barred from the
mask-token keys in every layer (mask tokens still read everything), which makes the visible tokens'
features exactly what a drop-hidden encoder would compute from the same weights.

MTO also adds losses that keep mask tokens distinct from visible ones (L_spa, L_e, L_r, built on an
entropy measure); their exact form was not available to us, so they are not implemented.
`recalibrate=False` is the plain replace-mode baseline MTO plugs into.
"""

from __future__ import annotations

import torch

from ..masking import Masker
from ..nn.mae import MaskedAutoencoder
from ..nn.visible import gather_tokens
from .base import ObjectiveOutput
from .mae import MaskedAutoencoding, patch_mse


def visible_attention(mask: torch.Tensor, prefix: int) -> torch.Tensor:
    """Bool[B, 1, P+L, P+L], True = may attend: a visible (or prefix) query reads visible and prefix
    keys only; a hidden query reads every key. mask: Bool[B, L], True = hidden."""
    hidden = torch.cat([mask.new_zeros(mask.shape[0], prefix), mask], dim=1)  # [B, P+L]
    return (hidden.unsqueeze(2) | ~hidden.unsqueeze(1)).unsqueeze(1)


class MaskedTokenOptimization(MaskedAutoencoding):
    def __init__(self, model: MaskedAutoencoder, masker: Masker | None = None, *, ratio: float = 0.75,
                 norm_pix: bool = True, recalibrate: bool = True):
        if model.config.hide != "replace":
            raise ValueError("MTO works on encoders that read mask tokens: build the model with hide='replace'")
        super().__init__(model, masker, ratio=ratio, norm_pix=norm_pix)
        self.recalibrate = recalibrate

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        images = batch["images"]
        mask = self.draw_mask(images.shape[0], generator)  # on the host: the encoder indexes it there
        hidden = mask.to(images.device, non_blocking=True)
        attn = visible_attention(hidden, self.model.encoder.prefix) if self.recalibrate else None
        encoded = self.model.encoder(images, mask, attn_mask=attn)
        pred = self.model.decoder(encoded)
        loss = patch_mse(pred, gather_tokens(self.targets(images), encoded.index.ids_hidden)).mean()
        return ObjectiveOutput(loss, {"loss": loss.detach(), "hidden_share": hidden.float().mean()})
