"""Prompt-guided Mask Proposal, PMP (Li, Zhang, Wan, Yu, Kale and Lu 2024, "Prompt-Guided Mask Proposal
for Two-Stage Open-Vocabulary Segmentation", arXiv:2412.10292): in a query-based mask generator
(Mask2Former: learned queries read the image features, each query predicts a mask as its embedding's
dot product with per-pixel embeddings, and a class score), let the queries also cross-attend the
text prompt's tokens in every decoder layer, so the proposals are made for the prompt; without it
the wanted mask may be missing from the proposals, and no second stage can pick it.

Shapes (einops legend): B images, Q queries, D width, h x w the feature grid (image / 4), H' x W'
the mask grid (image / 2), T prompt words, C classes (+1: "no object").

- `ImageBackbone`: two strided conv stages (S -> S/2 -> S/4) give the features the queries read
  (with fixed sin-cos positions) and, through a light pixel decoder (the S/4 features upsampled and
  added to the S/2 ones), the per-pixel embeddings [B, D, H', W'].
- `PromptEncoder`: word embeddings, learned positions and one Transformer layer whose attention
  skips pad words (a key padding mask from the lengths).
- `MaskProposalDecoder`: `depth` pre-norm layers, each (prompt cross-attention, only when
  `prompt=True`; queries -> prompt tokens, pad words masked out) -> cross-attention queries -> image
  features -> self-attention -> MLP, each with a residual. With `prompt=False` no prompt module exists
  and a prompt passed in is never read: the two-stage baseline.
- `MaskProposalModel`: backbone + (prompt encoder) + decoder -> `MaskProposals`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .embedding import sincos_nd
from .transformer import Attention, Transformer, init_weights


@dataclass(frozen=True)
class MaskProposalConfig:
    image_size: int = 64
    channels: int = 3
    classes: int = 24  # C; the class head has C + 1 outputs, the last one "no object"
    vocab_size: int = 0  # prompt words (pad id 0); needed only with prompt=True
    prompt_length: int = 2  # T, the most words of a prompt
    dim: int = 64
    queries: int = 8
    depth: int = 3
    heads: int = 4
    prompt: bool = True  # PMP's prompt cross-attention in every decoder layer

    def __post_init__(self):
        if self.image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {self.image_size}")
        if self.classes < 1 or self.queries < 1 or self.depth < 1:
            raise ValueError(f"classes, queries and depth must be >= 1, got {self.classes}, {self.queries}, "
                             f"{self.depth}")
        if self.prompt and (self.vocab_size < 2 or self.prompt_length < 1):
            raise ValueError(f"prompt=True needs vocab_size >= 2 and prompt_length >= 1, got "
                             f"{self.vocab_size} and {self.prompt_length}")


@dataclass
class MaskProposals:
    masks: torch.Tensor  # Float[B, Q, H', W'] mask logits
    logits: torch.Tensor  # Float[B, Q, C + 1] class logits, the last one "no object"


class ImageBackbone(nn.Module):
    """images: Float[B, C, S, S] in [0, 1] -> (tokens Float[B, h*w, D] with positions, pixel
    embeddings Float[B, D, H', W']), h = S/4, H' = S/2."""

    def __init__(self, cfg: MaskProposalConfig):
        super().__init__()
        d, half = cfg.dim, cfg.dim // 2
        # patchify-style strided convs keep the cost small: about 12 M multiply-adds per 64x64 image
        self.stem = nn.Sequential(nn.Conv2d(cfg.channels, half, 4, stride=2, padding=1), nn.GELU())  # S/2
        self.down = nn.Sequential(nn.Conv2d(half, d, 2, stride=2), nn.GELU(),
                                  nn.Conv2d(d, d, 3, padding=1), nn.GELU())  # S/4
        self.lateral = nn.Conv2d(half, d, 1)
        self.pixel = nn.Conv2d(d, d, 1)
        grid = cfg.image_size // 4
        self.register_buffer("pos", sincos_nd((grid, grid), d), persistent=False)  # [h*w, D]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fine = self.stem(images)  # [B, D/2, H', W']
        coarse = self.down(fine)  # [B, D, h, w]
        tokens = coarse.flatten(2).transpose(1, 2) + self.pos  # [B, h*w, D]
        up = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return tokens, self.pixel(up + self.lateral(fine))


def padding_mask(lengths: torch.Tensor, length: int) -> torch.Tensor:
    """lengths: Long[B] -> Bool[B, 1, 1, T], True where a query may attend (the real words)."""
    return (torch.arange(length, device=lengths.device) < lengths[:, None])[:, None, None, :]


class PromptEncoder(nn.Module):
    """tokens: Long[B, T], lengths: Long[B] (1..T real words first, then pads) -> Float[B, T, D]; the
    outputs at real words do not depend on what the pad positions hold."""

    def __init__(self, cfg: MaskProposalConfig):
        super().__init__()
        self.words = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos = nn.Parameter(torch.zeros(cfg.prompt_length, cfg.dim))
        self.layer = Transformer(cfg.dim, 1, cfg.heads)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.layer(self.words(tokens) + self.pos[: tokens.shape[1]], padding_mask(lengths, tokens.shape[1]))


class DecoderLayer(nn.Module):
    """One Mask2Former-lite layer (pre-norm, residual), with PMP's prompt cross-attention first."""

    def __init__(self, dim: int, heads: int, prompt: bool):
        super().__init__()
        if prompt:
            self.prompt_norm = nn.LayerNorm(dim)
            self.prompt_attn = Attention(dim, heads)
        self.prompt = prompt
        self.image_norm = nn.LayerNorm(dim)
        self.image_attn = Attention(dim, heads)
        self.self_norm = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, q: torch.Tensor, image: torch.Tensor, text: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """q: [B, Q, D]; image: [B, h*w, D]; text: [B, T, D] with text_mask Bool[B, 1, 1, T]."""
        if self.prompt:
            q = q + self.prompt_attn.attend(self.prompt_norm(q), text, text_mask)
        q = q + self.image_attn.attend(self.image_norm(q), image)
        q = q + self.self_attn(self.self_norm(q))
        return q + self.mlp(self.mlp_norm(q))


class MaskProposalDecoder(nn.Module):
    """Learned queries through `depth` layers -> `MaskProposals` (mask logits by a dot product of
    each query's mask embedding with the per-pixel embeddings; class logits over C + 1)."""

    def __init__(self, cfg: MaskProposalConfig):
        super().__init__()
        self.cfg = cfg
        self.queries = nn.Parameter(torch.zeros(cfg.queries, cfg.dim))
        self.layers = nn.ModuleList(DecoderLayer(cfg.dim, cfg.heads, cfg.prompt) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.class_head = nn.Linear(cfg.dim, cfg.classes + 1)
        self.mask_head = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.GELU(), nn.Linear(cfg.dim, cfg.dim))

    def forward(self, image: torch.Tensor, pixels: torch.Tensor, text: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None) -> MaskProposals:
        """image: [B, h*w, D] tokens; pixels: [B, D, H', W']; text: [B, T, D] (read only with prompt=True)."""
        if self.cfg.prompt and (text is None or text_mask is None):
            raise ValueError("this decoder was built with prompt=True: pass the prompt's tokens and mask")
        q = self.queries.expand(image.shape[0], -1, -1)
        for layer in self.layers:
            q = layer(q, image, text, text_mask)
        q = self.norm(q)
        masks = torch.einsum("bqd,bdhw->bqhw", self.mask_head(q), pixels)
        return MaskProposals(masks=masks, logits=self.class_head(q))


class MaskProposalModel(nn.Module):
    """images: Float[B, C, S, S] in [0, 1]; prompt: Long[B, T] word ids and Long[B] lengths (ignored,
    never read, when cfg.prompt is False) -> MaskProposals with masks [B, Q, S/2, S/2]."""

    def __init__(self, cfg: MaskProposalConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = ImageBackbone(cfg)
        self.prompt_encoder = PromptEncoder(cfg) if cfg.prompt else None
        self.decoder = MaskProposalDecoder(cfg)
        init_weights(self)
        nn.init.trunc_normal_(self.decoder.queries, std=0.02)
        if self.prompt_encoder is not None:
            nn.init.trunc_normal_(self.prompt_encoder.pos, std=0.02)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> MaskProposals:
        s, c = self.cfg.image_size, self.cfg.channels
        if images.ndim != 4 or tuple(images.shape[1:]) != (c, s, s):
            raise ValueError(f"images must be [B, {c}, {s}, {s}], got shape {tuple(images.shape)}")
        image, pixels = self.backbone(images)
        if self.prompt_encoder is None:
            return self.decoder(image, pixels)
        if tokens is None or lengths is None:
            raise ValueError("prompt=True: pass the prompt's tokens Long[B, T] and lengths Long[B]")
        if tokens.ndim != 2 or tokens.shape[0] != images.shape[0] or tokens.shape[1] > self.cfg.prompt_length:
            raise ValueError(f"tokens must be [B={images.shape[0]}, T <= {self.cfg.prompt_length}], "
                             f"got shape {tuple(tokens.shape)}")
        if lengths.shape != (images.shape[0],) or bool(((lengths < 1) | (lengths > tokens.shape[1])).any()):
            raise ValueError(f"lengths must be [B] with 1 <= length <= T={tokens.shape[1]}")
        text = self.prompt_encoder(tokens, lengths)
        return self.decoder(image, pixels, text, padding_mask(lengths, tokens.shape[1]))
