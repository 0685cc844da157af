"""Masked autoencoding (MAE, He et al. 2022): hide most patches, encode the visible ones, and
regress the pixels of the hidden ones; the loss is the mean squared error over hidden patches only.

- target: `patchify(images)`; with `norm_pix=True` each patch is standardised by its own mean and
  unbiased variance, `(x - mean) / sqrt(var + 1e-6)` (MAE's `norm_pix_loss`, epsilon as there);
- loss: per-patch MSE (mean over its p*p*C values), then the mean over all hidden patches of the
  batch (MAE's sum(loss * mask) / sum(mask); every row hides the same count here).

batch: {"images": Float[B, C, H, W]} -> ObjectiveOutput. The masker is any exact-count masker over
the patch grid (`RandomMask` by default: MAE's uniform masking).
"""

from __future__ import annotations

import torch
from torch import nn

from ..masking import Masker, RandomMask
from ..nn.mae import MaskedAutoencoder
from ..nn.patch import patchify
from ..nn.visible import gather_tokens
from .base import ObjectiveOutput, as_metric

NORM_PIX_EPS = 1e-6  # MAE's models_mae.py: keeps a flat patch finite


def normalize_patches(patches: torch.Tensor) -> torch.Tensor:
    """[..., P] -> [..., P]: each patch minus its mean, over sqrt(unbiased variance + 1e-6)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)  # unbiased, as torch's default in MAE
    return (patches - mean) / (var + NORM_PIX_EPS) ** 0.5


def patch_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B, M, P] x [B, M, P] -> [B, M]: the squared error of each patch, averaged over its values."""
    return (pred.float() - target.float()).pow(2).mean(dim=-1)


def masked_mean(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """The mean of `values` at the places where `where` is True (any shapes that broadcast), 0 when
    there is none; on the device, with no read of how many there are (MAE's sum(loss * mask) /
    sum(mask))."""
    weights = where.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


class MaskedAutoencoding(nn.Module):
    """MAE's objective around a `MaskedAutoencoder`."""

    def __init__(self, model: MaskedAutoencoder, masker: Masker | None = None, *, ratio: float = 0.75,
                 norm_pix: bool = True):
        super().__init__()
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"MAE ratio must lie in [0, 1) so that some patches stay visible, got {ratio}")
        if norm_pix and model.config.patch_dim < 2:
            raise ValueError("norm_pix needs at least 2 values per patch (1x1 single-channel patches have no "
                             "variance); set norm_pix=False or a larger patch")
        self.model = model
        self.masker = masker or RandomMask()
        self.ratio = ratio
        self.norm_pix = norm_pix

    @property
    def layout(self):
        return self.model.layout

    def draw_mask(self, batch_size: int, generator, device=None, **context) -> torch.Tensor:
        """Bool[B, L], True = hidden, from the masker (context is passed on to data-driven ones): in
        host memory, where the masker draws it, unless `device` asks for a copy there. The encoder
        takes the host mask: it builds its index there, without waiting for the device."""
        mask = self.masker(self.layout, batch_size, ratio=self.ratio, generator=generator, **context)
        return mask.to(device, non_blocking=True) if device is not None else mask

    def targets(self, images: torch.Tensor) -> torch.Tensor:
        """Float[B, C, H, W] -> Float[B, L, p*p*C]: the pixel targets of every patch."""
        target = patchify(images, self.model.config.patch)
        return normalize_patches(target) if self.norm_pix else target

    def reconstruction(self, images: torch.Tensor, mask: torch.Tensor, target: torch.Tensor | None = None):
        """(loss, per-patch errors [B, M] at index.ids_hidden, MAEOutput) for one mask; `target`
        Float[B, L, P] replaces the pixel targets (another target, as variants use)."""
        out = self.model(images, mask)
        target = self.targets(images) if target is None else target
        target = gather_tokens(target, out.encoded.index.ids_hidden)
        errors = patch_mse(out.pred, target)
        loss = errors.mean() if errors.numel() else out.pred.sum() * 0.0  # ratio 0: nothing to score
        return loss, errors, out

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Float[B, C, H, W] -> Float[B, L, D]: the encoder's tokens, every patch visible (probes)."""
        return self.model.features(images)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        images = batch["images"]
        mask = self.draw_mask(images.shape[0], generator)
        loss, _, _ = self.reconstruction(images, mask)
        return ObjectiveOutput(loss, {"loss": loss.detach(), "hidden_share": as_metric(mask.float().mean(), loss)})
