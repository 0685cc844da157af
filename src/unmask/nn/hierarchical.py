"""The SMITH encoder (Yang et al. 2020, "Beyond 512 Tokens: Siamese Multi-depth Transformer-based
Hierarchical Encoder for Long-Form Document Matching", arXiv:2004.12297): a block-level Transformer
reads each sentence block on its own, and a document-level Transformer reads the blocks' embeddings,
so attention costs K * L^2 + K^2 instead of (K * L)^2 for K blocks of L tokens.

As in SMITH's reference code, a block's embedding is its leading [CLS] output through a dense ReLU
layer, L2-normalised; the document encoder adds a learned position per block. `hide` (Bool[B, K])
replaces whole block embeddings by one learned mask embedding before the document encoder, so the
hidden blocks' contents never reach it (masked sentence block prediction, objectives/smith.py).

Input: tokens Long[B, K, L], -1 = padding (a document is 1 to K blocks, a block 0 to L tokens);
data ids 0..V-1 and the word mask id V.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .heads import LogitsHead
from .transformer import Transformer, init_weights


@dataclass(frozen=True)
class HierarchicalConfig:
    vocab_size: int
    block_length: int  # L, tokens per block (the [CLS] slot comes on top)
    blocks: int  # K, blocks per document
    dim: int = 64
    block_depth: int = 2
    doc_depth: int = 2
    heads: int = 4
    mlp_ratio: float = 4.0

    def __post_init__(self):
        for name in ("vocab_size", "block_length", "blocks", "dim", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)


class Encoded(NamedTuple):
    tokens: torch.Tensor  # [B, K, L, D] block encoder outputs at the tokens (without [CLS])
    blocks: torch.Tensor  # [B, K, D] block embeddings, unit norm, as they were before any hiding
    document: torch.Tensor  # [B, K, D] document encoder outputs, one per block
    block_valid: torch.Tensor  # Bool[B, K]: the block holds at least one token
    token_valid: torch.Tensor  # Bool[B, K, L]


class HierarchicalEncoder(nn.Module):
    def __init__(self, config: HierarchicalConfig):
        super().__init__()
        c = config
        self.config = c
        self.mask_id = c.vocab_size
        self.token_embed = nn.Embedding(c.vocab_size + 1, c.dim)  # + the word mask id
        self.cls = nn.Parameter(torch.zeros(c.dim))
        self.token_pos = nn.Parameter(torch.zeros(c.block_length + 1, c.dim))
        self.block_encoder = Transformer(c.dim, c.block_depth, c.heads, c.mlp_ratio)
        self.block_proj = nn.Linear(c.dim, c.dim)
        self.block_pos = nn.Parameter(torch.zeros(c.blocks, c.dim))
        self.block_mask = nn.Parameter(torch.zeros(c.dim))  # SMITH's masked sentence embedding
        self.doc_encoder = Transformer(c.dim, c.doc_depth, c.heads, c.mlp_ratio)
        self.head = LogitsHead(c.dim, c.vocab_size)
        init_weights(self)
        for p in (self.cls, self.token_pos, self.block_pos, self.block_mask):
            nn.init.trunc_normal_(p, std=0.02)

    def check(self, tokens: torch.Tensor) -> None:
        c = self.config
        if tokens.ndim != 3 or tokens.shape[1:] != (c.blocks, c.block_length):
            raise ValueError(f"tokens must be [B, {c.blocks}, {c.block_length}], got {tuple(tokens.shape)}")

    def encode_blocks(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens: Long[B, K, L] -> (token outputs [B, K, L, D], block embeddings [B, K, D])."""
        self.check(tokens)
        b, k, n = tokens.shape
        valid = tokens >= 0
        x = self.token_embed(tokens.clamp(min=0).view(b * k, n))  # [BK, L, D]
        x = torch.cat([self.cls.expand(b * k, 1, -1), x], 1) + self.token_pos  # [BK, L + 1, D]
        keys = torch.cat([valid.new_ones(b * k, 1), valid.view(b * k, n)], 1)  # [CLS] keeps a row never empty
        h = self.block_encoder(x, keys[:, None, None, :])  # [BK, L + 1, D]
        emb = F.normalize(F.relu(self.block_proj(h[:, 0])), dim=-1)  # [BK, D]
        return h[:, 1:].view(b, k, n, -1), emb.view(b, k, -1)

    def encode_document(self, blocks: torch.Tensor, block_valid: torch.Tensor,
                        hide: torch.Tensor | None = None) -> torch.Tensor:
        """blocks: [B, K, D], block_valid: Bool[B, K] (the first block of each row valid), hide:
        Bool[B, K] or None (blocks whose embedding becomes the mask embedding) -> [B, K, D]."""
        if hide is not None:
            blocks = torch.where(hide[..., None], self.block_mask, blocks)
        keys = block_valid.clone()
        keys[:, 0] = True  # an all-padding row (never given) must not leave softmax without keys
        return self.doc_encoder(blocks + self.block_pos, keys[:, None, None, :])

    def forward(self, tokens: torch.Tensor, hide: torch.Tensor | None = None) -> Encoded:
        """tokens: Long[B, K, L] (-1 padding, V at hidden words); hide: Bool[B, K] or None."""
        token_valid = tokens >= 0
        block_valid = token_valid.any(-1)
        words, blocks = self.encode_blocks(tokens)
        document = self.encode_document(blocks, block_valid, hide)
        return Encoded(words, blocks, document, block_valid, token_valid)

    @torch.no_grad()
    def embed(self, tokens: torch.Tensor, batch: int = 64) -> dict[str, torch.Tensor]:
        """Document embeddings for matching, nothing hidden: {"document": mean of the document
        encoder's outputs over the real blocks, "tokens": mean of the block encoder's token outputs
        over the real tokens}, each Float[B, D]."""
        out: dict[str, list] = {"document": [], "tokens": []}
        for chunk in tokens.split(batch):
            e = self(chunk)
            bv = e.block_valid[..., None].float()  # [b, K, 1]
            tv = e.token_valid[..., None].float()  # [b, K, L, 1]
            out["document"].append((e.document * bv).sum(1) / bv.sum(1).clamp(min=1))
            out["tokens"].append((e.tokens * tv).sum((1, 2)) / tv.sum((1, 2)).clamp(min=1))
        return {k: torch.cat(v) for k, v in out.items()}
