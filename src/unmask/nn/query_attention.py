"""Attention whose queries come from one stream and keys and values from another, with the weights
of an existing self-attention layer. Two users: DeBERTa's enhanced mask decoder (queries carry
absolute positions, keys and values are the encoder's states), and computing a last layer only at the
positions a loss reads (queries = the hidden positions, keys and values = every position).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .transformer import Attention


def query_attention(attn: Attention, queries: torch.Tensor, context: torch.Tensor,
                    attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """queries: [B, M, D], context: [B, N, D] -> [B, M, D], with `attn`'s q, k, v and output weights.

    With queries == context this equals `attn(context)`.
    """
    b, m, d = queries.shape
    n = context.shape[1]
    h = attn.heads
    w, bias = attn.qkv.weight, attn.qkv.bias
    q = F.linear(queries, w[:d], bias[:d]).view(b, m, h, d // h).transpose(1, 2)  # [B, H, M, D/H]
    kv = F.linear(context, w[d:], bias[d:]).view(b, n, 2, h, d // h).permute(2, 0, 3, 1, 4)  # 2 x [B, H, N, D/H]
    y = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=attn_mask)
    return attn.proj(y.transpose(1, 2).reshape(b, m, d))
