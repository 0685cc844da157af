"""Output heads that compute logits only where they are needed (Long-VITA's masked LM head, P55):
with 15% of tokens hidden, the vocabulary projection costs 15% of the full one."""

from __future__ import annotations

import torch
from torch import nn


class LogitsHead(nn.Module):
    """h: [B, N, D] -> logits [B, N, V], or [M, V] at the M positions where `where` is True."""

    def __init__(self, dim: int, vocab_size: int):
        super().__init__()
        self.proj = nn.Linear(dim, vocab_size)

    def forward(self, h: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        if where is not None:
            h = h[where]
        return self.proj(h)
