"""Masked Feature Modeling for unsupervised domain adaptation (MFM; Zhou, Zhou, Xian, Zhai, Wu and
Ma, "Masked Feature Modeling Enhances Adaptive Segmentation", 2025, arXiv:2509.13801; v2 renames it
Masked Representation Modeling): on the unlabelled target domain, hide some of the student's
feature tokens, let a light Rebuilder fill them in from the rest, and classify the rebuilt features
with the task head itself against the mean teacher's pseudo-labels, so the reconstruction serves the
task and the Rebuilder is dropped at inference (no cost there).

The loss, for a source batch (x_s, y_s) and a target batch x_t (its labels are never read):

    L = CE(h(f(x_s)), y_s) + w CE(h(f(x_t)), p) + lambda w CE(h(R(f(x_t), M)), p)

- f: the student encoder's token map `[B, L, D]`; h: the task head; M: a mask of exactly
  round(ratio * L) hidden tokens per row from a masker (MFM: ratio 0.4, uniform);
- R, the Rebuilder (MRM's `rebuilder.py`): a linear map to its own width, the hidden tokens replaced
  by a learned mask token, fixed sin-cos positions, a two-block Transformer, a linear map back and a
  LayerNorm; the visible tokens keep the encoder's features (`where(M, rebuilt, f)`), so the MFM term
  reaches a hidden token's encoder feature through nothing at all and the visible ones directly;
- p, w: the base method's self-training (DACS, Tranheden et al. 2021, MFM's base): p = argmax of the
  EMA teacher on x_t, w = the share of the batch's target examples whose teacher confidence is at
  least `threshold` (0.968), one weight for the whole batch. The teacher follows
  teacher <- a teacher + (1 - a) student with a = min(1 - 1 / (t + 1), momentum) at step t (t = 0
  copies the student), before the step's forward (`begin_step`, called by the Trainer). The loss
  terms are batch means of w_i CE_i; `weighting="mask"` gives each example its own 0 / 1 weight
  instead (FixMatch's rule, which suits one label per image; not the paper's).

Options: `mfm=False` drops the third term (= the self-training baseline); `self_training=False`
with `mfm=False` is source-only training. `augment(images, generator)`, if given, is the random
augmentation the student reads both domains through: the source batch (DACS's data pipeline
augments it) and the student's copy of the target (DACS perturbs it by ClassMix with source pixels,
colour jitter and blur; whole-image classification has no class mask to mix by, so only the
augmentation is kept); both target terms read that copy, and the teacher reads the clean x_t.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..masking import Masker, RandomMask
from ..nn.embedding import sincos_nd
from ..nn.mae import MaskedEncoder
from ..nn.transformer import Transformer
from .base import ObjectiveOutput

MFM_RATIO = 0.4  # MRM's rebuilder.py: mask_ratio
DACS_THRESHOLD = 0.968  # DACS: pseudo-label confidence threshold
DACS_MOMENTUM = 0.99  # DACS: alpha of the EMA teacher
WEIGHTINGS = ("share", "mask")


class TokenClassifier(nn.Module):
    """The task head: a token map `[B, L, D]` -> class logits `[B, K]` (LayerNorm per token, mean over
    tokens, linear). The same module classifies the encoder's and the Rebuilder's features."""

    def __init__(self, dim: int, classes: int):
        super().__init__()
        if classes < 2:
            raise ValueError(f"classes must be >= 2, got {classes}")
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(tokens).mean(1))


class Rebuilder(nn.Module):
    """Fills the hidden tokens of a feature map in from the visible ones. features: Float[B, L, D],
    mask: Bool[B, L] (True = hidden) -> Float[B, L, D], equal to `features` at the visible tokens."""

    def __init__(self, dim: int, grid: tuple[int, ...], width: int = 64, depth: int = 2, heads: int = 4):
        super().__init__()
        self.embed = nn.Linear(dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.mask_token, std=0.02)
        self.register_buffer("pos", sincos_nd(grid, width).unsqueeze(0), persistent=False)
        self.transformer = Transformer(width, depth, heads)
        self.out = nn.Linear(width, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if mask.shape != features.shape[:2]:
            raise ValueError(f"mask {tuple(mask.shape)} does not match features {tuple(features.shape)}")
        hidden = mask.to(features.device).unsqueeze(-1)  # [B, L, 1]
        x = self.embed(features)  # [B, L, W]
        x = torch.where(hidden, self.mask_token.to(x.dtype), x) + self.pos
        rebuilt = self.norm(self.out(self.transformer(x)))  # [B, L, D]
        return torch.where(hidden, rebuilt, features)


class MaskedFeatureUDA(nn.Module):
    """Source cross-entropy + mean-teacher self-training on the target + MFM (see the module
    docstring). batch: {"source": Float[B, C, H, W], "labels": Long[B], "target": Float[B, C, H, W]};
    any other key (target labels kept for a figure) is ignored. `predict(images)` is the deployed
    network: encoder and head, no Rebuilder."""

    def __init__(self, encoder: MaskedEncoder, head: TokenClassifier, rebuilder: Rebuilder | None = None,
                 masker: Masker | None = None, *, ratio: float = MFM_RATIO, mfm: bool = True,
                 self_training: bool = True, mfm_weight: float = 1.0, threshold: float = DACS_THRESHOLD,
                 momentum: float = DACS_MOMENTUM, weighting: str = "share",
                 augment: Callable[[torch.Tensor, torch.Generator | None], torch.Tensor] | None = None):
        super().__init__()
        if encoder.cls is not None:
            raise ValueError("MFM reads the token map: build the encoder with cls_token=False")
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must lie in [0, 1], got {ratio}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        if mfm_weight < 0:
            raise ValueError(f"mfm_weight must be >= 0, got {mfm_weight}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if mfm and rebuilder is None:
            raise ValueError("mfm=True needs a Rebuilder")
        self.encoder, self.head = encoder, head
        self.rebuilder = rebuilder if mfm else None
        self.masker = masker or RandomMask()
        self.ratio, self.mfm, self.self_training = ratio, mfm, self_training
        self.mfm_weight, self.threshold, self.momentum = mfm_weight, threshold, momentum
        self.augment, self.weighting = augment, weighting
        self.teacher_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.teacher_head = copy.deepcopy(head).requires_grad_(False)

    @property
    def layout(self):
        return self.encoder.cfg.layout

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Float[B, C, H, W] -> the student's token map Float[B, L, D]."""
        return self.encoder(images).tokens

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Float[B, C, H, W] -> the student's class logits Float[B, K]."""
        return self.head(self.features(images))

    def view(self, images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """What the student reads: `augment(images)` while training, the images themselves otherwise."""
        return images if self.augment is None or not self.training else self.augment(images, generator)

    @torch.no_grad()
    def begin_step(self, step: int) -> None:
        """The mean teacher's move before step `step`: a copy of the student at step 0, else
        teacher <- a teacher + (1 - a) student, a = min(1 - 1 / (step + 1), momentum)."""
        keep = 0.0 if step == 0 else min(1.0 - 1.0 / (step + 1), self.momentum)
        pairs = ((self.teacher_encoder, self.encoder), (self.teacher_head, self.head))
        for teacher, student in pairs:
            for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
                t.mul_(keep).add_(s.detach(), alpha=1.0 - keep)
            for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
                t.copy_(s)

    @torch.no_grad()
    def pseudo_labels(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's hard labels Long[B] and their weights Float[B]: with weighting "share"
        (DACS) every example gets the share of the batch whose teacher confidence is >= threshold;
        with "mask" (FixMatch, Sohn et al. 2020) an example gets 1 if its own confidence is, else 0."""
        probs = self.teacher_head(self.teacher_encoder(target).tokens).float().softmax(-1)  # [B, K]
        confidence, labels = probs.max(-1)
        confident = (confidence >= self.threshold).float()  # [B]
        return labels, confident.mean().expand_as(confident) if self.weighting == "share" else confident

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        source, labels = self.view(batch["source"], generator), batch["labels"]
        source_ce = F.cross_entropy(self.predict(source).float(), labels)
        loss, metrics = source_ce, {"source_ce": source_ce.detach()}
        if self.self_training or self.mfm:
            target = batch["target"]
            pseudo, weight = self.pseudo_labels(target)
            feats = self.features(self.view(target, generator))  # [B, L, D]
            metrics["pseudo_weight"] = weight.mean()
            if self.self_training:
                target_ce = F.cross_entropy(self.head(feats).float(), pseudo, reduction="none")  # [B]
                loss = loss + (weight * target_ce).mean()
                metrics["target_ce"] = target_ce.detach().mean()
            if self.mfm:
                mask = self.masker(self.layout, feats.shape[0], ratio=self.ratio, generator=generator)
                rebuilt = self.rebuilder(feats, mask)  # [B, L, D]
                mfm_ce = F.cross_entropy(self.head(rebuilt).float(), pseudo, reduction="none")  # [B]
                loss = loss + self.mfm_weight * (weight * mfm_ce).mean()
                metrics["mfm_ce"] = mfm_ce.detach().mean()
        metrics["loss"] = loss.detach()
        return ObjectiveOutput(loss, metrics)
