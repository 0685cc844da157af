"""Masked token modeling: hide tokens, predict them, score the hidden ones by cross-entropy.

Three ways to draw how many tokens to hide:
- schedule (MaskGIT, Chang et al. 2022): r ~ U(0, 1), hide gamma(r) of each segment; the loss is the
  mean cross-entropy over all hidden tokens of the batch.
- `elbo=True` (masked diffusion: MDLM, Sahoo et al. 2024; LLaDA, Nie et al. 2025): t ~ U(eps, 1)
  per row, hide each token with probability t (use `BernoulliMask`, for which the weight is exact),
  and weight each hidden token's cross-entropy by 1/t. Summed and divided by B * N (all tokens, as
  MDLM and LLaDA normalise), this is an upper bound on the negative log-likelihood per token, in nats.
- `ratio=0.15` (BERT, Devlin et al. 2019): every row hides that fixed share.

With `balance_segments=True` (4M, Mizrahi et al. 2023, which averages the loss per target modality)
the loss is the mean over segments of each segment's mean cross-entropy, so a one-token segment
(a class label) weighs as much as 64 pixels; `segment_weights={"label": 0.25, "pixels": 0.75}`
weighs each segment's mean by its own weight instead (renormalised over the segments present).

`corruption` turns the mask into inputs (default: hidden tokens become the mask id; BERT's 80/10/10
is `masking.BertCorruption`). Batch entries other than "tokens" (e.g. `word_ids`) reach the masker as
its context.
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
        ratio: float | None = None,
        corruption=None,
        balance_segments: bool = False,
        segment_weights: dict[str, float] | None = None,
    ):
        super().__init__()
        names = model.config.layout.names
        if segment_weights is not None and (set(segment_weights) - set(names) or min(segment_weights.values()) < 0):
            raise ValueError(f"segment_weights must map segments of {list(names)} to weights >= 0")
        self.balance_segments = balance_segments or segment_weights is not None
        weights = [1.0 if segment_weights is None else segment_weights.get(n, 0.0) for n in names]
        self.register_buffer("segment_weights", torch.tensor(weights), persistent=False)
        if ratio is not None and (elbo or not 0 < ratio <= 1):
            raise ValueError(f"a fixed ratio must lie in (0, 1] and excludes elbo=True, got {ratio}, elbo={elbo}")
        self.ratio = ratio
        self.corruption = corruption
        self.model = model
        self.masker = masker or RandomMask()
        self.schedule = schedule or Schedule("cosine")
        self.elbo = elbo
        self.per_segment = per_segment
        self.layout = model.config.layout
        self.mask_id = model.mask_id

    def draw_ratio(self, batch_size: int, generator) -> torch.Tensor:
        """Float64 [B] (or [B, S] with per_segment): the share of tokens to hide."""
        if self.ratio is not None:
            return torch.full((batch_size,), self.ratio, dtype=torch.float64)
        n_seg = len(self.masker.eligible(self.layout))
        shape = (batch_size, n_seg) if self.per_segment and not self.elbo else (batch_size,)
        u = torch.rand(shape, generator=generator, dtype=torch.float64)
        if self.elbo:
            return ELBO_EPS + (1 - ELBO_EPS) * u
        return self.schedule(u)

    def segment_mean(self, ce: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Weighted mean, over the segments that have hidden tokens, of each segment's mean
        cross-entropy. ce: [M] in the order of mask.nonzero(); mask: Bool[B, N]."""
        ids = torch.cat([torch.full((s.length,), i) for i, s in enumerate(self.layout.segments)])
        seg = ids.to(mask.device).expand_as(mask)[mask]  # [M]
        k = len(self.layout.segments)
        sums = torch.zeros(k, dtype=ce.dtype, device=ce.device).index_add_(0, seg, ce)
        counts = torch.bincount(seg, minlength=k).to(ce.dtype)
        weights = self.segment_weights.to(ce) * (counts > 0)
        if not weights.sum() > 0:
            return ce.sum() * 0.0
        return (weights * sums / counts.clamp(min=1)).sum() / weights.sum()

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        tokens = batch["tokens"]
        b, n = tokens.shape
        ratio = self.draw_ratio(b, generator)
        context = {k: v for k, v in batch.items() if k != "tokens"}
        mask = self.masker(self.layout, b, ratio=ratio, generator=generator, **context).to(tokens.device)
        if self.corruption is None:
            inputs = tokens.masked_fill(mask, self.mask_id)
        else:
            inputs = self.corruption(tokens, mask, self.mask_id, generator)
        logits = self.model(inputs, where=mask)  # [M, V], M = hidden tokens in the batch
        targets = tokens[mask]
        ce = F.cross_entropy(logits.float(), targets, reduction="none")  # [M]
        if self.elbo:
            weight = (1.0 / ratio).to(ce)[:, None].expand(b, n)[mask]
            loss = (ce * weight).sum() / (b * n)
        elif self.balance_segments:
            loss = self.segment_mean(ce, mask)
        else:
            loss = ce.sum() / max(ce.numel(), 1)
        with torch.no_grad():
            # target logit at the row maximum: argmax up to exact ties, and several times cheaper on CPU
            hit = logits.gather(1, targets[:, None]).squeeze(1) >= logits.amax(-1)
            acc = hit.float().mean().item() if ce.numel() else math.nan
        metrics = {"loss": loss.item(), "hidden_acc": acc, "hidden_share": mask.float().mean().item()}
        if self.elbo:
            metrics["elbo_bits_per_token"] = loss.item() / math.log(2)
        return ObjectiveOutput(loss, metrics)
