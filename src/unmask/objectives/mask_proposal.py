"""Training the mask generator of Prompt-guided Mask Proposal, PMP (Li, Zhang, Wan, Yu, Kale and Lu
2024, "Prompt-Guided Mask Proposal for Two-Stage Open-Vocabulary Segmentation", arXiv:2412.10292),
and of its prompt-free baseline, with the same set loss (Mask2Former, Cheng et al. 2022,
arXiv:2112.01527, here without its point sampling and per-layer auxiliary losses): queries are
matched one-to-one to the ground-truth objects by the Hungarian algorithm on a cost of class and
mask (BCE + dice); matched queries learn the class (cross-entropy) and the mask (BCE + dice),
unmatched ones learn "no object" (its cross-entropy weighed by `no_object`).

With prompts (PMP), each scene's prompt is the name of ONE of its objects, drawn uniformly per step
from the objective's generator (as at test time, when one object is asked for), and the loss is the
same set loss over all objects.

Batch: images Float[B, C, S, S] in [0, 1]; masks Bool[B, K, S, S]; labels Long[B, K] (-1 = empty
slot); names Long[B, K, T] and name_lengths Long[B, K], each class's words (only with prompts).

The matching runs on the host (scipy's `linear_sum_assignment`), once per image, as Mask2Former's
does: one device read per step.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..nn.mask_proposal import MaskProposalModel
from .base import ObjectiveOutput, as_metric


def bce_cost(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel binary cross-entropy of every prediction against every target.
    mask_logits: Float[..., Q, P]; targets: Float[..., K, P] in [0, 1] -> Float[..., Q, K]."""
    pos = F.softplus(-mask_logits)  # -log sigmoid(x): the BCE of a pixel whose target is 1
    neg = F.softplus(mask_logits)  # -log(1 - sigmoid(x))
    t = targets.transpose(-1, -2)
    return (pos @ t + neg @ (1 - t)) / mask_logits.shape[-1]


def dice_cost(mask_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - (2 |p t| + 1) / (|p| + |t| + 1) with p = sigmoid(logits), every prediction against every
    target; the 1s keep two empty masks at cost 0 (Mask2Former's smoothing).
    mask_logits: Float[..., Q, P]; targets: Float[..., K, P] -> Float[..., Q, K]."""
    p = mask_logits.sigmoid()
    overlap = p @ targets.transpose(-1, -2)
    return 1 - (2 * overlap + 1) / (p.sum(-1)[..., :, None] + targets.sum(-1)[..., None, :] + 1)


def hungarian_match(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The one-to-one assignment of K targets to Q >= K queries of least total cost.
    cost: Float[Q, K] -> (query ids Long[K], target ids Long[K]), sorted by target."""
    q, k = cost.shape
    if k > q:
        raise ValueError(f"{k} targets cannot be matched to {q} queries: need queries >= targets")
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cost.detach().cpu().double().numpy())
    order = np.argsort(cols)
    return torch.as_tensor(rows[order], dtype=torch.long), torch.as_tensor(cols[order], dtype=torch.long)


def brute_force_match(cost: torch.Tensor) -> tuple[torch.Tensor, float]:
    """For tests: every injective map of K targets into Q queries. -> (query ids Long[K], least cost)."""
    q, k = cost.shape
    best = min(itertools.permutations(range(q), k), key=lambda rows: float(sum(cost[r, c] for c, r in enumerate(rows))))
    return torch.tensor(best), float(sum(cost[r, c] for c, r in enumerate(best)))


def one_name_prompt(names: torch.Tensor, name_lengths: torch.Tensor, labels: torch.Tensor,
                    generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One present object per scene, drawn uniformly. names: Long[B, K, T]; name_lengths: Long[B, K];
    labels: Long[B, K] (-1 = empty) -> (tokens Long[B, T], lengths Long[B], slot Long[B])."""
    present = (labels >= 0).double()  # every scene has >= 1 object (the data's rule)
    # drawn on the host, where the trainer's generators live, then moved
    u = torch.rand(labels.shape, generator=generator, dtype=torch.float64).to(labels.device)
    slot = torch.where(present > 0, u, -1.0).argmax(1)  # the largest uniform among present slots
    rows = torch.arange(labels.shape[0], device=labels.device)
    return names[rows, slot], name_lengths[rows, slot], slot


class MaskProposalLoss(nn.Module):
    """The Mask2Former-lite set loss for a `MaskProposalModel`, with or without prompts."""

    def __init__(self, model: MaskProposalModel, *, class_weight: float = 2.0, bce_weight: float = 5.0,
                 dice_weight: float = 5.0, no_object: float = 0.1):
        super().__init__()
        self.model = model
        self.weights = (class_weight, bce_weight, dice_weight)
        self.no_object = no_object

    def proposals(self, batch: dict, generator: torch.Generator | None = None):
        images = batch["images"]
        if not self.model.cfg.prompt:
            return self.model(images)
        tokens, lengths, _ = one_name_prompt(batch["names"], batch["name_lengths"], batch["labels"], generator)
        return self.model(images, tokens, lengths)

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        out = self.proposals(batch, generator)
        grid = out.masks.shape[-2:]
        # ground truth at the mask grid: the share of each cell's pixels inside the object
        targets = F.adaptive_avg_pool2d(batch["masks"].float(), grid).flatten(2)  # [B, K, P]
        labels = batch["labels"]
        logits, masks = out.logits, out.masks.flatten(2)  # [B, Q, C+1], [B, Q, P]
        b, q, c1 = logits.shape
        w_class, w_bce, w_dice = self.weights
        with torch.no_grad():
            probs = logits.softmax(-1)
            cost = (-w_class * probs.gather(2, labels.clamp_min(0)[:, None, :].expand(-1, q, -1))
                    + w_bce * bce_cost(masks, targets) + w_dice * dice_cost(masks, targets))
        present = (labels >= 0).cpu()
        cost = cost.cpu()
        qi, ti, bi = [], [], []
        for i in range(b):
            keep = present[i].nonzero().squeeze(1)
            rows, cols = hungarian_match(cost[i][:, keep])
            qi.append(rows), ti.append(keep[cols]), bi.append(torch.full_like(rows, i))
        qi, ti, bi = (torch.cat(t).to(logits.device) for t in (qi, ti, bi))
        target_class = torch.full((b, q), c1 - 1, dtype=torch.long, device=logits.device)
        target_class[bi, qi] = labels[bi, ti]
        class_w = torch.ones(c1, device=logits.device)
        class_w[-1] = self.no_object
        loss_class = F.cross_entropy(logits.transpose(1, 2), target_class, weight=class_w)
        matched, truth = masks[bi, qi], targets[bi, ti]  # [M, P]
        loss_bce = F.binary_cross_entropy_with_logits(matched, truth)
        p = matched.sigmoid()
        loss_dice = (1 - (2 * (p * truth).sum(1) + 1) / (p.sum(1) + truth.sum(1) + 1)).mean()
        loss = w_class * loss_class + w_bce * loss_bce + w_dice * loss_dice
        metrics = {"class": as_metric(loss_class, loss), "bce": as_metric(loss_bce, loss),
                   "dice": as_metric(loss_dice, loss)}
        return ObjectiveOutput(loss, metrics)
