"""ChA-MAEViT's reconstruction objective (Pham, Caicedo and Plummer, NeurIPS 2025, "ChA-MAEViT:
Unifying Channel-Aware Masked Autoencoders and Multi-Channel Vision Transformers for Improved
Cross-Channel Learning", arXiv:2503.19331): hide patches, whole channels or both (dynamic
channel-patch masking) and regress the pixels of every hidden (channel, patch) token, so that
missing channels must be rebuilt from the others.

- target: each token's p * p pixels of its one channel, with `norm_pix` standardised per token
  (the paper's `norm_pix_loss`, MAE's epsilon);
- loss: per-token MSE, then the mean over all hidden tokens of the batch (the paper's
  sum(loss * mask) / sum(mask); DCP hides the same count in every row). Visible tokens are never
  scored: the decoder predicts the hidden ones only.

It is MAE's objective (`objectives/mae.py`) on (channel, patch) tokens, with the DCP masker by
default; `patch_only_mask()` as the masker (and no memory tokens, MAE's decoder) is the baseline.

batch: {"images": Float[B, C, H, W]} -> ObjectiveOutput.
"""

from __future__ import annotations

import torch

from ..masking.channel_patch import ChannelPatchMask
from ..nn.channel_vit import ChannelAutoencoder
from .mae import MaskedAutoencoding, normalize_patches


class ChannelMaskedAutoencoding(MaskedAutoencoding):
    """MAE's loss on hidden (channel, patch) tokens of a `ChannelAutoencoder`."""

    def __init__(self, model: ChannelAutoencoder, masker=None, *, ratio: float = 0.75, norm_pix: bool = True):
        super().__init__(model, masker or ChannelPatchMask(), ratio=ratio, norm_pix=norm_pix)

    def targets(self, images: torch.Tensor) -> torch.Tensor:
        """Float[B, C, H, W] -> Float[B, C * P, p * p]: each token's pixels of its own channel."""
        target = self.model.config.patchify(images)
        return normalize_patches(target) if self.norm_pix else target
