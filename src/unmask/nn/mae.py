"""The masked autoencoder's networks (MAE, He et al. 2022): an asymmetric encoder-decoder in which
the encoder reads only the visible patches and a light decoder, with its own width, depth and
sin-cos positions, fills mask tokens in at the hidden places and predicts their pixels.

Two ways to hide (DESIGN, "Networks"): `hide="drop"` (MAE: compute grows with the visible tokens
only) and `hide="replace"` (SimMIM, BEiT: every patch enters, the hidden ones as a learned mask
embedding). The mask comes from a masker (`Bool[B, L]`, True = hidden, same count per row); it is
never drawn inside `forward`, so nothing is masked by accident at inference.

    MaskedEncoder   images [B, C, H, W], mask [B, L] -> Encoded(tokens [B, P + K, D], index)
    MAEDecoder      Encoded -> predictions [B, M, p*p*C] at the M hidden places (ids_hidden order)
P is 1 with a class token (prepended after masking, never hidden) and 0 without; K visible tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn

from ..layout import Layout
from .embedding import sincos_nd
from .patch import PatchEmbed, patch_layout, patchify
from .transformer import Transformer
from .visible import VisibleIndex, gather_tokens, restore, split_visible

HIDE_MODES = ("drop", "replace")


@dataclass(frozen=True)
class MAEConfig:
    image_size: tuple[int, int] = (8, 8)  # (H, W)
    channels: int = 1
    patch: int = 2
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    decoder_dim: int = 64
    decoder_depth: int = 2
    decoder_heads: int = 4
    decoder_mlp_ratio: float = 4.0
    cls_token: bool = True
    hide: str = "drop"

    def __post_init__(self):
        h, w = self.image_size
        if self.patch < 1 or h % self.patch or w % self.patch:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch={self.patch}")
        if self.hide not in HIDE_MODES:
            raise ValueError(f"hide must be one of {HIDE_MODES}, got {self.hide!r}")
        for name in ("dim", "depth", "heads", "decoder_dim", "decoder_heads", "channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.decoder_depth < 0:
            raise ValueError(f"decoder_depth must be >= 0, got {self.decoder_depth}")

    @property
    def grid(self) -> tuple[int, int]:
        return self.image_size[0] // self.patch, self.image_size[1] // self.patch

    @property
    def layout(self) -> Layout:
        return patch_layout(*self.image_size, self.patch)

    @property
    def patch_dim(self) -> int:
        return self.patch * self.patch * self.channels

    def to_dict(self) -> dict:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        return d

    @staticmethod
    def from_dict(d: dict) -> MAEConfig:
        return MAEConfig(**{**d, "image_size": tuple(d["image_size"])})


class Encoded(NamedTuple):
    tokens: torch.Tensor  # [B, P + K, D] (drop) or [B, P + L, D] (replace)
    index: VisibleIndex
    layers: list[torch.Tensor] | None = None  # each block's output (before the final norm), if asked


class MaskedEncoder(nn.Module):
    """Patch embedding, fixed 2-D sin-cos positions, optional class token, then the Transformer."""

    def __init__(self, cfg: MAEConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = PatchEmbed(cfg.channels, cfg.patch, cfg.dim)
        self.register_buffer("pos", sincos_nd(cfg.grid, cfg.dim).unsqueeze(0), persistent=False)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.dim)) if cfg.cls_token else None
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dim)) if cfg.hide == "replace" else None
        self.transformer = Transformer(cfg.dim, cfg.depth, cfg.heads, cfg.mlp_ratio)

    @property
    def prefix(self) -> int:
        return 1 if self.cls is not None else 0

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None, *,
                cond: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                return_layers: bool = False) -> Encoded:
        """images: Float[B, C, H, W]; mask: Bool[B, L] (None: all visible); cond: optional
        Float[B, D] added to every token (a time embedding); attn_mask as in `Transformer`."""
        patches = patchify(images, self.cfg.patch)  # [B, L, p*p*C]
        b, n, _ = patches.shape
        if mask is None:
            mask = torch.zeros(b, n, dtype=torch.bool, device=images.device)
        if mask.shape != (b, n):
            raise ValueError(f"mask must be [{b}, {n}] for these images, got {tuple(mask.shape)}")
        mask = mask.to(images.device)
        index = split_visible(mask)
        if self.mask_token is None:  # drop: embed and encode the visible patches only
            x = self.embed(gather_tokens(patches, index.ids_keep)) + self.pos[0][index.ids_keep]
        else:
            x = self.embed(patches)
            x = torch.where(mask.unsqueeze(-1), self.mask_token.to(x.dtype), x) + self.pos
        if cond is not None:
            x = x + cond.unsqueeze(1)
        if self.cls is not None:
            x = torch.cat([self.cls.expand(b, -1, -1), x], dim=1)  # its position is zero, as in MAE
        layers: list[torch.Tensor] = []
        hooks = [blk.register_forward_hook(lambda m, i, o: layers.append(o))
                 for blk in self.transformer.blocks] if return_layers else []
        try:
            out = self.transformer(x, attn_mask)
        finally:
            for h in hooks:
                h.remove()
        return Encoded(out, index, layers if return_layers else None)


class MAEDecoder(nn.Module):
    """Encoder tokens -> predictions at the hidden places (or at `targets`), `out_dim` per token."""

    def __init__(self, cfg: MAEConfig, out_dim: int | None = None, depth: int | None = None):
        super().__init__()
        self.cfg = cfg
        dim = cfg.decoder_dim
        self.prefix = 1 if cfg.cls_token else 0
        self.embed = nn.Linear(cfg.dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos", sincos_nd(cfg.grid, dim).unsqueeze(0), persistent=False)
        self.transformer = Transformer(dim, cfg.decoder_depth if depth is None else depth,
                                       cfg.decoder_heads, cfg.decoder_mlp_ratio)
        self.head = nn.Linear(dim, out_dim or cfg.patch_dim)

    def forward(self, encoded: Encoded, targets: torch.Tensor | None = None, *,
                every: bool = False) -> torch.Tensor:
        """Returns [B, M, out_dim] at `index.ids_hidden` (M = L - K); [B, L, out_dim] at every place
        in order with `every`; or [B, T, out_dim] at `targets: Long[B, T]`.

        With `targets` (drop mode only) the decoder reads the visible tokens and mask tokens at the
        T target places only (SelectiveMAE); otherwise every place, in order, as in MAE."""
        tokens, index = encoded.tokens, encoded.index
        x = self.embed(tokens)
        head, body = x[:, : self.prefix], x[:, self.prefix :]
        dropped = body.shape[1] == index.keep
        if targets is None:
            if dropped:
                body = restore(body, self.mask_token.to(body.dtype), index)
            h = self.transformer(torch.cat([head, body + self.pos], dim=1))[:, self.prefix :]
            return self.head(h if every else gather_tokens(h, index.ids_hidden))
        if not dropped:
            raise ValueError("decoding a subset of targets needs a drop-hidden encoder")
        visible = body + self.pos[0][index.ids_keep]
        queries = self.mask_token + self.pos[0][targets]
        h = self.transformer(torch.cat([head, visible, queries], dim=1))
        return self.head(h[:, -targets.shape[1] :])


def init_mae(module: nn.Module) -> None:
    """MAE's initialisation: xavier-uniform linears (the patch embedding included), zero biases,
    unit LayerNorms, class and mask tokens N(0, 0.02)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for name, p in module.named_parameters():
        if name.endswith("cls") or name.endswith("mask_token"):
            nn.init.normal_(p, std=0.02)


class MAEOutput(NamedTuple):
    pred: torch.Tensor  # [B, M, p*p*C] at index.ids_hidden
    encoded: Encoded


class MaskedAutoencoder(nn.Module):
    """MAE: `model(images, mask) -> MAEOutput`; `model.features(images)` for probes."""

    def __init__(self, cfg: MAEConfig):
        super().__init__()
        self.config = cfg
        self.encoder = MaskedEncoder(cfg)
        self.decoder = MAEDecoder(cfg)
        init_mae(self)

    @property
    def layout(self) -> Layout:
        return self.config.layout

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> MAEOutput:
        encoded = self.encoder(images, mask)
        return MAEOutput(self.decoder(encoded), encoded)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Float[B, C, H, W] -> Float[B, L, D]: every patch visible, class token left out."""
        return self.encoder(images).tokens[:, self.encoder.prefix :]
