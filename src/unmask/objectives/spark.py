"""SparK (Tian et al. 2023, "Designing BERT for Convolutional Networks: Sparse and Hierarchical
Masked Modeling", arXiv:2301.03580): BERT-style masked image modeling for a convnet, which encodes
only the visible cells as a sparse image and reconstructs the hidden ones with a hierarchical decoder.

- mask: on the encoder's final-stride grid (cells of `stride x stride` pixels), exactly
  round(L * (1 - ratio)) cells visible per image (SparK's `len_keep`; ratio 0.6 by default), drawn by
  any exact-count masker (`RandomMask`: SparK's uniform choice);
- encoder: a `MaskedCNN` with the sparse rule (`nn/masked_cnn.py`): hidden pixels are zeroed, every
  conv re-zeroes the hidden positions of its scale, batch norms use visible statistics;
- decoder: `SparKDecoder` (`nn/spark.py`): per-scale mask tokens fill the hidden positions, a light
  UNet upsamples to the image;
- loss: per-cell normalised pixel MSE (MAE's norm-pix: each cell minus its mean over sqrt(unbiased
  variance + 1e-6)), averaged over the hidden cells only.

batch: {"images": Float[B, C, H, W]} -> ObjectiveOutput.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UnmaskError
from ..masking import Masker, RandomMask
from ..nn.masked_cnn import SPARSE, CNNConfig, MaskedCNN, cell_keep
from ..nn.patch import patch_layout, patchify
from ..nn.spark import SparKDecoder
from .base import ObjectiveOutput, as_metric
from .mae import masked_mean, normalize_patches, patch_mse


def visible_count(cells: int, ratio: float) -> int:
    """SparK's len_keep: round(cells * (1 - ratio)) visible cells, at least one."""
    return max(1, round(cells * (1.0 - ratio)))


class SparK(nn.Module):
    def __init__(self, image_size: tuple[int, int] = (32, 32), cnn: CNNConfig | None = None, *,
                 decoder_width: int = 64, ratio: float = 0.6, masker: Masker | None = None, norm_pix: bool = True):
        super().__init__()
        cnn = cnn or CNNConfig()
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"SparK ratio must lie in [0, 1) so that some cells stay visible, got {ratio}")
        h, w = image_size
        if h % cnn.stride or w % cnn.stride:
            raise ValueError(f"image {h}x{w} is not divisible into cells of the encoder's stride {cnn.stride}")
        if norm_pix and cnn.stride * cnn.stride * cnn.channels < 2:
            raise ValueError("norm_pix needs at least 2 values per cell; set norm_pix=False or add a stage")
        self.image_size, self.ratio, self.norm_pix = (h, w), ratio, norm_pix
        self.cell = cnn.stride
        self.grid = (h // cnn.stride, w // cnn.stride)
        self.encoder = MaskedCNN(cnn, SPARSE)
        self.decoder = SparKDecoder(cnn.widths, cnn.channels, decoder_width, cnn.stem_stride)
        self.masker = masker or RandomMask()

    @property
    def layout(self):
        return patch_layout(*self.image_size, self.cell)

    def draw_mask(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Bool[B, L], True = hidden: exactly L - round(L * (1 - ratio)) cells hidden per row."""
        cells = self.grid[0] * self.grid[1]
        hidden = cells - visible_count(cells, self.ratio)
        return self.masker(self.layout, batch_size, ratio=hidden / cells, generator=generator)

    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """images Float[B, C, H, W], mask Bool[B, L] (True = hidden) -> Float[B, C, H, W]."""
        if tuple(images.shape[2:]) != self.image_size:
            raise UnmaskError(f"SparK was built for {self.image_size} images, got {tuple(images.shape[2:])}")
        keep = cell_keep(mask.to(images.device), self.grid, self.cell)  # [B, 1, H, W]
        out = self.encoder(images, keep)
        return self.decoder(out.maps, out.keeps)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        images = batch["images"]
        mask = self.draw_mask(images.shape[0], generator).to(images.device)
        pred = patchify(self.reconstruct(images, mask), self.cell)  # [B, L, cell*cell*C]
        target = patchify(images, self.cell)
        target = normalize_patches(target) if self.norm_pix else target
        loss = masked_mean(patch_mse(pred, target), mask)  # [B, L] -> mean over hidden cells
        return ObjectiveOutput(loss, {"loss": loss.detach(), "hidden_share": as_metric(mask.float().mean(), loss)})

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Float[B, C, H, W] -> Float[B, L, D]: the encoder's last map, every cell visible (probes)."""
        return self.encoder.tokens(images)
