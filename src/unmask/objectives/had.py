"""HAD (Yang et al. 2025, "HAD: Hybrid Architecture Distillation Outperforms Teacher in Genomic
Sequence Modeling", arXiv:2505.20836, P35): a small student learns from a large teacher that splits
the same sequence into other tokens, by grouped masking: whole teacher tokens (groups of the
student's units) are hidden, the student's features of the visible groups are distilled to the
teacher's features of the same tokens, and the student reconstructs the hidden units.

The paper's teacher reads 6-mers and its student nucleotides; here the teacher is a masked LM on
byte-level BPE tokens and the student a masked LM on the bytes of the same text, and a group is the
bytes one BPE token covers (`data/token_alignment.py`), so groups differ in size and may split a
UTF-8 character.
- grouped masking (`group_mask`): round(ratio * G) of a row's G groups, uniformly without
  replacement (float64 noise, `masking.base.hide_top`); every byte of a chosen group is hidden and no
  other. The teacher reads the same tokens hidden (its mask id there), as HAD draws the mask at the
  teacher's tokens and maps it to the student's units, so the teacher's visible features hold nothing
  of what the student must rebuild (`teacher_sees_hidden=True` gives it the whole text instead).
- distillation (`group_distill_loss`): the student's final features averaged over each visible
  group's bytes, a linear head to the teacher's width, mean squared error against the teacher's
  final features of that token whitened by a parameter-free LayerNorm (as `mimic.teacher_tokens`);
  the mean over visible groups. Hidden groups add nothing, not even through the average.
- reconstruction: cross-entropy of the hidden bytes, the mean over the batch's hidden bytes.
`loss = distill_weight * distill + reconstruct_weight * reconstruct`; either weight may be 0, not
both. With `distill_weight=0` (no teacher needed) it is a byte MLM with the same masks: the baseline.

Differences from the paper: the student is our Transformer with mask embeddings at the hidden bytes
(HAD: a bidirectional Gated Delta Net plus one attention layer, with a cross-attention decoder that
rebuilds the hidden nucleotides from the visible ones); its own logits head rebuilds them here.

batch: {"bytes": Long[B, N] (0..255, padding `BYTE_PAD` never hidden), "groups": Long[B, N] (the
token index of each byte, -1 at padding), "tokens": Long[B, T] (the teacher's tokens)}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..masking.base import hide_top, uniform
from .base import ObjectiveOutput
from .masked_token import hidden_ce_mean
from .mimic import frozen


def group_mask(groups: torch.Tensor, n_groups: int, ratio: float,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide round(ratio * G_b) whole groups of each row b, G_b = the groups present in row b.

    groups: Long[B, N], values in [0, n_groups) or -1 (padding). Returns (hidden bytes Bool[B, N],
    hidden groups Bool[B, n_groups]), drawn on the host."""
    if not 0 <= ratio <= 1:
        raise ValueError(f"ratio must lie in [0, 1], got {ratio}")
    groups = groups.cpu()
    if groups.ndim != 2:
        raise ValueError(f"groups must be Long[B, N], got shape {tuple(groups.shape)}")
    if groups.numel() and (int(groups.min()) < -1 or int(groups.max()) >= n_groups):
        raise ValueError(f"group ids must lie in [0, {n_groups}) or be -1 (padding), "
                         f"got {int(groups.min())}..{int(groups.max())}")
    b = groups.shape[0]
    valid = groups >= 0  # [B, N]
    slot = torch.where(valid, groups, n_groups)  # padding writes to a spare last column
    present = torch.zeros(b, n_groups + 1, dtype=torch.bool).scatter_(1, slot, True)[:, :n_groups]  # [B, T]
    counts = torch.round(ratio * present.sum(1).double()).long()  # [B]
    scores = uniform((b, n_groups), generator).masked_fill(~present, float("-inf"))
    hidden_groups = hide_top(scores, counts)  # [B, T]
    hidden = hidden_groups.gather(1, groups.clamp(min=0)) & valid  # [B, N]
    return hidden, hidden_groups


def group_means(h: torch.Tensor, groups: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """h: Float[B, N, D], groups: Long[B, N] (-1: padding) -> (the mean of each group's rows
    Float[B, T, D], 0 where a group is absent; each group's size Float[B, T])."""
    b, n, d = h.shape
    valid = (groups >= 0).to(h.dtype)  # [B, N]
    flat = (torch.arange(b, device=h.device)[:, None] * n_groups + groups.clamp(min=0)).reshape(-1)  # [B*N]
    sums = h.new_zeros(b * n_groups, d).index_add_(0, flat, (h * valid[..., None]).reshape(-1, d))
    sizes = h.new_zeros(b * n_groups).index_add_(0, flat, valid.reshape(-1))
    sizes = sizes.view(b, n_groups)
    return sums.view(b, n_groups, d) / sizes.clamp(min=1)[..., None], sizes


def group_distill_loss(h: torch.Tensor, groups: torch.Tensor, hidden_groups: torch.Tensor,
                       target: torch.Tensor, head: nn.Module) -> torch.Tensor:
    """Mean over visible groups of the MSE between head(the group's mean student feature) and the
    teacher's whitened feature of that token.

    h: Float[B, N, D] student features; groups: Long[B, N]; hidden_groups: Bool[B, T];
    target: Float[B, T, Dt] teacher features. Computed on the device (no host read); 0 when no group
    is visible."""
    means, sizes = group_means(h, groups, hidden_groups.shape[1])  # [B, T, D], [B, T]
    keep = (~hidden_groups & (sizes > 0)).to(h.dtype)  # [B, T]: visible groups present in the row
    whitened = F.layer_norm(target.float(), target.shape[-1:])
    err = (head(means).float() - whitened).pow(2).mean(-1)  # [B, T]
    return (err * keep).sum() / keep.sum().clamp(min=1)


class HAD(nn.Module):
    """Grouped masking, distillation of visible groups, reconstruction of hidden bytes.

    student: a `MaskedTokenModel` over bytes (vocab `BYTE_VOCAB`, N places); teacher: a model with
    `features(tokens) -> Float[B, T, Dt]`, `mask_id` and `config.dim` (a `MaskedTokenModel` over the
    BPE tokens), frozen here; None only with `distill_weight=0`."""

    def __init__(self, student: nn.Module, teacher: nn.Module | None = None, *, ratio: float = 0.15,
                 distill_weight: float = 1.0, reconstruct_weight: float = 1.0, teacher_sees_hidden: bool = False):
        super().__init__()
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must lie in (0, 1], got {ratio}")
        if distill_weight < 0 or reconstruct_weight < 0 or distill_weight + reconstruct_weight == 0:
            raise ValueError(f"distill_weight and reconstruct_weight must be >= 0 and not both 0, got "
                             f"{distill_weight} and {reconstruct_weight}")
        if distill_weight > 0 and teacher is None:
            raise ValueError(f"distill_weight={distill_weight} needs a teacher; pass one or set distill_weight=0")
        self.student = student
        self.teacher = frozen(teacher) if teacher is not None and distill_weight > 0 else None
        # no unused weights: the head exists only when it is trained
        self.head = nn.Linear(student.config.dim, teacher.config.dim) if self.teacher is not None else None
        self.ratio = ratio
        self.distill_weight = distill_weight
        self.reconstruct_weight = reconstruct_weight
        self.teacher_sees_hidden = teacher_sees_hidden

    @torch.no_grad()
    def teacher_features(self, tokens: torch.Tensor, hidden_groups: torch.Tensor) -> torch.Tensor:
        """tokens: Long[B, T]; hidden_groups: Bool[B, T] -> Float[B, T, Dt], the frozen teacher's
        final features of the tokens with the hidden groups' tokens masked (unless told otherwise)."""
        self.teacher.eval()
        inputs = tokens if self.teacher_sees_hidden else tokens.masked_fill(hidden_groups, self.teacher.mask_id)
        return self.teacher.features(inputs)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        data, groups = batch["bytes"], batch["groups"]  # [B, N] each
        groups_host = groups.cpu()  # the mask is drawn on the host, as every masker's
        n_groups = batch["tokens"].shape[1] if "tokens" in batch else int(groups_host.max()) + 1
        hidden_host, hidden_groups_host = group_mask(groups_host, n_groups, self.ratio, generator)
        hidden = hidden_host.to(data.device, non_blocking=True)  # [B, N]
        hidden_groups = hidden_groups_host.to(data.device, non_blocking=True)  # [B, T]
        student = self.student
        h = student.features(data.masked_fill(hidden, student.mask_id))  # [B, N, D]
        zero = h.new_zeros(())
        metrics = {"hidden_share": hidden.float().mean()}
        distill = reconstruct = zero
        if self.teacher is not None:
            target = self.teacher_features(batch["tokens"], hidden_groups)  # [B, T, Dt]
            distill = group_distill_loss(h, groups, hidden_groups, target, self.head)
            metrics["distill"] = distill.detach()
        if self.reconstruct_weight > 0:
            logits = student.head(h, hidden)  # [M, V], M = hidden bytes of the batch
            logits = logits.masked_fill(student.disallowed.expand(data.shape[0], -1, -1)[hidden], float("-inf"))
            targets = data[hidden]
            reconstruct = hidden_ce_mean(F.cross_entropy(logits.float(), targets, reduction="none"), hidden)
            with torch.no_grad():
                hit = logits.gather(1, targets[:, None]).squeeze(1) >= logits.amax(-1)
            metrics |= {"reconstruct": reconstruct.detach(), "hidden_acc": hit.float().mean()}
        loss = self.distill_weight * distill + self.reconstruct_weight * reconstruct
        metrics["loss"] = loss.detach()
        return ObjectiveOutput(loss, metrics)

    def features(self, data: torch.Tensor) -> torch.Tensor:
        """data: Long[B, N] bytes, nothing hidden -> the student's features Float[B, N, D]."""
        return self.student.features(data)
