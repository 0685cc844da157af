"""scikit-learn's handwritten digits (1,797 real 8x8 images, grey levels 0..16) as 65 tokens.

Layout: a `label` segment of one token followed by a `pixels` grid of 8 x 8 (row-major). One shared
vocabulary of 27 data ids: grey levels 0..16 are ids 0..16 and the class c is id 17 + c; the mask
token is id 27. The train/test split is fixed and stratified by class (20% held out, seed 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..layout import Layout

LEVELS = 17
CLASSES = 10
LABEL_OFFSET = LEVELS
VOCAB_SIZE = LEVELS + CLASSES
MASK_ID = VOCAB_SIZE
LAYOUT = Layout.seq(1, name="label") + Layout.grid(8, 8, name="pixels")
SEGMENT_VOCAB = {"label": (LABEL_OFFSET, VOCAB_SIZE), "pixels": (0, LEVELS)}


@dataclass(frozen=True)
class DigitsSplit:
    images: torch.Tensor  # Long[M, 64], grey levels 0..16
    labels: torch.Tensor  # Long[M], 0..9

    @property
    def tokens(self) -> torch.Tensor:
        """Long[M, 65]: label token then pixels."""
        return encode(self.images, self.labels)


def encode(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.cat([(labels + LABEL_OFFSET).unsqueeze(1), images], dim=1)


def decode(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Long[M, 65] -> (images Long[M, 64], labels Long[M]); a label id outside 17..26 gives -1."""
    labels = tokens[:, 0] - LABEL_OFFSET
    labels = torch.where((labels >= 0) & (labels < CLASSES), labels, torch.full_like(labels, -1))
    return tokens[:, 1:], labels


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.data.astype(np.int64), data.target.astype(np.int64)


def load(split: str = "train") -> DigitsSplit:
    """The fixed stratified split: 'train' (1,437 images) or 'test' (360 images)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    from sklearn.model_selection import train_test_split

    x, y = _load()
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=0.2, stratify=y, random_state=0
    )
    idx = np.sort(idx_train if split == "train" else idx_test)
    return DigitsSplit(torch.from_numpy(x[idx]), torch.from_numpy(y[idx]))
