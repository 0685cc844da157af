"""The autoregressive baseline on the same network: `MaskedTokenModel` with a causal attention mask
(token i attends to tokens 0..i), so it has exactly the parameters of the bidirectional model and
differs only in what each position may see. Logits at position i are read as p(x_{i+1} | x_{<=i})
by `objectives/autoregressive.py`.
"""

from __future__ import annotations

import torch

from .masked_model import MaskedTokenModel


class CausalTokenModel(MaskedTokenModel):
    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: Long[B, N] -> Float[B, N, D]; position i sees positions <= i only."""
        n = tokens.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril()  # True = may attend
        return self.encoder(self.embed(tokens), attn_mask=causal)

    def forward(self, tokens: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        """tokens: Long[B, n], any prefix length n <= N -> logits [B, n, V] (or [M, V] at `where`)."""
        logits = self.head(self.features(tokens), where)
        if not self.config.segment_vocab:
            return logits
        banned = self.disallowed[: tokens.shape[1]].expand(tokens.shape[0], -1, -1)
        banned = banned[where] if where is not None else banned
        return logits.masked_fill(banned, float("-inf"))
