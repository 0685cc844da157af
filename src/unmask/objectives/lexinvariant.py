"""Next-token prediction for a lexinvariant LM (Huang et al. 2023, "Lexinvariant Language Models",
arXiv:2305.16349; P38): each step draws one random embedding table per sequence from the step's
generator (`nn.LexinvariantLM.draw`) and scores the next token against it, so the model never sees a
fixed vector for any id. Inputs, the start token and the loss (exact NLL per token, in nats) are
those of `NextTokenPrediction`, which this extends; its input masking options are not offered here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..nn.lexinvariant import LexinvariantLM
from .autoregressive import NextTokenPrediction, scored_nll
from .base import ObjectiveOutput


class LexinvariantNextToken(NextTokenPrediction):
    """batch: {"tokens": Long[B, N], "prompt": Bool[B, N] (optional)} -> ObjectiveOutput."""

    def __init__(self, model: LexinvariantLM, *, bos_id: int | None = None):
        if not isinstance(model, LexinvariantLM) or not model.causal:
            raise ValueError("LexinvariantNextToken needs a causal LexinvariantLM")
        super().__init__(model, bos_id=bos_id)

    def token_nll(self, tokens: torch.Tensor, inputs: torch.Tensor | None = None, *,
                  table: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Negative log-likelihood of every token, Float[B, N], in nats, under `table` (Float[B, V, D];
        drawn from `generator` when None)."""
        inputs = self.inputs(tokens) if inputs is None else inputs
        logits = self.model(inputs, table=table, generator=generator)  # [B, N, V]
        nll = F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten(), reduction="none")
        return nll.view_as(tokens)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        tokens = batch["tokens"]
        return scored_nll(self.token_nll(tokens, generator=generator), batch.get("prompt"))
