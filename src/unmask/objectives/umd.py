"""Unified Masked Diffusion (UMD, Hansen-Estruch et al. 2024, P13): one model is both a masked
autoencoder and a diffusion denoiser. Half of each batch is clean and heavily masked (MAE's step);
the other half is noised to a random diffusion time and lightly masked, and the model predicts both
the clean pixels of the hidden patches and the noise of the visible ones.

- split: the first half of the batch gets t ~ U{1..999} and ratio 0.375, the rest t = 0 and 0.75
  (UMD's `no_noise_prob` 0.5, `mask_ratio` 0.375, `mask_ratio_no_noise` 0.75);
- noise: x_t = sqrt(a_t) x + sqrt(1 - a_t) eps on pixels scaled to [-1, 1] (then mapped back to the
  [0, 1] scale the encoder reads), cosine schedule over 1000 steps (Nichol & Dhariwal, s = 0.008);
- time: an embedding of t is added to every encoder token (UMD conditions with AdaLN);
- decoder: x0 and eps per patch at every place (2 * p*p*C outputs);
- loss: L_dit = (eps-MSE over visible patches + x0-MSE over hidden patches) / 2 on the noisy half,
  L_mae = x0-MSE over hidden patches on the clean half; total = L_dit (1 - f) + L_mae f, f = clean share.
The x0 target is the MAE objective's (norm-pix if set); eps is the raw noise.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..masking import Masker
from ..nn.embedding import sincos_1d
from ..nn.mae import MAEDecoder, MaskedAutoencoder
from ..nn.patch import patchify
from .base import ObjectiveOutput
from .mae import MaskedAutoencoding, masked_mean, patch_mse

DIFFUSION_STEPS = 1000


def cosine_alpha_bar(t: torch.Tensor, steps: int = DIFFUSION_STEPS, s: float = 0.008) -> torch.Tensor:
    """Float64 a_t of the cosine schedule at integer times t in [0, steps]; a_0 = 1."""
    f = lambda u: torch.cos((u / steps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return (f(t.double()) / f(torch.zeros((), dtype=torch.float64))).clamp(1e-5, 1.0)


class UnifiedMaskedDiffusion(MaskedAutoencoding):
    def __init__(self, model: MaskedAutoencoder, masker: Masker | None = None, *, ratio: float = 0.75,
                 noisy_ratio: float = 0.375, clean_share: float = 0.5, norm_pix: bool = True):
        super().__init__(model, masker, ratio=ratio, norm_pix=norm_pix)
        if not 0.0 < clean_share < 1.0 or not 0.0 < noisy_ratio < 1.0:
            raise ValueError(f"UMD needs clean_share and noisy_ratio in (0, 1), got {clean_share}, {noisy_ratio}")
        dim = model.config.dim
        self.noisy_ratio, self.clean_share = noisy_ratio, clean_share
        self.time_embed = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        # the model's decoder is replaced by one that predicts x0 and eps at every place
        model.decoder = MAEDecoder(model.config, out_dim=2 * model.config.patch_dim)

    def cond(self, t: torch.Tensor) -> torch.Tensor:
        """Long[B] -> Float[B, D]."""
        return self.time_embed(sincos_1d(t.float(), self.model.config.dim).to(self.time_embed[0].weight))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        t = torch.zeros(images.shape[0], dtype=torch.long, device=images.device)
        return self.model.encoder(images, cond=self.cond(t)).tokens[:, self.model.encoder.prefix :]

    def predict(self, images, mask, t):
        """Per-place predictions (x0, eps), each Float[B, L, P]. images [B, C, H, W]; mask
        Bool[B, L]; t Long[B]."""
        encoded = self.model.encoder(images, mask, cond=self.cond(t))
        out = self.model.decoder(encoded, every=True)
        p = self.model.config.patch_dim
        return out[..., :p], out[..., p:]

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        images = batch["images"]
        device = images.device
        b = images.shape[0]
        n_clean = max(1, min(b - 1, round(self.clean_share * b)))
        noisy, clean = images[: b - n_clean], images[b - n_clean :]
        # noisy half: diffuse, hide few, predict eps where visible and x0 where hidden (drawn on the host)
        t = torch.randint(1, DIFFUSION_STEPS, (len(noisy),), generator=generator)
        eps = torch.randn(noisy.shape, generator=generator).to(device, non_blocking=True)
        a = cosine_alpha_bar(t).float().view(-1, 1, 1, 1).to(device, non_blocking=True)
        x_t = (a.sqrt() * (2 * noisy - 1) + (1 - a).sqrt() * eps.to(noisy)) / 2 + 0.5  # back to [0, 1] scale
        mask_n = self.masker(self.layout, len(noisy), ratio=self.noisy_ratio, generator=generator)
        x0_n, eps_n = self.predict(x_t, mask_n, t.to(device, non_blocking=True))
        hidden_n = mask_n.to(device, non_blocking=True)
        x0_err = patch_mse(x0_n, self.targets(noisy))  # [B', L]
        eps_err = patch_mse(eps_n, patchify(eps.to(noisy), self.model.config.patch))
        dit = (masked_mean(eps_err, ~hidden_n) + masked_mean(x0_err, hidden_n)) / 2
        # clean half: MAE
        mask_c = self.draw_mask(n_clean, generator)
        x0_c, _ = self.predict(clean, mask_c, torch.zeros(n_clean, dtype=torch.long, device=device))
        mae = masked_mean(patch_mse(x0_c, self.targets(clean)), mask_c.to(device, non_blocking=True))
        f = n_clean / b
        loss = dit * (1 - f) + mae * f
        return ObjectiveOutput(loss, {"loss": loss.detach(), "dit": dit.detach(), "mae": mae.detach()})
