"""Missingness bias of input masking (Balasubramanian and Feizi 2023, "Towards Improved Input Masking
for Convolutional Neural Networks", arXiv:2211.14646): removing part of an image by painting it a
colour (grey, black) shows a CNN out-of-distribution inputs and shifts its predictions; layer masking
(`nn/masked_cnn.py`, `LAYER_MASKING`) removes the part inside every layer instead.

For a classifier trained on whole images, patches of held-out images are removed in three ways
(`FILLS`): `layer` (layer masking), `grey` (0.5) and `black` (0); each is scored against the
classifier's prediction on the whole image:

- agreement: the share of images whose prediction is unchanged (an ideal removal of irrelevant
  patches leaves every prediction as it was);
- accuracy: against the true labels;
- class_kl: KL(predicted-class histogram || true-class histogram), in nats: how far the predictions
  collapse onto a few classes (the paper's "mask colour pulls predictions to some classes");
- top_share: the share of images given the single most predicted class.

Masks (`patch_masks`) hide an exact number of `patch x patch` patches per image, chosen uniformly
among all patches or among the ink-free ones (no pixel above 0: irrelevant to the class). On white-on-
black images (the glyphs) black paint over ink-free patches changes no pixel, so that pair is a
no-op, not a result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..masking.base import hide_top, uniform
from ..nn.masked_cnn import CNNClassifier, cell_keep
from ..nn.patch import patchify

FILLS = ("layer", "grey", "black")
PAINT = {"grey": 0.5, "black": 0.0}  # images in [0, 1]


def ink_free(images: torch.Tensor, patch: int) -> torch.Tensor:
    """images Float[B, C, H, W] -> Bool[B, L]: patches with no pixel above 0."""
    return patchify(images, patch).amax(dim=-1) <= 0


def patch_masks(images: torch.Tensor, patch: int, count: int, generator: torch.Generator | None = None, *,
                ink_free_only: bool = False) -> torch.Tensor:
    """Bool[B, L], True = removed: `count` patches per image, uniformly at random among all patches or
    (`ink_free_only`) among the ink-free ones (all of them where an image has fewer than `count`)."""
    b, _, h, w = images.shape
    cells = (h // patch) * (w // patch)
    if not 0 <= count <= cells:
        raise ValueError(f"count must lie in [0, {cells}] patches, got {count}")
    scores = uniform((b, cells), generator)
    counts = torch.full((b,), count)
    if ink_free_only:
        free = ink_free(images, patch)
        scores = torch.where(free, scores, -1.0)  # below every uniform: chosen last, never within counts
        counts = counts.minimum(free.sum(dim=1))
    return hide_top(scores, counts)


def paint(images: torch.Tensor, mask: torch.Tensor, patch: int, value: float) -> torch.Tensor:
    """images with the removed patches (mask Bool[B, L]) set to `value`."""
    keep = cell_keep(mask, (images.shape[2] // patch, images.shape[3] // patch), patch)
    return torch.where(keep, images, torch.full((), value, dtype=images.dtype))


@torch.no_grad()
def predict(model: CNNClassifier, images: torch.Tensor, mask: torch.Tensor | None = None, patch: int = 4,
            how: str = "layer", batch: int = 256) -> torch.Tensor:
    """Long[M]: the model's classes for the images with the patches of `mask` removed `how` (FILLS);
    no mask: the whole images."""
    if how not in FILLS:
        raise ValueError(f"how must be one of {FILLS}, got {how!r}")
    model.eval()
    out = []
    for start in range(0, len(images), batch):
        x = images[start : start + batch]
        if mask is None:
            out.append(model(x).argmax(dim=1))
            continue
        m = mask[start : start + batch]
        if how == "layer":
            keep = cell_keep(m, (x.shape[2] // patch, x.shape[3] // patch), patch)
            out.append(model(x, keep).argmax(dim=1))
        else:
            out.append(model(paint(x, m, patch, PAINT[how])).argmax(dim=1))
    return torch.cat(out)


def class_histogram(labels: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.bincount(labels, minlength=classes).double() / len(labels)


def class_kl(predicted: torch.Tensor, labels: torch.Tensor, classes: int) -> float:
    """KL(P_pred || P_true) in nats between the class histograms; every true class must occur."""
    p, q = class_histogram(predicted, classes), class_histogram(labels, classes)
    if (q[p > 0] == 0).any():
        raise ValueError("a predicted class never occurs among the labels: the KL is infinite")
    where = p > 0
    return float((p[where] * (p[where] / q[where]).log()).sum())


@dataclass(frozen=True)
class MissingnessScores:
    agreement: float
    accuracy: float
    class_kl: float
    top_share: float


def missingness(predicted: torch.Tensor, whole: torch.Tensor, labels: torch.Tensor, classes: int) -> MissingnessScores:
    """Scores of predictions `predicted` (Long[M], after removal) against those on the whole images
    (`whole`) and the labels."""
    return MissingnessScores(
        agreement=float((predicted == whole).double().mean()),
        accuracy=float((predicted == labels).double().mean()),
        class_kl=class_kl(predicted, labels, classes),
        top_share=float(torch.bincount(predicted).max()) / len(predicted),
    )
