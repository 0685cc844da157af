"""M3AE, the multimodal masked autoencoder (Geng et al. 2022, "Multimodal Masked Autoencoders Learn
Transferable Representations", arXiv:2205.14204; with the separate vision and language decoders of
Chen et al. 2022, "Multi-Modal Masked Autoencoders for Medical Vision-and-Language Pre-Training",
arXiv:2209.07098): image patches and words enter one encoder, each modality masked at its own ratio
(far more patches than words; images carry more redundancy), the hidden tokens of both dropped as in
MAE, and each modality rebuilt by its own decoder: pixels of the hidden patches, ids of the hidden
words.

- mask: `RandomMask` over the layout [patches, text] with the ratio of each segment: exactly
  `round(image_ratio * L)` patches and `round(text_ratio * T)` word slots per row. The text slot is
  the padded caption: a hidden pad costs nothing (the word loss reads real words only), and pads are
  never attended to by the encoder.
- encoder: the visible patches and visible words, in one Transformer (`nn/image_text.py` embeddings).
- decoders: each reads the encoder's outputs at its own modality's visible places and mask tokens at
  its own hidden places (with its own positions), and predicts at those hidden places only. The
  image decoder is a Transformer (MAE's); the text decoder is a lighter one (`text_decoder_depth`).
- loss: the MAE pixel loss (per-patch MSE, optionally of normalised patches, `norm_pix`) averaged
  over hidden patches, plus `text_weight` x the cross-entropy averaged over hidden real words.

batch: {"images": Float[B, C, H, W] in [0, 1], "tokens": Long[B, T] (pads 0), "lengths": Long[B]}.
`image_features(images)` encodes every patch with no text: the image-alone features a probe reads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..masking import RandomMask
from ..nn.embedding import sincos_nd
from ..nn.image_text import ImageTextConfig, ImageTextEmbed
from ..nn.mae import init_mae
from ..nn.patch import patchify
from ..nn.transformer import Transformer
from ..nn.visible import VisibleIndex, gather_tokens, split_visible
from .base import ObjectiveOutput, as_metric
from .mae import masked_mean, normalize_patches, patch_mse


class ModalityDecoder(nn.Module):
    """Encoder outputs at one modality's visible places -> predictions at its hidden places.
    grid: the modality's token grid, (h, w) or (T,), for the decoder's fixed positions."""

    def __init__(self, dim: int, decoder_dim: int, depth: int, heads: int, grid: tuple[int, ...], out_dim: int):
        super().__init__()
        self.embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer("pos", sincos_nd(grid, decoder_dim).unsqueeze(0), persistent=False)
        self.transformer = Transformer(decoder_dim, depth, heads)
        self.head = nn.Linear(decoder_dim, out_dim)

    def forward(self, visible: torch.Tensor, index: VisibleIndex) -> torch.Tensor:
        """visible: [B, K, D] at index.ids_keep -> [B, M, out_dim] at index.ids_hidden."""
        x = self.embed(visible) + gather_tokens(self.pos, index.ids_keep)
        m = index.ids_hidden.shape[1]
        queries = self.mask_token.to(x.dtype) + gather_tokens(self.pos, index.ids_hidden)
        x = torch.cat([x, queries], dim=1)
        return self.head(self.transformer(x, only=slice(x.shape[1] - m, None)))


class M3AE(nn.Module):
    def __init__(self, cfg: ImageTextConfig, *, image_ratio: float = 0.75, text_ratio: float = 0.5,
                 decoder_dim: int = 64, decoder_depth: int = 2, decoder_heads: int = 4, text_decoder_depth: int = 1,
                 text_weight: float = 1.0, norm_pix: bool = True):
        super().__init__()
        if not 0.0 <= image_ratio < 1.0:
            raise ValueError(f"image_ratio must lie in [0, 1) so that some patches stay visible, got {image_ratio}")
        if not 0.0 <= text_ratio <= 1.0:
            raise ValueError(f"text_ratio must lie in [0, 1], got {text_ratio}")
        if text_weight < 0:
            raise ValueError(f"text_weight must be >= 0, got {text_weight}")
        self.cfg = cfg
        self.image_ratio, self.text_ratio = image_ratio, text_ratio
        self.text_weight, self.norm_pix = text_weight, norm_pix
        self.masker = RandomMask()
        self.embed = ImageTextEmbed(cfg)
        self.encoder = Transformer(cfg.dim, cfg.depth, cfg.heads, cfg.mlp_ratio)
        self.image_decoder = ModalityDecoder(cfg.dim, decoder_dim, decoder_depth, decoder_heads,
                                             (cfg.grid, cfg.grid), cfg.patch_dim)
        self.text_decoder = ModalityDecoder(cfg.dim, decoder_dim, text_decoder_depth, decoder_heads,
                                            (cfg.text_length,), cfg.vocab_size)
        init_mae(self)
        nn.init.normal_(self.embed.word.weight, std=0.02)
        nn.init.normal_(self.embed.modality.weight, std=0.02)

    def draw_mask(self, batch_size: int, generator=None) -> torch.Tensor:
        """Bool[B, L + T], True = hidden, in host memory: exact counts per modality."""
        ratios = torch.tensor([[self.image_ratio, self.text_ratio]], dtype=torch.float64).expand(batch_size, 2)
        return self.masker(self.cfg.layout, batch_size, ratio=ratios, generator=generator)

    def encode(self, patches: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor):
        """patches [B, L, p*p*C], tokens Long[B, T], mask Bool[B, L + T] (host) -> (image [B, Ki, D],
        text [B, Kt, D], image index, text index): the encoder's outputs at each modality's visible places."""
        n_img = self.cfg.patches
        img_index = split_visible(mask[:, :n_img]).to(patches.device)
        txt_index = split_visible(mask[:, n_img:]).to(patches.device)
        img = gather_tokens(self.embed.image(patches), img_index.ids_keep)  # [B, Ki, D]
        txt = gather_tokens(self.embed.text(tokens), txt_index.ids_keep)  # [B, Kt, D]
        real = torch.arange(self.cfg.text_length, device=tokens.device) < lengths.unsqueeze(1)  # [B, T]
        keys = torch.cat([torch.ones(img.shape[:2], dtype=torch.bool, device=img.device),
                          real.gather(1, txt_index.ids_keep)], dim=1)
        out = self.encoder(torch.cat([img, txt], dim=1), keys[:, None, None, :])
        return out[:, : img.shape[1]], out[:, img.shape[1] :], img_index, txt_index

    def forward(self, batch: dict, generator: torch.Generator | None = None, mask: torch.Tensor | None = None):
        images, tokens, lengths = batch["images"], batch["tokens"], batch["lengths"]
        mask = self.draw_mask(tokens.shape[0], generator) if mask is None else mask
        patches = patchify(images, self.cfg.patch)  # [B, L, p*p*C]
        img, txt, img_index, txt_index = self.encode(patches, tokens, lengths, mask)
        zero = img.sum() * 0.0 + txt.sum() * 0.0

        target = normalize_patches(patches) if self.norm_pix else patches
        pixels = self.image_decoder(img, img_index)  # [B, Mi, p*p*C]
        image_loss = patch_mse(pixels, gather_tokens(target, img_index.ids_hidden)).mean() if pixels.numel() else zero

        hidden_words = txt_index.ids_hidden  # [B, Mt]
        word_logits = self.text_decoder(txt, txt_index).float()  # [B, Mt, V]
        truth = tokens.gather(1, hidden_words)
        real = hidden_words < lengths.unsqueeze(1)  # hidden slots that hold a word
        ce = F.cross_entropy(word_logits.flatten(0, 1), truth.flatten(), reduction="none").view_as(truth)
        text_loss = masked_mean(ce, real) + zero
        text_acc = masked_mean((word_logits.argmax(-1) == truth).float(), real)
        loss = image_loss + self.text_weight * text_loss
        return ObjectiveOutput(loss, {"loss": loss.detach(), "image": image_loss.detach(), "text": text_loss.detach(),
                                      "text_acc": text_acc.detach(),
                                      "hidden_words": as_metric(real.float().sum(1).mean(), loss)})

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Float[B, C, H, W] -> Float[B, L, D]: every patch visible, no text."""
        return self.encoder(self.embed.image(patchify(images, self.cfg.patch)))
