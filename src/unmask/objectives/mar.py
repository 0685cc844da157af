"""MAR, masked autoregression over continuous tokens (Li et al. 2024, "Autoregressive Image Generation
without Vector Quantization", arXiv:2406.11838), as MAR-3D applies it to 3D latents (Chen et al. 2025,
"MAR-3D: Progressive Masked Auto-regressor for High-Resolution 3D Generation", arXiv:2503.20519): a
bidirectional MAE-style encoder-decoder reads the visible tokens and computes a condition z at each
hidden place, and a small diffusion head models p(token | z), so tokens stay continuous (no codebook).

Training, as MAR's `mar.py`:
- the hidden share is drawn once per step from a normal of mean 1 and spread 0.25 truncated to
  [0.7, 1] (`MAR_RATIO`), and that many tokens of every row are hidden uniformly at random (exact
  count round(ratio * N), the library's rule; MAR takes the ceiling). All-hidden rows happen: the
  encoder then reads its class token alone (MAR reads its 64 "buffer" tokens);
- the encoder drops hidden tokens (`nn/mae.py`, `hide="drop"`); the decoder puts mask tokens back
  and returns z at the hidden places, plus a learned per-place embedding (MAR's
  `diffusion_pos_embed_learned`);
- the loss is the diffusion head's epsilon-prediction error (`nn/diffusion_head.py`) at the hidden
  tokens only, each token repeated `head_batch` = 4 times with its own t and noise (MAR's
  `diffusion_batch_mul`).

`DiscreteMAR` is the baseline with vector-quantised tokens (MAR's Table 1 compares the two in the same
framework): the same networks read codebook vectors, and a linear head scores the K codes at each
hidden place with cross-entropy. `GroupAutoencoding` trains the point-group autoencoder that makes
the continuous tokens (`nn/point_latents.py`). Generation: `sampling/mar.py`.

batch: {"tokens": Float[B, N, C]} (MAR), {"codes": Long[B, N]} (DiscreteMAR), {"groups": Float[B, k, 3]}
(GroupAutoencoding) -> ObjectiveOutput.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..masking import Masker, RandomMask
from ..masking.truncated_normal import TruncatedNormalRatio
from ..nn.diffusion_head import DiffusionHead
from ..nn.mae import MAEConfig, MAEDecoder, MaskedEncoder, init_mae
from ..nn.point_latents import GroupAutoencoder
from ..nn.visible import VisibleIndex, gather_tokens
from .base import ObjectiveOutput, as_metric

MAR_RATIO = TruncatedNormalRatio(low=0.7, high=1.0, mean=1.0, std=0.25)  # MAR: mask_ratio_min 0.7, std 0.25
HEAD_BATCH = 4  # MAR's diffusion_batch_mul


class MaskedAutoregression(nn.Module):
    """MAR's objective. `cfg.image_size` is (N,) tokens of `cfg.channels` numbers each (`patch=1`)."""

    def __init__(self, cfg: MAEConfig, *, head_width: int = 128, head_depth: int = 3, sampling_steps: int = 50,
                 ratio: TruncatedNormalRatio = MAR_RATIO, head_batch: int = HEAD_BATCH, masker: Masker | None = None):
        super().__init__()
        if len(cfg.image_size) != 1 or cfg.hide != "drop" or not cfg.cls_token:
            raise ValueError(f"MAR reads a sequence of tokens (image_size=(N,)) with a drop-hidden encoder and a "
                             f"class token (read alone when every token is hidden); got image_size="
                             f"{cfg.image_size}, hide={cfg.hide!r}, cls_token={cfg.cls_token}")
        if head_batch < 1:
            raise ValueError(f"head_batch must be >= 1, got {head_batch}")
        self.config = cfg
        self.ratio, self.head_batch = ratio, head_batch
        self.masker = masker or RandomMask()
        self.encoder = MaskedEncoder(cfg)
        self.decoder = MAEDecoder(cfg, out_dim=cfg.decoder_dim)
        self.decoder.head = nn.Identity()  # z is the decoder's output itself
        self.head_pos = nn.Parameter(torch.zeros(1, cfg.image_size[0], cfg.decoder_dim))
        init_mae(self)
        nn.init.normal_(self.head_pos, std=0.02)
        self.head = self.make_head(head_width, head_depth, sampling_steps)  # after init_mae: keeps its own init

    def make_head(self, width: int, depth: int, sampling_steps: int) -> nn.Module:
        return DiffusionHead(self.config.channels, self.config.decoder_dim, width, depth,
                             sampling_steps=sampling_steps)

    @property
    def layout(self):
        return self.config.layout

    def draw_mask(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Bool[B, N], True = hidden, on the host: one share from `ratio` for the batch (the drop-hidden
        encoder needs one count per batch, as MAR draws one per step)."""
        r = self.ratio.draw((), generator)  # a host tensor, never read
        return self.masker(self.layout, batch_size, ratio=r, generator=generator)

    def condition(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, VisibleIndex]:
        """tokens: Float[B, N, C] (hidden places are never read); mask: Bool[B, N], True = hidden, the same
        count M in every row -> (z Float[B, M, decoder_dim] at index.ids_hidden, index)."""
        encoded = self.encoder.encode(tokens, mask)
        z = self.decoder(encoded)  # [B, M, Dd]
        return z + gather_tokens(self.head_pos, encoded.index.ids_hidden), encoded.index

    def sample_tokens(self, z: torch.Tensor, *, temperature: float = 1.0, generator: torch.Generator | None = None,
                      steps: int | None = None, clip: float | None = None) -> torch.Tensor:
        """z: Float[R, decoder_dim] -> Float[R, C]: one draw of the diffusion head per condition."""
        return self.head.sample(z, temperature=temperature, generator=generator, steps=steps, clip=clip)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        tokens = batch["tokens"]  # [B, N, C]
        mask = self.draw_mask(tokens.shape[0], generator)
        z, index = self.condition(tokens, mask)  # [B, M, Dd]
        target = gather_tokens(tokens, index.ids_hidden)  # [B, M, C]
        c = tokens.shape[-1]
        per = self.head.loss(target.reshape(-1, c).repeat(self.head_batch, 1),
                             z.reshape(-1, z.shape[-1]).repeat(self.head_batch, 1), generator=generator)
        loss = per.mean() if per.numel() else z.sum() * 0.0
        return ObjectiveOutput(loss, {"loss": loss.detach(), "hidden_share": as_metric(mask.float().mean(), loss)})


class DiscreteMAR(MaskedAutoregression):
    """The same networks over vector-quantised tokens: the encoder reads `codebook[code]` (Float[K, C]),
    a linear head gives logits over the K codes at each hidden place, and the loss is their mean
    cross-entropy. `logits(canvas)` is a denoiser for `sampling.generate` (mask id K)."""

    def __init__(self, cfg: MAEConfig, codebook: torch.Tensor, *, ratio: TruncatedNormalRatio = MAR_RATIO,
                 masker: Masker | None = None):
        if codebook.ndim != 2 or codebook.shape[1] != cfg.channels or codebook.shape[0] < 2:
            raise ValueError(f"codebook must be Float[K >= 2, {cfg.channels}], got {tuple(codebook.shape)}")
        self.codes = codebook.shape[0]
        super().__init__(cfg, ratio=ratio, masker=masker)
        self.register_buffer("codebook", codebook.detach().float().clone())

    def make_head(self, width: int, depth: int, sampling_steps: int) -> nn.Module:
        return nn.Linear(self.config.decoder_dim, self.codes)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        codes = batch["codes"]  # [B, N]
        mask = self.draw_mask(codes.shape[0], generator)
        z, index = self.condition(self.codebook[codes], mask)
        logits = self.head(z)  # [B, M, K]
        target = gather_tokens(codes.unsqueeze(-1), index.ids_hidden).squeeze(-1)  # [B, M]
        if target.numel():
            loss = F.cross_entropy(logits.reshape(-1, self.codes).float(), target.reshape(-1))
        else:
            loss = logits.sum() * 0.0
        with torch.no_grad():
            accuracy = (logits.argmax(-1) == target).float().mean()
        return ObjectiveOutput(loss, {"loss": loss.detach(), "code_accuracy": accuracy,
                                      "hidden_share": as_metric(mask.float().mean(), loss)})

    @torch.no_grad()
    def logits(self, canvas: torch.Tensor) -> torch.Tensor:
        """canvas: Long[B, N], hidden places = K (the mask id), the same count in every row ->
        Float[B, N, K]: the head's logits at hidden places, zeros elsewhere (never read there)."""
        hidden = canvas == self.codes
        z, index = self.condition(self.codebook[canvas.clamp(max=self.codes - 1)], hidden.cpu())
        out = torch.zeros(*canvas.shape, self.codes, device=z.device, dtype=z.dtype)
        return out.scatter(1, index.ids_hidden.unsqueeze(-1).expand(-1, -1, self.codes), self.head(z))


class GroupAutoencoding(nn.Module):
    """Trains the point-group autoencoder of the continuous tokens: the mean Chamfer distance (L2)
    between each group (Float[B, k, 3], relative to its centre) and its reconstruction."""

    def __init__(self, autoencoder: GroupAutoencoder):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        loss = self.autoencoder.reconstruction_error(batch["groups"]).mean()
        return ObjectiveOutput(loss, {"loss": loss.detach()})
