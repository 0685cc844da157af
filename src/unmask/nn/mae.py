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
from .patch import PatchEmbed, patch_layout, patchify, patchify_video
from .transformer import Transformer
from .visible import VisibleIndex, gather_tokens, restore, split_visible

HIDE_MODES = ("drop", "replace")


@dataclass(frozen=True)
class MAEConfig:
    """`image_size` is (H, W) for images, (T, H, W) for videos (tubelets of `tubelet` frames x
    `patch` x `patch`), or (G,) for inputs that arrive already as G tokens (point groups: `patch`
    must be 1, the caller embeds them through `MaskedEncoder.encode`)."""

    image_size: tuple[int, ...] = (8, 8)
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
    tubelet: int = 1

    def __post_init__(self):
        size = tuple(self.image_size)
        if len(size) not in (1, 2, 3) or any(s < 1 for s in size):
            raise ValueError(f"image_size must be (G,), (H, W) or (T, H, W) of positive sizes, got {size}")
        if len(size) == 1 and self.patch != 1:
            raise ValueError(f"token inputs (image_size={size}) take patch=1, got {self.patch}")
        if self.patch < 1 or any(s % self.patch for s in size[-2:]):
            raise ValueError(f"image_size {size} is not divisible by patch={self.patch}")
        if self.tubelet < 1 or (len(size) == 3 and size[0] % self.tubelet) or (len(size) < 3 and self.tubelet != 1):
            raise ValueError(f"tubelet={self.tubelet} must divide the frames of a (T, H, W) image_size, "
                             f"and be 1 otherwise (image_size {size})")
        if self.hide not in HIDE_MODES:
            raise ValueError(f"hide must be one of {HIDE_MODES}, got {self.hide!r}")
        for name in ("dim", "depth", "heads", "decoder_dim", "decoder_heads", "channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.decoder_depth < 0:
            raise ValueError(f"decoder_depth must be >= 0, got {self.decoder_depth}")

    @property
    def grid(self) -> tuple[int, ...]:
        """The token grid: (G,), (H/p, W/p) or (T/t, H/p, W/p)."""
        size = tuple(self.image_size)
        if len(size) == 1:
            return size
        spatial = (size[-2] // self.patch, size[-1] // self.patch)
        return spatial if len(size) == 2 else (size[0] // self.tubelet, *spatial)

    @property
    def layout(self) -> Layout:
        grid = self.grid
        if len(grid) == 1:
            return Layout.seq(grid[0], name="tokens")
        if len(grid) == 3:
            return Layout.video(*grid, name="tubelets")
        return patch_layout(*self.image_size, self.patch)

    @property
    def patch_dim(self) -> int:
        """Values per token: p*p*C for images, t*p*p*C for videos, C for token inputs."""
        if len(self.image_size) == 1:
            return self.channels
        return self.tubelet * self.patch * self.patch * self.channels

    def patchify(self, inputs: torch.Tensor) -> torch.Tensor:
        """Images [B, C, H, W] or videos [B, C, T, H, W] -> raw tokens [B, L, patch_dim]; these
        are also the pixel targets."""
        if len(self.image_size) == 1:
            raise ValueError("token inputs (image_size=(G,)) are embedded by the caller: use MaskedEncoder.encode")
        if len(self.image_size) == 3:
            return patchify_video(inputs, self.patch, self.tubelet)
        return patchify(inputs, self.patch)

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
    """Patch embedding, fixed sin-cos positions, optional class token, then the Transformer.

    `forward` reads images; `encode` reads raw tokens of any modality (`[B, L, *F]`, embedded by
    `embed`), with positions shared (`[1, L, D]`, the default buffer) or per example (`[B, L, D]`,
    e.g. point-group centres), so video and point clouds reuse the same masking path."""

    def __init__(self, cfg: MAEConfig, embed: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.embed = embed if embed is not None else PatchEmbed(cfg.patch_dim, cfg.dim)
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
        """images: Float[B, C, H, W] (videos [B, C, T, H, W]); mask: Bool[B, L] (None: all visible);
        cond: optional Float[B, D] added to every token (a time embedding); attn_mask as in
        `Transformer`."""
        patches = self.cfg.patchify(images)  # [B, L, patch_dim]
        return self.encode(patches, mask, cond=cond, attn_mask=attn_mask, return_layers=return_layers)

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor | None = None, *, pos: torch.Tensor | None = None,
               cond: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
               return_layers: bool = False) -> Encoded:
        """tokens: Float[B, L, *F] raw tokens for `embed`; pos: Float[1 or B, L, D] (default: the
        fixed grid positions); the rest as in `forward`. The mask may live in host memory, where the
        masker draws it: its index is built there without waiting for the device (`nn/visible.py`)."""
        b, n = tokens.shape[:2]
        pos = self.pos if pos is None else pos
        if pos.shape[1] != n:
            raise ValueError(f"{n} tokens but {pos.shape[1]} positions")
        if mask is None:
            mask = torch.zeros(b, n, dtype=torch.bool)  # in host memory, like a masker's
        if mask.shape != (b, n):
            raise ValueError(f"mask must be [{b}, {n}] for these inputs, got {tuple(mask.shape)}")
        index = split_visible(mask).to(tokens.device)
        mask = mask.to(tokens.device, non_blocking=True)
        if self.mask_token is None:  # drop: embed and encode the visible tokens only
            x = self.embed(gather_tokens(tokens, index.ids_keep)) + gather_tokens(pos, index.ids_keep)
        else:
            x = self.embed(tokens)
            x = torch.where(mask.unsqueeze(-1), self.mask_token.to(x.dtype), x) + pos
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
                every: bool = False, pos: torch.Tensor | None = None) -> torch.Tensor:
        """Returns [B, M, out_dim] at `index.ids_hidden` (M = L - K); [B, L, out_dim] at every place
        in order with `every`; or [B, T, out_dim] at `targets: Long[B, T]`. `pos`: Float[1 or B,
        L, decoder_dim] positions in place of the fixed grid ones (per-example positions).

        With `targets` (drop mode only) the decoder reads the visible tokens and mask tokens at the
        T target places only (SelectiveMAE, VideoMAE V2's decoder masking); otherwise every place,
        as in MAE: in drop mode as [class, visible, hidden] (equal to MAE's grid order, attention
        being order-free, and cheaper), in replace mode and with `every` in grid order."""
        tokens, index = encoded.tokens, encoded.index
        pos = self.pos if pos is None else pos
        x = self.embed(tokens)
        head, body = x[:, : self.prefix], x[:, self.prefix :]
        dropped = body.shape[1] == index.keep
        if targets is None and (every or not dropped):
            if dropped:
                body = restore(body, self.mask_token.to(body.dtype), index)
            x = torch.cat([head, body + pos], dim=1)
            if every:
                return self.head(self.transformer(x)[:, self.prefix :])
            return self.head(self.transformer(x, only=index.ids_hidden + self.prefix))  # last block at hidden only
        if not dropped:
            raise ValueError("decoding a subset of targets needs a drop-hidden encoder")
        # Attention has no order, so the decoder reads [class, visible, queries] rather than the grid
        # order: the same predictions, with no scatter back into place and the queries a slice.
        targets = index.ids_hidden if targets is None else targets
        visible = body + gather_tokens(pos, index.ids_keep)
        queries = self.mask_token.to(body.dtype) + gather_tokens(pos, targets)
        x = torch.cat([head, visible, queries], dim=1)
        return self.head(self.transformer(x, only=slice(x.shape[1] - targets.shape[1], None)))


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
