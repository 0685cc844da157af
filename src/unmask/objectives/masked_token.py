"""Masked token modeling: hide tokens, predict them, score the hidden ones by cross-entropy.

How many tokens to hide, one of:
- a schedule (MaskGIT, Chang et al. 2022, arXiv:2202.04200; the default, cosine): r ~ U(0, 1) per
  row, hide gamma(r) of each segment; with `per_segment=True` each segment draws its own r, as 4M
  (Mizrahi et al. 2023, arXiv:2312.06647, P59) draws a token budget per modality;
- `ratio=0.15` (BERT, Devlin et al. 2019, arXiv:1810.04805): every row hides that fixed share.
The loss is the mean cross-entropy over all hidden tokens of the batch (`hidden_ce_mean`). With
`balance_segments=True` (4M averages the loss per target modality) it is the mean over segments of
each segment's mean, so a one-token segment (a class label) weighs as much as 64 pixels;
`segment_weights={"label": 0.25, "pixels": 0.75}` weighs each segment's mean by its own weight
instead, renormalised over the segments that have hidden tokens. On a single-segment layout both
are the plain mean (allowed: a recipe's layout may have one segment or several).

The masked diffusion bound (MDLM, LLaDA) is `MaskedDiffusion` (masked_diffusion.py): its 1/t weight
and B * N normalisation belong to the bound, not to this loss.

Settings that cannot mean anything together are errors naming them: `ratio` with a `schedule`
(both would say how many), `ratio` with `per_segment` (a fixed share is already the same in every
segment), `balance_segments=False` with `segment_weights` (the weights are a balance), and
`segment_weights` naming a segment the layout lacks, or with a weight below zero, or all zero.

`MagnetTokenModeling` (MAGNeT, Ziv et al. 2024, arXiv:2401.04577) scores only part of the hidden
places: those of each row's stage stream (`scored`), while the later streams stay hidden in the input.

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


def hidden_ce_mean(ce: torch.Tensor, mask: torch.Tensor, segment_ids: torch.Tensor | None = None,
                   weights: torch.Tensor | None = None) -> torch.Tensor:
    """The mean cross-entropy over the hidden tokens, computed on the device (no host read).

    ce: Float[M], each hidden token's cross-entropy in the order of `x[mask]`; mask: Bool[B, N].
    Plain: sum(ce) / M. With segment_ids (Long[N], each place's segment) and weights (Float[S]):
    sum_s w_s mean_s / sum_s w_s over the segments s that have hidden tokens. 0 when nothing with
    weight is hidden (nothing to learn), never a division by zero."""
    if segment_ids is None:  # one segment, every place
        sums, counts, weights = ce.sum()[None], mask.sum()[None].to(ce.dtype), ce.new_ones(1)
    else:
        seg = segment_ids.expand_as(mask)[mask]  # [M]
        sums = ce.new_zeros(weights.shape[0]).index_add_(0, seg, ce)
        counts = ce.new_zeros(weights.shape[0]).index_add_(0, segment_ids, mask.sum(0).to(ce.dtype))
        weights = weights.to(ce.dtype)
    present = weights * (counts > 0)
    total = present.sum()
    return (present * sums / counts.clamp(min=1)).sum() / torch.where(total > 0, total, 1.0)


class MaskedTokenModeling(nn.Module):
    """batch: {"tokens": Long[B, N]} -> ObjectiveOutput. The model must accept `where=`."""

    def __init__(
        self,
        model: nn.Module,
        masker: Masker | None = None,
        schedule: Schedule | None = None,
        *,
        ratio: float | None = None,
        per_segment: bool = False,
        corruption=None,
        balance_segments: bool | None = None,
        segment_weights: dict[str, float] | None = None,
    ):
        super().__init__()
        layout = model.config.layout
        names = list(layout.names)
        if ratio is not None:
            if not 0 < ratio <= 1:
                raise ValueError(f"a fixed ratio must lie in (0, 1], got ratio={ratio}")
            if schedule is not None:
                raise ValueError(f"ratio={ratio} fixes the share hidden and schedule={schedule} draws it: give one")
            if per_segment:
                raise ValueError(f"ratio={ratio} is the same share in every segment; per_segment=True draws one "
                                 "per segment from the schedule: drop one of them")
        if segment_weights is not None:
            if balance_segments is False:
                raise ValueError("segment_weights weigh the segments' means, which is balance_segments=True; "
                                 "drop balance_segments=False or the weights")
            unknown = sorted(set(segment_weights) - set(names))
            if unknown:
                raise ValueError(f"segment_weights names {unknown}, not segments of the layout {names}")
            values = list(segment_weights.values())
            if not all(math.isfinite(w) and w >= 0 for w in values) or not any(w > 0 for w in values):
                raise ValueError(f"segment_weights must be finite, >= 0 and not all 0, got {segment_weights}")
        self.model = model
        self.masker = masker or RandomMask()
        self.schedule = schedule or Schedule("cosine")
        self.ratio = ratio
        self.per_segment = per_segment
        self.corruption = corruption
        self.balance_segments = bool(balance_segments) or segment_weights is not None
        self.layout = layout
        self.mask_id = model.mask_id
        weights = [1.0 if segment_weights is None else segment_weights.get(n, 0.0) for n in names]
        ids = torch.cat([torch.full((s.length,), i) for i, s in enumerate(layout.segments)])
        self.register_buffer("segment_weights", torch.tensor(weights), persistent=False)
        self.register_buffer("segment_ids", ids, persistent=False)

    def draw_ratio(self, batch_size: int, generator) -> torch.Tensor:
        """Float64 [B] (or [B, S] with per_segment, S = the masker's segments): the share to hide."""
        if self.ratio is not None:
            return torch.full((batch_size,), self.ratio, dtype=torch.float64)
        shape = (batch_size, len(self.masker.eligible(self.layout))) if self.per_segment else (batch_size,)
        return self.schedule(torch.rand(shape, generator=generator, dtype=torch.float64))

    def loss(self, ce: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ce: Float[M] at the hidden places of mask (Bool[B, N], on ce's device) -> the scalar loss."""
        if self.balance_segments:
            return hidden_ce_mean(ce, mask, self.segment_ids, self.segment_weights)
        return hidden_ce_mean(ce, mask)

    def scored(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: Bool[B, N] (host) -> the hidden places the loss reads: every one of them."""
        return hidden

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        tokens = batch["tokens"]
        b = tokens.shape[0]
        context = {k: v for k, v in batch.items() if k != "tokens"}
        hidden = self.masker(self.layout, b, ratio=self.draw_ratio(b, generator), generator=generator, **context)
        mask = hidden.to(tokens.device, non_blocking=True)  # the masker draws on the host
        if self.corruption is None:
            inputs = tokens.masked_fill(mask, self.mask_id)
        else:
            inputs = self.corruption(tokens, mask, self.mask_id, generator)
        scored = self.scored(hidden)  # the hidden places the loss reads (all, unless a subclass says)
        target = mask if scored is hidden else scored.to(tokens.device, non_blocking=True)
        # the host mask lets the model shape its last block without reading the device
        logits = self.model(inputs, where=scored)  # [M, V], M = scored tokens in the batch
        targets = tokens[target]
        loss = self.loss(F.cross_entropy(logits.float(), targets, reduction="none"), target)
        with torch.no_grad():
            # target logit at the row maximum: argmax up to exact ties, and several times cheaper on CPU
            hit = logits.gather(1, targets[:, None]).squeeze(1) >= logits.amax(-1)
        metrics = {"loss": loss.detach(), "hidden_acc": hit.float().mean(),  # nan when nothing is hidden
                   "hidden_share": mask.float().mean()}
        return ObjectiveOutput(loss, metrics)


class MagnetTokenModeling(MaskedTokenModeling):
    """MAGNeT (Ziv et al. 2024, arXiv:2401.04577): the mask of `masking.MagnetMask` hides a span-masked
    stage stream and every stream after it, but the loss reads only the stage stream's hidden places
    (`MagnetMask.targets`), as audiocraft's solver does; the later streams are hidden so that stream k
    is learned without them, not to be predicted. The ratio (default: cosine schedule, MAGNeT's
    m = cos(pi u / 2)) is the stage stream's span mask rate."""

    def __init__(self, model: nn.Module, masker, schedule: Schedule | None = None, **options):
        if not hasattr(masker, "targets"):
            raise ValueError(f"MagnetTokenModeling needs a masker with `targets` (masking.MagnetMask), got {masker!r}")
        super().__init__(model, masker, schedule, **options)

    def scored(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.masker.targets(self.layout, hidden)
