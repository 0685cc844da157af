"""Next-token prediction: the autoregressive baseline on the same Transformer (`nn.CausalTokenModel`),
with two options from the catalogue:
- `input_masker` (MEAP, P12): some input positions become the mask token; the targets stay the clean
  next tokens (`masking.MeapMask`: one set of positions for the whole batch);
- `transform` (CM3, P17): each row is rewritten before training, e.g. `masking.CausalMasking`, so
  the model learns to infill spans moved to the end.

Position i reads tokens 0..i-1 after a start token (`bos_id`, default the mask id, which never occurs
in data) and predicts token i, so all N tokens are scored and the loss is the exact negative
log-likelihood per token, in nats: comparable with a masked diffusion bound over the same N tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..masking import Masker
from .base import ObjectiveOutput


class NextTokenPrediction(nn.Module):
    """batch: {"tokens": Long[B, N]} -> ObjectiveOutput. `model` must be causal."""

    def __init__(self, model: nn.Module, *, bos_id: int | None = None, input_masker: Masker | None = None,
                 ratio: float = 0.15, transform=None):
        super().__init__()
        if input_masker is not None and not 0 <= ratio <= 1:
            raise ValueError(f"input mask ratio must lie in [0, 1], got {ratio}")
        self.model = model
        self.mask_id = model.mask_id
        self.bos_id = self.mask_id if bos_id is None else bos_id
        if not 0 <= self.bos_id <= self.mask_id:
            raise ValueError(f"bos_id must lie in 0..{self.mask_id}, got {bos_id}")
        self.layout = model.config.layout
        self.input_masker = input_masker
        self.ratio = ratio
        self.transform = transform

    def inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """Long[B, N] -> Long[B, N]: the start token, then tokens shifted right by one."""
        bos = torch.full_like(tokens[:, :1], self.bos_id)
        return torch.cat([bos, tokens[:, :-1]], dim=1)

    def token_nll(self, tokens: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """Negative log-likelihood of every token, Float[B, N], in nats."""
        inputs = self.inputs(tokens) if inputs is None else inputs
        logits = self.model(inputs)  # [B, N, V]
        nll = F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten(), reduction="none")
        return nll.view_as(tokens)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        tokens = batch["tokens"]
        if self.transform is not None:
            tokens = self.transform(tokens, generator)
        inputs = self.inputs(tokens)
        if self.input_masker is not None:
            hide = self.input_masker(self.layout, tokens.shape[0], ratio=self.ratio, generator=generator)
            hide[:, 0] = False  # the start token stays
            inputs = inputs.masked_fill(hide.to(inputs.device, non_blocking=True), self.mask_id)
        nll = self.token_nll(tokens, inputs)
        loss = nll.mean()
        nats = loss.detach()
        return ObjectiveOutput(loss, {"loss": nats, "nll_bits_per_token": nats / math.log(2)})
