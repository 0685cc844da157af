"""The network of Uni-3DAR's masked next-token prediction (Lu et al. 2025, arXiv:2503.16278;
`objectives/octree_ar.py` trains it, `sampling/octree.py` samples it): octree tokens with their kind,
level and cell centre embedded, a Transformer under one of two attention masks, and a head over the
token ids that each position's kind allows.

Inputs per token: token embedding (the mask id for queries) + kind embedding + level embedding + a
linear map of Fourier features of the cell centre in the unit cube.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import option, validate
from ..data.octree import KINDS
from ..data.structures import OctreeGeometry
from .transformer import Transformer, init_weights


@dataclass(frozen=True)
class OctreeARConfig:
    dim: int = option(64, lo=8, help="width")
    layers: int = option(3, lo=1, help="Transformer blocks")
    heads: int = option(4, lo=1, help="attention heads")
    frequencies: int = option(6, lo=1, help="Fourier frequencies per axis of the cell centre")
    masked: bool = option(True, help="masked next-token prediction (Uni-3DAR); False: plain next-token baseline")


def causal_mask(n: int, device=None) -> torch.Tensor:
    """Bool[n, n], True = may attend: position i sees positions 0..i."""
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


def masked_next_token_mask(t: int, device=None) -> torch.Tensor:
    """Bool[2t, 2t] for the interleaved layout (2i = mask i, 2i + 1 = real i), True = may attend:
    mask i sees real tokens 0..i-1 and itself; real token i sees real tokens 0..i."""
    q = torch.arange(2 * t, device=device)
    k = q.unsqueeze(0)
    real_key = (k % 2 == 1) & ((k - 1) // 2 < (q.unsqueeze(1) + 1) // 2)  # real j visible when j < ceil(q / 2)
    return real_key | (k == q.unsqueeze(1))


class OctreeTransformer(nn.Module):
    """Token, kind, level and cell-centre embeddings, the Transformer, and a head over the V ids.
    tokens, kind, level: Long[B, L]; centre: Float[B, L, 3] -> logits Float[B, L, V] (-inf where the
    row's `logit_kind` does not allow the id)."""

    def __init__(self, geo: OctreeGeometry, cfg: OctreeARConfig):
        super().__init__()
        validate(cfg)
        self.geo, self.cfg = geo, cfg
        self.mask_id = geo.vocab_size
        self.token = nn.Embedding(geo.vocab_size + 1, cfg.dim)
        self.kind = nn.Embedding(len(KINDS), cfg.dim)
        self.level = nn.Embedding(geo.depth + 1, cfg.dim)
        self.position = nn.Linear(6 * cfg.frequencies, cfg.dim)
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(cfg.frequencies).float(), persistent=False)
        self.register_buffer("allowed", geo.allowed(), persistent=False)  # [5, V]
        self.encoder = Transformer(cfg.dim, cfg.layers, cfg.heads)
        self.head = nn.Linear(cfg.dim, geo.vocab_size)
        init_weights(self)

    def embed(self, tokens, kind, level, centre) -> torch.Tensor:
        angles = centre.unsqueeze(-1) * self.freqs  # [B, L, 3, F]
        fourier = torch.cat([angles.sin(), angles.cos()], -1).flatten(-2)  # [B, L, 6F]
        return self.token(tokens) + self.kind(kind) + self.level(level) + self.position(fourier)

    def forward(self, tokens, kind, level, centre, attn_mask, logit_kind, only=None) -> torch.Tensor:
        """logit_kind: Long[B, M], the kind of the token each output predicts (M = L, or the
        positions `only` picks)."""
        h = self.encoder(self.embed(tokens, kind, level, centre), attn_mask, only=only)  # [B, L or M, D]
        logits = self.head(h)
        return logits.masked_fill(~self.allowed[logit_kind], float("-inf"))
