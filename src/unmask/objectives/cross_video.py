"""CrossVideoMAE (Ahamed et al. 2025, P57): VideoMAE whose visible-token features are also aligned,
by a cross-modal contrastive loss, with the features of a frame sampled from the same video and
encoded as an image, at the video level and at the frame level.

The small form here:
- video branch: VideoMAE (`VideoMaskedAutoencoding`: tube mask, tubelet reconstruction; V2's dual
  masking too when `decoder_ratio > 0`);
- frame branch: one frame drawn per video, held still for a tubelet (`tubelet` copies) so the same
  encoder embeds it as an image: one time slice of `h x w` tokens at that slice's positions, with
  its own uniform mask (`frame_ratio`, the paper's image branch masks 75-90%);
- features: the mean of the encoder's visible tokens of the video (video level), of the visible
  tokens of the time slice holding the sampled frame (frame level), and of the frame branch's
  visible tokens; one projection head (BYOL's MLP) maps all three into the shared space;
- loss: reconstruction + `weight` * (NT-Xent(video, frame) + NT-Xent(slice, frame)) / 2, where
  NT-Xent is SimCLR's: the pair from one video is positive, the other 2B - 2 embeddings negative.

Departures from the paper, for the scale of moving digits: the frame branch shares the video
encoder (the paper's image branch is a separate, pre-trained image MAE), it does not reconstruct,
and the paper's intra-modal term between a video and an augmented copy of it is left out (no
augmentations of these clips keep their motion labels).

batch: {"videos": Float[B, C, T, H, W]} -> ObjectiveOutput.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..layout import Layout
from ..masking import Masker, RandomMask
from ..nn.mae import MaskedAutoencoder
from ..nn.patch import patchify_video
from .base import ObjectiveOutput, as_metric
from .lut import mlp
from .videomae import VideoMaskedAutoencoding

CROSS_WEIGHT = 0.1
TEMPERATURE = 0.1


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """SimCLR's NT-Xent. a, b: Float[B, E]; a[i] and b[i] are positives, every other row of both is
    a negative; cosine similarities over `temperature`, cross-entropy averaged over all 2B rows."""
    n = a.shape[0]
    z = F.normalize(torch.cat([a, b]).float(), dim=-1)
    sim = (z @ z.T / temperature).masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, positives)


class CrossVideoMAE(VideoMaskedAutoencoding):
    def __init__(self, model: MaskedAutoencoder, masker: Masker | None = None, *, ratio: float = 0.9,
                 norm_pix: bool = True, decoder_ratio: float = 0.0, frame_ratio: float = 0.75,
                 weight: float = CROSS_WEIGHT, temperature: float = TEMPERATURE, proj_dim: int = 64,
                 hidden: int = 256):
        super().__init__(model, masker, ratio=ratio, norm_pix=norm_pix, decoder_ratio=decoder_ratio)
        if not 0.0 <= frame_ratio < 1.0 or weight < 0 or temperature <= 0:
            raise ValueError(f"CrossVideoMAE needs frame_ratio in [0, 1), weight >= 0 and temperature > 0, got "
                             f"{frame_ratio}, {weight}, {temperature}")
        self.frame_ratio, self.weight, self.temperature = frame_ratio, weight, temperature
        self.frame_masker = RandomMask()
        self.projector = mlp(model.config.dim, hidden, proj_dim)

    def frame_tokens(self, videos: torch.Tensor, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The frame `frame[b]` of each video as one still time slice: (tubelets Float[B, h*w, P],
        positions Float[B, h*w, D] of the slice that holds the frame)."""
        cfg = self.model.config
        b, t = videos.shape[0], cfg.tubelet
        still = videos[torch.arange(b, device=videos.device), :, frame]  # [B, C, H, W]
        tokens = patchify_video(still.unsqueeze(2).expand(-1, -1, t, -1, -1), cfg.patch, t)
        slices, h, w = cfg.grid
        pos = self.model.encoder.pos.view(slices, h * w, -1)[frame // t]
        return tokens, pos

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        videos = batch["videos"]
        b, frames = videos.shape[0], videos.shape[2]
        slices, h, w = self.model.config.grid
        mask = self.draw_mask(b, generator)  # on the host: the encoder indexes it there
        rec = self.reconstruct(videos, mask, generator)

        frame = torch.randint(frames, (b,), generator=generator).to(videos.device, non_blocking=True)
        frame_mask = self.frame_masker(Layout.grid(h, w), b, ratio=self.frame_ratio, generator=generator)
        tokens, pos = self.frame_tokens(videos, frame)
        prefix = self.model.encoder.prefix
        still = self.model.encoder.encode(tokens, frame_mask, pos=pos).tokens[:, prefix:]
        visible = rec.encoded.tokens[:, prefix:]  # [B, K, D]
        in_slice = (rec.encoded.index.ids_keep // (h * w) == (frame // self.model.config.tubelet).unsqueeze(1))
        weights = in_slice.unsqueeze(-1).to(visible.dtype)
        frame_level = (visible * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # [B, D]
        z = self.projector(torch.cat([visible.mean(1), frame_level, still.mean(1)]))  # [3B, E]
        z_video, z_slice, z_frame = z.split(b)
        align = (nt_xent(z_video, z_frame, self.temperature) + nt_xent(z_slice, z_frame, self.temperature)) / 2
        loss = rec.loss + self.weight * align
        metrics = {"loss": loss.detach(), "reconstruction": rec.loss.detach(), "alignment": align.detach(),
                   "decoder_tokens": as_metric(rec.decoder_tokens, loss)}
        return ObjectiveOutput(loss, metrics)
