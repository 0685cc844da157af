"""Attention whose queries come from one stream and keys and values from another, with the weights
of an existing self-attention layer. Two users: DeBERTa's enhanced mask decoder (queries carry
absolute positions, keys and values are the encoder's states), and computing a last layer only at the
positions a loss reads (queries = the hidden positions, keys and values = every position).
"""

from __future__ import annotations

import torch

from .transformer import Attention


def query_attention(attn: Attention, queries: torch.Tensor, context: torch.Tensor,
                    attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """queries: [B, M, D], context: [B, N, D] -> [B, M, D], with `attn`'s q, k, v and output weights
    (`Attention.attend`). With queries == context this equals `attn(context)`."""
    return attn.attend(queries, context, attn_mask)
