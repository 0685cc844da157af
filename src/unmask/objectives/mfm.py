"""Masked Frequency Modeling (MFM, Xie et al., ICLR 2023, P43): corrupt an image by removing a band of
its Fourier spectrum, let the network see the whole corrupted image, and score its output only on the
frequencies that were removed.

- mask: `FrequencyMask` over the image's `H x W` frequencies (a low disc or its outside, exact count);
- input: real(ifft2(fft2(x) * keep)), clamped to [0, 1] as MFM does (images here lie in [0, 1]);
  every patch enters the encoder: no token is dropped and there is no mask token;
- head: a linear map of each encoder token to its patch's pixels (MFM's ViT head, a 1x1 conv);
- loss: mean over the hidden frequencies (and channels) of |F(pred) - F(x)|^2, orthonormal FFT
  (MFM's frequency loss with its focal weight off).

batch: {"images": Float[B, C, H, W]}.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layout import Layout
from ..masking import FrequencyMask, Masker
from ..nn.mae import MAEConfig, MaskedEncoder, init_mae
from ..nn.patch import unpatchify
from .base import ObjectiveOutput
from .mae import masked_mean


def remove_frequencies(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """images: Float[B, C, H, W]; mask: Bool[B, H*W] over fft2 frequencies (True = removed)."""
    b, c, h, w = images.shape
    keep = (~mask).view(b, 1, h, w).to(images.dtype)
    return torch.fft.ifft2(torch.fft.fft2(images, norm="ortho") * keep, norm="ortho").real


def frequency_loss(pred: torch.Tensor, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared spectral error at the removed frequencies (0 when none is). pred, images:
    [B, C, H, W]; mask: Bool[B, H*W]."""
    b, c, h, w = images.shape
    err = (torch.fft.fft2(pred.float(), norm="ortho") - torch.fft.fft2(images.float(), norm="ortho")).abs() ** 2
    return masked_mean(err, mask.view(b, 1, h, w).expand(b, c, h, w))


class MaskedFrequencyModeling(nn.Module):
    def __init__(self, cfg: MAEConfig, masker: Masker | None = None, *, ratio: float = 0.5):
        super().__init__()
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"MFM ratio must lie in [0, 1], got {ratio}")
        self.cfg = cfg
        self.encoder = MaskedEncoder(cfg)
        self.head = nn.Linear(cfg.dim, cfg.patch_dim)
        init_mae(self)
        self.masker = masker or FrequencyMask()
        self.ratio = ratio
        self.frequencies = Layout.grid(*cfg.image_size, name="frequencies")

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images).tokens[:, self.encoder.prefix :]

    def predict(self, corrupted: torch.Tensor) -> torch.Tensor:
        """Float[B, C, H, W] -> the restored image, Float[B, C, H, W]."""
        h, w = self.cfg.image_size
        patches = self.head(self.features(corrupted))
        return unpatchify(patches, self.cfg.patch, self.cfg.channels, h, w)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        images = batch["images"]
        mask = self.masker(self.frequencies, images.shape[0], ratio=self.ratio, generator=generator)
        mask = mask.to(images.device, non_blocking=True)
        corrupted = remove_frequencies(images, mask).clamp(0.0, 1.0)
        loss = frequency_loss(self.predict(corrupted), images, mask)
        return ObjectiveOutput(loss, {"loss": loss.detach(), "hidden_share": mask.float().mean()})
