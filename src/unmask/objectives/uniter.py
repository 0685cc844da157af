"""UNITER (Chen et al. 2020, "UNITER: UNiversal Image-TExt Representation Learning",
arXiv:1909.11740): one Transformer over image regions and words, pretrained with conditional
masking (hide words while the image stays whole, or hide regions while the text stays whole, never
both) and image-text matching (is this the image's caption, or one swapped in from another pair?).

Here the regions are patches (`nn/image_text.py`). Each row of a batch gets one task, in exact
counts `round(share * B)` (largest remainders, so the counts sum to B), chosen at random:
- MLM: `max(1, round(word_ratio * words))` of the row's real words become the mask token (pads are
  never hidden); cross-entropy at those places, the image whole.
- MRM, feature regression (UNITER's MRFR): `max(1, round(region_ratio * L))` patches have their
  input zeroed (UNITER's `_mask_img_feat`); the output there regresses the patch's pixels (mean
  squared error), the text whole.
- ITM: nothing hidden; half the ITM rows (`ceil(B_itm / 2)`) take the caption of another row of the
  batch whose tokens differ (a real mismatch); a linear head on the [CLS] output says matched or not.
  A row whose batch holds no different caption keeps its label "matched" (its caption is its own).
UNITER samples one task per mini-batch by its mix ratio; one task per row gives the same conditional
masking in one forward pass. MLM here always uses the mask token (no BERT 80/10/10 replacement).

batch: {"images": Float[B, C, H, W] in [0, 1], "tokens": Long[B, T] (pads 0), "lengths": Long[B]}.
With `use_image=False` the model reads the text alone ([CLS] and words): the text-only baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..masking.base import hide_top, uniform
from ..nn.image_text import ImageTextConfig, ImageTextEmbed
from ..nn.patch import patchify
from ..nn.transformer import Transformer, init_weights
from .base import ObjectiveOutput
from .mae import masked_mean

TASKS = ("mlm", "mrm", "itm")


def task_counts(batch_size: int, shares: tuple[float, ...]) -> list[int]:
    """Exact rows per task: floor(share * B) plus one for the largest remainders, summing to B."""
    total = sum(shares)
    raw = [s / total * batch_size for s in shares]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: counts[i] - raw[i])[: batch_size - sum(counts)]:
        counts[i] += 1
    return counts


def assign_tasks(batch_size: int, shares: tuple[float, ...], generator=None) -> torch.Tensor:
    """Long[B]: the task of each row (an index into TASKS), `task_counts` of each, in random order."""
    counts = task_counts(batch_size, shares)
    tasks = torch.cat([torch.full((c,), i, dtype=torch.long) for i, c in enumerate(counts)])
    return tasks[torch.randperm(batch_size, generator=generator)]


def conditional_masks(tasks: torch.Tensor, lengths: torch.Tensor, text_length: int, patches: int, *,
                      word_ratio: float = 0.15, region_ratio: float = 0.15, generator=None):
    """(text Bool[B, T], image Bool[B, L]), True = hidden: MLM rows hide max(1, round(word_ratio *
    length)) of their real words, MRM rows max(1, round(region_ratio * L)) patches, other rows nothing.
    No row hides both."""
    b = tasks.shape[0]
    words = torch.clamp(torch.round(lengths.double() * word_ratio).long(), min=1).clamp(max=lengths)
    word_counts = torch.where(tasks == 0, words, 0)
    real = torch.arange(text_length).unsqueeze(0) < lengths.unsqueeze(1)  # [B, T]
    scores = uniform((b, text_length), generator).masked_fill(~real, -1.0)  # pads last: never hidden
    text = hide_top(scores, word_counts)
    regions = max(1, round(region_ratio * patches))
    region_counts = torch.where(tasks == 1, regions, 0)
    image = hide_top(uniform((b, patches), generator), region_counts)
    return text, image


def mismatched_partners(tokens: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(Long[B] partner, Bool[B] differs): for each row a random other row whose caption differs
    (any token), and whether one exists (if not, the partner's caption equals the row's own)."""
    differ = (tokens.unsqueeze(1) != tokens.unsqueeze(0)).any(-1)  # [B, B]
    scores = uniform(differ.shape, generator).to(tokens.device).masked_fill(~differ, -1.0)
    partner = scores.argmax(1)
    return partner, differ.gather(1, partner.unsqueeze(1)).squeeze(1)


def swap_captions(tokens: torch.Tensor, lengths: torch.Tensor, itm: torch.Tensor, generator=None):
    """The captions the model reads: the first ceil(n / 2) of the n rows where `itm` (Bool[B]) is
    True take a differing caption of another row (`mismatched_partners`). Returns (tokens Long[B, T],
    lengths Long[B], matched Bool[B]); matched is False exactly where a different caption went in."""
    partner, differs = mismatched_partners(tokens, generator)
    swap = itm & (torch.cumsum(itm.long(), 0) <= (itm.sum() + 1) // 2)
    shown = torch.where(swap.unsqueeze(1), tokens[partner], tokens)
    return shown, torch.where(swap, lengths[partner], lengths), ~(swap & differs)


class UNITERModel(nn.Module):
    """[CLS], patches, words through one Transformer. Heads: words (logits over V), regions (pixels
    of a patch), matching (2 classes on [CLS])."""

    def __init__(self, cfg: ImageTextConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = ImageTextEmbed(cfg)
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.transformer = Transformer(cfg.dim, cfg.depth, cfg.heads, cfg.mlp_ratio)
        self.word_head = nn.Linear(cfg.dim, cfg.vocab_size)
        self.region_head = nn.Linear(cfg.dim, cfg.patch_dim)
        self.match_head = nn.Linear(cfg.dim, 2)
        init_weights(self)

    def forward(self, patches: torch.Tensor | None, tokens: torch.Tensor, lengths: torch.Tensor,
                hidden_regions: torch.Tensor | None = None) -> torch.Tensor:
        """patches: Float[B, L, p*p*C] or None (text alone); tokens: Long[B, T] (mask id where hidden);
        hidden_regions: Bool[B, L], their inputs zeroed. Returns [B, 1 + L + T, D] (L = 0 without
        patches): [CLS], patches, words. Pads (beyond `lengths`) are never attended to."""
        b, t = tokens.shape
        parts = [self.cls.expand(b, -1, -1)]
        if patches is not None:
            if hidden_regions is not None:
                patches = patches.masked_fill(hidden_regions.to(patches.device).unsqueeze(-1), 0.0)
            parts.append(self.embed.image(patches))
        parts.append(self.embed.text(tokens))
        x = torch.cat(parts, dim=1)
        keys = torch.ones(b, x.shape[1], dtype=torch.bool, device=x.device)
        keys[:, x.shape[1] - t :] = torch.arange(t, device=x.device) < lengths.unsqueeze(1)
        return self.transformer(x, keys[:, None, None, :])  # [B, 1 + L + T, D]


class UNITER(nn.Module):
    def __init__(self, model: UNITERModel, *, shares: tuple[float, float, float] = (0.5, 0.25, 0.25),
                 weights: tuple[float, float, float] = (1.0, 1.0, 1.0), word_ratio: float = 0.15,
                 region_ratio: float = 0.15, use_image: bool = True):
        super().__init__()
        if len(shares) != 3 or min(shares) < 0 or sum(shares) <= 0:
            raise ValueError(f"shares (mlm, mrm, itm) must be 3 non-negative numbers, not all 0; got {shares}")
        if len(weights) != 3 or min(weights) < 0:
            raise ValueError(f"weights (mlm, mrm, itm) must be 3 non-negative numbers, got {weights}")
        if not (0 < word_ratio <= 1 and 0 < region_ratio <= 1):
            raise ValueError(f"word_ratio and region_ratio must lie in (0, 1], got {word_ratio}, {region_ratio}")
        if not use_image and (shares[1] or shares[2]):
            raise ValueError("without the image only MLM is defined: use shares=(1, 0, 0)")
        self.model, self.shares, self.weights = model, tuple(shares), tuple(weights)
        self.word_ratio, self.region_ratio, self.use_image = word_ratio, region_ratio, use_image

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        return patchify(images, self.model.cfg.patch)  # [B, L, p*p*C]

    def forward(self, batch: dict, generator: torch.Generator | None = None) -> ObjectiveOutput:
        tokens, lengths = batch["tokens"], batch["lengths"]
        cfg, b = self.model.cfg, tokens.shape[0]
        tasks = assign_tasks(b, self.shares, generator)
        text_mask, image_mask = conditional_masks(tasks, lengths.cpu(), cfg.text_length, cfg.patches,
                                                  word_ratio=self.word_ratio, region_ratio=self.region_ratio,
                                                  generator=generator)
        tasks, text_mask, image_mask = (t.to(tokens.device) for t in (tasks, text_mask, image_mask))
        itm = tasks == 2
        shown, shown_lengths, matched = swap_captions(tokens, lengths, itm, generator)
        shown = shown.masked_fill(text_mask, cfg.vocab_size)
        patches = self.patches(batch["images"]) if self.use_image else None
        h = self.model(patches, shown, shown_lengths, image_mask if self.use_image else None)
        text_h, zero = h[:, h.shape[1] - cfg.text_length :], h.sum() * 0.0

        logits = self.model.word_head(text_h)  # [B, T, V]
        ce = F.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten(), reduction="none").view_as(tokens)
        mlm = masked_mean(ce, text_mask) + zero
        word_acc = masked_mean((logits.argmax(-1) == tokens).float(), text_mask)
        mrm = zero
        if patches is not None:
            pred = self.model.region_head(h[:, 1 : 1 + cfg.patches])  # [B, L, p*p*C]
            mrm = masked_mean((pred.float() - patches.float()).pow(2).mean(-1), image_mask) + zero
        match_logits = self.model.match_head(h[:, 0]).float()  # [B, 2]
        bce = F.cross_entropy(match_logits, matched.long(), reduction="none")
        itm_loss = masked_mean(bce, itm) + zero
        itm_acc = masked_mean((match_logits.argmax(-1) == matched.long()).float(), itm)
        w = self.weights
        loss = w[0] * mlm + w[1] * mrm + w[2] * itm_loss
        return ObjectiveOutput(loss, {"loss": loss.detach(), "mlm": mlm.detach(), "mrm": mrm.detach(),
                                      "itm": itm_loss.detach(), "word_acc": word_acc.detach(),
                                      "itm_acc": itm_acc.detach()})


@torch.no_grad()
def one_word_recovery(objective: UNITER, images: torch.Tensor | None, tokens: torch.Tensor,
                      lengths: torch.Tensor) -> torch.Tensor:
    """Hide each real word of each caption in turn, the rest of the text (and the image, if given)
    whole; returns Bool[B, T], True where the hidden word was predicted (argmax), False at pads."""
    model, cfg = objective.model, objective.model.cfg
    model.eval()
    patches = None if images is None else patchify(images, cfg.patch)
    correct = torch.zeros_like(tokens, dtype=torch.bool)
    for j in range(cfg.text_length):
        shown = tokens.clone()
        shown[:, j] = cfg.vocab_size
        h = model(patches, shown, lengths)
        pred = model.word_head(h[:, h.shape[1] - cfg.text_length + j]).argmax(-1)  # [B]
        correct[:, j] = (pred == tokens[:, j]) & (j < lengths)
    return correct


@torch.no_grad()
def matching_accuracy(objective: UNITER, images: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                      generator=None) -> float:
    """ITM accuracy on every pair as given (matched) and on each image with a differing caption
    drawn from the others (mismatched): the mean over the 2B decisions."""
    model = objective.model
    model.eval()
    patches = patchify(images, model.cfg.patch)
    partner, differs = mismatched_partners(tokens, generator)
    right = []
    cases = ((tokens, lengths, torch.ones_like(differs)), (tokens[partner], lengths[partner], ~differs))
    for shown, lens, label in cases:
        pred = model.match_head(model(patches, shown, lens)[:, 0]).argmax(-1)
        right.append(pred == label.long())
    return float(torch.cat(right).double().mean())
