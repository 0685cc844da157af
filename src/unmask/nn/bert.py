"""BERT's own layout of the masked token model (Devlin et al. 2019), for comparisons that must do the
same work as `transformers.BertForMaskedLM`: LayerNorm after the embeddings, post-norm blocks
(x = LN(x + attn(x)); x = LN(x + mlp(x)), no final norm), and the MLM head as a transform (dense,
GELU, LayerNorm) then a projection tied to the token embeddings with its own bias; LayerNorm eps 1e-12.
Weights copy one to one from a BERT checkpoint (`nn/hf.py`, `copy_bert_weights`).

Where it differs from BERT, it does less work for the same result: logits only at the positions
asked for (`where`, Long-VITA's masked head, P55), and, with `prune_last` and the same number of
positions in every row (exact-count masks, given as the masker's mask in host memory, whose counts
are read there without waiting for the device), the last block computes queries, its MLP and its
norms only at those positions, since nothing else reads them. Token-type embeddings are folded into
the position embeddings (one segment), and there is no dropout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layout import Layout
from .embedding import Embedding
from .query_attention import query_attention
from .transformer import Block, init_weights
from .visible import gather_tokens, same_count_rows


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    layout: Layout
    dim: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    eps: float = 1e-12
    prune_last: bool = True

    def __post_init__(self):
        if self.depth < 1 or self.vocab_size < 1:
            raise ValueError(f"need depth >= 1 and vocab_size >= 1, got {self.depth}, {self.vocab_size}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layout"] = self.layout.to_dict()
        return d

    @staticmethod
    def from_dict(d: dict) -> BertConfig:
        return BertConfig(**{**d, "layout": Layout.from_dict(d["layout"])})


def post_norm(block: Block, x: torch.Tensor, queries: torch.Tensor | None = None) -> torch.Tensor:
    """One post-norm block. x: [B, N, D]; with `queries` ([B, M, D], rows of x), only those M
    positions are computed (keys and values still come from all N). Returns [B, N or M, D]."""
    if queries is None:
        x = block.norm1(x + block.attn(x))
    else:
        x = block.norm1(queries + query_attention(block.attn, queries, x))
    return block.norm2(x + block.mlp(x))


class BertMaskedModel(nn.Module):
    """tokens: Long[B, N] in 0..V (V = mask) -> logits [B, N, V], or [M, V] at `where` (Bool[B, N])."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.mask_id = config.vocab_size
        self.embed = Embedding(config.vocab_size, config.dim, config.layout, "learned")
        self.embed_norm = nn.LayerNorm(config.dim, eps=config.eps)
        self.blocks = nn.ModuleList(Block(config.dim, config.heads, config.mlp_ratio) for _ in range(config.depth))
        for block in self.blocks:
            block.norm1.eps = block.norm2.eps = config.eps
        self.transform = nn.Sequential(nn.Linear(config.dim, config.dim), nn.GELU(),
                                       nn.LayerNorm(config.dim, eps=config.eps))
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        init_weights(self)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: Long[B, N] -> Float[B, N, D], the last block's output."""
        x = self.embed_norm(self.embed(tokens))
        for block in self.blocks:
            x = post_norm(block, x)
        return x

    def forward(self, tokens: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed_norm(self.embed(tokens))
        for block in self.blocks[:-1]:
            x = post_norm(block, x)
        last = self.blocks[-1]
        if where is None:
            h = post_norm(last, x)
        else:
            ids = same_count_rows(where) if self.config.prune_last else None  # read on the host only
            if ids is not None:
                d = x.shape[-1]
                queries = gather_tokens(x, ids.to(x.device, non_blocking=True))  # [B, K, D], row-major as h[where]
                h = post_norm(last, x, queries).reshape(-1, d)
            else:
                h = post_norm(last, x)[where.to(x.device, non_blocking=True)]
        return F.linear(self.transform(h), self.embed.tokens.weight[: self.config.vocab_size], self.bias)
