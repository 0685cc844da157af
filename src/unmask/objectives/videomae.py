"""VideoMAE (Tong et al. 2022) and VideoMAE V2's dual masking (Wang et al. 2023, P65): masked
autoencoding of videos cut into tubelets, with a tube mask for the encoder and, in V2, a second
mask that lets the decoder reconstruct only part of the tokens.

- tokens: tubelets of `tubelet x patch x patch` pixels (`MAEConfig(image_size=(T, H, W), ...)`);
- encoder mask: `TubeMask` at a high ratio (0.9): the same spatial places hidden in every time slice,
  so a hidden tubelet cannot be copied from its neighbour in time; only the visible ones are encoded;
- targets: MAE's norm-pix targets per tubelet (`normalize_patches`; VideoMAE normalises per tubelet
  and per colour channel with the epsilon outside the square root, which for these one-channel
  tubelets differs from MAE's form only in where the 1e-6 sits);
- VideoMAE (`decoder_ratio=0`): the decoder fills mask tokens in at every hidden place and the loss
  is MAE's, the mean squared error over the hidden tubelets;
- V2 dual masking (`decoder_ratio > 0`): a decoder mask (`RunningCellMask` by default, True = not
  reconstructed) keeps `1 - decoder_ratio` of the places; the decoder reads the visible tokens plus
  mask tokens at the kept places only (some of which the encoder saw), and the loss averages the
  per-tubelet error over the tubelets that are both hidden from the encoder and kept by the decoder,
  sum(err * m) / sum(m) over the batch (V2's `engine_for_pretraining.py`).

batch: {"videos": Float[B, C, T, H, W]} -> ObjectiveOutput.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..masking import Masker, RunningCellMask, TubeMask
from ..nn.mae import Encoded, MaskedAutoencoder
from ..nn.visible import gather_tokens, split_visible
from .base import ObjectiveOutput, as_metric
from .mae import MaskedAutoencoding, masked_mean, normalize_patches, patch_mse


class Reconstruction(NamedTuple):
    loss: torch.Tensor  # scalar
    encoded: Encoded  # the encoder's output for the visible tubelets
    decoder_tokens: int  # tokens entering the decoder per example (class token included)


class DualReconstruction(NamedTuple):
    loss: torch.Tensor  # scalar: sum(errors * scored) / sum(scored)
    errors: torch.Tensor  # Float[B, D]: per-tubelet error at each decoded place
    scored: torch.Tensor  # Bool[B, D]: decoded places the encoder did not see (the ones the loss counts)
    decoded: torch.Tensor  # Long[B, D]: the places the decoder reconstructs, ascending
    encoded: Encoded


class VideoMaskedAutoencoding(MaskedAutoencoding):
    """VideoMAE around a `MaskedAutoencoder` with a video layout; V2's dual masking when
    `decoder_ratio > 0`."""

    def __init__(self, model: MaskedAutoencoder, masker: Masker | None = None, *, ratio: float = 0.9,
                 norm_pix: bool = True, decoder_ratio: float = 0.0, decoder_masker: Masker | None = None):
        if model.layout.segments[0].kind != "video":
            raise ValueError(f"VideoMAE needs a video layout (MAEConfig(image_size=(T, H, W))), got "
                             f"{model.layout.segments[0].kind}")
        super().__init__(model, masker or TubeMask(), ratio=ratio, norm_pix=norm_pix)
        if not 0.0 <= decoder_ratio < 1.0:
            raise ValueError(f"decoder_ratio must lie in [0, 1) so that the decoder keeps some places, "
                             f"got {decoder_ratio}")
        self.decoder_ratio = decoder_ratio
        self.decoder_masker = decoder_masker or RunningCellMask()

    def targets(self, videos: torch.Tensor) -> torch.Tensor:
        """Float[B, C, T, H, W] -> Float[B, L, t*p*p*C]: the pixel targets of every tubelet."""
        target = self.model.config.patchify(videos)
        return normalize_patches(target) if self.norm_pix else target

    def draw_decoder_mask(self, batch_size: int, generator, device=None) -> torch.Tensor:
        """Bool[B, L], True = not reconstructed (V2's `decode_masked_pos`); on the host unless `device`."""
        mask = self.decoder_masker(self.layout, batch_size, ratio=self.decoder_ratio, generator=generator)
        return mask.to(device, non_blocking=True) if device is not None else mask

    def dual_reconstruction(self, videos: torch.Tensor, mask: torch.Tensor, decoder_mask: torch.Tensor,
                            target: torch.Tensor | None = None) -> DualReconstruction:
        """V2's step for one encoder mask and one decoder mask (both Bool[B, L], best the masker's host
        masks: their indices are built there, see `nn/visible.py`); `target` Float[B, L, P] replaces
        the pixel targets."""
        decoded = split_visible(decoder_mask).to(videos.device)
        if decoded.keep < 1:
            raise ValueError("the decoder mask hides every place: nothing is left to reconstruct")
        encoded = self.model.encoder(videos, mask)
        pred = self.model.decoder(encoded, decoded.ids_keep)  # [B, D, P]
        target = self.targets(videos) if target is None else target
        errors = patch_mse(pred, gather_tokens(target, decoded.ids_keep))
        scored = mask.to(videos.device, non_blocking=True).gather(1, decoded.ids_keep)
        loss = masked_mean(errors, scored)  # no scored place: a zero loss
        return DualReconstruction(loss, errors, scored, decoded.ids_keep, encoded)

    def reconstruct(self, videos: torch.Tensor, mask: torch.Tensor, generator) -> Reconstruction:
        """One step's reconstruction loss: VideoMAE's, or V2's with a decoder mask drawn here."""
        prefix = self.model.encoder.prefix
        if self.decoder_ratio == 0.0:
            loss, _, out = self.reconstruction(videos, mask)
            return Reconstruction(loss, out.encoded, prefix + mask.shape[1])
        decoder_mask = self.draw_decoder_mask(videos.shape[0], generator)
        dual = self.dual_reconstruction(videos, mask, decoder_mask)
        return Reconstruction(dual.loss, dual.encoded, prefix + dual.encoded.index.keep + dual.decoded.shape[1])

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        videos = batch["videos"]
        mask = self.draw_mask(videos.shape[0], generator)  # on the host: the encoder indexes it there
        rec = self.reconstruct(videos, mask, generator)
        return ObjectiveOutput(rec.loss, {"loss": rec.loss.detach(),
                                          "decoder_tokens": as_metric(rec.decoder_tokens, rec.loss)})
