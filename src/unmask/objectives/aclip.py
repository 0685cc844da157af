"""Attentive Mask CLIP (A-CLIP, Yang et al. 2023, "Attentive Mask CLIP", ICCV 2023, arXiv:2212.08653):
CLIP's image-text contrast where the online image encoder reads only part of the image, and the
kept tokens are the ones an EMA copy of the image encoder attends to most, not random ones, so the
kept half still carries what the caption names.

- image tower: a ViT over patches with a [CLS] token (`MaskedEncoder`, drop-hidden as in MAE: only
  the kept patches enter), its [CLS] output -> linear projection;
- text tower: word embeddings + fixed 1-D sin-cos positions -> Transformer (pads never attended to)
  -> mean over the real words -> linear projection;
- EMA image encoder (no gradient): reads the whole image; its [CLS]-to-patch attention, averaged
  over every layer and head (the release's `forward_features(need_attn=True)`), is the `scores`
  of `AttentiveMask` (`masking/attentive.py`): the int(cells * keep) + 1 most attended 2 x 2 cells
  are kept, the rest hidden. Masking starts at step 0, with the EMA copy as it is (at first the
  online encoder's initial weights, whose attention is close to uniform), as in the release;
- loss: CLIP's symmetric InfoNCE over the batch, `clip_loss`, with a learnable temperature
  (logit scale initialised to log(1 / 0.07), clamped to [0, log 100], as the release).

`masking` picks the view the online encoder reads: "attentive" (A-CLIP), "random" (the same
number of tokens hidden, uniformly at random: the baseline of A-CLIP's ablation, as FLIP), or
"none" (CLIP: every patch). The EMA moves before each training step k through `begin_step(k)`,
which the Trainer calls (`ema <- m ema + (1 - m) online`, m cosine from `momentum` to 1 over
`momentum_steps`, A-CLIP's schedule from 0.996; constant `momentum` when `momentum_steps` is None).
At step 0 the EMA equals the online encoder, so moving it then changes nothing, as in the release.

Left out: A-CLIP's second masked view with its image-image SimCLR loss and the EMA (BYOL-style)
distillation loss, and the EMA copies of the text tower and projections that only those terms read.
Those need two differently augmented crops; the one view here is the core of the ablation (attentive
vs random masking at the same kept ratio, image-text contrast only).

batch: {"images": Float[B, C, H, W] in [0, 1], "tokens": Long[B, T] (pads 0), "lengths": Long[B]}.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..masking import RandomMask
from ..masking.attentive import A_CLIP_KEEP, CELL, AttentiveMask, hidden_count
from ..nn.embedding import sincos_nd
from ..nn.image_text import ImageTextConfig
from ..nn.mae import MAEConfig, MaskedEncoder, init_mae
from ..nn.patch import patch_layout
from ..nn.token_drop import attention_logits
from ..nn.transformer import Transformer
from .base import ObjectiveOutput, as_metric

A_CLIP_MOMENTUM = 0.996  # the release's --momentum-ema, raised to 1 by a cosine over training
LOGIT_SCALE_INIT = math.log(1 / 0.07)  # CLIP
LOGIT_SCALE_MAX = math.log(100.0)  # the release clamps logit_scale to [0, 4.6052]
MASKING = ("attentive", "random", "none")


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE. image, text: Float[B, E] (row i of each a pair, normalised here);
    logit_scale: the multiplier of the cosine similarities (exp of the learned log scale). Mean of
    the image->text and text->image cross-entropies, each averaged over the B rows."""
    img, txt = F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)
    logits = logit_scale * img @ txt.T  # [B, B]: image i against every caption
    labels = torch.arange(img.shape[0], device=img.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def momentum_at(step: int, steps: int | None, base: float = A_CLIP_MOMENTUM) -> float:
    """The EMA's m at step `step`: A-CLIP's cosine from `base` (step 0) to 1 (step `steps`);
    `base` throughout when steps is None."""
    if steps is None:
        return base
    t = min(max(step, 0), steps) / steps
    return 1.0 - (1.0 - base) * (1.0 + math.cos(math.pi * t)) / 2.0


@torch.no_grad()
def cls_attention_all_layers(encoder: MaskedEncoder, images: torch.Tensor) -> torch.Tensor:
    """images: Float[B, C, H, W] -> Float[B, L]: the [CLS] token's attention to each patch, every
    patch visible, averaged over all blocks and heads (softmax over all 1 + L keys, so a row sums
    to 1 minus the mean attention [CLS] pays itself)."""
    if encoder.cls is None:
        raise ValueError("A-CLIP's attention is the [CLS] row: build the image encoder with cls_token=True")
    normed: list[torch.Tensor] = []
    hooks = [blk.norm1.register_forward_hook(lambda m, i, o: normed.append(o)) for blk in encoder.transformer.blocks]
    try:
        encoder(images)
    finally:
        for h in hooks:
            h.remove()
    rows = [attention_logits(blk.attn, h).softmax(-1)[:, :, 0, 1:].mean(1)  # [B, L] per block
            for blk, h in zip(encoder.transformer.blocks, normed, strict=True)]
    return torch.stack(rows).mean(0)


class TextTower(nn.Module):
    """tokens Long[B, T] (pads after the words), lengths Long[B] -> Float[B, D]: the Transformer's
    outputs averaged over the real words (a caption of 0 words reads its first slot)."""

    def __init__(self, cfg: ImageTextConfig, depth: int):
        super().__init__()
        self.cfg = cfg
        self.word = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.register_buffer("pos", sincos_nd((cfg.text_length,), cfg.dim).unsqueeze(0), persistent=False)
        self.transformer = Transformer(cfg.dim, depth, cfg.heads, cfg.mlp_ratio)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1] != self.cfg.text_length:
            raise ValueError(f"tokens must be [B, {self.cfg.text_length}], got {tuple(tokens.shape)}")
        slots = torch.arange(tokens.shape[1], device=tokens.device)
        real = slots < lengths.clamp(min=1).unsqueeze(1)  # [B, T]
        out = self.transformer(self.word(tokens) + self.pos, real[:, None, None, :])  # pads are never keys
        w = real.to(out.dtype).unsqueeze(-1)
        return (out * w).sum(1) / w.sum(1)


class AttentiveMaskCLIP(nn.Module):
    def __init__(self, cfg: ImageTextConfig, *, masking: str = "attentive", keep: float = A_CLIP_KEEP,
                 cell: int = CELL, text_depth: int = 2, embed_dim: int = 64, momentum: float = A_CLIP_MOMENTUM,
                 momentum_steps: int | None = None):
        super().__init__()
        if masking not in MASKING:
            raise ValueError(f"masking must be one of {', '.join(MASKING)}, got {masking!r}")
        if not 0.0 <= keep <= 1.0:
            raise ValueError(f"keep must lie in [0, 1], got {keep}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must lie in [0, 1], got {momentum}")
        if momentum_steps is not None and momentum_steps < 1:
            raise ValueError(f"momentum_steps must be >= 1 or None, got {momentum_steps}")
        if text_depth < 1 or embed_dim < 1:
            raise ValueError(f"text_depth and embed_dim must be >= 1, got {text_depth} and {embed_dim}")
        self.cfg = cfg
        self.masking, self.keep, self.momentum, self.momentum_steps = masking, keep, momentum, momentum_steps
        self.layout = patch_layout(cfg.image_size, cfg.image_size, cfg.patch)
        self.hidden = hidden_count((cfg.grid, cfg.grid), keep, cell)  # the same count for "random"
        self.masker = AttentiveMask(cell=cell) if masking == "attentive" else RandomMask()
        vit = MAEConfig(image_size=(cfg.image_size, cfg.image_size), channels=cfg.channels, patch=cfg.patch,
                        dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, cls_token=True,
                        hide="drop")
        self.image_encoder = MaskedEncoder(vit)
        init_mae(self.image_encoder)
        self.text_encoder = TextTower(cfg, text_depth)
        init_mae(self.text_encoder)
        nn.init.normal_(self.text_encoder.word.weight, std=0.02)
        self.image_projection = nn.Linear(cfg.dim, embed_dim, bias=False)
        self.text_projection = nn.Linear(cfg.dim, embed_dim, bias=False)
        for proj in (self.image_projection, self.text_projection):
            nn.init.normal_(proj.weight, std=cfg.dim**-0.5)  # CLIP
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))
        self.ema_encoder = copy.deepcopy(self.image_encoder).requires_grad_(False)

    @torch.no_grad()
    def update_ema(self, m: float) -> None:
        """ema <- m ema + (1 - m) online, parameter by parameter."""
        for t, s in zip(self.ema_encoder.parameters(), self.image_encoder.parameters(), strict=True):
            t.lerp_(s, 1.0 - m)

    def begin_step(self, step: int) -> None:
        """Called by the Trainer before step `step`'s forward passes: the release moves its EMA at
        the start of each training forward."""
        self.update_ema(momentum_at(step, self.momentum_steps, self.momentum))

    def attention(self, images: torch.Tensor) -> torch.Tensor:
        """Float[B, L]: the EMA encoder's [CLS]-to-patch attention on the whole image."""
        return cls_attention_all_layers(self.ema_encoder, images)

    def draw_mask(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Bool[B, L], True = hidden, in host memory (the drop-hidden encoder indexes it there)."""
        b = images.shape[0]
        if self.masking == "none":
            return torch.zeros(b, self.layout.n, dtype=torch.bool)
        if self.masking == "random":
            return self.masker(self.layout, b, ratio=self.hidden / self.layout.n, generator=generator)
        # a data-driven mask is chosen on the host: reading the attention there is this step's one wait
        scores = self.attention(images).cpu()
        return self.masker(self.layout, b, ratio=1.0 - self.keep, generator=generator, scores=scores)

    def encode_image(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """images Float[B, C, H, W], mask Bool[B, L] (None: every patch) -> Float[B, E], unnormalised."""
        return self.image_projection(self.image_encoder(images, mask).tokens[:, 0])

    def encode_text(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """tokens Long[B, T], lengths Long[B] -> Float[B, E], unnormalised."""
        return self.text_projection(self.text_encoder(tokens, lengths))

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(0.0, LOGIT_SCALE_MAX).exp()

    def forward(self, batch: dict, generator: torch.Generator | None = None,
                mask: torch.Tensor | None = None) -> ObjectiveOutput:
        images, tokens, lengths = batch["images"], batch["tokens"], batch["lengths"]
        mask = self.draw_mask(images, generator) if mask is None else mask
        image = self.encode_image(images, mask)  # [B, E]
        text = self.encode_text(tokens, lengths)  # [B, E]
        scale = self.scale()
        loss = clip_loss(image, text, scale)
        with torch.no_grad():
            sims = F.normalize(image.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T
            acc = (sims.argmax(1) == torch.arange(sims.shape[0], device=sims.device)).float().mean()
        kept = self.layout.n - int(mask[0].sum()) if mask.shape[0] else 0
        return ObjectiveOutput(loss, {"loss": loss.detach(), "clip_acc": acc, "logit_scale": scale.detach(),
                                      "kept_tokens": as_metric(kept, loss)})

    @torch.no_grad()
    def image_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """Float[B, C, H, W] -> Float[B, E], unit norm: the online encoder on every patch."""
        return F.normalize(self.encode_image(images).float(), dim=-1)

    @torch.no_grad()
    def text_embedding(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Long[B, T], Long[B] -> Float[B, E], unit norm."""
        return F.normalize(self.encode_text(tokens, lengths).float(), dim=-1)
