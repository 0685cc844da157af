"""SelectiveMAE (Wang et al. 2024, P64): encode and reconstruct only a semantically rich subset of
the patches, so a step costs a fraction of MAE's (SelectiveMAE: about 40% of the tokens in all).

- richness: each patch's gradient energy, the sum of squared finite differences of its pixels (a
  stand-in for SelectiveMAE's HOG energy);
- visible: `SelectiveMask` (half of the visible budget drawn by energy, the rest uniform);
- targets: `select_targets` draws `round(target_ratio * L)` of the hidden patches by energy; the
  decoder reads the visible tokens and mask tokens at those places only (SelectiveMAE decodes them
  with cross-attention; here with the MAE decoder's self-attention over the shorter sequence), and
  the loss is MAE's, on the selected targets only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..masking import SelectiveMask
from ..masking.selective import select_targets
from ..nn.mae import MaskedAutoencoder
from ..nn.patch import patchify
from ..nn.visible import gather_tokens
from .base import ObjectiveOutput, as_metric
from .mae import MaskedAutoencoding, patch_mse


def gradient_energy(images: torch.Tensor, patch: int) -> torch.Tensor:
    """Float[B, C, H, W] -> Float[B, L]: per patch, the summed squared horizontal and vertical
    differences of neighbouring pixels (zero-padded at the right and bottom edges)."""
    dx = F.pad(images[..., :, 1:] - images[..., :, :-1], (0, 1))
    dy = F.pad(images[..., 1:, :] - images[..., :-1, :], (0, 0, 0, 1))
    return patchify(dx**2 + dy**2, patch).sum(-1)


class SelectiveMaskedAutoencoding(MaskedAutoencoding):
    def __init__(self, model: MaskedAutoencoder, *, ratio: float = 0.75, target_ratio: float = 0.25,
                 norm_pix: bool = True, temperature: float = 1.0):
        super().__init__(model, SelectiveMask(temperature=temperature), ratio=ratio, norm_pix=norm_pix)
        n = model.layout.n
        self.n_targets = round(target_ratio * n)
        if not 1 <= self.n_targets <= round(ratio * n):
            raise ValueError(f"target_ratio={target_ratio} gives {self.n_targets} targets; it must give between 1 "
                             f"and the {round(ratio * n)} hidden patches")
        self.temperature = temperature

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        images = batch["images"]
        # both draws read the energy on the host, where the step's generator lives: one copy there
        energy = gradient_energy(images, self.model.config.patch).cpu()
        mask = self.draw_mask(images.shape[0], generator, energy=energy)
        targets = select_targets(mask, energy, self.n_targets, temperature=self.temperature, generator=generator)
        targets = targets.to(images.device, non_blocking=True)
        encoded = self.model.encoder(images, mask)
        pred = self.model.decoder(encoded, targets)
        loss = patch_mse(pred, gather_tokens(self.targets(images), targets)).mean()
        return ObjectiveOutput(loss, {"loss": loss.detach(),
                                      "tokens_decoded": as_metric(encoded.index.keep + self.n_targets, loss)})
