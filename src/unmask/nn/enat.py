"""ENAT's network (Ni et al. 2024, "ENAT: Rethinking Spatial-temporal Interactions in Token-based Image
Synthesis", arXiv:2411.06959, P20): visible tokens are encoded alone, mask tokens are decoded on them,
and from one decoding step to the next only the critical tokens, the newly revealed ones, are
encoded again, beside the previous step's features of the others.

Spatially: the encoder reads the visible tokens only (no mask token ever enters it, drop-style hiding
as MAE's encoder); the decoder's queries are mask tokens at the hidden places, and each decoder block
attends to [encoded visible ; mask tokens]. Temporally, given `prev` (an earlier read's tokens and
features): a visible token whose id is unchanged since `prev` is not encoded again. Its feature
from then, through a residual LayerNorm + MLP (`PrevProjection`, ENAT's `PrevProj`), is context that
every encoder block of the new tokens attends to besides them, and it is the token's decoder context.

As in ENAT's code (LeapLabTHU/ENAT, `libs/models.py`), the context part of every block's attention has
its own LayerNorm, the token + position embedding is layer-normalised (its `BertEmbeddings`), and each
block's two residual branches are scaled by per-channel gates that start at zero (adaLN-Zero's gates,
as DiT), so every block starts as the identity. The gates matter: without them the encoder, whose
output the decoder reads only through LayerNorms, grew one direction shared by every visible token
while the decoder learned the per-place marginals (the first ~50 steps on digits), until after the
LayerNorm the context was one vector (per-token spread 0.06 of norm 7.4), the gradient into the encoder
had shrunk with its growing norm, and the trained decoder ignored the visible tokens (its predictions
moved by 0.002 in total variation when the visible pixels were swapped for another digit's, 0.25 for
the MaskGIT network). The embedding LayerNorm alone did not prevent it; with the gates it helped.
Left out: adaLN class conditioning (the class is a token of the layout here, so the gates are learned
vectors, not functions of the class) and the multiway K/V projections (one qkv projection serves
context and queries). One change: `features` keep each token's feature from the read that encoded it,
so a reused feature is projected once; ENAT's code stores the projected feature and projects it
again at every later step.

Rows may hide different counts: each part is padded to the longest row and the padding is masked out
of every attention's keys (a padded query attends to itself, so no row is ever empty).

    ENATModel.read(tokens [B, N], where=None, prev=None) -> ENATRead(logits, features, encoded)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from ..layout import Layout
from .embedding import Embedding
from .heads import LogitsHead
from .masked_model import disallowed_ids
from .transformer import Attention, init_weights
from .visible import gather_tokens, padded_rows


@dataclass(frozen=True)
class ENATConfig:
    vocab_size: int
    layout: Layout
    dim: int = 64
    encoder_depth: int = 4
    decoder_depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0
    positions: str = "learned"
    # data ids allowed per segment, [lo, hi): logits outside are -inf (as ModelConfig.segment_vocab)
    segment_vocab: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("vocab_size", "dim", "heads", "encoder_depth", "decoder_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"ENATConfig.{name} must be >= 1, got {getattr(self, name)}")


class Previous(NamedTuple):
    """What a read leaves for the next one: the tokens it read (Long[B, N]) and its features
    (Float[B, N, D]; at visible places the encoder's, the ones a later read reuses)."""

    tokens: torch.Tensor
    features: torch.Tensor


class ENATRead(NamedTuple):
    logits: torch.Tensor  # Float[B, N, V], or [M, V] at the M places of `where`
    features: torch.Tensor  # Float[B, N, D], before the final LayerNorm
    encoded: torch.Tensor  # Bool[B, N]: the places the encoder read (visible and not reused)


class ContextBlock(nn.Module):
    """Pre-norm block: queries x [B, M, D] attend to [context ; x] (context [B, C, D] under its own
    LayerNorm, ENAT's `norm1_`), or to x alone; then an MLP on x. Each branch is scaled per channel
    by a gate that starts at zero (ENAT's `gate_msa`, `gate_mlp`), so the block starts as the identity."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.norm_context = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.gate_attn = nn.Parameter(torch.zeros(dim))
        self.gate_mlp = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None, attn_mask: torch.Tensor | None) -> torch.Tensor:
        h = self.norm1(x)
        keys = h if context is None else torch.cat([self.norm_context(context), h], 1)
        x = x + self.gate_attn * self.attn.attend(h, keys, attn_mask)
        return x + self.gate_mlp * self.mlp(self.norm2(x))


class PrevProjection(nn.Module):
    """ENAT's `PrevProj`: f + MLP(LayerNorm(f)), the previous step's features made context."""

    def __init__(self, dim: int, mlp_ratio: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return f + self.mlp(self.norm(f))


def key_mask(context_valid: torch.Tensor, query_valid: torch.Tensor) -> torch.Tensor | None:
    """Bool[B, 1, M, C + M] (True = may attend) for queries [B, M] over [context ; queries]: real keys,
    and each query itself, so a padded query never attends to nothing. None when nothing is padded."""
    keys = torch.cat([context_valid, query_valid], 1)  # [B, C + M]
    if bool(keys.all()):  # host tensors: the read waits for nothing
        return None
    b, m = query_valid.shape
    c = context_valid.shape[1]
    allow = keys[:, None, :].expand(b, m, c + m).clone()
    allow[:, torch.arange(m), c + torch.arange(m)] = True
    return allow[:, None]


class ENATModel(nn.Module):
    """A denoiser, `model(tokens) -> logits [B, N, V]` (mask id V at hidden places), whose encoder reads
    only the visible tokens; `read` also returns the features a later read can reuse."""

    def __init__(self, config: ENATConfig):
        super().__init__()
        self.config = config
        self.mask_id = config.vocab_size
        d = config.dim
        self.embed = Embedding(config.vocab_size, d, config.layout, config.positions)
        self.embed_norm = nn.LayerNorm(d)  # ENAT's BertEmbeddings: tokens start at unit scale, apart
        self.encoder = nn.ModuleList(ContextBlock(d, config.heads, config.mlp_ratio)
                                     for _ in range(config.encoder_depth))
        self.decoder = nn.ModuleList(ContextBlock(d, config.heads, config.mlp_ratio)
                                     for _ in range(config.decoder_depth))
        self.prev_projection = PrevProjection(d, config.mlp_ratio)
        self.norm = nn.LayerNorm(d)
        self.head = LogitsHead(d, config.vocab_size)
        self.register_buffer("disallowed", disallowed_ids(config.layout, config.vocab_size, config.segment_vocab),
                             persistent=False)
        init_weights(self)

    def forward(self, tokens: torch.Tensor, where: torch.Tensor | None = None,
                prev: Previous | None = None) -> torch.Tensor:
        """tokens: Long[B, N] -> logits Float[B, N, V], or [M, V] at the M True places of `where`."""
        return self.read(tokens, where, prev).logits

    def read(self, tokens: torch.Tensor, where: torch.Tensor | None = None,
             prev: Previous | None = None) -> ENATRead:
        """tokens: Long[B, N], mask id V at hidden places; where: Bool[B, N] or None; prev: an earlier
        read's `Previous`, whose features are reused at the visible places whose token it shares."""
        b, n = tokens.shape
        x = self.embed_norm(self.embed(tokens))  # [B, N, D]; at hidden places mask embeddings, for the decoder only
        visible = tokens != self.mask_id
        reused = torch.zeros_like(visible) if prev is None else visible & (prev.tokens == tokens)
        new = visible & ~reused

        # encoder: the new visible tokens, beside the projected features of the reused ones
        new_at, new_valid = padded_rows(new)  # [B, K]
        old_at, old_valid = padded_rows(reused)  # [B, C]
        context = self.prev_projection(gather_tokens(prev.features, old_at)) if old_at.shape[1] else None
        h = gather_tokens(x, new_at)
        if h.shape[1]:
            mask = key_mask(old_valid, new_valid)
            for block in self.encoder:
                h = block(h, context, mask)
        encoded_or_reused = x.new_zeros(b, n, x.shape[-1])  # what the decoder and head see at visible places
        encoded_or_reused[new] = h[new_valid]
        if context is not None:
            encoded_or_reused[reused] = context[old_valid]

        # decoder: mask tokens at the hidden places attend to [visible ; mask tokens]
        hid_at, hid_valid = padded_rows(~visible)  # [B, H]
        out = encoded_or_reused.clone()
        if hid_at.shape[1]:
            vis_at, vis_valid = padded_rows(visible)
            seen = gather_tokens(encoded_or_reused, vis_at)
            q = gather_tokens(x, hid_at)
            mask = key_mask(vis_valid, hid_valid)
            for block in self.decoder:
                q = block(q, seen, mask)
            out[~visible] = q[hid_valid]

        features = out if prev is None else torch.where(reused[..., None], prev.features, out)
        if where is None:
            logits = self.head(self.norm(out)).masked_fill(self.disallowed, float("-inf"))
        else:
            where = where.to(tokens.device)
            logits = self.head(self.norm(out[where])).masked_fill(self.disallowed.expand(b, -1, -1)[where],
                                                                  float("-inf"))
        return ENATRead(logits, features, new)
