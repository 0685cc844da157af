"""UrFound's knowledge-guided masked modeling (Yu et al. 2024, "UrFound: Towards Universal Retinal
Foundation Models via Knowledge-Guided Masked Modeling", arXiv:2408.05618, MICCAI 2024): an image
encoder is trained by MAE reconstruction of randomly hidden patches and, at the same time, by masked
language modeling of expert-knowledge text (category descriptions) whose hidden words a separate
text decoder predicts from the encoder's features of the visible patches. The image encoder never
reads text, so downstream it takes an image alone; the text only shapes its features.

- image: MAE as it is (`nn/mae.py` `MaskedAutoencoder`, `objectives/mae.py` `MaskedAutoencoding`):
  exactly `round(image_ratio * L)` patches hidden (`RandomMask`) and dropped, the visible ones
  encoded, a light decoder regresses the hidden patches' pixels (`norm_pix`: normalised per patch).
  With the same seed the image networks start from the same weights as a plain MAE's.
- knowledge text: `word_mask` hides exactly `clamp(round(text_ratio * length), 1, length)` real
  words of each caption (pads never), which the text decoder reads as the mask token id V.
- text decoder (`KnowledgeDecoder`, a small Transformer with its own width and depth) sees the
  image only through the encoder's outputs at the visible patches, after a linear map to its
  width. `condition` says how:
  - "pooled" (UrFound's code, `forward_report_decoder`): the mean of the visible-patch features,
    mapped, is added to every word embedding (a BERT whose inputs carry one image vector);
  - "cross": the mapped visible-patch features are put before the words in one sequence with an
    attention mask: words attend to the image tokens and to the real words (never to pads), image
    tokens to image tokens only (never to words). Cross-attention by concatenation.
  Logits are computed at the hidden words only.
- loss: MAE pixel loss (mean over hidden patches) + `text_weight` x cross-entropy averaged over the
  hidden real words. UrFound adds the two with weight 1.

batch: {"images": Float[B, C, H, W] in [0, 1], "tokens": Long[B, T] (pads 0), "lengths": Long[B]}.
`image_features(images)`: every patch, no text (the features a probe reads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..masking.base import hide_top, uniform
from ..nn.embedding import sincos_nd
from ..nn.image_text import ImageTextConfig
from ..nn.mae import MAEConfig, MaskedAutoencoder
from ..nn.transformer import Transformer, init_weights
from ..nn.visible import padded_rows
from .base import ObjectiveOutput, as_metric
from .mae import MaskedAutoencoding, masked_mean

CONDITIONS = ("pooled", "cross")


def word_mask(lengths: torch.Tensor, text_length: int, ratio: float, generator=None) -> torch.Tensor:
    """lengths: Long[B], real words per caption (1..T) -> Bool[B, T], True = hidden: exactly
    clamp(round(ratio * length), 1, length) of the first `length` places (half to even), uniformly."""
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"text_ratio must lie in (0, 1], got {ratio}")
    lengths = lengths.cpu()
    if lengths.ndim != 1 or (lengths < 1).any() or (lengths > text_length).any():
        raise ValueError(f"lengths must be Long[B] in 1..{text_length} (every caption needs a word to hide), "
                         f"got {lengths.tolist()}")
    counts = torch.round(lengths.double() * ratio).long().clamp(min=1).minimum(lengths)
    real = torch.arange(text_length).unsqueeze(0) < lengths.unsqueeze(1)  # [B, T]
    scores = uniform((lengths.shape[0], text_length), generator).masked_fill(~real, -1.0)  # pads last
    return hide_top(scores, counts)


def cross_attention_mask(k: int, real: torch.Tensor) -> torch.Tensor:
    """Who reads whom in the sequence [K image tokens; T words]. real: Bool[B, T], the words that
    exist (not pads) -> Bool[B, K + T, K + T], True = may attend: image rows read image keys only
    (never a word), word rows read the image keys and the real words."""
    b, t = real.shape
    is_image = torch.arange(k + t, device=real.device) < k  # [K + T]
    key_ok = torch.cat([torch.ones(b, k, dtype=torch.bool, device=real.device), real], dim=1)  # [B, K + T]
    return torch.where(is_image[:, None], is_image[None, :], key_ok[:, None, :])


class KnowledgeDecoder(nn.Module):
    """Masked words of a caption from the image encoder's visible-patch features.

    forward(visible [B, K, D], shown Long[B, T] (mask id V at hidden words), lengths Long[B],
    places Long[B, M]) -> logits Float[B, M, V] at those word places."""

    def __init__(self, image_dim: int, vocab_size: int, text_length: int, *, dim: int = 64, depth: int = 2,
                 heads: int = 4, condition: str = "pooled"):
        super().__init__()
        if condition not in CONDITIONS:
            raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
        self.condition, self.text_length = condition, text_length
        self.image = nn.Linear(image_dim, dim)  # UrFound's bert_mlp: encoder width -> text width
        self.word = nn.Embedding(vocab_size + 1, dim)  # + the mask token
        self.register_buffer("pos", sincos_nd((text_length,), dim).unsqueeze(0), persistent=False)
        self.transformer = Transformer(dim, depth, heads)
        self.head = nn.Linear(dim, vocab_size)
        init_weights(self)

    def forward(self, visible: torch.Tensor, shown: torch.Tensor, lengths: torch.Tensor,
                places: torch.Tensor) -> torch.Tensor:
        t = shown.shape[1]
        words = self.word(shown) + self.pos  # [B, T, d]
        real = torch.arange(t, device=shown.device) < lengths.to(shown.device).unsqueeze(1)  # [B, T]
        image = self.image(visible)  # [B, K, d]
        if self.condition == "pooled":
            x = words + image.mean(dim=1, keepdim=True)
            keys = real[:, None, None, :]  # [B, 1, 1, T]: no word reads a pad
            return self.head(self.transformer(x, keys, only=places))
        x = torch.cat([image, words], dim=1)  # [B, K + T, d]
        allowed = cross_attention_mask(image.shape[1], real)
        return self.head(self.transformer(x, allowed.unsqueeze(1), only=places + image.shape[1]))


class UrFound(nn.Module):
    def __init__(self, cfg: ImageTextConfig, *, image_ratio: float = 0.75, text_ratio: float = 0.5,
                 decoder_dim: int = 64, decoder_depth: int = 2, decoder_heads: int = 4, text_dim: int = 64,
                 text_depth: int = 2, text_heads: int = 4, condition: str = "pooled", text_weight: float = 1.0,
                 norm_pix: bool = True):
        super().__init__()
        if not 0.0 <= image_ratio < 1.0:
            raise ValueError(f"image_ratio must lie in [0, 1) so that some patches stay visible, got {image_ratio}")
        if not 0.0 < text_ratio <= 1.0:
            raise ValueError(f"text_ratio must lie in (0, 1], got {text_ratio}")
        if text_weight < 0:
            raise ValueError(f"text_weight must be >= 0, got {text_weight}")
        self.cfg, self.text_ratio, self.text_weight = cfg, text_ratio, text_weight
        # built first, so that under one seed its weights start as a plain MAE's (a paired baseline)
        self.mae = MaskedAutoencoding(MaskedAutoencoder(mae_config(cfg, decoder_dim, decoder_depth, decoder_heads)),
                                      ratio=image_ratio, norm_pix=norm_pix)
        self.text_decoder = KnowledgeDecoder(cfg.dim, cfg.vocab_size, cfg.text_length, dim=text_dim,
                                             depth=text_depth, heads=text_heads, condition=condition)

    def draw_masks(self, lengths: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(image Bool[B, L], text Bool[B, T]), True = hidden, in host memory: the patches first,
        then the words, from the same generator."""
        image = self.mae.draw_mask(lengths.shape[0], generator)
        return image, word_mask(lengths, self.cfg.text_length, self.text_ratio, generator)

    def check(self, batch: dict) -> None:
        images, tokens, lengths = batch["images"], batch["tokens"], batch["lengths"]
        c, s = self.cfg.channels, self.cfg.image_size
        if images.ndim != 4 or images.shape[1:] != (c, s, s):
            raise ValueError(f"images must be Float[B, {c}, {s}, {s}], got {tuple(images.shape)}")
        if tokens.ndim != 2 or tokens.shape[1] != self.cfg.text_length or tokens.shape[0] != images.shape[0]:
            raise ValueError(f"tokens must be Long[{images.shape[0]}, {self.cfg.text_length}], "
                             f"got {tuple(tokens.shape)}")
        if tokens.dtype != torch.long or lengths.shape != tokens.shape[:1]:
            raise ValueError(f"tokens must be Long and lengths Long[{tokens.shape[0]}], got {tokens.dtype} and "
                             f"{tuple(lengths.shape)}")

    def forward(self, batch: dict, generator: torch.Generator | None = None, *,
                masks: tuple[torch.Tensor, torch.Tensor] | None = None) -> ObjectiveOutput:
        """masks: (image Bool[B, L], text Bool[B, T]) in place of drawn ones."""
        self.check(batch)
        images, tokens, lengths = batch["images"], batch["tokens"], batch["lengths"]
        image_mask, text_mask = self.draw_masks(lengths, generator) if masks is None else masks
        image_loss, _, out = self.mae.reconstruction(images, image_mask)
        places, valid = padded_rows(text_mask.cpu())  # hidden words first, [B, M]
        places, valid = places.to(tokens.device), valid.to(tokens.device)
        shown = tokens.masked_fill(text_mask.to(tokens.device), self.cfg.vocab_size)
        logits = self.text_decoder(out.encoded.tokens, shown, lengths, places).float()  # [B, M, V]
        truth = tokens.gather(1, places)
        ce = F.cross_entropy(logits.flatten(0, 1), truth.flatten(), reduction="none").view_as(truth)
        text_loss = masked_mean(ce, valid)
        text_acc = masked_mean((logits.argmax(-1) == truth).float(), valid)
        loss = image_loss + self.text_weight * text_loss
        return ObjectiveOutput(loss, {"loss": loss.detach(), "image": image_loss.detach(), "text": text_loss.detach(),
                                      "text_acc": text_acc.detach(),
                                      "hidden_words": as_metric(valid.float().sum(1).mean(), loss)})

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Float[B, C, H, W] -> Float[B, L, D]: every patch visible, no text."""
        return self.mae.features(images)


def mae_config(cfg: ImageTextConfig, decoder_dim: int, decoder_depth: int, decoder_heads: int) -> MAEConfig:
    """The image half of an image-text config as an MAE (no class token: features are patch tokens)."""
    return MAEConfig(image_size=(cfg.image_size, cfg.image_size), channels=cfg.channels, patch=cfg.patch,
                     dim=cfg.dim, depth=cfg.depth, heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, decoder_dim=decoder_dim,
                     decoder_depth=decoder_depth, decoder_heads=decoder_heads, cls_token=False)
