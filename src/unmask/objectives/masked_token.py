"""Masked token modeling: hide tokens, predict them, score the hidden ones by cross-entropy.

Two ways to draw how many tokens to hide:
- schedule (MaskGIT, Chang et al. 2022): r ~ U(0, 1), hide gamma(r) of each segment; the loss is the
  mean cross-entropy over all hidden tokens of the batch.
- `elbo=True` (masked diffusion: MDLM, Sahoo et al. 2024; LLaDA, Nie et al. 2025): t ~ U(eps, 1)
  per row, hide each token with probability t (use `BernoulliMask`, for which the weight is exact),
  and weight each hidden token's cross-entropy by 1/t. Summed and divided by B * N (all tokens, as
  MDLM and LLaDA normalise), this is an upper bound on the negative log-likelihood per token, in nats.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..masking import Masker, RandomMask
from ..schedules import Schedule
from .base import ObjectiveOutput

ELBO_EPS = 1e-3  # MDLM and LLaDA keep t away from 0, where the 1/t weight explodes


class MaskedTokenModeling(nn.Module):
    """batch: {"tokens": Long[B, N]} -> ObjectiveOutput. The model must accept `where=`."""

    def __init__(
        self,
        model: nn.Module,
        masker: Masker | None = None,
        schedule: Schedule | None = None,
        *,
        elbo: bool = False,
        per_segment: bool = False,
    ):
        super().__init__()
        self.model = model
        self.masker = masker or RandomMask()
        self.schedule = schedule or Schedule("cosine")
        self.elbo = elbo
        self.per_segment = per_segment
        self.layout = model.config.layout
        self.mask_id = model.mask_id

    def draw_ratio(self, batch_size: int, generator) -> torch.Tensor:
        """Float64 [B] (or [B, S] with per_segment): the share of tokens to hide."""
        n_seg = len(self.masker.eligible(self.layout))
        shape = (batch_size, n_seg) if self.per_segment and not self.elbo else (batch_size,)
        u = torch.rand(shape, generator=generator, dtype=torch.float64)
        if self.elbo:
            return ELBO_EPS + (1 - ELBO_EPS) * u
        return self.schedule(u)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        tokens = batch["tokens"]
        b, n = tokens.shape
        ratio = self.draw_ratio(b, generator)
        mask = self.masker(self.layout, b, ratio=ratio, generator=generator).to(tokens.device)
        inputs = tokens.masked_fill(mask, self.mask_id)
        logits = self.model(inputs, where=mask)  # [M, V], M = hidden tokens in the batch
        targets = tokens[mask]
        ce = F.cross_entropy(logits.float(), targets, reduction="none")  # [M]
        if self.elbo:
            weight = (1.0 / ratio).to(ce)[:, None].expand(b, n)[mask]
            loss = (ce * weight).sum() / (b * n)
        else:
            loss = ce.sum() / max(ce.numel(), 1)
        with torch.no_grad():
            acc = (logits.argmax(-1) == targets).float().mean().item() if ce.numel() else math.nan
        metrics = {"loss": loss.item(), "hidden_acc": acc, "hidden_share": mask.float().mean().item()}
        if self.elbo:
            metrics["elbo_bits_per_token"] = loss.item() / math.log(2)
        return ObjectiveOutput(loss, metrics)
