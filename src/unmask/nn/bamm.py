"""BAMM's hybrid attention (Pinyoanuntapong et al. 2024, "BAMM: Bidirectional Autoregressive Motion
Model", arXiv:2403.19435): causal attention with randomly revealed columns, so one network predicts
tokens left to right while reading given tokens anywhere in the sequence.

As exitudio/BAMM's `MaskTransformer.trans_forward`: every query may read the keys at or before it
(causal) and the keys of every revealed token (bidirectional columns); the query of a revealed token
reads only revealed keys. Here input place q holds token q - 1 after a start token (as
`objectives/autoregressive.py`), so the logits at place i are p(token i | tokens before i, revealed
tokens) and a denoiser's logits line up with its canvas: `model(canvas, revealed)` is a denoiser for
`sampling.generate`. The start place is always revealed (BAMM's condition token is too).

    >>> hybrid_attention_mask(torch.tensor([[False, True, False, False]]))[0, 0].int().tolist()
    [[1, 1, 0, 0], [0, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
"""

from __future__ import annotations

import torch

from .masked_model import MaskedTokenModel


def hybrid_attention_mask(revealed: torch.Tensor) -> torch.Tensor:
    """revealed: Bool[B, N] over input places (True = its token is visible to every query).
    Returns Bool[B, 1, N, N], True = query (row) may read key (column)."""
    n = revealed.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool, device=revealed.device).tril()  # [N, N]
    rows = causal & ~revealed[:, :, None]  # a revealed query reads only revealed keys
    return (rows | revealed[:, None, :])[:, None]


class HybridCausalTokenModel(MaskedTokenModel):
    """`MaskedTokenModel` whose attention is BAMM's hybrid mask; same parameters, same config.

    forward(tokens Long[B, N], revealed Bool[B, N] | None) -> logits Float[B, N, V]: logits at i
    predict token i from tokens 0..i-1 and every revealed token (revealed None: plain causal)."""

    def __init__(self, config, bos_id: int | None = None):
        super().__init__(config)
        self.bos_id = self.mask_id if bos_id is None else bos_id

    def shifted(self, tokens: torch.Tensor, revealed: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Input places: (Long[B, N] = [start, tokens[:-1]], Bool[B, N] revealed, the start always)."""
        start = torch.full_like(tokens[:, :1], self.bos_id)
        inputs = torch.cat([start, tokens[:, :-1]], 1)
        if revealed is None:
            revealed = torch.zeros_like(tokens, dtype=torch.bool)
        shown = torch.cat([torch.ones_like(revealed[:, :1]), revealed[:, :-1].to(tokens.device)], 1)
        return inputs, shown

    def features(self, tokens: torch.Tensor, revealed: torch.Tensor | None = None) -> torch.Tensor:
        inputs, shown = self.shifted(tokens, revealed)
        return self.encoder(self.embed(inputs), attn_mask=hybrid_attention_mask(shown))

    def forward(self, tokens: torch.Tensor, revealed: torch.Tensor | None = None,
                where: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.head(self.features(tokens, revealed), where)
        banned = self.disallowed.expand(tokens.shape[0], -1, -1)
        return logits.masked_fill(banned[where] if where is not None else banned, float("-inf"))
